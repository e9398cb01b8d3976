"""Distances, exact top-k and k-means over numpy arrays, through facevec's C kernels.

This is the client-side search path: the same SIMD code as the SQL functions,
called on a matrix already in memory. ``top_k_batch`` answers many queries in
one pass over the matrix, ``kmeans`` and ``assign`` build and fill the lists of
an inverted-file (IVF) index; the ``nprobe`` lists nearest to a query are
``top_k(query, centroids, nprobe, metric)``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DimensionMismatchError, InvalidParameterError, UnknownMetricError, VectorError
from ..metrics import BY_NAME, kernel_metric
from ._kernels import ffi, lib

#: Metric name -> C kernel code. "inner_product" ranks by the largest a.b.
METRICS: dict[str, int] = {name: metric.code for name, metric in BY_NAME.items()}


def isa() -> str:
    """The instruction set the kernels use on this CPU: avx512, avx2, neon or scalar."""
    return ffi.string(lib.fv_isa()).decode()


def _metric(metric: str) -> int:
    return kernel_metric(metric).code


def _as_float32(value: Any, what: str, ndim: int) -> np.ndarray:
    array = np.asarray(value)
    if array.dtype.kind not in "fiu":
        raise VectorError(f"{what} must hold real numbers, found dtype {array.dtype}")
    if array.ndim != ndim:
        shape = "a 1-D vector" if ndim == 1 else "a 2-D matrix (rows x dimensions)"
        raise VectorError(f"{what} must be {shape}, found shape {array.shape}")
    return np.ascontiguousarray(array, dtype=np.float32)


def _prepare(query: Any, matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    q = _as_float32(query, "query", 1)
    m = _as_float32(matrix, "matrix", 2)
    if q.shape[0] == 0:
        raise VectorError("query is an empty vector")
    if m.shape[1] != q.shape[0]:
        raise DimensionMismatchError(
            f"query has {q.shape[0]} dimensions but matrix rows have {m.shape[1]}"
        )
    return q, m


def _check(rc: int, bad_row: int, metric: str) -> None:
    if rc == lib.FV_OK:
        return
    if rc == lib.FV_ZERO_NORM:
        where = "the query" if bad_row < 0 else f"matrix row {bad_row}"
        raise VectorError(f"{metric} distance is undefined: {where} has norm 0")
    if rc == lib.FV_NAN:
        raise VectorError(
            f"{metric} distance to matrix row {bad_row} is NaN: the row or the query "
            "holds NaN or infinity, which cannot be ranked"
        )
    raise VectorError(f"invalid arguments for metric {metric!r}")  # pragma: no cover


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise VectorError(f"k must be an integer, found {type(k).__name__}")
    if k < 1:
        raise VectorError(f"k must be at least 1, found {k}")
    return int(k)


def _ptr(array: np.ndarray, ctype: str) -> Any:
    return ffi.cast(ctype, ffi.from_buffer(array))


def distances(query: npt.ArrayLike, matrix: npt.ArrayLike, metric: str = "euclidean") -> np.ndarray:
    """Distance from ``query`` (d,) to every row of ``matrix`` (n, d).

    Returns a float32 array of n distances (for ``inner_product``, the inner
    products themselves). Inputs are converted to float32 (no copy when they
    already are float32 and C-contiguous).
    """
    code = _metric(metric)
    q, m = _prepare(query, matrix)
    out = np.empty(m.shape[0], dtype=np.float32)
    bad_row = ffi.new("int64_t *")
    rc = lib.fv_distances(
        code,
        _ptr(q, "float *"),
        _ptr(m, "float *"),
        m.shape[0],
        m.shape[1],
        _ptr(out, "float *"),
        bad_row,
    )
    _check(rc, bad_row[0], metric)
    if code == lib.FV_NEGATIVE_INNER_PRODUCT:
        np.negative(out, out=out)
    return out


def top_k(
    query: npt.ArrayLike, matrix: npt.ArrayLike, k: int, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``matrix`` nearest to ``query``, exactly.

    Returns ``(indices, distances)``: int64 row numbers and float32 distances,
    nearest first, ties broken by the lower row number; fewer than ``k`` when
    the matrix has fewer rows. For ``inner_product`` the largest products come
    first and are returned as they are.
    """
    code = _metric(metric)
    k = _check_k(k)
    q, m = _prepare(query, matrix)
    k = min(k, m.shape[0])
    indices = np.empty(k, dtype=np.int64)
    dists = np.empty(k, dtype=np.float32)
    if k == 0:
        return indices, dists
    n_found = ffi.new("size_t *")
    bad_row = ffi.new("int64_t *")
    rc = lib.fv_top_k(
        code,
        _ptr(q, "float *"),
        _ptr(m, "float *"),
        m.shape[0],
        m.shape[1],
        k,
        _ptr(indices, "int64_t *"),
        _ptr(dists, "float *"),
        n_found,
        bad_row,
    )
    _check(rc, bad_row[0], metric)
    if code == lib.FV_NEGATIVE_INNER_PRODUCT:
        np.negative(dists, out=dists)
    return indices, dists


# ---------------------------------------------------------------------------
# Many queries at once


def _prepare_batch(queries: Any, matrix: Any) -> tuple[np.ndarray, np.ndarray]:
    q = _as_float32(queries, "queries", 2)
    m = _as_float32(matrix, "matrix", 2)
    if q.shape[1] == 0:
        raise VectorError("queries are empty vectors")
    if m.shape[1] != q.shape[1]:
        raise DimensionMismatchError(
            f"queries have {q.shape[1]} dimensions but matrix rows have {m.shape[1]}"
        )
    return q, m


def _max_distance(threshold: Any, metric: str) -> float:
    """The C kernels' max_distance (in their smaller-is-closer terms)."""
    if threshold is None:
        return math.inf
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.number)):
        raise InvalidParameterError(f"threshold must be a number, not {threshold!r}")
    value = float(threshold)
    if math.isnan(value):
        raise InvalidParameterError("threshold must be a number, found NaN")
    if BY_NAME[metric].larger_is_closer:
        return -value  # the smallest inner product kept
    if value < 0:
        raise InvalidParameterError(f"threshold must be >= 0, found {threshold}")
    return value


def _check_pair(rc: int, bad_query: int, bad_row: int, metric: str, names: tuple[str, str]) -> None:
    """Turn a batch return code into the error top_k would raise, naming the pair."""
    query, row = names
    if rc == lib.FV_OK:
        return
    if rc == lib.FV_ZERO_NORM:
        where = f"{row} {bad_row}" if bad_row >= 0 else f"{query} {bad_query}"
        raise VectorError(f"{metric} distance is undefined: {where} has norm 0")
    if rc == lib.FV_NAN:
        raise VectorError(
            f"{metric} distance from {query} {bad_query} to {row} {bad_row} is NaN: the row "
            "or the query holds NaN or infinity, which cannot be ranked"
        )
    if rc == lib.FV_NOMEM:
        raise MemoryError("out of memory for the work buffers of the C kernels")
    raise VectorError(f"invalid arguments for metric {metric!r}")  # pragma: no cover


def top_k_batch(
    queries: npt.ArrayLike,
    matrix: npt.ArrayLike,
    k: int,
    metric: str = "euclidean",
    threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` rows of ``matrix`` nearest to each row of ``queries``, exactly.

    Row ``i`` of the result is what ``top_k(queries[i], matrix, k, metric)``
    returns, bit for bit (same rows, same float32 distances, ties by the lower
    row), but the whole batch shares one pass over the matrix, which makes
    each query several times cheaper than on its own.

    Returns ``(indices, distances)`` of shape ``(len(queries), min(k, len(matrix)))``:
    int64 row numbers and float32 distances, nearest first. With a
    ``threshold``, only rows with distance <= threshold are kept (for
    ``inner_product``: product >= threshold); the places left are padded with
    index -1 and distance +inf (-inf for ``inner_product``), so padding sorts
    last.
    """
    code = _metric(metric)
    k = _check_k(k)
    max_distance = _max_distance(threshold, metric)
    q, m = _prepare_batch(queries, matrix)
    k = min(k, m.shape[0])
    indices = np.empty((q.shape[0], k), dtype=np.int64)
    dists = np.empty((q.shape[0], k), dtype=np.float32)
    if k == 0 or q.shape[0] == 0:
        return indices, dists
    n_found = np.empty(q.shape[0], dtype=np.uintp)
    bad_query = ffi.new("int64_t *")
    bad_row = ffi.new("int64_t *")
    rc = lib.fv_top_k_batch(
        code,
        _ptr(q, "float *"),
        q.shape[0],
        _ptr(m, "float *"),
        m.shape[0],
        m.shape[1],
        k,
        max_distance,
        _ptr(indices, "int64_t *"),
        _ptr(dists, "float *"),
        _ptr(n_found, "size_t *"),
        bad_query,
        bad_row,
    )
    _check_pair(rc, bad_query[0], bad_row[0], metric, ("query", "matrix row"))
    if code == lib.FV_NEGATIVE_INNER_PRODUCT:
        np.negative(dists, out=dists)
    return indices, dists


# ---------------------------------------------------------------------------
# k-means: the coarse quantiser of an IVF index

#: Metrics k-means clusters by: plain k-means (euclidean, euclidean_squared) or
#: spherical k-means with unit-norm centroids (cosine, euclidean_l2).
KMEANS_METRICS: tuple[str, ...] = ("euclidean", "euclidean_squared", "cosine", "euclidean_l2")
#: Default training rows per list when ``sample`` is None (as faiss does).
ROWS_PER_LIST = 256


def _whole(value: Any, name: str, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"{name} must be a whole number, not {value!r}")
    if value < low:
        raise InvalidParameterError(f"{name} must be at least {low}, found {value}")
    if high is not None and value > high:
        raise InvalidParameterError(f"{name} must be at most {high}, found {value}")
    return int(value)


def _check_finite(data: np.ndarray, what: str) -> None:
    finite = np.isfinite(data).all(axis=1)
    if not finite.all():
        row = int(np.argmin(finite))
        raise VectorError(f"{what} row {row} holds NaN or infinity")


def assign(
    data: npt.ArrayLike, centroids: npt.ArrayLike, metric: str = "euclidean"
) -> tuple[np.ndarray, np.ndarray]:
    """The nearest centroid of each row of ``data``: its IVF list.

    Returns ``(lists, distances)``: int64 centroid numbers and float32
    distances, each exactly what ``top_k(row, centroids, 1, metric)`` gives
    (ties: the lower centroid). Cost: len(data) * len(centroids) distances,
    computed as in ``top_k_batch``.
    """
    code = _metric(metric)
    c = _as_float32(centroids, "centroids", 2)
    x = _as_float32(data, "data", 2)
    if c.shape[0] == 0:
        raise VectorError("centroids is empty: there is no list to assign to")
    if c.shape[1] == 0:
        raise VectorError("centroids are empty vectors")
    if x.shape[1] != c.shape[1]:
        raise DimensionMismatchError(
            f"data has {x.shape[1]} dimensions but centroids have {c.shape[1]}"
        )
    lists = np.empty(x.shape[0], dtype=np.int64)
    dists = np.empty(x.shape[0], dtype=np.float32)
    if x.shape[0] == 0:
        return lists, dists
    bad_row = ffi.new("int64_t *")
    bad_centroid = ffi.new("int64_t *")
    rc = lib.fv_assign_nearest(
        code,
        _ptr(c, "float *"),
        c.shape[0],
        _ptr(x, "float *"),
        x.shape[0],
        x.shape[1],
        _ptr(lists, "int64_t *"),
        _ptr(dists, "float *"),
        bad_row,
        bad_centroid,
    )
    _check_pair(rc, bad_row[0], bad_centroid[0], metric, ("data row", "centroid"))
    if code == lib.FV_NEGATIVE_INNER_PRODUCT:
        np.negative(dists, out=dists)
    return lists, dists


def kmeans(
    data: npt.ArrayLike,
    n_lists: int,
    metric: str = "euclidean",
    iterations: int = 20,
    seed: int = 0,
    sample: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """k-means of the rows of ``data`` into ``n_lists`` clusters: an IVF's lists.

    Trains on a random sample of ``sample`` rows (default: at most 256 per
    list, as faiss does; all rows when there are fewer), then assigns every
    row to its nearest centroid. Seeding is k-means++ over at most 16 rows per
    list of the training rows, followed by at most ``iterations`` Lloyd steps
    (fewer when no row changes list); an emptied list takes half of the
    largest. ``cosine`` and ``euclidean_l2`` run spherical k-means (unit-norm
    centroids).

    Returns ``(centroids, assignment)``: float32 ``(n_lists, dim)`` and int64
    ``(len(data),)``, the assignment being ``assign(data, centroids, metric)``.
    The same data, arguments and seed give the same result on a machine with
    the same instruction set (``isa()``).

    Cost: ``iterations * sample * n_lists * dim`` multiply-adds for training,
    ``len(data) * n_lists * dim`` for the final assignment.
    """
    if metric not in KMEANS_METRICS:
        raise UnknownMetricError(
            f"unknown k-means metric {metric!r}; choose one of {', '.join(KMEANS_METRICS)}"
        )
    code = _metric(metric)
    x = _as_float32(data, "data", 2)
    n, dim = x.shape
    if dim == 0:
        raise VectorError("data rows are empty vectors")
    n_lists = _whole(n_lists, "n_lists", 1)
    if n_lists > n:
        raise InvalidParameterError(
            f"n_lists ({n_lists}) is larger than the number of rows ({n}): "
            "k-means needs at least one row per list"
        )
    iterations = _whole(iterations, "iterations", 0, 2**32 - 1)
    seed = _whole(seed, "seed", 0, 2**64 - 1)
    size = min(n, ROWS_PER_LIST * n_lists) if sample is None else _whole(sample, "sample", n_lists)
    _check_finite(x, "data")
    rows = np.arange(n)
    if size < n:
        rows = np.sort(np.random.default_rng(seed).choice(n, size, replace=False))
    train = x if size >= n else np.ascontiguousarray(x[rows])
    centroids = np.empty((n_lists, dim), dtype=np.float32)
    train_assign = np.empty(train.shape[0], dtype=np.int64)
    bad_row = ffi.new("int64_t *")
    rc = lib.fv_kmeans(
        code,
        _ptr(train, "float *"),
        train.shape[0],
        dim,
        n_lists,
        iterations,
        seed,
        _ptr(centroids, "float *"),
        _ptr(train_assign, "int64_t *"),
        bad_row,
    )
    if rc == lib.FV_ZERO_NORM:
        row = int(rows[bad_row[0]])
        raise VectorError(f"{metric} k-means is undefined: data row {row} has norm 0")
    _check_pair(rc, -1, -1, metric, ("data row", "centroid"))
    if train is x:
        return centroids, train_assign
    return centroids, assign(x, centroids, metric)[0]
