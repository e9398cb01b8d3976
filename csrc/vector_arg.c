/*
** vector_arg.c - SQL function arguments as vectors; see vector_arg.h.
*/
#include "vector_arg.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *fv_type_name(int type) {
  switch (type) {
    case FV_TYPE_INTEGER: return "INTEGER";
    case FV_TYPE_FLOAT: return "REAL";
    case FV_TYPE_TEXT: return "TEXT";
    case FV_TYPE_BLOB: return "BLOB";
    case FV_TYPE_NULL: return "NULL";
  }
  return "an unknown type";
}

int fv_vector_parse(const char *fn, const char *subject, const fv_arg *arg, fv_vector *out,
                    char *err) {
  out->v = NULL;
  out->n = 0;
  out->owned = NULL;
  if (arg->type == FV_TYPE_BLOB) {
    if (arg->nbytes == 0) {
      snprintf(err, FV_ERR_MAX, "%s: %s is an empty BLOB, expected float32 values", fn,
               subject);
      return FV_ARG_ERROR;
    }
    if (arg->nbytes % 4 != 0) {
      snprintf(err, FV_ERR_MAX,
               "%s: %s: invalid float32 vector BLOB length, must be divisible by 4, "
               "found %zu bytes",
               fn, subject, arg->nbytes);
      return FV_ARG_ERROR;
    }
    out->v = (const float *)arg->data;
    out->n = arg->nbytes / 4;
    return FV_ARG_OK;
  }
  if (arg->type == FV_TYPE_TEXT) {
    const char *text = (const char *)arg->data;
    size_t pos = 0;
    long n = fv_parse_json(text, arg->nbytes, NULL, 0, &pos);
    if (n < 0) {
      snprintf(err, FV_ERR_MAX, "%s: %s: malformed JSON array of numbers at character %zu",
               fn, subject, pos);
      return FV_ARG_ERROR;
    }
    if (n == 0) {
      snprintf(err, FV_ERR_MAX, "%s: %s is an empty JSON array", fn, subject);
      return FV_ARG_ERROR;
    }
    out->owned = (float *)malloc((size_t)n * sizeof(float));
    if (!out->owned) return FV_ARG_NOMEM;
    if (fv_parse_json(text, arg->nbytes, out->owned, (size_t)n, &pos) != n) {
      /* Only a number beyond float32's range fails the second pass. */
      free(out->owned);
      out->owned = NULL;
      snprintf(err, FV_ERR_MAX, "%s: %s: number out of float32 range at character %zu", fn,
               subject, pos);
      return FV_ARG_ERROR;
    }
    out->v = out->owned;
    out->n = (size_t)n;
    return FV_ARG_OK;
  }
  snprintf(err, FV_ERR_MAX,
           "%s: %s must be a float32 vector BLOB or a JSON array TEXT, found %s", fn, subject,
           fv_type_name(arg->type));
  return FV_ARG_ERROR;
}

int fv_vector_from_arg(const char *fn, int argno, const fv_arg *arg, fv_vector *out,
                       char *err) {
  char subject[32];
  snprintf(subject, sizeof subject, "argument %d", argno);
  return fv_vector_parse(fn, subject, arg, out, err);
}

void fv_vector_free(fv_vector *v) {
  free(v->owned);
  v->owned = NULL;
  v->v = NULL;
  v->n = 0;
}

int fv_pair_distance(const char *fn, fv_metric m, const fv_vector *a, const fv_vector *b,
                     double *out, char *err) {
  if (a->n != b->n) {
    snprintf(err, FV_ERR_MAX,
             "%s: vectors have different dimensions: %zu and %zu", fn, a->n, b->n);
    return FV_ARG_ERROR;
  }
  int rc = fv_distance(m, a->v, b->v, a->n, out);
  if (rc == FV_ZERO_NORM) {
    snprintf(err, FV_ERR_MAX, "%s: undefined for a vector whose norm is 0", fn);
    return FV_ARG_ERROR;
  }
  if (rc != FV_OK) {
    snprintf(err, FV_ERR_MAX, "%s: unknown metric %d", fn, (int)m);
    return FV_ARG_ERROR;
  }
  if (isnan(*out)) {
    snprintf(err, FV_ERR_MAX, "%s: result is NaN: a vector holds NaN or infinity", fn);
    return FV_ARG_ERROR;
  }
  return FV_ARG_OK;
}

/* Shortest "%.*g" that reads back as the same float32 (at most 9 digits). */
static int format_float(char *buf, size_t cap, float x) {
  int len = 0;
  for (int prec = 6; prec <= 9; prec++) {
    len = snprintf(buf, cap, "%.*g", prec, (double)x);
    if (strtof(buf, NULL) == x) break;
  }
  return len;
}

char *fv_vector_to_json(const char *fn, const fv_vector *v, size_t *len, char *err) {
  err[0] = 0;
  /* "-1.23456789e-38," is 16 characters; 24 leaves room. */
  size_t cap = v->n * 24 + 3, used = 0;
  char *out = (char *)malloc(cap);
  if (!out) return NULL;
  out[used++] = '[';
  for (size_t i = 0; i < v->n; i++) {
    float x;
    memcpy(&x, v->v + i, sizeof x);
    if (!isfinite(x)) {
      free(out);
      snprintf(err, FV_ERR_MAX,
               "%s: element %zu is %s, which JSON cannot represent", fn, i,
               isnan(x) ? "NaN" : "infinite");
      return NULL;
    }
    if (i) out[used++] = ',';
    used += (size_t)format_float(out + used, cap - used, x);
  }
  out[used++] = ']';
  out[used] = 0;
  *len = used;
  return out;
}
