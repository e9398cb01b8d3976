"""The search plan: a search without --strategy against each strategy named.

Clustered synthetic 128-d faces (tests/ivf_data.py) in SQLite galleries as
``facevec.add`` leaves them (its knn index: exact below 100,000 faces, IVF from
there) and, on PostgreSQL and MariaDB, bulk-loaded galleries without and with IVF
lists. For 1 query and for a batch of queries (``search.nearest_batch``, what
``find`` over a folder runs), as ``find`` searches by default (Dlib's threshold
0.6, no k): wall ms for the single query (median of 15) and seconds for the batch.
A strategy whose batch would take more than --budget seconds is timed on a sample
of the batch and scaled (marked ~). Answers are checked first: the automatic plan's
equal the named strategy's, and every exact strategy's equal each other.

    python benchmarks/bench_plan.py                                  # SQLite 1k..300k
    python benchmarks/bench_plan.py --sizes 1000,10000 --servers postgresql,mysql \
        --server-sizes 10000,100000
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
sys.path.insert(0, os.path.dirname(__file__))

from ivf_data import grouped_faces, queries  # noqa: E402

import facevec  # noqa: E402
from facevec import knn, plan, search  # noqa: E402
from facevec.storage import lists as store  # noqa: E402
from facevec.storage import schema  # noqa: E402
from facevec.storage.database import open_database  # noqa: E402

THRESHOLD = 0.6  # Dlib's, euclidean: what find uses unless told
SINGLES = 15
K: int | None = None  # find's default: every face within the threshold


def _load_sqlite(path: str, vectors: np.ndarray) -> None:
    """Blobs only (face_embeddings empty), then the knn index as an ingest keeps it."""
    with open_database(path) as db:
        schema.create_schema(db)
        schema.ensure_collection(db, "Dlib", vectors.shape[1], None)
        with db.transaction():
            store.set_embedding_rows(db, False)
        stamp = schema.now()
        with db.transaction():
            db.conn.executemany(
                "INSERT INTO face_meta (id, img_name, face_index, embedding, model_name, "
                "created_at) VALUES (?, ?, 0, ?, 'Dlib', ?)",
                ((row + 1, f"{row}.jpg", v.tobytes(), stamp) for row, v in enumerate(vectors)),
            )
        knn.refresh_gallery_index(db)


def _single_ms(db, probes, strategy) -> float:
    search.nearest_batch(db, probes[-1:], strategy=strategy, threshold=THRESHOLD, k=K)  # warm
    times = []
    for q in probes[:SINGLES]:
        t0 = time.perf_counter()
        search.nearest_batch(db, q[None, :], strategy=strategy, threshold=THRESHOLD, k=K)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1000


def _batch(db, probes, strategy, single_ms: float, budget: float):
    """(seconds for the whole batch, answers or None, estimated?)."""
    guess = single_ms / 1000 * len(probes)
    batched = strategy is None or strategy in ("knn", "client")
    if batched or guess <= budget:
        t0 = time.perf_counter()
        found = search.nearest_batch(db, probes, strategy=strategy, threshold=THRESHOLD, k=K)
        return time.perf_counter() - t0, [list(h) for h in found], False
    sample = max(2, int(len(probes) * budget / guess / 2))
    t0 = time.perf_counter()
    found = search.nearest_batch(db, probes[:sample], strategy=strategy, threshold=THRESHOLD, k=K)
    seconds = (time.perf_counter() - t0) * len(probes) / sample
    return seconds, [list(h) for h in found], True


def _row(label, n, rows, chosen, n_queries):
    single = " | ".join(f"{rows[s][0]:.3g}" if s in rows else "" for s in COLUMNS)
    many = " | ".join(
        (("~" if rows[s][2] else "") + f"{rows[s][1]:.3g}") if s in rows else "" for s in COLUMNS
    )
    print(f"| {n:,} | {label} | 1 | {chosen[0]} | {single} |", flush=True)
    print(f"| {n:,} | {label} | {n_queries:,} | {chosen[1]} | {many} |", flush=True)


COLUMNS = ("auto", "extension", "knn exact", "knn IVF", "relational", "client")


def _measure(db, probes, strategies, budget):
    rows, answers = {}, {}
    for label, strategy in strategies:
        ms = _single_ms(db, probes, strategy)
        seconds, found, estimated = _batch(db, probes, strategy, ms, budget)
        rows[label] = (ms, seconds, estimated)
        answers[label] = found
    return rows, answers


def _check(answers, chosen_strategy, exact_labels):
    """The plan's answers are those of the strategy it names; the exact ones agree
    (compared over the queries both ran: a sampled batch ran its first queries)."""
    auto = answers["auto"]
    named = answers[chosen_strategy]
    assert named[: len(auto)] == auto[: len(named)] or chosen_strategy == "auto", chosen_strategy
    exact = [answers[s] for s in exact_labels if s in answers]
    for other in exact[1:]:
        for mine, theirs in zip(other, exact[0], strict=False):
            _agree(dict(mine), dict(theirs))


def _agree(mine: dict, theirs: dict) -> None:
    """The same faces at the same distances, to 1e-5 (float32 on the client, double
    in SQL): a face only one has lies at the threshold or the k-th distance."""
    for face in mine.keys() & theirs.keys():
        assert abs(mine[face] - theirs[face]) < 1e-5, "exact strategies differ"
    edge = max([*mine.values(), *theirs.values()], default=0.0)
    for face in mine.keys() ^ theirs.keys():
        distance = mine.get(face, theirs.get(face))
        assert abs(distance - edge) < 1e-5 or abs(distance - THRESHOLD) < 1e-5, face


def run_sqlite(n: int, n_queries: int, budget: float, workdir: str) -> None:
    vectors, _ = grouped_faces(n, seed=7, groups=max(16, int(math.sqrt(n)) // 4))
    probes = queries(vectors, n_queries, seed=8)
    path = os.path.join(workdir, f"plan-{n}.db")
    t0 = time.perf_counter()
    _load_sqlite(path, vectors)
    load = time.perf_counter() - t0
    with open_database(path) as db:
        lists = knn.status(db.conn)["lists"]
        kept = "knn IVF" if lists else "knn exact"
        chosen = (plan.plan_for(db, 1).strategy, plan.plan_for(db, n_queries).strategy)
        strategies = [("auto", None), ("extension", "extension"), (kept, "knn")]
        rows, answers = _measure(db, probes, strategies + [("client", "client")], budget)
    # The other kind of knn index, on a copy.
    other = path + ".other"
    shutil.copy(path, other)
    built = "knn exact" if lists else "knn IVF"
    with open_database(other) as db:
        t0 = time.perf_counter()
        knn.build(db.conn, lists=0 if lists else max(1, round(math.sqrt(n))))
        build = time.perf_counter() - t0
        more, more_answers = _measure(db, probes, [(built, "knn")], budget)
    os.remove(other)
    os.remove(path)
    rows.update(more)
    answers.update(more_answers)
    named = {"knn": kept}.get(chosen[1], chosen[1])
    _check(answers, named, ["extension", "client", "knn exact"])
    print(
        f"<!-- SQLite n={n:,}: load and {kept} index {load:.1f} s; {built} built in "
        f"{build:.1f} s; IVF recall {_recall(answers):.3f} -->",
        flush=True,
    )
    _row(f"SQLite, {kept.split()[1]} index", n, rows, chosen, n_queries)


def _recall(answers) -> float:
    """The IVF index's answers against the exact ones (the same threshold)."""
    ivf, exact = answers["knn IVF"], answers["extension"]
    m = min(len(ivf), len(exact))
    truth = sum(len(exact[i]) for i in range(m))
    hit = sum(len({f for f, _ in ivf[i]} & {f for f, _ in exact[i]}) for i in range(m))
    return hit / max(truth, 1)


def run_server(server: str, n: int, n_queries: int, budget: float, lists: bool) -> None:
    from bench_server_ann import _admin, _database_url, _load_mysql, _load_postgresql

    vectors, _ = grouped_faces(n, seed=7, groups=max(16, int(math.sqrt(n)) // 4))
    probes = queries(vectors, n_queries, seed=8)
    name = f"facevec_bench_{uuid.uuid4().hex[:10]}"
    admin = _admin(server)
    cursor = admin.cursor()
    cursor.execute(f"CREATE SCHEMA {name}" if server == "postgresql" else f"CREATE DATABASE {name}")
    url = _database_url(server, name)
    rows_kept = n <= 20_000
    try:
        with open_database(url) as db:
            schema.create_schema(db)
            schema.ensure_collection(db, "Dlib", vectors.shape[1], None)
            if not rows_kept:
                with db.transaction():
                    store.set_embedding_rows(db, False)
            if server == "postgresql":
                _load_postgresql(db, vectors, rows_kept)
            else:
                _load_mysql(name, vectors, rows_kept)
            store.analyze(db)
            strategies = [("auto", None), ("client", "client")]
            if rows_kept:
                strategies.append(("relational", "relational"))
            chosen = (plan.plan_for(db, 1).strategy, plan.plan_for(db, n_queries).strategy)
            rows, answers = _measure(db, probes, strategies, budget)
            _check(answers, chosen[1], ["client", "relational"])
            _row(f"{server}, no lists", n, rows, chosen, n_queries)
            if lists:
                facevec.train_lists(url, max(1, round(math.sqrt(n))), progress=False)
                chosen = (plan.plan_for(db, 1).strategy, plan.plan_for(db, n_queries).strategy)
                rows, answers = _measure(db, probes, strategies, budget)
                _check(answers, chosen[1], [])
                _row(f"{server}, IVF lists", n, rows, chosen, n_queries)
    finally:
        cursor.execute(
            f"DROP SCHEMA {name} CASCADE" if server == "postgresql" else f"DROP DATABASE {name}"
        )
        admin.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,100000,300000")
    parser.add_argument("--servers", default="")
    parser.add_argument("--server-sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--budget", type=float, default=30.0)
    parser.add_argument("--no-lists", action="store_true")
    parser.add_argument("--k", type=int, default=None, help="k of every search [find's: none]")
    args = parser.parse_args()
    global K
    K = args.k
    print(f"<!-- k = {K}, threshold {THRESHOLD} -->")
    print(
        "| faces | gallery | queries | plan | "
        + " | ".join(COLUMNS)
        + " |\n|---:|---|---:|---|"
        + "---:|" * len(COLUMNS)
    )
    print("<!-- 1 query: ms; a batch: seconds; ~ scaled from a sample -->")
    with tempfile.TemporaryDirectory() as workdir:
        for n in [int(s) for s in args.sizes.split(",") if s]:
            run_sqlite(n, args.queries, args.budget, workdir)
    for server in [s for s in args.servers.split(",") if s]:
        for n in [int(s) for s in args.server_sizes.split(",") if s]:
            run_server(server, n, args.queries, args.budget, not args.no_lists)


if __name__ == "__main__":
    main()
