"""A person with many faces on the web: their faces a page at a time (GET
/api/people/{id}/faces, "Show more faces" on the page), selection across the parts
shown, and the person picker (GET /api/people?q=) that replaced the lists of
everyone, in the API and in real Chromium."""

from __future__ import annotations

import importlib.util
import re

import numpy as np
import pytest
from web_support import AUTH, TOKEN, client_for, live_server

import facevec
from facevec.web import create_app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facevec.people") is None,
    reason="the people capability (facevec.people) is not part of this facevec",
)

ANN_FACES = 230  # more than two pages of the person page (100 faces each)
NAMED = {"Joanne": 2, "anna": 1, "Bob": 1, "Zoe": 1}
UNNAMED = [3, 1, 2]


@pytest.fixture(scope="module")
def big(tmp_path_factory):
    """(db, {name or 'unnamed-i': person id}): Ann with ANN_FACES faces, the NAMED
    people, and unnamed people of UNNAMED sizes; every face in its own photo."""
    db = tmp_path_factory.mktemp("big-person") / "big.db"
    count = ANN_FACES + sum(NAMED.values()) + sum(UNNAMED)
    vectors = np.random.default_rng(5).normal(size=(count, 128))
    facevec.add(db, [f"/photos/p{i:04d}.jpg" for i in range(count)], vectors, model_name="Dlib")
    people = {}
    with client_for(db) as http:
        faces = []
        while len(faces) < count:
            page = http.get("/api/people/unassigned", params={"limit": 500, "offset": len(faces)})
            faces += [f["face_id"] for f in page.json()["faces"]]
        groups = [("Ann", ANN_FACES), *NAMED.items()]
        groups += [(f"unnamed-{i}", size) for i, size in enumerate(UNNAMED)]
        for name, size in groups:
            group, faces = faces[:size], faces[size:]
            body = {"faces": group, "name": None if name.startswith("unnamed") else name}
            made = http.post("/api/people", json=body, headers=AUTH)
            assert made.status_code == 200, made.text
            people[name] = made.json()["person_id"]
    return db, people


def test_a_persons_faces_come_in_pages_that_add_up_to_all_of_them(big):
    db, people = big
    ann = people["Ann"]
    with client_for(db) as http:
        everything = http.get(f"/api/people/{ann}").json()["faces"]
        assert len(everything) == ANN_FACES
        seen, offset, link = [], 0, f"/api/people/{ann}/faces?limit=64"
        while link:
            page = http.get(link)
            assert page.status_code == 200, page.text
            body = page.json()
            assert body["total"] == ANN_FACES == int(page.headers["x-total-count"])
            assert body["offset"] == offset and body["limit"] == 64
            assert body["person"]["id"] == ann and body["person"]["faces"] == ANN_FACES
            assert len(body["faces"]) == min(64, ANN_FACES - offset)
            assert [p["faces"] for p in body["photos"]] == [[f["face_id"]] for f in body["faces"]]
            seen += body["faces"]
            offset += 64
            found = re.fullmatch(r'<([^>]+)>; rel="next"', page.headers.get("link", ""))
            link = found.group(1) if found else None
        assert seen == everything  # the same faces, in the same order, once each
        # The default page, by name too; past the end: none, the total still said.
        first = http.get("/api/people/Ann/faces").json()
        assert first["limit"] == 100 and first["faces"] == everything[:100]
        past = http.get(f"/api/people/{ann}/faces", params={"offset": 5000}).json()
        assert (past["faces"], past["total"]) == ([], ANN_FACES)
        folder = http.get(f"/api/people/{ann}/faces", params={"source": "folder"}).json()
        assert folder["total"] == 0  # made by a user: confirmed, none from folders
        for bad in ({"limit": 0}, {"limit": 501}, {"offset": -1}, {"source": "nobody"}):
            answer = http.get(f"/api/people/{ann}/faces", params=bad)
            assert answer.status_code == 422, bad
            assert next(iter(bad)) in answer.json()["detail"]
        assert http.get("/api/people/999999/faces").status_code == 404


def test_the_person_search_finds_names_in_any_case_named_first(big):
    db, people = big
    with client_for(db) as http:

        def labels(**params):
            answer = http.get("/api/people", params=params)
            assert answer.status_code == 200, answer.text
            return [p["label"] for p in answer.json()]

        # Starting with what was typed first, then containing it; any case.
        assert labels(q="ann") == ["Ann", "anna", "Joanne"]
        assert labels(q="ANN") == labels(q=" ann ") == ["Ann", "anna", "Joanne"]
        assert labels(q="ann", limit=2) == ["Ann", "anna"]
        assert labels(q="o") == ["Bob", "Joanne", "Zoe"] + [
            f"person {people[f'unnamed-{i}']}"
            for i in (0, 2, 1)  # unnamed: most faces first
        ]
        assert labels(q="nobody") == []
        unnamed = people["unnamed-1"]
        assert labels(q=f"person {unnamed}") == [f"person {unnamed}"]
        assert http.get("/api/people", params={"q": "x" * 201}).status_code == 422


def test_the_person_page_reads_one_page_of_faces(big):
    db, people = big
    with client_for(db) as http:
        page = http.get(f"/people/{people['Ann']}")
        assert page.status_code == 200
        assert page.text.count('class="face-pick"') == 100
        assert "100 of 230 faces shown" in page.text
        assert 'id="show-more-faces"' in page.text
        # No list of everyone in the page: the pickers ask as the user types.
        assert "<select" not in page.text and 'id="move-target"' in page.text
        more = http.get(f"/people/{people['Ann']}/more", params={"offset": 200})
        assert more.text.count('class="face-pick"') == 30 and 'data-end="230"' in more.text
        # Without scripts the link asks for more on the page itself.
        assert http.get(f"/people/{people['Ann']}?shown=200").text.count('class="face-pick"') == 200


def _by(name):
    from selenium.webdriver.common.by import By

    return getattr(By, name)


def test_faces_selected_on_every_part_shown_move_to_a_person_typed(big, tmp_path):
    from selenium.webdriver.common.keys import Keys
    from test_web_browser import _chromium, _wait
    from test_web_people_browser import _choose_person, _click_and_reload, _open, _unlock

    db, people = big
    ann, bob = people["Ann"], people["Bob"]
    driver = _chromium(tmp_path / "profile")
    try:
        with live_server(create_app(str(db), token=TOKEN)) as url:
            _open(driver, f"{url}/people/{ann}")
            _unlock(driver)

            def shown():
                return [
                    int(box.get_attribute("value"))
                    for box in driver.find_elements(_by("CSS_SELECTOR"), "input.pick")
                ]

            first = shown()
            assert len(first) == 100
            driver.find_element(_by("CSS_SELECTOR"), f'input.pick[value="{first[5]}"]').click()
            driver.find_element(_by("ID"), "show-more-faces").click()
            _wait(driver, lambda d: len(shown()) == 200)
            assert driver.find_element(_by("ID"), "faces-shown").text == "200 of 230 faces shown"
            # The link is a link: the keyboard opens the last part.
            driver.find_element(_by("ID"), "show-more-faces").send_keys(Keys.ENTER)
            _wait(driver, lambda d: len(shown()) == 230)
            assert not driver.find_element(_by("ID"), "show-more-faces").is_displayed()
            assert shown()[:100] == first
            later = shown()[150]
            driver.find_element(_by("CSS_SELECTOR"), f'input.pick[value="{later}"]').click()
            count = driver.find_element(_by("CSS_SELECTOR"), "#face-tools .selected-count")
            assert count.text == "2 selected"

            # Move without choosing anyone: nothing moves, the page says what to do.
            driver.find_element(_by("ID"), "move-button").click()
            error = _wait(driver, lambda d: d.find_elements(_by("ID"), "error"))[0]
            assert "Choose a person first" in error.text

            _choose_person(driver, "move-target", "b", bob)
            _click_and_reload(driver, driver.find_element(_by("ID"), "move-button"))
            with client_for(db) as http:
                moved = http.get(f"/api/people/{bob}/faces").json()
                assert {first[5], later} <= {f["face_id"] for f in moved["faces"]}
                assert moved["total"] == 3
                assert http.get(f"/api/people/{ann}/faces").json()["total"] == ANN_FACES - 2
                # Back, as it was (the module's other tests count Ann's faces).
                assert http.post("/api/people/undo", headers=AUTH).status_code == 200
            assert "moved 2 faces" in driver.find_element(_by("ID"), "action-state").text
    finally:
        driver.quit()
