"""One SQLite library per process: a gallery survives a program that reads it with
its own ``sqlite3`` connections while facevec writes, on each route facevec takes.

Two copies of SQLite in one process drop each other's POSIX locks when one closes
the file, and the WAL goes from under the other ("database disk image is
malformed"). Each route runs in a fresh interpreter, chosen before anything
imports facevec: ``load_extension`` (an interpreter whose ``sqlite3`` loads
extensions, simulated by pysqlite3 standing in for it), ``auto_extension`` (this
machine's ``sqlite3``: facevec registered on the library it links) and ``fallback``
(neither).
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

import facevec
from facevec.bindings import extension

PRELUDES = {
    "load_extension": "import sys, pysqlite3.dbapi2; sys.modules['sqlite3'] = pysqlite3.dbapi2",
    "auto_extension": "",
    # The sqlite3 module's C part hides its file: no library to register on.
    "fallback": "import sqlite3, sys, types; sys.modules['_sqlite3'] = types.ModuleType('_x')",
}

MIXED = textwrap.dedent(
    """
    import json, sqlite3, sys, warnings
    import numpy as np
    import facevec
    from facevec.bindings import extension
    warnings.simplefilter("ignore", facevec.FallbackWarning)
    db = sys.argv[1]
    rng = np.random.default_rng(0)
    facevec.add(db, [f"m{i}" for i in range(3000)], rng.standard_normal((3000, 128)))
    A = facevec.connect(db)
    A.isolation_level = None
    A.execute("CREATE TABLE note(face_id INTEGER PRIMARY KEY, v)")
    A.execute("BEGIN IMMEDIATE")
    A.execute("INSERT INTO note SELECT id, 1 FROM face_meta")
    A.execute("COMMIT")
    counts, plain_functions = [], []
    for r in range(3):
        c = sqlite3.connect(db)
        c.execute("SELECT count(*) FROM face_meta").fetchone()
        try:
            c.execute("SELECT euclidean_distance('[0]', '[1]')").fetchone()
            plain_functions.append(True)
        except sqlite3.OperationalError:
            plain_functions.append(False)
        c.close()
        facevec.add(db, [f"m1999{r}"], rng.standard_normal((1, 128)))
        counts.append(A.execute("SELECT count(*) FROM face_meta").fetchone()[0])
    (hit,) = facevec.find(rng.standard_normal(128), db, k=1, similarity_search=True)
    print(json.dumps({
        "route": extension.route(),
        "sqlite": sqlite3.sqlite_version,
        "native": extension.is_native(A),
        "counts": counts,
        "plain_functions": plain_functions,
        "integrity": A.execute("PRAGMA integrity_check").fetchone()[0],
        "found": len(hit),
    }))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("route", list(PRELUDES))
def test_a_plain_sqlite3_connection_beside_facevec_loses_nothing(route, tmp_path):
    if route == "load_extension":
        pytest.importorskip("pysqlite3.dbapi2", reason="pysqlite3 stands in for such a sqlite3")
    if route == "auto_extension" and extension.can_load_extensions(sqlite3.Connection):
        pytest.skip("this Python's sqlite3 loads extensions: facevec never needs auto_extension")
    out = subprocess.run(
        [sys.executable, "-c", PRELUDES[route] + "\n" + MIXED, str(tmp_path / "g.db")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["route"] == route
    assert result["counts"] == [3001, 3002, 3003]
    assert result["integrity"] == "ok" and result["found"] == 1
    assert result["native"] == (route != "fallback")
    # The user's own connections get the C functions where facevec registered them
    # on the library itself; elsewhere they are plain sqlite3.
    assert result["plain_functions"] == [route == "auto_extension"] * 3


def test_the_auto_extension_is_on_the_library_the_sqlite3_module_uses():
    """This interpreter's sqlite3 cannot load extensions (else the route is load_extension):
    facevec's functions reach a connection the caller opens, natively."""
    if extension.can_load_extensions(sqlite3.Connection):
        pytest.skip("this Python's sqlite3 loads extensions: facevec never needs auto_extension")
    assert extension.route() == "auto_extension", extension._why_not_native
    conn = sqlite3.connect(":memory:")
    assert conn.execute("SELECT facevec_version()").fetchone()[0] == facevec.__version__
    assert extension.is_native(conn)
    # facevec_knn is the C library's alone (the fallback has no index).
    assert conn.execute("SELECT facevec_knn_status('face_meta')").fetchone() == (None,)
