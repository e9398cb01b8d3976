"""facevec.find on the indexed gallery: right faces, the same answer every way.

Tests taking `gallery_on` run on SQLite, PostgreSQL and MariaDB (the session's
gallery, copied to each server), with every strategy the backend has.
"""

from __future__ import annotations

import math
import os
import re
import sqlite3
from contextlib import nullcontext

import numpy as np
import pytest
from backends import STRATEGIES
from seed_query import seed_query

import facevec
from facevec import errors as pipeline_errors

METRICS = ("euclidean", "cosine", "euclidean_l2")


def names(frame):
    return [os.path.basename(name) for name in frame.img_name]


def keys(frame):
    return list(zip(names(frame), frame.face_index, strict=True))


def test_img1_finds_its_seven_same_identity_photos_and_no_other_person(gallery_on, photos, labels):
    backend, db = gallery_on
    same = {name for name, identity in labels.items() if identity == "id01"}
    for strategy in STRATEGIES[backend]:
        (frame,) = facevec.find(photos("img1.jpg"), db, strategy=strategy)
        assert list(frame.distance) == sorted(frame.distance)
        assert frame.verified.all() and (frame.distance <= 0.6).all()
        assert names(frame)[0] == "img1.jpg" and frame.distance[0] == pytest.approx(0, abs=1e-6)
        found = set(names(frame))
        assert same <= found, strategy  # img1 itself and its seven
        others = {name for name in found if name in labels and labels[name] != "id01"}
        assert others == set(), strategy
        assert set(frame.identity[frame.identity.notna()]) == {"id01"}


def test_result_frame_looks_like_deepface_find(gallery_on, photos):
    backend, db = gallery_on
    expected = ["img_name", "identity", "face_index", "face_id"]
    expected += [f"{side}_{c}" for side in ("target", "source") for c in "xywh"]
    expected += ["threshold", "distance", "verified"]
    for strategy in STRATEGIES[backend]:
        (frame,) = facevec.find(photos("img1.jpg"), db, strategy=strategy, k=2)
        assert list(frame.columns) == expected
        assert len(frame) == 2 and set(frame.threshold) == {0.6}, strategy
        assert frame.source_w[0] > 0 and frame.target_w[0] > 0, strategy


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("similarity_search", [False, True])
def test_all_strategies_return_the_same_rows_and_distances(
    gallery_on, gallery_db, photos, metric, similarity_search
):
    """Every strategy on every backend gives SQLite's extension answer."""
    backend, db = gallery_on
    options = dict(distance_metric=metric, similarity_search=similarity_search)
    (reference,) = facevec.find(photos("img2.jpg"), gallery_db, strategy="extension", **options)
    assert len(reference) >= 8
    for strategy in STRATEGIES[backend]:
        (frame,) = facevec.find(photos("img2.jpg"), db, strategy=strategy, **options)
        # Face ids are the database's own: compare the faces by photo and index.
        assert keys(frame) == keys(reference), strategy
        np.testing.assert_allclose(frame.distance, reference.distance, atol=1e-5, err_msg=strategy)
        assert list(frame.identity.fillna("")) == list(reference.identity.fillna(""))


def test_threshold_override_and_k(gallery_on, photos):
    backend, db = gallery_on
    for strategy in STRATEGIES[backend]:
        (everything,) = facevec.find(photos("img2.jpg"), db, strategy=strategy, threshold=10)
        assert len(everything) == facevec.info(db)["faces"]
        (some,) = facevec.find(photos("img2.jpg"), db, strategy=strategy, threshold=0.5, k=3)
        assert len(some) <= 3 and (some.distance <= 0.5).all()
        assert list(some.face_id) == list(everything.face_id[: len(some)])


def test_multi_face_query_gives_one_frame_per_face(gallery_on, photos):
    backend, db = gallery_on
    for strategy in STRATEGIES[backend]:
        frames = facevec.find(photos("couple.jpg"), db, strategy=strategy, k=1)
        assert len(frames) == 2
        for number, frame in enumerate(frames):
            assert names(frame) == ["couple.jpg"] and list(frame.face_index) == [number]
            assert frame.distance[0] == pytest.approx(0, abs=1e-6)
        assert frames[0].source_x[0] != frames[1].source_x[0]


def test_precomputed_embedding_queries_like_the_photo(gallery_on, gallery_db, photos):
    backend, db = gallery_on
    with sqlite3.connect(gallery_db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE '%/img1.jpg'"
        ).fetchone()
    vector = np.frombuffer(blob, dtype="<f4")
    for strategy in STRATEGIES[backend]:
        (by_photo,) = facevec.find(photos("img1.jpg"), db, strategy=strategy)
        for query in (vector, vector.tolist()):
            (by_vector,) = facevec.find(query, db, strategy=strategy)
            assert list(by_vector.face_id) == list(by_photo.face_id)
            np.testing.assert_allclose(by_vector.distance, by_photo.distance, atol=1e-6)
        with pytest.raises(
            pipeline_errors.ModelMismatchError,
            match=re.escape("holds 128-dimensional Dlib vectors"),
        ):
            facevec.find(vector[:64], db, strategy=strategy)


def test_the_seeds_own_query_runs_unchanged_and_ranks_like_find(gallery_db, photos):
    with sqlite3.connect(gallery_db) as conn:  # a plain SQLite connection: no extension
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE '%/img7.jpg'"
        ).fetchone()
        target_embedding = np.frombuffer(blob, dtype="<f4").tolist()
        seed = conn.execute(seed_query(target_embedding)).fetchall()
        multi_face = {
            name
            for (name,) in conn.execute(
                "SELECT img_name FROM face_meta GROUP BY img_name HAVING COUNT(*) > 1"
            )
        }
    (frame,) = facevec.find(target_embedding, gallery_db, similarity_search=True)
    # The seed groups by img_name, so it sums a multi-face photo's faces: compare the rest.
    expected = [
        (name, distance)
        for name, distance in zip(frame.img_name, frame.distance, strict=False)
        if name not in multi_face
    ]
    got = [(name, math.sqrt(squared)) for name, squared in seed if name not in multi_face]
    assert [name for name, _ in got] == [name for name, _ in expected]
    np.testing.assert_allclose([d for _, d in got], [d for _, d in expected], atol=1e-5)


def test_query_photo_without_a_face_is_a_clear_error(gallery_on, tmp_path):
    import cv2

    sky = tmp_path / "sky.png"
    cv2.imwrite(str(sky), np.full((200, 300, 3), (235, 206, 135), np.uint8))
    with pytest.raises(
        pipeline_errors.NoFaceError, match=re.escape(f"no face found in {sky} (detector dlib)")
    ):
        facevec.find(str(sky), gallery_on[1])


def test_unknown_metric_and_strategy_are_refused(gallery_on, photos):
    _, gallery_db = gallery_on
    with pytest.raises(
        pipeline_errors.UnknownMetricError,
        match=re.escape(
            "unknown distance metric 'manhattan'; choose one of: euclidean, cosine, euclidean_l2"
        ),
    ):
        facevec.find(photos("img1.jpg"), gallery_db, distance_metric="manhattan")
    with pytest.raises(
        pipeline_errors.UnknownStrategyError,
        match="choose one of: extension, knn, relational, client",
    ):
        facevec.find(photos("img1.jpg"), gallery_db, strategy="magic")


def test_missing_database_is_not_created(tmp_path, photos):
    missing = tmp_path / "nothing.db"
    with pytest.raises(
        pipeline_errors.DatabaseNotFoundError, match=re.escape(f"no database at {missing}")
    ):
        facevec.find(photos("img1.jpg"), missing)
    assert not missing.exists()


def test_other_model_query_is_refused(gallery_on, photos):
    with pytest.raises(pipeline_errors.ModelMismatchError, match="holds Dlib vectors"):
        facevec.find(photos("img1.jpg"), gallery_on[1], model_name="Facenet")


def test_search_works_while_a_writer_holds_a_transaction(gallery_db_copy, photos):
    writer = sqlite3.connect(gallery_db_copy, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("DELETE FROM face_embeddings")
    writer.execute("DELETE FROM face_meta")
    try:
        for strategy in STRATEGIES["sqlite"]:  # readers see the last committed state
            (frame,) = facevec.find(photos("img1.jpg"), gallery_db_copy, strategy=strategy)
            assert len(frame) >= 8
    finally:
        writer.execute("ROLLBACK")
        writer.close()


@pytest.mark.parametrize("metric", METRICS)
def test_strategies_on_the_python_fallback_match_the_native_extension(
    gallery_db, photos, monkeypatch, metric
):
    """A Python whose sqlite3 cannot load extensions gets the same answers."""
    from facevec.bindings import extension

    (native,) = facevec.find(photos("img2.jpg"), gallery_db, distance_metric=metric)
    monkeypatch.setattr(extension, "_route", "fallback")
    with pytest.warns(facevec.FallbackWarning) if not extension._warned else nullcontext():
        conn = facevec.connect(gallery_db)
    assert not extension.is_native(conn)
    for strategy in ("extension", "relational", "client"):
        (frame,) = facevec.find(photos("img2.jpg"), conn, strategy=strategy, distance_metric=metric)
        assert list(frame.face_id) == list(native.face_id), strategy
        np.testing.assert_allclose(frame.distance, native.distance, atol=1e-5, err_msg=strategy)
    conn.close()
