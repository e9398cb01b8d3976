"""find and identify over a folder: a photo with no face, or no image at all, is left
out with a warning naming it; the other photos are searched. One photo alone is still
an error (tests/test_find.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import SkippedPhotosWarning


@pytest.fixture
def queries(tmp_path, photos):
    import cv2

    folder = tmp_path / "queries"
    folder.mkdir()
    shutil.copy(photos("img1.jpg"), folder / "img1.jpg")
    cv2.imwrite(str(folder / "sky.png"), np.full((200, 300, 3), (235, 206, 135), np.uint8))
    (folder / "notes.jpg").write_text("not a photo")
    head = Path(photos("img2.jpg")).read_bytes()[:3000]
    (folder / "truncated.jpg").write_bytes(head)
    return folder


def test_find_over_a_folder_leaves_out_its_bad_photos_by_name(gallery_db, queries):
    with pytest.warns(SkippedPhotosWarning, match="3 of 4 photos left out") as caught:
        frames = facevec.find(queries, gallery_db)
    message = str(caught[0].message)
    for name in ("sky.png", "notes.jpg", "truncated.jpg"):
        assert str(queries / name) in message
    assert [frame.attrs["img"] for frame in frames] == [str(queries / "img1.jpg")]
    assert len(frames[0]) > 0


def test_identify_over_a_folder_leaves_out_its_bad_photos_by_name(gallery_db, queries):
    with pytest.warns(SkippedPhotosWarning, match="no face found in .*sky.png"):
        frame = facevec.identify(queries, gallery_db)
    assert set(frame.img) == {str(queries / "img1.jpg")}


def test_the_command_line_searches_the_rest_and_says_what_it_left_out(gallery_db, queries):
    for command in ("find", "identify"):
        result = CliRunner().invoke(cli, [command, str(queries), "--db", str(gallery_db)])
        assert result.exit_code == 0, result.output
        assert "img1.jpg" in result.stdout
        (line,) = result.stderr.splitlines()  # one line, not Python's file:line: source
        assert line.startswith("warning: 3 of 4 photos left out of the search: "), line
