"""Relational search speed: the seed's query vs facevec's, on SQLite, PostgreSQL and MariaDB.

Synthetic 128-d gallery (Dlib-like scale) at 1k/10k/20k faces. For each size:
- SQLite: the seed's query verbatim, facevec's relational query, the extension;
- PostgreSQL and MariaDB (when reachable): the seed's query with the derived-table
  aliases these servers require, facevec's relational query, the client strategy.
Every method must give the same answer (same faces, distances within 1e-5) before
its time counts. Times are the best of --repeat runs (the seed's: one run past 5k).

    python benchmarks/bench_relational.py [--sizes 1000,10000,20000] [--repeat 3]
        [--postgres URL] [--mysql URL] [--no-servers]
"""

from __future__ import annotations

import argparse
import functools
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable
from urllib.parse import urlsplit

import numpy as np

from facevec import search
from facevec.storage import schema
from facevec.storage.database import Database, open_database

DIM = 128
THRESHOLD = 10.0  # the seed's "distance_squared < 100": every face qualifies here


def seed_query(target_embedding, aliases: bool = False) -> str:
    """The seed's server-side query (sefiks.com, "Deep Face Recognition with SQL", 2021).

    aliases=True adds the derived-table aliases PostgreSQL (< 16) and MySQL require,
    and nothing else.
    """
    target_statement = ""
    for i, value in enumerate(target_embedding):
        target_statement += "select %d as dimension, %s as value" % (i, str(value))  # noqa: UP031
        if i < len(target_embedding) - 1:
            target_statement += " union all "
    a = (" as joined", " as squared", " as distances") if aliases else ("", "", "")
    return f"""
    select *
    from (
        select img_name, sum(subtract_dims) as distance_squared
        from (
            select img_name, (source - target) * (source - target) as subtract_dims
            from (
                select meta.img_name, emb.value as source, target.value as target
                from face_meta meta left join face_embeddings emb
                on meta.id = emb.face_id
                left join (
                    {target_statement}
                ) target
                on emb.dimension = target.dimension
            ){a[0]}
        ){a[1]}
        group by img_name
    ){a[2]}
    where distance_squared < 100
    order by distance_squared asc
"""


def gallery(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, DIM)) * 0.09).astype(np.float32)


def load(db: Database, vectors: np.ndarray) -> None:
    """Bulk-load a facevec gallery (same rows facevec.add writes, faster)."""
    schema.create_schema(db)
    schema.ensure_collection(db, "Dlib", DIM, None)
    stamp = schema.now()
    meta = [
        (i + 1, f"face{i:06d}.jpg", 0, v.astype("<f4").tobytes(), "Dlib", stamp)
        for i, v in enumerate(vectors)
    ]
    sql = (
        "INSERT INTO face_meta (id, img_name, face_index, embedding, model_name, created_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p}, {p})"
    )
    values = vectors.astype(np.float64)
    for start in range(0, len(meta), 2000):
        db.executemany(sql, meta[start : start + 2000])
        rows = [
            (i + 1, d, float(values[i, d]))
            for i in range(start, min(start + 2000, len(meta)))
            for d in range(DIM)
        ]
        db.executemany(
            "INSERT INTO face_embeddings (face_id, dimension, value) VALUES ({p}, {p}, {p})", rows
        )
        db.commit()
    if db.dialect.name == "postgresql":
        db.execute("ANALYZE face_meta")
        db.execute("ANALYZE face_embeddings")
    elif db.dialect.name == "mysql":
        db.query("ANALYZE TABLE face_meta, face_embeddings")
    db.commit()


Answer = list[tuple[str, float]]


def run_seed(db: Database, query: np.ndarray, aliases: bool) -> Answer:
    cursor = db.conn.cursor()
    cursor.execute(seed_query(query.tolist(), aliases=aliases))
    return [(name, math.sqrt(float(squared))) for name, squared in cursor.fetchall()]


def run_strategy(db: Database, query: np.ndarray, strategy: str) -> Answer:
    hits = search.nearest(db, query, strategy=strategy, threshold=THRESHOLD)
    names = dict(db.query("SELECT id, img_name FROM face_meta"))
    return [(names[face_id], distance) for face_id, distance in hits]


def methods_for(
    db: Database, query: np.ndarray, strategies: tuple[str, ...]
) -> dict[str, Callable[[], Answer]]:
    """The seed's query first (the reference), then facevec's strategies."""
    aliases = db.dialect.name != "sqlite"  # the servers need derived-table aliases
    seed_name = "seed (with aliases)" if aliases else "seed (verbatim)"
    methods = {seed_name: functools.partial(run_seed, db, query, aliases)}
    for strategy in strategies:
        name = "facevec relational" if strategy == "relational" else strategy
        methods[name] = functools.partial(run_strategy, db, query, strategy)
    return methods


def best_time(function: Callable[[], Answer], repeat: int) -> tuple[float, Answer]:
    best, answer = math.inf, []
    for _ in range(repeat):
        started = time.perf_counter()
        answer = function()
        best = min(best, time.perf_counter() - started)
    return best, answer


def same(a: Answer, b: Answer) -> bool:
    if [n for n, _ in a] != [n for n, _ in b]:
        # Equal distances may order differently; compare as name -> distance.
        if dict(a).keys() != dict(b).keys():
            return False
    da, db_ = dict(a), dict(b)
    return all(abs(da[n] - db_[n]) <= 1e-5 for n in da)


def bench(
    db: Database,
    n: int,
    methods: dict[str, Callable[[], Answer]],
    repeat: int,
    rows: list,
    backend: str,
) -> None:
    reference: Answer | None = None
    times: dict[str, float] = {}
    for name, function in methods.items():
        runs = 1 if name.startswith("seed") and n > 5000 else repeat
        seconds, answer = best_time(function, runs)
        if reference is None:
            reference = answer
        elif not same(answer, reference):
            raise SystemExit(
                f"{backend} {name} at {n}: different answer from {next(iter(methods))}"
            )
        times[name] = seconds
    seed = next(iter(times.values()))
    for name, seconds in times.items():
        rows.append((backend, n, name, seconds, seed / seconds))
        print(
            f"{backend:<11} {n:>6}  {name:<22} {seconds * 1000:>10.1f} ms  {seed / seconds:>7.1f}x"
        )


def server_database(url: str, backend: str):
    """(db URL of a fresh schema/database, cleanup) on a server, or None if unreachable."""
    from facevec.errors import FacevecError
    from facevec.storage.database import connect_url

    try:
        admin, _, _ = connect_url(url)
    except FacevecError as err:
        print(f"{backend}: skipped ({err})")
        return None
    name = f"facevec_bench_{uuid.uuid4().hex[:8]}"
    cursor = admin.cursor()
    if backend == "postgresql":
        cursor.execute(f"CREATE SCHEMA {name}")
        admin.commit()
        separator = "&" if urlsplit(url).query else "?"
        db_url = f"{url}{separator}options=-csearch_path%3D{name}"
        drop = f"DROP SCHEMA {name} CASCADE"
    else:
        cursor.execute(f"CREATE DATABASE {name}")
        db_url = urlsplit(url)._replace(path=f"/{name}").geturl()
        drop = f"DROP DATABASE {name}"

    def cleanup() -> None:
        cursor = admin.cursor()
        cursor.execute(drop)
        admin.commit()
        admin.close()

    return db_url, cleanup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,20000")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "FACEVEC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
        ),
    )
    parser.add_argument(
        "--mysql",
        default=os.environ.get("FACEVEC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
    )
    parser.add_argument("--no-servers", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list = []
    print(f"{'backend':<11} {'faces':>6}  {'method':<22} {'time':>13}  {'vs seed':>8}")
    for n in sizes:
        vectors = gallery(n)
        query = vectors[n // 2] + np.float32(0.01)
        with tempfile.TemporaryDirectory() as tmp:
            with open_database(os.path.join(tmp, "bench.db")) as db:
                load(db, vectors)
                methods = methods_for(db, query, ("relational", "extension", "client"))
                bench(db, n, methods, args.repeat, rows, "sqlite")
        if args.no_servers:
            continue
        for backend, url in (("postgresql", args.postgres), ("mysql", args.mysql)):
            made = server_database(url, backend)
            if made is None:
                continue
            db_url, cleanup = made
            try:
                with open_database(db_url) as db:
                    load(db, vectors)
                    methods = methods_for(db, query, ("relational", "client"))
                    bench(db, n, methods, args.repeat, rows, backend)
                    db.commit()
            finally:
                cleanup()
    print("\n| backend | faces | method | time (ms) | speed-up vs seed |\n|---|---:|---|---:|---:|")
    for backend, n, name, seconds, ratio in rows:
        print(f"| {backend} | {n} | {name} | {seconds * 1000:.1f} | {ratio:.1f}x |")


if __name__ == "__main__":
    main()
