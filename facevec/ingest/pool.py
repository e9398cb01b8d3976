"""Photos embedded in worker processes, results handed back in the order given.

Each worker is a fresh interpreter (spawn: never a fork of a process that may hold
TensorFlow's threads) that loads the model once. The index process stays the one
writer: it submits photos, and takes results back strictly in submission order, so
batches are committed in the order of the folder.
"""

from __future__ import annotations

import concurrent.futures as futures
import contextlib
import multiprocessing
import os
import sys
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from . import photo
from .photo import Result, Settings


@contextlib.contextmanager
def _main_module_hidden() -> Iterator[None]:
    """Start workers without re-running the caller's script in them.

    A spawned process imports the parent's ``__main__`` again, which runs a
    script that calls ``facevec.index`` without an ``if __name__ == "__main__"``
    guard once more in every worker. Workers need only facevec's own functions.
    """
    main = sys.modules["__main__"]
    saved = {
        name: main.__dict__[name] for name in ("__file__", "__spec__") if name in main.__dict__
    }
    main.__dict__.pop("__file__", None)
    main.__spec__ = None
    try:
        yield
    finally:
        main.__dict__.pop("__spec__", None)
        main.__dict__.update(saved)


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class Pool:
    """`workers` processes, started on first use; results come back in order."""

    def __init__(self, workers: int, settings: Settings) -> None:
        self.workers = workers
        self.settings = settings
        self._executor: futures.ProcessPoolExecutor | None = None
        self._pending: deque[Any] = deque()  # Future or ready Result, in submission order

    def start(self) -> int:
        """Start the workers and wait until each has loaded the model; the vector size."""
        self._executor = futures.ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=photo.start_worker,
            initargs=(self.settings.options,),
        )
        with _main_module_hidden():  # submit() starts the processes
            probes = [
                self._executor.submit(photo.model_dimensions, self.settings.options)
                for _ in range(self.workers)
            ]
        return probes[0].result()

    @property
    def started(self) -> bool:
        return self._executor is not None

    def submit(self, text_path: str, data: bytes, sha256: str) -> None:
        assert self._executor is not None
        self._pending.append(
            self._executor.submit(photo.process, text_path, data, sha256, self.settings)
        )

    def add_ready(self, result: Result) -> None:
        """A result known without a worker (an unreadable file), kept in its place."""
        self._pending.append(result)

    def wait(self, on_done: Callable[[Result], None], block_until: int) -> None:
        """Wait until at most `block_until` futures are running; on_done for each that ends."""
        running = {
            item for item in self._pending if isinstance(item, futures.Future) and not item.done()
        }
        while len(running) > block_until:
            done, running = futures.wait(running, return_when=futures.FIRST_COMPLETED)
            for future in done:
                on_done(future.result())

    def ready(self) -> Iterator[Result]:
        """Results at the head of the queue that are finished, in submission order."""
        while self._pending:
            head = self._pending[0]
            if isinstance(head, futures.Future):
                if not head.done():
                    return
                result = head.result()  # a worker's MissingWeightsError etc. is raised here
            else:
                result = head
            self._pending.popleft()
            yield result

    def close(self, now: bool = False) -> None:
        """Stop the workers; `now` drops queued photos and stops those in progress."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        if now:
            processes = list(getattr(executor, "_processes", {}).values())
            executor.shutdown(wait=False, cancel_futures=True)
            for process in processes:  # photos in progress: recomputed on the next run
                process.terminate()
            for process in processes:
                process.join(timeout=10)
        else:
            executor.shutdown(wait=True)
