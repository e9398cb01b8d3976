"""identify's answers (matched, ambiguous, unknown) are no one's name, by any way a
name gets in: naming, splitting, the web, a gallery folder."""

from __future__ import annotations

import importlib
import re

import click
import numpy as np
import pytest
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import PeopleConflictError
from facevec.storage import people as store
from facevec.storage.database import open_database

ANSWERS = ["unknown", "Unknown", " UNKNOWN ", "matched", "Ambiguous"]


def test_identify_answers_in_the_words_no_one_may_be_named():
    assert set(store.DECISIONS) == {"matched", "ambiguous", "unknown"}
    identify = importlib.import_module("facevec.people.identify")
    assert (identify.MATCHED, identify.AMBIGUOUS, identify.UNKNOWN) == store.DECISIONS


@pytest.fixture
def two_people(tmp_path):
    rng = np.random.default_rng(3)
    db = str(tmp_path / "two.db")
    vectors = rng.normal(size=(4, 128)).astype(np.float32)
    facevec.add(db, [f"f{i}.jpg" for i in range(4)], vectors, identities=["Ann", "Ann", "B", "B"])
    return db


@pytest.mark.parametrize("answer", ANSWERS)
def test_a_person_cannot_be_named_an_answer(two_people, answer):
    message = re.escape("a name cannot be one of identify's answers (matched, ambiguous, unknown)")
    with pytest.raises(PeopleConflictError, match=message):
        facevec.people.name(two_people, "Ann", answer)
    ann = facevec.people.show(two_people, "Ann").faces
    with pytest.raises(PeopleConflictError, match=message):
        facevec.people.split(two_people, "Ann", [ann[0].face_id], new_name=answer)
    # Nothing changed.
    assert sorted(p.name for p in facevec.people.list_people(two_people)) == ["Ann", "B"]
    assert len(facevec.people.show(two_people, "Ann").faces) == 2


def test_cli_and_web_refuse_an_answer_as_a_name(two_people):
    result = CliRunner().invoke(cli, ["people", "name", "Ann", "unknown", "--db", two_people])
    assert result.exit_code == 1 and "identify's answers" in result.output
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from web_support import AUTH, client_for

    with client_for(two_people) as http:
        ann = http.get("/api/people/Ann").json()["person"]["id"]
        refused = http.post(f"/api/people/{ann}/name", json={"name": "Matched"}, headers=AUTH)
        assert refused.status_code in (409, 422), refused.text
        assert "identify's answers" in refused.text
    assert facevec.people.show(two_people, ann).person.name == "Ann"


def test_a_folder_named_as_an_answer_becomes_no_one(tmp_path, gallery_maker):
    """Photos in gallery/Unknown/ are faces of nobody known: no person "Unknown"."""
    root = gallery_maker(tmp_path / "photos", {"Unknown": ["img57.jpg"], "id04": ["img22.jpg"]})
    db = tmp_path / "folders.db"
    facevec.index(root, db, progress=False, people_from_folders=True, people=False)
    people = facevec.people.list_people(db)
    assert [p.name for p in people] == ["id04"] and people[0].faces == 1
    with open_database(db) as database:
        assert len(store.assignments(database)) == 1  # the Unknown/ face has no person
        assert not store.folder_sync_needed(database)  # and reading writes nothing
    # Clustering may still group such faces, as any face without a person.
    row = facevec.identify(str(root / "Unknown" / "img57.jpg"), db).iloc[0]
    assert row.decision == "unknown"


def test_dir_lists_the_lazy_verbs_without_loading_them():
    import subprocess
    import sys

    code = (
        "import sys, facevec\n"
        "names = dir(facevec)\n"
        "print(all(n in names for n in "
        "('find', 'identify', 'calibrate', 'index', 'add', 'people', 'copy')))\n"
        "print('facevec.recognize' in sys.modules, 'pandas' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["True", "False", "False"]
    assert set(dir(facevec)) >= set(facevec.__all__)


# The API's and the command line's names for one verb: the CLI name (dashes for
# underscores) is a Python name of the same verb, in facevec or the group's module.
NO_PYTHON_VERB = {"serve"}  # a web server: facevec.web.create_app is an app, not a verb


def _verbs(group, owner) -> int:
    """Check each command of `group` (or one of its aliases: the same callback) has a
    Python verb of its name in `owner`; returns how many were checked."""
    names: dict = {}
    for name, command in group.commands.items():
        names.setdefault(command.callback, []).append(name)
    checked = 0
    for aliases in names.values():
        command = group.commands[aliases[0]]
        if isinstance(command, click.Group):
            checked += _verbs(command, getattr(owner, command.name))
            continue
        if aliases[0] in NO_PYTHON_VERB:
            continue
        python = [a.replace("-", "_") for a in aliases]
        assert set(python) & set(dir(owner)), f"{aliases}: none is {owner.__name__}'s"
        checked += 1
    return checked


def test_each_command_is_named_as_its_python_verb():
    import facevec.spark

    assert _verbs(cli, facevec) > 20


def test_api_named_aliases_run_the_same_commands(tmp_path):
    import facevec.spark

    pairs = [
        (["loadable-path"], ["extension-path"]),
        (["people", "list-people"], ["people", "list"]),
        (["export-parquet"], ["export"]),
        (["import-parquet"], ["import"]),
        (["spark", "batch-search"], ["spark", "find"]),
        (["spark", "cluster-people"], ["spark", "people"]),
    ]
    for alias, command in pairs:
        a = CliRunner().invoke(cli, [*alias, "--help"])
        b = CliRunner().invoke(cli, [*command, "--help"])
        assert a.exit_code == b.exit_code == 0
        assert a.output.split("\n", 1)[1] == b.output.split("\n", 1)[1]  # past "Usage: ..."
    assert facevec.copy is facevec.copy_gallery
    assert callable(facevec.spark.batch_search) and callable(facevec.spark.cluster_people)
    assert CliRunner().invoke(cli, ["loadable-path"]).output.strip() == facevec.loadable_path()
