"""The statements of the facevec_knn index (csrc/knn.c): build, sync, search, status.

Each call is one SQL statement on a raw SQLite connection with the native
extension; the C code writes the index's own tables (``<table>_fvknn_*`` and
``facevec_knn_index``) inside a transaction of its own. The use case that
decides when to call what is :mod:`facevec.knn`.
"""

from __future__ import annotations

import json
from typing import Any

from ..bindings.extension import is_native


def has_functions(conn: Any) -> bool:
    """Whether ``conn`` has the native facevec_knn functions."""
    return is_native(conn)


def status(conn: Any, table: str) -> dict[str, Any] | None:
    (text,) = conn.execute("SELECT facevec_knn_status(?)", (table,)).fetchone()
    return None if text is None else json.loads(text)


def cache_size(conn: Any, size: int | None = None) -> int:
    """The process's budget of knn chunks kept in memory, in bytes (set first
    when ``size`` is given)."""
    if size is None:
        (budget,) = conn.execute("SELECT facevec_knn_cache_size()").fetchone()
    else:
        (budget,) = conn.execute("SELECT facevec_knn_cache_size(?)", (size,)).fetchone()
    return int(budget)


def cache_status(conn: Any) -> dict[str, int]:
    (text,) = conn.execute("SELECT facevec_knn_cache_status()").fetchone()
    return json.loads(text)


def change_stamp(conn: Any) -> tuple[int, int, int]:
    """What changes whenever the file may have: another connection's commit
    (``data_version``), this connection's writes, a schema change. Equal stamps:
    the index is as it was (a few microseconds, where ``status`` reads its tables)."""
    (data,) = conn.execute("PRAGMA data_version").fetchone()
    (schema,) = conn.execute("PRAGMA schema_version").fetchone()
    return int(data), int(conn.total_changes), int(schema)


def create(
    conn: Any, table: str, column: str, chunk_size: int | None, options: dict | None = None
) -> None:
    args: tuple[Any, ...] = (table, column) if chunk_size is None else (table, column, chunk_size)
    if options:
        args = (table, column, chunk_size, json.dumps(options))
    marks = ", ".join("?" * len(args))
    conn.execute(f"SELECT facevec_knn_create({marks})", args).fetchone()


def build_ivf(
    conn: Any, table: str, column: str, options: dict[str, int], centroids: bytes | None = None
) -> int:
    """Build an IVF index, a batch per transaction (an interrupted build continues
    when run again with the same options); returns the vectors indexed.
    ``centroids``: lists x dim float32 to use instead of training."""
    (done,) = conn.execute(
        "SELECT facevec_knn_build(?, ?, NULL, ?, ?)",
        (table, column, json.dumps(options), centroids),
    ).fetchone()
    return int(done)


def start_ivf(
    conn: Any, table: str, column: str, options: dict[str, Any], centroids: bytes | None = None
) -> None:
    """Train an IVF index (or find the unfinished build of the same options), to
    be filled by :func:`sync` in batches."""
    conn.execute(
        "SELECT facevec_knn_create(?, ?, NULL, ?, ?)",
        (table, column, json.dumps(options), centroids),
    ).fetchone()


def sync(conn: Any, table: str, max_rows: int | None = None) -> int:
    """Rows processed; fewer than ``max_rows`` means the index is up to date."""
    if max_rows is None:
        (done,) = conn.execute("SELECT facevec_knn_sync(?)", (table,)).fetchone()
    else:
        (done,) = conn.execute("SELECT facevec_knn_sync(?, ?)", (table, max_rows)).fetchone()
    return int(done)


def drop(conn: Any, table: str) -> bool:
    (dropped,) = conn.execute("SELECT facevec_knn_drop(?)", (table,)).fetchone()
    return bool(dropped)


def vector_count(conn: Any, table: str, column: str) -> int:
    quoted = '"' + table.replace('"', '""') + '"'
    col = '"' + column.replace('"', '""') + '"'
    return int(conn.execute(f"SELECT count({col}) FROM main.{quoted}").fetchone()[0])


def row_count(conn: Any, table: str) -> int:
    quoted = '"' + table.replace('"', '""') + '"'
    return int(conn.execute(f"SELECT count(*) FROM main.{quoted}").fetchone()[0])


def search(
    conn: Any,
    table: str,
    query: bytes | str,
    k: int,
    metric: str,
    threshold: float | None,
    nprobe: int | None = None,
) -> list[tuple[int, float]]:
    rows = conn.execute(
        "SELECT rowid, distance FROM facevec_knn(?, ?, ?, ?, ?, ?)",
        (table, query, k, metric, threshold, nprobe),
    ).fetchall()
    return [(int(rowid), float(distance)) for rowid, distance in rows]


def search_batch(
    conn: Any,
    table: str,
    queries: str,
    n_queries: int,
    k: int,
    metric: str,
    threshold: float | None,
    nprobe: int | None = None,
) -> list[list[tuple[int, float]]]:
    """``queries``: a JSON array of vectors; one pass over the index answers all."""
    results: list[list[tuple[int, float]]] = [[] for _ in range(n_queries)]
    for query_no, rowid, distance in conn.execute(
        "SELECT query_no, rowid, distance FROM facevec_knn_batch(?, ?, ?, ?, ?, ?) "
        "ORDER BY query_no, distance",
        (table, queries, k, metric, threshold, nprobe),
    ):
        results[int(query_no)].append((int(rowid), float(distance)))
    return results
