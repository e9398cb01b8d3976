/*
** facevec.h - distance kernels over float32 vectors.
**
** Pure C, no SQLite: the same kernels are compiled into the loadable SQLite
** extension (sqlite3_facevec.c) and into the Python cffi module.
**
** Vectors are arrays of float32 (native byte order, which is little-endian on
** every platform facevec supports). Pointers need no particular alignment.
** The best SIMD implementation for the running CPU (AVX-512, AVX2+FMA, NEON,
** or portable C) is chosen once, at first use, at run time.
*/
#ifndef FACEVEC_H
#define FACEVEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FACEVEC_VERSION "0.1.0"

/* Distance metrics. Every metric is "smaller is closer". */
typedef enum fv_metric {
  FV_EUCLIDEAN_SQUARED = 0, /* sum((a-b)^2) */
  FV_EUCLIDEAN = 1,         /* sqrt(sum((a-b)^2)) */
  FV_COSINE = 2,            /* 1 - a.b / (|a| |b|) */
  FV_EUCLIDEAN_L2 = 3,      /* |a/|a| - b/|b|| (deepface's euclidean_l2) */
  FV_NEGATIVE_INNER_PRODUCT = 4 /* -(a.b), so that smaller is closer */
} fv_metric;

/* Return codes. */
#define FV_OK 0
#define FV_ZERO_NORM 1 /* cosine / euclidean_l2 of a vector whose norm is 0 */
#define FV_MISUSE 2    /* unknown metric, k == 0, ... */
#define FV_NAN 3       /* a distance is NaN (a vector holds NaN or infinity) */

/* Name of the instruction set the kernels use on this CPU:
** "avx512", "avx2", "neon" or "scalar". */
const char *fv_isa(void);
/* Force the portable C kernels (1) or the best available (0); for tests. */
void fv_force_scalar(int on);

/* Primitives. */
float fv_l2_squared(const float *a, const float *b, size_t n);
float fv_dot(const float *a, const float *b, size_t n);
/* a.a, b.b and a.b in one pass. */
void fv_dot_norms(const float *a, const float *b, size_t n, double *ab,
                  double *aa, double *bb);

/* Distance between a and b under metric m. Returns FV_OK and sets *out, or
** FV_ZERO_NORM (cosine, euclidean_l2) / FV_MISUSE (unknown metric). */
int fv_distance(fv_metric m, const float *a, const float *b, size_t n,
                double *out);

/* Distances from query (dim floats) to each of the n_rows rows of the
** row-major matrix (n_rows x dim floats) into out[n_rows].
** Returns FV_OK, or FV_ZERO_NORM with *bad_row set to the row (or -1 for the
** query) whose norm is zero. */
int fv_distances(fv_metric m, const float *query, const float *matrix,
                 size_t n_rows, size_t dim, float *out, int64_t *bad_row);

/* Bounded max-heap keeping the k smallest (distance, id) pairs seen.
** Ties on distance are broken by the smaller id, so results are
** deterministic. Buffers are the caller's (k entries each). */
typedef struct fv_heap {
  size_t k;
  size_t size;
  float *dist;
  int64_t *id;
} fv_heap;

void fv_heap_init(fv_heap *h, size_t k, float *dist_buf, int64_t *id_buf);
/* Would (d, id) enter the heap? Cheap test to skip pushes. */
static inline int fv_heap_accepts(const fv_heap *h, float d, int64_t id) {
  if (h->size < h->k) return 1;
  return d < h->dist[0] || (d == h->dist[0] && id < h->id[0]);
}
void fv_heap_push(fv_heap *h, float d, int64_t id);
/* Sort the heap's content ascending by (distance, id); the heap is then no
** longer a heap. Returns h->size. */
size_t fv_heap_sort(fv_heap *h);

/* Scan a row-major matrix block and push each row's distance to the query
** into heap h, ids being first_id + row. For FV_EUCLIDEAN the heap holds
** squared distances (call fv_finish_distances after the last block).
** Returns FV_OK, or FV_ZERO_NORM / FV_NAN with *bad_row set as for
** fv_distances: a NaN distance cannot be ranked, so it is an error. */
int fv_scan_block(fv_metric m, const float *query, const float *matrix,
                  size_t n_rows, size_t dim, int64_t first_id, fv_heap *h,
                  int64_t *bad_row);
/* Turn heap distances from their scan form into metric m's values
** (sqrt for FV_EUCLIDEAN; no-op otherwise). */
void fv_finish_distances(fv_metric m, float *dist, size_t n);

/* Exact top-k of a whole matrix: fills out_idx/out_dist (k entries each,
** ascending by distance) and returns the number found (min(k, n_rows)) in
** *n_found. Return code as fv_scan_block. */
int fv_top_k(fv_metric m, const float *query, const float *matrix,
             size_t n_rows, size_t dim, size_t k, int64_t *out_idx,
             float *out_dist, size_t *n_found, int64_t *bad_row);

/* Parse a JSON array of numbers ("[1, 2.5, -3e-2]") into floats.
** Returns the number of elements written (<= cap), or -1 on malformed input
** with *err_pos set to the byte offset of the problem. With out == NULL,
** only counts. Numbers that overflow float32 are an error. */
long fv_parse_json(const char *text, size_t len, float *out, size_t cap,
                   size_t *err_pos);

#ifdef __cplusplus
}
#endif
#endif /* FACEVEC_H */
