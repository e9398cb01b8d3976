"""The real sqlite3 shell (apt package sqlite3) loads the built extension with
`.load` and runs the SQL batteries of tests/sql/."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from sqlshell import (
    ERRORS_SQL,
    FUNCTIONS_SQL,
    WHY_NO_SHELL,
    check_errors_battery,
    check_functions_battery,
    run_shell,
    sqlite3_shell,
)

import facevec

pytestmark = pytest.mark.skipif(sqlite3_shell() is None, reason=WHY_NO_SHELL)


def test_functions_battery():
    sql = FUNCTIONS_SQL.read_text()
    check_functions_battery(run_shell(facevec.loadable_path(), sql), sql)


def test_errors_battery():
    sql = ERRORS_SQL.read_text()
    check_errors_battery(run_shell(facevec.loadable_path(), sql), sql)


def test_error_message_and_exit_status():
    result = run_shell(facevec.loadable_path(), "select euclidean_distance('[1,2]', '[1]');\n")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(
        "euclidean_distance: vectors have different dimensions: 2 and 1"
    )


def test_shell_answers_a_query_on_a_database_written_from_python(tmp_path):
    database = tmp_path / "faces.db"
    rng = np.random.default_rng(3)
    embeddings = rng.standard_normal((50, 128)).astype(np.float32)
    conn = facevec.connect(database)
    conn.execute("CREATE TABLE face_meta (img_name TEXT, embedding BLOB)")
    conn.executemany(
        "INSERT INTO face_meta VALUES (?, ?)",
        [(f"img{i}.jpg", row.tobytes()) for i, row in enumerate(embeddings)],
    )
    conn.commit()
    conn.close()
    query = embeddings[17] + 0.01
    expected = np.argsort(((embeddings.astype(np.float64) - query) ** 2).sum(1))[:5]
    literal = "x'" + query.astype("<f4").tobytes().hex() + "'"
    nearest = f"ORDER BY euclidean_distance(embedding, {literal}) LIMIT 5"
    result = subprocess.run(
        [
            sqlite3_shell(),
            "-batch",
            str(database),
            "-cmd",
            f".load {facevec.loadable_path()}",
            f"SELECT img_name FROM face_meta {nearest}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [f"img{i}.jpg" for i in expected]


def test_load_with_explicit_entry_point_and_suffix():
    suffix = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")
    result = run_shell(
        facevec.loadable_path() + suffix + " sqlite3_facevec_init", "select vector_dims('[1,2]');\n"
    )
    assert (result.returncode, result.stdout.strip()) == (0, "2")
