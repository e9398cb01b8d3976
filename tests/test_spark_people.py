"""People clustering on Spark (local[2]) equals the single-machine clustering."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
from people_data import clustered_vectors

import facevec
from facevec.errors import InvalidParameterError
from facevec.people.clustering import cluster_vectors
from facevec.spark import cluster_people, read_gallery
from facevec.spark.people import KEY_SHIFT


@pytest.fixture(scope="module")
def people_gallery(tmp_path_factory):
    """240 Dlib-like faces of ~50 people in two SQLite shards and the merged file;
    faces 0-1 and 2-3 share a photo each (two faces of a photo are never one person)."""
    root = tmp_path_factory.mktemp("spark-people")
    vectors, labels = clustered_vectors(240, seed=5)
    names = [f"p{label:03d}/face{row:03d}.jpg" for row, label in enumerate(labels)]
    names[1], names[3] = names[0], names[2]
    shards, merged = [root / "a.db", root / "b.db"], root / "merged.db"
    for shard, part in zip(shards, (slice(0, 130), slice(130, 240)), strict=True):
        facevec.add(shard, names[part], vectors[part])
        facevec.add(merged, names[part], vectors[part])
    keys = [(0 << KEY_SHIFT) + i + 1 for i in range(130)] + [
        (1 << KEY_SHIFT) + i + 1 for i in range(110)
    ]
    return {"shards": [str(s) for s in shards], "vectors": vectors, "names": names, "keys": keys}


def groups(labels) -> set[frozenset[int]]:
    members = defaultdict(set)
    for row, label in enumerate(labels):
        if label is not None and label >= 0:
            members[label].add(row)
    return {frozenset(rows) for rows in members.values()}


@pytest.mark.parametrize(
    "options",
    [{}, {"distance_metric": "cosine"}, {"threshold": 0.45, "min_faces": 1, "neighbours": 4}],
    ids=["euclidean", "cosine", "tight-singletons"],
)
def test_spark_clustering_equals_the_single_machine_clustering(spark, people_gallery, options):
    vectors, names = people_gallery["vectors"], people_gallery["names"]
    photos = np.unique(np.asarray(names, dtype=object), return_inverse=True)[1]
    metric = options.get("distance_metric", "euclidean")
    expected = cluster_vectors(
        vectors,
        photos,
        metric=metric,
        threshold=options.get("threshold"),
        min_faces=options.get("min_faces", 2),
        neighbours=options.get("neighbours", 10),
    )
    gallery = read_gallery(spark, people_gallery["shards"], rows_per_partition=50)
    result = cluster_people(gallery, **options).toPandas()
    assert len(result) == len(vectors)
    row_of_key = {key: row for row, key in enumerate(people_gallery["keys"])}
    result["row"] = [
        row_of_key[(shard << KEY_SHIFT) + face_id]
        for shard, face_id in zip(result["shard"], result["id"], strict=True)
    ]
    result = result.sort_values("row")
    assert list(result["img_name"]) == names
    mine = [None if np.isnan(c) else int(c) for c in result["cluster"].astype(float)]
    theirs = groups(expected.cluster.tolist())
    assert groups(mine) == theirs
    assert len(theirs) > 20  # a real clustering, not one blob or nothing
    assert (np.array(mine, dtype=object) == None).sum() == (expected.cluster < 0).sum()  # noqa: E711
    scores = result["score"].to_numpy(dtype=float)
    assert np.allclose(scores, expected.score, equal_nan=True, atol=1e-9)
    # Two faces of one photo never share a cluster.
    assert mine[0] is None or mine[0] != mine[1]
    assert mine[2] is None or mine[2] != mine[3]


def test_bad_parameters_are_named(spark, people_gallery):
    gallery = read_gallery(spark, people_gallery["shards"])
    with pytest.raises(InvalidParameterError, match="min_faces"):
        cluster_people(gallery, min_faces=0)
    with pytest.raises(InvalidParameterError, match="neighbours"):
        cluster_people(gallery, neighbours=True)
    with pytest.raises(InvalidParameterError, match="threshold"):
        cluster_people(gallery, threshold=-1.0)


def test_cli_spark_people_writes_the_clustering(spark, people_gallery, tmp_path):
    import pyarrow.parquet as pq
    from click.testing import CliRunner

    from facevec.cli import cli

    out = tmp_path / "people"
    args = ["spark", "people", "--out", str(out), "--quiet", "--min-faces", "3"]
    for shard in people_gallery["shards"]:
        args += ["--gallery", shard]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    table = pq.read_table(out).to_pandas()
    row_of_key = {key: row for row, key in enumerate(people_gallery["keys"])}
    rows = [
        row_of_key[(s << KEY_SHIFT) + i] for s, i in zip(table["shard"], table["id"], strict=True)
    ]
    labels = [None] * len(rows)
    for row, cluster in zip(rows, table["cluster"], strict=True):
        labels[row] = None if cluster != cluster or cluster is None else int(cluster)
    photos = np.unique(np.asarray(people_gallery["names"], dtype=object), return_inverse=True)[1]
    expected = cluster_vectors(people_gallery["vectors"], photos, min_faces=3)
    assert groups(labels) == groups(expected.cluster.tolist())
    people = len(groups(labels))
    assert result.output.strip().startswith(f"{people} people (")
    assert result.output.strip().endswith(f"among 240 faces in 2 shards, written to {out}")
    again = CliRunner().invoke(cli, args)  # --out exists: refused
    assert again.exit_code == 1 and "exists" in again.output
