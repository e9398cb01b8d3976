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

What it clusters: every face of the gallery, from scratch (people already named
in a database are not read; a cluster's faces can be written back with
``facevec people`` on one machine). Faces are keyed ``shard << 40 | id``.

Memory: step 1 gathers the query vectors on the driver (n x d x 4 bytes: 5 GB for
10M Dlib faces) and broadcasts them in blocks; step 2 holds one component per
task, so a loose threshold that chains a large share of the gallery into one
component makes that task the bottleneck (``components`` in the result tells).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import numpy as np

from ..errors import InvalidParameterError
from ..metrics import face_metric
from ..people import defaults
from ..people.clustering import prepare_vectors
from ..people.graph import Graph
from ..people.linkage import cluster_faces
from ..vector_columns import blob_column, matrix_from_arrow
from .gallery import GALLERY_SCHEMA, SparkGallery
from .search import QUERY_BLOCK_SIZE, batch_search

#: A face's key: its shard in the high bits, its id in the low 40.
KEY_SHIFT = 40

CLUSTER_SCHEMA = "key long, cluster long, score double"

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
    """Every face of the gallery with the cluster (person) it belongs to.

    Parameters mean what they mean for ``facevec.people.cluster``: ``threshold``
    is the linkage threshold in the metric's units (default 0.92 x deepface's),
    ``min_faces`` the size below which a group stays unassigned, ``neighbours``
    the k of the graph.

    Columns: shard, source, id, img_name, identity, cluster (the key of the
    cluster's first face in gallery order, null when unassigned), score (RMS
    distance to the other faces of its cluster, in clustering's euclidean space;
    null when alone). Lazy, like every DataFrame.
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
    faces = (
        gallery.frame.mapInArrow(_to_clustering_space(distance_metric), GALLERY_SCHEMA)
        .withColumn("key", F.shiftleft(F.col("shard").cast("long"), KEY_SHIFT) + F.col("id"))
        .persist()
    )
    edges = _edges(
        replace(gallery, parts=(faces.drop("key"),)),
        faces,
        min(neighbours, max(gallery.faces - 1, 1)),
        defaults.GRAPH_SHARE * linkage,
        query_block_size,
    ).persist()
    labels = _components(edges)
    nodes = faces.join(labels, faces.key == labels.node, "left").drop("node")
    grouped = nodes.where(F.col("component").isNotNull()).select(
        "component", "key", "img_name", "embedding"
    )
    # Fresh column names: both sides of the cogroup come from `labels`.
    edge_labels = labels.select(F.col("node").alias("src"), F.col("component").alias("part"))
    component_edges = edges.join(edge_labels, "src").select(
        F.col("part").alias("component"), "src", "dst"
    )
    clustered = (
        grouped.groupBy("component")
        .cogroup(component_edges.groupBy("component"))
        .applyInPandas(_component_clusterer(linkage, min_faces), CLUSTER_SCHEMA)
    )
    alone = nodes.where(F.col("component").isNull()).select(
        "key",
        (F.col("key") if min_faces <= 1 else F.lit(None)).cast("long").alias("cluster"),
        F.lit(None).cast("double").alias("score"),
    )
    result = clustered.unionByName(alone)
    return faces.join(result, "key").select(
        "shard", "source", "id", "img_name", "identity", "cluster", "score"
    )


def _to_clustering_space(metric: str):
    def prepare(batches: Iterator[Any]) -> Iterator[Any]:
        for batch in batches:
            matrix = prepare_vectors(matrix_from_arrow(batch.column("embedding")), metric)
            index = batch.schema.get_field_index("embedding")
            yield batch.set_column(index, "embedding", blob_column(matrix))

    return prepare


def _edges(space: SparkGallery, faces: Any, neighbours: int, cutoff: float, block_size: int) -> Any:
    """(src, dst) keys: each face to its `neighbours` nearest others within cutoff."""
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


def _component_clusterer(linkage: float, min_faces: int):
    import pandas as pd

    def cluster(nodes: Any, edges: Any) -> Any:
        nodes = nodes.sort_values("key", kind="stable")
        keys = nodes["key"].to_numpy(dtype=np.int64)
        vectors = np.frombuffer(b"".join(nodes["embedding"]), dtype="<f4").reshape(len(keys), -1)
        source = np.searchsorted(keys, edges["src"].to_numpy(dtype=np.int64))
        target = np.searchsorted(keys, edges["dst"].to_numpy(dtype=np.int64))
        graph = Graph(source, target, np.zeros(len(source), np.float32))
        photos = np.unique(nodes["img_name"].to_numpy(dtype=object), return_inverse=True)[1]
        result = cluster_faces(
            vectors, np.full(len(keys), -1, np.int64), photos, graph, linkage, min_faces
        )
        # Name each cluster by its first face's key (rows are in gallery order).
        first = {}
        for row, number in enumerate(result.cluster.tolist()):
            if number >= 0:
                first.setdefault(number, int(keys[row]))
        clusters = [first[n] if n >= 0 else None for n in result.cluster.tolist()]
        scores = [None if np.isnan(s) else float(s) for s in result.score.tolist()]
        return pd.DataFrame(
            {
                "key": keys,
                "cluster": pd.array(clusters, dtype="Int64"),
                "score": pd.array(scores, dtype="Float64"),
            }
        )

    return cluster
