"""Finding, loading and connecting with facevec's SQLite extension.

Three routes, fastest first:

1. the interpreter's ``sqlite3`` can load extensions: load the C library;
2. it cannot, but ``pysqlite3`` (``pysqlite3-binary`` on Linux) is installed
   and can: open the connection with it and load the C library;
3. neither: register the functions from Python (:mod:`facevec.bindings.fallback`),
   the same C kernels through cffi, with a one-time :class:`FallbackWarning`.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ExtensionError, FallbackWarning, UnsupportedDatabaseError
from . import fallback

ENTRY_POINT = "sqlite3_facevec_init"
_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
_warned = False


def loadable_path() -> str:
    """Path of the loadable extension, without its suffix, as SQLite's
    ``load_extension`` and the shell's ``.load`` take it."""
    path = Path(__file__).resolve().parent / "facevec0"
    if not path.with_suffix(_SUFFIX).exists():
        raise ExtensionError(
            f"the facevec SQLite extension is missing ({path.with_suffix(_SUFFIX)}); "
            "reinstall facevec with 'pip install .' so that it is compiled"
        )
    return str(path)


def can_load_extensions(conn: Any) -> bool:
    """Whether ``conn``'s sqlite3 module was built with extension loading."""
    return hasattr(conn, "enable_load_extension")


def dbapi_module(conn: Any) -> ModuleType:
    """The DB-API module of ``conn`` (``sqlite3`` or ``pysqlite3.dbapi2``),
    whose exception classes its errors are instances of."""
    for cls in type(conn).__mro__:
        module = importlib.import_module(cls.__module__.replace("._sqlite3", ".dbapi2"))
        if hasattr(module, "DatabaseError"):
            return module
    raise UnsupportedDatabaseError(f"{type(conn).__name__} is not a DB-API connection")


def is_native(conn: Any) -> bool:
    """Whether facevec's functions on ``conn`` run from the loaded C library
    (``load`` and ``connect`` always take that route where it exists)."""
    if not can_load_extensions(conn):
        return False
    row = conn.execute(
        "SELECT 1 FROM pragma_function_list WHERE name = 'facevec_version'"
    ).fetchone()
    return row is not None


def _load_native(conn: Any) -> None:
    conn.enable_load_extension(True)
    try:
        conn.load_extension(loadable_path())
    except Exception as error:
        raise ExtensionError(f"could not load {loadable_path()}: {error}") from error
    finally:
        conn.enable_load_extension(False)


def _warn_fallback() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            "this Python's sqlite3 cannot load extensions: facevec's SQL functions run "
            "through the slower Python fallback (install pysqlite3-binary, or a Python "
            "built with --enable-loadable-sqlite-extensions, for the native path)",
            FallbackWarning,
            stacklevel=3,
        )


def load(conn: Any) -> None:
    """Register facevec's SQL functions on an open connection.

    Natively where the connection can load extensions; otherwise through the
    Python fallback, with a one-time warning. On a plain ``sqlite3`` connection
    the fallback's errors read "user-defined function raised exception"; a
    connection from :func:`connect` carries facevec's own message.
    """
    if can_load_extensions(conn):
        _load_native(conn)
        return
    _warn_fallback()
    fallback.register(conn)


def _pysqlite3() -> ModuleType | None:
    try:
        from pysqlite3 import dbapi2
    except ImportError:
        return None
    return dbapi2


def _native_modules() -> list[ModuleType]:
    """DB-API modules of this interpreter that can load extensions, best first."""
    candidates = (sqlite3, _pysqlite3())
    return [
        m for m in candidates if m is not None and hasattr(m.Connection, "enable_load_extension")
    ]


def connect(database: str | os.PathLike[str], *, native: bool | None = None, **kwargs: Any) -> Any:
    """Open a SQLite database with facevec's functions available.

    ``native=None`` takes the fastest route this interpreter allows;
    ``native=True`` requires the C extension (error if it cannot be loaded);
    ``native=False`` forces the Python fallback. Other keyword arguments go to
    the DB-API ``connect``.
    """
    if native is not False:
        for module in _native_modules():
            conn = module.connect(os.fspath(database), **kwargs)
            try:
                _load_native(conn)
            except BaseException:
                conn.close()
                raise
            return conn
        if native:
            raise ExtensionError(
                "neither this Python's sqlite3 nor pysqlite3 can load extensions; "
                "install pysqlite3-binary (Linux) or use native=None for the Python fallback"
            )
        _warn_fallback()
    kwargs.setdefault("factory", fallback.FallbackConnection)
    return sqlite3.connect(os.fspath(database), **kwargs)
