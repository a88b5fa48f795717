/* The query log: an append-only table of answered queries (cmr_store.h,
 * "query log").  Key: the entry's sequence number, big-endian, so that LMDB's
 * order is the order of writing and MDB_APPEND applies.  Value: a versioned
 * fixed layout (below), little-endian. */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmr_sha256.h"
#include "store_internal.h"

#define QL_VERSION 1u
/* version(1) time(8) who(32) kind(16) k(4) offset(4) filters(96) n_results(4)
 * latency(4) status(2) text_len(4) text_hash(8) case_id(8) n_files(4) */
#define QL_SIZE (1 + 8 + CMR_QUERYLOG_WHO + CMR_QUERYLOG_KIND + 4 + 4 + CMR_QUERYLOG_FILTERS + 4 + 4 + 2 + 4 + 8 + 8 + 4)

int cmr_querylog_open_table(cmr_store *s, MDB_txn *txn, int create)
{
    int rc = mdb_dbi_open(txn, "querylog", create ? MDB_CREATE : 0, &s->dbi_querylog);
    if (rc == MDB_NOTFOUND) {
        /* A read-only handle of a store made before the query log existed. */
        s->has_querylog = 0;
        return 0;
    }
    if (rc)
        return cmr_lmdb_fail(rc, "opening the query log table");
    s->has_querylog = 1;
    return 0;
}

static uint8_t *put_le(uint8_t *p, uint64_t v, int bytes)
{
    for (int i = 0; i < bytes; i++, v >>= 8)
        *p++ = (uint8_t)v;
    return p;
}

static const uint8_t *get_le(const uint8_t *p, uint64_t *v, int bytes)
{
    *v = 0;
    for (int i = bytes - 1; i >= 0; i--)
        *v = *v << 8 | p[i];
    return p + bytes;
}

/* Fixed-width text fields: NUL-padded, always NUL-terminated on reading. */
static uint8_t *put_text(uint8_t *p, const char *s, size_t width)
{
    size_t n = strnlen(s, width - 1);
    memcpy(p, s, n);
    memset(p + n, 0, width - n);
    return p + width;
}

static const uint8_t *get_text(const uint8_t *p, char *s, size_t width)
{
    memcpy(s, p, width);
    s[width - 1] = '\0';
    return p + width;
}

static void encode(const cmr_querylog_entry *e, uint8_t out[QL_SIZE])
{
    uint8_t *p = out;
    *p++ = QL_VERSION;
    p = put_le(p, (uint64_t)e->time_us, 8);
    p = put_text(p, e->who, CMR_QUERYLOG_WHO);
    p = put_text(p, e->kind, CMR_QUERYLOG_KIND);
    p = put_le(p, e->k, 4);
    p = put_le(p, e->offset, 4);
    p = put_text(p, e->filters, CMR_QUERYLOG_FILTERS);
    p = put_le(p, e->n_results, 4);
    p = put_le(p, e->latency_us, 4);
    p = put_le(p, e->status, 2);
    p = put_le(p, e->text_len, 4);
    memcpy(p, e->text_hash, 8);
    p += 8;
    p = put_le(p, e->case_id, 8);
    put_le(p, e->n_files, 4);
}

static int decode(uint64_t seq, const MDB_val *v, cmr_querylog_entry *e)
{
    const uint8_t *p = v->mv_data;
    if (v->mv_size < QL_SIZE || p[0] != QL_VERSION)
        return cmr_fail(CMR_ECORRUPT, "query log entry %llu: %zu bytes, version %u (expected %d bytes, version %u)",
                        (unsigned long long)seq, v->mv_size, v->mv_size ? p[0] : 0, QL_SIZE, QL_VERSION);
    uint64_t x;
    memset(e, 0, sizeof *e);
    e->seq = seq;
    p++;
    p = get_le(p, &x, 8);
    e->time_us = (int64_t)x;
    p = get_text(p, e->who, CMR_QUERYLOG_WHO);
    p = get_text(p, e->kind, CMR_QUERYLOG_KIND);
    p = get_le(p, &x, 4);
    e->k = (uint32_t)x;
    p = get_le(p, &x, 4);
    e->offset = (uint32_t)x;
    p = get_text(p, e->filters, CMR_QUERYLOG_FILTERS);
    p = get_le(p, &x, 4);
    e->n_results = (uint32_t)x;
    p = get_le(p, &x, 4);
    e->latency_us = (uint32_t)x;
    p = get_le(p, &x, 2);
    e->status = (uint16_t)x;
    p = get_le(p, &x, 4);
    e->text_len = (uint32_t)x;
    memcpy(e->text_hash, p, 8);
    p += 8;
    p = get_le(p, &x, 8);
    e->case_id = x;
    get_le(p, &x, 4);
    e->n_files = (uint32_t)x;
    return 0;
}

int cmr_querylog_text_hash(const cmr_store *s, const char *text, uint8_t hash[8])
{
    uint8_t key[32], mac[32];
    if (!text)
        return cmr_fail(CMR_EINVAL, "query log: no text to hash");
    /* A key of its own: a phrase that happens to be a patient id must not
     * hash to that patient's key. */
    static const char purpose[] = "cmrsearch query log phrase";
    cmr_hmac_sha256(s->site_key, sizeof s->site_key, purpose, sizeof purpose - 1, key);
    cmr_hmac_sha256(key, sizeof key, text, strlen(text), mac);
    memcpy(hash, mac, 8);
    return 0;
}

int cmr_querylog_append(cmr_store *s, cmr_querylog_entry *entries, size_t n)
{
    if (!s || !entries || !n)
        return cmr_fail(CMR_EINVAL, "query log: nothing to append");
    if (s->flags & CMR_STORE_RDONLY)
        return cmr_fail(CMR_ERDONLY, "%s: store is open read-only; the query log cannot be written", s->dir);
    if (!s->has_querylog)
        return cmr_fail(CMR_ECORRUPT, "%s: the query log table is missing", s->dir);
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return cmr_lmdb_fail(rc, "query log: starting a write transaction");
    uint64_t last = 0;
    MDB_val k, v;
    if ((rc = mdb_cursor_open(txn, s->dbi_querylog, &cur))) {
        rc = cmr_lmdb_fail(rc, "query log: opening a cursor");
        goto fail;
    }
    rc = mdb_cursor_get(cur, &k, &v, MDB_LAST);
    if (rc == 0 && k.mv_size == 8)
        last = cmr_be64_get(k.mv_data);
    else if (rc != MDB_NOTFOUND && rc != 0) {
        rc = cmr_lmdb_fail(rc, "query log: reading its last entry");
        goto fail;
    }
    mdb_cursor_close(cur);
    cur = NULL;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t now = (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
    for (size_t i = 0; i < n; i++) {
        uint8_t key[8], val[QL_SIZE];
        entries[i].seq = ++last;
        if (!entries[i].time_us)
            entries[i].time_us = now;
        cmr_be64_put(key, entries[i].seq);
        encode(&entries[i], val);
        k = (MDB_val){8, key};
        v = (MDB_val){QL_SIZE, val};
        if ((rc = mdb_put(txn, s->dbi_querylog, &k, &v, MDB_APPEND))) {
            rc = cmr_lmdb_fail(rc, "query log: writing an entry");
            goto fail;
        }
    }
    if ((rc = mdb_txn_commit(txn)))
        return cmr_lmdb_fail(rc, "query log: committing");
    return 0;
fail:
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int cmr_querylog_read(cmr_store *s, uint64_t after, size_t max, cmr_querylog_entry **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    if (!s->has_querylog)
        return 0;
    MDB_txn *txn = NULL;
    MDB_cursor *cur = NULL;
    cmr_querylog_entry *list = NULL;
    size_t len = 0, cap = 0;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    if ((rc = mdb_cursor_open(txn, s->dbi_querylog, &cur))) {
        rc = cmr_lmdb_fail(rc, "query log: opening a cursor");
        goto done;
    }
    uint8_t key[8];
    cmr_be64_put(key, after + 1);
    MDB_val k = {8, key}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0 && (!max || len < max);
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (len == cap) {
            size_t nc = cap ? 2 * cap : 64;
            cmr_querylog_entry *p = realloc(list, nc * sizeof *p);
            if (!p) {
                rc = cmr_fail(CMR_ENOMEM, "out of memory");
                goto done;
            }
            list = p;
            cap = nc;
        }
        if (k.mv_size != 8) {
            rc = cmr_fail(CMR_ECORRUPT, "query log: a key of %zu bytes", k.mv_size);
            goto done;
        }
        if ((rc = decode(cmr_be64_get(k.mv_data), &v, &list[len])))
            goto done;
        len++;
    }
    if (rc == MDB_NOTFOUND || rc == 0)
        rc = 0;
    else
        rc = cmr_lmdb_fail(rc, "query log: reading");
done:
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    if (rc) {
        free(list);
        return rc;
    }
    *out = list;
    *n = len;
    return 0;
}

int cmr_querylog_count(cmr_store *s, uint64_t *n)
{
    *n = 0;
    if (!s->has_querylog)
        return 0;
    MDB_txn *txn = NULL;
    MDB_stat st;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    rc = mdb_stat(txn, s->dbi_querylog, &st);
    mdb_txn_abort(txn);
    if (rc)
        return cmr_lmdb_fail(rc, "query log: counting");
    *n = st.ms_entries;
    return 0;
}
