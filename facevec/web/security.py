"""Who may change the gallery: the holder of the server's token.

Writes authenticate with a request header (``Authorization: Bearer TOKEN``),
never a cookie. A browser sends no such header on its own, and a page of another
site cannot add one without a CORS preflight this server never grants, so a
forged cross-site form carries no credential (no CSRF). The page's forms send
the token, kept in the tab's sessionStorage, from JavaScript. As a second line,
a write whose Origin header names another site is refused.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .config import WebConfig

bearer = HTTPBearer(
    auto_error=False,
    description="The token facevec serve was started with (--token or FACEVEC_TOKEN).",
)


def config_of(request: Request) -> WebConfig:
    return request.app.state.config


def token_matches(given: str | None, expected: str | None) -> bool:
    """Compared in constant time, so timing does not reveal a prefix of the token."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode(), expected.encode())


def _same_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    if origin is None:  # not sent by a browser page: programs, curl
        return True
    host = request.headers.get("host", "")
    return urlsplit(origin).netloc == host


def require_token(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(bearer),  # noqa: B008
) -> None:
    """Dependency of every write endpoint."""
    config = config_of(request)
    if not config.writable:
        raise HTTPException(
            403,
            "this server is read-only: start facevec serve with --token (or FACEVEC_TOKEN) "
            "to allow changes",
        )
    given = credentials.credentials if credentials is not None else None
    if not token_matches(given, config.token):
        raise HTTPException(
            401,
            "this request changes the gallery: send the server's token as "
            "'Authorization: Bearer TOKEN'" + (" (the token sent is wrong)" if given else ""),
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not _same_origin(request):
        raise HTTPException(403, "a change requested by a page of another site is refused")
