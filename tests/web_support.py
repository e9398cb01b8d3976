"""Helpers of the web tests: a test client, a real server on a free port, images.

Use: ``from web_support import TOKEN, client_for, live_server, png_bytes``.
"""

from __future__ import annotations

import contextlib
import io
import socket
import threading
import time
from collections.abc import Iterator

import pytest

pytest.importorskip("fastapi", reason="the web extra is not installed (pip install '.[web]')")

from fastapi.testclient import TestClient  # noqa: E402

from facevec.web import create_app  # noqa: E402

TOKEN = "correct horse battery staple"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


BASE_URL = "http://localhost"  # a name a loopback server answers to (Host checked)


def client_for(db, **options) -> TestClient:
    """A test client of a server on `db` (token TOKEN unless given), as a browser on
    this machine reaches it: http://localhost."""
    options.setdefault("token", TOKEN)
    return TestClient(create_app(db, **options), base_url=BASE_URL)


def png_bytes(width: int, height: int, color=(128, 128, 128), mode: str = "RGB") -> bytes:
    """A plain image, encoded as PNG."""
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (width, height), color if mode == "RGB" else 0).save(out, format="PNG")
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.contextmanager
def live_server(app) -> Iterator[str]:
    """Serve `app` with uvicorn in a thread on a free loopback port; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn-test", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
