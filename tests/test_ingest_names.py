"""File names as the operating system holds them: any bytes, escape sequences,
folders that cannot be read. Checked through `facevec index` / `facevec find`."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.ingest import path_from_text, path_to_text

LATIN1_NAME = b"Jos\xe9.jpg"  # not UTF-8: "José" in Latin-1
ESCAPE_NAME = b"x\x1b[31mred\x07.jpg"  # a terminal colour code and a bell


def test_text_form_is_reversible_for_any_bytes():
    for raw in (
        b"/p/Jos\xe9.jpg",
        b"/p/caf\xc3\xa9.jpg",  # valid UTF-8: stored as it is
        b"/p/a\\b.jpg",
        b"/p/\\xe9\xff.jpg",  # a literal \xe9 next to a real 0xff byte
        b"/p/" + bytes(range(1, 47)) + b".jpg",
    ):
        text = path_to_text(os.fsdecode(raw))
        text.encode("utf-8")  # any database can store it
        assert os.fsencode(path_from_text(text)) == raw
    assert path_to_text("/p/café.jpg") == "/p/café.jpg"
    assert path_to_text(os.fsdecode(b"/p/Jos\xe9.jpg")) == "/p/Jos\\xe9.jpg"
    assert path_to_text("/p/a\\b.jpg") == "/p/a\\\\b.jpg"


@pytest.fixture(scope="module")
def odd_names(tmp_path_factory, photos):
    """A folder with a Latin-1 name, a person folder with one, and a good photo."""
    folder = tmp_path_factory.mktemp("names") / "odd"
    person = os.path.join(os.fsencode(folder), b"P\xe9rson")
    os.makedirs(person)
    shutil.copy(photos("img10.jpg"), os.path.join(os.fsencode(folder), LATIN1_NAME))
    shutil.copy(photos("img5.jpg"), os.path.join(person, ESCAPE_NAME))
    shutil.copy(photos("img12.jpg"), folder / "ok.jpg")
    return folder


@pytest.mark.parametrize("backend", BACKENDS)
def test_non_utf8_names_are_indexed_on_every_database(backend, odd_names, tmp_path):
    with fresh_database(backend, tmp_path) as db:
        runner = CliRunner()
        args = ["index", str(odd_names), "--db", db, "--quiet", "--workers", "1"]
        result = runner.invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert "3 photos: 3 indexed (3 faces)" in result.output
        rerun = runner.invoke(cli, args)  # nothing was rolled back: all unchanged
        assert "0 indexed (0 faces), 3 unchanged" in rerun.output
        (frame,) = facevec.find(
            os.path.join(os.fsencode(odd_names), LATIN1_NAME).decode("utf-8", "surrogateescape"),
            db,
            k=1,
        )
        stored = frame.img_name[0]
        assert stored == f"{odd_names}/Jos\\xe9.jpg"
        assert os.fsencode(path_from_text(stored)) == os.fsencode(odd_names) + b"/" + LATIN1_NAME
        (frame,) = facevec.find(
            os.fsdecode(os.fsencode(odd_names) + b"/P\xe9rson/" + ESCAPE_NAME), db, k=1
        )
        assert frame.identity[0] == "P\\xe9rson"


def test_escape_sequences_in_names_are_printed_escaped(odd_names, tmp_path):
    db = tmp_path / "escapes.db"
    runner = CliRunner()
    runner.invoke(cli, ["index", str(odd_names), "--db", str(db), "--quiet", "--workers", "1"])
    query = os.fsdecode(os.fsencode(odd_names) + b"/P\xe9rson/" + ESCAPE_NAME)
    result = runner.invoke(cli, ["find", query, "--db", str(db)])
    assert result.exit_code == 0, result.output
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "x\\x1b[31mred\\x07.jpg" in result.output
    # An error line naming such a file is escaped too.
    broken = odd_names.parent / "broken"
    broken.mkdir()
    os.symlink(b"/nowhere", os.path.join(os.fsencode(broken), ESCAPE_NAME))
    result = runner.invoke(cli, ["index", str(broken), "--db", str(tmp_path / "b.db"), "--quiet"])
    assert "\x1b" not in result.output
    assert "error: cannot read " in result.output and "x\\x1b[31mred\\x07.jpg" in result.output


def _without_root_powers() -> list[str]:
    """A command prefix under which permission bits apply, even for root."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without util-linux's setpriv: cannot make a folder unreadable")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}"]


def test_unreadable_folder_is_an_error_and_prune_keeps_its_faces(tmp_path, gallery_maker):
    folder = gallery_maker(tmp_path / "g", {"": ["img12.jpg"], "sub": ["img10.jpg"]})
    db = tmp_path / "g.db"
    facevec.index(folder, db, progress=False, workers=1)
    (folder / "sub").chmod(0)
    try:
        run = subprocess.run(
            [
                *_without_root_powers(),
                sys.executable,
                "-m",
                "facevec",
                "index",
                str(folder),
                "--db",
                str(db),
                "--prune",
                "--quiet",
                "--workers",
                "1",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        (folder / "sub").chmod(0o755)
    assert run.returncode == 0, run.stderr
    assert "pruned" not in run.stdout
    assert "1 in unreadable folders (kept)" in run.stdout
    assert f"error: cannot list folder {folder / 'sub'}: Permission denied" in run.stderr
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT img_name FROM face_meta ORDER BY img_name").fetchall()
    assert kept == [(str(folder / "img12.jpg"),), (str(folder / "sub" / "img10.jpg"),)]


def test_unreadable_photo_is_an_error_and_keeps_its_faces(tmp_path, photos):
    folder = tmp_path / "g"
    folder.mkdir()
    shutil.copy(photos("img12.jpg"), folder / "a.jpg")
    db = tmp_path / "g.db"
    facevec.index(folder, db, progress=False, workers=1)
    (folder / "a.jpg").chmod(0)
    try:
        run = subprocess.run(
            [
                *_without_root_powers(),
                sys.executable,
                "-m",
                "facevec",
                "index",
                str(folder),
                "--db",
                str(db),
                "--prune",
                "--quiet",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        (folder / "a.jpg").chmod(0o644)
    assert run.returncode == 0, run.stderr
    assert f"error: cannot read {folder / 'a.jpg'}: Permission denied" in run.stderr
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM face_meta").fetchone() == (1,)
        assert conn.execute("SELECT outcome FROM ingest_ledger").fetchone() == ("error",)
