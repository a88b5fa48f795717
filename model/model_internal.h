/* Internals of the model module: safetensors files, kernels, the towers.
 * Not a public interface: cli/ and indexer/ use cmr_model.h only; the tests
 * of this module include this header to check every stage. */
#ifndef CMR_MODEL_INTERNAL_H
#define CMR_MODEL_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"
#include "cmr_model.h"

/* ---- safetensors ----------------------------------------------------------------
 * The file is memory-mapped read-only.  F32 tensors whose data is 4-byte
 * aligned are used in place; F16/BF16 (and misaligned F32) are widened into
 * memory owned by the file handle, once, at first request. */

typedef enum cmr_dtype { CMR_F32, CMR_F16, CMR_BF16, CMR_I64, CMR_I32, CMR_DTYPE_OTHER } cmr_dtype;

#define CMR_ST_MAX_DIMS 6

typedef struct cmr_st_tensor {
    char *name;
    cmr_dtype dtype;
    char dtype_name[8];
    int ndim;
    int64_t shape[CMR_ST_MAX_DIMS];
    size_t n_elems;
    const uint8_t *data; /* into the mapping */
    size_t n_bytes;
    float *widened;      /* owned, F32 copy when data cannot be used in place */
} cmr_st_tensor;

typedef struct cmr_st_file {
    char *path;
    const uint8_t *map;
    size_t map_len;
    cmr_st_tensor *tensors; /* sorted by name */
    size_t n_tensors;
    char *metadata_json;    /* the "__metadata__" object as JSON text, or NULL */
} cmr_st_file;

int cmr_st_open(const char *path, cmr_st_file **out);
void cmr_st_close(cmr_st_file *f);
const cmr_st_tensor *cmr_st_find(const cmr_st_file *f, const char *name);
/* The tensor as float32, checked against the expected shape (ndim values;
 * a negative expected dimension accepts any size).  Fails naming the file,
 * the tensor and what differs. */
int cmr_st_f32(cmr_st_file *f, const char *name, int ndim, const int64_t *shape, const float **out);
/* Write tensors (in the given order) and optional string metadata to path
 * atomically (temporary file, fsync, rename): F32, or F16 when f16 (IEEE
 * binary16, rounded to nearest even; beyond its range, infinity). */
typedef struct cmr_st_entry {
    const char *name;
    int ndim;
    int64_t shape[CMR_ST_MAX_DIMS];
    const float *data;
    int f16;
} cmr_st_entry;
uint16_t cmr_float_to_half(float f);
struct json_t;
int cmr_st_write(const char *path, const cmr_st_entry *entries, size_t n, struct json_t *metadata);

/* cmr_st_f32 of prefix + name. */
int cmr_st_bind(cmr_st_file *f, const char *prefix, const char *name, int ndim, const int64_t *shape,
                const float **out);
/* Binding helpers for the towers: expect `int rc`, `f`, `prefix` and a
 * `fail:` label in scope. */
#define CMR_BIND1(name, d0, dst)                                                                                       \
    do {                                                                                                               \
        int64_t s_[1] = {(d0)};                                                                                        \
        if ((rc = cmr_st_bind(f, prefix, (name), 1, s_, (dst))) < 0)                                                   \
            goto fail;                                                                                                 \
    } while (0)
#define CMR_BIND2(name, d0, d1, dst)                                                                                   \
    do {                                                                                                               \
        int64_t s_[2] = {(d0), (d1)};                                                                                  \
        if ((rc = cmr_st_bind(f, prefix, (name), 2, s_, (dst))) < 0)                                                   \
            goto fail;                                                                                                 \
    } while (0)
/* Metadata string by key, malloc'ed (caller frees); NULL when absent. */
char *cmr_st_metadata(const cmr_st_file *f, const char *key);

/* ---- kernels ------------------------------------------------------------------- */

/* OpenBLAS single-threaded, once per process: the kernels split work across
 * OpenMP threads themselves (see linear() in ops.c).  Called by every entry
 * point; affects every OpenBLAS user in the process. */
void cmr_model_threads_init(void);

/* y[n][out] = x[n][in] · w[out][in]^T + b  (b may be NULL).  The AMX bf16x3
 * kernel where it is ready and pays (model/gemm_amx.c, docs/gemm.md), else
 * OpenBLAS sgemm. */
void cmr_linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y);
/* y = x + (the same with beta = 1): y[n][out] += x · w^T + b */
void cmr_linear_acc(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y);
void cmr_layernorm(const float *x, size_t n, size_t d, const float *w, const float *b, float eps, float *y);
void cmr_gelu(float *x, size_t n); /* exact: 0.5 x (1 + erf(x / sqrt 2)) */
void cmr_relu(float *x, size_t n);
void cmr_add(float *y, const float *x, size_t n); /* y += x */
void cmr_l2_normalize(float *x, size_t n);
/* In place, one row of n scores: softmax(scale * s). */
void cmr_softmax_scaled(float *s, size_t n, float scale);

/* Attention of nq queries over nk keys for one head: q [nq][stride],
 * k, v [nk][stride] (a head is dh consecutive floats at each row's start),
 * out [nq][out_stride]; scratch holds cmr_attend_scratch(nq, nk, dh) floats.  Scores are scaled
 * by 1/sqrt(dh).  Own kernel rather than sgemm: the matrices are small
 * (the space-time tower runs ~37,000 of them per block) and the calls run
 * in parallel loops that must not start OpenBLAS's own threads. */
size_t cmr_attend_scratch(size_t nq, size_t nk, size_t dh);
void cmr_attend(const float *q, size_t q_stride, size_t nq, const float *k, const float *v, size_t kv_stride,
                size_t nk, size_t dh, float *out, size_t out_stride, float *scratch);

/* ---- probes ---------------------------------------------------------------------
 * A test hook: called with each stage's output ("video.tokens",
 * "video.block0.time", "video.block0.out", ..., "text.layer1.out",
 * "text.mean_pooled", "text.embed").  rows x cols floats, row-major. */
typedef void (*cmr_model_probe_fn)(void *ctx, const char *stage, const float *data, size_t rows, size_t cols);
void cmr_model_set_probe(cmr_model *m, cmr_model_probe_fn fn, void *ctx);

/* ---- towers ---------------------------------------------------------------------- */

typedef struct cmr_vit_config {
    int dim, depth, heads, mlp_dim, patch, image_size, channels, num_frames;
    float ln_eps;
} cmr_vit_config;

typedef struct cmr_vit_block {
    const float *norm1_w, *norm1_b, *norm2_w, *norm2_b, *norm3_w, *norm3_b;
    const float *qkv_w, *qkv_b, *proj_w, *proj_b;
    const float *tqkv_w, *tqkv_b, *tproj_w, *tproj_b;
    const float *fc1_w, *fc1_b, *fc2_w, *fc2_b;
} cmr_vit_block;

typedef struct cmr_vit {
    cmr_vit_config cfg;
    const float *patch_w, *patch_b, *cls, *pos, *temporal, *norm_w, *norm_b;
    cmr_vit_block *blocks;
} cmr_vit;

typedef struct cmr_bert_config {
    int vocab_size, hidden, layers, heads, intermediate, max_position, type_vocab;
    float ln_eps;
} cmr_bert_config;

typedef struct cmr_bert_layer {
    const float *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *ao_w, *ao_b, *aln_w, *aln_b;
    const float *i_w, *i_b, *o_w, *o_b, *oln_w, *oln_b;
} cmr_bert_layer;

typedef struct cmr_bert {
    cmr_bert_config cfg;
    const float *word, *position, *token_type, *eln_w, *eln_b;
    cmr_bert_layer *layers;
} cmr_bert;

/* Bind a tower's weights (names with the given prefix, e.g. "video_model.")
 * from a safetensors file, checking every shape.  The tower's pointers stay
 * valid while the file is open; blocks/layers are owned by the tower. */
int cmr_vit_bind(cmr_vit *v, const cmr_vit_config *cfg, cmr_st_file *f, const char *prefix);
void cmr_vit_unbind(cmr_vit *v);
int cmr_bert_bind(cmr_bert *b, const cmr_bert_config *cfg, cmr_st_file *f, const char *prefix);
void cmr_bert_unbind(cmr_bert *b);

/* Forward passes.  The video is [frames][channels][size][size] (frames ≤
 * num_frames); out_cls receives the final-normed CLS token (dim floats).
 * Workspace memory is allocated per call through the arena below. */
typedef struct cmr_arena {
    float *base;
    size_t cap, used; /* floats */
} cmr_arena;
/* Reserve n floats (64-byte aligned); the arena grows only between calls:
 * a forward first measures (base NULL), then runs. */
float *cmr_arena_take(cmr_arena *a, size_t n);
int cmr_arena_reserve(cmr_arena *a, size_t n);
void cmr_arena_release(cmr_arena *a);

/* n: patches per frame (0: from the configuration). */
size_t cmr_vit_workspace(const cmr_vit_config *cfg, int frames, size_t n);
int cmr_vit_forward(const cmr_vit *v, const float *video, int frames, cmr_arena *ws, float *out_cls,
                    cmr_model_probe_fn probe, void *probe_ctx);
/* One block on tokens [1 + frames * n][dim], in place (the tests' entry to
 * a full-size block without a full-size model). */
int cmr_vit_block_forward(const cmr_vit_config *cfg, const cmr_vit_block *block, float *tokens, int frames, size_t n,
                          cmr_arena *ws, cmr_model_probe_fn probe, void *probe_ctx);
/* One layer on hidden states [n][hidden], in place. */
int cmr_bert_layer_forward(const cmr_bert_config *cfg, const cmr_bert_layer *layer, float *x, size_t n,
                           cmr_arena *ws);
size_t cmr_bert_workspace(const cmr_bert_config *cfg, size_t n_tokens);
int cmr_bert_forward(const cmr_bert *b, const int32_t *ids, size_t n, cmr_arena *ws, float *out_mean,
                     cmr_model_probe_fn probe, void *probe_ctx);

#endif
