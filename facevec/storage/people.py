"""People: who each face is. Every statement on the people tables is here.

Tables (storage/schema.py): ``person``, ``person_face`` (a face's person and the
source of that: folder / confirmed / suggested), ``person_rejection`` ("not this
person"), ``person_folder`` (gallery folders standing for a person),
``person_edit`` (every change, with the rows it replaced, for undo) and
``facevec_calibration``. Callers own the transaction, except ``upgrade``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .database import Database, in_clause_chunks
from .schema import SCHEMA_VERSION, get_collection, now, set_schema_version

# identify's answers (people/identify.py). No person may be named so, in any case,
# or an answer would read as a person: a folder so named stays no one's.
DECISIONS = ("matched", "ambiguous", "unknown")


def is_decision(name: str) -> bool:
    return name.strip().lower() in DECISIONS


@dataclass(frozen=True)
class FaceSet:
    """Every stored face, by id: what clustering and calibration work on."""

    ids: np.ndarray  # int64
    img_names: list[str]
    vectors: np.ndarray  # float32, one row per face
    # Faces left out: their vector is not `dimensions` float32 values (written outside
    # facevec), {face id: its size in bytes}.
    other_sizes: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Person:
    id: int
    name: str | None
    faces: int
    photos: int
    confirmed: int
    folder: int
    suggested: int
    # Kept out of the way on the people page; the face that stands for them (None:
    # their surest face, cover_face below).
    hidden: bool = False
    cover_face_id: int | None = None

    @property
    def label(self) -> str:
        """The name, or "person <id>" for someone not named yet."""
        return self.name if self.name is not None else f"person {self.id}"


@dataclass(frozen=True)
class PersonFace:
    face_id: int
    person_id: int
    img_name: str
    face_index: int
    source: str
    score: float | None
    x: int | None
    y: int | None
    w: int | None
    h: int | None


@dataclass(frozen=True)
class Edit:
    id: int
    action: str
    summary: str
    persons: list[int]
    faces: list[int]
    before_rows: dict[str, list[list[Any]]]
    created_at: str
    # What the edit left (edit_state), None for edits recorded before schema 4.
    after_rows: dict[str, list[list[Any]]] | None = None


def _ids(values: Iterable[Any]) -> list[int]:
    return sorted({int(value) for value in values})


def _in(db: Database, column: str, ids: Sequence[int]) -> str:
    return f"{column} IN ({db.dialect.params(len(ids))})"


# Faces ---------------------------------------------------------------------------


def load_faces(db: Database, batch_size: int = 20000, dimensions: int | None = None) -> FaceSet:
    """Every face's id, photo and vector, in id order (batched by id); with
    `dimensions`, a vector of another size is left out (``FaceSet.other_sizes``)."""
    ids: list[int] = []
    names: list[str] = []
    blobs: list[bytes] = []
    other_sizes: dict[int, int] = {}
    last = None
    while True:
        where, params = ("", []) if last is None else (" WHERE id > {p}", [last])
        limit, limit_params = db.dialect.limit(batch_size)
        rows = db.query(
            f"SELECT id, img_name, embedding FROM face_meta{where} ORDER BY id{limit}",
            params + limit_params,
        )
        if not rows:
            break
        for face_id, img_name, blob in rows:
            last = int(face_id)
            if dimensions is not None and len(blob) != 4 * dimensions:
                other_sizes[last] = len(blob)
                continue
            ids.append(last)
            names.append(img_name)
            blobs.append(bytes(blob))
    if not blobs:
        empty = np.empty((0, dimensions or 0), np.float32)
        return FaceSet(np.empty(0, np.int64), [], empty, other_sizes)
    vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), -1)
    return FaceSet(np.asarray(ids, dtype=np.int64), names, vectors.astype(np.float32), other_sizes)


def _face_set(rows: list[tuple], dimensions: int) -> FaceSet:
    kept = [row for row in rows if len(row[2]) == 4 * dimensions]
    other_sizes = {int(row[0]): len(row[2]) for row in rows if len(row[2]) != 4 * dimensions}
    vectors = np.frombuffer(b"".join(bytes(row[2]) for row in kept), dtype="<f4")
    return FaceSet(
        np.asarray([int(row[0]) for row in kept], dtype=np.int64),
        [row[1] for row in kept],
        vectors.reshape(len(kept), dimensions).astype(np.float32),
        other_sizes,
    )


def unassigned_faces_between(db: Database, after: int, upto: int, dimensions: int) -> FaceSet:
    """The faces with after < id <= upto that have no person and were not set
    aside by a user, in id order."""
    rows = db.query(
        "SELECT f.id, f.img_name, f.embedding FROM face_meta f"
        " LEFT JOIN person_face pf ON pf.face_id = f.id"
        " LEFT JOIN face_dismissed d ON d.face_id = f.id"
        " WHERE f.id > {p} AND f.id <= {p} AND pf.face_id IS NULL AND d.face_id IS NULL"
        " ORDER BY f.id",
        (after, upto),
    )
    return _face_set(rows, dimensions)


def faces_by_id(db: Database, face_ids: Sequence[int], dimensions: int) -> FaceSet:
    """These faces' photos and vectors, in id order (those still stored)."""
    rows: list[tuple] = []
    for chunk in in_clause_chunks(_ids(face_ids)):
        rows += db.query(
            f"SELECT id, img_name, embedding FROM face_meta WHERE {_in(db, 'id', chunk)}", chunk
        )
    return _face_set(sorted(rows, key=lambda row: int(row[0])), dimensions)


def last_face_id(db: Database) -> int:
    """The highest face id stored (0 for none); ids are never reused."""
    value = db.scalar("SELECT MAX(id) FROM face_meta")
    return 0 if value is None else int(value)


def people_checked(db: Database) -> int | None:
    """The highest face id the people step of a run has looked at; None: it never ran."""
    value = db.scalar(
        "SELECT people_checked_id FROM facevec_collection WHERE name = {p}", ("default",)
    )
    return None if value is None else int(value)


def set_people_checked(db: Database, face_id: int) -> None:
    db.execute(
        "UPDATE facevec_collection SET people_checked_id = {p} WHERE name = {p}",
        (int(face_id), "default"),
    )


def people_in_photos(db: Database, img_names: Sequence[str]) -> dict[str, set[int]]:
    """The people who have a face in each of these photos."""
    found: dict[str, set[int]] = {}
    for chunk in in_clause_chunks(sorted(set(img_names))):
        for img_name, person_id in db.query(
            "SELECT f.img_name, pf.person_id FROM face_meta f"
            f" JOIN person_face pf ON pf.face_id = f.id WHERE {_in(db, 'f.img_name', chunk)}",
            chunk,
        ):
            found.setdefault(img_name, set()).add(int(person_id))
    return found


def existing_faces(db: Database, face_ids: Sequence[int]) -> set[int]:
    found: set[int] = set()
    for chunk in in_clause_chunks(_ids(face_ids)):
        found.update(
            int(row[0])
            for row in db.query(f"SELECT id FROM face_meta WHERE {_in(db, 'id', chunk)}", chunk)
        )
    return found


def face_images(db: Database, face_ids: Sequence[int]) -> dict[int, bytes | None]:
    """The stored PNG crop of each face (None where a face has none)."""
    found: dict[int, bytes | None] = {}
    for chunk in in_clause_chunks(_ids(face_ids)):
        for face_id, image in db.query(
            f"SELECT id, face_image FROM face_meta WHERE {_in(db, 'id', chunk)}", chunk
        ):
            found[int(face_id)] = None if image is None else bytes(image)
    return found


def face_vectors(db: Database, face_ids: Sequence[int]) -> dict[int, np.ndarray]:
    found: dict[int, np.ndarray] = {}
    for chunk in in_clause_chunks(_ids(face_ids)):
        for face_id, blob in db.query(
            f"SELECT id, embedding FROM face_meta WHERE {_in(db, 'id', chunk)}", chunk
        ):
            found[int(face_id)] = np.frombuffer(bytes(blob), dtype="<f4")
    return found


# Assignments ---------------------------------------------------------------------


def assignments(db: Database) -> dict[int, tuple[int, str]]:
    """face id -> (person id, source) for every assigned face that is stored."""
    rows = db.query(
        "SELECT pf.face_id, pf.person_id, pf.source FROM person_face pf"
        " JOIN face_meta f ON f.id = pf.face_id"
    )
    return {int(face): (int(person), source) for face, person, source in rows}


def rejections(db: Database) -> list[tuple[int, int]]:
    return [
        (int(face), int(person))
        for face, person in db.query("SELECT face_id, person_id FROM person_rejection")
    ]


def persons_of_faces(db: Database, face_ids: Sequence[int]) -> dict[int, int]:
    found: dict[int, int] = {}
    for chunk in in_clause_chunks(_ids(face_ids)):
        for face, person in db.query(
            f"SELECT face_id, person_id FROM person_face WHERE {_in(db, 'face_id', chunk)}",
            chunk,
        ):
            found[int(face)] = int(person)
    return found


def person_vectors(
    db: Database, person_ids: Sequence[int], sources: Sequence[str] | None = None
) -> list[tuple[int, int, np.ndarray]]:
    """(person id, face id, vector) of the faces of these people (of these sources)."""
    where_source, source_params = "", []
    if sources is not None:
        where_source = f" AND pf.source IN ({db.dialect.params(len(sources))})"
        source_params = list(sources)
    found = []
    for chunk in in_clause_chunks(_ids(person_ids)):
        for person, face, blob in db.query(
            "SELECT pf.person_id, pf.face_id, f.embedding FROM person_face pf"
            " JOIN face_meta f ON f.id = pf.face_id"
            f" WHERE {_in(db, 'pf.person_id', chunk)}{where_source} ORDER BY pf.face_id",
            list(chunk) + source_params,
        ):
            found.append((int(person), int(face), np.frombuffer(bytes(blob), dtype="<f4")))
    return found


def labelled_vectors(db: Database) -> list[tuple[int, int, np.ndarray, str]]:
    """(person id, face id, vector, why) of every face a folder or a user vouches for:
    why is 'folder', 'confirmed', or 'named' (a suggestion of a named person, made
    before the name was given or the person last merged: a user looked at it)."""
    rows = db.query(
        "SELECT pf.person_id, pf.face_id, f.embedding, pf.source FROM person_face pf"
        " JOIN face_meta f ON f.id = pf.face_id JOIN person p ON p.id = pf.person_id"
        " WHERE pf.source IN ('folder', 'confirmed')"
        " OR (p.name IS NOT NULL AND pf.updated_at <= p.updated_at) ORDER BY pf.face_id"
    )
    return [
        (
            int(p),
            int(f),
            np.frombuffer(bytes(b), dtype="<f4"),
            source if source in ("folder", "confirmed") else "named",
        )
        for p, f, b, source in rows
    ]


def assign(db: Database, rows: Iterable[tuple[int, int, str, float | None]]) -> int:
    """Make each (face, person, source, score) the face's one assignment."""
    rows = list(rows)
    if not rows:
        return 0
    unassign(db, [row[0] for row in rows])
    stamp = now()
    db.executemany(
        "INSERT INTO person_face (face_id, person_id, source, score, updated_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})",
        [
            (int(face), int(person), source, None if score is None else float(score), stamp)
            for face, person, source, score in rows
        ],
    )
    return len(rows)


def unassign(db: Database, face_ids: Sequence[int]) -> None:
    for chunk in in_clause_chunks(_ids(face_ids)):
        db.execute(f"DELETE FROM person_face WHERE {_in(db, 'face_id', chunk)}", chunk)


def move_person_faces(db: Database, source_person: int, target_person: int) -> None:
    """Every face, rejection and folder of one person becomes another's."""
    stamp = now()
    db.execute(
        "UPDATE person_face SET person_id = {p}, updated_at = {p} WHERE person_id = {p}",
        (target_person, stamp, source_person),
    )
    # A face rejected from both keeps one rejection.
    db.execute(
        "DELETE FROM person_rejection WHERE person_id = {p} AND face_id IN"
        " (SELECT face_id FROM (SELECT face_id FROM person_rejection WHERE person_id = {p}) t)",
        (source_person, target_person),
    )
    db.execute(
        "UPDATE person_rejection SET person_id = {p} WHERE person_id = {p}",
        (target_person, source_person),
    )
    db.execute(
        "UPDATE person_folder SET person_id = {p} WHERE person_id = {p}",
        (target_person, source_person),
    )


def add_rejections(db: Database, pairs: Iterable[tuple[int, int]]) -> None:
    pairs = sorted(set(pairs))
    remove_rejections(db, pairs)
    stamp = now()
    db.executemany(
        "INSERT INTO person_rejection (face_id, person_id, created_at) VALUES ({p}, {p}, {p})",
        [(face, person, stamp) for face, person in pairs],
    )


def remove_rejections(db: Database, pairs: Iterable[tuple[int, int]]) -> None:
    for face, person in pairs:
        db.execute(
            "DELETE FROM person_rejection WHERE face_id = {p} AND person_id = {p}", (face, person)
        )


def rejected_from(db: Database, face_ids: Sequence[int]) -> dict[int, set[int]]:
    found: dict[int, set[int]] = {}
    for chunk in in_clause_chunks(_ids(face_ids)):
        for face, person in db.query(
            f"SELECT face_id, person_id FROM person_rejection WHERE {_in(db, 'face_id', chunk)}",
            chunk,
        ):
            found.setdefault(int(face), set()).add(int(person))
    return found


# People --------------------------------------------------------------------------

_PERSON_COLUMNS = (
    "v.person_id, v.name, v.faces, v.photos, v.confirmed, v.folder, v.suggested,"
    " p.hidden, p.cover_face_id"
)
_PERSON_FROM = "people v JOIN person p ON p.id = v.person_id"


def _person(row: tuple) -> Person:
    counts = (int(value) for value in row[2:7])
    cover = None if row[8] is None else int(row[8])
    return Person(int(row[0]), row[1], *counts, bool(row[7]), cover)


def persons(db: Database) -> list[Person]:
    return [
        _person(row)
        for row in db.query(f"SELECT {_PERSON_COLUMNS} FROM {_PERSON_FROM} ORDER BY v.person_id")
    ]


def person(db: Database, person_id: int) -> Person | None:
    # The people view's counts for one person, with the person chosen before the
    # aggregate (the view itself groups every person of the gallery first).
    counted = [
        f"COALESCE(SUM(CASE WHEN f.id IS NOT NULL AND pf.source = '{source}' THEN 1 ELSE 0 END), 0)"
        for source in ("confirmed", "folder", "suggested")
    ]
    rows = db.query(
        f"SELECT p.id, p.name, COUNT(f.id), COUNT(DISTINCT f.img_name), {', '.join(counted)},"
        " p.hidden, p.cover_face_id"
        " FROM person p LEFT JOIN person_face pf ON pf.person_id = p.id"
        " LEFT JOIN face_meta f ON f.id = pf.face_id"
        " WHERE p.id = {p} GROUP BY p.id, p.name, p.hidden, p.cover_face_id",
        (person_id,),
    )
    return _person(rows[0]) if rows else None


def set_hidden(db: Database, person_id: int, hidden: bool) -> None:
    db.execute(
        "UPDATE person SET hidden = {p}, updated_at = {p} WHERE id = {p}",
        (1 if hidden else 0, now(), person_id),
    )


def set_cover(db: Database, person_id: int, face_id: int | None) -> None:
    db.execute(
        "UPDATE person SET cover_face_id = {p}, updated_at = {p} WHERE id = {p}",
        (face_id, now(), person_id),
    )


def cover_faces(db: Database, person_ids: Sequence[int]) -> dict[int, int]:
    """The face that stands for each person: the chosen cover while it is still
    theirs, else their surest face (a user's or a folder's before a suggestion,
    then the lowest score, then the lowest id)."""
    found: dict[int, int] = {}
    for chunk in in_clause_chunks(_ids(person_ids)):
        rows = db.query(
            "SELECT pf.person_id, pf.face_id, pf.source, pf.score, p.cover_face_id"
            " FROM person_face pf JOIN person p ON p.id = pf.person_id"
            f" WHERE {_in(db, 'pf.person_id', chunk)}",
            chunk,
        )
        best: dict[int, tuple] = {}
        for person_id, face_id, source, score, cover in rows:
            rank = (
                0 if cover is not None and int(cover) == int(face_id) else 1,
                1 if source == "suggested" else 0,
                float("inf") if score is None else float(score),
                int(face_id),
            )
            if int(person_id) not in best or rank < best[int(person_id)]:
                best[int(person_id)] = rank
        found.update({person_id: rank[3] for person_id, rank in best.items()})
    return found


def person_labels_of_faces(
    db: Database, face_ids: Sequence[int]
) -> dict[int, tuple[int, str | None, str]]:
    """face id -> (person id, name, source) of each of these faces that has a person."""
    found: dict[int, tuple[int, str | None, str]] = {}
    for chunk in in_clause_chunks(_ids(face_ids)):
        for face_id, person_id, name, source in db.query(
            "SELECT pf.face_id, pf.person_id, p.name, pf.source FROM person_face pf"
            f" JOIN person p ON p.id = pf.person_id WHERE {_in(db, 'pf.face_id', chunk)}",
            chunk,
        ):
            found[int(face_id)] = (int(person_id), name, source)
    return found


# Faces without a person ------------------------------------------------------------

_UNASSIGNED = (
    " FROM face_meta f LEFT JOIN person_face pf ON pf.face_id = f.id"
    " LEFT JOIN face_dismissed d ON d.face_id = f.id"
    " WHERE pf.face_id IS NULL AND d.face_id IS NULL"
)


def unassigned_faces(
    db: Database, limit: int, offset: int = 0
) -> tuple[int, list[tuple[int, str, int, int | None, int | None, int | None, int | None]]]:
    """(how many, a page of them): faces with no person that no one set aside, as
    (face id, img_name, face_index, x, y, w, h), by photo."""
    total = int(db.scalar("SELECT COUNT(*)" + _UNASSIGNED) or 0)
    clause, params = db.dialect.limit(limit)
    rows = db.query(
        "SELECT f.id, f.img_name, f.face_index, f.facial_area_x, f.facial_area_y,"
        f" f.facial_area_w, f.facial_area_h{_UNASSIGNED} ORDER BY f.img_name, f.face_index"
        f"{clause} OFFSET {{p}}",
        params + [int(offset)],
    )
    return total, [(int(r[0]), r[1], int(r[2]), *r[3:]) for r in rows]


def people_counts(db: Database) -> dict[str, int]:
    """People, named, hidden; faces with a person, of them suggested; faces with
    none (set aside or not)."""
    counts = {
        "people": "SELECT COUNT(*) FROM person",
        "named": "SELECT COUNT(*) FROM person WHERE name IS NOT NULL",
        "hidden": "SELECT COUNT(*) FROM person WHERE hidden <> 0",
        "faces_with_a_person": "SELECT COUNT(*) FROM person_faces",
        "suggested": "SELECT COUNT(*) FROM person_faces WHERE source = 'suggested'",
        "unassigned": "SELECT COUNT(*)" + _UNASSIGNED,
        "set_aside": "SELECT COUNT(*) FROM face_dismissed d JOIN face_meta f ON f.id = d.face_id",
    }
    return {key: int(db.scalar(sql) or 0) for key, sql in counts.items()}


def dismissed_faces(db: Database) -> set[int]:
    return {int(row[0]) for row in db.query("SELECT face_id FROM face_dismissed")}


def dismiss_faces(db: Database, face_ids: Sequence[int]) -> None:
    """Set these faces aside: they lose their person, and clustering skips them."""
    unassign(db, face_ids)
    undismiss_faces(db, face_ids)
    stamp = now()
    db.executemany(
        "INSERT INTO face_dismissed (face_id, created_at) VALUES ({p}, {p})",
        [(face, stamp) for face in _ids(face_ids)],
    )


def undismiss_faces(db: Database, face_ids: Sequence[int]) -> None:
    for chunk in in_clause_chunks(_ids(face_ids)):
        db.execute(f"DELETE FROM face_dismissed WHERE {_in(db, 'face_id', chunk)}", chunk)


def person_id_named(db: Database, name: str) -> int | None:
    value = db.scalar("SELECT id FROM person WHERE name = {p}", (name,))
    return None if value is None else int(value)


def person_exists(db: Database, person_id: int) -> bool:
    return db.scalar("SELECT 1 FROM person WHERE id = {p}", (person_id,)) is not None


def person_names(db: Database, person_ids: Sequence[int]) -> dict[int, str | None]:
    found: dict[int, str | None] = {}
    for chunk in in_clause_chunks(_ids(person_ids)):
        for person_id, name in db.query(
            f"SELECT id, name FROM person WHERE {_in(db, 'id', chunk)}", chunk
        ):
            found[int(person_id)] = name
    return found


_PERSON_FACE_COLUMNS = (
    "face_id, person_id, img_name, face_index, source, score, facial_area_x,"
    " facial_area_y, facial_area_w, facial_area_h"
)


def _person_face(r: tuple) -> PersonFace:
    return PersonFace(int(r[0]), int(r[1]), r[2], int(r[3]), r[4], r[5], *r[6:])


def person_faces(db: Database, person_id: int) -> list[PersonFace]:
    rows = db.query(
        f"SELECT {_PERSON_FACE_COLUMNS} FROM person_faces WHERE person_id = {{p}} ORDER BY face_id",
        (person_id,),
    )
    return [_person_face(r) for r in rows]


def person_faces_page(
    db: Database, person_id: int, limit: int, offset: int = 0, source: str | None = None
) -> tuple[int, list[PersonFace]]:
    """(how many, a page of them): a person's faces by id, or only those that came
    to them from `source` (suggested: least sure first, the highest score)."""
    where, params = "person_id = {p}", [person_id]
    order = "face_id"
    if source is not None:
        where += " AND source = {p}"
        params.append(source)
        if source == "suggested":
            order = "COALESCE(score, 0) DESC, face_id"
    total = int(db.scalar(f"SELECT COUNT(*) FROM person_faces WHERE {where}", params) or 0)
    clause, limits = db.dialect.limit(limit)
    rows = db.query(
        f"SELECT {_PERSON_FACE_COLUMNS} FROM person_faces WHERE {where} ORDER BY {order}"
        f"{clause} OFFSET {{p}}",
        params + limits + [int(offset)],
    )
    return total, [_person_face(r) for r in rows]


def create_person(db: Database, name: str | None = None) -> int:
    stamp = now()
    cursor = db.execute(
        "INSERT INTO person (name, created_at, updated_at) VALUES ({p}, {p}, {p})"
        + db.dialect.returning_id,
        (name, stamp, stamp),
    )
    return db.dialect.inserted_id(cursor)


def create_persons(db: Database, count: int) -> list[int]:
    """`count` unnamed people, for a clustering run's new clusters."""
    return [create_person(db) for _ in range(count)]


def rename_person(db: Database, person_id: int, name: str | None) -> None:
    db.execute(
        "UPDATE person SET name = {p}, updated_at = {p} WHERE id = {p}", (name, now(), person_id)
    )


def touch_person(db: Database, person_id: int) -> None:
    """Mark a person as looked at by a user now (their faces so far count as labelled)."""
    db.execute("UPDATE person SET updated_at = {p} WHERE id = {p}", (now(), person_id))


def delete_person(db: Database, person_id: int) -> None:
    db.execute("DELETE FROM person_face WHERE person_id = {p}", (person_id,))
    db.execute("DELETE FROM person_rejection WHERE person_id = {p}", (person_id,))
    db.execute("DELETE FROM person_folder WHERE person_id = {p}", (person_id,))
    db.execute("DELETE FROM person WHERE id = {p}", (person_id,))


# Folders -------------------------------------------------------------------------


def has_people(db: Database) -> bool:
    """Whether the people tables and views exist (a gallery of schema version 2)."""
    return db.scalar(db.dialect.view_exists_sql, ("people",)) is not None


_ORPHANS = "SELECT face_id FROM {table} WHERE face_id NOT IN (SELECT id FROM face_meta)"
# Faces of a folder with no person but a suggestion, and not rejected from the
# folder's person (a suggestion gives way to a folder; a user's word does not).
_PENDING = (
    "SELECT f.id, f.identity, pf.person_id FROM face_meta f"
    " LEFT JOIN person_face pf ON pf.face_id = f.id"
    " WHERE f.identity IS NOT NULL AND (pf.face_id IS NULL OR pf.source = 'suggested')"
    f" AND LOWER(TRIM(f.identity)) NOT IN ({', '.join(repr(d) for d in DECISIONS)})"
    " AND NOT EXISTS (SELECT 1 FROM person_folder pd JOIN person_rejection r"
    " ON r.person_id = pd.person_id WHERE pd.folder = f.identity AND r.face_id = f.id)"
)
# ... of the folders that are people already.
_PENDING_KNOWN = _PENDING + " AND f.identity IN (SELECT folder FROM person_folder)"


def has_folder_people(db: Database) -> bool:
    """Whether some gallery folder stands for a person (person_folder has a row)."""
    limit, params = db.dialect.limit(1)
    return bool(db.query("SELECT folder FROM person_folder" + limit, params))


def _pending(db: Database, new_folders: bool | None) -> str:
    if new_folders is None:
        new_folders = has_folder_people(db)
    return _PENDING if new_folders else _PENDING_KNOWN


def folder_sync_needed(db: Database, new_folders: bool | None = None) -> bool:
    """Whether sync_folders has anything to do (asked without writing)."""
    limit, params = db.dialect.limit(1)
    for statement in (
        _ORPHANS.format(table="person_face"),
        _ORPHANS.format(table="person_rejection"),
        _pending(db, new_folders),
    ):
        if db.query(statement + limit, params):
            return True
    return False


def sync_folders(db: Database, new_folders: bool | None = None) -> int:
    """Give every face of a folder that stands for a person (person_folder) that
    person: folders are people only where asked.

    ``new_folders``: every gallery folder (face_meta.identity) becomes a person
    (index --people-from-folders); None (the default): only if the gallery has
    folder people already, so a gallery that has them keeps making them; False:
    only the folders that are people already. A new folder person is the person of
    the same name if there is one, else a new person named after the folder.

    A face with no person, or only a suggestion, is assigned, unless it was
    rejected from that person, so what users said stands. Faces whose rows are
    gone lose their assignments and rejections here too. Returns the faces assigned.
    """
    for table in ("person_face", "person_rejection"):
        orphans = [row[0] for row in db.query(_ORPHANS.format(table=table))]
        for chunk in in_clause_chunks(orphans):
            db.execute(f"DELETE FROM {table} WHERE {_in(db, 'face_id', chunk)}", chunk)
    found = db.query(_pending(db, new_folders) + " ORDER BY f.id")
    if not found:
        return 0
    pending = [(face, identity) for face, identity, _ in found]
    suggested_to = {int(person) for _, _, person in found if person is not None}
    folders = {
        folder: int(person_id)
        for folder, person_id in db.query("SELECT folder, person_id FROM person_folder")
    }
    stamp = now()
    for folder in sorted({identity for _, identity in pending} - set(folders)):
        person_id = person_id_named(db, folder)
        if person_id is None:
            person_id = _suggested_person_of(db, folder, found, set(folders.values()))
            if person_id is not None:  # a folder grouped already: that person, named
                rename_person(db, person_id, folder)
        if person_id is None:
            person_id = create_person(db, folder)
        db.execute(
            "INSERT INTO person_folder (folder, person_id) VALUES ({p}, {p})", (folder, person_id)
        )
        folders[folder] = person_id
    refused = rejected_from(db, [face for face, _ in pending])
    rows = [
        (int(face), folders[identity], "folder", None, stamp)
        for face, identity in pending
        if folders[identity] not in refused.get(int(face), set())
    ]
    unassign(db, [row[0] for row in rows])  # their suggestions
    db.executemany(
        "INSERT INTO person_face (face_id, person_id, source, score, updated_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})",
        rows,
    )
    # A suggested person whose every face went to a folder is gone (unless named).
    for person_id in sorted(suggested_to - set(folders.values())):
        if db.scalar(
            "SELECT 1 FROM person p WHERE p.id = {p} AND p.name IS NULL"
            " AND NOT EXISTS (SELECT 1 FROM person_face pf WHERE pf.person_id = p.id)",
            (person_id,),
        ):
            delete_person(db, person_id)
    return len(rows)


def _suggested_person_of(
    db: Database, folder: str, pending: list[tuple], taken: set[int]
) -> int | None:
    """The unnamed person whose faces are exactly the folder's, all suggested (the
    people step or clustering grouped the folder before it became a person), if any."""
    faces = [(face, person) for face, identity, person in pending if identity == folder]
    persons = {person for _, person in faces}
    if len(persons) != 1 or None in persons:
        return None
    (person_id,) = persons
    person_id = int(person_id)
    if person_id in taken or person_names(db, [person_id]).get(person_id) is not None:
        return None
    total = db.scalar("SELECT COUNT(*) FROM person_face WHERE person_id = {p}", (person_id,))
    return person_id if int(total or 0) == len(faces) else None


def upgrade(db: Database) -> None:
    """Bring a version-1 gallery to version 2: its folders become people.

    create_schema has made the tables; this fills them once, in one transaction.
    """
    collection = get_collection(db)
    if collection is None or collection.schema_version >= SCHEMA_VERSION:
        return
    with db.transaction():
        sync_folders(db)
        set_schema_version(db, SCHEMA_VERSION)


# Edits and undo ------------------------------------------------------------------


def snapshot(db: Database, person_ids: Iterable[int], face_ids: Iterable[int]) -> dict:
    """The rows an edit of these people and faces may change, as they are now."""
    persons_, faces_ = _ids(person_ids), _ids(face_ids)
    rows: dict[str, list[list[Any]]] = {
        "person": [],
        "person_folder": [],
        "person_face": [],
        "person_rejection": [],
        # schema 7: what the people page chose (hidden, cover) and faces set aside
        "person_view": [],
        "face_dismissed": [],
    }
    for chunk in in_clause_chunks(persons_):
        marks = _in(db, "id", chunk)
        rows["person"] += db.query(
            f"SELECT id, name, created_at, updated_at FROM person WHERE {marks}", chunk
        )
        rows["person_folder"] += db.query(
            f"SELECT folder, person_id FROM person_folder WHERE {_in(db, 'person_id', chunk)}",
            chunk,
        )
        rows["person_rejection"] += db.query(
            "SELECT face_id, person_id, created_at FROM person_rejection"
            f" WHERE {_in(db, 'person_id', chunk)}",
            chunk,
        )
        rows["person_view"] += db.query(
            f"SELECT id, hidden, cover_face_id FROM person WHERE {marks}", chunk
        )
    for chunk in in_clause_chunks(faces_):
        rows["face_dismissed"] += db.query(
            f"SELECT face_id, created_at FROM face_dismissed WHERE {_in(db, 'face_id', chunk)}",
            chunk,
        )
        rows["person_face"] += db.query(
            "SELECT face_id, person_id, source, score, updated_at FROM person_face"
            f" WHERE {_in(db, 'face_id', chunk)}",
            chunk,
        )
        rows["person_rejection"] += db.query(
            "SELECT face_id, person_id, created_at FROM person_rejection"
            f" WHERE {_in(db, 'face_id', chunk)}",
            chunk,
        )
    unique = {tuple(row[:2]): list(row) for row in rows["person_rejection"]}
    rows["person_rejection"] = [unique[key] for key in sorted(unique)]
    return {table: [list(row) for row in found] for table, found in rows.items()}


def record_edit(
    db: Database,
    action: str,
    summary: str,
    person_ids: Iterable[int],
    face_ids: Iterable[int],
    before_rows: dict,
) -> int:
    """Record an edit, at the end of its transaction: the rows it replaced (for
    undo) and the rows it left (so undo can tell whether they changed since)."""
    person_ids, face_ids = _ids(person_ids), _ids(face_ids)
    cursor = db.execute(
        "INSERT INTO person_edit (action, summary, persons, faces, before_rows, after_rows,"
        " created_at) VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p})" + db.dialect.returning_id,
        (
            action,
            summary,
            json.dumps(person_ids),
            json.dumps(face_ids),
            json.dumps(before_rows),
            json.dumps(edit_state(db, person_ids, face_ids)),
            now(),
        ),
    )
    return db.dialect.inserted_id(cursor)


def edit_state(db: Database, person_ids: Sequence[int], face_ids: Sequence[int]) -> dict:
    """What undo would replace: the snapshot's rows, and every assignment to these
    people (a face given to one of them since would be left to a deleted person)."""
    state = snapshot(db, person_ids, face_ids)
    by_face = {row[0]: row for row in state["person_face"]}
    for chunk in in_clause_chunks(_ids(person_ids)):
        for row in db.query(
            "SELECT face_id, person_id, source, score, updated_at FROM person_face"
            f" WHERE {_in(db, 'person_id', chunk)}",
            chunk,
        ):
            by_face[row[0]] = list(row)
    state["person_face"] = [list(by_face[face]) for face in sorted(by_face)]
    return json.loads(json.dumps(state))  # as it reads back from person_edit


def changed_since(db: Database, edit: Edit) -> str | None:
    """What changed since ``edit`` among the rows undo would replace (a person, a
    name, a folder, an assignment, a rejection), or None. Rows of faces deleted
    since are left out: undo skips them anyway."""
    if edit.after_rows is None:
        return None
    now_rows = edit_state(db, edit.persons, edit.faces)
    faced = ("person_face", "person_rejection", "face_dismissed")
    referred = [row[0] for table in faced for row in now_rows[table]]
    referred += [row[0] for table in faced for row in edit.after_rows.get(table, [])]
    stored = existing_faces(db, referred)
    for table in _EDITED_TABLES:
        if table not in edit.after_rows:  # recorded before schema 7
            continue
        then = _rows_of_stored(edit.after_rows.get(table, []), table, stored)
        current = _rows_of_stored(now_rows[table], table, stored)
        if then != current:
            return _difference(table, then, current)
    return None


_EDITED_TABLES = (
    "person",
    "person_folder",
    "person_face",
    "person_rejection",
    "person_view",
    "face_dismissed",
)


def _rows_of_stored(rows: list[list[Any]], table: str, stored: set[int]) -> list[list[Any]]:
    if table in ("person_face", "person_rejection", "face_dismissed"):
        rows = [row for row in rows if row[0] in stored]
    return sorted(rows, key=lambda row: [str(value) for value in row])


def _difference(table: str, then: list[list[Any]], current: list[list[Any]]) -> str:
    """One sentence naming the first row that differs."""
    before = {json.dumps(row) for row in then}
    after = {json.dumps(row) for row in current}
    row = json.loads(min((after - before) or (before - after)))
    gone = not (after - before)
    if table == "person":
        return f"person {row[0]} was {'deleted' if gone else 'renamed or changed'}"
    if table == "person_folder":
        return f"folder {row[0]!r} {'left' if gone else 'was given to'} person {row[1]}"
    if table == "person_view":
        return f"person {row[0]} was hidden, shown or given another cover face"
    if table == "face_dismissed":
        return f"face {row[0]} was {'taken back' if gone else 'set aside'}"
    if table == "person_face":
        what = "lost its assignment to" if gone else "was assigned to"
    else:
        what = "lost its rejection from" if gone else "was rejected from"
    return f"face {row[0]} {what} person {row[1]}"


def last_edit(db: Database) -> Edit | None:
    """The latest edit not undone yet."""
    limit, params = db.dialect.limit(1)
    rows = db.query(
        "SELECT id, action, summary, persons, faces, before_rows, created_at, after_rows"
        f" FROM person_edit WHERE undone_at IS NULL ORDER BY id DESC{limit}",
        params,
    )
    if not rows:
        return None
    edit_id, action, summary, persons_, faces_, before, created, after = rows[0]
    return Edit(
        int(edit_id),
        action,
        summary,
        json.loads(persons_),
        json.loads(faces_),
        json.loads(before),
        created,
        None if after is None else json.loads(after),
    )


def edits(db: Database, limit_rows: int = 20) -> list[tuple[int, str, str, str, str | None]]:
    """(id, action, summary, created_at, undone_at), latest first."""
    limit, params = db.dialect.limit(limit_rows)
    return [
        (int(row[0]), *row[1:])
        for row in db.query(
            "SELECT id, action, summary, created_at, undone_at FROM person_edit"
            f" ORDER BY id DESC{limit}",
            params,
        )
    ]


def restore(db: Database, edit: Edit) -> None:
    """Put back the rows an edit replaced, removing what it wrote."""
    for chunk in in_clause_chunks(edit.faces):
        db.execute(f"DELETE FROM person_face WHERE {_in(db, 'face_id', chunk)}", chunk)
        db.execute(f"DELETE FROM person_rejection WHERE {_in(db, 'face_id', chunk)}", chunk)
        if "face_dismissed" in edit.before_rows:
            db.execute(f"DELETE FROM face_dismissed WHERE {_in(db, 'face_id', chunk)}", chunk)
    for chunk in in_clause_chunks(edit.persons):
        db.execute(f"DELETE FROM person_rejection WHERE {_in(db, 'person_id', chunk)}", chunk)
        db.execute(f"DELETE FROM person_folder WHERE {_in(db, 'person_id', chunk)}", chunk)
        db.execute(f"DELETE FROM person WHERE {_in(db, 'id', chunk)}", chunk)
    before = edit.before_rows
    db.executemany(
        "INSERT INTO person (id, name, created_at, updated_at) VALUES ({p}, {p}, {p}, {p})",
        before["person"],
    )
    db.executemany(
        "INSERT INTO person_folder (folder, person_id) VALUES ({p}, {p})", before["person_folder"]
    )
    # Only faces still stored: a prune since the edit removed the others for good.
    stored = existing_faces(db, [row[0] for row in before["person_face"]])
    stored_faces = existing_faces(db, [row[0] for row in before.get("face_dismissed", [])])
    db.executemany(
        "INSERT INTO person_face (face_id, person_id, source, score, updated_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})",
        [row for row in before["person_face"] if row[0] in stored],
    )
    db.executemany(
        "INSERT INTO person_rejection (face_id, person_id, created_at) VALUES ({p}, {p}, {p})",
        before["person_rejection"],
    )
    db.executemany(
        "UPDATE person SET hidden = {p}, cover_face_id = {p} WHERE id = {p}",
        [(hidden, cover, person_id) for person_id, hidden, cover in before.get("person_view", [])],
    )
    db.executemany(
        "INSERT INTO face_dismissed (face_id, created_at) VALUES ({p}, {p})",
        [row for row in before.get("face_dismissed", []) if row[0] in stored_faces],
    )
    db.execute("UPDATE person_edit SET undone_at = {p} WHERE id = {p}", (now(), edit.id))


# Calibration ---------------------------------------------------------------------

CALIBRATION_COLUMNS = (
    "metric",
    "model_name",
    "people",
    "faces",
    "genuine_pairs",
    "impostor_pairs",
    "eer",
    "eer_threshold",
    "fmr_1e2_threshold",
    "fmr_1e2_fnmr",
    "fmr_1e3_threshold",
    "fmr_1e3_fnmr",
    "threshold",
    "threshold_rule",
    "created_at",
)


def save_calibration(db: Database, values: dict[str, Any]) -> None:
    db.execute("DELETE FROM facevec_calibration WHERE metric = {p}", (values["metric"],))
    db.execute(
        f"INSERT INTO facevec_calibration ({', '.join(CALIBRATION_COLUMNS)})"
        f" VALUES ({db.dialect.params(len(CALIBRATION_COLUMNS))})",
        [values[column] for column in CALIBRATION_COLUMNS],
    )


def calibration(db: Database, metric: str) -> dict[str, Any] | None:
    rows = db.query(
        f"SELECT {', '.join(CALIBRATION_COLUMNS)} FROM facevec_calibration WHERE metric = {{p}}",
        (metric,),
    )
    return dict(zip(CALIBRATION_COLUMNS, rows[0], strict=True)) if rows else None
