"""The people pages in real Chromium, as a person uses them: unlock, select faces,
move, split, reject, confirm, merge after the dialog, undo, hide, the unassigned
faces; and a locked page, whose edit controls do nothing.

The people are made through the API first (test_web_people_actions shows each
action there); the browser then does every change by clicking.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
from pipeline_photos import FACES
from test_web_browser import _chromium, _screenshot_for_docs, _search, _wait
from test_web_people_actions import all_faces, faces_of, make_ann_and_bob, who
from web_support import TOKEN, client_for, live_server

from facevec.web import create_app

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facevec.people") is None,
    reason="the people capability (facevec.people) is not part of this facevec",
)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _chromium(tmp_path_factory.mktemp("chromium-people-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def screenshots() -> Path:
    default = Path(__file__).resolve().parents[1] / "build" / "screenshots"
    folder = Path(os.environ.get("FACEVEC_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture
def site(gallery_db_copy, gallery, labels):
    """(url, test client, faces, id01, id02) of a server with Ann and Bob made."""
    with client_for(gallery_db_copy) as http:
        faces, id01, id02 = make_ann_and_bob(http, labels)
        app = create_app(str(gallery_db_copy), token=TOKEN, photos=[gallery, FACES])
        with live_server(app) as url:
            yield url, http, faces, id01, id02


def _by(name):
    from selenium.webdriver.common.by import By

    return getattr(By, name)


def _unlock(driver) -> None:
    driver.find_element(_by("ID"), "token-input").send_keys(TOKEN)
    driver.find_element(_by("CSS_SELECTOR"), "#token-form button").click()
    _wait(
        driver,
        lambda d: d.execute_script(
            "return [...document.querySelectorAll('fieldset[data-edit]')].every(f => !f.disabled)"
        ),
    )


def _open(driver, url: str) -> None:
    driver.get(url)
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")


def _click_and_reload(driver, element) -> None:
    """Click a control whose action reloads the page; wait for the new page."""
    old = driver.find_element(_by("TAG_NAME"), "html")
    element.click()
    _wait(driver, lambda d: _stale(old) or d.find_elements(_by("ID"), "error"))
    _wait(driver, lambda d: d.execute_script("return document.readyState") == "complete")
    errors = driver.find_elements(_by("ID"), "error")
    assert not errors, errors[0].text


def _stale(element) -> bool:
    from selenium.common.exceptions import StaleElementReferenceException

    try:
        element.is_enabled()
        return False
    except StaleElementReferenceException:
        return True


def _pick(driver, face_ids) -> None:
    for face_id in face_ids:
        box = driver.find_element(_by("CSS_SELECTOR"), f'input.pick[value="{face_id}"]')
        if not box.is_selected():
            box.click()


def _choose_person(driver, picker: str, typed: str, person_id: int, keyboard: bool = True) -> None:
    """Type part of a name into a person picker, then choose the person from its
    list: with the arrow keys and Enter, or with a click."""
    from selenium.webdriver.common.keys import Keys

    box = driver.find_element(_by("ID"), picker)
    box.clear()
    box.send_keys(typed)
    option = f'#{picker}-list li[data-person-id="{person_id}"]'
    _wait(driver, lambda d: d.find_elements(_by("CSS_SELECTOR"), option))
    if keyboard:
        for _ in range(25):  # down the list to the person
            chosen = driver.find_elements(_by("CSS_SELECTOR"), option + '[aria-selected="true"]')
            if chosen:
                break
            box.send_keys(Keys.ARROW_DOWN)
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element(_by("CSS_SELECTOR"), option).click()
    _wait(driver, lambda d: box.get_attribute("data-person-id") == str(person_id))


def _pictures_loaded(driver) -> None:
    """Wait for every picture of the page (a screenshot shows them all)."""
    driver.execute_script("for (const i of document.images) i.loading = 'eager';")
    _wait(driver, lambda d: d.execute_script("return [...document.images].every(i => i.complete)"))


def _edit_buttons(driver):
    return driver.find_elements(_by("CSS_SELECTOR"), "fieldset[data-edit] button")


def test_a_locked_page_shows_no_working_edit_control(browser, site):
    url, http, faces, id01, _ = site
    ann = http.get("/api/people/Ann").json()["person"]["id"]
    history = http.get("/api/people/history").json()
    for page in ("/people", f"/people/{ann}", "/status"):
        _open(browser, url + page)
        buttons = _edit_buttons(browser)
        assert buttons, page
        assert not [b.text for b in buttons if b.is_enabled()], page
        note = browser.find_element(_by("CLASS_NAME"), "locked-note")
        assert note.is_displayed() and "Editing is locked" in note.text
        for button in buttons:  # a click on a disabled control does nothing
            if button.is_displayed():
                button.click()
        assert not browser.find_elements(_by("TAG_NAME"), "dialog[open]")
    assert http.get("/api/people/history").json() == history
    # Unlocked, the same controls work, and the note is gone.
    _open(browser, f"{url}/people/{ann}")
    _unlock(browser)
    assert all(b.is_enabled() for b in _edit_buttons(browser))
    assert not browser.find_element(_by("CLASS_NAME"), "locked-note").is_displayed()
    browser.execute_script("sessionStorage.clear()")


def test_a_person_page_does_every_change_by_clicking(browser, site, screenshots):
    url, http, faces, id01, id02 = site
    ann = http.get("/api/people/Ann").json()["person"]["id"]
    bob = http.get("/api/people/Bob").json()["person"]["id"]
    _open(browser, url + "/people")
    _unlock(browser)

    # Group faces: id01's three faces of no one become Ann's suggestions.
    _click_and_reload(browser, browser.find_element(_by("ID"), "group-faces"))
    assert "Done: grouped" in browser.find_element(_by("ID"), "action-state").text
    browser.find_element(
        _by("CSS_SELECTOR"), f'li.person[data-person-id="{ann}"] .group-name'
    ).click()
    _wait(browser, lambda d: d.find_elements(_by("ID"), "suggestions"))
    _pictures_loaded(browser)
    browser.save_screenshot(str(screenshots / "person-suggestions.png"))
    _screenshot_for_docs(browser, "person")
    assert "Is this Ann?" in browser.find_element(_by("ID"), "suggestions").text
    suggested = [
        int(s.get_attribute("data-face-id"))
        for s in browser.find_elements(_by("CSS_SELECTOR"), "li.suggestion")
    ]
    expected = [s["face_id"] for s in http.get(f"/api/people/{ann}/suggestions").json()]
    assert suggested == expected and set(id01[5:]) <= set(suggested)  # least sure first

    # Yes to the first, no to the next.
    yes = browser.find_element(_by("CSS_SELECTOR"), f'.confirm-yes[data-face-id="{suggested[0]}"]')
    _click_and_reload(browser, yes)
    assert who(http, [suggested[0]])[suggested[0]]["source"] == "confirmed"
    no = browser.find_element(_by("CSS_SELECTOR"), f'.confirm-no[data-face-id="{suggested[1]}"]')
    _click_and_reload(browser, no)
    assert who(http, [suggested[1]])[suggested[1]]["person_id"] is None

    # A suggestion ticked in the photo grid, then "Yes, Ann": confirmed too.
    _pick(browser, [suggested[2]])
    _click_and_reload(browser, browser.find_element(_by("ID"), "confirm-button"))
    assert who(http, [suggested[2]])[suggested[2]]["source"] == "confirmed"
    assert suggested[2] not in [
        int(s.get_attribute("data-face-id"))
        for s in browser.find_elements(_by("CSS_SELECTOR"), "li.suggestion")
    ]

    # Select two faces at once and split them into a new person.
    _pick(browser, id01[:2])
    assert (
        browser.find_element(_by("CSS_SELECTOR"), "#face-tools .selected-count").text
        == "2 selected"
    )
    browser.find_element(_by("ID"), "split-name").send_keys("Carol")
    _click_and_reload(browser, browser.find_element(_by("ID"), "split-button"))
    carol = http.get("/api/people/Carol").json()
    assert sorted(f["face_id"] for f in carol["faces"]) == id01[:2]

    # Move one face to Bob (typed, chosen with the keyboard), reject another.
    _pick(browser, [id01[2]])
    _choose_person(browser, "move-target", "bo", bob)
    assert browser.find_element(_by("ID"), "move-target").get_attribute("value") == "Bob"
    _click_and_reload(browser, browser.find_element(_by("ID"), "move-button"))
    assert who(http, [id01[2]])[id01[2]]["person_id"] == bob
    _pick(browser, [id01[3]])
    _click_and_reload(browser, browser.find_element(_by("ID"), "reject-button"))
    assert who(http, [id01[3]])[id01[3]]["person_id"] is None
    assert "rejected face" in browser.find_element(_by("ID"), "action-state").text

    # Undo brings the rejected face back, and the history says so.
    _click_and_reload(browser, browser.find_element(_by("ID"), "undo-button"))
    assert who(http, [id01[3]])[id01[3]]["person_id"] == ann
    latest = browser.find_element(_by("CSS_SELECTOR"), "#history li.edit-entry")
    assert "rejected" in latest.text and "undone" in latest.text

    # Cover: one face chosen stands for Ann.
    _pick(browser, [id01[4]])
    _click_and_reload(browser, browser.find_element(_by("ID"), "cover-button"))
    assert browser.find_element(_by("ID"), "person-cover").get_attribute("data-face-id") == str(
        id01[4]
    )

    # Merge Carol into Ann: a dialog shows both side by side; Cancel changes nothing.
    carol_id = carol["person"]["id"]
    _choose_person(browser, "merge-source", "CAR", carol_id, keyboard=False)
    browser.find_element(_by("ID"), "merge-button").click()
    dialog = _wait(browser, lambda d: d.find_elements(_by("CSS_SELECTOR"), "dialog[open]"))[0]
    other = dialog.find_element(_by("CSS_SELECTOR"), "#merge-other img")
    _wait(
        browser,
        lambda d: (
            other.is_displayed()
            and d.execute_script(
                "return arguments[0].complete && arguments[0].naturalWidth > 0", other
            )
        ),
    )
    assert "/thumbnail.jpg" in other.get_attribute("src")
    browser.save_screenshot(str(screenshots / "merge-dialog.png"))
    assert "Ann" in dialog.find_element(_by("ID"), "merge-this").text
    assert "Carol" in dialog.find_element(_by("ID"), "merge-other").text
    assert "2 faces" in dialog.find_element(_by("ID"), "merge-other").text
    dialog.find_element(_by("ID"), "merge-cancel").click()
    assert not browser.find_elements(_by("CSS_SELECTOR"), "dialog[open]")
    assert http.get(f"/api/people/{carol_id}").status_code == 200
    browser.find_element(_by("ID"), "merge-button").click()
    dialog = _wait(browser, lambda d: d.find_elements(_by("CSS_SELECTOR"), "dialog[open]"))[0]
    _click_and_reload(browser, dialog.find_element(_by("ID"), "merge-confirm"))
    assert http.get(f"/api/people/{carol_id}").status_code == 404
    assert set(id01[:2]) <= {f["face_id"] for f in http.get(f"/api/people/{ann}").json()["faces"]}

    # Rename, then hide: Ann leaves the people page, and is under "Hidden people".
    name = browser.find_element(_by("ID"), "name-input")
    name.clear()
    name.send_keys("Ann Lee")
    _click_and_reload(browser, browser.find_element(_by("CSS_SELECTOR"), "#name-form button"))
    assert browser.find_element(_by("ID"), "person-name").text == "Ann Lee"
    _click_and_reload(browser, browser.find_element(_by("ID"), "hide-button"))
    assert "Hidden from the people page" in browser.find_element(_by("ID"), "person-counts").text
    _open(browser, url + "/people")
    assert not browser.find_elements(_by("CSS_SELECTOR"), f'li.person[data-person-id="{ann}"]')
    browser.find_element(_by("ID"), "hidden-people").click()
    _wait(
        browser,
        lambda d: d.find_elements(_by("CSS_SELECTOR"), f'li.person[data-person-id="{ann}"]'),
    )
    browser.execute_script("sessionStorage.clear()")


def test_unassigned_faces_are_named_given_and_set_aside_from_the_people_page(
    browser, site, screenshots, labels
):
    url, http, faces, _, _ = site
    rows = http.get("/api/people/unassigned").json()["faces"]
    loose = [f["face_id"] for f in rows]
    assert len(loose) >= 5  # id01's three and the other faces of no one
    # Two faces of one photo are two people: the face given is from another photo.
    named_one = loose[:1]
    given = [next(f["face_id"] for f in rows if f["img_name"] != rows[0]["img_name"])]
    aside = [f for f in loose if f not in named_one + given][:3]
    _open(browser, url + "/people")
    _unlock(browser)
    _pictures_loaded(browser)
    browser.save_screenshot(str(screenshots / "people-unassigned.png"))
    _screenshot_for_docs(browser, "people")
    shown = {
        int(li.get_attribute("data-face-id"))
        for li in browser.find_elements(_by("CSS_SELECTOR"), "#unassigned li.loose-face")
    }
    assert set(loose) <= shown

    # Name one face: a new person.
    _pick(browser, named_one)
    browser.find_element(_by("ID"), "loose-name").send_keys("Dana")
    _click_and_reload(browser, browser.find_element(_by("ID"), "loose-new"))
    assert who(http, named_one)[named_one[0]]["person"] == "Dana"
    named = [
        li.get_attribute("data-name")
        for li in browser.find_elements(_by("CSS_SELECTOR"), "#named-people li.person")
    ]
    assert "Dana" in named and named == sorted(named, key=str.casefold)

    # Give a face to Dana (typed, picked), set three aside at once.
    dana = who(http, named_one)[named_one[0]]["person_id"]
    _pick(browser, given)
    _choose_person(browser, "loose-target", "an", dana)
    _click_and_reload(browser, browser.find_element(_by("ID"), "loose-assign"))
    assert who(http, given)[given[0]]["person_id"] == dana
    _pick(browser, aside)
    _click_and_reload(browser, browser.find_element(_by("ID"), "loose-dismiss"))
    left = {
        int(li.get_attribute("data-face-id"))
        for li in browser.find_elements(_by("CSS_SELECTOR"), "#unassigned li.loose-face")
    }
    assert not left & set(named_one + given + aside)
    assert "3 set aside" in browser.find_element(_by("ID"), "people-summary").text
    assert set(all_faces(http)) | set(aside) == set(faces)
    browser.execute_script("sessionStorage.clear()")


def test_search_and_face_pages_say_who_each_face_is(browser, site, screenshots, labels):
    url, http, faces, id01, _ = site
    assert labels["img3.jpg"] == "id02"  # Bob's, not in the gallery
    _search(browser, url, FACES / "img3.jpg")
    browser.save_screenshot(str(screenshots / "search-who.png"))
    answer = browser.find_element(_by("CSS_SELECTOR"), ".query-face .who-is")
    assert answer.get_attribute("data-decision") == "matched"
    assert answer.text == "Who is this? Bob"
    bob = http.get("/api/people/Bob").json()["person"]["id"]
    assert (
        answer.find_element(_by("TAG_NAME"), "a").get_attribute("href").endswith(f"/people/{bob}")
    )
    matches = browser.find_elements(_by("CSS_SELECTOR"), ".query-face .match")
    people = {int(m.get_attribute("data-face-id")): m.get_attribute("data-person") for m in matches}
    expected = who(http, list(people))
    assert people == {f: (expected[f]["person"] or "") for f in people}
    assert "Bob" in people.values()
    # A face's page says whose it is.
    _open(browser, f"{url}/face/{id01[0]}")
    assert "This is Ann" in browser.find_element(_by("ID"), "face-person").text
    loose = http.get("/api/people/unassigned").json()["faces"][0]["face_id"]
    _open(browser, f"{url}/face/{loose}")
    assert "belongs to no one yet" in browser.find_element(_by("ID"), "face-person").text
    assert faces_of(faces, labels, "id01") == id01
