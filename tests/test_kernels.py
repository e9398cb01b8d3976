"""facevec.distances and facevec.top_k (the client-side path over the C
kernels) against numpy float64; and every SIMD kernel built for this CPU,
including those the dispatcher does not pick here (AVX2 on an AVX-512 machine)."""

from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from facevec.bindings._kernels import lib
from sqlpaths import U32, reference

import facevec
from facevec import DimensionMismatchError, FacevecError, VectorError

ROOT = Path(__file__).resolve().parent.parent
DIMS = (1, 2, 3, 7, 8, 15, 16, 17, 31, 33, 128, 512, 4096)
#: facevec.distances metric -> SQL function of the same maths, for the reference.
SQL_NAME = {
    "euclidean": "euclidean_distance",
    "euclidean_squared": "euclidean_distance_squared",
    "cosine": "cosine_distance",
    "euclidean_l2": "euclidean_l2_distance",
    "inner_product": "inner_product",
}


def matrix_and_query(n: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.standard_normal((n, dim)).astype(np.float32),
        rng.standard_normal(dim).astype(np.float32),
    )


def assert_distances_match_numpy(metric, got, query, matrix):
    assert got.dtype == np.float32 and got.shape == (matrix.shape[0],)
    for row, value in zip(matrix, got, strict=True):
        expected, tol = reference(SQL_NAME[metric], row, query)
        assert abs(float(value) - expected) <= tol, (metric, float(value), expected, tol)


@pytest.fixture(params=["best", "scalar"])
def kernels(request):
    lib.fv_force_scalar(request.param == "scalar")
    try:
        yield request.param
    finally:
        lib.fv_force_scalar(0)


@pytest.mark.parametrize("dim", DIMS)
@pytest.mark.parametrize("metric", list(facevec.METRICS))
def test_distances_match_numpy(kernels, metric, dim):
    matrix, query = matrix_and_query(20, dim, seed=dim)
    assert_distances_match_numpy(metric, facevec.distances(query, matrix, metric), query, matrix)


@pytest.mark.parametrize("dim", (1, 17, 128))
@pytest.mark.parametrize("metric", list(facevec.METRICS))
def test_top_k_matches_numpy(kernels, metric, dim):
    matrix, query = matrix_and_query(300, dim, seed=dim)
    dists = facevec.distances(query, matrix, metric)
    order = np.argsort(-dists if metric == "inner_product" else dists, kind="stable")
    for k in (1, 5, 299, 300):
        indices, values = facevec.top_k(query, matrix, k, metric)
        assert indices.dtype == np.int64 and values.dtype == np.float32
        assert indices.tolist() == order[:k].tolist()
        np.testing.assert_array_equal(values, dists[indices])
    if dim == 1 and metric in ("cosine", "euclidean_l2"):
        return  # every distance is 0 or 2: all ties
    # And the ranking agrees with float64 numpy (random data: no near ties).
    ref = np.array([reference(SQL_NAME[metric], row, query)[0] for row in matrix])
    ref_order = np.argsort(-ref if metric == "inner_product" else ref, kind="stable")
    assert facevec.top_k(query, matrix, 3, metric)[0].tolist() == ref_order[:3].tolist()


@pytest.mark.parametrize("scale", (1e20, 1e-22))
@pytest.mark.parametrize("metric", ("euclidean", "cosine", "euclidean_l2"))
def test_extreme_values_match_numpy(kernels, metric, scale):
    """Elements whose squares overflow (1e20) or underflow (1e-22) float32:
    the sums are taken again in double, so the float32 results are right."""
    rng = np.random.default_rng(int(-np.log10(scale)) % 97)
    matrix = (np.clip(rng.standard_normal((40, 33)), -3, 3) * scale).astype(np.float32)
    query = (np.clip(rng.standard_normal(33), -3, 3) * scale).astype(np.float32)
    got = facevec.distances(query, matrix, metric)
    ref = np.array([reference(SQL_NAME[metric], row, query)[0] for row in matrix])
    np.testing.assert_allclose(got, ref, rtol=1e-6)
    indices, values = facevec.top_k(query, matrix, 10, metric)
    assert indices.tolist() == np.argsort(ref, kind="stable")[:10].tolist()
    np.testing.assert_array_equal(values, got[indices])


def test_an_infinite_distance_is_ranked_last_not_dropped(kernels):
    matrix = np.array([[np.inf], [1.0], [2.0]], np.float32)
    indices, values = facevec.top_k([-1.0], matrix, 3, "inner_product")
    assert indices.tolist() == [1, 2, 0]
    assert values.tolist() == [-1.0, -2.0, -np.inf]


def test_top_k_default_metric_is_euclidean():
    matrix, query = matrix_and_query(50, 8)
    indices, values = facevec.top_k(query, matrix, 4)
    expected = np.sqrt(((matrix.astype(np.float64) - query) ** 2).sum(1))
    assert indices.tolist() == np.argsort(expected)[:4].tolist()
    np.testing.assert_allclose(values, expected[indices], rtol=1e-6)


@pytest.mark.parametrize("metric", list(facevec.METRICS))
def test_ties_are_broken_by_lower_index(kernels, metric):
    near, far = np.array([1.0, 0.0], np.float32), np.array([0.0, 1.0], np.float32)
    query = np.array([2.0, 0.0], np.float32)
    matrix = np.array([far, near, far, near, near, far], np.float32)
    indices, _ = facevec.top_k(query, matrix, 4, metric)
    assert indices.tolist() == [1, 3, 4, 0]
    indices, _ = facevec.top_k(query, matrix[::-1], 6, metric)
    assert indices.tolist() == [1, 2, 4, 0, 3, 5]


def test_k_larger_than_n_and_equal_to_n():
    matrix, query = matrix_and_query(7, 16)
    for k in (7, 8, 1000, 10**18):
        indices, values = facevec.top_k(query, matrix, k)
        assert sorted(indices.tolist()) == list(range(7))
        assert np.all(np.diff(values) >= 0)


def test_empty_matrix():
    query = np.ones(4, np.float32)
    empty = np.empty((0, 4), np.float32)
    indices, values = facevec.top_k(query, empty, 3)
    assert indices.shape == values.shape == (0,)
    assert indices.dtype == np.int64 and values.dtype == np.float32
    assert facevec.distances(query, empty).shape == (0,)


def test_inner_product_ranks_the_largest_first():
    matrix = np.array([[1, 0], [3, 0], [2, 0], [-5, 0]], np.float32)
    indices, values = facevec.top_k([1, 0], matrix, 2, "inner_product")
    assert indices.tolist() == [1, 2] and values.tolist() == [3.0, 2.0]
    assert facevec.distances([1, 0], matrix, "inner_product").tolist() == [1, 3, 2, -5]


@pytest.mark.parametrize(
    "convert",
    [
        lambda a: a.astype(np.float64),
        lambda a: a.astype(np.float16),
        lambda a: np.rint(a * 10).astype(np.int32),
        lambda a: np.abs(np.rint(a * 10)).astype(np.uint8),
        lambda a: a.tolist(),
    ],
    ids=["float64", "float16", "int32", "uint8", "list"],
)
def test_other_real_inputs_are_accepted(convert):
    matrix, query = matrix_and_query(30, 9)
    m, q = convert(matrix), convert(query)
    m32, q32 = np.asarray(m, np.float32), np.asarray(q, np.float32)
    np.testing.assert_array_equal(facevec.distances(q, m), facevec.distances(q32, m32))
    assert facevec.top_k(q, m, 5)[0].tolist() == facevec.top_k(q32, m32, 5)[0].tolist()


def test_non_contiguous_inputs():
    matrix, query = matrix_and_query(40, 34)
    for m, q in [
        (matrix[:, ::2], query[::2]),  # strided columns
        (matrix[::3], query),  # strided rows
        (np.asfortranarray(matrix), query),  # column-major
        (matrix[:, 1:], query[1:]),  # offset start
    ]:
        expected = facevec.distances(np.ascontiguousarray(q), np.ascontiguousarray(m))
        np.testing.assert_array_equal(facevec.distances(q, m), expected)
        assert_distances_match_numpy("euclidean", facevec.distances(q, m), q, m)
        order = np.argsort(expected, kind="stable")[:5]
        assert facevec.top_k(q, m, 5)[0].tolist() == order.tolist()


@pytest.mark.parametrize("offset", range(1, 4))
def test_misaligned_float32_buffers(offset):
    """float32 arrays that are not 4-byte aligned go to C as they are."""
    matrix, query = matrix_and_query(10, 33)
    raw = bytearray(offset + matrix.nbytes)
    raw[offset:] = matrix.tobytes()
    misaligned = np.frombuffer(raw, np.float32, offset=offset).reshape(matrix.shape)
    assert not misaligned.flags.aligned
    for metric in facevec.METRICS:
        np.testing.assert_array_equal(
            facevec.distances(query, misaligned, metric), facevec.distances(query, matrix, metric)
        )


# ---------------------------------------------------------------------------
# Errors


def raises(error_type, message):
    return pytest.raises(error_type, match=f"^{re.escape(message)}$")


@pytest.mark.parametrize(
    ("array", "dtype_name"),
    [
        (np.array([["a", "b"]]), "<U1"),
        (np.array([[1 + 2j, 3j]]), "complex128"),
        (np.array([[1.0, None]], dtype=object), "object"),
        (np.array([[True, False]]), "bool"),
    ],
)
def test_wrong_dtype(array, dtype_name):
    good = np.ones((1, 2), np.float32)
    for fn in (facevec.distances, lambda q, m: facevec.top_k(q, m, 1)):
        with raises(VectorError, f"matrix must hold real numbers, found dtype {dtype_name}"):
            fn(good[0], array)
        with raises(VectorError, f"query must hold real numbers, found dtype {dtype_name}"):
            fn(array[0], good)


def test_strings_are_not_numbers():
    with raises(VectorError, "query must hold real numbers, found dtype <U3"):
        facevec.distances(["1.0", "2"], np.ones((1, 2)))


@pytest.mark.parametrize(
    ("query", "matrix", "message"),
    [
        (np.ones((1, 3)), np.ones((2, 3)), "query must be a 1-D vector, found shape (1, 3)"),
        (np.float32(1), np.ones((2, 1)), "query must be a 1-D vector, found shape ()"),
        (
            np.ones(3),
            np.ones(3),
            "matrix must be a 2-D matrix (rows x dimensions), found shape (3,)",
        ),
        (
            np.ones(3),
            np.ones((1, 2, 3)),
            "matrix must be a 2-D matrix (rows x dimensions), found shape (1, 2, 3)",
        ),
        (np.ones(0), np.ones((2, 0)), "query is an empty vector"),
    ],
)
def test_wrong_shape(query, matrix, message):
    with raises(VectorError, message):
        facevec.distances(query, matrix)
    with raises(VectorError, message):
        facevec.top_k(query, matrix, 1)


def test_mismatched_dimensions():
    message = "query has 3 dimensions but matrix rows have 4"
    with raises(DimensionMismatchError, message):
        facevec.distances(np.ones(3), np.ones((5, 4)))
    with raises(DimensionMismatchError, message):
        facevec.top_k(np.ones(3), np.ones((5, 4)), 2)


@pytest.mark.parametrize("k", [0, -1, -(10**20)])
def test_k_below_one(k):
    with raises(VectorError, f"k must be at least 1, found {k}"):
        facevec.top_k(np.ones(2), np.ones((3, 2)), k)


@pytest.mark.parametrize(
    ("k", "type_name"), [(1.0, "float"), ("3", "str"), (True, "bool"), (None, "NoneType")]
)
def test_k_not_an_integer(k, type_name):
    with raises(VectorError, f"k must be an integer, found {type_name}"):
        facevec.top_k(np.ones(2), np.ones((3, 2)), k)


def test_numpy_integer_k():
    assert facevec.top_k(np.ones(2), np.ones((3, 2)), np.int64(2))[0].tolist() == [0, 1]


@pytest.mark.parametrize("metric", ["manhattan", "", "Euclidean", None, ["euclidean"]])
def test_unknown_metric(metric):
    message = (
        f"unknown metric {metric!r}; choose one of euclidean, euclidean_squared, cosine, "
        "euclidean_l2, inner_product"
    )
    with raises(VectorError, message):
        facevec.distances(np.ones(2), np.ones((3, 2)), metric)
    with raises(VectorError, message):
        facevec.top_k(np.ones(2), np.ones((3, 2)), 1, metric)


@pytest.mark.parametrize("metric", ["cosine", "euclidean_l2"])
def test_zero_norm(metric):
    matrix = np.array([[1, 2], [3, 4], [0, 0], [0, 0]], np.float32)
    row_message = f"{metric} distance is undefined: matrix row 2 has norm 0"
    with raises(VectorError, row_message):
        facevec.distances([1, 1], matrix, metric)
    with raises(VectorError, row_message):
        facevec.top_k([1, 1], matrix, 1, metric)
    query_message = f"{metric} distance is undefined: the query has norm 0"
    with raises(VectorError, query_message):
        facevec.distances([0, 0], matrix, metric)
    with raises(VectorError, query_message):
        facevec.top_k([0, 0], matrix[:2], 1, metric)


def test_zero_rows_are_fine_for_euclidean():
    matrix = np.array([[0, 0], [3, 4]], np.float32)
    assert facevec.distances([0, 0], matrix).tolist() == [0.0, 5.0]


def test_errors_are_value_errors_and_facevec_errors():
    for error in (VectorError, DimensionMismatchError):
        assert issubclass(error, ValueError) and issubclass(error, FacevecError)


@pytest.mark.parametrize("metric", list(facevec.METRICS))
@pytest.mark.parametrize("bad_row", [0, 2, 4])
def test_nan_distance_is_an_error(metric, bad_row):
    """A NaN distance cannot be ranked (in the bounded heap it compares false
    with everything and once kept nearer rows out): an error, as in SQL."""
    matrix = np.array([[4, 1], [1, 1], [2, 1], [3, 1], [0.5, 1]], np.float32)
    matrix[bad_row, 0] = np.nan
    message = (
        f"{metric} distance to matrix row {bad_row} is NaN: the row or the query "
        "holds NaN or infinity, which cannot be ranked"
    )
    for k in (1, 3, 5):
        with raises(VectorError, message):
            facevec.top_k([1, 1], matrix, k, metric)


# ---------------------------------------------------------------------------
# Every kernel compiled for this machine, not only the one dispatch picks.

SHIM = r"""
#include "distance.c"

/* isa: 0 scalar, 1 avx2, 2 avx512, 3 neon. NULL when not built or not supported. */
static const fv_kernels *kernels_for(int isa) {
  if (isa == 0) return &kernels_scalar;
#ifdef FV_X86
  __builtin_cpu_init();
  if (isa == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return &kernels_avx2;
  if (isa == 2 && __builtin_cpu_supports("avx512f")) return &kernels_avx512;
#endif
#ifdef FV_NEON
  if (isa == 3) return &kernels_neon;
#endif
  return NULL;
}

int fvt_available(int isa) { return kernels_for(isa) != NULL; }

/* out: l2sq, dot, dot_norms ab, aa, bb, l2sq_scaled(a, sa, b, sb) */
void fvt_all(int isa, const float *a, const float *b, size_t n, float sa, float sb,
             float *out) {
  const fv_kernels *k = kernels_for(isa);
  out[0] = k->l2sq(a, b, n);
  out[1] = k->dot(a, b, n);
  k->dot_norms(a, b, n, &out[2], &out[3], &out[4]);
  out[5] = k->l2sq_scaled(a, sa, b, sb, n);
}
"""


@pytest.fixture(scope="module")
def every_isa(tmp_path_factory):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the per-ISA kernel shim")
    build = tmp_path_factory.mktemp("isa")
    (build / "shim.c").write_text(SHIM)
    library = build / "shim.so"
    subprocess.run(
        [
            gcc,
            "-O2",
            "-shared",
            "-fPIC",
            "-I",
            str(ROOT / "csrc"),
            "-o",
            str(library),
            str(build / "shim.c"),
            "-lm",
        ],
        check=True,
    )
    shim = ctypes.CDLL(str(library))
    shim.fvt_all.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_float,
        ctypes.c_float,
        ctypes.c_void_p,
    ]
    return shim


ISA_NAMES = ("scalar", "avx2", "avx512", "neon")


def test_every_isa_kernel_matches_numpy(every_isa):
    available = [isa for isa in range(len(ISA_NAMES)) if every_isa.fvt_available(isa)]
    # The portable kernels and the ones dispatch picks are always among those tested.
    assert {"scalar", facevec.isa()} <= {ISA_NAMES[isa] for isa in available}
    for isa in available:
        check_isa_kernels(every_isa, isa)


def check_isa_kernels(every_isa, isa: int) -> None:
    rng = np.random.default_rng(isa)
    for n in (*range(0, 70), 127, 128, 129, 512, 4096, 4099):
        for offset in (0, 1, 2, 3):  # byte offset of both vectors
            a = rng.standard_normal(n).astype(np.float32)
            b = rng.standard_normal(n).astype(np.float32)
            buf_a = bytearray(offset) + bytearray(a.tobytes()) + bytearray(4)
            buf_b = bytearray(offset) + bytearray(b.tobytes()) + bytearray(4)
            ca = (ctypes.c_char * len(buf_a)).from_buffer(buf_a)
            cb = (ctypes.c_char * len(buf_b)).from_buffer(buf_b)
            out = np.zeros(6, np.float32)
            sa, sb = 0.5, 0.25
            every_isa.fvt_all(
                isa,
                ctypes.addressof(ca) + offset,
                ctypes.addressof(cb) + offset,
                n,
                sa,
                sb,
                out.ctypes.data,
            )
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            unit = 8 * U32 * (math.sqrt(n) + 1)
            expected = [
                ((a64 - b64) ** 2).sum(),
                a64 @ b64,
                a64 @ b64,
                a64 @ a64,
                b64 @ b64,
                ((a64 * sa - b64 * sb) ** 2).sum(),
            ]
            scales = [
                expected[0],
                np.abs(a64 * b64).sum(),
                np.abs(a64 * b64).sum(),
                expected[3],
                expected[4],
                expected[5],
            ]
            for name, got, want, scale in zip(
                ("l2sq", "dot", "ab", "aa", "bb", "l2sq_scaled"), out, expected, scales, strict=True
            ):
                assert abs(float(got) - want) <= unit * scale + 1e-30, (name, n, offset, got, want)
