/* store/: records, upserts, vectors, filters, indexes, staleness, verify. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <sys/wait.h>

#include "store_internal.h"
#include "test_store_util.h"

#define DIM 32

typedef struct fixture {
    char *dir;
    cmr_store *store;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    assert_non_null(f->dir);
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    assert_int_equal(cmr_store_open(db, CMR_STORE_CREATE, NULL, &f->store), 0);
    assert_int_equal(cmr_store_set_model(f->store, "test-model", "sha256:abcdef", DIM), 0);
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

static const char *const sites[] = {"Cleveland", "Lyon", "Osaka"};
static const char *const manufacturers[] = {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips"};
static const char *const codes[] = {"I42.1", "E85.4", "I42.0", "I25.5"};

/* Case i: cluster i % 4 (= diagnosis), site i % 3, patient i / 2. */
static void make_case(unsigned i, cmr_case *c, char uid[64], char pid[32], cmr_diagnosis *dx,
                      const cmr_store *s)
{
    memset(c, 0, sizeof *c);
    snprintf(uid, 64, "1.2.826.0.1.%u", i + 1);
    snprintf(pid, 32, "MRN%05u", i / 2);
    c->study_uid = uid;
    cmr_store_patient_key(s, pid, c->patient_key);
    c->has_patient_key = 1;
    c->study_date = 20100101 + (int32_t)(i % 12) * 10000 + (int32_t)(i % 9) * 100;
    c->site = sites[i % 3];
    c->manufacturer = manufacturers[i % 3];
    c->field_strength = i % 2 ? 3.0f : 1.5f;
    c->sex = i % 2 ? 'F' : 'M';
    c->age_years = 20 + (int)(i % 60);
    c->views = CMR_VIEW_CINE_SAX | (i % 3 ? CMR_VIEW_LGE_SAX : 0);
    dx->code = codes[i % 4];
    dx->system = "ICD-10";
    dx->label = "label";
    dx->source = "report.xml";
    c->n_diagnoses = 1;
    c->diagnoses = dx;
    c->impression = "Asymmetric septal hypertrophy, 19 mm.";
}

static void put_cases(cmr_store *s, unsigned from, unsigned to, float spread)
{
    cmr_txn *t;
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    for (unsigned i = from; i < to; i++) {
        cmr_case c;
        char uid[64], pid[32];
        cmr_diagnosis dx;
        float img[DIM], txt[DIM];
        make_case(i, &c, uid, pid, &dx, s);
        test_vector(i, i % 4, DIM, spread, img);
        test_vector(i + 100000, i % 4, DIM, spread, txt);
        uint64_t id;
        assert_int_equal(cmr_txn_put(t, &c, img, txt, &id), 0);
    }
    assert_int_equal(cmr_txn_commit(t), 0);
}

static void test_open_missing_store(void **state)
{
    fixture *f = *state;
    char db[4200];
    snprintf(db, sizeof db, "%s/nothing-here", f->dir);
    cmr_store *s = (cmr_store *)1;
    assert_int_equal(cmr_store_open(db, 0, NULL, &s), CMR_ENOTFOUND);
    assert_null(s);
    assert_non_null(strstr(cmr_errmsg(), "nothing-here"));
    assert_int_equal(cmr_store_close(NULL), 0);
}

static void test_site_key_private(void **state)
{
    fixture *f = *state;
    char path[4200];
    snprintf(path, sizeof path, "%s/db/site.key", f->dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, 32);
}

static void test_model_mismatch_refused(void **state)
{
    fixture *f = *state;
    assert_int_equal(cmr_store_set_model(f->store, "test-model", "sha256:abcdef", DIM), 0);
    assert_int_equal(cmr_store_set_model(f->store, "test-model", "sha256:other", DIM), CMR_EMODEL);
    assert_non_null(strstr(cmr_errmsg(), "never mixed"));
    assert_int_equal(cmr_store_set_model(f->store, "test-model", "sha256:abcdef", 64), CMR_EMODEL);
}

static void test_round_trip_and_normalisation(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    cmr_case c;
    char uid[64], pid[32];
    cmr_diagnosis dx[2];
    make_case(7, &c, uid, pid, dx, s);
    dx[1] = (cmr_diagnosis){"I42.1", "ICD-10", "Hypertrophic cardiomyopathy", NULL};
    c.n_diagnoses = 2;
    const char *sources[] = {"/archive/a", "/archive/b.xml"};
    c.sources = sources;
    c.n_sources = 2;
    c.impression_source = "/archive/b.xml";
    c.scanner_model = "Avanto";
    for (int i = 0; i < 32; i++)
        c.fingerprint[i] = (uint8_t)(i * 7 + 1);
    c.has_fingerprint = 1;
    float img[DIM];
    for (int i = 0; i < DIM; i++)
        img[i] = (float)(i + 1);
    uint64_t id;
    cmr_txn *t;
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_put(t, &c, img, NULL, &id), 0);
    assert_int_equal(cmr_txn_commit(t), 0);

    cmr_case *got;
    assert_int_equal(cmr_store_get(s, id, &got), 0);
    assert_string_equal(got->study_uid, uid);
    assert_memory_equal(got->patient_key, c.patient_key, 32);
    assert_int_equal(got->study_date, c.study_date);
    assert_string_equal(got->site, c.site);
    assert_string_equal(got->manufacturer, c.manufacturer);
    assert_string_equal(got->scanner_model, "Avanto");
    assert_true(got->field_strength == c.field_strength);
    assert_int_equal(got->sex, c.sex);
    assert_int_equal(got->age_years, c.age_years);
    assert_int_equal(got->views, c.views);
    assert_int_equal(got->n_diagnoses, 2);
    assert_string_equal(got->diagnoses[1].label, "Hypertrophic cardiomyopathy");
    assert_null(got->diagnoses[1].source);
    assert_string_equal(got->diagnoses[0].source, "report.xml");
    assert_string_equal(got->impression, c.impression);
    assert_string_equal(got->impression_source, "/archive/b.xml");
    assert_int_equal(got->n_sources, 2);
    assert_string_equal(got->sources[1], "/archive/b.xml");
    assert_string_equal(got->model_id, "test-model@sha256:abcdef");
    assert_int_equal(got->vectors, 1u << CMR_SPACE_IMAGE);
    assert_true(got->ingest_time > 1700000000);
    assert_true(got->has_fingerprint);
    assert_memory_equal(got->fingerprint, c.fingerprint, 32);
    cmr_case_free(got);

    float back[DIM];
    double norm = 0;
    assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_IMAGE, back), 0);
    for (int i = 0; i < DIM; i++)
        norm += back[i] * back[i];
    assert_true(fabs(norm - 1.0) < 1e-5);
    assert_true(fabsf(back[1] / back[0] - 2.0f) < 1e-5f);
    assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_TEXT, back), CMR_ENOTFOUND);
    uint64_t found;
    assert_int_equal(cmr_store_find_uid(s, uid, &found), 0);
    assert_int_equal(found, id);
    test_assert_verify_clean(s);
}

static void test_bad_input_changes_nothing(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 10, 0.3f);
    cmr_store_stats before;
    assert_int_equal(cmr_store_stats_get(s, &before), 0);

    cmr_case c;
    char uid[64], pid[32];
    cmr_diagnosis dx;
    float v[DIM];
    test_vector(1, 1, DIM, 0.3f, v);
    cmr_txn *t;

    /* A good put followed by a bad one in the same transaction: the caller
     * aborts, and the good one must not survive either. */
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    make_case(500, &c, uid, pid, &dx, s);
    assert_int_equal(cmr_txn_put(t, &c, v, v, NULL), 0);
    make_case(501, &c, uid, pid, &dx, s);
    v[3] = NAN;
    assert_int_equal(cmr_txn_put(t, &c, v, v, NULL), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "not finite"));
    assert_non_null(strstr(cmr_errmsg(), "1.2.826.0.1.502"));
    cmr_txn_abort(t);

    assert_int_equal(cmr_txn_begin(s, &t), 0);
    memset(v, 0, sizeof v);
    assert_int_equal(cmr_txn_put(t, &c, v, NULL, NULL), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "zero"));
    c.study_uid = "1.2.abc";
    test_vector(1, 1, DIM, 0.3f, v);
    assert_int_equal(cmr_txn_put(t, &c, v, NULL, NULL), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "1.2.abc"));
    c.study_uid = uid;
    c.study_date = 20120000; /* Sunnybrook writes this; must be refused here, not stored */
    assert_int_equal(cmr_txn_put(t, &c, v, NULL, NULL), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "20120000"));
    cmr_txn_abort(t);

    cmr_store_stats after;
    assert_int_equal(cmr_store_stats_get(s, &after), 0);
    assert_int_equal(after.cases, before.cases);
    assert_int_equal(after.generation, before.generation);
    uint64_t id;
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.501", &id), CMR_ENOTFOUND);
    test_assert_verify_clean(s);
}

static void test_upsert_keeps_id_and_moves_keys(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 40, 0.3f);
    uint64_t id;
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.1", &id), 0); /* case 0: I42.1 */

    cmr_case c;
    char uid[64], pid[32];
    cmr_diagnosis dx;
    make_case(0, &c, uid, pid, &dx, s);
    dx.code = "E85.4";
    float v[DIM];
    test_vector(0, 1, DIM, 0.3f, v);
    cmr_txn *t;
    uint64_t id2;
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_put(t, &c, v, v, &id2), 0);
    assert_int_equal(cmr_txn_commit(t), 0);
    assert_int_equal(id2, id);

    cmr_store_stats st;
    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    assert_int_equal(st.cases, 40);

    const char *hcm[] = {"I42.1"};
    cmr_filter flt = {.n_diagnoses = 1, .diagnoses = hcm};
    cmr_hits *h;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, v, 40, &flt, &h), 0);
    for (size_t i = 0; i < h->n; i++)
        assert_int_not_equal(h->hits[i].id, id);
    cmr_hits_free(h);
    const char *amy[] = {"E85.4"};
    flt.diagnoses = amy;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, v, 1, &flt, &h), 0);
    assert_int_equal(h->n, 1);
    assert_int_equal(h->hits[0].id, id); /* its own vector is the best match */
    assert_true(h->hits[0].score > 0.999f);
    cmr_hits_free(h);
    test_assert_verify_clean(s);
}

/* Every hit of a filtered search passes the filter, and the set equals the
 * exact filtered answer. */
static void check_filtered(cmr_store *s, const cmr_filter *flt, size_t k, double min_recall)
{
    float q[DIM];
    size_t agree = 0, total = 0;
    for (unsigned trial = 0; trial < 20; trial++) {
        /* Queries look like stored cases (same spread), as real ones do. */
        test_vector(900000 + trial, trial % 4, DIM, 0.8f, q);
        cmr_hits *a, *e;
        assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, k, flt, &a), 0);
        assert_int_equal(cmr_store_search_exact(s, CMR_SPACE_IMAGE, q, k, flt, &e), 0);
        for (size_t i = 0; i < a->n; i++) {
            const cmr_case *c = a->hits[i].record;
            if (flt->site)
                assert_string_equal(c->site, flt->site);
            if (flt->sex)
                assert_int_equal(c->sex, flt->sex);
            if (flt->date_from)
                assert_true(c->study_date >= flt->date_from);
            if (flt->date_to)
                assert_true(c->study_date <= flt->date_to);
            if (flt->age_min)
                assert_true(c->age_years >= flt->age_min);
            if (flt->n_diagnoses) {
                int any = 0;
                for (size_t d = 0; d < c->n_diagnoses; d++)
                    for (size_t j = 0; j < flt->n_diagnoses; j++)
                        any |= !strcmp(c->diagnoses[d].code, flt->diagnoses[j]);
                assert_true(any);
            }
            if (i)
                assert_true(a->hits[i - 1].score >= a->hits[i].score);
        }
        for (size_t i = 0; i < e->n; i++) {
            total++;
            for (size_t j = 0; j < a->n; j++)
                if (a->hits[j].id == e->hits[i].id) {
                    agree++;
                    break;
                }
        }
        assert_int_equal(a->n_matching, e->n_matching);
        cmr_hits_free(a);
        cmr_hits_free(e);
    }
    assert_true(total > 0);
    if ((double)agree / (double)total < min_recall)
        fail_msg("filtered recall %.3f < %.3f", (double)agree / (double)total, min_recall);
}

static void test_filters_flat(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 600, 0.6f);
    const char *dx[] = {"I42.1", "I25.5"};
    cmr_filter by_dx = {.n_diagnoses = 2, .diagnoses = dx};
    check_filtered(s, &by_dx, 10, 1.0);
    cmr_filter by_site = {.site = "Lyon", .sex = 'F', .date_from = 20120101, .date_to = 20181231};
    check_filtered(s, &by_site, 10, 1.0);
    cmr_filter by_manu = {.manufacturer = "siemens", .age_min = 30, .age_max = 50};
    cmr_hits *h;
    float q[DIM];
    test_vector(1, 0, DIM, 0.5f, q);
    /* manufacturer matching is case-insensitive */
    assert_int_equal(cmr_store_search(s, CMR_SPACE_TEXT, q, 5, &by_manu, &h), 0);
    assert_int_equal(h->n, 5);
    for (size_t i = 0; i < h->n; i++) {
        assert_string_equal(h->hits[i].record->manufacturer, "SIEMENS");
        assert_in_range(h->hits[i].record->age_years, 30, 50);
    }
    cmr_hits_free(h);
    cmr_filter nowhere = {.site = "Atlantis"};
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, 5, &nowhere, &h), 0);
    assert_int_equal(h->n, 0);
    assert_int_equal(h->n_matching, 0);
    cmr_hits_free(h);
}

static void test_case_to_case_excludes_self_and_patient(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 200, 0.1f);
    uint64_t id;
    /* case 4 and case 5 share patient MRN00002; clusters 0 and 1 differ, so
     * make sure the same patient would otherwise rank: use text->text. */
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.5", &id), 0);
    cmr_case *me;
    assert_int_equal(cmr_store_get(s, id, &me), 0);
    cmr_hits *h;
    assert_int_equal(cmr_store_search_case(s, id, CMR_SPACE_IMAGE, CMR_SPACE_IMAGE, 199, NULL, 0, &h), 0);
    assert_true(h->n >= 190);
    for (size_t i = 0; i < h->n; i++) {
        assert_int_not_equal(h->hits[i].id, id);
        assert_memory_not_equal(h->hits[i].record->patient_key, me->patient_key, 32);
    }
    /* Nearest neighbours share its cluster, so its diagnosis. */
    for (size_t i = 0; i < 10; i++)
        assert_string_equal(h->hits[i].record->diagnoses[0].code, me->diagnoses[0].code);
    cmr_hits_free(h);
    assert_int_equal(cmr_store_search_case(s, id, CMR_SPACE_IMAGE, CMR_SPACE_IMAGE, 199, NULL, 1, &h), 0);
    int sibling = 0;
    for (size_t i = 0; i < h->n; i++) {
        assert_int_not_equal(h->hits[i].id, id);
        sibling |= !memcmp(h->hits[i].record->patient_key, me->patient_key, 32);
    }
    assert_true(sibling);
    cmr_hits_free(h);
    cmr_case_free(me);
}

static void test_delete(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 50, 0.3f);
    uint64_t id;
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.10", &id), 0);
    float v[DIM];
    assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_TEXT, v), 0);
    cmr_hits *h;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_TEXT, v, 1, NULL, &h), 0); /* index now in memory */
    assert_int_equal(h->hits[0].id, id);
    cmr_hits_free(h);
    cmr_txn *t;
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_delete(t, id), 0);
    assert_int_equal(cmr_txn_commit(t), 0);
    assert_int_equal(cmr_store_search(s, CMR_SPACE_TEXT, v, 50, NULL, &h), 0);
    assert_int_equal(h->n, 49);
    for (size_t i = 0; i < h->n; i++)
        assert_int_not_equal(h->hits[i].id, id);
    cmr_hits_free(h);
    cmr_case *c;
    assert_int_equal(cmr_store_get(s, id, &c), CMR_ENOTFOUND);
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.10", &id), CMR_ENOTFOUND);
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_delete(t, 987654), CMR_ENOTFOUND);
    cmr_txn_abort(t);
    test_assert_verify_clean(s);
}

/* A store moved to another model (of another dimension): all vectors go in
 * the transaction that binds it; what is put again is searchable, the rest
 * keeps its record without vectors; an abort changes nothing; a handle
 * opened before the move refuses to search. */
static void test_replace_model(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    put_cases(s, 0, 12, 0.3f);
    float q[DIM];
    test_vector(3, 3, DIM, 0.3f, q);
    cmr_hits *h;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, 5, NULL, &h), 0); /* index in memory */
    cmr_hits_free(h);
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    cmr_store *other;
    assert_int_equal(cmr_store_open(db, CMR_STORE_RDONLY, NULL, &other), 0);
    assert_int_equal(cmr_store_search(other, CMR_SPACE_IMAGE, q, 5, NULL, &h), 0);
    cmr_hits_free(h);

    cmr_txn *t;
    enum { NEW_DIM = 24 };
    /* Refused: the same model, and no change after an abort. */
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_replace_model(t, "test-model", "sha256:abcdef", DIM), CMR_EINVAL);
    assert_int_equal(cmr_txn_replace_model(t, "new-model", "sha256:123456", NEW_DIM), 0);
    cmr_txn_abort(t);
    unsigned dim;
    const char *name;
    cmr_store_model(s, &name, NULL, &dim);
    assert_string_equal(name, "test-model");
    assert_int_equal(dim, DIM);
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, 12, NULL, &h), 0);
    assert_int_equal(h->n, 12);
    cmr_hits_free(h);

    /* The move: 8 of the 12 cases put again with new vectors. */
    assert_int_equal(cmr_txn_begin(s, &t), 0);
    assert_int_equal(cmr_txn_replace_model(t, "new-model", "sha256:123456", NEW_DIM), 0);
    for (unsigned i = 0; i < 8; i++) {
        cmr_case c;
        char uid[64], pid[32];
        cmr_diagnosis dx;
        float img[NEW_DIM], txt[NEW_DIM];
        make_case(i, &c, uid, pid, &dx, s);
        test_vector(i, i % 4, NEW_DIM, 0.3f, img);
        test_vector(i + 100000, i % 4, NEW_DIM, 0.3f, txt);
        int replaced = 0;
        assert_int_equal(cmr_txn_put_ex(t, &c, img, txt, NULL, &replaced), 0);
        assert_int_equal(replaced, 1);
    }
    assert_int_equal(cmr_txn_commit(t), 0);
    cmr_store_model(s, &name, NULL, &dim);
    assert_string_equal(name, "new-model");
    assert_int_equal(dim, NEW_DIM);
    float q2[NEW_DIM];
    test_vector(3, 3, NEW_DIM, 0.3f, q2);
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q2, 12, NULL, &h), 0);
    assert_int_equal(h->n, 8);
    assert_true(h->exact);
    for (size_t i = 0; i < h->n; i++)
        assert_string_equal(h->hits[i].record->model_id, "new-model@sha256:123456");
    cmr_hits_free(h);
    uint64_t id;
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.10", &id), 0); /* case 9: not put again */
    cmr_case *c;
    assert_int_equal(cmr_store_get(s, id, &c), 0);
    assert_int_equal(c->vectors, 0);
    cmr_case_free(c);
    float v[NEW_DIM];
    assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_IMAGE, v), CMR_ENOTFOUND);
    test_assert_verify_clean(s);
    /* The handle opened before the move would search the old model's space. */
    assert_int_equal(cmr_store_search(other, CMR_SPACE_IMAGE, q, 5, NULL, &h), CMR_EMODEL);
    assert_non_null(strstr(cmr_errmsg(), "reopen"));
    cmr_store_close(other);
    /* A reopened store, and its rebuilt indexes, agree. */
    assert_int_equal(cmr_store_close(s), 0);
    assert_int_equal(cmr_store_open(db, 0, NULL, &f->store), 0);
    s = f->store;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_TEXT, q2, 12, NULL, &h), 0);
    assert_int_equal(h->n, 8);
    cmr_hits_free(h);
    test_assert_verify_clean(s);
}

static double recall_vs_exact(cmr_store *s, unsigned queries, size_t k)
{
    size_t agree = 0, total = 0;
    float q[DIM];
    for (unsigned i = 0; i < queries; i++) {
        test_vector(700000 + i, i % 4, DIM, 0.8f, q);
        cmr_hits *a, *e;
        assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, k, NULL, &a), 0);
        assert_int_equal(cmr_store_search_exact(s, CMR_SPACE_IMAGE, q, k, NULL, &e), 0);
        for (size_t x = 0; x < e->n; x++, total++)
            for (size_t y = 0; y < a->n; y++)
                if (a->hits[y].id == e->hits[x].id) {
                    agree++;
                    break;
                }
        cmr_hits_free(a);
        cmr_hits_free(e);
    }
    return (double)agree / (double)total;
}

static void test_ivf_switch_and_filters(void **state)
{
    fixture *f = *state;
    char db[4200];
    snprintf(db, sizeof db, "%s/ivf", f->dir);
    /* Four broad clusters are harder than real data: probe a quarter of the
     * lists (and so test the nprobe setting). */
    cmr_store_config cfg = {.ivf_threshold = 1000, .nprobe = 32};
    cmr_store *s;
    assert_int_equal(cmr_store_open(db, CMR_STORE_CREATE, &cfg, &s), 0);
    assert_int_equal(cmr_store_set_model(s, "m", "h", DIM), 0);
    put_cases(s, 0, 600, 0.8f);
    assert_int_equal(cmr_store_flush(s), 0);
    cmr_store_stats st;
    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    assert_string_equal(st.index[0].kind, "flat");
    assert_true(recall_vs_exact(s, 10, 10) == 1.0);

    put_cases(s, 600, 15000, 0.8f);
    assert_int_equal(cmr_store_flush(s), 0);
    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    assert_string_equal(st.index[0].kind, "ivf");
    assert_int_equal(st.index[0].ntotal, 15000);
    assert_true(st.index[0].on_disk_current);
    assert_true(st.index[0].nlist >= 16);
    assert_true(recall_vs_exact(s, 30, 10) >= 0.9);

    /* A third of the cases, uncorrelated with the clusters: FAISS with a
     * bitmap selector and raised nprobe; recall must hold. */
    cmr_filter third = {.site = "Osaka"};
    check_filtered(s, &third, 10, 0.9);
    /* 1/12 of the cases, all outside half of the clusters (sex follows the
     * cluster here): exact.  First through LMDB, then, with the exact-scan
     * limit lowered as a large store would see it, through FAISS probing
     * every list. */
    cmr_filter skewed = {.sex = 'F', .date_from = 20150101, .date_to = 20151231};
    check_filtered(s, &skewed, 10, 1.0);
    s->exact_limit = 100;
    cmr_filter skewed_20 = {.sex = 'F', .date_from = 20150101, .date_to = 20151231, .site = "Osaka"};
    check_filtered(s, &skewed_20, 10, 1.0);
    s->exact_limit = CMR_EXACT_SUBSET_LIMIT;
    /* A selective filter (1/12 of cases) is answered exactly. */
    cmr_filter rare = {.site = "Osaka", .sex = 'F', .date_from = 20150101, .date_to = 20151231};
    check_filtered(s, &rare, 10, 1.0);
    float q[DIM];
    test_vector(5, 1, DIM, 0.8f, q);
    cmr_hits *h;
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, 10, &rare, &h), 0);
    assert_true(h->exact);
    assert_int_equal(h->n_matching, 15000 / 12);
    cmr_hits_free(h);
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, q, 10, &third, &h), 0);
    assert_false(h->exact);
    assert_true(h->nprobe > cmr_index_nprobe(s, st.index[0].nlist));
    cmr_hits_free(h);
    test_assert_verify_clean(s);
    assert_int_equal(cmr_store_close(s), 0);
}

static void test_stale_index_caught_up_and_damaged_index_detected(void **state)
{
    fixture *f = *state;
    cmr_store *s = f->store;
    char db[4200];
    snprintf(db, sizeof db, "%s/db", f->dir);
    put_cases(s, 0, 100, 0.3f);
    assert_int_equal(cmr_store_flush(s), 0);
    cmr_store_stats st;
    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    uint64_t flushed = st.generation;

    /* Another process adds cases and exits without touching the index
     * (LMDB forbids opening one environment twice in a process). */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        cmr_store *w;
        if (cmr_store_open(db, 0, NULL, &w) != 0)
            _exit(1);
        put_cases(w, 100, 120, 0.3f);
        _exit(cmr_store_close(w) == 0 ? 0 : 2);
    }
    int status;
    waitpid(pid, &status, 0);
    assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);

    assert_int_equal(cmr_store_stats_get(s, &st), 0);
    assert_false(st.index[0].on_disk_current);
    assert_int_equal(st.index[0].generation, flushed);
    uint64_t id;
    float v[DIM];
    assert_int_equal(cmr_store_find_uid(s, "1.2.826.0.1.115", &id), 0);
    assert_int_equal(cmr_store_get_vector(s, id, CMR_SPACE_IMAGE, v), 0);
    cmr_hits *h;
    /* This handle holds generation `flushed` in memory: it must catch up. */
    assert_int_equal(cmr_store_search(s, CMR_SPACE_IMAGE, v, 1, NULL, &h), 0);
    assert_int_equal(h->hits[0].id, id);
    cmr_hits_free(h);
    cmr_verify_report *rep;
    assert_int_equal(cmr_store_verify(s, &rep), 0);
    assert_int_equal(rep->n_problems, 0);
    assert_true(rep->n_notes >= 1); /* the files on disk are behind */
    assert_non_null(strstr(rep->notes[0], "caught up"));
    cmr_verify_report_free(rep);
    assert_int_equal(cmr_store_close(s), 0);

    /* A fresh read-only handle catches up from the stale file in memory. */
    cmr_store *r;
    assert_int_equal(cmr_store_open(db, CMR_STORE_RDONLY, NULL, &r), 0);
    assert_int_equal(cmr_store_stats_get(r, &st), 0);
    assert_true(st.index[0].on_disk_current); /* close flushed it */
    assert_int_equal(cmr_store_search(r, CMR_SPACE_IMAGE, v, 1, NULL, &h), 0);
    assert_int_equal(h->hits[0].id, id);
    cmr_hits_free(h);
    cmr_store_close(r);

    /* Truncate the image index file: verify names it; search does not use
     * it; reindex repairs it. */
    char path[4300];
    snprintf(path, sizeof path, "%s/index-image.cmrx", db);
    struct stat sb;
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(truncate(path, sb.st_size / 2), 0);
    assert_int_equal(cmr_store_open(db, CMR_STORE_RDONLY, NULL, &r), 0);
    assert_int_equal(cmr_store_verify(r, &rep), 0);
    assert_true(rep->n_problems >= 1);
    assert_non_null(strstr(rep->problems[0], "truncated"));
    cmr_verify_report_free(rep);
    assert_int_equal(cmr_store_search(r, CMR_SPACE_IMAGE, v, 1, NULL, &h), 0);
    assert_int_equal(h->hits[0].id, id);
    cmr_hits_free(h);
    cmr_store_close(r);
    assert_int_equal(cmr_store_open(db, 0, NULL, &f->store), 0);
    assert_int_equal(cmr_store_reindex(f->store), 0);
    test_assert_verify_clean(f->store);
}

static void test_index_from_another_store_refused(void **state)
{
    fixture *f = *state;
    put_cases(f->store, 0, 30, 0.3f);
    assert_int_equal(cmr_store_flush(f->store), 0);
    char other[4200], src[4300], dst[4300];
    snprintf(other, sizeof other, "%s/other", f->dir);
    cmr_store *o;
    assert_int_equal(cmr_store_open(other, CMR_STORE_CREATE, NULL, &o), 0);
    assert_int_equal(cmr_store_set_model(o, "test-model", "sha256:abcdef", DIM), 0);
    put_cases(o, 0, 30, 0.3f);
    /* Same UIDs, same model, but a different store: patient keys differ... */
    uint8_t k1[32], k2[32];
    cmr_store_patient_key(f->store, "MRN1", k1);
    cmr_store_patient_key(o, "MRN1", k2);
    assert_memory_not_equal(k1, k2, 32);
    /* ...and its index file must not be taken for ours. */
    snprintf(src, sizeof src, "%s/db/index-text.cmrx", f->dir);
    snprintf(dst, sizeof dst, "%s/index-text.cmrx", other);
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    assert_non_null(in);
    assert_non_null(out);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        fwrite(buf, 1, n, out);
    fclose(in);
    fclose(out);
    cmr_verify_report *rep;
    assert_int_equal(cmr_store_verify(o, &rep), 0);
    int named = 0;
    for (size_t i = 0; i < rep->n_problems; i++)
        named |= strstr(rep->problems[i], "another store") != NULL;
    assert_true(named);
    cmr_verify_report_free(rep);
    assert_int_equal(cmr_store_reindex(o), 0);
    test_assert_verify_clean(o);
    cmr_store_close(o);
}

static void test_record_format_compatibility(void **state)
{
    (void)state;
    /* A record from a later minor version (unknown tag 99) still decodes. */
    cmr_case c = {.study_uid = "1.2.3", .age_years = 44, .sex = 'F', .study_date = 20200229};
    uint8_t *enc;
    size_t len;
    assert_int_equal(cmr_record_encode(&c, &enc, &len), 0);
    uint8_t *ext = malloc(len + 5);
    memcpy(ext, enc, len);
    memcpy(ext + len, "\x63\x03xyz", 5);
    cmr_case *d;
    assert_int_equal(cmr_record_decode(ext, len + 5, 9, &d), 0);
    assert_string_equal(d->study_uid, "1.2.3");
    assert_int_equal(d->age_years, 44);
    assert_int_equal(d->study_date, 20200229);
    cmr_case_free(d);
    /* Truncated in the middle of a field: refused, not misread. */
    assert_int_equal(cmr_record_decode(enc, len - 2, 9, &d), CMR_ECORRUPT);
    ext[0] = 3; /* a later major version */
    assert_int_equal(cmr_record_decode(ext, len + 5, 9, &d), CMR_EUNSUPPORTED);
    ext[0] = 0;
    assert_int_equal(cmr_record_decode(ext, len + 5, 9, &d), CMR_ECORRUPT);
    /* Version 1 (before finding scores) still reads. */
    ext[0] = 1;
    assert_int_equal(cmr_record_decode(ext, len + 5, 9, &d), 0);
    assert_int_equal(d->n_findings, 0);
    assert_string_equal(d->study_uid, "1.2.3");
    cmr_case_free(d);
    free(ext);
    free(enc);

    /* Version 2: finding scores round-trip; a malformed one is refused. */
    cmr_finding_score fs[2] = {{"lge", 0.75f}, {"lv_systolic_dysfunction", 0.0f}};
    c.findings = fs;
    c.n_findings = 2;
    assert_int_equal(cmr_record_encode(&c, &enc, &len), 0);
    assert_int_equal(enc[0], 2);
    assert_int_equal(cmr_record_decode(enc, len, 9, &d), 0);
    assert_int_equal(d->n_findings, 2);
    assert_string_equal(d->findings[1].name, "lv_systolic_dysfunction");
    assert_float_equal(d->findings[0].score, 0.75, 0);
    cmr_case_free(d);
    /* lge's field is tag 20, length 8, name length 3: make the name length
     * disagree with the field's */
    for (size_t i = 1; i + 2 < len; i++)
        if (enc[i] == 20 && enc[i + 1] == 8 && enc[i + 2] == 3) {
            enc[i + 2] = 5; /* name length disagrees with the field */
            break;
        }
    assert_int_equal(cmr_record_decode(enc, len, 9, &d), CMR_ECORRUPT);
    free(enc);
    /* case checks: names and scores */
    cmr_finding_score bad[2] = {{"lge", 1.5f}, {"Bad Name", 0.5f}};
    c.findings = bad;
    c.n_findings = 1;
    assert_int_equal(cmr_case_check(&c), CMR_EINVAL);
    c.findings = bad + 1;
    assert_int_equal(cmr_case_check(&c), CMR_EINVAL);
    cmr_finding_score twice[2] = {{"lge", 0.5f}, {"lge", 0.5f}};
    c.findings = twice;
    c.n_findings = 2;
    assert_int_equal(cmr_case_check(&c), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "twice"));
}

static void test_views(void **state)
{
    (void)state;
    uint32_t bit;
    assert_int_equal(cmr_view_parse("lge_3ch", &bit), 0);
    assert_int_equal(bit, CMR_VIEW_LGE_3CH);
    assert_string_equal(cmr_view_name(CMR_VIEW_CINE_SAX), "cine_sax");
    assert_null(cmr_view_name(3));
    assert_int_equal(cmr_view_parse("cine_5ch", &bit), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "cine_5ch"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_missing_store, setup, teardown),
        cmocka_unit_test_setup_teardown(test_site_key_private, setup, teardown),
        cmocka_unit_test_setup_teardown(test_model_mismatch_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_round_trip_and_normalisation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_input_changes_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_upsert_keeps_id_and_moves_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_filters_flat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_case_to_case_excludes_self_and_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_replace_model, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ivf_switch_and_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stale_index_caught_up_and_damaged_index_detected, setup, teardown),
        cmocka_unit_test_setup_teardown(test_index_from_another_store_refused, setup, teardown),
        cmocka_unit_test(test_record_format_compatibility),
        cmocka_unit_test(test_views),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
