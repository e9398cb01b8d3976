"""Find and align faces as deepface does, at a fraction of its cost.

deepface's ``extract_faces`` pads the whole photo with a black border half its
size (4x the pixels), and the dlib detector then upsamples that twice over: a
12-megapixel photo becomes 190 megapixels to scan, which is 95% of deepface's
time (benchmarks/README.md). Here:

- the detector runs on a copy of the photo scaled to at most ``DETECT_PIXELS``
  (for dlib, at a scale of deepface's own pyramid, 2 x (5/6)^k, so boxes keep
  deepface's sizes), and the boxes are mapped back to the photo;
- dlib's eye landmarks are then found on the full-size photo, as deepface does;
- the border is virtual: only the face's neighbourhood is cut out (black where it
  leaves the photo), and only the part of it the face is cut from is rotated, with
  deepface's alignment and projection (``align.py``).

Given the same box and eyes, the crop equals deepface's (to a rounding in a few
pixels in ten thousand); boxes found at another scale differ by a few pixels (a HOG
cell), as deepface's own do when a photo is cropped by one pixel. The dlib detector
needs dlib alone; the other detectors are deepface's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..options import EmbedOptions
from . import align

# Pixels of the finest level the detector scans (dlib: after its one upsampling).
DETECT_PIXELS = 2048 * 2048
_PYRAMID_STEP = 5 / 6  # dlib's pyramid_down<6>

Point = tuple[int, int]


@dataclass(frozen=True)
class Region:
    """A detected face in the coordinates of deepface's bordered photo."""

    x: int
    y: int
    w: int
    h: int
    confidence: float
    left_eye: Point | None = None
    right_eye: Point | None = None


class _BorderedImage:
    """The photo inside deepface's black border, without allocating the border."""

    def __init__(self, image: np.ndarray, border: tuple[int, int]) -> None:
        self.image = image
        self.top, self.left = border
        height, width = image.shape[:2]
        self.shape = (height + 2 * self.top, width + 2 * self.left) + image.shape[2:]

    def region(self, x1: int, y1: int, x2: int, y2: int) -> np.ndarray:
        """Bordered-image pixels [y1:y2, x1:x2], black outside the photo."""
        x1, x2 = max(0, x1), min(self.shape[1], x2)
        y1, y2 = max(0, y1), min(self.shape[0], y2)
        out = np.zeros((max(0, y2 - y1), max(0, x2 - x1)) + self.image.shape[2:], self.image.dtype)
        height, width = self.image.shape[:2]
        sx1, sy1 = max(0, x1 - self.left), max(0, y1 - self.top)
        sx2, sy2 = min(width, x2 - self.left), min(height, y2 - self.top)
        if sx1 < sx2 and sy1 < sy2:
            ox, oy = sx1 + self.left - x1, sy1 + self.top - y1
            out[oy : oy + sy2 - sy1, ox : ox + sx2 - sx1] = self.image[sy1:sy2, sx1:sx2]
        return out


def _dlib_scale(height: int, width: int) -> float:
    """The largest level 2 x (5/6)^k of deepface's dlib pyramid within DETECT_PIXELS."""
    scale = 2.0
    while scale * scale * height * width > DETECT_PIXELS:
        scale *= _PYRAMID_STEP
    return scale


def scaled(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """`image` resized to width x height: area averaging down, bilinear up (Pillow)."""
    from PIL import Image

    shrink = width < image.shape[1]
    resample = Image.Resampling.BOX if shrink else Image.Resampling.BILINEAR
    return np.asarray(Image.fromarray(image).resize((width, height), resample))


def _detect_dlib(image: np.ndarray, border: tuple[int, int]) -> list[Region]:
    """deepface's DlibClient.detect_faces, as it would run on the bordered photo."""
    from . import dlib_models

    detector, landmarks = dlib_models.detector(), dlib_models.landmarks()
    height, width = image.shape[:2]
    scale = _dlib_scale(height, width)
    if scale == 2.0:  # small photo: dlib's own upsampling, as deepface
        rects, scores, _ = detector.run(image, 1)
        fx = fy = 1.0
    else:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        rects, scores, _ = detector.run(scaled(image, *size), 0)
        fx, fy = size[0] / width, size[1] / height
    top, left = border
    bordered_height, bordered_width = height + 2 * top, width + 2 * left
    regions = []
    for rect, score in zip(rects, scores, strict=True):
        x1, y1 = round(rect.left() / fx), round(rect.top() / fy)
        x2, y2 = round(rect.right() / fx), round(rect.bottom() / fy)
        # Eyes from the full-size photo: the shape predictor is cheap and exact there.
        shape = landmarks(image, dlib_models.rectangle(x1, y1, x2, y2))
        right_eye = (
            (shape.part(2).x + shape.part(3).x) // 2,
            (shape.part(2).y + shape.part(3).y) // 2,
        )
        left_eye = (
            (shape.part(0).x + shape.part(1).x) // 2,
            (shape.part(0).y + shape.part(1).y) // 2,
        )
        # From here on, deepface's arithmetic in bordered coordinates.
        y = int(max(0, y1 + top))
        x = int(max(0, x1 + left))
        regions.append(
            Region(
                x=x,
                y=y,
                w=int(min(x2 + left, bordered_width) - x),
                h=int(min(y2 + top, bordered_height) - y),
                left_eye=(int(left_eye[0]) + left, int(left_eye[1]) + top),
                right_eye=(int(right_eye[0]) + left, int(right_eye[1]) + top),
                confidence=min(max(0.0, float(score)), 1.0),
            )
        )
    return regions


def _detect_other(
    image: np.ndarray, border: tuple[int, int], detector_backend: str
) -> list[Region]:
    """Any deepface detector on a scaled copy, its regions mapped to bordered coordinates."""
    from deepface.modules import modeling

    detector = modeling.build_model(task="face_detector", model_name=detector_backend)
    height, width = image.shape[:2]
    scale = min(1.0, (DETECT_PIXELS / 4 / (height * width)) ** 0.5)
    small = image
    if scale < 1.0:
        small = scaled(image, max(1, round(width * scale)), max(1, round(height * scale)))
    fx, fy = small.shape[1] / width, small.shape[0] / height
    top, left = border

    def point(value: Any) -> Point | None:
        if value is None:
            return None
        return (int(round(value[0] / fx)) + left, int(round(value[1] / fy)) + top)

    return [
        Region(
            x=int(round(region.x / fx)) + left,
            y=int(round(region.y / fy)) + top,
            w=int(round(region.w / fx)),
            h=int(round(region.h / fy)),
            confidence=region.confidence,
            left_eye=point(region.left_eye),
            right_eye=point(region.right_eye),
        )
        for region in detector.detect_faces(small)
    ]


def _find_eyes(face: np.ndarray) -> tuple[Any, Any]:
    """deepface's fallback for detectors that give no eyes: OpenCV's eye cascade."""
    from deepface.modules import modeling

    return modeling.build_model(task="face_detector", model_name="opencv").find_eyes(face)


def _extract_face(bordered: _BorderedImage, region: Region, options: EmbedOptions) -> tuple:
    """deepface's detection.extract_face on the virtual bordered image."""
    x, y, w, h = region.x, region.y, region.w, region.h
    left_eye, right_eye = region.left_eye, region.right_eye
    shape = bordered.shape
    if options.expand_percentage > 0:
        expanded_w = w + int(w * options.expand_percentage / 100)
        expanded_h = h + int(h * options.expand_percentage / 100)
        x = max(0, x - int((expanded_w - w) / 2))
        y = max(0, y - int((expanded_h - h) / 2))
        w = min(shape[1] - x, expanded_w)
        h = min(shape[0] - y, expanded_h)
    w = max(0, min(shape[1], x + w) - max(0, x))
    h = max(0, min(shape[0], y + h) - max(0, y))
    x, y = max(0, x), max(0, y)
    face = bordered.region(int(x), int(y), int(x + w), int(y + h))
    if options.detector_backend != "opencv" and (left_eye is None or right_eye is None):
        found_left, found_right = _find_eyes(face)
        if left_eye is None and found_left is not None:
            left_eye = (int(found_left[0]) + x, int(found_left[1]) + y)
        if right_eye is None and found_right is not None:
            right_eye = (int(found_right[0]) + x, int(found_right[1]) + y)
    if options.align:
        relative_x, relative_y = int(0.5 * w), int(0.5 * h)
        sub = bordered.region(
            x - relative_x, y - relative_y, x + w + relative_x, y + h + relative_y
        )
        if sub.shape[:2] != (h + 2 * relative_y, w + 2 * relative_x):  # outside the border
            sub = _pad_to(
                bordered, x - relative_x, y - relative_y, w + 2 * relative_x, h + 2 * relative_y
            )
        angle = 0.0
        if left_eye is not None and right_eye is not None and sub.shape[0] and sub.shape[1]:
            angle = align.eye_angle(left_eye, right_eye)
        x1, y1, x2, y2 = align.project_facial_area(
            facial_area=(relative_x, relative_y, relative_x + w, relative_y + h),
            angle=angle,
            size=(sub.shape[0], sub.shape[1]),
        )
        if angle == 0:  # deepface leaves the image as it is
            face = sub[int(y1) : int(y2), int(x1) : int(x2)]
        else:  # rotated where the model's input reads it
            face = align.RotatedCrop(sub, angle, (int(x1), int(y1), int(x2), int(y2)))
        x, y = x - bordered.left, y - bordered.top
        if left_eye is not None:
            left_eye = (left_eye[0] - bordered.left, left_eye[1] - bordered.top)
        if right_eye is not None:
            right_eye = (right_eye[0] - bordered.left, right_eye[1] - bordered.top)
    return face, (x, y, w, h), left_eye, right_eye, region.confidence


def _pad_to(bordered: _BorderedImage, x: int, y: int, w: int, h: int) -> np.ndarray:
    """deepface's extract_sub_image where the doubled box leaves the bordered image."""
    out = np.zeros((h, w) + bordered.image.shape[2:], bordered.image.dtype)
    x1, y1 = max(0, x), max(0, y)
    x2, y2 = min(bordered.shape[1], x + w), min(bordered.shape[0], y + h)
    part = bordered.region(x1, y1, x2, y2)
    out[y1 - y : y1 - y + part.shape[0], x1 - x : x1 - x + part.shape[1]] = part
    return out


def _valid(point: Any, width: int, height: int) -> tuple[int, int] | None:
    if point is None:
        return None
    px, py = int(point[0]), int(point[1])
    return (px, py) if 0 <= px < width and 0 <= py < height else None


def extract_faces(image: np.ndarray, options: EmbedOptions) -> list[dict[str, Any]]:
    """What deepface's ``extract_faces(color_face='bgr')`` returns for `image`: each
    face's crop (BGR in [0, 1], or an ``align.RotatedCrop`` that ``align.model_input``
    reads as such), facial_area and confidence; [] when none is found."""
    height, width = image.shape[:2]
    border = (int(0.5 * height), int(0.5 * width)) if options.align else (0, 0)
    if options.detector_backend == "dlib":
        regions = _detect_dlib(image, border)
    else:
        regions = _detect_other(image, border, options.detector_backend)
    bordered = _BorderedImage(image, border)
    found = []
    for region in regions:
        face, (x, y, w, h), left_eye, right_eye, confidence = _extract_face(
            bordered, region, options
        )
        if face.shape[0] == 0 or face.shape[1] == 0:
            continue
        if isinstance(face, np.ndarray) and face.max() > 1:
            face = face / 255
        x, y = max(0, int(x)), max(0, int(y))
        found.append(
            {
                "face": face,
                "facial_area": {
                    "x": x,
                    "y": y,
                    "w": min(width - x - 1, int(w)),
                    "h": min(height - y - 1, int(h)),
                    "left_eye": _valid(left_eye, width, height),
                    "right_eye": _valid(right_eye, width, height),
                },
                "confidence": round(float(confidence or 0), 2),
            }
        )
    return found
