"""Photo bytes to pixels, with memory bounded whatever the photo's size or format.

Every format's pixel size is read before anything is decoded: from the header
(Pillow reads only that; pillow-heif adds HEIC/HEIF), or from a camera RAW's
metadata (rawpy, libraw). A photo over ``max_pixels`` is refused. A JPEG larger
than ``WORKING_PIXELS`` is decoded at 1/2, 1/4 or 1/8 of its size by libjpeg itself
(DCT scaling, Pillow's ``draft``), a RAW at half size by libraw, so a 100-megapixel
photo never exists at full size in memory; other formats are decoded whole (bounded
by ``max_pixels``) and then scaled down. Face boxes are reported in the photo's own
pixels.

Decoded pixels are 8-bit BGR, upright: EXIF orientation (or the container's own
rotation, for HEIF and AVIF) is applied, the first page of a multi-page TIFF is
used, 16-bit samples keep their high byte, CMYK, palette and grey images become
colour. A file whose format needs an optional library that is not installed gets
:class:`MissingFormatSupportError`, which names the extra to install.
"""

from __future__ import annotations

import functools
import io
import os
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import MissingFormatSupportError, NotAnImageError, PhotoTooLargeError

# A 200-megapixel photo decodes to 600 MB (8-bit colour): the bound of one worker's memory.
DEFAULT_MAX_PIXELS = 200_000_000
# Above this many pixels the engine works on a scaled-down copy (24 MP: a 6000 x 4000 photo
# is used as it is). Faces stay far above the 150-pixel input of the models.
WORKING_PIXELS = 24_000_000
# The extra that brings the optional decoders (HEIF, RAW; AVIF comes with Pillow).
FORMATS_EXTRA = "pip install 'facevec[formats]'"

# Camera RAW files (libraw reads them all): decoded by rawpy, whatever Pillow thinks
# of them (most are TIFF inside, with a small thumbnail as the first image).
RAW_EXTENSIONS = frozenset(
    {
        ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".orf",
        ".rw2", ".raf", ".pef", ".srw", ".raw", ".rwl", ".3fr", ".erf", ".kdc", ".mrw",
        ".x3f", ".iiq", ".mos",
    }
)  # fmt: skip
# Extensions of the formats beyond what Pillow reads on its own.
HEIF_EXTENSIONS = frozenset({".heic", ".heif", ".hif"})
AVIF_EXTENSIONS = frozenset({".avif"})
# ISO base media brands of HEIF (HEVC inside) and AVIF (AV1 inside).
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"}
_HEIF_BRANDS |= {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}

# (signature, bytes) of image formats, to name what a file really is in messages.
_SIGNATURES = (
    ("jpeg", b"\xff\xd8\xff"),
    ("png", b"\x89PNG\r\n\x1a\n"),
    ("gif", b"GIF8"),
    ("bmp", b"BM"),
    ("tiff", b"II*\x00"),
    ("tiff", b"MM\x00*"),
    ("jpeg 2000", b"\x00\x00\x00\x0cjP  \r\n\x87\n"),
    ("jpeg 2000", b"\xff\x4f\xff\x51"),
    ("raw", b"FUJIFILMCCD-RAW"),
    ("raw", b"IIRO"),
    ("raw", b"IIU\x00"),
)


@dataclass(frozen=True)
class Photo:
    """Decoded pixels (BGR uint8) and how they relate to the photo's own pixels."""

    image: np.ndarray
    scale: int  # photo pixels per image pixel: 1, 2, 4 or 8
    width: int  # the photo's size, as its header says
    height: int


def _brand(data: bytes) -> bytes | None:
    """The major brand of an ISO base media file (HEIF, AVIF, CR3), else None."""
    if len(data) >= 12 and data[4:8] == b"ftyp":
        return data[8:12]
    return None


def sniff_format(data: bytes) -> str | None:
    """The image format the leading bytes announce, whatever the file's name."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    brand = _brand(data)
    if brand is not None:
        compatible = {data[i : i + 4] for i in range(16, min(len(data), 64), 4)} | {brand}
        if brand == b"crx ":
            return "raw"
        if compatible & _AVIF_BRANDS:
            return "avif"
        if compatible & _HEIF_BRANDS:
            return "heif"
    for name, signature in _SIGNATURES:
        if data.startswith(signature):
            return name
    return None


def is_raw(data: bytes, name: str) -> bool:
    """A camera RAW file, by its name's extension or its own signature."""
    return os.path.splitext(name)[1].lower() in RAW_EXTENSIONS or sniff_format(data) == "raw"


def _undecodable(data: bytes, name: str, why: str) -> NotAnImageError:
    found = sniff_format(data)
    what = f"a {found} file {why}" if found else "not a known image format"
    return NotAnImageError(f"{name} cannot be decoded as an image ({what})")


@functools.cache
def _register_heif() -> bool:
    """Teach Pillow HEIF (pillow-heif), once; False when it is not installed."""
    try:
        import pillow_heif
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


@functools.cache
def _has_avif() -> bool:
    from PIL import features

    return bool(features.check("avif"))


def support_missing(name: str) -> bool:
    """Whether a file so named (by its extension) needs a decoder not installed here."""
    extension = os.path.splitext(name)[1].lower()
    if extension in HEIF_EXTENSIONS:
        return not _register_heif()
    if extension in AVIF_EXTENSIONS:
        return not _has_avif()
    if extension in RAW_EXTENSIONS:
        try:
            import rawpy  # noqa: F401
        except ImportError:
            return True
    return False


def _missing_support(data: bytes, name: str) -> MissingFormatSupportError | None:
    """The error for a format whose decoder is not installed here, else None."""
    found = sniff_format(data)
    if found == "heif" and not _register_heif():
        return MissingFormatSupportError(
            f"{name} is a HEIF/HEIC image and pillow-heif is not installed: {FORMATS_EXTRA}"
        )
    if found == "avif" and not _has_avif():
        return MissingFormatSupportError(
            f"{name} is an AVIF image and this Pillow cannot read AVIF: {FORMATS_EXTRA}"
        )
    return None


def _rawpy(name: str) -> Any:
    try:
        import rawpy
    except ImportError as err:
        raise MissingFormatSupportError(
            f"{name} is a camera RAW file and rawpy is not installed: {FORMATS_EXTRA}"
        ) from err
    return rawpy


def _open_raw(data: bytes, name: str) -> Any:
    rawpy = _rawpy(name)
    try:
        return rawpy.imread(io.BytesIO(data))
    except (rawpy.LibRawError, ValueError) as err:
        raise _undecodable(data, name, f"that libraw cannot read ({err})") from err


def _raw_size(raw: Any) -> tuple[int, int]:
    """A RAW's upright output size, from its metadata."""
    sizes = raw.sizes
    width, height = int(sizes.width), int(sizes.height)
    return (height, width) if sizes.flip in (5, 6) else (width, height)


def _open_image(data: bytes, name: str) -> Any:
    """Pillow's image for the bytes (only the header is read)."""
    from PIL import Image, UnidentifiedImageError

    if len(data) == 0:
        raise NotAnImageError(f"{name} is empty (0 bytes)")
    missing = _missing_support(data, name)
    if missing is not None:
        raise missing
    try:
        with warnings.catch_warnings():
            # Pillow's own bomb guard would stop us reading the size we check ourselves.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise _undecodable(data, name, "whose header cannot be read") from err


def header_size(data: bytes, name: str = "image") -> tuple[int, int]:
    """(width, height) from the header (a RAW's metadata) alone; nothing is decoded."""
    from PIL import Image

    if len(data) and is_raw(data, name):
        with _open_raw(data, name) as raw:
            return _raw_size(raw)
    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with _open_image(data, name) as opened:
            return opened.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit


def check_pixels(width: int, height: int, name: str, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise PhotoTooLargeError(
            f"{name} is {width}x{height} ({width * height / 1e6:.1f} megapixels), over the "
            f"limit of {max_pixels / 1e6:g} megapixels (max_pixels, --max-pixels)"
        )


def _scale_for(width: int, height: int, working_pixels: int | None) -> int:
    scale = 1
    if working_pixels is not None:
        while scale < 8 and width * height > working_pixels * scale * scale:
            scale *= 2
    return scale


def _to_bgr(image: Any) -> np.ndarray:
    """A Pillow image of any mode as 8-bit BGR."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        pixels = np.asarray(image)
        if pixels.dtype != np.uint8:  # 16-bit grey: its high byte
            pixels = np.clip(pixels.astype(np.int64) >> 8, 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(pixels[:, :, None], 3, axis=2))
    if mode == "F":
        image = image.convert("L")
    if mode not in ("RGB",):
        image = image.convert("RGB")  # CMYK, palette, grey, alpha (dropped), YCbCr, LAB
    # Pillow packs BGR in one pass (half the cost of an RGB array flipped afterwards).
    width, height = image.size
    return np.frombuffer(image.tobytes("raw", "BGR"), np.uint8).reshape(height, width, 3)


def _shrink(image: np.ndarray, scale: int) -> np.ndarray:
    from .detect import scaled

    size = (max(1, image.shape[1] // scale), max(1, image.shape[0] // scale))
    return scaled(image, *size)


def _decode_pillow(
    data: bytes, name: str, max_pixels: int, working: int | None, orient: bool = True
) -> Photo:
    from PIL import Image, ImageOps

    limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
    try:
        with _open_image(data, name) as opened:
            width, height = opened.size
            check_pixels(width, height, name, max_pixels)
            scale = _scale_for(width, height, working)
            if scale > 1 and opened.format == "JPEG":
                # libjpeg scales while decoding (DCT scaling): the full size never exists.
                opened.draft(opened.mode, (width // scale, height // scale))
            try:
                opened.load()
                done = max(1, round(width / opened.size[0]))
                upright: Any = ImageOps.exif_transpose(opened) if orient else opened
                pixels = _to_bgr(upright)
            except (OSError, SyntaxError, ValueError) as err:
                raise _undecodable(data, name, "that cannot be decoded") from err
            turned = upright.size != opened.size
    finally:
        Image.MAX_IMAGE_PIXELS = limit
    if pixels.size == 0:
        raise _undecodable(data, name, "that cannot be decoded")
    if scale > done:
        pixels = _shrink(pixels, scale // done)
    if turned:  # a quarter turn: the photo's size turns with it
        width, height = height, width
    return Photo(pixels, scale, width, height)


def _flip(image: np.ndarray, flip: int) -> np.ndarray:
    """libraw's flip code (0, 3: 180, 5: 90 counter-clockwise, 6: 90 clockwise)."""
    if flip == 3:
        return np.ascontiguousarray(image[::-1, ::-1])
    if flip == 5:
        return np.ascontiguousarray(np.rot90(image, 1))
    if flip == 6:
        return np.ascontiguousarray(np.rot90(image, -1))
    return image


def _raw_preview(raw: Any, rawpy: Any, size: tuple[int, int]) -> bytes | np.ndarray | None:
    """The embedded preview when it is full-size (at least half the sensor's width and
    height; cameras embed one for their own screen), else None."""
    try:
        thumb = raw.extract_thumb()
    except (rawpy.LibRawNoThumbnailError, rawpy.LibRawUnsupportedThumbnailError):
        return None
    except rawpy.LibRawError:
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        from PIL import Image

        try:
            with Image.open(io.BytesIO(thumb.data)) as opened:
                thumb_size = opened.size
        except OSError:
            return None
        data: bytes | np.ndarray = thumb.data
    else:
        data = thumb.data
        thumb_size = (data.shape[1], data.shape[0])
    long_raw, short_raw = max(size), min(size)
    if max(thumb_size) * 2 < long_raw or min(thumb_size) * 2 < short_raw:
        return None
    return data


def _decode_raw(data: bytes, name: str, max_pixels: int, working: int | None) -> Photo:
    rawpy = _rawpy(name)
    with _open_raw(data, name) as raw:
        width, height = _raw_size(raw)
        check_pixels(width, height, name, max_pixels)
        flip = int(raw.sizes.flip)
        preview = _raw_preview(raw, rawpy, (width, height))
        if isinstance(preview, bytes):
            # libraw leaves previews as stored: the RAW's own flip turns them upright.
            photo = _decode_pillow(preview, name, max_pixels, working, orient=False)
            image = _flip(photo.image, flip)
            return Photo(
                image, photo.scale, image.shape[1] * photo.scale, image.shape[0] * photo.scale
            )
        if preview is not None:
            image = _flip(np.ascontiguousarray(preview[:, :, :3][:, :, ::-1]), flip)
            return Photo(image, 1, image.shape[1], image.shape[0])
        scale = _scale_for(width, height, working)
        try:
            rgb = raw.postprocess(use_camera_wb=True, output_bps=8, half_size=scale > 1)
        except rawpy.LibRawError as err:
            raise _undecodable(data, name, f"that libraw cannot develop ({err})") from err
    image = np.ascontiguousarray(rgb[:, :, ::-1])
    done = 2 if scale > 1 else 1
    if scale > done:
        image = _shrink(image, scale // done)
    return Photo(image, scale, width, height)


def decode_photo(
    data: bytes,
    name: str = "image",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    working_pixels: int | None = WORKING_PIXELS,
) -> Photo:
    """Decode a photo: refused over `max_pixels`, scaled down above `working_pixels`
    (None: always at full size, as deepface decodes)."""
    if len(data) == 0:
        raise NotAnImageError(f"{name} is empty (0 bytes)")
    if is_raw(data, name):
        return _decode_raw(data, name, max_pixels, working_pixels)
    return _decode_pillow(data, name, max_pixels, working_pixels)


def decode_image(
    data: bytes, name: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """Decode at full size as deepface's own loader does (EXIF orientation applied)."""
    return decode_photo(data, name, max_pixels, working_pixels=None).image
