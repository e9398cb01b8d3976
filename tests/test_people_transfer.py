"""The people move with the gallery: copy (database to database) and export/import
(Parquet) carry names, assignments and who said so, rejections, hidden people,
cover faces, faces set aside and calibration, on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import GalleryFormatError, PeopleConflictError
from facevec.storage.database import open_database
from facevec.transfer import copy_gallery, export_parquet, import_parquet

people = facevec.people
HELD_OUT = ("img23.jpg", "img24.jpg", "img9.jpg", "img57.jpg")


def people_state(db) -> dict[str, list[tuple]]:
    """Every people fact with faces as (img_name, face_index) and persons by name:
    what must read the same in any gallery the people were carried to."""
    with open_database(db, create=False) as database:

        def query(sql: str) -> list[tuple]:
            return [tuple(row) for row in database.query(sql)]

        state = {
            "people": (
                (p.name, p.faces, p.photos, p.confirmed, p.folder, p.suggested, p.hidden)
                for p in people.list_people(db)
            ),
            "covers": (
                query(
                    "SELECT p.name, f.img_name, f.face_index FROM person p"
                    " JOIN face_meta f ON f.id = p.cover_face_id"
                )
            ),
            "faces": [
                (r[0] or "", r[1], r[2], r[3], r[4])
                for r in query("SELECT name, img_name, face_index, source, score FROM person_faces")
            ],
            "rejections": (
                query(
                    "SELECT p.name, f.img_name, f.face_index FROM person_rejection r"
                    " JOIN person p ON p.id = r.person_id JOIN face_meta f ON f.id = r.face_id"
                )
            ),
            "folders": (
                query(
                    "SELECT d.folder, p.name FROM person_folder d"
                    " JOIN person p ON p.id = d.person_id"
                )
            ),
            "dismissed": (
                query(
                    "SELECT f.img_name, f.face_index FROM face_dismissed d"
                    " JOIN face_meta f ON f.id = d.face_id"
                )
            ),
            "calibration": [
                tuple(float(v) if isinstance(v, float) else v for v in row)
                for row in query("SELECT * FROM facevec_calibration")
            ],
        }
    return {key: sorted(rows, key=repr) for key, rows in state.items()}


def identified(db, photos) -> list[tuple]:
    found = []
    for name in HELD_OUT:
        frame = facevec.identify(photos(name), db)
        found += [
            (name, row.decision, row.person, round(row.distance, 5), round(row.threshold, 5))
            for row in frame.itertuples()
        ]
    return found


@pytest.fixture(scope="module")
def worked_on(gallery_db, tmp_path_factory):
    """A copy of the session gallery where a user did people work of every kind."""
    import sqlite3

    db = tmp_path_factory.mktemp("people") / "worked.db"
    source, target = sqlite3.connect(gallery_db), sqlite3.connect(db)
    source.backup(target)
    source.close(), target.close()
    people.name(db, "id04", "Dora")
    people.hide(db, "id02")
    dora = sorted(f.face_id for f in people.show(db, "Dora").faces)
    people.choose_cover(db, "Dora", dora[-1])
    id01 = sorted(f.face_id for f in people.show(db, "id01").faces)
    people.reject(db, [id01[-1]], "id01")
    people.confirm(db, "id03")
    people.cluster(db)  # suggestions for the faces outside folders
    total, loose = people.unassigned(db)
    if total:
        people.dismiss(db, [loose[0].face_id])
    people.calibrate(db)
    state = people_state(db)
    # Every kind of fact is there to be carried.
    assert state["rejections"] and state["covers"] and state["calibration"]
    assert any(row[-1] for row in state["people"])  # someone hidden
    assert {row[3] for row in state["faces"]} >= {"folder", "confirmed"}
    return db


@pytest.mark.parametrize("backend", BACKENDS)
def test_copy_carries_the_people(backend, worked_on, photos, tmp_path):
    before = people_state(worked_on)
    with fresh_database(backend, tmp_path) as target:
        copied = copy_gallery(worked_on, target)
        assert copied["people"] == len(before["people"])
        assert people_state(target) == before
        assert identified(target, photos) == identified(worked_on, photos)
        # The history starts clean: nothing to undo that named the source's ids.
        assert people.history(target) == []
        # A rerun of the same copy finishes it and keeps the same people.
        copy_gallery(worked_on, target)
        assert people_state(target) == before


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_target_with_other_people_is_refused_and_kept(backend, worked_on, gallery_db, tmp_path):
    with fresh_database(backend, tmp_path) as target:
        copy_gallery(gallery_db, target)  # folder people of its own
        people.name(target, "id01", "Ann")
        kept = people_state(target)
        faces = facevec.info(target)["faces"]
        with pytest.raises(PeopleConflictError, match="already holds people .*nothing was written"):
            copy_gallery(worked_on, target)
        with pytest.raises(PeopleConflictError, match="already holds people"):
            export_parquet(worked_on, tmp_path / "pq", progress=False)
            import_parquet(tmp_path / "pq", target, progress=False)
        assert people_state(target) == kept and facevec.info(target)["faces"] == faces
        # Faces only: the target's own people stay, the source's are left behind.
        copied = copy_gallery(worked_on, target, people=False)
        assert copied["people"] == 0
        names = {p.name for p in people.list_people(target)}
        assert "Ann" in names and "Dora" not in names


def test_copy_cli_says_it_carries_people(worked_on, tmp_path):
    target = tmp_path / "target.db"
    result = CliRunner().invoke(cli, ["copy", str(worked_on), str(target), "--quiet"])
    assert result.exit_code == 0, result.output
    assert f"and {len(people.list_people(worked_on))} people" in result.output
    listed = CliRunner().invoke(cli, ["people", "list", "--db", str(target)])
    assert "Dora" in listed.output and "(none)" not in listed.output


@pytest.mark.parametrize("backend", BACKENDS)
def test_export_import_round_trip_carries_the_people(backend, worked_on, photos, tmp_path):
    before = people_state(worked_on)
    folder = tmp_path / "pq"
    written = export_parquet(worked_on, folder, progress=False)
    assert written["people"] == len(before["people"])
    assert (folder / "_people" / "people.parquet").is_file()
    # The faces read as before: Spark, pyarrow and the `*.parquet` glob skip `_people`.
    assert pq.read_table(folder).num_rows == written["faces"]
    with fresh_database(backend, tmp_path) as target:
        imported = import_parquet(folder, target, progress=False)
        assert imported["people"] == len(before["people"])
        assert people_state(target) == before
        assert identified(target, photos) == identified(worked_on, photos)
        assert people.history(target) == []
        again = import_parquet(folder, target, progress=False)  # a rerun
        assert again["replaced"] == written["faces"]
        assert people_state(target) == before


def test_an_export_without_people_still_imports(worked_on, tmp_path):
    folder = tmp_path / "pq"
    export_parquet(worked_on, folder, progress=False)
    (folder / "_people" / "people.parquet").unlink()
    target = tmp_path / "target.db"
    imported = import_parquet(folder, target, progress=False)
    assert imported["people"] == 0 and imported["faces"] == facevec.info(worked_on)["faces"]
    # The folder people are made again from the faces' folders, as before.
    assert "Dora" not in {p.name for p in people.list_people(target)}


def _spoil(folder, column, value, record="person"):
    path = folder / "_people" / "people.parquet"
    table = pq.read_table(path)
    records = table.column("record").to_pylist()
    values = table.column(column).to_pylist()
    values[records.index(record)] = value
    spoiled = table.set_column(
        table.schema.get_field_index(column),
        column,
        pa.array(values, table.schema.field(column).type),
    )
    pq.write_table(spoiled, path)


@pytest.mark.parametrize(
    "column, value, record, message",
    [
        ("name", "unknown", "person", "identify's answers"),
        ("name", "person 3", "person", "unnamed person's label"),
        ("name", "42", "person", "only digits"),
        ("source", "guessed", "face", "source must be one of"),
        ("person", 999, "face", "names person 999"),
        ("img_name", "nowhere.jpg", "face", "nowhere.jpg"),
        ("record", "gossip", "person", "record must be one of"),
    ],
)
def test_a_bad_people_file_is_one_clear_error_and_loses_nothing(
    worked_on, tmp_path, column, value, record, message
):
    folder = tmp_path / "pq"
    export_parquet(worked_on, folder, progress=False)
    _spoil(folder, column, value, record)
    target = tmp_path / "target.db"
    with pytest.raises(GalleryFormatError, match=message):
        import_parquet(folder, target, progress=False)
    assert not target.exists() or facevec.info(target)["faces"] == 0


def test_cli_import_refuses_a_target_with_people_unless_told(worked_on, gallery_db, tmp_path):
    folder = tmp_path / "pq"
    export_parquet(worked_on, folder, progress=False)
    target = tmp_path / "target.db"
    copy_gallery(gallery_db, target)  # folder people of its own
    kept = people_state(target)
    run = ["import", "--parquet", str(folder), "--db", str(target), "--quiet"]
    result = CliRunner().invoke(cli, run)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "already holds people" in result.output
    assert "--no-people" in result.output and people_state(target) == kept
    result = CliRunner().invoke(cli, [*run, "--no-people"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("imported ") and "people" not in result.output
    assert "Dora" not in {p.name for p in people.list_people(target)}


def test_a_folder_person_named_like_digits_is_carried(gallery_db, tmp_path):
    # A folder "2024" became the person "2024" (as index --people-from-folders names
    # them); `people name` would refuse that name, the carry keeps it.
    import sqlite3

    source = tmp_path / "source.db"
    with sqlite3.connect(gallery_db) as a, sqlite3.connect(source) as b:
        a.backup(b)
    with open_database(source) as database, database.transaction():
        for table, column in (("face_meta", "identity"), ("person_folder", "folder")):
            database.execute(f"UPDATE {table} SET {column} = '2024' WHERE {column} = 'id02'")
        database.execute("UPDATE person SET name = '2024' WHERE name = 'id02'")
    target = tmp_path / "target.db"
    copy_gallery(source, target)
    assert people_state(target) == people_state(source)
    assert "2024" in {p.name for p in people.list_people(target)}


def _named_by_case_and_spaces(tmp_path):
    """Two galleries made with add: people 'ann' and 'Ann' (case), and the folder
    people 'eve' and 'eve ' (a trailing space: one key on MariaDB and MySQL)."""
    import numpy as np

    vectors = np.random.default_rng(7).normal(size=(4, 128)).astype(np.float32)
    names = [f"p{i}.jpg" for i in range(4)]
    by_case = tmp_path / "case.db"
    facevec.add(by_case, names, vectors, model_name="Dlib", people=False)
    people.new_person(by_case, [1], "ann")
    people.new_person(by_case, [2], "Ann")
    by_spaces = tmp_path / "spaces.db"
    facevec.add(
        by_spaces,
        names,
        vectors,
        model_name="Dlib",
        identities=["eve", "eve ", "eve", "eve "],
        people_from_folders=True,
    )
    return by_case, by_spaces


@pytest.mark.parametrize("backend", BACKENDS)
def test_names_differing_in_case_or_trailing_spaces_go_the_same_way_everywhere(backend, tmp_path):
    by_case, by_spaces = _named_by_case_and_spaces(tmp_path)
    # Case is part of a name on every database: two people arrive.
    with fresh_database(backend, tmp_path) as target:
        assert copy_gallery(by_case, target)["people"] == 2
        assert sorted(p.name for p in people.list_people(target)) == ["Ann", "ann"]
    # Names one only where trailing spaces are not compared: refused on every
    # database, naming them, before anything is written.
    clash = re.escape("the names 'eve' and 'eve ' differ only in trailing spaces")
    with fresh_database(backend, tmp_path) as target:
        with pytest.raises(PeopleConflictError, match=clash + ".*nothing was written"):
            copy_gallery(by_spaces, target)
        export_parquet(by_spaces, tmp_path / "pq", progress=False)
        with pytest.raises(PeopleConflictError, match=clash):
            import_parquet(tmp_path / "pq", target, progress=False)
        assert facevec.info(target)["faces"] == 0


def _unchecked(db):
    """The faces the people step has not looked at (above the gallery's mark, no
    person), as (img_name, face_index); None without a mark."""
    with open_database(db) as database:
        mark = database.scalar("SELECT people_checked_id FROM facevec_collection")
        if mark is None:
            return None
        return [
            (name, int(index))
            for name, index in database.query(
                "SELECT img_name, face_index FROM face_meta f WHERE id > {p} AND NOT EXISTS"
                " (SELECT 1 FROM person_face pf WHERE pf.face_id = f.id) ORDER BY id",
                (int(mark),),
            )
        ]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_faces_the_people_step_has_not_seen_are_carried(backend, tmp_path):
    import numpy as np

    vectors = np.random.default_rng(3).normal(size=(9, 128)).astype(np.float32)
    source = tmp_path / "source.db"
    facevec.add(source, [f"a{i}.jpg" for i in range(6)], vectors[:6], model_name="Dlib")
    facevec.add(
        source, [f"b{i}.jpg" for i in range(3)], vectors[6:], model_name="Dlib", people=False
    )
    waiting = [(f"b{i}.jpg", 0) for i in range(3)]
    assert _unchecked(source) == waiting
    with fresh_database(backend, tmp_path) as target:
        copy_gallery(source, target)
        assert _unchecked(target) == waiting
        # The target's next run looks at them, as the source's would have.
        facevec.add(target, [], np.zeros((0, 128), np.float32), model_name="Dlib")
        assert _unchecked(target) == []
    export_parquet(source, tmp_path / "pq", progress=False)
    with fresh_database(backend, tmp_path) as target:
        import_parquet(tmp_path / "pq", target, progress=False)
        assert _unchecked(target) == waiting
