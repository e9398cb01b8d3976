"""Uploads: a limit on bytes and on pixels, on the pixels decoded at once, and
thumbnails.

FastAPI's max_body_size counts a request's bytes as they arrive; DeclaredSizeLimit
answers a declared Content-Length over it at once. The pixel limit is checked from
the image header, before any decoder allocates the pixels: a small file can
announce a huge image (a 115 KB PNG of 40 megapixels decodes to some 240 MB).
Since many such uploads may arrive together, the pixels being decoded at once are
bounded too (``DecodeBudget``): a search waits for its turn rather than adding its
pixels to the server's memory. Thumbnails decode a JPEG at a fraction of its size
(Pillow's draft mode) and never copy the full-size image.
"""

from __future__ import annotations

import base64
import contextlib
import io
import os
import threading
from collections.abc import Iterator
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from ..engine.decode import check_pixels, header_size
from ..engine.embed import embedded_by


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


@contextlib.contextmanager
def decoding(request: Any, *photos: bytes) -> Iterator[None]:
    """Hold the server's decode budget for these already checked uploads' pixels;
    meanwhile the photos are decoded, detected and embedded by the server's embedding
    processes (``web/embed_pool.py``), or in this process if it has none."""
    pixels = 0
    for data in photos:
        width, height = header_size(data)
        pixels += width * height
    pool = getattr(request.app.state, "embed_pool", None)
    with request.app.state.decodes.hold(pixels), embedded_by(None if pool is None else pool.embed):
        yield


def check_photo(data: bytes, name: str, max_pixels: int) -> tuple[int, int]:
    """(width, height) of an uploaded photo, read from its header alone, after
    refusing one over `max_pixels` (PhotoTooLargeError) or one that is not an image."""
    width, height = header_size(data, name)
    check_pixels(width, height, name, max_pixels)
    return width, height


# What decoding costs per pixel of the header's size, at the peak: OpenCV's BGR
# image (3 bytes), its scaled copy and the detector's working copies (measured: about
# 240 MB for a 40 MP PNG).
DECODE_BYTES_PER_PIXEL = 6


def machine_memory() -> int | None:
    """Bytes of memory of this machine, if the system says."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


class DecodeBudget:
    """A weighted semaphore on the pixels being decoded at once in this server.

    ``hold(pixels)`` waits until the pixels already held plus these fit in the
    budget; a photo larger than the whole budget runs when nothing else is held, so
    every photo under the server's pixel limit is served, one at a time if need be.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"a decode budget must be positive, not {capacity}")
        self.capacity = capacity
        self._held = 0
        self._peak = 0
        self._changed = threading.Condition()

    @classmethod
    def for_machine(cls, max_pixels: int) -> DecodeBudget:
        """As many photos of `max_pixels` at once as the machine has cores, and no
        more than a quarter of its memory holds (at least one)."""
        cores = os.cpu_count() or 1
        memory = machine_memory()
        fit = cores if memory is None else memory // 4 // (DECODE_BYTES_PER_PIXEL * max_pixels)
        return cls(max_pixels * max(1, min(cores, fit)))

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        pixels = max(0, int(pixels))
        with self._changed:
            while self._held and self._held + pixels > self.capacity:
                self._changed.wait()
            self._held += pixels
            self._peak = max(self._peak, self._held)
        try:
            yield
        finally:
            with self._changed:
                self._held -= pixels
                self._changed.notify_all()

    @property
    def held(self) -> int:
        return self._held

    @property
    def peak(self) -> int:
        """The most pixels held at once so far."""
        return self._peak


def photo_size(path: str) -> tuple[int, int] | None:
    """(width, height) of a photo file as shown (EXIF orientation applied), from its
    header alone; None if Pillow cannot read it."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return _shown_size(image)
    except Exception:
        return None


def _shown_size(image: Any) -> tuple[int, int]:
    width, height = image.size
    turned = image.getexif().get(0x0112, 1) in (5, 6, 7, 8)  # Orientation: a quarter turn
    return (height, width) if turned else (width, height)


def thumbnail_data_url(data: bytes, longest_side: int = 960) -> tuple[str, int, int] | None:
    """(data: URL of a JPEG thumbnail, width, height of the photo as the detector
    saw it, EXIF orientation applied); None if Pillow cannot read it.

    A JPEG is decoded at 1/2 .. 1/8 of its size (draft mode); other formats are
    decoded once and reduced, never copied at full size."""
    from PIL import Image, ImageOps

    try:
        with Image.open(io.BytesIO(data)) as opened:
            width, height = _shown_size(opened)
            opened.draft("RGB", (longest_side, longest_side))
            opened.thumbnail((longest_side, longest_side), reducing_gap=2.0)  # in place
            image: Any = ImageOps.exif_transpose(opened).convert("RGB")  # small copies
            out = io.BytesIO()
            image.save(out, format="JPEG", quality=85)
    except Exception:  # only a picture for the page: the search itself decoded the photo
        return None
    return "data:image/jpeg;base64," + base64.b64encode(out.getvalue()).decode(), width, height
