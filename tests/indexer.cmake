cmr_add_test(test_scan SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_scan.c LIBS cmr_indexer TIMEOUT 300)
target_compile_definitions(test_scan PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")

if(TARGET cmr-phantom AND TARGET classify-eval)
  add_test(NAME classify_phantom
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/classify_phantom.sh ${CMR_PHANTOM_RUN} $<TARGET_FILE:classify-eval>)
  set_tests_properties(classify_phantom PROPERTIES TIMEOUT 600)
endif()
