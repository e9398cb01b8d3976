"""People clustering past one machine: ``facevec people cluster``'s algorithm on Spark.

The single-machine clustering (:mod:`facevec.people.clustering`) has two steps,
and both split over Spark without changing the answer:

1. **The neighbour graph** (O(n^2 d), the expensive part): every face is a query
   against the whole gallery, the batch search of :mod:`.search` (gallery
   partitions x broadcast blocks of queries, the C kernels, candidates merged per
   query). A face's edges are its ``neighbours`` nearest other faces within the
   graph cutoff, the same edges, ties included, as ``people.graph.knn_graph``.
2. **The linkage** (average linkage under cannot-link constraints): clusters only
   ever merge along graph edges, so no cluster crosses a connected component of
   the graph. The components are found with Spark DataFrame iterations (each
   face takes the smallest key among its neighbours' labels until nothing
   changes), then each component is clustered on an executor by the very same
   ``people.linkage.cluster_faces``, its faces in the gallery's order. The result
   therefore equals the single-machine clustering of the merged gallery.

What it clusters: as ``people cluster``, the faces without a person, among and
into the people each database shard holds already (named, confirmed or
suggested: a user's word is never moved). A face that has a person anchors it:
all of a person's faces are one node of the graph, the faces without a person
are the queries, and the linkage never merges two existing people nor puts a
face into a person it was rejected from; faces set aside (dismissed) are left
out. Faces are keyed ``shard << 40 | id``, people ``-(shard << 40 | id) - 1``.
:func:`write_people` writes the suggestions back to a one-database gallery
through ``people cluster``'s own write (one transaction, one ``people undo``).

Memory: step 1 streams the queries through the driver one block at a time
(:mod:`.search`); the driver holds the people's assignments (face and person
ids, no vectors) of the shards. Step 2 holds one component per task, so a loose
threshold that chains a large share of the gallery into one component makes that
task the bottleneck.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..metrics import face_metric
from ..people import defaults
from ..people.clustering import prepare_vectors
from ..people.gallery import open_gallery
from ..people.graph import Graph
from ..people.linkage import cluster_faces
from ..storage import people as store
from ..vector_columns import blob_column, matrix_from_arrow
from .gallery import GALLERY_SCHEMA, SparkGallery
from .search import QUERY_BLOCK_SIZE, batch_search

#: A face's key: its shard in the high bits, its id in the low 40.
KEY_SHIFT = 40

CLUSTER_SCHEMA = "key long, joined long, cluster long, score double"

#: Label propagation rounds before giving up (a component's diameter in edges).
MAX_ROUNDS = 200


def cluster_people(
    gallery: SparkGallery,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    min_faces: int = defaults.MIN_FACES,
    neighbours: int = defaults.NEIGHBOURS,
    query_block_size: int = QUERY_BLOCK_SIZE,
) -> Any:
    """Every face of the gallery with the person it has or joins, or the new
    cluster (person) it belongs to.

    Parameters mean what they mean for ``facevec.people.cluster``: ``threshold``
    is the linkage threshold in the metric's units (default 0.92 x deepface's),
    ``min_faces`` the size below which a group stays unassigned, ``neighbours``
    the k of the graph. The people of the database shards are read (see the
    module docstring); Parquet shards have none.

    Columns: shard, source, id, img_name, identity, person (the id of the person
    the face had, or joins: its shard's; null otherwise), cluster (for a face of
    a new group: the key of the group's first face in gallery order; null
    otherwise), score (RMS distance to the other faces of its person or group,
    in clustering's euclidean space; null for a face that had a person, or is
    alone), assigned (the face had a person before). Dismissed faces have no
    row. The search runs when this is called; the rest is lazy.
    """
    from pyspark.sql import functions as F

    face_metric(distance_metric)
    for name, value in (("min_faces", min_faces), ("neighbours", neighbours)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be a positive integer, not {value!r}")
    if threshold is None:
        linkage = defaults.linkage_threshold(gallery.model_name, distance_metric)
    else:
        linkage = defaults.to_euclidean(
            defaults.check_positive("threshold", threshold), distance_metric
        )
    for source in gallery.sources:
        if source.high_id >= 1 << KEY_SHIFT:
            raise InvalidParameterError(
                f"{source.name} holds face ids past 2^{KEY_SHIFT}; they cannot be keyed"
            )
    spark = gallery.parts[0].sparkSession
    known = read_people(gallery)
    anchors = spark.createDataFrame(known.anchors(), ANCHOR_SCHEMA)
    faces = (
        gallery.frame.mapInArrow(_to_clustering_space(distance_metric), GALLERY_SCHEMA)
        .withColumn("key", F.shiftleft(F.col("shard").cast("long"), KEY_SHIFT) + F.col("id"))
        .join(F.broadcast(spark.createDataFrame(known.set_aside(), "key long")), "key", "left_anti")
        .join(F.broadcast(anchors), "key", "left")
        .persist()
    )
    free = faces.where(F.col("person_key").isNull())
    edges = _edges(
        replace(gallery, parts=(faces.drop("key", "person_key"),)),
        free,
        min(neighbours, max(gallery.faces - 1, 1)),
        defaults.GRAPH_SHARE * linkage,
        query_block_size,
    )
    # The graph of nodes: a face without a person is its own node, a person's faces one.
    node_of = anchors.select(F.col("key").alias("dst"), F.col("person_key").alias("dst_node"))
    node_edges = (
        edges.join(F.broadcast(node_of), "dst", "left")
        .select("src", F.coalesce("dst_node", "dst").alias("dst"), F.col("dst").alias("face"))
        .persist()
    )
    labels = _components(node_edges.select("src", "dst"))
    nodes = faces.withColumn("node", F.coalesce("person_key", "key"))
    placed = nodes.join(labels, "node", "left")
    grouped = placed.where(F.col("component").isNotNull()).select(
        "component", "key", "person_key", "img_name", "embedding"
    )
    # Fresh column names: both sides of the cogroup come from `labels`.
    edge_labels = labels.select(F.col("node").alias("src"), F.col("component").alias("part"))
    component_edges = node_edges.join(edge_labels, "src").select(
        F.col("part").alias("component"), "src", F.col("face").alias("dst")
    )
    refused = spark.sparkContext.broadcast(known.refused)
    clustered = (
        grouped.groupBy("component")
        .cogroup(component_edges.groupBy("component"))
        .applyInPandas(_component_clusterer(linkage, min_faces, refused), CLUSTER_SCHEMA)
    )
    alone = placed.where(F.col("component").isNull() & F.col("person_key").isNull()).select(
        "key",
        F.lit(None).cast("long").alias("joined"),
        (F.col("key") if min_faces <= 1 else F.lit(None)).cast("long").alias("cluster"),
        F.lit(None).cast("double").alias("score"),
    )
    result = clustered.unionByName(alone)
    person_id = F.coalesce("person_key", "joined")
    return faces.join(result, "key", "left").select(
        "shard",
        "source",
        "id",
        "img_name",
        "identity",
        (-person_id - 1 - F.shiftleft(F.col("shard").cast("long"), KEY_SHIFT)).alias("person"),
        "cluster",
        "score",
        F.col("person_key").isNotNull().alias("assigned"),
    )


ANCHOR_SCHEMA = "key long, person_key long"


@dataclass
class KnownPeople:
    """The people the database shards hold: who each assigned face is, the faces
    set aside, and each face's rejections (keys, see the module docstring)."""

    person_of: dict[int, int] = field(default_factory=dict)  # face key -> person key
    dismissed: list[int] = field(default_factory=list)
    refused: dict[int, set[int]] = field(default_factory=dict)  # face key -> person keys

    def anchors(self) -> list[tuple[int, int]]:
        return sorted(self.person_of.items())

    def set_aside(self) -> list[tuple[int]]:
        return [(key,) for key in sorted(self.dismissed)]


def person_key(shard: int, person: int) -> int:
    return -((shard << KEY_SHIFT) | person) - 1


def read_people(gallery: SparkGallery) -> KnownPeople:
    """The people of every database shard, read on the driver through facevec's
    people storage (ids only, no vectors)."""
    known = KnownPeople()
    for source in gallery.sources:
        if source.kind != "database" or not source.faces:
            continue
        base = source.shard << KEY_SHIFT
        with open_gallery(source.location) as (database, _):
            for face, (person, _) in store.assignments(database).items():
                known.person_of[base | face] = person_key(source.shard, person)
            known.dismissed.extend(base | face for face in store.dismissed_faces(database))
            for face, person in store.rejections(database):
                known.refused.setdefault(base | face, set()).add(person_key(source.shard, person))
    return known


def _to_clustering_space(metric: str):
    def prepare(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            matrix = prepare_vectors(matrix_from_arrow(batch.column("embedding")), metric)
            index = batch.schema.get_field_index("embedding")
            yield batch.set_column(index, "embedding", blob_column(matrix))

    return prepare


def _edges(space: SparkGallery, faces: Any, neighbours: int, cutoff: float, block_size: int) -> Any:
    """(src, dst) keys: each of `faces` to its `neighbours` nearest others of the
    gallery within cutoff."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    queries = faces.select(F.col("key").alias("query_id"), "embedding")
    hits = batch_search(
        space,
        queries,
        k=neighbours + 1,  # a face finds itself among its nearest
        distance_metric="euclidean",
        threshold=cutoff,
        broadcast="queries",
        query_block_size=block_size,
    )
    target = F.shiftleft(F.col("shard").cast("long"), KEY_SHIFT) + F.col("face_id")
    others = hits.select(F.col("query_id").alias("src"), target.alias("dst"), "rank").where(
        F.col("src") != F.col("dst")
    )
    order = Window.partitionBy("src").orderBy("rank")
    return (
        others.withColumn("n", F.row_number().over(order))
        .where(F.col("n") <= neighbours)
        .select("src", "dst")
    )


def _components(edges: Any) -> Any:
    """(node, component) for every face with an edge: the smallest key of its
    connected component, by label propagation over DataFrame iterations."""
    from pyspark.sql import functions as F

    links = (
        edges.select(F.col("src").alias("a"), F.col("dst").alias("b"))
        .unionByName(edges.select(F.col("dst").alias("a"), F.col("src").alias("b")))
        .distinct()
        .persist()
    )
    labels = (
        links.groupBy("a")
        .agg(F.min(F.least("a", "b")).alias("component"))
        .withColumnRenamed("a", "node")
        .localCheckpoint()
    )
    for _ in range(MAX_ROUNDS):
        offered = links.join(labels, links.b == labels.node).select(
            F.col("a").alias("node"), "component"
        )
        updated = (
            offered.unionByName(labels)
            .groupBy("node")
            .agg(F.min("component").alias("component"))
            .localCheckpoint()
        )
        before = labels.withColumnRenamed("component", "before")
        moved = (
            updated.join(before, "node")
            .where(F.col("component") != F.col("before"))
            .limit(1)
            .count()
        )
        labels = updated
        if not moved:
            return labels
    raise InvalidParameterError(
        f"the neighbour graph's components did not settle in {MAX_ROUNDS} rounds; "
        "a lower threshold gives smaller components"
    )


def _component_clusterer(linkage: float, min_faces: int, refused: Any):
    import pandas as pd

    def cluster(nodes: Any, edges: Any) -> Any:
        nodes = nodes.sort_values("key", kind="stable")
        keys = nodes["key"].to_numpy(dtype=np.int64)
        vectors = np.frombuffer(b"".join(nodes["embedding"]), dtype="<f4").reshape(len(keys), -1)
        owners = nodes["person_key"].astype("Int64")
        people = sorted(int(p) for p in owners.dropna().unique())
        index_of = {person: i for i, person in enumerate(people)}
        person_of_row = np.asarray(
            [-1 if pd.isna(p) else index_of[int(p)] for p in owners], dtype=np.int64
        )
        source = np.searchsorted(keys, edges["src"].to_numpy(dtype=np.int64))
        target = np.searchsorted(keys, edges["dst"].to_numpy(dtype=np.int64))
        graph = Graph(source, target, np.zeros(len(source), np.float32))
        photos = np.unique(nodes["img_name"].to_numpy(dtype=object), return_inverse=True)[1]
        rejections = [
            (row, index_of[person])
            for row in np.flatnonzero(person_of_row < 0).tolist()
            for person in refused.value.get(int(keys[row]), ())
            if person in index_of
        ]
        result = cluster_faces(
            vectors, person_of_row, photos, graph, linkage, min_faces, rejections
        )
        free = keys[person_of_row < 0]
        # Name each new group by its first face's key (rows are in gallery order).
        first: dict[int, int] = {}
        for row, number in enumerate(result.cluster.tolist()):
            if number >= 0:
                first.setdefault(number, int(free[row]))
        clusters = [first[n] if n >= 0 else None for n in result.cluster.tolist()]
        joined = [people[p] if p >= 0 else None for p in result.person.tolist()]
        scores = [None if np.isnan(s) else float(s) for s in result.score.tolist()]
        return pd.DataFrame(
            {
                "key": free,
                "joined": pd.array(joined, dtype="Int64"),
                "cluster": pd.array(clusters, dtype="Int64"),
                "score": pd.array(scores, dtype="Float64"),
            }
        )

    return cluster
