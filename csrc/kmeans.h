/*
** kmeans.h - k-means for coarse quantisation (the lists of an IVF index).
**
** Pure C, no SQLite. Assignment runs on fv_top_k_batch with k = 1, so a row's
** centroid is exactly the one fv_top_k over the centroids ranks first. The
** nprobe nearest centroids of a query are fv_top_k(m, query, centroids,
** n_centroids, dim, nprobe, ...): no separate function is needed.
*/
#ifndef FACEVEC_KMEANS_H
#define FACEVEC_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "batch.h"
#include "facevec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Nearest centroid of each of the n rows of data (n x dim): out_assign[i] is
** the centroid fv_top_k(m, row i, centroids, k, dim, 1, ...) returns and
** out_dist[i] its distance, bit for bit (ties: the lower centroid). Any
** metric; for FV_NEGATIVE_INNER_PRODUCT the distance is -(a.b).
** Cost: n * k distance evaluations, screened as in fv_top_k_batch.
** Returns FV_OK, FV_MISUSE (k == 0, unknown metric), FV_NOMEM, FV_ZERO_NORM
** with either *bad_row (a data row) or *bad_centroid set and the other -1,
** or FV_NAN with both set: the first NaN distance, ordered as in
** fv_top_k_batch (lowest centroid, then lowest row). */
int fv_assign_nearest(fv_metric m, const float *centroids, size_t k, const float *data,
                      size_t n, size_t dim, int64_t *out_assign, float *out_dist,
                      int64_t *bad_row, int64_t *bad_centroid);

/* k-means of the n rows of data (n x dim) into k clusters.
**
** Seeding: k-means++ (each next centroid drawn with probability proportional
** to the squared distance to the nearest one drawn so far) over a random
** sample of min(n, 16 k) rows: the full k-means++ costs n k dim and streams
** the data k times; on a sample the seeds are as well spread at a cost of
** 16 k^2 dim from cache.
** Then at most `iterations` Lloyd steps: assign every row to its nearest
** centroid (fv_assign_nearest), move each centroid to the mean of its rows;
** stop early when no row changes cluster. A cluster left empty takes half
** of the largest one: its centroid is split in two, nudged apart by 1/1024
** in opposite directions.
** FV_COSINE and FV_EUCLIDEAN_L2 run spherical k-means: rows count by their
** direction, centroids are normalised (unit norm). FV_EUCLIDEAN and
** FV_EUCLIDEAN_SQUARED run plain k-means (the same clusters).
**
** Outputs: out_centroids (k x dim), and out_assign (n): each row's nearest
** centroid among the final ones, as fv_assign_nearest gives it. When a final
** cluster is still empty, its centroid moves onto the row farthest from its
** own centroid (a row of a cluster of two or more) and all rows are assigned
** again, for at most a few rounds: no cluster is empty when the data has at
** least k distinct rows.
**
** Deterministic: the same data and seed give the same result, bit for bit,
** with the same distance kernels (fv_isa()). Kernels of another instruction
** set may round a distance differently in the last bit, which can change a
** choice only between two (nearly) equidistant centroids.
**
** Cost: O(16 k^2 dim) seeding + O(iterations n k dim) assignment (the
** screened batch kernel) + O(iterations n dim) updates; memory k dim doubles
** plus O(n) beside the inputs.
**
** Returns FV_OK; FV_MISUSE for k == 0, k > n, dim == 0 or a metric other than
** the four above; FV_NOMEM; FV_NAN with *bad_row set when a row holds NaN or
** infinity; FV_ZERO_NORM with *bad_row set for a zero row under a spherical
** metric (the lowest such row). */
int fv_kmeans(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
              unsigned iterations, uint64_t seed, float *out_centroids, int64_t *out_assign,
              int64_t *bad_row);

#ifdef __cplusplus
}
#endif
#endif /* FACEVEC_KMEANS_H */
