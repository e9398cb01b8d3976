"""A clone runs its tests with nothing beside it: the tests that need the larger
photo set skip and say where it comes from, a set that differs from its list is
named, and no file of the repository names a path of one machine."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pytest
from pipeline_photos import PHOTO_NAMES, ROOT, check_photo_set


def test_without_the_photo_set_its_tests_skip_saying_where_it_comes_from(tmp_path):
    env = {**os.environ, "FACEVEC_FACES": str(tmp_path / "nowhere")}
    env.pop("FACEVEC_REQUIRE_ALL", None)  # the skips are what this test reads
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider"]
        + ["tests/test_verify.py", "tests/test_fresh_clone.py::test_the_photo_set_lists_55"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    skipped = [line for line in result.stdout.splitlines() if line.startswith("SKIPPED")]
    assert skipped, result.stdout[-3000:]
    for line in skipped:
        assert f"the larger test photos are not at {tmp_path / 'nowhere'}" in line
        assert "deepface's MIT-licensed test set (github.com/serengil/deepface" in line
        assert "set FACEVEC_FACES to their folder" in line
    assert re.search(r"\b1 passed, \d+ skipped\b", result.stdout), result.stdout[-500:]


def test_the_photo_set_lists_55():
    assert len(PHOTO_NAMES) == len(set(PHOTO_NAMES)) == 55


def test_a_folder_missing_a_photo_or_holding_another_is_named(tmp_path):
    folder = tmp_path / "faces"
    folder.mkdir()
    for name in PHOTO_NAMES[1:]:
        (folder / name).write_bytes(b"")
    assert check_photo_set(folder).startswith(f"the larger test photos lack img1.jpg in {folder}")
    (folder / "img1.jpg").write_bytes(b"not the photo")
    assert check_photo_set(folder).startswith(
        f"{folder / 'img1.jpg'} is not the photo tests/photo_set.csv lists"
    )


# Home and work folders of Linux, macOS and Windows; the vendored SQLite headers
# quote a user's home folder in their documentation of URI file names.
MACHINE_PATH = re.compile(
    r"(?<![\w.~])/(?:work|root)/|(?<![\w.~])/(?:home|Users)/\w|\b[A-Z]:\\Users\\"
)
VENDORED = ("csrc/sqlite/",)


def test_no_file_of_the_repository_names_a_path_of_one_machine():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("lists the repository's files with git (a git checkout)")
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.decode()
    found = []
    for name in filter(None, listed.split("\0")):
        path = ROOT / name
        if name.startswith(VENDORED) or not path.is_file():
            continue
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            continue  # photos and other binary files
        for number, line in enumerate(text.splitlines(), 1):
            if MACHINE_PATH.search(line):
                found.append(f"{name}:{number}: {line.strip()}")
    assert not found, "\n".join(found)
