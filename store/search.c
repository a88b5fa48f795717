/* Nearest-neighbour search with filters.
 *
 * Filters must not cost recall.  A filtered query first finds the cases that
 * pass (facets in memory, diagnosis and patient keys from LMDB), then:
 *  - few matches (<= CMR_EXACT_SUBSET_LIMIT) or a flat index: an exact scan
 *    over the matching cases' stored vectors;
 *  - otherwise: FAISS with an ID bitmap selector, probing every list when
 *    the filter keeps <= 5% of the space (exact for IVF-Flat), else nprobe
 *    raised by N / matches.
 * Exclusions alone (case -> case) are answered by over-fetching. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>

#include "cmr_faiss_ext.h"
#include "store_internal.h"

/* ---- facet cache ------------------------------------------------------------------- */

static int facets_reload_one(cmr_store *s, MDB_txn *txn, uint64_t id)
{
    if (id >= s->facets_len)
        return 0;
    uint8_t key[8];
    cmr_be64_put(key, id);
    MDB_val k = {8, key}, v;
    int rc = mdb_get(txn, s->dbi_facets, &k, &v);
    if (rc == MDB_NOTFOUND) {
        memset(&s->facets[id], 0, sizeof *s->facets);
        return 0;
    }
    if (rc)
        return cmr_lmdb_fail(rc, "reading facets");
    if (v.mv_size < sizeof(cmr_facet) || (v.mv_size - sizeof(cmr_facet)) % sizeof(float))
        return cmr_fail(CMR_ECORRUPT, "case %llu: facets have %zu bytes", (unsigned long long)id, v.mv_size);
    memcpy(&s->facets[id], v.mv_data, sizeof(cmr_facet));
    if (s->facet_stride)
        cmr_facet_scores(v.mv_data, v.mv_size, s->facet_scores + id * s->facet_stride, s->facet_stride);
    return 0;
}

static void fill_nan(float *p, size_t n)
{
    for (size_t i = 0; i < n; i++)
        p[i] = NAN;
}

int cmr_facets_sync(cmr_store *s, MDB_txn *txn, uint64_t generation)
{
    if (s->facets && s->facets_generation >= generation)
        return 0;
    uint64_t next_id, floor;
    int rc;
    if ((rc = cmr_meta_get_u64(txn, s, "next_id", &next_id)) ||
        (rc = cmr_meta_get_u64(txn, s, "changes_floor", &floor)))
        return rc;
    if (next_id < 1)
        next_id = 1;
    if ((rc = cmr_finding_slots_refresh(s, txn)))
        return rc;
    /* A new finding slot widens every row: rebuild the cache. */
    int full = !s->facets || s->facets_generation < floor || s->facet_stride != s->n_finding_names;
    if (s->facet_stride != s->n_finding_names) {
        free(s->facet_scores);
        s->facet_scores = NULL;
        s->facet_stride = s->n_finding_names;
        if (s->facet_stride && s->facets_len &&
            !(s->facet_scores = malloc(s->facets_len * s->facet_stride * sizeof(float))))
            return cmr_fail(CMR_ENOMEM, "out of memory for finding scores");
    }
    if (next_id > s->facets_len) {
        cmr_facet *f = realloc(s->facets, next_id * sizeof *f);
        if (!f)
            return cmr_fail(CMR_ENOMEM, "out of memory for %llu facets", (unsigned long long)next_id);
        memset(f + s->facets_len, 0, (next_id - s->facets_len) * sizeof *f);
        s->facets = f;
        if (s->facet_stride) {
            float *sc = realloc(s->facet_scores, next_id * s->facet_stride * sizeof *sc);
            if (!sc)
                return cmr_fail(CMR_ENOMEM, "out of memory for finding scores");
            fill_nan(sc + s->facets_len * s->facet_stride, (next_id - s->facets_len) * s->facet_stride);
            s->facet_scores = sc;
        }
        s->facets_len = next_id;
    }
    if (full) {
        memset(s->facets, 0, s->facets_len * sizeof *s->facets);
        if (s->facet_stride)
            fill_nan(s->facet_scores, s->facets_len * s->facet_stride);
        MDB_cursor *cur;
        if ((rc = mdb_cursor_open(txn, s->dbi_facets, &cur)))
            return cmr_lmdb_fail(rc, "reading facets");
        MDB_val k, v;
        for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
            uint64_t id = cmr_be64_get(k.mv_data);
            if (id < s->facets_len && v.mv_size >= sizeof(cmr_facet)) {
                memcpy(&s->facets[id], v.mv_data, sizeof(cmr_facet));
                if (s->facet_stride)
                    cmr_facet_scores(v.mv_data, v.mv_size, s->facet_scores + id * s->facet_stride,
                                     s->facet_stride);
            }
        }
        mdb_cursor_close(cur);
    } else {
        uint64_t *ids;
        size_t n;
        if ((rc = cmr_changes_since(s, txn, s->facets_generation, generation, &ids, &n)))
            return rc;
        for (size_t i = 0; i < n && rc == 0; i++)
            rc = facets_reload_one(s, txn, ids[i]);
        free(ids);
        if (rc)
            return rc;
    }
    s->facets_generation = generation;
    return 0;
}

/* ---- filter evaluation ---------------------------------------------------------------- */

typedef struct match_set {
    uint64_t *ids;      /* sorted */
    size_t n;
    uint8_t *bitmap;    /* bit id set if it matches; built on demand */
    size_t bitmap_bytes;
} match_set;

static void match_set_free(match_set *m)
{
    free(m->ids);
    free(m->bitmap);
    memset(m, 0, sizeof *m);
}

static int filter_has_predicates(const cmr_filter *f)
{
    return f && (f->n_diagnoses || f->date_from || f->date_to || f->site || f->manufacturer ||
                 f->sex || f->age_min || f->age_max || f->n_finding_bounds);
}

static int filter_has_exclusions(const cmr_filter *f)
{
    return f && (f->n_exclude_ids || f->n_exclude_patients);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static int push_id(uint64_t **ids, size_t *n, size_t *cap, uint64_t id)
{
    if (*n == *cap) {
        size_t c = *cap ? *cap * 2 : 256;
        uint64_t *p = realloc(*ids, c * sizeof *p);
        if (!p)
            return cmr_fail(CMR_ENOMEM, "out of memory evaluating filter");
        *ids = p;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return 0;
}

/* Ids under the keys of a DUPSORT table (diagnoses, patients), sorted, unique. */
static int ids_for_keys(MDB_txn *txn, MDB_dbi dbi, size_t nkeys, const void *keys,
                        size_t key_size, uint64_t **out, size_t *n_out)
{
    uint64_t *ids = NULL;
    size_t n = 0, cap = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, dbi, &cur);
    if (rc)
        return cmr_lmdb_fail(rc, "reading secondary keys");
    for (size_t i = 0; i < nkeys && rc == 0; i++) {
        MDB_val k, v;
        if (key_size) {
            k = (MDB_val){key_size, (uint8_t *)keys + i * key_size};
        } else {
            const char *code = ((const char *const *)keys)[i];
            k = (MDB_val){strlen(code), (void *)code};
        }
        for (int r = mdb_cursor_get(cur, &k, &v, MDB_SET_KEY); r == 0 && rc == 0;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT_DUP))
            if (v.mv_size == 8)
                rc = push_id(&ids, &n, &cap, cmr_be64_get(v.mv_data));
    }
    mdb_cursor_close(cur);
    if (rc) {
        free(ids);
        return rc;
    }
    if (n > 1)
        qsort(ids, n, sizeof *ids, cmp_u64);
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        if (m == 0 || ids[m - 1] != ids[i])
            ids[m++] = ids[i];
    *out = ids;
    *n_out = m;
    return 0;
}

static int contains(const uint64_t *sorted, size_t n, uint64_t id)
{
    return n && bsearch(&id, sorted, n, sizeof id, cmp_u64) != NULL;
}

static int facet_passes(const cmr_facet *f, const cmr_filter *flt, uint32_t site, uint32_t manu)
{
    if (flt->date_from && (f->date == 0 || f->date < flt->date_from))
        return 0;
    if (flt->date_to && (f->date == 0 || f->date > flt->date_to))
        return 0;
    if (flt->site && f->site != site)
        return 0;
    if (flt->manufacturer && f->manufacturer != manu)
        return 0;
    if (flt->sex && f->sex != (uint8_t)flt->sex)
        return 0;
    if (flt->age_min || flt->age_max) {
        if (f->age < 0)
            return 0;
        if (flt->age_min && f->age < flt->age_min)
            return 0;
        if (flt->age_max && f->age > flt->age_max)
            return 0;
    }
    return 1;
}

/* Slots of the filter's finding bounds; a name no case was ever scored for
 * is an error, so that an unscored store does not answer "nothing". */
static int resolve_bounds(const cmr_store *s, const cmr_filter *flt, size_t *slots)
{
    for (size_t b = 0; b < flt->n_finding_bounds; b++) {
        const cmr_finding_bound *fb = &flt->finding_bounds[b];
        if (!fb->name || !cmr_finding_name_check(fb->name))
            return cmr_fail(CMR_EINVAL, "finding filter: '%.40s' is not a finding name",
                            fb->name ? fb->name : "(null)");
        if (!(fb->min <= fb->max))
            return cmr_fail(CMR_EINVAL, "finding filter on %s: the bounds leave no score (%g to %g)",
                            fb->name, (double)fb->min, (double)fb->max);
        size_t j = 0;
        while (j < s->n_finding_names && strcmp(s->finding_names[j], fb->name))
            j++;
        if (j == s->n_finding_names || j >= s->facet_stride)
            return cmr_fail(CMR_ENOTFOUND,
                            "%s: no case has a score for finding '%s' (cases indexed before finding "
                            "scores existed need 'cmrsearch index --db DIR --rescore')",
                            s->dir, fb->name);
        slots[b] = j;
    }
    return 0;
}

static int scores_pass(const float *row, const cmr_filter *flt, const size_t *slots)
{
    for (size_t b = 0; b < flt->n_finding_bounds; b++) {
        float x = row[slots[b]]; /* NaN (no score) fails both comparisons */
        if (!(x >= flt->finding_bounds[b].min && x <= flt->finding_bounds[b].max))
            return 0;
    }
    return 1;
}

/* Caller holds s->lock with facets synced. */
static int evaluate_filter(cmr_store *s, MDB_txn *txn, cmr_space space, const cmr_filter *flt,
                           match_set *out)
{
    memset(out, 0, sizeof *out);
    size_t slots[CMR_STORE_FINDINGS_MAX];
    if (flt->n_finding_bounds > CMR_STORE_FINDINGS_MAX)
        return cmr_fail(CMR_EINVAL, "at most %d finding bounds", CMR_STORE_FINDINGS_MAX);
    uint8_t space_flag = space == CMR_SPACE_IMAGE ? CMR_FACET_IMAGE : CMR_FACET_TEXT;
    uint32_t site = 0, manu = 0;
    int rc;
    if ((rc = resolve_bounds(s, flt, slots)))
        return rc;
    if (flt->site && (rc = cmr_dict_lookup(s, txn, 'S', flt->site, &site)))
        return rc;
    if (flt->manufacturer && (rc = cmr_dict_lookup(s, txn, 'M', flt->manufacturer, &manu)))
        return rc;
    if ((flt->site && !site) || (flt->manufacturer && !manu))
        return 0; /* a name never stored matches nothing */

    uint64_t *dx_ids = NULL, *excluded = NULL;
    size_t n_dx = 0, n_excluded = 0, cap = 0;
    if (flt->n_diagnoses &&
        (rc = ids_for_keys(txn, s->dbi_diagnosis, flt->n_diagnoses, flt->diagnoses, 0, &dx_ids, &n_dx)))
        return rc;
    if (flt->n_exclude_patients &&
        (rc = ids_for_keys(txn, s->dbi_patient, flt->n_exclude_patients, flt->exclude_patients,
                           CMR_PATIENT_KEY_BYTES, &excluded, &n_excluded)))
        goto done;
    cap = n_excluded; /* push_id grows from here */
    for (size_t i = 0; i < flt->n_exclude_ids; i++)
        if ((rc = push_id(&excluded, &n_excluded, &cap, flt->exclude_ids[i])))
            goto done;
    if (n_excluded > 1)
        qsort(excluded, n_excluded, sizeof *excluded, cmp_u64);

    size_t n_candidates = flt->n_diagnoses ? n_dx : (size_t)s->facets_len;
    size_t out_cap = 0;
    for (size_t i = 0; i < n_candidates; i++) {
        uint64_t id = flt->n_diagnoses ? dx_ids[i] : (uint64_t)i;
        if (id >= s->facets_len)
            continue;
        const cmr_facet *f = &s->facets[id];
        if (!(f->flags & CMR_FACET_LIVE) || !(f->flags & space_flag) || !facet_passes(f, flt, site, manu) ||
            (flt->n_finding_bounds && !scores_pass(s->facet_scores + id * s->facet_stride, flt, slots)) ||
            contains(excluded, n_excluded, id))
            continue;
        if ((rc = push_id(&out->ids, &out->n, &out_cap, id)))
            goto done;
    }
done:
    free(dx_ids);
    free(excluded);
    if (rc)
        match_set_free(out);
    return rc;
}

static int build_bitmap(match_set *m, uint64_t id_limit)
{
    m->bitmap_bytes = (size_t)(id_limit / 8 + 1);
    m->bitmap = calloc(m->bitmap_bytes, 1);
    if (!m->bitmap)
        return cmr_fail(CMR_ENOMEM, "out of memory for the filter bitmap");
    for (size_t i = 0; i < m->n; i++)
        m->bitmap[m->ids[i] >> 3] |= (uint8_t)(1u << (m->ids[i] & 7));
    return 0;
}

/* ---- top-k ----------------------------------------------------------------------------------- */

typedef struct scored {
    float score;
    uint64_t id;
} scored;

/* Worse first: lower score, then higher id (ties go to the older case). */
static int worse(const scored *a, const scored *b)
{
    return a->score < b->score || (a->score == b->score && a->id > b->id);
}

typedef struct topk {
    scored *heap; /* min-heap on "worse" */
    size_t n, k;
} topk;

static void topk_push(topk *t, float score, uint64_t id)
{
    scored x = {score, id};
    if (t->n < t->k) {
        size_t i = t->n++;
        while (i && worse(&x, &t->heap[(i - 1) / 2])) {
            t->heap[i] = t->heap[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        t->heap[i] = x;
        return;
    }
    if (!t->k || !worse(&t->heap[0], &x))
        return;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const scored *cur = m == i ? &x : &t->heap[m];
        if (l < t->n && worse(&t->heap[l], cur))
            m = l, cur = &t->heap[l];
        if (r < t->n && worse(&t->heap[r], cur))
            m = r;
        if (m == i)
            break;
        t->heap[i] = t->heap[m];
        i = m;
    }
    t->heap[i] = x;
}

static int cmp_best_first(const void *a, const void *b)
{
    const scored *x = a, *y = b;
    return worse(y, x) ? -1 : worse(x, y) ? 1 : 0;
}

static float dot(const float *a, const float *b, size_t n)
{
    float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < n; i++)
        s0 += a[i] * b[i];
    return (s0 + s1) + (s2 + s3);
}

/* Exact scan over the given ids (or every vector of the space if ids NULL). */
static int exact_scan(cmr_store *s, MDB_txn *txn, cmr_space space, const float *q, const match_set *m,
                      topk *t)
{
    size_t dim = s->dim;
    MDB_val k, v;
    int rc;
    if (m) {
        for (size_t i = 0; i < m->n; i++) {
            uint8_t key[8];
            cmr_be64_put(key, m->ids[i]);
            k = (MDB_val){8, key};
            rc = mdb_get(txn, s->dbi_vec[space], &k, &v);
            if (rc == MDB_NOTFOUND)
                continue;
            if (rc)
                return cmr_lmdb_fail(rc, "reading vectors");
            if (v.mv_size != dim * sizeof(float))
                return cmr_fail(CMR_ECORRUPT, "case %llu: vector has %zu bytes", (unsigned long long)m->ids[i], v.mv_size);
            topk_push(t, dot(q, v.mv_data, dim), m->ids[i]);
        }
        return 0;
    }
    MDB_cursor *cur;
    if ((rc = mdb_cursor_open(txn, s->dbi_vec[space], &cur)))
        return cmr_lmdb_fail(rc, "reading vectors");
    int r;
    for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (v.mv_size != dim * sizeof(float)) {
            mdb_cursor_close(cur);
            return cmr_fail(CMR_ECORRUPT, "case %llu: vector has %zu bytes",
                            (unsigned long long)cmr_be64_get(k.mv_data), v.mv_size);
        }
        topk_push(t, dot(q, v.mv_data, dim), cmr_be64_get(k.mv_data));
    }
    mdb_cursor_close(cur);
    return r == MDB_NOTFOUND ? 0 : cmr_lmdb_fail(r, "reading vectors");
}

/* ---- the query ---------------------------------------------------------------------------- */

static int faiss_query(const cmr_index *idx, const float *q, size_t k, const match_set *m,
                       unsigned nprobe, topk *t)
{
    float *dist = malloc(k * sizeof *dist);
    idx_t *labels = malloc(k * sizeof *labels);
    FaissIDSelectorBitmap *sel = NULL;
    FaissSearchParametersIVF *params = NULL;
    int rc = 0, frc;
    if (!dist || !labels) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    if (m) {
        if (faiss_IDSelectorBitmap_new(&sel, m->bitmap_bytes, m->bitmap) != 0 ||
            faiss_SearchParametersIVF_new_with(&params, (FaissIDSelector *)sel, nprobe, 0) != 0) {
            const char *e = faiss_get_last_error();
            rc = cmr_fail(CMR_EFAISS, "preparing filtered search: %s", e ? e : "?");
            goto done;
        }
        frc = faiss_Index_search_with_params(idx->faiss, 1, q, (idx_t)k, (FaissSearchParameters *)params,
                                             dist, labels);
    } else {
        frc = faiss_Index_search(idx->faiss, 1, q, (idx_t)k, dist, labels);
    }
    if (frc != 0) {
        const char *e = faiss_get_last_error();
        rc = cmr_fail(CMR_EFAISS, "searching: %s", e ? e : "?");
        goto done;
    }
    for (size_t i = 0; i < k; i++)
        if (labels[i] >= 0)
            topk_push(t, dist[i], (uint64_t)labels[i]);
done:
    if (params)
        faiss_SearchParametersIVF_free(params);
    if (sel)
        faiss_IDSelector_free((FaissIDSelector *)sel);
    free(dist);
    free(labels);
    return rc;
}

/* Take the lock shared with the space's index (and facets, if asked)
 * reflecting at least `generation`. */
static int acquire(cmr_store *s, cmr_space space, MDB_txn *txn, uint64_t generation, int need_facets)
{
    pthread_rwlock_rdlock(&s->lock);
    const cmr_index *idx = &s->idx[space];
    if (idx->faiss && idx->generation >= generation &&
        (!need_facets || (s->facets && s->facets_generation >= generation)))
        return 0;
    pthread_rwlock_unlock(&s->lock);
    pthread_rwlock_wrlock(&s->lock);
    int rc = cmr_index_sync(s, space, txn, generation);
    if (rc == 0 && need_facets)
        rc = cmr_facets_sync(s, txn, generation);
    pthread_rwlock_unlock(&s->lock);
    if (rc)
        return rc;
    /* Another thread may have moved the index further on; never backwards. */
    pthread_rwlock_rdlock(&s->lock);
    return 0;
}

static int assemble(cmr_store *s, MDB_txn *txn, topk *t, size_t k, cmr_hits **out)
{
    qsort(t->heap, t->n, sizeof *t->heap, cmp_best_first);
    cmr_hits *h = calloc(1, sizeof *h);
    size_t want = t->n < k ? t->n : k;
    if (!h || !(h->hits = calloc(want ? want : 1, sizeof *h->hits))) {
        free(h);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < t->n && h->n < want; i++) {
        uint8_t key[8];
        cmr_be64_put(key, t->heap[i].id);
        MDB_val kv = {8, key}, v;
        int rc = mdb_get(txn, s->dbi_cases, &kv, &v);
        if (rc == MDB_NOTFOUND)
            continue; /* deleted after the index was caught up past our snapshot */
        cmr_hit *hit = &h->hits[h->n];
        if (rc || (rc = cmr_record_decode(v.mv_data, v.mv_size, t->heap[i].id, &hit->record))) {
            rc = rc < 0 ? rc : cmr_lmdb_fail(rc, "reading a case");
            cmr_hits_free(h);
            return rc;
        }
        hit->id = t->heap[i].id;
        hit->score = t->heap[i].score;
        h->n++;
    }
    *out = h;
    return 0;
}

static int search_impl(cmr_store *s, cmr_space space, const float *query, size_t k,
                       const cmr_filter *filter, int force_exact, cmr_hits **out)
{
    *out = NULL;
    if ((unsigned)space >= CMR_NSPACES)
        return cmr_fail(CMR_EINVAL, "bad vector space %d", (int)space);
    if (!s->dim)
        return cmr_fail(CMR_EINVAL, "%s: the store has no model and no vectors yet", s->dir);
    if (k == 0 || k > CMR_MAX_K)
        return cmr_fail(CMR_EINVAL, "k must be between 1 and %u", CMR_MAX_K);
    float *q = malloc(s->dim * sizeof *q);
    if (!q)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    int rc = cmr_vector_normalise(query, s->dim, q, "query vector");
    if (rc) {
        free(q);
        return rc;
    }
    MDB_txn *txn = NULL;
    if ((rc = cmr_store_read_begin(s, &txn))) {
        free(q);
        return rc;
    }
    uint64_t generation = cmr_current_generation(s, txn);
    int predicates = filter_has_predicates(filter), exclusions = filter_has_exclusions(filter);
    match_set m = {0};
    uint64_t *excluded = NULL;
    size_t n_excluded = 0, cap_excluded = 0;
    if (exclusions && !predicates && !force_exact) {
        if (filter->n_exclude_patients &&
            (rc = ids_for_keys(txn, s->dbi_patient, filter->n_exclude_patients,
                               filter->exclude_patients, CMR_PATIENT_KEY_BYTES, &excluded, &n_excluded))) {
            mdb_txn_abort(txn);
            free(q);
            return rc;
        }
        cap_excluded = n_excluded;
        for (size_t i = 0; i < filter->n_exclude_ids && rc == 0; i++)
            rc = push_id(&excluded, &n_excluded, &cap_excluded, filter->exclude_ids[i]);
        if (n_excluded > 1)
            qsort(excluded, n_excluded, sizeof *excluded, cmp_u64);
    }
    /* A handful of excluded cases (the query case, its patient's other
     * studies) is cheaper to over-fetch and drop than to filter by bitmap. */
    int overfetch = exclusions && !predicates && !force_exact && rc == 0 && n_excluded <= 64;
    int use_filter = (predicates || exclusions) && !overfetch;
    size_t n_excl = overfetch ? n_excluded : 0;
    topk t = {0};
    cmr_hits *h = NULL;
    unsigned nprobe = 0;
    int exact = 0, locked = 0;
    uint64_t n_space = 0;
    MDB_stat st;
    if (mdb_stat(txn, s->dbi_vec[space], &st) == 0)
        n_space = st.ms_entries;

    if (!force_exact) {
        if ((rc = acquire(s, space, txn, generation, use_filter)))
            goto done;
        locked = 1;
    } else if (use_filter) {
        pthread_rwlock_wrlock(&s->lock);
        rc = cmr_facets_sync(s, txn, generation);
        pthread_rwlock_unlock(&s->lock);
        if (rc)
            goto done;
        pthread_rwlock_rdlock(&s->lock);
        locked = 1;
    }
    if (use_filter && (rc = evaluate_filter(s, txn, space, filter, &m)))
        goto done;

    size_t fetch = overfetch ? k + n_excl : k;
    t.k = fetch;
    if (!(t.heap = malloc(fetch * sizeof *t.heap))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    const cmr_index *idx = &s->idx[space];
    if (force_exact) {
        exact = 1;
        rc = exact_scan(s, txn, space, q, use_filter ? &m : NULL, &t);
    } else if (use_filter && (m.n <= s->exact_limit || idx->kind != CMR_INDEX_IVF)) {
        exact = 1;
        rc = exact_scan(s, txn, space, q, &m, &t);
    } else if (use_filter) {
        /* Selective filters (<= 5% of the space) probe every list: the
         * walk tests a bitmap before computing any distance, so the cost is
         * one bit test per vector plus the matching distances, and the
         * answer is exact for IVF-Flat however the filter correlates with
         * the query.  Broader filters raise nprobe by N / matches, to meet
         * as many matching vectors as an unfiltered query meets. */
        nprobe = cmr_index_nprobe(s, idx->nlist);
        double boost = (double)n_space / (double)(m.n ? m.n : 1);
        double raised = boost >= 20 ? idx->nlist : nprobe * (boost > 1 ? boost : 1);
        nprobe = raised >= idx->nlist ? idx->nlist : (unsigned)raised;
        if (!(rc = build_bitmap(&m, s->facets_len)))
            rc = faiss_query(idx, q, fetch, &m, nprobe, &t);
    } else {
        exact = idx->kind == CMR_INDEX_FLAT;
        nprobe = idx->kind == CMR_INDEX_IVF ? cmr_index_nprobe(s, idx->nlist) : 0;
        rc = faiss_query(idx, q, fetch, NULL, 0, &t);
    }
    if (rc)
        goto done;
    if (overfetch) {
        size_t w = 0;
        for (size_t i = 0; i < t.n; i++)
            if (!contains(excluded, n_excluded, t.heap[i].id))
                t.heap[w++] = t.heap[i];
        t.n = w;
    }
    if ((rc = assemble(s, txn, &t, k, &h)))
        goto done;
    if (use_filter) {
        h->n_matching = m.n;
    } else {
        /* Without a filter every vector of the space matches, less the
         * excluded cases that have one. */
        h->n_matching = n_space;
        for (size_t i = 0; i < n_excluded; i++) {
            uint8_t key[8];
            cmr_be64_put(key, excluded[i]);
            MDB_val kv = {8, key}, v;
            if (mdb_get(txn, s->dbi_vec[space], &kv, &v) == 0 && h->n_matching)
                h->n_matching--;
        }
    }
    h->exact = exact;
    h->nprobe = exact ? 0 : nprobe;
    *out = h;
done:
    if (locked)
        pthread_rwlock_unlock(&s->lock);
    match_set_free(&m);
    free(excluded);
    free(t.heap);
    free(q);
    mdb_txn_abort(txn);
    return rc;
}

int cmr_store_search(cmr_store *s, cmr_space space, const float *query, size_t k,
                     const cmr_filter *filter, cmr_hits **out)
{
    return search_impl(s, space, query, k, filter, 0, out);
}

int cmr_store_search_exact(cmr_store *s, cmr_space space, const float *query, size_t k,
                           const cmr_filter *filter, cmr_hits **out)
{
    return search_impl(s, space, query, k, filter, 1, out);
}

int cmr_store_search_case(cmr_store *s, uint64_t id, cmr_space query_space, cmr_space target_space,
                          size_t k, const cmr_filter *filter, int include_same_patient, cmr_hits **out)
{
    *out = NULL;
    if (!s->dim)
        return cmr_fail(CMR_EINVAL, "%s: the store has no model and no vectors yet", s->dir);
    cmr_case *c = NULL;
    float *q = malloc(s->dim * sizeof *q);
    uint64_t *ex_ids = NULL;
    const uint8_t(*ex_pat)[CMR_PATIENT_KEY_BYTES] = NULL;
    uint8_t(*pat)[CMR_PATIENT_KEY_BYTES] = NULL;
    int rc;
    if (!q)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    if ((rc = cmr_store_get(s, id, &c)) || (rc = cmr_store_get_vector(s, id, query_space, q)))
        goto done;
    cmr_filter f = filter ? *filter : (cmr_filter){0};
    if (!(ex_ids = malloc((f.n_exclude_ids + 1) * sizeof *ex_ids))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    if (f.n_exclude_ids)
        memcpy(ex_ids, f.exclude_ids, f.n_exclude_ids * sizeof *ex_ids);
    ex_ids[f.n_exclude_ids++] = id;
    f.exclude_ids = ex_ids;
    if (!include_same_patient && c->has_patient_key) {
        if (!(pat = malloc((f.n_exclude_patients + 1) * sizeof *pat))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        if (f.n_exclude_patients)
            memcpy(pat, f.exclude_patients, f.n_exclude_patients * sizeof *pat);
        memcpy(pat[f.n_exclude_patients++], c->patient_key, CMR_PATIENT_KEY_BYTES);
        ex_pat = (const uint8_t(*)[CMR_PATIENT_KEY_BYTES])pat;
        f.exclude_patients = ex_pat;
    }
    rc = search_impl(s, target_space, q, k, &f, 0, out);
done:
    cmr_case_free(c);
    free(q);
    free(ex_ids);
    free(pat);
    return rc;
}

void cmr_hits_free(cmr_hits *h)
{
    if (!h)
        return;
    for (size_t i = 0; i < h->n; i++)
        cmr_case_free(h->hits[i].record);
    free(h->hits);
    free(h);
}
