/* cmrsearch audit (searcher/audit*.c, cli/cmd_audit.c) on stores built here
 * with vectors chosen so that the answer is known: three diagnosis clusters
 * in image and text space, a duplicate pair, a case whose image neighbours
 * all carry another code, an impression contradicting its code, a missing
 * view, a case without vectors, a report without impression, and an LMDB
 * table edited behind the store's back.  The phantom end to end is
 * tests/audit_e2e.sh. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

#include <lmdb.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "audit_internal.h"
#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"
#include "test_util.h"

#define DIM 16
#define PER_CLASS 25
#define ALL_VIEWS 0xbbu /* cine SAX, 2ch, 4ch; LGE SAX, 2ch, 4ch (no 3ch, as many sites) */

static const char *const codes[3] = {"I42.1", "I42.0", "I40.9"};
static const char *const labels[3] = {"Hypertrophic cardiomyopathy", "Dilated cardiomyopathy", "Myocarditis"};

typedef struct fixture {
    char *dir;
    cmr_store *store;
    uint64_t rng;
    uint64_t dup_a, dup_b, near_a, near_b, mislabelled, contradicted, no_views, no_vectors, no_impression;
} fixture;

/* A unit vector near basis axis `axis` (noise ~ sigma per component). */
static void near_axis(fixture *f, int axis, float sigma, float *v)
{
    for (int d = 0; d < DIM; d++)
        v[d] = sigma * test_gauss(&f->rng);
    v[axis] += 1.0f;
}

static uint64_t put(fixture *f, const char *uid, const char *patient, int32_t date, uint32_t views, int cls,
                    const char *impression, const float *image, const float *text)
{
    cmr_case c = {.study_uid = uid, .study_date = date, .views = views, .sex = 'F', .age_years = 50,
                  .impression = impression};
    cmr_diagnosis dx = {.code = cls >= 0 ? codes[cls] : NULL, .system = "ICD-10", .label = cls >= 0 ? labels[cls] : NULL};
    if (cls >= 0) {
        c.n_diagnoses = 1;
        c.diagnoses = &dx;
        c.impression_source = "reports/r.xml";
    }
    assert_int_equal(cmr_store_patient_key(f->store, patient, c.patient_key), 0);
    c.has_patient_key = 1;
    cmr_txn *txn;
    uint64_t id;
    assert_int_equal(cmr_txn_begin(f->store, &txn), 0);
    int rc = cmr_txn_put(txn, &c, image, text, &id);
    if (rc)
        fail_msg("put %s: %s", uid, cmr_errmsg());
    assert_int_equal(cmr_txn_commit(txn), 0);
    return id;
}

/* Three clusters: class c's images near axis c, its impressions near axis
 * 8 + c; then the planted cases. */
static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    assert_non_null(f);
    f->rng = 42;
    assert_non_null(f->dir = test_tmpdir());
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    assert_int_equal(cmr_store_open(db, CMR_STORE_CREATE, NULL, &f->store), 0);
    char hash[65];
    memset(hash, 'a', 64);
    hash[64] = '\0';
    assert_int_equal(cmr_store_set_model(f->store, "test-model", hash, DIM), 0);
    float img[DIM], txt[DIM];
    char uid[64], patient[32];
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < PER_CLASS; i++) {
            snprintf(uid, sizeof uid, "1.2.3.%d.%d", c, i);
            snprintf(patient, sizeof patient, "P%d-%d", c, i);
            near_axis(f, c, 0.15f, img);
            near_axis(f, 8 + c, 0.15f, txt);
            put(f, uid, patient, 20200101 + i, ALL_VIEWS, c, "impression text", img, txt);
        }
    /* A resend: the same images under a new UID, no report. */
    near_axis(f, 0, 0.15f, img);
    near_axis(f, 8, 0.15f, txt);
    f->dup_a = put(f, "1.2.9.1", "PDUP", 20210505, ALL_VIEWS, 0, "asymmetric septal hypertrophy", img, txt);
    f->dup_b = put(f, "1.2.9.2", "PDUP", 20210505, ALL_VIEWS, -1, NULL, img, NULL);
    /* Two different patients' studies that are close but not copies (cos ~0.95). */
    near_axis(f, 1, 0.15f, img);
    near_axis(f, 9, 0.15f, txt);
    f->near_a = put(f, "1.2.9.3", "PNEAR1", 20210606, ALL_VIEWS, 1, "dilated LV", img, txt);
    for (int d = 0; d < DIM; d++)
        img[d] += (d % 2 ? 0.1f : -0.1f);
    f->near_b = put(f, "1.2.9.4", "PNEAR2", 20210607, ALL_VIEWS, 1, "dilated LV", img, txt);
    /* Coded and described as class 0, imaged as class 1. */
    near_axis(f, 1, 0.1f, img);
    near_axis(f, 8, 0.1f, txt);
    f->mislabelled = put(f, "1.2.9.5", "PMIS", 20210707, ALL_VIEWS, 0, "septal hypertrophy", img, txt);
    /* Coded class 0, described and imaged as class 2. */
    near_axis(f, 2, 0.1f, img);
    near_axis(f, 10, 0.1f, txt);
    f->contradicted = put(f, "1.2.9.6", "PCON", 20210808, ALL_VIEWS, 0, "subepicardial enhancement", img, txt);
    /* No LGE at all; class 2 and consistent otherwise. */
    near_axis(f, 2, 0.15f, img);
    near_axis(f, 10, 0.15f, txt);
    f->no_views = put(f, "1.2.9.7", "PNOV", 20210909, ALL_VIEWS & 0x0fu, 2, "myocarditis", img, txt);
    /* Stored without vectors. */
    f->no_vectors = put(f, "1.2.9.8", "PNOVEC", 20211010, ALL_VIEWS, 1, "dilated", NULL, NULL);
    /* A report without impression (so no text vector either). */
    near_axis(f, 1, 0.15f, img);
    f->no_impression = put(f, "1.2.9.9", "PNOIMP", 20211111, ALL_VIEWS, 1, "", img, NULL);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    cmr_store_close(f->store);
    test_rmtree(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

static const cmr_audit_finding *find_kind(const cmr_audit_report *r, cmr_audit_kind kind, uint64_t id,
                                          size_t *count)
{
    const cmr_audit_finding *hit = NULL;
    *count = 0;
    for (size_t i = 0; i < r->n; i++)
        if (r->findings[i].kind == kind) {
            ++*count;
            if (r->findings[i].case_id == id || r->findings[i].other_id == id)
                hit = &r->findings[i];
        }
    return hit;
}

static cmr_audit_report *audit(fixture *f, unsigned kinds)
{
    cmr_audit_options o;
    cmr_audit_options_init(&o);
    o.kinds = kinds;
    cmr_audit_report *r = NULL;
    int rc = cmr_audit_run(f->store, NULL, &o, &r);
    if (rc)
        fail_msg("audit: %s", cmr_errmsg());
    return r;
}

/* ---- tests ---------------------------------------------------------------------------- */

static void test_kind_names(void **state)
{
    (void)state;
    unsigned k;
    assert_int_equal(cmr_audit_kinds_parse("duplicate, label_error", &k), 0);
    assert_int_equal(k, (1u << CMR_AUDIT_DUPLICATE) | (1u << CMR_AUDIT_LABEL_ERROR));
    assert_int_equal(cmr_audit_kinds_parse("all", &k), 0);
    assert_int_equal(k, CMR_AUDIT_ALL);
    assert_int_equal(cmr_audit_kinds_parse("duplicate,typo", &k), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "'typo'"));
    assert_int_equal(cmr_audit_kinds_parse("", &k), CMR_EINVAL);
    for (int i = 0; i < CMR_AUDIT_NKINDS; i++) {
        cmr_audit_kind back;
        assert_int_equal(cmr_audit_kind_parse(cmr_audit_kind_name((cmr_audit_kind)i), &back), 0);
        assert_int_equal(back, i);
    }
    assert_null(cmr_audit_kind_name(CMR_AUDIT_NKINDS));
}

/* Copies sit decades below the bulk of nearest-neighbour distances: the
 * threshold falls in between; without copies it is the floor. */
static void test_dup_threshold(void **state)
{
    (void)state;
    double nn[100];
    for (int i = 0; i < 100; i++)
        nn[i] = 0.02 + 0.001 * i;
    nn[3] = 1e-7;
    nn[50] = 3e-7;
    double t = audit_dup_threshold(nn, 100);
    assert_true(t > 3e-7 && t < 0.02);
    assert_true(t >= 1e-5 && t <= 1e-2);
    for (int i = 0; i < 100; i++)
        nn[i] = 0.02 + 0.001 * i;
    assert_true(audit_dup_threshold(nn, 100) == 1e-5);
}

static void test_duplicates(void **state)
{
    fixture *f = *state;
    cmr_audit_report *r = audit(f, 1u << CMR_AUDIT_DUPLICATE);
    size_t n;
    const cmr_audit_finding *d = find_kind(r, CMR_AUDIT_DUPLICATE, f->dup_a, &n);
    assert_int_equal(n, 1);
    assert_non_null(d);
    /* the copy without a report is named first, the original second */
    assert_int_equal(d->case_id, f->dup_b);
    assert_int_equal(d->other_id, f->dup_a);
    assert_string_equal(d->study_uid, "1.2.9.2");
    assert_string_equal(d->other_uid, "1.2.9.1");
    assert_true(d->confidence >= 0.9f);
    assert_non_null(strstr(d->reason, "same patient"));
    assert_true(r->dup_cosine > 0.99f && r->dup_cosine < 1.0f);
    assert_null(find_kind(r, CMR_AUDIT_DUPLICATE, f->near_a, &n));
    /* only duplicates were asked for */
    assert_int_equal(r->n, 1);
    cmr_audit_report_free(r);

    /* A threshold given by the user is used as given. */
    cmr_audit_options o;
    cmr_audit_options_init(&o);
    o.kinds = 1u << CMR_AUDIT_DUPLICATE;
    o.dup_cosine = 0.9f;
    assert_int_equal(cmr_audit_run(f->store, NULL, &o, &r), 0);
    assert_true(fabsf(r->dup_cosine - 0.9f) < 1e-6f);
    assert_non_null(find_kind(r, CMR_AUDIT_DUPLICATE, f->near_a, &n));
    assert_true(n >= 2);
    cmr_audit_report_free(r);
}

static void test_labels(void **state)
{
    fixture *f = *state;
    cmr_audit_report *r = audit(f, (1u << CMR_AUDIT_LABEL_ERROR) | (1u << CMR_AUDIT_CONTRADICTION));
    size_t n;
    const cmr_audit_finding *e = find_kind(r, CMR_AUDIT_LABEL_ERROR, f->mislabelled, &n);
    assert_non_null(e);
    assert_int_equal(n, 1); /* nothing else among the consistent cases */
    assert_true(e->confidence >= 0.6f);
    assert_string_equal(e->recorded, "I42.1 (Hypertrophic cardiomyopathy)");
    assert_string_equal(e->suggested, "I42.0 (Dilated cardiomyopathy)");
    const cmr_audit_finding *c = find_kind(r, CMR_AUDIT_CONTRADICTION, f->contradicted, &n);
    assert_non_null(c);
    assert_int_equal(n, 1);
    assert_true(c->confidence >= 0.8f);
    assert_string_equal(c->suggested, "I40.9 (Myocarditis)");
    /* images agree with the impression: the code is what is wrong, not the images */
    assert_null(find_kind(r, CMR_AUDIT_LABEL_ERROR, f->contradicted, &n));
    assert_int_equal(r->zero_shot, 0);
    assert_int_equal(r->n_classes, 3);
    int noted = 0;
    for (size_t i = 0; i < r->n_notes; i++)
        noted |= strstr(r->notes[i], "zero-shot") != NULL;
    assert_true(noted);
    cmr_audit_report_free(r);
}

/* Which classes are described by their reports: those the prompt bank
 * knows by neither code nor label, with two impressions or more. */
static void test_described_by_reports(void **state)
{
    (void)state;
    audit_class generic = {.code = "85898001", .label = "Cardiomyopathy"};
    audit_class other = {.code = "I42.8", .label = "Other cardiomyopathies"};
    audit_class hcm = {.code = "I42.1", .label = "Obstructive hypertrophic cardiomyopathy"};
    audit_class by_label = {.code = "XYZ", .label = "LV noncompaction"};
    audit_class bare = {.code = "XYZ", .label = NULL};
    assert_int_equal(audit_described_by_reports(&generic, 2), 1);
    assert_int_equal(audit_described_by_reports(&generic, 1), 0);
    assert_int_equal(audit_described_by_reports(&other, 30), 1);
    assert_int_equal(audit_described_by_reports(&bare, 2), 1);
    assert_int_equal(audit_described_by_reports(&hcm, 30), 0);
    assert_int_equal(audit_described_by_reports(&by_label, 30), 0);
}

/* The class descriptions the zero-shot term compares an image with: a
 * prompt row, or a class's mean impression with the case's own left out
 * (else a case's own report would vouch for its code). */
static void test_prompt_cos(void **state)
{
    (void)state;
    enum { N = 4, D = 4, C = 2 };
    /* class 0 prompted, class 1 described by its three impressions (cases 1-3) */
    float image[N * D] = {1, 0, 0, 0, 0, 1, 0, 0, 0.6f, 0.8f, 0, 0, 0, 0, 1, 0};
    float text[N * D] = {0, 0, 0, 1, 0, 1, 0, 0, 0, 0.6f, 0.8f, 0, 0, 0, 0, 1};
    float prompts[C * D] = {0.8f, 0, 0, 0.6f, 0, 0, 0, 0};
    unsigned char from_reports[C] = {0, 1};
    audit_case cases[N] = {
        {.cls = 0, .vectors = 3}, {.cls = 1, .vectors = 3}, {.cls = 1, .vectors = 3}, {.cls = 1, .vectors = 1}};
    /* case 3 has no text vector: it is in no sum and has nothing to leave out */
    audit_ctx a = {.dim = D, .n = N, .cases = cases, .n_classes = C, .prompts = prompts,
                   .prompt_from_reports = from_reports};
    a.vec[CMR_SPACE_IMAGE] = image;
    a.vec[CMR_SPACE_TEXT] = text;
    double sum[C * D] = {0}, cos[C];
    size_t count[C] = {0};
    for (int i = 0; i < N; i++)
        if (cases[i].vectors >> CMR_SPACE_TEXT & 1) {
            count[cases[i].cls]++;
            for (int d = 0; d < D; d++)
                sum[cases[i].cls * D + d] += text[i * D + d];
        }
    assert_int_equal(count[1], 2);
    /* case 0 (class 0): prompt 0.8; the whole class-1 mean (0, 1.6, 0.8, 0) */
    audit_prompt_cos(&a, sum, count, 0, image, cos);
    assert_float_equal(cos[0], 0.8, 1e-6);
    assert_float_equal(cos[1], 0.0, 1e-6);
    /* case 1 (class 1): its own (0, 1, 0, 0) left out leaves (0, 0.6, 0.8, 0) */
    audit_prompt_cos(&a, sum, count, 1, image + D, cos);
    assert_float_equal(cos[0], 0.0, 1e-6);
    assert_float_equal(cos[1], 0.6, 1e-6);
    /* case 2: leaves (0, 1, 0, 0); image (0.6, 0.8, 0, 0) */
    audit_prompt_cos(&a, sum, count, 2, image + 2 * D, cos);
    assert_float_equal(cos[0], 0.48, 1e-6);
    assert_float_equal(cos[1], 0.8, 1e-6);
    /* case 3: nothing of its own in the sum, the whole mean (0, 1.6, 0.8, 0) / |.| */
    audit_prompt_cos(&a, sum, count, 3, image + 3 * D, cos);
    assert_float_equal(cos[1], 0.8 / sqrt(1.6 * 1.6 + 0.8 * 0.8), 1e-6);
}

static void test_record_checks(void **state)
{
    fixture *f = *state;
    cmr_audit_report *r = audit(f, CMR_AUDIT_ALL);
    size_t n;
    const cmr_audit_finding *m = find_kind(r, CMR_AUDIT_MISSING_VIEW, f->no_views, &n);
    assert_non_null(m);
    assert_int_equal(n, 1);
    assert_non_null(strstr(m->reason, "LGE short-axis, LGE long-axis"));
    const cmr_audit_finding *o = find_kind(r, CMR_AUDIT_OUTDATED_MODEL, f->no_vectors, &n);
    assert_non_null(o);
    assert_int_equal(n, 1); /* a missing impression vector is no model problem */
    const cmr_audit_finding *ni = find_kind(r, CMR_AUDIT_NO_IMPRESSION, f->no_impression, &n);
    assert_non_null(ni);
    /* the resend without a report is explained by its duplicate finding */
    assert_null(find_kind(r, CMR_AUDIT_NO_IMPRESSION, f->dup_b, &n));
    assert_int_equal(n, 1);
    size_t inc;
    find_kind(r, CMR_AUDIT_INCONSISTENCY, 0, &inc);
    assert_int_equal(inc, 0);
    /* sorted by kind, then confidence */
    for (size_t i = 1; i < r->n; i++)
        assert_true(r->findings[i - 1].kind < r->findings[i].kind ||
                    (r->findings[i - 1].kind == r->findings[i].kind &&
                     r->findings[i - 1].confidence >= r->findings[i].confidence));
    cmr_audit_report_free(r);
}

/* Remove a case's Study Instance UID key with LMDB directly: verify's
 * problem becomes an inconsistency finding on that case. */
static void test_inconsistency(void **state)
{
    fixture *f = *state;
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    assert_int_equal(cmr_store_close(f->store), 0);
    f->store = NULL;
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(env, 1ull << 30), 0);
    assert_int_equal(mdb_env_open(env, db, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "by_uid", 0, &dbi), 0);
    MDB_val key = {strlen("1.2.3.1.4"), (void *)"1.2.3.1.4"};
    assert_int_equal(mdb_del(txn, dbi, &key, NULL), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(cmr_store_open(db, 0, NULL, &f->store), 0);

    cmr_audit_report *r = audit(f, 1u << CMR_AUDIT_INCONSISTENCY);
    assert_true(r->count[CMR_AUDIT_INCONSISTENCY] >= 1);
    const cmr_audit_finding *x = &r->findings[0];
    assert_int_equal(x->kind, CMR_AUDIT_INCONSISTENCY);
    assert_string_equal(x->study_uid, "1.2.3.1.4");
    assert_non_null(strstr(x->reason, "does not lead back"));
    cmr_audit_report_free(r);
}

/* Scoring against a truth.json naming what was planted above. */
static void test_truth_scores(void **state)
{
    fixture *f = *state;
    char path[4200];
    snprintf(path, sizeof path, "%s/truth.json", f->dir);
    FILE *fp = fopen(path, "w");
    assert_non_null(fp);
    fputs("{\"study_list\": [\n"
          " {\"study_uid\": \"1.2.9.1\", \"problems\": [], \"duplicate_of\": null},\n"
          " {\"study_uid\": \"1.2.9.2\", \"problems\": [\"duplicate\"], \"duplicate_of\": \"1.2.9.1\"},\n"
          " {\"study_uid\": \"1.2.9.5\", \"problems\": [\"label_noise\"], \"duplicate_of\": null},\n"
          " {\"study_uid\": \"1.2.9.3\", \"problems\": [\"label_noise\"], \"duplicate_of\": null},\n"
          " {\"study_uid\": \"1.2.9.6\", \"problems\": [\"contradiction\"], \"duplicate_of\": null},\n"
          " {\"study_uid\": \"1.2.9.7\", \"problems\": [\"missing_lge\"], \"duplicate_of\": null},\n"
          " {\"study_uid\": \"9.9.9\", \"problems\": [\"label_noise\"], \"duplicate_of\": null}\n"
          "]}\n",
          fp);
    fclose(fp);
    cmr_audit_report *r = audit(f, CMR_AUDIT_ALL);
    cmr_audit_score s[CMR_AUDIT_NKINDS];
    assert_int_equal(cmr_audit_score_truth(f->store, r, path, 0.5f, s), 0);
    assert_true(s[CMR_AUDIT_DUPLICATE].scored);
    assert_int_equal(s[CMR_AUDIT_DUPLICATE].truth, 1);
    assert_int_equal(s[CMR_AUDIT_DUPLICATE].hits, 1);
    assert_true(s[CMR_AUDIT_DUPLICATE].precision == 1.0 && s[CMR_AUDIT_DUPLICATE].recall == 1.0);
    /* 9.9.9 is not in the store: not counted; 1.2.9.3 was planted but is consistent */
    assert_int_equal(s[CMR_AUDIT_LABEL_ERROR].truth, 2);
    assert_int_equal(s[CMR_AUDIT_LABEL_ERROR].found, 1);
    assert_int_equal(s[CMR_AUDIT_LABEL_ERROR].hits, 1);
    assert_true(fabs(s[CMR_AUDIT_LABEL_ERROR].recall - 0.5) < 1e-12);
    assert_true(s[CMR_AUDIT_CONTRADICTION].precision == 1.0 && s[CMR_AUDIT_CONTRADICTION].recall == 1.0);
    assert_true(s[CMR_AUDIT_MISSING_VIEW].precision == 1.0 && s[CMR_AUDIT_MISSING_VIEW].recall == 1.0);
    /* the no-impression case is found but was not planted */
    assert_int_equal(s[CMR_AUDIT_NO_IMPRESSION].truth, 0);
    assert_true(isnan(s[CMR_AUDIT_NO_IMPRESSION].recall));
    assert_true(s[CMR_AUDIT_NO_IMPRESSION].precision == 0.0);
    assert_false(s[CMR_AUDIT_OUTDATED_MODEL].scored);
    assert_false(s[CMR_AUDIT_INCONSISTENCY].scored);
    snprintf(path, sizeof path, "%s/missing.json", f->dir);
    assert_int_equal(cmr_audit_score_truth(f->store, r, path, 0.5f, s), CMR_ENOTFOUND);
    cmr_audit_report_free(r);
}

static char *run_cli(int expect, const char *a1, const char *a2, const char *a3, const char *a4, const char *a5,
                     const char *a6)
{
    char *argv[10] = {"cmrsearch", "audit"};
    int argc = 2;
    const char *args[] = {a1, a2, a3, a4, a5, a6};
    for (int i = 0; i < 6 && args[i]; i++)
        argv[argc++] = (char *)args[i];
    char *out = NULL, *err = NULL;
    size_t n_out, n_err;
    FILE *fo = open_memstream(&out, &n_out), *fe = open_memstream(&err, &n_err);
    assert_non_null(fo);
    assert_non_null(fe);
    int status = cmr_cli_run(argc, argv, fo, fe);
    fclose(fo);
    fclose(fe);
    if (status != expect)
        fail_msg("exit %d, expected %d; stderr: %s", status, expect, err);
    free(err);
    return out;
}

static void test_cli(void **state)
{
    fixture *f = *state;
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    assert_int_equal(cmr_store_close(f->store), 0); /* the command opens it itself */
    f->store = NULL;
    char *out = run_cli(0, "--db", db, "--csv", "--kinds", "duplicate,missing_view", NULL);
    assert_non_null(strstr(out, "kind,confidence,case_id,study_uid,other_case_id,other_study_uid,recorded,"
                                "suggested,reason\n"));
    assert_non_null(strstr(out, "duplicate,"));
    assert_non_null(strstr(out, ",1.2.9.2,"));
    assert_non_null(strstr(out, "missing_view,1.000,"));
    assert_null(strstr(out, "label_error"));
    free(out);

    out = run_cli(0, "--db", db, "--json", "--min-confidence", "0.9", NULL);
    json_error_t err;
    json_t *doc = json_loads(out, 0, &err);
    assert_non_null(doc);
    json_t *findings = json_object_get(doc, "findings");
    assert_true(json_array_size(findings) >= 4);
    for (size_t i = 0; i < json_array_size(findings); i++)
        assert_true(json_real_value(json_object_get(json_array_get(findings, i), "confidence")) >= 0.9 - 1e-6);
    assert_int_equal(json_integer_value(json_object_get(doc, "cases")), 3 * PER_CLASS + 9);
    /* the label-error calibration it used, for scripts/fit_audit_calibration.py */
    const json_t *cal = json_object_get(doc, "label_error_calibration");
    assert_float_equal(json_number_value(json_object_get(cal, "platt_a")), AUDIT_PLATT_A, 1e-12);
    assert_float_equal(json_number_value(json_object_get(cal, "platt_b")), AUDIT_PLATT_B, 1e-12);
    json_decref(doc);
    free(out);

    free(run_cli(1, "--db", db, "--kinds", "nonsense", NULL, NULL));
    free(run_cli(1, "--db", db, "--csv", "--json", NULL, NULL));
    free(run_cli(1, "--db", db, "--min-confidence", "1.5", NULL, NULL));
    assert_int_equal(cmr_store_open(db, 0, NULL, &f->store), 0);
}

/* A model other than the store's would make prompts incomparable. */
static void test_wrong_model(void **state)
{
    fixture *f = *state;
    cmr_model *m = NULL;
    if (cmr_model_open(CMR_SOURCE_DIR "/tests/fixtures/model/small", &m))
        fail_msg("opening the small test model: %s", cmr_errmsg());
    cmr_audit_report *r = NULL;
    assert_int_equal(cmr_audit_run(f->store, m, NULL, &r), CMR_EMODEL);
    assert_null(r);
    assert_non_null(strstr(cmr_errmsg(), "not the store's"));
    cmr_model_close(m);
}

static void test_empty_store(void **state)
{
    (void)state;
    char *dir = test_tmpdir();
    assert_non_null(dir);
    cmr_store *s;
    assert_int_equal(cmr_store_open(dir, CMR_STORE_CREATE, NULL, &s), 0);
    cmr_audit_report *r = NULL;
    assert_int_equal(cmr_audit_run(s, NULL, NULL, &r), 0);
    assert_int_equal(r->n, 0);
    assert_int_equal(r->cases, 0);
    cmr_audit_report_free(r);
    cmr_audit_report_free(NULL);
    cmr_audit_options o;
    cmr_audit_options_init(&o);
    o.min_confidence = 2;
    assert_int_equal(cmr_audit_run(s, NULL, &o, &r), CMR_EINVAL);
    assert_int_equal(cmr_store_close(s), 0);
    test_rmtree(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_kind_names),
        cmocka_unit_test(test_dup_threshold),
        cmocka_unit_test(test_described_by_reports),
        cmocka_unit_test(test_prompt_cos),
        cmocka_unit_test(test_empty_store),
        cmocka_unit_test_setup_teardown(test_duplicates, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_checks, setup, teardown),
        cmocka_unit_test_setup_teardown(test_truth_scores, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inconsistency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cli, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wrong_model, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
