"""Copy a gallery between databases, e.g. from a SQLite file to a PostgreSQL server.

Every face keeps its stored vector, metadata, crop and ledger row; only face ids
change (the target assigns its own). Vectors are copied, never re-embedded.
"""

from __future__ import annotations

from . import knn
from .errors import DatabaseNotFoundError
from .ingest import sync_people
from .storage import faces, ledger, schema
from .storage.database import DbArg, open_database


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
        names = faces.image_names(src)
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            with dst.transaction():
                for name in chunk:
                    stored = faces.stored_faces(src, name)
                    faces.replace_stored_image(dst, name, stored)
                    copied["faces"] += len(stored)
            copied["images"] += len(chunk)
        entries = ledger.entries(src)
        with dst.transaction():
            for entry in entries:
                ledger.replace(dst, entry)
        copied["ledger"] = len(entries)
        sync_people(dst)  # face ids changed: folder people are rebuilt, not copied
        knn.refresh_gallery_index(dst)
    return copied
