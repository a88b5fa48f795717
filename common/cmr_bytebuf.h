/* A growable byte buffer for writers that append and check once at the end
 * (the store's record encoder, the server's PNG writer): after a failed
 * allocation it stops growing and says so in `failed`, so callers need not
 * test every append.  Internal; header-only. */
#ifndef CMR_BYTEBUF_H
#define CMR_BYTEBUF_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct cmr_bytebuf {
    uint8_t *p; /* malloc'ed; the owner frees it */
    size_t len, cap;
    int failed; /* an allocation failed: the contents are incomplete */
} cmr_bytebuf;

static inline void cmr_bytebuf_put(cmr_bytebuf *b, const void *data, size_t n)
{
    if (b->failed || !n)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        uint8_t *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, data, n);
    b->len += n;
}

#endif
