"""The ledger decides what a rerun redoes: a file indexed with other settings is
redone, an unchanged one is skipped without being read (its stat is enough), a
detection under the confidence floor is counted, not stored, and update_paths
brings a list of changed paths up to date as a fresh index would."""

from __future__ import annotations

import os
import shutil
import sqlite3

import numpy as np
import pytest

import facevec
from facevec.errors import InvalidParameterError
from facevec.ingest import photo
from facevec.storage import schema


def ledger_rows(db):
    with sqlite3.connect(db) as conn:
        return {
            path.rsplit("/", 1)[1]: (outcome, faces, message, settings)
            for path, outcome, faces, message, settings in conn.execute(
                "SELECT path, outcome, faces, message, settings FROM ingest_ledger"
            )
        }


def gallery_state(db):
    """{(image name relative to its folder, face index): vector}: what a search sees."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT img_name, face_index, embedding FROM face_meta").fetchall()
    return {
        (name.split("/photos/", 1)[1], index): np.frombuffer(blob, np.float32)
        for name, index, blob in rows
    }


@pytest.fixture
def reads(monkeypatch):
    """The paths whose bytes the index run reads."""
    seen: list[str] = []
    original = photo.read

    def read(path):
        seen.append(os.path.basename(path))
        return original(path)

    monkeypatch.setattr(photo, "read", read)
    return seen


@pytest.fixture
def small_folder(tmp_path, photos):
    """Copies (not links: tests change them) of three small one-face photos."""
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("img12.jpg", "img25.jpg", "img10.jpg"):
        shutil.copy(photos(name), folder / name)
    return folder


def index(folder, db, **options):
    return facevec.index(folder, db, progress=False, workers=1, **options)


def test_confidence_floor_drops_the_background_patch_and_the_ledger_counts_it(tmp_path, photos):
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos("img67.jpg"), folder / "img67.jpg")
    db = tmp_path / "floor.db"
    report = index(folder, db)
    assert (report.faces_added, report.faces_dropped) == (1, 1)
    outcome, faces, message, settings = ledger_rows(db)["img67.jpg"]
    assert (outcome, faces) == ("indexed", 1)
    assert message == (
        "1 of 2 faces not stored: 1 detected with confidence under 0.2 (min_confidence)"
    )
    assert settings.endswith(";min_confidence=0.2")
    with sqlite3.connect(db) as conn:
        (width,) = conn.execute("SELECT facial_area_w FROM face_meta").fetchone()
    assert width > 200  # the real face stays; the 43-pixel patch went
    # Another floor is another setting: the photo is redone, and the patch comes back.
    report = index(folder, db, min_confidence=0)
    assert (report.indexed, report.faces_added, report.faces_dropped) == (1, 2, 0)


def test_other_settings_redo_a_file_and_the_same_ones_skip_it(small_folder, tmp_path):
    db = tmp_path / "s.db"
    assert index(small_folder, db).indexed == 3
    assert index(small_folder, db).unchanged == 3
    for changed in (
        {"min_face": 40},
        {"min_face": 40, "min_sharpness": 5.0},
        {"min_face": 40, "min_sharpness": 5.0, "min_confidence": 0.5},
        {"min_face": 40, "min_sharpness": 5.0, "min_confidence": 0.5, "detector_backend": "skip"},
    ):
        report = index(small_folder, db, **changed)
        assert (report.indexed, report.unchanged) == (3, 0), changed
        assert index(small_folder, db, **changed).unchanged == 3, changed
    settings = ledger_rows(db)["img12.jpg"][3]
    assert settings == (
        "model=Dlib;detector=skip;align=1;expand=0;normalization=base;exact=0;"
        "min_face=40;min_sharpness=5;min_confidence=0.5"
    )


def test_a_rescan_reads_only_files_whose_stat_changed(small_folder, tmp_path, reads):
    db = tmp_path / "r.db"
    index(small_folder, db)
    assert sorted(reads) == ["img10.jpg", "img12.jpg", "img25.jpg"]
    reads.clear()
    assert index(small_folder, db).unchanged == 3 and reads == []
    # Touched (same bytes): read and hashed once, not embedded; then skipped unread.
    os.utime(small_folder / "img12.jpg", ns=(10**18, 10**18))
    report = index(small_folder, db)
    assert (report.unchanged, report.indexed, reads) == (3, 0, ["img12.jpg"])
    reads.clear()
    assert index(small_folder, db).unchanged == 3 and reads == []
    # Replaced by other bytes of the same size and time (a new inode): redone.
    target = small_folder / "img25.jpg"
    status = target.stat()
    data = bytearray(target.read_bytes())
    data[-3] ^= 0xFF  # inside the JPEG's last bytes: still decodes
    replacement = small_folder / "new.tmp"
    replacement.write_bytes(bytes(data))
    os.replace(replacement, target)
    os.utime(target, ns=(status.st_atime_ns, status.st_mtime_ns))
    report = index(small_folder, db)
    assert (report.indexed, report.unchanged, reads) == (1, 2, ["img25.jpg"])


def test_a_version_5_gallery_is_upgraded_to_6_and_reruns_skip_its_files(
    small_folder, tmp_path, reads
):
    db = tmp_path / "old.db"
    index(small_folder, db)
    with sqlite3.connect(db) as conn:  # the ledger as schema version 5 had it
        for column in ("mtime_ns", "inode", "settings"):
            conn.execute(f"ALTER TABLE ingest_ledger DROP COLUMN {column}")
        conn.execute("UPDATE facevec_collection SET schema_version = 5")
    reads.clear()
    report = index(small_folder, db)
    # Rows from before keep no settings: judged by hash, model and detector, as then.
    assert (report.unchanged, report.indexed) == (3, 0)
    assert sorted(reads) == ["img10.jpg", "img12.jpg", "img25.jpg"]  # hashed once
    assert facevec.info(db)["schema_version"] == schema.SCHEMA_VERSION
    reads.clear()
    assert index(small_folder, db).unchanged == 3 and reads == []  # stat recorded now
    assert {row[3] for row in ledger_rows(db).values()} == {None}


def test_update_paths_gives_the_gallery_a_fresh_index_makes(tmp_path, photos):
    folder = tmp_path / "photos"
    (folder / "id01").mkdir(parents=True)
    (folder / "gone").mkdir()
    for name in ("img12.jpg", "img25.jpg"):
        shutil.copy(photos(name), folder / name)
    shutil.copy(photos("img1.jpg"), folder / "id01" / "img1.jpg")
    shutil.copy(photos("img10.jpg"), folder / "gone" / "img10.jpg")
    db = tmp_path / "watched.db"
    index(folder, db)
    # What a watcher sees: one photo added, one changed, one renamed, a folder deleted.
    shutil.copy(photos("img8.jpg"), folder / "id01" / "img8.jpg")
    shutil.copy(photos("img22.jpg"), folder / "img12.jpg")
    os.rename(folder / "img25.jpg", folder / "renamed.jpg")
    shutil.rmtree(folder / "gone")
    changed = [
        folder / "id01" / "img8.jpg",
        folder / "img12.jpg",
        folder / "img25.jpg",
        folder / "renamed.jpg",
        folder / "gone",
        folder / "id01" / "img1.jpg",  # unchanged: skipped without a read
    ]
    report = facevec.update_paths(folder, db, changed)
    # The rename keeps its faces (moved, not also unchanged where it now is): two
    # embedded, one unchanged, one folder's photo pruned; each photo seen counted once.
    assert (report.indexed, report.moved, report.unchanged, report.pruned) == (2, 1, 1, 1)
    assert report.files_seen == report.indexed + report.moved + report.unchanged
    fresh = tmp_path / "fresh.db"
    index(folder, fresh)
    assert gallery_state(db).keys() == gallery_state(fresh).keys()
    for key, vector in gallery_state(fresh).items():
        np.testing.assert_array_equal(gallery_state(db)[key], vector)
    assert ledger_rows(db).keys() == ledger_rows(fresh).keys()
    with sqlite3.connect(db) as conn:
        identities = dict(conn.execute("SELECT img_name, identity FROM face_meta"))
    assert identities[str(folder / "id01" / "img8.jpg")] == "id01"


def test_update_paths_refuses_a_path_outside_the_folder(small_folder, tmp_path):
    with pytest.raises(InvalidParameterError, match="is not under"):
        facevec.update_paths(small_folder, tmp_path / "x.db", [tmp_path / "elsewhere.jpg"])
