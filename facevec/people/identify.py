"""Who is in this photo? One answer per face, from the gallery's people.

For each face of the query photo, facevec's search (any strategy, any database)
finds the nearest stored faces; the people those faces belong to are the
candidates. Each candidate is scored on their faces as a set: the mean distance
to their ``k`` nearest faces (all of them if they have fewer), computed exactly
with the kernels, so no single lucky face decides. Then:

- ``matched``: the best person's score is within the threshold, and the second
  best person is not (or trails by at least the margin);
- ``ambiguous``: two people are within the threshold, less than the margin apart;
- ``unknown``: no person within the threshold (or nobody has faces yet).

The threshold is deepface's for the model and metric, a number, or
``"calibrated"``: the gallery's own (``facevec calibrate``).
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from ..bindings.kernels import distances
from ..errors import ModelMismatchError
from ..metrics import face_metric
from ..options import DEFAULT_DETECTOR, EmbedOptions
from ..parameters import check_k, check_threshold
from ..recognize import ImageArg, query_faces
from ..search import check_strategy, nearest
from ..storage import people as store
from ..storage.database import Database, DbArg
from . import defaults
from .calibration import calibrated_threshold
from .gallery import open_gallery

COLUMNS = [
    "face_index",
    "person_id",
    "person",
    "distance",
    "second_person_id",
    "second_person",
    "second_distance",
    "margin",
    "decision",
    "threshold",
    "source_x",
    "source_y",
    "source_w",
    "source_h",
]
UNKNOWN = "unknown"
CANDIDATE_FACES = 50  # nearest stored faces whose people are scored
SOURCES_CONFIRMED = ("folder", "confirmed")


def resolve_threshold(
    database: Database, threshold: float | str | None, model_name: str, metric: str
) -> float:
    if threshold is None:
        return defaults.identify_threshold(model_name, metric)
    if threshold == "calibrated":
        return calibrated_threshold(database, metric)
    value = check_threshold(threshold)
    return float("inf") if value is None else value


def score_people(
    query: np.ndarray,
    faces: list[tuple[int, int, np.ndarray]],
    metric: str,
    k: int,
) -> list[tuple[float, int]]:
    """(score, person id), best first: each person's mean distance to its k nearest faces."""
    by_person: dict[int, list[np.ndarray]] = {}
    for person, _, vector in faces:
        by_person.setdefault(person, []).append(vector)
    scored = []
    for person, vectors in by_person.items():
        to_each = np.sort(distances(query, np.stack(vectors), metric=metric))
        scored.append((float(np.mean(to_each[:k])), person))
    return sorted(scored)


def _label(names: dict[int, str | None], person: int) -> str:
    name = names.get(person)
    return name if name is not None else f"person {person}"


def decide(scored: list[tuple[float, int]], threshold: float, margin: float) -> str:
    if not scored or scored[0][0] > threshold:
        return UNKNOWN
    if len(scored) > 1 and scored[1][0] <= threshold and scored[1][0] - scored[0][0] < margin:
        return "ambiguous"
    return "matched"


def identify(
    img: ImageArg,
    db: DbArg,
    distance_metric: str = "euclidean",
    threshold: float | str | None = None,
    k: int = defaults.IDENTIFY_K,
    margin: float | None = None,
    confirmed_only: bool = False,
    strategy: str | None = None,
    model_name: str | None = None,
    detector_backend: str | None = None,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
) -> Any:
    """Who each face of `img` is: a pandas DataFrame, one row per face.

    Columns: face_index, person_id and person (the best candidate; person is the
    name, "person <id>" if unnamed, or "unknown"), distance (the best person's
    score), second_person_id / second_person / second_distance, margin (second
    minus best), decision (matched / ambiguous / unknown), threshold, and
    source_x/y/w/h (the face in `img`). `img` is a photo or an embedding.
    confirmed_only: score people on folder and confirmed faces only, not suggestions.
    """
    if strategy is not None:
        check_strategy(strategy)
    face_metric(distance_metric)
    k = check_k(k) or defaults.IDENTIFY_K
    with open_gallery(db) as (database, collection):
        model_name = model_name or collection.model_name
        limit = resolve_threshold(database, threshold, model_name, distance_metric)
        gap = (
            defaults.identify_margin(limit if np.isfinite(limit) else 0.0)
            if margin is None
            else float(check_threshold(margin) or 0.0)
        )
        options = EmbedOptions(
            model_name,
            detector_backend or collection.detector_backend or DEFAULT_DETECTOR,
            align,
            expand_percentage,
            normalization,
        )
        sources = SOURCES_CONFIRMED if confirmed_only else None
        records = []
        for face in query_faces(img, options):
            if face.embedding.shape != (collection.dimensions,):
                raise ModelMismatchError(
                    f"query embedding has shape {face.embedding.shape}; {database.name} holds "
                    f"{collection.dimensions}-dimensional {collection.model_name} vectors"
                )
            hits = nearest(
                database,
                face.embedding,
                strategy=strategy,
                distance_metric=distance_metric,
                k=max(CANDIDATE_FACES, 10 * k),
            )
            candidates = set(
                store.persons_of_faces(database, [face_id for face_id, _ in hits]).values()
            )
            faces = store.person_vectors(database, sorted(candidates), sources)
            scored = score_people(face.embedding, faces, distance_metric, k)
            decision = decide(scored, limit, gap)
            names = store.person_names(database, [person for _, person in scored[:2]])
            label = functools.partial(_label, names)

            best = scored[0] if scored else (None, None)
            second = scored[1] if len(scored) > 1 else (None, None)
            records.append(
                (
                    face.face_index,
                    best[1],
                    UNKNOWN if decision == UNKNOWN or best[1] is None else label(best[1]),
                    best[0],
                    second[1],
                    None if second[1] is None else label(second[1]),
                    second[0],
                    None if second[0] is None else second[0] - best[0],
                    decision,
                    limit,
                    face.x,
                    face.y,
                    face.w,
                    face.h,
                )
            )
    import pandas as pd

    return pd.DataFrame.from_records(records, columns=COLUMNS)
