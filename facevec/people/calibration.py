"""This gallery's own thresholds, measured on the people its users vouch for, and
how sure they are.

Faces a folder or a user assigned, and the faces a named person had when a user
named them (or last merged into them), give genuine pairs (two faces of one
person) and impostor pairs (faces of two people); suggestions made since are not
counted. From their distances: the equal-error rate (EER) and its threshold, and
the largest thresholds whose false-match rate (impostor pairs within the
threshold) is at most 1e-2 and 1e-3. At each threshold, both rates come with their
95% Wilson score interval and the number of pairs behind them. A
false-match-rate threshold needs at least 1/rate impostor pairs to mean anything,
so it is left out (None) below that.

``threshold="calibrated"`` in identify and find then uses the strictest figure
the evidence supports (the 1e-3 threshold, else the 1e-2 one, else the EER's),
within two rules that keep a small sample from moving it far:

- under ``MIN_PAIRS`` genuine or impostor pairs, the sample is too small to move
  the threshold at all: it stays deepface's for the model and metric;
- under ``LOOSEN_IMPOSTOR_PAIRS`` impostor pairs, it may be stricter than
  deepface's but never looser.

Each rule that applied is a warning in the figures (and on the command line).

Large galleries are sampled: at most ``max_faces`` faces (a fixed random choice),
so the O(faces²) pair distances stay within seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..bindings.kernels import distances
from ..errors import NotCalibratedError, PeopleConflictError, UnknownModelError
from ..metrics import face_metric
from ..storage import people as store
from ..storage.database import Database, DbArg
from ..storage.schema import now
from . import defaults
from .gallery import open_gallery

TARGETS = ((1e-3, "fmr_1e3"), (1e-2, "fmr_1e2"))
MAX_FACES = 6000
# Fewer genuine or impostor pairs than this cannot move the threshold: with no
# error among 100 pairs, a rate is still only known to be under 3.7% (95%).
MIN_PAIRS = 100
# Fewer impostor pairs than this never make the threshold looser than deepface's.
LOOSEN_IMPOSTOR_PAIRS = 1000
Z_95 = 1.959963984540054  # the standard normal's 97.5% quantile


def wilson_interval(errors: int, pairs: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a rate `errors / pairs` (95% by default): unlike
    the normal approximation, it stays within [0, 1] and is not empty at 0 errors."""
    if pairs <= 0:
        return 0.0, 1.0
    rate = errors / pairs
    denominator = 1 + z * z / pairs
    centre = (rate + z * z / (2 * pairs)) / denominator
    half = z * np.sqrt(rate * (1 - rate) / pairs + z * z / (4 * pairs * pairs)) / denominator
    return max(0.0, float(centre - half)), min(1.0, float(centre + half))


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


def rates_at(pairs: PairDistances, threshold: float) -> dict[str, Any]:
    """The false-match and false non-match rates when d <= threshold is a match, each
    with its 95% Wilson interval."""
    false_matches = int(np.count_nonzero(pairs.impostor <= threshold))
    false_non_matches = int(np.count_nonzero(pairs.genuine > threshold))
    n_impostor, n_genuine = len(pairs.impostor), len(pairs.genuine)
    return {
        "fmr": round(false_matches / n_impostor, 6),
        "fmr_ci": [round(v, 6) for v in wilson_interval(false_matches, n_impostor)],
        "fnmr": round(false_non_matches / n_genuine, 6),
        "fnmr_ci": [round(v, 6) for v in wilson_interval(false_non_matches, n_genuine)],
    }


def deepface_threshold(model_name: str, metric: str) -> float | None:
    """deepface's threshold for the model and metric (None for a model it lacks)."""
    try:
        return defaults.identify_threshold(model_name, metric)
    except UnknownModelError:
        return None


def settle_threshold(
    measured: float,
    rule: str,
    genuine_pairs: int,
    impostor_pairs: int,
    default: float | None,
) -> tuple[float, str, list[str]]:
    """(threshold, rule, warnings): the measured threshold within the rules of the
    module docstring (too few pairs: deepface's; too few impostor pairs: never looser)."""
    if genuine_pairs < MIN_PAIRS or impostor_pairs < MIN_PAIRS:
        sample = (
            f"{genuine_pairs} genuine and {impostor_pairs} impostor pairs are too few to "
            f"move the threshold (at least {MIN_PAIRS:,} of each)"
        )
        if default is None:
            return measured, rule, [f"{sample}; the model has no deepface threshold to keep"]
        return (
            default,
            "deepface's (too few pairs to move it)",
            [f"{sample}: it stays deepface's {default:g} (measured {measured:.4f})"],
        )
    if impostor_pairs < LOOSEN_IMPOSTOR_PAIRS and default is not None and measured > default:
        return (
            default,
            f"deepface's (measured {measured:.4f} by {rule}: looser, on too few impostor pairs)",
            [
                f"only {impostor_pairs} impostor pairs (fewer than {LOOSEN_IMPOSTOR_PAIRS:,}): "
                f"the measured {measured:.4f} is looser than deepface's {default:g}, "
                "which stays"
            ],
        )
    return measured, rule, []


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
            f"impostor pairs ({len(vectors)} faces, {people} people): name people, "
            "confirm their faces, or lay photos out in gallery/<person>/ folders first"
        )
    eer, eer_threshold = equal_error(pairs.genuine, pairs.impostor)
    figures: dict[str, Any] = {
        "metric": metric,
        "model_name": model_name,
        "people": people,
        "faces": len(vectors),
        "genuine_pairs": len(pairs.genuine),
        "impostor_pairs": len(pairs.impostor),
        "eer": round(eer, 6),
        "eer_threshold": eer_threshold,
    }
    figures.update({f"eer_{key}": value for key, value in rates_at(pairs, eer_threshold).items()})
    for rate, key in TARGETS:
        threshold, fnmr = fmr_threshold(pairs.genuine, pairs.impostor, rate)
        figures[f"{key}_threshold"] = threshold
        figures[f"{key}_fnmr"] = None if fnmr is None else round(fnmr, 6)
        at = rates_at(pairs, threshold) if threshold is not None else {}
        for name in ("fmr", "fmr_ci", "fnmr_ci"):
            figures[f"{key}_{name}"] = at.get(name)
    for rate, key in TARGETS:
        if figures[f"{key}_threshold"] is not None:
            measured, rule = figures[f"{key}_threshold"], f"false-match rate {rate:g}"
            break
    else:
        measured = eer_threshold
        rule = "equal error rate (too few impostor pairs for 1e-2)"
    default = deepface_threshold(model_name, metric)
    threshold, rule, warnings = settle_threshold(
        measured, rule, len(pairs.genuine), len(pairs.impostor), default
    )
    figures.update(
        {
            "measured_threshold": measured,
            "deepface_threshold": default,
            "threshold": threshold,
            "threshold_rule": rule,
        }
    )
    figures.update({f"threshold_{k}": v for k, v in rates_at(pairs, threshold).items()})
    figures["warnings"] = warnings
    return figures


def calibrate(db: DbArg, distance_metric: str = "euclidean", max_faces: int = MAX_FACES) -> dict:
    """Measure and store this gallery's thresholds for a metric; returns the figures.

    Besides the thresholds: the labelled faces by why they count (``labelled``:
    folder, confirmed, named), each rate's 95% interval (``*_ci``), the threshold
    as measured and deepface's, and ``warnings`` (a sample too small to move it).
    """
    face_metric(distance_metric)
    with open_gallery(db) as (database, collection):
        labelled = store.labelled_vectors(database)
        if not labelled:
            raise PeopleConflictError(
                f"{database.name} has no faces from person folders, confirmed by a user or "
                "of a named person; calibration measures distances between those"
            )
        person = np.array([row[0] for row in labelled])
        vectors = np.stack([row[2] for row in labelled]).astype(np.float32)
        figures = measure(vectors, person, distance_metric, collection.model_name, max_faces)
        why = [row[3] for row in labelled]
        figures["labelled"] = {w: why.count(w) for w in ("folder", "confirmed", "named")}
        figures["created_at"] = now()
        with database.transaction():
            store.save_calibration(database, figures)
        return figures


def calibrated_threshold(database: Database, distance_metric: str) -> float:
    """The stored calibrated threshold of a metric (see the module docstring); one
    stored by an earlier version is held to the same rules."""
    figures = store.calibration(database, distance_metric)
    if figures is None or figures["threshold"] is None:
        raise NotCalibratedError(
            f"{database.name} has no calibrated {distance_metric} threshold; run: "
            f"facevec calibrate --db {database.name} --metric {distance_metric}"
        )
    threshold, _, _ = settle_threshold(
        float(figures["threshold"]),
        figures["threshold_rule"] or "",
        int(figures["genuine_pairs"]),
        int(figures["impostor_pairs"]),
        deepface_threshold(figures["model_name"], distance_metric),
    )
    return threshold
