/* The model handle shared by model.c (common part, dispatch) and the
 * architectures (model_cmrclip.c, model_compact.c).  Internal to model/. */
#ifndef CMR_MODEL_IMPL_H
#define CMR_MODEL_IMPL_H

#include <jansson.h>

#include "cmr_sha256.h"
#include "compact.h"
#include "model_internal.h"
#include "tokenizer.h"

typedef enum cmr_arch { CMR_ARCH_CMRCLIP, CMR_ARCH_COMPACT, CMR_ARCH_ENSEMBLE } cmr_arch;

#define CMR_ENSEMBLE_MAX 8
#define CMR_ENSEMBLE_NAME_MAX 64

struct cmr_model {
    char *dir;
    char name[128];
    char hash[2 * CMR_SHA256_BYTES + 1];
    cmr_arch arch;
    cmr_model_input input;
    unsigned embed_dim;
    cmr_st_file *weights;
    cmr_model_probe_fn probe;
    void *probe_ctx;
    /* cmrclip */
    cmr_vit video;
    cmr_bert text;
    const float *vid_proj_w, *vid_proj_b, *txt_proj_w, *txt_proj_b;
    cmr_tokenizer *tokenizer;
    size_t max_tokens;
    cmr_arena ws;
    float *hidden; /* max(video dim, text hidden) floats */
    int32_t *ids;
    /* compact */
    cmr_compact_config compact;
    float *params; /* the flat parameter vector (cmr_compact_layout_of) */
    cmr_compact_video_cache *video_scratch; /* the study encoder's buffers, kept between calls */
    /* ensemble */
    cmr_model **members;
    char **member_names;
    size_t n_members;
    float *member_out; /* one member's embedding */
};

/* model.json helpers: a required integer member within [lo, hi]; a path
 * beside the model (malloc'ed). */
int cmr_model_json_int(const char *path, json_t *obj, const char *section, const char *key, int lo, int hi,
                       int *out);
char *cmr_model_path(const cmr_model *m, json_t *root, const char *key, const char *dflt);
/* The "input" section: recipe, optional mean/std (one per channel). */
int cmr_model_parse_input(const char *path, json_t *o, unsigned frames, unsigned channels, unsigned size,
                          cmr_model_input *in);

int cmr_model_open_cmrclip(cmr_model *m, json_t *root, const char *config);
void cmr_model_close_cmrclip(cmr_model *m);
int cmr_model_study_cmrclip(cmr_model *m, const float *video, unsigned frames, float *embedding);
int cmr_model_tokens_cmrclip(cmr_model *m, const int32_t *ids, size_t n, float *embedding);
int cmr_model_text_cmrclip(cmr_model *m, const char *text, float *embedding);

/* The compact configuration from model.json's sections. */
int cmr_compact_parse_config(const char *path, json_t *root, cmr_compact_config *c);
/* Write a compact model directory (model.json, weights.safetensors: F32,
 * or F16 when f16); training (may be NULL) is stored as model.json's
 * "training" record. */
int cmr_compact_save(const char *dir, const char *name, const cmr_compact_config *c, const cmr_model_input *input,
                     const float *params, int f16, json_t *training);
/* dir/model.json from doc, atomically (a temporary file, fsync, rename);
 * dir is created if absent. */
int cmr_model_write_json(const char *dir, json_t *doc);

int cmr_model_open_compact(cmr_model *m, json_t *root, const char *config);
void cmr_model_close_compact(cmr_model *m);
int cmr_model_study_compact(cmr_model *m, const float *video, unsigned frames, float *embedding);
int cmr_model_text_compact(cmr_model *m, const char *text, float *embedding);

int cmr_model_open_ensemble(cmr_model *m, json_t *root, const char *config);
void cmr_model_close_ensemble(cmr_model *m);
int cmr_model_study_ensemble(cmr_model *m, const float *video, unsigned frames, float *embedding);
int cmr_model_text_ensemble(cmr_model *m, const char *text, float *embedding);

#endif
