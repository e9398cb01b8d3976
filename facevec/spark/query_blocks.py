"""Queries in numbered blocks, so the driver holds one block at a time.

The executors number the queries 0, 1, 2, ... in their partitions' order (each
task counts its rows, the driver adds up one number per partition, each task then
numbers its own rows: what ``zipWithIndex`` does), and keep them cached
(memory, then disk). Block b is the queries numbered b x size to (b + 1) x size
- 1: the driver fetches it alone (:func:`QueryBlocks.fetch`), as Arrow, and
never more than one block's vectors.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..vector_columns import matrix_from_arrow
from .gallery_broadcast import check_query_vectors

#: The executors' number of each query, in the cached queries.
NUMBER = "query_number"


@dataclass
class QueryBlocks:
    """Named queries cached on the executors with their number; see the module docstring."""

    frame: Any  # the queries and NUMBER, persisted
    count: int
    size: int
    dimensions: int

    @property
    def blocks(self) -> int:
        return max(1, math.ceil(self.count / self.size))

    def queries_in(self, block: int) -> int:
        """How many queries block holds (the last one may hold fewer)."""
        return max(0, min(self.size, self.count - block * self.size))

    def frame_of(self, block: int) -> Any:
        """One block's queries as a DataFrame, left on the executors (the cached
        batches outside the block's numbers are skipped by their statistics)."""
        from pyspark.sql import functions as F

        first = block * self.size
        wanted = (F.col(NUMBER) >= F.lit(first)) & (F.col(NUMBER) < F.lit(first + self.size))
        return self.frame.where(wanted).drop(NUMBER)

    def fetch(self, block: int) -> tuple[np.ndarray, Any]:
        """(matrix, pyarrow table of the other query columns plus query_index, the
        position in the block) of one block, checked as find checks a query."""
        import pyarrow as pa
        from pyspark.sql import functions as F

        first = block * self.size
        wanted = self.frame.where(
            (F.col(NUMBER) >= F.lit(first)) & (F.col(NUMBER) < F.lit(first + self.size))
        )
        table = wanted.toArrow().sort_by(NUMBER)
        matrix = matrix_from_arrow(table.column("embedding"), "query embedding")
        if len(table):
            check_query_vectors(matrix, self.dimensions, table)
        others = table.drop_columns(["embedding", NUMBER])
        index = table.column(NUMBER).to_numpy() - first
        return matrix, others.append_column("query_index", pa.array(index.astype(np.int32)))

    def release(self) -> None:
        self.frame.unpersist()


def number_queries(queries: Any, size: int, dimensions: int) -> QueryBlocks:
    """The queries numbered on the executors and cached; the driver learns only
    how many each partition holds."""
    from pyspark import StorageLevel
    from pyspark.sql.types import LongType, StructField, StructType

    cached = queries.persist(StorageLevel.MEMORY_AND_DISK)
    counted = cached.mapInArrow(_count_rows, "partition int, rows long").collect()
    rows = dict.fromkeys(range(cached.rdd.getNumPartitions()), 0)
    for row in counted:
        rows[row["partition"]] += row["rows"]
    starts, total = {}, 0
    for partition in sorted(rows):
        starts[partition], total = total, total + rows[partition]
    schema = StructType(list(cached.schema.fields) + [StructField(NUMBER, LongType(), False)])
    numbered = cached.mapInArrow(_numberer(starts), schema).persist(StorageLevel.MEMORY_AND_DISK)
    numbered.count()  # cached: the blocks are read from here, the queries computed once
    cached.unpersist()
    return QueryBlocks(numbered, total, size, dimensions)


def _count_rows(batches: Iterator[Any]) -> Iterator[Any]:
    import pyarrow as pa
    from pyspark import TaskContext

    rows = sum(batch.num_rows for batch in batches)
    partition = TaskContext.get().partitionId()
    yield pa.RecordBatch.from_pydict(
        {"partition": pa.array([partition], pa.int32()), "rows": pa.array([rows], pa.int64())}
    )


def _numberer(starts: dict[int, int]) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def number(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa
        from pyspark import TaskContext

        next_number = starts[TaskContext.get().partitionId()]
        for batch in batches:
            numbers = np.arange(next_number, next_number + batch.num_rows, dtype=np.int64)
            next_number += batch.num_rows
            yield batch.append_column(NUMBER, pa.array(numbers))

    return number
