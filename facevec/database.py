"""Opening a facevec database: a DB-API connection plus its dialect.

``db`` arguments across the API accept a path to a SQLite file, an open DB-API
connection (used as is, never closed by facevec) or a Database.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Union

from .dialects import SQLITE, Dialect
from .errors import DatabaseNotFoundError, DatabaseOpenError
from .urls import connect_url, is_url

DbArg = Union[str, "os.PathLike[str]", "Database", Any]

BUSY_TIMEOUT_SECONDS = 60.0
MMAP_BYTES = 1 << 34  # address space only; SQLite maps at most the file's size


@dataclass
class Database:
    conn: Any
    dialect: Dialect
    name: str
    owned: bool = True  # opened here, so closed here

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        cursor = self.conn.cursor()
        cursor.execute(self.dialect.sql(sql), tuple(params))
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        cursor = self.conn.cursor()
        cursor.executemany(self.dialect.sql(sql), rows)

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        return list(self.execute(sql, params).fetchall())

    def scalar(self, sql: str, params: Sequence[Any] = ()) -> Any:
        row = self.execute(sql, params).fetchone()
        return None if row is None else row[0]

    def commit(self) -> None:
        self.conn.commit()

    def rollback(self) -> None:
        self.conn.rollback()

    def close(self) -> None:
        if self.owned:
            self.conn.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _connect_sqlite(path: str) -> Any:
    import facevec

    try:
        conn = facevec.connect(path, timeout=BUSY_TIMEOUT_SECONDS)
    except facevec.ExtensionError:
        raise
    except Exception as err:  # the driver's error: missing folder, no permission, ...
        raise DatabaseOpenError(f"cannot open {path} as a SQLite database: {err}") from err
    try:
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
        return Database(_connect_sqlite(path), SQLITE, path)
    if hasattr(db, "cursor") and hasattr(db, "commit"):
        return Database(db, _dialect_of(db), repr(db), owned=False)
    raise TypeError(f"db must be a path or a DB-API connection, not {type(db).__name__}")


def _dialect_of(conn: Any) -> Dialect:
    module = type(conn).__module__
    if any("sqlite" in cls.__module__ for cls in type(conn).__mro__):
        return SQLITE
    from .dialects import MYSQL, POSTGRESQL

    if module.startswith("psycopg"):
        return POSTGRESQL
    if module.startswith("pymysql"):
        return MYSQL
    raise TypeError(f"unsupported database connection {type(conn).__module__}")


def in_clause_chunks(ids: Sequence[int], size: int = 500) -> Iterable[Sequence[int]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]
