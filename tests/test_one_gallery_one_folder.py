"""A gallery is one database and a folder one folder, however they are spelled:
``copy`` onto itself is refused before anything is written, and ``//abs/folder``,
``/abs/./folder`` or a link to it never index a photo twice (a gallery that stored
an earlier spelling keeps working)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from backends import SERVERS, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import InvalidParameterError
from facevec.storage.database import open_database
from facevec.transfer import copy_gallery

DIM = 16


def people_rows(db) -> list[tuple]:
    with open_database(db, create=False) as database:
        return database.query("SELECT face_id, person_id, source FROM person_face ORDER BY 1")


def spellings(path) -> list[str]:
    folder, name = os.path.split(str(path))
    os.link(path, os.path.join(folder, "hard.db"))
    os.symlink(path, os.path.join(folder, "soft.db"))
    return [
        str(path),
        "/" + str(path),  # //abs/...
        os.path.join(folder, ".", name),
        os.path.join(folder, "..", os.path.basename(folder), name),
        os.path.relpath(path),
        os.path.join(folder, "hard.db"),
        os.path.join(folder, "soft.db"),
    ]


def test_copy_onto_itself_is_refused_by_any_spelling_before_anything_is_written(tmp_path):
    db = tmp_path / "g.db"
    facevec.add(db, ["a", "b"], np.eye(2, DIM) + 1, identities=["A", "A"])
    facevec.people.confirm(db, "A")
    before = people_rows(db)
    for spelling in spellings(db):
        with pytest.raises(InvalidParameterError, match="is the gallery .* itself"):
            copy_gallery(db, spelling)
        result = CliRunner().invoke(cli, ["copy", str(db), spelling])
        assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
        assert "nothing was written" in result.output
    assert people_rows(db) == before  # every confirmed assignment still there
    assert [source for _, _, source in before] == ["confirmed", "confirmed"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", SERVERS)
def test_copy_onto_the_same_server_database_is_refused(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        facevec.add(url, ["a", "b"], np.eye(2, DIM) + 1, identities=["A", "A"])
        facevec.people.confirm(url, "A")
        before = people_rows(url)
        other_spelling = url.replace("127.0.0.1", "localhost")
        for target in (url, other_spelling):
            with pytest.raises(InvalidParameterError, match="itself"):
                copy_gallery(url, target)
        assert people_rows(url) == before


def test_a_folder_is_indexed_once_however_it_is_spelled(tmp_path, monkeypatch):
    """index stores a folder by its real path; the same photos under //abs, ./ or a
    link are the same photos."""
    from facevec.ingest import photo

    folder = tmp_path / "photos"
    (folder / "ann").mkdir(parents=True)
    for name in ("ann/1.jpg", "ann/2.jpg", "3.jpg"):
        (folder / name).write_bytes(name.encode())
    (tmp_path / "link").symlink_to(folder)

    def process(text_path, data, sha256, settings):
        vector = np.frombuffer((data * DIM)[: 4 * DIM].ljust(4 * DIM, b"x"), np.uint8)
        face = facevec.face.Face(0, (vector[:DIM] + 1).astype(np.float32), 0, 0, 50, 50)
        return photo.Result(text_path, sha256, len(data), "indexed", [face])

    monkeypatch.setattr(photo, "process", process)
    monkeypatch.setattr(photo, "model_dimensions", lambda options: DIM)
    db = tmp_path / "g.db"
    first = facevec.index(folder, db, workers=1, progress=False, people_from_folders=True)
    assert first.folder == str(folder) and first.indexed == 3
    for spelling in ("/" + str(folder), f"{tmp_path}/./photos/", str(tmp_path / "link")):
        again = facevec.index(spelling, db, workers=1, progress=False)
        assert (again.unchanged, again.indexed, again.missing) == (3, 0, 0), spelling
    info = facevec.info(db)
    assert (info["faces"], info["files_in_ledger"]) == (3, 3)
    assert {p.name: p.faces for p in facevec.people.list_people(db)} == {"ann": 2}


def test_a_gallery_that_stored_a_link_spelling_keeps_it(tmp_path, monkeypatch):
    """Before, a folder was stored as spelled (absolute): a gallery indexed through a
    link holds that spelling, and indexing it again finds every photo unchanged."""
    from facevec.ingest import photo

    folder = tmp_path / "real"
    folder.mkdir()
    (folder / "1.jpg").write_bytes(b"one")
    (tmp_path / "link").symlink_to(folder)

    def process(text_path, data, sha256, settings):
        face = facevec.face.Face(0, np.arange(1, DIM + 1, dtype=np.float32), 0, 0, 50, 50)
        return photo.Result(text_path, sha256, len(data), "indexed", [face])

    monkeypatch.setattr(photo, "process", process)
    monkeypatch.setattr(photo, "model_dimensions", lambda options: DIM)
    db = tmp_path / "g.db"
    linked = str(tmp_path / "link")
    with monkeypatch.context() as earlier:  # what an earlier version stored
        earlier.setattr("facevec.ingest.folder_spellings", lambda f: [os.path.abspath(f)])
        facevec.index(linked, db, workers=1, progress=False)
    report = facevec.index(linked, db, workers=1, progress=False)
    assert (report.folder, report.unchanged, report.indexed) == (linked, 1, 0)
    assert facevec.info(db)["faces"] == 1
