"""facevec serve: starts a server on loopback, takes its token from the environment,
refuses what it cannot serve, and keeps the command line free of the web stack."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
from click.testing import CliRunner
from web_support import free_port

import facevec
from facevec.cli import cli


def _request(url: str, data: dict | None = None, token: str | None = None):
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    body = None if data is None else json.dumps(data).encode()
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_serve_runs_a_server_on_loopback_with_the_token_from_the_environment(tmp_path):
    db = tmp_path / "faces.db"
    vectors = np.random.default_rng(3).normal(size=(2, 128)).astype(np.float32)
    facevec.add(db, ["a.jpg", "b.jpg"], vectors)
    port = free_port()
    env = dict(
        os.environ,
        FACEVEC_TOKEN="from-the-environment",
        FACEVEC_ALLOWED_HOSTS="photos.example.org *.lan",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, info = _request(base + "/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert status == 200 and info["faces"] == 2
        found = _request(base + "/api/find/vector", {"vector": vectors[1].tolist(), "k": 1})
        assert found[1]["faces"][0]["matches"][0]["img_name"] == "b.jpg"
        extra = {"img_names": ["c.jpg"], "embeddings": [[0.25] * 128]}
        assert _request(base + "/api/add", extra)[0] == 401
        assert _request(base + "/api/add", extra, token="from-the-environment") == (
            200,
            {"added": 1},
        )
        # The names it answers to: its own, and those of FACEVEC_ALLOWED_HOSTS.
        for host, status in (
            ("photos.example.org", 200),
            (f"nas.lan:{port}", 200),
            (f"localhost:{port}", 200),
            (f"evil.example:{port}", 400),
        ):
            assert _status_with_host(port, host) == status, host
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert server.returncode == 0, output
    assert f"facevec serving {db} on http://127.0.0.1:{port}/ (changes need the token)" in output
    assert facevec.info(db)["faces"] == 3


def _status_with_host(port: int, host: str) -> int:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.putrequest("GET", "/api/info", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        return conn.getresponse().status
    finally:
        conn.close()


def test_serve_refuses_limits_that_are_not_finite_in_one_line(tmp_path):
    db = tmp_path / "faces.db"
    facevec.add(db, ["a.jpg"], np.ones((1, 128), dtype=np.float32))
    for value in ("nan", "inf", "-inf", "0", "1e400"):
        result = CliRunner().invoke(cli, ["serve", "--db", str(db), "--max-upload-mb", value])
        assert result.exit_code == 2, (value, result.output)
        assert "Invalid value for '--max-upload-mb'" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
    bad = CliRunner().invoke(cli, ["serve", "--db", str(db), "--allowed-host", "http://x"])
    assert bad.exit_code == 1
    assert bad.output.strip().splitlines()[-1] == (
        "Error: allowed host 'http://x' is not a host name, an address, *.DOMAIN or *"
    )


def test_serve_refuses_a_missing_database_in_one_line(tmp_path):
    missing = tmp_path / "nothing.db"
    result = CliRunner().invoke(cli, ["serve", "--db", str(missing)])
    assert result.exit_code == 1
    assert result.output == (
        f"Error: no database at {missing}; create one with: facevec index DIR --db {missing}\n"
    )
    assert not missing.exists()


def test_serve_with_photos_starts_a_new_gallery_that_the_page_indexes(tmp_path, photos):
    import shutil

    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(photos("img12.jpg"), folder / "img12.jpg")
    db = tmp_path / "new.db"
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port),
         "--photos", str(folder), "--token", "t", "--embed-workers", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, info = _request(base + "/api/info")
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, server.stdout.read()
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.2)
        assert status == 200 and (info["faces"], info["model_name"]) == (0, None)
        status, job = _request(base + "/api/index", {"folder": str(folder)}, token="t")
        assert status == 202, job
        deadline = time.monotonic() + 300
        while job["state"] not in ("done", "failed", "cancelled"):
            assert time.monotonic() < deadline, job
            time.sleep(0.5)
            job = _request(f"{base}/api/jobs/{job['id']}")[1]
        assert job["state"] == "done", job
        assert _request(base + "/api/info")[1]["faces"] == 1
    finally:
        server.send_signal(signal.SIGINT)
        output, _ = server.communicate(timeout=60)
    assert f"created an empty gallery at {db}" in output
    assert facevec.info(db)["model_name"] == "Dlib"


def test_the_command_line_does_not_load_the_web_stack():
    code = (
        "import sys; from facevec.cli import cli; web = ('fastapi', 'uvicorn', 'starlette'); "
        "print(sorted(m for m in web if m in sys.modules))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert loaded.stdout.strip() == "[]"
