/*
** knn_chunk_cache.c - the process's cache of knn chunks (knn_chunk_cache.h):
** a hash table of chunks and a list of them from the most recently used to
** the least, under one mutex. A chunk in use by a search is pinned (refs):
** it is never freed under it, and eviction passes it by.
*/
#if defined(__unix__) || defined(__APPLE__)
#define _GNU_SOURCE /* dladdr */
#include <dlfcn.h>
#elif defined(_WIN32)
#include <windows.h>
#endif

#include "sqlite3ext.h"
SQLITE_EXTENSION_INIT3

#include <string.h>

#include "knn_chunk_cache.h"

typedef struct entry {
  knn_chunk pub; /* first: a knn_chunk * is its entry */
  struct entry *hnext, *newer, *older;
  uint64_t hash;
  sqlite3_int64 id, generation;
  const char *file, *tbl; /* copies, in the same allocation */
  sqlite3_int64 bytes;
  int refs;
  int kept; /* in the table and the list */
} entry;

static struct {
  entry **bucket;
  size_t mask, n;
  entry *newest, *oldest;
  sqlite3_int64 used, budget, hits, misses;
  int budget_set;
  int pinned; /* pin_library done */
} cache;

/* Keep this library loaded until the process ends, once it keeps a chunk:
** SQLite unloads an extension with the last connection that loaded it (a
** server opening a connection per request does so between requests), which
** would drop the cache with the memory it holds. */
static void pin_library(void) {
#if defined(__unix__) || defined(__APPLE__)
  Dl_info info;
  if (dladdr((void *)&pin_library, &info) && info.dli_fname)
    (void)dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE); /* never closed */
#elif defined(_WIN32)
  HMODULE self;
  (void)GetModuleHandleExA(GET_MODULE_HANDLE_EX_FLAG_FROM_ADDRESS | GET_MODULE_HANDLE_EX_FLAG_PIN,
                           (LPCSTR)(void *)&pin_library, &self);
#endif
}

static sqlite3_mutex *cache_mutex(void) {
  /* A static mutex: nothing to allocate or free (NULL when SQLite is built
  ** without threads, and then entering it does nothing). */
  return sqlite3_mutex_alloc(SQLITE_MUTEX_STATIC_APP1);
}

static uint64_t mix(uint64_t h, const void *data, size_t n) {
  const unsigned char *p = data;
  for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001B3ull; /* FNV-1a */
  return h;
}

static uint64_t chunk_hash(const knn_chunk_key *k, sqlite3_int64 id) {
  uint64_t x = k->hash ^ ((uint64_t)id * 0x9E3779B97F4A7C15ull);
  return x ^ (x >> 31);
}

int knn_chunk_key_set(knn_chunk_key *k, const char *file, const char *tbl,
                      sqlite3_int64 generation) {
  knn_chunk_key_clear(k);
  if (!file || !file[0] || !tbl) return SQLITE_OK; /* a temporary or in-memory file */
  k->file = sqlite3_mprintf("%s", file);
  k->tbl = sqlite3_mprintf("%s", tbl);
  if (!k->file || !k->tbl) {
    knn_chunk_key_clear(k);
    return SQLITE_NOMEM;
  }
  k->generation = generation;
  uint64_t h = 0xCBF29CE484222325ull;
  h = mix(h, file, strlen(file) + 1);
  h = mix(h, tbl, strlen(tbl) + 1);
  k->hash = mix(h, &generation, sizeof generation);
  return SQLITE_OK;
}

void knn_chunk_key_clear(knn_chunk_key *k) {
  sqlite3_free(k->file);
  sqlite3_free(k->tbl);
  memset(k, 0, sizeof *k);
}

static int same_chunk(const entry *e, uint64_t h, const knn_chunk_key *k, sqlite3_int64 id) {
  return e->hash == h && e->id == id && e->generation == k->generation &&
         strcmp(e->tbl, k->tbl) == 0 && strcmp(e->file, k->file) == 0;
}

static entry **slot_of(uint64_t h) { return &cache.bucket[h & cache.mask]; }

static void list_unlink(entry *e) {
  if (e->newer) e->newer->older = e->older;
  else cache.newest = e->older;
  if (e->older) e->older->newer = e->newer;
  else cache.oldest = e->newer;
  e->newer = e->older = NULL;
}

static void list_push_newest(entry *e) {
  e->older = cache.newest;
  e->newer = NULL;
  if (cache.newest) cache.newest->newer = e;
  cache.newest = e;
  if (!cache.oldest) cache.oldest = e;
}

/* Take a kept chunk out of the table and the list; freed now unless pinned
** (then by its last knn_chunk_release). */
static void evict(entry *e) {
  entry **p = slot_of(e->hash);
  while (*p != e) p = &(*p)->hnext;
  *p = e->hnext;
  list_unlink(e);
  e->kept = 0;
  cache.n--;
  cache.used -= e->bytes;
  if (e->refs == 0) sqlite3_free(e);
}

/* Evict the least recently used unpinned chunks until `need` more bytes fit. */
static void make_room(sqlite3_int64 need) {
  entry *e = cache.oldest;
  while (e && cache.used + need > cache.budget) {
    entry *next = e->newer;
    if (e->refs == 0) evict(e);
    e = next;
  }
}

static void budget_init(void) {
  if (!cache.budget_set) {
    cache.budget = KNN_CHUNK_CACHE_DEFAULT_BYTES;
    cache.budget_set = 1;
  }
}

const knn_chunk *knn_chunk_get(const knn_chunk_key *k, sqlite3_int64 id) {
  sqlite3_mutex *m = cache_mutex();
  entry *e = NULL;
  if (!k->file) return NULL;
  uint64_t h = chunk_hash(k, id);
  sqlite3_mutex_enter(m);
  if (cache.budget_set && cache.budget == 0) { /* kept nothing, counts nothing */
    sqlite3_mutex_leave(m);
    return NULL;
  }
  if (cache.bucket)
    for (e = *slot_of(h); e && !same_chunk(e, h, k, id); e = e->hnext) {
    }
  if (e) {
    e->refs++;
    list_unlink(e);
    list_push_newest(e);
    cache.hits++;
  } else {
    cache.misses++;
  }
  sqlite3_mutex_leave(m);
  return e ? &e->pub : NULL;
}

knn_chunk *knn_chunk_new(const knn_chunk_key *k, sqlite3_int64 id, size_t n_slots,
                         size_t vector_bytes) {
  sqlite3_mutex *m = cache_mutex();
  sqlite3_int64 budget;
  if (!k->file || n_slots == 0) return NULL;
  size_t lf = strlen(k->file) + 1, lt = strlen(k->tbl) + 1;
  /* The vectors 64-byte aligned, then the rowids, then the valid bits. */
  sqlite3_uint64 bytes = sizeof(entry) + lf + lt + 64 + (sqlite3_uint64)n_slots * vector_bytes +
                         (sqlite3_uint64)n_slots * 8 + (n_slots + 7) / 8;
  sqlite3_mutex_enter(m);
  budget_init();
  budget = cache.budget;
  sqlite3_mutex_leave(m);
  if (bytes > (sqlite3_uint64)budget) return NULL;
  entry *e = sqlite3_malloc64(bytes);
  if (!e) return NULL;
  memset(e, 0, sizeof *e);
  char *p = (char *)(e + 1);
  memcpy(p, k->file, lf);
  e->file = p;
  memcpy(p + lf, k->tbl, lt);
  e->tbl = p + lf;
  p += lf + lt;
  p += (64 - (uintptr_t)p % 64) % 64;
  e->pub.vectors = p;
  p += n_slots * vector_bytes;
  e->pub.rowids = (const sqlite3_int64 *)(void *)p;
  p += n_slots * 8;
  e->pub.valid = (const unsigned char *)p;
  e->pub.n_slots = n_slots;
  e->hash = chunk_hash(k, id);
  e->id = id;
  e->generation = k->generation;
  e->bytes = (sqlite3_int64)bytes;
  return &e->pub;
}

const knn_chunk *knn_chunk_put(knn_chunk *c) {
  sqlite3_mutex *m = cache_mutex();
  entry *e = (entry *)c, *have = NULL;
  sqlite3_mutex_enter(m);
  if (cache.bucket)
    for (have = *slot_of(e->hash); have; have = have->hnext)
      if (have->hash == e->hash && have->id == e->id && have->generation == e->generation &&
          strcmp(have->tbl, e->tbl) == 0 && strcmp(have->file, e->file) == 0)
        break;
  if (have) { /* another search kept it meanwhile */
    have->refs++;
    sqlite3_mutex_leave(m);
    sqlite3_free(e);
    return &have->pub;
  }
  e->refs = 1;
  if (cache.n + 1 > (cache.mask + 1) / 2 || !cache.bucket) {
    /* Twice the buckets (at least 1,024), the chunks rehashed. */
    size_t cap = cache.bucket ? (cache.mask + 1) * 2 : 1024;
    entry **nb = sqlite3_malloc64((sqlite3_uint64)cap * sizeof *nb);
    if (nb) {
      memset(nb, 0, cap * sizeof *nb);
      for (size_t i = 0; cache.bucket && i <= cache.mask; i++)
        for (entry *x = cache.bucket[i], *next; x; x = next) {
          next = x->hnext;
          x->hnext = nb[x->hash & (cap - 1)];
          nb[x->hash & (cap - 1)] = x;
        }
      sqlite3_free(cache.bucket);
      cache.bucket = nb;
      cache.mask = cap - 1;
    }
  }
  if (cache.bucket) make_room(e->bytes);
  if (cache.bucket && cache.used + e->bytes <= cache.budget) {
    entry **p = slot_of(e->hash);
    e->hnext = *p;
    *p = e;
    list_push_newest(e);
    e->kept = 1;
    cache.n++;
    cache.used += e->bytes;
    if (!cache.pinned) {
      cache.pinned = 1;
      pin_library();
    }
  }
  sqlite3_mutex_leave(m);
  return &e->pub;
}

void knn_chunk_discard(knn_chunk *c) { sqlite3_free(c); }

void knn_chunk_release(const knn_chunk *c) {
  sqlite3_mutex *m = cache_mutex();
  entry *e = (entry *)(void *)c;
  if (!c) return;
  sqlite3_mutex_enter(m);
  if (--e->refs == 0 && !e->kept) sqlite3_free(e);
  sqlite3_mutex_leave(m);
}

sqlite3_int64 knn_chunk_cache_budget(sqlite3_int64 bytes) {
  sqlite3_mutex *m = cache_mutex();
  sqlite3_int64 budget;
  sqlite3_mutex_enter(m);
  budget_init();
  if (bytes >= 0) {
    cache.budget = bytes;
    make_room(0);
  }
  budget = cache.budget;
  sqlite3_mutex_leave(m);
  return budget;
}

void knn_chunk_cache_stats(sqlite3_int64 *bytes, sqlite3_int64 *chunks, sqlite3_int64 *hits,
                           sqlite3_int64 *misses) {
  sqlite3_mutex *m = cache_mutex();
  sqlite3_mutex_enter(m);
  *bytes = cache.used;
  *chunks = (sqlite3_int64)cache.n;
  *hits = cache.hits;
  *misses = cache.misses;
  sqlite3_mutex_leave(m);
}
