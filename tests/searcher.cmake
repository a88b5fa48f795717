# The searcher (issue 7): fusion, paging, grouping, finding filters, closest
# sentences and the record upgrade against hand-computed values
# (tests/test_searcher.c, with the default model), and search on a phantom
# archive indexed with the default model, end to end (tests/searcher_phantom.sh).
if(TARGET cmr_searcher)
  cmr_add_test(test_searcher SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_searcher.c LIBS cmr_searcher TIMEOUT 300)
  target_compile_definitions(test_searcher PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  target_include_directories(test_searcher PRIVATE ${LMDB_INCLUDE_DIR})
endif()
if(CMR_PYTHON3 AND TARGET cmrsearch AND TARGET cmr-phantom)
  add_test(NAME searcher_phantom
           COMMAND bash ${CMAKE_CURRENT_SOURCE_DIR}/searcher_phantom.sh $<TARGET_FILE:cmrsearch>
                   $<TARGET_FILE:cmr-phantom> ${CMR_PYTHON3} ${CMAKE_SOURCE_DIR}/models/default)
  set_tests_properties(searcher_phantom PROPERTIES TIMEOUT 600)
endif()
# The measurements of docs/searching.md (not a test): fusion weights, finding
# AUCs and latency on an indexed phantom store.
if(TARGET cmr_cli)
  add_executable(search-bench ${CMAKE_CURRENT_SOURCE_DIR}/search_bench.c)
  target_link_libraries(search-bench PRIVATE cmr_cli cmr_searcher)
endif()
