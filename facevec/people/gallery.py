"""Opening a gallery for the people features, and naming people in arguments."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ..errors import DatabaseNotFoundError, PersonNotFoundError
from ..parameters import is_stored_id
from ..storage import people as store
from ..storage import schema
from ..storage.database import Database, DbArg, open_database

PersonRef = int | str


@contextlib.contextmanager
def open_gallery(db: DbArg) -> Iterator[tuple[Database, schema.Collection]]:
    """The database, its people tables current: a version-1 gallery is upgraded and
    faces of gallery folders that have no person yet get their folder's."""
    with open_database(db, create=False) as database:
        collection = schema.get_collection(database)
        if collection is None:
            raise DatabaseNotFoundError(
                f"{database.name} holds no faces yet; index a folder into it first"
            )
        if collection.schema_version < schema.SCHEMA_VERSION or not store.has_people(database):
            schema.create_schema(database)
            store.upgrade(database)
        if store.folder_sync_needed(database):  # reading needs no write lock
            with database.transaction():
                store.sync_folders(database)
        yield database, collection


def resolve_person(db: Database, ref: PersonRef) -> int:
    """A person's id from a name, or from an id (a number, or digits no one is named)."""
    if isinstance(ref, str):
        found = store.person_id_named(db, ref)
        if found is not None:
            return found
        if not ref.strip().isdigit():
            raise PersonNotFoundError(f"no person named {ref!r} (facevec people list shows them)")
        ref = int(ref)
    if isinstance(ref, bool) or not isinstance(ref, int):
        raise PersonNotFoundError(f"a person is a name or an id, not {ref!r}")
    if not is_stored_id(ref) or not store.person_exists(db, ref):
        raise PersonNotFoundError(f"no person with id {ref} (facevec people list shows them)")
    return ref
