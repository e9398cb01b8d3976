"""IVF lists in plain SQL: coarse centroids and each face's list number.

Tables and columns (all written here):

- ``facevec_centroids(generation, list_no, centroid, model_name, metric, state,
  trained_faces, created_at)``: one row per centroid; ``state`` is ``'active'``
  (the lists searches use) or ``'pending'`` (a reindex under way);
- ``facevec_list_pending(face_id, generation, list_no)``: the new list of each
  face, filled in committed batches while the old lists keep serving;
- ``face_meta.ivf_list`` (indexed with ``id``): the face's active list;
- ``facevec_collection.ivf_generation`` (the active generation, NULL: no
  lists), ``facevec_collection.ivf_nprobe`` (the default nprobe measured when
  they were trained, NULL: the rule of ``facevec.lists.default_nprobe``) and
  ``facevec_collection.embedding_rows`` (0: face_embeddings is kept empty, blobs
  only);
- ``facevec_list_vectors(list_no, face_id, embedding)``, on MariaDB/MySQL only
  (:func:`clustered_lists`): the active lists' vectors in a table InnoDB clusters
  by (list_no, face_id), so a probed list is one key range instead of a random
  primary-key lookup per face. Kept with face_meta in the same transactions
  (insert, delete, :func:`activate`).

A retrain becomes visible in one transaction (:func:`activate`): until then the
old lists, centroids and ``face_meta.ivf_list`` are untouched.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..bindings.kernels import assign
from .database import Database, in_clause_chunks
from .dialects import MYSQL, POSTGRESQL, SQLITE
from .schema import fill_list_vectors, now

# (database name, generation) -> (centroids, metric): centroids are read once.
_CENTROIDS: dict[tuple[str, int, str | None], tuple[np.ndarray, str]] = {}
# Databases known to have the schema-3 columns, and those with the schema-8 one.
_UPGRADED: set[str] = set()
_HAS_NPROBE: set[str] = set()


@dataclass(frozen=True)
class Layout:
    """How a gallery stores its faces: per-dimension rows or not, and its lists."""

    embedding_rows: bool
    generation: int | None
    stamp: str | None = None  # when that generation was trained (part of the cache key)
    nprobe: int | None = None  # the default nprobe measured at training (None: the rule)
    clustered: bool = False  # facevec_list_vectors holds the active lists' vectors


def clustered_lists(db: Database) -> bool:
    """Whether this database keeps facevec_list_vectors: where a table is clustered by
    its primary key (InnoDB). PostgreSQL's heap and SQLite (whose knn index is the
    fast path) read the probed faces from face_meta through its (ivf_list, id) index."""
    return db.dialect is MYSQL


def layout(db: Database) -> Layout:
    """The gallery's layout; a gallery of schema < 3 (never written since) has rows, no lists."""
    if db.name not in _UPGRADED:
        if (
            db.scalar(db.dialect.column_exists_sql, ("facevec_collection", "ivf_generation"))
            is None
        ):
            return Layout(True, None)
        _UPGRADED.add(db.name)
    if db.name not in _HAS_NPROBE:
        if db.scalar(db.dialect.column_exists_sql, ("facevec_collection", "ivf_nprobe")):
            _HAS_NPROBE.add(db.name)
    nprobe = "c.ivf_nprobe" if db.name in _HAS_NPROBE else "NULL"
    row = db.execute(
        "SELECT c.embedding_rows, c.ivf_generation, (SELECT MIN(z.created_at) FROM"
        f" facevec_centroids z WHERE z.generation = c.ivf_generation), {nprobe},"
        " c.schema_version FROM facevec_collection c WHERE c.name = 'default'"
    ).fetchone()
    if row is None:
        return Layout(True, None)
    generation = None if row[1] is None else int(row[1])
    return Layout(
        bool(row[0]),
        generation,
        row[2],
        None if row[3] is None else int(row[3]),
        # From version 8 on, the table is filled whenever there are lists.
        clustered_lists(db) and generation is not None and int(row[4]) >= 8,
    )


def centroids(db: Database, current: Layout) -> tuple[np.ndarray, str]:
    """(float32 centroids by list number, metric) of the active lists, cached."""
    assert current.generation is not None
    generation = current.generation
    key = (db.name, generation, current.stamp)
    if key not in _CENTROIDS:
        _CENTROIDS[key] = read_centroids(db, generation)
    return _CENTROIDS[key]


def read_centroids(db: Database, generation: int) -> tuple[np.ndarray, str]:
    """(float32 centroids by list number, metric) of one generation, uncached."""
    rows = db.query(
        "SELECT centroid, metric FROM facevec_centroids WHERE generation = {p} ORDER BY list_no",
        (generation,),
    )
    matrix = np.stack([np.frombuffer(bytes(row[0]), dtype="<f4") for row in rows])
    return np.ascontiguousarray(matrix, dtype=np.float32), str(rows[0][1])


def list_of(db: Database, embedding: bytes, current: Layout) -> int | None:
    """The active list of a new face (None without lists)."""
    found = lists_of(db, [embedding], current)
    return None if found is None else found[0]


def lists_of(db: Database, embeddings: Sequence[bytes], current: Layout) -> list[int] | None:
    """The active lists of new faces, in one call of the kernel (None without lists)."""
    if current.generation is None:
        return None
    if not embeddings:
        return []
    data = np.frombuffer(b"".join(embeddings), dtype="<f4").reshape(len(embeddings), -1)
    return lists_of_matrix(db, data, current)


def lists_of_matrix(db: Database, vectors: np.ndarray, current: Layout) -> list[int] | None:
    """:func:`lists_of` of new faces given as a float32 matrix (one row a face)."""
    if current.generation is None:
        return None
    if not len(vectors):
        return []
    matrix, metric = centroids(db, current)
    numbers, _ = assign(vectors, matrix, metric)
    return [int(n) for n in numbers]


def add_list_vectors(db: Database, rows: Sequence[tuple[int, int, bytes]]) -> None:
    """(list_no, face_id, embedding) rows of new faces into facevec_list_vectors,
    where the gallery keeps it (the caller's transaction)."""
    if rows:
        db.executemany(
            "INSERT INTO facevec_list_vectors (list_no, face_id, embedding) VALUES ({p}, {p}, {p})",
            rows,
        )


def delete_list_vectors(db: Database, face_ids: Sequence[int]) -> None:
    """Forget deleted faces in facevec_list_vectors (a no-op where it is not kept)."""
    if not face_ids or not clustered_lists(db) or not layout(db).clustered:
        return
    for chunk in in_clause_chunks([int(i) for i in face_ids]):
        db.execute(
            f"DELETE FROM facevec_list_vectors WHERE face_id IN ({db.dialect.params(len(chunk))})",
            chunk,
        )


# Training ------------------------------------------------------------------------


@dataclass(frozen=True)
class Pending:
    generation: int
    lists: int
    metric: str
    assigned: int  # faces already in facevec_list_pending
    last_face_id: int | None


def pending(db: Database) -> Pending | None:
    row = db.execute(
        "SELECT generation, COUNT(*), MIN(metric) FROM facevec_centroids"
        " WHERE state = 'pending' GROUP BY generation"
    ).fetchone()
    if row is None:
        return None
    generation = int(row[0])
    done = db.execute(
        "SELECT COUNT(*), MAX(face_id) FROM facevec_list_pending WHERE generation = {p}",
        (generation,),
    ).fetchone()
    return Pending(
        generation, int(row[1]), str(row[2]), int(done[0]), None if done[1] is None else done[1]
    )


def discard_pending(db: Database) -> None:
    db.execute("DELETE FROM facevec_list_pending")
    db.execute("DELETE FROM facevec_centroids WHERE state = 'pending'")


def save_pending(
    db: Database, matrix: np.ndarray, model_name: str, metric: str, trained_faces: int
) -> int:
    """Store new centroids as pending; returns their generation."""
    top = db.scalar("SELECT MAX(generation) FROM facevec_centroids")
    generation = 1 if top is None else int(top) + 1
    stamp = now()
    db.executemany(
        "INSERT INTO facevec_centroids (generation, list_no, centroid, model_name, metric,"
        " state, trained_faces, created_at) VALUES ({p}, {p}, {p}, {p}, {p}, 'pending', {p}, {p})",
        [
            (
                generation,
                number,
                np.asarray(row, dtype="<f4").tobytes(),
                model_name,
                metric,
                trained_faces,
                stamp,
            )
            for number, row in enumerate(matrix)
        ],
    )
    return generation


def save_assignments(
    db: Database, generation: int, face_ids: Sequence[int], lists: Sequence[int]
) -> None:
    """Each face's pending list; faces no longer stored (deleted since their vector
    was read) are left out, in the caller's transaction."""
    stored: set[int] = set()
    for chunk in in_clause_chunks([int(f) for f in face_ids]):
        stored.update(
            int(row[0])
            for row in db.query(
                f"SELECT id FROM face_meta WHERE id IN ({db.dialect.params(len(chunk))})", chunk
            )
        )
    rows = [
        (int(f), generation, int(n)) for f, n in zip(face_ids, lists, strict=True) if f in stored
    ]
    if rows:
        db.executemany(
            "INSERT INTO facevec_list_pending (face_id, generation, list_no)"
            " VALUES ({p}, {p}, {p})",
            rows,
        )


def unassigned_pending(db: Database, generation: int) -> tuple[list[int], list[bytes]]:
    """(ids, vector blobs) of the faces without a pending list (written while the
    reindex ran)."""
    rows = db.query(
        "SELECT f.id, f.embedding FROM face_meta f WHERE NOT EXISTS (SELECT 1 FROM"
        " facevec_list_pending p WHERE p.face_id = f.id AND p.generation = {p}) ORDER BY f.id",
        (generation,),
    )
    return [int(row[0]) for row in rows], [bytes(row[1]) for row in rows]


def activate(db: Database, generation: int, nprobe: int | None = None) -> None:
    """Make a pending generation the active one, with its measured default `nprobe`
    (the caller's transaction: all or nothing)."""
    if db.dialect is MYSQL:
        db.execute(
            "UPDATE face_meta f JOIN facevec_list_pending p ON p.face_id = f.id"
            " SET f.ivf_list = p.list_no WHERE p.generation = {p}",
            (generation,),
        )
    else:  # PostgreSQL and SQLite (3.33+) spell it UPDATE ... FROM
        db.execute(
            "UPDATE face_meta SET ivf_list = p.list_no FROM facevec_list_pending p"
            " WHERE p.face_id = face_meta.id AND p.generation = {p}",
            (generation,),
        )
    db.execute("DELETE FROM facevec_centroids WHERE state = 'active'")
    db.execute(
        "UPDATE facevec_centroids SET state = 'active' WHERE generation = {p}", (generation,)
    )
    db.execute(
        "UPDATE facevec_collection SET ivf_generation = {p}, ivf_nprobe = {p}"
        " WHERE name = 'default'",
        (generation, nprobe),
    )
    db.execute("DELETE FROM facevec_list_pending")
    fill_list_vectors(db)


def drop(db: Database) -> bool:
    """Remove the gallery's lists (centroids, pending work, every face's list
    number): searches are exact again. In the caller's transaction; False if there
    were none."""
    had = layout(db).generation is not None or pending(db) is not None
    db.execute("UPDATE face_meta SET ivf_list = NULL WHERE ivf_list IS NOT NULL")
    db.execute("DELETE FROM facevec_list_pending")
    db.execute("DELETE FROM facevec_centroids")
    db.execute(
        "UPDATE facevec_collection SET ivf_generation = NULL, ivf_nprobe = NULL"
        " WHERE name = 'default'"
    )
    fill_list_vectors(db)
    return had


def analyze(db: Database) -> None:
    """Refresh the planner's statistics of face_meta and face_embeddings (after a
    reindex), so that it reads the probed lists' rows by index. On PostgreSQL,
    VACUUM first makes the space of the rows the list UPDATE replaced reusable."""
    if db.dialect is POSTGRESQL:
        db.commit()
        autocommit = db.conn.autocommit
        db.conn.autocommit = True  # VACUUM runs outside a transaction
        try:
            db.execute("VACUUM (ANALYZE) face_meta")
            db.execute("ANALYZE face_embeddings")
        finally:
            db.conn.autocommit = autocommit
        return
    for table in ("face_meta", "face_embeddings"):
        if db.dialect is POSTGRESQL:
            db.execute(f"ANALYZE {table}")
        elif db.dialect is MYSQL:
            db.query(f"ANALYZE TABLE {table}")
        elif db.dialect is SQLITE:
            db.execute(f"ANALYZE {table}")
    db.commit()


# Reading for search ----------------------------------------------------------------


def _in_lists(db: Database, lists: Sequence[int]) -> str:
    # Integers from the centroid search, never from a caller: written inline so the
    # planner sees the constants (and MariaDB's range optimiser uses the index).
    return ", ".join(str(int(n)) for n in lists)


def list_embeddings(
    db: Database, lists: Sequence[int], current: Layout | None = None
) -> tuple[list[int], list[bytes]]:
    """(ids, float32 blobs) of the faces in the given lists, by id.

    Where the gallery keeps facevec_list_vectors, each list is one range of its
    clustered key (sorted by id here, so ties rank as from face_meta); else the
    (ivf_list, id) index of face_meta gives the rows.
    """
    current = layout(db) if current is None else current
    if current.clustered:
        rows = db.query(
            "SELECT face_id, embedding FROM facevec_list_vectors"
            f" WHERE list_no IN ({_in_lists(db, lists)})"
        )
        rows.sort(key=lambda row: row[0])
    else:
        rows = db.query(
            f"SELECT id, embedding FROM face_meta WHERE ivf_list IN ({_in_lists(db, lists)})"
            " ORDER BY id"
        )
    return [int(row[0]) for row in rows], [bytes(row[1]) for row in rows]


def pending_rows(
    db: Database, generation: int, batch_size: int
) -> Iterator[tuple[list[int], list[bytes], list[int]]]:
    """(ids, vector blobs, pending lists: -1 for none yet) of every face, by id, a
    batch at a time: what measuring a new generation's default nprobe reads."""
    last: int | None = None
    while True:
        clause, params = db.dialect.limit(batch_size)
        where, first = ("", []) if last is None else (" WHERE f.id > {p}", [last])
        rows = db.query(
            "SELECT f.id, f.embedding, p.list_no FROM face_meta f LEFT JOIN"
            " facevec_list_pending p ON p.face_id = f.id AND p.generation = {p}"
            f"{where} ORDER BY f.id{clause}",
            [generation] + first + params,
        )
        if not rows:
            return
        last = int(rows[-1][0])
        yield (
            [int(row[0]) for row in rows],
            [bytes(row[1]) for row in rows],
            [-1 if row[2] is None else int(row[2]) for row in rows],
        )


def list_filter(db: Database, lists: Sequence[int]) -> tuple[str, str]:
    """(FROM prefix, WHERE clause) restricting the relational query to some lists.

    MariaDB is told the join order (STRAIGHT_JOIN): the probed faces from the
    ivf_list index first, then their face_embeddings rows by primary key.
    """
    join = "STRAIGHT_JOIN" if db.dialect is MYSQL else "JOIN"
    return (
        f"face_meta m {join} face_embeddings e ON e.face_id = m.id",
        f" WHERE m.ivf_list IN ({_in_lists(db, lists)})",
    )


def probed_join(db: Database, join_clause: str) -> str:
    """The query-vector join of a probed relational query: on MariaDB after the
    face_embeddings rows (STRAIGHT_JOIN), so it reads each probed face's rows as one
    key range and looks their query values up in the materialised target by key."""
    if db.dialect is MYSQL and join_clause.startswith("JOIN "):
        return "STRAIGHT_" + join_clause
    return join_clause


# Status ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    lists: int
    metric: str
    trained_faces: int
    trained_at: str
    faces: int
    unassigned: int
    sizes: list[int]  # faces per list, by list number
    nprobe: int | None = None  # the default measured at training (None: the rule)


def status(db: Database) -> Status | None:
    current = layout(db)
    if current.generation is None:
        return None
    row = db.execute(
        "SELECT COUNT(*), MIN(metric), MIN(trained_faces), MIN(created_at) FROM facevec_centroids"
        " WHERE generation = {p}",
        (current.generation,),
    ).fetchone()
    sizes = [0] * int(row[0])
    unassigned = 0
    faces = 0
    for number, count in db.query("SELECT ivf_list, COUNT(*) FROM face_meta GROUP BY ivf_list"):
        faces += int(count)
        if number is None or not 0 <= int(number) < len(sizes):
            unassigned += int(count)
        else:
            sizes[int(number)] = int(count)
    return Status(
        int(row[0]),
        str(row[1]),
        int(row[2]),
        str(row[3]),
        faces,
        unassigned,
        sizes,
        current.nprobe,
    )


# Blobs only ---------------------------------------------------------------------------


def set_embedding_rows(db: Database, keep: bool) -> None:
    db.execute(
        "UPDATE facevec_collection SET embedding_rows = {p} WHERE name = 'default'",
        (1 if keep else 0,),
    )


def delete_embedding_rows(db: Database, face_ids: Sequence[int]) -> None:
    for chunk in in_clause_chunks(face_ids):
        db.execute(
            f"DELETE FROM face_embeddings WHERE face_id IN ({db.dialect.params(len(chunk))})",
            chunk,
        )


def faces_with_rows(db: Database, limit: int) -> list[int]:
    clause, params = db.dialect.limit(limit)
    return [
        int(row[0])
        for row in db.query(
            f"SELECT DISTINCT face_id FROM face_embeddings ORDER BY face_id{clause}", params
        )
    ]


def faces_without_rows(db: Database, after: int, limit: int) -> list[tuple[int, bytes]]:
    clause, params = db.dialect.limit(limit)
    return [
        (int(row[0]), bytes(row[1]))
        for row in db.query(
            "SELECT f.id, f.embedding FROM face_meta f WHERE f.id > {p} AND NOT EXISTS"
            " (SELECT 1 FROM face_embeddings e WHERE e.face_id = f.id)"
            f" ORDER BY f.id{clause}",
            [after] + params,
        )
    ]


def pgvector(db: Database) -> str | None:
    """On PostgreSQL: 'installed', 'available' (CREATE EXTENSION vector would succeed
    for a superuser) or 'absent'; None elsewhere."""
    if db.dialect is not POSTGRESQL:
        return None
    row = db.execute(
        "SELECT installed_version FROM pg_available_extensions WHERE name = 'vector'"
    ).fetchone()
    db.commit()
    if row is None:
        return "absent"
    return "installed" if row[0] is not None else "available"
