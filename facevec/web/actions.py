"""What the pages and the API ask of the gallery, shared by both.

Every function here blocks (deepface, the database): the routes that call them
are plain ``def`` functions, which FastAPI runs in its thread pool, never on the
event loop. Each call opens its own database connection, in the thread that
uses it, and closes it before returning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..errors import FacevecError, InvalidParameterError
from ..gallery_info import info
from ..ingest import add
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL
from ..recognize import find, verify
from ..storage import faces, ledger, schema
from ..storage.database import open_database
from .config import WebConfig

MAX_PAGE = 500


@dataclass(frozen=True)
class FindOptions:
    """The knobs of find, as the API and the search page take them."""

    k: int | None = None
    threshold: float | None = None
    metric: str = "euclidean"
    strategy: str | None = None
    similarity_search: bool = False
    model_name: str | None = None  # None: the gallery's


def _faces_of(frames: list[Any]) -> list[dict[str, Any]]:
    return [
        {
            "source": frame.attrs.get("source", {"x": None, "y": None, "w": None, "h": None}),
            "matches": json.loads(frame.to_json(orient="records")),
            "skipped": frame.attrs.get("skipped", []),
        }
        for frame in frames
    ]


def _find(config: WebConfig, query: Any, options: FindOptions) -> dict[str, Any]:
    frames = find(
        query,
        config.db,
        strategy=options.strategy,
        distance_metric=options.metric,
        threshold=options.threshold,
        k=options.k,
        similarity_search=options.similarity_search,
        model_name=options.model_name,
    )
    return {"faces": _faces_of(frames)}


def find_photo(config: WebConfig, data: bytes, options: FindOptions) -> dict[str, Any]:
    """Each face of an uploaded photo with the gallery's faces nearest to it."""
    return _find(config, data, options)


def find_vector(config: WebConfig, vector: list[float], options: FindOptions) -> dict[str, Any]:
    """The gallery's faces nearest to a given embedding."""
    return _find(config, vector, options)


def gallery_model(config: WebConfig) -> tuple[str, str]:
    """(model, detector) of the gallery; deepface's defaults for an empty one."""
    with open_database(config.db, create=False) as database:
        collection = schema.get_collection(database)
    if collection is None:
        return DEFAULT_MODEL, DEFAULT_DETECTOR
    return collection.model_name, collection.detector_backend or DEFAULT_DETECTOR


def verify_photos(
    config: WebConfig,
    first: bytes,
    second: bytes,
    metric: str = "euclidean",
    threshold: float | None = None,
    model_name: str | None = None,
    detector_backend: str | None = None,
) -> dict[str, Any]:
    """Do two uploaded photos show the same person? With the gallery's model by default."""
    stored_model, stored_detector = gallery_model(config)
    return verify(
        first,
        second,
        model_name=model_name or stored_model,
        detector_backend=detector_backend or stored_detector,
        distance_metric=metric,
        threshold=threshold,
    )


def gallery_info(config: WebConfig) -> dict[str, Any]:
    return info(config.db)


def add_vectors(
    config: WebConfig,
    img_names: list[str],
    embeddings: list[list[float]],
    model_name: str | None = None,
    identities: list[str | None] | None = None,
) -> int:
    stored_model, _ = gallery_model(config)
    return add(
        config.db,
        img_names,
        embeddings,
        model_name=model_name or stored_model,
        identities=identities,
    )


def _page(limit: int, offset: int) -> tuple[int, int]:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidParameterError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    if offset < 0:
        raise InvalidParameterError(f"offset must be >= 0, not {offset}")
    return limit, offset


def ledger_problems(config: WebConfig, limit: int = 100, offset: int = 0) -> dict[str, Any]:
    """Files the last runs did not index, and why (newest first)."""
    limit, offset = _page(limit, offset)
    with open_database(config.db, create=False) as database:
        if not schema.has_schema(database):
            return {"total": 0, "files": []}
        total, entries = ledger.problems(database, limit, offset)
    files = [
        {
            "path": entry.path,
            "outcome": entry.outcome,
            "message": entry.message,
            "size_bytes": entry.size_bytes,
            "updated_at": entry.updated_at,
        }
        for entry in entries
    ]
    return {"total": total, "files": files}


@dataclass(frozen=True)
class IdentityGroup:
    """An identity of the gallery with a few of its faces."""

    identity: str | None
    faces: int
    images: int
    sample: list[faces.FaceLocation]


def identity_groups(
    config: WebConfig, samples: int = 6, limit: int = 60, offset: int = 0
) -> tuple[int, list[IdentityGroup]]:
    """(how many identities, a page of them), most faces first, unlabelled faces last."""
    limit, offset = _page(limit, offset)
    with open_database(config.db, create=False) as database:
        if not schema.has_schema(database):
            return 0, []
        counts = faces.identity_counts(database)
        groups = [
            IdentityGroup(
                count.identity,
                count.faces,
                count.images,
                faces.faces_of_identity(database, count.identity, limit=samples),
            )
            for count in counts[offset : offset + limit]
        ]
    return len(counts), groups


def identity_faces(
    config: WebConfig, identity: str | None, limit: int = 200, offset: int = 0
) -> list[faces.FaceLocation]:
    limit, offset = _page(limit, offset)
    with open_database(config.db, create=False) as database:
        if not schema.has_schema(database):
            return []
        return faces.faces_of_identity(database, identity, limit=limit, offset=offset)


class NotStoredError(FacevecError, LookupError):
    """A face the gallery does not hold (or without a crop), a job the server does not know."""


def face_location(config: WebConfig, face_id: int) -> faces.FaceLocation:
    with open_database(config.db, create=False) as database:
        found = faces.locations(database, [face_id]) if schema.has_schema(database) else {}
    if face_id not in found:
        raise NotStoredError(f"the gallery holds no face {face_id}")
    return found[face_id]


def face_stored(config: WebConfig, face_id: int) -> bool:
    with open_database(config.db, create=False) as database:
        return schema.has_schema(database) and bool(faces.locations(database, [face_id]))


def face_crop(config: WebConfig, face_id: int) -> bytes:
    """The PNG of a stored face, exactly as the model saw it."""
    with open_database(config.db, create=False) as database:
        if not schema.has_schema(database):
            raise NotStoredError(f"the gallery holds no face {face_id}")
        png = faces.face_crop(database, face_id)
        if png is None:
            if face_id in faces.locations(database, [face_id]):
                raise NotStoredError(
                    f"face {face_id} has no stored crop (it was added as a vector)"
                )
            raise NotStoredError(f"the gallery holds no face {face_id}")
    return png
