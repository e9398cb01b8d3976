"""facevec: face recognition on a relational database.

- ``facevec.connect(path)`` opens SQLite with the distance functions
  (``euclidean_distance``, ``cosine_distance``, ...) available;
  ``facevec.load(conn)`` adds them to an open connection;
  ``facevec.loadable_path()`` is the extension for ``.load`` in other tools.
- ``facevec.distances`` / ``facevec.top_k``: the same C kernels on numpy arrays.
- ``facevec.index`` / ``find`` / ``verify`` / ``add`` / ``info`` / ``reindex``: photos to
  face embeddings in a database, and search (deepface is needed only to embed).
"""

from __future__ import annotations

from typing import Any

from .bindings.extension import connect, load, loadable_path
from .bindings.kernels import METRICS, distances, isa, top_k
from .errors import (
    DimensionMismatchError,
    ExtensionError,
    FacevecError,
    FallbackWarning,
    VectorError,
)

__version__ = "0.1.0"

# The pipeline pulls in pandas (and deepface when embedding): load it on first use.
_PIPELINE = ("index", "find", "verify", "add", "info", "reindex")


def __getattr__(name: str) -> Any:
    if name in _PIPELINE:
        from . import pipeline

        return getattr(pipeline, name)
    raise AttributeError(f"module 'facevec' has no attribute {name!r}")


__all__ = [
    "METRICS",
    "DimensionMismatchError",
    "ExtensionError",
    "FacevecError",
    "FallbackWarning",
    "VectorError",
    "add",
    "connect",
    "distances",
    "find",
    "index",
    "info",
    "isa",
    "load",
    "loadable_path",
    "reindex",
    "top_k",
    "verify",
]
