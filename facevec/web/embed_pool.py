"""The server's embedding processes: uploads decoded, detected and embedded in parallel.

A process runs its model on one photo at a time (``engine/embed.py`` holds a lock
around deepface's and dlib's shared model objects), so a server that embedded in its
own process would serve one photo search at a time, however many clients wait and
however many cores it has. ``EmbedPool`` is ``workers`` spawned processes (a fresh
interpreter each: never a fork of a server that holds TensorFlow's threads), each
loading the gallery's model once when it starts. A photo endpoint's thread hands the
upload's bytes to the pool (``uploads.decoding`` routes ``engine/embed.embed_bytes``
there) and gets the faces back; the rest of the request (the search, identify's
scoring, the response) stays in the server.

The pool starts with the app and stops with it. A worker that dies (killed, out of
memory, a decoder that crashes) breaks the pool: each request it held is answered 503
(``EmbedWorkerError``, naming how the worker ended), and new workers replace the pool
for the requests that follow. ``pool_size`` reads the size: ``--embed-workers``,
``FACEVEC_EMBED_WORKERS``, else one per core; 0 embeds in the server's own process.
"""

from __future__ import annotations

import concurrent.futures as futures
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from ..engine import embed, models
from ..errors import EmbedWorkerError, InvalidParameterError
from ..face import Face
from ..ingest import photo
from ..ingest.pool import _main_module_hidden, default_workers
from ..options import EmbedOptions

ENV = "FACEVEC_EMBED_WORKERS"
PER_CORE = 4  # the most workers a server starts per core: each holds a model in memory


def max_workers() -> int:
    return PER_CORE * default_workers()


def pool_size(value: object = None) -> int:
    """The embedding processes a server starts: `value` if given, else the environment's
    FACEVEC_EMBED_WORKERS, else one per core; 0: none (the server's own process
    embeds, one photo at a time). InvalidParameterError names what was wrong."""
    source = "embed_workers"
    if value is None:
        text = os.environ.get(ENV, "").strip()
        if not text:
            return default_workers()
        value, source = text, ENV
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, str) and value.strip().isdigit():
        number = int(value.strip())
    most = max_workers()
    if number is None or not 0 <= number <= most:
        raise InvalidParameterError(
            f"{source} must be a whole number from 0 (embed in the server's own process) "
            f"to {most} ({PER_CORE} per core), not {value!r}"
        )
    return number


def _start_worker(options: EmbedOptions | None) -> None:
    """A worker: as an index worker (Ctrl-C is the server's, end with the server,
    one OpenCV thread), then the gallery's model loaded before the first photo."""
    photo.start_worker(options or EmbedOptions())
    if options is None:
        return
    try:
        models.prepare(options)
    except Exception:  # missing weights, say: each photo's answer names it
        pass


def _started() -> int:
    return os.getpid()


def _decode_and_embed(
    data: bytes, name: str, options: EmbedOptions, max_pixels: int, measure_sharpness: bool
) -> list[Face]:
    return embed.decode_and_embed(data, name, options, max_pixels, measure_sharpness)


def _how_it_ended(process: Any) -> str | None:
    """How a worker ended (None: it runs, or the pool stopped it)."""
    if not multiprocessing.connection.wait([process.sentinel], 0):
        return None  # alive
    code = process.exitcode
    deadline = time.monotonic() + 2
    while code is None and time.monotonic() < deadline:  # the pool's thread reaps it
        time.sleep(0.01)
        code = process.exitcode
    if code is None or code == -signal.SIGTERM:  # alive, or stopped by the pool itself
        return None
    if code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"process {process.pid} was killed by {name}"
    return f"process {process.pid} exited with code {code}"


class EmbedPool:
    """`workers` embedding processes that load `options`' model when they start."""

    def __init__(self, workers: int, options: EmbedOptions | None = None) -> None:
        if workers < 1:
            raise InvalidParameterError(f"an embedding pool needs a worker, not {workers}")
        self.workers = workers
        self.options = options
        self.restarts = 0  # pools replaced after a worker died
        self._lock = threading.Lock()
        self._executor: futures.ProcessPoolExecutor | None = None
        self._processes: list[Any] = []
        self._closed = False
        self._broken: tuple[Any, str] | None = None  # the last pool replaced, and why
        self._in_flight: set[futures.Future[Any]] = set()
        self.embedded = 0  # photos the workers answered (faces or an error)

    # Starting and stopping ------------------------------------------------------

    def start(self) -> None:
        """Start the workers now (they load the model in the background)."""
        with self._lock:
            self._running_executor()

    def _running_executor(self) -> futures.ProcessPoolExecutor:
        """The pool, started if need be (the caller holds the lock)."""
        if self._closed:
            raise EmbedWorkerError("the server is stopping: its embedding processes are closed")
        if self._executor is None:
            executor = futures.ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_start_worker,
                initargs=(self.options,),
            )
            # Each submit to a pool without an idle worker starts one: all of them
            # now, so that no request ever waits for a process to start.
            with _main_module_hidden():
                for _ in range(self.workers):
                    executor.submit(_started)
            self._processes = list(getattr(executor, "_processes", {}).values())
            self._executor = executor
        return self._executor

    def pids(self) -> list[int]:
        """The process ids of the current workers (started ones)."""
        with self._lock:
            return [process.pid for process in self._processes if process.pid is not None]

    @property
    def in_flight(self) -> int:
        """Photos handed to the workers and not answered yet."""
        return len(self._in_flight)

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers: photos in progress get `timeout` seconds to finish, then
        every worker is stopped and waited for; no process is left behind. Later
        requests get EmbedWorkerError."""
        with self._lock:
            self._closed = True
            executor, self._executor = self._executor, None
            processes, self._processes = self._processes, []
            in_flight = set(self._in_flight)
        if executor is None:
            return
        executor.shutdown(wait=False, cancel_futures=True)
        futures.wait(in_flight, timeout)
        for process in processes:
            process.terminate()
        for process in processes:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join(5)
        executor.shutdown(wait=True)

    # Embedding ------------------------------------------------------------------

    def embed(
        self,
        data: bytes,
        name: str,
        options: EmbedOptions,
        max_pixels: int,
        measure_sharpness: bool = True,
    ) -> list[Face]:
        """engine.embed.decode_and_embed in a worker: the faces of photo bytes, or the
        worker's error (NoFaceError, ...); EmbedWorkerError (503) if the worker died."""
        args = (data, name, options, max_pixels, measure_sharpness)
        future, executor = self._submit(_decode_and_embed, *args)
        try:
            faces: list[Face] = future.result()
            return faces
        except BrokenProcessPool:
            what = self._replace(executor)
            raise EmbedWorkerError(
                f"an embedding process stopped while it held this photo ({what}); the "
                f"server has started new ones: send the photo again"
            ) from None
        except futures.CancelledError:
            raise EmbedWorkerError(
                "the server stopped before this photo was embedded: send the photo again"
            ) from None

    def _submit(self, function: Any, *args: Any) -> tuple[futures.Future[Any], Any]:
        with self._lock:
            executor = self._running_executor()
            try:
                future = executor.submit(function, *args)
            except BrokenProcessPool:  # broke before this photo reached it: a new pool
                future = None
        if future is None:
            self._replace(executor)
            with self._lock:
                executor = self._running_executor()
                future = executor.submit(function, *args)
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(self._answered)
        return future, executor

    def _answered(self, future: futures.Future[Any]) -> None:
        with self._lock:
            self._in_flight.discard(future)
            if not future.cancelled() and not isinstance(future.exception(), BrokenProcessPool):
                self.embedded += 1

    def _replace(self, broken: Any) -> str:
        """How the broken pool's worker ended; a new pool unless one replaced it already."""
        with self._lock:
            if self._broken is not None and self._broken[0] is broken:
                return self._broken[1]
            processes = self._processes if broken is self._executor else []
            ended = [_how_it_ended(process) for process in processes]
            what = "; ".join(found for found in ended if found) or "it ended without a word"
            self._broken = (broken, what)
            if self._executor is broken:
                self._executor = None
                self._processes = []
                broken.shutdown(wait=False, cancel_futures=True)
                self.restarts += 1
                if not self._closed:
                    self._running_executor()
        return what
