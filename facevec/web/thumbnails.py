"""Small JPEGs of stored faces and of their photos, made on the server (Pillow).

The pages show many faces at once (a person's photos, the people list): sending
each full photo for the browser to scale down would move megabytes per face. A
face thumbnail is the face's box, widened by a margin and made square, cut from
its photo and scaled to the size asked; a photo thumbnail is the whole photo
scaled down. A JPEG is decoded at 1/2 .. 1/8 of its size when that still covers
the size asked (Pillow's draft mode), so the full photo is never decoded.

Each answer has an ETag made of the photo file's identity (real path, size,
modification time), the box and the size: a browser that has it gets 304, and
the server keeps the latest thumbnails in a small cache of bytes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The face box's margin on each side, as a fraction of its larger side.
MARGIN = 0.3
JPEG_QUALITY = 82
CACHE_BYTES = 32 * 2**20


@dataclass(frozen=True)
class Region:
    """What a thumbnail shows: a box of the photo (None: all of it) at a size."""

    path: str  # the photo's real path (photos.servable_photo)
    box: tuple[int, int, int, int] | None  # x, y, w, h in the photo's own pixels
    size: int  # the thumbnail's longest side


def etag(region: Region) -> str | None:
    """The thumbnail's entity tag; None if the photo cannot be read."""
    try:
        stat = os.stat(region.path)
    except OSError:
        return None
    key = f"{region.path}\0{stat.st_size}\0{stat.st_mtime_ns}\0{region.box}\0{region.size}"
    return '"' + hashlib.sha256(key.encode()).hexdigest()[:32] + '"'


def square_around(
    box: tuple[int, int, int, int], width: int, height: int
) -> tuple[int, int, int, int]:
    """(left, top, right, bottom): the box widened by MARGIN, square, inside the photo."""
    x, y, w, h = box
    side = max(w, h) * (1 + 2 * MARGIN)
    side = min(side, width, height)
    cx, cy = x + w / 2, y + h / 2
    left = min(max(0.0, cx - side / 2), width - side)
    top = min(max(0.0, cy - side / 2), height - side)
    return round(left), round(top), round(left + side), round(top + side)


def render(
    region: Region, max_pixels: int, hold: Callable[[int], Any] | None = None
) -> bytes | None:
    """The thumbnail as JPEG bytes; None if Pillow cannot read the photo (a format
    it lacks, a damaged file), it is over `max_pixels`, or the box lies outside it.
    ``hold(pixels)``: a context manager held while that many pixels are decoded
    (the server's DecodeBudget)."""
    from PIL import Image, ImageOps

    try:
        with Image.open(region.path) as opened:
            stored_w, stored_h = opened.size
            if stored_w * stored_h > max_pixels:
                return None
            turned = opened.getexif().get(0x0112, 1) in (5, 6, 7, 8)
            width, height = (stored_h, stored_w) if turned else (stored_w, stored_h)
            if region.box is None:
                crop = (0, 0, width, height)
            else:
                crop = square_around(region.box, width, height)
            shown = max(crop[2] - crop[0], crop[3] - crop[1])
            if shown <= 0:
                return None
            # Decode at the smallest scale that still gives `size` pixels to the crop.
            factor = min(1.0, region.size / shown)
            opened.draft("RGB", (max(1, int(stored_w * factor)), max(1, int(stored_h * factor))))
            scale = stored_w / opened.size[0]
            decoded = opened.size[0] * opened.size[1]
            with hold(decoded) if hold is not None else contextlib.nullcontext():
                image: Any = ImageOps.exif_transpose(opened)
                image = image.crop(tuple(round(value / scale) for value in crop))
                image.thumbnail((region.size, region.size), Image.Resampling.LANCZOS)
                out = io.BytesIO()
                image.convert("RGB").save(out, format="JPEG", quality=JPEG_QUALITY)
    except Exception:  # an unreadable photo: the caller falls back to the stored crop
        return None
    return out.getvalue()


class ThumbnailCache:
    """The latest thumbnails made, by ETag, up to a number of bytes."""

    def __init__(self, capacity: int = CACHE_BYTES) -> None:
        self.capacity = capacity
        self._held = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, tag: str) -> bytes | None:
        with self._lock:
            found = self._items.get(tag)
            if found is not None:
                self._items.move_to_end(tag)
            return found

    def put(self, tag: str, data: bytes) -> None:
        with self._lock:
            if tag in self._items or len(data) > self.capacity:
                return
            self._items[tag] = data
            self._held += len(data)
            while self._held > self.capacity:
                _, dropped = self._items.popitem(last=False)
                self._held -= len(dropped)
