"""Detect, align and embed the faces of one photo with deepface's models.

Two paths, chosen by ``EmbedOptions.exact``:

- fast (default): the photo is decoded once (scaled down past ``WORKING_PIXELS``),
  faces are found on a scaled copy and aligned on a crop (``engine/detect.py``),
  and all faces of the photo go through the model in one batch;
- exact: deepface's own ``extract_faces`` on the full-size photo, so vectors equal
  ``DeepFace.represent``'s (the faces are still embedded in one batch).

Either way each face keeps the exact model input as a lossless PNG, so
re-embedding the stored crop with detector 'skip' gives the stored vector back.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import NoFaceError
from ..face import Face
from ..options import DEFAULT_OPTIONS, EmbedOptions
from . import models
from .decode import (
    DEFAULT_MAX_PIXELS,
    WORKING_PIXELS,
    Photo,
    decode_image,
    decode_photo,
)

__all__ = ["embed_bytes", "embed_crop", "embed_image", "embed_photo", "sharpness"]


def _model_input_png(batch_row: np.ndarray) -> bytes:
    """One model input as deepface feeds it (x in [0, 1]), quantised as the model sees it."""
    import cv2

    pixels = batch_row * 255 if batch_row.max() <= 1 else batch_row
    ok, png = cv2.imencode(".png", np.clip(pixels, 0, 255).astype(np.uint8))
    if not ok:  # pragma: no cover - PNG encoding of a uint8 image does not fail
        raise RuntimeError("could not encode the face crop as PNG")
    return png.tobytes()


def sharpness(face_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the face at 100 pixels wide (higher: sharper)."""
    import cv2

    pixels = face_bgr * 255 if face_bgr.max() <= 1 else face_bgr
    gray = cv2.cvtColor(np.clip(pixels, 0, 255).astype(np.uint8), cv2.COLOR_BGR2GRAY)
    height = max(1, round(gray.shape[0] * 100 / gray.shape[1]))
    gray = cv2.resize(gray, (100, height), interpolation=cv2.INTER_AREA)
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def _embed_batch(crops: list[np.ndarray], options: EmbedOptions) -> tuple[np.ndarray, np.ndarray]:
    """deepface's represent (detector 'skip') for many crops in one forward pass."""
    from deepface.modules import preprocessing

    model = models.build_model(options.model_name, options.detector_backend)
    target = (model.input_shape[1], model.input_shape[0])
    inputs = np.concatenate(
        [preprocessing.resize_image(img=crop, target_size=target) for crop in crops], axis=0
    )
    pngs = inputs.copy()  # normalize_input may change its argument in place
    batch = np.concatenate(
        [
            preprocessing.normalize_input(
                img=inputs[i : i + 1], normalization=options.normalization
            )
            for i in range(len(crops))
        ],
        axis=0,
    )
    vectors = np.asarray(model.forward(batch), dtype=np.float32).reshape(len(crops), -1)
    return vectors, pngs


def _eye(value: Any, scale: int) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]) * scale, int(value[1]) * scale)


def _extract(photo: Photo, name: str, options: EmbedOptions) -> list[dict[str, Any]]:
    if options.exact:
        from deepface.modules import detection
        from deepface.modules.exceptions import FaceNotDetected, ImgNotFound

        try:
            return detection.extract_faces(
                img_path=photo.image,
                detector_backend=options.detector_backend,
                enforce_detection=True,
                align=options.align,
                expand_percentage=options.expand_percentage,
                color_face="bgr",
            )
        except (FaceNotDetected, ImgNotFound):  # ImgNotFound: every face was empty
            return []
    from .detect import extract_faces

    return extract_faces(photo.image, options)


def embed_photo(
    photo: Photo, name: str = "image", options: EmbedOptions = DEFAULT_OPTIONS
) -> list[Face]:
    """All faces of a decoded photo, in detection order; NoFaceError when none."""
    models.build_model(options.model_name, options.detector_backend)
    if options.detector_backend == "skip":
        height, width = photo.image.shape[:2]
        found = [
            {
                "face": photo.image,  # as represent(detector 'skip') takes it: uint8
                "facial_area": {"x": 0, "y": 0, "w": width, "h": height},
                "confidence": 0,
            }
        ]
    else:
        found = _extract(photo, name, options)
    if not found:
        raise NoFaceError(f"no face found in {name} (detector {options.detector_backend})")
    vectors, inputs = _embed_batch([item["face"] for item in found], options)
    s = photo.scale
    return [
        Face(
            face_index=index,
            embedding=vectors[index],
            x=int(item["facial_area"]["x"]) * s,
            y=int(item["facial_area"]["y"]) * s,
            w=int(item["facial_area"]["w"]) * s,
            h=int(item["facial_area"]["h"]) * s,
            left_eye=_eye(item["facial_area"].get("left_eye"), s),
            right_eye=_eye(item["facial_area"].get("right_eye"), s),
            confidence=float(item.get("confidence") or 0.0),
            face_png=_model_input_png(inputs[index]),
            sharpness=sharpness(item["face"]),
        )
        for index, item in enumerate(found)
    ]


# Recently embedded photos, keyed by content: find and verify on the same photo in
# one process (or a query photo that was just indexed) skip the network.
_CACHE: OrderedDict[tuple[str, EmbedOptions], list[Face]] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    _CACHE.clear()


def _cached(key: tuple[str, EmbedOptions], compute: Any) -> list[Face]:
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    faces = compute()
    with _CACHE_LOCK:
        _CACHE[key] = faces
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return faces


def embed_image(
    image: np.ndarray,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    content_key: str | None = None,
) -> list[Face]:
    """All faces of a decoded BGR image (used at the size given)."""
    if content_key is None:
        content_key = hashlib.sha256(
            repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()
        ).hexdigest()
    height, width = image.shape[:2]
    photo = Photo(image, 1, width, height)
    return _cached((content_key, options), lambda: embed_photo(photo, name, options))


def embed_bytes(
    data: bytes,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    sha256: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Face]:
    """All faces of an encoded photo (JPEG, PNG, WebP, ... bytes); ``sha256`` is
    the bytes' digest when the caller has it already. Photos over `max_pixels` are
    refused (PhotoTooLargeError) before they are decoded."""
    content_key = sha256 or hashlib.sha256(data).hexdigest()

    def compute() -> list[Face]:
        working = None if options.exact else WORKING_PIXELS
        photo = decode_photo(data, name, max_pixels, working_pixels=working)
        return embed_photo(photo, name, options)

    return _cached((content_key, options), compute)


def embed_crop(png: bytes, model_name: str = models.DEFAULT_MODEL) -> np.ndarray:
    """Re-embed a stored face crop with detector 'skip' (no detection, no alignment)."""
    image = decode_image(png, "face crop")
    models.build_model(model_name, "skip")
    from deepface.modules import representation

    represented = representation.represent(
        img_path=image, model_name=model_name, detector_backend="skip"
    )
    return np.asarray(represented[0]["embedding"], dtype=np.float32)
