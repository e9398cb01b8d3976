"""The people of an exported gallery: ``_people/people.parquet`` beside the face files
(a folder starting with ``_`` is left out by Spark, pyarrow, pandas and DuckDB's
``*.parquet``, and by facevec's own reading of the faces).

One row per fact, its kind in ``record``:

- ``person``: person, name, hidden, img_name + face_index (the cover face, or
  null), created_at, updated_at;
- ``face``: img_name, face_index, person, source (folder / confirmed / suggested),
  score, updated_at;
- ``rejection``: img_name, face_index, person, created_at;
- ``folder``: folder, person;
- ``dismissed``: img_name, face_index, created_at (a face set aside);
- ``unchecked``: img_name, face_index (a face the people step has not looked at).

``person`` is the person's number in the exported gallery; the calibration is a
JSON list in the file's metadata (key ``facevec``, ``{"calibration": [...]}``),
beside ``"people_checked": true`` when the gallery's people step has run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import GalleryFormatError
from ..parquet_reading import PARQUET_METADATA_KEY, check_footer, open_file
from ..storage.people import CALIBRATION_COLUMNS
from ..vector_columns import require_pyarrow
from .transfer import PeopleRows

PEOPLE_FILE = Path("_people") / "people.parquet"
#: A people file larger than this is no facevec export's.
MAX_PEOPLE_BYTES = 1 << 30

# (record, its columns in the order of the rows of PeopleRows' table)
_RECORDS = {
    "person": (
        "person",
        ("person", "name", "hidden", "img_name", "face_index", "created_at", "updated_at"),
    ),
    "person_face": (
        "face",
        ("img_name", "face_index", "person", "source", "score", "updated_at"),
    ),
    "person_rejection": ("rejection", ("img_name", "face_index", "person", "created_at")),
    "person_folder": ("folder", ("folder", "person")),
    "face_dismissed": ("dismissed", ("img_name", "face_index", "created_at")),
    "unchecked_faces": ("unchecked", ("img_name", "face_index")),
}


def _schema(calibration: list[tuple], people_checked: bool) -> Any:
    pa = require_pyarrow()
    meta = {
        "calibration": [dict(zip(CALIBRATION_COLUMNS, row, strict=True)) for row in calibration],
        "people_checked": people_checked,
    }
    return pa.schema(
        [
            ("record", pa.string()),
            ("person", pa.int64()),
            ("name", pa.string()),
            ("hidden", pa.bool_()),
            ("img_name", pa.string()),
            ("face_index", pa.int32()),
            ("source", pa.string()),
            ("score", pa.float64()),
            ("folder", pa.string()),
            ("created_at", pa.string()),
            ("updated_at", pa.string()),
        ],
        metadata={PARQUET_METADATA_KEY: json.dumps(meta).encode()},
    )


def people_file(folder: str | os.PathLike[str]) -> Path:
    return Path(folder) / PEOPLE_FILE


def write_people_file(rows: PeopleRows, folder: str | os.PathLike[str]) -> int:
    """Write the people (when there are any) under `folder`, through a temporary
    name; returns the number of rows written."""
    import pyarrow.parquet as pq

    schema = _schema(rows["facevec_calibration"], bool(rows["people_checked"]))
    columns: dict[str, list[Any]] = {name: [] for name in schema.names}
    for table, (record, names) in _RECORDS.items():
        for row in rows[table]:
            values = dict(zip(names, row, strict=True))
            for name in schema.names:
                columns[name].append(record if name == "record" else values.get(name))
    path = people_file(folder)
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_name("." + path.name + ".tmp")
    table = require_pyarrow().Table.from_pydict(columns, schema=schema)
    pq.write_table(table, temporary, write_page_checksum=True)
    temporary.rename(path)
    return table.num_rows


def remove_people_file(folder: str | os.PathLike[str]) -> None:
    path = people_file(folder)
    if path.exists():
        path.unlink()


def read_people_file(folder: str | os.PathLike[str]) -> PeopleRows | None:
    """The people of an export folder (None when it has no people file, as exports
    before people were carried), as PeopleRows still to check (people.transfer)."""
    path = people_file(folder)
    if not Path(folder).is_dir() or not path.is_file():
        return None
    if path.stat().st_size > MAX_PEOPLE_BYTES:
        raise GalleryFormatError(f"{path} is larger than a people file facevec writes")
    parquet = open_file(path)
    check_footer(parquet, path)
    arrow_schema = parquet.schema_arrow
    if "record" not in arrow_schema.names:
        raise GalleryFormatError(f"{path} lacks the column record")
    try:
        table = parquet.read()
    except Exception as err:  # pyarrow's errors: a damaged page
        raise GalleryFormatError(f"cannot read {path}: {str(err).splitlines()[0]}") from None
    values = {name: table.column(name).to_pylist() for name in table.schema.names}
    rows: PeopleRows = {
        table_name: [] for table_name in (*_RECORDS, "facevec_calibration", "people_checked")
    }
    by_record = {record: (table_name, names) for table_name, (record, names) in _RECORDS.items()}
    for position, record in enumerate(values["record"]):
        if record not in by_record:
            raise GalleryFormatError(
                f"{path} row {position}: record must be one of {', '.join(by_record)}, "
                f"not {record!r}"
            )
        table_name, names = by_record[record]
        missing = [name for name in names if name not in values]
        if missing:
            raise GalleryFormatError(f"{path} lacks the column(s) {', '.join(missing)}")
        rows[table_name].append(tuple(values[name][position] for name in names))
    rows["facevec_calibration"] = _calibration(parquet, path)
    rows["people_checked"] = [(True,)] if _metadata(parquet, path).get("people_checked") else []
    return rows


def _metadata(parquet: Any, path: Path) -> dict:
    raw = (parquet.schema_arrow.metadata or {}).get(PARQUET_METADATA_KEY)
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise GalleryFormatError(f"{path}: its facevec metadata is not a JSON object")
    return found


def _calibration(parquet: Any, path: Path) -> list[tuple]:
    found = _metadata(parquet, path).get("calibration", [])
    if not isinstance(found, list) or not all(isinstance(row, dict) for row in found):
        raise GalleryFormatError(f"{path}: its calibration is not a list of objects")
    for row in found:
        if set(row) != set(CALIBRATION_COLUMNS):
            raise GalleryFormatError(
                f"{path}: a calibration must have exactly {', '.join(CALIBRATION_COLUMNS)}"
            )
    return [tuple(row[name] for name in CALIBRATION_COLUMNS) for row in found]
