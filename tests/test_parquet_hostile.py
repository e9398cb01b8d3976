"""Parquet files made to hurt: an import is one transaction (a failure leaves the
gallery as it was), reads within bounds whatever a footer claims, finds flipped
bytes (page CRCs, crops that must decode), counts honestly, and says in one line
what is wrong with a file's metadata or bytes."""

from __future__ import annotations

import io
import re
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner
from PIL import Image

import facevec
from facevec.cli import cli
from facevec.errors import GalleryFormatError
from facevec.storage.database import open_database
from facevec.transfer import PARQUET_METADATA_KEY, export_parquet, import_parquet

DIM = 16


def forge_row_count(path, rows: int) -> None:
    """Rewrite a file's footer so that it claims `rows` rows (file and row group)."""
    from fastparquet import cencoding

    data = path.read_bytes()
    (length,) = struct.unpack("<i", data[-8:-4])
    footer = cencoding.from_buffer(data[-8 - length : -8], "FileMetaData")
    footer.num_rows = rows
    for group in footer.row_groups:
        group.num_rows = rows
    written = footer.to_bytes()
    path.write_bytes(data[: -8 - length] + written + struct.pack("<i", len(written)) + b"PAR1")


def crop(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 48, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def gallery_with_crops(db, n: int) -> np.ndarray:
    vectors = np.random.default_rng(5).normal(size=(n, DIM)).astype(np.float32)
    facevec.add(db, [f"p{i}" for i in range(n)], vectors, identities=["A"] * n)
    with open_database(db) as database, database.transaction():
        for i in range(n):
            database.execute(
                "UPDATE face_meta SET face_image = {p} WHERE img_name = {p}", (crop(i), f"p{i}")
            )
    return vectors


def state(db) -> dict[str, list[tuple]]:
    """Every row a failed import must leave as it was."""
    tables = {
        "face_meta": "SELECT * FROM face_meta ORDER BY id",
        "face_embeddings": "SELECT * FROM face_embeddings ORDER BY face_id, dimension",
        "person": "SELECT * FROM person ORDER BY id",
        "person_face": "SELECT * FROM person_face ORDER BY face_id",
        "facevec_collection": "SELECT * FROM facevec_collection",
    }
    with open_database(db) as database:
        return {name: [tuple(r) for r in database.query(sql)] for name, sql in tables.items()}


def ragged_parquet(path, n: int, from_row: int) -> None:
    """n rows of another tool's Parquet whose vectors change size at from_row."""
    rng = np.random.default_rng(6)
    sizes = [DIM if i < from_row else DIM // 2 for i in range(n)]
    offsets = pa.array(np.concatenate([[0], np.cumsum(sizes)]).astype(np.int32))
    values = pa.array(rng.normal(size=sum(sizes)).astype(np.float32))
    table = pa.table(
        {
            "img_name": [f"q{i}" for i in range(n)],
            "face_index": pa.array([0] * n, pa.int32()),
            "embedding": pa.ListArray.from_arrays(offsets, values),
            "model_name": ["Dlib"] * n,
        }
    )
    pq.write_table(table, path)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_a_failed_import_leaves_the_gallery_exactly_as_it_was(backend, tmp_path):
    ragged_parquet(tmp_path / "ragged.parquet", 700, from_row=603)
    with fresh_database(backend, tmp_path) as db:
        facevec.add(db, ["a", "b"], np.ones((2, DIM)) + np.eye(2, DIM), identities=["A", "A"])
        before = state(db)
        with pytest.raises(GalleryFormatError, match=re.escape("ragged.parquet rows 500 to 699")):
            import_parquet(tmp_path / "ragged.parquet", db, progress=False)
        assert state(db) == before  # not the 500 rows of the first batch, nor anything


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
@pytest.mark.parametrize("rows", [2**31, 2**33])
def test_a_footer_claiming_more_rows_than_the_file_holds_is_refused_before_reading(rows, tmp_path):
    """A 2 MB file whose footer claims 2^31 rows made the reader allocate gigabytes
    (and the import report success); the footer is held to the file first."""
    pytest.importorskip("fastparquet", reason="fastparquet writes the forged footer")
    source = tmp_path / "g.db"
    facevec.add(
        source, [f"p{i}" for i in range(2000)], np.random.default_rng(7).normal(size=(2000, 128))
    )
    export_parquet(source, tmp_path / "pq", progress=False)
    forge_row_count(tmp_path / "pq" / "part-00000.parquet", rows)
    code = textwrap.dedent(
        """
        import sys
        from facevec.errors import GalleryFormatError
        from facevec.transfer import import_parquet
        try:
            import_parquet(sys.argv[1], sys.argv[2], progress=False)
        except GalleryFormatError as err:
            print(err)
        # This process's peak memory (ru_maxrss would count the parent's, kept across exec).
        status = open("/proc/self/status").read().split("VmHWM:")[1]
        print(int(status.split()[0]) // 1024)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "pq"), str(tmp_path / "t.db")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    message, peak_mib = out.stdout.strip().splitlines()
    assert f"row group 0 declares {rows} rows, but column id holds 2000 values" in message
    assert int(peak_mib) < 1024  # the forged file made the reader take 9 GiB
    assert not (tmp_path / "t.db").exists() or facevec.info(tmp_path / "t.db")["faces"] == 0


def flip_in_column(path, column: str) -> None:
    """Flip bytes in the middle of a column chunk's pages."""
    parquet = pq.ParquetFile(path)
    chunk = parquet.metadata.row_group(0).column(parquet.schema_arrow.names.index(column))
    start = min(chunk.dictionary_page_offset or chunk.data_page_offset, chunk.data_page_offset)
    data = bytearray(path.read_bytes())
    middle = start + chunk.total_compressed_size // 2
    for at in range(middle, middle + 4):
        data[at] ^= 0x5A
    path.write_bytes(bytes(data))


def test_a_flipped_byte_in_an_exported_page_fails_its_crc(tmp_path):
    gallery_with_crops(tmp_path / "g.db", 30)
    export_parquet(tmp_path / "g.db", tmp_path / "pq", progress=False)
    flip_in_column(tmp_path / "pq" / "part-00000.parquet", "face_image")
    target = tmp_path / "t.db"
    facevec.add(target, ["kept"], np.ones((1, DIM)))
    message = "part-00000.parquet: row group 0 cannot be read: could not verify page integrity"
    with pytest.raises(GalleryFormatError, match=re.escape(message) + ".*CRC"):
        import_parquet(tmp_path / "pq", target, progress=False)
    assert facevec.info(target)["faces"] == 1


def test_a_crop_that_does_not_decode_is_named_where_the_file_has_no_crc(tmp_path):
    gallery_with_crops(tmp_path / "g.db", 30)
    export_parquet(tmp_path / "g.db", tmp_path / "pq", progress=False)
    table = pq.read_table(tmp_path / "pq")
    images = table.column("face_image").to_pylist()
    broken = bytearray(images[17])
    broken[len(broken) // 2] ^= 0xFF  # inside the pixels (IDAT): the PNG's own CRC breaks
    images[17] = bytes(broken)
    table = table.set_column(
        table.schema.get_field_index("face_image"), "face_image", pa.array(images, pa.binary())
    )
    (tmp_path / "other").mkdir()
    pq.write_table(table, tmp_path / "other" / "x.parquet", compression="none")
    name = table.column("img_name")[17].as_py()
    with pytest.raises(
        GalleryFormatError,
        match=re.escape(f"row 17 of x.parquet ({name!r}, face 0): its face_image"),
    ):
        import_parquet(tmp_path / "other", tmp_path / "t.db", progress=False)
    assert facevec.info(tmp_path / "t.db")["faces"] == 0


def test_rows_repeating_a_face_are_refused_and_a_rerun_counts_replacements(tmp_path):
    vectors = np.random.default_rng(8).normal(size=(54, DIM)).astype(np.float32)
    facevec.add(tmp_path / "g.db", [f"p{i}" for i in range(54)], vectors)
    export_parquet(tmp_path / "g.db", tmp_path / "once", progress=False)
    table = pq.read_table(tmp_path / "once")
    (tmp_path / "twice").mkdir()
    pq.write_table(pa.concat_tables([table, table]), tmp_path / "twice" / "x.parquet")
    target = tmp_path / "t.db"
    with pytest.raises(
        GalleryFormatError, match=r"row 54 of x.parquet \('p0', face 0\): this face"
    ):
        import_parquet(tmp_path / "twice", target, progress=False)
    assert facevec.info(target)["faces"] == 0  # it said 108 imported and stored 54
    once = import_parquet(tmp_path / "once", target, progress=False)
    assert once == {"faces": 54, "replaced": 0, "people": 0}
    rerun = import_parquet(tmp_path / "once", target, progress=False)
    assert rerun == {"faces": 54, "replaced": 54, "people": 0}
    assert facevec.info(target)["faces"] == 54


BAD_METADATA = [
    (b"{not json", "its facevec metadata is not JSON"),
    (b"[1, 2]", "its facevec metadata must be a JSON object, found list"),
    (b'{"model_name": "Dlib", "dimensions": "abc"}', "dimensions in its metadata must be a whole"),
    (b'{"model_name": "Dlib", "dimensions": true}', "dimensions in its metadata must be a whole"),
    (b'{"model_name": 7, "dimensions": 16}', "model_name in its metadata must be text, not 7"),
]


def with_metadata(folder, raw: bytes):
    folder.mkdir()
    vectors = np.random.default_rng(9).normal(size=(3, DIM)).astype(np.float32)
    offsets = pa.array(np.arange(0, 4 * DIM, DIM, dtype=np.int32))
    table = pa.table(
        {
            "id": pa.array([1, 2, 3], pa.int64()),
            "img_name": ["a", "b", "c"],
            "face_index": pa.array([0, 0, 0], pa.int32()),
            "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors.ravel())),
        }
    )
    pq.write_table(table.replace_schema_metadata({PARQUET_METADATA_KEY: raw}), folder / "x.parquet")
    return vectors


@pytest.mark.parametrize("raw, message", BAD_METADATA, ids=["json", "list", "abc", "bool", "model"])
def test_bad_metadata_is_one_line_naming_the_file(raw, message, tmp_path):
    with_metadata(tmp_path / "pq", raw)
    with pytest.raises(GalleryFormatError, match=re.escape(message)):
        import_parquet(tmp_path / "pq", tmp_path / "t.db", progress=False)
    args = ["import", "--parquet", str(tmp_path / "pq"), "--db", str(tmp_path / "t.db"), "--quiet"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert (
        result.output.count("\n") == 1 and "x.parquet" in result.output and message in result.output
    )


def test_a_truncated_second_file_is_one_line_naming_it(tmp_path):
    vectors = np.random.default_rng(10).normal(size=(40, DIM))
    facevec.add(tmp_path / "g.db", [f"p{i}" for i in range(40)], vectors)
    export_parquet(tmp_path / "g.db", tmp_path / "pq", rows_per_file=20, progress=False)
    second = tmp_path / "pq" / "part-00001.parquet"
    second.write_bytes(second.read_bytes()[: second.stat().st_size // 2])
    target = tmp_path / "t.db"
    message = f"cannot read {second} as Parquet"
    with pytest.raises(GalleryFormatError, match=re.escape(message)):
        import_parquet(tmp_path / "pq", target, progress=False)
    result = CliRunner().invoke(
        cli, ["import", "--parquet", str(tmp_path / "pq"), "--db", str(target)]
    )
    assert result.exit_code == 1 and result.output.count("\n") == 1 and message in result.output


def test_spark_find_with_bad_metadata_is_one_line(spark, tmp_path):
    from facevec.spark.gallery import describe_source

    vectors = with_metadata(tmp_path / "pq", BAD_METADATA[2][0])
    with pytest.raises(GalleryFormatError, match="dimensions in its metadata must be a whole"):
        describe_source(0, tmp_path / "pq")
    queries = tmp_path / "q.parquet"
    offsets = pa.array(np.arange(0, 2 * DIM, DIM, dtype=np.int32))
    pq.write_table(
        pa.table(
            {
                "query_id": pa.array([0], pa.int64()),
                "embedding": pa.ListArray.from_arrays(offsets, pa.array(vectors[0])),
            }
        ),
        queries,
    )
    args = ["spark", "find", str(queries), "--gallery", str(tmp_path / "pq")]
    result = CliRunner().invoke(cli, args + ["--out", str(tmp_path / "out"), "--quiet"])
    assert result.exit_code == 1 and "Traceback" not in result.output, result.output
    assert result.output.count("\n") == 1 and "dimensions in its metadata" in result.output
