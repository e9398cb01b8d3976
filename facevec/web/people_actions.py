"""The people page's actions as REST endpoints (facevec.people's edits).

Every change needs the server's token, as every write does, is recorded, and can
be undone (POST /api/people/undo). The pages call these endpoints; nothing they
do is out of a program's reach. ``people_routes.register`` includes this router
before its own, so /api/people/history and /api/people/unassigned are not read
as a person's name.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field

from ..metrics import face_metric
from ..parameters import MAX_ID
from ..people import (
    choose_cover,
    confirm,
    dismiss,
    hide,
    history,
    move,
    new_person,
    reject,
    split,
    unassigned,
    undo,
    who_are,
)
from ..people.curate import MAX_PAGE, counts, suggestions
from . import actions
from .api import ERRORS, WRITE_ERRORS, ErrorBody, JobStatus, jobs_of
from .config import WebConfig
from .jobs import IndexJobs
from .params import Offset, person_ref
from .security import config_of, require_token

api = APIRouter()

StoredId = Annotated[int, Field(ge=0, le=MAX_ID)]
Faces = Annotated[list[StoredId], Field(min_length=1, max_length=10_000)]
Name = Annotated[str, Field(max_length=500)]
EDIT_ERRORS = {**WRITE_ERRORS, 409: ERRORS[400]}


class ChangeOut(BaseModel):
    edit_id: int | None = Field(description="The recorded change (undo takes back the latest).")
    summary: str
    person_id: int | None = Field(description="The person the change leaves the faces with.")


class FacesRequest(BaseModel):
    faces: Faces = Field(description="Face ids.")


class NewPersonRequest(BaseModel):
    faces: Faces = Field(description="Face ids, wherever they are now.")
    name: Name | None = Field(None, description="The new person's name (none: unnamed).")


class SplitRequest(BaseModel):
    faces: Faces = Field(description="Faces of this person that are someone else.")
    name: Name | None = Field(None, description="The new person's name (none: unnamed).")


class MoveRequest(BaseModel):
    faces: Faces = Field(description="Faces (of anyone, or no one) that are `target`.")
    target: StoredId | Name = Field(description="A person's id or name.")
    force: bool = Field(False, description="Even if two faces of one photo meet.")


class RejectRequest(BaseModel):
    faces: Faces = Field(description="Faces that are not `person`.")
    person: StoredId | Name | None = Field(
        None, description="Who they are not (default: the person each is now)."
    )


class ConfirmRequest(BaseModel):
    faces: list[StoredId] | None = Field(
        None, max_length=10_000, description="Faces of this person (default: all)."
    )


class HideRequest(BaseModel):
    hidden: bool = Field(True, description="false shows the person again.")


class CoverRequest(BaseModel):
    face_id: StoredId = Field(description="One of the person's faces.")


class ClusterRequest(BaseModel):
    metric: str = Field("euclidean", max_length=40, description="The distance metric.")


class SuggestedFace(BaseModel):
    face_id: int
    img_name: str
    score: float | None = Field(
        description="Distance to the person's other faces (higher: less sure)."
    )


class LooseFaceOut(BaseModel):
    face_id: int
    img_name: str
    face_index: int
    x: int | None
    y: int | None
    w: int | None
    h: int | None


class Unassigned(BaseModel):
    total: int = Field(description="Faces with no person (not counting those set aside).")
    faces: list[LooseFaceOut]


class WhoOut(BaseModel):
    face_id: int
    person_id: int | None = Field(description="null: the face belongs to no one yet.")
    person: str | None = Field(description='The name, or "person <id>".')
    named: bool
    source: str | None = Field(description="folder, confirmed or suggested.")


class EditOut(BaseModel):
    id: int
    action: str
    summary: str
    created_at: str
    undone_at: str | None


def _change(change: Any) -> dict[str, Any]:
    return {"edit_id": change.edit_id, "summary": change.summary, "person_id": change.person_id}


_WRITE = {
    "response_model": ChangeOut,
    "responses": EDIT_ERRORS,
    "dependencies": [Depends(require_token)],
}


@api.get("/people/summary", summary="How far the people are: counts in one answer")
def summary_endpoint(config: WebConfig = Depends(config_of)) -> dict[str, int]:  # noqa: B008
    return counts(config.db)


@api.get(
    "/people/history",
    summary="The latest changes to people, latest first (facevec people history)",
    response_model=list[EditOut],
)
def history_endpoint(
    limit: int = Query(20, ge=1, le=MAX_PAGE),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> list[dict[str, Any]]:
    keys = ("id", "action", "summary", "created_at", "undone_at")
    return [dict(zip(keys, row, strict=True)) for row in history(config.db, limit)]


@api.get(
    "/people/unassigned",
    summary="Faces that belong to no one (clustering left them alone)",
    response_model=Unassigned,
    responses=ERRORS,
)
def unassigned_endpoint(
    limit: int = Query(100, ge=1, le=MAX_PAGE),
    offset: Offset = 0,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    total, faces = unassigned(config.db, limit, offset)
    return {"total": total, "faces": [vars(face) for face in faces]}


@api.get(
    "/people/who",
    summary="Who each of these stored faces is (a person, named or not, or no one)",
    response_model=list[WhoOut],
)
def who_endpoint(
    face: list[int] = Query(..., max_length=1000, description="Face ids (repeat: ?face=1&face=2)."),  # noqa: B008
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> list[dict[str, Any]]:
    wanted = [f for f in face if 0 <= f <= MAX_ID]
    found = who_are(config.db, wanted)
    answer = []
    for face_id in wanted:
        who = found.get(face_id)
        answer.append(
            {
                "face_id": face_id,
                "person_id": None if who is None else who.person_id,
                "person": None if who is None else who.label,
                "named": who is not None and who.name is not None,
                "source": None if who is None else who.source,
            }
        )
    return answer


@api.get(
    "/people/{person}/suggestions",
    summary="Faces given to a person that no one confirmed yet, least sure first",
    response_model=list[SuggestedFace],
    responses=ERRORS,
)
def suggestions_endpoint(
    person: str,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> list[dict[str, Any]]:
    return [
        {"face_id": f.face_id, "img_name": f.img_name, "score": f.score}
        for f in suggestions(config.db, person_ref(person))
    ]


@api.post("/people", summary="A new person of these faces (name them)", **_WRITE)
def new_person_endpoint(
    request_body: NewPersonRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(new_person(config.db, request_body.faces, request_body.name))


@api.post("/people/move", summary="These faces are that person (facevec people move)", **_WRITE)
def move_endpoint(
    request_body: MoveRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    body = request_body
    return _change(move(config.db, body.faces, body.target, body.force))


@api.post("/people/reject", summary="These faces are not that person (people reject)", **_WRITE)
def reject_endpoint(
    request_body: RejectRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(reject(config.db, request_body.faces, request_body.person))


@api.post("/people/dismiss", summary="Set faces aside: no one to name them", **_WRITE)
def dismiss_endpoint(
    request_body: FacesRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(dismiss(config.db, request_body.faces))


@api.post("/people/undo", summary="Undo the latest change to people", **_WRITE)
def undo_endpoint(config: WebConfig = Depends(config_of)) -> dict[str, Any]:  # noqa: B008
    return _change(undo(config.db))


@api.post(
    "/people/cluster",
    summary="Group the faces that have no person into people, in the background "
    "(facevec people cluster)",
    description="Starts a job, as POST /api/index does: GET /api/jobs/{id} says how many "
    "faces are compared, and once done its report (facevec.people.cluster's). One job "
    "runs at a time (409 while another runs); stopped as an index job is, it writes "
    "nothing.",
    status_code=202,
    response_model=JobStatus,
    responses={**EDIT_ERRORS, 409: {"model": ErrorBody, "description": "a job runs"}},
    dependencies=[Depends(require_token)],
)
def cluster_endpoint(
    request_body: ClusterRequest,
    response: Response,
    config: WebConfig = Depends(config_of),  # noqa: B008
    jobs: IndexJobs = Depends(jobs_of),  # noqa: B008
) -> dict[str, Any]:
    face_metric(request_body.metric)  # a wrong metric is a 400 now, not a failed job
    actions.gallery_model(config)  # a gallery that is not there: now too
    job = jobs.start_cluster(distance_metric=request_body.metric)
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job.as_dict()


@api.post("/people/{person}/split", summary="Some faces of a person are a new person", **_WRITE)
def split_endpoint(
    person: str,
    request_body: SplitRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(split(config.db, person_ref(person), request_body.faces, request_body.name))


@api.post(
    "/people/{person}/confirm", summary="Yes, these faces are this person (confirmed)", **_WRITE
)
def confirm_endpoint(
    person: str,
    request_body: ConfirmRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(confirm(config.db, person_ref(person), request_body.faces))


@api.post("/people/{person}/hide", summary="Keep a person out of the way (or show them)", **_WRITE)
def hide_endpoint(
    person: str,
    request_body: HideRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(hide(config.db, person_ref(person), request_body.hidden))


@api.post("/people/{person}/cover", summary="The face that stands for a person", **_WRITE)
def cover_endpoint(
    person: str,
    request_body: CoverRequest,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return _change(choose_cover(config.db, person_ref(person), request_body.face_id))
