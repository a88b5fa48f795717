/* The video tower: a space-time ViT with "Frozen in Time" divided attention
 * (../shared/docs/cmrclip-reference.md).  Tokens: CLS, then every patch of
 * frame 0, of frame 1, ...; token 1 + f*N + n is patch n of frame f. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_internal.h"

/* Rows of the MLP processed at once: bounds the hidden buffer (12,545 tokens
 * x 3,072 would be 154 MB) while keeping each sgemm large. */
#define MLP_CHUNK 1024

typedef struct vit_ws {
    float *x, *h, *qkv, *att, *t, *mlp, *cols, *scratch;
    size_t per_thread;
    int threads;
} vit_ws;

static size_t max_sz(size_t a, size_t b) { return a > b ? a : b; }

static size_t patches_per_frame(const cmr_vit_config *c)
{
    return (size_t)(c->image_size / c->patch) * (size_t)(c->image_size / c->patch);
}

static void vit_layout(const cmr_vit_config *c, int frames, size_t n, cmr_arena *a, vit_ws *w)
{
    size_t T = 1 + (size_t)frames * n, D = (size_t)c->dim, dh = D / (size_t)c->heads;
    size_t g = max_sz(n, (size_t)frames); /* largest group of queries */
    w->threads = omp_get_max_threads();
    /* Per thread: gathered q, k, v, the output and cmr_attend's scratch,
     * for a group, or the CLS query over every token. */
    size_t group = g * dh + 2 * (g + 1) * dh + g * dh + cmr_attend_scratch(g, g + 1, dh);
    size_t cls = cmr_attend_scratch(1, T, dh);
    w->per_thread = (max_sz(group, cls) + 15) / 16 * 16;
    w->x = cmr_arena_take(a, T * D);
    w->h = cmr_arena_take(a, T * D);
    w->qkv = cmr_arena_take(a, T * 3 * D);
    w->att = cmr_arena_take(a, T * D);
    w->t = cmr_arena_take(a, T * D);
    w->mlp = cmr_arena_take(a, MLP_CHUNK * (size_t)c->mlp_dim);
    w->cols = cmr_arena_take(a, n * (size_t)(c->channels * c->patch * c->patch));
    w->scratch = cmr_arena_take(a, w->per_thread * (size_t)w->threads);
}

size_t cmr_vit_workspace(const cmr_vit_config *cfg, int frames, size_t n)
{
    cmr_arena a = {0};
    vit_ws w;
    vit_layout(cfg, frames, n ? n : patches_per_frame(cfg), &a, &w);
    return a.used;
}

/* The CLS query attends over every token, in both attentions. */
static void attend_cls(const cmr_vit_config *c, size_t T, const float *qkv, float *att, const vit_ws *w)
{
    size_t D = (size_t)c->dim, dh = D / (size_t)c->heads;
#pragma omp parallel for
    for (int h = 0; h < c->heads; h++) {
        float *s = w->scratch + w->per_thread * (size_t)omp_get_thread_num();
        const float *base = qkv + (size_t)h * dh;
        cmr_attend(base, 3 * D, 1, base + D, base + 2 * D, 3 * D, T, dh, att + (size_t)h * dh, D, s);
    }
}

/* Patch queries: with time = 1, group g is spatial position g and its
 * members are that position in every frame; with time = 0, group g is frame
 * g and its members are the frame's patches.  Keys: CLS + the group. */
static void attend_groups(const cmr_vit_config *c, int frames, size_t n, int time, const float *qkv, float *att,
                          const vit_ws *w)
{
    size_t D = (size_t)c->dim, dh = D / (size_t)c->heads;
    int groups = time ? (int)n : frames, members = time ? frames : (int)n;
    size_t g = max_sz(n, (size_t)frames);
    int jobs = groups * c->heads;
#pragma omp parallel for schedule(dynamic, 4)
    for (int job = 0; job < jobs; job++) {
        int grp = job / c->heads, h = job % c->heads;
        float *q = w->scratch + w->per_thread * (size_t)omp_get_thread_num();
        float *k = q + g * dh, *v = k + (g + 1) * dh, *o = v + (g + 1) * dh, *s = o + g * dh;
        size_t off = (size_t)h * dh;
        memcpy(k, qkv + D + off, dh * sizeof *k);
        memcpy(v, qkv + 2 * D + off, dh * sizeof *v);
        for (int m = 0; m < members; m++) {
            size_t tok = time ? 1 + (size_t)m * n + (size_t)grp : 1 + (size_t)grp * n + (size_t)m;
            const float *row = qkv + tok * 3 * D + off;
            memcpy(q + (size_t)m * dh, row, dh * sizeof *q);
            memcpy(k + (size_t)(m + 1) * dh, row + D, dh * sizeof *k);
            memcpy(v + (size_t)(m + 1) * dh, row + 2 * D, dh * sizeof *v);
        }
        cmr_attend(q, dh, (size_t)members, k, v, dh, (size_t)members + 1, dh, o, dh, s);
        for (int m = 0; m < members; m++) {
            size_t tok = time ? 1 + (size_t)m * n + (size_t)grp : 1 + (size_t)grp * n + (size_t)m;
            memcpy(att + tok * D + off, o + (size_t)m * dh, dh * sizeof *o);
        }
    }
}

static void attention(const cmr_vit_config *c, int frames, size_t n, int time, const float *in, const float *qkv_w,
                      const float *qkv_b, const vit_ws *w)
{
    size_t T = 1 + (size_t)frames * n, D = (size_t)c->dim;
    cmr_linear(in, T, D, qkv_w, qkv_b, 3 * D, w->qkv);
    attend_cls(c, T, w->qkv, w->att, w);
    attend_groups(c, frames, n, time, w->qkv, w->att, w);
}

static void embed_patches(const cmr_vit *v, const float *video, int frames, size_t n, const vit_ws *w)
{
    const cmr_vit_config *c = &v->cfg;
    size_t D = (size_t)c->dim, P = (size_t)c->patch, S = (size_t)c->image_size, C = (size_t)c->channels;
    size_t per_row = S / P, cpp = C * P * P;
    for (int f = 0; f < frames; f++) {
        const float *frame = video + (size_t)f * C * S * S;
        /* im2col in the convolution weight's [c][y][x] order. */
#pragma omp parallel for
        for (size_t p = 0; p < n; p++) {
            size_t py = p / per_row, px = p % per_row;
            float *col = w->cols + p * cpp;
            for (size_t ch = 0; ch < C; ch++)
                for (size_t iy = 0; iy < P; iy++)
                    memcpy(col + (ch * P + iy) * P, frame + (ch * S + py * P + iy) * S + px * P, P * sizeof *col);
        }
        float *rows = w->x + (1 + (size_t)f * n) * D;
        cmr_linear(w->cols, n, cpp, v->patch_w, v->patch_b, D, rows);
        for (size_t p = 0; p < n; p++)
            for (size_t d = 0; d < D; d++)
                rows[p * D + d] += v->pos[(1 + p) * D + d] + v->temporal[(size_t)f * D + d];
    }
    for (size_t d = 0; d < D; d++)
        w->x[d] = v->cls[d] + v->pos[d];
}

static void block_forward(const cmr_vit_config *c, const cmr_vit_block *b, int frames, size_t n, const vit_ws *w,
                          const char *time_stage, cmr_model_probe_fn probe, void *probe_ctx)
{
    size_t T = 1 + (size_t)frames * n, D = (size_t)c->dim, M = (size_t)c->mlp_dim;
    /* t = x + TimeAttention(norm3(x)) */
    cmr_layernorm(w->x, T, D, b->norm3_w, b->norm3_b, c->ln_eps, w->h);
    attention(c, frames, n, 1, w->h, b->tqkv_w, b->tqkv_b, w);
    memcpy(w->t, w->x, T * D * sizeof *w->t);
    cmr_linear_acc(w->att, T, D, b->tproj_w, b->tproj_b, D, w->t);
    if (probe)
        probe(probe_ctx, time_stage, w->t, T, D);
    /* y = x + SpaceAttention(norm1(t)): the residual base is x, not t. */
    cmr_layernorm(w->t, T, D, b->norm1_w, b->norm1_b, c->ln_eps, w->h);
    attention(c, frames, n, 0, w->h, b->qkv_w, b->qkv_b, w);
    cmr_linear_acc(w->att, T, D, b->proj_w, b->proj_b, D, w->x);
    /* out = y + MLP(norm2(y)), by row chunks. */
    for (size_t r = 0; r < T; r += MLP_CHUNK) {
        size_t rows = T - r < MLP_CHUNK ? T - r : MLP_CHUNK;
        cmr_layernorm(w->x + r * D, rows, D, b->norm2_w, b->norm2_b, c->ln_eps, w->h);
        cmr_linear(w->h, rows, D, b->fc1_w, b->fc1_b, M, w->mlp);
        cmr_gelu(w->mlp, rows * M);
        cmr_linear_acc(w->mlp, rows, M, b->fc2_w, b->fc2_b, D, w->x + r * D);
    }
}

int cmr_vit_block_forward(const cmr_vit_config *cfg, const cmr_vit_block *block, float *tokens, int frames, size_t n,
                          cmr_arena *ws, cmr_model_probe_fn probe, void *probe_ctx)
{
    int rc = cmr_arena_reserve(ws, cmr_vit_workspace(cfg, frames, n));
    if (rc < 0)
        return rc;
    vit_ws w;
    vit_layout(cfg, frames, n, ws, &w);
    size_t T = 1 + (size_t)frames * n, D = (size_t)cfg->dim;
    memcpy(w.x, tokens, T * D * sizeof *tokens);
    block_forward(cfg, block, frames, n, &w, "video.block.time", probe, probe_ctx);
    memcpy(tokens, w.x, T * D * sizeof *tokens);
    return 0;
}

int cmr_vit_forward(const cmr_vit *v, const float *video, int frames, cmr_arena *ws, float *out_cls,
                    cmr_model_probe_fn probe, void *probe_ctx)
{
    const cmr_vit_config *c = &v->cfg;
    if (frames < 1 || frames > c->num_frames)
        return cmr_fail(CMR_EINVAL, "video tower: %d frames given, 1..%d accepted", frames, c->num_frames);
    size_t n = patches_per_frame(c), T = 1 + (size_t)frames * n, D = (size_t)c->dim;
    int rc = cmr_arena_reserve(ws, cmr_vit_workspace(c, frames, n));
    if (rc < 0)
        return rc;
    vit_ws w;
    vit_layout(c, frames, n, ws, &w);
    char time_stage[48], out_stage[48];

    embed_patches(v, video, frames, n, &w);
    if (probe)
        probe(probe_ctx, "video.tokens", w.x, T, D);
    for (int i = 0; i < c->depth; i++) {
        snprintf(time_stage, sizeof time_stage, "video.block%d.time", i);
        block_forward(c, &v->blocks[i], frames, n, &w, time_stage, probe, probe_ctx);
        if (probe) {
            snprintf(out_stage, sizeof out_stage, "video.block%d.out", i);
            probe(probe_ctx, out_stage, w.x, T, D);
        }
    }
    cmr_layernorm(w.x, 1, D, v->norm_w, v->norm_b, c->ln_eps, out_cls);
    if (probe)
        probe(probe_ctx, "video.norm_cls", out_cls, 1, D);
    return 0;
}

/* ---- weights ------------------------------------------------------------------- */

int cmr_vit_bind(cmr_vit *v, const cmr_vit_config *cfg, cmr_st_file *f, const char *prefix)
{
    memset(v, 0, sizeof *v);
    v->cfg = *cfg;
    int rc;
    const int64_t D = cfg->dim, M = cfg->mlp_dim, P = cfg->patch, C = cfg->channels;
    if (cfg->dim <= 0 || cfg->heads <= 0 || cfg->dim % cfg->heads || cfg->depth <= 0 || cfg->patch <= 0 ||
        cfg->image_size % cfg->patch || cfg->channels <= 0 || cfg->num_frames <= 0 || cfg->mlp_dim <= 0)
        return cmr_fail(CMR_EFORMAT, "video tower: inconsistent configuration (dim %d, heads %d, depth %d, patch %d, "
                                     "image %d, channels %d, frames %d, mlp %d)",
                        cfg->dim, cfg->heads, cfg->depth, cfg->patch, cfg->image_size, cfg->channels, cfg->num_frames,
                        cfg->mlp_dim);
    const int64_t N = (int64_t)(cfg->image_size / cfg->patch) * (cfg->image_size / cfg->patch);
    if (!(v->blocks = calloc((size_t)cfg->depth, sizeof *v->blocks)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    {
        int64_t s4[4] = {D, C, P, P}, s3[3] = {1, 1, D}, sp[3] = {1, N + 1, D}, st[3] = {1, cfg->num_frames, D};
        if ((rc = cmr_st_bind(f, prefix, "patch_embed.proj.weight", 4, s4, &v->patch_w)) < 0 ||
            (rc = cmr_st_bind(f, prefix, "cls_token", 3, s3, &v->cls)) < 0 ||
            (rc = cmr_st_bind(f, prefix, "pos_embed", 3, sp, &v->pos)) < 0 ||
            (rc = cmr_st_bind(f, prefix, "temporal_embed", 3, st, &v->temporal)) < 0)
            goto fail;
    }
    CMR_BIND1("patch_embed.proj.bias", D, &v->patch_b);
    CMR_BIND1("norm.weight", D, &v->norm_w);
    CMR_BIND1("norm.bias", D, &v->norm_b);
    for (int i = 0; i < cfg->depth; i++) {
        cmr_vit_block *b = &v->blocks[i];
        char n[96];
#define BLK(suffix) (snprintf(n, sizeof n, "blocks.%d.%s", i, suffix), n)
        CMR_BIND1(BLK("norm1.weight"), D, &b->norm1_w);
        CMR_BIND1(BLK("norm1.bias"), D, &b->norm1_b);
        CMR_BIND1(BLK("norm2.weight"), D, &b->norm2_w);
        CMR_BIND1(BLK("norm2.bias"), D, &b->norm2_b);
        CMR_BIND1(BLK("norm3.weight"), D, &b->norm3_w);
        CMR_BIND1(BLK("norm3.bias"), D, &b->norm3_b);
        CMR_BIND2(BLK("attn.qkv.weight"), 3 * D, D, &b->qkv_w);
        CMR_BIND1(BLK("attn.qkv.bias"), 3 * D, &b->qkv_b);
        CMR_BIND2(BLK("attn.proj.weight"), D, D, &b->proj_w);
        CMR_BIND1(BLK("attn.proj.bias"), D, &b->proj_b);
        CMR_BIND2(BLK("timeattn.qkv.weight"), 3 * D, D, &b->tqkv_w);
        CMR_BIND1(BLK("timeattn.qkv.bias"), 3 * D, &b->tqkv_b);
        CMR_BIND2(BLK("timeattn.proj.weight"), D, D, &b->tproj_w);
        CMR_BIND1(BLK("timeattn.proj.bias"), D, &b->tproj_b);
        CMR_BIND2(BLK("mlp.fc1.weight"), M, D, &b->fc1_w);
        CMR_BIND1(BLK("mlp.fc1.bias"), M, &b->fc1_b);
        CMR_BIND2(BLK("mlp.fc2.weight"), D, M, &b->fc2_w);
        CMR_BIND1(BLK("mlp.fc2.bias"), D, &b->fc2_b);
#undef BLK
    }
    {
        /* One block more than configured would be silently ignored: refuse. */
        char extra[96];
        snprintf(extra, sizeof extra, "%sblocks.%d.norm1.weight", prefix, cfg->depth);
        if (cmr_st_find(f, extra)) {
            rc = cmr_fail(CMR_EFORMAT, "%s: has %s but the configuration says depth %d", f->path, extra, cfg->depth);
            goto fail;
        }
    }
    return 0;
fail:
    cmr_vit_unbind(v);
    return rc;
}

void cmr_vit_unbind(cmr_vit *v)
{
    free(v->blocks);
    v->blocks = NULL;
}
