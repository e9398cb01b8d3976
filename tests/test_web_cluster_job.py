"""Grouping faces into people from the web is a background job, as indexing is: POST
/api/people/cluster answers at once (202), GET /api/jobs/{id} says how many faces
are compared; one job runs at a time; a cancelled run writes nothing. On the page,
"Group faces" (and "Index") show the progress and lock the edit controls until the
run ends.

The clustering is slowed down here (a gate the test opens) so that the run is
seen while it runs; what it computes is the real clustering's."""

from __future__ import annotations

import importlib.util
import threading
import time

import numpy as np
import pytest
from web_support import AUTH, TOKEN, client_for, live_server

import facevec

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("facevec.people") is None,
    reason="the people capability (facevec.people) is not part of this facevec",
)

FACES = 120


@pytest.fixture
def loose_gallery(tmp_path):
    """Vectors in a few tight groups, none with a person yet."""
    rng = np.random.default_rng(11)
    centres = rng.normal(size=(6, 128)) * 0.2
    vectors = centres[np.arange(FACES) % 6] + rng.normal(size=(FACES, 128)) * 0.005
    db = tmp_path / "loose.db"
    names = [f"/photos/p{i}.jpg" for i in range(FACES)]
    facevec.add(db, names, vectors, model_name="Dlib", people=False)
    return db


@pytest.fixture
def gate(monkeypatch):
    """Clustering that reports its progress one face at a time and stops halfway
    until the test sets the returned event."""
    from facevec.people import clustering

    opened = threading.Event()
    real = clustering.cluster_vectors

    def slowed(*args, progress=None, **kwargs):
        for done in range(FACES):
            if done == FACES // 2:
                assert opened.wait(120), "the test never opened the gate"
            if progress is not None:
                progress(1)
            time.sleep(0.001)
        return real(*args, **kwargs)

    monkeypatch.setattr(clustering, "cluster_vectors", slowed)
    return opened


def wait_for(http, job_id: str, condition, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = http.get(f"/api/jobs/{job_id}").json()
        if condition(job) or time.monotonic() > deadline:
            return job
        time.sleep(0.02)


def test_grouping_faces_runs_in_the_background_with_progress(loose_gallery, gate):
    with client_for(loose_gallery) as http:
        before = http.get("/api/people/summary").json()
        assert before["unassigned"] == FACES and before["people"] == 0
        started = http.post("/api/people/cluster", json={}, headers=AUTH)
        assert started.status_code == 202, started.text
        job = started.json()
        assert started.headers["location"] == f"/api/jobs/{job['id']}"
        assert job["kind"] == "cluster" and job["state"] in ("queued", "running")
        job = wait_for(http, job["id"], lambda j: j["done"] >= FACES // 2)
        assert job["state"] == "running" and job["total"] == FACES, job
        assert job["done"] == FACES // 2
        # One job at a time, and the pages know one runs (they lock their controls).
        busy = http.post("/api/people/cluster", json={}, headers=AUTH)
        assert busy.status_code == 409 and busy.json()["error"] == "JobRunningError"
        assert "grouping faces" in busy.json()["detail"]
        assert f'data-running-job="{job["id"]}"' in http.get("/people").text
        assert http.get("/api/people/summary").json() == before  # nothing written yet
        # Stopped: nothing is written.
        assert http.delete(f"/api/jobs/{job['id']}").status_code == 401
        assert http.delete(f"/api/jobs/{job['id']}", headers=AUTH).status_code == 200
        gate.set()
        stopped = wait_for(http, job["id"], lambda j: j["state"] != "running")
        assert stopped["state"] == "cancelled" and stopped["report"] is None
        assert http.get("/api/people/summary").json() == before
        assert 'data-running-job=""' in http.get("/people").text
        # Run to the end: the report, and the people it made.
        again = http.post("/api/people/cluster", json={}, headers=AUTH).json()
        done = wait_for(http, again["id"], lambda j: j["state"] != "running")
        assert done["state"] == "done" and done["done"] == done["total"] == FACES
        report = done["report"]
        assert report["unassigned"] == FACES and report["new_people"] == 6
        assert report["faces_in_new_people"] == FACES
        after = http.get("/api/people/summary").json()
        assert after["people"] == 6 and after["unassigned"] == 0
        assert [j["id"] for j in http.get("/api/jobs").json()][:2] == [again["id"], job["id"]]


def test_a_wrong_metric_is_refused_before_any_job_starts(loose_gallery):
    with client_for(loose_gallery) as http:
        bad = http.post("/api/people/cluster", json={"metric": "manhattan"}, headers=AUTH)
        assert bad.status_code == 400 and "manhattan" in bad.json()["detail"]
        assert http.get("/api/jobs").json() == []


def test_the_page_shows_the_run_and_locks_its_controls_until_it_ends(loose_gallery, gate, tmp_path):
    from test_web_browser import _chromium, _wait
    from test_web_people_browser import _by, _edit_buttons, _open, _unlock

    browser = _chromium(tmp_path / "profile")
    try:
        app = facevec.web.create_app(str(loose_gallery), token=TOKEN)
        with live_server(app) as url:
            _open(browser, url + "/people")
            _unlock(browser)
            browser.find_element(_by("ID"), "group-faces").click()
            running = browser.find_element(_by("ID"), "running-job")
            _wait(browser, lambda d: f"{FACES // 2} of {FACES} compared" in running.text)
            assert running.is_displayed() and "Grouping faces" in running.text
            buttons = _edit_buttons(browser)
            assert buttons and not [b.text for b in buttons if b.is_enabled()]
            # Another tab opened meanwhile follows the run too, locked as well.
            _open(browser, url + "/people")
            _wait(browser, lambda d: "compared" in d.find_element(_by("ID"), "running-job").text)
            assert not browser.find_element(_by("ID"), "group-faces").is_enabled()
            gate.set()
            _wait(
                browser, lambda d: "Done: grouped" in d.find_element(_by("ID"), "action-state").text
            )
            state = browser.find_element(_by("ID"), "action-state").text
            assert f"grouped {FACES} faces" in state and "6 new people" in state
            assert not browser.find_element(_by("ID"), "running-job").is_displayed()
            assert browser.find_element(_by("ID"), "group-faces").is_enabled()
            cards = browser.find_elements(_by("CSS_SELECTOR"), "#unnamed-people li.person")
            assert len(cards) == 6
    finally:
        browser.quit()


def test_an_index_run_from_the_status_page_is_followed_the_same_way(
    loose_gallery, monkeypatch, tmp_path
):
    import shutil

    from pipeline_photos import EXAMPLES
    from test_web_browser import _chromium, _wait
    from test_web_people_browser import _by, _edit_buttons, _open, _unlock

    from facevec.web import jobs

    folder = tmp_path / "photos"
    folder.mkdir()
    # A photo of examples/, in every clone.
    shutil.copy(EXAMPLES / "query.jpg", folder / "img2.jpg")
    opened = threading.Event()
    real = jobs.index

    def gated(*args, on_progress=None, **kwargs):
        on_progress(0, 1)
        assert opened.wait(120), "the test never opened the gate"
        return real(*args, on_progress=on_progress, **kwargs)

    monkeypatch.setattr(jobs, "index", gated)
    browser = _chromium(tmp_path / "profile")
    try:
        app = facevec.web.create_app(str(loose_gallery), token=TOKEN, photos=[folder])
        with live_server(app) as url:
            _open(browser, url + "/status")
            _unlock(browser)
            browser.find_element(_by("CSS_SELECTOR"), "#index-form button").click()
            running = browser.find_element(_by("ID"), "running-job")
            _wait(browser, lambda d: "0 of 1 files" in running.text)
            assert f"Indexing {folder}" in running.text
            assert not [b.text for b in _edit_buttons(browser) if b.is_enabled()]
            assert not browser.find_element(_by("CSS_SELECTOR"), "#index-form button").is_enabled()
            opened.set()
            _wait(
                browser, lambda d: d.find_elements(_by("CSS_SELECTOR"), 'tr.job[data-state="done"]')
            )
            assert not browser.find_element(_by("ID"), "running-job").is_displayed()
            assert browser.find_element(_by("CSS_SELECTOR"), "#index-form button").is_enabled()
            assert "indexing" in browser.find_element(_by("CSS_SELECTOR"), "tr.job").text
    finally:
        browser.quit()
