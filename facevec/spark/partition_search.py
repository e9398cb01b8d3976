"""What one Spark task does: the exact top-k of every query over one gallery
partition, with facevec's C kernels, kept small as the partition streams by.

Pure numpy and pyarrow, no Spark: the same code is unit-tested on its own and
run inside ``mapInArrow`` on the executors.

The order of hits is find's: distance ascending, then the lower (shard, id).
Each partition keeps at most k candidates per query, so what leaves a task is
queries x k rows, whatever the partition's size.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..bindings.kernels import top_k_batch
from ..vector_columns import matrix_from_arrow

#: Rows per call of the kernel when k is given: the kernel tiles them for the cache
#: itself, so a whole Arrow batch goes in at once.
BLOCK_ROWS = 1 << 16
#: Without k, a block's answer is dense (queries x rows): at most this many entries.
DENSE_ENTRIES = 1 << 22


def block_top_k(
    queries: np.ndarray, rows: np.ndarray, k: int, metric: str, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (queries, min(k, rows)): top_k per query, only
    rows within `threshold` (compared as double), padded with index -1 and
    distance +inf; one pass over the rows for the whole batch of queries."""
    return top_k_batch(queries, rows, k, metric=metric, threshold=threshold)


def top_k_many(
    queries: np.ndarray, matrix: np.ndarray, k: int | None, metric: str, threshold: float | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every query's nearest rows of `matrix` within `threshold` (k of them, or
    all when k is None), exactly as facevec.top_k ranks them per query.

    Returns (query, row, distance) arrays, one entry per hit, ordered by query,
    then distance, then row.
    """
    n_queries, n_rows = queries.shape[0], matrix.shape[0]
    if n_queries == 0 or n_rows == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32)
    block = BLOCK_ROWS
    if k is None:
        block = max(1, min(block, DENSE_ENTRIES // n_queries))
    width = n_rows if k is None else min(k, n_rows)
    kept_row = np.full((n_queries, 0), -1, dtype=np.int64)
    kept_distance = np.full((n_queries, 0), np.inf, dtype=np.float32)
    parts = []
    for first in range(0, n_rows, block):
        rows = matrix[first : first + block]
        found_row, found_distance = block_top_k(queries, rows, width, metric, threshold)
        found_row[found_row >= 0] += first
        if k is None:  # every hit counts: keep the block's as they are
            parts.append(_sparse(found_row, found_distance))
            continue
        # Earlier blocks hold lower rows: a stable sort on distance keeps ties by row.
        merged_row = np.concatenate([kept_row, found_row], axis=1)
        merged_distance = np.concatenate([kept_distance, found_distance], axis=1)
        order = np.argsort(merged_distance, axis=1, kind="stable")[:, :width]
        kept_row = np.take_along_axis(merged_row, order, 1)
        kept_distance = np.take_along_axis(merged_distance, order, 1)
    if k is not None:
        return _sparse(kept_row, kept_distance)
    query, row, distance = (np.concatenate(column) for column in zip(*parts, strict=True))
    order = np.lexsort((row, distance, query))
    return query[order], row[order], distance[order]


def _sparse(rows: np.ndarray, distances: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    query, slot = np.nonzero(rows >= 0)
    return query, rows[query, slot], distances[query, slot]


class PartitionTopK:
    """The best k hits per query seen so far in one partition, with the gallery
    columns of each hit (everything but the embedding)."""

    def __init__(
        self,
        queries: np.ndarray,
        k: int | None,
        metric: str,
        threshold: float | None,
        query_offset: int = 0,
    ) -> None:
        self.queries = queries
        self.k, self.metric, self.threshold = k, metric, threshold
        self.query_offset = query_offset
        self.kept: Any = None  # pyarrow Table of hits
        self.pending: list[Any] = []  # batches not scored yet
        self.pending_rows = 0

    def add(self, batch: Any) -> None:
        """Take a pyarrow RecordBatch of gallery rows (columns shard, id, embedding, ...).

        Batches are scored BLOCK_ROWS at a time: one kernel call and one merge per
        block rather than per Arrow batch, since the merge's cost is per query.
        """
        if batch.num_rows == 0:
            return
        self.pending.append(batch)
        self.pending_rows += batch.num_rows
        if self.pending_rows >= BLOCK_ROWS:
            self._score()

    def _score(self) -> None:
        import pyarrow as pa

        if not self.pending:
            return
        block = pa.Table.from_batches(self.pending).combine_chunks()
        self.pending, self.pending_rows = [], 0
        matrix = matrix_from_arrow(block.column("embedding"))
        query, rows, distances = top_k_many(
            self.queries, matrix, self.k, self.metric, self.threshold
        )
        hits = block.drop_columns(["embedding"]).take(pa.array(rows))
        hits = hits.append_column(
            "query_index", pa.array((query + self.query_offset).astype(np.int32))
        ).append_column("distance", pa.array(distances, pa.float32()))
        self.kept = hits if self.kept is None else pa.concat_tables([self.kept, hits])
        if self.k is not None:
            self.kept = best_per_query(self.kept, self.k)

    def result(self) -> list[Any]:
        """The partition's hits as record batches (none when nothing was within reach)."""
        self._score()
        if self.kept is None:
            return []
        return self.kept.combine_chunks().to_batches()


def best_per_query(table: Any, k: int) -> Any:
    """The first k rows per query_index, ordered by (distance, shard, id)."""
    import pyarrow as pa

    query = table.column("query_index").to_numpy()
    order = np.lexsort(
        (
            table.column("id").to_numpy(),
            table.column("shard").to_numpy(),
            table.column("distance").to_numpy(),
            query,
        )
    )
    ordered = query[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    rank = np.arange(ordered.size) - np.repeat(starts, np.diff(np.r_[starts, ordered.size]))
    return table.take(pa.array(order[rank < k]))
