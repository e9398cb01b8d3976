"""Database URLs: a gallery on a PostgreSQL or MariaDB/MySQL server.

Wherever facevec takes ``db`` (``--db`` on the command line) it accepts a SQLite
path or one of:

- ``postgresql://user:password@host:port/database?options`` (also ``postgres://``),
  opened with psycopg 3 (``pip install 'facevec[postgres]'``); query parameters are
  libpq's (``sslmode=require``, ``options=-csearch_path%3Dfaces``, ...);
- ``mysql://user:password@host:port/database`` or ``mariadb://...``, opened with
  PyMySQL (``pip install 'facevec[mysql]'``); ``?unix_socket=/path``,
  ``?ssl_ca=/path``, ``?charset=`` and ``?connect_timeout=`` are understood.

SQLAlchemy-style names (``postgresql+psycopg://``, ``mysql+pymysql://``) are
accepted too. This module only parses; connections are opened in
:mod:`facevec.storage.database`. Nothing it returns or raises shows a secret: the
password of the user part, and any query parameter whose name holds
``password``, ``secret`` or ``key`` (``sslpassword``, ``sslkey``, ...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from ..errors import DatabaseURLError

# scheme -> backend
SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}

# backend: (product name, driver module, extra, default port)
BACKENDS = {
    "postgresql": ("PostgreSQL", "psycopg", "postgres", 5432),
    "mysql": ("MariaDB/MySQL", "pymysql", "mysql", 3306),
}

_SECRET_PARAMETER = re.compile(r"password|secret|key", re.IGNORECASE)
_REDACTED = "***"


def is_secret_parameter(name: str) -> bool:
    """Whether a URL query parameter holds a secret (never printed)."""
    return bool(_SECRET_PARAMETER.search(name))


@dataclass(frozen=True)
class DatabaseURL:
    backend: str  # "postgresql" or "mysql"
    scheme: str
    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    query: dict[str, str] = field(repr=False)
    raw: str = field(repr=False)

    @property
    def product(self) -> str:
        return BACKENDS[self.backend][0]

    @property
    def where(self) -> str:
        """host:port (or socket) for messages, with the driver's defaults filled in."""
        socket = self.query.get("unix_socket") or (
            self.query.get("host") if self.backend == "postgresql" else None
        )
        if socket and not self.host:
            return socket
        return f"{self.host or 'localhost'}:{self.port or BACKENDS[self.backend][3]}"

    def redacted(self) -> str:
        """The URL without its secrets: safe for messages, logs and reports."""
        user = quote(self.user or "", safe="")
        if self.password is not None:
            user += ":" + _REDACTED
        netloc = (user + "@" if user else "") + _host_text(self.host)
        if self.port:
            netloc += f":{self.port}"
        return f"{self.scheme}://{netloc}/{self.database or ''}"


def _host_text(host: str | None) -> str:
    if host and ":" in host:  # an IPv6 address goes back in brackets
        return f"[{host}]"
    return host or ""


def is_url(db: Any) -> bool:
    """True for a string that names a database by URL rather than a SQLite path."""
    return isinstance(db, str) and "://" in db


def redact(url: str) -> str:
    """``url`` with its password and secret query parameters replaced by ***,
    for messages about a URL too broken to parse."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    rest, _, query = rest.partition("?")
    authority, slash, path = rest.partition("/")
    userinfo, at, hostport = authority.rpartition("@")
    if at and ":" in userinfo:
        userinfo = userinfo.split(":", 1)[0] + ":" + _REDACTED
    text = f"{scheme}://{userinfo}{at}{hostport}{slash}{path}"
    if query:
        pairs = []
        for pair in query.split("&"):
            name, eq, _value = pair.partition("=")
            secret = eq and is_secret_parameter(unquote(name))
            pairs.append(f"{name}={_REDACTED}" if secret else pair)
        text += "?" + "&".join(pairs)
    return text


def parse_url(url: str) -> DatabaseURL:
    """A DatabaseURL, or DatabaseURLError naming what is wrong (never a secret)."""
    try:
        parts = urlsplit(url)
        hostname = parts.hostname
    except ValueError as err:  # e.g. "Invalid IPv6 URL"
        raise DatabaseURLError(f"bad host in database URL {redact(url)}: {err}") from None
    scheme = parts.scheme.lower()
    backend = SCHEMES.get(scheme.split("+", 1)[0])
    if backend is None:
        raise DatabaseURLError(
            f"unsupported database URL scheme {parts.scheme!r} in {redact(url)}; "
            "give a SQLite file path, or a postgresql://, mysql:// or mariadb:// URL"
        )
    try:
        port = parts.port
    except ValueError as err:
        raise DatabaseURLError(f"bad port in database URL {redact(url)}: {err}") from None
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    return DatabaseURL(
        backend=backend,
        scheme=scheme,
        host=hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database or None,
        query=dict(parse_qsl(parts.query)),
        raw=url,
    )
