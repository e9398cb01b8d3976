"""The folder a Spark search is committed to block by block (no Spark here)."""

from __future__ import annotations

import json
import os
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from facevec.errors import OutputExistsError
from facevec.spark.block_output import MANIFEST, STAGING, SUCCESS, check_output, open_output

IDENTITY = {"queries": "/data/q.parquet", "k": 3, "gallery": ["a.db", "b.db"]}


def stage(output, block: int, rows: list[int]) -> str:
    """What Spark's write of one block leaves in its staging folder."""
    folder = output.staging(block)
    os.makedirs(folder)
    for number, values in enumerate((rows[:1], rows[1:])):
        pq.write_table(
            pa.table({"query_id": values}), os.path.join(folder, f"part-{number}.parquet")
        )
    open(os.path.join(folder, "_SUCCESS"), "wb").close()
    open(os.path.join(folder, ".part-0.parquet.crc"), "wb").close()
    return folder


def test_blocks_are_committed_into_place_and_the_manifest_names_them(tmp_path):
    out = str(tmp_path / "hits")
    output = open_output(out, IDENTITY)
    output.plan(2, {"query_count": 7})
    assert output.todo() == [0, 1]
    stage(output, 0, [0, 1, 2])
    assert output.commit(0) == ["part-000000-00000.parquet", "part-000000-00001.parquet"]
    stage(output, 1, [3, 4, 5, 6])
    output.commit(1)
    assert not os.path.exists(os.path.join(out, SUCCESS))
    output.finish()
    assert sorted(os.listdir(out)) == [
        SUCCESS,
        MANIFEST,
        "part-000000-00000.parquet",
        "part-000000-00001.parquet",
        "part-000001-00000.parquet",
        "part-000001-00001.parquet",
    ]
    assert sorted(pq.read_table(out)["query_id"].to_pylist()) == list(range(7))
    manifest = json.loads(open(os.path.join(out, MANIFEST)).read())
    assert manifest["complete"] and manifest["blocks"] == 2
    assert manifest["identity"] == {**IDENTITY, "query_count": 7}
    assert manifest["done"]["1"]["hits"] == 4 and output.hits == 7
    finished = f"{out} exists and holds a finished search; choose another --out or add --overwrite"
    with pytest.raises(OutputExistsError, match=re.escape(finished)):
        check_output(out)
    with pytest.raises(OutputExistsError, match=re.escape(finished)):
        open_output(out, IDENTITY)
    again = open_output(out, IDENTITY, overwrite=True)  # starts over
    assert os.listdir(out) == [MANIFEST] and again.done == {}


def test_a_resume_keeps_committed_blocks_and_clears_an_interrupted_commit(tmp_path):
    out = str(tmp_path / "hits")
    output = open_output(out, IDENTITY)
    output.plan(3, {"query_count": 9})
    stage(output, 0, [0, 1, 2])
    output.commit(0)
    # Block 1 was moved into place but the driver died before the manifest named it;
    # block 2 was half written by Spark.
    stage(output, 1, [3, 4, 5])
    os.replace(
        os.path.join(out, STAGING, "block-000001", "part-0.parquet"),
        os.path.join(out, "part-000001-00000.parquet"),
    )
    stage(output, 2, [6, 7, 8])
    resumed = open_output(out, dict(IDENTITY))
    assert resumed.resumed == 1 and resumed.blocks == 3
    resumed.plan(3, {"query_count": 9})
    assert resumed.todo() == [1, 2]
    assert sorted(os.listdir(out)) == [
        MANIFEST,
        "part-000000-00000.parquet",
        "part-000000-00001.parquet",
    ]
    assert sorted(pq.read_table(out)["query_id"].to_pylist()) == [0, 1, 2]


def test_other_inputs_or_parameters_are_refused_with_what_differs(tmp_path):
    out = str(tmp_path / "hits")
    open_output(out, IDENTITY).plan(3, {"query_count": 9})
    other_k = (
        f"{out} holds an unfinished search with another k (3 there, 5 now); run the same "
        "search to resume it, or add --overwrite to start over"
    )
    with pytest.raises(OutputExistsError, match=re.escape(other_k)):
        open_output(out, {**IDENTITY, "k": 5})
    with pytest.raises(OutputExistsError, match=re.escape("another gallery (['a.db', 'b.db']")):
        open_output(out, {**IDENTITY, "gallery": ["a.db"]})
    resumed = open_output(out, IDENTITY)
    fewer = f"{out} holds an unfinished search of other queries (query_count: 9 there, 8 now)"
    with pytest.raises(OutputExistsError, match=re.escape(fewer)):
        resumed.plan(2, {"query_count": 8})
    assert os.path.exists(os.path.join(out, MANIFEST))  # refused: nothing removed


def test_a_folder_without_a_manifest_is_never_touched(tmp_path):
    out = tmp_path / "photos"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    message = f"{out} exists; choose another --out or add --overwrite"
    with pytest.raises(OutputExistsError, match=re.escape(message)):
        check_output(str(out))
    with pytest.raises(OutputExistsError, match=re.escape(message)):
        open_output(str(out), IDENTITY)
    (out / MANIFEST).write_text("{not json")
    with pytest.raises(OutputExistsError, match=re.escape(f"{out} holds an unreadable {MANIFEST}")):
        open_output(str(out), IDENTITY)
    assert (out / "keep.txt").read_text() == "mine"
