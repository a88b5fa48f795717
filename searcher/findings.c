/* The prompt bank and finding scores (docs/searching.md).
 *
 * One bank for the whole program: the searcher scores studies with it at
 * index time, and `cmrsearch eval` measures it (cli/eval_labels.c).  Each
 * CMR-CLIP finding keeps the paper's prompts word for word (`paper`, what
 * eval's findings part uses, comparable with the paper); the prompts that
 * score (`positive` against `negative`) are the paper's where they rank the
 * phantom's studies well, else report phrasing (docs/searching.md has the
 * AUC of both). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_searcher.h"

#define P(...) (const char *const[]){__VA_ARGS__, NULL}

static const cmr_finding_def bank[] = {
    {"lv_systolic_dysfunction", "LV systolic dysfunction", CMR_FINDING_BINARY,
     P("Left ventricle with systolic dysfunction"),
     P("Left ventricle with normal systolic function"),
     P("Left ventricle with systolic dysfunction")},
    {"rv_systolic_dysfunction", "RV systolic dysfunction", CMR_FINDING_BINARY,
     P("Right ventricle with systolic dysfunction"),
     P("Right ventricle with normal systolic function"),
     P("Right ventricle with systolic dysfunction")},
    {"lv_dilation", "LV dilation", CMR_FINDING_BINARY,
     P("Left ventricle is dilated", "Left ventricle is enlarged in size"),
     P("Left ventricle is normal in size"),
     P("Left ventricle is dilated", "Left ventricle is enlarged in size")},
    {"rv_dilation", "RV dilation", CMR_FINDING_BINARY,
     P("dilated right ventricle"),
     P("normal RV size and function"),
     P("Right ventricle is dilated", "Right ventricle is enlarged in size")},
    {"lv_hypertrophy", "LV hypertrophy", CMR_FINDING_BINARY,
     P("concentric left ventricular hypertrophy", "asymmetric septal hypertrophy"),
     P("normal left ventricular wall thickness"),
     P("There is left ventricular hypertrophy", "There is septal hypertrophy", "LV is thickened")},
    {"lge", "Late gadolinium enhancement", CMR_FINDING_BINARY,
     P("late gadolinium enhancement is present"),
     P("no late gadolinium enhancement"),
     P("Delayed-enhancement imaging reveals transmural enhancement",
       "Delayed-enhancement imaging reveals patchy enhancement", "There is a large area of LAD scar")},
    {"aortic_dilation", "Aortic dilation", CMR_FINDING_BINARY,
     P("The ascending aorta is dilated", "Mildly dilated ascending aorta"),
     P("The aorta is normal in size"), NULL},
    /* One short phrase per diagnosis, as a cardiologist would write it. */
    {"normal", "Normal", CMR_FINDING_DIAGNOSIS, P("normal cardiac MRI"), NULL, NULL},
    {"hcm", "Hypertrophic cardiomyopathy", CMR_FINDING_DIAGNOSIS, P("hypertrophic cardiomyopathy"), NULL, NULL},
    {"amyloidosis", "Cardiac amyloidosis", CMR_FINDING_DIAGNOSIS, P("cardiac amyloidosis"), NULL, NULL},
    {"dcm", "Dilated cardiomyopathy", CMR_FINDING_DIAGNOSIS, P("dilated cardiomyopathy"), NULL, NULL},
    {"icm", "Ischemic cardiomyopathy", CMR_FINDING_DIAGNOSIS, P("ischemic cardiomyopathy"), NULL, NULL},
    {"myocarditis", "Myocarditis", CMR_FINDING_DIAGNOSIS, P("myocarditis"), NULL, NULL},
    {"sarcoidosis", "Cardiac sarcoidosis", CMR_FINDING_DIAGNOSIS, P("cardiac sarcoidosis"), NULL, NULL},
    {"lvnc", "LV noncompaction", CMR_FINDING_DIAGNOSIS, P("left ventricular noncompaction"), NULL, NULL},
    {"fabry", "Fabry disease", CMR_FINDING_DIAGNOSIS, P("Fabry disease"), NULL, NULL},
    {"arvc", "Arrhythmogenic RV cardiomyopathy", CMR_FINDING_DIAGNOSIS,
     P("arrhythmogenic right ventricular cardiomyopathy"), NULL, NULL},
};
#define N_BANK (sizeof bank / sizeof bank[0])

size_t cmr_finding_bank_size(void) { return N_BANK; }

const cmr_finding_def *cmr_finding_bank(size_t i) { return i < N_BANK ? &bank[i] : NULL; }

int cmr_finding_lookup(const char *key, size_t *index)
{
    for (size_t i = 0; i < N_BANK; i++)
        if (key && !strcmp(bank[i].key, key)) {
            *index = i;
            return 0;
        }
    char list[512] = "";
    for (size_t i = 0; i < N_BANK; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, bank[i].key, sizeof list - strlen(list) - 1);
    }
    return cmr_fail(CMR_ENOTFOUND, "unknown finding '%.40s' (findings: %s)", key ? key : "(null)", list);
}

struct cmr_findings {
    unsigned dim;
    float *pos, *neg; /* N_BANK x dim: mean prompt embeddings (neg unused for diagnoses) */
};

/* The mean of a prompt list's embeddings: its inner product with a unit
 * image vector is the mean cosine to the prompts. */
static int encode_mean(cmr_model *m, const char *const *prompts, unsigned dim, float *mean, float *tmp)
{
    size_t n = 0;
    memset(mean, 0, dim * sizeof *mean);
    for (; prompts && prompts[n]; n++) {
        int rc = cmr_model_encode_text(m, prompts[n], tmp);
        if (rc)
            return cmr_fail_context(rc, "prompt \"%s\": ", prompts[n]);
        for (unsigned d = 0; d < dim; d++)
            mean[d] += tmp[d];
    }
    for (unsigned d = 0; d < dim && n; d++)
        mean[d] /= (float)n;
    return 0;
}

int cmr_findings_new(cmr_model *model, cmr_findings **out)
{
    *out = NULL;
    if (!model)
        return cmr_fail(CMR_EINVAL, "finding scores need a model");
    unsigned dim = cmr_model_dim(model);
    cmr_findings *f = calloc(1, sizeof *f);
    float *tmp = malloc((dim ? dim : 1) * sizeof *tmp);
    int rc = 0;
    if (!f || !tmp || !(f->pos = calloc(N_BANK * (size_t)dim, sizeof *f->pos)) ||
        !(f->neg = calloc(N_BANK * (size_t)dim, sizeof *f->neg))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for the prompt bank");
        goto fail;
    }
    f->dim = dim;
    for (size_t i = 0; i < N_BANK && !rc; i++) {
        rc = encode_mean(model, bank[i].positive, dim, f->pos + i * dim, tmp);
        if (!rc && bank[i].kind == CMR_FINDING_BINARY)
            rc = encode_mean(model, bank[i].negative, dim, f->neg + i * dim, tmp);
    }
    if (rc)
        goto fail;
    free(tmp);
    *out = f;
    return 0;
fail:
    free(tmp);
    cmr_findings_free(f);
    return rc;
}

void cmr_findings_free(cmr_findings *f)
{
    if (!f)
        return;
    free(f->pos);
    free(f->neg);
    free(f);
}

size_t cmr_findings_count(const cmr_findings *f) { return f ? N_BANK : 0; }

const char *cmr_findings_name(const cmr_findings *f, size_t i) { return f && i < N_BANK ? bank[i].key : NULL; }

unsigned cmr_findings_dim(const cmr_findings *f) { return f ? f->dim : 0; }

static double dotd(const float *a, const float *b, unsigned n)
{
    double s = 0;
    for (unsigned i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

int cmr_findings_score(const cmr_findings *f, const float *image_vec, float *scores)
{
    unsigned dim = f->dim;
    double norm = sqrt(dotd(image_vec, image_vec, dim));
    if (!(norm > 1e-15) || !isfinite(norm))
        return cmr_fail(CMR_EINVAL, "finding scores: the image vector is zero or not finite");
    double cosine[N_BANK];
    for (size_t i = 0; i < N_BANK; i++) {
        cosine[i] = dotd(image_vec, f->pos + i * dim, dim) / norm;
        if (bank[i].kind == CMR_FINDING_BINARY) {
            double z = CMR_FINDINGS_SCALE * (cosine[i] - dotd(image_vec, f->neg + i * dim, dim) / norm);
            scores[i] = (float)(1.0 / (1.0 + exp(-z)));
        }
    }
    /* A diagnosis against the likeliest other one: above 0.5 exactly when it
     * is the model's first choice, so "has hcm" means "reads as HCM". */
    for (size_t i = 0; i < N_BANK; i++) {
        if (bank[i].kind != CMR_FINDING_DIAGNOSIS)
            continue;
        double other = -INFINITY;
        for (size_t j = 0; j < N_BANK; j++)
            if (j != i && bank[j].kind == CMR_FINDING_DIAGNOSIS && cosine[j] > other)
                other = cosine[j];
        scores[i] = (float)(1.0 / (1.0 + exp(-CMR_FINDINGS_SCALE * (cosine[i] - other))));
    }
    /* Rounding can leave a hair outside [0, 1]; the store refuses that. */
    for (size_t i = 0; i < N_BANK; i++)
        scores[i] = scores[i] < 0 ? 0 : scores[i] > 1 ? 1 : scores[i];
    return 0;
}

int cmr_findings_score_named(const cmr_findings *f, const float *image_vec, cmr_finding_score *out)
{
    float scores[N_BANK];
    int rc = cmr_findings_score(f, image_vec, scores);
    for (size_t i = 0; i < N_BANK && !rc; i++)
        out[i] = (cmr_finding_score){bank[i].key, scores[i]};
    return rc;
}

int cmr_findings_store_scorer(void *user, const float *image_unit, cmr_finding_score *out, size_t max,
                              size_t *n)
{
    *n = 0;
    if (max < N_BANK)
        return cmr_fail(CMR_EINVAL, "finding scorer: room for %zu scores, the bank has %zu", max, N_BANK);
    int rc = cmr_findings_score_named(user, image_unit, out);
    if (!rc)
        *n = N_BANK;
    return rc;
}

static int rescore(cmr_store *store, const cmr_findings *f, int only_missing, size_t *n_scored)
{
    enum { BATCH = 256 };
    unsigned dim;
    cmr_store_model(store, NULL, NULL, &dim);
    if (n_scored)
        *n_scored = 0;
    if (!dim)
        return 0; /* no vectors: nothing to score */
    if (dim != f->dim)
        return cmr_fail(CMR_EMODEL, "the prompt bank has dimension %u, the store's vectors %u", f->dim, dim);
    uint64_t *ids = NULL;
    size_t n = 0, done = 0;
    float *v = malloc(dim * sizeof *v);
    cmr_txn *t = NULL;
    int rc = v ? cmr_store_list(store, &ids, &n) : cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n && !rc; i++) {
        if (only_missing) {
            cmr_case *c;
            if ((rc = cmr_store_get(store, ids[i], &c)))
                break;
            int has = c->n_findings > 0 || !(c->vectors & 1u << CMR_SPACE_IMAGE);
            cmr_case_free(c);
            if (has)
                continue;
        }
        int got = cmr_store_get_vector(store, ids[i], CMR_SPACE_IMAGE, v);
        if (got == CMR_ENOTFOUND) {
            cmr_clear_error();
            continue; /* no image vector: no scores */
        }
        cmr_finding_score scores[N_BANK];
        if ((rc = got) || (rc = cmr_findings_score_named(f, v, scores)))
            break;
        if (!t && (rc = cmr_txn_begin(store, &t)))
            break;
        if ((rc = cmr_txn_set_findings(t, ids[i], N_BANK, scores)))
            break;
        if (++done % BATCH == 0) {
            rc = cmr_txn_commit(t);
            t = NULL;
        }
    }
    if (t && !rc)
        rc = cmr_txn_commit(t);
    else if (t)
        cmr_txn_abort(t);
    if (n_scored && !rc)
        *n_scored = done;
    free(ids);
    free(v);
    return rc;
}

int cmr_findings_rescore(cmr_store *store, const cmr_findings *f, size_t *n_scored)
{
    return rescore(store, f, 0, n_scored);
}

int cmr_findings_score_missing(cmr_store *store, const cmr_findings *f, size_t *n_scored)
{
    return rescore(store, f, 1, n_scored);
}
