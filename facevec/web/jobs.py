"""Index and clustering runs started from the web: a background thread each, one at
a time.

One at a time because a gallery has one writer; searches go on meanwhile (SQLite
in WAL mode reads a consistent snapshot). Progress lives in memory and is read
by polling. Cancelling stops the run as Ctrl-C stops ``facevec index``: finished
batches stay, and the next run picks up where it stopped. A run of one worker hands
its photos to the server's embedding processes (``embedder``), one at a time, as a
search does: it shares their models and waits its turn among the searches. A
clustering run (``facevec people cluster``) reports the faces it has compared;
cancelled, it writes nothing.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Any

from ..engine.embed import Embedder, embedded_by
from ..errors import FacevecError, JobRunningError
from ..ingest import IndexInterrupted, index
from .http_errors import message_of

KEEP_FINISHED = 20


@dataclass
class Job:
    """One run: what it does (index a folder, or cluster) and how far it is."""

    id: str
    folder: str | None  # the folder indexed; None for a clustering run
    options: dict[str, Any]
    kind: str = "index"  # index | cluster
    state: str = "queued"  # queued | running | done | failed | cancelled
    done: int = 0  # files looked at (index), faces compared (cluster)
    total: int | None = None
    started_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    report: dict[str, Any] | None = None
    error: str | None = None
    cancel_requested: bool = False

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def as_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result.pop("cancel_requested")
        return result


class IndexJobs:
    """The index jobs of one server, and the thread that runs the current one."""

    def __init__(
        self, db: str, roots: tuple[str, ...] = (), embedder: Embedder | None = None
    ) -> None:
        self._db = db
        self._roots = roots  # photos are read only from under these real paths
        self._embedder = embedder  # None: the job's own thread embeds
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._threads: dict[str, threading.Thread] = {}

    def start(self, folder: str, **options: Any) -> Job:
        """Index `folder` (facevec.index's options)."""
        return self._start("index", folder, options)

    def start_cluster(self, **options: Any) -> Job:
        """Group the faces with no person into people (facevec.people.cluster's options)."""
        return self._start("cluster", None, options)

    def _start(self, kind: str, folder: str | None, options: dict[str, Any]) -> Job:
        with self._lock:
            for job in self._jobs.values():
                if job.active:
                    what = job.folder if job.kind == "index" else "grouping faces into people"
                    raise JobRunningError(
                        f"{job.kind} job {job.id} ({what}) is still running; wait for it "
                        f"or cancel it first"
                    )
            job = Job(id=uuid.uuid4().hex[:12], folder=folder, options=options, kind=kind)
            self._jobs[job.id] = job
            self._forget_old()
            thread = threading.Thread(
                target=self._run, args=(job,), name=f"facevec-{kind}-{job.id}", daemon=True
            )
            self._threads[job.id] = thread
        thread.start()
        return job

    def _forget_old(self) -> None:
        finished = [job for job in self._jobs.values() if not job.active]
        for job in finished[: max(0, len(finished) - KEEP_FINISHED)]:
            del self._jobs[job.id]
            self._threads.pop(job.id, None)

    def _run(self, job: Job) -> None:
        with embedded_by(self._embedder):
            if job.kind == "index":
                self._index(job)
            else:
                self._cluster(job)

    @staticmethod
    def _progress(job: Job) -> Any:
        def progress(done: int, total: int) -> None:
            job.done, job.total = done, total
            if job.cancel_requested:
                raise KeyboardInterrupt

        return progress

    def _cluster(self, job: Job) -> None:
        from ..people import cluster

        job.state = "running"
        try:
            report = cluster(
                self._db, progress=False, on_progress=self._progress(job), **job.options
            ).as_dict()
            report["skipped"] = {str(face): why for face, why in report["skipped"].items()}
            job.done = job.total = report["unassigned"]  # also when there was none to compare
            job.report, job.state = report, "done"
        except KeyboardInterrupt:  # nothing written: clustering writes at its end
            job.state = "cancelled"
        except Exception as err:
            self._failed(job, err)
        finally:
            job.finished_at = time.time()

    @staticmethod
    def _failed(job: Job, err: Exception) -> None:
        """A failed run says why; a database error too: the server goes on."""
        job.state = "failed"
        if isinstance(err, FacevecError):
            job.error = str(err)
            return
        job.error = message_of(err)
        if job.error == str(err):
            job.error = f"{type(err).__name__}: {err}"

    def _index(self, job: Job) -> None:
        assert job.folder is not None
        job.state = "running"
        try:
            report = index(
                job.folder,
                self._db,
                progress=False,
                on_progress=self._progress(job),
                within=self._roots,
                **job.options,
            )
            job.report, job.state = report.as_dict(), "done"
        except IndexInterrupted as stop:
            job.report, job.state = stop.report.as_dict(), "cancelled"
        except KeyboardInterrupt:  # before the first photo
            job.state = "cancelled"
        except Exception as err:
            self._failed(job, err)
        finally:
            job.finished_at = time.time()

    def get(self, job_id: str) -> Job | None:
        return self._jobs.get(job_id)

    def all(self) -> list[Job]:
        return sorted(self._jobs.values(), key=lambda job: job.started_at, reverse=True)

    def cancel(self, job_id: str) -> Job | None:
        job = self._jobs.get(job_id)
        if job is not None and job.active:
            job.cancel_requested = True
        return job

    def wait(self, job_id: str, timeout: float | None = None) -> None:
        thread = self._threads.get(job_id)
        if thread is not None:
            thread.join(timeout)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Cancel what runs and wait for it to commit what it finished."""
        for job in list(self._jobs.values()):
            self.cancel(job.id)
        deadline = time.monotonic() + timeout
        for thread in list(self._threads.values()):
            thread.join(max(0.0, deadline - time.monotonic()))
