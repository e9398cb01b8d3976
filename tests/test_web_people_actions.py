"""The people page's actions through the REST API: name, new person, move, split,
reject, confirm, cover, hide, merge, undo and history, the unassigned faces
(name, give, set aside) and "group faces", on SQLite, PostgreSQL and MariaDB.

Each test builds the people it works on through the API itself (from the
session's gallery, copied), so it does not depend on how the index run left them.
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from backends import BACKENDS
from web_support import AUTH, client_for

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facevec.people") is None,
    reason="the people capability (facevec.people) is not part of this facevec",
)


def all_faces(http) -> dict[int, str]:
    """{face id: img_name} of every stored face, from the API alone."""
    found = {f["face_id"]: f["img_name"] for f in unassigned(http)["faces"]}
    for hidden in (False, True):
        for person in http.get("/api/people", params={"hidden": hidden}).json():
            for face in http.get(f"/api/people/{person['id']}").json()["faces"]:
                found[face["face_id"]] = face["img_name"]
    return found


def unassigned(http) -> dict:
    answer = http.get("/api/people/unassigned", params={"limit": 500})
    assert answer.status_code == 200, answer.text
    return answer.json()


def faces_of(faces: dict[int, str], labels: dict[str, str], identity: str) -> list[int]:
    return sorted(f for f, name in faces.items() if labels.get(os.path.basename(name)) == identity)


def post(http, url: str, body: dict | None = None, status: int = 200) -> dict:
    answer = http.post(url, json=body or {}, headers=AUTH)
    assert answer.status_code == status, answer.text
    return answer.json()


def cluster(http) -> dict:
    """Group faces (a background job, as the page starts it) and wait: its report."""
    import time

    job = post(http, "/api/people/cluster", status=202)
    assert job["kind"] == "cluster" and job["folder"] is None
    deadline = time.monotonic() + 300
    while job["state"] in ("queued", "running") and time.monotonic() < deadline:
        time.sleep(0.05)
        job = http.get(f"/api/jobs/{job['id']}").json()
    assert job["state"] == "done", job
    assert job["done"] == job["total"] == job["report"]["unassigned"]
    return job["report"]


def person(http, ref) -> dict:
    answer = http.get(f"/api/people/{ref}")
    assert answer.status_code == 200, answer.text
    return answer.json()


def who(http, face_ids: list[int]) -> dict[int, dict]:
    answer = http.get("/api/people/who", params={"face": face_ids})
    assert answer.status_code == 200, answer.text
    return {row["face_id"]: row for row in answer.json()}


def make_ann_and_bob(http, labels) -> tuple[dict[int, str], list[int], list[int]]:
    """Ann: five of id01's eight faces (the other three belong to no one); Bob: id02."""
    faces = all_faces(http)
    id01, id02 = faces_of(faces, labels, "id01"), faces_of(faces, labels, "id02")
    assert len(id01) == 8 and len(id02) == 1
    # Faces of a gallery folder that stands for a person: "not them", so that only
    # what the test does decides who these faces are.
    held = [face for face, row in who(http, id01 + id02).items() if row["person_id"] is not None]
    if held:
        post(http, "/api/people/reject", {"faces": held})
    assert all(row["person_id"] is None for row in who(http, id01 + id02).values())
    ann = post(http, "/api/people", {"faces": id01[:5], "name": "Ann"})
    assert ann["summary"].startswith("made 5 faces")
    post(http, "/api/people", {"faces": id02, "name": "Bob"})
    return faces, id01, id02


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_people_action_through_the_api(backend, gallery_db, gallery_copy_on, labels):
    db = gallery_copy_on(gallery_db, backend)
    with client_for(db) as http:
        faces, id01, id02 = make_ann_and_bob(http, labels)
        ann_id = person(http, "Ann")["person"]["id"]
        bob_id = person(http, "Bob")["person"]["id"]

        # Writes need the token.
        assert http.post("/api/people/undo").status_code == 401
        assert http.post("/api/people/cluster").status_code == 401

        # Named people first (by name), then the unnamed; each with a cover face.
        listed = http.get("/api/people").json()
        named = [p["name"] for p in listed if p["name"] is not None]
        assert named == sorted(named, key=str.casefold) and {"Ann", "Bob"} <= set(named)
        first_unnamed = next((i for i, p in enumerate(listed) if p["name"] is None), len(listed))
        assert all(p["name"] is None for p in listed[first_unnamed:])
        ann = next(p for p in listed if p["name"] == "Ann")
        assert ann["faces"] == 5 and ann["cover_face_id"] in id01[:5]
        assert ann["cover_url"] == f"/api/faces/{ann['cover_face_id']}/thumbnail.jpg"

        # Group faces: id01's three faces that belong to no one join Ann as suggestions.
        before = unassigned(http)["total"]
        report = cluster(http)
        assert report["unassigned"] == before and report["joined_existing"] >= 3
        suggested = http.get("/api/people/Ann/suggestions").json()
        # (and faces of group photos in which she is, which carry no label)
        assert set(id01[5:]) <= {s["face_id"] for s in suggested}
        others = [faces[s["face_id"]] for s in suggested if s["face_id"] not in id01]
        assert all(os.path.basename(name) not in labels for name in others)
        scores = [s["score"] for s in suggested]
        assert scores == sorted(scores, reverse=True)  # least sure first
        assert person(http, "Ann")["person"]["suggested"] == len(suggested)

        # "Is this Ann?" yes for the least sure, no for the next.
        yes, no = suggested[0]["face_id"], suggested[1]["face_id"]
        post(http, f"/api/people/{ann_id}/confirm", {"faces": [yes]})
        assert who(http, [yes])[yes]["source"] == "confirmed"
        post(http, "/api/people/reject", {"faces": [no], "person": ann_id})
        assert who(http, [no])[no]["person_id"] is None
        cluster(http)  # a rejection stands: clustering never gives it back
        assert who(http, [no])[no]["person_id"] != ann_id

        # Split two of Ann's faces into a new person, move one back.
        faces_before = person(http, "Ann")["person"]["faces"]
        assert faces_before == 5 + len(suggested) - 1  # one rejected
        split = post(http, f"/api/people/{ann_id}/split", {"faces": id01[:2], "name": "Split"})
        assert person(http, "Split")["person"]["faces"] == 2
        assert person(http, "Ann")["person"]["faces"] == faces_before - 2
        moved = post(http, "/api/people/move", {"faces": [id01[0]], "target": "Ann"})
        assert moved["person_id"] == ann_id and who(http, [id01[0]])[id01[0]]["person"] == "Ann"
        assert split["person_id"] == person(http, "Split")["person"]["id"]

        # Cover face: chosen among hers, refused for another's.
        post(http, f"/api/people/{ann_id}/cover", {"face_id": id01[3]})
        assert person(http, "Ann")["person"]["cover_face_id"] == id01[3]
        refused = http.post(f"/api/people/{ann_id}/cover", json={"face_id": id02[0]}, headers=AUTH)
        assert refused.status_code == 404 and refused.json()["error"] == "FaceNotFoundError"

        # Hide: out of the list, there when asked; shown again.
        post(http, f"/api/people/{bob_id}/hide", {"hidden": True})
        assert bob_id not in [p["id"] for p in http.get("/api/people").json()]
        assert [p["id"] for p in http.get("/api/people?hidden=true").json()] == [bob_id]
        assert http.get("/api/people/summary").json()["hidden"] == 1
        post(http, f"/api/people/{bob_id}/hide", {"hidden": False})
        assert bob_id in [p["id"] for p in http.get("/api/people").json()]

        # Merge, then undo: Bob comes back with his faces and the cover he had.
        post(http, f"/api/people/{bob_id}/cover", {"face_id": id02[0]})
        merged = post(http, "/api/people/merge", {"sources": [bob_id], "target": ann_id})
        assert merged["person_id"] == ann_id
        assert http.get(f"/api/people/{bob_id}").status_code == 404
        undone = post(http, "/api/people/undo")
        assert undone["summary"] == f"undid: {merged['summary']}"
        bob = person(http, bob_id)
        assert bob["person"]["name"] == "Bob" and [f["face_id"] for f in bob["faces"]] == id02
        assert bob["person"]["cover_face_id"] == id02[0]

        # History: latest first, the undone merge marked.
        history = http.get("/api/people/history", params={"limit": 5}).json()
        assert [e["action"] for e in history[:3]] == ["merge", "cover", "unhide"]
        assert history[0]["undone_at"] is not None and history[1]["undone_at"] is None

        # The faces of no one: give one to Bob, set one aside, undo that.
        loose = unassigned(http)
        assert loose["total"] == len(loose["faces"]) > 2
        given, aside = loose["faces"][0]["face_id"], loose["faces"][1]["face_id"]
        post(http, "/api/people/move", {"faces": [given], "target": bob_id})
        assert who(http, [given])[given]["person_id"] == bob_id
        post(http, "/api/people/dismiss", {"faces": [aside]})
        after = unassigned(http)
        assert aside not in [f["face_id"] for f in after["faces"]]
        assert after["total"] == loose["total"] - 2
        summary = http.get("/api/people/summary").json()
        assert summary["set_aside"] == 1 and summary["unassigned"] == after["total"]
        report = cluster(http)  # set aside: clustering leaves it alone
        assert who(http, [aside])[aside]["person_id"] is None
        if report["edit_id"] is not None:
            post(http, "/api/people/undo")  # the cluster run
        assert post(http, "/api/people/undo")["summary"] == f"undid: set aside face {aside}"
        assert aside in [f["face_id"] for f in unassigned(http)["faces"]]
        assert set(faces) == set(all_faces(http))  # no face lost on the way


def test_wrong_requests_are_clear_errors_and_change_nothing(gallery_db_copy, labels):
    with client_for(gallery_db_copy) as http:
        faces, id01, id02 = make_ann_and_bob(http, labels)
        history = http.get("/api/people/history").json()
        for url, body, status, error in (
            ("/api/people", {"faces": id01[5:6], "name": "Ann"}, 409, "PeopleConflictError"),
            ("/api/people", {"faces": [], "name": "Zoe"}, 422, "RequestValidationError"),
            ("/api/people", {"faces": [10**12], "name": "Zoe"}, 404, "FaceNotFoundError"),
            ("/api/people", {"faces": id01[5:6], "name": "person 3"}, 409, "PeopleConflictError"),
            ("/api/people/move", {"faces": id01[5:6], "target": "Zed"}, 404, "PersonNotFoundError"),
            ("/api/people/Ann/split", {"faces": id02}, 404, "FaceNotFoundError"),
            ("/api/people/Ann/cover", {"face_id": id02[0]}, 404, "FaceNotFoundError"),
        ):
            answer = http.post(url, json=body, headers=AUTH)
            assert answer.status_code == status, (url, answer.text)
            assert answer.json()["error"] == error
        assert http.get("/api/people/history").json() == history
        # A read-only server takes no change at all.
    with client_for(gallery_db_copy, token=None) as read_only:
        answer = read_only.post("/api/people/undo", headers=AUTH)
        assert answer.status_code == 403 and "read-only" in answer.json()["detail"]


def test_every_people_action_is_in_the_openapi_description(gallery_db):
    with client_for(gallery_db) as http:
        paths = http.get("/openapi.json").json()["paths"]
    for path, method in (
        ("/api/people", "get"),
        ("/api/people", "post"),
        ("/api/people/{person}", "get"),
        ("/api/people/{person}/name", "post"),
        ("/api/people/merge", "post"),
        ("/api/people/{person}/split", "post"),
        ("/api/people/move", "post"),
        ("/api/people/reject", "post"),
        ("/api/people/{person}/confirm", "post"),
        ("/api/people/{person}/suggestions", "get"),
        ("/api/people/undo", "post"),
        ("/api/people/history", "get"),
        ("/api/people/{person}/hide", "post"),
        ("/api/people/{person}/cover", "post"),
        ("/api/people/unassigned", "get"),
        ("/api/people/dismiss", "post"),
        ("/api/people/cluster", "post"),
        ("/api/people/who", "get"),
        ("/api/people/summary", "get"),
    ):
        assert method in paths.get(path, {}), (path, method)
        operation = paths[path][method]
        if method == "post":  # every write says it needs the token
            assert "401" in operation["responses"], path


def test_a_face_stored_without_a_crop_shows_a_placeholder_never_a_broken_image(tmp_path):
    import numpy as np

    import facevec

    db = tmp_path / "vectors.db"
    rng = np.random.default_rng(7)
    facevec.add(db, ["a.jpg", "b.jpg"], rng.normal(size=(2, 128)), model_name="Dlib")
    with client_for(db) as http:
        face_id = unassigned(http)["faces"][0]["face_id"]
        assert http.get(f"/api/faces/{face_id}/crop.png").status_code == 404  # the API's answer
        shown = http.get(f"/api/faces/{face_id}/crop.png?placeholder=true")
        assert shown.status_code == 200 and shown.headers["content-type"].startswith("image/svg")
        assert "<svg" in shown.text
        missing = http.get("/api/faces/999999/crop.png?placeholder=true")
        assert missing.status_code == 404  # a face that is not there is still not there
        text = http.get(f"/face/{face_id}").text
        assert f"/api/faces/{face_id}/crop.png?placeholder=true" in text
        assert f'/api/faces/{face_id}/crop.png"' not in text
        # The pages' thumbnails: no photo to cut the face from, so the placeholder.
        assert f"/api/faces/{face_id}/thumbnail.jpg" in http.get("/people").text
        thumbnail = http.get(f"/api/faces/{face_id}/thumbnail.jpg")
        assert thumbnail.status_code == 200 and "<svg" in thumbnail.text


def test_a_version_6_gallery_is_upgraded_keeping_its_people(gallery_db_copy):
    import sqlite3

    import facevec
    import facevec.people as people
    from facevec.storage.schema import SCHEMA_VERSION

    assert SCHEMA_VERSION >= 7  # person.hidden, cover_face_id, face_dismissed
    before = [(p.id, p.name, p.faces) for p in people.list_people(gallery_db_copy)]
    with sqlite3.connect(gallery_db_copy) as conn:  # as a version-6 gallery was
        conn.execute("DROP TABLE face_dismissed")
        conn.execute("ALTER TABLE person DROP COLUMN hidden")
        conn.execute("ALTER TABLE person DROP COLUMN cover_face_id")
        conn.execute("UPDATE facevec_collection SET schema_version = 6")
    with client_for(gallery_db_copy) as http:
        listed = http.get("/api/people").json()
    assert [(p["id"], p["name"], p["faces"]) for p in listed] == sorted(
        before, key=lambda p: (p[1] is None, (p[1] or "").casefold(), -p[2], p[0])
    )
    assert all(p["hidden"] is False for p in listed)
    assert facevec.info(gallery_db_copy)["schema_version"] == SCHEMA_VERSION


def test_the_status_page_says_in_words_how_far_the_people_are(gallery_db_copy, tmp_path, labels):
    import facevec

    bad = tmp_path / "new"
    bad.mkdir()
    (bad / "holiday.jpg").write_text("this is not a photo")
    facevec.index(bad, gallery_db_copy, progress=False)
    with client_for(gallery_db_copy) as http:
        make_ann_and_bob(http, labels)
        counts = http.get("/api/people/summary").json()
        info = http.get("/api/info").json()
        page = " ".join(http.get("/status").text.split())
    assert f"{info['images']} photos, {info['faces']} faces;" in page
    assert f"{counts['people']} people ({counts['named']} named)" in page
    assert f"{counts['unassigned']} with no one yet." in page
    assert "1 file could not be indexed: 1 not a photo (each file and why below)." in page
    assert 'id="group-faces"' in page and "Editing is locked" in page
