"""What the server's watcher of its photo folders is doing (``serve --watch``):
GET /api/watch, and the status page's "Watching" section.

``WatchState`` hears every step of the watcher (facevec.ingest.watch.WatchStatus,
from the watcher's thread) and keeps what a user asks about: which folders, with
which settings, since when; catching up, watching, updating or retrying; how
many changed files wait; the last files updated and the last that could not be,
with the reason; the last error.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, Field

RECENT_FILES = 20  # files kept in each of last_files and failed_files

router = APIRouter()


def _stamp(seconds: float | None = None) -> str:
    moment = datetime.datetime.fromtimestamp(seconds or time.time(), datetime.timezone.utc)
    return moment.isoformat(timespec="seconds")


class WatchState:
    """The watcher's state, updated from its thread (``heard``), read by requests."""

    def __init__(
        self,
        folders: list[str],
        settings: dict[str, Any],
        forward: Callable[[Any], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._forward = forward
        self.watcher: Any = None  # set once made: asked how many paths wait
        self.folders = folders
        self.settings = settings
        self.started_at = _stamp()
        self.state = "starting"
        self.state_since = self.started_at
        self.caught_up: dict[str, dict[str, Any]] = {}
        self.last_update: dict[str, Any] | None = None
        self.last_files: deque[dict[str, Any]] = deque(maxlen=RECENT_FILES)
        self.failed_files: deque[dict[str, Any]] = deque(maxlen=RECENT_FILES)
        self.last_error: dict[str, Any] | None = None
        self.updates = 0

    def _enter(self, state: str) -> None:
        if state != self.state:
            self.state, self.state_since = state, _stamp()

    def starting(self) -> None:
        with self._lock:
            self._enter("catching up")

    def heard(self, status: Any) -> None:
        """One WatchStatus of the watcher."""
        with self._lock:
            self._record(status)
        if self._forward is not None:
            self._forward(status)

    def _record(self, status: Any) -> None:
        now = _stamp()
        report = status.report
        if status.event == "watching":
            self._enter("watching")
        elif status.event == "stopped":
            self._enter("stopped")
        elif status.event == "failed":
            self._enter("retrying")
            self.last_error = {"message": status.message, "folder": status.folder, "at": now}
        elif status.event in ("caught_up", "updated") and report is not None:
            counts = {
                "folder": report.folder,
                "at": now,
                "files": len(status.paths) if status.event == "updated" else report.files_seen,
                "indexed": report.indexed,
                "faces_added": report.faces_added,
                "unchanged": report.unchanged,
                "moved": status.moved,
                "removed": report.pruned,
                "no_face": report.no_face,
                "not_image": report.not_image,
                "errors": report.errors,
                "seconds": round(report.seconds_total, 3),
            }
            if status.event == "caught_up":
                self.caught_up[report.folder] = counts
            else:
                self.updates += 1
                self.last_update = counts
                if self.state == "retrying":
                    self._enter("watching")
            failed = report.error_messages
            for path in status.paths:
                self.last_files.append({"path": path, "at": now, "error": failed.get(path)})
            for path, message in failed.items():
                self.failed_files.append({"path": path, "message": message, "at": now})

    def failed(self, err: BaseException) -> None:
        """The watcher stopped on an error: the folders are no longer followed."""
        with self._lock:
            self._enter("failed")
            self.last_error = {"message": f"{type(err).__name__}: {err}", "at": _stamp()}

    def as_dict(self) -> dict[str, Any]:
        queued = self.watcher.queued() if self.watcher is not None else 0
        settings = dict(self.settings)
        if self.watcher is not None:  # None until run() reads the gallery's own
            settings["model_name"] = self.watcher.model_name
            settings["detector_backend"] = self.watcher.detector_backend
        with self._lock:
            return {
                "watching": self.state in ("catching up", "watching", "retrying"),
                "state": self.state,
                "state_since": self.state_since,
                "started_at": self.started_at,
                "folders": self.folders,
                "settings": settings,
                "queued": queued,
                "updates": self.updates,
                "caught_up": list(self.caught_up.values()),
                "last_update": self.last_update,
                "last_files": list(reversed(self.last_files)),
                "failed_files": list(reversed(self.failed_files)),
                "last_error": self.last_error,
            }


NOT_WATCHING: dict[str, Any] = {
    "watching": False,
    "state": "off",
    "state_since": None,
    "started_at": None,
    "folders": [],
    "settings": {},
    "queued": 0,
    "updates": 0,
    "caught_up": [],
    "last_update": None,
    "last_files": [],
    "failed_files": [],
    "last_error": None,
}


class WatchedFile(BaseModel):
    path: str
    at: str
    error: str | None = Field(None, description="Why it could not be indexed, if it could not.")


class FailedFile(BaseModel):
    path: str
    message: str
    at: str


class WatchOut(BaseModel):
    watching: bool = Field(description="Whether the folders are followed now.")
    state: str = Field(
        description="off (not started with --watch), catching up, watching, retrying "
        "(the last batch failed; it is tried again), stopped or failed (no longer watched)."
    )
    state_since: str | None
    started_at: str | None
    folders: list[str]
    settings: dict[str, Any] = Field(description="The ingest settings the watcher uses.")
    queued: int = Field(description="Changed paths waiting for the next batch.")
    updates: int = Field(description="Batches of changes done since the start.")
    caught_up: list[dict[str, Any]] = Field(description="Each folder's catch-up at the start.")
    last_update: dict[str, Any] | None = Field(description="The counts of the last batch.")
    last_files: list[WatchedFile] = Field(description="The last paths updated, newest first.")
    failed_files: list[FailedFile] = Field(
        description="The last files that could not be indexed, and why, newest first."
    )
    last_error: dict[str, Any] | None = Field(
        description="The last batch that failed (it is retried) or what stopped the watcher."
    )


def watch_state_of(request: Request) -> dict[str, Any]:
    state: WatchState | None = request.app.state.watch_state
    return NOT_WATCHING if state is None else state.as_dict()


@router.get(
    "/watch",
    summary="What the watcher of the photo folders is doing (serve --watch)",
    description="Its folders and settings, its state and since when, the changed files "
    "waiting, the last files updated and the last that could not be (with why), the "
    'last error. A server started without --watch answers state "off".',
    response_model=WatchOut,
)
def watch_endpoint(request: Request) -> dict[str, Any]:
    return watch_state_of(request)
