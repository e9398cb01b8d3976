"""What one Spark task computes, without Spark: the C kernels' top-k, kept per query."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pytest

from facevec import top_k
from facevec.errors import GalleryFormatError
from facevec.spark import partition_search
from facevec.spark.partition_search import PartitionTopK, best_per_query, top_k_many
from facevec.vector_columns import blob_column, float_list_column, matrix_from_arrow


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(12)
    return rng.normal(size=(300, 16)).astype(np.float32), rng.normal(size=(9, 16)).astype(
        np.float32
    )


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "euclidean_l2"])
@pytest.mark.parametrize("k, threshold", [(7, None), (7, 5.0), (None, 5.0), (500, None)])
def test_top_k_many_is_top_k_per_query(data, metric, k, threshold, monkeypatch):
    monkeypatch.setattr(partition_search, "BLOCK_ROWS", 64)  # 5 blocks, 4 merges
    matrix, queries = data
    query, row, distance = top_k_many(queries, matrix, k, metric, threshold)
    for position, vector in enumerate(queries):
        found, dist = top_k(vector, matrix, k or 300, metric=metric)
        if threshold is not None:
            keep = dist.astype(np.float64) <= threshold
            found, dist = found[keep], dist[keep]
        mine = query == position
        assert np.array_equal(row[mine], found)
        assert np.array_equal(distance[mine], dist)  # bit for bit
    assert (np.diff(query) >= 0).all()


def test_the_threshold_is_compared_as_a_double():
    matrix = np.array([[0.6]], dtype=np.float32)  # float32(0.6) > 0.6 as a double
    zero = np.zeros((1, 1), np.float32)
    assert top_k_many(zero, matrix, 1, "euclidean", 0.6)[1].size == 0
    assert top_k_many(zero, matrix, None, "euclidean", 0.6)[1].size == 0
    assert top_k_many(zero, matrix, 1, "euclidean", 0.6000001)[1].tolist() == [0]


def gallery_batch(matrix, shard, first_id):
    n = matrix.shape[0]
    return pa.RecordBatch.from_pydict(
        {
            "shard": pa.array([shard] * n, pa.int32()),
            "id": pa.array(np.arange(first_id, first_id + n, dtype=np.int64)),
            "img_name": pa.array([f"s{shard}-{first_id + i}" for i in range(n)]),
            "embedding": blob_column(matrix),
        }
    )


def test_a_partition_keeps_the_best_k_across_batches(data, monkeypatch):
    monkeypatch.setattr(partition_search, "BLOCK_ROWS", 100)  # scored 128 rows at a time
    matrix, queries = data
    best = PartitionTopK(queries, 6, "euclidean", None, query_offset=40)
    for start in range(0, 300, 64):  # batches as Arrow hands them to the task
        best.add(gallery_batch(matrix[start : start + 64], shard=1, first_id=start))
    table = pa.Table.from_batches(best.result())
    assert table.num_rows == 9 * 6
    for row, query in enumerate(queries):
        mine = table.filter(pa.compute.equal(table["query_index"], row + 40))
        found, dist = top_k(query, matrix, 6)
        assert mine["id"].to_pylist() == found.tolist()
        assert np.array_equal(mine["distance"].to_numpy(), dist)


def test_ties_go_to_the_lower_shard_then_id():
    table = pa.table(
        {
            "query_index": pa.array([0, 0, 0, 0, 1], pa.int32()),
            "shard": pa.array([2, 0, 0, 1, 0], pa.int32()),
            "id": pa.array([1, 9, 4, 1, 3], pa.int64()),
            "distance": pa.array([0.5, 0.5, 0.5, 0.2, 0.1], pa.float32()),
        }
    )
    kept = best_per_query(table, 3)
    assert list(zip(kept["shard"].to_pylist(), kept["id"].to_pylist(), strict=True)) == [
        (1, 1),
        (0, 4),
        (0, 9),
        (0, 3),
    ]


def test_vector_columns_of_every_layout_give_one_matrix(data):
    matrix = data[0][:5]
    for column in (
        blob_column(matrix),
        float_list_column(matrix),
        float_list_column(matrix, fixed=False),
        pa.array(matrix.astype(np.float64).tolist()),  # list<double>, as pandas writes
    ):
        assert np.array_equal(matrix_from_arrow(column), matrix)
    sliced = blob_column(matrix).slice(2)
    assert np.array_equal(matrix_from_arrow(sliced), matrix[2:])


@pytest.mark.parametrize(
    "column, message",
    [
        (pa.array([b"\0" * 8, b"\0" * 12]), "vectors of several sizes (8 to 12 bytes)"),
        (pa.array([b"\0" * 6]), "a length divisible by 4, found 6"),
        (pa.array([[1.0, 2.0], None]), "1 of 2 vectors are missing (null)"),
        (pa.array(["a"]), "found type string"),
    ],
)
def test_bad_vector_columns_say_what_is_wrong(column, message):
    with pytest.raises(GalleryFormatError, match=re.escape(message)):
        matrix_from_arrow(column)
