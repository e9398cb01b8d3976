"""Look at, name and correct people. Each change is one transaction, recorded
with the rows it replaced, so ``undo`` puts them back exactly; each also has an
inverse of its own (merge / split, move back, a name back, move after reject).

Who wins: a user's word. ``move`` and ``split`` make assignments 'confirmed',
which clustering never moves; ``reject`` records "not this person", which
clustering and folder imports respect. Two faces of one photo are two people:
merge and move refuse to put them together unless ``force`` (a mirror, a poster).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import FaceNotFoundError, PeopleConflictError
from ..parameters import is_stored_id
from ..storage import people as store
from ..storage.database import Database, DbArg
from .gallery import PersonRef, open_gallery, resolve_person
from .sheet import contact_sheet


@dataclass(frozen=True)
class Change:
    """What an edit did: the person_edit id (for undo) and a sentence."""

    edit_id: int | None
    summary: str
    person_id: int | None = None


@dataclass(frozen=True)
class PersonView:
    person: store.Person
    faces: list[store.PersonFace]
    sheet: str | None


def list_people(db: DbArg, named: bool | None = None, min_faces: int = 0) -> list[store.Person]:
    """Every person with their counts; named=True/False keeps only (un)named people."""
    with open_gallery(db) as (database, _):
        found = store.persons(database)
    return [
        p
        for p in found
        if p.faces >= min_faces and (named is None or (p.name is not None) == named)
    ]


def show(
    db: DbArg,
    person: PersonRef,
    sheet: str | os.PathLike[str] | bool | None = None,
    columns: int = 8,
    tile: int = 112,
) -> PersonView:
    """A person, their faces, and (with `sheet`, a PNG path, or True for
    person-<id>.png here) their contact sheet."""
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        found = store.person(database, person_id)
        assert found is not None
        faces = store.person_faces(database, person_id)
        written = None
        if sheet is True:
            sheet = f"person-{person_id}.png"
        if sheet is not None and sheet is not False:
            images = store.face_images(database, [f.face_id for f in faces])
            written = contact_sheet(found.label, faces, images, sheet, columns, tile)
    return PersonView(found, faces, written)


def name(db: DbArg, person: PersonRef, new_name: str) -> Change:
    """Give a person a name (or a new one); names are unique."""
    new_name = _check_name(new_name)
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        holder = store.person_id_named(database, new_name)
        if holder is not None and holder != person_id:
            raise PeopleConflictError(
                f"{new_name!r} is person {holder}; to make them one: "
                f"facevec people merge {person_id} {holder}"
            )
        old = store.person_names(database, [person_id])[person_id]
        summary = f"named person {person_id} {new_name!r}" + (
            f" (was {old!r})" if old is not None else ""
        )
        with database.transaction():
            before = store.snapshot(database, [person_id], [])
            store.rename_person(database, person_id, new_name)
            edit_id = store.record_edit(database, "name", summary, [person_id], [], before)
    return Change(edit_id, summary, person_id)


def merge(
    db: DbArg, sources: Sequence[PersonRef], target: PersonRef, force: bool = False
) -> Change:
    """Make `sources` one person with `target`: their faces, folders and rejections
    move to it, and they are deleted (the target itself among them is skipped). A
    face rejected from `target` is left without a person instead. The target keeps
    its name; an unnamed target takes the name of a single named source."""
    with open_gallery(db) as (database, _):
        target_id = resolve_person(database, target)
        # The target among the sources (merge Cat Eve --into Eve) is the target.
        source_ids = sorted({resolve_person(database, source) for source in sources} - {target_id})
        if not source_ids:
            raise PeopleConflictError(
                f"person {target_id} cannot be merged into itself: name another person"
            )
        moved = [f for s in source_ids for f in store.person_faces(database, s)]
        if not force:
            _refuse_shared_photos(database, moved, target_id)
        names = store.person_names(database, source_ids + [target_id])
        named_sources = [names[s] for s in source_ids if names[s] is not None]
        face_ids = [f.face_id for f in moved]
        summary = f"merged {_people(source_ids)} into person {target_id}"
        with database.transaction():
            before = store.snapshot(database, source_ids + [target_id], face_ids)
            refused = store.rejected_from(database, face_ids)
            store.unassign(database, [f for f in face_ids if target_id in refused.get(f, set())])
            for source_id in source_ids:
                store.move_person_faces(database, source_id, target_id)
                store.delete_person(database, source_id)
            if names[target_id] is None and len(named_sources) == 1:
                store.rename_person(database, target_id, named_sources[0])
            else:  # a user looked at the faces now theirs
                store.touch_person(database, target_id)
            edit_id = store.record_edit(
                database, "merge", summary, source_ids + [target_id], face_ids, before
            )
    return Change(edit_id, summary, target_id)


def split(
    db: DbArg, person: PersonRef, face_ids: Iterable[int], new_name: str | None = None
) -> Change:
    """Move some faces of a person to a new person (confirmed); returns its id."""
    face_ids = _face_list(face_ids)
    if new_name is not None:
        new_name = _check_name(new_name)
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        owned = {f.face_id for f in store.person_faces(database, person_id)}
        strangers = [f for f in face_ids if f not in owned]
        if strangers:
            raise FaceNotFoundError(
                f"face {strangers[0]} is not a face of person {person_id} "
                f"(facevec people show {person_id} lists them)"
            )
        if new_name is not None and store.person_id_named(database, new_name) is not None:
            raise PeopleConflictError(f"{new_name!r} is taken by another person")
        with database.transaction():
            before = store.snapshot(database, [person_id], face_ids)
            new_id = store.create_person(database, new_name)
            store.assign(database, [(f, new_id, "confirmed", None) for f in face_ids])
            summary = f"split {_faces(face_ids)} of person {person_id} into person {new_id}"
            edit_id = store.record_edit(
                database, "split", summary, [person_id, new_id], face_ids, before
            )
    return Change(edit_id, summary, new_id)


def move(db: DbArg, face_ids: Iterable[int], target: PersonRef, force: bool = False) -> Change:
    """These faces are `target` (confirmed), wherever they were; undoes a rejection."""
    face_ids = _face_list(face_ids)
    with open_gallery(db) as (database, _):
        target_id = resolve_person(database, target)
        _require_faces(database, face_ids)
        current = store.persons_of_faces(database, face_ids)
        if not force:
            located = [
                f for f in store.person_faces(database, target_id) if f.face_id not in set(face_ids)
            ]
            _refuse_shared_photos(
                database, _as_person_faces(database, face_ids), target_id, located
            )
        summary = f"moved {_faces(face_ids)} to person {target_id}"
        with database.transaction():
            touched = set(current.values()) | {target_id}
            before = store.snapshot(database, touched, face_ids)
            store.remove_rejections(database, [(f, target_id) for f in face_ids])
            store.assign(database, [(f, target_id, "confirmed", None) for f in face_ids])
            store.undismiss_faces(database, face_ids)  # a face set aside, given to someone
            edit_id = store.record_edit(database, "move", summary, touched, face_ids, before)
    return Change(edit_id, summary, target_id)


def reject(db: DbArg, face_ids: Iterable[int], person: PersonRef | None = None) -> Change:
    """These faces are not `person` (default: the person each is now): they lose that
    assignment, and clustering never gives it back."""
    face_ids = _face_list(face_ids)
    with open_gallery(db) as (database, _):
        _require_faces(database, face_ids)
        current = store.persons_of_faces(database, face_ids)
        if person is None:
            missing = [f for f in face_ids if f not in current]
            if missing:
                raise FaceNotFoundError(
                    f"face {missing[0]} has no person to reject; name the person: --person"
                )
            pairs = [(f, current[f]) for f in face_ids]
        else:
            person_id = resolve_person(database, person)
            pairs = [(f, person_id) for f in face_ids]
        touched = {p for _, p in pairs}
        summary = f"rejected {_faces(face_ids)} from {_people(sorted(touched))}"
        with database.transaction():
            before = store.snapshot(database, touched, face_ids)
            store.unassign(database, [f for f, p in pairs if current.get(f) == p])
            store.add_rejections(database, pairs)
            edit_id = store.record_edit(database, "reject", summary, touched, face_ids, before)
    return Change(edit_id, summary, None if person is None else pairs[0][1])


def confirm(db: DbArg, person: PersonRef, face_ids: Iterable[int] | None = None) -> Change:
    """A user vouches for a person's faces (all of them, or these): 'confirmed'."""
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        owned = {f.face_id: f for f in store.person_faces(database, person_id)}
        chosen = sorted(owned) if face_ids is None else _face_list(face_ids)
        strangers = [f for f in chosen if f not in owned]
        if strangers:
            raise FaceNotFoundError(f"face {strangers[0]} is not a face of person {person_id}")
        summary = f"confirmed {_faces(chosen)} of person {person_id}"
        with database.transaction():
            before = store.snapshot(database, [person_id], chosen)
            store.assign(database, [(f, person_id, "confirmed", None) for f in chosen])
            edit_id = store.record_edit(database, "confirm", summary, [person_id], chosen, before)
    return Change(edit_id, summary, person_id)


def undo(db: DbArg) -> Change:
    """Undo the latest change to people not undone yet (a cluster run or an edit).

    Refused when what that change wrote was changed since by something that is
    not an edit (an index run giving a folder's faces to a person, another
    program): putting the old rows back would misattribute the new ones."""
    with open_gallery(db) as (database, _):
        with database.transaction():
            last = store.last_edit(database)
            if last is None:
                raise PeopleConflictError(f"nothing to undo in {database.name}")
            changed = store.changed_since(database, last)
            if changed is not None:
                raise PeopleConflictError(
                    f"cannot undo {last.summary!r}: since then, {changed}; undoing it would "
                    "misattribute that (nothing was undone: correct people with move, name, "
                    "merge or split instead)"
                )
            store.restore(database, last)
    return Change(last.id, f"undid: {last.summary}")


def history(db: DbArg, limit: int = 20) -> list[tuple[int, str, str, str, str | None]]:
    """(id, action, summary, created_at, undone_at) of the latest changes."""
    with open_gallery(db) as (database, _):
        return store.edits(database, limit)


# Checks --------------------------------------------------------------------------


# How an unnamed person is shown ("person 12"): no one may be named so.
_LABEL = re.compile(r"person\s*#?\s*\d+", re.IGNORECASE)


def _check_name(value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise PeopleConflictError(f"a name must be non-empty text, not {value!r}")
    if value.strip().isdigit():
        raise PeopleConflictError(f"a name cannot be only digits ({value!r} reads as a person id)")
    if store.is_decision(value):
        raise PeopleConflictError(
            f"a name cannot be one of identify's answers ({', '.join(store.DECISIONS)}): "
            f"{value.strip()!r} would read as an answer, not a person"
        )
    if _LABEL.fullmatch(value.strip()):
        raise PeopleConflictError(
            f"a name cannot read like an unnamed person's label ({value.strip()!r})"
        )
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise PeopleConflictError(f"a name must be valid text (UTF-8), not {value!r}")
    if any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in value):
        raise PeopleConflictError(f"a name cannot hold control characters ({value!r})")
    return value.strip()


def _face_list(face_ids: Iterable[int]) -> list[int]:
    found = []
    for value in face_ids:
        try:
            found.append(int(value))
        except (TypeError, ValueError):
            raise FaceNotFoundError(
                f"a face is given by its id (a number), not {value!r}"
            ) from None
        if not is_stored_id(found[-1]):
            raise FaceNotFoundError(f"no face with id {found[-1]}")
    if not found:
        raise FaceNotFoundError("no face given")
    return sorted(set(found))


def _require_faces(database: Database, face_ids: Sequence[int]) -> None:
    missing = sorted(set(face_ids) - store.existing_faces(database, face_ids))
    if missing:
        raise FaceNotFoundError(f"no face with id {missing[0]} in {database.name}")


def _as_person_faces(database: Database, face_ids: Sequence[int]) -> list[store.PersonFace]:
    from ..storage import faces as face_rows

    located = face_rows.locations(database, face_ids)
    return [
        store.PersonFace(
            f,
            -1,
            located[f].img_name,
            located[f].face_index,
            "confirmed",
            None,
            None,
            None,
            None,
            None,
        )
        for f in face_ids
        if f in located
    ]


def _refuse_shared_photos(
    database: Database,
    incoming: Sequence[store.PersonFace],
    target_id: int,
    present: Sequence[store.PersonFace] | None = None,
) -> None:
    present = store.person_faces(database, target_id) if present is None else present
    by_photo = {f.img_name: f for f in present}
    seen: dict[str, store.PersonFace] = {}
    for face in incoming:
        other = by_photo.get(face.img_name) or seen.get(face.img_name)
        if other is not None and other.face_id != face.face_id:
            raise PeopleConflictError(
                f"faces {other.face_id} and {face.face_id} are both in {face.img_name}: two "
                "faces of one photo are two people (force=True / --force if it is a mirror "
                "or a picture of a picture)"
            )
        seen[face.img_name] = face


def _people(ids: Sequence[int]) -> str:
    return ("person " if len(ids) == 1 else "people ") + ", ".join(str(i) for i in ids)


def _faces(ids: Sequence[int]) -> str:
    shown = ", ".join(str(i) for i in ids[:10]) + (", ..." if len(ids) > 10 else "")
    return ("face " if len(ids) == 1 else f"{len(ids)} faces ") + shown
