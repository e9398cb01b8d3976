/*
** knn_store.c - the knn index's tables: its description in facevec_knn_index,
** the chunks, and the writer that keeps them in step with the source table.
** See knn_sql.c for the SQL interface and the storage layout.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
#include "knn_store.h"

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

int knn_exec(sqlite3 *db, char **pzErr, const char *fmt, ...) {
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

int knn_prepare(sqlite3 *db, sqlite3_stmt **st, char **pzErr, const char *fmt,
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

void knn_db_error(sqlite3 *db, char **pzErr) {
  if (!*pzErr) *pzErr = sqlite3_mprintf("%s", sqlite3_errmsg(db));
}

const char *knn_type_name(int type) {
  switch (type) {
    case SQLITE_INTEGER: return "INTEGER";
    case SQLITE_FLOAT: return "REAL";
    case SQLITE_TEXT: return "TEXT";
    case SQLITE_BLOB: return "BLOB";
    default: return "NULL";
  }
}

/* ------------------------------------------------------------------------ */
/* The index's description (one row of facevec_knn_index)                    */

void knn_index_clear(knn_index *ix) {
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

int knn_index_load(sqlite3 *db, const char *tbl, knn_index *ix, char **pzErr) {
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
    knn_db_error(db, pzErr);
    knn_index_clear(ix);
  } else if (rc == SQLITE_NOTFOUND) {
    knn_index_clear(ix);
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
  if (rc != SQLITE_OK) knn_db_error(db, pzErr);
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

int knn_triggers_present(sqlite3 *db, const knn_index *ix, int *present,
                            char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc = knn_prepare(db, &st, pzErr,
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
    knn_db_error(db, pzErr);
  }
  sqlite3_finalize(st);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading a source row's vector                                             */

int knn_source_vector(const char *fn, const knn_index *ix, i64 rid, int type,
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
                             fn, ix->tbl, rid, ix->col, knn_type_name(type));
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
  rc = knn_prepare(db, &w->src_get, &w->zErr,
                   "SELECT \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" = ?1",
                   ix->col, ix->tbl, ix->pk);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &w->map_get, &w->zErr,
                     "SELECT chunk, slot FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &w->map_ins, &w->zErr,
                     "INSERT INTO \"main\".\"%w_fvknn_rowids\"(rid, chunk, slot) "
                     "VALUES (?1, ?2, ?3)",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &w->map_del, &w->zErr,
                     "DELETE FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1", ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &w->chunk_new, &w->zErr,
                     "INSERT INTO \"main\".\"%w_fvknn_chunks\"(id, valid, rowids, vectors) "
                     "VALUES (?1, zeroblob(?2), zeroblob(?3), zeroblob(?4))",
                     ix->tbl);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &w->chunk_del, &w->zErr,
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
    knn_db_error(w->db, &w->zErr);
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
    knn_db_error(w->db, &w->zErr);
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
  knn_db_error(w->db, &w->zErr);
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
  if (rc != SQLITE_OK) knn_db_error(w->db, &w->zErr);
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
      knn_db_error(w->db, &w->zErr);
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

  rc = knn_source_vector(w->fn, ix, rid, type, data, nbytes, ix->dim, &vec, &n, &has,
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
    knn_db_error(w->db, &w->zErr);
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
    knn_db_error(w->db, &w->zErr);
  }
  sqlite3_reset(w->src_get);
  return rc;
}

int knn_sync_rows(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows,
                         i64 *done, char **pzErr) {
  knn_writer w;
  sqlite3_stmt *log_st = NULL, *build_st = NULL;
  i64 count = 0, last_seq = -1;
  int rc = writer_init(&w, db, fn, ix);
  if (rc != SQLITE_OK) goto finish;

  /* 1. The change log, oldest first. */
  rc = knn_prepare(db, &log_st, &w.zErr,
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
    knn_db_error(db, &w.zErr);
    goto finish;
  }
  rc = SQLITE_OK;
  sqlite3_finalize(log_st);
  log_st = NULL;
  if (last_seq >= 0) {
    rc = knn_exec(db, &w.zErr, "DELETE FROM \"main\".\"%w_fvknn_log\" WHERE seq <= %lld", ix->tbl,
                  last_seq);
    if (rc != SQLITE_OK) goto finish;
  }

  /* 2. An unfinished build, in rowid order from the cursor. */
  if (ix->building && (max_rows < 0 || count < max_rows)) {
    i64 budget = max_rows < 0 ? -1 : max_rows - count, n = 0;
    int at_end = 0;
    rc = knn_prepare(db, &build_st, &w.zErr,
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
      knn_db_error(db, &w.zErr);
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
      knn_db_error(db, pzErr);
    }
  }
  sqlite3_free(w.zErr);
  writer_free(&w);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Creating and dropping an index                                            */

int knn_drop_objects(sqlite3 *db, const char *tbl, char **pzErr) {
  int rc = SQLITE_OK;
  for (int i = 0; rc == SQLITE_OK && i < 3; i++)
    rc = knn_exec(db, pzErr, "DROP TRIGGER IF EXISTS \"main\".\"%w%s\"", tbl, trigger_suffix[i]);
  for (int i = 0; rc == SQLITE_OK && i < 3; i++)
    rc = knn_exec(db, pzErr, "DROP TABLE IF EXISTS \"main\".\"%w%s\"", tbl, table_suffix[i]);
  if (rc == SQLITE_OK && meta_table_exists(db))
    rc = knn_exec(db, pzErr, "DELETE FROM main." KNN_INDEX_TABLE " WHERE tbl = %Q", tbl);
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
  rc = knn_prepare(db, &st, pzErr, "SELECT name, type, pk FROM pragma_table_info(%Q, 'main')",
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
  rc = knn_prepare(db, &st, pzErr,
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
    knn_db_error(db, pzErr);
    sqlite3_free(*canon);
    sqlite3_free(*pk);
    *canon = *pk = NULL;
  }
  return rc;
}

int knn_create(sqlite3 *db, const char *fn, const char *tbl, const char *col,
                        i64 chunk_size, knn_index *ix, char **pzErr) {
  char *canon = NULL, *pk = NULL;
  int rc = inspect_source(db, fn, tbl, col, &canon, &pk, pzErr);
  if (rc != SQLITE_OK) return rc;
  rc = knn_drop_objects(db, canon, pzErr);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE IF NOT EXISTS main." KNN_INDEX_TABLE "("
                  "tbl TEXT PRIMARY KEY COLLATE NOCASE, col TEXT NOT NULL, pk TEXT NOT NULL, "
                  "dim INTEGER NOT NULL, chunk_size INTEGER NOT NULL, "
                  "tail_chunk INTEGER NOT NULL, tail_used INTEGER NOT NULL, "
                  "n_vectors INTEGER NOT NULL, build_next INTEGER, format INTEGER NOT NULL)");
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "INSERT INTO main." KNN_INDEX_TABLE " VALUES (%Q, %Q, %Q, 0, %lld, 0, 0, 0, "
                  "-9223372036854775808, 1)",
                  canon, col, pk, chunk_size);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_chunks\"(id INTEGER PRIMARY KEY, "
                  "valid BLOB NOT NULL, rowids BLOB NOT NULL, vectors BLOB NOT NULL)",
                  canon);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_rowids\"(rid INTEGER PRIMARY KEY, "
                  "chunk INTEGER NOT NULL, slot INTEGER NOT NULL)",
                  canon);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w_fvknn_log\"(seq INTEGER PRIMARY KEY, rid INTEGER NOT "
                  "NULL)",
                  canon);
  /* Plain SQL, so connections without facevec can still write the table. */
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER INSERT ON \"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                  canon, trigger_suffix[0], canon, canon, pk);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER DELETE ON \"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); END",
                  canon, trigger_suffix[1], canon, canon, pk);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER UPDATE ON \"%w\" "
                  "WHEN old.\"%w\" IS NOT new.\"%w\" OR old.\"%w\" IS NOT new.\"%w\" BEGIN "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); "
                  "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                  canon, trigger_suffix[2], canon, pk, pk, col, col, canon, pk, canon, pk);
  if (rc == SQLITE_OK) rc = knn_index_load(db, canon, ix, pzErr);
  if (rc == SQLITE_NOTFOUND) rc = SQLITE_ERROR; /* cannot happen: just inserted */
  sqlite3_free(canon);
  sqlite3_free(pk);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Opening an index                                                          */

int knn_index_open(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix,
                         char **pzErr) {
  int rc = knn_index_load(db, tbl, ix, pzErr);
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

i64 knn_count(sqlite3 *db, const char *fmt, const char *tbl) {
  sqlite3_stmt *st = NULL;
  i64 n = -1;
  if (knn_prepare(db, &st, NULL, fmt, tbl) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
    n = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return n;
}

