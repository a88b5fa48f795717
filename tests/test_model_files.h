/* test_model's second group (tests/test_model_files.c): F16 weights and
 * ensembles. */
#ifndef CMR_TEST_MODEL_FILES_H
#define CMR_TEST_MODEL_FILES_H

#include <stddef.h>

struct CMUnitTest;
extern const struct CMUnitTest cmr_model_file_tests[];
extern const size_t cmr_model_file_test_count;

#endif
