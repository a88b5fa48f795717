# test_model: the CMR-CLIP towers (model/) against the PyTorch reference's
# fixtures (tests/fixtures/model, written by tests/reference/make_model_fixtures.py).
cmr_add_test(test_model SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_model.c ${CMAKE_CURRENT_SOURCE_DIR}/test_model_files.c LIBS cmr_model PkgConfig::JANSSON TIMEOUT 300)
if(TARGET test_model)
  target_compile_definitions(test_model PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  # The AMX product kernel's own tests: "Skipped" (exit 77), not "Passed",
  # on a CPU without AMX, where every product runs on OpenBLAS.
  add_test(NAME test_model_amx COMMAND test_model --amx WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(test_model_amx PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()

# The converter, the converted model's parity and `cmrsearch index --model`
# on a phantom archive, end to end (tests/model_e2e.sh).
if(CMR_PYTHON3 AND TARGET cmrsearch AND TARGET test_model)
  add_test(NAME model_e2e
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/model_e2e.sh ${CMAKE_SOURCE_DIR} ${CMR_PYTHON3}
                   $<TARGET_FILE:cmrsearch> ${CMR_PHANTOM_RUN} $<TARGET_FILE:test_model>)
  set_tests_properties(model_e2e PROPERTIES TIMEOUT 600)
endif()

# cmrsearch train: determinism, kill and resume, option checks, and the
# trained model in use (tests/train_e2e.sh).
if(CMR_PYTHON3 AND TARGET cmrsearch)
  add_test(NAME train_e2e
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/train_e2e.sh $<TARGET_FILE:cmrsearch> ${CMR_PHANTOM_RUN}
                   ${CMR_PYTHON3})
  set_tests_properties(train_e2e PROPERTIES TIMEOUT 600)
endif()
