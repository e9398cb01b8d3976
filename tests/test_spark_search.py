"""Batch search on Spark (local[2]) equals facevec.find on the merged gallery."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from backends import SERVERS, fresh_database
from spark_data import noisy_queries, people_vectors, sharded_gallery

import facevec
from facevec.spark import batch_search, queries_from_photos, read_gallery
from facevec.spark.gallery import id_ranges
from facevec.vector_columns import float_list_column


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return sharded_gallery(tmp_path_factory.mktemp("sharded"))


def query_frame(spark, vectors: np.ndarray):
    table = pa.table(
        {
            "query_id": pa.array(np.arange(len(vectors), dtype=np.int64) + 100),
            "embedding": float_list_column(vectors, fixed=False),
        }
    )
    return spark.createDataFrame(table)


def hits_of(result: pa.Table, query_id) -> pa.Table:
    return result.filter(pc.equal(result["query_id"], query_id)).sort_by("rank")


def assert_equals_find(result: pa.Table, queries: np.ndarray, db, ids=None, **options):
    for position, query in enumerate(queries):
        (expected,) = facevec.find(query, db, **options)
        query_id = position + 100 if ids is None else ids[position]
        mine = hits_of(result, query_id)
        assert mine["img_name"].to_pylist() == list(expected.img_name), position
        assert mine["face_index"].to_pylist() == list(expected.face_index)
        assert mine["rank"].to_pylist() == list(range(1, len(expected) + 1))
        distances = expected.distance.to_numpy(dtype=float)
        assert np.allclose(mine["distance"].to_numpy(), distances, atol=1e-6, rtol=0)
        assert mine["verified"].to_pylist() == list(expected.verified)
        assert mine["threshold"].to_pylist() == list(expected.threshold)


@pytest.mark.parametrize(
    "options",
    [
        {"k": 5},
        {"k": 5, "distance_metric": "cosine"},
        {"k": 4, "distance_metric": "euclidean_l2", "threshold": 0.9},
        {},  # every face within deepface's threshold, however many
        {"k": 12, "similarity_search": True},  # beyond the threshold: the tie at 3 and 50
    ],
    ids=["euclidean-k5", "cosine-k5", "l2-threshold", "threshold-only", "similarity"],
)
def test_three_sqlite_shards_and_parquet_equal_find_on_the_merged_gallery(spark, sharded, options):
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=7)
    assert gallery.faces == 80 and gallery.model_name == "Dlib" and gallery.dimensions == 128
    queries = noisy_queries(sharded["vectors"], [0, 3, 19, 25, 41, 50, 66, 79], seed=1)
    frame = query_frame(spark, queries)
    # Both plans: gallery partitions x broadcast queries, query partitions x broadcast gallery.
    for broadcast in ("queries", "gallery"):
        result = batch_search(gallery, frame, broadcast=broadcast, **options).toArrow()
        assert result.num_rows > len(queries)
        assert_equals_find(result, queries, sharded["merged"], **options)
        if options.get("similarity_search"):  # the tie: same vector in shards 0 and 2
            tied = hits_of(result, 101)
            assert tied["distance"][0] == tied["distance"][1]
            assert tied["shard"].to_pylist()[:2] == [0, 2]


def test_query_blocks_give_the_same_hits(spark, sharded):
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=30)
    queries = noisy_queries(sharded["vectors"], list(range(0, 80, 7)), seed=2)
    frame = query_frame(spark, queries)
    one = batch_search(gallery, frame, k=3, broadcast="queries").toArrow()
    blocks = batch_search(gallery, frame, k=3, broadcast="queries", query_block_size=4)
    order = [("query_id", "ascending"), ("rank", "ascending")]
    assert one.num_rows == 3 * len(queries)
    assert one.sort_by(order).equals(blocks.toArrow().sort_by(order))
    by_gallery = batch_search(gallery, frame, k=3, broadcast="gallery").toArrow()
    by_gallery = by_gallery.select(one.column_names).sort_by(order)
    assert by_gallery.to_pylist() == one.sort_by(order).to_pylist()


def test_the_gallery_frame_holds_every_face_once(spark, sharded):
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=7)
    table = gallery.frame.toArrow()
    assert table.num_rows == 80
    assert sorted(table["img_name"].to_pylist()) == sorted(sharded["names"])
    assert set(table["source"].to_pylist()) == set(sharded["sources"])
    # The database shards are read in id ranges: three partitions of 20 faces each.
    assert gallery.frame.rdd.getNumPartitions() >= 9
    blobs = dict(zip(table["img_name"].to_pylist(), table["embedding"].to_pylist(), strict=True))
    for name, vector in zip(sharded["names"], sharded["vectors"], strict=True):
        assert blobs[name] == vector.astype("<f4").tobytes()


def test_id_ranges_cover_the_span_without_overlap():
    from facevec.spark.gallery import Source

    source = Source(3, "database", faces=1000, low_id=5, high_id=1203)
    ranges = id_ranges(source, 300)
    assert len(ranges) == 4 and ranges[0][1] == 5 and ranges[-1][2] == 1204
    assert all(a[2] == b[1] for a, b in zip(ranges, ranges[1:], strict=False))
    assert id_ranges(Source(0, "database"), 10) == []


@pytest.mark.parametrize("server", SERVERS)
def test_a_server_gallery_is_read_in_id_ranges(spark, server, tmp_path):
    vectors, names = people_vectors(6, 5, seed=11)
    with fresh_database(server, tmp_path) as url:
        facevec.add(url, names, vectors)
        gallery = read_gallery(spark, [url], rows_per_partition=8)
        assert gallery.frame.rdd.getNumPartitions() == 4  # 30 faces, 8 a partition
        table = gallery.frame.toArrow()
        assert sorted(table["id"].to_pylist()) == sorted(set(table["id"].to_pylist()))
        assert table.num_rows == 30
        queries = noisy_queries(vectors, [0, 7, 29], seed=3)
        result = batch_search(gallery, query_frame(spark, queries), k=4, broadcast="queries")
        result = result.toArrow()
        assert_equals_find(result, queries, url, k=4, strategy="client")
        assert_equals_find(result, queries, url, k=4, strategy="relational")


def test_photos_are_embedded_on_the_executors(spark, gallery_db, gallery_maker, tmp_path):
    folder = gallery_maker(tmp_path / "queries", {"": ["img3.jpg", "couple.jpg"]})
    queries = queries_from_photos(spark, folder, partitions=1)
    gallery = read_gallery(spark, [gallery_db])
    result = batch_search(gallery, queries, k=3, similarity_search=True).toArrow()  # auto: gallery
    for name in ("img3.jpg", "couple.jpg"):
        expected = facevec.find(str(folder / name), gallery_db, k=3, similarity_search=True)
        path = os.path.join(str(folder), name)
        for face_index, frame in enumerate(expected):
            mine = hits_of(result, f"{path}#{face_index}")
            assert len(frame) == 3 and mine["img_name"].to_pylist() == list(frame.img_name)
            expected_distances = frame.distance.to_numpy(dtype=float)
            assert np.allclose(mine["distance"].to_numpy(), expected_distances, atol=1e-6, rtol=0)
            assert mine["source_x"].to_pylist() == list(frame.source_x)
    assert len(expected) == 2  # both faces of couple.jpg are queries


def test_a_gallery_searched_against_itself(spark, sharded):
    """Each face's first hit is itself: the seam of a k-nearest-neighbour graph."""
    gallery = read_gallery(spark, sharded["sources"][:2])
    faces = gallery.frame.select("shard", "id", "img_name", "embedding")
    edges = batch_search(gallery, faces, k=2, similarity_search=True).toArrow()
    first = edges.filter(pc.equal(edges["rank"], 1))
    assert first.num_rows == 40
    assert first["query_shard"].equals(first["shard"]) and first["query_id"].equals(
        first["face_id"]
    )
    assert first["query_img_name"].equals(first["img_name"])
    assert pc.max(first["distance"]).as_py() == 0.0


def test_the_driver_holds_one_block_of_queries_at_a_time(spark, sharded, monkeypatch):
    from pyspark import SparkContext

    DataFrame = type(spark.range(1))  # the session's class (pyspark's classic one)
    gathered, broadcast = [], []
    to_arrow, collect, share = DataFrame.toArrow, DataFrame.collect, SparkContext.broadcast

    def counting_to_arrow(self):
        table = to_arrow(self)
        if "embedding" in table.column_names:
            gathered.append(table.num_rows)
        return table

    def counting_collect(self):
        rows = collect(self)
        if "embedding" in self.columns:
            gathered.append(len(rows))
        return rows

    def counting_broadcast(self, value):
        if isinstance(value, np.ndarray):
            broadcast.append(value.shape[0])
        return share(self, value)

    monkeypatch.setattr(DataFrame, "toArrow", counting_to_arrow)
    monkeypatch.setattr(DataFrame, "collect", counting_collect)
    monkeypatch.setattr(SparkContext, "broadcast", counting_broadcast)
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=30)
    queries = noisy_queries(sharded["vectors"], list(range(0, 80, 3)), seed=4)  # 27 queries
    frame = query_frame(spark, queries).repartition(3)
    result = batch_search(gallery, frame, k=3, broadcast="queries", query_block_size=4)
    # Six blocks of 4 and one of 3 reached the driver, one at a time, and nothing else.
    assert gathered == [4, 4, 4, 4, 4, 4, 3]
    assert broadcast == gathered
    monkeypatch.undo()
    table = result.toArrow()
    assert sorted(set(table["query_id"].to_pylist())) == list(range(100, 127))
    assert_equals_find(table, queries, sharded["merged"], k=3)
