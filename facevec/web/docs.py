"""/docs: the API's Swagger UI, from files this server ships (no CDN).

FastAPI's own /docs loads Swagger UI's script from a CDN, on the origin that holds
the editing token: whoever serves that script could read the token. Here the page
loads Swagger UI's files from the fastapi-offline package and starts it from a file
of ours, so it runs under a policy that allows scripts from this server only.
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = Path(fastapi_offline.__file__).parent / "static"
ASSETS_URL = "/docs/assets"

# Swagger UI sets inline styles on its elements; everything else is this server's.
DOCS_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
    "script-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/docs", response_class=HTMLResponse)
def docs_page(request: Request) -> HTMLResponse:
    from .pages import templates

    response = templates.TemplateResponse(
        request, "docs.html", {"assets": ASSETS_URL, "openapi_url": request.app.openapi_url}
    )
    response.headers["Content-Security-Policy"] = DOCS_POLICY
    return response


def add_docs(app: FastAPI) -> None:
    """Serve /docs and its assets (the app is made with docs_url=None, redoc_url=None)."""
    app.mount(ASSETS_URL, StaticFiles(directory=ASSETS), name="docs-assets")
    app.include_router(router)
