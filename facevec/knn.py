"""Exact nearest-neighbour search inside the database (``facevec_knn``).

A thin layer over the SQL functions of the C extension (see ``csrc/knn.c``)::

    import facevec
    from facevec import knn

    conn = facevec.connect("faces.db")
    knn.build(conn, progress=lambda done, total: ...)   # once per database
    ...                                                 # ingest: insert/delete/update face_meta
    knn.sync(conn)                                      # after each ingest batch (optional:
                                                        # queries are correct without it)
    knn.search(conn, query_vector, k=10, metric="cosine", threshold=0.4)
    # -> [(face_meta.id, distance), ...] ascending

The index lives in the same file (tables ``<table>_fvknn_*`` and
``facevec_knn_index``). Triggers in plain SQL log every change of the table, so
any connection may write it; a query scores logged rows from the table itself,
so it is never stale, and ``sync`` folds them into the index to keep queries at
full speed.

It needs the native extension: a connection on the Python fallback (a
``sqlite3`` that cannot load extensions) raises :class:`KnnUnavailableError`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import KnnUnavailableError, VectorError

METRICS = ("euclidean", "euclidean_squared", "cosine", "euclidean_l2")
Progress = Callable[[int, int], None]


def available(conn: Any) -> bool:
    """Whether ``conn`` has the native ``facevec_knn`` functions."""
    if not hasattr(conn, "enable_load_extension"):
        return False
    try:
        row = conn.execute(
            "SELECT 1 FROM pragma_function_list WHERE name = 'facevec_knn_sync'"
        ).fetchone()
    except Exception:
        return False
    return row is not None


def _require(conn: Any) -> None:
    if not available(conn):
        raise KnnUnavailableError(
            "facevec_knn needs the native SQLite extension, but this connection uses the "
            "Python fallback (its sqlite3 cannot load extensions) or has not loaded facevec; "
            "open it with facevec.connect(path) after 'pip install pysqlite3-binary', or use "
            "the 'extension' search strategy"
        )


def status(conn: Any, table: str = "face_meta") -> dict[str, Any] | None:
    """The index of ``table`` as a dict (dim, vectors, pending, building, ...),
    or None if it has none."""
    _require(conn)
    (text,) = conn.execute("SELECT facevec_knn_status(?)", (table,)).fetchone()
    return None if text is None else json.loads(text)


def _count(conn: Any, table: str) -> int:
    quoted = '"' + table.replace('"', '""') + '"'
    return int(conn.execute(f"SELECT count(*) FROM {quoted}").fetchone()[0])


def sync(
    conn: Any,
    table: str = "face_meta",
    *,
    batch_size: int | None = None,
    progress: Progress | None = None,
) -> int:
    """Fold the changes logged since the last sync (and any unfinished build)
    into the index. Returns the number of rows processed.

    With ``batch_size``, works in transactions of that many rows, calling
    ``progress(done, total)`` after each; otherwise in one transaction.
    """
    _require(conn)
    if batch_size is None:
        (done,) = conn.execute("SELECT facevec_knn_sync(?)", (table,)).fetchone()
        if progress:
            progress(done, done)
        return int(done)
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, found {batch_size}")
    info = status(conn, table)
    if info is None:  # let SQL word the error
        conn.execute("SELECT facevec_knn_sync(?)", (table,)).fetchone()
        return 0
    total = int(info["pending"]) + (_count(conn, table) if info["building"] else 0)
    done = 0
    while True:
        (n,) = conn.execute("SELECT facevec_knn_sync(?, ?)", (table, batch_size)).fetchone()
        done += int(n)
        if progress:
            progress(done, max(total, done))
        if n < batch_size:
            return done


def build(
    conn: Any,
    table: str = "face_meta",
    column: str = "embedding",
    *,
    chunk_size: int | None = None,
    batch_size: int = 20000,
    progress: Progress | None = None,
) -> int:
    """(Re)build the index of ``table.column``; returns the number of vectors
    indexed. Each batch of ``batch_size`` rows is its own transaction, so an
    interrupted build resumes with :func:`sync`, and queries stay correct
    meanwhile. ``progress(done, total)`` is called after each batch.
    """
    _require(conn)
    args: tuple[Any, ...] = (table, column) if chunk_size is None else (table, column, chunk_size)
    marks = ", ".join("?" * len(args))
    conn.execute(f"SELECT facevec_knn_create({marks})", args).fetchone()
    sync(conn, table, batch_size=batch_size, progress=progress)
    info = status(conn, table)
    return int(info["vectors"]) if info else 0


def refresh(conn: Any, table: str = "face_meta", *, progress: Progress | None = None) -> int:
    """Bring ``table``'s index up to date: build it if it has none, else
    :func:`sync`. Returns the number of rows processed."""
    if status(conn, table) is None:
        return build(conn, table, progress=progress)
    return sync(conn, table, batch_size=20000, progress=progress)


def drop(conn: Any, table: str = "face_meta") -> bool:
    """Remove the index of ``table``; False if it had none."""
    _require(conn)
    (dropped,) = conn.execute("SELECT facevec_knn_drop(?)", (table,)).fetchone()
    return bool(dropped)


def _vector_bytes(query: bytes | str | Sequence[float] | np.ndarray) -> bytes | str:
    if isinstance(query, (bytes, str)):
        return query
    array = np.asarray(query)
    if array.ndim != 1 or array.size == 0:
        raise VectorError(f"query must be a non-empty 1-d vector, found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise VectorError(f"query must hold numbers, found dtype {array.dtype}")
    return array.astype("<f4").tobytes()


def search(
    conn: Any,
    query: bytes | str | Sequence[float] | np.ndarray,
    k: int = 10,
    *,
    table: str = "face_meta",
    metric: str = "euclidean",
    threshold: float | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``table`` nearest to ``query``: ``[(rowid, distance)]``
    ascending by distance (ties by rowid), only those within ``threshold`` if
    given. Distances equal the scalar ``<metric>_distance(embedding, query)``.
    """
    _require(conn)
    rows = conn.execute(
        "SELECT rowid, distance FROM facevec_knn(?, ?, ?, ?, ?)",
        (table, _vector_bytes(query), k, metric, threshold),
    ).fetchall()
    return [(int(r), float(d)) for r, d in rows]


__all__ = [
    "METRICS",
    "KnnUnavailableError",
    "available",
    "build",
    "drop",
    "refresh",
    "search",
    "status",
    "sync",
]
