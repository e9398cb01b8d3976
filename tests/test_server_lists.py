"""IVF lists in plain SQL on SQLite, PostgreSQL and MariaDB (facevec.lists).

Recall of the probed search on clustered data, nprobe = lists equal to the
exact search, new faces put in their list, an atomic retrain, a resumed
reindex, and the blobs-only layout.
"""

from __future__ import annotations

import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner
from ivf_data import grouped_faces, queries

import facevec
from facevec import lists
from facevec.bindings.kernels import assign
from facevec.errors import UnknownStrategyError
from facevec.search import nearest
from facevec.storage import lists as store
from facevec.storage.database import open_database
from facevec.storage.schema import SCHEMA_VERSION

N = 1200
LISTS = 32  # default nprobe: 8
K = 10


@pytest.fixture(params=BACKENDS)
def gallery(request, tmp_path):
    vectors, labels = grouped_faces(N, seed=3, groups=8)
    with fresh_database(request.param, tmp_path) as db:
        names = [f"p{label}/img{row}.jpg" for row, label in enumerate(labels)]
        facevec.add(db, names, vectors, model_name="Dlib", identities=[str(x) for x in labels])
        yield request.param, db, vectors


def _search(db, query, strategy, nprobe=None, k=K):
    with open_database(db) as database:
        return nearest(database, query, strategy=strategy, k=k, nprobe=nprobe)


def _face_lists(db) -> dict[int, int | None]:
    with open_database(db) as database:
        return {
            int(face_id): None if number is None else int(number)
            for face_id, number in database.query("SELECT id, ivf_list FROM face_meta")
        }


def test_probed_search_recall_and_exactness(gallery):
    backend, db, vectors = gallery
    probes = queries(vectors, 12)
    strategies = ("relational", "client")
    exact = {(s, i): _search(db, q, s) for s in strategies for i, q in enumerate(probes)}
    report = facevec.train_lists(db, LISTS, progress=False)
    assert report["lists"] == LISTS and report["faces"] == N and sum(report["sizes"]) == N
    assert lists.default_nprobe(LISTS) < LISTS
    face_lists = _face_lists(db)
    assert set(face_lists.values()) <= set(range(LISTS))
    with open_database(db) as database:
        current = store.layout(database)
        probed_lists = [lists.probe(database, q, None) for q in probes]
    assert current.generation is not None
    found = total = 0
    for strategy in strategies:
        for i, query in enumerate(probes):
            truth = exact[(strategy, i)]
            # nprobe = lists is the exact search, row for row.
            assert _search(db, query, strategy, nprobe=LISTS) == truth
            hits = _search(db, query, strategy)
            truth_ids = [face_id for face_id, _ in truth]
            found += len({face_id for face_id, _ in hits} & set(truth_ids))
            total += len(truth_ids)
            # Re-ranked exactly: each hit's distance is its exact distance.
            exact_all = dict(_search(db, query, strategy, nprobe=LISTS, k=None))
            for face_id, distance in hits:
                assert distance == pytest.approx(exact_all[face_id], abs=1e-5)
            # The same rows as the exact search when its faces lie in the probed lists.
            if all(face_lists[face_id] in probed_lists[i] for face_id in truth_ids):
                assert hits == truth
    assert found / total >= 0.95, (backend, found / total)


def test_reindex_lists_0_removes_the_lists_and_search_is_exact_again(gallery, photos):
    from facevec.cli.main import cli

    def find(strategy, *options):
        found = CliRunner().invoke(
            cli, ["find", str(photos("img1.jpg")), "--db", db, "--strategy", strategy, *options]
        )
        assert found.exit_code == 0, found.output
        return found

    backend, db, vectors = gallery
    probes = queries(vectors, 6)
    strategies = ("relational", "client")
    exact = {(s, i): _search(db, q, s, k=None) for s in strategies for i, q in enumerate(probes)}
    facevec.train_lists(db, LISTS, progress=False)
    assert facevec.info(db)["ivf_lists"]["lists"] == LISTS
    assert any(
        len(_search(db, q, s, k=None)) < len(exact[(s, i)])
        for s in strategies
        for i, q in enumerate(probes)
    ), "the lists make the search approximate"
    default = facevec.list_status(db)["default_nprobe"]
    for strategy in strategies:
        note = f"note: approximate search of {default} of the gallery's {LISTS} IVF lists"
        assert note in find(strategy).stderr
        assert "approximate" not in find(strategy, "--nprobe", str(LISTS)).stderr
    runner = CliRunner()
    result = runner.invoke(cli, ["reindex", "--lists", "0", "--db", db, "--quiet"])
    assert result.exit_code == 0, result.output
    assert "IVF lists: removed" in result.output
    assert not facevec.info(db).get("ivf_lists")
    assert facevec.list_status(db) is None
    assert set(_face_lists(db).values()) == {None}
    for (strategy, i), truth in exact.items():
        assert _search(db, probes[i], strategy, k=None) == truth
    assert all("approximate" not in find(strategy).stderr for strategy in strategies)
    # New faces go in no list; lists can be trained again.
    facevec.add(db, ["new.jpg"], vectors[:1], model_name="Dlib")
    assert set(_face_lists(db).values()) == {None}
    again = runner.invoke(cli, ["reindex", "--lists", "0", "--db", db, "--quiet"])
    assert again.exit_code == 0 and "IVF lists: none" in again.output
    assert facevec.train_lists(db, LISTS, progress=False)["faces"] == N + 1


def test_new_faces_go_to_their_list(gallery):
    _, db, vectors = gallery
    facevec.train_lists(db, 16, progress=False)
    extra = queries(vectors, 5, seed=9)
    facevec.add(db, [f"new/{i}.jpg" for i in range(5)], extra, model_name="Dlib")
    with open_database(db) as database:
        matrix, metric = store.centroids(database, store.layout(database))
        rows = database.query(
            "SELECT img_name, ivf_list FROM face_meta WHERE img_name LIKE {p} ORDER BY img_name",
            ("new/%",),
        )
    expected = assign(extra, matrix, metric)[0]
    assert [int(number) for _, number in rows] == expected.tolist()
    status = facevec.list_status(db)
    assert status["unassigned"] == 0 and status["faces"] == N + 5
    # A new face is found by its own list alone.
    hits = _search(db, extra[2], "client", nprobe=1, k=1)
    assert hits and hits[0][1] == pytest.approx(0.0, abs=1e-6)


def test_failed_retrain_keeps_old_lists_and_resumes(gallery, monkeypatch):
    _, db, vectors = gallery
    facevec.train_lists(db, 16, progress=False)
    before = _face_lists(db)
    query = queries(vectors, 1, seed=5)[0]
    hits_before = _search(db, query, "client")
    original = store.activate

    def broken(database, generation, nprobe=None):
        original(database, generation, nprobe)  # everything written, then the swap fails
        raise RuntimeError("disk full")

    monkeypatch.setattr(store, "activate", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        facevec.train_lists(db, 24, progress=False)
    assert _face_lists(db) == before
    assert facevec.list_status(db)["lists"] == 16
    assert _search(db, query, "client") == hits_before
    monkeypatch.setattr(store, "activate", original)
    report = facevec.train_lists(db, 24, progress=False)
    assert report["resumed"] and report["lists"] == 24
    assert facevec.list_status(db)["lists"] == 24


def test_interrupted_reindex_resumes(gallery):
    _, db, _ = gallery
    seen = []

    def stop(done):
        seen.append(done)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        facevec.train_lists(db, LISTS, progress=False, batch_size=500, on_batch=stop)
    assert facevec.list_status(db) is None  # no lists until the run completes
    with open_database(db) as database:
        waiting = store.pending(database)
    assert waiting is not None and waiting.assigned == 500 and waiting.lists == LISTS
    later = []
    report = facevec.train_lists(db, LISTS, progress=False, batch_size=500, on_batch=later.append)
    assert report["resumed"] and later == [1000, N]
    assert set(_face_lists(db).values()) <= set(range(LISTS))
    with open_database(db) as database:
        assert store.pending(database) is None
        assert database.scalar("SELECT COUNT(*) FROM facevec_list_pending") == 0


def test_blobs_only_layout(gallery):
    _, db, vectors = gallery
    facevec.train_lists(db, LISTS, progress=False)
    probes = queries(vectors, 3, seed=11)
    before = [_search(db, q, "client") for q in probes]
    assert facevec.set_embedding_rows(db, False, progress=False) == N
    with open_database(db) as database:
        assert database.scalar("SELECT COUNT(*) FROM face_embeddings") == 0
    with pytest.raises(UnknownStrategyError, match="blobs only"):
        _search(db, probes[0], "relational")
    assert [_search(db, q, "client") for q in probes] == before
    facevec.add(db, ["late.jpg"], probes[:1], model_name="Dlib")
    with open_database(db) as database:
        assert database.scalar("SELECT COUNT(*) FROM face_embeddings") == 0
    assert facevec.info(db)["embedding_rows"] is False
    assert facevec.set_embedding_rows(db, True, progress=False) == N + 1
    with open_database(db) as database:
        assert database.scalar("SELECT COUNT(*) FROM face_embeddings") == (N + 1) * 128
    for q in probes:
        relational, client = _search(db, q, "relational"), _search(db, q, "client")
        assert [f for f, _ in relational] == [f for f, _ in client]
        assert [d for _, d in relational] == pytest.approx([d for _, d in client], abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_cli_reindex_lists_and_info(backend, tmp_path):
    from facevec.cli.main import cli

    vectors, labels = grouped_faces(300, seed=4, groups=4)
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, [f"{i}.jpg" for i in range(300)], vectors, model_name="Dlib")
        runner = CliRunner()
        result = runner.invoke(cli, ["reindex", "--lists", "8", "--db", db, "--quiet"])
        assert result.exit_code == 0, result.output
        assert "IVF lists: 8 lists over 300 faces" in result.output
        info = facevec.info(db)
        assert info["ivf_lists"]["lists"] == 8 and info["ivf_lists"]["unassigned"] == 0
        assert info["schema_version"] == SCHEMA_VERSION
        if backend == "postgresql":
            assert info["pgvector"] in ("installed", "available", "absent")
        else:
            assert "pgvector" not in info
        shown = runner.invoke(cli, ["info", "--db", db])
        assert shown.exit_code == 0 and "ivf_lists: 8 lists" in shown.output
        again = runner.invoke(cli, ["reindex", "--db", db, "--quiet"])
        assert again.exit_code == 0, again.output
        if backend == "sqlite":
            assert "knn index: 300 faces" in again.output
        else:  # a server has no knn index: the lists' status
            assert "lists: 8" in again.output and "unassigned: 0" in again.output
        blobs = runner.invoke(cli, ["reindex", "--blobs-only", "--db", db, "--quiet"])
        assert blobs.exit_code == 0 and "blobs only (300 faces changed)" in blobs.output


def test_version_2_gallery_is_upgraded(tmp_path):
    db = str(tmp_path / "old.db")
    vectors, _ = grouped_faces(100, seed=6, groups=2)
    facevec.add(db, [f"{i}.jpg" for i in range(100)], vectors, model_name="Dlib")
    with open_database(db) as database:  # as schema version 2 left it
        with database.transaction():
            database.execute("DROP INDEX face_meta_ivf_list")
            database.execute("ALTER TABLE face_meta DROP COLUMN ivf_list")
            database.execute("ALTER TABLE facevec_collection DROP COLUMN ivf_generation")
            database.execute("ALTER TABLE facevec_collection DROP COLUMN embedding_rows")
            database.execute("DROP TABLE facevec_centroids")
            database.execute("DROP TABLE facevec_list_pending")
            database.execute("UPDATE facevec_collection SET schema_version = 2")
    store._UPGRADED.discard(db)  # this process saw the file at version 3
    hits = _search(db, vectors[0], "client")  # read without upgrading
    assert hits[0][1] == pytest.approx(0.0, abs=1e-6)
    facevec.train_lists(db, 4, progress=False)
    info = facevec.info(db)
    assert info["ivf_lists"]["faces"] == 100 and info["schema_version"] == SCHEMA_VERSION
    assert _search(db, vectors[0], "client") == hits
