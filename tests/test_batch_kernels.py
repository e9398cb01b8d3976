"""facevec.top_k_batch: many queries in one pass over the matrix.

Row i of its answer must be facevec.top_k(queries[i], ...) exactly: the same
rows and bit-identical float32 distances, for every metric, shape and kind of
data (ties, duplicates, near ties), with both sets of distance kernels; and
both agree with numpy. The C check program (tests/c/check_batch.c) drives
every screen kernel this CPU runs, natively and, under qemu, on ARM64.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from facevec.bindings._kernels import lib
from test_arm64_kernels import _toolchain

import facevec
from facevec import DimensionMismatchError, VectorError
from facevec.errors import InvalidParameterError, UnknownMetricError

ROOT = Path(__file__).resolve().parent.parent
CHECK_PROGRAM = ROOT / "tests" / "c" / "check_batch.c"
METRICS = list(facevec.METRICS)


@pytest.fixture(params=["best", "scalar"])
def kernels(request):
    lib.fv_force_scalar(request.param == "scalar")
    try:
        yield request.param
    finally:
        lib.fv_force_scalar(0)


def raises(error_type, message):
    return pytest.raises(error_type, match=f"^{re.escape(message)}$")


def assert_equals_top_k(queries, matrix, k, metric, threshold=None):
    """top_k_batch against top_k query by query: ids, and distances bit for bit."""
    indices, dists = facevec.top_k_batch(queries, matrix, k, metric, threshold)
    width = min(k, len(matrix))
    assert indices.shape == dists.shape == (len(queries), width)
    assert indices.dtype == np.int64 and dists.dtype == np.float32
    pad = -np.inf if metric == "inner_product" else np.inf
    for i, query in enumerate(queries):
        one_indices, one_dists = facevec.top_k(query, matrix, k, metric)
        if threshold is not None:
            keep = one_dists >= threshold if metric == "inner_product" else one_dists <= threshold
            one_indices, one_dists = one_indices[keep], one_dists[keep]
        found = len(one_indices)
        assert indices[i, :found].tolist() == one_indices.tolist(), (metric, i)
        np.testing.assert_array_equal(dists[i, :found].view(np.uint32), one_dists.view(np.uint32))
        assert (indices[i, found:] == -1).all() and (dists[i, found:] == pad).all()
    return indices, dists


def random_data(nq: int, n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((nq, dim)).astype(np.float32),
        rng.standard_normal((n, dim)).astype(np.float32),
    )


SHAPES = [
    # (queries, rows, dim, k)
    (1, 50, 16, 5),  # one query
    (5, 3, 8, 10),  # fewer rows than k
    (40, 300, 1, 7),
    (40, 300, 2, 3),
    (13, 257, 3, 4),  # just past the small-batch path, a partial last panel
    (64, 1000, 17, 10),
    (30, 200, 128, 10),
    (20, 100, 1024, 5),
    (300, 40, 33, 40),  # k equal to the row count
    (600, 50, 512, 3),  # more queries than one tile holds
]


@pytest.mark.parametrize(("nq", "n", "dim", "k"), SHAPES)
@pytest.mark.parametrize("metric", METRICS)
def test_equals_top_k(kernels, metric, nq, n, dim, k):
    queries, matrix = random_data(nq, n, dim, seed=dim + n)
    assert_equals_top_k(queries, matrix, k, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_equals_top_k_with_ties(kernels, metric):
    """Small integers: distances tie everywhere, and ties go to the lower row."""
    rng = np.random.default_rng(1)
    matrix = rng.integers(0, 3, (400, 6)).astype(np.float32)
    queries = rng.integers(0, 3, (50, 6)).astype(np.float32)
    queries[queries.sum(axis=1) == 0, 0] = 1  # no zero-norm query
    matrix[matrix.sum(axis=1) == 0, 0] = 1
    assert_equals_top_k(queries, matrix, 12, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_ties_go_to_the_lower_row(metric):
    near, far = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    matrix = np.array([far, near, far, near, near, far], np.float32)
    queries = np.tile(np.array([2.0, 0.0], np.float32), (20, 1))
    indices, _ = facevec.top_k_batch(queries, matrix, 4, metric)
    assert indices.tolist() == [[1, 3, 4, 0]] * 20


@pytest.mark.parametrize("metric", METRICS)
def test_equals_top_k_with_duplicates_and_near_ties(kernels, metric):
    rng = np.random.default_rng(2)
    distinct = rng.standard_normal((7, 64)).astype(np.float32)
    matrix = distinct[rng.integers(0, 7, 500)]
    queries = matrix[rng.integers(0, 500, 60)].copy()
    queries[::2, 0] += np.float32(1e-6)  # a hair away from the duplicates
    assert_equals_top_k(queries, matrix, 20, metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("nq", [3, 30])  # small-batch and screened paths
def test_equals_top_k_at_the_extremes(kernels, metric, nq):
    """Rows and queries whose float32 sums overflow (1e19, 1e20) or come near
    underflow (1e-16, 1e-30), among ordinary ones: the scan takes those sums again
    in double, and each answer is still top_k's, cut at a threshold too."""
    queries, matrix = random_data(nq, 400, 24, seed=7)
    rng = np.random.default_rng(8)
    scales = np.array([1, 1, 1e19, 1e20, 1e-16, 1e-30], np.float32)
    matrix *= rng.choice(scales, (400, 1))
    queries *= rng.choice(scales, (nq, 1))
    dists = assert_equals_top_k(queries, matrix, 10, metric)[1]
    threshold = float(np.median(dists[np.isfinite(dists)]))
    if metric != "inner_product":
        threshold = max(threshold, 0.0)
    assert_equals_top_k(queries, matrix, 10, metric, threshold)


@pytest.mark.parametrize("metric", METRICS)
def test_equals_top_k_next_to_tiny_rows(kernels, metric):
    """Rows of 1e-16 and queries one float step from some of them: squared
    distances below float32's safe range, which the scan takes in double, on rows
    of ordinary norm for the screen."""
    _, matrix = random_data(1, 500, 16, seed=9)
    matrix *= np.float32(1e-16)
    picks = np.random.default_rng(10).integers(0, 500, 40)
    queries = np.nextafter(matrix[picks], np.float32(np.inf))
    indices, dists = assert_equals_top_k(queries, matrix, 8, metric)
    if metric in ("euclidean", "euclidean_squared"):
        assert indices[:, 0].tolist() == picks.tolist()
    dists = dists[np.isfinite(dists)]
    assert_equals_top_k(queries, matrix, 8, metric, float(np.median(dists)))


@pytest.mark.parametrize("metric", METRICS)
def test_ranking_matches_numpy(metric):
    """On random data (no near ties) the ranking is float64 numpy's."""
    queries, matrix = random_data(30, 2000, 96, seed=3)
    q, m = queries.astype(np.float64), matrix.astype(np.float64)
    if metric in ("euclidean", "euclidean_squared"):
        ref = ((q[:, None, :] - m[None, :, :]) ** 2).sum(axis=2)
    elif metric == "inner_product":
        ref = -(q @ m.T)
    else:  # cosine and euclidean_l2 rank alike
        ref = -(q @ m.T) / np.outer(np.linalg.norm(q, axis=1), np.linalg.norm(m, axis=1))
    indices, dists = facevec.top_k_batch(queries, matrix, 8, metric)
    assert indices.tolist() == np.argsort(ref, axis=1, kind="stable")[:, :8].tolist()
    expected = np.take_along_axis(ref, indices, axis=1)
    if metric == "euclidean":
        expected = np.sqrt(expected)
    elif metric == "inner_product":
        expected = -expected
    elif metric == "cosine":
        expected = 1 + expected
    elif metric == "euclidean_l2":
        expected = np.sqrt(np.maximum(2 + 2 * expected, 0))
    np.testing.assert_allclose(dists, expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------
# threshold


@pytest.mark.parametrize("metric", METRICS)
def test_threshold_keeps_what_top_k_keeps(kernels, metric):
    queries, matrix = random_data(40, 500, 32, seed=4)
    dists = facevec.top_k_batch(queries, matrix, 10, metric)[1]
    threshold = float(np.median(dists))  # some queries keep all, some none
    indices, cut = assert_equals_top_k(queries, matrix, 10, metric, threshold)
    assert (indices == -1).any() and (indices[:, 0] >= 0).any()
    inside = cut >= threshold if metric == "inner_product" else cut <= threshold
    assert (inside == (indices >= 0)).all()


def test_threshold_edges():
    queries, matrix = random_data(20, 100, 8, seed=5)
    full = facevec.top_k_batch(queries, matrix, 5)
    for threshold in (math.inf, 1e30):
        got = facevec.top_k_batch(queries, matrix, 5, threshold=threshold)
        np.testing.assert_array_equal(got[0], full[0])
        np.testing.assert_array_equal(got[1], full[1])
    # threshold 0: only exact copies of the query
    duplicates = np.vstack([matrix, queries[:3]])
    indices, dists = facevec.top_k_batch(queries, duplicates, 5, threshold=0)
    assert indices[:3, 0].tolist() == [100, 101, 102] and (dists[:3, 0] == 0).all()
    assert (indices[:3, 1:] == -1).all() and (indices[3:] == -1).all()
    # inner_product: the threshold is the smallest product kept, any sign
    indices, dists = facevec.top_k_batch(queries, matrix, 5, "inner_product", threshold=-0.5)
    assert (dists[indices >= 0] >= -0.5).all() and (dists[indices < 0] == -np.inf).all()


@pytest.mark.parametrize(
    ("threshold", "message"),
    [
        (float("nan"), "threshold must be a number, found NaN"),
        (-1.0, "threshold must be >= 0, found -1.0"),
        ("0.5", "threshold must be a number, not '0.5'"),
        (True, "threshold must be a number, not True"),
    ],
)
def test_bad_threshold(threshold, message):
    queries, matrix = random_data(2, 5, 3)
    with raises(InvalidParameterError, message):
        facevec.top_k_batch(queries, matrix, 1, threshold=threshold)


# ---------------------------------------------------------------------------
# inputs


def test_empty_inputs():
    queries, matrix = random_data(3, 4, 5)
    indices, dists = facevec.top_k_batch(queries, matrix[:0], 3)
    assert indices.shape == dists.shape == (3, 0)
    indices, dists = facevec.top_k_batch(queries[:0], matrix, 3)
    assert indices.shape == dists.shape == (0, 3)
    assert indices.dtype == np.int64 and dists.dtype == np.float32


def test_other_layouts_and_dtypes():
    queries, matrix = random_data(30, 200, 34, seed=6)
    expected = facevec.top_k_batch(queries, matrix, 6)
    raw = bytearray(1 + matrix.nbytes)
    raw[1:] = matrix.tobytes()
    misaligned = np.frombuffer(raw, np.float32, offset=1).reshape(matrix.shape)
    assert not misaligned.flags.aligned
    for q, m in [
        (queries, misaligned),
        (np.asfortranarray(queries), np.asfortranarray(matrix)),
        (queries.astype(np.float64), matrix.astype(np.float64)),
        (queries.tolist(), matrix),
    ]:
        got = facevec.top_k_batch(q, m, 6)
        np.testing.assert_array_equal(got[0], expected[0])
        np.testing.assert_array_equal(got[1], expected[1])
    strided = facevec.top_k_batch(queries[:, ::2], matrix[::3, ::2], 6)
    direct = facevec.top_k_batch(
        np.ascontiguousarray(queries[:, ::2]), np.ascontiguousarray(matrix[::3, ::2]), 6
    )
    np.testing.assert_array_equal(strided[0], direct[0])


@pytest.mark.parametrize(
    ("queries", "matrix", "error", "message"),
    [
        (
            np.ones(3),
            np.ones((2, 3)),
            VectorError,
            "queries must be a 2-D matrix (rows x dimensions), found shape (3,)",
        ),
        (
            np.ones((2, 3)),
            np.ones(3),
            VectorError,
            "matrix must be a 2-D matrix (rows x dimensions), found shape (3,)",
        ),
        (np.ones((2, 0)), np.ones((2, 0)), VectorError, "queries are empty vectors"),
        (
            np.ones((2, 3)),
            np.ones((5, 4)),
            DimensionMismatchError,
            "queries have 3 dimensions but matrix rows have 4",
        ),
        (
            np.array([["a"]]),
            np.ones((1, 1)),
            VectorError,
            "queries must hold real numbers, found dtype <U1",
        ),
    ],
)
def test_bad_shapes(queries, matrix, error, message):
    with raises(error, message):
        facevec.top_k_batch(queries, matrix, 1)


def test_bad_k_and_metric():
    queries, matrix = random_data(2, 5, 3)
    with raises(VectorError, "k must be at least 1, found 0"):
        facevec.top_k_batch(queries, matrix, 0)
    with raises(VectorError, "k must be an integer, found float"):
        facevec.top_k_batch(queries, matrix, 2.0)
    with raises(
        UnknownMetricError, "unknown metric 'manhattan'; choose one of " + ", ".join(METRICS)
    ):
        facevec.top_k_batch(queries, matrix, 1, "manhattan")


@pytest.mark.parametrize("metric", ["cosine", "euclidean_l2"])
@pytest.mark.parametrize("nq", [3, 30])  # small-batch and screened paths
def test_zero_norm(metric, nq):
    queries, matrix = random_data(nq, 10, 4)
    matrix[6] = 0
    with raises(VectorError, f"{metric} distance is undefined: matrix row 6 has norm 0"):
        facevec.top_k_batch(queries, matrix, 2, metric)
    queries[2] = 0
    with raises(VectorError, f"{metric} distance is undefined: query 2 has norm 0"):
        facevec.top_k_batch(queries, matrix, 2, metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("nq", [3, 30])
def test_nan_is_an_error_naming_the_first_pair(metric, nq):
    queries, matrix = random_data(nq, 50, 4)
    matrix[17, 1] = np.nan
    matrix[30, 0] = np.inf if metric != "euclidean_squared" else np.nan
    message = (
        f"{metric} distance from query 0 to matrix row 17 is NaN: the row or the query "
        "holds NaN or infinity, which cannot be ranked"
    )
    with raises(VectorError, message):
        facevec.top_k_batch(queries, matrix, 3, metric)
    queries[1, 2] = np.nan  # every row is NaN for query 1: row 0 comes first
    with raises(VectorError, message.replace("query 0", "query 1").replace("row 17", "row 0")):
        facevec.top_k_batch(queries, matrix, 3, metric)


# ---------------------------------------------------------------------------
# The C check program: every screen kernel, natively and on ARM64


def _compile_and_run(compiler: list[str], run_prefix: list[str], out: Path, cases: int):
    binary = out / "check_batch"
    sources = [CHECK_PROGRAM, ROOT / "csrc" / "distance.c", ROOT / "csrc" / "kmeans.c"]
    built = subprocess.run(
        [*compiler, "-O2", "-Wall", "-Wextra", f"-I{ROOT / 'csrc'}", *map(str, sources),
         "-o", str(binary), "-lm"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert built.returncode == 0 and "warning" not in built.stderr, built.stderr
    run = subprocess.run(
        [*run_prefix, str(binary), str(cases)], capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0 and run.stdout.endswith("batch ok\n"), run.stdout + run.stderr
    return run.stdout


@pytest.mark.slow
def test_check_program_every_screen_kernel(tmp_path):
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build tests/c/check_batch.c")
    out = _compile_and_run([cc], [], tmp_path, 200)
    assert f"screen portable, distances {facevec.isa()}: ok" in out
    assert "screen portable, distances scalar: ok" in out
    if facevec.isa() in ("avx2", "avx512"):
        assert f"screen {facevec.isa()}, distances {facevec.isa()}: ok" in out


@pytest.mark.slow
def test_check_program_on_arm64(tmp_path):
    toolchain = _toolchain()
    if isinstance(toolchain, str):
        pytest.skip(toolchain)
    compiler, run_prefix = toolchain
    out = _compile_and_run(compiler, run_prefix, tmp_path, 40)
    assert "screen portable, distances neon: ok" in out
