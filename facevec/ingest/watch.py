"""Keep a gallery in step with photo folders as they change (``facevec watch``).

A watcher first catches up: one rescan of each folder (``index`` with prune),
which compares every file's stat with its ledger row and reads only the files
whose stat changed, so a restart after a crash or a reboot costs seconds for
100,000 unchanged photos. Files moved while it was away keep their faces: a new
file whose inode, size and modification time (or, same size, content hash) are
those of a vanished file's ledger row takes over its faces and row before the
rescan, which then finds it unchanged.

Then it follows the platform's file events (watchdog: inotify, FSEvents,
ReadDirectoryChangesW). The paths they name are collected until the folders
have been quiet for ``settle`` seconds (at most ``max_delay`` after the first
change) and handed to ``update_paths`` at once: the same ledger, batches,
end-of-run steps and interrupt safety as ``index``. A move first carries the
file's faces and ledger row to its new path (a folder's, every file under it),
so a photo that was only moved or renamed is not embedded again: the update
finds its stat as recorded, or else its content hash. Ctrl-C, or ``stop()`` from
another thread, ends it; batches committed stay, and what was not yet done is
caught up on at the next start.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..engine import models
from ..errors import MissingDependencyError, MissingWeightsError
from ..options import DEFAULT_DETECTOR, DEFAULT_MODEL, EmbedOptions
from ..storage import ledger, schema
from ..storage.database import Database, DbArg, open_database
from . import (
    IndexInterrupted,
    IndexReport,
    _folder,
    _rebased,
    _spelling_of,
    _stored_folder,
    index,
    update_paths,
)
from .moves import carry_rows
from .names import path_from_text, path_to_text
from .pool import default_workers
from .walk import IMAGE_EXTENSIONS

SETTLE_SECONDS = 1.0  # quiet time before the changes seen are handed over
MAX_DELAY_SECONDS = 10.0  # ...at the latest this long after the first of them
RETRY_SECONDS = (5.0, 60.0)  # after a failed update: first wait, longest wait
POOL_FROM = 32  # a batch naming this many paths is embedded by the worker processes

__all__ = ["WatchStatus", "Watcher", "watch"]


@dataclass
class WatchStatus:
    """What the watcher just did, for a status line.

    event: 'caught_up' (a folder's rescan at start), 'watching' (events followed
    from now on), 'updated' (a batch of changes done), 'failed' (a batch that will
    be retried; `message` says why), 'stopped'.
    """

    event: str
    folder: str | None = None
    report: IndexReport | None = None
    moved: int = 0  # files whose faces followed them to a new path (report.moved)
    message: str | None = None
    paths: list[str] = field(default_factory=list)  # the changed paths of 'updated', 'failed'


def _photo_name(path: str) -> bool:
    """Whether a file of this name is a photo to index (as the folder walk decides)."""
    name = os.path.basename(path)
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


class _Changes:
    """The paths file events named since the last batch, and the moves among them.

    watchdog calls ``dispatch`` from its own thread; ``take`` hands them over.
    """

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._paths: dict[str, None] = {}
        self._moves: list[tuple[str, str]] = []
        self._first = self._last = 0.0
        self.stopping = False

    def dispatch(self, event: Any) -> None:  # watchdog's handler interface
        kind, directory = event.event_type, event.is_directory
        if kind in ("opened", "closed_no_write") or (directory and kind in ("modified", "closed")):
            return  # a folder's own mtime changes with every file added: noise
        source = os.fsdecode(event.src_path)
        ends = [source]
        if kind == "moved":
            ends.append(os.fsdecode(event.dest_path))
        named = [path for path in ends if directory or _photo_name(path)]
        if named:
            moves = [(ends[0], ends[1])] if len(named) == 2 else []
            self.add(named, moves)

    def add(self, paths: Iterable[str], moves: Iterable[tuple[str, str]] = ()) -> None:
        with self._condition:
            now = time.monotonic()
            if not self._paths:
                self._first = now
            self._last = now
            self._paths.update(dict.fromkeys(paths))
            self._moves.extend(moves)
            self._condition.notify_all()

    def take(self, settle: float, max_delay: float) -> tuple[list[str], list[tuple[str, str]]]:
        """Wait for changes, then until none came for `settle` seconds (at most
        `max_delay` after the first); empty lists once stopping."""
        with self._condition:
            while not self.stopping:
                if self._paths:
                    due = min(self._last + settle, self._first + max_delay)
                    if time.monotonic() >= due:
                        paths, moves = list(self._paths), self._moves
                        self._paths, self._moves = {}, []
                        return paths, moves
                    wait = due - time.monotonic()
                else:
                    wait = 0.5
                # Short waits: Ctrl-C reaches the main thread between them.
                self._condition.wait(min(max(wait, 0.01), 0.5))
            return [], []

    def take_moves(self) -> list[tuple[str, str]]:
        """The moves not yet taken, at once; their paths stay for the next batch."""
        with self._condition:
            moves, self._moves = self._moves, []
            return moves

    def pending(self) -> bool:
        with self._condition:
            return bool(self._paths)

    def count(self) -> int:
        """How many paths wait for the next batch."""
        with self._condition:
            return len(self._paths)

    def moving_away(self) -> list[str]:
        """The sources of the moves not yet taken."""
        with self._condition:
            return [source for source, _ in self._moves]

    def pause(self, seconds: float) -> None:
        """Sleep, ended early by stop()."""
        with self._condition:
            deadline = time.monotonic() + seconds
            while not self.stopping and time.monotonic() < deadline:
                self._condition.wait(min(0.5, deadline - time.monotonic()))

    def stop(self) -> None:
        with self._condition:
            self.stopping = True
            self._condition.notify_all()


class Watcher:
    """Keeps `db` in step with `folders`: ``run()`` catches up, then follows events.

    The settings are ``index``'s (model_name and detector_backend None: the
    gallery's own, else the defaults). workers: processes for the catch-up and for
    batches of at least POOL_FROM paths (default: one per core); smaller batches
    are embedded in this process, whose model is loaded once, after the catch-up.
    on_status(WatchStatus) hears of each step; progress shows the catch-up's bar.
    """

    def __init__(
        self,
        folders: Sequence[str | os.PathLike[str]],
        db: DbArg,
        *,
        model_name: str | None = None,
        detector_backend: str | None = None,
        workers: int | None = None,
        progress: bool = False,
        settle: float = SETTLE_SECONDS,
        max_delay: float = MAX_DELAY_SECONDS,
        on_status: Callable[[WatchStatus], None] | None = None,
        **settings: Any,
    ) -> None:
        if not folders:
            raise TypeError("Watcher needs at least one folder")
        self.spellings = [_folder(folder) for folder in folders]
        self.db = db
        self.model_name, self.detector_backend = model_name, detector_backend
        self.workers = workers
        self.progress = progress
        self.settle, self.max_delay = settle, max_delay
        self.on_status = on_status or (lambda status: None)
        self.settings = settings  # the rest of index's keyword arguments
        self.changes = _Changes()
        self.ready = threading.Event()  # set once caught up and following events
        self._busy = False  # a batch under way
        # Files (text) whose faces a move carried, until an update counts them as moved.
        self._carried: set[str] = set()

    def _observe(self) -> Any:
        """watchdog's observer of the folders, started."""
        try:
            from watchdog.observers import Observer
        except ImportError as err:  # a dependency of facevec: a broken install
            raise MissingDependencyError(
                f"facevec watch needs the watchdog package ({err}): pip install watchdog"
            ) from err
        observer = Observer()
        for spellings in self.spellings:
            observer.schedule(self.changes, spellings[0], recursive=True)
        observer.daemon = True
        observer.start()
        return observer

    # The run --------------------------------------------------------------------

    def run(self) -> None:
        """Catch up, then follow the folders until stop() (Ctrl-C propagates:
        committed batches stay, the next run catches up on the rest)."""
        observer = self._observe()  # first: what changes during the catch-up is seen
        try:
            self._choose_model()
            for spellings in self.spellings:
                if self.changes.stopping:
                    return
                self.catch_up(spellings)
            if self.changes.stopping:
                return
            models.prepare(self._embed_options())  # the first event waits for no model
            self.ready.set()
            self.on_status(WatchStatus("watching"))
            retry = RETRY_SECONDS[0]
            while not self.changes.stopping:
                paths, moves = self.changes.take(self.settle, self.max_delay)
                if not paths:
                    continue
                self._busy = True
                try:
                    done = self._apply(paths, moves)
                finally:
                    self._busy = False
                if done:
                    retry = RETRY_SECONDS[0]
                else:
                    self.changes.pause(retry)
                    retry = min(2 * retry, RETRY_SECONDS[1])
        except KeyboardInterrupt:
            if not self.changes.stopping:
                raise  # Ctrl-C: the caller says so
        finally:
            observer.stop()
            observer.join()
            self.on_status(WatchStatus("stopped"))

    def idle(self) -> bool:
        """Whether it follows events with nothing to do: caught up, no change waiting
        and no batch under way."""
        return self.ready.is_set() and not self._busy and not self.changes.pending()

    def queued(self) -> int:
        """Changed paths waiting for the next batch (not counting one under way)."""
        return self.changes.count()

    def stop(self) -> None:
        """End run() from another thread: an update under way stops as Ctrl-C stops
        index (finished batches stay)."""
        self.changes.stop()

    def catch_up(self, spellings: list[str]) -> IndexReport:
        """Bring one folder up to date after time away: moves found, then a rescan
        (index carries the moves first, moves.carry_moved_away)."""
        report = index(
            spellings[0],
            self.db,
            prune=True,
            workers=self.workers,
            progress=self.progress,
            **self._index_settings(),
        )
        self.on_status(WatchStatus("caught_up", report.folder, report, report.moved))
        return report

    # One batch of changes -----------------------------------------------------

    def _apply(self, paths: list[str], moves: list[tuple[str, str]]) -> bool:
        """Carry the moves, then hand the paths to update_paths, folder by folder;
        False if something failed (what was not done is kept for the retry)."""
        grouped: dict[int, list[str]] = {}
        for path in paths:
            where = self._folder_of(path)
            if where is not None:  # watchdog reports only under the folders given
                grouped.setdefault(where, []).append(path)
        moved: dict[int, int] = {}  # files carried, per folder
        try:
            for where, group in grouped.items():  # all first: a move between two folders
                targets = set(group)
                moved[where] = self._carry(
                    self.spellings[where], [move for move in moves if move[1] in targets]
                )
        except (KeyboardInterrupt, MissingWeightsError, MissingDependencyError):
            raise
        except Exception as err:  # a database away: retried
            self.changes.add(paths, moves)
            self.on_status(WatchStatus("failed", message=_reason(err), paths=paths))
            return False
        # A path moved on again since (an event not taken yet) keeps its rows for
        # that move to carry, rather than losing them here.
        onwards = self.changes.moving_away()
        ok = True
        for where, group in grouped.items():
            spellings = self.spellings[where]
            group = [path for path in group if not _moved_on(path, onwards)]
            try:  # moves seen since this batch was taken go first: the walk of a
                # folder would find their files new
                for late_where, count in self._carry_late().items():
                    moved[late_where] = moved.get(late_where, 0) + count
            except (KeyboardInterrupt, MissingWeightsError, MissingDependencyError):
                raise
            except Exception:  # their paths are still pending: updated as new files
                pass
            if not group and not moved[where]:
                continue
            try:
                report = update_paths(
                    spellings[0],
                    self.db,
                    group,
                    workers=self._workers_for(group),
                    moved=[path_from_text(text) for text in self._carried],
                    **self._index_settings(),
                )
            except IndexInterrupted as stop:
                self.on_status(
                    WatchStatus(
                        "updated",
                        stop.report.folder,
                        stop.report,
                        stop.report.moved,
                        paths=group,
                    )
                )
                raise
            except (KeyboardInterrupt, MissingWeightsError, MissingDependencyError):
                raise
            except Exception as err:  # a database away, a folder gone: retried
                self.changes.add(group)
                self.on_status(
                    WatchStatus(
                        "failed", path_to_text(spellings[0]), message=_reason(err), paths=group
                    )
                )
                ok = False
                continue
            self._counted(group, spellings)
            self.on_status(WatchStatus("updated", report.folder, report, report.moved, paths=group))
        return ok

    def _counted(self, paths: list[str], spellings: list[str]) -> None:
        """Carried files at or under `paths` have been counted by their update."""
        texts = {path_to_text(_rebased(p, spellings, s)) for p in paths for s in spellings}
        self._carried = {
            carried
            for carried in self._carried
            if not any(carried == t or carried.startswith(t.rstrip("/") + "/") for t in texts)
        }

    def _carry_late(self) -> dict[int, int]:
        """Carry the moves seen since the batch was taken; files carried per folder."""
        late = self.changes.take_moves()
        carried = {}
        for where, spellings in enumerate(self.spellings):
            here = [move for move in late if self._folder_of(move[1]) == where]
            if here:
                carried[where] = self._carry(spellings, here)
        return carried

    def _carry(self, spellings: list[str], moves: list[tuple[str, str]]) -> int:
        """The faces and ledger rows of moved files (and folders) go to the new paths."""
        if not moves:
            return 0
        with open_database(self.db) as database:
            folder = _stored_folder(database, spellings)
            prefix = path_to_text(folder.rstrip(os.sep) + os.sep)
            pairs = []
            for source, target in moves:
                source_text = path_to_text(self._stored_spelling(database, source))
                target_text = path_to_text(_rebased(target, spellings, folder))
                under = ledger.paths_under(database, source_text.rstrip("/") + "/")
                pairs.append((source_text, target_text))
                pairs.extend(
                    (path, target_text.rstrip("/") + path[len(source_text.rstrip("/")) :])
                    for path in under
                )
            carried = carry_rows(database, pairs, prefix)
        for source, target in carried:  # a file moved on is counted where it ends
            self._carried.discard(source)
            self._carried.add(target)
        return len(carried)

    def _stored_spelling(self, database: Database, path: str) -> str:
        where = self._folder_of(path)
        if where is None:  # moved in from a folder not watched
            return path
        spellings = self.spellings[where]
        return _rebased(path, spellings, _stored_folder(database, spellings))

    # Settings -----------------------------------------------------------------

    def _folder_of(self, path: str) -> int | None:
        for where, spellings in enumerate(self.spellings):
            if _spelling_of(path, spellings) is not None:
                return where
        return None

    def _choose_model(self) -> None:
        """No model or detector given: the gallery's own, else the defaults."""
        if self.model_name is not None and self.detector_backend is not None:
            return
        with open_database(self.db) as database:
            collection = schema.get_collection(database) if schema.has_schema(database) else None
        if self.model_name is None:
            self.model_name = collection.model_name if collection else DEFAULT_MODEL
        if self.detector_backend is None:
            stored = collection.detector_backend if collection else None
            self.detector_backend = stored or DEFAULT_DETECTOR

    def _index_settings(self) -> dict[str, Any]:
        return dict(
            self.settings,
            model_name=self.model_name,
            detector_backend=self.detector_backend,
            on_progress=self._interruptible,
        )

    def _interruptible(self, done: int, total: int) -> None:
        if self.changes.stopping:
            raise KeyboardInterrupt

    def _workers_for(self, paths: list[str]) -> int:
        if len(paths) < POOL_FROM:
            return 1
        return self.workers or default_workers()

    def _embed_options(self) -> EmbedOptions:
        s = self.settings
        return EmbedOptions(
            str(self.model_name),
            str(self.detector_backend),
            s.get("align", True),
            s.get("expand_percentage", 0),
            s.get("normalization", "base"),
            s.get("exact", False),
        )


def _moved_on(path: str, sources: list[str]) -> bool:
    """Whether `path` is gone, as one of `sources` (or under one)."""
    if not sources or os.path.lexists(path):
        return False
    return any(
        path == source or path.startswith(source.rstrip(os.sep) + os.sep) for source in sources
    )


def _reason(err: Exception) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0] if text else ''}"


def watch(
    folders: Sequence[str | os.PathLike[str]] | str | os.PathLike[str],
    db: DbArg,
    **options: Any,
) -> Watcher:
    """Watch `folders` (one or several) into `db` until Ctrl-C; see Watcher for the
    options. Returns the watcher once it has stopped."""
    if isinstance(folders, (str, os.PathLike)):
        folders = [folders]
    watcher = Watcher(folders, db, **options)
    watcher.run()
    return watcher
