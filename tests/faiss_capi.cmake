cmr_add_test(test_faiss_capi SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_faiss_capi.c LIBS cmr_faiss_c)
