/*
** batch.c - exact top-k of many queries in one pass over a matrix.
**
** The answer is fv_top_k's for each query, bit for bit: every key that can
** reach a heap is computed by scan_block (scan.h), the scan fv_top_k runs,
** into the same heap of double keys, and a heap's final content does not
** depend on the order of its pushes. What changes is how the rows that
** cannot reach a heap are recognised:
**
** 1. A panel of PANEL rows is transposed (dimension-major) into a scratch
**    buffer that stays in L1, once per tile of queries.
** 2. A register-blocked kernel computes the approximate dot products of four
**    queries with the whole panel: per dimension, one broadcast per query and
**    one fused multiply-add per PANEL/16 rows -- the shape of a matrix
**    product, not of one distance after another, so it runs at the CPU's
**    multiply-add rate instead of its load rate.
** 3. From the dot product and the two norms, a lower bound of the exact
**    key follows (the rounding of any summation order of `dim` terms is
**    bounded: Higham, Accuracy and Stability of Numerical Algorithms, 3.1).
**    A row whose lower bound is above the query's current k-th key (or
**    above max_distance) cannot enter its heap and is skipped; every other
**    row gets its exact key from scan_block. Rows whose values could
**    overflow, or are NaN, infinite or of (nearly) zero norm, are never
**    skipped, so errors are found exactly where fv_top_k finds them.
**
** Small batches (fewer than MIN_SCREEN_QUERIES) skip the screen and scan
** each row block with scan_block directly, still one block for all queries.
*/
#include "batch.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "scan.h"

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
/* The screen: a row r is kept (gets its exact key) unless
**     dot(q, r) < C_q + S_q * P_r,
** a bound derived per metric below from the query's current limit (its k-th
** key once the heap is full, or the max_distance), with P_r a row term
** (squared norm or norm) and NaN in P_r or C_q meaning "always keep".
**
** With u = 2^-24 and gamma = (dim + 1) u / (1 - (dim + 1) u) the bound of
** any float summation of dim + 1 terms, G = 2 (dim + 32) u covers gamma, the
** extra roundings of each metric's formula, and the float rounding of the
** screen itself, with a factor 2 to spare. Every inequality below is one a
** skipped row's exact key satisfies, so skipped rows are exactly those
** fv_heap_accepts would refuse.
**
** Keys are doubles (scan.h): the float32 value, or the same sum taken again
** in double where the float32 one overflowed or came near underflow (below
** 2^-100). A pair the screen may skip has both squared norms in
** [NORM2_MIN, NORM2_MAX] (the euclidean metrics: at most NORM2_MAX), and
** with gamma < 0.005 (G < 0.01) no float32 sum of such a pair overflows or
** falls below 2^-100, save one: the squared distance of a query and a row
** closer than about 2^-50. So every skippable key is the float32 value the bounds below were
** derived for, except that euclidean one, which the scan takes in double:
** there it errs by at most dim 2^-53 relatively and never by underflow,
** inside what the float32 bound allows, so the same lower bound holds. The
** limit may be any double (a heap's worst key may come from a row taken in
** double); the bounds are computed from it in double. max_distance is
** compared with the finished float32 distance: a skipped euclidean_squared
** key taken in double exceeds its limit by a factor of at least
** 1 + G - dim 2^-53 > 1 + 2u, so it still does once rounded to float32.     */

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

/* (C_q, S_q) for a query of squared norm qq whose rows must have a key
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

/* The key a row must not exceed to matter to a heap: its k-th key once
** full, and in any case the max_distance as a key. */
static double heap_limit(const fv_heap *h, double limit_key) {
  if (h->size < h->k) return limit_key;
  double top = h->dist[0];
  return top < limit_key ? top : limit_key;
}

/* max_distance as a key: squared for FV_EUCLIDEAN, with room for the
** rounding of the final sqrt to float32. */
static double key_limit(fv_metric m, double max_distance) {
  if (m != FV_EUCLIDEAN || max_distance == INFINITY) return max_distance;
  if (max_distance < 0) return -1.0;
  double t = max_distance * (1.0 + 0x1p-20);
  return t * t;
}

/* ------------------------------------------------------------------------ */
/* Batch state                                                               */

typedef struct batch {
  fv_metric m;
  const float *queries;
  const float *matrix;
  size_t n_rows, dim, k;
  size_t heap_k; /* entries a heap keeps: min(k, n_rows), as in fv_top_k */
  double max_distance, limit_key;
  int64_t *out_idx;
  float *out_dist;
  size_t *n_found;
  /* The tile of queries being scanned, [q0, q0 + n_tile): each query's scan
  ** state and heap (keys in `keys`, ids straight into out_idx). */
  size_t q0, n_tile;
  scan_query *scan;
  fv_heap *heap;
  double *keys;
  /* The first error: the lowest bad row, then the lowest query failing there.
  ** Pairs at or after err_row need not be scanned any more. */
  int err;
  size_t err_row, err_query;
} batch;

static void record_error(batch *b, int rc, size_t row, size_t q) {
  b->err = rc;
  b->err_row = row;
  b->err_query = q;
}

/* Make queries [q0, q1) the tile: scan states and empty heaps. */
static void start_tile(batch *b, size_t q0, size_t q1) {
  b->q0 = q0;
  b->n_tile = q1 - q0;
  for (size_t t = 0; t < b->n_tile; t++) {
    size_t q = q0 + t;
    /* The query passed scan_query_init before: it passes again. */
    (void)scan_query_init(&b->scan[t], b->m, b->queries + q * b->dim, b->dim);
    fv_heap_init(&b->heap[t], b->heap_k, b->keys + t * b->heap_k, b->out_idx + q * b->k, NULL,
                 b->heap_k);
  }
}

/* Sort each heap of the tile, finish its keys into float32 distances as
** fv_top_k does, cut at max_distance, pad. */
static void finish_tile(batch *b) {
  for (size_t t = 0; t < b->n_tile; t++) {
    size_t q = b->q0 + t;
    fv_heap *h = &b->heap[t];
    float *dist = b->out_dist + q * b->k;
    size_t n = fv_heap_sort(h);
    for (size_t i = 0; i < n; i++) dist[i] = finish_key(b->m, h->dist[i]);
    while (n > 0 && !((double)dist[n - 1] <= b->max_distance)) n--;
    for (size_t i = n; i < b->k; i++) {
      h->id[i] = -1;
      dist[i] = INFINITY;
    }
    b->n_found[q] = n;
  }
}

/* Direct path: rows [first, first + n) of every query of the tile through
** scan_block; max_distance is applied when the heaps are finished. */
static void scan_rows_direct(batch *b, size_t first, size_t n) {
  const float *block = b->matrix + first * b->dim;
  for (size_t t = 0; t < b->n_tile; t++) {
    if (b->err_row <= first) return;
    size_t rows = b->err_row - first < n ? b->err_row - first : n;
    int64_t row = -1;
    int rc = scan_block(&b->scan[t], block, rows, (int64_t)first, &b->heap[t], &row);
    if (rc != FV_OK) record_error(b, rc, first + (size_t)row, b->q0 + t);
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

static void refresh_bound(panel_work *w, const batch *b, size_t t) {
  query_bound(&w->s, w->qq[t], heap_limit(&b->heap[t], b->limit_key), &w->c[t], &w->sq[t]);
}

/* Exact keys for the kept rows of query t of the tile, into its heap. */
static void consider_rows(batch *b, panel_work *w, size_t t, size_t first, const float *a,
                          uint32_t keep) {
  fv_heap *h = &b->heap[t];
  while (keep) {
    size_t r = lowest_bit(keep);
    keep &= keep - 1;
    size_t row = first + r;
    if (row >= b->err_row) break;
    /* The bound may have tightened since the panel was screened. */
    if (a[r] < w->c[t] + w->sq[t] * w->term[r]) continue;
    size_t size = h->size;
    int64_t worst = size > 0 ? h->id[0] : -1, bad = -1;
    int rc = scan_block(&b->scan[t], b->matrix + row * b->dim, 1, (int64_t)row, h, &bad);
    if (rc != FV_OK) {
      record_error(b, rc, row, b->q0 + t);
      break;
    }
    if (h->size != size || (size > 0 && h->id[0] != worst)) refresh_bound(w, b, t);
  }
}

static void scan_panel_screened(batch *b, panel_work *w, size_t first, size_t n) {
  build_panel(w, b, first, n);
  float dots[QUAD][PANEL];
  for (size_t ta = 0; ta < b->n_tile; ta += QUAD) {
    if (b->err_row <= first) return;
    const float *qp[QUAD];
    for (size_t i = 0; i < QUAD; i++) {
      size_t t = ta + i < b->n_tile ? ta + i : b->n_tile - 1; /* pad with the last query */
      qp[i] = b->queries + (b->q0 + t) * b->dim;
    }
    w->kernels.dots(qp, w->panel, b->dim, dots);
    for (size_t i = 0; i < QUAD && ta + i < b->n_tile; i++) {
      size_t t = ta + i;
      uint32_t keep = w->kernels.kept(dots[i], w->term, w->c[t], w->sq[t], n);
      if (keep) consider_rows(b, w, t, first, dots[i], keep);
    }
  }
}

static int run_screened(batch *b, size_t n_queries, size_t tile, screen_kernels kernels) {
  size_t dim = b->dim;
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
    start_tile(b, q0, n_queries - q0 < tile ? n_queries : q0 + tile);
    for (size_t t = 0; t < b->n_tile; t++) {
      const float *query = b->queries + (q0 + t) * dim;
      double qq = 0.0;
      for (size_t j = 0; j < dim; j++) qq += (double)LD(query + j) * LD(query + j);
      w.qq[t] = qq;
      refresh_bound(&w, b, t);
    }
    for (size_t first = 0; first < b->err_row; first += PANEL) {
      size_t n = b->n_rows - first < PANEL ? b->n_rows - first : PANEL;
      scan_panel_screened(b, &w, first, n);
    }
    if (b->err == FV_OK) finish_tile(b);
  }
finish:
  free(w.panel);
  free(w.qq);
  free(w.c);
  free(w.sq);
  return rc;
}

static void run_direct(batch *b, size_t n_queries, size_t tile) {
  size_t block = ROW_BLOCK_BYTES / (b->dim * sizeof(float));
  if (block == 0) block = 1;
  for (size_t q0 = 0; q0 < n_queries; q0 += tile) {
    start_tile(b, q0, n_queries - q0 < tile ? n_queries : q0 + tile);
    for (size_t first = 0; first < b->err_row; first += block) {
      size_t n = b->n_rows - first < block ? b->n_rows - first : block;
      scan_rows_direct(b, first, n);
    }
    if (b->err == FV_OK) finish_tile(b);
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
    /* The metric and the query alone (zero norm), as fv_top_k checks them
    ** before its first row. */
    scan_query s;
    int rc = scan_query_init(&s, m, queries + q * dim, dim);
    if (rc != FV_OK) {
      *bad_query = (int64_t)q;
      return rc;
    }
  }
  if (n_queries == 0) return FV_OK;
  int screened = n_queries >= MIN_SCREEN_QUERIES;
  size_t tile = n_queries;
  if (screened) {
    tile = QUERY_TILE_BYTES / (dim * sizeof(float));
    if (tile < 64) tile = 64;
    if (tile > n_queries) tile = n_queries;
  }
  size_t heap_k = k < n_rows ? k : n_rows;
  batch b = {m, queries, matrix, n_rows, dim, k, heap_k, max_distance,
             key_limit(m, max_distance), out_idx, out_dist, n_found, 0, 0, NULL, NULL, NULL,
             FV_OK, n_rows, 0};
  int rc = FV_OK;
  /* tile * heap_k <= n_queries * k: no more keys than the caller's ids. */
  if (heap_k > SIZE_MAX / sizeof(double) / tile) return FV_NOMEM;
  b.scan = malloc(tile * sizeof *b.scan);
  b.heap = malloc(tile * sizeof *b.heap);
  b.keys = malloc((heap_k ? tile * heap_k : 1) * sizeof *b.keys);
  if (!b.scan || !b.heap || !b.keys) {
    rc = FV_NOMEM;
  } else if (screened) {
    rc = run_screened(&b, n_queries, tile, kernels);
  } else {
    run_direct(&b, n_queries, tile);
  }
  free(b.scan);
  free(b.heap);
  free(b.keys);
  if (rc != FV_OK) return rc;
  if (b.err != FV_OK) {
    *bad_query = (int64_t)b.err_query;
    *bad_row = (int64_t)b.err_row;
    return b.err;
  }
  return FV_OK;
}

int fv_top_k_batch(fv_metric m, const float *queries, size_t n_queries,
                   const float *matrix, size_t n_rows, size_t dim, size_t k,
                   double max_distance, int64_t *out_idx, float *out_dist,
                   size_t *n_found, int64_t *bad_query, int64_t *bad_row) {
  return top_k_batch_with(pick_screen_kernels(), m, queries, n_queries, matrix, n_rows, dim, k,
                          max_distance, out_idx, out_dist, n_found, bad_query, bad_row);
}
