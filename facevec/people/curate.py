"""What the people page adds to the edits of ``edit``: people in the order a
person looks for them, a cover face, hiding, the faces nobody is yet (name them,
give them to someone, or set them aside), and the suggestions to confirm.

Every change is one transaction recorded in ``person_edit``, so ``undo`` takes it
back like any other edit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..errors import FaceNotFoundError, InvalidParameterError, PeopleConflictError
from ..storage import people as store
from ..storage.database import Database, DbArg
from .edit import Change, PersonView, _check_name, _face_list, _faces, _require_faces
from .gallery import PersonRef, open_gallery, resolve_person

MAX_PAGE = 500


@dataclass(frozen=True)
class Who:
    """The person a face belongs to, and who said so (folder / confirmed / suggested)."""

    person_id: int
    name: str | None
    source: str

    @property
    def label(self) -> str:
        return self.name if self.name is not None else f"person {self.person_id}"


@dataclass(frozen=True)
class LooseFace:
    """A face with no person that no one set aside."""

    face_id: int
    img_name: str
    face_index: int
    x: int | None
    y: int | None
    w: int | None
    h: int | None


def _in_order(everyone: Iterable[store.Person]) -> tuple[list[store.Person], list[store.Person]]:
    """(named people by name, unnamed people by faces, most first)."""
    people = list(everyone)
    named = sorted((p for p in people if p.name is not None), key=lambda p: p.name.casefold())
    unnamed = sorted((p for p in people if p.name is None), key=lambda p: (-p.faces, p.id))
    return named, unnamed


def people_in_order(
    db: DbArg, hidden: bool = False
) -> tuple[list[store.Person], list[store.Person], dict[int, int]]:
    """(named people by name, unnamed people by faces, {person id: cover face id});
    hidden people only with ``hidden=True`` (then only they)."""
    with open_gallery(db) as (database, _):
        named, unnamed = _in_order(p for p in store.persons(database) if p.hidden == hidden)
        covers = store.cover_faces(database, [p.id for p in named + unnamed])
    return named, unnamed, covers


@dataclass(frozen=True)
class PeoplePage:
    """A page of people in people_in_order's order, and how many there are."""

    total: int  # people that pass the filters, on every page
    named: int  # of them, named
    people: list[store.Person]  # this page: named by name, then unnamed by faces
    covers: dict[int, int]  # {person id: cover face id} of this page's people


def people_page(
    db: DbArg,
    hidden: bool = False,
    limit: int | None = None,
    offset: int = 0,
    named: bool | None = None,
    min_faces: int = 0,
    name: str | None = None,
    with_covers: bool = True,
    query: str | None = None,
) -> PeoplePage:
    """People in people_in_order's order, from `offset`, at most `limit` (None: all);
    only the named (named=True) or the unnamed (False), those with at least
    `min_faces` faces, the one called `name`, those whose label ("Ann", "person 7")
    contains `query` (case-insensitive; labels that start with it first). Cover
    faces are read for this page only (none without `with_covers`)."""
    if limit is not None and limit < 0 or offset < 0:
        raise InvalidParameterError(f"limit and offset must be >= 0, not {limit}, {offset}")
    wanted = None if query is None else query.strip().casefold()
    with open_gallery(db) as (database, _):
        chosen = [
            p
            for p in store.persons(database)
            if p.hidden == hidden
            and p.faces >= min_faces
            and (named is None or (p.name is not None) == named)
            and (name is None or p.name == name)
            and (not wanted or wanted in p.label.casefold())
        ]
        in_names, in_faces = _in_order(chosen)
        if wanted:  # a name that starts with what was typed before one that contains it
            in_names.sort(key=lambda p: not p.label.casefold().startswith(wanted))
            in_faces.sort(key=lambda p: not p.label.casefold().startswith(wanted))
        ordered = in_names + in_faces
        page = ordered[offset:] if limit is None else ordered[offset : offset + limit]
        covers = store.cover_faces(database, [p.id for p in page]) if with_covers else {}
    return PeoplePage(len(ordered), len(in_names), page, covers)


@dataclass(frozen=True)
class PersonFacesPage:
    """A page of a person's faces (by id), how many they have, and their cover."""

    person: store.Person
    total: int
    faces: list[store.PersonFace]
    cover: int | None


def person_faces_page(
    db: DbArg, person: PersonRef, limit: int = 100, offset: int = 0, source: str | None = None
) -> PersonFacesPage:
    """The person and `limit` of their faces from `offset` (at most MAX_PAGE), in
    face id order; only those that came from `source` (folder, confirmed, suggested:
    then least sure first) if given. Reads one page, whatever the person's size."""
    if not 1 <= int(limit) <= MAX_PAGE:
        raise InvalidParameterError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    if int(offset) < 0:
        raise InvalidParameterError(f"offset must be >= 0, not {offset}")
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        found = store.person(database, person_id)
        assert found is not None
        total, faces = store.person_faces_page(database, person_id, int(limit), int(offset), source)
        cover = store.cover_faces(database, [person_id]).get(person_id)
    return PersonFacesPage(found, total, faces, cover)


def cover_of(view: PersonView) -> int | None:
    """The face that stands for a shown person: the chosen one while still theirs,
    else the surest (a user's or a folder's first, then the lowest score)."""
    ranked = sorted(
        view.faces,
        key=lambda f: (
            f.face_id != view.person.cover_face_id,
            f.source == "suggested",
            f.score if f.score is not None else float("inf"),
            f.face_id,
        ),
    )
    return ranked[0].face_id if ranked else None


def who_are(db: DbArg, face_ids: Iterable[int]) -> dict[int, Who]:
    """The person of each of these faces that has one."""
    ids = sorted({int(face) for face in face_ids})
    if not ids:
        return {}
    with open_gallery(db) as (database, _):
        found = store.person_labels_of_faces(database, ids)
    return {face: Who(*value) for face, value in found.items()}


def suggestions(db: DbArg, person: PersonRef) -> list[store.PersonFace]:
    """The faces clustering or recognition gave a person that no one confirmed,
    least sure first (highest score), for a user to confirm or reject."""
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        faces = store.person_faces(database, person_id)
    suggested = [f for f in faces if f.source == "suggested"]
    return sorted(suggested, key=lambda f: (-(f.score if f.score is not None else 0.0), f.face_id))


def unassigned(db: DbArg, limit: int = 100, offset: int = 0) -> tuple[int, list[LooseFace]]:
    """(how many, a page of them): the faces that belong to nobody, by photo."""
    if not 1 <= int(limit) <= MAX_PAGE:
        raise PeopleConflictError(f"limit must be between 1 and {MAX_PAGE}, not {limit}")
    if int(offset) < 0:
        raise PeopleConflictError(f"offset must be >= 0, not {offset}")
    with open_gallery(db) as (database, _):
        total, rows = store.unassigned_faces(database, int(limit), int(offset))
    return total, [LooseFace(*row) for row in rows]


def counts(db: DbArg) -> dict[str, int]:
    """How far the gallery's people are: people, named, hidden, faces with a person
    (suggested among them), faces with none, faces set aside."""
    with open_gallery(db) as (database, _):
        return store.people_counts(database)


def hide(db: DbArg, person: PersonRef, hidden: bool = True) -> Change:
    """Keep a person out of the way (or bring them back): their faces stay theirs."""
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        summary = f"{'hid' if hidden else 'showed'} person {person_id}"
        with database.transaction():
            before = store.snapshot(database, [person_id], [])
            store.set_hidden(database, person_id, hidden)
            action = "hide" if hidden else "unhide"
            edit_id = store.record_edit(database, action, summary, [person_id], [], before)
    return Change(edit_id, summary, person_id)


def choose_cover(db: DbArg, person: PersonRef, face_id: int) -> Change:
    """The face that stands for a person on the people page (one of theirs)."""
    (face,) = _face_list([face_id])
    with open_gallery(db) as (database, _):
        person_id = resolve_person(database, person)
        if store.persons_of_faces(database, [face]).get(face) != person_id:
            raise FaceNotFoundError(f"face {face} is not a face of person {person_id}")
        summary = f"chose face {face} as the cover of person {person_id}"
        with database.transaction():
            before = store.snapshot(database, [person_id], [])
            store.set_cover(database, person_id, face)
            edit_id = store.record_edit(database, "cover", summary, [person_id], [], before)
    return Change(edit_id, summary, person_id)


def new_person(db: DbArg, face_ids: Iterable[int], new_name: str | None = None) -> Change:
    """A new person (named, or not yet) of these faces, confirmed, wherever they were."""
    faces = _face_list(face_ids)
    if new_name is not None:
        new_name = _check_name(new_name)
    with open_gallery(db) as (database, _):
        _require_faces(database, faces)
        if new_name is not None:
            holder = store.person_id_named(database, new_name)
            if holder is not None:
                raise PeopleConflictError(
                    f"{new_name!r} is person {holder}: give the faces to them instead"
                )
        _refuse_one_photo_twice(database, faces)
        current = store.persons_of_faces(database, faces)
        with database.transaction():
            before = store.snapshot(database, set(current.values()), faces)
            person_id = store.create_person(database, new_name)
            store.assign(database, [(f, person_id, "confirmed", None) for f in faces])
            store.undismiss_faces(database, faces)
            summary = f"made {_faces(faces)} a new person {person_id}" + (
                f" named {new_name!r}" if new_name is not None else ""
            )
            touched = set(current.values()) | {person_id}
            edit_id = store.record_edit(database, "new", summary, touched, faces, before)
    return Change(edit_id, summary, person_id)


def dismiss(db: DbArg, face_ids: Iterable[int]) -> Change:
    """Set faces aside (a passer-by, a poster): they leave the unassigned faces and
    their person, and clustering leaves them alone. ``move`` gives one back."""
    faces = _face_list(face_ids)
    with open_gallery(db) as (database, _):
        _require_faces(database, faces)
        current = store.persons_of_faces(database, faces)
        summary = f"set aside {_faces(faces)}"
        with database.transaction():
            touched = set(current.values())
            before = store.snapshot(database, touched, faces)
            store.dismiss_faces(database, faces)
            edit_id = store.record_edit(database, "dismiss", summary, touched, faces, before)
    return Change(edit_id, summary, None)


def _refuse_one_photo_twice(database: Database, faces: Sequence[int]) -> None:
    from ..storage import faces as face_rows

    seen: dict[str, int] = {}
    for face_id, where in sorted(face_rows.locations(database, faces).items()):
        if where.img_name in seen:
            raise PeopleConflictError(
                f"faces {seen[where.img_name]} and {face_id} are both in {where.img_name}: "
                "two faces of one photo are two people"
            )
        seen[where.img_name] = face_id
