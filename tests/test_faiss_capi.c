/* store/faiss_c_api.cpp: our FAISS C API subset, checked against brute force
 * and on its error paths. Every search result is compared with an exact
 * inner-product scan written here, so a wrong id, a wrong score, a selector
 * ignored or a lost vector after a file round trip all fail a test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <pthread.h>
#include <unistd.h>

#include <faiss/c_api/AutoTune_c.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "cmr_faiss_ext.h"

#define DIM 16
#define NB 1000 /* enough for k-means on 16 lists without FAISS's warning */
#define NQ 8
#define K 10
#define NLIST 16
#define FIRST_ID 10000
#define ID_STRIDE 3 /* external ids are neither 0-based nor contiguous */
#define MAX_ID (FIRST_ID + ID_STRIDE * (NB - 1))
#define BITMAP_BYTES (MAX_ID / 8 + 1)
#define SCORE_TOLERANCE 1e-4f

/* faiss 1.7.3's read_index leaks the part of an index it had built when the
 * bytes run out mid-index (a 2-byte file fails before anything is built).
 * LeakSanitizer would fail the test for FAISS's leak, so sanitized builds
 * skip that one case. */
#if defined(__SANITIZE_ADDRESS__)
#define FAISS_LEAKS_ON_SHORT_READ 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FAISS_LEAKS_ON_SHORT_READ 1
#endif
#endif
#ifndef FAISS_LEAKS_ON_SHORT_READ
#define FAISS_LEAKS_ON_SHORT_READ 0
#endif

static float base[NB * DIM];
static idx_t ids[NB];
static float queries[NQ * DIM];

static idx_t id_at(size_t position)
{
    return FIRST_ID + ID_STRIDE * (idx_t)position;
}

/* -1 for an id that was never added, so a foreign label fails the test. */
static long position_of(idx_t id)
{
    if (id < FIRST_ID || (id - FIRST_ID) % ID_STRIDE != 0 || (id - FIRST_ID) / ID_STRIDE >= NB)
        return -1;
    return (long)((id - FIRST_ID) / ID_STRIDE);
}

static float uniform(uint64_t *state)
{
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    return (float)((*state >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f;
}

static int make_data(void **state)
{
    (void)state;
    uint64_t rng = 0x9e3779b97f4a7c15u;
    for (size_t i = 0; i < NB * DIM; i++)
        base[i] = uniform(&rng);
    for (size_t i = 0; i < NQ * DIM; i++)
        queries[i] = uniform(&rng);
    for (size_t i = 0; i < NB; i++)
        ids[i] = id_at(i);
    return 0;
}

static float inner_product(const float *a, const float *b)
{
    float sum = 0;
    for (size_t j = 0; j < DIM; j++)
        sum += a[j] * b[j];
    return sum;
}

typedef struct scored {
    idx_t id;
    float score;
} scored;

/* The exact answer: the k best inner products among positions with
 * eligible[p] (all positions when eligible is NULL), best first. */
static size_t brute_force_top_k(const float *query, const bool *eligible, size_t k, scored *top)
{
    size_t found = 0;
    for (size_t p = 0; p < NB; p++) {
        if (eligible && !eligible[p])
            continue;
        scored candidate = {id_at(p), inner_product(base + p * DIM, query)};
        if (found < k)
            found++;
        else if (candidate.score <= top[k - 1].score)
            continue;
        size_t slot = found - 1; /* when full, the worst is overwritten */
        while (slot > 0 && top[slot - 1].score < candidate.score) {
            top[slot] = top[slot - 1];
            slot--;
        }
        top[slot] = candidate;
    }
    return found;
}

/* Rank by rank the scores must equal the exact ones, and each label must be
 * an eligible id whose own true score is the one reported; comparing ids
 * directly would wrongly fail on near-ties that float rounding reorders. */
static void assert_exact_results(const float *query, const bool *eligible, const float *distances,
                                 const idx_t *labels, size_t k)
{
    scored expected[K];
    assert_true(k <= K);
    size_t n_expected = brute_force_top_k(query, eligible, k, expected);
    for (size_t r = 0; r < k; r++) {
        if (r >= n_expected) {
            assert_int_equal(labels[r], -1);
            continue;
        }
        long p = position_of(labels[r]);
        assert_true(p >= 0);
        if (eligible)
            assert_true(eligible[p]);
        assert_float_equal(distances[r], expected[r].score, SCORE_TOLERANCE);
        assert_float_equal(distances[r], inner_product(base + (size_t)p * DIM, query), SCORE_TOLERANCE);
        for (size_t earlier = 0; earlier < r; earlier++)
            assert_true(labels[earlier] != labels[r]);
    }
}

static void assert_all_queries_exact(const FaissIndex *index, const FaissSearchParameters *params,
                                     const bool *eligible)
{
    float distances[NQ * K];
    idx_t labels[NQ * K];
    int rc = params ? faiss_Index_search_with_params(index, NQ, queries, K, params, distances, labels)
                    : faiss_Index_search(index, NQ, queries, K, distances, labels);
    assert_int_equal(rc, 0);
    for (size_t q = 0; q < NQ; q++)
        assert_exact_results(queries + q * DIM, eligible, distances + q * K, labels + q * K, K);
}

static FaissIndex *new_index(const char *description)
{
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, DIM, description, METRIC_INNER_PRODUCT), 0);
    assert_non_null(index);
    return index;
}

static FaissIndex *new_filled_flat(void)
{
    FaissIndex *index = new_index("IDMap,Flat");
    assert_int_equal(faiss_Index_add_with_ids(index, NB, base, ids), 0);
    return index;
}

static FaissIndex *new_filled_ivf(void)
{
    FaissIndex *index = new_index("IVF16,Flat");
    assert_int_equal(faiss_Index_train(index, NB, base), 0);
    assert_int_equal(faiss_Index_add_with_ids(index, NB, base, ids), 0);
    return index;
}

/* Which positions the selector tests pick: about one in five, irregularly. */
static void choose_subset(bool eligible[NB], idx_t *chosen_ids, size_t *n_chosen, uint8_t bitmap[BITMAP_BYTES])
{
    *n_chosen = 0;
    memset(bitmap, 0, BITMAP_BYTES);
    for (size_t p = 0; p < NB; p++) {
        eligible[p] = (p * 2654435761u) % 97 < 20;
        if (!eligible[p])
            continue;
        idx_t id = id_at(p);
        chosen_ids[(*n_chosen)++] = id;
        bitmap[id >> 3] |= (uint8_t)(1u << (id & 7));
    }
}

static void assert_last_error_mentions(const char *needle)
{
    const char *message = faiss_get_last_error();
    assert_non_null(message);
    if (!strstr(message, needle))
        fail_msg("last error \"%s\" does not mention \"%s\"", message, needle);
}

/* ---- building and searching -------------------------------------------------------------- */

static void test_idmap_flat_matches_brute_force(void **state)
{
    (void)state;
    FaissIndex *index = new_index("IDMap,Flat");
    assert_int_equal(faiss_Index_d(index), DIM);
    assert_int_equal(faiss_Index_metric_type(index), METRIC_INNER_PRODUCT);
    assert_true(faiss_Index_is_trained(index));
    assert_int_equal(faiss_Index_ntotal(index), 0);
    assert_null(faiss_IndexIVF_cast(index));

    assert_int_equal(faiss_Index_add_with_ids(index, NB, base, ids), 0);
    assert_int_equal(faiss_Index_ntotal(index), NB);
    assert_all_queries_exact(index, NULL, NULL);

    /* A stored vector is its own best match. */
    float distances[K];
    idx_t labels[K];
    assert_int_equal(faiss_Index_search(index, 1, base + 123 * DIM, K, distances, labels), 0);
    assert_exact_results(base + 123 * DIM, NULL, distances, labels, K);

    /* IDMap (unlike IDMap2) keeps no reverse map, so FAISS refuses. */
    float vector[DIM];
    assert_true(faiss_Index_reconstruct(index, id_at(123), vector) != 0);
    assert_last_error_mentions("not implemented");

    faiss_Index_free(index);
}

static void test_plain_flat_add_reconstruct_reset(void **state)
{
    (void)state;
    FaissIndex *index = new_index("Flat");
    assert_int_equal(faiss_Index_add(index, NB, base), 0);
    float vector[DIM];
    assert_int_equal(faiss_Index_reconstruct(index, 321, vector), 0);
    assert_memory_equal(vector, base + 321 * DIM, sizeof vector);

    /* Without IDMap, labels are insertion positions. */
    float distances[K];
    idx_t labels[K];
    assert_int_equal(faiss_Index_search(index, 1, queries, K, distances, labels), 0);
    scored expected[K];
    brute_force_top_k(queries, NULL, K, expected);
    assert_true(labels[0] >= 0 && labels[0] < NB);
    assert_float_equal(distances[0], expected[0].score, SCORE_TOLERANCE);
    assert_float_equal(distances[0], inner_product(base + labels[0] * DIM, queries), SCORE_TOLERANCE);

    assert_int_equal(faiss_Index_reset(index), 0);
    assert_int_equal(faiss_Index_ntotal(index), 0);
    faiss_Index_free(index);
}

static void test_ivf_train_add_and_nprobe(void **state)
{
    (void)state;
    FaissIndex *index = new_index("IVF16,Flat");
    assert_false(faiss_Index_is_trained(index));
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
    assert_non_null(ivf);
    assert_int_equal(faiss_IndexIVF_nlist(ivf), NLIST);

    assert_int_equal(faiss_Index_train(index, NB, base), 0);
    assert_true(faiss_Index_is_trained(index));
    assert_int_equal(faiss_Index_add_with_ids(index, NB, base, ids), 0);
    assert_int_equal(faiss_Index_ntotal(index), NB);

    faiss_IndexIVF_set_nprobe(ivf, 3);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), 3);

    FaissParameterSpace *space = NULL;
    assert_int_equal(faiss_ParameterSpace_new(&space), 0);
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(space, index, "nprobe", 7), 0);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), 7);
    assert_int_equal(faiss_ParameterSpace_set_index_parameter(space, index, "nprobe", NLIST), 0);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), NLIST);
    assert_true(faiss_ParameterSpace_set_index_parameter(space, index, "no_such_parameter", 1) != 0);
    assert_last_error_mentions("no_such_parameter");
    faiss_ParameterSpace_free(space);

    /* Probing every list is exhaustive, hence exact. */
    assert_all_queries_exact(index, NULL, NULL);

    /* Per-search nprobe overrides the index's. */
    faiss_IndexIVF_set_nprobe(ivf, 1);
    FaissSearchParametersIVF *params = NULL;
    assert_int_equal(faiss_SearchParametersIVF_new(&params), 0);
    assert_int_equal(faiss_SearchParametersIVF_nprobe(params), 1);
    faiss_SearchParametersIVF_set_nprobe(params, NLIST);
    assert_int_equal(faiss_SearchParametersIVF_nprobe(params), NLIST);
    assert_all_queries_exact(index, params, NULL);
    assert_int_equal(faiss_IndexIVF_nprobe(ivf), 1);
    faiss_SearchParametersIVF_free(params);

    faiss_Index_free(index);
}

/* ---- selectors ----------------------------------------------------------------------------- */

static void test_selector_membership(void **state)
{
    (void)state;
    const uint8_t bitmap[2] = {0x01, 0x80}; /* ids 0 and 15: bit i of byte i >> 3, LSB first */
    FaissIDSelectorBitmap *by_bitmap = NULL;
    assert_int_equal(faiss_IDSelectorBitmap_new(&by_bitmap, sizeof bitmap, bitmap), 0);
    const FaissIDSelector *sel = (const FaissIDSelector *)by_bitmap;
    assert_true(faiss_IDSelector_is_member(sel, 0));
    assert_false(faiss_IDSelector_is_member(sel, 1));
    assert_false(faiss_IDSelector_is_member(sel, 7));
    assert_false(faiss_IDSelector_is_member(sel, 8));
    assert_true(faiss_IDSelector_is_member(sel, 15));
    assert_false(faiss_IDSelector_is_member(sel, 16)); /* past the n bytes */
    assert_false(faiss_IDSelector_is_member(sel, -1));
    faiss_IDSelector_free((FaissIDSelector *)by_bitmap);

    const idx_t listed[] = {42, 7, 1000000};
    FaissIDSelectorArray *by_array = NULL;
    FaissIDSelectorBatch *by_batch = NULL;
    assert_int_equal(faiss_IDSelectorArray_new(&by_array, 3, listed), 0);
    assert_int_equal(faiss_IDSelectorBatch_new(&by_batch, 3, listed), 0);
    FaissIDSelector *list_selectors[] = {(FaissIDSelector *)by_array, (FaissIDSelector *)by_batch};
    for (size_t s = 0; s < 2; s++) {
        assert_true(faiss_IDSelector_is_member(list_selectors[s], 42));
        assert_true(faiss_IDSelector_is_member(list_selectors[s], 7));
        assert_true(faiss_IDSelector_is_member(list_selectors[s], 1000000));
        assert_false(faiss_IDSelector_is_member(list_selectors[s], 8));
        assert_false(faiss_IDSelector_is_member(list_selectors[s], 0));
        faiss_IDSelector_free(list_selectors[s]);
    }

    FaissIDSelectorRange *by_range = NULL;
    assert_int_equal(faiss_IDSelectorRange_new(&by_range, 10, 20), 0);
    assert_false(faiss_IDSelector_is_member((FaissIDSelector *)by_range, 9));
    assert_true(faiss_IDSelector_is_member((FaissIDSelector *)by_range, 10));
    assert_true(faiss_IDSelector_is_member((FaissIDSelector *)by_range, 19));
    assert_false(faiss_IDSelector_is_member((FaissIDSelector *)by_range, 20));
    faiss_IDSelectorRange_free(by_range);
}

enum selector_kind { BY_BITMAP, BY_BATCH, BY_ARRAY, N_SELECTOR_KINDS };

static FaissIDSelector *new_selector(enum selector_kind kind, const idx_t *chosen_ids, size_t n_chosen,
                                     const uint8_t *bitmap)
{
    FaissIDSelector *sel = NULL;
    int rc = -1;
    if (kind == BY_BITMAP)
        rc = faiss_IDSelectorBitmap_new((FaissIDSelectorBitmap **)&sel, BITMAP_BYTES, bitmap);
    else if (kind == BY_BATCH)
        rc = faiss_IDSelectorBatch_new((FaissIDSelectorBatch **)&sel, n_chosen, chosen_ids);
    else
        rc = faiss_IDSelectorArray_new((FaissIDSelectorArray **)&sel, n_chosen, chosen_ids);
    assert_int_equal(rc, 0);
    assert_non_null(sel);
    return sel;
}

/* Each selector kind, through both kinds of parameters where the index takes
 * them, must give exactly the brute-force best among the selected ids. */
static void check_filtered_searches(FaissIndex *index, bool ivf)
{
    static bool eligible[NB];
    static idx_t chosen_ids[NB];
    static uint8_t bitmap[BITMAP_BYTES];
    size_t n_chosen;
    choose_subset(eligible, chosen_ids, &n_chosen, bitmap);
    assert_true(n_chosen > K && n_chosen < NB / 2);

    for (int kind = 0; kind < N_SELECTOR_KINDS; kind++) {
        FaissIDSelector *sel = new_selector(kind, chosen_ids, n_chosen, bitmap);

        FaissSearchParametersIVF *ivf_params = NULL;
        assert_int_equal(faiss_SearchParametersIVF_new_with(&ivf_params, sel, NLIST, 0), 0);
        assert_int_equal(faiss_SearchParametersIVF_nprobe(ivf_params), NLIST);
        assert_all_queries_exact(index, ivf_params, eligible);
        faiss_SearchParametersIVF_free(ivf_params);

        if (!ivf) {
            FaissSearchParameters *params = NULL;
            assert_int_equal(faiss_SearchParameters_new(&params, sel), 0);
            assert_all_queries_exact(index, params, eligible);
            faiss_SearchParameters_free(params);
        }
        faiss_IDSelector_free(sel);
    }

    /* Fewer selected than asked for: the rest is padded with -1. */
    static bool only_three[NB];
    memset(only_three, 0, sizeof only_three);
    only_three[5] = only_three[500] = only_three[NB - 1] = true;
    const idx_t three_ids[] = {id_at(NB - 1), id_at(5), id_at(500)};
    FaissIDSelector *sel = NULL;
    assert_int_equal(faiss_IDSelectorArray_new((FaissIDSelectorArray **)&sel, 3, three_ids), 0);
    FaissSearchParametersIVF *params = NULL;
    assert_int_equal(faiss_SearchParametersIVF_new_with(&params, sel, NLIST, 0), 0);
    assert_all_queries_exact(index, params, only_three);
    faiss_SearchParametersIVF_free(params);
    faiss_IDSelector_free(sel);

    /* No selector: the same as a plain search. */
    assert_int_equal(faiss_SearchParametersIVF_new_with(&params, NULL, NLIST, 0), 0);
    assert_all_queries_exact(index, params, NULL);
    faiss_SearchParametersIVF_free(params);
}

static void test_filtered_search_idmap_flat(void **state)
{
    (void)state;
    FaissIndex *index = new_filled_flat();
    check_filtered_searches(index, false);
    faiss_Index_free(index);
}

static void test_filtered_search_ivf(void **state)
{
    (void)state;
    FaissIndex *index = new_filled_ivf();
    check_filtered_searches(index, true);

    /* FAISS's IVF requires IVF parameters; the refusal must reach the caller. */
    FaissSearchParameters *plain = NULL;
    assert_int_equal(faiss_SearchParameters_new(&plain, NULL), 0);
    float distances[K];
    idx_t labels[K];
    assert_int_equal(faiss_Index_search_with_params(index, 1, queries, K, plain, distances, labels), FAISS_EXCEPT);
    assert_last_error_mentions("incorrect type");
    faiss_SearchParameters_free(plain);

    faiss_Index_free(index);
}

/* ---- removal ------------------------------------------------------------------------------- */

static void check_removal(FaissIndex *index)
{
    static bool kept[NB];
    for (size_t p = 0; p < NB; p++)
        kept[p] = true;

    const idx_t batch[] = {id_at(3), id_at(400), id_at(777), MAX_ID + 1000 /* never added */};
    FaissIDSelectorBatch *by_batch = NULL;
    assert_int_equal(faiss_IDSelectorBatch_new(&by_batch, 4, batch), 0);
    size_t removed = 0;
    assert_int_equal(faiss_Index_remove_ids(index, (const FaissIDSelector *)by_batch, &removed), 0);
    assert_int_equal(removed, 3);
    kept[3] = kept[400] = kept[777] = false;
    faiss_IDSelector_free((FaissIDSelector *)by_batch);

    /* Ids 10, 11 and 12 are not ours; the range covers positions 10..19. */
    FaissIDSelectorRange *by_range = NULL;
    assert_int_equal(faiss_IDSelectorRange_new(&by_range, id_at(10), id_at(20)), 0);
    assert_int_equal(faiss_Index_remove_ids(index, (const FaissIDSelector *)by_range, &removed), 0);
    assert_int_equal(removed, 10);
    for (size_t p = 10; p < 20; p++)
        kept[p] = false;
    faiss_IDSelectorRange_free(by_range);

    assert_int_equal(faiss_Index_ntotal(index), NB - 13);
    assert_all_queries_exact(index, NULL, kept);

    /* A removed vector must not come back as its own match. */
    float distances[K];
    idx_t labels[K];
    assert_int_equal(faiss_Index_search(index, 1, base + 400 * DIM, K, distances, labels), 0);
    assert_exact_results(base + 400 * DIM, kept, distances, labels, K);
}

static void test_remove_ids_idmap_flat(void **state)
{
    (void)state;
    FaissIndex *index = new_filled_flat();
    check_removal(index);
    faiss_Index_free(index);
}

static void test_remove_ids_ivf(void **state)
{
    (void)state;
    FaissIndex *index = new_filled_ivf();
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(index), NLIST);
    check_removal(index);
    faiss_Index_free(index);
}

/* ---- files --------------------------------------------------------------------------------- */

static const char header[] = "CMRX: a header of our own before FAISS";
static const char trailer[] = "TRAILER";

static void assert_same_answers(const FaissIndex *a, const FaissIndex *b)
{
    assert_int_equal(faiss_Index_ntotal(a), faiss_Index_ntotal(b));
    assert_int_equal(faiss_Index_d(a), faiss_Index_d(b));
    assert_int_equal(faiss_Index_metric_type(a), faiss_Index_metric_type(b));
    float distances_a[NQ * K], distances_b[NQ * K];
    idx_t labels_a[NQ * K], labels_b[NQ * K];
    assert_int_equal(faiss_Index_search(a, NQ, queries, K, distances_a, labels_a), 0);
    assert_int_equal(faiss_Index_search(b, NQ, queries, K, distances_b, labels_b), 0);
    assert_memory_equal(labels_a, labels_b, sizeof labels_a);
    assert_memory_equal(distances_a, distances_b, sizeof distances_a);
}

/* Our index files put a header of our own before the FAISS bytes: FAISS must
 * write and read from the FILE's current offset, and stop at its own end. */
static void check_file_round_trip_after_header(FaissIndex *index)
{
    FILE *f = tmpfile();
    assert_non_null(f);
    assert_int_equal(fwrite(header, 1, sizeof header, f), sizeof header);
    assert_int_equal(faiss_write_index(index, f), 0);
    long faiss_end = ftell(f);
    assert_true(faiss_end > (long)sizeof header);
    assert_int_equal(fwrite(trailer, 1, sizeof trailer, f), sizeof trailer);
    assert_int_equal(fflush(f), 0);

    rewind(f);
    char header_back[sizeof header];
    assert_int_equal(fread(header_back, 1, sizeof header_back, f), sizeof header_back);
    assert_memory_equal(header_back, header, sizeof header);
    FaissIndex *copy = NULL;
    assert_int_equal(faiss_read_index(f, 0, &copy), 0);
    assert_non_null(copy);
    assert_int_equal(ftell(f), faiss_end);
    char trailer_back[sizeof trailer];
    assert_int_equal(fread(trailer_back, 1, sizeof trailer_back, f), sizeof trailer_back);
    assert_memory_equal(trailer_back, trailer, sizeof trailer);
    fclose(f);

    FaissIndexIVF *ivf = faiss_IndexIVF_cast(index);
    assert_int_equal(ivf != NULL, faiss_IndexIVF_cast(copy) != NULL);
    if (ivf) {
        assert_int_equal(faiss_IndexIVF_nlist(faiss_IndexIVF_cast(copy)), faiss_IndexIVF_nlist(ivf));
        faiss_IndexIVF_set_nprobe(ivf, NLIST);
        faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(copy), NLIST);
    }
    assert_same_answers(index, copy);
    assert_all_queries_exact(copy, NULL, NULL);
    faiss_Index_free(copy);
}

static void test_file_round_trip_after_header(void **state)
{
    (void)state;
    FaissIndex *flat = new_filled_flat();
    check_file_round_trip_after_header(flat);
    faiss_Index_free(flat);
    FaissIndex *ivf = new_filled_ivf();
    check_file_round_trip_after_header(ivf);
    faiss_Index_free(ivf);
}

typedef struct scratch_dir {
    char path[64];
} scratch_dir;

static void make_scratch_dir(scratch_dir *dir)
{
    snprintf(dir->path, sizeof dir->path, "/tmp/test_faiss_capi.XXXXXX");
    assert_non_null(mkdtemp(dir->path));
}

static void file_in(const scratch_dir *dir, const char *name, char *out, size_t size)
{
    assert_true((size_t)snprintf(out, size, "%s/%s", dir->path, name) < size);
}

static void test_fname_round_trip(void **state)
{
    (void)state;
    scratch_dir dir;
    make_scratch_dir(&dir);
    char path[128];
    file_in(&dir, "ivf.faiss", path, sizeof path);

    FaissIndex *index = new_filled_ivf();
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(index), NLIST);
    assert_int_equal(faiss_write_index_fname(index, path), 0);
    FaissIndex *copy = NULL;
    assert_int_equal(faiss_read_index_fname(path, 0, &copy), 0);
    assert_non_null(copy);
    assert_non_null(faiss_IndexIVF_cast(copy));
    faiss_IndexIVF_set_nprobe(faiss_IndexIVF_cast(copy), NLIST);
    assert_same_answers(index, copy);
    faiss_Index_free(copy);
    faiss_Index_free(index);

    assert_int_equal(unlink(path), 0);
    assert_int_equal(rmdir(dir.path), 0);
}

/* ---- errors -------------------------------------------------------------------------------- */

static void test_invalid_factory_string(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_int_equal(faiss_index_factory(&index, DIM, "NotAnIndex,Foo", METRIC_INNER_PRODUCT), FAISS_EXCEPT);
    assert_null(index);
    assert_last_error_mentions("NotAnIndex,Foo");

    /* A standard-library exception maps to its own code: 1.7.3's factory
     * parses the list count with std::stoi, which throws out_of_range. */
    assert_int_equal(faiss_index_factory(&index, DIM, "IVF99999999999999999999,Flat", METRIC_L2), STD_EXCEPT);
    assert_null(index);
    assert_last_error_mentions("stoi");
}

static void test_unreadable_files(void **state)
{
    (void)state;
    scratch_dir dir;
    make_scratch_dir(&dir);
    char missing[128], garbage_path[128];
    file_in(&dir, "missing.faiss", missing, sizeof missing);
    file_in(&dir, "garbage.faiss", garbage_path, sizeof garbage_path);

    FaissIndex *index = NULL;
    assert_true(faiss_read_index_fname(missing, 0, &index) != 0);
    assert_null(index);
    assert_last_error_mentions("missing.faiss");

    static const char garbage[] = "this is not a FAISS index, only some bytes that pretend to be one";
    FILE *f = fopen(garbage_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(garbage, 1, sizeof garbage, f), sizeof garbage);
    assert_int_equal(fclose(f), 0);
    assert_true(faiss_read_index_fname(garbage_path, 0, &index) != 0);
    assert_null(index);
    assert_non_null(faiss_get_last_error());
    assert_true(strlen(faiss_get_last_error()) > 0);

    f = tmpfile();
    assert_non_null(f);
    assert_int_equal(fwrite(garbage, 1, sizeof garbage, f), sizeof garbage);
    rewind(f);
    assert_true(faiss_read_index(f, 0, &index) != 0);
    assert_null(index);
    assert_non_null(faiss_get_last_error());
    fclose(f);

    /* A file cut short must fail, not yield an index. */
    FaissIndex *flat = new_filled_flat();
    for (int cut_inside_vectors = 0; cut_inside_vectors <= 1; cut_inside_vectors++) {
        if (cut_inside_vectors && FAISS_LEAKS_ON_SHORT_READ)
            continue;
        f = tmpfile();
        assert_non_null(f);
        assert_int_equal(faiss_write_index(flat, f), 0);
        long full = ftell(f);
        assert_int_equal(fflush(f), 0);
        assert_int_equal(ftruncate(fileno(f), cut_inside_vectors ? full / 2 : 2), 0);
        rewind(f);
        assert_true(faiss_read_index(f, 0, &index) != 0);
        assert_null(index);
        assert_non_null(faiss_get_last_error());
        fclose(f);
    }
    faiss_Index_free(flat);

    assert_int_equal(unlink(garbage_path), 0);
    assert_int_equal(rmdir(dir.path), 0);
}

static void test_untrained_ivf_refuses(void **state)
{
    (void)state;
    FaissIndex *index = new_index("IVF16,Flat");
    float distances[K];
    idx_t labels[K];
    assert_true(faiss_Index_search(index, 1, queries, K, distances, labels) != 0);
    assert_last_error_mentions("not trained");

    FaissSearchParametersIVF *params = NULL;
    assert_int_equal(faiss_SearchParametersIVF_new_with(&params, NULL, NLIST, 0), 0);
    assert_true(faiss_Index_search_with_params(index, 1, queries, K, params, distances, labels) != 0);
    assert_last_error_mentions("not trained");
    faiss_SearchParametersIVF_free(params);

    assert_true(faiss_Index_add_with_ids(index, NB, base, ids) != 0);
    assert_last_error_mentions("is_trained");
    assert_int_equal(faiss_Index_ntotal(index), 0);
    faiss_Index_free(index);
}

typedef struct worker_report {
    bool clean_at_start;
    int rc;
    char message[512];
} worker_report;

static void *fail_on_own_thread(void *arg)
{
    worker_report *report = arg;
    report->clean_at_start = faiss_get_last_error() == NULL;
    FaissIndex *index = NULL;
    report->rc = faiss_index_factory(&index, DIM, "WorkerThreadBad", METRIC_L2);
    const char *message = faiss_get_last_error();
    snprintf(report->message, sizeof report->message, "%s", message ? message : "(null)");
    return NULL;
}

static void test_last_error_is_per_thread(void **state)
{
    (void)state;
    FaissIndex *index = NULL;
    assert_true(faiss_index_factory(&index, DIM, "MainThreadBad", METRIC_L2) != 0);
    assert_last_error_mentions("MainThreadBad");

    worker_report report = {0};
    pthread_t worker;
    assert_int_equal(pthread_create(&worker, NULL, fail_on_own_thread, &report), 0);
    assert_int_equal(pthread_join(worker, NULL), 0);
    assert_true(report.clean_at_start);
    assert_true(report.rc != 0);
    assert_non_null(strstr(report.message, "WorkerThreadBad"));
    assert_null(strstr(report.message, "MainThreadBad"));

    assert_last_error_mentions("MainThreadBad");
    assert_null(strstr(faiss_get_last_error(), "WorkerThreadBad"));

    /* As upstream: success leaves the last failure's message in place. */
    index = new_index("Flat");
    assert_last_error_mentions("MainThreadBad");
    faiss_Index_free(index);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_idmap_flat_matches_brute_force),
        cmocka_unit_test(test_plain_flat_add_reconstruct_reset),
        cmocka_unit_test(test_ivf_train_add_and_nprobe),
        cmocka_unit_test(test_selector_membership),
        cmocka_unit_test(test_filtered_search_idmap_flat),
        cmocka_unit_test(test_filtered_search_ivf),
        cmocka_unit_test(test_remove_ids_idmap_flat),
        cmocka_unit_test(test_remove_ids_ivf),
        cmocka_unit_test(test_file_round_trip_after_header),
        cmocka_unit_test(test_fname_round_trip),
        cmocka_unit_test(test_invalid_factory_string),
        cmocka_unit_test(test_unreadable_files),
        cmocka_unit_test(test_untrained_ivf_refuses),
        cmocka_unit_test(test_last_error_is_per_thread),
    };
    return cmocka_run_group_tests(tests, make_data, NULL);
}
