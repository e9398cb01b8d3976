"""The chunk cache of facevec_knn: chunks a search has read are kept in memory
for the process's next searches. Answers must be the same to the bit with and
without it (ids and distances) for every storage, k, nprobe, metric and
threshold, whatever other connections and processes write meanwhile: the
cache is known by the index's generation, replaced by every write to the
chunks, and read in the snapshot a query sees."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from knn_helpers import connect, extension_under_test, make_table

DIM = 16
N = 3000
LISTS = 16
QUERY = "SELECT rowid, distance FROM facevec_knn('face_meta', ?, ?, ?, ?, ?)"
ONE_GIB = 1 << 30
try:  # a sanitizer build runs in pysqlite3 (knn_helpers.connect)
    from pysqlite3 import dbapi2

    OperationalError: tuple = (sqlite3.OperationalError, dbapi2.OperationalError)
except ImportError:
    OperationalError = (sqlite3.OperationalError,)


def cache_size(conn, size=None) -> int:
    if size is None:
        return conn.execute("SELECT facevec_knn_cache_size()").fetchone()[0]
    return conn.execute("SELECT facevec_knn_cache_size(?)", (size,)).fetchone()[0]


def cache_status(conn) -> dict:
    return json.loads(conn.execute("SELECT facevec_knn_cache_status()").fetchone()[0])


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


@pytest.fixture(autouse=True)
def budget_restored(ext):
    """The budget is the process's: each test leaves it as it found it."""
    conn = connect(ext)
    before = cache_size(conn)
    conn.close()  # none open meanwhile: test_the_cache_outlives_its_connections
    yield
    conn = connect(ext)
    cache_size(conn, before)
    conn.close()


# Clustered, so that an IVF list holds neighbours and ties are rare.
CENTRES = np.random.default_rng(99).standard_normal((40, DIM)).astype(np.float32) * 3


def vectors(rng, n):
    return (CENTRES[rng.integers(0, 40, n)] + rng.standard_normal((n, DIM))).astype(np.float32)


def gallery(ext, path: Path, storage="float32", lists=LISTS, seed=0):
    rng = np.random.default_rng(seed)
    conn = connect(ext, path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("BEGIN")
    make_table(conn, vectors(rng, N))
    conn.execute("COMMIT")
    options = {"storage": storage}
    if lists:
        options["lists"] = lists
    conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (json.dumps(options),)
    )
    return conn


def queries(seed=1, n=12):
    return vectors(np.random.default_rng(seed), n)


def answers(conn, qs, k=10, nprobe=3, metric="euclidean", threshold=None):
    return [conn.execute(QUERY, (q.tobytes(), k, metric, threshold, nprobe)).fetchall() for q in qs]


def same_with_and_without(conn, qs, **kw):
    """The cache's answers first (whatever it holds from before), then the file's
    alone (budget 0, which empties the cache), then a cold and a warm cache."""
    budget = cache_size(conn) or ONE_GIB
    cached = answers(conn, qs, **kw)
    cache_size(conn, 0)
    plain = answers(conn, qs, **kw)
    cache_size(conn, budget)
    cold = answers(conn, qs, **kw)
    warm = answers(conn, qs, **kw)
    assert cached == plain
    assert cold == plain
    assert warm == plain
    return plain


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
@pytest.mark.parametrize(
    "k, nprobe, metric, threshold",
    [
        (1, 1, "euclidean", None),
        (10, 3, "euclidean", None),
        (100, 7, "euclidean", None),
        (10, 99, "euclidean", None),  # every list: the exact answer
        (50, 4, "euclidean", 5.5),
        (10, 3, "cosine", None),
        (10, 3, "euclidean_squared", 30.0),
        (10, 3, "euclidean_l2", None),
    ],
)
def test_answers_are_the_same_with_and_without_the_cache(
    ext, tmp_path, storage, k, nprobe, metric, threshold
):
    conn = gallery(ext, tmp_path / "g.db", storage)
    cache_size(conn, ONE_GIB)
    got = same_with_and_without(
        conn, queries(), k=k, nprobe=nprobe, metric=metric, threshold=threshold
    )
    assert all(got) and cache_status(conn)["chunks"] > 0


@pytest.mark.parametrize("storage", ["float32", "int8"])
@pytest.mark.parametrize("lists", [0, LISTS])
def test_a_batch_of_queries(ext, tmp_path, storage, lists):
    """The exact index, and a batch through the batch kernel (whole chunks)."""
    conn = gallery(ext, tmp_path / "g.db", storage, lists=lists)
    cache_size(conn, ONE_GIB)
    same_with_and_without(conn, queries(), k=10, nprobe=None)
    batch = json.dumps(queries(n=20).tolist())
    sql = (
        "SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', ?, 10, "
        "'euclidean', NULL, 5)"
    )
    cached = conn.execute(sql, (batch,)).fetchall()
    assert conn.execute(sql, (batch,)).fetchall() == cached
    assert cache_status(conn)["chunks"] > 0
    cache_size(conn, 0)
    assert conn.execute(sql, (batch,)).fetchall() == cached
    assert len(cached) == 200


WRITER = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, sys.argv[1])
    from knn_helpers import connect
    conn = connect(sys.argv[2], sys.argv[3])
    for sql in sys.argv[4:]:
        conn.execute(sql).fetchall()
    conn.close()
    """
)


def in_another_process(ext, path, *statements):
    tests = str(Path(__file__).resolve().parent)
    subprocess.run(
        [sys.executable, "-c", WRITER, tests, ext, str(path), *statements], check=True, timeout=120
    )


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_writes_of_other_connections_and_processes(ext, tmp_path, storage):
    path = tmp_path / "g.db"
    conn = gallery(ext, path, storage)
    cache_size(conn, ONE_GIB)
    qs = queries()
    near = [r[0] for r in answers(conn, qs[:3], k=4)[0]]
    before = same_with_and_without(conn, qs)

    other = connect(ext, path)
    other.execute(f"DELETE FROM face_meta WHERE id IN ({near[0]}, {near[1]})")
    other.execute("UPDATE face_meta SET embedding = ? WHERE id = ?", (qs[0].tobytes(), near[2]))
    other.execute("INSERT INTO face_meta(id, embedding) VALUES (9001, ?)", (qs[1].tobytes(),))
    pending = same_with_and_without(conn, qs)  # changes in the log, chunks unchanged
    assert pending != before
    other.execute("SELECT facevec_knn_sync('face_meta')")
    synced = same_with_and_without(conn, qs)  # the chunks changed
    assert synced == pending

    # Another process: a delete synced at once, then a rebuild with other lists.
    in_another_process(
        ext,
        path,
        f"DELETE FROM face_meta WHERE id = {synced[3][0][0]}",
        "SELECT facevec_knn_sync('face_meta')",
    )
    after = same_with_and_without(conn, qs)
    assert after[3][0][0] != synced[3][0][0]
    options = json.dumps({"lists": 9, "storage": storage})
    in_another_process(
        ext, path, f"SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{options}')"
    )
    same_with_and_without(conn, qs)
    in_another_process(ext, path, "SELECT facevec_knn_drop('face_meta')")
    with pytest.raises(OperationalError, match="no facevec_knn index"):
        answers(conn, qs)
    other.execute("SELECT facevec_knn_build('face_meta')")
    same_with_and_without(conn, qs, nprobe=None)


def test_an_unrelated_write_keeps_the_cache(ext, tmp_path):
    """Another connection writing another table of the file (a people edit)
    makes the next query check the index again, but its chunks stay."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path)
    cache_size(conn, ONE_GIB)
    qs = queries()
    want = same_with_and_without(conn, qs)
    other = connect(ext, path)
    other.execute("CREATE TABLE person(id INTEGER PRIMARY KEY, name TEXT)")
    for i in range(3):
        other.execute("INSERT INTO person(name) VALUES (?)", (f"p{i}",))
        before = cache_status(conn)
        assert answers(conn, qs) == want
        after = cache_status(conn)
        assert after["misses"] == before["misses"]
        assert after["hits"] > before["hits"]
        assert after["chunks"] == before["chunks"]


def test_an_unfinished_build(ext, tmp_path):
    """An IVF build in batches by another connection: rows past its cursor are
    read from the table; every batch writes chunks under a new generation."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path, lists=0)
    cache_size(conn, ONE_GIB)
    qs = queries()
    exact = same_with_and_without(conn, qs, nprobe=None)
    other = connect(ext, path)
    options = json.dumps({"lists": LISTS, "storage": "int8"})
    other.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options,))
    assert same_with_and_without(conn, qs, nprobe=None) == exact
    steps = 0
    while json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0]).get(
        "building"
    ):
        other.execute("SELECT facevec_knn_sync('face_meta', 700)").fetchone()
        steps += 1
        got = same_with_and_without(conn, qs, nprobe=LISTS)
        assert got == exact  # every list: the exact answer, built or not
        same_with_and_without(conn, qs, nprobe=2)
    assert steps >= 3
    assert same_with_and_without(conn, qs, nprobe=LISTS) == exact


def test_a_reader_on_an_older_snapshot(ext, tmp_path):
    """WAL: a read transaction keeps its snapshot while another connection
    deletes rows and syncs; its queries answer for that snapshot, cache or not."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path)
    cache_size(conn, ONE_GIB)
    qs = queries()
    before = same_with_and_without(conn, qs)
    conn.execute("BEGIN")
    assert answers(conn, qs) == before  # the snapshot is taken
    other = connect(ext, path)
    gone = [r[0] for r in before[0][:3]]
    other.execute(f"DELETE FROM face_meta WHERE id IN ({gone[0]}, {gone[1]}, {gone[2]})")
    other.execute("SELECT facevec_knn_sync('face_meta')")
    now = same_with_and_without(other, qs)  # the new generation's chunks cached
    assert now != before
    assert same_with_and_without(conn, qs) == before  # still the old snapshot
    conn.execute("COMMIT")
    assert same_with_and_without(conn, qs) == now


def test_a_write_rolled_back(ext, tmp_path):
    """Chunks cached from a transaction's own writes are never those of the
    file once it rolls back."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path)
    cache_size(conn, ONE_GIB)
    qs = queries()
    before = same_with_and_without(conn, qs)
    conn.execute("BEGIN")
    conn.execute(f"DELETE FROM face_meta WHERE id = {before[0][0][0]}")
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    inside = same_with_and_without(conn, qs)
    assert inside != before
    conn.execute("ROLLBACK")
    assert same_with_and_without(conn, qs) == before


def test_the_budget(ext, tmp_path):
    conn = gallery(ext, tmp_path / "g.db")
    qs = queries()
    assert cache_size(conn, 0) == 0
    want = answers(conn, qs, nprobe=LISTS)
    status = cache_status(conn)
    assert status["budget"] == 0 and status["chunks"] == 0 and status["bytes"] == 0
    # A budget of a few chunks: the least recently used go, the answers stay.
    chunk = 4 * DIM * 4 * N // LISTS
    assert cache_size(conn, 3 * chunk) == 3 * chunk
    for _ in range(2):
        assert answers(conn, qs, nprobe=LISTS) == want
        status = cache_status(conn)
        assert 0 < status["chunks"] <= 12 and status["bytes"] <= 3 * chunk
    assert cache_size(conn, None) == 3 * chunk  # NULL: unchanged
    assert cache_size(conn, ONE_GIB) == ONE_GIB
    assert answers(conn, qs, nprobe=LISTS) == want
    assert cache_status(conn)["chunks"] > 12
    cache_size(conn, 0)
    assert cache_status(conn)["chunks"] == 0
    for bad, found in (("-1", "-1"), ("'many'", "TEXT"), ("1.5", "1.5"), ("x'00'", "BLOB")):
        with pytest.raises(
            OperationalError,
            match=re.escape("facevec_knn_cache_size: bytes must be an INTEGER >= 0, found ")
            + ".*"
            + re.escape(found),
        ):
            conn.execute(f"SELECT facevec_knn_cache_size({bad})").fetchone()


def test_threads_share_the_cache(ext, tmp_path):
    """Connections of several threads query the same file through one cache,
    small enough that chunks are evicted while others are in use."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path, storage="int8")
    qs = queries(n=8)
    cache_size(conn, 0)
    want = {p: answers(conn, qs, nprobe=p) for p in (2, 5, LISTS)}
    cache_size(conn, 4 * DIM * N // 3)
    errors: list[BaseException] = []

    def worker(seed):
        try:
            own = connect(ext, path)
            rng = np.random.default_rng(seed)
            for _ in range(30):
                p = [2, 5, LISTS][rng.integers(3)]
                assert answers(own, qs, nprobe=p) == want[p]
            own.close()
        except BaseException as e:  # reported by the main thread
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert cache_status(conn)["bytes"] <= 4 * DIM * N // 3


def test_an_index_of_an_older_format_is_read_without_the_cache(ext, tmp_path):
    """Format 2 writers kept no generation: their chunks are never cached."""
    conn = gallery(ext, tmp_path / "g.db")
    cache_size(conn, ONE_GIB)
    qs = queries()
    want = same_with_and_without(conn, qs)
    conn.execute("UPDATE facevec_knn_index SET format = 2")
    cache_size(conn, 0)
    cache_size(conn, ONE_GIB)
    assert answers(conn, qs) == want
    assert cache_status(conn)["chunks"] == 0


def test_the_python_api(tmp_path):
    import facevec
    from facevec import knn
    from facevec.errors import InvalidParameterError

    conn = facevec.connect(tmp_path / "g.db", native=True, isolation_level=None)
    before = knn.cache_size(conn)
    try:
        conn.execute("BEGIN")
        make_table(conn, vectors(np.random.default_rng(0), 500))
        conn.execute("COMMIT")
        knn.build(conn, lists=4)
        assert knn.cache_size(conn, 1 << 20) == 1 << 20
        q = queries(n=1)[0]
        want = knn.search(conn, q, 10, nprobe=2)
        assert knn.search(conn, q, 10, nprobe=2) == want
        status = knn.cache_status(conn)
        assert set(status) == {"budget", "bytes", "chunks", "hits", "misses"}
        assert status["budget"] == 1 << 20 and 0 < status["bytes"] <= 1 << 20
        for bad in (-1, 1.5, "1", True):
            with pytest.raises(InvalidParameterError, match="cache size must be an integer"):
                knn.cache_size(conn, bad)
    finally:
        knn.cache_size(conn, before)


def test_an_edit_of_the_chunks_in_sql(ext, tmp_path):
    """facevec writes chunks through BLOB handles and replaces the generation
    itself; an UPDATE of the chunks table in SQL (a hand edit, another program)
    replaces it through the index's triggers, so kept chunks are not used."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path)
    cache_size(conn, ONE_GIB)
    qs = queries()
    before = same_with_and_without(conn, qs, nprobe=LISTS)
    other = connect(ext, path)
    # The same sizes, other vectors: every row of the first chunks moved.
    other.execute(
        "UPDATE face_meta_fvknn_chunks SET vectors = substr(vectors, 65) || substr(vectors, 1, 64) "
        "WHERE id IN (SELECT id FROM face_meta_fvknn_chunks ORDER BY id LIMIT 3)"
    )
    assert same_with_and_without(conn, qs, nprobe=LISTS) != before
    other.execute("SELECT facevec_knn_drop('face_meta')")
    assert not other.execute(
        "SELECT name FROM sqlite_schema WHERE name LIKE 'face_meta_fvknn%'"
    ).fetchall()


def test_the_cache_outlives_its_connections(ext, tmp_path):
    """A server opening a connection per request: the chunks kept by one are
    there for the next, even once every connection has closed (SQLite would
    unload the extension with the last one)."""
    path = tmp_path / "g.db"
    conn = gallery(ext, path)
    cache_size(conn, ONE_GIB)
    qs = queries()
    want = same_with_and_without(conn, qs)
    conn.close()
    again = connect(ext, path)
    before = cache_status(again)
    assert before["chunks"] > 0
    assert answers(again, qs) == want
    assert cache_status(again)["misses"] == before["misses"]
