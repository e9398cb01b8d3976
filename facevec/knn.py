"""Exact nearest-neighbour search inside SQLite: the ``facevec_knn`` index.

Everything about the index is here: building it, keeping it in step with the
gallery, searching it, and ``reindex``. The C code is ``csrc/knn.c``; its SQL
statements are in :mod:`facevec.storage.knn_index`. On a raw connection::

    import facevec
    from facevec import knn

    conn = facevec.connect("faces.db")
    knn.build(conn, progress=lambda done, total: ...)   # once per database
    ...                                                 # insert/delete/update face_meta
    knn.sync(conn)                                      # optional: queries are correct
                                                        # without it, and faster with it
    knn.search(conn, query_vector, k=10, metric="cosine", threshold=0.4)
    # -> [(face_meta.id, distance), ...] ascending

The index lives in the same file (tables ``<table>_fvknn_*`` and
``facevec_knn_index``). Triggers in plain SQL log every change of the table, so
any connection may write it; a query scores logged rows from the table itself,
so it is never stale, and ``sync`` folds them into the index.

The index is exact below :data:`IVF_MIN_VECTORS` vectors; past that, ``build``
makes an IVF index (``lists`` ≈ √N k-means lists; a query reads the ``nprobe``
nearest lists and ranks their rows by exact distances). ``lists=0`` forces the
exact index; ``nprobe`` is settable per query, and ``nprobe >= lists`` gives the
exact answer. ``search_batch`` answers many query vectors in one pass.

It needs the native extension: a connection on the Python fallback (a
``sqlite3`` that cannot load extensions) raises :class:`KnnUnavailableError`.
"""

from __future__ import annotations

import contextlib
import json
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from .errors import (
    InvalidParameterError,
    KnnIndexMissingError,
    KnnUnavailableError,
    UnknownStrategyError,
    VectorError,
)
from .metrics import KNN_METRICS
from .parameters import check_count, check_k, check_threshold
from .plan import IVF_FROM, KnnIndex, index_plan
from .storage import faces, knn_index, schema
from .storage.database import Database, DbArg, open_database

METRICS = KNN_METRICS
TABLE = "face_meta"
BATCH_ROWS = 20000
# Rows per transaction of an IVF build (each read and assigned, then written).
IVF_BATCH_ROWS = 131072
#: How the knn index may store its vectors (see :func:`build`).
STORAGES = ("float32", "float16", "int8")
# Below this many vectors, build() makes the exact index unless told otherwise.
IVF_MIN_VECTORS = IVF_FROM
Progress = Callable[[int, int], None]


def available(conn: Any) -> bool:
    """Whether ``conn`` has the native ``facevec_knn`` functions."""
    return knn_index.has_functions(conn)


def _require(conn: Any) -> None:
    if not available(conn):
        raise KnnUnavailableError(
            "facevec_knn needs the native SQLite extension, but this connection uses the "
            "Python fallback or has not loaded facevec; open it with facevec.connect(path) "
            "(facevec.bindings.extension.route() says how this Python reaches SQLite), or "
            "use the 'extension' search strategy"
        )


@contextlib.contextmanager
def _native_or_unavailable(conn: Any) -> Iterator[None]:
    """A search runs without checking the connection first (a check per query
    would cost as much as a small search): only when it fails is the connection
    asked whether it has the native functions, and KnnUnavailableError raised
    if not."""
    try:
        yield
    except Exception:
        _require(conn)
        raise


def status(conn: Any, table: str = TABLE) -> dict[str, Any] | None:
    """The index of ``table`` as a dict (dim, vectors, pending, building, ...),
    or None if it has none."""
    _require(conn)
    return knn_index.status(conn, table)


def cache_size(conn: Any, size: int | None = None) -> int:
    """The bytes of index chunks this process keeps in memory for its searches
    (shared by all its connections; 1 GiB unless set, 0 keeps none); ``size``
    sets it first. Returns the budget."""
    _require(conn)
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise InvalidParameterError(f"cache size must be an integer >= 0 bytes, found {size!r}")
    return knn_index.cache_size(conn, size)


def cache_status(conn: Any) -> dict[str, int]:
    """The chunk cache: ``budget``, ``bytes`` and ``chunks`` kept, and the chunk
    look-ups it served (``hits``) or not (``misses``) since the process started."""
    _require(conn)
    return knn_index.cache_status(conn)


def sync(
    conn: Any,
    table: str = TABLE,
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
        done = knn_index.sync(conn, table)
        if progress:
            progress(done, done)
        return done
    if batch_size <= 0:
        raise InvalidParameterError(f"batch_size must be positive, found {batch_size}")
    info = knn_index.status(conn, table)
    if info is None:  # let SQL word the error
        knn_index.sync(conn, table)
        return 0
    done = 0
    if info.get("build_total") is not None:  # an IVF build: its rows read, then written
        done = int(info["build_done"])
        total = int(info["build_total"]) + int(info["pending"])
    else:
        total = int(info["pending"]) + (knn_index.row_count(conn, table) if info["building"] else 0)
    while True:
        n = knn_index.sync(conn, table, batch_size)
        done += n
        finished = n < batch_size  # an IVF build's last call may also write its lists
        if progress:
            progress(max(total, done) if finished else done, max(total, done))
        if finished:
            return done


def default_lists(n_vectors: int) -> int:
    """The IVF lists ``build`` chooses for ``n_vectors``: 0 (exact) below
    :data:`IVF_MIN_VECTORS`, else about √N."""
    if n_vectors < IVF_MIN_VECTORS:
        return 0
    return max(1, round(math.sqrt(n_vectors)))


def build(
    conn: Any,
    table: str = TABLE,
    column: str = "embedding",
    *,
    chunk_size: int | None = None,
    batch_size: int | None = None,
    progress: Progress | None = None,
    lists: int | None = None,
    nprobe: int | None = None,
    storage: str = "float32",
    rerank: int | None = None,
    centroids: np.ndarray | None = None,
    dim: int | None = None,
) -> int:
    """(Re)build the index of ``table.column``; returns the number of vectors
    indexed.

    ``dim``: the vectors' dimension (a gallery's model's); None: the size most
    rows have. A row of another size is left out of an IVF index (and named), an
    error for the exact index.

    ``centroids`` (an IVF index: ``lists`` x dim): the lists' centroids, used
    instead of training k-means (the gallery's SQL lists, for one).

    ``lists``: None chooses (:func:`default_lists`), 0 is the exact index, N an
    IVF index of N k-means lists whose queries read ``nprobe`` lists by default
    (None: measured on the data). An IVF build reads the table once to train,
    then assigns and writes the rows in batches of ``batch_size`` (None:
    :data:`IVF_BATCH_ROWS`), each its own transaction: memory stays bounded, and
    an interrupted build (Ctrl-C, a killed process) continues where it stopped
    when ``build`` is called again with the same options (or with :func:`sync`);
    meanwhile queries read every row from the table (exact answers). A stored
    row whose vector is malformed, of another dimension or not finite is left
    out and named in ``status()["skipped_rows"]``. ``storage``: "float32" (as
    given), or "float16" / "int8" (per-dimension
    min/scale trained on the table) to store the chunks at 1/2 or 1/4 the size;
    a query then ranks the compressed vectors, and re-ranks its ``rerank``
    nearest (None: max(4k, 64)) by their exact float32 distances from the table,
    so the distances returned are the scalar functions' own. The exact build
    works in batches of ``batch_size`` rows, each its own
    transaction, so an interrupted build resumes with :func:`sync`, and queries
    stay correct meanwhile. ``progress(done, total)`` is called after each batch.
    """
    _require(conn)
    lists = check_count("lists", lists, 0)
    nprobe = check_count("nprobe", nprobe, 1)
    rerank = check_count("rerank", rerank, 0)
    dim = check_count("dim", dim, 1)
    if storage not in STORAGES:
        raise InvalidParameterError(
            f"storage must be one of {', '.join(STORAGES)}, found {storage!r}"
        )
    quant: dict[str, Any] = {} if storage == "float32" else {"storage": storage}
    if rerank:
        quant["rerank"] = rerank
    if dim:
        quant["dim"] = dim
    if lists is None:
        lists = default_lists(knn_index.vector_count(conn, table, column))
    if lists > 0:
        options: dict[str, Any] = {"lists": lists, **quant}
        if nprobe is not None:
            options["nprobe"] = nprobe
        if chunk_size is not None:
            raise InvalidParameterError("chunk_size is chosen from the list sizes of an IVF index")
        blob = None if centroids is None else np.asarray(centroids, "<f4").tobytes()
        knn_index.start_ivf(conn, table, column, options, blob)
        sync(conn, table, batch_size=batch_size or IVF_BATCH_ROWS, progress=progress)
        info = knn_index.status(conn, table)
        return int(info["vectors"]) if info else 0
    knn_index.create(conn, table, column, chunk_size, quant)
    sync(conn, table, batch_size=batch_size or BATCH_ROWS, progress=progress)
    info = knn_index.status(conn, table)
    return int(info["vectors"]) if info else 0


def refresh(conn: Any, table: str = TABLE, *, progress: Progress | None = None) -> int:
    """Bring ``table``'s index up to date: build it if it has none, else
    :func:`sync`. Returns the number of rows processed."""
    if status(conn, table) is None:
        return build(conn, table, progress=progress)
    return sync(conn, table, batch_size=BATCH_ROWS, progress=progress)


def drop(conn: Any, table: str = TABLE) -> bool:
    """Remove the index of ``table``; False if it had none."""
    _require(conn)
    return knn_index.drop(conn, table)


def _vector_bytes(query: bytes | str | Sequence[float] | np.ndarray) -> bytes | str:
    if isinstance(query, (bytes, str)):
        return query
    array = np.asarray(query)
    if array.ndim != 1 or array.size == 0:
        raise VectorError(f"query must be a non-empty 1-d vector, found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise VectorError(f"query must hold numbers, found dtype {array.dtype}")
    return array.astype("<f4").tobytes()


def _search_parameters(
    conn: Any, k: int | None, threshold: float | None, nprobe: int | None
) -> tuple[int, float | None, int | None]:
    """The checked k, threshold and nprobe of a search."""
    k = check_k(k)
    if k is None:
        raise InvalidParameterError("k must be a whole number, not None")
    return k, check_threshold(threshold), check_count("nprobe", nprobe, 1)


def search(
    conn: Any,
    query: bytes | str | Sequence[float] | np.ndarray,
    k: int = 10,
    *,
    table: str = TABLE,
    metric: str = "euclidean",
    threshold: float | None = None,
    nprobe: int | None = None,
) -> list[tuple[int, float]]:
    """The ``k`` rows of ``table`` nearest to ``query``: ``[(rowid, distance)]``
    ascending by distance (ties by rowid), only those within ``threshold`` if
    given. Distances equal the scalar ``<metric>_distance(embedding, query)``.
    On an IVF index, ``nprobe`` lists are read (None: the index's default).
    """
    k, threshold, nprobe = _search_parameters(conn, k, threshold, nprobe)
    with _native_or_unavailable(conn):
        return knn_index.search(conn, table, _vector_bytes(query), k, metric, threshold, nprobe)


def search_batch(
    conn: Any,
    queries: Sequence[Sequence[float]] | np.ndarray,
    k: int = 10,
    *,
    table: str = TABLE,
    metric: str = "euclidean",
    threshold: float | None = None,
    nprobe: int | None = None,
) -> list[list[tuple[int, float]]]:
    """:func:`search` for each row of ``queries`` (an n x dim array), in one
    pass over the index: one list of ``(rowid, distance)`` per query, each
    exactly what :func:`search` gives for that query."""
    k, threshold, nprobe = _search_parameters(conn, k, threshold, nprobe)
    array = np.asarray(queries)
    if array.ndim != 2 or array.shape[0] == 0 or array.shape[1] == 0:
        raise VectorError(f"queries must be a non-empty n x dim array, found shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number):
        raise VectorError(f"queries must hold numbers, found dtype {array.dtype}")
    # float32 -> float (exact) -> shortest repr: C reads back the same float32.
    text = json.dumps(array.astype(np.float32).astype(np.float64).tolist())
    with _native_or_unavailable(conn):
        return knn_index.search_batch(conn, table, text, len(array), k, metric, threshold, nprobe)


# The gallery's index, as the pipeline uses it ---------------------------------


def _gallery_k(db: Database, k: int | None) -> int:
    """k for a search of the gallery's index (None: every face); the index must exist."""
    if status(db.conn) is None:
        raise KnnIndexMissingError(
            f"{db.name} has no knn index yet; build it with: facevec reindex --db {db.name}"
        )
    return faces.count(db) if k is None else k


def nearest(
    db: Database,
    query: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    nprobe: int | None = None,
) -> list[tuple[int, float]]:
    """The knn search strategy on a gallery (see :func:`facevec.search.nearest`)."""
    k = _gallery_k(db, k)
    if k == 0:
        return []
    return search(db.conn, query, k, metric=metric, threshold=threshold, nprobe=nprobe)


def nearest_batch(
    db: Database,
    queries: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    nprobe: int | None = None,
) -> list[list[tuple[int, float]]]:
    """:func:`nearest` for each row of ``queries``, in one pass over the index."""
    k = _gallery_k(db, k)
    if k == 0:
        return [[] for _ in range(len(queries))]
    return search_batch(db.conn, queries, k, metric=metric, threshold=threshold, nprobe=nprobe)


def refresh_gallery_index(db: Database, progress: bool = False) -> None:
    """Keep a gallery's knn index in step with its faces, after an ingest or a copy.

    Without the native extension (Python fallback) there is no index to keep: the
    other strategies need none.
    """
    if not db.dialect.has_extension or not available(db.conn):
        return
    info = status(db.conn)
    if info is not None and not info["building"]:
        rows = knn_index.vector_count(db.conn, TABLE, "embedding")
        step = index_plan(rows, KnnIndex.from_status(info))
        if step.action == "rebuild":
            with progress_bar(progress) as advance:
                build(
                    db.conn,
                    progress=advance,
                    lists=step.lists,
                    storage=info.get("storage") or "float32",
                    dim=_gallery_dim(db),
                )
            return
    work = info is None or info["pending"] > 0 or info["building"]
    with progress_bar(progress and bool(work)) as advance:
        if info is None:
            build(db.conn, progress=advance, dim=_gallery_dim(db))
        else:
            refresh(db.conn, progress=advance)


def _gallery_dim(db: Database) -> int | None:
    """The dimension of the gallery's model (None before its first face)."""
    collection = schema.get_collection(db)
    return collection.dimensions if collection is not None else None


def reindex(
    db: DbArg, progress: bool = True, lists: int | None = None, storage: str | None = None
) -> int:
    """(Re)build the knn index of a SQLite gallery (the knn strategy), with a
    progress bar; returns the number of faces indexed. ``index`` keeps the index
    current by itself: this is for databases made otherwise, to reclaim the
    space of deleted faces, or to retrain an IVF index (``facevec_knn_status``
    says when that helps). ``lists``: None keeps an IVF index IVF (√N lists)
    and otherwise chooses by size (:func:`default_lists`); 0 builds the exact
    index; N an IVF index of N lists. ``storage`` (float32, float16, int8; None
    keeps the index's) as in :func:`build`."""
    with open_database(db, create=False) as database:
        if not database.dialect.has_extension:
            raise UnknownStrategyError(
                f"the knn index lives in SQLite; {database.name} is {database.dialect.name}, "
                "where find uses strategy 'relational' or 'client'"
            )
        lists = check_count("lists", lists, 0)
        info = None
        if (lists is None or storage is None) and available(database.conn):
            try:
                info = status(database.conn)
            except Exception:  # a damaged index: reindex is how it is mended
                info = None
        if storage is None:
            storage = info.get("storage", "float32") if info else "float32"
        if lists is None and info is not None:
            if info.get("lists", 0) > 0:
                rows = knn_index.vector_count(database.conn, TABLE, "embedding")
                lists = max(1, round(math.sqrt(rows)))
        # The gallery's SQL lists of as many lists (reindex --lists trains them
        # first): the same k-means, not a second one.
        from .lists import shared_centroids

        centroids = shared_centroids(database, lists) if lists else None
        with progress_bar(progress) as advance:
            faces = build(
                database.conn,
                progress=advance,
                lists=lists,
                storage=storage,
                centroids=centroids,
                dim=_gallery_dim(database),
            )
        skipped = (status(database.conn) or {}).get("skipped") or 0
        if skipped:
            named = status(database.conn)["skipped_rows"]
            warnings.warn(
                f"the knn index left out {skipped} face(s) whose embedding cannot be read, "
                + "; ".join(f"{r['reason']}" for r in named[:3]),
                stacklevel=2,
            )
        return faces


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Progress]:
    """A tqdm bar for knn builds and syncs, as the (done, total) callback they take."""
    from tqdm import tqdm

    with tqdm(total=0, unit="face", desc="knn index", disable=not enabled) as bar:

        def advance(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        yield advance


__all__ = [
    "METRICS",
    "KnnUnavailableError",
    "available",
    "build",
    "default_lists",
    "drop",
    "refresh",
    "reindex",
    "search",
    "search_batch",
    "status",
    "sync",
]
