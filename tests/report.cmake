# Reports, manifest and linking (indexer/report.c).
cmr_add_test(test_report SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_report.c LIBS cmr_indexer TIMEOUT 120)
if(TARGET test_report)
  target_compile_definitions(test_report PRIVATE
    CMR_FIXTURES="${CMAKE_CURRENT_SOURCE_DIR}/fixtures/reports"
    CMR_SCHEMA_DIR="${PROJECT_SOURCE_DIR}/schema")
endif()

# libFuzzer target over the report and manifest parsers: clang only.  report.c
# is compiled in directly (not linked from cmr_indexer) so that it carries the
# fuzzer's coverage instrumentation.  ctest runs a short bounded session over
# the committed seeds; new inputs go to the build tree, never to the seeds.
if(CMAKE_C_COMPILER_ID MATCHES "Clang" AND EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_report.c)
  include(CheckCSourceCompiles)
  set(CMAKE_REQUIRED_FLAGS "-fsanitize=fuzzer")
  set(CMAKE_REQUIRED_LINK_OPTIONS "-fsanitize=fuzzer")
  check_c_source_compiles("
    #include <stddef.h>
    #include <stdint.h>
    int LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { (void)d; (void)n; return 0; }"
    CMR_HAVE_LIBFUZZER)
  unset(CMAKE_REQUIRED_FLAGS)
  unset(CMAKE_REQUIRED_LINK_OPTIONS)
endif()

if(CMR_HAVE_LIBFUZZER)
  find_package(LibXml2 REQUIRED)
  file(GLOB CMR_REPORT_SOURCES CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/indexer/report*.c)
  add_executable(fuzz_report
    ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/fuzz_report.c
    ${CMR_REPORT_SOURCES}
    ${PROJECT_SOURCE_DIR}/common/cmr_error.c)
  target_include_directories(fuzz_report PRIVATE
    ${PROJECT_SOURCE_DIR}/indexer ${PROJECT_SOURCE_DIR}/common ${PROJECT_SOURCE_DIR}/store)
  target_compile_options(fuzz_report PRIVATE -fsanitize=fuzzer,address,undefined -fno-omit-frame-pointer
    -fno-sanitize-recover=undefined)
  target_link_options(fuzz_report PRIVATE -fsanitize=fuzzer,address,undefined)
  target_link_libraries(fuzz_report PRIVATE LibXml2::LibXml2 Threads::Threads)

  set(CMR_FUZZ_REPORT_DIR ${CMAKE_CURRENT_BINARY_DIR}/fuzz-report)
  file(MAKE_DIRECTORY ${CMR_FUZZ_REPORT_DIR}/corpus)
  # Tokens that get the fuzzer past the XML and heading checks quickly.
  file(WRITE ${CMR_FUZZ_REPORT_DIR}/report.dict [=[
"<ClinicalDocument xmlns=\"urn:hl7-org:v3\">"
"</ClinicalDocument>"
"<archive xmlns=\"urn:cmrsearch:archive-manifest:1\" version=\"1\">"
"<study>"
"<folder>"
"<report>"
"<studyInstanceUID>"
"<accession>"
"<component>"
"<structuredBody>"
"<nonXMLBody>"
"<section>"
"<title>"
"<text>"
"<paragraph>"
"<list listType=\"ordered\">"
"<item>"
"<table>"
"<tr>"
"<td>"
"<br/>"
"<content revised=\"delete\">"
"<entry>"
"<observation>"
"<value xsi:type=\"CD\" "
"<translation "
"<code code=\"19005-8\" codeSystem=\"2.16.840.1.113883.6.1\"/>"
"<code code=\"55110-1\"/>"
"<code code=\"59776-5\"/>"
"codeSystem=\"2.16.840.1.113883.6.96\""
"displayName="
"negationInd=\"true\""
"<documentationOf><serviceEvent><id root=\"1.2.3\"/>"
"<inFulfillmentOf><order><id extension=\"A1\"/>"
"representation=\"B64\""
"mediaType=\"text/plain\""
"<!ENTITY"
"<!DOCTYPE"
"IMPRESSION:"
"FINAL IMPRESSION:"
"CONCLUSION"
"SUMMARY:"
"FINDINGS:"
"TECHNIQUE:"
"Study Instance UID: "
"Accession Number: "
"Electronically signed by"
"\xff\xfe"
"\xef\xbb\xbf"
]=])
  add_test(NAME fuzz_report_short
    COMMAND fuzz_report -runs=5000 -max_total_time=30 -seed=1 -timeout=10 -rss_limit_mb=2048
      -dict=${CMR_FUZZ_REPORT_DIR}/report.dict -artifact_prefix=${CMR_FUZZ_REPORT_DIR}/
      ${CMR_FUZZ_REPORT_DIR}/corpus ${CMAKE_CURRENT_SOURCE_DIR}/fuzz/corpus/report
    WORKING_DIRECTORY ${CMR_FUZZ_REPORT_DIR})
  set_tests_properties(fuzz_report_short PROPERTIES TIMEOUT 120)
endif()
