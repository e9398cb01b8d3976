"""Put faces in a gallery: index a folder of photos, or add precomputed vectors.

``index`` walks a folder, skips what is unchanged and embeds the rest, in worker
processes (``workers``, one per core by default) or in this one. A file is
unchanged when its ledger row has the same size, modification time and inode
(nothing is read), or, when its stat changed, the same content hash; either way
only if the row's settings (model, detector, quality floors) are the run's.
Results are written by this process alone, in the folder's order, in batches of
one transaction each, together with the ledger rows that say what became of every
file. A run killed at any point therefore loses no committed batch, and the next
run redoes only files whose ledger row is missing or stale; replacing an image's
faces makes the redo free of duplicates. ``update_paths`` does the same for a list
of files or folders (what a watcher saw change), removing those that are gone.

File paths are stored in the text form of :mod:`facevec.ingest.names`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

import numpy as np

from .. import knn
from ..engine import models
from ..engine.decode import DEFAULT_MAX_PIXELS, support_missing
from ..errors import FolderNotFoundError, InvalidParameterError, InvalidVectorError, VectorError
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from ..people.keep_current import PeopleStep, has_thresholds, keep_people_current, start_mark
from ..storage import faces, ledger, schema
from ..storage import people as people_store
from ..storage.database import Database, DbArg, open_database
from ..storage.dialects import SQLITE
from ..storage.write_behind import WriteBehind
from ..vectors import check_vectors
from . import photo
from .moves import FINAL_OUTCOMES, carry_moved_away, carry_rows, matching_moves
from .names import path_from_text, path_to_text
from .photo import (
    DEFAULT_MIN_CONFIDENCE,
    DEFAULT_MIN_FACE,
    NEEDS_FORMATS,
    Result,
    Settings,
    default_min_confidence,
)
from .pool import Pool, default_workers
from .walk import IMAGE_EXTENSIONS, Walk, folder_spellings, readable

__all__ = [
    "Added",
    "IMAGE_EXTENSIONS",
    "DEFAULT_MAX_PIXELS",
    "DEFAULT_MIN_CONFIDENCE",
    "DEFAULT_MIN_FACE",
    "IndexInterrupted",
    "IndexReport",
    "add",
    "index",
    "path_from_text",
    "path_to_text",
    "update_paths",
]


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
    faces_dropped: int = 0  # found, but below min_confidence, min_face or min_sharpness
    no_face: int = 0
    not_image: int = 0
    errors: int = 0
    # Moved or renamed files that kept their faces (not embedded again); each photo
    # seen is counted once: unchanged, moved, indexed, no_face, not_image or errors.
    moved: int = 0
    pruned: int = 0  # removed: gone from the folder (prune), or gone paths (update_paths)
    missing: int = 0  # in the ledger, gone from the folder, kept (no prune)
    unseen: int = 0  # in the ledger, under a folder that could not be listed: kept
    interrupted: bool = False
    seconds_total: float = 0.0
    seconds_startup: float = 0.0  # loading the model(s) before the first photo
    seconds_database: float = 0.0
    error_messages: dict[str, str] = field(default_factory=dict)
    # The people step after the run (facevec.people.keep_current); None: not run
    # (people=False, or the run was stopped before it).
    people: PeopleStep | None = None

    @property
    def database_share(self) -> float:
        return self.seconds_database / self.seconds_total if self.seconds_total else 0.0

    def as_dict(self) -> dict:
        result = asdict(self)
        result["database_share"] = self.database_share
        if self.people is not None:
            result["people"]["summary"] = self.people.summary
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
        self.touched: list[tuple[str, os.stat_result]] = []
        self.stats: dict[str, os.stat_result] = {}  # of the files read, until written
        self.dimensions: int | None = None
        self.collection_ready = False

    def clock(self) -> _Clock:
        return _Clock(self.report)

    def add(self, result: Result) -> None:
        result = self.checked(result)
        _count(self.report, result)
        status = self.stats.pop(result.path, None)
        if status is not None:
            result.mtime_ns, result.inode = status.st_mtime_ns, status.st_ino
        self.batch.append(result)
        if len(self.batch) >= self.batch_size:
            self.flush()

    def touch(self, text_path: str, status: os.stat_result) -> None:
        """An unchanged file whose stat changed: the ledger learns the new stat."""
        self.touched.append((text_path, status))
        if len(self.touched) >= 64 * self.batch_size:
            self.flush()

    def checked(self, result: Result) -> Result:
        """A photo whose model gave a vector that cannot be stored is an 'error'
        (its old faces kept, retried next run), not a failed batch."""
        if not result.faces:
            return result
        try:
            check_vectors(
                np.stack([face.embedding for face in result.faces]),
                self.dimensions,
                lambda row: f"the model's vector of face {row} of {result.path}",
            )
        except InvalidVectorError as err:
            return dataclasses.replace(result, outcome="error", faces=[], message=str(err))
        return result

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
            start_mark(self.db)  # before this run's first face
        self.collection_ready = True

    def flush(self) -> None:
        if not self.batch and not self.touched:
            return
        if self.batch:
            self.ensure_collection()
        stamp = schema.now()
        model, detector = self.options.model_name, self.options.detector_backend
        with self.clock(), self.db.transaction():
            for path, status in self.touched:
                ledger.touch(
                    self.db, path, status.st_size, status.st_mtime_ns, status.st_ino, stamp
                )
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
                        mtime_ns=result.mtime_ns,
                        inode=result.inode,
                        settings=result.settings,
                    ),
                )
        self.batch = []
        self.touched = []


class _Clock:
    """Adds the time of a block to the report's database time."""

    def __init__(self, report: IndexReport) -> None:
        self.report = report

    def __enter__(self) -> None:
        self.started = time.perf_counter()

    def __exit__(self, *exc: Any) -> None:
        self.report.seconds_database += time.perf_counter() - self.started


def _check(
    batch_size: int,
    workers: int,
    max_pixels: int,
    min_face: int,
    min_sharpness: float,
    min_confidence: float,
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
    if not 0 <= min_confidence <= 1:
        raise InvalidParameterError(f"min_confidence must be from 0 to 1, not {min_confidence}")


def _settings(
    model_name: str,
    detector_backend: str,
    align: bool,
    expand_percentage: int,
    normalization: str,
    exact: bool,
    batch_size: int,
    workers: int,
    max_pixels: int,
    min_face: int,
    min_sharpness: float,
    min_confidence: float | None,
) -> Settings:
    if min_confidence is None:
        min_confidence = default_min_confidence(detector_backend)
    _check(batch_size, workers, max_pixels, min_face, min_sharpness, min_confidence)
    models.check_model_name(model_name)
    models.check_detector_name(detector_backend)
    options = EmbedOptions(
        model_name, detector_backend, align, expand_percentage, normalization, exact
    )
    return Settings(options, max_pixels, min_face, min_sharpness, min_confidence)


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
    min_confidence: float | None = None,
    within: Sequence[str | os.PathLike[str]] | None = None,
    people_from_folders: bool = False,
    people: bool = True,
) -> IndexReport:
    """Index the photos under `folder` into `db`; see the module docstring.

    exact: deepface's own detection (vectors equal DeepFace.represent's; slower).
    workers: processes that embed photos (default: one per core; 1: this process).
    max_pixels: photos with more pixels are not decoded (an 'error' ledger row).
    min_face, min_sharpness, min_confidence: faces smaller (pixels), blurrier
    (variance of the Laplacian) or detected less surely (default: the floor measured
    for the detector, DEFAULT_MIN_CONFIDENCE; 0 for the others) are counted in the
    ledger message, not stored.
    on_progress(done, total): called as files are counted and after each file;
    raising KeyboardInterrupt in it stops the run as Ctrl-C does, keeping every result.
    within: folders the photos must really be in (the web server's --photos): a
    photo whose real path (symlinks resolved) lies outside them is not read, and
    its ledger row says so.
    people_from_folders: each subfolder's name (the `identity` column, the folder
    the photo is in) becomes a person, its faces that person's; a gallery that has
    folder people keeps making them. Else folders are only the `identity` column.
    people: at the end, the people step (facevec.people.keep_current): new faces
    recognised as known people, the rest grouped into new people (report.people).
    """
    spellings = _folder(folder)
    workers = default_workers() if workers is None else workers
    settings = _settings(
        model_name, detector_backend, align, expand_percentage, normalization, exact,
        batch_size, workers, max_pixels, min_face, min_sharpness, min_confidence,
    )  # fmt: skip
    return _ingest(
        spellings, db, None, settings, workers, batch_size, progress, on_progress, prune, within,
        _People(people, people_from_folders),
    )  # fmt: skip


def update_paths(
    folder: str | os.PathLike[str],
    db: DbArg,
    paths: Sequence[str | os.PathLike[str]],
    model_name: str = DEFAULT_MODEL,
    detector_backend: str = DEFAULT_DETECTOR,
    batch_size: int = 16,
    progress: bool = False,
    align: bool = True,
    expand_percentage: int = 0,
    normalization: str = "base",
    exact: bool = False,
    workers: int = 1,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    min_face: int = DEFAULT_MIN_FACE,
    min_sharpness: float = 0.0,
    on_progress: Callable[[int, int], None] | None = None,
    min_confidence: float | None = None,
    within: Sequence[str | os.PathLike[str]] | None = None,
    people_from_folders: bool = False,
    people: bool = True,
    moved: Collection[str | os.PathLike[str]] = (),
) -> IndexReport:
    """Bring these files or folders under `folder` up to date in `db`, as `index`
    does for the whole folder (same settings, ledger, batches and people step): new
    and changed photos are embedded, unchanged ones skipped (a stat, no read), and a
    path that no longer exists leaves the gallery with everything under it (faces and
    ledger rows; counted as pruned). A folder given is walked. For a watcher: hand it
    the paths its events named, created, modified, moved (both ends) or deleted.
    moved: files whose faces the caller has just carried there from their old path
    (as the watcher does for a move event): counted as moved, not as unchanged.
    """
    spellings = _folder(folder)
    settings = _settings(
        model_name, detector_backend, align, expand_percentage, normalization, exact,
        batch_size, workers, max_pixels, min_face, min_sharpness, min_confidence,
    )  # fmt: skip
    targets = []
    for path in paths:
        target = os.path.abspath(os.fspath(path))
        if target.startswith("//") and not target.startswith("///"):
            target = target[1:]  # as folder_spellings reads '//'
        if _spelling_of(target, spellings) is None:
            raise InvalidParameterError(
                f"{path_to_text(target)} is not under {path_to_text(spellings[0])}"
            )
        targets.append(target)
    return _ingest(
        spellings, db, targets, settings, workers, batch_size, progress, on_progress,
        within=within, people=_People(people, people_from_folders),
        carried=[os.path.abspath(os.fspath(path)) for path in moved],
    )  # fmt: skip


def _folder(folder: str | os.PathLike[str]) -> list[str]:
    """The folder's spellings (walk.folder_spellings); an error if it is no folder."""
    spellings = folder_spellings(folder)
    if not os.path.isdir(spellings[0]):
        raise FolderNotFoundError(f"{path_to_text(os.fspath(folder))} is not a directory")
    return spellings


def _spelling_of(path: str, spellings: list[str]) -> str | None:
    """The spelling of the folder that `path` (absolute) is written under, if any."""
    for spelling in spellings:
        if os.path.commonpath([path, spelling]) == spelling:
            return spelling
    return None


def _rebased(path: str, spellings: list[str], folder: str) -> str:
    """`path`, written under one spelling of the folder, under the stored one."""
    spelling = _spelling_of(path, spellings)
    if spelling is None or spelling == folder:
        return path
    return os.path.join(folder, os.path.relpath(path, spelling))


def _targets(
    database: Database, targets: list[str], roots: tuple[str, ...] | None = None
) -> tuple[list[str], dict[str, ledger.Seen], list[str], list[Walk]]:
    """update_paths' files to look at, their ledger rows, the paths gone (with the
    rows under a vanished folder), and the walks of the folders given."""
    files: list[str] = []
    gone: list[str] = []
    walks = []
    for target in dict.fromkeys(targets):
        if os.path.isdir(target):
            walk = Walk(target)
            walks.append(walk)
            files.extend(walk.photos())
            # Rows under it whose file is gone go too (a folder moved out and back).
            prefix = path_to_text(target.rstrip(os.sep) + os.sep)
            gone.extend(
                path
                for path in ledger.paths_under(database, prefix)
                if not os.path.lexists(path_from_text(path)) and walk.saw(path)
            )
        elif os.path.lexists(target):
            if os.path.splitext(target)[1].lower() in IMAGE_EXTENSIONS and not os.path.basename(
                target
            ).startswith("."):
                files.append(target)
        else:
            text = path_to_text(target)
            gone.extend(ledger.entries_at(database, [text]))
            gone.extend(ledger.paths_under(database, text.rstrip("/") + "/"))
    files = list(dict.fromkeys(files))
    seen = ledger.entries_at(database, [path_to_text(path) for path in files])
    return files, seen, sorted(set(gone)), walks


def _carry_given_moves(
    database: Database,
    files: list[str],
    seen: dict[str, ledger.Seen],
    gone_paths: list[str],
    prefix: str,
    roots: tuple[str, ...] | None,
) -> list[tuple[str, str]]:
    """update_paths given a vanished path and a new file that is the same photo:
    the file takes over its faces and ledger row (moves.carry_rows). Returns the
    (vanished, new) pairs carried."""
    if not gone_paths:
        return []
    gone = {
        text: row
        for text, row in ledger.entries_at(database, gone_paths).items()
        if row.outcome in FINAL_OUTCOMES
    }
    new = {text: path for path in files if (text := path_to_text(path)) not in seen}
    pairs = matching_moves(gone, new, roots) if gone and new else []
    return carry_rows(database, pairs, prefix) if pairs else []


def _ingest(
    spellings: list[str],
    db: DbArg,
    targets: list[str] | None,
    settings: Settings,
    workers: int,
    batch_size: int,
    progress: bool,
    on_progress: Callable[[int, int], None] | None,
    prune: bool = False,
    within: Sequence[str | os.PathLike[str]] | None = None,
    people: _People | None = None,
    carried: Sequence[str] = (),
) -> IndexReport:
    """index (targets None: the whole folder) or update_paths (those targets).
    carried: files (absolute) already carried to their path, counted as moved."""
    people = people or _People()
    options = settings.options
    roots = None if within is None else tuple(os.path.realpath(r) for r in within)
    started = time.perf_counter()
    report = IndexReport(
        path_to_text(spellings[0]), "", options.model_name, options.detector_backend,
        workers=workers,
    )  # fmt: skip
    with open_database(db) as database:
        report.db = database.name
        with _Clock(report):
            schema.create_schema(database)
            schema.check_model(database, options.model_name)  # refuse before loading a network
            folder = _stored_folder(database, spellings)
        prefix = path_to_text(folder.rstrip(os.sep) + os.sep)
        report.folder = path_to_text(folder)
        moved = {path_to_text(_rebased(path, spellings, folder)) for path in carried}
        writer = _Writer(database, prefix, options, batch_size, report)
        with writer.clock():
            if targets is None:
                # Files moved or renamed within the folder keep their faces (and ids).
                moved.update(target for _, target in carry_moved_away(database, folder, within))
                seen = ledger.entries_under(database, prefix)
                walk = Walk(folder)
                walks, gone_paths = [walk], []
            else:
                targets = [_rebased(target, spellings, folder) for target in targets]
                files, seen, gone_paths, walks = _targets(database, targets, roots)
                # Both ends of a move among the paths: the file keeps its faces (and ids).
                given = _carry_given_moves(database, files, seen, gone_paths, prefix, roots)
                moved.update(target for _, target in given)
                if given:
                    files, seen, gone_paths, walks = _targets(database, targets, roots)
        listed: set[str] = set()
        bar = _progress_bar(progress)
        if on_progress is not None:
            bar = _Reporting(bar, on_progress)
        try:
            paths = list(walk.photos()) if targets is None else files
            _run(paths, seen, settings, writer, listed, bar, workers, roots, moved)
        except KeyboardInterrupt:
            report.interrupted = True
        finally:
            bar.close()
        # Results already computed are complete: keep them, even after Ctrl-C.
        # (Any other error has propagated: its batch was rolled back.)
        writer.flush()
        for walk_ in walks:
            for where, reason in walk_.unlisted.items():
                report.errors += 1
                report.error_messages[where] = (
                    f"cannot list folder {where}: {reason}; nothing under it was pruned"
                )
        if not report.interrupted:
            if targets is None:
                gone = sorted(path for path in set(seen) - listed if walk.saw(path))
                report.unseen = sum(1 for path in set(seen) - listed if not walk.saw(path))
                if not prune:
                    report.missing, gone = len(gone), []
            else:
                gone = gone_paths
            if gone:
                with writer.clock(), database.transaction():
                    for path in gone:
                        faces.delete_image(database, path)
                        ledger.delete(database, path)
                report.pruned = len(gone)
            if not writer.collection_ready and schema.get_collection(database) is None:
                writer.ensure_collection()  # a new gallery records its model even when empty
        with writer.clock():
            sync_people(database, people.from_folders or None)
        if not report.interrupted:
            with writer.clock():
                knn.refresh_gallery_index(database, progress)
            report.people = end_of_run_people(database, people.step)
    report.seconds_total = time.perf_counter() - started
    if report.interrupted:
        raise IndexInterrupted(report)
    return report


def _stored_folder(database: Database, spellings: list[str]) -> str:
    """The folder's spelling to store: the canonical one, unless only an earlier
    version's spelling of it has ledger rows (that gallery keeps it)."""

    def has_rows(folder: str) -> bool:
        return ledger.has_entries_under(database, path_to_text(folder.rstrip(os.sep) + os.sep))

    canonical = spellings[0]
    if len(spellings) == 1 or has_rows(canonical) or not has_rows(spellings[1]):
        return canonical
    return spellings[1]


@dataclass(frozen=True)
class _People:
    """What a run does about people: the step at its end, folders as people."""

    step: bool = True
    from_folders: bool = False


def sync_people(database: Database, from_folders: bool | None = None) -> None:
    """Folder people stay current: new faces of a folder that is a person get that
    person. ``from_folders``: every folder becomes a person (None: only if the
    gallery has folder people already; see storage.people.sync_folders)."""
    people_store.upgrade(database)
    with database.transaction():
        people_store.sync_folders(database, from_folders)


def end_of_run_people(database: Database, enabled: bool = True) -> PeopleStep | None:
    """The end of every run that stored faces (index, update_paths, add): new faces
    are recognised as known people or grouped into new ones
    (people.keep_current.keep_people_current). Call it after the knn index is
    refreshed (the step searches it). None when disabled, the gallery is empty, or its
    model has no thresholds (vectors of a model facevec does not know)."""
    collection = schema.get_collection(database)
    if not enabled or collection is None or not has_thresholds(collection.model_name):
        return None
    return keep_people_current(database, collection.dimensions, collection.model_name)


def _current(previous: ledger.Seen | None, settings: Settings, fingerprint: str, path: str) -> bool:
    """Whether a ledger row stands for these settings, for a file whose content (or
    stat) is unchanged: its outcome stays valid and it was made with them."""
    if previous is None:
        return False
    if previous.settings is None:  # recorded before the ledger kept settings
        options = settings.options
        return (
            previous.outcome in FINAL_OUTCOMES
            and previous.model_name in (None, options.model_name)
            and previous.detector_backend == options.detector_backend
        )
    if previous.settings.endswith(NEEDS_FORMATS):
        # Its format could not be read: valid while the library is still missing.
        return previous.settings == fingerprint + NEEDS_FORMATS and support_missing(path)
    return (
        previous.outcome in FINAL_OUTCOMES and previous.settings == fingerprint
    )  # errors: retried


def _run(
    paths: list[str],
    seen: dict,
    settings: Settings,
    writer: _Writer,
    listed: set,
    bar: Any,
    workers: int,
    roots: tuple[str, ...] | None = None,
    carried: set[str] | frozenset[str] = frozenset(),
) -> None:
    """Stat every photo, read and hash those whose stat changed, embed the changed
    ones, hand results to the writer. An unchanged photo just carried to its path
    (`carried`) counts as moved."""
    report = writer.report
    pool = Pool(workers, settings) if workers > 1 else None
    waiting: list[Any] = []  # before the pool starts: results and photos, in order
    fingerprint = settings.fingerprint()

    faces_done = [0]

    def done(result: Result) -> None:
        faces_done[0] += len(result.faces)
        bar.set_postfix(faces=faces_done[0], refresh=False)
        bar.update(1)

    def drain() -> None:
        for result in pool.ready():
            writer.add(result)

    try:
        report.files_seen = len(paths)
        bar.reset(total=len(paths))
        for path in paths:
            text = path_to_text(path)
            listed.add(text)
            item = _look(path, text, seen.get(text), settings, fingerprint, writer, roots)
            if item is None and text in carried:
                report.moved += 1
                bar.update(1)
                continue
            if item is None:  # unchanged
                report.unchanged += 1
                bar.update(1)
                continue
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


def _look(
    path: str,
    text: str,
    previous: ledger.Seen | None,
    settings: Settings,
    fingerprint: str,
    writer: _Writer,
    roots: tuple[str, ...] | None = None,
) -> Result | tuple[str, bytes, str] | None:
    """None for an unchanged file; else a result known already (an unreadable file, or
    one whose real path leaves `roots`) or (path, bytes, hash) to embed."""
    try:
        path = readable(path, roots)
        status = photo.stat_of(path)
    except OSError as err:
        return photo.read_error(text, err)
    current = _current(previous, settings, fingerprint, path)
    stat = (status.st_size, status.st_mtime_ns, status.st_ino)
    if (
        current
        and previous
        and (previous.size_bytes, previous.mtime_ns, previous.inode) == stat
        and os.access(path, os.R_OK)  # one that became unreadable is reported
    ):
        return None  # nothing read
    try:
        data = photo.read(path)
    except OSError as err:
        return photo.read_error(text, err)
    sha256 = photo.sha256_of(data)
    if current and previous and previous.sha256 == sha256:
        writer.touch(text, status)  # same content, new stat (copied, touched, restored)
        return None
    writer.stats[text] = status
    return (text, data, sha256)


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


#: Faces per bulk insert of ``add`` (COPY, multi-row INSERT): one progress step.
ADD_BATCH = 10000
# A face known only by its vector: no box, no eyes.
_NO_AREA_COLUMNS = tuple(
    name
    for name in faces.STORED_FACE_COLUMNS
    if name.startswith(("facial_area_", "left_eye_", "right_eye_"))
)


def add(
    db: DbArg,
    img_names: Sequence[str],
    embeddings: Any,
    model_name: str = DEFAULT_MODEL,
    identities: Sequence[str | None] | None = None,
    people_from_folders: bool | None = None,
    people: bool = True,
    progress: bool = False,
) -> Added:
    """Store precomputed embeddings (from any pipeline) without deepface.

    One row per (img_name, embedding); repeated names become face 0, 1, ... of that
    image. Faces already stored under these names are replaced. Every vector is
    checked before anything is written, and the call is one transaction: a failure
    leaves the gallery as it was. The faces go in in bulk (COPY on PostgreSQL,
    multi-row INSERTs on MariaDB/MySQL), ADD_BATCH at a time, with a progress bar
    when `progress`. Returns the count (an int; its ``people`` says what the people
    step did, as index's report).
    people_from_folders: each identity becomes a person, as index's option does with
    folders (default: when identities are given, the caller saying who each face is).
    people: the people step at the end (recognise, group), as index.
    """
    try:  # float64: a value beyond float32's range is refused, not stored as infinity
        given = embeddings.dtype if isinstance(embeddings, np.ndarray) else None
        # float32 already: checked as it is (no float64 copy of a million vectors).
        values = np.asarray(embeddings, dtype=np.float32 if given == np.float32 else np.float64)
    except (TypeError, ValueError) as err:  # ragged lists, strings, ...
        raise VectorError(
            f"embeddings must be a 2-D array of numbers, vectors of equal length: {err}"
        ) from None
    if values.ndim == 1:
        values = values.reshape(1, -1)
    if values.ndim != 2 or values.shape[1] == 0:
        raise VectorError(
            f"embeddings must be a 2-D array (n x dimensions), not shape {values.shape}"
        )
    if len(img_names) != len(values):
        raise InvalidParameterError(f"{len(img_names)} img_names for {len(values)} embeddings")
    if identities is not None and len(identities) != len(values):
        raise InvalidParameterError(f"{len(identities)} identities for {len(values)} embeddings")
    vectors = check_vectors(values, None, lambda row: f"embedding {row} ({img_names[row]!r})")
    grouped: dict[str, list[int]] = {}
    for row, name in enumerate(img_names):
        grouped.setdefault(str(name), []).append(row)
    last = next(reversed(grouped), None)
    from tqdm import tqdm

    with open_database(db) as database:
        schema.create_schema(database)
        schema.ensure_collection(database, model_name, int(vectors.shape[1]), None)
        start_mark(database)
        with (
            database.transaction(),
            tqdm(total=len(vectors), unit="face", desc="add", disable=not progress) as bar,
        ):
            created = schema.now()
            # A gallery empty at the start has nothing to replace (names are unique here).
            replacing = faces.id_span(database) is not None
            shared = {
                "model_name": model_name,
                "detector_backend": None,
                **dict.fromkeys(_NO_AREA_COLUMNS),
                "face_confidence": 0.0,  # the confidence of Face.from_vector
                "face_image": None,
                "source_sha256": None,
                "created_at": created,
            }
            rows: list[int] = []
            names: list[str] = []
            indexes: list[int] = []
            owners: list[str | None] = []  # each face gets its image's first identity
            plan = faces.write_plan(database)
            # Each batch is encoded here while the one before it is being written.
            with WriteBehind(threaded=database.dialect is not SQLITE) as writes:
                for name, of_name in grouped.items():
                    rows += of_name
                    names += [name] * len(of_name)
                    indexes += range(len(of_name))
                    if identities is not None:
                        owners += [identities[of_name[0]]] * len(of_name)
                    if len(rows) >= ADD_BATCH or name == last:
                        batch = faces.FaceBatch(
                            vectors[rows],
                            {
                                **shared,
                                "img_name": names,
                                "face_index": indexes,
                                "identity": None if identities is None else owners,
                            },
                        )
                        writes.submit(
                            partial(
                                faces.replace_face_batch,
                                database,
                                faces.prepare_faces(batch, plan),
                                replacing,
                            ),
                            partial(_advance, bar, len(rows)),
                        )
                        rows, names, indexes, owners = [], [], [], []
        if people_from_folders is None:
            people_from_folders = identities is not None and any(
                identity is not None for identity in identities
            )
        sync_people(database, people_from_folders or None)
        knn.refresh_gallery_index(database)
        step = end_of_run_people(database, people)
    return Added(len(vectors), step)


def _advance(bar: Any, n: int, _written: Any) -> None:
    bar.update(n)


class Added(int):
    """The faces add stored (an int); ``people``: the people step, None if off."""

    people: PeopleStep | None

    def __new__(cls, count: int, people: PeopleStep | None = None) -> Added:
        added = super().__new__(cls, count)
        added.people = people
        return added
