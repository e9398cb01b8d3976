"""Query faces for a batch search: vectors from Parquet, or photos embedded on
the executors (the deepface extra must be installed on every node)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from ..errors import (
    DatabaseNotFoundError,
    FolderNotFoundError,
    GalleryFormatError,
    NoFaceError,
    NotAnImageError,
)
from ..ingest.walk import Walk
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from ..vector_columns import blob_column, require_pyarrow

PHOTO_QUERY_SCHEMA = (
    "query_id string, query_img_name string, query_face_index int,"
    " source_x int, source_y int, source_w int, source_h int, embedding binary"
)


def queries_from_parquet(spark: Any, path: str | os.PathLike[str]) -> Any:
    """Query vectors from Parquet: an ``embedding`` column (float lists or float32
    blobs) and ``query_id``, else ``id`` as the query's id (a facevec export
    works as it is); img_name and face_index come along as query_img_name and
    query_face_index."""
    from pyspark.sql import functions as F

    location = os.fspath(path)
    if not os.path.exists(location):
        raise DatabaseNotFoundError(f"no query Parquet at {location}")
    frame = spark.read.parquet(location)
    names = set(frame.columns)
    if "embedding" not in names:
        raise GalleryFormatError(f"{location} has no 'embedding' column of query vectors")
    columns = []
    if "query_id" in names:
        columns.append(F.col("query_id"))
    elif "id" in names:
        columns.append(F.col("id").alias("query_id"))
    for name in ("img_name", "face_index"):
        if name in names:
            columns.append(F.col(name).alias(f"query_{name}"))
    return frame.select(*columns, "embedding")


def queries_from_photos(
    spark: Any,
    folder: str | os.PathLike[str],
    model_name: str = DEFAULT_MODEL,
    detector_backend: str = DEFAULT_DETECTOR,
    partitions: int | None = None,
) -> Any:
    """Every face of every photo under `folder`, embedded on the executors.

    One row per face: query_id (``<photo path>#<face index>``), query_img_name,
    query_face_index, source_x/y/w/h (the face's box in its photo), embedding.
    Photos without a face, and files that are not images, give no row.
    """
    location = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(location):
        raise FolderNotFoundError(f"no folder of query photos at {location}")
    paths = list(Walk(location).photos())
    if not paths:
        raise FolderNotFoundError(f"{location} holds no photos")
    slices = partitions or spark.sparkContext.defaultParallelism
    rdd = spark.sparkContext.parallelize(
        [(path,) for path in paths], max(1, min(slices, len(paths)))
    )
    options = EmbedOptions(model_name, detector_backend)
    return spark.createDataFrame(rdd, "path string").mapInArrow(
        _photo_embedder(options), PHOTO_QUERY_SCHEMA
    )


def _photo_embedder(options: EmbedOptions) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def embed_photos(batches: Iterator[Any]) -> Iterator[Any]:
        import numpy as np

        from ..engine import embed

        pa = require_pyarrow()
        for batch in batches:
            rows: dict[str, list[Any]] = {name: [] for name in _PHOTO_COLUMNS}
            vectors = []
            for path in batch.column("path").to_pylist():
                with open(path, "rb") as handle:
                    data = handle.read()
                try:
                    found = embed.embed_bytes(data, path, options)
                except (NoFaceError, NotAnImageError):
                    continue
                for face in found:
                    values = (f"{path}#{face.face_index}", path, face.face_index)
                    values += (face.x, face.y, face.w, face.h)
                    for name, value in zip(_PHOTO_COLUMNS, values, strict=True):
                        rows[name].append(value)
                    vectors.append(face.embedding)
            if not vectors:
                continue
            arrays = {
                name: pa.array(values, pa.string() if name in _TEXT else pa.int32())
                for name, values in rows.items()
            }
            arrays["embedding"] = blob_column(np.stack(vectors))
            yield pa.RecordBatch.from_pydict(arrays)

    return embed_photos


_PHOTO_COLUMNS = (
    "query_id",
    "query_img_name",
    "query_face_index",
    "source_x",
    "source_y",
    "source_w",
    "source_h",
)
_TEXT = ("query_id", "query_img_name")
