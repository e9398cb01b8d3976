/*
** codes.h - compressed vectors: float16 and int8 codes, and the kernels that
** score a float32 query against them without decoding them first.
**
** Pure C, no SQLite: the knn index stores its chunks as these codes
** (knn_store.c) and ranks them with these kernels (knn_search.c); the cffi
** module exposes them for tests.
**
** float16: IEEE half precision, rounded to nearest even; finite values beyond
** the half range are clamped to +-65504. int8: per dimension j, a minimum
** lo[j] and a positive scale s[j] (params = dim minima, then dim scales); the
** code of x is round((x - lo[j]) / s[j]) clamped to 0..255 (NaN: 0), its value
** lo[j] + s[j] * code.
**
** The kernels use the instruction set distance.c chose (fv_isa(): AVX-512,
** AVX2+FMA+F16C, NEON, or portable C; fv_force_scalar applies to them too).
** Decoding float16 is exact in every one; decoding int8 rounds lo + s * code
** once (fused multiply-add) or twice (portable C). A squared distance to codes is a float32
** sum taken in another order (and with fused multiply-adds) by each
** instruction set: they agree to float32 rounding, not bit for bit. The knn
** index only ranks candidates by them, and re-ranks the candidates exactly.
*/
#ifndef FACEVEC_CODES_H
#define FACEVEC_CODES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* cffi: begin */
/* Kinds of code (the knn index's storage numbers). */
#define FV_CODE_F16 1
#define FV_CODE_I8 2

/* n vectors of dim floats (src) to codes of kind (dst: n * dim codes). params:
** the int8 minima and scales (2 * dim floats), NULL for float16. */
void fv_codes_encode(int kind, const float *params, const float *src, size_t n, size_t dim,
                     void *dst);
/* n coded vectors back to floats (dst: n * dim floats), exactly. */
void fv_codes_decode(int kind, const float *params, const void *src, size_t n, size_t dim,
                     float *dst);
/* The query as fv_codes_l2sq_rows takes it (dim floats into prep): for int8,
** q - lo; for float16, q itself. */
void fv_codes_query(int kind, const float *params, const float *q, size_t dim, float *prep);
/* Squared euclidean distance from the query (prep, from fv_codes_query) to
** each of the n_rows coded rows (row-major, dim codes each) into out[n_rows],
** as float32 sums: sum((decoded - q)^2), an int8 element's difference taken
** as s[j] * code - prep[j]. Codes may sit at any byte offset. */
void fv_codes_l2sq_rows(int kind, const float *params, const float *prep, const void *codes,
                        size_t n_rows, size_t dim, float *out);
/* cffi: end */

#ifdef __cplusplus
}
#endif
#endif /* FACEVEC_CODES_H */
