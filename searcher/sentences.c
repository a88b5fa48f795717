/* Impression sentences: splitting, and the closest-sentence explanation's
 * cache of sentence embeddings. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "searcher_internal.h"

/* Words ending in '.' that do not end a sentence. */
static int is_abbreviation(const char *text, size_t end)
{
    static const char *const abbr[] = {"e.g", "i.e", "vs", "dr", "approx", "cf", "etc", "no", "fig", "incl"};
    size_t start = end;
    while (start > 0 && !isspace((unsigned char)text[start - 1]) && text[start - 1] != '(')
        start--;
    size_t n = end - start;
    for (size_t i = 0; i < sizeof abbr / sizeof *abbr; i++)
        if (strlen(abbr[i]) == n && strncasecmp(text + start, abbr[i], n) == 0)
            return 1;
    return 0;
}

/* A list marker at the start of a piece: "1.", "2)", "-", "*", "•". */
static size_t skip_marker(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    size_t j = i;
    while (j < n && isdigit((unsigned char)s[j]))
        j++;
    if (j > i && j < n && (s[j] == '.' || s[j] == ')') && (j + 1 == n || isspace((unsigned char)s[j + 1])))
        i = j + 1;
    else if (i < n && (s[i] == '-' || s[i] == '*') && (i + 1 == n || isspace((unsigned char)s[i + 1])))
        i++;
    else if (i + 3 <= n && !memcmp(s + i, "\xe2\x80\xa2", 3))
        i += 3;
    while (i < n && isspace((unsigned char)s[i]))
        i++;
    return i;
}

static void emit(const char *text, size_t start, size_t end, size_t *starts, size_t *lens, size_t max, size_t *n)
{
    size_t skip = skip_marker(text + start, end - start);
    start += skip;
    while (end > start && isspace((unsigned char)text[end - 1]))
        end--;
    /* Pieces without a letter or digit (a lone bullet) are not sentences. */
    int has_word = 0;
    for (size_t i = start; i < end && !has_word; i++)
        has_word = isalnum((unsigned char)text[i]) || (unsigned char)text[i] >= 0x80;
    if (!has_word)
        return;
    if (*n < max) {
        starts[*n] = start;
        lens[*n] = end - start;
    }
    (*n)++;
}

size_t cmr_split_sentences(const char *text, size_t *starts, size_t *lens, size_t max)
{
    size_t n = 0, start = 0, i = 0;
    if (!text)
        return 0;
    for (; text[i]; i++) {
        char c = text[i];
        if (c == '\n' || c == '\r') {
            emit(text, start, i, starts, lens, max, &n);
            start = i + 1;
            continue;
        }
        if (c != '.' && c != '!' && c != '?' && c != ';')
            continue;
        char after = text[i + 1];
        if (after && !isspace((unsigned char)after))
            continue; /* "2.5", "e.g.x" */
        if (c == '.' && is_abbreviation(text, i))
            continue;
        /* "1. Left ventricle ...": a list number, not a sentence. */
        size_t k = start;
        while (k < i && isspace((unsigned char)text[k]))
            k++;
        size_t d = k;
        while (d < i && isdigit((unsigned char)text[d]))
            d++;
        if (c == '.' && d == i && d > k)
            continue;
        emit(text, start, i + 1, starts, lens, max, &n);
        start = i + 1;
    }
    emit(text, start, i, starts, lens, max, &n);
    return n < max ? n : max;
}

/* ---- the sentence-vector cache ------------------------------------------------
 * Open addressing on a 64-bit FNV-1a hash of the sentence (with its length
 * as a check); emptied when half full.  Reports repeat their phrasing, so a
 * few thousand entries hold most of an archive's sentences. */

static uint64_t fnv1a(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (uint8_t)s[i]) * 1099511628211ull;
    return h ? h : 1;
}

int cmr_sentence_cache_init(cmr_sentence_cache *c, unsigned dim)
{
    memset(c, 0, sizeof *c);
    c->dim = dim;
    c->slots = calloc(CMR_SENTENCE_CACHE_SLOTS, sizeof *c->slots);
    c->vectors = malloc((size_t)CMR_SENTENCE_CACHE_SLOTS / 2 * dim * sizeof *c->vectors);
    if (!c->slots || !c->vectors) {
        cmr_sentence_cache_free(c);
        return cmr_fail(CMR_ENOMEM, "out of memory for the sentence cache");
    }
    return pthread_mutex_init(&c->lock, NULL) == 0 ? 0 : cmr_fail(CMR_ENOMEM, "cannot create a mutex");
}

void cmr_sentence_cache_free(cmr_sentence_cache *c)
{
    if (c->slots)
        pthread_mutex_destroy(&c->lock);
    free(c->slots);
    free(c->vectors);
    memset(c, 0, sizeof *c);
}

int cmr_sentence_cache_get(cmr_sentence_cache *c, const char *s, size_t n, float *out)
{
    uint64_t h = fnv1a(s, n);
    int found = 0;
    pthread_mutex_lock(&c->lock);
    for (size_t i = h % CMR_SENTENCE_CACHE_SLOTS;; i = (i + 1) % CMR_SENTENCE_CACHE_SLOTS) {
        cmr_sentence_slot *e = &c->slots[i];
        if (!e->hash)
            break;
        if (e->hash == h && e->len == n) {
            memcpy(out, c->vectors + (size_t)e->vector * c->dim, c->dim * sizeof *out);
            found = 1;
            break;
        }
    }
    if (found)
        c->hits++;
    else
        c->misses++;
    pthread_mutex_unlock(&c->lock);
    return found;
}

void cmr_sentence_cache_put(cmr_sentence_cache *c, const char *s, size_t n, const float *v)
{
    uint64_t h = fnv1a(s, n);
    pthread_mutex_lock(&c->lock);
    if (c->used >= CMR_SENTENCE_CACHE_SLOTS / 2) {
        memset(c->slots, 0, CMR_SENTENCE_CACHE_SLOTS * sizeof *c->slots);
        c->used = 0;
    }
    size_t i = h % CMR_SENTENCE_CACHE_SLOTS;
    while (c->slots[i].hash && !(c->slots[i].hash == h && c->slots[i].len == n))
        i = (i + 1) % CMR_SENTENCE_CACHE_SLOTS;
    if (!c->slots[i].hash) {
        c->slots[i] = (cmr_sentence_slot){h, (uint32_t)n, (uint32_t)c->used++};
        memcpy(c->vectors + (size_t)c->slots[i].vector * c->dim, v, c->dim * sizeof *v);
    }
    pthread_mutex_unlock(&c->lock);
}
