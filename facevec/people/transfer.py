"""The people of a gallery carried to another: by ``copy`` (database to database)
and by ``export`` / ``import`` (the Parquet folder's ``_people/people.parquet``,
people/parquet_people.py).

Carried: every person (name, hidden, cover face, times), which person each face is
and who said so (folder, confirmed, suggested, with its score), rejections, the
folders that stand for people, faces set aside, the gallery's calibration, and
which faces the people step of a run has not looked at yet (the mark
``facevec_collection.people_checked_id``, carried as those faces: ids change).
Faces are named by (img_name, face_index), since the target assigns its own face
and person ids. The edit history is not carried (its rows name the source's ids):
the target's history starts empty.

The rule: people are carried only into a gallery with no people work at all (no
person, assignment, rejection, face set aside, edit or calibration), checked
before anything is written, so nothing is merged and nothing is lost. Every row
passes the checks a user's own edits pass (a name as ``people name`` takes it).
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import GalleryFormatError, PeopleConflictError
from ..storage import faces
from ..storage import people as people_store
from ..storage import people_transfer as store
from ..storage.database import Database
from ..storage.people import CALIBRATION_COLUMNS, is_decision
from ..storage.schema import get_collection, now
from .edit import _check_name

#: The people rows, each table's tuples with faces as (img_name, face_index) and
#: persons by their number in the source (storage/people_transfer.read_people).
PeopleRows = dict[str, list[tuple]]

SOURCES = ("folder", "confirmed", "suggested")
_COUNTS = ("people", "faces", "genuine_pairs", "impostor_pairs")


def read_people(db: Database) -> PeopleRows:
    """The people of `db`, ready to carry (empty lists for a gallery without them)."""
    rows: PeopleRows = {table: [] for table in _TABLES}
    if store.people_work(db):
        rows.update(
            {table: [tuple(row) for row in found] for table, found in store.read_people(db).items()}
        )
    unchecked = store.unchecked_faces(db) if get_collection(db) is not None else None
    rows["people_checked"] = [] if unchecked is None else [(True,)]
    rows["unchecked_faces"] = unchecked or []
    return rows


_TABLES = (
    "person",
    "person_face",
    "person_rejection",
    "person_folder",
    "face_dismissed",
    "facevec_calibration",
    # The people step's mark: [(True,)] when it has run, and the faces it has not
    # looked at yet, as (img_name, face_index).
    "people_checked",
    "unchecked_faces",
)


def has_people(rows: PeopleRows) -> bool:
    """Whether there is anything to carry (people, faces set aside, calibration)."""
    return bool(rows["person"] or rows["face_dismissed"] or rows["facevec_calibration"])


def refuse_unless_free(db: Database, rows: PeopleRows, what: str) -> bool:
    """Whether `db` already holds exactly these checked people (a rerun of the same
    copy or import: they are written again); PeopleConflictError if it holds any
    other people work; False when it holds none. `what` names the people's gallery."""
    work = {words: count for words, count in store.people_work(db).items() if count}
    if not work:
        return False
    if "edits in the history" not in work:
        collection = get_collection(db)
        model = collection.model_name if collection is not None else ""
        try:
            stored = check_people(read_people(db), db.name, model)
        except GalleryFormatError:
            stored = None
        if stored is not None and _canonical(stored) == _canonical(rows):
            return True
    found = ", ".join(f"{count} {words}" for words, count in work.items())
    raise PeopleConflictError(
        f"{db.name} already holds people ({found}); the people of {what} are carried "
        "only into a gallery without any (or holding exactly them, a rerun), so that "
        "nothing is merged or lost: choose a new database, or leave the people behind "
        "(--no-people); nothing was written"
    )


def _canonical(rows: PeopleRows) -> list:
    """The checked rows without the person numbers, for comparing two galleries."""
    faces_of: dict[int, list] = {}
    for img, index, person, source, score, updated in rows["person_face"]:
        faces_of.setdefault(person, []).append((img, index, source, score, updated))
    rejected: dict[int, list] = {}
    for img, index, person, created in rows["person_rejection"]:
        rejected.setdefault(person, []).append((img, index, created))
    folders: dict[int, list] = {}
    for folder, person in rows["person_folder"]:
        folders.setdefault(person, []).append(folder)
    persons = sorted(
        repr((row[1:], *(sorted(found.get(row[0], [])) for found in (faces_of, rejected, folders))))
        for row in rows["person"]
    )
    return [persons, sorted(rows["face_dismissed"]), sorted(rows["facevec_calibration"])]


def check_people(rows: PeopleRows, where: str, model_name: str) -> PeopleRows:
    """The rows, checked and tidied (names stripped, missing times now); a
    GalleryFormatError naming `where` and the row for anything that would not be
    stored by facevec itself."""
    stamp = now()
    persons: list[tuple] = []
    names: set[str] = set()
    keys: set[int] = set()
    # A folder person is named after its folder (sync_folders): "2024" is a name there.
    folder_names = {(person, folder) for folder, person in rows["person_folder"]}
    for key, name, hidden, cover_img, cover_index, created, updated in rows["person"]:
        at = f"{where}: person {key!r}"
        key = _whole(key, at)
        if key in keys:
            raise GalleryFormatError(f"{at} appears twice")
        keys.add(key)
        if name is not None:
            name = _checked_name(name, (key, name) in folder_names, at)
            if name in names:
                raise GalleryFormatError(f"{at}: the name {name!r} is taken by another person")
            names.add(name)
        cover = _face(cover_img, cover_index, f"{at}'s cover face", optional=True)
        persons.append(
            (key, name, _flag(hidden, at), *(cover or (None, None)), *_times(created, updated, at))
        )

    def person_of(value: Any, at: str) -> int:
        person = _whole(value, at)
        if person not in keys:
            raise GalleryFormatError(f"{at} names person {person}, who is not in the people")
        return person

    assigned: list[tuple] = []
    seen: set[tuple[str, int]] = set()
    for img, index, person, source, score, updated in rows["person_face"]:
        at = f"{where}: the assignment of ({img!r}, face {index!r})"
        face = _face(img, index, at)
        if face in seen:
            raise GalleryFormatError(f"{at} appears twice: a face is one person")
        seen.add(face)
        if source not in SOURCES:
            raise GalleryFormatError(f"{at}: source must be one of {', '.join(SOURCES)}")
        assigned.append(
            (*face, person_of(person, at), source, _score(score, at), _text(updated, stamp, at))
        )
    rejected: list[tuple] = []
    pairs: set[tuple] = set()
    for img, index, person, created in rows["person_rejection"]:
        at = f"{where}: the rejection of ({img!r}, face {index!r})"
        row = (*_face(img, index, at), person_of(person, at))
        if row in pairs:
            raise GalleryFormatError(f"{at} from person {row[2]} appears twice")
        pairs.add(row)
        rejected.append((*row, _text(created, stamp, at)))
    folders: list[tuple] = []
    for folder, person in rows["person_folder"]:
        at = f"{where}: the folder {folder!r}"
        if not isinstance(folder, str) or not folder.strip():
            raise GalleryFormatError(f"{at}: a folder is non-empty text")
        if folder in {row[0] for row in folders}:
            raise GalleryFormatError(f"{at} appears twice")
        folders.append((folder, person_of(person, at)))
    dismissed: list[tuple] = []
    for img, index, created in rows["face_dismissed"]:
        at = f"{where}: the face set aside ({img!r}, face {index!r})"
        face = _face(img, index, at)
        if face in {row[:2] for row in dismissed}:
            raise GalleryFormatError(f"{at} appears twice")
        dismissed.append((*face, _text(created, stamp, at)))
    calibration = [_calibration(row, where, model_name) for row in rows["facevec_calibration"]]
    if len({row[0] for row in calibration}) != len(calibration):
        raise GalleryFormatError(f"{where}: a metric's calibration appears twice")
    unchecked = [
        _face(img, index, f"{where}: the face not yet looked at ({img!r}, face {index!r})")
        for img, index in rows.get("unchecked_faces", [])
    ]
    checked = [(True,)] if rows.get("people_checked") or unchecked else []
    return {
        "person": persons,
        "person_face": assigned,
        "person_rejection": rejected,
        "person_folder": folders,
        "face_dismissed": dismissed,
        "facevec_calibration": calibration,
        "people_checked": checked,
        "unchecked_faces": unchecked,
    }


def refuse_names_one_on_a_server(rows: PeopleRows, where: str) -> None:
    """PeopleConflictError, naming them, if two people's names or two folders of
    folder people differ only in trailing spaces: MariaDB and MySQL compare text
    with PAD SPACE, so they would be one key there. Refused on every database, so a
    copy or import does the same wherever it goes; case is compared, as everywhere
    ('Ann' and 'ann' are two people)."""
    for what, values in (
        ("names", [row[1] for row in rows["person"] if row[1] is not None]),
        ("folders", [row[0] for row in rows["person_folder"]]),
    ):
        first: dict[str, str] = {}
        for value in values:
            other = first.setdefault(value.rstrip(" "), value)
            if other != value:
                raise PeopleConflictError(
                    f"{where}: the {what} {other!r} and {value!r} differ only in trailing "
                    "spaces, which MariaDB and MySQL do not compare (one key there), so "
                    "they are carried nowhere: rename one, or leave the people behind "
                    "(--no-people); nothing was written"
                )


def store_people_checked(db: Database, rows: PeopleRows) -> None:
    """The people step's mark in `db` (in the caller's transaction, after the faces
    are written): the faces the source's step had not looked at stay to be looked
    at by `db`'s next run. Faces are stored in another order than the source's, so
    the mark goes below the first of them (a face it had left alone stored after
    that is looked at again; none is skipped). Nothing when the source's step never
    ran; a mark `db` holds already only moves down."""
    if not rows.get("people_checked"):
        return
    ids = faces.ids_of_faces(db, rows["unchecked_faces"])
    mark = min(ids.values()) - 1 if ids else people_store.last_face_id(db)
    held = people_store.people_checked(db)
    people_store.set_people_checked(db, mark if held is None else min(held, mark))


def store_people(
    db: Database, rows: PeopleRows, where: str, drop_missing: bool, rerun: bool = False
) -> dict[str, int]:
    """Write checked rows into `db` (in the caller's transaction; with `rerun`, in
    place of the same people it holds: refuse_unless_free), faces mapped to
    its ids by (img_name, face_index). A row naming a face `db` does not hold is an
    error naming it, or with `drop_missing` left out (copy: the faces it skipped).
    Returns {"people": n, "assigned": n, "left_out": n}."""
    wanted = {
        row[:2]
        for table in ("person_face", "person_rejection", "face_dismissed")
        for row in rows[table]
    }
    wanted |= {row[3:5] for row in rows["person"] if row[3] is not None}
    ids = faces.ids_of_faces(db, sorted(wanted))
    missing = sorted(wanted - set(ids))
    if missing and not drop_missing:
        img, index = missing[0]
        raise GalleryFormatError(
            f"{where} names the face ({img!r}, face {index}), which is neither imported nor "
            f"stored in {db.name}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
        )
    if rerun:
        store.clear_people(db)
    person_ids = {
        key: store.insert_person(db, name, hidden, created, updated)
        for key, name, hidden, _, _, created, updated in rows["person"]
    }
    left_out = 0

    def mapped(table: str) -> list[tuple]:
        nonlocal left_out
        kept = [row for row in rows[table] if row[:2] in ids]
        left_out += len(rows[table]) - len(kept)
        return [(ids[row[:2]], *row[2:]) for row in kept]

    assigned = [(face, person_ids[p], *rest) for face, p, *rest in mapped("person_face")]
    store.write_people(
        db,
        {
            "person_cover": [
                (person_ids[row[0]], ids[row[3:5]]) for row in rows["person"] if row[3:5] in ids
            ],
            "person_face": assigned,
            "person_rejection": [
                (face, person_ids[p], created) for face, p, created in mapped("person_rejection")
            ],
            "person_folder": [(folder, person_ids[p]) for folder, p in rows["person_folder"]],
            "face_dismissed": mapped("face_dismissed"),
            "facevec_calibration": rows["facevec_calibration"],
        },
    )
    return {"people": len(person_ids), "assigned": len(assigned), "left_out": left_out}


def people_to_carry(
    src: Database, dst: Database, model_name: str, enabled: bool = True
) -> tuple[PeopleRows, bool]:
    """copy's check, before anything is written: the checked people of `src` (none
    unless `enabled`), and whether `dst` holds them already (a rerun);
    PeopleConflictError if `dst` holds other people work (refuse_unless_free)."""
    if not enabled:
        return {table: [] for table in _TABLES}, False
    where = f"the people of {src.name}"
    rows = check_people(read_people(src), where, model_name)
    refuse_names_one_on_a_server(rows, where)
    rerun = has_people(rows) and refuse_unless_free(dst, rows, src.name)
    return rows, rerun


def carry_people(src: Database, dst: Database, rows: PeopleRows, rerun: bool) -> dict[str, int]:
    """copy's step: the people of `src` (people_to_carry) into `dst`, one
    transaction; faces the copy left out (unstorable vectors) lose their rows."""
    with dst.transaction():
        store_people_checked(dst, rows)
        if not has_people(rows):
            return {"people": 0, "assigned": 0, "left_out": 0}
        return store_people(dst, rows, f"the people of {src.name}", True, rerun)


# Checks of one value -------------------------------------------------------------


def _checked_name(name: Any, of_its_folder: bool, at: str) -> str:
    """A name as `people name` takes it; a folder person's name as sync_folders
    gives it (the folder's, which may be digits, but no answer of identify)."""
    if of_its_folder and isinstance(name, str) and name.strip() and not is_decision(name):
        return name
    try:
        return _check_name(name)
    except PeopleConflictError as err:
        raise GalleryFormatError(f"{at}: {err}") from None


def _whole(value: Any, at: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise GalleryFormatError(f"{at}: a person is a whole number, not {value!r}")
    return int(value)


def _flag(value: Any, at: str) -> bool:
    if value is None:
        return False
    if value in (0, 1):  # True and False too
        return bool(value)
    raise GalleryFormatError(f"{at}: hidden must be true or false, not {value!r}")


def _face(img: Any, index: Any, at: str, optional: bool = False) -> tuple[str, int] | None:
    if optional and img is None and index is None:
        return None
    if not isinstance(img, str) or not img:
        raise GalleryFormatError(f"{at}: img_name must be non-empty text, not {img!r}")
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise GalleryFormatError(f"{at}: face_index must be a whole number >= 0, not {index!r}")
    return img, int(index)


def _score(value: Any, at: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise GalleryFormatError(f"{at}: score must be a finite number, not {value!r}")
    return float(value)


def _text(value: Any, default: str, at: str) -> str:
    if value is None:
        return default
    if not isinstance(value, str) or not value:
        raise GalleryFormatError(f"{at}: a time must be text, not {value!r}")
    return value


def _times(created: Any, updated: Any, at: str) -> tuple[str, str]:
    stamp = now()
    return _text(created, stamp, at), _text(updated, stamp, at)


def _calibration(row: tuple, where: str, model_name: str) -> tuple:
    values = dict(zip(CALIBRATION_COLUMNS, row, strict=True))
    at = f"{where}: the calibration of {values['metric']!r}"
    if not isinstance(values["metric"], str) or not values["metric"]:
        raise GalleryFormatError(f"{at}: metric must be non-empty text")
    if values["model_name"] != model_name:
        raise GalleryFormatError(
            f"{at} is for {values['model_name']!r} vectors; the gallery holds {model_name} ones"
        )
    for name in _COUNTS:
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise GalleryFormatError(f"{at}: {name} must be a whole number >= 0, not {value!r}")
    for name in CALIBRATION_COLUMNS:
        if name in ("metric", "model_name", "threshold_rule", "created_at") or name in _COUNTS:
            continue
        values[name] = _score(values[name], f"{at}: {name}")
    if values["threshold_rule"] is not None and not isinstance(values["threshold_rule"], str):
        raise GalleryFormatError(f"{at}: threshold_rule must be text")
    values["created_at"] = _text(values["created_at"], now(), at)
    return tuple(values[name] for name in CALIBRATION_COLUMNS)
