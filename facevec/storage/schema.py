"""The tables facevec creates, and the collection record that pins one model.

Table and column names keep those of the seed (face_meta, face_embeddings,
img_name, embedding, face_id, dimension, value), so its SQL runs unchanged.
"""

from __future__ import annotations

import contextlib
import datetime
from dataclasses import dataclass

from ..errors import DatabaseNotFoundError, ModelMismatchError
from . import id_sequences
from .database import Database
from .dialects import MYSQL, POSTGRESQL, SQLITE

# 1: faces, embeddings, ledger. 2: people (person, person_face, person_rejection,
# person_folder, person_edit, facevec_calibration and the people views); a
# version-1 database is upgraded by storage.people.upgrade. 3: IVF lists
# (facevec_centroids, facevec_list_pending, face_meta.ivf_list,
# facevec_collection.ivf_generation and embedding_rows); create_schema adds the
# columns to an older gallery (_COLUMNS below). 4: ids never reused (AUTOINCREMENT
# on SQLite, storage/id_sequences.py) and person_edit.after_rows (undo refuses when
# what an edit wrote changed since). 6: the ingest ledger records each file's
# mtime_ns and inode (a rescan reads only files whose stat changed) and the settings
# it was indexed with (settings). 7: person.hidden and person.cover_face_id (the
# people page's choices) and face_dismissed (faces a user set aside). 8: the lists'
# measured default nprobe (facevec_collection.ivf_nprobe) and, on MariaDB/MySQL, the
# probed vectors clustered by list (facevec_list_vectors, filled by the upgrade step:
# storage/lists.py).
SCHEMA_VERSION = 8

SOURCES = ("folder", "confirmed", "suggested")

OUTCOMES = ("indexed", "no_face", "not_image", "error")


def _ddl(db: Database) -> list[str]:
    t = db.dialect.types
    return [
        f"""CREATE TABLE IF NOT EXISTS facevec_collection (
            name {t["key_text"]} PRIMARY KEY,
            model_name {t["text"]} NOT NULL,
            dimensions {t["int"]} NOT NULL,
            detector_backend {t["text"]},
            schema_version {t["int"]} NOT NULL,
            created_at {t["text"]} NOT NULL
        )""",
        f"""CREATE TABLE IF NOT EXISTS face_meta (
            id {t["id"]},
            img_name {t["key_text"]} NOT NULL,
            identity {t["key_text"]},
            face_index {t["int"]} NOT NULL,
            embedding {t["blob"]} NOT NULL,
            model_name {t["text"]} NOT NULL,
            detector_backend {t["text"]},
            facial_area_x {t["int"]},
            facial_area_y {t["int"]},
            facial_area_w {t["int"]},
            facial_area_h {t["int"]},
            left_eye_x {t["int"]},
            left_eye_y {t["int"]},
            right_eye_x {t["int"]},
            right_eye_y {t["int"]},
            face_confidence {t["real"]},
            face_image {t["blob"]},
            source_sha256 {t["text"]},
            created_at {t["text"]} NOT NULL,
            UNIQUE (img_name, face_index)
        )""",
        f"""CREATE TABLE IF NOT EXISTS face_embeddings (
            face_id {t["int"]} NOT NULL,
            dimension {t["int"]} NOT NULL,
            value {t["real"]} NOT NULL,
            PRIMARY KEY (face_id, dimension)
        ){db.dialect.embeddings_table_suffix}""",
        f"""CREATE TABLE IF NOT EXISTS ingest_ledger (
            path {t["key_text"]} PRIMARY KEY,
            sha256 {t["text"]},
            size_bytes {t["int"]},
            outcome {t["key_text"]} NOT NULL
                CHECK (outcome IN ('indexed', 'no_face', 'not_image', 'error')),
            faces {t["int"]} NOT NULL DEFAULT 0,
            message {t["text"]},
            model_name {t["text"]},
            detector_backend {t["text"]},
            seconds {t["real"]},
            first_seen_at {t["text"]} NOT NULL,
            updated_at {t["text"]} NOT NULL,
            mtime_ns {t["int"]},
            inode {t["int"]},
            settings {t["text"]}
        )""",
        *_people_ddl(db),
        *_lists_ddl(db),
    ]


def _lists_ddl(db: Database) -> list[str]:
    t = db.dialect.types
    return [
        # Coarse centroids of the IVF lists (storage/lists.py): 'active' ones serve
        # searches, 'pending' ones belong to a reindex under way.
        f"""CREATE TABLE IF NOT EXISTS facevec_centroids (
            generation {t["int"]} NOT NULL,
            list_no {t["int"]} NOT NULL,
            centroid {t["blob"]} NOT NULL,
            model_name {t["text"]} NOT NULL,
            metric {t["key_text"]} NOT NULL,
            state {t["key_text"]} NOT NULL CHECK (state IN ('active', 'pending')),
            trained_faces {t["int"]} NOT NULL,
            created_at {t["text"]} NOT NULL,
            PRIMARY KEY (generation, list_no)
        )""",
        # Each face's list under the pending centroids, filled batch by batch.
        f"""CREATE TABLE IF NOT EXISTS facevec_list_pending (
            face_id {t["int"]} PRIMARY KEY,
            generation {t["int"]} NOT NULL,
            list_no {t["int"]} NOT NULL
        )""",
        # The vectors of the active lists keyed (list_no, face_id): where the table is
        # clustered by its key (InnoDB), a probed list is one key range. Filled only
        # where storage/lists.py says so (clustered_lists).
        f"""CREATE TABLE IF NOT EXISTS facevec_list_vectors (
            list_no {t["int"]} NOT NULL,
            face_id {t["int"]} NOT NULL,
            embedding {t["blob"]} NOT NULL,
            PRIMARY KEY (list_no, face_id)
        ){db.dialect.embeddings_table_suffix}""",
    ]


# (table, column, definition): added to a gallery made before they existed.
_COLUMNS = (
    ("face_meta", "ivf_list", "int"),
    ("facevec_collection", "ivf_generation", "int"),
    ("facevec_collection", "embedding_rows", "int NOT NULL DEFAULT 1"),
    ("person_edit", "after_rows", "text"),
    # version 6: what a rescan compares, and the settings a file was indexed with
    ("ingest_ledger", "mtime_ns", "int"),
    ("ingest_ledger", "inode", "int"),
    ("ingest_ledger", "settings", "text"),
    # version 7: a person kept out of the way, and the face that stands for them
    ("person", "hidden", "int NOT NULL DEFAULT 0"),
    ("person", "cover_face_id", "int"),
    # the highest face id the people step after a run has looked at (NULL: none yet);
    # added where missing, read only by runs that called create_schema
    ("facevec_collection", "people_checked_id", "int"),
    # version 8: the lists' default nprobe, measured when they were trained
    ("facevec_collection", "ivf_nprobe", "int"),
)


def _people_ddl(db: Database) -> list[str]:
    t = db.dialect.types
    return [
        # A person; name is NULL until someone names them (names are unique).
        f"""CREATE TABLE IF NOT EXISTS person (
            id {t["id"]},
            name {t["key_text"]} UNIQUE,
            created_at {t["text"]} NOT NULL,
            updated_at {t["text"]} NOT NULL
        )""",
        # Which person each face is, and who said so: 'folder' (gallery/<person>/),
        # 'confirmed' (a user), 'suggested' (clustering); score: for a suggestion,
        # the RMS distance to the person's other faces (lower is surer).
        f"""CREATE TABLE IF NOT EXISTS person_face (
            face_id {t["int"]} PRIMARY KEY,
            person_id {t["int"]} NOT NULL,
            source {t["key_text"]} NOT NULL
                CHECK (source IN ('folder', 'confirmed', 'suggested')),
            score {t["real"]},
            updated_at {t["text"]} NOT NULL
        )""",
        # "This face is not that person": clustering never puts it back there.
        f"""CREATE TABLE IF NOT EXISTS person_rejection (
            face_id {t["int"]} NOT NULL,
            person_id {t["int"]} NOT NULL,
            created_at {t["text"]} NOT NULL,
            PRIMARY KEY (face_id, person_id)
        )""",
        # The gallery folders (face_meta.identity) each person stands for.
        f"""CREATE TABLE IF NOT EXISTS person_folder (
            folder {t["key_text"]} PRIMARY KEY,
            person_id {t["int"]} NOT NULL
        )""",
        # Every change to people, with the rows it replaced, so it can be undone.
        f"""CREATE TABLE IF NOT EXISTS person_edit (
            id {t["id"]},
            action {t["key_text"]} NOT NULL,
            summary {t["text"]} NOT NULL,
            persons {t["text"]} NOT NULL,
            faces {t["text"]} NOT NULL,
            before_rows {t["text"]} NOT NULL,
            created_at {t["text"]} NOT NULL,
            undone_at {t["text"]}
        )""",
        # Faces a user set aside ("not anyone to name"): out of the unassigned faces,
        # and clustering leaves them alone.
        f"""CREATE TABLE IF NOT EXISTS face_dismissed (
            face_id {t["int"]} PRIMARY KEY,
            created_at {t["text"]} NOT NULL
        )""",
        # This gallery's own thresholds, measured on its labelled people.
        f"""CREATE TABLE IF NOT EXISTS facevec_calibration (
            metric {t["key_text"]} PRIMARY KEY,
            model_name {t["text"]} NOT NULL,
            people {t["int"]} NOT NULL,
            faces {t["int"]} NOT NULL,
            genuine_pairs {t["int"]} NOT NULL,
            impostor_pairs {t["int"]} NOT NULL,
            eer {t["real"]},
            eer_threshold {t["real"]},
            fmr_1e2_threshold {t["real"]},
            fmr_1e2_fnmr {t["real"]},
            fmr_1e3_threshold {t["real"]},
            fmr_1e3_fnmr {t["real"]},
            threshold {t["real"]},
            threshold_rule {t["text"]},
            created_at {t["text"]} NOT NULL
        )""",
    ]


# The people views: one query answers who is where. Created where missing (a view
# has no IF NOT EXISTS on PostgreSQL).
_VIEWS = (
    (
        "person_faces",
        """CREATE VIEW person_faces AS
        SELECT pf.person_id, p.name, pf.face_id, f.img_name, f.face_index, pf.source,
            pf.score, f.facial_area_x, f.facial_area_y, f.facial_area_w, f.facial_area_h
        FROM person_face pf
        JOIN person p ON p.id = pf.person_id
        JOIN face_meta f ON f.id = pf.face_id""",
    ),
    (
        "person_photos",
        """CREATE VIEW person_photos AS
        SELECT person_id, name, img_name, COUNT(*) AS faces
        FROM person_faces
        GROUP BY person_id, name, img_name""",
    ),
    (
        "people",
        """CREATE VIEW people AS
        SELECT p.id AS person_id, p.name, COUNT(pf.face_id) AS faces,
            COUNT(DISTINCT pf.img_name) AS photos,
            COALESCE(SUM(CASE WHEN pf.source = 'confirmed' THEN 1 ELSE 0 END), 0) AS confirmed,
            COALESCE(SUM(CASE WHEN pf.source = 'folder' THEN 1 ELSE 0 END), 0) AS folder,
            COALESCE(SUM(CASE WHEN pf.source = 'suggested' THEN 1 ELSE 0 END), 0) AS suggested
        FROM person p
        LEFT JOIN person_faces pf ON pf.person_id = p.id
        GROUP BY p.id, p.name""",
    ),
)


# (index, table, column): made only where missing, since MySQL 8 has no
# CREATE INDEX IF NOT EXISTS.
_INDEXES = (
    ("face_meta_identity", "face_meta", "identity"),
    ("ingest_ledger_outcome", "ingest_ledger", "outcome"),
    ("person_face_person", "person_face", "person_id"),
    ("person_rejection_person", "person_rejection", "person_id"),
    ("person_folder_person", "person_folder", "person_id"),
    ("face_meta_ivf_list", "face_meta", "ivf_list, id"),
    ("facevec_list_vectors_face", "facevec_list_vectors", "face_id"),
)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def create_schema(db: Database) -> None:
    """Create what is missing; safe when several processes do it at once."""
    check_search_path(db)
    for attempt in range(3):
        try:
            with db.transaction():
                for statement in _ddl(db):
                    db.execute(statement)
                for table, column, kind in _COLUMNS:
                    if db.scalar(db.dialect.column_exists_sql, (table, column)) is None:
                        type_name, _, rest = kind.partition(" ")
                        definition = f"{db.dialect.types[type_name]} {rest}".strip()
                        db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")
                for index, table, column in _INDEXES:
                    if db.scalar(db.dialect.index_exists_sql, (index,)) is None:
                        db.execute(f"CREATE INDEX {index} ON {table} ({column})")
                for view, statement in _VIEWS:
                    if db.scalar(db.dialect.view_exists_sql, (view,)) is None:
                        db.execute(statement)
                # A version-2 gallery now has the lists' tables and columns (a
                # version-1 one is upgraded by storage.people.upgrade).
                db.execute(
                    "UPDATE facevec_collection SET schema_version = 3 WHERE schema_version = 2"
                )
            break
        except Exception:
            # A server racing another CREATE ... IF NOT EXISTS can fail on its own
            # catalog (PostgreSQL: duplicate pg_type key): the other one won; retry.
            if attempt == 2 or db.dialect is SQLITE:
                raise
    # The upgrades since, in order: each one step of its own, idempotent.
    id_sequences.upgrade(db)
    with db.transaction():
        # Version 5 to 6: the ledger's new columns are there (rows from before keep
        # NULL settings: judged by hash, model and detector, as then).
        db.execute(
            "UPDATE facevec_collection SET schema_version = 6 WHERE schema_version IN (4, 5)"
        )
        # Version 6 to 7: person.hidden, person.cover_face_id and face_dismissed are there.
        db.execute("UPDATE facevec_collection SET schema_version = 7 WHERE schema_version = 6")
    _upgrade_to_8(db)


def _upgrade_to_8(db: Database) -> None:
    """Version 7 to 8: ivf_nprobe is there (NULL: the lists' rule until the next
    reindex), and on MariaDB/MySQL the active lists' vectors are copied into
    facevec_list_vectors in the same transaction."""
    version = db.scalar("SELECT MIN(schema_version) FROM facevec_collection")
    if version is None or int(version) >= 8 or int(version) < 7:
        return
    with db.transaction():
        fill_list_vectors(db)
        db.execute("UPDATE facevec_collection SET schema_version = 8 WHERE schema_version = 7")


def fill_list_vectors(db: Database) -> None:
    """Make facevec_list_vectors the active lists' vectors (one INSERT ... SELECT, in
    list order, in the caller's transaction) where a table is clustered by its key
    (MariaDB/MySQL: storage/lists.py reads it there); empty elsewhere."""
    db.execute("DELETE FROM facevec_list_vectors")
    if db.dialect is MYSQL:
        db.execute(
            "INSERT INTO facevec_list_vectors (list_no, face_id, embedding)"
            " SELECT ivf_list, id, embedding FROM face_meta WHERE ivf_list IS NOT NULL"
            " AND EXISTS (SELECT 1 FROM facevec_collection WHERE ivf_generation IS NOT NULL)"
            " ORDER BY ivf_list, id"
        )


def has_schema(db: Database) -> bool:
    # Asked of the catalog: a failed probe would end the caller's transaction.
    return db.scalar(db.dialect.table_exists_sql, ("facevec_collection",)) is not None


@dataclass(frozen=True)
class Collection:
    name: str
    model_name: str
    dimensions: int
    detector_backend: str | None
    schema_version: int
    created_at: str


def missing_search_path(db: Database) -> str | None:
    """On PostgreSQL, the search_path when it names no schema that exists (a URL's
    options=-csearch_path=NAME of a schema never created): None when all is well."""
    if db.dialect is not POSTGRESQL or db.scalar("SELECT current_schema()") is not None:
        return None
    return str(db.scalar("SELECT current_setting('search_path')"))


def check_search_path(db: Database) -> None:
    """Refuse, naming it, a PostgreSQL search_path with no schema that exists: nothing
    can be read there, and a CREATE TABLE would fail with "no schema has been selected"."""
    path = missing_search_path(db)
    if path is not None:
        raise DatabaseNotFoundError(
            f"no gallery at {db.name}: its search_path ({path}) names no schema that "
            "exists; create the schema (CREATE SCHEMA name) or fix the URL"
        )


def get_collection(db: Database, name: str = "default") -> Collection | None:
    if not has_schema(db):
        check_search_path(db)
        return None
    rows = db.query(
        "SELECT name, model_name, dimensions, detector_backend, schema_version, created_at"
        " FROM facevec_collection WHERE name = {p}",
        (name,),
    )
    return Collection(*rows[0]) if rows else None


def check_model(db: Database, model_name: str, name: str = "default") -> Collection | None:
    """The collection, after refusing a model other than the one it holds."""
    collection = get_collection(db, name)
    if collection is not None and collection.model_name != model_name:
        raise ModelMismatchError(
            f"database {db.name} holds {collection.model_name} vectors "
            f"({collection.dimensions} dimensions), not {model_name}; "
            f"use model {collection.model_name!r} or another database"
        )
    return collection


def ensure_collection(
    db: Database,
    model_name: str,
    dimensions: int,
    detector_backend: str | None,
    name: str = "default",
    in_transaction: bool = False,
) -> Collection:
    """Record the model of a new database, or refuse vectors of another model/size.
    ``in_transaction``: inside the caller's transaction (else a transaction of its own)."""
    collection = check_model(db, model_name, name)
    if collection is None:
        # Two first runs may race here: the one whose row lands first decides, and
        # the other is checked against it below.
        with contextlib.nullcontext() if in_transaction else db.transaction():
            db.execute(
                db.dialect.insert_or_ignore(
                    "facevec_collection",
                    "name, model_name, dimensions, detector_backend, schema_version, created_at",
                ),
                (name, model_name, dimensions, detector_backend, SCHEMA_VERSION, now()),
            )
        collection = check_model(db, model_name, name)
        assert collection is not None
    if collection.dimensions != dimensions:
        raise ModelMismatchError(
            f"database {db.name} holds {collection.dimensions}-dimensional "
            f"{collection.model_name} vectors; these have {dimensions} dimensions"
        )
    return collection


def set_schema_version(db: Database, version: int, name: str = "default") -> None:
    db.execute(
        "UPDATE facevec_collection SET schema_version = {p} WHERE name = {p}", (version, name)
    )
