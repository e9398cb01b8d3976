"""An ingest killed mid-run (kill -9, Ctrl-C) loses nothing committed; a rerun
finishes the job with no duplicates; searches work while it runs. The runs use two
worker processes: the writer is the one killed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import facevec

SMALL_PHOTOS = [
    "img10.jpg",
    "img12.jpg",
    "img25.jpg",
    "img5.jpg",
    "img44.jpg",
    "img45.jpg",
    "img46.jpg",
    "img50.jpg",
    "img51.jpg",
    "img62.jpg",
]


def start_index(folder: Path, db: Path) -> subprocess.Popen:
    package_root = str(Path(facevec.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=package_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "facevec.cli",
            "index",
            str(folder),
            "--db",
            str(db),
            "--batch-size",
            "1",
            "--workers",
            "2",
            "--exact",  # deepface's slower detection: the signal lands mid-run
            "--quiet",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def children(pid: int) -> list[int]:
    """The live child processes of `pid` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(child) for child in (task / "children").read_text().split()]
    return found


def alive(pid: int) -> str | None:
    """The process's state letter, or None once it has ended (a zombie has ended)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None
    return None if state in ("Z", "X") else state


def ledger_count(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=30) as conn:
            return conn.execute("SELECT COUNT(*) FROM ingest_ledger").fetchone()[0]
    except sqlite3.OperationalError:  # schema not created yet
        return 0


def wait_for_ledger(process: subprocess.Popen, db: Path, rows: int, timeout: float = 180) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        count = ledger_count(db)
        if count >= rows:
            return count
        if process.poll() is not None:
            pytest.fail(f"index ended early: {process.stderr.read().decode()[-2000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail("index made no progress")


def check_consistent(db: Path) -> int:
    """Every ledger row's faces are all there, each with all its values; no strays."""
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        for path, faces in conn.execute("SELECT path, faces FROM ingest_ledger"):
            stored = conn.execute(
                "SELECT COUNT(*) FROM face_meta WHERE img_name = ?", (path,)
            ).fetchone()[0]
            assert stored == faces, path
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM face_meta"
                " WHERE img_name NOT IN (SELECT path FROM ingest_ledger)"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM (SELECT face_id FROM face_embeddings GROUP BY face_id"
                " HAVING COUNT(*) <> 128)"
            ).fetchone()[0]
            == 0
        )
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM face_embeddings"
                " WHERE face_id NOT IN (SELECT id FROM face_meta)"
            ).fetchone()[0]
            == 0
        )
        return conn.execute("SELECT COUNT(*) FROM face_meta").fetchone()[0]


@pytest.fixture
def small_gallery(tmp_path, gallery_maker):
    return gallery_maker(tmp_path / "small", {"": SMALL_PHOTOS})


def test_kill_9_mid_run_then_rerun_finishes_without_duplicates(small_gallery, tmp_path, photos):
    db = tmp_path / "killed.db"
    process = start_index(small_gallery, db)
    wait_for_ledger(process, db, 2)
    # Searches work while the ingest writes (WAL).
    (frame,) = facevec.find(photos("img10.jpg"), db, threshold=10)
    assert len(frame) >= 1
    wait_for_ledger(process, db, 3)
    workers = children(process.pid)
    assert len(workers) >= 2  # the workers (and multiprocessing's resource tracker)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    # Orphaned workers notice their writer is gone and end (they never write).
    deadline = time.monotonic() + 60
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [(pid, alive(pid)) for pid in workers if alive(pid)]
    committed = ledger_count(db)
    assert 3 <= committed < len(SMALL_PHOTOS), "the kill should land mid-run"
    faces_before = check_consistent(db)
    with sqlite3.connect(db) as conn:
        kept = conn.execute("SELECT id, img_name, embedding FROM face_meta ORDER BY id").fetchall()

    report = facevec.index(small_gallery, db, progress=False, exact=True)
    assert report.unchanged == committed
    assert report.indexed == len(SMALL_PHOTOS) - committed
    faces_after = check_consistent(db)
    assert faces_after == faces_before + report.faces_added
    with sqlite3.connect(db) as conn:
        assert (
            conn.execute(
                "SELECT id, img_name, embedding FROM face_meta WHERE id <= ? ORDER BY id",
                (kept[-1][0],),
            ).fetchall()
            == kept
        )
        assert conn.execute("SELECT COUNT(*) FROM ingest_ledger").fetchone()[0] == len(SMALL_PHOTOS)
        assert (
            conn.execute(
                "SELECT COUNT(*) FROM (SELECT img_name, face_index FROM face_meta"
                " GROUP BY img_name, face_index HAVING COUNT(*) > 1)"
            ).fetchone()[0]
            == 0
        )


def test_ctrl_c_stops_cleanly_and_keeps_what_was_done(small_gallery, tmp_path):
    db = tmp_path / "interrupted.db"
    process = start_index(small_gallery, db)
    wait_for_ledger(process, db, 2)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr.decode()[-2000:]
    assert "interrupted:" in stderr.decode() and "rerun to finish" in stderr.decode()
    assert "Traceback" not in stderr.decode()
    committed = ledger_count(db)
    assert committed >= 2
    check_consistent(db)
    report = facevec.index(small_gallery, db, progress=False, exact=True)
    assert report.unchanged == committed
    check_consistent(db)
