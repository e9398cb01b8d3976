"""facevec watch: photos added, changed, moved and deleted while it runs are indexed
or removed; killed with -9 and restarted, it catches up; the gallery it keeps is the
one a fresh `index` of the folder makes; `serve --watch` follows a folder too.

The photos are copied (not linked): the tests write, rename and delete them.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import facevec
from facevec.ingest.watch import Watcher, _Changes

# Small photos of one face each: seconds to embed them all.
PHOTOS = ["img12.jpg", "img25.jpg", "img51.jpg", "img62.jpg", "img5.jpg"]
TIMEOUT = 120.0  # the first change also waits for the model to load


def wait_until(condition, what: str, timeout: float = TIMEOUT, process=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            pytest.fail(f"the watcher ended while waiting for {what}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def rows(db: Path, sql: str, params=()) -> list[tuple]:
    with sqlite3.connect(db, timeout=30) as conn:
        try:
            return conn.execute(sql, params).fetchall()
        except sqlite3.OperationalError:  # no schema yet
            return []


def ledger_row(db: Path, path: Path) -> tuple | None:
    found = rows(
        db,
        "SELECT sha256, outcome, faces, updated_at FROM ingest_ledger WHERE path = ?",
        (str(path),),
    )
    return found[0] if found else None


def faces_at(db: Path, path: Path) -> list[tuple]:
    return rows(
        db,
        "SELECT identity, face_index, embedding FROM face_meta WHERE img_name = ?"
        " ORDER BY face_index",
        (str(path),),
    )


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def gallery_state(db: Path) -> dict:
    """What a gallery holds, without ids and times: faces (with their vectors and
    folder people) and ledger rows."""
    faces = rows(
        db,
        "SELECT f.img_name, f.identity, f.face_index, f.embedding, f.model_name,"
        " f.detector_backend, f.facial_area_x, f.facial_area_y, f.facial_area_w,"
        " f.facial_area_h, f.left_eye_x, f.left_eye_y, f.right_eye_x, f.right_eye_y,"
        " f.face_confidence, f.face_image, f.source_sha256, p.name"
        " FROM face_meta f LEFT JOIN person_face pf ON pf.face_id = f.id"
        " LEFT JOIN person p ON p.id = pf.person_id ORDER BY f.img_name, f.face_index",
    )
    vectors = rows(
        db,
        "SELECT f.img_name, f.face_index, e.dimension, e.value FROM face_embeddings e"
        " JOIN face_meta f ON f.id = e.face_id ORDER BY 1, 2, 3",
    )
    ledger = rows(
        db,
        "SELECT path, sha256, size_bytes, outcome, faces, message, model_name,"
        " detector_backend, mtime_ns, inode, settings FROM ingest_ledger ORDER BY path",
    )
    return {"faces": faces, "vectors": vectors, "ledger": ledger}


def assert_as_fresh_index(folder: Path, db: Path, tmp_path: Path) -> None:
    fresh = tmp_path / f"fresh-{time.monotonic_ns()}.db"
    facevec.index(folder, fresh, progress=False, workers=1)
    kept, made = gallery_state(db), gallery_state(fresh)
    assert kept["ledger"] == made["ledger"]
    assert kept["faces"] == made["faces"]
    assert kept["vectors"] == made["vectors"]
    assert made["faces"], "the comparison compares something"


@pytest.fixture
def folder(tmp_path: Path, photos) -> Path:
    root = tmp_path / "library"
    (root / "alice").mkdir(parents=True)
    shutil.copy(photos("img12.jpg"), root / "alice" / "img12.jpg")
    shutil.copy(photos("img25.jpg"), root / "img25.jpg")
    return root


def test_changes_while_it_runs_are_followed(folder, tmp_path, photos):
    db = tmp_path / "watched.db"
    statuses = []
    watcher = Watcher([folder], db, workers=1, settle=0.3, on_status=statuses.append)
    failure = []

    def run():
        try:
            watcher.run()
        except BaseException as err:  # reported by the test
            failure.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: watcher.ready.is_set() or failure, "the catch-up")
        assert not failure, failure
        caught_up = [s for s in statuses if s.event == "caught_up"]
        assert caught_up[0].report.indexed == 2
        assert ledger_row(db, folder / "img25.jpg")[1] == "indexed"

        # Added, in a person folder.
        shutil.copy(photos("img51.jpg"), folder / "alice" / "img51.jpg")
        wait_until(lambda: ledger_row(db, folder / "alice" / "img51.jpg"), "the added photo")
        assert [f[:2] for f in faces_at(db, folder / "alice" / "img51.jpg")] == [("alice", 0)]

        # Changed: other content under the same name.
        before = faces_at(db, folder / "img25.jpg")
        shutil.copy(photos("img62.jpg"), folder / "img25.jpg")
        new_sha = sha256(folder / "img25.jpg")
        wait_until(
            lambda: (ledger_row(db, folder / "img25.jpg") or [None])[0] == new_sha,
            "the changed photo",
        )
        after = faces_at(db, folder / "img25.jpg")
        assert after and after[0][2] != before[0][2]

        # Renamed into another person folder: its faces follow, not embedded again.
        old_row = ledger_row(db, folder / "alice" / "img12.jpg")
        old_faces = faces_at(db, folder / "alice" / "img12.jpg")
        updates = len(statuses)
        (folder / "bob").mkdir()
        # Once the new folder's batch is done, the system watches it: the rename into
        # it is one event (a move), not a deletion here and a new file there.
        wait_until(lambda: len(statuses) > updates and watcher.idle(), "the new folder")
        os.rename(folder / "alice" / "img12.jpg", folder / "bob" / "renamed.jpg")
        moved = wait_until(lambda: ledger_row(db, folder / "bob" / "renamed.jpg"), "the rename")
        wait_until(watcher.idle, "the rename's batch")
        assert moved == old_row  # same hash, outcome and update time: carried, not redone
        assert ledger_row(db, folder / "alice" / "img12.jpg") is None
        assert faces_at(db, folder / "alice" / "img12.jpg") == []
        assert faces_at(db, folder / "bob" / "renamed.jpg") == [
            ("bob", index, vector) for _, index, vector in old_faces
        ]

        # A folder renamed: everything under it follows.
        os.rename(folder / "bob", folder / "carol")
        wait_until(lambda: ledger_row(db, folder / "carol" / "renamed.jpg"), "the folder rename")
        # (Files moved while a batch is indexed may be found new by its walk of a folder:
        # embedded again. Each step here waits for the last one's batch to end.)
        wait_until(watcher.idle, "the folder rename's batch")
        assert ledger_row(db, folder / "carol" / "renamed.jpg") == old_row
        assert [f[0] for f in faces_at(db, folder / "carol" / "renamed.jpg")] == ["carol"]
        assert sum(s.moved for s in statuses if s.event == "updated") == 2
        # Renamed twice in a row: one photo moved (twice if the renames fell in two
        # batches).
        os.rename(folder / "carol" / "renamed.jpg", folder / "carol" / "twice.jpg")
        os.rename(folder / "carol" / "twice.jpg", folder / "carol" / "thrice.jpg")
        wait_until(lambda: ledger_row(db, folder / "carol" / "thrice.jpg"), "the renames")
        assert ledger_row(db, folder / "carol" / "thrice.jpg") == old_row

        # Deleted.
        os.remove(folder / "img25.jpg")
        wait_until(lambda: ledger_row(db, folder / "img25.jpg") is None, "the deletion")
        assert faces_at(db, folder / "img25.jpg") == []
        wait_until(watcher.idle, "the last batch")
        moves = sum(s.moved for s in statuses if s.event == "updated")
        embedded = sum(s.report.indexed for s in statuses if s.event == "updated")
        assert moves in (3, 4) and embedded == 2  # the added and the changed photo only
        for status in statuses:
            if status.report is not None:
                assert status.report.files_seen == counted(status.report), status
    finally:
        watcher.stop()
        thread.join(60)
    assert not thread.is_alive() and not failure, failure
    assert statuses[-1].event == "stopped"
    assert_as_fresh_index(folder, db, tmp_path)


def start_watch(folder: Path, db: Path) -> tuple[subprocess.Popen, list[str]]:
    """`facevec watch` in a process; its stderr lines gathered as they come."""
    package_root = str(Path(facevec.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "facevec", "watch", str(folder), "--db", str(db), "--quiet"]
        + ["--workers", "1", "--settle", "0.3"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []

    def gather():
        for line in process.stderr:
            lines.append(line.rstrip("\n"))

    threading.Thread(target=gather, daemon=True).start()
    return process, lines


def said(lines: list[str], text: str) -> list[str]:
    return [line for line in lines if text in line]


def test_killed_and_restarted_it_catches_up(folder, tmp_path, photos):
    db = tmp_path / "killed.db"
    process, lines = start_watch(folder, db)
    try:
        wait_until(lambda: said(lines, "watching for changes"), "the watcher", process=process)
        shutil.copy(photos("img51.jpg"), folder / "img51.jpg")
        wait_until(lambda: ledger_row(db, folder / "img51.jpg"), "the added photo", process=process)
        # Killed while a change may be under way.
        shutil.copy(photos("img5.jpg"), folder / "alice" / "img5.jpg")
        time.sleep(0.5)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    carried = ledger_row(db, folder / "img51.jpg")

    # While nothing watches: added, changed, moved and deleted.
    shutil.copy(photos("img62.jpg"), folder / "img62.jpg")
    shutil.copy(photos("img12.jpg"), folder / "img25.jpg")
    (folder / "dave").mkdir()
    os.rename(folder / "img51.jpg", folder / "dave" / "moved.jpg")
    shutil.rmtree(folder / "alice")

    process, lines = start_watch(folder, db)
    try:
        wait_until(lambda: said(lines, "watching for changes"), "the catch-up", process=process)
        (caught_up,) = said(lines, "caught up on")
        assert "1 moved" in caught_up and "removed" in caught_up, lines
        assert ledger_row(db, folder / "dave" / "moved.jpg") == carried  # not embedded again
        assert [f[0] for f in faces_at(db, folder / "dave" / "moved.jpg")] == ["dave"]
        assert ledger_row(db, folder / "img25.jpg")[0] == sha256(folder / "img25.jpg")
        assert rows(db, "SELECT COUNT(*) FROM ingest_ledger WHERE path LIKE ?", ("%/alice/%",)) == [
            (0,)
        ]
        # Ctrl-C stops it cleanly.
        process.send_signal(signal.SIGINT)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, lines
    assert said(lines, "stopped: committed batches are kept")
    assert not said(lines, "Traceback"), lines
    assert_as_fresh_index(folder, db, tmp_path)


def test_serve_watch_picks_up_a_new_photo(folder, tmp_path, photos):
    pytest.importorskip("fastapi", reason="the web extra is not installed (pip install '.[web]')")
    from web_support import free_port

    db = tmp_path / "served.db"
    facevec.index(folder, db, progress=False, workers=1)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "facevec", "serve", "--db", str(db), "--port", str(port)]
        + ["--photos", str(folder), "--watch"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(
        target=lambda: [lines.append(line.rstrip("\n")) for line in server.stdout], daemon=True
    ).start()
    try:
        wait_until(lambda: said(lines, "watching for changes"), "the watcher", process=server)
        assert said(lines, "caught up on") and "2 unchanged" in said(lines, "caught up on")[0]
        shutil.copy(photos("img51.jpg"), folder / "img51.jpg")
        wait_until(lambda: _served_faces(port) == 3, "the new photo's face", process=server)
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(60)
    assert server.returncode == 0, lines
    assert ledger_row(db, folder / "img51.jpg")[1] == "indexed"


def _served_faces(port: int) -> int | None:
    import json
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/info", timeout=30) as response:
        return json.loads(response.read())["faces"]


@pytest.mark.parametrize(
    "event, named, moves",
    [
        (("created", "/p/a.jpg", None, False), ["/p/a.jpg"], []),
        (("modified", "/p/a.JPG", None, False), ["/p/a.JPG"], []),
        (("closed", "/p/a.heic", None, False), ["/p/a.heic"], []),
        (("opened", "/p/a.jpg", None, False), [], []),
        (("created", "/p/notes.txt", None, False), [], []),
        (("created", "/p/.a.jpg", None, False), [], []),
        (("modified", "/p/folder", None, True), [], []),
        (("deleted", "/p/folder", None, True), ["/p/folder"], []),
        (
            ("moved", "/p/a.jpg", "/p/b.jpg", False),
            ["/p/a.jpg", "/p/b.jpg"],
            [("/p/a.jpg", "/p/b.jpg")],
        ),
        (("moved", "/p/.tmp123", "/p/b.jpg", False), ["/p/b.jpg"], []),
        (("moved", "/p/a", "/p/b", True), ["/p/a", "/p/b"], [("/p/a", "/p/b")]),
    ],
)
def test_which_events_name_photos(event, named, moves):
    kind, source, target, directory = event
    changes = _Changes()
    for kind, source, target, directory in (event, ("created", "/p/last.jpg", None, False)):
        changes.dispatch(
            SimpleNamespace(
                event_type=kind, src_path=source, dest_path=target or "", is_directory=directory
            )
        )
    assert changes.take(settle=0, max_delay=0) == (named + ["/p/last.jpg"], moves)


def test_serve_watch_needs_photo_folders(tmp_path):
    import numpy as np
    from click.testing import CliRunner

    from facevec.cli import cli

    db = tmp_path / "faces.db"
    facevec.add(db, ["a.jpg"], np.ones((1, 128), dtype=np.float32))
    result = CliRunner().invoke(cli, ["serve", "--db", str(db), "--watch"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines()[-1] == (
        "Error: watching needs the photo folders to watch (--photos)"
    )


def test_watch_refuses_another_model_than_the_gallerys_before_reading(tmp_path):
    import numpy as np
    from click.testing import CliRunner

    from facevec.cli import cli

    db = tmp_path / "faces.db"
    facevec.add(db, ["a.jpg"], np.ones((1, 128), dtype=np.float32))
    folder = tmp_path / "photos"
    folder.mkdir()
    result = CliRunner().invoke(cli, ["watch", str(folder), "--db", str(db), "--model", "Facenet"])
    assert result.exit_code == 1
    assert (
        result.output.strip()
        .splitlines()[-1]
        .startswith(f"Error: database {db} holds Dlib vectors (128 dimensions), not Facenet")
    )


def people_rows(db: Path) -> dict:
    """Face ids with their paths, people links and rejections: what a move keeps."""
    return {
        "faces": rows(db, "SELECT id, img_name, face_index FROM face_meta ORDER BY id"),
        "links": rows(db, "SELECT face_id, person_id, source FROM person_face ORDER BY 1"),
        "rejections": rows(db, "SELECT face_id, person_id FROM person_rejection ORDER BY 1"),
        "people": rows(db, "SELECT id, name FROM person ORDER BY id"),
    }


def counted(report) -> int:
    """The photos a report accounts for: each seen one is counted once."""
    return sum(
        (report.unchanged, report.moved, report.indexed, report.no_face)
        + (report.not_image, report.errors)
    )


def moved_paths(state: dict, renames: dict[str, str]) -> dict:
    """`state` with its faces' paths renamed."""
    faces = [(i, renames.get(name, name), index) for i, name, index in state["faces"]]
    return dict(state, faces=faces)


def test_moved_photos_keep_their_face_ids_and_people(folder, tmp_path):
    db = tmp_path / "moved.db"
    facevec.index(folder, db, progress=False, workers=1)
    first, second = folder / "alice" / "img12.jpg", folder / "img25.jpg"
    (face_a,), (face_b,) = (
        [r[0] for r in rows(db, "SELECT id FROM face_meta WHERE img_name = ?", (str(p),))]
        for p in (first, second)
    )
    facevec.people.new_person(db, [face_a], "Dan")
    facevec.people.new_person(db, [face_b], "Eve")
    facevec.people.reject(db, [face_b], "Eve")
    before = people_rows(db)
    history = facevec.people.history(db)
    assert before["rejections"], "the comparison compares a rejection"

    # Renamed and moved to a new folder, then index --prune.
    (folder / "2025").mkdir()
    os.rename(first, folder / "2025" / "renamed.jpg")
    report = facevec.index(folder, db, progress=False, workers=1, prune=True)
    assert (report.moved, report.indexed, report.pruned) == (1, 0, 0)
    assert report.files_seen == counted(report)  # the rename is not also unchanged
    renames = {str(first): str(folder / "2025" / "renamed.jpg")}
    assert people_rows(db) == moved_paths(before, renames)

    # Moved as the watcher sees it (a move event), both photos into one folder.
    statuses = []
    watcher = Watcher([folder], db, workers=1, on_status=statuses.append)
    watcher._choose_model()
    (folder / "new").mkdir()
    os.rename(folder / "2025" / "renamed.jpg", folder / "new" / "a.jpg")
    os.rename(second, folder / "new" / "b.jpg")
    moves = [
        (str(folder / "2025" / "renamed.jpg"), str(folder / "new" / "a.jpg")),
        (str(second), str(folder / "new" / "b.jpg")),
    ]
    watcher.changes.add([end for move in moves for end in move], moves)
    assert watcher._apply(*watcher.changes.take(0.0, 0.0)), statuses
    assert [s.moved for s in statuses if s.event == "updated"] == [2]
    (update,) = [s.report for s in statuses if s.event == "updated"]
    assert (update.moved, update.unchanged, update.files_seen) == (2, 0, 2)
    renames = {
        str(first): str(folder / "new" / "a.jpg"),
        str(second): str(folder / "new" / "b.jpg"),
    }
    assert people_rows(db) == moved_paths(before, renames)
    assert facevec.people.history(db) == history
    assert [f[0] for f in faces_at(db, folder / "new" / "b.jpg")] == ["new"]
    assert ledger_row(db, folder / "new" / "b.jpg") is not None
    assert ledger_row(db, second) is None

    # update_paths told of both ends (as a watcher that sees no move event would).
    os.rename(folder / "new" / "b.jpg", folder / "b.jpg")
    report = facevec.update_paths(folder, db, [folder / "new" / "b.jpg", folder / "b.jpg"])
    assert (report.moved, report.indexed, report.pruned) == (1, 0, 0)
    assert report.files_seen == counted(report) == 1
    renames[str(second)] = str(folder / "b.jpg")
    assert people_rows(db) == moved_paths(before, renames)
