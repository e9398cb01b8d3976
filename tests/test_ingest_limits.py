"""Photos of any size are bounded in memory and recorded; faces below the quality
floors are counted, not stored."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

from facevec.cli import cli


def ledger(db, name):
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT outcome, faces, message FROM ingest_ledger WHERE path LIKE ?", (f"%/{name}",)
        ).fetchone()


@pytest.fixture(scope="module")
def huge_folder(tmp_path_factory, photos):
    """A 12000 x 12000 JPEG (144 megapixels, mostly flat: 2 MB on disk) and a photo."""
    import cv2

    folder = tmp_path_factory.mktemp("huge") / "g"
    folder.mkdir()
    pixels = np.full((12000, 12000, 3), 128, np.uint8)
    cv2.putText(pixels, "facevec", (3000, 6000), cv2.FONT_HERSHEY_SIMPLEX, 40, (20, 40, 60), 60)
    cv2.imwrite(str(folder / "huge.jpg"), pixels, [cv2.IMWRITE_JPEG_QUALITY, 80])
    shutil.copy(photos("img12.jpg"), folder / "small.jpg")
    return folder


def test_huge_photo_is_decoded_small_and_recorded(huge_folder, tmp_path):
    # Two workers (and this process, the writer): each one's peak memory is measured.
    script = textwrap.dedent(
        f"""
        import json, resource, facevec
        report = facevec.index({str(huge_folder)!r}, {str(tmp_path / "h.db")!r},
                               workers=2, progress=False)
        print(json.dumps({{
            "writer": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
            "workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss,
            "no_face": report.no_face, "indexed": report.indexed,
        }}))
        """
    )
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    measured = json.loads(run.stdout.splitlines()[-1])
    assert (measured["indexed"], measured["no_face"]) == (1, 1)
    # ru_maxrss is in KiB: well under 2 GiB each (deepface's path took 17 GB here).
    assert measured["writer"] < 2 * 1024 * 1024, measured
    assert measured["workers"] < 2 * 1024 * 1024, measured
    outcome, faces, message = ledger(tmp_path / "h.db", "huge.jpg")
    assert (outcome, faces) == ("no_face", 0) and "no face found in" in message


def test_photo_over_the_pixel_limit_gets_a_ledger_entry(huge_folder, tmp_path):
    db = tmp_path / "limit.db"
    args = ["index", str(huge_folder), "--db", str(db), "--quiet", "--workers", "1"]
    result = CliRunner().invoke(cli, [*args, "--max-pixels", "100000000"])
    assert result.exit_code == 0, result.output
    assert "2 photos: 1 indexed (1 faces)" in result.output and "1 errors" in result.output
    message = (
        f"{huge_folder / 'huge.jpg'} is 12000x12000 (144.0 megapixels), over the limit of "
        "100 megapixels (max_pixels, --max-pixels)"
    )
    assert f"error: {message}" in result.output
    assert ledger(db, "huge.jpg") == ("error", 0, message)
    assert ledger(db, "small.jpg")[:2] == ("indexed", 1)
    # A refused photo is retried: with a higher limit it is indexed.
    result = CliRunner().invoke(cli, args)
    assert "1 without a face" in result.output and "1 unchanged" in result.output


@pytest.fixture(scope="module")
def quality_folder(tmp_path_factory, photos):
    """img10's face (223 px) as it is, blurred, and shrunk to about 52 px."""
    import cv2

    folder = tmp_path_factory.mktemp("quality") / "g"
    folder.mkdir()
    face = cv2.imread(photos("img10.jpg"))
    cv2.imwrite(str(folder / "sharp.png"), face)
    cv2.imwrite(str(folder / "blurred.png"), cv2.GaussianBlur(face, (0, 0), 3))
    canvas = np.full((600, 600, 3), 128, np.uint8)
    small = cv2.resize(face, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA)
    canvas[100 : 100 + small.shape[0], 100 : 100 + small.shape[1]] = small
    cv2.imwrite(str(folder / "tiny.png"), canvas)
    return folder


def index_with(folder, db, *options):
    result = CliRunner().invoke(
        cli, ["index", str(folder), "--db", str(db), "--quiet", "--workers", "1", *options]
    )
    assert result.exit_code == 0, result.output
    return result.output


def test_default_quality_floors_keep_every_face(quality_folder, tmp_path):
    output = index_with(quality_folder, tmp_path / "q.db")
    assert "3 photos: 3 indexed (3 faces)" in output and "below" not in output


def test_min_face_counts_small_faces_without_storing_them(quality_folder, tmp_path):
    db = tmp_path / "q.db"
    output = index_with(quality_folder, db, "--min-face", "80")
    assert "3 indexed (2 faces)" in output
    assert "1 faces below --min-confidence/--min-face/--min-sharpness" in output
    assert ledger(db, "tiny.png") == (
        "indexed",
        0,
        "1 of 1 faces not stored: 1 smaller than 80 pixels (min_face)",
    )
    assert ledger(db, "sharp.png") == ("indexed", 1, None)


def test_min_sharpness_counts_blurred_faces_without_storing_them(quality_folder, tmp_path):
    db = tmp_path / "q.db"
    output = index_with(quality_folder, db, "--min-sharpness", "100")
    assert "3 indexed (2 faces)" in output and "1 faces below" in output
    outcome, faces, message = ledger(db, "blurred.png")
    assert (outcome, faces) == ("indexed", 0)
    assert re.fullmatch(
        r"1 of 1 faces not stored: 1 less sharp than 100 \(min_sharpness\)", message
    )
    assert ledger(db, "sharp.png") == ("indexed", 1, None)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM face_meta").fetchone() == (2,)


def test_default_floors_drop_no_face_deepface_finds_in_the_shared_photos(indexed):
    # Every face dlib finds in the session gallery is real: the default floors keep them.
    _, report = indexed
    assert report.faces_dropped == 0
