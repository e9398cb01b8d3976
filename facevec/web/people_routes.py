"""People on the web: identify, list, show, name and merge (facevec.people).

``create_app`` registers these routes when the people capability
(``facevec.people``) is installed, and only then: ``register(app)`` adds the JSON
endpoints under /api (these, and the edits of people_actions) and the pages of
people_pages. Naming and merging need the server's token, as every write does.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from pydantic import BaseModel, Field

from ..people import identify, merge, name, show
from ..people.curate import MAX_PAGE, cover_of, people_page, person_faces_page
from . import people_actions
from .api import (
    ERRORS,
    METRIC_HELP,
    STRATEGY_HELP,
    WRITE_ERRORS,
    face_thumbnail_url,
    photo_url,
    read_upload,
)
from .config import WebConfig
from .params import Count, Offset, person_ref, threshold_form, threshold_of
from .people_pages import views
from .photos import servable_photo
from .security import config_of, require_token
from .uploads import decoding

api = APIRouter()


class PersonSummary(BaseModel):
    id: int
    name: str | None
    label: str = Field(description='The name, or "person <id>".')
    faces: int
    photos: int
    confirmed: int
    folder: int
    suggested: int
    hidden: bool = Field(False, description="Kept out of the way on the people page.")
    cover_face_id: int | None = Field(None, description="The face that stands for them.")
    cover_url: str | None = Field(
        None, description="Its thumbnail (GET /api/faces/{id}/thumbnail.jpg)."
    )


class PersonFaceOut(BaseModel):
    face_id: int
    img_name: str
    face_index: int
    source: str = Field(description="How the face came to the person: folder, confirmed, ...")
    score: float | None
    x: int | None
    y: int | None
    w: int | None
    h: int | None


class PersonPhoto(BaseModel):
    img_name: str
    photo_url: str | None = Field(description="The photo, if under a folder this server shows.")
    faces: list[int] = Field(description="The person's faces in it.")


class PersonDetail(BaseModel):
    person: PersonSummary
    faces: list[PersonFaceOut]
    photos: list[PersonPhoto] = Field(default_factory=list)


class PersonFacesOut(BaseModel):
    person: PersonSummary
    total: int = Field(description="How many faces the person has (or of that source).")
    offset: int
    limit: int
    faces: list[PersonFaceOut] = Field(description="This page's faces, by id.")
    photos: list[PersonPhoto] = Field(description="The photos of this page's faces.")


class NameRequest(BaseModel):
    name: str


class MergeRequest(BaseModel):
    sources: list[int | str] = Field(description="People (ids or names) merged into target.")
    target: int | str
    force: bool = Field(False, description="Merge even if two faces of one photo meet.")


class ChangeOut(BaseModel):
    edit_id: int | None
    summary: str
    person_id: int | None


def _summary(person: Any, cover: int | None = None) -> dict[str, Any]:
    return {
        "id": person.id,
        "name": person.name,
        "label": person.label,
        "faces": person.faces,
        "photos": person.photos,
        "confirmed": person.confirmed,
        "folder": person.folder,
        "suggested": person.suggested,
        "hidden": person.hidden,
        "cover_face_id": cover,
        "cover_url": face_thumbnail_url(cover),
    }


@api.post(
    "/identify",
    summary="Who each face of an uploaded photo is (facevec identify)",
    description="One record per face, as facevec.identify's rows: decision matched, "
    "ambiguous or unknown; an unknown face names nobody (person_id null); the face's box "
    "is source_x, source_y, source_w, source_h.",
    responses=ERRORS,
)
def identify_endpoint(
    request: Request,
    photo: UploadFile = File(...),  # noqa: B008
    metric: str = Form("euclidean", description=METRIC_HELP),
    threshold: str | None = threshold_form(),
    strategy: str | None = Form(None, description=STRATEGY_HELP),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    data = read_upload(photo, config)
    with decoding(request, data):
        frame = identify(
            data,
            config.db,
            distance_metric=metric,
            threshold=threshold_of(threshold),
            strategy=strategy or None,
        )
    return {"faces": json.loads(frame.to_json(orient="records"))}


PAGE_HEADERS = {
    "X-Total-Count": {
        "description": "How many people pass the filters, on every page.",
        "schema": {"type": "integer"},
    },
    "Link": {
        "description": 'The next page, as <url>; rel="next" (none on the last page).',
        "schema": {"type": "string"},
    },
}


@api.get(
    "/people",
    summary="People with their counts and cover face: named (by name), then unnamed",
    description="In pages with limit and offset (no limit: everyone); X-Total-Count "
    "says how many there are and Link the next page. name: only the person so named "
    "(also one named like a fixed route, e.g. history; then use the id it gives).",
    response_model=list[PersonSummary],
    responses={200: {"headers": PAGE_HEADERS}},
)
def people_endpoint(
    request: Request,
    response: Response,
    named: bool | None = None,
    min_faces: Count = 0,
    hidden: bool = Query(False, description="true: the hidden people (only they)."),
    limit: int | None = Query(None, ge=1, le=MAX_PAGE, description="At most this many."),
    offset: Offset = 0,
    name: str | None = Query(None, max_length=500, description="Only the person so named."),
    q: str | None = Query(
        None,
        max_length=200,
        description='Only those whose label (the name, or "person <id>") contains this, '
        "in any case; labels that start with it first (a person picker's search).",
    ),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> list[dict[str, Any]]:
    page = people_page(config.db, hidden, limit, offset, named, min_faces, name, query=q)
    _page_headers(request, response, page.total, offset, limit)
    return [_summary(p, page.covers.get(p.id)) for p in page.people]


def _page_headers(
    request: Request, response: Response, total: int, offset: int, limit: int | None
) -> None:
    """X-Total-Count, and Link to the next page if there is one."""
    response.headers["X-Total-Count"] = str(total)
    if limit is not None and offset + limit < total:
        after = request.url.include_query_params(offset=offset + limit)
        response.headers["Link"] = f'<{after.path}?{after.query}>; rel="next"'


def _face_out(f: Any) -> dict[str, Any]:
    return {
        "face_id": f.face_id,
        "img_name": f.img_name,
        "face_index": f.face_index,
        "source": f.source,
        "score": f.score,
        "x": f.x,
        "y": f.y,
        "w": f.w,
        "h": f.h,
    }


def _photos_out(config: WebConfig, faces: list[Any]) -> list[dict[str, Any]]:
    photos: dict[str, list[int]] = {}
    for face in faces:
        photos.setdefault(face.img_name, []).append(face.face_id)
    return [
        {
            "img_name": img_name,
            "photo_url": photo_url(img_name)
            if servable_photo(img_name, config.photo_roots)
            else None,
            "faces": found,
        }
        for img_name, found in photos.items()
    ]


FACES_PER_PAGE = 100


@api.get(
    "/people/{person}/faces",
    summary="A person's faces, a page at a time",
    description="The person (by id, or by name) and `limit` of their faces from `offset`, "
    "by face id, with the photos they are in; total (and X-Total-Count) says how many "
    "there are, Link the next page. source: only the faces that came from folder, "
    "confirmed or suggested (suggested: least sure first).",
    response_model=PersonFacesOut,
    responses={**ERRORS, 200: {"headers": PAGE_HEADERS}},
)
def person_faces_endpoint(
    request: Request,
    response: Response,
    person: str,
    limit: int = Query(FACES_PER_PAGE, ge=1, le=MAX_PAGE, description="At most this many."),
    offset: Offset = 0,
    source: Literal["folder", "confirmed", "suggested"] | None = None,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    page = person_faces_page(config.db, person_ref(person), limit, offset, source)
    _page_headers(request, response, page.total, offset, limit)
    return {
        "person": _summary(page.person, page.cover),
        "total": page.total,
        "offset": offset,
        "limit": limit,
        "faces": [_face_out(f) for f in page.faces],
        "photos": _photos_out(config, page.faces),
    }


@api.get(
    "/people/{person}",
    summary="A person (by id, or by name) and all their faces",
    description="Every face at once: GET /api/people/{person}/faces gives them a page "
    "at a time. Digits are an id. A person named like a fixed route (history, "
    "unassigned, summary, who) or with digits for a name: GET /api/people?name=... "
    "gives their id.",
    response_model=PersonDetail,
    responses=ERRORS,
)
def person_endpoint(person: str, config: WebConfig = Depends(config_of)) -> dict[str, Any]:  # noqa: B008
    view = show(config.db, person_ref(person))
    return {
        "person": _summary(view.person, cover_of(view)),
        "photos": _photos_out(config, view.faces),
        "faces": [_face_out(f) for f in view.faces],
    }


@api.post(
    "/people/{person}/name",
    summary="Name a person (facevec people name)",
    response_model=ChangeOut,
    responses={**WRITE_ERRORS, 409: ERRORS[400]},
    dependencies=[Depends(require_token)],
)
def name_endpoint(
    person: str,
    request_body: NameRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    change = name(config.db, person_ref(person), request_body.name)
    return {"edit_id": change.edit_id, "summary": change.summary, "person_id": change.person_id}


@api.post(
    "/people/merge",
    summary="Make several people one (facevec people merge)",
    response_model=ChangeOut,
    responses={**WRITE_ERRORS, 409: ERRORS[400]},
    dependencies=[Depends(require_token)],
)
def merge_endpoint(
    request_body: MergeRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    change = merge(config.db, request_body.sources, request_body.target, request_body.force)
    return {"edit_id": change.edit_id, "summary": change.summary, "person_id": change.person_id}


def register(app: Any) -> None:
    """Add the people endpoints and pages to a facevec app."""
    limit = app.state.config.max_upload_bytes
    # The edits first: /api/people/history is the history, not a person so named.
    app.include_router(people_actions.api, prefix="/api", max_body_size=limit)
    app.include_router(api, prefix="/api", max_body_size=limit)
    app.include_router(views, max_body_size=limit)
    app.state.people = True
