"""Put faces in a gallery: index a folder of photos, or add precomputed vectors.

``index`` walks a folder, hashes each photo, skips what is unchanged and embeds
the rest, in worker processes (``workers``, one per core by default) or in this
one. Results are written by this process alone, in the folder's order, in
batches of one transaction each, together with the ledger rows that say what
became of every file. A run killed at any point therefore loses no committed
batch, and the next run redoes only files whose ledger row is missing or stale;
replacing an image's faces makes the redo free of duplicates.

File paths are stored in the text form of :mod:`facevec.ingest.names`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import knn
from ..engine import models
from ..engine.decode import DEFAULT_MAX_PIXELS
from ..errors import FolderNotFoundError, InvalidParameterError, VectorError
from ..face import Face
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from ..storage import faces, ledger, people, schema
from ..storage.database import Database, DbArg, open_database
from . import photo
from .names import path_from_text, path_to_text
from .photo import DEFAULT_MIN_FACE, Result, Settings
from .pool import Pool, default_workers
from .walk import IMAGE_EXTENSIONS, Walk

__all__ = [
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_FACE",
    "IndexInterrupted",
    "IndexReport",
    "add",
    "index",
    "path_from_text",
    "path_to_text",
]

# Outcomes that stay valid while the file's bytes do not change; 'error' is retried.
FINAL_OUTCOMES = ("indexed", "no_face", "not_image")


@dataclass
class IndexReport:
    """What one index run did."""

    folder: str
    db: str
    model_name: str
    detector_backend: str
    workers: int = 1
    files_seen: int = 0
    unchanged: int = 0
    indexed: int = 0
    faces_added: int = 0
    faces_dropped: int = 0  # found, but below min_face or min_sharpness: not stored
    no_face: int = 0
    not_image: int = 0
    errors: int = 0
    pruned: int = 0
    missing: int = 0  # in the ledger, gone from the folder, kept (no prune)
    unseen: int = 0  # in the ledger, under a folder that could not be listed: kept
    interrupted: bool = False
    seconds_total: float = 0.0
    seconds_startup: float = 0.0  # loading the model(s) before the first photo
    seconds_database: float = 0.0
    error_messages: dict[str, str] = field(default_factory=dict)

    @property
    def database_share(self) -> float:
        return self.seconds_database / self.seconds_total if self.seconds_total else 0.0

    def as_dict(self) -> dict:
        result = asdict(self)
        result["database_share"] = self.database_share
        return result


class IndexInterrupted(KeyboardInterrupt):
    """Ctrl-C during index: what was computed is committed; `report` says how far."""

    def __init__(self, report: IndexReport) -> None:
        super().__init__("index interrupted; rerun to finish")
        self.report = report


class _Writer:
    """The one writer: results in order, committed every `batch_size` photos."""

    def __init__(
        self, db: Database, prefix: str, options: EmbedOptions, batch_size: int, report: IndexReport
    ) -> None:
        self.db, self.prefix, self.options = db, prefix, options
        self.batch_size, self.report = batch_size, report
        self.batch: list[Result] = []
        self.dimensions: int | None = None
        self.collection_ready = False

    def clock(self) -> _Clock:
        return _Clock(self.report)

    def add(self, result: Result) -> None:
        _count(self.report, result)
        self.batch.append(result)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def identity(self, text_path: str) -> str | None:
        parts = text_path[len(self.prefix) :].split("/")
        return parts[-2] if len(parts) > 1 else None

    def ensure_collection(self) -> None:
        if self.collection_ready:
            return
        if self.dimensions is None:
            self.dimensions = photo.model_dimensions(self.options)
        with self.clock():
            schema.ensure_collection(
                self.db, self.options.model_name, self.dimensions, self.options.detector_backend
            )
        self.collection_ready = True

    def flush(self) -> None:
        if not self.batch:
            return
        self.ensure_collection()
        stamp = schema.now()
        model, detector = self.options.model_name, self.options.detector_backend
        with self.clock(), self.db.transaction():
            for result in self.batch:
                if result.outcome in FINAL_OUTCOMES:
                    # A changed file that no longer has faces loses its old rows too; an
                    # unreadable one ('error') keeps them.
                    faces.replace_image(
                        self.db,
                        result.path,
                        result.faces,
                        model,
                        detector,
                        self.identity(result.path),
                        result.sha256,
                    )
                ledger.record(
                    self.db,
                    ledger.LedgerEntry(
                        path=result.path,
                        sha256=result.sha256,
                        size_bytes=result.size,
                        outcome=result.outcome,
                        faces=len(result.faces),
                        message=result.message,
                        model_name=model,
                        detector_backend=detector,
                        seconds=round(result.seconds, 4),
                        first_seen_at=stamp,
                        updated_at=stamp,
                    ),
                )
        self.batch = []


class _Clock:
    """Adds the time of a block to the report's database time."""

    def __init__(self, report: IndexReport) -> None:
        self.report = report

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.report.seconds_database += time.perf_counter() - self.started


def _check(
    batch_size: int, workers: int, max_pixels: int, min_face: int, min_sharpness: float
) -> None:
    for name, value, least in (
        ("batch_size", batch_size, 1),
        ("workers", workers, 1),
        ("max_pixels", max_pixels, 1),
        ("min_face", min_face, 0),
    ):
        if value < least:
            raise InvalidParameterError(f"{name} must be at least {least}, not {value}")
    if not min_sharpness >= 0:
        raise InvalidParameterError(f"min_sharpness must be 0 or more, not {min_sharpness}")


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
    exact: bool = False,
    workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_face: int = DEFAULT_MIN_FACE,
    min_sharpness: float = 0.0,
    on_progress: Callable[[int, int], None] | None = None,
    within: Sequence[str | os.PathLike[str]] | None = None,
) -> IndexReport:
    """Index the photos under `folder` into `db`; see the module docstring.

    exact: deepface's own detection (vectors equal DeepFace.represent's; slower).
    workers: processes that embed photos (default: one per core; 1: this process).
    max_pixels: photos with more pixels are not decoded (an 'error' ledger row).
    min_face, min_sharpness: faces smaller (pixels) or blurrier (variance of the
    Laplacian) are counted in the ledger message, not stored.
    on_progress(done, total): called as files are counted and after each file;
    raising KeyboardInterrupt in it stops the run as Ctrl-C does, keeping every result.
    within: folders the photos must really be in (the web server's --photos): a
    photo whose real path (symlinks resolved) lies outside them is not read, and
    its ledger row says so.
    """
    folder = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(folder):
        raise FolderNotFoundError(f"{path_to_text(folder)} is not a directory")
    workers = default_workers() if workers is None else workers
    _check(batch_size, workers, max_pixels, min_face, min_sharpness)
    models.check_model_name(model_name)
    models.check_detector_name(detector_backend)
    options = EmbedOptions(
        model_name, detector_backend, align, expand_percentage, normalization, exact
    )
    settings = Settings(options, max_pixels, min_face, min_sharpness)
    started = time.perf_counter()
    report = IndexReport(path_to_text(folder), "", model_name, detector_backend, workers=workers)
    with open_database(db) as database:
        report.db = database.name
        prefix = path_to_text(folder.rstrip(os.sep) + os.sep)
        writer = _Writer(database, prefix, options, batch_size, report)
        with writer.clock():
            schema.create_schema(database)
            schema.check_model(database, model_name)  # refuse before loading a network
            seen = ledger.entries_under(database, prefix)
        roots = None if within is None else tuple(os.path.realpath(r) for r in within)
        walk = Walk(folder, within=roots)
        listed: set[str] = set()
        bar = _progress_bar(progress)
        if on_progress is not None:
            bar = _Reporting(bar, on_progress)
        try:
            _run(walk, seen, settings, writer, listed, bar, workers)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            bar.close()
        # Results already computed are complete: keep them, even after Ctrl-C.
        # (Any other error has propagated: its batch was rolled back.)
        writer.flush()
        with writer.clock():
            sync_people(database)
        for where, reason in walk.unlisted.items():
            report.errors += 1
            report.error_messages[where] = (
                f"cannot list folder {where}: {reason}; nothing under it was pruned"
            )
        if not report.interrupted:
            gone = sorted(path for path in set(seen) - listed if walk.saw(path))
            report.unseen = sum(1 for path in set(seen) - listed if not walk.saw(path))
            if prune:
                with writer.clock(), database.transaction():
                    for path in gone:
                        faces.delete_image(database, path)
                        ledger.delete(database, path)
                report.pruned = len(gone)
            else:
                report.missing = len(gone)
            if not writer.collection_ready and schema.get_collection(database) is None:
                writer.ensure_collection()  # a new gallery records its model even when empty
            with writer.clock():
                knn.refresh_gallery_index(database, progress)
    report.seconds_total = time.perf_counter() - started
    if report.interrupted:
        raise IndexInterrupted(report)
    return report


def sync_people(database: Database) -> None:
    """Folders become people: new faces of gallery/<person>/ get that person."""
    people.upgrade(database)
    with database.transaction():
        people.sync_folders(database)


def _unchanged(previous: ledger.Seen | None, sha256: str, options: EmbedOptions) -> bool:
    return bool(
        previous
        and previous.sha256 == sha256
        and previous.outcome in FINAL_OUTCOMES
        and previous.detector_backend == options.detector_backend
    )


def _run(
    walk: Walk, seen: dict, settings: Settings, writer: _Writer, listed: set, bar: Any, workers: int
) -> None:
    """Read and hash every photo, embed the changed ones, hand results to the writer."""
    report = writer.report
    pool = Pool(workers, settings) if workers > 1 else None
    waiting: list[Any] = []  # before the pool starts: results and photos, in order

    faces_done = [0]

    def done(result: Result) -> None:
        faces_done[0] += len(result.faces)
        bar.set_postfix(faces=faces_done[0], refresh=False)
        bar.update(1)

    def drain() -> None:
        for result in pool.ready():
            writer.add(result)

    try:
        paths = list(walk.photos())
        report.files_seen = len(paths)
        bar.reset(total=len(paths))
        for path in paths:
            text = path_to_text(path)
            listed.add(text)
            try:
                data = photo.read(walk.readable(path))
            except OSError as err:
                item: Any = photo.read_error(text, err)
            else:
                sha256 = photo.sha256_of(data)
                if _unchanged(seen.get(text), sha256, settings.options):
                    report.unchanged += 1
                    bar.update(1)
                    continue
                item = (text, data, sha256)
            if pool is None:  # one worker: this process
                result = item if isinstance(item, Result) else _inline(item, settings, writer)
                writer.add(result)  # before done(): an on_progress that stops the run keeps it
                done(result)
                continue
            if not pool.started:
                waiting.append(item)
                if sum(1 for w in waiting if not isinstance(w, Result)) < 2:
                    continue  # one photo to embed is not worth starting processes for
                tick = time.perf_counter()
                writer.dimensions = pool.start()
                report.seconds_startup += time.perf_counter() - tick
                queued, waiting = waiting, []
            else:
                queued = [item]
            for entry in queued:
                if isinstance(entry, Result):
                    done(entry)
                    pool.add_ready(entry)
                else:
                    pool.submit(*entry)
            pool.wait(done, block_until=2 * pool.workers)
            drain()
        if pool is not None and pool.started:
            pool.wait(done, block_until=0)
            drain()
        for entry in waiting:  # the pool never started: at most one photo to embed
            result = entry if isinstance(entry, Result) else _inline(entry, settings, writer)
            writer.add(result)
            done(result)
    except BaseException:
        if pool is not None and pool.started:
            drain()  # what finished in order is kept
        raise
    finally:
        if pool is not None:
            pool.close(now=True)


def _inline(item: tuple[str, bytes, str], settings: Settings, writer: _Writer) -> Result:
    if writer.dimensions is None:
        tick = time.perf_counter()
        writer.dimensions = photo.model_dimensions(settings.options)
        writer.report.seconds_startup += time.perf_counter() - tick
    return photo.process(*item, settings)


def _count(report: IndexReport, result: Result) -> None:
    if result.outcome == "indexed":
        report.indexed += 1
        report.faces_added += len(result.faces)
        report.faces_dropped += result.dropped
    elif result.outcome == "no_face":
        report.no_face += 1
    elif result.outcome == "not_image":
        report.not_image += 1
    else:
        report.errors += 1
        report.error_messages[result.path] = result.message or ""


class _Reporting:
    """The progress bar, also telling on_progress(done, total) after each file."""

    def __init__(self, bar: Any, on_progress: Callable[[int, int], None]) -> None:
        self._bar = bar
        self._on_progress = on_progress
        self._done = 0  # a disabled tqdm does not count
        self._total = 0

    def reset(self, total: int = 0) -> None:
        self._bar.reset(total=total)
        self._done, self._total = 0, total
        self._on_progress(0, total)

    def update(self, n: int = 1) -> None:
        self._bar.update(n)
        self._done += n
        self._on_progress(self._done, self._total)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bar, name)


def _progress_bar(enabled: bool):  # type: ignore[no-untyped-def]
    from tqdm import tqdm

    return tqdm(total=0, unit="photo", desc="indexing", disable=not enabled, dynamic_ncols=True)


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
    try:
        vectors = np.asarray(embeddings, dtype=np.float32)
    except (TypeError, ValueError) as err:  # ragged lists, strings, ...
        raise VectorError(
            f"embeddings must be a 2-D array of numbers, vectors of equal length: {err}"
        ) from None
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
