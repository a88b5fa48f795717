/* Near-duplicate studies (docs/audit.md).  A study sent again under new
 * UIDs re-uses the same pixels, so its image vector is (near-)identical to
 * the original's.  Every case asks the store's image index for its few
 * nearest cases, the same patient's included: O(n · k) searches, never an
 * n × n matrix.  The cosine threshold comes from the data: the distances
 * 1 − cos to each case's nearest neighbour split into a cluster of copies
 * (near 0) and the bulk, and the threshold sits in the widest gap (in
 * decades) below the bulk.  Metadata (patient key, date, views) then
 * confirms or weakens each pair; a pair between that threshold and cosine
 * 0.99 counts only when it is the same patient on the same day. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "audit_internal.h"

/* Below this distance two vectors are copies whatever the data says
 * (float rounding of one tensor embedded twice); above the ceiling they
 * are never called duplicates (cos < 0.99: different acquisitions). */
#define DUP_D_FLOOR 1e-5
#define DUP_D_CEIL 1e-2
/* A gap of at least this many decades separates copies from the bulk. */
#define DUP_MIN_GAP 1.0

typedef struct pair {
    long i, j;
    float cos;
} pair;

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

static int cmp_pair(const void *x, const void *y)
{
    const pair *a = x, *b = y;
    if (a->i != b->i)
        return a->i < b->i ? -1 : 1;
    return (a->j > b->j) - (a->j < b->j);
}

/* The threshold on d = 1 − cos from the nearest-neighbour distances
 * nn[0..n): the geometric middle of the widest gap (in log10 d) between
 * consecutive sorted values that lies below the median, when that gap spans
 * at least DUP_MIN_GAP decades; otherwise (no clear cluster of copies)
 * DUP_D_FLOOR.  Clamped to [DUP_D_FLOOR, DUP_D_CEIL]. */
double audit_dup_threshold(double *nn, size_t n)
{
    if (n < 2)
        return DUP_D_FLOOR;
    qsort(nn, n, sizeof *nn, cmp_double);
    double median = nn[n / 2];
    double best_gap = 0, thr = DUP_D_FLOOR;
    for (size_t k = 0; k + 1 < n && nn[k + 1] <= median; k++) {
        double lo = log10(fmax(nn[k], 1e-9)), hi = log10(fmax(nn[k + 1], 1e-9));
        if (hi - lo > best_gap) {
            best_gap = hi - lo;
            thr = pow(10, (lo + hi) / 2);
        }
    }
    if (best_gap < DUP_MIN_GAP)
        thr = DUP_D_FLOOR;
    return thr < DUP_D_FLOOR ? DUP_D_FLOOR : thr > DUP_D_CEIL ? DUP_D_CEIL : thr;
}

/* The same patient on the same day: with cosine >= 0.99 a resend in which
 * an image differs (one file lost or damaged in either copy moves the vector
 * by ~1e-3, above the data's threshold for exact copies). */
static int same_visit(const audit_case *x, const audit_case *y)
{
    return x->has_patient_key && y->has_patient_key &&
           !memcmp(x->patient_key, y->patient_key, CMR_PATIENT_KEY_BYTES) && x->date && x->date == y->date;
}

static int add_pair(pair **pairs, size_t *n, size_t *cap, long i, long j, float cos)
{
    if (*n == *cap) {
        size_t c = *cap ? 2 * *cap : 64;
        pair *grown = realloc(*pairs, c * sizeof *grown);
        if (!grown)
            return cmr_fail(CMR_ENOMEM, "out of memory for duplicate candidates");
        *pairs = grown;
        *cap = c;
    }
    (*pairs)[(*n)++] = (pair){i < j ? i : j, i < j ? j : i, cos};
    return 0;
}

int audit_duplicates(audit_ctx *a)
{
    size_t n_cand = 0, cap = 0, n_nn = 0;
    pair *cand = NULL;
    double *nn = malloc((a->n ? a->n : 1) * sizeof *nn);
    int rc = 0;
    if (!nn)
        return cmr_fail(CMR_ENOMEM, "out of memory for %zu cases", a->n);
    /* candidates kept: within the ceiling, or within the user's threshold */
    double keep_d = a->o.dup_cosine > 0 ? fmax(DUP_D_CEIL, 1.0 - (double)a->o.dup_cosine) : DUP_D_CEIL;
    size_t n_img = 0;
    for (size_t i = 0; i < a->n; i++)
        n_img += a->cases[i].uid && (a->cases[i].vectors & (1u << CMR_SPACE_IMAGE));
    for (size_t i = 0, done = 0; i < a->n; i++) {
        const audit_case *c = &a->cases[i];
        if (!c->uid || !(c->vectors & (1u << CMR_SPACE_IMAGE)))
            continue;
        cmr_hits *hits = NULL;
        if ((rc = cmr_store_search_case(a->store, c->id, CMR_SPACE_IMAGE, CMR_SPACE_IMAGE, a->o.dup_k,
                                        NULL, 1, &hits)))
            goto fail;
        for (size_t h = 0; h < hits->n; h++) {
            long j = audit_find(a, hits->hits[h].id);
            if (j < 0 || !a->cases[j].uid || !(a->cases[j].vectors & (1u << CMR_SPACE_IMAGE)))
                continue;
            if (h == 0)
                nn[n_nn++] = fmax(0.0, 1.0 - (double)hits->hits[h].score);
            /* Keep anything within the ceiling; the data's threshold is
             * known only when every case has been searched. */
            if (1.0 - (double)hits->hits[h].score <= keep_d &&
                (rc = add_pair(&cand, &n_cand, &cap, (long)i, j, hits->hits[h].score))) {
                cmr_hits_free(hits);
                goto fail;
            }
        }
        cmr_hits_free(hits);
        if (++done % 64 == 0)
            audit_progress(a, "near-duplicates", done, n_img);
    }
    audit_progress(a, "near-duplicates", n_img, n_img);

    double thr_d = a->o.dup_cosine > 0 ? 1.0 - (double)a->o.dup_cosine : audit_dup_threshold(nn, n_nn);
    a->r->dup_cosine = (float)(1.0 - thr_d);
    if (n_cand)
        qsort(cand, n_cand, sizeof *cand, cmp_pair);
    size_t n_pairs = 0;
    for (size_t p = 0; p < n_cand; p++) {
        if (p && cand[p].i == cand[p - 1].i && cand[p].j == cand[p - 1].j)
            continue; /* found from both ends */
        double d = fmax(0.0, 1.0 - (double)cand[p].cos);
        if (d > thr_d && !(d <= DUP_D_CEIL && same_visit(&a->cases[cand[p].i], &a->cases[cand[p].j])))
            continue;
        cand[n_pairs++] = cand[p];
    }
    free(a->dup_pairs);
    a->n_dup_pairs = 0;
    if (!(a->dup_pairs = malloc((n_pairs ? n_pairs : 1) * 2 * sizeof *a->dup_pairs))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for duplicate pairs");
        goto fail;
    }
    for (size_t p = 0; p < n_pairs; p++) {
        long i = cand[p].i, j = cand[p].j;
        audit_case *x = &a->cases[i], *y = &a->cases[j];
        a->dup_pairs[2 * p] = i;
        a->dup_pairs[2 * p + 1] = j;
        a->n_dup_pairs++;
        if (x->has_impression && !y->has_impression)
            y->dup_partner = (int)i;
        else if (y->has_impression && !x->has_impression)
            x->dup_partner = (int)j;

        /* Confidence: the vectors alone say "same images" (0.6, up to 0.8
         * the closer they are below the threshold); each agreeing piece of
         * metadata adds to it, a disagreeing patient key takes away (two
         * patients with one set of images is worth a look, but is more
         * likely a phantom-like test series than a resend). */
        double d = fmax(0.0, 1.0 - (double)cand[p].cos);
        /* Above the data's threshold (a same-visit pair, see same_visit)
         * the vectors vouch for less: 0.4 down to 0.3 at the ceiling. */
        double conf = d <= thr_d ? 0.6 + 0.2 * (thr_d > 0 ? 1.0 - d / thr_d : 1.0)
                                 : 0.4 - 0.1 * (d - thr_d) / (DUP_D_CEIL - thr_d);
        int same_patient = x->has_patient_key && y->has_patient_key &&
                           !memcmp(x->patient_key, y->patient_key, CMR_PATIENT_KEY_BYTES);
        int other_patient = x->has_patient_key && y->has_patient_key && !same_patient;
        int same_date = x->date && x->date == y->date;
        int same_views = x->views && x->views == y->views;
        conf += same_patient ? 0.1 : other_patient ? -0.2 : 0;
        conf += same_date ? 0.05 : (x->date && y->date ? -0.05 : 0);
        conf += same_views ? 0.05 : (x->views && y->views ? -0.05 : 0);
        /* The copy without a report points at the original. */
        long first = (x->has_impression && !y->has_impression) ? j : i, second = first == i ? j : i;
        if ((rc = audit_add(a, CMR_AUDIT_DUPLICATE, first, second, (float)conf, NULL, NULL,
                            "Image vectors agree to cosine %.6f (duplicate threshold %.6f); %s patient, "
                            "%s date, %s views%s.",
                            cand[p].cos, 1.0 - thr_d,
                            same_patient ? "same" : other_patient ? "a different" : "unknown",
                            same_date ? "same" : (x->date && y->date) ? "a different" : "unknown",
                            same_views ? "same" : (x->views && y->views) ? "different" : "unknown",
                            a->cases[first].has_impression ? ""
                                                            : "; this copy has no report of its own")))
            goto fail;
    }
fail:
    free(cand);
    free(nn);
    return rc;
}
