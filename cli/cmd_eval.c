/* cmrsearch eval: the CMR-CLIP paper's evaluation protocol on a labelled
 * store (docs/eval.md): retrieval, case -> case precision@k, zero-shot
 * diagnosis and findings, SimpleShot few-shot.  This file gathers cases,
 * labels and prompts and builds the one JSON document that the table, --json
 * and --html all show; the metrics are in eval.c, the rendering in
 * eval_html.c. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "eval.h"

#define DEFAULT_K 10
#define MAX_K 1000
#define DEFAULT_EPISODES 100
#define ROC_MAX_POINTS 200

static const char usage[] =
    "usage: cmrsearch eval --db DIR [--model DIR] [--labels FILE] [--classes a,b,c]\n"
    "                      [--prompts FILE] [-k N] [--episodes N] [--seed S]\n"
    "                      [--exclude-same-patient] [--json] [--html FILE]\n"
    "\n"
    "The CMR-CLIP evaluation protocol on the labelled cases of a store: image <-> text\n"
    "retrieval, case -> case precision@k by label, zero-shot diagnosis and findings\n"
    "from text prompts (needs --model), SimpleShot few-shot accuracy.\n"
    "\n"
    "  --model DIR       the store's model, to embed prompts; without it the\n"
    "                    zero-shot parts are skipped\n"
    "  --labels FILE     labels: a CSV of study_uid,label, or a cmr-phantom\n"
    "                    truth.json (diagnosis key and findings from its params);\n"
    "                    default: each case's first diagnosis code in the store\n"
    "  --classes LIST    labels for zero-shot and few-shot (default: all present)\n"
    "  --prompts FILE    JSON {label: [prompt, ...]} replacing the built-in prompts\n"
    "  -k N              neighbours for precision@k (default 10)\n"
    "  --episodes N      few-shot episodes per support size (default 100)\n"
    "  --seed S          seed of the few-shot episodes (default 0)\n"
    "  --exclude-same-patient  precision@k ignores the patient's other studies\n"
    "  --json            print one JSON document\n"
    "  --html FILE       also write an HTML report with plots\n";


typedef struct eval_ctx {
    /* request */
    const char *db, *model_path, *labels_path, *classes_text, *prompts_path;
    const char *k_text, *episodes_text, *seed_text, *html_path;
    int exclude_same_patient;
    size_t k, episodes;
    uint64_t seed;
    eval_labels lab; /* classes, and the labels file if any */
    /* the labelled cases */
    size_t n, cap, total_cases;
    unsigned dim;
    int *cls;
    uint64_t *group;
    int8_t (*finding)[EVAL_N_FINDINGS];
    float *image, *text;
    uint8_t *has; /* bit 0 image, bit 1 text */
    json_t *prompts;   /* --prompts document */
    json_t *notes;
} eval_ctx;


/* ---- gathering the cases -------------------------------------------------------------- */

static int grow_cases(eval_ctx *e)
{
    size_t cap = e->cap ? 2 * e->cap : 256, d = e->dim;
    int ok = 1;
    EVAL_GROW(ok, e->cls, cap);
    EVAL_GROW(ok, e->group, cap);
    EVAL_GROW(ok, e->finding, cap);
    EVAL_GROW(ok, e->image, cap * d);
    EVAL_GROW(ok, e->text, cap * d);
    EVAL_GROW(ok, e->has, cap);
    if (!ok)
        return cmr_fail(CMR_ENOMEM, "out of memory for %zu cases", cap);
    e->cap = cap;
    return 0;
}

static int gather(eval_ctx *e, cmr_store *store)
{
    uint64_t *ids = NULL;
    size_t n_ids;
    int rc = cmr_store_list(store, &ids, &n_ids);
    if (rc)
        return rc;
    e->total_cases = n_ids;
    for (size_t i = 0; i < n_ids && !rc; i++) {
        cmr_case *c = NULL;
        if ((rc = cmr_store_get(store, ids[i], &c)))
            break;
        int cls = -1;
        const eval_label_entry *le = NULL;
        if (e->labels_path) {
            le = eval_labels_find(&e->lab, c->study_uid);
            cls = le ? le->cls : -1;
        } else if (c->n_diagnoses) {
            cls = eval_labels_class(&e->lab, c->diagnoses[0].code, c->diagnoses[0].label);
            rc = cls < 0 ? cls : 0;
        }
        if (cls >= 0 && c->vectors && !(rc = e->n == e->cap ? grow_cases(e) : 0)) {
            size_t k = e->n, d = e->dim;
            e->cls[k] = cls;
            /* 8 bytes of an HMAC are as good as 32 at telling patients apart;
             * the top bit separates them from cases without a key */
            uint64_t g = (uint64_t)(i + 1) | 1ull << 63;
            if (c->has_patient_key) {
                memcpy(&g, c->patient_key, sizeof g);
                g &= ~(1ull << 63);
            }
            e->group[k] = g;
            if (le)
                memcpy(e->finding[k], le->finding, sizeof le->finding);
            else
                memset(e->finding[k], -1, sizeof e->finding[k]);
            e->has[k] = (uint8_t)(c->vectors & 3u);
            if ((e->has[k] & 1) && !rc)
                rc = cmr_store_get_vector(store, ids[i], CMR_SPACE_IMAGE, e->image + k * d);
            if ((e->has[k] & 2) && !rc)
                rc = cmr_store_get_vector(store, ids[i], CMR_SPACE_TEXT, e->text + k * d);
            e->lab.count[cls]++;
            e->n++;
        }
        cmr_case_free(c);
    }
    free(ids);
    return rc;
}

/* ---- JSON helpers ------------------------------------------------------------------------- */

static json_t *num(double v)
{
    return isfinite(v) ? json_real(v) : json_null();
}

static json_t *roc_json(const float *scores, const int *positive, size_t n)
{
    double *fpr, *tpr;
    size_t m;
    if (eval_roc(scores, positive, n, &fpr, &tpr, &m))
        return NULL;
    json_t *jf = json_array(), *jt = json_array();
    /* evenly spaced points keep a 10,000-case curve's shape in 200 */
    size_t step = m > ROC_MAX_POINTS ? (m + ROC_MAX_POINTS - 1) / ROC_MAX_POINTS : 1;
    for (size_t i = 0; i < m; i += step) {
        size_t j = i + step >= m ? m - 1 : i;
        json_array_append_new(jf, json_real(fpr[j]));
        json_array_append_new(jt, json_real(tpr[j]));
        if (j == m - 1)
            break;
    }
    free(fpr);
    free(tpr);
    return json_pack("{s:o, s:o}", "fpr", jf, "tpr", jt);
}

static void note(eval_ctx *e, const char *text)
{
    json_array_append_new(e->notes, json_string(text));
}

/* Rows of a matrix picked by an index list, packed. */
static float *pick_rows(const float *x, size_t dim, const size_t *idx, size_t n)
{
    float *out = malloc((n ? n : 1) * dim * sizeof *out);
    for (size_t i = 0; out && i < n; i++)
        memcpy(out + i * dim, x + idx[i] * dim, dim * sizeof *out);
    return out;
}

/* ---- the parts of the protocol -------------------------------------------------------------- */

static json_t *summary_json(const eval_rank_summary *s)
{
    return json_pack("{s:o, s:o, s:o, s:o, s:o, s:o}", "r1", num(s->recall[0]), "r5",
                     num(s->recall[1]), "r10", num(s->recall[2]), "r50", num(s->recall[3]),
                     "median_rank", num(s->median_rank), "mean_rank", num(s->mean_rank));
}

static int part_retrieval(eval_ctx *e, json_t *doc)
{
    size_t d = e->dim, n = 0;
    size_t *idx = malloc((e->n ? e->n : 1) * sizeof *idx), *ranks = NULL;
    float *im = NULL, *tx = NULL;
    int rc = CMR_ENOMEM;
    for (size_t i = 0; idx && i < e->n; i++)
        if (e->has[i] == 3)
            idx[n++] = i;
    if (!idx || !(im = pick_rows(e->image, d, idx, n)) || !(tx = pick_rows(e->text, d, idx, n)) ||
        !(ranks = malloc((n ? n : 1) * sizeof *ranks)))
        goto done;
    eval_rank_summary i2t, t2i;
    if ((rc = eval_pair_ranks(im, tx, n, d, ranks)))
        goto done;
    eval_summarise_ranks(ranks, n, &i2t);
    if ((rc = eval_pair_ranks(tx, im, n, d, ranks)))
        goto done;
    eval_summarise_ranks(ranks, n, &t2i);
    json_object_set_new(doc, "retrieval", json_pack("{s:I, s:o, s:o}", "n", (json_int_t)n,
                                                    "image_to_text", summary_json(&i2t),
                                                    "text_to_image", summary_json(&t2i)));
done:
    if (rc == CMR_ENOMEM)
        cmr_fail(rc, "out of memory for retrieval over %zu cases", n);
    free(idx);
    free(ranks);
    free(im);
    free(tx);
    return rc;
}

/* Cases with an image vector (and, if selected_only, a selected class):
 * packed vectors, class indices and the originals' positions. */
typedef struct image_set {
    size_t n;
    float *x;
    int *cls;
    size_t *idx;
} image_set;

static void image_set_free(image_set *s)
{
    free(s->x);
    free(s->cls);
    free(s->idx);
    memset(s, 0, sizeof *s);
}

static int image_set_make(const eval_ctx *e, int selected_only, image_set *s)
{
    memset(s, 0, sizeof *s);
    s->idx = malloc((e->n ? e->n : 1) * sizeof *s->idx);
    s->cls = malloc((e->n ? e->n : 1) * sizeof *s->cls);
    for (size_t i = 0; s->idx && s->cls && i < e->n; i++)
        if ((e->has[i] & 1) && (!selected_only || e->lab.selected[e->cls[i]])) {
            s->cls[s->n] = e->cls[i];
            s->idx[s->n++] = i;
        }
    if (!s->idx || !s->cls || !(s->x = pick_rows(e->image, e->dim, s->idx, s->n))) {
        image_set_free(s);
        return cmr_fail(CMR_ENOMEM, "out of memory for %zu image vectors", e->n);
    }
    return 0;
}

static int part_precision(eval_ctx *e, json_t *doc)
{
    image_set s;
    int rc = image_set_make(e, 0, &s);
    if (rc)
        return rc;
    double *prec = malloc((s.n ? s.n : 1) * sizeof *prec);
    uint64_t *groups = malloc((s.n ? s.n : 1) * sizeof *groups);
    double *sum = calloc(e->lab.n_classes + 1, sizeof *sum);
    size_t *cnt = calloc(e->lab.n_classes + 1, sizeof *cnt);
    if (!prec || !groups || !sum || !cnt) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for precision@k");
        goto done;
    }
    for (size_t i = 0; i < s.n; i++)
        groups[i] = e->group[s.idx[i]];
    if ((rc = eval_precision_at_k(s.x, s.n, e->dim, s.cls, e->exclude_same_patient ? groups : NULL,
                                  e->k, prec)))
        goto done;
    double micro = 0, macro = 0;
    size_t n_micro = 0, n_macro = 0;
    for (size_t i = 0; i < s.n; i++)
        if (!isnan(prec[i])) {
            sum[s.cls[i]] += prec[i];
            cnt[s.cls[i]]++;
            micro += prec[i];
            n_micro++;
        }
    json_t *per = json_object();
    for (size_t c = 0; c < e->lab.n_classes; c++) {
        double p = cnt[c] ? sum[c] / (double)cnt[c] : NAN;
        if (cnt[c]) {
            macro += p;
            n_macro++;
        }
        /* what neighbours drawn at random would score */
        double chance = s.n > 1 && cnt[c] ? (double)(cnt[c] - 1) / (double)(s.n - 1) : NAN;
        json_object_set_new(per, e->lab.label[c],
                            json_pack("{s:I, s:o, s:o}", "n", (json_int_t)cnt[c], "precision",
                                      num(p), "chance", num(chance)));
    }
    json_object_set_new(doc, "precision_at_k",
                        json_pack("{s:I, s:b, s:I, s:o, s:o, s:o}", "k", (json_int_t)e->k,
                                  "exclude_same_patient", e->exclude_same_patient, "n",
                                  (json_int_t)n_micro, "micro",
                                  num(n_micro ? micro / (double)n_micro : NAN), "macro",
                                  num(n_macro ? macro / (double)n_macro : NAN), "per_label", per));
done:
    image_set_free(&s);
    free(prec);
    free(groups);
    free(sum);
    free(cnt);
    return rc;
}

static int part_fewshot(eval_ctx *e, json_t *doc)
{
    image_set s;
    int rc = image_set_make(e, 1, &s);
    if (rc)
        return rc;
    json_t *rows = json_array();
    for (int i = 0; i < EVAL_N_SHOTS && !rc; i++) {
        eval_fewshot fs;
        if ((rc = eval_simpleshot(s.x, s.n, e->dim, s.cls, e->lab.n_classes, eval_shots[i],
                                  e->episodes, e->seed, &fs)))
            break;
        json_array_append_new(rows, json_pack("{s:i, s:I, s:I, s:o, s:o, s:o}", "k", (int)fs.k,
                                              "n_classes", (json_int_t)fs.n_classes, "episodes",
                                              (json_int_t)fs.episodes, "accuracy", num(fs.mean),
                                              "std", num(fs.std), "chance", num(fs.chance)));
    }
    json_object_set_new(doc, "few_shot",
                        json_pack("{s:s, s:I, s:I, s:I, s:o}", "method", "SimpleShot (CL2N)",
                                  "n", (json_int_t)s.n, "episodes", (json_int_t)e->episodes,
                                  "seed", (json_int_t)e->seed, "shots", rows));
    image_set_free(&s);
    return rc;
}

/* ---- zero-shot --------------------------------------------------------------------------- */

/* The prompts of a label: --prompts, else the built-in bank, else the
 * label's display text (a store's diagnosis label, e.g. "Dilated
 * cardiomyopathy"), which is what a user would type. */
static json_t *prompts_for(const eval_ctx *e, size_t c)
{
    json_t *given = e->prompts ? json_object_get(e->prompts, e->lab.label[c]) : NULL;
    if (json_is_string(given))
        return json_pack("[O]", given);
    if (json_is_array(given))
        return json_incref(given);
    const char *const *bank = eval_bank_prompts(e->lab.label[c]);
    if (bank) {
        json_t *list = json_array();
        for (int p = 0; p < EVAL_MAX_PROMPTS && bank[p]; p++)
            json_array_append_new(list, json_string(bank[p]));
        return list;
    }
    return json_pack("[s]", e->lab.display[c]);
}

/* The mean of the prompts' embeddings: its inner product with an image
 * vector is the mean cosine to the prompts. */
static int encode_prompts(cmr_model *m, json_t *list, unsigned dim, float *mean, float *tmp)
{
    size_t n = json_array_size(list);
    memset(mean, 0, dim * sizeof *mean);
    for (size_t p = 0; p < n; p++) {
        const char *text = json_string_value(json_array_get(list, p));
        int rc;
        if (!text || !*text)
            return cmr_fail(CMR_EFORMAT, "a prompt must be a non-empty string");
        if ((rc = cmr_model_encode_text(m, text, tmp)))
            return rc;
        for (unsigned d = 0; d < dim; d++)
            mean[d] += tmp[d] / (float)n;
    }
    return n ? 0 : cmr_fail(CMR_EFORMAT, "a label has an empty prompt list");
}

static float dot(const float *a, const float *b, size_t dim)
{
    float s = 0;
    for (size_t d = 0; d < dim; d++)
        s += a[d] * b[d];
    return s;
}

/* AUC and ROC of one score column as JSON fields of obj. */
static void set_auc(json_t *obj, const float *scores, const int *positive, size_t n)
{
    size_t n_pos = 0;
    for (size_t i = 0; i < n; i++)
        n_pos += positive[i] != 0;
    json_object_set_new(obj, "n_pos", json_integer((json_int_t)n_pos));
    json_object_set_new(obj, "n_neg", json_integer((json_int_t)(n - n_pos)));
    json_object_set_new(obj, "auc", num(eval_auc(scores, positive, n)));
    if (n_pos && n_pos < n)
        json_object_set_new(obj, "roc", roc_json(scores, positive, n));
}

static int part_zero_shot(eval_ctx *e, cmr_model *m, json_t *doc)
{
    size_t C = 0, d = e->dim;
    image_set s;
    int rc = image_set_make(e, 1, &s);
    if (rc)
        return rc;
    size_t *col_cls = malloc(e->lab.n_classes * sizeof *col_cls), *conf = NULL;
    float *proto = malloc(e->lab.n_classes * d * sizeof *proto), *tmp = malloc(d * sizeof *tmp);
    float *scores = malloc((s.n ? s.n : 1) * e->lab.n_classes * sizeof *scores), *col = NULL;
    int *truth = malloc((s.n ? s.n : 1) * sizeof *truth), *pred = NULL, *pos = NULL;
    json_t *classes = json_array(), *labels = json_array(), *matrix = json_array();
    if (!col_cls || !proto || !tmp || !scores || !truth ||
        !(pred = malloc((s.n ? s.n : 1) * sizeof *pred)) ||
        !(pos = malloc((s.n ? s.n : 1) * sizeof *pos)) ||
        !(col = malloc((s.n ? s.n : 1) * sizeof *col))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for zero-shot scores");
        goto done;
    }
    for (size_t c = 0; c < e->lab.n_classes; c++) {
        if (!e->lab.selected[c])
            continue;
        json_t *list = prompts_for(e, c);
        rc = encode_prompts(m, list, e->dim, proto + C * d, tmp);
        json_array_append_new(classes, json_pack("{s:s, s:s, s:o}", "label", e->lab.label[c],
                                                 "display", e->lab.display[c], "prompts", list));
        json_array_append_new(labels, json_string(e->lab.label[c]));
        if (rc)
            goto done;
        col_cls[C++] = c;
    }
    for (size_t i = 0; i < s.n; i++) {
        for (size_t j = 0; j < C; j++) {
            scores[i * C + j] = dot(s.x + i * d, proto + j * d, d);
            if (col_cls[j] == (size_t)s.cls[i])
                truth[i] = (int)j;
        }
    }
    eval_argmax(scores, s.n, C, pred);
    if (!(conf = malloc((C ? C * C : 1) * sizeof *conf))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for a confusion table");
        goto done;
    }
    eval_confusion(truth, pred, s.n, C, conf);
    size_t correct = 0;
    for (size_t j = 0; j < C; j++) {
        size_t row = 0;
        json_t *counts = json_array();
        for (size_t p = 0; p < C; p++) {
            row += conf[j * C + p];
            json_array_append_new(counts, json_integer((json_int_t)conf[j * C + p]));
        }
        json_array_append_new(matrix, counts);
        correct += conf[j * C + j];
        for (size_t i = 0; i < s.n; i++) {
            col[i] = scores[i * C + j];
            pos[i] = truth[i] == (int)j;
        }
        json_t *cj = json_array_get(classes, j);
        json_object_set_new(cj, "n", json_integer((json_int_t)row));
        json_object_set_new(cj, "recall", num(row ? (double)conf[j * C + j] / (double)row : NAN));
        set_auc(cj, col, pos, s.n);
    }
    json_object_set_new(doc, "zero_shot",
                        json_pack("{s:I, s:o, s:O, s:{s:O, s:O}}", "n", (json_int_t)s.n,
                                  "accuracy", num(s.n ? (double)correct / (double)s.n : NAN),
                                  "classes", classes, "confusion", "labels", labels, "counts",
                                  matrix));
done:
    json_decref(classes);
    json_decref(labels);
    json_decref(matrix);
    image_set_free(&s);
    free(col_cls);
    free(conf);
    free(proto);
    free(tmp);
    free(scores);
    free(col);
    free(truth);
    free(pred);
    free(pos);
    return rc;
}

/* The AUC inside each class that has rows on both sides, and their mean
 * weighted by class size.  A prompt can reach a high pooled AUC by ranking
 * diagnoses (every amyloidosis has LGE, no normal study has) without seeing
 * the finding; this says whether it does within HCM or DCM too.  Row r has
 * score scores[r], side pos[r] and class cls[r]. */
static int set_within_class_auc(const eval_ctx *e, json_t *obj, const float *scores, const int *pos,
                                const int *cls, size_t n)
{
    float *cs = malloc((n ? n : 1) * sizeof *cs);
    int *cp = malloc((n ? n : 1) * sizeof *cp);
    json_t *list = json_array();
    if (!cs || !cp || !list) {
        free(cs);
        free(cp);
        json_decref(list);
        return cmr_fail(CMR_ENOMEM, "out of memory for the within-class AUC");
    }
    double weighted = 0;
    size_t covered = 0;
    for (size_t c = 0; c < e->lab.n_classes; c++) {
        size_t m = 0, n_pos = 0;
        for (size_t r = 0; r < n; r++)
            if (cls[r] == (int)c) {
                cs[m] = scores[r];
                cp[m] = pos[r];
                n_pos += cp[m] != 0;
                m++;
            }
        if (!n_pos || n_pos == m)
            continue;
        double auc = eval_auc(cs, cp, m);
        weighted += auc * (double)m;
        covered += m;
        json_array_append_new(list, json_pack("{s:s, s:I, s:I, s:o}", "label", e->lab.label[c], "n_pos",
                                              (json_int_t)n_pos, "n_neg", (json_int_t)(m - n_pos), "auc",
                                              num(auc)));
    }
    json_object_set_new(obj, "within_class",
                        json_pack("{s:o, s:I, s:o}", "auc_weighted", num(covered ? weighted / (double)covered : NAN),
                                  "n", (json_int_t)covered, "classes", list));
    free(cs);
    free(cp);
    return 0;
}

/* Score every labelled image against prompts; positives by finding f
 * (negate: the finding's absence is the positive, for negation prompts). */
static json_t *finding_json(eval_ctx *e, cmr_model *m, const image_set *s, int f, int negate,
                            json_t *prompts, int *rc)
{
    size_t d = e->dim, n = 0;
    float *mean = malloc(d * sizeof *mean), *tmp = malloc(d * sizeof *tmp);
    float *scores = malloc((s->n ? s->n : 1) * sizeof *scores);
    int *pos = malloc((s->n ? s->n : 1) * sizeof *pos), *cls = malloc((s->n ? s->n : 1) * sizeof *cls);
    json_t *obj = NULL;
    if (!mean || !tmp || !scores || !pos || !cls)
        *rc = cmr_fail(CMR_ENOMEM, "out of memory for finding scores");
    else if (!(*rc = encode_prompts(m, prompts, e->dim, mean, tmp))) {
        for (size_t i = 0; i < s->n; i++) {
            int8_t v = e->finding[s->idx[i]][f];
            if (v < 0)
                continue;
            scores[n] = dot(s->x + i * d, mean, d);
            cls[n] = s->cls[i];
            pos[n++] = negate ? !v : v;
        }
        obj = json_pack("{s:O}", "prompts", prompts);
        set_auc(obj, scores, pos, n);
        if (negate)
            *rc = set_within_class_auc(e, obj, scores, pos, cls, n);
    }
    free(mean);
    free(tmp);
    free(scores);
    free(pos);
    free(cls);
    return obj;
}

static int part_findings(eval_ctx *e, cmr_model *m, json_t *doc)
{
    image_set s;
    int rc = image_set_make(e, 0, &s);
    json_t *list = json_array(), *obj;
    for (int f = 0; f < EVAL_N_FINDINGS && !rc; f++) {
        json_t *prompts = json_array();
        for (int p = 0; p < EVAL_MAX_PROMPTS && eval_findings[f].prompts[p]; p++)
            json_array_append_new(prompts, json_string(eval_findings[f].prompts[p]));
        if ((obj = finding_json(e, m, &s, f, 0, prompts, &rc))) {
            json_object_set_new(obj, "name", json_string(eval_findings[f].name));
            json_object_set_new(obj, "rule", json_string(eval_findings[f].rule));
            json_array_append_new(list, obj);
        }
        json_decref(prompts);
    }
    json_t *neg_prompts = json_pack("[s]", eval_negation_prompt);
    if (!rc && (obj = finding_json(e, m, &s, EVAL_F_LGE, 1, neg_prompts, &rc))) {
        json_object_set_new(obj, "name", json_string("lge_absent"));
        json_object_set_new(obj, "rule", json_string("LGE pattern none: the prompt should rank "
                                                     "LGE-negative studies above LGE-positive"));
        json_object_set_new(doc, "negation", obj);
    }
    json_decref(neg_prompts);
    json_object_set_new(doc, "findings", list);
    image_set_free(&s);
    return rc;
}

/* ---- the command ---------------------------------------------------------------------------- */

static int check_request(eval_ctx *e)
{
    uint64_t v;
    int rc;
    e->k = DEFAULT_K;
    e->episodes = DEFAULT_EPISODES;
    if (e->k_text && (rc = cmr_cli_parse_u64("-k", e->k_text, 1, MAX_K, &v)))
        return rc;
    if (e->k_text)
        e->k = (size_t)v;
    if (e->episodes_text &&
        (rc = cmr_cli_parse_u64("--episodes", e->episodes_text, 1, 100000, &v)))
        return rc;
    if (e->episodes_text)
        e->episodes = (size_t)v;
    /* JSON integers are signed 64-bit */
    if (e->seed_text && (rc = cmr_cli_parse_u64("--seed", e->seed_text, 0, INT64_MAX, &e->seed)))
        return rc;
    if (e->prompts_path) {
        json_error_t err;
        if (!(e->prompts = json_load_file(e->prompts_path, 0, &err)))
            return cmr_fail(CMR_EFORMAT, "%s: line %d: %s", e->prompts_path, err.line, err.text);
        if (!json_is_object(e->prompts))
            return cmr_fail(CMR_EFORMAT, "%s: expected an object {label: [prompt, ...]}",
                            e->prompts_path);
    }
    return 0;
}

/* --classes: every name must be a label the evaluated cases carry.  By
 * default every label present: a truth.json names diagnoses the store may
 * not hold, and an empty class would still compete in zero-shot. */
static int select_classes(eval_ctx *e)
{
    for (size_t c = 0; c < e->lab.n_classes; c++)
        e->lab.selected[c] = !e->classes_text && e->lab.count[c] > 0;
    if (!e->classes_text)
        return 0;
    char *list = strdup(e->classes_text), *save = NULL;
    if (!list)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    int rc = 0;
    size_t n_selected = 0;
    for (char *name = strtok_r(list, ", ", &save); name && !rc;
         name = strtok_r(NULL, ", ", &save)) {
        size_t c = 0;
        while (c < e->lab.n_classes && (strcmp(e->lab.label[c], name) || !e->lab.count[c]))
            c++;
        if (c == e->lab.n_classes)
            rc = cmr_fail(CMR_EINVAL, "--classes: no labelled case has label '%s'", name);
        else if (!e->lab.selected[c]) {
            e->lab.selected[c] = 1;
            n_selected++;
        }
    }
    free(list);
    if (!rc && n_selected == 0)
        rc = cmr_fail(CMR_EINVAL, "--classes: no label given");
    return rc;
}

static json_t *header_json(eval_ctx *e, cmr_store *store, const cmr_model *m)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    size_t counts[4] = {0};
    for (size_t i = 0; i < e->n; i++)
        counts[e->has[i] & 3]++;
    json_t *labels = json_object();
    for (size_t c = 0; c < e->lab.n_classes; c++)
        if (e->lab.count[c])
            json_object_set_new(labels, e->lab.label[c],
                                json_pack("{s:s, s:I, s:b}", "display", e->lab.display[c], "n",
                                          (json_int_t)e->lab.count[c], "selected",
                                          e->lab.selected[c]));
    const char *source = !e->labels_path ? "store" : e->lab.json ? "truth.json" : "csv";
    return json_pack("{s:s, s:{s:s, s:s, s:i}, s:b, s:{s:s, s:o}, s:{s:I, s:I, s:I, s:I, s:I}, "
                     "s:o, s:O}",
                     "store", e->db, "model", "name", name, "weights_hash", hash, "dim", (int)dim,
                     "prompts_encoded", m != NULL, "labels", "source", source, "path",
                     cmr_json_text(e->labels_path), "cases", "in_store",
                     (json_int_t)e->total_cases, "labelled", (json_int_t)e->n, "with_image",
                     (json_int_t)(counts[1] + counts[3]), "with_text",
                     (json_int_t)(counts[2] + counts[3]), "with_both", (json_int_t)counts[3],
                     "label_counts", labels, "notes", e->notes);
}

static int open_model(eval_ctx *e, cmr_store *store, cmr_model **m)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    if (dim == 0)
        return cmr_fail(CMR_ENOTFOUND, "%s holds no vectors yet: nothing to evaluate", e->db);
    e->dim = dim;
    if (!e->model_path) {
        /* $CMRSEARCH_MODEL or the default model, when it is the store's;
         * another model only means no zero-shot part, not a failure. */
        int rc = cmr_cli_open_model(NULL, store, 0, m);
        if (rc == CMR_EMODEL || rc == CMR_ENOTFOUND) {
            cmr_clear_error();
            *m = NULL;
            return 0;
        }
        return rc;
    }
    int rc = cmr_model_open(e->model_path, m);
    if (rc)
        return rc;
    if (strcmp(name, cmr_model_name(*m)) || strcmp(hash, cmr_model_hash(*m)) ||
        dim != cmr_model_dim(*m))
        return cmr_fail(CMR_EMODEL, "%s holds vectors of model %s (weights %s, dimension %u), not "
                                    "of %s (weights %s, dimension %u): prompts embedded by another "
                                    "model mean nothing against them",
                        e->db, name, hash, dim, cmr_model_name(*m), cmr_model_hash(*m),
                        cmr_model_dim(*m));
    return 0;
}

static void ctx_free(eval_ctx *e)
{
    eval_labels_free(&e->lab);
    free(e->cls);
    free(e->group);
    free(e->finding);
    free(e->image);
    free(e->text);
    free(e->has);
    json_decref(e->prompts);
    json_decref(e->notes);
}

static int evaluate(eval_ctx *e, cmr_store *store, cmr_model *m, json_t **out)
{
    int rc;
    json_t *doc = NULL;
    if ((rc = gather(e, store)))
        return rc;
    if (e->n == 0)
        return cmr_fail(CMR_ENOTFOUND, "none of the %zu cases in %s has a label%s", e->total_cases,
                        e->db, e->labels_path ? " in the labels file" : " (a diagnosis code)");
    if ((rc = select_classes(e)))
        return rc;
    if ((rc = eval_labels_sort(&e->lab, e->cls, e->n)))
        return rc;
    if (e->labels_path && e->n < e->lab.n_entries)
        note(e, "some labelled studies are not in the store (or have no vectors); "
                "they are left out");
    if (!m)
        note(e, "no model (--model, $CMRSEARCH_MODEL or the default) is the store's: zero-shot "
                "diagnosis and findings need prompts embedded by the store's model and are skipped");
    else if (!e->lab.have_findings)
        note(e, "finding labels come only from a truth.json: zero-shot findings are skipped");
    if (!(doc = header_json(e, store, m)))
        return cmr_fail(CMR_ENOMEM, "out of memory building the report");
    if (!(rc = part_retrieval(e, doc)) && !(rc = part_precision(e, doc)) &&
        !(rc = part_fewshot(e, doc)) && m && !(rc = part_zero_shot(e, m, doc)) && e->lab.have_findings)
        rc = part_findings(e, m, doc);
    if (rc)
        json_decref(doc);
    else
        *out = doc;
    return rc;
}

int cmr_cmd_eval(cmr_cli *cli, int argc, char **argv)
{
    eval_ctx e = {0};
    const cmr_cli_option options[] = {
        {"db", 0, &e.db, NULL},
        {"model", 0, &e.model_path, NULL},
        {"labels", 0, &e.labels_path, NULL},
        {"classes", 0, &e.classes_text, NULL},
        {"prompts", 0, &e.prompts_path, NULL},
        {"k", 'k', &e.k_text, NULL},
        {"episodes", 0, &e.episodes_text, NULL},
        {"seed", 0, &e.seed_text, NULL},
        {"html", 0, &e.html_path, NULL},
        {"exclude-same-patient", 0, NULL, &e.exclude_same_patient},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    const char *pos[1];
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof options[0], usage, pos, 0,
                              &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_store *store = NULL;
    cmr_model *model = NULL;
    json_t *doc = NULL;
    if (!(e.notes = json_array())) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    if ((rc = check_request(&e)) || (e.labels_path && (rc = eval_labels_load(&e.lab, e.labels_path))) ||
        (rc = cmr_cli_open_store(cli, e.db, CMR_STORE_RDONLY, &store)) ||
        (rc = open_model(&e, store, &model)) || (rc = evaluate(&e, store, model, &doc)))
        goto done;
    if (e.html_path && (rc = eval_write_html(e.html_path, doc)))
        goto done;
    if (cli->json) {
        rc = cmr_cli_print_json(cli, doc);
        doc = NULL; /* stolen */
    } else {
        eval_print_table(cli->out, doc);
        if (e.html_path)
            fprintf(cli->out, "\nHTML report: %s\n", e.html_path);
    }
done:
    json_decref(doc);
    cmr_model_close(model);
    ctx_free(&e);
    return cmr_cli_close_store(store, rc);
}
