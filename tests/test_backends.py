"""The same gallery on SQLite, PostgreSQL and MariaDB: same rows, same distances.

The gallery is embedded once (the session's indexed SQLite database) and its
vectors are copied to each server, so no photo is embedded once per backend. The
find tests themselves (test_find.py) run on every backend through the gallery_on
fixture; these are the server-specific ones.
"""

from __future__ import annotations

import os
import re
import sqlite3
import sys

import numpy as np
import pytest
from backends import SERVERS, STRATEGIES, admin_connection, fresh_database, server_url
from click.testing import CliRunner

import facevec
from facevec import errors as pipeline_errors
from facevec.cli import cli
from facevec.errors import DatabaseConnectionError, DatabaseURLError


@pytest.fixture(params=SERVERS)
def server(request) -> str:
    return request.param


@pytest.fixture
def empty_server_db(server, tmp_path):
    """A new empty database on each server in turn, dropped afterwards."""
    with fresh_database(server, tmp_path) as db:
        yield db


def stored_vector(gallery_db, name: str, face_index: int = 0) -> np.ndarray:
    with sqlite3.connect(gallery_db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE img_name LIKE ? AND face_index = ?",
            (f"%/{name}", face_index),
        ).fetchone()
    return np.frombuffer(blob, dtype="<f4").copy()


def keys(frame):
    return [
        (os.path.basename(name), int(index))
        for name, index in zip(frame.img_name, frame.face_index, strict=True)
    ]


@pytest.mark.parametrize("gallery_on", SERVERS, indirect=True)
def test_info_is_the_same_everywhere(gallery_on, gallery_db):
    _, db = gallery_on
    here, there = facevec.info(db), facevec.info(gallery_db)
    for key in (
        "model_name",
        "dimensions",
        "detector_backend",
        "faces",
        "images",
        "identities",
        "files_in_ledger",
        "ledger",
        "faces_in_ledger",
        "last_indexed_at",
    ):
        assert here[key] == there[key], key


def test_extension_strategy_is_sqlite_only_and_a_server_names_the_alternatives(
    gallery_on, gallery_db
):
    backend, db = gallery_on
    query = stored_vector(gallery_db, "img1.jpg")
    if backend == "sqlite":
        assert len(facevec.find(query, db, strategy="extension")[0]) >= 8
        return
    with pytest.raises(
        pipeline_errors.UnknownStrategyError,
        match=re.escape(
            f"the extension strategy needs SQLite; on {backend} use strategy='relational'"
            " or strategy='client'"
        ),
    ):
        facevec.find(query, db, strategy="extension")


# -- ingest on a server ----------------------------------------------------------

SMALL = {"id01": ["img5.jpg", "img10.jpg"], "id05": ["img25.jpg"]}


def test_index_a_folder_into_a_server_incrementally(
    empty_server_db, tmp_path, gallery_maker, gallery_db
):
    folder = gallery_maker(tmp_path / "small", SMALL)
    report = facevec.index(folder, empty_server_db, progress=False, batch_size=2)
    assert (report.files_seen, report.indexed, report.faces_added) == (3, 3, 3)
    again = facevec.index(folder, empty_server_db, progress=False)
    assert (again.unchanged, again.indexed) == (3, 0)
    # Same photos, same model: the server holds the very vectors SQLite holds.
    for name in ("img5.jpg", "img10.jpg", "img25.jpg"):
        (frame,) = facevec.find(
            stored_vector(gallery_db, name), empty_server_db, strategy="relational", k=1
        )
        assert keys(frame) == [(name, 0)] and frame.distance[0] == pytest.approx(0, abs=1e-6)
    (folder / "id05" / "img25.jpg").unlink()
    pruned = facevec.index(folder, empty_server_db, progress=False, prune=True)
    assert pruned.pruned == 1
    info = facevec.info(empty_server_db)
    assert (info["faces"], info["images"], info["files_in_ledger"]) == (2, 2, 2)
    assert info["ledger"]["indexed"] == 2


def test_both_representations_stored_with_server_types(empty_server_db, server, gallery_db):
    vectors = np.stack([stored_vector(gallery_db, n) for n in ("img1.jpg", "img2.jpg")])
    facevec.add(empty_server_db, ["a.jpg", "b.jpg"], vectors, identities=["x", "y"])
    from facevec.storage.database import open_database

    with open_database(empty_server_db) as db:
        for face_id, blob in db.query("SELECT id, embedding FROM face_meta ORDER BY id"):
            values = [
                v
                for (v,) in db.query(
                    "SELECT value FROM face_embeddings WHERE face_id = {p} ORDER BY dimension",
                    (face_id,),
                )
            ]
            np.testing.assert_array_equal(
                np.array(values), np.frombuffer(bytes(blob), "<f4").astype(np.float64)
            )
        schema_filter = "current_schema()" if server == "postgresql" else "DATABASE()"
        types = {
            (table, column): data_type.lower()
            for table, column, data_type in db.query(
                "SELECT table_name, column_name, data_type FROM information_schema.columns"
                f" WHERE table_schema = {schema_filter}"
            )
        }
    expected = {
        "postgresql": {
            ("face_meta", "embedding"): "bytea",
            ("face_embeddings", "value"): "double precision",
            ("face_meta", "id"): "bigint",
            ("face_meta", "img_name"): "text",
        },
        "mysql": {
            ("face_meta", "embedding"): "longblob",
            ("face_embeddings", "value"): "double",
            ("face_meta", "id"): "bigint",
            ("face_meta", "img_name"): "varchar",
        },
    }[server]
    for column, data_type in expected.items():
        assert types[column] == data_type, column


# -- a failed batch ---------------------------------------------------------------


def _fail_from_call(monkeypatch, module, name: str, call: int):
    """Make module.name fail from its `call`-th call on (a lasting fault, as a full disk)."""
    original = getattr(module, name)
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] >= call:
            raise RuntimeError("injected failure in the middle of a batch")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, failing)


def test_a_failed_batch_rolls_back_and_keeps_what_was_committed(
    empty_server_db, gallery_db, monkeypatch
):
    from facevec.storage import faces as store

    names = ["img1.jpg", "img2.jpg", "img4.jpg", "img5.jpg", "img6.jpg"]
    vectors = np.stack([stored_vector(gallery_db, n) for n in names])
    facevec.add(empty_server_db, names[:2], vectors[:2])  # committed
    # The next batch's faces are written in bulk, then the batch fails: none may stay.
    original = store.insert_stored_faces

    def written_then_failing(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("injected failure in the middle of a batch")

    monkeypatch.setattr(store, "insert_stored_faces", written_then_failing)
    with pytest.raises(RuntimeError, match="injected failure"):
        facevec.add(empty_server_db, names[2:], vectors[2:])
    monkeypatch.undo()
    info = facevec.info(empty_server_db)
    assert (info["faces"], info["images"]) == (2, 2)
    from facevec.storage.database import open_database

    with open_database(empty_server_db) as db:
        assert db.scalar("SELECT COUNT(*) FROM face_embeddings") == 2 * 128
        assert sorted(n for (n,) in db.query("SELECT img_name FROM face_meta")) == names[:2]
    facevec.add(empty_server_db, names[2:], vectors[2:])  # the retry finishes the job
    assert facevec.info(empty_server_db)["faces"] == 5


def test_a_failed_ingest_batch_keeps_earlier_batches_and_a_rerun_finishes(
    empty_server_db, tmp_path, gallery_maker, monkeypatch
):
    from facevec.storage import ledger

    folder = gallery_maker(tmp_path / "small", SMALL)
    _fail_from_call(monkeypatch, ledger, "record", 2)  # inside the 2nd one-photo batch
    with pytest.raises(RuntimeError, match="injected failure"):
        facevec.index(folder, empty_server_db, progress=False, batch_size=1)
    monkeypatch.undo()
    info = facevec.info(empty_server_db)
    assert (info["faces"], info["files_in_ledger"]) == (1, 1)
    report = facevec.index(folder, empty_server_db, progress=False)
    assert (report.unchanged, report.indexed) == (1, 2)
    info = facevec.info(empty_server_db)
    assert (info["faces"], info["images"], info["files_in_ledger"]) == (3, 3, 3)


def test_a_value_the_column_cannot_hold_fails_the_batch_not_the_data(
    empty_server_db, server, gallery_db
):
    vector = stored_vector(gallery_db, "img1.jpg")
    facevec.add(empty_server_db, ["kept.jpg"], [vector])
    too_long = "x" * 701 + ".jpg"  # over MySQL's VARCHAR(700) key; PostgreSQL's TEXT takes it
    if server == "mysql":
        with pytest.raises(Exception, match="Data too long"):
            facevec.add(empty_server_db, ["fine.jpg", too_long], [vector, vector])
        assert facevec.info(empty_server_db)["faces"] == 1
    else:
        facevec.add(empty_server_db, ["fine.jpg", too_long], [vector, vector])
        assert facevec.info(empty_server_db)["faces"] == 3


# -- connecting -------------------------------------------------------------------


def test_unreachable_server_is_a_clear_error():
    for url, product in (
        ("postgresql://someone@127.0.0.1:1/faces", "PostgreSQL"),
        ("mysql://someone@127.0.0.1:1/faces", "MariaDB/MySQL"),
    ):
        with pytest.raises(
            DatabaseConnectionError,
            match=re.escape(
                f"cannot connect to {product} at 127.0.0.1:1 as user 'someone', database 'faces': "
            ),
        ):
            facevec.info(url)


def test_wrong_credentials_are_a_clear_error(server):
    admin_connection(server).close()  # skip without a server
    base = server_url(server)
    parts = base.split("://", 1)[1].split("@", 1)[1]
    url = f"{server}://facevec_nobody:wrong@{parts}"
    with pytest.raises(DatabaseConnectionError) as caught:
        facevec.info(url)
    message = str(caught.value)
    assert "as user 'facevec_nobody'" in message and "wrong" not in message.replace("wrong@", "")
    assert "\n" not in message
    assert ("facevec_nobody" in message.split(": ", 1)[1]) or "denied" in message


def test_a_mysql_database_that_does_not_exist_is_a_clear_error():
    admin_connection("mysql").close()
    url = server_url("mysql").rsplit("/", 1)[0] + "/facevec_no_such_database"
    with pytest.raises(
        DatabaseConnectionError, match="Unknown database 'facevec_no_such_database'"
    ):
        facevec.info(url)


def test_a_missing_driver_names_the_extra(monkeypatch):
    for module, url, extra in (
        ("psycopg", "postgresql://u@127.0.0.1/x", "postgres"),
        ("pymysql", "mariadb://u@127.0.0.1/x", "mysql"),
    ):
        monkeypatch.setitem(sys.modules, module, None)  # import fails as if not installed
        with pytest.raises(
            pipeline_errors.MissingDependencyError,
            match=re.escape(f"pip install 'facevec[{extra}]'"),
        ):
            facevec.info(url)


def test_an_unknown_url_scheme_is_refused():
    with pytest.raises(
        DatabaseURLError, match=re.escape("unsupported database URL scheme 'oracle'")
    ):
        facevec.info("oracle://scott:tiger@127.0.0.1/orcl")


def test_the_cli_reports_a_connection_failure_in_one_line():

    result = CliRunner().invoke(
        cli, ["info", "--db", "postgresql://someone:secret@127.0.0.1:1/faces"]
    )
    assert result.exit_code == 1
    assert "cannot connect to PostgreSQL at 127.0.0.1:1 as user 'someone'" in result.output
    assert "Traceback" not in result.output and "secret" not in result.output


def test_the_cli_copies_a_gallery_to_a_server_and_back(empty_server_db, gallery_db, tmp_path):
    runner = CliRunner()
    result = runner.invoke(cli, ["copy", str(gallery_db), empty_server_db])
    faces = facevec.info(gallery_db)["faces"]
    assert result.exit_code == 0, result.output
    assert f"copied {faces} faces" in result.output
    back = tmp_path / "back.db"
    assert runner.invoke(cli, ["copy", empty_server_db, str(back)]).exit_code == 0
    query = stored_vector(gallery_db, "img1.jpg")
    (expected,) = facevec.find(query, gallery_db)
    (got,) = facevec.find(query, back, strategy="knn")  # the copy has its knn index
    assert keys(got) == keys(expected)


def test_the_cli_finds_on_a_server(gallery_on, gallery_db):
    backend, db = gallery_on

    strategy = STRATEGIES[backend][0]
    result = CliRunner().invoke(
        cli,
        ["find", facevec_photo("img1.jpg"), "--db", db, "--strategy", strategy, "--format", "csv"],
    )
    assert result.exit_code == 0, result.output
    assert "img1.jpg" in result.output and "img2.jpg" in result.output


def facevec_photo(name: str) -> str:
    from pipeline_photos import photo

    return photo(name)
