"""People on the web: identify, list, show, name and merge (facevec.people).

``create_app`` registers these routes when the people capability
(``facevec.people``) is installed, and only then: ``register(app)`` adds the JSON
endpoints under /api and the pages /people and /people/{id}. Naming and merging
need the server's token, as every write does.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, Field

from ..people import identify, list_people, merge, name, show
from . import pages
from .api import ERRORS, METRIC_HELP, STRATEGY_HELP, WRITE_ERRORS, read_upload
from .config import WebConfig
from .params import PageNumber, PersonId, threshold_form, threshold_of
from .security import config_of, require_token
from .uploads import decoding

api = APIRouter()
views = APIRouter(include_in_schema=False)


class PersonSummary(BaseModel):
    id: int
    name: str | None
    label: str = Field(description='The name, or "person <id>".')
    faces: int
    photos: int
    confirmed: int
    folder: int
    suggested: int


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


class PersonDetail(BaseModel):
    person: PersonSummary
    faces: list[PersonFaceOut]


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


def _summary(person: Any) -> dict[str, Any]:
    return {
        "id": person.id,
        "name": person.name,
        "label": person.label,
        "faces": person.faces,
        "photos": person.photos,
        "confirmed": person.confirmed,
        "folder": person.folder,
        "suggested": person.suggested,
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


@api.get("/people", summary="Every person with their counts", response_model=list[PersonSummary])
def people_endpoint(
    named: bool | None = None,
    min_faces: int = 0,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> list[dict[str, Any]]:
    return [_summary(p) for p in list_people(config.db, named=named, min_faces=min_faces)]


@api.get(
    "/people/{person}",
    summary="A person (by id or name) and their faces",
    response_model=PersonDetail,
    responses=ERRORS,
)
def person_endpoint(person: str, config: WebConfig = Depends(config_of)) -> dict[str, Any]:  # noqa: B008
    view = show(config.db, person)
    return {
        "person": _summary(view.person),
        "faces": [
            {
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
            for f in view.faces
        ],
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
    change = name(config.db, person, request_body.name)
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


@views.get("/people", response_class=HTMLResponse)
def people_page(
    request: Request,
    page: PageNumber = 1,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """Everyone, most faces first, with a few crops each."""
    per_page = 60
    everyone = sorted(list_people(config.db), key=lambda p: (-p.faces, p.id))
    shown = everyone[(page - 1) * per_page : page * per_page]
    samples = {p.id: show(config.db, p.id).faces[:6] for p in shown}
    return pages.render(
        request,
        "people.html",
        persons=shown,
        everyone=everyone,
        samples=samples,
        page=page,
        pages=max(1, -(-len(everyone) // per_page)),
    )


@views.get("/people/{person_id}", response_class=HTMLResponse)
def person_page(
    request: Request,
    person_id: PersonId,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """All faces of a person, with forms to name them and to merge another into them."""
    view = show(config.db, person_id)
    others = [p for p in list_people(config.db) if p.id != person_id]
    photos: dict[str, list[Any]] = {}
    for face in view.faces:
        photos.setdefault(face.img_name, []).append(face)
    return pages.render(
        request,
        "person.html",
        person=view.person,
        others=others,
        photos=[
            {"img_name": img_name, "faces": faces, "url": pages.served_url(config, img_name)}
            for img_name, faces in photos.items()
        ],
    )


def register(app: Any) -> None:
    """Add the people endpoints and pages to a facevec app."""
    limit = app.state.config.max_upload_bytes
    app.include_router(api, prefix="/api", max_body_size=limit)
    app.include_router(views, max_body_size=limit)
    app.state.people = True
