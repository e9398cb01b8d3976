"""Folder people, naming and correcting them, undo, and the schema upgrade, on
SQLite, PostgreSQL and MariaDB (each test on its own copy of the session gallery)."""

from __future__ import annotations

import json
import re

import pytest
from backends import BACKENDS
from click.testing import CliRunner
from pipeline_photos import GALLERY_LAYOUT

import facevec
from facevec.cli import cli
from facevec.errors import FaceNotFoundError, PeopleConflictError, PersonNotFoundError
from facevec.storage.database import open_database
from facevec.storage.schema import SCHEMA_VERSION

people = facevec.people
TABLES = ("person", "person_face", "person_rejection", "person_folder")


def state(db) -> dict[str, list[tuple]]:
    """Every row of the people tables (times left out): what undo must restore."""
    columns = {
        "person": "id, name",
        "person_face": "face_id, person_id, source, score",
        "person_rejection": "face_id, person_id",
        "person_folder": "folder, person_id",
    }
    with open_database(db, create=False) as database:
        return {
            t: sorted(tuple(r) for r in database.query(f"SELECT {columns[t]} FROM {t}"))
            for t in TABLES
        }


def faces_of(db, person) -> set[int]:
    return {f.face_id for f in people.show(db, person).faces}


@pytest.fixture(params=BACKENDS)
def db(request, gallery_db, gallery_copy_on):
    return gallery_copy_on(gallery_db, request.param)


def test_gallery_folders_are_people(db):
    found = {p.name: p for p in people.list_people(db)}
    assert set(found) == {"id01", "id02", "id03", "id04", "id05"}
    for name, photos in GALLERY_LAYOUT.items():
        if name:
            assert found[name].faces == found[name].folder == len(photos)
            assert found[name].suggested == found[name].confirmed == 0
    # Photos outside person folders have no person.
    with open_database(db, create=False) as database:
        unassigned = database.scalar(
            "SELECT COUNT(*) FROM face_meta WHERE id NOT IN (SELECT face_id FROM person_face)"
        )
    assert unassigned == 2 + 4 + 1  # couple (2 faces), the selfie (4), img47


def test_photos_with_two_people_is_one_query(db):
    people.merge(db, ["id02"], "id01")  # put two people in one photo's worth of rows
    people.name(db, "id01", "Ann")
    selfie = [f for f in _all_faces(db) if f[1].endswith("selfie-many-people.jpg")]
    people.move(db, [selfie[0][0]], "Ann")
    people.move(db, [selfie[1][0]], "id03")
    with open_database(db, create=False) as database:
        both = database.query(
            "SELECT img_name FROM person_photos WHERE name IN ({p}, {p})"
            " GROUP BY img_name HAVING COUNT(DISTINCT person_id) = 2",
            ("Ann", "id03"),
        )
    assert [row[0].rsplit("/", 1)[-1] for row in both] == ["selfie-many-people.jpg"]


def _all_faces(db) -> list[tuple[int, str]]:
    with open_database(db, create=False) as database:
        return sorted(database.query("SELECT id, img_name FROM face_meta"))


def test_name_renames_and_refuses_a_taken_name(db):
    change = people.name(db, "id01", "Alice")
    assert change.summary == f"named person {change.person_id} 'Alice' (was 'id01')"
    assert people.show(db, "Alice").person.faces == 8
    with pytest.raises(PeopleConflictError, match=re.escape("'id02' is person")):
        people.name(db, "Alice", "id02")
    with pytest.raises(PeopleConflictError, match="non-empty"):
        people.name(db, "Alice", "  ")
    with pytest.raises(PersonNotFoundError, match=re.escape("no person named 'Nobody'")):
        people.name(db, "Nobody", "X")
    with pytest.raises(PersonNotFoundError, match="no person with id 999"):
        people.name(db, 999, "X")
    people.name(db, "Alice", "id01")  # the inverse of a rename is a rename
    assert {p.name for p in people.list_people(db)} >= {"id01"}


def test_merge_and_split_round_trip(db):
    before = state(db)
    id01, id02 = faces_of(db, "id01"), faces_of(db, "id02")
    change = people.merge(db, ["id02"], "id01")
    assert faces_of(db, "id01") == id01 | id02
    assert "id02" not in {p.name for p in people.list_people(db)}
    # The folder id02 now stands for id01: reindexing it would not bring id02 back.
    assert ("id02", change.person_id) in state(db)["person_folder"]
    back = people.split(db, "id01", sorted(id02), new_name="id02")
    assert faces_of(db, "id02") == id02 and faces_of(db, "id01") == id01
    assert people.show(db, back.person_id).person.confirmed == len(id02)
    # undo twice: the split, then the merge, restore every row exactly.
    people.undo(db)
    people.undo(db)
    assert state(db) == before


def test_merge_keeps_two_faces_of_one_photo_apart_unless_forced(db):
    couple = [f for f, name in _all_faces(db) if name.endswith("couple.jpg")]
    first = people.split(db, "id01", [sorted(faces_of(db, "id01"))[0]])
    people.move(db, [couple[0]], first.person_id)
    people.move(db, [couple[1]], "id03")
    with pytest.raises(PeopleConflictError, match="both in .*couple.jpg"):
        people.merge(db, [first.person_id], "id03")
    with pytest.raises(PeopleConflictError, match="both in .*couple.jpg"):
        people.move(db, [couple[0]], "id03")
    people.merge(db, [first.person_id], "id03", force=True)
    assert set(couple) <= faces_of(db, "id03")
    with pytest.raises(PeopleConflictError, match="into itself"):
        people.merge(db, ["id03"], "id03")


def test_reject_and_move_round_trip(db):
    before = state(db)
    face = sorted(faces_of(db, "id01"))[0]
    people.reject(db, [face])
    assert face not in faces_of(db, "id01")
    assert (face, people.show(db, "id01").person.id) in state(db)["person_rejection"]
    # A rejected folder face is not given back by the folder import.
    people.list_people(db)
    assert face not in faces_of(db, "id01")
    people.move(db, [face], "id01")  # the inverse of a rejection
    assert face in faces_of(db, "id01")
    assert state(db)["person_rejection"] == []
    people.undo(db)
    people.undo(db)
    assert state(db) == before


def test_edits_check_faces_and_people(db):
    with pytest.raises(FaceNotFoundError, match="no face with id 99999"):
        people.move(db, [99999], "id01")
    stranger = sorted(faces_of(db, "id02"))[0]
    with pytest.raises(FaceNotFoundError, match=f"face {stranger} is not a face of person"):
        people.split(db, "id01", [stranger])
    unassigned = [f for f, name in _all_faces(db) if name.endswith("img47.jpg")]
    with pytest.raises(FaceNotFoundError, match="no person to reject"):
        people.reject(db, unassigned)
    with pytest.raises(PeopleConflictError, match="nothing to undo"):
        people.undo(db)


def test_confirm_turns_suggestions_into_confirmed_faces(db):
    facevec.add(db, ["extra.jpg"], [_vector_of(db, "id05")], model_name="Dlib", people=False)
    people.cluster(db, progress=False)
    view = people.show(db, "id05")
    assert (view.person.suggested, view.person.folder) == (1, 1)
    people.confirm(db, "id05")
    view = people.show(db, "id05").person
    assert (view.suggested, view.confirmed, view.folder) == (0, 2, 0)
    assert [h[1] for h in people.history(db)] == ["confirm", "cluster"]


def _vector_of(db, person):
    from facevec.storage import people as store

    with open_database(db, create=False) as database:
        person_id = store.person_id_named(database, person)
        return store.person_vectors(database, [person_id])[0][2] + 0.01


def test_deleting_a_photo_removes_its_assignments(gallery_db, gallery_copy_on):
    from facevec.storage import faces

    db = gallery_copy_on(gallery_db, "sqlite")
    people.name(db, "id05", "Eve")
    (victim, photo) = [(f, name) for f, name in _all_faces(db) if name.endswith("img25.jpg")][0]
    with open_database(db, create=False) as database:
        with database.transaction():
            faces.delete_image(database, photo)
        rows = database.query("SELECT face_id FROM person_face WHERE face_id = ?", (victim,))
    assert rows == []
    assert people.show(db, "Eve").person.faces == 0


def test_show_writes_a_contact_sheet_of_the_face_crops(gallery_db, gallery_copy_on, tmp_path):
    from PIL import Image

    db = gallery_copy_on(gallery_db, "sqlite")
    sheet = tmp_path / "id01.png"
    view = people.show(db, "id01", sheet=sheet, columns=4, tile=100)
    assert view.sheet == str(sheet) and len(view.faces) == 8
    image = Image.open(sheet)
    assert image.format == "PNG"
    assert image.size == (4 * 108, 28 + 2 * (108 + 16))
    # Each tile holds the stored crop, not a blank: the tiles differ and have texture.
    tiles = [
        image.crop((4 + 108 * c, 32 + 124 * r, 104 + 108 * c, 132 + 124 * r))
        for r in (0, 1)
        for c in range(4)
    ]
    assert all(
        max(t.convert("L").getextrema()) - min(t.convert("L").getextrema()) > 50 for t in tiles
    )
    assert len({t.tobytes() for t in tiles}) == 8


def test_a_version_1_gallery_is_upgraded_and_its_folders_become_people_when_asked(db, gallery):
    with open_database(db, create=False) as database:
        with database.transaction():
            for view in ("people", "person_photos", "person_faces"):
                database.execute(f"DROP VIEW {view}")
            for name in TABLES + ("person_edit", "facevec_calibration"):
                database.execute(f"DROP TABLE {name}")
            database.execute("UPDATE facevec_collection SET schema_version = 1")
    assert facevec.info(db)["schema_version"] == 1
    assert people.list_people(db) == []  # folders are people only when asked
    # people (2), IVF lists (3), ids never reused (4), and whatever came since
    assert facevec.info(db)["schema_version"] == SCHEMA_VERSION
    # Asked: a rerun of index, nothing embedded again.
    report = facevec.index(gallery, db, progress=False, people_from_folders=True, people=False)
    assert report.indexed == 0
    assert {p.name for p in people.list_people(db)} == {"id01", "id02", "id03", "id04", "id05"}
    assert people.show(db, "id01").person.folder == 8


def test_cli_people_commands(gallery_db, gallery_copy_on, tmp_path, monkeypatch):
    db = gallery_copy_on(gallery_db, "sqlite")
    run = CliRunner().invoke

    result = run(cli, ["people", "name", "id04", "Dora", "--db", db])
    assert result.exit_code == 0 and "named person" in result.output
    sheet = tmp_path / "dora.png"
    result = run(cli, ["people", "show", "Dora", "--db", db, "--sheet", str(sheet)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Dora (id ")
    assert f"contact sheet: {sheet}" in result.output and sheet.exists()
    # The default sheet is in the current folder, and the message says where in full.
    here = tmp_path / "here"
    here.mkdir()
    monkeypatch.chdir(here)
    shown = run(cli, ["people", "show", "Dora", "--db", db, "--format", "json"])
    assert shown.exit_code == 0, shown.output
    (written,) = here.glob("person-*.png")
    assert shown.stderr.strip() == f"contact sheet: {written}"
    json.loads(shown.stdout)
    result = run(cli, ["people", "merge", "id05", "--into", "Dora", "--db", db])
    assert result.exit_code == 0 and "merged person" in result.output
    face = str(sorted(faces_of(db, "Dora"))[-1])
    assert run(cli, ["people", "split", "Dora", face, "--name", "Eve", "--db", db]).exit_code == 0
    assert run(cli, ["people", "reject", face, "--db", db]).exit_code == 0
    assert run(cli, ["people", "move", face, "--to", "Eve", "--db", db]).exit_code == 0
    assert run(cli, ["people", "confirm", "Dora", "--db", db]).exit_code == 0
    history = run(cli, ["people", "history", "--db", db, "--format", "csv"])
    assert [line.split(",")[1] for line in history.output.splitlines()[1:]] == [
        "confirm",
        "move",
        "reject",
        "split",
        "merge",
        "name",
    ]
    missing = run(cli, ["people", "show", "Nobody", "--db", db])
    assert missing.exit_code == 1
    assert (
        missing.output.strip() == "Error: no person named 'Nobody' (facevec people list shows them)"
    )


def test_a_moved_photo_keeps_its_face_ids_and_people(db):
    from facevec.storage import faces

    people.name(db, "id05", "Eve")
    (face, photo) = [(f, name) for f, name in _all_faces(db) if name.endswith("img25.jpg")][0]
    people.confirm(db, "Eve")
    other = sorted(faces_of(db, "id01"))[0]
    people.reject(db, [other])
    before, history = state(db), people.history(db)
    with open_database(db, create=False) as database:
        with database.transaction():
            faces.move_stored_image(database, photo, "elsewhere/renamed.jpg", "elsewhere")
    assert state(db) == before
    assert people.history(db) == history
    assert (face, "elsewhere/renamed.jpg") in _all_faces(db)
    assert not [f for f, name in _all_faces(db) if name == photo]


def test_a_photo_moved_to_another_person_folder_gets_that_person(db):
    from facevec.storage import faces

    face = sorted(faces_of(db, "id01"))[0]
    photo = dict(_all_faces(db))[face]
    people.confirm(db, "id02")  # a confirmed face keeps its person wherever it goes
    kept = sorted(faces_of(db, "id02"))[0]
    kept_photo = dict(_all_faces(db))[kept]
    with open_database(db, create=False) as database:
        with database.transaction():
            faces.move_stored_image(database, photo, "id02/moved.jpg", "id02")
            faces.move_stored_image(database, kept_photo, "id01/moved.jpg", "id01")
    people.list_people(db)  # the folder sync
    assert face in faces_of(db, "id02") and face not in faces_of(db, "id01")
    assert kept in faces_of(db, "id02")


def test_the_undo_hint_hides_a_password_and_is_quoted(gallery_db, gallery_copy_on, tmp_path):
    import shlex
    import shutil

    run = CliRunner().invoke
    url = gallery_copy_on(gallery_db, "postgresql")
    secret = url.replace("postgres@", "postgres:s3cretpw@", 1)
    assert secret != url, "the test URL names its user"
    result = run(cli, ["people", "name", "id04", "Dora", "--db", secret])
    assert result.exit_code == 0, result.output
    assert "s3cretpw" not in result.output
    hint = result.output.strip().splitlines()[-1]
    assert hint.startswith("(to undo: facevec people undo --db ")
    (shown,) = shlex.split(hint.removeprefix("(to undo: facevec people undo --db ")[:-1])
    assert shown == url.replace("postgres@", "postgres:***@", 1)

    spaced = tmp_path / "my photos" / "gallery & more.db"
    spaced.parent.mkdir()
    shutil.copy(gallery_copy_on(gallery_db, "sqlite"), spaced)
    result = run(cli, ["people", "name", "id04", "Dora", "--db", str(spaced)])
    assert result.exit_code == 0, result.output
    hint = result.output.strip().splitlines()[-1]
    command = shlex.split(hint.removeprefix("(to undo: ")[:-1])
    assert command == ["facevec", "people", "undo", "--db", str(spaced)]


def test_cli_tables_show_no_name_and_never_undone_as_blank(db):
    run = CliRunner().invoke
    unassigned = [f for f, name in _all_faces(db) if name.endswith("img47.jpg")]
    people.new_person(db, unassigned)  # someone not named yet
    for options in ([], ["--unnamed"]):  # among named people, and alone
        listed = run(cli, ["people", "list", "--db", db, *options])
        assert listed.exit_code == 0, listed.output
        assert "None" not in listed.output and "NaN" not in listed.output, listed.output
    rows = {line.split()[0]: line.split() for line in listed.output.splitlines()[1:]}
    assert len(rows) == 1 and len(next(iter(rows.values()))) == 6  # id and 5 counts, no name
    history = run(cli, ["people", "history", "--db", db])
    assert history.exit_code == 0 and "NaN" not in history.output and "None" not in history.output
    as_json = run(cli, ["people", "list", "--db", db, "--unnamed", "--format", "json"])
    assert '"name":null' in as_json.output.replace(" ", "")


def test_merge_skips_the_target_among_the_people_merged(gallery_db, gallery_copy_on):
    db = gallery_copy_on(gallery_db, "sqlite")
    both = faces_of(db, "id01") | faces_of(db, "id02")
    change = people.merge(db, ["id01", "id02"], "id02")
    assert change.summary.startswith("merged person")
    assert faces_of(db, "id02") == both
    with pytest.raises(PeopleConflictError, match="cannot be merged into itself: name another"):
        people.merge(db, ["id02"], "id02")
