"""The public face pipeline: index, find, verify, add, info.

Shaped after deepface's API (DeepFace.find returns a list of DataFrames, one per
face of the query photo; DeepFace.verify returns a dict), backed by a database.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any, Union

import numpy as np

from . import embed, models, schema, search, store
from .database import Database, DbArg, in_clause_chunks, open_database
from .embed import Face
from .errors import (
    DatabaseNotFoundError,
    ModelMismatchError,
    NotAnImageError,
    UnknownStrategyError,
    VectorError,
)
from .ingest import IndexInterrupted, IndexReport, index, refresh_knn_index

__all__ = [
    "index",
    "find",
    "verify",
    "add",
    "info",
    "reindex",
    "IndexReport",
    "IndexInterrupted",
]

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


def _query_faces(img: ImageArg, options: dict) -> list[Face]:
    """The faces of a query: a photo's detected faces, or one given embedding."""
    if _is_embedding(img):
        vector = np.asarray(img, dtype=np.float32)
        if not np.isfinite(vector).all() or not vector.any():
            raise VectorError("the query embedding is all zeros or holds NaN or infinity")
        return [Face(0, vector, None, None, None, None, None, None, 0.0, b"")]  # type: ignore[arg-type]
    if isinstance(img, np.ndarray):
        if img.ndim != 3:
            raise NotAnImageError(
                f"an image array must be height x width x 3 (BGR), not shape {img.shape}"
            )
        return embed.embed_image(img, "image array", **options)
    if isinstance(img, bytes):
        return embed.embed_bytes(img, "image bytes", **options)
    path = os.fspath(img)
    with open(path, "rb") as handle:
        data = handle.read()
    return embed.embed_bytes(data, path, **options)


def _results_frame(db: Database, hits: search.Hits, face: Face, threshold: float):  # type: ignore[no-untyped-def]
    import pandas as pd

    meta: dict[int, tuple] = {}
    ids = [face_id for face_id, _ in hits]
    for chunk in in_clause_chunks(ids):
        for row in db.query(
            "SELECT id, img_name, identity, face_index, facial_area_x, facial_area_y,"
            " facial_area_w, facial_area_h FROM face_meta"
            f" WHERE id IN ({db.dialect.params(len(chunk))})",
            chunk,
        ):
            meta[int(row[0])] = row
    records = []
    for face_id, distance in hits:
        row = meta.get(face_id)
        if row is None:  # deleted by a concurrent prune between the two queries
            continue
        _, img_name, identity, face_index, x, y, w, h = row
        records.append(
            (
                img_name,
                identity,
                face_index,
                face_id,
                x,
                y,
                w,
                h,
                face.x,
                face.y,
                face.w,
                face.h,
                threshold,
                distance,
                distance <= threshold,
            )
        )
    return pd.DataFrame.from_records(records, columns=RESULT_COLUMNS)


def find(
    img: ImageArg,
    db: DbArg,
    strategy: str | None = None,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    k: int | None = None,
    model_name: str | None = None,
    detector_backend: str | None = None,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
    similarity_search: bool = False,
) -> list[Any]:
    """Faces in `db` nearest to each face of `img`, like DeepFace.find.

    `img` is a photo (path, bytes, or BGR array) or a precomputed embedding (1-D
    array or list of floats). Returns one pandas DataFrame per query face, nearest
    first: img_name, identity, face_index, face_id, target_x/y/w/h (the stored
    face), source_x/y/w/h (the query face), threshold, distance, verified. Rows are
    those within the threshold (deepface's for the model and metric unless given),
    at most k of them; similarity_search=True drops the threshold filter.
    strategy: "extension" (default on SQLite), "knn" (SQLite, the facevec_knn
    index), "relational" (default on a server) or "client"; all give the same rows.
    model_name and detector_backend default to those the database was built with.
    """
    if strategy is not None:
        search.check_strategy(strategy)
    models.check_metric(distance_metric)
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
        options = dict(
            model_name=model_name,
            detector_backend=detector_backend
            or collection.detector_backend
            or models.DEFAULT_DETECTOR,
            align=align,
            expand_percentage=expand_percentage,
            normalization=normalization,
        )
        frames = []
        for face in _query_faces(img, options):
            if face.embedding.shape != (collection.dimensions,):
                raise ModelMismatchError(
                    f"query embedding has shape {face.embedding.shape}; {database.name} holds "
                    f"{collection.dimensions}-dimensional {collection.model_name} vectors"
                )
            hits = search.search(
                database,
                face.embedding,
                strategy=strategy,
                distance_metric=distance_metric,
                threshold=None if similarity_search else threshold,
                k=k,
            )
            frames.append(_results_frame(database, hits, face, float(threshold)))
        return frames


def verify(
    img1: ImageArg,
    img2: ImageArg,
    model_name: str = models.DEFAULT_MODEL,
    detector_backend: str = models.DEFAULT_DETECTOR,
    distance_metric: str = "euclidean",
    threshold: float | None = None,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
) -> dict[str, Any]:
    """Do two photos show the same person? Like DeepFace.verify, same numbers.

    With several faces in a photo, the closest pair of faces decides.
    """
    import facevec

    models.check_metric(distance_metric)
    started = time.perf_counter()
    options = dict(
        model_name=model_name,
        detector_backend=detector_backend,
        align=align,
        expand_percentage=expand_percentage,
        normalization=normalization,
    )
    faces1 = _query_faces(img1, options)
    faces2 = _query_faces(img2, options)
    if faces1[0].embedding.shape != faces2[0].embedding.shape:
        raise ModelMismatchError(
            f"embeddings of different sizes: {faces1[0].embedding.shape[0]} and "
            f"{faces2[0].embedding.shape[0]}"
        )
    matrix = np.stack([face.embedding for face in faces2])
    best = (float("inf"), faces1[0], faces2[0])
    for face in faces1:
        distances = facevec.distances(face.embedding, matrix, metric=distance_metric)
        position = int(np.argmin(distances))
        if float(distances[position]) < best[0]:
            best = (float(distances[position]), face, faces2[position])
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
        "facial_areas": {"img1": _area(face1), "img2": _area(face2)},
        "time": round(time.perf_counter() - started, 2),
    }


def _area(face: Face) -> dict[str, Any]:
    return {
        "x": face.x,
        "y": face.y,
        "w": face.w,
        "h": face.h,
        "left_eye": face.left_eye,
        "right_eye": face.right_eye,
    }


def add(
    db: DbArg,
    img_names: Sequence[str],
    embeddings: Any,
    model_name: str = models.DEFAULT_MODEL,
    identities: Sequence[str | None] | None = None,
) -> int:
    """Store precomputed embeddings (from any pipeline) without deepface.

    One row per (img_name, embedding); repeated names become face 0, 1, ... of that
    image. Faces already stored under these names are replaced. Returns the count.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise ValueError(
            f"embeddings must be a 2-D array (n x dimensions), not shape {vectors.shape}"
        )
    if len(img_names) != len(vectors):
        raise ValueError(f"{len(img_names)} img_names for {len(vectors)} embeddings")
    if identities is not None and len(identities) != len(vectors):
        raise ValueError(f"{len(identities)} identities for {len(vectors)} embeddings")
    if not np.isfinite(vectors).all():
        raise ValueError("embeddings contain NaN or infinite values")
    zero_rows = np.flatnonzero(~vectors.any(axis=1))
    if zero_rows.size:
        raise ValueError(
            f"embedding {int(zero_rows[0])} ({img_names[int(zero_rows[0])]!r}) is all zeros, "
            "which no face has and cosine distance cannot rank"
        )
    grouped: dict[str, list[int]] = {}
    for row, name in enumerate(img_names):
        grouped.setdefault(str(name), []).append(row)
    with open_database(db) as database:
        schema.create_schema(database)
        schema.ensure_collection(database, model_name, int(vectors.shape[1]), None)
        try:
            for name, rows in grouped.items():
                faces = [
                    Face(i, vectors[row], None, None, None, None, None, None, 0.0, b"")  # type: ignore[arg-type]
                    for i, row in enumerate(rows)
                ]
                identity = None if identities is None else identities[rows[0]]
                store.replace_image(database, name, faces, model_name, None, identity)
            database.commit()
        except BaseException:
            database.rollback()
            raise
        if database.dialect.has_extension:
            refresh_knn_index(database)
    return len(vectors)


def info(db: DbArg) -> dict[str, Any]:
    """What a database holds: model, counts, and the ledger's outcomes."""
    with open_database(db, create=False) as database:
        collection = schema.get_collection(database)
        if collection is None:
            return {"db": database.name, "model_name": None, "faces": 0, "images": 0, "ledger": {}}
        ledger = {outcome: 0 for outcome in schema.OUTCOMES}
        for outcome, count in database.query(
            "SELECT outcome, COUNT(*) FROM ingest_ledger GROUP BY outcome"
        ):
            ledger[outcome] = int(count)
        return {
            "db": database.name,
            "model_name": collection.model_name,
            "dimensions": collection.dimensions,
            "detector_backend": collection.detector_backend,
            "schema_version": collection.schema_version,
            "created_at": collection.created_at,
            "faces": int(database.scalar("SELECT COUNT(*) FROM face_meta")),
            "images": int(database.scalar("SELECT COUNT(DISTINCT img_name) FROM face_meta")),
            "identities": int(database.scalar("SELECT COUNT(DISTINCT identity) FROM face_meta")),
            "files_in_ledger": sum(ledger.values()),
            "ledger": ledger,
            "faces_in_ledger": int(
                database.scalar("SELECT COALESCE(SUM(faces), 0) FROM ingest_ledger")
            ),
            "last_indexed_at": database.scalar("SELECT MAX(updated_at) FROM ingest_ledger"),
        }


def reindex(db: DbArg, progress: bool = True) -> int:
    """(Re)build the facevec_knn index of a SQLite database (the knn strategy),
    with a progress bar; returns the number of faces indexed. `index` keeps the
    index current by itself: this is for databases made otherwise, or to reclaim
    the space of deleted faces."""
    from . import knn
    from .ingest import knn_progress_bar

    with open_database(db, create=False) as database:
        if not database.dialect.has_extension:
            raise UnknownStrategyError(
                f"the knn index lives in SQLite; {database.name} is {database.dialect.name}, "
                "where find uses strategy 'relational' or 'client'"
            )
        with knn_progress_bar(progress) as advance:
            return knn.build(database.conn, progress=advance)
