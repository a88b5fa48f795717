# test_compact_text: the compact model's text tower, contrastive loss and
# AdamW (model/compact_text.c, model/compact_loss.c) against the PyTorch
# reference's fixtures (tests/fixtures/compact_text, written by
# tests/reference/compact_text_torch.py).
cmr_add_test(test_compact_text SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/test_compact_text.c
             LIBS cmr_model PkgConfig::JANSSON TIMEOUT 120)
if(TARGET test_compact_text)
  target_compile_definitions(test_compact_text PRIVATE CMR_SOURCE_DIR="${CMAKE_SOURCE_DIR}")
endif()
