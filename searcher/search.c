/* The searcher: text, study, case and vector queries over a store, with
 * filters, paging, one-result-per-patient grouping, fusion of the image and
 * impression spaces, and explanations (docs/searching.md).
 *
 * Fusion without lost recall: each weighted space's top N (through the
 * store, with the filter) are united and rescored exactly from the stored
 * vectors.  A case in neither list scores at most the bound B of
 * candidates_bound(); when the page's last result beats B, no unseen case
 * can displace it.  Otherwise N grows and the lists are fetched again. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "searcher_internal.h"

#define FIRST_FETCH 64u
#define STORE_MAX_K 10000u /* cmr_store_search's largest k */

struct cmr_searcher {
    cmr_store *store;
    cmr_model *model;          /* borrowed; NULL: case and vector queries only */
    cmr_findings *findings;    /* NULL without a model */
    unsigned dim;
    pthread_mutex_t model_lock; /* one encoder call at a time */
    cmr_sentence_cache cache;
};

/* Chosen on the 300-study phantom store (docs/searching.md, "Choosing the
 * weights"): text -> case and case -> case precision@10 by diagnosis both
 * peak at image 0.2, text 0.8 (the impressions carry the diagnosis better
 * than the compact model's images, but the image term still helps). */
void cmr_fusion_defaults(cmr_query_kind kind, float *w_image, float *w_text)
{
    switch (kind) {
    case CMR_QUERY_TEXT: *w_image = 0.2f, *w_text = 0.8f; break;
    case CMR_QUERY_STUDY: *w_image = 0.2f, *w_text = 0.8f; break;
    case CMR_QUERY_CASE: *w_image = 0.2f, *w_text = 0.8f; break;
    default: *w_image = 1.0f, *w_text = 0.0f; break; /* a vector: as an image, like --vector always did */
    }
}

static double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* ---- open / close ------------------------------------------------------------------ */

int cmr_searcher_open(cmr_store *store, cmr_model *model, cmr_searcher **out)
{
    *out = NULL;
    if (!store)
        return cmr_fail(CMR_EINVAL, "cmr_searcher_open: no store");
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    if (model && dim && (strcmp(name, cmr_model_name(model)) || strcmp(hash, cmr_model_hash(model)) ||
                         dim != cmr_model_dim(model)))
        return cmr_fail(CMR_EMODEL, "model %s (%.16s) is not the store's model %s (%.16s): its vectors "
                                    "cannot be compared with the store's",
                        cmr_model_name(model), cmr_model_hash(model), name, hash);
    cmr_searcher *s = calloc(1, sizeof *s);
    if (!s)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    s->store = store;
    s->model = model;
    s->dim = dim ? dim : model ? cmr_model_dim(model) : 0;
    int rc = 0;
    if (pthread_mutex_init(&s->model_lock, NULL)) {
        free(s);
        return cmr_fail(CMR_ENOMEM, "cannot create a mutex");
    }
    if (model && ((rc = cmr_findings_new(model, &s->findings)) ||
                  (rc = cmr_sentence_cache_init(&s->cache, cmr_model_dim(model))))) {
        cmr_searcher_close(s);
        return rc;
    }
    *out = s;
    return 0;
}

void cmr_searcher_close(cmr_searcher *s)
{
    if (!s)
        return;
    cmr_findings_free(s->findings);
    cmr_sentence_cache_free(&s->cache);
    pthread_mutex_destroy(&s->model_lock);
    free(s);
}

const cmr_findings *cmr_searcher_findings(const cmr_searcher *s) { return s ? s->findings : NULL; }

void cmr_results_free(cmr_results *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        cmr_case_free(r->items[i].record);
        free((char *)r->items[i].sentence);
    }
    free(r->items);
    free(r->query_findings);
    free(r);
}

/* ---- the query's vectors -------------------------------------------------------------- */

int cmr_searcher_spec_from(const cmr_model_input *in, const char *model_name, cmr_input_spec *spec)
{
    int lge = !strcmp(in->recipe, "cine+lge");
    if (strcmp(in->recipe, "cmrclip") != 0 && !lge)
        return cmr_fail(CMR_EUNSUPPORTED, "model %s wants input recipe \"%s\", which this build cannot make",
                        model_name, in->recipe);
    /* The published recipe, scaled to the model's frame size: resize 256 →
     * crop 224 becomes resize round(size * 256 / 224) → crop size. */
    cmr_input_spec_cmrclip(spec);
    spec->frames = in->frames;
    spec->size = in->size;
    spec->resize = in->resize ? in->resize : (in->size * 256 + 112) / 224;
    spec->channels = in->channels;
    if (lge) {
        spec->recipe = CMR_RECIPE_CINE_LGE;
        spec->lge_frames = in->lge_frames;
    }
    memcpy(spec->mean, in->mean, sizeof spec->mean);
    memcpy(spec->std, in->std, sizeof spec->std);
    return 0;
}

int cmr_searcher_input_spec(const cmr_model *m, cmr_input_spec *spec)
{
    return cmr_searcher_spec_from(cmr_model_input_spec(m), cmr_model_name(m), spec);
}

/* The one study under dir, through the model (caller holds model_lock). */
static int embed_study_dir(cmr_model *m, const char *dir, float *out)
{
    cmr_archive *a = NULL;
    const char *roots[1] = {dir};
    cmr_scan_options so = {0};
    cmr_input_spec spec;
    float *tensor = NULL;
    cmr_tensor_info info;
    int rc = cmr_archive_scan(roots, 1, &so, &a);
    if (rc == 0 && a->n_studies != 1)
        rc = cmr_fail(CMR_EINVAL, "study %s: %zu DICOM studies found there; give the folder of one study", dir,
                      a->n_studies);
    if (rc == 0 && (rc = cmr_searcher_input_spec(m, &spec)) == 0 &&
        (rc = cmr_study_tensor(&a->studies[0], &spec, &tensor, &info)) == 0)
        rc = cmr_model_encode_study(m, tensor, spec.frames, out);
    free(tensor);
    cmr_archive_free(a);
    return rc;
}

static void normalise(float *v, unsigned dim)
{
    double s = 0;
    for (unsigned i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    if (s > 0)
        for (unsigned i = 0; i < dim; i++)
            v[i] = (float)(v[i] / sqrt(s));
}

static float dotf(const float *a, const float *b, unsigned n)
{
    double s = 0;
    for (unsigned i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return (float)s;
}

/* Everything one search needs besides the store. */
typedef struct plan {
    const cmr_query *q;
    float *buf;                /* storage for the vectors below */
    const float *qv[CMR_NSPACES]; /* query vector compared with each space; NULL: none */
    const float *explain;      /* what sentences are compared with */
    float w[CMR_NSPACES];
    cmr_filter filter;         /* the query's, plus case exclusions */
    uint64_t exclude_id;
    uint8_t exclude_patient[1][CMR_PATIENT_KEY_BYTES];
    cmr_case *query_case;
    size_t window;             /* offset + limit + 1: one more says "more" */
} plan;

static int query_vectors(cmr_searcher *s, plan *p, cmr_results *r)
{
    const cmr_query *q = p->q;
    unsigned dim = s->dim;
    int rc = 0;
    if (!dim)
        return cmr_fail(CMR_ENOTFOUND, "the store has no vectors yet: index it with a model first");
    if (!(p->buf = malloc(2 * (size_t)dim * sizeof *p->buf)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    float *a = p->buf, *b = p->buf + dim;
    switch (q->kind) {
    case CMR_QUERY_TEXT:
    case CMR_QUERY_STUDY:
        if (!s->model)
            return cmr_fail(CMR_EINVAL, "a %s query needs the model (open the searcher with one)",
                            q->kind == CMR_QUERY_TEXT ? "text" : "study");
        if (q->kind == CMR_QUERY_TEXT && (!q->text || !*q->text))
            return cmr_fail(CMR_EINVAL, "the query text is empty");
        if (q->kind == CMR_QUERY_STUDY && (!q->study_dir || !*q->study_dir))
            return cmr_fail(CMR_EINVAL, "no study folder given");
        pthread_mutex_lock(&s->model_lock);
        rc = q->kind == CMR_QUERY_TEXT ? cmr_model_encode_text(s->model, q->text, a)
                                       : embed_study_dir(s->model, q->study_dir, a);
        pthread_mutex_unlock(&s->model_lock);
        if (rc)
            return rc;
        normalise(a, dim);
        p->qv[CMR_SPACE_IMAGE] = p->qv[CMR_SPACE_TEXT] = p->explain = a;
        break;
    case CMR_QUERY_VECTOR:
        if (!q->vector)
            return cmr_fail(CMR_EINVAL, "no query vector given");
        for (unsigned i = 0; i < dim; i++)
            if (!isfinite(q->vector[i]))
                return cmr_fail(CMR_EINVAL, "query vector: component %u is not finite", i);
        memcpy(a, q->vector, dim * sizeof *a);
        if (!(dotf(a, a, dim) > 1e-30f))
            return cmr_fail(CMR_EINVAL, "query vector: vector is zero");
        normalise(a, dim);
        p->qv[CMR_SPACE_IMAGE] = p->qv[CMR_SPACE_TEXT] = p->explain = a;
        break;
    case CMR_QUERY_CASE: {
        if ((rc = cmr_store_get(s->store, q->case_id, &p->query_case)))
            return rc;
        const cmr_case *c = p->query_case;
        if ((c->vectors & 1u << CMR_SPACE_IMAGE) &&
            (rc = cmr_store_get_vector(s->store, c->id, CMR_SPACE_IMAGE, a)) == 0)
            p->qv[CMR_SPACE_IMAGE] = a;
        if (!rc && (c->vectors & 1u << CMR_SPACE_TEXT) &&
            (rc = cmr_store_get_vector(s->store, c->id, CMR_SPACE_TEXT, b)) == 0)
            p->qv[CMR_SPACE_TEXT] = b;
        if (rc)
            return rc;
        if (!p->qv[0] && !p->qv[1])
            return cmr_fail(CMR_ENOTFOUND, "case %llu has no vectors (indexed without a model)",
                            (unsigned long long)c->id);
        if (q->use_space) {
            if ((unsigned)q->space >= CMR_NSPACES)
                return cmr_fail(CMR_EINVAL, "bad vector space %d", (int)q->space);
            if (!p->qv[q->space])
                return cmr_fail(CMR_ENOTFOUND, "case %llu has no %s vector", (unsigned long long)c->id,
                                cmr_space_name(q->space));
            p->qv[CMR_SPACE_IMAGE] = p->qv[CMR_SPACE_TEXT] = p->qv[q->space];
        }
        p->explain = p->qv[CMR_SPACE_IMAGE] ? p->qv[CMR_SPACE_IMAGE] : p->qv[CMR_SPACE_TEXT];
        break;
    }
    default:
        return cmr_fail(CMR_EINVAL, "unknown query kind %d", (int)q->kind);
    }
    /* The query study's own findings: the stored ones for a case, computed
     * for a new study. */
    size_t nb = cmr_finding_bank_size();
    if (q->kind == CMR_QUERY_STUDY && s->findings) {
        if (!(r->query_findings = malloc(nb * sizeof *r->query_findings)))
            return cmr_fail(CMR_ENOMEM, "out of memory");
        if ((rc = cmr_findings_score(s->findings, a, r->query_findings)))
            return rc;
    } else if (q->kind == CMR_QUERY_CASE && p->query_case->n_findings) {
        if (!(r->query_findings = malloc(nb * sizeof *r->query_findings)))
            return cmr_fail(CMR_ENOMEM, "out of memory");
        for (size_t i = 0; i < nb; i++) {
            r->query_findings[i] = NAN;
            for (size_t j = 0; j < p->query_case->n_findings; j++)
                if (!strcmp(p->query_case->findings[j].name, cmr_finding_bank(i)->key))
                    r->query_findings[i] = p->query_case->findings[j].score;
        }
    }
    return 0;
}

static int check_query(const cmr_query *q, plan *p)
{
    size_t limit = q->limit ? q->limit : CMR_SEARCH_DEFAULT_LIMIT;
    if (q->offset > CMR_SEARCH_MAX_WINDOW || limit > CMR_SEARCH_MAX_WINDOW - q->offset)
        return cmr_fail(CMR_EINVAL, "offset + limit must be at most %u (offset %zu, limit %zu)",
                        CMR_SEARCH_MAX_WINDOW, q->offset, limit);
    p->window = q->offset + limit + 1;
    if (q->set_weights) {
        if (!(q->w_image >= 0 && q->w_text >= 0 && isfinite(q->w_image) && isfinite(q->w_text)) ||
            !(q->w_image + q->w_text > 0))
            return cmr_fail(CMR_EINVAL, "fusion weights must be finite, at least 0 and not both 0 "
                                        "(image %g, text %g)", (double)q->w_image, (double)q->w_text);
        p->w[CMR_SPACE_IMAGE] = q->w_image;
        p->w[CMR_SPACE_TEXT] = q->w_text;
    } else {
        cmr_fusion_defaults(q->kind, &p->w[CMR_SPACE_IMAGE], &p->w[CMR_SPACE_TEXT]);
    }
    if (q->include_same_patient && q->kind != CMR_QUERY_CASE)
        return cmr_fail(CMR_EINVAL, "include_same_patient applies to case queries");
    return 0;
}

/* ---- candidates and fusion ---------------------------------------------------------------- */

typedef struct cand {
    uint64_t id;
    float sim[CMR_NSPACES];
    float score;
    cmr_case *record;   /* owned */
    const uint8_t *patient; /* into record; NULL when unknown */
    size_t folded;
} cand;

static int cmp_id(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int cmp_score(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id; /* ties go to the older case, as in the store */
}

static void cands_free(cand *c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        cmr_case_free(c[i].record);
    free(c);
}

static float fuse(const float *w, const float *sim)
{
    double num = 0, den = 0;
    for (int sp = 0; sp < CMR_NSPACES; sp++)
        if (w[sp] > 0 && !isnan(sim[sp])) {
            num += (double)w[sp] * sim[sp];
            den += w[sp];
        }
    return den > 0 ? (float)(num / den) : NAN;
}

/* The best fused score a case outside every list could have: for each set
 * S of weighted spaces the case could have vectors in (none of them
 * exhausted, or it would be listed), sum w*tau / sum w over S. */
static float candidates_bound(const float *w, const float *tau, const int *exhausted)
{
    float best = -INFINITY;
    for (unsigned set = 1; set < 1u << CMR_NSPACES; set++) {
        double num = 0, den = 0;
        int possible = 1;
        for (int sp = 0; sp < CMR_NSPACES; sp++) {
            if (!(set >> sp & 1))
                continue;
            if (!(w[sp] > 0) || exhausted[sp]) {
                possible = w[sp] > 0 ? 0 : possible; /* a weight-0 space adds nothing */
                continue;
            }
            num += (double)w[sp] * tau[sp];
            den += w[sp];
        }
        if (possible && den > 0 && num / den > best)
            best = (float)(num / den);
    }
    return best;
}

/* One round: the top n of each weighted space, united and rescored. */
static int gather(cmr_searcher *s, plan *p, size_t n, cand **out, size_t *n_out, float *bound,
                  uint64_t *n_matching)
{
    cmr_hits *hits[CMR_NSPACES] = {NULL, NULL};
    float tau[CMR_NSPACES] = {1, 1};
    int exhausted[CMR_NSPACES] = {1, 1};
    size_t total = 0;
    int rc = 0;
    *n_matching = 0;
    for (int sp = 0; sp < CMR_NSPACES && !rc; sp++) {
        if (!(p->w[sp] > 0) || !p->qv[sp])
            continue;
        if ((rc = cmr_store_search(s->store, (cmr_space)sp, p->qv[sp], n, &p->filter, &hits[sp])))
            break;
        total += hits[sp]->n;
        exhausted[sp] = hits[sp]->n < n;
        tau[sp] = hits[sp]->n ? hits[sp]->hits[hits[sp]->n - 1].score : -1;
        if (hits[sp]->n_matching > *n_matching)
            *n_matching = hits[sp]->n_matching;
    }
    cand *c = rc ? NULL : calloc(total ? total : 1, sizeof *c);
    if (!rc && !c)
        rc = cmr_fail(CMR_ENOMEM, "out of memory for %zu candidates", total);
    size_t m = 0;
    for (int sp = 0; sp < CMR_NSPACES && !rc; sp++)
        for (size_t i = 0; hits[sp] && i < hits[sp]->n; i++) {
            cmr_hit *h = &hits[sp]->hits[i];
            c[m] = (cand){.id = h->id, .record = h->record, .sim = {NAN, NAN}};
            h->record = NULL; /* moved */
            m++;
        }
    /* Unite: one entry per case. */
    if (!rc && m > 1) {
        qsort(c, m, sizeof *c, cmp_id);
        size_t u = 0;
        for (size_t i = 0; i < m; i++) {
            if (u && c[u - 1].id == c[i].id) {
                cmr_case_free(c[i].record);
                continue;
            }
            c[u++] = c[i];
        }
        m = u;
    }
    /* Exact similarity in every space the query and the case both have. */
    float *v = rc ? NULL : malloc(s->dim * sizeof *v);
    if (!rc && !v)
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < m && !rc; i++) {
        for (int sp = 0; sp < CMR_NSPACES && !rc; sp++) {
            if (!p->qv[sp] || !(c[i].record->vectors & 1u << sp))
                continue;
            rc = cmr_store_get_vector(s->store, c[i].id, (cmr_space)sp, v);
            if (rc == CMR_ENOTFOUND) { /* deleted since the search's snapshot */
                cmr_clear_error();
                rc = 0;
                continue;
            }
            if (!rc)
                c[i].sim[sp] = dotf(p->qv[sp], v, s->dim);
        }
        c[i].score = fuse(p->w, c[i].sim);
        c[i].patient = c[i].record->has_patient_key ? c[i].record->patient_key : NULL;
    }
    free(v);
    for (int sp = 0; sp < CMR_NSPACES; sp++)
        cmr_hits_free(hits[sp]);
    if (rc) {
        cands_free(c, m);
        return rc;
    }
    /* A case whose every vector was deleted meanwhile has no score. */
    size_t u = 0;
    for (size_t i = 0; i < m; i++) {
        if (isnan(c[i].score))
            cmr_case_free(c[i].record);
        else
            c[u++] = c[i];
    }
    qsort(c, u, sizeof *c, cmp_score);
    *out = c;
    *n_out = u;
    *bound = candidates_bound(p->w, tau, exhausted);
    return 0;
}

/* Keep each patient's best: later studies of a kept patient fold into it. */
static size_t group_patients(cand *c, size_t n)
{
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        size_t j = kept;
        if (c[i].patient)
            for (j = 0; j < kept; j++)
                if (c[j].patient && !memcmp(c[j].patient, c[i].patient, CMR_PATIENT_KEY_BYTES))
                    break;
        if (j < kept) {
            c[j].folded++;
            cmr_case_free(c[i].record);
            continue;
        }
        c[kept++] = c[i];
    }
    return kept;
}

/* ---- explanations ------------------------------------------------------------------------- */

static int closest_sentence(cmr_searcher *s, const float *qv, const char *text, cmr_result *out)
{
    size_t starts[CMR_SENTENCES_MAX], lens[CMR_SENTENCES_MAX];
    size_t n = cmr_split_sentences(text, starts, lens, CMR_SENTENCES_MAX);
    unsigned dim = cmr_model_dim(s->model);
    float *v = malloc(dim * sizeof *v);
    char *piece = NULL;
    int rc = 0, best = -1;
    float best_sim = -INFINITY;
    if (!v)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        if (!cmr_sentence_cache_get(&s->cache, text + starts[i], lens[i], v)) {
            char *tmp = realloc(piece, lens[i] + 1);
            if (!tmp) {
                rc = cmr_fail(CMR_ENOMEM, "out of memory");
                break;
            }
            piece = tmp;
            memcpy(piece, text + starts[i], lens[i]);
            piece[lens[i]] = '\0';
            pthread_mutex_lock(&s->model_lock);
            rc = cmr_model_encode_text(s->model, piece, v);
            pthread_mutex_unlock(&s->model_lock);
            if (rc)
                break;
            normalise(v, dim);
            cmr_sentence_cache_put(&s->cache, text + starts[i], lens[i], v);
        }
        float sim = dotf(qv, v, dim);
        if (sim > best_sim) {
            best_sim = sim;
            best = (int)i;
        }
    }
    if (!rc && best >= 0) {
        char *copy = malloc(lens[best] + 1);
        if (!copy) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
        } else {
            memcpy(copy, text + starts[best], lens[best]);
            copy[lens[best]] = '\0';
            out->sentence = copy;
            out->sentence_sim = best_sim;
        }
    }
    free(piece);
    free(v);
    return rc;
}

static int explain(cmr_searcher *s, const plan *p, cmr_result *r)
{
    r->sentence_sim = NAN;
    for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++)
        if (r->record->views & 1u << b)
            r->views[r->n_views++] = cmr_view_name(1u << b);
    if (!s->model || p->q->no_sentences || !r->record->impression || !p->explain)
        return 0;
    return closest_sentence(s, p->explain, r->record->impression, r);
}

/* ---- the search ----------------------------------------------------------------------------- */

int cmr_searcher_search(cmr_searcher *s, const cmr_query *q, cmr_results **out)
{
    *out = NULL;
    if (!s || !q)
        return cmr_fail(CMR_EINVAL, "cmr_searcher_search: no searcher or query");
    plan p = {.q = q};
    cand *c = NULL;
    size_t n = 0, live = 0; /* live: entries of c that own their record */
    int threads = 0;        /* the caller's OpenMP threads, restored on return */
    uint64_t *ex_ids = NULL;
    uint8_t(*ex_pat)[CMR_PATIENT_KEY_BYTES] = NULL;
    cmr_results *r = calloc(1, sizeof *r);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    r->kind = q->kind;
    double t0 = now_ms();
    int rc = check_query(q, &p);
    if (rc || (rc = query_vectors(s, &p, r)))
        goto fail;
    double t1 = now_ms();
    r->ms_encode = t1 - t0;
    r->w_image = p.w[CMR_SPACE_IMAGE];
    r->w_text = p.w[CMR_SPACE_TEXT];
    if (!(p.w[0] > 0 && p.qv[0]) && !(p.w[1] > 0 && p.qv[1])) {
        rc = cmr_fail(CMR_EINVAL, "the query case has vectors only in spaces weighted 0 (image %g, text %g)",
                      (double)p.w[0], (double)p.w[1]);
        goto fail;
    }

    /* The filter, plus a case query's own exclusions. */
    if (q->filter)
        p.filter = *q->filter;
    if (q->kind == CMR_QUERY_CASE) {
        const cmr_case *qc = p.query_case;
        if (!(ex_ids = malloc((p.filter.n_exclude_ids + 1) * sizeof *ex_ids))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto fail;
        }
        if (p.filter.n_exclude_ids)
            memcpy(ex_ids, p.filter.exclude_ids, p.filter.n_exclude_ids * sizeof *ex_ids);
        ex_ids[p.filter.n_exclude_ids++] = qc->id;
        p.filter.exclude_ids = ex_ids;
        if (!q->include_same_patient && qc->has_patient_key) {
            if (!(ex_pat = malloc((p.filter.n_exclude_patients + 1) * sizeof *ex_pat))) {
                rc = cmr_fail(CMR_ENOMEM, "out of memory");
                goto fail;
            }
            if (p.filter.n_exclude_patients)
                memcpy(ex_pat, p.filter.exclude_patients, p.filter.n_exclude_patients * sizeof *ex_pat);
            memcpy(ex_pat[p.filter.n_exclude_patients++], qc->patient_key, CMR_PATIENT_KEY_BYTES);
            p.filter.exclude_patients = (const uint8_t(*)[CMR_PATIENT_KEY_BYTES])ex_pat;
        }
    }

    /* One query's index scans and sentence encodings are far too small to
     * share out: OpenMP workers only spin, and on a busy machine the spin
     * cost 20-100 ms at p99 (docs/searching.md, "Latency").  This thread's
     * setting is restored below; a study's encoding above keeps its threads. */
    threads = omp_get_max_threads();
    omp_set_num_threads(1);
    /* Fetch, unite, rescore; widen until the page is provably complete. */
    size_t fetch = p.window * 2 > FIRST_FETCH ? p.window * 2 : FIRST_FETCH;
    if (fetch > STORE_MAX_K)
        fetch = STORE_MAX_K;
    size_t kept = 0;
    for (;;) {
        float bound;
        uint64_t n_matching;
        if ((rc = gather(s, &p, fetch, &c, &n, &bound, &n_matching)))
            break;
        r->n_candidates = n;
        r->n_matching = n_matching;
        kept = live = q->one_per_patient ? group_patients(c, n) : n;
        int complete = kept >= p.window ? c[p.window - 1].score > bound : bound == -INFINITY;
        if (complete || fetch >= STORE_MAX_K) {
            r->exact = complete;
            break;
        }
        cands_free(c, kept);
        c = NULL;
        live = 0;
        fetch = fetch * 4 > STORE_MAX_K ? STORE_MAX_K : fetch * 4;
    }
    if (rc)
        goto fail;
    double t2 = now_ms();
    r->ms_search = t2 - t1;

    /* The page. */
    r->offset = q->offset;
    r->limit = p.window - 1 - q->offset;
    r->more = kept > q->offset + r->limit;
    size_t first = q->offset < kept ? q->offset : kept;
    size_t last = first + r->limit < kept ? first + r->limit : kept;
    if (!(r->items = calloc(last > first ? last - first : 1, sizeof *r->items))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = first; i < last; i++) {
        cmr_result *it = &r->items[r->n++];
        it->id = c[i].id;
        it->score = c[i].score;
        memcpy(it->sim, c[i].sim, sizeof it->sim);
        it->record = c[i].record;
        it->n_folded = c[i].folded;
        c[i].record = NULL;
        if ((rc = explain(s, &p, it)))
            goto fail;
    }
    r->ms_explain = now_ms() - t2;
    *out = r;
    r = NULL;
fail:
    if (threads)
        omp_set_num_threads(threads);
    cands_free(c, live);
    free(ex_ids);
    free(ex_pat);
    cmr_case_free(p.query_case);
    free(p.buf);
    cmr_results_free(r);
    return rc;
}
