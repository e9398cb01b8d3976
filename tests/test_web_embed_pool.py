"""The server's embedding processes (facevec.web.embed_pool): photo searches answered
in parallel give the answers of one-at-a-time searches; a worker that dies is a 503
that says so, and the pool comes back; stopping the server leaves no process; the
number of workers is checked wherever it comes from."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import os
import re
import signal
import sqlite3
import struct
import threading
import time
import uuid

import numpy as np
import pytest
from click.testing import CliRunner
from pipeline_photos import FACES
from web_support import AUTH, client_for, live_server

from facevec.cli import cli
from facevec.errors import InvalidParameterError
from facevec.ingest.pool import default_workers
from facevec.web import create_app
from facevec.web.embed_pool import ENV, max_workers, pool_size

pytestmark = pytest.mark.photo_set

# Labelled photos of several people, one with two faces and one with four.
QUERIES = ["img1.jpg", "img3.jpg", "couple.jpg", "img22.jpg"]


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG (same pixels) with a comment segment: another hash, so no answer
    comes from the embedding cache of the test's own process."""
    comment = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def fresh(name: str) -> bytes:
    return with_comment((FACES / name).read_bytes(), uuid.uuid4().hex)


def post_photo(url: str, path: str, fields: dict[str, str], files: dict[str, bytes]):
    """(status, JSON) of a multipart POST to a live server."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode()
        for key, value in fields.items()
    ]
    for field, data in files.items():
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; '
            f'filename="{field}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        )
        parts.append(head.encode() + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    host, port = url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        conn.request(
            "POST",
            path,
            b"".join(parts),
            {"Content-Type": f"multipart/form-data; boundary={boundary}", "Host": "localhost"},
        )
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


def without_time(answer: dict) -> dict:
    answer = dict(answer)
    answer.pop("time", None)  # verify's seconds
    return answer


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_concurrent_searches_answer_as_sequential_ones(gallery_db):
    """8 requests at once (find, verify, identify) through a pool of two workers give
    exactly the answers of the same requests one at a time in the server's own process."""
    requests = [("/api/find", {"k": "4"}, {"photo": name}) for name in QUERIES]
    requests += [
        ("/api/verify", {}, {"photo1": "img1.jpg", "photo2": name})
        for name in ("img2.jpg", "img8.jpg")
    ]
    requests += [("/api/identify", {}, {"photo": name}) for name in ("img8.jpg", "couple.jpg")]
    assert len(requests) == 8

    def bodies() -> list:  # photos new to this process's embedding cache
        return [
            (path, fields, {field: fresh(name) for field, name in files.items()})
            for path, fields, files in requests
        ]

    alone = create_app(gallery_db, embed_workers=0)
    assert alone.state.embed_pool is None
    with live_server(alone) as url:
        expected = [post_photo(url, *body) for body in bodies()]
    assert [status for status, _ in expected] == [200] * 8
    assert all(answer["faces"] for status, answer in expected[:4])
    assert [answer["verified"] for _, answer in expected[4:6]] == [True, False]

    pooled = create_app(gallery_db, embed_workers=2)
    pool = pooled.state.embed_pool
    with live_server(pooled) as url:
        with concurrent.futures.ThreadPoolExecutor(8) as clients:
            answers = list(clients.map(lambda body: post_photo(url, *body), bodies()))
        workers = pool.pids()
        budget = pooled.state.decodes
    assert [status for status, _ in answers] == [200] * 8
    assert [without_time(a) for _, a in answers] == [without_time(a) for _, a in expected]
    # Every photo went to the workers (a verify is two): none was embedded in the server.
    assert pool.embedded == 4 + 2 * 2 + 2
    assert len(workers) == 2 and os.getpid() not in workers
    assert budget.peak > 0 and budget.held == 0  # the decode budget was held, and given back
    assert pool.restarts == 0


def test_a_worker_that_dies_is_a_503_naming_it_and_the_pool_comes_back(gallery_db):
    app = create_app(gallery_db, embed_workers=1)
    pool = app.state.embed_pool
    with live_server(app) as url:
        status, _ = post_photo(url, "/api/find", {}, {"photo": fresh("img1.jpg")})
        assert status == 200  # the worker is up and has the model
        (worker,) = pool.pids()
        os.kill(worker, signal.SIGSTOP)  # the photo below waits in its queue
        answer: dict = {}

        def search() -> None:
            answer["status"], answer["body"] = post_photo(
                url, "/api/find", {}, {"photo": fresh("img3.jpg")}
            )

        thread = threading.Thread(target=search)
        thread.start()
        deadline = time.monotonic() + 60
        while pool.in_flight == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.in_flight == 1
        os.kill(worker, signal.SIGKILL)
        thread.join(120)
        assert not thread.is_alive(), "the request hung on a dead worker"
        assert answer["status"] == 503
        assert answer["body"]["error"] == "EmbedWorkerError"
        assert re.fullmatch(
            rf"an embedding process stopped while it held this photo \(process {worker} was "
            r"killed by SIGKILL\); the server has started new ones: send the photo again",
            answer["body"]["detail"],
        ), answer["body"]["detail"]
        # The next search is answered by a new worker.
        status, body = post_photo(url, "/api/find", {}, {"photo": fresh("img3.jpg")})
        assert status == 200 and body["faces"]
        assert pool.restarts == 1
        assert pool.pids() and worker not in pool.pids()
    assert not alive(worker)


def test_an_index_job_embeds_in_the_pool_as_facevec_index_does(gallery_db_copy, tmp_path):
    """An index run from the web (one worker) hands its photos to the embedding
    processes: the faces stored are those the command line's index stored."""
    folder = tmp_path / "new"
    folder.mkdir()
    stored_as = {"img1.jpg": "id01/img1.jpg", "img12.jpg": "id02/img12.jpg"}
    for name in stored_as:  # new bytes (a comment), the same pixels
        (folder / name).write_bytes(fresh(name))
    with client_for(gallery_db_copy, photos=[tmp_path], embed_workers=1) as client:
        pool = client.app.state.embed_pool
        started = client.post("/api/index", json={"folder": str(folder)}, headers=AUTH)
        assert started.status_code == 202
        job_id = started.json()["id"]
        client.app.state.jobs.wait(job_id, 300)
        job = client.get(f"/api/jobs/{job_id}").json()
        assert job["state"] == "done", job
        assert job["report"]["indexed"] == 2
        assert pool.embedded == 2
    for name, before in stored_as.items():  # as the session's gallery stored them
        np.testing.assert_allclose(
            stored_vector(gallery_db_copy, f"new/{name}"),
            stored_vector(gallery_db_copy, before),
            rtol=0,
            atol=1e-6,
        )


def stored_vector(db, ending: str) -> np.ndarray:
    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE ?", (f"%/{ending}",)
        ).fetchone()
    return np.frombuffer(blob, dtype="<f4")


def test_stopping_the_server_leaves_no_embedding_process(gallery_db):
    with client_for(gallery_db, embed_workers=2) as client:
        pool = client.app.state.embed_pool
        response = client.post("/api/find", files={"photo": ("q.jpg", fresh("img8.jpg"))})
        assert response.status_code == 200
        workers = pool.pids()
        assert len(workers) == 2 and all(alive(pid) for pid in workers)
    # The app's lifespan ended: every worker was stopped and waited for.
    assert not any(alive(pid) for pid in workers)
    response = client.post("/api/find", files={"photo": ("q.jpg", fresh("img8.jpg"))})
    assert response.status_code == 503
    assert response.json()["detail"] == (
        "the server is stopping: its embedding processes are closed"
    )


def test_the_number_of_workers_is_checked(monkeypatch, gallery_db):
    monkeypatch.delenv(ENV, raising=False)
    assert pool_size() == default_workers()
    assert pool_size(0) == 0
    assert pool_size(max_workers()) == max_workers()
    most = max_workers()
    for bad in (-1, most + 1, 1.5, True, "two"):
        message = (
            f"embed_workers must be a whole number from 0 (embed in the server's own "
            f"process) to {most} (4 per core), not {bad!r}"
        )
        with pytest.raises(InvalidParameterError, match=re.escape(message)):
            pool_size(bad)
        with pytest.raises(InvalidParameterError, match=re.escape(message)):
            create_app(gallery_db, embed_workers=bad)
    monkeypatch.setenv(ENV, "1")
    assert pool_size() == 1
    assert create_app(gallery_db).state.embed_pool.workers == 1
    monkeypatch.setenv(ENV, "lots")
    with pytest.raises(InvalidParameterError, match=re.escape(f"{ENV} must be a whole number")):
        pool_size()
    assert pool_size(0) == 0  # given explicitly, the environment is not read

    runner = CliRunner()
    negative = runner.invoke(cli, ["serve", "--db", str(gallery_db), "--embed-workers", "-1"])
    assert negative.exit_code == 2
    assert "--embed-workers" in negative.output and "-1" in negative.output
    too_many = runner.invoke(
        cli, ["serve", "--db", str(gallery_db), "--embed-workers", str(most + 1)]
    )
    assert too_many.exit_code == 1
    assert "embed_workers must be a whole number from 0" in too_many.output
    monkeypatch.setenv(ENV, "x")
    from_env = runner.invoke(cli, ["serve", "--db", str(gallery_db)])
    assert from_env.exit_code == 2 and "'x' is not a valid integer" in from_env.output
