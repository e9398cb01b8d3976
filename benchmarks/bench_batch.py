"""Many queries at once: facevec.top_k_batch and k-means, against faiss.

1. Exact top-10 of 1,000 queries over N random 128-d rows: ``top_k_batch``
   (one call), ``top_k`` once per query, and faiss ``IndexFlatL2.search``
   (one call, one thread). Answers are checked first: the batch must equal
   ``top_k`` query by query, ids and float32 bits.
2. k-means into 1,024 lists of face-like data (many identities, a few faces
   each): facevec ``kmeans`` against ``faiss.Kmeans`` (one thread) at equal
   iterations, with the final assignment of every row included in both times;
   quality as inertia (sum of squared distances to the assigned centroid) and
   recall@10 of an IVF built on each result (faiss ``IndexIVFFlat`` over the
   given centroids, so only the centroids differ) at nprobe 1..32.

Times are CPU seconds of this process (one thread everywhere), which load from
other processes disturbs less than wall time; compare ratios within one run.

    python benchmarks/bench_batch.py                        # N = 100k, 1M; k-means
    python benchmarks/bench_batch.py --sizes 100000 --no-kmeans
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

# One core for everyone.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import faiss  # noqa: E402
import numpy as np  # noqa: E402

import facevec  # noqa: E402
from facevec.bindings.kernels import kmeans  # noqa: E402

DIM = 128
K = 10


def cpu_seconds(fn, *args):
    start = time.process_time()
    result = fn(*args)
    return time.process_time() - start, result


# ---------------------------------------------------------------------------
# 1. top-k


def bench_top_k(n: int, n_queries: int, singles: int, reps: int) -> dict[str, float]:
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, DIM), dtype=np.float32)
    queries = rng.standard_normal((n_queries, DIM), dtype=np.float32)
    index = faiss.IndexFlatL2(DIM)
    index.add(x)

    batch_times, batch = [], None
    for _ in range(reps):
        seconds, batch = cpu_seconds(facevec.top_k_batch, queries, x, K)
        batch_times.append(seconds)
    single_times = []
    for i in range(singles):
        seconds, (ids, dists) = cpu_seconds(facevec.top_k, queries[i], x, K)
        single_times.append(seconds)
        if ids.tolist() != batch[0][i].tolist() or dists.tobytes() != batch[1][i].tobytes():
            sys.exit(f"top_k_batch differs from top_k for query {i} at N={n}")
    faiss_times, found = [], None
    for _ in range(reps):
        seconds, (_, found) = cpu_seconds(index.search, queries, K)
        faiss_times.append(seconds)
    agree = np.mean([len(set(a) & set(b)) / K for a, b in zip(batch[0], found, strict=True)])
    per_query = {
        "top_k_batch": statistics.median(batch_times) / n_queries,
        "top_k, one query at a time": statistics.median(single_times),
        "faiss IndexFlatL2, one call": statistics.median(faiss_times) / n_queries,
    }
    print(f"\nN = {n:,} x {DIM}-d, {n_queries:,} queries, k = {K} "
          f"(top_k timed on {singles} of them; faiss ids agree {agree:.4f})")  # fmt: skip
    print(f"{'method':32} {'ms/query':>9} {'ns/pair':>8} {'x top_k':>8}")
    single = per_query["top_k, one query at a time"]
    for name, seconds in per_query.items():
        print(f"{name:32} {seconds * 1e3:9.3f} {seconds / n * 1e9:8.2f} {single / seconds:8.2f}")
    ratio = per_query["top_k_batch"] / per_query["faiss IndexFlatL2, one call"]
    print(f"top_k_batch / faiss: {ratio:.2f}")
    return per_query


# ---------------------------------------------------------------------------
# 2. k-means


def face_like(identities: int, per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit identity vectors with most of their energy in 24 directions (real
    embeddings fill a low-dimensional part of the space), and `per` faces of
    each: identity + noise, same-identity faces ~0.5 apart."""
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((24, DIM))
    ids = rng.standard_normal((identities, 24)) @ basis + 0.3 * rng.standard_normal(
        (identities, DIM)
    )
    ids /= np.linalg.norm(ids, axis=1, keepdims=True)
    faces = np.repeat(ids, per, axis=0)
    faces += rng.standard_normal(faces.shape) * (0.35 / np.sqrt(DIM))
    return faces.astype(np.float32), np.repeat(np.arange(identities), per)


def inertia(x: np.ndarray, centroids: np.ndarray, assignment: np.ndarray) -> float:
    total = 0.0
    for start in range(0, len(x), 65536):
        part = x[start : start + 65536].astype(np.float64)
        total += float(((part - centroids[assignment[start : start + 65536]]) ** 2).sum())
    return total


def ivf_recall(x, centroids, queries, truth, nprobes) -> list[float]:
    quantizer = faiss.IndexFlatL2(DIM)
    quantizer.add(centroids)
    index = faiss.IndexIVFFlat(quantizer, DIM, len(centroids))
    index.is_trained = True
    index.add(x)
    recalls = []
    for nprobe in nprobes:
        index.nprobe = nprobe
        found = index.search(queries, K)[1]
        recalls.append(
            float(np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)]))
        )
    return recalls


def bench_kmeans(identities: int, per: int, lists: int, iterations: list[int]) -> None:
    faces, labels = face_like(identities, per + 1, seed=7)
    held_out = np.arange(len(faces)) % (per + 1) == per  # one face of each identity
    x, queries = faces[~held_out], faces[held_out][:1000]
    truth = facevec.top_k_batch(queries, x, K)[0]
    nprobes = [1, 2, 4, 8, 16, 32]
    print(f"\nk-means: {len(x):,} faces of {identities:,} identities, {DIM}-d, "
          f"{lists:,} lists; recall@{K} of 1,000 new faces of known identities")  # fmt: skip
    head = " ".join(f"{'np=' + str(p):>6}" for p in nprobes)
    print(f"{'method':26} {'iters':>5} {'cpu s':>7} {'inertia':>10} {head}")
    for its in iterations:
        rows = []
        seconds, (centroids, assignment) = cpu_seconds(kmeans, x, lists, "euclidean", its, 1)
        rows.append(("facevec kmeans", seconds, centroids, assignment))

        def faiss_kmeans(its=its):
            km = faiss.Kmeans(DIM, lists, niter=its, seed=1)
            km.train(x)
            return km.centroids, km.index.search(x, 1)[1][:, 0]

        seconds, (centroids, assignment) = cpu_seconds(faiss_kmeans)
        rows.append(("faiss Kmeans + assignment", seconds, centroids, assignment))
        for name, seconds, centroids, assignment in rows:
            recalls = ivf_recall(x, centroids, queries, truth, nprobes)
            cells = " ".join(f"{r:6.3f}" for r in recalls)
            print(f"{name:26} {its:5d} {seconds:7.2f} {inertia(x, centroids, assignment):10.1f}"
                  f" {cells}")  # fmt: skip
        print(f"{'facevec / faiss time':26} {its:5d} {rows[0][1] / rows[1][1]:7.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="100000,1000000", help="comma-separated N")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--singles", type=int, default=50, help="queries timed with top_k")
    parser.add_argument("--reps", type=int, default=3, help="runs of each batch (median)")
    parser.add_argument("--no-kmeans", action="store_true")
    parser.add_argument("--identities", type=int, default=20000)
    parser.add_argument("--faces", type=int, default=5, help="faces per identity")
    parser.add_argument("--lists", type=int, default=1024)
    parser.add_argument("--iterations", default="5,10,25", help="comma-separated")
    args = parser.parse_args()
    faiss.omp_set_num_threads(1)
    print(f"facevec kernels: {facevec.isa()}; faiss {faiss.__version__}, one thread")
    for n in (int(s) for s in args.sizes.split(",") if s):
        bench_top_k(n, args.queries, args.singles, args.reps)
    if not args.no_kmeans:
        its = [int(s) for s in args.iterations.split(",")]
        bench_kmeans(args.identities, args.faces, args.lists, its)


if __name__ == "__main__":
    main()
