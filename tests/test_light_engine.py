"""The light install ([dlib]: no deepface, no TensorFlow, no OpenCV) makes the vectors
the deepface install makes: the same model input, pixel for pixel but for a rounding
in a few pixels in ten thousand, and the same vectors to 1e-3.

CI runs the second test once more with FACEVEC_LIGHT_PYTHON naming the interpreter of
a fresh venv that has only `pip install -e '.[dlib]'`; without it, this interpreter
runs with deepface, TensorFlow and OpenCV made unimportable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from facevec.engine import align, detect, dlib_models, embed
from facevec.options import EmbedOptions

PHOTOS = ("img12.jpg", "couple.jpg", "img22.jpg", "selfie-many-people.jpg", "img2.jpg")
# Vectors of the same model input agree to float rounding; a pixel off by one in a
# hundred thousand moves a vector by about 1e-4 (the same face elsewhere: ~0.4 away).
VECTOR_TOLERANCE = 1e-3
HEAVY = ("deepface", "tensorflow", "tf_keras", "keras", "cv2")


def _deepface_inputs(image: np.ndarray, regions: list[detect.Region]) -> np.ndarray:
    """The model inputs deepface's own code cuts for these detections (its bordered
    photo, extract_face, resize_image)."""
    import cv2
    from deepface.models.Detector import FacialAreaRegion
    from deepface.modules import detection, preprocessing

    height, width = image.shape[:2]
    top, left = int(0.5 * height), int(0.5 * width)
    padded = cv2.copyMakeBorder(image, top, top, left, left, cv2.BORDER_CONSTANT, value=[0, 0, 0])
    inputs = []
    for region in regions:
        area = FacialAreaRegion(
            x=region.x,
            y=region.y,
            w=region.w,
            h=region.h,
            left_eye=region.left_eye,
            right_eye=region.right_eye,
            confidence=region.confidence,
        )
        face = detection.extract_face(area, padded, True, 0, left, top, "dlib").img
        face = face / 255 if face.max() > 1 else face
        inputs.append(preprocessing.resize_image(face, dlib_models.INPUT_SIZE))
    return np.concatenate(inputs)


def _light_inputs(image: np.ndarray, regions: list[detect.Region]) -> np.ndarray:
    height, width = image.shape[:2]
    bordered = detect._BorderedImage(image, (int(0.5 * height), int(0.5 * width)))
    inputs = []
    for region in regions:
        crop = detect._extract_face(bordered, region, EmbedOptions())[0]
        if isinstance(crop, np.ndarray) and crop.max() > 1:
            crop = crop / 255
        inputs.append(align.model_input(crop, dlib_models.INPUT_SIZE))
    return np.concatenate(inputs)


@pytest.fixture(scope="module")
def deepface_path(photos):
    """{photo: (light model inputs, deepface's inputs, deepface's vectors)}."""
    from deepface.modules import modeling

    from facevec.engine import models
    from facevec.engine.decode import decode_image

    models.build_model("Dlib", "dlib")  # deepface's Dlib model, its weights placed
    deepface_model = modeling.build_model(task="facial_recognition", model_name="Dlib")
    found = {}
    for name in PHOTOS:
        with open(photos(name), "rb") as handle:
            image = decode_image(handle.read(), name)
        height, width = image.shape[:2]
        regions = detect._detect_dlib(image, (int(0.5 * height), int(0.5 * width)))
        theirs = _deepface_inputs(image, regions)
        vectors = np.asarray(deepface_model.forward(theirs), np.float32).reshape(len(regions), -1)
        found[name] = (_light_inputs(image, regions), theirs, vectors)
    return found


def test_light_engine_feeds_the_model_deepfaces_pixels_and_gets_its_vectors(deepface_path):
    pixels = differing = 0
    for name, (mine, theirs, vectors) in deepface_path.items():
        assert mine.shape == theirs.shape, name
        # As the Dlib model reads its input: 8-bit.
        mine8, theirs8 = (mine * 255).astype(np.uint8), (theirs * 255).astype(np.uint8)
        assert np.abs(mine8.astype(int) - theirs8).max() <= 1, name
        pixels += mine8.size
        differing += int((mine8 != theirs8).sum())
        light = dlib_models.describe(mine)
        np.testing.assert_allclose(light, vectors, atol=VECTOR_TOLERANCE, err_msg=name)
    assert differing <= pixels / 1000, (differing, pixels)


def _index_without_deepface(folder, db) -> subprocess.CompletedProcess:
    """`facevec index` in an interpreter where deepface, TensorFlow and OpenCV cannot be
    imported: the light venv's (FACEVEC_LIGHT_PYTHON), else this one with them blocked."""
    python = os.environ.get("FACEVEC_LIGHT_PYTHON") or sys.executable
    script = (
        "import importlib.util, json, sys\n"
        f"for name in {HEAVY!r}:\n"
        "    if importlib.util.find_spec(name) is not None:\n"
        "        sys.modules[name] = None  # installed here: made unimportable\n"
        "import facevec\n"
        f"report = facevec.index({str(folder)!r}, {str(db)!r}, progress=False, workers=2)\n"
        f"print(json.dumps([report.faces_added, sorted(m for m in sys.modules "
        f"if m.split('.')[0] in {HEAVY!r} and sys.modules[m] is not None)]))\n"
    )
    return subprocess.run(
        [python, "-c", script], capture_output=True, text=True, timeout=600, cwd=os.getcwd()
    )


def test_index_without_deepface_stores_the_deepface_install_vectors(
    deepface_path, gallery_maker, tmp_path, photos
):
    import sqlite3

    folder = gallery_maker(tmp_path / "photos", {"": list(PHOTOS)})
    db = tmp_path / "light.db"
    run = _index_without_deepface(folder, db)
    assert run.returncode == 0, run.stderr
    faces_added, heavy_imported = json.loads(run.stdout.splitlines()[-1])
    assert heavy_imported == []
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT img_name, face_index, embedding FROM face_meta ORDER BY img_name, face_index"
        ).fetchall()
    assert faces_added == len(rows) == sum(len(v[2]) for v in deepface_path.values())
    stored: dict[str, list[np.ndarray]] = {}
    for img_name, _, blob in rows:
        stored.setdefault(os.path.basename(img_name), []).append(np.frombuffer(blob, np.float32))
    for name in PHOTOS:
        # The same as this install's default path, bit for bit ...
        with open(photos(name), "rb") as handle:
            here = [face.embedding for face in embed.embed_bytes(handle.read(), name)]
        np.testing.assert_array_equal(np.asarray(stored[name]), np.asarray(here), err_msg=name)
        # ... and deepface's vectors for the same detections.
        np.testing.assert_allclose(
            np.asarray(stored[name]), deepface_path[name][2], atol=VECTOR_TOLERANCE, err_msg=name
        )


def test_cached_face_detector_finds_what_dlibs_own_finds(tmp_path, monkeypatch, photos):
    import dlib

    from facevec.engine.decode import decode_image

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(dlib_models, "_LOADED", {})
    dlib_models.detector()  # dlib's own, saved for the next process
    (saved,) = tmp_path.glob("facevec/frontal_face_detector-*.svm")
    written = saved.stat().st_mtime_ns
    monkeypatch.setattr(dlib_models, "_LOADED", {})
    cached = dlib_models.detector()  # read from the saved copy
    assert saved.stat().st_mtime_ns == written
    with open(photos("selfie-many-people.jpg"), "rb") as handle:
        image = decode_image(handle.read())
    ours = cached.run(image, 1)
    theirs = dlib.get_frontal_face_detector().run(image, 1)
    assert len(ours[0]) == len(theirs[0]) == 4
    assert [(r.left(), r.top(), r.right(), r.bottom()) for r in ours[0]] == [
        (r.left(), r.top(), r.right(), r.bottom()) for r in theirs[0]
    ]
    assert list(ours[1]) == list(theirs[1])
