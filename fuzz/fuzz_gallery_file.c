/*
** fuzz_gallery_file.c - libFuzzer target: a damaged or hostile gallery file.
**
** Build and run with `fuzz/run.sh gallery`. Each input is a whole SQLite
** database file; the seeds (fuzz/gallery_seeds/, from make_gallery_seeds.py)
** are small valid facevec galleries with a knn index in each of its states,
** and libFuzzer mutates their bytes. The file is opened in memory
** (sqlite3_deserialize) and gets the statements facevec itself runs on a
** gallery it is handed:
**   - `facevec info`: the collection, the ledger's outcomes, the counts;
**   - `facevec find --strategy knn`: facevec_knn_status, the row count as k,
**     facevec_knn with each metric and a threshold, the face_meta lookup of
**     the ids it returned;
**   - `facevec index` afterwards: facevec_knn_sync, then the search again.
**   - `facevec reindex`: facevec_knn_create, facevec_knn_sync in batches,
**     facevec_knn_status, and the search once more.
** SQL errors are expected (most mutations corrupt the file); a crash, a
** sanitizer report, or a facevec_knn answer that is not sorted, repeats a
** row or exceeds k is a failure. Like fuzz_sql_functions.c, the extension's
** sources are compiled in with -DSQLITE_CORE against the system libsqlite3.
**
** Mutations: half of them are libFuzzer's own, on the file's bytes; the
** other half (LLVMFuzzerCustomMutator) open the file and change one thing a
** forger would, through SQL: a number or name of the index's description, a
** chunk's blobs or id, a rowid map entry, the log, a trigger, or face_meta's
** rows, then write the file back. A byte-level mutation of a 30 KB file
** rarely lands on the few bytes that hold the index's numbers; these do.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sqlite3.h"

int sqlite3_facevec_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

static volatile unsigned checksum; /* results are read into it */

/* Step st to the end, reading every column; returns the final code. */
static int drain(sqlite3_stmt *st) {
  int rc;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(st); c++) {
      const unsigned char *p = sqlite3_column_blob(st, c);
      int n = sqlite3_column_bytes(st, c);
      for (int i = 0; p && i < n; i++) checksum += p[i];
    }
  }
  return rc;
}

/* An error is fine; it must say something. */
static void expect_done_or_error(sqlite3 *db, int rc) {
  if (rc == SQLITE_DONE) return;
  const char *msg = sqlite3_errmsg(db);
  if (!msg || !*msg) abort();
}

static void run(sqlite3 *db, const char *sql) {
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK)
    expect_done_or_error(db, drain(st));
  sqlite3_finalize(st);
}

/* `facevec info` (facevec/pipeline.py info, schema.get_collection). */
static void info(sqlite3 *db) {
  static const char *const statements[] = {
      "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'facevec_collection'",
      ("SELECT name, model_name, dimensions, detector_backend, schema_version, created_at"
       " FROM facevec_collection WHERE name = 'default'"),
      "SELECT outcome, COUNT(*) FROM ingest_ledger GROUP BY outcome",
      "SELECT COUNT(*) FROM face_meta",
      "SELECT COUNT(DISTINCT img_name) FROM face_meta",
      "SELECT COUNT(DISTINCT identity) FROM face_meta",
      "SELECT COALESCE(SUM(faces), 0) FROM ingest_ledger",
      "SELECT MAX(updated_at) FROM ingest_ledger",
  };
  for (size_t i = 0; i < sizeof statements / sizeof statements[0]; i++) run(db, statements[i]);
}

/* `facevec find --strategy knn` (facevec/search.py _knn, facevec/knn.py
** search, pipeline._results_frame). */
static void find_knn(sqlite3 *db, const float *query, int dim, const char *metric,
                     double threshold) {
  sqlite3_stmt *st = NULL;
  int64_t k = 0, ids[64];
  int n_ids = 0, rc;
  run(db, "SELECT facevec_knn_status('face_meta')");
  if (sqlite3_prepare_v2(db, "SELECT COUNT(*) FROM face_meta", -1, &st, NULL) == SQLITE_OK &&
      sqlite3_step(st) == SQLITE_ROW)
    k = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (k < 1) k = 1;
  st = NULL;
  if (sqlite3_prepare_v2(db, "SELECT rowid, distance FROM facevec_knn(?, ?, ?, ?, ?)", -1, &st,
                         NULL) != SQLITE_OK) {
    expect_done_or_error(db, SQLITE_ERROR); /* an unreadable schema */
    return;
  }
  sqlite3_bind_text(st, 1, "face_meta", -1, SQLITE_STATIC);
  sqlite3_bind_blob(st, 2, query, dim * (int)sizeof(float), SQLITE_STATIC);
  sqlite3_bind_int64(st, 3, k);
  sqlite3_bind_text(st, 4, metric, -1, SQLITE_STATIC);
  if (threshold >= 0)
    sqlite3_bind_double(st, 5, threshold);
  else
    sqlite3_bind_null(st, 5);
  double last = -INFINITY;
  int64_t rows = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int64_t rid = sqlite3_column_int64(st, 0);
    double d = sqlite3_column_double(st, 1);
    if (!(d >= last)) abort(); /* ascending, never NaN */
    if (threshold >= 0 && !(d <= threshold)) abort();
    for (int i = 0; i < n_ids; i++)
      if (ids[i] == rid) abort(); /* each row once */
    if (n_ids < 64) ids[n_ids++] = rid;
    last = d;
    rows++;
  }
  if (rows > k) abort();
  expect_done_or_error(db, rc);
  sqlite3_finalize(st);
  /* The face_meta lookup of the ids found. */
  if (n_ids == 0) return;
  st = NULL;
  if (sqlite3_prepare_v2(db,
                         "SELECT id, img_name, identity, face_index, facial_area_x, "
                         "facial_area_y, facial_area_w, facial_area_h FROM face_meta "
                         "WHERE id IN (SELECT value FROM json_each(?))",
                         -1, &st, NULL) == SQLITE_OK) {
    char list[64 * 24] = "[";
    size_t used = 1;
    for (int i = 0; i < n_ids; i++)
      used += (size_t)snprintf(list + used, sizeof list - used, "%s%lld", i ? "," : "",
                               (long long)ids[i]);
    snprintf(list + used, sizeof list - used, "]");
    sqlite3_bind_text(st, 1, list, -1, SQLITE_TRANSIENT);
    expect_done_or_error(db, drain(st));
  }
  sqlite3_finalize(st);
}

/* `facevec reindex` (facevec/knn.py build): create, sync in batches, status. */
static void reindex(sqlite3 *db) {
  sqlite3_stmt *st = NULL;
  run(db, "SELECT facevec_knn_create('face_meta', 'embedding')");
  if (sqlite3_prepare_v2(db, "SELECT facevec_knn_sync('face_meta', 20)", -1, &st, NULL) !=
      SQLITE_OK)
    return;
  for (int i = 0; i < 100; i++) { /* batches until one comes back short */
    int rc = sqlite3_step(st);
    int more = rc == SQLITE_ROW && sqlite3_column_int64(st, 0) == 20;
    expect_done_or_error(db, rc == SQLITE_ROW ? SQLITE_DONE : rc);
    sqlite3_reset(st);
    if (!more) break;
  }
  sqlite3_finalize(st);
  run(db, "SELECT facevec_knn_status('face_meta')");
}

/* Stop statements that run away (a mutated file can hold a deep recursion). */
static int progress(void *steps) {
  return ++*(int *)steps > 2000;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static const char *const metrics[] = {"euclidean", "cosine", "euclidean_l2",
                                        "euclidean_squared"};
  sqlite3 *db = NULL;
  char *err = NULL;
  int steps = 0;
  if (size < 512 || size > (1 << 20)) return 0;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) abort();
  unsigned char *copy = sqlite3_malloc64(size);
  if (!copy) abort();
  memcpy(copy, data, size);
  if (sqlite3_deserialize(db, "main", copy, (sqlite3_int64)size, (sqlite3_int64)size,
                          SQLITE_DESERIALIZE_FREEONCLOSE | SQLITE_DESERIALIZE_RESIZEABLE) !=
      SQLITE_OK) {
    sqlite3_close(db);
    return 0;
  }
  /* As facevec's own connections: a file's schema is not trusted. Writes may
  ** grow the in-memory file only so far. */
  sqlite3_int64 limit = 8 << 20;
  sqlite3_file_control(db, "main", SQLITE_FCNTL_SIZE_LIMIT, &limit);
  sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, NULL);
  sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, NULL);
  sqlite3_progress_handler(db, 1000, progress, &steps);
  if (sqlite3_facevec_init(db, &err, NULL) != SQLITE_OK) abort();

  /* A query of the gallery's dimension (8) from the file's first bytes
  ** after the header, so it varies with the input. */
  float query[8];
  for (int i = 0; i < 8; i++) {
    query[i] = (float)((int)data[100 + i] - 128) / 16.0f;
    if (query[i] == 0.0f) query[i] = 0.5f;
  }
  unsigned pick = data[size - 1];
  info(db);
  steps = 0;
  find_knn(db, query, 8, metrics[pick % 4], (pick & 16) ? 3.0 : -1.0);
  steps = 0;
  run(db, "SELECT facevec_knn_sync('face_meta')");
  steps = 0;
  find_knn(db, query, 8, metrics[(pick >> 2) % 4], -1.0);
  steps = 0;
  reindex(db);
  steps = 0;
  find_knn(db, query, 8, metrics[(pick >> 4) % 4], (pick & 64) ? 0.5 : -1.0);
  if (pick & 128) {
    /* `facevec reindex --lists 3`, then a search and a batch of the IVF index. */
    steps = 0;
    run(db, "SELECT facevec_knn_build('face_meta', 'embedding', NULL, '{\"lists\": 3}')");
    steps = 0;
    find_knn(db, query, 8, metrics[pick % 4], -1.0);
    steps = 0;
    run(db, "SELECT query_no, rowid, distance FROM facevec_knn_batch('face_meta', "
            "'[[1,2,3,4,5,6,7,8],[0.5,0,0,0,0,0,0,-1]]', 5, NULL, NULL, 1)");
  }
  sqlite3_close(db);
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Structure-aware mutations                                                 */

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static uint64_t rng_next(uint64_t *state) { /* splitmix64 */
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

/* An SQL literal a forger might write: boundaries, types, near values. */
static char *forged_value(uint64_t *state) {
  static const char *const values[] = {
      "-1", "0", "1", "2", "3", "7", "8", "9", "63", "64", "65", "127", "128", "4096",
      "8192", "65536", "2147483647", "2147483648", "4611686018427387904",
      "9223372036854775807", "-9223372036854775808", "NULL", "'x'", "''", "1.5", "-0.0",
      "x''", "x'00'", "9e999", "'face_meta'", "'embedding'", "'id'", "'img_name'",
  };
  uint64_t r = rng_next(state);
  if (r % 4 == 0) return sqlite3_mprintf("%lld", (long long)(rng_next(state) % 200) - 20);
  return sqlite3_mprintf("%s", values[r % (sizeof values / sizeof values[0])]);
}

/* One change through SQL, as sqlite3_mprintf'd statement text. */
static char *forged_change(uint64_t *state) {
  static const char *const meta[] = {"dim",       "chunk_size", "tail_chunk", "tail_used",
                                     "n_vectors", "build_next", "format",     "col",
                                     "pk",        "tbl"};
  static const char *const blobs[] = {"valid", "rowids", "vectors"};
  char *value = forged_value(state), *sql = NULL;
  uint64_t r = rng_next(state), n = rng_next(state) % 64, chunk = rng_next(state) % 3 + 1;
  const char *blob = blobs[rng_next(state) % 3];
  switch (r % 14) {
    case 0:
    case 1:
      sql = sqlite3_mprintf("UPDATE facevec_knn_index SET %s = %s", meta[rng_next(state) % 10],
                            value);
      break;
    case 2: /* one byte of a chunk's blob */
      sql = sqlite3_mprintf("UPDATE face_meta_fvknn_chunks SET %s = substr(%s, 1, %llu) || "
                            "x'%02x' || substr(%s, %llu) WHERE id = %llu",
                            blob, blob, (unsigned long long)n * 4,
                            (unsigned)(rng_next(state) & 0xFF), blob,
                            (unsigned long long)n * 4 + 2, (unsigned long long)chunk);
      break;
    case 3: /* a chunk's blob cut, grown, or replaced */
      if ((r >> 8) % 3 == 0)
        sql = sqlite3_mprintf("UPDATE face_meta_fvknn_chunks SET %s = substr(%s, 1, "
                              "length(%s) - 8) WHERE id = %llu",
                              blob, blob, blob, (unsigned long long)chunk);
      else if ((r >> 8) % 3 == 1)
        sql = sqlite3_mprintf("UPDATE face_meta_fvknn_chunks SET %s = %s || zeroblob(8) "
                              "WHERE id = %llu",
                              blob, blob, (unsigned long long)chunk);
      else
        sql = sqlite3_mprintf("UPDATE face_meta_fvknn_chunks SET %s = %s WHERE id = %llu", blob,
                              value, (unsigned long long)chunk);
      break;
    case 4:
      sql = sqlite3_mprintf("UPDATE face_meta_fvknn_chunks SET id = %s WHERE id = %llu", value,
                            (unsigned long long)chunk);
      break;
    case 5:
      sql = sqlite3_mprintf(r & 256 ? "DELETE FROM face_meta_fvknn_chunks WHERE id = %llu"
                                    : "INSERT INTO face_meta_fvknn_chunks SELECT id + 1, valid, "
                                      "rowids, vectors FROM face_meta_fvknn_chunks WHERE id = %llu",
                            (unsigned long long)chunk);
      break;
    case 6:
      sql = sqlite3_mprintf("UPDATE face_meta_fvknn_rowids SET %s = %s WHERE rid = %llu",
                            r & 256 ? "chunk" : "slot", value, (unsigned long long)n);
      break;
    case 7:
      sql = sqlite3_mprintf(r & 256 ? "DELETE FROM face_meta_fvknn_rowids WHERE rid = %llu"
                                    : "INSERT OR REPLACE INTO face_meta_fvknn_rowids "
                                      "VALUES (%llu, 1, 0)",
                            (unsigned long long)n);
      break;
    case 8:
      sql = sqlite3_mprintf(r & 256 ? "INSERT INTO face_meta_fvknn_log(rid) VALUES (%s)"
                                    : "DELETE FROM face_meta_fvknn_log WHERE rid = %s",
                            value);
      break;
    case 9:
      sql = sqlite3_mprintf(r & 256 ? "DROP TRIGGER face_meta_fvknn_%s"
                                    : "UPDATE sqlite_schema SET sql = replace(sql, 'old.', "
                                      "'new.') WHERE name = 'face_meta_fvknn_%s'",
                            (const char *[]){"ins", "del", "upd"}[rng_next(state) % 3]);
      break;
    case 10:
      sql = sqlite3_mprintf("UPDATE face_meta SET embedding = %s WHERE id = %llu",
                            r & 256 ? value : "randomblob(32)", (unsigned long long)n);
      break;
    case 11:
      sql = sqlite3_mprintf(r & 256 ? "DELETE FROM face_meta WHERE id = %llu"
                                    : "UPDATE face_meta SET id = id + 1000 WHERE id = %llu",
                            (unsigned long long)n);
      break;
    case 12:
      sql = sqlite3_mprintf("INSERT INTO face_meta(img_name, face_index, embedding, model_name, "
                            "created_at) VALUES ('forged%llu', 0, %s, 'Facenet', 'now')",
                            (unsigned long long)n, r & 256 ? "randomblob(32)" : value);
      break;
    default:
      sql = sqlite3_mprintf("DELETE FROM face_meta_fvknn_log");
      break;
  }
  sqlite3_free(value);
  return sql;
}

size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size,
                               unsigned int seed) {
  uint64_t state = seed;
  sqlite3 *db = NULL;
  size_t out = 0;
  if (rng_next(&state) % 2 || size < 512) return LLVMFuzzerMutate(data, size, max_size);
  if (sqlite3_open(":memory:", &db) == SQLITE_OK) {
    unsigned char *copy = sqlite3_malloc64(size);
    if (copy) {
      memcpy(copy, data, size);
      if (sqlite3_deserialize(db, "main", copy, (sqlite3_int64)size, (sqlite3_int64)size,
                              SQLITE_DESERIALIZE_FREEONCLOSE |
                                  SQLITE_DESERIALIZE_RESIZEABLE) == SQLITE_OK) {
        sqlite3_db_config(db, SQLITE_DBCONFIG_WRITABLE_SCHEMA, 1, NULL);
        char *sql = forged_change(&state);
        if (sql && sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK) {
          sqlite3_int64 n = 0;
          unsigned char *bytes = sqlite3_serialize(db, "main", &n, 0);
          if (bytes && n > 0 && (size_t)n <= max_size) {
            memcpy(data, bytes, (size_t)n);
            out = (size_t)n;
          }
          sqlite3_free(bytes);
        }
        sqlite3_free(sql);
      }
    }
    sqlite3_close(db);
  }
  return out ? out : LLVMFuzzerMutate(data, size, max_size);
}
