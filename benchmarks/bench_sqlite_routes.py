"""facevec's SQL functions on each route to the process's one SQLite, side by side.

facevec never brings a SQLite of its own (facevec/bindings/extension.py): it runs
on the interpreter's ``sqlite3``. This times, on the same files, in fresh
interpreters that take turns (one SQLite per process), CPU ms per query of

- ``ORDER BY euclidean_distance(embedding, ?) LIMIT 10`` (the extension strategy),
- ``facevec_knn('face_meta', ?, 10)`` with ``mmap_size`` (the knn strategy),

on each route:

- ``load_extension``: pysqlite3-binary (its own SQLite 3.51) made the process's
  ``sqlite3``, the C library loaded per connection: what an interpreter whose
  ``sqlite3`` loads extensions runs, and the speed facevec had on this machine when it
  opened pysqlite3 itself;
- ``auto_extension``: this interpreter's ``sqlite3`` (the system's SQLite), facevec
  registered on its library;
- ``fallback``: the Python registration (the scan only; the knn index needs C).

    python benchmarks/bench_sqlite_routes.py --sizes 100k,1M --rounds 3

Databases are cached in benchmarks/data/ (gitignored).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"
DIM = 128
ROUTES = ("load_extension", "auto_extension", "fallback")
PRELUDES = {
    "load_extension": "import sys, pysqlite3.dbapi2; sys.modules['sqlite3'] = pysqlite3.dbapi2",
    "auto_extension": "",
    "fallback": "import sqlite3, sys, types; sys.modules['_sqlite3'] = types.ModuleType('_x')",
}
WORKER = """
import json, statistics, sys, time, warnings
import numpy as np
import facevec
from facevec.bindings import extension
warnings.simplefilter("ignore")
db, reps, knn = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
conn = facevec.connect(db)
conn.execute("PRAGMA mmap_size = 17179869184")
queries = np.random.default_rng(7).standard_normal((reps + 1, 128), dtype=np.float32)
statements = {"scan": "SELECT id FROM face_meta ORDER BY euclidean_distance(embedding, ?) LIMIT 10"}
if knn:
    statements["knn"] = "SELECT rowid FROM facevec_knn('face_meta', ?, 10)"
found = {}
for name, sql in statements.items():
    conn.execute(sql, (queries[0].tobytes(),)).fetchall()  # warm the page cache
    times, answers = [], []
    for q in queries[1:]:
        started = time.process_time()
        answers.append(sorted(row[0] for row in conn.execute(sql, (q.tobytes(),))))
        times.append((time.process_time() - started) * 1000)
    found[name] = {"ms": statistics.median(times), "answers": answers}
# "Is the C library on this connection?", asked before every knn search: once a
# catalog scan (what facevec asked until it kept the answer on the connection).
scan = "SELECT 1 FROM pragma_function_list WHERE name = 'facevec_knn_sync'"
asked = {}
for name, ask in (("scan", lambda: conn.execute(scan).fetchone()),
                  ("kept", lambda: extension.is_native(conn))):
    started = time.process_time()
    for _ in range(2000):
        ask()
    asked[name] = (time.process_time() - started) / 2000 * 1e6
import sqlite3
print(json.dumps({"route": extension.route(), "sqlite": sqlite3.sqlite_version,
                  "is_native_us": asked, **found}))
"""


def parse_size(text: str) -> int:
    text = text.strip().lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1:], 1)
    return int(float(text.rstrip("km")) * scale)


def database(n: int) -> Path:
    """benchmarks/data/routes-<n>.db: a face_meta of n random vectors and its knn index."""
    path = DATA / f"routes-{n}.db"
    if path.exists():
        return path
    import numpy as np

    import facevec

    DATA.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    conn = facevec.connect(partial, isolation_level=None)
    conn.execute("CREATE TABLE face_meta (id INTEGER PRIMARY KEY, embedding BLOB NOT NULL)")
    rng = np.random.default_rng(n)
    conn.execute("BEGIN")
    for start in range(0, n, 50_000):
        chunk = rng.standard_normal((min(50_000, n - start), DIM), dtype=np.float32)
        conn.executemany(
            "INSERT INTO face_meta VALUES (?, ?)",
            ((start + i + 1, row.tobytes()) for i, row in enumerate(chunk)),
        )
    conn.execute("COMMIT")
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding')")
    conn.close()
    partial.rename(path)
    return path


def run_worker(route: str, db: Path, reps: int) -> dict:
    code = PRELUDES[route] + "\n" + WORKER
    knn = "0" if route == "fallback" else "1"
    out = subprocess.run(
        [sys.executable, "-c", code, str(db), str(reps), knn],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100k,1M")
    parser.add_argument("--rounds", type=int, default=3, help="turns of every route")
    parser.add_argument("--reps", type=int, default=15, help="queries per turn (median)")
    parser.add_argument(
        "--fallback-max", type=int, default=100_000, help="largest N the fallback scans"
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f}; CPU ms per query, median of turns")
    for n in map(parse_size, args.sizes.split(",")):
        db = database(n)
        routes = [r for r in ROUTES if r != "fallback" or n <= args.fallback_max]
        medians: dict[str, dict[str, list[float]]] = {r: {"scan": [], "knn": []} for r in routes}
        versions, reference, asked = {}, None, {}
        for turn in range(args.rounds):
            for route in routes[turn % len(routes) :] + routes[: turn % len(routes)]:
                started = time.perf_counter()
                result = run_worker(route, db, args.reps)
                assert result["route"] == route, result["route"]
                versions[route] = result["sqlite"]
                for name in ("scan", "knn"):
                    if name in result:
                        medians[route][name].append(result[name]["ms"])
                        if reference is None:
                            reference = result[name]["answers"]
                        assert result[name]["answers"] == reference, (route, name)
                asked.setdefault(route, []).append(result["is_native_us"])
                print(f"  N={n:,} turn {turn + 1} {route}: {time.perf_counter() - started:.1f} s")
        print(f"\nN = {n:,} x {DIM}-d")
        header = ("route", "SQLite", "scan ms", "knn ms", "scan/le", "knn/le")
        print("{:16s} {:8s} {:>9s} {:>9s} {:>8s} {:>7s}".format(*header))
        base = {
            name: statistics.median(medians["load_extension"][name]) for name in ("scan", "knn")
        }
        for route in routes:
            row = {
                name: statistics.median(values) if values else float("nan")
                for name, values in medians[route].items()
            }
            print(
                f"{route:16s} {versions[route]:8s} {row['scan']:9.2f} {row['knn']:9.2f} "
                f"{row['scan'] / base['scan']:8.2f} {row['knn'] / base['knn']:7.2f}"
            )
        for route, turns in asked.items():
            scan = statistics.median(t["scan"] for t in turns)
            kept = statistics.median(t["kept"] for t in turns)
            print(
                f"is the C library on the connection ({route}): catalog scan {scan:.1f} us, "
                f"kept on the connection {kept:.2f} us"
            )


if __name__ == "__main__":
    main()
