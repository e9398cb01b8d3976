"""What another writer does while a long job computes never leaves it writing stale
rows: ``people cluster`` racing a photo replaced, ``reindex --lists`` racing the
same; on every database."""

from __future__ import annotations

import numpy as np
import pytest
from backends import BACKENDS, fresh_database

import facevec
from facevec import lists
from facevec.people import clustering
from facevec.storage.database import open_database

DIM = 16


def groups(n_groups: int, per_group: int, seed: int) -> np.ndarray:
    """Tight groups of vectors far apart: clustering makes one person of each."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_groups, DIM)) * 10
    return np.concatenate([c + 0.01 * rng.normal(size=(per_group, DIM)) for c in centres])


def dangling(db) -> dict[str, int]:
    with open_database(db) as database:
        return {
            "assignments_of_gone_faces": database.scalar(
                "SELECT COUNT(*) FROM person_face WHERE face_id NOT IN (SELECT id FROM face_meta)"
            ),
            "people_without_faces": database.scalar(
                "SELECT COUNT(*) FROM person WHERE id NOT IN (SELECT person_id FROM person_face)"
            ),
        }


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_cluster_writes_nothing_for_faces_replaced_while_it_ran(backend, tmp_path, monkeypatch):
    vectors = groups(2, 4, seed=1)  # photos a0..a3 are one person, b0..b3 another
    names = [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, names, vectors, people=False)
        computed = clustering.cluster_vectors

        def replaced_meanwhile(*args, **kwargs):
            result = computed(*args, **kwargs)
            # Another writer re-indexes a1 and three of b's photos: new faces, new ids.
            facevec.add(db, ["a1", "b0", "b1", "b2"], vectors[[1, 4, 5, 6]] + 0.001, people=False)
            return result

        monkeypatch.setattr(clustering, "cluster_vectors", replaced_meanwhile)
        report = facevec.people.cluster(db, progress=False)
        # a keeps its three faces still stored; b has one left, fewer than min_faces.
        assert (report.new_people, report.faces_in_new_people, report.gone) == (1, 3, 4)
        assert dangling(db) == {"assignments_of_gone_faces": 0, "people_without_faces": 0}
        (person,) = facevec.people.list_people(db)
        assert person.faces == 3
        facevec.people.undo(db)  # the run is recorded with what it wrote, and undone
        assert facevec.people.list_people(db) == []


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_face_replaced_during_reindex_lists_gets_its_new_vectors_list(
    backend, tmp_path, monkeypatch
):
    """Its old vector's list, written after it was replaced, made it unreachable at
    the default nprobe."""
    vectors = groups(16, 15, seed=2).astype(np.float32)
    names = [f"p{i}" for i in range(len(vectors))]
    newest = names[-1]
    moved = vectors[0] + 0.001  # the new photo looks like the first group, not the last
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, names, vectors, people=False)
        assigned = lists._lists_of
        calls = []

        def replaced_meanwhile(blobs, centroids, metric):
            numbers = assigned(blobs, centroids, metric)
            calls.append(len(blobs))
            if len(calls) == 2:  # the last batch, holding the newest face: replaced now
                facevec.add(db, [newest], moved[None, :])
            return numbers

        monkeypatch.setattr(lists, "_lists_of", replaced_meanwhile)
        facevec.train_lists(db, 16, batch_size=200, progress=False)  # default nprobe: 8
        (frame,) = facevec.find(moved, db, strategy="client", k=1, similarity_search=True)
        assert frame.img_name[0] == newest and frame.distance[0] == 0
        status = facevec.list_status(db)
        assert status["faces"] == len(vectors) and status["unassigned"] == 0
        with open_database(db) as database:
            pending = database.scalar("SELECT COUNT(*) FROM facevec_list_pending")
        assert pending == 0
