"""The extension without Python: `make loadable` builds it from csrc/ with a C
compiler alone, and `make test-loadable` runs the SQL files of tests/sql/ against
it in the sqlite3 shell, judged by tests/sql/check.sh, which fails a file that
breaks its conventions (checked on the library pip built, without a build)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from sqlshell import WHY_NO_SHELL, sqlite3_shell

import facevec

ROOT = Path(__file__).resolve().parent.parent
SQL_FILES = sorted((ROOT / "tests" / "sql").glob("*.sql"))
SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
CHECK = ROOT / "tests" / "sql" / "check.sh"

pytestmark = [
    pytest.mark.skipif(sqlite3_shell() is None, reason=WHY_NO_SHELL),
    pytest.mark.skipif(
        shutil.which("make") is None or shutil.which("cc") is None,
        reason="make and a C compiler are needed (apt-get install build-essential)",
    ),
]


def make(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["make", "-C", str(ROOT), *args], capture_output=True, text=True, timeout=600
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The folder `make loadable DIST=...` built the library into."""
    folder = tmp_path_factory.mktemp("dist")
    result = make("loadable", f"DIST={folder}")
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr, result.stderr
    return folder


def shell(extension: Path, sql: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sqlite3_shell(), "-batch", ":memory:", "-cmd", f".load {extension}", sql],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.slow
def test_make_loadable_builds_the_library_the_package_ships(dist):
    library = dist / f"facevec0{SUFFIX}"
    assert library.is_file()
    query = (
        "select facevec_version(), euclidean_distance('[0,0]', '[3,4]'), vector_dims(x'0000803f')"
    )
    result = shell(library.with_suffix(""), query)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"{facevec.__version__}|5.0|1"]


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="reads ELF dynamic sections (Linux)")
def test_the_make_built_library_exports_its_entry_point_and_needs_no_python(dist):
    library = dist / "facevec0.so"
    if shutil.which("nm") is None or shutil.which("readelf") is None:
        pytest.skip("nm and readelf (binutils) are not installed")
    symbols = subprocess.run(
        ["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True
    ).stdout
    assert {line.split()[-1] for line in symbols.splitlines() if line.strip()} == {
        "sqlite3_facevec_init"
    }
    dynamic = subprocess.run(
        ["readelf", "-d", str(library)], capture_output=True, text=True, check=True
    ).stdout
    needed = {line.split("[")[1].rstrip("]") for line in dynamic.splitlines() if "NEEDED" in line}
    assert needed and not any("python" in name or "sqlite" in name for name in needed), needed


@pytest.mark.slow
def test_make_test_loadable_passes_every_sql_file(dist):
    result = make("test-loadable", f"DIST={dist}")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for sql in SQL_FILES:
        assert any(line.startswith(f"ok   {sql.name}: ") for line in lines), sql.name
    assert f"{len(SQL_FILES)} passed, 0 failed" in lines
    functions = next(line for line in lines if line.startswith("ok   functions.sql"))
    assert " 0 checks" not in functions  # the battery's checks were found and counted


@pytest.mark.parametrize(
    "sql, problem",
    [
        ("select 'holds', 1 = 1;\nselect 'broken', 1 = 2;\n", "failing checks: broken|0"),
        ("select 'a', 1;\nselect vector_dims(x'');\n", "errors differ"),
        ("select 'a', 1;\ncreate table t(x); -- error: never raised\n", "errors differ"),
        ("select 'a', 1;\nselect 'unexpected row';\n", "its rows are not its checks"),
        ("select 1;\n.exit 3\n", "the shell stopped before the end (exit status 3)"),
        ("select vector_dims(x''); -- vector_dims: another message\n", "errors differ"),
    ],
    ids=["failing check", "unexpected error", "missing error", "extra row", "stops", "message"],
)
def test_the_sql_file_checker_fails_a_broken_file(tmp_path, sql, problem):
    broken = tmp_path / "broken.sql"
    broken.write_text(sql)
    result = subprocess.run(
        ["sh", str(CHECK), facevec.loadable_path(), str(broken)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert f"FAIL broken.sql: {problem}" in result.stdout, result.stdout
    assert result.stdout.splitlines()[-1] == "0 passed, 1 failed"
