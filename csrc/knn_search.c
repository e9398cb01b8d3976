/*
** knn_search.c - the search behind facevec_knn: a bounded heap over the
** chunks' vectors and the rows with pending changes, read from the table.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
#include "knn_search.h"
#include "knn_store.h"

/* Max-heap of the k best (distance, rowid), ordered like ORDER BY distance,
** rowid. Doubles, so distances are exactly the scalar functions'. Each entry
** also notes where its vector came from (see slot_key), so the results can
** be checked against the rowid map. Its buffers start small and grow with
** the rows actually seen (up to k), so a huge k costs nothing and no count
** read from the file sizes an allocation. */
typedef struct knn_heap {
  size_t k, size, cap;
  double *d;
  i64 *id;
  i64 *at;
} knn_heap;

/* Room for one more entry (size < k). */
static int heap_reserve(knn_heap *h) {
  if (h->size < h->cap) return SQLITE_OK;
  size_t cap = h->cap ? h->cap * 2 : 64;
  if (cap > h->k || cap < h->cap) cap = h->k;
  if (cap > (size_t)INT64_MAX / sizeof(double)) return SQLITE_NOMEM;
  double *d = sqlite3_realloc64(h->d, (sqlite3_uint64)cap * sizeof(double));
  if (!d) return SQLITE_NOMEM;
  h->d = d;
  i64 *id = sqlite3_realloc64(h->id, (sqlite3_uint64)cap * sizeof(i64));
  if (!id) return SQLITE_NOMEM;
  h->id = id;
  i64 *at = sqlite3_realloc64(h->at, (sqlite3_uint64)cap * sizeof(i64));
  if (!at) return SQLITE_NOMEM;
  h->at = at;
  h->cap = cap;
  return SQLITE_OK;
}

static inline int heap_gt(const knn_heap *h, size_t i, size_t j) {
  return h->d[i] > h->d[j] || (h->d[i] == h->d[j] && h->id[i] > h->id[j]);
}

static inline void heap_swap(knn_heap *h, size_t i, size_t j) {
  double d = h->d[i];
  i64 id = h->id[i], at = h->at[i];
  h->d[i] = h->d[j];
  h->id[i] = h->id[j];
  h->at[i] = h->at[j];
  h->d[j] = d;
  h->id[j] = id;
  h->at[j] = at;
}

static void heap_down(knn_heap *h, size_t i, size_t size) {
  for (;;) {
    size_t l = 2 * i + 1, r = l + 1, top = i;
    if (l < size && heap_gt(h, l, top)) top = l;
    if (r < size && heap_gt(h, r, top)) top = r;
    if (top == i) return;
    heap_swap(h, i, top);
    i = top;
  }
}

static inline int heap_accepts(const knn_heap *h, double d, i64 id) {
  return h->size < h->k || d < h->d[0] || (d == h->d[0] && id < h->id[0]);
}

/* Caller checked heap_accepts and heap_reserve. */
static void heap_push(knn_heap *h, double d, i64 id, i64 at) {
  size_t i = 0;
  if (h->size < h->k) {
    i = h->size++;
    h->d[i] = d;
    h->id[i] = id;
    h->at[i] = at;
    while (i > 0) {
      size_t p = (i - 1) / 2;
      if (!heap_gt(h, i, p)) break;
      heap_swap(h, i, p);
      i = p;
    }
    return;
  }
  h->d[0] = d;
  h->id[0] = id;
  h->at[0] = at;
  heap_down(h, 0, h->size);
}

static void heap_sort(knn_heap *h) {
  for (size_t end = h->size; end > 1; end--) {
    heap_swap(h, 0, end - 1);
    heap_down(h, 0, end - 1);
  }
}

/* Where a stored vector sits, as one number: chunk ids stay below 2^47 and
** slots below 2^16 (KNN_MAX_CHUNK). -1: read from the source table. */
static inline i64 slot_key(i64 chunk, i64 slot) { return chunk << 16 | slot; }

/* Open-addressing set of rowids with pending changes. */
typedef struct rid_set {
  i64 *slot;
  size_t mask, n;
} rid_set;

static inline size_t rid_hash(i64 v) {
  uint64_t x = (uint64_t)v * 0x9E3779B97F4A7C15ull;
  return (size_t)(x ^ (x >> 29));
}

/* Sentinel: INT64_MIN is never stored (add_rid maps it aside). */
static int rid_set_add(rid_set *s, i64 v) {
  if ((s->n + 1) * 2 > s->mask + 1 || !s->slot) {
    size_t cap = s->slot ? (s->mask + 1) * 2 : 64;
    i64 *ns = sqlite3_malloc64(cap * sizeof(i64));
    if (!ns) return SQLITE_NOMEM;
    for (size_t i = 0; i < cap; i++) ns[i] = INT64_MIN;
    if (s->slot) {
      for (size_t i = 0; i <= s->mask; i++) {
        if (s->slot[i] == INT64_MIN) continue;
        size_t j = rid_hash(s->slot[i]) & (cap - 1);
        while (ns[j] != INT64_MIN) j = (j + 1) & (cap - 1);
        ns[j] = s->slot[i];
      }
      sqlite3_free(s->slot);
    }
    s->slot = ns;
    s->mask = cap - 1;
  }
  size_t j = rid_hash(v) & s->mask;
  while (s->slot[j] != INT64_MIN) {
    if (s->slot[j] == v) return SQLITE_OK;
    j = (j + 1) & s->mask;
  }
  s->slot[j] = v;
  s->n++;
  return SQLITE_OK;
}

static int rid_set_has(const rid_set *s, i64 v) {
  if (!s->n) return 0;
  size_t j = rid_hash(v) & s->mask;
  while (s->slot[j] != INT64_MIN) {
    if (s->slot[j] == v) return 1;
    j = (j + 1) & s->mask;
  }
  return 0;
}

typedef struct knn_query {
  sqlite3 *db;
  knn_index ix;
  fv_metric metric;
  const float *q;
  size_t dim;
  double thr_key; /* skip keys above this (HUGE_VAL: no threshold) */
  knn_heap heap;
  rid_set pending;
  int pending_has_min;   /* INT64_MIN is pending (cannot live in the set) */
  sqlite3_stmt *map_get; /* rid -> (chunk, slot) */
  char *zErr;
} knn_query;

/* Rows whose stored copy may be out of date: scored from the source table. */
static inline int is_pending(const knn_query *s, i64 rid) {
  if (s->ix.building && rid >= s->ix.build_next) return 1;
  if (rid == INT64_MIN) return s->pending_has_min;
  return rid_set_has(&s->pending, rid);
}

/* The rowid map agrees that row rid is stored at slot_key `at`: a slot
** whose rowid was forged, or one left over, cannot pose as a row. */
static int check_map(knn_query *s, i64 rid, i64 at) {
  int rc, same = 0;
  i64 chunk = -1, slot = -1;
  if (!s->map_get) {
    rc = knn_prepare(s->db, &s->map_get, &s->zErr,
                     "SELECT chunk, slot FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1",
                     s->ix.tbl);
    if (rc != SQLITE_OK) return rc;
  }
  sqlite3_bind_int64(s->map_get, 1, rid);
  rc = sqlite3_step(s->map_get);
  if (rc == SQLITE_ROW) {
    chunk = sqlite3_column_int64(s->map_get, 0);
    slot = sqlite3_column_int64(s->map_get, 1);
    same = sqlite3_column_type(s->map_get, 0) == SQLITE_INTEGER &&
           sqlite3_column_type(s->map_get, 1) == SQLITE_INTEGER && chunk >= 0 &&
           chunk < ((i64)1 << 47) && slot >= 0 && slot < KNN_MAX_CHUNK &&
           slot_key(chunk, slot) == at;
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  } else {
    knn_db_error(s->db, &s->zErr);
  }
  sqlite3_reset(s->map_get);
  if (rc == SQLITE_OK && !same)
    rc = knn_corrupt(&s->zErr, "facevec_knn", &s->ix,
                     "slot %lld of chunk %lld holds row %lld, which the map puts %s", at & 0xFFFF,
                     at >> 16, rid, chunk < 0 ? "nowhere" : "elsewhere");
  return rc;
}

/* Distance key of row vector v: the squared distance for euclidean (sqrt is
** applied to the final k), else the metric's value. The row is argument a,
** the query b, as in <metric>_distance(embedding, query). */
static inline int row_key(const knn_query *s, const float *v, double *key) {
  if (s->metric == FV_EUCLIDEAN || s->metric == FV_EUCLIDEAN_SQUARED) {
    *key = fv_l2_squared(v, s->q, s->dim);
    return FV_OK;
  }
  return fv_distance(s->metric, v, s->q, s->dim, key);
}

/* Score one live row (stored at slot_key `at`, or -1: read from the table). */
static int consider(knn_query *s, const float *v, i64 rid, i64 at) {
  double key;
  int rc = row_key(s, v, &key);
  if (rc == FV_OK && key == key) {
    if (key <= s->thr_key && heap_accepts(&s->heap, key, rid)) {
      if (heap_reserve(&s->heap) != SQLITE_OK) return SQLITE_NOMEM;
      heap_push(&s->heap, key, rid, at);
    }
    return SQLITE_OK;
  }
  if (rc == FV_ZERO_NORM)
    s->zErr = sqlite3_mprintf("facevec_knn: distance undefined for %s row %lld, whose %s "
                              "has norm 0",
                              s->ix.tbl, rid, s->ix.col);
  else
    s->zErr = sqlite3_mprintf("facevec_knn: distance to %s row %lld is NaN: its %s holds "
                              "NaN or infinity",
                              s->ix.tbl, rid, s->ix.col);
  return SQLITE_ERROR;
}

static int scan_chunks(knn_query *s) {
  knn_index *ix = &s->ix;
  sqlite3_stmt *st = NULL;
  sqlite3_blob *b_valid = NULL, *b_rowids = NULL, *b_vectors = NULL;
  unsigned char *valid = NULL;
  i64 *rowids = NULL;
  float *block = NULL;
  char *chunks_tbl = NULL;
  const size_t dim = s->dim, vbytes = dim * sizeof(float);
  size_t block_rows = KNN_BLOCK_BYTES / vbytes;
  int rc;
  if (block_rows < 1) block_rows = 1;
  if (block_rows > (size_t)ix->chunk_size) block_rows = (size_t)ix->chunk_size;

  chunks_tbl = sqlite3_mprintf("%s_fvknn_chunks", ix->tbl);
  valid = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size / 8);
  rowids = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size * sizeof(i64));
  block = sqlite3_malloc64(block_rows * vbytes);
  if (!chunks_tbl || !valid || !rowids || !block) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  rc = knn_prepare(s->db, &st, &s->zErr,
                   "SELECT id FROM \"main\".\"%w_fvknn_chunks\" ORDER BY id", ix->tbl);
  if (rc != SQLITE_OK) goto finish;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 id = sqlite3_column_int64(st, 0);
    size_t n_slots = (size_t)(id == ix->tail_chunk ? ix->tail_used : ix->chunk_size);
    if (n_slots == 0) continue;
    if (!b_vectors) {
      rc = sqlite3_blob_open(s->db, "main", chunks_tbl, "valid", id, 0, &b_valid);
      if (rc == SQLITE_OK)
        rc = sqlite3_blob_open(s->db, "main", chunks_tbl, "rowids", id, 0, &b_rowids);
      if (rc == SQLITE_OK)
        rc = sqlite3_blob_open(s->db, "main", chunks_tbl, "vectors", id, 0, &b_vectors);
    } else {
      rc = sqlite3_blob_reopen(b_valid, id);
      if (rc == SQLITE_OK) rc = sqlite3_blob_reopen(b_rowids, id);
      if (rc == SQLITE_OK) rc = sqlite3_blob_reopen(b_vectors, id);
    }
    if (rc != SQLITE_OK) goto db_error;
    /* knn_index_check saw these sizes in this same snapshot; a mismatch here
    ** is a bug, never a reason to read out of bounds. */
    if (sqlite3_blob_bytes(b_vectors) != (int)(ix->chunk_size * (i64)vbytes) ||
        sqlite3_blob_bytes(b_valid) != (int)(ix->chunk_size / 8) ||
        sqlite3_blob_bytes(b_rowids) != (int)(ix->chunk_size * 8)) {
      rc = knn_corrupt(&s->zErr, "facevec_knn", ix, "chunk %lld changed size", id);
      goto finish;
    }
    rc = sqlite3_blob_read(b_valid, valid, (int)((n_slots + 7) / 8), 0);
    if (rc == SQLITE_OK) rc = sqlite3_blob_read(b_rowids, rowids, (int)(n_slots * 8), 0);
    if (rc != SQLITE_OK) goto db_error;
    for (size_t first = 0; first < n_slots; first += block_rows) {
      size_t rows = n_slots - first < block_rows ? n_slots - first : block_rows;
      size_t lo = first, hi = first + rows; /* trim invalid rows at both ends */
      while (lo < hi && !(valid[lo / 8] >> (lo % 8) & 1)) lo++;
      while (hi > lo && !(valid[(hi - 1) / 8] >> ((hi - 1) % 8) & 1)) hi--;
      if (lo == hi) continue;
      rc = sqlite3_blob_read(b_vectors, block, (int)((hi - lo) * vbytes), (int)(lo * vbytes));
      if (rc != SQLITE_OK) goto db_error;
      for (size_t r = lo; r < hi; r++) {
        if (!(valid[r / 8] >> (r % 8) & 1)) continue;
        /* A pending row is scored from the table; its stale copy must still
        ** be the one the map knows. */
        if (is_pending(s, rowids[r]))
          rc = check_map(s, rowids[r], slot_key(id, (i64)r));
        else
          rc = consider(s, block + (r - lo) * dim, rowids[r], slot_key(id, (i64)r));
        if (rc != SQLITE_OK) goto finish;
      }
    }
  }
  if (rc != SQLITE_DONE) goto db_error;
  rc = SQLITE_OK;
  goto finish;
db_error:
  knn_db_error(s->db, &s->zErr);
finish:
  sqlite3_blob_close(b_valid);
  sqlite3_blob_close(b_rowids);
  sqlite3_blob_close(b_vectors);
  sqlite3_finalize(st);
  sqlite3_free(chunks_tbl);
  sqlite3_free(valid);
  sqlite3_free(rowids);
  sqlite3_free(block);
  return rc;
}

/* Score rows with pending changes straight from the source table. */
static int scan_pending(knn_query *s) {
  knn_index *ix = &s->ix;
  sqlite3_stmt *st = NULL;
  float *scratch = NULL;
  size_t cap = 0;
  int rc;
  /* During a build, rows the map does not know are read from the table too,
  ** whatever the cursor says: a forged cursor cannot hide rows. */
  if (ix->building)
    rc = knn_prepare(s->db, &st, &s->zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" AS t WHERE \"%w\" >= ?1 "
                     "OR \"%w\" IN (SELECT rid FROM \"main\".\"%w_fvknn_log\") OR NOT EXISTS "
                     "(SELECT 1 FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = t.\"%w\")",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->pk, ix->tbl, ix->tbl, ix->pk);
  else
    rc = knn_prepare(s->db, &st, &s->zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" IN "
                     "(SELECT rid FROM \"main\".\"%w_fvknn_log\")",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->tbl);
  if (rc != SQLITE_OK) goto finish;
  if (ix->building) sqlite3_bind_int64(st, 1, ix->build_next);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    const float *v;
    size_t n;
    int has;
    rc = knn_source_vector("facevec_knn", ix, rid, sqlite3_column_type(st, 1),
                       sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1),
                       (i64)s->dim, &v, &n, &has, &scratch, &cap, &s->zErr);
    if (rc != SQLITE_OK) goto finish;
    if (!has) continue;
    rc = consider(s, v, rid, -1);
    if (rc != SQLITE_OK) goto finish;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else
    knn_db_error(s->db, &s->zErr);
finish:
  sqlite3_finalize(st);
  sqlite3_free(scratch);
  return rc;
}

static int load_pending(knn_query *s, i64 *n_log) {
  sqlite3_stmt *st = NULL;
  int rc = knn_prepare(s->db, &st, &s->zErr, "SELECT rid FROM \"main\".\"%w_fvknn_log\"",
                       s->ix.tbl);
  *n_log = 0;
  if (rc != SQLITE_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER) {
      rc = knn_corrupt(&s->zErr, "facevec_knn", &s->ix, "its log holds a %s rowid",
                       knn_type_name(sqlite3_column_type(st, 0)));
      break;
    }
    (*n_log)++;
    if (rid == INT64_MIN)
      s->pending_has_min = 1;
    else if ((rc = rid_set_add(&s->pending, rid)) != SQLITE_OK)
      break;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else if (rc != SQLITE_NOMEM)
    knn_db_error(s->db, &s->zErr);
  sqlite3_finalize(st);
  return rc;
}

static int cmp_i64(const void *a, const void *b) {
  i64 x = *(const i64 *)a, y = *(const i64 *)b;
  return (x > y) - (x < y);
}

/* The results name each row once, and every stored one sits where the map
** says: duplicated or relabelled slots show here rather than as answers. */
static int check_results(knn_query *s, size_t n) {
  int rc = SQLITE_OK;
  if (n == 0) return SQLITE_OK;
  i64 *sorted = sqlite3_malloc64((sqlite3_uint64)n * sizeof(i64));
  if (!sorted) return SQLITE_NOMEM;
  memcpy(sorted, s->heap.id, n * sizeof(i64));
  qsort(sorted, n, sizeof(i64), cmp_i64);
  for (size_t i = 1; i < n && rc == SQLITE_OK; i++)
    if (sorted[i] == sorted[i - 1])
      rc = knn_corrupt(&s->zErr, "facevec_knn", &s->ix, "row %lld is stored twice", sorted[i]);
  sqlite3_free(sorted);
  for (size_t i = 0; i < n && rc == SQLITE_OK; i++)
    if (s->heap.at[i] >= 0) rc = check_map(s, s->heap.id[i], s->heap.at[i]);
  return rc;
}

int knn_search(sqlite3 *db, const char *tbl, const float *q, size_t dim, i64 k,
                      fv_metric metric, int has_thr, double thr, i64 **ids, double **dist,
                      size_t *n, char **pzErr) {
  knn_query s;
  sqlite3_stmt *pin = NULL;
  int rc;
  i64 n_log = 0;
  memset(&s, 0, sizeof s);
  s.db = db;
  s.metric = metric;
  s.q = q;
  s.dim = dim;
  *ids = NULL;
  *dist = NULL;
  *n = 0;

  /* One snapshot for every statement below: a statement left open on the
  ** schema holds the read transaction, so a writer committing meanwhile
  ** cannot show us the log of one state and the chunks of another. */
  rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM main.sqlite_schema", -1, &pin, NULL);
  if (rc == SQLITE_OK && sqlite3_step(pin) != SQLITE_ROW) rc = sqlite3_errcode(db);
  if (rc != SQLITE_OK) goto finish;
  rc = knn_index_open(db, "facevec_knn", tbl, &s.ix, &s.zErr);
  if (rc != SQLITE_OK) goto finish;
  if (s.ix.dim > 0 && (i64)dim != s.ix.dim) {
    s.zErr = sqlite3_mprintf("facevec_knn: query has %lld dimensions, the index of %s has "
                             "%lld",
                             (i64)dim, s.ix.tbl, s.ix.dim);
    rc = SQLITE_ERROR;
    goto finish;
  }
  if (metric == FV_COSINE || metric == FV_EUCLIDEAN_L2) {
    double self;
    if (fv_distance(metric, q, q, dim, &self) == FV_ZERO_NORM) {
      s.zErr = sqlite3_mprintf("facevec_knn: %s distance is undefined for a query vector "
                               "whose norm is 0",
                               metric == FV_COSINE ? "cosine" : "euclidean_l2");
      rc = SQLITE_ERROR;
      goto finish;
    }
  }
  for (size_t i = 0; i < dim; i++) {
    if (!isfinite(q[i])) {
      s.zErr = sqlite3_mprintf("facevec_knn: query element %lld is %s", (i64)i,
                               isnan(q[i]) ? "NaN" : "infinite");
      rc = SQLITE_ERROR;
      goto finish;
    }
  }
  rc = load_pending(&s, &n_log);
  if (rc != SQLITE_OK) goto finish;

  /* "At most k": the heap grows with the rows seen, never to k itself. */
  s.heap.k = (uint64_t)k > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)k;
  s.thr_key = HUGE_VAL;
  if (has_thr) {
    /* A slightly loose bound in key space; the exact test is on the output. */
    if (metric == FV_EUCLIDEAN)
      s.thr_key = thr < 0 ? -1.0 : thr * thr * (1 + 1e-9) + 1e-300;
    else
      s.thr_key = thr;
  }
  if (s.ix.dim > 0 && s.ix.tail_chunk > 0) {
    rc = scan_chunks(&s);
    if (rc != SQLITE_OK) goto finish;
  }
  if (n_log > 0 || s.ix.building) {
    rc = scan_pending(&s);
    if (rc != SQLITE_OK) goto finish;
  }
  heap_sort(&s.heap);
  rc = check_results(&s, s.heap.size);
  if (rc != SQLITE_OK) goto finish;
  {
    size_t m = 0;
    for (size_t i = 0; i < s.heap.size; i++) {
      double d = s.heap.d[i];
      if (metric == FV_EUCLIDEAN) d = sqrt(d);
      if (has_thr && !(d <= thr)) break;
      s.heap.d[m] = d;
      s.heap.id[m] = s.heap.id[i];
      m++;
    }
    *n = m;
  }
  *ids = s.heap.id;
  *dist = s.heap.d;
  s.heap.id = NULL;
  s.heap.d = NULL;
finish:
  if (rc != SQLITE_OK) {
    if (s.zErr) {
      *pzErr = s.zErr;
      s.zErr = NULL;
    } else if (rc != SQLITE_NOMEM) {
      *pzErr = sqlite3_mprintf("facevec_knn: %s", sqlite3_errmsg(db));
    }
  }
  sqlite3_free(s.zErr);
  sqlite3_free(s.heap.d);
  sqlite3_free(s.heap.id);
  sqlite3_free(s.heap.at);
  sqlite3_free(s.pending.slot);
  sqlite3_finalize(s.map_get);
  sqlite3_finalize(pin);
  knn_index_clear(&s.ix);
  return rc;
}

