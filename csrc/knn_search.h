/*
** knn_search.h - the search behind facevec_knn. Internal to the extension.
*/
#ifndef FACEVEC_KNN_SEARCH_H
#define FACEVEC_KNN_SEARCH_H

#include "facevec.h"
#include "knn_store.h"

/* The k rows of tbl nearest to q (dim floats). On success *ids and *dist
** (sqlite3_malloc'd) hold *n results, ascending. */
int knn_search(sqlite3 *db, const char *tbl, const float *q, size_t dim, i64 k,
               fv_metric metric, int has_thr, double thr, i64 **ids, double **dist,
               size_t *n, char **pzErr);

#endif /* FACEVEC_KNN_SEARCH_H */
