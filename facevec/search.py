"""Nearest stored faces to one query vector, four ways that give the same answer.

- extension: the loadable extension's distance function in ORDER BY (SQLite);
- knn: the extension's facevec_knn index (contiguous chunks, SIMD scan, heap);
- relational: portable SQL over face_embeddings (the classic design, with the
  query vector as a keyed table of bound parameters);
- client: fetch the blobs, rank them with the C kernels' top_k.

:func:`nearest` returns [(face_id, distance)], nearest first, ties broken by
face_id, with distance <= threshold (when one is given) and at most k rows (when
k is given).
"""

from __future__ import annotations

import math

import numpy as np

from . import knn, lists
from .bindings.kernels import top_k
from .errors import ModelMismatchError, UnknownStrategyError
from .metrics import face_metric
from .parameters import check_k, check_nprobe, check_threshold
from .storage import faces, search_sql
from .storage import lists as store_lists
from .storage.database import Database

STRATEGIES = ("extension", "knn", "relational", "client")
SQLITE_STRATEGIES = ("extension", "knn")

Hits = list[tuple[int, float]]


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise UnknownStrategyError(
            f"unknown search strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    return strategy


def default_strategy(db: Database) -> str:
    """In the database where it can be: the extension on SQLite, SQL on a server."""
    return "extension" if db.dialect.has_extension else "relational"


def nearest(
    db: Database,
    query: np.ndarray,
    strategy: str | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    k: int | None = None,
    nprobe: int | None = None,
) -> Hits:
    """The k faces nearest to ``query`` by one strategy. ``nprobe``: the IVF
    lists searched, None for the default: the knn strategy reads its index's lists
    (``facevec reindex --lists`` on SQLite; the index's own default); relational
    and client read the gallery's SQL lists when it has them (``lists.default_nprobe``);
    at least the number of lists is an exact search; without lists it is ignored."""
    strategy = check_strategy(strategy or default_strategy(db))
    nprobe = check_nprobe(nprobe)
    face_metric(distance_metric)
    k = check_k(k)
    threshold = check_threshold(threshold)
    if strategy in SQLITE_STRATEGIES and not db.dialect.has_extension:
        raise UnknownStrategyError(
            f"the {strategy} strategy needs SQLite; on {db.dialect.name} use "
            "strategy='relational' or strategy='client'"
        )
    query = np.ascontiguousarray(query, dtype=np.float32)
    if strategy == "extension":
        return _extension(db, query, distance_metric, threshold, k)
    if strategy == "knn":
        return knn.nearest(db, query, distance_metric, threshold, k, nprobe)
    if strategy == "relational":
        return _relational(db, query, distance_metric, threshold, k, nprobe)
    return _client(db, query, distance_metric, threshold, k, nprobe)


def nearest_batch(
    db: Database,
    queries: np.ndarray,
    strategy: str | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    k: int | None = None,
    nprobe: int | None = None,
) -> list[Hits]:
    """:func:`nearest` for each row of ``queries`` (n x dim): the knn strategy
    answers them all in one pass over its index (``facevec_knn_batch``), the
    others one query at a time."""
    strategy = check_strategy(strategy or default_strategy(db))
    nprobe = check_nprobe(nprobe)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    if strategy == "knn" and db.dialect.has_extension and len(queries) > 1:
        face_metric(distance_metric)
        return knn.nearest_batch(
            db, queries, distance_metric, check_threshold(threshold), check_k(k), nprobe
        )
    return [nearest(db, q, strategy, distance_metric, threshold, k, nprobe=nprobe) for q in queries]


def _extension(
    db: Database, query: np.ndarray, metric: str, threshold: float | None, k: int | None
) -> Hits:
    function = face_metric(metric).sql_function
    return search_sql.extension_nearest(db, faces.vector_blob(query), function, threshold, k)


def _relational(
    db: Database,
    query: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    nprobe: int | None = None,
) -> Hits:
    if not lists.has_embedding_rows(db):
        raise UnknownStrategyError(
            f"{db.name} keeps no face_embeddings rows (blobs only), which the relational "
            "strategy reads; use strategy='client' (with IVF lists: facevec reindex --lists N)"
        )
    probe = lists.probe(db, query, nprobe)
    hits = []
    scores = search_sql.relational_scores(db, query.tolist(), metric, threshold, k, probe)
    for face_id, score in scores:
        if score is None:
            continue
        distance = score if metric == "cosine" else math.sqrt(max(score, 0.0))
        hits.append((face_id, distance))
    return hits


def _client(
    db: Database,
    query: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    nprobe: int | None = None,
) -> Hits:
    probe = lists.probe(db, query, nprobe)
    ids, blobs = faces.embeddings(db) if probe is None else store_lists.list_embeddings(db, probe)
    if not ids:
        return []
    sizes = {len(blob) for blob in blobs}
    if len(sizes) != 1:
        raise ModelMismatchError(
            f"{db.name} holds vectors of several sizes ({sorted(sizes)} bytes): written "
            "outside facevec, they cannot be searched together"
        )
    matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), -1)
    wanted = len(ids) if threshold is not None or k is None else min(k, len(ids))
    order, distances = top_k(query, matrix, wanted, metric=metric)
    hits = []
    for position, distance in zip(order.tolist(), np.asarray(distances).tolist(), strict=True):
        if threshold is not None and distance > threshold:
            break
        hits.append((ids[position], float(distance)))
        if k is not None and len(hits) >= k:
            break
    return hits
