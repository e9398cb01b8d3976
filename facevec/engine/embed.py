"""Detect, align and embed the faces of one photo with deepface.

The steps are deepface's own (``extract_faces`` then ``represent`` with detector
'skip'), so vectors equal those of ``DeepFace.find``/``DeepFace.verify``. Each face
also keeps the exact model input as a lossless PNG, so re-embedding the stored
crop with detector 'skip' gives the stored vector back.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from ..errors import NoFaceError, NotAnImageError
from ..face import Face
from ..options import DEFAULT_OPTIONS, EmbedOptions
from . import models

# (signature, bytes) of image formats, to name what a file really is in messages.
_SIGNATURES = (
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("gif", b"GIF8"),
    ("bmp", b"BM"),
    ("tiff", b"II*\x00"),
    ("tiff", b"MM\x00*"),
)


def sniff_format(data: bytes) -> str | None:
    """The image format the leading bytes announce, whatever the file's name."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for name, signature in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def decode_image(data: bytes, name: str = "image") -> np.ndarray:
    """Decode image bytes to a BGR uint8 array as deepface's own loader does.

    cv2.imdecode gives the same pixels as the cv2.imread deepface uses for paths
    (EXIF orientation included), and it decodes WebP too.
    """
    import cv2

    if len(data) == 0:
        raise NotAnImageError(f"{name} is empty (0 bytes)")
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        found = sniff_format(data)
        what = f"a {found} file OpenCV cannot decode" if found else "not a known image format"
        raise NotAnImageError(f"{name} cannot be decoded as an image ({what})")
    return image


def _model_input_png(face_bgr: np.ndarray, target_size: tuple[int, int]) -> bytes:
    """The face resized as ``represent`` resizes it, quantised as the model sees it."""
    import cv2
    from deepface.modules import preprocessing

    resized = preprocessing.resize_image(img=face_bgr, target_size=target_size)[0]
    # deepface feeds faces in [0, 1]; models such as Dlib take x*255 truncated to uint8.
    if resized.max() <= 1:
        resized = resized * 255
    pixels = np.clip(resized, 0, 255).astype(np.uint8)
    ok, png = cv2.imencode(".png", pixels)
    if not ok:  # pragma: no cover - PNG encoding of a uint8 image does not fail
        raise RuntimeError("could not encode the face crop as PNG")
    return png.tobytes()


def _eye(value: Any) -> tuple[int, int] | None:
    return None if value is None else (int(value[0]), int(value[1]))


def _detect_and_embed(image: np.ndarray, name: str, options: EmbedOptions) -> list[Face]:
    model = models.build_model(options.model_name, options.detector_backend)
    from deepface.modules import detection, representation
    from deepface.modules.exceptions import FaceNotDetected, ImgNotFound

    try:
        detected = detection.extract_faces(
            img_path=image,
            detector_backend=options.detector_backend,
            enforce_detection=True,
            align=options.align,
            expand_percentage=options.expand_percentage,
            color_face="bgr",  # represent expects BGR
        )
    except (FaceNotDetected, ImgNotFound) as err:  # ImgNotFound: every face was empty
        raise NoFaceError(f"no face found in {name} (detector {options.detector_backend})") from err
    target_size = (model.input_shape[1], model.input_shape[0])
    faces = []
    for face_index, found in enumerate(detected):
        represented = representation.represent(
            img_path=found["face"],
            model_name=options.model_name,
            detector_backend="skip",
            align=options.align,
            normalization=options.normalization,
        )
        area = found["facial_area"]
        faces.append(
            Face(
                face_index=face_index,
                embedding=np.asarray(represented[0]["embedding"], dtype=np.float32),
                x=int(area["x"]),
                y=int(area["y"]),
                w=int(area["w"]),
                h=int(area["h"]),
                left_eye=_eye(area.get("left_eye")),
                right_eye=_eye(area.get("right_eye")),
                confidence=float(found.get("confidence") or 0.0),
                face_png=_model_input_png(found["face"], target_size),
            )
        )
    return faces


# Recently embedded photos, keyed by content: find and verify on the same photo in
# one process (or a query photo that was just indexed) skip the network.
_CACHE: OrderedDict[tuple[str, EmbedOptions], list[Face]] = OrderedDict()
_CACHE_SIZE = 64
_CACHE_LOCK = threading.Lock()
# deepface keeps one model object per process, and dlib's network holds each
# layer's output in the object itself: two threads running it at once (a web
# search during an ingest) would mix their results. One inference at a time.
_INFERENCE_LOCK = threading.Lock()


def clear_cache() -> None:
    _CACHE.clear()


def embed_image(
    image: np.ndarray,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    content_key: str | None = None,
) -> list[Face]:
    """All faces of a decoded BGR image, in deepface's detection order.

    Raises NoFaceError when the detector finds none.
    """
    if content_key is None:
        content_key = hashlib.sha256(
            repr(image.shape).encode() + np.ascontiguousarray(image).tobytes()
        ).hexdigest()
    key = (content_key, options)
    with _CACHE_LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    with _INFERENCE_LOCK:
        faces = _detect_and_embed(image, name, options)
    with _CACHE_LOCK:
        _CACHE[key] = faces
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return faces


def embed_bytes(
    data: bytes,
    name: str = "image",
    options: EmbedOptions = DEFAULT_OPTIONS,
    sha256: str | None = None,
) -> list[Face]:
    """All faces of an encoded photo (JPEG, PNG, WebP, ... bytes); ``sha256`` is
    the bytes' digest when the caller has it already."""
    image = decode_image(data, name)
    content_key = sha256 or hashlib.sha256(data).hexdigest()
    return embed_image(image, name, options, content_key=content_key)


def embed_crop(png: bytes, model_name: str = models.DEFAULT_MODEL) -> np.ndarray:
    """Re-embed a stored face crop with detector 'skip' (no detection, no alignment)."""
    image = decode_image(png, "face crop")
    with _INFERENCE_LOCK:
        models.build_model(model_name, "skip")
        from deepface.modules import representation

        represented = representation.represent(
            img_path=image, model_name=model_name, detector_backend="skip"
        )
    return np.asarray(represented[0]["embedding"], dtype=np.float32)
