cmr_add_test(test_store SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store.c LIBS cmr_store TIMEOUT 300)
target_include_directories(test_store PRIVATE ${LMDB_INCLUDE_DIR})
cmr_add_test(test_store_crash SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_store_crash.c LIBS cmr_store TIMEOUT 600)
