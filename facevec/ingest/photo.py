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


@dataclass(frozen=True)
class Settings:
    """How photos are turned into stored faces (besides the database)."""

    options: EmbedOptions
    max_pixels: int = DEFAULT_MAX_PIXELS
    min_face: int = DEFAULT_MIN_FACE
    min_sharpness: float = 0.0


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


def read(path: str) -> bytes:
    # Refuse FIFOs and devices before opening: reading one could block forever.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(f"not a regular file (mode {stat.filemode(mode)})")
    with open(path, "rb") as handle:
        return handle.read()


def read_error(text_path: str, err: OSError) -> Result:
    reason = err.strerror or str(err)
    return Result(text_path, None, None, "error", message=f"cannot read {text_path}: {reason}")


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _keep(faces: list[Face], settings: Settings) -> tuple[list[Face], str | None]:
    """The faces above the quality floors (renumbered 0, 1, ...) and what was dropped."""
    small = blurred = 0
    kept = []
    for face in faces:
        if min(face.w or 0, face.h or 0) < settings.min_face:
            small += 1
        elif settings.min_sharpness and (face.sharpness or 0.0) < settings.min_sharpness:
            blurred += 1
        else:
            kept.append(dataclasses.replace(face, face_index=len(kept)))
    reasons = []
    if small:
        reasons.append(f"{small} smaller than {settings.min_face} pixels (min_face)")
    if blurred:
        reasons.append(f"{blurred} less sharp than {settings.min_sharpness:g} (min_sharpness)")
    if not reasons:
        return kept, None
    return kept, f"{small + blurred} of {len(faces)} faces not stored: " + ", ".join(reasons)


def process(text_path: str, data: bytes, sha256: str, settings: Settings) -> Result:
    """Embed one photo's bytes; every failure but a missing model becomes its outcome."""
    started = time.perf_counter()
    result = Result(text_path, sha256, len(data), "indexed")
    try:
        found = embed.embed_bytes(data, text_path, settings.options, sha256, settings.max_pixels)
        result.faces, result.message = _keep(found, settings)
        result.dropped = len(found) - len(result.faces)
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
    import cv2

    cv2.setNumThreads(1)  # one process per core already


def model_dimensions(options: EmbedOptions) -> int:
    return int(models.build_model(options.model_name, options.detector_backend).output_shape)
