"""Nearest stored faces to one query vector, four ways that give the same answer.

- extension: the loadable extension's distance function in ORDER BY (SQLite);
- knn: the extension's facevec_knn index (contiguous chunks, SIMD scan, heap);
- relational: portable SQL over face_embeddings (the classic design, with the
  query vector as a keyed table of bound parameters);
- client: fetch the blobs, rank them with the C kernels' top_k.

:func:`nearest` returns [(face_id, distance)], nearest first, ties broken by
face_id, with distance <= threshold (when one is given) and at most k rows (when
k is given).

A stored row whose distance to the query is undefined (NaN, infinity, no length
under cosine, another size: written by an older version or another program; see
:mod:`facevec.vectors`) never fails the search: every strategy leaves it out and
``Hits.skipped`` names it. Such rows are found by a scan of the gallery when a
search first trips on one, and remembered for the process.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable

import numpy as np

from . import knn, lists
from .bindings.kernels import top_k, top_k_batch
from .errors import UnknownStrategyError, VectorError
from .metrics import face_metric
from .parameters import check_k, check_nprobe, check_threshold
from .plan import plan_for
from .storage import faces, schema, search_sql
from .storage import lists as store_lists
from .storage.database import Database, driver_errors, end_failed_statement
from .vectors import Problem, blob_problems

STRATEGIES = ("extension", "knn", "relational", "client")
SQLITE_STRATEGIES = ("extension", "knn")


class Hits(list):  # type: ignore[type-arg]
    """[(face_id, distance)], nearest first; ``skipped``: {face_id: why} of the stored
    faces this search left out because their distance to the query is undefined."""

    def __init__(
        self, hits: Iterable[tuple[int, float]] = (), skipped: dict[int, str] | None = None
    ) -> None:
        super().__init__(hits)
        self.skipped: dict[int, str] = dict(skipped or {})


# db name -> (the gallery's created_at, {face id: Problem}): the rows a scan found
# that cannot be stored today. Ids are never reused, so an entry stays true for as
# long as the gallery is that gallery.
_INVALID: dict[str, tuple[str, dict[int, Problem]]] = {}
_INVALID_LOCK = threading.Lock()
_SCANNED: dict[str, str] = {}  # db name -> the faces (created_at, id span) last scanned


def check_strategy(strategy: str) -> str:
    if strategy not in STRATEGIES:
        raise UnknownStrategyError(
            f"unknown search strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}"
        )
    return strategy


def default_strategy(db: Database, queries: int = 1) -> str:
    """The strategy :mod:`facevec.plan` chooses for ``queries`` query vectors on
    this gallery (its size, knn index and IVF lists): ``plan.plan_for(db).reason``
    says why."""
    return plan_for(db, queries).strategy


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

    def run(exclude: frozenset[int]) -> list[tuple[int, float | None]]:
        if strategy == "knn" and (not exclude or knn.status(db.conn) is None):
            return knn.nearest(db, query, distance_metric, threshold, k, nprobe)
        if strategy in SQLITE_STRATEGIES:  # the index holds the rows: the exact scan instead
            return _extension(db, query, distance_metric, threshold, k, exclude)
        if strategy == "relational":
            return _relational(db, query, distance_metric, threshold, k, nprobe, exclude)
        return _client(db, query, distance_metric, threshold, k, nprobe, exclude)

    return _skipping_undefined(db, distance_metric, run)


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
    client strategy in one read of the gallery when it probes no IVF lists and
    has a k or a threshold (:func:`_client_batch`), the others one query at a time.
    None: the strategy :mod:`facevec.plan` chooses for this many queries."""
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    nprobe = check_nprobe(nprobe)
    every_list = False  # the plan's batch reads every face (exact), lists or not
    if strategy is None:
        chosen = plan_for(db, len(queries))
        strategy, every_list = chosen.strategy, chosen.batch and nprobe is None
    strategy = check_strategy(strategy)
    if strategy == "knn" and db.dialect.has_extension and len(queries) > 1:
        face_metric(distance_metric)
        if not _undefined(_known_invalid(db), distance_metric):
            try:
                found = knn.nearest_batch(
                    db, queries, distance_metric, check_threshold(threshold), check_k(k), nprobe
                )
            except _row_errors():
                end_failed_statement(db)  # each query below finds and skips the bad rows
            else:
                if all(_finite(hits) for hits in found):
                    return [Hits(hits) for hits in found]
    if strategy == "client" and len(queries) > 1:
        face_metric(distance_metric)
        k, threshold = check_k(k), check_threshold(threshold)
        bounded = k is not None or threshold is not None  # else every face, for every query
        if (
            bounded
            and (every_list or lists.probe(db, queries[0], nprobe) is None)
            and not _undefined(_known_invalid(db), distance_metric)
        ):
            try:
                batched = _client_batch(db, queries, distance_metric, threshold, k)
            except _row_errors():
                end_failed_statement(db)  # each query below finds and skips the bad rows
            else:
                if batched is not None:
                    return [Hits(hits) for hits in batched]
    return [nearest(db, q, strategy, distance_metric, threshold, k, nprobe=nprobe) for q in queries]


# Rows whose distance is undefined -------------------------------------------------


def _row_errors() -> tuple[type[BaseException], ...]:
    """What a bad stored row raises: the kernels' VectorError, a driver's error
    (facevec's SQL functions, a division by zero on a server)."""
    return (VectorError, *driver_errors())


def _finite(hits: Iterable[tuple[int, float | None]]) -> bool:
    return all(d is not None and math.isfinite(d) for _, d in hits)


def _undefined(known: dict[int, Problem], metric: str) -> frozenset[int]:
    return frozenset(i for i, problem in known.items() if problem.undefined_for(metric))


def _stamp(db: Database) -> str:
    collection = schema.get_collection(db)
    return "" if collection is None else collection.created_at


def _known_invalid(db: Database) -> dict[int, Problem]:
    entry = _INVALID.get(db.name)
    if entry is None:
        return {}
    if entry[0] != _stamp(db):  # another gallery under the same name since
        _INVALID.pop(db.name, None)
        return {}
    return entry[1]


def invalid_faces(db: Database, fresh: bool = True) -> dict[int, Problem]:
    """Every stored face whose vector could not be stored today, by id: one scan of
    the gallery's vectors, remembered for this process's searches. ``fresh=False``
    reuses the last scan while the gallery's faces (count and id span) are the same."""
    collection = schema.get_collection(db)
    stamp = "" if collection is None else collection.created_at
    span = faces.id_span(db) if collection is not None else None
    key = f"{stamp} {span}"
    entry = _INVALID.get(db.name)
    if not fresh and entry is not None and entry[0] == stamp and _SCANNED.get(db.name) == key:
        return entry[1]
    found: dict[int, Problem] = {}
    if span is not None and collection is not None:
        for rows in faces.iter_id_range(db, span[0], span[1] + 1, ("id", "embedding")):
            for problem in blob_problems([bytes(r[1]) for r in rows], collection.dimensions):
                found[int(rows[problem.row][0])] = problem
    with _INVALID_LOCK:
        _INVALID[db.name] = (stamp, found)
        _SCANNED[db.name] = key
    return found


def _skipping_undefined(
    db: Database, metric: str, run: Callable[[frozenset[int]], list[tuple[int, float | None]]]
) -> Hits:
    """``run(exclude)`` with the rows whose ``metric`` distance is undefined left out:
    those known, else (when it trips on one) those a scan finds; rows that still come
    back with no finite distance are dropped. Every left-out row is named."""
    known, scanned = _known_invalid(db), False
    excluded = _undefined(known, metric)
    try:
        found = run(excluded)
    except _row_errors():
        end_failed_statement(db)
        known, scanned = invalid_faces(db), True
        if _undefined(known, metric) == excluded:
            raise  # not a row this search can leave out
        excluded = _undefined(known, metric)
        found = run(excluded)
    if not _finite(found):
        # A row with no distance took a place among the k nearest (a NULL or NaN
        # sorts first in some databases): find the rows to leave out, run once more.
        if not scanned:
            known = invalid_faces(db)
        if _undefined(known, metric) != excluded:
            excluded = _undefined(known, metric)
            found = run(excluded)
    hits = Hits(skipped={i: known[i].reason for i in excluded})
    for face_id, distance in found:
        if distance is None or not math.isfinite(distance):
            why = known[face_id].reason if face_id in known else "has no finite distance"
            hits.skipped[face_id] = why
        else:
            hits.append((face_id, distance))
    return hits


# The strategies ---------------------------------------------------------------------


def _extension(
    db: Database,
    query: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    exclude: frozenset[int] = frozenset(),
) -> list[tuple[int, float | None]]:
    function = face_metric(metric).sql_function
    return list(
        search_sql.extension_nearest(db, faces.vector_blob(query), function, threshold, k, exclude)
    )


def _relational(
    db: Database,
    query: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
    nprobe: int | None = None,
    exclude: frozenset[int] = frozenset(),
) -> list[tuple[int, float | None]]:
    if not lists.has_embedding_rows(db):
        raise UnknownStrategyError(
            f"{db.name} keeps no face_embeddings rows (blobs only), which the relational "
            "strategy reads; use strategy='client' (with IVF lists: facevec reindex --lists N)"
        )
    probe = lists.probe(db, query, nprobe)
    hits: list[tuple[int, float | None]] = []
    scores = search_sql.relational_scores(db, query.tolist(), metric, threshold, k, probe, exclude)
    for face_id, score in scores:
        if score is None or math.isnan(score):  # no length (NULLIF), NaN values
            hits.append((face_id, None))
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
    exclude: frozenset[int] = frozenset(),
) -> list[tuple[int, float | None]]:
    probe = lists.probe(db, query, nprobe)
    ids, blobs = faces.embeddings(db) if probe is None else store_lists.list_embeddings(db, probe)
    size = 4 * len(query)  # a row of another size has no distance to the query
    other_sizes: list[tuple[int, float | None]] = [
        (i, None) for i, blob in zip(ids, blobs, strict=True) if len(blob) != size
    ]
    kept = [(i, b) for i, b in zip(ids, blobs, strict=True) if len(b) == size and i not in exclude]
    if not kept:
        return other_sizes
    ids = [i for i, _ in kept]
    matrix = np.frombuffer(b"".join(b for _, b in kept), dtype="<f4").reshape(len(ids), -1)
    wanted = len(ids) if threshold is not None or k is None else min(k, len(ids))
    order, distances = top_k(query, matrix, wanted, metric=metric)
    hits: list[tuple[int, float | None]] = []
    for position, distance in zip(order.tolist(), np.asarray(distances).tolist(), strict=True):
        if threshold is not None and distance > threshold:
            break
        hits.append((ids[position], float(distance)))
        if k is not None and len(hits) >= k:
            break
    return hits + other_sizes


#: Query rows x gallery rows one call of the batch kernel scores (bounds its memory).
CLIENT_BATCH_CELLS = 1 << 22
#: Gallery rows read at a time by the batched client strategy.
CLIENT_BATCH_ROWS = 65_536


def _client_batch(
    db: Database,
    queries: np.ndarray,
    metric: str,
    threshold: float | None,
    k: int | None,
) -> list[list[tuple[int, float]]] | None:
    """The client strategy for many queries: the gallery read once, a block of rows
    at a time, each block ranked for every query by the C batch kernel (the rows
    and float32 distances ``top_k`` gives each query); per query the best k of all
    blocks, ties by id as one whole matrix would break them. None when a stored
    row has another size (the query-by-query path names such rows)."""
    size = 4 * queries.shape[1]
    found_ids: list[list[np.ndarray]] = [[] for _ in range(len(queries))]
    found_dist: list[list[np.ndarray]] = [[] for _ in range(len(queries))]
    for ids, blob in faces.iter_embeddings(db, CLIENT_BATCH_ROWS):
        if len(blob) != size * len(ids):
            return None
        matrix = np.frombuffer(blob, dtype="<f4").reshape(len(ids), -1)
        row_ids = np.asarray(ids, dtype=np.int64)
        wanted = len(ids) if k is None else min(k, len(ids))
        block = max(1, CLIENT_BATCH_CELLS // max(wanted, 1))
        for start in range(0, len(queries), block):
            order, dist = top_k_batch(
                queries[start : start + block], matrix, wanted, metric=metric, threshold=threshold
            )
            for row in range(order.shape[0]):
                kept = order[row] >= 0
                found_ids[start + row].append(row_ids[order[row][kept]])
                found_dist[start + row].append(dist[row][kept])
        for q in range(len(queries)):  # keep each query's best k so far
            if k is not None and len(found_ids[q]) > 1:
                found_ids[q], found_dist[q] = _best(found_ids[q], found_dist[q], k)
    results = []
    for q in range(len(queries)):
        if not found_ids[q]:
            results.append([])
            continue
        ids_q, dist_q = _best(found_ids[q], found_dist[q], k)
        results.append(
            [(int(i), float(d)) for i, d in zip(ids_q[0].tolist(), dist_q[0].tolist(), strict=True)]
        )
    return results


def _best(
    ids: list[np.ndarray], dist: list[np.ndarray], k: int | None
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The k nearest of blocks given in id order: a stable sort by distance keeps
    equal distances in id order."""
    all_ids, all_dist = np.concatenate(ids), np.concatenate(dist)
    order = np.argsort(all_dist, kind="stable")
    if k is not None:
        order = order[:k]
    return [all_ids[order]], [all_dist[order]]
