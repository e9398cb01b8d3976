"""facevec_knn against a hostile or damaged database file.

A gallery file may come from anywhere: its schema (views, triggers) and the
index's own tables (counts, sizes, bitmaps, rowid arrays) are input, never
trusted. Whatever a file holds, a query or a sync must give the right answer
or an SQL error, never touch memory it does not own. Queries that crashed
the process before run in a subprocess, so a crash fails the test instead of
killing the test run.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pysqlite3 = pytest.importorskip("pysqlite3.dbapi2", reason="pysqlite3 can load extensions")
from knn_helpers import connect, extension_under_test, make_table, scalar  # noqa: E402
from sqlshell import SQL_DIR, WHY_NO_SHELL, check_battery, run_shell, sqlite3_shell  # noqa: E402

HUGE_K = 2**61 + 1  # k * 8 bytes wraps around 2**64
MAX_K = 2**63 - 1


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


def gallery(ext: str, path: Path | str = ":memory:", n: int = 40, dim: int = 4):
    """A face_meta table of n random vectors with a built index."""
    conn = connect(ext, path)
    make_table(conn, np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    return conn


def run_isolated(ext: str, db: Path, code: str) -> subprocess.CompletedProcess[str]:
    """Run code in a fresh process with ``conn`` open on db; a crash shows as
    a non-zero exit status instead of ending the test run."""
    script = textwrap.dedent(
        """
        import sys
        from pysqlite3 import dbapi2 as sqlite3
        conn = sqlite3.connect(sys.argv[2], isolation_level=None)
        conn.enable_load_extension(True)
        conn.load_extension(sys.argv[1])
        """
    ) + textwrap.dedent(code)
    return subprocess.run(
        [sys.executable, "-c", script, ext, str(db)], capture_output=True, text=True, timeout=120
    )


# --------------------------------------------------------------------------
# k: any size up to 2**63-1 means "at most k"


@pytest.mark.parametrize("k", [HUGE_K, MAX_K])
def test_huge_k_returns_every_row(ext, k):
    conn = gallery(ext)
    rows = conn.execute(
        "SELECT rowid, distance FROM facevec_knn('face_meta', '[1, 2, 3, 4]', ?)", (k,)
    ).fetchall()
    assert rows == scalar(conn, [1, 2, 3, 4], 40)


def test_huge_k_with_a_forged_count_stays_in_bounds(ext, tmp_path):
    """n_vectors = 2**62 read from the file once sized a heap of k entries,
    and k * 8 bytes wrapped around: a heap-buffer overflow."""
    db = tmp_path / "forged.db"
    conn = gallery(ext, db)
    want = scalar(conn, [1, 2, 3, 4], 40)
    conn.execute("UPDATE facevec_knn_index SET n_vectors = ?", (2**62,))
    conn.close()
    run = run_isolated(
        ext,
        db,
        f"""
        rows = conn.execute(
            "SELECT rowid, distance FROM facevec_knn('face_meta', '[1, 2, 3, 4]', {HUGE_K})"
        ).fetchall()
        print(rows)
        """,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == str(want)


# --------------------------------------------------------------------------
# The same cases from the sqlite3 shell (and under the sanitizers:
# tests/test_sanitizers.py)


@pytest.mark.skipif(sqlite3_shell() is None, reason=WHY_NO_SHELL)
def test_hostile_script(ext):
    sql = (SQL_DIR / "knn_hostile.sql").read_text()
    check_battery(run_shell(ext.removesuffix(".so"), sql), sql)
