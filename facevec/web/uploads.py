"""Uploads: a limit on bytes and on pixels, and thumbnails.

FastAPI's max_body_size counts a request's bytes as they arrive; DeclaredSizeLimit
answers a declared Content-Length over it at once. The pixel limit is checked from
the image header, before any decoder allocates the pixels: a small file can
announce a huge image.
"""

from __future__ import annotations

import base64
import io
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.decode import check_pixels, header_size


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
                    {"error": "HTTPError", "detail": detail},
                    status_code=413,
                    headers={"Connection": "close"},
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def check_photo(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an uploaded photo, read from its header alone, after
    refusing one over `max_pixels` (PhotoTooLargeError) or one that is not an image."""
    width, height = header_size(data, name)
    check_pixels(width, height, name, max_pixels)
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
