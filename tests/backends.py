"""The database backends the tests run on: SQLite, PostgreSQL and MariaDB/MySQL.

Servers are found through FACEVEC_TEST_POSTGRES_URL and FACEVEC_TEST_MYSQL_URL
(defaults: the servers on 127.0.0.1 of this project's machines). Each test gets a
database of its own (a PostgreSQL schema, a MariaDB database) that is dropped
afterwards. Without a server the test skips and says why; CI
(FACEVEC_REQUIRE_ALL=1) turns that skip into a failure.

Use from a test module:

    from backends import BACKENDS, SERVERS, fresh_database

    with fresh_database("postgresql", tmp_path) as url:
        facevec.add(url, names, vectors)
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

POSTGRES_URL = os.environ.get(
    "FACEVEC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("FACEVEC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")

SERVERS = ("postgresql", "mysql")
BACKENDS = ("sqlite",) + SERVERS
# The search strategies each backend runs (extension and knn live in SQLite).
STRATEGIES = {
    "sqlite": ("extension", "knn", "relational", "client"),
    "postgresql": ("relational", "client"),
    "mysql": ("relational", "client"),
}

_URLS = {"postgresql": POSTGRES_URL, "mysql": MYSQL_URL}
_ENV = {"postgresql": "FACEVEC_TEST_POSTGRES_URL", "mysql": "FACEVEC_TEST_MYSQL_URL"}
_unreachable: dict = {}


def server_url(backend: str) -> str:
    return _URLS[backend]


def admin_connection(backend: str):
    """An autocommit DB-API connection to the test server, or pytest.skip saying why."""
    from facevec.errors import DatabaseConnectionError, MissingDependencyError
    from facevec.storage.database import connect_url

    if backend in _unreachable:  # one timeout per session is enough
        pytest.skip(_unreachable[backend])
    try:
        conn, _, _ = connect_url(_URLS[backend])
    except (DatabaseConnectionError, MissingDependencyError) as err:
        _unreachable[backend] = f"no {backend} server for the tests (set {_ENV[backend]}): {err}"
        pytest.skip(_unreachable[backend])
    if backend == "postgresql":
        conn.autocommit = True
    else:
        conn.autocommit(True)  # PyMySQL spells it as a method
    return conn


@contextlib.contextmanager
def fresh_database(backend: str, tmp_path: Path) -> Iterator[str]:
    """The `db` argument of a new, empty database on `backend`; dropped afterwards."""
    if backend == "sqlite":
        yield str(tmp_path / f"faces-{uuid.uuid4().hex[:8]}.db")
        return
    name = f"facevec_test_{uuid.uuid4().hex[:12]}"
    admin = admin_connection(backend)
    base = _URLS[backend]
    try:
        cursor = admin.cursor()
        if backend == "postgresql":
            cursor.execute(f"CREATE SCHEMA {name}")
            separator = "&" if urlsplit(base).query else "?"
            url = f"{base}{separator}options=-csearch_path%3D{name}"
        else:
            cursor.execute(f"CREATE DATABASE {name} CHARACTER SET utf8mb4")
            parts = urlsplit(base)
            url = parts._replace(path=f"/{name}").geturl()
        yield url
    finally:
        cursor = admin.cursor()
        if backend == "postgresql":
            cursor.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")
        else:
            cursor.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.close()
