/*
** fuzz_sql_functions.c - libFuzzer target for facevec's SQL functions.
**
** Build and run with fuzz/run.sh. The extension's sources are compiled with
** -DSQLITE_CORE, so sqlite3ext.h's API macros become direct calls into the
** linked libsqlite3 and sqlite3_facevec_init registers on our own connection.
**
** Each input is
**   byte 0  which statement: every SQL function, one row or two rows (the
**           second row reuses auxdata cached from constant arguments);
**   byte 1  bits 0-2 type of argument 1, bits 3-5 type of argument 2,
**           bit 6 portable C kernels instead of SIMD;
**   byte 2  where the rest splits into argument 1 and argument 2;
**   rest    the two arguments' bytes.
** Argument types: BLOB (bound SQLITE_STATIC, so the pointer is the fuzzer's
** exact-size, unaligned buffer and ASan sees any over-read), TEXT, JSON built
** from the bytes read as float32, INTEGER, REAL, NULL, a BLOB one byte into
** the buffer, and zeroblob.
** Statements also query facevec_knn, with the bytes as query, k, metric,
** threshold and collection name.
** The same bytes also go straight to the C kernels: fv_parse_json with a
** short output buffer, and fv_distances / fv_top_k over them as a matrix.
*/
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "facevec.h"
#include "sqlite3.h"

int sqlite3_facevec_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi);

static const char *const STATEMENTS[] = {
    "SELECT euclidean_distance(?1, ?2)",
    "SELECT euclidean_distance_squared(?1, ?2)",
    "SELECT cosine_distance(?1, ?2)",
    "SELECT euclidean_l2_distance(?1, ?2)",
    "SELECT inner_product(?1, ?2)",
    "SELECT vector_dims(?1), vector_dims(?2)",
    "SELECT vector_to_json(?1), vector_to_json(?2)",
    "SELECT vector_from_json(?1), vector_from_json(?2)",
    "SELECT sqrt(?1), sqrt(?2)",
    "SELECT vector_to_json(vector_from_json(?1)), euclidean_distance(vector_from_json(?1), ?2)",
    "SELECT euclidean_distance(?1, ?2), cosine_distance(?2, ?1) FROM (SELECT 1 UNION ALL SELECT 2)",
    "SELECT euclidean_l2_distance(?1, ?2), inner_product(?1, ?1) FROM (SELECT 1 UNION ALL SELECT 2)",
    ("SELECT euclidean_distance(?1, x), cosine_distance(x, ?2) "
     "FROM (SELECT ?1 AS x UNION ALL SELECT ?2 UNION ALL SELECT '[1,2,3]')"),
    "SELECT facevec_version(), facevec_isa(), typeof(?1), typeof(?2)",
    /* facevec_knn over the table t that LLVMFuzzerInitialize fills and indexes. */
    "SELECT rowid, distance, rank FROM facevec_knn('t', ?1, 5)",
    "SELECT rowid, distance FROM facevec_knn('t', ?1, ?2)",
    "SELECT rowid, distance FROM facevec_knn('t', ?1, 400, ?2)",
    "SELECT rowid, distance FROM facevec_knn('t', ?1, 3, 'cosine', ?2)",
    "SELECT rowid FROM facevec_knn(?2, ?1, 3)",
    "SELECT facevec_knn_status(?1), facevec_knn_status(?2)",
};
#define N_STATEMENTS (sizeof STATEMENTS / sizeof STATEMENTS[0])

static sqlite3 *db;
static sqlite3_stmt *stmts[N_STATEMENTS];
static volatile unsigned checksum; /* results are read into it */

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char *err = NULL;
  (void)argc;
  (void)argv;
  if (sqlite3_open(":memory:", &db) != SQLITE_OK) abort();
  if (sqlite3_facevec_init(db, &err, NULL) != SQLITE_OK) {
    fprintf(stderr, "sqlite3_facevec_init: %s\n", err ? err : "?");
    abort();
  }
  /* 300 4-d vectors in chunks of 64, and one change still in the log. */
  static const char *const setup =
      "CREATE TABLE t(id INTEGER PRIMARY KEY, embedding BLOB);"
      "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)"
      " INSERT INTO t SELECT i, vector_from_json('[' || (i % 7) || ',' || (i % 11 - 5)"
      " || ',' || (i % 3) || ',1]') FROM n;"
      "SELECT facevec_knn_build('t', 'embedding', 64);"
      "INSERT INTO t(embedding) VALUES (vector_from_json('[1,2,3,4]'));";
  if (sqlite3_exec(db, setup, NULL, NULL, &err) != SQLITE_OK) {
    fprintf(stderr, "setup: %s\n", err ? err : "?");
    abort();
  }
  for (size_t i = 0; i < N_STATEMENTS; i++) {
    if (sqlite3_prepare_v2(db, STATEMENTS[i], -1, &stmts[i], NULL) != SQLITE_OK) {
      fprintf(stderr, "prepare %s: %s\n", STATEMENTS[i], sqlite3_errmsg(db));
      abort();
    }
  }
  return 0;
}

/* JSON array of the bytes read as float32 (finite values only), in a malloc'd
** string; most of the time a valid vector, so the distance code runs. */
static char *json_of_floats(const uint8_t *p, size_t n) {
  size_t count = n / 4, used = 0;
  char *out = malloc(count * 32 + 3);
  if (!out) abort();
  out[used++] = '[';
  for (size_t i = 0; i < count; i++) {
    float x;
    memcpy(&x, p + 4 * i, 4);
    if (!isfinite(x)) x = (float)i;
    used += (size_t)sprintf(out + used, "%s%.9g", i ? "," : "", (double)x);
  }
  out[used++] = ']';
  out[used] = 0;
  return out;
}

static void bind(sqlite3_stmt *stmt, int i, int type, const uint8_t *p, size_t n,
                 char **owned) {
  switch (type) {
    case 0:
      sqlite3_bind_blob(stmt, i, n ? p : (const void *)"", (int)n, SQLITE_STATIC);
      break;
    case 1:
      sqlite3_bind_text(stmt, i, n ? (const char *)p : "", (int)n, SQLITE_STATIC);
      break;
    case 2: {
      int64_t v = 0;
      memcpy(&v, p, n < 8 ? n : 8);
      sqlite3_bind_int64(stmt, i, v);
      break;
    }
    case 3: {
      double v = 0;
      memcpy(&v, p, n < 8 ? n : 8);
      sqlite3_bind_double(stmt, i, v);
      break;
    }
    case 4:
      sqlite3_bind_null(stmt, i);
      break;
    case 5:
      *owned = json_of_floats(p, n);
      sqlite3_bind_text(stmt, i, *owned, -1, SQLITE_STATIC);
      break;
    case 6:
      if (n > 0)
        sqlite3_bind_blob(stmt, i, p + 1, (int)(n - 1), SQLITE_STATIC);
      else
        sqlite3_bind_blob(stmt, i, "", 0, SQLITE_STATIC);
      break;
    default:
      sqlite3_bind_zeroblob(stmt, i, (int)(n % 64));
      break;
  }
}

/* The kernels directly, on the same bytes. */
static void fuzz_kernels(const uint8_t *p, size_t n, uint8_t knob) {
  size_t err_pos = 0;
  float small[4];
  /* Counting pass, then a pass into a buffer that may be too short. */
  fv_parse_json((const char *)p, n, NULL, 0, &err_pos);
  fv_parse_json((const char *)p, n, small, knob % 5, &err_pos);

  size_t dim = (size_t)(knob % 17) + 1;
  size_t rows = n / 4 / dim;
  if (rows < 2) return;
  /* Row 0 is the query, rows 1.. the matrix, read in place: the fuzzer's
  ** buffer is unaligned and exactly sized, so ASan sees any over-read. */
  const float *m = (const float *)(const void *)p;
  float *out = malloc(rows * sizeof(float));
  int64_t *idx = malloc(rows * sizeof(int64_t));
  if (!out || !idx) abort();
  int64_t bad = 0;
  size_t found = 0;
  for (int metric = 0; metric <= 5; metric++) { /* 5: not a metric */
    fv_distances((fv_metric)metric, m, m + dim, rows - 1, dim, out, &bad);
    size_t k = (size_t)(knob >> 4) % rows + 1;
    int rc = fv_top_k((fv_metric)metric, m, m + dim, rows - 1, dim, k, idx, out, &found, &bad);
    if (rc == FV_OK) {
      if (found != (k < rows - 1 ? k : rows - 1)) abort();
      for (size_t i = 0; i < found; i++)
        if (idx[i] < 0 || (size_t)idx[i] >= rows - 1) abort();
    }
  }
  free(out);
  free(idx);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 3) return 0;
  sqlite3_stmt *stmt = stmts[data[0] % N_STATEMENTS];
  int type_a = data[1] & 7, type_b = (data[1] >> 3) & 7;
  fv_force_scalar((data[1] >> 6) & 1);
  const uint8_t *rest = data + 3;
  size_t n = size - 3;
  size_t split = n * data[2] / 255;
  char *owned_a = NULL, *owned_b = NULL;

  bind(stmt, 1, type_a, rest, split, &owned_a);
  bind(stmt, 2, type_b, rest + split, n - split, &owned_b);
  int rc;
  while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
    for (int c = 0; c < sqlite3_column_count(stmt); c++) {
      int type = sqlite3_column_type(stmt, c);
      /* vector_dims is positive; vector_from_json's BLOB whole float32s. */
      if (stmt == stmts[5] && type != SQLITE_NULL && sqlite3_column_int64(stmt, c) < 1) abort();
      if (stmt == stmts[7] && type == SQLITE_BLOB && sqlite3_column_bytes(stmt, c) % 4) abort();
      /* Read every byte of every result, so a bad length or pointer shows. */
      const unsigned char *t = sqlite3_column_blob(stmt, c);
      int len = sqlite3_column_bytes(stmt, c);
      for (int j = 0; t && j < len; j++) checksum += t[j];
    }
  }
  if (rc != SQLITE_DONE && rc != SQLITE_ERROR && rc != SQLITE_TOOBIG) abort();
  if (rc == SQLITE_ERROR) {
    /* Every error names the function it comes from (or is SQLite's own). */
    const char *msg = sqlite3_errmsg(db);
    if (!msg || !*msg) abort();
  }
  sqlite3_reset(stmt);
  sqlite3_clear_bindings(stmt);
  free(owned_a);
  free(owned_b);

  fuzz_kernels(rest, n, data[2]);
  fv_force_scalar(0);
  return 0;
}
