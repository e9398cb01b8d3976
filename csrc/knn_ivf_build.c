/*
** knn_ivf_build.c - an IVF knn index built in batches, each batch its own
** transaction (facevec_knn_build commits them one by one; facevec_knn_sync
** runs one per call), with memory bounded whatever the table's size, and
** bad stored rows left out and named instead of failing the build.
**
** 1. knn_ivf_start: one pass over the table counts its vectors, keeps a
**    reservoir sample (the training rows, and the calibration queries among
**    them) and, for int8, each dimension's range, of the vectors of the
**    declared dimension (option dim), else of the size most rows have (a
**    second pass when that was not the first size read). k-means on the
**    sample (or the given centroids); the centroids, the IVF tables and the
**    build's state (T_fvknn_build) are saved. The index is left building.
** 2. knn_ivf_step, assigning: the rows in rowid order from the state's
**    cursor, each read once: assigned to its nearest centroid and given its
**    final place at once - the p-th row of list l goes to slot p % chunk_size
**    of chunk l * KNN_IVF_STRIDE + p / chunk_size + 1 - which the rowid map
**    records in rowid order (appends, no random writes). Its rowid is staged
**    in T_fvknn_stage, one row per list and batch (key list << 32 | batch);
**    its code is not (it would be written twice: stage, then chunk).
**    The calibration queries' exact 10 nearest rows are merged from the same
**    rows (no second pass).
** 3. knn_ivf_step, writing: list by list, its staged rows (in rowid order)
**    have their vectors read again by rowid and become its chunks, each
**    written once at its final size (a list's last chunk cut to its rows,
**    rounded up to 64 slots); its staged rows go. A table that fits one
**    batch is written at once from memory, nothing staged.
** 4. The last step: the default nprobe from the calibration, the state and
**    the stage dropped, the build cursor cleared; then the changes logged
**    meanwhile are applied as any sync applies them.
**
** Chunk ids are sparse (list-major), which the format allows: ids lie in
** 1..tail_chunk and each chunk names its list in T_fvknn_chunklists.
** Until the last step the description's build cursor stays at the start, so
** a query reads every row from the table itself: exact answers, at the cost
** of a full scan, while a build is unfinished.
**
** A row whose vector cannot be read (malformed, another dimension, NaN or
** infinity) is left out and named in T_fvknn_skipped(rid, reason); the
** writer keeps that table current when such a row changes (knn_store.c).
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "batch.h"
#include "facevec.h"
#include "kmeans.h"
#include "knn_store.h"

/* Chunks per list: ids l * stride + 1 .. (l + 1) * stride stay below
** KNN_MAX_CHUNKS for every list (KNN_MAX_LISTS = 2^16). */
#define KNN_IVF_STRIDE ((i64)1 << 23)
/* Calibration: queries, neighbours, and the share of them the default
** nprobe's lists must hold. */
#define CAL_QUERIES 200
#define CAL_K 10
#define CAL_RECALL 0.97
/* Rows assigned per kernel call, and bytes of codes staged per batch. */
#define ASSIGN_ROWS 8192
#define STAGE_BYTES (32 * 1024 * 1024)
/* Rows per transaction of facevec_knn_build. */
#define BUILD_BATCH_ROWS 131072

static const char *const suffix_ivf = "_fvknn_ivf";
static const char *const suffix_lists = "_fvknn_chunklists";

/* The build's state: one row of T_fvknn_build. */
typedef struct ivf_state {
  char *options;   /* the options the build was started with */
  i64 phase;       /* 1 assigning, 2 writing */
  i64 next_rid;    /* phase 1: rows with rowid >= next_rid are still to read */
  i64 batch;       /* staged batches so far */
  i64 next_list;   /* phase 2: lists below it are written */
  i64 rows;        /* vectors counted when training (progress) */
  i64 staged, written, skipped;
  i64 *counts;     /* rows assigned to each list so far */
  i64 n_cal;       /* calibration queries (0: nprobe was given) */
  i64 *cal_rid;    /* each query's own row */
  float *cal_q;    /* n_cal x dim: their vectors, read from the table */
  float *cal_d;    /* n_cal x CAL_K nearest distances so far, ascending */
  i64 *cal_list;   /* their lists */
} ivf_state;

static void state_free(ivf_state *s) {
  sqlite3_free(s->options);
  sqlite3_free(s->counts);
  sqlite3_free(s->cal_rid);
  sqlite3_free(s->cal_q);
  sqlite3_free(s->cal_d);
  sqlite3_free(s->cal_list);
  memset(s, 0, sizeof *s);
}

/* The options as one text, compared when a build is run again. */
static char *options_text(const char *col, const knn_build_opts *o) {
  uint64_t h = 1469598103934665603ull;
  const unsigned char *p = o->centroids;
  for (i64 i = 0; p && i < o->centroids_bytes; i++) h = (h ^ p[i]) * 1099511628211ull;
  char dim[32] = "";
  if (o->dim > 0) sqlite3_snprintf(sizeof dim, dim, " dim=%lld", o->dim);
  return sqlite3_mprintf("col=%s lists=%lld nprobe=%lld sample=%lld iterations=%lld "
                         "storage=%d rerank=%lld centroids=%lld:%016llx%s",
                         col, o->lists, o->nprobe, o->sample, o->iterations, o->storage,
                         o->rerank, p ? o->centroids_bytes : -1, (unsigned long long)h, dim);
}

static int all_finite(const float *v, i64 dim) {
  for (i64 j = 0; j < dim; j++)
    if (!isfinite(v[j])) return 0;
  return 1;
}

static int blob_copy(sqlite3_stmt *st, int i, i64 bytes, void **out) {
  *out = NULL;
  if (sqlite3_column_type(st, i) != SQLITE_BLOB ? bytes != 0
                                                 : sqlite3_column_bytes(st, i) != bytes)
    return SQLITE_CORRUPT;
  *out = sqlite3_malloc64((sqlite3_uint64)bytes + 8);
  if (!*out) return SQLITE_NOMEM;
  if (bytes) memcpy(*out, sqlite3_column_blob(st, i), (size_t)bytes);
  return SQLITE_OK;
}

/* Load the state of ix's build, every length checked against ix. */
static int state_load(sqlite3 *db, const char *fn, const knn_index *ix, ivf_state *s,
                      char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc;
  memset(s, 0, sizeof *s);
  rc = knn_prepare(db, &st, NULL,
                   "SELECT options, phase, next_rid, batch, next_list, rows, staged, written, "
                   "skipped, counts, cal_rid, cal_d, cal_list FROM \"main\".\"%w%s\"",
                   ix->tbl, knn_build_suffix[0]);
  if (rc != SQLITE_OK) {
    sqlite3_finalize(st);
    return knn_corrupt(pzErr, fn, ix, "its build state is missing: %s", sqlite3_errmsg(db));
  }
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? knn_corrupt(pzErr, fn, ix, "its build state is empty")
                             : (knn_db_error(db, pzErr), rc);
  }
  for (int i = 1; i <= 8; i++)
    if (sqlite3_column_type(st, i) != SQLITE_INTEGER) {
      sqlite3_finalize(st);
      return knn_corrupt(pzErr, fn, ix, "its build state's %s is not an integer",
                         sqlite3_column_name(st, i));
    }
  s->options = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
  s->phase = sqlite3_column_int64(st, 1);
  s->next_rid = sqlite3_column_int64(st, 2);
  s->batch = sqlite3_column_int64(st, 3);
  s->next_list = sqlite3_column_int64(st, 4);
  s->rows = sqlite3_column_int64(st, 5);
  s->staged = sqlite3_column_int64(st, 6);
  s->written = sqlite3_column_int64(st, 7);
  s->skipped = sqlite3_column_int64(st, 8);
  s->n_cal = sqlite3_column_type(st, 10) == SQLITE_BLOB ? sqlite3_column_bytes(st, 10) / 8 : 0;
  rc = s->options ? SQLITE_OK : SQLITE_NOMEM;
  if (rc == SQLITE_OK && (s->phase < 1 || s->phase > 2 || s->batch < 0 || s->batch >= (i64)1 << 32 ||
                          s->next_list < 0 || s->next_list > ix->lists || s->n_cal > CAL_QUERIES))
    rc = SQLITE_CORRUPT;
  if (rc == SQLITE_OK) rc = blob_copy(st, 9, ix->lists * 8, (void **)&s->counts);
  if (rc == SQLITE_OK) rc = blob_copy(st, 10, s->n_cal * 8, (void **)&s->cal_rid);
  if (sqlite3_column_type(st, 11) == SQLITE_NULL && sqlite3_column_type(st, 12) == SQLITE_NULL) {
    /* No row merged yet: nothing found. */
    s->cal_d = sqlite3_malloc64((sqlite3_uint64)s->n_cal * CAL_K * 4 + 8);
    s->cal_list = sqlite3_malloc64((sqlite3_uint64)s->n_cal * CAL_K * 8 + 8);
    if (rc == SQLITE_OK && (!s->cal_d || !s->cal_list)) rc = SQLITE_NOMEM;
    for (i64 j = 0; rc == SQLITE_OK && j < s->n_cal * CAL_K; j++)
      s->cal_d[j] = HUGE_VALF, s->cal_list[j] = -1;
  } else {
    if (rc == SQLITE_OK) rc = blob_copy(st, 11, s->n_cal * CAL_K * 4, (void **)&s->cal_d);
    if (rc == SQLITE_OK) rc = blob_copy(st, 12, s->n_cal * CAL_K * 8, (void **)&s->cal_list);
  }
  for (i64 l = 0; rc == SQLITE_OK && l < ix->lists; l++)
    if (s->counts[l] < 0 || s->counts[l] / ix->chunk_size >= KNN_IVF_STRIDE) rc = SQLITE_CORRUPT;
  sqlite3_finalize(st);
  st = NULL;
  /* The calibration queries: their rows' vectors, read again (one a row
  ** changed or deleted meanwhile stays as it is now, or zero). */
  if (rc == SQLITE_OK) {
    s->cal_q = sqlite3_malloc64((sqlite3_uint64)(s->n_cal * ix->dim * 4) + 8);
    if (!s->cal_q) rc = SQLITE_NOMEM;
    else memset(s->cal_q, 0, (size_t)(s->n_cal * ix->dim * 4));
  }
  if (rc == SQLITE_OK && s->n_cal > 0)
    rc = knn_prepare(db, &st, pzErr, "SELECT \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" = ?1",
                     ix->col, ix->tbl, ix->pk);
  for (i64 q = 0; rc == SQLITE_OK && q < s->n_cal; q++) {
    sqlite3_bind_int64(st, 1, s->cal_rid[q]);
    if (sqlite3_step(st) == SQLITE_ROW) {
      char *err = NULL;
      fv_vector v;
      rc = knn_row_vector(fn, ix, s->cal_rid[q], sqlite3_column_type(st, 0),
                          sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0), ix->dim, &v,
                          &err);
      sqlite3_free(err);
      if (rc == SQLITE_OK && v.v && all_finite(v.v, ix->dim))
        memcpy(s->cal_q + q * ix->dim, v.v, (size_t)ix->dim * 4);
      fv_vector_free(&v);
      if (rc != SQLITE_NOMEM) rc = SQLITE_OK;
    }
    sqlite3_reset(st);
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_CORRUPT) rc = knn_corrupt(pzErr, fn, ix, "its build state is malformed");
  if (rc != SQLITE_OK) state_free(s);
  return rc;
}

static int state_save(sqlite3 *db, const knn_index *ix, const ivf_state *s, char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc = knn_prepare(db, &st, pzErr,
                       "INSERT OR REPLACE INTO \"main\".\"%w%s\"(id, options, phase, next_rid, "
                       "batch, next_list, rows, staged, written, skipped, counts, cal_rid, "
                       "cal_d, cal_list) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, "
                       "?10, ?11, ?12, ?13)",
                       ix->tbl, knn_build_suffix[0]);
  if (rc != SQLITE_OK) return rc;
  sqlite3_bind_text(st, 1, s->options, -1, SQLITE_STATIC);
  sqlite3_bind_int64(st, 2, s->phase);
  sqlite3_bind_int64(st, 3, s->next_rid);
  sqlite3_bind_int64(st, 4, s->batch);
  sqlite3_bind_int64(st, 5, s->next_list);
  sqlite3_bind_int64(st, 6, s->rows);
  sqlite3_bind_int64(st, 7, s->staged);
  sqlite3_bind_int64(st, 8, s->written);
  sqlite3_bind_int64(st, 9, s->skipped);
  sqlite3_bind_blob64(st, 10, s->counts, (sqlite3_uint64)ix->lists * 8, SQLITE_STATIC);
  sqlite3_bind_blob64(st, 11, s->cal_rid, (sqlite3_uint64)s->n_cal * 8, SQLITE_STATIC);
  if (s->staged > 0) { /* else NULL: nothing found yet */
    sqlite3_bind_blob64(st, 12, s->cal_d, (sqlite3_uint64)s->n_cal * CAL_K * 4, SQLITE_STATIC);
    sqlite3_bind_blob64(st, 13, s->cal_list, (sqlite3_uint64)s->n_cal * CAL_K * 8,
                        SQLITE_STATIC);
  }
  rc = sqlite3_step(st);
  rc = rc == SQLITE_DONE ? SQLITE_OK : (knn_db_error(db, pzErr), rc);
  sqlite3_finalize(st);
  return rc;
}

/* splitmix64: the reservoir's choices, the same for the same table. */
static uint64_t next_random(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}


int knn_ivf_resumable(sqlite3 *db, const char *tbl, const char *col,
                      const knn_build_opts *opts, int *same) {
  knn_index ix;
  sqlite3_stmt *st = NULL;
  char *want = NULL;
  int rc;
  *same = 0;
  if (opts->lists <= 0) return SQLITE_OK;
  char *err = NULL;
  rc = knn_index_load(db, "", tbl, &ix, &err);
  sqlite3_free(err);
  if (rc == SQLITE_NOMEM) return rc;
  if (rc != SQLITE_OK) return SQLITE_OK; /* no index, or a damaged one: start over */
  want = options_text(col, opts);
  if (!want) rc = SQLITE_NOMEM;
  else if (ix.building && ix.lists == opts->lists &&
           knn_prepare(db, &st, NULL, "SELECT options FROM \"main\".\"%w%s\"", ix.tbl,
                       knn_build_suffix[0]) == SQLITE_OK &&
           sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    *same = strcmp((const char *)sqlite3_column_text(st, 0), want) == 0;
  sqlite3_finalize(st);
  sqlite3_free(want);
  knn_index_clear(&ix);
  return rc;
}

/* What one pass over the table found: the vectors of size dim that can be
** placed (n, their reservoir sample, their ranges), the rows that cannot
** (bad, the first one's reason), and how many rows have each size. */
#define SAMPLE_SIZES 8
typedef struct sample_state {
  i64 n, dim, bad;
  float *res, *lo; /* n_res x dim sample; dim minima then dim maxima */
  i64 *res_rid;
  char *why;
  i64 sizes[SAMPLE_SIZES][2]; /* (dimension, rows), the first sizes seen */
  int n_sizes;
} sample_state;

static void sample_clear(sample_state *p) {
  sqlite3_free(p->res);
  sqlite3_free(p->lo);
  sqlite3_free(p->res_rid);
  sqlite3_free(p->why);
  memset(p, 0, sizeof *p);
}

/* Read every vector of the table once: count and sample those of want
** dimensions (0: of the first size read), tally every size. */
static int sample_pass(sqlite3 *db, const char *fn, knn_index *ix, const knn_build_opts *o,
                       i64 want, i64 n_res, sample_state *p, char **pzErr) {
  sqlite3_stmt *st = NULL;
  uint64_t seed = 42;
  int rc;
  sample_clear(p);
  p->dim = want;
  rc = knn_prepare(db, &st, pzErr,
                   "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" IS NOT NULL "
                   "ORDER BY \"%w\"",
                   ix->pk, ix->col, ix->tbl, ix->col, ix->pk);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    char *err = NULL;
    fv_vector v;
    rc = knn_row_vector(fn, ix, rid, sqlite3_column_type(st, 1), sqlite3_column_blob(st, 1),
                        sqlite3_column_bytes(st, 1), want, &v, &err);
    if (rc == SQLITE_NOMEM) break;
    if (rc != SQLITE_OK) { /* a bad row: the assigning pass names it */
      p->bad++;
      if (!p->why) p->why = err, err = NULL;
    }
    sqlite3_free(err);
    rc = SQLITE_OK;
    if (!v.v) continue;
    if (want == 0) {
      int i = 0;
      while (i < p->n_sizes && p->sizes[i][0] != (i64)v.n) i++;
      if (i < SAMPLE_SIZES) {
        p->sizes[i][0] = (i64)v.n;
        p->sizes[i][1]++;
        if (i == p->n_sizes) p->n_sizes++;
      }
    }
    if (p->dim == 0) p->dim = (i64)v.n;
    if ((i64)v.n != p->dim) { /* another size: the tally decides */
      fv_vector_free(&v);
      continue;
    }
    const i64 dim = p->dim;
    if (!p->res) {
      if (dim > KNN_MAX_CHUNK_BYTES / (64 * 4) || o->lists * dim * 4 > KNN_MAX_CENTROID_BYTES) {
        fv_vector_free(&v);
        if (want == 0) continue; /* a size too large to index: the tally decides */
        *pzErr = sqlite3_mprintf("%s: %lld lists of %lld dimensions are too many", fn,
                                 o->lists, dim);
        rc = SQLITE_ERROR;
        break;
      }
      p->res = sqlite3_malloc64((sqlite3_uint64)(n_res + 1) * (sqlite3_uint64)dim * 4);
      p->res_rid = sqlite3_malloc64((sqlite3_uint64)(n_res + 1) * 8);
      p->lo = sqlite3_malloc64((sqlite3_uint64)dim * 8);
      if (!p->res || !p->res_rid || !p->lo) {
        fv_vector_free(&v);
        rc = SQLITE_NOMEM;
        break;
      }
      for (i64 j = 0; j < dim; j++) p->lo[j] = HUGE_VALF, p->lo[dim + j] = -HUGE_VALF;
    }
    if (all_finite(v.v, dim)) {
      i64 at = p->n < n_res ? p->n : (i64)(next_random(&seed) % (uint64_t)(p->n + 1));
      if (at < n_res) {
        memcpy(p->res + at * dim, v.v, (size_t)dim * 4);
        p->res_rid[at] = rid;
      }
      for (i64 j = 0; j < dim; j++) {
        if (v.v[j] < p->lo[j]) p->lo[j] = v.v[j];
        if (v.v[j] > p->lo[dim + j]) p->lo[dim + j] = v.v[j];
      }
      p->n++;
    } else {
      p->bad++;
      if (!p->why)
        p->why = sqlite3_mprintf("%s row %lld: %s holds NaN or infinity", ix->tbl, rid, ix->col);
    }
    fv_vector_free(&v);
  }
  sqlite3_finalize(st);
  if (rc == SQLITE_DONE) return SQLITE_OK;
  if (rc != SQLITE_NOMEM && !*pzErr) knn_db_error(db, pzErr);
  return rc;
}

int knn_ivf_start(sqlite3 *db, const char *fn, knn_index *ix, const knn_build_opts *o,
                  char **pzErr) {
  sqlite3_stmt *st = NULL;
  const i64 lists = o->lists;
  i64 n = 0, dim = 0, n_sample, n_res, n_cal, nprobe;
  float *res = NULL, *lo = NULL, *params = NULL, *centroids = NULL;
  i64 *res_rid = NULL;
  int64_t *assign = NULL;
  sample_state pass;
  ivf_state s;
  int rc;
  memset(&s, 0, sizeof s);
  memset(&pass, 0, sizeof pass);
  if (lists <= 0) return SQLITE_DONE;
  n_sample = o->centroids ? 0 : o->sample > 0 ? o->sample : 40 * lists;
  if (!o->centroids && n_sample < lists) n_sample = lists;
  n_cal = o->nprobe > 0 ? 0 : CAL_QUERIES;
  n_res = n_sample > n_cal ? n_sample : n_cal;

  /* 1. One pass: the vectors counted, a reservoir sample, the int8 ranges;
  ** a second only when the most common size was not the first one read. */
  for (i64 want = o->dim;;) {
    i64 best = 0;
    rc = sample_pass(db, fn, ix, o, want, n_res, &pass, pzErr);
    if (rc != SQLITE_OK || want > 0) break;
    for (int i = 0; i < pass.n_sizes; i++)
      if (pass.sizes[i][1] > pass.sizes[best][1]) best = i;
    if (pass.n_sizes == 0 || (pass.sizes[best][0] == pass.dim && pass.res)) break;
    want = pass.sizes[best][0]; /* read again, keeping that size */
  }
  if (rc != SQLITE_OK) goto finish;
  n = pass.n;
  dim = pass.dim;
  res = pass.res;
  res_rid = pass.res_rid;
  lo = pass.lo;
  pass.res = NULL, pass.res_rid = NULL, pass.lo = NULL;
  if (n == 0 && pass.bad > 0) { /* nothing to train on, and rows it cannot take */
    const char *why = pass.why ? pass.why : "";
    size_t at = strlen(fn);
    if (strncmp(why, fn, at) == 0 && why[at] == ':') why += at + 2;
    *pzErr = sqlite3_mprintf("%s: no vector of %s can be indexed: %lld row%s cannot be read "
                             "or placed (%s)",
                             fn, ix->tbl, pass.bad, pass.bad == 1 ? "" : "s", why);
    rc = SQLITE_ERROR;
    goto finish;
  }
  if (n == 0) {
    rc = SQLITE_DONE; /* nothing to train on: the exact index */
    goto finish;
  }
  if (lists > n) { /* as reindex --lists refuses it */
    *pzErr = sqlite3_mprintf("%s: lists (%lld) is larger than the number of vectors (%lld): "
                             "each list needs at least one vector",
                             fn, lists, n);
    rc = SQLITE_ERROR;
    goto finish;
  }
  if (n_sample > n) n_sample = n;
  if (n_cal > n) n_cal = n;
  ix->dim = dim;
  if (ix->chunk_size == 0) {
    /* Twice the mean list (rounded up to 64 slots): a query reads one chunk
    ** for most lists; a list's last chunk is cut to its rows. */
    i64 cs = (2 * n / lists + 63) / 64 * 64, most = knn_auto_chunk_size(dim);
    ix->chunk_size = cs < 64 ? 64 : cs > most ? most : cs;
  }

  /* 2. The centroids: given (checked), or k-means on the sample. */
  centroids = sqlite3_malloc64((sqlite3_uint64)lists * (sqlite3_uint64)dim * 4);
  if (!centroids) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  if (o->centroids) {
    if (o->centroids_bytes != lists * dim * 4) {
      *pzErr = sqlite3_mprintf("%s: centroids (argument 5) hold %lld bytes, expected %lld "
                               "lists x %lld dimensions x 4",
                               fn, o->centroids_bytes, lists, dim);
      rc = SQLITE_ERROR;
      goto finish;
    }
    memcpy(centroids, o->centroids, (size_t)(lists * dim * 4));
    for (i64 j = 0; j < lists * dim; j++)
      if (!isfinite(centroids[j])) {
        *pzErr = sqlite3_mprintf("%s: centroid %lld (argument 5) is not a finite vector", fn,
                                 j / dim);
        rc = SQLITE_ERROR;
        goto finish;
      }
  } else {
    int64_t bad = -1;
    assign = sqlite3_malloc64((sqlite3_uint64)n_sample * 8);
    if (!assign) {
      rc = SQLITE_NOMEM;
      goto finish;
    }
    int frc = fv_kmeans(FV_EUCLIDEAN, res, (size_t)n_sample, (size_t)dim, (size_t)lists,
                        o->iterations > 0 ? (unsigned)o->iterations : 10, 42, centroids, assign,
                        &bad);
    if (frc != FV_OK) { /* the rows are finite: only memory can fail */
      rc = frc == FV_NOMEM ? SQLITE_NOMEM : SQLITE_ERROR;
      if (rc == SQLITE_ERROR) *pzErr = sqlite3_mprintf("%s: k-means failed (%d)", fn, frc);
      goto finish;
    }
  }

  /* 3. The tables: compressed storage, IVF, the build's own. */
  if (o->storage == KNN_STORE_I8) {
    params = sqlite3_malloc64((sqlite3_uint64)dim * 8);
    if (!params) {
      rc = SQLITE_NOMEM;
      goto finish;
    }
    for (i64 j = 0; j < dim; j++) { /* 255 steps of each dimension's range */
      float a = lo[j], b = lo[dim + j], sc = (b - a) / 255.0f;
      params[j] = a;
      params[dim + j] = isfinite(sc) && sc > 0 ? sc : 1.0f;
    }
  }
  rc = knn_quant_init(db, fn, ix, o->storage, o->rerank, params, dim, pzErr);
  nprobe = o->nprobe > 0 ? (o->nprobe < lists ? o->nprobe : lists) : lists;
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(id INTEGER PRIMARY KEY, lists INTEGER NOT "
                  "NULL, nprobe INTEGER NOT NULL, trained INTEGER NOT NULL, centroids BLOB NOT "
                  "NULL)",
                  ix->tbl, suffix_ivf);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(id INTEGER PRIMARY KEY, list INTEGER NOT "
                  "NULL, slots BLOB)",
                  ix->tbl, suffix_lists);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr, "CREATE INDEX \"main\".\"%w%s_list\" ON \"%w%s\"(list)", ix->tbl,
                  suffix_lists, ix->tbl, suffix_lists);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(id INTEGER PRIMARY KEY, options TEXT NOT NULL, "
                  "phase INTEGER, next_rid INTEGER, batch INTEGER, next_list INTEGER, rows "
                  "INTEGER, staged INTEGER, written INTEGER, skipped INTEGER, counts BLOB, "
                  "cal_rid BLOB, cal_d BLOB, cal_list BLOB)",
                  ix->tbl, knn_build_suffix[0]);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(key INTEGER PRIMARY KEY, rids BLOB NOT NULL, "
                  "codes BLOB NOT NULL)",
                  ix->tbl, knn_build_suffix[1]);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(rid INTEGER PRIMARY KEY, reason TEXT NOT NULL)",
                  ix->tbl, knn_build_suffix[2]);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &st, pzErr, "INSERT INTO \"main\".\"%w%s\" VALUES (1, ?1, ?2, ?3, ?4)",
                     ix->tbl, suffix_ivf);
  if (rc == SQLITE_OK) {
    sqlite3_bind_int64(st, 1, lists);
    sqlite3_bind_int64(st, 2, nprobe);
    sqlite3_bind_int64(st, 3, n);
    sqlite3_bind_blob64(st, 4, centroids, (sqlite3_uint64)(lists * dim * 4), SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_DONE ? SQLITE_OK : (knn_db_error(db, pzErr), SQLITE_ERROR);
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_OK) goto finish;

  /* 4. The state: nothing assigned yet; the calibration queries. */
  s.options = options_text(ix->col, o);
  s.phase = 1;
  s.next_rid = INT64_MIN;
  s.rows = n;
  s.n_cal = n_cal;
  s.counts = sqlite3_malloc64((sqlite3_uint64)lists * 8);
  s.cal_rid = sqlite3_malloc64((sqlite3_uint64)n_cal * 8 + 8);
  s.cal_q = sqlite3_malloc64((sqlite3_uint64)(n_cal * dim * 4) + 8);
  s.cal_d = sqlite3_malloc64((sqlite3_uint64)n_cal * CAL_K * 4 + 8);
  s.cal_list = sqlite3_malloc64((sqlite3_uint64)n_cal * CAL_K * 8 + 8);
  if (!s.options || !s.counts || !s.cal_rid || !s.cal_q || !s.cal_d || !s.cal_list) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  memset(s.counts, 0, (size_t)lists * 8);
  if (n_cal) {
    memcpy(s.cal_rid, res_rid, (size_t)n_cal * 8);
    memcpy(s.cal_q, res, (size_t)(n_cal * dim * 4));
  }
  for (i64 j = 0; j < n_cal * CAL_K; j++) s.cal_d[j] = HUGE_VALF, s.cal_list[j] = -1;
  ix->lists = lists;
  ix->nprobe = nprobe;
  ix->trained = n;
  rc = state_save(db, ix, &s, pzErr);
  if (rc == SQLITE_OK) {
    ix->building = 1;
    ix->build_next = INT64_MIN; /* queries read every row from the table */
    rc = knn_index_save(db, ix, pzErr);
  }
finish:
  sqlite3_finalize(st);
  state_free(&s);
  sample_clear(&pass);
  sqlite3_free(res);
  sqlite3_free(res_rid);
  sqlite3_free(lo);
  sqlite3_free(params);
  sqlite3_free(centroids);
  sqlite3_free(assign);
  return rc;
}

typedef struct ivf_step {
  sqlite3 *db;
  const char *fn;
  knn_index *ix;
  ivf_state s;
  float *centroids, *qparams;
  i64 vbytes; /* bytes of one stored vector */
  char **pzErr;
  /* Writing: a row's vector read again by rowid, encoded into codes. */
  sqlite3_stmt *row_get;
  unsigned char *codes;
  i64 codes_rows;
} ivf_step;

/* ------------------------------------------------------------------------ */
/* Writing                                                                   */

typedef struct chunk_buf {
  i64 used;
  i64 *rids;
  unsigned char *codes, *valid;
} chunk_buf;

/* Write the buffered chunk as chunk id of list l, cut to its rows. */
static int write_chunk(ivf_step *b, sqlite3_stmt *chunk_ins, sqlite3_stmt *list_ins,
                       chunk_buf *c, i64 id, i64 l) {
  knn_index *ix = b->ix;
  i64 cap = (c->used + 63) / 64 * 64;
  int rc;
  memset(c->valid, 0, (size_t)cap / 8);
  for (i64 i = 0; i < c->used; i++) c->valid[i / 8] |= (unsigned char)(1u << (i % 8));
  memset(c->rids + c->used, 0, (size_t)(cap - c->used) * 8);
  memset(c->codes + c->used * b->vbytes, 0, (size_t)((cap - c->used) * b->vbytes));
  sqlite3_bind_int64(chunk_ins, 1, id);
  sqlite3_bind_blob64(chunk_ins, 2, c->valid, (sqlite3_uint64)cap / 8, SQLITE_STATIC);
  sqlite3_bind_blob64(chunk_ins, 3, c->rids, (sqlite3_uint64)cap * 8, SQLITE_STATIC);
  sqlite3_bind_blob64(chunk_ins, 4, c->codes, (sqlite3_uint64)(cap * b->vbytes), SQLITE_STATIC);
  rc = sqlite3_step(chunk_ins);
  sqlite3_reset(chunk_ins);
  if (rc == SQLITE_DONE) {
    sqlite3_bind_int64(list_ins, 1, id);
    sqlite3_bind_int64(list_ins, 2, l);
    rc = sqlite3_step(list_ins);
    sqlite3_reset(list_ins);
  }
  if (rc != SQLITE_DONE) {
    knn_db_error(b->db, b->pzErr);
    return rc;
  }
  ix->n_vectors += c->used;
  if (id > ix->tail_chunk) ix->tail_chunk = id;
  ix->tail_used = ix->chunk_size; /* sealed: the next append starts a chunk */
  c->used = 0;
  return SQLITE_OK;
}

/* Append nr rows (rids, codes) of list l to its chunks, *k of them
** written so far; a full chunk is written. */
static int append_rows(ivf_step *b, sqlite3_stmt *chunk_ins, sqlite3_stmt *list_ins,
                       chunk_buf *c, i64 l, const unsigned char *r, const unsigned char *v,
                       i64 nr, i64 *k) {
  const i64 cs = b->ix->chunk_size;
  for (i64 i = 0; i < nr;) {
    i64 take = cs - c->used < nr - i ? cs - c->used : nr - i;
    memcpy(c->rids + c->used, r + i * 8, (size_t)take * 8);
    memcpy(c->codes + c->used * b->vbytes, v + i * b->vbytes, (size_t)(take * b->vbytes));
    c->used += take;
    i += take;
    if (c->used == cs) {
      int rc = write_chunk(b, chunk_ins, list_ins, c, l * KNN_IVF_STRIDE + ++*k, l);
      if (rc != SQLITE_OK) return rc;
    }
  }
  return SQLITE_OK;
}

static int prepare_writes(ivf_step *b, sqlite3_stmt **chunk_ins, sqlite3_stmt **list_ins) {
  int rc = knn_prepare(b->db, chunk_ins, b->pzErr,
                       "INSERT INTO \"main\".\"%w_fvknn_chunks\"(id, valid, rowids, vectors) "
                       "VALUES (?1, ?2, ?3, ?4)",
                       b->ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(b->db, list_ins, b->pzErr,
                     "INSERT INTO \"main\".\"%w%s\"(id, list, slots) VALUES (?1, ?2, NULL)",
                     b->ix->tbl, suffix_lists);
  return rc;
}

static int chunk_buf_alloc(ivf_step *b, chunk_buf *c) {
  if (c->rids) return SQLITE_OK;
  c->rids = sqlite3_malloc64((sqlite3_uint64)b->ix->chunk_size * 8);
  c->codes = sqlite3_malloc64((sqlite3_uint64)(b->ix->chunk_size * b->vbytes));
  c->valid = sqlite3_malloc64((sqlite3_uint64)b->ix->chunk_size / 8);
  return c->rids && c->codes && c->valid ? SQLITE_OK : SQLITE_NOMEM;
}

/* ------------------------------------------------------------------------ */
/* Assigning                                                                 */


/* Merge a block's distances into each calibration query's nearest CAL_K. */
static int calibrate_block(ivf_step *b, const float *vecs, const i64 *rids,
                           const int64_t *lists, i64 nb) {
  ivf_state *s = &b->s;
  const i64 kk = CAL_K + 1, dim = b->ix->dim;
  int64_t *bi = sqlite3_malloc64((sqlite3_uint64)s->n_cal * kk * 8);
  float *bd = sqlite3_malloc64((sqlite3_uint64)s->n_cal * kk * 4);
  size_t *nf = sqlite3_malloc64((sqlite3_uint64)s->n_cal * sizeof(size_t));
  int64_t bq = -1, br = -1;
  int rc = bi && bd && nf ? SQLITE_OK : SQLITE_NOMEM;
  if (rc == SQLITE_OK &&
      fv_top_k_batch(FV_EUCLIDEAN, s->cal_q, (size_t)s->n_cal, vecs, (size_t)nb, (size_t)dim,
                     (size_t)kk, HUGE_VAL, bi, bd, nf, &bq, &br) == FV_NOMEM)
    rc = SQLITE_NOMEM;
  for (i64 q = 0; rc == SQLITE_OK && q < s->n_cal; q++) {
    float *d = s->cal_d + q * CAL_K;
    i64 *l = s->cal_list + q * CAL_K;
    for (size_t j = 0; j < nf[q]; j++) {
      i64 at = bi[q * kk + (i64)j];
      float x = bd[q * kk + (i64)j];
      if (rids[at] == s->cal_rid[q]) continue; /* the query's own row */
      if (!(x < d[CAL_K - 1])) break;
      i64 m = CAL_K - 1;
      while (m > 0 && d[m - 1] > x) {
        d[m] = d[m - 1];
        l[m] = l[m - 1];
        m--;
      }
      d[m] = x;
      l[m] = lists[at];
    }
  }
  sqlite3_free(bi);
  sqlite3_free(bd);
  sqlite3_free(nf);
  return rc;
}

/* Leave row rid out, named with why. */
static int skip_row(ivf_step *b, sqlite3_stmt *skip_ins, i64 rid, const char *why) {
  sqlite3_bind_int64(skip_ins, 1, rid);
  sqlite3_bind_text(skip_ins, 2, why, -1, SQLITE_TRANSIENT);
  int rc = sqlite3_step(skip_ins);
  sqlite3_reset(skip_ins);
  if (rc != SQLITE_DONE) {
    knn_db_error(b->db, b->pzErr);
    return rc;
  }
  b->s.skipped++;
  return SQLITE_OK;
}

/* Read, assign, map and stage up to max_rows rows (one staged batch);
** *read: rows read. Sets phase 2 at the table's end. */
static int assign_batch(ivf_step *b, i64 max_rows, i64 *read) {
  knn_index *ix = b->ix;
  ivf_state *s = &b->s;
  const i64 dim = ix->dim, cs = ix->chunk_size, lists = ix->lists;
  i64 cap = STAGE_BYTES / b->vbytes, nb = 0, n = 0, nrows = 0;
  sqlite3_stmt *st = NULL, *map_ins = NULL, *skip_ins = NULL, *stage_ins = NULL;
  float *vecs = NULL;
  i64 *brid = NULL, *rids = NULL, *grid = NULL, *start = NULL;
  int64_t *blist = NULL, *list = NULL;
  float *bdist = NULL;
  unsigned char *codes = NULL, *gcodes = NULL;
  int rc, at_end = 0;
  if (cap < 64) cap = 64;
  if (max_rows >= 0 && cap > max_rows) cap = max_rows;
  *read = 0;
  vecs = sqlite3_malloc64((sqlite3_uint64)ASSIGN_ROWS * dim * 4);
  brid = sqlite3_malloc64(ASSIGN_ROWS * 8);
  blist = sqlite3_malloc64(ASSIGN_ROWS * 8);
  bdist = sqlite3_malloc64(ASSIGN_ROWS * 4);
  rids = sqlite3_malloc64((sqlite3_uint64)cap * 8);
  list = sqlite3_malloc64((sqlite3_uint64)cap * 8);
  grid = sqlite3_malloc64((sqlite3_uint64)cap * 8);
  /* Codes only while the whole table may fit one batch (written at once);
  ** else only rowids are staged, and each vector is read again to be
  ** written (write_list): its code is not written twice. */
  if (s->batch == 0) codes = sqlite3_malloc64((sqlite3_uint64)(cap * b->vbytes));
  start = sqlite3_malloc64((sqlite3_uint64)(lists + 1) * 8);
  if (!vecs || !brid || !blist || !bdist || !rids || !list || !grid ||
      (s->batch == 0 && !codes) || !start) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  rc = knn_prepare(b->db, &st, b->pzErr,
                   "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" >= ?1 AND \"%w\" "
                   "IS NOT NULL ORDER BY \"%w\" LIMIT ?2",
                   ix->pk, ix->col, ix->tbl, ix->pk, ix->col, ix->pk);
  if (rc == SQLITE_OK)
    rc = knn_prepare(b->db, &map_ins, b->pzErr,
                     "INSERT INTO \"main\".\"%w_fvknn_rowids\"(rid, chunk, slot) VALUES (?1, "
                     "?2, ?3)",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(b->db, &skip_ins, b->pzErr,
                     "INSERT OR REPLACE INTO \"main\".\"%w%s\"(rid, reason) VALUES (?1, ?2)",
                     ix->tbl, knn_build_suffix[2]);
  if (rc == SQLITE_OK)
    rc = knn_prepare(b->db, &stage_ins, b->pzErr,
                     "INSERT INTO \"main\".\"%w%s\"(key, rids, codes) VALUES (?1, ?2, X'')",
                     ix->tbl, knn_build_suffix[1]);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_int64(st, 1, s->next_rid);
  sqlite3_bind_int64(st, 2, cap);
  for (int more = 1; more;) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      i64 rid = sqlite3_column_int64(st, 0);
      char *err = NULL;
      fv_vector v;
      nrows++;
      if (rid == INT64_MAX) at_end = 1;
      else s->next_rid = rid + 1;
      rc = knn_row_vector(b->fn, ix, rid, sqlite3_column_type(st, 1),
                          sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1), dim, &v,
                          &err);
      if (rc == SQLITE_NOMEM) {
        sqlite3_free(err);
        goto finish;
      }
      if (rc == SQLITE_OK && !v.v) continue; /* no vector (NULL): nothing to place */
      if (rc != SQLITE_OK || !all_finite(v.v, dim)) {
        char *why = err ? err : sqlite3_mprintf("%s: %s row %lld: %s holds NaN or infinity; "
                                                "an IVF index cannot place it", b->fn, ix->tbl,
                                                rid, ix->col);
        rc = why ? skip_row(b, skip_ins, rid, why) : SQLITE_NOMEM;
        sqlite3_free(why);
        fv_vector_free(&v);
        if (rc != SQLITE_OK) goto finish;
        continue;
      }
      memcpy(vecs + nb * dim, v.v, (size_t)dim * 4);
      brid[nb++] = rid;
      fv_vector_free(&v);
      if (nb < ASSIGN_ROWS) continue;
    } else if (rc == SQLITE_DONE) {
      more = 0;
      if (nrows < cap) at_end = 1;
    } else {
      knn_db_error(b->db, b->pzErr);
      goto finish;
    }
    rc = SQLITE_OK;
    if (nb == 0) continue;
    int64_t bad_row = -1, bad_c = -1;
    int frc = fv_assign_nearest(FV_EUCLIDEAN, b->centroids, (size_t)lists, vecs, (size_t)nb,
                                (size_t)dim, blist, bdist, &bad_row, &bad_c);
    if (frc != FV_OK) {
      rc = frc == FV_NOMEM ? SQLITE_NOMEM
                           : knn_corrupt(b->pzErr, b->fn, ix, "a centroid is not finite");
      goto finish;
    }
    if (s->n_cal > 0) {
      rc = calibrate_block(b, vecs, brid, blist, nb);
      if (rc != SQLITE_OK) goto finish;
    }
    if (codes)
      knn_encode(ix->storage, b->qparams, vecs, (size_t)nb, (size_t)dim,
                 codes + n * b->vbytes);
    for (i64 j = 0; j < nb; j++) {
      i64 l = blist[j], p = s->counts[l]++;
      if (p / cs >= KNN_IVF_STRIDE) {
        *b->pzErr = sqlite3_mprintf("%s: list %lld holds more than %lld rows", b->fn, l,
                                    KNN_IVF_STRIDE * cs);
        rc = SQLITE_ERROR;
        goto finish;
      }
      sqlite3_bind_int64(map_ins, 1, brid[j]);
      sqlite3_bind_int64(map_ins, 2, l * KNN_IVF_STRIDE + p / cs + 1);
      sqlite3_bind_int64(map_ins, 3, p % cs);
      rc = sqlite3_step(map_ins);
      sqlite3_reset(map_ins);
      if (rc != SQLITE_DONE) {
        knn_db_error(b->db, b->pzErr);
        goto finish;
      }
      rc = SQLITE_OK;
      rids[n + j] = brid[j];
      list[n + j] = l;
    }
    n += nb;
    nb = 0;
  }
  /* The batch's rows grouped by list (stably: rowid order within a list),
  ** one staged row per list. */
  memset(start, 0, (size_t)(lists + 1) * 8);
  for (i64 j = 0; j < n; j++) start[list[j] + 1]++;
  for (i64 l = 0; l < lists; l++) start[l + 1] += start[l];
  if (at_end && s->batch == 0) {
    gcodes = sqlite3_malloc64((sqlite3_uint64)(n * b->vbytes) + 8);
    if (!gcodes) {
      rc = SQLITE_NOMEM;
      goto finish;
    }
  }
  for (i64 j = 0; j < n; j++) {
    i64 at = start[list[j]]++;
    grid[at] = rids[j];
    if (gcodes) memcpy(gcodes + at * b->vbytes, codes + j * b->vbytes, (size_t)b->vbytes);
  }
  if (at_end && s->batch == 0) {
    /* The whole table in one batch: its chunks at once, nothing staged. */
    chunk_buf c;
    sqlite3_stmt *chunk_ins = NULL, *list_ins = NULL;
    memset(&c, 0, sizeof c);
    rc = chunk_buf_alloc(b, &c);
    if (rc == SQLITE_OK) rc = prepare_writes(b, &chunk_ins, &list_ins);
    for (i64 l = 0, from = 0; rc == SQLITE_OK && l < lists; l++) {
      i64 k = 0;
      rc = append_rows(b, chunk_ins, list_ins, &c, l, (const unsigned char *)(grid + from),
                       gcodes + from * b->vbytes, start[l] - from, &k);
      if (rc == SQLITE_OK && c.used > 0)
        rc = write_chunk(b, chunk_ins, list_ins, &c, l * KNN_IVF_STRIDE + ++k, l);
      from = start[l];
    }
    sqlite3_finalize(chunk_ins);
    sqlite3_finalize(list_ins);
    sqlite3_free(c.rids);
    sqlite3_free(c.codes);
    sqlite3_free(c.valid);
    if (rc == SQLITE_OK) {
      s->staged += n;
      s->written += n;
      s->next_list = lists;
      s->phase = 2;
      *read = nrows;
    }
    goto finish;
  }
  for (i64 l = 0, from = 0; rc == SQLITE_OK && l < lists; l++) {
    i64 to = start[l];
    if (to == from) continue;
    sqlite3_bind_int64(stage_ins, 1, l << 32 | s->batch);
    sqlite3_bind_blob64(stage_ins, 2, grid + from, (sqlite3_uint64)(to - from) * 8,
                        SQLITE_STATIC);
    rc = sqlite3_step(stage_ins);
    sqlite3_reset(stage_ins);
    rc = rc == SQLITE_DONE ? SQLITE_OK : (knn_db_error(b->db, b->pzErr), rc);
    from = to;
  }
  if (rc == SQLITE_OK && n > 0) s->batch++;
  s->staged += n;
  if (rc == SQLITE_OK && at_end) s->phase = 2;
  *read = nrows;
finish:
  sqlite3_finalize(st);
  sqlite3_finalize(map_ins);
  sqlite3_finalize(skip_ins);
  sqlite3_finalize(stage_ins);
  sqlite3_free(vecs);
  sqlite3_free(brid);
  sqlite3_free(blist);
  sqlite3_free(bdist);
  sqlite3_free(rids);
  sqlite3_free(list);
  sqlite3_free(grid);
  sqlite3_free(codes);
  sqlite3_free(gcodes);
  sqlite3_free(start);
  return rc;
}

/* The codes of nr staged rows (rowids r) into b->codes, each vector read
** again from the table. A row changed since it was assigned has its new
** vector here, one deleted or no longer readable a zero code: the change is
** logged, and the sync that ends the build moves or removes it. */
static int read_codes(ivf_step *b, const unsigned char *r, i64 nr) {
  knn_index *ix = b->ix;
  int rc = SQLITE_OK;
  if (!b->row_get)
    rc = knn_prepare(b->db, &b->row_get, b->pzErr,
                     "SELECT \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" = ?1", ix->col,
                     ix->tbl, ix->pk);
  if (rc == SQLITE_OK && nr > b->codes_rows) {
    sqlite3_free(b->codes);
    b->codes = sqlite3_malloc64((sqlite3_uint64)(nr * b->vbytes));
    b->codes_rows = b->codes ? nr : 0;
    if (!b->codes) rc = SQLITE_NOMEM;
  }
  for (i64 i = 0; rc == SQLITE_OK && i < nr; i++) {
    unsigned char *code = b->codes + i * b->vbytes;
    i64 rid;
    fv_vector v;
    memset(&v, 0, sizeof v);
    memcpy(&rid, r + i * 8, 8);
    sqlite3_bind_int64(b->row_get, 1, rid);
    rc = sqlite3_step(b->row_get);
    if (rc == SQLITE_ROW) {
      char *err = NULL;
      rc = knn_row_vector(b->fn, ix, rid, sqlite3_column_type(b->row_get, 0),
                          sqlite3_column_blob(b->row_get, 0),
                          sqlite3_column_bytes(b->row_get, 0), ix->dim, &v, &err);
      sqlite3_free(err);
      if (rc != SQLITE_NOMEM) rc = SQLITE_OK;
    } else if (rc == SQLITE_DONE) {
      rc = SQLITE_OK;
    } else {
      knn_db_error(b->db, b->pzErr);
    }
    if (rc == SQLITE_OK && v.v && all_finite(v.v, ix->dim))
      knn_encode(ix->storage, b->qparams, v.v, 1, (size_t)ix->dim, code);
    else
      memset(code, 0, (size_t)b->vbytes);
    fv_vector_free(&v);
    sqlite3_reset(b->row_get); /* v may point into the row it read */
  }
  return rc;
}

/* Write list l's staged rows into its chunks; *wrote: its rows. */
static int write_list(ivf_step *b, i64 l, chunk_buf *c, i64 *wrote) {
  knn_index *ix = b->ix;
  sqlite3_stmt *st = NULL, *chunk_ins = NULL, *list_ins = NULL;
  i64 p = 0, k = 0;
  int rc = knn_prepare(b->db, &st, b->pzErr,
                       "SELECT rids, codes FROM \"main\".\"%w%s\" WHERE key >= ?1 AND key < ?2 "
                       "ORDER BY key",
                       ix->tbl, knn_build_suffix[1]);
  if (rc == SQLITE_OK) rc = prepare_writes(b, &chunk_ins, &list_ins);
  if (rc != SQLITE_OK) goto finish;
  *wrote = 0;
  c->used = 0;
  sqlite3_bind_int64(st, 1, l << 32);
  sqlite3_bind_int64(st, 2, (l + 1) << 32);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 nr = sqlite3_column_bytes(st, 0) / 8;
    const unsigned char *r = sqlite3_column_blob(st, 0), *v = sqlite3_column_blob(st, 1);
    i64 vb = sqlite3_column_bytes(st, 1);
    if (sqlite3_column_type(st, 0) != SQLITE_BLOB || sqlite3_column_type(st, 1) != SQLITE_BLOB ||
        sqlite3_column_bytes(st, 0) % 8 || (vb != 0 && vb != nr * b->vbytes) ||
        p + nr > b->s.counts[l]) {
      rc = knn_corrupt(b->pzErr, b->fn, ix, "its staged rows of list %lld are malformed", l);
      goto finish;
    }
    rc = SQLITE_OK;
    if (vb == 0 && nr > 0) { /* rowids only (an earlier version staged codes) */
      rc = read_codes(b, r, nr);
      v = b->codes;
    }
    if (rc == SQLITE_OK) rc = append_rows(b, chunk_ins, list_ins, c, l, r, v, nr, &k);
    if (rc != SQLITE_OK) goto finish;
    p += nr;
  }
  if (rc != SQLITE_DONE) {
    knn_db_error(b->db, b->pzErr);
    goto finish;
  }
  rc = SQLITE_OK;
  if (p != b->s.counts[l]) {
    rc = knn_corrupt(b->pzErr, b->fn, ix, "list %lld has %lld staged rows, expected %lld", l, p,
                     b->s.counts[l]);
    goto finish;
  }
  if (c->used > 0) rc = write_chunk(b, chunk_ins, list_ins, c, l * KNN_IVF_STRIDE + ++k, l);
  if (rc == SQLITE_OK)
    rc = knn_exec(b->db, b->pzErr,
                  "DELETE FROM \"main\".\"%w%s\" WHERE key >= %lld AND key < %lld", ix->tbl,
                  knn_build_suffix[1], l << 32, (l + 1) << 32);
  *wrote = p;
finish:
  sqlite3_finalize(st);
  sqlite3_finalize(chunk_ins);
  sqlite3_finalize(list_ins);
  return rc;
}

/* The smallest nprobe whose lists hold CAL_RECALL of the calibration
** queries' nearest rows. */
static i64 calibrated_nprobe(ivf_step *b) {
  const i64 lists = b->ix->lists, dim = b->ix->dim;
  ivf_state *s = &b->s;
  int64_t *ci = sqlite3_malloc64((sqlite3_uint64)lists * 8);
  float *cd = sqlite3_malloc64((sqlite3_uint64)lists * 4);
  i64 *hist = sqlite3_malloc64((sqlite3_uint64)(lists + 1) * 8), total = 0, nprobe = lists;
  if (ci && cd && hist) {
    memset(hist, 0, (size_t)(lists + 1) * 8);
    for (i64 q = 0; q < s->n_cal; q++) {
      size_t found = 0;
      int64_t bad = -1;
      if (fv_top_k(FV_EUCLIDEAN, s->cal_q + q * dim, b->centroids, (size_t)lists, (size_t)dim,
                   (size_t)lists, ci, cd, &found, &bad) != FV_OK)
        continue;
      for (i64 j = 0; j < CAL_K; j++) {
        i64 want = s->cal_list[q * CAL_K + j];
        if (want < 0) continue;
        total++;
        for (size_t r = 0; r < found; r++)
          if (ci[r] == want) {
            hist[r]++;
            break;
          }
      }
    }
    for (i64 r = 0, cum = 0; total > 0 && r < lists; r++) {
      cum += hist[r];
      if ((double)cum >= CAL_RECALL * (double)total) {
        nprobe = r + 1;
        break;
      }
    }
  }
  sqlite3_free(ci);
  sqlite3_free(cd);
  sqlite3_free(hist);
  return nprobe;
}

int knn_ivf_step(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows, i64 *done,
                 char **pzErr) {
  ivf_step b;
  chunk_buf c;
  i64 count = 0, n = 0;
  int rc;
  memset(&b, 0, sizeof b);
  memset(&c, 0, sizeof c);
  *done = 0;
  b.db = db;
  b.fn = fn;
  b.ix = ix;
  b.pzErr = pzErr;
  b.vbytes = ix->dim * knn_elem_bytes(ix->storage);
  if (ix->dim < 1 || ix->chunk_size < 64)
    return knn_corrupt(pzErr, fn, ix, "an IVF build of dimension %lld", ix->dim);
  rc = state_load(db, fn, ix, &b.s, pzErr);
  if (rc == SQLITE_OK) rc = knn_ivf_centroids(db, fn, ix, &b.centroids, pzErr);
  if (rc == SQLITE_OK) rc = knn_quant_params(db, fn, ix, &b.qparams, pzErr);
  while (rc == SQLITE_OK && b.s.phase == 1 && (max_rows < 0 || count < max_rows)) {
    rc = assign_batch(&b, max_rows < 0 ? -1 : max_rows - count, &n);
    count += n;
  }
  if (rc == SQLITE_OK && b.s.phase == 2 && b.s.next_list < ix->lists)
    rc = chunk_buf_alloc(&b, &c);
  while (rc == SQLITE_OK && b.s.phase == 2 && b.s.next_list < ix->lists &&
         (max_rows < 0 || count < max_rows)) {
    rc = write_list(&b, b.s.next_list, &c, &n);
    if (rc == SQLITE_OK) {
      b.s.next_list++;
      b.s.written += n;
      count += n;
    }
  }
  if (rc == SQLITE_OK && b.s.phase == 2 && b.s.next_list == ix->lists &&
      (max_rows < 0 || count < max_rows)) {
    /* The last step: every row is in its chunks. */
    i64 logged = 0;
    if (b.s.written != b.s.staged)
      rc = knn_corrupt(pzErr, fn, ix, "its build wrote %lld of %lld rows", b.s.written,
                       b.s.staged);
    if (rc == SQLITE_OK && b.s.n_cal > 0) {
      ix->nprobe = calibrated_nprobe(&b);
      rc = knn_exec(db, pzErr, "UPDATE \"main\".\"%w%s\" SET nprobe = %lld", ix->tbl,
                    suffix_ivf, ix->nprobe);
    }
    for (int i = 0; rc == SQLITE_OK && i < 2; i++)
      rc = knn_exec(db, pzErr, "DROP TABLE \"main\".\"%w%s\"", ix->tbl, knn_build_suffix[i]);
    if (rc == SQLITE_OK) {
      ix->building = 0;
      rc = knn_index_save(db, ix, pzErr);
    }
    /* The changes logged meanwhile, as any sync applies them. */
    if (rc == SQLITE_OK) rc = knn_sync_rows(db, fn, ix, -1, &logged, pzErr);
    count += logged;
    if (max_rows >= 0 && count >= max_rows) count = max_rows - 1; /* "finished" */
  } else if (rc == SQLITE_OK) {
    rc = state_save(db, ix, &b.s, pzErr);
    if (rc == SQLITE_OK) rc = knn_index_save(db, ix, pzErr);
  }
  if (rc == SQLITE_OK) *done = count;
  state_free(&b.s);
  sqlite3_free(b.centroids);
  sqlite3_free(b.qparams);
  sqlite3_free(c.rids);
  sqlite3_free(c.codes);
  sqlite3_free(c.valid);
  sqlite3_finalize(b.row_get);
  sqlite3_free(b.codes);
  return rc;
}

int knn_ivf_progress(sqlite3 *db, const knn_index *ix, i64 *work_done, i64 *work_total,
                     i64 *skipped) {
  sqlite3_stmt *st = NULL;
  int rc;
  *work_done = *work_total = *skipped = 0;
  rc = knn_prepare(db, &st, NULL, "SELECT count(*) FROM \"main\".\"%w%s\"", ix->tbl,
                   knn_build_suffix[2]);
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) *skipped = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  st = NULL;
  if (!ix->building || ix->lists <= 0) return SQLITE_OK;
  rc = knn_prepare(db, &st, NULL,
                   "SELECT rows, staged, written, skipped FROM \"main\".\"%w%s\"", ix->tbl,
                   knn_build_suffix[0]);
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) {
    i64 rows = sqlite3_column_int64(st, 0), staged = sqlite3_column_int64(st, 1);
    i64 written = sqlite3_column_int64(st, 2), skip = sqlite3_column_int64(st, 3);
    /* Each row is read once and written once. */
    *work_done = staged + skip + written;
    *work_total = 2 * rows + skip;
    if (*work_total < *work_done) *work_total = *work_done;
  }
  sqlite3_finalize(st);
  return SQLITE_OK;
}

/* Rows per transaction when facevec_knn_build drives the steps itself. */
i64 knn_ivf_batch_rows(void) { return BUILD_BATCH_ROWS; }
