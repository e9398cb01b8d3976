"""facevec spark find, and the one-line errors of bad galleries."""

from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from spark_data import noisy_queries, people_vectors, sharded_gallery

import facevec
from facevec.cli import cli
from facevec.errors import DatabaseNotFoundError, EmptyGalleryError, ModelMismatchError
from facevec.spark import read_gallery
from facevec.vector_columns import float_list_column


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    return sharded_gallery(tmp_path_factory.mktemp("cli_sharded"), seed=5)


def write_queries(path, vectors):
    ids = pa.array(np.arange(len(vectors), dtype=np.int64))
    pq.write_table(pa.table({"query_id": ids, "embedding": float_list_column(vectors)}), path)
    return path


def test_spark_find_writes_the_hits_find_gives(spark, sharded, tmp_path):
    queries = noisy_queries(sharded["vectors"], [2, 33, 61], seed=4)
    query_file = write_queries(tmp_path / "queries.parquet", queries)
    out = tmp_path / "hits"
    args = ["spark", "find", str(query_file), "--k", "3", "--out", str(out), "--quiet"]
    for source in sharded["sources"]:
        args += ["--gallery", source]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith(f"among 80 faces in 4 shards, written to {out}")
    hits = pq.read_table(out)
    for query_id, query in enumerate(queries):
        (expected,) = facevec.find(query, sharded["merged"], k=3)
        mine = hits.filter(pc.equal(hits["query_id"], query_id)).sort_by("rank")
        assert mine["img_name"].to_pylist() == list(expected.img_name)
        assert np.allclose(mine["distance"].to_numpy(), expected.distance, atol=1e-6, rtol=0)
    result = CliRunner().invoke(cli, args)  # --out exists: refused, nothing overwritten
    assert result.exit_code == 1 and "exists" in result.output


def make_bad_galleries(root):
    vectors, names = people_vectors(2, 3, seed=9)
    facevec.add(root / "dlib.db", names, vectors)
    facevec.add(root / "facenet.db", names, vectors, model_name="Facenet")
    facevec.add(root / "dlib64.db", names, vectors[:, :64])
    facevec.add(root / "empty.db", names[:1], vectors[:1])
    with sqlite3.connect(root / "empty.db") as conn:
        conn.execute("DELETE FROM face_embeddings")
        conn.execute("DELETE FROM face_meta")
    return vectors


BAD = [
    (["dlib.db", "missing.db"], DatabaseNotFoundError, "does not exist: {root}/missing.db"),
    (
        ["dlib.db", "facenet.db"],
        ModelMismatchError,
        "holds Dlib (128 dimensions), {root}/facenet.db holds Facenet (128",
    ),
    (["dlib.db", "dlib64.db"], ModelMismatchError, "{root}/dlib64.db holds Dlib (64 dimensions)"),
    (["empty.db"], EmptyGalleryError, "the gallery has no face to search: {root}/empty.db"),
]


@pytest.mark.parametrize("names, error, message", BAD, ids=["missing", "models", "dims", "empty"])
def test_bad_galleries_are_one_clear_error(spark, tmp_path, names, error, message):
    vectors = make_bad_galleries(tmp_path)
    expected = message.format(root=tmp_path)
    with pytest.raises(error, match=re.escape(expected)):
        read_gallery(spark, [str(tmp_path / name) for name in names])
    query_file = write_queries(tmp_path / "q.parquet", vectors[:1])
    args = ["spark", "find", str(query_file), "--out", str(tmp_path / "out"), "--quiet"]
    for name in names:
        args += ["--gallery", str(tmp_path / name)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and expected in result.output, result.output
    assert not (tmp_path / "out").exists()


def test_the_command_line_loads_neither_spark_nor_arrow():
    """facevec --help stays fast: pyspark and pyarrow load only when a command runs."""
    code = (
        "import sys, facevec.cli, facevec.spark, facevec.transfer;"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyspark', 'pyarrow')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
