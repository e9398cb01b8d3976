"""IVF lists on a server: exact relational, exact client, and probed lists.

Clustered synthetic 128-d faces (tests/ivf_data.py: identities of 5 faces in
groups) bulk-loaded into PostgreSQL (COPY) and MariaDB (LOAD DATA LOCAL INFILE),
then the same faces through `facevec.add` (its bulk path: COPY, multi-row INSERT)
into a second schema/database, the two load times side by side; then
`facevec.train_lists` (sqrt(n) lists, the default nprobe measured) and, per
method, ms/query (median) and recall@10 against the exact top 10 (numpy), with
the speed-up over the fastest exact strategy. On MariaDB the probed lists are
also read from face_meta (each face a primary-key lookup) instead of the
list-clustered facevec_list_vectors. Sizes from --blobs-only-from up keep
face_embeddings empty (blobs only), so exact relational is not run there. Each
run uses a schema/database of its own, dropped afterwards.

    python benchmarks/bench_server_ann.py [--sizes 100000,1000000] [--queries 40]
        [--nprobes 2,4,8,16,32] [--servers postgresql,mysql] [--no-add] [--load-only]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import tempfile
import time
import uuid
from urllib.parse import urlsplit

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))

from ivf_data import exact_top, grouped_faces, queries  # noqa: E402

import facevec  # noqa: E402
from facevec import lists  # noqa: E402
from facevec.search import nearest  # noqa: E402
from facevec.storage import lists as store  # noqa: E402
from facevec.storage import schema  # noqa: E402
from facevec.storage.database import open_database  # noqa: E402

URLS = {
    "postgresql": os.environ.get(
        "FACEVEC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "mysql": os.environ.get("FACEVEC_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test"),
}
K = 10
CHUNK = 20000


def _admin(server: str):
    from facevec.storage.database import connect_url

    conn, _, _ = connect_url(URLS[server])
    if server == "postgresql":
        conn.autocommit = True
    else:
        conn.autocommit(True)
    return conn


def _database_url(server: str, name: str) -> str:
    base = URLS[server]
    if server == "postgresql":
        return f"{base}?options=-csearch_path%3D{name}"
    return urlsplit(base)._replace(path=f"/{name}").geturl()


def _load_postgresql(db, vectors: np.ndarray, rows: bool) -> None:
    cursor = db.conn.cursor()
    stamp = schema.now()
    with cursor.copy(
        "COPY face_meta (id, img_name, face_index, embedding, model_name, created_at) FROM STDIN"
    ) as copy:
        for row, vector in enumerate(vectors):
            copy.write_row((row + 1, f"{row}.jpg", 0, vector.tobytes(), "Dlib", stamp))
    if rows:
        dims = np.arange(vectors.shape[1])
        with cursor.copy("COPY face_embeddings (face_id, dimension, value) FROM STDIN") as copy:
            for start in range(0, len(vectors), CHUNK):
                block = vectors[start : start + CHUNK].astype(np.float64)
                lines = []
                for offset, vector in enumerate(block):
                    face_id = start + offset + 1
                    lines.extend(
                        f"{face_id}\t{d}\t{v!r}\n"
                        for d, v in zip(dims, vector.tolist(), strict=True)
                    )
                copy.write("".join(lines))
    cursor.execute("SELECT setval(pg_get_serial_sequence('face_meta', 'id'), %s)", (len(vectors),))
    db.commit()


def _load_mysql(server_name: str, vectors: np.ndarray, rows: bool) -> None:
    import pymysql

    parts = urlsplit(URLS["mysql"])
    conn = pymysql.connect(
        host=parts.hostname,
        port=parts.port or 3306,
        user=parts.username,
        password=parts.password or "",
        database=server_name,
        local_infile=True,
        autocommit=True,
    )
    stamp = schema.now()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "face_meta.tsv")
        with open(path, "w") as out:
            for row, vector in enumerate(vectors):
                out.write(f"{row + 1}\t{row}.jpg\t0\t{vector.tobytes().hex()}\tDlib\t{stamp}\n")
        cursor = conn.cursor()
        cursor.execute(
            f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE face_meta"
            " (id, img_name, face_index, @hex, model_name, created_at)"
            " SET embedding = UNHEX(@hex)"
        )
        if rows:
            path = os.path.join(tmp, "face_embeddings.tsv")
            dims = np.arange(vectors.shape[1])
            with open(path, "w") as out:
                for start in range(0, len(vectors), CHUNK):
                    block = vectors[start : start + CHUNK].astype(np.float64)
                    for offset, vector in enumerate(block):
                        face_id = start + offset + 1
                        out.write(
                            "".join(
                                f"{face_id}\t{d}\t{v!r}\n"
                                for d, v in zip(dims, vector.tolist(), strict=True)
                            )
                        )
            cursor.execute(
                f"LOAD DATA LOCAL INFILE '{path}' INTO TABLE face_embeddings"
                " (face_id, dimension, value)"
            )
    conn.close()


def _sizes_mb(db) -> dict[str, float]:
    if db.dialect.name == "postgresql":
        sql = "SELECT pg_total_relation_size({p})"
        found = {t: db.scalar(sql, (t,)) for t in ("face_meta", "face_embeddings")}
    else:
        sql = (
            "SELECT data_length + index_length FROM information_schema.tables"
            " WHERE table_schema = DATABASE() AND table_name = {p}"
        )
        found = {t: db.scalar(sql, (t,)) for t in ("face_meta", "face_embeddings")}
    db.commit()
    return {t: round(int(v) / 1e6, 1) for t, v in found.items()}


def _measure(db, qs, truth, strategy, nprobe, limit_seconds=60.0):
    times, found = [], 0
    started = time.perf_counter()
    for q, t in zip(qs, truth, strict=False):
        t0 = time.perf_counter()
        hits = nearest(db, q, strategy=strategy, k=K, nprobe=nprobe)
        times.append(time.perf_counter() - t0)
        found += len({face_id - 1 for face_id, _ in hits} & set(t.tolist()))
        if time.perf_counter() - started > limit_seconds and len(times) >= 2:
            break
    return statistics.median(times) * 1000, found / (K * len(times)), len(times)


def _time_add(server: str, vectors: np.ndarray, blobs_only: bool) -> float:
    """Seconds for facevec.add of every face into a new schema/database."""
    name = f"facevec_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin(server)
    cursor = admin.cursor()
    cursor.execute(f"CREATE SCHEMA {name}" if server == "postgresql" else f"CREATE DATABASE {name}")
    url = _database_url(server, name)
    try:
        with open_database(url) as db:
            schema.create_schema(db)
            schema.ensure_collection(db, "Dlib", vectors.shape[1], None)
            if blobs_only:
                with db.transaction():
                    store.set_embedding_rows(db, False)
        names = [f"{row}.jpg" for row in range(len(vectors))]
        t0 = time.perf_counter()
        facevec.add(url, names, vectors, model_name="Dlib", progress=True)
        return time.perf_counter() - t0
    finally:
        cursor.execute(
            f"DROP SCHEMA IF EXISTS {name} CASCADE"
            if server == "postgresql"
            else f"DROP DATABASE IF EXISTS {name}"
        )
        admin.close()


def run(
    server: str,
    n: int,
    n_queries: int,
    nprobes: list[int],
    blobs_only: bool,
    add: bool = True,
    load_only: bool = False,
) -> None:
    n_lists = int(round(math.sqrt(n)))
    groups = max(16, n_lists // 4)
    vectors, _ = grouped_faces(n, seed=7, groups=groups)
    qs = queries(vectors, n_queries, seed=8)
    truth = [exact_top(vectors, q, K) for q in qs]
    name = f"facevec_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin(server)
    cursor = admin.cursor()
    cursor.execute(f"CREATE SCHEMA {name}" if server == "postgresql" else f"CREATE DATABASE {name}")
    url = _database_url(server, name)
    try:
        with open_database(url) as db:
            schema.create_schema(db)
            schema.ensure_collection(db, "Dlib", vectors.shape[1], None)
            if blobs_only:
                with db.transaction():
                    store.set_embedding_rows(db, False)
            t0 = time.perf_counter()
            if server == "postgresql":
                _load_postgresql(db, vectors, not blobs_only)
            else:
                _load_mysql(name, vectors, not blobs_only)
            load = time.perf_counter() - t0
            store.analyze(db)
            sizes = _sizes_mb(db)
            loaded = "COPY" if server == "postgresql" else "LOAD DATA"
            print(f"\n{server} n={n}: {loaded} {load:.1f} s", flush=True)
            if add:
                seconds = _time_add(server, vectors, blobs_only)
                print(
                    f"{server} n={n}: facevec.add {seconds:.1f} s,"
                    f" {seconds / load:.2f}x the {loaded} load (target <= 2x)",
                    flush=True,
                )
            if load_only:
                return
            t0 = time.perf_counter()
            report = facevec.train_lists(url, n_lists, progress=False)
            train = time.perf_counter() - t0
            default = report["nprobe"]
            sizes_after = _sizes_mb(db)
            layout = "blobs only" if blobs_only else "blobs + rows"
            print(
                f"{server} n={n} ({layout}): reindex --lists {n_lists} {train:.0f} s"
                f" (default nprobe measured: {default}, the old rule"
                f" {lists.default_nprobe(n_lists)}); MB before lists {sizes}, after {sizes_after}",
                flush=True,
            )
            print("| method | nprobe | ms/query | recall@10 | queries | vs exact |", flush=True)
            print("|---|---|---|---|---|---|", flush=True)
            exact_queries = 3 if n >= 500000 else 5
            methods = [("client", n_lists, exact_queries, True)]
            if not blobs_only:
                methods.insert(0, ("relational", n_lists, exact_queries, True))
            probes = sorted({p for p in nprobes if p < n_lists} | {default})
            for strategy in ("client",) if blobs_only else ("relational", "client"):
                methods += [(strategy, p, n_queries, True) for p in probes]
            if server == "mysql":  # the probed faces read from face_meta, key by key
                methods += [("client", p, n_queries, False) for p in probes if p <= 2 * default]
            fastest_exact = None
            for strategy, nprobe, count, clustered in methods:
                original = store.clustered_lists
                if not clustered:
                    store.clustered_lists = lambda db: False
                try:
                    ms, recall, done = _measure(db, qs[:count], truth[:count], strategy, nprobe)
                finally:
                    store.clustered_lists = original
                label = "exact" if nprobe >= n_lists else str(nprobe)
                if nprobe >= n_lists:
                    fastest_exact = ms if fastest_exact is None else min(fastest_exact, ms)
                    ratio = ""
                else:
                    ratio = f"{fastest_exact / ms:.1f}x"
                note = " (default)" if nprobe == default else ""
                if not clustered:
                    note += ", face_meta"
                print(
                    f"| {strategy} | {label}{note} | {ms:.1f} | {recall:.3f} | {done} | {ratio} |",
                    flush=True,
                )
    finally:
        cursor.execute(
            f"DROP SCHEMA IF EXISTS {name} CASCADE"
            if server == "postgresql"
            else f"DROP DATABASE IF EXISTS {name}"
        )
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000")
    parser.add_argument("--queries", type=int, default=40)
    parser.add_argument("--nprobes", default="2,4,8,16,32")
    parser.add_argument("--servers", default="postgresql,mysql")
    parser.add_argument("--blobs-only-from", type=int, default=1000000)
    parser.add_argument("--no-add", action="store_true", help="skip timing facevec.add")
    parser.add_argument("--load-only", action="store_true", help="time the loads, no lists")
    args = parser.parse_args()
    nprobes = [int(p) for p in args.nprobes.split(",")]
    for n in (int(s) for s in args.sizes.split(",")):
        for server in args.servers.split(","):
            run(
                server,
                n,
                args.queries,
                nprobes,
                n >= args.blobs_only_from,
                not args.no_add,
                args.load_only,
            )


if __name__ == "__main__":
    main()
