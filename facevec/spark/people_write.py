"""The people found on Spark, written back to the gallery's database as
``people cluster`` writes its own: suggestions only, in one transaction, recorded
as one ``cluster`` edit that ``people undo`` takes back.

The write is ``people.clustering.write_run``: a face given a person while Spark
computed (a user's word, another run) stops the write with nothing written, a
face deleted meanwhile is skipped, a new person is made only where at least
``min_faces`` of its faces remain, and faces that had a person are never touched
(they are not in the result's suggestions: Spark anchored them).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..people.clustering import ClusterReport, write_run
from ..people.gallery import open_gallery
from ..people.linkage import Clustering
from .gallery import SparkGallery


def write_people(
    gallery: SparkGallery,
    people: Any,
    min_faces: int,
    threshold: float,
    distance_metric: str = "euclidean",
) -> ClusterReport:
    """Write ``cluster_people``'s result (`people`, a DataFrame) back to the gallery,
    which must be one database (a SQLite file, or a PostgreSQL / MariaDB URL).

    Only the suggestions reach the driver (face id, person or group, score),
    never a vector. Returns the run's report, as ``people.cluster`` does.
    """
    from pyspark.sql import functions as F

    started = time.perf_counter()
    database_source = writable_source(gallery)
    people = people.persist()  # counted, then its suggestions gathered: computed once
    counts = people.agg(
        F.count(F.lit(1)).alias("faces"), F.sum((~F.col("assigned")).cast("long")).alias("free")
    ).first()
    free = people.where(~F.col("assigned"))
    found = (
        free.where(F.col("person").isNotNull() | F.col("cluster").isNotNull())
        .select("id", "person", "cluster", "score")
        .toArrow()
        .sort_by("id")
    )
    face_ids = found.column("id").to_numpy().astype(np.int64)
    person = found.column("person").to_numpy(zero_copy_only=False)
    cluster = found.column("cluster").to_numpy(zero_copy_only=False)
    score = found.column("score").to_numpy(zero_copy_only=False)
    joined_ids = sorted({int(p) for p in person if p == p and p is not None})
    index_of_person = {p: i for i, p in enumerate(joined_ids)}
    groups = sorted({int(c) for c in cluster if c == c and c is not None})
    number_of_group = {c: i for i, c in enumerate(groups)}
    person_index = np.asarray(
        [index_of_person[int(p)] if p == p and p is not None else -1 for p in person], np.int64
    )
    group_number = np.asarray(
        [number_of_group[int(c)] if c == c and c is not None else -1 for c in cluster], np.int64
    )
    scores = np.asarray([np.nan if s is None else float(s) for s in score], np.float64)
    people.unpersist()
    unassigned = int(counts["free"] or 0)
    report = ClusterReport(
        faces=int(counts["faces"]),
        unassigned=unassigned,
        joined_existing=0,
        new_people=0,
        faces_in_new_people=0,
        left_unassigned=unassigned,
        threshold=float(threshold),
        metric=distance_metric,
        seconds=0.0,
        edit_id=None,
    )
    joined = np.flatnonzero(person_index >= 0)
    clustered = np.flatnonzero(group_number >= 0)
    if joined.size or clustered.size:
        result = Clustering(person_index, group_number, scores, merges=0)
        with open_gallery(database_source.location) as (database, _):
            database.rollback()  # see what was committed while Spark computed
            with database.transaction():
                write_run(
                    database,
                    report,
                    result,
                    face_ids,
                    joined,
                    clustered,
                    joined_ids,
                    min_faces,
                )
    report.seconds = time.perf_counter() - started
    return report


def writable_source(gallery: SparkGallery) -> Any:
    """The gallery's one database source, or a clear refusal."""
    sources = gallery.sources
    if len(sources) != 1 or sources[0].kind != "database":
        names = ", ".join(source.name for source in sources)
        raise InvalidParameterError(
            "people are written back to a gallery of one database (a SQLite file or a "
            f"server URL), not to {len(sources)} shard(s) or Parquet: {names}"
        )
    return sources[0]
