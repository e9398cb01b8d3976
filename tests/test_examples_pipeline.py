"""The photo pipeline on the repository's own examples/ (ten small photos, in every
clone): index, find, verify, people and the web page and API. These run where the
larger photo set is absent; the gallery is indexed once for the module, and the
tests that change it work on a copy."""

from __future__ import annotations

import re
import sqlite3
from pathlib import Path

import pytest
from pipeline_photos import EXAMPLES

import facevec

FOLDERS = {"id01": 4, "id03": 2, "id05": 2}  # person folder -> photos (one face each)
QUERY = EXAMPLES / "query.jpg"  # another photo of id01
COUPLE = EXAMPLES / "faces" / "couple.jpg"  # two faces, no folder; face 1 is id01's
PEOPLE = {**FOLDERS, "id01": 5}  # after the index run's people step: and couple.jpg's face 1


@pytest.fixture(scope="module")
def indexed_examples(tmp_path_factory) -> tuple[Path, object]:
    """(database, index report) of examples/faces; read-only for tests."""
    pytest.importorskip("deepface", reason="deepface is not installed (pip install '.[deepface]')")
    db = tmp_path_factory.mktemp("examples") / "faces.db"
    report = facevec.index(EXAMPLES / "faces", db, progress=False, people_from_folders=True)
    return db, report


@pytest.fixture(scope="module")
def examples_db(indexed_examples) -> Path:
    return indexed_examples[0]


@pytest.fixture
def examples_copy(examples_db, tmp_path) -> Path:
    copy = tmp_path / "copy.db"
    with sqlite3.connect(examples_db) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    return copy


def stored(db: Path) -> list[tuple[str, int, str | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT img_name, face_index, identity FROM face_meta").fetchall()
    return sorted((Path(name).name, index, identity) for name, index, identity in rows)


def test_index_stores_every_example_face_with_its_folder_as_identity(indexed_examples):
    db, report = indexed_examples
    assert (report.files_seen, report.indexed, report.faces_added) == (9, 9, 10)
    assert (report.no_face, report.not_image, report.errors) == (0, 0, 0)
    faces = stored(db)
    identities = [identity for _, _, identity in faces]
    assert {person: identities.count(person) for person in FOLDERS} == FOLDERS
    assert [(name, index) for name, index, identity in faces if identity is None] == [
        ("couple.jpg", 0),
        ("couple.jpg", 1),
    ]


def test_find_answers_the_query_with_its_person_on_every_sqlite_strategy(examples_db):
    answers = {}
    for strategy in ("extension", "knn", "relational", "client"):
        (frame,) = facevec.find(str(QUERY), examples_db, strategy=strategy)
        answers[strategy] = list(frame.face_id)
        names = {Path(name).name for name in frame.img_name}
        assert {"img1.jpg", "img4.jpg", "img5.jpg", "img6.jpg"} <= names
        assert frame.identity.iloc[0] == "id01"
        assert set(frame.identity.dropna()) == {"id01"}
        assert frame.verified.all() and frame.distance.is_monotonic_increasing
    assert len({tuple(ids) for ids in answers.values()}) == 1, answers


def test_verify_tells_the_same_person_from_another():
    pytest.importorskip("deepface", reason="deepface is not installed (pip install '.[deepface]')")
    same = facevec.verify(str(QUERY), str(EXAMPLES / "faces" / "id01" / "img1.jpg"))
    other = facevec.verify(str(QUERY), str(EXAMPLES / "faces" / "id03" / "img8.jpg"))
    assert same["verified"] is True and same["distance"] <= same["threshold"]
    assert other["verified"] is False and other["distance"] > other["threshold"]


def test_people_come_from_the_folders_and_clustering_suggests_no_wrong_person(examples_copy):
    people = {p.name: p.faces for p in facevec.people.list_people(examples_copy)}
    assert people == PEOPLE
    # The index run's people step recognised couple.jpg's face 1 as id01.
    (suggested,) = [
        f for f in facevec.people.show(examples_copy, "id01").faces if f.source != "folder"
    ]
    assert (Path(suggested.img_name).name, suggested.face_index, suggested.source) == (
        "couple.jpg",
        1,
        "suggested",
    )
    (match,) = facevec.identify(str(QUERY), examples_copy).itertuples()
    assert (match.person, match.decision) == ("id01", "matched")
    report = facevec.people.cluster(examples_copy, progress=False)
    assert (report.faces, report.unassigned) == (10, 1)  # the couple's face 0
    # Clustering may add couple.jpg's face 1 to id01 (the same person), nothing else.
    for person in FOLDERS:
        view = facevec.people.show(examples_copy, person)
        added = {(Path(f.img_name).name, f.face_index) for f in view.faces if f.source != "folder"}
        assert added <= ({("couple.jpg", 1)} if person == "id01" else set()), (person, added)
        assert sum(f.source == "folder" for f in view.faces) == FOLDERS[person]


def test_the_web_api_and_search_page_find_the_query(examples_db):
    from web_support import client_for  # skips without the web extra

    (expected,) = facevec.find(str(QUERY), examples_db)
    with client_for(str(examples_db), photos=[EXAMPLES]) as http:
        upload = {"photo": ("query.jpg", QUERY.read_bytes(), "image/jpeg")}
        response = http.post("/api/find", files=upload)
        assert response.status_code == 200, response.text
        (face,) = response.json()["faces"]
        assert [m["face_id"] for m in face["matches"]] == list(expected.face_id)
        assert face["matches"][0]["identity"] == "id01"
        page = http.post("/search", files=upload)
        assert page.status_code == 200, page.text
        crops = re.findall(r'src="(/api/faces/\d+/thumbnail\.jpg)"', page.text)
        photos = re.findall(r'href="(/photos/[^"]+)"', page.text)
        assert crops and photos, "the search page shows no match"
        crop, photo = http.get(crops[0]), http.get(photos[0])
        assert crop.status_code == 200 and crop.content[:2] == b"\xff\xd8"  # cut from the photo
        assert photo.status_code == 200 and photo.content[:2] == b"\xff\xd8"  # a JPEG
        people = http.get("/api/people")
        assert people.status_code == 200
        assert {p["name"]: p["faces"] for p in people.json()} == PEOPLE
