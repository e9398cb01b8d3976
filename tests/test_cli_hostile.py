"""What hostile names and numbers do to the command line: nothing.

A folder named with terminal escape sequences becomes a person and an identity:
every printer shows it escaped (tables, CSV, people, identify, find). Every
numeric option and id argument of every command, given integers of 2^63 and more,
NaN or infinities, ends in a result or a one-line error, never a traceback; the
commands and their parameters are read from the click group itself, so a new
one is covered (it needs a valid invocation below).
"""

from __future__ import annotations

import ast
import json
import shutil
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pipeline_photos import FACES

import facevec
from facevec.cli import cli
from facevec.cli.main import ThresholdParam

EVIL = "Evil\x1b]0;PWNED\x07\x1b[31m"
EVIL_SHOWN = "Evil\\x1b]0;PWNED\\x07\\x1b[31m"
CLI_SOURCES = Path(facevec.__file__).parent / "cli"


@pytest.fixture(scope="module")
def evil_gallery(tmp_path_factory, gallery_maker):
    """A gallery indexed from folders EVIL (img1, img2) and id02 (img12)."""
    pytest.importorskip("deepface", reason="deepface is not installed")
    root = tmp_path_factory.mktemp("evil") / "photos"
    gallery_maker(root, {EVIL: ["img1.jpg", "img2.jpg"], "id02": ["img12.jpg"]})
    db = root.parent / "evil.db"
    facevec.index(root, db, progress=False, workers=1, people_from_folders=True, people=False)
    return root, db


def run(*args: str):
    result = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=True)
    return result


def test_every_printer_escapes_control_characters_in_names(evil_gallery):
    root, db = evil_gallery
    query = str(FACES / "img4.jpg")  # the EVIL person, not in the gallery
    outputs = {
        "people list": run("people", "list", "--db", db),
        "people list csv": run("people", "list", "--db", db, "--format", "csv"),
        "people show": run("people", "show", "1", "--db", db, "--no-sheet"),
        "people show csv": run("people", "show", "1", "--db", db, "--no-sheet", "--format", "csv"),
        "identify": run("identify", query, "--db", db),
        "identify csv": run("identify", query, "--db", db, "--format", "csv"),
        "find": run("find", query, "--db", db),
        "find csv": run("find", query, "--db", db, "--format", "csv"),
        "find folder": run("find", root / EVIL, "--db", db, "--k", "1"),
        "info": run("info", "--db", db),
    }
    for what, result in outputs.items():
        assert result.exit_code == 0, (what, result.output)
        assert not any(ord(c) < 0x20 and c != "\n" for c in result.output), what
        assert "\x7f" not in result.output and "\x9b" not in result.output, what
    for what in ("people list", "people list csv", "people show", "identify", "find", "find csv"):
        assert EVIL_SHOWN in outputs[what].output, what
    assert "person" in outputs["identify csv"].output
    # JSON stays JSON: the name comes back exactly as stored.
    listed = json.loads(run("people", "list", "--db", db, "--format", "json").output)
    assert EVIL in {person["name"] for person in listed}
    # Errors too: a name given back in a message is escaped.
    missing = run("people", "show", "Nobody\x1b[2J", "--db", db, "--no-sheet")
    assert missing.exit_code == 1 and "\x1b" not in missing.output
    assert "Nobody\\x1b[2J" in missing.output


def test_no_printer_of_the_command_line_bypasses_the_escaping_helper():
    """Every command prints through facevec.cli.output (echo, echo_json, echo_frame)."""
    offenders = []
    for source in sorted(CLI_SOURCES.glob("*.py")):
        if source.name == "output.py":
            continue
        for node in ast.walk(ast.parse(source.read_text())):
            if not isinstance(node, ast.Call):
                continue
            called = ast.unparse(node.func)
            if called in ("click.echo", "print", "click.secho", "sys.stdout.write") or (
                called.endswith(".write") and "stdout" in called
            ):
                offenders.append(f"{source.name}:{node.lineno} {called}")
    assert offenders == []


HUGE = ["9223372036854775808", "18446744073709551616", "-18446744073709551616"]
ODD = ["nan", "inf", "-inf", "1e400"]


def _commands(group: click.Group, prefix: tuple[str, ...] = ()):
    for name, command in sorted(group.commands.items()):
        if command.hidden:  # an alias: the same command under its Python name
            continue
        if isinstance(command, click.Group):
            yield from _commands(command, (*prefix, name))
        else:
            yield (*prefix, name), command


def _is_number(param: click.Parameter) -> bool:
    return isinstance(param.type, (click.types.IntParamType, click.FLOAT.__class__, ThresholdParam))


# Parameters that name a person (a name or an id) are numbers in disguise: the
# PERSON arguments and the --to / --into options (copy's TARGET is a database).
PERSON_ARGUMENTS = {"person", "persons"}
PERSON_OPTIONS = {"target"}


@pytest.fixture(scope="module")
def invocations(evil_gallery, tmp_path_factory):
    """A valid invocation of every command, as {param name: value} plus positional order."""
    root, db = evil_gallery
    work = tmp_path_factory.mktemp("hostile")
    copy = work / "copy.db"
    shutil.copyfile(db, copy)
    existing = work / "existing-out"
    existing.mkdir()
    (existing / "part.parquet").write_bytes(b"")
    photo = FACES / "img4.jpg"
    return {
        ("index",): {"folder": root, "--db": copy},
        ("find",): {"img": photo, "--db": copy},
        ("verify",): {"img1": photo, "img2": FACES / "img1.jpg"},
        ("info",): {"--db": copy},
        ("copy",): {"source": copy, "target": work / "copied.db"},
        ("reindex",): {"--db": copy},
        ("extension-path",): {},
        ("identify",): {"img": photo, "--db": copy},
        ("calibrate",): {"--db": copy},
        ("people", "cluster"): {"--db": copy},
        ("people", "list"): {"--db": copy},
        ("people", "show"): {"person": "1", "--db": copy, "--no-sheet": None},
        ("people", "name"): {"person": "2", "new_name": "Someone", "--db": copy},
        ("people", "merge"): {"persons": "2", "--into": "1", "--db": copy},
        ("people", "split"): {"person": "1", "face_ids": "1", "--db": copy},
        ("people", "move"): {"face_ids": "1", "--to": "1", "--db": copy},
        ("people", "reject"): {"face_ids": "1", "--db": copy},
        ("people", "confirm"): {"person": "1", "face_ids": "1", "--db": copy},
        ("people", "undo"): {"--db": copy},
        ("people", "history"): {"--db": copy},
        # serve would run until stopped: its database is missing, so it stops after parsing.
        ("serve",): {"--db": work / "missing.db"},
        # Spark's commands stop before starting Spark: --out exists.
        ("spark", "find"): {"queries": photo, "--gallery": copy, "--out": existing},
        ("spark", "people"): {"--gallery": copy, "--out": existing},
        ("export",): {"--parquet": work / "export", "--db": copy, "--overwrite": None},
        ("import",): {"--parquet": work / "export", "--db": work / "imported.db"},
        # watch would run until stopped: another model than the gallery's stops it at start.
        ("watch",): {"folders": root, "--db": copy, "--model": "Facenet"},
    }


def _argv(path, command, given: dict, override: tuple[str, str] | None) -> list[str]:
    values = dict(given)
    if override is not None:
        values[override[0]] = override[1]
    argv = list(path)
    for param in command.params:
        if isinstance(param, click.Argument) and param.name in values:
            argv.append(str(values[param.name]))
    for key, value in values.items():
        if key.startswith("--"):
            argv += [key] if value is None else [key, str(value)]
    return argv


def test_every_command_answers_hostile_numbers_without_a_traceback(
    evil_gallery, invocations, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)  # whatever a command writes lands here
    failures = []
    tried = 0
    for path, command in _commands(cli):
        assert path in invocations, f"give the test a valid invocation of {' '.join(path)}"
        given = invocations[path]
        for param in command.params:
            if isinstance(param, click.Argument):
                name = param.name
                if not (_is_number(param) or name in PERSON_ARGUMENTS):
                    continue
            elif _is_number(param) or param.name in PERSON_OPTIONS:
                name = max(param.opts, key=len)
            else:
                continue
            for value in HUGE + ODD:
                argv = _argv(path, command, given, (name, value))
                result = run(*argv)
                tried += 1
                broken = result.exception is not None and not isinstance(
                    result.exception, SystemExit
                )
                if broken or result.exit_code not in (0, 1, 2) or "Traceback" in result.output:
                    error = f"{type(result.exception).__name__}: {result.exception}"
                    failures.append(
                        f"facevec {' '.join(argv)}: exit {result.exit_code}, {error} "
                        + result.output[-300:]
                    )
                elif result.exit_code:
                    last = result.output.strip().splitlines()[-1]
                    if not last.startswith("Error:"):
                        failures.append(f"facevec {' '.join(argv)}: {result.output[-300:]}")
    assert failures == []
    assert tried > 100


def test_a_person_cannot_be_named_like_a_label_or_in_broken_text(evil_gallery, tmp_path):
    import subprocess
    import sys

    _, db = evil_gallery
    copy = tmp_path / "names.db"
    shutil.copyfile(db, copy)
    before = json.loads(run("people", "list", "--db", copy, "--format", "json").output)
    for name, why in (
        ("person 1", "an unnamed person's label"),
        ("Person #2", "an unnamed person's label"),
        ("Ann\x1b[31m", "control characters"),
        ("Jos\udce9", "valid text (UTF-8)"),  # how Python reads the byte 0xe9 from argv
    ):
        result = run("people", "name", "2", name, "--db", copy)
        assert result.exit_code == 1, name
        (line,) = result.output.strip().splitlines()
        assert line.startswith("Error: a name") and why in line, line
    # A name of bytes that are not UTF-8, as a shell passes it: one line, nothing changed.
    real = subprocess.run(
        [sys.executable, "-m", "facevec", "people", "name", "2", b"Jos\xe9", "--db", copy],
        capture_output=True,
        timeout=120,
    )
    assert real.returncode == 1, real.stderr
    assert real.stderr.decode().strip().splitlines() == [
        "Error: a name must be valid text (UTF-8), not 'Jos\\udce9'"
    ]
    after = json.loads(run("people", "list", "--db", copy, "--format", "json").output)
    assert after == before
    for ids in (["9223372036854775808"], ["1", "18446744073709551616"]):
        moved = run("people", "move", *ids, "--to", "1", "--db", copy)
        assert moved.exit_code == 1
        assert moved.output.strip() == f"Error: no face with id {ids[-1]}"
    named = run("people", "name", "9223372036854775808", "Someone", "--db", copy)
    assert named.output.strip() == (
        "Error: no person with id 9223372036854775808 (facevec people list shows them)"
    )


def test_verify_refuses_a_nan_or_negative_threshold_as_find_does(tmp_path, photos):
    photo = photos("img1.jpg")
    for value, message in (
        ("nan", "threshold must be a number, found NaN"),
        ("-1", "threshold must be >= 0, found -1.0"),
        ("calibrated", "threshold must be a number here, not 'calibrated'"),
    ):
        verified = run("verify", photo, photo, "--threshold", value)
        found = run("find", photo, "--db", tmp_path / "none.db", "--threshold", value)
        assert verified.exit_code == 2, verified.output
        assert f"Invalid value for '--threshold': {message}" in verified.output
        if value != "calibrated":
            assert f"Invalid value for '--threshold': {message}" in found.output
    with pytest.raises(facevec.errors.InvalidParameterError, match="found NaN"):
        facevec.verify(photo, photo, threshold=float("nan"))
