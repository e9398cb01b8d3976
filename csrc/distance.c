/*
** distance.c - float32 distance kernels, top-k and JSON vector parsing.
**
** Runtime dispatch: on x86-64 the AVX-512 and AVX2+FMA kernels are compiled
** with per-function target attributes and chosen with __builtin_cpu_supports,
** so a binary built on one machine runs correctly on any other. On ARM64,
** NEON is part of the baseline. Everything else uses portable C.
*/
#include "facevec.h"
#include "scan.h"

#include <errno.h>
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FV_X86 1
#include <immintrin.h>
#endif
#if defined(__aarch64__) && defined(__ARM_NEON)
#define FV_NEON 1
#include <arm_neon.h>
#endif

/* Vectors may sit at any byte offset (SQLite hands out pointers into its
** pages), so scalar loads go through memcpy, which compiles to a plain load. */
static inline float LD(const float *p) {
  float v;
  memcpy(&v, p, sizeof v);
  return v;
}

/* ------------------------------------------------------------------------ */
/* Portable kernels. Four accumulators keep the dependency chains short.     */

static float l2sq_scalar(const float *a, const float *b, size_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    float d0 = LD(a + i) - LD(b + i), d1 = LD(a + i + 1) - LD(b + i + 1);
    float d2 = LD(a + i + 2) - LD(b + i + 2), d3 = LD(a + i + 3) - LD(b + i + 3);
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; i < n; i++) {
    float d = LD(a + i) - LD(b + i);
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

static float dot_scalar(const float *a, const float *b, size_t n) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t i = 0;
  for (; i + 4 <= n; i += 4) {
    s0 += LD(a + i) * LD(b + i);
    s1 += LD(a + i + 1) * LD(b + i + 1);
    s2 += LD(a + i + 2) * LD(b + i + 2);
    s3 += LD(a + i + 3) * LD(b + i + 3);
  }
  for (; i < n; i++) s0 += LD(a + i) * LD(b + i);
  return (s0 + s1) + (s2 + s3);
}

static void dot_norms_scalar(const float *a, const float *b, size_t n,
                             float *ab, float *aa, float *bb) {
  float sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; i++) {
    sab += LD(a + i) * LD(b + i);
    saa += LD(a + i) * LD(a + i);
    sbb += LD(b + i) * LD(b + i);
  }
  *ab = sab;
  *aa = saa;
  *bb = sbb;
}

/* sum((a*sa - b*sb)^2): euclidean distance of scaled (normalised) vectors. */
static float l2sq_scaled_scalar(const float *a, float sa, const float *b,
                                float sb, size_t n) {
  float s0 = 0, s1 = 0;
  size_t i = 0;
  for (; i + 2 <= n; i += 2) {
    float d0 = LD(a + i) * sa - LD(b + i) * sb, d1 = LD(a + i + 1) * sa - LD(b + i + 1) * sb;
    s0 += d0 * d0;
    s1 += d1 * d1;
  }
  for (; i < n; i++) {
    float d = LD(a + i) * sa - LD(b + i) * sb;
    s0 += d * d;
  }
  return s0 + s1;
}

/* ------------------------------------------------------------------------ */
/* AVX2 + FMA                                                                */
#ifdef FV_X86
#define FV_AVX2 __attribute__((target("avx2,fma")))
#define FV_AVX512 __attribute__((target("avx512f")))

FV_AVX2 static inline float hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

FV_AVX2 static float l2sq_avx2(const float *a, const float *b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
    __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
    __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
    s2 = _mm256_fmadd_ps(d2, d2, s2);
    s3 = _mm256_fmadd_ps(d3, d3, s3);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
    s0 = _mm256_fmadd_ps(d, d, s0);
  }
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; i++) {
    float d = LD(a + i) - LD(b + i);
    s += d * d;
  }
  return s;
}

FV_AVX2 static float dot_avx2(const float *a, const float *b, size_t n) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
    s1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), s1);
    s2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), s2);
    s3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), s3);
  }
  for (; i + 8 <= n; i += 8)
    s0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), s0);
  float s = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
  for (; i < n; i++) s += LD(a + i) * LD(b + i);
  return s;
}

FV_AVX2 static void dot_norms_avx2(const float *a, const float *b, size_t n,
                                   float *ab, float *aa, float *bb) {
  __m256 sab = _mm256_setzero_ps(), saa = _mm256_setzero_ps();
  __m256 sbb = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 va = _mm256_loadu_ps(a + i), vb = _mm256_loadu_ps(b + i);
    sab = _mm256_fmadd_ps(va, vb, sab);
    saa = _mm256_fmadd_ps(va, va, saa);
    sbb = _mm256_fmadd_ps(vb, vb, sbb);
  }
  float rab = hsum256(sab), raa = hsum256(saa), rbb = hsum256(sbb);
  for (; i < n; i++) {
    rab += LD(a + i) * LD(b + i);
    raa += LD(a + i) * LD(a + i);
    rbb += LD(b + i) * LD(b + i);
  }
  *ab = rab;
  *aa = raa;
  *bb = rbb;
}

FV_AVX2 static float l2sq_scaled_avx2(const float *a, float sa, const float *b,
                                      float sb, size_t n) {
  __m256 va_s = _mm256_set1_ps(sa), vb_s = _mm256_set1_ps(sb);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    __m256 d0 = _mm256_fmsub_ps(_mm256_loadu_ps(a + i), va_s,
                                _mm256_mul_ps(_mm256_loadu_ps(b + i), vb_s));
    __m256 d1 = _mm256_fmsub_ps(_mm256_loadu_ps(a + i + 8), va_s,
                                _mm256_mul_ps(_mm256_loadu_ps(b + i + 8), vb_s));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  for (; i + 8 <= n; i += 8) {
    __m256 d0 = _mm256_fmsub_ps(_mm256_loadu_ps(a + i), va_s,
                                _mm256_mul_ps(_mm256_loadu_ps(b + i), vb_s));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
  }
  float s = hsum256(_mm256_add_ps(s0, s1));
  for (; i < n; i++) {
    float d = LD(a + i) * sa - LD(b + i) * sb;
    s += d * d;
  }
  return s;
}

/* AVX-512: masked tails, so no scalar remainder loop. */
FV_AVX512 static float l2sq_avx512(const float *a, const float *b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
    __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = (n - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

FV_AVX512 static float dot_avx512(const float *a, const float *b, size_t n) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    s0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), s0);
    s1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), s1);
  }
  for (; i < n; i += 16) {
    __mmask16 m = (n - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    s0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), s0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}

FV_AVX512 static void dot_norms_avx512(const float *a, const float *b, size_t n,
                                       float *ab, float *aa, float *bb) {
  __m512 sab = _mm512_setzero_ps(), saa = _mm512_setzero_ps();
  __m512 sbb = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = (n - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 va = _mm512_maskz_loadu_ps(m, a + i), vb = _mm512_maskz_loadu_ps(m, b + i);
    sab = _mm512_fmadd_ps(va, vb, sab);
    saa = _mm512_fmadd_ps(va, va, saa);
    sbb = _mm512_fmadd_ps(vb, vb, sbb);
  }
  *ab = _mm512_reduce_add_ps(sab);
  *aa = _mm512_reduce_add_ps(saa);
  *bb = _mm512_reduce_add_ps(sbb);
}

FV_AVX512 static float l2sq_scaled_avx512(const float *a, float sa, const float *b,
                                          float sb, size_t n) {
  __m512 va_s = _mm512_set1_ps(sa), vb_s = _mm512_set1_ps(sb);
  __m512 s0 = _mm512_setzero_ps();
  for (size_t i = 0; i < n; i += 16) {
    __mmask16 m = (n - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (n - i)) - 1);
    __m512 d = _mm512_fmsub_ps(_mm512_maskz_loadu_ps(m, a + i), va_s,
                               _mm512_mul_ps(_mm512_maskz_loadu_ps(m, b + i), vb_s));
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  return _mm512_reduce_add_ps(s0);
}
#endif /* FV_X86 */

/* ------------------------------------------------------------------------ */
/* NEON (ARM64 baseline)                                                     */
#ifdef FV_NEON
/* Byte loads: no alignment assumption on the float pointer. */
static inline float32x4_t LDQ(const float *p) {
  return vreinterpretq_f32_u8(vld1q_u8((const uint8_t *)p));
}

static float l2sq_neon(const float *a, const float *b, size_t n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  float32x4_t s2 = vdupq_n_f32(0), s3 = vdupq_n_f32(0);
  size_t i = 0;
  for (; i + 16 <= n; i += 16) {
    float32x4_t d0 = vsubq_f32(LDQ(a + i), LDQ(b + i));
    float32x4_t d1 = vsubq_f32(LDQ(a + i + 4), LDQ(b + i + 4));
    float32x4_t d2 = vsubq_f32(LDQ(a + i + 8), LDQ(b + i + 8));
    float32x4_t d3 = vsubq_f32(LDQ(a + i + 12), LDQ(b + i + 12));
    s0 = vfmaq_f32(s0, d0, d0);
    s1 = vfmaq_f32(s1, d1, d1);
    s2 = vfmaq_f32(s2, d2, d2);
    s3 = vfmaq_f32(s3, d3, d3);
  }
  for (; i + 4 <= n; i += 4) {
    float32x4_t d = vsubq_f32(LDQ(a + i), LDQ(b + i));
    s0 = vfmaq_f32(s0, d, d);
  }
  float s = vaddvq_f32(vaddq_f32(vaddq_f32(s0, s1), vaddq_f32(s2, s3)));
  for (; i < n; i++) {
    float d = LD(a + i) - LD(b + i);
    s += d * d;
  }
  return s;
}

static float dot_neon(const float *a, const float *b, size_t n) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    s0 = vfmaq_f32(s0, LDQ(a + i), LDQ(b + i));
    s1 = vfmaq_f32(s1, LDQ(a + i + 4), LDQ(b + i + 4));
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; i < n; i++) s += LD(a + i) * LD(b + i);
  return s;
}
#endif /* FV_NEON */

/* ------------------------------------------------------------------------ */
/* Squared euclidean distances of a block of rows: one call per block, with
** the row kernel inlined, instead of an indirect call per row.             */

#define DEFINE_L2SQ_ROWS(name, attr, l2sq)                                          \
  attr static void name(const float *q, const float *rows, size_t n_rows, size_t dim, \
                        float *out) {                                               \
    for (size_t r = 0; r < n_rows; r++) out[r] = l2sq(q, rows + r * dim, dim);      \
  }

DEFINE_L2SQ_ROWS(l2sq_rows_scalar, , l2sq_scalar)
#ifdef FV_X86
/* Several rows at once, each summed exactly as l2sq_avx2 / l2sq_avx512 sum
** it (the same lanes in the same order: the same bits), the query loaded
** once for all of them. */
FV_AVX2 static void l2sq_rows_avx2(const float *q, const float *rows, size_t n_rows,
                                   size_t dim, float *out) {
  size_t r = 0;
  if (dim % 8 == 0)
    for (; r + 2 <= n_rows; r += 2) {
      const float *b = rows + r * dim, *c = b + dim;
      __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
      __m256 s2 = _mm256_setzero_ps(), s3 = _mm256_setzero_ps();
      __m256 t0 = _mm256_setzero_ps(), t1 = _mm256_setzero_ps();
      __m256 t2 = _mm256_setzero_ps(), t3 = _mm256_setzero_ps();
      size_t i = 0;
      for (; i + 32 <= dim; i += 32) {
        __m256 q0 = _mm256_loadu_ps(q + i), q1 = _mm256_loadu_ps(q + i + 8);
        __m256 q2 = _mm256_loadu_ps(q + i + 16), q3 = _mm256_loadu_ps(q + i + 24);
        __m256 d;
        d = _mm256_sub_ps(q0, _mm256_loadu_ps(b + i)), s0 = _mm256_fmadd_ps(d, d, s0);
        d = _mm256_sub_ps(q1, _mm256_loadu_ps(b + i + 8)), s1 = _mm256_fmadd_ps(d, d, s1);
        d = _mm256_sub_ps(q2, _mm256_loadu_ps(b + i + 16)), s2 = _mm256_fmadd_ps(d, d, s2);
        d = _mm256_sub_ps(q3, _mm256_loadu_ps(b + i + 24)), s3 = _mm256_fmadd_ps(d, d, s3);
        d = _mm256_sub_ps(q0, _mm256_loadu_ps(c + i)), t0 = _mm256_fmadd_ps(d, d, t0);
        d = _mm256_sub_ps(q1, _mm256_loadu_ps(c + i + 8)), t1 = _mm256_fmadd_ps(d, d, t1);
        d = _mm256_sub_ps(q2, _mm256_loadu_ps(c + i + 16)), t2 = _mm256_fmadd_ps(d, d, t2);
        d = _mm256_sub_ps(q3, _mm256_loadu_ps(c + i + 24)), t3 = _mm256_fmadd_ps(d, d, t3);
      }
      for (; i + 8 <= dim; i += 8) {
        __m256 q0 = _mm256_loadu_ps(q + i), d;
        d = _mm256_sub_ps(q0, _mm256_loadu_ps(b + i)), s0 = _mm256_fmadd_ps(d, d, s0);
        d = _mm256_sub_ps(q0, _mm256_loadu_ps(c + i)), t0 = _mm256_fmadd_ps(d, d, t0);
      }
      out[r] = hsum256(_mm256_add_ps(_mm256_add_ps(s0, s1), _mm256_add_ps(s2, s3)));
      out[r + 1] = hsum256(_mm256_add_ps(_mm256_add_ps(t0, t1), _mm256_add_ps(t2, t3)));
    }
  for (; r < n_rows; r++) out[r] = l2sq_avx2(q, rows + r * dim, dim);
}

FV_AVX512 static void l2sq_rows_avx512(const float *q, const float *rows, size_t n_rows,
                                       size_t dim, float *out) {
  size_t r = 0;
  for (; r + 4 <= n_rows; r += 4) {
    const float *b0 = rows + r * dim, *b1 = b0 + dim, *b2 = b1 + dim, *b3 = b2 + dim;
    __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps();
    __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps();
    __m512 g0 = _mm512_setzero_ps(), g1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
      __m512 qa = _mm512_loadu_ps(q + i), qb = _mm512_loadu_ps(q + i + 16), d;
      d = _mm512_sub_ps(qa, _mm512_loadu_ps(b0 + i)), a0 = _mm512_fmadd_ps(d, d, a0);
      d = _mm512_sub_ps(qb, _mm512_loadu_ps(b0 + i + 16)), a1 = _mm512_fmadd_ps(d, d, a1);
      d = _mm512_sub_ps(qa, _mm512_loadu_ps(b1 + i)), c0 = _mm512_fmadd_ps(d, d, c0);
      d = _mm512_sub_ps(qb, _mm512_loadu_ps(b1 + i + 16)), c1 = _mm512_fmadd_ps(d, d, c1);
      d = _mm512_sub_ps(qa, _mm512_loadu_ps(b2 + i)), e0 = _mm512_fmadd_ps(d, d, e0);
      d = _mm512_sub_ps(qb, _mm512_loadu_ps(b2 + i + 16)), e1 = _mm512_fmadd_ps(d, d, e1);
      d = _mm512_sub_ps(qa, _mm512_loadu_ps(b3 + i)), g0 = _mm512_fmadd_ps(d, d, g0);
      d = _mm512_sub_ps(qb, _mm512_loadu_ps(b3 + i + 16)), g1 = _mm512_fmadd_ps(d, d, g1);
    }
    for (; i < dim; i += 16) {
      __mmask16 m = (dim - i >= 16) ? (__mmask16)0xFFFF : (__mmask16)((1u << (dim - i)) - 1);
      __m512 qa = _mm512_maskz_loadu_ps(m, q + i), d;
      d = _mm512_sub_ps(qa, _mm512_maskz_loadu_ps(m, b0 + i)), a0 = _mm512_fmadd_ps(d, d, a0);
      d = _mm512_sub_ps(qa, _mm512_maskz_loadu_ps(m, b1 + i)), c0 = _mm512_fmadd_ps(d, d, c0);
      d = _mm512_sub_ps(qa, _mm512_maskz_loadu_ps(m, b2 + i)), e0 = _mm512_fmadd_ps(d, d, e0);
      d = _mm512_sub_ps(qa, _mm512_maskz_loadu_ps(m, b3 + i)), g0 = _mm512_fmadd_ps(d, d, g0);
    }
    out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));
    out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(c0, c1));
    out[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));
    out[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(g0, g1));
  }
  for (; r < n_rows; r++) out[r] = l2sq_avx512(q, rows + r * dim, dim);
}
#endif
#ifdef FV_NEON
DEFINE_L2SQ_ROWS(l2sq_rows_neon, , l2sq_neon)
#endif

/* ------------------------------------------------------------------------ */
/* Dispatch                                                                  */

typedef struct fv_kernels {
  const char *name;
  float (*l2sq)(const float *, const float *, size_t);
  float (*dot)(const float *, const float *, size_t);
  void (*dot_norms)(const float *, const float *, size_t, float *, float *, float *);
  float (*l2sq_scaled)(const float *, float, const float *, float, size_t);
  void (*l2sq_rows)(const float *, const float *, size_t, size_t, float *);
} fv_kernels;

static const fv_kernels kernels_scalar = {"scalar",           l2sq_scalar,
                                          dot_scalar,         dot_norms_scalar,
                                          l2sq_scaled_scalar, l2sq_rows_scalar};
#ifdef FV_X86
static const fv_kernels kernels_avx2 = {"avx2",           l2sq_avx2,
                                        dot_avx2,         dot_norms_avx2,
                                        l2sq_scaled_avx2, l2sq_rows_avx2};
static const fv_kernels kernels_avx512 = {"avx512",           l2sq_avx512,
                                          dot_avx512,         dot_norms_avx512,
                                          l2sq_scaled_avx512, l2sq_rows_avx512};
#endif
#ifdef FV_NEON
static const fv_kernels kernels_neon = {"neon",             l2sq_neon,
                                        dot_neon,           dot_norms_scalar,
                                        l2sq_scaled_scalar, l2sq_rows_neon};
#endif

static const fv_kernels *best_kernels(void) {
#ifdef FV_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return &kernels_avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return &kernels_avx2;
#endif
#ifdef FV_NEON
  return &kernels_neon;
#endif
  return &kernels_scalar;
}

/* Every thread computes the same value, so a racy first initialisation is
** harmless; the pointer store is a single word. */
static const fv_kernels *volatile active_kernels = NULL;

static inline const fv_kernels *K(void) {
  const fv_kernels *k = active_kernels;
  if (!k) active_kernels = k = best_kernels();
  return k;
}

const char *fv_isa(void) { return K()->name; }

int fv_isa_level(void) {
  const fv_kernels *k = K();
#ifdef FV_X86
  if (k == &kernels_avx2) return 1;
  if (k == &kernels_avx512) return 2;
#endif
#ifdef FV_NEON
  if (k == &kernels_neon) return 3;
#endif
  (void)k;
  return 0;
}

void fv_force_scalar(int on) {
  active_kernels = on ? &kernels_scalar : best_kernels();
}

/* ------------------------------------------------------------------------ */
/* Extremes: a float32 sum is recomputed in double when it may be wrong      */

/* A float32 sum of squares or products is as accurate as float32 allows
** unless it overflowed (infinity, NaN) or lies near the underflow range,
** where each product rounds to a multiple of 2^-149 and the digits lost can
** be the whole answer (elements of 1e-23 square to 0, elements of 1e20 to
** infinity). Then the sum is taken again in double, which neither
** overflows nor underflows for float32 inputs. Real embeddings never get
** there, so the SIMD kernels keep their speed; zero vectors and exact
** duplicates (a sum of 0) take the double loop, which gives 0 again. */
#define FV_TINY 7.8886090522101181e-31 /* 2^-100 */

static inline int sum_ok(float s) { return s >= (float)FV_TINY && s <= FLT_MAX; }

static double l2sq_double(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)LD(a + i) - (double)LD(b + i);
    s += d * d;
  }
  return s;
}

static double dot_double(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)LD(a + i) * (double)LD(b + i);
  return s;
}

/* sum((a*sa - b*sb)^2) in double. */
static double l2sq_scaled_double(const float *a, double sa, const float *b, double sb,
                                 size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) {
    double d = (double)LD(a + i) * sa - (double)LD(b + i) * sb;
    s += d * d;
  }
  return s;
}

double fv_l2_squared(const float *a, const float *b, size_t n) {
  float s = K()->l2sq(a, b, n);
  return sum_ok(s) ? (double)s : l2sq_double(a, b, n);
}

void fv_l2_squared_rows(const float *q, const float *rows, size_t n_rows, size_t dim,
                        double *out) {
  const fv_kernels *k = K();
  float block[256];
  for (size_t start = 0; start < n_rows; start += 256) {
    size_t n = n_rows - start < 256 ? n_rows - start : 256;
    k->l2sq_rows(q, rows + start * dim, n, dim, block);
    for (size_t r = 0; r < n; r++)
      out[start + r] = sum_ok(block[r]) ? (double)block[r]
                                        : l2sq_double(rows + (start + r) * dim, q, dim);
  }
}

size_t fv_l2_squared_rows_within(const float *q, const float *rows, size_t n_rows, size_t dim,
                                 double bound, uint32_t *idx, double *keys) {
  const fv_kernels *k = K();
  float block[256];
  size_t m = 0;
  for (size_t start = 0; start < n_rows; start += 256) {
    size_t n = n_rows - start < 256 ? n_rows - start : 256;
    k->l2sq_rows(q, rows + start * dim, n, dim, block);
    for (size_t r = 0; r < n; r++) {
      double key;
      if (sum_ok(block[r])) {
        key = block[r];
        if (key > bound) continue; /* most rows */
      } else {
        key = l2sq_double(rows + (start + r) * dim, q, dim);
        if (key > bound) continue;
      }
      idx[m] = (uint32_t)(start + r);
      keys[m++] = key;
    }
  }
  return m;
}

/* ------------------------------------------------------------------------ */
/* Metrics                                                                   */

int fv_distance(fv_metric m, const float *a, const float *b, size_t n, double *out) {
  const fv_kernels *k = K();
  switch (m) {
    case FV_EUCLIDEAN_SQUARED:
      *out = fv_l2_squared(a, b, n);
      return FV_OK;
    case FV_EUCLIDEAN:
      *out = sqrt(fv_l2_squared(a, b, n));
      return FV_OK;
    case FV_NEGATIVE_INNER_PRODUCT: {
      float ab = k->dot(a, b, n);
      *out = -(isfinite(ab) ? (double)ab : dot_double(a, b, n));
      return FV_OK;
    }
    case FV_COSINE: {
      float ab, aa, bb;
      k->dot_norms(a, b, n, &ab, &aa, &bb);
      double dab = ab, daa = aa, dbb = bb;
      if (!sum_ok(aa) || !sum_ok(bb) || !isfinite(ab)) {
        dab = dot_double(a, b, n);
        daa = dot_double(a, a, n);
        dbb = dot_double(b, b, n);
      }
      if (daa == 0.0 || dbb == 0.0) return FV_ZERO_NORM;
      *out = 1.0 - dab / sqrt(daa * dbb);
      return FV_OK;
    }
    case FV_EUCLIDEAN_L2: {
      /* Normalise, then subtract: exact near zero, unlike sqrt(2 - 2 cos). */
      float aa = k->dot(a, a, n), bb = k->dot(b, b, n);
      if (sum_ok(aa) && sum_ok(bb)) {
        float sa = (float)(1.0 / sqrt((double)aa)), sb = (float)(1.0 / sqrt((double)bb));
        *out = sqrt((double)k->l2sq_scaled(a, sa, b, sb, n));
        return FV_OK;
      }
      double daa = dot_double(a, a, n), dbb = dot_double(b, b, n);
      if (daa == 0.0 || dbb == 0.0) return FV_ZERO_NORM;
      *out = sqrt(l2sq_scaled_double(a, 1.0 / sqrt(daa), b, 1.0 / sqrt(dbb), n));
      return FV_OK;
    }
  }
  return FV_MISUSE;
}

/* The scan of fv_top_k, shared with batch.c through scan.h. */

int scan_query_init(scan_query *s, fv_metric m, const float *q, size_t dim) {
  s->k = K();
  s->m = m;
  s->q = q;
  s->dim = dim;
  s->q_scale = 1.0f;
  s->q_norm2 = 0;
  s->q_extreme = 0;
  if (m == FV_COSINE || m == FV_EUCLIDEAN_L2) {
    float qq = s->k->dot(q, q, dim);
    s->q_extreme = !sum_ok(qq);
    s->q_norm2 = s->q_extreme ? dot_double(q, q, dim) : (double)qq;
    if (s->q_norm2 == 0.0) return FV_ZERO_NORM;
    s->q_scale = (float)(1.0 / sqrt(s->q_norm2));
  } else if (m != FV_EUCLIDEAN && m != FV_EUCLIDEAN_SQUARED &&
             m != FV_NEGATIVE_INNER_PRODUCT) {
    return FV_MISUSE;
  }
  return FV_OK;
}

/* Distance key of one row: the metric's value as float32 computes it (the
** squared distance for FV_EUCLIDEAN, finished by finish_key), or, at the
** extremes, the same taken in double. */
static inline int scan_row(const scan_query *s, const float *row, double *key) {
  switch (s->m) {
    case FV_EUCLIDEAN:
    case FV_EUCLIDEAN_SQUARED: {
      float d = s->k->l2sq(s->q, row, s->dim);
      *key = sum_ok(d) ? (double)d : l2sq_double(s->q, row, s->dim);
      return FV_OK;
    }
    case FV_NEGATIVE_INNER_PRODUCT: {
      float ab = s->k->dot(s->q, row, s->dim);
      *key = -(isfinite(ab) ? (double)ab : dot_double(s->q, row, s->dim));
      return FV_OK;
    }
    case FV_COSINE: {
      float ab, qq, rr;
      s->k->dot_norms(s->q, row, s->dim, &ab, &qq, &rr);
      if (s->q_extreme || !sum_ok(rr) || !isfinite(ab)) {
        double drr = dot_double(row, row, s->dim);
        if (drr == 0.0) return FV_ZERO_NORM;
        *key = 1.0 - dot_double(s->q, row, s->dim) / sqrt(s->q_norm2 * drr);
        return FV_OK;
      }
      *key = (float)(1.0 - (double)ab * s->q_scale / sqrt((double)rr));
      return FV_OK;
    }
    case FV_EUCLIDEAN_L2: {
      float rr = s->k->dot(row, row, s->dim);
      if (s->q_extreme || !sum_ok(rr)) {
        double drr = dot_double(row, row, s->dim);
        if (drr == 0.0) return FV_ZERO_NORM;
        *key = sqrt(l2sq_scaled_double(s->q, 1.0 / sqrt(s->q_norm2), row, 1.0 / sqrt(drr),
                                       s->dim));
        return FV_OK;
      }
      float rs = (float)(1.0 / sqrt((double)rr));
      *key = sqrtf(s->k->l2sq_scaled(s->q, s->q_scale, row, rs, s->dim));
      return FV_OK;
    }
  }
  return FV_MISUSE;
}

int fv_distances(fv_metric m, const float *query, const float *matrix, size_t n_rows,
                 size_t dim, float *out, int64_t *bad_row) {
  scan_query s;
  int rc = scan_query_init(&s, m, query, dim);
  if (rc != FV_OK) {
    if (bad_row) *bad_row = -1;
    return rc;
  }
  for (size_t r = 0; r < n_rows; r++) {
    double key;
    rc = scan_row(&s, matrix + r * dim, &key);
    if (rc != FV_OK) {
      if (bad_row) *bad_row = (int64_t)r;
      return rc;
    }
    out[r] = finish_key(m, key);
  }
  return FV_OK;
}

/* ------------------------------------------------------------------------ */
/* Bounded heap: a max-heap on (distance, id) of the k best seen so far.     */

static inline int heap_greater(const fv_heap *h, size_t i, size_t j) {
  return h->dist[i] > h->dist[j] || (h->dist[i] == h->dist[j] && h->id[i] > h->id[j]);
}

static inline void heap_swap(fv_heap *h, size_t i, size_t j) {
  double d = h->dist[i];
  int64_t id = h->id[i];
  h->dist[i] = h->dist[j];
  h->id[i] = h->id[j];
  h->dist[j] = d;
  h->id[j] = id;
  if (h->tag) {
    int64_t t = h->tag[i];
    h->tag[i] = h->tag[j];
    h->tag[j] = t;
  }
}

static void heap_sift_down(fv_heap *h, size_t i, size_t size) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, top = i;
    if (l < size && heap_greater(h, l, top)) top = l;
    if (r < size && heap_greater(h, r, top)) top = r;
    if (top == i) return;
    heap_swap(h, i, top);
    i = top;
  }
}

void fv_heap_init(fv_heap *h, size_t k, double *dist, int64_t *id, int64_t *tag,
                  size_t cap) {
  h->k = k;
  h->size = 0;
  h->cap = cap;
  h->dist = dist;
  h->id = id;
  h->tag = tag;
}

void fv_heap_push(fv_heap *h, double d, int64_t id, int64_t tag) {
  if (h->size < h->k) {
    size_t i = h->size++;
    h->dist[i] = d;
    h->id[i] = id;
    if (h->tag) h->tag[i] = tag;
    while (i > 0) {
      size_t parent = (i - 1) / 2;
      if (!heap_greater(h, i, parent)) break;
      heap_swap(h, i, parent);
      i = parent;
    }
    return;
  }
  if (h->k == 0 || !fv_heap_accepts(h, d, id)) return;
  h->dist[0] = d;
  h->id[0] = id;
  if (h->tag) h->tag[0] = tag;
  heap_sift_down(h, 0, h->size);
}

size_t fv_heap_sort(fv_heap *h) {
  /* Heapsort in place: repeatedly move the largest to the end. */
  for (size_t end = h->size; end > 1; end--) {
    heap_swap(h, 0, end - 1);
    heap_sift_down(h, 0, end - 1);
  }
  return h->size;
}

/* See scan.h. */
int scan_block(const scan_query *s, const float *matrix, size_t n_rows, int64_t first_id,
               fv_heap *h, int64_t *bad_row) {
  const size_t dim = s->dim;
  /* The heap's worst key, kept at hand once the heap is full: most rows
  ** lose to it. Ids grow with the rows, so a row tying with it loses too.
  ** NaN until then, which no key is >= (an infinite key still gets in). */
  double worst = h->size < h->k ? NAN : h->dist[0];
  if (s->m == FV_EUCLIDEAN || s->m == FV_EUCLIDEAN_SQUARED) {
    /* One kernel call per block of rows, the row kernel inlined. */
    float block[256];
    for (size_t start = 0; start < n_rows; start += 256) {
      size_t n = n_rows - start < 256 ? n_rows - start : 256;
      s->k->l2sq_rows(s->q, matrix + start * dim, n, dim, block);
      for (size_t r = 0; r < n; r++) {
        double d = block[r];
        if (d >= worst && sum_ok(block[r])) continue;
        if (!sum_ok(block[r])) { /* rare: overflow, underflow, NaN */
          d = l2sq_double(s->q, matrix + (start + r) * dim, dim);
          if (d != d) {
            if (bad_row) *bad_row = (int64_t)(start + r);
            return FV_NAN;
          }
        }
        int64_t id = first_id + (int64_t)(start + r);
        if (fv_heap_accepts(h, d, id)) {
          fv_heap_push(h, d, id, 0);
          if (h->size == h->k) worst = h->dist[0];
        }
      }
    }
    return FV_OK;
  }
  for (size_t r = 0; r < n_rows; r++) {
    double d;
    int rc = scan_row(s, matrix + r * dim, &d);
    if (rc == FV_OK && d != d) rc = FV_NAN;
    if (rc != FV_OK) {
      if (bad_row) *bad_row = (int64_t)r;
      return rc;
    }
    if (d >= worst) continue;
    int64_t id = first_id + (int64_t)r;
    if (fv_heap_accepts(h, d, id)) {
      fv_heap_push(h, d, id, 0);
      if (h->size == h->k) worst = h->dist[0];
    }
  }
  return FV_OK;
}

int fv_top_k(fv_metric m, const float *query, const float *matrix, size_t n_rows,
             size_t dim, size_t k, int64_t *out_idx, float *out_dist, size_t *n_found,
             int64_t *bad_row) {
  double small[256], *dist = small;
  scan_query s;
  fv_heap h;
  *n_found = 0;
  if (k == 0) return FV_MISUSE;
  if (k > n_rows) k = n_rows;
  int rc = scan_query_init(&s, m, query, dim);
  if (rc != FV_OK) {
    if (bad_row) *bad_row = -1;
    return rc;
  }
  if (k > sizeof small / sizeof small[0]) {
    dist = k > SIZE_MAX / sizeof(double) ? NULL : (double *)malloc(k * sizeof(double));
    if (!dist) return FV_NOMEM;
  }
  fv_heap_init(&h, k, dist, out_idx, NULL, k);
  rc = scan_block(&s, matrix, n_rows, 0, &h, bad_row);
  if (rc == FV_OK) {
    *n_found = fv_heap_sort(&h);
    for (size_t i = 0; i < *n_found; i++) out_dist[i] = finish_key(m, dist[i]);
  }
  if (dist != small) free(dist);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* JSON arrays of numbers                                                    */

static size_t skip_ws(const char *s, size_t i, size_t len) {
  while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
  return i;
}

/* Length of a JSON number at s[i..len), or 0 if there is none. */
static size_t json_number_len(const char *s, size_t i, size_t len) {
  size_t j = i;
  if (j < len && s[j] == '-') j++;
  if (j >= len) return 0;
  if (s[j] == '0') {
    j++;
  } else if (s[j] >= '1' && s[j] <= '9') {
    while (j < len && s[j] >= '0' && s[j] <= '9') j++;
  } else {
    return 0;
  }
  if (j < len && s[j] == '.') {
    j++;
    if (j >= len || s[j] < '0' || s[j] > '9') return 0;
    while (j < len && s[j] >= '0' && s[j] <= '9') j++;
  }
  if (j < len && (s[j] == 'e' || s[j] == 'E')) {
    j++;
    if (j < len && (s[j] == '+' || s[j] == '-')) j++;
    if (j >= len || s[j] < '0' || s[j] > '9') return 0;
    while (j < len && s[j] >= '0' && s[j] <= '9') j++;
  }
  return j - i;
}

long fv_parse_json(const char *text, size_t len, float *out, size_t cap, size_t *err_pos) {
  char buf[64];
  long count = 0;
  size_t i = skip_ws(text, 0, len);
  if (i >= len || text[i] != '[') goto fail;
  i = skip_ws(text, i + 1, len);
  if (i < len && text[i] == ']') {
    i = skip_ws(text, i + 1, len);
    if (i != len) goto fail;
    return 0;
  }
  for (;;) {
    size_t n = json_number_len(text, i, len);
    if (n == 0) goto fail;
    if (out) {
      if ((size_t)count >= cap) goto fail;
      /* strtof needs a terminated string: copy the number out. */
      char *num = n < sizeof(buf) ? buf : (char *)malloc(n + 1);
      if (!num) goto fail;
      memcpy(num, text + i, n);
      num[n] = 0;
      errno = 0;
      float v = strtof(num, NULL);
      int overflow = errno == ERANGE && (v == HUGE_VALF || v == -HUGE_VALF);
      if (num != buf) free(num);
      if (overflow) goto fail;
      out[count] = v;
    }
    count++;
    i = skip_ws(text, i + n, len);
    if (i >= len) goto fail;
    if (text[i] == ',') {
      i = skip_ws(text, i + 1, len);
      continue;
    }
    if (text[i] != ']') goto fail;
    i = skip_ws(text, i + 1, len);
    if (i != len) goto fail;
    return count;
  }
fail:
  if (err_pos) *err_pos = i;
  return -1;
}
