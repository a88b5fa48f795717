# cmrsearch eval: metrics against numpy's values (tests/fixtures/eval, written
# by tests/reference/eval_reference.py) and the command end to end.
if(TARGET cmr_cli)
  cmr_add_test(test_eval SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_eval.c LIBS cmr_cli TIMEOUT 300)
  target_compile_definitions(test_eval PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
