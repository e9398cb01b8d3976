"""facevec_knn's IVF option (csrc/knn_store.c knn_build_ivf, knn_search.c
choose_lists): with nprobe = lists it answers exactly as the exact index (same
rows, same bits as the scalar functions); at the default nprobe, recall@10
against the exact answer is >= 0.95 on clustered synthetic data and on real
face embeddings; changes through the triggers and the log are never missed;
reopen and kill -9 leave a consistent index; batches equal single queries;
a damaged IVF table is an error, never a wrong read.

The extension under test is $FACEVEC_LOADABLE if set, else the installed one.
"""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from knn_helpers import (  # noqa: E402
    check_reference,
    connect,
    current,
    extension_under_test,
    make_table,
    random_changes,
    scalar,
    status,
)

METRICS = ("euclidean", "euclidean_squared", "cosine", "euclidean_l2")


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


def faces_like(rng, n: int, dim: int = 128, per_identity: int = 5) -> np.ndarray:
    """Clustered like face embeddings: identities on a low-dimensional
    manifold, several faces (noisy copies) of each."""
    n_id = max(1, n // per_identity)
    basis = rng.standard_normal((24, dim))
    identities = rng.standard_normal((n_id, 24)) @ basis / np.sqrt(24)
    identities += 0.35 * rng.standard_normal((n_id, dim))
    x = identities[rng.integers(0, n_id, n)] + 0.3 * rng.standard_normal((n, dim))
    return x.astype(np.float32)


def knn(conn, q, k, metric="euclidean", threshold=None, nprobe=None):
    return conn.execute(
        "SELECT rowid, distance FROM facevec_knn('face_meta', ?, ?, ?, ?, ?)",
        (np.asarray(q, np.float32).tobytes(), k, metric, threshold, nprobe),
    ).fetchall()


def build_ivf(conn, **options) -> int:
    return conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (json.dumps(options),)
    ).fetchone()[0]


def recall(conn, queries, nprobe=None, k=10) -> float:
    hits = 0
    for q in queries:
        exact = {r for r, _ in knn(conn, q, k, nprobe=1 << 40)}
        hits += len(exact & {r for r, _ in knn(conn, q, k, nprobe=nprobe)})
    return hits / (k * len(queries))


def check_exact(conn, rng, dim, lists, metrics=METRICS):
    x, ids = current(conn)
    for metric in metrics:
        q = rng.standard_normal(dim).astype(np.float32)
        for k in (1, 10, len(ids) + 1):
            got = knn(conn, q, k, metric, nprobe=lists)
            assert got == scalar(conn, q, k, metric)  # same rows, same bits
            check_reference(got, x, ids, q, k, metric)


def check_consistent(conn):
    info = status(conn)
    n_rows = conn.execute("SELECT count(*) FROM face_meta WHERE embedding IS NOT NULL").fetchone()[
        0
    ]
    assert info["pending"] == 0 and info["vectors"] == n_rows
    assert sum(1 for _ in conn.execute("SELECT 1 FROM face_meta_fvknn_rowids")) == n_rows
    chunks = {r[0] for r in conn.execute("SELECT id FROM face_meta_fvknn_chunks")}
    listed = {r[0] for r in conn.execute("SELECT id FROM face_meta_fvknn_chunklists")}
    assert chunks == listed


# --------------------------------------------------------------------------
# Answers


def test_given_centroids_are_used_instead_of_training(ext):
    """facevec_knn_build's fifth argument: the lists' centroids (the gallery's SQL
    lists, so that one k-means serves both), checked, never trained again."""
    rng = np.random.default_rng(11)
    conn = connect(ext)
    x = faces_like(rng, 500, 8)
    make_table(conn, x)
    centroids = (x[:10] + 0.01).astype(np.float32)
    sql = "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?, ?)"
    options = json.dumps({"lists": 10})
    assert conn.execute(sql, (options, centroids.tobytes())).fetchone()[0] == 500
    (blob,) = conn.execute("SELECT centroids FROM face_meta_fvknn_ivf").fetchone()
    np.testing.assert_array_equal(np.frombuffer(blob, np.float32).reshape(10, 8), centroids)
    check_exact(conn, rng, 8, 10, metrics=("euclidean",))
    with pytest.raises(sqlite3.OperationalError, match=r"centroids \(argument 5\) hold 288"):
        conn.execute(sql, (options, centroids[:9].tobytes())).fetchone()
    with pytest.raises(sqlite3.OperationalError, match=r"centroids \(argument 5\) must be"):
        conn.execute(sql, (options, "not a blob")).fetchone()
    bad = centroids.copy()
    bad[3, 2] = np.nan
    with pytest.raises(sqlite3.OperationalError, match="centroid 3 .* not a finite"):
        conn.execute(sql, (options, bad.tobytes())).fetchone()
    assert status(conn)["vectors"] == 500  # the failed builds changed nothing


@pytest.mark.slow
@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
def test_each_lists_last_chunk_is_cut_to_its_rows(ext, tmp_path, storage):
    """No half-empty chunk per list: a list's chunks hold its rows and fewer than
    64 slots more, so the IVF file is about the exact one's size; changes after
    the cut (appends, deletes, updates) still answer as the exact index."""
    rng = np.random.default_rng(3)
    dim, lists = 16, 8
    conn = connect(ext, tmp_path / "ivf.db")
    x = faces_like(rng, 4000, dim)
    make_table(conn, x)
    build_ivf(conn, lists=lists, storage=storage)
    info = status(conn)
    assert info["vectors"] == 4000
    assert info["slots"] < 4000 + 64 * lists, info
    shorts = conn.execute(
        "SELECT count(*) FROM face_meta_fvknn_chunks WHERE length(valid) * 8 < ?",
        (info["chunk_size"],),
    ).fetchone()[0]
    assert shorts >= lists // 2  # most lists end in a chunk cut short
    ivf_size = (tmp_path / "ivf.db").stat().st_size
    exact = connect(ext, tmp_path / "exact.db")
    make_table(exact, x)
    exact.execute(  # chunks of 64 slots: no room left empty there either
        "SELECT facevec_knn_build('face_meta', 'embedding', 64, ?)",
        (json.dumps({"storage": storage}),),
    )
    exact.close()
    assert ivf_size <= 1.1 * (tmp_path / "exact.db").stat().st_size
    check_exact(conn, rng, dim, lists, metrics=("euclidean",))
    mutate(conn, rng, faces_like(rng, 100, dim), 100, 5000)
    check_exact(conn, rng, dim, lists, metrics=("euclidean", "cosine"))
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    check_exact(conn, rng, dim, lists, metrics=("euclidean", "cosine"))


@pytest.mark.parametrize("n, dim, lists", [(1, 3, 1), (70, 5, 8), (3000, 16, 40), (2000, 128, 45)])
def test_nprobe_lists_equals_the_exact_index(ext, n, dim, lists):
    rng = np.random.default_rng(n)
    conn = connect(ext)
    make_table(conn, faces_like(rng, n, dim))
    assert build_ivf(conn, lists=lists) == n
    info = status(conn)
    assert info["lists"] == min(lists, n) and 1 <= info["nprobe"] <= info["lists"]
    check_exact(conn, rng, dim, info["lists"])
    # Thresholds too, and a larger nprobe than lists means all of them.
    q = rng.standard_normal(dim).astype(np.float32)
    for metric in METRICS:
        for thr in (0.0, 0.5, 2.0):
            assert knn(conn, q, 20, metric, thr, nprobe=10**9) == scalar(conn, q, 20, metric, thr)


@pytest.mark.slow
def test_recall_on_clustered_data_at_the_default_nprobe(ext):
    rng = np.random.default_rng(5)
    x = faces_like(rng, 30000)
    conn = connect(ext)
    make_table(conn, x)
    build_ivf(conn, lists=173)
    info = status(conn)
    assert info["nprobe"] < info["lists"] // 4  # it reads a small part of the index
    # New faces of known people: stored faces moved by the within-identity noise.
    picks = rng.choice(len(x), 100, replace=False)
    queries = x[picks] + 0.3 * rng.standard_normal((100, 128)).astype(np.float32)
    assert recall(conn, queries) >= 0.95
    assert recall(conn, queries, nprobe=info["lists"]) == 1.0


def test_recall_on_real_face_embeddings(ext, all_photos_db, tmp_path):
    source = sqlite3.connect(str(all_photos_db))
    vectors = [
        np.frombuffer(e, np.float32)
        for (e,) in source.execute("SELECT embedding FROM face_meta ORDER BY id")
    ]
    source.close()
    x = np.stack(vectors)
    conn = connect(ext)
    make_table(conn, x)
    lists = max(2, round(np.sqrt(len(x))))
    build_ivf(conn, lists=lists)
    info = status(conn)
    assert info["lists"] == lists
    queries = x + 0.01 * np.random.default_rng(2).standard_normal(x.shape).astype(np.float32)
    assert recall(conn, queries) >= 0.95
    assert recall(conn, queries, nprobe=lists) == 1.0
    for metric in METRICS:
        q = queries[0]
        assert knn(conn, q, 10, metric, nprobe=lists) == scalar(conn, q, 10, metric)


# --------------------------------------------------------------------------
# Changes, reopen, crashes


def mutate(conn, rng, x_like, n_ops, next_id):
    """Random changes (knn_helpers.random_changes) with vectors near the gallery's."""

    def near(r):
        return x_like[r.integers(len(x_like))] + 0.3 * r.standard_normal(x_like.shape[1])

    return random_changes(conn, rng, n_ops, next_id, near)


@pytest.mark.slow
def test_changes_are_never_missed(ext, tmp_path):
    rng = np.random.default_rng(8)
    x = faces_like(rng, 3000, 32)
    conn = connect(ext, tmp_path / "faces.db")
    conn.execute("PRAGMA synchronous = OFF")
    make_table(conn, x)
    build_ivf(conn, lists=30)
    next_id = 10_000
    for _round in range(3):
        next_id = mutate(conn, rng, x, 400, next_id)
        check_exact(conn, rng, 32, 30, ("euclidean", "cosine"))
        # A logged row is found by a query equal to it, whatever nprobe.
        (rid, emb) = conn.execute(
            "SELECT id, embedding FROM face_meta WHERE embedding IS NOT NULL ORDER BY id DESC"
        ).fetchone()
        assert knn(conn, np.frombuffer(emb, np.float32), 1, nprobe=1)[0] == (rid, 0.0)
        conn.execute("SELECT facevec_knn_sync('face_meta')")
        check_consistent(conn)
        check_exact(conn, rng, 32, 30, ("euclidean", "cosine"))
        # Synced rows sit in their nearest list: found at nprobe = 1 too.
        assert knn(conn, np.frombuffer(emb, np.float32), 1, nprobe=1)[0] == (rid, 0.0)
    info = status(conn)
    assert info["unlisted"] > 0 and info["lists"] == 30
    conn.close()
    conn = connect(ext, tmp_path / "faces.db")  # reopen
    check_consistent(conn)
    check_exact(conn, rng, 32, 30, ("euclidean",))


def test_status_says_when_to_retrain(ext):
    rng = np.random.default_rng(3)
    x = faces_like(rng, 1000, 16)
    conn = connect(ext)
    make_table(conn, x)
    build_ivf(conn, lists=10, nprobe=2)
    info = status(conn)
    assert info["nprobe"] == 2 and info["trained"] == 1000 and not info["retrain"]
    assert info["list_min"] <= info["list_mean"] <= info["list_max"]
    assert info["imbalance"] >= 1.0
    conn.executemany(
        "INSERT INTO face_meta(embedding) VALUES (?)", [(v.tobytes(),) for v in x[:600]]
    )
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    info = status(conn)
    assert info["unlisted"] == 600 and info["retrain"]
    assert "added since training" in info["retrain_reason"]
    # Rebuilding retrains: every vector in a list of its own again.
    build_ivf(conn, lists=12)
    info = status(conn)
    assert info["unlisted"] == 0 and info["trained"] == 1600 and not info["retrain"]


def test_exact_status_has_no_lists(ext):
    conn = connect(ext)
    make_table(conn, np.ones((3, 4), np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    assert status(conn)["lists"] == 0
    assert build_ivf(conn, lists=0) == 3 and status(conn)["lists"] == 0


CRASH_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, json
    import numpy as np
    from pysqlite3 import dbapi2 as sqlite3
    ext, db, mode = sys.argv[1:4]
    conn = sqlite3.connect(db, isolation_level=None)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    rng = np.random.default_rng(1)
    conn.executemany("INSERT INTO face_meta(embedding) VALUES (?)",
                     [(rng.standard_normal(8).astype(np.float32).tobytes(),) for _ in range(3000)])
    conn.execute("DELETE FROM face_meta WHERE id % 5 = 0")
    steps = [0]
    def handler():
        steps[0] += 1
        if steps[0] == 40:
            os.kill(os.getpid(), signal.SIGKILL)
        return 0
    conn.set_progress_handler(handler, 1000)
    if mode == "build":
        conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)",
                     (json.dumps({"lists": 20}),))
    else:
        conn.execute("SELECT facevec_knn_sync('face_meta')")
    sys.exit("not killed")
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["delete", "wal"])
@pytest.mark.parametrize("mode", ["sync", "build"])
def test_kill_9_leaves_a_consistent_index(ext, tmp_path, journal, mode):
    rng = np.random.default_rng(17)
    db = tmp_path / "faces.db"
    conn = connect(ext, db)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    make_table(conn, rng.standard_normal((400, 8)).astype(np.float32))
    build_ivf(conn, lists=8)
    conn.close()
    script = tmp_path / "crash.py"
    script.write_text(CRASH_SCRIPT)
    proc = subprocess.run([sys.executable, str(script), ext, str(db), mode], capture_output=True)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()
    conn = connect(ext, db)
    assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert status(conn)["lists"] == 8  # the old index, whole
    check_exact(conn, rng, 8, 8, ("euclidean",))
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    check_consistent(conn)
    check_exact(conn, rng, 8, 8, ("euclidean", "cosine"))


# --------------------------------------------------------------------------
# Batches


@pytest.mark.parametrize("lists", [0, 12])
def test_a_batch_equals_single_queries(ext, lists):
    rng = np.random.default_rng(4)
    x = faces_like(rng, 2000, 24)
    conn = connect(ext)
    make_table(conn, x)
    build_ivf(conn, lists=lists)
    conn.execute("DELETE FROM face_meta WHERE id % 7 = 0")  # pending rows too
    queries = x[:40] + 0.3 * rng.standard_normal((40, 24)).astype(np.float32)
    text = json.dumps(queries.astype(np.float64).tolist())
    for metric in ("euclidean", "cosine"):
        for nprobe in (None, 1, 3):
            rows = conn.execute(
                "SELECT query_no, rowid, distance, rank FROM facevec_knn_batch('face_meta', ?, "
                "10, ?, NULL, ?) ORDER BY query_no, distance",
                (text, metric, nprobe),
            ).fetchall()
            for i, q in enumerate(queries):
                got = [(r, d) for qn, r, d, _ in rows if qn == i]
                assert got == knn(conn, q, 10, metric, nprobe=nprobe)
            assert [rank for qn, _, _, rank in rows if qn == 0] == list(range(1, 11))


def test_batch_errors(ext):
    conn = connect(ext)
    make_table(conn, np.ones((3, 2), np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    for text, message in [
        ("[[1,2],[1,2,3]]", "query 1 of the batch has 3 dimensions, query 0 has 2"),
        ("[[1,2],3]", "is not a JSON array of vectors"),
        ("[[1,2]", "is not a JSON array of vectors"),
        ("[[1,2]] x", "is not a JSON array of vectors"),
    ]:
        with pytest.raises(sqlite3.OperationalError, match=re.escape(message)):
            conn.execute("SELECT * FROM facevec_knn_batch('face_meta', ?, 3)", (text,)).fetchall()
    # A single vector is a batch of one; facevec_knn itself takes no batch.
    assert (
        len(conn.execute("SELECT * FROM facevec_knn_batch('face_meta', '[1,2]', 3)").fetchall())
        == 3
    )
    with pytest.raises(sqlite3.OperationalError):
        conn.execute("SELECT * FROM facevec_knn('face_meta', '[[1,2]]', 3)").fetchall()


# --------------------------------------------------------------------------
# Errors and hostile files


def test_option_errors(ext):
    conn = connect(ext)
    make_table(conn, np.ones((3, 2), np.float32))
    for options, message in [
        ('{"lists": -1}', "option lists must be an integer between 0 and 65536"),
        ('{"lists": 1.5}', "option lists must be an integer"),
        ('{"list": 4}', "unknown option 'list'"),
        ("[4]", "options (argument 4) must be a JSON object"),
        ("nope", "options (argument 4) must be a JSON object"),
    ]:
        with pytest.raises(sqlite3.OperationalError, match=re.escape(message)):
            conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options,))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    with pytest.raises(sqlite3.OperationalError, match="nprobe must be >= 1, found 0"):
        conn.execute("SELECT * FROM facevec_knn('face_meta', '[1,2]', 3, NULL, NULL, 0)")
    with pytest.raises(sqlite3.OperationalError, match="nprobe .argument 6. must be an INTEGER"):
        conn.execute("SELECT * FROM facevec_knn('face_meta', '[1,2]', 3, NULL, NULL, 'x')")


def test_nan_rows_are_left_out_and_named(ext):
    conn = connect(ext)
    x = np.ones((50, 4), np.float32)
    x[7, 2] = np.nan
    make_table(conn, x + np.arange(50, dtype=np.float32)[:, None])
    assert build_ivf(conn, lists=4) == 49  # an IVF index cannot place row 8
    info = status(conn)
    assert info["skipped"] == 1
    assert info["skipped_rows"][0]["rowid"] == 8
    assert "NaN or infinity" in info["skipped_rows"][0]["reason"]


TAMPER = [
    ("UPDATE face_meta_fvknn_ivf SET lists = 0", "IVF lists"),
    ("UPDATE face_meta_fvknn_ivf SET lists = 100000000", "IVF lists"),
    ("UPDATE face_meta_fvknn_ivf SET nprobe = 0", "nprobe 0"),
    ("UPDATE face_meta_fvknn_ivf SET nprobe = 99", "nprobe 99"),
    ("UPDATE face_meta_fvknn_ivf SET lists = 'x'", "IVF lists is TEXT"),
    ("UPDATE face_meta_fvknn_ivf SET centroids = x'00'", "centroids hold 1 bytes"),
    ("INSERT INTO face_meta_fvknn_ivf VALUES (2, 4, 1, 1, zeroblob(128))", "holds 2 rows"),
    ("DELETE FROM face_meta_fvknn_ivf", "holds 0 rows"),
    ("UPDATE face_meta_fvknn_chunklists SET list = 4 WHERE id = 1", "IVF list of chunk 1"),
    ("UPDATE face_meta_fvknn_chunklists SET list = -2 WHERE id = 1", "IVF list of chunk 1"),
    (  # chunk ids are sparse (list-major): the second chunk, whichever it is
        "DELETE FROM face_meta_fvknn_chunklists WHERE id = "
        "(SELECT id FROM face_meta_fvknn_chunklists ORDER BY id LIMIT 1 OFFSET 1)",
        "IVF list of chunk",
    ),
    ("UPDATE face_meta_fvknn_chunklists SET slots = x'00' WHERE list = -1", "malformed"),
    ("UPDATE face_meta_fvknn_chunklists SET list = -1 WHERE id = 1", "malformed"),
    (
        "UPDATE face_meta_fvknn_chunklists SET slots = CAST(x'ffffff7f' || "
        "zeroblob(length(slots) - 4) AS BLOB) WHERE list = -1",
        "names list",
    ),
    ("DROP TABLE face_meta_fvknn_chunklists", "chunklists"),
    (
        "CREATE TABLE face_meta_fvknn_x(a); DROP TABLE face_meta_fvknn_ivf; "
        "CREATE VIEW face_meta_fvknn_ivf AS SELECT 1",
        "is a view",
    ),
]


@pytest.mark.parametrize("sql, message", TAMPER)
def test_a_damaged_ivf_index_is_an_error(ext, sql, message):
    rng = np.random.default_rng(9)
    conn = connect(ext)
    make_table(conn, faces_like(rng, 600, 8))
    build_ivf(conn, lists=4, nprobe=1)
    # A mixed chunk: rows added since training.
    conn.executemany(
        "INSERT INTO face_meta(embedding) VALUES (?)",
        [(v.tobytes(),) for v in faces_like(rng, 64, 8)],
    )
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    conn.executescript(sql)
    q = np.zeros(8, np.float32).tobytes()
    with pytest.raises(sqlite3.OperationalError, match="rebuild it with") as err:
        conn.execute("SELECT * FROM facevec_knn('face_meta', ?, 5)", (q,)).fetchall()
        conn.execute("SELECT facevec_knn_status('face_meta')").fetchall()
    assert message in str(err.value) or message == "chunklists", str(err.value)
    # A rebuild mends it.
    conn.execute("SELECT facevec_knn_build('face_meta')")
    assert len(conn.execute("SELECT * FROM facevec_knn('face_meta', ?, 5)", (q,)).fetchall()) == 5


# --------------------------------------------------------------------------
# Python API and the pipeline


def test_python_api(ext, tmp_path):
    from facevec import knn as api

    rng = np.random.default_rng(19)
    x = faces_like(rng, 2500, 16)
    conn = connect(ext, tmp_path / "faces.db")
    conn.execute("PRAGMA synchronous = OFF")
    make_table(conn, x)
    assert api.default_lists(2500) == 0 and api.default_lists(1_000_000) == 1000
    assert api.build(conn, lists=25, nprobe=3) == 2500
    info = api.status(conn)
    assert (info["lists"], info["nprobe"]) == (25, 3)
    q = x[5]
    assert api.search(conn, q, 5, nprobe=25) == scalar(conn, q, 5)
    assert api.search(conn, q, 5, nprobe=1)[0] == (6, 0.0)
    batch = api.search_batch(conn, x[:30], 5, nprobe=2)
    assert batch == [api.search(conn, v, 5, nprobe=2) for v in x[:30]]
    with pytest.raises(api.InvalidParameterError, match="nprobe must be a whole number >= 1"):
        api.search(conn, q, 5, nprobe=0)
    with pytest.raises(api.VectorError, match="queries must be a non-empty n x dim array"):
        api.search_batch(conn, q, 5)
    assert api.build(conn, lists=0) == 2500 and api.status(conn)["lists"] == 0


def test_python_api_on_the_fallback_connection(tmp_path):
    import facevec
    from facevec import knn as api

    conn = facevec.connect(tmp_path / "faces.db", native=False)
    with pytest.raises(api.KnnUnavailableError, match="needs the native SQLite extension"):
        api.search_batch(conn, [[1.0, 2.0]], 3)
    with pytest.raises(api.KnnUnavailableError, match="needs the native SQLite extension"):
        api.build(conn, lists=4)


@pytest.mark.parametrize("k", [1, 10, pytest.param(2000, marks=pytest.mark.slow)])
def test_a_batch_with_ties_thresholds_and_large_k(ext, k):
    # Many equal rows: the batch kernel's cut falls inside runs of ties, where
    # each query must fall back to scoring the chunk itself.
    rng = np.random.default_rng(k)
    base = rng.standard_normal((50, 8)).astype(np.float32)
    x = base[rng.integers(0, 50, 3000)]
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 256)")
    conn.execute("DELETE FROM face_meta WHERE id % 11 = 0")
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 5", (base[3].tobytes(),))
    queries = np.concatenate([base[:10], base[:10] + 0.01]).astype(np.float32)
    text = json.dumps(queries.astype(np.float64).tolist())
    for metric, thr in (("euclidean", None), ("cosine", None), ("euclidean", 0.5)):
        rows = conn.execute(
            "SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', ?, ?, ?, ?) "
            "ORDER BY query_no, distance",
            (text, k, metric, thr),
        ).fetchall()
        for i, q in enumerate(queries):
            got = [(r, d) for qn, r, d in rows if qn == i]
            assert got == scalar(conn, q, k, metric, thr)


def test_a_large_batch_over_a_chunk_with_many_pending_rows(ext):
    # More queries than one kernel call takes (256), and a chunk with more
    # pending rows than the kernel path allows: both fall back correctly.
    rng = np.random.default_rng(12)
    x = faces_like(rng, 3000, 16)
    conn = connect(ext)
    make_table(conn, x)
    conn.execute("SELECT facevec_knn_build('face_meta')")
    queries = x[:300] + 0.3 * rng.standard_normal((300, 16)).astype(np.float32)
    text = json.dumps(queries.astype(np.float64).tolist())
    for deleted in (0, 400):
        conn.execute("DELETE FROM face_meta WHERE id <= ?", (deleted,))
        rows = conn.execute(
            "SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', ?, 5) "
            "ORDER BY query_no, distance",
            (text,),
        ).fetchall()
        by_query = [[] for _ in queries]
        for qn, r, d in rows:
            by_query[qn].append((r, d))
        assert by_query == [knn(conn, q, 5) for q in queries]
