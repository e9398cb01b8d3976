"""Exceptions raised by facevec.

Each subclasses both :class:`FacevecError` and the matching built-in, so
callers can catch either (``except ValueError`` or ``except FacevecError``).
"""

from __future__ import annotations


class FacevecError(Exception):
    """Base class of every error facevec raises."""


class VectorError(FacevecError, ValueError):
    """A vector, or a matrix of vectors, is not what the operation needs."""


class InvalidVectorError(VectorError):
    """A vector that cannot be stored: not the gallery's dimensions, NaN or infinity,
    beyond float32, all zeros or too short or long to rank (facevec.vectors)."""


class DimensionMismatchError(VectorError):
    """Two vectors (or a vector and a matrix) have different dimensions."""


class ExtensionError(FacevecError, RuntimeError):
    """The SQLite extension cannot be found or loaded."""


class InvalidParameterError(FacevecError, ValueError):
    """A parameter outside its range: k, a threshold, a batch size, ..."""


class SQLFunctionError(VectorError):
    """An error raised by a facevec SQL function on the Python fallback path."""


class KnnUnavailableError(ExtensionError):
    """The connection has no native facevec extension, so no ``facevec_knn``."""


# The face pipeline (index, find, verify, add, info, reindex) and its databases.


class UnknownModelError(FacevecError, ValueError):
    """A recognition model or face detector name deepface does not know."""


class UnknownMetricError(VectorError):
    """A distance metric name that is not one of the operation's metrics."""


class UnknownStrategyError(FacevecError, ValueError):
    """A search strategy other than extension, knn, relational or client, or one
    the database cannot run."""


class KnnIndexMissingError(FacevecError, LookupError):
    """The knn strategy on a database whose knn index was never built."""


class MissingWeightsError(FacevecError, FileNotFoundError):
    """A model's weight file is absent and could not be downloaded."""


class MissingDependencyError(FacevecError, ImportError):
    """An optional dependency (deepface, pandas, ...) is not installed."""


class NoFaceError(FacevecError, ValueError):
    """The detector found no face in a photo."""


class NotAnImageError(FacevecError, ValueError):
    """A file or buffer that cannot be decoded as an image."""


class MissingFormatSupportError(NotAnImageError):
    """A photo whose format (HEIF, camera RAW, ...) needs an optional library that is
    not installed; the message names the extra to install."""


class DatabaseNotFoundError(FacevecError, FileNotFoundError):
    """A database path that does not exist where one must already exist."""


class DatabaseOpenError(FacevecError, OSError):
    """A file that is not a SQLite database (or is locked, or unreadable)."""


class UnsupportedDatabaseError(FacevecError, TypeError):
    """A ``db`` argument that is neither a path, a URL nor a supported connection."""


class FolderNotFoundError(FacevecError, NotADirectoryError):
    """A folder to index that does not exist or is not a folder."""


class ModelMismatchError(FacevecError, ValueError):
    """Vectors of one model or dimension mixed with another's."""


class DatabaseURLError(FacevecError, ValueError):
    """A database URL facevec cannot use (unknown scheme, bad port, ...)."""


class DatabaseConnectionError(FacevecError, ConnectionError):
    """The database server cannot be reached, or refuses the login."""


class EmptyGalleryError(FacevecError, LookupError):
    """A gallery (or every source of a distributed one) that holds no face to search."""


class GalleryFormatError(FacevecError, ValueError):
    """A gallery file (Parquet) that lacks what facevec needs: a column, a model name,
    vectors of one size."""


class SkippedFacesWarning(UserWarning):
    """A search or clustering left out stored faces whose distances are undefined
    (rows an older version or another program wrote); the warning names them."""


class SkippedPhotosWarning(UserWarning):
    """A search of several photos (a folder, a list) left out those with no face or
    that are no image, so that one bad file does not stop the batch; it names them."""


class FallbackWarning(RuntimeWarning):
    """facevec is using its slower pure-Python registration of the SQL functions."""


class PhotoTooLargeError(FacevecError, ValueError):
    """A photo with more pixels than the limit (``max_pixels``, ``--max-pixels``)."""


# People: recognise, cluster, name and merge.


class PersonNotFoundError(FacevecError, LookupError):
    """A person name or id that the gallery does not hold."""


class FaceNotFoundError(FacevecError, LookupError):
    """A face id that the gallery does not hold (or not where it was looked for)."""


class PeopleConflictError(FacevecError, ValueError):
    """An edit of people that contradicts the gallery: a name already taken, a merge
    of a person into itself, two faces of one photo in one person, nothing to undo."""


class NotCalibratedError(FacevecError, LookupError):
    """A calibrated threshold was asked for, but the gallery was never calibrated."""


# The web server (facevec serve).


class AccessDeniedError(FacevecError, PermissionError):
    """A path outside the photo folders a server was given."""


class JobRunningError(FacevecError, RuntimeError):
    """An index job asked for while another one writes to the gallery."""


class EmbedWorkerError(FacevecError, RuntimeError):
    """A process of the server's embedding pool stopped while it held a photo."""


class OutputExistsError(FacevecError, FileExistsError):
    """An output folder that holds something else than the unfinished run asked for."""
