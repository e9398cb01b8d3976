"""Detect, align and embed the faces of one photo with deepface's models.

Two paths, chosen by ``EmbedOptions.exact``:

- fast (default): the photo is decoded once (scaled down past ``WORKING_PIXELS``),
  faces are found on a scaled copy and aligned on a crop (``engine/detect.py``),
  and all faces of the photo go through the model in one batch;
- exact: deepface's own ``extract_faces`` on the full-size photo, so vectors equal
  ``DeepFace.represent``'s (the faces are still embedded in one batch).

The Dlib model runs on dlib alone (``dlib_models``), every other model through
deepface; either way the model input is deepface's (``align.resize_to_input``).

Either way each face keeps the exact model input as a lossless PNG, so
re-embedding the stored crop with detector 'skip' gives the stored vector back.

Photo bytes are decoded and embedded in this process, unless the caller has named
another embedder for its context (``embedded_by``): the web server hands its
uploads to its pool of embedding processes (``web/embed_pool.py``) that way, and
the rest of the query (the search, identify's scoring) stays where it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any

import numpy as np

from ..errors import NoFaceError
from ..face import Face
from ..options import DEFAULT_OPTIONS, EmbedOptions
from . import align, models
from .decode import (
    DEFAULT_MAX_PIXELS,
    WORKING_PIXELS,
    Photo,
    decode_image,
    decode_photo,
)

__all__ = [
    "decode_and_embed",
    "embed_bytes",
    "embed_crop",
    "embed_image",
    "embed_photo",
    "embedded_by",
    "sharpness",
]


def _model_input_png(batch_row: np.ndarray) -> bytes:
    """One model input as deepface feeds it (x in [0, 1]), quantised as the model sees it."""
    from PIL import Image

    pixels = batch_row * 255 if batch_row.max() <= 1 else batch_row
    rgb = np.ascontiguousarray(np.clip(pixels, 0, 255).astype(np.uint8)[:, :, ::-1])
    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG", compress_level=1)
    return out.getvalue()


def _gray(face_bgr: np.ndarray) -> np.ndarray:
    """uint8 luma as OpenCV's BGR2GRAY computes it (fixed point, 14 bits)."""
    b, g, r = (face_bgr[:, :, i].astype(np.int32) for i in range(3))
    return ((b * 1868 + g * 9617 + r * 4899 + (1 << 13)) >> 14).astype(np.uint8)


def sharpness(face_bgr: np.ndarray) -> float:
    """Variance of the Laplacian of the face at 100 pixels wide (higher: sharper)."""
    from PIL import Image

    pixels = face_bgr * 255 if face_bgr.max() <= 1 else face_bgr
    gray = _gray(np.clip(pixels, 0, 255).astype(np.uint8))
    height = max(1, round(gray.shape[0] * 100 / gray.shape[1]))
    small = Image.fromarray(gray).resize((100, height), Image.Resampling.BOX)
    image = np.pad(np.asarray(small, dtype=np.float64), 1, mode="reflect")
    laplacian = (
        image[:-2, 1:-1] + image[2:, 1:-1] + image[1:-1, :-2] + image[1:-1, 2:]
    ) - 4 * image[1:-1, 1:-1]
    return float(laplacian.var())


def _embed_batch(
    crops: list[Any], options: EmbedOptions, measure_sharpness: bool = True
) -> tuple[np.ndarray, np.ndarray, list[float | None]]:
    """deepface's represent (detector 'skip') for many crops in one forward pass: the
    vectors, the model inputs, and each face's sharpness (None unless measured)."""
    if models.needs_deepface(options):
        model = models.build_model(options.model_name, options.detector_backend)
        target = (model.input_shape[1], model.input_shape[0])
    else:
        from . import dlib_models

        target = dlib_models.INPUT_SIZE
    inputs = np.concatenate([align.model_input(crop, target) for crop in crops], axis=0)
    # Sharpness is measured at 100 pixels wide: a rotated crop is read at 200 or more.
    sharp: list[float | None] = [
        sharpness(crop.preview(200) if isinstance(crop, align.RotatedCrop) else crop)
        if measure_sharpness
        else None
        for crop in crops
    ]
    if not models.needs_deepface(options):
        return dlib_models.describe(inputs), inputs, sharp
    from deepface.modules import preprocessing

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
    return vectors, pngs, sharp


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


# deepface keeps one model object per process, and dlib's network holds each
# layer's output in the object itself: two threads running it at once (a web
# search during an index run in the same process) would mix their results.
_INFERENCE_LOCK = threading.Lock()


def embed_photo(
    photo: Photo,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    measure_sharpness: bool = True,
) -> list[Face]:
    """All faces of a decoded photo, in detection order; NoFaceError when none.
    measure_sharpness=False leaves Face.sharpness None (it costs a look at each face)."""
    with _INFERENCE_LOCK:
        return _embed_photo(photo, name, options, measure_sharpness)


def _embed_photo(
    photo: Photo, name: str, options: EmbedOptions, measure_sharpness: bool
) -> list[Face]:
    models.prepare(options)
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
    vectors, inputs, sharp = _embed_batch(
        [item["face"] for item in found], options, measure_sharpness
    )
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
            sharpness=sharp[index],
        )
        for index, item in enumerate(found)
    ]


# Recently embedded photos, keyed by content: find and verify on the same photo in
# one process (or a query photo that was just indexed) skip the network.
_CACHE: OrderedDict[tuple[str, EmbedOptions, bool], list[Face]] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    _CACHE.clear()


def _cached(key: tuple[str, EmbedOptions, bool], compute: Any) -> list[Face]:
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
    return _cached((content_key, options, True), lambda: embed_photo(photo, name, options))


def embed_bytes(
    data: bytes,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    sha256: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    measure_sharpness: bool = True,
) -> list[Face]:
    """All faces of an encoded photo (JPEG, PNG, WebP, HEIC, AVIF, camera RAW, ...
    bytes); ``sha256`` is the bytes' digest when the caller has it already. Photos over
    `max_pixels` are refused (PhotoTooLargeError) before they are decoded."""
    content_key = sha256 or hashlib.sha256(data).hexdigest()
    embedder = _EMBEDDER.get() or decode_and_embed

    def compute() -> list[Face]:
        return embedder(data, name, options, max_pixels, measure_sharpness)

    return _cached((content_key, options, measure_sharpness), compute)


def decode_and_embed(
    data: bytes,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    measure_sharpness: bool = True,
) -> list[Face]:
    """embed_bytes in this process, without the cache: decode, detect, embed."""
    working = None if options.exact else WORKING_PIXELS
    photo = decode_photo(data, name, max_pixels, working_pixels=working)
    return embed_photo(photo, name, options, measure_sharpness)


# What embed_bytes does with photo bytes: decode_and_embed's arguments, in order.
Embedder = Callable[[bytes, str, EmbedOptions, int, bool], list[Face]]
_EMBEDDER: ContextVar[Embedder | None] = ContextVar("facevec_embedder", default=None)


@contextlib.contextmanager
def embedded_by(embedder: Embedder | None) -> Iterator[None]:
    """Within this block (this thread or task, see ``contextvars``), embed_bytes hands
    photos it has not cached to `embedder` instead of decoding them here; None:
    here, as by default."""
    token = _EMBEDDER.set(embedder)
    try:
        yield
    finally:
        _EMBEDDER.reset(token)


def embed_crop(png: bytes, model_name: str = models.DEFAULT_MODEL) -> np.ndarray:
    """Re-embed a stored face crop with detector 'skip' (no detection, no alignment)."""
    image = decode_image(png, "face crop")
    options = EmbedOptions(model_name, "skip")
    with _INFERENCE_LOCK:
        models.prepare(options)
        if not models.needs_deepface(options):
            return _embed_batch([image], options)[0][0]
        from deepface.modules import representation

        represented = representation.represent(
            img_path=image, model_name=model_name, detector_backend="skip"
        )
    return np.asarray(represented[0]["embedding"], dtype=np.float32)
