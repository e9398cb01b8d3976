"""facevec.verify agrees with DeepFace.verify on the same pair and settings."""

from __future__ import annotations

import re

import numpy as np
import pytest

import facevec
from facevec import errors as pipeline_errors


@pytest.fixture(scope="module")
def pair(photos):
    return photos("img1.jpg"), photos("img2.jpg")


def test_verify_agrees_with_deepface(pair):
    from deepface import DeepFace

    ours = facevec.verify(
        *pair, model_name="Dlib", detector_backend="dlib", distance_metric="euclidean", exact=True
    )
    theirs = DeepFace.verify(
        *pair, model_name="Dlib", detector_backend="dlib", distance_metric="euclidean", silent=True
    )
    assert ours["distance"] == pytest.approx(theirs["distance"], abs=1e-4)
    assert ours["verified"] == theirs["verified"] is True
    assert ours["threshold"] == theirs["threshold"] == 0.6
    assert ours["facial_areas"]["img1"]["x"] == theirs["facial_areas"]["img1"]["x"]
    for key in ("model", "detector_backend", "distance_metric", "similarity_metric", "time"):
        assert key in ours
    # The default (fast) path: the same decision, the same face (tests/test_decisions.py
    # checks every labelled pair).
    fast = facevec.verify(*pair)
    assert fast["verified"] is True
    assert abs(fast["facial_areas"]["img1"]["x"] - theirs["facial_areas"]["img1"]["x"]) < 60


@pytest.mark.parametrize("metric", ["cosine", "euclidean_l2"])
def test_verify_metrics_match_deepface_distance_functions(pair, metric):
    from deepface.modules.verification import find_distance, find_threshold

    from facevec.engine import embed

    faces = [embed.embed_bytes(open(path, "rb").read(), path)[0] for path in pair]
    result = facevec.verify(*pair, distance_metric=metric)
    expected = float(
        find_distance(
            faces[0].embedding.astype(np.float64), faces[1].embedding.astype(np.float64), metric
        )
    )
    assert result["distance"] == pytest.approx(expected, abs=1e-5)
    assert result["threshold"] == find_threshold("Dlib", metric)


def test_different_people_are_not_verified(photos):
    result = facevec.verify(photos("img1.jpg"), photos("img12.jpg"))
    assert result["verified"] is False and result["distance"] > result["threshold"]


def test_verify_accepts_precomputed_embeddings(pair):
    from facevec.engine import embed

    vector = embed.embed_bytes(open(pair[1], "rb").read(), pair[1])[0].embedding
    by_photo = facevec.verify(*pair)
    by_vector = facevec.verify(pair[0], vector.tolist())
    assert by_vector["distance"] == pytest.approx(by_photo["distance"], abs=1e-6)


def test_threshold_override(pair):
    assert facevec.verify(*pair, threshold=0.1)["verified"] is False


def test_verify_errors(pair, tmp_path):
    import cv2

    with pytest.raises(pipeline_errors.UnknownMetricError, match="unknown distance metric 'l1'"):
        facevec.verify(*pair, distance_metric="l1")
    with pytest.raises(pipeline_errors.UnknownModelError, match="unknown model 'VGG'"):
        facevec.verify(*pair, model_name="VGG")
    sky = tmp_path / "sky.png"
    cv2.imwrite(str(sky), np.full((200, 300, 3), 200, np.uint8))
    with pytest.raises(pipeline_errors.NoFaceError, match=re.escape(f"no face found in {sky}")):
        facevec.verify(pair[0], str(sky))
    notes = tmp_path / "notes.jpg"
    notes.write_text("text")
    with pytest.raises(pipeline_errors.NotAnImageError, match="cannot be decoded as an image"):
        facevec.verify(pair[0], str(notes))
