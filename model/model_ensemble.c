/* "architecture": "ensemble" (docs/model-format.md, "Ensembles"): models
 * trained alike from different seeds, each kept whole in a directory of its
 * own beside model.json.  A study or a text is embedded by every member and
 * the L2-normalised member embeddings are concatenated, each scaled by
 * 1/sqrt(n): the result has unit norm and the cosine of two embeddings is the
 * mean of the members' cosines.  The members' disagreements are mostly
 * seed noise, which the mean halves; nothing is learnt across members, so
 * every member stays a model that can be fine-tuned on its own. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

/* A member is named by a plain directory name: never a path that leaves the
 * ensemble's directory. */
static int plain_name(const char *s)
{
    if (!*s || *s == '.' || strlen(s) >= CMR_ENSEMBLE_NAME_MAX)
        return 0;
    for (; *s; s++)
        if (*s == '/' || *s == '\\')
            return 0;
    return 1;
}

static int same_input(const cmr_model_input *a, const cmr_model_input *b)
{
    if (strcmp(a->recipe, b->recipe) || a->frames != b->frames || a->channels != b->channels || a->size != b->size ||
        a->resize != b->resize || a->lge_frames != b->lge_frames)
        return 0;
    for (unsigned c = 0; c < a->channels && c < 3; c++)
        if (a->mean[c] != b->mean[c] || a->std[c] != b->std[c])
            return 0;
    return 1;
}

int cmr_model_open_ensemble(cmr_model *m, json_t *root, const char *config)
{
    json_t *list = json_object_get(root, "members");
    size_t n = json_is_array(list) ? json_array_size(list) : 0;
    if (n < 1 || n > CMR_ENSEMBLE_MAX)
        return cmr_fail(CMR_EFORMAT, "%s: \"members\" must list 1..%d member directories", config, CMR_ENSEMBLE_MAX);
    if (!(m->members = calloc(n, sizeof *m->members)) || !(m->member_names = calloc(n, sizeof *m->member_names)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    m->n_members = n;
    unsigned dim = 0, widest = 0;
    int rc;
    cmr_sha256 ctx;
    cmr_sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_array_get(list, i);
        if (!json_is_string(v) || !plain_name(json_string_value(v)))
            return cmr_fail(CMR_EFORMAT, "%s: members[%zu] must be the name of a directory beside model.json", config,
                            i);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(m->member_names[j], json_string_value(v)))
                return cmr_fail(CMR_EFORMAT, "%s: member \"%s\" is listed twice", config, json_string_value(v));
        if (!(m->member_names[i] = strdup(json_string_value(v))))
            return cmr_fail(CMR_ENOMEM, "out of memory");
        size_t len = strlen(m->dir) + strlen(m->member_names[i]) + 2;
        char *path = malloc(len);
        if (!path)
            return cmr_fail(CMR_ENOMEM, "out of memory");
        snprintf(path, len, "%s/%s", m->dir, m->member_names[i]);
        rc = cmr_model_open(path, &m->members[i]);
        free(path);
        if (rc < 0)
            return cmr_fail_context(rc, "%s: member \"%s\": ", config, m->member_names[i]);
        cmr_model *mem = m->members[i];
        if (mem->arch == CMR_ARCH_ENSEMBLE)
            return cmr_fail(CMR_EFORMAT, "%s: member \"%s\" is itself an ensemble", config, m->member_names[i]);
        if (i == 0)
            m->input = mem->input;
        else if (!same_input(&m->input, &mem->input))
            return cmr_fail(CMR_EFORMAT, "%s: member \"%s\" takes another input than \"%s\" (recipe, frames, size, "
                            "resize or normalisation)", config, m->member_names[i], m->member_names[0]);
        dim += mem->embed_dim;
        widest = mem->embed_dim > widest ? mem->embed_dim : widest;
        /* The identity: the members' identities, in order. */
        cmr_sha256_update(&ctx, mem->hash, strlen(mem->hash));
        cmr_sha256_update(&ctx, "\n", 1);
    }
    uint8_t digest[CMR_SHA256_BYTES];
    cmr_sha256_final(&ctx, digest);
    cmr_hex(digest, sizeof digest, m->hash);
    m->embed_dim = dim;
    if (!(m->member_out = malloc(widest * sizeof *m->member_out)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    return 0;
}

void cmr_model_close_ensemble(cmr_model *m)
{
    for (size_t i = 0; i < m->n_members; i++) {
        cmr_model_close(m->members ? m->members[i] : NULL);
        free(m->member_names ? m->member_names[i] : NULL);
    }
    free(m->members);
    free(m->member_names);
    free(m->member_out);
}

/* Every member's embedding (unit norm) scaled by 1/sqrt(n), side by side. */
static int combine(cmr_model *m, const float *video, unsigned frames, const char *text, float *embedding)
{
    float scale = 1.0f / sqrtf((float)m->n_members);
    float *dst = embedding;
    for (size_t i = 0; i < m->n_members; i++) {
        cmr_model *mem = m->members[i];
        int rc = text ? cmr_model_encode_text(mem, text, m->member_out)
                      : cmr_model_encode_study(mem, video, frames, m->member_out);
        if (rc < 0)
            return cmr_fail_context(rc, "member %s: ", m->member_names[i]);
        for (unsigned d = 0; d < mem->embed_dim; d++)
            dst[d] = scale * m->member_out[d];
        dst += mem->embed_dim;
    }
    return 0;
}

int cmr_model_study_ensemble(cmr_model *m, const float *video, unsigned frames, float *embedding)
{
    return combine(m, video, frames, NULL, embedding);
}

int cmr_model_text_ensemble(cmr_model *m, const char *text, float *embedding)
{
    return combine(m, NULL, 0, text, embedding);
}

size_t cmr_model_member_count(const cmr_model *m) { return m->arch == CMR_ARCH_ENSEMBLE ? m->n_members : 0; }

const char *cmr_model_member_name(const cmr_model *m, size_t i)
{
    return m->arch == CMR_ARCH_ENSEMBLE && i < m->n_members ? m->member_names[i] : NULL;
}

int cmr_model_write_ensemble(const char *dir, const char *name, const char *const *members, size_t n)
{
    if (!dir || !name || !*name || !members || n < 1 || n > CMR_ENSEMBLE_MAX)
        return cmr_fail(CMR_EINVAL, "an ensemble needs a directory, a name and 1..%d members", CMR_ENSEMBLE_MAX);
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        if (!members[i] || !plain_name(members[i])) {
            json_decref(list);
            return cmr_fail(CMR_EINVAL, "ensemble member \"%s\": a plain directory name is needed",
                            members[i] ? members[i] : "(null)");
        }
        json_array_append_new(list, json_string(members[i]));
    }
    json_t *doc = list ? json_pack("{s:s, s:i, s:s, s:s, s:o}", "format", "cmrsearch-model", "format_version", 1,
                                   "name", name, "architecture", "ensemble", "members", list)
                       : NULL;
    if (!doc)
        return cmr_fail(CMR_ENOMEM, "model.json: cannot build the document");
    int rc = cmr_model_write_json(dir, doc);
    json_decref(doc);
    return rc;
}
