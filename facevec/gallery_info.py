"""What a gallery holds: its model, its counts, and what the ingest ledger says."""

from __future__ import annotations

from typing import Any

from . import lists, plan
from .search import invalid_faces
from .storage import faces, ledger, schema
from .storage import lists as store_lists
from .storage.database import Database, DbArg, open_database

#: The "many queries" of the plan info shows (a folder of photos, a batch).
MANY_QUERIES = 1000


def info(db: DbArg) -> dict[str, Any]:
    """Model, counts of faces, images and identities, and the ledger's outcomes."""
    with open_database(db, create=False) as database:
        collection = schema.get_collection(database)  # refuses a search_path of no schema
        if collection is None:
            return {"db": database.name, "model_name": None, "faces": 0, "images": 0, "ledger": {}}
        stored = faces.counts(database)
        pgvector = store_lists.pgvector(database)
        files = ledger.summary(database)
        outcomes: dict[str, int] = files["outcomes"]  # type: ignore[assignment]
        return {
            "db": database.name,
            "model_name": collection.model_name,
            "dimensions": collection.dimensions,
            "detector_backend": collection.detector_backend,
            "schema_version": collection.schema_version,
            "created_at": collection.created_at,
            "faces": stored["faces"],
            "images": stored["images"],
            "identities": stored["identities"],
            "files_in_ledger": sum(outcomes.values()),
            "ledger": outcomes,
            "faces_in_ledger": files["faces"],
            "last_indexed_at": files["last_updated_at"],
            "embedding_rows": store_lists.layout(database).embedding_rows,
            "ivf_lists": lists.list_status(database),
            "invalid_faces": _invalid_faces(database),
            "search_plan": _search_plan(database, stored["faces"]),
            **({} if pgvector is None else {"pgvector": pgvector}),
        }


def _invalid_faces(database: Database) -> list[dict[str, Any]]:
    """Stored faces whose vectors facevec would refuse today (an older version or
    another program wrote them): searches leave them out; each named, with why."""
    found = invalid_faces(database, fresh=False)
    located = faces.locations(database, sorted(found))
    return [
        {
            "face_id": face_id,
            "img_name": located[face_id].img_name if face_id in located else None,
            "face_index": located[face_id].face_index if face_id in located else None,
            "reason": found[face_id].reason,
        }
        for face_id in sorted(found)
    ]


def _search_plan(database: Database, count: int) -> dict[str, Any]:
    """What a search without --strategy does here, for one query and for many
    (a folder of photos, a batch), and why (:mod:`facevec.plan`)."""
    found = plan.facts(database, count)
    return {
        "one_query": plan.choose(found, 1).as_dict(),
        "many_queries": plan.choose(found, MANY_QUERIES).as_dict(),
    }
