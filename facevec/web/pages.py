"""The HTML pages: search by photo, the gallery, a face, the server's status.

Pages are rendered on the server (Jinja2); the JavaScript in static/app.js only
adds drag and drop, the editing token and the progress of an index job.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, File, Form, Request, UploadFile
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.exceptions import HTTPException

from ..errors import FacevecError, InvalidParameterError
from ..metrics import FACE_METRICS
from ..search import STRATEGIES
from . import actions
from .api import photo_url, search_photo
from .config import WebConfig
from .http_errors import database_errors, message_of, status_of
from .params import FaceId, PageNumber
from .photos import servable_photo
from .security import config_of
from .uploads import check_photo, decoding, photo_size, thumbnail_data_url
from .watch_status import watch_state_of

router = APIRouter(include_in_schema=False)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

DEFAULT_K = 5


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    config: WebConfig = request.app.state.config
    context.setdefault("error", None)
    running = [job for job in request.app.state.jobs.all() if job.active]
    context.update(
        running_job=running[0].id if running else "",
        writable=config.writable,
        people_pages=getattr(request.app.state, "people", False),
        metrics=FACE_METRICS,
        strategies=STRATEGIES,
    )
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def served_url(config: WebConfig, img_name: str) -> str | None:
    return photo_url(img_name) if servable_photo(img_name, config.photo_roots) else None


@router.get("/", response_class=HTMLResponse)
def search_page(request: Request, config: WebConfig = Depends(config_of)) -> HTMLResponse:  # noqa: B008
    return render(request, "search.html", info=actions.gallery_info(config), form=_form())


def _form(**given: Any) -> dict[str, Any]:
    form = {"k": DEFAULT_K, "metric": "euclidean", "strategy": "", "within": False}
    form.update({key: value for key, value in given.items() if value is not None})
    return form


@router.post("/search", response_class=HTMLResponse)
def search_results(
    request: Request,
    photo: UploadFile = File(...),  # noqa: B008
    k: str = Form(str(DEFAULT_K)),
    metric: str = Form("euclidean"),
    strategy: str = Form(""),
    within: bool = Form(False),
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """The query photo with its faces boxed, each face with its nearest stored faces."""
    form = _form(k=k, metric=metric, strategy=strategy, within=within)
    name = photo.filename or "the upload"
    try:
        try:
            wanted = int(k) if k.strip() else None
        except ValueError:
            raise InvalidParameterError(f"k must be a whole number, not {k!r}") from None
        data = photo.file.read()
        check_photo(data, name, config.max_pixels)
        # Without "only matches", the k nearest with their verdicts: a face that
        # matches nobody still shows who comes closest.
        options = actions.FindOptions(
            k=wanted, metric=metric, strategy=strategy or None, similarity_search=not within
        )
        with decoding(request, data):
            result = search_photo(request, config, data, options)
            picture = thumbnail_data_url(data)
    except (FacevecError, *database_errors()) as err:
        return render(
            request,
            "search.html",
            status_code=status_of(err),
            info=None,
            form=form,
            error=message_of(err),
            upload_name=name,
        )
    for number, face in enumerate(result["faces"], 1):
        face["number"] = number
        for match in face["matches"]:
            match["photo_url"] = served_url(config, match["img_name"])
    return render(
        request,
        "search.html",
        info=None,
        form=form,
        result=result,
        picture=picture,
        upload_name=name,
    )


@router.get("/gallery", response_class=HTMLResponse)
def gallery_page(
    request: Request,
    page: PageNumber = 1,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """The gallery's identities, most faces first, with a few crops each."""
    per_page = 60
    total, groups = actions.identity_groups(config, limit=per_page, offset=(page - 1) * per_page)
    return render(
        request,
        "gallery.html",
        groups=groups,
        total=total,
        page=page,
        pages=max(1, -(-total // per_page)),
        info=actions.gallery_info(config),
    )


@router.get("/identity", response_class=HTMLResponse)
def identity_page(
    request: Request,
    name: str | None = None,
    page: PageNumber = 1,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """Every face of one identity (no name: the faces without one), photo by photo."""
    per_page = 200
    found = actions.identity_faces(
        config, name or None, limit=per_page + 1, offset=(page - 1) * per_page
    )
    if not found and page == 1:
        raise HTTPException(404, f"the gallery holds no face of identity {name!r}")
    photos: dict[str, list[Any]] = {}
    for face in found[:per_page]:
        photos.setdefault(face.img_name, []).append(face)
    return render(
        request,
        "identity.html",
        identity=name or None,
        photos=[
            {"img_name": img_name, "faces": faces, "url": served_url(config, img_name)}
            for img_name, faces in photos.items()
        ],
        page=page,
        more=len(found) > per_page,
    )


@router.get("/face/{face_id}", response_class=HTMLResponse)
def face_page(
    request: Request,
    face_id: FaceId,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """A stored face: its crop, and its photo with the face boxed (if served)."""
    face = actions.face_location(config, face_id)
    real = servable_photo(face.img_name, config.photo_roots)
    url = None if real is None else photo_url(face.img_name)
    size = None if real is None else photo_size(real)
    who = None
    if getattr(request.app.state, "people", False):
        from ..people import who_are

        who = who_are(config.db, [face_id]).get(face_id)
    return render(request, "face.html", face=face, photo_url=url, size=size, who=who)


@router.get("/status", response_class=HTMLResponse)
def status_page(
    request: Request,
    page: PageNumber = 1,
    config: WebConfig = Depends(config_of),  # noqa: B008
) -> HTMLResponse:
    """The gallery's info, the files the ingest could not index, index jobs, and
    what the watcher of the photo folders does (serve --watch)."""
    per_page = 100
    problems = actions.ledger_problems(config, per_page, (page - 1) * per_page)
    people = None
    if getattr(request.app.state, "people", False) and actions.gallery_info(config).get("faces"):
        from ..people.curate import counts

        people = counts(config.db)
    return render(
        request,
        "status.html",
        info=actions.gallery_info(config),
        problems=problems,
        page=page,
        pages=max(1, -(-problems["total"] // per_page)),
        jobs=[job.as_dict() for job in request.app.state.jobs.all()],
        roots=config.photo_roots,
        people=people,
        watch=watch_state_of(request),
    )


@router.get("/photos/{path:path}")
def photo_file(path: str, config: WebConfig = Depends(config_of)) -> Response:  # noqa: B008
    """A photo of the gallery, by its img_name, if it lies under a --photos folder."""
    real = servable_photo("/" + path.lstrip("/"), config.photo_roots)
    if real is None:
        # The same answer whether the file is missing or forbidden: nothing to probe.
        raise HTTPException(404, "no such photo on this server")
    return FileResponse(real, headers={"Cache-Control": "max-age=300"})
