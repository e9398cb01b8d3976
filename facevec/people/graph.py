"""The k-nearest-neighbour graph of a set of faces, from facevec's C kernels.

Exact: every query face is compared with every stored face (O(q·n·d) for q query
faces among n) by ``top_k_batch``, which ranks a batch of queries in one pass over
the matrix and returns, bit for bit, what ``top_k`` (the kernel behind every
search strategy) returns for each. The cutoff is applied in C. Two threads take
alternate batches: the kernel runs without the GIL.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ..bindings.kernels import top_k_batch

# Queries per kernel call: enough to share each pass over the matrix, few enough
# that the progress bar moves and Ctrl-C is heard.
QUERY_BATCH = 2048


@dataclass(frozen=True)
class Graph:
    """Directed edges query -> neighbour (row numbers into the matrix), with distance."""

    source: np.ndarray  # int64
    target: np.ndarray  # int64
    distance: np.ndarray  # float32

    def __len__(self) -> int:
        return int(self.source.shape[0])


def _threads() -> int:
    return max(1, min(2, os.cpu_count() or 1))


def nearest_rows(
    queries: np.ndarray,
    matrix: np.ndarray,
    k: int,
    cutoff: float | None,
    metric: str = "euclidean",
) -> tuple[np.ndarray, np.ndarray]:
    """``top_k_batch(queries, matrix, k, metric, cutoff)`` (rows -1 past the last
    within ``cutoff``), in batches of QUERY_BATCH shared by two threads."""
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    k = min(k, matrix.shape[0])
    index = np.full((queries.shape[0], k), -1, dtype=np.int64)
    distance = np.full((queries.shape[0], k), np.inf, dtype=np.float32)
    if k < 1 or queries.shape[0] == 0:
        return index, distance

    def rank(start: int) -> None:
        stop = start + QUERY_BATCH
        index[start:stop], distance[start:stop] = top_k_batch(
            queries[start:stop], matrix, k, metric, cutoff
        )

    with ThreadPoolExecutor(_threads()) as pool:
        list(pool.map(rank, range(0, queries.shape[0], QUERY_BATCH)))
    return index, distance


def knn_graph(
    matrix: np.ndarray,
    queries: np.ndarray,
    k: int,
    cutoff: float,
    metric: str = "euclidean",
    progress: Callable[[int], None] | None = None,
) -> Graph:
    """Edges from each row in ``queries`` to its ``k`` nearest other rows of
    ``matrix`` within ``cutoff``; ties go to the lower row number, as in top_k.

    ``progress(queries)`` is called after each batch with the queries it covered.
    """
    matrix = np.ascontiguousarray(matrix, dtype=np.float32)
    queries = np.asarray(queries, dtype=np.int64)
    n = matrix.shape[0]
    empty = Graph(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.float32))
    if n < 2 or queries.size == 0 or k < 1:
        return empty
    k = min(k, n - 1)
    threshold = None if not np.isfinite(cutoff) else float(cutoff)

    def rank(batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # k + 1: a query finds itself (or an identical row) among its nearest.
        index, distance = top_k_batch(matrix[batch], matrix, k + 1, metric, threshold)
        keep = (index >= 0) & (index != batch[:, None])
        # The first k rows kept in each line (rows are nearest first).
        keep &= np.cumsum(keep, axis=1) <= k
        source = np.broadcast_to(batch[:, None], index.shape)[keep]
        return source, index[keep], distance[keep]

    batches = [queries[i : i + QUERY_BATCH] for i in range(0, queries.size, QUERY_BATCH)]
    threads = _threads()
    parts = []
    with ThreadPoolExecutor(threads) as pool:
        # One batch per thread at a time, so that Ctrl-C waits for these only.
        for first in range(0, len(batches), threads):
            window = batches[first : first + threads]
            parts.extend(pool.map(rank, window))
            if progress is not None:
                progress(int(sum(batch.size for batch in window)))
    if not parts:
        return empty
    return Graph(
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]).astype(np.float32),
    )
