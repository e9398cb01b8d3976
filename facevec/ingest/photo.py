"""What becomes of one photo file: read, hash, embed, filter by quality.

Runs in the index process (one worker) or in worker processes, which load the
model once each (``start_worker``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import stat
import threading
import time
from dataclasses import dataclass, field

from ..engine import embed, models
from ..engine.decode import DEFAULT_MAX_PIXELS
from ..errors import (
    MissingDependencyError,
    MissingFormatSupportError,
    MissingWeightsError,
    NoFaceError,
    NotAnImageError,
    PhotoTooLargeError,
)
from ..face import Face
from ..options import EmbedOptions

# Smaller faces are not stored (counted in the ledger): below what any model can
# recognise, and below the smallest face the dlib detector finds (about 40 pixels).
DEFAULT_MIN_FACE = 32
# Detections less sure than this are not stored (counted in the ledger), per detector.
# dlib's: on the shared test photos the least sure real face scores 0.38 (0.25 with
# deepface's own detection, exact), a 43-pixel background patch 0.15 (benchmarks/README.md).
DEFAULT_MIN_CONFIDENCE = {"dlib": 0.2}
# The ledger's mark on a file whose format needed an extra that was not installed.
NEEDS_FORMATS = ";needs=formats"


def default_min_confidence(detector_backend: str) -> float:
    """The confidence floor measured for a detector (0: none, for the others)."""
    return DEFAULT_MIN_CONFIDENCE.get(detector_backend, 0.0)


@dataclass(frozen=True)
class Settings:
    """How photos are turned into stored faces (besides the database)."""

    options: EmbedOptions
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_face: int = DEFAULT_MIN_FACE
    min_sharpness: float = 0.0
    min_confidence: float = 0.0

    def fingerprint(self) -> str:
        """The settings that decide a file's stored faces, as the ledger records them:
        a file recorded with other ones is redone."""
        o = self.options
        return (
            f"model={o.model_name};detector={o.detector_backend};align={int(o.align)};"
            f"expand={o.expand_percentage};normalization={o.normalization};"
            f"exact={int(o.exact)};min_face={self.min_face};"
            f"min_sharpness={self.min_sharpness:g};min_confidence={self.min_confidence:g}"
        )


@dataclass
class Result:
    path: str  # the stored text form
    sha256: str | None
    size: int | None
    outcome: str
    faces: list[Face] = field(default_factory=list)
    message: str | None = None
    seconds: float = 0.0
    dropped: int = 0  # faces found but below the quality floors
    mtime_ns: int | None = None  # the file's stat when it was read
    inode: int | None = None
    settings: str | None = None  # Settings.fingerprint(), plus NEEDS_FORMATS if so


def stat_of(path: str) -> os.stat_result:
    """The file's stat; refuses FIFOs and devices (reading one could block forever)."""
    status = os.stat(path)
    if not stat.S_ISREG(status.st_mode):
        raise OSError(f"not a regular file (mode {stat.filemode(status.st_mode)})")
    return status


def read(path: str) -> bytes:
    stat_of(path)
    with open(path, "rb") as handle:
        return handle.read()


def read_error(text_path: str, err: OSError) -> Result:
    reason = err.strerror or str(err)
    return Result(text_path, None, None, "error", message=f"cannot read {text_path}: {reason}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keep(faces: list[Face], settings: Settings) -> tuple[list[Face], str | None]:
    """The faces above the quality floors (renumbered 0, 1, ...) and what was dropped."""
    unsure = small = blurred = 0
    kept = []
    for face in faces:
        if face.confidence < settings.min_confidence:
            unsure += 1
        elif min(face.w or 0, face.h or 0) < settings.min_face:
            small += 1
        elif settings.min_sharpness and (face.sharpness or 0.0) < settings.min_sharpness:
            blurred += 1
        else:
            kept.append(dataclasses.replace(face, face_index=len(kept)))
    reasons = []
    if unsure:
        reasons.append(
            f"{unsure} detected with confidence under {settings.min_confidence:g} (min_confidence)"
        )
    if small:
        reasons.append(f"{small} smaller than {settings.min_face} pixels (min_face)")
    if blurred:
        reasons.append(f"{blurred} less sharp than {settings.min_sharpness:g} (min_sharpness)")
    if not reasons:
        return kept, None
    dropped = unsure + small + blurred
    return kept, f"{dropped} of {len(faces)} faces not stored: " + ", ".join(reasons)


def process(text_path: str, data: bytes, sha256: str, settings: Settings) -> Result:
    """Embed one photo's bytes; every failure but a missing model becomes its outcome."""
    started = time.perf_counter()
    result = Result(text_path, sha256, len(data), "indexed", settings=settings.fingerprint())
    try:
        found = embed.embed_bytes(
            data,
            text_path,
            settings.options,
            sha256,
            settings.max_pixels,
            measure_sharpness=settings.min_sharpness > 0,  # only the floor reads it
        )
        result.faces, result.message = _keep(found, settings)
        result.dropped = len(found) - len(result.faces)
    except MissingFormatSupportError as err:
        # Redone once the extra is installed (the ledger's settings carry the mark).
        result.outcome, result.message = "error", str(err)
        result.settings = (result.settings or "") + NEEDS_FORMATS
    except NotAnImageError as err:
        result.outcome, result.message = "not_image", str(err)
    except NoFaceError as err:
        result.outcome, result.message = "no_face", str(err)
    except PhotoTooLargeError as err:
        result.outcome, result.message = "error", str(err)
    except (KeyboardInterrupt, MissingWeightsError, MissingDependencyError):
        raise
    except Exception as err:  # one bad photo must not stop the run; the ledger says why
        result.outcome, result.message = "error", f"{type(err).__name__}: {err}"
    result.seconds = time.perf_counter() - started
    return result


def _exit_with(parent: int) -> None:
    # A writer killed with -9 cannot stop its workers: they notice and end themselves.
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def start_worker(options: EmbedOptions) -> None:
    """A worker process: Ctrl-C is the writer's to handle; end with the writer."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_with, args=(os.getppid(),), daemon=True).start()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        import cv2
    except ImportError:  # the light install has no OpenCV
        return
    cv2.setNumThreads(1)  # one process per core already


def model_dimensions(options: EmbedOptions) -> int:
    """Load the model (and detector) and return its vector size."""
    return models.prepare(options)
