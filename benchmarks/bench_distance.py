"""Median milliseconds per nearest-neighbour query, side by side in one process.

In SQLite, on the same file, through pysqlite3 (so both extensions load natively):

    SELECT rowid FROM t ORDER BY <fn>(embedding, ?) LIMIT 10

with <fn> = facevec's euclidean_distance, sqlite-vec's vec_distance_l2, and the
floor ORDER BY length(embedding) (the same scan and sort, no arithmetic).
On the client, over the same matrix in memory: facevec.top_k, faiss
IndexFlatL2 (one thread, one query) and numpy (argpartition on squared
distances).

    python benchmarks/bench_distance.py --sizes 10k,100k,1M

Generated databases are cached in benchmarks/data/ (gitignored).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

# pysqlite3 loads extensions (sqlite-vec's too): made this process's sqlite3 before
# facevec is imported, so facevec runs on it as well (one SQLite per process).
from pysqlite3 import dbapi2 as _pysqlite3

sys.modules["sqlite3"] = _pysqlite3
import facevec  # noqa: E402

DATA = Path(__file__).resolve().parent / "data"
SEED = 20240601
CHUNK = 50_000


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def matrix_chunks(n: int, dim: int):
    """The benchmark's embeddings, chunk by chunk, the same every time."""
    rng = np.random.default_rng(SEED)
    for start in range(0, n, CHUNK):
        rows = min(CHUNK, n - start)
        yield start, rng.standard_normal((rows, dim), dtype=np.float32)


def load_matrix(n: int, dim: int) -> np.ndarray:
    return np.concatenate([chunk for _, chunk in matrix_chunks(n, dim)])


def dbapi2() -> Any:
    from pysqlite3 import dbapi2 as sqlite

    return sqlite


def database(n: int, dim: int) -> Path:
    """benchmarks/data/faces-<n>x<dim>.db, generated on first use."""
    path = DATA / f"faces-{n}x{dim}.db"
    if path.exists():
        return path
    DATA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    conn = dbapi2().connect(str(partial))
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("CREATE TABLE t (rowid INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
    for start, chunk in matrix_chunks(n, dim):
        conn.executemany(
            "INSERT INTO t VALUES (?, ?)",
            ((start + i + 1, row.tobytes()) for i, row in enumerate(chunk)),
        )
    conn.commit()
    conn.close()
    partial.rename(path)
    print(f"  generated {path.name} in {time.perf_counter() - started:.1f} s")
    return path


def time_ms(
    methods: dict[str, Callable[[np.ndarray], Any]], queries: np.ndarray
) -> tuple[dict[str, list[float]], dict[str, list[Any]]]:
    """ms per query of each method. Methods take turns on each query, so a
    busy machine slows them alike rather than whichever ran then."""
    for run in methods.values():
        run(queries[0])  # warm the page cache and any lazy initialisation
    times: dict[str, list[float]] = {name: [] for name in methods}
    answers: dict[str, list[Any]] = {name: [] for name in methods}
    names = list(methods)
    for i, q in enumerate(queries):
        for name in names[i % len(names) :] + names[: i % len(names)]:
            started = time.perf_counter()
            answers[name].append(methods[name](q))
            times[name].append((time.perf_counter() - started) * 1000)
    return times, answers


def sql_methods(conn: Any, conn_b: Any = None) -> dict[str, Callable[[np.ndarray], list[int]]]:
    def query(
        sql: str, with_param: bool = True, on: Any = conn
    ) -> Callable[[np.ndarray], list[int]]:
        def run(q: np.ndarray) -> list[int]:
            params = (q.tobytes(),) if with_param else ()
            return [row[0] for row in on.execute(sql, params)]

        return run

    base = "SELECT rowid FROM t ORDER BY {} LIMIT 10"
    methods = {
        "facevec euclidean_distance": query(base.format("euclidean_distance(embedding, ?)")),
        "sqlite-vec vec_distance_l2": query(base.format("vec_distance_l2(embedding, ?)")),
        "floor length(embedding)": query(base.format("length(embedding)"), with_param=False),
    }
    if conn_b is not None:
        methods["facevec B euclidean_distance"] = query(
            base.format("euclidean_distance(embedding, ?)"), on=conn_b
        )
    return methods


def client_methods(matrix: np.ndarray) -> dict[str, Callable[[np.ndarray], list[int]]]:
    import faiss

    faiss.omp_set_num_threads(1)
    index = faiss.IndexFlatL2(matrix.shape[1])
    index.add(matrix)

    def facevec_top_k(q: np.ndarray) -> list[int]:
        return (facevec.top_k(q, matrix, 10)[0] + 1).tolist()

    def faiss_flat(q: np.ndarray) -> list[int]:
        return (index.search(q[None, :], 10)[1][0] + 1).tolist()

    def numpy_argpartition(q: np.ndarray) -> list[int]:
        diff = matrix - q
        squared = np.einsum("ij,ij->i", diff, diff)
        top = np.argpartition(squared, 10)[:10]
        return (top[np.argsort(squared[top], kind="stable")] + 1).tolist()

    return {
        "facevec.top_k": facevec_top_k,
        "faiss IndexFlatL2 (1 thread)": faiss_flat,
        "numpy argpartition": numpy_argpartition,
    }


def same_neighbours(reference: list[list[int]], other: list[list[int]]) -> bool:
    return all(set(a) == set(b) for a, b in zip(reference, other, strict=True))


def open_with(path: Path, *extensions: str) -> Any:
    conn = dbapi2().connect(str(path))
    conn.enable_load_extension(True)
    for extension in extensions:
        conn.load_extension(extension)
    conn.enable_load_extension(False)
    return conn


def bench_size(
    n: int, dim: int, repeats: int, extension: str, extension_b: str | None
) -> dict[str, list[float]]:
    import sqlite_vec

    print(f"\nN = {n:,} rows of {dim}-d float32")
    path = database(n, dim)
    conn = open_with(path, extension, sqlite_vec.loadable_path())
    conn_b = open_with(path, extension_b) if extension_b else None

    queries = np.random.default_rng(SEED + 1).standard_normal((repeats, dim), dtype=np.float32)
    timings, answers = time_ms(sql_methods(conn, conn_b), queries)
    conn.close()
    matrix = load_matrix(n, dim)
    client_timings, client_answers = time_ms(client_methods(matrix), queries)
    timings.update(client_timings)
    answers.update(client_answers)
    for name, ms in timings.items():
        print(f"  {name:32s} median {statistics.median(ms):9.3f} ms   min {min(ms):9.3f} ms")
    reference = answers["numpy argpartition"]
    for name in answers:
        if name != "floor length(embedding)" and not same_neighbours(reference, answers[name]):
            print(f"  WARNING: {name} disagrees with numpy on the 10 nearest rows")
    return timings


def ratios(t: dict[str, float]) -> dict[str, float]:
    extra = {}
    if "facevec B euclidean_distance" in t:
        extra["facevec B / floor"] = (
            t["facevec B euclidean_distance"] / t["floor length(embedding)"]
        )
        extra["facevec B / facevec"] = (
            t["facevec B euclidean_distance"] / t["facevec euclidean_distance"]
        )
    return extra | {
        "facevec / floor": t["facevec euclidean_distance"] / t["floor length(embedding)"],
        "facevec / sqlite-vec": t["facevec euclidean_distance"] / t["sqlite-vec vec_distance_l2"],
        "top_k / faiss": t["facevec.top_k"] / t["faiss IndexFlatL2 (1 thread)"],
        "top_k / numpy": t["facevec.top_k"] / t["numpy argpartition"],
    }


TARGETS = {"facevec / floor": 1.15, "facevec / sqlite-vec": 0.5, "top_k / faiss": 1.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10k,100k,1M", help="row counts, e.g. 10k,100k,1M")
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument(
        "--repeats",
        type=int,
        default=0,
        help="queries per method (default: 21, 11 from 100k rows, 7 from 1M)",
    )
    parser.add_argument(
        "--extension",
        default=None,
        help="facevec loadable extension to time (default: the installed one), "
        "e.g. a patched build",
    )
    parser.add_argument(
        "--extension-b",
        default=None,
        help="a second facevec build, timed in turn with the first (A/B)",
    )
    args = parser.parse_args()
    extension = args.extension or facevec.loadable_path()

    sqlite = dbapi2()
    print(
        f"facevec {facevec.__version__} ({facevec.isa()}), SQLite {sqlite.sqlite_version}, "
        f"numpy {np.__version__}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    results = {}
    for n in map(parse_size, args.sizes.split(",")):
        repeats = args.repeats or (21 if n < 100_000 else 11 if n < 1_000_000 else 7)
        results[n] = bench_size(n, args.dim, repeats, extension, args.extension_b)

    medians = {n: {m: statistics.median(t) for m, t in r.items()} for n, r in results.items()}
    fastest = {n: {m: min(t) for m, t in r.items()} for n, r in results.items()}
    print(f"\nmedian ms per query (10 nearest of N, {args.dim}-d)\n")
    print("| method | " + " | ".join(f"N = {n:,}" for n in results) + " |")
    print("|---|" + "---:|" * len(results))
    for name in next(iter(medians.values())):
        print(f"| {name} | " + " | ".join(f"{t[name]:.3g}" for t in medians.values()) + " |")
    for label, table in (("median", medians), ("min", fastest)):
        for name in ratios(next(iter(table.values()))):
            target = f", target <= {TARGETS[name]}" if name in TARGETS else ""
            print(
                f"| **{name}** ({label}{target}) | "
                + " | ".join(f"{ratios(t)[name]:.2f}" for t in table.values())
                + " |"
            )


if __name__ == "__main__":
    main()
