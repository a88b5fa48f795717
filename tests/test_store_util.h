/* Helpers shared by the store tests: deterministic vectors. */
#ifndef CMR_TEST_STORE_UTIL_H
#define CMR_TEST_STORE_UTIL_H

#include "cmr_store.h"
#include "test_util.h"

/* A vector near one of n_clusters fixed centres, so that neighbours exist. */
static inline void test_vector(uint64_t seed, unsigned cluster, unsigned dim, float spread, float *out)
{
    uint64_t cs = 0x1234567ull + cluster * 7919ull, vs = seed * 2654435761ull + 17;
    for (unsigned i = 0; i < dim; i++)
        out[i] = test_gauss(&cs) + spread * test_gauss(&vs);
}

/* The store verifies clean, every problem printed first.  Needs cmocka.h
 * included before this header (every includer is a cmocka test). */
static inline void test_assert_verify_clean(cmr_store *s)
{
    cmr_verify_report *r;
    assert_int_equal(cmr_store_verify(s, &r), 0);
    for (size_t i = 0; i < r->n_problems; i++)
        print_error("verify: %s\n", r->problems[i]);
    assert_int_equal(r->n_problems, 0);
    cmr_verify_report_free(r);
}

#endif
