"""people cluster on the shared photos, labels hidden, on SQLite, PostgreSQL and MariaDB:
quality against labels.csv, photos as cannot-links, incremental runs, reruns that
change nothing, interruptions that change nothing, rejections that stand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from backends import BACKENDS
from people_data import pair_scores
from pipeline_photos import FACES, PHOTO_NAMES

import facevec
from facevec.storage.database import open_database


def people_rows(db) -> list[tuple]:
    """Every assignment as the person_faces view shows it:
    (face_id, person_id, img_name, source, score)."""
    with open_database(db, create=False) as database:
        return sorted(
            (int(f), int(p), img, source, None if score is None else round(float(score), 5))
            for f, p, img, source, score in database.query(
                "SELECT face_id, person_id, img_name, source, score FROM person_faces"
            )
        )


def table(db, sql: str) -> list[tuple]:
    with open_database(db, create=False) as database:
        return sorted(tuple(row) for row in database.query(sql))


def labelled_scores(rows: list[tuple], labels: dict[str, str], faces: list[tuple]) -> dict:
    """Pairwise precision / recall over the labelled photos' faces (single-face photos)."""
    person_of = {face_id: person for face_id, person, *_ in rows}
    chosen = [
        (face_id, labels[Path(img).name]) for face_id, img in faces if Path(img).name in labels
    ]
    predicted = [person_of.get(face_id, -1) for face_id, _ in chosen]
    truth = sorted({label for _, label in chosen})
    return pair_scores(predicted, [truth.index(label) for _, label in chosen])


def all_faces(db) -> list[tuple[int, str]]:
    return table(db, "SELECT id, img_name FROM face_meta")


@pytest.mark.parametrize("backend", BACKENDS)
def test_clustering_every_face_recovers_the_labelled_people(
    backend, all_photos_db, gallery_copy_on, labels
):
    db = gallery_copy_on(all_photos_db, backend)
    report = facevec.people.cluster(db, progress=False)
    # Every face of the 55 photos: 60 detections, less img67's background patch.
    assert report.unassigned == report.faces == 59
    rows = people_rows(db)
    scores = labelled_scores(rows, labels, all_faces(db))
    assert scores["precision"] >= 0.98, scores
    assert scores["recall"] >= 0.8, scores
    # Every assignment is a suggestion with its RMS distance as score.
    assert {row[3] for row in rows} == {"suggested"}
    assert all(0 < row[4] < report.threshold for row in rows)
    # Two faces of one photo are never one person (selfie-many-people: 4 faces).
    assert (
        table(
            db,
            "SELECT person_id, img_name FROM person_faces GROUP BY person_id, img_name"
            " HAVING COUNT(*) > 1",
        )
        == []
    )
    # The views answer in one query: how many faces and photos each person has.
    people = table(db, "SELECT person_id, faces, photos, suggested FROM people")
    assert len(people) == report.new_people
    assert sum(p[1] for p in people) == len(rows) == report.faces_in_new_people


def test_the_same_people_on_every_database(all_photos_db, gallery_copy_on):
    found = []
    for backend in BACKENDS:
        db = gallery_copy_on(all_photos_db, backend)
        facevec.people.cluster(db, progress=False)
        groups: dict[int, set] = {}
        for _, person, img, _, _ in people_rows(db):
            groups.setdefault(person, set()).add(os.path.basename(img))
        found.append(sorted(sorted(g) for g in groups.values()))
    assert found[0] == found[1] == found[2]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_rerun_with_nothing_new_changes_nothing(backend, all_photos_db, gallery_copy_on):
    db = gallery_copy_on(all_photos_db, backend)
    facevec.people.cluster(db, progress=False)
    before = people_rows(db), table(db, "SELECT id, name FROM person")
    again = facevec.people.cluster(db, progress=False)
    assert again.edit_id is None and again.joined_existing == again.new_people == 0
    assert (people_rows(db), table(db, "SELECT id, name FROM person")) == before


def test_incremental_runs_grow_people_and_never_move_confirmed_faces(
    tmp_path, gallery_maker, labels, all_photos_db
):
    # all_photos_db first: every photo is then in the embedding cache.
    names = sorted(PHOTO_NAMES)
    first, second = names[::2], names[1::2]
    root = gallery_maker(tmp_path / "photos", {"": first})
    db = tmp_path / "grow.db"
    facevec.index(root, db, progress=False, people=False)  # people cluster does it
    one = facevec.people.cluster(db, progress=False)
    assert one.new_people > 0
    # A user names and confirms the largest person.
    largest = max(facevec.people.list_people(db), key=lambda p: p.faces)
    facevec.people.name(db, largest.id, "Largest")
    facevec.people.confirm(db, "Largest")
    suggested_before = {r[0]: r[1] for r in people_rows(db) if r[3] == "suggested"}
    confirmed_before = {r[0]: r[1] for r in people_rows(db) if r[3] == "confirmed"}

    for name in second:  # the rest of the photos arrive
        os.symlink(FACES / name, root / name)
    facevec.index(root, db, progress=False, people=False)
    two = facevec.people.cluster(db, progress=False)
    rows = people_rows(db)
    now = {r[0]: r[1] for r in rows}
    assert two.unassigned < len(all_faces(db))  # only new (and left-alone) faces
    assert two.joined_existing > 0  # new photos joined people of the first run
    assert {f: now[f] for f in confirmed_before} == confirmed_before
    assert {f: now[f] for f in suggested_before} == suggested_before
    assert {r[0] for r in rows if r[3] == "confirmed"} == set(confirmed_before)
    scores = labelled_scores(rows, labels, all_faces(db))
    assert scores["precision"] >= 0.98 and scores["recall"] >= 0.8, scores


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupted_run_changes_nothing_and_a_rerun_finishes(
    backend, all_photos_db, gallery_copy_on, monkeypatch
):
    from facevec.storage import people as store

    db = gallery_copy_on(all_photos_db, backend)
    # Stopped while comparing faces: before anything is written.
    calls = {"n": 0}
    real_graph = facevec.people.clustering.knn_graph

    def stopped_graph(*args, progress=None, **kwargs):
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(facevec.people.clustering, "knn_graph", stopped_graph)
    with pytest.raises(KeyboardInterrupt):
        facevec.people.cluster(db, progress=False)
    assert calls["n"] == 1
    assert people_rows(db) == [] and table(db, "SELECT id FROM person") == []
    monkeypatch.setattr(facevec.people.clustering, "knn_graph", real_graph)

    # Stopped inside the write, after the assignments went in: rolled back whole.
    real_record = store.record_edit

    def stopped_record(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "record_edit", stopped_record)
    with pytest.raises(KeyboardInterrupt):
        facevec.people.cluster(db, progress=False)
    assert people_rows(db) == [] and table(db, "SELECT id FROM person") == []
    assert table(db, "SELECT id FROM person_edit") == []
    monkeypatch.setattr(store, "record_edit", real_record)

    report = facevec.people.cluster(db, progress=False)
    assert report.new_people > 0
    reference = gallery_copy_on(all_photos_db, "sqlite")
    facevec.people.cluster(reference, progress=False)
    assert _groups(db) == _groups(reference)


def _groups(db) -> list[list[str]]:
    groups: dict[int, set] = {}
    for _, person, img, _, _ in people_rows(db):
        groups.setdefault(person, set()).add(os.path.basename(img))
    return sorted(sorted(g) for g in groups.values())


@pytest.mark.parametrize("backend", BACKENDS)
def test_rejected_faces_stay_out_and_confirmed_faces_stay_in(
    backend, all_photos_db, gallery_copy_on
):
    db = gallery_copy_on(all_photos_db, backend)
    facevec.people.cluster(db, progress=False)
    largest = max(facevec.people.list_people(db), key=lambda p: p.faces)
    faces = facevec.people.show(db, largest.id).faces
    rejected = faces[0].face_id
    facevec.people.reject(db, [rejected])
    assert rejected not in {r[0] for r in people_rows(db)}
    again = facevec.people.cluster(db, progress=False)
    assert again.unassigned >= 1
    person_of = {r[0]: r[1] for r in people_rows(db)}
    assert person_of.get(rejected) != largest.id
    assert table(db, "SELECT face_id, person_id FROM person_rejection") == [(rejected, largest.id)]


def test_cli_cluster_reports_and_can_be_undone(all_photos_db, gallery_copy_on):
    from click.testing import CliRunner

    from facevec.cli import cli

    db = gallery_copy_on(all_photos_db, "sqlite")
    result = CliRunner().invoke(cli, ["people", "cluster", "--db", db, "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("59 of 59 faces had no person: 0 joined existing people,")
    assert "facevec people undo --db" in result.output
    listed = CliRunner().invoke(cli, ["people", "list", "--db", db, "--format", "csv"])
    assert listed.output.splitlines()[0] == "id,name,faces,photos,confirmed,folder,suggested"
    undone = CliRunner().invoke(cli, ["people", "undo", "--db", db])
    assert undone.exit_code == 0 and undone.output.startswith("undid: clustered 59 faces")
    assert people_rows(db) == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_change_made_while_clustering_runs_wins(
    backend, all_photos_db, gallery_copy_on, monkeypatch
):
    from facevec.errors import PeopleConflictError

    db = gallery_copy_on(all_photos_db, backend)
    face = [f for f, img in all_faces(db) if img.endswith("/img1.jpg")][0]  # id01: clustered
    real_graph = facevec.people.clustering.knn_graph

    def graph_and_a_user(*args, **kwargs):
        # Meanwhile, in another connection, a user says who face `face` is.
        facevec.people.split(db, *_a_person_with(db, face))
        return real_graph(*args, **kwargs)

    monkeypatch.setattr(facevec.people.clustering, "knn_graph", graph_and_a_user)
    with pytest.raises(PeopleConflictError, match="run it again"):
        facevec.people.cluster(db, progress=False)
    assert [r[0] for r in people_rows(db)] == [face]  # only the user's change
    monkeypatch.setattr(facevec.people.clustering, "knn_graph", real_graph)
    assert facevec.people.cluster(db, progress=False).new_people > 0


def _a_person_with(db, face: int) -> tuple:
    """(person, [face]) after moving `face` to a fresh person, for split to move it on."""
    from facevec.storage import people as store

    with open_database(db, create=False) as database:
        with database.transaction():
            person = store.create_person(database, "Someone")
            store.assign(database, [(face, person, "confirmed", None)])
    return person, [face]
