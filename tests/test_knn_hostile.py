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
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
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
    and k * 8 bytes wrapped around: a heap-buffer overflow. Now the count is
    checked against the chunks, and the heap grows with the rows seen."""
    db = tmp_path / "forged.db"
    gallery(ext, db).execute("UPDATE facevec_knn_index SET n_vectors = ?", (2**62,))
    run = run_isolated(
        ext,
        db,
        f"""
        try:
            conn.execute(
                "SELECT rowid, distance FROM facevec_knn('face_meta', '[1, 2, 3, 4]', {HUGE_K})"
            ).fetchall()
        except sqlite3.OperationalError as error:
            print(error)
        """,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip() == (
        "facevec_knn: the knn index of face_meta is corrupt (4611686018427387904 vectors in "
        "1 chunks of 64); rebuild it with: facevec reindex"
    )


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
        sqlite3.OperationalError, match='^unsafe use of virtual table "facevec_knn"$'
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
        with pytest.raises(sqlite3.OperationalError, match=rf"^unsafe use of {name}\(\)$"):
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
        sqlite3.OperationalError, match='^unsafe use of virtual table "facevec_knn"$'
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
        sqlite3.OperationalError, match="^" + re.escape(message + " contains a NUL character")
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
        "storage": "float32",
        "rerank": 0,
        "skipped": 0,
        "skipped_rows": [],
        "build_done": None,
        "build_total": None,
        "lists": 0,
    }


# --------------------------------------------------------------------------
# A damaged index: the right answer or an error asking for a rebuild
#
# The gallery: 150 rows of 4-d vectors in chunks of 64 (chunks 1 and 2 full,
# the tail chunk 3 holding 22), rows 20-25 deleted and synced (invalid slots
# 19-24 of chunk 1), then changes left in the log: row 5 updated, row 6
# deleted, row 151 inserted, row 7 renumbered 200.

CORRUPT = re.compile(
    r"^facevec_knn(_sync|_status)?: the knn index of face_meta "
    r"(is corrupt \(.+\)|is stale: .+); rebuild it with: facevec reindex$"
)
META_FIELDS = ["dim", "chunk_size", "tail_chunk", "tail_used", "n_vectors", "build_next", "format"]
META_VALUES = [
    "-5", "-1", "0", "1", "3", "63", "65", "4096", "2147483648", "4611686018427387904",
    "9223372036854775807", "-9223372036854775808", "NULL", "'text'", "1.5", "x'00'",
]  # fmt: skip
LOOSE_META = [  # the description without its constraints, as a forger may write it
    "ALTER TABLE facevec_knn_index RENAME TO old_index",
    "CREATE TABLE facevec_knn_index(tbl TEXT PRIMARY KEY COLLATE NOCASE, col, pk, dim, "
    "chunk_size, tail_chunk, tail_used, n_vectors, build_next, format)",
    "INSERT INTO facevec_knn_index SELECT * FROM old_index",
    "DROP TABLE old_index",
]
LOOSE_CHUNKS = [
    "ALTER TABLE face_meta_fvknn_chunks RENAME TO old_chunks",
    "CREATE TABLE face_meta_fvknn_chunks(id INTEGER PRIMARY KEY, valid, rowids, vectors)",
    "INSERT INTO face_meta_fvknn_chunks SELECT * FROM old_chunks",
    "DROP TABLE old_chunks",
]
CHUNKS = "UPDATE face_meta_fvknn_chunks SET "
ROWIDS = "UPDATE face_meta_fvknn_rowids SET "
LOG = "INSERT INTO face_meta_fvknn_log(rid) VALUES "


def le64(*values: int) -> str:
    return "x'" + np.asarray(values, "<i8").tobytes().hex() + "'"


FORGERIES: dict[str, list[str]] = {
    **{
        f"{field}={value}": [*LOOSE_META, f"UPDATE facevec_knn_index SET {field} = {value}"]
        for field in META_FIELDS
        for value in META_VALUES
    },
    **{
        f"{field}={value}": [*LOOSE_META, f"UPDATE facevec_knn_index SET {field} = {value}"]
        for field in ("col", "pk")
        for value in ("'nope'", "'img_name'", "'id'", "'embedding'", "NULL", "5", "''")
    },
    "no format column": ["ALTER TABLE facevec_knn_index DROP COLUMN format"],
    "vectors short": [CHUNKS + "vectors = substr(vectors, 1, 100) WHERE id = 2"],
    "vectors long": [CHUNKS + "vectors = vectors || x'00000000' WHERE id = 3"],
    "vectors text": [CHUNKS + "vectors = CAST(vectors AS TEXT) WHERE id = 1"],
    "vectors NULL": [*LOOSE_CHUNKS, CHUNKS + "vectors = NULL WHERE id = 2"],
    "vectors integer": [*LOOSE_CHUNKS, CHUNKS + "vectors = 7 WHERE id = 3"],
    "valid empty": [CHUNKS + "valid = x'' WHERE id = 1"],
    "valid short": [CHUNKS + "valid = x'ff' WHERE id = 2"],
    "valid NULL": [*LOOSE_CHUNKS, CHUNKS + "valid = NULL WHERE id = 3"],
    "rowids short": [CHUNKS + "rowids = substr(rowids, 1, 64) WHERE id = 1"],
    "rowids long": [CHUNKS + "rowids = rowids || rowids WHERE id = 3"],
    "rowids real": [*LOOSE_CHUNKS, CHUNKS + "rowids = 1.5 WHERE id = 3"],
    "tail bits set": [CHUNKS + "valid = x'ffffffffffffffff' WHERE id = 3"],
    "all bits set": [CHUNKS + "valid = x'ffffffffffffffff' WHERE id = 1"],
    "bits cleared": [CHUNKS + "valid = zeroblob(8) WHERE id = 2"],
    "one bit cleared": [CHUNKS + "valid = x'fe' || substr(valid, 2) WHERE id = 2"],
    "rowid unknown": [CHUNKS + f"rowids = {le64(999999)} || substr(rowids, 9) WHERE id = 1"],
    "rowid negative": [CHUNKS + f"rowids = {le64(-(2**63))} || substr(rowids, 9) WHERE id = 2"],
    "rowid twice": [CHUNKS + "rowids = substr(rowids, 9, 8) || substr(rowids, 9) WHERE id = 1"],
    "rowid of a pending row": [CHUNKS + f"rowids = {le64(8)} || substr(rowids, 9) WHERE id = 2"],
    "first chunk gone": ["DELETE FROM face_meta_fvknn_chunks WHERE id = 1"],
    "tail chunk gone": ["DELETE FROM face_meta_fvknn_chunks WHERE id = 3"],
    "all chunks gone": ["DELETE FROM face_meta_fvknn_chunks"],
    "tail renumbered": ["UPDATE face_meta_fvknn_chunks SET id = 7 WHERE id = 3"],
    "chunk 0": ["UPDATE face_meta_fvknn_chunks SET id = 0 WHERE id = 1"],
    "chunk -1": ["UPDATE face_meta_fvknn_chunks SET id = -1 WHERE id = 2"],
    "tail chunk far": [
        "UPDATE face_meta_fvknn_chunks SET id = 1125899906842624 WHERE id = 3",
        "UPDATE face_meta_fvknn_rowids SET chunk = 1125899906842624 WHERE chunk = 3",
        "UPDATE facevec_knn_index SET tail_chunk = 1125899906842624",
    ],
    "extra chunk": [
        "INSERT INTO face_meta_fvknn_chunks SELECT 9, valid, rowids, vectors "
        "FROM face_meta_fvknn_chunks WHERE id = 1"
    ],
    "map gone": ["DELETE FROM face_meta_fvknn_rowids WHERE rid = 5"],
    "map emptied": ["DELETE FROM face_meta_fvknn_rowids"],
    "map slot past chunk": [ROWIDS + "slot = 9999 WHERE rid = 5"],
    "map slot past tail": [ROWIDS + "chunk = 3, slot = 40 WHERE rid = 5"],
    "map slot negative": [ROWIDS + "slot = -1 WHERE rid = 6"],
    "map slot of another row": [ROWIDS + "slot = 8 WHERE rid = 5"],
    "map slot invalid": [ROWIDS + "slot = 20 WHERE rid = 6"],
    "map chunk unknown": [ROWIDS + "chunk = 99 WHERE rid = 7"],
    "map chunk text": [ROWIDS + "chunk = 'x' WHERE rid = 5"],
    "map extra": ["INSERT INTO face_meta_fvknn_rowids VALUES (151, 1, 0)"],
    "log text": [LOG + "('abc')"],
    "log real": [LOG + "(8.5)"],
    "log blob": [LOG + "(x'00')"],
    "log extremes": [LOG + "(9223372036854775807), (-9223372036854775808)"],
    "trigger gone": ["DROP TRIGGER face_meta_fvknn_del"],
    "trigger changed": [
        "DROP TRIGGER face_meta_fvknn_ins",
        "CREATE TRIGGER face_meta_fvknn_ins AFTER INSERT ON face_meta BEGIN SELECT 1; END",
    ],
    "log table gone": ["DROP TABLE face_meta_fvknn_log"],
    "map table gone": ["DROP TABLE face_meta_fvknn_rowids"],
    "chunks table gone": ["DROP TABLE face_meta_fvknn_chunks"],
    "chunks a view": [
        "ALTER TABLE face_meta_fvknn_chunks RENAME TO old_chunks",
        "CREATE VIEW face_meta_fvknn_chunks AS SELECT * FROM old_chunks",
    ],
    "log a view": [
        "ALTER TABLE face_meta_fvknn_log RENAME TO old_log",
        "CREATE VIEW face_meta_fvknn_log AS SELECT * FROM old_log",
    ],
}


# Forgeries of an index in the middle of a build (rows 1-100 indexed).
BUILDING_FORGERIES = {
    f"cursor {value}": [f"UPDATE facevec_knn_index SET build_next = {value}"]
    for value in (0, 50, 140, 10**9, -(2**63), 2**63 - 1)
}


@pytest.fixture(scope="module")
def building_gallery_template(tmp_path_factory, ext) -> Path:
    db = tmp_path_factory.mktemp("building") / "template.db"
    conn = connect(ext, db)
    make_table(conn, np.random.default_rng(3).standard_normal((144, 4)).astype(np.float32))
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', 64)")
    assert conn.execute("SELECT facevec_knn_sync('face_meta', 100)").fetchone() == (100,)
    conn.close()
    return db


@pytest.fixture(scope="module")
def damaged_gallery_template(tmp_path_factory, ext) -> Path:
    db = tmp_path_factory.mktemp("damaged") / "template.db"
    conn = gallery(ext, db, n=150)
    conn.execute("DELETE FROM face_meta WHERE id BETWEEN 20 AND 25")
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 5", (np.ones(4, "f4").tobytes(),))
    conn.execute("DELETE FROM face_meta WHERE id = 6")
    conn.execute(
        "INSERT INTO face_meta(id, embedding) VALUES (151, ?)", (np.ones(4, "f4").tobytes(),)
    )
    conn.execute("UPDATE face_meta SET id = 200 WHERE id = 7")
    conn.close()
    return db


def right_or_corrupt(run) -> str:
    """run() gives the right answer (True) or an error asking for a rebuild."""
    try:
        assert run()
        return "right"
    except sqlite3.Error as error:
        assert CORRUPT.match(str(error)), str(error)
        assert type(error) is sqlite3.OperationalError
        return "corrupt"


@pytest.mark.slow  # 181 forgeries
@pytest.mark.parametrize("forgery", list(FORGERIES) + list(BUILDING_FORGERIES))
def test_a_damaged_index_gives_the_right_answer_or_asks_for_a_rebuild(
    ext, tmp_path, request, forgery
):
    building = forgery in BUILDING_FORGERIES
    template = request.getfixturevalue(
        "building_gallery_template" if building else "damaged_gallery_template"
    )
    db = tmp_path / "damaged.db"
    db.write_bytes(template.read_bytes())
    conn = connect(ext, db)
    for sql in (BUILDING_FORGERIES if building else FORGERIES)[forgery]:
        conn.execute(sql)
    q = [0.5, -1, 2, 0.25]

    def queries_right() -> bool:
        return all(
            conn.execute(
                "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 1000, ?)",
                (np.asarray(q, "f4").tobytes(), metric),
            ).fetchall()
            == scalar(conn, q, 1000, metric)
            for metric in ("euclidean", "cosine")
        )

    def status_right() -> bool:
        info = json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])
        return info["vectors"] + info["pending"] >= 0

    outcomes = [right_or_corrupt(queries_right), right_or_corrupt(status_right)]
    outcomes.append(
        right_or_corrupt(lambda: conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone())
    )
    outcomes.append(right_or_corrupt(queries_right))
    # A rebuild repairs whatever was damaged.
    assert conn.execute("SELECT facevec_knn_build('face_meta')").fetchone() == (144,)
    assert queries_right()
    assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone() == (0,)


def test_an_index_claiming_rows_it_never_indexed_fails_the_next_sync(
    ext, tmp_path, building_gallery_template
):
    """A build cursor cleared in the middle of a build makes the index look
    complete without rows 101-144. A query cannot see that without counting
    the table (as costly as the query itself); the next sync does."""
    db = tmp_path / "claims.db"
    db.write_bytes(building_gallery_template.read_bytes())
    conn = connect(ext, db)
    conn.execute("UPDATE facevec_knn_index SET build_next = NULL")
    with pytest.raises(sqlite3.OperationalError) as error:
        conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()
    assert str(error.value) == (
        "facevec_knn_sync: the knn index of face_meta is corrupt (it holds 100 vectors, "
        "the table 144); rebuild it with: facevec reindex"
    )


# --------------------------------------------------------------------------
# The same cases from the sqlite3 shell (and under the sanitizers:
# tests/test_sanitizers.py)


@pytest.mark.skipif(sqlite3_shell() is None, reason=WHY_NO_SHELL)
def test_hostile_script(ext):
    sql = (SQL_DIR / "knn_hostile.sql").read_text()
    check_battery(run_shell(ext.removesuffix(".so"), sql), sql)


# --------------------------------------------------------------------------
# The checks are skipped only while the file is unchanged


def test_a_damage_after_a_query_is_seen_by_the_next_query(ext, tmp_path):
    """A connection remembers that an index passed its checks until the file
    changes: another connection's commit, a write of its own (even inside an
    open transaction) or a schema change makes the next query check again."""
    db = tmp_path / "later.db"
    conn = gallery(ext, db)
    q = np.asarray([1, 2, 3, 4], "f4").tobytes()
    knn_sql = "SELECT rowid FROM facevec_knn('face_meta', ?, 100)"
    assert len(conn.execute(knn_sql, (q,)).fetchall()) == 40
    corrupt = re.compile(r"^facevec_knn: the knn index of face_meta is (corrupt|stale)")

    other = connect(ext, db)  # another connection's commit
    other.execute("UPDATE facevec_knn_index SET n_vectors = 39")
    other.close()
    with pytest.raises(sqlite3.OperationalError, match=corrupt):
        conn.execute(knn_sql, (q,)).fetchall()
    conn.execute("UPDATE facevec_knn_index SET n_vectors = 40")
    assert len(conn.execute(knn_sql, (q,)).fetchall()) == 40

    conn.execute("BEGIN")  # this connection's own write, not yet committed
    conn.execute("UPDATE face_meta_fvknn_chunks SET vectors = substr(vectors, 1, 64)")
    with pytest.raises(sqlite3.OperationalError, match=corrupt):
        conn.execute(knn_sql, (q,)).fetchall()
    conn.execute("ROLLBACK")
    assert len(conn.execute(knn_sql, (q,)).fetchall()) == 40

    conn.execute("BEGIN")  # a schema change inside a transaction
    conn.execute("DROP TRIGGER face_meta_fvknn_del")
    with pytest.raises(sqlite3.OperationalError, match=corrupt):
        conn.execute(knn_sql, (q,)).fetchall()
    conn.execute("ROLLBACK")
    assert len(conn.execute(knn_sql, (q,)).fetchall()) == 40


def test_queries_of_two_tables_on_one_connection(ext):
    """Alternating tables on one connection: each query gets its own table's
    index, not the one the connection remembers from the query before."""
    conn = gallery(ext)
    conn.execute("CREATE TABLE other(id INTEGER PRIMARY KEY, embedding BLOB)")
    conn.executemany(
        "INSERT INTO other VALUES (?, ?)", [(i, np.full(4, i, "f4").tobytes()) for i in range(1, 6)]
    )
    conn.execute("SELECT facevec_knn_build('other')")
    q = np.asarray([1, 2, 3, 4], "f4").tobytes()
    want = {
        table: conn.execute(
            f"SELECT id, euclidean_distance(embedding, ?) AS d FROM {table} ORDER BY d, id LIMIT 3",
            (q,),
        ).fetchall()
        for table in ("face_meta", "other")
    }
    assert want["face_meta"] != want["other"]
    for _ in range(2):
        for table in ("face_meta", "other"):
            got = conn.execute(
                "SELECT rowid, distance FROM facevec_knn(?, ?, 3)", (table, q)
            ).fetchall()
            assert got == want[table]
