"""What one server is given: its gallery, its token, its photo folders, its limits."""

from __future__ import annotations

import math
import os
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import FolderNotFoundError, InvalidParameterError, UnsupportedDatabaseError
from ..storage.urls import is_url
from .hosts import AllowedHosts

MAX_UPLOAD_BYTES = 20 * 1024 * 1024
MAX_PIXELS = 40_000_000  # a 40-megapixel query is already far more than a face needs


@dataclass(frozen=True)
class WebConfig:
    """A server's settings; ``photo_roots`` are real paths (symlinks resolved);
    ``host`` is the address it listens on, ``allowed_hosts`` its other names."""

    db: str
    token: str | None = None
    photo_roots: tuple[str, ...] = ()
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = MAX_PIXELS
    host: str = "127.0.0.1"
    allowed_hosts: tuple[str, ...] = ()

    def hosts(self) -> AllowedHosts:
        """The names a request's Host header may give (facevec.web.hosts)."""
        return AllowedHosts(self.host, self.allowed_hosts)

    @property
    def writable(self) -> bool:
        return bool(self.token)


def make_config(
    db: object,
    token: str | None = None,
    photos: Iterable[str | os.PathLike[str]] = (),
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
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
    for what, limit in (("max_upload_bytes", max_upload_bytes), ("max_pixels", max_pixels)):
        number = isinstance(limit, (int, float)) and not isinstance(limit, bool)
        if not (number and math.isfinite(limit) and limit >= 1):
            raise InvalidParameterError(f"{what} must be a finite number from 1, not {limit!r}")
    if isinstance(allowed_hosts, str):
        allowed_hosts = [allowed_hosts]
    config = WebConfig(
        db=os.fspath(db),  # type: ignore[arg-type]
        token=token or None,
        photo_roots=tuple(dict.fromkeys(roots)),
        max_upload_bytes=int(max_upload_bytes),
        max_pixels=int(max_pixels),
        host=str(host),
        allowed_hosts=tuple(allowed_hosts),
    )
    config.hosts()  # refuse a malformed --allowed-host now
    return config
