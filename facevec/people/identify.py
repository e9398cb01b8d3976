"""Who is in this photo? One answer per face, from the gallery's people.

For each face of the query photo, facevec's search (any strategy, any database)
finds the nearest stored faces; the people those faces belong to are the
candidates. Each candidate is scored on their faces as a set: the mean distance
to their ``k`` nearest faces (all of them if they have fewer), computed exactly
with the kernels, so no single lucky face decides. Then:

- ``matched``: the best person's score is within the threshold, and the second
  best person is not (or trails by at least the margin);
- ``ambiguous``: two people are within the threshold, less than the margin apart;
- ``unknown``: no person within the threshold (or nobody has faces yet); the
  answer names nobody (no person id), however near the nearest person is.

These three words are no one's name (``storage.people.DECISIONS``). Many photos
(a folder, a list) are searched in one batch, as in find.

The threshold is deepface's for the model and metric, a number, or
``"calibrated"``: the gallery's own (``facevec calibrate``).
"""

from __future__ import annotations

import functools
import os
from typing import Any

import numpy as np

from ..bindings.kernels import distances
from ..errors import ModelMismatchError
from ..face import Face
from ..metrics import face_metric
from ..options import DEFAULT_DETECTOR, EmbedOptions
from ..parameters import check_k, check_threshold
from ..recognize import ImageArg, faces_of_queries
from ..search import check_strategy, nearest_batch
from ..storage import people as store
from ..storage.database import Database, DbArg
from . import defaults
from .calibration import calibrated_threshold
from .gallery import open_gallery

COLUMNS = [
    "img",
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
MATCHED, AMBIGUOUS, UNKNOWN = store.DECISIONS
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
    stacked = {person: np.stack(vectors) for person, vectors in by_person.items()}
    return person_scores(query, stacked, sorted(stacked), metric, k)


def person_scores(
    query: np.ndarray, by_person: dict[int, np.ndarray], people: list[int], metric: str, k: int
) -> list[tuple[float, int]]:
    """score_people with each person's faces stacked already ({person: matrix});
    `people` (sorted) are scored, those without faces left out."""
    scored = []
    for person in people:
        if person in by_person:
            to_each = np.sort(distances(query, by_person[person], metric=metric))
            scored.append((float(np.mean(to_each[:k])), person))
    return sorted(scored)


def _label(names: dict[int, str | None], person: int) -> str:
    name = names.get(person)
    return name if name is not None else f"person {person}"


def decide(scored: list[tuple[float, int]], threshold: float, margin: float) -> str:
    if not scored or scored[0][0] > threshold:
        return UNKNOWN
    if len(scored) > 1 and scored[1][0] <= threshold and scored[1][0] - scored[0][0] < margin:
        return AMBIGUOUS
    return MATCHED


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

    `img` is a photo (path, bytes, or BGR array) or an embedding, or many photos,
    as in find: a folder (its image files) or a list of photos, searched in one
    batch; their faces come in photo order.

    Columns: img (the query photo's path, None for bytes, arrays and embeddings),
    face_index, person_id and person (the best candidate; person is the name, or
    "person <id>" if unnamed), distance (the best person's score),
    second_person_id / second_person / second_distance, margin (second minus
    best), decision (matched / ambiguous / unknown), threshold, and source_x/y/w/h
    (the face's box in its photo). An unknown face is nobody: its person is
    "unknown" and its person and runner-up columns are empty (None); its distance
    still says how far the nearest person is.
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
        queries = [
            (img if photo is None else photo, face)
            for photo, face in faces_of_queries(img, options)
        ]
        for _, face in queries:
            if face.embedding.shape != (collection.dimensions,):
                raise ModelMismatchError(
                    f"query embedding has shape {face.embedding.shape}; {database.name} holds "
                    f"{collection.dimensions}-dimensional {collection.model_name} vectors"
                )
        records = _identify_faces(
            database, queries, distance_metric, strategy, k, limit, gap, confirmed_only
        )
    import pandas as pd

    frame = pd.DataFrame.from_records(records, columns=COLUMNS)
    # The same types however many faces and photos: ids nullable integers, text
    # columns objects with None for nothing (pandas would infer str or object).
    for column in ("person_id", "second_person_id", "source_x", "source_y", "source_w", "source_h"):
        frame[column] = frame[column].astype("Int64")
    for column in ("distance", "second_distance", "margin", "threshold"):
        frame[column] = frame[column].astype(float)
    for column in ("img", "person", "second_person", "decision"):
        values = frame[column].astype(object)
        frame[column] = values.where(values.notna(), None)
    return frame


def _identify_faces(
    database: Database,
    queries: list[tuple[Any, Face]],
    metric: str,
    strategy: str | None,
    k: int,
    limit: float,
    gap: float,
    confirmed_only: bool,
) -> list[tuple]:
    """One record (COLUMNS) per query face: one batch search for every face, one
    read of the candidates' vectors."""
    if not queries:
        return []
    all_hits = nearest_batch(
        database,
        np.stack([face.embedding for _, face in queries]),
        strategy=strategy,
        distance_metric=metric,
        k=max(CANDIDATE_FACES, 10 * k),
    )
    person_of = store.persons_of_faces(
        database, sorted({face_id for hits in all_hits for face_id, _ in hits})
    )
    candidates = [sorted({person_of[f] for f, _ in hits if f in person_of}) for hits in all_hits]
    by_person: dict[int, list[np.ndarray]] = {}
    sources = SOURCES_CONFIRMED if confirmed_only else None
    for person, _, vector in store.person_vectors(
        database, sorted(set().union(*candidates)), sources
    ):
        by_person.setdefault(person, []).append(vector)
    stacked = {person: np.stack(vectors) for person, vectors in by_person.items()}
    scored = [
        person_scores(face.embedding, stacked, people, metric, k)
        for (_, face), people in zip(queries, candidates, strict=True)
    ]
    names = store.person_names(database, sorted({p for s in scored for _, p in s[:2]}))
    label = functools.partial(_label, names)
    records = []
    for (photo, face), ranked in zip(queries, scored, strict=True):
        decision = decide(ranked, limit, gap)
        best = ranked[0] if ranked else (None, None)
        second = ranked[1] if len(ranked) > 1 else (None, None)
        if decision == UNKNOWN:  # nobody: the nearest people are no answer
            person = (None, UNKNOWN)
            second = (None, None)
        else:
            person = (best[1], label(best[1]))
        records.append(
            (
                os.fspath(photo) if isinstance(photo, (str, os.PathLike)) else None,
                face.face_index,
                *person,
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
    return records
