"""Recognise faces: find a photo's faces in a gallery, verify two photos.

Shaped after deepface's API (DeepFace.find returns a list of DataFrames, one per
face of the query photo; DeepFace.verify returns a dict), backed by a database.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from .bindings.kernels import distances
from .engine import embed, models
from .errors import (
    DatabaseNotFoundError,
    ModelMismatchError,
    NoFaceError,
    NotAnImageError,
    SkippedFacesWarning,
    SkippedPhotosWarning,
)
from .face import Face
from .metrics import face_metric
from .options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from .parameters import check_threshold
from .search import check_strategy, nearest_batch
from .storage import faces, schema
from .storage.database import DbArg, open_database
from .vectors import check_vectors

ImageArg = Union[str, "os.PathLike[str]", bytes, np.ndarray, Sequence[float]]

RESULT_COLUMNS = [
    "img_name",
    "identity",
    "face_index",
    "face_id",
    "target_x",
    "target_y",
    "target_w",
    "target_h",
    "source_x",
    "source_y",
    "source_w",
    "source_h",
    "threshold",
    "distance",
    "verified",
]


def _is_embedding(img: Any) -> bool:
    if isinstance(img, np.ndarray):
        return img.ndim == 1
    return isinstance(img, (list, tuple)) and all(
        isinstance(value, (int, float, np.floating, np.integer)) for value in img
    )


def query_photos(img: Any) -> list[Any] | None:
    """Several query photos: a folder's image files (sorted) or a list of
    photos; None for one photo or one embedding."""
    if isinstance(img, (str, os.PathLike)) and os.path.isdir(img):
        from .ingest.walk import IMAGE_EXTENSIONS

        folder = os.fspath(img)
        return [
            os.path.join(folder, name)
            for name in sorted(os.listdir(folder))
            if os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            and os.path.isfile(os.path.join(folder, name))
        ]
    if isinstance(img, (list, tuple)) and not _is_embedding(img):
        return list(img)
    return None


def query_faces(img: ImageArg, options: EmbedOptions) -> list[Face]:
    """The faces of a query: a photo's detected faces, or one given embedding."""
    if _is_embedding(img):
        values = np.asarray(img, dtype=np.float64).reshape(1, -1)
        (vector,) = check_vectors(values, None, lambda _: "the query embedding")
        return [Face.from_vector(vector)]
    if isinstance(img, np.ndarray):
        if img.ndim != 3:
            raise NotAnImageError(
                f"an image array must be height x width x 3 (BGR), not shape {img.shape}"
            )
        return embed.embed_image(img, "image array", options)
    if isinstance(img, bytes):
        return embed.embed_bytes(img, "image bytes", options)
    path = os.fspath(img)
    with open(path, "rb") as handle:
        data = handle.read()
    return embed.embed_bytes(data, path, options)


def faces_of_queries(img: Any, options: EmbedOptions) -> list[tuple[Any, Face]]:
    """Every (photo, face) of a query: of one photo or embedding (photo None; a photo
    with no face is an error), or of several photos (a folder, a list), where a photo
    with no face or that is no image is left out and named in a SkippedPhotosWarning,
    so that one bad file does not stop the batch."""
    photos = query_photos(img)
    if photos is None:
        return [(None, face) for face in query_faces(img, options)]
    queries: list[tuple[Any, Face]] = []
    left_out: list[str] = []
    for photo in photos:
        try:
            queries += [(photo, face) for face in query_faces(photo, options)]
        except (NoFaceError, NotAnImageError) as err:
            left_out.append(str(err))
    if left_out:
        shown = "; ".join(left_out[:5]) + (
            f"; and {len(left_out) - 5} more" if len(left_out) > 5 else ""
        )
        warnings.warn(
            f"{len(left_out)} of {len(photos)} photos left out of the search: {shown}",
            SkippedPhotosWarning,
            stacklevel=3,
        )
    return queries


def _results_frame(located: dict, hits: list[tuple[int, float]], face: Face, threshold: float):  # type: ignore[no-untyped-def]
    import pandas as pd

    records = []
    for face_id, distance in hits:
        stored = located.get(face_id)
        if stored is None:  # deleted by a concurrent prune between the two queries
            continue
        records.append(
            (
                stored.img_name,
                stored.identity,
                stored.face_index,
                face_id,
                stored.x,
                stored.y,
                stored.w,
                stored.h,
                face.x,
                face.y,
                face.w,
                face.h,
                threshold,
                distance,
                distance <= threshold,
            )
        )
    frame = pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)
    # The query face's box, also when no stored face matches it (an empty frame).
    frame.attrs["source"] = {"x": face.x, "y": face.y, "w": face.w, "h": face.h}
    return frame


def find(
    img: ImageArg,
    db: DbArg,
    strategy: str | None = None,
    distance_metric: str = "euclidean",
    threshold: float | str | None = None,
    k: int | None = None,
    model_name: str | None = None,
    detector_backend: str | None = None,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
    similarity_search: bool = False,
    exact: bool = False,
    nprobe: int | None = None,
) -> list[Any]:
    """Faces in `db` nearest to each face of `img`, like DeepFace.find.

    `img` is a photo (path, bytes, or BGR array) or a precomputed embedding (1-D
    array or list of floats), or many photos: a folder (its image files) or a list
    of photos; then the frames of all their faces come in photo order, each with
    ``attrs["img"]``, from one batch search (the knn strategy reads its index
    once for all of them). Returns one pandas DataFrame per query face, nearest
    first: img_name, identity, face_index, face_id, target_x/y/w/h (the stored
    face), source_x/y/w/h (the query face), threshold, distance, verified. Rows are
    those within the threshold (deepface's for the model and metric unless given;
    "calibrated": the gallery's own, from facevec.calibrate),
    at most k of them; similarity_search=True drops the threshold filter.
    strategy: None (the plan of :mod:`facevec.plan`, from the gallery's indexes and
    the number of query faces; ``facevec info`` says which), "extension", "knn"
    (SQLite, the facevec_knn index), "relational" or "client"; all give the same rows.
    model_name and detector_backend default to those the database was built with.
    exact=True detects the query's faces with deepface's own code (as index --exact).
    Each frame's ``attrs["source"]`` is the query face's box (x, y, w, h), even
    when no stored face matches it. nprobe: the IVF lists searched (see
    ``search.nearest``).
    """
    if strategy is not None:
        check_strategy(strategy)
    face_metric(distance_metric)
    with open_database(db, create=False) as database:
        collection = schema.get_collection(database)
        if collection is None:
            raise DatabaseNotFoundError(
                f"{database.name} holds no faces yet; index a folder into it first"
            )
        model_name = model_name or collection.model_name
        schema.check_model(database, model_name)
        if threshold is None:
            threshold = models.find_threshold(model_name, distance_metric)
        elif threshold == "calibrated":
            from .people.calibration import calibrated_threshold

            threshold = calibrated_threshold(database, distance_metric)
        options = EmbedOptions(
            model_name,
            detector_backend or collection.detector_backend or DEFAULT_DETECTOR,
            align,
            expand_percentage,
            normalization,
            exact,
        )
        queries = faces_of_queries(img, options)
        for _, face in queries:
            if face.embedding.shape != (collection.dimensions,):
                raise ModelMismatchError(
                    f"query embedding has shape {face.embedding.shape}; {database.name} holds "
                    f"{collection.dimensions}-dimensional {collection.model_name} vectors"
                )
        if not queries:
            return []
        # Every face of every photo in one search: the knn strategy reads its
        # index once for all of them.
        all_hits = nearest_batch(
            database,
            np.stack([face.embedding for _, face in queries]),
            strategy=strategy,
            distance_metric=distance_metric,
            threshold=None if similarity_search else threshold,
            k=k,
            nprobe=nprobe,
        )
        frames = []
        for (photo, face), hits in zip(queries, all_hits, strict=True):
            skipped = getattr(hits, "skipped", {})
            located = faces.locations(database, [face_id for face_id, _ in hits] + list(skipped))
            frame = _results_frame(located, hits, face, float(threshold))
            if isinstance(photo, (str, os.PathLike)):
                frame.attrs["img"] = os.fspath(photo)
            frame.attrs["skipped"] = _skipped(located, skipped)
            frames.append(frame)
        _warn_skipped(database.name, distance_metric, frames)
        return frames


def _skipped(located: dict, skipped: dict[int, str]) -> list[dict[str, Any]]:
    """The stored faces a search left out, each with where it is and why."""
    found = []
    for face_id in sorted(skipped):
        where = located.get(face_id)
        found.append(
            {
                "face_id": face_id,
                "img_name": None if where is None else where.img_name,
                "face_index": None if where is None else where.face_index,
                "reason": skipped[face_id],
            }
        )
    return found


def _warn_skipped(name: str, metric: str, frames: list[Any]) -> None:
    left_out = {row["face_id"]: row for frame in frames for row in frame.attrs["skipped"]}
    if not left_out:
        return
    shown = [
        f"face {row['face_id']} ({row['img_name']!r}, face {row['face_index']}) {row['reason']}"
        for row in list(left_out.values())[:5]
    ]
    more = f"; and {len(left_out) - 5} more" if len(left_out) > 5 else ""
    warnings.warn(
        f"{name}: {len(left_out)} stored faces left out of the search, their {metric} "
        f"distance being undefined: {'; '.join(shown)}{more} (frame.attrs['skipped'])",
        SkippedFacesWarning,
        stacklevel=3,
    )


def verify(
    img1: ImageArg,
    img2: ImageArg,
    model_name: str = DEFAULT_MODEL,
    detector_backend: str = DEFAULT_DETECTOR,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
    exact: bool = False,
) -> dict[str, Any]:
    """Do two photos show the same person? Like DeepFace.verify.

    With several faces in a photo, the closest pair of faces decides. exact=True
    detects with deepface's own code, so the distance equals DeepFace.verify's;
    the default fast path makes the same decisions (benchmarks/README.md).
    """
    face_metric(distance_metric)
    if threshold is not None:
        check_threshold(threshold)  # NaN or negative: refused, as find refuses them
    started = time.perf_counter()
    options = EmbedOptions(
        model_name, detector_backend, align, expand_percentage, normalization, exact
    )
    faces1 = query_faces(img1, options)
    faces2 = query_faces(img2, options)
    if faces1[0].embedding.shape != faces2[0].embedding.shape:
        raise ModelMismatchError(
            f"embeddings of different sizes: {faces1[0].embedding.shape[0]} and "
            f"{faces2[0].embedding.shape[0]}"
        )
    matrix = np.stack([face.embedding for face in faces2])
    best = (float("inf"), faces1[0], faces2[0])
    for face in faces1:
        to_each = distances(face.embedding, matrix, metric=distance_metric)
        position = int(np.argmin(to_each))
        if float(to_each[position]) < best[0]:
            best = (float(to_each[position]), face, faces2[position])
    if threshold is None:
        threshold = models.find_threshold(model_name, distance_metric)
    distance, face1, face2 = best
    return {
        "verified": bool(distance <= threshold),
        "distance": distance,
        "threshold": float(threshold),
        "model": model_name,
        "detector_backend": detector_backend,
        "distance_metric": distance_metric,
        "similarity_metric": distance_metric,  # deepface's name for it
        "facial_areas": {"img1": face1.area(), "img2": face2.area()},
        "time": round(time.perf_counter() - started, 2),
    }
