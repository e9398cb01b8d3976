"""The search plan (facevec.plan): the strategy a search without --strategy runs.

The planner at its boundaries (pure), then on real galleries: the automatic plan
gives the answers of each explicit strategy (SQLite with and without a knn index,
exact and IVF, PostgreSQL and MariaDB with and without IVF lists), the batched
client strategy equals the client strategy query by query, info shows the plan,
the knn index becomes IVF when the gallery grows past the size where it pays, and
build options follow the rules of a query and of reindex.
"""

from __future__ import annotations

import json
import re
import sqlite3

import numpy as np
import pytest
from backends import BACKENDS, STRATEGIES, fresh_database
from click.testing import CliRunner
from ivf_data import grouped_faces, queries

import facevec
from facevec import knn, plan, search
from facevec.cli import cli
from facevec.errors import InvalidParameterError
from facevec.gallery_info import info
from facevec.plan import Facts, KnnIndex, choose, index_plan, spark_plan
from facevec.recognize import find
from facevec.storage.database import open_database

N = 600
THRESHOLD = 0.45  # within an identity of ivf_data's faces, few across


# The planner ----------------------------------------------------------------------------

EXACT = KnnIndex(lists=0, nprobe=0, vectors=20_000, trained=0)
SMALL = plan.KNN_FROM
IVF = KnnIndex(lists=316, nprobe=9, vectors=100_000, trained=100_000)


@pytest.mark.parametrize(
    ("facts", "queries_", "strategy", "batch", "exact"),
    [
        (Facts("sqlite", 20_000, True, EXACT), 1, "knn", False, True),
        (Facts("sqlite", 20_000, True, EXACT), 2, "client", True, True),
        (Facts("sqlite", SMALL, True, EXACT), 1, "knn", False, True),
        (Facts("sqlite", SMALL - 1, True, EXACT), 1, "extension", False, True),
        (Facts("sqlite", SMALL - 1, True, EXACT), 2, "client", True, True),
        (Facts("sqlite", 500, True, IVF), 1, "knn", False, False),  # IVF as built
        (Facts("sqlite", 100_000, True, IVF), 1, "knn", False, False),
        (Facts("sqlite", 100_000, True, IVF), 1000, "knn", True, False),
        (Facts("sqlite", 5000, True, None), 1, "extension", False, True),
        (Facts("sqlite", 5000, True, None), 2, "client", True, True),
        # the index is there but this connection cannot read it (the Python fallback)
        (Facts("sqlite", 5000, False, EXACT), 1, "extension", False, True),
        (Facts("sqlite", 5000, False, EXACT), 2, "client", True, True),
        (Facts("postgresql", None, sql_lists=32), 1, "client", False, False),
        (Facts("postgresql", None, sql_lists=32), 1000, "client", True, True),
        (Facts("postgresql", None), 1, "client", False, True),
        (Facts("postgresql", None), 2, "client", True, True),
        (Facts("mysql", None, local=False), 1, "relational", False, True),
        (Facts("mysql", None, local=False), 2, "client", True, True),
        (Facts("mysql", None, embedding_rows=False, local=False), 1, "client", False, True),
        (Facts("sqlite", 0, True, None), 0, "extension", False, True),
    ],
)
def test_planner_choices(facts, queries_, strategy, batch, exact):
    chosen = choose(facts, queries_)
    assert (chosen.strategy, chosen.batch, chosen.exact) == (strategy, batch, exact)
    assert chosen.strategy in search.STRATEGIES or chosen.strategy == "client"
    assert chosen.reason and chosen.as_dict()["reason"] == chosen.reason


def test_a_damaged_index_leaves_the_scans(tmp_path):
    db = str(tmp_path / "g.db")
    facevec.add(db, [f"img{row}.jpg" for row in range(50)], _vectors()[:50], model_name="Dlib")
    with open_database(db) as database:
        database.execute("UPDATE facevec_knn_index SET n_vectors = 4611686018427387904")
        database.commit()
        found = plan.facts(database)
        chosen = plan.plan_for(database)
        hits = search.nearest(database, _vectors()[3], k=1)
    assert found.knn_damaged and found.knn_index is None
    assert chosen.strategy == "extension" and "facevec reindex rebuilds it" in chosen.reason
    assert hits[0][1] == 0.0


def test_planner_reasons_name_what_decided():
    assert "--nprobe 316" in choose(Facts("sqlite", 100_000, True, IVF)).reason
    assert "1,000 queries" in choose(Facts("sqlite", 5000, True, EXACT), 1000).reason
    assert "1,000 queries" in choose(Facts("sqlite", 5000, True, IVF), 1000).reason
    assert f"pays from {SMALL:,}" in choose(Facts("sqlite", 5000, True, EXACT)).reason
    assert "facevec reindex" in choose(Facts("sqlite", 5000, True, None)).reason
    assert "reindex" not in choose(Facts("sqlite", 5000, False, None)).reason
    below = choose(Facts("postgresql", plan.SERVER_LISTS_FROM - 1)).reason
    at = choose(Facts("postgresql", plan.SERVER_LISTS_FROM)).reason
    assert "reindex" not in below and f"--lists {plan.ivf_lists(plan.SERVER_LISTS_FROM)}" in at
    assert "8 nearest" in choose(Facts("postgresql", None, sql_lists=32)).reason


def test_index_plan_boundaries():
    assert index_plan(10, None).action == "build"
    exact = KnnIndex(0, 0, 0, 0)
    assert index_plan(plan.IVF_FROM - 1, exact).action == "sync"
    grown = index_plan(plan.IVF_FROM, exact)
    assert (grown.action, grown.lists) == ("rebuild", plan.ivf_lists(plan.IVF_FROM))
    ivf = KnnIndex(lists=400, nprobe=8, vectors=160_000, trained=160_000)
    assert index_plan(plan.RETRAIN_GROWTH * 160_000 - 1, ivf).action == "sync"
    retrain = index_plan(plan.RETRAIN_GROWTH * 160_000, ivf)
    assert (retrain.action, retrain.lists) == ("rebuild", 800)
    assert index_plan(10, ivf).action == "sync"  # shrinking never rebuilds by itself


def test_index_plan_rebuilds_when_appended_faces_cost_a_quarter_of_a_query():
    # 160,000 faces listed, nprobe 8 of 400 lists: a query reads 3,200 listed faces
    kept = KnnIndex(lists=400, nprobe=8, vectors=160_800, trained=160_000, unlisted=800)
    assert index_plan(160_800, kept).action == "sync"  # +25%: not yet
    over = KnnIndex(lists=400, nprobe=8, vectors=160_801, trained=160_000, unlisted=801)
    rebuild = index_plan(160_801, over)
    assert (rebuild.action, rebuild.lists) == ("rebuild", 400)  # the lists kept
    assert "801 faces appended" in rebuild.reason
    assert index_plan(10, KnnIndex(0, 0, 10, 0, 0)).action == "sync"  # exact: none


def test_spark_plan_boundary():
    assert spark_plan(100, 100).strategy == "gallery"
    assert spark_plan(101, 100).strategy == "queries"
    assert "exceed" in spark_plan(101, 100).reason


@pytest.mark.parametrize(
    ("name", "local"),
    [
        ("faces.db", True),
        ("postgresql://postgres@127.0.0.1:5432/test", True),
        ("mysql://root@localhost/test", True),
        ("postgresql://u@[::1]:5432/x", True),
        ("postgresql://u@db.example.org/x", False),
        ("mysql://root@10.0.0.7:3306/test", False),
    ],
)
def test_is_local(name, local):
    assert plan.is_local(name) is local


# Real galleries: the automatic plan answers as each explicit strategy -------------------


def _vectors(seed: int = 5) -> np.ndarray:
    vectors, _ = grouped_faces(N, seed=seed, groups=6)
    vectors[30:40] = vectors[0:10]  # exact duplicates: ties, broken by id
    return vectors


@pytest.fixture(params=BACKENDS)
def backend_gallery(request, tmp_path):
    vectors = _vectors()
    with fresh_database(request.param, tmp_path) as db:
        facevec.add(db, [f"img{row}.jpg" for row in range(N)], vectors, model_name="Dlib")
        yield request.param, db, vectors


def _answers(db, probes, strategy, **options):
    with open_database(db) as database:
        batch = search.nearest_batch(database, probes, strategy=strategy, **options)
        single = [search.nearest(database, q, strategy=strategy, **options) for q in probes[:3]]
    return [list(hits) for hits in batch], [list(hits) for hits in single]


def _planned(db, count):
    with open_database(db) as database:
        return plan.plan_for(database, count)


SEARCHES = [
    {"k": 10},
    {"threshold": THRESHOLD},
    {"k": 5, "threshold": THRESHOLD, "distance_metric": "cosine"},
]


def _check_auto_equals_explicit(backend, db, probes, expected, strategies):
    assert _planned(db, 1).strategy == expected[0]
    assert _planned(db, len(probes)).strategy == expected[1]
    for options in SEARCHES:
        auto_batch, auto_single = _answers(db, probes, None, **options)
        assert any(auto_batch) and all(len(hits) <= 10 for hits in auto_batch[:1])
        _same(auto_single, auto_batch[:3], "one query", "a batch")  # plans may differ
        for strategy in strategies:
            batch, single = _answers(db, probes, strategy, **options)
            _same(batch, auto_batch, strategy, expected[1])
            _same(single, auto_single, strategy, expected[0])


def _same(found, expected, strategy, named):
    """The same faces in the same order; the same distances: to the bit from the
    strategy the plan names, to 1e-5 from the others (float32 on the client, double
    in SQL), as every strategy agrees."""
    assert [[i for i, _ in hits] for hits in found] == [[i for i, _ in h] for h in expected]
    if strategy == named:
        assert found == expected, strategy
    for hits, truth in zip(found, expected, strict=True):
        assert [d for _, d in hits] == pytest.approx([d for _, d in truth], abs=1e-5)


def test_auto_plan_equals_each_strategy(backend_gallery):
    backend, db, vectors = backend_gallery
    probes = np.concatenate([queries(vectors, 20, seed=2), vectors[:2]])  # and two tied faces
    if backend == "sqlite":
        # The gallery has its exact knn index (facevec.add keeps it).
        # A small gallery: one query scans, a batch reads the gallery once.
        expected = ("extension", "client")
        _check_auto_equals_explicit(backend, db, probes, expected, STRATEGIES[backend])
        with open_database(db) as database:
            assert knn.drop(database.conn)
        exact = [s for s in STRATEGIES[backend] if s != "knn"]
        _check_auto_equals_explicit(backend, db, probes, ("extension", "client"), exact)
    else:
        expected = ("client", "client")  # the test servers are on this machine
        _check_auto_equals_explicit(backend, db, probes, expected, STRATEGIES[backend])


def test_auto_plan_with_ivf(backend_gallery):
    """An IVF index or IVF lists: the plan probes as the explicit strategy does."""
    backend, db, vectors = backend_gallery
    probes = queries(vectors, 20, seed=4)
    if backend == "sqlite":
        with open_database(db) as database:
            knn.build(database.conn, lists=24)
        chosen = _planned(db, len(probes))
        assert (chosen.strategy, chosen.exact) == ("knn", False)
        strategies = ["knn"]
    else:
        facevec.train_lists(db, 24, progress=False)
        assert _planned(db, 1).exact is False  # one query probes the lists
        chosen = _planned(db, len(probes))
        assert (chosen.strategy, chosen.batch, chosen.exact) == ("client", True, True)
        # Many queries: the exact answer, as every strategy gives it with every list read.
        for options in SEARCHES[:2]:
            auto_batch = _answers(db, probes, None, **options)[0]
            for strategy in ["relational", "client"]:
                batch = _answers(db, probes, strategy, nprobe=24, **options)[0]
                _same(batch, auto_batch, strategy, "client")
        chosen = _planned(db, 1)
        strategies = ["relational", "client"]
    for options in SEARCHES[:2]:
        auto_batch, auto_single = _answers(db, probes, None, **options)
        for strategy in strategies:
            batch, single = _answers(db, probes, strategy, **options)
            if backend == "sqlite":  # on a server the plan's batch is exact (above)
                _same(batch, auto_batch, strategy, chosen.strategy)
            _same(single, auto_single, strategy, chosen.strategy)
    # Every list read: the exact answer of every strategy.
    exact = _answers(db, probes, None, k=10, nprobe=24)
    for strategy in STRATEGIES[backend]:
        batch, single = _answers(db, probes, strategy, k=10, nprobe=24)
        _same(batch, exact[0], strategy, chosen.strategy)
        _same(single, exact[1], strategy, chosen.strategy)


def test_find_uses_the_plan(backend_gallery):
    backend, db, vectors = backend_gallery
    auto = find(vectors[3], db, k=4)
    for strategy in STRATEGIES[backend]:
        frame = find(vectors[3], db, k=4, strategy=strategy)
        assert frame[0]["face_id"].tolist() == auto[0]["face_id"].tolist()
        assert frame[0]["distance"].tolist() == pytest.approx(auto[0]["distance"].tolist())
    assert auto[0]["img_name"].tolist()[:2] == ["img3.jpg", "img33.jpg"]  # itself, its twin


def test_client_batch_across_blocks(tmp_path, monkeypatch):
    """Several read blocks and query blocks: row for row, bit for bit, the client
    strategy query by query (ties across blocks by id)."""
    db = str(tmp_path / "g.db")
    vectors = _vectors(seed=9)
    vectors[500:510] = vectors[0:10]  # a tie across read blocks
    facevec.add(db, [f"img{row}.jpg" for row in range(N)], vectors, model_name="Dlib")
    probes = np.concatenate([queries(vectors, 30, seed=3), vectors[:10]])
    monkeypatch.setattr(search, "CLIENT_BATCH_ROWS", 97)
    monkeypatch.setattr(search, "CLIENT_BATCH_CELLS", 500)
    calls = []
    real = search._client_batch
    monkeypatch.setattr(search, "_client_batch", lambda *a: calls.append(1) or real(*a))
    with open_database(db) as database:
        for options in SEARCHES:
            batch = search.nearest_batch(database, probes, strategy="client", **options)
            each = [search.nearest(database, q, strategy="client", **options) for q in probes]
            assert [list(h) for h in batch] == [list(h) for h in each], options
        assert len(calls) == len(SEARCHES)
        # Without a k or a threshold every face is an answer: query by query.
        everything = search.nearest_batch(database, probes[:2], strategy="client")
        assert len(calls) == len(SEARCHES) and len(everything[0]) == N


def test_client_batch_leaves_out_bad_rows(tmp_path):
    """A stored row of another size: the batch gives way to the per-query path,
    which names the row and answers without it."""
    db = str(tmp_path / "g.db")
    vectors = _vectors()
    facevec.add(db, [f"img{row}.jpg" for row in range(N)], vectors, model_name="Dlib")
    with open_database(db) as database:
        database.execute("UPDATE face_meta SET embedding = x'00000000' WHERE id = 7")
        database.commit()
        found = search.nearest_batch(database, vectors[:3], strategy="client", k=3)
    assert all(7 in hits.skipped for hits in found)
    assert [hits[0][0] for hits in found] == [1, 2, 3]


# info shows the plan -------------------------------------------------------------------


def test_info_shows_the_plan(tmp_path):
    db = str(tmp_path / "g.db")
    vectors = _vectors()
    facevec.add(db, [f"img{row}.jpg" for row in range(N)], vectors, model_name="Dlib")
    shown = info(db)["search_plan"]
    assert shown["one_query"]["strategy"] == "extension" and shown["one_query"]["exact"]
    assert f"pays from {plan.KNN_FROM:,}" in shown["one_query"]["reason"]
    assert shown["many_queries"]["batch"] and "one read" in shown["many_queries"]["reason"]
    result = CliRunner().invoke(cli, ["info", "--db", db])
    assert result.exit_code == 0, result.output
    line = next(row for row in result.output.splitlines() if row.startswith("search_plan:"))
    assert "one query: extension, 600 faces" in line and "many queries: client (batch)" in line
    with open_database(db) as database:
        knn.drop(database.conn)
    as_json = json.loads(CliRunner().invoke(cli, ["info", "--db", db, "--format", "json"]).output)
    assert as_json["search_plan"]["one_query"]["strategy"] == "extension"
    assert as_json["search_plan"]["many_queries"]["strategy"] == "client"


def test_info_on_a_server_advises_lists(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "SERVER_LISTS_FROM", N)
    with fresh_database("postgresql", tmp_path) as db:
        facevec.add(db, [f"img{row}.jpg" for row in range(N)], _vectors(), model_name="Dlib")
        shown = info(db)["search_plan"]["one_query"]
        assert shown["strategy"] == "client"
        assert f"reindex --lists {plan.ivf_lists(N)}" in shown["reason"]


# The index pays as the gallery grows ---------------------------------------------------


def test_exact_index_becomes_ivf_past_the_size(tmp_path, monkeypatch):
    monkeypatch.setattr(plan, "IVF_FROM", 500)
    db = str(tmp_path / "g.db")
    vectors = _vectors()
    facevec.add(db, [f"img{row}.jpg" for row in range(400)], vectors[:400], model_name="Dlib")
    with open_database(db) as database:
        assert knn.status(database.conn)["lists"] == 0
    facevec.add(db, [f"img{row}.jpg" for row in range(400, N)], vectors[400:], model_name="Dlib")
    with open_database(db) as database:
        status = knn.status(database.conn)
        assert status["lists"] == plan.ivf_lists(N) and status["vectors"] == N
        assert plan.plan_for(database).exact is False
        # Read every list: the exact answer, as the extension gives it.
        probes = queries(vectors, 5)
        exact = search.nearest_batch(database, probes, strategy="extension", k=10)
        every = search.nearest_batch(database, probes, k=10, nprobe=status["lists"])
        assert [list(h) for h in every] == [list(h) for h in exact]


# Build options follow the query's and reindex's rules ------------------------------------


def _table(rows: int) -> sqlite3.Connection:
    conn = facevec.connect(":memory:")
    conn.execute("CREATE TABLE face_meta (id INTEGER PRIMARY KEY, embedding BLOB)")
    x = np.random.default_rng(0).standard_normal((rows, 4)).astype(np.float32)
    conn.executemany(
        "INSERT INTO face_meta VALUES (?, ?)", [(i + 1, v.tobytes()) for i, v in enumerate(x)]
    )
    return conn


def _build(conn, options: str):
    return conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options,)
    ).fetchone()[0]


def test_nprobe_zero_refused_at_build_as_at_query():
    conn = _table(50)
    for options in ('{"nprobe": 0}', '{"lists": 4, "nprobe": 0}', '{"lists": 4, "nprobe": -2}'):
        found = re.escape(json.loads(options)["nprobe"].__str__())
        with pytest.raises(sqlite3.OperationalError, match=f"nprobe must be >= 1, found {found}"):
            _build(conn, options)
    assert knn.status(conn) is None  # nothing was built
    _build(conn, '{"lists": 4, "nprobe": 1}')
    with pytest.raises(sqlite3.OperationalError, match="nprobe must be >= 1, found 0"):
        conn.execute("SELECT * FROM facevec_knn('face_meta', ?, 3, NULL, NULL, 0)", ("[1,2,3,4]",))
    with pytest.raises(
        sqlite3.OperationalError, match="option nprobe must be an integer between 1"
    ):
        _build(conn, '{"lists": 4, "nprobe": "x"}')
    assert knn.status(conn)["nprobe"] == 1  # the index built before is still there


def test_more_lists_than_rows_refused_both_ways(tmp_path):
    conn = _table(500)
    with pytest.raises(sqlite3.OperationalError, match=re.escape("lists (501) is larger than")):
        _build(conn, '{"lists": 501}')
    assert knn.status(conn) is None
    with pytest.raises(sqlite3.OperationalError, match=re.escape("lists (501) is larger than")):
        knn.build(conn, lists=501)
    assert _build(conn, '{"lists": 500}') == 500
    assert knn.status(conn)["lists"] == 500
    # reindex --lists: the same rule, in the same words.
    db = str(tmp_path / "g.db")
    facevec.add(db, [f"img{row}.jpg" for row in range(N)], _vectors(), model_name="Dlib")
    with pytest.raises(InvalidParameterError, match=re.escape(f"lists ({N + 1}) is larger than")):
        facevec.train_lists(db, N + 1, progress=False)
    with pytest.raises(sqlite3.OperationalError, match=re.escape(f"lists ({N + 1}) is larger")):
        knn.reindex(db, progress=False, lists=N + 1)
    result = CliRunner().invoke(cli, ["reindex", "--db", db, "--lists", str(N + 1), "--quiet"])
    assert result.exit_code != 0 and f"lists ({N + 1}) is larger than" in result.output
