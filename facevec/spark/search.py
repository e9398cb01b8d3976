"""Batch search on Spark: many query faces against a gallery spread over partitions.

Two plans (``broadcast=``), chosen by the gallery's size unless told:

- **queries broadcast** (a large gallery): the queries are streamed through the
  driver in blocks of ``query_block_size`` (65,536 Dlib vectors are 32 MB): the
  executors number them (:mod:`.query_blocks`), and the driver fetches one block,
  broadcasts it, has every gallery partition searched against it, keeps the
  block's hits on the executors (a local checkpoint) and drops the block before
  it fetches the next. The driver's memory is one block, whatever the number of
  queries. Each task takes one gallery partition and the block, streams the
  partition's rows through the C kernels and keeps the best k hits per query
  (:mod:`.partition_search`): queries x k rows leave the task. Those candidates are
  shuffled by query, and each query keeps its k best, ordered as find orders them:
  distance, then the lower (shard, id). With several blocks the gallery is cached
  (memory, then disk) and every partition meets every block.
- **gallery broadcast** (a gallery of at most 256 MiB of vectors, e.g. a watch
  list): :mod:`.gallery_broadcast`; each query partition is answered where it is,
  without a shuffle.

Results equal ``facevec.find`` on the merged gallery: the same kernels, metrics,
thresholds and tie-breaking.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from functools import reduce
from typing import Any

from ..engine import models
from ..errors import InvalidParameterError
from ..metrics import face_metric
from ..parameters import check_k, check_threshold
from ..plan import spark_plan
from .gallery import SparkGallery
from .gallery_broadcast import (
    GALLERY_BROADCAST_BYTES,
    gallery_bytes,
    search_with_gallery_broadcast,
)
from .partition_search import PartitionTopK
from .query_blocks import QueryBlocks, number_queries

CANDIDATE_SCHEMA = (
    "shard int, source string, id long, img_name string, identity string, face_index int,"
    " facial_area_x int, facial_area_y int, facial_area_w int, facial_area_h int,"
    " query_index int, distance float"
)

#: Columns of a batch search's result after the query's own.
RESULT_COLUMNS = (
    "rank",
    "shard",
    "source",
    "face_id",
    "img_name",
    "identity",
    "face_index",
    "target_x",
    "target_y",
    "target_w",
    "target_h",
    "threshold",
    "distance",
    "verified",
    "query_index",
)

#: Queries broadcast at once: 65,536 Dlib vectors are 32 MB per executor.
QUERY_BLOCK_SIZE = 65_536


PLANS = ("auto", "queries", "gallery")


def name_queries(gallery: SparkGallery, queries: Any) -> Any:
    """The queries as a DataFrame (a pyarrow Table made one on the gallery's
    session) with a query_id (query_id, else id, else a generated unique id) and
    their other columns renamed query_<name> where a result column has the name."""
    from pyspark.sql import functions as F

    if not hasattr(queries, "sparkSession"):  # a pyarrow Table
        queries = gallery.parts[0].sparkSession.createDataFrame(queries)
    names = queries.columns
    if "embedding" not in names:
        raise InvalidParameterError(
            f"the queries need an 'embedding' column; they have {', '.join(names)}"
        )
    if "query_id" not in names:
        if "id" in names:  # a gallery's faces as queries: their ids
            queries = queries.withColumnRenamed("id", "query_id")
        else:
            queries = queries.withColumn("query_id", F.monotonically_increasing_id())
    for name in queries.columns:
        if name in RESULT_COLUMNS:
            queries = queries.withColumnRenamed(name, f"query_{name}")
    return queries


def batch_search(
    gallery: SparkGallery,
    queries: Any,
    k: int | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    similarity_search: bool = False,
    broadcast: str = "auto",
    query_block_size: int = QUERY_BLOCK_SIZE,
) -> Any:
    """The gallery's faces nearest to each query: a DataFrame, one row per hit.

    `queries`: a DataFrame (or pyarrow Table) with an ``embedding`` column
    (float32 blobs, or arrays of floats), ``query_id`` (else ``id``, else a
    generated unique id) and any other columns, which are carried into the
    result (as ``query_<name>`` where a result column has the name;
    ``queries_from_photos`` adds the photo and the face's box). As
    ``facevec.find``: hits within the threshold (deepface's for the gallery's
    model and metric unless given), at most k per query;
    ``similarity_search=True`` drops the threshold (then give k).

    `broadcast`: which side is copied to every executor. "queries": gallery
    partitions x query blocks, candidates shuffled by query (a large gallery);
    "gallery": query partitions against the whole gallery, no shuffle (a
    small gallery, e.g. a watch list, against any number of queries); "auto":
    the gallery when its vectors take at most 256 MiB, else the queries.

    Columns: the query's columns, rank (1, 2, ... per query), shard, source,
    face_id, img_name, identity, face_index, target_x/y/w/h, threshold,
    distance, verified. With broadcast="gallery" the result is lazy (the gallery
    is gathered on the driver when it is called); with "queries" the search runs
    when it is called, block by block (:func:`search_blocks`: the driver holds
    one block of queries at a time), and the result is the hits kept on the
    executors.
    """
    k, threshold, cutoff = search_parameters(
        gallery, k, distance_metric, threshold, similarity_search, broadcast, query_block_size
    )
    queries = name_queries(gallery, queries)
    if resolve_plan(gallery, broadcast) == "gallery":
        return search_with_gallery_broadcast(
            gallery, queries, k, distance_metric, cutoff, threshold
        )
    numbered = number_queries(queries, query_block_size, gallery.dimensions)
    try:
        hits = [
            block_hits.localCheckpoint()
            for _, block_hits in search_blocks(
                gallery, numbered, k, distance_metric, cutoff, threshold, range(numbered.blocks)
            )
        ]
    finally:
        numbered.release()
    return reduce(lambda a, b: a.unionByName(b), hits)


def search_parameters(
    gallery: SparkGallery,
    k: int | None,
    distance_metric: str,
    threshold: float | None,
    similarity_search: bool,
    broadcast: str,
    query_block_size: int,
) -> tuple[int | None, float, float | None]:
    """(k, threshold, cutoff) checked as find checks them: the threshold is
    deepface's for the gallery's model unless given, the cutoff None for a
    similarity search."""
    face_metric(distance_metric)
    k = check_k(k)
    threshold = check_threshold(threshold)
    if threshold is None:
        threshold = models.find_threshold(gallery.model_name, distance_metric)
    if similarity_search and k is None:
        raise InvalidParameterError("a similarity search without a threshold needs k")
    if broadcast not in PLANS:
        raise InvalidParameterError(
            f"broadcast must be one of {', '.join(PLANS)}, not {broadcast!r}"
        )
    if isinstance(query_block_size, bool) or not isinstance(query_block_size, int):
        raise InvalidParameterError(
            f"query_block_size must be a whole number, not {query_block_size!r}"
        )
    if query_block_size < 1:
        raise InvalidParameterError(f"query_block_size must be at least 1, not {query_block_size}")
    return k, float(threshold), None if similarity_search else float(threshold)


def resolve_plan(gallery: SparkGallery, broadcast: str) -> str:
    """ "queries" or "gallery": the side broadcast, chosen by the gallery's size for "auto"."""
    if broadcast == "auto":
        return spark_plan(gallery_bytes(gallery), GALLERY_BROADCAST_BYTES).strategy
    return broadcast


def search_blocks(
    gallery: SparkGallery,
    numbered: QueryBlocks,
    k: int | None,
    metric: str,
    cutoff: float | None,
    threshold: float,
    blocks: Iterable[int],
) -> Iterator[tuple[int, Any]]:
    """(block, its hits as a lazy DataFrame) for each of `blocks` of the numbered
    queries in turn: use one (write it, checkpoint it) before asking for the
    next, which drops the block's broadcast."""
    spark = gallery.parts[0].sparkSession
    frames = gallery.parts
    if numbered.blocks > 1:  # every block reads the gallery: once from its sources is enough
        frames = tuple(frame.persist() for frame in frames)
    try:
        for block in blocks:
            matrix, query_columns = numbered.fetch(block)
            shared = spark.sparkContext.broadcast(matrix)
            del matrix
            search = _partition_searcher(shared, k, metric, cutoff, 0)
            candidates = reduce(
                lambda a, b: a.unionByName(b),
                (frame.mapInArrow(search, CANDIDATE_SCHEMA) for frame in frames),
            )
            yield block, _merge(spark, candidates, query_columns, k, threshold)
            shared.destroy()
    finally:
        if numbered.blocks > 1:
            for frame in frames:
                frame.unpersist()


def _partition_searcher(
    shared: Any, k: int | None, metric: str, cutoff: float | None, offset: int
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def search(batches: Iterator[Any]) -> Iterator[Any]:
        best = PartitionTopK(shared.value, k, metric, cutoff, offset)
        for batch in batches:
            best.add(batch)
        yield from best.result()

    return search


def _merge(spark: Any, candidates: Any, query_columns: Any, k: int | None, threshold: float) -> Any:
    """The k best per query over all partitions, with the query's own columns."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    order = Window.partitionBy("query_index").orderBy("distance", "shard", "id")
    ranked = candidates.withColumn("rank", F.row_number().over(order))
    if k is not None:
        ranked = ranked.where(F.col("rank") <= k)
    queries = spark.createDataFrame(query_columns)
    query_names = [c for c in queries.columns if c != "query_index"]
    distance = F.col("distance").cast("double")
    return ranked.join(F.broadcast(queries), "query_index").select(
        *query_names,
        "rank",
        "shard",
        "source",
        F.col("id").alias("face_id"),
        "img_name",
        "identity",
        "face_index",
        F.col("facial_area_x").alias("target_x"),
        F.col("facial_area_y").alias("target_y"),
        F.col("facial_area_w").alias("target_w"),
        F.col("facial_area_h").alias("target_h"),
        F.lit(threshold).alias("threshold"),
        distance.alias("distance"),
        (distance <= F.lit(threshold)).alias("verified"),
    )
