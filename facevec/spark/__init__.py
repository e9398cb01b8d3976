"""facevec on Apache Spark: batch search past one machine (``pip install 'facevec[spark]'``).

From a SparkSession of your own (or :func:`spark_session`)::

    from facevec import spark as fvspark

    gallery = fvspark.read_gallery(spark, ["shard0.db", "shard1.db", "postgresql://..."])
    queries = fvspark.queries_from_parquet(spark, "frames.parquet")
    hits = fvspark.batch_search(gallery, queries, k=5)
    hits.write.parquet("hits.parquet")
    # or written block by block, resumable after an interruption:
    fvspark.search_to_parquet(gallery, queries, "hits.parquet", k=5)

- :mod:`.gallery`: sources (SQLite, PostgreSQL, MariaDB, Parquet) to one DataFrame;
- :mod:`.queries`: query vectors from Parquet, or photos embedded on the executors;
- :mod:`.search`: the batch search (query blocks streamed through the driver and
  broadcast, partitions scanned with the C kernels, candidates merged per query);
- :mod:`.query_blocks`: the queries numbered on the executors, fetched one block
  at a time;
- :mod:`.resumable_search`: the batch search written to Parquet a block at a
  time, with a progress bar, resumed where an interrupted run stopped
  (:mod:`.block_output`: the folder, its staging and its manifest);
- :mod:`.people`: the people clustering of ``facevec people cluster`` at scale
  (the gallery's people kept, the neighbour graph by batch search, components by
  DataFrame iterations, the linkage per component);
- :mod:`.people_write`: its suggestions written back to the gallery, undoable;
- :mod:`.partition_search`: what one task computes (no Spark inside);
- :mod:`.session`: a session with facevec's settings; pyspark is imported there,
  and only when a function needs it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_OWNERS = {
    "read_gallery": "gallery",
    "SparkGallery": "gallery",
    "GALLERY_SCHEMA": "gallery",
    "batch_search": "search",
    "search_to_parquet": "resumable_search",
    "cluster_people": "people",
    "write_people": "people_write",
    "queries_from_parquet": "queries",
    "queries_from_photos": "queries",
    "spark_session": "session",
    "require_pyspark": "session",
}


def __getattr__(name: str) -> Any:
    owner = _OWNERS.get(name)
    if owner is None:
        raise AttributeError(f"module 'facevec.spark' has no attribute {name!r}")
    return getattr(import_module(f".{owner}", __name__), name)


__all__ = sorted(_OWNERS)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_OWNERS))
