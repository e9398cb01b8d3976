"""Finding and loading the extension: connect's routes, load, the fallback warning."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import facevec
from facevec.bindings import extension
from facevec.bindings import fallback as sqlite_functions
from facevec.errors import ExtensionError, FallbackWarning

SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


def test_loadable_path_names_the_built_library():
    path = Path(facevec.loadable_path())
    assert path.name == "facevec0"
    assert path.with_suffix(SUFFIX).is_file()


@pytest.mark.skipif(sys.platform != "linux", reason="ldd is Linux's")
def test_loadable_library_does_not_link_libpython():
    out = subprocess.run(
        ["ldd", facevec.loadable_path() + SUFFIX], capture_output=True, text=True, check=True
    ).stdout
    assert "libpython" not in out
    assert "libc." in out


def test_connect_native_loads_the_c_library(tmp_path):
    conn = facevec.connect(tmp_path / "a.db", native=True)
    assert extension.is_native(conn)
    assert conn.execute("SELECT facevec_version()").fetchone()[0] == facevec.__version__


def test_connect_fallback_registers_from_python(tmp_path):
    conn = facevec.connect(tmp_path / "a.db", native=False)
    assert isinstance(conn, sqlite_functions.FallbackConnection)
    assert not extension.is_native(conn)
    assert conn.execute("SELECT euclidean_distance('[0,0]', '[3,4]')").fetchone()[0] == 5.0


def test_connect_auto_picks_native_where_possible(tmp_path):
    conn = facevec.connect(tmp_path / "a.db")
    # The interpreter's sqlite3 loads extensions, or its SQLite library takes an
    # auto-extension: a native route exists on every platform the tests run on.
    assert extension.route() in ("load_extension", "auto_extension")
    assert extension.is_native(conn)


def test_native_true_fails_clearly_without_a_native_route(monkeypatch, tmp_path):
    monkeypatch.setattr(extension, "_route", "fallback")
    monkeypatch.setattr(extension, "_why_not_native", "its SQLite was built without it")
    with pytest.raises(ExtensionError, match="cannot load extensions and its SQLite was built"):
        facevec.connect(tmp_path / "a.db", native=True)


def test_auto_falls_back_with_one_warning(monkeypatch, tmp_path):
    monkeypatch.setattr(extension, "_route", "fallback")
    monkeypatch.setattr(extension, "_warned", False)
    with pytest.warns(FallbackWarning, match="cannot load extensions"):
        conn = facevec.connect(tmp_path / "a.db")
    assert isinstance(conn, sqlite_functions.FallbackConnection)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        facevec.connect(tmp_path / "b.db")  # no second warning


def test_load_on_a_stdlib_connection_is_native():
    conn = sqlite3.connect(":memory:")
    facevec.load(conn)
    assert extension.is_native(conn)
    assert conn.execute("SELECT cosine_distance('[1,0]', '[0,1]')").fetchone()[0] == 1.0


def test_is_native_is_kept_on_the_connections_facevec_opens(tmp_path):
    native, fallback = facevec.connect(":memory:"), facevec.connect(":memory:", native=False)
    assert (native.facevec_native, fallback.facevec_native) == (True, False)
    # A connection of the caller's is asked once per call, without a catalog scan.
    assert extension.is_native(sqlite3.connect(":memory:")) is True


def test_a_second_copy_of_sqlite_is_refused():
    """pysqlite3 brings a SQLite of its own: facevec's C library, already serving the
    interpreter's, refuses it instead of mixing two copies in one process."""
    dbapi2 = pytest.importorskip("pysqlite3.dbapi2", reason="pysqlite3 is not installed")
    facevec.connect(":memory:").execute("SELECT facevec_version()")
    conn = dbapi2.connect(":memory:")
    with pytest.raises(ExtensionError, match="already serving another copy of SQLite"):
        facevec.load(conn)


def test_missing_library_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(extension, "__file__", str(tmp_path / "extension.py"))
    with pytest.raises(ExtensionError, match="reinstall facevec"):
        facevec.loadable_path()


def test_errors_subclass_builtins():
    assert issubclass(facevec.VectorError, ValueError)
    assert issubclass(facevec.VectorError, facevec.FacevecError)
    assert issubclass(ExtensionError, RuntimeError)


def test_import_does_not_load_the_pipeline():
    code = "import sys, facevec; print('pandas' in sys.modules, 'deepface' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_cli_prints_the_extension_path():
    out = subprocess.run(
        [sys.executable, "-m", "facevec.cli", "extension-path"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == facevec.loadable_path()
