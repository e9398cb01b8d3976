/*
** scan.h - the scan behind fv_top_k, for the kernels built on it (batch.c).
**
** Internal: neither part of the public API (facevec.h) nor of the cffi
** module. It lets another file rank rows with exactly fv_top_k's keys and
** heap instead of a copy of them, so every top-k agrees bit for bit.
*/
#ifndef FACEVEC_SCAN_H
#define FACEVEC_SCAN_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

#include "facevec.h"

struct fv_kernels; /* distance.c's SIMD kernels, chosen at run time */

/* The instruction set of the kernels in use (fv_isa()), as a number for the
** kernels of other files (codes.c): 0 scalar, 1 avx2, 2 avx512, 3 neon. */
int fv_isa_level(void);

/* One query, prepared once for any number of rows: its norm is taken once. */
typedef struct scan_query {
  const struct fv_kernels *k;
  fv_metric m;
  const float *q;
  size_t dim;
  float q_scale;  /* 1/|q| for cosine and euclidean_l2 */
  double q_norm2; /* |q|^2 in double, for rows taken in double */
  int q_extreme;  /* |q|^2 is not a safe float32: every row in double */
} scan_query;

/* Prepare query q (dim floats) for metric m with the kernels in use.
** Returns FV_OK, FV_ZERO_NORM (cosine, euclidean_l2 of a zero query) or
** FV_MISUSE (unknown metric). */
int scan_query_init(scan_query *s, fv_metric m, const float *q, size_t dim);

/* Push the key of each of the n_rows rows of matrix (row-major, s->dim
** floats each) into h, ids being first_id + row. Keys are doubles: the
** metric's value as the float32 kernels compute it (for FV_EUCLIDEAN its
** square), or the same taken in double where a float32 sum overflowed or
** came near underflow. Rows must come in increasing id order, after every
** id already in h (a row tying with a full heap's worst key loses).
** Returns FV_OK, or FV_ZERO_NORM / FV_NAN with *bad_row set to the row
** (counted from matrix): a NaN cannot be ranked. */
int scan_block(const scan_query *s, const float *matrix, size_t n_rows, int64_t first_id,
               fv_heap *h, int64_t *bad_row);

/* A key as the float32 distance fv_top_k and fv_distances return. sqrt in
** double rounded to float32 equals sqrtf of the float32 sum, so results are
** the float32 kernels' own wherever those were safe. Non-decreasing in key. */
static inline float finish_key(fv_metric m, double key) {
  return (float)(m == FV_EUCLIDEAN ? sqrt(key) : key);
}

#endif /* FACEVEC_SCAN_H */
