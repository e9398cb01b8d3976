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

#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
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
static char *object_type(sqlite3 *db, const char *name) {
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

static int meta_table_exists(sqlite3 *db) {
  char *type = object_type(db, KNN_INDEX_TABLE);
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
  if (sqlite3_column_int64(st, 9) != KNN_FORMAT)
    rc = knn_corrupt(pzErr, fn, ix, "format %lld, expected %d", sqlite3_column_int64(st, 9),
                     KNN_FORMAT);
  else
    rc = check_description(fn, ix, pzErr);
finish:
  if (rc != SQLITE_OK && rc != SQLITE_NOTFOUND) knn_db_error(db, pzErr);
  if (rc != SQLITE_OK) knn_index_clear(ix);
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
  char *pk = NULL, *type = object_type(db, ix->tbl);
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
  const i64 cs = ix->chunk_size, want[3] = {cs / 8, cs * 8, cs * ix->dim * 4};
  i64 last = 0, n_valid = 0, n_chunks = 0;
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
    for (int c = 0; c < 3; c++) {
      rc = blob[c] ? sqlite3_blob_reopen(blob[c], id)
                   : sqlite3_blob_open(db, "main", chunks_tbl, column[c], id, 0, &blob[c]);
      if (rc == SQLITE_ERROR) {
        rc = knn_corrupt(pzErr, fn, ix, "chunk %lld: %s", id, sqlite3_errmsg(db));
        goto finish;
      }
      if (rc != SQLITE_OK) goto db_error;
      if (sqlite3_blob_bytes(blob[c]) != want[c]) {
        rc = knn_corrupt(pzErr, fn, ix, "chunk %lld holds %d bytes of %s, expected %lld", id,
                         sqlite3_blob_bytes(blob[c]), column[c], want[c]);
        goto finish;
      }
    }
    rc = sqlite3_blob_read(blob[0], bits, (int)(cs / 8), 0);
    if (rc != SQLITE_OK) goto db_error;
    i64 used = id == ix->tail_chunk ? ix->tail_used : cs, past = valid_bits_past(bits, cs, used);
    if (past >= 0) {
      rc = knn_corrupt(pzErr, fn, ix, "chunk %lld marks slot %lld valid, past the %lld in use",
                       id, past, used);
      goto finish;
    }
    n_valid += count_bits(bits, (size_t)cs / 8);
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

int knn_index_check(sqlite3 *db, const char *fn, knn_index *ix, int *triggers_ok,
                    char **pzErr) {
  int rc = check_source(db, fn, ix, pzErr);
  if (rc == SQLITE_OK) rc = check_schema(db, fn, ix, triggers_ok, pzErr);
  if (rc == SQLITE_OK) rc = check_chunks(db, fn, ix, pzErr);
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
  if (!w->app_vec || !w->app_rid || !w->app_valid || !w->bitmap) return SQLITE_NOMEM;
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
  if (w->app_n == w->app_cap) {
    rc = writer_flush(w);
    if (rc != SQLITE_OK) return rc;
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
  fv_vector vec;
  i64 chunk = 0, slot = 0;
  int mapped = 0, rc;

  rc = knn_row_vector(w->fn, ix, rid, type, data, nbytes, ix->dim, &vec, &w->zErr);
  if (rc != SQLITE_OK) return rc;
  if (vec.v && ix->dim == 0) {
    ix->dim = (i64)vec.n;
    if (ix->chunk_size == 0) ix->chunk_size = auto_chunk_size(ix->dim);
  }
  rc = knn_map_find(w->db, w->fn, ix, w->map_get, rid, &chunk, &slot, &w->zErr);
  mapped = chunk > 0;
  if (rc == SQLITE_OK && (vec.v || mapped)) rc = writer_alloc(w);
  if (rc == SQLITE_OK && mapped) rc = writer_check_slot(w, rid, chunk, slot);
  if (rc == SQLITE_OK) {
    if (vec.v)
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
  int rc = knn_prepare(db, &st, pzErr,
                       "SELECT count(*) FROM \"main\".\"%w\" WHERE \"%w\" IS NOT NULL",
                       ix->tbl, ix->col);
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
  int rc = writer_init(&w, db, fn, ix);
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
    rc = writer_apply_rid(&w, sqlite3_column_int64(log_st, 1));
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
/* Creating, opening and dropping an index                                   */

int knn_drop_objects(sqlite3 *db, const char *tbl, char **pzErr) {
  int rc = SQLITE_OK;
  for (int i = 0; rc == SQLITE_OK && i < 3; i++)
    rc = knn_exec(db, pzErr, "DROP TRIGGER IF EXISTS \"main\".\"%w%s\"", tbl,
                  trigger_suffix[i]);
  for (int i = 0; rc == SQLITE_OK && i < 3; i++) {
    char *name = sqlite3_mprintf("%s%s", tbl, table_suffix[i]);
    char *type = name ? object_type(db, name) : NULL;
    if (!name) rc = SQLITE_NOMEM;
    else if (type) rc = knn_exec(db, pzErr, "DROP %s \"main\".\"%w\"", type, name);
    sqlite3_free(name);
    sqlite3_free(type);
  }
  if (rc == SQLITE_OK && meta_table_exists(db))
    rc = knn_exec(db, pzErr, "DELETE FROM main." KNN_INDEX_TABLE " WHERE tbl = %Q", tbl);
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
  char *type = object_type(db, KNN_INDEX_TABLE), *have = NULL;
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

