"""Uploads: a limit on request bodies, a limit on pixels, and thumbnails.

The body limit is enforced while the body arrives (a declared Content-Length
over it is refused before anything is read), so a large upload costs the
server nothing. The pixel limit is checked from the image header, before any
decoder allocates the pixels: a small file can announce a huge image.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..engine.embed import decode_image
from ..errors import NotAnImageError, UploadTooLargeError


def too_large_message(limit: int) -> str:
    return f"the request is larger than this server's limit of {limit / 2**20:g} MiB"


class BodyLimit:
    """ASGI middleware: request bodies over `max_bytes` get 413."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await _refuse(send, too_large_message(self.max_bytes))
            return
        received = 0

        async def limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # FastAPI passes an HTTPException raised while reading the body on
                    # to its handler (any other error would become a 400).
                    raise HTTPException(413, too_large_message(self.max_bytes))
            return message

        await self.app(scope, limited, send)


async def _refuse(send: Send, detail: str) -> None:
    import json

    payload = json.dumps({"error": "UploadTooLargeError", "detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


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
