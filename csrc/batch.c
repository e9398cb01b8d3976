/*
** batch.c - exact top-k of many queries in one pass over a matrix.
**
** The answer is fv_top_k's for each query, bit for bit: every distance that
** can reach a heap is computed by fv_scan_block, the function fv_top_k runs,
** and a heap's final content does not depend on the order of its pushes.
** What changes is how the rows that cannot reach a heap are recognised:
**
** 1. A panel of PANEL rows is transposed (dimension-major) into a scratch
**    buffer that stays in L1, once per tile of queries.
** 2. A register-blocked kernel computes the approximate dot products of four
**    queries with the whole panel: per dimension, one broadcast per query and
**    one fused multiply-add per PANEL/16 rows -- the shape of a matrix
**    product, not of one distance after another, so it runs at the CPU's
**    multiply-add rate instead of its load rate.
** 3. From the dot product and the two norms, a lower bound of the exact
**    distance follows (the rounding of any summation order of `dim` terms is
**    bounded: Higham, Accuracy and Stability of Numerical Algorithms, 3.1).
**    A row whose lower bound is above the query's current k-th distance (or
**    above max_distance) cannot enter its heap and is skipped; every other
**    row gets its exact distance from fv_scan_block. Rows whose values could
**    overflow, or are NaN, infinite or of (nearly) zero norm, are never
**    skipped, so errors are found exactly where fv_top_k finds them.
**
** Small batches (fewer than MIN_SCREEN_QUERIES) skip the screen and scan
** each row block with fv_scan_block directly, still one block for all queries.
*/
#include "batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define FV_BATCH_X86 1
#include <immintrin.h>
#define FV_AVX2 __attribute__((target("avx2,fma")))
#define FV_AVX512 __attribute__((target("avx512f")))
#endif

#define PANEL 32 /* rows per transposed panel */
#define QUAD 4   /* queries per kernel call */
/* Queries scanned against each panel before the next one is built: the tile
** stays in L2 (or L3), and the matrix is read once per tile. */
#define QUERY_TILE_BYTES (1024u * 1024u)
/* Rows per block of the direct path (small batches): fits in L1. */
#define ROW_BLOCK_BYTES (16u * 1024u)
/* Below this many queries, transposing each panel costs more than the screen
** saves (measured: the two paths cross between 8 and 16 queries). */
#define MIN_SCREEN_QUERIES 12
/* Norms beyond these are not screened (they could overflow, or divide by
** nearly nothing); their rows always get the exact distance. */
#define NORM2_MAX 1e30
#define NORM2_MIN 1e-30

/* Unaligned scalar load (the API takes pointers at any float offset). */
static inline float LD(const float *p) {
  float v;
  memcpy(&v, p, sizeof v);
  return v;
}

static inline unsigned lowest_bit(uint32_t x) {
#if defined(__GNUC__) || defined(__clang__)
  return (unsigned)__builtin_ctz(x);
#else
  unsigned i = 0;
  for (; !(x & 1u); x >>= 1) i++;
  return i;
#endif
}

/* ------------------------------------------------------------------------ */
/* Approximate dot products of QUAD queries with a transposed panel:
** out[i][r] = sum_j q[i][j] * panel[j * PANEL + r]. Any summation order is
** fine: only the error bound of the screen depends on it.                  */

typedef void (*panel_dots_fn)(const float *const q[QUAD], const float *panel, size_t dim,
                              float out[QUAD][PANEL]);
/* Bit r set when row r of n is kept: !(a[r] < c + s * term[r]) (see below). */
typedef uint32_t (*kept_rows_fn)(const float *a, const float *term, float c, float s, size_t n);

static void panel_dots_portable(const float *const q[QUAD], const float *panel, size_t dim,
                                float out[QUAD][PANEL]) {
  for (int i = 0; i < QUAD; i++)
    for (int r = 0; r < PANEL; r++) out[i][r] = 0.0f;
  for (size_t j = 0; j < dim; j++) {
    const float *p = panel + j * PANEL;
    for (int i = 0; i < QUAD; i++) {
      float qj = LD(q[i] + j);
      for (int r = 0; r < PANEL; r++) out[i][r] += qj * p[r];
    }
  }
}

#ifdef FV_BATCH_X86
FV_AVX2 static void panel_dots_avx2(const float *const q[QUAD], const float *panel, size_t dim,
                                    float out[QUAD][PANEL]) {
  /* Two halves of 16 rows: 8 accumulators of the 16 ymm registers. */
  for (int h = 0; h < PANEL; h += 16) {
    __m256 a00 = _mm256_setzero_ps(), a01 = _mm256_setzero_ps();
    __m256 a10 = _mm256_setzero_ps(), a11 = _mm256_setzero_ps();
    __m256 a20 = _mm256_setzero_ps(), a21 = _mm256_setzero_ps();
    __m256 a30 = _mm256_setzero_ps(), a31 = _mm256_setzero_ps();
    const float *p = panel + h;
    for (size_t j = 0; j < dim; j++, p += PANEL) {
      __m256 p0 = _mm256_loadu_ps(p), p1 = _mm256_loadu_ps(p + 8);
      __m256 b = _mm256_set1_ps(LD(q[0] + j));
      a00 = _mm256_fmadd_ps(b, p0, a00);
      a01 = _mm256_fmadd_ps(b, p1, a01);
      b = _mm256_set1_ps(LD(q[1] + j));
      a10 = _mm256_fmadd_ps(b, p0, a10);
      a11 = _mm256_fmadd_ps(b, p1, a11);
      b = _mm256_set1_ps(LD(q[2] + j));
      a20 = _mm256_fmadd_ps(b, p0, a20);
      a21 = _mm256_fmadd_ps(b, p1, a21);
      b = _mm256_set1_ps(LD(q[3] + j));
      a30 = _mm256_fmadd_ps(b, p0, a30);
      a31 = _mm256_fmadd_ps(b, p1, a31);
    }
    _mm256_storeu_ps(out[0] + h, a00);
    _mm256_storeu_ps(out[0] + h + 8, a01);
    _mm256_storeu_ps(out[1] + h, a10);
    _mm256_storeu_ps(out[1] + h + 8, a11);
    _mm256_storeu_ps(out[2] + h, a20);
    _mm256_storeu_ps(out[2] + h + 8, a21);
    _mm256_storeu_ps(out[3] + h, a30);
    _mm256_storeu_ps(out[3] + h + 8, a31);
  }
}

FV_AVX512 static void panel_dots_avx512(const float *const q[QUAD], const float *panel,
                                        size_t dim, float out[QUAD][PANEL]) {
  __m512 a00 = _mm512_setzero_ps(), a01 = _mm512_setzero_ps();
  __m512 a10 = _mm512_setzero_ps(), a11 = _mm512_setzero_ps();
  __m512 a20 = _mm512_setzero_ps(), a21 = _mm512_setzero_ps();
  __m512 a30 = _mm512_setzero_ps(), a31 = _mm512_setzero_ps();
  const float *p = panel;
  for (size_t j = 0; j < dim; j++, p += PANEL) {
    __m512 p0 = _mm512_loadu_ps(p), p1 = _mm512_loadu_ps(p + 16);
    __m512 b = _mm512_set1_ps(LD(q[0] + j));
    a00 = _mm512_fmadd_ps(b, p0, a00);
    a01 = _mm512_fmadd_ps(b, p1, a01);
    b = _mm512_set1_ps(LD(q[1] + j));
    a10 = _mm512_fmadd_ps(b, p0, a10);
    a11 = _mm512_fmadd_ps(b, p1, a11);
    b = _mm512_set1_ps(LD(q[2] + j));
    a20 = _mm512_fmadd_ps(b, p0, a20);
    a21 = _mm512_fmadd_ps(b, p1, a21);
    b = _mm512_set1_ps(LD(q[3] + j));
    a30 = _mm512_fmadd_ps(b, p0, a30);
    a31 = _mm512_fmadd_ps(b, p1, a31);
  }
  _mm512_storeu_ps(out[0], a00);
  _mm512_storeu_ps(out[0] + 16, a01);
  _mm512_storeu_ps(out[1], a10);
  _mm512_storeu_ps(out[1] + 16, a11);
  _mm512_storeu_ps(out[2], a20);
  _mm512_storeu_ps(out[2] + 16, a21);
  _mm512_storeu_ps(out[3], a30);
  _mm512_storeu_ps(out[3] + 16, a31);
}
#endif

static uint32_t kept_rows_portable(const float *a, const float *term, float c, float s,
                                   size_t n) {
  uint32_t keep = 0;
  for (size_t r = 0; r < n; r++)
    if (!(a[r] < c + s * term[r])) keep |= (uint32_t)1 << r;
  return keep;
}

#ifdef FV_BATCH_X86
FV_AVX2 static uint32_t kept_rows_avx2(const float *a, const float *term, float c, float s,
                                       size_t n) {
  __m256 vc = _mm256_set1_ps(c), vs = _mm256_set1_ps(s);
  uint32_t keep = 0;
  for (int h = 0; h < PANEL; h += 8) {
    __m256 lim = _mm256_fmadd_ps(vs, _mm256_loadu_ps(term + h), vc);
    __m256 k = _mm256_cmp_ps(_mm256_loadu_ps(a + h), lim, _CMP_NLT_UQ);
    keep |= (uint32_t)_mm256_movemask_ps(k) << h;
  }
  return n < PANEL ? keep & (((uint32_t)1 << n) - 1) : keep;
}

FV_AVX512 static uint32_t kept_rows_avx512(const float *a, const float *term, float c,
                                           float s, size_t n) {
  __m512 vc = _mm512_set1_ps(c), vs = _mm512_set1_ps(s);
  __m512 lim0 = _mm512_fmadd_ps(vs, _mm512_loadu_ps(term), vc);
  __m512 lim1 = _mm512_fmadd_ps(vs, _mm512_loadu_ps(term + 16), vc);
  uint32_t keep = (uint32_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(a), lim0, _CMP_NLT_UQ) |
                  (uint32_t)_mm512_cmp_ps_mask(_mm512_loadu_ps(a + 16), lim1, _CMP_NLT_UQ) << 16;
  return n < PANEL ? keep & (((uint32_t)1 << n) - 1) : keep;
}
#endif

typedef struct screen_kernels {
  panel_dots_fn dots;
  kept_rows_fn kept;
} screen_kernels;

/* The kernels that match the distance kernels in use: fv_force_scalar(1)
** makes the whole batch portable C, as it does fv_top_k. */
static screen_kernels pick_screen_kernels(void) {
  screen_kernels k = {panel_dots_portable, kept_rows_portable};
#ifdef FV_BATCH_X86
  const char *isa = fv_isa();
  if (strcmp(isa, "avx512") == 0) k = (screen_kernels){panel_dots_avx512, kept_rows_avx512};
  if (strcmp(isa, "avx2") == 0) k = (screen_kernels){panel_dots_avx2, kept_rows_avx2};
#endif
  return k;
}

/* ------------------------------------------------------------------------ */
/* The screen: a row r is kept (gets its exact distance) unless
**     dot(q, r) < C_q + S_q * P_r,
** a bound derived per metric below from the query's current limit (its k-th
** scan value once the heap is full, or the max_distance), with P_r a row
** term (squared norm or norm) and NaN in P_r or C_q meaning "always keep".
**
** With u = 2^-24 and gamma = (dim + 1) u / (1 - (dim + 1) u) the bound of
** any float summation of dim + 1 terms, G = 2 (dim + 32) u covers gamma, the
** extra roundings of each metric's formula, and the float rounding of the
** screen itself, with a factor 2 to spare. Every inequality below is one a
** skipped row's exact scan value satisfies, so skipped rows are exactly those
** fv_heap_accepts would refuse.                                              */

typedef struct screen {
  fv_metric m;
  size_t dim;
  double g;         /* G above */
  double abs_floor; /* absolute rounding of dim subnormal products */
  int enabled;      /* G small enough to give a useful bound */
} screen;

static void screen_init(screen *s, fv_metric m, size_t dim) {
  s->m = m;
  s->dim = dim;
  s->g = 2.0 * ((double)dim + 32.0) * 0x1p-24;
  s->abs_floor = ((double)dim + 1.0) * 0x1p-147;
  s->enabled = s->g < 0.01;
}

static int angular(fv_metric m) { return m == FV_COSINE || m == FV_EUCLIDEAN_L2; }

/* Row term P_r from the row's squared norm (double), or NaN: always keep. */
static float row_term(const screen *s, double rr) {
  if (!(rr <= NORM2_MAX) || (angular(s->m) && !(rr >= NORM2_MIN))) return NAN;
  return s->m == FV_EUCLIDEAN || s->m == FV_EUCLIDEAN_SQUARED ? (float)rr : (float)sqrt(rr);
}

/* (C_q, S_q) for a query of squared norm qq whose rows must have a scan value
** <= limit to matter (limit = +inf: every row matters). */
static void query_bound(const screen *s, double qq, double limit, float *c, float *sq) {
  double g = s->g, nq = sqrt(qq);
  if (!s->enabled || !(qq <= NORM2_MAX) || (angular(s->m) && !(qq >= NORM2_MIN)) ||
      isnan(limit)) {
    *c = NAN, *sq = 0.0f;
    return;
  }
  if (limit == INFINITY) {
    *c = -INFINITY, *sq = 0.0f;
    return;
  }
  switch (s->m) {
    case FV_EUCLIDEAN:
    case FV_EUCLIDEAN_SQUARED: {
      /* e >= ((1-G)(qq+rr) - 2a)(1-G) - 3 abs, since |a - q.r| <= gamma |q||r|
      ** <= gamma (qq+rr)/2 and e = |q-r|^2 (1 +- (gamma + 3u)). */
      double t = (limit + 3.0 * s->abs_floor) / (1.0 - g);
      *c = (float)(((1.0 - g) * qq - t) / 2.0);
      *sq = (float)((1.0 - g) / 2.0);
      return;
    }
    case FV_NEGATIVE_INNER_PRODUCT:
      /* e = -fl(q.r) >= -a - 2 gamma |q||r| - 2 abs. */
      *c = (float)(-(limit + 2.0 * s->abs_floor));
      *sq = (float)(-2.0 * g * nq);
      return;
    case FV_COSINE:
      /* e >= 1 - a/(|q||r|) - (3 gamma + 5u): the dot, both norms and the
      ** final rounding to float each err by gamma or a few u. */
      *c = 0.0f;
      *sq = (float)((1.0 - 3.0 * g - limit) * nq);
      return;
    case FV_EUCLIDEAN_L2: {
      /* e >= sqrt(2 - 2a/(|q||r|) - 2 gamma) - (2 gamma + 10u): normalising
      ** q and r errs by gamma/2 + 2u each, subtracting by 3u, summing by gamma. */
      double e2 = limit + 3.0 * g;
      *c = 0.0f;
      *sq = (float)((1.0 - 2.0 * g - e2 * e2 / 2.0) * nq);
      return;
    }
  }
  *c = NAN, *sq = 0.0f;
}

/* The scan value a row must not exceed to matter to a heap: its k-th value
** once full, and in any case the max_distance in scan form. */
static double heap_limit(const fv_heap *h, double limit_scan) {
  if (h->size < h->k) return limit_scan;
  double top = (double)h->dist[0];
  return top < limit_scan ? top : limit_scan;
}

/* max_distance in scan form: squared for FV_EUCLIDEAN, with room for the
** rounding of the final sqrtf. */
static double scan_limit(fv_metric m, double max_distance) {
  if (m != FV_EUCLIDEAN || max_distance == INFINITY) return max_distance;
  if (max_distance < 0) return -1.0;
  double t = max_distance * (1.0 + 0x1p-20);
  return t * t;
}

/* Distance of one row as fv_top_k computes it, in scan form. */
static int exact_scan_value(fv_metric m, const float *q, const float *row, size_t dim,
                            float *out) {
  fv_heap one;
  float d = 0.0f;
  int64_t id = 0, bad = 0;
  fv_heap_init(&one, 1, &d, &id);
  int rc = fv_scan_block(m, q, row, 1, dim, 0, &one, &bad);
  *out = d;
  return rc;
}

static float finished(fv_metric m, float scan_value) {
  return m == FV_EUCLIDEAN ? sqrtf(scan_value) : scan_value;
}

/* ------------------------------------------------------------------------ */
/* Batch state                                                               */

typedef struct batch {
  fv_metric m;
  const float *queries;
  const float *matrix;
  size_t n_rows, dim, k;
  double max_distance, limit_scan;
  int64_t *out_idx;
  float *out_dist;
  size_t *n_found; /* heap sizes while scanning */
  /* The first error: the lowest bad row, then the lowest query failing there.
  ** Pairs at or after err_row need not be scanned any more. */
  int err;
  size_t err_row, err_query;
} batch;

static fv_heap query_heap(const batch *b, size_t q) {
  fv_heap h;
  fv_heap_init(&h, b->k, b->out_dist + q * b->k, b->out_idx + q * b->k);
  h.size = b->n_found[q];
  return h;
}

static void record_error(batch *b, int rc, size_t row, size_t q) {
  b->err = rc;
  b->err_row = row;
  b->err_query = q;
}

/* Direct path: rows [first, first + n) of every query of [q0, q1) through
** fv_scan_block; max_distance is applied when the heaps are finished. */
static void scan_block_direct(batch *b, size_t q0, size_t q1, size_t first, size_t n) {
  const float *block = b->matrix + first * b->dim;
  for (size_t q = q0; q < q1; q++) {
    if (b->err_row <= first) return;
    size_t rows = b->err_row - first < n ? b->err_row - first : n;
    fv_heap h = query_heap(b, q);
    int64_t row = -1;
    int rc = fv_scan_block(b->m, b->queries + q * b->dim, block, rows, b->dim, (int64_t)first,
                           &h, &row);
    b->n_found[q] = h.size;
    if (rc != FV_OK) record_error(b, rc, first + (size_t)row, q);
  }
}

/* Screened path scratch: the transposed panel and per-query bounds. */
typedef struct panel_work {
  screen s;
  screen_kernels kernels;
  float *panel;  /* dim x PANEL, dimension-major */
  float term[PANEL];
  double *qq;    /* squared norm of each query of the tile */
  float *c, *sq; /* (C_q, S_q) of each query of the tile */
} panel_work;

static void build_panel(panel_work *w, const batch *b, size_t first, size_t n) {
  size_t dim = b->dim;
  float *panel = w->panel;
  for (size_t r = 0; r < n; r++) {
    const float *row = b->matrix + (first + r) * dim;
    for (size_t j = 0; j < dim; j++) panel[j * PANEL + r] = LD(row + j);
  }
  for (size_t j = 0; n < PANEL && j < dim; j++)
    for (size_t r = n; r < PANEL; r++) panel[j * PANEL + r] = 0.0f;
  /* Squared norms in double, one independent sum per row (vectorisable). */
  double rr[PANEL] = {0};
  for (size_t j = 0; j < dim; j++)
    for (size_t r = 0; r < PANEL; r++) rr[r] += (double)panel[j * PANEL + r] * panel[j * PANEL + r];
  for (size_t r = 0; r < PANEL; r++) w->term[r] = r < n ? row_term(&w->s, rr[r]) : NAN;
}

static void refresh_bound(panel_work *w, const batch *b, size_t q, size_t t) {
  fv_heap h = query_heap(b, q);
  query_bound(&w->s, w->qq[t], heap_limit(&h, b->limit_scan), &w->c[t], &w->sq[t]);
}

/* Exact distances for the kept rows of one query; updates its heap. */
static void consider_rows(batch *b, panel_work *w, size_t q, size_t t, size_t first,
                          const float *a, uint32_t keep) {
  const float *query = b->queries + q * b->dim;
  fv_heap h = query_heap(b, q);
  while (keep) {
    size_t r = lowest_bit(keep);
    keep &= keep - 1;
    size_t row = first + r;
    if (row >= b->err_row) break;
    /* The bound may have tightened since the panel was screened. */
    if (a[r] < w->c[t] + w->sq[t] * w->term[r]) continue;
    float d;
    int rc = exact_scan_value(b->m, query, b->matrix + row * b->dim, b->dim, &d);
    if (rc == FV_OK && d != d) rc = FV_NAN;
    if (rc != FV_OK) {
      record_error(b, rc, row, q);
      break;
    }
    if (!((double)finished(b->m, d) <= b->max_distance)) continue;
    if (!fv_heap_accepts(&h, d, (int64_t)row)) continue;
    fv_heap_push(&h, d, (int64_t)row);
    b->n_found[q] = h.size;
    refresh_bound(w, b, q, t);
  }
  b->n_found[q] = h.size;
}

static void scan_panel_screened(batch *b, panel_work *w, size_t q0, size_t q1, size_t first,
                                size_t n) {
  build_panel(w, b, first, n);
  float dots[QUAD][PANEL];
  for (size_t qa = q0; qa < q1; qa += QUAD) {
    if (b->err_row <= first) return;
    const float *qp[QUAD];
    for (size_t i = 0; i < QUAD; i++) {
      size_t q = qa + i < q1 ? qa + i : q1 - 1; /* pad with the last query */
      qp[i] = b->queries + q * b->dim;
    }
    w->kernels.dots(qp, w->panel, b->dim, dots);
    for (size_t i = 0; i < QUAD && qa + i < q1; i++) {
      size_t t = qa + i - q0;
      uint32_t keep = w->kernels.kept(dots[i], w->term, w->c[t], w->sq[t], n);
      if (keep) consider_rows(b, w, qa + i, t, first, dots[i], keep);
    }
  }
}

static int run_screened(batch *b, size_t n_queries, screen_kernels kernels) {
  size_t dim = b->dim;
  size_t tile = QUERY_TILE_BYTES / (dim * sizeof(float));
  if (tile < 64) tile = 64;
  if (tile > n_queries) tile = n_queries;
  panel_work w;
  screen_init(&w.s, b->m, dim);
  w.kernels = kernels;
  w.panel = malloc(dim * PANEL * sizeof(float));
  w.qq = malloc(tile * sizeof(double));
  w.c = malloc(tile * sizeof(float));
  w.sq = malloc(tile * sizeof(float));
  int rc = FV_OK;
  if (!w.panel || !w.qq || !w.c || !w.sq) {
    rc = FV_NOMEM;
    goto finish;
  }
  for (size_t q0 = 0; q0 < n_queries; q0 += tile) {
    size_t q1 = n_queries - q0 < tile ? n_queries : q0 + tile;
    for (size_t q = q0; q < q1; q++) {
      const float *query = b->queries + q * dim;
      double qq = 0.0;
      for (size_t j = 0; j < dim; j++) qq += (double)LD(query + j) * LD(query + j);
      w.qq[q - q0] = qq;
      refresh_bound(&w, b, q, q - q0);
    }
    for (size_t first = 0; first < b->err_row; first += PANEL) {
      size_t n = b->n_rows - first < PANEL ? b->n_rows - first : PANEL;
      scan_panel_screened(b, &w, q0, q1, first, n);
    }
  }
finish:
  free(w.panel);
  free(w.qq);
  free(w.c);
  free(w.sq);
  return rc;
}

static void run_direct(batch *b, size_t n_queries) {
  size_t block = ROW_BLOCK_BYTES / (b->dim * sizeof(float));
  if (block == 0) block = 1;
  for (size_t first = 0; first < b->err_row; first += block) {
    size_t n = b->n_rows - first < block ? b->n_rows - first : block;
    scan_block_direct(b, 0, n_queries, first, n);
  }
}

/* Sort each heap, turn scan values into distances, cut at max_distance, pad. */
static void finish_heaps(batch *b, size_t n_queries) {
  for (size_t q = 0; q < n_queries; q++) {
    fv_heap h = query_heap(b, q);
    size_t n = fv_heap_sort(&h);
    fv_finish_distances(b->m, h.dist, n);
    while (n > 0 && !((double)h.dist[n - 1] <= b->max_distance)) n--;
    for (size_t i = n; i < b->k; i++) {
      h.id[i] = -1;
      h.dist[i] = INFINITY;
    }
    b->n_found[q] = n;
  }
}

/* fv_top_k_batch with the screen's kernels given (tests run each of them). */
static int top_k_batch_with(screen_kernels kernels, fv_metric m, const float *queries,
                            size_t n_queries, const float *matrix, size_t n_rows, size_t dim,
                            size_t k, double max_distance, int64_t *out_idx, float *out_dist,
                            size_t *n_found, int64_t *bad_query, int64_t *bad_row) {
  *bad_query = -1;
  *bad_row = -1;
  if (k == 0 || dim == 0 || isnan(max_distance)) return FV_MISUSE;
  for (size_t q = 0; q < n_queries; q++) {
    /* Scanning no rows validates the metric and the query alone (zero norm),
    ** as fv_top_k does before its first row. */
    fv_heap h;
    int64_t row = -1;
    fv_heap_init(&h, k, out_dist + q * k, out_idx + q * k);
    int rc = fv_scan_block(m, queries + q * dim, matrix, 0, dim, 0, &h, &row);
    if (rc != FV_OK) {
      *bad_query = (int64_t)q;
      return rc;
    }
    n_found[q] = 0;
  }
  batch b = {m,       queries, matrix, n_rows, dim, k, max_distance,
             scan_limit(m, max_distance), out_idx, out_dist, n_found, FV_OK, n_rows, 0};
  if (n_queries >= MIN_SCREEN_QUERIES) {
    int rc = run_screened(&b, n_queries, kernels);
    if (rc != FV_OK) return rc;
  } else {
    run_direct(&b, n_queries);
  }
  if (b.err != FV_OK) {
    *bad_query = (int64_t)b.err_query;
    *bad_row = (int64_t)b.err_row;
    return b.err;
  }
  finish_heaps(&b, n_queries);
  return FV_OK;
}

int fv_top_k_batch(fv_metric m, const float *queries, size_t n_queries,
                   const float *matrix, size_t n_rows, size_t dim, size_t k,
                   double max_distance, int64_t *out_idx, float *out_dist,
                   size_t *n_found, int64_t *bad_query, int64_t *bad_row) {
  return top_k_batch_with(pick_screen_kernels(), m, queries, n_queries, matrix, n_rows, dim, k,
                          max_distance, out_idx, out_dist, n_found, bad_query, bad_row);
}
