"""The faces of a gallery: face_meta rows and their face_embeddings rows.

Every statement that reads or writes these two tables is here. Callers own the
transaction (``Database.transaction()``): nothing here commits.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, fields
from operator import attrgetter
from typing import Any

import numpy as np

from ..bindings.kernels import assign
from ..errors import InvalidParameterError, InvalidVectorError
from ..face import Face
from ..vectors import check_blob, problems
from . import binary_copy, lists
from .database import Database, in_clause_chunks
from .dialects import MYSQL, POSTGRESQL, Dialect
from .schema import now


@dataclass(frozen=True)
class StoredFace:
    """One face_meta row as stored (without its id): what a copy carries over."""

    img_name: str
    identity: str | None
    face_index: int
    embedding: bytes
    model_name: str
    detector_backend: str | None
    facial_area_x: int | None
    facial_area_y: int | None
    facial_area_w: int | None
    facial_area_h: int | None
    left_eye_x: int | None
    left_eye_y: int | None
    right_eye_x: int | None
    right_eye_y: int | None
    face_confidence: float | None
    face_image: bytes | None
    source_sha256: str | None
    created_at: str


_COLUMNS = tuple(field.name for field in fields(StoredFace))
# A StoredFace's values in _COLUMNS order (dataclasses.astuple deep-copies each value).
_values = attrgetter(*_COLUMNS)


@dataclass(frozen=True)
class FaceLocation:
    """What a search result says of a stored face."""

    face_id: int
    img_name: str
    identity: str | None
    face_index: int
    x: int | None
    y: int | None
    w: int | None
    h: int | None


def vector_blob(vector: np.ndarray) -> bytes:
    """float32 little-endian bytes, the layout of the SQL functions."""
    return np.asarray(vector, dtype="<f4").tobytes()


def _plain(value: Any) -> Any:
    # memoryview (psycopg) and bytearray become bytes every driver can bind.
    if isinstance(value, (memoryview, bytearray)):
        return bytes(value)
    return value


# Writing -----------------------------------------------------------------------


def insert_stored_face(db: Database, face: StoredFace) -> int:
    """Insert one face in both representations (only the blob in a blobs-only
    gallery), in its IVF list when the gallery has lists; returns its face_meta id."""
    check_blob(face.embedding, lambda: f"face {face.face_index} of {face.img_name!r}")
    current = lists.layout(db)
    number = lists.list_of(db, face.embedding, current)
    cursor = db.execute(
        f"INSERT INTO face_meta ({', '.join(_COLUMNS)}, ivf_list) VALUES ("
        + db.dialect.params(len(_COLUMNS) + 1)
        + ")"
        + db.dialect.returning_id,
        _values(face) + (number,),
    )
    face_id = db.dialect.inserted_id(cursor)
    if current.embedding_rows:
        insert_embedding_rows(db, face_id, face.embedding)
    if current.clustered and number is not None:
        lists.add_list_vectors(db, [(number, face_id, face.embedding)])
    return face_id


def insert_embedding_rows(db: Database, face_id: int, embedding: bytes) -> None:
    """The face_embeddings rows of one face (one per dimension)."""
    # The float32 values widened exactly to double, so relational sums see the
    # same numbers as the blob functions.
    values = np.frombuffer(embedding, dtype="<f4").astype(np.float64).tolist()
    db.executemany(
        "INSERT INTO face_embeddings (face_id, dimension, value) VALUES ({p}, {p}, {p})",
        [(face_id, dimension, value) for dimension, value in enumerate(values)],
    )


def insert_face(
    db: Database,
    img_name: str,
    face: Face,
    model_name: str,
    detector_backend: str | None,
    identity: str | None = None,
    source_sha256: str | None = None,
) -> int:
    """Insert a detected face; returns its face_meta id."""
    return insert_stored_face(
        db, stored_face(img_name, face, model_name, detector_backend, identity, source_sha256)
    )


def stored_face(
    img_name: str,
    face: Face,
    model_name: str,
    detector_backend: str | None,
    identity: str | None = None,
    source_sha256: str | None = None,
    created_at: str | None = None,
) -> StoredFace:
    """The face_meta row of a detected face (created now, unless `created_at`)."""
    left = face.left_eye or (None, None)
    right = face.right_eye or (None, None)
    return StoredFace(
        img_name=img_name,
        identity=identity,
        face_index=face.face_index,
        embedding=vector_blob(face.embedding),
        model_name=model_name,
        detector_backend=detector_backend,
        facial_area_x=face.x,
        facial_area_y=face.y,
        facial_area_w=face.w,
        facial_area_h=face.h,
        left_eye_x=left[0],
        left_eye_y=left[1],
        right_eye_x=right[0],
        right_eye_y=right[1],
        face_confidence=face.confidence,
        face_image=face.face_png or None,
        source_sha256=source_sha256,
        created_at=now() if created_at is None else created_at,
    )


def delete_image(db: Database, img_name: str) -> int:
    """Remove every face of one image; returns how many there were."""
    ids = [row[0] for row in db.query("SELECT id FROM face_meta WHERE img_name = {p}", (img_name,))]
    _delete_faces(db, ids)
    return len(ids)


def move_stored_image(db: Database, source: str, target: str, identity: str | None) -> None:
    """The faces of `source` become those of `target` (a moved or renamed file), in
    place: their ids, and so their people, confirmations, rejections and history,
    stay. Faces stored for `target` before are removed first. A face given its
    person by its old folder (source 'folder') and now in another folder loses that
    link: the next folder sync gives it the new folder's person, if any."""
    delete_image(db, target)
    refolded = [
        face_id
        for face_id, old in db.query(
            "SELECT id, identity FROM face_meta WHERE img_name = {p}", (source,)
        )
        if old != identity
    ]
    for chunk in in_clause_chunks(refolded):
        db.execute(
            "DELETE FROM person_face WHERE source = 'folder'"
            f" AND face_id IN ({db.dialect.params(len(chunk))})",
            chunk,
        )
    db.execute(
        "UPDATE face_meta SET img_name = {p}, identity = {p} WHERE img_name = {p}",
        (target, identity, source),
    )


def _delete_faces(db: Database, ids: Sequence[int]) -> None:
    for chunk in in_clause_chunks(list(ids)):
        marks = db.dialect.params(len(chunk))
        # A face's people rows go with it: a reused id must not inherit them.
        db.execute(f"DELETE FROM person_face WHERE face_id IN ({marks})", chunk)
        db.execute(f"DELETE FROM person_rejection WHERE face_id IN ({marks})", chunk)
        db.execute(f"DELETE FROM face_embeddings WHERE face_id IN ({marks})", chunk)
        # A reindex under way must not give a reused id (SQLite) this face's list.
        db.execute(f"DELETE FROM facevec_list_pending WHERE face_id IN ({marks})", chunk)
        db.execute(f"DELETE FROM face_meta WHERE id IN ({marks})", chunk)
    lists.delete_list_vectors(db, ids)


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


def replace_stored_image(db: Database, img_name: str, faces: Sequence[StoredFace]) -> None:
    """Make stored faces (from another gallery) the only ones of `img_name`."""
    delete_image(db, img_name)
    for face in faces:
        insert_stored_face(db, face)


# Writing in bulk: add, copy and import -------------------------------------------

#: Rows of one multi-row INSERT on MariaDB/MySQL, and at most this many bytes (or
#: half the server's max_allowed_packet, if that is less).
MULTI_ROW_INSERT = 10000
MULTI_ROW_BYTES = 8 << 20
_PACKET: dict[str, int] = {}


def _statement_bytes(db: Database) -> int:
    if db.name not in _PACKET:
        packet = db.scalar("SELECT @@max_allowed_packet")
        _PACKET[db.name] = MULTI_ROW_BYTES if packet is None else int(packet) // 2
    return min(MULTI_ROW_BYTES, _PACKET[db.name])


@dataclass(frozen=True)
class FaceBatch:
    """Many faces as columns, no object per face: what a bulk insert writes.

    ``vectors``: float32, one row per face. ``values``: every other face_meta column
    (STORED_FACE_COLUMNS but embedding) as a list of one value per face, or as one
    value (anything but a list) that every face shares."""

    vectors: np.ndarray
    values: Mapping[str, Any]

    def __len__(self) -> int:
        return int(self.vectors.shape[0])

    def column(self, name: str) -> list[Any]:
        value = self.values.get(name)
        return value if isinstance(value, list) else [value] * len(self)

    def describe(self, row: int) -> str:
        """A face as the row-by-row check names it: "face 0 of 'a.jpg'"."""
        return f"face {self.column('face_index')[row]} of {self.column('img_name')[row]!r}"

    @classmethod
    def of(cls, stored: Sequence[StoredFace]) -> FaceBatch:
        """The batch of stored faces whose blobs are float32 vectors of one size (a
        blob of another size is refused by name, as the row-by-row check does)."""
        blobs = [face.embedding for face in stored]
        size = len(blobs[0]) if blobs else 4
        if size % 4 or not size or any(len(b) != size for b in blobs):
            for face in stored:  # the first bad one, in the words of the row-by-row check
                check_blob(face.embedding, lambda f=face: f"face {f.face_index} of {f.img_name!r}")
            for face in stored:  # each a vector, of another size than the first
                if len(face.embedding) != size:
                    raise InvalidVectorError(
                        f"face {face.face_index} of {face.img_name!r} is"
                        f" {len(face.embedding)} bytes, not {size // 4} float32 values"
                        f" ({size} bytes)"
                    )
        matrix = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(blobs), size // 4)
        columns = list(zip(*map(_values, stored), strict=True)) if stored else []
        return cls(
            matrix,
            {
                name: list(column)
                for name, column in zip(_COLUMNS, columns, strict=True)
                if name != "embedding"
            },
        )


@dataclass(frozen=True)
class WritePlan:
    """What preparing a batch needs of the target, read once before the writes
    begin: its lists (and their centroids), and on PostgreSQL face_meta's column
    types (binary COPY), on MariaDB/MySQL how to write a literal. A batch is then
    prepared without the connection, while another one is being written."""

    dialect: Dialect
    current: lists.Layout
    centroids: tuple[np.ndarray, str] | None
    binary_types: dict[str, str] | None = None
    literal: Callable[[Any], str] | None = None


def write_plan(db: Database) -> WritePlan:
    """The :class:`WritePlan` of `db` (a few queries, some cached per database)."""
    current = lists.layout(db)
    centroids = None if current.generation is None else lists.centroids(db, current)
    if db.dialect is POSTGRESQL:
        return WritePlan(db.dialect, current, centroids, binary_types=_binary_types(db))
    if db.dialect is MYSQL:
        return WritePlan(db.dialect, current, centroids, literal=_mysql_literal(db.conn))
    return WritePlan(db.dialect, current, centroids)


_BINARY_TYPES: dict[tuple[str, str, str], dict[str, str] | None] = {}


def _binary_types(db: Database, table: str = "face_meta") -> dict[str, str] | None:
    """The column types of face_meta (or face_embeddings) where binary COPY can
    write every column facevec writes (and the client speaks UTF-8), else None:
    the text format."""
    key = (db.name, str(db.scalar("SELECT current_schema()")), table)
    if key not in _BINARY_TYPES:
        found = dict(
            db.query(
                "SELECT column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND table_name = {p}",
                (table,),
            )
        )
        wanted = (
            ("id",) + _COLUMNS + ("ivf_list",)
            if table == "face_meta"
            else ("face_id", "dimension", "value")
        )
        utf8 = str(getattr(db.conn.info, "encoding", "")).replace("-", "").lower() == "utf8"
        _BINARY_TYPES[key] = binary_copy.column_types(found, wanted) if utf8 else None
    return _BINARY_TYPES[key]


@dataclass
class PreparedFaces:
    """A batch checked, its lists assigned and its rows encoded for the plan's
    database, all but the ids and lists the write adds (PostgreSQL: binary COPY
    fields, or COPY text lines; MariaDB/MySQL: the start of each row's literal)."""

    batch: FaceBatch
    vectors: np.ndarray
    plan: WritePlan
    numbers: list[int] | None
    encoded: Any = None

    def __len__(self) -> int:
        return len(self.batch)


def prepare_faces(stored: Sequence[StoredFace] | FaceBatch, plan: WritePlan) -> PreparedFaces:
    """Check every vector of a batch (once, as a batch: the error of the row-by-row
    check names the first bad one) and encode its rows: the work of a bulk insert
    that needs no connection."""
    batch = stored if isinstance(stored, FaceBatch) else FaceBatch.of(stored)
    found = problems(batch.vectors) if len(batch) else []
    if found:  # the first bad one, in the words of the row-by-row check
        raise InvalidVectorError(f"{batch.describe(found[0].row)} {found[0].reason}")
    vectors = np.ascontiguousarray(batch.vectors, dtype="<f4")
    numbers = None
    if plan.centroids is not None and len(batch):
        numbers = [int(n) for n in assign(vectors, *plan.centroids)[0]]
    prepared = PreparedFaces(batch, vectors, plan, numbers)
    if not len(batch):
        return prepared
    if plan.dialect is POSTGRESQL:
        prepared.encoded = _binary_fields(batch, vectors, plan.binary_types)
        if prepared.encoded is None:
            prepared.encoded = _copy_lines(batch, vectors)
    elif plan.dialect is MYSQL:
        assert plan.literal is not None
        prepared.encoded = _literal_rows(batch, vectors, plan.literal)
    return prepared


def insert_stored_faces(
    db: Database, stored: Sequence[StoredFace] | FaceBatch | PreparedFaces
) -> list[int]:
    """Insert many faces at once; returns their ids, in order. The bulk form of
    :func:`insert_stored_face` with the same rows as a result (each vector checked,
    once, as a batch; each face in its list; face_embeddings rows unless blobs
    only): one binary COPY on PostgreSQL (the text format where a column's type or
    a value asks for it), multi-row INSERTs of up to MULTI_ROW_BYTES on
    MariaDB/MySQL, one prepared INSERT per row on SQLite. A batch prepared
    (:func:`prepare_faces`) under lists that changed since gets the current ones.
    The caller's transaction: a failure leaves nothing of the call behind once it
    rolls back."""
    prepared = (
        stored if isinstance(stored, PreparedFaces) else prepare_faces(stored, write_plan(db))
    )
    if not len(prepared):
        return []
    batch, vectors = prepared.batch, prepared.vectors
    current = lists.layout(db)
    numbers = prepared.numbers
    if current != prepared.plan.current:  # retrained since: the lists of now
        numbers = lists.lists_of_matrix(db, vectors, current)
    if db.dialect is POSTGRESQL:
        ids = _copy_face_rows(db, prepared, numbers)
    elif db.dialect is MYSQL:
        ids = _multi_row_face_rows(db, batch, prepared.encoded, numbers)
    else:
        sql = db.dialect.sql(
            f"INSERT INTO face_meta ({', '.join(_COLUMNS)}, ivf_list)"
            f" VALUES ({db.dialect.params(len(_COLUMNS) + 1)})"
        )
        cursor = db.conn.cursor()
        ids = []
        for row in zip(*_columns(batch, vectors, numbers, _blobs), strict=True):
            cursor.execute(sql, row)
            ids.append(int(cursor.lastrowid))
    if current.embedding_rows:
        insert_many_embedding_rows(db, ids, vectors)
    if current.clustered and numbers is not None:
        _insert_multi_row(
            db,
            "facevec_list_vectors (list_no, face_id, embedding)",
            list(zip(numbers, ids, _blobs(vectors), strict=True)),
        )
    return ids


def _blobs(vectors: np.ndarray) -> list[bytes]:
    width = vectors.shape[1] * 4
    data = vectors.tobytes()
    return [data[at : at + width] for at in range(0, len(data), width)]


def _columns(
    batch: FaceBatch, vectors: np.ndarray, numbers: list[int] | None, embedding: Any
) -> list[list[Any]]:
    """The face_meta columns of a batch (_COLUMNS order, then ivf_list), the
    embedding column as `embedding(vectors)` makes it."""
    return [
        embedding(vectors) if name == "embedding" else batch.column(name) for name in _COLUMNS
    ] + [[None] * len(batch) if numbers is None else numbers]


def _binary_fields(
    batch: FaceBatch, vectors: np.ndarray, types: dict[str, str] | None
) -> list[binary_copy.Encoded] | None:
    """The batch's columns (all but id and ivf_list) as binary COPY fields, or None
    when a column's type or one value asks for the text format."""
    if types is None:
        return None
    encoded = []
    for name in _COLUMNS:
        if name == "embedding":
            encoded.append(binary_copy.vectors_column(name, vectors))
            continue
        column = binary_copy.encode_column(name, batch.values.get(name), types[name], len(batch))
        if column is None:
            return None
        if column.shared != binary_copy.NULL:  # a column NULL in every row is left out
            encoded.append(column)
    return encoded


# PostgreSQL's COPY text format: one line a row, tab between columns, \N for NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_value(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\\\\x" + bytes(value).hex()
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidParameterError(f"cannot store {value!r} in face_meta")
    return str(int(value))


def _copy_column(values: list[Any]) -> list[str]:
    """A column's values as COPY text; text that needs no escape is kept as it is."""
    if values.count(None) == len(values):
        return ["\\N"] * len(values)
    if all(type(value) is str for value in values) and not any(
        c in "".join(values) for c in "\\\t\n\r"
    ):
        return values
    if all(type(value) is int for value in values):
        return list(map(str, values))
    return list(map(_copy_value, values))


def _hex_column(prefix: str, suffix: str, vectors: np.ndarray) -> list[str]:
    """Each vector's float32 bytes as prefix + hex + suffix, hex of one block."""
    text = vectors.tobytes().hex()
    width = 8 * vectors.shape[1]
    return [prefix + text[at : at + width] + suffix for at in range(0, len(text), width)]


def _copy_lines(batch: FaceBatch, vectors: np.ndarray) -> list[str]:
    """Each face's COPY text line of the _COLUMNS (no id, no ivf_list, no newline)."""
    columns = [
        _hex_column("\\\\x", "", vectors)
        if name == "embedding"
        else [_copy_value(value)] * len(batch)
        if not isinstance(value := batch.values.get(name), list)
        else _copy_column(value)
        for name in _COLUMNS
    ]
    return list(map("\t".join, zip(*columns, strict=True)))


def _copy_face_rows(db: Database, prepared: PreparedFaces, numbers: list[int] | None) -> list[int]:
    """One COPY of face_meta rows with ids drawn from its identity sequence first:
    binary (the batch encoded as fields) or text (as lines)."""
    cursor = db.conn.cursor()
    cursor.execute(
        "SELECT nextval(pg_get_serial_sequence('face_meta', 'id')) FROM generate_series(1, %s)",
        (len(prepared),),
    )
    ids = [int(row[0]) for row in cursor.fetchall()]
    types = prepared.plan.binary_types
    if types is not None and isinstance(prepared.encoded[0], binary_copy.Encoded):
        id_column = binary_copy.encode_column("id", ids, types["id"], len(ids))
        lists_column = (
            binary_copy.Encoded("ivf_list", shared=binary_copy.NULL)
            if numbers is None
            else binary_copy.encode_column("ivf_list", numbers, types["ivf_list"], len(ids))
        )
        if id_column is not None and lists_column is not None:
            columns = [id_column, *prepared.encoded]
            if numbers is not None:
                columns.append(lists_column)
            names, data = binary_copy.rows(columns, len(ids))
            with cursor.copy(
                f"COPY face_meta ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
            ) as copy:
                copy.write(data)
            return ids
    encoded = prepared.encoded
    if not isinstance(encoded[0], str):  # ids or lists beyond the columns' binary type
        encoded = _copy_lines(prepared.batch, prepared.vectors)
    marks = ["\\N"] * len(ids) if numbers is None else list(map(str, numbers))
    text = "".join(
        f"{line}\t{mark}\t{face_id}\n"
        for line, mark, face_id in zip(encoded, marks, ids, strict=True)
    )
    with cursor.copy(f"COPY face_meta ({', '.join(_COLUMNS)}, ivf_list, id) FROM STDIN") as copy:
        copy.write(text.encode())
    return ids


_AUTOINC_LOCK_MODE: dict[str, int] = {}


def _literal_rows(
    batch: FaceBatch, vectors: np.ndarray, literal: Callable[[Any], str]
) -> tuple[list[str], list[str]]:
    """(the columns written, each face's row of their SQL literals opened and not
    closed: "(v1, v2, ..."; the write adds ivf_list and the parenthesis). A column
    NULL in every row is left out: the server parses a third of the values."""
    names, columns = [], []
    for name in _COLUMNS:
        value = batch.values.get(name)
        if name == "embedding":
            column = _hex_column("X'", "'", vectors)
        elif not isinstance(value, list):
            if value is None:
                continue
            column = [literal(value)] * len(batch)
        elif value.count(None) == len(value):
            continue
        else:
            column = [literal(item) for item in value]
        names.append(name)
        columns.append(column)
    return names, ["(" + ", ".join(row) for row in zip(*columns, strict=True)]


def _multi_row_face_rows(
    db: Database, batch: FaceBatch, encoded: tuple[list[str], list[str]], numbers: list[int] | None
) -> list[int]:
    """Multi-row INSERTs of face_meta rows. Under innodb_autoinc_lock_mode 0 or 1 a
    multi-row INSERT takes consecutive ids from LAST_INSERT_ID(); under 2 (ids
    interleaved with other writers') each statement's ids are read back by key."""
    if db.name not in _AUTOINC_LOCK_MODE:
        mode = db.scalar("SELECT @@innodb_autoinc_lock_mode")
        _AUTOINC_LOCK_MODE[db.name] = 2 if mode is None else int(mode)
    consecutive = _AUTOINC_LOCK_MODE[db.name] < 2
    ids: list[int] = []
    names, indexes = batch.column("img_name"), batch.column("face_index")
    written, opened = encoded
    if numbers is None:
        rows = [start + ")" for start in opened]
    else:
        rows = [f"{start}, {number})" for start, number in zip(opened, numbers, strict=True)]
        written = written + ["ivf_list"]
    table = f"face_meta ({', '.join(written)})"
    for (start, end), cursor in _insert_rows(db, table, rows):
        if consecutive and cursor.rowcount == end - start:
            first = int(cursor.lastrowid)
            ids.extend(range(first, first + end - start))
            continue
        found = {}
        for part in in_clause_chunks(sorted(set(names[start:end]))):
            for face_id, name, index in db.query(
                "SELECT id, img_name, face_index FROM face_meta"
                f" WHERE img_name IN ({db.dialect.params(len(part))})",
                part,
            ):
                found[(name, int(index))] = int(face_id)
        ids.extend(found[(names[row], int(indexes[row]))] for row in range(start, end))
    return ids


def _insert_rows(
    db: Database, table: str, rows: list[str], most: int = MULTI_ROW_INSERT
) -> list[tuple[tuple[int, int], Any]]:
    """Multi-row INSERTs on MariaDB/MySQL of rows given as SQL text "(v1, v2, ...)",
    up to `most` rows and MULTI_ROW_BYTES each; returns ((first row, end), cursor)
    of each statement."""
    done = []
    start = 0
    limit = _statement_bytes(db)
    while start < len(rows):
        end, size = start, 0
        while end < len(rows) and (
            end == start or (end - start < most and size + len(rows[end]) < limit)
        ):
            size += len(rows[end])
            end += 1
        cursor = db.conn.cursor()
        try:
            cursor.execute(f"INSERT INTO {table} VALUES {', '.join(rows[start:end])}")
        except Exception as err:
            db._raise_if_lost(err)
            raise
        done.append(((start, end), cursor))
        start = end
    return done


def _insert_multi_row(
    db: Database, table: str, rows: Sequence[tuple], most: int = MULTI_ROW_INSERT
) -> None:
    """INSERTs of up to `most` rows (and MULTI_ROW_BYTES) each on MariaDB/MySQL,
    executemany elsewhere."""
    if not rows:
        return
    width = len(rows[0])
    if db.dialect is not MYSQL:
        db.executemany(f"INSERT INTO {table} VALUES ({db.dialect.params(width)})", rows)
        return
    # The statement written out here: PyMySQL's escaping of bound values, in
    # Python, cost more than the server's insert (a vector is X'hex' instead).
    literal = _mysql_literal(db.conn)
    columns = [[literal(value) for value in column] for column in zip(*rows, strict=True)]
    _insert_rows(
        db, table, ["(" + ", ".join(row) + ")" for row in zip(*columns, strict=True)], most
    )


def _mysql_literal(conn: Any) -> Any:
    """The SQL literal of one value on this MariaDB/MySQL connection."""
    from pymysql.constants import SERVER_STATUS
    from pymysql.converters import escape_string

    if conn.server_status & SERVER_STATUS.SERVER_STATUS_NO_BACKSLASH_ESCAPES:
        escape_string = conn.escape  # noqa: F811 (quotes doubled, backslashes kept)
    else:
        plain = escape_string
        escape_string = lambda text: "'" + plain(text) + "'"  # noqa: E731

    def literal(value: Any) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, bytes):
            return "X'" + value.hex() + "'"
        if isinstance(value, str):
            return escape_string(value)
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, float) and math.isfinite(value):
            return repr(value)
        return str(conn.escape(value))

    return literal


def insert_many_embedding_rows(db: Database, face_ids: Sequence[int], vectors: np.ndarray) -> None:
    """The face_embeddings rows of many faces (COPY on PostgreSQL, multi-row INSERTs
    on MariaDB/MySQL): the same values as :func:`insert_embedding_rows`."""
    if not face_ids:
        return
    matrix = np.asarray(vectors, dtype="<f4").reshape(len(face_ids), -1)
    if db.dialect is POSTGRESQL and _binary_embedding_rows(db, face_ids, matrix):
        return
    values = matrix.astype(np.float64).tolist()
    dims = range(matrix.shape[1])
    if db.dialect is POSTGRESQL:
        cursor = db.conn.cursor()
        with cursor.copy("COPY face_embeddings (face_id, dimension, value) FROM STDIN") as copy:
            for face_id, vector in zip(face_ids, values, strict=True):
                for dimension, value in zip(dims, vector, strict=True):
                    copy.write_row((face_id, dimension, value))
        return
    _insert_multi_row(
        db,
        "face_embeddings (face_id, dimension, value)",
        [
            (face_id, dimension, value)
            for face_id, vector in zip(face_ids, values, strict=True)
            for dimension, value in zip(dims, vector, strict=True)
        ],
        most=10 * MULTI_ROW_INSERT,
    )


def _binary_embedding_rows(db: Database, face_ids: Sequence[int], matrix: np.ndarray) -> bool:
    """face_embeddings rows as one binary COPY whose fields are all fixed-width: one
    numpy record array. False (nothing written) where a column's type or an id
    does not fit it."""
    types = _binary_types(db, "face_embeddings")
    if types is None or any(kind not in binary_copy.FIXED for kind in types.values()):
        return False
    dims = matrix.shape[1]
    ids = np.repeat(np.asarray(face_ids, dtype=np.int64), dims)
    columns = {
        "face_id": ids,
        "dimension": np.tile(np.arange(dims, dtype=np.int64), len(face_ids)),
        "value": matrix.ravel().astype(np.float64),  # float32 widened exactly, as the rows
    }
    encoded = []
    for name, values in columns.items():
        code = np.dtype(binary_copy.FIXED[types[name]])
        if code.kind == "i" and len(values) and int(values.max()) > np.iinfo(code).max:
            return False
        encoded.append(binary_copy.Encoded(name, fixed=values.astype(code)))
    names, data = binary_copy.rows(encoded, len(ids))
    cursor = db.conn.cursor()
    with cursor.copy(
        f"COPY face_embeddings ({', '.join(names)}) FROM STDIN (FORMAT BINARY)"
    ) as copy:
        copy.write(data)
    return True


def ids_of_images(db: Database, img_names: Sequence[str]) -> list[int]:
    """The ids of every face of these images."""
    found: list[int] = []
    if db.dialect is POSTGRESQL:  # one array parameter: no statement of 500 markers
        for chunk in in_clause_chunks(list(img_names), 10000):
            rows = db.query("SELECT id FROM face_meta WHERE img_name = ANY({p})", (list(chunk),))
            found += [int(row[0]) for row in rows]
        return found
    for chunk in in_clause_chunks(list(img_names)):
        found += [
            int(row[0])
            for row in db.query(
                f"SELECT id FROM face_meta WHERE img_name IN ({db.dialect.params(len(chunk))})",
                chunk,
            )
        ]
    return found


def img_name_key(db: Database) -> Callable[[str], str] | None:
    """What of an img_name the unique key (img_name, face_index) compares: two names
    with equal results may be one key. SQLite and PostgreSQL: the text itself;
    MariaDB/MySQL under a binary collation: the text without trailing spaces (PAD
    SPACE); None where the collation is another (case- or accent-blind)."""
    if db.dialect is not MYSQL:
        return str
    collation = db.scalar(
        "SELECT collation_name FROM information_schema.columns WHERE table_schema ="
        " DATABASE() AND table_name = 'face_meta' AND column_name = 'img_name'"
    )
    if collation is None or not str(collation).endswith("_bin"):
        return None
    return lambda name: name.rstrip(" ")


def ids_of_faces(db: Database, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
    """The id stored under each of these (img_name, face_index), where there is one."""
    wanted = set(keys)
    found: dict[tuple[str, int], int] = {}
    for chunk in in_clause_chunks(sorted({name for name, _ in wanted})):
        for face_id, name, index in db.query(
            "SELECT id, img_name, face_index FROM face_meta"
            f" WHERE img_name IN ({db.dialect.params(len(chunk))})",
            chunk,
        ):
            if (name, int(index)) in wanted:
                found[(name, int(index))] = int(face_id)
    return found


def delete_faces(db: Database, face_ids: Sequence[int]) -> None:
    """Remove faces (with their rows in every table that names them) by id."""
    _delete_faces(db, face_ids)


def replace_stored_images(
    db: Database, images: Mapping[str, Sequence[StoredFace]], replacing: bool = True
) -> list[int]:
    """Make each image's faces the only ones stored for it, all in one bulk insert
    (:func:`replace_stored_image` for many images); returns the new ids.
    `replacing=False`: the caller knows none of these images is stored."""
    if replacing:
        _delete_faces(db, ids_of_images(db, list(images)))
    return insert_stored_faces(db, [face for stored in images.values() for face in stored])


def replace_face_batch(
    db: Database,
    batch: FaceBatch | PreparedFaces,
    replacing: bool = True,
    img_names: Sequence[str] | None = None,
) -> list[int]:
    """:func:`replace_stored_images` of a batch (or a prepared one): its images'
    faces are the batch's (every face of an image in it, each image once), and
    images of `img_names` it holds no face of have none."""
    if replacing:
        faces = batch.batch if isinstance(batch, PreparedFaces) else batch
        names = set(faces.column("img_name")) | set(img_names or ())
        _delete_faces(db, ids_of_images(db, sorted(names)))
    return insert_stored_faces(db, batch)


# Reading -----------------------------------------------------------------------


def image_names(db: Database) -> list[str]:
    return [row[0] for row in db.query("SELECT DISTINCT img_name FROM face_meta ORDER BY img_name")]


def stored_faces(db: Database, img_name: str) -> list[StoredFace]:
    rows = db.query(
        f"SELECT {', '.join(_COLUMNS)} FROM face_meta WHERE img_name = {{p}} ORDER BY face_index",
        (img_name,),
    )
    return [StoredFace(*map(_plain, row)) for row in rows]


def _stored(row: Sequence[Any]) -> StoredFace:
    # The blobs (embedding, face_image) are bytes from every driver facevec opens.
    if type(row[3]) is bytes and (row[15] is None or type(row[15]) is bytes):
        return StoredFace(*row)
    return StoredFace(*map(_plain, row))


def stored_faces_of_range(db: Database, img_names: Sequence[str]) -> dict[str, list[StoredFace]]:
    """:func:`stored_faces_of` of consecutive names of :func:`image_names` (in its
    order): one index range scan from the first to the last instead of IN lists."""
    found: dict[str, list[StoredFace]] = {str(name): [] for name in img_names}
    if not img_names:
        return found
    for row in db.query(
        f"SELECT {', '.join(_COLUMNS)} FROM face_meta"
        " WHERE img_name >= {p} AND img_name <= {p}",
        (img_names[0], img_names[-1]),
    ):
        face = _stored(row)
        if face.img_name in found:  # not an image stored since the names were read
            found[face.img_name].append(face)
    for stored in found.values():
        stored.sort(key=lambda face: face.face_index)
    return found


def face_columns_of_range(db: Database, img_names: Sequence[str]) -> dict[str, list[Any]]:
    """The faces of consecutive names of :func:`image_names` as columns (each of
    STORED_FACE_COLUMNS a list, the embeddings as stored blobs), by the order of
    `img_names` then face index: :func:`stored_faces_of_range` without an object
    per face."""
    if not img_names:
        return {name: [] for name in _COLUMNS}
    rows = db.query(
        f"SELECT {', '.join(_COLUMNS)} FROM face_meta"
        " WHERE img_name >= {p} AND img_name <= {p}",
        (img_names[0], img_names[-1]),
    )
    position = {str(name): at for at, name in enumerate(img_names)}
    name_at, index_at = _COLUMNS.index("img_name"), _COLUMNS.index("face_index")
    # Not an image stored since the names were read: left out.
    keyed = [(position.get(row[name_at]), row[index_at], at) for at, row in enumerate(rows)]
    order = [at for _, _, at in sorted(key for key in keyed if key[0] is not None)]
    if not order:
        return {name: [] for name in _COLUMNS}
    found = {
        name: list(column)
        for name, column in zip(
            _COLUMNS, zip(*[rows[at] for at in order], strict=True), strict=True
        )
    }
    for name in ("embedding", "face_image"):  # bytes from every driver facevec opens
        if any(type(value) is not bytes and value is not None for value in found[name]):
            found[name] = list(map(_plain, found[name]))
    return found


def stored_faces_of(db: Database, img_names: Sequence[str]) -> dict[str, list[StoredFace]]:
    """The stored faces of many images (by face index), a few queries in all."""
    found: dict[str, list[StoredFace]] = {str(name): [] for name in img_names}
    for chunk in in_clause_chunks(list(img_names)):
        for row in db.query(
            f"SELECT {', '.join(_COLUMNS)} FROM face_meta"
            f" WHERE img_name IN ({db.dialect.params(len(chunk))})",
            chunk,
        ):
            face = _stored(row)
            found[face.img_name].append(face)
    for stored in found.values():
        stored.sort(key=lambda face: face.face_index)
    return found


def locations(db: Database, face_ids: Sequence[int]) -> dict[int, FaceLocation]:
    """Where each of `face_ids` is; ids no longer stored are left out."""
    found: dict[int, FaceLocation] = {}
    for chunk in in_clause_chunks(face_ids):
        for row in db.query(
            "SELECT id, img_name, identity, face_index, facial_area_x, facial_area_y,"
            " facial_area_w, facial_area_h FROM face_meta"
            f" WHERE id IN ({db.dialect.params(len(chunk))})",
            chunk,
        ):
            found[int(row[0])] = FaceLocation(int(row[0]), *row[1:])
    return found


def embeddings(db: Database) -> tuple[list[int], list[bytes]]:
    """(ids, float32 blobs) of every stored face, by id."""
    rows = db.query("SELECT id, embedding FROM face_meta ORDER BY id")
    return [int(row[0]) for row in rows], [bytes(row[1]) for row in rows]


def iter_embeddings(db: Database, batch_size: int = 10000) -> Iterator[tuple[list[int], bytes]]:
    """(ids, concatenated float32 blobs) of every stored face, in id order, in batches."""
    last = None
    while True:
        where, params = ("", []) if last is None else (" WHERE id > {p}", [last])
        limit, limit_params = db.dialect.limit(batch_size)
        rows = db.query(
            f"SELECT id, embedding FROM face_meta{where} ORDER BY id{limit}",
            params + limit_params,
        )
        if not rows:
            return
        last = int(rows[-1][0])
        yield [int(row[0]) for row in rows], b"".join(bytes(row[1]) for row in rows)


def counts(db: Database) -> dict[str, int]:
    """faces, images and identities stored."""
    row = db.execute(
        "SELECT COUNT(*), COUNT(DISTINCT img_name), COUNT(DISTINCT identity) FROM face_meta"
    ).fetchone()
    return {"faces": int(row[0]), "images": int(row[1]), "identities": int(row[2])}


def count(db: Database) -> int:
    return int(db.scalar("SELECT COUNT(*) FROM face_meta"))


def face_crop(db: Database, face_id: int) -> bytes | None:
    """The stored crop (PNG) of one face; None if there is no such face or no crop."""
    return _plain(db.scalar("SELECT face_image FROM face_meta WHERE id = {p}", (int(face_id),)))


@dataclass(frozen=True)
class IdentityCount:
    """One identity (None: faces without one) and how much of the gallery it holds."""

    identity: str | None
    faces: int
    images: int


def identity_counts(db: Database) -> list[IdentityCount]:
    """Every identity with its counts, most faces first (faces without one last)."""
    rows = db.query(
        "SELECT identity, COUNT(*), COUNT(DISTINCT img_name) FROM face_meta GROUP BY identity"
    )
    found = [IdentityCount(row[0], int(row[1]), int(row[2])) for row in rows]
    return sorted(found, key=lambda c: (c.identity is None, -c.faces, c.identity or ""))


def faces_of_identity(
    db: Database, identity: str | None, limit: int | None = None, offset: int = 0
) -> list[FaceLocation]:
    """The faces of one identity (None: those without one), by photo and face index."""
    where = "identity IS NULL" if identity is None else "identity = {p}"
    params: list[Any] = [] if identity is None else [identity]
    clause, limit_params = db.dialect.limit(limit)
    if offset:
        if not clause:  # OFFSET needs a LIMIT on SQLite and MariaDB
            clause, limit_params = db.dialect.limit(2**62)
        clause += " OFFSET {p}"
        limit_params.append(int(offset))
    rows = db.query(
        "SELECT id, img_name, identity, face_index, facial_area_x, facial_area_y,"
        f" facial_area_w, facial_area_h FROM face_meta WHERE {where}"
        f" ORDER BY img_name, face_index{clause}",
        params + limit_params,
    )
    return [FaceLocation(int(row[0]), *row[1:]) for row in rows]


# Reading in id ranges (export, and the partitions of a distributed read) ----------

#: The columns of a gallery row as a search result shows it, embedding last.
GALLERY_COLUMNS = (
    "id",
    "img_name",
    "identity",
    "face_index",
    "facial_area_x",
    "facial_area_y",
    "facial_area_w",
    "facial_area_h",
    "embedding",
)


def id_span(db: Database) -> tuple[int, int, int] | None:
    """(lowest id, highest id, number of faces), or None when there is no face."""
    row = db.execute("SELECT MIN(id), MAX(id), COUNT(*) FROM face_meta").fetchone()
    if row is None or row[0] is None:
        return None
    return int(row[0]), int(row[1]), int(row[2])


def iter_id_range(
    db: Database,
    low: int,
    high: int,
    columns: Sequence[str] = GALLERY_COLUMNS,
    batch_size: int = 10000,
) -> Iterator[list[tuple]]:
    """Rows (the given face_meta columns) with low <= id < high, by id, in batches.

    Each batch is one keyset-paginated query, so a long read holds no cursor
    open between batches and every partition of a gallery costs one index range scan.
    """
    known = set(GALLERY_COLUMNS) | set(_COLUMNS)
    unknown = [column for column in columns if column not in known]
    if unknown:  # column names go into the statement: only face_meta's own
        raise InvalidParameterError(f"not a face_meta column: {', '.join(unknown)}")
    start = low
    while start < high:
        limit, limit_params = db.dialect.limit(batch_size)
        rows = db.query(
            f"SELECT id, {', '.join(columns)} FROM face_meta WHERE id >= {{p}} AND id < {{p}}"
            f" ORDER BY id{limit}",
            [start, high] + limit_params,
        )
        if rows:
            yield [tuple(_plain(value) for value in row[1:]) for row in rows]
        if len(rows) < batch_size:
            return
        start = int(rows[-1][0]) + 1


def iter_stored_faces(
    db: Database, batch_size: int = 2000
) -> Iterator[list[tuple[int, StoredFace]]]:
    """(id, StoredFace) of every face, by id, in batches: a whole gallery, streamed."""
    span = id_span(db)
    if span is None:
        return
    for rows in iter_id_range(db, span[0], span[1] + 1, ("id",) + _COLUMNS, batch_size):
        yield [(int(row[0]), StoredFace(*row[1:])) for row in rows]


def replace_stored_face(db: Database, face: StoredFace) -> tuple[int, list[int]]:
    """Make `face` the one stored under its (img_name, face_index); returns its new
    id and the ids of the faces it replaced.

    Keyed by face rather than by image, so faces of one image may arrive in any
    order and in several batches, and a rerun replaces instead of duplicating.
    """
    ids = [
        int(row[0])
        for row in db.query(
            "SELECT id FROM face_meta WHERE img_name = {p} AND face_index = {p}",
            (face.img_name, face.face_index),
        )
    ]
    _delete_faces(db, ids)
    return insert_stored_face(db, face), ids


STORED_FACE_COLUMNS = _COLUMNS
