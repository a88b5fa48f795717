/* Consistency check of a store: every record against its vectors, secondary
 * keys and facets, every secondary entry against a record, and each index
 * against LMDB (counts, and a sample of vectors that must find themselves). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <faiss/c_api/error_c.h>

#include "store_internal.h"

#define MAX_REPORTED 200 /* beyond this, problems are counted, not listed */
#define INDEX_PROBES 1000

typedef struct list {
    char **items;
    size_t n, cap;
} list;

static void add(list *l, size_t *count, const char *fmt, ...)
{
    (*count)++;
    if (l->n >= MAX_REPORTED)
        return;
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : 16;
        char **p = realloc(l->items, cap * sizeof *p);
        if (!p)
            return;
        l->items = p;
        l->cap = cap;
    }
    char *copy = strdup(buf);
    if (copy)
        l->items[l->n++] = copy;
}

typedef struct ctx {
    cmr_store *s;
    MDB_txn *txn;
    list problems, notes;
    size_t n_problems, n_notes;
    uint64_t generation;
    char slots[CMR_STORE_FINDINGS_MAX][CMR_FINDING_NAME_MAX + 1];
    size_t n_slots;
} ctx;

#define PROBLEM(c, ...) add(&(c)->problems, &(c)->n_problems, __VA_ARGS__)
#define NOTE(c, ...) add(&(c)->notes, &(c)->n_notes, __VA_ARGS__)

static int has_dup(ctx *c, MDB_dbi dbi, const void *key, size_t klen, uint64_t id)
{
    uint8_t idb[8];
    cmr_be64_put(idb, id);
    MDB_cursor *cur;
    if (mdb_cursor_open(c->txn, dbi, &cur))
        return 0;
    MDB_val k = {klen, (void *)key}, v = {8, idb};
    int found = mdb_cursor_get(cur, &k, &v, MDB_GET_BOTH) == 0;
    mdb_cursor_close(cur);
    return found;
}

static int case_exists(ctx *c, uint64_t id)
{
    uint8_t key[8];
    cmr_be64_put(key, id);
    MDB_val k = {8, key}, v;
    return mdb_get(c->txn, c->s->dbi_cases, &k, &v) == 0;
}

static void check_vector(ctx *c, uint64_t id, int space, int expected)
{
    cmr_store *s = c->s;
    uint8_t key[8];
    cmr_be64_put(key, id);
    MDB_val k = {8, key}, v;
    int present = mdb_get(c->txn, s->dbi_vec[space], &k, &v) == 0;
    const char *name = cmr_space_name((cmr_space)space);
    if (present != expected) {
        PROBLEM(c, "case %llu: record says %s %s vector but the vector table %s one",
                (unsigned long long)id, expected ? "it has an" : "it has no", name,
                present ? "holds" : "lacks");
        return;
    }
    if (!present)
        return;
    if (v.mv_size != (size_t)s->dim * sizeof(float)) {
        PROBLEM(c, "case %llu: %s vector has %zu bytes, expected %zu", (unsigned long long)id, name,
                v.mv_size, (size_t)s->dim * sizeof(float));
        return;
    }
    const float *x = v.mv_data;
    double norm = 0;
    for (unsigned i = 0; i < s->dim; i++) {
        if (!isfinite(x[i])) {
            PROBLEM(c, "case %llu: %s vector component %u is not finite", (unsigned long long)id, name, i);
            return;
        }
        norm += (double)x[i] * x[i];
    }
    if (fabs(sqrt(norm) - 1.0) > 1e-3)
        PROBLEM(c, "case %llu: %s vector has norm %.5f, not 1", (unsigned long long)id, name, sqrt(norm));
}

static void check_record(ctx *c, uint64_t id, const MDB_val *v, cmr_verify_report *r)
{
    cmr_store *s = c->s;
    cmr_case *rec;
    if (cmr_record_decode(v->mv_data, v->mv_size, id, &rec) != 0) {
        PROBLEM(c, "%s", cmr_errmsg());
        return;
    }
    r->cases_checked++;
    MDB_val k = {strlen(rec->study_uid), (void *)rec->study_uid}, u;
    if (mdb_get(c->txn, s->dbi_uid, &k, &u) != 0 || u.mv_size != 8 || cmr_be64_get(u.mv_data) != id)
        PROBLEM(c, "case %llu: Study Instance UID %s does not lead back to it", (unsigned long long)id,
                rec->study_uid);
    if (rec->has_patient_key && !has_dup(c, s->dbi_patient, rec->patient_key, CMR_PATIENT_KEY_BYTES, id))
        PROBLEM(c, "case %llu: missing from the patient key table", (unsigned long long)id);
    for (size_t i = 0; i < rec->n_diagnoses; i++)
        if (!has_dup(c, s->dbi_diagnosis, rec->diagnoses[i].code, strlen(rec->diagnoses[i].code), id))
            PROBLEM(c, "case %llu: missing from the diagnosis table under %s", (unsigned long long)id,
                    rec->diagnoses[i].code);
    if (rec->generation > c->generation)
        PROBLEM(c, "case %llu: written at generation %llu, after the store's %llu", (unsigned long long)id,
                (unsigned long long)rec->generation, (unsigned long long)c->generation);
    if (rec->vectors && (!rec->model_id || strcmp(rec->model_id, s->model_id) != 0))
        PROBLEM(c, "case %llu: embedded by model %s, store model is %s", (unsigned long long)id,
                rec->model_id ? rec->model_id : "(none)", s->model_id);
    for (int sp = 0; sp < CMR_NSPACES; sp++) {
        check_vector(c, id, sp, (rec->vectors >> sp) & 1);
        r->vectors_checked += (rec->vectors >> sp) & 1;
    }
    uint8_t key[8];
    cmr_be64_put(key, id);
    MDB_val fk = {8, key}, fv;
    cmr_facet want, got;
    cmr_case_facet(rec, &want);
    if (mdb_get(c->txn, s->dbi_facets, &fk, &fv) != 0 || fv.mv_size < sizeof got) {
        PROBLEM(c, "case %llu: has no facets", (unsigned long long)id);
    } else if ((fv.mv_size - sizeof got) % sizeof(float) || (fv.mv_size - sizeof got) / sizeof(float) > c->n_slots) {
        PROBLEM(c, "case %llu: facets of %zu bytes do not match the store's %zu finding slots",
                (unsigned long long)id, fv.mv_size, c->n_slots);
    } else {
        /* Scores in the facets are the record's, slot by slot. */
        float scores[CMR_STORE_FINDINGS_MAX];
        cmr_facet_scores(fv.mv_data, fv.mv_size, scores, c->n_slots);
        size_t in_record = 0;
        for (size_t j = 0; j < c->n_slots; j++) {
            size_t i = 0;
            while (i < rec->n_findings && strcmp(rec->findings[i].name, c->slots[j]))
                i++;
            in_record += i < rec->n_findings;
            if (i < rec->n_findings ? !(scores[j] == rec->findings[i].score) : !isnan(scores[j])) {
                PROBLEM(c, "case %llu: finding %s in the facets disagrees with the record",
                        (unsigned long long)id, c->slots[j]);
                break;
            }
        }
        if (in_record != rec->n_findings)
            PROBLEM(c, "case %llu: a finding of the record has no slot in the store",
                    (unsigned long long)id);
        memcpy(&got, fv.mv_data, sizeof got);
        uint8_t vec_flags = (rec->vectors & 1 ? CMR_FACET_IMAGE : 0) | (rec->vectors & 2 ? CMR_FACET_TEXT : 0);
        if (got.date != want.date || got.age != want.age || got.sex != want.sex ||
            got.flags != (want.flags | vec_flags))
            PROBLEM(c, "case %llu: facets disagree with the record", (unsigned long long)id);
    }
    cmr_case_free(rec);
}

/* Every entry of a table keyed or valued by case id must name a live case. */
static void check_orphans(ctx *c, MDB_dbi dbi, const char *table, int id_in_value)
{
    MDB_cursor *cur;
    if (mdb_cursor_open(c->txn, dbi, &cur)) {
        PROBLEM(c, "cannot read the %s table", table);
        return;
    }
    MDB_val k, v;
    for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        const MDB_val *idv = id_in_value ? &v : &k;
        if (idv->mv_size != 8) {
            PROBLEM(c, "%s table: entry with a %zu-byte id", table, idv->mv_size);
            continue;
        }
        uint64_t id = cmr_be64_get(idv->mv_data);
        if (!case_exists(c, id))
            PROBLEM(c, "%s table: entry for case %llu, which does not exist", table, (unsigned long long)id);
    }
    mdb_cursor_close(cur);
}

static void check_index(ctx *c, int sp, cmr_verify_report *r)
{
    cmr_store *s = c->s;
    const char *name = cmr_space_name((cmr_space)sp);
    MDB_stat st;
    mdb_stat(c->txn, s->dbi_vec[sp], &st);
    cmr_index_header h;
    long size;
    int hrc = cmr_index_read_header(s, (cmr_space)sp, &h, &size);
    if (hrc == CMR_ENOTFOUND) {
        if (st.ms_entries)
            NOTE(c, "%s index: no file on disk yet; it is built from LMDB on first use", name);
    } else if (hrc) {
        PROBLEM(c, "%s index: %s (run 'cmrsearch reindex')", name, cmr_errmsg());
    } else if (h.generation > c->generation) {
        PROBLEM(c, "%s index: stamped generation %llu is newer than the store's %llu", name,
                (unsigned long long)h.generation, (unsigned long long)c->generation);
    } else if (h.generation < c->generation) {
        NOTE(c, "%s index file reflects generation %llu, the store is at %llu: it is caught up from "
                "the change log (or rebuilt) on use", name, (unsigned long long)h.generation,
             (unsigned long long)c->generation);
    }

    pthread_rwlock_wrlock(&s->lock);
    int rc = cmr_index_sync(s, (cmr_space)sp, c->txn, c->generation);
    const cmr_index *idx = &s->idx[sp];
    if (rc) {
        PROBLEM(c, "%s index: cannot be brought up to date: %s", name, cmr_errmsg());
        goto done;
    }
    if ((uint64_t)faiss_Index_ntotal(idx->faiss) != st.ms_entries) {
        PROBLEM(c, "%s index holds %lld vectors, LMDB %zu", name, (long long)faiss_Index_ntotal(idx->faiss),
                st.ms_entries);
        goto done;
    }
    /* A stored vector must find its own case among its nearest neighbours. */
    MDB_cursor *cur;
    if (st.ms_entries == 0 || mdb_cursor_open(c->txn, s->dbi_vec[sp], &cur))
        goto done;
    uint64_t stride = st.ms_entries > INDEX_PROBES ? st.ms_entries / INDEX_PROBES : 1, i = 0;
    size_t missing = 0;
    MDB_val k, v;
    for (int m = mdb_cursor_get(cur, &k, &v, MDB_FIRST); m == 0; m = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
        if (i % stride || v.mv_size != (size_t)s->dim * sizeof(float))
            continue;
        float dist[10];
        idx_t labels[10];
        uint64_t id = cmr_be64_get(k.mv_data);
        r->index_probes++;
        if (faiss_Index_search(idx->faiss, 1, v.mv_data, 10, dist, labels) != 0) {
            PROBLEM(c, "%s index: search failed: %s", name, faiss_get_last_error());
            break;
        }
        int found = 0;
        for (int j = 0; j < 10; j++)
            found |= labels[j] == (idx_t)id;
        if (!found && missing++ < 5)
            PROBLEM(c, "%s index: case %llu's own vector does not find it", name, (unsigned long long)id);
    }
    mdb_cursor_close(cur);
done:
    pthread_rwlock_unlock(&s->lock);
}

int cmr_store_verify(cmr_store *s, cmr_verify_report **out)
{
    *out = NULL;
    cmr_verify_report *r = calloc(1, sizeof *r);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    ctx c = {.s = s};
    int rc = cmr_store_read_begin(s, &c.txn);
    if (rc) {
        free(r);
        return rc;
    }
    c.generation = cmr_current_generation(s, c.txn);
    if (cmr_finding_slots_read(s, c.txn, c.slots, &c.n_slots) != 0) {
        PROBLEM(&c, "the finding slot list is unreadable: %s", cmr_errmsg());
        c.n_slots = 0;
    }
    MDB_cursor *cur;
    MDB_val k, v;
    uint64_t max_id = 0, next_id = 0;
    cmr_meta_get_u64(c.txn, s, "next_id", &next_id);
    if ((rc = mdb_cursor_open(c.txn, s->dbi_cases, &cur))) {
        rc = cmr_lmdb_fail(rc, "reading cases");
        goto fail;
    }
    for (int m = mdb_cursor_get(cur, &k, &v, MDB_FIRST); m == 0; m = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 8) {
            PROBLEM(&c, "cases table: key of %zu bytes", k.mv_size);
            continue;
        }
        uint64_t id = cmr_be64_get(k.mv_data);
        max_id = id > max_id ? id : max_id;
        check_record(&c, id, &v, r);
    }
    mdb_cursor_close(cur);
    if (max_id && next_id <= max_id)
        PROBLEM(&c, "next case id %llu is not above the largest id %llu", (unsigned long long)next_id,
                (unsigned long long)max_id);
    check_orphans(&c, s->dbi_uid, "Study Instance UID", 1);
    check_orphans(&c, s->dbi_patient, "patient key", 1);
    check_orphans(&c, s->dbi_diagnosis, "diagnosis", 1);
    check_orphans(&c, s->dbi_facets, "facets", 0);
    for (int sp = 0; sp < CMR_NSPACES; sp++)
        check_orphans(&c, s->dbi_vec[sp], sp ? "text vector" : "image vector", 0);
    if (s->dim)
        for (int sp = 0; sp < CMR_NSPACES; sp++)
            check_index(&c, sp, r);
    mdb_txn_abort(c.txn);
    r->problems = c.problems.items;
    r->n_problems = c.problems.n;
    if (c.n_problems > MAX_REPORTED)
        NOTE(&c, "only the first %d of %zu problems are listed", MAX_REPORTED, c.n_problems);
    r->notes = c.notes.items;
    r->n_notes = c.notes.n;
    *out = r;
    return 0;
fail:
    mdb_txn_abort(c.txn);
    for (size_t i = 0; i < c.problems.n; i++)
        free(c.problems.items[i]);
    for (size_t i = 0; i < c.notes.n; i++)
        free(c.notes.items[i]);
    free(c.problems.items);
    free(c.notes.items);
    free(r);
    return rc;
}

void cmr_verify_report_free(cmr_verify_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n_problems; i++)
        free(r->problems[i]);
    for (size_t i = 0; i < r->n_notes; i++)
        free(r->notes[i]);
    free(r->problems);
    free(r->notes);
    free(r);
}
