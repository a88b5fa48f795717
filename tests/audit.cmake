# cmrsearch audit: unit tests on constructed stores (test_audit.c) and the
# phantom end to end (audit_e2e.sh: planted problems, default model, the
# precision/recall bars of docs/audit.md); scripts/fit_audit_calibration.py
# on reports written by its test (test_fit_calibration.py, numpy).
if(TARGET cmr_cli AND TARGET cmr_searcher)
  cmr_add_test(test_audit SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_audit.c LIBS cmr_cli cmr_searcher TIMEOUT 120)
  target_include_directories(test_audit PRIVATE ${LMDB_INCLUDE_DIR})
  target_link_libraries(test_audit PRIVATE ${LMDB_LIBRARY})
  target_compile_definitions(test_audit PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  if(CMR_PHANTOM_RUN AND TARGET cmrsearch)
    add_test(NAME audit_e2e
             COMMAND sh ${CMAKE_CURRENT_SOURCE_DIR}/audit_e2e.sh ${CMR_PHANTOM_RUN}
                     $<TARGET_FILE:cmrsearch> ${CMAKE_SOURCE_DIR}/models/default ${CMAKE_CURRENT_BINARY_DIR}/audit_e2e)
    set_tests_properties(audit_e2e PROPERTIES TIMEOUT 900)
  endif()
endif()

cmr_add_python_test(test_fit_calibration 120)
