"""Nearest faces to one query vector, three ways that give the same answer.

- extension: the loadable extension's distance function in ORDER BY;
- knn: the extension's facevec_knn index (contiguous chunks, SIMD scan, heap);
- relational: portable SQL over face_embeddings (the seed's design, with the
  query vector as a keyed derived table of bound parameters);
- client: fetch the blobs, rank them with facevec.top_k.

Each returns [(face_id, distance)], nearest first, ties broken by face_id, with
distance <= threshold (when one is given) and at most k rows (when k is given).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .database import Database
from .errors import KnnIndexMissingError, ModelMismatchError, UnknownStrategyError
from .models import check_metric

STRATEGIES = ("extension", "knn", "relational", "client")

_EXTENSION_FUNCTIONS = {
    "euclidean": "euclidean_distance",
    "cosine": "cosine_distance",
    "euclidean_l2": "euclidean_l2_distance",
}

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


def search(
    db: Database,
    query: np.ndarray,
    strategy: str | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    k: int | None = None,
) -> Hits:
    strategy = check_strategy(strategy or default_strategy(db))
    check_metric(distance_metric)
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, not {k}")
    query = np.ascontiguousarray(query, dtype=np.float32)
    if strategy == "extension":
        return _extension(db, query, distance_metric, threshold, k)
    if strategy == "knn":
        return _knn(db, query, distance_metric, threshold, k)
    if strategy == "relational":
        return _relational(db, query, distance_metric, threshold, k)
    return _client(db, query, distance_metric, threshold, k)


def _require_sqlite(db: Database, strategy: str) -> None:
    if not db.dialect.has_extension:
        raise UnknownStrategyError(
            f"the {strategy} strategy needs SQLite; on {db.dialect.name} use "
            "strategy='relational' or strategy='client'"
        )


def _extension(
    db: Database, query: np.ndarray, metric: str, threshold: float | None, k: int | None
) -> Hits:
    _require_sqlite(db, "extension")
    function = _EXTENSION_FUNCTIONS[metric]
    where, params = "", [query.astype("<f4").tobytes()]
    if threshold is not None:
        where = " WHERE distance <= {p}"
        params.append(float(threshold))
    limit, limit_params = db.dialect.limit(k)
    rows = db.query(
        f"SELECT id, distance FROM (SELECT id, {function}(embedding, {{p}}) AS distance"
        f" FROM face_meta) AS scored{where} ORDER BY distance, id{limit}",
        params + limit_params,
    )
    return [(int(face_id), float(distance)) for face_id, distance in rows]


def _knn(
    db: Database, query: np.ndarray, metric: str, threshold: float | None, k: int | None
) -> Hits:
    from . import knn

    _require_sqlite(db, "knn")
    if knn.status(db.conn) is None:
        raise KnnIndexMissingError(
            f"{db.name} has no knn index yet; build it with: facevec reindex --db {db.name}"
        )
    if k is None:
        k = int(db.scalar("SELECT COUNT(*) FROM face_meta"))
        if k == 0:
            return []
    return knn.search(db.conn, query, k, metric=metric, threshold=threshold)


def relational_sql(
    db: Database, query: Sequence[float], metric: str, threshold: float | None, k: int | None
) -> tuple[str, list]:
    """The relational query and its parameters; every value is bound (on SQLite,
    into a temporary table filled first).

    It yields (face_id, score): the squared distance for euclidean and
    euclidean_l2 (so that no square root is needed to filter or order), the
    distance itself for cosine.
    """
    with_clause, join_clause, params = db.dialect.target_table(db.conn, query)
    if metric == "euclidean":
        score = "SUM((e.value - t.value) * (e.value - t.value))"
        limit_value = None if threshold is None else float(threshold) ** 2
    else:
        query_norm = float(np.linalg.norm(np.asarray(query, dtype=np.float64)))
        # cosine similarity from one pass of sums; NULLIF keeps a zero vector out.
        norm = "NULLIF(SQRT(SUM(e.value * e.value)), 0)"
        cosine = f"SUM(e.value * t.value) / ({norm} * {db.dialect.placeholder})"
        params.append(query_norm)
        if metric == "cosine":
            score = f"1 - {cosine}"
            limit_value = None if threshold is None else float(threshold)
        else:  # |a/|a| - b/|b||^2 = 2 - 2 cos
            score = f"2 - 2 * {cosine}"
            limit_value = None if threshold is None else float(threshold) ** 2
    having = ""
    if limit_value is not None:
        # The score is repeated: HAVING cannot name a select alias in standard SQL.
        having = f" HAVING {score} <= {db.dialect.placeholder}"
        if metric != "euclidean":
            params.append(query_norm)
        params.append(limit_value)
    limit, limit_params = db.dialect.limit(k)
    sql = (
        f"{with_clause}SELECT e.face_id, {score} AS score"
        f" FROM face_embeddings e {join_clause}"
        f" GROUP BY e.face_id{having}"
        f" ORDER BY score, e.face_id{limit}"
    )
    return sql, params + limit_params


def _relational(
    db: Database, query: np.ndarray, metric: str, threshold: float | None, k: int | None
) -> Hits:
    # Filling a temporary target table opens a transaction: end it unless it was
    # the caller's own.
    was_in_transaction = bool(getattr(db.conn, "in_transaction", False))
    try:
        sql, params = relational_sql(db, query.tolist(), metric, threshold, k)
        cursor = db.conn.cursor()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finally:
        if not was_in_transaction and getattr(db.conn, "in_transaction", False):
            db.conn.commit()
    hits = []
    for face_id, score in rows:
        if score is None:
            continue
        distance = float(score) if metric == "cosine" else math.sqrt(max(float(score), 0.0))
        hits.append((int(face_id), distance))
    return hits


def _client(
    db: Database, query: np.ndarray, metric: str, threshold: float | None, k: int | None
) -> Hits:
    import facevec

    rows = db.query("SELECT id, embedding FROM face_meta ORDER BY id")
    if not rows:
        return []
    sizes = {len(row[1]) for row in rows}
    if len(sizes) != 1:
        raise ModelMismatchError(
            f"{db.name} holds vectors of several sizes ({sorted(sizes)} bytes): written "
            "outside facevec, they cannot be searched together"
        )
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    matrix = np.frombuffer(b"".join(bytes(row[1]) for row in rows), dtype="<f4").reshape(
        len(rows), -1
    )
    wanted = len(rows) if threshold is not None or k is None else min(k, len(rows))
    order, distances = facevec.top_k(query, matrix, wanted, metric=metric)
    hits = []
    for position, distance in zip(order.tolist(), np.asarray(distances).tolist(), strict=True):
        if threshold is not None and distance > threshold:
            break
        hits.append((int(ids[position]), float(distance)))
        if k is not None and len(hits) >= k:
            break
    return hits
