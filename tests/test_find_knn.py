"""The knn strategy in the pipeline: index keeps the facevec_knn index current,
reindex builds it, and its absence or unavailability is a clear error."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from click.testing import CliRunner

import facevec
from facevec import knn
from facevec.cli import cli
from facevec.errors import KnnIndexMissingError
from facevec.storage.database import open_database


def test_index_builds_the_knn_index(gallery_db):
    with open_database(gallery_db, create=False) as db:
        info = knn.status(db.conn)
        assert info is not None
        faces = db.scalar("SELECT COUNT(*) FROM face_meta")
        assert info["vectors"] + info["pending"] == faces
        assert info["pending"] == 0


def _random_gallery(path, n=300, dim=128, seed=3):
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    facevec.add(path, [f"face{i}.jpg" for i in range(n)], vectors, model_name="Dlib")
    return vectors


def test_add_keeps_the_knn_index_current(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db, n=40)
    (frame,) = facevec.find(vectors[3], db, strategy="knn", k=1)
    assert list(frame.img_name) == ["face3.jpg"]


def test_knn_without_an_index_names_reindex(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db)
    with open_database(db) as database:
        knn.drop(database.conn)
    with pytest.raises(KnnIndexMissingError, match=re.escape(f"facevec reindex --db {db}")):
        facevec.find(vectors[0], db, strategy="knn")


@pytest.mark.parametrize("metric", ["euclidean", "cosine", "euclidean_l2"])
def test_reindex_then_knn_matches_extension(tmp_path, metric):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db)
    assert facevec.reindex(db, progress=False) == len(vectors)
    query = vectors[7] + 0.01
    (expected,) = facevec.find(query, db, strategy="extension", distance_metric=metric, k=20)
    (got,) = facevec.find(query, db, strategy="knn", distance_metric=metric, k=20)
    assert list(got.face_id) == list(expected.face_id)
    np.testing.assert_allclose(got.distance, expected.distance, atol=1e-6)
    # Faces added after the build are found without another reindex.
    facevec.add(db, ["late.jpg"], [query], model_name="Dlib")
    (after,) = facevec.find(query, db, strategy="knn", distance_metric=metric, k=1)
    assert list(after.img_name) == ["late.jpg"]


def test_cli_reindex(tmp_path):
    db = tmp_path / "added.db"
    _random_gallery(db, n=50)
    result = CliRunner().invoke(cli, ["reindex", "--db", str(db), "--quiet"])
    assert result.exit_code == 0, result.output
    assert "knn index: 50 faces" in result.output


def test_knn_on_the_python_fallback_is_a_clear_error(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db, n=20)
    facevec.reindex(db, progress=False)
    conn = facevec.connect(db, native=False)
    with pytest.raises(knn.KnnUnavailableError, match="needs the native SQLite extension"):
        facevec.find(vectors[0], conn, strategy="knn")
    # The fallback can still write the table the index watches.
    conn.execute("DELETE FROM face_meta WHERE img_name = 'face0.jpg'")
    conn.commit()
    (frame,) = facevec.find(vectors[0], db, strategy="knn", k=1, similarity_search=True)
    assert frame.img_name[0] != "face0.jpg"


def test_many_queries_in_one_batch_equal_single_finds(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db, n=400)
    queries = [vectors[i] + 0.01 for i in (3, 50, 120, 399)]
    for strategy in ("knn", "extension"):
        frames = facevec.find(queries, db, strategy=strategy, k=7, similarity_search=True)
        singles = [
            facevec.find(q, db, strategy=strategy, k=7, similarity_search=True)[0] for q in queries
        ]
        assert len(frames) == 4
        for got, want in zip(frames, singles, strict=True):
            assert list(got.face_id) == list(want.face_id)
            assert list(got.distance) == list(want.distance)


def test_reindex_lists_builds_an_ivf_index_and_find_takes_nprobe(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db, n=600)
    result = CliRunner().invoke(cli, ["reindex", "--db", str(db), "--lists", "12", "--quiet"])
    assert result.exit_code == 0, result.output
    with open_database(db, create=False) as database:
        info = knn.status(database.conn)
        assert info["lists"] == 12
    # The same command trains the gallery's SQL lists (relational, client) on SQLite.
    assert "IVF lists: 12 lists over 600 faces" in result.output
    assert facevec.info(db)["ivf_lists"]["lists"] == 12
    query = vectors[9] + 0.01
    (exact,) = facevec.find(query, db, strategy="extension", k=10, similarity_search=True)
    (every,) = facevec.find(query, db, strategy="knn", k=10, nprobe=12, similarity_search=True)
    assert list(every.face_id) == list(exact.face_id)
    for strategy in ("relational", "client"):
        (listed,) = facevec.find(
            query, db, strategy=strategy, k=10, nprobe=12, similarity_search=True
        )
        assert list(listed.face_id) == list(exact.face_id)
    (one,) = facevec.find(query, db, strategy="knn", k=1, nprobe=1)
    assert list(one.img_name) == ["face9.jpg"]
    # Faces added later are found at once; reindex keeps the index IVF and retrains it.
    facevec.add(db, ["late.jpg"], [query], model_name="Dlib")
    (after,) = facevec.find(query, db, strategy="knn", k=1, nprobe=1)
    assert list(after.img_name) == ["late.jpg"]
    assert facevec.reindex(db, progress=False) == 601
    with open_database(db, create=False) as database:
        assert knn.status(database.conn)["lists"] == round(601**0.5)
    result = CliRunner().invoke(cli, ["reindex", "--db", str(db), "--lists", "0", "--quiet"])
    assert result.exit_code == 0, result.output
    with open_database(db, create=False) as database:
        assert knn.status(database.conn)["lists"] == 0


def test_find_over_a_folder(tmp_path, gallery_db_copy, photos):
    import shutil

    folder = tmp_path / "queries"
    folder.mkdir()
    for name in ("img1.jpg", "img2.jpg"):
        shutil.copy(photos(name), folder / name)
    (folder / "notes.txt").write_text("not a photo")
    facevec.reindex(gallery_db_copy, progress=False, lists=2)
    frames = facevec.find(folder, gallery_db_copy, strategy="knn", nprobe=2)
    singles = [
        frame
        for name in ("img1.jpg", "img2.jpg")
        for frame in facevec.find(folder / name, gallery_db_copy, strategy="knn", nprobe=2)
    ]
    assert sorted({f.attrs["img"] for f in frames}) == [
        str(folder / "img1.jpg"),
        str(folder / "img2.jpg"),
    ]
    assert [list(f.face_id) for f in frames] == [list(f.face_id) for f in singles]
    result = CliRunner().invoke(cli, ["find", str(folder), "--db", str(gallery_db_copy)])
    assert result.exit_code == 0, result.output
    assert "img1.jpg: query face 0" in result.output
    # --nprobe reaches the search: the same faces as the API, and 0 is refused.
    args = ["find", str(folder), "--db", str(gallery_db_copy), "--strategy", "knn"]
    shown = CliRunner().invoke(cli, [*args, "--nprobe", "2", "--format", "json"])
    assert shown.exit_code == 0, shown.output
    assert [[row["face_id"] for row in frame] for frame in json.loads(shown.output)] == [
        list(f.face_id) for f in frames
    ]
    refused = CliRunner().invoke(cli, [*args, "--nprobe", "0"])
    assert refused.exit_code == 2 and "--nprobe" in refused.output


def test_reindex_storage_compresses_the_knn_index(tmp_path):
    db = tmp_path / "added.db"
    vectors = _random_gallery(db, n=300)
    result = CliRunner().invoke(cli, ["reindex", "--db", str(db), "--storage", "int8", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "knn index: 300 faces, stored as int8" in result.output
    with open_database(db, create=False) as database:
        assert knn.status(database.conn)["storage"] == "int8"
    query = vectors[11] + 0.01
    (exact,) = facevec.find(query, db, strategy="extension", k=10, similarity_search=True)
    (got,) = facevec.find(query, db, strategy="knn", k=10, similarity_search=True)
    assert list(got.face_id) == list(exact.face_id)
    assert list(got.distance) == list(exact.distance)  # re-ranked by the exact vectors
    facevec.add(db, ["late.jpg"], [query], model_name="Dlib")
    (after,) = facevec.find(query, db, strategy="knn", k=1)
    assert list(after.img_name) == ["late.jpg"]
    # reindex keeps the storage unless told otherwise.
    assert facevec.reindex(db, progress=False) == 301
    with open_database(db, create=False) as database:
        assert knn.status(database.conn)["storage"] == "int8"
