/*
** batch.h - exact top-k of many queries in one pass over a matrix.
**
** Pure C, no SQLite. Built on the kernels of facevec.h: every distance is the
** one fv_top_k computes, bit for bit.
*/
#ifndef FACEVEC_BATCH_H
#define FACEVEC_BATCH_H

#include <stddef.h>
#include <stdint.h>

#include "facevec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Return code beyond those of facevec.h: a work buffer could not be allocated. */
#ifndef FV_NOMEM
#define FV_NOMEM 4
#endif

/* Exact top-k of each of n_queries queries (row-major, n_queries x dim) over
** the n_rows rows of matrix (n_rows x dim). For query q, row q of out_idx /
** out_dist (k entries each) and n_found[q] are exactly what
** fv_top_k(m, query q, matrix, n_rows, dim, k, ...) gives: the same rows,
** bit-identical distances, ascending, ties by the lower row.
**
** max_distance limits the answer to rows with distance <= max_distance
** (compared as double, like facevec_knn's threshold); pass INFINITY (or
** HUGE_VAL) for no limit. n_found[q] counts the rows kept; the entries after
** them hold id -1 and distance +INFINITY (also when n_rows < k).
**
** One pass over the matrix serves a whole tile of queries: a block of rows
** stays in the L1 cache while every query of the tile is scanned against it.
** Cost: n_queries * n_rows distance evaluations, one heap per query.
**
** Returns FV_OK, FV_MISUSE (unknown metric, k == 0, dim == 0, NaN
** max_distance), FV_NOMEM, or
** FV_ZERO_NORM / FV_NAN with *bad_query and *bad_row naming the pair: a query
** whose norm is zero gives (that query, -1), the lowest such query first;
** otherwise the lowest bad row, and the lowest query at that row. Outputs are
** unspecified after an error. */
int fv_top_k_batch(fv_metric m, const float *queries, size_t n_queries,
                   const float *matrix, size_t n_rows, size_t dim, size_t k,
                   double max_distance, int64_t *out_idx, float *out_dist,
                   size_t *n_found, int64_t *bad_query, int64_t *bad_row);

#ifdef __cplusplus
}
#endif
#endif /* FACEVEC_BATCH_H */
