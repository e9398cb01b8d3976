"""facevec verify IMG1 IMG2."""

from __future__ import annotations

import json

from click.testing import CliRunner

from facevec.cli import cli


def test_verify_text_and_json(photos):
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", photos("img1.jpg"), photos("img2.jpg")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("same person: euclidean distance 0.4")
    # --exact: deepface's own detection, deepface's distance (0.46315)
    result = runner.invoke(cli, ["verify", photos("img1.jpg"), photos("img2.jpg"), "--exact"])
    assert result.output.startswith("same person: euclidean distance 0.4631")
    result = runner.invoke(
        cli, ["verify", photos("img1.jpg"), photos("img12.jpg"), "--format", "json"]
    )
    details = json.loads(result.output)
    assert details["verified"] is False and details["model"] == "Dlib"


def test_verify_metric_and_threshold_options(photos):
    runner = CliRunner()
    args = ["verify", photos("img1.jpg"), photos("img2.jpg"), "--format", "json"]
    cosine = json.loads(runner.invoke(cli, [*args, "--metric", "cosine"]).output)
    assert cosine["distance_metric"] == "cosine" and cosine["threshold"] == 0.07
    strict = json.loads(runner.invoke(cli, [*args, "--threshold", "0.1"]).output)
    assert strict["threshold"] == 0.1 and strict["verified"] is False
    assert strict["distance"] > 0.1
