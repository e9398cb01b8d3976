"""The README's first command works in a fresh clone: it needs only the repository."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def first_command() -> str:
    blocks = re.findall(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.DOTALL)
    return blocks[0].strip()


def test_the_first_command_uses_nothing_outside_the_repository():
    command = first_command()
    assert "../" not in command and "shared" not in command
    for path in re.findall(r"\bexamples/[\w./]+", command):
        assert (ROOT / path).exists(), path


@pytest.mark.slow
def test_the_first_command_indexes_and_finds_in_a_fresh_copy(tmp_path):
    pytest.importorskip("dlib", reason="dlib is not installed (pip install '.[dlib]')")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")  # no ../shared beside it
    steps = [step.strip() for step in first_command().split("&&")]
    facevec_steps = [step for step in steps if step.startswith(".venv/bin/facevec ")]
    assert [step.split()[1] for step in facevec_steps] == ["index", "find"]
    outputs = []
    for step in facevec_steps:
        args = step.split()[1:]  # the venv's facevec is this interpreter's
        result = subprocess.run(
            [sys.executable, "-m", "facevec", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert "9 photos: 9 indexed" in outputs[0]
    matches = [line.split() for line in outputs[1].splitlines()[1:] if line.strip()]
    # The query is a photo of id01: its four other photos are found, nearest first
    # among id01's or the same person's second face in couple.jpg.
    found = {row[0].rsplit("/", 1)[-1] for row in matches}
    assert {"img1.jpg", "img4.jpg", "img5.jpg", "img6.jpg"} <= found
    assert all(row[1] in ("id01", "NaN") for row in matches)


def test_the_readme_is_a_quick_start_whose_links_lead_into_the_docs():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) < 200
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    local = [target for target in targets if "://" not in target]
    assert any(target.startswith("docs/") for target in local)
    for target in local:
        assert (ROOT / target).exists(), target


def test_the_tour_names_the_extra_each_of_its_commands_needs_beyond_the_first():
    """The first command installs [dlib]; a tour command that needs more says which."""
    text = (ROOT / "README.md").read_text()
    tour = text[text.index("## A five-line tour") : text.index("## Documentation")]
    assert "facevec serve" in tour
    assert re.search(r"pip install -e '\.\[[a-z,]*\bweb\b[a-z,]*\]'", tour), tour
