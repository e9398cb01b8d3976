"""facevec find IMG --db FILE."""

from __future__ import annotations

import csv
import io
import json

from click.testing import CliRunner

from facevec.cli import cli


def test_find_table_csv_json_agree(gallery_db, photos):
    runner = CliRunner()
    base = ["find", photos("img1.jpg"), "--db", str(gallery_db)]
    table = runner.invoke(cli, base)
    assert table.exit_code == 0, table.output
    assert "img1.jpg" in table.output and "id01" in table.output
    as_json = json.loads(runner.invoke(cli, base + ["--format", "json"]).output)
    as_csv = list(
        csv.DictReader(io.StringIO(runner.invoke(cli, base + ["--format", "csv"]).output))
    )
    assert len(as_json) == 1 and len(as_json[0]) == len(as_csv) >= 8
    assert [row["img_name"] for row in as_json[0]] == [row["img_name"] for row in as_csv]


def test_find_options(gallery_db, photos):
    runner = CliRunner()
    for strategy in ("extension", "knn", "relational", "client"):
        result = runner.invoke(
            cli,
            [
                "find",
                photos("img1.jpg"),
                "--db",
                str(gallery_db),
                "--strategy",
                strategy,
                "--metric",
                "cosine",
                "--k",
                "2",
                "--format",
                "json",
            ],
        )
        assert result.exit_code == 0, result.output
        rows = json.loads(result.output)[0]
        assert len(rows) == 2 and rows[0]["img_name"].endswith("/img1.jpg")


def test_find_multi_face_prints_each_query_face(gallery_db, photos):
    result = CliRunner().invoke(cli, ["find", photos("couple.jpg"), "--db", str(gallery_db)])
    assert result.exit_code == 0
    assert "query face 0" in result.output and "query face 1" in result.output


def test_find_errors_are_one_line(gallery_db, photos, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["find", photos("img1.jpg"), "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "Error: no database at" in result.output
    result = runner.invoke(
        cli, ["find", photos("img1.jpg"), "--db", str(gallery_db), "--metric", "l1"]
    )
    assert result.exit_code == 2 and "Invalid value for '--metric'" in result.output
    result = runner.invoke(
        cli, ["find", photos("img1.jpg"), "--db", str(gallery_db), "--model", "Facenet"]
    )
    assert (
        result.exit_code == 1
        and "holds Dlib vectors (128 dimensions), not Facenet" in result.output
    )


def test_find_similarity_search_ranks_beyond_the_threshold(gallery_db, photos):
    runner = CliRunner()
    args = ["find", photos("img1.jpg"), "--db", str(gallery_db), "--format", "json"]
    within = json.loads(runner.invoke(cli, args).output)[0]
    ranked = json.loads(runner.invoke(cli, [*args, "--similarity-search", "--k", "40"]).output)[0]
    assert len(ranked) > len(within)
    assert [row["img_name"] for row in ranked[: len(within)]] == [r["img_name"] for r in within]
    assert any(not row["verified"] for row in ranked)


def test_a_strategy_another_database_lacks_is_named_as_an_option(photos, tmp_path):
    import numpy as np
    from backends import fresh_database

    import facevec

    with fresh_database("mysql", tmp_path) as db:
        facevec.add(db, ["a.jpg"], np.ones((1, 128), dtype=np.float32), model_name="Dlib")
        result = CliRunner().invoke(
            cli, ["find", str(photos("img1.jpg")), "--db", db, "--strategy", "knn"]
        )
    assert result.exit_code == 1
    message = result.output.strip().splitlines()[-1]
    assert message.endswith("use --strategy relational or --strategy client"), message
    assert "strategy='" not in result.output
