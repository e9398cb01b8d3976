"""This gallery's own thresholds, measured on the people its users vouch for.

Faces a folder or a user assigned (never suggestions) give genuine pairs (two
faces of one person) and impostor pairs (faces of two people). From their
distances: the equal-error rate (EER) and its threshold, and the largest
thresholds whose false-match rate (impostor pairs within the threshold) is at
most 1e-2 and 1e-3, with the false non-match rate at each. A false-match-rate
threshold needs at least 1/rate impostor pairs to mean anything, so it is left
out (None) below that, and the counts are reported with every figure.

``threshold="calibrated"`` in identify and find then uses the strictest figure
the evidence supports: the 1e-3 threshold, else the 1e-2 one, else the EER's.

Large galleries are sampled: at most ``max_faces`` faces (a fixed random choice),
so the O(faces²) pair distances stay within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..bindings.kernels import distances
from ..errors import NotCalibratedError, PeopleConflictError
from ..metrics import face_metric
from ..storage import people as store
from ..storage.database import Database, DbArg
from ..storage.schema import now
from .gallery import open_gallery

TARGETS = ((1e-3, "fmr_1e3"), (1e-2, "fmr_1e2"))
MAX_FACES = 6000


@dataclass(frozen=True)
class PairDistances:
    genuine: np.ndarray
    impostor: np.ndarray


def pair_distances(vectors: np.ndarray, person: np.ndarray, metric: str) -> PairDistances:
    """Distances of every pair of rows, split by same / different person."""
    genuine, impostor = [], []
    for row in range(len(vectors) - 1):
        to_rest = distances(vectors[row], vectors[row + 1 :], metric=metric)
        same = person[row + 1 :] == person[row]
        genuine.append(to_rest[same])
        impostor.append(to_rest[~same])
    empty = np.empty(0, np.float32)
    return PairDistances(
        np.concatenate(genuine) if genuine else empty,
        np.concatenate(impostor) if impostor else empty,
    )


def equal_error(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold): where the false-match rate meets the false non-match rate.

    Accepting d <= t: FMR(t) = share of impostor pairs <= t, FNMR(t) = share of
    genuine pairs > t. The threshold is the candidate (a pair distance) where
    |FMR - FNMR| is smallest, the EER their mean there.
    """
    candidates = np.unique(np.concatenate([genuine, impostor]))
    g, i = np.sort(genuine), np.sort(impostor)
    fmr = np.searchsorted(i, candidates, side="right") / len(i)
    fnmr = 1.0 - np.searchsorted(g, candidates, side="right") / len(g)
    best = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[best] + fnmr[best]) / 2), float(candidates[best])


def fmr_threshold(
    genuine: np.ndarray, impostor: np.ndarray, rate: float
) -> tuple[float | None, float | None]:
    """(threshold, FNMR there): the largest threshold with FMR <= rate, i.e. just
    below the (floor(rate·n)+1)-th smallest impostor distance. None without enough
    impostor pairs (fewer than 1/rate)."""
    if len(impostor) < round(1 / rate):
        return None, None
    i = np.sort(impostor)
    allowed = int(np.floor(rate * len(i) + 1e-9))  # false matches the rate permits
    threshold = float(np.nextafter(np.float32(i[allowed]), np.float32(0)))
    fnmr = float(np.mean(genuine > threshold)) if len(genuine) else None
    return threshold, fnmr


def measure(
    vectors: np.ndarray,
    person: np.ndarray,
    metric: str,
    model_name: str,
    max_faces: int = MAX_FACES,
    seed: int = 0,
) -> dict:
    """The calibration figures of labelled vectors (one person id per row)."""
    if len(vectors) > max_faces:
        keep = np.sort(np.random.default_rng(seed).choice(len(vectors), max_faces, replace=False))
        vectors, person = vectors[keep], person[keep]
    pairs = pair_distances(vectors, person, metric)
    people = len(np.unique(person))
    if len(pairs.genuine) == 0 or len(pairs.impostor) == 0:
        raise PeopleConflictError(
            f"calibration needs two faces of one person and faces of two people; the "
            f"labelled faces give {len(pairs.genuine)} genuine and {len(pairs.impostor)} "
            f"impostor pairs ({len(vectors)} faces, {people} people): lay photos out in "
            "gallery/<person>/ folders or confirm people first"
        )
    eer, eer_threshold = equal_error(pairs.genuine, pairs.impostor)
    figures = {
        "metric": metric,
        "model_name": model_name,
        "people": people,
        "faces": len(vectors),
        "genuine_pairs": len(pairs.genuine),
        "impostor_pairs": len(pairs.impostor),
        "eer": round(eer, 6),
        "eer_threshold": eer_threshold,
    }
    for rate, key in TARGETS:
        threshold, fnmr = fmr_threshold(pairs.genuine, pairs.impostor, rate)
        figures[f"{key}_threshold"] = threshold
        figures[f"{key}_fnmr"] = None if fnmr is None else round(fnmr, 6)
    for rate, key in TARGETS:
        if figures[f"{key}_threshold"] is not None:
            figures["threshold"] = figures[f"{key}_threshold"]
            figures["threshold_rule"] = f"false-match rate {rate:g}"
            break
    else:
        figures["threshold"] = eer_threshold
        figures["threshold_rule"] = "equal error rate (too few impostor pairs for 1e-2)"
    return figures


def calibrate(db: DbArg, distance_metric: str = "euclidean", max_faces: int = MAX_FACES) -> dict:
    """Measure and store this gallery's thresholds for a metric; returns the figures."""
    face_metric(distance_metric)
    with open_gallery(db) as (database, collection):
        labelled = store.labelled_vectors(database)
        if not labelled:
            raise PeopleConflictError(
                f"{database.name} has no faces from person folders or confirmed by a user; "
                "calibration measures distances between those"
            )
        person = np.array([row[0] for row in labelled])
        vectors = np.stack([row[2] for row in labelled]).astype(np.float32)
        figures = measure(vectors, person, distance_metric, collection.model_name, max_faces)
        figures["created_at"] = now()
        with database.transaction():
            store.save_calibration(database, figures)
        return figures


def calibrated_threshold(database: Database, distance_metric: str) -> float:
    """The stored calibrated threshold of a metric (see the module docstring)."""
    figures = store.calibration(database, distance_metric)
    if figures is None or figures["threshold"] is None:
        raise NotCalibratedError(
            f"{database.name} has no calibrated {distance_metric} threshold; run: "
            f"facevec calibrate --db {database.name} --metric {distance_metric}"
        )
    return float(figures["threshold"])
