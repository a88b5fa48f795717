# test_compact_video: the compact model's video tower (model/compact_video.c),
# forward and backward, against PyTorch autograd (fixture
# tests/fixtures/compact_video/, written by tests/reference/compact_video_torch.py).
# CMR_BENCH_COMPACT_VIDEO=32 ./test_compact_video times the default configuration.
cmr_add_test(test_compact_video SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_compact_video.c
             LIBS cmr_model PkgConfig::JANSSON OpenMP::OpenMP_C TIMEOUT 300)
if(TARGET test_compact_video)
  target_compile_definitions(test_compact_video PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()

# TEMPORARY, for the lead to move into model/CMakeLists.txt (next to ops.c's
# line, which has the same needs): compact_video.c's product kernel is
# written with vector extensions and clones like ops.c's attention and needs
# the same options: -ffp-contract=fast (ISO C mode turns FMA contraction off:
# half the kernel's speed), -O3, and -Wno-psabi (64-byte vectors in static
# helpers).
set_source_files_properties(${CMAKE_SOURCE_DIR}/model/compact_video.c DIRECTORY ${CMAKE_SOURCE_DIR}/model
                            PROPERTIES COMPILE_OPTIONS "-O3;-ffp-contract=fast;-Wno-psabi")
