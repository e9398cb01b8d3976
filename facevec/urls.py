"""Database URLs: a gallery on a PostgreSQL or MariaDB/MySQL server.

Wherever facevec takes ``db`` (``--db`` on the command line) it accepts a SQLite
path or one of:

- ``postgresql://user:password@host:port/database?options`` (also ``postgres://``),
  opened with psycopg 3 (``pip install 'facevec[postgres]'``); query parameters are
  libpq's (``sslmode=require``, ``options=-csearch_path%3Dfaces``, ...);
- ``mysql://user:password@host:port/database`` or ``mariadb://...``, opened with
  PyMySQL (``pip install 'facevec[mysql]'``); ``?unix_socket=/path`` and
  ``?ssl_ca=/path`` are understood.

SQLAlchemy-style names (``postgresql+psycopg://``, ``mysql+pymysql://``) are
accepted too. Drivers are imported only when such a URL is opened.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .dialects import MYSQL, POSTGRESQL, Dialect
from .errors import DatabaseConnectionError, DatabaseURLError, MissingDependencyError

CONNECT_TIMEOUT_SECONDS = 10

# scheme -> backend
SCHEMES = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "mysql": "mysql",
    "mariadb": "mysql",
}

_BACKENDS = {
    # backend: (product name, driver module, extra, default port)
    "postgresql": ("PostgreSQL", "psycopg", "postgres", 5432),
    "mysql": ("MariaDB/MySQL", "pymysql", "mysql", 3306),
}


@dataclass(frozen=True)
class DatabaseURL:
    backend: str  # "postgresql" or "mysql"
    scheme: str
    host: str | None
    port: int | None
    user: str | None
    password: str | None = field(repr=False)
    database: str | None
    query: dict[str, str]
    raw: str = field(repr=False)

    @property
    def product(self) -> str:
        return _BACKENDS[self.backend][0]

    @property
    def where(self) -> str:
        """host:port (or socket) for messages, with the driver's defaults filled in."""
        socket = self.query.get("unix_socket") or (
            self.query.get("host") if self.backend == "postgresql" else None
        )
        if socket and not self.host:
            return socket
        return f"{self.host or 'localhost'}:{self.port or _BACKENDS[self.backend][3]}"

    def redacted(self) -> str:
        """The URL without its password: safe for messages, logs and reports."""
        user = self.user or ""
        if self.password is not None:
            user += ":***"
        netloc = (user + "@" if user else "") + (self.host or "")
        if self.port:
            netloc += f":{self.port}"
        return f"{self.scheme}://{netloc}/{self.database or ''}"


def is_url(db: Any) -> bool:
    """True for a string that names a database by URL rather than a SQLite path."""
    return isinstance(db, str) and "://" in db


def parse_url(url: str) -> DatabaseURL:
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    backend = SCHEMES.get(scheme.split("+", 1)[0])
    if backend is None:
        raise DatabaseURLError(
            f"unsupported database URL scheme {parts.scheme!r} in {_redact_raw(url)}; "
            "give a SQLite file path, or a postgresql://, mysql:// or mariadb:// URL"
        )
    try:
        port = parts.port
    except ValueError as err:
        raise DatabaseURLError(f"bad port in database URL {_redact_raw(url)}: {err}") from None
    database = unquote(parts.path[1:]) if parts.path.startswith("/") else unquote(parts.path)
    return DatabaseURL(
        backend=backend,
        scheme=scheme,
        host=parts.hostname,
        port=port,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        database=database or None,
        query=dict(parse_qsl(parts.query)),
        raw=url,
    )


def _redact_raw(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)


def _driver(backend: str) -> Any:
    product, module, extra, _ = _BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{product} URLs need the {module} driver: pip install 'facevec[{extra}]'"
        ) from None


def connect_url(url: str) -> tuple[Any, Dialect, str]:
    """(DB-API connection, dialect, redacted URL) for a database URL.

    The connection is in manual-commit mode: facevec commits each batch itself.
    """
    parsed = parse_url(url)
    driver = _driver(parsed.backend)
    if parsed.backend == "postgresql":
        return _connect_postgresql(driver, parsed), POSTGRESQL, parsed.redacted()
    return _connect_mysql(driver, parsed), MYSQL, parsed.redacted()


def _refused(parsed: DatabaseURL, err: BaseException) -> DatabaseConnectionError:
    # The driver's own first line says why (refused, timeout, auth, unknown database).
    args = getattr(err, "args", ())
    text = args[1] if len(args) == 2 and isinstance(args[0], int) else str(err)  # PyMySQL
    reason = " ".join(str(text).strip().split("\n")[0].split())
    if parsed.backend == "postgresql":
        reason = reason.removeprefix("connection failed: ")
    user = parsed.user or "(default user)"
    database = parsed.database or "(default database)"
    return DatabaseConnectionError(
        f"cannot connect to {parsed.product} at {parsed.where} as user {user!r}, "
        f"database {database!r}: {reason}"
    )


def _connect_postgresql(psycopg: Any, parsed: DatabaseURL) -> Any:
    conninfo = "postgresql" + parsed.raw[len(parsed.scheme) :]
    options: dict[str, Any] = {"autocommit": False}
    if "connect_timeout" not in parsed.query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        return psycopg.connect(conninfo, **options)
    except psycopg.Error as err:
        raise _refused(parsed, err) from None


def _connect_mysql(pymysql: Any, parsed: DatabaseURL) -> Any:
    from pymysql.constants import CLIENT

    query = dict(parsed.query)
    options: dict[str, Any] = {
        "host": parsed.host or "localhost",
        "port": parsed.port or 3306,
        "user": parsed.user,
        "password": parsed.password or "",
        "database": parsed.database,
        "charset": query.pop("charset", "utf8mb4"),
        "autocommit": False,
        "connect_timeout": int(query.pop("connect_timeout", CONNECT_TIMEOUT_SECONDS)),
        # rowcount of an UPDATE counts matched rows, not changed ones, as elsewhere:
        # the ledger's update-else-insert relies on it.
        "client_flag": CLIENT.FOUND_ROWS,
        # Strict mode: a value too long for its column is an error, never truncated.
        "init_command": "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''),"
        " 'STRICT_ALL_TABLES')",
    }
    if "unix_socket" in query:
        options["unix_socket"] = query.pop("unix_socket")
    if "ssl_ca" in query:
        options["ssl"] = {"ca": query.pop("ssl_ca")}
    if parsed.database is None:
        raise DatabaseURLError(
            f"{parsed.redacted()} names no database; add one: "
            f"{parsed.scheme}://{parsed.user or 'user'}@{parsed.where}/DATABASE"
        )
    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as err:
        raise _refused(parsed, err) from None
