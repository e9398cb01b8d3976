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

from ..bindings.kernels import top_k
from ..vector_columns import matrix_from_arrow


def top_k_many(
    queries: np.ndarray, matrix: np.ndarray, k: int | None, metric: str, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    """(indices, distances), each (queries, width): every query's nearest rows of
    `matrix`, nearest first, ties by the lower row, only rows within `threshold`.

    width is k (all rows when k is None); unused entries hold index -1 and
    distance +inf. Exactly facevec.top_k per query.
    """
    n_queries, n_rows = queries.shape[0], matrix.shape[0]
    width = n_rows if k is None else min(k, n_rows)
    indices = np.full((n_queries, width), -1, dtype=np.int64)
    distances = np.full((n_queries, width), np.inf, dtype=np.float32)
    if width == 0:
        return indices, distances
    for position in range(n_queries):
        found, dist = top_k(queries[position], matrix, width, metric=metric)
        if threshold is not None:
            # Compared as double, like SQL's distance <= ?: numpy would round the
            # threshold to float32 otherwise.
            keep = int(np.count_nonzero(dist.astype(np.float64) <= threshold))
            found, dist = found[:keep], dist[:keep]
        indices[position, : found.size] = found
        distances[position, : found.size] = dist
    return indices, distances


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

    def add(self, batch: Any) -> None:
        """Score a pyarrow RecordBatch of gallery rows (with columns shard, id, embedding)."""
        import pyarrow as pa

        if batch.num_rows == 0:
            return
        matrix = matrix_from_arrow(batch.column("embedding"))
        indices, distances = top_k_many(self.queries, matrix, self.k, self.metric, self.threshold)
        query, slot = np.nonzero(indices >= 0)
        rows = indices[query, slot]
        hits = batch.drop_columns(["embedding"]).take(pa.array(rows))
        hits = hits.append_column(
            "query_index", pa.array((query + self.query_offset).astype(np.int32))
        ).append_column("distance", pa.array(distances[query, slot]))
        table = pa.Table.from_batches([hits])
        self.kept = table if self.kept is None else pa.concat_tables([self.kept, table])
        if self.k is not None:
            self.kept = best_per_query(self.kept, self.k)

    def result(self) -> list[Any]:
        """The partition's hits as record batches (none when nothing was within reach)."""
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
