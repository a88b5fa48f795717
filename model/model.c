/* A model directory: model.json, weights and (for CMR-CLIP) vocab.txt
 * (docs/model-format.md, docs/compact-model.md): the common part of
 * opening, identity, and dispatch to the architecture. */
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_impl.h"

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

char *cmr_model_path(const cmr_model *m, json_t *root, const char *key, const char *dflt)
{
    json_t *v = json_object_get(root, key);
    return join(m->dir, json_is_string(v) ? json_string_value(v) : dflt);
}

int cmr_model_json_int(const char *path, json_t *obj, const char *section, const char *key, int lo, int hi, int *out)
{
    json_t *v = json_object_get(obj, key);
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cmr_fail(CMR_EFORMAT, "%s: %s.%s must be an integer in %d..%d", path, section, key, lo, hi);
    *out = (int)json_integer_value(v);
    return 0;
}

int cmr_model_parse_input(const char *path, json_t *o, unsigned frames, unsigned channels, unsigned size,
                          cmr_model_input *in)
{
    static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};
    json_t *recipe = json_object_get(o, "recipe");
    if (!json_is_object(o) || !json_is_string(recipe) || strlen(json_string_value(recipe)) >= sizeof in->recipe)
        return cmr_fail(CMR_EFORMAT, "%s: \"input\" needs a \"recipe\" name", path);
    snprintf(in->recipe, sizeof in->recipe, "%s", json_string_value(recipe));
    in->frames = frames;
    in->channels = channels;
    in->size = size;
    in->resize = 0;
    json_t *resize = json_object_get(o, "resize");
    if (resize && (!json_is_integer(resize) || json_integer_value(resize) < (json_int_t)size ||
                   json_integer_value(resize) > 8 * (json_int_t)size))
        return cmr_fail(CMR_EFORMAT, "%s: input.resize must be an integer from size (%u) to 8 times it", path, size);
    if (resize)
        in->resize = (unsigned)json_integer_value(resize);
    in->lge_frames = 0;
    json_t *lge = json_object_get(o, "lge_frames");
    if (!strcmp(in->recipe, "cine+lge")) {
        if (!json_is_integer(lge) || json_integer_value(lge) < 1 || json_integer_value(lge) >= (json_int_t)frames)
            return cmr_fail(CMR_EFORMAT, "%s: recipe \"cine+lge\" needs input.lge_frames, an integer from 1 to %u", path,
                            frames - 1);
        in->lge_frames = (unsigned)json_integer_value(lge);
    } else if (lge) {
        return cmr_fail(CMR_EFORMAT, "%s: input.lge_frames belongs to recipe \"cine+lge\", not \"%s\"", path,
                        in->recipe);
    }
    memcpy(in->mean, imagenet_mean, sizeof in->mean);
    memcpy(in->std, imagenet_std, sizeof in->std);
    /* A model trained on other statistics says so; CMR-CLIP uses ImageNet's. */
    json_t *mean = json_object_get(o, "mean"), *std = json_object_get(o, "std");
    for (int which = 0; which < 2; which++) {
        json_t *a = which ? std : mean;
        float *dst = which ? in->std : in->mean;
        if (!a)
            continue;
        if (!json_is_array(a) || json_array_size(a) != (size_t)channels)
            return cmr_fail(CMR_EFORMAT, "%s: input.%s must list %d numbers", path, which ? "std" : "mean",
                            (int)channels);
        for (unsigned c = 0; c < channels; c++) {
            json_t *x = json_array_get(a, (size_t)c);
            if (!json_is_number(x) || (which && json_number_value(x) <= 0))
                return cmr_fail(CMR_EFORMAT, "%s: input.%s[%u] is not a valid number", path, which ? "std" : "mean",
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
    cmr_model_threads_init();
    char *config = NULL;
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
    if (!json_is_string(name) || !json_string_length(name) || json_string_length(name) >= sizeof m->name) {
        rc = cmr_fail(CMR_EFORMAT, "%s: \"name\" must be a string of 1..%zu bytes", config, sizeof m->name - 1);
        goto fail;
    }
    snprintf(m->name, sizeof m->name, "%s", json_string_value(name));
    const char *arch_name = json_is_string(arch) ? json_string_value(arch) : "?";
    if (!strcmp(arch_name, "cmrclip")) {
        m->arch = CMR_ARCH_CMRCLIP;
        rc = cmr_model_open_cmrclip(m, root, config);
    } else if (!strcmp(arch_name, "compact")) {
        m->arch = CMR_ARCH_COMPACT;
        rc = cmr_model_open_compact(m, root, config);
    } else if (!strcmp(arch_name, "ensemble")) {
        m->arch = CMR_ARCH_ENSEMBLE;
        rc = cmr_model_open_ensemble(m, root, config);
    } else {
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: architecture \"%s\" is not known to this build", config, arch_name);
    }
    if (rc < 0)
        goto fail;
    if (m->arch != CMR_ARCH_ENSEMBLE) /* an ensemble's identity is its members' */
        hash_weights(m);
    json_decref(root);
    free(config);
    *out = m;
    return 0;
fail:
    json_decref(root);
    free(config);
    cmr_model_close(m);
    return rc;
}

void cmr_model_close(cmr_model *m)
{
    if (!m)
        return;
    if (m->arch == CMR_ARCH_CMRCLIP)
        cmr_model_close_cmrclip(m);
    else if (m->arch == CMR_ARCH_COMPACT)
        cmr_model_close_compact(m);
    else
        cmr_model_close_ensemble(m);
    cmr_st_close(m->weights);
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
    for (size_t i = 0; i < m->n_members; i++)
        cmr_model_set_probe(m->members[i], fn, ctx);
}

int cmr_model_encode_study(cmr_model *m, const float *video, unsigned frames, float *embedding)
{
    if (!m || !video || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_study: NULL argument");
    return m->arch == CMR_ARCH_CMRCLIP   ? cmr_model_study_cmrclip(m, video, frames, embedding)
           : m->arch == CMR_ARCH_COMPACT ? cmr_model_study_compact(m, video, frames, embedding)
                                         : cmr_model_study_ensemble(m, video, frames, embedding);
}

int cmr_model_encode_tokens(cmr_model *m, const int32_t *ids, size_t n, float *embedding)
{
    if (!m || !ids || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_tokens: NULL argument");
    if (m->arch != CMR_ARCH_CMRCLIP)
        return cmr_fail(CMR_EUNSUPPORTED, "model %s reads text, not WordPiece ids", m->name);
    return cmr_model_tokens_cmrclip(m, ids, n, embedding);
}

int cmr_model_encode_text(cmr_model *m, const char *text, float *embedding)
{
    if (!m || !text || !embedding)
        return cmr_fail(CMR_EINVAL, "cmr_model_encode_text: NULL argument");
    return m->arch == CMR_ARCH_CMRCLIP   ? cmr_model_text_cmrclip(m, text, embedding)
           : m->arch == CMR_ARCH_COMPACT ? cmr_model_text_compact(m, text, embedding)
                                         : cmr_model_text_ensemble(m, text, embedding);
}

int cmr_model_write_json(const char *dir, json_t *doc)
{
    char path[4096], tmp[4096];
    if (snprintf(path, sizeof path, "%s/model.json", dir) >= (int)sizeof path ||
        snprintf(tmp, sizeof tmp, "%s/.model.json.tmp", dir) >= (int)sizeof tmp)
        return cmr_fail(CMR_EINVAL, "%s: path too long", dir);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return cmr_fail(CMR_EIO, "%s: %s", dir, strerror(errno));
    int rc = json_dump_file(doc, tmp, JSON_INDENT(2) | JSON_SORT_KEYS) == 0 ? 0 : cmr_fail(CMR_EIO, "%s: cannot write", tmp);
    if (rc == 0) {
        int fd = open(tmp, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0)
            rc = cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
        if (fd >= 0)
            close(fd);
    }
    if (rc == 0 && rename(tmp, path) != 0)
        rc = cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}
