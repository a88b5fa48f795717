/* The compact default model (architecture "compact", docs/compact-model.md):
 * opening one from model.json + weights, encoding, and writing one (the
 * trainer's output). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "model_impl.h"

static int int_array(const char *path, json_t *o, const char *key, int *out, int n)
{
    json_t *a = json_object_get(o, key);
    if (!json_is_array(a) || json_array_size(a) != (size_t)n)
        return cmr_fail(CMR_EFORMAT, "%s: video.%s must list %d integers", path, key, n);
    for (int i = 0; i < n; i++) {
        json_t *v = json_array_get(a, (size_t)i);
        if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 4096)
            return cmr_fail(CMR_EFORMAT, "%s: video.%s[%d] must be an integer in 1..4096", path, key, i);
        out[i] = (int)json_integer_value(v);
    }
    return 0;
}

int cmr_compact_parse_config(const char *path, json_t *root, cmr_compact_config *c)
{
    json_t *v = json_object_get(root, "video"), *t = json_object_get(root, "text");
    int rc;
    cmr_compact_config_default(c);
    if (!json_is_object(v) || !json_is_object(t))
        return cmr_fail(CMR_EFORMAT, "%s: \"video\" and \"text\" sections are required", path);
    if ((rc = cmr_model_json_int(path, v, "video", "frames", 1, 1 << 10, &c->frames)) < 0 ||
        (rc = cmr_model_json_int(path, v, "video", "size", 1, 1 << 12, &c->size)) < 0 ||
        (rc = cmr_model_json_int(path, v, "video", "channels", 1, 3, &c->channels)) < 0 ||
        (rc = cmr_model_json_int(path, v, "video", "hidden", 1, 1 << 12, &c->video_hidden)) < 0 ||
        (rc = int_array(path, v, "conv_channels", c->conv_channels, CMR_COMPACT_CONVS)) < 0 ||
        (rc = int_array(path, v, "conv_strides", c->conv_strides, CMR_COMPACT_CONVS)) < 0 ||
        (rc = cmr_model_json_int(path, t, "text", "buckets", 1, 1 << 22, &c->text_buckets)) < 0 ||
        (rc = cmr_model_json_int(path, t, "text", "dim", 1, 1 << 12, &c->text_dim)) < 0 ||
        (rc = cmr_model_json_int(path, t, "text", "hidden", 1, 1 << 12, &c->text_hidden)) < 0 ||
        (rc = cmr_model_json_int(path, t, "text", "max_n", 1, 8, &c->max_n)) < 0 ||
        (rc = cmr_model_json_int(path, t, "text", "max_words", 1, 1 << 16, &c->max_words)) < 0 ||
        (rc = cmr_model_json_int(path, root, "model", "embed_dim", 1, 1 << 12, &c->embed_dim)) < 0)
        return rc;
    /* Models from before the spatial max have no key: their frames were pooled by the mean alone. */
    json_t *sp = json_object_get(v, "spatial_pool");
    c->spatial_max = 0;
    if (sp && (!json_is_string(sp) || (strcmp(json_string_value(sp), "mean") &&
                                       strcmp(json_string_value(sp), "mean+max"))))
        return cmr_fail(CMR_EFORMAT, "%s: video.spatial_pool must be \"mean\" or \"mean+max\"", path);
    if (sp)
        c->spatial_max = !strcmp(json_string_value(sp), "mean+max");
    /* Nor the lexicon: their words were hashed as written. */
    json_t *lex = json_object_get(t, "lexicon");
    c->lexicon = 0;
    if (lex && (c->lexicon = cmr_compact_lexicon_parse(json_string_value(lex))) < 0)
        return cmr_fail(CMR_EFORMAT, "%s: text.lexicon must be \"cmr-v1\" or \"cmr-v2\" (the lexicons this build knows)",
                        path);
    if ((rc = cmr_compact_config_check(c)) < 0)
        return cmr_fail_context(rc, "%s: ", path);
    return 0;
}

int cmr_model_open_compact(cmr_model *m, json_t *root, const char *config)
{
    int rc;
    char *wpath = NULL;
    if ((rc = cmr_compact_parse_config(config, root, &m->compact)) < 0 ||
        (rc = cmr_model_parse_input(config, json_object_get(root, "input"), (unsigned)m->compact.frames,
                                    (unsigned)m->compact.channels, (unsigned)m->compact.size, &m->input)) < 0)
        return rc;
    m->embed_dim = (unsigned)m->compact.embed_dim;
    if (!(wpath = cmr_model_path(m, root, "weights", "weights.safetensors")))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    if ((rc = cmr_st_open(wpath, &m->weights)) < 0)
        goto fail;
    cmr_compact_layout layout;
    cmr_compact_layout_of(&m->compact, &layout);
    if (!(m->params = calloc(layout.total, sizeof *m->params))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    /* A private, aligned copy in the trainer's layout: 10 MB, and the same
     * code then serves inference and training. */
    for (size_t i = 0; i < layout.n_tensors; i++) {
        const cmr_compact_tensor *t = &layout.tensors[i];
        const float *data;
        if ((rc = cmr_st_f32(m->weights, t->name, t->ndim, t->shape, &data)) < 0)
            goto fail;
        memcpy(m->params + t->offset, data, t->count * sizeof *data);
    }
    rc = 0;
fail:
    free(wpath);
    return rc;
}

void cmr_model_close_compact(cmr_model *m)
{
    free(m->params);
    cmr_compact_video_cache_free(m->video_scratch);
}

int cmr_model_study_compact(cmr_model *m, const float *video, unsigned frames, float *embedding)
{
    if (frames != (unsigned)m->compact.frames)
        return cmr_fail(CMR_EINVAL, "model %s takes %d frames, %u given", m->name, m->compact.frames, frames);
    int rc = cmr_compact_video_infer(&m->compact, m->params, video, 1, embedding, &m->video_scratch);
    if (rc < 0)
        return rc;
    if (m->probe)
        m->probe(m->probe_ctx, "video.embed", embedding, 1, m->embed_dim);
    cmr_l2_normalize(embedding, m->embed_dim);
    return 0;
}

int cmr_model_text_compact(cmr_model *m, const char *text, float *embedding)
{
    /* Most impressions fit on the stack; long reports take the heap. */
    uint32_t local[2048], *ids = local;
    size_t len = strlen(text), n = 0;
    int rc = cmr_compact_ngrams(&m->compact, text, len, ids, sizeof local / sizeof *local, &n);
    if (rc == 0 && n > sizeof local / sizeof *local) {
        if (!(ids = malloc(n * sizeof *ids)))
            return cmr_fail(CMR_ENOMEM, "out of memory");
        rc = cmr_compact_ngrams(&m->compact, text, len, ids, n, &n);
    }
    size_t offsets[2] = {0, n};
    if (rc == 0)
        rc = cmr_compact_text_forward(&m->compact, m->params, ids, offsets, 1, embedding, NULL);
    if (ids != local)
        free(ids);
    if (rc < 0)
        return rc;
    if (m->probe)
        m->probe(m->probe_ctx, "text.embed", embedding, 1, m->embed_dim);
    cmr_l2_normalize(embedding, m->embed_dim);
    return 0;
}

/* ---- writing ----------------------------------------------------------------------- */

static json_t *int_list(const int *v, int n)
{
    json_t *a = json_array();
    for (int i = 0; i < n; i++)
        json_array_append_new(a, json_integer(v[i]));
    return a;
}

int cmr_compact_save(const char *dir, const char *name, const cmr_compact_config *c, const cmr_model_input *input,
                     const float *params, int f16, json_t *training)
{
    char path[4096];
    int rc;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cmr_fail(CMR_EIO, "%s: %s", dir, strerror(errno));
    cmr_compact_layout layout;
    cmr_compact_layout_of(c, &layout);
    cmr_st_entry entries[CMR_COMPACT_MAX_TENSORS];
    for (size_t i = 0; i < layout.n_tensors; i++) {
        const cmr_compact_tensor *t = &layout.tensors[i];
        entries[i] = (cmr_st_entry){.name = t->name, .ndim = t->ndim, .data = params + t->offset, .f16 = f16};
        memcpy(entries[i].shape, t->shape, sizeof t->shape);
    }
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    if ((rc = cmr_st_write(path, entries, layout.n_tensors, NULL)) < 0)
        return rc;
    json_t *mean = json_array(), *std = json_array();
    for (unsigned i = 0; i < input->channels; i++) {
        json_array_append_new(mean, json_real(input->mean[i]));
        json_array_append_new(std, json_real(input->std[i]));
    }
    json_t *doc = json_pack(
        "{s:s, s:i, s:s, s:s, s:s, s:i, s:{s:i, s:i, s:i, s:o, s:o, s:i, s:s}, s:{s:i, s:i, s:i, s:i, s:i},"
        " s:{s:s, s:o, s:o}}",
        "format", "cmrsearch-model", "format_version", 1, "name", name, "architecture", "compact", "weights",
        "weights.safetensors", "embed_dim", c->embed_dim, "video", "frames", c->frames, "size", c->size, "channels",
        c->channels, "conv_channels", int_list(c->conv_channels, CMR_COMPACT_CONVS), "conv_strides",
        int_list(c->conv_strides, CMR_COMPACT_CONVS), "hidden", c->video_hidden, "spatial_pool",
        c->spatial_max ? "mean+max" : "mean", "text", "buckets", c->text_buckets,
        "dim", c->text_dim, "hidden", c->text_hidden, "max_n", c->max_n, "max_words", c->max_words, "input",
        "recipe", input->recipe, "mean", mean, "std", std);
    if (!doc)
        return cmr_fail(CMR_ENOMEM, "model.json: cannot build the document");
    if (c->lexicon)
        json_object_set_new(json_object_get(doc, "text"), "lexicon", json_string(cmr_compact_lexicon_name(c->lexicon)));
    if (input->resize)
        json_object_set_new(json_object_get(doc, "input"), "resize", json_integer(input->resize));
    if (input->lge_frames)
        json_object_set_new(json_object_get(doc, "input"), "lge_frames", json_integer(input->lge_frames));
    if (training)
        json_object_set(doc, "training", training);
    rc = cmr_model_write_json(dir, doc);
    json_decref(doc);
    return rc;
}
