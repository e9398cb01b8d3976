"""identify over many photos (a folder, a list) in one batch, each face with its
box; an unknown face names nobody; the same answers from the CLI and the web.

The session gallery holds person folders id01..id05 (pipeline_photos); the
queries are held-out photos of id04 and id05, a photo of someone it lacks
(img57.jpg) and couple.jpg (two faces).
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner
from pipeline_photos import FACES

import facevec
from facevec.cli import cli

QUERIES = {"img23.jpg": "id04", "img24.jpg": "id05", "img57.jpg": None, "couple.jpg": "id01"}
identify_module = importlib.import_module("facevec.people.identify")
BOX = ["source_x", "source_y", "source_w", "source_h"]


@pytest.fixture(scope="module")
def query_folder(tmp_path_factory, photos) -> Path:
    """A folder of the query photos (symlinks), and a text file that is no photo."""
    folder = tmp_path_factory.mktemp("queries")
    for name in QUERIES:
        (folder / name).symlink_to(photos(name))
    (folder / "notes.txt").write_text("not a photo")
    return folder


@pytest.fixture(scope="module")
def one_by_one(gallery_db, query_folder) -> pd.DataFrame:
    """identify run on each photo alone, in the folder's (sorted) order."""
    frames = [facevec.identify(str(query_folder / n), gallery_db) for n in sorted(QUERIES)]
    return pd.concat(frames, ignore_index=True)


def test_a_folder_is_identified_in_one_batch_with_the_answers_of_one_by_one(
    gallery_db, query_folder, one_by_one, monkeypatch
):
    searches = []
    real = identify_module.nearest_batch

    def counting(database, queries, **options):
        searches.append(len(queries))
        return real(database, queries, **options)

    monkeypatch.setattr(identify_module, "nearest_batch", counting)
    frame = facevec.identify(query_folder, gallery_db)
    # Every face of the four photos (couple.jpg has two), searched together.
    assert searches == [5]
    assert [Path(p).name for p in frame.img] == sorted(
        n for n in QUERIES for _ in range(2 if n == "couple.jpg" else 1)
    )
    pd.testing.assert_frame_equal(frame, one_by_one, check_dtype=False)
    # A list of photos is the same batch.
    listed = facevec.identify([str(query_folder / n) for n in sorted(QUERIES)], gallery_db)
    pd.testing.assert_frame_equal(listed, frame)


def test_each_face_comes_with_its_box_in_its_photo(gallery_db, query_folder):
    frame = facevec.identify(query_folder, gallery_db)
    assert (frame.source_w > 0).all() and (frame.source_h > 0).all()
    couple = frame[frame.img.str.endswith("couple.jpg")]
    boxes = sorted(tuple(int(v) for v in row) for row in couple[BOX].itertuples(index=False))
    # The boxes find reports for the faces of that photo: two faces, two places.
    found = facevec.find(couple.img.iloc[0], gallery_db, similarity_search=True, k=1)
    assert boxes == sorted(tuple(f.attrs["source"][c] for c in "xywh") for f in found)
    assert len(set(boxes)) == 2


def test_an_unknown_face_names_nobody(gallery_db, query_folder):
    frame = facevec.identify(query_folder, gallery_db)
    frame.index = [Path(p).name for p in frame.img]
    stranger = frame.loc["img57.jpg"]
    assert stranger.decision == "unknown" and stranger.person == "unknown"
    assert pd.isna(stranger.person_id) and pd.isna(stranger.second_person_id)
    assert stranger.second_person is None and pd.isna(stranger.margin)
    # Its distance still says how far the nearest person is.
    assert stranger.distance > stranger.threshold
    people = {p.name: p.id for p in facevec.people.list_people(gallery_db)}
    for name in ("img23.jpg", "img24.jpg"):
        row = frame.loc[name]
        assert row.decision == "matched" and row.person == QUERIES[name]
        assert row.person_id == people[QUERIES[name]]


def test_cli_identifies_folders_and_photos_with_boxes(gallery_db, query_folder):
    db = str(gallery_db)
    expected = facevec.identify(query_folder, gallery_db)
    table = CliRunner().invoke(cli, ["identify", str(query_folder), "--db", db])
    assert table.exit_code == 0, table.output
    header, *rows = table.output.splitlines()
    assert header.split() == [
        "img", "face_index", "person", "decision", "distance", "second_person", "margin",
        "x", "y", "w", "h",
    ]  # fmt: skip
    assert len(rows) == len(expected)
    for line, (_, row) in zip(rows, expected.iterrows(), strict=True):
        cells = line.split()
        assert cells[0] == row.img and cells[2:4] == [row.person, row.decision]
        assert [int(c) for c in cells[-4:]] == [int(row[c]) for c in BOX]
    # Several photos (and a folder) in one command, as JSON: null person for nobody.
    two = [str(query_folder / "img57.jpg"), str(query_folder / "img24.jpg")]
    as_json = CliRunner().invoke(cli, ["identify", *two, "--db", db, "--format", "json"])
    assert as_json.exit_code == 0, as_json.output
    records = json.loads(as_json.output)
    assert [r["img"] for r in records] == two
    assert "\\/" not in as_json.output and f'"{two[0]}"' in as_json.output  # "/" as it is
    assert records[0]["person_id"] is None and records[0]["decision"] == "unknown"
    assert records[1]["person"] == "id05" and isinstance(records[1]["person_id"], int)
    assert records[1]["source_w"] > 0


def test_cli_says_when_a_folder_has_no_photos(gallery_db, tmp_path):
    result = CliRunner().invoke(cli, ["identify", str(tmp_path), "--db", str(gallery_db)])
    assert result.exit_code == 2 and "no photos in" in result.output


def test_the_web_answers_in_the_same_shape(gallery_db, photos):
    pytest.importorskip("fastapi", reason="the web extra is not installed")
    from web_support import client_for

    with client_for(str(gallery_db), photos=[FACES]) as http:
        for name in ("img57.jpg", "img24.jpg"):
            upload = (name, Path(photos(name)).read_bytes(), "image/jpeg")
            response = http.post("/api/identify", files={"photo": upload})
            assert response.status_code == 200, response.text
            (face,) = response.json()["faces"]
            (expected,) = json.loads(
                facevec.identify(photos(name), gallery_db)
                .drop(columns="img")
                .to_json(orient="records")
            )
            assert {k: v for k, v in face.items() if k != "img"} == pytest.approx(expected)
            if name == "img57.jpg":
                assert face["person_id"] is None and face["decision"] == "unknown"
            else:
                assert face["person_id"] is not None and face["person"] == "id05"
