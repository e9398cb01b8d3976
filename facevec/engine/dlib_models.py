"""The default model and detector straight from dlib: no deepface, no TensorFlow.

deepface's Dlib model and dlib detector are thin wrappers of three dlib objects:
the HOG face detector, the 5-point shape predictor and the ResNet face descriptor.
Loading those objects here (weights from the ``face-recognition-models`` package,
the ``[dlib]`` extra) and feeding them what deepface feeds them gives deepface's
vectors at a fraction of the start-up: a worker process is ready in well under a
second, where importing deepface alone takes several.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from ..errors import MissingDependencyError, MissingWeightsError
from .weights import weights_dir

RECOGNITION_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARK_WEIGHTS = "shape_predictor_5_face_landmarks.dat"
INPUT_SIZE = (150, 150)  # the descriptor's input (height, width)
DIMENSIONS = 128

_LOADED: dict[str, Any] = {}
_LOCK = threading.Lock()


def _dlib() -> Any:
    try:
        import dlib
    except ImportError as err:
        raise MissingDependencyError(
            "dlib is needed for the Dlib model and the dlib detector: pip install 'facevec[dlib]'"
        ) from err
    return dlib


def weight_file(name: str) -> str:
    """A dlib weight file: from face-recognition-models, else deepface's weights folder."""
    places = []
    try:
        import face_recognition_models
    except ImportError:
        pass
    else:
        places.append(os.path.join(os.path.dirname(face_recognition_models.__file__), "models"))
    places.append(weights_dir())
    for place in places:
        path = os.path.join(place, name)
        if os.path.isfile(path):
            return path
    raise MissingWeightsError(
        f"dlib weight file {name!r} not found in {' or '.join(places)}: "
        "pip install 'facevec[dlib]' (it installs face-recognition-models, which ships it)"
    )


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "facevec")


def _frontal_face_detector(dlib: Any) -> Any:
    """dlib's HOG face detector. dlib builds it from a compressed string in its library
    (0.35 s of CPU, most of a worker's start-up); a copy saved once in the user's cache
    folder loads in milliseconds. Where the cache cannot be written, dlib's own is used."""
    path = os.path.join(_cache_dir(), f"frontal_face_detector-{dlib.__version__}.svm")
    if os.path.isfile(path):
        try:
            return dlib.fhog_object_detector(path)
        except RuntimeError:  # a damaged copy: rebuilt below
            pass
    detector = dlib.get_frontal_face_detector()
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        partial = f"{path}.{os.getpid()}.tmp"
        detector.save(partial)
        os.replace(partial, path)  # whole or absent, whatever other processes do
    except OSError:
        pass
    return detector


def _load(key: str) -> Any:
    with _LOCK:
        if key not in _LOADED:
            dlib = _dlib()
            if key == "detector":
                _LOADED[key] = _frontal_face_detector(dlib)
            elif key == "landmarks":
                _LOADED[key] = dlib.shape_predictor(weight_file(LANDMARK_WEIGHTS))
            else:
                _LOADED[key] = dlib.face_recognition_model_v1(weight_file(RECOGNITION_WEIGHTS))
        return _LOADED[key]


def detector() -> Any:
    """dlib's HOG frontal face detector (deepface's 'dlib' detector)."""
    return _load("detector")


def landmarks() -> Any:
    """dlib's 5-point shape predictor (deepface takes the eyes from it)."""
    return _load("landmarks")


def recognizer() -> Any:
    """dlib's ResNet face descriptor (deepface's 'Dlib' model)."""
    return _load("recognizer")


def rectangle(left: int, top: int, right: int, bottom: int) -> Any:
    return _dlib().rectangle(left, top, right, bottom)


def load(detect: bool) -> None:
    """Load the model (and the detector's landmarks) before the first photo."""
    recognizer()
    if detect:
        detector()
        landmarks()


def describe(batch: np.ndarray) -> np.ndarray:
    """deepface's DlibClient.forward: (n, 150, 150, 3) BGR inputs in [0, 1] to (n, 128)."""
    images = batch[:, :, :, ::-1]  # BGR to RGB
    if images.max() <= 1:
        images = images * 255
    images = images.astype(np.uint8)
    descriptors = recognizer().compute_face_descriptor(images)
    return np.asarray([np.array(d) for d in descriptors], dtype=np.float32).reshape(
        len(batch), DIMENSIONS
    )
