"""k-means and nearest-centroid assignment, the coarse quantiser of an IVF
index (facevec.bindings.kernels.kmeans / assign), against numpy references.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from facevec.bindings._kernels import lib

import facevec
from facevec import VectorError
from facevec.bindings.kernels import KMEANS_METRICS, assign, kmeans
from facevec.errors import DimensionMismatchError, InvalidParameterError, UnknownMetricError


def raises(error_type, message):
    return pytest.raises(error_type, match=f"^{re.escape(message)}$")


def faces(identities: int, per: int, dim: int, spread: float, seed: int = 0):
    """Face-like data: identities on the unit sphere, several faces near each.
    Returns (rows, identity of each row)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((identities, dim))
    centers /= np.linalg.norm(centers, axis=1, keepdims=True)
    labels = np.repeat(np.arange(identities), per)
    noise = rng.standard_normal((identities * per, dim)) * spread / np.sqrt(dim)
    return (centers[labels] + noise).astype(np.float32), labels


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """a and b group the rows alike, whatever the cluster numbers."""
    pairs = set(zip(a.tolist(), b.tolist(), strict=True))
    return len(pairs) == len(set(a.tolist())) == len(set(b.tolist()))


def numpy_distances(data: np.ndarray, centroids: np.ndarray, metric: str) -> np.ndarray:
    x, c = data.astype(np.float64), centroids.astype(np.float64)
    if metric in ("euclidean", "euclidean_squared"):
        return ((x[:, None, :] - c[None, :, :]) ** 2).sum(axis=2)
    if metric == "inner_product":
        return -(x @ c.T)
    return -(x @ c.T) / np.outer(np.linalg.norm(x, axis=1), np.linalg.norm(c, axis=1))


@pytest.mark.parametrize("metric", KMEANS_METRICS)
def test_recovers_separated_clusters(metric):
    data, labels = faces(40, 6, 32, spread=0.05)
    centroids, assignment = kmeans(data, 40, metric, seed=3)
    assert centroids.shape == (40, 32) and centroids.dtype == np.float32
    assert assignment.shape == (240,) and assignment.dtype == np.int64
    assert same_partition(assignment, labels)


@pytest.mark.parametrize("metric", KMEANS_METRICS)
def test_centroids_are_the_means_of_their_rows(metric):
    data, _ = faces(25, 8, 16, spread=0.2, seed=1)
    centroids, assignment = kmeans(data, 25, metric, iterations=100, seed=0)
    x = data.astype(np.float64)
    if metric in ("cosine", "euclidean_l2"):
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    for c in range(25):
        mean = x[assignment == c].mean(axis=0)
        if metric in ("cosine", "euclidean_l2"):
            mean /= np.linalg.norm(mean)
        np.testing.assert_allclose(centroids[c], mean, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("metric", ["cosine", "euclidean_l2"])
def test_spherical_centroids_have_unit_norm(metric):
    data, _ = faces(30, 5, 24, spread=0.8, seed=2)
    data *= np.random.default_rng(0).uniform(0.1, 10, (len(data), 1)).astype(np.float32)
    centroids, _ = kmeans(data, 12, metric)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("metric", KMEANS_METRICS)
def test_assignment_is_the_nearest_centroid(metric):
    """Against float64 numpy, and exactly what top_k over the centroids gives."""
    data, _ = faces(60, 4, 20, spread=0.9, seed=4)
    centroids, assignment = kmeans(data, 16, metric, iterations=5)
    ref = numpy_distances(data, centroids, metric)
    assert assignment.tolist() == np.argmin(ref, axis=1).tolist()
    for row, lst in zip(data, assignment, strict=True):
        assert facevec.top_k(row, centroids, 1, metric)[0][0] == lst


@pytest.mark.parametrize("metric", KMEANS_METRICS)
def test_same_seed_same_result(metric):
    data, _ = faces(50, 4, 16, spread=1.5, seed=5)  # overlapping: seeds matter
    first = kmeans(data, 20, metric, seed=7)
    again = kmeans(data, 20, metric, seed=7)
    other = kmeans(data, 20, metric, seed=8)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    assert not np.array_equal(first[0], other[0])


def test_portable_kernels_give_the_same_clusters():
    data, _ = faces(50, 5, 32, spread=0.5, seed=6)
    simd = kmeans(data, 25, "euclidean", seed=1)
    lib.fv_force_scalar(1)
    try:
        portable = kmeans(data, 25, "euclidean", seed=1)
    finally:
        lib.fv_force_scalar(0)
    np.testing.assert_array_equal(simd[1], portable[1])
    np.testing.assert_allclose(simd[0], portable[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("metric", KMEANS_METRICS)
def test_no_empty_cluster(metric):
    # Heavy duplication: 10 points repeated 30 times, 15 distinct others.
    rng = np.random.default_rng(9)
    base = rng.standard_normal((10, 8)).astype(np.float32)
    data = np.vstack([np.repeat(base, 30, axis=0), rng.standard_normal((15, 8))]).astype(np.float32)
    for k in (5, 20, 25):
        _, assignment = kmeans(data, k, metric, seed=0)
        assert np.bincount(assignment, minlength=k).min() >= 1, k
    # k equal to the number of (distinct) rows: one row each
    distinct = rng.standard_normal((30, 8)).astype(np.float32)
    _, assignment = kmeans(distinct, 30, metric)
    assert sorted(assignment.tolist()) == list(range(30))


def test_sample_trains_on_a_subset_and_assigns_all():
    data, labels = faces(100, 10, 16, spread=0.05, seed=10)
    centroids, assignment = kmeans(data, 100, sample=500, seed=2)
    assert assignment.tolist() == assign(data, centroids)[0].tolist()
    again = kmeans(data, 100, sample=500, seed=2)
    np.testing.assert_array_equal(centroids, again[0])
    # The default sample (256 rows per list) is every row here.
    full = kmeans(data, 4, seed=2)
    np.testing.assert_array_equal(full[1], assign(data, full[0])[0])


def test_more_iterations_never_raise_the_inertia():
    data, _ = faces(300, 4, 16, spread=1.0, seed=11)

    def inertia(iterations: int) -> float:
        centroids, assignment = kmeans(data, 30, iterations=iterations, seed=4)
        return float(((data.astype(np.float64) - centroids[assignment]) ** 2).sum())

    values = [inertia(i) for i in (0, 1, 3, 10, 40)]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < values[0] * 0.95


def test_ivf_recall_grows_with_nprobe():
    """An IVF over the lists: probing every list is exact; recall grows with nprobe."""
    data, _ = faces(400, 5, 32, spread=0.6, seed=12)
    queries, _ = faces(400, 1, 32, spread=0.6, seed=12)
    centroids, lists = kmeans(data, 32, seed=0)
    truth = facevec.top_k_batch(queries, data, 10)[0]
    recalls = []
    for nprobe in (1, 4, 32):
        hits = 0
        for query, expected in zip(queries[:100], truth[:100], strict=True):
            probed = facevec.top_k(query, centroids, nprobe)[0]
            rows = np.flatnonzero(np.isin(lists, probed))
            found = rows[facevec.top_k(query, data[rows], 10)[0]]
            hits += len(set(found.tolist()) & set(expected.tolist()))
        recalls.append(hits / 1000)
    assert recalls == sorted(recalls) and recalls[-1] == 1.0 and recalls[0] < 1.0


# ---------------------------------------------------------------------------
# assign


@pytest.mark.parametrize("metric", list(facevec.METRICS))
def test_assign_equals_top_k_at_the_extremes(metric):
    """Rows and centroids whose float32 sums overflow or underflow, among
    ordinary ones: each row's list and distance are still top_k's."""
    rng = np.random.default_rng(14)
    scales = np.array([1, 1, 1e20, 1e-16, 1e-30], np.float32)
    data = rng.standard_normal((300, 12)).astype(np.float32) * rng.choice(scales, (300, 1))
    centroids = rng.standard_normal((9, 12)).astype(np.float32) * rng.choice(scales, (9, 1))
    lists, dists = assign(data, centroids, metric)
    for i, row in enumerate(data):
        index, dist = facevec.top_k(row, centroids, 1, metric)
        assert lists[i] == index[0]
        assert dists[i].view(np.uint32) == dist[0].view(np.uint32)


@pytest.mark.parametrize("metric", ["cosine", "euclidean_l2"])
def test_spherical_kmeans_of_tiny_rows(metric):
    """Rows of norm 1e-30, whose float32 squares underflow to 0, have no norm 0
    for the distance kernels (they take them in double), nor for k-means: it
    clusters them as it clusters the same directions at norm 1."""
    data, labels = faces(20, 6, 32, spread=0.05, seed=4)
    centroids, assignment = kmeans(data * np.float32(1e-30), 20, metric, seed=3)
    assert same_partition(assignment, labels)
    np.testing.assert_allclose(np.linalg.norm(centroids, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize("metric", list(facevec.METRICS))
def test_assign_equals_top_k_over_the_centroids(metric):
    rng = np.random.default_rng(13)
    data = rng.standard_normal((300, 12)).astype(np.float32)
    centroids = rng.standard_normal((9, 12)).astype(np.float32)
    data[5] = centroids[4]  # on a centroid
    lists, dists = assign(data, centroids, metric)
    assert lists.dtype == np.int64 and dists.dtype == np.float32
    for i, row in enumerate(data):
        index, dist = facevec.top_k(row, centroids, 1, metric)
        assert lists[i] == index[0]
        assert dists[i].view(np.uint32) == dist[0].view(np.uint32)
    assert lists.tolist() == np.argmin(numpy_distances(data, centroids, metric), axis=1).tolist()


def test_assign_errors():
    data = np.ones((4, 3), np.float32)
    centroids = np.eye(3, dtype=np.float32)
    with raises(DimensionMismatchError, "data has 3 dimensions but centroids have 2"):
        assign(data, centroids[:, :2])
    with raises(VectorError, "centroids is empty: there is no list to assign to"):
        assign(data, centroids[:0])
    zero = centroids.copy()
    zero[1] = 0
    with raises(VectorError, "cosine distance is undefined: centroid 1 has norm 0"):
        assign(data, zero, "cosine")
    bad = data.copy()
    bad[2] = 0
    with raises(VectorError, "cosine distance is undefined: data row 2 has norm 0"):
        assign(bad, centroids, "cosine")
    bad[2, 0] = np.nan
    with raises(
        VectorError,
        "euclidean distance from data row 2 to centroid 0 is NaN: the row or the query "
        "holds NaN or infinity, which cannot be ranked",
    ):
        assign(bad, centroids)
    assert assign(data[:0], centroids)[0].shape == (0,)


# ---------------------------------------------------------------------------
# kmeans errors


def test_k_larger_than_n_is_refused():
    data = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    with raises(
        InvalidParameterError,
        "n_lists (6) is larger than the number of rows (5): k-means needs at least one row "
        "per list",
    ):
        kmeans(data, 6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_lists": 0}, "n_lists must be at least 1, found 0"),
        ({"n_lists": 2.0}, "n_lists must be a whole number, not 2.0"),
        ({"n_lists": 2, "iterations": -1}, "iterations must be at least 0, found -1"),
        ({"n_lists": 2, "seed": -3}, "seed must be at least 0, found -3"),
        ({"n_lists": 2, "seed": 2**64}, f"seed must be at most {2**64 - 1}, found {2**64}"),
        ({"n_lists": 3, "sample": 2}, "sample must be at least 3, found 2"),
    ],
)
def test_bad_parameters(kwargs, message):
    data = np.ones((10, 3), np.float32)
    with raises(InvalidParameterError, message):
        kmeans(data, **kwargs)


def test_bad_data():
    data = np.random.default_rng(0).standard_normal((10, 3)).astype(np.float32)
    with raises(
        UnknownMetricError,
        "unknown k-means metric 'inner_product'; choose one of euclidean, euclidean_squared, "
        "cosine, euclidean_l2",
    ):
        kmeans(data, 2, "inner_product")
    with raises(VectorError, "data must be a 2-D matrix (rows x dimensions), found shape (10,)"):
        kmeans(data[:, 0], 2)
    with raises(VectorError, "data rows are empty vectors"):
        kmeans(data[:, :0], 2)
    bad = data.copy()
    bad[7, 1] = np.inf
    with raises(VectorError, "data row 7 holds NaN or infinity"):
        kmeans(bad, 2)
    bad = data.copy()
    bad[4] = 0
    with raises(VectorError, "cosine k-means is undefined: data row 4 has norm 0"):
        kmeans(bad, 2, "cosine")
    big = np.random.default_rng(1).standard_normal((2000, 3)).astype(np.float32)
    big[1500] = 0  # outside the training sample: found when every row is assigned
    with raises(VectorError, "cosine distance is undefined: data row 1500 has norm 0"):
        kmeans(big, 2, "cosine", sample=100, seed=0)
