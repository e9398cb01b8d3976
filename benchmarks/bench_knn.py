"""Exact top-10 face search inside SQLite: facevec_knn against the alternatives.

Side by side in one process, over the same random 128-d float32 vectors:

- facevec_knn: facevec's chunked in-database index (without and with mmap)
- sqlite-vec vec0: ``WHERE embedding MATCH ? AND k = 10`` (without and with mmap)
- facevec scalar: ``ORDER BY euclidean_distance(embedding, ?) LIMIT 10``
- faiss IndexFlatL2, one thread, one query at a time
- stream: one numpy pass over the matrix (``matrix @ q``), the memory floor

Prints median ms per query, ratios to vec0 and to the streaming pass, and the
build time and database size of each. Usage:

    python benchmarks/bench_knn.py                 # N = 10k, 100k
    python benchmarks/bench_knn.py --sizes 1000000 # 1M (build takes ~1 min)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

# One core for everyone: the streaming pass and faiss must not use a thread pool.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from pysqlite3 import dbapi2 as sqlite3  # noqa: E402

DIM = 128
MMAP = 1 << 34


def loadable() -> str:
    """facevec's loadable extension: $FACEVEC_LOADABLE, else the installed one."""
    if os.environ.get("FACEVEC_LOADABLE"):
        return os.environ["FACEVEC_LOADABLE"]
    import facevec

    return facevec.loadable_path()


def connect(path: Path, mmap: bool = False):
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.enable_load_extension(True)
    conn.load_extension(loadable())
    import sqlite_vec

    sqlite_vec.load(conn)
    conn.execute(f"PRAGMA mmap_size = {MMAP if mmap else 0}")
    return conn


def build_face_meta(path: Path, x: np.ndarray) -> float:
    conn = connect(path)
    t = time.perf_counter()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB, model TEXT)"
    )
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO face_meta(id, img_name, embedding, model) VALUES (?, ?, ?, 'Facenet')",
        ((i + 1, f"img{i:07d}.jpg", x[i].tobytes()) for i in range(len(x))),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t


def run(n: int, reps: int, workdir: Path) -> list[tuple[str, float, float | None, int | None]]:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    queries = [
        (x[rng.integers(n)] + 0.1 * rng.standard_normal(DIM)).astype(np.float32) for _ in range(16)
    ]

    facevec_db = workdir / f"facevec_{n}.db"
    vec_db = workdir / f"vec0_{n}.db"
    for p in (facevec_db, vec_db):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)

    base_build = build_face_meta(facevec_db, x)
    base_size = facevec_db.stat().st_size
    conn = connect(facevec_db)
    t = time.perf_counter()
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    knn_build = time.perf_counter() - t
    knn_size = facevec_db.stat().st_size - base_size
    conn.close()

    conn = connect(vec_db)
    t = time.perf_counter()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"CREATE VIRTUAL TABLE vec_items USING vec0(embedding float[{DIM}])")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO vec_items(rowid, embedding) VALUES (?, ?)",
        ((i + 1, x[i].tobytes()) for i in range(n)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    vec_build = time.perf_counter() - t
    vec_size = vec_db.stat().st_size
    conn.close()

    # Every method must agree with faiss before its time counts.
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatL2(DIM)
    t = time.perf_counter()
    index.add(x)
    faiss_build = time.perf_counter() - t

    def faiss_ids(q):
        return [int(i) + 1 for i in index.search(q[None, :], 10)[1][0]]

    knn_sql = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 10)"
    vec_sql = "SELECT rowid, distance FROM vec_items WHERE embedding MATCH ? AND k = 10"
    scalar_sql = (
        "SELECT id, euclidean_distance(embedding, ?) AS d FROM face_meta ORDER BY d LIMIT 10"
    )
    conns = {mmap: (connect(facevec_db, mmap), connect(vec_db, mmap)) for mmap in (False, True)}
    for fconn, vconn in conns.values():
        for q in queries[:4]:
            want = faiss_ids(q)
            for name, c, sql in (("facevec_knn", fconn, knn_sql), ("vec0", vconn, vec_sql)):
                got = [r[0] for r in c.execute(sql, (q.tobytes(),))]
                if got != want:
                    sys.exit(f"{name} disagrees with faiss at N={n}: {got} != {want}")

    def sql_method(conn, sql):
        return lambda q: conn.execute(sql, (q.tobytes(),)).fetchall()

    # (name, function of a query, build seconds, bytes, runs every how many rounds)
    methods = [
        ("facevec_knn", sql_method(conns[False][0], knn_sql), knn_build, knn_size, 1),
        ("vec0 MATCH k=10", sql_method(conns[False][1], vec_sql), vec_build, vec_size, 1),
        ("facevec_knn +mmap", sql_method(conns[True][0], knn_sql), None, None, 1),
        ("vec0 MATCH k=10 +mmap", sql_method(conns[True][1], vec_sql), None, None, 1),
        ("scalar ORDER BY +mmap", sql_method(conns[True][0], scalar_sql), base_build, base_size, 4),
        (
            "faiss IndexFlatL2 (1 thread)",
            lambda q: index.search(q[None, :], 10),
            faiss_build,
            None,
            1,
        ),
        ("numpy stream (x @ q)", lambda q: x @ q, None, None, 1),
    ]
    # Round-robin, so that load from other processes hits every method alike.
    times: dict[str, list[float]] = {m[0]: [] for m in methods}
    for _, fn, *_ in methods:
        fn(queries[0])  # warm the page cache
    for i in range(reps):
        q = queries[i % len(queries)]
        for name, fn, _, _, every in methods:
            if i % every == 0:
                t = time.perf_counter()
                fn(q)
                times[name].append((time.perf_counter() - t) * 1e3)
    for fconn, vconn in conns.values():
        fconn.close()
        vconn.close()
    return [(name, statistics.median(times[name]), b, size) for name, _, b, size, _ in methods]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="10000,100000", help="comma-separated N (default 10k,100k)"
    )
    parser.add_argument("--reps", type=int, default=21, help="queries per method (median)")
    parser.add_argument(
        "--workdir", default=None, help="where the databases go (default: a temp dir)"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_knn_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"databases in {workdir}; extension {loadable()}")
    for n in (int(s) for s in args.sizes.split(",")):
        rows = run(n, args.reps, workdir)
        times = dict((r[0], r[1]) for r in rows)
        vec0, vec0m, stream = (
            times["vec0 MATCH k=10"],
            times["vec0 MATCH k=10 +mmap"],
            times["numpy stream (x @ q)"],
        )
        print(f"\nN = {n:,} x {DIM}-d float32 ({n * DIM * 4 / 2**20:.0f} MiB of vectors)")
        header = ("method", "ms/query", "/vec0", "/vec0 mmap", "/stream", "build s", "size MiB")
        print("{:32} {:>9} {:>7} {:>10} {:>8} {:>8} {:>9}".format(*header))
        for name, ms, build, size in rows:
            print(
                f"{name:32} {ms:9.2f} {ms / vec0:7.2f} {ms / vec0m:10.2f} {ms / stream:8.2f} "
                f"{'' if build is None else f'{build:.2f}':>8} "
                f"{'' if size is None else f'{size / 2**20:.1f}':>9}"
            )
    print("\nsize of facevec_knn = index only (added to face_meta); scalar row = face_meta itself")


if __name__ == "__main__":
    main()
