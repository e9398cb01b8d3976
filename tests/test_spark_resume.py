"""An interrupted Spark search, resumed, writes what an uninterrupted one writes."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from spark_data import noisy_queries, sharded_gallery

from facevec.cli import cli
from facevec.errors import OutputExistsError
from facevec.spark import queries_from_parquet, read_gallery, search_to_parquet
from facevec.spark.block_output import MANIFEST, BlockOutput
from facevec.spark.progress import running_tasks
from facevec.vector_columns import float_list_column

ORDER = [("query_id", "ascending"), ("rank", "ascending")]


@pytest.fixture(scope="module")
def sharded(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    data = sharded_gallery(root, seed=11)
    queries = noisy_queries(data["vectors"], list(range(0, 80, 3)), seed=6)  # 27 queries
    ids = pa.array(np.arange(len(queries), dtype=np.int64))
    path = root / "queries.parquet"
    pq.write_table(pa.table({"query_id": ids, "embedding": float_list_column(queries)}), path)
    return {**data, "queries": str(path)}


def read_hits(out) -> pa.Table:
    return pq.read_table(out).sort_by(ORDER)


def stop_after(monkeypatch, commits: int, error: BaseException) -> list[int]:
    """Make the run fail after `commits` blocks were committed; returns the blocks
    committed from then on."""
    committed: list[int] = []
    commit = BlockOutput.commit

    def failing_commit(self, block):
        if len(committed) == commits:
            raise error
        committed.append(block)
        return commit(self, block)

    monkeypatch.setattr(BlockOutput, "commit", failing_commit)
    return committed


@pytest.mark.parametrize(
    "plan, error",
    [("queries", KeyboardInterrupt()), ("gallery", RuntimeError("executor lost"))],
)
def test_an_interrupted_search_resumes_to_the_uninterrupted_result(
    spark, sharded, tmp_path, monkeypatch, capsys, plan, error
):
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=30)

    def run(out, **options):
        queries = queries_from_parquet(spark, sharded["queries"])
        return search_to_parquet(
            gallery,
            queries,
            out,
            k=3,
            broadcast=plan,
            query_block_size=7,
            **{"progress": False, **options},
        )

    clean = run(tmp_path / "clean")
    assert clean == {
        "queries": 27,
        "hits": 81,
        "blocks": 4,
        "resumed": 0,
        "out": str(tmp_path / "clean"),
    }
    out = tmp_path / "hits"
    committed = stop_after(monkeypatch, 2, error)
    with pytest.raises(type(error)):
        run(out)
    assert committed == [0, 1]
    manifest = json.loads((out / MANIFEST).read_text())
    assert sorted(manifest["done"]) == ["0", "1"] and not manifest["complete"]
    assert read_hits(out).num_rows == 2 * 7 * 3  # the committed blocks, readable already

    monkeypatch.undo()
    again = stop_after(monkeypatch, 99, error)
    capsys.readouterr()
    resumed = run(out, progress=True)
    assert again == [2, 3]  # only the blocks not committed were searched
    bar = [line for line in capsys.readouterr().err.split("\r") if "/27" in line]
    assert "14/27" in bar[0]  # starts at the blocks done
    assert any("14/27" in line and "block 2/4" in line for line in bar)
    assert "27/27" in bar[-1] and "block 4/4" in bar[-1] and "query/s" in bar[-1]
    assert resumed == {**clean, "resumed": 2, "out": str(out)}
    assert read_hits(out).equals(read_hits(tmp_path / "clean"))
    assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "clean"))


def test_a_resume_with_other_parameters_is_refused_and_overwrite_starts_over(
    spark, sharded, tmp_path, monkeypatch
):
    gallery = read_gallery(spark, sharded["sources"], rows_per_partition=30)

    def run(out, **options):
        queries = queries_from_parquet(spark, sharded["queries"])
        return search_to_parquet(
            gallery,
            queries,
            out,
            broadcast="queries",
            query_block_size=9,
            progress=False,
            **options,
        )

    out = tmp_path / "hits"
    stop_after(monkeypatch, 1, KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        run(out, k=3)
    monkeypatch.undo()
    other_k = (
        f"{out} holds an unfinished search with another k (3 there, 2 now); run the same "
        "search to resume it, or add --overwrite to start over"
    )
    with pytest.raises(OutputExistsError, match=re.escape(other_k)):
        run(out, k=2)
    with pytest.raises(OutputExistsError, match=re.escape("another metric ('euclidean' there")):
        run(out, k=3, distance_metric="cosine")
    assert json.loads((out / MANIFEST).read_text())["done"].keys() == {"0"}  # kept
    started_over = run(out, k=2, overwrite=True)
    assert started_over["resumed"] == 0 and started_over["hits"] == 54
    assert read_hits(out).equals(read_hits(run(tmp_path / "clean", k=2)["out"]))


def cli_args(sharded, out, *extra):
    args = ["spark", "find", sharded["queries"], "--k", "3", "--out", str(out), "--quiet"]
    for source in sharded["sources"]:
        args += ["--gallery", source]
    return args + ["--broadcast", "queries", "--query-block-size", "4", *extra]


@pytest.fixture(scope="module")
def clean_run(spark, sharded, tmp_path_factory):
    """spark find never interrupted."""
    clean = tmp_path_factory.mktemp("clean") / "hits"
    result = CliRunner().invoke(cli, cli_args(sharded, clean))
    assert result.exit_code == 0, result.output
    return clean


def test_spark_find_resumes_when_run_again(clean_run, sharded, tmp_path, monkeypatch):
    out = tmp_path / "hits"
    stop_after(monkeypatch, 2, KeyboardInterrupt())
    result = CliRunner().invoke(cli, cli_args(sharded, out))
    assert result.exit_code == 130, result.output
    assert result.output.strip() == (
        f"interrupted; the blocks done are kept in {out}: run the same command to resume"
    )
    monkeypatch.undo()
    result = CliRunner().invoke(cli, cli_args(sharded, out, "--k", "2"))
    assert result.exit_code == 1
    assert "holds an unfinished search with another k (3 there, 2 now)" in result.output
    result = CliRunner().invoke(cli, cli_args(sharded, out))
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[0] == "resumed: 2 of 7 blocks were done before"
    assert lines[1] == f"81 hits for 27 queries among 80 faces in 4 shards, written to {out}"
    assert read_hits(out).equals(read_hits(clean_run))
    result = CliRunner().invoke(cli, cli_args(sharded, out))  # finished: refused
    assert result.exit_code == 1 and "exists and holds a finished search" in result.output


def test_a_killed_driver_resumes(clean_run, sharded, tmp_path):
    """The driver's process killed (SIGKILL) after some blocks: the run goes on
    from the blocks its manifest names."""
    out = tmp_path / "hits"
    args = cli_args(sharded, out)
    driver = subprocess.Popen(
        [sys.executable, "-m", "facevec", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its JVM too, killed with it
    )
    done: dict = {}
    try:
        deadline = time.monotonic() + 240
        while len(done) < 2 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
            try:
                done = json.loads((out / MANIFEST).read_text())["done"]
            except (OSError, ValueError, KeyError):
                pass
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    manifest = json.loads((out / MANIFEST).read_text())
    assert 2 <= len(manifest["done"]) < 7 and not manifest["complete"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert f"{len(manifest['done'])} of 7 blocks were done before" in result.output
    assert read_hits(out).equals(read_hits(clean_run))


def test_the_bar_counts_the_tasks_of_the_running_stages():
    stages = {
        4: SimpleNamespace(numCompletedTasks=3, numTasks=8),
        5: SimpleNamespace(numCompletedTasks=1, numTasks=2),
        6: None,  # finished between the two calls
    }
    tracker = SimpleNamespace(getActiveStageIds=lambda: [4, 5, 6], getStageInfo=stages.get)
    assert running_tasks(tracker) == (4, 10)
    idle = SimpleNamespace(getActiveStageIds=lambda: [], getStageInfo=stages.get)
    assert running_tasks(idle) == (0, 0)
