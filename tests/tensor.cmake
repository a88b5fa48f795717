# test_tensor: the study -> model input builder (indexer/tensor.c, window.c)
# against the numpy reference's fixtures (tests/fixtures/tensor, written by
# tests/reference/make_tensor_fixtures.py) and the real DICOM in
# ../shared/data/real (located from the source tree; skipped when absent).
cmr_add_test(test_tensor SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tensor.c LIBS cmr_indexer PkgConfig::JANSSON TIMEOUT 300)
if(TARGET test_tensor)
  target_compile_definitions(test_tensor PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
