/*
** kmeans.c - k-means for coarse quantisation; see kmeans.h for the contract.
**
** Every distance comes from facevec.h's kernels (seeding) or fv_top_k_batch
** (assignment); this file only decides where the centroids go. Sums are
** accumulated in double, in row order, and the random numbers come from
** splitmix64, so a seed gives the same centroids on every machine that runs
** the same kernels.
*/
#include "kmeans.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Rows of the k-means++ sample per centroid. */
#define SEED_SAMPLE_PER_CENTROID 16
/* Relative nudge that splits a centroid in two (as faiss does). */
#define SPLIT_EPS (1.0 / 1024.0)
/* Rounds of the final repair of empty clusters. */
#define REPAIR_ROUNDS 4

/* ------------------------------------------------------------------------ */
/* splitmix64: tiny, fast, and the same sequence on every platform.         */

typedef struct rng {
  uint64_t state;
} rng;

static uint64_t rng_next(rng *r) {
  uint64_t z = (r->state += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

/* Uniform in [0, 1). */
static double rng_unit(rng *r) { return (double)(rng_next(r) >> 11) * 0x1p-53; }

/* Uniform in [0, n), n >= 1. */
static size_t rng_below(rng *r, size_t n) {
  size_t i = (size_t)(rng_unit(r) * (double)n);
  return i < n ? i : n - 1;
}

/* ------------------------------------------------------------------------ */

/* Unaligned scalar load (the API takes pointers at any float offset). */
static inline float LD(const float *p) {
  float v;
  memcpy(&v, p, sizeof v);
  return v;
}

static int spherical(fv_metric m) { return m == FV_COSINE || m == FV_EUCLIDEAN_L2; }

static double norm2(const float *v, size_t dim) {
  double s = 0.0;
  for (size_t j = 0; j < dim; j++) s += (double)LD(v + j) * LD(v + j);
  return s;
}

/* dst = src, scaled to unit norm for spherical metrics. */
static void set_centroid(float *dst, const float *src, size_t dim, int unit) {
  double scale = unit ? 1.0 / sqrt(norm2(src, dim)) : 1.0;
  for (size_t j = 0; j < dim; j++) dst[j] = (float)(LD(src + j) * scale);
}

/* The first row that no k-means can use: NaN or infinity anywhere; a zero
** vector under a spherical metric. The distance kernels take a norm that
** float32 would underflow again in double, so for them, as here, only a
** vector of zeros has norm 0. */
static int check_rows(fv_metric m, const float *data, size_t n, size_t dim, int64_t *bad_row) {
  for (size_t i = 0; i < n; i++) {
    const float *row = data + i * dim;
    for (size_t j = 0; j < dim; j++) {
      if (!isfinite(LD(row + j))) {
        *bad_row = (int64_t)i;
        return FV_NAN;
      }
    }
    if (spherical(m) && norm2(row, dim) == 0.0) {
      *bad_row = (int64_t)i;
      return FV_ZERO_NORM;
    }
  }
  return FV_OK;
}

/* ------------------------------------------------------------------------ */
/* Seeding: k-means++ over a sample of the rows.                            */

static int seed_centroids(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
                          rng *r, float *centroids) {
  size_t m_rows = n < SEED_SAMPLE_PER_CENTROID * k ? n : SEED_SAMPLE_PER_CENTROID * k;
  /* Never empty (fv_kmeans checks n >= k >= 1); said for the compiler,
  ** which otherwise sees the sample read before it is written. */
  if (m_rows == 0) return FV_MISUSE;
  size_t *pick = malloc(n * sizeof *pick);
  float *sample = malloc(m_rows * dim * sizeof *sample);
  float *d = malloc(m_rows * sizeof *d);
  double *weight = malloc(m_rows * sizeof *weight);
  int rc = FV_OK;
  if (!pick || !sample || !d || !weight) {
    rc = FV_NOMEM;
    goto finish;
  }
  /* A partial Fisher-Yates shuffle draws the sample. */
  for (size_t i = 0; i < n; i++) pick[i] = i;
  for (size_t i = 0; i < m_rows && m_rows < n; i++) {
    size_t j = i + rng_below(r, n - i);
    size_t t = pick[i];
    pick[i] = pick[j];
    pick[j] = t;
  }
  for (size_t i = 0; i < m_rows; i++)
    memcpy(sample + i * dim, data + pick[i] * dim, dim * sizeof(float));

  /* Squared distances of the metric's geometry: the cosine distance is half
  ** the squared distance of the normalised vectors. */
  fv_metric dm = spherical(m) ? FV_COSINE : FV_EUCLIDEAN_SQUARED;
  size_t first = rng_below(r, m_rows);
  set_centroid(centroids, sample + first * dim, dim, spherical(m));
  int64_t bad = -1;
  rc = fv_distances(dm, sample + first * dim, sample, m_rows, dim, d, &bad);
  for (size_t i = 0; i < m_rows; i++) weight[i] = d[i] > 0.0f ? d[i] : 0.0;
  for (size_t c = 1; c < k && rc == FV_OK; c++) {
    double total = 0.0;
    for (size_t i = 0; i < m_rows; i++) total += weight[i];
    size_t chosen = 0;
    if (total > 0.0) {
      double target = rng_unit(r) * total, cum = 0.0;
      chosen = m_rows; /* the last row of positive weight, if rounding runs past */
      for (size_t i = 0; i < m_rows; i++) {
        if (weight[i] <= 0.0) continue;
        cum += weight[i];
        chosen = i;
        if (cum > target) break;
      }
    } else {
      /* Every sample row sits on a centroid already: duplicates. The empty
      ** clusters this leaves are repaired by the Lloyd steps. */
      chosen = rng_below(r, m_rows);
    }
    const float *row = sample + chosen * dim;
    set_centroid(centroids + c * dim, row, dim, spherical(m));
    rc = fv_distances(dm, row, sample, m_rows, dim, d, &bad);
    for (size_t i = 0; i < m_rows && rc == FV_OK; i++) {
      double w = d[i] > 0.0f ? d[i] : 0.0;
      if (w < weight[i]) weight[i] = w;
    }
  }
finish:
  free(pick);
  free(sample);
  free(d);
  free(weight);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Lloyd's update.                                                          */

/* Split the largest cluster (the lowest index among equals) to fill cluster
** `empty`; counts move as if half its rows went over. */
static void split_largest(float *centroids, size_t *counts, size_t k, size_t dim,
                          size_t empty, int unit) {
  size_t big = 0;
  for (size_t c = 1; c < k; c++)
    if (counts[c] > counts[big]) big = c;
  if (counts[big] < 2) return;
  float *a = centroids + empty * dim, *b = centroids + big * dim;
  for (size_t j = 0; j < dim; j++) {
    double v = b[j], up = v * (1.0 + SPLIT_EPS), down = v * (1.0 - SPLIT_EPS);
    a[j] = (float)(j % 2 == 0 ? up : down);
    b[j] = (float)(j % 2 == 0 ? down : up);
  }
  if (unit) {
    set_centroid(a, a, dim, 1);
    set_centroid(b, b, dim, 1);
  }
  counts[empty] = counts[big] / 2;
  counts[big] -= counts[empty];
}

static void update_centroids(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
                             const int64_t *assign, double *sums, size_t *counts,
                             float *centroids) {
  int unit = spherical(m);
  memset(sums, 0, k * dim * sizeof *sums);
  memset(counts, 0, k * sizeof *counts);
  for (size_t i = 0; i < n; i++) {
    size_t c = (size_t)assign[i];
    const float *row = data + i * dim;
    double w = unit ? 1.0 / sqrt(norm2(row, dim)) : 1.0;
    double *s = sums + c * dim;
    for (size_t j = 0; j < dim; j++) s[j] += LD(row + j) * w;
    counts[c]++;
  }
  for (size_t c = 0; c < k; c++) {
    if (counts[c] == 0) continue;
    const double *s = sums + c * dim;
    double scale = 1.0 / (double)counts[c];
    if (unit) {
      double len = 0.0;
      for (size_t j = 0; j < dim; j++) len += s[j] * s[j];
      if (len == 0.0) continue; /* opposite directions cancel: keep it */
      scale = 1.0 / sqrt(len);
    }
    for (size_t j = 0; j < dim; j++) centroids[c * dim + j] = (float)(s[j] * scale);
  }
  for (size_t c = 0; c < k; c++)
    if (counts[c] == 0) split_largest(centroids, counts, k, dim, c, unit);
}

/* ------------------------------------------------------------------------ */
/* Final repair: a centroid that no row is nearest to moves onto a row.     */

typedef struct far_row {
  float dist;
  size_t row;
} far_row;

static int farther_first(const void *pa, const void *pb) {
  const far_row *a = pa, *b = pb;
  if (a->dist != b->dist) return a->dist < b->dist ? 1 : -1;
  return a->row < b->row ? -1 : a->row > b->row;
}

/* Returns 1 when a centroid moved (rows must be assigned again), 0 when no
** cluster is empty or none can be filled, -1 when out of memory. */
static int fill_empty_clusters(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
                               const int64_t *assign, const float *dist, size_t *counts,
                               float *centroids) {
  memset(counts, 0, k * sizeof *counts);
  for (size_t i = 0; i < n; i++) counts[assign[i]]++;
  size_t empties = 0;
  for (size_t c = 0; c < k; c++) empties += counts[c] == 0;
  if (empties == 0) return 0;
  far_row *order = malloc(n * sizeof *order);
  size_t *taken = malloc(empties * sizeof *taken);
  if (!order || !taken) {
    free(order);
    free(taken);
    return -1;
  }
  for (size_t i = 0; i < n; i++) order[i] = (far_row){dist[i], i};
  qsort(order, n, sizeof *order, farther_first);
  size_t next = 0, n_taken = 0;
  for (size_t c = 0; c < k; c++) {
    if (counts[c] != 0) continue;
    for (; next < n; next++) {
      size_t i = order[next].row;
      const float *row = data + i * dim;
      if (counts[assign[i]] < 2 || !(order[next].dist > 0.0f)) continue;
      int seen = 0;
      for (size_t t = 0; t < n_taken && !seen; t++)
        seen = memcmp(row, data + taken[t] * dim, dim * sizeof(float)) == 0;
      if (seen) continue;
      set_centroid(centroids + c * dim, row, dim, spherical(m));
      counts[assign[i]]--;
      taken[n_taken++] = i;
      next++;
      break;
    }
  }
  free(order);
  free(taken);
  return n_taken > 0;
}

/* ------------------------------------------------------------------------ */

/* fv_assign_nearest with the caller's n_found buffer (n entries), so that
** Lloyd's loop does not allocate (and page in) one per step. */
static int assign_rows(fv_metric m, const float *centroids, size_t k, const float *data,
                       size_t n, size_t dim, int64_t *out_assign, float *out_dist,
                       size_t *found, int64_t *bad_row, int64_t *bad_centroid) {
  int rc = fv_top_k_batch(m, data, n, centroids, k, dim, 1, INFINITY, out_assign, out_dist,
                          found, bad_row, bad_centroid);
  if (rc == FV_ZERO_NORM && *bad_centroid >= 0) *bad_row = -1; /* the centroid alone */
  return rc;
}

int fv_assign_nearest(fv_metric m, const float *centroids, size_t k, const float *data,
                      size_t n, size_t dim, int64_t *out_assign, float *out_dist,
                      int64_t *bad_row, int64_t *bad_centroid) {
  size_t *found = malloc((n ? n : 1) * sizeof *found);
  if (!found) return FV_NOMEM;
  int rc = assign_rows(m, centroids, k, data, n, dim, out_assign, out_dist, found, bad_row,
                       bad_centroid);
  free(found);
  return rc;
}

int fv_kmeans(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
              unsigned iterations, uint64_t seed, float *out_centroids, int64_t *out_assign,
              int64_t *bad_row) {
  *bad_row = -1;
  if (k == 0 || k > n || dim == 0) return FV_MISUSE;
  if (m != FV_EUCLIDEAN && m != FV_EUCLIDEAN_SQUARED && !spherical(m)) return FV_MISUSE;
  int rc = check_rows(m, data, n, dim, bad_row);
  if (rc != FV_OK) return rc;

  int64_t *previous = malloc(n * sizeof *previous);
  float *dist = malloc(n * sizeof *dist);
  double *sums = malloc(k * dim * sizeof *sums);
  size_t *counts = malloc(k * sizeof *counts);
  size_t *found = malloc(n * sizeof *found);
  if (!previous || !dist || !sums || !counts || !found) {
    rc = FV_NOMEM;
    goto finish;
  }
  rng r = {seed};
  rc = seed_centroids(m, data, n, dim, k, &r, out_centroids);
  int64_t bad_centroid = -1;
  for (unsigned it = 0; rc == FV_OK; it++) {
    rc = assign_rows(m, out_centroids, k, data, n, dim, out_assign, dist, found, bad_row,
                     &bad_centroid);
    if (rc != FV_OK) break;
    if (it > 0 && memcmp(previous, out_assign, n * sizeof *previous) == 0) break;
    if (it == iterations) break;
    update_centroids(m, data, n, dim, k, out_assign, sums, counts, out_centroids);
    memcpy(previous, out_assign, n * sizeof *previous);
  }
  for (int round = 0; rc == FV_OK && round < REPAIR_ROUNDS; round++) {
    int moved = fill_empty_clusters(m, data, n, dim, k, out_assign, dist, counts, out_centroids);
    if (moved < 0) rc = FV_NOMEM;
    if (moved <= 0) break;
    rc = assign_rows(m, out_centroids, k, data, n, dim, out_assign, dist, found, bad_row,
                     &bad_centroid);
  }
finish:
  free(previous);
  free(dist);
  free(sums);
  free(counts);
  free(found);
  return rc;
}
