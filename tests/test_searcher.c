/* The searcher: fusion arithmetic against hand-computed values, recall of
 * the candidate union against a brute-force fusion, paging, one result per
 * patient, case queries, finding filters (exact on a selective filter),
 * closest sentences and finding scores with the default model, and the
 * record-version upgrade (version 1 records, rescored). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>
#include <lmdb.h>

#include "cmr_searcher.h"
#include "test_store_util.h"

#ifndef CMR_SOURCE_DIR
#error "CMR_SOURCE_DIR must be defined"
#endif
#define MODEL_DIR CMR_SOURCE_DIR "/models/default"

typedef struct fixture {
    char *dir;
    cmr_store *store;
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = test_tmpdir();
    *state = f;
    return f->dir ? 0 : -1;
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

static void open_store(fixture *f, unsigned dim)
{
    char path[512];
    snprintf(path, sizeof path, "%s/db", f->dir);
    assert_int_equal(cmr_store_open(path, CMR_STORE_CREATE, NULL, &f->store), 0);
    if (dim)
        assert_int_equal(cmr_store_set_model(f->store, "test-model", "sha256:0123", dim), 0);
}

static void unit(float *v, unsigned dim)
{
    double s = 0;
    for (unsigned i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    for (unsigned i = 0; i < dim; i++)
        v[i] = (float)(v[i] / sqrt(s));
}

static double dot(const float *a, const float *b, unsigned dim)
{
    double s = 0;
    for (unsigned i = 0; i < dim; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* Put case n (uid 1.2.3.n) with the given vectors (either may be NULL),
 * patient "P<patient>" (0: none) and findings. */
static uint64_t put(fixture *f, unsigned n, const float *image, const float *text, unsigned patient,
                    const cmr_finding_score *findings, size_t n_findings, const char *impression)
{
    char uid[64], pid[32];
    snprintf(uid, sizeof uid, "1.2.3.%u", n);
    cmr_case c = {.study_uid = uid, .age_years = -1, .views = CMR_VIEW_CINE_SAX | CMR_VIEW_LGE_SAX,
                  .findings = findings, .n_findings = n_findings, .impression = impression};
    if (patient) {
        snprintf(pid, sizeof pid, "P%u", patient);
        assert_int_equal(cmr_store_patient_key(f->store, pid, c.patient_key), 0);
        c.has_patient_key = 1;
    }
    cmr_txn *t;
    uint64_t id;
    assert_int_equal(cmr_txn_begin(f->store, &t), 0);
    assert_int_equal(cmr_txn_put(t, &c, image, text, &id), 0);
    assert_int_equal(cmr_txn_commit(t), 0);
    return id;
}

/* ---- fusion arithmetic ----------------------------------------------------------- */

static void test_fusion_arithmetic(void **state)
{
    fixture *f = *state;
    enum { D = 4 };
    open_store(f, D);
    /* Hand-made unit vectors: image and text of three cases. */
    const float img[3][D] = {{1, 0, 0, 0}, {0.6f, 0.8f, 0, 0}, {0, 1, 0, 0}};
    const float txt[3][D] = {{0, 0, 1, 0}, {0.8f, 0, 0.6f, 0}, {0, 0, 0, 1}};
    put(f, 1, img[0], txt[0], 0, NULL, 0, NULL);
    put(f, 2, img[1], txt[1], 0, NULL, 0, NULL);
    put(f, 3, img[2], NULL, 0, NULL, 0, NULL); /* no impression vector */
    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, NULL, &s), 0);
    const float q[D] = {1, 0, 0, 0};
    cmr_query query = {.kind = CMR_QUERY_VECTOR, .vector = q, .set_weights = 1, .w_image = 0.25f, .w_text = 0.75f};
    cmr_results *r;
    assert_int_equal(cmr_searcher_search(s, &query, &r), 0);
    assert_int_equal(r->n, 3);
    assert_true(r->exact);
    /* case 2: image 0.6, text 0.8 -> 0.25*0.6 + 0.75*0.8 = 0.75
     * case 1: image 1, text 0     -> 0.25
     * case 3: image 0, no text    -> 0 (only the image weight counts) */
    assert_int_equal(r->items[0].id, 2);
    assert_float_equal(r->items[0].score, 0.75, 1e-6);
    assert_float_equal(r->items[0].sim[CMR_SPACE_IMAGE], 0.6, 1e-6);
    assert_float_equal(r->items[0].sim[CMR_SPACE_TEXT], 0.8, 1e-6);
    assert_int_equal(r->items[1].id, 1);
    assert_float_equal(r->items[1].score, 0.25, 1e-6);
    assert_int_equal(r->items[2].id, 3);
    assert_float_equal(r->items[2].score, 0.0, 1e-6);
    assert_true(isnan(r->items[2].sim[CMR_SPACE_TEXT]));
    assert_float_equal(r->w_image, 0.25, 0);
    assert_int_equal(r->items[0].n_views, 2);
    assert_string_equal(r->items[0].views[0], "cine_sax");
    assert_string_equal(r->items[0].views[1], "lge_sax");
    assert_null(r->items[0].sentence); /* no model, no impression */
    cmr_results_free(r);

    /* Weight 0 on text: the image space alone, case 3 still ranked by image. */
    query.w_image = 1;
    query.w_text = 0;
    assert_int_equal(cmr_searcher_search(s, &query, &r), 0);
    assert_int_equal(r->items[0].id, 1);
    assert_float_equal(r->items[0].score, 1.0, 1e-6);
    /* the text similarity is still explained */
    assert_float_equal(r->items[0].sim[CMR_SPACE_TEXT], 0.0, 1e-6);
    cmr_results_free(r);

    /* Text only: case 3 (no text vector) is not a result. */
    query.w_image = 0;
    query.w_text = 1;
    assert_int_equal(cmr_searcher_search(s, &query, &r), 0);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->items[0].id, 2);
    cmr_results_free(r);

    /* Case query: case 1's image against images, its text against texts.
     * case 2: 0.5*cos(img1,img2) + 0.5*cos(txt1,txt2) = 0.5*0.6 + 0.5*0.6 = 0.6 */
    cmr_query cq = {.kind = CMR_QUERY_CASE, .case_id = 1, .set_weights = 1, .w_image = 0.5f, .w_text = 0.5f};
    assert_int_equal(cmr_searcher_search(s, &cq, &r), 0);
    assert_int_equal(r->n, 2);
    assert_int_equal(r->items[0].id, 2);
    assert_float_equal(r->items[0].score, 0.6, 1e-6);
    assert_int_equal(r->items[1].id, 3);
    assert_float_equal(r->items[1].score, 0.0, 1e-6);
    cmr_results_free(r);

    /* Bad weights and windows are refused with a message. */
    query.w_image = query.w_text = 0;
    assert_int_equal(cmr_searcher_search(s, &query, &r), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "weights"));
    query.w_image = 1;
    query.offset = CMR_SEARCH_MAX_WINDOW;
    query.limit = 1;
    assert_int_equal(cmr_searcher_search(s, &query, &r), CMR_EINVAL);
    cmr_query tq = {.kind = CMR_QUERY_TEXT, .text = "x"};
    assert_int_equal(cmr_searcher_search(s, &tq, &r), CMR_EINVAL);
    assert_non_null(strstr(cmr_errmsg(), "model"));
    cmr_searcher_close(s);
}

/* ---- recall of the candidate union ---------------------------------------------------- */

typedef struct ref {
    uint64_t id;
    double score;
} ref;

static int cmp_ref(const void *a, const void *b)
{
    const ref *x = a, *y = b;
    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static void test_fusion_recall(void **state)
{
    fixture *f = *state;
    enum { D = 16, DECOYS = 150 };
    open_store(f, D);
    /* Decoys strong in one space and opposed in the other fill each space's
     * top lists; the best fused cases are mediocre in both spaces and in
     * neither top list of the first fetch. */
    float q[D] = {0}, a[D], b[D];
    q[0] = 1;
    uint64_t rng = 7;
    unsigned n = 0;
    for (int side = 0; side < 2; side++)
        for (int i = 0; i < DECOYS; i++) {
            float good[D] = {0}, bad[D] = {0};
            good[0] = 0.9f + 0.05f * (float)(test_rng(&rng) % 1000) / 1000;
            bad[0] = -0.5f;
            for (int k = 1; k < D; k++) {
                good[k] = 0.3f * test_gauss(&rng) / 4;
                bad[k] = test_gauss(&rng);
            }
            unit(good, D);
            unit(bad, D);
            put(f, ++n, side ? bad : good, side ? good : bad, 0, NULL, 0, NULL);
        }
    for (int i = 0; i < 5; i++) {
        for (int k = 0; k < D; k++)
            a[k] = b[k] = 0;
        a[0] = b[0] = 0.75f - 0.01f * i;
        a[1 + i] = b[2 + i] = sqrtf(1 - a[0] * a[0]);
        put(f, ++n, a, b, 0, NULL, 0, NULL);
    }
    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, NULL, &s), 0);
    cmr_query query = {.kind = CMR_QUERY_VECTOR, .vector = q, .limit = 10, .set_weights = 1, .w_image = 0.5f,
                       .w_text = 0.5f};
    cmr_results *r;
    assert_int_equal(cmr_searcher_search(s, &query, &r), 0);
    assert_true(r->exact);
    assert_true(r->n_candidates > 2 * 64); /* it had to widen */

    /* Brute force over every case. */
    ref all[2 * DECOYS + 5];
    float v[D];
    for (unsigned id = 1; id <= n; id++) {
        double si = 0, st = 0;
        assert_int_equal(cmr_store_get_vector(f->store, id, CMR_SPACE_IMAGE, v), 0);
        si = dot(q, v, D);
        assert_int_equal(cmr_store_get_vector(f->store, id, CMR_SPACE_TEXT, v), 0);
        st = dot(q, v, D);
        all[id - 1] = (ref){id, 0.5 * si + 0.5 * st};
    }
    qsort(all, n, sizeof *all, cmp_ref);
    assert_int_equal(r->n, 10);
    for (size_t i = 0; i < r->n; i++) {
        assert_int_equal(r->items[i].id, all[i].id);
        assert_float_equal(r->items[i].score, all[i].score, 1e-5);
    }
    /* the five mediocre-in-both cases are the top five */
    for (size_t i = 0; i < 5; i++)
        assert_true(r->items[i].id > 2 * DECOYS);
    cmr_results_free(r);
    cmr_searcher_close(s);
}

/* ---- paging and grouping ----------------------------------------------------------------- */

static void fill_random(fixture *f, unsigned n, unsigned dim, unsigned patients, uint64_t seed)
{
    uint64_t rng = seed;
    float *a = malloc(dim * sizeof *a), *b = malloc(dim * sizeof *b);
    for (unsigned i = 1; i <= n; i++) {
        for (unsigned k = 0; k < dim; k++) {
            a[k] = test_gauss(&rng);
            b[k] = a[k] + test_gauss(&rng);
        }
        put(f, i, a, i % 7 ? b : NULL, patients ? 1 + i % patients : 0, NULL, 0, NULL);
    }
    free(a);
    free(b);
}

static void test_paging(void **state)
{
    fixture *f = *state;
    enum { D = 12, N = 150 };
    open_store(f, D);
    fill_random(f, N, D, 0, 3);
    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, NULL, &s), 0);
    float q[D];
    uint64_t rng = 99;
    for (int k = 0; k < D; k++)
        q[k] = test_gauss(&rng);
    cmr_query query = {.kind = CMR_QUERY_VECTOR, .vector = q, .limit = N};
    cmr_results *all, *page;
    assert_int_equal(cmr_searcher_search(s, &query, &all), 0);
    assert_int_equal(all->n, N);
    assert_false(all->more);
    assert_int_equal(all->n_matching, N);
    size_t got = 0;
    for (size_t offset = 0; offset < N + 7; offset += 7) {
        query.offset = offset;
        query.limit = 7;
        assert_int_equal(cmr_searcher_search(s, &query, &page), 0);
        assert_int_equal(page->n, offset >= N ? 0 : offset + 7 <= N ? 7 : N - offset);
        assert_int_equal(page->more, offset + 7 < N);
        for (size_t i = 0; i < page->n; i++) {
            assert_int_equal(page->items[i].id, all->items[offset + i].id);
            assert_float_equal(page->items[i].score, all->items[offset + i].score, 0);
            for (size_t j = 0; j < offset + i; j++) /* no duplicates across pages */
                assert_true(all->items[j].id != page->items[i].id);
        }
        got += page->n;
        cmr_results_free(page);
    }
    assert_int_equal(got, N);
    for (size_t i = 1; i < all->n; i++)
        assert_true(all->items[i - 1].score >= all->items[i].score);
    cmr_results_free(all);
    cmr_searcher_close(s);
}

static void test_one_per_patient(void **state)
{
    fixture *f = *state;
    enum { D = 10, N = 120, PATIENTS = 30 };
    open_store(f, D);
    fill_random(f, N, D, PATIENTS, 5);
    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, NULL, &s), 0);
    float q[D];
    uint64_t rng = 11;
    for (int k = 0; k < D; k++)
        q[k] = test_gauss(&rng);
    cmr_query query = {.kind = CMR_QUERY_VECTOR, .vector = q, .limit = N};
    cmr_results *all, *grouped;
    assert_int_equal(cmr_searcher_search(s, &query, &all), 0);
    query.one_per_patient = 1;
    assert_int_equal(cmr_searcher_search(s, &query, &grouped), 0);
    assert_int_equal(grouped->n, PATIENTS);
    assert_false(grouped->more);
    /* Each patient once, with its best study: the first of that patient in the full ranking. */
    size_t folded = 0;
    for (size_t i = 0; i < grouped->n; i++) {
        const cmr_case *c = grouped->items[i].record;
        size_t first = 0;
        while (memcmp(all->items[first].record->patient_key, c->patient_key, CMR_PATIENT_KEY_BYTES))
            first++;
        assert_int_equal(all->items[first].id, grouped->items[i].id);
        for (size_t j = 0; j < i; j++)
            assert_memory_not_equal(grouped->items[j].record->patient_key, c->patient_key, CMR_PATIENT_KEY_BYTES);
        folded += grouped->items[i].n_folded;
    }
    assert_int_equal(folded + PATIENTS, N);
    /* Pages of patients concatenate to the grouped list. */
    for (size_t offset = 0; offset < PATIENTS; offset += 4) {
        cmr_results *page;
        query.offset = offset;
        query.limit = 4;
        assert_int_equal(cmr_searcher_search(s, &query, &page), 0);
        for (size_t i = 0; i < page->n; i++)
            assert_int_equal(page->items[i].id, grouped->items[offset + i].id);
        cmr_results_free(page);
    }
    cmr_results_free(all);
    cmr_results_free(grouped);

    /* A case query leaves out the patient's other studies unless asked. */
    cmr_query cq = {.kind = CMR_QUERY_CASE, .case_id = 1, .limit = N};
    cmr_case *q1;
    assert_int_equal(cmr_store_get(f->store, 1, &q1), 0);
    cmr_results *r;
    assert_int_equal(cmr_searcher_search(s, &cq, &r), 0);
    assert_int_equal(r->n, N - N / PATIENTS);
    for (size_t i = 0; i < r->n; i++)
        assert_memory_not_equal(r->items[i].record->patient_key, q1->patient_key, CMR_PATIENT_KEY_BYTES);
    cmr_results_free(r);
    cq.include_same_patient = 1;
    assert_int_equal(cmr_searcher_search(s, &cq, &r), 0);
    assert_int_equal(r->n, N - 1);
    for (size_t i = 0; i < r->n; i++)
        assert_true(r->items[i].id != 1);
    cmr_results_free(r);
    /* Cross-space: the case's image vector against impressions only. */
    cq.use_space = 1;
    cq.space = CMR_SPACE_IMAGE;
    cq.set_weights = 1;
    cq.w_image = 0;
    cq.w_text = 1;
    cq.limit = 1;
    float img[D], v[D];
    assert_int_equal(cmr_store_get_vector(f->store, 1, CMR_SPACE_IMAGE, img), 0);
    assert_int_equal(cmr_searcher_search(s, &cq, &r), 0);
    assert_int_equal(cmr_store_get_vector(f->store, r->items[0].id, CMR_SPACE_TEXT, v), 0);
    assert_float_equal(r->items[0].score, dot(img, v, D), 1e-5);
    cmr_results_free(r);
    cmr_case_free(q1);
    cmr_searcher_close(s);
}

/* ---- finding filters --------------------------------------------------------------------- */

static void test_finding_filters(void **state)
{
    fixture *f = *state;
    enum { D = 8, N = 400 };
    open_store(f, D);
    uint64_t rng = 21;
    float a[D], lge[N + 1], hcm[N + 1];
    for (unsigned i = 1; i <= N; i++) {
        for (int k = 0; k < D; k++)
            a[k] = test_gauss(&rng);
        lge[i] = (float)(test_rng(&rng) % 1001) / 1000;
        hcm[i] = (float)(test_rng(&rng) % 1001) / 1000;
        cmr_finding_score fs[2] = {{"lge", lge[i]}, {"hcm", hcm[i]}};
        /* every tenth case predates findings */
        put(f, i, a, a, 0, fs, i % 10 ? 2 : 0, NULL);
    }
    test_assert_verify_clean(f->store);
    cmr_case *c;
    assert_int_equal(cmr_store_get(f->store, 3, &c), 0);
    assert_int_equal(c->n_findings, 2);
    assert_string_equal(c->findings[0].name, "lge");
    assert_float_equal(c->findings[0].score, lge[3], 0);
    cmr_case_free(c);

    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, NULL, &s), 0);
    float q[D] = {1, 0, 0, 0, 0, 0, 0, 0};
    /* selective: LGE present and HCM likely */
    cmr_finding_bound bounds[2] = {{"lge", 0.5f, 1.0f}, {"hcm", 0.9f, 1.0f}};
    cmr_filter flt = {.n_finding_bounds = 2, .finding_bounds = bounds};
    cmr_query query = {.kind = CMR_QUERY_VECTOR, .vector = q, .filter = &flt, .limit = N, .set_weights = 1,
                       .w_image = 1, .w_text = 0};
    cmr_results *r;
    assert_int_equal(cmr_searcher_search(s, &query, &r), 0);
    /* exactly the matching cases, best first, by brute force */
    ref want[N];
    size_t n_want = 0;
    float v[D];
    for (unsigned i = 1; i <= N; i++)
        if (i % 10 && lge[i] >= 0.5f && hcm[i] >= 0.9f) {
            assert_int_equal(cmr_store_get_vector(f->store, i, CMR_SPACE_IMAGE, v), 0);
            want[n_want++] = (ref){i, dot(q, v, D)};
        }
    qsort(want, n_want, sizeof *want, cmp_ref);
    assert_true(n_want > 5 && n_want < 40);
    assert_int_equal(r->n, n_want);
    assert_int_equal(r->n_matching, n_want);
    for (size_t i = 0; i < n_want; i++) {
        assert_int_equal(r->items[i].id, want[i].id);
        assert_float_equal(r->items[i].score, want[i].score, 1e-5);
    }
    cmr_results_free(r);

    /* a bound on a finding no case has: an error, not an empty answer */
    cmr_finding_bound unknown = {"aortic_dilation", 0.5f, 1};
    cmr_filter bad = {.n_finding_bounds = 1, .finding_bounds = &unknown};
    query.filter = &bad;
    assert_int_equal(cmr_searcher_search(s, &query, &r), CMR_ENOTFOUND);
    assert_non_null(strstr(cmr_errmsg(), "aortic_dilation"));
    assert_non_null(strstr(cmr_errmsg(), "--rescore"));
    cmr_searcher_close(s);

    /* Replacing a case's scores moves it in and out of the filter. */
    cmr_txn *t;
    cmr_finding_score fs[1] = {{"lge", 0.0f}};
    assert_int_equal(cmr_txn_begin(f->store, &t), 0);
    assert_int_equal(cmr_txn_set_findings(t, want[0].id, 1, fs), 0);
    assert_int_equal(cmr_txn_commit(t), 0);
    cmr_hits *h;
    assert_int_equal(cmr_store_search(f->store, CMR_SPACE_IMAGE, q, N, &flt, &h), 0);
    assert_int_equal(h->n, n_want - 1);
    for (size_t i = 0; i < h->n; i++)
        assert_true(h->hits[i].id != want[0].id);
    cmr_hits_free(h);
    test_assert_verify_clean(f->store);
    /* bad scores are refused */
    cmr_finding_score nan_score[1] = {{"lge", NAN}}, bad_name[1] = {{"LGE!", 0.5f}};
    assert_int_equal(cmr_txn_begin(f->store, &t), 0);
    assert_int_equal(cmr_txn_set_findings(t, 1, 1, nan_score), CMR_EINVAL);
    assert_int_equal(cmr_txn_set_findings(t, 1, 1, bad_name), CMR_EINVAL);
    cmr_txn_abort(t);
}

/* ---- with the default model: findings, sentences, rescoring, version upgrade ---------------- */

static cmr_model *open_model(void)
{
    cmr_model *m = NULL;
    if (cmr_model_open(MODEL_DIR, &m) != 0)
        fail_msg("cannot open the default model %s: %s", MODEL_DIR, cmr_errmsg());
    return m;
}

static void bind_model(fixture *f, cmr_model *m)
{
    char path[512];
    snprintf(path, sizeof path, "%s/db", f->dir);
    assert_int_equal(cmr_store_open(path, CMR_STORE_CREATE, NULL, &f->store), 0);
    assert_int_equal(cmr_store_set_model(f->store, cmr_model_name(m), cmr_model_hash(m), cmr_model_dim(m)), 0);
}

static void test_sentences_split(void **state)
{
    (void)state;
    size_t st[16], len[16];
    const char *t = "1. Dilated LV (LVEF 2.5%), i.e. severe. 2. Normal RV size and function.\n- No LGE; no effusion";
    size_t n = cmr_split_sentences(t, st, len, 16);
    assert_int_equal(n, 4);
    assert_memory_equal(t + st[0], "Dilated LV (LVEF 2.5%), i.e. severe.", len[0]);
    assert_memory_equal(t + st[1], "Normal RV size and function.", len[1]);
    assert_memory_equal(t + st[2], "No LGE;", len[2]);
    assert_memory_equal(t + st[3], "no effusion", len[3]);
    assert_int_equal(cmr_split_sentences("  \n - \n", st, len, 16), 0);
    assert_int_equal(cmr_split_sentences(NULL, st, len, 16), 0);
}

static void test_model_findings_and_sentences(void **state)
{
    fixture *f = *state;
    cmr_model *m = open_model();
    unsigned dim = cmr_model_dim(m);
    bind_model(f, m);
    cmr_findings *fd;
    assert_int_equal(cmr_findings_new(m, &fd), 0);
    assert_int_equal(cmr_findings_count(fd), cmr_finding_bank_size());
    assert_int_equal(cmr_finding_bank_size(), 17);
    size_t idx;
    assert_int_equal(cmr_finding_lookup("lge", &idx), 0);
    assert_string_equal(cmr_findings_name(fd, idx), "lge");
    assert_int_equal(cmr_finding_lookup("bogus", &idx), CMR_ENOTFOUND);
    assert_non_null(strstr(cmr_errmsg(), "hcm"));

    /* Scores by hand: sigmoid(scale * (cos(x, mean P) - cos(x, mean N))). */
    float *x = malloc(dim * sizeof *x), *p = malloc(dim * sizeof *p), *mp = calloc(dim, sizeof *mp),
          *mn = calloc(dim, sizeof *mn), scores[32];
    assert_int_equal(cmr_model_encode_text(m, "Patchy mid-wall LGE at the RV insertion points.", x), 0);
    assert_int_equal(cmr_findings_score(fd, x, scores), 0);
    const cmr_finding_def *lge = cmr_finding_bank(idx);
    size_t np = 0, nn = 0;
    for (; lge->positive[np]; np++) {
        assert_int_equal(cmr_model_encode_text(m, lge->positive[np], p), 0);
        for (unsigned d = 0; d < dim; d++)
            mp[d] += p[d];
    }
    for (; lge->negative[nn]; nn++) {
        assert_int_equal(cmr_model_encode_text(m, lge->negative[nn], p), 0);
        for (unsigned d = 0; d < dim; d++)
            mn[d] += p[d];
    }
    double z = CMR_FINDINGS_SCALE * (dot(x, mp, dim) / np - dot(x, mn, dim) / nn);
    assert_float_equal(scores[idx], 1 / (1 + exp(-z)), 1e-4);
    /* Diagnoses: above 0.5 for the first choice only. */
    size_t above = 0;
    for (size_t i = 0; i < cmr_finding_bank_size(); i++) {
        assert_true(scores[i] >= 0 && scores[i] <= 1);
        above += cmr_finding_bank(i)->kind == CMR_FINDING_DIAGNOSIS && scores[i] >= 0.5f;
    }
    assert_int_equal(above, 1);

    /* The scorer hook writes scores in the put's transaction. */
    cmr_store_set_scorer(f->store, cmr_findings_store_scorer, fd);
    const char *imp[3] = {("Normal RV size and function. Patchy mid-wall LGE at the RV insertion points. "
                           "No pericardial effusion."),
                          "1. Dilated cardiomyopathy with LVEF 25%.\n2. No late gadolinium enhancement.",
                          "Structurally normal heart."};
    for (unsigned i = 0; i < 3; i++) {
        assert_int_equal(cmr_model_encode_text(m, imp[i], x), 0);
        put(f, i + 1, x, x, 0, NULL, 0, imp[i]);
    }
    cmr_store_set_scorer(f->store, NULL, NULL);
    cmr_case *c;
    assert_int_equal(cmr_store_get(f->store, 1, &c), 0);
    assert_int_equal(c->n_findings, 17);
    assert_string_equal(c->findings[idx].name, "lge");
    assert_int_equal(cmr_store_get_vector(f->store, 1, CMR_SPACE_IMAGE, x), 0);
    assert_int_equal(cmr_findings_score(fd, x, scores), 0);
    for (size_t i = 0; i < 17; i++)
        assert_float_equal(c->findings[i].score, scores[i], 1e-6);
    cmr_case_free(c);
    test_assert_verify_clean(f->store);

    /* Closest sentence: the impression's sentence of highest cosine with
     * the query vector.  A query that is one of the sentences finds it (at
     * cosine 1); another query finds the argmax computed here. */
    cmr_searcher *s;
    assert_int_equal(cmr_searcher_open(f->store, m, &s), 0);
    const char *sent[3] = {"Normal RV size and function.", "Patchy mid-wall LGE at the RV insertion points.",
                           "No pericardial effusion."};
    cmr_query q = {.kind = CMR_QUERY_TEXT, .text = sent[1]};
    cmr_results *r;
    const cmr_result *hit1 = NULL;
    assert_int_equal(cmr_searcher_search(s, &q, &r), 0);
    assert_int_equal(r->n, 3);
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i].id == 1)
            hit1 = &r->items[i];
    assert_non_null(hit1);
    assert_string_equal(hit1->sentence, sent[1]);
    assert_float_equal(hit1->sentence_sim, 1.0, 1e-4);
    cmr_results_free(r);
    q.text = "late gadolinium enhancement at the RV insertion points";
    float qv[512];
    assert_true(dim <= 512);
    assert_int_equal(cmr_model_encode_text(m, q.text, qv), 0);
    int best = 0;
    double best_sim = -2;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(cmr_model_encode_text(m, sent[i], p), 0);
        if (dot(qv, p, dim) > best_sim) {
            best_sim = dot(qv, p, dim);
            best = i;
        }
    }
    assert_int_equal(cmr_searcher_search(s, &q, &r), 0);
    hit1 = NULL;
    for (size_t i = 0; i < r->n; i++)
        if (r->items[i].id == 1)
            hit1 = &r->items[i];
    assert_non_null(hit1);
    assert_string_equal(hit1->sentence, sent[best]);
    assert_float_equal(hit1->sentence_sim, best_sim, 1e-4);
    /* the default text weights, and fused = 0.2 image + 0.8 text */
    assert_float_equal(r->w_image, 0.2, 1e-6);
    for (size_t i = 0; i < r->n; i++)
        assert_float_equal(r->items[i].score, 0.2 * r->items[i].sim[0] + 0.8 * r->items[i].sim[1], 1e-5);
    cmr_results_free(r);
    q.no_sentences = 1;
    assert_int_equal(cmr_searcher_search(s, &q, &r), 0);
    assert_null(r->items[0].sentence);
    assert_true(isnan(r->items[0].sentence_sim));
    cmr_results_free(r);
    cmr_query cq = {.kind = CMR_QUERY_CASE, .case_id = 2};
    assert_int_equal(cmr_searcher_search(s, &cq, &r), 0);
    assert_non_null(r->query_findings);
    assert_int_equal(r->n, 2);
    assert_non_null(r->items[0].sentence);
    cmr_results_free(r);
    cmr_searcher_close(s);
    cmr_findings_free(fd);
    free(x);
    free(p);
    free(mp);
    free(mn);
    cmr_model_close(m);
}

/* Rewrite every record's version byte to 1: a store written before
 * finding scores (version 1 records carry no tag 20 and are otherwise
 * identical). */
static void downgrade_records(const char *dir)
{
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    MDB_cursor *cur;
    MDB_val k, v;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 32), 0);
    assert_int_equal(mdb_env_set_mapsize(env, (size_t)1 << 30), 0);
    assert_int_equal(mdb_env_open(env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "cases", 0, &dbi), 0);
    assert_int_equal(mdb_cursor_open(txn, dbi, &cur), 0);
    size_t n = 0;
    for (int rc = mdb_cursor_get(cur, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        uint8_t *copy = malloc(v.mv_size);
        memcpy(copy, v.mv_data, v.mv_size);
        assert_int_equal(copy[0], 2);
        copy[0] = 1;
        MDB_val nv = {v.mv_size, copy};
        assert_int_equal(mdb_cursor_put(cur, &k, &nv, MDB_CURRENT), 0);
        free(copy);
        n++;
    }
    assert_true(n > 0);
    mdb_cursor_close(cur);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static size_t idx_of_lge(void)
{
    size_t i = 0;
    assert_int_equal(cmr_finding_lookup("lge", &i), 0);
    return i;
}

static void test_record_upgrade(void **state)
{
    fixture *f = *state;
    cmr_model *m = open_model();
    unsigned dim = cmr_model_dim(m);
    bind_model(f, m);
    float *x = malloc(dim * sizeof *x);
    const char *imp[4] = {"Hypertrophic cardiomyopathy with patchy LGE.", "Dilated cardiomyopathy.",
                          "Structurally normal heart.", "Cardiac amyloidosis with diffuse LGE."};
    for (unsigned i = 0; i < 4; i++) {
        assert_int_equal(cmr_model_encode_text(m, imp[i], x), 0);
        put(f, i + 1, x, x, i + 1, NULL, 0, imp[i]);
    }
    put(f, 5, NULL, NULL, 0, NULL, 0, "no vectors"); /* nothing to score */
    cmr_store_close(f->store);
    f->store = NULL;
    char path[512];
    snprintf(path, sizeof path, "%s/db", f->dir);
    downgrade_records(path);

    /* Version 1 records read, and the store verifies. */
    assert_int_equal(cmr_store_open(path, 0, NULL, &f->store), 0);
    cmr_case *c;
    assert_int_equal(cmr_store_get(f->store, 2, &c), 0);
    assert_string_equal(c->impression, "Dilated cardiomyopathy.");
    assert_int_equal(c->n_findings, 0);
    cmr_case_free(c);
    test_assert_verify_clean(f->store);
    /* A finding filter says the store needs rescoring. */
    cmr_finding_bound b = {"lge", 0.5f, 1};
    cmr_filter flt = {.n_finding_bounds = 1, .finding_bounds = &b};
    cmr_hits *h;
    assert_int_equal(cmr_store_search(f->store, CMR_SPACE_IMAGE, x, 4, &flt, &h), CMR_ENOTFOUND);

    /* Rescoring writes version 2 records with the scores of the image vectors. */
    cmr_findings *fd;
    size_t n;
    assert_int_equal(cmr_findings_new(m, &fd), 0);
    assert_int_equal(cmr_findings_rescore(f->store, fd, &n), 0);
    assert_int_equal(n, 4);
    test_assert_verify_clean(f->store);
    float scores[32];
    assert_int_equal(cmr_store_get_vector(f->store, 4, CMR_SPACE_IMAGE, x), 0);
    assert_int_equal(cmr_findings_score(fd, x, scores), 0);
    assert_int_equal(cmr_store_get(f->store, 4, &c), 0);
    assert_int_equal(c->n_findings, 17);
    for (size_t i = 0; i < 17; i++)
        assert_float_equal(c->findings[i].score, scores[i], 0);
    assert_string_equal(c->impression, "Cardiac amyloidosis with diffuse LGE.");
    assert_int_equal(c->has_patient_key, 1);
    cmr_case_free(c);
    assert_int_equal(cmr_store_get(f->store, 5, &c), 0);
    assert_int_equal(c->n_findings, 0);
    cmr_case_free(c);
    /* the filter now answers, exactly as the scores say */
    size_t want = 0;
    for (uint64_t id = 1; id <= 4; id++) {
        assert_int_equal(cmr_store_get(f->store, id, &c), 0);
        want += c->findings[idx_of_lge()].score >= 0.5f;
        cmr_case_free(c);
    }
    assert_int_equal(cmr_store_search(f->store, CMR_SPACE_IMAGE, x, 4, &flt, &h), 0);
    assert_int_equal(h->n, want);
    cmr_hits_free(h);
    const char *const *names;
    assert_int_equal(cmr_store_finding_names(f->store, &names, &n), 0);
    assert_int_equal(n, 17);
    assert_string_equal(names[0], "lv_systolic_dysfunction");
    cmr_findings_free(fd);
    free(x);
    cmr_model_close(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_fusion_arithmetic, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fusion_recall, setup, teardown),
        cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_per_patient, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finding_filters, setup, teardown),
        cmocka_unit_test(test_sentences_split),
        cmocka_unit_test_setup_teardown(test_model_findings_and_sentences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_upgrade, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
