/* bench-store: the measurements (open, first search, recall, latency of the
 * store against FAISS on the store's own index file).  See bench_store.c. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_io_c.h>

#include "bench_store.h"
#include "cmr_error.h"
#include "cmr_faiss_ext.h"

/* store/index.c: a 128-byte header ("CMRIDX01" ... payload_len at byte 48,
 * little-endian), then the faiss_write_index bytes. */
#define INDEX_HEADER_BYTES 128
#define INDEX_MAGIC "CMRIDX01"

/* ---- measurements ----------------------------------------------------------------------------------- */

static int latency_alloc(latency *l, size_t cap)
{
    l->us = malloc((cap ? cap : 1) * sizeof *l->us);
    l->n = 0;
    return l->us ? 0 : cmr_fail(CMR_ENOMEM, "out of memory");
}

typedef struct raw_index {
    FaissIndex *index;
    int ivf;
} raw_index;

static int faiss_fail(const char *what)
{
    const char *e = faiss_get_last_error();
    return cmr_fail(CMR_EFAISS, "%s: %s", what, e && *e ? e : "unknown FAISS error");
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The store's image index, read from its file into a second FAISS object,
 * with the nprobe the store reports using. */
static int raw_index_load(const char *db, unsigned nprobe, raw_index *out)
{
    char path[4200];
    uint8_t head[INDEX_HEADER_BYTES];
    struct stat st;
    snprintf(path, sizeof path, "%s/index-image.cmrx", db);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || fread(head, 1, sizeof head, f) != sizeof head ||
        memcmp(head, INDEX_MAGIC, 8) != 0 ||
        (uint64_t)st.st_size != INDEX_HEADER_BYTES + le64(head + 48)) {
        fclose(f);
        return cmr_fail(CMR_EFORMAT, "%s: not the index layout this benchmark knows (store/index.c "
                                     "changed?)", path);
    }
    int frc = faiss_read_index(f, 0, &out->index);
    fclose(f);
    if (frc)
        return faiss_fail("reading the store's index file");
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(out->index);
    out->ivf = ivf != NULL;
    if (ivf)
        faiss_IndexIVF_set_nprobe(ivf, nprobe);
    return 0;
}

static int hits_ids(const cmr_hits *h, uint64_t *ids)
{
    for (size_t i = 0; i < h->n && i < K; i++)
        ids[i] = h->hits[i].id;
    return (int)(h->n < K ? h->n : K);
}

static int same_set(const uint64_t *a, int na, const idx_t *b)
{
    int nb = 0;
    for (int i = 0; i < K; i++)
        nb += b[i] >= 0;
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++) {
        int found = 0;
        for (int j = 0; j < K && !found; j++)
            found = b[j] >= 0 && (uint64_t)b[j] == a[i];
        if (!found)
            return 0;
    }
    return 1;
}

static int timed_search(cmr_store *store, const float *q, const cmr_filter *flt, double *us, cmr_hits **out)
{
    double t0 = now();
    int rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, flt, out);
    *us = (now() - t0) * 1e6;
    return rc;
}

static int build_id_map(const run_ctx *c, cmr_store *store, id_row **out)
{
    id_row *map = malloc(c->d->n * sizeof *map);
    if (!map)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < c->d->n; i++) {
        map[i].row = (uint32_t)i;
        if (c->id_of_row) {
            map[i].id = c->id_of_row[i];
            continue;
        }
        int rc = cmr_store_find_uid(store, c->d->uid[i], &map[i].id);
        if (rc) {
            free(map);
            return cmr_fail_context(rc, "row %" PRIu64 " of the regenerated collection: ", i);
        }
    }
    qsort(map, c->d->n, sizeof *map, cmp_id_row);
    *out = map;
    return 0;
}

/* Recall and latency of FAISS alone as nprobe doubles: where the store's
 * choice sits on the curve, and what a latency budget would allow. */
static int nprobe_sweep(const run_ctx *c, raw_index *raw, const id_row *map, unsigned nlist, results *r)
{
    unsigned nq = c->o->queries;
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(raw->index);
    size_t old = faiss_IndexIVF_nprobe(ivf);
    latency l;
    int rc = latency_alloc(&l, nq);
    if (rc)
        return rc;
    r->n_sweep = 0;
    for (unsigned nprobe = 1; nprobe <= nlist && r->n_sweep < MAX_SWEEP; nprobe *= 2) {
        faiss_IndexIVF_set_nprobe(ivf, nprobe);
        double sum = 0;
        l.n = 0;
        for (unsigned i = 0; i < nq; i++) {
            float dist[K];
            idx_t labels[K];
            uint64_t ids[K];
            size_t n = 0;
            double t0 = now();
            if (faiss_Index_search(raw->index, 1, c->queries + (size_t)i * c->o->dim, K, dist, labels)) {
                rc = faiss_fail("raw search");
                goto done;
            }
            l.us[l.n++] = (now() - t0) * 1e6;
            for (int j = 0; j < K; j++)
                if (labels[j] >= 0)
                    ids[n++] = (uint64_t)labels[j];
            sum += recall(ids, n, &c->gt_all[i], map, c->d->n);
        }
        sweep_point *pt = &r->sweep[r->n_sweep++];
        pt->nprobe = nprobe;
        pt->recall = sum / nq;
        pt->p50_us = percentile(l.us, l.n, 0.50);
        pt->p99_us = percentile(l.us, l.n, 0.99);
        progress("nprobe sweep: %u", nprobe);
        /* Past full recall and the 2 ms budget there is nothing left to learn. */
        if (pt->recall >= 0.999 && pt->p50_us > 4000)
            break;
    }
    progress_done();
done:
    faiss_IndexIVF_set_nprobe(ivf, old);
    free(l.us);
    return rc;
}

int measure(const run_ctx *c, results *r)
{
    const options *o = c->o;
    unsigned nq = o->queries;
    cmr_store *store = NULL;
    cmr_hits *h = NULL;
    raw_index raw = {0};
    FaissIDSelectorBitmap *sel = NULL;
    FaissSearchParametersIVF *params = NULL;
    uint8_t *bitmap = NULL;
    size_t bitmap_bytes = 0;
    uint64_t *ours_unf = calloc((size_t)nq * K, sizeof *ours_unf), *ours_filt = calloc((size_t)nq * K, sizeof *ours_filt);
    int *n_unf = calloc(nq, sizeof *n_unf), *n_filt = calloc(nq, sizeof *n_filt);
    unsigned *filt_nprobe = calloc(nq, sizeof *filt_nprobe);
    id_row *map = NULL;
    double us;
    int rc;
    const char *site = synth_sites[r->filter.site].name;
    cmr_filter flt = {.site = site, .date_from = r->filter.date_from, .date_to = r->filter.date_to};

    if (!ours_unf || !ours_filt || !n_unf || !n_filt || !filt_nprobe) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    size_t timed = (size_t)nq * o->rounds;
    if ((rc = latency_alloc(&r->ours_unf, timed)) || (rc = latency_alloc(&r->raw_unf, timed)) ||
        (rc = latency_alloc(&r->ours_filt, timed)) || (rc = latency_alloc(&r->raw_filt, timed)) ||
        (rc = latency_alloc(&r->exact_unf, o->exact_queries)) ||
        (rc = latency_alloc(&r->exact_filt, o->exact_queries)))
        goto done;

    /* Open and first searches: what a freshly started process pays. */
    r->before_open = read_memory();
    double t0 = now();
    if ((rc = cmr_store_open(o->db, CMR_STORE_RDONLY, NULL, &store)))
        goto done;
    r->open_ms = (now() - t0) * 1e3;
    if ((rc = timed_search(store, c->queries, NULL, &us, &h)))
        goto done;
    r->first_search_ms = us / 1e3;
    cmr_hits_free(h);
    h = NULL;
    if ((rc = timed_search(store, c->queries, &flt, &us, &h)))
        goto done;
    r->first_filtered_ms = us / 1e3;
    cmr_hits_free(h);
    h = NULL;
    if ((rc = cmr_store_stats_get(store, &r->stats)))
        goto done;
    if (r->stats.cases != o->n) {
        rc = cmr_fail(CMR_EINVAL, "%s holds %" PRIu64 " cases, not %" PRIu64 " (another --n or --seed?)",
                      o->db, r->stats.cases, o->n);
        goto done;
    }
    const char *model, *hash;
    unsigned dim;
    char want_hash[SYNTH_HASH_CHARS];
    synth_params p = params_for(o, 0);
    synth_weights_hash(&p, want_hash);
    cmr_store_model(store, &model, &hash, &dim);
    if (strcmp(hash, want_hash) != 0 || dim != o->dim) {
        rc = cmr_fail(CMR_EMODEL, "%s was filled with another --seed or --dim", o->db);
        goto done;
    }

    /* A pass over every query: warms caches and gives the results recall is
     * computed from. */
    uint64_t exact_answers = 0;
    for (unsigned i = 0; i < nq; i++) {
        const float *q = c->queries + (size_t)i * o->dim;
        if ((rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, NULL, &h)))
            goto done;
        n_unf[i] = hits_ids(h, ours_unf + (size_t)i * K);
        cmr_hits_free(h);
        if ((rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, &flt, &h)))
            goto done;
        n_filt[i] = hits_ids(h, ours_filt + (size_t)i * K);
        exact_answers += h->exact != 0;
        filt_nprobe[i] = h->exact ? 0 : h->nprobe;
        if (!h->exact)
            r->filt_nprobe = h->nprobe;
        r->filt_matching_store = h->n_matching;
        cmr_hits_free(h);
        h = NULL;
        progress("first pass %u/%u", i + 1, nq);
    }
    progress_done();
    r->filt_exact_share = (double)exact_answers / nq;
    r->after_search = read_memory();

    t0 = now();
    if ((rc = raw_index_load(o->db, r->stats.index[CMR_SPACE_IMAGE].nprobe, &raw)))
        goto done;
    r->raw_load_ms = (now() - t0) * 1e3;
    if ((rc = build_id_map(c, store, &map)))
        goto done;
    if (exact_answers < nq) {
        /* What a caller of FAISS would hand it: the matching ids as a bitmap. */
        bitmap_bytes = map[c->d->n - 1].id / 8 + 1;
        if (!(bitmap = calloc(bitmap_bytes, 1))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        for (uint64_t i = 0; i < c->d->n; i++)
            if (r->filter.mask[map[i].row])
                bitmap[map[i].id >> 3] |= (uint8_t)(1u << (map[i].id & 7));
        if (faiss_IDSelectorBitmap_new(&sel, bitmap_bytes, bitmap) != 0) {
            rc = faiss_fail("creating the bitmap selector");
            goto done;
        }
    }

    /* Timed rounds: ours and raw FAISS alternate first place per query. */
    uint64_t same = 0, compared = 0;
    for (unsigned round = 0; round < o->rounds; round++) {
        for (unsigned i = 0; i < nq; i++) {
            const float *q = c->queries + (size_t)i * o->dim;
            float dist[K];
            idx_t labels[K];
            for (int turn = 0; turn < 2; turn++) {
                if (((i + round + (unsigned)turn) & 1) == 0) {
                    if ((rc = timed_search(store, q, NULL, &us, &h)))
                        goto done;
                    r->ours_unf.us[r->ours_unf.n++] = us;
                    cmr_hits_free(h);
                    h = NULL;
                } else {
                    double t1 = now();
                    int frc = faiss_Index_search(raw.index, 1, q, K, dist, labels);
                    r->raw_unf.us[r->raw_unf.n++] = (now() - t1) * 1e6;
                    if (frc) {
                        rc = faiss_fail("raw search");
                        goto done;
                    }
                    if (round == 0) {
                        same += same_set(ours_unf + (size_t)i * K, n_unf[i], labels);
                        compared++;
                    }
                }
            }
            for (int turn = 0; turn < 2; turn++) {
                if (((i + round + (unsigned)turn) & 1) == 0) {
                    if ((rc = timed_search(store, q, &flt, &us, &h)))
                        goto done;
                    r->ours_filt.us[r->ours_filt.n++] = us;
                    cmr_hits_free(h);
                    h = NULL;
                } else if (filt_nprobe[i] && sel) {
                    /* Same nprobe as the store used for this query. */
                    if (faiss_SearchParametersIVF_new_with(&params, (FaissIDSelector *)sel, filt_nprobe[i], 0)) {
                        rc = faiss_fail("creating search parameters");
                        goto done;
                    }
                    double t1 = now();
                    int frc = faiss_Index_search_with_params(raw.index, 1, q, K, (FaissSearchParameters *)params,
                                                             dist, labels);
                    r->raw_filt.us[r->raw_filt.n++] = (now() - t1) * 1e6;
                    faiss_SearchParametersIVF_free(params);
                    params = NULL;
                    if (frc) {
                        rc = faiss_fail("raw filtered search");
                        goto done;
                    }
                }
            }
            progress("timed round %u/%u: %u/%u", round + 1, o->rounds, i + 1, nq);
        }
    }
    progress_done();
    r->same_ids_as_raw = compared ? (double)same / compared : NAN;

    /* Exact scans through the store: the reference for recall must agree
     * with the sgemm ground truth, and the filter with our own evaluation. */
    double agree_unf = 0, agree_filt = 0;
    for (unsigned i = 0; i < o->exact_queries && i < nq; i++) {
        const float *q = c->queries + (size_t)i * o->dim;
        uint64_t ids[K];
        int n;
        double t1 = now();
        if ((rc = cmr_store_search_exact(store, CMR_SPACE_IMAGE, q, K, NULL, &h)))
            goto done;
        r->exact_unf.us[r->exact_unf.n++] = (now() - t1) * 1e6;
        n = hits_ids(h, ids);
        agree_unf += recall(ids, (size_t)n, &c->gt_all[i], map, c->d->n);
        cmr_hits_free(h);
        t1 = now();
        if ((rc = cmr_store_search_exact(store, CMR_SPACE_IMAGE, q, K, &flt, &h)))
            goto done;
        r->exact_filt.us[r->exact_filt.n++] = (now() - t1) * 1e6;
        n = hits_ids(h, ids);
        agree_filt += recall(ids, (size_t)n, &c->gt_filt[i], map, c->d->n);
        cmr_hits_free(h);
        h = NULL;
        progress("exact searches %u/%u", i + 1, o->exact_queries);
    }
    progress_done();
    r->exact_agree_unf = r->exact_unf.n ? agree_unf / r->exact_unf.n : NAN;
    r->exact_agree_filt = r->exact_filt.n ? agree_filt / r->exact_filt.n : NAN;

    if (o->sweep && raw.ivf && (rc = nprobe_sweep(c, &raw, map, r->stats.index[CMR_SPACE_IMAGE].nlist, r)))
        goto done;

    double sum_unf = 0, sum_filt = 0;
    for (unsigned i = 0; i < nq; i++) {
        sum_unf += recall(ours_unf + (size_t)i * K, (size_t)n_unf[i], &c->gt_all[i], map, c->d->n);
        sum_filt += recall(ours_filt + (size_t)i * K, (size_t)n_filt[i], &c->gt_filt[i], map, c->d->n);
    }
    r->recall_unf = sum_unf / nq;
    r->recall_filt = sum_filt / nq;
    rc = 0;
done:
    cmr_hits_free(h);
    if (params)
        faiss_SearchParametersIVF_free(params);
    if (sel)
        faiss_IDSelector_free((FaissIDSelector *)sel);
    if (raw.index)
        faiss_Index_free(raw.index);
    if (store) {
        int crc = cmr_store_close(store);
        if (!rc)
            rc = crc;
    }
    free(bitmap);
    free(map);
    free(ours_unf);
    free(ours_filt);
    free(n_unf);
    free(n_filt);
    free(filt_nprobe);
    return rc;
}
