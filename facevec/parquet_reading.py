"""Reading a Parquet gallery that may come from anyone: its files, its footers, its
facevec metadata, and its rows a batch at a time.

A Parquet file says in its footer how many rows it holds and where its column
chunks are; a reader sizes its buffers from those numbers, so a 1 MB file whose
footer claims 2^31 rows would make it allocate gigabytes. Before any row is read,
:func:`check_footer` holds the footer to the file: every column chunk lies inside
the file, the row counts add up, each column chunk has a value for every row it
claims, and the vectors' chunk cannot decode to more than :data:`MAX_EXPANSION`
times its size. While reading, :class:`RowBudget` stops a file whose rows decode
to more than that overall (dictionary pages let a few bytes stand for many
values), and string and binary columns are read as dictionaries, so a value
repeated by a hostile dictionary is held once. Pages carrying a CRC are verified
(``facevec export`` writes one on every page).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatabaseNotFoundError, GalleryFormatError
from .vector_columns import require_pyarrow

#: Parquet file metadata key holding the gallery's model (JSON).
PARQUET_METADATA_KEY = b"facevec"
#: How many times its size on disk a file's rows may decode to.
MAX_EXPANSION = 64
#: A fixed allowance on top (small files: footers, dictionaries, empty columns).
EXPANSION_SLACK = 16 << 20
#: The largest number of dimensions a gallery's metadata may claim.
MAX_DIMENSIONS = 1 << 16
#: Columns read as dictionaries (a value repeated by the file is held once).
DICTIONARY_COLUMNS = ("img_name", "identity", "face_image", "model_name", "detector_backend")


def parquet_files(folder: str | os.PathLike[str]) -> list[Path]:
    """The Parquet files of a gallery: a file, or a folder's ``*.parquet`` files in
    name order (hidden and ``_`` files, a writer's temporary ones, left out)."""
    path = Path(folder)
    if not path.exists():
        raise DatabaseNotFoundError(f"no Parquet gallery at {path}")
    if path.is_file():
        return [path]
    files = sorted(
        p for p in path.rglob("*.parquet") if p.is_file() and not _hidden(p.relative_to(path))
    )
    if not files:
        raise DatabaseNotFoundError(f"{path} holds no Parquet files")
    return files


def _hidden(relative: Path) -> bool:
    return any(part.startswith((".", "_")) for part in relative.parts)


def open_file(path: Path, **options: Any) -> Any:
    """A ``pyarrow.parquet.ParquetFile`` of ``path`` (footer read, nothing else), its
    pages' CRCs verified where they have one; GalleryFormatError if it is not Parquet."""
    require_pyarrow()
    import pyarrow.parquet as pq

    try:
        return pq.ParquetFile(path, page_checksum_verification=True, **options)
    except Exception as err:  # ArrowInvalid, OSError: truncated, not Parquet, bad footer
        raise GalleryFormatError(f"cannot read {path} as Parquet: {_first_line(err)}") from None


def _first_line(err: BaseException) -> str:
    return str(err).strip().split("\n")[0]


def facevec_metadata(parquet: Any, path: Path) -> dict[str, Any]:
    """The facevec metadata of one file ({} when it has none), each value checked:
    a JSON object whose model_name is text and dimensions a whole number."""
    raw = (parquet.schema_arrow.metadata or {}).get(PARQUET_METADATA_KEY)
    if raw is None:
        return {}
    try:
        found = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as err:
        raise GalleryFormatError(
            f"{path}: its facevec metadata is not JSON ({err.__class__.__name__}: {err})"
        ) from None
    if not isinstance(found, dict):
        raise GalleryFormatError(
            f"{path}: its facevec metadata must be a JSON object, found {type(found).__name__}"
        )
    model = found.get("model_name")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise GalleryFormatError(f"{path}: model_name in its metadata must be text, not {model!r}")
    dims = found.get("dimensions")
    if dims is not None and (
        isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= MAX_DIMENSIONS
    ):
        raise GalleryFormatError(
            f"{path}: dimensions in its metadata must be a whole number from 1 to "
            f"{MAX_DIMENSIONS}, not {dims!r}"
        )
    detector = found.get("detector_backend")
    if detector is not None and not isinstance(detector, str):
        raise GalleryFormatError(
            f"{path}: detector_backend in its metadata must be text, not {detector!r}"
        )
    return found


def check_footer(parquet: Any, path: Path, row_bytes: int = 0) -> None:
    """Hold the footer's numbers to the file (see the module docstring); ``row_bytes``:
    the least a row's vector decodes to (4 x dimensions), 0 when unknown."""
    size = path.stat().st_size
    meta = parquet.metadata
    total = 0
    for group in range(meta.num_row_groups):
        rows_meta = meta.row_group(group)
        rows = rows_meta.num_rows
        where = f"{path}: row group {group}"
        if rows < 0:
            raise GalleryFormatError(f"{where} declares {rows} rows")
        total += rows
        for number in range(rows_meta.num_columns):
            chunk = rows_meta.column(number)
            name = chunk.path_in_schema
            # A row group of no rows has no data page: Arrow writes its offset as 0.
            starts = [chunk.data_page_offset] if rows or chunk.data_page_offset else []
            if chunk.has_dictionary_page and chunk.dictionary_page_offset:
                starts.append(chunk.dictionary_page_offset)
            length = chunk.total_compressed_size
            if not starts and length == 0:
                continue
            start = min(starts, default=0)
            if start < 4 or length < 0 or start + length > size:
                raise GalleryFormatError(
                    f"{where}: column {name} claims bytes {start} to {start + length}, "
                    f"beyond the file's {size} bytes"
                )
            if chunk.num_values < rows:
                raise GalleryFormatError(
                    f"{where} declares {rows} rows, but column {name} holds {chunk.num_values} "
                    "values: a forged or damaged footer"
                )
            decoded = 4 * chunk.num_values  # a vector value is at least a float32
            vector = name.split(".")[0] == "embedding"
            if vector and decoded > MAX_EXPANSION * length + EXPANSION_SLACK:
                raise GalleryFormatError(
                    f"{where}: column {name} claims {chunk.num_values} values in {length} "
                    f"bytes, more than {MAX_EXPANSION}x: a decompression bomb or a forged footer"
                )
        if row_bytes and rows * row_bytes > MAX_EXPANSION * size + EXPANSION_SLACK:
            raise GalleryFormatError(
                f"{where} declares {rows} rows of {row_bytes}-byte vectors in a file of "
                f"{size} bytes: a forged footer"
            )
    if total != meta.num_rows:
        raise GalleryFormatError(
            f"{path} declares {meta.num_rows} rows, but its row groups hold {total}"
        )


@dataclass
class RowBudget:
    """What the rows of one file may decode to: MAX_EXPANSION times its size."""

    path: Path
    limit: int
    used: int = 0

    @classmethod
    def of(cls, path: Path) -> RowBudget:
        return cls(path, MAX_EXPANSION * path.stat().st_size + EXPANSION_SLACK)

    def spend_rows(self, sizes: Any, where: Callable[[int], str]) -> None:
        """:meth:`spend` of many rows' sizes (an integer array) at once; `where(row)`
        names the row that goes over the budget."""
        total = np.cumsum(sizes) + self.used
        if len(total) and total[-1] > self.limit:
            row = int(np.argmax(total > self.limit))
            self.spend(int(total[row]) - self.used, where(row))
        self.used = int(total[-1]) if len(total) else self.used

    def spend(self, nbytes: int, where: str) -> None:
        self.used += nbytes
        if self.used > self.limit:
            raise GalleryFormatError(
                f"{self.path}: its rows decode to more than {MAX_EXPANSION}x the file's size "
                f"(at {where}): a decompression bomb or a damaged file"
            )


def row_batches(
    parquet: Any, path: Path, columns: list[str], batch_size: int
) -> Iterator[tuple[int, Any]]:
    """(number of the batch's first row in the file, record batch) of one file, a row
    group at a time, read errors (a CRC mismatch, a damaged page) as one line."""
    first = 0
    for group in range(parquet.metadata.num_row_groups):
        try:
            batches = parquet.iter_batches(
                batch_size=batch_size, row_groups=[group], columns=columns, use_threads=False
            )
            for batch in batches:
                yield first, batch
                first += batch.num_rows
        except GalleryFormatError:
            raise
        except Exception as err:  # ArrowInvalid, OSError (CRC), ArrowNotImplementedError
            if err.__class__.__module__.startswith("pyarrow") or isinstance(err, OSError):
                raise GalleryFormatError(
                    f"{path}: row group {group} cannot be read: {_first_line(err)}"
                ) from None
            raise
