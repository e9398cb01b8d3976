"""People on the web: identify, list, show, name and merge, in JSON and on the pages.

The routes exist exactly when the people capability (facevec.people) is part of
facevec; without it the first test checks that none is served.
"""

from __future__ import annotations

import importlib.util

import pytest
from pipeline_photos import FACES
from web_support import AUTH, client_for

PEOPLE = importlib.util.find_spec("facevec.people") is not None


if not PEOPLE:

    def test_without_the_people_capability_no_people_route_is_served(gallery_db):
        with client_for(gallery_db) as http:
            assert http.get("/people").status_code == 404
            assert http.get("/api/people").status_code == 404
            paths = http.get("/openapi.json").json()["paths"]
            assert not [path for path in paths if "people" in path or "identify" in path]
            assert 'href="/people"' not in http.get("/").text

else:
    import facevec.people as people

    @pytest.fixture
    def client(gallery_on, gallery):
        backend, db = gallery_on
        with client_for(db, photos=[gallery, FACES]) as test_client:
            yield backend, db, test_client

    def test_people_list_and_show_equal_the_python_api(client):
        _, db, http = client
        listed = http.get("/api/people")
        assert listed.status_code == 200, listed.text
        named, unnamed, _ = people.people_in_order(db)
        assert [p["id"] for p in listed.json()] == [p.id for p in named + unnamed]
        expected = people.list_people(db)
        assert sorted(p["id"] for p in listed.json()) == [p.id for p in expected]
        folder = next(p for p in expected if p.name == "id01")
        shown = http.get(f"/api/people/{folder.id}").json()
        assert shown["person"]["label"] == "id01" and shown["person"]["faces"] == folder.faces
        by_name = http.get("/api/people/id01").json()
        assert by_name == shown
        view = people.show(db, folder.id)
        assert [f["face_id"] for f in shown["faces"]] == [f.face_id for f in view.faces]
        missing = http.get("/api/people/nobody")
        assert missing.status_code == 404 and missing.json()["error"] == "PersonNotFoundError"

    def test_identify_names_the_person_of_an_uploaded_photo(client):
        _, db, http = client
        photo = ("img2.jpg", (FACES / "img2.jpg").read_bytes(), "image/jpeg")
        response = http.post("/api/identify", files={"photo": photo})
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        expected = people.identify(str(FACES / "img2.jpg"), db)
        assert face["person"] == expected.person[0] == "id01"
        assert face["decision"] == expected.decision[0] == "matched"
        bad = http.post("/api/identify", files={"photo": ("x.jpg", b"text", "image/jpeg")})
        assert bad.status_code == 422 and bad.json()["error"] == "NotAnImageError"

    def test_naming_and_merging_need_the_token_and_change_the_gallery(gallery_db_copy):
        with client_for(gallery_db_copy) as http:
            everyone = http.get("/api/people").json()
            first, second = (p for p in everyone if p["name"] in ("id02", "id03"))
            request = {"name": "Jennifer"}
            assert http.post(f"/api/people/{first['id']}/name", json=request).status_code == 401
            named = http.post(f"/api/people/{first['id']}/name", json=request, headers=AUTH)
            assert named.status_code == 200, named.text
            assert http.get(f"/api/people/{first['id']}").json()["person"]["name"] == "Jennifer"
            taken = http.post(f"/api/people/{second['id']}/name", json=request, headers=AUTH)
            assert taken.status_code == 409 and taken.json()["error"] == "PeopleConflictError"
            merge = {"sources": [second["id"]], "target": first["id"]}
            assert http.post("/api/people/merge", json=merge).status_code == 401
            merged = http.post("/api/people/merge", json=merge, headers=AUTH)
            assert merged.status_code == 200, merged.text
            after = http.get(f"/api/people/{first['id']}").json()["person"]
            assert after["faces"] == first["faces"] + second["faces"]
            assert http.get(f"/api/people/{second['id']}").status_code == 404

    def test_people_pages_show_everyone_and_each_persons_faces(gallery_db):
        with client_for(gallery_db) as http:
            page = http.get("/people")
            assert page.status_code == 200
            assert 'data-name="id01"' in page.text and "/thumbnail.jpg" in page.text
            folder = next(p for p in people.list_people(gallery_db) if p.name == "id01")
            person = http.get(f"/people/{folder.id}")
            assert person.status_code == 200
            assert person.text.count('class="photo"') == folder.photos
            assert 'href="/people"' in http.get("/").text
