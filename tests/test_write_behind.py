"""WriteBehind: each batch written in one background thread, in order, while the
caller prepares the next; a write's error reaches the caller, nothing runs after it."""

from __future__ import annotations

import threading
import time

import pytest

from facevec.storage.write_behind import WriteBehind


def test_writes_run_in_order_in_one_other_thread_and_report_when_done():
    written, done, threads = [], [], set()

    def write(n):
        time.sleep(0.01 * (3 - n % 3))  # later writes faster: order is not by luck
        threads.add(threading.get_ident())
        written.append(n)
        return n * 10

    with WriteBehind() as writes:
        for n in range(6):
            writes.submit(lambda n=n: write(n), done.append)
    assert written == list(range(6))
    assert done == [n * 10 for n in range(6)]
    assert len(threads) == 1 and threading.get_ident() not in threads


def test_without_a_thread_each_write_runs_at_once_in_the_callers_thread():
    threads, done = [], []
    with WriteBehind(threaded=False) as writes:
        writes.submit(lambda: threads.append(threading.get_ident()) or 1, done.append)
        assert done == [1]  # before the next submit
    assert threads == [threading.get_ident()]


def test_a_failed_write_is_raised_at_the_next_submit_and_nothing_runs_after_it():
    written = []

    def write(n):
        if n == 1:
            raise RuntimeError("batch 1 failed")
        written.append(n)

    with pytest.raises(RuntimeError, match="batch 1 failed"):
        with WriteBehind() as writes:
            for n in range(5):
                writes.submit(lambda n=n: write(n))
    assert written == [0]


def test_a_failed_last_write_is_raised_at_the_end_of_the_block():
    with pytest.raises(RuntimeError, match="last one"):
        with WriteBehind() as writes:
            writes.submit(lambda: None)
            writes.submit(lambda: (_ for _ in ()).throw(RuntimeError("last one")))


def test_an_error_in_the_block_waits_for_the_write_under_way():
    finished = threading.Event()

    def slow():
        time.sleep(0.2)
        finished.set()

    with pytest.raises(ValueError, match="bad batch"):
        with WriteBehind() as writes:
            writes.submit(slow)
            raise ValueError("bad batch")
    assert finished.is_set()  # the caller's rollback never runs beside a write


def test_an_earlier_batchs_failed_write_is_told_before_a_later_batchs_error():
    with pytest.raises(RuntimeError, match="batch 0") as caught:
        with WriteBehind() as writes:
            writes.submit(lambda: (_ for _ in ()).throw(RuntimeError("batch 0")))
            raise ValueError("batch 1 is bad")
    assert isinstance(caught.value.__context__, ValueError)


def test_an_interruption_is_kept_and_the_failed_write_noted():
    with pytest.raises(KeyboardInterrupt) as caught:
        with WriteBehind() as writes:
            writes.submit(lambda: (_ for _ in ()).throw(RuntimeError("batch 0")))
            time.sleep(0.05)
            raise KeyboardInterrupt
    assert any("batch 0" in note for note in caught.value.__notes__)
