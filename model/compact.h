/* The compact model (docs/compact-model.md): forward for inference and for
 * training (with saved activations), backward for every layer, the
 * contrastive loss and AdamW.  Internal to model/; cmr_model.h wraps the
 * inference side, model/train.c the training side.
 *
 * Parameters live in one flat float array (and gradients in one of the same
 * layout), so that the optimiser, checkpoints and gradient checks treat them
 * as one vector; cmr_compact_layout gives each named tensor's offset. */
#ifndef CMR_COMPACT_H
#define CMR_COMPACT_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"

#define CMR_COMPACT_CONVS 5
#define CMR_COMPACT_MAX_TENSORS 24

typedef struct cmr_compact_config {
    int frames, size, channels;               /* 16, 64, 1 */
    int conv_channels[CMR_COMPACT_CONVS];     /* 16, 32, 64, 128, 128 */
    int conv_strides[CMR_COMPACT_CONVS];      /* 2, 2, 2, 2, 1 */
    int spatial_max;                          /* 1: per frame, the max over positions beside the mean */
    int video_hidden;                         /* 256 */
    int text_buckets, text_dim, text_hidden;  /* 16384, 128, 256 */
    int max_n, max_words;                     /* 3, 512 */
    int lexicon;                              /* 1: the clinical lexicon "cmr-v1" before n-grams; 2: "cmr-v2", with "non" negating the next word */
    int embed_dim;                            /* 128 */
} cmr_compact_config;

void cmr_compact_config_default(cmr_compact_config *c);
int cmr_compact_config_check(const cmr_compact_config *c); /* CMR_EFORMAT naming the bad field */
/* The lexicons by name, as model.json and train --lexicon write them:
 * "cmr-v1" is 1, "cmr-v2" is 2; -1 for any other name.  The name of 1 or
 * 2 (a static string), NULL for 0 (words hashed as written). */
int cmr_compact_lexicon_parse(const char *name);
const char *cmr_compact_lexicon_name(int lexicon);

/* Named tensors in the flat parameter vector, in a fixed order. */
typedef struct cmr_compact_tensor {
    char name[32];          /* "video.conv1.weight", ... "logit_scale" */
    int ndim;
    int64_t shape[4];
    size_t offset, count;   /* floats */
} cmr_compact_tensor;

typedef struct cmr_compact_layout {
    cmr_compact_tensor tensors[CMR_COMPACT_MAX_TENSORS];
    size_t n_tensors, total; /* total floats */
} cmr_compact_layout;

void cmr_compact_layout_of(const cmr_compact_config *c, cmr_compact_layout *out);
const cmr_compact_tensor *cmr_compact_find(const cmr_compact_layout *l, const char *name);

/* ---- text features ---------------------------------------------------------------
 * The n-gram buckets of a text (steps 1-3 of the text tower): at most
 * cap ids written, *n gets the number of n-grams (which may exceed cap:
 * the caller retries with a larger buffer).  Pure function of the bytes. */
int cmr_compact_ngrams(const cmr_compact_config *c, const char *text, size_t len, uint32_t *ids, size_t cap,
                       size_t *n);

/* ---- forward and backward ----------------------------------------------------------
 * Batches: video [B][frames][channels][size][size] floats (the indexer's
 * normalised tensor); texts as n-gram id lists (offsets[B + 1] into ids).
 * Outputs: embeddings [B][embed_dim] before L2 normalisation.
 *
 * A cache holds what backward needs.  It is allocated by the forward call
 * for the batch size given and grown when a later batch is larger; the
 * _cache_free functions release it.  Neither tower keeps state elsewhere:
 * any number of threads may run forwards with their own caches.
 * Backward ADDS into grads (flat, the layout's order); call after the
 * forward whose cache it reads, with d_emb = dLoss/d(embedding). */
typedef struct cmr_compact_video_cache cmr_compact_video_cache;
typedef struct cmr_compact_text_cache cmr_compact_text_cache;
void cmr_compact_video_cache_free(cmr_compact_video_cache *cache);
void cmr_compact_text_cache_free(cmr_compact_text_cache *cache);

/* cache: NULL for inference (no activations kept); else *cache is created
 * on first use (NULL) and reused. */
int cmr_compact_video_forward(const cmr_compact_config *c, const float *params, const float *video, int batch,
                              float *emb, cmr_compact_video_cache **cache);
/* Inference with a scratch kept between calls (*scratch NULL at first;
 * freed by cmr_compact_video_cache_free): its buffers, and the permuted
 * weights while params and the configuration stay the same, are reused
 * instead of allocated, faulted in and recomputed per call.  params must
 * not change in place between two calls with the same scratch.  Not for
 * backward. */
int cmr_compact_video_infer(const cmr_compact_config *c, const float *params, const float *video, int batch,
                            float *emb, cmr_compact_video_cache **scratch);
int cmr_compact_video_backward(const cmr_compact_config *c, const float *params, cmr_compact_video_cache *cache,
                               const float *d_emb, float *grads);

int cmr_compact_text_forward(const cmr_compact_config *c, const float *params, const uint32_t *ids,
                             const size_t *offsets, int batch, float *emb, cmr_compact_text_cache **cache);
int cmr_compact_text_backward(const cmr_compact_config *c, const float *params, cmr_compact_text_cache *cache,
                              const float *d_emb, float *grads);

/* Test hook: a stage of the last training forward kept in the cache
 * ("video.conv1".."video.conv5" channels-last, "video.g", "video.pooled",
 * "video.z"), rows x cols floats; NULL for an unknown stage. */
const float *cmr_compact_video_probe(const cmr_compact_video_cache *cache, const char *stage, size_t *rows,
                                     size_t *cols);

/* Symmetric InfoNCE (docs/compact-model.md, "Loss") over a batch of B
 * pairs: img, txt [B][E] before normalisation.  Returns the loss and, when
 * the pointers are non-NULL, dLoss/d(img), dLoss/d(txt) and dLoss/d(logit_scale). */
double cmr_clip_loss(const float *img, const float *txt, int batch, int dim, float logit_scale, float *d_img,
                     float *d_txt, float *d_logit_scale);
/* The same where some pairs share their text: group[i] names pair i's text
 * (equal values, equal texts).  A text shared by several pairs is the
 * partner of each of their images, so each row's and column's target is
 * spread evenly over its group instead of pushing the pairs' images apart
 * (a sampled sentence such as "No late gadolinium enhancement." is often
 * shared in a batch).  NULL group, or all distinct: cmr_clip_loss, to the
 * last bit. */
double cmr_clip_loss_grouped(const float *img, const float *txt, int batch, int dim, float logit_scale,
                             const uint32_t *group, float *d_img, float *d_txt, float *d_logit_scale);

/* One AdamW step over n parameters (PyTorch's torch.optim.AdamW semantics:
 * decoupled weight decay p -= lr*wd*p, bias-corrected moments).  step is
 * the 1-based step number after this update.  decay_mask: per-parameter
 * 0/1 (biases, norms and embeddings are usually not decayed), NULL = all. */
typedef struct cmr_adamw {
    float lr, beta1, beta2, eps, weight_decay;
} cmr_adamw;
void cmr_adamw_step(const cmr_adamw *opt, long step, float *params, const float *grads, float *m, float *v,
                    const uint8_t *decay_mask, size_t n);

#endif
