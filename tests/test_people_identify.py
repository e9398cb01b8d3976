"""identify: who each face of a photo is, on SQLite, PostgreSQL and MariaDB.

The session gallery holds person folders id01..id05 (pipeline_photos); the
queries are held-out photos of those people, and photos of people not in it.
"""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import NotCalibratedError

# Held-out photos of labelled people in the gallery, and photos of people it lacks
# (img57, img39: their nearest gallery face is 0.73-0.74 away).
HELD_OUT = {"img23.jpg": "id04", "img24.jpg": "id05", "img9.jpg": "id03"}
STRANGERS = ("img57.jpg", "img39.jpg")


@pytest.mark.parametrize("name, person", sorted(HELD_OUT.items()))
def test_held_out_photos_of_gallery_people_are_matched(gallery_on, photos, name, person):
    _, db = gallery_on
    frame = facevec.identify(photos(name), db)
    assert len(frame) == 1
    row = frame.iloc[0]
    assert row.decision == "matched"
    assert row.person == person
    assert row.distance <= row.threshold == pytest.approx(0.6)
    # The runner-up is another person, at least the margin behind.
    assert row.second_person != person and row.margin >= 0.06


@pytest.mark.parametrize("name", STRANGERS)
def test_a_person_not_in_the_gallery_is_unknown(gallery_on, photos, name):
    _, db = gallery_on
    row = facevec.identify(photos(name), db).iloc[0]
    assert row.decision == "unknown"
    assert row.person == "unknown"
    assert row.distance > row.threshold


def test_identify_answers_the_same_on_every_database(gallery_on, photos):
    _, db = gallery_on
    frame = facevec.identify(photos("img23.jpg"), db)
    reference = facevec.identify(photos("img23.jpg"), db, strategy="client")
    pd.testing.assert_frame_equal(frame, reference, atol=1e-5)


def test_every_face_of_a_group_photo_gets_a_row(gallery_on, photos):
    _, db = gallery_on
    frame = facevec.identify(photos("couple.jpg"), db)
    assert sorted(frame.face_index) == [0, 1]
    # The second face of couple.jpg is id01's (0.33 from img4.jpg, 0.37 from img10.jpg).
    assert frame.set_index("face_index").loc[1, "person"] == "id01"


def _gallery(tmp_path, people: dict[str, np.ndarray]) -> str:
    """A gallery of vectors, one folder person per key."""
    db = str(tmp_path / "vectors.db")
    names, vectors, identities = [], [], []
    for person, rows in people.items():
        for i, row in enumerate(rows):
            names.append(f"{person}/{i}.jpg")
            vectors.append(row)
            identities.append(person)
    facevec.add(db, names, np.asarray(vectors), identities=identities)
    return db


def _at(query: np.ndarray, distances: list[float], first_axis: int) -> np.ndarray:
    """Vectors at exactly these euclidean distances from `query` (orthogonal offsets)."""
    rows = np.repeat(query[None, :], len(distances), axis=0).astype(np.float64)
    for i, d in enumerate(distances):
        rows[i, first_axis + i] += d
    return rows.astype(np.float32)


QUERY = np.zeros(128, dtype=np.float32)
QUERY[0] = 1.0


def test_a_person_is_scored_on_their_nearest_faces_as_a_set(tmp_path):
    # Lucky has one very near face and two far ones; Steady three near ones.
    db = _gallery(
        tmp_path, {"Lucky": _at(QUERY, [0.1, 0.9, 0.9], 1), "Steady": _at(QUERY, [0.3] * 3, 10)}
    )
    three = facevec.identify(QUERY, db, k=3).iloc[0]
    assert (three.person, three.decision) == ("Steady", "matched")
    assert three.distance == pytest.approx(0.3, abs=1e-5)
    assert three.second_distance == pytest.approx((0.1 + 0.9 + 0.9) / 3, abs=1e-5)
    one = facevec.identify(QUERY, db, k=1).iloc[0]
    assert (one.person, one.distance) == ("Lucky", pytest.approx(0.1, abs=1e-5))


def test_near_two_people_is_ambiguous(tmp_path):
    db = _gallery(tmp_path, {"Ann": _at(QUERY, [0.40] * 3, 1), "Bea": _at(QUERY, [0.42] * 3, 10)})
    row = facevec.identify(QUERY, db).iloc[0]
    assert row.decision == "ambiguous"
    assert {row.person, row.second_person} == {"Ann", "Bea"}
    assert row.margin == pytest.approx(0.02, abs=1e-5)
    # A narrower margin than theirs makes the nearer one a match.
    assert facevec.identify(QUERY, db, margin=0.01).iloc[0].decision == "matched"
    # Outside the threshold, nobody.
    assert facevec.identify(QUERY, db, threshold=0.3).iloc[0].decision == "unknown"


def test_suggested_faces_count_unless_confirmed_only(tmp_path):
    db = _gallery(tmp_path, {"Ann": _at(QUERY, [0.9] * 2, 1)})
    # Three more faces near the query, with no folder: clustering suggests a person.
    facevec.add(db, ["x0.jpg", "x1.jpg", "x2.jpg"], _at(QUERY, [0.2, 0.21, 0.22], 20), people=False)
    facevec.people.cluster(db, progress=False)
    row = facevec.identify(QUERY, db).iloc[0]
    assert row.decision == "matched" and row.person.startswith("person ")
    confirmed = facevec.identify(QUERY, db, confirmed_only=True).iloc[0]
    assert confirmed.decision == "unknown"


def test_calibrated_threshold_needs_a_calibration(tmp_path):
    db = _gallery(tmp_path, {"Ann": _at(QUERY, [0.4] * 2, 1)})
    with pytest.raises(NotCalibratedError, match=re.escape("facevec calibrate --db")):
        facevec.identify(QUERY, db, threshold="calibrated")


def test_cli_identify_prints_one_row_per_face(gallery_db, photos):
    db = str(gallery_db)
    result = CliRunner().invoke(cli, ["identify", photos("img24.jpg"), "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["face_index", "person", "decision"]
    assert lines[1].split()[:3] == ["0", "id05", "matched"]
    as_json = CliRunner().invoke(
        cli, ["identify", photos("img57.jpg"), "--db", db, "--format", "json"]
    )
    assert as_json.exit_code == 0
    assert '"decision":"unknown"' in as_json.output.replace(" ", "")
