/* cmrsearch eval: the metric functions (cli/eval.c) against values numpy
 * computed independently (tests/reference/eval_reference.py ->
 * tests/fixtures/eval/), the truth.json finding rules, and the whole command
 * on a small store built here with clustered synthetic vectors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "eval.h"
#include "test_util.h"

#define FIXTURES CMR_SOURCE_DIR "/tests/fixtures/eval/"
#define SMALL_MODEL CMR_SOURCE_DIR "/tests/fixtures/model/small"

/* cmocka before 1.1.6 has no assert_double_equal; NaN never passes. */
#define assert_close(a, b, eps) assert_close_((a), (b), (eps), #a, __LINE__)
static void assert_close_(double a, double b, double eps, const char *what, int line)
{
    if (!(fabs(a - b) <= eps))
        fail_msg("line %d: %s = %.17g, expected %.17g", line, what, a, b);
}

/* ---- fixtures ---------------------------------------------------------------------- */

static json_t *load_fixture(const char *name)
{
    json_error_t err;
    json_t *j = json_load_file(name, 0, &err);
    if (!j)
        fail_msg("%s: %s (run tests/reference/eval_reference.py)", name, err.text);
    return j;
}

static size_t size_at(const json_t *fx, const char *key)
{
    return (size_t)json_integer_value(json_object_get(fx, key));
}

static float *floats(const json_t *array)
{
    size_t n = json_array_size(array);
    float *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (float)json_number_value(json_array_get(array, i));
    return v;
}

static int *ints(const json_t *array)
{
    size_t n = json_array_size(array);
    int *v = malloc((n ? n : 1) * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = (int)json_integer_value(json_array_get(array, i));
    return v;
}

static void check_summary(const eval_rank_summary *s, const json_t *want)
{
    const json_t *recall = json_object_get(want, "recall");
    for (int k = 0; k < EVAL_N_RECALL; k++)
        assert_close(s->recall[k], json_number_value(json_array_get(recall, k)), 1e-12);
    assert_close(s->median_rank, json_number_value(json_object_get(want, "median")), 1e-12);
    assert_close(s->mean_rank, json_number_value(json_object_get(want, "mean")), 1e-12);
}

static void check_ranks(const json_t *fx, const char *qkey, const char *tkey, const char *rkey,
                        const char *skey)
{
    size_t n = size_at(fx, "n"), dim = size_at(fx, "dim");
    float *q = floats(json_object_get(fx, qkey)), *t = floats(json_object_get(fx, tkey));
    size_t *ranks = malloc(n * sizeof *ranks);
    assert_non_null(ranks);
    assert_int_equal(eval_pair_ranks(q, t, n, dim, ranks), 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(ranks[i], json_integer_value(json_array_get(json_object_get(fx, rkey), i)));
    eval_rank_summary s;
    eval_summarise_ranks(ranks, n, &s);
    check_summary(&s, json_object_get(fx, skey));
    free(q);
    free(t);
    free(ranks);
}

static void test_ranks(void **state)
{
    (void)state;
    json_t *fx = load_fixture(FIXTURES "ranks.json");
    check_ranks(fx, "queries", "targets", "ranks_q2t", "summary_q2t");
    check_ranks(fx, "targets", "queries", "ranks_t2q", "summary_t2q");
    /* ties count against the query */
    check_ranks(json_object_get(fx, "ties"), "queries", "targets", "ranks", "summary");
    json_decref(fx);
}

static void test_auc_and_roc(void **state)
{
    (void)state;
    json_t *fx = load_fixture(FIXTURES "auc.json");
    size_t i;
    json_t *c;
    json_array_foreach(json_object_get(fx, "cases"), i, c) {
        const json_t *s = json_object_get(c, "scores");
        size_t n = json_array_size(s);
        float *scores = floats(s);
        int *pos = ints(json_object_get(c, "positive"));
        double auc = eval_auc(scores, pos, n);
        const json_t *want = json_object_get(c, "auc");
        if (json_is_null(want))
            assert_true(isnan(auc));
        else
            assert_close(auc, json_number_value(want), 1e-12);
        double *fpr, *tpr;
        size_t m;
        assert_int_equal(eval_roc(scores, pos, n, &fpr, &tpr, &m), 0);
        assert_int_equal(m, json_array_size(json_object_get(c, "fpr")));
        for (size_t k = 0; k < m; k++) {
            assert_close(fpr[k], json_number_value(json_array_get(json_object_get(c, "fpr"), k)), 1e-12);
            assert_close(tpr[k], json_number_value(json_array_get(json_object_get(c, "tpr"), k)), 1e-12);
        }
        free(fpr);
        free(tpr);
        free(scores);
        free(pos);
    }
    json_decref(fx);
}

static void test_precision_at_k(void **state)
{
    (void)state;
    json_t *fx = load_fixture(FIXTURES "precision.json");
    size_t n = size_at(fx, "n"), dim = size_at(fx, "dim"), k = size_at(fx, "k");
    float *x = floats(json_object_get(fx, "x"));
    int *labels = ints(json_object_get(fx, "labels")), *g = ints(json_object_get(fx, "groups"));
    uint64_t *groups = malloc(n * sizeof *groups);
    double *prec = malloc(n * sizeof *prec);
    assert_non_null(groups);
    assert_non_null(prec);
    for (size_t i = 0; i < n; i++)
        groups[i] = (uint64_t)g[i];
    assert_int_equal(eval_precision_at_k(x, n, dim, labels, NULL, k, prec), 0);
    for (size_t i = 0; i < n; i++)
        assert_close(prec[i], json_number_value(json_array_get(json_object_get(fx, "precision"), i)), 1e-12);
    assert_int_equal(eval_precision_at_k(x, n, dim, labels, groups, k, prec), 0);
    for (size_t i = 0; i < n; i++)
        assert_close(prec[i], json_number_value(json_array_get(json_object_get(fx, "precision_groups"), i)), 1e-12);
    /* more neighbours asked than exist: every other row counts */
    assert_int_equal(eval_precision_at_k(x, 3, dim, labels, NULL, 50, prec), 0);
    assert_close(prec[0], ((labels[1] == labels[0]) + (labels[2] == labels[0])) / 2.0, 1e-12);
    free(x);
    free(labels);
    free(g);
    free(groups);
    free(prec);
    json_decref(fx);
}

static void test_simpleshot_episode(void **state)
{
    (void)state;
    json_t *fx = load_fixture(FIXTURES "simpleshot.json");
    size_t dim = size_at(fx, "dim"), classes = size_at(fx, "n_classes");
    float *x = floats(json_object_get(fx, "x"));
    int *labels = ints(json_object_get(fx, "labels")), *s = ints(json_object_get(fx, "support"));
    int *q = ints(json_object_get(fx, "query")), *want = ints(json_object_get(fx, "pred"));
    size_t ns = json_array_size(json_object_get(fx, "support"));
    size_t nq = json_array_size(json_object_get(fx, "query"));
    size_t *support = malloc(ns * sizeof *support), *query = malloc(nq * sizeof *query);
    int *pred = malloc(nq * sizeof *pred);
    assert_non_null(support);
    assert_non_null(query);
    assert_non_null(pred);
    for (size_t i = 0; i < ns; i++)
        support[i] = (size_t)s[i];
    for (size_t i = 0; i < nq; i++)
        query[i] = (size_t)q[i];
    double acc;
    assert_int_equal(eval_simpleshot_episode(x, dim, labels, classes, support, ns, query, nq, pred, &acc), 0);
    for (size_t i = 0; i < nq; i++)
        assert_int_equal(pred[i], want[i]);
    assert_close(acc, json_number_value(json_object_get(fx, "accuracy")), 1e-12);
    free(x);
    free(labels);
    free(s);
    free(q);
    free(want);
    free(support);
    free(query);
    free(pred);
    json_decref(fx);
}

/* Well separated clusters: SimpleShot is perfect at every k with enough
 * rows, skips k without two classes of k + 1 rows, and repeats for a seed. */
static void test_simpleshot_episodes(void **state)
{
    (void)state;
    enum { N = 45, DIM = 6 };
    float x[N * DIM];
    int labels[N];
    uint64_t rng = 7;
    for (size_t i = 0; i < N; i++) {
        labels[i] = i < 20 ? 0 : i < 40 ? 1 : 2; /* class 2 has 5 rows */
        for (size_t d = 0; d < DIM; d++)
            x[i * DIM + d] = (d == (size_t)labels[i] ? 4.0f : 0.0f) + 0.3f * test_gauss(&rng);
    }
    eval_fewshot a, b;
    assert_int_equal(eval_simpleshot(x, N, DIM, labels, 3, 4, 20, 1, &a), 0);
    assert_int_equal(a.n_classes, 3);
    assert_close(a.mean, 1.0, 1e-12);
    assert_close(a.chance, 1.0 / 3, 1e-12);
    assert_int_equal(eval_simpleshot(x, N, DIM, labels, 3, 8, 20, 1, &a), 0);
    assert_int_equal(a.n_classes, 2); /* class 2 cannot give 8 + 1 */
    assert_int_equal(eval_simpleshot(x, N, DIM, labels, 3, 32, 20, 1, &a), 0);
    assert_int_equal(a.episodes, 0);
    assert_true(isnan(a.mean));
    /* noisy enough to vary by episode: the seed decides */
    for (size_t i = 0; i < N * DIM; i++)
        x[i] += 3.0f * test_gauss(&rng);
    assert_int_equal(eval_simpleshot(x, N, DIM, labels, 3, 1, 30, 5, &a), 0);
    assert_int_equal(eval_simpleshot(x, N, DIM, labels, 3, 1, 30, 5, &b), 0);
    assert_close(a.mean, b.mean, 0);
    assert_close(a.std, b.std, 0);
    assert_true(a.std > 0);
}

static void test_confusion_argmax(void **state)
{
    (void)state;
    const float scores[] = {0.1f, 0.9f, 0.3f, 0.5f, 0.5f, 0.2f, 0.0f, 0.1f, 0.7f};
    const int truth[] = {1, 0, 2};
    int pred[3];
    size_t counts[9];
    eval_argmax(scores, 3, 3, pred);
    assert_int_equal(pred[0], 1);
    assert_int_equal(pred[1], 0); /* a tie goes to the first */
    assert_int_equal(pred[2], 2);
    eval_confusion(truth, pred, 3, 3, counts);
    const size_t want[9] = {1, 0, 0, 0, 1, 0, 0, 0, 1};
    assert_memory_equal(counts, want, sizeof want);
}

static void test_finding_rules(void **state)
{
    (void)state;
    json_t *p = json_pack("{s:f, s:f, s:f, s:f, s:f, s:s}", "lvef", 0.38, "rvef", 0.52, "lvedv_ml",
                          150.0, "rvedv_ml", 140.0, "max_wall_mm", 14.0, "lge_pattern", "none");
    assert_int_equal(eval_finding_from_params(EVAL_F_LV_DYS, "icm", "F", p), 1);
    assert_int_equal(eval_finding_from_params(EVAL_F_RV_DYS, "icm", "F", p), 0);
    assert_int_equal(eval_finding_from_params(EVAL_F_LV_DIL, "icm", "F", p), 1);  /* > 130 mL */
    assert_int_equal(eval_finding_from_params(EVAL_F_LV_DIL, "icm", "M", p), 0);  /* < 190 mL */
    assert_int_equal(eval_finding_from_params(EVAL_F_LV_DIL, "dcm", "M", p), 1);
    assert_int_equal(eval_finding_from_params(EVAL_F_RV_DIL, "icm", "F", p), 1);
    assert_int_equal(eval_finding_from_params(EVAL_F_RV_DIL, "arvc", "M", p), 1);
    assert_int_equal(eval_finding_from_params(EVAL_F_LVH, "hcm", "M", p), 1);
    assert_int_equal(eval_finding_from_params(EVAL_F_LVH, "lvnc", "M", p), 0);
    assert_int_equal(eval_finding_from_params(EVAL_F_LGE, "hcm", "M", p), 0);
    json_object_set_new(p, "lvef", json_real(62.0)); /* a percentage */
    json_object_set_new(p, "lge_pattern", json_string("transmural"));
    assert_int_equal(eval_finding_from_params(EVAL_F_LV_DYS, "icm", "F", p), 0);
    assert_int_equal(eval_finding_from_params(EVAL_F_LGE, "icm", "F", p), 1);
    json_object_del(p, "max_wall_mm");
    assert_int_equal(eval_finding_from_params(EVAL_F_LVH, "hcm", "M", p), -1);
    json_decref(p);
}

/* ---- the command, end to end ---------------------------------------------------------- */

#define N_CASES 30
static const char *const dx_keys[] = {"normal", "hcm", "dcm"};
static const char *const dx_codes[] = {"Z03.89", "I42.2", "I42.0"};
static const char *const dx_labels[] = {"Normal", "Hypertrophic cardiomyopathy",
                                        "Dilated cardiomyopathy"};

typedef struct fixture {
    char *dir;
    char db[256], truth[256], csv[256], html[256];
    char *out, *err;
    json_t *doc; /* the last --json output */
} fixture;

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

/* Case i's vectors, in case order from *rng = 42: three clusters. */
static void case_vectors(int i, unsigned dim, uint64_t *rng, float *image, float *text)
{
    for (unsigned d = 0; d < dim; d++) {
        image[d] = (d == (unsigned)(i % 3) ? 3.0f : 0.0f) + 0.4f * test_gauss(rng);
        text[d] = image[d] + 0.3f * test_gauss(rng);
    }
}

/* Whether truth.json gives case i late enhancement: never the normals, half
 * of the DCMs, every HCM. */
static int case_has_lge(int i) { return i % 3 == 1 || (i % 3 == 2 && i % 6 == 5); }

/* A store bound to model (name, hash, dim) with N_CASES cases in three
 * clusters, two studies per patient, case 0 without an impression vector. */
static void build_store(const char *db, const char *name, const char *hash, unsigned dim)
{
    cmr_store *s;
    cmr_txn *txn;
    assert_int_equal(cmr_store_open(db, CMR_STORE_CREATE, NULL, &s), 0);
    assert_int_equal(cmr_txn_begin(s, &txn), 0);
    assert_int_equal(cmr_txn_set_model(txn, name, hash, dim), 0);
    float *image = malloc(dim * sizeof *image), *text = malloc(dim * sizeof *text);
    assert_non_null(image);
    assert_non_null(text);
    uint64_t rng = 42;
    for (int i = 0; i < N_CASES; i++) {
        int c = i % 3;
        char uid[32], patient[32];
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        snprintf(patient, sizeof patient, "P%d", i / 2);
        case_vectors(i, dim, &rng, image, text);
        cmr_diagnosis dx = {.code = dx_codes[c], .system = "ICD-10", .label = dx_labels[c]};
        cmr_case rec = {.study_uid = uid, .age_years = -1, .n_diagnoses = 1, .diagnoses = &dx,
                        .impression = "impression", .has_patient_key = 1};
        assert_int_equal(cmr_store_patient_key(s, patient, rec.patient_key), 0);
        assert_int_equal(cmr_txn_put(txn, &rec, image, i == 0 ? NULL : text, NULL), 0);
    }
    assert_int_equal(cmr_txn_commit(txn), 0);
    assert_int_equal(cmr_store_close(s), 0);
    free(image);
    free(text);
}

/* truth.json as cmr-phantom writes it (the fields eval reads), with one
 * study (of a diagnosis no stored case has) that the store does not hold;
 * and the same labels as a CSV. */
static void write_labels(fixture *f)
{
    json_t *list = json_array();
    char uid[32], line[64];
    size_t cap = 64 * (N_CASES + 2);
    char *csv = calloc(1, cap);
    assert_non_null(csv);
    strcat(csv, "study_uid,label\n");
    for (int i = 0; i <= N_CASES; i++) {
        int c = i % 3;
        snprintf(uid, sizeof uid, "1.2.3.%d", i);
        json_array_append_new(list, json_pack(
            "{s:s, s:s, s:s, s:{s:f, s:f, s:f, s:f, s:f, s:s}}", "study_uid", uid, "diagnosis",
            i == N_CASES ? "fabry" : dx_keys[c], "sex", i % 2 ? "F" : "M", "params", "lvef", c == 2 ? 0.3 : 0.62, "rvef",
            0.55, "lvedv_ml", c == 2 ? 250.0 : 110.0, "rvedv_ml", 100.0, "max_wall_mm",
            c == 1 ? 20.0 : 8.0, "lge_pattern", case_has_lge(i) ? "septal_midwall" : "none"));
        snprintf(line, sizeof line, "%s,%s\n", uid, c ? "sick" : "well");
        strcat(csv, line);
    }
    json_t *truth = json_pack("{s:s, s:o}", "generator", "cmr-phantom", "study_list", list);
    assert_int_equal(json_dump_file(truth, f->truth, 0), 0);
    json_decref(truth);
    write_text(f->csv, csv);
    free(csv);
}

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    if (!f || !(f->dir = test_tmpdir()))
        return -1;
    snprintf(f->db, sizeof f->db, "%s/db", f->dir);
    snprintf(f->truth, sizeof f->truth, "%s/truth.json", f->dir);
    snprintf(f->csv, sizeof f->csv, "%s/labels.csv", f->dir);
    snprintf(f->html, sizeof f->html, "%s/report.html", f->dir);
    cmr_model *m;
    if (cmr_model_open(SMALL_MODEL, &m))
        return -1;
    build_store(f->db, cmr_model_name(m), cmr_model_hash(m), cmr_model_dim(m));
    cmr_model_close(m);
    write_labels(f);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    test_rmtree(f->dir);
    free(f->dir);
    free(f->out);
    free(f->err);
    json_decref(f->doc);
    free(f);
    return 0;
}

/* Runs "cmrsearch eval ARGS..." (NULL-terminated); with --json the output
 * is parsed into f->doc. */
static int run_eval(fixture *f, ...)
{
    char *argv[32] = {"cmrsearch", "eval"};
    int argc = 2, json = 0;
    va_list ap;
    va_start(ap, f);
    const char *a;
    while ((a = va_arg(ap, const char *)) && argc < 31) {
        json |= !strcmp(a, "--json");
        argv[argc++] = (char *)a;
    }
    va_end(ap);
    free(f->out);
    free(f->err);
    json_decref(f->doc);
    f->doc = NULL;
    size_t n_out, n_err;
    FILE *out = open_memstream(&f->out, &n_out), *err = open_memstream(&f->err, &n_err);
    assert_non_null(out);
    assert_non_null(err);
    int status = cmr_cli_run(argc, argv, out, err);
    fclose(out);
    fclose(err);
    if (json && status == 0) {
        json_error_t e;
        if (!(f->doc = json_loads(f->out, 0, &e)))
            fail_msg("not JSON (%s): %s", e.text, f->out);
    }
    return status;
}

static const json_t *path(const json_t *j, const char *a, const char *b)
{
    j = json_object_get(j, a);
    return b ? json_object_get(j, b) : j;
}

static double num_at(const json_t *j, const char *a, const char *b)
{
    const json_t *v = path(j, a, b);
    if (!json_is_number(v))
        fail_msg("%s.%s is not a number", a, b ? b : "");
    return json_number_value(v);
}

static void assert_contains(const char *haystack, const char *needle)
{
    if (!haystack || !strstr(haystack, needle))
        fail_msg("expected \"%s\" in: %s", needle, haystack ? haystack : "(null)");
}

static void test_eval_without_model(void **state)
{
    fixture *f = *state;
    assert_int_equal(run_eval(f, "--db", f->db, "--json", "--episodes", "20", NULL), 0);
    const json_t *d = f->doc;
    assert_int_equal(num_at(d, "cases", "labelled"), N_CASES);
    assert_int_equal(num_at(d, "cases", "with_both"), N_CASES - 1);
    assert_string_equal(json_string_value(path(d, "labels", "source")), "store");
    /* store labels: the first diagnosis code, shown by its label */
    const json_t *normal = path(d, "label_counts", "Z03.89");
    assert_string_equal(json_string_value(json_object_get(normal, "display")), "Normal");
    assert_int_equal(num_at(d, "retrieval", "n"), N_CASES - 1);
    assert_true(num_at(path(d, "retrieval", NULL), "image_to_text", "r10") > 0.5);
    assert_true(num_at(d, "precision_at_k", "micro") > 0.85); /* 9 others per class: 0.9 at most */
    assert_int_equal(num_at(d, "precision_at_k", "k"), 10);
    const json_t *shot1 = json_array_get(path(d, "few_shot", "shots"), 0);
    assert_int_equal(json_integer_value(json_object_get(shot1, "k")), 1);
    assert_true(json_number_value(json_object_get(shot1, "accuracy")) > 0.9);
    /* k = 16 needs 17 cases per class; there are 10 */
    const json_t *shot16 = json_array_get(path(d, "few_shot", "shots"), 4);
    assert_int_equal(json_integer_value(json_object_get(shot16, "episodes")), 0);
    assert_null(json_object_get(d, "zero_shot"));
    assert_contains(json_string_value(json_array_get(json_object_get(d, "notes"), 0)), "no model (--model");

    /* exclude same patient: still well separated */
    assert_int_equal(run_eval(f, "--db", f->db, "--json", "--exclude-same-patient", "-k", "5",
                              NULL), 0);
    assert_true(json_is_true(path(f->doc, "precision_at_k", "exclude_same_patient")));
    assert_int_equal(num_at(f->doc, "precision_at_k", "k"), 5);
}

/* Only DCM has studies on both sides of LGE: its within-class AUC must be
 * the prompt's AUC over the DCM cases alone, recomputed here from the
 * vectors and the model by pair counting. */
static void check_within_class(const json_t *neg)
{
    const json_t *w = json_object_get(neg, "within_class");
    assert_non_null(w);
    assert_int_equal(json_array_size(json_object_get(w, "classes")), 1);
    const json_t *dcm = json_array_get(json_object_get(w, "classes"), 0);
    assert_string_equal(json_string_value(json_object_get(dcm, "label")), "dcm");
    assert_int_equal(json_integer_value(json_object_get(dcm, "n_pos")), 5);
    assert_int_equal(json_integer_value(json_object_get(dcm, "n_neg")), 5);
    assert_int_equal(json_integer_value(json_object_get(w, "n")), 10);

    cmr_model *m;
    assert_int_equal(cmr_model_open(SMALL_MODEL, &m), 0);
    unsigned dim = cmr_model_dim(m);
    float *image = malloc(dim * sizeof *image), *text = malloc(dim * sizeof *text);
    float *prompt = malloc(dim * sizeof *prompt);
    assert_non_null(image);
    assert_non_null(text);
    assert_non_null(prompt);
    assert_int_equal(cmr_model_encode_text(m, "no late gadolinium enhancement", prompt), 0);
    double absent[N_CASES], present[N_CASES];
    int n_absent = 0, n_present = 0;
    uint64_t rng = 42;
    for (int i = 0; i < N_CASES; i++) {
        case_vectors(i, dim, &rng, image, text);
        if (i % 3 != 2)
            continue;
        double dot = 0, norm = 0;
        for (unsigned d = 0; d < dim; d++)
            dot += (double)image[d] * prompt[d], norm += (double)image[d] * image[d];
        if (case_has_lge(i))
            present[n_present++] = dot / sqrt(norm);
        else
            absent[n_absent++] = dot / sqrt(norm);
    }
    double wins = 0;
    for (int a = 0; a < n_absent; a++)
        for (int b = 0; b < n_present; b++)
            wins += absent[a] > present[b] ? 1 : absent[a] == present[b] ? 0.5 : 0;
    double want = wins / (n_absent * n_present);
    assert_float_equal(json_number_value(json_object_get(dcm, "auc")), want, 1e-9);
    assert_float_equal(json_number_value(json_object_get(w, "auc_weighted")), want, 1e-9);
    free(image);
    free(text);
    free(prompt);
    cmr_model_close(m);
}

static void test_eval_with_model_and_truth(void **state)
{
    fixture *f = *state;
    assert_int_equal(run_eval(f, "--db", f->db, "--model", SMALL_MODEL, "--labels", f->truth,
                              "--json", "--episodes", "10", "--html", f->html, NULL), 0);
    const json_t *d = f->doc;
    assert_string_equal(json_string_value(path(d, "labels", "source")), "truth.json");
    const json_t *zs = json_object_get(d, "zero_shot");
    assert_non_null(zs);
    /* fabry is in truth.json, not in the store: it does not compete */
    assert_int_equal(json_array_size(json_object_get(zs, "classes")), 3);
    /* classes in the bank's order, whatever order the store had them in */
    const json_t *first = json_array_get(json_object_get(zs, "classes"), 0);
    assert_string_equal(json_string_value(json_object_get(first, "label")), "normal");
    assert_string_equal(json_string_value(json_array_get(json_object_get(first, "prompts"), 0)),
                        "normal cardiac MRI");
    double total = 0;
    size_t i, j;
    const json_t *row, *v;
    json_array_foreach(path(zs, "confusion", "counts"), i, row)
        json_array_foreach(row, j, v)
            total += (double)json_integer_value(v);
    assert_int_equal(total, N_CASES);
    assert_int_equal(json_array_size(json_object_get(d, "findings")), EVAL_N_FINDINGS);
    const json_t *lge = json_array_get(json_object_get(d, "findings"), EVAL_F_LGE);
    assert_string_equal(json_string_value(json_object_get(lge, "name")), "lge");
    /* the 10 HCMs and the 5 DCMs with enhancement; the fabry is not stored */
    assert_int_equal(json_integer_value(json_object_get(lge, "n_pos")), 15);
    const json_t *neg = json_object_get(d, "negation");
    assert_int_equal(json_integer_value(json_object_get(neg, "n_pos")), 15);
    /* the absent-LGE prompt's AUC mirrors a score, so it lies in [0, 1] */
    double auc = json_number_value(json_object_get(neg, "auc"));
    assert_true(auc >= 0 && auc <= 1);
    assert_non_null(path(neg, "roc", "fpr"));
    check_within_class(neg);
    /* one labelled study is not in the store */
    assert_contains(json_string_value(json_array_get(json_object_get(d, "notes"), 0)),
                    "not in the store");

    /* the HTML report: self-contained, with its plots */
    FILE *fp = fopen(f->html, "r");
    assert_non_null(fp);
    char *html = calloc(1, 1 << 20);
    assert_non_null(html);
    size_t got = fread(html, 1, (1 << 20) - 1, fp);
    fclose(fp);
    assert_true(got > 1000);
    assert_contains(html, "<svg");
    assert_contains(html, "Zero-shot diagnosis");
    assert_contains(html, "SimpleShot");
    assert_contains(html, "</html>");
    assert_null(strstr(html, "<script"));
    free(html);

    /* --classes narrows zero-shot and few-shot, not precision@k */
    assert_int_equal(run_eval(f, "--db", f->db, "--model", SMALL_MODEL, "--labels", f->truth,
                              "--classes", "normal,hcm", "--json", "--episodes", "5", NULL), 0);
    assert_int_equal(json_array_size(path(f->doc, "zero_shot", "classes")), 2);
    assert_int_equal(num_at(f->doc, "zero_shot", "n"), 20);
    assert_int_equal(num_at(f->doc, "few_shot", "n"), 20);
    assert_int_equal(num_at(f->doc, "precision_at_k", "n"), N_CASES);

    /* the table */
    assert_int_equal(run_eval(f, "--db", f->db, "--model", SMALL_MODEL, "--labels", f->truth,
                              "--episodes", "5", NULL), 0);
    assert_contains(f->out, "retrieval: 29 image/impression pairs");
    assert_contains(f->out, "zero-shot diagnosis: 30 cases, 3 classes");
    assert_contains(f->out, "no late gadolinium enhancement");
    assert_contains(f->out, "few-shot (SimpleShot");
}

static void test_eval_csv_and_prompts(void **state)
{
    fixture *f = *state;
    char prompts[300];
    snprintf(prompts, sizeof prompts, "%s/prompts.json", f->dir);
    write_text(prompts, "{\"well\": [\"normal study\", \"no abnormality\"], \"sick\": \"cardiomyopathy\"}");
    assert_int_equal(run_eval(f, "--db", f->db, "--model", SMALL_MODEL, "--labels", f->csv,
                              "--prompts", prompts, "--json", "--episodes", "5", NULL), 0);
    assert_string_equal(json_string_value(path(f->doc, "labels", "source")), "csv");
    assert_int_equal(num_at(json_object_get(f->doc, "label_counts"), "sick", "n"), 20);
    const json_t *classes = path(f->doc, "zero_shot", "classes");
    assert_int_equal(json_array_size(classes), 2);
    /* not in the bank: ordered by name */
    const json_t *well = json_array_get(classes, 1);
    assert_string_equal(json_string_value(json_object_get(well, "label")), "well");
    assert_int_equal(json_array_size(json_object_get(well, "prompts")), 2);
    /* no findings without a truth.json */
    assert_null(json_object_get(f->doc, "findings"));
}

static void test_eval_refusals(void **state)
{
    fixture *f = *state;
    assert_int_equal(run_eval(f, "--db", f->db, "--classes", "normal,nonesuch", "--labels",
                              f->truth, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "nonesuch");
    assert_int_equal(run_eval(f, "--db", f->db, "--classes", "fabry", "--labels", f->truth, NULL),
                     CMR_EXIT_USAGE);
    assert_int_equal(run_eval(f, "--db", f->db, "--classes", ",", NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "no label given");
    assert_int_equal(run_eval(f, "--db", f->db, "-k", "0", NULL), CMR_EXIT_USAGE);
    char bad[300];
    snprintf(bad, sizeof bad, "%s/bad.csv", f->dir);
    write_text(bad, "study_uid,label\n1.2.3.1,a,b\n");
    assert_int_equal(run_eval(f, "--db", f->db, "--labels", bad, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "line 2");
    write_text(bad, "1.2.3.1,a\n1.2.3.1,b\n");
    assert_int_equal(run_eval(f, "--db", f->db, "--labels", bad, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "labelled twice");
    write_text(bad, "9.9.9,a\n");
    assert_int_equal(run_eval(f, "--db", f->db, "--labels", bad, NULL), CMR_EXIT_DATA);
    assert_contains(f->err, "has a label");
    /* a store embedded by another model: prompts from this one mean nothing */
    char other[300];
    snprintf(other, sizeof other, "%s/other", f->dir);
    build_store(other, "another-model", "0123456789abcdef", 32);
    assert_int_equal(run_eval(f, "--db", other, "--model", SMALL_MODEL, NULL), CMR_EXIT_USAGE);
    assert_contains(f->err, "another-model");
    /* without --model the same store evaluates */
    assert_int_equal(run_eval(f, "--db", other, "--episodes", "3", NULL), 0);
    assert_int_equal(run_eval(f, "--help", NULL), 0);
    assert_contains(f->out, "--labels FILE");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ranks),
        cmocka_unit_test(test_auc_and_roc),
        cmocka_unit_test(test_precision_at_k),
        cmocka_unit_test(test_simpleshot_episode),
        cmocka_unit_test(test_simpleshot_episodes),
        cmocka_unit_test(test_confusion_argmax),
        cmocka_unit_test(test_finding_rules),
        cmocka_unit_test_setup_teardown(test_eval_without_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_with_model_and_truth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_csv_and_prompts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_eval_refusals, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
