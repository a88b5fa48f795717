/* A model directory: model.json, weights.safetensors, vocab.txt
 * (docs/model-format.md), opened into the two towers and projections. */
#include <errno.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmr_sha256.h"
#include "model_internal.h"
#include "tokenizer.h"

struct cmr_model {
    char *dir;
    char name[128];
    char hash[2 * CMR_SHA256_BYTES + 1];
    cmr_model_input input;
    unsigned embed_dim;
    cmr_st_file *weights;
    cmr_vit video;
    cmr_bert text;
    const float *vid_proj_w, *vid_proj_b, *txt_proj_w, *txt_proj_b;
    cmr_tokenizer *tokenizer;
    size_t max_tokens;
    cmr_arena ws;
    float *hidden; /* max(video dim, text hidden) floats */
    int32_t *ids;
    cmr_model_probe_fn probe;
    void *probe_ctx;
};

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* Integer member of obj, required and within [lo, hi]. */
static int get_int(const char *path, json_t *obj, const char *section, const char *key, int lo, int hi, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cmr_fail(CMR_EFORMAT, "%s: %s.%s must be an integer in %d..%d", path, section, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_eps(const char *path, json_t *obj, const char *section, float *out)
{
    json_t *v = json_object_get(obj, "ln_eps");
    if (!json_is_number(v) || json_number_value(v) <= 0 || json_number_value(v) > 1e-2)
        return cmr_fail(CMR_EFORMAT, "%s: %s.ln_eps must be a number in (0, 0.01]", path, section);
    *out = (float)json_number_value(v);
    return 0;
}

/* JSON true/false → 1/0; null or absent → dflt. */
static int get_tristate(json_t *obj, const char *key, int dflt)
{
    json_t *v = json_object_get(obj, key);
    return json_is_boolean(v) ? json_is_true(v) : dflt;
}

static int parse_video(const char *path, json_t *o, cmr_vit_config *c)
{
    int rc;
    if (!json_is_object(o))
        return cmr_fail(CMR_EFORMAT, "%s: \"video\" section missing", path);
    if ((rc = get_int(path, o, "video", "dim", 1, 1 << 16, &c->dim)) < 0 ||
        (rc = get_int(path, o, "video", "depth", 1, 1024, &c->depth)) < 0 ||
        (rc = get_int(path, o, "video", "heads", 1, 1024, &c->heads)) < 0 ||
        (rc = get_int(path, o, "video", "mlp_dim", 1, 1 << 18, &c->mlp_dim)) < 0 ||
        (rc = get_int(path, o, "video", "patch", 1, 1024, &c->patch)) < 0 ||
        (rc = get_int(path, o, "video", "image_size", 1, 4096, &c->image_size)) < 0 ||
        (rc = get_int(path, o, "video", "channels", 1, 3, &c->channels)) < 0 ||
        (rc = get_int(path, o, "video", "num_frames", 1, 1024, &c->num_frames)) < 0 ||
        (rc = get_eps(path, o, "video", &c->ln_eps)) < 0)
        return rc;
    return 0;
}

static int parse_text(const char *path, json_t *o, cmr_bert_config *c, cmr_tokenizer_options *tok)
{
    int rc;
    if (!json_is_object(o))
        return cmr_fail(CMR_EFORMAT, "%s: \"text\" section missing", path);
    if ((rc = get_int(path, o, "text", "vocab_size", 1, 1 << 24, &c->vocab_size)) < 0 ||
        (rc = get_int(path, o, "text", "hidden", 1, 1 << 16, &c->hidden)) < 0 ||
        (rc = get_int(path, o, "text", "layers", 1, 1024, &c->layers)) < 0 ||
        (rc = get_int(path, o, "text", "heads", 1, 1024, &c->heads)) < 0 ||
        (rc = get_int(path, o, "text", "intermediate", 1, 1 << 18, &c->intermediate)) < 0 ||
        (rc = get_int(path, o, "text", "max_position", 2, 1 << 16, &c->max_position)) < 0 ||
        (rc = get_int(path, o, "text", "type_vocab", 1, 1024, &c->type_vocab)) < 0 ||
        (rc = get_eps(path, o, "text", &c->ln_eps)) < 0)
        return rc;
    tok->do_lower_case = get_tristate(o, "do_lower_case", 1);
    tok->strip_accents = get_tristate(o, "strip_accents", -1);
    tok->tokenize_chinese_chars = get_tristate(o, "tokenize_chinese_chars", 1);
    tok->max_length = (size_t)c->max_position;
    return 0;
}

static int parse_input(const char *path, json_t *o, const cmr_vit_config *v, cmr_model_input *in)
{
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    json_t *recipe = json_object_get(o, "recipe");
    if (!json_is_object(o) || !json_is_string(recipe) || strlen(json_string_value(recipe)) >= sizeof in->recipe)
        return cmr_fail(CMR_EFORMAT, "%s: \"input\" needs a \"recipe\" name", path);
    snprintf(in->recipe, sizeof in->recipe, "%s", json_string_value(recipe));
    in->frames = (unsigned)v->num_frames;
    in->channels = (unsigned)v->channels;
    in->size = (unsigned)v->image_size;
    memcpy(in->mean, imagenet_mean, sizeof in->mean);
    memcpy(in->std, imagenet_std, sizeof in->std);
    /* A model trained on other statistics says so; CMR-CLIP uses ImageNet's. */
    json_t *mean = json_object_get(o, "mean"), *std = json_object_get(o, "std");
    for (int which = 0; which < 2; which++) {
        json_t *a = which ? std : mean;
        float *dst = which ? in->std : in->mean;
        if (!a)
            continue;
        if (!json_is_array(a) || json_array_size(a) != (size_t)v->channels)
            return cmr_fail(CMR_EFORMAT, "%s: input.%s must list %d numbers", path, which ? "std" : "mean",
                            v->channels);
        for (int c = 0; c < v->channels; c++) {
            json_t *x = json_array_get(a, (size_t)c);
            if (!json_is_number(x) || (which && json_number_value(x) <= 0))
                return cmr_fail(CMR_EFORMAT, "%s: input.%s[%d] is not a valid number", path, which ? "std" : "mean",
                                c);
            dst[c] = (float)json_number_value(x);
        }
    }
    return 0;
}

static int hash_weights(cmr_model *m)
{
    cmr_sha256 ctx;
    uint8_t digest[CMR_SHA256_BYTES];
    cmr_sha256_init(&ctx);
    cmr_sha256_update(&ctx, m->weights->map, m->weights->map_len);
    cmr_sha256_final(&ctx, digest);
    cmr_hex(digest, sizeof digest, m->hash);
    return 0;
}

/* The config file and the directory, from a directory or a model.json path. */
static int locate(const char *path, char **dir, char **config)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "model %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        *dir = strdup(path);
        *config = join(path, "model.json");
    } else {
        const char *slash = strrchr(path, '/');
        *dir = slash ? strndup(path, (size_t)(slash - path) + (slash == path)) : strdup(".");
        *config = strdup(path);
    }
    return *dir && *config ? 0 : cmr_fail(CMR_ENOMEM, "out of memory");
}

int cmr_model_open(const char *path, cmr_model **out)
{
    *out = NULL;
    char *config = NULL, *wpath = NULL, *vpath = NULL;
    json_t *root = NULL;
    int rc;
    cmr_model *m = calloc(1, sizeof *m);
    if (!m)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    if ((rc = locate(path, &m->dir, &config)) < 0)
        goto fail;
    json_error_t jerr;
    if (!(root = json_load_file(config, JSON_REJECT_DUPLICATES, &jerr))) {
        rc = cmr_fail(errno == ENOENT && jerr.line < 0 ? CMR_ENOTFOUND : CMR_EFORMAT, "%s: %s (line %d)", config,
                      jerr.text, jerr.line);
        goto fail;
    }
    json_t *fmt = json_object_get(root, "format"), *ver = json_object_get(root, "format_version"),
           *arch = json_object_get(root, "architecture"), *name = json_object_get(root, "name");
    if (!json_is_string(fmt) || strcmp(json_string_value(fmt), "cmrsearch-model") != 0) {
        rc = cmr_fail(CMR_EFORMAT, "%s: not a cmrsearch model (\"format\" is not \"cmrsearch-model\")", config);
        goto fail;
    }
    if (!json_is_integer(ver) || json_integer_value(ver) != 1) {
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: format_version %lld; this build reads version 1", config,
                      json_is_integer(ver) ? (long long)json_integer_value(ver) : -1LL);
        goto fail;
    }
    if (!json_is_string(arch) || strcmp(json_string_value(arch), "cmrclip") != 0) {
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: architecture \"%s\" is not known to this build", config,
                      json_is_string(arch) ? json_string_value(arch) : "?");
        goto fail;
    }
    if (!json_is_string(name) || !json_string_length(name) || json_string_length(name) >= sizeof m->name) {
        rc = cmr_fail(CMR_EFORMAT, "%s: \"name\" must be a string of 1..%zu bytes", config, sizeof m->name - 1);
        goto fail;
    }
    snprintf(m->name, sizeof m->name, "%s", json_string_value(name));
    cmr_vit_config vc;
    cmr_bert_config bc;
    cmr_tokenizer_options to;
    int embed;
    if ((rc = parse_video(config, json_object_get(root, "video"), &vc)) < 0 ||
        (rc = parse_text(config, json_object_get(root, "text"), &bc, &to)) < 0 ||
        (rc = parse_input(config, json_object_get(root, "input"), &vc, &m->input)) < 0 ||
        (rc = get_int(config, root, "model", "embed_dim", 1, 1 << 16, &embed)) < 0)
        goto fail;
    m->embed_dim = (unsigned)embed;
    json_t *wname = json_object_get(root, "weights"), *vname = json_object_get(root, "vocab");
    if (!(wpath = join(m->dir, json_is_string(wname) ? json_string_value(wname) : "weights.safetensors")) ||
        !(vpath = join(m->dir, json_is_string(vname) ? json_string_value(vname) : "vocab.txt"))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = cmr_st_open(wpath, &m->weights)) < 0 || (rc = cmr_vit_bind(&m->video, &vc, m->weights, "video_model.")) < 0 ||
        (rc = cmr_bert_bind(&m->text, &bc, m->weights, "text_model.")) < 0)
        goto fail;
    {
        cmr_st_file *f = m->weights;
        const char *prefix = "";
        CMR_BIND2("vid_proj.1.weight", embed, vc.dim, &m->vid_proj_w);
        CMR_BIND1("vid_proj.1.bias", embed, &m->vid_proj_b);
        CMR_BIND2("txt_proj.1.weight", embed, bc.hidden, &m->txt_proj_w);
        CMR_BIND1("txt_proj.1.bias", embed, &m->txt_proj_b);
    }
    if ((rc = cmr_tokenizer_open(vpath, &to, &m->tokenizer)) < 0)
        goto fail;
    if (cmr_tokenizer_vocab_size(m->tokenizer) != (size_t)bc.vocab_size) {
        rc = cmr_fail(CMR_EFORMAT, "%s: %zu tokens, but the text tower's embedding has %d rows", vpath,
                      cmr_tokenizer_vocab_size(m->tokenizer), bc.vocab_size);
        goto fail;
    }
    m->max_tokens = (size_t)bc.max_position;
    size_t hidden = (size_t)(vc.dim > bc.hidden ? vc.dim : bc.hidden);
    if (!(m->hidden = malloc(hidden * sizeof *m->hidden)) || !(m->ids = malloc(m->max_tokens * sizeof *m->ids))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    hash_weights(m);
    json_decref(root);
    free(config);
    free(wpath);
    free(vpath);
    *out = m;
    return 0;
fail:
    json_decref(root);
    free(config);
    free(wpath);
    free(vpath);
    cmr_model_close(m);
    return rc;
}

void cmr_model_close(cmr_model *m)
{
    if (!m)
        return;
    cmr_vit_unbind(&m->video);
    cmr_bert_unbind(&m->text);
    cmr_st_close(m->weights);
    cmr_tokenizer_close(m->tokenizer);
    cmr_arena_release(&m->ws);
    free(m->hidden);
    free(m->ids);
    free(m->dir);
    free(m);
}

const char *cmr_model_name(const cmr_model *m) { return m->name; }
const char *cmr_model_hash(const cmr_model *m) { return m->hash; }
const cmr_model_input *cmr_model_input_spec(const cmr_model *m) { return &m->input; }
unsigned cmr_model_dim(const cmr_model *m) { return m->embed_dim; }

void cmr_model_set_probe(cmr_model *m, cmr_model_probe_fn fn, void *ctx)
{
    m->probe = fn;
    m->probe_ctx = ctx;
}

/* ReLU then Linear, as the published projections (index 0 is the ReLU). */
static void project(const cmr_model *m, float *hidden, size_t dim, const float *w, const float *b, float *out,
                    const char *stage)
{
    cmr_relu(hidden, dim);
    cmr_linear(hidden, 1, dim, w, b, m->embed_dim, out);
    if (m->probe)
        m->probe(m->probe_ctx, stage, out, 1, m->embed_dim);
    cmr_l2_normalize(out, m->embed_dim);
}

int cmr_model_encode_study(cmr_model *m, const float *video, unsigned frames, float *embedding)
{
    if (!m || !video || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_study: NULL argument");
    int rc = cmr_vit_forward(&m->video, video, (int)frames, &m->ws, m->hidden, m->probe, m->probe_ctx);
    if (rc < 0)
        return rc;
    project(m, m->hidden, (size_t)m->video.cfg.dim, m->vid_proj_w, m->vid_proj_b, embedding, "video.embed");
    return 0;
}

int cmr_model_encode_tokens(cmr_model *m, const int32_t *ids, size_t n, float *embedding)
{
    if (!m || !ids || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_tokens: NULL argument");
    int rc = cmr_bert_forward(&m->text, ids, n, &m->ws, m->hidden, m->probe, m->probe_ctx);
    if (rc < 0)
        return rc;
    project(m, m->hidden, (size_t)m->text.cfg.hidden, m->txt_proj_w, m->txt_proj_b, embedding, "text.embed");
    return 0;
}

int cmr_model_encode_text(cmr_model *m, const char *text, float *embedding)
{
    if (!m || !text || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_text: NULL argument");
    size_t n = 0;
    int rc = cmr_tokenizer_encode(m->tokenizer, text, strlen(text), m->ids, m->max_tokens, &n);
    if (rc < 0)
        return rc;
    return cmr_model_encode_tokens(m, m->ids, n, embedding);
}
