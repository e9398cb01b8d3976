"""IVF lists on any database: train, assign, probe, report; and the blobs-only layout.

Each face carries the number of its nearest coarse centroid (``face_meta.ivf_list``,
indexed). A query finds its ``nprobe`` nearest centroids (cached in this process)
and the relational and client strategies search only those lists, ranking the
candidates exactly (``search.nearest``). ``nprobe >= lists`` is the exact search.
The default nprobe is measured when the lists are trained (:func:`measure_nprobe`,
as the SQLite knn index does), the rule of :func:`default_nprobe` serving only
lists trained before it was.

Training is k-means on the C kernels (:func:`facevec.bindings.kernels.kmeans`,
the same as the SQLite knn index's lists). :func:`train_lists` keeps the old
lists serving until the new ones are complete, then swaps them in one
transaction; an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .bindings.kernels import KMEANS_METRICS, assign, kmeans, top_k, top_k_batch
from .errors import EmptyGalleryError, InvalidParameterError, UnknownMetricError
from .storage import faces, schema
from .storage import lists as store
from .storage.database import Database, DbArg, open_database
from .vectors import blob_problems

#: Training rows per list (k-means reads a random sample of this many per list).
ROWS_PER_LIST = 256
#: The default nprobe: this share of the lists, at least MIN_NPROBE.
NPROBE_SHARE = 1 / 128
MIN_NPROBE = 8


#: The measured default nprobe: this many stored faces serve as queries, and the
#: default is the smallest nprobe whose lists hold CALIBRATION_RECALL of their
#: CALIBRATION_K nearest other faces (the SQLite knn index's rule, csrc/knn_store.c).
CALIBRATION_QUERIES = 200
CALIBRATION_K = 10
CALIBRATION_RECALL = 0.97


def default_nprobe(n_lists: int) -> int:
    """The rule for lists trained before the default was measured at training."""
    return min(n_lists, max(MIN_NPROBE, math.ceil(n_lists * NPROBE_SHARE)))


def gallery_nprobe(current: store.Layout, n_lists: int) -> int:
    """The gallery's default nprobe: the one measured at training, else the rule."""
    return default_nprobe(n_lists) if current.nprobe is None else min(current.nprobe, n_lists)


def probe(db: Database, query: np.ndarray, nprobe: int | None) -> list[int] | None:
    """The lists a query searches, or None for all of them (no lists, or nprobe >= lists)."""
    current = store.layout(db)
    if current.generation is None:
        return None
    matrix, metric = store.centroids(db, current)
    wanted = gallery_nprobe(current, len(matrix)) if nprobe is None else nprobe
    if wanted >= len(matrix):
        return None
    order, _ = top_k(query, matrix, wanted, metric=metric)
    return sorted(int(n) for n in order)


def shared_centroids(db: Database, n_lists: int) -> np.ndarray | None:
    """The gallery's trained lists as centroids another IVF index can reuse (the
    SQLite knn index, so that ``reindex --lists`` trains k-means once): the
    active generation's ``n_lists`` x dim float32 centroids when they were trained
    for a euclidean metric (the knn index places rows by euclidean distance),
    else None."""
    current = store.layout(db)
    if current.generation is None:
        return None
    matrix, metric = store.centroids(db, current)
    if metric not in ("euclidean", "euclidean_squared") or len(matrix) != n_lists:
        return None
    return np.ascontiguousarray(matrix, dtype=np.float32)


def has_embedding_rows(db: Database) -> bool:
    return store.layout(db).embedding_rows


# Training ------------------------------------------------------------------------


def _sample(
    db: Database, total: int, size: int, seed: int, bar: Any, dimensions: int, metric: str
) -> np.ndarray:
    """A uniform random sample of `size` stored vectors, read in one pass (without
    the rows whose distance under `metric` is undefined: see _lists_of)."""
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.choice(total, min(size, total), replace=False))
    chosen, seen = [], 0
    for ids, blobs in _batches(db, None, 20000):
        low, high = np.searchsorted(keep, [seen, seen + len(ids)])
        picked = [blobs[i] for i in (keep[low:high] - seen).tolist()]
        bad = {p.row for p in blob_problems(picked, dimensions) if p.undefined_for(metric)}
        good = [blob for row, blob in enumerate(picked) if row not in bad]
        if good:
            chosen.append(np.frombuffer(b"".join(good), dtype="<f4").reshape(len(good), -1))
        seen += len(ids)
        bar.update(len(ids))
        if seen >= total:
            break
    if not chosen:
        return np.empty((0, dimensions), dtype=np.float32)
    return np.ascontiguousarray(np.concatenate(chosen), dtype=np.float32)


def _lists_of(blobs: list[bytes], centroids: np.ndarray, metric: str) -> np.ndarray:
    """Each face's nearest list; -1 (a list no query probes) for a vector whose
    distance under `metric` is undefined (another size, NaN, no length: written by
    an older version or another program; searches skip it anyway)."""
    numbers = np.full(len(blobs), -1, dtype=np.int64)
    bad = {p.row for p in blob_problems(blobs, centroids.shape[1]) if p.undefined_for(metric)}
    good = [row for row in range(len(blobs)) if row not in bad]
    if good:
        matrix = np.frombuffer(b"".join(blobs[row] for row in good), dtype="<f4")
        numbers[good] = assign(matrix.reshape(len(good), -1), centroids, metric)[0]
    return numbers


def train_lists(
    db: DbArg,
    n_lists: int,
    metric: str = "euclidean",
    progress: bool = True,
    batch_size: int = 20000,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Train `n_lists` IVF lists on the gallery and assign every face to one.

    k-means on a sample (ROWS_PER_LIST rows per list), then every face's list in
    committed batches of `batch_size` into a pending table; the new lists replace
    the old ones in one transaction at the end (a failure before leaves the old
    ones serving). Rerunning after an interruption with the same `n_lists` and
    `metric` resumes the assignment. `on_batch(done)` is called after each batch.
    Returns {"lists", "faces", "resumed", "sizes"}.
    """
    from tqdm import tqdm

    if metric not in KMEANS_METRICS:
        raise UnknownMetricError(
            f"unknown lists metric {metric!r}; choose one of {', '.join(KMEANS_METRICS)}"
        )
    if isinstance(n_lists, bool) or not isinstance(n_lists, (int, np.integer)) or n_lists < 1:
        raise InvalidParameterError(f"lists must be a whole number >= 1, not {n_lists!r}")
    n_lists = int(n_lists)
    with open_database(db, create=False) as database:
        schema.create_schema(database)
        collection = schema.get_collection(database)
        total = faces.count(database) if collection is not None else 0
        if collection is None or total == 0:
            raise EmptyGalleryError(f"{database.name} holds no faces: nothing to put in lists")
        if n_lists > total:
            raise InvalidParameterError(
                f"lists ({n_lists}) is larger than the number of faces ({total}): "
                "each list needs at least one face"
            )
        current = store.pending(database)
        resumed = current is not None and (current.lists, current.metric) == (n_lists, metric)
        if current is not None and not resumed:
            with database.transaction():
                store.discard_pending(database)
        if not resumed:
            size = min(total, ROWS_PER_LIST * n_lists)
            with tqdm(total=total, unit="face", desc="lists: sample", disable=not progress) as bar:
                train = _sample(database, total, size, seed, bar, collection.dimensions, metric)
            if len(train) < n_lists:
                raise InvalidParameterError(
                    f"lists ({n_lists}) is larger than the faces that can be ranked by {metric} "
                    f"in the sample ({len(train)})"
                )
            centroids, _ = kmeans(train, n_lists, metric=metric, seed=seed, sample=len(train))
            with database.transaction():
                generation = store.save_pending(
                    database, centroids, collection.model_name, metric, total
                )
            database.commit()
            current = store.pending(database)
            assert current is not None and current.generation == generation
        generation = current.generation
        centroids = store.read_centroids(database, generation)[0]
        done = current.assigned
        with tqdm(
            total=total, initial=done, unit="face", desc="lists: assign", disable=not progress
        ) as bar:
            last = current.last_face_id
            for ids, blobs in _batches(database, last, batch_size):
                numbers = _lists_of(blobs, centroids, metric)
                with database.transaction():
                    # Faces deleted meanwhile get no row: a list is only ever what
                    # the vector now stored under that id is nearest to.
                    store.save_assignments(database, generation, ids, numbers)
                last = ids[-1]
                done += len(ids)
                bar.update(len(ids))
                if on_batch is not None:
                    on_batch(done)
        with tqdm(
            total=total, unit="face", desc="lists: measure nprobe", disable=not progress
        ) as bar:
            nprobe = measure_nprobe(database, generation, centroids, metric, seed, batch_size, bar)
        with database.transaction():
            # Faces written while the batches ran (a photo replaced: its new face), then
            # the swap: one transaction.
            ids, blobs = store.unassigned_pending(database, generation)
            if ids:
                store.save_assignments(
                    database, generation, ids, _lists_of(blobs, centroids, metric)
                )
            store.activate(database, generation, nprobe)
        store.analyze(database)
        report = store.status(database)
        assert report is not None
        return {
            "lists": n_lists,
            "faces": report.faces,
            "resumed": resumed,
            "sizes": report.sizes,
            "nprobe": nprobe,
        }


def drop_lists(db: DbArg) -> bool:
    """Remove the gallery's IVF lists (reindex --lists 0): relational and client
    search every face again. Returns whether there were lists."""
    with open_database(db, create=False) as database:
        schema.create_schema(database)
        if schema.get_collection(database) is None:
            return False
        with database.transaction():
            had = store.drop(database)
        return had


def measure_nprobe(
    database: Database,
    generation: int,
    centroids: np.ndarray,
    metric: str,
    seed: int = 0,
    batch_size: int = 20000,
    bar: Any = None,
) -> int:
    """The smallest nprobe at which the pending lists of `generation` hold
    CALIBRATION_RECALL of the CALIBRATION_K nearest other faces of up to
    CALIBRATION_QUERIES stored faces (the first face at or after random ids): one
    more pass over the gallery, the exact neighbours found by the batch kernel."""
    n_lists, dims = centroids.shape
    span = faces.id_span(database)
    if span is None:
        return n_lists
    rng = np.random.default_rng(seed)
    starts = sorted(set(rng.integers(span[0], span[1] + 1, CALIBRATION_QUERIES).tolist()))
    chosen: dict[int, bytes] = {}
    for start in starts:
        rows = next(faces.iter_id_range(database, start, span[1] + 1, ("id", "embedding"), 1), [])
        if rows:
            chosen[int(rows[0][0])] = bytes(rows[0][1])
    blobs = list(chosen.values())
    bad = {p.row for p in blob_problems(blobs, dims) if p.undefined_for(metric)}
    query_ids = [i for row, i in enumerate(chosen) if row not in bad]
    if not query_ids:
        return n_lists
    queries = np.frombuffer(b"".join(chosen[i] for i in query_ids), dtype="<f4")
    queries = queries.reshape(len(query_ids), dims)
    kk = CALIBRATION_K + 1  # each query finds itself among the stored faces
    best_d = np.full((len(query_ids), kk), np.inf, dtype=np.float32)
    best_id = np.full((len(query_ids), kk), -1, dtype=np.int64)
    best_list = np.full((len(query_ids), kk), -1, dtype=np.int64)
    for ids, batch, numbers in store.pending_rows(database, generation, batch_size):
        bad = {p.row for p in blob_problems(batch, dims) if p.undefined_for(metric)}
        keep = [row for row in range(len(batch)) if row not in bad]
        if keep:
            matrix = np.frombuffer(b"".join(batch[row] for row in keep), dtype="<f4")
            order, dist = top_k_batch(queries, matrix.reshape(len(keep), dims), kk, metric)
            rows = np.asarray(keep, dtype=np.int64)[order]
            all_d = np.concatenate([best_d, dist], axis=1)
            all_id = np.concatenate([best_id, np.asarray(ids, dtype=np.int64)[rows]], axis=1)
            all_list = np.concatenate(
                [best_list, np.asarray(numbers, dtype=np.int64)[rows]], axis=1
            )
            pick = np.argsort(all_d, axis=1, kind="stable")[:, :kk]
            best_d = np.take_along_axis(all_d, pick, axis=1)
            best_id = np.take_along_axis(all_id, pick, axis=1)
            best_list = np.take_along_axis(all_list, pick, axis=1)
        if bar is not None:
            bar.update(len(ids))
    # Each query's lists by centroid distance, and the rank of its neighbours' lists.
    order, _ = top_k_batch(queries, centroids, n_lists, metric)
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(n_lists)[None, :], axis=1)
    found: list[int] = []
    for q, face_id in enumerate(query_ids):
        others = [
            (list_no, distance)
            for other, list_no, distance in zip(best_id[q], best_list[q], best_d[q], strict=True)
            if other != face_id and other >= 0 and np.isfinite(distance)
        ][:CALIBRATION_K]
        # A neighbour in no list (not assigned yet) is one no nprobe finds.
        found += [int(rank[q, n]) if 0 <= n < n_lists else n_lists for n, _ in others]
    if not found:
        return n_lists
    needed = int(np.quantile(np.asarray(found), CALIBRATION_RECALL, method="inverted_cdf"))
    return max(1, min(n_lists, needed + 1))


def _batches(
    database: Database, last: int | None, batch_size: int
) -> Iterator[tuple[list[int], list[bytes]]]:
    """(ids, vector blobs) of the faces after id `last`, by id, a batch at a time."""
    while True:
        span = faces.id_span(database)
        low = None if span is None else span[0] if last is None else last + 1
        if span is None or low > span[1]:
            return
        rows = next(
            faces.iter_id_range(database, low, span[1] + 1, ("id", "embedding"), batch_size), []
        )
        if not rows:
            return
        yield [int(row[0]) for row in rows], [bytes(row[1]) for row in rows]
        last = int(rows[-1][0])


# Status ------------------------------------------------------------------------------


def list_status(db: DbArg) -> dict[str, Any] | None:
    """The gallery's lists: count, sizes, and whether a retrain would help (None: no lists)."""
    with open_database(db, create=False) as database:
        if schema.get_collection(database) is None:
            return None
        found = store.status(database)
        if found is None:
            return None
        sizes = np.asarray(found.sizes)
        mean = max(found.faces - found.unassigned, 1) / max(found.lists, 1)
        advice = []
        if found.unassigned:
            advice.append(f"{found.unassigned} faces are in no list (written outside facevec)")
        if found.faces > 2 * found.trained_faces:
            advice.append(
                f"the gallery grew from {found.trained_faces} to {found.faces} faces since training"
            )
        if sizes.max() > 8 * mean:
            advice.append(
                f"the largest list holds {int(sizes.max())} faces,"
                f" {sizes.max() / mean:.0f}x the mean"
            )
        return {
            "lists": found.lists,
            "metric": found.metric,
            "default_nprobe": (
                default_nprobe(found.lists) if found.nprobe is None else found.nprobe
            ),
            "nprobe_measured": found.nprobe is not None,
            "trained_at": found.trained_at,
            "trained_faces": found.trained_faces,
            "faces": found.faces,
            "unassigned": found.unassigned,
            "smallest": int(sizes.min()),
            "median": float(np.median(sizes)),
            "largest": int(sizes.max()),
            "empty": int((sizes == 0).sum()),
            "retrain": "; ".join(advice) if advice else None,
        }


# Blobs only ---------------------------------------------------------------------------


def set_embedding_rows(db: DbArg, keep: bool, progress: bool = True, batch_size: int = 2000) -> int:
    """Keep face_embeddings filled (keep=True, the default layout) or empty (blobs only).

    Emptying records the choice first (new faces come without rows), then deletes
    the rows in committed batches; filling writes the missing rows in batches and
    records the choice last. Both resume when rerun. Returns the faces changed.
    """
    from tqdm import tqdm

    changed = 0
    with open_database(db, create=False) as database:
        schema.create_schema(database)
        if schema.get_collection(database) is None:
            raise EmptyGalleryError(f"{database.name} holds no faces yet")
        if not keep:
            with database.transaction():
                store.set_embedding_rows(database, False)
            with tqdm(unit="face", desc="face_embeddings: delete", disable=not progress) as bar:
                while ids := store.faces_with_rows(database, batch_size):
                    with database.transaction():
                        store.delete_embedding_rows(database, ids)
                    changed += len(ids)
                    bar.update(len(ids))
            return changed
        with tqdm(unit="face", desc="face_embeddings: fill", disable=not progress) as bar:
            last = -1
            while rows := store.faces_without_rows(database, last, batch_size):
                with database.transaction():
                    for face_id, blob in rows:
                        faces.insert_embedding_rows(database, face_id, blob)
                last = rows[-1][0]
                changed += len(rows)
                bar.update(len(rows))
        with database.transaction():
            store.set_embedding_rows(database, True)
        return changed
