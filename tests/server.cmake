# cmrsearch serve: the HTTP API in-process over loopback sockets, against a
# phantom archive indexed with the default model plus synthetic cases.
if(TARGET cmr_cli AND TARGET cmr_searcher AND TARGET cmr-phantom)
  cmr_add_test(test_server SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_server.c ${CMAKE_CURRENT_SOURCE_DIR}/test_server_upload.c
               LIBS cmr_cli cmr_searcher PkgConfig::LIBARCHIVE TIMEOUT 600)
  target_compile_definitions(test_server PRIVATE CMR_PHANTOM="${CMR_PHANTOM_RUN}"
                             CMR_MODEL_DIR="${CMAKE_SOURCE_DIR}/models/default" CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
  add_dependencies(test_server cmr-phantom)
endif()
