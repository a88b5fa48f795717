# test_tokenizer: the WordPiece tokenizer (model/tokenizer.c) against the golden
# ids of the independent Python reference (tests/reference/wordpiece_reference.py,
# which wrote tests/fixtures/tokenizer/), plus error paths and a speed figure.
cmr_add_test(test_tokenizer SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_tokenizer.c LIBS cmr_model PkgConfig::JANSSON TIMEOUT 120)
if(TARGET test_tokenizer)
  target_compile_definitions(test_tokenizer PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
