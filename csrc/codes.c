/*
** codes.c - float16 and int8 codes: encoding, decoding, and squared
** distances from a float32 query to coded rows, with the SIMD of the running
** CPU (the instruction set distance.c chose, through fv_isa_level).
**
** The distance kernels read the codes where they lie: an int8 row is a
** quarter of a float32 row's bytes, a float16 row half, so a scan of codes
** reads that much less memory, and nothing is written back as floats.
*/
#include "codes.h"

#include <math.h>
#include <string.h>

#include "scan.h"

/* As distance.c decides them (a test may compile both files as one). */
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(FV_X86)
#define FV_X86 1
#endif
#if defined(__aarch64__) && defined(__ARM_NEON) && !defined(FV_NEON)
#define FV_NEON 1
#endif
#ifdef FV_X86
#include <cpuid.h>
#include <immintrin.h>
#endif
#ifdef FV_NEON
#include <arm_neon.h>
#endif

/* ------------------------------------------------------------------------ */
/* Scalar conversions                                                        */

static uint16_t f32_to_f16(float f) {
  uint32_t x, sign, a;
  memcpy(&x, &f, 4);
  sign = (x >> 16) & 0x8000u;
  a = x & 0x7fffffffu;
  if (a > 0x7f800000u) return (uint16_t)(sign | 0x7e00u); /* NaN */
  if (a >= 0x477fe000u) return (uint16_t)(sign | 0x7bffu);  /* >= 65504 */
  if (a < 0x38800000u) {                                    /* below 2^-14: subnormal */
    float v, t, fr;
    uint32_t m;
    memcpy(&v, &a, 4);
    t = v * 16777216.0f; /* exact: units of 2^-24 */
    m = (uint32_t)t;
    fr = t - (float)m;
    if (fr > 0.5f || (fr == 0.5f && (m & 1u))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t h = ((((a >> 23) - 127 + 15) << 10) | ((a & 0x7fffffu) >> 13));
  uint32_t rem = a & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) h++;
  return (uint16_t)(sign | h);
}

static inline float f16_to_f32(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  float f;
  if (e == 0) {
    f = (float)m * (1.0f / 16777216.0f);
    return sign ? -f : f;
  }
  x = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e - 15 + 127) << 23) | (m << 13);
  memcpy(&f, &x, 4);
  return f;
}

/* Codes may sit at any byte offset: loads through memcpy. */
static inline uint16_t LD16(const unsigned char *p) {
  uint16_t v;
  memcpy(&v, p, 2);
  return v;
}
static inline float LDF(const float *p) {
  float v;
  memcpy(&v, p, 4);
  return v;
}

void fv_codes_encode(int kind, const float *params, const float *src, size_t n, size_t dim,
                     void *dst) {
  unsigned char *o = dst;
  if (kind == FV_CODE_F16) {
    for (size_t i = 0; i < n * dim; i++) {
      uint16_t h = f32_to_f16(LDF(src + i));
      memcpy(o + 2 * i, &h, 2);
    }
  } else if (kind == FV_CODE_I8) {
    for (size_t r = 0; r < n; r++)
      for (size_t j = 0; j < dim; j++) {
        float c = (LDF(src + r * dim + j) - params[j]) / params[dim + j];
        /* NaN goes to 0: only the exact re-ranking sees the true value. */
        o[r * dim + j] = !(c > 0) ? 0 : c >= 255 ? 255 : (unsigned char)(c + 0.5f);
      }
  }
}

void fv_codes_query(int kind, const float *params, const float *q, size_t dim, float *prep) {
  for (size_t j = 0; j < dim; j++) prep[j] = LDF(q + j) - (kind == FV_CODE_I8 ? params[j] : 0);
}

/* ------------------------------------------------------------------------ */
/* Portable kernels                                                          */

static void decode_i8_scalar(const float *lo, const float *scale, const unsigned char *s,
                             size_t n, float *dst) {
  for (size_t j = 0; j < n; j++) dst[j] = lo[j] + scale[j] * (float)s[j];
}

static void decode_f16_scalar(const unsigned char *s, size_t n, float *dst) {
  for (size_t j = 0; j < n; j++) dst[j] = f16_to_f32(LD16(s + 2 * j));
}

static float l2sq_i8_scalar(const float *scale, const float *qp, const unsigned char *c,
                            size_t dim) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t j = 0;
  for (; j + 4 <= dim; j += 4) {
    float d0 = scale[j] * (float)c[j] - qp[j], d1 = scale[j + 1] * (float)c[j + 1] - qp[j + 1];
    float d2 = scale[j + 2] * (float)c[j + 2] - qp[j + 2];
    float d3 = scale[j + 3] * (float)c[j + 3] - qp[j + 3];
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; j < dim; j++) {
    float d = scale[j] * (float)c[j] - qp[j];
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

static float l2sq_f16_scalar(const float *q, const unsigned char *c, size_t dim) {
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  size_t j = 0;
  for (; j + 4 <= dim; j += 4) {
    float d0 = f16_to_f32(LD16(c + 2 * j)) - q[j];
    float d1 = f16_to_f32(LD16(c + 2 * j + 2)) - q[j + 1];
    float d2 = f16_to_f32(LD16(c + 2 * j + 4)) - q[j + 2];
    float d3 = f16_to_f32(LD16(c + 2 * j + 6)) - q[j + 3];
    s0 += d0 * d0;
    s1 += d1 * d1;
    s2 += d2 * d2;
    s3 += d3 * d3;
  }
  for (; j < dim; j++) {
    float d = f16_to_f32(LD16(c + 2 * j)) - q[j];
    s0 += d * d;
  }
  return (s0 + s1) + (s2 + s3);
}

/* ------------------------------------------------------------------------ */
/* AVX2 + FMA + F16C                                                         */
#ifdef FV_X86
#define CODES_AVX2 __attribute__((target("avx2,fma,f16c")))
#define CODES_AVX512 __attribute__((target("avx512f")))

CODES_AVX2 static inline float codes_hsum256(__m256 v) {
  __m128 lo = _mm256_castps256_ps128(v), hi = _mm256_extractf128_ps(v, 1);
  lo = _mm_add_ps(lo, hi);
  lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
  lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
  return _mm_cvtss_f32(lo);
}

/* 8 codes as floats. */
CODES_AVX2 static inline __m256 i8x8_avx2(const unsigned char *c) {
  __m128i b = _mm_loadl_epi64((const __m128i *)(const void *)c);
  return _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(b));
}
CODES_AVX2 static inline __m256 f16x8_avx2(const unsigned char *c) {
  return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(const void *)c));
}

CODES_AVX2 static void decode_i8_avx2(const float *lo, const float *scale, const unsigned char *s,
                                   size_t n, float *dst) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(dst + j, _mm256_fmadd_ps(_mm256_loadu_ps(scale + j), i8x8_avx2(s + j),
                                              _mm256_loadu_ps(lo + j)));
  for (; j < n; j++) dst[j] = lo[j] + scale[j] * (float)s[j];
}

CODES_AVX2 static void decode_f16_avx2(const unsigned char *s, size_t n, float *dst) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) _mm256_storeu_ps(dst + j, f16x8_avx2(s + 2 * j));
  for (; j < n; j++) dst[j] = f16_to_f32(LD16(s + 2 * j));
}

CODES_AVX2 static float l2sq_i8_avx2(const float *scale, const float *qp, const unsigned char *c,
                                  size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    __m256 d0 = _mm256_fmsub_ps(_mm256_loadu_ps(scale + j), i8x8_avx2(c + j),
                                _mm256_loadu_ps(qp + j));
    __m256 d1 = _mm256_fmsub_ps(_mm256_loadu_ps(scale + j + 8), i8x8_avx2(c + j + 8),
                                _mm256_loadu_ps(qp + j + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  for (; j + 8 <= dim; j += 8) {
    __m256 d = _mm256_fmsub_ps(_mm256_loadu_ps(scale + j), i8x8_avx2(c + j),
                               _mm256_loadu_ps(qp + j));
    s0 = _mm256_fmadd_ps(d, d, s0);
  }
  float s = codes_hsum256(_mm256_add_ps(s0, s1));
  for (; j < dim; j++) {
    float d = scale[j] * (float)c[j] - qp[j];
    s += d * d;
  }
  return s;
}

CODES_AVX2 static float l2sq_f16_avx2(const float *q, const unsigned char *c, size_t dim) {
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  size_t j = 0;
  for (; j + 16 <= dim; j += 16) {
    __m256 d0 = _mm256_sub_ps(f16x8_avx2(c + 2 * j), _mm256_loadu_ps(q + j));
    __m256 d1 = _mm256_sub_ps(f16x8_avx2(c + 2 * j + 16), _mm256_loadu_ps(q + j + 8));
    s0 = _mm256_fmadd_ps(d0, d0, s0);
    s1 = _mm256_fmadd_ps(d1, d1, s1);
  }
  for (; j + 8 <= dim; j += 8) {
    __m256 d = _mm256_sub_ps(f16x8_avx2(c + 2 * j), _mm256_loadu_ps(q + j));
    s0 = _mm256_fmadd_ps(d, d, s0);
  }
  float s = codes_hsum256(_mm256_add_ps(s0, s1));
  for (; j < dim; j++) {
    float d = f16_to_f32(LD16(c + 2 * j)) - q[j];
    s += d * d;
  }
  return s;
}

/* Two rows at a time, each summed exactly as l2sq_i8_avx2 / l2sq_f16_avx2 sum
** it (same lanes, same order: the same bits), the parameters and the query
** loaded once for both. Widths with a scalar tail go row by row. */
CODES_AVX2 static void l2sq_i8_rows_avx2(const float *scale, const float *qp,
                                         const unsigned char *c, size_t n, size_t dim,
                                         float *out) {
  size_t r = 0;
  if (dim % 8 == 0)
    for (; r + 2 <= n; r += 2) {
      const unsigned char *c0 = c + r * dim, *c1 = c0 + dim;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
      size_t j = 0;
      for (; j + 16 <= dim; j += 16) {
        __m256 sa = _mm256_loadu_ps(scale + j), sb = _mm256_loadu_ps(scale + j + 8);
        __m256 qa = _mm256_loadu_ps(qp + j), qb = _mm256_loadu_ps(qp + j + 8);
        __m256 d0 = _mm256_fmsub_ps(sa, i8x8_avx2(c0 + j), qa);
        __m256 d1 = _mm256_fmsub_ps(sb, i8x8_avx2(c0 + j + 8), qb);
        __m256 e0 = _mm256_fmsub_ps(sa, i8x8_avx2(c1 + j), qa);
        __m256 e1 = _mm256_fmsub_ps(sb, i8x8_avx2(c1 + j + 8), qb);
        a0 = _mm256_fmadd_ps(d0, d0, a0);
        a1 = _mm256_fmadd_ps(d1, d1, a1);
        b0 = _mm256_fmadd_ps(e0, e0, b0);
        b1 = _mm256_fmadd_ps(e1, e1, b1);
      }
      for (; j + 8 <= dim; j += 8) {
        __m256 sa = _mm256_loadu_ps(scale + j), qa = _mm256_loadu_ps(qp + j);
        __m256 d = _mm256_fmsub_ps(sa, i8x8_avx2(c0 + j), qa);
        __m256 e = _mm256_fmsub_ps(sa, i8x8_avx2(c1 + j), qa);
        a0 = _mm256_fmadd_ps(d, d, a0);
        b0 = _mm256_fmadd_ps(e, e, b0);
      }
      out[r] = codes_hsum256(_mm256_add_ps(a0, a1));
      out[r + 1] = codes_hsum256(_mm256_add_ps(b0, b1));
    }
  for (; r < n; r++) out[r] = l2sq_i8_avx2(scale, qp, c + r * dim, dim);
}

CODES_AVX2 static void l2sq_f16_rows_avx2(const float *q, const unsigned char *c, size_t n,
                                          size_t dim, float *out) {
  size_t r = 0;
  if (dim % 8 == 0)
    for (; r + 2 <= n; r += 2) {
      const unsigned char *c0 = c + r * 2 * dim, *c1 = c0 + 2 * dim;
      __m256 a0 = _mm256_setzero_ps(), a1 = _mm256_setzero_ps();
      __m256 b0 = _mm256_setzero_ps(), b1 = _mm256_setzero_ps();
      size_t j = 0;
      for (; j + 16 <= dim; j += 16) {
        __m256 qa = _mm256_loadu_ps(q + j), qb = _mm256_loadu_ps(q + j + 8);
        __m256 d0 = _mm256_sub_ps(f16x8_avx2(c0 + 2 * j), qa);
        __m256 d1 = _mm256_sub_ps(f16x8_avx2(c0 + 2 * j + 16), qb);
        __m256 e0 = _mm256_sub_ps(f16x8_avx2(c1 + 2 * j), qa);
        __m256 e1 = _mm256_sub_ps(f16x8_avx2(c1 + 2 * j + 16), qb);
        a0 = _mm256_fmadd_ps(d0, d0, a0);
        a1 = _mm256_fmadd_ps(d1, d1, a1);
        b0 = _mm256_fmadd_ps(e0, e0, b0);
        b1 = _mm256_fmadd_ps(e1, e1, b1);
      }
      for (; j + 8 <= dim; j += 8) {
        __m256 qa = _mm256_loadu_ps(q + j);
        __m256 d = _mm256_sub_ps(f16x8_avx2(c0 + 2 * j), qa);
        __m256 e = _mm256_sub_ps(f16x8_avx2(c1 + 2 * j), qa);
        a0 = _mm256_fmadd_ps(d, d, a0);
        b0 = _mm256_fmadd_ps(e, e, b0);
      }
      out[r] = codes_hsum256(_mm256_add_ps(a0, a1));
      out[r + 1] = codes_hsum256(_mm256_add_ps(b0, b1));
    }
  for (; r < n; r++) out[r] = l2sq_f16_avx2(q, c + r * 2 * dim, dim);
}

/* AVX-512F: 16 codes a step, the rest as AVX2 would (AVX-512F implies both). */
CODES_AVX512 static inline __m512 i8x16_avx512(const unsigned char *c) {
  return _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(_mm_loadu_si128((const __m128i *)(const void *)c)));
}
CODES_AVX512 static inline __m512 f16x16_avx512(const unsigned char *c) {
  return _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)(const void *)c));
}

CODES_AVX512 static void decode_i8_avx512(const float *lo, const float *scale,
                                       const unsigned char *s, size_t n, float *dst) {
  size_t j = 0;
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(dst + j, _mm512_fmadd_ps(_mm512_loadu_ps(scale + j), i8x16_avx512(s + j),
                                              _mm512_loadu_ps(lo + j)));
  for (; j < n; j++) dst[j] = lo[j] + scale[j] * (float)s[j];
}

CODES_AVX512 static void decode_f16_avx512(const unsigned char *s, size_t n, float *dst) {
  size_t j = 0;
  for (; j + 16 <= n; j += 16) _mm512_storeu_ps(dst + j, f16x16_avx512(s + 2 * j));
  for (; j < n; j++) dst[j] = f16_to_f32(LD16(s + 2 * j));
}

CODES_AVX512 static float l2sq_i8_avx512(const float *scale, const float *qp,
                                      const unsigned char *c, size_t dim) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + 32 <= dim; j += 32) {
    __m512 d0 = _mm512_fmsub_ps(_mm512_loadu_ps(scale + j), i8x16_avx512(c + j),
                                _mm512_loadu_ps(qp + j));
    __m512 d1 = _mm512_fmsub_ps(_mm512_loadu_ps(scale + j + 16), i8x16_avx512(c + j + 16),
                                _mm512_loadu_ps(qp + j + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; j + 16 <= dim; j += 16) {
    __m512 d = _mm512_fmsub_ps(_mm512_loadu_ps(scale + j), i8x16_avx512(c + j),
                               _mm512_loadu_ps(qp + j));
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; j < dim; j++) {
    float d = scale[j] * (float)c[j] - qp[j];
    s += d * d;
  }
  return s;
}

CODES_AVX512 static float l2sq_f16_avx512(const float *q, const unsigned char *c, size_t dim) {
  __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
  size_t j = 0;
  for (; j + 32 <= dim; j += 32) {
    __m512 d0 = _mm512_sub_ps(f16x16_avx512(c + 2 * j), _mm512_loadu_ps(q + j));
    __m512 d1 = _mm512_sub_ps(f16x16_avx512(c + 2 * j + 32), _mm512_loadu_ps(q + j + 16));
    s0 = _mm512_fmadd_ps(d0, d0, s0);
    s1 = _mm512_fmadd_ps(d1, d1, s1);
  }
  for (; j + 16 <= dim; j += 16) {
    __m512 d = _mm512_sub_ps(f16x16_avx512(c + 2 * j), _mm512_loadu_ps(q + j));
    s0 = _mm512_fmadd_ps(d, d, s0);
  }
  float s = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  for (; j < dim; j++) {
    float d = f16_to_f32(LD16(c + 2 * j)) - q[j];
    s += d * d;
  }
  return s;
}
/* Four rows at a time, each summed exactly as l2sq_i8_avx512 /
** l2sq_f16_avx512 sum it (the same bits), the parameters and the query
** loaded once for the four. Widths with a scalar tail go row by row. */
#define ROWS4_AVX512(ELEM)                                                          \
  __m512 a0 = _mm512_setzero_ps(), a1 = _mm512_setzero_ps();                        \
  __m512 b0 = _mm512_setzero_ps(), b1 = _mm512_setzero_ps();                        \
  __m512 e0 = _mm512_setzero_ps(), e1 = _mm512_setzero_ps();                        \
  __m512 g0 = _mm512_setzero_ps(), g1 = _mm512_setzero_ps();                        \
  size_t j = 0;                                                                     \
  for (; j + 32 <= dim; j += 32) {                                                  \
    __m512 d;                                                                       \
    d = ELEM(c0, j), a0 = _mm512_fmadd_ps(d, d, a0);                                \
    d = ELEM(c0, j + 16), a1 = _mm512_fmadd_ps(d, d, a1);                           \
    d = ELEM(c1, j), b0 = _mm512_fmadd_ps(d, d, b0);                                \
    d = ELEM(c1, j + 16), b1 = _mm512_fmadd_ps(d, d, b1);                           \
    d = ELEM(c2, j), e0 = _mm512_fmadd_ps(d, d, e0);                                \
    d = ELEM(c2, j + 16), e1 = _mm512_fmadd_ps(d, d, e1);                           \
    d = ELEM(c3, j), g0 = _mm512_fmadd_ps(d, d, g0);                                \
    d = ELEM(c3, j + 16), g1 = _mm512_fmadd_ps(d, d, g1);                           \
  }                                                                                 \
  for (; j + 16 <= dim; j += 16) {                                                  \
    __m512 d;                                                                       \
    d = ELEM(c0, j), a0 = _mm512_fmadd_ps(d, d, a0);                                \
    d = ELEM(c1, j), b0 = _mm512_fmadd_ps(d, d, b0);                                \
    d = ELEM(c2, j), e0 = _mm512_fmadd_ps(d, d, e0);                                \
    d = ELEM(c3, j), g0 = _mm512_fmadd_ps(d, d, g0);                                \
  }                                                                                 \
  out[r] = _mm512_reduce_add_ps(_mm512_add_ps(a0, a1));                             \
  out[r + 1] = _mm512_reduce_add_ps(_mm512_add_ps(b0, b1));                         \
  out[r + 2] = _mm512_reduce_add_ps(_mm512_add_ps(e0, e1));                         \
  out[r + 3] = _mm512_reduce_add_ps(_mm512_add_ps(g0, g1));

#define I8_ELEM(p, at)                                                              \
  _mm512_fmsub_ps(_mm512_loadu_ps(scale + (at)), i8x16_avx512((p) + (at)),          \
                  _mm512_loadu_ps(qp + (at)))
#define F16_ELEM(p, at) _mm512_sub_ps(f16x16_avx512((p) + 2 * (at)), _mm512_loadu_ps(q + (at)))

CODES_AVX512 static void l2sq_i8_rows_avx512(const float *scale, const float *qp,
                                             const unsigned char *c, size_t n, size_t dim,
                                             float *out) {
  size_t r = 0;
  if (dim % 16 == 0)
    for (; r + 4 <= n; r += 4) {
      const unsigned char *c0 = c + r * dim, *c1 = c0 + dim, *c2 = c1 + dim, *c3 = c2 + dim;
      ROWS4_AVX512(I8_ELEM)
    }
  for (; r < n; r++) out[r] = l2sq_i8_avx512(scale, qp, c + r * dim, dim);
}

CODES_AVX512 static void l2sq_f16_rows_avx512(const float *q, const unsigned char *c, size_t n,
                                              size_t dim, float *out) {
  size_t r = 0;
  if (dim % 16 == 0)
    for (; r + 4 <= n; r += 4) {
      const unsigned char *c0 = c + r * 2 * dim, *c1 = c0 + 2 * dim, *c2 = c1 + 2 * dim,
                          *c3 = c2 + 2 * dim;
      ROWS4_AVX512(F16_ELEM)
    }
  for (; r < n; r++) out[r] = l2sq_f16_avx512(q, c + r * 2 * dim, dim);
}
#undef ROWS4_AVX512
#undef I8_ELEM
#undef F16_ELEM
#endif /* FV_X86 */

/* ------------------------------------------------------------------------ */
/* NEON (ARM64 baseline, half-precision conversions included)                */
#ifdef FV_NEON
/* 8 int8 codes as two float vectors. */
static inline void i8x8_neon(const unsigned char *c, float32x4_t *lo, float32x4_t *hi) {
  uint16x8_t w = vmovl_u8(vld1_u8(c));
  *lo = vcvtq_f32_u32(vmovl_u16(vget_low_u16(w)));
  *hi = vcvtq_f32_u32(vmovl_u16(vget_high_u16(w)));
}
/* 8 float16 codes as two float vectors (byte loads: any alignment). */
static inline void f16x8_neon(const unsigned char *c, float32x4_t *lo, float32x4_t *hi) {
  float16x8_t h = vreinterpretq_f16_u8(vld1q_u8(c));
  *lo = vcvt_f32_f16(vget_low_f16(h));
  *hi = vcvt_high_f32_f16(h);
}

static void decode_i8_neon(const float *lo, const float *scale, const unsigned char *s,
                           size_t n, float *dst) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    float32x4_t a, b;
    i8x8_neon(s + j, &a, &b);
    vst1q_f32(dst + j, vfmaq_f32(vld1q_f32(lo + j), vld1q_f32(scale + j), a));
    vst1q_f32(dst + j + 4, vfmaq_f32(vld1q_f32(lo + j + 4), vld1q_f32(scale + j + 4), b));
  }
  for (; j < n; j++) dst[j] = lo[j] + scale[j] * (float)s[j];
}

static void decode_f16_neon(const unsigned char *s, size_t n, float *dst) {
  size_t j = 0;
  for (; j + 8 <= n; j += 8) {
    float32x4_t a, b;
    f16x8_neon(s + 2 * j, &a, &b);
    vst1q_f32(dst + j, a);
    vst1q_f32(dst + j + 4, b);
  }
  for (; j < n; j++) dst[j] = f16_to_f32(LD16(s + 2 * j));
}

static float l2sq_i8_neon(const float *scale, const float *qp, const unsigned char *c,
                          size_t dim) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  size_t j = 0;
  for (; j + 8 <= dim; j += 8) {
    float32x4_t a, b;
    i8x8_neon(c + j, &a, &b);
    /* s*c - qp, one rounding: fma(-qp) written as -(qp - s*c). */
    float32x4_t d0 = vnegq_f32(vfmsq_f32(vld1q_f32(qp + j), vld1q_f32(scale + j), a));
    float32x4_t d1 = vnegq_f32(vfmsq_f32(vld1q_f32(qp + j + 4), vld1q_f32(scale + j + 4), b));
    s0 = vfmaq_f32(s0, d0, d0);
    s1 = vfmaq_f32(s1, d1, d1);
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; j < dim; j++) {
    float d = scale[j] * (float)c[j] - qp[j];
    s += d * d;
  }
  return s;
}

static float l2sq_f16_neon(const float *q, const unsigned char *c, size_t dim) {
  float32x4_t s0 = vdupq_n_f32(0), s1 = vdupq_n_f32(0);
  size_t j = 0;
  for (; j + 8 <= dim; j += 8) {
    float32x4_t a, b;
    f16x8_neon(c + 2 * j, &a, &b);
    float32x4_t d0 = vsubq_f32(a, vld1q_f32(q + j)), d1 = vsubq_f32(b, vld1q_f32(q + j + 4));
    s0 = vfmaq_f32(s0, d0, d0);
    s1 = vfmaq_f32(s1, d1, d1);
  }
  float s = vaddvq_f32(vaddq_f32(s0, s1));
  for (; j < dim; j++) {
    float d = f16_to_f32(LD16(c + 2 * j)) - q[j];
    s += d * d;
  }
  return s;
}
#endif /* FV_NEON */

/* ------------------------------------------------------------------------ */
/* Dispatch: the instruction set distance.c chose                            */

typedef struct code_kernels {
  const char *name;
  void (*decode_i8)(const float *, const float *, const unsigned char *, size_t, float *);
  void (*decode_f16)(const unsigned char *, size_t, float *);
  float (*l2sq_i8)(const float *, const float *, const unsigned char *, size_t);
  float (*l2sq_f16)(const float *, const unsigned char *, size_t);
  /* n rows at once, each as the row kernel above sums it. */
  void (*l2sq_i8_rows)(const float *, const float *, const unsigned char *, size_t, size_t,
                       float *);
  void (*l2sq_f16_rows)(const float *, const unsigned char *, size_t, size_t, float *);
} code_kernels;

/* A row at a time, for the instruction sets without a kernel of several. */
#define DEFINE_CODE_ROWS(suffix)                                                       \
  static void l2sq_i8_rows_##suffix(const float *scale, const float *qp,               \
                                    const unsigned char *c, size_t n, size_t dim,      \
                                    float *out) {                                      \
    for (size_t r = 0; r < n; r++) out[r] = l2sq_i8_##suffix(scale, qp, c + r * dim, dim); \
  }                                                                                    \
  static void l2sq_f16_rows_##suffix(const float *q, const unsigned char *c, size_t n, \
                                     size_t dim, float *out) {                         \
    for (size_t r = 0; r < n; r++) out[r] = l2sq_f16_##suffix(q, c + r * 2 * dim, dim); \
  }
DEFINE_CODE_ROWS(scalar)
#ifdef FV_NEON
DEFINE_CODE_ROWS(neon)
#endif

static const code_kernels codes_scalar = {"scalar",           decode_i8_scalar,
                                          decode_f16_scalar,  l2sq_i8_scalar,
                                          l2sq_f16_scalar,    l2sq_i8_rows_scalar,
                                          l2sq_f16_rows_scalar};
#ifdef FV_X86
static const code_kernels codes_avx2 = {"avx2",           decode_i8_avx2,   decode_f16_avx2,
                                        l2sq_i8_avx2,     l2sq_f16_avx2,    l2sq_i8_rows_avx2,
                                        l2sq_f16_rows_avx2};
static const code_kernels codes_avx512 = {"avx512",           decode_i8_avx512,
                                          decode_f16_avx512,  l2sq_i8_avx512,
                                          l2sq_f16_avx512,    l2sq_i8_rows_avx512,
                                          l2sq_f16_rows_avx512};
#endif
#ifdef FV_NEON
static const code_kernels codes_neon = {"neon",           decode_i8_neon, decode_f16_neon,
                                        l2sq_i8_neon,     l2sq_f16_neon,  l2sq_i8_rows_neon,
                                        l2sq_f16_rows_neon};
#endif

/* The kernels of instruction set `level` (as fv_isa_level numbers it), or
** NULL when they are not built or the CPU lacks them. */
#ifdef FV_X86
/* F16C from CPUID leaf 1 (older clang's __builtin_cpu_supports does not know it). */
static int cpu_has_f16c(void) {
  unsigned int a, b, c, d;
  return __get_cpuid(1, &a, &b, &c, &d) && (c & bit_F16C) != 0;
}
#endif

static const code_kernels *codes_for(int level) {
  if (level == 0) return &codes_scalar;
#ifdef FV_X86
  __builtin_cpu_init();
  if (level == 1 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
      cpu_has_f16c())
    return &codes_avx2;
  if (level == 2 && __builtin_cpu_supports("avx512f")) return &codes_avx512;
#endif
#ifdef FV_NEON
  if (level == 3) return &codes_neon;
#endif
  return NULL;
}

/* Chosen again whenever distance.c's choice changes (fv_force_scalar). */
static const code_kernels *volatile active_codes = NULL;
static volatile int active_level = -1;

static inline const code_kernels *CK(void) {
  int level = fv_isa_level();
  const code_kernels *k = active_codes;
  if (k && level == active_level) return k;
  k = codes_for(level);
  if (!k) k = &codes_scalar;
  active_codes = k;
  active_level = level;
  return k;
}

void fv_codes_decode(int kind, const float *params, const void *src, size_t n, size_t dim,
                     float *dst) {
  const code_kernels *k = CK();
  const unsigned char *s = src;
  if (kind == FV_CODE_F16) {
    k->decode_f16(s, n * dim, dst);
  } else if (kind == FV_CODE_I8) {
    for (size_t r = 0; r < n; r++) k->decode_i8(params, params + dim, s + r * dim, dim, dst + r * dim);
  }
}

void fv_codes_l2sq_rows(int kind, const float *params, const float *prep, const void *codes,
                        size_t n_rows, size_t dim, float *out) {
  const code_kernels *k = CK();
  const unsigned char *c = codes;
  if (kind == FV_CODE_F16)
    k->l2sq_f16_rows(prep, c, n_rows, dim, out);
  else if (kind == FV_CODE_I8)
    k->l2sq_i8_rows(params + dim, prep, c, n_rows, dim, out);
}
