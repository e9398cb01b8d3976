"""What the web server refuses: writes without the token, paths outside its photo
folders, uploads over its limits, changes asked for by another site's page."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
from pipeline_photos import FACES
from web_support import AUTH, TOKEN, client_for, png_bytes

import facevec
from facevec.web import security

READ_ONLY_POSTS = {"/api/find", "/api/find/vector", "/api/verify", "/api/identify", "/api/search"}
WRITES = {
    ("POST", "/api/add"): {"img_names": ["x.jpg"], "embeddings": [[0.5] * 128]},
    ("POST", "/api/index"): {"folder": str(FACES)},
    ("DELETE", "/api/jobs/{job_id}"): None,
}
if importlib.util.find_spec("facevec.people") is not None:  # the people capability's writes
    WRITES[("POST", "/api/people/{person}/name")] = {"name": "Somebody"}
    WRITES[("POST", "/api/people/merge")] = {"sources": [1], "target": 2}
    WRITES[("POST", "/api/people")] = {"faces": [1], "name": "Somebody"}
    WRITES[("POST", "/api/people/move")] = {"faces": [1], "target": 1}
    WRITES[("POST", "/api/people/reject")] = {"faces": [1]}
    WRITES[("POST", "/api/people/dismiss")] = {"faces": [1]}
    WRITES[("POST", "/api/people/undo")] = None
    WRITES[("POST", "/api/people/cluster")] = {}
    WRITES[("POST", "/api/people/{person}/split")] = {"faces": [1]}
    WRITES[("POST", "/api/people/{person}/confirm")] = {}
    WRITES[("POST", "/api/people/{person}/hide")] = {"hidden": True}
    WRITES[("POST", "/api/people/{person}/cover")] = {"face_id": 1}


def _call(http, method: str, path: str, body, headers=None):
    url = path.replace("{job_id}", "somejob").replace("{person}", "1")
    return http.request(method, url, json=body, headers=headers or {})


def _writes_of(app) -> set[tuple[str, str]]:
    """Operations that change something: every API operation but reads and searches."""
    found = set()
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method != "get" and path.startswith("/api") and path not in READ_ONLY_POSTS:
                found.add((method.upper(), path))
    return found


def test_every_write_endpoint_needs_the_token(gallery_db, tmp_path):
    faces_before = facevec.info(gallery_db)["faces"]
    with client_for(gallery_db, photos=[FACES]) as http:
        assert _writes_of(http.app) == set(WRITES)  # a new write must be listed (and guarded)
        for (method, path), body in WRITES.items():
            response = _call(http, method, path, body)
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["detail"].startswith("this request changes the gallery")
            wrong = _call(http, method, path, body, {"Authorization": "Bearer guess"})
            assert wrong.status_code == 401, (method, path)
            assert "the token sent is wrong" in wrong.json()["detail"]
            prefix = _call(http, method, path, body, {"Authorization": f"Bearer {TOKEN[:-1]}"})
            assert prefix.status_code == 401
            not_bearer = _call(http, method, path, body, {"Authorization": f"Basic {TOKEN}"})
            assert not_bearer.status_code == 401
    with client_for(gallery_db, token=None, photos=[FACES]) as http:
        for (method, path), body in WRITES.items():
            response = _call(http, method, path, body, AUTH)
            assert response.status_code == 403, (method, path)
            assert "read-only" in response.json()["detail"]
    assert facevec.info(gallery_db)["faces"] == faces_before


def test_the_token_is_compared_in_constant_time(monkeypatch):
    calls = []
    real = security.hmac.compare_digest

    def recording(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(security.hmac, "compare_digest", recording)
    assert security.token_matches(TOKEN, TOKEN)
    assert not security.token_matches("x" + TOKEN[1:], TOKEN)
    assert not security.token_matches("", TOKEN) and not security.token_matches(TOKEN, None)
    assert calls == [(TOKEN.encode(), TOKEN.encode()), (("x" + TOKEN[1:]).encode(), TOKEN.encode())]


def test_a_write_from_another_sites_page_is_refused_even_with_the_token(gallery_db_copy):
    body = {"img_names": ["x.jpg"], "embeddings": [[0.5] * 128]}
    with client_for(gallery_db_copy) as http:
        evil = http.post("/api/add", json=body, headers={**AUTH, "Origin": "https://evil.example"})
        assert evil.status_code == 403 and "another site" in evil.json()["detail"]
        same = http.post("/api/add", json=body, headers={**AUTH, "Origin": "http://localhost"})
        assert same.status_code == 200
    # No cookie is ever set: the token lives only in the Authorization header.
    assert "set-cookie" not in same.headers


@pytest.fixture
def roots(tmp_path):
    """A photo root holding a photo, a symlink escaping it, a text file and a database."""
    root = tmp_path / "root"
    (root / "people").mkdir(parents=True)
    (root / "people" / "one.jpg").write_bytes((FACES / "img1.jpg").read_bytes())
    (root / "people" / "escape.jpg").symlink_to("/etc/hostname")
    (root / "people" / "shared.jpg").symlink_to(FACES / "img2.jpg")
    (root / "notes.txt").write_text("private")
    (root / "faces.db").write_bytes(b"SQLite format 3\x00")
    (tmp_path / "secret.jpg").write_bytes((FACES / "img4.jpg").read_bytes())
    return root


def test_photos_are_served_only_from_under_the_photo_roots(gallery_db, roots, tmp_path):
    with client_for(gallery_db, photos=[roots]) as http:
        ok = http.get(f"/photos{roots}/people/one.jpg")
        assert ok.status_code == 200
        assert ok.content == (FACES / "img1.jpg").read_bytes()
        refused = [
            "/photos/etc/passwd",
            "/photos/etc/hostname",
            f"/photos{tmp_path}/secret.jpg",  # beside the root, not in it
            f"/photos{roots}/people/escape.jpg",  # a symlink out of the root
            f"/photos{roots}/people/shared.jpg",  # into a folder that is not a root
            f"/photos{roots}/notes.txt",  # not a photo
            f"/photos{roots}/faces.db",
            f"/photos{roots}/people",  # a folder
            f"/photos{roots}/people/missing.jpg",
            f"/photos{roots}/people/%2e%2e/%2e%2e/secret.jpg",
            f"/photos{roots}/..%2F..%2Fsecret.jpg",
            f"/photos{roots}/people/one.jpg%00.txt",
            f"/photos{roots}/../secret.jpg",
            "/photos/" + "../" * 12 + "etc/passwd",
            "/photos/%2e%2e/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
            "/static/..%2F..%2F..%2F..%2Fetc/passwd",
            "/static/%2e%2e/app.py",
        ]
        for url in refused:
            response = http.get(url)
            assert response.status_code == 404, url
            assert b"private" not in response.content and b"root:" not in response.content
    with client_for(gallery_db, photos=[roots, FACES]) as http:
        # The symlinked photo is served once its real folder is a root too.
        assert http.get(f"/photos{roots}/people/shared.jpg").status_code == 200
        assert http.get(f"/photos{roots}/people/escape.jpg").status_code == 404
    with client_for(gallery_db) as http:  # no --photos: no photo at all
        assert http.get(f"/photos{roots}/people/one.jpg").status_code == 404


def test_a_face_links_its_photo_only_when_it_may_be_served(gallery_db, gallery):
    (frame,) = facevec.find(np.asarray(_first_vector(gallery_db)), gallery_db, k=1)
    face_id = int(frame.face_id[0])
    with client_for(gallery_db, photos=[gallery]) as http:
        # The gallery's files are symlinks into the shared photos: not under the root.
        assert http.get(f"/api/faces/{face_id}").json()["photo_url"] is None
    with client_for(gallery_db, photos=[gallery, FACES]) as http:
        url = http.get(f"/api/faces/{face_id}").json()["photo_url"]
        assert url is not None and http.get(url).status_code == 200


def _first_vector(db):
    import sqlite3

    with sqlite3.connect(db) as conn:
        (blob,) = conn.execute("SELECT embedding FROM face_meta ORDER BY id LIMIT 1").fetchone()
    return np.frombuffer(blob, dtype="<f4")


def test_oversized_uploads_are_413(gallery_db):
    limit = 100_000
    big = os.urandom(limit + 1)
    with client_for(gallery_db, max_upload_bytes=limit) as http:
        declared = http.post("/api/find", files={"photo": ("big.jpg", big, "image/jpeg")})
        assert declared.status_code == 413
        assert declared.json() == {
            "error": "HTTPError",
            "detail": "the request is larger than this server's limit of 100000 bytes",
        }

        def chunks():  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 8192):
                yield big[start : start + 8192]

        streamed = http.post(
            "/api/find/vector", content=chunks(), headers={"content-type": "application/json"}
        )
        assert streamed.status_code == 413
        assert streamed.json() == declared.json()
        page = http.post(
            "/search",
            files={"photo": ("big.jpg", big, "image/jpeg")},
            headers={"accept": "text/html"},
        )
        assert page.status_code == 413
        small = http.post("/api/find", files={"photo": ("x.jpg", b"tiny", "image/jpeg")})
        assert small.status_code == 422  # under the limit: looked at, and not an image


def test_images_over_the_pixel_limit_are_413_before_decoding(gallery_db, monkeypatch):
    from facevec.engine import decode, embed

    def never(*args, **kwargs):
        raise AssertionError("decoded an image over the pixel limit")

    for module in (decode, embed):
        monkeypatch.setattr(module, "decode_photo", never)
    wide = png_bytes(2000, 1000)
    with client_for(gallery_db, max_pixels=1_000_000) as http:
        response = http.post("/api/find", files={"photo": ("wide.png", wide, "image/png")})
        assert response.status_code == 413
        assert response.json() == {
            "error": "PhotoTooLargeError",
            "detail": "wide.png is 2000x1000 (2.0 megapixels), over the limit of 1 megapixels "
            "(max_pixels, --max-pixels)",
        }
        verify = http.post(
            "/api/verify",
            files={
                "photo1": ("a.png", png_bytes(10, 10), "image/png"),
                "photo2": ("wide.png", wide, "image/png"),
            },
        )
        assert verify.status_code == 413


def test_pages_carry_a_strict_content_security_policy(gallery_db):
    with client_for(gallery_db) as http:
        page = http.get("/")
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
        assert page.headers["x-content-type-options"] == "nosniff"
        assert TOKEN not in page.text
        assert 'style="' not in page.text  # inline styles would break under the policy


def _raw_get(url: str, path: str, host: str | None, http10: bool = False):
    """GET `path` from the server at `url` with exactly this Host header (or none)."""
    import http.client
    from urllib.parse import urlsplit

    where = urlsplit(url)
    conn = http.client.HTTPConnection(where.hostname, where.port, timeout=60)
    if http10:
        conn._http_vsn, conn._http_vsn_str = 10, "HTTP/1.0"
    try:
        conn.putrequest("GET", path, skip_host=True, skip_accept_encoding=True)
        if host is not None:
            conn.putheader("Host", host)
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_a_request_naming_another_host_is_refused_against_dns_rebinding(gallery_db, gallery):
    """A page of evil.example whose name is re-pointed at 127.0.0.1 reaches the server
    with Host: evil.example: refused before any route, so it reads nothing."""
    import json

    from web_support import live_server

    from facevec.web import create_app

    photo = f"/photos{gallery}/id01/img1.jpg"
    with live_server(create_app(str(gallery_db), photos=[gallery, FACES])) as url:
        port = url.rsplit(":", 1)[1]
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "LOCALHOST."):
            status, _ = _raw_get(url, "/api/info", host)
            assert status == 200, host
        assert _raw_get(url, photo, f"localhost:{port}")[0] == 200
        for host in (
            f"evil.example:{port}",
            "evil.example",
            "localhost.evil.example",
            f"127.0.0.1.nip.io:{port}",
            f"192.168.1.20:{port}",  # an address the server does not listen on
            "",
            "localhost:80:80",
            "[::1",
        ):
            for path in ("/api/info", photo, "/api/faces/1/crop.png", "/", "/docs"):
                status, content = _raw_get(url, path, host)
                assert status == 400, (host, path)
                answer = json.loads(content)
                assert answer["error"] == "HTTPError", host
                assert "this server does not answer to the host" in answer["detail"]
                assert "--allowed-host" in answer["detail"]
        status, content = _raw_get(url, "/api/info", None, http10=True)
        assert status == 400 and b"a Host header is required" in content

    app = create_app(str(gallery_db), host="0.0.0.0", allowed_hosts=["photos.example.org", "*.lan"])
    with live_server(app) as url:
        for host in ("photos.example.org", "nas.lan:8000", "192.168.1.20:8000", "[fe80::1]"):
            assert _raw_get(url, "/api/info", host)[0] == 200, host
        for host in ("evil.example", "lan", "photos.example.org.evil.example", "evil-lan"):
            assert _raw_get(url, "/api/info", host)[0] == 400, host


def test_a_malformed_allowed_host_is_refused_at_start(gallery_db):
    from facevec.errors import InvalidParameterError
    from facevec.web import create_app

    for bad in ("http://photos.example.org", "a b", "*evil", "ev*il.org", ""):
        with pytest.raises(InvalidParameterError, match="is not a host name"):
            create_app(str(gallery_db), allowed_hosts=[bad])


def test_concurrent_large_uploads_decode_within_the_servers_pixel_budget(gallery_db):
    """Six 3.9 MP uploads at once through uvicorn: at most the budget's pixels are
    being decoded at any moment (two such photos here), and every upload is answered."""
    import concurrent.futures

    import httpx2 as httpx
    from web_support import live_server

    from facevec.web import create_app
    from facevec.web.uploads import DecodeBudget

    width, height = 2400, 1625  # 3.9 MP, under the server's 4 MP limit
    app = create_app(str(gallery_db), max_pixels=4_000_000)
    app.state.decodes = DecodeBudget(2 * 4_000_000)
    uploads = [png_bytes(width, height, (10 * n, 90, 90)) for n in range(6)]
    with live_server(app) as url:

        def post(data: bytes) -> int:
            files = {"photo": ("large.png", data, "image/png")}
            return httpx.post(url + "/api/find", files=files, timeout=300).status_code

        with concurrent.futures.ThreadPoolExecutor(len(uploads)) as pool:
            statuses = list(pool.map(post, uploads))
    assert statuses == [422] * len(uploads)  # decoded, searched: no face in a flat image
    assert app.state.decodes.peak == 2 * width * height  # two at a time, never three
    assert app.state.decodes.held == 0


def test_the_decode_budget_lets_a_photo_larger_than_itself_through_alone():
    import threading
    import time

    from facevec.web.uploads import DecodeBudget

    budget = DecodeBudget(100)
    order = []

    def decode(name: str, pixels: int, seconds: float) -> None:
        with budget.hold(pixels):
            order.append(f"{name} in")
            time.sleep(seconds)
            order.append(f"{name} out")

    first = threading.Thread(target=decode, args=("small", 60, 0.3))
    first.start()
    time.sleep(0.1)
    huge = threading.Thread(target=decode, args=("huge", 500, 0.1))
    huge.start()
    first.join()
    huge.join()
    assert order == ["small in", "small out", "huge in", "huge out"]
    assert budget.peak == 500 and budget.held == 0
    machine = DecodeBudget.for_machine(40_000_000)
    assert machine.capacity % 40_000_000 == 0
    assert 40_000_000 <= machine.capacity <= 40_000_000 * (os.cpu_count() or 1)


def test_an_index_job_reads_no_file_linked_out_of_the_photo_folders(gallery_db_copy, roots):
    """/api/index walks real paths: a link out of --photos is neither read nor stored,
    so its crop cannot be served; the ledger says why."""
    with client_for(gallery_db_copy, photos=[roots]) as http:
        job = http.post("/api/index", json={"folder": str(roots)}, headers=AUTH).json()
        http.app.state.jobs.wait(job["id"], timeout=300)
        report = http.get(f"/api/jobs/{job['id']}").json()["report"]
        assert (report["indexed"], report["errors"]) == (1, 2), report
        problems = http.get("/api/ledger/problems").json()["files"]
        why = {os.path.basename(p["path"]): p["message"] for p in problems}
        for name in ("escape.jpg", "shared.jpg"):
            link = roots / "people" / name
            assert (
                why[name] == f"cannot read {link}: it links outside the folders this run may read"
            )
        stored = {
            row[0]
            for row in facevec.connect(str(gallery_db_copy)).execute(
                "SELECT img_name FROM face_meta WHERE img_name LIKE ?", (f"{roots}/%",)
            )
        }
        assert stored == {f"{roots}/people/one.jpg"}
    # The same folder from the command line, which reads what its user can: the link
    # leads to a photo with a face, so only the job's confinement kept it out.
    assert facevec.index(roots, roots.parent / "cli.db", progress=False).indexed == 2
