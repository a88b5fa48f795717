/* cmr_model — the encoders: a study and a text into one vector space.
 *
 * A model is a directory holding model.json, weights.safetensors and
 * vocab.txt (docs/model-format.md).  Opening it memory-maps the weights,
 * checks every tensor the architecture needs (name, shape, dtype) and
 * computes the model's identity: its name and the SHA-256 of the weights
 * file, which the store records so that vectors of two models never mix.
 *
 * Embeddings are L2-normalised float vectors of cmr_model_dim() floats.
 *
 * Threads: one cmr_model encodes on one thread at a time (it owns a reusable
 * workspace); it uses OpenBLAS's threads and OpenMP inside each call.  Open
 * the same directory twice for concurrent encoders: the weights are mapped,
 * not copied (F16/BF16 weights are widened per handle).
 *
 * Errors follow common/cmr_error.h: CMR_ENOTFOUND for a missing file,
 * CMR_EFORMAT for a malformed or mismatched file (the message names the file
 * and the tensor), CMR_EINVAL for bad arguments, CMR_ENOMEM. */
#ifndef CMR_MODEL_H
#define CMR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cmr_model cmr_model;

/* What the model consumes: the indexer builds this tensor from a study.
 * recipe names the study → frames procedure ("cmrclip": docs/model-input.md);
 * the tensor is float [frames][channels][size][size], scaled to [0,1] and
 * normalised per channel with mean and std. */
typedef struct cmr_model_input {
    char recipe[32];
    unsigned frames, channels, size;
    float mean[3], std[3];
} cmr_model_input;

/* path: the model directory or its model.json. */
int cmr_model_open(const char *path, cmr_model **out);
void cmr_model_close(cmr_model *m); /* NULL is harmless */

/* Owned by the model, valid until close. */
const char *cmr_model_name(const cmr_model *m);
const char *cmr_model_hash(const cmr_model *m); /* 64 hex digits */
const cmr_model_input *cmr_model_input_spec(const cmr_model *m);
unsigned cmr_model_dim(const cmr_model *m);

/* video: cmr_model_input_spec(m)'s tensor with `frames` ≤ spec frames
 * (fewer frames use the first rows of the temporal embedding).
 * embedding: cmr_model_dim(m) floats, L2-normalised. */
int cmr_model_encode_study(cmr_model *m, const float *video, unsigned frames, float *embedding);

/* UTF-8 text, tokenised by the model's tokenizer and truncated to its
 * maximum length. */
int cmr_model_encode_text(cmr_model *m, const char *text, float *embedding);

/* The same from token ids ([CLS] ... [SEP] included by the caller). */
int cmr_model_encode_tokens(cmr_model *m, const int32_t *ids, size_t n, float *embedding);

#ifdef __cplusplus
}
#endif

#endif
