"""Helpers shared by the SQL-function tests: both loading paths, vector
encodings and a float64 numpy reference with explicit error bounds."""

from __future__ import annotations

import json
import math
import warnings
from typing import Any

import numpy as np

import facevec

#: "native": the C extension on the process's one SQLite (loaded, or an auto-extension);
#: "fallback": the same C kernels registered through create_function.
PATHS = ("native", "fallback")

DISTANCE_FUNCTIONS = (
    "euclidean_distance",
    "euclidean_distance_squared",
    "cosine_distance",
    "euclidean_l2_distance",
    "inner_product",
)
VECTOR_FUNCTIONS = ("vector_dims", "vector_to_json", "vector_from_json")

#: float32 unit roundoff.
U32 = 2.0**-24


def connect(path: str, database: str = ":memory:") -> Any:
    """A connection with facevec's functions through loading path ``path``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", facevec.FallbackWarning)
        return facevec.connect(database, native=path == "native")


def blob(values: Any) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def json_text(values: Any) -> str:
    # repr of the float64 equal to each float32 reads back as that float32.
    return json.dumps([float(x) for x in np.asarray(values, dtype=np.float32)])


def encode(values: Any, encoding: str) -> bytes | str:
    return blob(values) if encoding == "blob" else json_text(values)


def reference(fn: str, a: Any, b: Any) -> tuple[float, float]:
    """(value, tolerance) of SQL function ``fn`` on float32 vectors a and b.

    The value is computed in float64 from the float32 inputs. The kernels
    accumulate in float32, so the error bound grows as sqrt(dim) times the
    scale of the sum (the measured worst case is ~3 of these units; 8 leaves
    margin without hiding a dropped element, which costs ~1/dim).
    """
    a = np.asarray(a, dtype=np.float32).astype(np.float64)
    b = np.asarray(b, dtype=np.float32).astype(np.float64)
    unit = 8 * U32 * (math.sqrt(a.size) + 1)
    if fn in ("euclidean_distance", "euclidean_distance_squared"):
        squared = float(((a - b) ** 2).sum())
        if fn == "euclidean_distance":
            value = math.sqrt(squared)
            return value, unit * value + 1e-30
        return squared, unit * squared + 1e-30
    if fn == "inner_product":
        return float(a @ b), unit * float(np.abs(a * b).sum()) + 1e-30
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if fn == "cosine_distance":
        return float(1 - (a @ b) / (na * nb)), unit
    if fn == "euclidean_l2_distance":
        return float(np.linalg.norm(a / na - b / nb)), unit
    raise ValueError(fn)


def assert_matches_reference(fn: str, got: float, a: Any, b: Any) -> None:
    value, tol = reference(fn, a, b)
    assert isinstance(got, float), f"{fn} returned {got!r}"
    assert abs(got - value) <= tol, f"{fn}: got {got!r}, numpy float64 {value!r}, tolerance {tol:g}"
