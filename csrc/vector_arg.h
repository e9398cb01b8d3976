/*
** vector_arg.h - reading SQL function arguments as vectors, with the error
** messages of facevec's SQL functions.
**
** Pure C, no SQLite: the SQLite extension (sqlite3_facevec.c, knn_sql.c) and
** the Python fallback (facevec/bindings/fallback.py, through cffi: the block
** between the cffi markers is its declarations) both call these, so both
** loading paths give the same results and the same messages.
*/
#ifndef FACEVEC_VECTOR_ARG_H
#define FACEVEC_VECTOR_ARG_H

#include <stddef.h>

#include "facevec.h"

#ifdef __cplusplus
extern "C" {
#endif

/* cffi: begin */
/* Value types, numbered as SQLite's fundamental datatypes. */
#define FV_TYPE_INTEGER 1
#define FV_TYPE_FLOAT 2
#define FV_TYPE_TEXT 3
#define FV_TYPE_BLOB 4
#define FV_TYPE_NULL 5

/* Outcome of the functions below. */
#define FV_ARG_OK 0
#define FV_ARG_ERROR 1 /* message in err */
#define FV_ARG_NOMEM 2

/* Room for any message these functions write. */
#define FV_ERR_MAX 256

/* A function argument as the caller received it. */
typedef struct fv_arg {
  int type;         /* FV_TYPE_* */
  const void *data; /* BLOB bytes or TEXT (UTF-8, not necessarily terminated) */
  size_t nbytes;
} fv_arg;

/* A vector read from an argument: points into the BLOB, or into owned
** memory (parsed JSON) that fv_vector_free releases. */
typedef struct fv_vector {
  const float *v;
  size_t n;
  float *owned;
} fv_vector;

/* Read argument argno (1-based, for messages) of SQL function fn as a vector:
** a non-empty BLOB whose length is a multiple of 4 (float32), or TEXT holding
** a non-empty JSON array of numbers. Other types are an error; callers handle
** NULL before calling. The messages read "<fn>: argument <argno> ...". */
int fv_vector_from_arg(const char *fn, int argno, const fv_arg *arg,
                       fv_vector *out, char *err);
void fv_vector_free(fv_vector *v);

/* metric m between two vectors of fn, checking that dimensions agree.
** FV_NEGATIVE_INNER_PRODUCT gives -(a.b); callers wanting a.b negate it. */
int fv_pair_distance(const char *fn, fv_metric m, const fv_vector *a,
                     const fv_vector *b, double *out, char *err);

/* JSON text of a vector ("[0.1,-2,3.5e-08]"), each float32 written with the
** fewest digits that read back to the same float. Returns a malloc'd string
** (length in *len) or NULL with err set (NaN/infinity) or err[0] == 0 (no
** memory). */
char *fv_vector_to_json(const char *fn, const fv_vector *v, size_t *len,
                        char *err);
/* cffi: end */

/* The one vector parser: fv_vector_from_arg with the value named by subject
** in the messages ("<fn>: <subject> ..."), e.g. "query (argument 2)" or
** "face_meta row 9: embedding". The vector may point into arg's bytes,
** unaligned. */
int fv_vector_parse(const char *fn, const char *subject, const fv_arg *arg,
                    fv_vector *out, char *err);

/* "INTEGER", "REAL", "TEXT", "BLOB" or "NULL" for an FV_TYPE_* (which are
** SQLite's type numbers). */
const char *fv_type_name(int type);

#ifdef __cplusplus
}
#endif
#endif /* FACEVEC_VECTOR_ARG_H */
