"""Ids that are never reused: the schema-4 upgrade.

``people undo`` restores rows by id, and search results, crops and edits name faces
and people by id, so an id must never come back for another row. SQLite gives a
plain ``INTEGER PRIMARY KEY`` the next id after the largest one *present*: delete
the newest face (a photo replaced) or person (a merge) and the next insert takes
its id. ``AUTOINCREMENT`` keeps a high-water mark in ``sqlite_sequence`` instead.
New galleries get it from the dialect's ``id`` type; :func:`upgrade` rebuilds the
tables of an older SQLite gallery with it, in one transaction, and starts each
sequence above every id the gallery still refers to (undo snapshots, assignments,
a reindex under way), so even an id deleted before the upgrade stays retired.

PostgreSQL identities and MariaDB's AUTO_INCREMENT (persistent since 10.2.4) never
hand an id out twice: there the upgrade only records the version.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from .database import Database
from .dialects import SQLITE

VERSION = 4

#: Tables whose ids are handed out by the database and referred to elsewhere.
ID_TABLES = ("face_meta", "person", "person_edit")

_KEY = re.compile(r"\bid\s+INTEGER\s+PRIMARY\s+KEY\b(?!\s+AUTOINCREMENT)", re.IGNORECASE)
_NAME = re.compile(r"^CREATE TABLE\s+(\"[^\"]+\"|\w+)", re.IGNORECASE)


def upgrade(db: Database) -> None:
    """Bring a gallery to ids that are never reused (schema version 4); idempotent.

    Decided by what the tables are, not by the version number, so a gallery
    upgraded from any version (and in any order of the steps) ends the same.
    """
    if db.dialect is not SQLITE:
        if _version(db) == VERSION - 1:
            with db.transaction():
                _record_version(db)
        return
    if not _tables_to_rebuild(db) and _version(db) != VERSION - 1:
        return
    with db.transaction():  # BEGIN IMMEDIATE: a racing upgrade waits, then finds it done
        for table in _tables_to_rebuild(db):
            _rebuild_with_autoincrement(db, table)
        _retire_referred_ids(db)
        _record_version(db)


def _version(db: Database) -> int | None:
    value = db.scalar("SELECT schema_version FROM facevec_collection WHERE name = 'default'")
    return None if value is None else int(value)


def _record_version(db: Database) -> None:
    db.execute(
        "UPDATE facevec_collection SET schema_version = {p} WHERE schema_version = {p}",
        (VERSION, VERSION - 1),
    )


def _tables_to_rebuild(db: Database) -> list[str]:
    rows = db.query(
        "SELECT name, sql FROM sqlite_master WHERE type = 'table' AND name IN"
        f" ({db.dialect.params(len(ID_TABLES))})",
        ID_TABLES,
    )
    return [name for name, sql in rows if _KEY.search(sql or "")]


def _rebuild_with_autoincrement(db: Database, table: str) -> None:
    """SQLite's recipe for a change ALTER TABLE cannot make: a new table, the rows
    copied with their ids, the old one dropped, the new one renamed, then every
    trigger, index and view put back exactly as it was written. Views and triggers
    are dropped first, since renaming re-checks every one of them; the knn index's
    triggers come back byte for byte, so it keeps logging (its tables name rows by
    id, and the ids do not change)."""
    sql = db.scalar("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = {p}", (table,))
    rebuilt = f"facevec_rebuild_{table}"
    saved = db.query(
        "SELECT type, name, sql FROM sqlite_master WHERE sql IS NOT NULL AND ("
        "type IN ('view', 'trigger') OR (type = 'index' AND tbl_name = {p})) ORDER BY rowid",
        (table,),
    )
    for kind, name, _ in saved:
        if kind in ("view", "trigger"):
            db.execute(f'DROP {kind.upper()} "{_quoted(name)}"')
    db.execute(_NAME.sub(f'CREATE TABLE "{rebuilt}"', _KEY.sub(_autoincrement, sql), count=1))
    db.execute(f'INSERT INTO "{rebuilt}" SELECT * FROM "{table}"')
    db.execute(f'DROP TABLE "{table}"')
    db.execute(f'ALTER TABLE "{rebuilt}" RENAME TO "{table}"')
    for kind, _, statement in saved:
        if kind == "index":
            db.execute(statement)
    for kind, _, statement in saved:
        if kind in ("trigger", "view"):
            db.execute(statement)


def _autoincrement(match: re.Match[str]) -> str:
    return match.group(0) + " AUTOINCREMENT"


def _quoted(name: str) -> str:
    return name.replace('"', '""')


def _retire_referred_ids(db: Database) -> None:
    """Start each sequence above the largest id the gallery refers to anywhere."""
    faces, persons = _referred_ids(db)
    for table, referred in (("face_meta", faces), ("person", persons)):
        top = max([int(db.scalar(f"SELECT COALESCE(MAX(id), 0) FROM {table}"))] + referred)
        current = db.scalar("SELECT seq FROM sqlite_sequence WHERE name = {p}", (table,))
        if current is None:
            db.execute("INSERT INTO sqlite_sequence (name, seq) VALUES ({p}, {p})", (table, top))
        elif int(current) < top:
            db.execute("UPDATE sqlite_sequence SET seq = {p} WHERE name = {p}", (top, table))


def _referred_ids(db: Database) -> tuple[list[int], list[int]]:
    """(face ids, person ids) named by assignments, rejections, folders, a pending
    reindex and every recorded edit's snapshot."""
    faces = [
        int(db.scalar(f"SELECT COALESCE(MAX(face_id), 0) FROM {table}"))
        for table in ("person_face", "person_rejection", "facevec_list_pending")
    ]
    persons = [
        int(db.scalar(f"SELECT COALESCE(MAX(person_id), 0) FROM {table}"))
        for table in ("person_face", "person_rejection", "person_folder")
    ]
    for persons_json, faces_json, before in db.query(
        "SELECT persons, faces, before_rows FROM person_edit"
    ):
        persons += _integers(json.loads(persons_json))
        faces += _integers(json.loads(faces_json))
        rows = json.loads(before)
        persons += _integers(row[0] for row in rows.get("person", []))
        persons += _integers(row[1] for row in rows.get("person_folder", []))
        for table in ("person_face", "person_rejection"):
            faces += _integers(row[0] for row in rows.get(table, []))
            persons += _integers(row[1] for row in rows.get(table, []))
    return faces, persons


def _integers(values: Iterable[object]) -> list[int]:
    return [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]
