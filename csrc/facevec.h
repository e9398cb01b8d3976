/*
** facevec.h - the public C API of facevec's kernels: distances between
** float32 vectors, exact top-k, a bounded heap, and JSON arrays of numbers.
**
** Pure C, no SQLite: the same kernels are compiled into the loadable SQLite
** extension (sqlite3_facevec.c, knn_*.c) and into the Python cffi module.
**
** Vectors are arrays of float32 (native byte order, which is little-endian on
** every platform facevec supports). Pointers need no particular alignment.
** The best SIMD implementation for the running CPU (AVX-512, AVX2+FMA, NEON,
** or portable C) is chosen once, at first use, at run time. Sums run in
** float32; where float32 would overflow or underflow (elements beyond about
** 1e19 or below 1e-19) they are taken again in double.
**
** The declarations between "cffi: begin" and "cffi: end" are also the cffi
** module's (facevec/bindings/_ffi_build.py reads them from here).
*/
#ifndef FACEVEC_H
#define FACEVEC_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The package version; setup.py passes it from facevec/_version.py. */
#ifndef FACEVEC_VERSION
#define FACEVEC_VERSION "unknown"
#endif

/* cffi: begin */
/* Distance metrics. Every metric is "smaller is closer". */
typedef enum fv_metric {
  FV_EUCLIDEAN_SQUARED = 0,     /* sum((a-b)^2) */
  FV_EUCLIDEAN = 1,             /* sqrt(sum((a-b)^2)) */
  FV_COSINE = 2,                /* 1 - a.b / (|a| |b|) */
  FV_EUCLIDEAN_L2 = 3,          /* |a/|a| - b/|b|| (deepface's euclidean_l2) */
  FV_NEGATIVE_INNER_PRODUCT = 4 /* -(a.b), so that smaller is closer */
} fv_metric;

/* Return codes. */
#define FV_OK 0
#define FV_ZERO_NORM 1 /* cosine / euclidean_l2 of a vector whose norm is 0 */
#define FV_MISUSE 2    /* unknown metric, k == 0, ... */
#define FV_NAN 3       /* a distance is NaN (a vector holds NaN or infinity) */
#define FV_NOMEM 4     /* out of memory */

/* Name of the instruction set the kernels use on this CPU:
** "avx512", "avx2", "neon" or "scalar". */
const char *fv_isa(void);
/* Force the portable C kernels (1) or the best available (0); for tests. */
void fv_force_scalar(int on);

/* Distances from query (dim floats) to each of the n_rows rows of the
** row-major matrix (n_rows x dim floats) into out[n_rows].
** Returns FV_OK, or FV_ZERO_NORM with *bad_row set to the row (or -1 for the
** query) whose norm is zero. */
int fv_distances(fv_metric m, const float *query, const float *matrix,
                 size_t n_rows, size_t dim, float *out, int64_t *bad_row);

/* Exact top-k of a whole matrix: fills out_idx/out_dist (k entries each,
** ascending by distance, ties by row) and returns the number found
** (min(k, n_rows)) in *n_found. Returns FV_OK, or FV_ZERO_NORM / FV_NAN with
** *bad_row set as for fv_distances (a NaN distance cannot be ranked), or
** FV_MISUSE (k == 0, unknown metric), or FV_NOMEM. */
int fv_top_k(fv_metric m, const float *query, const float *matrix,
             size_t n_rows, size_t dim, size_t k, int64_t *out_idx,
             float *out_dist, size_t *n_found, int64_t *bad_row);
/* cffi: end */

/* sum((a-b)^2), as the SQL functions and the knn index compute it. */
double fv_l2_squared(const float *a, const float *b, size_t n);
/* fv_l2_squared(row, q) of each of the n_rows rows (row-major, dim floats
** each) into out[n_rows], bit for bit, in one call. */
void fv_l2_squared_rows(const float *q, const float *rows, size_t n_rows, size_t dim,
                        double *out);
/* The rows of fv_l2_squared_rows whose key is not above bound (NaN keys
** included; every row when bound is NaN): their indices into idx and their
** keys, the same bits, into keys (n_rows entries each, at most); returns
** how many. n_rows < 2^32. */
size_t fv_l2_squared_rows_within(const float *q, const float *rows, size_t n_rows, size_t dim,
                                 double bound, uint32_t *idx, double *keys);

/* Distance between a and b under metric m. Returns FV_OK and sets *out, or
** FV_ZERO_NORM (cosine, euclidean_l2) / FV_MISUSE (unknown metric). */
int fv_distance(fv_metric m, const float *a, const float *b, size_t n,
                double *out);

/* Bounded max-heap keeping the k smallest (distance, id) pairs seen, for
** top_k and the knn index. Ties on distance are broken by the smaller id, so
** results are deterministic. Distances are doubles, so the knn index ranks
** and returns exactly the SQL functions' values. Each entry may carry a tag
** (tag == NULL: none). The buffers are the caller's, cap entries each; a
** caller may grow them (and cap) between pushes, as long as cap > size
** whenever size < k. */
typedef struct fv_heap {
  size_t k;    /* entries kept at most */
  size_t size; /* entries held */
  size_t cap;  /* entries the buffers hold */
  double *dist;
  int64_t *id;
  int64_t *tag;
} fv_heap;

void fv_heap_init(fv_heap *h, size_t k, double *dist, int64_t *id, int64_t *tag,
                  size_t cap);
/* Would (d, id) enter the heap? Cheap test to skip pushes. */
static inline int fv_heap_accepts(const fv_heap *h, double d, int64_t id) {
  if (h->size < h->k) return 1;
  return d < h->dist[0] || (d == h->dist[0] && id < h->id[0]);
}
void fv_heap_push(fv_heap *h, double d, int64_t id, int64_t tag);
/* Sort the heap's content ascending by (distance, id); the heap is then no
** longer a heap. Returns h->size. */
size_t fv_heap_sort(fv_heap *h);

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
