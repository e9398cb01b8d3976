"""One batch written in a background thread while the caller prepares the next.

A bulk load alternates two kinds of work: the client's (reading a source, checking
and encoding a batch) and the server's (parsing and inserting it). Done in turn,
each waits for the other; here the writes run in one writer thread, one at a time
and in order, so the client prepares batch k+1 while the server stores batch k.

The connection a write uses belongs to the writer while that write runs: the
caller touches it again only after :meth:`WriteBehind.wait` (or the end of the
``with`` block). A write's error is raised in the caller at the next
:meth:`WriteBehind.submit` or :meth:`WriteBehind.wait` (nothing after it is
started), and a block that ends with an error first waits for the write under way,
so the caller's rollback never runs beside it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import Any


class WriteBehind:
    """``with WriteBehind() as writes: writes.submit(write, done)`` for each batch."""

    def __init__(self, threaded: bool = True) -> None:
        # threaded False: each write runs at once, in the caller's thread (a SQLite
        # connection belongs to the thread that opened it; its writes are the
        # client's own work anyway).
        self.threaded = threaded
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._pending: tuple[concurrent.futures.Future[Any], Callable[[Any], None] | None] | None
        self._pending = None

    def submit(self, write: Callable[[], Any], done: Callable[[Any], None] | None = None) -> None:
        """Run write() in the writer thread once the write before it is finished (its
        error raised here, and this one not started); done(its result) is called in
        the caller's thread when it has finished."""
        self.wait()
        if not self.threaded:
            result = write()
            if done is not None:
                done(result)
            return
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=1, thread_name_prefix="facevec-writer"
            )
        self._pending = (self._executor.submit(write), done)

    def wait(self) -> None:
        """Until the write under way, if any, is finished; its error is raised here."""
        if self._pending is None:
            return
        future, done = self._pending
        try:
            result = future.result()
        finally:
            if future.done():
                self._pending = None
        if done is not None:
            done(result)

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind: Any, error: BaseException | None, trace: Any) -> None:
        try:
            if error is None:
                self.wait()
            elif self._pending is not None:
                # The write under way finishes first. Its error, if any, came from an
                # earlier batch: it is the one told, unless the block was interrupted.
                future = self._pending[0]
                self._pending = None
                failed = future.exception()
                if failed is not None and failed is not error:
                    if isinstance(error, Exception):
                        raise failed
                    error.add_note(f"the write under way failed too: {failed!r}")
        finally:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None
