"""Writing and deleting faces: face_meta rows and their face_embeddings rows.

Callers own the transaction: nothing here commits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .database import Database
from .embed import Face
from .schema import now


def vector_blob(vector: np.ndarray) -> bytes:
    """float32 little-endian bytes, the layout of the SQL functions."""
    return np.asarray(vector, dtype="<f4").tobytes()


def delete_image(db: Database, img_name: str) -> int:
    """Remove every face of one image; returns how many there were."""
    ids = [row[0] for row in db.query("SELECT id FROM face_meta WHERE img_name = {p}", (img_name,))]
    if ids:
        marks = db.dialect.params(len(ids))
        db.execute(f"DELETE FROM face_embeddings WHERE face_id IN ({marks})", ids)
        db.execute(f"DELETE FROM face_meta WHERE id IN ({marks})", ids)
    return len(ids)


def insert_face(
    db: Database,
    img_name: str,
    face: Face,
    model_name: str,
    detector_backend: str | None,
    identity: str | None = None,
    source_sha256: str | None = None,
) -> int:
    """Insert one face in both representations; returns its face_meta id."""
    left = face.left_eye or (None, None)
    right = face.right_eye or (None, None)
    cursor = db.execute(
        "INSERT INTO face_meta (img_name, identity, face_index, embedding, model_name,"
        " detector_backend, facial_area_x, facial_area_y, facial_area_w, facial_area_h,"
        " left_eye_x, left_eye_y, right_eye_x, right_eye_y, face_confidence, face_image,"
        " source_sha256, created_at) VALUES ("
        + db.dialect.params(18)
        + ")"
        + db.dialect.returning_id,
        (
            img_name,
            identity,
            face.face_index,
            vector_blob(face.embedding),
            model_name,
            detector_backend,
            face.x,
            face.y,
            face.w,
            face.h,
            left[0],
            left[1],
            right[0],
            right[1],
            face.confidence,
            face.face_png or None,
            source_sha256,
            now(),
        ),
    )
    face_id = db.dialect.inserted_id(cursor)
    # Values are the float32 values widened exactly to double, so relational sums
    # see the same numbers as the blob functions.
    values = np.asarray(face.embedding, dtype=np.float32).astype(np.float64).tolist()
    db.executemany(
        "INSERT INTO face_embeddings (face_id, dimension, value) VALUES ({p}, {p}, {p})",
        [(face_id, dimension, value) for dimension, value in enumerate(values)],
    )
    return face_id


def replace_image(
    db: Database,
    img_name: str,
    faces: Sequence[Face],
    model_name: str,
    detector_backend: str | None,
    identity: str | None = None,
    source_sha256: str | None = None,
) -> None:
    """Make `faces` the only faces stored for `img_name` (no duplicates on rerun)."""
    delete_image(db, img_name)
    for face in faces:
        insert_face(db, img_name, face, model_name, detector_backend, identity, source_sha256)
