/* The text tower: BERT-base (post-LayerNorm), mean of the last hidden states.
 * One unpadded sequence per call, so no attention mask is needed: running
 * the valid tokens alone is what a masked batch computes for them. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

typedef struct bert_ws {
    float *x, *q, *k, *v, *att, *tmp, *inter, *scratch;
    size_t per_thread;
} bert_ws;

static void bert_layout(const cmr_bert_config *c, size_t n, cmr_arena *a, bert_ws *w)
{
    size_t H = (size_t)c->hidden, dh = H / (size_t)c->heads;
    w->per_thread = (cmr_attend_scratch(n, n, dh) + 15) / 16 * 16;
    w->x = cmr_arena_take(a, n * H);
    w->q = cmr_arena_take(a, n * H);
    w->k = cmr_arena_take(a, n * H);
    w->v = cmr_arena_take(a, n * H);
    w->att = cmr_arena_take(a, n * H);
    w->tmp = cmr_arena_take(a, n * H);
    w->inter = cmr_arena_take(a, n * (size_t)c->intermediate);
    w->scratch = cmr_arena_take(a, w->per_thread * (size_t)omp_get_max_threads());
}

size_t cmr_bert_workspace(const cmr_bert_config *cfg, size_t n_tokens)
{
    cmr_arena a = {0};
    bert_ws w;
    bert_layout(cfg, n_tokens, &a, &w);
    return a.used;
}

static void layer_forward(const cmr_bert_config *c, const cmr_bert_layer *L, size_t n, const bert_ws *w)
{
    size_t H = (size_t)c->hidden, I = (size_t)c->intermediate, dh = H / (size_t)c->heads;
    cmr_linear(w->x, n, H, L->q_w, L->q_b, H, w->q);
    cmr_linear(w->x, n, H, L->k_w, L->k_b, H, w->k);
    cmr_linear(w->x, n, H, L->v_w, L->v_b, H, w->v);
#pragma omp parallel for if (n >= 32)
    for (int h = 0; h < c->heads; h++) {
        size_t off = (size_t)h * dh;
        cmr_attend(w->q + off, H, n, w->k + off, w->v + off, H, n, dh, w->att + off, H,
                   w->scratch + w->per_thread * (size_t)omp_get_thread_num());
    }
    memcpy(w->tmp, w->x, n * H * sizeof *w->tmp);
    cmr_linear_acc(w->att, n, H, L->ao_w, L->ao_b, H, w->tmp);
    cmr_layernorm(w->tmp, n, H, L->aln_w, L->aln_b, c->ln_eps, w->x);
    cmr_linear(w->x, n, H, L->i_w, L->i_b, I, w->inter);
    cmr_gelu(w->inter, n * I);
    memcpy(w->tmp, w->x, n * H * sizeof *w->tmp);
    cmr_linear_acc(w->inter, n, I, L->o_w, L->o_b, H, w->tmp);
    cmr_layernorm(w->tmp, n, H, L->oln_w, L->oln_b, c->ln_eps, w->x);
}

int cmr_bert_layer_forward(const cmr_bert_config *cfg, const cmr_bert_layer *layer, float *x, size_t n, cmr_arena *ws)
{
    int rc = cmr_arena_reserve(ws, cmr_bert_workspace(cfg, n));
    if (rc < 0)
        return rc;
    bert_ws w;
    bert_layout(cfg, n, ws, &w);
    memcpy(w.x, x, n * (size_t)cfg->hidden * sizeof *x);
    layer_forward(cfg, layer, n, &w);
    memcpy(x, w.x, n * (size_t)cfg->hidden * sizeof *x);
    return 0;
}

int cmr_bert_forward(const cmr_bert *b, const int32_t *ids, size_t n, cmr_arena *ws, float *out_mean,
                     cmr_model_probe_fn probe, void *probe_ctx)
{
    const cmr_bert_config *c = &b->cfg;
    if (n < 1 || n > (size_t)c->max_position)
        return cmr_fail(CMR_EINVAL, "text tower: %zu tokens given, 1..%d accepted", n, c->max_position);
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= c->vocab_size)
            return cmr_fail(CMR_EINVAL, "text tower: token %zu has id %d, outside the vocabulary of %d", i,
                            (int)ids[i], c->vocab_size);
    int rc = cmr_arena_reserve(ws, cmr_bert_workspace(c, n));
    if (rc < 0)
        return rc;
    bert_ws w;
    bert_layout(c, n, ws, &w);
    size_t H = (size_t)c->hidden;
    char stage[48];

    for (size_t i = 0; i < n; i++) {
        const float *word = b->word + (size_t)ids[i] * H, *pos = b->position + i * H;
        for (size_t d = 0; d < H; d++)
            w.tmp[i * H + d] = word[d] + pos[d] + b->token_type[d];
    }
    cmr_layernorm(w.tmp, n, H, b->eln_w, b->eln_b, c->ln_eps, w.x);
    if (probe)
        probe(probe_ctx, "text.embeddings", w.x, n, H);
    for (int l = 0; l < c->layers; l++) {
        layer_forward(c, &b->layers[l], n, &w);
        if (probe) {
            snprintf(stage, sizeof stage, "text.layer%d.out", l);
            probe(probe_ctx, stage, w.x, n, H);
        }
    }
    for (size_t d = 0; d < H; d++) {
        double s = 0;
        for (size_t i = 0; i < n; i++)
            s += w.x[i * H + d];
        out_mean[d] = (float)(s / (double)n);
    }
    if (probe)
        probe(probe_ctx, "text.mean_pooled", out_mean, 1, H);
    return 0;
}

int cmr_bert_bind(cmr_bert *b, const cmr_bert_config *cfg, cmr_st_file *f, const char *prefix)
{
    memset(b, 0, sizeof *b);
    b->cfg = *cfg;
    int rc;
    const int64_t H = cfg->hidden, I = cfg->intermediate;
    if (cfg->hidden <= 0 || cfg->heads <= 0 || cfg->hidden % cfg->heads || cfg->layers <= 0 ||
        cfg->intermediate <= 0 || cfg->vocab_size <= 0 || cfg->max_position <= 0 || cfg->type_vocab <= 0)
        return cmr_fail(CMR_EFORMAT, "text tower: inconsistent configuration (hidden %d, heads %d, layers %d, "
                                     "intermediate %d, vocab %d, positions %d, types %d)",
                        cfg->hidden, cfg->heads, cfg->layers, cfg->intermediate, cfg->vocab_size, cfg->max_position,
                        cfg->type_vocab);
    if (!(b->layers = calloc((size_t)cfg->layers, sizeof *b->layers)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    CMR_BIND2("embeddings.word_embeddings.weight", cfg->vocab_size, H, &b->word);
    CMR_BIND2("embeddings.position_embeddings.weight", cfg->max_position, H, &b->position);
    CMR_BIND2("embeddings.token_type_embeddings.weight", cfg->type_vocab, H, &b->token_type);
    CMR_BIND1("embeddings.LayerNorm.weight", H, &b->eln_w);
    CMR_BIND1("embeddings.LayerNorm.bias", H, &b->eln_b);
    for (int l = 0; l < cfg->layers; l++) {
        cmr_bert_layer *L = &b->layers[l];
        char n[128];
#define LYR(suffix) (snprintf(n, sizeof n, "encoder.layer.%d.%s", l, suffix), n)
        CMR_BIND2(LYR("attention.self.query.weight"), H, H, &L->q_w);
        CMR_BIND1(LYR("attention.self.query.bias"), H, &L->q_b);
        CMR_BIND2(LYR("attention.self.key.weight"), H, H, &L->k_w);
        CMR_BIND1(LYR("attention.self.key.bias"), H, &L->k_b);
        CMR_BIND2(LYR("attention.self.value.weight"), H, H, &L->v_w);
        CMR_BIND1(LYR("attention.self.value.bias"), H, &L->v_b);
        CMR_BIND2(LYR("attention.output.dense.weight"), H, H, &L->ao_w);
        CMR_BIND1(LYR("attention.output.dense.bias"), H, &L->ao_b);
        CMR_BIND1(LYR("attention.output.LayerNorm.weight"), H, &L->aln_w);
        CMR_BIND1(LYR("attention.output.LayerNorm.bias"), H, &L->aln_b);
        CMR_BIND2(LYR("intermediate.dense.weight"), I, H, &L->i_w);
        CMR_BIND1(LYR("intermediate.dense.bias"), I, &L->i_b);
        CMR_BIND2(LYR("output.dense.weight"), H, I, &L->o_w);
        CMR_BIND1(LYR("output.dense.bias"), H, &L->o_b);
        CMR_BIND1(LYR("output.LayerNorm.weight"), H, &L->oln_w);
        CMR_BIND1(LYR("output.LayerNorm.bias"), H, &L->oln_b);
#undef LYR
    }
    {
        char extra[128];
        snprintf(extra, sizeof extra, "%sencoder.layer.%d.output.dense.weight", prefix, cfg->layers);
        if (cmr_st_find(f, extra)) {
            rc = cmr_fail(CMR_EFORMAT, "%s: has %s but the configuration says %d layers", f->path, extra,
                          cfg->layers);
            goto fail;
        }
    }
    return 0;
fail:
    cmr_bert_unbind(b);
    return rc;
}

void cmr_bert_unbind(cmr_bert *b)
{
    free(b->layers);
    b->layers = NULL;
}
