"""facevec_knn against a hostile or damaged database file.

A gallery file may come from anywhere: its schema (views, triggers) and the
index's own tables (counts, sizes, bitmaps, rowid arrays) are input, never
trusted. Whatever a file holds, a query or a sync must give the right answer
or an SQL error, never touch memory it does not own. Queries that crashed
the process before run in a subprocess, so a crash fails the test instead of
killing the test run.
"""

from __future__ import annotations

import json
import re
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


# --------------------------------------------------------------------------
# What a schema object (view, trigger) of the file may call

KNN_FUNCTIONS = [
    "facevec_knn_build('face_meta')",
    "facevec_knn_create('face_meta')",
    "facevec_knn_sync('face_meta')",
    "facevec_knn_drop('face_meta')",
    "facevec_knn_status('face_meta')",
]
PURE_CALLS = [
    "euclidean_distance(embedding, '[1, 2, 3, 4]')",
    "euclidean_distance_squared(embedding, '[1, 2, 3, 4]')",
    "cosine_distance(embedding, '[1, 2, 3, 4]')",
    "euclidean_l2_distance(embedding, '[1, 2, 3, 4]')",
    "inner_product(embedding, '[1, 2, 3, 4]')",
    "vector_dims(embedding)",
    "vector_to_json(embedding)",
    "vector_from_json(vector_to_json(embedding))",
    "sqrt(id)",
    "facevec_version()",
    "facevec_isa()",
]


def reopened(ext, db: Path, trusted_schema: bool = True):
    conn = connect(ext, db)
    conn.execute(f"PRAGMA trusted_schema = {'ON' if trusted_schema else 'OFF'}")
    return conn


@pytest.mark.parametrize("trusted_schema", [True, False])
def test_a_view_cannot_call_facevec_knn(ext, tmp_path, trusted_schema):
    db = tmp_path / "view.db"
    gallery(ext, db).execute(
        f"CREATE VIEW nearest AS SELECT rowid FROM facevec_knn('face_meta', '[1,2,3,4]', {HUGE_K})"
    )
    conn = reopened(ext, db, trusted_schema)
    with pytest.raises(
        pysqlite3.OperationalError, match='^unsafe use of virtual table "facevec_knn"$'
    ):
        conn.execute("SELECT count(*) FROM nearest").fetchall()


@pytest.mark.parametrize("call", KNN_FUNCTIONS)
def test_views_and_triggers_cannot_call_the_index_functions(ext, tmp_path, call):
    db = tmp_path / "schema.db"
    conn = gallery(ext, db)
    conn.execute(f"CREATE VIEW v AS SELECT {call}")
    conn.execute("CREATE TABLE audit(x)")
    conn.execute(f"CREATE TRIGGER t AFTER INSERT ON audit BEGIN SELECT {call}; END")
    conn = reopened(ext, db)
    name = call.split("(")[0]
    for sql in ("SELECT * FROM v", "INSERT INTO audit VALUES (1)"):
        with pytest.raises(pysqlite3.OperationalError, match=rf"^unsafe use of {name}\(\)$"):
            conn.execute(sql).fetchall()
    assert conn.execute("SELECT count(*) FROM audit").fetchone() == (0,)


def test_a_trigger_cannot_call_facevec_knn(ext, tmp_path):
    db = tmp_path / "trigger.db"
    conn = gallery(ext, db)
    conn.execute("CREATE TABLE audit(x)")
    conn.execute(
        "CREATE TRIGGER t AFTER INSERT ON audit BEGIN "
        "INSERT INTO audit SELECT rowid FROM facevec_knn('face_meta', '[1,2,3,4]', 3); END"
    )
    conn = reopened(ext, db)
    with pytest.raises(
        pysqlite3.OperationalError, match='^unsafe use of virtual table "facevec_knn"$'
    ):
        conn.execute("INSERT INTO audit VALUES (1)")


def test_views_may_call_the_pure_functions_with_trusted_schema_off(ext, tmp_path):
    db = tmp_path / "pure.db"
    conn = gallery(ext, db)
    conn.execute(f"CREATE VIEW v AS SELECT {', '.join(PURE_CALLS)} FROM face_meta")
    want = conn.execute("SELECT * FROM v").fetchall()
    assert len(want) == 40
    assert reopened(ext, db, trusted_schema=False).execute("SELECT * FROM v").fetchall() == want


def test_the_index_triggers_run_with_trusted_schema_off(ext, tmp_path):
    """The triggers facevec_knn_build adds are plain SQL, so connections that
    distrust the file's schema (facevec's own) still log every change."""
    db = tmp_path / "trusted.db"
    gallery(ext, db).close()
    conn = reopened(ext, db, trusted_schema=False)
    rng = np.random.default_rng(1)
    conn.execute("BEGIN")
    for _ in range(30):
        conn.execute(
            "INSERT INTO face_meta(embedding) VALUES (?)",
            (rng.standard_normal(4).astype(np.float32).tobytes(),),
        )
    conn.execute("DELETE FROM face_meta WHERE id % 3 = 0")
    conn.execute(
        "UPDATE face_meta SET embedding = ? WHERE id % 5 = 0", (np.ones(4, "f4").tobytes(),)
    )
    conn.execute("UPDATE face_meta SET id = id + 1000 WHERE id % 7 = 0")
    conn.execute("COMMIT")
    q = [0.5, -1, 2, 0.25]
    want = scalar(conn, q, 100)
    assert len(want) == 47
    knn_sql = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 100)"
    query = np.asarray(q, "f4").tobytes()
    assert conn.execute(knn_sql, (query,)).fetchall() == want  # pending rows
    assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()[0] > 0
    assert conn.execute(knn_sql, (query,)).fetchall() == want  # synced


def hostile_gallery(tmp_path: Path) -> Path:
    """A facevec database whose face_meta is a view over facevec_knn with a
    huge k on a forged index: what once crashed `facevec info` and `find`."""
    import facevec

    db = tmp_path / "hostile.db"
    vectors = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    facevec.add(str(db), [f"img{i}.jpg" for i in range(20)], vectors, model_name="Facenet")
    conn = connect(extension_under_test(), db)
    conn.execute("ALTER TABLE face_meta RENAME TO t")
    conn.execute("SELECT facevec_knn_build('t')")
    conn.execute("UPDATE facevec_knn_index SET n_vectors = ?", (2**62,))
    query = "x'" + vectors[0].tobytes().hex() + "'"
    conn.execute(
        "CREATE VIEW face_meta AS SELECT t.* FROM facevec_knn('t', "
        f"{query}, {HUGE_K}) AS k JOIN t ON t.id = k.rowid"
    )
    conn.close()
    return db


def test_facevec_info_and_find_refuse_a_hostile_file(ext, tmp_path):
    db = hostile_gallery(tmp_path)
    facevec_cli = Path(sys.executable).parent / "facevec"
    info = subprocess.run(
        [str(facevec_cli), "info", "--db", str(db)], capture_output=True, text=True, timeout=120
    )
    assert info.returncode == 1, info.stdout + info.stderr
    assert 'unsafe use of virtual table "facevec_knn"' in info.stderr
    find = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, numpy, facevec\n"
            "try:\n"
            "    facevec.find(numpy.ones(8, 'float32'), sys.argv[1])\n"
            "except Exception as error:\n"
            "    print(type(error).__name__, error)\n",
            str(db),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert find.returncode == 0, find.stderr[-3000:]
    assert 'unsafe use of virtual table "facevec_knn"' in find.stdout


# --------------------------------------------------------------------------
# Names: schema main only, no NUL


def shadow(conn, name: str, dim: int = 4) -> None:
    """A TEMP table named like a main one, holding other vectors."""
    conn.execute(f'CREATE TEMP TABLE "{name}"(id INTEGER PRIMARY KEY, embedding BLOB)')
    conn.executemany(
        f'INSERT INTO temp."{name}" VALUES (?, ?)',
        [(i, np.full(dim, 100 + i, "f4").tobytes()) for i in range(1, 6)],
    )


def test_a_temp_table_cannot_stand_in_for_the_main_one(ext):
    conn = connect(ext)
    make_table(conn, np.random.default_rng(2).standard_normal((30, 4)).astype(np.float32))
    shadow(conn, "face_meta")
    assert conn.execute("SELECT facevec_knn_build('face_meta')").fetchone() == (30,)
    q = [1, 2, 3, 4]
    query = np.asarray(q, "f4").tobytes()
    knn_sql = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 100)"
    want = conn.execute(
        "SELECT id, euclidean_distance(embedding, ?) AS d FROM main.face_meta ORDER BY d, id",
        (query,),
    ).fetchall()
    assert conn.execute(knn_sql, (query,)).fetchall() == want
    conn.execute("DELETE FROM main.face_meta WHERE id <= 10")
    conn.execute("INSERT INTO temp.face_meta VALUES (50, ?)", (query,))
    want = want[:0] + [row for row in want if row[0] > 10]
    assert conn.execute(knn_sql, (query,)).fetchall() == want
    assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone() == (10,)
    assert conn.execute(knn_sql, (query,)).fetchall() == want
    assert '"vectors":20' in conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0]
    assert conn.execute("SELECT count(*) FROM temp.face_meta").fetchone() == (6,)
    assert conn.execute("SELECT facevec_knn_drop('face_meta')").fetchone() == (1,)
    assert conn.execute("SELECT count(*) FROM temp.face_meta").fetchone() == (6,)


@pytest.mark.parametrize(
    "name",
    [
        "facevec_knn_index",
        "face_meta_fvknn_chunks",
        "face_meta_fvknn_log",
        "face_meta_fvknn_rowids",
    ],
)
def test_temp_tables_named_like_the_index_tables_are_ignored(ext, name):
    conn = gallery(ext)
    q = np.asarray([1, 2, 3, 4], "f4").tobytes()
    knn_sql = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 100)"
    want = conn.execute(knn_sql, (q,)).fetchall()
    conn.execute(f'CREATE TEMP TABLE "{name}" AS SELECT * FROM main."{name}" WHERE 0')
    conn.execute("DELETE FROM face_meta WHERE id = 7")
    want = [row for row in want if row[0] != 7]
    assert conn.execute(knn_sql, (q,)).fetchall() == want
    assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone() == (1,)
    assert conn.execute(knn_sql, (q,)).fetchall() == want
    assert conn.execute("SELECT facevec_knn_build('face_meta')").fetchone() == (39,)
    assert conn.execute(knn_sql, (q,)).fetchall() == want
    assert conn.execute(f'SELECT count(*) FROM temp."{name}"').fetchone() == (0,)


@pytest.mark.parametrize(
    "sql, value, message",
    [
        ("SELECT facevec_knn_build(?)", "canary\0evil", "facevec_knn_build: table (argument 1)"),
        ("SELECT facevec_knn_create(?)", "canary\0evil", "facevec_knn_create: table (argument 1)"),
        ("SELECT facevec_knn_sync(?)", "canary\0evil", "facevec_knn_sync: table (argument 1)"),
        ("SELECT facevec_knn_drop(?)", "canary\0evil", "facevec_knn_drop: table (argument 1)"),
        ("SELECT facevec_knn_status(?)", "canary\0evil", "facevec_knn_status: table (argument 1)"),
        (
            "SELECT * FROM facevec_knn(?, '[1, 2, 3, 4]', 3)",
            "canary\0evil",
            "facevec_knn: collection (argument 1)",
        ),
        (
            "SELECT facevec_knn_build('canary', ?)",
            "embedding\0x",
            "facevec_knn_build: column (argument 2)",
        ),
        (
            "SELECT * FROM facevec_knn('canary', '[1]', 3, ?)",
            "cosine\0x",
            "facevec_knn: metric (argument 4)",
        ),
    ],
)
def test_a_name_holding_nul_is_an_error(ext, sql, value, message):
    conn = gallery(ext)
    conn.execute("CREATE TABLE canary(id INTEGER PRIMARY KEY, embedding BLOB)")
    conn.execute("INSERT INTO canary VALUES (1, x'0000803f')")
    conn.execute("SELECT facevec_knn_build('canary')")
    with pytest.raises(
        pysqlite3.OperationalError, match="^" + re.escape(message + " contains a NUL character")
    ):
        conn.execute(sql, (value,)).fetchall()
    assert conn.execute("SELECT facevec_knn_status('canary')").fetchone()[0] is not None


# --------------------------------------------------------------------------
# facevec_knn_status is valid JSON whatever the names


@pytest.mark.parametrize("name", ['quote"d', "back\\slash", "new\nline", "bell\x07tab\t", "é ü ☃"])
def test_status_is_json_for_any_table_and_column_name(ext, name):
    conn = connect(ext)
    quoted = '"' + name.replace('"', '""') + '"'
    column = "col " + name
    conn.execute(
        f'CREATE TABLE {quoted}(id INTEGER PRIMARY KEY, "{column.replace(chr(34), chr(34) * 2)}")'
    )
    conn.execute(f"INSERT INTO {quoted} VALUES (1, x'0000803f'), (2, x'00000040')")
    assert conn.execute("SELECT facevec_knn_build(?, ?)", (name, column)).fetchone() == (2,)
    text = conn.execute("SELECT facevec_knn_status(?)", (name,)).fetchone()[0]
    assert json.loads(text) == {
        "table": name,
        "column": column,
        "dim": 1,
        "chunk_size": 8192,
        "chunks": 1,
        "slots": 2,
        "vectors": 2,
        "pending": 0,
        "building": False,
        "triggers": True,
    }
