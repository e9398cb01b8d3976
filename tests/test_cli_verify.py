"""facevec verify IMG1 IMG2."""

from __future__ import annotations

import json

from click.testing import CliRunner

from facevec.cli import cli


def test_verify_text_and_json(photos):
    runner = CliRunner()
    result = runner.invoke(cli, ["verify", photos("img1.jpg"), photos("img2.jpg")])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("same person: euclidean distance 0.46")
    result = runner.invoke(
        cli, ["verify", photos("img1.jpg"), photos("img12.jpg"), "--format", "json"]
    )
    details = json.loads(result.output)
    assert details["verified"] is False and details["model"] == "Dlib"
