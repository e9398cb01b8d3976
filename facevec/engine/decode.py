"""Photo bytes to pixels, with memory bounded whatever the photo's size.

The pixel size is read from the file's header (Pillow reads only the header)
before anything is decoded: a photo over ``max_pixels`` is refused. A JPEG larger
than ``WORKING_PIXELS`` is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg
itself (``cv2.IMREAD_REDUCED_COLOR_*``), so a 100-megapixel photo never exists at
full size in memory; other formats are decoded whole (bounded by ``max_pixels``)
and then scaled down. Face boxes are reported in the photo's own pixels.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

import numpy as np

from ..errors import NotAnImageError, PhotoTooLargeError

# A 200-megapixel photo decodes to 600 MB (8-bit colour): the bound of one worker's memory.
DEFAULT_MAX_PIXELS = 200_000_000
# Above this many pixels the engine works on a scaled-down copy (24 MP: a 6000 x 4000 photo
# is used as it is). Faces stay far above the 150-pixel input of the models.
WORKING_PIXELS = 24_000_000

# (signature, bytes) of image formats, to name what a file really is in messages.
_SIGNATURES = (
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("gif", b"GIF8"),
    ("bmp", b"BM"),
    ("tiff", b"II*\x00"),
    ("tiff", b"MM\x00*"),
)
_REDUCED_FLAGS = {
    2: "IMREAD_REDUCED_COLOR_2",
    4: "IMREAD_REDUCED_COLOR_4",
    8: "IMREAD_REDUCED_COLOR_8",
}


@dataclass(frozen=True)
class Photo:
    """Decoded pixels (BGR uint8) and how they relate to the photo's own pixels."""

    image: np.ndarray
    scale: int  # photo pixels per image pixel: 1, 2, 4 or 8
    width: int  # the photo's size, as its header says
    height: int


def sniff_format(data: bytes) -> str | None:
    """The image format the leading bytes announce, whatever the file's name."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    for name, signature in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def _undecodable(data: bytes, name: str, why: str) -> NotAnImageError:
    found = sniff_format(data)
    what = f"a {found} file {why}" if found else "not a known image format"
    return NotAnImageError(f"{name} cannot be decoded as an image ({what})")


def header_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(width, height) from the header alone; nothing is decoded."""
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise NotAnImageError(f"{name} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard would stop us reading the size we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    return opened.size
            finally:
                Image.MAX_IMAGE_PIXELS = limit
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _undecodable(data, name, "whose header cannot be read") from err


def check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PhotoTooLargeError(
            f"{name} is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
            f"limit of {max_pixels / 1e6:g} megapixels (max_pixels, --max-pixels)"
        )


def decode_photo(
    data: bytes,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    working_pixels: int | None = WORKING_PIXELS,
) -> Photo:
    """Decode a photo: refused over `max_pixels`, scaled down above `working_pixels`
    (None: always at full size, as deepface decodes)."""
    import cv2

    width, height = header_size(data, name)
    check_pixels(width, height, name, max_pixels)
    scale = 1
    if working_pixels is not None:
        while scale < 8 and width * height > working_pixels * scale * scale:
            scale *= 2
    buffer = np.frombuffer(data, dtype=np.uint8)
    if scale > 1 and sniff_format(data) == "jpeg":
        # libjpeg scales while decoding (DCT scaling): the full-size image never exists.
        image = cv2.imdecode(buffer, getattr(cv2, _REDUCED_FLAGS[scale]))
    else:
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
        if image is not None and scale > 1:
            size = (max(1, image.shape[1] // scale), max(1, image.shape[0] // scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    if image is None or image.size == 0:
        raise _undecodable(data, name, "OpenCV cannot decode")
    return Photo(image, scale, width, height)


def decode_image(
    data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode at full size as deepface's own loader does (cv2, EXIF orientation applied)."""
    return decode_photo(data, name, max_pixels, working_pixels=None).image
