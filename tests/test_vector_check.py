"""One vector check at every way into a gallery: add (and the web API's /api/add),
the model's own vectors during index, Parquet import, copy and the storage layer
itself. A vector is stored only if every distance with it is defined; the error
names the row, and nothing is stored."""

from __future__ import annotations

import re
import sqlite3
import warnings

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import BACKENDS, fresh_database
from web_support import AUTH, client_for

import facevec
from facevec.errors import InvalidVectorError, SkippedFacesWarning
from facevec.storage import faces as face_rows
from facevec.storage.database import open_database
from facevec.transfer import copy_gallery, import_parquet

DIM = 16

# (what the row holds, how the error says it)
UNSTORABLE = [
    ("zeros", "is all zeros"),
    ("nan", "holds NaN at dimension 2"),
    ("inf", "holds infinity at dimension 2"),
    ("-inf", "holds infinity at dimension 2"),
    ("1e39", "holds 1e+39 at dimension 2, beyond float32's range"),
    ("tiny", "has length 4e-20, below 1e-15"),
    ("huge", "has length 4e+16, above 1e+15"),
]


def unstorable(kind: str) -> np.ndarray:
    row = np.ones(DIM, dtype=np.float64)
    if kind == "zeros":
        return np.zeros(DIM)
    if kind == "tiny":
        return row * 1e-20
    if kind == "huge":
        return row * 1e16
    row[2] = float(kind)
    return row


def rows_with(kind: str, n: int = 6, bad: int = 3) -> np.ndarray:
    values = np.random.default_rng(1).normal(size=(n, DIM))
    values[bad] = unstorable(kind)
    return values


@pytest.mark.parametrize("kind, message", UNSTORABLE, ids=[k for k, _ in UNSTORABLE])
def test_add_refuses_a_vector_no_distance_can_rank_and_names_it(kind, message, tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["ok.jpg"], np.ones((1, DIM)))
    names = [f"p{i}.jpg" for i in range(6)]
    with pytest.raises(InvalidVectorError, match=re.escape(f"embedding 3 ('p3.jpg') {message}")):
        facevec.add(db, names, rows_with(kind))
    assert facevec.info(db)["faces"] == 1  # nothing of the call stored


def test_the_web_api_add_refuses_the_same_vectors(tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["ok.jpg"], np.ones((1, DIM)))
    body = {"img_names": ["a.jpg", "b.jpg"], "embeddings": [[1.0] * DIM, [1e39] + [1.0] * 15]}
    with client_for(str(db)) as http:
        response = http.post("/api/add", json=body, headers=AUTH)
    assert response.status_code == 400, response.text
    assert "embedding 1 ('b.jpg') holds 1e+39 at dimension 0" in response.text
    assert facevec.info(db)["faces"] == 1


def test_the_storage_layer_refuses_a_vector_no_use_case_checked(tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["ok.jpg"], np.ones((1, DIM)))
    (face,) = face_rows.stored_faces(open_database(db), "ok.jpg")
    bad = face.__class__(**{**face.__dict__, "img_name": "x.jpg", "embedding": bytes(4 * DIM)})
    with open_database(db) as database, pytest.raises(InvalidVectorError, match="'x.jpg' is all"):
        with database.transaction():
            face_rows.insert_stored_face(database, bad)
    assert facevec.info(db)["faces"] == 1


def test_a_model_vector_that_cannot_be_stored_fails_that_photo_only(tmp_path, monkeypatch):
    """index checks the model's own vectors: a photo whose face came out NaN gets an
    'error' ledger row naming it, the others are stored."""
    from facevec.ingest import photo

    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("good.jpg", "nan.jpg"):
        (folder / name).write_bytes(name.encode())

    def process(text_path, data, sha256, settings):
        vector = np.ones(DIM, np.float32) if "good" in text_path else np.full(DIM, np.nan)
        face = facevec.face.Face(0, vector.astype(np.float32), 0, 0, 50, 50)
        return photo.Result(text_path, sha256, len(data), "indexed", [face])

    monkeypatch.setattr(photo, "process", process)
    monkeypatch.setattr(photo, "model_dimensions", lambda options: DIM)
    report = facevec.index(folder, tmp_path / "g.db", workers=1, progress=False)
    assert (report.indexed, report.errors, report.faces_added) == (1, 1, 1)
    (message,) = report.error_messages.values()
    assert message == f"the model's vector of face 0 of {folder}/nan.jpg holds NaN at dimension 0"
    with sqlite3.connect(tmp_path / "g.db") as conn:
        outcomes = dict(conn.execute("SELECT path, outcome FROM ingest_ledger"))
    assert outcomes == {f"{folder}/good.jpg": "indexed", f"{folder}/nan.jpg": "error"}


def vector_parquet(path, values: np.ndarray, model: str | None = "Dlib") -> None:
    """Parquet of another tool: float64 lists (so 1e39 stays itself), a model column."""
    n = len(values)
    offsets = pa.array(np.arange(0, (n + 1) * DIM, DIM, dtype=np.int32))
    table = pa.table(
        {
            "img_name": [f"p{i}" for i in range(n)],
            "face_index": pa.array([0] * n, pa.int32()),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(values.ravel(), pa.float64())),
            **({"model_name": [model] * n} if model else {}),
        }
    )
    pq.write_table(table, path)


def refused_import(db, folder, message) -> None:
    with pytest.raises(InvalidVectorError, match=re.escape(message)):
        import_parquet(folder, db, progress=False)
    # One transaction: the 500 rows of the batch before are not kept either.
    assert facevec.info(db)["faces"] == 1


@pytest.mark.parametrize("kind, message", UNSTORABLE[:5], ids=[k for k, _ in UNSTORABLE[:5]])
def test_import_refuses_what_add_refuses(kind, message, tmp_path):
    vector_parquet(tmp_path / "data.parquet", rows_with(kind, n=700, bad=603))
    db = tmp_path / "g.db"
    facevec.add(db, ["kept.jpg"], np.ones((1, DIM)))
    refused_import(
        db, tmp_path / "data.parquet", f"row 603 of data.parquet ('p603', face 0): {message}"
    )


@pytest.mark.slow
@pytest.mark.parametrize("backend", [b for b in BACKENDS if b != "sqlite"])
def test_import_refuses_nan_on_servers_too(backend, tmp_path):
    """A server stores NaN where SQLite cannot: the check comes first everywhere."""
    vector_parquet(tmp_path / "data.parquet", rows_with("nan", n=700, bad=603))
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["kept.jpg"], np.ones((1, DIM)))
        refused_import(
            db, tmp_path / "data.parquet", "row 603 of data.parquet ('p603', face 0): holds NaN"
        )


def test_copy_leaves_out_and_names_rows_it_could_not_store(tmp_path):
    source, target = tmp_path / "old.db", tmp_path / "new.db"
    facevec.add(source, ["a.jpg", "b.jpg", "c.jpg"], np.random.default_rng(2).normal(size=(3, DIM)))
    with sqlite3.connect(source) as conn:  # what an older version let in
        conn.execute(
            "UPDATE face_meta SET embedding = ? WHERE img_name = 'b.jpg'",
            (np.full(DIM, np.inf, "<f4").tobytes(),),
        )
    with pytest.warns(SkippedFacesWarning, match=re.escape("'b.jpg' face 0 holds infinity")):
        copied = copy_gallery(source, target)
    assert (copied["faces"], copied["skipped"], copied["images"]) == (2, 1, 3)
    assert facevec.info(target)["faces"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the copy holds nothing to warn about
        assert facevec.info(target)["invalid_faces"] == []
