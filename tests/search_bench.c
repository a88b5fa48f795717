/* search-bench: the figures of docs/searching.md on an indexed phantom store
 * and its truth.json —
 *   fusion weights: text -> case and case -> case precision@10 by diagnosis
 *                   for a sweep of image/text weights;
 *   findings:       AUC of each stored finding score against truth.json
 *                   (the rules of docs/eval.md; diagnoses: one vs rest);
 *   latency:        text queries end to end, in process (encode, search,
 *                   explain), p50 and p99 over --queries queries.
 * usage: search-bench --db DIR --model DIR --truth truth.json [--queries N] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmr_searcher.h"
#include "eval.h"

typedef struct study_truth {
    const char *uid, *dx;
    int8_t finding[EVAL_N_FINDINGS];
} study_truth;

static json_t *truth_doc;
static study_truth *truth;
static size_t n_truth;

static int cmp_truth(const void *a, const void *b)
{
    return strcmp(((const study_truth *)a)->uid, ((const study_truth *)b)->uid);
}

static const study_truth *find_truth(const char *uid)
{
    study_truth key = {.uid = uid};
    return bsearch(&key, truth, n_truth, sizeof *truth, cmp_truth);
}

static int load_truth(const char *path)
{
    json_error_t err;
    if (!(truth_doc = json_load_file(path, 0, &err))) {
        fprintf(stderr, "%s: %s\n", path, err.text);
        return -1;
    }
    json_t *list = json_object_get(truth_doc, "study_list");
    n_truth = json_array_size(list);
    truth = calloc(n_truth ? n_truth : 1, sizeof *truth);
    for (size_t i = 0; i < n_truth; i++) {
        json_t *st = json_array_get(list, i), *params = json_object_get(st, "params");
        truth[i].uid = json_string_value(json_object_get(st, "study_uid"));
        truth[i].dx = json_string_value(json_object_get(st, "diagnosis"));
        const char *sex = json_string_value(json_object_get(st, "sex"));
        for (int f = 0; f < EVAL_N_FINDINGS; f++)
            truth[i].finding[f] = eval_finding_from_params(f, truth[i].dx, sex, params);
    }
    qsort(truth, n_truth, sizeof *truth, cmp_truth);
    return 0;
}

static double clock_ms(clockid_t id)
{
    struct timespec ts;
    clock_gettime(id, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static double now_ms(void) { return clock_ms(CLOCK_MONOTONIC); }

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Fraction of the results whose truth diagnosis is dx. */
static double precision(const cmr_results *r, const char *dx)
{
    size_t hit = 0;
    for (size_t i = 0; i < r->n; i++) {
        const study_truth *t = find_truth(r->items[i].record->study_uid);
        hit += t && !strcmp(t->dx, dx);
    }
    return r->n ? (double)hit / (double)r->n : NAN;
}

static void sweep(cmr_searcher *s, cmr_store *store)
{
    static const float weights[] = {0, 0.1f, 0.2f, 0.3f, 0.4f, 0.5f, 0.7f, 1};
    uint64_t *ids;
    size_t n_ids;
    if (cmr_store_list(store, &ids, &n_ids))
        return;
    printf("fusion weights: precision@10 by diagnosis (text: the bank's diagnosis prompts, macro mean over "
           "diagnoses present; case: every case as query, same patient excluded)\n");
    printf("  (study: a case's image vector alone as the query, as a study query embeds a study)\n");
    printf("  w_image  w_text  text->case  case->case  study->case\n");
    for (size_t w = 0; w < sizeof weights / sizeof *weights; w++) {
        double text_sum = 0, case_sum = 0, study_sum = 0;
        size_t text_n = 0, case_n = 0, study_n = 0;
        for (size_t b = 0; b < cmr_finding_bank_size(); b++) {
            const cmr_finding_def *d = cmr_finding_bank(b);
            if (d->kind != CMR_FINDING_DIAGNOSIS)
                continue;
            int present = 0;
            for (size_t i = 0; i < n_truth && !present; i++)
                present = !strcmp(truth[i].dx, d->key);
            if (!present)
                continue;
            cmr_query q = {.kind = CMR_QUERY_TEXT, .text = d->positive[0], .limit = 10, .set_weights = 1,
                           .w_image = weights[w], .w_text = 1 - weights[w], .no_sentences = 1};
            cmr_results *r;
            if (cmr_searcher_search(s, &q, &r) == 0) {
                text_sum += precision(r, d->key);
                text_n++;
                cmr_results_free(r);
            }
        }
        for (size_t i = 0; i < n_ids; i++) {
            cmr_case *c;
            if (cmr_store_get(store, ids[i], &c))
                continue;
            const study_truth *t = find_truth(c->study_uid);
            cmr_query q = {.kind = CMR_QUERY_CASE, .case_id = ids[i], .limit = 10, .set_weights = 1,
                           .w_image = weights[w], .w_text = 1 - weights[w], .no_sentences = 1};
            cmr_results *r;
            if (t && cmr_searcher_search(s, &q, &r) == 0) {
                double p = precision(r, t->dx);
                if (!isnan(p)) {
                    case_sum += p;
                    case_n++;
                }
                cmr_results_free(r);
            }
            q.use_space = 1;
            q.space = CMR_SPACE_IMAGE;
            if (t && (c->vectors & 1u << CMR_SPACE_IMAGE) && cmr_searcher_search(s, &q, &r) == 0) {
                double p = precision(r, t->dx);
                if (!isnan(p)) {
                    study_sum += p;
                    study_n++;
                }
                cmr_results_free(r);
            }
            cmr_case_free(c);
        }
        printf("  %7.2f  %6.2f  %10.3f  %10.3f  %11.3f\n", (double)weights[w], 1 - (double)weights[w],
               text_n ? text_sum / (double)text_n : NAN, case_n ? case_sum / (double)case_n : NAN,
               study_n ? study_sum / (double)study_n : NAN);
    }
    free(ids);
}

static void finding_aucs(cmr_store *store)
{
    uint64_t *ids;
    size_t n;
    if (cmr_store_list(store, &ids, &n))
        return;
    size_t nb = cmr_finding_bank_size();
    float *scores = malloc(n * sizeof *scores);
    int *pos = malloc(n * sizeof *pos);
    printf("finding scores against truth.json: AUC, and how many score >= 0.5 (positives)\n");
    for (size_t b = 0; b < nb; b++) {
        const cmr_finding_def *d = cmr_finding_bank(b);
        int f = -1;
        for (int k = 0; k < EVAL_N_FINDINGS; k++)
            if (!strcmp(eval_findings[k].name, d->key))
                f = k;
        if (d->kind == CMR_FINDING_BINARY && f < 0)
            continue; /* no truth rule (aortic dilation) */
        size_t m = 0, above = 0, above_pos = 0, n_pos = 0;
        for (size_t i = 0; i < n; i++) {
            cmr_case *c;
            if (cmr_store_get(store, ids[i], &c))
                continue;
            const study_truth *t = find_truth(c->study_uid);
            for (size_t j = 0; t && j < c->n_findings; j++) {
                if (strcmp(c->findings[j].name, d->key))
                    continue;
                int y = f >= 0 ? t->finding[f] : !strcmp(t->dx, d->key);
                if (y < 0)
                    break;
                scores[m] = c->findings[j].score;
                pos[m++] = y;
                n_pos += y != 0;
                above += c->findings[j].score >= CMR_FINDING_PRESENT;
                above_pos += y && c->findings[j].score >= CMR_FINDING_PRESENT;
            }
            cmr_case_free(c);
        }
        printf("  %-24s AUC %.3f  n %3zu  positives %3zu  >= 0.5: %3zu (precision %.2f, recall %.2f)\n", d->key,
               eval_auc(scores, pos, m), m, n_pos, above, above ? (double)above_pos / (double)above : NAN,
               n_pos ? (double)above_pos / (double)n_pos : NAN);
    }
    free(scores);
    free(pos);
    free(ids);
}

static void latency(cmr_searcher *s, size_t n_queries, int no_sentences)
{
    static const char *const phrases[] = {
        "hypertrophic cardiomyopathy with patchy late gadolinium enhancement",
        "dilated left ventricle with severely reduced ejection fraction",
        "transmural infarct in the LAD territory",
        "subepicardial enhancement of the lateral wall, myocarditis",
        "concentric hypertrophy with diffuse subendocardial enhancement",
        "structurally normal heart",
        "dilated right ventricle with regional dyskinesia",
        "prominent trabeculation, non-compaction",
        "basal inferolateral mid-wall enhancement",
        "small pericardial effusion",
    };
    size_t np = sizeof phrases / sizeof *phrases;
    double *ms = malloc(n_queries * sizeof *ms), *cpu = malloc(n_queries * sizeof *cpu), enc = 0, srch = 0,
           expl = 0;
    /* The first query loads the indexes and fills caches: timed apart. */
    cmr_query warm = {.kind = CMR_QUERY_TEXT, .text = "warm up", .no_sentences = no_sentences};
    cmr_results *wr;
    double w0 = now_ms();
    if (cmr_searcher_search(s, &warm, &wr) == 0)
        cmr_results_free(wr);
    double first = now_ms() - w0;
    for (size_t i = 0; i < n_queries; i++) {
        char text[256];
        /* distinct texts: a suffix defeats any caching of the query itself */
        snprintf(text, sizeof text, "%s %zu", phrases[i % np], i / np);
        cmr_query q = {.kind = CMR_QUERY_TEXT, .text = text, .limit = 10, .no_sentences = no_sentences};
        cmr_results *r;
        double t0 = now_ms(), c0 = clock_ms(CLOCK_PROCESS_CPUTIME_ID);
        int rc = cmr_searcher_search(s, &q, &r);
        ms[i] = now_ms() - t0;
        cpu[i] = clock_ms(CLOCK_PROCESS_CPUTIME_ID) - c0;
        if (rc) {
            fprintf(stderr, "query failed: %s\n", cmr_errmsg());
            exit(2);
        }
        enc += r->ms_encode;
        srch += r->ms_search;
        expl += r->ms_explain;
        cmr_results_free(r);
    }
    qsort(ms, n_queries, sizeof *ms, cmp_double);
    qsort(cpu, n_queries, sizeof *cpu, cmp_double);
    size_t p99 = (size_t)ceil(0.99 * (double)n_queries) - 1;
    printf("text query latency (%s), %zu queries, top 10: wall p50 %.2f ms, p99 %.2f ms, max %.2f ms; "
           "CPU p50 %.2f ms, p99 %.2f ms; mean encode %.2f, search %.2f, explain %.2f ms; first query %.1f ms\n",
           no_sentences ? "no sentences" : "with closest sentences", n_queries, ms[n_queries / 2], ms[p99],
           ms[n_queries - 1], cpu[n_queries / 2], cpu[p99], enc / (double)n_queries, srch / (double)n_queries,
           expl / (double)n_queries, first);
    free(ms);
    free(cpu);
}

int main(int argc, char **argv)
{
    const char *db = NULL, *model_dir = NULL, *truth_path = NULL;
    size_t n_queries = 200;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--db"))
            db = argv[i + 1];
        else if (!strcmp(argv[i], "--model"))
            model_dir = argv[i + 1];
        else if (!strcmp(argv[i], "--truth"))
            truth_path = argv[i + 1];
        else if (!strcmp(argv[i], "--queries"))
            n_queries = (size_t)strtoul(argv[i + 1], NULL, 10);
    }
    if (!db || !model_dir || !truth_path || !n_queries) {
        fprintf(stderr, "usage: search-bench --db DIR --model DIR --truth truth.json [--queries N]\n");
        return 1;
    }
    cmr_store *store;
    cmr_model *model;
    cmr_searcher *s;
    if (load_truth(truth_path) || cmr_store_open(db, CMR_STORE_RDONLY, NULL, &store) ||
        cmr_model_open(model_dir, &model) || cmr_searcher_open(store, model, &s)) {
        fprintf(stderr, "search-bench: %s\n", cmr_errmsg());
        return 2;
    }
    latency(s, n_queries, 0);
    latency(s, n_queries, 1);
    if (getenv("SEARCH_BENCH_LATENCY_ONLY"))
        goto done;
    finding_aucs(store);
    sweep(s, store);
done:
    cmr_searcher_close(s);
    cmr_model_close(model);
    cmr_store_close(store);
    free(truth);
    json_decref(truth_doc);
    return 0;
}
