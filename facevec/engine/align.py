"""deepface's face alignment, bit for bit, in numpy alone.

deepface aligns a face by rotating its neighbourhood about the centre so the eyes
are level (``cv2.warpAffine``, bicubic, black border), cuts the rotated box out, and
resizes it into the model's input (``cv2.resize``, bilinear, padded with black).
These are the same computations in the same number formats as OpenCV's (its
fixed-point bicubic tables, its float coefficients for the resize), so a face
aligned here feeds the model exactly the pixels deepface would, without OpenCV
(tests/test_light_engine.py compares them on every face of the shared photos).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

_CUBIC_A = np.float32(-0.75)


def _cubic_weights(x: np.ndarray) -> np.ndarray:
    """OpenCV's interpolateCubic (A = -0.75) at offsets `x` in [0, 1): (..., 4) float32."""
    a, one = _CUBIC_A, np.float32(1)
    x1 = x + one
    c0 = ((a * x1 - np.float32(5) * a) * x1 + np.float32(8) * a) * x1 - np.float32(4) * a
    c1 = ((a + np.float32(2)) * x - (a + np.float32(3))) * x * x + one
    rest = one - x
    c2 = ((a + np.float32(2)) * rest - (a + np.float32(3))) * rest * rest + one
    c3 = one - c0 - c1 - c2
    return np.stack([c0, c1, c2, c3], axis=-1)


def _inverse_rotation(width: int, height: int, angle: float) -> list[float]:
    """getRotationMatrix2D((w // 2, h // 2), angle, 1), inverted as warpAffine does."""
    cx, cy = float(width // 2), float(height // 2)
    radians = angle * 3.1415926535897932384626433832795 / 180
    alpha, beta = math.cos(radians), math.sin(radians)
    m = [alpha, beta, (1 - alpha) * cx - beta * cy, -beta, alpha, beta * cx + (1 - alpha) * cy]
    d = m[0] * m[4] - m[1] * m[3]
    d = 1.0 / d if d != 0 else 0.0
    a11, a22 = m[4] * d, m[0] * d
    m[0], m[1], m[3], m[4] = a11, m[1] * -d, m[3] * -d, a22
    b1 = -m[0] * m[2] - m[1] * m[5]
    b2 = -m[3] * m[2] - m[4] * m[5]
    m[2], m[5] = b1, b2
    return m


def rotate(image: np.ndarray, angle: float, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pixels (ys x xs) of ``cv2.warpAffine(image, cv2.getRotationMatrix2D((w // 2,
    h // 2), angle, 1.0), (w, h), flags=INTER_CUBIC, borderMode=BORDER_CONSTANT,
    borderValue=0)`` for a uint8 image: each output pixel depends on its own position
    alone, so the pixels a caller reads are all it costs."""
    height, width = image.shape[:2]
    m = _inverse_rotation(width, height, angle)
    grid_y, grid_x = np.meshgrid(ys.astype(np.float64), xs.astype(np.float64), indexing="ij")
    src_x = m[0] * grid_x + m[1] * grid_y + m[2]
    src_y = m[3] * grid_x + m[4] * grid_y + m[5]
    left, top = np.floor(src_x), np.floor(src_y)
    wx = _cubic_weights((src_x - left).astype(np.float32))
    wy = _cubic_weights((src_y - top).astype(np.float32))
    left, top = left.astype(np.int64) - 1, top.astype(np.int64) - 1  # the 4 x 4 taps
    channels = image.shape[2] if image.ndim == 3 else 1
    flat = image.reshape(-1, channels)
    # A tap outside the image reads black: its weight becomes 0 (its index any pixel).
    col_index, col_weight = [], []
    for k in range(4):
        cols = left + k
        col_index.append(np.clip(cols, 0, width - 1))
        col_weight.append((wx[:, :, k] * ((cols >= 0) & (cols < width)))[:, :, None])
    total = np.zeros(grid_x.shape + (channels,), np.float32)
    for k1 in range(4):
        rows = top + k1
        inside = (rows >= 0) & (rows < height)
        base = np.clip(rows, 0, height - 1) * width
        # OpenCV's order: each row of taps summed left to right, then the rows in turn.
        line = flat[base + col_index[0]] * col_weight[0]
        for k2 in range(1, 4):
            line += flat[base + col_index[k2]] * col_weight[k2]
        total += line * (wy[:, :, k1] * inside)[:, :, None]
    return np.clip(np.rint(total), 0, 255).astype(np.uint8)


@dataclass(frozen=True)
class RotatedCrop:
    """deepface's aligned face: `image` (uint8) rotated by `angle` about its centre, then
    cut to `box` (x1, y1, x2, y2); its pixels are computed only where they are read."""

    image: np.ndarray
    angle: float
    box: tuple[int, int, int, int]

    @property
    def shape(self) -> tuple[int, ...]:
        x1, y1, x2, y2 = self.box
        return (max(0, y2 - y1), max(0, x2 - x1)) + self.image.shape[2:]

    def pixels(self, rows: np.ndarray | None = None, cols: np.ndarray | None = None) -> np.ndarray:
        """Rows x cols of the crop (all of it by default), uint8."""
        x1, y1 = self.box[0], self.box[1]
        rows = np.arange(self.shape[0]) if rows is None else rows
        cols = np.arange(self.shape[1]) if cols is None else cols
        return rotate(self.image, self.angle, cols + x1, rows + y1)

    def preview(self, width: int) -> np.ndarray:
        """The crop with every k-th row and column, k such that it stays at least
        `width` wide: what a look at the whole face needs, at a fraction of its cost."""
        step = max(1, self.shape[1] // width)
        return self.pixels(np.arange(0, self.shape[0], step), np.arange(0, self.shape[1], step))


def eye_angle(left_eye: tuple[int, int], right_eye: tuple[int, int]) -> float:
    """The rotation deepface's align_img_wrt_eyes makes to level the eyes (degrees)."""
    return float(np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0])))


def project_facial_area(
    facial_area: tuple[int, int, int, int], angle: float, size: tuple[int, int]
) -> tuple[int, int, int, int]:
    """deepface's project_facial_area: the box (x1, y1, x2, y2) after the rotation."""
    direction = 1 if angle >= 0 else -1
    angle = abs(angle) % 360
    if angle == 0:
        return facial_area
    radians = angle * np.pi / 180
    height, width = size
    x = (facial_area[0] + facial_area[2]) / 2 - width / 2
    y = (facial_area[1] + facial_area[3]) / 2 - height / 2
    x_new = x * np.cos(radians) + y * direction * np.sin(radians) + width / 2
    y_new = -x * direction * np.sin(radians) + y * np.cos(radians) + height / 2
    half_w = (facial_area[2] - facial_area[0]) / 2
    half_h = (facial_area[3] - facial_area[1]) / 2
    return (
        max(int(x_new - half_w), 0),
        max(int(y_new - half_h), 0),
        min(int(x_new + half_w), width),
        min(int(y_new + half_h), height),
    )


def _linear_taps(source: int, target: int, clamp: bool) -> tuple[np.ndarray, ...]:
    """Bilinear resize taps along one axis, as OpenCV computes them for float64 images:
    the two source indices and their weights. Across a row (`clamp`) a tap outside the
    image becomes the edge pixel at full weight; down the columns only the row index is
    clipped."""
    scale = 1.0 / (target / source)
    position = (np.arange(target) + 0.5) * scale - 0.5
    first = np.floor(position)
    weight = position - first
    first = first.astype(np.int64)
    if clamp:
        low, high = first < 0, first >= source - 1
        weight[low | high] = 0.0
        first = np.where(low, 0, np.where(high, source - 1, first))
    return np.clip(first, 0, source - 1), np.clip(first + 1, 0, source - 1), 1.0 - weight, weight


def _resize_from(read: Any, src_w: int, src_h: int, width: int, height: int) -> np.ndarray:
    """``cv2.resize`` (bilinear, float64) of an image given by read(rows, cols), which
    returns those rows and columns of it: only the pixels the taps use are read."""
    x0, x1, xa, xb = _linear_taps(src_w, width, clamp=True)
    y0, y1, ya, yb = _linear_taps(src_h, height, clamp=False)
    cols, col_at = np.unique(np.concatenate([x0, x1]), return_inverse=True)
    rows, row_at = np.unique(np.concatenate([y0, y1]), return_inverse=True)
    pixels = read(rows, cols)
    pixels = pixels.reshape(pixels.shape[0], pixels.shape[1], -1)
    x0, x1 = col_at[:width], col_at[width:]
    y0, y1 = row_at[:height], row_at[height:]
    # Horizontal pass on the rows used, then the vertical blend: OpenCV's order.
    horizontal = pixels[:, x0] * xa[None, :, None] + pixels[:, x1] * xb[None, :, None]
    return horizontal[y0] * ya[:, None, None] + horizontal[y1] * yb[:, None, None]


def resize_linear(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """``cv2.resize(image, (width, height))`` (bilinear) for a float64 image."""
    src_h, src_w = image.shape[:2]
    out = _resize_from(lambda rows, cols: image[rows][:, cols], src_w, src_h, width, height)
    return out.reshape((height, width) + image.shape[2:])


def model_input(
    face: np.ndarray | RotatedCrop, target: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """deepface's preprocessing.resize_image: fit a face into the model's input, padded
    with black: ((1, height, width, 3) float32, the face resized before the padding).

    `face` is float64 in [0, 1] (deepface's crops), uint8 (a whole image, detector
    'skip'), or a RotatedCrop, read as deepface reads its crop: divided by 255."""
    src_h, src_w = face.shape[:2]
    factor = min(target[0] / src_h, target[1] / src_w)
    width, height = int(src_w * factor), int(src_h * factor)
    if isinstance(face, RotatedCrop):
        crop = face

        def read(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            part = crop.pixels(rows, cols)
            # deepface divides a crop by 255 only when it has a value over 1.
            if part.max() <= 1 and crop.pixels().max() <= 1:
                return part.astype(np.float64)
            return part / 255

        image = _resize_from(read, src_w, src_h, width, height)
    else:
        image = resize_linear(face, width, height)
    diff_0, diff_1 = target[0] - image.shape[0], target[1] - image.shape[1]
    image = np.pad(
        image,
        ((diff_0 // 2, diff_0 - diff_0 // 2), (diff_1 // 2, diff_1 - diff_1 // 2), (0, 0)),
        "constant",
    )
    if image.shape[0:2] != target:  # pragma: no cover - the padding always fits
        image = resize_linear(image, target[1], target[0])
    image = np.asarray(image, dtype=np.float32)[None]
    if image.max() > 1:
        image = (image.astype(np.float32) / 255.0).astype(np.float32)
    return image
