/* Private to the search part of searcher/ (search.c, sentences.c, search_json.c). */
#ifndef CMR_SEARCHER_INTERNAL_H
#define CMR_SEARCHER_INTERNAL_H

#include <pthread.h>

#include "cmr_searcher.h"

#define CMR_SENTENCE_CACHE_SLOTS 8192u
#define CMR_SENTENCES_MAX 64 /* sentences of one impression considered */

typedef struct cmr_sentence_slot {
    uint64_t hash; /* 0 = empty */
    uint32_t len;
    uint32_t vector; /* row in vectors */
} cmr_sentence_slot;

typedef struct cmr_sentence_cache {
    pthread_mutex_t lock;
    unsigned dim;
    cmr_sentence_slot *slots;
    float *vectors; /* SLOTS / 2 rows of dim */
    size_t used;
    uint64_t hits, misses;
} cmr_sentence_cache;

int cmr_sentence_cache_init(cmr_sentence_cache *c, unsigned dim);
void cmr_sentence_cache_free(cmr_sentence_cache *c);
/* 1 and the vector in out if cached, else 0. */
int cmr_sentence_cache_get(cmr_sentence_cache *c, const char *s, size_t n, float *out);
void cmr_sentence_cache_put(cmr_sentence_cache *c, const char *s, size_t n, const float *v);

#endif
