"""facevec's SQL functions registered from Python, for interpreters whose
sqlite3 module cannot load extensions (this is the slower path).

Every function calls the same C code as the loadable extension (through
cffi), so results and error messages are the same. Python's sqlite3 module
replaces an exception raised in a user function with the generic
"user-defined function raised exception"; :class:`FallbackConnection` (what
``facevec.connect`` returns on this path) puts facevec's message back.
"""

from __future__ import annotations

import math
import re
import sqlite3
import threading
from collections.abc import Callable
from typing import Any

from .._version import __version__
from ..errors import SQLFunctionError
from ..metrics import TABLE as METRIC_TABLE
from ._kernels import ffi, lib

VERSION = __version__

_GENERIC_MESSAGE = "user-defined function raised exception"
_last_error = threading.local()


def _fail(message: str) -> None:
    _last_error.message = message
    raise SQLFunctionError(message)


class _Vector:
    """A vector argument read by the C code, freed on exit."""

    __slots__ = ("c", "_keep")

    def __init__(self, fn: Any, argno: int, value: Any) -> None:
        arg = ffi.new("fv_arg *")
        if isinstance(value, (bytes, bytearray, memoryview)):
            arg.type = lib.FV_TYPE_BLOB
            self._keep = ffi.from_buffer(value)
            arg.nbytes = len(self._keep)
        elif isinstance(value, str):
            arg.type = lib.FV_TYPE_TEXT
            self._keep = ffi.from_buffer(value.encode("utf-8"))
            arg.nbytes = len(self._keep)
        else:
            arg.type = lib.FV_TYPE_INTEGER if isinstance(value, int) else lib.FV_TYPE_FLOAT
            self._keep = ffi.NULL
            arg.nbytes = 0
        arg.data = self._keep
        self.c = ffi.new("fv_vector *")
        err = ffi.new("char[]", lib.FV_ERR_MAX)
        rc = lib.fv_vector_from_arg(fn, argno, arg, self.c, err)
        if rc == lib.FV_ARG_NOMEM:
            raise MemoryError
        if rc != lib.FV_ARG_OK:
            _fail(ffi.string(err).decode())

    def __enter__(self) -> Any:
        return self.c

    def __exit__(self, *exc: object) -> None:
        lib.fv_vector_free(self.c)


def _distance_function(name: str, metric: int, negate: bool) -> Callable[..., Any]:
    c_name = ffi.new("char[]", name.encode())

    def distance(a: Any, b: Any) -> float | None:
        if a is None or b is None:
            return None
        out = ffi.new("double *")
        err = ffi.new("char[]", lib.FV_ERR_MAX)
        with _Vector(c_name, 1, a) as va, _Vector(c_name, 2, b) as vb:
            if lib.fv_pair_distance(c_name, metric, va, vb, out, err) != lib.FV_ARG_OK:
                _fail(ffi.string(err).decode())
        return -out[0] if negate else out[0]

    distance.__name__ = name
    return distance


def vector_dims(a: Any) -> int | None:
    if a is None:
        return None
    with _Vector(b"vector_dims", 1, a) as v:
        return int(v.n)


def vector_to_json(a: Any) -> str | None:
    if a is None:
        return None
    size = ffi.new("size_t *")
    err = ffi.new("char[]", lib.FV_ERR_MAX)
    with _Vector(b"vector_to_json", 1, a) as v:
        text = lib.fv_vector_to_json(b"vector_to_json", v, size, err)
    if text == ffi.NULL:
        if err[0] == b"\0":
            raise MemoryError
        _fail(ffi.string(err).decode())
    try:
        return ffi.string(text, size[0]).decode()
    finally:
        lib.free(text)


def vector_from_json(a: Any) -> bytes | None:
    if a is None:
        return None
    with _Vector(b"vector_from_json", 1, a) as v:
        return bytes(ffi.buffer(v.v, v.n * 4))


# TEXT that SQLite's numeric affinity turns into a number.
_SQL_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_SQL_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*", re.ASCII)


def sqrt(x: Any) -> float | None:
    # As SQLite's own sqrt: NULL for NULL, non-numeric or negative input.
    if isinstance(x, str):
        if not _SQL_NUMBER.fullmatch(x):
            return None
        # Integer-looking text becomes an INTEGER in SQLite ('-0' is 0, not -0.0).
        x = int(x) if _SQL_INTEGER.fullmatch(x) else float(x)
    if not isinstance(x, (int, float)) or x < 0:
        return None
    return math.sqrt(x)


def facevec_version() -> str:
    return VERSION


def facevec_isa() -> str:
    return ffi.string(lib.fv_isa()).decode()


#: name -> (number of arguments, implementation); the same list as the C table.
FUNCTIONS: dict[str, tuple[int, Callable[..., Any]]] = {
    **{
        metric.sql_function: (
            2,
            _distance_function(metric.sql_function, metric.code, metric.larger_is_closer),
        )
        for metric in METRIC_TABLE
    },
    "vector_dims": (1, vector_dims),
    "vector_to_json": (1, vector_to_json),
    "vector_from_json": (1, vector_from_json),
    "sqrt": (1, sqrt),
    "facevec_version": (0, facevec_version),
    "facevec_isa": (0, facevec_isa),
}


def register(conn: sqlite3.Connection) -> None:
    """Register every facevec SQL function on ``conn`` through create_function."""
    for name, (nargs, fn) in FUNCTIONS.items():
        conn.create_function(name, nargs, fn, deterministic=True)


def _translate(error: sqlite3.OperationalError) -> BaseException:
    message = getattr(_last_error, "message", None)
    if message is not None and str(error) == _GENERIC_MESSAGE:
        _last_error.message = None
        return sqlite3.OperationalError(message)
    return error


def _translating(method: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        _last_error.message = None
        try:
            return method(self, *args, **kwargs)
        except sqlite3.OperationalError as error:
            translated = _translate(error)
            if translated is error:
                raise
            raise translated from None

    wrapper.__name__ = method.__name__
    wrapper.__doc__ = method.__doc__
    return wrapper


class FallbackCursor(sqlite3.Cursor):
    """A cursor whose errors from facevec functions carry facevec's message."""

    execute = _translating(sqlite3.Cursor.execute)
    executemany = _translating(sqlite3.Cursor.executemany)
    executescript = _translating(sqlite3.Cursor.executescript)
    fetchone = _translating(sqlite3.Cursor.fetchone)
    fetchmany = _translating(sqlite3.Cursor.fetchmany)
    fetchall = _translating(sqlite3.Cursor.fetchall)
    __next__ = _translating(sqlite3.Cursor.__next__)


class FallbackConnection(sqlite3.Connection):
    """A sqlite3 connection with facevec's functions registered from Python."""

    facevec_native = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        register(self)

    def cursor(self, factory: Any = FallbackCursor) -> Any:  # type: ignore[override]
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # type: ignore[override]
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:  # type: ignore[override]
        return self.cursor().executemany(sql, parameters)

    def executescript(self, script: str, /) -> Any:  # type: ignore[override]
        return self.cursor().executescript(script)
