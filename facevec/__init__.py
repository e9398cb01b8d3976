"""facevec: face recognition on a relational database.

- ``facevec.connect(path)`` opens SQLite with the distance functions
  (``euclidean_distance``, ``cosine_distance``, ...) available;
  ``facevec.load(conn)`` adds them to an open connection;
  ``facevec.loadable_path()`` is the extension for ``.load`` in other tools.
- ``facevec.distances`` / ``facevec.top_k`` / ``facevec.top_k_batch``: the same C
  kernels on numpy arrays (``top_k_batch``: many queries in one pass).
- ``facevec.index`` / ``find`` / ``verify`` / ``add`` / ``info`` / ``reindex``: photos to
  face embeddings in a database, and search (deepface is needed only to embed).
- ``facevec.train_lists`` / ``drop_lists`` / ``list_status`` / ``set_embedding_rows``:
  IVF lists on any database (find's ``nprobe``) and the blobs-only layout.
- ``facevec.identify`` / ``calibrate`` and ``facevec.people`` (cluster, name, merge,
  split, move, reject, ...): the people in a gallery.
- ``facevec.copy`` / ``export_parquet`` / ``import_parquet``: move a gallery.

A verb has the same name here and on the command line (``facevec copy``,
``facevec export-parquet``, ``facevec people list-people``, ...).

This module only gathers the verbs; each lives in the module that owns it
(see ARCHITECTURE.md).
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from ._version import __version__
from .bindings.extension import connect, load, loadable_path
from .bindings.kernels import METRICS, distances, isa, top_k, top_k_batch
from .errors import (
    DimensionMismatchError,
    ExtensionError,
    FacevecError,
    FallbackWarning,
    InvalidVectorError,
    SkippedFacesWarning,
    VectorError,
)

# The pipeline pulls in pandas (and deepface when embedding): load it on first use.
_OWNERS = {
    "index": "ingest",
    "update_paths": "ingest",
    "watch": "ingest.watch",
    "add": "ingest",
    "find": "recognize",
    "verify": "recognize",
    "info": "gallery_info",
    "reindex": "knn",
    "train_lists": "lists",
    "drop_lists": "lists",
    "list_status": "lists",
    "set_embedding_rows": "lists",
    "identify": "people.identify",
    "calibrate": "people.calibration",
    # The command line's names, for the same verbs: facevec copy / export / import.
    "copy": "transfer:copy_gallery",
    "copy_gallery": "transfer",
    "export_parquet": "transfer",
    "import_parquet": "transfer",
}


def __getattr__(name: str) -> Any:
    if name == "people":  # the people verbs: facevec.people.cluster(db), ...
        return import_module(".people", __name__)
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'facevec' has no attribute {name!r}")
    module, _, attribute = owner.partition(":")
    return getattr(import_module(f".{module}", __name__), attribute or name)


def __dir__() -> list[str]:
    # The lazy verbs too, so completion and help() find them before their first use.
    return sorted(set(globals()) | set(_OWNERS) | {"people"})


__all__ = [
    "METRICS",
    "DimensionMismatchError",
    "ExtensionError",
    "FacevecError",
    "FallbackWarning",
    "InvalidVectorError",
    "SkippedFacesWarning",
    "VectorError",
    "__version__",
    "add",
    "calibrate",
    "connect",
    "copy",
    "copy_gallery",
    "distances",
    "export_parquet",
    "find",
    "identify",
    "import_parquet",
    "index",
    "info",
    "isa",
    "load",
    "loadable_path",
    "people",
    "reindex",
    "list_status",
    "drop_lists",
    "set_embedding_rows",
    "top_k",
    "top_k_batch",
    "train_lists",
    "update_paths",
    "verify",
    "watch",
]
