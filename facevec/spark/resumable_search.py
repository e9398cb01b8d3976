"""A batch search written to Parquet block by block: progress, and a resume.

The queries are numbered on the executors (:mod:`.query_blocks`) and searched a
block at a time, with either plan of :mod:`.search`; each block's hits are
written by Spark to a staging folder and committed into the output folder
(:mod:`.block_output`) before the next block starts. Run again with the same
queries, gallery and parameters, an interrupted search (Ctrl-C, a driver killed,
a job failed) searches only the blocks not committed; the blocks hold the same
queries in both runs, so the result is the uninterrupted run's.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from .block_output import open_output
from .gallery import SparkGallery
from .gallery_broadcast import gallery_searcher
from .progress import BlockProgress
from .query_blocks import QueryBlocks, number_queries
from .search import (
    QUERY_BLOCK_SIZE,
    name_queries,
    resolve_plan,
    search_blocks,
    search_parameters,
)


def search_to_parquet(
    gallery: SparkGallery,
    queries: Any,
    out: str | os.PathLike[str],
    k: int | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    similarity_search: bool = False,
    broadcast: str = "auto",
    query_block_size: int = QUERY_BLOCK_SIZE,
    overwrite: bool = False,
    progress: bool = True,
    query_source: str | None = None,
) -> dict[str, Any]:
    """:func:`.search.batch_search`'s hits written to the Parquet folder `out`, a
    block of `query_block_size` queries at a time, resumable.

    `out` new: created. `out` holding an unfinished search of the same queries,
    gallery and parameters: resumed, its committed blocks kept. Anything else
    (a finished search, other parameters, other files) raises
    OutputExistsError, unless `overwrite`, which removes it first.
    `query_source` names the queries in the manifest (default: the files Spark
    read them from); with the number of queries and their columns, it is what
    a resume must find the same. `progress`: a tqdm bar of queries done, with
    the blocks, queries per second and the time left.

    Returns {"queries", "hits", "blocks", "resumed" (blocks found done), "out"}.
    """
    k, threshold, cutoff = search_parameters(
        gallery, k, distance_metric, threshold, similarity_search, broadcast, query_block_size
    )
    spark = gallery.parts[0].sparkSession
    queries = name_queries(gallery, queries)
    plan = resolve_plan(gallery, broadcast)
    identity = {
        "queries": query_source if query_source is not None else _input_files(queries),
        "query_columns": queries.schema.simpleString(),
        "gallery": [source.name for source in gallery.sources],
        "faces": gallery.faces,
        "model": gallery.model_name,
        "dimensions": gallery.dimensions,
        "k": k,
        "metric": distance_metric,
        "threshold": threshold,
        "similarity_search": similarity_search,
        "plan": plan,
        "query_block_size": query_block_size,
    }
    output = open_output(os.fspath(out), identity, overwrite)
    numbered = number_queries(queries, query_block_size, gallery.dimensions)
    try:
        output.plan(numbered.blocks, {"query_count": numbered.count})
        todo = output.todo()
        done = numbered.count - sum(numbered.queries_in(block) for block in todo)
        progress_bar = BlockProgress(
            spark, numbered.count, done, numbered.blocks, len(output.done), progress
        )
        with progress_bar:
            blocks = _block_hits(
                gallery, numbered, plan, todo, k, distance_metric, cutoff, threshold
            )
            for block, hits in blocks:
                hits.write.mode("overwrite").parquet(output.staging(block))
                output.commit(block)
                progress_bar.block_done(numbered.queries_in(block))
        output.finish()
    finally:
        numbered.release()
    return {
        "queries": numbered.count,
        "hits": output.hits,
        "blocks": numbered.blocks,
        "resumed": output.resumed,
        "out": output.path,
    }


def _block_hits(
    gallery: SparkGallery,
    numbered: QueryBlocks,
    plan: str,
    todo: list[int],
    k: int | None,
    metric: str,
    cutoff: float | None,
    threshold: float,
) -> Iterator[tuple[int, Any]]:
    if plan == "queries":
        yield from search_blocks(gallery, numbered, k, metric, cutoff, threshold, todo)
        return
    if not todo:
        return
    search = gallery_searcher(gallery, gallery.parts[0].sparkSession, k, metric, cutoff, threshold)
    for block in todo:
        yield block, search(numbered.frame_of(block))


def _input_files(queries: Any) -> list[str] | None:
    try:
        return sorted(queries.inputFiles()) or None
    except Exception:  # a frame Spark cannot list files for (e.g. made in Python)
        return None
