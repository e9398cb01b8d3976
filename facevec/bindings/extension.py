"""Putting facevec's SQL functions on SQLite connections, one SQLite per process.

Two copies of SQLite in one process break each other's POSIX locks: when a
connection of one copy closes a file, the locks the other copy holds on it are
dropped, and its WAL can be removed beneath it (SQLite's "How To Corrupt An SQLite
Database File", 2.2.1). So facevec never brings a SQLite of its own: it uses the
library of the interpreter's ``sqlite3`` module, by the first of these routes that
works, chosen once per process when this module is imported (:func:`route`):

1. ``load_extension``: the ``sqlite3`` module can load extensions; each connection
   facevec opens loads the C library (``facevec0``).
2. ``auto_extension``: the module was built without extension loading, but the
   SQLite library it links has it. facevec registers its entry point with that
   very library's ``sqlite3_auto_extension`` (found through the module's own shared
   object, then checked: same version, and a new connection answers natively), so
   every connection the process opens from then on, the user's own included, has
   the C functions.
3. ``fallback``: neither; the same C kernels registered from Python on each
   connection facevec opens (:mod:`facevec.bindings.fallback`), with a one-time
   :class:`FallbackWarning`.

The C library refuses a second copy of SQLite once one has loaded it, so the
mistake is an error, never a corrupt file. Whether a connection facevec opened has
the C functions is kept on the connection: :func:`is_native` costs an attribute read.
"""

from __future__ import annotations

import importlib
import os
import sqlite3
import sys
import threading
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from .._version import __version__
from ..errors import ExtensionError, FallbackWarning, UnsupportedDatabaseError
from . import fallback

ENTRY_POINT = "sqlite3_facevec_init"
ROUTES = ("load_extension", "auto_extension", "fallback")
_SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
_warned = False
_lock = threading.Lock()
_route: str | None = None
_why_not_native = ""  # why neither native route works, for messages
_registered: list[Any] = []  # the ctypes objects an auto-extension lives in


class NativeConnection(sqlite3.Connection):
    """A sqlite3 connection whose facevec functions run from the C library."""

    facevec_native = True


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


# The route ---------------------------------------------------------------------


def route() -> str:
    """How facevec's C functions reach this process's SQLite connections: one of
    ``ROUTES`` (see the module docstring)."""
    global _route, _why_not_native
    if _route is None:
        with _lock:
            if _route is None:
                if can_load_extensions(sqlite3.Connection):
                    _route = "load_extension"
                else:
                    _why_not_native = _register_auto_extension() or ""
                    _route = "fallback" if _why_not_native else "auto_extension"
    return _route


def _register_auto_extension() -> str | None:
    """Register facevec's entry point with the SQLite library of the ``sqlite3``
    module; None once every new connection answers natively, else why not."""
    import ctypes

    module = sys.modules.get("_sqlite3") or importlib.import_module("_sqlite3")
    module_file = getattr(module, "__file__", None)
    if module_file is None:
        return "the sqlite3 module is built into the interpreter, its SQLite unreachable"
    try:
        library = ctypes.CDLL(module_file)
        register, cancel = library.sqlite3_auto_extension, library.sqlite3_cancel_auto_extension
        library_version, option_used = (
            library.sqlite3_libversion,
            library.sqlite3_compileoption_used,
        )
    except (OSError, AttributeError):
        return f"{module_file} does not expose its SQLite library's functions"
    library_version.restype = ctypes.c_char_p
    option_used.argtypes = [ctypes.c_char_p]
    version = library_version().decode()
    if version != sqlite3.sqlite_version:
        return (
            f"the SQLite found through {module_file} ({version}) is not the one the sqlite3 "
            f"module uses ({sqlite3.sqlite_version})"
        )
    if option_used(b"OMIT_LOAD_EXTENSION"):
        return f"SQLite {version} was built without extension support"
    try:
        extension = ctypes.CDLL(loadable_path() + _SUFFIX)
        entry = ctypes.cast(getattr(extension, ENTRY_POINT), ctypes.c_void_p)
    except (ExtensionError, OSError, AttributeError) as err:
        return f"cannot open facevec's C library: {err}"
    register.argtypes = cancel.argtypes = [ctypes.c_void_p]
    if register(entry) != 0:
        return f"SQLite {version} refused facevec's entry point (sqlite3_auto_extension)"
    problem = _new_connections_problem()
    if problem is not None:
        cancel(entry)  # so that connections still open without it
        return problem
    _registered.extend((library, extension, entry))
    return None


def _new_connections_problem() -> str | None:
    """None if a new plain sqlite3 connection has facevec's C functions."""
    try:
        probe = sqlite3.connect(":memory:")
    except sqlite3.Error as err:  # the entry point failed, e.g. another SQLite holds it
        return str(err)
    try:
        version = probe.execute("SELECT facevec_version()").fetchone()[0]
    except sqlite3.Error as err:
        return f"a new connection does not have facevec's functions ({err})"
    finally:
        probe.close()
    if version != __version__:
        return f"a new connection runs facevec {version}, not {__version__}"
    return None


# Connections ---------------------------------------------------------------------


def is_native(conn: Any) -> bool:
    """Whether facevec's functions on ``conn`` run from the C library: read from
    the connection when facevec opened it, asked of SQLite otherwise."""
    known = getattr(conn, "facevec_native", None)
    if known is not None:
        return bool(known)
    try:  # facevec_knn_status exists only in the C library; WHERE 0 never calls it
        conn.execute("SELECT facevec_knn_status(NULL) WHERE 0").fetchall()
    except Exception:
        return False
    return True


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
            "facevec's SQL functions run through the slower Python fallback: this Python's "
            f"sqlite3 cannot load extensions and {_why_not_native} (a Python built with "
            "--enable-loadable-sqlite-extensions takes the native path)",
            FallbackWarning,
            stacklevel=3,
        )


def load(conn: Any) -> None:
    """Register facevec's SQL functions on an open connection.

    Nothing to do on a connection opened after facevec was imported where the
    ``auto_extension`` route serves the process; natively where the connection
    can load extensions; otherwise through the Python fallback, with a one-time
    warning. On a plain ``sqlite3`` connection the fallback's errors read
    "user-defined function raised exception"; a connection from :func:`connect`
    carries facevec's own message.
    """
    route()
    if is_native(conn):
        return
    if can_load_extensions(conn):
        _load_native(conn)
        return
    _warn_fallback()
    fallback.register(conn)


def connect(database: str | os.PathLike[str], *, native: bool | None = None, **kwargs: Any) -> Any:
    """Open a SQLite database (with this interpreter's ``sqlite3``) with facevec's
    functions available.

    ``native=None`` takes the fastest route this process has (:func:`route`);
    ``native=True`` requires the C library (error if neither native route works);
    ``native=False`` registers the Python fallback. Other keyword arguments go to
    ``sqlite3.connect``.
    """
    chosen = route()
    if native is not False and chosen != "fallback":
        kwargs.setdefault("factory", NativeConnection)
        conn = sqlite3.connect(os.fspath(database), **kwargs)
        try:
            if chosen == "load_extension":
                _load_native(conn)
            _mark(conn, True)
        except BaseException:
            conn.close()
            raise
        return conn
    if native:
        raise ExtensionError(
            f"facevec's C functions cannot reach this Python's SQLite: its sqlite3 cannot "
            f"load extensions and {_why_not_native}; use native=None for the Python fallback"
        )
    if native is None:
        _warn_fallback()
    kwargs.setdefault("factory", fallback.FallbackConnection)
    conn = sqlite3.connect(os.fspath(database), **kwargs)
    _mark(conn, False)
    return conn


def _mark(conn: Any, native: bool) -> None:
    try:
        conn.facevec_native = native
    except AttributeError:  # a factory of the caller's whose instances take no attribute
        pass


route()
