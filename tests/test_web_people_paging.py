"""A big people list on the web: the API in pages (limit, offset, X-Total-Count,
Link) in the order of the whole list, the page a part at a time ("Show more"); and
people named like a fixed route ("history") are still reachable."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from web_support import AUTH, client_for

import facevec

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facevec.people") is None,
    reason="the people capability (facevec.people) is not part of this facevec",
)

NAMED = ["history", "who", "Ann", "bob", "unassigned", "summary", "merge"]
UNNAMED = 70


@pytest.fixture(scope="module")
def crowd(tmp_path_factory):
    """A gallery of vectors with many people: NAMED (one face each) and UNNAMED
    unnamed people of one to three faces, and one hidden person."""
    db = tmp_path_factory.mktemp("crowd") / "crowd.db"
    sizes = [1 + i % 3 for i in range(UNNAMED)]
    count = len(NAMED) + sum(sizes) + 1
    vectors = np.random.default_rng(3).normal(size=(count, 128))
    facevec.add(db, [f"/photos/p{i}.jpg" for i in range(count)], vectors, model_name="Dlib")
    with client_for(db) as http:
        faces = [
            f["face_id"]
            for f in http.get("/api/people/unassigned", params={"limit": 500}).json()["faces"]
        ]
        assert len(faces) == count
        for name in NAMED:
            made = http.post(
                "/api/people", json={"faces": [faces.pop()], "name": name}, headers=AUTH
            )
            assert made.status_code == 200, made.text
        for size in sizes:
            group, faces = faces[:size], faces[size:]
            assert http.post("/api/people", json={"faces": group}, headers=AUTH).status_code == 200
        hidden = http.post("/api/people", json={"faces": faces, "name": "Zed"}, headers=AUTH)
        zed = hidden.json()["person_id"]
        assert http.post(f"/api/people/{zed}/hide", json={}, headers=AUTH).status_code == 200
    return db


def test_the_people_list_comes_in_pages_in_the_order_of_the_whole_list(crowd):
    with client_for(crowd) as http:
        everyone = http.get("/api/people")
        assert everyone.status_code == 200
        whole = everyone.json()
        assert len(whole) == len(NAMED) + UNNAMED == int(everyone.headers["x-total-count"])
        assert "link" not in everyone.headers
        names = [p["name"] for p in whole[: len(NAMED)]]
        assert names == sorted(NAMED, key=str.casefold)
        assert [p["faces"] for p in whole[len(NAMED) :]] == sorted(
            (p["faces"] for p in whole[len(NAMED) :]), reverse=True
        )
        pages, url = [], "/api/people?limit=20"
        while url:
            answer = http.get(url)
            assert answer.status_code == 200 and answer.headers["x-total-count"] == str(len(whole))
            pages.append(answer.json())
            link = answer.headers.get("link")
            url = re.fullmatch(r'<(.+)>; rel="next"', link).group(1) if link else None
        assert [len(page) for page in pages] == [20, 20, 20, 17]
        assert [p["id"] for page in pages for p in page] == [p["id"] for p in whole]
        assert all(p["cover_url"] for page in pages for p in page)
        # Filters first, then the page: the unnamed from the 5th, 3 of them.
        unnamed = http.get("/api/people", params={"named": False, "offset": 4, "limit": 3})
        assert unnamed.json() == whole[len(NAMED) + 4 : len(NAMED) + 7]
        assert unnamed.headers["x-total-count"] == str(UNNAMED)
        hidden = http.get("/api/people", params={"hidden": True}).json()
        assert [p["name"] for p in hidden] == ["Zed"]
        past = http.get("/api/people", params={"offset": 1000, "limit": 5})
        assert past.json() == [] and past.headers["x-total-count"] == str(len(whole))
        for bad in ({"limit": 0}, {"limit": 10**6}, {"offset": -1}):
            refused = http.get("/api/people", params=bad)
            assert refused.status_code == 422, bad
            assert refused.json()["error"] == "RequestValidationError"


def test_a_person_named_like_a_fixed_route_or_with_digits_is_reachable(crowd):
    with client_for(crowd) as http:
        # The fixed routes stay what they were.
        assert isinstance(http.get("/api/people/history").json(), list)
        assert "total" in http.get("/api/people/unassigned").json()
        for name in NAMED:
            (found,) = http.get("/api/people", params={"name": name}).json()
            assert found["name"] == name
            shown = http.get(f"/api/people/{found['id']}").json()
            assert shown["person"]["name"] == name
        assert http.get("/api/people", params={"name": "nobody"}).json() == []
        assert http.get("/api/people/Ann").json()["person"]["name"] == "Ann"  # names still work


def test_the_people_page_shows_a_part_and_the_next_ones_on_asking(crowd):
    with client_for(crowd) as http:
        whole = [p["id"] for p in http.get("/api/people").json()]
        page = http.get("/people")
        assert page.status_code == 200
        shown = [
            int(i) for i in re.findall(r'class="group person" data-person-id="(\d+)"', page.text)
        ]
        assert shown == whole[:60]
        assert 'id="show-more"' in page.text and "60 of 77 shown" in page.text
        assert f'Named <span class="muted">({len(NAMED)})</span>' in page.text
        more = http.get("/people/more", params={"offset": 60})
        assert more.status_code == 200
        rest = [int(i) for i in re.findall(r'data-person-id="(\d+)"', more.text)]
        assert rest == whole[60:] and 'data-end="77"' in more.text
        # Without scripts, the link shows more on the page itself.
        longer = http.get("/people", params={"shown": 120}).text
        assert len(re.findall(r'class="group person"', longer)) == 77
        assert 'id="show-more"' not in longer
