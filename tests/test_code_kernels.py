"""The float16 and int8 code kernels (csrc/codes.c): every instruction set built
for this CPU, not only the one dispatch picks, against the portable C kernels and
numpy. The NEON ones run under qemu in test_arm64_kernels.py."""

from __future__ import annotations

import ctypes
import math
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from facevec.bindings._kernels import ffi, lib
from sqlpaths import U32

import facevec

ROOT = Path(__file__).resolve().parent.parent
F16, I8 = 1, 2
ISA_NAMES = ("scalar", "avx2", "avx512", "neon")
DIMS = (*range(1, 40), 63, 64, 65, 127, 128, 129, 512)

SHIM = r"""
#include "distance.c"
#include "codes.c"

int fvt_available(int isa) { return codes_for(isa) != NULL; }

void fvt_decode(int isa, int kind, const float *params, const unsigned char *codes, size_t n,
                size_t dim, float *out) {
  const code_kernels *k = codes_for(isa);
  for (size_t r = 0; r < n; r++) {
    if (kind == FV_CODE_F16) k->decode_f16(codes + 2 * r * dim, dim, out + r * dim);
    else k->decode_i8(params, params + dim, codes + r * dim, dim, out + r * dim);
  }
}

void fvt_l2sq(int isa, int kind, const float *params, const float *prep,
              const unsigned char *codes, size_t n, size_t dim, float *out) {
  const code_kernels *k = codes_for(isa);
  for (size_t r = 0; r < n; r++)
    out[r] = kind == FV_CODE_F16 ? k->l2sq_f16(prep, codes + 2 * r * dim, dim)
                                 : k->l2sq_i8(params + dim, prep, codes + r * dim, dim);
}

void fvt_l2sq_rows(int isa, int kind, const float *params, const float *prep,
                   const unsigned char *codes, size_t n, size_t dim, float *out) {
  const code_kernels *k = codes_for(isa);
  if (kind == FV_CODE_F16) k->l2sq_f16_rows(prep, codes, n, dim, out);
  else k->l2sq_i8_rows(params + dim, prep, codes, n, dim, out);
}

/* float32: the rows kernel of instruction set isa, and its one-row kernel. */
int fvt_f32_rows(int isa, const float *q, const float *rows, size_t n, size_t dim,
                 float *out, float *single) {
  const fv_kernels *k = isa == 0 ? &kernels_scalar : NULL;
#ifdef FV_X86
  if (isa == 1) k = &kernels_avx2;
  if (isa == 2) k = &kernels_avx512;
#endif
#ifdef FV_NEON
  if (isa == 3) k = &kernels_neon;
#endif
  if (!k || !codes_for(isa)) return 0;
  k->l2sq_rows(q, rows, n, dim, out);
  for (size_t r = 0; r < n; r++) single[r] = k->l2sq(q, rows + r * dim, dim);
  return 1;
}

/* fv_l2_squared_rows_within beside fv_l2_squared_rows (the dispatched kernels). */
size_t fvt_within(const float *q, const float *rows, size_t n, size_t dim, double bound,
                  uint32_t *idx, double *keys, double *all) {
  fv_l2_squared_rows(q, rows, n, dim, all);
  return fv_l2_squared_rows_within(q, rows, n, dim, bound, idx, keys);
}
"""


@pytest.fixture(scope="module")
def shim(tmp_path_factory):
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        pytest.skip("no C compiler to build the per-ISA kernel shim")
    build = tmp_path_factory.mktemp("codes")
    (build / "shim.c").write_text(SHIM)
    library = build / "shim.so"
    subprocess.run(
        [gcc, "-O2", "-shared", "-fPIC", "-I", str(ROOT / "csrc"), "-o", str(library),
         str(build / "shim.c"), "-lm"],
        check=True,
    )  # fmt: skip
    lib_ = ctypes.CDLL(str(library))
    p = ctypes.c_void_p
    lib_.fvt_decode.argtypes = [ctypes.c_int, ctypes.c_int, p, p, ctypes.c_size_t,
                                ctypes.c_size_t, p]  # fmt: skip
    lib_.fvt_l2sq.argtypes = [ctypes.c_int, ctypes.c_int, p, p, p, ctypes.c_size_t,
                              ctypes.c_size_t, p]  # fmt: skip
    lib_.fvt_l2sq_rows.argtypes = lib_.fvt_l2sq.argtypes
    lib_.fvt_f32_rows.argtypes = [ctypes.c_int, p, p, ctypes.c_size_t, ctypes.c_size_t, p, p]
    lib_.fvt_within.argtypes = [p, p, ctypes.c_size_t, ctypes.c_size_t, ctypes.c_double, p, p,
                                p]  # fmt: skip
    lib_.fvt_within.restype = ctypes.c_size_t
    return lib_


def int8_params(rng, dim: int) -> np.ndarray:
    lo = rng.uniform(-1, 0, dim).astype(np.float32)
    scale = rng.uniform(0.001, 0.02, dim).astype(np.float32)
    return np.concatenate([lo, scale])


def unaligned(data: bytes, offset: int) -> tuple[bytearray, int]:
    """data at byte `offset` of a buffer, and its address: codes sit anywhere."""
    buf = bytearray(offset) + bytearray(data) + bytearray(16)
    return buf, ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf)) + offset


def decoded_reference(kind: int, params: np.ndarray, codes: np.ndarray, dim: int) -> np.ndarray:
    if kind == F16:
        return codes.view(np.float16).astype(np.float64).reshape(-1, dim)
    lo, scale = params[:dim].astype(np.float64), params[dim:].astype(np.float64)
    return lo + scale * codes.reshape(-1, dim).astype(np.float64)


def random_codes(rng, kind: int, n: int, dim: int) -> np.ndarray:
    if kind == F16:
        return rng.standard_normal(n * dim).astype(np.float16).view(np.uint16)
    return rng.integers(0, 256, n * dim, dtype=np.uint8)


def test_dispatch_covers_the_chosen_kernels(shim):
    available = {ISA_NAMES[isa] for isa in range(4) if shim.fvt_available(isa)}
    assert {"scalar", facevec.isa()} <= available


@pytest.mark.parametrize("kind", [F16, I8], ids=["float16", "int8"])
def test_every_isa_code_kernel_matches_numpy_and_scalar(shim, kind):
    isas = [isa for isa in range(4) if shim.fvt_available(isa)]
    rng = np.random.default_rng(kind)
    for dim in DIMS:
        n = 5
        params = int8_params(rng, dim)
        codes = random_codes(rng, kind, n, dim)
        query = rng.standard_normal(dim).astype(np.float32)
        prep = query - params[:dim] if kind == I8 else query.copy()
        ref_rows = decoded_reference(kind, params, codes, dim)
        ref_l2 = ((ref_rows - query.astype(np.float64)) ** 2).sum(axis=1)
        results = {}
        for isa in isas:
            for offset in (0, 1, 3):
                buf, address = unaligned(codes.tobytes(), offset)
                decoded = np.zeros((n, dim), np.float32)
                l2 = np.zeros(n, np.float32)
                shim.fvt_decode(isa, kind, params.ctypes.data, address, n, dim,
                                decoded.ctypes.data)  # fmt: skip
                shim.fvt_l2sq(isa, kind, params.ctypes.data, prep.ctypes.data, address, n, dim,
                              l2.ctypes.data)  # fmt: skip
                if kind == F16:  # exact
                    np.testing.assert_array_equal(decoded, ref_rows.astype(np.float32))
                else:  # lo + s * code, rounded once or twice
                    terms = np.abs(params[:dim]) + np.abs(ref_rows - params[:dim])
                    bound = 2 * U32 * terms + 1e-30
                    assert (np.abs(decoded - ref_rows) <= bound).all(), (ISA_NAMES[isa], dim)
                unit = 8 * U32 * (math.sqrt(dim) + 1)
                # int8: s * code - (q - lo) carries q - lo's rounding too.
                slack = 0 if kind == F16 else 4 * U32 * float(np.abs(prep).sum() ** 2)
                err = np.abs(l2.astype(np.float64) - ref_l2)
                assert (err <= unit * ref_l2 + slack + 1e-30).all(), (ISA_NAMES[isa], dim, err)
                results[(isa, offset)] = (decoded, l2)
        scalar_decoded, scalar_l2 = results[(0, 0)]
        for (isa, _), (decoded, l2) in results.items():
            # the same to float32 rounding as the portable kernels
            np.testing.assert_allclose(l2, scalar_l2, rtol=1e-5, atol=1e-6)
            terms = np.abs(params[:dim]) + np.abs(scalar_decoded - params[:dim])
            assert (np.abs(decoded - scalar_decoded) <= 4 * U32 * terms).all(), ISA_NAMES[isa]


@pytest.mark.parametrize("kind", [F16, I8], ids=["float16", "int8"])
def test_dispatched_codes_round_trip_and_score(kind):
    """Through the cffi module: the kernels dispatch picks, then the portable ones."""
    rng = np.random.default_rng(7)
    n, dim = 50, 128
    data = rng.standard_normal((n, dim)).astype(np.float32)
    lo = data.min(axis=0)
    params = np.concatenate([lo, (data.max(axis=0) - lo) / 255]).astype(np.float32)
    query = rng.standard_normal(dim).astype(np.float32)
    f = ffi.cast
    out = {}
    for scalar in (0, 1):
        lib.fv_force_scalar(scalar)
        try:
            codes = np.zeros(n * dim * (2 if kind == F16 else 1), np.uint8)
            lib.fv_codes_encode(kind, f("float *", params.ctypes.data),
                                f("float *", data.ctypes.data), n, dim,
                                f("void *", codes.ctypes.data))  # fmt: skip
            decoded = np.zeros((n, dim), np.float32)
            lib.fv_codes_decode(kind, f("float *", params.ctypes.data),
                                f("void *", codes.ctypes.data), n, dim,
                                f("float *", decoded.ctypes.data))  # fmt: skip
            prep = np.zeros(dim, np.float32)
            lib.fv_codes_query(kind, f("float *", params.ctypes.data),
                               f("float *", query.ctypes.data), dim,
                               f("float *", prep.ctypes.data))  # fmt: skip
            l2 = np.zeros(n, np.float32)
            lib.fv_codes_l2sq_rows(kind, f("float *", params.ctypes.data),
                                   f("float *", prep.ctypes.data),
                                   f("void *", codes.ctypes.data), n, dim,
                                   f("float *", l2.ctypes.data))  # fmt: skip
        finally:
            lib.fv_force_scalar(0)
        out[scalar] = (codes, decoded, l2)
    np.testing.assert_array_equal(out[0][0], out[1][0])  # encoding is scalar either way
    codes, decoded, l2 = out[0]
    if kind == F16:
        np.testing.assert_array_equal(decoded, data.astype(np.float16).astype(np.float32))
    else:
        assert (np.abs(decoded - data) <= params[dim:] * 0.5001 + 1e-6).all()
    terms = np.abs(params[:dim]) + np.abs(decoded - params[:dim])
    assert (np.abs(decoded - out[1][1]) <= 4 * U32 * terms).all()
    np.testing.assert_allclose(l2, out[1][2], rtol=1e-5)
    expected = ((decoded.astype(np.float64) - query) ** 2).sum(axis=1)
    np.testing.assert_allclose(l2, expected, rtol=1e-4)


ROW_COUNTS = (1, 2, 3, 4, 5, 7, 8, 9, 33)


@pytest.mark.parametrize("kind", [F16, I8], ids=["float16", "int8"])
def test_code_kernels_of_several_rows_equal_the_one_row_kernels(shim, kind):
    """Several rows per call (the parameters and query loaded once for them)
    sum each row exactly as the one-row kernel does: the same bits, whatever
    the number of rows, the width and the codes' offset."""
    rng = np.random.default_rng(10 + kind)
    for isa in [isa for isa in range(4) if shim.fvt_available(isa)]:
        for dim in DIMS:
            params = int8_params(rng, dim)
            query = rng.standard_normal(dim).astype(np.float32)
            prep = query - params[:dim] if kind == I8 else query.copy()
            for n in ROW_COUNTS:
                codes = random_codes(rng, kind, n, dim)
                buf, address = unaligned(codes.tobytes(), n % 3)
                one, rows = np.zeros(n, np.float32), np.full(n, np.nan, np.float32)
                shim.fvt_l2sq(isa, kind, params.ctypes.data, prep.ctypes.data, address, n, dim,
                              one.ctypes.data)  # fmt: skip
                shim.fvt_l2sq_rows(isa, kind, params.ctypes.data, prep.ctypes.data, address, n,
                                   dim, rows.ctypes.data)  # fmt: skip
                np.testing.assert_array_equal(
                    rows.view(np.uint32),
                    one.view(np.uint32),
                    err_msg=f"{ISA_NAMES[isa]} dim {dim} n {n}",
                )


def test_float32_kernels_of_several_rows_equal_the_one_row_kernel(shim):
    """The float32 rows kernels give each row the one-row kernel's bits (the
    knn index ranks, and returns, exactly those)."""
    rng = np.random.default_rng(11)
    for isa in range(4):
        for dim in DIMS:
            query = rng.standard_normal(dim).astype(np.float32)
            for n in ROW_COUNTS:
                rows = rng.standard_normal(n * dim).astype(np.float32)
                buf, address = unaligned(rows.tobytes(), 4 * (n % 2) + n % 3)
                out, single = np.full(n, np.nan, np.float32), np.zeros(n, np.float32)
                if not shim.fvt_f32_rows(isa, query.ctypes.data, address, n, dim,
                                         out.ctypes.data, single.ctypes.data):  # fmt: skip
                    break
                np.testing.assert_array_equal(
                    out.view(np.uint32),
                    single.view(np.uint32),
                    err_msg=f"{ISA_NAMES[isa]} dim {dim} n {n}",
                )


@pytest.mark.parametrize("scalar", [0, 1], ids=["dispatched", "scalar"])
def test_rows_within_a_bound_are_exactly_those_of_the_full_scan(shim, scalar):
    """fv_l2_squared_rows_within keeps the rows whose key is not above the
    bound, with fv_l2_squared_rows' keys to the bit: NaN rows and every row
    under a NaN bound included, extreme rows (recomputed in double) too."""
    rng = np.random.default_rng(12)
    n, dim = 300, 128
    rows = rng.standard_normal((n, dim)).astype(np.float32)
    rows[5] = np.nan
    rows[17] = 1e-25  # underflows in float32: the double sum decides
    rows[40] = 3e19  # overflows in float32
    query = np.zeros(dim, np.float32) + np.float32(1e-25)
    query[0] = 0.5
    idx, keys, full = np.zeros(n, np.uint32), np.zeros(n), np.zeros(n)
    shim.fv_force_scalar(scalar)  # the shim's own copy of the dispatch
    try:
        for bound in (np.nan, 0.0, 5e-49, 100.0, 128.0, 200.0, np.inf):
            m = shim.fvt_within(query.ctypes.data, rows.ctypes.data, n, dim, float(bound),
                                idx.ctypes.data, keys.ctypes.data, full.ctypes.data)  # fmt: skip
            expect = [r for r in range(n) if not full[r] > bound]
            assert idx[:m].tolist() == expect, bound
            np.testing.assert_array_equal(keys[:m].view(np.uint64), full[expect].view(np.uint64))
        assert 5 in expect and 17 in expect and 40 in expect
    finally:
        shim.fv_force_scalar(0)
