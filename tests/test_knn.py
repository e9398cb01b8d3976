"""facevec_knn: the in-database exact nearest-neighbour index (csrc/knn_*.c).

Every answer is compared with the scalar path (``ORDER BY <metric>_distance(
embedding, ?), id``: same rows, bit-identical distances) and with a numpy
float64 reference (explicit tolerance), over random collections, after
changes, after reopening and after a crash.

The extension under test is $FACEVEC_LOADABLE if set (e.g. a sanitizer
build), else the installed facevec's.
"""

from __future__ import annotations

import re
import signal
import sqlite3
import sqlite3 as stdlib_sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from knn_helpers import (  # noqa: E402
    SCALAR,
    assert_matches,
    check_reference,
    connect,
    current,
    extension_under_test,
    knn,
    make_table,
    random_changes,
    reference,
    scalar,
    status,
)

ROOT = Path(__file__).resolve().parent.parent
CSRC = ROOT / "csrc"
SUFFIX = {"darwin": ".dylib", "win32": ".dll"}.get(sys.platform, ".so")


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


# --------------------------------------------------------------------------
# Results


@pytest.mark.parametrize(
    "n, dim, chunk",
    [
        (1, 3, 64),
        (63, 5, 64),
        (64, 16, 64),
        (65, 16, 64),
        (200, 7, 64),
        (1000, 128, 128),
        (3000, 33, None),
        (300, 2048, 1024),  # appends written in pieces: 128 vectors fill the 1 MiB buffer
    ],
)
@pytest.mark.parametrize("metric", list(SCALAR))
def test_matches_scalar_and_numpy(ext, n, dim, chunk, metric):
    rng = np.random.default_rng(n * 31 + dim)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    args = ("face_meta", "embedding") + (() if chunk is None else (chunk,))
    assert conn.execute(
        f"SELECT facevec_knn_build({', '.join('?' * len(args))})", args
    ).fetchone() == (n,)
    ids = list(range(1, n + 1))
    for k in sorted({1, 5, n, n + 3}):
        q = rng.standard_normal(dim).astype(np.float32)
        assert_matches(conn, x, ids, q, k, metric)
    # a query equal to a stored row: distance 0 (or its rounding) comes first
    got = knn(conn, x[n // 2], 1, metric)
    assert got[0][0] == n // 2 + 1 or got[0][1] <= 1e-6


@pytest.mark.parametrize("metric", list(SCALAR))
def test_thresholds(ext, metric):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((500, 12)).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    q = rng.standard_normal(12).astype(np.float32)
    d = np.sort(reference(x, range(1, 501), q, metric))
    for threshold in (float(d[0]) / 2, float(d[3]), float(d[40]), float(d[-1]) + 1, 0.0):
        for k in (5, 100, 500):
            assert_matches(conn, x, range(1, 501), q, k, metric, threshold)
    # a threshold exactly at a returned distance keeps that row
    top = knn(conn, q, 3, metric)
    assert knn(conn, q, 10, metric, top[2][1]) == top


@pytest.mark.parametrize("metric", list(SCALAR))
def test_threshold_null_and_infinity_mean_no_limit(ext, metric):
    rng = np.random.default_rng(8)
    x = rng.standard_normal((200, 6)).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    q = rng.standard_normal(6).astype(np.float32)
    every = assert_matches(conn, x, range(1, 201), q, 300, metric)
    assert len(every) == 200
    assert knn(conn, q, 300, metric, float("inf")) == every
    assert knn(conn, q, 300, metric, None) == every
    # 0 keeps exact matches only: the stored row itself, where its distance rounds to 0
    exact = assert_matches(conn, x, range(1, 201), x[7], 5, metric, 0.0)
    if metric in ("euclidean", "euclidean_squared"):
        assert exact == [(8, 0.0)]


@pytest.mark.parametrize("scale", (1e20, 1e-22))
@pytest.mark.parametrize("metric", list(SCALAR))
def test_extreme_values_match_scalar(ext, metric, scale):
    """Vectors whose float32 sums overflow or underflow: the index returns
    the scalar functions' double-checked distances, bit for bit."""
    rng = np.random.default_rng(9)
    x = (np.clip(rng.standard_normal((150, 8)), -3, 3) * scale).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    for _ in range(3):
        q = (np.clip(rng.standard_normal(8), -3, 3) * scale).astype(np.float32)
        got = knn(conn, q, 20, metric)
        assert got == scalar(conn, q, 20, metric)
        check_reference(got, x, range(1, 151), q, 20, metric)


def test_ties_are_broken_by_rowid(ext):
    rng = np.random.default_rng(3)
    x = rng.integers(0, 3, (700, 4)).astype(np.float32)  # many exact duplicates
    ids = rng.permutation(np.arange(1, 5000))[:700]
    conn = connect(ext)
    make_table(conn, x, ids)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    for metric in ("euclidean", "euclidean_squared"):
        for k in (1, 7, 64, 65, 300, 700):
            q = rng.integers(0, 3, 4).astype(np.float32)
            got = assert_matches(conn, x, ids, q, k, metric)
            assert got == sorted(got, key=lambda r: (r[1], r[0]))


def test_json_query_rank_and_join(ext):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((100, 4)).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta')")
    q = [0.5, -1, 2, 0.25]
    as_json = conn.execute(
        "SELECT rowid, distance, rank FROM facevec_knn('face_meta', '[0.5, -1, 2, 0.25]', 5)"
    ).fetchall()
    assert [(r, d) for r, d, _ in as_json] == knn(conn, q, 5)
    assert [rank for *_, rank in as_json] == [1, 2, 3, 4, 5]
    joined = conn.execute(
        "SELECT f.img_name, k.distance FROM facevec_knn('face_meta', ?, 3) AS k "
        "JOIN face_meta f ON f.id = k.rowid",
        (np.asarray(q, np.float32).tobytes(),),
    ).fetchall()
    assert [name for name, _ in joined] == [f"img{r}.jpg" for r, _ in knn(conn, q, 3)]
    # hidden-column form and ORDER BY distance (consumed, still ordered)
    named = conn.execute(
        "SELECT rowid, distance FROM facevec_knn WHERE collection = 'face_meta' AND query = ? "
        "AND k = 5 AND metric = 'cosine' ORDER BY distance",
        (np.asarray(q, np.float32).tobytes(),),
    ).fetchall()
    assert named == knn(conn, q, 5, "cosine")


def test_table_name_case_and_quoting(ext):
    conn = connect(ext)
    conn.execute('CREATE TABLE "Face Meta""s"(pk INTEGER PRIMARY KEY, "the vec" BLOB)')
    x = np.random.default_rng(0).standard_normal((50, 3)).astype(np.float32)
    conn.executemany(
        'INSERT INTO "Face Meta""s" VALUES (?, ?)', [(i + 1, v.tobytes()) for i, v in enumerate(x)]
    )
    assert conn.execute("""SELECT facevec_knn_build('face meta"s', 'the vec')""").fetchone() == (
        50,
    )
    got = knn(conn, x[0], 3, table='FACE META"S')
    assert got[0] == (1, 0.0)
    conn.execute('DELETE FROM "Face Meta""s" WHERE pk = 1')
    assert knn(conn, x[0], 1, table='Face Meta"s')[0][0] != 1


# --------------------------------------------------------------------------
# Changes: triggers, pending rows, sync


def mutate(conn, rng, n_ops, dim, next_id):
    """Random changes (knn_helpers.random_changes) with standard normal vectors."""
    return random_changes(conn, rng, n_ops, next_id, lambda r: r.standard_normal(dim))


def check_all(conn, rng, dim, metrics=("euclidean", "cosine")):
    x, ids = current(conn)
    for metric in metrics:
        q = rng.standard_normal(dim).astype(np.float32)
        for k in (1, 10, len(ids) + 1):
            assert_matches(conn, x, ids, q, k, metric)


def check_consistent(conn):
    """Index bookkeeping equals the table once synced."""
    info = status(conn)
    assert info["pending"] == 0 and not info["building"]
    n_rows = conn.execute("SELECT count(*) FROM face_meta WHERE embedding IS NOT NULL").fetchone()[
        0
    ]
    assert info["vectors"] == n_rows
    assert conn.execute('SELECT count(*) FROM "face_meta_fvknn_rowids"').fetchone()[0] == n_rows
    bits = sum(
        bin(b).count("1")
        for (valid,) in conn.execute('SELECT valid FROM "face_meta_fvknn_chunks"')
        for b in valid
    )
    assert bits == n_rows


def test_changes_before_and_after_sync(ext):
    rng = np.random.default_rng(11)
    dim = 6
    conn = connect(ext)
    make_table(conn, rng.standard_normal((300, dim)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    next_id = 301
    for round_ in range(6):
        conn.execute("BEGIN")
        next_id = mutate(conn, rng, 60, dim, next_id)
        conn.execute("COMMIT")
        assert status(conn)["pending"] > 0
        check_all(conn, rng, dim)  # pending rows are read from the table
        if round_ % 2:
            while conn.execute("SELECT facevec_knn_sync('face_meta', 7)").fetchone()[0] == 7:
                pass
        else:
            conn.execute("SELECT facevec_knn_sync('face_meta')")
        check_consistent(conn)
        check_all(conn, rng, dim)


def test_delete_everything_then_refill(ext):
    rng = np.random.default_rng(12)
    conn = connect(ext)
    make_table(conn, rng.standard_normal((200, 4)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.execute("DELETE FROM face_meta")
    assert knn(conn, [1, 2, 3, 4], 5) == []
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    assert conn.execute('SELECT count(*) FROM "face_meta_fvknn_chunks"').fetchone()[0] <= 1
    assert knn(conn, [1, 2, 3, 4], 5) == []
    make = rng.standard_normal((100, 4)).astype(np.float32)
    conn.executemany("INSERT INTO face_meta(embedding) VALUES (?)", [(v.tobytes(),) for v in make])
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    check_all(conn, rng, 4)


def test_writers_without_the_extension(ext, tmp_path):
    """The triggers are plain SQL: a stdlib sqlite3 connection (no facevec)
    can insert, and the next query on another connection sees it."""
    rng = np.random.default_rng(13)
    db = tmp_path / "faces.db"
    conn = connect(ext, db)
    make_table(conn, rng.standard_normal((100, 8)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    plain = stdlib_sqlite3.connect(db)
    v = rng.standard_normal(8).astype(np.float32)
    with plain:
        plain.execute("INSERT INTO face_meta(id, embedding) VALUES (1000, ?)", (v.tobytes(),))
        plain.execute("DELETE FROM face_meta WHERE id = 5")
    plain.close()
    assert knn(conn, v, 1) == [(1000, 0.0)]
    assert 5 not in [r for r, _ in knn(conn, rng.standard_normal(8), 200)]
    check_all(conn, rng, 8)


def test_create_then_sync_in_batches(ext):
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1000, 10)).astype(np.float32)
    conn = connect(ext)
    make_table(conn, x)
    assert conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', 64)").fetchone() == (
        0,
    )
    assert status(conn)["building"]
    check_all(conn, rng, 10)  # nothing indexed yet: all read from the table
    steps = 0
    while True:
        done = conn.execute("SELECT facevec_knn_sync('face_meta', 300)").fetchone()[0]
        steps += 1
        conn.execute("DELETE FROM face_meta WHERE id = ?", (steps * 97,))  # change mid-build
        check_all(conn, rng, 10, metrics=("euclidean",))
        if done < 300:
            break
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    assert steps == 4


@pytest.mark.slow
def test_reopen(ext, tmp_path):
    rng = np.random.default_rng(15)
    db = tmp_path / "faces.db"
    conn = connect(ext, db)
    make_table(conn, rng.standard_normal((500, 16)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 128)")
    mutate(conn, rng, 50, 16, 1000)
    q = rng.standard_normal(16).astype(np.float32)
    before = knn(conn, q, 20, "cosine")
    conn.close()
    conn = connect(ext, db)
    assert knn(conn, q, 20, "cosine") == before
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    conn.close()
    conn = connect(ext, db)
    assert knn(conn, q, 20, "cosine") == before
    check_consistent(conn)
    check_all(conn, rng, 16)


def test_rebuild_compacts_and_drop_removes(ext):
    rng = np.random.default_rng(16)
    conn = connect(ext)
    make_table(conn, rng.standard_normal((640, 4)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.execute("DELETE FROM face_meta WHERE id % 2 = 0")
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    assert status(conn)["slots"] == 640
    assert conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)").fetchone() == (
        320,
    )
    assert status(conn)["slots"] == 320
    check_all(conn, rng, 4)
    assert conn.execute("SELECT facevec_knn_drop('face_meta')").fetchone() == (1,)
    assert conn.execute("SELECT facevec_knn_drop('face_meta')").fetchone() == (0,)
    assert conn.execute("SELECT facevec_knn_status('face_meta')").fetchone() == (None,)
    left = conn.execute(
        "SELECT name FROM sqlite_schema WHERE name LIKE 'face_meta_fvknn%'"
    ).fetchall()
    assert left == []
    conn.execute("INSERT INTO face_meta(embedding) VALUES (x'00000000')")  # no trigger left


def test_recreated_table_is_detected(ext):
    conn = connect(ext)
    make_table(conn, np.ones((3, 2), np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    conn.execute("DROP TABLE face_meta")  # drops the triggers with it
    make_table(conn, np.zeros((3, 2), np.float32))
    with pytest.raises(sqlite3.OperationalError, match=re.escape("its triggers are missing")):
        knn(conn, [1, 1], 1)
    conn.execute("SELECT facevec_knn_build('face_meta')")
    assert knn(conn, [1, 1], 1) == [(1, pytest.approx(2**0.5))]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    n0=st.integers(0, 150),
    ops=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 10**6)), max_size=60),
    sync_every=st.integers(1, 30),
    k=st.integers(1, 40),
    metric=st.sampled_from(list(SCALAR)),
)
def test_random_histories(ext, n0, ops, sync_every, k, metric):
    dim = 3
    rng = np.random.default_rng(n0)
    conn = connect(ext)
    make_table(conn, rng.integers(-2, 3, (n0, dim)).astype(np.float32) + 0.5)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    for i, (op, r) in enumerate(ops):
        ids = [row[0] for row in conn.execute("SELECT id FROM face_meta")]
        vec = (np.array([r % 5, r // 5 % 5, r // 25 % 5], np.float32) - 1.5).tobytes()
        if op <= 1 or not ids:
            conn.execute("INSERT INTO face_meta(embedding) VALUES (?)", (vec,))
        elif op == 2:
            conn.execute("DELETE FROM face_meta WHERE id = ?", (ids[r % len(ids)],))
        elif op == 3:
            conn.execute(
                "UPDATE face_meta SET embedding = ? WHERE id = ?", (vec, ids[r % len(ids)])
            )
        elif op == 4:
            conn.execute("UPDATE face_meta SET embedding = NULL WHERE id = ?", (ids[r % len(ids)],))
        else:
            # OR REPLACE: the displaced row fires no DELETE trigger (recursive_triggers is off)
            conn.execute(
                "UPDATE OR REPLACE face_meta SET id = ? WHERE id = ?",
                (10**6 + r % 50, ids[r % len(ids)]),
            )
        if i % sync_every == 0:
            conn.execute("SELECT facevec_knn_sync('face_meta')")
        q = np.array([r % 3, 1, -1], np.float32)
        assert knn(conn, q, k, metric) == scalar(conn, q, k, metric)
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)


# --------------------------------------------------------------------------
# Crashes


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    import numpy as np
    from pysqlite3 import dbapi2 as sqlite3
    ext, db, mode = sys.argv[1:4]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    rng = np.random.default_rng(1)
    def die():
        os.kill(os.getpid(), signal.SIGKILL)
    if mode == "ingest":  # killed inside an open transaction of face_meta writes
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO face_meta(embedding) VALUES (?)",
                         [(rng.standard_normal(8).astype(np.float32).tobytes(),)
                          for _ in range(500)])
        conn.execute("DELETE FROM face_meta WHERE id % 3 = 0")
        conn.execute("SELECT facevec_knn_sync('face_meta')")
        die()
    # killed in the middle of the C code writing the index
    conn.executemany("INSERT INTO face_meta(embedding) VALUES (?)",
                     [(rng.standard_normal(8).astype(np.float32).tobytes(),) for _ in range(3000)])
    conn.execute("DELETE FROM face_meta WHERE id % 5 = 0")
    steps = [0]
    def handler():
        steps[0] += 1
        if steps[0] == 40:
            die()
        return 0
    conn.set_progress_handler(handler, 1000)
    conn.execute("SELECT facevec_knn_%s('face_meta')" % ("build" if mode == "build" else "sync"))
    sys.exit("not killed")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["delete", "wal"])
@pytest.mark.parametrize("mode", ["ingest", "sync", "build"])
def test_crash_leaves_a_consistent_index(ext, tmp_path, journal, mode):
    rng = np.random.default_rng(17)
    db = tmp_path / "faces.db"
    conn = connect(ext, db)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    make_table(conn, rng.standard_normal((400, 8)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.close()
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), ext, str(db), mode], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    conn = connect(ext, db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    check_all(conn, rng, 8)  # correct before any sync
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    check_all(conn, rng, 8)


# --------------------------------------------------------------------------
# Errors


@pytest.fixture
def small(ext):
    conn = connect(ext)
    make_table(conn, np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    return conn


Q4 = np.ones(4, np.float32).tobytes()


@pytest.mark.parametrize(
    "sql, params, message",
    [
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 0)",
            (Q4,),
            "facevec_knn: k must be >= 1, found 0",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, -3)",
            (Q4,),
            "facevec_knn: k must be >= 1, found -3",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 2.5)",
            (Q4,),
            "facevec_knn: k (argument 3) must be an INTEGER, found REAL",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, NULL)",
            (Q4,),
            "facevec_knn: k (argument 3) is NULL",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', NULL, 3)",
            (),
            "facevec_knn: query (argument 2) is NULL",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?)",
            (Q4,),
            "facevec_knn: k (argument 3) is missing",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3, 'manhattan')",
            (Q4,),
            "facevec_knn: unknown metric 'manhattan'; expected euclidean, euclidean_squared, "
            "cosine or euclidean_l2",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3, 'cosine', -1)",
            (Q4,),
            "facevec_knn: threshold must be >= 0, found -1",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3, 'cosine', -0.5)",
            (Q4,),
            "facevec_knn: threshold must be >= 0, found -0.5",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3, 'cosine', -9e999)",
            (Q4,),
            "facevec_knn: threshold must be >= 0, found -Inf",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, -9223372036854775808)",
            (Q4,),
            "facevec_knn: k must be >= 1, found -9223372036854775808",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, '3')",
            (Q4,),
            "facevec_knn: k (argument 3) must be an INTEGER, found TEXT",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3, 'cosine', 'near')",
            (Q4,),
            "facevec_knn: threshold (argument 5) must be a number, found TEXT",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3)",
            (np.ones(5, np.float32).tobytes(),),
            "facevec_knn: query has 5 dimensions, the index of face_meta has 4",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', x'000000', 3)",
            (),
            "facevec_knn: query (argument 2): invalid float32 vector BLOB length, must be "
            "divisible by 4, found 3 bytes",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', x'', 3)",
            (),
            "facevec_knn: query (argument 2) is an empty BLOB, expected float32 values",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', '[]', 3)",
            (),
            "facevec_knn: query (argument 2) is an empty JSON array",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', '[1, 1e39, 0, 0]', 3)",
            (),
            "facevec_knn: query (argument 2): number out of float32 range at character 4",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', 42, 3)",
            (),
            "facevec_knn: query (argument 2) must be a float32 vector BLOB or a JSON array TEXT, "
            "found INTEGER",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', '[1, 2,', 3)",
            (),
            "facevec_knn: query (argument 2): malformed JSON array of numbers at character 6",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', '[1, 2, nan, 4]', 3)",
            (),
            "facevec_knn: query (argument 2): malformed JSON array",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', ?, 3)",
            (np.array([1, np.nan, 0, 0], np.float32).tobytes(),),
            "facevec_knn: query element 1 is NaN",
        ),
        (
            "SELECT * FROM facevec_knn('face_meta', '[0, 0, 0, 0]', 3, 'cosine')",
            (),
            "facevec_knn: cosine distance is undefined for a query vector whose norm is 0",
        ),
        ("SELECT * FROM facevec_knn('photos', ?, 3)", (Q4,), "facevec_knn: no such table: photos"),
        (
            "SELECT * FROM facevec_knn(7, ?, 3)",
            (Q4,),
            "facevec_knn: collection (argument 1) must be a table name, found INTEGER",
        ),
        ("SELECT facevec_knn_build('photos')", (), "facevec_knn_build: no such table: photos"),
        (
            "SELECT facevec_knn_build('face_meta', 'vector')",
            (),
            "facevec_knn_build: table face_meta has no column named vector",
        ),
        (
            "SELECT facevec_knn_build('face_meta', 'embedding', 100)",
            (),
            "facevec_knn_build: chunk_size must be a multiple of 64 between 64 and 65536, "
            "found 100",
        ),
        (
            "SELECT facevec_knn_build(NULL)",
            (),
            "facevec_knn_build: table (argument 1) must be TEXT, found NULL",
        ),
        (
            "SELECT facevec_knn_sync('face_meta', 0)",
            (),
            "facevec_knn_sync: max_rows must be positive, found 0",
        ),
        ("SELECT facevec_knn_sync('photos')", (), "facevec_knn_sync: no such table: photos"),
    ],
)
def test_errors(small, sql, params, message):
    with pytest.raises(sqlite3.OperationalError, match="^" + re.escape(message)):
        small.execute(sql, params).fetchall()


def test_error_no_index_and_no_pk(ext):
    conn = connect(ext)
    make_table(conn)
    with pytest.raises(
        sqlite3.OperationalError,
        match=re.escape(
            "facevec_knn: no facevec_knn index on table 'face_meta'; create it with "
            "SELECT facevec_knn_build('face_meta', 'embedding')"
        ),
    ):
        knn(conn, [1.0], 1)
    conn.execute("CREATE TABLE loose(name TEXT, embedding BLOB)")
    conn.execute("CREATE TABLE wr(id INTEGER PRIMARY KEY, embedding BLOB) WITHOUT ROWID")
    for table in ("loose", "wr"):
        with pytest.raises(
            sqlite3.OperationalError,
            match=re.escape(
                f"facevec_knn_build: table {table} needs an INTEGER PRIMARY KEY column "
                "(a stable rowid)"
            ),
        ):
            conn.execute("SELECT facevec_knn_build(?)", (table,))


def test_error_bad_rows(ext):
    conn = connect(ext)
    make_table(conn, np.ones((3, 4), np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    conn.execute(
        "INSERT INTO face_meta(id, embedding) VALUES (9, ?)", (np.ones(3, np.float32).tobytes(),)
    )
    msg = "face_meta row 9: embedding has 3 dimensions, the index has 4"
    with pytest.raises(sqlite3.OperationalError, match=re.escape("facevec_knn: " + msg)):
        knn(conn, [1, 1, 1, 1], 2)
    with pytest.raises(sqlite3.OperationalError, match=re.escape("facevec_knn_sync: " + msg)):
        conn.execute("SELECT facevec_knn_sync('face_meta')")
    assert status(conn)["pending"] == 1  # the failed sync changed nothing
    conn.execute("UPDATE face_meta SET embedding = 7 WHERE id = 9")
    with pytest.raises(
        sqlite3.OperationalError,
        match=re.escape(
            "facevec_knn_sync: face_meta row 9: embedding must be a float32 vector BLOB or a "
            "JSON array TEXT, found INTEGER"
        ),
    ):
        conn.execute("SELECT facevec_knn_sync('face_meta')")
    # Rows are read by the same parser as arguments, with the row named.
    for value, problem in [
        (
            "x'000000'",
            ": invalid float32 vector BLOB length, must be divisible by 4, found 3 bytes",
        ),
        ("x''", " is an empty BLOB, expected float32 values"),
        ("'[0, 0,'", ": malformed JSON array of numbers at character 6"),
        ("'[]'", " is an empty JSON array"),
    ]:
        conn.execute(f"UPDATE face_meta SET embedding = {value} WHERE id = 9")
        for sql, fn in [
            ("SELECT facevec_knn_sync('face_meta')", "facevec_knn_sync"),
            ("SELECT * FROM facevec_knn('face_meta', '[1, 1, 1, 1]', 3)", "facevec_knn"),
        ]:
            with pytest.raises(
                sqlite3.OperationalError,
                match="^" + re.escape(f"{fn}: face_meta row 9: embedding{problem}") + "$",
            ):
                conn.execute(sql).fetchall()
    conn.execute("UPDATE face_meta SET embedding = '[0, 0, 0, 0]' WHERE id = 9")  # JSON is fine
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    assert knn(conn, [0, 0, 0, 0], 1) == [(9, 0.0)]
    with pytest.raises(
        sqlite3.OperationalError,
        match=re.escape(
            "facevec_knn: distance undefined for face_meta row 9, whose embedding has norm 0"
        ),
    ):
        knn(conn, [1, 1, 1, 1], 2, "cosine")
    conn.execute("DELETE FROM face_meta WHERE id = 9")  # pending deletion: no longer an error
    assert len(knn(conn, [1, 1, 1, 1], 2, "cosine")) == 2


# --------------------------------------------------------------------------
# Python API


@pytest.mark.slow
def test_python_api(ext, tmp_path):
    from facevec import knn as api

    rng = np.random.default_rng(19)
    x = rng.standard_normal((2500, 8)).astype(np.float32)
    conn = connect(ext, tmp_path / "faces.db")
    make_table(conn, x)
    seen = []
    assert api.build(conn, batch_size=1000, progress=lambda d, t: seen.append((d, t))) == 2500
    assert seen[-1] == (2500, 2500) and len(seen) == 3
    q = rng.standard_normal(8)
    assert api.search(conn, q, 5, metric="cosine") == knn(conn, q, 5, "cosine")
    assert api.search(conn, q.tolist(), 5, threshold=0.0) == []
    conn.execute("DELETE FROM face_meta WHERE id < 100")
    assert api.status(conn)["pending"] == 99
    assert api.sync(conn) == 99
    assert api.status(conn)["vectors"] == 2401
    with pytest.raises(
        api.VectorError, match=re.escape("query must be a non-empty 1-d vector, found shape (2, 4)")
    ):
        api.search(conn, np.ones((2, 4)), 3)
    assert api.drop(conn) is True


def test_python_api_on_the_fallback_connection(tmp_path):
    import facevec
    from facevec import knn as api

    conn = facevec.connect(tmp_path / "faces.db", native=False)
    assert not api.available(conn)
    with pytest.raises(api.KnnUnavailableError, match="needs the native SQLite extension"):
        api.search(conn, [1.0, 2.0], 3)


def test_error_chunk_too_big(ext):
    conn = connect(ext)
    make_table(conn, np.ones((1, 8192), np.float32))
    with pytest.raises(
        sqlite3.OperationalError,
        match=re.escape(
            "facevec_knn_build: a chunk of 65536 vectors of 8192 dimensions would take "
            "2147483648 bytes, more than 268435456; rebuild with a smaller chunk_size"
        ),
    ):
        conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 65536)")
    assert conn.execute("SELECT facevec_knn_status('face_meta')").fetchone() == (None,)
    assert conn.execute("SELECT facevec_knn_build('face_meta')").fetchone() == (1,)
