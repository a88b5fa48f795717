# Unit tests (cmocka) and the archive-level test (generates small archives,
# runs dciodvfy and xmllint, checks truth.json against the files).
add_executable(test_phantom test_phantom.c)
target_link_libraries(test_phantom PRIVATE cmr_phantom_core PkgConfig::CMOCKA)
add_test(NAME test_phantom COMMAND test_phantom WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
set_tests_properties(test_phantom PROPERTIES TIMEOUT 300)

add_test(NAME test_phantom_archive
  COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/test_archive.py
          ${CMR_PHANTOM_RUN} ${CMAKE_CURRENT_BINARY_DIR}/archive-test ${CMAKE_SOURCE_DIR}/schema)
set_tests_properties(test_phantom_archive PROPERTIES TIMEOUT 1200)
