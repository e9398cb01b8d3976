"""Move a gallery: between databases, or to and from Parquet files.

- ``copy_gallery``: e.g. from a SQLite file to a PostgreSQL server. Every face keeps
  its stored vector, metadata, crop and ledger row; only face ids change (the
  target assigns its own). Vectors are copied, never re-embedded.
- ``export_parquet`` / ``import_parquet``: one row per face, so a gallery moves
  between facevec and Spark, DuckDB, pandas or any Arrow tool (pyarrow only).
"""

from __future__ import annotations

import contextlib
import json
import os
import warnings
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import knn
from ._version import __version__
from .errors import (
    DatabaseNotFoundError,
    GalleryFormatError,
    InvalidParameterError,
    ModelMismatchError,
    SkippedFacesWarning,
)
from .ingest import sync_people
from .parquet_reading import (
    DICTIONARY_COLUMNS,
    PARQUET_METADATA_KEY,
    RowBudget,
    check_footer,
    facevec_metadata,
    open_file,
    parquet_files,
    row_batches,
)
from .people import parquet_people
from .people import transfer as people_transfer
from .storage import faces, ledger, schema
from .storage import people as store_people
from .storage.database import Database, DbArg, identity, open_database
from .storage.dialects import SQLITE
from .storage.write_behind import WriteBehind
from .vector_columns import float_list_column, matrix_from_arrow, matrix_from_blobs, require_pyarrow
from .vectors import blob_problems, check_vectors


def copy_gallery(
    source: DbArg,
    target: DbArg,
    batch_size: int = 2000,
    progress: bool = False,
    people: bool = True,
) -> dict[str, int]:
    """Copy every face (both representations) and ledger row of `source` into `target`.

    The target gets the schema on first use and must hold the same model's vectors
    or none; it must not be the source itself (the same file by any path, the same
    server database), which is refused before anything is written. Faces of images
    already in the target are replaced, so a rerun after an interruption finishes
    the copy without duplicates. Each batch of `batch_size` images is one
    transaction and one bulk insert (COPY on PostgreSQL, multi-row INSERTs on
    MariaDB/MySQL): a failure leaves the target as it was before that batch, and
    a rerun finishes the copy. A source face whose vector facevec would not store
    (an older version or another program wrote it) is left out and named
    (SkippedFacesWarning). A progress bar with `progress`. Returns {"faces": n,
    "images": n, "ledger": n, "skipped": n, "people": n}.

    The people come along (facevec.people.transfer): into a target without people
    work, or holding exactly the same people (a rerun); any other target is
    refused before anything is written. The edit history stays behind. With
    `people` False, the faces only: folder people are made again in the target.
    """
    copied = {"faces": 0, "images": 0, "ledger": 0, "skipped": 0}
    skipped: list[str] = []
    with open_database(source, create=False) as src:
        collection = schema.get_collection(src)
        if collection is None:
            raise DatabaseNotFoundError(f"{src.name} holds no faces to copy")
        with open_database(target) as dst:
            if identity(dst) == identity(src):
                raise InvalidParameterError(
                    f"{dst.name} is the gallery {src.name} itself: copying a gallery onto "
                    "itself would replace every face (and their people) with itself; "
                    "nothing was written"
                )
            _copy_into(src, dst, collection, batch_size, copied, skipped, progress, people)
    if skipped:
        warnings.warn(
            f"{len(skipped)} faces of {source} were not copied, their vectors being "
            f"unstorable: {'; '.join(skipped[:5])}" + (" ..." if len(skipped) > 5 else ""),
            SkippedFacesWarning,
            stacklevel=2,
        )
    return copied


def _copy_into(
    src: Database,
    dst: Database,
    collection: schema.Collection,
    batch_size: int,
    copied: dict[str, int],
    skipped: list[str],
    progress: bool = False,
    with_people: bool = True,
) -> None:
    _refuse_another_model(dst, collection.model_name, collection.dimensions, src.name)
    people, rerun = people_transfer.people_to_carry(src, dst, collection.model_name, with_people)
    schema.create_schema(dst)
    schema.ensure_collection(
        dst, collection.model_name, collection.dimensions, collection.detector_backend
    )
    names = faces.image_names(src)
    # A target empty at the start has none of these images (each is in one batch).
    replacing = faces.id_span(dst) is not None
    plan = faces.write_plan(dst)
    dst.commit()  # the plan's reads: each batch is then a transaction of its own
    # The source's next batch is read and encoded while the target writes this one.
    with (
        _progress(len(names), "image", progress) as bar,
        WriteBehind(threaded=dst.dialect is not SQLITE) as writes,
    ):
        for start in range(0, len(names), batch_size):
            chunk = names[start : start + batch_size]
            columns = faces.face_columns_of_range(src, chunk)
            blobs = columns.pop("embedding")
            found = blob_problems(blobs, collection.dimensions)
            if found:  # one look at the whole batch; the bad faces named and left out
                names, indexes = columns["img_name"], columns["face_index"]
                skipped += [f"{names[p.row]!r} face {indexes[p.row]} {p.reason}" for p in found]
                bad = {p.row for p in found}
                keep = [row for row in range(len(blobs)) if row not in bad]
                blobs = [blobs[row] for row in keep]
                columns = {name: [column[row] for row in keep] for name, column in columns.items()}
            vectors = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(
                len(blobs), collection.dimensions
            )
            prepared = faces.prepare_faces(faces.FaceBatch(vectors, columns), plan)
            writes.submit(
                partial(_write_batch, dst, prepared, chunk, replacing),
                partial(_batch_written, copied, bar, len(blobs), len(found), len(chunk)),
            )
    entries = ledger.entries(src)
    with dst.transaction():
        for entry in entries:
            ledger.replace(dst, entry)
    copied["ledger"] = len(entries)
    copied["people"] = people_transfer.carry_people(src, dst, people, rerun)["people"]
    # Face ids changed: folder people are rebuilt (where the source has them), not copied.
    from_folders = store_people.has_people(src) and store_people.has_folder_people(src)
    sync_people(dst, True if from_folders else None)
    knn.refresh_gallery_index(dst)


def _write_batch(
    dst: Database, prepared: faces.PreparedFaces, names: list[str], replacing: bool
) -> None:
    """One batch of a copy, one transaction: the images of `names` hold its faces."""
    with dst.transaction():
        faces.replace_face_batch(dst, prepared, replacing, names)


def _batch_written(
    copied: dict[str, int], bar: Any, stored: int, skipped: int, images: int, _: Any
) -> None:
    copied["faces"] += stored
    copied["skipped"] += skipped
    copied["images"] += images
    bar.update(images)


# Parquet: one row per face, for Spark, DuckDB, pandas and any Arrow tool ----------

_PART = "part-{:05d}.parquet"


def _parquet_schema(dimensions: int, metadata: dict[str, Any]) -> Any:
    pa = require_pyarrow()
    integer = pa.int32()
    return pa.schema(
        [
            ("id", pa.int64()),
            ("img_name", pa.string()),
            ("identity", pa.string()),
            ("face_index", integer),
            ("embedding", pa.list_(pa.float32(), dimensions)),
            ("model_name", pa.string()),
            ("detector_backend", pa.string()),
            ("facial_area_x", integer),
            ("facial_area_y", integer),
            ("facial_area_w", integer),
            ("facial_area_h", integer),
            ("left_eye_x", integer),
            ("left_eye_y", integer),
            ("right_eye_x", integer),
            ("right_eye_y", integer),
            ("face_confidence", pa.float64()),
            ("face_image", pa.binary()),
            ("source_sha256", pa.string()),
            ("created_at", pa.string()),
        ],
        metadata={PARQUET_METADATA_KEY: json.dumps(metadata).encode()},
    )


def _batch_table(schema: Any, rows: list[tuple[int, faces.StoredFace]]) -> Any:
    pa = require_pyarrow()
    matrix = matrix_from_blobs([face.embedding for _, face in rows])
    columns: dict[str, Any] = {"id": pa.array([face_id for face_id, _ in rows], pa.int64())}
    for name in faces.STORED_FACE_COLUMNS:
        if name == "embedding":
            columns[name] = float_list_column(matrix)
        else:
            values = [getattr(face, name) for _, face in rows]
            columns[name] = pa.array(values, type=schema.field(name).type)
    return pa.Table.from_pydict(columns, schema=schema)


def parquet_metadata(collection: schema.Collection) -> dict[str, Any]:
    return {
        "model_name": collection.model_name,
        "dimensions": collection.dimensions,
        "detector_backend": collection.detector_backend,
        "collection": collection.name,
        "schema_version": collection.schema_version,
        "facevec_version": __version__,
    }


def export_parquet(
    db: DbArg,
    folder: str | os.PathLike[str],
    rows_per_file: int = 1_000_000,
    row_group_rows: int = 65_536,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, int]:
    """Write every face of `db` as Parquet files in `folder` (one row per face).

    Columns: id (the face's id in `db`), the face_meta columns, and ``embedding``
    as ``float[dimensions]`` (a fixed-size float32 list); the model, dimensions and
    detector are in each file's metadata under the key ``facevec`` (JSON). Files
    are ``part-00000.parquet``, ... of at most `rows_per_file` rows, each written
    under a temporary name and renamed when complete. A folder already holding
    Parquet files is refused unless `overwrite`. The people go to
    ``_people/people.parquet`` (facevec.people.parquet_people). Returns {"faces": n,
    "files": n, "people": n}.
    """
    _parquet_module()  # a missing pyarrow is said before anything is written
    for name, value in (("rows_per_file", rows_per_file), ("row_group_rows", row_group_rows)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidParameterError(f"{name} must be a positive whole number, not {value!r}")
    target = Path(folder)
    if target.exists() and not target.is_dir():
        raise GalleryFormatError(f"{target} exists and is not a folder")
    with open_database(db, create=False) as src:
        collection = schema.get_collection(src)
        if collection is None:
            raise DatabaseNotFoundError(f"{src.name} holds no faces to export")
        target.mkdir(parents=True, exist_ok=True)
        existing = sorted(target.glob("*.parquet"))
        if existing and not overwrite:
            raise GalleryFormatError(
                f"{target} already holds {len(existing)} Parquet files; "
                "choose an empty folder or overwrite"
            )
        for path in existing:
            path.unlink()
        table_schema = _parquet_schema(collection.dimensions, parquet_metadata(collection))
        span = faces.id_span(src)
        parts = _PartWriter(target, table_schema, rows_per_file, row_group_rows)
        exported = 0
        with _progress(span[2] if span else 0, "faces", progress) as bar:
            for rows in faces.iter_stored_faces(src):
                parts.add(rows)
                exported += len(rows)
                bar.update(len(rows))
        files = parts.close()
        people = people_transfer.read_people(src)
        people = people_transfer.check_people(people, src.name, collection.model_name)
        if people_transfer.has_people(people) or people["people_checked"]:
            parquet_people.write_people_file(people, target)
        else:  # an earlier export's, overwritten
            parquet_people.remove_people_file(target)
    return {"faces": exported, "files": files, "people": len(people["person"])}


class _PartWriter:
    """part-NNNNN.parquet files of at most rows_per_file rows, in row groups of
    row_group_rows; each is written under a hidden name and renamed when complete,
    so a reader never sees half a file."""

    def __init__(self, folder: Path, schema: Any, rows_per_file: int, row_group_rows: int):
        self.folder, self.schema = folder, schema
        self.rows_per_file, self.row_group_rows = rows_per_file, row_group_rows
        self.pending: list[tuple[int, faces.StoredFace]] = []
        self.writer: Any = None
        self.in_file = 0
        self.files = 0

    def _temporary(self) -> Path:
        return self.folder / ("." + _PART.format(self.files) + ".tmp")

    def add(self, rows: list[tuple[int, faces.StoredFace]]) -> None:
        for row in rows:
            self.pending.append(row)
            self.in_file += 1
            if len(self.pending) >= self.row_group_rows:
                self._write_row_group()
            if self.in_file >= self.rows_per_file:
                self._finish_file()

    def _write_row_group(self) -> None:
        if not self.pending:
            return
        if self.writer is None:
            # A CRC on every page: an import finds a flipped byte instead of storing it.
            self.writer = _parquet_module().ParquetWriter(
                self._temporary(), self.schema, write_page_checksum=True
            )
        table = _batch_table(self.schema, self.pending)
        self.writer.write_table(table, row_group_size=len(self.pending))
        self.pending.clear()

    def _finish_file(self) -> None:
        self._write_row_group()
        if self.writer is not None:
            self.writer.close()
            self._temporary().rename(self.folder / _PART.format(self.files))
            self.files += 1
        self.writer, self.in_file = None, 0

    def close(self) -> int:
        """Finish the last file; returns the number of files written."""
        self._finish_file()
        if self.files == 0:  # an empty gallery still says which model it holds
            _parquet_module().write_table(
                self.schema.empty_table(), self.folder / _PART.format(0), write_page_checksum=True
            )
            self.files = 1
        return self.files


def _parquet_module() -> Any:
    require_pyarrow()
    import pyarrow.parquet as pq

    return pq


def read_parquet_model(folder: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(pyarrow dataset, facevec metadata or {}) of a folder (or file) of Parquet;
    every file's footer and metadata checked first (facevec.parquet_reading)."""
    require_pyarrow()
    import pyarrow.dataset as ds

    files = parquet_files(folder)
    metadata = _gallery_metadata(folder, [(path, open_file(path)) for path in files])
    try:
        dataset = ds.dataset([str(path) for path in files], format="parquet")
    except Exception as err:  # pyarrow's ArrowInvalid: mixed schemas
        raise GalleryFormatError(f"cannot read {folder} as Parquet: {err}") from None
    missing = [c for c in ("img_name", "face_index", "embedding") if c not in dataset.schema.names]
    if missing:
        raise GalleryFormatError(f"{folder} lacks the column(s) {', '.join(missing)}")
    return dataset, metadata


def _gallery_metadata(folder: Any, opened: list[tuple[Path, Any]]) -> dict[str, Any]:
    """The files' facevec metadata, which must agree on the model; footers checked."""
    metadata: dict[str, Any] = {}
    for path, parquet in opened:
        check_footer(parquet, path)
        found = facevec_metadata(parquet, path)
        if not found:
            continue
        if metadata and (found.get("model_name"), found.get("dimensions")) != (
            metadata.get("model_name"),
            metadata.get("dimensions"),
        ):
            raise ModelMismatchError(
                f"{folder} mixes {metadata.get('model_name')} ({metadata.get('dimensions')} "
                f"dimensions) and {found.get('model_name')} ({found.get('dimensions')} "
                "dimensions) files"
            )
        metadata = metadata or found
    return metadata


# What each column of an imported file must hold, by the pyarrow.types test that says so.
_TEXT = ("is_string", "is_large_string")
_COLUMN_TYPES = {
    "img_name": _TEXT,
    "identity": _TEXT,
    "model_name": _TEXT,
    "detector_backend": _TEXT,
    "source_sha256": _TEXT,
    "created_at": _TEXT,
    "face_image": ("is_binary", "is_large_binary"),
    "face_confidence": ("is_floating", "is_integer"),
    **{
        name: ("is_integer",)
        for name in faces.STORED_FACE_COLUMNS
        if name in ("face_index",) or name.startswith(("facial_area_", "left_eye_", "right_eye_"))
    },
}


def _check_columns(arrow_schema: Any, path: Path) -> None:
    import pyarrow.types as types

    missing = [c for c in ("img_name", "face_index", "embedding") if c not in arrow_schema.names]
    if missing:
        raise GalleryFormatError(f"{path} lacks the column(s) {', '.join(missing)}")
    for name, tests in _COLUMN_TYPES.items():
        if name not in arrow_schema.names:
            continue
        kind = arrow_schema.field(name).type
        if types.is_dictionary(kind):
            kind = kind.value_type
        if not any(getattr(types, test)(kind) for test in tests):
            raise GalleryFormatError(
                f"{path}: column {name} must be {tests[0].removeprefix('is_')}, found {kind}"
            )


def import_parquet(
    folder: str | os.PathLike[str],
    db: DbArg,
    model_name: str | None = None,
    detector_backend: str | None = None,
    batch_size: int = 500,
    progress: bool = True,
    people: bool = True,
) -> dict[str, int]:
    """Store the faces of a Parquet gallery (``export_parquet``'s, or any with columns
    img_name, face_index, embedding) in `db`; vectors are stored, never re-embedded.

    The model comes from the files' metadata, else their model_name column, else
    `model_name`; `db` must hold that model's vectors or none. The import is one
    transaction: any error (a bad vector, a crop that does not decode, a damaged or
    forged file) leaves `db` as it was. Every file's footer is checked before a row
    is read, rows are read a batch at a time, page CRCs are verified where the file
    has them, every vector passes the check of ``facevec.vectors`` and every crop
    must decode. A face already stored under the same (img_name, face_index) is
    replaced (a rerun imports again without duplicates); two rows of the import
    with the same (img_name, face_index) are refused. Ids are the target's own.
    The people of ``_people/people.parquet`` (an export's) are stored with the faces,
    checked first; a `db` holding other people is refused (facevec.people.transfer);
    with `people` False they are left out.
    Returns {"faces": n stored, "replaced": n of them that replaced a stored face,
    "people": n}.
    """
    files = parquet_files(folder)
    opened = [(path, open_file(path, read_dictionary=_dictionary_columns(path))) for path in files]
    for path, parquet in opened:
        _check_columns(parquet.schema_arrow, path)
    metadata = _gallery_metadata(folder, opened)
    people_rows = parquet_people.read_people_file(folder) if people else None
    model = metadata.get("model_name") or model_name
    detector = metadata.get("detector_backend") or detector_backend
    if model is None:
        model = _model_column(opened, folder, batch_size)
    if model is None:
        raise GalleryFormatError(
            f"{folder} does not say which model its vectors come from; give the model name"
        )
    dims = metadata.get("dimensions") or _fixed_dimensions(opened)
    for path, parquet in opened:
        check_footer(parquet, path, 4 * dims if dims else 0)
    total = sum(parquet.metadata.num_rows for _, parquet in opened)
    counts = {"faces": 0, "replaced": 0, "people": 0}
    where = str(parquet_people.people_file(folder))
    if people_rows is not None:
        people_rows = people_transfer.check_people(people_rows, where, model)
        people_transfer.refuse_names_one_on_a_server(people_rows, where)
    with open_database(db) as dst:
        _refuse_another_model(dst, model, dims, str(folder))
        rerun = people_rows is not None and people_transfer.has_people(people_rows)
        rerun = rerun and people_transfer.refuse_unless_free(dst, people_rows, where)
        schema.create_schema(dst)
        store_people.upgrade(dst)
        with dst.transaction(), _progress(total, "faces", progress) as bar:
            _import_rows(dst, opened, model, detector, dims, batch_size, counts, bar)
            if people_rows is not None and people_transfer.has_people(people_rows):
                carried = people_transfer.store_people(dst, people_rows, where, False, rerun)
                counts["people"] = carried["people"]
            if people_rows is not None:
                people_transfer.store_people_checked(dst, people_rows)
            store_people.sync_folders(dst)  # folders that are people in dst
        knn.refresh_gallery_index(dst)
    return counts


def _refuse_another_model(dst: Database, model: str, dims: int | None, source: str) -> None:
    """Before anything else is checked or written: a target holding another model's
    vectors is refused, naming both models (not its people, nor a --model to use)."""
    held = schema.get_collection(dst) if schema.has_schema(dst) else None
    if held is not None and (held.model_name != model or (dims and held.dimensions != dims)):
        size = f" ({dims} dimensions)" if dims else ""
        raise ModelMismatchError(
            f"{dst.name} holds {held.model_name} vectors ({held.dimensions} dimensions) and "
            f"{source} {model} vectors{size}: a gallery goes only into one of its own "
            "model or a new database; nothing was written"
        )


def _dictionary_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
    except Exception as err:
        raise GalleryFormatError(f"cannot read {path} as Parquet: {err}") from None
    return [name for name in DICTIONARY_COLUMNS if name in names]


def _fixed_dimensions(opened: list[tuple[Path, Any]]) -> int | None:
    import pyarrow.types as types

    kind = opened[0][1].schema_arrow.field("embedding").type
    return kind.list_size if types.is_fixed_size_list(kind) else None


def _model_column(opened: list[tuple[Path, Any]], folder: Any, batch_size: int) -> str | None:
    """The one model named by the files' model_name column (read a batch at a time)."""
    found: set[str] = set()
    for path, parquet in opened:
        if "model_name" not in parquet.schema_arrow.names:
            continue
        for _, batch in row_batches(parquet, path, ["model_name"], batch_size):
            found.update(v for v in batch.column(0).unique().to_pylist() if v is not None)
            if len(found) > 1:
                raise ModelMismatchError(
                    f"{folder} mixes vectors of models {', '.join(sorted(found))}"
                )
    return next(iter(found), None)


def _import_rows(
    dst: Database,
    opened: list[tuple[Path, Any]],
    model: str,
    detector: str | None,
    dims: int | None,
    batch_size: int,
    counts: dict[str, int],
    bar: Any,
) -> None:
    """Every row of every file into `dst`, inside the caller's transaction."""
    span = faces.id_span(dst)
    before = span[1] if span else 0  # ids above: faces of this import
    # Into a gallery empty at the start, a face is stored already only if this import
    # stored it: the hashes of the keys imported so far, as the database compares them,
    # say when to ask the database (where that comparison is unknown: every batch).
    same_key = faces.img_name_key(dst) if span is None else None
    imported: set[int] | None = None if same_key is None else set()
    collection = (
        schema.ensure_collection(dst, model, dims, detector, in_transaction=True) if dims else None
    )
    plan: faces.WritePlan | None = None
    # Each batch is decoded and checked here while the one before it is written.
    with WriteBehind(threaded=dst.dialect is not SQLITE) as writes:
        for path, parquet in opened:
            budget = RowBudget.of(path)
            columns = [c for c in faces.STORED_FACE_COLUMNS if c in parquet.schema_arrow.names]
            for first, batch in row_batches(parquet, path, columns, batch_size):
                if batch.num_rows == 0:
                    continue
                where = f"{path.name} rows {first} to {first + batch.num_rows - 1}"
                try:
                    values = matrix_from_arrow(batch.column("embedding"), exact=True)
                except GalleryFormatError as err:
                    raise GalleryFormatError(f"{where}: {err}") from None
                if collection is None:  # the first batch: no write under way yet
                    collection = schema.ensure_collection(
                        dst, model, int(values.shape[1]), detector, in_transaction=True
                    )
                if plan is None:
                    plan = faces.write_plan(dst)
                if values.shape[1] != collection.dimensions:
                    raise ModelMismatchError(
                        f"{where} hold {values.shape[1]}-dimensional vectors; {dst.name} "
                        f"holds {collection.dimensions}-dimensional {collection.model_name} ones"
                    )
                names = _column_values(batch, "img_name")
                indexes = _column_values(batch, "face_index")
                matrix = check_vectors(
                    values, collection.dimensions, _row_names(path, first, names, indexes)
                )
                rows = _face_batch(batch, matrix, model, detector)
                keys = list(zip(rows.column("img_name"), rows.column("face_index"), strict=True))

                at = _row_place(path, first, keys)

                budget.spend_rows(_decoded_sizes(rows), at)
                for row, crop in enumerate(rows.column("face_image")):
                    if crop is not None:
                        _check_crop(crop, at(row))
                hashes = (
                    set()
                    if same_key is None
                    else {hash((same_key(name), index)) for name, index in keys}
                )
                # Whether the gallery may hold some of these faces already: then the
                # write asks the database which.
                look_up = imported is None or bool(hashes & imported)
                if imported is not None:
                    imported |= hashes
                writes.submit(
                    partial(
                        _write_rows,
                        dst,
                        faces.prepare_faces(rows, plan),
                        keys,
                        look_up,
                        before,
                        at,
                    ),
                    partial(_rows_written, counts, bar, batch.num_rows),
                )


def _write_rows(
    dst: Database,
    prepared: faces.PreparedFaces,
    keys: list[tuple[str, int]],
    look_up: bool,
    before: int,
    at: Any,
) -> int:
    """One batch of an import (in its transaction): the faces it replaces out, then
    one COPY (PostgreSQL) or multi-row INSERTs (MariaDB/MySQL). Returns how many
    it replaced."""
    existing = faces.ids_of_faces(dst, keys) if look_up else {}
    if len(set(keys)) < len(keys) or any(i > before for i in existing.values()):
        seen: set[tuple[str, int]] = set()
        for row, key in enumerate(keys):  # the first face seen twice
            if key in seen or existing.get(key, 0) > before:
                raise GalleryFormatError(
                    f"{at(row)}: this face appears twice in the import; each "
                    "(img_name, face_index) must be one row (nothing was imported)"
                )
            seen.add(key)
    faces.delete_faces(dst, list(existing.values()))
    faces.insert_stored_faces(dst, prepared)
    return len(existing)


def _rows_written(counts: dict[str, int], bar: Any, rows: int, replaced: int) -> None:
    counts["faces"] += rows
    counts["replaced"] += replaced
    bar.update(rows)


def _row_place(path: Path, first: int, keys: list[tuple[str, int]]) -> Any:
    def at(row: int) -> str:
        name, index = keys[row]
        return f"row {first + row} of {path.name} ({name!r}, face {index})"

    return at


def _row_names(path: Path, first: int, names: list[Any], indexes: list[Any]) -> Any:
    def describe(row: int) -> str:
        return f"row {first + row} of {path.name} ({names[row]!r}, face {indexes[row]}):"

    return describe


def _column_values(batch: Any, name: str) -> list[Any]:
    """A column's values as Python objects; a dictionary column's distinct values are
    converted once each (a value a hostile dictionary repeats is not copied per row)."""
    if name not in batch.schema.names:
        return [None] * batch.num_rows
    column = batch.column(name)
    import pyarrow.types as types

    if not types.is_dictionary(column.type):
        return column.to_pylist()
    indices = column.indices.to_pylist()
    converted: dict[int, Any] = {}
    values = []
    for index in indices:
        if index is not None and index not in converted:
            converted[index] = column.dictionary[index].as_py()
        values.append(None if index is None else converted[index])
    return values


def _decoded_sizes(rows: faces.FaceBatch) -> np.ndarray:
    """What each face of a batch decodes to: its text and bytes, 8 for any other value."""
    sizes = np.full(len(rows), 4 * rows.vectors.shape[1], dtype=np.int64)
    for name in faces.STORED_FACE_COLUMNS:
        if name == "embedding":
            continue
        value = rows.values.get(name)
        if isinstance(value, list):
            sizes += _lengths(value)
        else:
            sizes += len(value) if isinstance(value, (str, bytes)) else 8
    return sizes


def _lengths(values: list[Any]) -> Any:
    """len() of each str or bytes value, 8 of any other: an array, or one number
    when every value is one that is not."""
    kinds = set(map(type, values))
    if kinds <= {str, bytes}:
        return np.fromiter(map(len, values), dtype=np.int64, count=len(values))
    if not kinds & {str, bytes}:
        return 8
    return np.fromiter(
        (len(v) if isinstance(v, (str, bytes)) else 8 for v in values),
        dtype=np.int64,
        count=len(values),
    )


#: A face crop larger than this many pixels is no crop facevec wrote.
MAX_CROP_PIXELS = 4096 * 4096


def _check_crop(data: bytes, where: str) -> None:
    """The stored crop (face_image) must decode: its PNG chunks' CRCs, then its pixels."""
    import io

    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as image:
            if image.width * image.height > MAX_CROP_PIXELS:
                raise GalleryFormatError(
                    f"{where}: its face_image is {image.width}x{image.height} pixels, "
                    "more than a face crop"
                )
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except GalleryFormatError:
        raise
    except Exception as err:  # PIL's own errors: a damaged or truncated image
        raise GalleryFormatError(f"{where}: its face_image does not decode ({err})") from None


def _face_batch(
    batch: Any, matrix: np.ndarray, model: str, detector: str | None
) -> faces.FaceBatch:
    """The faces of a record batch as columns: a column the files lack, or a
    missing value, is the model, detector or time of the import (or NULL)."""
    defaults = {"model_name": model, "detector_backend": detector, "created_at": schema.now()}
    values: dict[str, Any] = {}
    for name in faces.STORED_FACE_COLUMNS:
        if name == "embedding":
            continue
        default = defaults.get(name)
        if name not in batch.schema.names:
            values[name] = default
            continue
        column = _column_values(batch, name)
        if default is not None and any(v is None for v in column):
            column = [default if v is None else v for v in column]
        values[name] = column
    if any(v is None for v in values["img_name"]) or any(v is None for v in values["face_index"]):
        raise GalleryFormatError("a row without img_name or face_index cannot be stored")
    if isinstance(values["model_name"], list):
        for name, value in zip(values["img_name"], values["model_name"], strict=True):
            if value != model:
                raise ModelMismatchError(
                    f"a face of {name} is a {value} vector, the gallery's are {model}"
                )
    return faces.FaceBatch(matrix, values)


@contextlib.contextmanager
def _progress(total: int, unit: str, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=not enabled, leave=False)
    try:
        yield bar
    finally:
        bar.close()
