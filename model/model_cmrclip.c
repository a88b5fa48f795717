/* The published CMR-CLIP (architecture "cmrclip"): space-time ViT-B/16 and
 * BERT-base with their projections (docs/model-format.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

#define get_int cmr_model_json_int

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

int cmr_model_open_cmrclip(cmr_model *m, json_t *root, const char *config)
{
    char *wpath = NULL, *vpath = NULL;
    int rc;
    cmr_vit_config vc;
    cmr_bert_config bc;
    cmr_tokenizer_options to;
    int embed;
    if ((rc = parse_video(config, json_object_get(root, "video"), &vc)) < 0 ||
        (rc = parse_text(config, json_object_get(root, "text"), &bc, &to)) < 0 ||
        (rc = cmr_model_parse_input(config, json_object_get(root, "input"), (unsigned)vc.num_frames,
                                    (unsigned)vc.channels, (unsigned)vc.image_size, &m->input)) < 0 ||
        (rc = get_int(config, root, "model", "embed_dim", 1, 1 << 16, &embed)) < 0)
        return rc;
    m->embed_dim = (unsigned)embed;
    if (!(wpath = cmr_model_path(m, root, "weights", "weights.safetensors")) ||
        !(vpath = cmr_model_path(m, root, "vocab", "vocab.txt"))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = cmr_st_open(wpath, &m->weights)) < 0 ||
        (rc = cmr_vit_bind(&m->video, &vc, m->weights, "video_model.")) < 0 ||
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
    rc = 0;
fail:
    free(wpath);
    free(vpath);
    return rc;
}

void cmr_model_close_cmrclip(cmr_model *m)
{
    cmr_vit_unbind(&m->video);
    cmr_bert_unbind(&m->text);
    cmr_tokenizer_close(m->tokenizer);
    cmr_arena_release(&m->ws);
    free(m->hidden);
    free(m->ids);
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

int cmr_model_study_cmrclip(cmr_model *m, const float *video, unsigned frames, float *embedding)
{
    int rc = cmr_vit_forward(&m->video, video, (int)frames, &m->ws, m->hidden, m->probe, m->probe_ctx);
    if (rc < 0)
        return rc;
    project(m, m->hidden, (size_t)m->video.cfg.dim, m->vid_proj_w, m->vid_proj_b, embedding, "video.embed");
    return 0;
}

int cmr_model_tokens_cmrclip(cmr_model *m, const int32_t *ids, size_t n, float *embedding)
{
    int rc = cmr_bert_forward(&m->text, ids, n, &m->ws, m->hidden, m->probe, m->probe_ctx);
    if (rc < 0)
        return rc;
    project(m, m->hidden, (size_t)m->text.cfg.hidden, m->txt_proj_w, m->txt_proj_b, embedding, "text.embed");
    return 0;
}

int cmr_model_text_cmrclip(cmr_model *m, const char *text, float *embedding)
{
    size_t n = 0;
    int rc = cmr_tokenizer_encode(m->tokenizer, text, strlen(text), m->ids, m->max_tokens, &n);
    if (rc < 0)
        return rc;
    return cmr_model_tokens_cmrclip(m, m->ids, n, embedding);
}
