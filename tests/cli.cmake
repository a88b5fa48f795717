# The cmrsearch command line: parsers and whole commands run in-process.
if(TARGET cmr_cli)
  cmr_add_test(test_cli SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_cli.c LIBS cmr_cli TIMEOUT 300)
endif()
