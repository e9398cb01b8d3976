/*
** knn_chunk_cache.h - the chunks a search has read, kept in memory for the
** next searches of the process (every connection shares them), so that a
** warm query scores its lists where they lie instead of copying each chunk
** out of SQLite's pages. Internal to the extension.
**
** A chunk is known by its file, its index's table, the index's generation
** and its id. The generation (facevec_knn_generation) is a random number
** that every write to the index's chunks replaces, in the same transaction
** (knn_store.c): a connection reads it in the snapshot it searches, so it
** only ever finds the chunks of that snapshot, whatever other connections
** of any process commit, and a rolled-back write's number never returns.
**
** Memory is bounded by a budget shared by the process (least recently used
** chunks go first); a budget of 0 keeps nothing.
*/
#ifndef FACEVEC_KNN_CHUNK_CACHE_H
#define FACEVEC_KNN_CHUNK_CACHE_H

#include <stddef.h>
#include <stdint.h>

#include "sqlite3ext.h"

/* Bytes kept when nothing sets the budget: a million float32 face vectors
** of 128 dimensions with their rowids (about 0.5 GiB), or about seven
** million int8 ones. */
#define KNN_CHUNK_CACHE_DEFAULT_BYTES ((sqlite3_int64)1 << 30)

/* Which index's chunks: built once per checked index (knn_chunk_key_set). */
typedef struct knn_chunk_key {
  char *file;           /* sqlite3_db_filename of main; NULL: no cache */
  char *tbl;            /* the index's table */
  sqlite3_int64 generation;
  uint64_t hash;        /* of the three above */
} knn_chunk_key;

/* One chunk's slots in use, as the search reads them. */
typedef struct knn_chunk {
  size_t n_slots;
  const unsigned char *valid; /* (n_slots + 7) / 8 bytes */
  const sqlite3_int64 *rowids; /* n_slots */
  const void *vectors;         /* n_slots stored vectors */
} knn_chunk;

/* Set *k to (file, tbl, generation); SQLITE_NOMEM leaves it empty. */
int knn_chunk_key_set(knn_chunk_key *k, const char *file, const char *tbl,
                      sqlite3_int64 generation);
void knn_chunk_key_clear(knn_chunk_key *k);

/* Chunk id of k's index, pinned until knn_chunk_release; NULL when the
** cache does not hold it. */
const knn_chunk *knn_chunk_get(const knn_chunk_key *k, sqlite3_int64 id);
/* Room for a chunk of n_slots vectors of vector_bytes each, to be filled
** and handed to knn_chunk_put; NULL when the budget cannot hold it (or no
** memory). Its arrays are writable until then. */
knn_chunk *knn_chunk_new(const knn_chunk_key *k, sqlite3_int64 id, size_t n_slots,
                         size_t vector_bytes);
/* Keep a filled chunk (or, when another search kept it meanwhile or the
** budget is taken by pinned chunks, use it once): pinned like knn_chunk_get's. */
const knn_chunk *knn_chunk_put(knn_chunk *c);
/* Free a chunk of knn_chunk_new that could not be filled. */
void knn_chunk_discard(knn_chunk *c);
void knn_chunk_release(const knn_chunk *c);

/* The budget in bytes; bytes >= 0 sets it first (evicting down to it). */
sqlite3_int64 knn_chunk_cache_budget(sqlite3_int64 bytes);
/* What the cache holds and how it served: bytes, chunks, hits, misses. */
void knn_chunk_cache_stats(sqlite3_int64 *bytes, sqlite3_int64 *chunks, sqlite3_int64 *hits,
                           sqlite3_int64 *misses);

#endif /* FACEVEC_KNN_CHUNK_CACHE_H */
