"""The tables facevec creates, and the collection record that pins one model.

Table and column names keep those of the seed (face_meta, face_embeddings,
img_name, embedding, face_id, dimension, value), so its SQL runs unchanged.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

from ..errors import ModelMismatchError
from .database import Database
from .dialects import SQLITE

SCHEMA_VERSION = 1

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
            updated_at {t["text"]} NOT NULL
        )""",
    ]


# (index, table, column): made only where missing, since MySQL 8 has no
# CREATE INDEX IF NOT EXISTS.
_INDEXES = (
    ("face_meta_identity", "face_meta", "identity"),
    ("ingest_ledger_outcome", "ingest_ledger", "outcome"),
)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def create_schema(db: Database) -> None:
    """Create what is missing; safe when several processes do it at once."""
    for attempt in range(3):
        try:
            with db.transaction():
                for statement in _ddl(db):
                    db.execute(statement)
                for index, table, column in _INDEXES:
                    if db.scalar(db.dialect.index_exists_sql, (index,)) is None:
                        db.execute(f"CREATE INDEX {index} ON {table} ({column})")
            return
        except Exception:
            # A server racing another CREATE ... IF NOT EXISTS can fail on its own
            # catalog (PostgreSQL: duplicate pg_type key): the other one won; retry.
            if attempt == 2 or db.dialect is SQLITE:
                raise


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


def get_collection(db: Database, name: str = "default") -> Collection | None:
    if not has_schema(db):
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
) -> Collection:
    """Record the model of a new database, or refuse vectors of another model/size."""
    collection = check_model(db, model_name, name)
    if collection is None:
        # Two first runs may race here: the one whose row lands first decides, and
        # the other is checked against it below.
        with db.transaction():
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
