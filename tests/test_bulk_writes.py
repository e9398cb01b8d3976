"""The bulk path of add, copy and import (COPY, multi-row INSERT, one transaction
per batch) on SQLite, PostgreSQL and MariaDB.

Each bulk write leaves the same rows as the row-by-row functions of the storage
layer (face_meta, face_embeddings, each face's list and, on MariaDB, the
list-clustered vectors); a bad vector in the middle of a batch is refused with
the error of the row-by-row path and leaves the gallery as it was.
"""

from __future__ import annotations

import dataclasses
import io
import re

import numpy as np
import pytest
from backends import BACKENDS, fresh_database
from ivf_data import grouped_faces
from PIL import Image

import facevec
from facevec.errors import GalleryFormatError, InvalidVectorError
from facevec.face import Face
from facevec.ingest import sync_people
from facevec.storage import faces, schema
from facevec.storage.database import open_database
from facevec.transfer import copy_gallery, export_parquet, import_parquet

N = 240
LISTS = 6
DIM = 128


def _crop(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (8, 8, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def _names(n: int, offset: int = 0) -> list[str]:
    # Every fifth image holds two faces: face 0 and face 1 of one name.
    return [
        f"p{(row + offset) // 2 if (row + offset) % 5 == 0 else row + offset}.jpg"
        for row in range(n)
    ]


def snapshot(db) -> dict[str, object]:
    """Everything a write leaves, keyed by (img_name, face_index) instead of ids."""
    columns = [c for c in faces.STORED_FACE_COLUMNS if c != "created_at"]
    with open_database(db) as database:
        rows = database.query(f"SELECT id, {', '.join(columns)}, ivf_list FROM face_meta")
        key_of = {int(row[0]): (row[1], int(row[3])) for row in rows}
        meta = sorted(
            tuple(bytes(v) if isinstance(v, (memoryview, bytearray)) else v for v in row[1:])
            for row in rows
        )
        values = sorted(
            key_of[int(face_id)] + (int(dimension), float(value))
            for face_id, dimension, value in database.query(
                "SELECT face_id, dimension, value FROM face_embeddings"
            )
        )
        clustered = sorted(
            key_of[int(face_id)] + (int(list_no), bytes(blob))
            for list_no, face_id, blob in database.query(
                "SELECT list_no, face_id, embedding FROM facevec_list_vectors"
            )
        )
        people = sorted(
            (name, int(n)) for name, n in database.query("SELECT name, faces FROM people")
        )
    return {"meta": meta, "values": values, "clustered": clustered, "people": people}


def _row_by_row_add(db, names, vectors, identities, model="Dlib"):
    """What add wrote before the bulk path: one INSERT per face (and per value)."""
    grouped: dict[str, list[int]] = {}
    for row, name in enumerate(names):
        grouped.setdefault(name, []).append(row)
    with open_database(db) as database:
        schema.create_schema(database)
        schema.ensure_collection(database, model, vectors.shape[1], None)
        with database.transaction():
            for name, rows in grouped.items():
                stored = [Face.from_vector(vectors[row], i) for i, row in enumerate(rows)]
                faces.replace_image(database, name, stored, model, None, identities[rows[0]])
        sync_people(database)


def _start(db, vectors, labels):
    """The same first gallery in each database: bulk add, then lists."""
    names = _names(len(vectors))
    facevec.add(db, names, vectors, model_name="Dlib", identities=[f"id{x}" for x in labels])
    facevec.train_lists(db, LISTS, progress=False)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_add_equals_row_by_row(backend, tmp_path):
    vectors, labels = grouped_faces(N, seed=5, groups=6)
    more, more_labels = grouped_faces(N // 2, seed=6, groups=6)
    # Half the new names replace stored images, half are new.
    names = _names(N // 2, offset=N // 2)
    identities = [f"id{x}" for x in more_labels]
    with fresh_database(backend, tmp_path) as bulk, fresh_database(backend, tmp_path) as single:
        for db in (bulk, single):
            _start(db, vectors, labels)
        assert snapshot(bulk) == snapshot(single)
        facevec.add(bulk, names, more, model_name="Dlib", identities=identities)
        _row_by_row_add(single, names, more, identities)
        after = snapshot(bulk)
        assert after == snapshot(single)
        images = {name: _names(N).count(name) for name in _names(N)}
        images.update({name: names.count(name) for name in names})
        assert len(after["meta"]) == sum(images.values())
        assert all(row[-1] is not None for row in after["meta"])  # every face in a list
        if backend == "mysql":  # the clustered copy holds every face, in its list
            assert len(after["clustered"]) == len(after["meta"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_copy_equals_row_by_row(backend, tmp_path):
    vectors, labels = grouped_faces(N, seed=7, groups=6)
    source = str(tmp_path / "source.db")
    names = _names(N)
    facevec.add(source, names, vectors, model_name="Dlib", identities=[f"id{x}" for x in labels])
    with open_database(source) as database, database.transaction():
        database.execute("UPDATE face_meta SET face_image = {p} WHERE face_index = 1", (_crop(1),))
    with fresh_database(backend, tmp_path) as bulk, fresh_database(backend, tmp_path) as single:
        for db in (bulk, single):  # a target with lists and some of the images already
            _start(db, vectors[: N // 2] * 1.01, labels[: N // 2])
        copied = copy_gallery(source, bulk, batch_size=64, people=False)
        assert copied["faces"] == N and copied["skipped"] == 0
        with open_database(source) as src, open_database(single) as dst:
            for name in faces.image_names(src):
                with dst.transaction():
                    faces.replace_stored_image(dst, name, faces.stored_faces(src, name))
            sync_people(dst)
        assert snapshot(bulk) == snapshot(single)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_import_equals_row_by_row(backend, tmp_path):
    vectors, labels = grouped_faces(N, seed=9, groups=6)
    source = str(tmp_path / "source.db")
    facevec.add(
        source, _names(N), vectors, model_name="Dlib", identities=[f"id{x}" for x in labels]
    )
    folder = tmp_path / "parquet"
    export_parquet(source, folder, progress=False)
    with fresh_database(backend, tmp_path) as bulk, fresh_database(backend, tmp_path) as single:
        for db in (bulk, single):
            _start(db, vectors[::2] * 0.99, labels[::2])
        counts = import_parquet(folder, bulk, batch_size=50, progress=False, people=False)
        assert counts["faces"] == N and counts["replaced"] > 0
        with open_database(source) as src, open_database(single) as dst:
            with dst.transaction():
                for rows in faces.iter_stored_faces(src):
                    for _, face in rows:
                        faces.replace_stored_face(dst, face)
            sync_people(dst)
        assert snapshot(bulk) == snapshot(single)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_vector_in_a_bulk_batch_loses_nothing(backend, tmp_path):
    vectors, labels = grouped_faces(N, seed=11, groups=6)
    with fresh_database(backend, tmp_path) as db:
        _start(db, vectors, labels)
        before = snapshot(db)
        bad = vectors[: N // 2] + 0.01
        bad[77, 3] = np.nan
        names = _names(N // 2)
        with pytest.raises(InvalidVectorError, match=re.escape(f"embedding 77 ({names[77]!r})")):
            facevec.add(db, names, bad, model_name="Dlib")
        assert snapshot(db) == before
        # The storage layer's own check, a bad blob in the middle of one bulk insert:
        # the row-by-row error, and the transaction rolls back what came before it.
        stored = [
            faces.stored_face(f"new{row}.jpg", Face.from_vector(v), "Dlib", None)
            for row, v in enumerate(vectors[:50])
        ]
        blob = np.zeros(DIM, dtype="<f4").tobytes()
        stored[25] = dataclasses.replace(stored[25], embedding=blob)
        with open_database(db) as database:
            with pytest.raises(InvalidVectorError) as single:
                with database.transaction():
                    faces.insert_stored_face(database, stored[25])
            with pytest.raises(InvalidVectorError) as bulk:
                with database.transaction():
                    faces.replace_stored_images(database, {"x.jpg": stored[:10]})
                    faces.insert_stored_faces(database, stored[10:])
            assert str(bulk.value) == str(single.value)
            assert "all zeros" in str(bulk.value)
        assert snapshot(db) == before
        # A bad row in the second batch of an import: the whole import is refused.
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = vectors[:120] * 1.02
        rows[90] = 0.0
        folder = tmp_path / "bad-parquet"
        folder.mkdir()
        pq.write_table(
            pa.table(
                {
                    "img_name": [f"q{row}.jpg" for row in range(120)],
                    "face_index": pa.array([0] * 120, pa.int32()),
                    "embedding": pa.FixedSizeListArray.from_arrays(
                        pa.array(rows.astype(np.float32).ravel()), DIM
                    ),
                }
            ),
            folder / "part-00000.parquet",
        )
        with pytest.raises(
            InvalidVectorError, match=re.escape("row 90 of part-00000.parquet ('q90.jpg', face 0):")
        ):
            import_parquet(folder, db, model_name="Dlib", batch_size=50, progress=False)
        assert snapshot(db) == before


# Names a COPY line or an SQL literal must escape: tab, newline, backslash, quotes.
AWKWARD = ["tab\there.jpg", "new\nline.jpg", "back\\slash.jpg", 'it\'s "quoted".jpg', "é ✓.jpg"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_add_keeps_awkward_text_as_it_is(backend, tmp_path):
    vectors, _ = grouped_faces(len(AWKWARD) * 2, seed=13, groups=2)
    names = AWKWARD * 2  # two faces of each
    identities = ["who\t\\ 'x'\n" if row % 2 else "plain" for row in range(len(names))]
    with fresh_database(backend, tmp_path) as bulk, fresh_database(backend, tmp_path) as single:
        facevec.add(bulk, names, vectors, model_name="Dlib", identities=identities)
        _row_by_row_add(single, names, vectors, identities)
        after, expected = snapshot(bulk), snapshot(single)
        assert (after["meta"], after["values"]) == (expected["meta"], expected["values"])
        assert sorted({row[0] for row in after["meta"]}) == sorted(AWKWARD)
        assert {row[1] for row in after["meta"]} == set(identities)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bulk_copy_and_import_keep_crops_and_nulls(backend, tmp_path):
    vectors, labels = grouped_faces(40, seed=17, groups=2)
    source = str(tmp_path / "source.db")
    facevec.add(source, AWKWARD * 8, vectors, model_name="Dlib")
    with open_database(source) as database, database.transaction():
        database.execute("UPDATE face_meta SET face_image = {p} WHERE face_index = 1", (_crop(3),))
        database.execute("UPDATE face_meta SET face_confidence = 0.5, facial_area_x = 7")
    folder = tmp_path / "parquet"
    export_parquet(source, folder, progress=False)
    expected = snapshot(source)
    with fresh_database(backend, tmp_path) as copied, fresh_database(backend, tmp_path) as imported:
        copy_gallery(source, copied, batch_size=2)  # every batch one range of names
        import_parquet(folder, imported, batch_size=7, progress=False)
        assert snapshot(copied)["meta"] == expected["meta"]
        assert snapshot(imported)["meta"] == expected["meta"]


@pytest.mark.parametrize("backend", ["mysql"])
def test_multi_row_statements_split_by_size_keep_every_row(backend, tmp_path, monkeypatch):
    # Every row larger than the limit: each alone in a statement of its own.
    monkeypatch.setattr(faces, "MULTI_ROW_BYTES", 1000)
    vectors, labels = grouped_faces(N, seed=19, groups=6)
    identities = [f"id{x}" for x in labels]
    with fresh_database(backend, tmp_path) as bulk, fresh_database(backend, tmp_path) as single:
        facevec.add(bulk, _names(N), vectors, model_name="Dlib", identities=identities)
        _row_by_row_add(single, _names(N), vectors, identities)
        after, expected = snapshot(bulk), snapshot(single)
        assert (after["meta"], after["values"]) == (expected["meta"], expected["values"])
        assert len(after["meta"]) == N


def test_the_batch_check_of_float32_finds_what_the_float64_check_finds():
    from facevec.vectors import MAX_LENGTH, MIN_LENGTH, problems

    rng = np.random.default_rng(23)
    rows = rng.standard_normal((40, DIM))
    unit = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    # Lengths at and around both bounds, in float32's own rounding.
    for row, length in enumerate(
        [MIN_LENGTH, MAX_LENGTH, MIN_LENGTH * 0.9999, MAX_LENGTH * 1.0001, 0.0]
        + [MIN_LENGTH * 1.0009, MAX_LENGTH * 0.9991, 3e38, 1e-20]
    ):
        unit[row] *= length
    unit[10, 5] = np.nan
    unit[11, 6] = np.inf
    narrow = unit.astype(np.float32)
    assert [(p.row, p.reason) for p in problems(narrow)] == [
        (p.row, p.reason) for p in problems(narrow.astype(np.float64))
    ]
    assert len(problems(narrow)) >= 6
    clean = narrow[20:]
    assert problems(clean) == [] == problems(clean.astype(np.float64))


# The bulk paths write each batch in a background thread while the next is prepared;
# on PostgreSQL in binary COPY. -------------------------------------------------


@pytest.mark.parametrize("backend", ["postgresql"])
def test_binary_copy_leaves_what_the_text_format_leaves(backend, tmp_path, monkeypatch):
    vectors, labels = grouped_faces(N, seed=29, groups=6)
    source = str(tmp_path / "source.db")
    names = [AWKWARD[row % len(AWKWARD)] if row % 7 == 0 else n for row, n in enumerate(_names(N))]
    facevec.add(source, names, vectors, model_name="Dlib", identities=[f"id{x}" for x in labels])
    with open_database(source) as database, database.transaction():
        database.execute("UPDATE face_meta SET face_image = {p} WHERE face_index = 1", (_crop(5),))
        database.execute("UPDATE face_meta SET face_confidence = 0.25, facial_area_w = 3")
        database.execute("UPDATE face_meta SET identity = '' WHERE img_name = {p}", (names[3],))
    with fresh_database(backend, tmp_path) as binary, fresh_database(backend, tmp_path) as text:
        copy_gallery(source, binary, batch_size=40, people=False)
        written = []
        original = faces._copy_lines
        monkeypatch.setattr(faces, "_binary_types", lambda db, table="face_meta": None)
        monkeypatch.setattr(faces, "_copy_lines", lambda *a: written.append(1) or original(*a))
        copy_gallery(source, text, batch_size=40, people=False)
        assert written  # the text format did write the second copy
        assert snapshot(binary) == snapshot(text)
        assert snapshot(binary)["meta"] == snapshot(source)["meta"]


def test_binary_fields_refuse_what_they_would_not_write_exactly():
    from facevec.storage import binary_copy

    assert binary_copy.encode_column("x", [1, 2.5], "bigint", 2) is None
    assert binary_copy.encode_column("x", [1, True], "bigint", 2) is None
    assert binary_copy.encode_column("x", [1, 2**63], "bigint", 2) is None
    assert binary_copy.encode_column("x", [1, 2**31], "integer", 2) is None
    assert binary_copy.encode_column("x", ["a", 3], "text", 2) is None
    assert binary_copy.encode_column("x", ["a", "b"], "bytea", 2) is None
    assert binary_copy.encode_column("x", [2**60, 1], "double precision", 2) is None
    assert binary_copy.encode_column("x", 7, "text", 3) is None
    shared = binary_copy.encode_column("x", [None, None], "bigint", 2)
    assert shared is not None and shared.shared == binary_copy.NULL
    mixed = binary_copy.encode_column("x", [None, 5], "bigint", 2)
    assert mixed is not None and mixed.pieces == [binary_copy.NULL, b"\0\0\0\x08" + (5).to_bytes(8)]
    text = binary_copy.encode_column("x", ["é", ""], "text", 2)
    assert text is not None and text.pieces == [b"\0\0\0\x02" + "é".encode(), b"\0\0\0\0"]
    assert binary_copy.column_types({"a": "bigint"}, ["a", "b"]) is None
    assert binary_copy.column_types({"a": "jsonb"}, ["a"]) is None


def _fail_on_call(monkeypatch, calls: int):
    """insert_stored_faces fails on its `calls`-th call (in the writer thread)."""
    original = faces.insert_stored_faces
    seen = []

    def failing(*args, **kwargs):
        seen.append(1)
        if len(seen) == calls:
            raise RuntimeError(f"injected failure in write {calls}")
        return original(*args, **kwargs)

    monkeypatch.setattr(faces, "insert_stored_faces", failing)
    return seen


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_write_in_the_writer_thread_surfaces_and_loses_nothing(
    backend, tmp_path, monkeypatch
):
    import facevec.ingest

    vectors, labels = grouped_faces(N, seed=31, groups=6)
    source = str(tmp_path / "source.db")
    facevec.add(source, _names(N), vectors, model_name="Dlib")
    folder = tmp_path / "parquet"
    export_parquet(source, folder, progress=False)
    with fresh_database(backend, tmp_path) as db:
        _start(db, vectors[:40] * 1.01, labels[:40])
        before = snapshot(db)
        monkeypatch.setattr(facevec.ingest, "ADD_BATCH", 50)
        seen = _fail_on_call(monkeypatch, 3)
        with pytest.raises(RuntimeError, match="injected failure in write 3"):
            facevec.add(db, _names(N, offset=7), vectors, model_name="Dlib", people=False)
        assert len(seen) == 3  # no write started after the failed one
        assert snapshot(db) == before  # add is one transaction
        seen = _fail_on_call(monkeypatch, 2)
        with pytest.raises(RuntimeError, match="injected failure in write 2"):
            import_parquet(folder, db, batch_size=50, progress=False, people=False)
        assert len(seen) == 2 and snapshot(db) == before
        # copy commits each batch: the batches before the failed one stay, whole.
        seen = _fail_on_call(monkeypatch, 3)
        with pytest.raises(RuntimeError, match="injected failure in write 3"):
            copy_gallery(source, db, batch_size=30, people=False)
        assert len(seen) == 3
        monkeypatch.undo()
        with open_database(source) as src:
            names = faces.image_names(src)
        with open_database(db) as database:
            stored = {
                name: n
                for name, n in database.query(
                    "SELECT img_name, COUNT(*) FROM face_meta GROUP BY img_name"
                )
            }
        copied = names[:60]  # the first two batches of 30 images
        assert all(stored[name] == _names(N).count(name) for name in copied)
        copy_gallery(source, db, batch_size=30, people=False)  # the rerun finishes
        assert _faces(db) == _faces(source)


def _faces(db) -> list[tuple]:
    """face_meta as snapshot shows it, without the list (the target has lists)."""
    return sorted(row[:-1] for row in snapshot(db)["meta"])


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_interrupted_copy_keeps_whole_batches_and_a_rerun_finishes(
    backend, tmp_path, monkeypatch
):
    vectors, _ = grouped_faces(N, seed=37, groups=6)
    source = str(tmp_path / "source.db")
    facevec.add(source, _names(N), vectors, model_name="Dlib")
    with fresh_database(backend, tmp_path) as db:
        original = faces.face_columns_of_range
        reads = []

        def interrupted(*args, **kwargs):  # Ctrl-C while reading the 4th batch
            reads.append(1)
            if len(reads) == 4:
                raise KeyboardInterrupt
            return original(*args, **kwargs)

        monkeypatch.setattr(faces, "face_columns_of_range", interrupted)
        with pytest.raises(KeyboardInterrupt):
            copy_gallery(source, db, batch_size=25, people=False)
        monkeypatch.undo()
        with open_database(source) as src:
            names = faces.image_names(src)
        with open_database(db) as database:
            stored = dict(
                database.query("SELECT img_name, COUNT(*) FROM face_meta GROUP BY img_name")
            )
        # The three batches read before the interruption were all written, whole.
        assert sorted(stored) == sorted(names[:75])
        assert all(n == _names(N).count(name) for name, n in stored.items())
        copy_gallery(source, db, batch_size=25, people=False)
        assert snapshot(db)["meta"] == snapshot(source)["meta"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_batch_prepared_before_the_lists_changed_gets_the_new_lists(backend, tmp_path):
    vectors, labels = grouped_faces(N, seed=41, groups=6)
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, _names(N), vectors, model_name="Dlib", people=False)
        stored = [
            faces.stored_face(f"late{row}.jpg", Face.from_vector(v), "Dlib", None)
            for row, v in enumerate(vectors[:30] * 1.03)
        ]
        with open_database(db) as database:
            plan = faces.write_plan(database)  # no lists yet
            database.commit()
            prepared = faces.prepare_faces(stored, plan)
        facevec.train_lists(db, LISTS, progress=False)
        with open_database(db) as database:
            with database.transaction():
                faces.insert_stored_faces(database, prepared)
            rows = database.query(
                "SELECT img_name, ivf_list FROM face_meta WHERE img_name LIKE {p}", ("late%",)
            )
        late = {name: number for name, number in rows}
        assert len(late) == 30 and all(n is not None for n in late.values())
        with open_database(db) as database:
            current = faces.lists.layout(database)
            expected = faces.lists.lists_of_matrix(database, vectors[:30] * 1.03, current)
        assert [late[f"late{row}.jpg"] for row in range(30)] == expected


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_face_repeated_in_a_later_batch_of_an_import_is_refused(backend, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Into an empty gallery the import asks the database only for keys it has seen:
    # the repeat, in the third batch, must still be found (on MariaDB too).
    vectors, _ = grouped_faces(60, seed=43, groups=2)
    names = [f"r{row}.jpg" for row in range(60)]
    names[55] = names[12]
    folder = tmp_path / "repeat"
    folder.mkdir()
    pq.write_table(
        pa.table(
            {
                "img_name": names,
                "face_index": pa.array([0] * 60, pa.int32()),
                "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.ravel()), DIM),
            }
        ),
        folder / "part-00000.parquet",
    )
    with fresh_database(backend, tmp_path) as db:
        with pytest.raises(
            GalleryFormatError,
            match=re.escape("row 55 of part-00000.parquet ('r12.jpg', face 0): this face"),
        ):
            import_parquet(folder, db, model_name="Dlib", batch_size=25, progress=False)
        with open_database(db) as database:
            assert schema.get_collection(database) is None or faces.count(database) == 0
