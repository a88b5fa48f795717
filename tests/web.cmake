# The web page end to end (tests/web_e2e.py): a phantom archive with planted
# duplicates, indexed with the default model, served by `cmrsearch serve` and
# driven in headless Chromium over the DevTools protocol (python3-websocket).
# Exit 77 (skipped) only when no chromium is installed; scripts/setup.sh
# installs it, so CI runs it.
if(TARGET cmrsearch AND TARGET cmr-phantom)
  add_test(NAME web_e2e
    COMMAND /usr/bin/python3 ${CMAKE_CURRENT_SOURCE_DIR}/web_e2e.py
            --cmrsearch $<TARGET_FILE:cmrsearch> --phantom ${CMR_PHANTOM_RUN}
            --model ${CMAKE_SOURCE_DIR}/models/default
    WORKING_DIRECTORY ${CMAKE_CURRENT_BINARY_DIR})
  set_tests_properties(web_e2e PROPERTIES TIMEOUT 600 SKIP_RETURN_CODE 77 LABELS python)
endif()
