/*
** knn_search.h - the search behind facevec_knn. Internal to the extension.
*/
#ifndef FACEVEC_KNN_SEARCH_H
#define FACEVEC_KNN_SEARCH_H

#include "facevec.h"
#include "knn_chunk_cache.h"
#include "knn_store.h"

/* One query vector and what to return for it. */
typedef struct knn_query_spec {
  const float *vector; /* dim floats, any alignment */
  i64 k;               /* >= 1: at most k rows */
  int has_threshold;   /* 0: no limit */
  double threshold;    /* >= 0: only rows with distance <= threshold */
} knn_query_spec;

/* A search of one index: the collection, the metric, and its queries.
** Today facevec_knn sends one query; a batch (many query vectors in one
** call) is n_queries > 1, each scored in the same pass over the chunks.
** On an IVF index, nprobe picks, for each query, the lists whose chunks it
** scores (the union of the batch's lists is read once). */
typedef struct knn_request {
  const char *table;
  fv_metric metric;
  size_t dim;
  const knn_query_spec *queries;
  size_t n_queries;
  i64 nprobe; /* IVF lists each query reads: 0 = the index's default; >= lists = all */
} knn_request;

/* The answer to one query: n rows ascending by distance, ties by rowid,
** sqlite3_malloc'd (knn_result_clear frees them). */
typedef struct knn_result {
  size_t n;
  int64_t *ids;
  double *dist;
} knn_result;

/* What a search learnt about an index, kept by its caller (facevec_knn's
** table, one per connection) from one query to the next. The checks of
** knn_index_check cost as much as a small search; while the file has not
** changed since they passed (the same data version, change count and
** schema version), they are not run again. */
typedef struct knn_cache {
  char *table;             /* the name the index was asked by */
  knn_index ix;            /* loaded and checked */
  unsigned data_version;   /* SQLITE_FCNTL_DATA_VERSION: any commit */
  int changes;             /* sqlite3_total_changes: this connection's writes */
  int schema_version;      /* PRAGMA schema_version */
  int valid;
  sqlite3_stmt *schema_st; /* PRAGMA main.schema_version, prepared once */
  /* The statements every search of table runs, prepared once per table. */
  char *stmt_table;
  sqlite3_stmt *log_st, *chunks_st, *map_get;
  /* Prepared when first needed: an IVF list's chunks, a row's vector (the
  ** re-ranking of compressed storage). */
  sqlite3_stmt *ivf_st, *get_st;
  /* While valid: the IVF centroids and the int8 parameters of ix (NULL until
  ** a search reads them), so a query does not read them again. */
  float *centroids, *qparams;
  /* A search's largest buffers (a chunk's rowids, a block of vectors or
  ** codes), kept from one search to the next so that a query does not map
  ** and fault in fresh pages for them. */
  void *buf[3];
  size_t buf_bytes[3];
  /* While valid: each IVF list's chunk ids (list_n[l + 1] of them at
  ** list_ids[l + 1], l = -1 for the mixed chunks; NULL until a search
  ** reads the list). */
  i64 **list_ids;
  size_t *list_n, list_slots;
  /* While valid: which chunks of the process's cache are this snapshot's
  ** (file, table, generation); file NULL: none are. */
  knn_chunk_key chunk_key;
} knn_cache;

void knn_cache_clear(knn_cache *c);

/* Run req; results has req->n_queries entries. On an error every result is
** empty and *pzErr names what was wrong (NULL: out of memory). cache may be
** NULL. */
int knn_search(sqlite3 *db, const knn_request *req, knn_result *results, knn_cache *cache,
               char **pzErr);
void knn_result_clear(knn_result *r);

#endif /* FACEVEC_KNN_SEARCH_H */
