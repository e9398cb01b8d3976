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
    assert figures["measured_threshold"] == figures["eer_threshold"]
    # 28 and 38 pairs are too few to move the threshold: deepface's stays, and says so.
    assert figures["threshold"] == figures["deepface_threshold"] == pytest.approx(0.6)
    assert figures["threshold_rule"] == "deepface's (too few pairs to move it)"
    (warning,) = figures["warnings"]
    assert warning.startswith("28 genuine and 38 impostor pairs are too few to move")
    assert figures["labelled"] == {"folder": 12, "confirmed": 0, "named": 0}
    frame = facevec.identify(np.asarray(figures_query(db)), db, threshold="calibrated")
    assert frame.threshold.iloc[0] == pytest.approx(0.6)


def figures_query(db):
    """A stored face's vector, as a query."""
    from facevec.storage import people as store
    from facevec.storage.database import open_database

    with open_database(db) as database:
        return store.labelled_vectors(database)[0][2]


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
    people = len(set(labels.tolist()))
    assert lines[0].startswith(f"{len(labels)} faces of {people} people ({len(labels)} folder): ")
    assert lines[1].startswith("equal error rate ")
    assert lines[4].startswith("false-match rate 1e-2: threshold 0.")
    assert lines[7].startswith("false-match rate 1e-3: threshold 0.")
    assert lines[10].startswith("--threshold calibrated = 0.")
    figures = facevec.calibrate(db)
    # Each rate with its interval and the pairs behind it.
    low, high = figures["threshold_fnmr_ci"]
    assert lines[12] == (
        f"  false non-match rate {figures['threshold_fnmr']:.4f} (95% CI {low:.4f} to "
        f"{high:.4f}, {figures['genuine_pairs']} genuine pairs)"
    )
    low, high = figures["fmr_1e3_fmr_ci"]
    assert lines[8] == (
        f"  false-match rate {figures['fmr_1e3_fmr']:.4f} (95% CI {low:.4f} to "
        f"{high:.4f}, {figures['impostor_pairs']} impostor pairs)"
    )
    assert len(lines) == 13  # no warning: enough pairs of both kinds
    found = CliRunner().invoke(cli, ["find", "--help"])
    assert "calibrated" in found.output


# How sure: intervals, small samples, named people -----------------------------------


def wilson_by_definition(errors: int, pairs: int, z: float = 1.959963984540054):
    """The Wilson interval as its definition: every rate p with |p^ - p| <= z·sqrt(p(1-p)/n),
    found by bisection on each side of p^ (no closed form)."""
    observed = errors / pairs

    def inside(p: float) -> bool:
        return abs(observed - p) <= z * np.sqrt(p * (1 - p) / pairs)

    def edge(outer: float) -> float:
        lo, hi = (outer, observed) if outer < observed else (observed, outer)
        if inside(outer):
            return outer
        for _ in range(80):
            mid = (lo + hi) / 2
            if inside(mid) == (outer < observed):
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    return edge(0.0), edge(1.0)


@pytest.mark.parametrize("errors, pairs", [(0, 28), (3, 38), (38, 38), (500, 1000), (1, 4500)])
def test_the_interval_of_a_rate_is_wilsons(errors, pairs):
    from facevec.people.calibration import wilson_interval

    assert wilson_interval(errors, pairs) == pytest.approx(
        wilson_by_definition(errors, pairs), abs=1e-9
    )


def test_each_rate_comes_with_its_interval(gallery_db, gallery_copy_on):
    from facevec.people.calibration import wilson_interval
    from facevec.storage import people as store
    from facevec.storage.database import open_database

    db = gallery_copy_on(gallery_db, "sqlite")
    figures = facevec.calibrate(db)
    with open_database(db) as database:
        rows = store.labelled_vectors(database)
    ref = reference(np.stack([r[2] for r in rows]), np.array([r[0] for r in rows]))
    for prefix in ("eer", "threshold"):
        threshold = figures[f"{prefix}_threshold" if prefix == "eer" else "threshold"]
        # (a threshold at a pair distance: float32 against the reference's float64)
        false_matches = int(np.sum(ref["impostor"] <= threshold + 1e-5))
        misses = int(np.sum(ref["genuine"] > threshold + 1e-5))
        assert figures[f"{prefix}_fmr"] == pytest.approx(false_matches / len(ref["impostor"]))
        assert figures[f"{prefix}_fnmr"] == pytest.approx(misses / len(ref["genuine"]))
        assert figures[f"{prefix}_fmr_ci"] == pytest.approx(
            wilson_interval(false_matches, len(ref["impostor"])), abs=1e-6
        )
        assert figures[f"{prefix}_fnmr_ci"] == pytest.approx(
            wilson_interval(misses, len(ref["genuine"])), abs=1e-6
        )
        for rate in ("fmr", "fnmr"):
            low, high = figures[f"{prefix}_{rate}_ci"]
            assert low <= figures[f"{prefix}_{rate}"] <= high and high - low > 0.05
    result = CliRunner().invoke(cli, ["calibrate", "--db", db])
    assert result.exit_code == 0, result.output
    assert result.output.count("95% CI") == 4  # EER and the calibrated threshold, two rates each
    assert "--threshold calibrated = 0.6000: deepface's (too few pairs to move it)" in result.output
    assert "warning: 28 genuine and 38 impostor pairs are too few to move the threshold" in (
        result.output
    )


def _spread(people: int, faces: int, apart: float, within: float, seed: int = 5):
    """Vectors of `people` people whose faces lie about `within` apart, the people
    about `apart` apart."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(people, 128)) * apart / np.sqrt(2 * 128)
    labels = np.repeat(np.arange(people), faces)
    noise = rng.normal(size=(people * faces, 128)) * within / np.sqrt(2 * 128)
    return (centres[labels] + noise).astype(np.float32), labels


def _calibrated(tmp_path, name, vectors, labels):
    db = str(tmp_path / f"{name}.db")
    names = [f"p{label}/{i}.jpg" for i, label in enumerate(labels)]
    facevec.add(db, names, vectors, identities=[f"p{label}" for label in labels])
    return db, facevec.calibrate(db)


def test_fewer_than_1000_impostor_pairs_never_loosen_the_threshold(tmp_path):
    # 3 people of 10 faces: 135 genuine, 300 impostor pairs; faces 0.75 apart (looser
    # than deepface's 0.6 would accept), people 1.6 apart.
    db, few = _calibrated(tmp_path, "few", *_spread(3, 10, apart=1.6, within=0.75))
    assert (few["genuine_pairs"], few["impostor_pairs"]) == (135, 300)
    assert few["measured_threshold"] == few["fmr_1e2_threshold"] > 0.6
    assert few["threshold"] == few["deepface_threshold"] == pytest.approx(0.6)
    (warning,) = few["warnings"]
    assert warning.startswith("only 300 impostor pairs (fewer than 1,000): the measured ")
    identified = facevec.identify(np.full(128, 0.01, np.float32), db, threshold="calibrated")
    assert identified.threshold.iloc[0] == pytest.approx(0.6)
    # The same people with 4,500 impostor pairs: the evidence may loosen it.
    _, many = _calibrated(tmp_path, "many", *_spread(10, 10, apart=1.6, within=0.75))
    assert many["impostor_pairs"] == 4500
    assert many["threshold"] == many["fmr_1e3_threshold"] > 0.6 and many["warnings"] == []
    # Fewer than 1,000 may still make it stricter: people 0.5 apart, faces 0.2.
    _, close = _calibrated(tmp_path, "close", *_spread(3, 10, apart=0.5, within=0.2))
    assert close["threshold"] == close["measured_threshold"] < 0.6 and close["warnings"] == []


def test_a_calibration_stored_before_these_rules_is_held_to_them(tmp_path):
    from facevec.storage import people as store
    from facevec.storage.database import open_database

    db, figures = _calibrated(tmp_path, "old", *_spread(3, 10, apart=1.6, within=0.75))
    with open_database(db) as database, database.transaction():
        store.save_calibration(database, {**figures, "threshold": 0.9, "threshold_rule": "old"})
    (found,) = facevec.find(
        np.full(128, 0.01, np.float32), db, threshold="calibrated", similarity_search=True, k=1
    )
    assert found.threshold.iloc[0] == pytest.approx(0.6)
    frame = facevec.identify(np.full(128, 0.01, np.float32), db, threshold="calibrated")
    assert frame.threshold.iloc[0] == pytest.approx(0.6)


def test_named_people_count_as_labelled_from_when_they_were_named(all_photos_db, tmp_path):
    import shutil
    import time

    db = str(tmp_path / "named.db")
    shutil.copy(all_photos_db, db)
    facevec.people.cluster(db, progress=False)
    with pytest.raises(PeopleConflictError, match="no faces from person folders"):
        facevec.calibrate(db)  # suggestions alone: nobody looked at them
    biggest = sorted(facevec.people.list_people(db), key=lambda p: -p.faces)
    first, second, third = biggest[:3]
    facevec.people.name(db, first.id, "Ann")
    facevec.people.name(db, second.id, "Ben")
    named = facevec.calibrate(db)
    assert named["labelled"] == {"folder": 0, "confirmed": 0, "named": first.faces + second.faces}
    assert named["faces"] == first.faces + second.faces and named["people"] == 2
    # A face suggested for Ann after she was named is not one a user looked at.
    time.sleep(1.1)  # timestamps are to the second
    ann = facevec.people.show(db, "Ann").faces[0]
    with facevec.connect(db) as conn:
        (blob,) = conn.execute(
            "SELECT embedding FROM face_meta WHERE id = ?", (ann.face_id,)
        ).fetchone()
    near = np.frombuffer(blob, dtype="<f4") + np.float32(0.01)
    facevec.add(db, ["later.jpg"], near[None, :])
    facevec.people.cluster(db, progress=False)
    assert len(facevec.people.show(db, "Ann").faces) == first.faces + 1
    assert facevec.calibrate(db)["faces"] == named["faces"]
    # Merging a person into Ann is looking at all her faces: they all count now.
    facevec.people.merge(db, [third.id], "Ann", force=True)
    merged = facevec.calibrate(db)
    assert merged["faces"] == named["faces"] + 1 + third.faces
