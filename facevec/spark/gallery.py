"""A gallery as a Spark DataFrame, read from many facevec databases and Parquet folders.

Each source is one shard. The driver asks each one only for its model and its
id span; the executors read the faces:

- a facevec database (a SQLite file, or a PostgreSQL / MariaDB URL) is cut into
  ranges of ``id`` (one partition each, ``rows_per_partition`` faces on average)
  and each task reads its range through facevec's storage layer, over the same
  drivers and SQL as every other facevec command;
- a Parquet folder (``facevec export``'s, or Spark's own) is read by Spark's
  Parquet source, a partition per file split.

Columns (:data:`GALLERY_SCHEMA`): shard (the source's position in the list),
source (its path, or its URL without the password), id, img_name, identity,
face_index, facial_area_x/y/w/h, embedding (float32 little-endian bytes, the
layout of face_meta.embedding).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import reduce
from typing import Any

from ..errors import (
    DatabaseNotFoundError,
    EmptyGalleryError,
    GalleryFormatError,
    InvalidParameterError,
    ModelMismatchError,
)
from ..storage import faces, schema
from ..storage.database import open_database
from ..storage.urls import is_url, parse_url
from ..transfer import read_parquet_model
from ..vector_columns import blob_column, matrix_from_arrow, require_pyarrow

GALLERY_SCHEMA = (
    "shard int, source string, id long, img_name string, identity string, face_index int,"
    " facial_area_x int, facial_area_y int, facial_area_w int, facial_area_h int,"
    " embedding binary"
)
_INT_COLUMNS = ("face_index", "facial_area_x", "facial_area_y", "facial_area_w", "facial_area_h")

#: Faces per partition of a database source, unless told otherwise: 250,000
#: Dlib vectors are 128 MB, a comfortable task on any executor.
ROWS_PER_PARTITION = 250_000


@dataclass(frozen=True)
class Source:
    """One shard of a distributed gallery, as the driver saw it."""

    shard: int
    kind: str  # "database" or "parquet"
    location: str = ""  # path or URL as given: may hold a password, never printed
    name: str = ""  # for messages and the source column
    model_name: str | None = None
    dimensions: int | None = None
    detector_backend: str | None = None
    faces: int = 0
    low_id: int = 0
    high_id: int = -1


@dataclass(frozen=True)
class SparkGallery:
    """A gallery spread over Spark partitions, and the one model its sources share."""

    #: One DataFrame per kind of source, with GALLERY_SCHEMA's columns; Parquet's
    #: keep their float arrays (the search reads either), which spares them a
    #: round trip through Python before the search.
    parts: tuple[Any, ...]
    model_name: str
    dimensions: int
    detector_backend: str | None
    sources: tuple[Source, ...]

    @property
    def faces(self) -> int:
        return sum(source.faces for source in self.sources)

    @property
    def frame(self) -> Any:
        """The whole gallery as one DataFrame (embedding as float32 bytes)."""
        frames = [
            part
            if dict(part.dtypes)["embedding"] == "binary"
            else part.mapInArrow(_to_blobs, GALLERY_SCHEMA)
            for part in self.parts
        ]
        return reduce(lambda a, b: a.unionByName(b), frames)


def describe_source(shard: int, location: str | os.PathLike[str]) -> Source:
    """What the driver needs to know of one source: model, size, id span."""
    if is_url(location):
        return _describe_database(shard, str(location), parse_url(str(location)).redacted())
    path = os.path.abspath(os.fspath(location))
    if not os.path.exists(path):
        raise DatabaseNotFoundError(f"gallery source {shard + 1} does not exist: {path}")
    if os.path.isdir(path) or path.endswith(".parquet"):
        return _describe_parquet(shard, path)
    return _describe_database(shard, path, path)


def _describe_database(shard: int, location: str, name: str) -> Source:
    with open_database(location, create=False) as db:
        collection = schema.get_collection(db)
        if collection is None:
            raise DatabaseNotFoundError(f"gallery source {name} holds no facevec gallery")
        span = faces.id_span(db)
    low, high, count = span if span is not None else (0, -1, 0)
    return Source(
        shard,
        "database",
        location,
        name,
        collection.model_name,
        collection.dimensions,
        collection.detector_backend,
        count,
        low,
        high,
    )


def _describe_parquet(shard: int, path: str) -> Source:
    dataset, metadata = read_parquet_model(path)
    if "id" not in dataset.schema.names:
        raise GalleryFormatError(f"{path} has no id column: each face needs one to be named")
    model, dims = metadata.get("model_name"), metadata.get("dimensions")
    count = dataset.count_rows()
    if (model is None or dims is None) and count:
        first = dataset.head(1, columns=["embedding"] + _present(dataset, ["model_name"]))
        dims = dims or matrix_from_arrow(first.column("embedding")).shape[1]
        if model is None and "model_name" in first.column_names:
            model = first.column("model_name")[0].as_py()
    if model is None and count:
        raise GalleryFormatError(f"{path} does not say which model its vectors come from")
    return Source(
        shard, "parquet", path, path, model, dims, metadata.get("detector_backend"), count
    )


def _present(dataset: Any, names: list[str]) -> list[str]:
    return [name for name in names if name in dataset.schema.names]


def check_sources(sources: Sequence[Source]) -> Source:
    """The source whose model every other must share; refuses mixes and emptiness."""
    first = next((s for s in sources if s.model_name is not None), None)
    for source in sources:
        if source.model_name is None or first is None:
            continue
        if (source.model_name, source.dimensions) != (first.model_name, first.dimensions):
            raise ModelMismatchError(
                f"gallery sources hold different vectors: {first.name} holds "
                f"{first.model_name} ({first.dimensions} dimensions), {source.name} holds "
                f"{source.model_name} ({source.dimensions} dimensions)"
            )
    if first is None or sum(source.faces for source in sources) == 0:
        names = ", ".join(source.name for source in sources)
        raise EmptyGalleryError(f"the gallery has no face to search: {names} hold none")
    return first


def id_ranges(source: Source, rows_per_partition: int) -> list[tuple[int, int, int]]:
    """(shard, low, high) ranges of ids, low <= id < high, of about equal sizes."""
    if source.faces == 0:
        return []
    parts = max(1, math.ceil(source.faces / rows_per_partition))
    low, end = source.low_id, source.high_id + 1
    step = max(1, math.ceil((end - low) / parts))
    return [(source.shard, start, min(start + step, end)) for start in range(low, end, step)]


def read_gallery(
    spark: Any,
    sources: Sequence[str | os.PathLike[str]],
    rows_per_partition: int = ROWS_PER_PARTITION,
) -> SparkGallery:
    """One DataFrame of the faces of every source (SQLite paths, database URLs,
    Parquet folders or files); see the module docstring for its columns.

    Every source must exist and hold the same model's vectors; together they
    must hold at least one face. Nothing is read until the DataFrame is used.
    """
    if isinstance(sources, (str, os.PathLike)):
        sources = [sources]
    if not sources:
        raise InvalidParameterError("give at least one gallery source")
    if isinstance(rows_per_partition, bool) or not isinstance(rows_per_partition, int):
        raise InvalidParameterError(
            f"rows_per_partition must be a whole number, not {rows_per_partition!r}"
        )
    if rows_per_partition < 1:
        raise InvalidParameterError(
            f"rows_per_partition must be at least 1, not {rows_per_partition}"
        )
    described = tuple(describe_source(shard, location) for shard, location in enumerate(sources))
    first = check_sources(described)
    frames = []
    databases = [s for s in described if s.kind == "database" and s.faces]
    if databases:
        frames.append(_database_frame(spark, databases, rows_per_partition))
    frames.extend(
        _parquet_frame(spark, source)
        for source in described
        if source.kind == "parquet" and source.faces
    )
    assert first.model_name is not None and first.dimensions is not None
    return SparkGallery(
        tuple(frames), first.model_name, first.dimensions, first.detector_backend, described
    )


def _database_frame(spark: Any, sources: list[Source], rows_per_partition: int) -> Any:
    ranges = [r for source in sources for r in id_ranges(source, rows_per_partition)]
    locations = {source.shard: (source.location, source.name) for source in sources}
    # One range per partition: parallelize keeps the list's order and split.
    rdd = spark.sparkContext.parallelize(ranges, len(ranges))
    frame = spark.createDataFrame(rdd, "shard int, low long, high long")
    return frame.mapInArrow(_range_reader(locations), GALLERY_SCHEMA)


def _range_reader(
    locations: dict[int, tuple[str, str]],
) -> Callable[[Iterator[Any]], Iterator[Any]]:
    def read(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            for shard, low, high in zip(
                *(batch.column(c).to_pylist() for c in ("shard", "low", "high")), strict=True
            ):
                location, name = locations[shard]
                with open_database(location, create=False) as db:
                    for rows in faces.iter_id_range(db, low, high):
                        yield gallery_batch(shard, name, rows)

    return read


def gallery_batch(shard: int, name: str, rows: list[tuple]) -> Any:
    """A RecordBatch of GALLERY_SCHEMA from face_meta rows (faces.GALLERY_COLUMNS)."""
    pa = require_pyarrow()
    columns = list(zip(*rows, strict=True))
    by_name = dict(zip(faces.GALLERY_COLUMNS, columns, strict=True))
    n = len(rows)
    arrays = {
        "shard": pa.array([shard] * n, pa.int32()),
        "source": pa.array([name] * n, pa.string()),
        "id": pa.array(by_name["id"], pa.int64()),
        "img_name": pa.array(by_name["img_name"], pa.string()),
        "identity": pa.array(by_name["identity"], pa.string()),
        **{column: pa.array(by_name[column], pa.int32()) for column in _INT_COLUMNS},
        "embedding": pa.array(by_name["embedding"], pa.binary()),
    }
    return pa.RecordBatch.from_pydict(arrays)


def _parquet_frame(spark: Any, source: Source) -> Any:
    from pyspark.sql import functions as F

    frame = spark.read.parquet(source.location)
    names = set(frame.columns)

    def column(name: str, kind: str) -> Any:
        return (F.col(name) if name in names else F.lit(None)).cast(kind).alias(name)

    return frame.select(
        F.lit(source.shard).cast("int").alias("shard"),
        F.lit(source.name).alias("source"),
        column("id", "long"),
        column("img_name", "string"),
        column("identity", "string"),
        *(column(name, "int") for name in _INT_COLUMNS),
        F.col("embedding"),
    )


def _to_blobs(batches: Iterator[Any]) -> Iterator[Any]:
    """Parquet's float lists as facevec's float32 blobs, so every shard has one layout."""
    for batch in batches:
        matrix = matrix_from_arrow(batch.column("embedding"))
        index = batch.schema.get_field_index("embedding")
        yield batch.set_column(index, "embedding", blob_column(matrix))
