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
** SQL errors are expected (most mutations corrupt the file); a crash, a
** sanitizer report, or a facevec_knn answer that is not sorted, repeats a
** row or exceeds k is a failure. Like fuzz_sql_functions.c, the extension's
** sources are compiled in with -DSQLITE_CORE against the system libsqlite3.
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
  sqlite3_close(db);
  return 0;
}
