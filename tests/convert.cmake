# scripts/convert_cmrclip.py (checkpoint -> model directory): pure-stdlib
# Python test over the committed torch.save fixture
# (fixtures/model/small/tiny_cmrclip.bin) and checkpoints it writes itself.
# The Debian interpreter, as for the phantom's archive test; no PyTorch needed.
find_program(CMR_PYTHON3 python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(CMR_PYTHON3)
  add_test(NAME test_convert
    COMMAND ${CMR_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/test_convert.py
    WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(test_convert PROPERTIES TIMEOUT 300 LABELS python)
else()
  message(STATUS "tests/convert.cmake: /usr/bin/python3 not found, test_convert not registered")
endif()
