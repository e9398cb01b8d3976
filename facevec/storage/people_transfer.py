"""The people of a gallery read and written whole, faces named by (img_name,
face_index) rather than by id: what ``copy``, ``export`` and ``import`` carry
(people/transfer.py). Callers own the transaction.
"""

from __future__ import annotations

from typing import Any

from .database import Database
from .people import CALIBRATION_COLUMNS, has_people, people_checked

# What a gallery's people work is stored in, by the words a refusal uses for it.
PEOPLE_WORK = (
    ("person", "people"),
    ("person_face", "face assignments"),
    ("person_rejection", "rejections"),
    ("face_dismissed", "faces set aside"),
    ("person_edit", "edits in the history"),
    ("facevec_calibration", "calibrations"),
)


def people_work(db: Database) -> dict[str, int]:
    """How many rows each people table holds ({} for a gallery without them)."""
    if not has_people(db):
        return {}
    return {
        words: int(db.scalar(f"SELECT COUNT(*) FROM {table}") or 0) for table, words in PEOPLE_WORK
    }


def read_people(db: Database) -> dict[str, list[tuple]]:
    """Every people row, faces as (img_name, face_index); rows naming a face that
    is no longer stored are left out (the people step removes them anyway)."""
    return {
        "person": db.query(
            "SELECT p.id, p.name, p.hidden, c.img_name, c.face_index, p.created_at,"
            " p.updated_at FROM person p LEFT JOIN face_meta c ON c.id = p.cover_face_id"
            " ORDER BY p.id"
        ),
        "person_face": db.query(
            "SELECT f.img_name, f.face_index, pf.person_id, pf.source, pf.score, pf.updated_at"
            " FROM person_face pf JOIN face_meta f ON f.id = pf.face_id ORDER BY f.id"
        ),
        "person_rejection": db.query(
            "SELECT f.img_name, f.face_index, r.person_id, r.created_at"
            " FROM person_rejection r JOIN face_meta f ON f.id = r.face_id"
            " ORDER BY f.id, r.person_id"
        ),
        "person_folder": db.query("SELECT folder, person_id FROM person_folder ORDER BY folder"),
        "face_dismissed": db.query(
            "SELECT f.img_name, f.face_index, d.created_at"
            " FROM face_dismissed d JOIN face_meta f ON f.id = d.face_id ORDER BY f.id"
        ),
        "facevec_calibration": db.query(
            f"SELECT {', '.join(CALIBRATION_COLUMNS)} FROM facevec_calibration ORDER BY metric"
        ),
    }


def unchecked_faces(db: Database) -> list[tuple[str, int]] | None:
    """The faces the people step has not looked at yet (id above the gallery's
    mark, facevec_collection.people_checked_id) and that have no person, as
    (img_name, face_index) in id order; None when the step never ran (no mark)."""
    if db.scalar(db.dialect.column_exists_sql, ("facevec_collection", "people_checked_id")) is None:
        return None  # a gallery from before the step
    mark = people_checked(db)
    if mark is None:
        return None
    unassigned = (
        " AND NOT EXISTS (SELECT 1 FROM person_face pf WHERE pf.face_id = f.id)"
        if has_people(db)
        else ""
    )
    return [
        (img_name, int(index))
        for img_name, index in db.query(
            "SELECT f.img_name, f.face_index FROM face_meta f WHERE f.id > {p}"
            + unassigned
            + " ORDER BY f.id",
            (mark,),
        )
    ]


def insert_person(
    db: Database,
    name: str | None,
    hidden: bool,
    created_at: str,
    updated_at: str,
) -> int:
    cursor = db.execute(
        "INSERT INTO person (name, hidden, created_at, updated_at) VALUES ({p}, {p}, {p}, {p})"
        + db.dialect.returning_id,
        (name, 1 if hidden else 0, created_at, updated_at),
    )
    return db.dialect.inserted_id(cursor)


def write_people(db: Database, rows: dict[str, list[Any]]) -> None:
    """Store checked rows whose person and face ids are this gallery's: person_cover
    (person id, face id), person_face, person_rejection, person_folder,
    face_dismissed and facevec_calibration, in the columns of read_people."""
    db.executemany(
        "UPDATE person SET cover_face_id = {p} WHERE id = {p}",
        [(face, person) for person, face in rows["person_cover"]],
    )
    db.executemany(
        "INSERT INTO person_face (face_id, person_id, source, score, updated_at)"
        " VALUES ({p}, {p}, {p}, {p}, {p})",
        rows["person_face"],
    )
    db.executemany(
        "INSERT INTO person_rejection (face_id, person_id, created_at) VALUES ({p}, {p}, {p})",
        rows["person_rejection"],
    )
    db.executemany(
        "INSERT INTO person_folder (folder, person_id) VALUES ({p}, {p})", rows["person_folder"]
    )
    db.executemany(
        "INSERT INTO face_dismissed (face_id, created_at) VALUES ({p}, {p})",
        rows["face_dismissed"],
    )
    db.executemany(
        f"INSERT INTO facevec_calibration ({', '.join(CALIBRATION_COLUMNS)})"
        f" VALUES ({db.dialect.params(len(CALIBRATION_COLUMNS))})",
        rows["facevec_calibration"],
    )


def clear_people(db: Database) -> None:
    """Remove every person, assignment, rejection, folder person, face set aside and
    calibration (a rerun of a carry writes them again)."""
    for table in (
        "person_face",
        "person_rejection",
        "person_folder",
        "face_dismissed",
        "facevec_calibration",
        "person",
    ):
        db.execute(f"DELETE FROM {table}")
