"""Vectors in Arrow columns: the one conversion between facevec's float32 blobs and
the columns Parquet, Spark and DuckDB hold them in.

Arrow is the format both the Parquet export and the Spark jobs move data in, so
every conversion of a vector column lives here: a column of float32 BLOBs
(``binary``), of fixed-size float lists (what ``facevec export`` writes) or of
variable lists (what Spark writes for ``array<float>``) becomes one contiguous
float32 matrix, without a copy where the layout allows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .errors import GalleryFormatError, MissingDependencyError


def require_pyarrow() -> Any:
    try:
        import pyarrow
    except ImportError:
        raise MissingDependencyError(
            "Parquet and Spark need pyarrow: pip install 'facevec[spark]'"
        ) from None
    return pyarrow


def matrix_from_arrow(column: Any, what: str = "embedding", exact: bool = False) -> np.ndarray:
    """An (n, d) float32 matrix from a column of vectors (binary, list or fixed-size list).

    Every vector must be present and of one size; ``what`` names the column in errors.
    ``exact``: keep a list column's own float64 values (a value beyond float32's range
    stays itself for the vector check, instead of becoming infinity).
    """
    pa = require_pyarrow()
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    n = len(column)
    if column.null_count:
        raise GalleryFormatError(f"{what}: {column.null_count} of {n} vectors are missing (null)")
    kind = column.type
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        width = np.int64 if pa.types.is_large_binary(kind) else np.int32
        offsets = np.frombuffer(
            column.buffers()[1],
            dtype=width,
            count=n + 1,
            offset=column.offset * np.dtype(width).itemsize,
        )
        sizes = np.diff(offsets)
        _one_size(sizes, what, "bytes")
        if n and sizes[0] % 4:
            raise GalleryFormatError(
                f"{what}: a float32 vector blob has a length divisible by 4, found {sizes[0]}"
            )
        data = column.buffers()[2]
        start = int(offsets[0])
        flat = np.frombuffer(data, dtype="<f4", count=int(offsets[-1] - start) // 4, offset=start)
        return flat.reshape(n, -1 if n else 0).astype(np.float32, copy=False)
    if pa.types.is_fixed_size_list(kind):
        dims = kind.list_size
        values = column.flatten()
    elif pa.types.is_list(kind) or pa.types.is_large_list(kind):
        sizes = np.diff(np.asarray(column.offsets))
        _one_size(sizes, what, "values")
        dims = int(sizes[0]) if n else 0
        values = column.flatten()
    else:
        raise GalleryFormatError(
            f"{what}: vectors must be float32 blobs or lists of floats, found type {kind}"
        )
    if not pa.types.is_floating(values.type) and not pa.types.is_integer(values.type):
        raise GalleryFormatError(f"{what}: vector elements must be numbers, found {values.type}")
    if values.null_count:
        raise GalleryFormatError(f"{what}: {values.null_count} vector elements are null")
    flat = values.to_numpy(zero_copy_only=False)
    if exact and flat.dtype == np.float64:
        return np.ascontiguousarray(flat).reshape(n, dims)
    with np.errstate(over="ignore"):  # beyond float32: infinity, which the check refuses
        return np.ascontiguousarray(flat, dtype=np.float32).reshape(n, dims)


def _one_size(sizes: np.ndarray, what: str, unit: str) -> None:
    if sizes.size and (sizes.min() != sizes.max()):
        raise GalleryFormatError(
            f"{what}: vectors of several sizes ({int(sizes.min())} to {int(sizes.max())} "
            f"{unit}) cannot be searched together"
        )


def blob_column(matrix: np.ndarray) -> Any:
    """A ``binary`` column of float32 little-endian blobs (facevec's stored layout)."""
    pa = require_pyarrow()
    matrix = np.ascontiguousarray(matrix, dtype="<f4")
    n, dims = matrix.shape
    offsets = np.arange(0, (n + 1) * dims * 4, dims * 4, dtype=np.int32)
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(matrix.tobytes())]
    )


def float_list_column(matrix: np.ndarray, fixed: bool = True) -> Any:
    """A column of float32 lists: fixed-size (``float[d]``) or variable (Spark's array<float>)."""
    pa = require_pyarrow()
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    n, dims = matrix.shape
    values = pa.array(matrix.reshape(-1), type=pa.float32())
    if fixed:
        return pa.FixedSizeListArray.from_arrays(values, dims)
    offsets = pa.array(np.arange(0, (n + 1) * dims, dims, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def matrix_from_blobs(blobs: list[bytes], what: str = "embedding") -> np.ndarray:
    """An (n, d) float32 matrix from stored blobs of one size."""
    sizes = {len(blob) for blob in blobs}
    if len(sizes) > 1:
        raise GalleryFormatError(
            f"{what}: vectors of several sizes ({sorted(sizes)} bytes) cannot be stored together"
        )
    if not blobs:
        return np.empty((0, 0), dtype=np.float32)
    return np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
