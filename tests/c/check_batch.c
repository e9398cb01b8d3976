/*
** check_batch.c - fv_top_k_batch, fv_assign_nearest and fv_kmeans against
** fv_top_k, for every screen kernel this CPU runs and both sets of distance
** kernels (the best and the portable ones).
**
** Build: cc -Icsrc tests/c/check_batch.c csrc/distance.c csrc/kmeans.c -lm
** Run:   ./check_batch [cases]   (exits non-zero at the first disagreement)
**
** It includes batch.c to reach top_k_batch_with and the screen kernels.
*/
#include "batch.c"

#include <stdio.h>

#include "kmeans.h"

static unsigned long long state = 88172645463325252ULL;
static unsigned long long next(void) { /* xorshift64 */
  state ^= state << 13;
  state ^= state >> 7;
  state ^= state << 17;
  return state;
}
static float uniform(void) { return (float)((next() >> 40) / 8388608.0 - 1.0); }

#define FAIL(...)            \
  do {                       \
    printf(__VA_ARGS__);     \
    printf("\n");            \
    return 1;                \
  } while (0)

typedef struct named_kernels {
  const char *name;
  screen_kernels kernels;
} named_kernels;

static size_t screen_kernel_sets(named_kernels *out) {
  size_t n = 0;
  out[n++] = (named_kernels){"portable", {panel_dots_portable, kept_rows_portable}};
#ifdef FV_BATCH_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    out[n++] = (named_kernels){"avx2", {panel_dots_avx2, kept_rows_avx2}};
  if (__builtin_cpu_supports("avx512f"))
    out[n++] = (named_kernels){"avx512", {panel_dots_avx512, kept_rows_avx512}};
#endif
  return n;
}

/* The error fv_top_k_batch must report: a zero-norm query first (the lowest),
** else the lowest bad row and the lowest query failing at it. */
typedef struct expected_error {
  int rc;
  int64_t query, row;
} expected_error;

static void note_error(expected_error *e, int rc, int64_t q, int64_t row) {
  int better;
  if (e->rc == FV_OK) better = 1;
  else if (row < 0) better = e->row >= 0;             /* query errors come first */
  else better = e->row >= 0 && row < e->row;          /* then the lowest row */
  if (better) *e = (expected_error){rc, q, row};
}

/* One batch against fv_top_k query by query (cut at max_distance). */
static int check_case(screen_kernels kernels, int m, const float *queries, size_t nq,
                      const float *matrix, size_t n, size_t dim, size_t k, double max_distance,
                      const char *what) {
  int64_t *idx = malloc(nq * k * sizeof *idx), *one_idx = malloc(k * sizeof *one_idx);
  float *dist = malloc(nq * k * sizeof *dist), *one_dist = malloc(k * sizeof *one_dist);
  size_t *found = malloc(nq * sizeof *found), one_found;
  int64_t bad_q, bad_r, one_bad;
  int status = 0;
  int rc = top_k_batch_with(kernels, (fv_metric)m, queries, nq, matrix, n, dim, k, max_distance,
                            idx, dist, found, &bad_q, &bad_r);
  expected_error want = {FV_OK, -1, -1};
  for (size_t q = 0; q < nq && status == 0; q++) {
    int r = fv_top_k((fv_metric)m, queries + q * dim, matrix, n, dim, k, one_idx, one_dist,
                     &one_found, &one_bad);
    if (r != FV_OK) {
      note_error(&want, r, (int64_t)q, one_bad);
      continue;
    }
    if (want.rc != FV_OK || rc != FV_OK) continue;
    size_t keep = 0;
    while (keep < one_found && (double)one_dist[keep] <= max_distance) keep++;
    if (found[q] != keep || memcmp(one_idx, idx + q * k, keep * sizeof *idx) != 0 ||
        memcmp(one_dist, dist + q * k, keep * sizeof *dist) != 0) {
      printf("%s metric %d query %zu (n=%zu dim=%zu k=%zu): %zu rows, fv_top_k %zu\n", what, m,
             q, n, dim, k, found[q], keep);
      for (size_t i = 0; i < keep && i < 10; i++)
        printf("  %lld %.9g | %lld %.9g\n", (long long)one_idx[i], one_dist[i],
               (long long)idx[q * k + i], dist[q * k + i]);
      status = 1;
    }
    for (size_t i = keep; i < k && status == 0; i++)
      if (idx[q * k + i] != -1 || dist[q * k + i] != INFINITY) {
        printf("%s metric %d query %zu: slot %zu is not padding\n", what, m, q, i);
        status = 1;
      }
  }
  if (status == 0 && (rc != want.rc || (rc != FV_OK && (bad_q != want.query || bad_r != want.row)))) {
    printf("%s metric %d: error %d (query %lld, row %lld), expected %d (query %lld, row %lld)\n",
           what, m, rc, (long long)bad_q, (long long)bad_r, want.rc, (long long)want.query,
           (long long)want.row);
    status = 1;
  }
  free(idx);
  free(one_idx);
  free(dist);
  free(one_dist);
  free(found);
  return status;
}

static const size_t DIMS[] = {1, 2, 3, 5, 8, 16, 17, 31, 64, 127, 128, 129, 300, 1024};

/* Scales of the extreme modes: sums of squares that overflow float32
** (1e20, 1e30), that the screen passes over (1e-20, 1e-30: norms below its
** floor), and euclidean sums of rows it screens that fall below float32's
** safe range (1e-16, 1e-17), where the scan takes them in double. */
static const float EXTREME[] = {1e30f, 1e20f, 1e19f, 1e-15f, 1e-16f, 1e-17f, 1e-20f, 1e-30f};

static float extreme_scale(void) {
  return EXTREME[next() % (sizeof EXTREME / sizeof EXTREME[0])];
}

/* A max_distance for metric m: mostly the distance of a pair of the data
** (a boundary the cut must place exactly), else INFINITY. */
static double pair_distance(int m, const float *q, size_t nq, const float *x, size_t n,
                            size_t dim) {
  float d;
  int64_t bad;
  if (n == 0 || next() % 4 == 0) return INFINITY;
  if (fv_distances((fv_metric)m, q + (next() % nq) * dim, x + (next() % n) * dim, 1, dim, &d,
                   &bad) != FV_OK || d != d)
    return INFINITY;
  return (double)d;
}

/* Random shapes and data designed to hit ties, duplicates, near ties, tiny
** and huge values, NaN, infinity and zero vectors, and rows at the extremes
** of float32 (modes 8 to 11), alone and mixed with ordinary ones. */
static int check_random_batches(screen_kernels kernels, const char *name, int cases) {
  for (int it = 0; it < cases; it++) {
    size_t dim = DIMS[next() % (sizeof DIMS / sizeof DIMS[0])];
    size_t n = next() % (it % 5 == 4 ? 2000 : 200);
    size_t nq = 1 + next() % (it % 7 == 6 ? 150 : 40);
    size_t k = 1 + next() % 12;
    if (next() % 5 == 0) k = n + 1 + next() % 3;
    float *x = malloc((n + 1) * dim * sizeof *x), *q = malloc(nq * dim * sizeof *q);
    int mode = it % 12; /* a few cases already cover every kind */
    size_t distinct = 1 + next() % 5;
    for (size_t i = 0; i < n * dim; i++) x[i] = uniform();
    for (size_t i = 0; i < nq * dim; i++) q[i] = uniform();
    if (mode == 1) { /* small integers: many exact ties */
      for (size_t i = 0; i < n * dim; i++) x[i] = (float)(next() % 3);
      for (size_t i = 0; i < nq * dim; i++) q[i] = (float)(next() % 3);
    }
    if (mode == 2) /* duplicate rows, queries among them */
      for (size_t r = 0; r < n; r++) memcpy(x + r * dim, x + (r % distinct) * dim, dim * 4);
    if ((mode == 2 || mode == 5) && n > 0)
      for (size_t i = 0; i < nq; i++) memcpy(q + i * dim, x + (next() % n) * dim, dim * 4);
    if (mode == 5) /* near ties */
      for (size_t i = 0; i < nq; i++) q[i * dim] += 1e-7f * (float)(next() % 3);
    if (mode == 3)
      for (size_t i = 0; i < n * dim; i++) x[i] *= 1e-21f;
    if (mode == 4)
      for (size_t i = 0; i < n * dim; i++) x[i] *= 1e18f;
    if (mode == 6 && n > 0) {
      x[(next() % n) * dim + next() % dim] = next() % 2 ? NAN : INFINITY;
      if (next() % 3 == 0) memset(x + (next() % n) * dim, 0, dim * 4);
    }
    if (mode == 7) {
      size_t bad = next() % nq;
      if (next() % 2) q[bad * dim + next() % dim] = NAN;
      else memset(q + bad * dim, 0, dim * 4);
    }
    if (mode == 8) { /* every vector at one extreme scale */
      float scale = extreme_scale();
      for (size_t i = 0; i < n * dim; i++) x[i] *= scale;
      for (size_t i = 0; i < nq * dim; i++) q[i] *= scale;
    }
    if (mode == 9) /* each row at its own scale, ordinary ones among them */
      for (size_t r = 0; r < n; r++) {
        float scale = next() % 2 ? 1.0f : extreme_scale();
        for (size_t j = 0; j < dim; j++) x[r * dim + j] *= scale;
      }
    if (mode == 10) { /* rows and queries at mixed scales */
      for (size_t r = 0; r < n; r++) {
        float scale = next() % 3 ? 1.0f : extreme_scale();
        for (size_t j = 0; j < dim; j++) x[r * dim + j] *= scale;
      }
      for (size_t i = 0; i < nq; i++) {
        float scale = next() % 3 ? 1.0f : extreme_scale();
        for (size_t j = 0; j < dim; j++) q[i * dim + j] *= scale;
      }
    }
    if (mode == 11 && n > 0) { /* tiny rows, queries a few ulps off some of them */
      float scale = EXTREME[3 + next() % 3];
      for (size_t i = 0; i < n * dim; i++) x[i] *= scale;
      for (size_t i = 0; i < nq; i++) {
        memcpy(q + i * dim, x + (next() % n) * dim, dim * 4);
        for (size_t j = 0; j < dim; j++)
          q[i * dim + j] = nextafterf(q[i * dim + j], next() % 2 ? INFINITY : -INFINITY);
      }
    }
    double max_distance = next() % 3 == 0 ? (double)(uniform() + 1.0f) * (mode == 4 ? 1e18 : 1.0)
                                          : INFINITY;
    for (int m = FV_EUCLIDEAN_SQUARED; m <= FV_NEGATIVE_INNER_PRODUCT; m++) {
      double md = m == FV_NEGATIVE_INNER_PRODUCT ? -max_distance : max_distance;
      if (mode >= 8) md = pair_distance(m, q, nq, x, n, dim);
      if (check_case(kernels, m, q, nq, x, n, dim, k, md, name)) {
        printf("  (case %d, mode %d, nq %zu)\n", it, mode, nq);
        return 1;
      }
    }
    free(x);
    free(q);
  }
  return 0;
}

/* fv_assign_nearest against fv_top_k with k = 1. */
static int check_assign(void) {
  enum { N = 500, K = 37, DIM = 24 };
  static float data[N * DIM], centroids[K * DIM];
  for (size_t i = 0; i < N * DIM; i++) data[i] = uniform();
  for (size_t i = 0; i < K * DIM; i++) centroids[i] = uniform();
  memcpy(data, centroids, DIM * sizeof(float)); /* a row exactly on a centroid */
  for (int m = FV_EUCLIDEAN_SQUARED; m <= FV_NEGATIVE_INNER_PRODUCT; m++) {
    int64_t assign[N], bad_row, bad_centroid, one;
    float dist[N], one_dist;
    size_t found;
    if (fv_assign_nearest((fv_metric)m, centroids, K, data, N, DIM, assign, dist, &bad_row,
                          &bad_centroid) != FV_OK)
      FAIL("fv_assign_nearest failed, metric %d", m);
    for (size_t i = 0; i < N; i++) {
      fv_top_k((fv_metric)m, data + i * DIM, centroids, K, DIM, 1, &one, &one_dist, &found,
               &bad_row);
      if (assign[i] != one || memcmp(&dist[i], &one_dist, sizeof one_dist) != 0)
        FAIL("fv_assign_nearest metric %d row %zu: %lld, fv_top_k %lld", m, i,
             (long long)assign[i], (long long)one);
    }
  }
  return 0;
}

/* fv_kmeans: well-separated clusters come back whole, a seed repeats itself. */
static int check_kmeans(void) {
  enum { CLUSTERS = 12, PER = 30, DIM = 16, N = CLUSTERS * PER };
  static float centers[CLUSTERS * DIM], data[N * DIM], c1[CLUSTERS * DIM], c2[CLUSTERS * DIM];
  for (size_t i = 0; i < CLUSTERS * DIM; i++) centers[i] = 10.0f * uniform();
  for (size_t i = 0; i < N; i++)
    for (size_t j = 0; j < DIM; j++)
      data[i * DIM + j] = centers[(i % CLUSTERS) * DIM + j] + 0.01f * uniform();
  const fv_metric metrics[] = {FV_EUCLIDEAN, FV_EUCLIDEAN_SQUARED, FV_COSINE, FV_EUCLIDEAN_L2};
  for (size_t mi = 0; mi < 4; mi++) {
    fv_metric m = metrics[mi];
    int64_t a1[N], a2[N], bad;
    for (uint64_t seed = 0; seed < 4; seed++) {
      if (fv_kmeans(m, data, N, DIM, CLUSTERS, 50, seed, c1, a1, &bad) != FV_OK ||
          fv_kmeans(m, data, N, DIM, CLUSTERS, 50, seed, c2, a2, &bad) != FV_OK)
        FAIL("fv_kmeans failed, metric %d", m);
      if (memcmp(c1, c2, sizeof c1) || memcmp(a1, a2, sizeof a1))
        FAIL("fv_kmeans metric %d seed %llu: two runs differ", m, (unsigned long long)seed);
      /* Rows i and j share a cluster exactly when they share a center. */
      int64_t label_of[CLUSTERS];
      for (size_t c = 0; c < CLUSTERS; c++) label_of[c] = a1[c];
      for (size_t i = 0; i < N; i++)
        if (a1[i] != label_of[i % CLUSTERS])
          FAIL("fv_kmeans metric %d seed %llu: row %zu left its cluster", m,
               (unsigned long long)seed, i);
      for (size_t c = 0; c < CLUSTERS; c++)
        for (size_t d = c + 1; d < CLUSTERS; d++)
          if (label_of[c] == label_of[d]) FAIL("fv_kmeans metric %d: two clusters merged", m);
    }
  }
  int64_t assign[N], bad;
  if (fv_kmeans(FV_EUCLIDEAN, data, 5, DIM, 6, 10, 0, c1, assign, &bad) != FV_MISUSE)
    FAIL("fv_kmeans accepted k > n");
  if (fv_kmeans(FV_NEGATIVE_INNER_PRODUCT, data, N, DIM, 3, 10, 0, c1, assign, &bad) != FV_MISUSE)
    FAIL("fv_kmeans accepted inner product");
  data[7 * DIM + 3] = NAN;
  if (fv_kmeans(FV_EUCLIDEAN, data, N, DIM, 3, 10, 0, c1, assign, &bad) != FV_NAN || bad != 7)
    FAIL("fv_kmeans missed the NaN of row 7");
  memset(data + 5 * DIM, 0, DIM * sizeof(float));
  if (fv_kmeans(FV_COSINE, data, N, DIM, 3, 10, 0, c1, assign, &bad) != FV_ZERO_NORM || bad != 5)
    FAIL("fv_kmeans missed the zero row 5");
  return 0;
}

int main(int argc, char **argv) {
  int cases = argc > 1 ? atoi(argv[1]) : 300;
  named_kernels sets[3];
  size_t n_sets = screen_kernel_sets(sets);
  for (int portable = 0; portable < 2; portable++) {
    fv_force_scalar(portable);
    for (size_t s = 0; s < n_sets; s++) {
      char name[64];
      snprintf(name, sizeof name, "screen %s, distances %s", sets[s].name, fv_isa());
      if (check_random_batches(sets[s].kernels, name, cases)) return 1;
      printf("%s: ok\n", name);
    }
    if (check_assign() || check_kmeans()) return 1;
  }
  fv_force_scalar(0);
  printf("batch ok\n");
  return 0;
}
