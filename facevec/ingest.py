"""Put faces in a gallery: index a folder of photos, or add precomputed vectors.

``index`` walks a folder, hashes each photo, skips what is unchanged and embeds
the rest. Results are written in batches, one transaction each, together with
the ledger rows that say what became of every file. A run killed at any point
therefore loses no committed batch, and the next run redoes only files whose
ledger row is missing or stale; replacing an image's faces makes the redo free
of duplicates.
"""

from __future__ import annotations

import hashlib
import os
import stat
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from . import knn
from .engine import embed, models
from .errors import (
    FolderNotFoundError,
    InvalidParameterError,
    MissingDependencyError,
    MissingWeightsError,
    NoFaceError,
    NotAnImageError,
    VectorError,
)
from .face import Face
from .options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from .storage import faces, ledger, people, schema
from .storage.database import Database, DbArg, open_database

# Files with other extensions (README.md, labels.csv, .DS_Store...) are not photos
# and are not looked at; a file named like a photo always gets a ledger row.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".bmp", ".tif", ".tiff", ".jp2", ".ppm", ".pgm"}
)

# Outcomes that stay valid while the file's bytes do not change; 'error' is retried.
FINAL_OUTCOMES = ("indexed", "no_face", "not_image")


@dataclass
class IndexReport:
    """What one index run did."""

    folder: str
    db: str
    model_name: str
    detector_backend: str
    files_seen: int = 0
    unchanged: int = 0
    indexed: int = 0
    faces_added: int = 0
    no_face: int = 0
    not_image: int = 0
    errors: int = 0
    pruned: int = 0
    missing: int = 0  # in the ledger, gone from the folder, kept (no prune)
    interrupted: bool = False
    seconds_total: float = 0.0
    seconds_database: float = 0.0
    error_messages: dict[str, str] = field(default_factory=dict)

    @property
    def database_share(self) -> float:
        return self.seconds_database / self.seconds_total if self.seconds_total else 0.0

    def as_dict(self) -> dict:
        result = asdict(self)
        result["database_share"] = self.database_share
        return result


@dataclass
class _Result:
    path: str
    sha256: str | None
    size: int | None
    outcome: str
    faces: list[Face]
    message: str | None
    seconds: float


def iter_photo_paths(folder: str) -> Iterator[str]:
    """Files under `folder` with an image extension, sorted, as absolute paths."""
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
                yield os.path.join(root, name)


def identity_of(path: str, folder: str) -> str | None:
    """The person folder in the layout gallery/<person>/<photo>; None at top level."""
    parent = os.path.relpath(os.path.dirname(path), folder)
    return None if parent in (".", "") else os.path.basename(parent)


def _read(path: str) -> bytes:
    # Refuse FIFOs and devices before opening: reading one could block forever.
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        raise OSError(f"not a regular file (mode {stat.filemode(mode)})")
    with open(path, "rb") as handle:
        return handle.read()


def _process(path: str, data: bytes, sha256: str, options: EmbedOptions) -> _Result:
    started = time.perf_counter()
    try:
        found = embed.embed_bytes(data, path, options, sha256=sha256)
        outcome, message = "indexed", None
    except NotAnImageError as err:
        found, outcome, message = [], "not_image", str(err)
    except NoFaceError as err:
        found, outcome, message = [], "no_face", str(err)
    elapsed = time.perf_counter() - started
    return _Result(path, sha256, len(data), outcome, found, message, elapsed)


def _write_batch(
    db: Database, batch: list[_Result], folder: str, model_name: str, detector: str
) -> None:
    stamp = schema.now()
    with db.transaction():
        for result in batch:
            if result.outcome in FINAL_OUTCOMES:
                # A changed file that no longer has faces loses its old rows too; an
                # unreadable one ('error') keeps them.
                faces.replace_image(
                    db,
                    result.path,
                    result.faces,
                    model_name,
                    detector,
                    identity_of(result.path, folder),
                    result.sha256,
                )
            ledger.record(
                db,
                ledger.LedgerEntry(
                    path=result.path,
                    sha256=result.sha256,
                    size_bytes=result.size,
                    outcome=result.outcome,
                    faces=len(result.faces),
                    message=result.message,
                    model_name=model_name,
                    detector_backend=detector,
                    seconds=round(result.seconds, 4),
                    first_seen_at=stamp,
                    updated_at=stamp,
                ),
            )


def _prune(db: Database, paths: list[str]) -> None:
    with db.transaction():
        for path in paths:
            faces.delete_image(db, path)
            ledger.delete(db, path)


def index(
    folder: str | os.PathLike[str],
    db: DbArg,
    model_name: str = DEFAULT_MODEL,
    detector_backend: str = DEFAULT_DETECTOR,
    prune: bool = False,
    batch_size: int = 16,
    progress: bool = True,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
) -> IndexReport:
    """Index the photos under `folder` into `db`; see the module docstring."""
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise FolderNotFoundError(f"{folder} is not a directory")
    if batch_size < 1:
        raise InvalidParameterError(f"batch_size must be at least 1, not {batch_size}")
    models.check_model_name(model_name)
    models.check_detector_name(detector_backend)
    started = time.perf_counter()
    report = IndexReport(folder, "", model_name, detector_backend)
    db_seconds = 0.0
    with open_database(db) as database:
        report.db = database.name
        tick = time.perf_counter()
        schema.create_schema(database)
        schema.check_model(database, model_name)  # refuse before loading a network
        db_seconds += time.perf_counter() - tick
        model = models.build_model(model_name, detector_backend)
        tick = time.perf_counter()
        schema.ensure_collection(database, model_name, int(model.output_shape), detector_backend)
        prefix = folder.rstrip(os.sep) + os.sep
        seen = ledger.entries_under(database, prefix)
        db_seconds += time.perf_counter() - tick

        paths = list(iter_photo_paths(folder))
        report.files_seen = len(paths)
        options = EmbedOptions(
            model_name, detector_backend, align, expand_percentage, normalization
        )
        batch: list[_Result] = []
        bar = _progress_bar(len(paths), progress)
        try:
            for path in paths:
                result = _handle(path, seen, options)
                if result is None:
                    report.unchanged += 1
                else:
                    _count(report, result)
                    batch.append(result)
                bar.set_postfix(faces=report.faces_added, refresh=False)
                bar.update(1)
                if len(batch) >= batch_size:
                    tick = time.perf_counter()
                    _write_batch(database, batch, folder, model_name, detector_backend)
                    db_seconds += time.perf_counter() - tick
                    batch = []
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            bar.close()
        # Results already computed are complete: keep them, even after Ctrl-C.
        # (Any other error has propagated: its batch was rolled back.)
        if batch:
            tick = time.perf_counter()
            _write_batch(database, batch, folder, model_name, detector_backend)
            db_seconds += time.perf_counter() - tick
        if not report.interrupted:
            gone = sorted(set(seen) - set(paths))
            if prune:
                tick = time.perf_counter()
                _prune(database, gone)
                db_seconds += time.perf_counter() - tick
                report.pruned = len(gone)
            else:
                report.missing = len(gone)
        tick = time.perf_counter()
        sync_people(database)
        db_seconds += time.perf_counter() - tick
        if not report.interrupted:
            tick = time.perf_counter()
            knn.refresh_gallery_index(database, progress)
            db_seconds += time.perf_counter() - tick
    report.seconds_database = db_seconds
    report.seconds_total = time.perf_counter() - started
    if report.interrupted:
        raise IndexInterrupted(report)
    return report


def sync_people(database: Database) -> None:
    """Folders become people: new faces of gallery/<person>/ get that person."""
    people.upgrade(database)
    with database.transaction():
        people.sync_folders(database)


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during index: what was computed is committed; `report` says how far."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("index interrupted; rerun to finish")
        self.report = report


def _handle(path: str, seen: dict[str, ledger.Seen], options: EmbedOptions) -> _Result | None:
    """None for an unchanged file, else what became of it."""
    try:
        data = _read(path)
    except OSError as err:
        reason = err.strerror or str(err)
        return _Result(path, None, None, "error", [], f"cannot read {path}: {reason}", 0.0)
    sha256 = hashlib.sha256(data).hexdigest()
    previous = seen.get(path)
    if (
        previous
        and previous.sha256 == sha256
        and previous.outcome in FINAL_OUTCOMES
        and previous.detector_backend == options.detector_backend
    ):
        return None
    try:
        return _process(path, data, sha256, options)
    except (KeyboardInterrupt, MissingWeightsError, MissingDependencyError):
        raise
    except Exception as err:  # one bad photo must not stop the run; the ledger says why
        return _Result(path, sha256, len(data), "error", [], f"{type(err).__name__}: {err}", 0.0)


def _count(report: IndexReport, result: _Result) -> None:
    if result.outcome == "indexed":
        report.indexed += 1
        report.faces_added += len(result.faces)
    elif result.outcome == "no_face":
        report.no_face += 1
    elif result.outcome == "not_image":
        report.not_image += 1
    else:
        report.errors += 1
        report.error_messages[result.path] = result.message or ""


def _progress_bar(total: int, enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=total, unit="photo", desc="indexing", disable=not enabled, dynamic_ncols=True)


def add(
    db: DbArg,
    img_names: Sequence[str],
    embeddings: Any,
    model_name: str = DEFAULT_MODEL,
    identities: Sequence[str | None] | None = None,
) -> int:
    """Store precomputed embeddings (from any pipeline) without deepface.

    One row per (img_name, embedding); repeated names become face 0, 1, ... of that
    image. Faces already stored under these names are replaced. Returns the count.
    """
    vectors = np.asarray(embeddings, dtype=np.float32)
    if vectors.ndim == 1:
        vectors = vectors.reshape(1, -1)
    if vectors.ndim != 2 or vectors.shape[1] == 0:
        raise VectorError(
            f"embeddings must be a 2-D array (n x dimensions), not shape {vectors.shape}"
        )
    if len(img_names) != len(vectors):
        raise InvalidParameterError(f"{len(img_names)} img_names for {len(vectors)} embeddings")
    if identities is not None and len(identities) != len(vectors):
        raise InvalidParameterError(f"{len(identities)} identities for {len(vectors)} embeddings")
    if not np.isfinite(vectors).all():
        raise VectorError("embeddings contain NaN or infinite values")
    zero_rows = np.flatnonzero(~vectors.any(axis=1))
    if zero_rows.size:
        raise VectorError(
            f"embedding {int(zero_rows[0])} ({img_names[int(zero_rows[0])]!r}) is all zeros, "
            "which no face has and cosine distance cannot rank"
        )
    grouped: dict[str, list[int]] = {}
    for row, name in enumerate(img_names):
        grouped.setdefault(str(name), []).append(row)
    with open_database(db) as database:
        schema.create_schema(database)
        schema.ensure_collection(database, model_name, int(vectors.shape[1]), None)
        with database.transaction():
            for name, rows in grouped.items():
                identity = None if identities is None else identities[rows[0]]
                stored = [Face.from_vector(vectors[row], i) for i, row in enumerate(rows)]
                faces.replace_image(database, name, stored, model_name, None, identity)
        sync_people(database)
        knn.refresh_gallery_index(database)
    return len(vectors)
