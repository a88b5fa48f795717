/* Finding scores in the store: the slot list, facet values carrying scores,
 * the put-time scorer hook and cmr_txn_set_findings.
 *
 * The store does not know the prompt bank: it keeps whatever named scores
 * it is given.  Each name gets a slot (meta "findings", append-only, so a
 * slot never changes meaning) and a facets value holds one float per slot
 * known when it was written; a value written before a slot existed reads NaN
 * there, so adding a finding never rewrites older facets. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store_internal.h"

int cmr_finding_slots_read(cmr_store *s, MDB_txn *txn, char names[][CMR_FINDING_NAME_MAX + 1], size_t *n)
{
    *n = 0;
    MDB_val k = {8, "findings"}, v;
    int rc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return cmr_lmdb_fail(rc, "reading store metadata");
    const char *p = v.mv_data, *end = p + v.mv_size;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        size_t len = (size_t)((nl ? nl : end) - p);
        if (*n >= CMR_STORE_FINDINGS_MAX || len == 0 || len > CMR_FINDING_NAME_MAX)
            return cmr_fail(CMR_ECORRUPT, "store metadata 'findings' is malformed");
        memcpy(names[*n], p, len);
        names[*n][len] = '\0';
        if (!cmr_finding_name_check(names[*n]))
            return cmr_fail(CMR_ECORRUPT, "store metadata 'findings' has a bad name");
        (*n)++;
        p += len + 1;
    }
    return 0;
}

int cmr_finding_slots_refresh(cmr_store *s, MDB_txn *txn)
{
    char names[CMR_STORE_FINDINGS_MAX][CMR_FINDING_NAME_MAX + 1];
    size_t n;
    int rc = cmr_finding_slots_read(s, txn, names, &n);
    if (rc)
        return rc;
    /* Append-only: names already known keep their bytes (pointers handed
     * out by cmr_store_finding_names stay valid). */
    for (size_t i = s->n_finding_names; i < n; i++) {
        memcpy(s->finding_names[i], names[i], sizeof names[i]);
        s->finding_ptrs[i] = s->finding_names[i];
    }
    if (n > s->n_finding_names)
        s->n_finding_names = n;
    return 0;
}

int cmr_facet_value(cmr_txn *t, const cmr_facet *f, const cmr_finding_score *scores, size_t n,
                    uint8_t **out, size_t *len)
{
    cmr_store *s = t->store;
    char names[CMR_STORE_FINDINGS_MAX][CMR_FINDING_NAME_MAX + 1];
    size_t n_slots = 0;
    int rc, added = 0;
    *out = NULL;
    if (n && (rc = cmr_finding_slots_read(s, t->txn, names, &n_slots)))
        return rc;
    int slot_of[CMR_STORE_FINDINGS_MAX];
    for (size_t i = 0; i < n; i++) {
        size_t j = 0;
        while (j < n_slots && strcmp(names[j], scores[i].name))
            j++;
        if (j == n_slots) {
            if (n_slots == CMR_STORE_FINDINGS_MAX)
                return cmr_fail(CMR_EINVAL, "finding %s: the store already holds %d distinct findings",
                                scores[i].name, CMR_STORE_FINDINGS_MAX);
            snprintf(names[n_slots++], sizeof names[0], "%s", scores[i].name);
            added = 1;
        }
        slot_of[i] = (int)j;
    }
    if (added) {
        char list[CMR_STORE_FINDINGS_MAX * (CMR_FINDING_NAME_MAX + 1)];
        size_t used = 0;
        for (size_t j = 0; j < n_slots; j++) {
            size_t l = strlen(names[j]);
            if (j)
                list[used++] = '\n';
            memcpy(list + used, names[j], l);
            used += l;
        }
        MDB_val k = {8, "findings"}, v = {used, list};
        if ((rc = mdb_put(t->txn, s->dbi_meta, &k, &v, 0)))
            return cmr_lmdb_fail(rc, "writing store metadata");
        t->changed = true;
    }
    /* Only as many slots as this case needs: trailing absent slots read NaN. */
    size_t width = 0;
    for (size_t i = 0; i < n; i++)
        if ((size_t)slot_of[i] + 1 > width)
            width = (size_t)slot_of[i] + 1;
    size_t total = sizeof *f + width * sizeof(float);
    uint8_t *buf = malloc(total);
    if (!buf)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    memcpy(buf, f, sizeof *f);
    float nan = NAN;
    for (size_t j = 0; j < width; j++)
        memcpy(buf + sizeof *f + j * sizeof(float), &nan, sizeof nan);
    for (size_t i = 0; i < n; i++)
        memcpy(buf + sizeof *f + (size_t)slot_of[i] * sizeof(float), &scores[i].score, sizeof(float));
    *out = buf;
    *len = total;
    return 0;
}

void cmr_facet_scores(const void *value, size_t len, float *scores, size_t n_slots)
{
    size_t have = len > sizeof(cmr_facet) ? (len - sizeof(cmr_facet)) / sizeof(float) : 0;
    for (size_t j = 0; j < n_slots; j++)
        if (j < have)
            memcpy(&scores[j], (const uint8_t *)value + sizeof(cmr_facet) + j * sizeof(float), sizeof(float));
        else
            scores[j] = NAN;
}

void cmr_store_set_scorer(cmr_store *s, cmr_scorer_fn fn, void *user)
{
    s->scorer = fn;
    s->scorer_user = user;
}

int cmr_findings_from_scorer(cmr_store *s, const float *image_unit, cmr_finding_score *out, size_t *n)
{
    *n = 0;
    if (!s->scorer)
        return 0;
    int rc = s->scorer(s->scorer_user, image_unit, out, CMR_STORE_FINDINGS_MAX, n);
    if (rc == 0 && *n > CMR_STORE_FINDINGS_MAX)
        rc = cmr_fail(CMR_EINVAL, "the finding scorer returned %zu scores, at most %d", *n,
                      CMR_STORE_FINDINGS_MAX);
    if (rc)
        *n = 0;
    return rc;
}

int cmr_store_finding_names(cmr_store *s, const char *const **names, size_t *n)
{
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    pthread_rwlock_wrlock(&s->lock);
    rc = cmr_finding_slots_refresh(s, txn);
    *names = s->finding_ptrs;
    *n = s->n_finding_names;
    pthread_rwlock_unlock(&s->lock);
    mdb_txn_abort(txn);
    return rc;
}

int cmr_txn_set_findings(cmr_txn *t, uint64_t id, size_t n, const cmr_finding_score *scores)
{
    cmr_store *s = t->store;
    cmr_case *c = NULL;
    uint8_t *rec = NULL, *fval = NULL;
    int rc = cmr_load_case(s, t->txn, id, &c);
    if (rc)
        return rc;
    if ((rc = cmr_findings_check(scores, n, c->study_uid)))
        goto done;
    uint8_t key[8];
    cmr_be64_put(key, id);
    MDB_val k = {8, key}, v;
    if ((rc = mdb_get(t->txn, s->dbi_facets, &k, &v))) {
        rc = rc == MDB_NOTFOUND ? cmr_fail(CMR_ECORRUPT, "case %llu has no facets", (unsigned long long)id)
                                : cmr_lmdb_fail(rc, "reading facets");
        goto done;
    }
    if (v.mv_size < sizeof(cmr_facet)) {
        rc = cmr_fail(CMR_ECORRUPT, "case %llu: facets have %zu bytes", (unsigned long long)id, v.mv_size);
        goto done;
    }
    cmr_facet f;
    memcpy(&f, v.mv_data, sizeof f);
    /* The record keeps its other fields; it is rewritten at this generation
     * (and in the current record version). */
    c->n_findings = n;
    c->findings = scores;
    c->generation = t->generation;
    size_t rec_len, fval_len;
    if ((rc = cmr_record_encode(c, &rec, &rec_len)) ||
        (rc = cmr_facet_value(t, &f, scores, n, &fval, &fval_len)))
        goto done;
    MDB_val rv = {rec_len, rec}, fv = {fval_len, fval};
    if ((rc = mdb_put(t->txn, s->dbi_cases, &k, &rv, 0)) || (rc = mdb_put(t->txn, s->dbi_facets, &k, &fv, 0))) {
        rc = cmr_lmdb_fail(rc, "writing finding scores");
        goto done;
    }
    rc = cmr_log_change(t, id, CMR_CHANGE_PUT);
done:
    free(rec);
    free(fval);
    cmr_case_free(c);
    return rc;
}
