/* Private to indexer/: shared helpers of its C files. */
#ifndef CMR_INDEXER_INTERNAL_H
#define CMR_INDEXER_INTERNAL_H

#include <stdarg.h>
#include <stddef.h>

#include "cmr_indexer.h"

/* Strings of an archive live in a pool freed at once. */
typedef struct cmr_pool_block {
    struct cmr_pool_block *next;
    char data[];
} cmr_pool_block;
typedef struct cmr_pool {
    cmr_pool_block *blocks;
    size_t used, cap;
} cmr_pool;
const char *cmr_pool_strdup(cmr_pool *pool, const char *s);
void cmr_pool_free(cmr_pool *pool);

/* The archive behind the public struct (which comes first). */
typedef struct cmr_archive_impl {
    cmr_archive pub;
    cmr_pool pool;
    cmr_issue *issues;
    size_t issues_cap;
    const char **reports;
    size_t reports_cap;
} cmr_archive_impl;

int cmr_archive_add_issue(cmr_archive_impl *a, const char *path, const char *study_uid, int code,
                          const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 5, 6)))
#endif
    ;

int cmr_grow(void **items, size_t *cap, size_t need, size_t size);
int cmr_cmp_str(const void *a, const void *b);

#endif
