/*
** sqlite3_facevec.c - facevec's SQL functions and the extension entry point.
**
** Load it from the sqlite3 shell with `.load ./facevec0` (the entry point is
** sqlite3_facevec_init), or from Python with facevec.load(conn).
**
** Vector arguments are BLOBs of little-endian float32 (numpy's
** astype('float32').tobytes()) or TEXT JSON arrays of numbers.
**
** Error contract of every vector function:
**   - any NULL argument gives NULL;
**   - any other non-vector type, an empty BLOB or JSON array, a BLOB length
**     not divisible by 4, malformed JSON, or vectors of different dimensions
**     is an SQL error whose message names the function and what it found;
**   - a NaN result (a vector holding NaN or infinity) is an error, not NULL.
**
** Security model: what the schema of a database file may call.
** A database file may come from anyone, and its views, triggers, CHECK
** constraints, generated columns and index expressions run whenever the
** application touches them. So:
**   - Schema objects may call the pure functions only: euclidean_distance,
**     euclidean_distance_squared, cosine_distance, euclidean_l2_distance,
**     inner_product, vector_dims, vector_to_json, vector_from_json, sqrt,
**     facevec_version and facevec_isa. They are SQLITE_DETERMINISTIC |
**     SQLITE_INNOCUOUS: they read nothing but their arguments, allocate no
**     more than their arguments' size, and change nothing, so they also run
**     under PRAGMA trusted_schema=OFF.
**   - Everything of the knn index is SQLITE_DIRECTONLY: the facevec_knn
**     table-valued function (sqlite3_vtab_config) and facevec_knn_build,
**     _create, _sync, _drop and _status. They read and write other tables,
**     can run long and allocate per row, so only SQL the application
**     prepares itself may call them; from a view or trigger SQLite refuses
**     with "unsafe use of ...".
**   - The triggers facevec_knn_build adds to a table are plain SQL that call
**     no function, so writes log their changes with trusted_schema=OFF too.
**   - Every number the knn code reads from its own tables (counts,
**     dimension, chunk sizes, slots, bitmaps, rowid arrays, blob lengths) is
**     checked before use: a damaged index is an SQL error that names the
**     table and asks for a rebuild, never a wrong answer or a memory error.
**   - Table and column names are quoted identifiers looked up in schema
**     "main" only (a TEMP table cannot stand in); a name holding a NUL
**     character is an error.
*/
#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT1

#define FACEVEC_MIN_SQLITE 3033000
#define FACEVEC_MIN_SQLITE_TEXT "3.33.0"

#include <math.h>
#include <stdlib.h>

#include "facevec.h"
#include "knn.h"
#include "vector_arg.h"

/* Read argument i as a vector. A JSON TEXT argument that is constant for the
** statement (the usual `?` query vector) is parsed once and kept as the
** argument's auxdata; *cache_json is set when out->owned should be handed to
** sqlite3_set_auxdata once the caller is done with it. */
static int vector_arg(sqlite3_context *ctx, const char *fn, sqlite3_value **argv, int i,
                      fv_vector *out, int *cache_json) {
  char err[FV_ERR_MAX];
  fv_arg arg;
  *cache_json = 0;
  arg.type = sqlite3_value_type(argv[i]);
  if (arg.type == SQLITE_TEXT) {
    fv_vector *cached = (fv_vector *)sqlite3_get_auxdata(ctx, i);
    if (cached) {
      out->v = cached->v;
      out->n = cached->n;
      out->owned = NULL;
      return SQLITE_OK;
    }
    arg.data = sqlite3_value_text(argv[i]);
    arg.nbytes = (size_t)sqlite3_value_bytes(argv[i]);
  } else if (arg.type == SQLITE_BLOB) {
    arg.data = sqlite3_value_blob(argv[i]);
    arg.nbytes = (size_t)sqlite3_value_bytes(argv[i]);
  } else {
    arg.data = NULL;
    arg.nbytes = 0;
  }
  if (arg.type == SQLITE_TEXT && arg.data == NULL) {
    sqlite3_result_error_nomem(ctx);
    return SQLITE_NOMEM;
  }
  int rc = fv_vector_from_arg(fn, i + 1, &arg, out, err);
  if (rc == FV_ARG_NOMEM) {
    sqlite3_result_error_nomem(ctx);
    return SQLITE_NOMEM;
  }
  if (rc != FV_ARG_OK) {
    sqlite3_result_error(ctx, err, -1);
    return SQLITE_ERROR;
  }
  *cache_json = out->owned != NULL;
  return SQLITE_OK;
}

static void free_cached_vector(void *p) {
  fv_vector *v = (fv_vector *)p;
  fv_vector_free(v);
  sqlite3_free(v);
}

/* Release vector i, or keep its parsed JSON as auxdata for the next row. */
static void release_vector(sqlite3_context *ctx, int i, fv_vector *v, int cache_json) {
  if (cache_json) {
    fv_vector *keep = (fv_vector *)sqlite3_malloc(sizeof *keep);
    if (keep) {
      *keep = *v;
      v->owned = NULL;
      /* SQLite frees it at once if the argument is not constant. */
      sqlite3_set_auxdata(ctx, i, keep, free_cached_vector);
      return;
    }
  }
  fv_vector_free(v);
}

typedef struct distance_fn {
  const char *name;
  fv_metric metric;
  int negate; /* inner_product is -(negative inner product) */
} distance_fn;

static const distance_fn distance_fns[] = {
    {"euclidean_distance", FV_EUCLIDEAN, 0},
    {"euclidean_distance_squared", FV_EUCLIDEAN_SQUARED, 0},
    {"cosine_distance", FV_COSINE, 0},
    {"euclidean_l2_distance", FV_EUCLIDEAN_L2, 0},
    {"inner_product", FV_NEGATIVE_INNER_PRODUCT, 1},
};

/*
** euclidean_distance(a, b)          sqrt(sum((a-b)^2))
** euclidean_distance_squared(a, b)  sum((a-b)^2)
** cosine_distance(a, b)             1 - a.b/(|a||b|); error if a norm is 0
** euclidean_l2_distance(a, b)       |a/|a| - b/|b||; error if a norm is 0
** inner_product(a, b)               a.b
** -> REAL; NULL if a or b is NULL; errors as in the contract above.
*/
/* The general path: validates every argument and words every error. */
static void distance_checked(sqlite3_context *ctx, const distance_fn *f, sqlite3_value **argv) {
  fv_vector a = {0}, b = {0};
  int cache_a = 0, cache_b = 0;
  char err[FV_ERR_MAX];
  double d;
  if (vector_arg(ctx, f->name, argv, 0, &a, &cache_a) != SQLITE_OK) goto finish;
  if (vector_arg(ctx, f->name, argv, 1, &b, &cache_b) != SQLITE_OK) goto finish;
  if (fv_pair_distance(f->name, f->metric, &a, &b, &d, err) != FV_ARG_OK) {
    sqlite3_result_error(ctx, err, -1);
    goto finish;
  }
  sqlite3_result_double(ctx, f->negate ? -d : d);
finish:
  release_vector(ctx, 0, &a, cache_a);
  release_vector(ctx, 1, &b, cache_b);
}

static void distance_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  const distance_fn *f = (const distance_fn *)sqlite3_user_data(ctx);
  (void)argc;
  int type_a = sqlite3_value_type(argv[0]), type_b = sqlite3_value_type(argv[1]);
  if (type_a == SQLITE_NULL || type_b == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return;
  }
  /* Fast path for the ORDER BY scan: two well-formed BLOBs of one length go
  ** straight to the kernel; anything else, and every error, takes
  ** distance_checked, which validates and words the message. */
  if (type_a == SQLITE_BLOB && type_b == SQLITE_BLOB) {
    const float *pa = sqlite3_value_blob(argv[0]), *pb = sqlite3_value_blob(argv[1]);
    int na = sqlite3_value_bytes(argv[0]), nb = sqlite3_value_bytes(argv[1]);
    if (na == nb && na > 0 && na % 4 == 0) {
      double d;
      int rc = FV_OK;
      if (f->metric == FV_EUCLIDEAN)
        d = sqrt(fv_l2_squared(pa, pb, (size_t)na / 4));
      else
        rc = fv_distance(f->metric, pa, pb, (size_t)na / 4, &d);
      if (rc == FV_OK && !isnan(d)) {
        sqlite3_result_double(ctx, f->negate ? -d : d);
        return;
      }
    }
  }
  distance_checked(ctx, f, argv);
}

/* The start of a one-vector function: a NULL argument gives NULL (returns
** 0), an unreadable one its error (0); else *a holds it (1), and the caller
** releases it with fv_vector_free. */
static int single_vector(sqlite3_context *ctx, const char *fn, sqlite3_value **argv,
                         fv_vector *a) {
  int cache = 0;
  if (sqlite3_value_type(argv[0]) == SQLITE_NULL) {
    sqlite3_result_null(ctx);
    return 0;
  }
  if (vector_arg(ctx, fn, argv, 0, a, &cache) != SQLITE_OK) {
    fv_vector_free(a);
    return 0;
  }
  return 1;
}

/* vector_dims(a) -> INTEGER number of elements; NULL if a is NULL. */
static void vector_dims_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fv_vector a = {0};
  (void)argc;
  if (!single_vector(ctx, "vector_dims", argv, &a)) return;
  sqlite3_result_int64(ctx, (sqlite3_int64)a.n);
  fv_vector_free(&a);
}

/* vector_to_json(a) -> TEXT JSON array; NULL if a is NULL; error if an
** element is NaN or infinite (JSON has no such numbers). */
static void vector_to_json_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fv_vector a = {0};
  char err[FV_ERR_MAX];
  size_t len = 0;
  (void)argc;
  if (!single_vector(ctx, "vector_to_json", argv, &a)) return;
  char *json = fv_vector_to_json("vector_to_json", &a, &len, err);
  if (json)
    sqlite3_result_text64(ctx, json, len, free, SQLITE_UTF8);
  else if (err[0])
    sqlite3_result_error(ctx, err, -1);
  else
    sqlite3_result_error_nomem(ctx);
  fv_vector_free(&a);
}

/* vector_from_json(a) -> float32 BLOB of a JSON array (a BLOB argument is
** checked and returned as it is); NULL if a is NULL. */
static void vector_from_json_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  fv_vector a = {0};
  (void)argc;
  if (!single_vector(ctx, "vector_from_json", argv, &a)) return;
  sqlite3_result_blob64(ctx, a.v, (sqlite3_uint64)a.n * 4, SQLITE_TRANSIENT);
  fv_vector_free(&a);
}

/* sqrt(x) -> REAL, as SQLite's own math function where the build has it:
** NULL for NULL, non-numeric or negative x. */
static void sqrt_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  int type = sqlite3_value_numeric_type(argv[0]);
  if (type != SQLITE_INTEGER && type != SQLITE_FLOAT) {
    sqlite3_result_null(ctx);
    return;
  }
  double x = sqlite3_value_double(argv[0]);
  if (x < 0) {
    sqlite3_result_null(ctx);
    return;
  }
  sqlite3_result_double(ctx, sqrt(x));
}

/* facevec_version() -> TEXT, e.g. "0.1.0". */
static void version_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_text(ctx, FACEVEC_VERSION, -1, SQLITE_STATIC);
}

/* facevec_isa() -> TEXT, the SIMD instruction set in use ("avx2", ...). */
static void isa_func(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  (void)argv;
  sqlite3_result_text(ctx, fv_isa(), -1, SQLITE_STATIC);
}

/* The one symbol the library exports (everything else is compiled hidden). */
#if defined(_WIN32)
__declspec(dllexport)
#elif defined(__GNUC__)
__attribute__((visibility("default")))
#endif
int sqlite3_facevec_init(sqlite3 *db, char **pzErrMsg, const sqlite3_api_routines *pApi) {
  static const struct {
    const char *name;
    int nargs;
    void (*fn)(sqlite3_context *, int, sqlite3_value **);
  } scalar_fns[] = {
      {"vector_dims", 1, vector_dims_func},
      {"vector_to_json", 1, vector_to_json_func},
      {"vector_from_json", 1, vector_from_json_func},
      {"sqrt", 1, sqrt_func},
      {"facevec_version", 0, version_func},
      {"facevec_isa", 0, isa_func},
  };
  const int flags = SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS;
  const char *failed = NULL;
  int rc = SQLITE_OK;
  /* One SQLite per process: the library keeps the routines of the SQLite that
  ** loaded it first, and refuses another copy's (its functions would call the
  ** wrong copy, and two copies break each other's file locks). Built into a
  ** program (SQLITE_CORE), it calls the SQLite it is linked with. */
#ifndef SQLITE_CORE
  if (sqlite3_api && sqlite3_api != pApi) {
    if (pzErrMsg)
      *pzErrMsg = pApi->mprintf(
          "facevec: already serving another copy of SQLite in this process (%s, this one "
          "is %s); two copies of SQLite in one process can corrupt a database: use one "
          "sqlite3 module",
          sqlite3_api->libversion(), pApi->libversion());
    return SQLITE_ERROR;
  }
  /* The oldest SQLite with everything used here (sqlite_schema, innocuous and
  ** direct-only functions, UPDATE ... FROM); newer calls are not compiled in (the
  ** vendored headers are 3.40's). */
  if (pApi->libversion_number() < FACEVEC_MIN_SQLITE) {
    if (pzErrMsg)
      *pzErrMsg = pApi->mprintf("facevec: needs SQLite %s or newer, found %s",
                                FACEVEC_MIN_SQLITE_TEXT, pApi->libversion());
    return SQLITE_ERROR;
  }
#endif
  SQLITE_EXTENSION_INIT2(pApi);

  for (size_t i = 0; rc == SQLITE_OK && i < sizeof distance_fns / sizeof distance_fns[0];
       i++) {
    rc = sqlite3_create_function_v2(db, distance_fns[i].name, 2, flags,
                                    (void *)&distance_fns[i], distance_func, NULL, NULL,
                                    NULL);
    if (rc != SQLITE_OK) failed = distance_fns[i].name;
  }
  for (size_t i = 0; rc == SQLITE_OK && i < sizeof scalar_fns / sizeof scalar_fns[0]; i++) {
    rc = sqlite3_create_function_v2(db, scalar_fns[i].name, scalar_fns[i].nargs, flags,
                                    NULL, scalar_fns[i].fn, NULL, NULL, NULL);
    if (rc != SQLITE_OK) failed = scalar_fns[i].name;
  }
  if (rc == SQLITE_OK) {
    rc = fv_knn_register(db);
    if (rc != SQLITE_OK) failed = "facevec_knn";
  }
  if (rc != SQLITE_OK && pzErrMsg) {
    *pzErrMsg = sqlite3_mprintf("facevec: could not register %s: %s", failed,
                                sqlite3_errstr(rc));
  }
  return rc;
}
