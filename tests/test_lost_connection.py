"""A server connection that goes away (killed, timed out, the server restarted) is
one clear error naming the server, never the driver's bare ``(0, '')``, and the
unfinished transaction leaves nothing behind."""

from __future__ import annotations

import re

import numpy as np
import pytest
from backends import SERVERS, admin_connection, fresh_database

import facevec
from facevec.errors import DatabaseConnectionError
from facevec.storage.database import open_database

DIM = 8


def kill(backend: str, database) -> None:
    """End the server side of `database`'s connection from another connection."""
    admin = admin_connection(backend)
    cursor = admin.cursor()
    if backend == "postgresql":
        pid = database.conn.info.backend_pid
        cursor.execute("SELECT pg_terminate_backend(%s)", (pid,))
    else:
        cursor.execute(f"KILL CONNECTION {int(database.conn.thread_id())}")
    admin.close()


@pytest.mark.parametrize("backend", SERVERS)
def test_a_killed_connection_is_one_clear_error(backend, tmp_path):
    with fresh_database(backend, tmp_path) as url:
        facevec.add(url, ["a", "b"], np.eye(2, DIM) + 1)
        database = open_database(url)
        kill(backend, database)
        expected = f"lost the connection to {database.name}"
        for _ in range(2):  # the first use finds it gone, and every later one
            with pytest.raises(DatabaseConnectionError, match=re.escape(expected)) as error:
                facevec.add(database, ["c"], np.ones((1, DIM)))
            assert "(0, '')" not in str(error.value)
            assert "what was not committed was not written" in str(error.value)
        database.close()
        assert facevec.info(url)["faces"] == 2
