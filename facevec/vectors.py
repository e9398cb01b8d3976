"""What a face vector must be to be stored: one check for every way into a gallery.

``index`` (the model's own vectors), ``add`` (and the web API's ``/api/add``),
``import --parquet`` and ``copy`` all pass their vectors through
:func:`check_vectors`, and the storage layer checks every vector it inserts once
more (:func:`check_blob`). A vector is stored only if every distance facevec
computes with it is defined:

- it has the gallery's number of dimensions;
- every value is finite (no NaN, no infinity) and within float32's range (a float64
  of 1e39 would be stored as infinity);
- its length (euclidean norm) is between 1e-15 and 1e15: an all-zero vector (or one
  close to it) has no direction, so cosine and euclidean_l2 are undefined for it,
  and distances to a longer one overflow float32. These are the bounds the batch
  kernel screens with (``NORM2_MIN``, ``NORM2_MAX`` in csrc/batch.c).

A gallery written by an older version, or by another program, may still hold such
a row: :func:`blob_problems` finds them, search skips them (``Problem.undefined_for``:
only the metrics whose distance to them is really undefined) and ``info`` names
them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from .errors import InvalidVectorError, VectorError
from .metrics import BY_NAME

FLOAT32_MAX = float(np.finfo(np.float32).max)
MIN_LENGTH = 1e-15
MAX_LENGTH = 1e15


@dataclass(frozen=True)
class Problem:
    """Why one row (0-based, of the values checked) cannot be stored."""

    row: int
    kind: str  # "dimensions", "not_finite", "beyond_float32", "zero", "short", "long"
    reason: str  # e.g. "holds NaN at dimension 3"
    # Whether the kernels, summing in float32, find no length (0 or infinity):
    # cosine and euclidean_l2 divide by it.
    no_length: bool = False

    def undefined_for(self, metric: str) -> bool:
        """Whether this row's distance under ``metric`` is undefined (NaN, an error)
        rather than merely far: the rows a search of that metric skips."""
        if self.kind in ("dimensions", "not_finite", "beyond_float32"):
            return True
        return self.no_length and BY_NAME[metric].divides_by_length


def problems(values: np.ndarray, dimensions: int | None = None) -> list[Problem]:
    """Every row of ``values`` (an n x d array of numbers, of any float width) that
    cannot be stored, in row order."""
    array = np.asarray(values)
    if array.ndim != 2:
        raise VectorError(f"vectors must be a 2-D array (n x dimensions), not shape {array.shape}")
    if dimensions is not None and array.shape[1] != dimensions:
        reason = f"has {array.shape[1]} dimensions, the gallery's vectors have {dimensions}"
        return [Problem(row, "dimensions", reason) for row in range(array.shape[0])]
    if array.dtype == np.float32 and _all_storable32(array):
        return []
    wide = array.astype(np.float64, copy=False)
    # One pass for the common case, every row storable: a NaN or an infinity makes
    # the squared length NaN or infinity, a value beyond float32's range makes it
    # larger than MAX_LENGTH**2. Any row outside the bounds gets the full look below.
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        squared = np.einsum("ij,ij->i", wide, wide)
        if bool(((squared >= MIN_LENGTH**2) & (squared <= MAX_LENGTH**2)).all()):
            return []
    finite = np.isfinite(wide)
    inside = np.abs(np.where(finite, wide, 0.0)) <= FLOAT32_MAX
    usable = np.where(finite & inside, wide, 0.0)
    squared = np.einsum("ij,ij->i", usable, usable)
    # The kernels' own view of the length: float32 squares summed in float32.
    narrow = usable.astype(np.float32)
    with np.errstate(over="ignore", under="ignore"):
        squared32 = np.einsum("ij,ij->i", narrow, narrow)
    no_length = (squared32 == 0) | ~np.isfinite(squared32)
    found = []
    bad = ~finite.all(axis=1) | ~inside.all(axis=1)
    bad |= (squared < MIN_LENGTH**2) | (squared > MAX_LENGTH**2)
    for row in np.flatnonzero(bad).tolist():
        found.append(
            _problem(row, wide[row], finite[row], inside[row], squared[row], no_length[row])
        )
    return found


def _all_storable32(array: np.ndarray) -> bool:
    """Whether every row of a float32 matrix is surely storable, from its squared
    lengths summed in float32 (no float64 copy): each at least 0.1% inside the
    bounds, far more than float32's rounding of a sum. False: look closer."""
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        squared = np.einsum("ij,ij->i", array, array)
        low, high = np.float32(MIN_LENGTH**2 * 1.001), np.float32(MAX_LENGTH**2 * 0.999)
        return bool(((squared >= low) & (squared <= high)).all())


def _problem(
    row: int,
    values: np.ndarray,
    finite: np.ndarray,
    inside: np.ndarray,
    squared: float,
    short: bool,
) -> Problem:
    if not finite.all():
        at = int(np.flatnonzero(~finite)[0])
        what = "NaN" if np.isnan(values[at]) else "infinity"
        return Problem(row, "not_finite", f"holds {what} at dimension {at}", True)
    if not inside.all():
        at = int(np.flatnonzero(~inside)[0])
        return Problem(
            row,
            "beyond_float32",
            f"holds {values[at]:.3g} at dimension {at}, beyond float32's range",
            True,
        )
    length = float(np.sqrt(squared))
    if length == 0:
        return Problem(
            row,
            "zero",
            "is all zeros, which no face has (cosine and euclidean_l2 are undefined for it)",
            True,
        )
    if length < MIN_LENGTH:
        return Problem(
            row,
            "short",
            f"has length {length:.3g}, below {MIN_LENGTH:g}: too short to have a direction",
            bool(short),
        )
    return Problem(
        row,
        "long",
        f"has length {length:.3g}, above {MAX_LENGTH:g}: distances to it overflow float32",
        bool(short),
    )


def blob_problems(blobs: Sequence[bytes], dimensions: int) -> list[Problem]:
    """:func:`problems` of stored float32 BLOBs (one per row), whose sizes may differ."""
    expected = 4 * dimensions
    found = [
        Problem(
            row,
            "dimensions",
            f"is {len(blob)} bytes, not {dimensions} float32 values ({expected} bytes)",
        )
        for row, blob in enumerate(blobs)
        if len(blob) != expected
    ]
    rows = [row for row, blob in enumerate(blobs) if len(blob) == expected]
    if rows:
        matrix = np.frombuffer(b"".join(blobs[row] for row in rows), dtype="<f4")
        for problem in problems(matrix.reshape(len(rows), dimensions)):
            found.append(
                Problem(rows[problem.row], problem.kind, problem.reason, problem.no_length)
            )
    return sorted(found, key=lambda problem: problem.row)


def check_vectors(
    values: np.ndarray, dimensions: int | None, describe: Callable[[int], str]
) -> np.ndarray:
    """``values`` as a C-contiguous float32 matrix, if every row can be stored;
    else InvalidVectorError naming the first bad row (``describe(row)``: e.g.
    "embedding 3 ('a.jpg')") and how many more there are."""
    found = problems(values, dimensions)
    if found:
        first = found[0]
        more = f" (and {len(found) - 1} more rows)" if len(found) > 1 else ""
        raise InvalidVectorError(f"{describe(first.row)} {first.reason}{more}")
    return np.ascontiguousarray(values, dtype=np.float32)


def check_blob(blob: bytes, describe: Callable[[], str]) -> None:
    """The storage layer's own check of one float32 BLOB it is about to insert (its
    dimensions are the caller's: a use case compares them with the gallery's)."""
    if len(blob) % 4 == 0 and blob:
        vector = np.frombuffer(blob, dtype="<f4").astype(np.float64)
        squared = float(np.dot(vector, vector))  # NaN or infinity if any value is
        if MIN_LENGTH**2 <= squared <= MAX_LENGTH**2:
            return
    found = blob_problems([blob], max(len(blob) // 4, 1))
    reason = found[0].reason if found else f"is {len(blob)} bytes, not float32 values"
    raise InvalidVectorError(f"{describe()} {reason}")
