"""Batch search with the gallery broadcast: a small gallery (a watch list) against
many queries (a day of camera frames), the queries never leaving their partitions.

The gallery is gathered on the driver, ordered by (shard, id) so that the C
kernels' tie rule (the lower row) is find's (the lower id), and broadcast. Each
task searches its own query partition against it and writes every query's
complete answer: no shuffle, no driver in the queries' path, so the number of
queries is bounded only by the cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import ModelMismatchError, VectorError
from ..vector_columns import matrix_from_arrow
from .gallery import SparkGallery
from .partition_search import top_k_many

#: Galleries up to this size are broadcast when the plan is left to facevec:
#: 256 MiB is 500,000 Dlib faces, copied once to each executor.
GALLERY_BROADCAST_BYTES = 256 << 20

# Gallery columns as the result names them.
_HIT_COLUMNS = {
    "shard": "shard",
    "source": "source",
    "id": "face_id",
    "img_name": "img_name",
    "identity": "identity",
    "face_index": "face_index",
    "facial_area_x": "target_x",
    "facial_area_y": "target_y",
    "facial_area_w": "target_w",
    "facial_area_h": "target_h",
}

RESULT_SCHEMA = (
    "rank int, shard int, source string, face_id long, img_name string, identity string,"
    " face_index int, target_x int, target_y int, target_w int, target_h int,"
    " threshold double, distance double, verified boolean"
)


def gallery_bytes(gallery: SparkGallery) -> int:
    return gallery.faces * gallery.dimensions * 4


def search_with_gallery_broadcast(
    gallery: SparkGallery,
    queries: Any,
    k: int | None,
    metric: str,
    cutoff: float | None,
    threshold: float,
) -> Any:
    """The hits of every query (a DataFrame with an embedding column), searched
    in the queries' own partitions against the broadcast gallery."""
    return gallery_searcher(gallery, queries.sparkSession, k, metric, cutoff, threshold)(queries)


def gallery_searcher(
    gallery: SparkGallery,
    spark: Any,
    k: int | None,
    metric: str,
    cutoff: float | None,
    threshold: float,
) -> Callable[[Any], Any]:
    """The gallery gathered and broadcast once, and a function giving the hits
    (a lazy DataFrame) of any DataFrame of named queries against it."""
    from pyspark.sql.types import StructType, _parse_datatype_string

    table = gallery.frame.toArrow().sort_by([("shard", "ascending"), ("id", "ascending")])
    matrix = matrix_from_arrow(table.column("embedding"))
    located = table.drop_columns(["embedding"])
    shared = spark.sparkContext.broadcast((matrix, located))
    del table, matrix, located
    result = _parse_datatype_string(RESULT_SCHEMA)
    search = _query_partition_searcher(shared, k, metric, cutoff, threshold)

    def search_queries(queries: Any) -> Any:
        query_fields = [field for field in queries.schema.fields if field.name != "embedding"]
        return queries.mapInArrow(search, StructType(query_fields + list(result.fields)))

    return search_queries


def _query_partition_searcher(
    shared: Any, k: int | None, metric: str, cutoff: float | None, threshold: float
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def search(batches: Iterator[Any]) -> Iterator[Any]:
        import pyarrow as pa

        matrix, located = shared.value
        for batch in batches:
            if batch.num_rows == 0:
                continue
            vectors = matrix_from_arrow(batch.column("embedding"), "query embedding")
            check_query_vectors(vectors, matrix.shape[1], batch)
            query, row, distance = top_k_many(vectors, matrix, k, metric, cutoff)
            if query.size == 0:
                continue
            starts = np.flatnonzero(np.r_[True, query[1:] != query[:-1]])
            rank = np.arange(query.size) - np.repeat(starts, np.diff(np.r_[starts, query.size]))
            columns = batch.drop_columns(["embedding"]).take(pa.array(query))
            arrays = dict(zip(columns.schema.names, columns.columns, strict=True))
            arrays["rank"] = pa.array(rank + 1, pa.int32())
            hits = located.take(pa.array(row))
            for name, result_name in _HIT_COLUMNS.items():
                arrays[result_name] = hits.column(name).combine_chunks()
            exact = distance.astype(np.float64)
            arrays["threshold"] = pa.array(np.full(query.size, threshold))
            arrays["distance"] = pa.array(exact)
            arrays["verified"] = pa.array(exact <= threshold)
            yield pa.RecordBatch.from_pydict(arrays)

    return search


def check_query_vectors(vectors: np.ndarray, dimensions: int, batch: Any) -> None:
    """Query vectors as find takes them: the gallery's size, finite, not all zeros."""
    if vectors.shape[1] != dimensions:
        raise ModelMismatchError(
            f"query embeddings have {vectors.shape[1]} dimensions; the gallery holds "
            f"{dimensions}-dimensional vectors"
        )
    bad = np.flatnonzero(~np.isfinite(vectors).all(axis=1) | ~vectors.any(axis=1))
    if bad.size:
        names = batch.schema.names
        query_id = batch.column("query_id")[int(bad[0])].as_py() if "query_id" in names else None
        raise VectorError(
            f"query {query_id!r} is all zeros or holds NaN or infinity ({bad.size} such queries)"
        )
