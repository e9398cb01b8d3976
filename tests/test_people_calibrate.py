"""calibrate: this gallery's genuine / impostor distances, its EER and false-match-rate
thresholds, against a numpy reference, on SQLite, PostgreSQL and MariaDB; and
--threshold calibrated in identify and find."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from backends import BACKENDS, fresh_database
from click.testing import CliRunner
from people_data import clustered_vectors

import facevec
from facevec.cli import cli
from facevec.errors import PeopleConflictError


def reference(vectors: np.ndarray, labels: np.ndarray) -> dict:
    """The figures by brute force over every pair, in float64."""
    genuine, impostor = [], []
    for i, j in itertools.combinations(range(len(vectors)), 2):
        d = float(np.linalg.norm(vectors[i].astype(np.float64) - vectors[j]))
        (genuine if labels[i] == labels[j] else impostor).append(d)
    genuine, impostor = np.array(genuine), np.array(impostor)
    # EER: scan thresholds at every pair distance.
    best = min(
        (abs(np.mean(impostor <= t) - np.mean(genuine > t)), t)
        for t in np.unique(np.concatenate([genuine, impostor]))
    )
    out = {"genuine": genuine, "impostor": impostor, "eer_threshold": best[1]}
    for rate in (1e-2, 1e-3):
        allowed = int(np.floor(rate * len(impostor)))
        out[rate] = np.sort(impostor)[allowed]  # the threshold sits just below this one
    return out


@pytest.fixture(scope="module")
def labelled():
    vectors, labels = clustered_vectors(400, seed=21)
    return vectors, labels


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_calibration_matches_a_brute_force_reference(backend, labelled, tmp_path):
    vectors, labels = labelled
    with fresh_database(backend, tmp_path) as db:
        names = [f"{label}/{i}.jpg" for i, label in enumerate(labels)]
        facevec.add(db, names, vectors, identities=[f"p{label}" for label in labels])
        figures = facevec.calibrate(db)
    ref = reference(vectors, labels)
    assert figures["faces"] == len(vectors)
    assert figures["people"] == len(set(labels.tolist()))
    assert figures["genuine_pairs"] == len(ref["genuine"])
    assert figures["impostor_pairs"] == len(ref["impostor"])
    assert figures["eer_threshold"] == pytest.approx(ref["eer_threshold"], abs=1e-5)
    for key, rate in (("fmr_1e2", 1e-2), ("fmr_1e3", 1e-3)):
        threshold = figures[f"{key}_threshold"]
        assert threshold < ref[rate] and threshold == pytest.approx(ref[rate], abs=1e-5)
        assert np.mean(ref["impostor"] <= threshold) <= rate
        assert figures[f"{key}_fnmr"] == pytest.approx(
            np.mean(ref["genuine"] > threshold), abs=1e-3
        )
    # Dlib-like vectors: genuine pairs ~0.42 apart, impostors ~0.8: a clean split.
    assert 0.5 < figures["eer_threshold"] < 0.7 and figures["eer"] < 0.02
    assert figures["threshold"] == figures["fmr_1e3_threshold"]
    assert figures["threshold_rule"] == "false-match rate 0.001"


def test_too_few_impostor_pairs_leave_the_rates_out(gallery_db, gallery_copy_on):
    db = gallery_copy_on(gallery_db, "sqlite")
    figures = facevec.calibrate(db)
    # Folder faces: id01 has 8 photos, id02..id05 one each.
    assert (figures["faces"], figures["people"]) == (12, 5)
    assert figures["genuine_pairs"] == 28 and figures["impostor_pairs"] == 8 * 4 + 6
    assert figures["fmr_1e2_threshold"] is None and figures["fmr_1e3_threshold"] is None
    assert figures["threshold"] == figures["eer_threshold"]
    assert figures["threshold_rule"].startswith("equal error rate")


def test_calibrated_threshold_drives_identify_and_find(labelled, tmp_path):
    vectors, labels = labelled
    db = str(tmp_path / "calibrated.db")
    facevec.add(
        db,
        [f"{i}.jpg" for i in range(len(labels))],
        vectors,
        identities=[f"p{label}" for label in labels],
    )
    figures = facevec.calibrate(db)
    query = vectors[0] + 0.001
    frame = facevec.identify(query, db, threshold="calibrated")
    assert frame.iloc[0].threshold == pytest.approx(figures["threshold"])
    assert frame.iloc[0].person == f"p{labels[0]}"
    (found,) = facevec.find(query, db, threshold="calibrated")
    assert len(found) > 0
    assert list(found.threshold) == pytest.approx([figures["threshold"]] * len(found))
    assert (found.distance <= figures["threshold"]).all()


def test_calibration_needs_labelled_people(tmp_path):
    db = str(tmp_path / "bare.db")
    facevec.add(db, ["a.jpg", "b.jpg"], np.random.default_rng(0).normal(size=(2, 128)))
    with pytest.raises(PeopleConflictError, match="no faces from person folders"):
        facevec.calibrate(db)
    facevec.add(db, ["c.jpg"], np.random.default_rng(1).normal(size=(1, 128)), identities=["x"])
    with pytest.raises(PeopleConflictError, match="0 genuine and 0 impostor pairs"):
        facevec.calibrate(db)


def test_cli_calibrate_reports_counts_and_thresholds(labelled, tmp_path):
    vectors, labels = labelled
    db = str(tmp_path / "cli.db")
    facevec.add(
        db,
        [f"{i}.jpg" for i in range(len(labels))],
        vectors,
        identities=[f"p{label}" for label in labels],
    )
    result = CliRunner().invoke(cli, ["calibrate", "--db", db])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith(f"{len(labels)} faces of {len(set(labels.tolist()))} people: ")
    assert lines[1].startswith("equal error rate ")
    assert lines[2].startswith("false-match rate 1e-2: threshold 0.")
    assert lines[3].startswith("false-match rate 1e-3: threshold 0.")
    assert lines[4].startswith("--threshold calibrated = 0.")
    found = CliRunner().invoke(cli, ["find", "--help"])
    assert "calibrated" in found.output
