"""The IVF knn index built in batches: each batch its own transaction, an
interrupted build continuing where it stopped (to the same chunks, map and
answers as an uninterrupted one), progress reported, changes made between
batches in the finished index, exact answers while it is unfinished, and bad
stored rows left out and named instead of failing the build."""

from __future__ import annotations

import json

import numpy as np
import pytest
from knn_helpers import connect, extension_under_test, make_table

DIM, LISTS = 16, 8


@pytest.fixture(scope="session")
def ext() -> str:
    return extension_under_test()


def faces_like(rng, n: int, dim: int = DIM) -> np.ndarray:
    ids = rng.standard_normal((max(1, n // 5), dim))
    return (ids[rng.integers(0, len(ids), n)] + 0.3 * rng.standard_normal((n, dim))).astype(
        np.float32
    )


def options(storage: str = "float32") -> str:
    return json.dumps({"lists": LISTS, "storage": storage})


def status(conn) -> dict:
    return json.loads(conn.execute("SELECT facevec_knn_status('face_meta')").fetchone()[0])


def snapshot(conn) -> dict:
    """Everything the finished index holds."""
    return {
        "chunks": conn.execute("SELECT * FROM face_meta_fvknn_chunks ORDER BY id").fetchall(),
        "lists": conn.execute("SELECT * FROM face_meta_fvknn_chunklists ORDER BY id").fetchall(),
        "map": conn.execute("SELECT * FROM face_meta_fvknn_rowids ORDER BY rid").fetchall(),
        "ivf": conn.execute("SELECT * FROM face_meta_fvknn_ivf").fetchall(),
        "index": conn.execute("SELECT * FROM facevec_knn_index").fetchall(),
    }


def answers(conn, queries, nprobe=None) -> list:
    return [
        conn.execute(
            "SELECT rowid, distance FROM facevec_knn('face_meta', ?, 10, 'euclidean', NULL, ?)",
            (q.tobytes(), nprobe),
        ).fetchall()
        for q in queries
    ]


def exact(x: np.ndarray, ids: list[int], queries) -> list[list[int]]:
    """The 10 nearest rowids by numpy (float64)."""
    ids_a = np.asarray(ids)
    out = []
    for q in queries:
        d = ((x.astype(np.float64) - q) ** 2).sum(axis=1)
        out.append(ids_a[np.lexsort((ids_a, d))[:10]].tolist())
    return out


@pytest.fixture()
def table(ext, tmp_path):
    rng = np.random.default_rng(7)
    x = faces_like(rng, 3000)
    queries = x[rng.choice(len(x), 20, replace=False)] + 0.05

    def make(name: str):
        conn = connect(ext, tmp_path / f"{name}.db")
        make_table(conn, x)
        return conn

    return make, x, queries


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_resumed_build_equals_uninterrupted(table, storage):
    make, x, queries = table
    whole = make("whole")
    assert whole.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(storage),)
    ).fetchone() == (3000,)
    want = snapshot(whole)
    assert len(want["chunks"]) >= LISTS

    # Stopped by its driver after 3 batches of 400 rows, then built again.
    stepped = make("stepped")
    stepped.execute(
        "SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(storage),)
    )
    for _ in range(3):
        assert stepped.execute("SELECT facevec_knn_sync('face_meta', 400)").fetchone() == (400,)
    info = status(stepped)
    assert info["building"] and 0 < info["build_done"] < info["build_total"]
    mapped = stepped.execute("SELECT count(*) FROM face_meta_fvknn_rowids").fetchone()[0]
    assert mapped == 1200  # the batches done are kept
    assert stepped.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(storage),)
    ).fetchone() == (3000,)
    assert snapshot(stepped) == want
    assert answers(stepped, queries) == answers(whole, queries)

    # Interrupted by a failure in the middle of a batch (as Ctrl-C does).
    failed = make("failed")
    failed.execute(
        "SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(storage),)
    )
    failed.execute("SELECT facevec_knn_sync('face_meta', 1000)")
    calls = []
    failed.set_progress_handler(lambda: len(calls) > 200 or calls.append(1), 100)
    with pytest.raises(Exception, match="interrupt"):
        failed.execute("SELECT facevec_knn_sync('face_meta', 1500)")
    failed.set_progress_handler(None, 0)
    assert status(failed)["build_done"] == info["build_done"] * 1000 // 1200
    failed.execute("SELECT facevec_knn_sync('face_meta')")
    assert snapshot(failed) == want
    assert answers(failed, queries) == answers(whole, queries)


def test_a_changed_option_starts_over(table):
    make, _, _ = table
    conn = make("changed")
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(),))
    conn.execute("SELECT facevec_knn_sync('face_meta', 400)")
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(),))
    assert status(conn)["build_done"] == 400  # the same options: continued
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options("int8"),))
    info = status(conn)
    assert info["build_done"] == 0 and info["storage"] == "int8"


def test_progress_is_reported(ext, table):
    import facevec.knn as knn

    make, _, _ = table
    conn = make("progress")
    seen: list[tuple[int, int]] = []
    if ext != __import__("facevec").loadable_path():
        pytest.skip("knn.build runs on the installed extension")
    assert (
        knn.build(conn, lists=LISTS, batch_size=500, progress=lambda d, t: seen.append((d, t)))
        == 3000
    )
    assert len(seen) >= 10  # 3000 rows read, then written, 500 at a time
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1][0] == seen[-1][1] >= 6000


def test_progress_of_a_build_in_one_batch_ends_full(ext, table):
    import facevec.knn as knn

    make, _, _ = table
    conn = make("progress_one")
    if ext != __import__("facevec").loadable_path():
        pytest.skip("knn.build runs on the installed extension")
    seen: list[tuple[int, int]] = []
    knn.build(conn, lists=LISTS, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] >= 6000  # read, then written: not left at half


def test_changes_between_batches_are_in_the_finished_index(table):
    make, x, queries = table
    conn = make("changes")
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(),))
    conn.execute("SELECT facevec_knn_sync('face_meta', 1000)")
    rng = np.random.default_rng(8)
    new = faces_like(rng, 50)
    conn.executemany(  # before the cursor, and past it
        "INSERT INTO face_meta(id, embedding) VALUES (?, ?)",
        [(int(i), v.tobytes()) for i, v in zip(range(5001, 5051), new, strict=True)],
    )
    conn.execute("DELETE FROM face_meta WHERE id IN (3, 500, 2500)")
    conn.execute(
        "UPDATE face_meta SET embedding = ? WHERE id IN (10, 2000)", (queries[0].tobytes(),)
    )
    conn.execute("SELECT facevec_knn_sync('face_meta', 1000)")
    conn.execute("INSERT INTO face_meta(id, embedding) VALUES (0, ?)", (queries[1].tobytes(),))
    while conn.execute("SELECT facevec_knn_sync('face_meta', 1000)").fetchone()[0] >= 1000:
        pass
    info = status(conn)
    assert not info["building"] and info["pending"] == 0
    assert info["vectors"] == 3000 + 50 - 3 + 1
    rows = conn.execute("SELECT id, embedding FROM face_meta ORDER BY id").fetchall()
    ids = [r[0] for r in rows]
    xs = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
    got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
    assert got == exact(xs, ids, queries)
    assert {10, 2000} <= set(got[0]) and got[1][0] == 0


def test_queries_are_exact_while_a_build_is_unfinished(table):
    make, x, queries = table
    conn = make("unfinished")
    conn.execute("SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(),))
    for steps in range(4):  # training done, then reading, then writing
        got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=1)]
        assert got == exact(x, list(range(1, 3001)), queries), steps
        assert status(conn)["building"]
        conn.execute("SELECT facevec_knn_sync('face_meta', 1000)")


def test_bad_stored_rows_are_left_out_and_named(table):
    make, x, queries = table
    conn = make("bad")
    conn.executemany(
        "INSERT INTO face_meta(id, embedding) VALUES (?, ?)",
        [
            (9001, np.ones(DIM + 1, np.float32).tobytes()),  # another dimension
            (9002, b"\x00\x01\x02"),  # not float32
            (9003, np.full(DIM, np.nan, np.float32).tobytes()),  # not finite
        ],
    )
    assert conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(),)
    ).fetchone() == (3000,)
    info = status(conn)
    assert info["skipped"] == 3 and info["vectors"] == 3000
    named = {r["rowid"]: r["reason"] for r in info["skipped_rows"]}
    assert set(named) == {9001, 9002, 9003}
    assert "9001" in named[9001] and "dimensions" in named[9001]
    assert "NaN" in named[9003]
    got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
    assert got == exact(x, list(range(1, 3001)), queries)
    # Mended, deleted: the index follows, and a sync finds nothing amiss.
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 9001", (x[0].tobytes(),))
    conn.execute("DELETE FROM face_meta WHERE id = 9002")
    conn.execute("SELECT facevec_knn_sync('face_meta')")
    info = status(conn)
    assert info["skipped"] == 1 and info["vectors"] == 3001
    assert [r["rowid"] for r in info["skipped_rows"]] == [9003]


BAD_ROWS = [
    (9001, np.ones(DIM // 2, np.float32).tobytes()),  # another dimension
    (9002, b"\x00\x01\x02"),  # not float32
    (9003, np.full(DIM, np.nan, np.float32).tobytes()),  # not finite
    (9004, None),  # no vector
]


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_bad_stored_rows_are_left_out_while_a_build_is_unfinished(table, storage):
    make, x, queries = table
    conn = make(f"unfinished_bad_{storage}")
    conn.executemany("INSERT INTO face_meta(id, embedding) VALUES (?, ?)", BAD_ROWS)
    want = exact(x, list(range(1, 3001)), queries)
    conn.execute(
        "SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(storage),)
    )
    for steps in range(5):  # training done, then reading, then writing, then finished
        got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
        assert got == want, steps
        conn.execute("SELECT facevec_knn_sync('face_meta', 2000)")
    assert not status(conn)["building"]


def test_bad_rows_logged_after_the_build_are_left_out(table):
    make, x, queries = table
    conn = make("logged_bad")
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(),))
    conn.executemany("INSERT INTO face_meta(id, embedding) VALUES (?, ?)", BAD_ROWS)
    conn.execute("UPDATE face_meta SET embedding = x'0102' WHERE id = 5")  # indexed, now bad
    assert status(conn)["pending"] >= 5
    ids = [i for i in range(1, 3001) if i != 5]
    want = exact(np.delete(x, 4, axis=0), ids, queries)
    got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
    assert got == want
    conn.execute("SELECT facevec_knn_sync('face_meta')")  # as the sync leaves them out
    assert {r["rowid"] for r in status(conn)["skipped_rows"]} == {5, 9001, 9002, 9003}
    assert [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)] == want


def test_knn_search_and_find_leave_bad_rows_out_during_a_build(ext, tmp_path):
    import facevec
    from facevec import knn

    if ext != facevec.loadable_path():
        pytest.skip("knn.search and find run on the installed extension")
    rng = np.random.default_rng(11)
    x = faces_like(rng, 600, 128)
    db = tmp_path / "gallery.db"
    facevec.add(db, [f"face{i}.jpg" for i in range(len(x))], x, model_name="Dlib")
    conn = facevec.connect(db, isolation_level=None)
    ids = [r[0] for r in conn.execute("SELECT id FROM face_meta ORDER BY id")]
    conn.execute(
        "SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)",
        (json.dumps({"lists": LISTS}),),
    )
    conn.execute("SELECT facevec_knn_sync('face_meta', 300)")
    assert status(conn)["building"]
    for face_id, (_, blob) in zip(ids, BAD_ROWS[:3], strict=False):  # embedding NOT NULL
        conn.execute("UPDATE face_meta SET embedding = ? WHERE id = ?", (blob, face_id))
    query = x[10] + 0.01
    want = exact(x[3:], ids[3:], [query])[0]
    assert [r for r, _ in knn.search(conn, query, 10, nprobe=LISTS)] == want
    (frame,) = facevec.find(query, db, strategy="knn", k=10, similarity_search=True)
    assert list(frame.face_id) == want
    conn.close()


@pytest.mark.parametrize("declared", [None, DIM])
def test_a_bad_first_row_does_not_decide_the_dimension(table, declared):
    make, x, queries = table
    conn = make(f"first_bad_{declared}")
    conn.execute(  # read first: rowid 0, half the dimensions
        "INSERT INTO face_meta(id, embedding) VALUES (0, ?)", (np.ones(DIM // 2, "<f4").tobytes(),)
    )
    opts = {"lists": LISTS} if declared is None else {"lists": LISTS, "dim": declared}
    assert conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (json.dumps(opts),)
    ).fetchone() == (3000,)
    info = status(conn)
    assert info["dim"] == DIM and info["vectors"] == 3000 and info["skipped"] == 1
    (named,) = info["skipped_rows"]
    assert named["rowid"] == 0 and f"has {DIM // 2} dimensions" in named["reason"]
    got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
    assert got == exact(x, list(range(1, 3001)), queries)


def test_the_declared_dimension_wins_over_the_most_common(table):
    make, x, _ = table
    conn = make("declared")
    small = np.ones(DIM // 2, "<f4").tobytes()
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id <= 2000", (small,))
    conn.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)",
        (json.dumps({"lists": LISTS, "dim": DIM}),),
    )
    info = status(conn)
    assert (info["dim"], info["vectors"], info["skipped"]) == (DIM, 1000, 2000)
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(),))
    info = status(conn)  # undeclared: the most common size
    assert (info["dim"], info["vectors"], info["skipped"]) == (DIM // 2, 2000, 1000)


@pytest.mark.parametrize(
    "blob, declared, why",
    [
        (
            np.ones(DIM // 2, "<f4").tobytes(),
            DIM,
            f"has {DIM // 2} dimensions, the index has {DIM}",
        ),
        (b"\x00\x01\x02", None, "must be divisible by 4"),
        (np.full(DIM, np.inf, "<f4").tobytes(), None, "NaN or infinity"),
    ],
    ids=["another-size", "malformed", "infinite"],
)
def test_a_table_of_bad_rows_is_a_clear_error_and_loses_nothing(table, blob, declared, why):
    make, x, queries = table
    conn = make("all_bad")
    conn.execute("SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(),))
    before = snapshot(conn)
    conn.execute("UPDATE face_meta SET embedding = ?", (blob,))
    conn.execute("SELECT facevec_knn_sync('face_meta')")  # every row now left out
    kept = snapshot(conn)
    opts = {"lists": LISTS} if declared is None else {"lists": LISTS, "dim": declared}
    with pytest.raises(Exception, match="no vector of face_meta can be indexed: 3000 rows") as e:
        conn.execute(
            "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (json.dumps(opts),)
        )
    assert why in str(e.value) and "row 1" in str(e.value)
    assert snapshot(conn) == kept  # the index as it was
    assert (
        conn.execute("SELECT count(*) FROM face_meta WHERE embedding = ?", (blob,)).fetchone()[0]
        == 3000
    )
    assert before["ivf"] == kept["ivf"]


def test_reindex_declares_the_gallery_dimension(tmp_path):
    import facevec

    rng = np.random.default_rng(12)
    x = faces_like(rng, 300, 128)
    db = tmp_path / "gallery.db"
    facevec.add(db, [f"face{i}.jpg" for i in range(len(x))], x, model_name="Dlib")
    conn = facevec.connect(db, isolation_level=None)
    ids = [r[0] for r in conn.execute("SELECT id FROM face_meta ORDER BY id")]
    small = np.ones(64, "<f4").tobytes()  # most rows of another size than the model's
    conn.executemany(
        "UPDATE face_meta SET embedding = ? WHERE id = ?", [(small, i) for i in ids[:200]]
    )
    conn.close()
    with pytest.warns(UserWarning, match="left out 200 face"):
        assert facevec.reindex(db, progress=False, lists=4) == 100
    with facevec.connect(db) as conn:
        info = status(conn)
    assert info["dim"] == 128 and info["skipped"] == 200


def assign_all(conn, storage: str = "float32") -> None:
    """Start a build and assign every row in batches of 400 (so the rows are
    staged, not written at once), writing the first list or so."""
    conn.execute(
        "SELECT facevec_knn_create('face_meta', 'embedding', NULL, ?)", (options(storage),)
    )
    for _ in range(8):  # 3000 rows read and assigned, then one list written
        assert conn.execute("SELECT facevec_knn_sync('face_meta', 400)").fetchone()[0] >= 400
    info = status(conn)
    assert info["building"] and 3200 <= info["build_done"] < info["build_total"]


@pytest.mark.parametrize("storage", ["float32", "float16", "int8"])
def test_a_build_interrupted_while_writing_equals_uninterrupted(table, storage):
    make, x, queries = table
    whole = make("whole_w")
    whole.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(storage),)
    )
    want = snapshot(whole)
    stepped = make("stepped_w")
    assign_all(stepped, storage)
    done = status(stepped)["build_done"]
    calls = []
    stepped.set_progress_handler(lambda: len(calls) > 20 or calls.append(1), 100)
    with pytest.raises(Exception, match="interrupt"):
        stepped.execute("SELECT facevec_knn_sync('face_meta', 2000)")
    stepped.set_progress_handler(None, 0)
    assert status(stepped)["build_done"] == done  # the lists written before are kept
    assert stepped.execute(
        "SELECT facevec_knn_build('face_meta', 'embedding', NULL, ?)", (options(storage),)
    ).fetchone() == (3000,)
    assert snapshot(stepped) == want
    assert answers(stepped, queries) == answers(whole, queries)


def test_rows_changed_between_assigning_and_writing(table):
    make, x, queries = table
    conn = make("changed_w")
    assign_all(conn)
    conn.execute("DELETE FROM face_meta WHERE id IN (7, 1500, 2999)")
    conn.execute("UPDATE face_meta SET embedding = ? WHERE id = 20", (queries[0].tobytes(),))
    conn.execute("UPDATE face_meta SET embedding = x'010203' WHERE id = 30")
    while conn.execute("SELECT facevec_knn_sync('face_meta', 1000)").fetchone()[0] >= 1000:
        pass
    info = status(conn)
    assert not info["building"] and info["pending"] == 0
    assert info["vectors"] == 3000 - 3 - 1 and [r["rowid"] for r in info["skipped_rows"]] == [30]
    rows = conn.execute("SELECT id, embedding FROM face_meta WHERE id != 30 ORDER BY id").fetchall()
    ids = [r[0] for r in rows]
    xs = np.stack([np.frombuffer(r[1], np.float32) for r in rows])
    got = [[r for r, _ in a] for a in answers(conn, queries, nprobe=LISTS)]
    assert got == exact(xs, ids, queries)
    assert got[0][0] == 20
