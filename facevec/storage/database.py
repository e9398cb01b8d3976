"""Opening a facevec database: a DB-API connection plus its dialect.

``db`` arguments across the API accept a path to a SQLite file, a database URL
(:mod:`facevec.storage.urls`), an open DB-API connection (used as is, never
closed by facevec) or a Database. Every connection facevec opens is opened here.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Union

from ..bindings.extension import connect as connect_sqlite_with_functions
from ..errors import (
    DatabaseConnectionError,
    DatabaseNotFoundError,
    DatabaseOpenError,
    DatabaseURLError,
    ExtensionError,
    MissingDependencyError,
    UnsupportedDatabaseError,
)
from .dialects import MYSQL, POSTGRESQL, SQLITE, Dialect
from .urls import BACKENDS, DatabaseURL, is_secret_parameter, is_url, parse_url

DbArg = Union[str, "os.PathLike[str]", "Database", Any]

BUSY_TIMEOUT_SECONDS = 60.0
MMAP_BYTES = 1 << 34  # address space only; SQLite maps at most the file's size
CONNECT_TIMEOUT_SECONDS = 10


@dataclass
class Database:
    conn: Any
    dialect: Dialect
    name: str
    owned: bool = True  # opened here, so closed here

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        try:
            cursor = self.conn.cursor()
            cursor.execute(self.dialect.sql(sql), tuple(params))
        except Exception as err:
            self._raise_if_lost(err)
            raise
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        try:
            cursor = self.conn.cursor()
            cursor.executemany(self.dialect.sql(sql), rows)
        except Exception as err:
            self._raise_if_lost(err)
            raise

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        cursor = self.execute(sql, params)
        try:
            return list(cursor.fetchall())
        except Exception as err:
            self._raise_if_lost(err)
            raise

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.execute(sql, params)
        try:
            row = cursor.fetchone()
        except Exception as err:
            self._raise_if_lost(err)
            raise
        return None if row is None else row[0]

    def commit(self) -> None:
        try:
            self.conn.commit()
        except Exception as err:
            self._raise_if_lost(err)
            raise

    def rollback(self) -> None:
        try:
            self.conn.rollback()
        except Exception as err:
            self._raise_if_lost(err)
            raise

    def _raise_if_lost(self, err: Exception) -> None:
        """A driver's error saying the server connection is gone (killed, timed out,
        the server restarted) becomes one DatabaseConnectionError naming the server."""
        if _connection_lost(self.conn, err):
            reason = " ".join(str(err.args[-1] if err.args else err).split())
            raise DatabaseConnectionError(
                f"lost the connection to {self.name}{f' ({reason})' if reason else ''}: "
                "the server closed it, restarted or timed it out; what was not committed "
                "was not written"
            ) from err

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Database]:
        """One transaction: committed at the end of the block, rolled back if it raises.

        On SQLite it takes the write lock first (BEGIN IMMEDIATE), so a concurrent
        writer waits out the busy timeout instead of failing when a read would
        have to turn into a write.
        """
        if self.dialect is SQLITE and not self.conn.in_transaction:
            self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self
        except BaseException:
            # A connection that is gone cannot roll back (its server already did):
            # the error that ended the block is the one to tell.
            with contextlib.suppress(DatabaseConnectionError, *driver_errors()):
                self.rollback()
            raise
        self.commit()

    def close(self) -> None:
        if self.owned:
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def open_database(db: DbArg, create: bool = True) -> Database:
    """A Database for `db`; with create=False a missing SQLite file is an error."""
    if isinstance(db, Database):
        return Database(db.conn, db.dialect, db.name, owned=False)
    if is_url(db):  # a server: postgresql://, mysql://, mariadb://
        conn, dialect, name = connect_url(db)
        return Database(conn, dialect, name)
    if isinstance(db, (str, os.PathLike)):
        path = os.fspath(db)
        if path != ":memory:" and not create and not os.path.exists(path):
            raise DatabaseNotFoundError(
                f"no database at {path}; create one with: facevec index DIR --db {path}"
            )
        return Database(connect_sqlite(path), SQLITE, path)
    if hasattr(db, "cursor") and hasattr(db, "commit"):
        return Database(db, _dialect_of(db), repr(db), owned=False)
    raise UnsupportedDatabaseError(
        f"db must be a path or a DB-API connection, not {type(db).__name__}"
    )


def _dialect_of(conn: Any) -> Dialect:
    if any("sqlite" in cls.__module__ for cls in type(conn).__mro__):
        return SQLITE
    module = type(conn).__module__
    if module.startswith("psycopg"):
        return POSTGRESQL
    if module.startswith("pymysql"):
        return MYSQL
    raise UnsupportedDatabaseError(f"unsupported database connection {type(conn).__module__}")


# SQLite ------------------------------------------------------------------------


def connect_sqlite(path: str) -> Any:
    """A SQLite connection with facevec's functions and facevec's settings."""
    try:
        conn = connect_sqlite_with_functions(path, timeout=BUSY_TIMEOUT_SECONDS)
    except ExtensionError:
        raise
    except Exception as err:  # the driver's error: missing folder, no permission, ...
        raise DatabaseOpenError(f"cannot open {path} as a SQLite database: {err}") from err
    try:
        # A gallery file may come from elsewhere: its views and triggers may call
        # only functions marked innocuous (facevec's distance functions are; its
        # knn functions are direct-only and never run from schema objects).
        conn.execute("PRAGMA trusted_schema=OFF")
        # WAL: searches read a consistent snapshot while an ingest writes its batches.
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(f"PRAGMA busy_timeout={int(BUSY_TIMEOUT_SECONDS * 1000)}")
        # Reading through a memory map roughly halves a facevec_knn scan's time.
        conn.execute(f"PRAGMA mmap_size={MMAP_BYTES}")
    except Exception as err:
        conn.close()
        raise DatabaseOpenError(f"cannot open {path} as a SQLite database: {err}") from err
    return conn


# Servers -----------------------------------------------------------------------


def connect_url(url: str) -> tuple[Any, Dialect, str]:
    """(DB-API connection, dialect, redacted URL) for a database URL.

    The connection is in manual-commit mode: facevec commits each batch itself.
    """
    parsed = parse_url(url)
    driver = _driver(parsed.backend)
    if parsed.backend == "postgresql":
        return _connect_postgresql(driver, parsed), POSTGRESQL, parsed.redacted()
    return _connect_mysql(driver, parsed), MYSQL, parsed.redacted()


def _driver(backend: str) -> Any:
    product, module, extra, _ = BACKENDS[backend]
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(
            f"{product} URLs need the {module} driver: pip install 'facevec[{extra}]'"
        ) from None


def _without_secrets(text: str, parsed: DatabaseURL) -> str:
    secrets = [parsed.password] + [
        value for name, value in parsed.query.items() if is_secret_parameter(name)
    ]
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


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
        f"database {database!r}: {_without_secrets(reason, parsed)}"
    )


def _bad_parameter(parsed: DatabaseURL, name: str, reason: str) -> DatabaseURLError:
    return DatabaseURLError(f"bad parameter {name!r} in database URL {parsed.redacted()}: {reason}")


def _connect_postgresql(psycopg: Any, parsed: DatabaseURL) -> Any:
    conninfo = "postgresql" + parsed.raw[len(parsed.scheme) :]
    options: dict[str, Any] = {"autocommit": False}
    if "connect_timeout" not in parsed.query:
        options["connect_timeout"] = CONNECT_TIMEOUT_SECONDS
    try:
        return psycopg.connect(conninfo, **options)
    except psycopg.ProgrammingError as err:  # libpq refused the conninfo itself
        message = _without_secrets(str(err).strip().split("\n")[0], parsed)
        raise DatabaseURLError(f"bad database URL {parsed.redacted()}: {message}") from None
    except psycopg.Error as err:
        raise _refused(parsed, err) from None


def _mysql_options(parsed: DatabaseURL) -> dict[str, Any]:
    """PyMySQL's connect() arguments, each URL parameter checked by name."""
    from pymysql.constants import CLIENT

    if parsed.database is None:
        raise DatabaseURLError(
            f"{parsed.redacted()} names no database; add one: "
            f"{parsed.scheme}://{parsed.user or 'user'}@{parsed.where}/DATABASE"
        )
    query = dict(parsed.query)
    timeout_text = query.pop("connect_timeout", str(CONNECT_TIMEOUT_SECONDS))
    try:
        timeout = int(timeout_text)
        if timeout <= 0:
            raise ValueError
    except ValueError:
        raise _bad_parameter(
            parsed, "connect_timeout", f"a positive number of seconds, not {timeout_text!r}"
        ) from None
    charset = query.pop("charset", "utf8mb4")
    from pymysql import charset as charsets

    if charsets.charset_by_name(charset) is None:
        raise _bad_parameter(parsed, "charset", f"unknown character set {charset!r}")
    password = query.pop("password", None)
    options: dict[str, Any] = {
        "host": parsed.host or "localhost",
        "port": parsed.port or 3306,
        "user": parsed.user,
        "password": parsed.password or password or "",
        "database": parsed.database,
        "charset": charset,
        "autocommit": False,
        "connect_timeout": timeout,
        # rowcount of an UPDATE counts matched rows, not changed ones, as elsewhere.
        "client_flag": CLIENT.FOUND_ROWS,
        # Strict mode: a value too long for its column is an error, never truncated.
        "init_command": "SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@sql_mode, ''),"
        " 'STRICT_ALL_TABLES')",
    }
    if "unix_socket" in query:
        options["unix_socket"] = query.pop("unix_socket")
    if "ssl_ca" in query:
        ca = query.pop("ssl_ca")
        if not os.path.isfile(ca):
            raise _bad_parameter(parsed, "ssl_ca", f"no such certificate file: {ca}")
        options["ssl"] = {"ca": ca}
    if query:
        unknown = ", ".join(sorted(query))
        raise _bad_parameter(
            parsed,
            unknown,
            "not a parameter facevec passes to PyMySQL (known: unix_socket, ssl_ca, "
            "charset, connect_timeout, password)",
        )
    return options


def _connect_mysql(pymysql: Any, parsed: DatabaseURL) -> Any:
    options = _mysql_options(parsed)
    try:
        return pymysql.connect(**options)
    except pymysql.err.MySQLError as err:
        raise _refused(parsed, err) from None
    except (OSError, ValueError, LookupError) as err:  # ssl setup, bad host, ...
        raise _refused(parsed, err) from None


def identity(db: Database) -> tuple[Any, ...]:
    """What makes two connections one database, however they were spelled: a SQLite
    file's device and inode (any path, link or symlink to it), a server's own
    identity (PostgreSQL: start time and port; MariaDB: host name, port and data
    folder) with the database and schema."""
    if db.dialect is SQLITE:
        for _, name, path in db.query("PRAGMA database_list"):
            if name == "main":
                if not path:  # :memory: or a temporary database: only itself
                    return ("sqlite", "memory", id(db.conn))
                stat = os.stat(path)
                return ("sqlite", stat.st_dev, stat.st_ino)
    if db.dialect is POSTGRESQL:
        row = db.execute(
            "SELECT pg_postmaster_start_time()::text, current_setting('port'),"
            " current_database(), current_schema()"
        ).fetchone()
        db.commit()  # end the read transaction this opened
        return ("postgresql", *row)
    row = db.execute("SELECT @@hostname, @@port, @@datadir, DATABASE()").fetchone()
    db.commit()
    return ("mysql", *row)


# PyMySQL's codes for a connection that is gone: server gone away, lost during a
# query, lost (extended); 0 with InterfaceError: used after it was lost.
_MYSQL_LOST = (0, 2006, 2013, 2055)


def _connection_lost(conn: Any, err: BaseException) -> bool:
    module = type(err).__module__
    if module.startswith("pymysql"):
        code = err.args[0] if err.args and isinstance(err.args[0], int) else None
        return code in _MYSQL_LOST and type(err).__name__ in ("OperationalError", "InterfaceError")
    if module.startswith("psycopg"):
        return bool(getattr(conn, "broken", False) or getattr(conn, "closed", False))
    return False


def driver_errors() -> tuple[type[BaseException], ...]:
    """The base error classes of the database drivers loaded in this process."""
    names = ("sqlite3", "psycopg", "pymysql")
    return tuple(sys.modules[n].Error for n in names if n in sys.modules)


def end_failed_statement(db: Database) -> None:
    """After a statement failed: PostgreSQL refuses every later one until the
    transaction is rolled back (SQLite and MariaDB fail the statement alone)."""
    if db.dialect is POSTGRESQL:
        db.rollback()


def in_clause_chunks(ids: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
