"""Edge values mean the same on every strategy, database and load path.

- threshold: NaN and negative numbers are refused; +infinity means no limit;
- k: a whole number >= 1; any size is accepted and means "at most that many";
- vectors with huge elements keep their exact distances.
"""

from __future__ import annotations

import math
import re
import warnings

import numpy as np
import pytest
from backends import BACKENDS, STRATEGIES, fresh_database
from click.testing import CliRunner

import facevec
from facevec.cli import cli
from facevec.errors import InvalidParameterError

N, DIM = 40, 8


@pytest.fixture(scope="module", params=BACKENDS)
def small_gallery(request, tmp_path_factory):
    """(backend, db, vectors): 40 random 8-d vectors on each database."""
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((N, DIM)).astype(np.float32)
    with fresh_database(request.param, tmp_path_factory.mktemp("edge")) as db:
        facevec.add(db, [f"v{i}.jpg" for i in range(N)], vectors)
        yield request.param, db, vectors


def fallback_connection(path):
    from facevec.bindings import extension

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", facevec.FallbackWarning)
        return extension.connect(path, native=False)


def runs(backend, db):
    """(label, db argument, strategy) for every strategy and load path of a backend."""
    for strategy in STRATEGIES[backend]:
        yield strategy, db, strategy
    if backend == "sqlite":
        for strategy in ("extension", "relational", "client"):
            yield f"fallback {strategy}", fallback_connection(db), strategy


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        (float("nan"), "threshold must be a number, found NaN"),
        (-1.0, "threshold must be >= 0, found -1.0"),
        (-1e-30, "threshold must be >= 0"),
    ],
)
def test_a_nan_or_negative_threshold_is_refused_everywhere(small_gallery, threshold, message):
    backend, db, vectors = small_gallery
    for label, target, strategy in runs(backend, db):
        with pytest.raises(InvalidParameterError, match=re.escape(message)):
            facevec.find(vectors[0], target, strategy=strategy, threshold=threshold)
        assert label


def test_an_infinite_threshold_is_no_limit_everywhere(small_gallery):
    backend, db, vectors = small_gallery
    expected = None
    for label, target, strategy in runs(backend, db):
        (frame,) = facevec.find(vectors[3], target, strategy=strategy, threshold=math.inf)
        assert len(frame) == N, label
        if expected is None:
            expected = frame
        assert list(frame.face_id) == list(expected.face_id), label
        np.testing.assert_allclose(frame.distance, expected.distance, atol=1e-5, err_msg=label)


def test_a_zero_threshold_keeps_only_the_exact_match_everywhere(small_gallery):
    backend, db, vectors = small_gallery
    for label, target, strategy in runs(backend, db):
        (frame,) = facevec.find(vectors[5], target, strategy=strategy, threshold=0.0)
        assert list(frame.img_name) == ["v5.jpg"], label


@pytest.mark.parametrize("k", [N, N + 1, 2**31, 2**63 - 1, 2**64, 10**20])
def test_any_large_k_means_every_row(small_gallery, k):
    backend, db, vectors = small_gallery
    for label, target, strategy in runs(backend, db):
        (frame,) = facevec.find(vectors[1], target, strategy=strategy, k=k, threshold=math.inf)
        assert len(frame) == N, label


@pytest.mark.parametrize(("k", "message"), [(0, "at least 1"), (-3, "at least 1"), (2.5, "whole")])
def test_a_k_below_one_or_fractional_is_refused(small_gallery, k, message):
    backend, db, vectors = small_gallery
    for _, target, strategy in runs(backend, db):
        with pytest.raises(InvalidParameterError, match=message):
            facevec.find(vectors[1], target, strategy=strategy, k=k)


def test_the_cli_takes_edge_values_without_a_traceback(gallery_db, photos):
    runner = CliRunner()
    query = photos("img2.jpg")
    for strategy in STRATEGIES["sqlite"]:
        base = ["find", query, "--db", str(gallery_db), "--strategy", strategy]
        # Refused as the option is read, with the library's words.
        result = runner.invoke(cli, [*base, "--threshold", "nan"])
        assert result.exit_code == 2 and "threshold must be a number, found NaN" in result.output
        result = runner.invoke(cli, [*base, "--threshold", "-1"])
        assert result.exit_code == 2 and "threshold must be >= 0" in result.output
        result = runner.invoke(cli, [*base, "--k", "99999999999999999999", "--format", "json"])
        assert result.exit_code == 0 and "Traceback" not in result.output, result.output
