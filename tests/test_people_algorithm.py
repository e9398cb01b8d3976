"""The clustering algorithm on vectors: the knn graph against numpy, the linkage
against scipy's average linkage, and its constraints (no database, no deepface)."""

from __future__ import annotations

import numpy as np
import pytest
from people_data import clustered_vectors, pair_scores

from facevec.errors import InvalidParameterError
from facevec.people.clustering import cluster_vectors
from facevec.people.graph import knn_graph
from facevec.people.linkage import cluster_faces


def brute_force_knn(x: np.ndarray, queries: np.ndarray, k: int, cutoff: float):
    d = np.sqrt(((x[queries, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    edges = set()
    for row, query in enumerate(queries):
        d[row, query] = np.inf
        order = np.lexsort((np.arange(len(x)), d[row]))[:k]
        edges |= {(int(query), int(j)) for j in order if d[row, j] <= cutoff}
    return edges


@pytest.mark.parametrize(
    "n, k", [(50, 5), (700, 10), pytest.param(3000, 7, marks=pytest.mark.slow)]
)
def test_knn_graph_is_the_exact_k_nearest_neighbours(n, k, monkeypatch):
    # Small batches, so that the queries take several kernel calls and both threads.
    monkeypatch.setattr("facevec.people.graph.QUERY_BATCH", 64)
    x, _ = clustered_vectors(n, seed=n)
    queries = np.sort(np.random.default_rng(0).choice(n, size=min(n, 300), replace=False))
    graph = knn_graph(x, queries, k, cutoff=0.7)
    found = set(zip(graph.source.tolist(), graph.target.tolist(), strict=True))
    assert found == brute_force_knn(x, queries, k, 0.7)
    exact = np.linalg.norm(x[graph.source].astype(np.float64) - x[graph.target], axis=1)
    np.testing.assert_allclose(graph.distance, exact, rtol=1e-5, atol=1e-6)
    assert not np.any(graph.source == graph.target)


def test_knn_graph_of_nothing_is_empty():
    x, _ = clustered_vectors(10)
    assert len(knn_graph(x, np.array([], dtype=np.int64), 5, 1.0)) == 0
    assert len(knn_graph(x[:1], np.array([0]), 5, 1.0)) == 0


def test_without_constraints_it_is_scipy_average_linkage_on_squared_distances():
    # Average linkage (UPGMA) on squared euclidean distances, cut at threshold^2:
    # with every pair a candidate, the O(d) centroid identity must give scipy's clusters.
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    x, _ = clustered_vectors(240, seed=3)
    n = len(x)
    threshold = 0.55
    full = knn_graph(x, np.arange(n), n - 1, cutoff=np.inf)
    ours = cluster_faces(x, np.full(n, -1), np.arange(n), full, threshold, min_faces=1)
    tree = hierarchy.linkage(x.astype(np.float64), method="average", metric="sqeuclidean")
    theirs = hierarchy.fcluster(tree, t=threshold**2, criterion="distance")
    assert _partition(ours.cluster) == _partition(theirs)
    assert len(set(theirs.tolist())) < n  # the cut merged something


def _partition(labels) -> set[frozenset[int]]:
    groups: dict[int, set[int]] = {}
    for row, label in enumerate(np.asarray(labels).tolist()):
        groups.setdefault(label, set()).add(row)
    return {frozenset(g) for g in groups.values()}


def test_two_faces_of_one_photo_are_never_one_person():
    x, _ = clustered_vectors(400, seed=5)
    n = len(x)
    # Pair each face with its nearest neighbour in one "photo".
    photos = np.arange(n)
    graph = knn_graph(x, np.arange(n), 1, cutoff=np.inf)
    for a, b in zip(graph.source.tolist(), graph.target.tolist(), strict=True):
        photos[b] = photos[a]
    result = cluster_vectors(x, photos, min_faces=1)
    for label in set(result.cluster.tolist()) - {-1}:
        members = np.flatnonzero(result.cluster == label)
        assert len(set(photos[members].tolist())) == len(members)


def test_identical_faces_of_one_photo_stay_apart():
    x = np.repeat(np.random.default_rng(1).normal(size=(1, 128)).astype(np.float32) * 0.1, 4, 0)
    result = cluster_vectors(x, np.array([7, 7, 8, 9]), min_faces=1)
    assert result.cluster[0] != result.cluster[1]
    assert len(set(result.cluster.tolist())) == 2  # 0 and 1 each take half of {2, 3}


def test_existing_people_take_new_faces_keep_theirs_and_never_merge():
    x, truth = clustered_vectors(600, seed=9)
    n = len(x)
    first = cluster_vectors(x, np.arange(n))
    assert pair_scores(first.cluster, truth)["precision"] >= 0.98
    # Make two true people "existing", and split one person in two existing halves.
    people = np.full(n, -1)
    a, b = (np.flatnonzero(truth == t) for t in np.unique(truth)[np.bincount(truth) >= 6][:2])
    people[a[: len(a) // 2]] = 0
    people[a[len(a) // 2 : -1]] = 1  # the same person, two existing people: never merged
    people[b[:-1]] = 2
    result = cluster_vectors(x, np.arange(n), person_of_row=people)
    free = np.flatnonzero(people < 0)
    where = dict(zip(free.tolist(), result.person.tolist(), strict=True))
    assert where[int(a[-1])] in (0, 1)  # the last face of a joined one of a's halves
    assert where[int(b[-1])] == 2
    # No free face of another true person joined them.
    for row, person in where.items():
        if person >= 0:
            assert truth[row] == (truth[a[0]] if person in (0, 1) else truth[b[0]])


def test_a_rejected_face_never_joins_that_person():
    x, truth = clustered_vectors(300, seed=11)
    n = len(x)
    target = np.unique(truth)[np.bincount(truth) >= 4][0]
    members = np.flatnonzero(truth == target)
    people = np.full(n, -1)
    people[members[:-1]] = 0
    plain = cluster_vectors(x, np.arange(n), person_of_row=people)
    row = int(members[-1])
    assert plain.person[np.searchsorted(np.flatnonzero(people < 0), row)] == 0
    refused = cluster_vectors(x, np.arange(n), person_of_row=people, rejections=[(row, 0)])
    assert refused.person[np.searchsorted(np.flatnonzero(people < 0), row)] == -1


def test_min_faces_leaves_small_groups_unassigned():
    x, truth = clustered_vectors(500, seed=13)
    n = len(x)
    for min_faces in (1, 2, 4):
        result = cluster_vectors(x, np.arange(n), min_faces=min_faces)
        sizes = np.bincount(result.cluster[result.cluster >= 0])
        assert sizes.min() >= min_faces
    ones = cluster_vectors(x, np.arange(n), min_faces=1)
    assert (ones.cluster >= 0).all()


def test_clustering_is_deterministic_and_scores_are_rms_distances():
    x, _ = clustered_vectors(400, seed=17)
    n = len(x)
    a = cluster_vectors(x, np.arange(n))
    b = cluster_vectors(x, np.arange(n))
    np.testing.assert_array_equal(a.cluster, b.cluster)
    label = np.bincount(a.cluster[a.cluster >= 0]).argmax()
    members = np.flatnonzero(a.cluster == label)
    for row in members[:5]:
        others = x[members[members != row]].astype(np.float64)
        rms = np.sqrt(np.mean(np.sum((others - x[row]) ** 2, axis=1)))
        assert a.score[row] == pytest.approx(rms, rel=1e-6)


def test_cosine_clusters_unit_vectors_whatever_their_length():
    x, truth = clustered_vectors(300, seed=19)
    scaled = x * np.random.default_rng(2).uniform(0.5, 3.0, size=(len(x), 1)).astype(np.float32)
    plain = cluster_vectors(x, np.arange(len(x)), metric="cosine")
    stretched = cluster_vectors(scaled, np.arange(len(x)), metric="cosine")
    assert _partition(plain.cluster) == _partition(stretched.cluster)
    assert pair_scores(plain.cluster, truth)["precision"] >= 0.95


@pytest.mark.parametrize("bad", [{"threshold": 0.0}, {"threshold": -1.0}, {"min_faces": 0}])
def test_bad_parameters_are_refused(bad):
    x, _ = clustered_vectors(20)
    with pytest.raises(InvalidParameterError):
        cluster_vectors(x, np.arange(len(x)), **bad)


def test_identical_faces_are_each_others_neighbours_not_their_own():
    # More identical rows than k: a query's own row may not be among its k + 1
    # nearest (ties go to lower rows), and it must still never be its own edge.
    x = np.repeat(np.ones((1, 128), np.float32), 6, axis=0)
    graph = knn_graph(x, np.arange(6), 2, cutoff=1.0)
    assert not np.any(graph.source == graph.target)
    assert np.bincount(graph.source, minlength=6).tolist() == [2] * 6
    assert np.all(graph.distance == 0)
