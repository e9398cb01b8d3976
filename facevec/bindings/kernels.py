"""Distances and exact top-k over numpy arrays, through facevec's C kernels.

This is the client-side search path: the same SIMD code as the SQL functions,
called on a matrix already in memory.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from ..errors import DimensionMismatchError, VectorError
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise VectorError(f"k must be an integer, found {type(k).__name__}")
    if k < 1:
        raise VectorError(f"k must be at least 1, found {k}")
    q, m = _prepare(query, matrix)
    k = min(int(k), m.shape[0])
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
