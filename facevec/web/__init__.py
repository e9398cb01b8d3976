"""facevec's web page and REST API (``facevec serve``, the extra ``[web]``).

``create_app(db, token=..., photos=[...])`` returns a FastAPI application: JSON
endpoints under ``/api`` (described at ``/openapi.json`` and ``/docs``) and HTML
pages that search by photo, browse the gallery and show what the ingest ledger says.
It answers requests whose Host header names it: served elsewhere than on
127.0.0.1, give ``host=`` (the address it listens on) and ``allowed_hosts=``.

Like the command line, it is a top layer: it calls the use cases and the
storage layer, and nothing but the command line imports it.
"""

from .app import create_app
from .config import WebConfig

__all__ = ["WebConfig", "create_app"]
