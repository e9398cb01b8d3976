"""The pages in a real browser: the system's Chromium, driven by Selenium.

A uvicorn server runs on a free loopback port in a thread, on the session's
gallery. Screenshots of each step are saved in build/screenshots (git ignores
build/), or in $FACEVEC_SCREENSHOTS; the folder is printed. With
FACEVEC_DOCS_SCREENSHOTS=1, small copies of the search, gallery and people pages
are also written to docs/images/, where the documentation shows them.
"""

from __future__ import annotations

import importlib.util
import io
import os
import shutil
from pathlib import Path

import pytest
from pipeline_photos import FACES
from web_support import live_server

from facevec.web import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
DOCS_IMAGES = Path(__file__).resolve().parents[1] / "docs" / "images"


@pytest.fixture(scope="module")
def screenshots() -> Path:
    default = Path(__file__).resolve().parents[1] / "build" / "screenshots"
    folder = Path(os.environ.get("FACEVEC_SCREENSHOTS") or default)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots of the browser tests: {folder}")
    return folder


@pytest.fixture(scope="module")
def server(gallery_db, gallery):
    with live_server(create_app(str(gallery_db), photos=[gallery, FACES])) as url:
        yield url


def _chromium(profile: Path, *extra_flags: str, log_requests: bool = False):
    """The system's Chromium, headless, driven by Selenium."""
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed")
    for program in (CHROMIUM, CHROMEDRIVER):
        if not os.access(program, os.X_OK):
            pytest.skip(f"{program} is missing (Debian: apt-get install chromium chromium-driver)")
    # Selenium must use the system's browser and driver, never download its own.
    os.environ["SE_OFFLINE"] = "true"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    if log_requests:  # every request the pages make, in the performance log
        options.set_capability("goog:loggingPrefs", {"performance": "ALL", "browser": "ALL"})
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1280,1600",
        f"--user-data-dir={profile}",
        *extra_flags,
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(CHROMEDRIVER))
    driver.set_page_load_timeout(180)
    return driver


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    driver = _chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def offline_browser(tmp_path_factory):
    """Chromium without a network: every request but to this machine goes to a
    proxy that is not there (loopback always bypasses a proxy)."""
    driver = _chromium(
        tmp_path_factory.mktemp("chromium-offline-profile"),
        "--proxy-server=http://127.0.0.1:9",
        log_requests=True,
    )
    yield driver
    driver.quit()


def _wait(driver, condition, timeout: float = 180):
    from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
    from selenium.webdriver.support.ui import WebDriverWait

    # A page that re-renders replaces the elements a condition may be reading:
    # Chromium reports a node gone mid-read either as stale or as an inspector error.
    def settled(d):
        try:
            return condition(d)
        except WebDriverException as err:
            if "does not belong to the document" in str(err):
                return False
            raise

    waiting = WebDriverWait(driver, timeout, ignored_exceptions=(StaleElementReferenceException,))
    return waiting.until(settled)


def _screenshot_for_docs(driver, name: str) -> None:
    """docs/images/web-NAME.png: the page as the browser shows it, small enough to commit."""
    if os.environ.get("FACEVEC_DOCS_SCREENSHOTS") != "1":
        return
    from PIL import Image, ImageChops

    page = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("RGB")
    # Down to the page's last content: the empty background below it says nothing.
    background = Image.new("RGB", page.size, page.getpixel((page.width - 1, page.height - 1)))
    content = ImageChops.difference(page, background).getbbox()
    if content:
        page = page.crop((0, 0, page.width, min(page.height, content[3] + 16)))
    page.thumbnail((960, 1200))
    DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
    page.quantize(colors=128).save(DOCS_IMAGES / f"web-{name}.png", optimize=True)


def _loaded_images(driver) -> list[str]:
    """src of every <img> on the page that the browser could decode."""
    return driver.execute_script(
        "return [...document.images].filter(i => i.complete && i.naturalWidth > 0)"
        ".map(i => i.getAttribute('src'))"
    )


def _search(driver, server: str, photo: Path) -> None:
    from selenium.webdriver.common.by import By

    driver.get(server + "/")
    # Choosing a file submits the form (app.js), as dropping one does.
    driver.find_element(By.ID, "photo-input").send_keys(str(photo))
    _wait(driver, lambda d: d.find_elements(By.ID, "results") or d.find_elements(By.ID, "error"))


# Not in the gallery; img3 is the hard one: its person comes first, just over the threshold.
@pytest.mark.parametrize("query", ["img3.jpg", "img23.jpg", "img24.jpg"])
def test_uploading_a_photo_shows_its_face_boxed_and_the_right_person_first(
    browser, server, screenshots, labels, query
):
    """Photos not in the gallery: the nearest stored face is another photo of their person."""
    from selenium.webdriver.common.by import By

    _search(browser, server, FACES / query)
    browser.save_screenshot(str(screenshots / f"search-{query}.png"))
    if query == "img23.jpg":
        _screenshot_for_docs(browser, "search")
    assert not browser.find_elements(By.ID, "error")
    boxes = browser.find_elements(By.CSS_SELECTOR, "figure.query svg rect.box")
    assert len(boxes) == 1
    assert float(boxes[0].get_attribute("width")) > 20
    matches = browser.find_elements(By.CSS_SELECTOR, ".query-face .match")
    assert len(matches) == 5  # k = 5 by default, nearest first
    first = matches[0]
    assert first.get_attribute("data-identity") == labels[query]
    distances = [float(m.find_element(By.CLASS_NAME, "distance").text) for m in matches]
    assert distances == sorted(distances)
    verdicts = [m.find_element(By.CLASS_NAME, "verdict").text for m in matches]
    assert set(verdicts) <= {"same person", "different"}
    assert [d <= 0.6 for d in distances] == [v == "same person" for v in verdicts]
    crops = [m.find_element(By.TAG_NAME, "img").get_attribute("src") for m in matches]
    loaded = _loaded_images(browser)
    assert all(any(src.endswith(seen) for seen in loaded) for src in crops)


def test_a_multi_face_photo_gets_one_box_and_one_row_of_matches_per_face(
    browser, server, screenshots
):
    from selenium.webdriver.common.by import By

    _search(browser, server, FACES / "couple.jpg")
    browser.save_screenshot(str(screenshots / "search-couple.png"))
    assert len(browser.find_elements(By.CSS_SELECTOR, "figure.query svg rect.box")) == 2
    assert len(browser.find_elements(By.CSS_SELECTOR, ".query-face")) == 2


def test_a_bad_upload_shows_the_error_on_the_page(browser, server, screenshots, tmp_path):
    from selenium.webdriver.common.by import By

    bad = tmp_path / "holiday.jpg"
    bad.write_text("this is not a photo")
    _search(browser, server, bad)
    browser.save_screenshot(str(screenshots / "search-bad-upload.png"))
    error = browser.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.text == "holiday.jpg cannot be decoded as an image (not a known image format)"
    assert not browser.find_elements(By.ID, "results")
    # The form is still there to try again.
    assert browser.find_element(By.ID, "photo-input")


def test_the_gallery_lists_people_and_a_click_shows_all_their_photos(
    browser, server, screenshots, labels
):
    from selenium.webdriver.common.by import By

    browser.get(server + "/gallery")
    browser.save_screenshot(str(screenshots / "gallery.png"))
    _screenshot_for_docs(browser, "gallery")
    groups = browser.find_elements(By.CSS_SELECTOR, "li.group")
    names = [g.get_attribute("data-identity") for g in groups]
    assert names[0] == "id01"  # most faces first
    assert {"id01", "id02", "id03", "id04", "id05", ""} == set(names)
    first = groups[0]
    assert "8 faces, 8 photos" in first.text
    assert len(first.find_elements(By.CSS_SELECTOR, ".crops img")) == 6  # a sample
    first.find_element(By.CLASS_NAME, "group-name").click()
    _wait(browser, lambda d: d.find_elements(By.ID, "identity-name"))
    browser.save_screenshot(str(screenshots / "identity-id01.png"))
    assert browser.find_element(By.ID, "identity-name").text == "id01"
    photos = browser.find_elements(By.CSS_SELECTOR, "li.photo")
    shown = {os.path.basename(p.get_attribute("data-img-name")) for p in photos}
    assert shown == {name for name, identity in labels.items() if identity == "id01"}
    assert len([src for src in _loaded_images(browser) if "/thumbnail.jpg" in src]) == 8
    # A face's page shows its photo (served from --photos) with the face boxed.
    photos[0].find_element(By.CSS_SELECTOR, ".crops a").click()
    _wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "figure.query svg rect.box"))
    browser.save_screenshot(str(screenshots / "face.png"))
    image = browser.find_element(By.CSS_SELECTOR, "figure.query svg image")
    assert image.get_attribute("href").startswith("/photos/")


def test_the_status_page_shows_the_gallery_and_is_read_only(
    browser, server, screenshots, gallery_db
):
    from selenium.webdriver.common.by import By

    import facevec

    browser.get(server + "/status")
    browser.save_screenshot(str(screenshots / "status.png"))
    rows = browser.find_element(By.ID, "info").text.splitlines()
    assert "model_name Dlib" in rows and f"faces {facevec.info(gallery_db)['faces']}" in rows
    assert "Every file seen was indexed." in browser.page_source
    assert "read-only" in browser.find_element(By.TAG_NAME, "header").text
    assert not browser.find_elements(By.ID, "index-form")


def test_the_api_docs_render_offline_from_the_servers_own_files(
    offline_browser, server, screenshots
):
    """/docs loads Swagger UI from this server alone: with no network, the page
    lists every operation, under a policy that allows scripts from this origin only."""
    import json
    import urllib.request

    from selenium.webdriver.common.by import By

    with urllib.request.urlopen(server + "/openapi.json", timeout=60) as answer:
        operations = sum(len(methods) for methods in json.load(answer)["paths"].values())
    offline_browser.get_log("performance")  # what the new tab page asked: not ours
    offline_browser.get(server + "/docs")
    _wait(offline_browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) > 0)
    offline_browser.save_screenshot(str(screenshots / "api-docs-offline.png"))
    assert len(offline_browser.find_elements(By.CSS_SELECTOR, ".opblock")) == operations
    assert "facevec" in offline_browser.find_element(By.CSS_SELECTOR, ".info .title").text
    requested = {
        json.loads(entry["message"])["message"]["params"]["request"]["url"]
        for entry in offline_browser.get_log("performance")
        if '"Network.requestWillBeSent"' in entry["message"]
    }
    web = sorted(url for url in requested if not url.startswith(("data:", "chrome:")))
    assert server + "/openapi.json" in web
    assert all(url.startswith(server + "/") for url in web), web
    problems = [e["message"] for e in offline_browser.get_log("browser") if e["level"] == "SEVERE"]
    assert problems == []  # no refused script or style, nothing failed to load


if importlib.util.find_spec("facevec.people") is not None:

    def test_people_open_a_person_and_name_them_from_the_page(
        browser, screenshots, gallery_db_copy, gallery
    ):
        from selenium.webdriver.common.by import By
        from web_support import TOKEN

        app = create_app(str(gallery_db_copy), token=TOKEN, photos=[gallery, FACES])
        with live_server(app) as url:
            browser.get(url + "/people")
            browser.save_screenshot(str(screenshots / "people.png"))
            _screenshot_for_docs(browser, "people")
            person = browser.find_element(By.CSS_SELECTOR, 'li.person[data-name="id02"]')
            person.find_element(By.CLASS_NAME, "group-name").click()
            _wait(browser, lambda d: d.find_elements(By.ID, "name-form"))
            assert browser.find_element(By.ID, "person-name").text == "id02"
            # Without the token the form is disabled, and a note says how to unlock it.
            assert not browser.find_element(By.CSS_SELECTOR, "#name-form button").is_enabled()
            assert "Editing is locked" in browser.find_element(By.CLASS_NAME, "locked-note").text
            # A wrong token: the page says why the change is refused.
            browser.find_element(By.ID, "token-input").send_keys("wrong")
            browser.find_element(By.CSS_SELECTOR, "#token-form button").click()
            name = browser.find_element(By.ID, "name-input")
            name.clear()
            name.send_keys("Jennifer")
            browser.find_element(By.CSS_SELECTOR, "#name-form button").click()
            error = _wait(browser, lambda d: d.find_elements(By.ID, "error"))[0]
            assert "the token sent is wrong" in error.text
            browser.find_element(By.ID, "token-input").send_keys(TOKEN)
            browser.find_element(By.CSS_SELECTOR, "#token-form button").click()

            def name_the_person(driver) -> bool:
                field = driver.find_element(By.ID, "name-input")  # after any re-render
                field.clear()
                field.send_keys("Jennifer")
                driver.find_element(By.CSS_SELECTOR, "#name-form button").click()
                return True

            _wait(browser, name_the_person)
            _wait(browser, lambda d: d.find_element(By.ID, "person-name").text == "Jennifer")
            browser.save_screenshot(str(screenshots / "person-named.png"))
            browser.execute_script("sessionStorage.clear()")
