"""facevec index DIR --db FILE."""

from __future__ import annotations

import json

from click.testing import CliRunner

from facevec.cli import cli


def test_index_then_rerun(tmp_path, gallery_maker):
    folder = gallery_maker(tmp_path / "g", {"alice": ["img10.jpg"], "": ["img12.jpg"]})
    db = tmp_path / "g.db"
    runner = CliRunner()
    result = runner.invoke(cli, ["index", str(folder), "--db", str(db), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 photos: 2 indexed (2 faces), 0 unchanged" in result.output
    result = runner.invoke(
        cli, ["index", str(folder), "--db", str(db), "--quiet", "--format", "json"]
    )
    report = json.loads(result.output)
    assert (report["unchanged"], report["indexed"]) == (2, 0)

    (folder / "img12.jpg").unlink()
    result = runner.invoke(cli, ["index", str(folder), "--db", str(db), "--quiet"])
    assert "1 gone (use --prune)" in result.output
    result = runner.invoke(cli, ["index", str(folder), "--db", str(db), "--quiet", "--prune"])
    assert "1 pruned" in result.output


def test_index_bad_options(tmp_path):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["index", str(tmp_path), "--db", str(tmp_path / "x.db"), "--model", "Nope"]
    )
    assert result.exit_code == 1
    assert "Error: unknown model 'Nope'; choose one of:" in result.output
    result = runner.invoke(cli, ["index", str(tmp_path / "absent"), "--db", str(tmp_path / "x.db")])
    assert result.exit_code == 2 and "does not exist" in result.output
