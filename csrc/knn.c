/*
** knn.c - exact k-nearest-neighbour search over a table's embeddings, stored
** in the same SQLite database in large contiguous chunks.
**
** SQL interface (all in schema "main"):
**
**   SELECT facevec_knn_build(table [, column [, chunk_size]])
**       Drop any index on table, create one on column (default 'embedding')
**       and fill it. Returns the number of vectors indexed.
**   SELECT facevec_knn_create(table [, column [, chunk_size]])
**       As build, but leave the filling to facevec_knn_sync (in batches, so a
**       caller can show progress). Returns 0.
**   SELECT facevec_knn_sync(table [, max_rows])
**       Apply pending changes of table (logged by triggers) and continue an
**       unfinished build, at most max_rows source rows (default: all).
**       Returns the number of rows processed; fewer than max_rows = done.
**   SELECT facevec_knn_drop(table)      remove the index; returns 1 or 0.
**   SELECT facevec_knn_status(table)    JSON description, NULL if no index.
**
**   SELECT rowid, distance, rank
**   FROM facevec_knn(table, query, k [, metric [, threshold]]);
**       The k rows nearest to query (float32 BLOB or JSON array), ascending
**       by distance, ties by rowid; metric 'euclidean' (default),
**       'euclidean_squared', 'cosine' or 'euclidean_l2'; only rows with
**       distance <= threshold when one is given. Distances equal, bit for
**       bit, the scalar <metric>_distance(embedding, query).
**
** Storage, for table T (T's rowid must be an INTEGER PRIMARY KEY column, so
** that VACUUM cannot renumber it):
**   facevec_knn_index   one row per index: column, dimension, chunk size,
**                       tail chunk and fill, build cursor
**   T_fvknn_chunks      (id, valid, rowids, vectors): chunk_size slots each;
**                       valid is a bitmap, rowids int64, vectors float32, all
**                       fixed-size BLOBs edited in place with sqlite3_blob_*
**   T_fvknn_rowids      (rid -> chunk, slot), for updates and deletes
**   T_fvknn_log         (seq, rid) appended by plain-SQL triggers on T, so any
**                       connection, with or without facevec loaded, can write
**                       T; facevec_knn_sync empties it.
**
** A query is never stale: rows named in the log (and, during a build, rows
** past the build cursor) are skipped in the chunks and read from T itself.
** Every write happens inside a SAVEPOINT, so a crash leaves either the old
** or the new index.
**
** Who may call what: every function here is DIRECTONLY (never from a view or
** trigger of the file); see the security model in sqlite3_facevec.c.
**
** Limits: a REPLACE that deletes a row through a UNIQUE constraint other than
** the rowid fires no DELETE trigger unless PRAGMA recursive_triggers is on
** (rebuild afterwards otherwise). A query copies each chunk through
** sqlite3_blob_read into a 128 KiB buffer; with PRAGMA mmap_size covering the
** file those copies come from the mapping instead of one read() per page,
** about twice as fast.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
#include "knn.h"

typedef sqlite3_int64 i64;

#define KNN_INDEX_TABLE "facevec_knn_index"
#define KNN_MAX_CHUNK 65536
/* Largest chunk BLOB (SQLite's default limit on a value is 1e9 bytes). */
#define KNN_MAX_CHUNK_BYTES (256 * 1024 * 1024)
/* Bytes of vectors a query reads at once: small enough to stay in L2. */
#ifndef KNN_BLOCK_BYTES
#define KNN_BLOCK_BYTES (128 * 1024)
#endif
/* Target bytes of vectors per chunk when chunk_size is not given. */
#define KNN_CHUNK_BYTES (2 * 1024 * 1024)

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

/* Run one formatted statement (sqlite3_mprintf syntax). */
static int exec_fmt(sqlite3 *db, char **pzErr, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  if (!sql) return SQLITE_NOMEM;
  int rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
  if (rc != SQLITE_OK && pzErr && !*pzErr)
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  sqlite3_free(sql);
  return rc;
}

static int prepare_fmt(sqlite3 *db, sqlite3_stmt **st, char **pzErr, const char *fmt,
                       ...) {
  va_list ap;
  va_start(ap, fmt);
  char *sql = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  *st = NULL;
  if (!sql) return SQLITE_NOMEM;
  int rc = sqlite3_prepare_v2(db, sql, -1, st, NULL);
  if (rc != SQLITE_OK && pzErr && !*pzErr)
    *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
  sqlite3_free(sql);
  return rc;
}

/* Fill *err from db's last message unless already set. */
static void set_db_err(sqlite3 *db, char **pzErr) {
  if (!*pzErr) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
}

static const char *type_name(int type) {
  switch (type) {
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
  }
}

typedef struct metric_name {
  const char *name;
  fv_metric metric;
} metric_name;

static const metric_name metric_names[] = {
    {"euclidean", FV_EUCLIDEAN},
    {"euclidean_squared", FV_EUCLIDEAN_SQUARED},
    {"cosine", FV_COSINE},
    {"euclidean_l2", FV_EUCLIDEAN_L2},
};

/* ------------------------------------------------------------------------ */
/* The index's description (one row of facevec_knn_index)                    */

typedef struct knn_index {
  char *tbl;       /* canonical table name */
  char *col;       /* vector column */
  char *pk;        /* INTEGER PRIMARY KEY column (the rowid) */
  i64 dim;         /* 0 until the first vector is seen */
  i64 chunk_size;  /* slots per chunk, multiple of 64; 0 = choose from dim */
  i64 tail_chunk;  /* id of the chunk being appended to; 0 = none */
  i64 tail_used;   /* slots used in the tail chunk */
  i64 n_vectors;   /* valid slots */
  i64 build_next;  /* rows with rowid >= build_next are not indexed yet */
  int building;    /* build_next is meaningful */
} knn_index;

static void index_clear(knn_index *ix) {
  sqlite3_free(ix->tbl);
  sqlite3_free(ix->col);
  sqlite3_free(ix->pk);
  memset(ix, 0, sizeof *ix);
}

static int meta_table_exists(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  int found = 0;
  if (sqlite3_prepare_v2(db,
                         "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND name = '"
                         KNN_INDEX_TABLE "'",
                         -1, &st, NULL) == SQLITE_OK)
    found = sqlite3_step(st) == SQLITE_ROW;
  sqlite3_finalize(st);
  return found;
}

/* Load the index of table tbl. Returns SQLITE_OK, SQLITE_NOTFOUND (no index;
** no message), or an error with *pzErr set. */
static int index_load(sqlite3 *db, const char *tbl, knn_index *ix, char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc;
  memset(ix, 0, sizeof *ix);
  if (!meta_table_exists(db)) return SQLITE_NOTFOUND;
  rc = sqlite3_prepare_v2(db,
                          "SELECT tbl, col, pk, dim, chunk_size, tail_chunk, tail_used, "
                          "n_vectors, build_next FROM main." KNN_INDEX_TABLE
                          " WHERE tbl = ?1",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    rc = SQLITE_NOTFOUND;
    goto finish;
  }
  if (rc != SQLITE_ROW) goto finish;
  ix->tbl = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
  ix->col = sqlite3_mprintf("%s", sqlite3_column_text(st, 1));
  ix->pk = sqlite3_mprintf("%s", sqlite3_column_text(st, 2));
  ix->dim = sqlite3_column_int64(st, 3);
  ix->chunk_size = sqlite3_column_int64(st, 4);
  ix->tail_chunk = sqlite3_column_int64(st, 5);
  ix->tail_used = sqlite3_column_int64(st, 6);
  ix->n_vectors = sqlite3_column_int64(st, 7);
  ix->building = sqlite3_column_type(st, 8) != SQLITE_NULL;
  ix->build_next = sqlite3_column_int64(st, 8);
  rc = (ix->tbl && ix->col && ix->pk) ? SQLITE_OK : SQLITE_NOMEM;
  if (rc == SQLITE_OK && (ix->dim < 0 || ix->chunk_size < 0 || ix->chunk_size % 64 ||
                          ix->chunk_size > KNN_MAX_CHUNK || ix->tail_used < 0 ||
                          ix->tail_used > ix->chunk_size)) {
    *pzErr = sqlite3_mprintf("index of table '%s' is corrupt (dim %lld, chunk_size %lld, "
                             "tail_used %lld); rebuild it",
                             tbl, ix->dim, ix->chunk_size, ix->tail_used);
    rc = SQLITE_CORRUPT;
  }
finish:
  if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) {
    set_db_err(db, pzErr);
    index_clear(ix);
  } else if (rc == SQLITE_NOTFOUND) {
    index_clear(ix);
  }
  sqlite3_finalize(st);
  return rc;
}

static int index_save(sqlite3 *db, const knn_index *ix, char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "UPDATE main." KNN_INDEX_TABLE
                              " SET dim = ?2, chunk_size = ?3, tail_chunk = ?4, "
                              "tail_used = ?5, n_vectors = ?6, build_next = ?7 "
                              "WHERE tbl = ?1",
                              -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, ix->tbl, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ix->dim);
    sqlite3_bind_int64(st, 3, ix->chunk_size);
    sqlite3_bind_int64(st, 4, ix->tail_chunk);
    sqlite3_bind_int64(st, 5, ix->tail_used);
    sqlite3_bind_int64(st, 6, ix->n_vectors);
    if (ix->building)
      sqlite3_bind_int64(st, 7, ix->build_next);
    else
      sqlite3_bind_null(st, 7);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) set_db_err(db, pzErr);
  sqlite3_finalize(st);
  return rc;
}

/* Slots per chunk for dim when the caller chose none: about 2 MiB of vectors,
** between 64 and 8192 slots, a multiple of 64. */
static i64 auto_chunk_size(i64 dim) {
  i64 n = KNN_CHUNK_BYTES / (dim * 4);
  if (n > 8192) n = 8192;
  n -= n % 64;
  if (n < 64) n = 64;
  return n;
}

/* The plain-SQL triggers that log changes of the source table. Checked by
** queries: without them the log would miss changes. */
static const char *const trigger_suffix[3] = {"_fvknn_ins", "_fvknn_del", "_fvknn_upd"};
static const char *const table_suffix[3] = {"_fvknn_chunks", "_fvknn_rowids", "_fvknn_log"};

static int triggers_present(sqlite3 *db, const knn_index *ix, int *present,
                            char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc = prepare_fmt(db, &st, pzErr,
                       "SELECT count(*) FROM main.sqlite_schema WHERE type = 'trigger' "
                       "AND tbl_name = %Q AND name IN ('%q%s', '%q%s', '%q%s')",
                       ix->tbl, ix->tbl, trigger_suffix[0], ix->tbl, trigger_suffix[1],
                       ix->tbl, trigger_suffix[2]);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    *present = sqlite3_column_int(st, 0) == 3;
    rc = SQLITE_OK;
  } else {
    set_db_err(db, pzErr);
  }
  sqlite3_finalize(st);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading a source row's vector                                             */

/* Vector of column value (type, data, bytes) of row rid into *out (pointing
** into data or into *scratch, grown as needed). Sets *has to 0 for NULL.
** Messages name function fn. */
static int source_vector(const char *fn, const knn_index *ix, i64 rid, int type,
                         const void *data, int nbytes, i64 want_dim, const float **out,
                         size_t *n, int *has, float **scratch, size_t *scratch_cap,
                         char **pzErr) {
  *has = 0;
  *n = 0;
  if (type == SQLITE_NULL) return SQLITE_OK;
  if (type == SQLITE_BLOB) {
    if (nbytes <= 0 || nbytes % 4) {
      *pzErr = sqlite3_mprintf("%s: %s row %lld: %s is not a float32 vector, found a "
                               "BLOB of %d bytes",
                               fn, ix->tbl, rid, ix->col, nbytes);
      return SQLITE_ERROR;
    }
    *n = (size_t)nbytes / 4;
    if ((uintptr_t)data % sizeof(float)) {
      /* Copy unaligned data; the kernels do not need it, our memcpy does. */
      if (*scratch_cap < *n) {
        float *p = sqlite3_realloc64(*scratch, *n * sizeof(float));
        if (!p) return SQLITE_NOMEM;
        *scratch = p;
        *scratch_cap = *n;
      }
      memcpy(*scratch, data, (size_t)nbytes);
      *out = *scratch;
    } else {
      *out = (const float *)data;
    }
  } else if (type == SQLITE_TEXT) {
    size_t pos = 0;
    long cnt = fv_parse_json((const char *)data, (size_t)nbytes, NULL, 0, &pos);
    if (cnt <= 0) {
      *pzErr = sqlite3_mprintf("%s: %s row %lld: %s is TEXT but not a JSON array of "
                               "numbers (problem at character %lld)",
                               fn, ix->tbl, rid, ix->col, (i64)(cnt < 0 ? pos : 0));
      return SQLITE_ERROR;
    }
    if (*scratch_cap < (size_t)cnt) {
      float *p = sqlite3_realloc64(*scratch, (size_t)cnt * sizeof(float));
      if (!p) return SQLITE_NOMEM;
      *scratch = p;
      *scratch_cap = (size_t)cnt;
    }
    if (fv_parse_json((const char *)data, (size_t)nbytes, *scratch, (size_t)cnt, &pos) !=
        cnt) {
      *pzErr = sqlite3_mprintf("%s: %s row %lld: %s holds a number out of float32 range "
                               "at character %lld",
                               fn, ix->tbl, rid, ix->col, (i64)pos);
      return SQLITE_ERROR;
    }
    *out = *scratch;
    *n = (size_t)cnt;
  } else {
    *pzErr = sqlite3_mprintf("%s: %s row %lld: %s must be a float32 vector BLOB or a "
                             "JSON array TEXT, found %s",
                             fn, ix->tbl, rid, ix->col, type_name(type));
    return SQLITE_ERROR;
  }
  if (want_dim > 0 && (i64)*n != want_dim) {
    *pzErr = sqlite3_mprintf("%s: %s row %lld: %s has %lld dimensions, the index has "
                             "%lld",
                             fn, ix->tbl, rid, ix->col, (i64)*n, want_dim);
    return SQLITE_ERROR;
  }
  *has = 1;
  return SQLITE_OK;
}

/* ------------------------------------------------------------------------ */
/* Writer: applies source rows to the chunks                                 */

typedef struct knn_writer {
  sqlite3 *db;
  const char *fn;
  knn_index *ix;
  char *chunks_tbl; /* unquoted name, for sqlite3_blob_open */
  sqlite3_stmt *src_get, *map_get, *map_ins, *map_del, *chunk_new, *chunk_del;
  /* Blob handles on one chunk row, for in-place edits. */
  sqlite3_blob *b_valid, *b_rowids, *b_vectors;
  i64 blob_chunk;
  /* Appends to the tail chunk, slots [app_start, app_start + app_n). */
  float *app_vec;
  i64 *app_rid;
  unsigned char *app_valid;
  i64 app_start, app_n;
  unsigned char *bitmap; /* chunk_size / 8 bytes of scratch */
  float *scratch;
  size_t scratch_cap;
  char *zErr;
} knn_writer;

static void writer_close_blobs(knn_writer *w) {
  sqlite3_blob_close(w->b_valid);
  sqlite3_blob_close(w->b_rowids);
  sqlite3_blob_close(w->b_vectors);
  w->b_valid = w->b_rowids = w->b_vectors = NULL;
  w->blob_chunk = 0;
}

static void writer_free(knn_writer *w) {
  writer_close_blobs(w);
  sqlite3_finalize(w->src_get);
  sqlite3_finalize(w->map_get);
  sqlite3_finalize(w->map_ins);
  sqlite3_finalize(w->map_del);
  sqlite3_finalize(w->chunk_new);
  sqlite3_finalize(w->chunk_del);
  sqlite3_free(w->chunks_tbl);
  sqlite3_free(w->app_vec);
  sqlite3_free(w->app_rid);
  sqlite3_free(w->app_valid);
  sqlite3_free(w->bitmap);
  sqlite3_free(w->scratch);
}

static int writer_init(knn_writer *w, sqlite3 *db, const char *fn, knn_index *ix) {
  int rc;
  memset(w, 0, sizeof *w);
  w->db = db;
  w->fn = fn;
  w->ix = ix;
  w->chunks_tbl = sqlite3_mprintf("%s_fvknn_chunks", ix->tbl);
  if (!w->chunks_tbl) return SQLITE_NOMEM;
  rc = prepare_fmt(db, &w->src_get, &w->zErr,
                   "SELECT \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" = ?1",
                   ix->col, ix->tbl, ix->pk);
  if (rc == SQLITE_OK)
    rc = prepare_fmt(db, &w->map_get, &w->zErr,
                     "SELECT chunk, slot FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = prepare_fmt(db, &w->map_ins, &w->zErr,
                     "INSERT INTO \"main\".\"%w_fvknn_rowids\"(rid, chunk, slot) "
                     "VALUES (?1, ?2, ?3)",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = prepare_fmt(db, &w->map_del, &w->zErr,
                     "DELETE FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1", ix->tbl);
  if (rc == SQLITE_OK)
    rc = prepare_fmt(db, &w->chunk_new, &w->zErr,
                     "INSERT INTO \"main\".\"%w_fvknn_chunks\"(id, valid, rowids, vectors) "
                     "VALUES (?1, zeroblob(?2), zeroblob(?3), zeroblob(?4))",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = prepare_fmt(db, &w->chunk_del, &w->zErr,
                     "DELETE FROM \"main\".\"%w_fvknn_chunks\" WHERE id = ?1", ix->tbl);
  return rc;
}

/* Buffers sized by dim and chunk_size, once both are known. */
static int writer_alloc(knn_writer *w) {
  knn_index *ix = w->ix;
  if (w->app_vec) return SQLITE_OK;
  if (ix->chunk_size * ix->dim * 4 > KNN_MAX_CHUNK_BYTES) {
    w->zErr = sqlite3_mprintf("%s: a chunk of %lld vectors of %lld dimensions would take "
                              "%lld bytes, more than %d; rebuild with a smaller chunk_size",
                              w->fn, ix->chunk_size, ix->dim, ix->chunk_size * ix->dim * 4,
                              KNN_MAX_CHUNK_BYTES);
    return SQLITE_ERROR;
  }
  w->app_vec = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size * (sqlite3_uint64)ix->dim *
                                sizeof(float));
  w->app_rid = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size * sizeof(i64));
  w->app_valid = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size);
  w->bitmap = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size / 8);
  if (!w->app_vec || !w->app_rid || !w->app_valid || !w->bitmap) return SQLITE_NOMEM;
  w->app_start = ix->tail_used;
  w->app_n = 0;
  return SQLITE_OK;
}

/* Point the three blob handles at chunk, read-write. */
static int writer_blobs_at(knn_writer *w, i64 chunk) {
  int rc = SQLITE_OK;
  if (w->b_vectors && w->blob_chunk == chunk) return SQLITE_OK;
  if (w->b_vectors) {
    rc = sqlite3_blob_reopen(w->b_valid, chunk);
    if (rc == SQLITE_OK) rc = sqlite3_blob_reopen(w->b_rowids, chunk);
    if (rc == SQLITE_OK) rc = sqlite3_blob_reopen(w->b_vectors, chunk);
  } else {
    rc = sqlite3_blob_open(w->db, "main", w->chunks_tbl, "valid", chunk, 1, &w->b_valid);
    if (rc == SQLITE_OK)
      rc = sqlite3_blob_open(w->db, "main", w->chunks_tbl, "rowids", chunk, 1, &w->b_rowids);
    if (rc == SQLITE_OK)
      rc = sqlite3_blob_open(w->db, "main", w->chunks_tbl, "vectors", chunk, 1,
                             &w->b_vectors);
  }
  if (rc != SQLITE_OK) {
    set_db_err(w->db, &w->zErr);
    writer_close_blobs(w);
    return rc;
  }
  w->blob_chunk = chunk;
  return SQLITE_OK;
}

/* Write the buffered appends into the tail chunk. */
static int writer_flush(knn_writer *w) {
  knn_index *ix = w->ix;
  int rc;
  if (w->app_n == 0) return SQLITE_OK;
  rc = writer_blobs_at(w, ix->tail_chunk);
  if (rc != SQLITE_OK) return rc;
  const size_t vbytes = (size_t)ix->dim * sizeof(float);
  rc = sqlite3_blob_write(w->b_vectors, w->app_vec, (int)(w->app_n * (i64)vbytes),
                          (int)(w->app_start * (i64)vbytes));
  if (rc == SQLITE_OK)
    rc = sqlite3_blob_write(w->b_rowids, w->app_rid, (int)(w->app_n * 8),
                            (int)(w->app_start * 8));
  if (rc == SQLITE_OK) {
    i64 first = w->app_start / 8, last = (w->app_start + w->app_n - 1) / 8;
    int nb = (int)(last - first + 1);
    rc = sqlite3_blob_read(w->b_valid, w->bitmap, nb, (int)first);
    for (i64 i = 0; rc == SQLITE_OK && i < w->app_n; i++) {
      i64 s = w->app_start + i;
      if (w->app_valid[i])
        w->bitmap[s / 8 - first] |= (unsigned char)(1u << (s % 8));
      else
        w->bitmap[s / 8 - first] &= (unsigned char)~(1u << (s % 8));
    }
    if (rc == SQLITE_OK) rc = sqlite3_blob_write(w->b_valid, w->bitmap, nb, (int)first);
  }
  if (rc != SQLITE_OK) {
    set_db_err(w->db, &w->zErr);
    return rc;
  }
  w->app_start += w->app_n;
  w->app_n = 0;
  return SQLITE_OK;
}

static int step_done(knn_writer *w, sqlite3_stmt *st) {
  int rc = sqlite3_step(st);
  sqlite3_reset(st);
  if (rc == SQLITE_DONE) return SQLITE_OK;
  set_db_err(w->db, &w->zErr);
  return rc == SQLITE_ROW ? SQLITE_ERROR : rc;
}

/* Append (rid, vec) to the index, starting a new chunk when the tail is full. */
static int writer_append(knn_writer *w, i64 rid, const float *vec) {
  knn_index *ix = w->ix;
  int rc;
  if (ix->tail_chunk == 0 || ix->tail_used == ix->chunk_size) {
    rc = writer_flush(w);
    if (rc != SQLITE_OK) return rc;
    i64 id = ix->tail_chunk + 1;
    sqlite3_bind_int64(w->chunk_new, 1, id);
    sqlite3_bind_int64(w->chunk_new, 2, ix->chunk_size / 8);
    sqlite3_bind_int64(w->chunk_new, 3, ix->chunk_size * 8);
    sqlite3_bind_int64(w->chunk_new, 4, ix->chunk_size * ix->dim * 4);
    rc = step_done(w, w->chunk_new);
    if (rc != SQLITE_OK) return rc;
    ix->tail_chunk = id;
    ix->tail_used = 0;
    w->app_start = 0;
    w->app_n = 0;
  }
  i64 slot = ix->tail_used;
  memcpy(w->app_vec + w->app_n * ix->dim, vec, (size_t)ix->dim * sizeof(float));
  w->app_rid[w->app_n] = rid;
  w->app_valid[w->app_n] = 1;
  w->app_n++;
  ix->tail_used++;
  ix->n_vectors++;
  sqlite3_bind_int64(w->map_ins, 1, rid);
  sqlite3_bind_int64(w->map_ins, 2, ix->tail_chunk);
  sqlite3_bind_int64(w->map_ins, 3, slot);
  rc = step_done(w, w->map_ins);
  if (rc == SQLITE_OK && ix->tail_used == ix->chunk_size) rc = writer_flush(w);
  return rc;
}

static int in_append_buffer(const knn_writer *w, i64 chunk, i64 slot) {
  return chunk == w->ix->tail_chunk && w->app_n > 0 && slot >= w->app_start &&
         slot < w->app_start + w->app_n;
}

static int writer_overwrite(knn_writer *w, i64 chunk, i64 slot, const float *vec) {
  knn_index *ix = w->ix;
  if (in_append_buffer(w, chunk, slot)) {
    memcpy(w->app_vec + (slot - w->app_start) * ix->dim, vec,
           (size_t)ix->dim * sizeof(float));
    return SQLITE_OK;
  }
  int rc = writer_blobs_at(w, chunk);
  if (rc != SQLITE_OK) return rc;
  rc = sqlite3_blob_write(w->b_vectors, vec, (int)(ix->dim * 4), (int)(slot * ix->dim * 4));
  if (rc != SQLITE_OK) set_db_err(w->db, &w->zErr);
  return rc;
}

/* Clear slot's valid bit; drop the chunk once it is empty (unless it is the
** tail, which later appends fill). */
static int writer_remove(knn_writer *w, i64 rid, i64 chunk, i64 slot) {
  knn_index *ix = w->ix;
  int rc = SQLITE_OK;
  if (in_append_buffer(w, chunk, slot)) {
    w->app_valid[slot - w->app_start] = 0;
  } else {
    int nb = (int)(ix->chunk_size / 8), empty = 1;
    rc = writer_blobs_at(w, chunk);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_blob_read(w->b_valid, w->bitmap, nb, 0);
    if (rc == SQLITE_OK) {
      w->bitmap[slot / 8] &= (unsigned char)~(1u << (slot % 8));
      rc = sqlite3_blob_write(w->b_valid, w->bitmap + slot / 8, 1, (int)(slot / 8));
    }
    if (rc != SQLITE_OK) {
      set_db_err(w->db, &w->zErr);
      return rc;
    }
    for (int i = 0; i < nb && empty; i++) empty = w->bitmap[i] == 0;
    if (empty && chunk != ix->tail_chunk) {
      writer_close_blobs(w);
      sqlite3_bind_int64(w->chunk_del, 1, chunk);
      rc = step_done(w, w->chunk_del);
      if (rc != SQLITE_OK) return rc;
    }
  }
  ix->n_vectors--;
  sqlite3_bind_int64(w->map_del, 1, rid);
  return step_done(w, w->map_del);
}

/* Make the index agree with source row rid, whose vector column is given as
** (type, data, nbytes) (type SQLITE_NULL for a NULL or missing row). */
static int writer_apply(knn_writer *w, i64 rid, int type, const void *data, int nbytes) {
  knn_index *ix = w->ix;
  const float *vec = NULL;
  size_t n = 0;
  int has = 0, rc;
  i64 chunk = 0, slot = 0;
  int mapped = 0;

  rc = source_vector(w->fn, ix, rid, type, data, nbytes, ix->dim, &vec, &n, &has,
                     &w->scratch, &w->scratch_cap, &w->zErr);
  if (rc != SQLITE_OK) return rc;
  if (has && ix->dim == 0) {
    ix->dim = (i64)n;
    if (ix->chunk_size == 0) ix->chunk_size = auto_chunk_size(ix->dim);
  }
  sqlite3_bind_int64(w->map_get, 1, rid);
  rc = sqlite3_step(w->map_get);
  if (rc == SQLITE_ROW) {
    mapped = 1;
    chunk = sqlite3_column_int64(w->map_get, 0);
    slot = sqlite3_column_int64(w->map_get, 1);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  } else {
    set_db_err(w->db, &w->zErr);
  }
  sqlite3_reset(w->map_get);
  if (rc != SQLITE_OK) return rc;
  if (mapped && (slot < 0 || slot >= ix->chunk_size || ix->dim == 0)) {
    w->zErr = sqlite3_mprintf("%s: index of %s is corrupt (row %lld in slot %lld); rebuild "
                              "it",
                              w->fn, ix->tbl, rid, slot);
    return SQLITE_CORRUPT;
  }
  if (has || mapped) {
    rc = writer_alloc(w);
    if (rc != SQLITE_OK) return rc;
  }
  if (has) {
    return mapped ? writer_overwrite(w, chunk, slot, vec) : writer_append(w, rid, vec);
  }
  return mapped ? writer_remove(w, rid, chunk, slot) : SQLITE_OK;
}

/* Reconcile rid by reading its current value from the source table. */
static int writer_apply_rid(knn_writer *w, i64 rid) {
  int rc;
  sqlite3_bind_int64(w->src_get, 1, rid);
  rc = sqlite3_step(w->src_get);
  if (rc == SQLITE_ROW) {
    rc = writer_apply(w, rid, sqlite3_column_type(w->src_get, 0),
                      sqlite3_column_blob(w->src_get, 0),
                      sqlite3_column_bytes(w->src_get, 0));
  } else if (rc == SQLITE_DONE) {
    rc = writer_apply(w, rid, SQLITE_NULL, NULL, 0);
  } else {
    set_db_err(w->db, &w->zErr);
  }
  sqlite3_reset(w->src_get);
  return rc;
}

/* Process up to max_rows (< 0: all) logged changes, then build rows.
** *done gets the number of rows processed. */
static int knn_sync_rows(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows,
                         i64 *done, char **pzErr) {
  knn_writer w;
  sqlite3_stmt *log_st = NULL, *build_st = NULL;
  i64 count = 0, last_seq = -1;
  int rc = writer_init(&w, db, fn, ix);
  if (rc != SQLITE_OK) goto finish;

  /* 1. The change log, oldest first. */
  rc = prepare_fmt(db, &log_st, &w.zErr,
                   "SELECT seq, rid FROM \"main\".\"%w_fvknn_log\" ORDER BY seq LIMIT ?1", ix->tbl);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_int64(log_st, 1, max_rows < 0 ? -1 : max_rows);
  while ((rc = sqlite3_step(log_st)) == SQLITE_ROW) {
    last_seq = sqlite3_column_int64(log_st, 0);
    rc = writer_apply_rid(&w, sqlite3_column_int64(log_st, 1));
    if (rc != SQLITE_OK) goto finish;
    count++;
  }
  if (rc != SQLITE_DONE) {
    set_db_err(db, &w.zErr);
    goto finish;
  }
  rc = SQLITE_OK;
  sqlite3_finalize(log_st);
  log_st = NULL;
  if (last_seq >= 0) {
    rc = exec_fmt(db, &w.zErr, "DELETE FROM \"main\".\"%w_fvknn_log\" WHERE seq <= %lld", ix->tbl,
                  last_seq);
    if (rc != SQLITE_OK) goto finish;
  }

  /* 2. An unfinished build, in rowid order from the cursor. */
  if (ix->building && (max_rows < 0 || count < max_rows)) {
    i64 budget = max_rows < 0 ? -1 : max_rows - count, n = 0;
    int at_end = 0;
    rc = prepare_fmt(db, &build_st, &w.zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" >= ?1 "
                     "ORDER BY \"%w\" LIMIT ?2",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->pk);
    if (rc != SQLITE_OK) goto finish;
    sqlite3_bind_int64(build_st, 1, ix->build_next);
    sqlite3_bind_int64(build_st, 2, budget);
    while ((rc = sqlite3_step(build_st)) == SQLITE_ROW) {
      i64 rid = sqlite3_column_int64(build_st, 0);
      rc = writer_apply(&w, rid, sqlite3_column_type(build_st, 1),
                        sqlite3_column_blob(build_st, 1), sqlite3_column_bytes(build_st, 1));
      if (rc != SQLITE_OK) goto finish;
      if (rid == INT64_MAX) at_end = 1; /* nothing can follow */
      else ix->build_next = rid + 1;
      n++;
    }
    if (rc != SQLITE_DONE) {
      set_db_err(db, &w.zErr);
      goto finish;
    }
    rc = SQLITE_OK;
    count += n;
    if (budget < 0 || n < budget || at_end) ix->building = 0;
  }

  rc = writer_flush(&w);
  if (rc != SQLITE_OK) goto finish;
  writer_close_blobs(&w);
  rc = index_save(db, ix, &w.zErr);
  *done = count;
finish:
  sqlite3_finalize(log_st);
  sqlite3_finalize(build_st);
  if (rc != SQLITE_OK) {
    if (w.zErr) {
      *pzErr = w.zErr;
      w.zErr = NULL;
    } else if (rc == SQLITE_NOMEM) {
      *pzErr = NULL;
    } else {
      set_db_err(db, pzErr);
    }
  }
  sqlite3_free(w.zErr);
  writer_free(&w);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Creating and dropping an index                                            */

static int drop_index_objects(sqlite3 *db, const char *tbl, char **pzErr) {
  int rc = SQLITE_OK;
  for (int i = 0; rc == SQLITE_OK && i < 3; i++)
    rc = exec_fmt(db, pzErr, "DROP TRIGGER IF EXISTS \"main\".\"%w%s\"", tbl, trigger_suffix[i]);
  for (int i = 0; rc == SQLITE_OK && i < 3; i++)
    rc = exec_fmt(db, pzErr, "DROP TABLE IF EXISTS \"main\".\"%w%s\"", tbl, table_suffix[i]);
  if (rc == SQLITE_OK && meta_table_exists(db))
    rc = exec_fmt(db, pzErr, "DELETE FROM main." KNN_INDEX_TABLE " WHERE tbl = %Q", tbl);
  return rc;
}

/* Canonical name of table tbl, its INTEGER PRIMARY KEY column, and a check
** that column col exists. */
static int inspect_source(sqlite3 *db, const char *fn, const char *tbl, const char *col,
                          char **canon, char **pk, char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc, has_col = 0, n_pk = 0, pk_index = 0;
  *canon = *pk = NULL;
  rc = sqlite3_prepare_v2(db,
                          "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND "
                          "name = ?1 COLLATE NOCASE",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc != SQLITE_ROW) {
    if (rc == SQLITE_DONE) {
      *pzErr = sqlite3_mprintf("%s: no such table: %s", fn, tbl);
      rc = SQLITE_ERROR;
    }
    goto finish;
  }
  *canon = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  st = NULL;
  if (!*canon) {
    rc = SQLITE_NOMEM;
    goto finish;
  }
  rc = prepare_fmt(db, &st, pzErr, "SELECT name, type, pk FROM pragma_table_info(%Q, 'main')",
                   *canon);
  if (rc != SQLITE_OK) goto finish;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    if (name && sqlite3_stricmp(name, col) == 0) has_col = 1;
    if (sqlite3_column_int(st, 2) > 0) {
      n_pk++;
      if (name && type && sqlite3_stricmp(type, "INTEGER") == 0 && !*pk)
        *pk = sqlite3_mprintf("%s", name);
    }
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_DONE) goto finish;
  rc = SQLITE_OK;
  if (!has_col) {
    *pzErr = sqlite3_mprintf("%s: table %s has no column named %s", fn, *canon, col);
    rc = SQLITE_ERROR;
    goto finish;
  }
  /* An INTEGER PRIMARY KEY that aliases the rowid has no index of its own;
  ** WITHOUT ROWID tables and "INTEGER PRIMARY KEY DESC" have one. */
  rc = prepare_fmt(db, &st, pzErr,
                   "SELECT count(*) FROM pragma_index_list(%Q, 'main') WHERE origin = 'pk'",
                   *canon);
  if (rc != SQLITE_OK) goto finish;
  if (sqlite3_step(st) == SQLITE_ROW) pk_index = sqlite3_column_int(st, 0);
  if (n_pk != 1 || !*pk || pk_index) {
    *pzErr = sqlite3_mprintf("%s: table %s needs an INTEGER PRIMARY KEY column (a stable "
                             "rowid) to be indexed",
                             fn, *canon);
    rc = SQLITE_ERROR;
  }
finish:
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) {
    set_db_err(db, pzErr);
    sqlite3_free(*canon);
    sqlite3_free(*pk);
    *canon = *pk = NULL;
  }
  return rc;
}

/* Drop any index on tbl and create an empty one whose build cursor covers
** every row. */
static int create_index(sqlite3 *db, const char *fn, const char *tbl, const char *col,
                        i64 chunk_size, knn_index *ix, char **pzErr) {
  char *canon = NULL, *pk = NULL;
  int rc = inspect_source(db, fn, tbl, col, &canon, &pk, pzErr);
  if (rc != SQLITE_OK) return rc;
  rc = drop_index_objects(db, canon, pzErr);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TABLE IF NOT EXISTS main." KNN_INDEX_TABLE "("
                  "tbl TEXT PRIMARY KEY COLLATE NOCASE, col TEXT NOT NULL, pk TEXT NOT NULL, "
                  "dim INTEGER NOT NULL, chunk_size INTEGER NOT NULL, "
                  "tail_chunk INTEGER NOT NULL, tail_used INTEGER NOT NULL, "
                  "n_vectors INTEGER NOT NULL, build_next INTEGER, format INTEGER NOT NULL)");
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "INSERT INTO main." KNN_INDEX_TABLE " VALUES (%Q, %Q, %Q, 0, %lld, 0, 0, 0, "
                  "-9223372036854775808, 1)",
                  canon, col, pk, chunk_size);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_chunks\"(id INTEGER PRIMARY KEY, "
                  "valid BLOB NOT NULL, rowids BLOB NOT NULL, vectors BLOB NOT NULL)",
                  canon);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_rowids\"(rid INTEGER PRIMARY KEY, "
                  "chunk INTEGER NOT NULL, slot INTEGER NOT NULL)",
                  canon);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_log\"(seq INTEGER PRIMARY KEY, rid INTEGER NOT "
                  "NULL)",
                  canon);
  /* Plain SQL, so connections without facevec can still write the table. */
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER INSERT ON \"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                  canon, trigger_suffix[0], canon, canon, pk);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER DELETE ON \"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); END",
                  canon, trigger_suffix[1], canon, canon, pk);
  if (rc == SQLITE_OK)
    rc = exec_fmt(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER UPDATE ON \"%w\" "
                  "WHEN old.\"%w\" IS NOT new.\"%w\" OR old.\"%w\" IS NOT new.\"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                  canon, trigger_suffix[2], canon, pk, pk, col, col, canon, pk, canon, pk);
  if (rc == SQLITE_OK) rc = index_load(db, canon, ix, pzErr);
  if (rc == SQLITE_NOTFOUND) rc = SQLITE_ERROR; /* cannot happen: just inserted */
  sqlite3_free(canon);
  sqlite3_free(pk);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Transactions around the writing functions                                 */

static int savepoint_begin(sqlite3 *db, char **pzErr) {
  return exec_fmt(db, pzErr, "SAVEPOINT facevec_knn");
}

/* Commit (rc == SQLITE_OK) or roll back the savepoint; returns the final rc. */
static int savepoint_end(sqlite3 *db, int rc, char **pzErr) {
  if (rc == SQLITE_OK) {
    rc = exec_fmt(db, pzErr, "RELEASE facevec_knn");
    if (rc == SQLITE_OK) return rc;
  }
  sqlite3_exec(db, "ROLLBACK TO facevec_knn", NULL, NULL, NULL);
  sqlite3_exec(db, "RELEASE facevec_knn", NULL, NULL, NULL);
  return rc;
}

/* Report rc/zErr of function fn on ctx. */
static void result_error(sqlite3_context *ctx, const char *fn, int rc, char *zErr) {
  if (rc == SQLITE_NOMEM) {
    sqlite3_result_error_nomem(ctx);
  } else {
    char *msg;
    if (zErr && strncmp(zErr, fn, strlen(fn)) == 0)
      msg = sqlite3_mprintf("%s", zErr);
    else
      msg = sqlite3_mprintf("%s: %s", fn, zErr ? zErr : sqlite3_errstr(rc));
    sqlite3_result_error(ctx, msg ? msg : fn, -1);
    sqlite3_free(msg);
    if (rc != SQLITE_ERROR) sqlite3_result_error_code(ctx, rc);
  }
}

/* A TEXT value as a C string, or NULL with *msg set (sqlite3_malloc'd) when
** it is not TEXT or holds a NUL, which would cut the name short ("t\0x"
** acting on t). what = "table (argument 1)", ... */
static const char *name_value(sqlite3_value *v, const char *fn, const char *what,
                              char **msg) {
  const char *text;
  *msg = NULL;
  if (sqlite3_value_type(v) != SQLITE_TEXT) {
    *msg = sqlite3_mprintf("%s: %s must be TEXT, found %s", fn, what,
                           type_name(sqlite3_value_type(v)));
    return NULL;
  }
  text = (const char *)sqlite3_value_text(v);
  if (text && (size_t)sqlite3_value_bytes(v) != strlen(text)) {
    *msg = sqlite3_mprintf("%s: %s contains a NUL character", fn, what);
    return NULL;
  }
  return text;
}

/* Text argument i of fn, or an error. NULL is an error too: these functions
** administer an index, and silently doing nothing would hide mistakes. */
static const char *text_arg(sqlite3_context *ctx, const char *fn, const char *what,
                            sqlite3_value **argv, int i) {
  char *label = sqlite3_mprintf("%s (argument %d)", what, i + 1), *msg = NULL;
  const char *text = label ? name_value(argv[i], fn, label, &msg) : NULL;
  sqlite3_free(label);
  if (!label) {
    sqlite3_result_error_nomem(ctx);
  } else if (!text) {
    if (msg)
      sqlite3_result_error(ctx, msg, -1);
    else
      sqlite3_result_error_nomem(ctx);
  }
  sqlite3_free(msg);
  return text;
}

static int int_arg(sqlite3_context *ctx, const char *fn, const char *what,
                   sqlite3_value **argv, int i, i64 *out) {
  if (sqlite3_value_type(argv[i]) != SQLITE_INTEGER) {
    char *msg = sqlite3_mprintf("%s: %s (argument %d) must be an INTEGER, found %s", fn,
                                what, i + 1, type_name(sqlite3_value_type(argv[i])));
    sqlite3_result_error(ctx, msg ? msg : fn, -1);
    sqlite3_free(msg);
    return 0;
  }
  *out = sqlite3_value_int64(argv[i]);
  return 1;
}

/* Load tbl's index, with "no index" as an error naming fn. */
static int load_existing(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix,
                         char **pzErr) {
  int rc = index_load(db, tbl, ix, pzErr);
  if (rc == SQLITE_NOTFOUND) {
    sqlite3_stmt *st = NULL;
    int exists = 0;
    if (sqlite3_prepare_v2(db,
                           "SELECT 1 FROM main.sqlite_schema WHERE type = 'table' AND "
                           "name = ?1 COLLATE NOCASE",
                           -1, &st, NULL) == SQLITE_OK) {
      sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
      exists = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    if (!exists) {
      *pzErr = sqlite3_mprintf("%s: no such table: %s", fn, tbl);
      return SQLITE_ERROR;
    }
    *pzErr = sqlite3_mprintf("%s: no facevec_knn index on table '%s'; create it with "
                             "SELECT facevec_knn_build('%q', 'embedding')",
                             fn, tbl, tbl);
    rc = SQLITE_ERROR;
  }
  return rc;
}

/*
** facevec_knn_build(table [, column [, chunk_size]]) -> INTEGER vectors indexed
** facevec_knn_create(table [, column [, chunk_size]]) -> 0 (fill with _sync)
** Drop any index on table first. column defaults to 'embedding'; chunk_size
** (slots per chunk, a multiple of 64 up to 65536) to about 2 MiB of vectors.
** Errors: NULL or non-TEXT names, no such table/column, no INTEGER PRIMARY
** KEY, a row whose vector is malformed or of another dimension.
*/
static void build_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const int fill = sqlite3_user_data(ctx) != NULL;
  const char *fn = fill ? "facevec_knn_build" : "facevec_knn_create";
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *tbl, *col = "embedding";
  i64 chunk_size = 0, done = 0;
  char *zErr = NULL;
  knn_index ix;
  int rc;
  memset(&ix, 0, sizeof ix);

  if (!(tbl = text_arg(ctx, fn, "table", argv, 0))) return;
  if (argc > 1 && !(col = text_arg(ctx, fn, "column", argv, 1))) return;
  if (argc > 2) {
    if (!int_arg(ctx, fn, "chunk_size", argv, 2, &chunk_size)) return;
    if (chunk_size < 64 || chunk_size > KNN_MAX_CHUNK || chunk_size % 64) {
      char *msg = sqlite3_mprintf("%s: chunk_size must be a multiple of 64 between 64 and "
                                  "%d, found %lld",
                                  fn, KNN_MAX_CHUNK, chunk_size);
      sqlite3_result_error(ctx, msg ? msg : fn, -1);
      sqlite3_free(msg);
      return;
    }
  }
  rc = savepoint_begin(db, &zErr);
  if (rc != SQLITE_OK) goto finish;
  rc = create_index(db, fn, tbl, col, chunk_size, &ix, &zErr);
  if (rc == SQLITE_OK && fill) rc = knn_sync_rows(db, fn, &ix, -1, &done, &zErr);
  rc = savepoint_end(db, rc, &zErr);
  if (rc == SQLITE_OK) sqlite3_result_int64(ctx, fill ? ix.n_vectors : 0);
finish:
  if (rc != SQLITE_OK) result_error(ctx, fn, rc, zErr);
  sqlite3_free(zErr);
  index_clear(&ix);
}

/*
** facevec_knn_sync(table [, max_rows]) -> INTEGER rows processed
** Applies logged changes of table (then continues an unfinished build), at
** most max_rows (> 0; default all) source rows, in one savepoint. A result
** below max_rows means the index is up to date.
*/
static void sync_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "facevec_knn_sync";
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *tbl;
  i64 max_rows = -1, done = 0;
  char *zErr = NULL;
  knn_index ix;
  int rc;
  memset(&ix, 0, sizeof ix);

  if (!(tbl = text_arg(ctx, fn, "table", argv, 0))) return;
  if (argc > 1) {
    if (!int_arg(ctx, fn, "max_rows", argv, 1, &max_rows)) return;
    if (max_rows <= 0) {
      char *msg = sqlite3_mprintf("%s: max_rows must be positive, found %lld", fn, max_rows);
      sqlite3_result_error(ctx, msg ? msg : fn, -1);
      sqlite3_free(msg);
      return;
    }
  }
  rc = savepoint_begin(db, &zErr);
  if (rc != SQLITE_OK) goto finish;
  rc = load_existing(db, fn, tbl, &ix, &zErr);
  if (rc == SQLITE_OK) rc = knn_sync_rows(db, fn, &ix, max_rows, &done, &zErr);
  rc = savepoint_end(db, rc, &zErr);
  if (rc == SQLITE_OK) sqlite3_result_int64(ctx, done);
finish:
  if (rc != SQLITE_OK) result_error(ctx, fn, rc, zErr);
  sqlite3_free(zErr);
  index_clear(&ix);
}

/* facevec_knn_drop(table) -> 1 if an index was dropped, 0 if there was none.
** Call it in a statement of its own: SQLite refuses DROP TABLE while another
** statement of the connection reads. */
static void drop_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "facevec_knn_drop";
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *tbl;
  char *zErr = NULL;
  knn_index ix;
  int rc, found;
  (void)argc;
  if (!(tbl = text_arg(ctx, fn, "table", argv, 0))) return;
  rc = savepoint_begin(db, &zErr);
  if (rc != SQLITE_OK) goto finish;
  rc = index_load(db, tbl, &ix, &zErr);
  found = rc == SQLITE_OK;
  if (rc == SQLITE_NOTFOUND) rc = SQLITE_OK;
  if (rc == SQLITE_OK && found) rc = drop_index_objects(db, ix.tbl, &zErr);
  index_clear(&ix);
  rc = savepoint_end(db, rc, &zErr);
  if (rc == SQLITE_OK) sqlite3_result_int(ctx, found);
finish:
  if (rc != SQLITE_OK) result_error(ctx, fn, rc, zErr);
  sqlite3_free(zErr);
}

static i64 count_rows(sqlite3 *db, const char *fmt, const char *tbl) {
  sqlite3_stmt *st = NULL;
  i64 n = -1;
  if (prepare_fmt(db, &st, NULL, fmt, tbl) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

/* facevec_knn_status(table) -> TEXT JSON object describing the index, or NULL
** if table has none. "pending" counts logged changes not yet synced;
** "slots" - "vectors" is space left by deletions (a rebuild compacts it). */
static void status_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const char *fn = "facevec_knn_status";
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  const char *tbl;
  char *zErr = NULL, *json = NULL;
  knn_index ix;
  int rc, trig = 0;
  (void)argc;
  if (!(tbl = text_arg(ctx, fn, "table", argv, 0))) return;
  rc = index_load(db, tbl, &ix, &zErr);
  if (rc == SQLITE_NOTFOUND) {
    sqlite3_result_null(ctx);
    return;
  }
  if (rc == SQLITE_OK) rc = triggers_present(db, &ix, &trig, &zErr);
  if (rc == SQLITE_OK) {
    i64 chunks = count_rows(db, "SELECT count(*) FROM \"main\".\"%w_fvknn_chunks\"", ix.tbl);
    i64 pending = count_rows(db, "SELECT count(*) FROM \"main\".\"%w_fvknn_log\"", ix.tbl);
    i64 slots = ix.tail_chunk ? (chunks - 1) * ix.chunk_size + ix.tail_used : 0;
    /* SQLite's json_object escapes the names, whatever characters they hold. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db,
                            "SELECT json_object('table', ?1, 'column', ?2, 'dim', ?3, "
                            "'chunk_size', ?4, 'chunks', ?5, 'slots', ?6, 'vectors', ?7, "
                            "'pending', ?8, 'building', json(?9), 'triggers', json(?10))",
                            -1, &st, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(st, 1, ix.tbl, -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 2, ix.col, -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 3, ix.dim);
      sqlite3_bind_int64(st, 4, ix.chunk_size);
      sqlite3_bind_int64(st, 5, chunks);
      sqlite3_bind_int64(st, 6, slots);
      sqlite3_bind_int64(st, 7, ix.n_vectors);
      sqlite3_bind_int64(st, 8, pending);
      sqlite3_bind_text(st, 9, ix.building ? "true" : "false", -1, SQLITE_STATIC);
      sqlite3_bind_text(st, 10, trig ? "true" : "false", -1, SQLITE_STATIC);
      if (sqlite3_step(st) == SQLITE_ROW) {
        json = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
        if (!json) rc = SQLITE_NOMEM;
      } else {
        rc = sqlite3_errcode(db) == SQLITE_OK ? SQLITE_ERROR : sqlite3_errcode(db);
        set_db_err(db, &zErr);
      }
    } else {
      set_db_err(db, &zErr);
    }
    sqlite3_finalize(st);
  }
  if (rc == SQLITE_OK)
    sqlite3_result_text(ctx, json, -1, sqlite3_free);
  else
    result_error(ctx, fn, rc, zErr);
  sqlite3_free(zErr);
  index_clear(&ix);
}

/* ------------------------------------------------------------------------ */
/* Search                                                                    */

/* Max-heap of the k best (distance, rowid), ordered like ORDER BY distance,
** rowid. Doubles, so distances are exactly the scalar functions'. Its
** buffers start small and grow with the rows actually seen (up to k), so a
** huge k costs nothing and no count read from the file sizes an allocation. */
typedef struct knn_heap {
  size_t k, size, cap;
  double *d;
  i64 *id;
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
  h->cap = cap;
  return SQLITE_OK;
}

static inline int heap_gt(const knn_heap *h, size_t i, size_t j) {
  return h->d[i] > h->d[j] || (h->d[i] == h->d[j] && h->id[i] > h->id[j]);
}

static inline void heap_swap(knn_heap *h, size_t i, size_t j) {
  double d = h->d[i];
  i64 id = h->id[i];
  h->d[i] = h->d[j];
  h->id[i] = h->id[j];
  h->d[j] = d;
  h->id[j] = id;
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

/* Caller checked heap_accepts. */
static void heap_push(knn_heap *h, double d, i64 id) {
  if (h->size < h->k) {
    size_t i = h->size++;
    h->d[i] = d;
    h->id[i] = id;
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
  heap_down(h, 0, h->size);
}

static void heap_sort(knn_heap *h) {
  for (size_t end = h->size; end > 1; end--) {
    heap_swap(h, 0, end - 1);
    heap_down(h, 0, end - 1);
  }
}

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
  int pending_has_min; /* INT64_MIN is pending (cannot live in the set) */
  char *zErr;
} knn_query;

/* Rows whose stored copy may be out of date: scored from the source table. */
static inline int is_pending(const knn_query *s, i64 rid) {
  if (s->ix.building && rid >= s->ix.build_next) return 1;
  if (rid == INT64_MIN) return s->pending_has_min;
  return rid_set_has(&s->pending, rid);
}

/* Distance key of row vector v: the squared distance for euclidean (sqrt is
** applied to the final k), else the metric's value. The row is argument a,
** the query b, as in <metric>_distance(embedding, query). */
static inline int row_key(const knn_query *s, const float *v, double *key) {
  if (s->metric == FV_EUCLIDEAN || s->metric == FV_EUCLIDEAN_SQUARED) {
    *key = (double)fv_l2_squared(v, s->q, s->dim);
    return FV_OK;
  }
  return fv_distance(s->metric, v, s->q, s->dim, key);
}

/* Score one row; problems are errors only for live rows. */
static int consider(knn_query *s, const float *v, i64 rid, int stored) {
  double key;
  int rc = row_key(s, v, &key);
  if (rc == FV_OK && key == key) {
    if (key <= s->thr_key && heap_accepts(&s->heap, key, rid) &&
        !(stored && is_pending(s, rid))) {
      if (heap_reserve(&s->heap) != SQLITE_OK) return SQLITE_NOMEM;
      heap_push(&s->heap, key, rid);
    }
    return SQLITE_OK;
  }
  if (stored && is_pending(s, rid)) return SQLITE_OK;
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
  rc = prepare_fmt(s->db, &st, &s->zErr, "SELECT id FROM \"main\".\"%w_fvknn_chunks\" ORDER BY id",
                   ix->tbl);
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
    if (sqlite3_blob_bytes(b_vectors) != (int)(ix->chunk_size * (i64)vbytes) ||
        sqlite3_blob_bytes(b_valid) != (int)(ix->chunk_size / 8) ||
        sqlite3_blob_bytes(b_rowids) != (int)(ix->chunk_size * 8)) {
      s->zErr = sqlite3_mprintf("facevec_knn: index of %s is corrupt (chunk %lld has the "
                                "wrong size); rebuild it",
                                ix->tbl, id);
      rc = SQLITE_CORRUPT;
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
        rc = consider(s, block + (r - lo) * dim, rowids[r], 1);
        if (rc != SQLITE_OK) goto finish;
      }
    }
  }
  if (rc != SQLITE_DONE) goto db_error;
  rc = SQLITE_OK;
  goto finish;
db_error:
  set_db_err(s->db, &s->zErr);
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
  if (ix->building)
    rc = prepare_fmt(s->db, &st, &s->zErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" >= ?1 OR \"%w\" IN "
                     "(SELECT rid FROM \"main\".\"%w_fvknn_log\")",
                     ix->pk, ix->col, ix->tbl, ix->pk, ix->pk, ix->tbl);
  else
    rc = prepare_fmt(s->db, &st, &s->zErr,
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
    rc = source_vector("facevec_knn", ix, rid, sqlite3_column_type(st, 1),
                       sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1),
                       (i64)s->dim, &v, &n, &has, &scratch, &cap, &s->zErr);
    if (rc != SQLITE_OK) goto finish;
    if (!has) continue;
    rc = consider(s, v, rid, 0);
    if (rc != SQLITE_OK) goto finish;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else
    set_db_err(s->db, &s->zErr);
finish:
  sqlite3_finalize(st);
  sqlite3_free(scratch);
  return rc;
}

static int load_pending(knn_query *s, i64 *n_log) {
  sqlite3_stmt *st = NULL;
  int rc = prepare_fmt(s->db, &st, &s->zErr, "SELECT rid FROM \"main\".\"%w_fvknn_log\"",
                       s->ix.tbl);
  *n_log = 0;
  if (rc != SQLITE_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 rid = sqlite3_column_int64(st, 0);
    (*n_log)++;
    if (rid == INT64_MIN)
      s->pending_has_min = 1;
    else if ((rc = rid_set_add(&s->pending, rid)) != SQLITE_OK)
      break;
  }
  if (rc == SQLITE_DONE)
    rc = SQLITE_OK;
  else if (rc != SQLITE_NOMEM)
    set_db_err(s->db, &s->zErr);
  sqlite3_finalize(st);
  return rc;
}

/* The search behind facevec_knn. On success *ids and *dist (sqlite3_malloc'd)
** hold *n results, ascending. */
static int knn_search(sqlite3 *db, const char *tbl, const float *q, size_t dim, i64 k,
                      fv_metric metric, int has_thr, double thr, i64 **ids, double **dist,
                      size_t *n, char **pzErr) {
  knn_query s;
  int rc, trig = 0;
  i64 n_log = 0;
  memset(&s, 0, sizeof s);
  s.db = db;
  s.metric = metric;
  s.q = q;
  s.dim = dim;
  *ids = NULL;
  *dist = NULL;
  *n = 0;

  rc = load_existing(db, "facevec_knn", tbl, &s.ix, &s.zErr);
  if (rc != SQLITE_OK) goto finish;
  rc = triggers_present(db, &s.ix, &trig, &s.zErr);
  if (rc != SQLITE_OK) goto finish;
  if (!trig) {
    s.zErr = sqlite3_mprintf("facevec_knn: the index of %s is stale: its triggers are "
                             "missing (was the table dropped and created again?); rebuild "
                             "it with SELECT facevec_knn_build('%q', '%q')",
                             s.ix.tbl, s.ix.tbl, s.ix.col);
    rc = SQLITE_ERROR;
    goto finish;
  }
  if (s.ix.dim > 0 && (i64)dim != s.ix.dim) {
    s.zErr = sqlite3_mprintf("facevec_knn: query has %lld dimensions, the index of %s has "
                             "%lld",
                             (i64)dim, s.ix.tbl, s.ix.dim);
    rc = SQLITE_ERROR;
    goto finish;
  }
  if (metric == FV_COSINE || metric == FV_EUCLIDEAN_L2) {
    if (fv_dot(q, q, dim) == 0.0f) {
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
  sqlite3_free(s.pending.slot);
  index_clear(&s.ix);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The facevec_knn table-valued function                                     */

enum {
  KNN_COL_DISTANCE = 0,
  KNN_COL_RANK,
  KNN_COL_COLLECTION, /* hidden arguments from here */
  KNN_COL_QUERY,
  KNN_COL_K,
  KNN_COL_METRIC,
  KNN_COL_THRESHOLD,
  KNN_N_ARGS = 5
};

typedef struct knn_vtab {
  sqlite3_vtab base;
  sqlite3 *db;
} knn_vtab;

typedef struct knn_cursor {
  sqlite3_vtab_cursor base;
  i64 *ids;
  double *dist;
  size_t n, i;
} knn_cursor;

static int knnConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **ppVtab, char **pzErr) {
  knn_vtab *v;
  int rc;
  (void)aux;
  (void)argc;
  (void)argv;
  (void)pzErr;
  rc = sqlite3_declare_vtab(db,
                            "CREATE TABLE x(distance REAL, rank INTEGER, collection HIDDEN, "
                            "query HIDDEN, k HIDDEN, metric HIDDEN, threshold HIDDEN)");
  /* It reads any table and costs a scan: never from a view or trigger of
  ** the file (see the security model at the top). */
  if (rc == SQLITE_OK) rc = sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  if (rc != SQLITE_OK) return rc;
  v = sqlite3_malloc(sizeof *v);
  if (!v) return SQLITE_NOMEM;
  memset(v, 0, sizeof *v);
  v->db = db;
  *ppVtab = &v->base;
  return SQLITE_OK;
}

static int knnDisconnect(sqlite3_vtab *pVtab) {
  sqlite3_free(pVtab);
  return SQLITE_OK;
}

/* idxNum: bit i set when hidden argument i (collection, query, k, metric,
** threshold) is given, passed in argv in that order. */
static int knnBestIndex(sqlite3_vtab *pVtab, sqlite3_index_info *info) {
  int idx[KNN_N_ARGS], mask = 0, argi = 0;
  (void)pVtab;
  for (int i = 0; i < KNN_N_ARGS; i++) idx[i] = -1;
  for (int i = 0; i < info->nConstraint; i++) {
    const struct sqlite3_index_constraint *c = &info->aConstraint[i];
    int a = c->iColumn - KNN_COL_COLLECTION;
    if (a < 0 || a >= KNN_N_ARGS) continue;
    if (c->op != SQLITE_INDEX_CONSTRAINT_EQ) continue;
    if (!c->usable) return SQLITE_CONSTRAINT; /* wait for a plan that binds it */
    idx[a] = i;
  }
  for (int a = 0; a < KNN_N_ARGS; a++) {
    if (idx[a] < 0) continue;
    mask |= 1 << a;
    info->aConstraintUsage[idx[a]].argvIndex = ++argi;
    info->aConstraintUsage[idx[a]].omit = 1;
  }
  info->idxNum = mask;
  info->estimatedCost = (mask & 7) == 7 ? 10.0 : 1e12;
  info->estimatedRows = 10;
  /* Rows come out ordered by distance, then rowid (and so by rank). */
  if (info->nOrderBy >= 1 && info->nOrderBy <= 2) {
    int ok = 1;
    for (int i = 0; i < info->nOrderBy && ok; i++) {
      const struct sqlite3_index_orderby *o = &info->aOrderBy[i];
      if (o->desc) ok = 0;
      else if (i == 0) ok = o->iColumn == KNN_COL_DISTANCE || o->iColumn == KNN_COL_RANK;
      else ok = o->iColumn == -1 || o->iColumn == KNN_COL_RANK;
    }
    if (ok) info->orderByConsumed = 1;
  }
  return SQLITE_OK;
}

static int knnOpen(sqlite3_vtab *pVtab, sqlite3_vtab_cursor **ppCursor) {
  knn_cursor *c = sqlite3_malloc(sizeof *c);
  (void)pVtab;
  if (!c) return SQLITE_NOMEM;
  memset(c, 0, sizeof *c);
  *ppCursor = &c->base;
  return SQLITE_OK;
}

static void cursor_reset(knn_cursor *c) {
  sqlite3_free(c->ids);
  sqlite3_free(c->dist);
  c->ids = NULL;
  c->dist = NULL;
  c->n = c->i = 0;
}

static int knnClose(sqlite3_vtab_cursor *cur) {
  cursor_reset((knn_cursor *)cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

static int vtab_error(sqlite3_vtab *pVtab, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  sqlite3_free(pVtab->zErrMsg);
  pVtab->zErrMsg = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  return SQLITE_ERROR;
}

/* Hand zErr (sqlite3_malloc'd; NULL = out of memory) to the vtab. */
static int vtab_take_error(sqlite3_vtab *pVtab, char *zErr) {
  if (!zErr) return SQLITE_NOMEM;
  sqlite3_free(pVtab->zErrMsg);
  pVtab->zErrMsg = zErr;
  return SQLITE_ERROR;
}

/*
** facevec_knn(collection, query, k [, metric [, threshold]])
** Errors: a missing or NULL collection, query or k; k not a positive
** INTEGER; an unknown metric; a threshold that is not a number; a query that
** is not a float32 BLOB / JSON array, holds NaN or infinity, has another
** dimension than the index, or (cosine, euclidean_l2) has norm 0; no index on
** the table; a live row whose distance is undefined (norm 0, NaN).
*/
static int knnFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                     sqlite3_value **argv) {
  knn_cursor *c = (knn_cursor *)cur;
  sqlite3_vtab *pVtab = cur->pVtab;
  sqlite3 *db = ((knn_vtab *)pVtab)->db;
  sqlite3_value *arg[KNN_N_ARGS] = {0};
  static const char *const arg_name[KNN_N_ARGS] = {"collection", "query", "k", "metric",
                                                   "threshold"};
  const char *tbl;
  float *qbuf = NULL;
  const float *q = NULL;
  size_t dim = 0;
  i64 k;
  fv_metric metric = FV_EUCLIDEAN;
  int has_thr = 0, rc = SQLITE_OK, ai = 0;
  double thr = 0;
  char *zErr = NULL;
  (void)idxStr;
  cursor_reset(c);
  for (int a = 0; a < KNN_N_ARGS && ai < argc; a++)
    if (idxNum & (1 << a)) arg[a] = argv[ai++];

  for (int a = 0; a < 3; a++) {
    if (!arg[a] || sqlite3_value_type(arg[a]) == SQLITE_NULL)
      return vtab_error(pVtab, "facevec_knn: %s (argument %d) is %s", arg_name[a], a + 1,
                        arg[a] ? "NULL" : "missing");
  }
  if (sqlite3_value_type(arg[0]) != SQLITE_TEXT)
    return vtab_error(pVtab, "facevec_knn: collection (argument 1) must be a table name, "
                             "found %s",
                      type_name(sqlite3_value_type(arg[0])));
  tbl = name_value(arg[0], "facevec_knn", "collection (argument 1)", &zErr);
  if (!tbl) return vtab_take_error(pVtab, zErr);
  if (sqlite3_value_type(arg[2]) != SQLITE_INTEGER)
    return vtab_error(pVtab, "facevec_knn: k (argument 3) must be an INTEGER, found %s",
                      type_name(sqlite3_value_type(arg[2])));
  k = sqlite3_value_int64(arg[2]);
  if (k <= 0) return vtab_error(pVtab, "facevec_knn: k must be positive, found %lld", k);
  if (arg[3] && sqlite3_value_type(arg[3]) != SQLITE_NULL) {
    const char *name = name_value(arg[3], "facevec_knn", "metric (argument 4)", &zErr);
    size_t i, nm = sizeof metric_names / sizeof metric_names[0];
    if (!name) return vtab_take_error(pVtab, zErr);
    for (i = 0; i < nm; i++)
      if (sqlite3_stricmp(name, metric_names[i].name) == 0) break;
    if (i == nm)
      return vtab_error(pVtab, "facevec_knn: unknown metric '%s'; expected euclidean, "
                               "euclidean_squared, cosine or euclidean_l2",
                        name);
    metric = metric_names[i].metric;
  }
  if (arg[4] && sqlite3_value_type(arg[4]) != SQLITE_NULL) {
    int t = sqlite3_value_type(arg[4]);
    if (t != SQLITE_INTEGER && t != SQLITE_FLOAT)
      return vtab_error(pVtab, "facevec_knn: threshold (argument 5) must be a number, "
                               "found %s",
                        type_name(t));
    has_thr = 1;
    thr = sqlite3_value_double(arg[4]);
  }

  /* The query vector: a float32 BLOB (copied, for alignment) or JSON. */
  {
    int t = sqlite3_value_type(arg[1]);
    if (t == SQLITE_BLOB) {
      int nb = sqlite3_value_bytes(arg[1]);
      const void *p = sqlite3_value_blob(arg[1]);
      if (nb <= 0 || nb % 4)
        return vtab_error(pVtab, "facevec_knn: query (argument 2): invalid float32 vector "
                                 "BLOB length, must be a positive multiple of 4, found %d "
                                 "bytes",
                          nb);
      dim = (size_t)nb / 4;
      qbuf = sqlite3_malloc64(dim * sizeof(float));
      if (!qbuf || !p) {
        sqlite3_free(qbuf);
        return SQLITE_NOMEM;
      }
      memcpy(qbuf, p, (size_t)nb);
    } else if (t == SQLITE_TEXT) {
      const char *text = (const char *)sqlite3_value_text(arg[1]);
      size_t len = (size_t)sqlite3_value_bytes(arg[1]), pos = 0;
      long cnt = text ? fv_parse_json(text, len, NULL, 0, &pos) : -1;
      if (!text) return SQLITE_NOMEM;
      if (cnt <= 0)
        return vtab_error(pVtab, cnt == 0 ? "facevec_knn: query (argument 2) is an empty "
                                            "JSON array"
                                          : "facevec_knn: query (argument 2): malformed "
                                            "JSON array of numbers at character %lld",
                          (i64)pos);
      qbuf = sqlite3_malloc64((size_t)cnt * sizeof(float));
      if (!qbuf) return SQLITE_NOMEM;
      if (fv_parse_json(text, len, qbuf, (size_t)cnt, &pos) != cnt) {
        sqlite3_free(qbuf);
        return vtab_error(pVtab, "facevec_knn: query (argument 2): number out of float32 "
                                 "range at character %lld",
                          (i64)pos);
      }
      dim = (size_t)cnt;
    } else {
      return vtab_error(pVtab, "facevec_knn: query (argument 2) must be a float32 vector "
                               "BLOB or a JSON array TEXT, found %s",
                        type_name(t));
    }
    q = qbuf;
  }

  rc = knn_search(db, tbl, q, dim, k, metric, has_thr, thr, &c->ids, &c->dist, &c->n,
                  &zErr);
  if (rc != SQLITE_OK && rc != SQLITE_NOMEM) {
    sqlite3_free(pVtab->zErrMsg);
    pVtab->zErrMsg = zErr;
    zErr = NULL;
  }
  sqlite3_free(zErr);
  sqlite3_free(qbuf);
  return rc;
}

static int knnNext(sqlite3_vtab_cursor *cur) {
  ((knn_cursor *)cur)->i++;
  return SQLITE_OK;
}

static int knnEof(sqlite3_vtab_cursor *cur) {
  knn_cursor *c = (knn_cursor *)cur;
  return c->i >= c->n;
}

static int knnColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  knn_cursor *c = (knn_cursor *)cur;
  switch (col) {
    case KNN_COL_DISTANCE: sqlite3_result_double(ctx, c->dist[c->i]); break;
    case KNN_COL_RANK: sqlite3_result_int64(ctx, (i64)c->i + 1); break;
    default: sqlite3_result_null(ctx); break; /* hidden arguments */
  }
  return SQLITE_OK;
}

static int knnRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *pRowid) {
  knn_cursor *c = (knn_cursor *)cur;
  *pRowid = c->ids[c->i];
  return SQLITE_OK;
}

static sqlite3_module knn_module = {
    0,             /* iVersion */
    NULL,          /* xCreate: NULL makes the module eponymous-only */
    knnConnect,    /* xConnect */
    knnBestIndex,  /* xBestIndex */
    knnDisconnect, /* xDisconnect */
    NULL,          /* xDestroy */
    knnOpen,       /* xOpen */
    knnClose,      /* xClose */
    knnFilter,     /* xFilter */
    knnNext,       /* xNext */
    knnEof,        /* xEof */
    knnColumn,     /* xColumn */
    knnRowid,      /* xRowid */
    /* xUpdate .. xShadowName */
    NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL};

int fv_knn_register(sqlite3 *db) {
  static const struct {
    const char *name;
    int nargs;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
    int fill; /* user data for build_func */
  } fns[] = {
      {"facevec_knn_build", 1, build_func, 1},  {"facevec_knn_build", 2, build_func, 1},
      {"facevec_knn_build", 3, build_func, 1},  {"facevec_knn_create", 1, build_func, 0},
      {"facevec_knn_create", 2, build_func, 0}, {"facevec_knn_create", 3, build_func, 0},
      {"facevec_knn_sync", 1, sync_func, 0},    {"facevec_knn_sync", 2, sync_func, 0},
      {"facevec_knn_drop", 1, drop_func, 0},    {"facevec_knn_status", 1, status_func, 0},
  };
  /* They write the database (or read arbitrary tables): never from triggers
  ** or views of an untrusted schema. */
  const int flags = SQLITE_UTF8 | SQLITE_DIRECTONLY;
  int rc = sqlite3_create_module(db, "facevec_knn", &knn_module, NULL);
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof fns / sizeof fns[0]; i++)
    rc = sqlite3_create_function_v2(db, fns[i].name, fns[i].nargs, flags,
                                    fns[i].fill ? (void *)&knn_module : NULL, fns[i].fn,
                                    NULL, NULL, NULL);
  return rc;
}
