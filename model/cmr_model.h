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
    /* The square each frame is resized to before the centre crop of `size`;
     * 0: the recipe's proportion (CMR-CLIP: 256 for 224, the crop keeping 7/8
     * of the field of view).  Larger crops closer around the heart. */
    unsigned resize;
    /* "cine+lge": the last lge_frames frames are the LGE views', sampled
     * apart from the cines (docs/model-input.md); 0 for "cmrclip". */
    unsigned lge_frames;
    float mean[3], std[3];
} cmr_model_input;

/* Picks OpenBLAS's kernels for this CPU where OpenBLAS fell back to generic
 * ones (model/ops.c says when and why).  Call it before any other thread
 * exists and before any BLAS work: cmrsearch does at start; cmr_model_open
 * does too, for programs that do not.  Idempotent.  cmr_blas_core() names
 * the kernels in use ("unknown" when the BLAS is not OpenBLAS). */
void cmr_blas_init(void);
const char *cmr_blas_core(void);

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

/* ---- ensembles ("architecture": "ensemble", docs/model-format.md) --------------------
 *
 * An ensemble lists member model directories beside its model.json; it
 * embeds with every member and concatenates the members' unit vectors, each
 * scaled by 1/sqrt(n), so that a cosine is the mean of the members' cosines.
 * Its identity (cmr_model_hash) is the SHA-256 of the members' identities.
 * The members share one input spec; encode_tokens is refused. */

/* 0 for a model that is not an ensemble. */
size_t cmr_model_member_count(const cmr_model *m);
/* Member i's directory name, relative to the ensemble's directory; owned by
 * the model.  NULL when i is out of range. */
const char *cmr_model_member_name(const cmr_model *m, size_t i);
/* Write dir/model.json of an ensemble of the n member directories already
 * in dir (plain names, no '/'), atomically. */
int cmr_model_write_ensemble(const char *dir, const char *name, const char *const *members, size_t n);

/* ---- training (the compact architecture, docs/compact-model.md) ---------------------
 *
 * cmr_train aligns a compact model's two towers on (study, impression)
 * pairs by symmetric InfoNCE, from scratch or from an existing compact model
 * (fine-tuning), and writes the best model (by validation retrieval) as a
 * model directory.  The caller supplies each study's frames as 8-bit grey
 * images, prepared as the model's input recipe says but with room for
 * augmentation: CMR_TRAIN_CANDIDATES frames per segment (the middle one is
 * the frame inference uses; training picks one at random) and
 * CMR_TRAIN_MARGIN more pixels per side than the model's size (random crops;
 * the centre crop is inference's). */
#define CMR_TRAIN_CANDIDATES 3
#define CMR_TRAIN_MARGIN 8

typedef struct cmr_train_set {
    size_t n;
    const uint8_t *const *videos; /* n x [frames * CANDIDATES][size + MARGIN][size + MARGIN] */
    const char *const *texts;     /* n impressions (UTF-8) */
    const uint64_t *groups;       /* n patient groups: a patient's studies are never split */
} cmr_train_set;

typedef struct cmr_train_progress {
    unsigned epoch, epochs;       /* 1-based */
    size_t step, steps;           /* within the epoch */
    double loss;                  /* running mean over the epoch */
    int validated;                /* the fields below are set (end of an epoch) */
    double val_loss, val_r1, val_r5, val_r10; /* mean of image->text and text->image */
    double seconds;               /* since the start */
} cmr_train_progress;

typedef struct cmr_train_options {
    const char *name;             /* the model's name ("cmrsearch-compact") */
    const char *init;             /* a compact model directory to fine-tune; NULL: from scratch */
    unsigned frames;              /* a new model's input frames (multiple of 4); 0: the default (16) */
    unsigned lge_frames;          /* a new model's LGE share (recipe "cine+lge"); 0: the CMR-CLIP
                                     recipe (the default) */
    unsigned resize;              /* a new model's input.resize (>= size); 0: the default (1.5 size,
                                     the crop keeping two thirds of the field of view) */
    const char *lexicon;          /* a new model's text lexicon, "cmr-v1" or "cmr-v2"; NULL: the
                                     default ("cmr-v1") */
    unsigned epochs;              /* maximum (default 30) */
    unsigned batch;               /* pairs per step (default 32) */
    float lr;                     /* peak learning rate (default 2e-3; 2e-4 when fine-tuning) */
    float weight_decay;           /* AdamW, on weights only (default 1e-4) */
    float warmup_epochs;          /* linear warm-up, then cosine decay (default 1) */
    float temperature;            /* initial (default 0.05) */
    int learn_temperature;        /* 0: fixed as in CMR-CLIP */
    float val_fraction;           /* of patient groups held out (default 0.1) */
    unsigned patience;            /* epochs without a better validation R@10 before stopping (default 5) */
    float sentence_keep;          /* text augmentation: each sentence of an impression kept with this
                                     probability per step, at least one (default 1: whole impressions) */
    int share_texts;              /* pairs of a batch showing the same text are each other's partners
                                     (cmr_clip_loss_grouped); 0: the diagonal alone (default) */
    uint64_t seed;
    int f16;                      /* write the weights as F16: half the size; the embeddings move by
                                     about 1e-3 (0: F32, the default) */
    const char *checkpoint;       /* resumable state file; NULL: none */
    void (*progress)(void *user, const cmr_train_progress *p);
    void *progress_user;
} cmr_train_options;

typedef struct cmr_train_result {
    unsigned epochs_run, best_epoch;
    size_t n_train, n_val;
    double best_val_r10, final_loss, seconds;
    int resumed;                  /* started from a checkpoint */
} cmr_train_result;

/* Fill the defaults above (NULL name becomes "cmrsearch-compact"). */
void cmr_train_options_init(cmr_train_options *o);
/* The input the caller prepares frames for: the model's inference spec
 * (init's, or the default compact configuration's). */
int cmr_train_input(const cmr_train_options *o, cmr_model_input *input);
/* Train and write the model directory out_dir (created if absent). */
int cmr_train(const cmr_train_set *set, const cmr_train_options *o, const char *out_dir, cmr_train_result *result);

#ifdef __cplusplus
}
#endif

#endif
