"""facevec export / import: a gallery as Parquet and back, bit for bit, on every database."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import (
    DatabaseNotFoundError,
    GalleryFormatError,
    ModelMismatchError,
)
from facevec.transfer import PARQUET_METADATA_KEY, export_parquet, import_parquet

# Every stored column but the id, which the importing database assigns.
COMPARED = [
    "img_name",
    "identity",
    "face_index",
    "embedding",
    "model_name",
    "detector_backend",
    "facial_area_x",
    "facial_area_y",
    "facial_area_w",
    "facial_area_h",
    "left_eye_x",
    "left_eye_y",
    "right_eye_x",
    "right_eye_y",
    "face_confidence",
    "face_image",
    "source_sha256",
    "created_at",
]


def read_export(folder) -> pa.Table:
    table = pq.read_table(folder)
    return table.sort_by([("img_name", "ascending"), ("face_index", "ascending")])


def assert_same_faces(a: pa.Table, b: pa.Table) -> None:
    assert a.num_rows == b.num_rows > 0
    for column in COMPARED:
        assert a.column(column).equals(b.column(column)), column
    # Bit for bit: the float32 values' bytes, not a tolerance.
    left = np.asarray(a.column("embedding").combine_chunks().flatten())
    right = np.asarray(b.column("embedding").combine_chunks().flatten())
    assert left.tobytes() == right.tobytes()


@pytest.mark.parametrize("backend", BACKENDS)
def test_round_trip_is_bit_exact(backend, gallery_db, tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    written = export_parquet(gallery_db, first, rows_per_file=7, progress=False)
    faces = facevec.info(gallery_db)["faces"]
    people = len(facevec.people.list_people(gallery_db))  # its folder people
    assert written == {"faces": faces, "files": -(-faces // 7), "people": people}
    with fresh_database(backend, tmp_path) as db:
        imported = import_parquet(first, db, progress=False)
        assert imported == {"faces": faces, "replaced": 0, "people": people}
        export_parquet(db, second, progress=False)
        info = facevec.info(db)
    assert info["faces"] == faces and info["model_name"] == "Dlib"
    exported = read_export(first)
    assert_same_faces(exported, read_export(second))
    assert exported.schema.field("embedding").type == pa.list_(pa.float32(), 128)
    assert exported.column("face_image").null_count == 0  # the crops travel too
    metadata = pq.read_schema(sorted(first.glob("*.parquet"))[0]).metadata
    assert b'"model_name": "Dlib"' in metadata[PARQUET_METADATA_KEY]
    assert b'"dimensions": 128' in metadata[PARQUET_METADATA_KEY]


def test_a_rerun_replaces_instead_of_duplicating(gallery_db, tmp_path):
    export_parquet(gallery_db, tmp_path / "pq", progress=False)
    target = tmp_path / "target.db"
    faces = facevec.info(gallery_db)["faces"]
    people = len(facevec.people.list_people(gallery_db))
    assert import_parquet(tmp_path / "pq", target, progress=False) == {
        "faces": faces,
        "replaced": 0,
        "people": people,
    }
    again = import_parquet(tmp_path / "pq", target, progress=False)
    assert again == {"faces": faces, "replaced": faces, "people": people}
    assert facevec.info(target)["faces"] == faces


def test_search_after_import_matches_the_original(gallery_db, tmp_path):
    export_parquet(gallery_db, tmp_path / "pq", progress=False)
    target = tmp_path / "target.db"
    import_parquet(tmp_path / "pq", target, progress=False)
    table = read_export(tmp_path / "pq")
    query = np.asarray(table.column("embedding")[0].values, dtype=np.float32)
    (before,) = facevec.find(query, gallery_db, k=5)
    (after,) = facevec.find(query, target, k=5)
    assert list(before.img_name) == list(after.img_name)
    assert np.array_equal(before.distance.to_numpy(), after.distance.to_numpy())


def test_parquet_of_another_tool_imports_with_its_model_named(tmp_path):
    """Spark writes array<float> without facevec's metadata: --model says the model."""
    vectors = np.random.default_rng(3).normal(size=(5, 16)).astype(np.float32)
    offsets = pa.array(np.arange(0, 6 * 16, 16, dtype=np.int32))
    table = pa.table(
        {
            "img_name": [f"p{i}.jpg" for i in range(5)],
            "face_index": pa.array([0] * 5, pa.int32()),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel())),
        }
    )
    (tmp_path / "other").mkdir()
    pq.write_table(table, tmp_path / "other" / "data.parquet")
    with pytest.raises(GalleryFormatError, match="which model"):
        import_parquet(tmp_path / "other", tmp_path / "x.db", progress=False)
    import_parquet(tmp_path / "other", tmp_path / "x.db", model_name="Facenet", progress=False)
    assert facevec.info(tmp_path / "x.db")["model_name"] == "Facenet"
    (hit,) = facevec.find(vectors[3], tmp_path / "x.db", k=1, similarity_search=True)
    assert hit.img_name[0] == "p3.jpg" and hit.distance[0] == 0


def test_bad_inputs_are_one_clear_error(gallery_db, tmp_path):
    with pytest.raises(DatabaseNotFoundError, match=re.escape(str(tmp_path / "none.db"))):
        export_parquet(tmp_path / "none.db", tmp_path / "out", progress=False)
    export_parquet(gallery_db, tmp_path / "out", progress=False)
    with pytest.raises(GalleryFormatError, match="already holds 1 Parquet files"):
        export_parquet(gallery_db, tmp_path / "out", progress=False)
    assert export_parquet(gallery_db, tmp_path / "out", overwrite=True, progress=False)["files"]
    with pytest.raises(DatabaseNotFoundError, match="no Parquet gallery"):
        import_parquet(tmp_path / "missing", tmp_path / "t.db", progress=False)
    (tmp_path / "bad").mkdir()
    pq.write_table(pa.table({"img_name": ["a"]}), tmp_path / "bad" / "a.parquet")
    with pytest.raises(GalleryFormatError, match="lacks the column"):
        import_parquet(tmp_path / "bad", tmp_path / "t.db", progress=False)
    facevec.add(tmp_path / "facenet.db", ["a"], [np.ones(128)], model_name="Facenet")
    with pytest.raises(ModelMismatchError, match="holds Facenet vectors"):
        import_parquet(tmp_path / "out", tmp_path / "facenet.db", progress=False)
    assert facevec.info(tmp_path / "facenet.db")["faces"] == 1  # nothing lost


def test_cli_export_and_import(gallery_db, tmp_path):
    runner = CliRunner()
    out = tmp_path / "pq"
    export = ["export", "--parquet", str(out), "--db", str(gallery_db), "--quiet"]
    result = runner.invoke(cli, export)
    faces = facevec.info(gallery_db)["faces"]
    people = len(facevec.people.list_people(gallery_db))
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"exported {faces} faces to 1 file in {out} and {people} people"
    target = tmp_path / "t.db"
    result = runner.invoke(cli, ["import", "--parquet", str(out), "--db", str(target), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"imported {faces} faces and {people} people"
    result = runner.invoke(cli, export)
    assert result.exit_code == 1
    assert result.output.count("\n") == 1 and "already holds 1 Parquet file;" in result.output
    assert "choose an empty folder or add --overwrite" in result.output
    again = runner.invoke(cli, [*export, "--overwrite"])
    assert again.exit_code == 0 and "to 1 file in" in again.output
