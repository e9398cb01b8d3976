"""What one server is given: its gallery, its token, its photo folders, its limits."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import FolderNotFoundError, InvalidParameterError, UnsupportedDatabaseError
from ..storage.urls import is_url

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel query is already far more than a face needs


@dataclass(frozen=True)
class WebConfig:
    """A server's settings; ``photo_roots`` are real paths (symlinks resolved)."""

    db: str
    token: str | None = None
    photo_roots: tuple[str, ...] = ()
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_PIXELS

    @property
    def writable(self) -> bool:
        return bool(self.token)


def make_config(
    db: object,
    token: str | None = None,
    photos: Iterable[str | os.PathLike[str]] = (),
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
) -> WebConfig:
    """Check a server's settings and resolve its photo folders."""
    # Each request opens its own connection (a DB-API connection is not shared
    # across threads), so the server needs what to open, not an open connection.
    if not (is_url(db) or isinstance(db, (str, os.PathLike))):
        raise UnsupportedDatabaseError(
            f"the web server opens a connection per request: give db as a SQLite path "
            f"or a database URL, not {type(db).__name__}"
        )
    roots = []
    for folder in photos:
        real = os.path.realpath(os.fspath(folder))
        if not os.path.isdir(real):
            raise FolderNotFoundError(f"photo folder {os.fspath(folder)} is not a directory")
        roots.append(real)
    if max_upload_bytes < 1 or max_pixels < 1:
        raise InvalidParameterError(
            f"upload limits must be positive, not {max_upload_bytes} bytes / {max_pixels} pixels"
        )
    return WebConfig(
        db=os.fspath(db),  # type: ignore[arg-type]
        token=token or None,
        photo_roots=tuple(dict.fromkeys(roots)),
        max_upload_bytes=int(max_upload_bytes),
        max_pixels=int(max_pixels),
    )
