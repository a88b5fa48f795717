# test_compact_video: the compact model's video tower (model/compact_video.c),
# forward and backward, against PyTorch autograd (fixture
# tests/fixtures/compact_video/, written by tests/reference/compact_video_torch.py).
# CMR_BENCH_COMPACT_VIDEO=32 ./test_compact_video times the default configuration.
cmr_add_test(test_compact_video SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_compact_video.c
             LIBS cmr_model PkgConfig::JANSSON OpenMP::OpenMP_C TIMEOUT 300)
if(TARGET test_compact_video)
  target_compile_definitions(test_compact_video PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()

