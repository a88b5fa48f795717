/* The curators' audit (docs/audit.md): loading the store, the checks that
 * read one record (missing views, model, impression), the store's own
 * consistency check, and the report.  Duplicates are in audit_dup.c, label
 * errors and contradictions in audit_label.c. */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include <jansson.h>

#include "audit_internal.h"

static const char *const kind_names[CMR_AUDIT_NKINDS] = {
    "label_error", "duplicate", "missing_view", "contradiction", "outdated_model", "inconsistency",
    "no_impression"};

const char *cmr_audit_kind_name(cmr_audit_kind kind)
{
    return (unsigned)kind < CMR_AUDIT_NKINDS ? kind_names[kind] : NULL;
}

int cmr_audit_kind_parse(const char *name, cmr_audit_kind *out)
{
    for (int k = 0; k < CMR_AUDIT_NKINDS; k++)
        if (name && !strcmp(name, kind_names[k])) {
            *out = (cmr_audit_kind)k;
            return 0;
        }
    return cmr_fail(CMR_EINVAL, "'%s' is not an audit kind (label_error, duplicate, missing_view, "
                                "contradiction, outdated_model, inconsistency, no_impression)",
                    name ? name : "");
}

int cmr_audit_kinds_parse(const char *list, unsigned *out)
{
    unsigned kinds = 0;
    const char *p = list ? list : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        char word[32];
        const char *w = p;
        size_t wl = len;
        while (wl && isspace((unsigned char)*w))
            w++, wl--;
        while (wl && isspace((unsigned char)w[wl - 1]))
            wl--;
        if (wl >= sizeof word)
            return cmr_fail(CMR_EINVAL, "'%.*s' is not an audit kind", (int)wl, w);
        memcpy(word, w, wl);
        word[wl] = '\0';
        if (!strcmp(word, "all")) {
            kinds |= CMR_AUDIT_ALL;
        } else {
            cmr_audit_kind k = CMR_AUDIT_LABEL_ERROR;
            int rc = cmr_audit_kind_parse(word, &k);
            if (rc)
                return rc;
            kinds |= 1u << k;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (!kinds)
        return cmr_fail(CMR_EINVAL, "no audit kind given");
    *out = kinds;
    return 0;
}

void cmr_audit_options_init(cmr_audit_options *o)
{
    memset(o, 0, sizeof *o);
    o->kinds = CMR_AUDIT_ALL;
    /* Where pooled precision and recall of the label errors meet on the
     * fifteen phantom archives it was chosen on, and on 22 with seven fresh
     * ones (docs/audit.md, "The listing threshold"); the other kinds'
     * confidences do not fall between 0.4 and 0.5 there. */
    o->min_confidence = 0.4f;
    o->k = 20;
    o->dup_k = 4;
}

/* ---- the report ------------------------------------------------------------------------------ */

static char *dup_str(const char *s)
{
    return s ? strdup(s) : NULL;
}

long audit_find(const audit_ctx *a, uint64_t id)
{
    size_t lo = 0, hi = a->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (a->cases[mid].id < id)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < a->n && a->cases[lo].id == id ? (long)lo : -1;
}

int audit_is_dup(const audit_ctx *a, long i, long j)
{
    for (size_t p = 0; p < a->n_dup_pairs; p++) {
        long x = a->dup_pairs[2 * p], y = a->dup_pairs[2 * p + 1];
        if ((x == i && y == j) || (x == j && y == i))
            return 1;
    }
    return 0;
}

int audit_add(audit_ctx *a, cmr_audit_kind kind, long i, long j, float confidence, const char *recorded,
              const char *suggested, const char *fmt, ...)
{
    if (!(a->o.kinds & (1u << kind)))
        return 0;
    if (!(confidence >= 0))
        confidence = 0;
    if (confidence > 1)
        confidence = 1;
    if (confidence < a->o.min_confidence)
        return 0;
    cmr_audit_report *r = a->r;
    if (r->n == a->cap) {
        size_t cap = a->cap ? 2 * a->cap : 64;
        cmr_audit_finding *grown = realloc(r->findings, cap * sizeof *grown);
        if (!grown)
            return cmr_fail(CMR_ENOMEM, "out of memory for audit findings");
        r->findings = grown;
        a->cap = cap;
    }
    cmr_audit_finding *f = &r->findings[r->n];
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->confidence = confidence;
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (i >= 0) {
        f->case_id = a->cases[i].id;
        f->study_uid = dup_str(a->cases[i].uid);
    }
    if (j >= 0) {
        f->other_id = a->cases[j].id;
        f->other_uid = dup_str(a->cases[j].uid);
    }
    f->reason = strdup(reason);
    f->recorded = dup_str(recorded);
    f->suggested = dup_str(suggested);
    if (!f->reason || (i >= 0 && !f->study_uid) || (j >= 0 && !f->other_uid) ||
        (recorded && !f->recorded) || (suggested && !f->suggested)) {
        free((char *)f->reason);
        free((char *)f->study_uid);
        free((char *)f->other_uid);
        free((char *)f->recorded);
        free((char *)f->suggested);
        return cmr_fail(CMR_ENOMEM, "out of memory for audit findings");
    }
    r->n++;
    r->count[kind]++;
    return 0;
}

int audit_note(audit_ctx *a, const char *fmt, ...)
{
    char text[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    char **grown = realloc(a->r->notes, (a->r->n_notes + 1) * sizeof *grown);
    if (!grown)
        return cmr_fail(CMR_ENOMEM, "out of memory for audit notes");
    a->r->notes = grown;
    if (!(grown[a->r->n_notes] = strdup(text)))
        return cmr_fail(CMR_ENOMEM, "out of memory for audit notes");
    a->r->n_notes++;
    return 0;
}

void audit_progress(audit_ctx *a, const char *phase, uint64_t done, uint64_t total)
{
    if (a->o.progress)
        a->o.progress(a->o.progress_user, phase, done, total);
}

const char *audit_class_name(const audit_ctx *a, int cls, char *buf, size_t size)
{
    const audit_class *c = &a->classes[cls];
    if (c->label && *c->label)
        snprintf(buf, size, "%s (%s)", c->code, c->label);
    else
        snprintf(buf, size, "%s", c->code);
    return buf;
}

void cmr_audit_report_free(cmr_audit_report *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++) {
        cmr_audit_finding *f = &r->findings[i];
        free((char *)f->study_uid);
        free((char *)f->other_uid);
        free((char *)f->reason);
        free((char *)f->recorded);
        free((char *)f->suggested);
    }
    free(r->findings);
    for (size_t i = 0; i < r->n_notes; i++)
        free(r->notes[i]);
    free(r->notes);
    free(r);
}

static int cmp_finding(const void *x, const void *y)
{
    const cmr_audit_finding *a = x, *b = y;
    if (a->kind != b->kind)
        return a->kind < b->kind ? -1 : 1;
    if (a->confidence != b->confidence)
        return a->confidence > b->confidence ? -1 : 1;
    if (a->case_id != b->case_id)
        return a->case_id < b->case_id ? -1 : 1;
    return (a->other_id > b->other_id) - (a->other_id < b->other_id);
}

/* ---- loading ------------------------------------------------------------------------------- */

static int blank(const char *s)
{
    if (!s)
        return 1;
    for (; *s; s++)
        if (!isspace((unsigned char)*s))
            return 0;
    return 1;
}

static int class_of(audit_ctx *a, const cmr_diagnosis *d)
{
    for (size_t c = 0; c < a->n_classes; c++)
        if (!strcmp(a->classes[c].code, d->code)) {
            a->classes[c].count++;
            /* a report format without the code's name (a text report's
             * SNOMED code in parentheses) leaves it to another */
            if (!a->classes[c].label && d->label && *d->label &&
                !(a->classes[c].label = dup_str(d->label)))
                return cmr_fail(CMR_ENOMEM, "out of memory for diagnosis classes");
            return (int)c;
        }
    audit_class *grown = realloc(a->classes, (a->n_classes + 1) * sizeof *grown);
    if (!grown)
        return cmr_fail(CMR_ENOMEM, "out of memory for diagnosis classes");
    a->classes = grown;
    audit_class *c = &a->classes[a->n_classes];
    c->code = strdup(d->code);
    c->label = dup_str(d->label);
    c->count = 1;
    if (!c->code || (d->label && !c->label)) {
        free(c->code);
        free(c->label);
        return cmr_fail(CMR_ENOMEM, "out of memory for diagnosis classes");
    }
    return (int)a->n_classes++;
}

/* The recorded diagnosis of a case: its first SNOMED CT code, else its
 * first code.  SNOMED is preferred because ICD-10 lumps diagnoses that
 * look different on CMR (I42.8 "other cardiomyopathies" holds both LV
 * non-compaction and ARVC), and because one report format may list ICD-10
 * first and another SNOMED first: the class must not depend on the order. */
static const cmr_diagnosis *recorded_diagnosis(const cmr_case *c)
{
    for (size_t d = 0; d < c->n_diagnoses; d++)
        if (c->diagnoses[d].system && strcasestr(c->diagnoses[d].system, "snomed"))
            return &c->diagnoses[d];
    return &c->diagnoses[0];
}

static int load(audit_ctx *a, const char *store_model_id)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    int rc = cmr_store_list(a->store, &ids, &n);
    if (rc)
        return rc;
    a->n = n;
    a->cases = calloc(n ? n : 1, sizeof *a->cases);
    for (int s = 0; s < CMR_NSPACES; s++)
        a->vec[s] = calloc(n && a->dim ? n * a->dim : 1, sizeof(float));
    if (!a->cases || !a->vec[0] || !a->vec[1]) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for %zu cases", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        cmr_case *c = NULL;
        audit_case *ac = &a->cases[i];
        ac->id = ids[i];
        ac->cls = -1;
        ac->dup_partner = -1;
        if ((rc = cmr_store_get(a->store, ids[i], &c))) {
            /* A case listed but unreadable is what verify reports; the
             * audit goes on without it. */
            if (rc == CMR_ENOMEM)
                goto fail;
            ac->uid = NULL;
            continue;
        }
        ac->uid = strdup(c->study_uid);
        ac->model_id = dup_str(c->model_id);
        memcpy(ac->patient_key, c->patient_key, sizeof ac->patient_key);
        ac->has_patient_key = c->has_patient_key;
        ac->date = c->study_date;
        ac->views = c->views;
        ac->stored = c->vectors;
        ac->has_impression = !blank(c->impression);
        ac->has_report = c->impression_source != NULL || c->n_diagnoses > 0;
        ac->model_ok = c->vectors && c->model_id && !strcmp(c->model_id, store_model_id);
        ac->vectors = ac->model_ok ? c->vectors : 0;
        int bad = !ac->uid || (c->model_id && !ac->model_id);
        if (!bad && c->n_diagnoses && (ac->cls = class_of(a, recorded_diagnosis(c))) < 0) {
            rc = ac->cls;
            cmr_case_free(c);
            goto fail;
        }
        cmr_case_free(c);
        if (bad) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory for %zu cases", n);
            goto fail;
        }
        for (int s = 0; s < CMR_NSPACES; s++)
            if (ac->model_ok && (ac->vectors >> s & 1) &&
                (rc = cmr_store_get_vector(a->store, ac->id, (cmr_space)s, a->vec[s] + i * a->dim))) {
                if (rc == CMR_ENOMEM)
                    goto fail;
                ac->vectors &= ~(1u << s);
                memset(a->vec[s] + i * a->dim, 0, a->dim * sizeof(float));
            }
        if (i % 256 == 0)
            audit_progress(a, "reading cases", i, n);
    }
    audit_progress(a, "reading cases", n, n);
    rc = 0;
fail:
    free(ids);
    return rc;
}

/* ---- the checks that read one record ---------------------------------------------------------- */

/* The CMR-CLIP recipe's view groups (docs/model-input.md): cine LAX, cine
 * SAX, LGE SAX and LGE long-axis.  A group with none of its views leaves
 * black frames in the model input; a single absent LGE long-axis view of
 * several is common practice, not a gap worth a curator's time. */
static const struct {
    uint32_t bits;
    const char *name;
} view_groups[] = {
    {CMR_VIEW_CINE_SAX, "cine short-axis"},
    {CMR_VIEW_CINE_2CH | CMR_VIEW_CINE_3CH | CMR_VIEW_CINE_4CH, "cine long-axis"},
    {CMR_VIEW_LGE_SAX, "LGE short-axis"},
    {CMR_VIEW_LGE_2CH | CMR_VIEW_LGE_3CH | CMR_VIEW_LGE_4CH, "LGE long-axis"},
};
#define N_VIEW_GROUPS (sizeof view_groups / sizeof view_groups[0])

static int check_records(audit_ctx *a, const char *store_model_id)
{
    int rc;
    for (size_t i = 0; i < a->n; i++) {
        const audit_case *c = &a->cases[i];
        if (!c->uid)
            continue;
        char missing[128] = "";
        size_t n_missing = 0;
        for (size_t g = 0; g < N_VIEW_GROUPS; g++)
            if (!(c->views & view_groups[g].bits)) {
                size_t len = strlen(missing);
                snprintf(missing + len, sizeof missing - len, "%s%s", n_missing ? ", " : "",
                         view_groups[g].name);
                n_missing++;
            }
        /* views == 0: the record says nothing of its views (e.g. imported
         * vectors), which is not evidence of a gap. */
        if (n_missing && c->views &&
            (rc = audit_add(a, CMR_AUDIT_MISSING_VIEW, (long)i, -1, 1.0f, NULL, NULL,
                            "The study has no %s view%s, which the CMR-CLIP input needs.", missing,
                            n_missing > 1 ? "s" : "")))
            return rc;
        if (c->stored && !c->model_ok) {
            if ((rc = audit_add(a, CMR_AUDIT_OUTDATED_MODEL, (long)i, -1, 1.0f, NULL, NULL,
                                "Embedded by model %s, not the store's %s: re-index it.",
                                c->model_id ? c->model_id : "(unknown)", store_model_id)))
                return rc;
        } else if (!c->stored) {
            if ((rc = audit_add(a, CMR_AUDIT_OUTDATED_MODEL, (long)i, -1, 1.0f, NULL, NULL,
                                "The case has no vectors (indexed without a model), so no search finds "
                                "it: re-index it with %s.",
                                *store_model_id ? store_model_id : "a model")))
                return rc;
        } else if (!(c->vectors & (1u << CMR_SPACE_IMAGE))) {
            if ((rc = audit_add(a, CMR_AUDIT_OUTDATED_MODEL, (long)i, -1, 0.8f, NULL, NULL,
                                "The case has no image vector, so image and case queries never find it.")))
                return rc;
        }
        /* A resent duplicate carries no report of its own; its original's
         * report stands for it (the duplicate finding says so). */
        if (!c->has_impression) {
            if (c->dup_partner >= 0)
                continue;
            if (c->has_report)
                rc = audit_add(a, CMR_AUDIT_NO_IMPRESSION, (long)i, -1, 1.0f, NULL, NULL,
                               "The report has no impression, so text queries cannot reach the case and "
                               "its diagnosis cannot be checked against it.");
            else
                rc = audit_add(a, CMR_AUDIT_NO_IMPRESSION, (long)i, -1, 0.9f, NULL, NULL,
                               "No report was found for the study: it has neither impression nor "
                               "diagnosis code.");
            if (rc)
                return rc;
        }
    }
    return 0;
}

/* The store's own check; a problem that names a case ("case 12: ...") is
 * attached to it. */
static int check_store(audit_ctx *a)
{
    cmr_verify_report *v = NULL;
    audit_progress(a, "verifying the store", 0, 1);
    int rc = cmr_store_verify(a->store, &v);
    if (rc)
        return rc;
    for (size_t p = 0; p < v->n_problems && !rc; p++) {
        unsigned long long id = 0;
        long i = sscanf(v->problems[p], "case %llu:", &id) == 1 ? audit_find(a, id) : -1;
        if (i >= 0 && !a->cases[i].uid)
            i = -1;
        rc = audit_add(a, CMR_AUDIT_INCONSISTENCY, i, -1, 1.0f, NULL, NULL, "%s", v->problems[p]);
    }
    cmr_verify_report_free(v);
    audit_progress(a, "verifying the store", 1, 1);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void ctx_free(audit_ctx *a)
{
    for (size_t i = 0; i < a->n; i++) {
        free(a->cases[i].uid);
        free(a->cases[i].model_id);
    }
    free(a->cases);
    for (int s = 0; s < CMR_NSPACES; s++)
        free(a->vec[s]);
    for (size_t c = 0; c < a->n_classes; c++) {
        free(a->classes[c].code);
        free(a->classes[c].label);
    }
    free(a->classes);
    free(a->prompts);
    free(a->prompt_from_reports);
    free(a->dup_pairs);
}

static int audit_run(cmr_store *store, cmr_model *model, const cmr_audit_options *opts,
                     cmr_audit_report **out);

/* FAISS opens an OpenMP team for every single-vector search.  The audit
 * runs thousands of tiny searches, for which the team's start-up and
 * barrier cost far more than the search itself: 12 s against 0.4 s for
 * 300 cases on a busy 2-core machine.  So the audit runs with one thread;
 * nthreads-var belongs to the calling thread and is restored. */
int cmr_audit_run(cmr_store *store, cmr_model *model, const cmr_audit_options *opts,
                  cmr_audit_report **out)
{
#ifdef _OPENMP
    int threads = omp_get_max_threads();
    omp_set_num_threads(1);
#endif
    int rc = audit_run(store, model, opts, out);
#ifdef _OPENMP
    omp_set_num_threads(threads);
#endif
    return rc;
}

static int audit_run(cmr_store *store, cmr_model *model, const cmr_audit_options *opts,
                     cmr_audit_report **out)
{
    if (!store || !out)
        return cmr_fail(CMR_EINVAL, "cmr_audit_run: store and out are required");
    *out = NULL;
    double t0 = now();
    audit_ctx a = {.store = store, .model = model};
    if (opts)
        a.o = *opts;
    else
        cmr_audit_options_init(&a.o);
    if (!a.o.kinds)
        a.o.kinds = CMR_AUDIT_ALL;
    if (a.o.kinds & ~CMR_AUDIT_ALL)
        return cmr_fail(CMR_EINVAL, "cmr_audit_run: unknown kind bits 0x%x", a.o.kinds & ~CMR_AUDIT_ALL);
    if (!(a.o.min_confidence >= 0 && a.o.min_confidence <= 1))
        return cmr_fail(CMR_EINVAL, "the minimum confidence must be in [0, 1]");
    if (!(a.o.dup_cosine == 0 || (a.o.dup_cosine > 0 && a.o.dup_cosine <= 1)))
        return cmr_fail(CMR_EINVAL, "the duplicate cosine threshold must be in (0, 1]");
    if (!a.o.k)
        a.o.k = 20;
    if (!a.o.dup_k)
        a.o.dup_k = 4;
    if (a.o.k > 1000 || a.o.dup_k > 1000)
        return cmr_fail(CMR_EINVAL, "at most 1000 neighbours per case");

    const char *name, *hash;
    cmr_store_model(store, &name, &hash, &a.dim);
    char store_model_id[160] = "";
    if (a.dim)
        snprintf(store_model_id, sizeof store_model_id, "%s@%.16s", name, hash);
    if (model && a.dim &&
        (strcmp(cmr_model_name(model), name) || strcmp(cmr_model_hash(model), hash) ||
         cmr_model_dim(model) != a.dim))
        return cmr_fail(CMR_EMODEL, "the model %s is not the store's (%s): its prompts would not be "
                                    "comparable with the stored vectors",
                        cmr_model_name(model), store_model_id);

    int rc;
    if (!(a.r = calloc(1, sizeof *a.r)))
        return cmr_fail(CMR_ENOMEM, "out of memory for the audit report");
    a.r->kinds = a.o.kinds;
    if ((rc = load(&a, store_model_id)))
        goto fail;
    a.r->cases = a.n;
    for (size_t i = 0; i < a.n; i++)
        a.r->labelled += a.cases[i].cls >= 0;
    a.r->n_classes = a.n_classes;

    /* Duplicates first: the label checks leave them out of each other's
     * neighbours, and a resent copy's missing report is explained by them. */
    const unsigned need_dups =
        (1u << CMR_AUDIT_DUPLICATE) | (1u << CMR_AUDIT_LABEL_ERROR) | (1u << CMR_AUDIT_NO_IMPRESSION);
    if (!a.dim) {
        a.r->kinds &= ~((1u << CMR_AUDIT_DUPLICATE) | (1u << CMR_AUDIT_LABEL_ERROR) |
                        (1u << CMR_AUDIT_CONTRADICTION));
        if ((a.o.kinds & ~a.r->kinds) &&
            (rc = audit_note(&a, "The store has no model and no vectors: duplicates, label errors and "
                                 "contradictions were not looked for.")))
            goto fail;
    } else if ((a.o.kinds & need_dups) && (rc = audit_duplicates(&a))) {
        goto fail;
    }
    if ((rc = check_records(&a, store_model_id)))
        goto fail;
    if (a.dim && (a.o.kinds & ((1u << CMR_AUDIT_LABEL_ERROR) | (1u << CMR_AUDIT_CONTRADICTION))) &&
        (rc = audit_labels(&a)))
        goto fail;
    if ((a.o.kinds & (1u << CMR_AUDIT_INCONSISTENCY)) && (rc = check_store(&a)))
        goto fail;
    a.r->zero_shot = a.prompts != NULL;
    if (a.r->n)
        qsort(a.r->findings, a.r->n, sizeof *a.r->findings, cmp_finding);
    a.r->seconds = now() - t0;
    *out = a.r;
    a.r = NULL;
fail:
    ctx_free(&a);
    cmr_audit_report_free(a.r);
    return rc;
}

/* The report as JSON: the shape of docs/audit.md, used by `cmrsearch audit
 * --json` and the server's /api/v1/audit. */
json_t *cmr_audit_report_to_json(const cmr_audit_report *r, int sound)
{
    json_t *counts = json_object(), *findings = json_array(), *notes = json_array(), *problems = json_array();
    if (!counts || !findings || !notes || !problems) {
        json_decref(counts);
        json_decref(findings);
        json_decref(notes);
        json_decref(problems);
        return NULL;
    }
    for (int k = 0; k < CMR_AUDIT_NKINDS; k++)
        if (r->kinds & (1u << k))
            json_object_set_new(counts, cmr_audit_kind_name((cmr_audit_kind)k), json_integer((json_int_t)r->count[k]));
    for (size_t i = 0; i < r->n_notes; i++)
        json_array_append_new(notes, cmr_json_text(r->notes[i]));
    for (size_t i = 0; i < r->n; i++) {
        const cmr_audit_finding *f = &r->findings[i];
        json_t *o = json_pack("{s:s, s:f, s:o, s:o, s:o}", "kind", cmr_audit_kind_name(f->kind), "confidence",
                              (double)f->confidence, "case_id",
                              f->case_id ? json_integer((json_int_t)f->case_id) : json_null(), "study_uid",
                              cmr_json_text(f->study_uid), "reason", cmr_json_text(f->reason));
        if (!o)
            continue;
        if (f->other_id) {
            json_object_set_new(o, "other_case_id", json_integer((json_int_t)f->other_id));
            json_object_set_new(o, "other_study_uid", cmr_json_text(f->other_uid));
        }
        if (f->recorded)
            json_object_set_new(o, "recorded", cmr_json_text(f->recorded));
        if (f->suggested)
            json_object_set_new(o, "suggested", cmr_json_text(f->suggested));
        if (f->kind == CMR_AUDIT_INCONSISTENCY)
            json_array_append_new(problems, cmr_json_text(f->reason));
        json_array_append_new(findings, o);
    }
    return json_pack("{s:s, s:b, s:I, s:I, s:I, s:I, s:f, s:b, s:f, s:{s:f, s:f}, s:o, s:o, s:o, s:o}", "kind",
                     "audit", "sound", sound, "cases", (json_int_t)r->cases, "cases_checked", (json_int_t)r->cases,
                     "labelled", (json_int_t)r->labelled, "classes", (json_int_t)r->n_classes, "duplicate_cosine",
                     (double)r->dup_cosine, "zero_shot", r->zero_shot, "seconds", r->seconds,
                     "label_error_calibration", "platt_a", AUDIT_PLATT_A, "platt_b", AUDIT_PLATT_B, "counts",
                     counts, "notes", notes, "problems", problems, "findings", findings);
}
