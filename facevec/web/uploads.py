"""Uploads: a limit on pixels, and thumbnails.

(FastAPI's max_body_size limits the bytes of a request.) The pixel limit is
checked from the image header, before any decoder allocates the pixels: a small
file can announce a huge image.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.embed import decode_image
from ..errors import NotAnImageError, UploadTooLargeError


def too_large_message(limit: int) -> str:
    size = f"{limit / 2**20:g} MiB" if limit >= 2**20 else f"{limit} bytes"
    return f"the request is larger than this server's limit of {size}"


class DeclaredSizeLimit:
    """ASGI middleware: a body whose Content-Length is over the limit gets 413 unread.

    FastAPI's own limit (max_body_size) counts the bytes as they arrive; this one
    only answers such a request in facevec's JSON words rather than plain text.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            declared = dict(scope["headers"]).get(b"content-length", b"")
            if declared.isdigit() and int(declared) > self.max_bytes:
                detail = too_large_message(self.max_bytes)
                response = JSONResponse(
                    {"error": "UploadTooLargeError", "detail": detail},
                    status_code=413,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_photo(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an uploaded photo, after refusing one over `max_pixels`.

    Pillow reads only the header here. A format Pillow does not know is decoded by
    OpenCV, as the pipeline would (its own limit is 2**30 pixels), to name the
    problem or measure it.
    """
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise NotAnImageError(f"{name} is empty (0 bytes)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
    except Image.DecompressionBombError:  # Pillow's own ceiling, far above any sane limit
        raise UploadTooLargeError(
            f"{name} has more than {2 * (Image.MAX_IMAGE_PIXELS or 0) / 1e6:.0f} megapixels; "
            f"this server takes at most {max_pixels / 1e6:g} megapixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError):
        pixels = decode_image(data, name)  # raises NotAnImageError with the pipeline's words
        height, width = pixels.shape[:2]
    if width * height > max_pixels:
        raise UploadTooLargeError(
            f"{name} is {width} x {height} pixels ({width * height / 1e6:.1f} megapixels); "
            f"this server takes at most {max_pixels / 1e6:g} megapixels"
        )
    return width, height


def thumbnail_data_url(data: bytes, longest_side: int = 960) -> tuple[str, int, int] | None:
    """(data: URL of a JPEG thumbnail, width, height of the photo as the detector
    saw it, EXIF orientation applied); None if Pillow cannot read it."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            image: Any = ImageOps.exif_transpose(opened)
            width, height = image.size
            image = image.convert("RGB")
            image.thumbnail((longest_side, longest_side))
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except Exception:  # only a picture for the page: the search itself decoded the photo
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode(), width, height
