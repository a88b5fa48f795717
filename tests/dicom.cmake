# test_dicom: the DCMTK-backed reader against the real files in
# ../shared/data/real (located from the source tree) and synthetic ones.
cmr_add_test(test_dicom SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_dicom.c LIBS cmr_indexer TIMEOUT 300)
if(TARGET test_dicom)
  target_compile_definitions(test_dicom PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()

# fuzz_dicom: libFuzzer over indexer/dicom.cpp, clang only.  dicom.cpp is
# compiled again here with coverage instrumentation (fuzzer-no-link) so that
# libFuzzer sees its branches; DCMTK itself stays uninstrumented.  The ctest
# run is short and bounded; new inputs go to the build tree, never to the
# seed corpus in the source tree.
set(CMR_FUZZ_DICOM_SRC ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_dicom.c)
if(CMAKE_C_COMPILER_ID STREQUAL "Clang" AND CMAKE_CXX_COMPILER_ID STREQUAL "Clang" AND EXISTS ${CMR_FUZZ_DICOM_SRC})
  find_package(DCMTK REQUIRED CONFIG)
  set(CMR_FUZZ_FLAGS -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
  add_library(cmr_dicom_fuzz_obj OBJECT ${CMAKE_SOURCE_DIR}/indexer/dicom.cpp ${CMAKE_SOURCE_DIR}/indexer/jpegls_decode.c)
  target_include_directories(cmr_dicom_fuzz_obj PRIVATE ${CMAKE_SOURCE_DIR}/indexer)
  target_link_libraries(cmr_dicom_fuzz_obj PRIVATE cmr_common DCMTK::dcmdata DCMTK::dcmsr)
  target_compile_options(cmr_dicom_fuzz_obj PRIVATE ${CMR_FUZZ_FLAGS})
  # Keeps a tiny file from asking the decoders for gigabytes (libFuzzer's malloc limit).
  # DCMTK itself reserves (without touching) the declared length of an element it must
  # load at once, e.g. in a deflated stream: hence -malloc_limit_mb=4096 below.
  target_compile_definitions(cmr_dicom_fuzz_obj PRIVATE CMR_DICOM_MAX_SAMPLES=16777216ull)

  add_executable(fuzz_dicom ${CMR_FUZZ_DICOM_SRC} $<TARGET_OBJECTS:cmr_dicom_fuzz_obj>)
  target_include_directories(fuzz_dicom PRIVATE ${CMAKE_SOURCE_DIR}/indexer)
  target_compile_options(fuzz_dicom PRIVATE -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined)
  target_link_options(fuzz_dicom PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_dicom PRIVATE cmr_common DCMTK::dcmdata DCMTK::dcmimgle DCMTK::dcmjpeg DCMTK::dcmjpls
                        DCMTK::dcmsr DCMTK::ofstd Threads::Threads)

  set(CMR_FUZZ_DICOM_NEW ${CMAKE_CURRENT_BINARY_DIR}/fuzz_dicom_corpus)
  file(MAKE_DIRECTORY ${CMR_FUZZ_DICOM_NEW})
  add_test(NAME fuzz_dicom_smoke
           COMMAND fuzz_dicom -runs=2000 -max_len=65536 -seed=1 -rss_limit_mb=2048 -malloc_limit_mb=4096 -max_total_time=40
                   ${CMR_FUZZ_DICOM_NEW} ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/dicom)
  # libFuzzer checks max_total_time between inputs, after reading the corpus:
  # on a loaded 2-core machine the run took 57 s of a 60 s limit (CI) and
  # once exceeded it.  The margin is for that, not for more fuzzing.
  set_tests_properties(fuzz_dicom_smoke PROPERTIES TIMEOUT 120)
endif()

# test_jpegls: the indexer's own JPEG-LS decoder against DCMTK's, on streams
# made by DCMTK's dcmcjpls, and on damaged streams.
cmr_add_test(test_jpegls SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_jpegls.c LIBS cmr_indexer TIMEOUT 300)
