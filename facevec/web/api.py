"""The REST API under /api: JSON in and out, mirroring the Python API.

Reads are open; writes (add, index, cancelling a job) need the server's token.
Blocking routes are plain ``def``: FastAPI runs them in its thread pool.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Depends, File, Form, Query, Request, Response, UploadFile
from fastapi.responses import RedirectResponse
from pydantic import BaseModel, Field

from ..metrics import FACE_METRICS
from ..parameters import MAX_ID
from ..search import STRATEGIES
from . import actions
from .config import WebConfig
from .jobs import IndexJobs
from .params import MAX_WORKERS, FaceId, Offset, threshold_form, threshold_of
from .photos import folder_to_index, servable_photo
from .security import config_of, require_token
from .thumbnails import Region
from .thumbnails import etag as thumbnail_etag
from .thumbnails import render as render_thumbnail
from .uploads import check_photo, decoding

router = APIRouter()

SEARCH_K = 5  # matches per face of POST /api/search, as the search page shows
# A face thumbnail's side: sharp at the pages' 72-112 CSS pixels on 1.5x screens.
THUMBNAIL_SIZE = 160
PHOTO_THUMBNAIL_SIZE = 480
# A face id names one face of one photo file (ids are never reused; the ETag changes
# with the file): a browser may keep a thumbnail for a day, then asks with If-None-Match.
THUMBNAIL_CACHING = "max-age=86400"

METRIC_HELP = f"Distance metric: {', '.join(FACE_METRICS)}."
STRATEGY_HELP = (
    f"Where distances are computed: {', '.join(STRATEGIES)} "
    "(default: chosen by the gallery's indexes and the number of queries; "
    "GET /api/info says which and why)."
)


# Schemas ------------------------------------------------------------------------


class ErrorBody(BaseModel):
    error: str = Field(description="The facevec error class (or HTTP error).")
    detail: str = Field(description="The message the command line prints.")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": what}
    for status, what in (
        (400, "a parameter facevec refuses (k, threshold, metric, strategy, vector)"),
        (404, "no such face, job or gallery"),
        (413, "the upload is over the byte or pixel limit"),
        (422, "not an image, no face found, or a vector of another model"),
    )
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    **ERRORS,
    401: {"model": ErrorBody, "description": "no token, or a wrong one"},
    403: {"model": ErrorBody, "description": "a read-only server, or a path outside its photos"},
}


class Box(BaseModel):
    x: int | None
    y: int | None
    w: int | None
    h: int | None


class Match(BaseModel):
    """A stored face near a query face: one row of facevec.find's DataFrame."""

    img_name: str
    identity: str | None
    face_index: int
    face_id: int
    target_x: int | None
    target_y: int | None
    target_w: int | None
    target_h: int | None
    source_x: int | None
    source_y: int | None
    source_w: int | None
    source_h: int | None
    threshold: float | None = Field(description="null: no limit (threshold inf).")
    distance: float
    verified: bool


class SkippedFace(BaseModel):
    """A stored face the search left out: its distance is undefined (a bad stored row)."""

    face_id: int
    img_name: str | None
    face_index: int | None
    reason: str = Field(description='Why, e.g. "is 12 bytes, not 128 float32 values".')


class QueryFace(BaseModel):
    source: Box = Field(description="Where the face is in the query photo (null for a vector).")
    matches: list[Match] = Field(description="Nearest first.")
    skipped: list[SkippedFace] = Field(
        default_factory=list,
        description="Stored faces left out of this search, and why (the Python API's "
        'frame.attrs["skipped"]); empty for a sound gallery.',
    )


class FindResult(BaseModel):
    faces: list[QueryFace] = Field(description="One entry per face of the query photo.")


class Identified(BaseModel):
    """Who a face of the query photo is, as facevec.identify decides."""

    decision: str = Field(description="matched, ambiguous or unknown")
    person_id: int | None = Field(description="null when unknown.")
    person: str | None
    second: str | None = Field(description="The runner-up person (ambiguous).")


class SearchMatch(Match):
    person_id: int | None = Field(None, description="The stored face's person (null: no one).")
    person: str | None = Field(None, description='Their name, or "person <id>".')


class SearchFace(QueryFace):
    matches: list[SearchMatch] = Field(description="Nearest first.")  # type: ignore[assignment]
    identified: Identified | None = Field(
        None, description="Who the face is (with the people capability, once people exist)."
    )


class SearchResult(BaseModel):
    faces: list[SearchFace] = Field(description="One entry per face of the query photo.")


class VectorQuery(BaseModel):
    vector: list[float] = Field(description="An embedding of the gallery's model.")
    k: int | None = Field(None, description="At most k matches (any size: all).")
    threshold: float | Literal["calibrated"] | None = Field(
        None,
        description="Override deepface's threshold: a number from 0 (1e999: no limit), "
        "or 'calibrated' (the gallery's own).",
    )
    metric: str = Field("euclidean", description=METRIC_HELP)
    strategy: str | None = Field(None, description=STRATEGY_HELP)
    similarity_search: bool = Field(False, description="Rank every face (use with k).")


class Verification(BaseModel):
    """What facevec.verify returns (as DeepFace.verify)."""

    verified: bool
    distance: float
    threshold: float | None = Field(description="null: no limit (threshold inf).")
    model: str
    detector_backend: str
    distance_metric: str
    similarity_metric: str
    facial_areas: dict[str, dict[str, Any]]
    time: float


class AddRequest(BaseModel):
    img_names: list[str] = Field(description="One name per embedding; repeats are faces 0, 1, ...")
    embeddings: list[list[float]]
    model_name: str | None = Field(None, description="Default: the gallery's model.")
    identities: list[str | None] | None = None


class Added(BaseModel):
    added: int


class IndexRequest(BaseModel):
    folder: str = Field(description="An absolute path under one of the server's --photos.")
    prune: bool = Field(False, description="Drop faces of photos deleted from the folder.")
    model_name: str | None = Field(None, description="Default: the gallery's model, else Dlib.")
    detector_backend: str | None = Field(None, description="Default: the gallery's detector.")
    batch_size: int = Field(16, ge=1, le=MAX_ID, description="Photos per committed batch.")
    workers: int = Field(
        1,
        ge=1,
        le=MAX_WORKERS,
        description="Processes that embed photos (1: the server's own, beside searches; "
        "at most the server's cores).",
    )
    people_from_folders: bool = Field(
        False,
        description="Each subfolder becomes a person (a gallery that has folder people "
        "keeps making them); else a folder is only the identity column.",
    )


class JobStatus(BaseModel):
    id: str
    kind: str = Field("index", description="index (a folder) or cluster (POST /api/people/cluster)")
    folder: str | None = Field(description="The folder indexed (null: a clustering run).")
    state: str = Field(description="queued, running, done, failed or cancelled")
    done: int = Field(description="Files looked at so far (cluster: faces compared).")
    total: int | None = Field(
        description="Files in the folder, once counted (cluster: faces with no person)."
    )
    started_at: float
    finished_at: float | None
    report: dict[str, Any] | None = Field(
        description="facevec.index's (or facevec.people.cluster's) report once finished."
    )
    error: str | None
    options: dict[str, Any]


class Problem(BaseModel):
    path: str
    outcome: str = Field(description="no_face, not_image or error")
    message: str | None
    size_bytes: int | None
    updated_at: str


class Problems(BaseModel):
    total: int
    files: list[Problem]


# Reading ------------------------------------------------------------------------


@router.get("/info", summary="Model, counts and ingest outcomes (facevec info)")
def info_endpoint(config: WebConfig = Depends(config_of)) -> dict[str, Any]:  # noqa: B008
    return actions.gallery_info(config)


@router.get(
    "/ledger/problems",
    summary="Files the ingest did not index, and why",
    response_model=Problems,
)
def problems_endpoint(
    limit: int = Query(100, ge=1, le=actions.MAX_PAGE),
    offset: Offset = 0,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    return actions.ledger_problems(config, limit, offset)


def read_upload(upload: UploadFile, config: WebConfig) -> bytes:
    data = upload.file.read()
    check_photo(data, upload.filename or "the upload", config.max_pixels)
    return data


@router.post(
    "/find",
    summary="Find each face of an uploaded photo in the gallery (facevec find)",
    response_model=FindResult,
    responses=ERRORS,
)
def find_photo_endpoint(
    request: Request,
    photo: UploadFile = File(..., description="The query photo (JPEG, PNG, WebP, ...)."),  # noqa: B008
    k: int | None = Form(None, description="At most k matches per face (any size: all)."),
    threshold: str | None = threshold_form(),
    metric: str = Form("euclidean", description=METRIC_HELP),
    strategy: str | None = Form(None, description=STRATEGY_HELP),
    similarity_search: bool = Form(False, description="Rank every face (use with k)."),
    model_name: str | None = Form(None, description="Default: the gallery's model."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    data = read_upload(photo, config)
    options = actions.FindOptions(
        k, threshold_of(threshold), metric, strategy or None, similarity_search, model_name or None
    )
    with decoding(request, data):
        return actions.find_photo(config, data, options)


@router.post(
    "/search",
    summary="What the search page shows: each face's nearest stored faces and who it is",
    description="find and identify on one upload, embedded once: each face of the photo "
    "with its matches (and whose each match is), and, with the people capability, who "
    "the face is (identify's decision).",
    response_model=SearchResult,
    responses=ERRORS,
)
def search_endpoint(
    request: Request,
    photo: UploadFile = File(..., description="The query photo (JPEG, PNG, WebP, ...)."),  # noqa: B008
    k: int | None = Form(
        SEARCH_K, description="At most k matches per face (as the page; empty: all)."
    ),
    metric: str = Form("euclidean", description=METRIC_HELP),
    strategy: str | None = Form(None, description=STRATEGY_HELP),
    similarity_search: bool = Form(
        True,
        description="true (as the page): the k nearest, each with its verdict; "
        "false: only the matches within the threshold.",
    ),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    data = read_upload(photo, config)
    options = actions.FindOptions(
        k, metric=metric, strategy=strategy or None, similarity_search=similarity_search
    )
    with decoding(request, data):
        return search_photo(request, config, data, options)


def search_photo(
    request: Request, config: WebConfig, data: bytes, options: actions.FindOptions
) -> dict[str, Any]:
    """find on a photo and, with the people capability, identify on the same faces:
    the photo is embedded once (identify takes find's faces from the embedding cache,
    facevec.engine.embed)."""
    result = actions.find_photo(config, data, options)
    if getattr(request.app.state, "people", False):
        from .people_search import who_in_search

        who_in_search(config, data, result, options.metric, options.strategy)
    return result


@router.post(
    "/find/vector",
    summary="Find the faces nearest to an embedding",
    response_model=FindResult,
    responses=ERRORS,
)
def find_vector_endpoint(
    query: VectorQuery,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    options = actions.FindOptions(
        query.k, query.threshold, query.metric, query.strategy, query.similarity_search
    )
    return actions.find_vector(config, query.vector, options)


@router.post(
    "/verify",
    summary="Do two photos show the same person? (facevec verify)",
    response_model=Verification,
    responses=ERRORS,
)
def verify_endpoint(
    request: Request,
    photo1: UploadFile = File(...),  # noqa: B008
    photo2: UploadFile = File(...),  # noqa: B008
    metric: str = Form("euclidean", description=METRIC_HELP),
    threshold: str | None = threshold_form(
        "Override deepface's threshold: a number from 0 (inf: always the same person)."
    ),
    model_name: str | None = Form(None, description="Default: the gallery's model."),
    detector_backend: str | None = Form(None, description="Default: the gallery's detector."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    first = read_upload(photo1, config)
    second = read_upload(photo2, config)
    with decoding(request, first, second):
        return actions.verify_photos(
            config,
            first,
            second,
            metric,
            threshold_of(threshold),
            model_name or None,
            detector_backend or None,
        )


@router.get("/faces/{face_id}", summary="Where a stored face is", responses=ERRORS)
def face_endpoint(
    face_id: FaceId,
    request: Request,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> dict[str, Any]:
    found = actions.face_location(config, face_id)
    served = servable_photo(found.img_name, config.photo_roots) is not None
    return {
        "face_id": found.face_id,
        "img_name": found.img_name,
        "identity": found.identity,
        "face_index": found.face_index,
        "box": {"x": found.x, "y": found.y, "w": found.w, "h": found.h},
        "crop_url": f"/api/faces/{face_id}/crop.png",
        "thumbnail_url": face_thumbnail_url(face_id),
        "photo_url": photo_url(found.img_name) if served else None,
    }


@router.get(
    "/faces/{face_id}/crop.png",
    summary="A stored face as the model saw it (PNG)",
    response_class=Response,
    responses={200: {"content": {"image/png": {}}}, 404: ERRORS[404]},
)
def crop_endpoint(
    face_id: FaceId,
    placeholder: bool = Query(
        False,
        description="For a face stored without a crop (added as a vector): a placeholder "
        "image instead of 404 (the pages ask so: never a broken image).",
    ),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> Response:
    try:
        png = actions.face_crop(config, face_id)
    except actions.NotStoredError:
        if placeholder and actions.face_stored(config, face_id):
            return RedirectResponse(NO_CROP, status_code=307)
        raise
    # A face id names one crop until the face is re-indexed: cache briefly.
    return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=300"})


NO_CROP = "/static/no-crop.svg"  # a face stored without a crop, on the pages

IMAGE_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"content": {"image/jpeg": {}}},
    304: {"description": "the thumbnail named by If-None-Match is current"},
    307: {"description": "the photo cannot be shown: the face's stored crop instead"},
    404: ERRORS[404],
}


@router.get(
    "/faces/{face_id}/thumbnail.jpg",
    summary="A stored face cut from its photo and scaled down on the server (JPEG)",
    description="The face's box with a margin, square, at most `size` pixels a side. "
    "A face whose photo this server does not show (outside --photos, moved, a format "
    "Pillow cannot read) redirects to its stored crop (a placeholder if none). "
    "Cached: ETag and Cache-Control; If-None-Match gives 304.",
    response_class=Response,
    responses=IMAGE_ANSWERS,
)
def face_thumbnail_endpoint(
    face_id: FaceId,
    request: Request,
    size: int = Query(THUMBNAIL_SIZE, ge=16, le=1024, description="Pixels a side."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> Response:
    found = actions.face_location(config, face_id)  # 404 for a face not stored
    real = servable_photo(found.img_name, config.photo_roots)
    box = (found.x, found.y, found.w, found.h)
    if real is None or None in box or not found.w or not found.h:
        return RedirectResponse(f"/api/faces/{face_id}/crop.png?placeholder=true", 307)
    answer = _thumbnail(request, config, Region(real, box, size))  # type: ignore[arg-type]
    if answer is None:
        return RedirectResponse(f"/api/faces/{face_id}/crop.png?placeholder=true", 307)
    return answer


@router.get(
    "/faces/{face_id}/photo.jpg",
    summary="The photo of a stored face, scaled down on the server (JPEG)",
    description="At most `size` pixels on its longest side; 404 if this server does "
    "not show the photo. Cached as the face thumbnail is.",
    response_class=Response,
    responses=IMAGE_ANSWERS,
)
def photo_thumbnail_endpoint(
    face_id: FaceId,
    request: Request,
    size: int = Query(PHOTO_THUMBNAIL_SIZE, ge=16, le=2048, description="Longest side."),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> Response:
    found = actions.face_location(config, face_id)
    real = servable_photo(found.img_name, config.photo_roots)
    answer = None if real is None else _thumbnail(request, config, Region(real, None, size))
    if answer is None:
        raise actions.NotStoredError(f"this server shows no photo of face {face_id}")
    return answer


def _thumbnail(request: Request, config: WebConfig, region: Region) -> Response | None:
    tag = thumbnail_etag(region)
    if tag is None:
        return None
    headers = {"ETag": tag, "Cache-Control": THUMBNAIL_CACHING}
    if tag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    cache = request.app.state.thumbnails
    data = cache.get(tag)
    if data is None:
        data = render_thumbnail(region, config.max_pixels, request.app.state.decodes.hold)
        if data is None:
            return None
        cache.put(tag, data)
    return Response(data, media_type="image/jpeg", headers=headers)


def face_thumbnail_url(face_id: int | None, size: int = THUMBNAIL_SIZE) -> str | None:
    """Where the pages load a face's picture from."""
    if face_id is None:
        return None
    return f"/api/faces/{face_id}/thumbnail.jpg" + (
        "" if size == THUMBNAIL_SIZE else f"?size={size}"
    )


def photo_url(img_name: str) -> str:
    from urllib.parse import quote

    return "/photos" + quote(img_name)


# Writing ------------------------------------------------------------------------


@router.post(
    "/add",
    summary="Store precomputed embeddings (facevec.add)",
    response_model=Added,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_token)],
)
def add_endpoint(request_body: AddRequest, config: WebConfig = Depends(config_of)) -> Added:  # noqa: B008
    added = actions.add_vectors(
        config,
        request_body.img_names,
        request_body.embeddings,
        request_body.model_name,
        request_body.identities,
    )
    return Added(added=added)


def jobs_of(request: Request) -> IndexJobs:
    return request.app.state.jobs


@router.post(
    "/index",
    summary="Index a folder on the server, in the background (facevec index)",
    status_code=202,
    response_model=JobStatus,
    responses={**WRITE_ERRORS, 409: {"model": ErrorBody, "description": "a job runs"}},
    dependencies=[Depends(require_token)],
)
def index_endpoint(
    request_body: IndexRequest,
    response: Response,
    config: WebConfig = Depends(config_of),  # noqa: B008
    jobs: IndexJobs = Depends(jobs_of),  # noqa: B008
) -> dict[str, Any]:
    folder = folder_to_index(request_body.folder, config.photo_roots)
    stored_model, stored_detector = actions.gallery_model(config)
    job = jobs.start(
        folder,
        model_name=request_body.model_name or stored_model,
        detector_backend=request_body.detector_backend or stored_detector,
        prune=request_body.prune,
        batch_size=request_body.batch_size,
        workers=request_body.workers,
        people_from_folders=request_body.people_from_folders,
    )
    response.headers["Location"] = f"/api/jobs/{job.id}"
    return job.as_dict()


@router.get(
    "/jobs", summary="Index and clustering jobs, newest first", response_model=list[JobStatus]
)
def jobs_endpoint(jobs: IndexJobs = Depends(jobs_of)) -> list[dict[str, Any]]:  # noqa: B008
    return [job.as_dict() for job in jobs.all()]


@router.get(
    "/jobs/{job_id}", summary="A job's progress", response_model=JobStatus, responses=ERRORS
)
def job_endpoint(job_id: str, jobs: IndexJobs = Depends(jobs_of)) -> dict[str, Any]:  # noqa: B008
    return _job(jobs, job_id).as_dict()


@router.delete(
    "/jobs/{job_id}",
    summary="Stop a job (an index run keeps its finished batches; clustering writes nothing)",
    response_model=JobStatus,
    responses=WRITE_ERRORS,
    dependencies=[Depends(require_token)],
)
def cancel_endpoint(job_id: str, jobs: IndexJobs = Depends(jobs_of)) -> dict[str, Any]:  # noqa: B008
    _job(jobs, job_id)
    job = jobs.cancel(job_id)
    assert job is not None
    return job.as_dict()


def _job(jobs: IndexJobs, job_id: str) -> Any:
    job = jobs.get(job_id)
    if job is None:
        raise actions.NotStoredError(f"no job {job_id!r} on this server")
    return job
