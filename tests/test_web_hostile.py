"""No request is a 500: hostile numbers and names on every route, pages included.

The routes are read from the application itself (its OpenAPI description, with the
pages added), so a new route or parameter is walked without being listed here: each
integer parameter gets integers of 2^63 and more, each number infinities, NaN and
1e400, each text the same plus escapes that are no file's name; one at a time, the
other parameters valid. Every answer must be a client error or a success.
"""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest
from pipeline_photos import FACES
from web_support import AUTH, BASE_URL, TOKEN

import facevec

pytest.importorskip("fastapi", reason="the web extra is not installed")

from fastapi.routing import APIRoute  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402

from facevec.web import create_app  # noqa: E402

HUGE_INTEGERS = ["18446744073709551616", "9223372036854775808", "-18446744073709551616"]
ODD_NUMBERS = ["inf", "-inf", "nan", "1e400"]
ODD_TEXT = ["\\x2e\\x2e", "%2e%2e/%2e%2e", "\\x00"]
JSON_LITERALS = {"inf": "Infinity", "-inf": "-Infinity", "nan": "NaN", "1e400": "1e400"}


def every_route_schema(app) -> dict:
    """/openapi.json, with the pages' routes added (they are left out of it)."""
    from fastapi.openapi.utils import get_openapi

    from facevec.web import pages

    routers = [pages.router]
    if app.state.people:
        from facevec.web import people_routes

        routers.append(people_routes.views)
    shown = []
    for router in routers:
        for route in router.routes:
            if isinstance(route, APIRoute):
                route = copy.copy(route)
                route.include_in_schema = True
                shown.append(route)
    schema = copy.deepcopy(app.openapi())
    page_schema = get_openapi(title="pages", version="0", routes=shown)
    schema["paths"].update(page_schema["paths"])
    for name, spec in page_schema.get("components", {}).get("schemas", {}).items():
        schema["components"]["schemas"].setdefault(name, spec)
    return schema


def _resolve(schema: dict, spec: dict) -> dict:
    while "$ref" in spec:
        spec = schema["components"]["schemas"][spec["$ref"].rsplit("/", 1)[1]]
    return spec


def _kinds(spec: dict) -> set[str]:
    """The JSON types a parameter's schema allows (anyOf flattened)."""
    found = {spec["type"]} if isinstance(spec.get("type"), str) else set()
    for option in spec.get("anyOf", []):
        found |= _kinds(option)
    if "items" in spec:
        found |= {f"array of {kind}" for kind in _kinds(spec["items"])}
    return found


def hostile_values(spec: dict) -> list[str]:
    kinds = _kinds(spec)
    values: list[str] = []
    if kinds & {"integer", "array of integer"}:
        values += HUGE_INTEGERS
    if kinds & {"number", "array of number"}:
        values += ODD_NUMBERS
    if kinds & {"string", "array of string"}:
        values += HUGE_INTEGERS + ODD_NUMBERS + ODD_TEXT
    return list(dict.fromkeys(values))


@pytest.fixture
def hostile_setup(gallery_db_copy, gallery, tmp_path):
    """A server on a copy of the gallery, with its ids and a photo."""
    empty = gallery / "empty-for-hostile-tests"
    empty.mkdir(exist_ok=True)
    with facevec.connect(str(gallery_db_copy)) as conn:
        face_id, blob = conn.execute("SELECT id, embedding FROM face_meta LIMIT 1").fetchone()
    vector = np.frombuffer(blob, dtype="<f4").tolist()
    app = create_app(str(gallery_db_copy), token=TOKEN, photos=[gallery, FACES])
    baseline = {
        "path": {
            "face_id": str(face_id),
            "person": "1",
            "person_id": "1",
            "job_id": "nojob",
            "path": str(FACES / "img1.jpg").lstrip("/"),
        },
        # Valid JSON bodies, by schema name: the walk varies one field at a time.
        "json": {
            "VectorQuery": {"vector": vector, "k": 3},
            "AddRequest": {"img_names": ["hostile.jpg"], "embeddings": [vector]},
            "IndexRequest": {"folder": str(empty)},
            "NameRequest": {"name": "Somebody"},
            "MergeRequest": {"sources": [1], "target": 2},
            "NewPersonRequest": {"faces": [face_id], "name": "Hostile"},
            "SplitRequest": {"faces": [face_id], "name": "Split"},
            "MoveRequest": {"faces": [face_id], "target": 1},
            "RejectRequest": {"faces": [face_id], "person": 1},
            "FacesRequest": {"faces": [face_id]},
            "ConfirmRequest": {"faces": [face_id]},
            "HideRequest": {"hidden": True},
            "CoverRequest": {"face_id": face_id},
            "ClusterRequest": {"metric": "euclidean"},
        },
        "photo": (FACES / "img1.jpg").read_bytes(),
    }
    with TestClient(app, base_url=BASE_URL, raise_server_exceptions=False) as http:
        yield http, baseline


def _requests(schema: dict, baseline: dict):
    """(description, method, url, request keywords) of every hostile variant."""
    for path, methods in schema["paths"].items():
        for method, operation in methods.items():
            parameters = operation.get("parameters", [])
            path_values = {
                p["name"]: baseline["path"][p["name"]] for p in parameters if p["in"] == "path"
            }
            body = operation.get("requestBody", {}).get("content", {})
            form_spec = body.get("multipart/form-data") or body.get(
                "application/x-www-form-urlencoded"
            )
            json_spec = body.get("application/json")
            fields: dict = {}
            files: dict = {}
            if form_spec:
                form = _resolve(schema, form_spec["schema"])
                for name, spec in form["properties"].items():
                    if spec.get("format") == "binary" or spec.get("contentMediaType"):
                        files[name] = (f"{name}.jpg", baseline["photo"], "image/jpeg")
            json_base = None
            if json_spec:
                name = json_spec["schema"]["$ref"].rsplit("/", 1)[1]
                assert name in baseline["json"], f"give the walk a valid {name} body"
                json_base = baseline["json"][name]

            request = {
                "method": method.upper(),
                "path": path,
                "path_values": path_values,
                "form": form_spec and {"files": files, "fields": fields},
                "json": json_spec and json_base,
            }

            def send(path_over=None, query=None, form=None, raw_json=None, request=request):
                return _build(request, path_over, query, form, raw_json)

            for parameter in parameters:
                for value in hostile_values(parameter["schema"]):
                    where = parameter["in"]
                    what = f"{method.upper()} {path} {where} {parameter['name']}={value!r}"
                    if where == "path":
                        yield what, *send(path_over={parameter["name"]: value})
                    elif where == "query":
                        yield what, *send(query={parameter["name"]: value})
            if form_spec:
                for name, spec in _resolve(schema, form_spec["schema"])["properties"].items():
                    if name in files:
                        continue
                    for value in hostile_values(spec):
                        yield (
                            f"{method.upper()} {path} form {name}={value!r}",
                            *send(form={name: value}),
                        )
            if json_spec:
                model = _resolve(schema, json_spec["schema"])
                for name, spec in model["properties"].items():
                    for value in hostile_values(spec):
                        literal = JSON_LITERALS.get(value, value)
                        if value in HUGE_INTEGERS or value in JSON_LITERALS:
                            item = literal
                        else:
                            item = json.dumps(value)
                        if "array" in " ".join(_kinds(spec)):
                            item = f"[{item}]"
                        text = json.dumps({**json_base, name: "@HOSTILE@"})
                        text = text.replace('"@HOSTILE@"', item)
                        yield f"{method.upper()} {path} json {name}={value!r}", *send(raw_json=text)


def _build(request: dict, path_over, query, form, raw_json):
    """(method, url, keywords of TestClient.request) of one variant of a request."""
    url = request["path"]
    for key, value in {**request["path_values"], **(path_over or {})}.items():
        url = url.replace("{" + key + "}", value).replace("{" + key + ":path}", value)
    keywords: dict = {"params": query or {}, "headers": dict(AUTH)}
    if request["form"]:
        keywords["files"] = request["form"]["files"]
        keywords["data"] = {**request["form"]["fields"], **(form or {})}
    if request["json"]:
        keywords["content"] = raw_json or json.dumps(request["json"])
        keywords["headers"]["Content-Type"] = "application/json"
    return request["method"], url, keywords


def test_no_route_answers_a_hostile_number_or_name_with_a_500(hostile_setup):
    http, baseline = hostile_setup
    schema = every_route_schema(http.app)
    walked: set[str] = set()
    failures = []
    count = 0
    for what, method, url, keywords in _requests(schema, baseline):
        response = http.request(method, url, **keywords)
        count += 1
        walked.add(url.split("?")[0] if "{" not in url else url)
        if response.status_code >= 500:
            failures.append(f"{what}: {response.status_code} {response.text[:200]}")
    assert failures == []
    # The walk reached the API and the pages (a route with no parameter has nothing to vary).
    paths = set(schema["paths"])
    assert {"/api/faces/{face_id}", "/face/{face_id}", "/gallery", "/api/find"} <= paths
    assert count > 100


def test_stored_names_that_are_no_files_text_form_are_never_a_500(hostile_setup, gallery):
    """Names with escapes facevec never writes (\\x2e is '.'): shown, and served as nothing."""
    http, _ = hostile_setup
    db = http.app.state.config.db
    vector = np.random.default_rng(5).normal(0, 0.06, 128).astype(np.float32)
    odd = f"{gallery}/\\x2e\\x2e/\\x2e\\x2e/etc/passwd.jpg"
    facevec.add(db, [odd], vector[None, :], identities=["\\x2e\\x2e"])
    with facevec.connect(db) as conn:
        (face_id,) = conn.execute("SELECT id FROM face_meta WHERE img_name = ?", (odd,)).fetchone()
    located = http.get(f"/api/faces/{face_id}")
    assert located.status_code == 200
    assert located.json()["img_name"] == odd and located.json()["photo_url"] is None
    page = http.get(f"/face/{face_id}", headers={"accept": "text/html"})
    assert page.status_code == 200 and "/photos/" not in page.text
    identity = http.get("/identity", params={"name": "\\x2e\\x2e"}, headers={"accept": "text/html"})
    assert identity.status_code == 200 and "passwd.jpg" in identity.text
    for url in (
        f"/photos{gallery}/%5Cx2e%5Cx2e/%5Cx2e%5Cx2e/etc/passwd.jpg",
        f"/photos{gallery}/%5Cx2e%5Cx2e/%5Cx2e%5Cx2e/etc/passwd",
        "/photos/%5Cx2f%5Cx2e%5Cx2e/etc/passwd",
    ):
        answer = http.get(url)
        assert answer.status_code == 404, url
        assert b"root:" not in answer.content


if importlib.util.find_spec("facevec.people") is not None:  # the people capability

    def test_a_name_that_is_a_label_or_broken_text_is_refused_by_the_api(hostile_setup):
        http, _ = hostile_setup
        for raw in ('"person 1"', '"\\ud800"', '"Ann\\u001b[31m"'):
            response = http.post(
                "/api/people/2/name",
                content=f'{{"name": {raw}}}',
                headers={**AUTH, "Content-Type": "application/json"},
            )
            assert response.status_code == 409, (raw, response.text)
            assert response.json()["error"] == "PeopleConflictError"
            assert response.json()["detail"].startswith("a name ")
