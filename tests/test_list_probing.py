"""The default nprobe measured when lists are trained, and MariaDB's probed lists
read as key ranges of the list-clustered table (facevec_list_vectors)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from backends import BACKENDS, fresh_database
from ivf_data import grouped_faces, queries

import facevec
from facevec import lists
from facevec.search import nearest
from facevec.storage import lists as store
from facevec.storage import schema
from facevec.storage.database import open_database

N = 1500
LISTS = 24
K = 10


@pytest.fixture(params=BACKENDS)
def gallery(request, tmp_path):
    vectors, labels = grouped_faces(N, seed=21, groups=10)
    with fresh_database(request.param, tmp_path) as db:
        names = [f"p{label}/img{row}.jpg" for row, label in enumerate(labels)]
        facevec.add(db, names, vectors, model_name="Dlib", identities=[str(x) for x in labels])
        report = facevec.train_lists(db, LISTS, progress=False)
        yield request.param, db, vectors, report


def _expected_nprobe(db) -> int:
    """measure_nprobe's rule, computed here with numpy from what the gallery holds:
    the same query faces (the first at or after random ids, seed 0), their exact 10
    nearest other faces, and the smallest nprobe whose lists hold 97% of them."""
    with open_database(db) as database:
        rows = database.query("SELECT id, embedding, ivf_list FROM face_meta ORDER BY id")
        current = store.layout(database)
        centroids, _ = store.centroids(database, current)
    ids = np.array([int(r[0]) for r in rows])
    matrix = np.stack([np.frombuffer(bytes(r[1]), dtype="<f4") for r in rows]).astype(np.float64)
    face_lists = np.array([int(r[2]) for r in rows])
    starts = np.random.default_rng(0).integers(ids[0], ids[-1] + 1, lists.CALIBRATION_QUERIES)
    positions = sorted({int(np.searchsorted(ids, s)) for s in starts})
    ranks = []
    for q in positions:
        d = ((matrix - matrix[q]) ** 2).sum(axis=1)
        d[q] = np.inf
        neighbours = np.argsort(d, kind="stable")[:K]
        to_centroids = ((centroids.astype(np.float64) - matrix[q]) ** 2).sum(axis=1)
        order = list(np.argsort(to_centroids, kind="stable"))
        ranks += [order.index(face_lists[n]) for n in neighbours]
    ranks = np.sort(np.asarray(ranks))
    for nprobe in range(1, LISTS + 1):
        if (ranks < nprobe).mean() >= lists.CALIBRATION_RECALL:
            return nprobe
    return LISTS


def test_measured_default_nprobe_is_stored_and_used(gallery):
    backend, db, vectors, report = gallery
    measured = report["nprobe"]
    assert 1 <= measured < LISTS
    assert measured == _expected_nprobe(db)
    status = facevec.list_status(db)
    assert status["default_nprobe"] == measured and status["nprobe_measured"]
    probes = queries(vectors, 5, seed=4)
    with open_database(db) as database:
        assert store.layout(database).nprobe == measured
        for query in probes:
            assert len(lists.probe(database, query, None)) == measured
    # It is read from the gallery, not recomputed: another stored value is used.
    other = measured + 2
    with open_database(db) as database, database.transaction():
        database.execute("UPDATE facevec_collection SET ivf_nprobe = {p}", (other,))
    with open_database(db) as database:
        assert len(lists.probe(database, probes[0], None)) == other
        assert facevec.list_status(database)["default_nprobe"] == other
    # Lists trained before it was measured keep the rule.
    with open_database(db) as database, database.transaction():
        database.execute("UPDATE facevec_collection SET ivf_nprobe = NULL")
    assert facevec.list_status(db)["default_nprobe"] == lists.default_nprobe(LISTS)
    assert not facevec.list_status(db)["nprobe_measured"]


def _clustered_rows(db) -> list[tuple]:
    with open_database(db) as database:
        return sorted(
            (int(n), int(i), bytes(b))
            for n, i, b in database.query(
                "SELECT list_no, face_id, embedding FROM facevec_list_vectors"
            )
        )


def _face_meta_rows(db) -> list[tuple]:
    with open_database(db) as database:
        return sorted(
            (int(n), int(i), bytes(b))
            for i, b, n in database.query("SELECT id, embedding, ivf_list FROM face_meta")
        )


def test_clustered_probe_gives_the_same_answers(gallery):
    backend, db, vectors, _ = gallery
    probes = queries(vectors, 8, seed=5)
    with open_database(db) as database:
        current = store.layout(database)
    if backend != "mysql":  # PostgreSQL and SQLite read face_meta's (ivf_list, id) index
        assert not current.clustered and _clustered_rows(db) == []
        return
    assert current.clustered
    assert _clustered_rows(db) == _face_meta_rows(db)
    plain = dataclasses.replace(current, clustered=False)
    with open_database(db) as database:
        for query in probes:
            probed = lists.probe(database, query, 5)
            assert store.list_embeddings(database, probed, current) == store.list_embeddings(
                database, probed, plain
            )
    before = {
        (i, p): nearest_hits(db, q, p) for i, q in enumerate(probes) for p in (1, 4, None, LISTS)
    }
    # Faces replaced and removed keep the table in step with face_meta.
    facevec.add(db, ["p0/img0.jpg", "new.jpg"], vectors[:2] * 1.01, model_name="Dlib")
    with open_database(db) as database, database.transaction():
        from facevec.storage import faces

        faces.delete_image(database, "p1/img1.jpg")
    assert _clustered_rows(db) == _face_meta_rows(db)
    # A schema-6 gallery (lists, no clustered copy) reads face_meta until the
    # upgrade fills the table.
    with open_database(db) as database, database.transaction():
        database.execute("DELETE FROM facevec_list_vectors")
        database.execute("UPDATE facevec_collection SET schema_version = 6")
    with open_database(db) as database:
        assert not store.layout(database).clustered
    middle = {key: nearest_hits(db, probes[key[0]], key[1]) for key in before}
    with open_database(db) as database:
        schema.create_schema(database)
        assert store.layout(database).clustered
        assert schema.get_collection(database).schema_version == schema.SCHEMA_VERSION
    assert _clustered_rows(db) == _face_meta_rows(db)
    assert {key: nearest_hits(db, probes[key[0]], key[1]) for key in before} == middle


def nearest_hits(db, query, nprobe):
    with open_database(db) as database:
        return nearest(database, query, strategy="client", k=K, nprobe=nprobe)
