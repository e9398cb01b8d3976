/*
** knn_store.h - the knn index's tables, shared by the search (knn_search.c)
** and the SQL functions (knn_sql.c). Internal to the extension.
*/
#ifndef FACEVEC_KNN_STORE_H
#define FACEVEC_KNN_STORE_H

#include <stddef.h>

#include "codes.h"
#include "sqlite3ext.h"
#include "vector_arg.h"

typedef sqlite3_int64 i64;

#define KNN_INDEX_TABLE "facevec_knn_index"
/* The storage layout of this code, kept in facevec_knn_index.format.
** Format 2: a sealed chunk (one whose slots are all taken: not the tail, or
** the tail once tail_used == chunk_size) may be shorter than chunk_size, a
** multiple of 64 slots, so that an IVF list's last chunk has no room left
** empty. Format 3: every write to the chunks replaces the index's number in
** facevec_knn_generation (knn_generation_bump), so that chunks kept in memory
** (knn_chunk_cache.h) are known to be the file's; earlier formats are read
** as they are, without that cache (an older writer would not change the
** number). Format 1 files (every chunk chunk_size slots) read as they are. */
#define KNN_FORMAT 3
/* The format from which the generation is kept. */
#define KNN_FORMAT_GENERATION 3
#define KNN_GENERATION_TABLE "facevec_knn_generation"
#define KNN_FORMAT_MIN 1
#define KNN_MAX_CHUNK 65536
/* Chunk ids stay below this (2^40 chunks of 64 vectors is beyond any file),
** so that (chunk, slot) fits one int64 as chunk << 16 | slot. */
#define KNN_MAX_CHUNKS ((i64)1 << 40)
/* Largest chunk BLOB (SQLite's default limit on a value is 1e9 bytes). */
#define KNN_MAX_CHUNK_BYTES (256 * 1024 * 1024)
/* Bytes of vectors a query reads at once: small enough to stay in L2. */
#ifndef KNN_BLOCK_BYTES
#define KNN_BLOCK_BYTES (128 * 1024)
#endif
/* Queries from which a search scores whole chunks with the batch kernel
** (fv_top_k_batch screens rows from 12 queries up), and the largest k it
** does so for. */
#define KNN_BATCH_MIN 12
#define KNN_BATCH_MAX_K 1024
/* Queries per call of the batch kernel, and the most excluded rows (deleted,
** pending) a chunk may hold to go through it. */
#define KNN_BATCH_TILE 256
#define KNN_BATCH_MAX_EXCL 256
/* Target bytes of vectors per chunk when chunk_size is not given. */
#define KNN_CHUNK_BYTES (2 * 1024 * 1024)

/* The index's description: one row of facevec_knn_index. */
typedef struct knn_index {
  char *tbl;       /* canonical table name */
  char *col;       /* vector column */
  char *pk;        /* INTEGER PRIMARY KEY column (the rowid) */
  i64 dim;         /* 0 until the first vector is seen */
  i64 chunk_size;  /* slots per chunk, multiple of 64; 0 = choose from dim */
  i64 tail_chunk;  /* id of the chunk being appended to; 0 = none */
  i64 tail_used;   /* slots used in the tail chunk */
  i64 n_vectors;   /* valid slots */
  i64 build_next;  /* rows with rowid >= build_next are not indexed yet */
  int building;    /* build_next is meaningful */
  i64 n_chunks;    /* chunk rows, counted by knn_index_check */
  i64 n_slots;     /* their slots in use, counted by knn_index_check */
  /* IVF (T_fvknn_ivf exists): 0 lists = the exact index. */
  i64 lists;       /* coarse centroids, 1..KNN_MAX_LISTS */
  i64 nprobe;      /* lists a query reads by default, 1..lists */
  i64 trained;     /* vectors the centroids were trained for */
  /* Compressed storage (T_fvknn_quant exists): the chunks' vectors as
  ** float16 or int8 codes; a query ranks them approximately and re-ranks
  ** its candidates exactly from the source table. */
  int storage;     /* KNN_STORE_F32 (no T_fvknn_quant), _F16 or _I8 */
  i64 rerank;      /* candidates re-ranked per query; 0: max(4k, 64) */
  i64 format;      /* facevec_knn_index.format */
} knn_index;

/* The codes' own numbers (codes.h), 0 for plain float32. */
#define KNN_STORE_F32 0
#define KNN_STORE_F16 FV_CODE_F16
#define KNN_STORE_I8 FV_CODE_I8
#define KNN_MAX_RERANK 1000000
/* Slots of a chunk whose valid BLOB is valid_bytes long: its capacity, or
** for the tail its slots in use; -1 when the size is not one a chunk may
** have (a whole number of 64 slots, at most chunk_size; the unsealed tail
** exactly chunk_size). */
static inline i64 knn_chunk_slots(const knn_index *ix, i64 id, i64 valid_bytes) {
  i64 cap = valid_bytes * 8;
  if (valid_bytes < 8 || valid_bytes % 8 || cap > ix->chunk_size) return -1;
  if (id != ix->tail_chunk) return cap;
  if (ix->tail_used == ix->chunk_size) return cap; /* sealed */
  return cap == ix->chunk_size ? ix->tail_used : -1;
}
/* Bytes of one stored element. */
static inline i64 knn_elem_bytes(int storage) {
  return storage == KNN_STORE_I8 ? 1 : storage == KNN_STORE_F16 ? 2 : 4;
}
/* The candidates a query of k rows re-ranks on compressed storage. */
static inline i64 knn_rerank_k(const knn_index *ix, i64 k) {
  i64 r = ix->rerank > 0 ? ix->rerank : (k > (i64)1 << 60 ? k : 4 * k);
  if (ix->rerank == 0 && r < 64) r = 64;
  return r > k ? r : k;
}
/* The int8 parameters (dim minima, then dim scales, float32; checked
** against the description) of a compressed index, sqlite3_malloc'd; NULL
** for float16 / float32. */
int knn_quant_params(sqlite3 *db, const char *fn, const knn_index *ix, float **out,
                     char **pzErr);
/* n vectors of dim floats to codes of ix's storage, and back. */
void knn_encode(int storage, const float *params, const float *src, size_t n, size_t dim,
                void *dst);
void knn_decode(int storage, const float *params, const void *src, size_t n, size_t dim,
                float *dst);
/* Make a just-created, empty index store its vectors as storage (trained
** on the table's vectors for int8, unless given: dim minima then dim
** scales), re-ranking rerank candidates. */
int knn_quant_init(sqlite3 *db, const char *fn, knn_index *ix, int storage, i64 rerank,
                   const float *given, i64 given_dim, char **pzErr);

/* IVF limits: lists per index, and the bytes of its centroids. */
#define KNN_MAX_LISTS 65536
#define KNN_MAX_CENTROID_BYTES (256 * 1024 * 1024)

/* What facevec_knn_build's options ask for. lists 0: exact. */
typedef struct knn_build_opts {
  i64 lists;   /* 0: exact */
  i64 nprobe;  /* 0: measured at build (calibrate_nprobe in knn_store.c) */
  i64 sample;  /* training rows; 0: 40 per list */
  i64 iterations; /* Lloyd steps; 0: 10 */
  int storage;    /* KNN_STORE_* */
  i64 rerank;     /* 0: max(4k, 64) */
  /* The vectors' dimension, as the gallery declares it; 0: the size most
  ** rows have. Rows of another size are left out (IVF) or an error. */
  i64 dim;
  /* Centroids to use instead of training (lists x dim float32, the caller's
  ** memory), e.g. the gallery's SQL lists; NULL: k-means on a sample. */
  const void *centroids;
  i64 centroids_bytes;
} knn_build_opts;

/* Small helpers: one formatted statement run or prepared (sqlite3_mprintf
** syntax), db's last message into *pzErr unless set. */
int knn_exec(sqlite3 *db, char **pzErr, const char *fmt, ...);
int knn_prepare(sqlite3 *db, sqlite3_stmt **st, char **pzErr, const char *fmt, ...);
void knn_db_error(sqlite3 *db, char **pzErr);
i64 knn_count(sqlite3 *db, const char *fmt, const char *tbl);

/* Load the description of tbl's index and check its numbers against each
** other. Returns SQLITE_OK, SQLITE_NOTFOUND (no index; no message), or an
** error naming fn with *pzErr set. */
int knn_index_load(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix,
                   char **pzErr);
/* Check a loaded index against the schema (source column and key, its
** tables, its triggers: *triggers_ok) and the chunks' real sizes and bits;
** sets ix->n_chunks. A damaged index is an error asking for a rebuild. */
int knn_index_check(sqlite3 *db, const char *fn, knn_index *ix, int *triggers_ok,
                    char **pzErr);
/* Load and check tbl's index for fn: "no index", missing triggers and any
** damage are errors naming fn. */
int knn_index_open(sqlite3 *db, const char *fn, const char *tbl, knn_index *ix, char **pzErr);
void knn_index_clear(knn_index *ix);
/* *pzErr = "fn: the knn index of T is corrupt (<detail>); rebuild it with:
** ..."; returns SQLITE_ERROR (SQLITE_NOMEM without memory). */
int knn_corrupt(char **pzErr, const char *fn, const knn_index *ix, const char *fmt, ...);

/* The vector in row rid's column value (type, data, nbytes), read by the
** one vector parser (vector_arg.h), of want_dim elements unless want_dim is
** 0. out->v is NULL for a NULL value; fv_vector_free releases it. Messages
** name fn, the table, the row and the column. */
int knn_row_vector(const char *fn, const knn_index *ix, i64 rid, int type, const void *data,
                   int nbytes, i64 want_dim, fv_vector *out, char **pzErr);

/* The rowid map: map_get is "SELECT chunk, slot FROM <table>_fvknn_rowids
** WHERE rid = ?1" (knn_map_prepare). knn_map_find gives row rid's (chunk,
** slot), *chunk = 0 when the map has no entry; an entry that is not two
** INTEGERs within the index's slots in use is an error naming fn. */
int knn_map_prepare(sqlite3 *db, const knn_index *ix, sqlite3_stmt **map_get, char **pzErr);
int knn_map_find(sqlite3 *db, const char *fn, const knn_index *ix, sqlite3_stmt *map_get,
                 i64 rid, i64 *chunk, i64 *slot, char **pzErr);

/* Drop any index on tbl and create an empty one whose build cursor covers
** every row; *ix describes it. */
int knn_create(sqlite3 *db, const char *fn, const char *tbl, const char *col,
               i64 chunk_size, knn_index *ix, char **pzErr);
/* Drop the index's triggers, tables and description. */
int knn_drop_objects(sqlite3 *db, const char *tbl, char **pzErr);
/* Drop tbl's index, damaged or not; *found: whether it had one. */
int knn_drop(sqlite3 *db, const char *tbl, int *found, char **pzErr);
/* Process up to max_rows (< 0: all) logged changes, then build rows.
** *done gets the number of rows processed. */
/* The IVF index's centroids (lists x dim floats, sqlite3_malloc'd), their
** BLOB checked against the description's numbers. */
int knn_ivf_centroids(sqlite3 *db, const char *fn, const knn_index *ix, float **out,
                      char **pzErr);
/* Vectors per list (sizes: ix->lists entries, zeroed here) and those in
** mixed chunks (appended since training, each tagged with its list). */
int knn_ivf_sizes(sqlite3 *db, const char *fn, const knn_index *ix, i64 *sizes,
                  i64 *unlisted, char **pzErr);
int knn_sync_rows(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows, i64 *done,
                  char **pzErr);
/* The index's generation: a new random number for tbl, written before the
** chunks are (so a write that fails half-way is under the new number too),
** in the writer's transaction. knn_generation_read gives tbl's number in the
** snapshot of the open read transaction; *found = 0 when it has none. */
int knn_generation_bump(sqlite3 *db, const char *tbl, char **pzErr);
int knn_generation_read(sqlite3 *db, const char *tbl, i64 *generation, int *found);
/* Save the description's numbers (dim, chunk size, tail, vectors, cursor). */
int knn_index_save(sqlite3 *db, const knn_index *ix, char **pzErr);
/* Slots per chunk for dim when none is given: about KNN_CHUNK_BYTES. */
i64 knn_auto_chunk_size(i64 dim);
/* "table", "view", ... of main's object name, or NULL (sqlite3_malloc'd). */
char *knn_object_type(sqlite3 *db, const char *name);
/* Suffixes of an IVF build's tables: its state, its staged rows, the rows
** left out (knn_ivf_build.c). */
extern const char *const knn_build_suffix[3];

/* An IVF build in batches (knn_ivf_build.c).
** knn_ivf_start: on a just-created index (knn_create), read the table once
** (count, sample, int8 ranges), train the centroids (or take opts'), and
** leave the index building: queries meanwhile read every row from the table
** (exact). Returns SQLITE_DONE, with nothing written, when opts->lists is 0
** or the table has no vector (the caller builds the exact index).
** knn_ivf_resumable: *same = 1 when tbl has an unfinished IVF build of
** exactly these options (so a build continues it instead of starting over).
** knn_ivf_step: up to max_rows (< 0: all) rows of the build's work (each row
** is read and assigned once, then written once into its list's chunks);
** *done: rows processed, fewer than max_rows once the build has finished
** (the changes logged meanwhile then applied). Called by knn_sync_rows.
** knn_ivf_progress: work done and total, for facevec_knn_status. */
int knn_ivf_start(sqlite3 *db, const char *fn, knn_index *ix, const knn_build_opts *opts,
                  char **pzErr);
int knn_ivf_resumable(sqlite3 *db, const char *tbl, const char *col,
                      const knn_build_opts *opts, int *same);
int knn_ivf_step(sqlite3 *db, const char *fn, knn_index *ix, i64 max_rows, i64 *done,
                 char **pzErr);
int knn_ivf_progress(sqlite3 *db, const knn_index *ix, i64 *work_done, i64 *work_total,
                     i64 *skipped);
/* Rows per transaction when facevec_knn_build runs an IVF build's steps. */
i64 knn_ivf_batch_rows(void);

#endif /* FACEVEC_KNN_STORE_H */
