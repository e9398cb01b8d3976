"""The people step at the end of every run: folders are people only when asked,
new faces of known people are recognised, the rest grouped, on real photos (a
date-organised library) and on SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from backends import BACKENDS
from click.testing import CliRunner
from people_data import clustered_vectors
from pipeline_photos import FACES

import facevec
from facevec.cli import cli
from facevec.storage.database import open_database

people = facevec.people

# A library sorted by date and event, as phones and photo apps sort it.
DATED = {
    "2024/06-holiday": ["img1.jpg", "img2.jpg", "img4.jpg", "img3.jpg", "img8.jpg"],
    "2024/07-home": ["img5.jpg", "img6.jpg", "img12.jpg", "img22.jpg"],
}
PARTY = {"2024/08-party": ["img7.jpg", "img23.jpg", "img9.jpg"]}  # added later


def backup(db: Path, to: Path) -> Path:
    with sqlite3.connect(db) as source, sqlite3.connect(to) as target:
        source.backup(target)
    return to


def rows(db, sql: str, params=()) -> list[tuple]:
    with open_database(db, create=False) as database:
        return [tuple(row) for row in database.query(sql, params)]


def face_people(db) -> dict[str, tuple[int, str]]:
    """photo file name -> (person, source) of its face (one face per photo here)."""
    found = rows(
        db,
        "SELECT f.img_name, pf.person_id, pf.source FROM face_meta f"
        " JOIN person_face pf ON pf.face_id = f.id",
    )
    return {Path(name).name: (person, source) for name, person, source in found}


@pytest.fixture(scope="module")
def dated(tmp_path_factory, gallery_maker) -> Path:
    return gallery_maker(tmp_path_factory.mktemp("dated") / "photos", DATED)


@pytest.fixture(scope="module")
def without_people(dated, tmp_path_factory) -> tuple[Path, str]:
    """(db, CLI output) of `facevec index --no-people` of the dated library."""
    db = tmp_path_factory.mktemp("no_people") / "faces.db"
    result = CliRunner().invoke(
        cli, ["index", str(dated), "--db", str(db), "--quiet", "--workers", "1", "--no-people"]
    )
    assert result.exit_code == 0, result.output
    return db, result.output


@pytest.fixture(scope="module")
def stepped(without_people, dated, tmp_path_factory) -> tuple[Path, dict]:
    """(db, JSON report) of a second `facevec index` of the library, with the step:
    nothing to embed, every face not looked at yet (the --no-people run's) grouped."""
    db = backup(without_people[0], tmp_path_factory.mktemp("stepped") / "faces.db")
    result = CliRunner().invoke(
        cli, ["index", str(dated), "--db", str(db), "--quiet", "--format", "json"]
    )
    assert result.exit_code == 0, result.output
    return db, json.loads(result.output)


@pytest.fixture(scope="module")
def party(stepped, dated, tmp_path_factory, gallery_maker) -> dict:
    """id01's person named Ann, one of the other grouped faces confirmed by a user,
    then three new photos indexed (one of Ann)."""
    db = backup(stepped[0], tmp_path_factory.mktemp("party") / "faces.db")
    ann = face_people(db)["img1.jpg"][0]
    people.name(db, ann, "Ann")
    before = rows(db, "SELECT face_id, person_id, source, score FROM person_face")
    gallery_maker(dated, PARTY)
    result = CliRunner().invoke(cli, ["index", str(dated), "--db", str(db), "--workers", "1"])
    assert result.exit_code == 0, result.output
    return {"db": db, "ann": ann, "before": before, "output": result.output}


def test_a_date_organised_library_makes_no_folder_people(without_people, stepped, labels):
    for db in (without_people[0], stepped[0]):
        identities = {row[0] for row in rows(db, "SELECT DISTINCT identity FROM face_meta")}
        assert identities == {"06-holiday", "07-home"}  # the column stays
        assert rows(db, "SELECT * FROM person_folder") == []
        assert rows(db, "SELECT id FROM person WHERE name IS NOT NULL") == []
    assert not any(p.folder for p in people.list_people(stepped[0]))


def test_no_people_leaves_every_face_without_a_person(without_people):
    db, output = without_people
    assert rows(db, "SELECT COUNT(*) FROM face_meta")[0][0] == 9
    assert rows(db, "SELECT COUNT(*) FROM person_face") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM person") == [(0,)]
    assert "people:" not in output


def test_the_step_groups_new_faces_into_pure_people(stepped, labels):
    db, report = stepped
    step = report["people"]
    assert report["indexed"] == 0  # nothing embedded again
    assert step["faces"] == 9 and step["recognised"] == 0  # nobody was known
    assert step["grouped"] + step["left_alone"] == 9
    assert step["summary"].startswith("0 recognised as known people, ")
    assigned = face_people(db)
    assert len(assigned) == step["grouped"] and step["new_people"] >= 1
    assert {source for _, source in assigned.values()} == {"suggested"}
    by_person: dict[int, set[str]] = {}
    for photo, (person, _) in assigned.items():
        by_person.setdefault(person, set()).add(labels[photo])
    assert len(by_person) == step["new_people"]
    assert all(len(found) == 1 for found in by_person.values()), by_person  # pure
    # id01's five photos (two events apart) are one person.
    id01 = {assigned[p][0] for p in ("img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img6.jpg")}
    assert len(id01) == 1
    ((_, action, summary, _, undone),) = people.history(db)
    assert (action, undone) == ("step", None)
    assert step["summary"] in summary


def test_the_step_is_undone_as_an_edit(stepped, tmp_path):
    db = backup(stepped[0], tmp_path / "undo.db")
    people.undo(db)
    assert rows(db, "SELECT COUNT(*) FROM person_face") == [(0,)]
    assert rows(db, "SELECT COUNT(*) FROM person") == [(0,)]


def test_a_new_photo_of_a_named_person_is_recognised(party, labels):
    db, ann = party["db"], party["ann"]
    assigned = face_people(db)
    assert assigned["img7.jpg"] == (ann, "suggested")
    assert people.show(db, "Ann").person.faces == 6
    # What was there stands, row for row.
    after = set(rows(db, "SELECT face_id, person_id, source, score FROM person_face"))
    assert set(party["before"]) <= after
    # The others: grouped with faces left alone before (never with a wrong person).
    by_person: dict[int, set[str]] = {}
    for photo, (person, _) in assigned.items():
        by_person.setdefault(person, set()).add(labels[photo])
    assert all(len(found) == 1 for found in by_person.values()), by_person
    line = next(line for line in party["output"].splitlines() if line.startswith("people: "))
    assert line.startswith("people: 1 recognised as known people, ")
    assert line.endswith(" left alone")


def test_a_rerun_with_nothing_new_changes_no_person(party, dated):
    db = party["db"]
    before = rows(db, "SELECT face_id, person_id, source, score FROM person_face")
    report = facevec.index(dated, db, progress=False, workers=1)
    assert report.indexed == 0
    assert report.people is not None and report.people.faces == 0
    assert report.people.edit_id is None
    assert rows(db, "SELECT face_id, person_id, source, score FROM person_face") == before


def test_people_from_folders_makes_each_folder_a_person_and_sticks(
    party, dated, tmp_path, gallery_maker
):
    db = backup(party["db"], tmp_path / "folders.db")
    report = facevec.index(dated, db, progress=False, people_from_folders=True)
    assert report.indexed == 0
    found = {p.name: p for p in people.list_people(db)}
    assert (found["06-holiday"].folder, found["07-home"].folder) == (5, 4)
    assert found["08-party"].folder == 3
    # A folder takes the place of suggestions only: every face is its folder's now.
    assert {source for _, source in face_people(db).values()} == {"folder"}
    # Later runs make folder people of new folders without being asked again.
    gallery_maker(dated, {"2024/09-work": ["img10.jpg"]})
    again = facevec.index(dated, db, progress=False, workers=1)
    assert again.indexed == 1
    assert people.show(db, "09-work").person.folder == 1
    shutil.rmtree(dated / "2024" / "09-work")


def test_web_index_job_takes_people_from_folders_and_reports_the_step(
    gallery_db_copy, tmp_path, gallery_maker
):
    from web_support import AUTH, client_for

    folder = gallery_maker(tmp_path / "new", {"newcomer": ["img3.jpg"]})
    with client_for(gallery_db_copy, photos=[folder, FACES]) as http:  # links to FACES
        job = http.post(
            "/api/index",
            json={"folder": str(folder), "people_from_folders": True, "workers": 1},
            headers=AUTH,
        ).json()
        http.app.state.jobs.wait(job["id"], timeout=300)
        done = http.get(f"/api/jobs/{job['id']}").json()
    assert done["state"] == "done", done
    assert done["report"]["people"]["summary"].endswith(" left alone")
    assert people.show(gallery_db_copy, "newcomer").person.folder == 1


# The step on each database, on the same vectors -------------------------------


def test_add_recognises_and_groups_on_every_database(party, stepped, backend_db):
    """The dated library's grouped people on each backend (copied: face ids change,
    the step's mark starts at the copy's last face), Ann named; then add() stores the
    party photos' vectors: img7 is Ann's."""
    vectors = {
        Path(name).name: np.frombuffer(bytes(blob), dtype="<f4")
        for name, blob in rows(party["db"], "SELECT img_name, embedding FROM face_meta")
    }
    db = backend_db(stepped[0])
    people.cluster(db, progress=False)  # a copy to a server has no people yet
    ann = face_people(db)["img1.jpg"][0]
    people.name(db, ann, "Ann")
    before = set(rows(db, "SELECT face_id, person_id, source FROM person_face"))
    names = ["party/img7.jpg", "party/img23.jpg", "party/img9.jpg"]
    added = facevec.add(db, names, np.stack([vectors[Path(n).name] for n in names]))
    assert added == 3 and added.people is not None
    assert added.people.faces == 3 and added.people.recognised == 1
    assigned = face_people(db)
    assert assigned["img7.jpg"] == (ann, "suggested")
    assert before <= set(rows(db, "SELECT face_id, person_id, source FROM person_face"))
    step = added.people
    assert step.recognised + step.grouped + step.left_alone == 3


@pytest.fixture(params=BACKENDS)
def backend_db(request, gallery_copy_on):
    return lambda source: gallery_copy_on(source, request.param)


# Synthetic vectors: many people, no photos ------------------------------------


def test_synthetic_gallery_stays_current_run_after_run(tmp_path):
    vectors, labels = clustered_vectors(600, seed=3, mean_faces=6.0)
    order = np.random.default_rng(3).permutation(len(vectors))
    vectors, labels = vectors[order], labels[order]
    db = tmp_path / "synthetic.db"
    first = facevec.add(db, [f"a/{i}.jpg" for i in range(400)], vectors[:400])
    assert first.people.recognised == 0 and first.people.new_people > 10
    person_of = {
        int(face): person for face, person in rows(db, "SELECT face_id, person_id FROM person_face")
    }
    ids = [row[0] for row in rows(db, "SELECT id FROM face_meta ORDER BY id")]
    label_of = dict(zip(ids, labels[:400].tolist(), strict=True))
    # Each new person holds one identity.
    holders: dict[int, set[int]] = {}
    for face, person in person_of.items():
        holders.setdefault(person, set()).add(label_of[face])
    assert sum(len(v) == 1 for v in holders.values()) >= 0.95 * len(holders)
    people_of_label: dict[int, int] = {}
    for person, found in holders.items():
        if len(found) == 1:
            people_of_label.setdefault(next(iter(found)), person)

    # Two faces of one new photo, both of a known person: only one can be them.
    twin_label = next(iter(people_of_label))
    twin = vectors[:400][labels[:400] == twin_label][:1]
    second = facevec.add(
        db,
        [f"b/{i}.jpg" for i in range(400, 600)] + ["b/twins.jpg", "b/twins.jpg"],
        np.concatenate([vectors[400:], twin, twin + 0.001]),
    )
    step = second.people
    assert step.faces == 202
    assert step.recognised + step.grouped + step.left_alone == 202
    assert step.recognised >= 100  # most new faces are of people seen before
    later = "SELECT id FROM face_meta WHERE id > {p} ORDER BY id"
    new_ids = [row[0] for row in rows(db, later, (max(ids),))]
    now = dict(rows(db, "SELECT face_id, person_id FROM person_face"))
    right = sum(
        1
        for face, label in zip(new_ids[:200], labels[400:].tolist(), strict=True)
        if face in now and people_of_label.get(label) == now[face]
    )
    assert right >= 0.95 * step.recognised
    twins = [face for face in new_ids[200:] if now.get(face) == people_of_label[twin_label]]
    assert len(twins) == 1
    # Earlier assignments stand.
    assert all(now[face] == person for face, person in person_of.items())


def _people_made(db) -> list:
    """Every assignment: photo, person (a name, or an unnamed person's photos),
    source and score."""
    found = rows(
        db,
        "SELECT f.img_name, pf.person_id, p.name, pf.source, pf.score FROM person_face pf"
        " JOIN face_meta f ON f.id = pf.face_id JOIN person p ON p.id = pf.person_id",
    )
    members: dict[int, list[str]] = {}
    for img, person, _, _, _ in found:
        members.setdefault(person, []).append(img)
    return sorted(
        (img, name if name is not None else str(sorted(members[person])), source, score)
        for img, person, name, source, score in found
    )


@pytest.mark.parametrize("lists", [0, 8])
def test_the_step_gives_the_same_people_from_the_knn_index_or_in_memory(
    tmp_path, monkeypatch, lists
):
    """Many new faces are ranked against the gallery in memory (the batch kernels);
    a few through the knn index: the same neighbours, so the same people (an IVF
    index searched with every list probed is exact too)."""
    from facevec.people import keep_current

    vectors, labels = clustered_vectors(1500, seed=5, mean_faces=6.0)
    order = np.random.default_rng(5).permutation(len(vectors))
    vectors, labels = vectors[order], labels[order]
    named = [f"p{label}" for label in labels[:500].tolist()]
    made = []
    in_memory = []
    rank = keep_current.nearest_rows
    monkeypatch.setattr(keep_current, "nearest_rows", lambda *a: in_memory.append(1) or rank(*a))
    for matrix_from in (1, 10**9):
        monkeypatch.setattr(keep_current, "MATRIX_FROM", matrix_from)
        monkeypatch.setattr(keep_current, "IVF_SHARE", 10**9)
        db = tmp_path / f"step-{matrix_from}.db"
        # Named people, faces of no one yet, then new faces: recognised, grouped with
        # the earlier ones, or left alone.
        facevec.add(db, [f"a/{i}.jpg" for i in range(500)], vectors[:500], "Dlib", named, True)
        facevec.add(db, [f"b/{i}.jpg" for i in range(500, 1000)], vectors[500:1000], "Dlib")
        if lists:  # every list probed: exact answers
            with open_database(db) as database:
                facevec.knn.build(database.conn, lists=lists, nprobe=lists)
        step = facevec.add(db, [f"c/{i}.jpg" for i in range(1000, 1500)], vectors[1000:]).people
        assert step.recognised > 100 and step.grouped > 20 and step.earlier_grouped > 0
        made.append((step.as_dict() | {"seconds": 0}, _people_made(db)))
    assert len(in_memory) == 2  # the first run's two steps with new faces; none of the second's
    assert made[0] == made[1]
