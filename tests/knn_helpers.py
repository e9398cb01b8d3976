"""Helpers of the facevec_knn tests: connections with the extension under
test, a face_meta table, the knn query and the scalar query it must equal
(same rows, same bits), and a float64 numpy reference."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np


def extension_under_test() -> str:
    """$FACEVEC_LOADABLE (e.g. a sanitizer build), else the installed extension."""
    import facevec

    return os.environ.get("FACEVEC_LOADABLE") or facevec.loadable_path()


SCALAR = {
    "euclidean": "euclidean_distance",
    "euclidean_squared": "euclidean_distance_squared",
    "cosine": "cosine_distance",
    "euclidean_l2": "euclidean_l2_distance",
}


def connect(ext: str, path: Path | str = ":memory:"):
    """An autocommit connection with the C library: through facevec, on this process's
    one SQLite, for the installed extension; another build (a sanitizer's) is loaded
    into pysqlite3, a library of its own (only these tests should run then)."""
    import facevec

    if ext == facevec.loadable_path():
        return facevec.connect(path, native=True, isolation_level=None)
    from pysqlite3 import dbapi2

    conn = dbapi2.connect(str(path), isolation_level=None)
    conn.enable_load_extension(True)
    conn.load_extension(ext)
    return conn


def make_table(conn, x: np.ndarray | None = None, ids=None) -> None:
    conn.execute(
        "CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB, model TEXT)"
    )
    if x is not None:
        ids = list(range(1, len(x) + 1)) if ids is None else ids
        conn.executemany(
            "INSERT INTO face_meta(id, img_name, embedding) VALUES (?, ?, ?)",
            [
                (int(i), f"img{i}.jpg", v.astype(np.float32).tobytes())
                for i, v in zip(ids, x, strict=True)
            ],
        )


def knn(conn, q, k, metric="euclidean", threshold=None, table="face_meta"):
    q = q if isinstance(q, (bytes, str)) else np.asarray(q, np.float32).tobytes()
    return conn.execute(
        "SELECT rowid, distance FROM facevec_knn(?, ?, ?, ?, ?)", (table, q, k, metric, threshold)
    ).fetchall()


def scalar(conn, q, k, metric="euclidean", threshold=None):
    fn = SCALAR[metric]
    where = "" if threshold is None else "WHERE d <= ?"
    params = (np.asarray(q, np.float32).tobytes(),) + (() if threshold is None else (threshold,))
    return conn.execute(
        f"SELECT id, d FROM (SELECT id, {fn}(embedding, ?1) AS d FROM face_meta "
        f"WHERE embedding IS NOT NULL) {where.replace('?', '?2')} ORDER BY d, id LIMIT {int(k)}",
        params,
    ).fetchall()


def reference(x: np.ndarray, ids, q: np.ndarray, metric: str) -> np.ndarray:
    x64, q64 = x.astype(np.float64), q.astype(np.float64)
    if metric in ("euclidean", "euclidean_squared"):
        d = ((x64 - q64) ** 2).sum(1)
        return np.sqrt(d) if metric == "euclidean" else d
    xn = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    qn = q64 / np.linalg.norm(q64)
    if metric == "cosine":
        return 1 - xn @ qn
    return np.sqrt(((xn - qn) ** 2).sum(1))


def check_reference(got, x, ids, q, k, metric, threshold=None):
    """got agrees with float64 numpy: its distances are the true distances of
    its rows (to 1e-5), and no row left out is nearer than the last one kept."""
    d = reference(x, ids, q, metric)
    by_id = dict(zip((int(i) for i in ids), d, strict=True))
    scale = 1e-5 * max(1.0, float(np.abs(d).max()) if len(d) else 1.0)
    for rid, dist in got:
        assert abs(by_id[rid] - dist) <= scale, (rid, dist, by_id[rid])
    eligible = d if threshold is None else d[d <= threshold + scale]
    assert len(got) in range(min(k, len(eligible)) - 2, min(k, len(eligible)) + 3)
    if threshold is None:
        assert len(got) == min(k, len(d))
    if got and len(got) < len(d):
        kept = {rid for rid, _ in got}
        worst = max(dist for _, dist in got)
        left_out = [v for i, v in by_id.items() if i not in kept]
        assert min(left_out) >= worst - scale


def assert_matches(conn, x, ids, q, k, metric="euclidean", threshold=None):
    got = knn(conn, q, k, metric, threshold)
    assert got == scalar(conn, q, k, metric, threshold)  # same rows, same bits
    check_reference(got, x, ids, q, k, metric, threshold)
    return got


def current(conn):
    """(matrix, ids) of face_meta rows with an embedding."""
    rows = conn.execute(
        "SELECT id, embedding FROM face_meta WHERE embedding IS NOT NULL ORDER BY id"
    ).fetchall()
    if not rows:
        return np.zeros((0, 1), np.float32), []
    return np.stack([np.frombuffer(e, np.float32) for _, e in rows]), [i for i, _ in rows]


def status(conn, table="face_meta"):
    return json.loads(conn.execute("SELECT facevec_knn_status(?)", (table,)).fetchone()[0])


def random_changes(conn, rng, n_ops, next_id, new_vector):
    """Random inserts, deletes, vector updates, NULLings and id changes of face_meta;
    ``new_vector(rng)`` makes each vector written. Returns the next unused id."""
    ids = [r[0] for r in conn.execute("SELECT id FROM face_meta")]
    for _ in range(n_ops):
        op = rng.integers(6)
        if op <= 1 or not ids:
            conn.execute(
                "INSERT INTO face_meta(id, embedding) VALUES (?, ?)",
                (next_id, new_vector(rng).astype(np.float32).tobytes()),
            )
            ids.append(next_id)
            next_id += 1
        elif op == 2:
            victim = ids.pop(rng.integers(len(ids)))
            conn.execute("DELETE FROM face_meta WHERE id = ?", (victim,))
        elif op == 3:
            vector = new_vector(rng).astype(np.float32).tobytes()
            conn.execute(
                "UPDATE face_meta SET embedding = ? WHERE id = ?",
                (vector, ids[rng.integers(len(ids))]),
            )
        elif op == 4:
            conn.execute(
                "UPDATE face_meta SET embedding = NULL WHERE id = ?", (ids[rng.integers(len(ids))],)
            )
        else:
            old = ids.pop(rng.integers(len(ids)))
            conn.execute("UPDATE face_meta SET id = ? WHERE id = ?", (next_id, old))
            ids.append(next_id)
            next_id += 1
    return next_id
