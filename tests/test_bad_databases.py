"""Databases and vectors that are not what facevec expects: one clear error, nothing lost."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import (
    DatabaseOpenError,
    SkippedFacesWarning,
    VectorError,
)


def test_a_file_that_is_not_a_database(tmp_path):
    bogus = tmp_path / "notes.db"
    bogus.write_text("these are my notes, not a database\n" * 100)
    with pytest.raises(DatabaseOpenError, match="cannot open .*notes.db as a SQLite database"):
        facevec.info(bogus)
    result = CliRunner().invoke(cli, ["info", "--db", str(bogus)])
    assert result.exit_code == 1
    assert "Error: cannot open" in result.output and "Traceback" not in result.output
    assert bogus.read_text().startswith("these are my notes")  # untouched


def test_all_zero_embeddings_are_refused_and_nothing_is_stored(tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["a.jpg"], [np.ones(8)], model_name="Dlib")
    with pytest.raises(ValueError, match=r"embedding 1 \('b.jpg'\) is all zeros"):
        facevec.add(db, ["c.jpg", "b.jpg"], [np.ones(8), np.zeros(8)], model_name="Dlib")
    assert facevec.info(db)["faces"] == 1


def test_an_all_zero_query_is_refused(tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["a.jpg"], [np.ones(8)], model_name="Dlib")
    with pytest.raises(VectorError, match="all zeros"):
        facevec.find(np.zeros(8), db)


def test_client_search_leaves_out_a_vector_of_another_size_and_names_it(tmp_path):
    db = tmp_path / "a.db"
    facevec.add(db, ["a.jpg", "b.jpg"], np.ones((2, 8)), model_name="Dlib")
    conn = sqlite3.connect(db)  # a writer that is not facevec
    conn.execute("UPDATE face_meta SET embedding = zeroblob(12) WHERE img_name = 'b.jpg'")
    conn.commit()
    conn.close()
    with pytest.warns(SkippedFacesWarning, match="'b.jpg', face 0.* is 12 bytes"):
        (frame,) = facevec.find(np.ones(8), db, strategy="client")
    assert list(frame.img_name) == ["a.jpg"]
    assert [row["img_name"] for row in frame.attrs["skipped"]] == ["b.jpg"]


def test_copy_into_a_database_of_another_model_is_refused(tmp_path):
    source, target = tmp_path / "dlib.db", tmp_path / "facenet.db"
    facevec.add(source, ["a.jpg"], [np.ones(8)], model_name="Dlib")
    facevec.add(target, ["b.jpg"], [np.ones(8)], model_name="Facenet")
    result = CliRunner().invoke(cli, ["copy", str(source), str(target)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "Facenet" in result.output and "Dlib" in result.output
    assert facevec.info(target)["faces"] == 1  # untouched
    assert facevec.info(target)["model_name"] == "Facenet"


def test_a_database_path_in_a_missing_folder(tmp_path):
    missing = tmp_path / "no" / "such" / "folder" / "faces.db"
    result = CliRunner().invoke(cli, ["index", str(tmp_path), "--db", str(missing)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert f"cannot open {missing} as a SQLite database" in result.output
