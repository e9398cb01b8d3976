"""The documentation's commands run, and print what the pages show.

A block fenced as ```sh {.runnable} or ```sql {.runnable} in docs/ is run here, in
the order of its page, in a folder holding a copy of the repository's examples/ and
faces.db, the examples indexed (the state after the README's first command; one
index shared by every page, each page starting from it afresh). In an sh block,
the `#` lines right after a command are its output: each must match a line of
stdout, in order, token by token, where `…` stands for any text (alone on a line:
any number of lines) and numbers agree to 1e-3. SQL blocks run statement by
statement on a facevec connection to faces.db.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
RUNNABLE = re.compile(r"^```(sh|sql) \{\.runnable\}\n(.*?)^```", re.DOTALL | re.MULTILINE)
ELLIPSIS = "…"


@dataclass
class Command:
    line: str
    output: list[str] = field(default_factory=list)


def runnable_blocks(page: Path) -> list[tuple[str, str]]:
    return RUNNABLE.findall(page.read_text())


def shell_commands(block: str) -> list[Command]:
    """The commands of an sh block, `\\` continuations joined, each with the output shown."""
    commands: list[Command] = []
    pending = ""
    for line in block.splitlines():
        if pending:
            pending += "\n" + line
        elif line.startswith("#"):
            if commands:
                commands[-1].output.append(line[1:])
            continue
        elif line.strip():
            pending = line
        if pending and not pending.endswith("\\"):
            commands.append(Command(pending))
            pending = ""
    assert not pending, f"a command ends with a continuation: {pending!r}"
    return commands


def sql_statements(block: str) -> list[str]:
    statements, current = [], ""
    for line in block.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    assert not current.strip(), f"an SQL statement is not complete: {current!r}"
    return statements


def _token_matches(expected: str, actual: str) -> bool:
    if ELLIPSIS in expected:
        pattern = ".*".join(re.escape(part) for part in expected.split(ELLIPSIS))
        return re.fullmatch(pattern, actual, re.DOTALL) is not None
    try:
        wanted, got = float(expected), float(actual)
    except ValueError:
        return expected == actual
    if math.isnan(wanted) or math.isnan(got):
        return expected == actual
    return math.isclose(wanted, got, rel_tol=1e-3, abs_tol=1e-4)


def line_matches(expected: str, actual: str) -> bool:
    wanted, got = expected.split(), actual.split()
    return len(wanted) == len(got) and all(map(_token_matches, wanted, got))


def output_matches(expected: list[str], actual: list[str]) -> bool:
    """Every shown line matches stdout's, in order; a lone `…` skips any number of lines."""
    if not expected:
        return not actual
    if expected[0].strip() == ELLIPSIS:
        return any(output_matches(expected[1:], actual[i:]) for i in range(len(actual) + 1))
    return (
        bool(actual)
        and line_matches(expected[0], actual[0])
        and output_matches(expected[1:], actual[1:])
    )


PAGES = sorted(page.name for page in DOCS.glob("*.md") if runnable_blocks(page))


def test_the_output_check_tells_a_different_output_apart():
    shown = ["  1 id01  0.389324", ELLIPSIS, "…/faces/couple.jpg|0.0"]
    assert output_matches(shown, [" 1   id01 0.3893241", "x", "y", "/clone/faces/couple.jpg|0.0"])
    assert output_matches(shown, ["1 id01 0.389324", "/a/faces/couple.jpg|0.0"])
    assert not output_matches(shown, ["1 id01 0.319299", "/a/faces/couple.jpg|0.0"])
    assert not output_matches(shown, ["1 id03 0.389324", "/a/faces/couple.jpg|0.0"])
    assert not output_matches(shown, ["1 id01 0.389324", "/a/faces/couple.jpg|0.0", "extra"])
    assert not output_matches(["a b"], ["a b c"])
    assert output_matches(["NaN 1"], ["NaN 1.0"]) and not output_matches(["NaN"], ["0.5"])


def test_commands_and_their_output_are_read_from_a_block():
    lines = ["facevec info --db faces.db  # note", "# db: faces.db", "", "sqlite3 x \\"]
    block = "\n".join([*lines, '  "SELECT 1"', "# 1", ""])
    commands = shell_commands(block)
    assert [c.line for c in commands] == [
        "facevec info --db faces.db  # note",
        'sqlite3 x \\\n  "SELECT 1"',
    ]
    assert [c.output for c in commands] == [[" db: faces.db"], [" 1"]]


def test_some_pages_have_runnable_blocks():
    assert {"getting-started.md", "people.md", "sql-functions.md", "knn.md"} <= set(PAGES)


@pytest.fixture(scope="session")
def examples_indexed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with examples/ and faces.db, indexed by the command the docs show."""
    pytest.importorskip("deepface", reason="deepface is not installed (pip install '.[deepface]')")
    folder = tmp_path_factory.mktemp("docs")
    shutil.copytree(ROOT / "examples", folder / "examples")
    _run("facevec index examples/faces --db faces.db --quiet", folder)
    _copy_database(folder / "faces.db", folder.parent / "faces.indexed.db")
    return folder


def _copy_database(source: Path, target: Path) -> None:
    target.unlink(missing_ok=True)
    with sqlite3.connect(source) as reading, sqlite3.connect(target) as writing:
        reading.backup(writing)
    reading.close()
    writing.close()


def _environment() -> dict[str, str]:
    # The facevec of this interpreter's environment (the venv's), as the docs assume.
    bin_dir = str(Path(sys.executable).parent)
    assert shutil.which("facevec", path=bin_dir), f"no facevec command in {bin_dir}"
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")}


def _run(command: str, cwd: Path) -> str:
    result = subprocess.run(
        ["bash", "-c", command],
        cwd=cwd,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{command}\nexit {result.returncode}: {result.stderr}"
    return result.stdout


def _start_afresh(folder: Path) -> None:
    for entry in folder.iterdir():
        if entry.name == "examples":
            continue
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    _copy_database(folder.parent / "faces.indexed.db", folder / "faces.db")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES)
def test_the_pages_commands_run_and_print_what_the_page_shows(page, examples_indexed):
    import facevec

    folder = examples_indexed
    _start_afresh(folder)
    for language, block in runnable_blocks(DOCS / page):
        if language == "sql":
            conn = facevec.connect(str(folder / "faces.db"))
            try:
                for statement in sql_statements(block):
                    conn.execute(statement).fetchall()
            finally:
                conn.close()
            continue
        for command in shell_commands(block):
            if command.line.startswith("sqlite3 ") and shutil.which("sqlite3") is None:
                pytest.skip("the sqlite3 shell is missing (Debian: apt-get install sqlite3)")
            printed = _run(command.line, folder).rstrip("\n").splitlines()
            if command.output:
                assert output_matches(command.output, printed), (
                    f"{page}: {command.line}\nthe page shows:\n"
                    + "\n".join(command.output)
                    + "\nit printed:\n"
                    + "\n".join(printed)
                )


@pytest.mark.slow
def test_the_site_builds_with_no_warning(tmp_path):
    """mkdocs build --strict, as CI runs it: a broken link, anchor or include fails it."""
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (pip install '.[docs]')")
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path)],
        cwd=ROOT,
        env={**_environment(), "NO_MKDOCS_2_WARNING": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "cli" / "index.html").read_text().count("Usage: facevec ") > 20


def test_the_server_page_installs_the_light_engine_for_the_default_model():
    """Its examples index and search with the default model: [dlib] (360 MB) serves
    them, [deepface] (3.7 GB) is for other models only."""
    page = (DOCS / "servers.md").read_text()
    installs = re.findall(r"^pip install -e '\.\[([a-z,]+)\]'", page, re.MULTILINE)
    assert installs and all("dlib" in extras.split(",") for extras in installs), installs
    assert "search_path%3D" in page  # how to keep a gallery in a schema of its own


def test_folders_become_people_only_with_people_from_folders():
    """index makes people of `<person>/<photo>` folders only when asked: every sentence
    that says such folders become people says so."""
    for page in [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for sentence in re.split(r"\.\s", page.read_text()):
            if "<person>/<photo>" in sentence and "become" in sentence:
                assert "--people-from-folders" in sentence, (page.name, sentence)
