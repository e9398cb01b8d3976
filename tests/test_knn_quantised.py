"""facevec_knn's compressed storage (csrc/knn_store.c knn_encode, knn_search.c
rerank): chunks of float16 or int8 codes (per-dimension min/scale trained at
build) take 1/2 or 1/4 of the float32 space; a query ranks the codes, then
re-ranks its candidates by their exact float32 vectors from the table, so the
distances returned equal the scalar SQL functions' bit for bit. With rerank >=
the rows, the answer is the exact one; at the default rerank, recall@10 is
>= 0.95 on clustered data. Changes after the build are found; a damaged
quantisation table is an error asking for a rebuild.

The extension under test is $FACEVEC_LOADABLE if set, else the installed one.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest
from knn_helpers import connect, extension_under_test, make_table, scalar, status  # noqa: E402
from test_knn_ivf import METRICS, faces_like, knn  # noqa: E402

STORAGES = ("float16", "int8")


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


def build(conn, **options) -> int:
    return conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (json.dumps(options),)
    ).fetchone()[0]


def vector_bytes(conn) -> int:
    return conn.execute("SELECT sum(length(vectors)) FROM face_meta_fvknn_chunks").fetchone()[0]


def exact_distance(conn, q, rid, metric) -> float:
    fn = {
        "euclidean": "euclidean_distance",
        "euclidean_squared": "euclidean_distance_squared",
        "cosine": "cosine_distance",
        "euclidean_l2": "euclidean_l2_distance",
    }[metric]
    return conn.execute(
        f"SELECT {fn}(embedding, ?) FROM face_meta WHERE id = ?", (q.tobytes(), rid)
    ).fetchone()[0]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("lists", [0, 8])
def test_distances_are_the_scalar_functions(ext, storage, lists):
    rng = np.random.default_rng(3)
    x = faces_like(rng, 700, 24)
    conn = connect(ext)
    make_table(conn, x)
    assert build(conn, lists=lists, storage=storage) == 700
    info = status(conn)
    assert info["storage"] == storage and info["rerank"] == 0
    for metric in METRICS:
        q = (x[rng.integers(700)] + 0.3 * rng.standard_normal(24)).astype(np.float32)
        got = knn(conn, q, 10, metric, nprobe=1 << 40)
        assert len(got) == 10
        for rid, d in got:  # every distance is the scalar function's, to the bit
            assert d == exact_distance(conn, q, rid, metric)
    # Re-ranking every row: the exact answer, thresholds included.
    build(conn, lists=lists, storage=storage, rerank=700)
    assert status(conn)["rerank"] == 700
    for metric in METRICS:
        q = rng.standard_normal(24).astype(np.float32)
        for k in (1, 10, 701):
            assert knn(conn, q, k, metric, nprobe=1 << 40) == scalar(conn, q, k, metric)
        for thr in (0.0, 0.5, 2.0):
            assert knn(conn, q, 20, metric, thr, nprobe=1 << 40) == scalar(conn, q, 20, metric, thr)


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("lists", [0, 60])
def test_recall_at_the_default_rerank(ext, storage, lists):
    rng = np.random.default_rng(5)
    x = faces_like(rng, 8000)
    conn = connect(ext)
    make_table(conn, x)
    build(conn, lists=lists, storage=storage)
    picks = rng.choice(len(x), 60, replace=False)
    queries = x[picks] + 0.3 * rng.standard_normal((60, 128)).astype(np.float32)
    hits = 0
    for q in queries:
        exact = {r for r, _ in scalar(conn, q, 10)}
        hits += len(exact & {r for r, _ in knn(conn, q, 10, nprobe=1 << 40)})
    assert hits / 600 >= 0.95


def test_compressed_chunks_are_smaller(ext):
    rng = np.random.default_rng(6)
    x = faces_like(rng, 3000, 64)
    sizes = {}
    for storage in ("float32", "float16", "int8"):
        conn = connect(ext)
        make_table(conn, x)
        build(conn, storage=storage)
        sizes[storage] = vector_bytes(conn)
    assert sizes["float16"] * 2 == sizes["float32"]
    assert sizes["int8"] * 4 == sizes["float32"]


@pytest.mark.parametrize("storage", STORAGES)
@pytest.mark.parametrize("lists", [0, 6])
def test_changes_after_the_build_are_found(ext, storage, lists):
    rng = np.random.default_rng(7)
    x = faces_like(rng, 500, 16)
    conn = connect(ext)
    make_table(conn, x)
    build(conn, lists=lists, storage=storage, rerank=10_000)
    new = (5 * rng.standard_normal((3, 16))).astype(np.float32)  # beyond the trained range
    conn.execute("INSERT INTO face_meta(id, embedding) VALUES (1001, ?)", (new[0].tobytes(),))
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 10", (new[1].tobytes(),))
    conn.execute("DELETE FROM face_meta WHERE id = 20")
    for synced in (False, True):  # pending (read from the table), then in the chunks
        if synced:
            assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()[0] > 0
            assert status(conn)["pending"] == 0
        assert knn(conn, new[0], 1, nprobe=1 << 40) == [(1001, 0.0)]
        assert knn(conn, new[1], 1, nprobe=1 << 40) == [(10, 0.0)]
        assert 20 not in {r for r, _ in knn(conn, x[19], 5, nprobe=1 << 40)}
        for metric in METRICS:
            q = rng.standard_normal(16).astype(np.float32)
            assert knn(conn, q, 10, metric, nprobe=1 << 40) == scalar(conn, q, 10, metric)


@pytest.mark.parametrize("storage", STORAGES)
def test_a_batch_equals_single_queries(ext, storage):
    rng = np.random.default_rng(8)
    x = faces_like(rng, 2000, 24)
    conn = connect(ext)
    make_table(conn, x)
    build(conn, lists=12, storage=storage)
    conn.execute("DELETE FROM face_meta WHERE id % 7 = 0")
    queries = x[:30] + 0.3 * rng.standard_normal((30, 24)).astype(np.float32)
    text = json.dumps(queries.astype(np.float64).tolist())
    for nprobe in (None, 12):
        rows = conn.execute(
            "SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', ?, 10, "
            "'euclidean', NULL, ?) ORDER BY query_no, distance",
            (text, nprobe),
        ).fetchall()
        for i, q in enumerate(queries):
            assert [(r, d) for qn, r, d in rows if qn == i] == knn(conn, q, 10, nprobe=nprobe)


def test_options_are_checked(ext):
    conn = connect(ext)
    make_table(conn)
    with pytest.raises(sqlite3.OperationalError, match="storage must be"):
        build(conn, storage="int4")
    with pytest.raises(sqlite3.OperationalError, match="rerank must be an integer"):
        build(conn, storage="int8", rerank=-1)
    with pytest.raises(sqlite3.OperationalError, match="has none yet"):
        build(conn, storage="int8")  # nothing to train on
    assert build(conn, storage="float16") == 0
    conn.execute(
        "INSERT INTO face_meta(id, embedding) VALUES (1, ?)", (np.ones(4, np.float32).tobytes(),)
    )
    assert knn(conn, np.ones(4, np.float32), 1) == [(1, 0.0)]


@pytest.mark.parametrize(
    "sql, message",
    [
        ("UPDATE face_meta_fvknn_quant SET params = zeroblob(8)", "quantisation parameters"),
        ("UPDATE face_meta_fvknn_quant SET params = NULL", "quantisation parameters"),
        ("UPDATE face_meta_fvknn_quant SET storage = 'int4'", "its storage is int4"),
        ("UPDATE face_meta_fvknn_quant SET rerank = 'many'", "rerank"),
        ("UPDATE face_meta_fvknn_quant SET rerank = -3", "rerank"),
        (
            "INSERT INTO face_meta_fvknn_quant SELECT 2, storage, rerank, params "
            "FROM face_meta_fvknn_quant",
            "holds 2 rows",
        ),
        ("DELETE FROM face_meta_fvknn_quant", "holds 0 rows"),
        # float32-sized chunks under an int8 description
        ("UPDATE face_meta_fvknn_chunks SET vectors = zeroblob(length(vectors) * 4)", "bytes of"),
        (
            "UPDATE face_meta_fvknn_quant SET params = (SELECT zeroblob(8 * 8))",
            "not a finite minimum and positive scale",
        ),
        (
            "DROP TABLE face_meta_fvknn_quant; CREATE VIEW face_meta_fvknn_quant AS SELECT 1",
            "is a view",
        ),
    ],
)
def test_a_damaged_quantisation_table_is_an_error(ext, sql, message):
    rng = np.random.default_rng(9)
    conn = connect(ext)
    make_table(conn, faces_like(rng, 300, 8))
    build(conn, storage="int8")
    conn.executescript(sql)
    q = np.zeros(8, np.float32).tobytes()
    with pytest.raises(sqlite3.OperationalError, match="rebuild it with") as err:
        conn.execute("SELECT * FROM facevec_knn('face_meta', ?, 5)", (q,)).fetchall()
    assert message in str(err.value), str(err.value)
    conn.execute("SELECT facevec_knn_build('face_meta')")  # a rebuild mends it
    assert len(conn.execute("SELECT * FROM facevec_knn('face_meta', ?, 5)", (q,)).fetchall()) == 5


@pytest.mark.slow
def test_python_api_and_reindex(ext, tmp_path):
    from facevec import knn as api

    rng = np.random.default_rng(19)
    x = faces_like(rng, 1500, 16)
    path = tmp_path / "faces.db"
    conn = connect(ext, path)
    make_table(conn, x)
    assert api.build(conn, storage="int8") == 1500
    assert api.status(conn)["storage"] == "int8"
    got = api.search(conn, x[3] + 0.01, 5)
    assert got == scalar(conn, x[3] + 0.01, 5)
    assert api.build(conn, lists=10, storage="float16", rerank=100) == 1500
    assert (api.status(conn)["storage"], api.status(conn)["rerank"]) == ("float16", 100)
    with pytest.raises(api.InvalidParameterError, match="storage must be one of"):
        api.build(conn, storage="int4")
    conn.close()
    assert api.reindex(path, progress=False) == 1500  # keeps the storage
    conn = connect(ext, path)
    assert api.status(conn)["storage"] == "float16"
    conn.close()
    assert api.reindex(path, progress=False, lists=0, storage="float32") == 1500
    conn = connect(ext, path)
    assert (api.status(conn)["storage"], api.status(conn)["lists"]) == ("float32", 0)
