"""Several processes writing one gallery file at once: inserting rows,
syncing the knn index, rebuilding it and querying it, each with a busy
timeout. Every call must succeed (waiting its turn rather than failing with
"database is locked"), every query must be consistent, and the final index
must hold exactly the table's vectors, as a serial build would.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from knn_helpers import connect, extension_under_test, make_table, scalar  # noqa: E402

DIM = 8
WORKER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pysqlite3 import dbapi2 as sqlite3

    ext, db, role, seed, rounds = sys.argv[1:6]
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    rng = np.random.default_rng(int(seed))
    knn = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 50)"
    for i in range(int(rounds)):
        if role == "insert":
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                "INSERT INTO face_meta(embedding) VALUES (?)",
                [(rng.standard_normal(DIM).astype("f4").tobytes(),) for _ in range(15)],
            )
            conn.execute(
                "DELETE FROM face_meta WHERE id IN "
                "(SELECT id FROM face_meta ORDER BY random() LIMIT 3)"
            )
            conn.execute(
                "UPDATE face_meta SET embedding = ? WHERE id = "
                "(SELECT id FROM face_meta ORDER BY random() LIMIT 1)",
                (rng.standard_normal(DIM).astype("f4").tobytes(),),
            )
            conn.execute("COMMIT")
        elif role == "sync":
            conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()
        elif role == "sync_batches":
            while conn.execute("SELECT facevec_knn_sync('face_meta', 7)").fetchone()[0] == 7:
                pass
        elif role == "build":
            if i % 2:
                conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)").fetchone()
            else:
                conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', 64)").fetchone()
                while conn.execute("SELECT facevec_knn_sync('face_meta', 40)").fetchone()[0] == 40:
                    pass
        elif role == "query":
            q = rng.standard_normal(DIM).astype("f4").tobytes()
            # One snapshot: the index's answer equals the scalar function's.
            conn.execute("BEGIN")
            got = conn.execute(knn, (q,)).fetchall()
            want = conn.execute(
                "SELECT id, euclidean_distance(embedding, ?1) AS d FROM face_meta "
                "ORDER BY d, id LIMIT 50", (q,)
            ).fetchall()
            conn.execute("COMMIT")
            assert got == want, (got[:3], want[:3])
            # Autocommit: the query reads its tables in one snapshot too.
            rows = conn.execute(knn, (q,)).fetchall()
            assert len({r for r, _ in rows}) == len(rows) == 50
            assert [d for _, d in rows] == sorted(d for _, d in rows)
    print("ok")
    """
).replace("DIM", str(DIM))

ROLES = ["insert", "insert", "sync", "sync_batches", "build", "query"]


def stored_vectors(conn) -> dict[int, bytes]:
    """rowid -> vector bytes, read straight from the index's chunks."""
    (dim,) = conn.execute("SELECT dim FROM facevec_knn_index WHERE tbl = 'face_meta'").fetchone()
    stored: dict[int, bytes] = {}
    for valid, rowids, vectors in conn.execute(
        "SELECT valid, rowids, vectors FROM face_meta_fvknn_chunks ORDER BY id"
    ):
        ids = np.frombuffer(rowids, "<i8")
        for slot, rid in enumerate(ids):
            if valid[slot // 8] >> (slot % 8) & 1:
                assert int(rid) not in stored
                stored[int(rid)] = vectors[slot * dim * 4 : (slot + 1) * dim * 4]
    return stored


@pytest.mark.slow
def test_concurrent_writers_all_succeed_and_agree(tmp_path):
    ext = extension_under_test()
    db = tmp_path / "shared.db"
    conn = connect(ext, db)
    conn.execute("PRAGMA journal_mode = WAL")
    make_table(conn, np.random.default_rng(0).standard_normal((300, DIM)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.close()
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    workers = [
        subprocess.Popen(
            [sys.executable, str(script), ext, str(db), role, str(seed), "12"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed, role in enumerate(ROLES)
    ]
    failures = []
    for role, worker in zip(ROLES, workers, strict=True):
        out, err = worker.communicate(timeout=600)
        if worker.returncode != 0 or out.strip() != "ok":
            failures.append(f"{role}: {err.strip().splitlines()[-1:]}")
    assert not failures, failures

    conn = connect(ext, db)
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    table = dict(conn.execute("SELECT id, embedding FROM face_meta").fetchall())
    assert stored_vectors(conn) == table  # what a serial build would hold
    rng = np.random.default_rng(99)
    for _ in range(5):
        q = rng.standard_normal(DIM).astype(np.float32)
        got = conn.execute(
            "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 1000)", (q.tobytes(),)
        ).fetchall()
        assert got == scalar(conn, q, 1000)


def test_a_writing_function_inside_a_transaction_keeps_it_open(tmp_path):
    """Within the caller's transaction the functions use a savepoint: their
    writes commit or roll back with the caller's."""
    ext = extension_under_test()
    conn = connect(ext, tmp_path / "txn.db")
    make_table(conn, np.random.default_rng(1).standard_normal((50, DIM)).astype(np.float32))
    conn.execute("BEGIN")
    assert conn.execute("SELECT facevec_knn_build('face_meta')").fetchone() == (50,)
    assert conn.in_transaction
    conn.execute("ROLLBACK")
    assert conn.execute("SELECT facevec_knn_status('face_meta')").fetchone() == (None,)
    conn.execute("SELECT facevec_knn_build('face_meta')")
    conn.execute("BEGIN")
    conn.execute("DELETE FROM face_meta WHERE id <= 10")
    assert conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone() == (10,)
    conn.execute("COMMIT")
    assert not conn.in_transaction
    assert '"vectors":40' in conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0]


def test_a_failed_call_in_autocommit_mode_leaves_no_transaction(tmp_path):
    ext = extension_under_test()
    conn = connect(ext, tmp_path / "fail.db")
    make_table(conn, np.ones((3, 4), np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta')")
    conn.execute("INSERT INTO face_meta(embedding) VALUES (x'00000000')")
    with pytest.raises(sqlite3.OperationalError, match="row 4: embedding has 1 dimensions"):
        conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()
    assert not conn.in_transaction
    assert '"pending":1' in conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0]


CHANGER = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pysqlite3 import dbapi2 as sqlite3

    ext, db, rounds = sys.argv[1:4]
    conn = sqlite3.connect(db, isolation_level=None, timeout=60)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    rng = np.random.default_rng(5)
    for i in range(int(rounds)):
        conn.executemany(
            "INSERT INTO face_meta(embedding) VALUES (?)",
            [(rng.standard_normal(DIM).astype("f4").tobytes(),) for _ in range(3)],
        )
        conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()
        if i % 10 == 9:  # a new index: its chunks and description start over
            conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)").fetchone()
    print("ok")
    """
).replace("DIM", str(DIM))


@pytest.mark.slow
@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_status_and_queries_read_one_snapshot_while_another_connection_writes(tmp_path, journal):
    """Each call of facevec_knn_status and facevec_knn in autocommit mode reads
    the index's description, chunks and log in one read transaction: a commit
    of another connection between two of its statements must not show it the
    description of one state and the chunks of another (reported as a corrupt
    index before)."""
    ext = extension_under_test()
    db = tmp_path / "snapshot.db"
    conn = connect(ext, db)
    conn.execute(f"PRAGMA journal_mode = {journal}")
    make_table(conn, np.random.default_rng(0).standard_normal((100, DIM)).astype(np.float32))
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', 64)")
    conn.execute("PRAGMA busy_timeout = 60000")
    script = tmp_path / "changer.py"
    script.write_text(CHANGER)
    changer = subprocess.Popen(
        [sys.executable, str(script), ext, str(db), "120"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    q = np.random.default_rng(1).standard_normal(DIM).astype(np.float32).tobytes()
    errors: list[str] = []
    calls = 0
    while changer.poll() is None and len(errors) < 5:
        calls += 1
        try:
            info = json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])
            assert info["vectors"] <= info["slots"], info
            rows = conn.execute(
                "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 10)", (q,)
            ).fetchall()
            assert len(rows) == 10, rows
        except (sqlite3.Error, AssertionError) as err:
            errors.append(f"call {calls}: {err}")
    out, err = changer.communicate(timeout=600)
    assert changer.returncode == 0 and out.strip() == "ok", err
    assert errors == []
