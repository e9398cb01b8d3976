/*
** knn_sql.c - the SQL interface of facevec's knn index: exact k-nearest-
** neighbour search over a table's embeddings, kept in the same SQLite
** database in large contiguous chunks (knn_store.c) and scanned with the
** SIMD kernels into a bounded heap (knn_search.c).
**
** SQL interface (all in schema "main"):
**
**   SELECT facevec_knn_build(table [, column [, chunk_size [, options]]])
**       Drop any index on table, create one on column (default 'embedding')
**       and fill it. Returns the number of vectors indexed. options: JSON
**       {"lists": N, "nprobe": P, "sample": S, "iterations": I}; lists > 0
**       builds an IVF index (k-means lists; a query reads its nprobe nearest
**       lists; P defaults to a value measured on the data), chunk_size NULL.
**       "storage": "float16" | "int8" (default "float32") stores the chunks'
**       vectors compressed (int8: per-dimension min/scale trained on the
**       table's vectors); a query ranks them and re-ranks its "rerank"
**       nearest (0, the default: max(4k, 64)) by their exact float32
**       vectors read from the table, so distances are the scalar functions'.
**       "dim": the vectors' dimension (e.g. the gallery's model's); without
**       it, the size most rows have. Rows of another size are left out (IVF)
**       or an error (exact).
**   SELECT facevec_knn_build(table, column, NULL, options, centroids)
**       An IVF build on the given centroids (a BLOB of lists x dim float32,
**       e.g. the gallery's SQL lists) instead of its own k-means.
**       An IVF build works in batches, each its own transaction (savepoints
**       of the caller's transaction inside one), memory bounded: an
**       interrupted build continues where it stopped when run again with the
**       same options (knn_ivf_build.c). Until it finishes, queries read every
**       row from the table (exact). Rows whose vector cannot be read are left
**       out and named (status: skipped, skipped_rows), not an error.
**   SELECT facevec_knn_create(table [, column [, chunk_size [, options
**                             [, centroids]]]])
**       As build, but leave the filling to facevec_knn_sync (in batches, so a
**       caller can show progress); options: storage and rerank, or with lists
**       an IVF index trained here (an unfinished build of the same options is
**       kept, to be continued). Returns 0.
**   SELECT facevec_knn_sync(table [, max_rows])
**       Apply pending changes of table (logged by triggers) and continue an
**       unfinished build, at most max_rows source rows (default: all; an IVF
**       build counts each row twice: read and assigned, then written).
**       Returns the number of rows processed; fewer than max_rows = done.
**   SELECT facevec_knn_drop(table)      remove the index; returns 1 or 0.
**   SELECT facevec_knn_status(table)    JSON description, NULL if no index.
**   SELECT facevec_knn_cache_size([bytes])
**       The bytes of chunks the process keeps in memory for its searches
**       (every connection shares them; default 1 GiB, 0: none), set first
**       when bytes is given. Returns the budget.
**   SELECT facevec_knn_cache_status()
**       JSON {"budget", "bytes", "chunks", "hits", "misses"} of that cache.
**
**   SELECT rowid, distance, rank
**   FROM facevec_knn(table, query, k [, metric [, threshold]]);
**       At most k rows (any INTEGER >= 1) nearest to query (float32 BLOB or
**       JSON array), ascending by distance, ties by rowid; metric
**       'euclidean' (default), 'euclidean_squared', 'cosine' or
**       'euclidean_l2'; only rows with distance <= threshold when one is
**       given (NULL or +infinity: no limit). Distances equal, bit for bit,
**       the scalar <metric>_distance(embedding, query).
**   ... FROM facevec_knn(table, query, k, metric, threshold, nprobe)
**       On an IVF index: read the nprobe nearest lists (NULL: the index's
**       default; >= lists: all, the exact answer). Ignored by the exact index.
**   SELECT query_no, rowid, distance, rank
**   FROM facevec_knn_batch(table, '[[..], [..], ...]', k [, ...]);
**       The same for each vector of a JSON array (query_no: its index), in
**       one pass over the chunks; rows ordered by query_no, then distance.
**
** Storage, for table T (T's rowid must be an INTEGER PRIMARY KEY column, so
** that VACUUM cannot renumber it):
**   facevec_knn_index   one row per index: column, dimension, chunk size,
**                       tail chunk and fill, build cursor
**   T_fvknn_chunks      (id, valid, rowids, vectors): chunk_size slots each;
**                       valid is a bitmap, rowids int64, vectors float32, all
**                       fixed-size BLOBs edited in place with sqlite3_blob_*
**   T_fvknn_rowids      (rid -> chunk, slot), for updates and deletes
**   T_fvknn_ivf         IVF only: one row (lists, nprobe, trained, centroids)
**   T_fvknn_chunklists  IVF only: each chunk's list, or -1 for a mixed chunk
**   T_fvknn_quant       float16/int8 only: one row (storage, rerank, params:
**                       int8's dim minima then dim scales, float32); the
**                       chunks' vectors BLOBs then hold codes of 2 or 1 bytes
**                       (rows synced since training) whose slots BLOB holds
**                       each slot's list as int32
**   facevec_knn_generation  (tbl, generation): a random number every write
**                       to T's chunks replaces; chunks kept in memory are
**                       known by it (knn_chunk_cache.h)
**   T_fvknn_log         (seq, rid) appended by plain-SQL triggers on T, so any
**                       connection, with or without facevec loaded, can write
**                       T; facevec_knn_sync empties it.
**
** A query is never stale: rows named in the log (and, during a build, rows
** past the build cursor or unknown to the map) are skipped in the chunks and
** read from T itself. Nothing read from these tables is trusted: a damaged
** index is an error that names T and asks for a rebuild (knn_store.c).
** Every call's writes form one transaction (BEGIN IMMEDIATE, or a SAVEPOINT
** inside the caller's transaction), so a crash leaves either the old or the
** new index, and concurrent writers wait for each other. Every call's reads
** (facevec_knn, facevec_knn_status) see one snapshot: a statement held open
** on the schema version keeps one read transaction for the whole call.
**
** Who may call what: every function here is DIRECTONLY (never from a view or
** trigger of the file); see the security model in sqlite3_facevec.c.
**
** Limits: a REPLACE that deletes a row through a UNIQUE constraint other than
** the rowid fires no DELETE trigger unless PRAGMA recursive_triggers is on;
** the next full facevec_knn_sync then finds the index holding a row too
** many and asks for a rebuild. A query copies each chunk through
** sqlite3_blob_read into a 128 KiB buffer; with PRAGMA mmap_size covering the
** file those copies come from the mapping instead of one read() per page,
** about twice as fast.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
#include "knn.h"
#include "knn_search.h"
#include "knn_store.h"
#include "vector_arg.h"

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
/* Transactions around the writing functions                                 */

/* Every write of one call is atomic. In autocommit mode the call runs in a
** BEGIN IMMEDIATE transaction: it takes the write lock up front, waiting in
** the busy handler like any writer. (A SAVEPOINT there would start a
** deferred transaction that reads first and must upgrade later, and SQLite
** answers such an upgrade with SQLITE_BUSY at once, without waiting.) Inside
** the caller's transaction it runs in a SAVEPOINT, which commits or rolls
** back with the caller's. *own records which. */
static int txn_begin(sqlite3 *db, int *own, char **pzErr) {
  *own = sqlite3_get_autocommit(db);
  return knn_exec(db, pzErr, *own ? "BEGIN IMMEDIATE" : "SAVEPOINT facevec_knn");
}

/* Commit (rc == SQLITE_OK) or roll back; returns the final rc. */
static int txn_end(sqlite3 *db, int own, int rc, char **pzErr) {
  if (rc == SQLITE_OK) {
    rc = knn_exec(db, pzErr, own ? "COMMIT" : "RELEASE facevec_knn");
    if (rc == SQLITE_OK) return rc;
  }
  if (own) {
    if (!sqlite3_get_autocommit(db)) sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
  } else {
    sqlite3_exec(db, "ROLLBACK TO facevec_knn", NULL, NULL, NULL);
    sqlite3_exec(db, "RELEASE facevec_knn", NULL, NULL, NULL);
  }
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
                           fv_type_name(sqlite3_value_type(v)));
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

/* An argument error of fn on ctx; returns 0. */
static int arg_error(sqlite3_context *ctx, const char *fn, char *msg) {
  sqlite3_result_error(ctx, msg ? msg : fn, -1);
  sqlite3_free(msg);
  return 0;
}

static int int_arg(sqlite3_context *ctx, const char *fn, const char *what,
                   sqlite3_value **argv, int i, i64 *out) {
  if (sqlite3_value_type(argv[i]) != SQLITE_INTEGER)
    return arg_error(ctx, fn,
                     sqlite3_mprintf("%s: %s (argument %d) must be an INTEGER, found %s", fn,
                                     what, i + 1, fv_type_name(sqlite3_value_type(argv[i]))));
  *out = sqlite3_value_int64(argv[i]);
  return 1;
}

/* The arguments of the writing functions, and what each does with them
** inside the transaction run_write opens. */
typedef struct write_args {
  const char *fn, *table, *column;
  i64 chunk_size; /* build/create: 0 = from the dimension */
  i64 max_rows;   /* sync: < 0 = all */
  int fill;       /* build (1) or create (0) */
  knn_build_opts opts; /* build: IVF options (lists 0 = exact) */
} write_args;

typedef int (*write_op)(sqlite3 *db, const write_args *a, i64 *result, char **pzErr);

static int build_op(sqlite3 *db, const write_args *a, i64 *result, char **pzErr) {
  knn_index ix = {0};
  i64 done = 0;
  int rc = knn_create(db, a->fn, a->table, a->column, a->chunk_size, &ix, pzErr);
  if (rc == SQLITE_OK && a->opts.lists > 0) {
    /* IVF: trained here, filled in batches (knn_ivf_build.c); without any
    ** vector to train on, the exact index. */
    rc = knn_ivf_start(db, a->fn, &ix, &a->opts, pzErr);
    if (rc == SQLITE_DONE)
      rc = knn_quant_init(db, a->fn, &ix, a->opts.storage, a->opts.rerank, NULL, 0, pzErr);
    else if (rc == SQLITE_OK && !a->fill)
      goto finish;
    if (rc == SQLITE_OK) rc = knn_sync_rows(db, a->fn, &ix, a->fill ? a->max_rows : 0, &done, pzErr);
    goto finish;
  }
  if (rc == SQLITE_OK && a->opts.dim > 0) { /* declared: a row of another size is named */
    ix.dim = a->opts.dim;
    if (ix.chunk_size == 0) ix.chunk_size = knn_auto_chunk_size(ix.dim);
    rc = knn_index_save(db, &ix, pzErr);
  }
  if (rc == SQLITE_OK)
    rc = knn_quant_init(db, a->fn, &ix, a->opts.storage, a->opts.rerank, NULL, 0, pzErr);
  if (rc == SQLITE_OK && a->fill) rc = knn_sync_rows(db, a->fn, &ix, -1, &done, pzErr);
finish:
  *result = a->fill ? (a->opts.lists > 0 ? done : ix.n_vectors) : 0;
  knn_index_clear(&ix);
  return rc;
}

static int sync_op(sqlite3 *db, const write_args *a, i64 *result, char **pzErr) {
  knn_index ix = {0};
  int rc = knn_index_open(db, a->fn, a->table, &ix, pzErr);
  if (rc == SQLITE_OK) rc = knn_sync_rows(db, a->fn, &ix, a->max_rows, result, pzErr);
  knn_index_clear(&ix);
  return rc;
}

static int drop_op(sqlite3 *db, const write_args *a, i64 *result, char **pzErr) {
  int found = 0, rc = knn_drop(db, a->table, &found, pzErr);
  *result = found;
  return rc;
}

/* Run op in one transaction (txn_begin); *result gets its INTEGER result. */
static int run_txn(sqlite3 *db, write_op op, const write_args *a, i64 *result, char **pzErr) {
  int own = 0;
  int rc = txn_begin(db, &own, pzErr);
  if (rc == SQLITE_OK) rc = txn_end(db, own, op(db, a, result, pzErr), pzErr);
  return rc;
}

/* Run op in one transaction and give its INTEGER result, or its error, to ctx. */
static void run_write(sqlite3_context *ctx, write_op op, const write_args *a) {
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  char *zErr = NULL;
  i64 result = 0;
  int rc = run_txn(db, op, a, &result, &zErr);
  if (rc == SQLITE_OK)
    sqlite3_result_int64(ctx, result);
  else
    result_error(ctx, a->fn, rc, zErr);
  sqlite3_free(zErr);
}

static int vectors_op(sqlite3 *db, const write_args *a, i64 *result, char **pzErr) {
  knn_index ix = {0};
  int rc = knn_index_open(db, a->fn, a->table, &ix, pzErr);
  *result = ix.n_vectors;
  knn_index_clear(&ix);
  return rc;
}

static int resume_op(sqlite3 *db, const write_args *a, i64 *result, char **pzErr) {
  int same = 0, rc = knn_ivf_resumable(db, a->table, a->column, &a->opts, &same);
  (void)pzErr;
  *result = same;
  return rc;
}

/* An IVF build: trained in one transaction, then filled a batch per
** transaction, so that an interrupted build continues where it stopped
** when it is run again with the same options (inside the caller's
** transaction, each is a savepoint of it). */
static void build_ivf(sqlite3_context *ctx, write_args *a) {
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  char *zErr = NULL;
  i64 result = 0, same = 0;
  int rc = run_txn(db, resume_op, a, &same, &zErr);
  a->max_rows = knn_ivf_batch_rows();
  if (rc == SQLITE_OK && !same) rc = run_txn(db, build_op, a, &result, &zErr);
  else result = a->max_rows;
  while (rc == SQLITE_OK && result >= a->max_rows)
    rc = run_txn(db, sync_op, a, &result, &zErr);
  if (rc == SQLITE_OK) rc = run_txn(db, vectors_op, a, &result, &zErr);
  if (rc == SQLITE_OK)
    sqlite3_result_int64(ctx, result);
  else
    result_error(ctx, a->fn, rc, zErr);
  sqlite3_free(zErr);
}

/* Parse build options: a JSON object of INTEGERs {"lists": N, "nprobe": P,
** "sample": S, "iterations": I}; NULL = none. Unknown keys are errors. */
static int parse_build_options(sqlite3_context *ctx, const char *fn, sqlite3_value *v,
                               knn_build_opts *o) {
  static const char *const keys[7] = {"lists",   "nprobe", "sample", "iterations",
                                      "storage", "rerank", "dim"};
  sqlite3 *db = sqlite3_context_db_handle(ctx);
  sqlite3_stmt *st = NULL;
  char *msg = NULL;
  int rc;
  memset(o, 0, sizeof *o);
  if (sqlite3_value_type(v) == SQLITE_NULL) return 1;
  if (sqlite3_value_type(v) != SQLITE_TEXT)
    return arg_error(ctx, fn,
                     sqlite3_mprintf("%s: options (argument 4) must be a JSON object as TEXT, "
                                     "found %s",
                                     fn, fv_type_name(sqlite3_value_type(v))));
  rc = sqlite3_prepare_v2(db,
                          "SELECT json_type(?1), key, type, value FROM json_each(?1) "
                          "WHERE json_type(?1) = 'object'",
                          -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_value(st, 1, v);
    while (!msg && (rc = sqlite3_step(st)) == SQLITE_ROW) {
      const char *key = (const char *)sqlite3_column_text(st, 1);
      const char *type = (const char *)sqlite3_column_text(st, 2);
      i64 value = sqlite3_column_int64(st, 3);
      int k = 0;
      while (k < 7 && !(key && strcmp(key, keys[k]) == 0)) k++;
      if (k == 7) {
        msg = sqlite3_mprintf("%s: unknown option '%s'; expected lists, nprobe, sample, "
                              "iterations, storage, rerank or dim",
                              fn, key ? key : "");
      } else if (k == 6) {
        if (!type || strcmp(type, "integer") != 0 || value < 1 ||
            value > KNN_MAX_CHUNK_BYTES / (64 * 4))
          msg = sqlite3_mprintf("%s: option dim must be an integer between 1 and %d", fn,
                                KNN_MAX_CHUNK_BYTES / (64 * 4));
        else
          o->dim = value;
      } else if (k == 4) {
        const char *name = (const char *)sqlite3_column_text(st, 3);
        if (type && strcmp(type, "text") == 0 && name && strcmp(name, "float32") == 0)
          o->storage = KNN_STORE_F32;
        else if (type && strcmp(type, "text") == 0 && name && strcmp(name, "float16") == 0)
          o->storage = KNN_STORE_F16;
        else if (type && strcmp(type, "text") == 0 && name && strcmp(name, "int8") == 0)
          o->storage = KNN_STORE_I8;
        else
          msg = sqlite3_mprintf("%s: option storage must be \"float32\", \"float16\" or "
                                "\"int8\", found %s",
                                fn, name ? name : "null");
      } else if (k == 5) {
        if (!type || strcmp(type, "integer") != 0 || value < 0 || value > KNN_MAX_RERANK)
          msg = sqlite3_mprintf("%s: option rerank must be an integer between 0 and %d", fn,
                                KNN_MAX_RERANK);
        else
          o->rerank = value;
      } else if (k == 1 && type && strcmp(type, "integer") == 0 && value < 1) {
        /* as a query refuses it: the index's default nprobe is measured when unset */
        msg = sqlite3_mprintf("%s: nprobe must be >= 1, found %lld", fn, value);
      } else if (!type || strcmp(type, "integer") != 0 || value < 0 ||
               (k == 0 && value > KNN_MAX_LISTS) || (k == 3 && value > 1000))
        msg = sqlite3_mprintf("%s: option %s must be an integer between %d and %d", fn, key,
                              k == 1, k == 0 ? KNN_MAX_LISTS : k == 3 ? 1000 : 2147483647);
      else if (k == 0) o->lists = value;
      else if (k == 1) o->nprobe = value;
      else if (k == 2) o->sample = value;
      else o->iterations = value;
    }
    if (rc == SQLITE_DONE) rc = SQLITE_OK;
  }
  if (!msg && rc != SQLITE_OK)
    msg = sqlite3_mprintf("%s: options (argument 4) must be a JSON object: %s", fn,
                          sqlite3_errmsg(db));
  if (!msg) {
    /* json_each of a non-object gives no rows: say so. */
    sqlite3_reset(st);
    if (sqlite3_step(st) != SQLITE_ROW) {
      sqlite3_stmt *t = NULL;
      int is_obj = 0;
      if (sqlite3_prepare_v2(db, "SELECT json_type(?1) = 'object'", -1, &t, NULL) ==
          SQLITE_OK) {
        sqlite3_bind_value(t, 1, v);
        is_obj = sqlite3_step(t) == SQLITE_ROW && sqlite3_column_int(t, 0);
      }
      sqlite3_finalize(t);
      if (!is_obj)
        msg = sqlite3_mprintf("%s: options (argument 4) must be a JSON object", fn);
    }
  }
  sqlite3_finalize(st);
  if (msg) return arg_error(ctx, fn, msg);
  return 1;
}

/*
** facevec_knn_build(table [, column [, chunk_size [, options]]]) -> INTEGER vectors indexed
** facevec_knn_create(table [, column [, chunk_size]]) -> 0 (fill with _sync)
** Drop any index on table first. column defaults to 'embedding'; chunk_size
** (slots per chunk, a multiple of 64 up to 65536) to about 2 MiB of vectors.
** Errors: NULL or non-TEXT names, no such table/column, no INTEGER PRIMARY
** KEY, a row whose vector is malformed or of another dimension.
*/
static void build_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  write_args a = {0};
  a.fill = sqlite3_user_data(ctx) != NULL;
  a.fn = a.fill ? "facevec_knn_build" : "facevec_knn_create";
  a.column = "embedding";
  if (!(a.table = text_arg(ctx, a.fn, "table", argv, 0))) return;
  if (argc > 1 && !(a.column = text_arg(ctx, a.fn, "column", argv, 1))) return;
  if (argc > 3 && !parse_build_options(ctx, a.fn, argv[3], &a.opts)) return;
  if (argc > 4 && sqlite3_value_type(argv[4]) != SQLITE_NULL) {
    if (sqlite3_value_type(argv[4]) != SQLITE_BLOB || a.opts.lists < 1) {
      arg_error(ctx, a.fn,
                sqlite3_mprintf("%s: centroids (argument 5) must be a BLOB of float32 "
                                "centroids, with option lists, found %s",
                                a.fn, fv_type_name(sqlite3_value_type(argv[4]))));
      return;
    }
    a.opts.centroids = sqlite3_value_blob(argv[4]);
    a.opts.centroids_bytes = sqlite3_value_bytes(argv[4]);
  }
  if (argc > 2 && !(argc > 3 && sqlite3_value_type(argv[2]) == SQLITE_NULL)) {
    if (!int_arg(ctx, a.fn, "chunk_size", argv, 2, &a.chunk_size)) return;
    if (a.chunk_size < 64 || a.chunk_size > KNN_MAX_CHUNK || a.chunk_size % 64) {
      arg_error(ctx, a.fn,
                sqlite3_mprintf("%s: chunk_size must be a multiple of 64 between 64 and %d, "
                                "found %lld",
                                a.fn, KNN_MAX_CHUNK, a.chunk_size));
      return;
    }
  }
  if (a.opts.lists > 0 && a.fill) {
    build_ivf(ctx, &a);
    return;
  }
  if (a.opts.lists > 0) { /* create: trained here, filled by facevec_knn_sync */
    i64 same = 0;
    char *zErr = NULL;
    int rc = run_txn(sqlite3_context_db_handle(ctx), resume_op, &a, &same, &zErr);
    if (rc == SQLITE_OK && same) {
      sqlite3_result_int64(ctx, 0);
      return;
    }
    sqlite3_free(zErr);
  }
  run_write(ctx, build_op, &a);
}

/*
** facevec_knn_sync(table [, max_rows]) -> INTEGER rows processed
** Applies logged changes of table (then continues an unfinished build), at
** most max_rows (> 0; default all) source rows, in one transaction. A result
** below max_rows means the index is up to date.
*/
static void sync_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  write_args a = {.fn = "facevec_knn_sync", .max_rows = -1};
  if (!(a.table = text_arg(ctx, a.fn, "table", argv, 0))) return;
  if (argc > 1) {
    if (!int_arg(ctx, a.fn, "max_rows", argv, 1, &a.max_rows)) return;
    if (a.max_rows <= 0) {
      arg_error(ctx, a.fn,
                sqlite3_mprintf("%s: max_rows must be positive, found %lld", a.fn, a.max_rows));
      return;
    }
  }
  run_write(ctx, sync_op, &a);
}

/* facevec_knn_drop(table) -> 1 if an index was dropped, 0 if there was none.
** Call it in a statement of its own: SQLite refuses DROP TABLE while another
** statement of the connection reads. */
static void drop_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  write_args a = {.fn = "facevec_knn_drop"};
  (void)argc;
  if (!(a.table = text_arg(ctx, a.fn, "table", argv, 0))) return;
  run_write(ctx, drop_op, &a);
}

/* Status fields of the IVF option, added to *json: lists (0: exact), the
** default nprobe, the rows the centroids were trained for, list sizes (min,
** max, mean), imbalance (lists * sum(size^2) / vectors^2: 1 when even),
** unlisted (vectors appended since training, in mixed chunks), and whether
** a retrain (facevec_knn_build again, `facevec reindex`) would help. */
static int status_ivf(sqlite3 *db, const char *fn, const knn_index *ix, char **json,
                      char **pzErr) {
  sqlite3_stmt *st = NULL;
  i64 *sizes = NULL, unlisted = 0, lo = 0, hi = 0;
  double sq = 0, imbalance = 0;
  const char *reason = NULL;
  int rc = SQLITE_OK;
  if (ix->lists > 0) {
    sizes = sqlite3_malloc64((sqlite3_uint64)ix->lists * sizeof(i64));
    if (!sizes) return SQLITE_NOMEM;
    rc = knn_ivf_sizes(db, fn, ix, sizes, &unlisted, pzErr);
    if (rc == SQLITE_OK) {
      lo = hi = sizes[0];
      for (i64 i = 0; i < ix->lists; i++) {
        if (sizes[i] < lo) lo = sizes[i];
        if (sizes[i] > hi) hi = sizes[i];
        sq += (double)sizes[i] * (double)sizes[i];
      }
      if (ix->n_vectors > 0)
        imbalance = (double)ix->lists * sq / ((double)ix->n_vectors * (double)ix->n_vectors);
      if (ix->building)
        reason = NULL; /* an unfinished build: its chunks are not all written */
      else if (ix->n_vectors > 2 * ix->trained)
        reason = "the index has grown to more than twice the vectors it was trained on";
      else if (2 * ix->n_vectors < ix->trained)
        reason = "the index holds less than half the vectors it was trained on";
      else if (5 * unlisted > ix->n_vectors)
        reason = "more than a fifth of the vectors were added since training";
      else if (imbalance > 5)
        reason = "its lists are uneven (imbalance above 5)";
    }
  }
  if (rc == SQLITE_OK && ix->lists == 0)
    rc = sqlite3_prepare_v2(db, "SELECT json_set(?1, '$.lists', ?2)", -1, &st, NULL);
  else if (rc == SQLITE_OK)
    rc = sqlite3_prepare_v2(db,
                            "SELECT json_set(?1, '$.lists', ?2, '$.nprobe', ?3, '$.trained', "
                            "?4, '$.list_min', ?5, '$.list_max', ?6, '$.list_mean', ?7, "
                            "'$.imbalance', ?8, '$.unlisted', ?9, '$.retrain', json(?10), "
                            "'$.retrain_reason', ?11)",
                            -1, &st, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_bind_text(st, 1, *json, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, ix->lists);
    if (ix->lists > 0) sqlite3_bind_int64(st, 3, ix->nprobe);
    sqlite3_bind_int64(st, 4, ix->trained);
    sqlite3_bind_int64(st, 5, lo);
    sqlite3_bind_int64(st, 6, hi);
    sqlite3_bind_double(st, 7, ix->lists ? (double)ix->n_vectors / (double)ix->lists : 0);
    sqlite3_bind_double(st, 8, imbalance);
    sqlite3_bind_int64(st, 9, unlisted);
    sqlite3_bind_text(st, 10, reason ? "true" : "false", -1, SQLITE_STATIC);
    if (reason) sqlite3_bind_text(st, 11, reason, -1, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
      char *out = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
      if (!out) {
        rc = SQLITE_NOMEM;
      } else {
        sqlite3_free(*json);
        *json = out;
      }
    } else {
      rc = SQLITE_ERROR;
      knn_db_error(db, pzErr);
    }
  } else if (rc != SQLITE_NOMEM && !*pzErr) {
    knn_db_error(db, pzErr);
  }
  sqlite3_finalize(st);
  sqlite3_free(sizes);
  return rc;
}

/* The first rows an IVF build left out, as a JSON array of {rowid, reason}
** (*out NULL when it left none out). */
static int skipped_list(sqlite3 *db, const knn_index *ix, char **out) {
  sqlite3_stmt *st = NULL;
  *out = NULL;
  if (knn_prepare(db, &st, NULL,
                  "SELECT json_group_array(json_object('rowid', rid, 'reason', reason)) FROM "
                  "(SELECT rid, reason FROM \"main\".\"%w%s\" ORDER BY rid LIMIT 10)",
                  ix->tbl, knn_build_suffix[2]) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0)) {
    *out = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
    if (!*out) {
      sqlite3_finalize(st);
      return SQLITE_NOMEM;
    }
  }
  sqlite3_finalize(st);
  return SQLITE_OK;
}

/* facevec_knn_cache_size() -> INTEGER, the process's budget of chunks kept
** in memory in bytes; facevec_knn_cache_size(bytes) sets it first (0: keep
** none; chunks kept beyond it are freed). NULL leaves it as it is; a value
** that is not an INTEGER >= 0 is an error. */
static void format_number(char *buf, size_t cap, sqlite3_value *v);

static void cache_size_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  sqlite3_int64 bytes = -1;
  if (argc == 1 && sqlite3_value_type(argv[0]) != SQLITE_NULL) {
    if (sqlite3_value_type(argv[0]) != SQLITE_INTEGER || sqlite3_value_int64(argv[0]) < 0) {
      char found[64];
      int type = sqlite3_value_type(argv[0]);
      if (type == SQLITE_INTEGER || type == SQLITE_FLOAT)
        format_number(found, sizeof found, argv[0]);
      else
        snprintf(found, sizeof found, "%s", fv_type_name(type));
      char *msg = sqlite3_mprintf("facevec_knn_cache_size: bytes must be an INTEGER >= 0, "
                                  "found %s",
                                  found);
      sqlite3_result_error(ctx, msg ? msg : "facevec_knn_cache_size: bad bytes", -1);
      sqlite3_free(msg);
      return;
    }
    bytes = sqlite3_value_int64(argv[0]);
  }
  sqlite3_result_int64(ctx, knn_chunk_cache_budget(bytes));
}

/* facevec_knn_cache_status() -> TEXT JSON object: the budget, the bytes and
** chunks kept, and the chunk look-ups served from memory (hits) or not. */
static void cache_status_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  sqlite3_int64 bytes, chunks, hits, misses, budget = knn_chunk_cache_budget(-1);
  (void)argc;
  (void)argv;
  knn_chunk_cache_stats(&bytes, &chunks, &hits, &misses);
  char *json = sqlite3_mprintf("{\"budget\":%lld,\"bytes\":%lld,\"chunks\":%lld,"
                               "\"hits\":%lld,\"misses\":%lld}",
                               budget, bytes, chunks, hits, misses);
  if (!json) {
    sqlite3_result_error_nomem(ctx);
    return;
  }
  sqlite3_result_text(ctx, json, -1, sqlite3_free);
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
  sqlite3_stmt *pin = NULL;
  int rc, trig = 0;
  (void)argc;
  memset(&ix, 0, sizeof ix);
  if (!(tbl = text_arg(ctx, fn, "table", argv, 0))) return;
  /* One snapshot for every read below, as in knn_search: a statement left
  ** open on the schema holds the read transaction, so another connection
  ** committing meanwhile cannot show us the description of one state and
  ** the chunks or log of another (which would look like a corrupt index). */
  rc = sqlite3_prepare_v2(db, "PRAGMA main.schema_version", -1, &pin, NULL);
  if (rc == SQLITE_OK && sqlite3_step(pin) != SQLITE_ROW) rc = sqlite3_errcode(db);
  if (rc != SQLITE_OK) knn_db_error(db, &zErr);
  if (rc == SQLITE_OK) rc = knn_index_load(db, fn, tbl, &ix, &zErr);
  if (rc == SQLITE_NOTFOUND) {
    sqlite3_finalize(pin);
    sqlite3_result_null(ctx);
    return;
  }
  /* Missing triggers are reported, not an error: status is how one finds out. */
  if (rc == SQLITE_OK) rc = knn_index_check(db, fn, &ix, &trig, &zErr);
  if (rc == SQLITE_OK) {
    i64 chunks = ix.n_chunks;
    i64 pending = knn_count(db, "SELECT count(*) FROM \"main\".\"%w_fvknn_log\"", ix.tbl);
    i64 slots = ix.n_slots;
    /* SQLite's json_object escapes the names, whatever characters they hold. */
    sqlite3_stmt *st = NULL;
    rc = sqlite3_prepare_v2(db,
                            "SELECT json_object('table', ?1, 'column', ?2, 'dim', ?3, "
                            "'chunk_size', ?4, 'chunks', ?5, 'slots', ?6, 'vectors', ?7, "
                            "'pending', ?8, 'building', json(?9), 'triggers', json(?10), "
                            "'storage', ?11, 'rerank', ?12, 'skipped', ?13, 'skipped_rows', "
                            "json(?14), 'build_done', ?15, 'build_total', ?16)",
                            -1, &st, NULL);
    i64 work_done = 0, work_total = 0, skipped = 0;
    char *skipped_rows = NULL;
    if (rc == SQLITE_OK) rc = knn_ivf_progress(db, &ix, &work_done, &work_total, &skipped);
    if (rc == SQLITE_OK) rc = skipped_list(db, &ix, &skipped_rows);
    if (rc == SQLITE_OK) {
      sqlite3_bind_int64(st, 13, skipped);
      sqlite3_bind_text(st, 14, skipped_rows ? skipped_rows : "[]", -1, SQLITE_TRANSIENT);
      if (ix.building && ix.lists > 0) {
        sqlite3_bind_int64(st, 15, work_done);
        sqlite3_bind_int64(st, 16, work_total);
      }
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
      sqlite3_bind_text(st, 11,
                        ix.storage == KNN_STORE_I8    ? "int8"
                        : ix.storage == KNN_STORE_F16 ? "float16"
                                                      : "float32",
                        -1, SQLITE_STATIC);
      sqlite3_bind_int64(st, 12, ix.rerank);
      sqlite3_free(skipped_rows);
      if (sqlite3_step(st) == SQLITE_ROW) {
        json = sqlite3_mprintf("%s", sqlite3_column_text(st, 0));
        if (!json) rc = SQLITE_NOMEM;
      } else {
        rc = sqlite3_errcode(db) == SQLITE_OK ? SQLITE_ERROR : sqlite3_errcode(db);
        knn_db_error(db, &zErr);
      }
    } else {
      knn_db_error(db, &zErr);
    }
    sqlite3_finalize(st);
  }
  if (rc == SQLITE_OK) rc = status_ivf(db, fn, &ix, &json, &zErr);
  sqlite3_finalize(pin);
  if (rc == SQLITE_OK) {
    sqlite3_result_text(ctx, json, -1, sqlite3_free);
  } else {
    sqlite3_free(json);
    result_error(ctx, fn, rc, zErr);
  }
  sqlite3_free(zErr);
  knn_index_clear(&ix);
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
  KNN_COL_NPROBE,
  KNN_COL_QUERY_NO, /* output: the query's index in a batch (0 for one query) */
  KNN_N_ARGS = 6
};

/* Most query vectors in one batch. */
#define KNN_MAX_BATCH 100000

typedef struct knn_vtab {
  sqlite3_vtab base;
  sqlite3 *db;
  knn_cache cache; /* this connection's last checked index */
  int batch;       /* facevec_knn_batch: the query is an array of vectors */
} knn_vtab;

typedef struct knn_cursor {
  sqlite3_vtab_cursor base;
  knn_result *results; /* one per query */
  size_t n_results;
  size_t q, i; /* current row: row i of results[q] */
} knn_cursor;

static int knnConnect(sqlite3 *db, void *aux, int argc, const char *const *argv,
                      sqlite3_vtab **ppVtab, char **pzErr) {
  knn_vtab *v;
  int rc;
  (void)argc;
  (void)argv;
  (void)pzErr;
  rc = sqlite3_declare_vtab(db,
                            "CREATE TABLE x(distance REAL, rank INTEGER, collection HIDDEN, "
                            "query HIDDEN, k HIDDEN, metric HIDDEN, threshold HIDDEN, "
                            "nprobe HIDDEN, query_no HIDDEN)");
  /* It reads any table and costs a scan: never from a view or trigger of
  ** the file (see the security model at the top). */
  if (rc == SQLITE_OK) rc = sqlite3_vtab_config(db, SQLITE_VTAB_DIRECTONLY);
  if (rc != SQLITE_OK) return rc;
  v = sqlite3_malloc(sizeof *v);
  if (!v) return SQLITE_NOMEM;
  memset(v, 0, sizeof *v);
  v->db = db;
  v->batch = aux != NULL;
  *ppVtab = &v->base;
  return SQLITE_OK;
}

static int knnDisconnect(sqlite3_vtab *pVtab) {
  knn_cache_clear(&((knn_vtab *)pVtab)->cache);
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
  /* Rows come out ordered by distance, then rowid (and so by rank); a
  ** batch's by query_no first. */
  int first = ((knn_vtab *)pVtab)->batch ? 1 : 0;
  if (info->nOrderBy >= 1 + first && info->nOrderBy <= 2 + first) {
    int ok = !first || (info->aOrderBy[0].iColumn == KNN_COL_QUERY_NO && !info->aOrderBy[0].desc);
    for (int i = first; i < info->nOrderBy && ok; i++) {
      const struct sqlite3_index_orderby *o = &info->aOrderBy[i];
      if (o->desc) ok = 0;
      else if (i == first) ok = o->iColumn == KNN_COL_DISTANCE || o->iColumn == KNN_COL_RANK;
      else ok = o->iColumn == -1 || o->iColumn == KNN_COL_RANK;
    }
    if (ok) info->orderByConsumed = 1;
  } else if (first && info->nOrderBy == 1 && info->aOrderBy[0].iColumn == KNN_COL_QUERY_NO &&
             !info->aOrderBy[0].desc) {
    info->orderByConsumed = 1;
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
  for (size_t q = 0; q < c->n_results; q++) knn_result_clear(&c->results[q]);
  sqlite3_free(c->results);
  c->results = NULL;
  c->n_results = 0;
  c->q = c->i = 0;
}

static int knnClose(sqlite3_vtab_cursor *cur) {
  cursor_reset((knn_cursor *)cur);
  sqlite3_free(cur);
  return SQLITE_OK;
}

/* Hand zErr (sqlite3_malloc'd; NULL = out of memory) to the vtab. */
static int vtab_take_error(sqlite3_vtab *pVtab, char *zErr) {
  if (!zErr) return SQLITE_NOMEM;
  sqlite3_free(pVtab->zErrMsg);
  pVtab->zErrMsg = zErr;
  return SQLITE_ERROR;
}

/* A numeric value as a person would write it: "-1", "-0.5", "-Inf". */
static void format_number(char *buf, size_t cap, sqlite3_value *v) {
  double x = sqlite3_value_double(v);
  if (sqlite3_value_type(v) == SQLITE_INTEGER) {
    snprintf(buf, cap, "%lld", (long long)sqlite3_value_int64(v));
  } else if (isinf(x)) {
    snprintf(buf, cap, "%sInf", x < 0 ? "-" : "");
  } else {
    for (int prec = 15; prec <= 17; prec++) { /* fewest digits that read back */
      snprintf(buf, cap, "%.*g", prec, x);
      if (strtod(buf, NULL) == x) break;
    }
  }
}

/* facevec_knn's arguments, parsed: the request, and the query vector it
** points to (owned when parsed from JSON; else it points into the BLOB
** argument, which lives as long as the xFilter call). */
typedef struct knn_args {
  knn_request req;
  knn_query_spec *specs; /* n_queries */
  fv_vector *vectors;    /* n_queries */
} knn_args;

static void knn_args_free(knn_args *a) {
  for (size_t i = 0; a->vectors && i < a->req.n_queries; i++) fv_vector_free(&a->vectors[i]);
  sqlite3_free(a->vectors);
  sqlite3_free(a->specs);
  memset(a, 0, sizeof *a);
}

/* The query argument as one vector or, a JSON array of arrays, a batch:
** each inner array parsed by the one vector parser. */
static int parse_queries(const fv_arg *query, int allow_batch, knn_args *a, char **pzErr) {
  char err[FV_ERR_MAX];
  const char *text = query->data;
  size_t n = 0, pos = 0, len = query->nbytes;
  int batch = 0;
  if (query->type == SQLITE_TEXT && allow_batch) {
    while (pos < len && (text[pos] == ' ' || text[pos] == '\t' || text[pos] == '\n' ||
                         text[pos] == '\r'))
      pos++;
    if (pos < len && text[pos] == '[') {
      size_t p = pos + 1;
      while (p < len && (text[p] == ' ' || text[p] == '\t' || text[p] == '\n' ||
                         text[p] == '\r'))
        p++;
      batch = p < len && text[p] == '[';
    }
  }
  if (batch) /* count the inner arrays */
    for (size_t p = pos + 1; p < len; p++)
      if (text[p] == '[') n++;
  if (!batch) n = 1;
  if (n == 0 || n > KNN_MAX_BATCH) {
    *pzErr = sqlite3_mprintf("facevec_knn: a batch holds 1 to %d query vectors, found %lld",
                             KNN_MAX_BATCH, (i64)n);
    return SQLITE_ERROR;
  }
  a->specs = sqlite3_malloc64((sqlite3_uint64)n * sizeof *a->specs);
  a->vectors = sqlite3_malloc64((sqlite3_uint64)n * sizeof *a->vectors);
  if (!a->specs || !a->vectors) return SQLITE_NOMEM;
  memset(a->specs, 0, n * sizeof *a->specs);
  memset(a->vectors, 0, n * sizeof *a->vectors);
  a->req.n_queries = n;
  if (!batch) {
    int t = fv_vector_parse("facevec_knn", "query (argument 2)", query, &a->vectors[0], err);
    if (t == FV_ARG_NOMEM) return SQLITE_NOMEM;
    if (t != FV_ARG_OK) {
      *pzErr = sqlite3_mprintf("%s", err);
      return SQLITE_ERROR;
    }
  } else {
    size_t p = pos + 1, q = 0;
    for (;;) {
      while (p < len && text[p] != '[' && text[p] != ']') {
        if (!(text[p] == ' ' || text[p] == '\t' || text[p] == '\n' || text[p] == '\r' ||
              (text[p] == ',' && q > 0)))
          break;
        p++;
      }
      if (p < len && text[p] == ']' && q == n) {
        p++;
        while (p < len && (text[p] == ' ' || text[p] == '\t' || text[p] == '\n' ||
                           text[p] == '\r'))
          p++;
        if (p == len) break;
      }
      if (p >= len || text[p] != '[' || q >= n) {
        *pzErr = sqlite3_mprintf("facevec_knn: query (argument 2) is not a JSON array of "
                                 "vectors (at character %lld)",
                                 (i64)p);
        return SQLITE_ERROR;
      }
      size_t end = p;
      while (end < len && text[end] != ']') end++;
      if (end >= len) {
        *pzErr = sqlite3_mprintf("facevec_knn: query (argument 2) is not a JSON array of "
                                 "vectors (unterminated vector %lld)",
                                 (i64)q);
        return SQLITE_ERROR;
      }
      fv_arg one = {.type = SQLITE_TEXT, .data = text + p, .nbytes = end - p + 1};
      char label[64];
      snprintf(label, sizeof label, "query %lld of the batch", (long long)q);
      int t = fv_vector_parse("facevec_knn", label, &one, &a->vectors[q], err);
      if (t == FV_ARG_NOMEM) return SQLITE_NOMEM;
      if (t != FV_ARG_OK) {
        *pzErr = sqlite3_mprintf("%s", err);
        return SQLITE_ERROR;
      }
      if (q > 0 && a->vectors[q].n != a->vectors[0].n) {
        *pzErr = sqlite3_mprintf("facevec_knn: query %lld of the batch has %lld dimensions, "
                                 "query 0 has %lld",
                                 (i64)q, (i64)a->vectors[q].n, (i64)a->vectors[0].n);
        return SQLITE_ERROR;
      }
      q++;
      p = end + 1;
    }
  }
  for (size_t i = 0; i < n; i++) a->specs[i].vector = a->vectors[i].v;
  a->req.queries = a->specs;
  a->req.dim = a->vectors[0].n;
  return SQLITE_OK;
}

/* Parse the hidden arguments (collection, query, k, metric, threshold) that
** idxNum says argv holds. Errors go to *pzErr. */
static int knn_args_parse(int idxNum, int argc, sqlite3_value **argv, int batch,
                          knn_args *a, char **pzErr) {
  static const char *const arg_name[KNN_N_ARGS] = {"collection", "query", "k", "metric",
                                                   "threshold", "nprobe"};
  sqlite3_value *arg[KNN_N_ARGS] = {0};
  fv_arg query;
  knn_query_spec one;
  int t, ai = 0;
  memset(a, 0, sizeof *a);
  memset(&one, 0, sizeof one);
  a->req.metric = FV_EUCLIDEAN;
  for (int i = 0; i < KNN_N_ARGS && ai < argc; i++)
    if (idxNum & (1 << i)) arg[i] = argv[ai++];

  for (int i = 0; i < 3; i++) {
    if (!arg[i] || sqlite3_value_type(arg[i]) == SQLITE_NULL) {
      *pzErr = sqlite3_mprintf("facevec_knn: %s (argument %d) is %s", arg_name[i], i + 1,
                               arg[i] ? "NULL" : "missing");
      return SQLITE_ERROR;
    }
  }
  /* collection */
  if (sqlite3_value_type(arg[0]) != SQLITE_TEXT) {
    *pzErr = sqlite3_mprintf("facevec_knn: collection (argument 1) must be a table name, "
                             "found %s",
                             fv_type_name(sqlite3_value_type(arg[0])));
    return SQLITE_ERROR;
  }
  a->req.table = name_value(arg[0], "facevec_knn", "collection (argument 1)", pzErr);
  if (!a->req.table) return *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
  /* k: any INTEGER up to 2^63-1 means "at most k"; the search allocates per
  ** row seen, not per k. */
  if (sqlite3_value_type(arg[2]) != SQLITE_INTEGER) {
    *pzErr = sqlite3_mprintf("facevec_knn: k (argument 3) must be an INTEGER, found %s",
                             fv_type_name(sqlite3_value_type(arg[2])));
    return SQLITE_ERROR;
  }
  one.k = sqlite3_value_int64(arg[2]);
  if (one.k < 1) {
    *pzErr = sqlite3_mprintf("facevec_knn: k must be >= 1, found %lld", one.k);
    return SQLITE_ERROR;
  }
  /* metric */
  if (arg[3] && sqlite3_value_type(arg[3]) != SQLITE_NULL) {
    const char *name = name_value(arg[3], "facevec_knn", "metric (argument 4)", pzErr);
    size_t i, nm = sizeof metric_names / sizeof metric_names[0];
    if (!name) return *pzErr ? SQLITE_ERROR : SQLITE_NOMEM;
    for (i = 0; i < nm; i++)
      if (sqlite3_stricmp(name, metric_names[i].name) == 0) break;
    if (i == nm) {
      *pzErr = sqlite3_mprintf("facevec_knn: unknown metric '%s'; expected euclidean, "
                               "euclidean_squared, cosine or euclidean_l2",
                               name);
      return SQLITE_ERROR;
    }
    a->req.metric = metric_names[i].metric;
  }
  /* threshold: NULL or +infinity for no limit, else a number >= 0 */
  if (arg[4] && (t = sqlite3_value_type(arg[4])) != SQLITE_NULL) {
    double thr = sqlite3_value_double(arg[4]);
    if (t != SQLITE_INTEGER && t != SQLITE_FLOAT) {
      *pzErr = sqlite3_mprintf("facevec_knn: threshold (argument 5) must be a number, "
                               "found %s",
                               fv_type_name(t));
      return SQLITE_ERROR;
    }
    /* SQLite stores a NaN as NULL, but a threshold must never compare false
    ** silently. */
    if (isnan(thr)) {
      *pzErr = sqlite3_mprintf("facevec_knn: threshold must be a number, found NaN");
      return SQLITE_ERROR;
    }
    if (thr < 0) {
      char found[32];
      format_number(found, sizeof found, arg[4]);
      *pzErr = sqlite3_mprintf("facevec_knn: threshold must be >= 0, found %s", found);
      return SQLITE_ERROR;
    }
    one.has_threshold = !isinf(thr);
    one.threshold = thr;
  }
  /* nprobe: NULL for the index's default, else an INTEGER >= 1 */
  if (arg[5] && (t = sqlite3_value_type(arg[5])) != SQLITE_NULL) {
    if (t != SQLITE_INTEGER) {
      *pzErr = sqlite3_mprintf("facevec_knn: nprobe (argument 6) must be an INTEGER, found %s",
                               fv_type_name(t));
      return SQLITE_ERROR;
    }
    a->req.nprobe = sqlite3_value_int64(arg[5]);
    if (a->req.nprobe < 1) {
      *pzErr = sqlite3_mprintf("facevec_knn: nprobe must be >= 1, found %lld", a->req.nprobe);
      return SQLITE_ERROR;
    }
  }
  /* query: the one vector parser, as the scalar functions read theirs */
  query.type = sqlite3_value_type(arg[1]);
  query.data = query.type == SQLITE_TEXT   ? (const void *)sqlite3_value_text(arg[1])
               : query.type == SQLITE_BLOB ? sqlite3_value_blob(arg[1])
                                           : NULL;
  query.nbytes = (size_t)sqlite3_value_bytes(arg[1]);
  if (query.type == SQLITE_TEXT && !query.data) return SQLITE_NOMEM;
  t = parse_queries(&query, batch, a, pzErr);
  if (t != SQLITE_OK) return t;
  for (size_t i = 0; i < a->req.n_queries; i++) {
    const float *v = a->specs[i].vector;
    a->specs[i] = one;
    a->specs[i].vector = v;
  }
  return SQLITE_OK;
}

/*
** facevec_knn(collection, query, k [, metric [, threshold]])
** k: an INTEGER >= 1, up to 2^63-1, meaning "at most k" rows. threshold:
** NULL or +infinity for no limit, else a number >= 0.
** Errors: a missing or NULL collection, query or k; k not an INTEGER >= 1;
** an unknown metric; a threshold that is not a number, NaN or negative; a
** query that is not a float32 BLOB / JSON array, holds NaN or infinity, has
** another dimension than the index, or (cosine, euclidean_l2) has norm 0; no
** index on the table, or a damaged one; a live row whose distance is
** undefined (norm 0, NaN).
*/
static int knnFilter(sqlite3_vtab_cursor *cur, int idxNum, const char *idxStr, int argc,
                     sqlite3_value **argv) {
  knn_cursor *c = (knn_cursor *)cur;
  sqlite3_vtab *pVtab = cur->pVtab;
  knn_args args;
  char *zErr = NULL;
  int rc;
  (void)idxStr;
  cursor_reset(c);
  rc = knn_args_parse(idxNum, argc, argv, ((knn_vtab *)pVtab)->batch, &args, &zErr);
  if (rc == SQLITE_OK) {
    c->results = sqlite3_malloc64((sqlite3_uint64)args.req.n_queries * sizeof *c->results);
    if (!c->results) rc = SQLITE_NOMEM;
  }
  if (rc == SQLITE_OK) {
    c->n_results = args.req.n_queries;
    rc = knn_search(((knn_vtab *)pVtab)->db, &args.req, c->results,
                    &((knn_vtab *)pVtab)->cache, &zErr);
  }
  knn_args_free(&args);
  c->q = c->i = 0;
  while (c->q < c->n_results && c->results[c->q].n == 0) c->q++;
  if (rc == SQLITE_NOMEM || !zErr) {
    sqlite3_free(zErr);
    return rc;
  }
  return vtab_take_error(pVtab, zErr);
}

static int knnNext(sqlite3_vtab_cursor *cur) {
  knn_cursor *c = (knn_cursor *)cur;
  if (++c->i >= c->results[c->q].n) {
    c->i = 0;
    c->q++;
    while (c->q < c->n_results && c->results[c->q].n == 0) c->q++;
  }
  return SQLITE_OK;
}

static int knnEof(sqlite3_vtab_cursor *cur) {
  knn_cursor *c = (knn_cursor *)cur;
  return c->q >= c->n_results;
}

static int knnColumn(sqlite3_vtab_cursor *cur, sqlite3_context *ctx, int col) {
  knn_cursor *c = (knn_cursor *)cur;
  switch (col) {
    case KNN_COL_DISTANCE: sqlite3_result_double(ctx, c->results[c->q].dist[c->i]); break;
    case KNN_COL_RANK: sqlite3_result_int64(ctx, (i64)c->i + 1); break;
    case KNN_COL_QUERY_NO: sqlite3_result_int64(ctx, (i64)c->q); break;
    default: sqlite3_result_null(ctx); break; /* hidden arguments */
  }
  return SQLITE_OK;
}

static int knnRowid(sqlite3_vtab_cursor *cur, sqlite3_int64 *pRowid) {
  knn_cursor *c = (knn_cursor *)cur;
  *pRowid = (sqlite3_int64)c->results[c->q].ids[c->i];
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
      {"facevec_knn_build", 3, build_func, 1},  {"facevec_knn_build", 4, build_func, 1},
      {"facevec_knn_build", 5, build_func, 1},
      {"facevec_knn_create", 1, build_func, 0},
      {"facevec_knn_create", 2, build_func, 0}, {"facevec_knn_create", 3, build_func, 0},
      {"facevec_knn_create", 4, build_func, 0}, {"facevec_knn_create", 5, build_func, 0},
      {"facevec_knn_sync", 1, sync_func, 0},    {"facevec_knn_sync", 2, sync_func, 0},
      {"facevec_knn_drop", 1, drop_func, 0},    {"facevec_knn_status", 1, status_func, 0},
      {"facevec_knn_cache_size", 0, cache_size_func, 0},
      {"facevec_knn_cache_size", 1, cache_size_func, 0},
      {"facevec_knn_cache_status", 0, cache_status_func, 0},
  };
  /* They write the database (or read arbitrary tables): never from triggers
  ** or views of an untrusted schema. */
  const int flags = SQLITE_UTF8 | SQLITE_DIRECTONLY;
  int rc;
  rc = sqlite3_create_module(db, "facevec_knn", &knn_module, NULL);
  /* The same search for many query vectors: a JSON array of vectors, each
  ** answered in the same pass over the chunks; rows ordered by query_no. */
  if (rc == SQLITE_OK)
    rc = sqlite3_create_module(db, "facevec_knn_batch", &knn_module, (void *)&knn_module);
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof fns / sizeof fns[0]; i++)
    rc = sqlite3_create_function_v2(db, fns[i].name, fns[i].nargs, flags,
                                    fns[i].fill ? (void *)&knn_module : NULL, fns[i].fn,
                                    NULL, NULL, NULL);
  return rc;
}
