"""The queries behind the search strategies that run inside the database.

- extension: a scalar distance function of the loaded extension in ORDER BY;
- relational: portable SQL over face_embeddings, the query vector joined as a
  table keyed on dimension (each dialect writes that table its own way).

Each returns rows nearest first, ties by face id. (knn's statements are in
:mod:`facevec.storage.knn_index`; the client strategy reads
:func:`facevec.storage.faces.embeddings`.)
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import numpy as np

from . import lists
from .database import Database


def _not_in(column: str, exclude: Collection[int]) -> str:
    # Ids from facevec's own scan of the gallery, never from a caller: inline
    # integers, so no driver's limit on bound parameters applies.
    if not exclude:
        return ""
    return f"{column} NOT IN ({', '.join(str(int(i)) for i in sorted(exclude))})"


def extension_nearest(
    db: Database,
    query: bytes,
    sql_function: str,
    threshold: float | None,
    k: int | None,
    exclude: Collection[int] = (),
) -> list[tuple[int, float]]:
    where, params = "", [query]
    if threshold is not None:
        where = " WHERE distance <= {p}"
        params.append(float(threshold))
    skip = _not_in("id", exclude)
    limit, limit_params = db.dialect.limit(k)
    rows = db.query(
        f"SELECT id, distance FROM (SELECT id, {sql_function}(embedding, {{p}}) AS distance"
        f" FROM face_meta{' WHERE ' + skip if skip else ''}) AS scored{where}"
        f" ORDER BY distance, id{limit}",
        params + limit_params,
    )
    return [(int(face_id), float(distance)) for face_id, distance in rows]


def relational_sql(
    db: Database,
    query: Sequence[float],
    metric: str,
    threshold: float | None,
    k: int | None,
    probe: Sequence[int] | None = None,
    exclude: Collection[int] = (),
) -> tuple[str, list]:
    """The relational query and its parameters; every value is bound (on SQLite,
    into a temporary table filled first).

    It yields (face_id, score): the squared distance for euclidean and
    euclidean_l2 (so that no square root is needed to filter or order), the
    distance itself for cosine. With `probe`, only the faces of those IVF lists;
    faces in `exclude` are left out.
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
    source, where = "face_embeddings e", ""
    if probe is not None:
        source, where = lists.list_filter(db, probe)
        join_clause = lists.probed_join(db, join_clause)
    skip = _not_in("e.face_id", exclude)
    if skip:
        where = f"{where} AND {skip}" if where else f" WHERE {skip}"
    sql = (
        f"{with_clause}SELECT e.face_id, {score} AS score"
        f" FROM {source} {join_clause}{where}"
        f" GROUP BY e.face_id{having}"
        f" ORDER BY score, e.face_id{limit}"
    )
    return sql, params + limit_params


def relational_scores(
    db: Database,
    query: Sequence[float],
    metric: str,
    threshold: float | None,
    k: int | None,
    probe: Sequence[int] | None = None,
    exclude: Collection[int] = (),
) -> list[tuple[int, float | None]]:
    """(face_id, score) rows of the relational query; see relational_sql."""
    # Filling a temporary target table opens a transaction: end it unless it was
    # the caller's own.
    was_in_transaction = bool(getattr(db.conn, "in_transaction", False))
    try:
        sql, params = relational_sql(db, query, metric, threshold, k, probe, exclude)
        cursor = db.conn.cursor()
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    finally:
        if not was_in_transaction and getattr(db.conn, "in_transaction", False):
            db.conn.commit()
    return [(int(face_id), None if score is None else float(score)) for face_id, score in rows]
