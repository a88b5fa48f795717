# test_model: the CMR-CLIP towers (model/) against the PyTorch reference's
# fixtures (tests/fixtures/model, written by tests/reference/make_model_fixtures.py).
cmr_add_test(test_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_model.c LIBS cmr_model PkgConfig::JANSSON TIMEOUT 300)
if(TARGET test_model)
  target_compile_definitions(test_model PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
