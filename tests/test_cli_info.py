"""facevec info --db FILE."""

from __future__ import annotations

import json

from click.testing import CliRunner

from facevec.cli import cli


def test_info(gallery_db):
    runner = CliRunner()
    result = runner.invoke(cli, ["info", "--db", str(gallery_db)])
    assert result.exit_code == 0
    assert "model_name: Dlib" in result.output and "ledger: indexed 15," in result.output
    details = json.loads(
        runner.invoke(cli, ["info", "--db", str(gallery_db), "--format", "json"]).output
    )
    assert details["faces"] == 19 and details["identities"] == 5


def test_info_missing_database(tmp_path):
    result = CliRunner().invoke(cli, ["info", "--db", str(tmp_path / "none.db")])
    assert result.exit_code == 1 and "no database at" in result.output


def test_info_on_a_postgresql_schema_that_does_not_exist(tmp_path):
    from backends import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        empty = CliRunner().invoke(cli, ["info", "--db", url])  # exists, holds nothing yet
        assert empty.exit_code == 0 and "faces: 0" in empty.output, empty.output
        missing = url.replace("search_path%3Dfacevec_test_", "search_path%3Dnosuch_")
        assert missing != url
        result = CliRunner().invoke(cli, ["info", "--db", missing])
    assert result.exit_code == 1, result.output
    line = result.output.strip()
    assert line.startswith("Error: no gallery at ") and "names no schema that exists" in line


def test_index_and_find_on_a_postgresql_schema_that_does_not_exist(tmp_path, gallery_db):
    """index, copy and find name the missing schema, as info does: not "no schema has
    been selected to create in" from the server, nor "holds no faces yet"."""
    from backends import fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        missing = url.replace("search_path%3Dfacevec_test_", "search_path%3Dnosuch_")
    photos = tmp_path / "photos"
    photos.mkdir()
    query = tmp_path / "query.jpg"
    query.write_bytes(b"never read: the database is refused first")
    runner = CliRunner()
    for args in (
        ["index", str(photos), "--db", missing, "--quiet"],
        ["copy", str(gallery_db), missing, "--quiet"],
        ["find", str(query), "--db", missing],
    ):
        result = runner.invoke(cli, args)
        assert result.exit_code == 1, (args[0], result.output)
        line = result.output.strip()
        assert line.startswith("Error: no gallery at "), (args[0], line)
        assert "names no schema that exists" in line and "\\x0a" not in line
