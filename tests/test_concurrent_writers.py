"""Several processes writing one SQLite gallery at once all succeed.

Writers take the write lock up front (BEGIN IMMEDIATE), so a busy timeout lets
them wait for each other instead of failing with "database is locked", and the
first writers on a new file agree on its schema and collection.
"""

from __future__ import annotations

import multiprocessing
import sqlite3

import numpy as np
import pytest

import facevec

WRITERS = 4
PER_WRITER = 25
DIM = 16


def vectors_of(writer: int) -> np.ndarray:
    return np.random.default_rng(writer).standard_normal((PER_WRITER, DIM)).astype(np.float32)


def names_of(writer: int) -> list[str]:
    return [f"w{writer}-{i}.jpg" for i in range(PER_WRITER)]


def write(db: str, writer: int, start, errors) -> None:
    try:
        start.wait()
        vectors = vectors_of(writer)
        for i in range(0, PER_WRITER, 5):  # several transactions each
            facevec.add(db, names_of(writer)[i : i + 5], vectors[i : i + 5])
            if writer % 2 == 0:
                facevec.reindex(db, progress=False)
    except BaseException as err:  # reported to the parent
        errors.put(f"writer {writer}: {type(err).__name__}: {err}")


def rows(db: str) -> list[tuple]:
    conn = sqlite3.connect(db)
    try:
        return sorted(conn.execute("SELECT img_name, embedding FROM face_meta").fetchall())
    finally:
        conn.close()


@pytest.mark.slow
def test_writers_and_reindexers_at_once_equal_a_serial_run(tmp_path):
    db = str(tmp_path / "shared.db")  # a new file: the writers race to create it
    context = multiprocessing.get_context("spawn")
    start, errors = context.Event(), context.Queue()
    workers = [
        context.Process(target=write, args=(db, writer, start, errors)) for writer in range(WRITERS)
    ]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(timeout=300)
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    assert all(worker.exitcode == 0 for worker in workers)

    serial = str(tmp_path / "serial.db")
    for writer in range(WRITERS):
        facevec.add(serial, names_of(writer), vectors_of(writer))
    assert rows(db) == rows(serial)
    assert facevec.info(db)["faces"] == WRITERS * PER_WRITER
    conn = facevec.connect(db)
    status = facevec.knn.status(conn)
    assert status["vectors"] + status["pending"] >= WRITERS * PER_WRITER
    query = vectors_of(1)[3]
    expected = facevec.find(query, serial, strategy="extension", k=10, threshold=1e9)[0]
    got = facevec.find(query, db, strategy="knn", k=10, threshold=1e9)[0]
    assert list(got.img_name) == list(expected.img_name)
    conn.close()
