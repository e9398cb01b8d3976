"""cffi build script: the C kernels of csrc/, compiled into facevec.bindings._kernels.

setup.py wires it with ``cffi_modules=["facevec/bindings/_ffi_build.py:ffi"]``; the same
C files are compiled into the loadable SQLite extension.
"""

import sys

from cffi import FFI

# Relative to the project root, where setup.py runs.
CSRC = "csrc"

CDEF = """
typedef enum fv_metric {
  FV_EUCLIDEAN_SQUARED = 0,
  FV_EUCLIDEAN = 1,
  FV_COSINE = 2,
  FV_EUCLIDEAN_L2 = 3,
  FV_NEGATIVE_INNER_PRODUCT = 4
} fv_metric;

#define FV_OK 0
#define FV_ZERO_NORM 1
#define FV_MISUSE 2
#define FV_NAN 3

const char *fv_isa(void);
void fv_force_scalar(int on);

int fv_distances(fv_metric m, const float *query, const float *matrix,
                 size_t n_rows, size_t dim, float *out, int64_t *bad_row);
int fv_top_k(fv_metric m, const float *query, const float *matrix,
             size_t n_rows, size_t dim, size_t k, int64_t *out_idx,
             float *out_dist, size_t *n_found, int64_t *bad_row);

#define FV_TYPE_INTEGER 1
#define FV_TYPE_FLOAT 2
#define FV_TYPE_TEXT 3
#define FV_TYPE_BLOB 4
#define FV_TYPE_NULL 5
#define FV_ARG_OK 0
#define FV_ARG_ERROR 1
#define FV_ARG_NOMEM 2
#define FV_ERR_MAX 256

typedef struct fv_arg { int type; const void *data; size_t nbytes; } fv_arg;
typedef struct fv_vector { const float *v; size_t n; float *owned; } fv_vector;

int fv_vector_from_arg(const char *fn, int argno, const fv_arg *arg,
                       fv_vector *out, char *err);
void fv_vector_free(fv_vector *v);
int fv_pair_distance(const char *fn, fv_metric m, const fv_vector *a,
                     const fv_vector *b, double *out, char *err);
char *fv_vector_to_json(const char *fn, const fv_vector *v, size_t *len,
                        char *err);
void free(void *p);
"""

# csrc/batch.h and csrc/kmeans.h: many-query top-k and k-means.
CDEF_BATCH = """
#define FV_NOMEM 4

int fv_top_k_batch(fv_metric m, const float *queries, size_t n_queries,
                   const float *matrix, size_t n_rows, size_t dim, size_t k,
                   double max_distance, int64_t *out_idx, float *out_dist,
                   size_t *n_found, int64_t *bad_query, int64_t *bad_row);
int fv_assign_nearest(fv_metric m, const float *centroids, size_t k, const float *data,
                      size_t n, size_t dim, int64_t *out_assign, float *out_dist,
                      int64_t *bad_row, int64_t *bad_centroid);
int fv_kmeans(fv_metric m, const float *data, size_t n, size_t dim, size_t k,
              unsigned iterations, uint64_t seed, float *out_centroids, int64_t *out_assign,
              int64_t *bad_row);
"""

ffi = FFI()
ffi.cdef(CDEF)
ffi.cdef(CDEF_BATCH)
ffi.set_source(
    "facevec.bindings._kernels",
    '#include "facevec.h"\n#include "vector_arg.h"\n#include "batch.h"\n#include "kmeans.h"\n'
    "#include <stdlib.h>\n",
    sources=[
        f"{CSRC}/distance.c",
        f"{CSRC}/vector_arg.c",
        f"{CSRC}/batch.c",
        f"{CSRC}/kmeans.c",
    ],
    include_dirs=[CSRC],
    extra_compile_args=[] if sys.platform == "win32" else ["-O3", "-Wall", "-Wextra"],
)

if __name__ == "__main__":
    ffi.compile(verbose=True)
