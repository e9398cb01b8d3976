"""The NEON kernels (ARM64), cross-compiled and run under qemu: they must agree
with the portable C kernels, as the x86 ones do in test_kernels.py (float32) and
test_code_kernels.py (float16 and int8 codes).

Needs an aarch64 cross compiler and qemu-user (Debian: gcc-aarch64-linux-gnu
qemu-user); on an ARM64 machine the native compiler does without qemu.
"""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parent.parent / "csrc"

# Includes distance.c and codes.c, so it reaches the static kernel tables. Exits non-zero and
# says why at the first disagreement.
PROGRAM = r"""
#include "distance.c"
#include "codes.c"

#include <stdio.h>

static unsigned long long seed = 88172645463325252ULL;
static float uniform(void) { /* xorshift64, in [-1, 1) */
  seed ^= seed << 13; seed ^= seed >> 7; seed ^= seed << 17;
  return (float)((seed >> 40) / 8388608.0 - 1.0);
}

static int close_to(double got, double want, double scale, const char *what, size_t n) {
  if (fabs(got - want) <= 1e-5 * (scale + 1.0)) return 1;
  printf("%s n=%zu: neon %.9g, scalar %.9g\n", what, n, got, want);
  return 0;
}

int main(void) {
  if (strcmp(fv_isa(), "neon") != 0) {
    printf("dispatch picked %s, not neon\n", fv_isa());
    return 1;
  }
  static unsigned char buf_a[4 * 4200 + 8], buf_b[4 * 4200 + 8];
  const size_t sizes[] = {1, 2, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 127, 128, 129, 512, 4099};
  for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
    for (size_t offset = 0; offset < 4; offset++) { /* unaligned vectors too */
      size_t n = sizes[s];
      float *a = (float *)(void *)(buf_a + offset), *b = (float *)(void *)(buf_b + offset);
      for (size_t i = 0; i < n; i++) {
        float x = uniform(), y = uniform();
        memcpy(buf_a + offset + 4 * i, &x, 4);
        memcpy(buf_b + offset + 4 * i, &y, 4);
      }
      const fv_kernels *neon = &kernels_neon, *ref = &kernels_scalar;
      double scale = (double)n;
      if (!close_to(neon->l2sq(a, b, n), ref->l2sq(a, b, n), scale, "l2sq", n)) return 1;
      if (!close_to(neon->dot(a, b, n), ref->dot(a, b, n), scale, "dot", n)) return 1;
      if (!close_to(neon->l2sq_scaled(a, 0.5f, b, 0.25f, n),
                    ref->l2sq_scaled(a, 0.5f, b, 0.25f, n), scale, "l2sq_scaled", n))
        return 1;
      float block_neon[4], block_ref[4];
      neon->l2sq_rows(a, b, n >= 4 ? 4 : 1, n / (n >= 4 ? 4 : 1), block_neon);
      ref->l2sq_rows(a, b, n >= 4 ? 4 : 1, n / (n >= 4 ? 4 : 1), block_ref);
      if (!close_to(block_neon[0], block_ref[0], scale, "l2sq_rows", n)) return 1;
    }
  }
  /* float16 and int8 codes: decoding and squared distances, unaligned too. */
  if (codes_for(3) != &codes_neon || CK() != &codes_neon) {
    printf("code dispatch did not pick neon\n");
    return 1;
  }
  static float params[2 * 600], cq[600], prep[600], dec_neon[600], dec_ref[600];
  static unsigned char codes[2 * 600 + 8];
  const size_t code_dims[] = {1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 64, 127, 128, 129, 512};
  for (size_t s = 0; s < sizeof code_dims / sizeof code_dims[0]; s++) {
    size_t dim = code_dims[s];
    for (size_t j = 0; j < dim; j++) {
      params[j] = uniform();                         /* lo */
      params[dim + j] = 0.011f + 0.01f * uniform();  /* scale > 0 */
      cq[j] = uniform();
    }
    for (int kind = FV_CODE_F16; kind <= FV_CODE_I8; kind++) {
      for (size_t offset = 0; offset < 4; offset++) {
        unsigned char *c = codes + offset;
        size_t bytes = kind == FV_CODE_F16 ? 2 * dim : dim;
        for (size_t j = 0; j < bytes; j++) c[j] = (unsigned char)(uniform() * 127 + 128);
        if (kind == FV_CODE_F16)
          for (size_t j = 0; j < dim; j++) c[2 * j + 1] &= 0x7b; /* finite halves */
        fv_codes_query(kind, params, cq, dim, prep);
        float neon_l2, ref_l2;
        if (kind == FV_CODE_F16) {
          codes_neon.decode_f16(c, dim, dec_neon);
          codes_scalar.decode_f16(c, dim, dec_ref);
          neon_l2 = codes_neon.l2sq_f16(prep, c, dim);
          ref_l2 = codes_scalar.l2sq_f16(prep, c, dim);
        } else {
          codes_neon.decode_i8(params, params + dim, c, dim, dec_neon);
          codes_scalar.decode_i8(params, params + dim, c, dim, dec_ref);
          neon_l2 = codes_neon.l2sq_i8(params + dim, prep, c, dim);
          ref_l2 = codes_scalar.l2sq_i8(params + dim, prep, c, dim);
        }
        for (size_t j = 0; j < dim; j++)
          if (kind == FV_CODE_F16 ? memcmp(&dec_neon[j], &dec_ref[j], 4) != 0
                                  : !close_to(dec_neon[j], dec_ref[j], 0, "decode_i8", dim)) {
            printf("decode kind %d dim %zu element %zu: neon %.9g, scalar %.9g\n", kind, dim,
                   j, dec_neon[j], dec_ref[j]);
            return 1;
          }
        if (!close_to(neon_l2, ref_l2, ref_l2, kind == FV_CODE_F16 ? "l2sq_f16" : "l2sq_i8",
                      dim))
          return 1;
      }
    }
  }
  /* top-k through dispatch (NEON) against the portable kernels. */
  enum { ROWS = 3000, DIM = 128, K = 10 };
  static float matrix[ROWS * DIM], query[DIM];
  for (size_t i = 0; i < ROWS * DIM; i++) matrix[i] = uniform();
  for (size_t i = 0; i < DIM; i++) query[i] = uniform();
  for (int metric = FV_EUCLIDEAN_SQUARED; metric <= FV_NEGATIVE_INNER_PRODUCT; metric++) {
    int64_t idx[2][K];
    float dist[2][K];
    size_t found[2];
    int64_t bad;
    for (int pass = 0; pass < 2; pass++) {
      fv_force_scalar(pass);
      if (fv_top_k((fv_metric)metric, query, matrix, ROWS, DIM, K, idx[pass], dist[pass],
                   &found[pass], &bad) != FV_OK) {
        printf("top_k failed for metric %d\n", metric);
        return 1;
      }
    }
    fv_force_scalar(0);
    for (int i = 0; i < K; i++) {
      if (idx[0][i] != idx[1][i] || !close_to(dist[0][i], dist[1][i], DIM, "top_k", DIM)) {
        printf("top_k metric %d rank %d: neon row %lld, scalar row %lld\n", metric, i,
               (long long)idx[0][i], (long long)idx[1][i]);
        return 1;
      }
    }
  }
  printf("neon ok\n");
  return 0;
}
"""


def _toolchain() -> tuple[list[str], list[str]] | str:
    """(compile command, run prefix) for an ARM64 binary, or why there is none."""
    if platform.machine() in ("aarch64", "arm64"):
        cc = shutil.which("cc") or shutil.which("gcc")
        return ([cc], []) if cc else "no C compiler"
    cross, qemu = shutil.which("aarch64-linux-gnu-gcc"), shutil.which("qemu-aarch64")
    if not cross or not qemu:
        return (
            "no aarch64 cross compiler and qemu-user to run the NEON kernels "
            "(Debian: apt-get install gcc-aarch64-linux-gnu qemu-user)"
        )
    return [cross, "-static"], [qemu]


@pytest.mark.slow
def test_neon_kernels_agree_with_the_portable_ones(tmp_path):
    toolchain = _toolchain()
    if isinstance(toolchain, str):
        pytest.skip(toolchain)
    compile_prefix, run_prefix = toolchain
    source, binary = tmp_path / "neon.c", tmp_path / "neon"
    source.write_text(PROGRAM)
    built = subprocess.run(
        [*compile_prefix, "-O2", "-Wall", "-Wextra", f"-I{CSRC}", str(source), "-o", str(binary),
         "-lm"],
        capture_output=True,
        text=True,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    assert "warning" not in built.stderr, built.stderr
    run = subprocess.run([*run_prefix, str(binary)], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "neon ok", run.stdout + run.stderr
