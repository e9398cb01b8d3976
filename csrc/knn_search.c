/*
** knn_search.c - the search behind facevec_knn: one pass over the index's
** chunks and the rows with pending changes (read from the table itself),
** each row scored for every query into that query's bounded heap (fv_heap,
** the one top_k uses).
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "codes.h"
#include "facevec.h"
#include "knn_chunk_cache.h"
#include "knn_search.h"
#include "knn_store.h"

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

/* Where a stored vector sits, as one number (a heap entry's tag): chunk ids
** stay below KNN_MAX_CHUNKS and slots below 2^16 (KNN_MAX_CHUNK). -1: read
** from the source table. */
static inline i64 slot_key(i64 chunk, i64 slot) { return chunk << 16 | slot; }

/* One pass over an index, shared by the queries of a request. */
typedef struct knn_scan {
  sqlite3 *db;
  knn_index ix;
  fv_metric metric;
  size_t dim;
  rid_set pending;
  int pending_has_min;   /* INT64_MIN is pending (cannot live in the set) */
  /* The log's rowids, the chunk ids, rid -> (chunk, slot): prepared for
  ** this search, or borrowed from the cache (then only reset). */
  sqlite3_stmt *log_st, *chunks_st, *map_get;
  int borrowed;
  /* IVF with nprobe < lists: probe[q * lists + l] says query q reads list l;
  ** ivf_st lists the chunks with their list. NULL: every chunk, every query. */
  unsigned char *probe;
  sqlite3_stmt *ivf_st;
  /* The cache, when it describes this index (open_index): its statements,
  ** centroids and parameters are borrowed. */
  knn_cache *cache;
  /* The chunks of this snapshot kept in memory (NULL: read each one). */
  const knn_chunk_key *chunk_key;
  struct knn_visit {
    i64 id, list;
  } *visit;
  size_t n_visit;
  size_t n_all; /* queries of the request */
  /* Compressed storage: the int8 parameters; approx while the chunks' codes
  ** are ranked (their keys only choose candidates for re-ranking). */
  float *qparams;
  int approx;
  char *zErr;
} knn_scan;

/* One query: its spec, its threshold in key space, its heap. */
typedef struct knn_query {
  const knn_query_spec *spec;
  double thr_key; /* keys above this cannot qualify (HUGE_VAL: no threshold) */
  double worst;   /* the full heap's largest key; NaN until the heap is full */
  double thr_exact; /* thr_key, kept while compressed codes are ranked */
  fv_heap heap;
} knn_query;

/* The heap's buffers start small and double with the rows that enter it (up
** to k), so a huge k costs nothing and no count read from the file sizes an
** allocation. */
static int heap_reserve(fv_heap *h) {
  if (h->size < h->cap || h->size >= h->k) return SQLITE_OK; /* a full heap replaces its worst */
  size_t cap = h->cap ? h->cap * 2 : 64;
  if (cap > h->k || cap < h->cap) cap = h->k;
  if (cap > (size_t)INT64_MAX / sizeof(double)) return SQLITE_NOMEM;
  double *dist = sqlite3_realloc64(h->dist, (sqlite3_uint64)cap * sizeof(double));
  if (!dist) return SQLITE_NOMEM;
  h->dist = dist;
  int64_t *id = sqlite3_realloc64(h->id, (sqlite3_uint64)cap * sizeof(int64_t));
  if (!id) return SQLITE_NOMEM;
  h->id = id;
  int64_t *tag = sqlite3_realloc64(h->tag, (sqlite3_uint64)cap * sizeof(int64_t));
  if (!tag) return SQLITE_NOMEM;
  h->tag = tag;
  h->cap = cap;
  return SQLITE_OK;
}

static void heap_free(fv_heap *h) {
  sqlite3_free(h->dist);
  sqlite3_free(h->id);
  sqlite3_free(h->tag);
  memset(h, 0, sizeof *h);
}

/* Rows whose stored copy may be out of date: scored from the source table. */
static inline int is_pending(const knn_scan *sc, i64 rid) {
  if (sc->ix.building && rid >= sc->ix.build_next) return 1;
  if (rid == INT64_MIN) return sc->pending_has_min;
  return rid_set_has(&sc->pending, rid);
}

/* The rowid map agrees that row rid is stored at slot_key `at`: a slot
** whose rowid was forged, or one left over, cannot pose as a row. */
static int check_map(knn_scan *sc, i64 rid, i64 at) {
  i64 chunk = 0, slot = 0;
  int rc =
      knn_map_find(sc->db, "facevec_knn", &sc->ix, sc->map_get, rid, &chunk, &slot, &sc->zErr);
  if (rc == SQLITE_OK && (chunk == 0 || slot_key(chunk, slot) != at))
    rc = knn_corrupt(&sc->zErr, "facevec_knn", &sc->ix,
                     "slot %lld of chunk %lld holds row %lld, which the map puts %s",
                     at & 0xFFFF, at >> 16, rid, chunk == 0 ? "nowhere" : "elsewhere");
  return rc;
}

/* Offer live row rid's key (stored at slot_key `at`, or -1) to query q. The
** key is the squared distance for euclidean (its sqrt is taken for the
** final k only), else the metric's value. A key that is no number is an
** error: the row cannot be ranked. */
static inline int offer(knn_scan *sc, knn_query *q, int rc, double key, i64 rid, i64 at) {
  if (sc->approx && (rc != FV_OK || key != key)) {
    /* A code the metric cannot rank: a candidate, re-ranked (and its error,
    ** if any, reported) from the exact vector. */
    rc = FV_OK;
    key = -1.0;
  }
  if (key > q->worst) return SQLITE_OK; /* most rows: a full heap's worst beats them */
  if (rc == FV_OK && key == key) {
    if (key <= q->thr_key && fv_heap_accepts(&q->heap, key, rid)) {
      if (heap_reserve(&q->heap) != SQLITE_OK) return SQLITE_NOMEM;
      fv_heap_push(&q->heap, key, rid, at);
      if (q->heap.size == q->heap.k) q->worst = q->heap.dist[0];
    }
    return SQLITE_OK;
  }
  if (rc == FV_ZERO_NORM)
    sc->zErr = sqlite3_mprintf("facevec_knn: distance undefined for %s row %lld, whose %s "
                               "has norm 0",
                               sc->ix.tbl, rid, sc->ix.col);
  else
    sc->zErr = sqlite3_mprintf("facevec_knn: distance to %s row %lld is NaN: its %s holds "
                               "NaN or infinity",
                               sc->ix.tbl, rid, sc->ix.col);
  return SQLITE_ERROR;
}

/* Score live row rid (vector v) for query q. The row is argument a, the
** query b, as in <metric>_distance(embedding, query), so the distances are
** the scalar functions' to the bit. */
static int consider(knn_scan *sc, knn_query *q, const float *v, i64 rid, i64 at) {
  double key = NAN; /* unless a distance is computed */
  int rc = sc->metric == FV_EUCLIDEAN || sc->metric == FV_EUCLIDEAN_SQUARED
               ? (key = fv_l2_squared(v, q->spec->vector, sc->dim), FV_OK)
               : fv_distance(sc->metric, v, q->spec->vector, sc->dim, &key);
  return offer(sc, q, rc, key, rid, at);
}

/* A batch of queries over one whole chunk (rows [lo, hi) in cbuf): each
** active query's candidates come from fv_top_k_batch (the screened kernel:
** a dot product per row, most rows skipped), and only they get their exact
** key (consider: the scalar functions' bits). A row left out has at least k
** valid rows strictly nearer in float32, so strictly nearer exactly (rounding
** is monotonic): it cannot be among the k. When that cannot be shown (ties at
** the cut, a NaN, a zero norm), the query scores every row itself. */
static int batch_chunk(knn_scan *sc, knn_query *queries, const size_t *active, size_t n_active,
                       const float *qall, float *qbuf, const float *cbuf, size_t lo, size_t hi,
                       const unsigned char *valid, const i64 *rowids, i64 id, i64 kmax,
                       int64_t *idx, float *dist, size_t *nf) {
  const size_t dim = sc->dim, rows = hi - lo;
  size_t n_excl = 0, kk;
  int rc = SQLITE_OK;
  unsigned char *skip = sqlite3_malloc64(rows ? rows : 1);
  if (!skip) return SQLITE_NOMEM;
  for (size_t r = lo; r < hi; r++) {
    int bad = !(valid[r / 8] >> (r % 8) & 1);
    if (!bad && is_pending(sc, rowids[r])) {
      rc = check_map(sc, rowids[r], slot_key(id, (i64)r));
      if (rc != SQLITE_OK) goto finish;
      bad = 1;
    }
    skip[r - lo] = (unsigned char)bad;
    n_excl += (size_t)bad;
  }
  kk = (size_t)kmax + n_excl + 1;
  if (kk > rows) kk = rows;
  /* Queries a tile at a time (the output buffers hold KNN_BATCH_TILE x
  ** (kmax + KNN_BATCH_MAX_EXCL + 1)); a chunk with more excluded rows than
  ** that is scored row by row. */
  for (size_t t = 0; t < n_active && rc == SQLITE_OK; t += KNN_BATCH_TILE) {
    const size_t nt = n_active - t < KNN_BATCH_TILE ? n_active - t : KNN_BATCH_TILE;
    double max_d = 0;
    int frc = FV_NAN;
    int64_t bq = -1, br = -1;
    if (n_excl <= KNN_BATCH_MAX_EXCL) {
      /* Rows beyond every heap's worst cannot enter any: the kernel may drop
      ** them (with a margin over float32 rounding). */
      for (size_t a = t; a < t + nt && max_d < HUGE_VAL; a++) {
        double w = queries[active[a]].worst;
        if (w != w || queries[active[a]].thr_key < HUGE_VAL) {
          max_d = HUGE_VAL;
          break;
        }
        if (sc->metric == FV_EUCLIDEAN) w = sqrt(w);
        if (w > max_d) max_d = w;
      }
      if (max_d < HUGE_VAL) max_d = max_d * (1 + 1e-5) + 1e-30;
      for (size_t a = 0; a < nt; a++)
        memcpy(qbuf + a * dim, qall + active[t + a] * dim, dim * sizeof(float));
      frc = fv_top_k_batch(sc->metric, qbuf, nt, cbuf, rows, dim, kk, max_d, idx, dist, nf, &bq,
                           &br);
      if (frc == FV_NOMEM) {
        rc = SQLITE_NOMEM;
        break;
      }
    }
    for (size_t a = 0; a < nt && rc == SQLITE_OK; a++) {
      knn_query *q = &queries[active[t + a]];
      const int64_t *ci = idx + a * kk;
      const float *cd = dist + a * kk;
      size_t found = frc == FV_OK ? nf[a] : 0;
      int sure = frc == FV_OK;
      if (sure && found == kk && kk < rows) {
        /* Cut off: k valid candidates strictly before the last one? */
        size_t better = 0;
        for (size_t j = 0; j + 1 < found; j++)
          if (cd[j] < cd[found - 1] && ci[j] >= 0 && (size_t)ci[j] < rows && !skip[ci[j]])
            better++;
        sure = better >= q->heap.k;
      }
      if (sure) {
        for (size_t j = 0; j < found && rc == SQLITE_OK; j++) {
          int64_t r = ci[j];
          if (r < 0 || (size_t)r >= rows || skip[r]) continue;
          rc = consider(sc, q, cbuf + (size_t)r * dim, rowids[lo + (size_t)r],
                        slot_key(id, (i64)(lo + (size_t)r)));
        }
      } else {
        for (size_t r = 0; r < rows && rc == SQLITE_OK; r++)
          if (!skip[r])
            rc = consider(sc, q, cbuf + r * dim, rowids[lo + r], slot_key(id, (i64)(lo + r)));
      }
    }
  }
finish:
  sqlite3_free(skip);
  return rc;
}

/* A buffer of at least `bytes`: the cache's number i, or else one of the
** scan's own (*own, freed by the caller). */
static void *scan_buffer(knn_scan *sc, int i, sqlite3_uint64 bytes, void **own) {
  knn_cache *c = sc->cache;
  if (bytes == 0) bytes = 1;
  if (!c) return *own = sqlite3_malloc64(bytes);
  if (c->buf_bytes[i] < bytes) {
    sqlite3_free(c->buf[i]);
    c->buf_bytes[i] = 0;
    c->buf[i] = sqlite3_malloc64(bytes);
    if (!c->buf[i]) return NULL;
    c->buf_bytes[i] = (size_t)bytes;
  }
  return c->buf[i];
}

/* Every valid slot of every chunk, read a block of vectors at a time (about
** KNN_BLOCK_BYTES: small enough to stay in L2 while each query scores it). */
static int scan_chunks(knn_scan *sc, knn_query *queries, size_t n_queries) {
  static const char *const column[3] = {"valid", "rowids", "vectors"};
  knn_index *ix = &sc->ix;
  sqlite3_stmt *st = NULL;
  sqlite3_blob *blob[3] = {NULL, NULL, NULL};
  unsigned char *valid_buf = NULL;
  i64 *rowids_buf = NULL;
  float *block = NULL;
  const knn_chunk *held = NULL; /* the chunk being scored, from the cache */
  double *keys = NULL; /* euclidean: block_rows keys per query */
  /* Compressed euclidean: each query as the code kernels take it, and a
  ** block's float32 keys. */
  float *qprep = NULL, *fkeys = NULL;
  char *chunks_tbl = NULL;
  const size_t dim = sc->dim, vbytes = dim * sizeof(float);
  /* Bytes of one stored vector (compressed: codes read into raw, decoded). */
  const size_t ebytes = dim * (size_t)knn_elem_bytes(ix->storage);
  const int coded = ix->storage != KNN_STORE_F32;
  void *raw = NULL, *own[3] = {NULL, NULL, NULL};
  const int euclid = sc->metric == FV_EUCLIDEAN || sc->metric == FV_EUCLIDEAN_SQUARED;
  /* Euclidean codes are scored where they lie: a block holds as many of
  ** them as KNN_BLOCK_BYTES; anything else is read (and decoded) into a
  ** block of that many float32 bytes. */
  size_t block_rows = KNN_BLOCK_BYTES / (coded && euclid ? ebytes : vbytes);
  int rc = SQLITE_OK;
  /* No row needs its rowid looked up (no pending change, no build under
  ** way): a block's euclidean keys are filtered by each query's bound
  ** before any row is looked at (cand: the rows within it, and their keys). */
  const int no_pending = !ix->building && sc->pending.n == 0 && !sc->pending_has_min;
  uint32_t *cand = NULL;
  double *cand_keys = NULL;
  /* IVF: the queries that read this chunk, and a mixed chunk's slot lists. */
  const i64 lists = ix->lists;
  size_t *active = NULL, n_active = n_queries;
  int32_t *slot_list = NULL;
  sqlite3_blob *b_slots = NULL;
  char *lists_tbl = NULL;
  /* A batch (KNN_BATCH_MIN queries or more, k up to KNN_BATCH_MAX_K): whole
  ** chunks through batch_chunk. */
  float *qall = NULL, *qbuf = NULL, *cbuf = NULL, *bdist = NULL;
  int64_t *bidx = NULL;
  size_t *bnf = NULL;
  i64 kmax = 0;
  for (size_t i = 0; i < n_queries; i++) {
    size_t hk = queries[i].heap.k;
    i64 kq = hk > KNN_BATCH_MAX_K ? KNN_BATCH_MAX_K + 1 : (i64)hk;
    if (kq > kmax) kmax = kq;
  }
  int batch = n_queries >= KNN_BATCH_MIN && kmax <= KNN_BATCH_MAX_K;
  if (block_rows < 1) block_rows = 1;
  if (block_rows > (size_t)ix->chunk_size) block_rows = (size_t)ix->chunk_size;

  chunks_tbl = sqlite3_mprintf("%s_fvknn_chunks", ix->tbl);
  valid_buf = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size / 8);
  rowids_buf = scan_buffer(sc, 0, (sqlite3_uint64)ix->chunk_size * sizeof(i64), &own[0]);
  block = scan_buffer(sc, 1, coded && euclid ? 1 : block_rows * vbytes, &own[1]);
  if (euclid) {
    keys = sqlite3_malloc64((sqlite3_uint64)n_queries * block_rows * sizeof(double));
    cand = sqlite3_malloc64((sqlite3_uint64)block_rows * sizeof(uint32_t));
    cand_keys = sqlite3_malloc64((sqlite3_uint64)block_rows * sizeof(double));
    if (!keys || !cand || !cand_keys) rc = SQLITE_NOMEM;
  }
  active = sqlite3_malloc64((sqlite3_uint64)n_queries * sizeof(size_t));
  if (sc->probe) {
    lists_tbl = sqlite3_mprintf("%s_fvknn_chunklists", ix->tbl);
    slot_list = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size * sizeof(int32_t));
    if (!lists_tbl || !slot_list) rc = SQLITE_NOMEM;
  }
  if (coded && keys) {
    qprep = sqlite3_malloc64((sqlite3_uint64)n_queries * vbytes);
    fkeys = sqlite3_malloc64((sqlite3_uint64)block_rows * sizeof(float));
    if (!qprep || !fkeys) rc = SQLITE_NOMEM;
    for (size_t i = 0; qprep && i < n_queries; i++)
      fv_codes_query(ix->storage, sc->qparams, queries[i].spec->vector, dim, qprep + i * dim);
  }
  if (coded) {
    size_t most = batch && (size_t)ix->chunk_size > block_rows ? (size_t)ix->chunk_size
                                                               : block_rows;
    raw = scan_buffer(sc, 2, (sqlite3_uint64)most * ebytes, &own[2]);
    if (!raw) rc = SQLITE_NOMEM;
  }
  if (!chunks_tbl || !valid_buf || !rowids_buf || !block || !active || rc == SQLITE_NOMEM) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  for (size_t i = 0; i < n_queries; i++) active[i] = i;
  if (batch) {
    const size_t cs = (size_t)ix->chunk_size, kk = (size_t)kmax + KNN_BATCH_MAX_EXCL + 1;
    qall = sqlite3_malloc64((sqlite3_uint64)n_queries * vbytes);
    qbuf = sqlite3_malloc64((sqlite3_uint64)KNN_BATCH_TILE * vbytes);
    cbuf = sqlite3_malloc64((sqlite3_uint64)cs * vbytes);
    bidx = sqlite3_malloc64((sqlite3_uint64)KNN_BATCH_TILE * kk * sizeof(int64_t));
    bdist = sqlite3_malloc64((sqlite3_uint64)KNN_BATCH_TILE * kk * sizeof(float));
    bnf = sqlite3_malloc64((sqlite3_uint64)KNN_BATCH_TILE * sizeof(size_t));
    if (!qall || !qbuf || !cbuf || !bidx || !bdist || !bnf) {
      rc = SQLITE_NOMEM;
      goto finish;
    }
    for (size_t i = 0; i < n_queries; i++)
      memcpy(qall + i * dim, queries[i].spec->vector, vbytes);
  }
  st = sc->probe ? NULL : sc->chunks_st;
  size_t next_visit = 0;
  /* The chunks: every one (exact, or all lists probed), or those of the
  ** probed lists and the mixed ones, in id order (sc->visit). */
  while (st ? (rc = sqlite3_step(st)) == SQLITE_ROW
            : (rc = next_visit < sc->n_visit ? SQLITE_ROW : SQLITE_DONE) == SQLITE_ROW) {
    i64 id = st ? sqlite3_column_int64(st, 0) : sc->visit[next_visit].id, list = -1;
    int list_type = SQLITE_INTEGER;
    /* The chunk's valid bits, rowids and stored vectors: the cache's copy,
    ** or read into the scan's buffers (stored NULL: read a block at a time). */
    const unsigned char *valid = valid_buf, *stored = NULL;
    const i64 *rowids = rowids_buf;
    knn_chunk_release(held);
    held = NULL;
    if (!st) list = sc->visit[next_visit++].list;
    size_t n_slots = 0;
    if (id < 1 || id > ix->tail_chunk) {
      rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "the IVF list of chunk %lld is "
                       "missing or malformed", id);
      goto finish;
    }
    if (id == ix->tail_chunk && ix->tail_used == 0) continue;
    rc = SQLITE_OK;
    if (sc->probe) {
      if (list_type != SQLITE_INTEGER || list < -1 || list >= lists) {
        rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "the IVF list of chunk %lld is "
                         "missing or malformed", id);
        goto finish;
      }
      n_active = 0;
      for (size_t i = 0; i < n_queries; i++)
        if (list < 0 || sc->probe[i * (size_t)lists + (size_t)list]) active[n_active++] = i;
      if (n_active == 0) continue; /* no query reads this list */
    }
    int keep = sc->chunk_key != NULL; /* read into the cache on a miss */
    if (keep) held = knn_chunk_get(sc->chunk_key, id);
    if (held && ((i64)held->n_slots > ix->chunk_size ||
                 (id == ix->tail_chunk && ix->tail_used < ix->chunk_size &&
                  (i64)held->n_slots != ix->tail_used))) {
      /* Not this description's chunk (only a forged file can get here): the
      ** file's own is read, within the scan's buffers. */
      knn_chunk_release(held);
      held = NULL;
      keep = 0;
    }
    if (held) {
      /* Read in this generation, so in this snapshot: sizes already checked. */
      n_slots = held->n_slots;
      valid = held->valid;
      rowids = held->rowids;
      stored = held->vectors;
    }
    for (int c = 0; c < 3 && rc == SQLITE_OK && !held; c++)
      rc = blob[c] ? sqlite3_blob_reopen(blob[c], id)
                   : sqlite3_blob_open(sc->db, "main", chunks_tbl, column[c], id, 0, &blob[c]);
    if (rc != SQLITE_OK) goto db_error;
    /* knn_index_check saw these sizes in this same snapshot; a mismatch here
    ** is a bug, never a reason to read out of bounds. A sealed chunk may be
    ** shorter than chunk_size (format 2). */
    if (!held) {
      const i64 cap = (i64)sqlite3_blob_bytes(blob[0]) * 8,
                used = knn_chunk_slots(ix, id, cap / 8);
      if (used < 0 || sqlite3_blob_bytes(blob[1]) != (int)(cap * 8) ||
          sqlite3_blob_bytes(blob[2]) != (int)(cap * (i64)ebytes)) {
        rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "chunk %lld changed size", id);
        goto finish;
      }
      n_slots = (size_t)used;
    }
    if (n_slots == 0) continue;
    if (sc->probe && list < 0) {
      rc = b_slots ? sqlite3_blob_reopen(b_slots, id)
                   : sqlite3_blob_open(sc->db, "main", lists_tbl, "slots", id, 0, &b_slots);
      if (rc != SQLITE_OK || sqlite3_blob_bytes(b_slots) != (int)(ix->chunk_size * 4)) {
        rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "the slots of chunk %lld are "
                         "malformed", id);
        goto finish;
      }
      rc = sqlite3_blob_read(b_slots, slot_list, (int)(n_slots * 4), 0);
      if (rc != SQLITE_OK) goto db_error;
    }
    if (!held) {
      /* The whole chunk into the cache when its budget has room, else the
      ** bits and rowids now and the vectors a block at a time. */
      knn_chunk *fill = keep ? knn_chunk_new(sc->chunk_key, id, n_slots, ebytes) : NULL;
      unsigned char *to_valid = fill ? (unsigned char *)fill->valid : valid_buf;
      i64 *to_rowids = fill ? (i64 *)fill->rowids : rowids_buf;
      rc = sqlite3_blob_read(blob[0], to_valid, (int)((n_slots + 7) / 8), 0);
      if (rc == SQLITE_OK) rc = sqlite3_blob_read(blob[1], to_rowids, (int)(n_slots * 8), 0);
      if (rc == SQLITE_OK && fill)
        rc = sqlite3_blob_read(blob[2], (void *)fill->vectors, (int)(n_slots * ebytes), 0);
      if (fill && rc == SQLITE_OK) {
        held = knn_chunk_put(fill);
        valid = held->valid;
        rowids = held->rowids;
        stored = held->vectors;
      } else if (fill) {
        knn_chunk_discard(fill);
      }
      if (rc != SQLITE_OK) goto db_error;
    }
    if (batch && list >= -1 && !(sc->probe && list < 0)) {
      /* The whole chunk at once (a mixed chunk, whose rows each query reads
      ** or not, takes the path below). */
      size_t lo = 0, hi = n_slots;
      while (lo < hi && !(valid[lo / 8] >> (lo % 8) & 1)) lo++;
      while (hi > lo && !(valid[(hi - 1) / 8] >> ((hi - 1) % 8) & 1)) hi--;
      if (lo == hi) continue;
      const void *src = stored ? (const void *)(stored + lo * ebytes) : NULL;
      const float *rows_at = cbuf;
      if (!src) {
        rc = sqlite3_blob_read(blob[2], coded ? raw : (void *)cbuf, (int)((hi - lo) * ebytes),
                               (int)(lo * ebytes));
        if (rc != SQLITE_OK) goto db_error;
        src = raw;
      }
      if (coded)
        knn_decode(ix->storage, sc->qparams, src, hi - lo, dim, cbuf);
      else if (stored)
        rows_at = src;
      rc = batch_chunk(sc, queries, active, n_active, qall, qbuf, rows_at, lo, hi, valid,
                       rowids, id, kmax, bidx, bdist, bnf);
      if (rc != SQLITE_OK) goto finish;
      continue;
    }
    for (size_t first = 0; first < n_slots; first += block_rows) {
      size_t rows = n_slots - first < block_rows ? n_slots - first : block_rows;
      size_t lo = first, hi = first + rows; /* trim invalid rows at both ends */
      while (lo < hi && !(valid[lo / 8] >> (lo % 8) & 1)) lo++;
      while (hi > lo && !(valid[(hi - 1) / 8] >> ((hi - 1) % 8) & 1)) hi--;
      if (lo == hi) continue;
      /* The block's codes (coded) or vectors, where they lie in the cache. */
      const void *codes = raw;
      const float *vecs = block;
      if (stored && coded) {
        codes = stored + lo * ebytes;
      } else if (stored) {
        vecs = (const float *)(const void *)(stored + lo * ebytes);
      } else {
        rc = sqlite3_blob_read(blob[2], coded ? raw : (void *)block, (int)((hi - lo) * ebytes),
                               (int)(lo * ebytes));
        if (rc != SQLITE_OK) goto db_error;
      }
      if (keys && no_pending && !(sc->probe && list < 0)) {
        /* Each query's keys of the block, and only the rows within its
        ** bound (its heap's worst and its threshold: offer would turn the
        ** others away) are looked at, in the order of the rows. */
        for (size_t a = 0; a < n_active; a++) {
          knn_query *q = &queries[active[a]];
          double bound = q->worst;
          size_t nc = 0;
          if (bound != bound || q->thr_key < bound) bound = q->thr_key;
          if (coded) {
            fv_codes_l2sq_rows(ix->storage, sc->qparams, qprep + active[a] * dim, codes,
                               hi - lo, dim, fkeys);
            for (size_t r = 0; r < hi - lo; r++) {
              double key = fkeys[r];
              if (key > bound) continue;
              cand[nc] = (uint32_t)r;
              cand_keys[nc++] = key;
            }
          } else {
            nc = fv_l2_squared_rows_within(q->spec->vector, vecs, hi - lo, dim, bound, cand,
                                           cand_keys);
          }
          for (size_t j = 0; j < nc; j++) {
            size_t r = lo + cand[j];
            if (!(valid[r / 8] >> (r % 8) & 1)) continue;
            rc = offer(sc, q, FV_OK, cand_keys[j], rowids[r], slot_key(id, (i64)r));
            if (rc != SQLITE_OK) goto finish;
          }
        }
        continue;
      }
      if (coded && keys) {
        /* Euclidean keys straight from the codes, a kernel call per query. */
        for (size_t a = 0; a < n_active; a++) {
          double *kq = keys + a * block_rows;
          fv_codes_l2sq_rows(ix->storage, sc->qparams, qprep + active[a] * dim, codes, hi - lo,
                             dim, fkeys);
          for (size_t r = 0; r < hi - lo; r++) kq[r] = fkeys[r];
        }
      } else {
        if (coded) {
          knn_decode(ix->storage, sc->qparams, codes, hi - lo, dim, block);
          vecs = block;
        }
        for (size_t a = 0; a < n_active; a++) {
          /* Euclidean keys of the whole block in one kernel call. */
          if (keys)
            fv_l2_squared_rows(queries[active[a]].spec->vector, vecs, hi - lo, dim,
                               keys + a * block_rows);
        }
      }
      for (size_t r = lo; r < hi; r++) {
        if (!(valid[r / 8] >> (r % 8) & 1)) continue;
        i64 at = slot_key(id, (i64)r);
        const unsigned char *reads = NULL; /* mixed chunk: which queries read row r */
        if (sc->probe && list < 0) {
          if (slot_list[r] < 0 || slot_list[r] >= lists) {
            rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "slot %lld of chunk %lld names "
                             "list %d", (i64)r, id, (int)slot_list[r]);
            goto finish;
          }
          reads = sc->probe + slot_list[r];
        }
        /* A pending row is scored from the table; its stale copy must still
        ** be the one the map knows. */
        if (is_pending(sc, rowids[r])) {
          rc = check_map(sc, rowids[r], at);
        } else if (keys) {
          for (size_t a = 0; a < n_active && rc == SQLITE_OK; a++)
            if (!reads || reads[active[a] * (size_t)lists])
              rc = offer(sc, &queries[active[a]], FV_OK, keys[a * block_rows + r - lo],
                         rowids[r], at);
        } else {
          for (size_t a = 0; a < n_active && rc == SQLITE_OK; a++)
            if (!reads || reads[active[a] * (size_t)lists])
              rc = consider(sc, &queries[active[a]], vecs + (r - lo) * dim, rowids[r], at);
        }
        if (rc != SQLITE_OK) goto finish;
      }
    }
  }
  if (rc != SQLITE_DONE) goto db_error;
  rc = SQLITE_OK;
  goto finish;
db_error:
  knn_db_error(sc->db, &sc->zErr);
finish:
  knn_chunk_release(held);
  for (int c = 0; c < 3; c++) sqlite3_blob_close(blob[c]);
  sqlite3_blob_close(b_slots);
  if (st) sqlite3_reset(st);
  sqlite3_free(active);
  sqlite3_free(slot_list);
  sqlite3_free(qall);
  sqlite3_free(qbuf);
  sqlite3_free(cbuf);
  sqlite3_free(bidx);
  sqlite3_free(bdist);
  sqlite3_free(bnf);
  sqlite3_free(lists_tbl);
  sqlite3_free(chunks_tbl);
  sqlite3_free(valid_buf);
  for (int i = 0; i < 3; i++) sqlite3_free(own[i]);
  sqlite3_free(keys);
  sqlite3_free(cand);
  sqlite3_free(cand_keys);
  sqlite3_free(qprep);
  sqlite3_free(fkeys);
  return rc;
}

/* Whether an IVF index leaves out row rid, whose vector v (or its error,
** rc and sc->zErr) knn_row_vector gave: one it cannot read (malformed, of
** another dimension) or place (NaN, infinity), as its build and its writer
** leave such a row out (knn_ivf_build.c, knn_store.c). The exact index keeps
** them, and a query reports them. */
static int pending_left_out(knn_scan *sc, int *rc, const fv_vector *v) {
  if (sc->ix.lists <= 0) return 0;
  if (*rc == SQLITE_ERROR) {
    sqlite3_free(sc->zErr);
    sc->zErr = NULL;
    *rc = SQLITE_OK;
    return 1;
  }
  for (size_t j = 0; *rc == SQLITE_OK && v->v && j < v->n; j++)
    if (!isfinite(v->v[j])) return 1;
  return 0;
}

/* Score rows with pending changes straight from the source table. */
static int scan_pending(knn_scan *sc, knn_query *queries, size_t n_queries) {
  knn_index *ix = &sc->ix;
  sqlite3_stmt *st = NULL;
  int rc;
  /* During a build, rows the map does not know are read from the table too,
  ** whatever the cursor says: a forged cursor cannot hide rows. */
  if (ix->building)
    rc = knn_prepare(sc->db, &st, &sc->zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" AS t WHERE \"%w\" >= ?1 "
                     "OR \"%w\" IN (SELECT rid FROM \"main\".\"%w_fvknn_log\") OR NOT EXISTS "
                     "(SELECT 1 FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = t.\"%w\")",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->pk, ix->tbl, ix->tbl, ix->pk);
  else
    rc = knn_prepare(sc->db, &st, &sc->zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" IN "
                     "(SELECT rid FROM \"main\".\"%w_fvknn_log\")",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->tbl);
  if (rc != SQLITE_OK) goto finish;
  if (ix->building) sqlite3_bind_int64(st, 1, ix->build_next);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    fv_vector v;
    rc = knn_row_vector("facevec_knn", ix, rid, sqlite3_column_type(st, 1),
                        sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1),
                        (i64)sc->dim, &v, &sc->zErr);
    int left_out = pending_left_out(sc, &rc, &v);
    for (size_t i = 0; i < n_queries && rc == SQLITE_OK && v.v && !left_out; i++)
      rc = consider(sc, &queries[i], v.v, rid, -1);
    fv_vector_free(&v);
    if (rc != SQLITE_OK) goto finish;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else
    knn_db_error(sc->db, &sc->zErr);
finish:
  sqlite3_finalize(st);
  return rc;
}

static int load_pending(knn_scan *sc, i64 *n_log) {
  sqlite3_stmt *st = sc->log_st;
  int rc;
  *n_log = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    if (sqlite3_column_type(st, 0) != SQLITE_INTEGER) {
      rc = knn_corrupt(&sc->zErr, "facevec_knn", &sc->ix, "its log holds a %s rowid",
                       fv_type_name(sqlite3_column_type(st, 0)));
      break;
    }
    (*n_log)++;
    if (rid == INT64_MIN)
      sc->pending_has_min = 1;
    else if ((rc = rid_set_add(&sc->pending, rid)) != SQLITE_OK)
      break;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else if (rc != SQLITE_NOMEM)
    knn_db_error(sc->db, &sc->zErr);
  sqlite3_reset(st);
  return rc;
}

static int cmp_visit(const void *a, const void *b) {
  i64 x = *(const i64 *)a, y = *(const i64 *)b;
  return (x > y) - (x < y);
}

/* IVF: each query's nprobe nearest lists (euclidean over the centroids, as
** rows were assigned), into sc->probe. nprobe >= lists leaves sc->probe
** NULL: every chunk is read, the exact answer. */
static int choose_lists(knn_scan *sc, const knn_request *req) {
  const knn_index *ix = &sc->ix;
  const size_t L = (size_t)ix->lists, nq = req->n_queries, dim = sc->dim;
  i64 np = req->nprobe > 0 ? req->nprobe : ix->nprobe;
  float *centroids = NULL, *qs = NULL, *dist = NULL;
  int64_t *idx = NULL, bad_q = -1, bad_r = -1;
  size_t *found = NULL;
  int rc;
  if (ix->lists < 1 || np >= ix->lists) return SQLITE_OK;
  if (sc->cache && sc->cache->centroids) {
    centroids = sc->cache->centroids;
  } else {
    rc = knn_ivf_centroids(sc->db, "facevec_knn", ix, &centroids, &sc->zErr);
    if (rc != SQLITE_OK) return rc;
    if (sc->cache) sc->cache->centroids = centroids;
  }
  sc->probe = sqlite3_malloc64((sqlite3_uint64)nq * L);
  qs = sqlite3_malloc64((sqlite3_uint64)nq * dim * sizeof(float));
  idx = sqlite3_malloc64((sqlite3_uint64)nq * (size_t)np * sizeof(int64_t));
  dist = sqlite3_malloc64((sqlite3_uint64)nq * (size_t)np * sizeof(float));
  found = sqlite3_malloc64((sqlite3_uint64)nq * sizeof(size_t));
  if (!sc->probe || !qs || !idx || !dist || !found) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  memset(sc->probe, 0, nq * L);
  for (size_t i = 0; i < nq; i++) memcpy(qs + i * dim, req->queries[i].vector, dim * 4);
  int frc = fv_top_k_batch(FV_EUCLIDEAN, qs, nq, centroids, L, dim, (size_t)np, HUGE_VAL, idx,
                           dist, found, &bad_q, &bad_r);
  if (frc == FV_NOMEM) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  if (frc != FV_OK) {
    rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "centroid %lld is not a finite vector",
                     (i64)bad_r);
    goto finish;
  }
  for (size_t i = 0; i < nq; i++)
    for (size_t j = 0; j < found[i] && j < (size_t)np; j++) {
      int64_t l = idx[i * (size_t)np + j];
      if (l >= 0 && (size_t)l < L) sc->probe[i * L + (size_t)l] = 1;
    }
  /* The chunks of every list some query reads, and the mixed ones (-1). */
  if (sc->cache && sc->cache->ivf_st) {
    sc->ivf_st = sc->cache->ivf_st;
  } else {
    rc = knn_prepare(sc->db, &sc->ivf_st, &sc->zErr,
                     "SELECT id, list FROM \"main\".\"%w_fvknn_chunklists\" WHERE list = ?1",
                     ix->tbl);
    if (rc == SQLITE_OK && sc->cache) sc->cache->ivf_st = sc->ivf_st;
  }
  /* Each list's chunks are read once while the file does not change: the
  ** cache keeps them. */
  knn_cache *cache = sc->cache;
  if (rc == SQLITE_OK && cache && !cache->list_ids) {
    cache->list_ids = sqlite3_malloc64((sqlite3_uint64)(L + 1) * sizeof(i64 *));
    cache->list_n = sqlite3_malloc64((sqlite3_uint64)(L + 1) * sizeof(size_t));
    if (!cache->list_ids || !cache->list_n) {
      sqlite3_free(cache->list_ids);
      sqlite3_free(cache->list_n);
      cache->list_ids = NULL;
      cache->list_n = NULL;
      cache = NULL;
    } else {
      memset(cache->list_ids, 0, (L + 1) * sizeof(i64 *));
      cache->list_slots = L + 1;
    }
  }
  if (cache && cache->list_slots != L + 1) cache = NULL;
  size_t cap = 0;
  for (i64 l = -1; rc == SQLITE_OK && l < ix->lists; l++) {
    int wanted = l < 0;
    for (size_t i = 0; i < nq && !wanted; i++) wanted = sc->probe[i * L + (size_t)l];
    if (!wanted) continue;
    const i64 *known = cache ? cache->list_ids[l + 1] : NULL;
    size_t first = sc->n_visit, n_known = known ? cache->list_n[l + 1] : 0;
    if (known && sc->n_visit + n_known > cap) {
      size_t ncap = cap ? cap : 256;
      while (ncap < sc->n_visit + n_known) ncap *= 2;
      struct knn_visit *nv = sqlite3_realloc64(sc->visit, ncap * sizeof *nv);
      if (!nv) {
        rc = SQLITE_NOMEM;
        break;
      }
      sc->visit = nv;
      cap = ncap;
    }
    if (known) {
      for (size_t j = 0; j < n_known; j++) {
        sc->visit[sc->n_visit].id = known[j];
        sc->visit[sc->n_visit++].list = l;
      }
      continue;
    }
    sqlite3_bind_int64(sc->ivf_st, 1, l);
    while ((rc = sqlite3_step(sc->ivf_st)) == SQLITE_ROW) {
      if (sc->n_visit == cap) {
        size_t ncap = cap ? cap * 2 : 256;
        struct knn_visit *nv = sqlite3_realloc64(sc->visit, ncap * sizeof *nv);
        if (!nv) {
          rc = SQLITE_NOMEM;
          break;
        }
        sc->visit = nv;
        cap = ncap;
      }
      if (sqlite3_column_type(sc->ivf_st, 0) != SQLITE_INTEGER) {
        rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "the IVF list of a chunk is malformed");
        break;
      }
      sc->visit[sc->n_visit].id = sqlite3_column_int64(sc->ivf_st, 0);
      sc->visit[sc->n_visit].list = l;
      sc->n_visit++;
    }
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    else if (rc == SQLITE_ROW) rc = SQLITE_ERROR;
    else if (rc != SQLITE_OK && rc != SQLITE_NOMEM && !sc->zErr) knn_db_error(sc->db, &sc->zErr);
    sqlite3_reset(sc->ivf_st);
    if (rc == SQLITE_OK && cache) {
      /* Kept for the next search (none kept when memory is short). */
      i64 *ids = sqlite3_malloc64((sqlite3_uint64)(sc->n_visit - first + 1) * sizeof(i64));
      for (size_t j = first; ids && j < sc->n_visit; j++) ids[j - first] = sc->visit[j].id;
      cache->list_ids[l + 1] = ids;
      cache->list_n[l + 1] = sc->n_visit - first;
    }
  }
  if (rc == SQLITE_OK && sc->n_visit > 1)
    qsort(sc->visit, sc->n_visit, sizeof *sc->visit, cmp_visit);
finish:
  if (rc != SQLITE_OK) {
    sqlite3_free(sc->probe);
    sc->probe = NULL;
  }
  if (!sc->cache || centroids != sc->cache->centroids) sqlite3_free(centroids);
  sqlite3_free(qs);
  sqlite3_free(idx);
  sqlite3_free(dist);
  sqlite3_free(found);
  return rc;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

/* The results name each row once, and every stored one sits where the map
** says: duplicated or relabelled slots show here rather than as answers. */
static int check_results(knn_scan *sc, const fv_heap *h) {
  int rc = SQLITE_OK;
  if (h->size == 0) return SQLITE_OK;
  int64_t *sorted = sqlite3_malloc64((sqlite3_uint64)h->size * sizeof(int64_t));
  if (!sorted) return SQLITE_NOMEM;
  memcpy(sorted, h->id, h->size * sizeof(int64_t));
  qsort(sorted, h->size, sizeof(int64_t), cmp_i64);
  for (size_t i = 1; i < h->size && rc == SQLITE_OK; i++)
    if (sorted[i] == sorted[i - 1])
      rc = knn_corrupt(&sc->zErr, "facevec_knn", &sc->ix, "row %lld is stored twice",
                       (i64)sorted[i]);
  sqlite3_free(sorted);
  for (size_t i = 0; i < h->size && rc == SQLITE_OK; i++)
    if (h->tag[i] >= 0) rc = check_map(sc, h->id[i], h->tag[i]);
  return rc;
}

/* A query vector facevec_knn can rank by: finite, and with a direction for
** cosine and euclidean_l2. */
static int check_query(knn_scan *sc, const float *v) {
  for (size_t i = 0; i < sc->dim; i++) {
    float x;
    memcpy(&x, v + i, sizeof x); /* any alignment */
    if (!isfinite(x)) {
      sc->zErr = sqlite3_mprintf("facevec_knn: query element %lld is %s", (i64)i,
                                 isnan(x) ? "NaN" : "infinite");
      return SQLITE_ERROR;
    }
  }
  double self;
  if ((sc->metric == FV_COSINE || sc->metric == FV_EUCLIDEAN_L2) &&
      fv_distance(sc->metric, v, v, sc->dim, &self) == FV_ZERO_NORM) {
    sc->zErr = sqlite3_mprintf("facevec_knn: %s distance is undefined for a query vector "
                               "whose norm is 0",
                               sc->metric == FV_COSINE ? "cosine" : "euclidean_l2");
    return SQLITE_ERROR;
  }
  return SQLITE_OK;
}

/* The query's heap as its answer: ascending, euclidean keys square-rooted,
** cut at the threshold (the key-space bound was slightly loose). */
static void finish_query(knn_query *q, fv_metric metric, knn_result *out) {
  size_t m = 0;
  for (size_t i = 0; i < q->heap.size; i++) {
    double d = q->heap.dist[i];
    if (metric == FV_EUCLIDEAN) d = sqrt(d);
    if (q->spec->has_threshold && !(d <= q->spec->threshold)) break;
    q->heap.dist[m] = d;
    q->heap.id[m] = q->heap.id[i];
    m++;
  }
  out->n = m;
  out->ids = q->heap.id;
  out->dist = q->heap.dist;
  q->heap.id = NULL;
  q->heap.dist = NULL;
}

void knn_result_clear(knn_result *r) {
  sqlite3_free(r->ids);
  sqlite3_free(r->dist);
  memset(r, 0, sizeof *r);
}

static void cache_statements_clear(knn_cache *c);
static void cache_data_clear(knn_cache *c);

static void cache_data_clear(knn_cache *c) {
  knn_chunk_key_clear(&c->chunk_key);
  sqlite3_free(c->centroids);
  sqlite3_free(c->qparams);
  c->centroids = c->qparams = NULL;
  for (size_t i = 0; c->list_ids && i < c->list_slots; i++) sqlite3_free(c->list_ids[i]);
  sqlite3_free(c->list_ids);
  sqlite3_free(c->list_n);
  c->list_ids = NULL;
  c->list_n = NULL;
  c->list_slots = 0;
}

void knn_cache_clear(knn_cache *c) {
  cache_statements_clear(c);
  cache_data_clear(c);
  for (int i = 0; i < 3; i++) sqlite3_free(c->buf[i]);
  sqlite3_finalize(c->schema_st);
  sqlite3_free(c->table);
  knn_index_clear(&c->ix);
  memset(c, 0, sizeof *c);
}

static char *dup(const char *s) { return s ? sqlite3_mprintf("%s", s) : NULL; }

/* A copy of ix with its own names. */
static int index_copy(knn_index *to, const knn_index *from) {
  *to = *from;
  to->tbl = dup(from->tbl);
  to->col = dup(from->col);
  to->pk = dup(from->pk);
  if (to->tbl && to->col && to->pk) return SQLITE_OK;
  knn_index_clear(to);
  return SQLITE_NOMEM;
}

/* This connection has written in its open transaction: what a query learns
** now may be rolled back, which neither the data version nor the change
** count would show. */
static int in_write_transaction(sqlite3 *db) {
  if (sqlite3_libversion_number() >= 3034000) /* sqlite3_txn_state */
    return sqlite3_txn_state(db, "main") == SQLITE_TXN_WRITE;
  return !sqlite3_get_autocommit(db);
}

/* Load and check req's index, or take it from the cache when the file has
** not changed since the cache was filled (then only the cheap checks of the
** scan itself run). The read transaction must be open: pin holds it. */
static int open_index(knn_scan *sc, const char *table, knn_cache *cache, int schema_version) {
  unsigned data_version = 0;
  int changes = sqlite3_total_changes(sc->db), rc;
  int versioned = cache && sqlite3_file_control(sc->db, "main", SQLITE_FCNTL_DATA_VERSION,
                                                &data_version) == SQLITE_OK;
  if (versioned && cache->valid && cache->data_version == data_version &&
      cache->changes == changes && cache->schema_version == schema_version &&
      strcmp(cache->table, table) == 0) {
    rc = index_copy(&sc->ix, &cache->ix);
    if (rc == SQLITE_OK) sc->cache = cache;
    if (rc == SQLITE_OK && cache->chunk_key.file) sc->chunk_key = &cache->chunk_key;
    return rc;
  }
  rc = knn_index_open(sc->db, "facevec_knn", table, &sc->ix, &sc->zErr);
  if (rc != SQLITE_OK || !versioned) return rc;
  cache->valid = 0;
  cache_data_clear(cache);
  sqlite3_free(cache->table);
  knn_index_clear(&cache->ix);
  cache->table = dup(table);
  if (!cache->table || index_copy(&cache->ix, &sc->ix) != SQLITE_OK) return SQLITE_OK;
  cache->data_version = data_version;
  cache->changes = changes;
  cache->schema_version = schema_version;
  /* Inside a write transaction, used by this query only: checked again by the
  ** next (its chunks are known by a generation a rollback never brings back). */
  cache->valid = !in_write_transaction(sc->db);
  sc->cache = cache;
  /* The chunks kept in memory for this snapshot: those of its generation
  ** (none for a file of an older format, whose writers kept no number). */
  {
    i64 generation = 0;
    int found = 0;
    if (sc->ix.format >= KNN_FORMAT_GENERATION &&
        knn_generation_read(sc->db, sc->ix.tbl, &generation, &found) == SQLITE_OK && found &&
        knn_chunk_key_set(&cache->chunk_key, sqlite3_db_filename(sc->db, "main"), sc->ix.tbl,
                          generation) == SQLITE_OK &&
        cache->chunk_key.file)
      sc->chunk_key = &cache->chunk_key;
  }
  return SQLITE_OK;
}

static void cache_statements_clear(knn_cache *c) {
  sqlite3_finalize(c->log_st);
  sqlite3_finalize(c->chunks_st);
  sqlite3_finalize(c->map_get);
  sqlite3_free(c->stmt_table);
  sqlite3_finalize(c->ivf_st);
  sqlite3_finalize(c->get_st);
  c->log_st = c->chunks_st = c->map_get = c->ivf_st = c->get_st = NULL;
  c->stmt_table = NULL;
}

/* The statements of a search of sc's index: the cache's when it holds them
** for this table, else prepared (and given to the cache, if any). */
static int scan_statements(knn_scan *sc, knn_cache *cache) {
  const char *tbl = sc->ix.tbl;
  int rc;
  if (cache && cache->stmt_table && strcmp(cache->stmt_table, tbl) == 0) {
    sc->log_st = cache->log_st;
    sc->chunks_st = cache->chunks_st;
    sc->map_get = cache->map_get;
    sc->borrowed = 1;
    return SQLITE_OK;
  }
  rc = knn_prepare(sc->db, &sc->log_st, &sc->zErr,
                   "SELECT rid FROM \"main\".\"%w_fvknn_log\"", tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(sc->db, &sc->chunks_st, &sc->zErr,
                     "SELECT id FROM \"main\".\"%w_fvknn_chunks\" ORDER BY id", tbl);
  if (rc == SQLITE_OK) rc = knn_map_prepare(sc->db, &sc->ix, &sc->map_get, &sc->zErr);
  if (rc != SQLITE_OK || !cache) return rc;
  cache_statements_clear(cache);
  cache->stmt_table = dup(tbl);
  if (!cache->stmt_table) return SQLITE_OK; /* no cache this time */
  cache->log_st = sc->log_st;
  cache->chunks_st = sc->chunks_st;
  cache->map_get = sc->map_get;
  sc->borrowed = 1;
  return SQLITE_OK;
}

/* Compressed storage: each query's candidates (ranked by their codes) get
** their exact key from the source table's own vector, as the scalar SQL
** functions compute it, and the k nearest of them (within the threshold)
** are the answer. Rows read from the table already have theirs. */
static int rerank(knn_scan *sc, knn_query *queries, size_t n_queries) {
  const knn_index *ix = &sc->ix;
  sqlite3_stmt *get = sc->cache ? sc->cache->get_st : NULL;
  int rc = SQLITE_OK;
  if (!get) {
    rc = knn_prepare(sc->db, &get, &sc->zErr,
                     "SELECT \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" = ?1", ix->col,
                     ix->tbl, ix->pk);
    if (rc == SQLITE_OK && sc->cache) sc->cache->get_st = get;
  }
  for (size_t i = 0; i < n_queries && rc == SQLITE_OK; i++) {
    knn_query *q = &queries[i];
    fv_heap old = q->heap;
    const knn_query_spec *spec = q->spec;
    fv_heap_init(&q->heap,
                 (uint64_t)spec->k > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)spec->k, NULL,
                 NULL, NULL, 0);
    q->worst = NAN;
    q->thr_key = q->thr_exact;
    for (size_t j = 0; j < old.size && rc == SQLITE_OK; j++) {
      if (old.tag[j] < 0) {
        rc = offer(sc, q, FV_OK, old.dist[j], old.id[j], old.tag[j]);
        continue;
      }
      fv_vector v;
      memset(&v, 0, sizeof v);
      sqlite3_bind_int64(get, 1, old.id[j]);
      rc = sqlite3_step(get);
      if (rc == SQLITE_ROW) {
        rc = knn_row_vector("facevec_knn", ix, old.id[j], sqlite3_column_type(get, 0),
                            sqlite3_column_blob(get, 0), sqlite3_column_bytes(get, 0),
                            (i64)sc->dim, &v, &sc->zErr);
        if (rc == SQLITE_OK && !v.v)
          rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "it stores row %lld, whose %s is "
                           "NULL", (i64)old.id[j], ix->col);
        if (rc == SQLITE_OK) rc = consider(sc, q, v.v, old.id[j], old.tag[j]);
      } else if (rc == SQLITE_DONE) {
        rc = knn_corrupt(&sc->zErr, "facevec_knn", ix, "it stores row %lld, which %s does "
                         "not hold", (i64)old.id[j], ix->tbl);
      } else {
        knn_db_error(sc->db, &sc->zErr);
      }
      fv_vector_free(&v);
      sqlite3_reset(get);
    }
    heap_free(&old);
  }
  if (sc->cache && get == sc->cache->get_st)
    sqlite3_reset(get);
  else
    sqlite3_finalize(get);
  return rc;
}

int knn_search(sqlite3 *db, const knn_request *req, knn_result *results, knn_cache *cache,
               char **pzErr) {
  knn_scan sc;
  knn_query *queries = NULL;
  sqlite3_stmt *pin = NULL;
  i64 n_log = 0;
  int rc, schema_version = 0;
  memset(&sc, 0, sizeof sc);
  memset(results, 0, req->n_queries * sizeof *results);
  sc.db = db;
  sc.n_all = req->n_queries;
  sc.metric = req->metric;
  sc.dim = req->dim;

  /* One snapshot for every statement below: a statement left open on the
  ** schema holds the read transaction, so a writer committing meanwhile
  ** cannot show us the log of one state and the chunks of another. Reading
  ** the schema version opens it. */
  if (cache && cache->schema_st) {
    pin = cache->schema_st;
    rc = SQLITE_OK;
  } else {
    rc = sqlite3_prepare_v2(db, "PRAGMA main.schema_version", -1, &pin, NULL);
    if (cache && rc == SQLITE_OK) cache->schema_st = pin;
  }
  if (rc == SQLITE_OK && sqlite3_step(pin) != SQLITE_ROW) rc = sqlite3_errcode(db);
  if (rc != SQLITE_OK) goto finish;
  schema_version = sqlite3_column_int(pin, 0);
  rc = open_index(&sc, req->table, cache, schema_version);
  if (rc == SQLITE_OK) rc = scan_statements(&sc, cache);
  if (rc != SQLITE_OK) goto finish;
  if (!sc.borrowed) sc.cache = NULL; /* its statements are another table's */
  if (sc.ix.dim > 0 && (i64)sc.dim != sc.ix.dim) {
    sc.zErr = sqlite3_mprintf("facevec_knn: query has %lld dimensions, the index of %s has "
                              "%lld",
                              (i64)sc.dim, sc.ix.tbl, sc.ix.dim);
    rc = SQLITE_ERROR;
    goto finish;
  }
  queries = sqlite3_malloc64((sqlite3_uint64)req->n_queries * sizeof *queries);
  if (!queries) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  memset(queries, 0, req->n_queries * sizeof *queries);
  for (size_t i = 0; i < req->n_queries; i++) {
    const knn_query_spec *spec = &req->queries[i];
    knn_query *q = &queries[i];
    rc = check_query(&sc, spec->vector);
    if (rc != SQLITE_OK) goto finish;
    q->spec = spec;
    /* "At most k": the heap grows with the rows seen, never to k itself. */
    /* Compressed storage: the heap holds the candidates to re-rank. */
    i64 hk = sc.ix.storage != KNN_STORE_F32 ? knn_rerank_k(&sc.ix, spec->k) : spec->k;
    fv_heap_init(&q->heap, (uint64_t)hk > (uint64_t)SIZE_MAX ? SIZE_MAX : (size_t)hk, NULL,
                 NULL, NULL, 0);
    q->thr_key = HUGE_VAL;
    q->worst = NAN;
    if (spec->has_threshold) /* a slightly loose bound in key space; exact at the end */
      q->thr_key = req->metric == FV_EUCLIDEAN
                       ? spec->threshold * spec->threshold * (1 + 1e-9) + 1e-300
                       : spec->threshold;
    q->thr_exact = q->thr_key;
    if (sc.ix.storage != KNN_STORE_F32) q->thr_key = HUGE_VAL; /* codes: no bound */
  }
  rc = load_pending(&sc, &n_log);
  if (rc == SQLITE_OK && sc.ix.dim > 0 && sc.ix.tail_chunk > 0) rc = choose_lists(&sc, req);
  if (rc == SQLITE_OK && sc.ix.dim > 0 && sc.ix.tail_chunk > 0) {
    if (sc.cache && sc.cache->qparams) {
      sc.qparams = sc.cache->qparams;
    } else {
      rc = knn_quant_params(db, "facevec_knn", &sc.ix, &sc.qparams, &sc.zErr);
      if (rc == SQLITE_OK && sc.cache) sc.cache->qparams = sc.qparams;
    }
  }
  if (rc == SQLITE_OK && sc.ix.dim > 0 && sc.ix.tail_chunk > 0) {
    sc.approx = sc.ix.storage != KNN_STORE_F32;
    rc = scan_chunks(&sc, queries, req->n_queries);
    sc.approx = 0;
  }
  if (rc == SQLITE_OK && (n_log > 0 || sc.ix.building))
    rc = scan_pending(&sc, queries, req->n_queries);
  if (rc == SQLITE_OK && sc.ix.storage != KNN_STORE_F32)
    rc = rerank(&sc, queries, req->n_queries);
  for (size_t i = 0; i < req->n_queries && rc == SQLITE_OK; i++) {
    fv_heap_sort(&queries[i].heap);
    rc = check_results(&sc, &queries[i].heap);
    if (rc == SQLITE_OK) finish_query(&queries[i], req->metric, &results[i]);
  }
finish:
  if (rc != SQLITE_OK) {
    for (size_t i = 0; i < req->n_queries; i++) knn_result_clear(&results[i]);
    if (sc.zErr) {
      *pzErr = sc.zErr;
      sc.zErr = NULL;
    } else if (rc != SQLITE_NOMEM) {
      *pzErr = sqlite3_mprintf("facevec_knn: %s", sqlite3_errmsg(db));
    }
  }
  for (size_t i = 0; queries && i < req->n_queries; i++) heap_free(&queries[i].heap);
  sqlite3_free(queries);
  sqlite3_free(sc.zErr);
  sqlite3_free(sc.pending.slot);
  sqlite3_free(sc.probe);
  sqlite3_free(sc.visit);
  if (!sc.cache || sc.qparams != sc.cache->qparams) sqlite3_free(sc.qparams);
  if (sc.cache && sc.ivf_st == sc.cache->ivf_st)
    sqlite3_reset(sc.ivf_st);
  else
    sqlite3_finalize(sc.ivf_st);
  if (sc.borrowed) {
    sqlite3_reset(sc.log_st);
    sqlite3_reset(sc.chunks_st);
    sqlite3_reset(sc.map_get);
  } else {
    sqlite3_finalize(sc.log_st);
    sqlite3_finalize(sc.chunks_st);
    sqlite3_finalize(sc.map_get);
  }
  if (cache && pin == cache->schema_st)
    sqlite3_reset(pin);
  else
    sqlite3_finalize(pin);
  knn_index_clear(&sc.ix);
  return rc;
}
