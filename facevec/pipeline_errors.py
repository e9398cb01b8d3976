"""Errors raised by the face pipeline (index, find, verify, add, info).

Each subclasses facevec's base error and the matching built-in, so callers can
catch either (``except facevec.FacevecError`` or ``except ValueError``).
"""

from __future__ import annotations

from .errors import FacevecError


class UnknownModelError(FacevecError, ValueError):
    """A recognition model or face detector name deepface does not know."""


class UnknownMetricError(FacevecError, ValueError):
    """A distance metric the pipeline does not support."""


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


class DatabaseNotFoundError(FacevecError, FileNotFoundError):
    """A database path that does not exist where one must already exist."""


class ModelMismatchError(FacevecError, ValueError):
    """Vectors of one model or dimension mixed with another's."""
