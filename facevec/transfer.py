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
from collections.abc import Iterator
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
)
from .ingest import sync_people
from .storage import faces, ledger, schema
from .storage.database import DbArg, open_database
from .vector_columns import float_list_column, matrix_from_arrow, matrix_from_blobs, require_pyarrow


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


# Parquet: one row per face, for Spark, DuckDB, pandas and any Arrow tool ----------

#: Parquet file metadata key holding the gallery's model (JSON).
PARQUET_METADATA_KEY = b"facevec"
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
    Parquet files is refused unless `overwrite`. Returns {"faces": n, "files": n}.
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
    return {"faces": exported, "files": files}


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
            self.writer = _parquet_module().ParquetWriter(self._temporary(), self.schema)
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
            _parquet_module().write_table(self.schema.empty_table(), self.folder / _PART.format(0))
            self.files = 1
        return self.files


def _parquet_module() -> Any:
    require_pyarrow()
    import pyarrow.parquet as pq

    return pq


def read_parquet_model(folder: str | os.PathLike[str]) -> tuple[Any, dict[str, Any]]:
    """(pyarrow dataset, facevec metadata or {}) of a folder (or file) of Parquet."""
    require_pyarrow()
    import pyarrow.dataset as ds

    path = Path(folder)
    if not path.exists():
        raise DatabaseNotFoundError(f"no Parquet gallery at {path}")
    try:
        dataset = ds.dataset(path, format="parquet")
    except Exception as err:  # pyarrow's ArrowInvalid: not Parquet, mixed schemas
        raise GalleryFormatError(f"cannot read {path} as Parquet: {err}") from err
    if not dataset.files:
        raise DatabaseNotFoundError(f"{path} holds no Parquet files")
    missing = [c for c in ("img_name", "face_index", "embedding") if c not in dataset.schema.names]
    if missing:
        raise GalleryFormatError(f"{path} lacks the column(s) {', '.join(missing)}")
    metadata: dict[str, Any] = {}
    for file in dataset.files:
        raw = (_parquet_module().read_schema(file).metadata or {}).get(PARQUET_METADATA_KEY)
        if raw is None:
            continue
        found = json.loads(raw)
        if metadata and (found["model_name"], found["dimensions"]) != (
            metadata["model_name"],
            metadata["dimensions"],
        ):
            raise ModelMismatchError(
                f"{path} mixes {metadata['model_name']} ({metadata['dimensions']} dimensions) "
                f"and {found['model_name']} ({found['dimensions']} dimensions) files"
            )
        metadata = metadata or found
    return dataset, metadata


def import_parquet(
    folder: str | os.PathLike[str],
    db: DbArg,
    model_name: str | None = None,
    detector_backend: str | None = None,
    batch_size: int = 500,
    progress: bool = True,
) -> dict[str, int]:
    """Store the faces of a Parquet gallery (``export_parquet``'s, or any with columns
    img_name, face_index, embedding) in `db`; vectors are stored, never re-embedded.

    The model comes from the files' metadata, else their model_name column, else
    `model_name`; `db` must hold that model's vectors or none. A face already
    stored under the same (img_name, face_index) is replaced, so a rerun after an
    interruption finishes the import without duplicates. Each batch of
    `batch_size` faces is one transaction. Ids are the target's own.
    Returns {"faces": n}.
    """
    dataset, metadata = read_parquet_model(folder)
    names = set(dataset.schema.names)
    model = metadata.get("model_name") or model_name
    detector = metadata.get("detector_backend") or detector_backend
    if model is None and "model_name" in names:
        import pyarrow.compute as pc

        found = pc.unique(dataset.to_table(columns=["model_name"])["model_name"])
        found = [value for value in found.to_pylist() if value is not None]
        if len(found) > 1:
            raise ModelMismatchError(f"{folder} mixes vectors of models {', '.join(found)}")
        model = found[0] if found else None
    if model is None:
        raise GalleryFormatError(
            f"{folder} does not say which model its vectors come from; give the model name"
        )
    total = dataset.count_rows()
    imported = 0
    with open_database(db) as dst:
        schema.create_schema(dst)
        collection = None
        with _progress(total, "faces", progress) as bar:
            for batch in dataset.to_batches(batch_size=batch_size):
                if batch.num_rows == 0:
                    continue
                matrix = matrix_from_arrow(batch.column("embedding"))
                if collection is None:
                    dims = metadata.get("dimensions") or matrix.shape[1]
                    collection = schema.ensure_collection(dst, model, int(dims), detector)
                if matrix.shape[1] != collection.dimensions:
                    raise ModelMismatchError(
                        f"{folder} holds {matrix.shape[1]}-dimensional vectors; {dst.name} "
                        f"holds {collection.dimensions}-dimensional {collection.model_name} ones"
                    )
                stored = _stored_faces(batch, matrix, names, model, detector)
                with dst.transaction():
                    for face in stored:
                        faces.replace_stored_face(dst, face)
                imported += len(stored)
                bar.update(len(stored))
        if collection is None:  # an empty export still names its model
            dims = metadata.get("dimensions")
            if dims:
                schema.ensure_collection(dst, model, int(dims), detector)
        sync_people(dst)  # folder identities become people, as after index or copy
        knn.refresh_gallery_index(dst)
    return {"faces": imported}


def _stored_faces(
    batch: Any, matrix: np.ndarray, names: set[str], model: str, detector: str | None
) -> list[faces.StoredFace]:
    blobs = [faces.vector_blob(row) for row in matrix]
    columns = {
        name: batch.column(name).to_pylist()
        for name in faces.STORED_FACE_COLUMNS
        if name in names and name != "embedding"
    }
    created = schema.now()
    defaults = {"model_name": model, "detector_backend": detector, "created_at": created}
    stored = []
    for position, blob in enumerate(blobs):
        values = {}
        for name in faces.STORED_FACE_COLUMNS:
            if name == "embedding":
                values[name] = blob
            elif name in columns and columns[name][position] is not None:
                values[name] = columns[name][position]
            else:
                values[name] = defaults.get(name)
        if values["img_name"] is None or values["face_index"] is None:
            raise GalleryFormatError("a row without img_name or face_index cannot be stored")
        if values["model_name"] != model:
            raise ModelMismatchError(
                f"a face of {values['img_name']} is a {values['model_name']} vector, "
                f"the gallery's are {model}"
            )
        stored.append(faces.StoredFace(**values))
    return stored


@contextlib.contextmanager
def _progress(total: int, unit: str, enabled: bool) -> Iterator[Any]:
    from tqdm import tqdm

    bar = tqdm(total=total, unit=unit, disable=not enabled, leave=False)
    try:
        yield bar
    finally:
        bar.close()
