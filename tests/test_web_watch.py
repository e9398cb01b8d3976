"""serve --watch: GET /api/watch says what the watcher does while a watched folder
changes (photos of examples/ copied in), the Status page shows it, and the settings
given on the command line (those of facevec watch) reach the watcher."""

from __future__ import annotations

import shutil
import time

import pytest
from click.testing import CliRunner
from pipeline_photos import EXAMPLES
from web_support import TOKEN

import facevec
from facevec.cli import cli
from facevec.storage import schema
from facevec.storage.database import open_database
from facevec.web import create_app

pytest.importorskip("deepface", reason="indexing photos needs deepface")

TIMEOUT = 180.0  # the first change also waits for the model to load
SMALL = EXAMPLES / "faces" / "id05" / "img25.jpg"  # 400 x 400: 160,000 pixels
LARGE = EXAMPLES / "faces" / "id01" / "img1.jpg"  # 473 x 640: 302,720 pixels


def _until(condition, what: str, timeout: float = TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def test_the_watch_endpoint_follows_a_change_in_a_watched_folder(tmp_path):
    from fastapi.testclient import TestClient

    folder = tmp_path / "photos"
    folder.mkdir()
    db = tmp_path / "watched.db"
    with open_database(db) as database:
        schema.create_schema(database)
    # A photo over max_pixels is not decoded: the setting given reaches the watcher.
    app = create_app(
        str(db),
        token=TOKEN,
        photos=[folder],
        watch=True,
        embed_workers=0,
        watch_options={"max_pixels": 200_000, "settle": 1.0, "workers": 1},
    )
    with TestClient(app, base_url="http://localhost") as http:

        def watch():
            answer = http.get("/api/watch")
            assert answer.status_code == 200, answer.text
            return answer.json()

        ready = _until(lambda: (w := watch())["state"] == "watching" and w, "the watcher")
        real = str(folder.resolve())
        assert ready["watching"] and ready["folders"] == [real]
        assert ready["settings"]["max_pixels"] == 200_000
        assert ready["settings"]["model_name"] == "Dlib"  # the default, for an empty gallery
        assert ready["settings"]["settle"] == 1.0
        assert ready["caught_up"][0]["files"] == 0 and ready["last_update"] is None
        assert ready["queued"] == 0 and ready["last_error"] is None

        shutil.copy(SMALL, folder / "small.jpg")
        shutil.copy(LARGE, folder / "large.jpg")
        # During: the changes wait for the folder to settle.
        waiting = _until(lambda: (w := watch())["queued"] and w, "the changes seen")
        assert waiting["queued"] in (1, 2) and waiting["updates"] == 0
        done = _until(lambda: (w := watch())["updates"] and not w["queued"] and w, "the update")
        assert done["state"] == "watching"
        assert done["last_update"]["indexed"] == 1 and done["last_update"]["errors"] == 1
        assert done["last_update"]["faces_added"] == 1
        files = {f["path"].rsplit("/", 1)[-1]: f["error"] for f in done["last_files"]}
        assert files.keys() == {"small.jpg", "large.jpg"}
        assert files["small.jpg"] is None and "pixels" in files["large.jpg"]
        [failed] = done["failed_files"]
        assert failed["path"].endswith("large.jpg") and failed["message"] == files["large.jpg"]
        assert facevec.info(db)["faces"] == 1

        # The Status page shows the same.
        page = http.get("/status").text
        assert 'id="watch" data-state="watching"' in page
        assert "large.jpg" in page and "pixels" in page
    # Stopped with the server.
    assert app.state.watch_state.as_dict()["state"] == "stopped"


def test_a_server_without_watch_says_so(tmp_path):
    from web_support import client_for

    db = tmp_path / "plain.db"
    with open_database(db) as database:
        schema.create_schema(database)
    with client_for(db) as http:
        answer = http.get("/api/watch").json()
        assert (answer["watching"], answer["state"], answer["folders"]) == (False, "off", [])
        assert 'id="watch"' not in http.get("/status").text


def test_serve_hands_watch_settings_to_the_watcher(tmp_path, monkeypatch):
    import uvicorn

    served = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: served.append(app))
    folder = tmp_path / "photos"
    folder.mkdir()
    db = tmp_path / "served.db"
    result = CliRunner().invoke(
        cli,
        ["serve", "--db", str(db), "--photos", str(folder), "--watch", "--embed-workers", "0",
         "--model", "Facenet", "--detector", "skip", "--batch-size", "3", "--workers", "2",
         "--min-face", "48", "--min-sharpness", "5", "--min-confidence", "0.5",
         "--settle", "0.25", "--max-pixels", "1000000"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    [app] = served
    watcher = app.state.watcher
    assert (watcher.model_name, watcher.detector_backend) == ("Facenet", "skip")
    assert (watcher.workers, watcher.settle) == (2, 0.25)
    assert watcher.settings == {
        "batch_size": 3,
        "exact": False,
        "max_pixels": 1_000_000,
        "min_face": 48,
        "min_sharpness": 5.0,
        "min_confidence": 0.5,
        "within": app.state.config.photo_roots,
    }
    assert app.state.config.max_pixels == 1_000_000  # uploads too
    shown = app.state.watch_state.as_dict()
    assert shown["state"] == "starting" and shown["settings"]["batch_size"] == 3

    # Defaults: the gallery's model (None until read), 200 megapixels for watched
    # photos, 40 for uploads.
    served.clear()
    plain = ["serve", "--db", str(db), "--photos", str(folder), "--embed-workers", "0"]
    assert CliRunner().invoke(cli, [*plain, "--watch"]).exit_code == 0
    watcher = served[0].state.watcher
    assert watcher.model_name is None and watcher.settings["max_pixels"] == 200_000_000
    assert watcher.settings["batch_size"] == 16 and served[0].state.config.max_pixels == 40_000_000

    # A watch setting without --watch would do nothing: refused, saying why.
    refused = CliRunner().invoke(cli, [*plain, "--workers", "2", "--exact"])
    assert refused.exit_code == 2
    assert "--workers, --exact set how --watch indexes: add --watch" in refused.output


def test_the_status_page_follows_the_watcher_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from test_web_browser import _chromium, _wait
    from web_support import live_server

    folder = tmp_path / "photos"
    folder.mkdir()
    db = tmp_path / "watched.db"
    with open_database(db) as database:
        schema.create_schema(database)
    app = create_app(
        str(db),
        photos=[folder],
        watch=True,
        embed_workers=0,
        watch_options={"settle": 0.2, "workers": 1},
    )
    driver = _chromium(tmp_path / "profile")
    try:
        with live_server(app) as url:
            driver.get(url + "/status")
            section = driver.find_element(By.ID, "watch")
            # The page asks GET /api/watch every few seconds: no reload needed.
            _wait(driver, lambda d: section.get_attribute("data-state") == "watching", TIMEOUT)
            assert "watching" in driver.find_element(By.ID, "watch-summary").text
            assert not driver.find_element(By.ID, "watch-files").is_displayed()
            shutil.copy(SMALL, folder / "new.jpg")
            table = driver.find_element(By.ID, "watch-files")
            _wait(driver, lambda d: table.is_displayed() and "new.jpg" in table.text, TIMEOUT)
            assert "updated" in table.text
            assert "1 update since" in driver.find_element(By.ID, "watch-summary").text
    finally:
        driver.quit()
