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

With ``--ann``, the approximate table instead, over clustered face-like vectors
(many identities, five faces each): recall@10 against the exact answer and ms
per query for facevec's IVF index at several nprobe, facevec's exact index,
faiss IndexIVFFlat (the same lists and nprobe, one thread), faiss HNSW (M=32),
and sqlite-vec vec0; build time and size of each; and a batch of 1,000 queries
through ``facevec_knn_batch`` against as many single queries:

    python benchmarks/bench_knn.py --ann --sizes 100000,1000000

With ``--ann --storage``, facevec's exact and IVF indexes with their vectors
stored as float32, float16 and int8 (re-ranked exactly from the table at the
default rerank): recall@10, ms per query, index size.

    python benchmarks/bench_knn.py --ann --storage --sizes 100000

With ``--n N``, the IVF index at scale (√N lists) for each of ``--storages``:
build time and the build's peak memory (in a child process), file size,
recall@10 and CPU ms per query at the default nprobe and at the smallest
nprobe reaching 0.95, beside faiss IndexIVFFlat and IndexIVFScalarQuantizer
(QT_8bit) on facevec's own centroids; the vectors are generated 100k rows at a
time into a memory-mapped file:

    python benchmarks/bench_knn.py --n 10000000 --storages int8,float32

With ``--writes W`` too, each index then takes W inserts in one transaction and
300 more a transaction each (through the triggers that log them), a query with
the log pending (new rows found by their own vector), ``facevec_knn_sync``, as
many deletes, a query, the sync, and recall@10 on the changed data against exact
brute force; the chunk cache is timed around each sync (first query, first pass,
warm again). ``--no-faiss`` leaves faiss out:

    python benchmarks/bench_knn.py --n 10000000 --storages int8 --writes 100000 --no-faiss
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

# pysqlite3 loads extensions (sqlite-vec's too): made this process's sqlite3 before
# facevec is imported, so facevec runs on it as well (one SQLite per process).
from pysqlite3 import dbapi2 as sqlite3  # noqa: E402

sys.modules["sqlite3"] = sqlite3
import numpy as np  # noqa: E402

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


def build_vec0(path: Path, x: np.ndarray) -> float:
    """A sqlite-vec vec0 table of x (rowids 1..n) in path; returns the build seconds."""
    conn = connect(path)
    t = time.perf_counter()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"CREATE VIRTUAL TABLE vec_items USING vec0(embedding float[{DIM}])")
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO vec_items(rowid, embedding) VALUES (?, ?)",
        ((i + 1, row.tobytes()) for i, row in enumerate(x)),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    seconds = time.perf_counter() - t
    conn.close()
    return seconds


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

    vec_build = build_vec0(vec_db, x)
    vec_size = vec_db.stat().st_size

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


def faces_like(
    rng, n: int, dim: int = DIM, per_identity: int = 5, out: np.ndarray | None = None
) -> np.ndarray:
    """Face-like clusters: identities on a 24-dimensional manifold (plus some
    spread in every direction), several faces (noisy copies) of each. ``out``
    (e.g. a memory-mapped .npy) receives them, 100k rows at a time."""
    n_id = max(1, n // per_identity)
    basis = rng.standard_normal((24, dim)).astype(np.float32) / np.float32(np.sqrt(24))
    identities = rng.standard_normal((n_id, 24), dtype=np.float32) @ basis
    identities += 0.35 * rng.standard_normal((n_id, dim), dtype=np.float32)
    x = np.empty((n, dim), np.float32) if out is None else out
    step = 100_000
    for i in range(0, n, step):
        m = min(step, n - i)
        x[i : i + m] = identities[rng.integers(0, n_id, m)]
        x[i : i + m] += 0.3 * rng.standard_normal((m, dim), dtype=np.float32)
    return x


def timed(fn, queries) -> float:
    """Mean CPU ms per query over queries (after one warm-up): the process's
    CPU time, which the load of other processes on a shared machine hardly
    changes (every method runs on one thread)."""
    fn(queries[0])
    t = time.process_time()
    for q in queries:
        fn(q)
    return (time.process_time() - t) * 1e3 / len(queries)


def timed_first(fn, queries) -> float:
    """Mean CPU ms per query of one pass over queries, with no warm-up: the first
    queries after the chunk cache was emptied read their chunks from the file."""
    t = time.process_time()
    for q in queries:
        fn(q)
    return (time.process_time() - t) * 1e3 / len(queries)


def timed_cold(fn, queries, empty) -> float:
    """Mean CPU ms per query, each query alone on an empty chunk cache (``empty()``
    before it, not timed): every chunk it reads comes from the file."""
    total = 0.0
    for q in queries:
        empty()
        t = time.process_time()
        fn(q)
        total += time.process_time() - t
    return total * 1e3 / len(queries)


def recall_at_10(found: list[list[int]], truth: np.ndarray) -> float:
    return float(
        np.mean([len(set(f) & set(t.tolist())) / 10 for f, t in zip(found, truth, strict=True)])
    )


def run_ann(n: int, workdir: Path, hnsw: bool, n_queries: int = 200) -> list[tuple]:
    import json

    import faiss

    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(n)
    x = faces_like(rng, n)
    picks = rng.choice(n, n_queries, replace=False)
    queries = x[picks] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(x)
    truth = flat.search(queries, 10)[1] + 1  # rowids are 1-based
    del flat
    lists = round(np.sqrt(n))
    rows: list[tuple] = []  # (method, setting, recall, ms, build s, MiB)

    ivf_db, exact_db = workdir / f"ivf_{n}.db", workdir / f"exact_{n}.db"
    for p in (ivf_db, exact_db):
        for suffix in ("", "-wal", "-shm"):
            Path(str(p) + suffix).unlink(missing_ok=True)
    build_face_meta(ivf_db, x)
    base = ivf_db.stat().st_size
    conn = connect(ivf_db)
    t = time.perf_counter()
    conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)",
        (json.dumps({"lists": lists}),),
    )
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    ivf_build = time.perf_counter() - t
    ivf_size = (ivf_db.stat().st_size - base) / 2**20
    info = json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])
    conn.close()
    conn = connect(ivf_db, mmap=True)
    sql = "SELECT rowid FROM facevec_knn('face_meta', ?, 10, 'euclidean', NULL, ?)"
    probes = sorted({1, 2, 4, 8, 16, 32, 64, info["nprobe"]} - {p for p in [] if p > lists})
    ivf_times = {}
    for nprobe in probes:
        found = [[r[0] for r in conn.execute(sql, (q.tobytes(), nprobe))] for q in queries]
        ms = timed(
            lambda q, p=nprobe: conn.execute(sql, (q.tobytes(), p)).fetchall(), queries[:100]
        )
        label = f"nprobe {nprobe}" + (" (default)" if nprobe == info["nprobe"] else "")
        ivf_times[nprobe] = ms
        rows.append(("facevec IVF", label, recall_at_10(found, truth), ms, ivf_build, ivf_size))
    batch_sql = (
        "SELECT query_no, rowid FROM facevec_knn_batch('face_meta', ?, 10, 'euclidean', NULL, ?) "
        "ORDER BY query_no, distance"
    )
    big = np.concatenate([queries] * (1000 // n_queries + 1))[:1000]
    text = json.dumps(big.astype(np.float64).tolist())
    t = time.process_time()
    conn.execute(batch_sql, (text, info["nprobe"])).fetchall()
    ivf_batch_ms = (time.process_time() - t) * 1e3 / 1000
    conn.close()

    build_face_meta(exact_db, x)
    base = exact_db.stat().st_size
    conn = connect(exact_db)
    t = time.perf_counter()
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding')")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    exact_build = time.perf_counter() - t
    exact_size = (exact_db.stat().st_size - base) / 2**20
    conn.close()
    conn = connect(exact_db, mmap=True)
    sql = "SELECT rowid FROM facevec_knn('face_meta', ?, 10)"
    found = [[r[0] for r in conn.execute(sql, (q.tobytes(),))] for q in queries[:20]]
    exact_ms = timed(lambda q: conn.execute(sql, (q.tobytes(),)).fetchall(), queries[:20])
    rows.append(
        ("facevec exact", "", recall_at_10(found, truth[:20]), exact_ms, exact_build, exact_size)
    )
    t = time.process_time()
    batch_rows = conn.execute(batch_sql, (text, None)).fetchall()
    exact_batch_ms = (time.process_time() - t) * 1e3 / 1000
    got = [[r for qn, r in batch_rows if qn == i] for i in range(n_queries)]
    batch_recall = recall_at_10(got, truth)
    conn.close()
    exact_db.unlink()

    quantizer = faiss.IndexFlatL2(DIM)
    ivf = faiss.IndexIVFFlat(quantizer, DIM, lists)
    t = time.perf_counter()
    sample = x[rng.choice(n, min(n, 40 * lists), replace=False)]
    ivf.train(sample)
    ivf.add(x)
    fbuild = time.perf_counter() - t
    for nprobe in probes:
        ivf.nprobe = nprobe
        found = (ivf.search(queries, 10)[1] + 1).tolist()
        ms = timed(lambda q, index=ivf: index.search(q[None, :], 10), queries[:100])
        rows.append(
            (
                "faiss IVFFlat",
                f"nprobe {nprobe}",
                recall_at_10(found, truth),
                ms,
                fbuild,
                n * DIM * 4 / 2**20,
            )
        )
    if hnsw:
        index = faiss.IndexHNSWFlat(DIM, 32)
        t = time.perf_counter()
        index.add(x)
        hbuild = time.perf_counter() - t
        for ef in (16, 32, 64, 128):
            index.hnsw.efSearch = ef
            found = (index.search(queries, 10)[1] + 1).tolist()
            ms = timed(lambda q, h=index: h.search(q[None, :], 10), queries[:100])
            rows.append(
                ("faiss HNSW32", f"efSearch {ef}", recall_at_10(found, truth), ms, hbuild, None)
            )
        del index

    vec_db = workdir / f"vec0_ann_{n}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(vec_db) + suffix).unlink(missing_ok=True)
    vbuild = build_vec0(vec_db, x)
    vsize = vec_db.stat().st_size / 2**20
    conn = connect(vec_db, mmap=True)
    vsql = "SELECT rowid FROM vec_items WHERE embedding MATCH ? AND k = 10"
    found = [[r[0] for r in conn.execute(vsql, (q.tobytes(),))] for q in queries[:10]]
    vms = timed(lambda q: conn.execute(vsql, (q.tobytes(),)).fetchall(), queries[:10])
    rows.append(("sqlite-vec vec0", "exact", recall_at_10(found, truth[:10]), vms, vbuild, vsize))
    conn.close()
    vec_db.unlink()
    ivf_db.unlink()
    rows.append(
        (
            "facevec exact, batch of 1000",
            "facevec_knn_batch",
            batch_recall,
            exact_batch_ms,
            None,
            None,
        )
    )
    rows.append(
        ("facevec IVF, batch of 1000", f"nprobe {info['nprobe']}", None, ivf_batch_ms, None, None)
    )
    rows.append(
        ("(IVF lists, default nprobe)", f"{lists}, {info['nprobe']}", None, None, None, None)
    )
    return rows


def run_storage(n: int, workdir: Path, n_queries: int = 200) -> list[tuple]:
    """facevec's exact and IVF indexes per storage: (index, storage, recall,
    ms, build s, MiB)."""
    import json

    import faiss

    rng = np.random.default_rng(n)
    x = faces_like(rng, n)
    picks = rng.choice(n, n_queries, replace=False)
    queries = x[picks] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    flat = faiss.IndexFlatL2(DIM)
    flat.add(x)
    truth = flat.search(queries, 10)[1] + 1
    del flat
    lists = round(np.sqrt(n))
    db = workdir / f"storage_{n}.db"
    rows: list[tuple] = []
    for kind, n_lists in (("exact", 0), ("IVF", lists)):
        for storage in ("float32", "float16", "int8"):
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            build_face_meta(db, x)
            conn = connect(db)
            conn.execute("VACUUM")
            base = db.stat().st_size
            t = time.perf_counter()
            conn.execute(
                "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)",
                (json.dumps({"lists": n_lists, "storage": storage}),),
            )
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            build = time.perf_counter() - t
            size = (db.stat().st_size - base) / 2**20
            conn.close()
            conn = connect(db, mmap=True)
            sql = "SELECT rowid FROM facevec_knn('face_meta', ?, 10)"
            m = n_queries if n_lists else 40
            found = [[r[0] for r in conn.execute(sql, (q.tobytes(),))] for q in queries[:m]]
            ms = timed(
                lambda q, c=conn, s=sql: c.execute(s, (q.tobytes(),)).fetchall(), queries[:m]
            )
            rows.append(
                (f"facevec {kind}", storage, recall_at_10(found, truth[:m]), ms, build, size)
            )
            conn.close()
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    return rows


def exact_top10(x: np.ndarray, queries: np.ndarray, step: int = 200_000) -> np.ndarray:
    """The exact 10 nearest rowids (1-based) of each query, x read in slices."""
    best_d = np.full((len(queries), 10), np.inf)
    best_i = np.zeros((len(queries), 10), np.int64)
    qn = (queries.astype(np.float64) ** 2).sum(axis=1)[:, None]
    for i in range(0, len(x), step):
        block = np.asarray(x[i : i + step], dtype=np.float32)
        d = qn - 2 * queries.astype(np.float64) @ block.T.astype(np.float64)
        d += (block.astype(np.float64) ** 2).sum(axis=1)[None, :]
        d = np.concatenate([best_d, d], axis=1)
        ids = np.concatenate([best_i, np.arange(i, i + len(block))[None, :].repeat(len(d), 0)], 1)
        keep = np.argsort(d, axis=1, kind="stable")[:, :10]
        best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(ids, keep, 1)
    return best_i + 1


def fill_face_meta(path: Path, x: np.ndarray, step: int = 100_000) -> float:
    """face_meta of x (rowids 1..n), a transaction per step rows; build seconds."""
    conn = connect(path)
    t = time.perf_counter()
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(
        "CREATE TABLE face_meta(id INTEGER PRIMARY KEY, img_name TEXT, embedding BLOB, model TEXT)"
    )
    for i in range(0, len(x), step):
        block = np.asarray(x[i : i + step])
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO face_meta(id, img_name, embedding, model) VALUES (?, ?, ?, 'Facenet')",
            ((i + j + 1, f"img{i + j:08d}.jpg", row.tobytes()) for j, row in enumerate(block)),
        )
        conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return time.perf_counter() - t


BUILD_ONE = """
import json, sys, time
sys.argv = sys.argv[:1]
import bench_knn
conn = bench_knn.connect(bench_knn.Path({path!r}))
t = time.perf_counter()
conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", ({options!r},))
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(time.perf_counter() - t)
# This process's own peak (VmHWM): wait4's ru_maxrss would also count the
# parent's memory, which a child started by vfork/exec inherits as its peak.
try:
    with open("/proc/self/status") as f:
        print(next(int(l.split()[1]) for l in f if l.startswith("VmHWM:")))
except (OSError, StopIteration):
    import resource
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


BUILD_MEASURED = """
import json, sys, time
sys.argv = sys.argv[:1]
import bench_knn
conn = bench_knn.connect(bench_knn.Path({path!r}))
t, cpu = time.perf_counter(), time.process_time()
conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", ({options!r},))
conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
print(json.dumps(bench_knn.own_measures(time.perf_counter() - t, time.process_time() - cpu)))
"""

FAISS_MEASURED = """
import json, sys, time
sys.argv = sys.argv[:1]
import bench_knn
import faiss
import numpy as np
faiss.omp_set_num_threads(1)
x = np.load({path!r}, mmap_mode="r")
n, lists, dim = len(x), {lists}, x.shape[1]
sample = np.asarray(x[np.random.default_rng(1).choice(n, min(n, 40 * lists), replace=False)])
t, cpu = time.perf_counter(), time.process_time()
index = (faiss.IndexIVFFlat(faiss.IndexFlatL2(dim), dim, lists) if {flat} else
         faiss.IndexIVFScalarQuantizer(faiss.IndexFlatL2(dim), dim, lists,
                                       faiss.ScalarQuantizer.QT_8bit))
index.train(sample)
for i in range(0, n, 200_000):
    index.add(np.asarray(x[i : i + 200_000]))
print(json.dumps(bench_knn.own_measures(time.perf_counter() - t, time.process_time() - cpu)))
"""


def own_measures(wall: float, cpu: float) -> dict:
    """The wall and CPU seconds given, this process's peak RSS (VmHWM, MiB) and the
    bytes it caused to be written to storage (/proc/self/io write_bytes)."""
    out = {"wall": wall, "cpu": cpu, "peak": None, "written": None}
    try:
        with open("/proc/self/status") as f:
            out["peak"] = next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024
        with open("/proc/self/io") as f:
            out["written"] = next(int(ln.split()[1]) for ln in f if ln.startswith("write_bytes:"))
    except (OSError, StopIteration):
        pass
    return out


def measured_child(code: str) -> dict:
    """Run code in a child Python (this folder importable); its JSON last line."""
    import json
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main_build_only(n: int, workdir: Path, storages: list[str]) -> None:
    """Builds only, each in a process of its own: facevec's IVF build per storage
    and faiss IVFFlat / IVFScalarQuantizer train+add, wall and CPU seconds, peak
    memory and bytes written, with ratios to faiss IVFFlat."""
    import json
    import shutil

    rng = np.random.default_rng(n)
    npy = workdir / f"x_{n}.npy"
    x = np.lib.format.open_memmap(npy, mode="w+", dtype=np.float32, shape=(n, DIM))
    faces_like(rng, n, out=x)
    x.flush()
    del x
    lists = round(np.sqrt(n))
    base_db = workdir / f"build_{n}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(base_db) + suffix).unlink(missing_ok=True)
    fill_face_meta(base_db, np.load(npy, mmap_mode="r"))
    print(f"\nN = {n:,} x {DIM}-d face-like float32, {lists} lists, builds only")
    print(f"load average before: {os.getloadavg()}", flush=True)
    print("| build | wall s | CPU s | peak MiB | MiB written | / faiss IVFFlat (wall, CPU) |")
    print("|---|---:|---:|---:|---:|---:|", flush=True)
    rows = []
    for name, flat in (
        ("faiss IVFFlat train+add", True),
        ("faiss IVFScalarQuantizer QT_8bit train+add", False),
    ):
        code = FAISS_MEASURED.format(path=str(npy), lists=lists, flat=flat)
        rows.append((name, measured_child(code)))
    for storage in storages:
        db = workdir / f"build_{n}_{storage}.db"
        shutil.copy(base_db, db)
        options = json.dumps({"lists": lists, "storage": storage})
        code = BUILD_MEASURED.format(path=str(db), options=options)
        rows.append((f"facevec {storage}", measured_child(code)))
        for suffix in ("", "-wal", "-shm"):
            Path(str(db) + suffix).unlink(missing_ok=True)
    ref = rows[0][1]
    for name, m in rows:
        ratio = "" if m is ref else f"{m['wall'] / ref['wall']:.2f}×, {m['cpu'] / ref['cpu']:.2f}×"
        peak = "" if m["peak"] is None else f"{m['peak']:.0f}"
        written = "" if m["written"] is None else f"{m['written'] / 2**20:,.0f}"
        print(f"| {name} | {m['wall']:.1f} | {m['cpu']:.1f} | {peak} | {written} | {ratio} |")
    print(f"load average after: {os.getloadavg()}", flush=True)
    base_db.unlink()
    npy.unlink()


def build_in_child(path: Path, options: dict) -> tuple[float, float]:
    """facevec_knn_build in a child process: (seconds, its peak RSS in MiB, VmHWM as
    the child itself reads it after the build)."""
    import json
    import subprocess

    code = BUILD_ONE.format(path=str(path), options=json.dumps(options))
    child = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=Path(__file__).parent,
        stdout=subprocess.PIPE,
        text=True,
    )
    out = child.stdout.read() if child.stdout else ""
    _, status, _ = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"build {options} failed")
    seconds, peak_kib = out.strip().splitlines()[-2:]
    return float(seconds), int(peak_kib) / 1024


WRITE_SINGLES = 300  # rows inserted, then deleted, a transaction each (latency)


def exact_top10_changed(
    x: np.ndarray, new: np.ndarray, queries: np.ndarray, dead: np.ndarray, step: int = 50_000
) -> np.ndarray:
    """The exact 10 nearest rowids of each query among x's rows (rowids 1..n) and
    new's (n+1 on), leaving out the rowids in dead: the truth after writes."""
    n = len(x)
    q64 = queries.astype(np.float64)
    qn = (q64**2).sum(axis=1)[:, None]
    best_d = np.full((len(queries), 10), np.inf)
    best_i = np.zeros((len(queries), 10), np.int64)
    blocks = [(i + 1, x, i) for i in range(0, n, step)]
    blocks += [(n + i + 1, new, i) for i in range(0, len(new), step)]
    for first, src, i in blocks:
        b64 = np.asarray(src[i : i + step], dtype=np.float64)
        ids = np.arange(first, first + len(b64))
        d = qn - 2 * q64 @ b64.T + (b64**2).sum(axis=1)[None, :]
        d[:, np.isin(ids, dead)] = np.inf
        d = np.concatenate([best_d, d], axis=1)
        every = np.concatenate([best_i, np.broadcast_to(ids, (len(d), len(ids)))], axis=1)
        keep = np.argpartition(d, 9, axis=1)[:, :10]
        best_d, best_i = np.take_along_axis(d, keep, 1), np.take_along_axis(every, keep, 1)
    return best_i


def run_writes(
    conn, x: np.ndarray, queries: np.ndarray, truth: np.ndarray, n_writes: int, rng, nprobe: int
) -> list[tuple]:
    """Inserts and deletes on a built IVF index (face_meta with rowids 1..n): rows
    logged by the triggers in one transaction and one per transaction, queries with
    the log pending (new rows found by their own vector, deleted rows gone), the
    syncs, the chunk cache around each sync, and recall@10 at nprobe on the changed
    data against exact brute force. Returns (step, rows, seconds, per row, note)."""
    import json

    n = len(x)
    rows: list[tuple] = []
    sql = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 10, 'euclidean', NULL, ?)"
    insert = "INSERT INTO face_meta(id, img_name, embedding, model) VALUES (?, ?, ?, 'Facenet')"
    conn.execute("PRAGMA synchronous = NORMAL")  # as facevec's own connections

    def search(q) -> list[tuple[int, float]]:
        return conn.execute(sql, (q.tobytes(), nprobe)).fetchall()

    def cache() -> str:
        c = json.loads(conn.execute("SELECT facevec_knn_cache_status()").fetchone()[0])
        return (
            f"cache {c['bytes'] / 1e6:,.0f} MB, {c['chunks']} chunks, "
            f"{c['hits']:,} hits / {c['misses']:,} misses"
        )

    def status() -> dict:
        return json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])

    def progress(step: str) -> None:
        print(f"  writes: {step} ({time.strftime('%H:%M:%S')})", file=sys.stderr, flush=True)

    def write(ids, vectors, singles: int) -> None:
        """The first len(ids) - singles rows in one transaction, the rest one each;
        vectors None: delete them."""
        batch, single = ids[: len(ids) - singles], ids[len(ids) - singles :]
        verb = "insert" if vectors is not None else "delete"
        t = time.perf_counter()
        conn.execute("BEGIN")
        if vectors is None:
            conn.executemany("DELETE FROM face_meta WHERE id = ?", ((int(i),) for i in batch))
        else:
            conn.executemany(
                insert,
                (
                    (int(i), f"new{i}.jpg", v.tobytes())
                    for i, v in zip(batch, vectors, strict=False)
                ),
            )
        conn.execute("COMMIT")
        s = time.perf_counter() - t
        rows.append(
            (
                f"{verb}, one transaction",
                len(batch),
                s,
                f"{s * 1e6 / len(batch):.1f} µs",
                f"{len(batch) / s:,.0f} rows/s",
            )
        )
        took = []
        for j, i in enumerate(single):
            t = time.perf_counter()
            if vectors is None:
                conn.execute("DELETE FROM face_meta WHERE id = ?", (int(i),))
            else:
                v = vectors[len(batch) + j]
                conn.execute(insert, (int(i), f"new{i}.jpg", v.tobytes()))
            took.append(time.perf_counter() - t)
        ms = sorted(1e3 * s for s in took)
        rows.append(
            (
                f"{verb}, a transaction each",
                len(single),
                sum(took),
                f"{statistics.median(ms):.2f} ms",
                f"mean {statistics.mean(ms):.2f} ms, "
                f"p90 {ms[int(0.9 * len(ms))]:.2f} ms (synchronous=NORMAL)",
            )
        )

    def sync(what: str) -> None:
        pending = status()["pending"]
        t, cpu = time.perf_counter(), time.process_time()
        (done,) = conn.execute("SELECT facevec_knn_sync('face_meta')").fetchone()
        s, cpu = time.perf_counter() - t, time.process_time() - cpu
        t = time.perf_counter()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        ckpt = time.perf_counter() - t
        rows.append(
            (
                f"sync ({what})",
                done,
                s,
                f"{done / s:,.0f} rows/s",
                f"{pending:,} logged; CPU {cpu:.1f} s; then checkpoint {ckpt:.1f} s",
            )
        )
        # What the chunk cache does: the sync replaced the index's generation, so
        # every chunk is read again from the file once, then served warm.
        t = time.process_time()
        search(queries[0])
        first = (time.process_time() - t) * 1e3
        rows.append(("  first query after the sync", 1, None, f"{first:.3f} ms", cache()))
        ms = timed_first(search, queries[1:])
        rows.append(
            ("  first pass after the sync", len(queries) - 1, None, f"{ms:.3f} ms", cache())
        )
        ms = timed(search, queries)
        rows.append(("  warm again", len(queries), None, f"{ms:.3f} ms", cache()))

    ms = timed(search, queries)
    rows.append(("query before the writes, warm", len(queries), None, f"{ms:.3f} ms", cache()))
    found = [[r[0] for r in search(q)] for q in queries]
    rows.append(
        (
            "recall@10 before the writes",
            len(queries),
            None,
            f"{recall_at_10(found, truth):.3f}",
            f"nprobe {nprobe}",
        )
    )

    # New faces of known people: a stored face plus noise, as the queries are.
    m = n_writes + WRITE_SINGLES
    new = np.asarray(x[np.sort(rng.integers(0, n, m))]) + 0.3 * rng.standard_normal(
        (m, DIM), dtype=np.float32
    )
    new_ids = np.arange(n + 1, n + m + 1)
    progress(f"inserting {m:,} rows")
    write(new_ids, new, WRITE_SINGLES)
    pending = status()["pending"]
    if pending != m:
        sys.exit(f"{m} rows inserted, {pending} logged")
    picks = np.concatenate(
        [
            rng.choice(n_writes, 10, replace=False),
            n_writes + rng.choice(WRITE_SINGLES, 10, replace=False),
        ]
    )
    for j in picks:
        got = search(new[j])[0]
        if got != (int(new_ids[j]), 0.0):
            sys.exit(f"new row {new_ids[j]} not found by its own vector: {got}")
    ms = timed(search, queries)
    rows.append(
        (
            f"query, {m:,} inserts logged",
            len(queries),
            None,
            f"{ms:.3f} ms",
            f"{len(picks)} new rows found first by their own vector, distance 0",
        )
    )
    progress("sync of the inserts")
    sync("inserts")

    alive = np.concatenate([np.arange(1, n + 1), new_ids])
    dead = np.sort(rng.choice(alive, m, replace=False))
    del alive
    rng.shuffle(dead)  # deletes in random order, as a user's
    progress(f"deleting {m:,} rows")
    write(dead, None, WRITE_SINGLES)
    gone = set(dead.tolist())

    def vector(i: int) -> np.ndarray:
        return np.asarray(x[i - 1]) if i <= n else new[i - n - 1]

    for i in dead[:10].tolist() + dead[-10:].tolist():
        if i in {r[0] for r in search(vector(i))}:
            sys.exit(f"deleted row {i} still found by its own vector")
    if any(r[0] in gone for q in queries for r in search(q)):
        sys.exit("a deleted row was returned")
    ms = timed(search, queries)
    rows.append(
        (
            f"query, {m:,} deletes logged",
            len(queries),
            None,
            f"{ms:.3f} ms",
            "no deleted row returned (by their own vectors, and 200 queries)",
        )
    )
    progress("sync of the deletes")
    sync("deletes")

    # Recall on the changed data: the same queries, and as many new faces of the
    # people just added (each near a new row).
    progress("exact brute force on the changed data")
    near_new = new[rng.choice(m, len(queries), replace=False)] + 0.3 * rng.standard_normal(
        (len(queries), DIM), dtype=np.float32
    )
    both = np.concatenate([queries, near_new])
    dead.sort()
    want = exact_top10_changed(x, new, both, dead)
    found = [[r[0] for r in search(q)] for q in both]
    if any(i in gone for f in found for i in f):
        sys.exit("a deleted row was returned after the sync")
    st = status()
    note = (
        f"nprobe {nprobe}; {st['vectors']:,} vectors, unlisted {st.get('unlisted')}, "
        f"retrain {st.get('retrain')}"
    )
    rows.append(
        (
            "recall@10 after the writes",
            len(queries),
            None,
            f"{recall_at_10(found[: len(queries)], want[: len(queries)]):.3f}",
            note,
        )
    )
    new_hits = sum(i > n for f in found[len(queries) :] for i in f)
    rows.append(
        (
            "recall@10, queries near new rows",
            len(queries),
            None,
            f"{recall_at_10(found[len(queries) :], want[len(queries) :]):.3f}",
            f"{new_hits:,} of their answers are new rows",
        )
    )
    return rows


def print_writes(storage: str, n: int, n_writes: int, rows: list[tuple]) -> None:
    print(
        f"\nWrites on the {storage} IVF index of {n:,} rows: {n_writes:,} rows in one "
        f"transaction and {WRITE_SINGLES} a transaction each, inserted then deleted "
        "(wall s; queries: CPU ms per query)"
    )
    print("| step | rows | s | per row / query | note |")
    print("|---|---:|---:|---:|---|")
    for step, count, s, per, note in rows:
        secs = "" if s is None else f"{s:.2f}"
        print(f"| {step} | {count:,} | {secs} | {per} | {note} |", flush=True)


def run_scale(
    n: int,
    workdir: Path,
    storages: list[str],
    n_queries: int = 200,
    emit=None,
    cache_bytes: int | None = None,
    writes: int = 0,
    with_faiss: bool = True,
    writes_out: dict | None = None,
) -> list[tuple]:
    """IVF at scale per storage beside faiss with the same lists: (method, setting,
    recall, ms, build s, peak MiB, file MiB). The vectors live in a memory-mapped
    .npy, written 100k rows at a time. Each facevec setting is timed three ways:
    warm (its chunks in the process's chunk cache, the steady state compared with
    faiss), cold (each query on an emptied cache), first pass (one pass over the
    queries right after the cache was emptied: each chunk read from the file once,
    then shared by the later queries) and without the cache (budget 0).
    cache_bytes: the cache's budget (None: the extension's default). writes: then
    that many rows inserted and deleted on each index (``run_writes``), their rows
    put in writes_out[storage]. with_faiss False: facevec's indexes only."""
    import json
    import shutil

    rng = np.random.default_rng(n)
    x = np.lib.format.open_memmap(
        workdir / f"x_{n}.npy", mode="w+", dtype=np.float32, shape=(n, DIM)
    )
    faces_like(rng, n, out=x)
    x.flush()
    picks = rng.choice(n, n_queries, replace=False)
    queries = x[picks] + 0.3 * rng.standard_normal((n_queries, DIM), dtype=np.float32)
    truth = exact_top10(x, queries)
    lists = round(np.sqrt(n))
    base_db = workdir / f"scale_{n}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(base_db) + suffix).unlink(missing_ok=True)
    fill_face_meta(base_db, x)
    base_size = base_db.stat().st_size / 2**20
    rows: list[tuple] = []

    class Rows(list):  # each row printed as soon as it is measured (hours at 10M)
        def append(self, row) -> None:
            super().append(row)
            if emit:
                emit(row)

    rows = Rows()
    rows.append(("face_meta alone", "", None, None, None, None, base_size))
    sql = "SELECT rowid FROM facevec_knn('face_meta', ?, 10, 'euclidean', NULL, ?)"
    centroids = None
    probe_scan = range(1, 257)

    def recall_at(search, nprobe: int) -> float:
        return recall_at_10([search(q, nprobe) for q in queries], truth)

    def smallest_095(search) -> int | None:
        # Doubling, then bisection (recall grows with nprobe): few passes at 10M.
        lo, hi = 0, 1
        while recall_at(search, hi) < 0.95:
            lo, hi = hi, hi * 2
            if hi > probe_scan[-1]:
                return None
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if recall_at(search, mid) >= 0.95 else (mid, hi)
        return hi

    default_nprobe = None
    for storage in storages:
        db = workdir / f"scale_{n}_{storage}.db"
        shutil.copy(base_db, db)
        seconds, peak = build_in_child(db, {"lists": lists, "storage": storage})
        size = db.stat().st_size / 2**20
        conn = connect(db, mmap=True)
        info = json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])
        default_nprobe = info["nprobe"]
        if centroids is None:
            (blob,) = conn.execute("SELECT centroids FROM face_meta_fvknn_ivf").fetchone()
            centroids = np.frombuffer(blob, np.float32).reshape(lists, DIM).copy()

        def search(q, nprobe, c=conn):
            return [r[0] for r in c.execute(sql, (q.tobytes(), nprobe))]

        if cache_bytes is None:  # the extension's default, read once (0 is set below)
            (cache_bytes,) = conn.execute("SELECT facevec_knn_cache_size()").fetchone()
        budget = cache_bytes
        for nprobe in sorted({default_nprobe, smallest_095(search) or default_nprobe}):
            label = f"nprobe {nprobe}" + (" (default)" if nprobe == default_nprobe else "")
            recall = recall_at(search, nprobe)

            def query(q, p=nprobe, c=conn):
                return c.execute(sql, (q.tobytes(), p)).fetchall()

            conn.execute("SELECT facevec_knn_cache_size(0)")  # empties the cache too
            ms_off = timed(query, queries)

            def empty(c=conn, b=budget):
                c.execute("SELECT facevec_knn_cache_size(0)")
                c.execute("SELECT facevec_knn_cache_size(?)", (b,))

            ms_cold = timed_cold(query, queries, empty)
            empty()
            ms_first = timed_first(query, queries)
            ms = timed(query, queries)
            rows.append((f"facevec IVF {storage}", label + ", warm", recall, ms, seconds, peak,
                         size))  # fmt: skip
            rows.append((f"facevec IVF {storage}", label + ", first pass", None, ms_first,
                         None, None, None))  # fmt: skip
            rows.append((f"facevec IVF {storage}", label + ", cold", None, ms_cold, None,
                         None, None))  # fmt: skip
            rows.append((f"facevec IVF {storage}", label + ", no cache", None, ms_off, None,
                         None, None))  # fmt: skip
        (status,) = conn.execute("SELECT facevec_knn_cache_status()").fetchone()
        rows.append((f"facevec IVF {storage}", f"chunk cache: {status}", None, None, None,
                     None, None))  # fmt: skip
        if writes:
            wrng = np.random.default_rng(n + 1)  # rng stays as it was for faiss's sample
            out = run_writes(conn, x, queries, truth, writes, wrng, default_nprobe)
            if writes_out is not None:
                writes_out[storage] = out
        conn.execute("SELECT facevec_knn_cache_size(0)")  # the next storage starts empty
        conn.execute("SELECT facevec_knn_cache_size(?)", (budget,))
        conn.close()
        db.unlink()

    if not with_faiss:
        base_db.unlink()
        (workdir / f"x_{n}.npy").unlink()
        rows.append(
            (
                "(IVF lists, default nprobe)",
                f"{lists}, {default_nprobe}",
                None,
                None,
                None,
                None,
                None,
            )
        )
        return rows
    import faiss

    faiss.omp_set_num_threads(1)
    # faiss: its own k-means (train) and add, for the build time; then the same
    # lists as facevec's (its centroids) for recall and time per query.
    sample = np.asarray(x[rng.choice(n, min(n, 40 * lists), replace=False)])
    t = time.perf_counter()
    own = faiss.IndexIVFFlat(faiss.IndexFlatL2(DIM), DIM, lists)
    own.train(sample)
    train_s = time.perf_counter() - t
    del own
    for name, kind in (("faiss IVFFlat", None), ("faiss IVFScalarQuantizer QT_8bit", "sq8")):
        quantizer = faiss.IndexFlatL2(DIM)
        quantizer.add(centroids)
        if kind is None:
            index = faiss.IndexIVFFlat(quantizer, DIM, lists)
        else:
            index = faiss.IndexIVFScalarQuantizer(
                quantizer, DIM, lists, faiss.ScalarQuantizer.QT_8bit
            )
        t = time.perf_counter()
        index.train(sample)  # the quantizer is trained: only the scalar quantizer's ranges
        for i in range(0, n, 200_000):
            index.add(np.asarray(x[i : i + 200_000]))
        build = train_s + time.perf_counter() - t

        def fsearch(q, nprobe, index=index):
            index.nprobe = nprobe
            return (index.search(q[None, :], 10)[1][0] + 1).tolist()

        for nprobe in sorted({default_nprobe, smallest_095(fsearch) or default_nprobe}):
            index.nprobe = nprobe
            ms = timed(lambda q, ix=index: ix.search(q[None, :], 10), queries)
            rows.append((name, f"nprobe {nprobe}", recall_at(fsearch, nprobe), ms, build, None,
                         None))  # fmt: skip
        del index
    base_db.unlink()
    (workdir / f"x_{n}.npy").unlink()
    rows.append(("(IVF lists, default nprobe)", f"{lists}, {default_nprobe}", None, None, None,
                 None, None))  # fmt: skip
    return rows


def main_scale(
    n: int,
    workdir: Path,
    storages: list[str],
    cache_bytes: int | None = None,
    writes: int = 0,
    with_faiss: bool = True,
) -> None:
    print(f"\nN = {n:,} x {DIM}-d face-like float32, 200 queries, one thread")
    print("| method | setting | recall@10 | ms/query | build s | build peak MiB | file MiB |")
    print("|---|---|---:|---:|---:|---:|---:|", flush=True)

    def emit(row) -> None:
        name, setting, rec, ms, build, peak, size = row
        cells = [
            "" if rec is None else f"{rec:.3f}",
            "" if ms is None else f"{ms:.3f}",
            "" if build is None else f"{build:.1f}",
            "" if peak is None else f"{peak:.0f}",
            "" if size is None else f"{size:.0f}",
        ]
        print(f"| {name} | {setting} | " + " | ".join(cells) + " |", flush=True)

    print(f"load average at the start: {os.getloadavg()}", flush=True)
    written: dict[str, list[tuple]] = {}
    run_scale(
        n,
        workdir,
        storages,
        emit=emit,
        cache_bytes=cache_bytes,
        writes=writes,
        with_faiss=with_faiss,
        writes_out=written,
    )
    for storage, rows in written.items():
        print_writes(storage, n, writes, rows)
    print(f"load average at the end: {os.getloadavg()}", flush=True)


def main_ann(sizes: list[int], workdir: Path, hnsw_max: int, storage: bool = False) -> None:
    for n in sizes:
        rows = run_storage(n, workdir) if storage else run_ann(n, workdir, hnsw=n <= hnsw_max)
        print(f"\nN = {n:,} x {DIM}-d face-like float32, 200 queries (new faces of known people)")
        print("| method | setting | recall@10 | ms/query | build s | size MiB |")
        print("|---|---|---:|---:|---:|---:|")
        for name, setting, rec, ms, build, size in rows:
            cells = [
                "" if rec is None else f"{rec:.3f}",
                "" if ms is None else f"{ms:.3f}",
                "" if build is None else f"{build:.1f}",
                "" if size is None else f"{size:.0f}",
            ]
            print(f"| {name} | {setting} | " + " | ".join(cells) + " |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--sizes", default="10000,100000", help="comma-separated N (default 10k,100k)"
    )
    parser.add_argument("--reps", type=int, default=21, help="queries per method (median)")
    parser.add_argument(
        "--workdir", default=None, help="where the databases go (default: a temp dir)"
    )
    parser.add_argument("--ann", action="store_true", help="the approximate (IVF) table")
    parser.add_argument(
        "--storage", action="store_true", help="with --ann: float32, float16 and int8 storage"
    )
    parser.add_argument(
        "--hnsw-max", type=int, default=1_000_000, help="largest N to build faiss HNSW for"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=None,
        help="IVF at scale: build time, peak memory, file size, recall and ms per query "
        "per storage beside faiss IVFFlat / IVFScalarQuantizer with the same lists",
    )
    parser.add_argument(
        "--storages", default="int8,float16,float32", help="with --n: the storages to build"
    )
    parser.add_argument(
        "--build-only",
        action="store_true",
        help="with --n: only the builds, each in a process of its own (wall, CPU, peak "
        "memory, bytes written) beside faiss train+add",
    )
    parser.add_argument(
        "--cache-mib",
        type=int,
        default=None,
        help="with --n: the chunk cache's budget in MiB (default: the extension's, 1 GiB)",
    )
    parser.add_argument(
        "--writes",
        type=int,
        default=0,
        help="with --n: then insert and delete this many rows on each index (one "
        f"transaction, and {WRITE_SINGLES} more a transaction each), query, sync, recall",
    )
    parser.add_argument(
        "--no-faiss", action="store_true", help="with --n: facevec's indexes only, no faiss"
    )
    args = parser.parse_args()
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="bench_knn_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"databases in {workdir}; extension {loadable()}")
    if args.n and args.build_only:
        main_build_only(args.n, workdir, args.storages.split(","))
        return
    if args.n:
        cache = None if args.cache_mib is None else args.cache_mib << 20
        main_scale(args.n, workdir, args.storages.split(","), cache, args.writes, not args.no_faiss)
        return
    if args.ann:
        main_ann([int(s) for s in args.sizes.split(",")], workdir, args.hnsw_max, args.storage)
        return
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
