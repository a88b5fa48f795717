/* Scoring an audit against a cmr-phantom truth.json (docs/audit.md):
 *   label_error    <- "label_noise"  (the report's code and impression name
 *                                     another diagnosis than the images show)
 *   duplicate      <- "duplicate_of" (pairs: a resend and its original, or two
 *                                     resends of one original)
 *   missing_view   <- "missing_lge", "missing_lax"
 *   contradiction  <- "contradiction"
 *   no_impression  <- "no_impression"
 * Outdated models and inconsistencies are never planted: not scored. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit_internal.h"

typedef struct truth_study {
    const char *uid;
    const char *root;      /* the original's uid for a resend, else its own */
    unsigned kinds;        /* bit per cmr_audit_kind planted */
    int in_store;
} truth_study;

static int cmp_study(const void *x, const void *y)
{
    return strcmp(((const truth_study *)x)->uid, ((const truth_study *)y)->uid);
}

static truth_study *find(truth_study *s, size_t n, const char *uid)
{
    truth_study key = {.uid = uid};
    return uid && n ? bsearch(&key, s, n, sizeof *s, cmp_study) : NULL;
}

static void ratio(cmr_audit_score *s)
{
    s->precision = s->found ? (double)s->hits / (double)s->found : NAN;
    s->recall = s->truth ? (double)s->hits / (double)s->truth : NAN;
}

int cmr_audit_score_truth(cmr_store *store, const cmr_audit_report *r, const char *truth_path,
                          float min_confidence, cmr_audit_score scores[CMR_AUDIT_NKINDS])
{
    if (!store || !r || !truth_path || !scores)
        return cmr_fail(CMR_EINVAL, "cmr_audit_score_truth: store, report, truth and scores are required");
    memset(scores, 0, CMR_AUDIT_NKINDS * sizeof *scores);
    json_error_t err;
    json_t *root = json_load_file(truth_path, 0, &err);
    if (!root)
        return cmr_fail(err.line > 0 ? CMR_EFORMAT : CMR_ENOTFOUND, "%s: %s%s%d: %s", truth_path,
                        err.line > 0 ? "" : "cannot read", err.line > 0 ? "line " : " (", err.line,
                        err.text);
    json_t *list = json_object_get(root, "study_list");
    int rc = 0;
    truth_study *st = NULL;
    size_t n = json_array_size(list);
    if (!json_is_array(list)) {
        rc = cmr_fail(CMR_EFORMAT, "%s: no \"study_list\" array (not a cmr-phantom truth.json)", truth_path);
        goto done;
    }
    if (!(st = calloc(n ? n : 1, sizeof *st))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for %zu truth studies", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        json_t *s = json_array_get(list, i), *problems = json_object_get(s, "problems");
        st[i].uid = json_string_value(json_object_get(s, "study_uid"));
        if (!st[i].uid || !json_is_array(problems)) {
            rc = cmr_fail(CMR_EFORMAT, "%s: study %zu lacks \"study_uid\" or \"problems\"", truth_path, i);
            goto done;
        }
        const char *of = json_string_value(json_object_get(s, "duplicate_of"));
        st[i].root = of ? of : st[i].uid;
        for (size_t p = 0; p < json_array_size(problems); p++) {
            const char *name = json_string_value(json_array_get(problems, p));
            if (!name)
                continue;
            if (!strcmp(name, "label_noise"))
                st[i].kinds |= 1u << CMR_AUDIT_LABEL_ERROR;
            else if (!strcmp(name, "missing_lge") || !strcmp(name, "missing_lax"))
                st[i].kinds |= 1u << CMR_AUDIT_MISSING_VIEW;
            else if (!strcmp(name, "contradiction"))
                st[i].kinds |= 1u << CMR_AUDIT_CONTRADICTION;
            else if (!strcmp(name, "no_impression"))
                st[i].kinds |= 1u << CMR_AUDIT_NO_IMPRESSION;
        }
        uint64_t id;
        int found = cmr_store_find_uid(store, st[i].uid, &id);
        if (found && found != CMR_ENOTFOUND) {
            rc = found;
            goto done;
        }
        st[i].in_store = found == 0;
    }
    qsort(st, n, sizeof *st, cmp_study);
    for (size_t i = 1; i < n; i++)
        if (!strcmp(st[i].uid, st[i - 1].uid)) {
            rc = cmr_fail(CMR_EFORMAT, "%s: study %s is listed twice", truth_path, st[i].uid);
            goto done;
        }

    const cmr_audit_kind per_study[] = {CMR_AUDIT_LABEL_ERROR, CMR_AUDIT_MISSING_VIEW,
                                        CMR_AUDIT_CONTRADICTION, CMR_AUDIT_NO_IMPRESSION};
    for (size_t k = 0; k < sizeof per_study / sizeof *per_study; k++) {
        cmr_audit_kind kind = per_study[k];
        cmr_audit_score *s = &scores[kind];
        if (!(r->kinds & (1u << kind)))
            continue;
        s->scored = 1;
        for (size_t i = 0; i < n; i++)
            s->truth += st[i].in_store && (st[i].kinds >> kind & 1);
        for (size_t f = 0; f < r->n; f++) {
            const cmr_audit_finding *fd = &r->findings[f];
            if (fd->kind != kind || fd->confidence < min_confidence || !fd->study_uid)
                continue;
            truth_study *t = find(st, n, fd->study_uid);
            s->found++;
            s->hits += t && (t->kinds >> kind & 1);
        }
        ratio(s);
    }

    /* Duplicates: every pair of present studies sharing a root is planted. */
    if (r->kinds & (1u << CMR_AUDIT_DUPLICATE)) {
        cmr_audit_score *s = &scores[CMR_AUDIT_DUPLICATE];
        s->scored = 1;
        /* group sizes per root, counted over present studies */
        for (size_t i = 0; i < n; i++) {
            if (!st[i].in_store || st[i].root == st[i].uid)
                continue;
            truth_study *orig = find(st, n, st[i].root);
            size_t members = orig && orig->in_store ? 1 : 0; /* the original */
            /* pairs with the original and with earlier resends of the same root */
            for (size_t j = 0; j < n; j++)
                if (j != i && st[j].in_store && st[j].root != st[j].uid && !strcmp(st[j].root, st[i].root) &&
                    strcmp(st[j].uid, st[i].uid) < 0)
                    members++;
            s->truth += members;
        }
        for (size_t f = 0; f < r->n; f++) {
            const cmr_audit_finding *fd = &r->findings[f];
            if (fd->kind != CMR_AUDIT_DUPLICATE || fd->confidence < min_confidence)
                continue;
            truth_study *x = find(st, n, fd->study_uid), *y = find(st, n, fd->other_uid);
            s->found++;
            s->hits += x && y && !strcmp(x->root, y->root);
        }
        ratio(s);
    }
done:
    free(st);
    json_decref(root);
    return rc;
}
