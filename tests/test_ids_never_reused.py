"""Ids of faces and people are never handed out twice, so ``people undo`` (which
restores rows by id) cannot give an edit's old rows to new faces or people; undo
refuses when what an edit wrote changed since; and a schema-3 SQLite gallery is
upgraded to that in one step, its knn index intact."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from backends import BACKENDS, fresh_database

import facevec
from facevec.errors import PeopleConflictError
from facevec.storage import id_sequences, schema
from facevec.storage.database import open_database
from facevec.storage.dialects import SQLITE

people = facevec.people
DIM = 16


def vectors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, DIM)).astype(np.float32)


def person_of(db, face_id: int) -> str | None:
    with open_database(db, create=False) as database:
        return database.scalar(
            "SELECT p.name FROM person_face pf JOIN person p ON p.id = pf.person_id"
            " WHERE pf.face_id = {p}",
            (face_id,),
        )


def face_ids(db, img_name: str) -> list[int]:
    with open_database(db, create=False) as database:
        return [
            int(r[0])
            for r in database.query("SELECT id FROM face_meta WHERE img_name = {p}", (img_name,))
        ]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_merge_then_a_new_folder_then_undo_keeps_the_new_folders_person(backend, tmp_path):
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["a1", "a2", "b1", "b2"], vectors(4, 1), identities=["A", "A", "B", "B"])
        people.merge(db, ["B"], "A")  # person B (the newest) is deleted
        facevec.add(db, ["c1", "c2"], vectors(2, 2), identities=["C", "C"])
        people.undo(db)
        named = {p.name: p.faces for p in people.list_people(db)}
        assert named == {"A": 2, "B": 2, "C": 2}
        assert [person_of(db, f) for f in face_ids(db, "c1") + face_ids(db, "c2")] == ["C", "C"]


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_reject_then_replace_the_photo_then_undo_leaves_the_new_face_alone(backend, tmp_path):
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["a1", "a2"], vectors(2, 3), identities=["A", "A"])
        (old,) = face_ids(db, "a2")  # the newest face
        people.reject(db, [old])
        facevec.add(db, ["a2"], vectors(1, 4))  # the photo replaced: its face deleted
        (new,) = face_ids(db, "a2")
        assert new != old
        people.undo(db)
        assert person_of(db, new) is None  # the old face's assignment stays with it
        assert {p.name: p.faces for p in people.list_people(db)} == {"A": 1}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_undo_refuses_when_what_the_edit_wrote_changed_since(backend, tmp_path):
    """Naming a person "Bob", then indexing a folder Bob/, gives the folder's faces to
    that person: undoing the name would leave them with an unnamed person."""
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["x1", "x2"], vectors(2, 5), identities=["X", "X"])
        (x,) = people.list_people(db)
        people.name(db, x.id, "Bob")
        facevec.add(db, ["bob1"], vectors(1, 6), identities=["Bob"])
        message = f"since then, folder 'Bob' was given to person {x.id}"
        with pytest.raises(PeopleConflictError, match=re.escape(message)):
            people.undo(db)
        assert {p.name: p.faces for p in people.list_people(db)} == {"Bob": 3}
        # What no one changed since undoes as before.
        people.name(db, x.id, "Robert")
        assert people.undo(db).summary.startswith("undid: named person")


def make_schema3_gallery(path, monkeypatch) -> tuple[int, int]:
    """A gallery as facevec wrote it at schema version 3: plain INTEGER PRIMARY KEY
    ids, no person_edit.after_rows, and ids already deleted at the top that edits
    still name; returns the largest (face id, person id) ever used."""
    with monkeypatch.context() as old:
        old.setitem(SQLITE.types, "id", "INTEGER PRIMARY KEY")
        old.setattr(id_sequences, "upgrade", lambda db: None)
        names = [f"p{i}" for i in range(40)]
        identities = ["A"] * 10 + ["B"] * 10 + [None] * 20
        facevec.add(path, names, vectors(40, 7), identities=identities)
        facevec.knn.reindex(path, progress=False)
        people.merge(path, ["B"], "A")
        facevec.add(path, ["zz"], vectors(1, 8), identities=["Z"])  # the newest face, person
        people.reject(path, face_ids(path, "zz"))
        used = (face_ids(path, "zz")[0], max(p.id for p in people.list_people(path)))
    with open_database(path) as database, database.transaction():
        # The newest face and person deleted; the reject edit still names them.
        database.execute("DELETE FROM face_meta WHERE img_name = 'zz'")
        database.execute("DELETE FROM person WHERE name = 'Z'")
        database.execute("ALTER TABLE person_edit DROP COLUMN after_rows")
        database.execute("UPDATE facevec_collection SET schema_version = 3")
    return used


def test_a_schema_3_gallery_is_upgraded_and_its_knn_index_survives(tmp_path, monkeypatch):
    db = tmp_path / "old.db"
    top_face, top_person = make_schema3_gallery(db, monkeypatch)
    with open_database(db) as database:
        before = {
            t: database.query(f"SELECT * FROM {t} ORDER BY 1")
            for t in ("face_meta", "person", "person_face", "person_edit")
        }
        knn_status = database.scalar("SELECT facevec_knn_status('face_meta')")
        assert database.scalar("SELECT MAX(id) FROM face_meta") < top_face
        schema.create_schema(database)  # what every writer runs first
        assert schema.get_collection(database).schema_version == schema.SCHEMA_VERSION
        for table in id_sequences.ID_TABLES:
            sql = database.scalar("SELECT sql FROM sqlite_master WHERE name = {p}", (table,))
            assert "AUTOINCREMENT" in sql, table
        for table, rows in before.items():  # every row kept, ids included
            got = database.query(f"SELECT * FROM {table} ORDER BY 1")
            assert [r[: len(rows[0])] for r in got] == rows, table
        # Its triggers are byte for byte what it wrote (else: "trigger ... was changed"),
        # and it holds what it held.
        assert database.scalar("SELECT facevec_knn_status('face_meta')") == knn_status
        assert json.loads(knn_status)["vectors"] == 41
    query = vectors(40, 7)[17]
    (hit,) = facevec.find(query, db, strategy="knn", k=1, similarity_search=True)
    assert hit.img_name[0] == "p17" and hit.distance[0] == 0
    # New rows take ids above everything the gallery ever referred to, and the
    # index's triggers still log them.
    facevec.add(db, ["new"], vectors(1, 9), identities=["N"])
    (new_face,) = face_ids(db, "new")
    assert new_face > top_face
    assert {p.name: p.id for p in people.list_people(db)}["N"] > top_person
    (hit,) = facevec.find(vectors(1, 9)[0], db, strategy="knn", k=1, similarity_search=True)
    assert hit.face_id[0] == new_face
    with open_database(db) as database:  # idempotent: nothing left to do
        schema.create_schema(database)
        assert schema.get_collection(database).schema_version == schema.SCHEMA_VERSION
