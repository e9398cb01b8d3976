"""Copy a gallery between databases, e.g. from a SQLite file to a PostgreSQL server.

Every face keeps its stored vector, metadata, crop and ledger row; only face ids
change (the target assigns its own). Vectors are copied, never re-embedded.
"""

from __future__ import annotations

from typing import Any

from . import schema
from .database import DbArg, open_database
from .errors import DatabaseNotFoundError

_META_COLUMNS = (
    "img_name",
    "identity",
    "face_index",
    "embedding",
    "model_name",
    "detector_backend",
    "facial_area_x",
    "facial_area_y",
    "facial_area_w",
    "facial_area_h",
    "left_eye_x",
    "left_eye_y",
    "right_eye_x",
    "right_eye_y",
    "face_confidence",
    "face_image",
    "source_sha256",
    "created_at",
)
_LEDGER_COLUMNS = (
    "path",
    "sha256",
    "size_bytes",
    "outcome",
    "faces",
    "message",
    "model_name",
    "detector_backend",
    "seconds",
    "first_seen_at",
    "updated_at",
)


def copy_gallery(source: DbArg, target: DbArg, batch_size: int = 200) -> dict[str, int]:
    """Copy every face (both representations) and ledger row of `source` into `target`.

    The target gets the schema on first use and must hold the same model's vectors
    or none. Faces of images already in the target are replaced, so a rerun after an
    interruption finishes the copy without duplicates. Each batch of images is one
    transaction. Returns {"faces": n, "images": n, "ledger": n}.
    """
    copied = {"faces": 0, "images": 0, "ledger": 0}
    with open_database(source, create=False) as src, open_database(target) as dst:
        collection = schema.get_collection(src)
        if collection is None:
            raise DatabaseNotFoundError(f"{src.name} holds no faces to copy")
        schema.create_schema(dst)
        schema.ensure_collection(
            dst, collection.model_name, collection.dimensions, collection.detector_backend
        )
        names = [
            row[0] for row in src.query("SELECT DISTINCT img_name FROM face_meta ORDER BY img_name")
        ]
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            try:
                for name in chunk:
                    copied["faces"] += _copy_image(src, dst, name)
                copied["images"] += len(chunk)
                dst.commit()
            except BaseException:
                dst.rollback()
                raise
        ledger = src.query(f"SELECT {', '.join(_LEDGER_COLUMNS)} FROM ingest_ledger ORDER BY path")
        try:
            for row in ledger:
                dst.execute("DELETE FROM ingest_ledger WHERE path = {p}", (row[0],))
                dst.execute(
                    f"INSERT INTO ingest_ledger ({', '.join(_LEDGER_COLUMNS)})"
                    f" VALUES ({dst.dialect.params(len(_LEDGER_COLUMNS))})",
                    row,
                )
            dst.commit()
        except BaseException:
            dst.rollback()
            raise
        copied["ledger"] = len(ledger)
        if dst.dialect.has_extension:
            from .ingest import refresh_knn_index

            refresh_knn_index(dst)
    return copied


def _copy_image(src: Any, dst: Any, img_name: str) -> int:
    from .store import delete_image

    delete_image(dst, img_name)
    faces = src.query(
        f"SELECT id, {', '.join(_META_COLUMNS)} FROM face_meta WHERE img_name = {{p}}"
        " ORDER BY face_index",
        (img_name,),
    )
    for face in faces:
        old_id, values = face[0], [_plain(value) for value in face[1:]]
        cursor = dst.execute(
            f"INSERT INTO face_meta ({', '.join(_META_COLUMNS)})"
            f" VALUES ({dst.dialect.params(len(_META_COLUMNS))})" + dst.dialect.returning_id,
            values,
        )
        new_id = dst.dialect.inserted_id(cursor)
        rows: list[tuple] = [
            (new_id, int(dimension), float(value))
            for dimension, value in src.query(
                "SELECT dimension, value FROM face_embeddings WHERE face_id = {p}"
                " ORDER BY dimension",
                (old_id,),
            )
        ]
        dst.executemany(
            "INSERT INTO face_embeddings (face_id, dimension, value) VALUES ({p}, {p}, {p})", rows
        )
    return len(faces)


def _plain(value: Any) -> Any:
    # memoryview (psycopg) and bytearray become bytes every driver can bind.
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value
