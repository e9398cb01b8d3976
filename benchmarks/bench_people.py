"""Clustering faces into people: facevec against two anchors, on the same embeddings.

Contenders, each given the same 128-d vectors:

- facevec: ``facevec.people`` — exact k-nearest-neighbour graph from facevec's C
  kernels, then constrained average linkage (its defaults for Dlib / euclidean);
- DBSCAN as Immich runs it: cosine distance, eps 0.5, min 3 faces (scikit-learn);
  also with eps tuned on the labels (the best DBSCAN can do here, an upper bound);
- dlib's ``chinese_whispers_clustering`` with threshold 0.5 (dlib's own example).

Data:

- real: the shared test photos (Dlib model, dlib detector), scored on the labelled
  photos of tests/photo_set.csv; the gallery is indexed once into benchmarks/data/;
- synthetic: face-like clustered vectors (many identities, several faces each,
  some look-alikes, strangers seen once) whose genuine/impostor distances match
  Dlib's (genuine ~0.42 ± 0.065, impostor ~0.78 ± 0.07; ~0.5 % of genuine pairs
  above 0.6 and ~0.2 % of impostor pairs below it).

Scores: pairwise precision / recall / F1 (over pairs of faces put together),
BCubed F1, and the number of people found (clusters of 2 or more faces) against
the true number (identities with 2 or more faces); faces left unassigned count as
singletons. Times: wall clock of each method; for facevec, also the whole
``facevec people cluster`` path on a SQLite gallery (load, graph, linkage, write).

The people step of an index run (``--step``): a SQLite gallery of 100,000 synthetic
faces with their people (their identities), then 1,000 new faces (of known people and new
ones) stored by ``facevec.add``, whose step recognises, groups or leaves them alone;
timed beside the add itself (store, knn index) and the index time of 1,000 photos
(embedding at the rate bench_ingest measures).

Usage:

    python benchmarks/bench_people.py                      # quality + 10k/100k timing
    python benchmarks/bench_people.py --sizes 10000        # quicker
    python benchmarks/bench_people.py --quality-only
    python benchmarks/bench_people.py --step 100000,1000   # the people step of a run
    python benchmarks/bench_people.py --step 0,100000      # ... of a first load
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
FACES = Path(os.environ.get("FACEVEC_FACES") or HERE.parents[1] / "shared" / "faces")
DIM = 128


# Data ---------------------------------------------------------------------------


def synthetic_faces(
    n_faces: int,
    seed: int = 0,
    mean_faces: float = 6.0,
    stranger_share: float = 0.15,
    look_alike_share: float = 0.05,
) -> tuple[np.ndarray, np.ndarray]:
    """(vectors, identity labels): Dlib-like face embeddings.

    Identity centres share a common component (Dlib descriptors have norm ~1.5
    while faces sit ~0.8 apart) and spread over a power-law spectrum, as learned
    embeddings do; each face adds noise whose scale varies per identity and per
    face (pose, light, blur). A share of identities are look-alikes placed near
    another one (relatives); a share are strangers seen once. Faces per identity
    follow a geometric law with the given mean.
    """
    rng = np.random.default_rng(seed)
    spectrum = np.arange(1, DIM + 1) ** -0.3
    spectrum *= np.sqrt(DIM / (spectrum**2).sum())
    basis = np.linalg.qr(rng.standard_normal((DIM, DIM)))[0]
    common = rng.standard_normal(DIM)
    common *= 1.45 / np.linalg.norm(common)
    sigma_identity, sigma_face = 0.0415, 0.0262
    sizes: list[int] = []
    total = 0
    while total < n_faces:
        size = 1 if rng.random() < stranger_share else 1 + int(rng.geometric(1 / (mean_faces - 1)))
        size = min(size, n_faces - total)
        sizes.append(size)
        total += size
    n_ids = len(sizes)
    centres = (rng.standard_normal((n_ids, DIM)) * spectrum) @ basis.T * sigma_identity + common
    look_alike = rng.random(n_ids) < look_alike_share
    partner = rng.integers(0, n_ids, n_ids)
    centres[look_alike] = 0.7 * centres[look_alike] + 0.3 * centres[partner[look_alike]]
    labels = np.repeat(np.arange(n_ids), sizes)
    identity_scale = rng.lognormal(0.0, 0.1, n_ids)
    face_scale = rng.lognormal(0.0, 0.15, n_faces) * identity_scale[labels]
    vectors = (
        centres[labels] + rng.standard_normal((n_faces, DIM)) * sigma_face * face_scale[:, None]
    )
    order = rng.permutation(n_faces)
    return vectors[order].astype(np.float32), labels[order]


def real_faces(db_path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(vectors, photo ids, labels or -1, labelled mask) of the shared test photos."""
    import facevec
    from facevec.storage.database import open_database
    from facevec.storage.people import load_faces

    if not db_path.exists():
        DATA.mkdir(exist_ok=True)
        print(f"indexing {FACES} into {db_path} (once, a few minutes) ...", flush=True)
        facevec.index(FACES, db_path, progress=False)
    with open(HERE.parent / "tests" / "photo_set.csv", newline="") as handle:  # the identities
        labels = {row["file"]: row["identity"] for row in csv.DictReader(handle) if row["identity"]}
    with open_database(db_path, create=False) as db:
        faces = load_faces(db)
    names = [Path(name).name for name in faces.img_names]
    photo = np.unique(faces.img_names, return_inverse=True)[1]
    identities = sorted(set(labels.values()))
    y = np.array([identities.index(labels[n]) if n in labels else -1 for n in names])
    return faces.vectors, photo, y, y >= 0


# Scores -------------------------------------------------------------------------


def _as_clusters(predicted: np.ndarray) -> np.ndarray:
    """Labels with every unassigned face (-1) made a singleton of its own."""
    predicted = np.asarray(predicted).copy()
    noise = predicted < 0
    predicted[noise] = predicted.max(initial=0) + 1 + np.arange(noise.sum())
    return predicted


def scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    predicted = _as_clusters(predicted)
    truth = np.asarray(truth)

    def pairs(counts: Counter) -> int:
        return sum(c * (c - 1) // 2 for c in counts.values())

    joint = Counter(zip(predicted.tolist(), truth.tolist(), strict=True))
    by_predicted, by_truth = Counter(predicted.tolist()), Counter(truth.tolist())
    together, predicted_pairs, true_pairs = pairs(joint), pairs(by_predicted), pairs(by_truth)
    precision = together / predicted_pairs if predicted_pairs else 1.0
    recall = together / true_pairs if true_pairs else 1.0
    n = len(truth)
    bp = sum(v * v / by_predicted[p] for (p, _), v in joint.items()) / n
    br = sum(v * v / by_truth[t] for (_, t), v in joint.items()) / n
    return {
        "precision": precision,
        "recall": recall,
        "pair_f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "bcubed_f1": 2 * bp * br / (bp + br),
        "people": sum(1 for c in by_predicted.values() if c >= 2),
        "true_people": sum(1 for c in by_truth.values() if c >= 2),
    }


# Contenders ---------------------------------------------------------------------


STAGES: dict[str, float] = {}


def facevec_people(vectors: np.ndarray, photos: np.ndarray | None = None) -> np.ndarray:
    """facevec's clustering with its Dlib / euclidean defaults; stage times in STAGES."""
    from facevec.people import defaults
    from facevec.people.graph import knn_graph
    from facevec.people.linkage import cluster_faces

    n = len(vectors)
    photos = np.arange(n) if photos is None else photos
    threshold = defaults.linkage_threshold("Dlib", "euclidean")
    started = time.perf_counter()
    graph = knn_graph(vectors, np.arange(n), defaults.NEIGHBOURS, defaults.GRAPH_SHARE * threshold)
    STAGES["graph"] = time.perf_counter() - started
    started = time.perf_counter()
    result = cluster_faces(vectors, np.full(n, -1), photos, graph, threshold)
    STAGES["linkage"] = time.perf_counter() - started
    return result.cluster


def dbscan(vectors: np.ndarray, eps: float) -> np.ndarray:
    from sklearn.cluster import DBSCAN

    return DBSCAN(eps=eps, min_samples=3, metric="cosine").fit_predict(vectors)


def chinese_whispers(vectors: np.ndarray) -> np.ndarray:
    import dlib

    descriptors = [dlib.vector(row.astype(float).tolist()) for row in vectors]
    return np.asarray(dlib.chinese_whispers_clustering(descriptors, 0.5))


def _load() -> str:
    """The machine's load averages (1, 5, 15 min): how much the timings are shared."""
    return " / ".join(f"{value:.1f}" for value in os.getloadavg())


def timed(function, *args):  # type: ignore[no-untyped-def]
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def best_dbscan_eps(vectors: np.ndarray, truth: np.ndarray) -> float:
    grid = [0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.1]
    return max(grid, key=lambda eps: scores(dbscan(vectors, eps), truth)["bcubed_f1"])


# Report -------------------------------------------------------------------------


def row(name: str, result: dict[str, float], seconds: float) -> str:
    return (
        f"| {name} | {result['precision']:.3f} | {result['recall']:.3f} | "
        f"{result['pair_f1']:.3f} | {result['bcubed_f1']:.3f} | "
        f"{result['people']} / {result['true_people']} | {seconds:.2f} |"
    )


HEADER = (
    "| method | pair precision | pair recall | pair F1 | BCubed F1 | people found / true | s |\n"
    "|---|---:|---:|---:|---:|---:|---:|"
)


def quality(name: str, vectors, truth, photos=None, mask=None, tune_on=None) -> None:  # type: ignore[no-untyped-def]
    mask = np.ones(len(vectors), dtype=bool) if mask is None else mask
    print(f"\n### {name}: {len(vectors)} faces, {mask.sum()} scored\n")
    print(HEADER)
    predicted, seconds = timed(facevec_people, vectors, photos)
    print(row("facevec people", scores(predicted[mask], truth[mask]), seconds), flush=True)
    predicted, seconds = timed(chinese_whispers, vectors)
    print(row("dlib chinese whispers (0.5)", scores(predicted[mask], truth[mask]), seconds))
    predicted, seconds = timed(dbscan, vectors, 0.5)
    print(row("DBSCAN, Immich (cosine 0.5, 3)", scores(predicted[mask], truth[mask]), seconds))
    tuned_vectors, tuned_truth = tune_on if tune_on is not None else (vectors[mask], truth[mask])
    eps = best_dbscan_eps(tuned_vectors, tuned_truth)
    predicted, seconds = timed(dbscan, vectors, eps)
    print(row(f"DBSCAN, eps tuned ({eps})", scores(predicted[mask], truth[mask]), seconds))


def product_path(n: int) -> float:
    """Seconds of ``facevec.people.cluster`` on a SQLite gallery of n synthetic faces."""
    import facevec
    from facevec.people import cluster

    vectors, _ = synthetic_faces(n, seed=7)
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "people.db"
        facevec.add(db, [f"photo{i}.jpg" for i in range(n)], vectors, model_name="Dlib")
        started = time.perf_counter()
        cluster(db, progress=False)
        return time.perf_counter() - started


def people_step(stored: int, new: int, photos_per_second: float) -> None:
    """The people step of one run at `stored` faces with `new` new ones (SQLite)."""
    import sqlite3

    import facevec

    vectors, truth = synthetic_faces(stored + new, seed=11)
    order = np.random.default_rng(11).permutation(len(vectors))
    vectors, truth = vectors[order], truth[order]  # new faces: known people and new ones
    names = [f"photo{i}.jpg" for i in range(len(vectors))]
    print(f"\n### the people step: {stored} stored faces, {new} new (SQLite, knn index)\n")
    with tempfile.TemporaryDirectory() as folder:
        db = Path(folder) / "stored.db"
        # The stored faces' people: their true identities (given as identities, each a
        # person), so the step has people to recognise, as in a gallery people were
        # named in. Their step is off; the next run's step looks at the new faces only.
        labels = [f"p{label}" for label in truth[:stored].tolist()]
        if stored:  # 0: a first load, every face new
            _, seconds = timed(
                facevec.add, db, names[:stored], vectors[:stored], "Dlib", labels, True, False
            )
            print(f"{stored} faces stored with their people in {seconds:.0f} s")
        added, seconds = timed(facevec.add, db, names[stored:], vectors[stored:])
        step = added.people
        store_seconds = seconds - step.seconds
        index_seconds = new / photos_per_second + store_seconds
        with sqlite3.connect(db) as conn:
            rows = conn.execute(
                "SELECT f.img_name, pf.person_id, p.name FROM person_face pf"
                " JOIN face_meta f ON f.id = pf.face_id JOIN person p ON p.id = pf.person_id"
            ).fetchall()
        conn.close()
        label = dict(zip(names, truth.tolist(), strict=True))
        new_names = set(names[stored:])
        # Recognised: given the person of their own identity.
        recognised = [(n, name) for n, _, name in rows if n in new_names and name is not None]
        right = sum(1 for n, name in recognised if name == f"p{label[n]}")
        print(
            "| stored / new faces | people step (s) | recognised (right) / new people (faces) /"
            " left alone | add: store + knn index (s) | index run of the photos (s, estimated)"
            " | step / index run | load |"
        )
        print("|---:|---:|---:|---:|---:|---:|---:|")
        print(
            f"| {stored:,} / {new:,} | **{step.seconds:.2f}** | {step.recognised}"
            f" ({right}) / {step.new_people} ({step.grouped}) / {step.left_alone} |"
            f" {store_seconds:.2f} | {index_seconds:.0f} | {step.seconds / index_seconds:.4f} |"
            f" {_load()} |",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000", help="synthetic sizes to time")
    parser.add_argument("--quality-size", type=int, default=10000)
    parser.add_argument("--quality-only", action="store_true")
    parser.add_argument("--no-real", action="store_true", help="skip the shared test photos")
    parser.add_argument(
        "--anchors-up-to",
        type=int,
        default=20000,
        help="time the anchors only up to this size (dlib's Chinese whispers is O(n^2))",
    )
    parser.add_argument(
        "--step",
        default=None,
        help="STORED,NEW: time the people step of a run alone (e.g. 100000,1000)",
    )
    parser.add_argument(
        "--photos-per-second",
        type=float,
        default=4.4,
        help="the index rate of photos, for the index time beside the step (default: two "
        "cores at bench_ingest.py's 0.45 s of one core a photo, Dlib + dlib)",
    )
    args = parser.parse_args()
    if args.step:
        stored, new = (int(value) for value in args.step.split(","))
        people_step(stored, new, args.photos_per_second)
        return

    import dlib  # noqa: F401  (imported before any timing)
    import sklearn.cluster  # noqa: F401

    import facevec

    print(f"kernels: {facevec.isa()}, cores: {os.cpu_count()}, load: {_load()}")
    if not args.no_real:
        vectors, photos, truth, mask = real_faces(DATA / "people_faces.db")
        quality("real photos (shared test set, Dlib)", vectors, truth, photos, mask)
    vectors, truth = synthetic_faces(args.quality_size, seed=1)
    tune = synthetic_faces(args.quality_size, seed=2)
    quality(
        f"synthetic, {args.quality_size} faces (eps tuned on another draw)",
        vectors,
        truth,
        tune_on=tune,
    )
    if args.quality_only:
        return
    print("\n### time to cluster synthetic faces (s)\n")
    print(
        "| faces | facevec (vectors) | facevec people cluster (SQLite, end to end) |"
        " chinese whispers | DBSCAN Immich | facevec precision / recall / BCubed F1 |"
        " graph / linkage (s) | load |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in (int(size) for size in args.sizes.split(",")):
        vectors, truth = synthetic_faces(n, seed=3)
        predicted, ours = timed(facevec_people, vectors, None)
        quality_n = scores(predicted, truth)
        f1 = (
            f"{quality_n['precision']:.3f} / {quality_n['recall']:.3f} / "
            f"{quality_n['bcubed_f1']:.3f}"
        )
        end_to_end = product_path(n)
        cw = db = "not run"
        if n <= args.anchors_up_to:
            cw = f"{timed(chinese_whispers, vectors)[1]:.1f}"
        if n <= 20000:  # every pair is a neighbour at eps 0.5: O(n^2) memory beyond
            db = f"{timed(dbscan, vectors, 0.5)[1]:.1f}"
        print(
            f"| {n} | {ours:.1f} | {end_to_end:.1f} | {cw} | {db} | {f1} |"
            f" {STAGES['graph']:.1f} / {STAGES['linkage']:.1f} | {_load()} |",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
