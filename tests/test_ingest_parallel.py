"""Worker processes give the rows one process gives, in the same order."""

from __future__ import annotations

import sqlite3

import numpy as np

import facevec

PHOTOS = {"id01": ["img10.jpg", "img5.jpg"], "": ["img67.jpg", "img12.jpg", "img25.jpg"]}


def stored(db):
    with sqlite3.connect(db) as conn:
        faces = conn.execute(
            "SELECT id, img_name, identity, face_index, facial_area_x, facial_area_y,"
            " facial_area_w, facial_area_h, embedding FROM face_meta ORDER BY id"
        ).fetchall()
        ledger = conn.execute(
            "SELECT path, sha256, outcome, faces, message FROM ingest_ledger ORDER BY path"
        ).fetchall()
    return faces, ledger


def test_two_workers_store_what_one_stores(tmp_path, gallery_maker):
    folder = gallery_maker(tmp_path / "g", PHOTOS)
    (folder / "notes.jpg").write_text("not pixels")
    one = facevec.index(folder, tmp_path / "one.db", workers=1, progress=False, batch_size=2)
    two = facevec.index(folder, tmp_path / "two.db", workers=2, progress=False, batch_size=2)
    assert (one.workers, two.workers) == (1, 2)
    assert (two.indexed, two.faces_added, two.not_image) == (one.indexed, one.faces_added, 1)
    faces_one, ledger_one = stored(tmp_path / "one.db")
    faces_two, ledger_two = stored(tmp_path / "two.db")
    assert ledger_two == ledger_one
    assert [row[:-1] for row in faces_two] == [row[:-1] for row in faces_one]  # same ids too
    for a, b in zip(faces_one, faces_two, strict=True):
        np.testing.assert_allclose(
            np.frombuffer(a[-1], "<f4"), np.frombuffer(b[-1], "<f4"), atol=1e-5
        )
    rerun = facevec.index(folder, tmp_path / "two.db", workers=2, progress=False)
    assert (rerun.unchanged, rerun.indexed) == (len(ledger_one), 0)  # not_image is final too
