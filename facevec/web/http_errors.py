"""facevec's errors as HTTP answers: a status code and the CLI's one-line message.

Every error body is JSON ``{"error": "<class name>", "detail": "<message>"}``, the
message being exactly what ``facevec`` on the command line prints.
"""

from __future__ import annotations

import sys

from .. import errors

# Most specific first: the first class an error is an instance of decides.
STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (errors.PhotoTooLargeError, 413),
    # A name already taken, a merge into itself: the gallery's state refuses the edit.
    *(((errors.PeopleConflictError, 409),) if hasattr(errors, "PeopleConflictError") else ()),
    (errors.AccessDeniedError, 403),
    (errors.JobRunningError, 409),
    (errors.KnnIndexMissingError, 409),
    (errors.NoFaceError, 422),
    (errors.NotAnImageError, 422),
    (errors.ModelMismatchError, 422),
    (errors.DatabaseNotFoundError, 404),
    (errors.FolderNotFoundError, 404),
    # The server lacks something (deepface, weights, its database): not the client's fault.
    (errors.MissingDependencyError, 503),
    (errors.MissingWeightsError, 503),
    (errors.DatabaseConnectionError, 503),
    (errors.EmbedWorkerError, 503),
    (errors.ExtensionError, 400),  # e.g. strategy knn where the extension cannot load
    (LookupError, 404),
    (ValueError, 400),
    (errors.FacevecError, 400),
)


def status_of(error: BaseException) -> int:
    for cls, status in STATUS:
        if isinstance(error, cls):
            return status
    return 500


def database_errors() -> tuple[type[BaseException], ...]:
    """The base error classes of the database drivers loaded in this process."""
    names = ("sqlite3", "pysqlite3.dbapi2", "psycopg", "pymysql")
    return tuple(sys.modules[n].Error for n in names if n in sys.modules)


def message_of(error: BaseException) -> str:
    """The message the command line prints for `error`."""
    if isinstance(error, database_errors()):
        return f"database error: {error}"
    return str(error)


def body(error_name: str, detail: str) -> dict[str, str]:
    return {"error": error_name, "detail": detail}
