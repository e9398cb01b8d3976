/*
** knn_store.c - the knn index's tables: its description in facevec_knn_index,
** the chunks, the rowid map, and the writer that keeps them in step with the
** source table. See knn_sql.c for the SQL interface and the storage layout.
**
** The file is input, never trusted: every number read from these tables
** (counts, dimension, chunk size, slots, bitmaps, rowid arrays, map entries,
** blob lengths) is checked against the others and against the real blob
** sizes before it sizes a buffer, bounds a loop or steers a write
** (knn_index_load, knn_index_check, knn_map_find, writer_check_slot).
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codes.h"
#include "facevec.h"
#include "kmeans.h"
#include "knn_store.h"
#include "vector_arg.h"

/* Bytes of vectors the writer buffers before writing them into the tail. */
#define KNN_APPEND_BYTES (1024 * 1024)

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

/* ------------------------------------------------------------------------ */
/* Names of the index's objects, and the triggers' exact SQL                 */

static const char *const trigger_suffix[3] = {"_fvknn_ins", "_fvknn_del", "_fvknn_upd"};
static const char *const table_suffix[3] = {"_fvknn_chunks", "_fvknn_rowids", "_fvknn_log"};
/* Triggers on the chunks table: an edit of it in SQL replaces the index's
** generation, as facevec's own writes do (they go through sqlite3_blob_write,
** which fires no trigger, and replace it themselves), so that chunks kept in
** memory are never taken for those of a file edited by hand. */
static const char *const chunk_edit_suffix[3] = {"_fvknn_chunks_ins", "_fvknn_chunks_del",
                                                 "_fvknn_chunks_upd"};
/* The IVF option's tables: its centroids and settings (one row), and the list
** of each chunk (-1: a mixed chunk, whose slots BLOB names each slot's list). */
static const char *const ivf_suffix[2] = {"_fvknn_ivf", "_fvknn_chunklists"};
/* Compressed storage: one row (storage, rerank, int8 parameters). */
static const char *const quant_suffix = "_fvknn_quant";
/* An IVF build in batches (knn_ivf_build.c): its state, its rows staged by
** list, and the stored rows it left out. */
const char *const knn_build_suffix[3] = {"_fvknn_build", "_fvknn_stage", "_fvknn_skipped"};
/* Columns of each table, in order, as pragma_table_info lists them. */
static const char *const table_columns[3] = {"id,valid,rowids,vectors", "rid,chunk,slot",
                                             "seq,rid"};

/* Trigger i of tbl as SQLite stores it in sqlite_schema.sql, without the
** "CREATE TRIGGER " prefix (and so without a schema name). Plain SQL calling
** no function, so connections without facevec, or with trusted_schema=OFF,
** still log every change. */
static char *trigger_sql(int i, const char *tbl, const char *pk, const char *col) {
  switch (i) {
    case 0:
      return sqlite3_mprintf("\"%w%s\" AFTER INSERT ON \"%w\" BEGIN "
                             "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                             tbl, trigger_suffix[0], tbl, tbl, pk);
    case 1:
      return sqlite3_mprintf("\"%w%s\" AFTER DELETE ON \"%w\" BEGIN "
                             "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); END",
                             tbl, trigger_suffix[1], tbl, tbl, pk);
    default:
      return sqlite3_mprintf("\"%w%s\" AFTER UPDATE ON \"%w\" "
                             "WHEN old.\"%w\" IS NOT new.\"%w\" OR old.\"%w\" IS NOT new.\"%w\" "
                             "BEGIN INSERT INTO \"%w_fvknn_log\"(rid) VALUES (old.\"%w\"); "
                             "INSERT INTO \"%w_fvknn_log\"(rid) VALUES (new.\"%w\"); END",
                             tbl, trigger_suffix[2], tbl, pk, pk, col, col, tbl, pk, tbl, pk);
  }
}

/* ------------------------------------------------------------------------ */
/* A damaged index                                                           */

/* Set *pzErr to "fn: the knn index of tbl <what>; rebuild it with: <how>"
** and return SQLITE_ERROR. facevec's own gallery table is rebuilt by the
** CLI; any other by the SQL function. */
static int index_error(char **pzErr, const char *fn, const char *tbl, const char *col,
                       const char *what) {
  sqlite3_free(*pzErr);
  if (sqlite3_stricmp(tbl, "face_meta") == 0)
    *pzErr = sqlite3_mprintf("%s: the knn index of %s %s; rebuild it with: facevec reindex",
                             fn, tbl, what);
  else
    *pzErr = sqlite3_mprintf("%s: the knn index of %s %s; rebuild it with: "
                             "SELECT facevec_knn_build('%q', '%q')",
                             fn, tbl, what, tbl, col ? col : "embedding");
  return SQLITE_ERROR;
}

int knn_corrupt(char **pzErr, const char *fn, const knn_index *ix, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  char *detail = sqlite3_vmprintf(fmt, ap);
  va_end(ap);
  char *what = detail ? sqlite3_mprintf("is corrupt (%s)", detail) : NULL;
  int rc = what ? index_error(pzErr, fn, ix->tbl, ix->col, what) : SQLITE_NOMEM;
  sqlite3_free(detail);
  sqlite3_free(what);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* The index's description (one row of facevec_knn_index)                    */

void knn_index_clear(knn_index *ix) {
  sqlite3_free(ix->tbl);
  sqlite3_free(ix->col);
  sqlite3_free(ix->pk);
  memset(ix, 0, sizeof *ix);
}

/* "table", "view", ... of main's object name, or NULL (sqlite3_malloc'd). */
char *knn_object_type(sqlite3 *db, const char *name) {
  sqlite3_stmt *st = NULL;
  char *type = NULL;
  if (sqlite3_prepare_v2(db,
                         "SELECT type FROM main.sqlite_schema WHERE name = ?1 COLLATE NOCASE "
                         "AND type IN ('table', 'view')",
                         -1, &st, NULL) == SQLITE_OK) {
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW)
      type = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
  }
  sqlite3_finalize(st);
  return type;
}

/* Main's object name is of type `type`. */
static int knn_object_type_is(sqlite3 *db, const char *name, const char *type) {
  char *have = knn_object_type(db, name);
  int same = have && strcmp(have, type) == 0;
  sqlite3_free(have);
  return same;
}

static int meta_table_exists(sqlite3 *db) {
  char *type = knn_object_type(db, KNN_INDEX_TABLE);
  int found = type && strcmp(type, "table") == 0;
  sqlite3_free(type);
  return found;
}

/* Copy a TEXT column into *out; 0 if it is not TEXT or holds a NUL. */
static int text_column(sqlite3_stmt *st, int i, char **out) {
  const char *text = (const char *)sqlite3_column_text(st, i);
  *out = NULL;
  if (sqlite3_column_type(st, i) != SQLITE_TEXT || !text) return 0;
  if ((size_t)sqlite3_column_bytes(st, i) != strlen(text)) return 0;
  *out = sqlite3_mprintf("%s", text);
  return *out != NULL;
}

/* The description's numbers, each against the others: a forged value must
** not size a buffer, bound a loop or steer a write. */
static int check_description(const char *fn, const knn_index *ix, char **pzErr) {
  const i64 cs = ix->chunk_size;
  if (ix->dim < 0 || ix->dim > KNN_MAX_CHUNK_BYTES / (64 * 4))
    return knn_corrupt(pzErr, fn, ix, "dimension %lld", ix->dim);
  if (ix->dim == 0 ? cs != 0 && (cs < 64 || cs > KNN_MAX_CHUNK || cs % 64)
                   : cs < 64 || cs > KNN_MAX_CHUNK || cs % 64 ||
                         cs * ix->dim * 4 > KNN_MAX_CHUNK_BYTES)
    return knn_corrupt(pzErr, fn, ix, "chunk size %lld for dimension %lld", cs, ix->dim);
  if (ix->dim == 0 && (ix->tail_chunk || ix->tail_used || ix->n_vectors))
    return knn_corrupt(pzErr, fn, ix, "no dimension, yet %lld chunks", ix->tail_chunk);
  if (ix->tail_chunk < 0 || ix->tail_chunk >= KNN_MAX_CHUNKS)
    return knn_corrupt(pzErr, fn, ix, "tail chunk %lld", ix->tail_chunk);
  if (ix->tail_used < 0 || ix->tail_used > cs || (ix->tail_chunk == 0 && ix->tail_used))
    return knn_corrupt(pzErr, fn, ix, "%lld slots used in a tail chunk of %lld",
                       ix->tail_used, ix->tail_chunk ? cs : 0);
  if (ix->n_vectors < 0 || ix->n_vectors > ix->tail_chunk * cs)
    return knn_corrupt(pzErr, fn, ix, "%lld vectors in %lld chunks of %lld", ix->n_vectors,
                       ix->tail_chunk, cs);
  return SQLITE_OK;
}

/* The IVF description (T_fvknn_ivf), when the index has one: every number
** against the others and the centroids BLOB's real length. */
static int load_ivf(sqlite3 *db, const char *fn, knn_index *ix, char **pzErr) {
  char *name = sqlite3_mprintf("%s%s", ix->tbl, ivf_suffix[0]);
  char *type = name ? knn_object_type(db, name) : NULL;
  sqlite3_stmt *st = NULL;
  int rc, rows = 0;
  sqlite3_free(name);
  if (!name) return SQLITE_NOMEM;
  if (!type) return SQLITE_OK; /* the exact index */
  rc = strcmp(type, "table") == 0 ? SQLITE_OK
                                  : knn_corrupt(pzErr, fn, ix, "%s%s is a %s", ix->tbl,
                                                ivf_suffix[0], type);
  sqlite3_free(type);
  if (rc != SQLITE_OK) return rc;
  if (knn_prepare(db, &st, NULL,
                  "SELECT lists, nprobe, trained, typeof(centroids), length(centroids) "
                  "FROM \"main\".\"%w%s\"",
                  ix->tbl, ivf_suffix[0]) != SQLITE_OK) {
    sqlite3_finalize(st);
    return knn_corrupt(pzErr, fn, ix, "%s%s: %s", ix->tbl, ivf_suffix[0], sqlite3_errmsg(db));
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    rows++;
    for (int i = 0; i < 3; i++)
      if (sqlite3_column_type(st, i) != SQLITE_INTEGER) {
        rc = knn_corrupt(pzErr, fn, ix, "its IVF %s is %s", sqlite3_column_name(st, i),
                         fv_type_name(sqlite3_column_type(st, i)));
        goto finish;
      }
    const char *ctype = (const char *)sqlite3_column_text(st, 3);
    ix->lists = sqlite3_column_int64(st, 0);
    ix->nprobe = sqlite3_column_int64(st, 1);
    ix->trained = sqlite3_column_int64(st, 2);
    i64 bytes = sqlite3_column_int64(st, 4);
    if (ix->lists < 1 || ix->lists > KNN_MAX_LISTS || ix->dim < 1 ||
        ix->lists * ix->dim * 4 > KNN_MAX_CENTROID_BYTES) {
      rc = knn_corrupt(pzErr, fn, ix, "%lld IVF lists of dimension %lld", ix->lists, ix->dim);
      goto finish;
    }
    if (ix->nprobe < 1 || ix->nprobe > ix->lists || ix->trained < 0) {
      rc = knn_corrupt(pzErr, fn, ix, "nprobe %lld of %lld lists, trained on %lld",
                       ix->nprobe, ix->lists, ix->trained);
      goto finish;
    }
    if (!ctype || strcmp(ctype, "blob") != 0 || bytes != ix->lists * ix->dim * 4) {
      rc = knn_corrupt(pzErr, fn, ix, "its centroids hold %lld bytes, expected %lld", bytes,
                       ix->lists * ix->dim * 4);
      goto finish;
    }
  }
  if (rc != SQLITE_DONE) {
    knn_db_error(db, pzErr);
    goto finish;
  }
  rc = rows == 1 ? SQLITE_OK
                 : knn_corrupt(pzErr, fn, ix, "%s%s holds %d rows, expected 1", ix->tbl,
                               ivf_suffix[0], rows);
finish:
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) ix->lists = ix->nprobe = ix->trained = 0;
  return rc;
}

/* The compressed storage's description (T_fvknn_quant), when the index
** has one: its storage name, rerank and the int8 parameters' real length. */
static int load_quant(sqlite3 *db, const char *fn, knn_index *ix, char **pzErr) {
  char *name = sqlite3_mprintf("%s%s", ix->tbl, quant_suffix);
  char *type = name ? knn_object_type(db, name) : NULL;
  sqlite3_stmt *st = NULL;
  int rc, rows = 0;
  sqlite3_free(name);
  if (!name) return SQLITE_NOMEM;
  if (!type) return SQLITE_OK; /* float32 */
  rc = strcmp(type, "table") == 0 ? SQLITE_OK
                                  : knn_corrupt(pzErr, fn, ix, "%s%s is a %s", ix->tbl,
                                                quant_suffix, type);
  sqlite3_free(type);
  if (rc != SQLITE_OK) return rc;
  if (knn_prepare(db, &st, NULL,
                  "SELECT storage, typeof(rerank), rerank, typeof(params), length(params) "
                  "FROM \"main\".\"%w%s\"",
                  ix->tbl, quant_suffix) != SQLITE_OK) {
    sqlite3_finalize(st);
    return knn_corrupt(pzErr, fn, ix, "%s%s: %s", ix->tbl, quant_suffix, sqlite3_errmsg(db));
  }
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *storage = (const char *)sqlite3_column_text(st, 0);
    const char *rtype = (const char *)sqlite3_column_text(st, 1);
    const char *ptype = (const char *)sqlite3_column_text(st, 3);
    i64 bytes = sqlite3_column_int64(st, 4);
    rows++;
    ix->storage = !storage                          ? -1
                  : strcmp(storage, "float16") == 0 ? KNN_STORE_F16
                  : strcmp(storage, "int8") == 0    ? KNN_STORE_I8
                                                    : -1;
    ix->rerank = sqlite3_column_int64(st, 2);
    if (ix->storage < 0) {
      rc = knn_corrupt(pzErr, fn, ix, "its storage is %s, expected float16 or int8",
                       storage ? storage : "NULL");
      goto finish;
    }
    if (!rtype || strcmp(rtype, "integer") != 0 || ix->rerank < 0 ||
        ix->rerank > KNN_MAX_RERANK) {
      rc = knn_corrupt(pzErr, fn, ix, "its rerank is not an integer in 0..%d", KNN_MAX_RERANK);
      goto finish;
    }
    /* A build not yet started knows its dimension from the parameters only
    ** (the writer checks them against the first vector's). */
    if (ix->storage == KNN_STORE_I8
            ? !ptype || strcmp(ptype, "blob") != 0 ||
                  (ix->dim > 0 ? bytes != ix->dim * 8
                               : bytes < 8 || bytes % 8 || bytes / 8 > KNN_MAX_CHUNK_BYTES / 256)
            : !ptype || strcmp(ptype, "null") != 0) {
      rc = knn_corrupt(pzErr, fn, ix, "its quantisation parameters hold %lld bytes, expected "
                       "%lld", bytes, ix->storage == KNN_STORE_I8 ? ix->dim * 8 : 0);
      goto finish;
    }
  }
  if (rc != SQLITE_DONE) {
    knn_db_error(db, pzErr);
    goto finish;
  }
  rc = rows == 1 ? SQLITE_OK
                 : knn_corrupt(pzErr, fn, ix, "%s%s holds %d rows, expected 1", ix->tbl,
                               quant_suffix, rows);
finish:
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) ix->storage = 0, ix->rerank = 0;
  return rc;
}

int knn_index_load(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix,
                   char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc;
  memset(ix, 0, sizeof *ix);
  if (!meta_table_exists(db)) return SQLITE_NOTFOUND;
  rc = sqlite3_prepare_v2(db,
                          "SELECT tbl, col, pk, dim, chunk_size, tail_chunk, tail_used, "
                          "n_vectors, build_next, format FROM main." KNN_INDEX_TABLE
                          " WHERE tbl = ?1",
                          -1, &st, NULL);
  if (rc == SQLITE_ERROR) {
    /* A column of the description is missing. */
    char *what = sqlite3_mprintf("is corrupt (%s: %s)", KNN_INDEX_TABLE, sqlite3_errmsg(db));
    rc = what ? index_error(pzErr, fn, tbl, NULL, what) : SQLITE_NOMEM;
    sqlite3_free(what);
    return rc;
  }
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_DONE) {
    rc = SQLITE_NOTFOUND;
    goto finish;
  }
  if (rc != SQLITE_ROW) goto finish;
  rc = SQLITE_OK;
  if (!text_column(st, 0, &ix->tbl) || !text_column(st, 1, &ix->col) ||
      !text_column(st, 2, &ix->pk)) {
    if (!ix->tbl) ix->tbl = sqlite3_mprintf("%s", tbl);
    rc = ix->tbl ? knn_corrupt(pzErr, fn, ix, "its table, column or key is not a name")
                 : SQLITE_NOMEM;
    goto finish;
  }
  for (int i = 3; i <= 9; i++) {
    int type = sqlite3_column_type(st, i);
    if (type != SQLITE_INTEGER && !(i == 8 && type == SQLITE_NULL)) {
      rc = knn_corrupt(pzErr, fn, ix, "%s is %s", sqlite3_column_name(st, i),
                       fv_type_name(type));
      goto finish;
    }
  }
  ix->dim = sqlite3_column_int64(st, 3);
  ix->chunk_size = sqlite3_column_int64(st, 4);
  ix->tail_chunk = sqlite3_column_int64(st, 5);
  ix->tail_used = sqlite3_column_int64(st, 6);
  ix->n_vectors = sqlite3_column_int64(st, 7);
  ix->building = sqlite3_column_type(st, 8) != SQLITE_NULL;
  ix->build_next = sqlite3_column_int64(st, 8);
  ix->format = sqlite3_column_int64(st, 9);
  if (sqlite3_column_int64(st, 9) < KNN_FORMAT_MIN || sqlite3_column_int64(st, 9) > KNN_FORMAT)
    rc = knn_corrupt(pzErr, fn, ix, "format %lld, expected %d to %d",
                     sqlite3_column_int64(st, 9), KNN_FORMAT_MIN, KNN_FORMAT);
  else
    rc = check_description(fn, ix, pzErr);
  sqlite3_finalize(st);
  st = NULL;
  if (rc == SQLITE_OK) rc = load_ivf(db, fn, ix, pzErr);
  if (rc == SQLITE_OK) rc = load_quant(db, fn, ix, pzErr);
finish:
  if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) knn_db_error(db, pzErr);
  if (rc != SQLITE_OK) knn_index_clear(ix);
  sqlite3_finalize(st);
  return rc;
}

int knn_index_save(sqlite3 *db, const knn_index *ix, char **pzErr) {
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

int knn_generation_bump(sqlite3 *db, const char *tbl, char **pzErr) {
  sqlite3_stmt *st = NULL;
  i64 generation;
  int rc = knn_exec(db, pzErr,
                    "CREATE TABLE IF NOT EXISTS main." KNN_GENERATION_TABLE
                    "(tbl TEXT PRIMARY KEY COLLATE NOCASE, generation INTEGER NOT NULL)");
  if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "INSERT OR REPLACE INTO main." KNN_GENERATION_TABLE
                            "(tbl, generation) VALUES (?1, ?2)",
                            -1, &st, NULL);
  if (rc == SQLITE_OK) {
    /* Random, not counted: a number once seen never names other chunks,
    ** even after a rollback or a file put back from a copy. */
    sqlite3_randomness(sizeof generation, &generation);
    sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, generation);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (rc != SQLITE_OK) knn_db_error(db, pzErr);
  sqlite3_finalize(st);
  return rc;
}

int knn_generation_read(sqlite3 *db, const char *tbl, i64 *generation, int *found) {
  sqlite3_stmt *st = NULL;
  int rc;
  *found = 0;
  if (!knn_object_type_is(db, KNN_GENERATION_TABLE, "table")) return SQLITE_OK;
  rc = sqlite3_prepare_v2(db,
                          "SELECT generation FROM main." KNN_GENERATION_TABLE " WHERE tbl = ?1",
                          -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_INTEGER) {
      *generation = sqlite3_column_int64(st, 0);
      *found = 1;
    }
    rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
  }
  sqlite3_finalize(st);
  return rc;
}

/* Slots per chunk for dim when the caller chose none: about 2 MiB of vectors,
** between 64 and 8192 slots, a multiple of 64. */
i64 knn_auto_chunk_size(i64 dim) {
  i64 n = KNN_CHUNK_BYTES / (dim * 4);
  if (n > 8192) n = 8192;
  n -= n % 64;
  if (n < 64) n = 64;
  return n;
}

/* ------------------------------------------------------------------------ */
/* Checking an index against the schema and the chunks' real sizes           */

/* The INTEGER PRIMARY KEY column of main table tbl (the rowid alias), or
** NULL; *has_col: whether column col exists. */
static int source_columns(sqlite3 *db, const char *tbl, const char *col, int *has_col,
                          char **pk, char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc, n_pk = 0, pk_index = 0;
  *has_col = 0;
  *pk = NULL;
  rc = sqlite3_prepare_v2(db, "SELECT name, type, pk FROM pragma_table_info(?1, 'main')", -1,
                          &st, NULL);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    if (name && sqlite3_stricmp(name, col) == 0) *has_col = 1;
    if (sqlite3_column_int(st, 2) > 0) {
      n_pk++;
      if (name && type && sqlite3_stricmp(type, "INTEGER") == 0 && !*pk) {
        *pk = sqlite3_mprintf("%s", name);
        if (!*pk) rc = SQLITE_NOMEM;
      }
    }
  }
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_DONE) goto finish;
  /* An INTEGER PRIMARY KEY that aliases the rowid has no index of its own;
  ** WITHOUT ROWID tables and "INTEGER PRIMARY KEY DESC" have one. */
  rc = sqlite3_prepare_v2(db,
                          "SELECT count(*) FROM pragma_index_list(?1, 'main') "
                          "WHERE origin = 'pk'",
                          -1, &st, NULL);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
  rc = sqlite3_step(st);
  if (rc == SQLITE_ROW) {
    pk_index = sqlite3_column_int(st, 0);
    rc = SQLITE_OK;
  }
  if (n_pk != 1 || pk_index) {
    sqlite3_free(*pk);
    *pk = NULL;
  }
finish:
  if (rc != SQLITE_OK) {
    knn_db_error(db, pzErr);
    sqlite3_free(*pk);
    *pk = NULL;
  }
  sqlite3_finalize(st);
  return rc;
}

/* The source table still has the index's column and rowid key. */
static int check_source(sqlite3 *db, const char *fn, const knn_index *ix, char **pzErr) {
  char *pk = NULL, *type = knn_object_type(db, ix->tbl);
  int has_col = 0, rc;
  if (!type || strcmp(type, "table") != 0) {
    sqlite3_free(type);
    *pzErr = sqlite3_mprintf("%s: no such table: %s", fn, ix->tbl);
    return SQLITE_ERROR;
  }
  sqlite3_free(type);
  rc = source_columns(db, ix->tbl, ix->col, &has_col, &pk, pzErr);
  if (rc == SQLITE_OK && !has_col)
    rc = knn_corrupt(pzErr, fn, ix, "%s has no column %s", ix->tbl, ix->col);
  else if (rc == SQLITE_OK && (!pk || sqlite3_stricmp(pk, ix->pk) != 0))
    rc = knn_corrupt(pzErr, fn, ix, "%s is not the INTEGER PRIMARY KEY of %s", ix->pk,
                     ix->tbl);
  sqlite3_free(pk);
  return rc;
}

/* The index's three tables are tables with their columns, and its three
** triggers exist (*triggers_ok) with exactly the SQL the build wrote. */
static int check_schema(sqlite3 *db, const char *fn, const knn_index *ix, int *triggers_ok,
                        char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc, n_triggers = 0, seen[3] = {0, 0, 0};
  *triggers_ok = 0;
  rc = knn_prepare(
      db, &st, pzErr,
      "SELECT name, type, tbl_name, sql, (SELECT group_concat(name, ',') FROM "
      "(SELECT name FROM pragma_table_info(s.name, 'main') ORDER BY cid)) "
      "FROM main.sqlite_schema AS s WHERE name COLLATE NOCASE IN ('%q%s', '%q%s', '%q%s', "
      "'%q%s', '%q%s', '%q%s')",
      ix->tbl, table_suffix[0], ix->tbl, table_suffix[1], ix->tbl, table_suffix[2], ix->tbl,
      trigger_suffix[0], ix->tbl, trigger_suffix[1], ix->tbl, trigger_suffix[2]);
  if (rc != SQLITE_OK) return rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    const char *name = (const char *)sqlite3_column_text(st, 0);
    const char *type = (const char *)sqlite3_column_text(st, 1);
    const char *on = (const char *)sqlite3_column_text(st, 2);
    const char *sql = (const char *)sqlite3_column_text(st, 3);
    const char *columns = (const char *)sqlite3_column_text(st, 4);
    size_t n = strlen(ix->tbl);
    const char *suffix = name && strlen(name) > n ? name + n : "";
    if (!type) type = "";
    for (int i = 0; i < 3; i++) {
      if (sqlite3_stricmp(suffix, table_suffix[i]) == 0) {
        seen[i] = 1;
        if (strcmp(type, "table") != 0 || !columns || strcmp(columns, table_columns[i]) != 0)
          rc = knn_corrupt(pzErr, fn, ix, "%s is a %s of columns (%s), expected a table of (%s)",
                           name, type, columns ? columns : "", table_columns[i]);
      } else if (sqlite3_stricmp(suffix, trigger_suffix[i]) == 0 &&
                 strcmp(type, "trigger") == 0) {
        char *want = trigger_sql(i, ix->tbl, ix->pk, ix->col);
        if (!want) {
          rc = SQLITE_NOMEM;
        } else if (!on || sqlite3_stricmp(on, ix->tbl) != 0 || !sql ||
                   strncmp(sql, "CREATE TRIGGER ", 15) != 0 || strcmp(sql + 15, want) != 0) {
          rc = knn_corrupt(pzErr, fn, ix, "trigger %s was changed", name);
        }
        sqlite3_free(want);
        n_triggers++;
      }
    }
    if (rc != SQLITE_ROW) break;
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_DONE) {
    if (rc != SQLITE_NOMEM) knn_db_error(db, pzErr);
    return rc;
  }
  for (int i = 0; i < 3; i++)
    if (!seen[i]) return knn_corrupt(pzErr, fn, ix, "table %s%s is missing", ix->tbl,
                                     table_suffix[i]);
  *triggers_ok = n_triggers == 3;
  return SQLITE_OK;
}

static i64 count_bits(const unsigned char *bits, size_t nbytes) {
  i64 n = 0;
  for (size_t i = 0; i < nbytes; i++) {
    unsigned b = bits[i];
    b = b - ((b >> 1) & 0x55u);
    b = (b & 0x33u) + ((b >> 2) & 0x33u);
    n += (b + (b >> 4)) & 0x0Fu;
  }
  return n;
}

/* First slot >= used whose valid bit is set (of n_slots), or -1. */
static i64 valid_bits_past(const unsigned char *bits, i64 n_slots, i64 used) {
  for (i64 s = used; s < n_slots; s++) {
    if (s % 8 == 0 && bits[s / 8] == 0) {
      s += 7;
      continue;
    }
    if (bits[s / 8] >> (s % 8) & 1) return s;
  }
  return -1;
}

/* Every chunk against the description: ids in 1..tail_chunk with the tail
** last, three BLOBs of exactly the sizes chunk_size and dim give, no valid
** bit past the slots in use, and as many valid bits as n_vectors. */
static int check_chunks(sqlite3 *db, const char *fn, knn_index *ix, char **pzErr) {
  static const char *const column[3] = {"valid", "rowids", "vectors"};
  sqlite3_stmt *st = NULL;
  sqlite3_blob *blob[3] = {NULL, NULL, NULL};
  unsigned char *bits = NULL;
  char *chunks_tbl = sqlite3_mprintf("%s_fvknn_chunks", ix->tbl);
  const i64 cs = ix->chunk_size;
  i64 last = 0, n_valid = 0, n_chunks = 0, n_slots = 0;
  int rc;
  if (!chunks_tbl) return SQLITE_NOMEM;
  if (cs) bits = sqlite3_malloc64((sqlite3_uint64)cs / 8);
  rc = knn_prepare(db, &st, pzErr, "SELECT id FROM \"main\".\"%w\" ORDER BY id", chunks_tbl);
  if (rc != SQLITE_OK) goto finish;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 id = sqlite3_column_int64(st, 0);
    if (id < 1 || id > ix->tail_chunk) {
      rc = knn_corrupt(pzErr, fn, ix, "chunk %lld is outside 1..%lld", id, ix->tail_chunk);
      goto finish;
    }
    if (!bits) {
      rc = SQLITE_NOMEM;
      goto finish;
    }
    i64 cap = 0, used = 0;
    for (int c = 0; c < 3; c++) {
      rc = blob[c] ? sqlite3_blob_reopen(blob[c], id)
                   : sqlite3_blob_open(db, "main", chunks_tbl, column[c], id, 0, &blob[c]);
      if (rc == SQLITE_ERROR) {
        rc = knn_corrupt(pzErr, fn, ix, "chunk %lld: %s", id, sqlite3_errmsg(db));
        goto finish;
      }
      if (rc != SQLITE_OK) goto db_error;
      if (c == 0) { /* its capacity, from the bitmap's size */
        cap = (i64)sqlite3_blob_bytes(blob[0]) * 8;
        used = knn_chunk_slots(ix, id, cap / 8);
        if (used < 0) {
          rc = knn_corrupt(pzErr, fn, ix, "chunk %lld holds %d bytes of valid, expected %lld",
                           id, sqlite3_blob_bytes(blob[0]), cs / 8);
          goto finish;
        }
      }
      const i64 want = c == 0 ? cap / 8 : c == 1 ? cap * 8 : cap * ix->dim * knn_elem_bytes(ix->storage);
      if (sqlite3_blob_bytes(blob[c]) != want) {
        rc = knn_corrupt(pzErr, fn, ix, "chunk %lld holds %d bytes of %s, expected %lld", id,
                         sqlite3_blob_bytes(blob[c]), column[c], want);
        goto finish;
      }
    }
    rc = sqlite3_blob_read(blob[0], bits, (int)(cap / 8), 0);
    if (rc != SQLITE_OK) goto db_error;
    i64 past = valid_bits_past(bits, cap, used);
    if (past >= 0) {
      rc = knn_corrupt(pzErr, fn, ix, "chunk %lld marks slot %lld valid, past the %lld in use",
                       id, past, used);
      goto finish;
    }
    n_valid += count_bits(bits, (size_t)cap / 8);
    n_slots += used;
    last = id;
    n_chunks++;
  }
  if (rc != SQLITE_DONE) goto db_error;
  rc = SQLITE_OK;
  if (last != ix->tail_chunk)
    rc = knn_corrupt(pzErr, fn, ix, "the last chunk is %lld, the index names %lld", last,
                     ix->tail_chunk);
  else if (n_valid != ix->n_vectors)
    rc = knn_corrupt(pzErr, fn, ix, "its chunks hold %lld vectors, it counts %lld", n_valid,
                     ix->n_vectors);
  ix->n_chunks = n_chunks;
  ix->n_slots = n_slots;
  goto finish;
db_error:
  knn_db_error(db, pzErr);
finish:
  for (int c = 0; c < 3; c++) sqlite3_blob_close(blob[c]);
  sqlite3_finalize(st);
  sqlite3_free(bits);
  sqlite3_free(chunks_tbl);
  return rc;
}

/* The IVF chunk lists: a table of their columns, one row per chunk and no
** other, each naming a list in range, a mixed chunk's slots BLOB of exactly
** chunk_size int32 (the slots' values are checked where they are read). */
static int check_ivf(sqlite3 *db, const char *fn, knn_index *ix, char **pzErr) {
  sqlite3_stmt *st = NULL;
  i64 bad = -1;
  char *have = NULL;
  int rc = knn_prepare(db, &st, pzErr,
                       "SELECT group_concat(name, ',') FROM (SELECT name FROM "
                       "pragma_table_info('%q%s', 'main') ORDER BY cid)",
                       ix->tbl, ivf_suffix[1]);
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
    have = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
  sqlite3_finalize(st);
  st = NULL;
  if (rc != SQLITE_OK) return rc;
  if (!have || strcmp(have, "id,list,slots") != 0) {
    rc = knn_corrupt(pzErr, fn, ix, "%s%s has columns (%s), expected (id,list,slots)",
                     ix->tbl, ivf_suffix[1], have ? have : "");
    sqlite3_free(have);
    return rc;
  }
  sqlite3_free(have);
  rc = knn_prepare(
      db, &st, pzErr,
      "SELECT coalesce((SELECT c.id FROM \"main\".\"%w_fvknn_chunks\" AS c WHERE NOT EXISTS "
      "(SELECT 1 FROM \"main\".\"%w%s\" AS l WHERE l.id = c.id) LIMIT 1), "
      "(SELECT l.id FROM \"main\".\"%w%s\" AS l WHERE typeof(l.list) != 'integer' OR "
      "l.list < -1 OR l.list >= %lld OR (l.list = -1 AND (typeof(l.slots) != 'blob' OR "
      "length(l.slots) != %lld)) OR (l.list >= 0 AND l.slots IS NOT NULL) OR NOT EXISTS "
      "(SELECT 1 FROM \"main\".\"%w_fvknn_chunks\" AS c WHERE c.id = l.id) LIMIT 1), -1)",
      ix->tbl, ix->tbl, ivf_suffix[1], ix->tbl, ivf_suffix[1], ix->lists, ix->chunk_size * 4,
      ix->tbl);
  if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW) bad = sqlite3_column_int64(st, 0);
  else if (rc == SQLITE_OK) knn_db_error(db, pzErr), rc = SQLITE_ERROR;
  sqlite3_finalize(st);
  if (rc == SQLITE_OK && bad != -1)
    rc = knn_corrupt(pzErr, fn, ix, "the IVF list of chunk %lld is missing or malformed", bad);
  return rc;
}

int knn_index_check(sqlite3 *db, const char *fn, knn_index *ix, int *triggers_ok,
                    char **pzErr) {
  int rc = check_source(db, fn, ix, pzErr);
  if (rc == SQLITE_OK) rc = check_schema(db, fn, ix, triggers_ok, pzErr);
  if (rc == SQLITE_OK) rc = check_chunks(db, fn, ix, pzErr);
  if (rc == SQLITE_OK && ix->lists > 0) rc = check_ivf(db, fn, ix, pzErr);
  return rc;
}

int knn_ivf_centroids(sqlite3 *db, const char *fn, const knn_index *ix, float **out,
                      char **pzErr) {
  sqlite3_stmt *st = NULL;
  const i64 bytes = ix->lists * ix->dim * 4;
  int rc;
  *out = NULL;
  if (ix->lists < 1 || ix->dim < 1 || bytes > KNN_MAX_CENTROID_BYTES)
    return knn_corrupt(pzErr, fn, ix, "%lld IVF lists of dimension %lld", ix->lists, ix->dim);
  rc = knn_prepare(db, &st, pzErr, "SELECT centroids FROM \"main\".\"%w%s\"", ix->tbl,
                   ivf_suffix[0]);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB &&
        sqlite3_column_bytes(st, 0) == bytes) {
      *out = sqlite3_malloc64((sqlite3_uint64)bytes);
      if (*out) memcpy(*out, sqlite3_column_blob(st, 0), (size_t)bytes);
      rc = *out ? SQLITE_OK : SQLITE_NOMEM;
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
      rc = knn_corrupt(pzErr, fn, ix, "its centroids are not %lld bytes", bytes);
    } else {
      knn_db_error(db, pzErr);
    }
  }
  sqlite3_finalize(st);
  return rc;
}

int knn_ivf_sizes(sqlite3 *db, const char *fn, const knn_index *ix, i64 *sizes,
                  i64 *unlisted, char **pzErr) {
  sqlite3_stmt *st = NULL;
  sqlite3_blob *bv = NULL, *bs = NULL;
  const i64 cs = ix->chunk_size;
  unsigned char *bits = sqlite3_malloc64((sqlite3_uint64)cs / 8 + 1);
  int32_t *slots = sqlite3_malloc64((sqlite3_uint64)cs * 4 + 4);
  char *chunks_tbl = sqlite3_mprintf("%s_fvknn_chunks", ix->tbl);
  char *lists_tbl = sqlite3_mprintf("%s%s", ix->tbl, ivf_suffix[1]);
  int rc = bits && slots && chunks_tbl && lists_tbl ? SQLITE_OK : SQLITE_NOMEM;
  memset(sizes, 0, (size_t)ix->lists * sizeof(i64));
  *unlisted = 0;
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &st, pzErr, "SELECT id, list FROM \"main\".\"%w\" ORDER BY id",
                     lists_tbl);
  while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
    i64 id = sqlite3_column_int64(st, 0), list = sqlite3_column_int64(st, 1);
    rc = bv ? sqlite3_blob_reopen(bv, id) : sqlite3_blob_open(db, "main", chunks_tbl, "valid",
                                                              id, 0, &bv);
    i64 used = rc == SQLITE_OK ? knn_chunk_slots(ix, id, sqlite3_blob_bytes(bv)) : -1;
    if (rc != SQLITE_OK || list < -1 || list >= ix->lists || used < 0) {
      rc = knn_corrupt(pzErr, fn, ix, "the IVF list of chunk %lld is malformed", id);
      break;
    }
    rc = sqlite3_blob_read(bv, bits, sqlite3_blob_bytes(bv), 0);
    if (rc != SQLITE_OK) break;
    if (list >= 0) {
      sizes[list] += count_bits(bits, (size_t)sqlite3_blob_bytes(bv));
    } else {
      rc = bs ? sqlite3_blob_reopen(bs, id)
              : sqlite3_blob_open(db, "main", lists_tbl, "slots", id, 0, &bs);
      if (rc != SQLITE_OK || sqlite3_blob_bytes(bs) != cs * 4) {
        rc = knn_corrupt(pzErr, fn, ix, "the slots of chunk %lld are malformed", id);
        break;
      }
      rc = sqlite3_blob_read(bs, slots, (int)(cs * 4), 0);
      for (i64 i = 0; rc == SQLITE_OK && i < used; i++) {
        if (!(bits[i / 8] >> (i % 8) & 1)) continue;
        if (slots[i] < 0 || slots[i] >= ix->lists) {
          rc = knn_corrupt(pzErr, fn, ix, "slot %lld of chunk %lld names list %d", i, id,
                           (int)slots[i]);
          break;
        }
        sizes[slots[i]]++;
        (*unlisted)++;
      }
    }
  }
  if (rc == SQLITE_DONE) rc = SQLITE_OK;
  else if (rc != SQLITE_OK && rc != SQLITE_NOMEM) knn_db_error(db, pzErr);
  sqlite3_blob_close(bv);
  sqlite3_blob_close(bs);
  sqlite3_finalize(st);
  sqlite3_free(bits);
  sqlite3_free(slots);
  sqlite3_free(chunks_tbl);
  sqlite3_free(lists_tbl);
  return rc;
}

/* ------------------------------------------------------------------------ */
/* Reading a source row's vector                                             */

int knn_row_vector(const char *fn, const knn_index *ix, i64 rid, int type, const void *data,
                   int nbytes, i64 want_dim, fv_vector *out, char **pzErr) {
  char err[FV_ERR_MAX], *subject;
  fv_arg arg;
  int rc;
  memset(out, 0, sizeof *out);
  if (type == SQLITE_NULL) return SQLITE_OK;
  arg.type = type; /* FV_TYPE_* are SQLite's numbers */
  arg.data = data;
  arg.nbytes = nbytes > 0 ? (size_t)nbytes : 0;
  /* The row is named only when it is wrong: a build reads every row. */
  rc = fv_vector_parse(fn, "", &arg, out, err);
  if (rc == FV_ARG_ERROR) {
    subject = sqlite3_mprintf("%s row %lld: %s", ix->tbl, rid, ix->col);
    if (!subject) return SQLITE_NOMEM;
    rc = fv_vector_parse(fn, subject, &arg, out, err);
    sqlite3_free(subject);
  }
  if (rc == FV_ARG_NOMEM) return SQLITE_NOMEM;
  if (rc != FV_ARG_OK) {
    *pzErr = sqlite3_mprintf("%s", err);
    return SQLITE_ERROR;
  }
  if (want_dim > 0 && (i64)out->n != want_dim) {
    *pzErr = sqlite3_mprintf("%s: %s row %lld: %s has %lld dimensions, the index has %lld", fn,
                             ix->tbl, rid, ix->col, (i64)out->n, want_dim);
    fv_vector_free(out);
    return SQLITE_ERROR;
  }
  return SQLITE_OK;
}

/* ------------------------------------------------------------------------ */
/* The rowid map                                                             */

int knn_map_prepare(sqlite3 *db, const knn_index *ix, sqlite3_stmt **map_get, char **pzErr) {
  return knn_prepare(db, map_get, pzErr,
                     "SELECT chunk, slot FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1",
                     ix->tbl);
}

int knn_map_find(sqlite3 *db, const char *fn, const knn_index *ix, sqlite3_stmt *map_get,
                 i64 rid, i64 *chunk, i64 *slot, char **pzErr) {
  int rc, found = 0, typed = 0;
  *chunk = *slot = 0;
  sqlite3_bind_int64(map_get, 1, rid);
  rc = sqlite3_step(map_get);
  if (rc == SQLITE_ROW) {
    found = 1;
    typed = sqlite3_column_type(map_get, 0) == SQLITE_INTEGER &&
            sqlite3_column_type(map_get, 1) == SQLITE_INTEGER;
    *chunk = sqlite3_column_int64(map_get, 0);
    *slot = sqlite3_column_int64(map_get, 1);
    rc = SQLITE_OK;
  } else if (rc == SQLITE_DONE) {
    rc = SQLITE_OK;
  } else {
    knn_db_error(db, pzErr);
  }
  sqlite3_reset(map_get);
  if (rc == SQLITE_OK && found &&
      (!typed || *chunk < 1 || *chunk > ix->tail_chunk || *slot < 0 ||
       *slot >= (*chunk == ix->tail_chunk ? ix->tail_used : ix->chunk_size)))
    rc = knn_corrupt(pzErr, fn, ix, "row %lld is mapped to slot %lld of chunk %lld", rid, *slot,
                     *chunk);
  if (rc != SQLITE_OK) *chunk = *slot = 0;
  return rc;
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
  i64 app_start, app_n, app_cap;
  unsigned char *bitmap; /* chunk_size / 8 bytes of scratch */
  /* IVF: the centroids, the list new chunks belong to (-1: mixed, each
  ** appended row tagged with its nearest list in app_list). */
  float *centroids;
  i64 cur_list;
  /* An IVF build: rows of the current list still to come (-1: not known),
  ** so that its last chunk is made no larger than they need (format 2);
  ** tail_cap: the slots of the tail chunk the writer made. */
  i64 list_left, tail_cap;
  int32_t *app_list;
  sqlite3_stmt *cl_new, *cl_del;
  char *lists_tbl;
  /* An index that leaves bad stored rows out (T_fvknn_skipped exists):
  ** such a row is recorded there, not an error. */
  sqlite3_stmt *skip_ins, *skip_del;
  /* Compressed storage: the int8 parameters, and codes being written. */
  float *qparams;
  unsigned char *codes;
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
  sqlite3_finalize(w->cl_new);
  sqlite3_finalize(w->cl_del);
  sqlite3_finalize(w->skip_ins);
  sqlite3_finalize(w->skip_del);
  sqlite3_free(w->centroids);
  sqlite3_free(w->qparams);
  sqlite3_free(w->codes);
  sqlite3_free(w->app_list);
  sqlite3_free(w->lists_tbl);
  sqlite3_free(w->chunks_tbl);
  sqlite3_free(w->app_vec);
  sqlite3_free(w->app_rid);
  sqlite3_free(w->app_valid);
  sqlite3_free(w->bitmap);
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
  if (rc == SQLITE_OK) rc = knn_map_prepare(db, ix, &w->map_get, &w->zErr);
  const struct {
    sqlite3_stmt **st;
    const char *sql; /* %w: the table */
  } statements[] = {
      {&w->map_ins,
       "INSERT INTO \"main\".\"%w_fvknn_rowids\"(rid, chunk, slot) VALUES (?1, ?2, ?3)"},
      {&w->map_del, "DELETE FROM \"main\".\"%w_fvknn_rowids\" WHERE rid = ?1"},
      {&w->chunk_new, "INSERT INTO \"main\".\"%w_fvknn_chunks\"(id, valid, rowids, vectors) "
                      "VALUES (?1, zeroblob(?2), zeroblob(?3), zeroblob(?4))"},
      {&w->chunk_del, "DELETE FROM \"main\".\"%w_fvknn_chunks\" WHERE id = ?1"},
  };
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof statements / sizeof statements[0]; i++)
    rc = knn_prepare(db, statements[i].st, &w->zErr, statements[i].sql, ix->tbl);
  w->cur_list = -1;
  w->list_left = -1;
  w->tail_cap = ix->chunk_size;
  if (rc == SQLITE_OK) {
    char *name = sqlite3_mprintf("%s%s", ix->tbl, knn_build_suffix[2]);
    char *type = name ? knn_object_type(db, name) : NULL;
    if (!name) rc = SQLITE_NOMEM;
    if (type)
      rc = knn_prepare(db, &w->skip_ins, &w->zErr,
                       "INSERT OR REPLACE INTO \"main\".\"%w\"(rid, reason) VALUES (?1, ?2)",
                       name);
    if (type && rc == SQLITE_OK)
      rc = knn_prepare(db, &w->skip_del, &w->zErr,
                       "DELETE FROM \"main\".\"%w\" WHERE rid = ?1", name);
    sqlite3_free(name);
    sqlite3_free(type);
  }
  if (rc == SQLITE_OK && ix->lists > 0) {
    w->lists_tbl = sqlite3_mprintf("%s%s", ix->tbl, ivf_suffix[1]);
    if (!w->lists_tbl) return SQLITE_NOMEM;
    rc = knn_ivf_centroids(db, fn, ix, &w->centroids, &w->zErr);
    if (rc == SQLITE_OK)
      rc = knn_prepare(db, &w->cl_new, &w->zErr,
                       "INSERT INTO \"main\".\"%w\"(id, list, slots) VALUES "
                       "(?1, ?2, CASE WHEN ?2 < 0 THEN zeroblob(?3) END)",
                       w->lists_tbl);
    if (rc == SQLITE_OK)
      rc = knn_prepare(db, &w->cl_del, &w->zErr, "DELETE FROM \"main\".\"%w\" WHERE id = ?1",
                       w->lists_tbl);
  }
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
  /* Appends are buffered up to about KNN_APPEND_BYTES, not a whole chunk:
  ** memory stays small whatever chunk size the index names. */
  w->app_cap = KNN_APPEND_BYTES / (ix->dim * 4);
  if (w->app_cap < 64) w->app_cap = 64;
  if (w->app_cap > ix->chunk_size) w->app_cap = ix->chunk_size;
  w->app_vec = sqlite3_malloc64((sqlite3_uint64)w->app_cap * (sqlite3_uint64)ix->dim *
                                sizeof(float));
  w->app_rid = sqlite3_malloc64((sqlite3_uint64)w->app_cap * sizeof(i64));
  w->app_valid = sqlite3_malloc64((sqlite3_uint64)w->app_cap);
  w->bitmap = sqlite3_malloc64((sqlite3_uint64)ix->chunk_size / 8);
  w->app_list = sqlite3_malloc64((sqlite3_uint64)w->app_cap * sizeof(int32_t));
  if (!w->app_vec || !w->app_rid || !w->app_valid || !w->bitmap || !w->app_list)
    return SQLITE_NOMEM;
  if (ix->storage != KNN_STORE_F32) {
    int rc = SQLITE_OK;
    w->codes = sqlite3_malloc64((sqlite3_uint64)w->app_cap * (sqlite3_uint64)ix->dim * 4);
    if (!w->codes) return SQLITE_NOMEM;
    if (ix->storage == KNN_STORE_I8)
      rc = knn_quant_params(w->db, w->fn, ix, &w->qparams, &w->zErr);
    if (rc != SQLITE_OK) return rc;
  }
  w->app_start = ix->tail_used;
  w->app_n = 0;
  return SQLITE_OK;
}

static int in_append_buffer(const knn_writer *w, i64 chunk, i64 slot) {
  return chunk == w->ix->tail_chunk && w->app_n > 0 && slot >= w->app_start &&
         slot < w->app_start + w->app_n;
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
  if (rc == SQLITE_ERROR) {
    /* knn_index_check saw every chunk that exists: this one does not. */
    rc = knn_corrupt(&w->zErr, w->fn, w->ix, "chunk %lld: %s", chunk, sqlite3_errmsg(w->db));
  } else if (rc != SQLITE_OK) {
    knn_db_error(w->db, &w->zErr);
  }
  if (rc != SQLITE_OK) {
    writer_close_blobs(w);
    return rc;
  }
  w->blob_chunk = chunk;
  return SQLITE_OK;
}

/* The map says row rid sits in (chunk, slot): the slot must be valid and
** hold rid, or the writer would overwrite or drop another row. */
static int writer_check_slot(knn_writer *w, i64 rid, i64 chunk, i64 slot) {
  knn_index *ix = w->ix;
  unsigned char bits = 0;
  i64 stored = 0;
  int rc, valid;
  if (in_append_buffer(w, chunk, slot)) {
    valid = w->app_valid[slot - w->app_start];
    stored = w->app_rid[slot - w->app_start];
  } else {
    rc = writer_blobs_at(w, chunk);
    if (rc == SQLITE_OK && slot / 8 >= sqlite3_blob_bytes(w->b_valid)) /* a short chunk */
      return knn_corrupt(&w->zErr, w->fn, ix, "row %lld is mapped to slot %lld of chunk %lld, "
                         "past its end", rid, slot, chunk);
    if (rc == SQLITE_OK) rc = sqlite3_blob_read(w->b_valid, &bits, 1, (int)(slot / 8));
    if (rc == SQLITE_OK) rc = sqlite3_blob_read(w->b_rowids, &stored, 8, (int)(slot * 8));
    if (rc != SQLITE_OK) {
      knn_db_error(w->db, &w->zErr);
      return rc;
    }
    valid = bits >> (slot % 8) & 1;
  }
  if (!valid || stored != rid)
    return knn_corrupt(&w->zErr, w->fn, ix, "row %lld is mapped to slot %lld of chunk %lld, "
                       "which %s",
                       rid, slot, chunk, valid ? "holds another row" : "is empty");
  return SQLITE_OK;
}

/* Write the buffered appends into the tail chunk. */
static int writer_flush(knn_writer *w) {
  knn_index *ix = w->ix;
  int rc;
  if (w->app_n == 0) return SQLITE_OK;
  rc = writer_blobs_at(w, ix->tail_chunk);
  if (rc != SQLITE_OK) return rc;
  const size_t vbytes = (size_t)(ix->dim * knn_elem_bytes(ix->storage));
  const void *out = w->app_vec;
  if (ix->storage != KNN_STORE_F32) {
    knn_encode(ix->storage, w->qparams, w->app_vec, (size_t)w->app_n, (size_t)ix->dim,
               w->codes);
    out = w->codes;
  }
  rc = sqlite3_blob_write(w->b_vectors, out, (int)(w->app_n * (i64)vbytes),
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
  if (rc == SQLITE_OK && w->centroids && w->cur_list < 0) {
    /* A mixed chunk: each slot's list, into its slots BLOB (of the size
    ** check_ivf saw; sqlite3_blob_write refuses to write past its end). */
    sqlite3_blob *bs = NULL;
    rc = sqlite3_blob_open(w->db, "main", w->lists_tbl, "slots", ix->tail_chunk, 1, &bs);
    if (rc == SQLITE_OK && sqlite3_blob_bytes(bs) != ix->chunk_size * 4)
      rc = SQLITE_CORRUPT;
    if (rc == SQLITE_OK)
      rc = sqlite3_blob_write(bs, w->app_list, (int)(w->app_n * 4), (int)(w->app_start * 4));
    sqlite3_blob_close(bs);
    if (rc != SQLITE_OK)
      return knn_corrupt(&w->zErr, w->fn, ix, "the slots of chunk %lld: %s", ix->tail_chunk,
                         sqlite3_errmsg(w->db));
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
  if (ix->tail_chunk == 0 || ix->tail_used == ix->chunk_size || ix->tail_used == w->tail_cap) {
    rc = writer_flush(w);
    if (rc != SQLITE_OK) return rc;
    if (ix->tail_chunk && ix->tail_used == w->tail_cap) ix->tail_used = ix->chunk_size;
    i64 id = ix->tail_chunk + 1, cap = ix->chunk_size;
    /* A list's last chunk: room for its remaining rows only. */
    if (w->list_left > 0 && w->list_left < cap) cap = (w->list_left + 63) / 64 * 64;
    sqlite3_bind_int64(w->chunk_new, 1, id);
    sqlite3_bind_int64(w->chunk_new, 2, cap / 8);
    sqlite3_bind_int64(w->chunk_new, 3, cap * 8);
    sqlite3_bind_int64(w->chunk_new, 4, cap * ix->dim * knn_elem_bytes(ix->storage));
    rc = step_done(w, w->chunk_new);
    if (rc == SQLITE_OK && w->centroids) {
      sqlite3_bind_int64(w->cl_new, 1, id);
      sqlite3_bind_int64(w->cl_new, 2, w->cur_list);
      sqlite3_bind_int64(w->cl_new, 3, ix->chunk_size * 4);
      rc = step_done(w, w->cl_new);
    }
    if (rc != SQLITE_OK) return rc;
    ix->tail_chunk = id;
    ix->tail_used = 0;
    w->tail_cap = cap;
    w->app_start = 0;
    w->app_n = 0;
  }
  if (w->app_n == w->app_cap) {
    rc = writer_flush(w);
    if (rc != SQLITE_OK) return rc;
  }
  i64 slot = ix->tail_used;
  memcpy(w->app_vec + w->app_n * ix->dim, vec, (size_t)ix->dim * sizeof(float));
  w->app_rid[w->app_n] = rid;
  w->app_valid[w->app_n] = 1;
  w->app_list[w->app_n] = 0;
  if (w->centroids && w->cur_list < 0) {
    /* Its nearest list, as a query ranks the centroids (a row the metric
    ** cannot place, NaN, goes to list 0: queries find it there at nprobe =
    ** lists, and rank it an error like the exact index). */
    int64_t best = 0, bad = -1;
    float d = 0;
    size_t found = 0;
    int frc = fv_top_k(FV_EUCLIDEAN, vec, w->centroids, (size_t)ix->lists, (size_t)ix->dim, 1,
                       &best, &d, &found, &bad);
    if (frc == FV_NOMEM) return SQLITE_NOMEM;
    w->app_list[w->app_n] = frc == FV_OK && found == 1 ? (int32_t)best : 0;
  }
  w->app_n++;
  ix->tail_used++;
  ix->n_vectors++;
  sqlite3_bind_int64(w->map_ins, 1, rid);
  sqlite3_bind_int64(w->map_ins, 2, ix->tail_chunk);
  sqlite3_bind_int64(w->map_ins, 3, slot);
  rc = step_done(w, w->map_ins);
  if (w->list_left > 0) w->list_left--;
  if (rc == SQLITE_OK && (ix->tail_used == ix->chunk_size || ix->tail_used == w->tail_cap))
    rc = writer_flush(w);
  return rc;
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
  const i64 vbytes = ix->dim * knn_elem_bytes(ix->storage);
  const void *out = vec;
  if (ix->storage != KNN_STORE_F32) {
    knn_encode(ix->storage, w->qparams, vec, 1, (size_t)ix->dim, w->codes);
    out = w->codes;
  }
  rc = sqlite3_blob_write(w->b_vectors, out, (int)vbytes, (int)(slot * vbytes));
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
    int nb, empty = 1;
    rc = writer_blobs_at(w, chunk);
    if (rc != SQLITE_OK) return rc;
    nb = sqlite3_blob_bytes(w->b_valid); /* a sealed chunk may be short */
    if (nb > ix->chunk_size / 8 || slot / 8 >= nb)
      return knn_corrupt(&w->zErr, w->fn, ix, "slot %lld of chunk %lld is past its end", slot,
                         chunk);
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
      if (rc == SQLITE_OK && w->cl_del) {
        sqlite3_bind_int64(w->cl_del, 1, chunk);
        rc = step_done(w, w->cl_del);
      }
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
  fv_vector vec;
  i64 chunk = 0, slot = 0;
  int mapped = 0, rc;

  rc = knn_row_vector(w->fn, ix, rid, type, data, nbytes, ix->dim, &vec, &w->zErr);
  for (size_t j = 0; w->skip_ins && w->centroids && rc == SQLITE_OK && vec.v && j < vec.n; j++)
    if (!isfinite(vec.v[j])) { /* no list to place it in, as the build finds */
      fv_vector_free(&vec);
      w->zErr = sqlite3_mprintf("%s: %s row %lld: %s holds NaN or infinity; an IVF index "
                                "cannot place it",
                                w->fn, ix->tbl, rid, ix->col);
      rc = w->zErr ? SQLITE_ERROR : SQLITE_NOMEM;
    }
  if (w->skip_del && rc == SQLITE_OK) {
    sqlite3_bind_int64(w->skip_del, 1, rid);
    rc = step_done(w, w->skip_del);
  } else if (w->skip_ins && rc == SQLITE_ERROR) {
    /* Left out and named, as the build leaves it out (knn_ivf_build.c). */
    sqlite3_bind_int64(w->skip_ins, 1, rid);
    sqlite3_bind_text(w->skip_ins, 2, w->zErr ? w->zErr : "", -1, SQLITE_TRANSIENT);
    sqlite3_free(w->zErr);
    w->zErr = NULL;
    rc = step_done(w, w->skip_ins);
    memset(&vec, 0, sizeof vec);
  }
  if (rc != SQLITE_OK) return rc;
  if (vec.v && ix->dim == 0) {
    ix->dim = (i64)vec.n;
    if (ix->chunk_size == 0) ix->chunk_size = knn_auto_chunk_size(ix->dim);
  }
  rc = knn_map_find(w->db, w->fn, ix, w->map_get, rid, &chunk, &slot, &w->zErr);
  mapped = chunk > 0;
  if (rc == SQLITE_OK && (vec.v || mapped)) rc = writer_alloc(w);
  if (rc == SQLITE_OK && mapped) rc = writer_check_slot(w, rid, chunk, slot);
  if (rc == SQLITE_OK) {
    if (vec.v && mapped && w->centroids) {
      /* IVF: a changed vector may belong to another list; it moves. */
      rc = writer_remove(w, rid, chunk, slot);
      if (rc == SQLITE_OK) rc = writer_append(w, rid, vec.v);
    } else if (vec.v)
      rc = mapped ? writer_overwrite(w, chunk, slot, vec.v) : writer_append(w, rid, vec.v);
    else if (mapped)
      rc = writer_remove(w, rid, chunk, slot);
  }
  fv_vector_free(&vec);
  return rc;
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

/* Rows of the source table whose vector column is not NULL. */
static int count_vectors(sqlite3 *db, const knn_index *ix, i64 *rows, char **pzErr) {
  sqlite3_stmt *st = NULL;
  char *skipped = sqlite3_mprintf("%s%s", ix->tbl, knn_build_suffix[2]);
  char *type = skipped ? knn_object_type(db, skipped) : NULL;
  int rc;
  /* Rows an IVF build left out (knn_ivf_build.c) are not in the chunks. */
  if (type)
    rc = knn_prepare(db, &st, pzErr,
                     "SELECT count(*) FROM \"main\".\"%w\" WHERE \"%w\" IS NOT NULL AND "
                     "\"%w\" NOT IN (SELECT rid FROM \"main\".\"%w\")",
                     ix->tbl, ix->col, ix->pk, skipped);
  else
    rc = knn_prepare(db, &st, pzErr,
                     "SELECT count(*) FROM \"main\".\"%w\" WHERE \"%w\" IS NOT NULL",
                     ix->tbl, ix->col);
  sqlite3_free(skipped);
  sqlite3_free(type);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *rows = sqlite3_column_int64(st, 0);
      rc = SQLITE_OK;
    } else {
      knn_db_error(db, pzErr);
    }
  }
  sqlite3_finalize(st);
  return rc;
}

int knn_sync_rows(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows,
                         i64 *done, char **pzErr) {
  knn_writer w;
  sqlite3_stmt *log_st = NULL, *build_st = NULL;
  i64 count = 0, last_seq = -1;
  int log_drained = 0;
  int rc;
  /* An IVF build in batches: its next batch (the log waits for its end). */
  if (ix->building && ix->lists > 0) {
    rc = knn_generation_bump(db, ix->tbl, pzErr);
    return rc == SQLITE_OK ? knn_ivf_step(db, fn, ix, max_rows, done, pzErr) : rc;
  }
  rc = writer_init(&w, db, fn, ix);
  if (rc != SQLITE_OK) goto finish;

  /* 1. The change log, oldest first. */
  rc = knn_prepare(db, &log_st, &w.zErr,
                   "SELECT seq, rid FROM \"main\".\"%w_fvknn_log\" ORDER BY seq LIMIT ?1", ix->tbl);
  if (rc != SQLITE_OK) goto finish;
  sqlite3_bind_int64(log_st, 1, max_rows < 0 ? -1 : max_rows);
  while ((rc = sqlite3_step(log_st)) == SQLITE_ROW) {
    last_seq = sqlite3_column_int64(log_st, 0);
    if (sqlite3_column_type(log_st, 1) != SQLITE_INTEGER) {
      rc = knn_corrupt(&w.zErr, fn, ix, "its log holds a %s rowid",
                       fv_type_name(sqlite3_column_type(log_st, 1)));
      goto finish;
    }
    /* The first change to write: the chunks about to change get a new number. */
    rc = count == 0 ? knn_generation_bump(db, ix->tbl, &w.zErr) : SQLITE_OK;
    if (rc == SQLITE_OK) rc = writer_apply_rid(&w, sqlite3_column_int64(log_st, 1));
    if (rc != SQLITE_OK) goto finish;
    count++;
  }
  if (rc != SQLITE_DONE) {
    knn_db_error(db, &w.zErr);
    goto finish;
  }
  rc = SQLITE_OK;
  log_drained = max_rows < 0 || count < max_rows;
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
    rc = knn_generation_bump(db, ix->tbl, &w.zErr);
    if (rc == SQLITE_OK)
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
  if (!ix->building && log_drained) {
    /* Nothing is pending now, so every row with a vector must be in the
    ** chunks: an index that claims rows it never indexed (a forged build
    ** cursor, a lost change) shows here, at the price of one count. */
    i64 rows = 0;
    rc = count_vectors(db, ix, &rows, &w.zErr);
    if (rc == SQLITE_OK && rows != ix->n_vectors)
      rc = knn_corrupt(&w.zErr, fn, ix, "it holds %lld vectors, the table %lld", ix->n_vectors,
                       rows);
    if (rc != SQLITE_OK) goto finish;
  }

  rc = writer_flush(&w);
  if (rc != SQLITE_OK) goto finish;
  writer_close_blobs(&w);
  rc = knn_index_save(db, ix, &w.zErr);
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
/* Creating, opening and dropping an index                                   */

int knn_drop_objects(sqlite3 *db, const char *tbl, char **pzErr) {
  int rc = SQLITE_OK;
  for (int i = 0; rc == SQLITE_OK && i < 6; i++)
    rc = knn_exec(db, pzErr, "DROP TRIGGER IF EXISTS \"main\".\"%w%s\"", tbl,
                  i < 3 ? trigger_suffix[i] : chunk_edit_suffix[i - 3]);
  for (int i = 0; rc == SQLITE_OK && i < 9; i++) {
    char *name = sqlite3_mprintf("%s%s", tbl, i < 3   ? table_suffix[i]
                                              : i < 5 ? ivf_suffix[i - 3]
                                              : i < 6 ? quant_suffix
                                                      : knn_build_suffix[i - 6]);
    char *type = name ? knn_object_type(db, name) : NULL;
    if (!name) rc = SQLITE_NOMEM;
    else if (type) rc = knn_exec(db, pzErr, "DROP %s \"main\".\"%w\"", type, name);
    sqlite3_free(name);
    sqlite3_free(type);
  }
  if (rc == SQLITE_OK && meta_table_exists(db))
    rc = knn_exec(db, pzErr, "DELETE FROM main." KNN_INDEX_TABLE " WHERE tbl = %Q", tbl);
  if (rc == SQLITE_OK && knn_object_type_is(db, KNN_GENERATION_TABLE, "table"))
    rc = knn_exec(db, pzErr, "DELETE FROM main." KNN_GENERATION_TABLE " WHERE tbl = %Q", tbl);
  return rc;
}

/* Canonical name of main table tbl. */
static int canonical_table(sqlite3 *db, const char *fn, const char *tbl, char **canon,
                           char **pzErr) {
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v2(db,
                              "SELECT name FROM main.sqlite_schema WHERE type = 'table' AND "
                              "name = ?1 COLLATE NOCASE",
                              -1, &st, NULL);
  *canon = NULL;
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *canon = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
      rc = *canon ? SQLITE_OK : SQLITE_NOMEM;
    } else if (rc == SQLITE_DONE) {
      *pzErr = sqlite3_mprintf("%s: no such table: %s", fn, tbl);
      rc = SQLITE_ERROR;
    }
  }
  if (rc != SQLITE_OK && rc != SQLITE_NOMEM) knn_db_error(db, pzErr);
  sqlite3_finalize(st);
  return rc;
}

int knn_drop(sqlite3 *db, const char *tbl, int *found, char **pzErr) {
  sqlite3_stmt *st = NULL;
  char *canon = NULL;
  int rc = SQLITE_OK;
  *found = 0;
  if (meta_table_exists(db)) {
    /* Whatever the description holds: a damaged index can be dropped too. */
    rc = sqlite3_prepare_v2(db, "SELECT 1 FROM main." KNN_INDEX_TABLE " WHERE tbl = ?1", -1,
                            &st, NULL);
    if (rc == SQLITE_OK) {
      sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
      rc = sqlite3_step(st);
      *found = rc == SQLITE_ROW;
      rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) knn_db_error(db, pzErr);
  }
  if (rc != SQLITE_OK || !*found) return rc;
  /* The table's own spelling names the objects; it may be gone already. */
  if (canonical_table(db, "", tbl, &canon, pzErr) != SQLITE_OK) {
    sqlite3_free(*pzErr);
    *pzErr = NULL;
  }
  rc = knn_drop_objects(db, canon ? canon : tbl, pzErr);
  sqlite3_free(canon);
  return rc;
}

/* The description table, made anew if what stands under its name is not
** the table facevec writes (the descriptions it held are lost with it). */
static int ensure_meta_table(sqlite3 *db, char **pzErr) {
  static const char columns[] =
      "tbl,col,pk,dim,chunk_size,tail_chunk,tail_used,n_vectors,build_next,format";
  char *type = knn_object_type(db, KNN_INDEX_TABLE), *have = NULL;
  int rc = SQLITE_OK;
  if (type && strcmp(type, "table") == 0) {
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db,
                            "SELECT group_concat(name, ',') FROM (SELECT name FROM "
                            "pragma_table_info('" KNN_INDEX_TABLE "', 'main') ORDER BY cid)",
                            -1, &st, NULL);
    if (rc == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
      have = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
  }
  if (rc == SQLITE_OK && type && (!have || strcmp(have, columns) != 0))
    rc = knn_exec(db, pzErr, "DROP %s main." KNN_INDEX_TABLE, type);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE IF NOT EXISTS main." KNN_INDEX_TABLE "("
                  "tbl TEXT PRIMARY KEY COLLATE NOCASE, col TEXT NOT NULL, pk TEXT NOT NULL, "
                  "dim INTEGER NOT NULL, chunk_size INTEGER NOT NULL, "
                  "tail_chunk INTEGER NOT NULL, tail_used INTEGER NOT NULL, "
                  "n_vectors INTEGER NOT NULL, build_next INTEGER, format INTEGER NOT NULL)");
  if (rc != SQLITE_OK) knn_db_error(db, pzErr);
  sqlite3_free(type);
  sqlite3_free(have);
  return rc;
}

int knn_create(sqlite3 *db, const char *fn, const char *tbl, const char *col, i64 chunk_size,
               knn_index *ix, char **pzErr) {
  char *canon = NULL, *pk = NULL;
  int has_col = 0;
  int rc = canonical_table(db, fn, tbl, &canon, pzErr);
  if (rc == SQLITE_OK) rc = source_columns(db, canon, col, &has_col, &pk, pzErr);
  if (rc == SQLITE_OK && !has_col) {
    *pzErr = sqlite3_mprintf("%s: table %s has no column named %s", fn, canon, col);
    rc = SQLITE_ERROR;
  } else if (rc == SQLITE_OK && !pk) {
    *pzErr = sqlite3_mprintf("%s: table %s needs an INTEGER PRIMARY KEY column (a stable "
                             "rowid) to be indexed",
                             fn, canon);
    rc = SQLITE_ERROR;
  }
  if (rc == SQLITE_OK) rc = knn_drop_objects(db, canon, pzErr);
  if (rc == SQLITE_OK) rc = ensure_meta_table(db, pzErr);
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "INSERT INTO main." KNN_INDEX_TABLE " VALUES (%Q, %Q, %Q, 0, %lld, 0, 0, 0, "
                  "-9223372036854775808, %d)",
                  canon, col, pk, chunk_size, KNN_FORMAT);
  if (rc == SQLITE_OK) rc = knn_generation_bump(db, canon, pzErr);
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
                  "CREATE TABLE \"main\".\"%w_fvknn_log\"(seq INTEGER PRIMARY KEY, "
                  "rid INTEGER NOT NULL)",
                  canon);
  for (int i = 0; rc == SQLITE_OK && i < 3; i++) {
    char *sql = trigger_sql(i, canon, pk, col);
    rc = sql ? knn_exec(db, pzErr, "CREATE TRIGGER \"main\".%s", sql) : SQLITE_NOMEM;
    sqlite3_free(sql);
  }
  for (int i = 0; rc == SQLITE_OK && i < 3; i++) {
    static const char *const event[3] = {"INSERT", "DELETE", "UPDATE"};
    rc = knn_exec(db, pzErr,
                  "CREATE TRIGGER \"main\".\"%w%s\" AFTER %s ON \"%w_fvknn_chunks\" BEGIN "
                  "UPDATE " KNN_GENERATION_TABLE " SET generation = random() WHERE tbl = %Q; "
                  "END",
                  canon, chunk_edit_suffix[i], event[i], canon, canon);
  }
  if (rc == SQLITE_OK) rc = knn_index_load(db, fn, canon, ix, pzErr);
  if (rc == SQLITE_NOTFOUND) rc = SQLITE_ERROR; /* cannot happen: just inserted */
  sqlite3_free(canon);
  sqlite3_free(pk);
  return rc;
}

int knn_index_open(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix,
                   char **pzErr) {
  int triggers_ok = 0;
  int rc = knn_index_load(db, fn, tbl, ix, pzErr);
  if (rc == SQLITE_NOTFOUND) {
    char *canon = NULL;
    rc = canonical_table(db, fn, tbl, &canon, pzErr);
    if (rc == SQLITE_OK) {
      *pzErr = sqlite3_mprintf("%s: no facevec_knn index on table '%s'; create it with "
                               "SELECT facevec_knn_build('%q', 'embedding')",
                               fn, tbl, tbl);
      rc = SQLITE_ERROR;
    }
    sqlite3_free(canon);
    return rc;
  }
  if (rc == SQLITE_OK) rc = knn_index_check(db, fn, ix, &triggers_ok, pzErr);
  if (rc == SQLITE_OK && !triggers_ok)
    rc = index_error(pzErr, fn, ix->tbl, ix->col,
                     "is stale: its triggers are missing (was the table dropped and created "
                     "again?)");
  if (rc != SQLITE_OK) knn_index_clear(ix);
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


/* ------------------------------------------------------------------------ */
/* Compressed storage: float16 and int8 codes                                */

/* The maths of the codes is codes.c's; float32 storage is a copy. */
void knn_encode(int storage, const float *params, const float *src, size_t n, size_t dim,
                void *dst) {
  if (storage == KNN_STORE_F32)
    memcpy(dst, src, n * dim * sizeof(float));
  else
    fv_codes_encode(storage, params, src, n, dim, dst);
}

void knn_decode(int storage, const float *params, const void *src, size_t n, size_t dim,
                float *dst) {
  if (storage == KNN_STORE_F32)
    memcpy(dst, src, n * dim * sizeof(float));
  else
    fv_codes_decode(storage, params, src, n, dim, dst);
}

int knn_quant_params(sqlite3 *db, const char *fn, const knn_index *ix, float **out,
                     char **pzErr) {
  sqlite3_stmt *st = NULL;
  const i64 bytes = ix->dim * 8;
  int rc;
  *out = NULL;
  if (ix->storage != KNN_STORE_I8) return SQLITE_OK;
  if (ix->dim < 1 || ix->dim > KNN_MAX_CHUNK_BYTES / (64 * 4))
    return knn_corrupt(pzErr, fn, ix, "quantisation parameters of dimension %lld", ix->dim);
  rc = knn_prepare(db, &st, pzErr, "SELECT params FROM \"main\".\"%w%s\"", ix->tbl,
                   quant_suffix);
  if (rc == SQLITE_OK) {
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW && sqlite3_column_type(st, 0) == SQLITE_BLOB &&
        sqlite3_column_bytes(st, 0) == bytes) {
      *out = sqlite3_malloc64((sqlite3_uint64)bytes);
      if (*out) memcpy(*out, sqlite3_column_blob(st, 0), (size_t)bytes);
      rc = *out ? SQLITE_OK : SQLITE_NOMEM;
      for (i64 j = 0; rc == SQLITE_OK && j < ix->dim; j++)
        if (!isfinite((*out)[j]) || !isfinite((*out)[ix->dim + j]) || !((*out)[ix->dim + j] > 0))
          rc = knn_corrupt(pzErr, fn, ix, "quantisation parameter %lld is not a finite "
                           "minimum and positive scale", j);
    } else if (rc == SQLITE_ROW || rc == SQLITE_DONE) {
      rc = knn_corrupt(pzErr, fn, ix, "its quantisation parameters are not %lld bytes", bytes);
    } else {
      knn_db_error(db, pzErr);
    }
  }
  sqlite3_finalize(st);
  if (rc != SQLITE_OK) {
    sqlite3_free(*out);
    *out = NULL;
  }
  return rc;
}

int knn_quant_init(sqlite3 *db, const char *fn, knn_index *ix, int storage, i64 rerank,
                   const float *given, i64 given_dim, char **pzErr) {
  sqlite3_stmt *st = NULL;
  float *lo = NULL, *hi = NULL, *params = NULL;
  i64 dim = ix->dim; /* 0 unless declared: the first vector's */
  int rc = SQLITE_OK;
  if (storage == KNN_STORE_F32) return SQLITE_OK;
  if (storage == KNN_STORE_I8 && given) {
    dim = given_dim;
    params = sqlite3_malloc64((sqlite3_uint64)dim * 8);
    if (!params) return SQLITE_NOMEM;
    memcpy(params, given, (size_t)dim * 8);
  } else if (storage == KNN_STORE_I8) {
    /* Each dimension's range over the table's vectors: 255 steps of it. */
    rc = knn_prepare(db, &st, pzErr,
                     "SELECT \"%w\", \"%w\" FROM \"main\".\"%w\" WHERE \"%w\" IS NOT NULL",
                     ix->pk, ix->col, ix->tbl, ix->col);
    while (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      fv_vector v;
      rc = knn_row_vector(fn, ix, sqlite3_column_int64(st, 0), sqlite3_column_type(st, 1),
                          sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1), dim, &v,
                          pzErr);
      if (rc != SQLITE_OK) break;
      if (!v.v) continue;
      if (!lo) {
        dim = (i64)v.n;
        if (dim < 1 || dim > KNN_MAX_CHUNK_BYTES / (64 * 4)) {
          fv_vector_free(&v);
          *pzErr = sqlite3_mprintf("%s: %s vectors of %lld dimensions cannot be indexed", fn,
                                   ix->tbl, dim);
          rc = SQLITE_ERROR;
          break;
        }
        lo = sqlite3_malloc64((sqlite3_uint64)dim * 4);
        hi = sqlite3_malloc64((sqlite3_uint64)dim * 4);
        if (!lo || !hi) {
          fv_vector_free(&v);
          rc = SQLITE_NOMEM;
          break;
        }
        for (i64 j = 0; j < dim; j++) lo[j] = HUGE_VALF, hi[j] = -HUGE_VALF;
      }
      for (i64 j = 0; j < dim; j++) {
        float x = v.v[j];
        if (!isfinite(x)) continue;
        if (x < lo[j]) lo[j] = x;
        if (x > hi[j]) hi[j] = x;
      }
      fv_vector_free(&v);
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    else if (rc != SQLITE_OK && rc != SQLITE_NOMEM && !*pzErr) knn_db_error(db, pzErr);
    if (rc == SQLITE_OK && !lo) {
      *pzErr = sqlite3_mprintf("%s: storage int8 is trained on the vectors of %s, which has "
                               "none yet; build it with storage float16 or float32",
                               fn, ix->tbl);
      rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK) {
      params = sqlite3_malloc64((sqlite3_uint64)dim * 8);
      if (!params) rc = SQLITE_NOMEM;
    }
    for (i64 j = 0; rc == SQLITE_OK && j < dim; j++) {
      float a = lo[j] <= hi[j] ? lo[j] : 0, b = lo[j] <= hi[j] ? hi[j] : 0;
      float s = (b - a) / 255.0f;
      params[j] = a;
      params[dim + j] = isfinite(s) && s > 0 ? s : 1.0f;
    }
  }
  if (rc == SQLITE_OK)
    rc = knn_exec(db, pzErr,
                  "CREATE TABLE \"main\".\"%w%s\"(id INTEGER PRIMARY KEY, storage TEXT NOT "
                  "NULL, rerank INTEGER NOT NULL, params BLOB)",
                  ix->tbl, quant_suffix);
  if (rc == SQLITE_OK)
    rc = knn_prepare(db, &st, pzErr, "INSERT INTO \"main\".\"%w%s\" VALUES (1, ?1, ?2, ?3)",
                     ix->tbl, quant_suffix);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, storage == KNN_STORE_I8 ? "int8" : "float16", -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, rerank);
    if (params) sqlite3_bind_blob64(st, 3, params, (sqlite3_uint64)dim * 8, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
    else knn_db_error(db, pzErr);
  }
  if (rc == SQLITE_OK) {
    ix->storage = storage;
    ix->rerank = rerank;
  }
  sqlite3_finalize(st);
  sqlite3_free(lo);
  sqlite3_free(hi);
  sqlite3_free(params);
  return rc;
}
