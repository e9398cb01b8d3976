"""The application factory: one FastAPI app per gallery."""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from .._version import __version__
from ..errors import FacevecError, InvalidParameterError
from ..options import EmbedOptions
from ..storage.database import open_database
from . import actions, api, pages, watch_status
from .config import MAX_PIXELS, MAX_UPLOAD_BYTES, WebConfig, make_config
from .docs import add_docs
from .embed_pool import EmbedPool, pool_size
from .hosts import HostCheck
from .http_errors import body, database_errors, message_of, status_of
from .jobs import IndexJobs
from .thumbnails import ThumbnailCache
from .uploads import DeclaredSizeLimit, DecodeBudget, too_large_message
from .watch_status import WatchState

HERE = Path(__file__).parent
logger = logging.getLogger("facevec.web")

DESCRIPTION = """\
facevec's REST API: find faces of a photo (or of an embedding) in the gallery,
verify two photos, add embeddings, index a folder on the server in the background,
and read the gallery's counts and the ingest ledger's problems.

Reads are open. Writes need the server's token: `Authorization: Bearer TOKEN`.
Errors are JSON `{"error": class, "detail": message}` with the message the
command line prints.
"""

# The pages load only their own scripts and styles; the query photo is a data: URL.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)


def create_app(
    db: Any,
    token: str | None = None,
    photos: Iterable[str | os.PathLike[str]] = (),
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_pixels: int = MAX_PIXELS,
    host: str = "127.0.0.1",
    allowed_hosts: Iterable[str] = (),
    watch: bool = False,
    on_watch_status: Callable[[Any], None] | None = None,
    embed_workers: int | None = None,
    watch_options: Mapping[str, Any] | None = None,
    knn_cache_bytes: int | None = None,
) -> FastAPI:
    """The web page and REST API of the gallery `db` (a SQLite path or a URL).

    token: writes (add, index, ...) need it; none makes the server read-only.
    photos: folders whose photos the pages may show; nothing outside them is sent.
    host: the address the server listens on; with allowed_hosts, the names a
    request's Host header may give (facevec.web.hosts: DNS rebinding).
    watch: keep the gallery in step with the photo folders while the server runs
    (facevec.ingest.watch, in a background thread; on_watch_status hears of each step;
    GET /api/watch says what it does). watch_options: the Watcher's settings (model_name,
    detector_backend, workers, batch_size, settle, exact, max_pixels, min_face, ...);
    none given: the gallery's model and detector, the defaults of the rest.
    embed_workers: processes that embed uploaded photos (facevec.web.embed_pool);
    None: FACEVEC_EMBED_WORKERS, else one per core; 0: the server's own process.
    knn_cache_bytes: the process's budget of knn index chunks kept in memory
    (facevec.knn.cache_size; None: the extension's default, 1 GiB; 0: none).
    """
    config = make_config(
        db, token, photos, max_upload_bytes, max_pixels, host=host, allowed_hosts=allowed_hosts
    )
    workers = pool_size(embed_workers)
    # Refuse a missing SQLite file or an unreachable server now, not on each request.
    with open_database(config.db, create=False) as database:
        if knn_cache_bytes is not None:
            _set_knn_cache(database, knn_cache_bytes)
    pool = _embed_pool(config, workers)
    jobs = IndexJobs(config.db, config.photo_roots, None if pool is None else pool.embed)
    watch_state = None
    watcher = None
    if watch:
        watch_state = WatchState(
            list(config.photo_roots),
            dict(watch_options or {}),
            on_watch_status or (lambda status: logger.info("watch: %s", status)),
        )
        watcher = _watcher(config, watch_state.heard, watch_options or {})
        watch_state.watcher = watcher

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if pool is not None:
            pool.start()  # the workers load the model while the server starts
        thread = None
        if watcher is not None and watch_state is not None:
            watch_state.starting()
            thread = threading.Thread(
                target=_run_watcher, args=(watcher, watch_state), name="facevec-watch", daemon=True
            )
            thread.start()
        yield
        # Stopping the server stops an index job (and the watcher) as Ctrl-C would:
        # finished batches stay.
        if watcher is not None and thread is not None:
            watcher.stop()
            thread.join(60)
        jobs.shutdown()
        if pool is not None:
            pool.close()

    app = FastAPI(
        title="facevec",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # docs.add_docs serves /docs from local files
        redoc_url=None,
    )
    app.state.config = config
    app.state.jobs = jobs
    app.state.watcher = watcher
    app.state.watch_state = watch_state
    app.state.decodes = DecodeBudget.for_machine(config.max_pixels)
    app.state.embed_pool = pool
    app.state.thumbnails = ThumbnailCache()
    if pool is not None:  # an app never started (a test client) stops its workers too
        weakref.finalize(app, pool.close)
    app.state.people = False
    # FastAPI counts each route's body as it arrives (DeclaredSizeLimit, outside,
    # refuses a declared Content-Length over the limit before anything is read).
    limit = config.max_upload_bytes
    app.include_router(api.router, prefix="/api", max_body_size=limit)
    app.include_router(watch_status.router, prefix="/api")
    app.include_router(pages.router, max_body_size=limit)
    if people_installed():
        from . import people_routes

        people_routes.register(app)
    add_docs(app)  # before /static: its assets live under /docs/assets
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    _add_error_handlers(app, config)
    _add_security_headers(app)
    app.add_middleware(DeclaredSizeLimit, max_bytes=config.max_upload_bytes)
    app.add_middleware(HostCheck, allowed=config.hosts())  # outermost: before anything else
    return app


def _watcher(
    config: WebConfig, on_status: Callable[[Any], None], options: Mapping[str, Any]
) -> Any:
    """A watcher of the server's photo folders, reading only under them."""
    from ..ingest.watch import Watcher

    if not config.photo_roots:
        raise InvalidParameterError("watching needs the photo folders to watch (--photos)")
    return Watcher(
        config.photo_roots, config.db, **options, on_status=on_status, within=config.photo_roots
    )


def _run_watcher(watcher: Any, state: WatchState) -> None:
    try:
        watcher.run()
    except Exception as err:  # the server goes on serving what is stored
        state.failed(err)
        logger.error("the photo folders are no longer watched: %s", err, exc_info=err)


def _embed_pool(config: WebConfig, workers: int) -> EmbedPool | None:
    """The app's embedding processes, loading the gallery's model (none for 0 workers)."""
    if workers == 0:
        return None
    model_name, detector_backend = actions.gallery_model(config)
    return EmbedPool(workers, EmbedOptions(model_name, detector_backend))


def people_installed() -> bool:
    """Whether the people capability (facevec.people) is part of this facevec."""
    return importlib.util.find_spec("facevec.people") is not None


def _wants_page(request: Request) -> bool:
    return not request.url.path.startswith("/api") and "text/html" in request.headers.get(
        "accept", ""
    )


def _error_response(request: Request, status: int, name: str, detail: str, **kw: Any) -> Response:
    if _wants_page(request):
        return pages.render(request, "error.html", status_code=status, error=detail, **kw)
    return JSONResponse(body(name, detail), status_code=status, **kw)


def _add_error_handlers(app: FastAPI, config: WebConfig) -> None:
    @app.exception_handler(FacevecError)
    async def facevec_error(request: Request, err: FacevecError) -> Response:
        return _error_response(request, status_of(err), type(err).__name__, message_of(err))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        name, detail = "HTTPError", str(err.detail)
        if err.status_code == 413:
            detail = too_large_message(config.max_upload_bytes)
        headers = dict(err.headers or {})
        return _error_response(request, err.status_code, name, detail, headers=headers or None)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, err: RequestValidationError) -> Response:
        # One line, as the command line words a bad option: "k: Input should be ...".
        parts = []
        for problem in err.errors():
            where = ".".join(str(part) for part in problem.get("loc", ()) if part != "body")
            parts.append(f"{where}: {problem.get('msg')}" if where else str(problem.get("msg")))
        return _error_response(request, 422, "RequestValidationError", "; ".join(parts))

    @app.exception_handler(Exception)
    async def other_error(request: Request, err: Exception) -> Response:
        if isinstance(err, database_errors()):
            return _error_response(request, 500, type(err).__name__, message_of(err))
        logger.error("unexpected error on %s", request.url.path, exc_info=err)
        return _error_response(
            request, 500, "InternalError", f"internal error ({type(err).__name__}); see the log"
        )


def _add_security_headers(app: FastAPI) -> None:
    @app.middleware("http")
    async def security_headers(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if response.headers.get("content-type", "").startswith("text/html"):
            response.headers.setdefault("Content-Security-Policy", PAGE_POLICY)
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response


__all__ = ["WebConfig", "create_app"]


def _set_knn_cache(database: Any, size: int) -> None:
    """The process's chunk cache budget (shared by every connection it opens),
    where the gallery has the knn index's extension; elsewhere there is none."""
    from .. import knn

    if database.dialect.has_extension and knn.available(database.conn):
        knn.cache_size(database.conn, size)
