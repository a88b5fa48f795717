/* The compact model's video tower (docs/compact-model.md), forward and
 * backward.
 *
 * All B*F frames go through the five 3x3 convolutions as one batch of
 * images.  Activations are channels-last ([frame][y][x][channel]): a
 * convolution is im2col + one matrix product whose output rows (positions)
 * are the next layer's input pixels, with no transposition between layers.
 * An im2col row is ordered (ky, kx, channel), so that a tap copies `cin`
 * contiguous floats; the PyTorch weights [out][in][3][3] are permuted to
 * match at each call (≤ 300 k floats: negligible), gradients permuted back.
 *
 * Work is split into chunks of whole frames and one OpenMP thread handles
 * a chunk from end to end: im2col into its private buffer (≤ 1 MB, so it
 * stays in L2), the product, bias + ReLU; in backward the ReLU mask, dW and
 * db into per-thread accumulators, dcols -> col2im into the chunk's own
 * input gradient.  Frames never interact: no races, no product over a
 * huge im2col matrix.  Chunks are statically assigned and the accumulators
 * summed in thread order: gradients are reproducible for a thread count.
 *
 * Memory (training cache): a copy of the input (conv1's dW needs it after
 * the caller's buffer may have changed), every layer's post-ReLU output
 * (the ReLU mask: y > 0 iff the pre-activation was), two ping-pong buffers
 * of activation gradients, per-thread scratch, the small head buffers:
 * ~145 MB at B = 32, F = 16, 64 x 64.  im2col is recomputed in backward
 * rather than kept (~190 MB more at B = 32).  Inference needs two
 * ping-pong activation buffers for a slice of the batch
 * (INFER_SLICE_FLOATS), the per-thread scratch, the head buffers and the
 * permuted weights: allocated and freed per call (cache NULL), or kept in
 * a scratch between calls (cmr_compact_video_infer: a model handle's;
 * allocating and faulting them in, and permuting, cost a member 1.7-17 ms
 * a study instead of 1.3, docs/benchmarks.md). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "model_internal.h"

#define NCONV CMR_COMPACT_CONVS
/* Target im2col chunk: 256 k floats (1 MB, within L2 with the chunk's
 * output), but at least CHUNK_MIN_ROWS rows: every row tile re-reads a
 * panel of the weights, which should serve many rows while in cache. */
#define CHUNK_FLOATS (256 * 1024)
#define CHUNK_MIN_ROWS 256
#define STD_EPS 1e-5
#define PAR_MIN_MACS 4e6
/* Inference: activations per slice of studies (see the forward). */
#define INFER_SLICE_FLOATS (2u << 20)

/* The products run on our own kernel where the CPU has AVX2: Debian's
 * OpenBLAS 0.3.21 takes this CPU for a 'Prescott', and with its SSE3 sgemm
 * forward + backward (B = 32, 2 threads) took ~2.8x as long (its SkylakeX
 * kernel: about the same).  Vector extensions as in ops.c: 16 floats per
 * vector, one zmm under AVX-512, two ymm under AVX2, clones chosen at run
 * time; -ffp-contract=fast for FMAs (see tests/compact_video.cmake). */
typedef float v16 __attribute__((vector_size(64)));
typedef int32_t v16i __attribute__((vector_size(64)));

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(CMR_NO_CLONES)
#define CMR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#define CMR_HAVE_CLONES 1
#else
#define CMR_CLONES
#endif

/* Test hook (see the end of this file): a stage of the last forward kept in
 * a training cache.  Proposed for compact.h. */

typedef struct conv_geom {
    int cin, cout, stride, in_side, out_side;
    size_t in_pix, out_pix, k; /* k = 9 * cin: one im2col row */
    size_t chunk;              /* frames per chunk */
    int threads;               /* for this layer: 1 when too small to share */
    const float *w, *b;        /* PyTorch layout, inside params */
    size_t w_off, b_off;       /* offsets in the flat vector (for grads) */
} conv_geom;

typedef struct geom {
    conv_geom conv[NCONV];
    int batch, frames, hidden, embed, threads;
    int channels;                             /* conv5's output channels */
    int feat;                                 /* per frame: channels, twice with the spatial max */
    int spatial_max;
    int pooled;                               /* 6 feat */
    size_t n;                                 /* batch * frames */
    size_t act[NCONV], act_max;               /* floats of each layer's output */
    size_t cols_max, dw_max, wperm_total;     /* per-thread im2col; dW accumulator; permuted weights */
    const float *fc_w, *fc_b, *proj_w, *proj_b;
    size_t fc_w_off, fc_b_off, proj_w_off, proj_b_off;
} geom;

struct cmr_compact_video_cache {
    int keep;                  /* training cache: every layer's output kept */
    int batch;                 /* of the last forward; 0 before any */
    cmr_compact_config cfg;    /* of the last forward */
    /* capacities (floats), to reuse the buffers for batches that fit */
    size_t cap_act[NCONV], cap_dact[2], cap_scratch, cap_head, cap_wperm, cap_video;
    float *video;              /* training: a copy of the input (conv1's dW needs it) */
    float *act[NCONV];         /* training: own buffers; inference: ping-pong */
    float *dact[2];            /* activation gradients, ping-pong */
    float *scratch;            /* threads x (cols + dcols + dW + db) */
    size_t scratch_stride;     /* floats per thread */
    float *wperm;              /* permuted conv weights, all layers */
    const float *wperm_of;     /* inference scratch: the parameters wperm holds, permuted (NULL: none) */
    float *head;               /* g, pooled, z, and backward's dg, dpooled, dz */
};

static float *falloc(size_t n)
{
    /* 64-byte aligned, as sgemm likes; aligned_alloc wants a size multiple
     * of the alignment. */
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
    return aligned_alloc(64, bytes ? bytes : 64);
}

/* ---- geometry ------------------------------------------------------------------------------------ */

static void bind(const cmr_compact_layout *l, const float *params, const char *name, const float **p, size_t *off)
{
    const cmr_compact_tensor *t = cmr_compact_find(l, name);
    /* The layout always has the video tensors: cmr_compact_layout_of made it. */
    *off = t->offset;
    *p = params ? params + t->offset : NULL;
}

static int geom_of(const cmr_compact_config *c, const float *params, int batch, geom *g)
{
    if (cmr_compact_config_check(c) < 0)
        return cmr_fail_context(CMR_EINVAL, "compact video tower: ");
    memset(g, 0, sizeof *g);
    cmr_compact_layout l;
    cmr_compact_layout_of(c, &l);
    g->batch = batch;
    g->frames = c->frames;
    g->n = (size_t)batch * (size_t)c->frames;
    g->threads = omp_get_max_threads();
    if (g->threads < 1)
        g->threads = 1;
    int cin = c->channels, side = c->size;
    /* Batches whose buffers could not be addressed (or would be absurd)
     * are rejected after the loop: size_t products that wrapped are then
     * never used. */
    double total = 0;
    for (int i = 0; i < NCONV; i++) {
        conv_geom *v = &g->conv[i];
        char name[32];
        v->cin = cin;
        v->cout = c->conv_channels[i];
        v->stride = c->conv_strides[i];
        v->in_side = side;
        v->out_side = (side - 1) / v->stride + 1;
        v->in_pix = (size_t)side * (size_t)side;
        v->out_pix = (size_t)v->out_side * (size_t)v->out_side;
        v->k = 9 * (size_t)cin;
        total += (double)g->n * (double)v->out_pix * v->cout;
        snprintf(name, sizeof name, "video.conv%d.weight", i + 1);
        bind(&l, params, name, &v->w, &v->w_off);
        snprintf(name, sizeof name, "video.conv%d.bias", i + 1);
        bind(&l, params, name, &v->b, &v->b_off);
        /* Waking a second thread costs more than a layer of a few million
         * multiply-adds (and a spinning thread on a busy machine more). */
        double macs = (double)g->n * (double)v->out_pix * (double)v->cout * (double)v->k;
        v->threads = macs < PAR_MIN_MACS ? 1 : g->threads;
        size_t fpc = CHUNK_FLOATS / (v->out_pix * v->k);
        size_t min_frames = (CHUNK_MIN_ROWS + v->out_pix - 1) / v->out_pix;
        size_t share = (g->n + (size_t)v->threads - 1) / (size_t)v->threads; /* every thread gets work */
        fpc = fpc < min_frames ? min_frames : fpc;
        fpc = fpc > share ? share : fpc;
        fpc = fpc ? fpc : 1;
        /* a whole number of chunks per thread, as even as frames allow
         * (static schedule: an odd chunk would leave a thread idle) */
        size_t nch = (g->n + fpc - 1) / fpc;
        nch = (nch + (size_t)v->threads - 1) / (size_t)v->threads * (size_t)v->threads;
        v->chunk = (g->n + nch - 1) / nch;
        g->act[i] = g->n * v->out_pix * (size_t)v->cout;
        g->act_max = g->act[i] > g->act_max ? g->act[i] : g->act_max;
        size_t cols = v->chunk * v->out_pix * v->k, dw = (size_t)v->cout * v->k + (size_t)v->cout;
        g->cols_max = cols > g->cols_max ? cols : g->cols_max;
        g->dw_max = dw > g->dw_max ? dw : g->dw_max;
        g->wperm_total += 2 * (size_t)v->cout * v->k;
        cin = v->cout;
        side = v->out_side;
    }
    if (total > (double)(1ull << 36))
        return cmr_fail(CMR_EINVAL, "compact video tower: batch %d too large (%.3g activations)", batch, total);
    g->channels = cin;
    g->spatial_max = c->spatial_max;
    g->feat = cin * (1 + c->spatial_max);
    g->pooled = 6 * g->feat;
    g->hidden = c->video_hidden;
    g->embed = c->embed_dim;
    bind(&l, params, "video.fc.weight", &g->fc_w, &g->fc_w_off);
    bind(&l, params, "video.fc.bias", &g->fc_b, &g->fc_b_off);
    bind(&l, params, "video.proj.weight", &g->proj_w, &g->proj_w_off);
    bind(&l, params, "video.proj.bias", &g->proj_b, &g->proj_b_off);
    return 0;
}

/* Head buffers: g [n][feat], pooled [B][6 feat], z [B][hidden]; backward
 * adds dg, dpooled, dz of the same sizes. */
static size_t head_floats(const geom *g)
{
    return g->n * (size_t)g->feat + (size_t)g->batch * (size_t)(g->pooled + g->hidden);
}

/* ---- buffers ------------------------------------------------------------------------------------- */

/* Makes *buf hold at least n floats (contents not kept). */
static int ensure(float **buf, size_t *cap, size_t n)
{
    if (*buf && *cap >= n)
        return 0;
    free(*buf);
    *buf = falloc(n);
    *cap = *buf ? n : 0;
    if (!*buf)
        return cmr_fail(CMR_ENOMEM, "compact video tower: out of memory (%zu MB)", n * sizeof(float) >> 20);
    return 0;
}

/* Sizes the cache for convolutions of geometry g (keep: training) and head
 * buffers of `head` floats. */
static int cache_fit(cmr_compact_video_cache *cc, const geom *g, int keep, size_t head)
{
    int rc;
    if (keep) {
        size_t nv = g->n * g->conv[0].in_pix * (size_t)g->conv[0].cin;
        if ((rc = ensure(&cc->video, &cc->cap_video, nv)) < 0)
            return rc;
        for (int i = 0; i < NCONV; i++)
            if ((rc = ensure(&cc->act[i], &cc->cap_act[i], g->act[i])) < 0)
                return rc;
    } else {
        /* Inference: layer i writes act[i % 2] while reading act[(i-1) % 2]. */
        for (int i = 0; i < 2; i++)
            if ((rc = ensure(&cc->act[i], &cc->cap_act[i], g->act_max)) < 0)
                return rc;
    }
    /* per thread: cols; training adds dcols (same size) and dW + db */
    size_t stride = (keep ? 2 * g->cols_max + g->dw_max : g->cols_max);
    stride = (stride + 15) / 16 * 16; /* every thread's block 64-byte aligned */
    if ((rc = ensure(&cc->scratch, &cc->cap_scratch, stride * (size_t)g->threads)) < 0)
        return rc;
    cc->scratch_stride = stride;
    if ((rc = ensure(&cc->wperm, &cc->cap_wperm, g->wperm_total)) < 0 ||
        (rc = ensure(&cc->head, &cc->cap_head, (keep ? 2 : 1) * head)) < 0)
        return rc;
    cc->keep = keep;
    return 0;
}

/* Frees the buffers (not the struct). */
static void cache_release(cmr_compact_video_cache *c)
{
    for (int i = 0; i < NCONV; i++)
        free(c->act[i]);
    float *bufs[] = {c->video, c->dact[0], c->dact[1], c->scratch, c->wperm, c->head};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free(bufs[i]);
}

void cmr_compact_video_cache_free(cmr_compact_video_cache *cache)
{
    if (cache)
        cache_release(cache);
    free(cache);
}

/* Every layer's weights [out][in][3][3] in the two layouts the products
 * want, back to back: wp [out][ky][kx][in] (dcols = dY · wp) and its
 * transpose wt [ky][kx][in][out] (forward: cols · wt). */
static void permute_weights(const geom *g, float *w)
{
    for (int i = 0; i < NCONV; i++) {
        const conv_geom *v = &g->conv[i];
        const size_t k = v->k, cout = (size_t)v->cout, cin = (size_t)v->cin;
        float *wp = w, *wt = w + cout * k;
        for (size_t o = 0; o < cout; o++)
            for (size_t ci = 0; ci < cin; ci++)
                for (size_t t = 0; t < 9; t++) {
                    float x = v->w[o * k + ci * 9 + t];
                    wp[o * k + t * cin + ci] = x;
                    wt[(t * cin + ci) * cout + o] = x;
                }
        w += 2 * cout * k;
    }
}

/* ---- the product kernel -------------------------------------------------------------------------- */

enum { GEMM_ACC = 1, GEMM_RELU = 2 };

#ifdef CMR_HAVE_CLONES
/* Unaligned vector access without helper functions: a v16 passed or
 * returned by value draws -Wpsabi (GCC) and ABI errors in clang's AVX2
 * clone; a pointer to an under-aligned, may_alias vector type does not. */
typedef float v16u __attribute__((vector_size(64), aligned(4), may_alias));
#define LOAD16(p) ((v16) * (const v16u *)(p))
#define STORE16(p, v) (*(v16u *)(p) = (v))

/* One tile of R rows x 16 W columns, accumulated in registers over the
 * whole reduction: C (+)= A · B (+ bias, then ReLU).  R, W are constants
 * at every call: the arrays become registers. */
static inline __attribute__((always_inline)) void tile(int R, int W, size_t K, const float *A, size_t sai,
                                                       size_t sad, const float *B, size_t ldb, float *C, size_t ldc,
                                                       const float *bias, int flags)
{
    v16 c[4][2];
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++)
            c[r][w] = bias ? LOAD16(bias + 16 * w) : (v16){0};
    for (size_t d = 0; d < K; d++) {
        v16 b[2];
        for (int w = 0; w < W; w++)
            b[w] = LOAD16(B + d * ldb + 16 * (size_t)w);
        for (int r = 0; r < R; r++) {
            float a = A[(size_t)r * sai + d * sad];
            for (int w = 0; w < W; w++)
                c[r][w] += a * b[w];
        }
    }
    for (int r = 0; r < R; r++)
        for (int w = 0; w < W; w++) {
            float *p = C + (size_t)r * ldc + 16 * (size_t)w;
            v16 x = c[r][w];
            if (flags & GEMM_RELU)
                x = (v16)((v16i)x & (x > (v16){0}));
            STORE16(p, flags & GEMM_ACC ? x + LOAD16(p) : x);
        }
}

/* All rows of one panel of 16 W columns: 4-row tiles, then single rows. */
static inline __attribute__((always_inline)) void panel(int W, size_t M, size_t K, const float *A, size_t sai,
                                                        size_t sad, const float *B, size_t ldb, float *C, size_t ldc,
                                                        const float *bias, int flags)
{
    size_t i = 0;
    for (; i + 4 <= M; i += 4)
        tile(4, W, K, A + i * sai, sai, sad, B, ldb, C + i * ldc, ldc, bias, flags);
    for (; i < M; i++)
        tile(1, W, K, A + i * sai, sai, sad, B, ldb, C + i * ldc, ldc, bias, flags);
}

/* C[M][N] (+)= A · B, A(i, d) = A[i*sai + d*sad] (either orientation),
 * B[K][N] row-major (ldb), C row-major (ldc); bias [N] or NULL; flags
 * GEMM_ACC (add to C), GEMM_RELU (max(0, .) before storing; not with ACC).
 * Column panels of 32 outer, 4-row tiles inner: the panel of B stays in
 * L1/L2 while the rows of A stream. */
CMR_CLONES static void gemm_vec(size_t M, size_t N, size_t K, const float *A, size_t sai, size_t sad,
                                const float *B, size_t ldb, float *C, size_t ldc, const float *bias, int flags)
{
    size_t j = 0;
    for (; j + 32 <= N; j += 32)
        panel(2, M, K, A, sai, sad, B + j, ldb, C + j, ldc, bias ? bias + j : NULL, flags);
    for (; j + 16 <= N; j += 16)
        panel(1, M, K, A, sai, sad, B + j, ldb, C + j, ldc, bias ? bias + j : NULL, flags);
    /* fewer than 16 columns left (small test configurations only: the
     * default's widths are all multiples of 16) */
    for (; j < N; j++)
        for (size_t i = 0; i < M; i++) {
            float s = bias ? bias[j] : 0;
            for (size_t d = 0; d < K; d++)
                s += A[i * sai + d * sad] * B[d * ldb + j];
            if (flags & GEMM_RELU)
                s = s > 0 ? s : 0;
            C[i * ldc + j] = flags & GEMM_ACC ? C[i * ldc + j] + s : s;
        }
}

#endif

/* The vector kernel where the CPU has AVX2; elsewhere, and where there
 * are no clones (GCC's ASan build, other architectures), OpenBLAS: the
 * kernel's 4 x 32 tile wants 16 vector registers of 512 bits, and on
 * 128-bit SSE it spills to ~20x slower than sgemm.  One operand of A is
 * unit-stride: A is [M][K] (sad = 1) or [K][M] (sai = 1). */
static void gemm(size_t M, size_t N, size_t K, const float *A, size_t sai, size_t sad, const float *B, size_t ldb,
                 float *C, size_t ldc, const float *bias, int flags)
{
#ifdef CMR_HAVE_CLONES
    if (__builtin_cpu_supports("avx2")) {
        gemm_vec(M, N, K, A, sai, sad, B, ldb, C, ldc, bias, flags);
        return;
    }
#endif
    if (!(flags & GEMM_ACC))
        for (size_t i = 0; i < M; i++) {
            if (bias)
                memcpy(C + i * ldc, bias, N * sizeof *C);
            else
                memset(C + i * ldc, 0, N * sizeof *C);
        }
    cblas_sgemm(CblasRowMajor, sad == 1 ? CblasNoTrans : CblasTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0f, A,
                (int)(sad == 1 ? sai : sad), B, (int)ldb, 1.0f, C, (int)ldc);
    if (flags & GEMM_RELU)
        for (size_t i = 0; i < M; i++)
            for (size_t j = 0; j < N; j++)
                C[i * ldc + j] = C[i * ldc + j] > 0 ? C[i * ldc + j] : 0;
}

/* dy = dy * (y > 0) over rows x n, the column sums added to db.  Memory
 * bound: plain code (the compiler vectorises it). */
static void relu_backward(float *dy, const float *y, size_t rows, size_t n, float *db)
{
    for (size_t r = 0; r < rows; r++) {
        float *d = dy + r * n;
        const float *o = y + r * n;
        for (size_t j = 0; j < n; j++) {
            d[j] = o[j] > 0 ? d[j] : 0;
            db[j] += d[j];
        }
    }
}

/* ---- convolution --------------------------------------------------------------------------------- */

/* Where pixel (y, x), channel c of frame n is: n*frame + (y*side + x)*pix + c*chan.
 * The video input is [frame][channel][y][x]; activations are channels-last. */
typedef struct layout {
    size_t frame, pix, chan;
} layout;

/* im2col of frames [n0, n1): cols[row][(ky*3 + kx)*cin + c], rows in
 * (frame, oy, ox) order, zero where the tap falls in the padding. */
static void im2col(const conv_geom *v, const float *src, layout in, size_t n0, size_t n1, float *cols)
{
    const int s = v->stride, side = v->in_side, cin = v->cin;
    float *row = cols;
    for (size_t n = n0; n < n1; n++) {
        const float *x = src + n * in.frame;
        for (int oy = 0; oy < v->out_side; oy++)
            for (int ox = 0; ox < v->out_side; ox++, row += v->k)
                for (int t = 0; t < 9; t++) {
                    int iy = oy * s - 1 + t / 3, ix = ox * s - 1 + t % 3;
                    float *dst = row + t * cin;
                    if (iy < 0 || iy >= side || ix < 0 || ix >= side) {
                        memset(dst, 0, (size_t)cin * sizeof *dst);
                        continue;
                    }
                    const float *px = x + (size_t)(iy * side + ix) * in.pix;
                    if (in.chan == 1 && cin > 1)
                        memcpy(dst, px, (size_t)cin * sizeof *dst);
                    else
                        for (int c = 0; c < cin; c++)
                            dst[c] = px[(size_t)c * in.chan];
                }
    }
}

/* The adjoint of im2col for channels-last frames [n0, n1): dx (zeroed
 * here) accumulates every tap's gradient; padding taps are dropped. */
static void col2im(const conv_geom *v, const float *dcols, size_t n0, size_t n1, float *dx)
{
    const int s = v->stride, side = v->in_side, cin = v->cin;
    memset(dx + n0 * v->in_pix * (size_t)cin, 0, (n1 - n0) * v->in_pix * (size_t)cin * sizeof *dx);
    const float *row = dcols;
    for (size_t n = n0; n < n1; n++) {
        float *x = dx + n * v->in_pix * (size_t)cin;
        for (int oy = 0; oy < v->out_side; oy++)
            for (int ox = 0; ox < v->out_side; ox++, row += v->k)
                for (int t = 0; t < 9; t++) {
                    int iy = oy * s - 1 + t / 3, ix = ox * s - 1 + t % 3;
                    if (iy < 0 || iy >= side || ix < 0 || ix >= side)
                        continue;
                    float *px = x + (size_t)(iy * side + ix) * (size_t)cin;
                    const float *src = row + t * cin;
                    for (int c = 0; c < cin; c++)
                        px[c] += src[c];
                }
    }
}

static layout input_layout(const geom *g, int layer)
{
    const conv_geom *v = &g->conv[layer];
    if (layer == 0) /* the video: [frame][channel][y][x] */
        return (layout){v->in_pix * (size_t)v->cin, 1, v->in_pix};
    return (layout){v->in_pix * (size_t)v->cin, (size_t)v->cin, 1};
}

static size_t chunks_of(const geom *g, const conv_geom *v)
{
    return (g->n + v->chunk - 1) / v->chunk;
}

/* y = relu(conv(x) + b) for all frames; wt: this layer's weights as
 * [k][cout] (see permute_weights). */
static void conv_forward(const geom *g, int layer, const float *x, const float *wt, float *y, float *scratch,
                         size_t stride)
{
    const conv_geom *v = &g->conv[layer];
    const layout in = input_layout(g, layer);
    const long nchunks = (long)chunks_of(g, v);
    const size_t cout = (size_t)v->cout;
#pragma omp parallel num_threads(v->threads)
    {
        float *cols = scratch + (size_t)omp_get_thread_num() * stride;
#pragma omp for schedule(static)
        for (long ch = 0; ch < nchunks; ch++) {
            size_t n0 = (size_t)ch * v->chunk, n1 = n0 + v->chunk < g->n ? n0 + v->chunk : g->n;
            size_t rows = (n1 - n0) * v->out_pix;
            im2col(v, x, in, n0, n1, cols);
            /* out[rows][cout] = relu(cols · W^T + b) */
            gemm(rows, cout, v->k, cols, v->k, 1, wt, cout, y + n0 * v->out_pix * cout, cout, v->b, GEMM_RELU);
        }
    }
}

/* Backward of layer `layer`: dy (the gradient of its post-ReLU output,
 * overwritten by the pre-activation gradient), y its output, x its input.
 * Adds dW, db into grads; writes dx (channels-last) unless dx is NULL.
 * wp: the weights as [cout][k]. */
static void conv_backward(const geom *g, int layer, const float *x, const float *y, float *dy, const float *wp,
                          float *dx, float *grads, float *scratch, size_t stride)
{
    const conv_geom *v = &g->conv[layer];
    const layout in = input_layout(g, layer);
    const long nchunks = (long)chunks_of(g, v);
    const size_t cout = (size_t)v->cout, k = v->k, nw = cout * k, nacc = nw + cout;
    float *gw = grads + v->w_off, *gb = grads + v->b_off;
#pragma omp parallel num_threads(v->threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        /* acc: dW as [k][cout] (the product's natural layout), then db */
        float *cols = scratch + (size_t)t * stride, *dcols = cols + g->cols_max, *acc = dcols + g->cols_max;
        memset(acc, 0, nacc * sizeof *acc);
#pragma omp for schedule(static)
        for (long ch = 0; ch < nchunks; ch++) {
            size_t n0 = (size_t)ch * v->chunk, n1 = n0 + v->chunk < g->n ? n0 + v->chunk : g->n;
            size_t rows = (n1 - n0) * v->out_pix, off = n0 * v->out_pix * cout;
            float *d = dy + off;
            relu_backward(d, y + off, rows, cout, acc + nw);
            im2col(v, x, in, n0, n1, cols);
            /* dW^T[k][cout] += cols^T · dY */
            gemm(k, cout, rows, cols, 1, k, d, cout, acc, cout, NULL, GEMM_ACC);
            if (dx) {
                /* dcols = dY · W, then scattered back onto the input pixels */
                gemm(rows, k, cout, d, cout, 1, wp, k, dcols, k, NULL, 0);
                col2im(v, dcols, n0, n1, dx);
            }
        }
        /* The implicit barrier above: every accumulator is complete.  Sum
         * them in thread order (reproducible), back into PyTorch's order. */
#pragma omp for schedule(static)
        for (long e = 0; e < (long)nacc; e++) {
            float s = 0;
            for (int u = 0; u < nt; u++)
                s += scratch[(size_t)u * stride + 2 * g->cols_max + (size_t)e];
            if ((size_t)e >= nw) {
                gb[(size_t)e - nw] += s;
            } else {
                size_t kk = (size_t)e / cout, o = (size_t)e % cout, tap = kk / (size_t)v->cin,
                       ci = kk % (size_t)v->cin;
                gw[o * k + ci * 9 + tap] += s;
            }
        }
    }
}

/* ---- head: spatial mean, frame pooling, fc, proj ------------------------------------------------- */

/* Frame statistics of one study's features g[F][feat] into pooled[6 feat]:
 * mean, std (population, + STD_EPS under the root), quarter means. */
static void pool_frames(const float *gf, int frames, int feat, float *pooled)
{
    int quarter = frames / 4;
    for (int c = 0; c < feat; c++) {
        double mean = 0, var = 0, q[4] = {0, 0, 0, 0};
        for (int f = 0; f < frames; f++) {
            mean += gf[(size_t)f * feat + c];
            q[f / quarter] += gf[(size_t)f * feat + c];
        }
        mean /= frames;
        for (int f = 0; f < frames; f++) {
            double d = gf[(size_t)f * feat + c] - mean;
            var += d * d;
        }
        pooled[c] = (float)mean;
        pooled[feat + c] = (float)sqrt(var / frames + STD_EPS);
        for (int i = 0; i < 4; i++)
            pooled[(2 + i) * feat + c] = (float)(q[i] / quarter);
    }
}

/* The adjoint of pool_frames: dg[F][feat] from dpooled[6 feat].
 * d std / d g_f = (g_f - mean) / (F std): the mean's own dependence on g_f
 * cancels because the deviations sum to zero. */
static void pool_frames_backward(const float *gf, int frames, int feat, const float *dp, float *dg)
{
    int quarter = frames / 4;
    for (int c = 0; c < feat; c++) {
        double mean = 0, var = 0;
        for (int f = 0; f < frames; f++)
            mean += gf[(size_t)f * feat + c];
        mean /= frames;
        for (int f = 0; f < frames; f++) {
            double d = gf[(size_t)f * feat + c] - mean;
            var += d * d;
        }
        double sd = sqrt(var / frames + STD_EPS);
        for (int f = 0; f < frames; f++)
            dg[(size_t)f * feat + c] = (float)(dp[c] / frames +
                                               dp[feat + c] * (gf[(size_t)f * feat + c] - mean) / (frames * sd) +
                                               dp[(2 + f / quarter) * feat + c] / quarter);
    }
}

/* g[n] = every channel's mean over conv5's positions, then (spatial_max)
 * every channel's max: a scar a few pixels wide is a small part of the mean
 * but all of a maximum. */
static void spatial_pool(const geom *g, const float *act5, float *gbuf)
{
    const size_t ch = (size_t)g->channels, feat = (size_t)g->feat, pix = g->conv[NCONV - 1].out_pix;
    for (size_t n = 0; n < g->n; n++) {
        const float *a = act5 + n * pix * ch;
        float *o = gbuf + n * feat;
        memset(o, 0, ch * sizeof *o);
        for (size_t p = 0; p < pix; p++)
            for (size_t c = 0; c < ch; c++)
                o[c] += a[p * ch + c];
        for (size_t c = 0; c < ch; c++)
            o[c] /= (float)pix;
        if (!g->spatial_max)
            continue;
        float *mx = o + ch;
        memcpy(mx, a, ch * sizeof *mx);
        for (size_t p = 1; p < pix; p++)
            for (size_t c = 0; c < ch; c++)
                mx[c] = a[p * ch + c] > mx[c] ? a[p * ch + c] : mx[c];
    }
}

/* The adjoint of spatial_pool into d5: the mean spreads dg evenly; the max
 * sends its gradient to the first position holding the maximum (ties only
 * occur at ReLU's zero, where conv5's own backward zeroes it anyway). */
static void spatial_pool_backward(const geom *g, const float *act5, const float *dg, float *d5)
{
    const size_t ch = (size_t)g->channels, feat = (size_t)g->feat, pix = g->conv[NCONV - 1].out_pix;
    const float inv = 1.0f / (float)pix;
    for (size_t n = 0; n < g->n; n++) {
        const float *a = act5 + n * pix * ch, *dgn = dg + n * feat;
        float *d = d5 + n * pix * ch;
        for (size_t p = 0; p < pix; p++)
            for (size_t c = 0; c < ch; c++)
                d[p * ch + c] = dgn[c] * inv;
        if (!g->spatial_max)
            continue;
        for (size_t c = 0; c < ch; c++) {
            size_t best = 0;
            for (size_t p = 1; p < pix; p++)
                best = a[p * ch + c] > a[best * ch + c] ? p : best;
            d[best * ch + c] += dgn[ch + c];
        }
    }
}

static void head_forward(const geom *g, const float *gbuf, float *pooled, float *z, float *emb)
{
    const size_t feat = (size_t)g->feat;
    for (int b = 0; b < g->batch; b++)
        pool_frames(gbuf + (size_t)b * (size_t)g->frames * feat, g->frames, g->feat,
                    pooled + (size_t)b * (size_t)g->pooled);
    cmr_linear(pooled, (size_t)g->batch, (size_t)g->pooled, g->fc_w, g->fc_b, (size_t)g->hidden, z);
    cmr_relu(z, (size_t)g->batch * (size_t)g->hidden);
    cmr_linear(z, (size_t)g->batch, (size_t)g->hidden, g->proj_w, g->proj_b, (size_t)g->embed, emb);
}

/* fc / proj backward for one linear layer y = x W^T + b over the batch:
 * gw += dy^T x, gb += sum dy, dx = dy W (when dx is non-NULL). */
static void linear_backward(int batch, int in, int out, const float *x, const float *w, const float *dy, float *gw,
                            float *gb, float *dx)
{
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, batch, 1.0f, dy, out, x, in, 1.0f, gw, in);
    for (int b = 0; b < batch; b++)
        for (int j = 0; j < out; j++)
            gb[j] += dy[(size_t)b * out + j];
    if (dx)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, batch, in, out, 1.0f, dy, out, w, in, 0.0f, dx, in);
}

/* From d_emb to the gradient of conv5's output (written into d5). */
static void head_backward(const geom *g, const float *gbuf, const float *pooled, const float *z, const float *act5,
                          const float *d_emb, float *dg, float *dpooled, float *dz, float *grads, float *d5)
{
    linear_backward(g->batch, g->hidden, g->embed, z, g->proj_w, d_emb, grads + g->proj_w_off,
                    grads + g->proj_b_off, dz);
    for (size_t i = 0; i < (size_t)g->batch * (size_t)g->hidden; i++)
        dz[i] = z[i] > 0 ? dz[i] : 0;
    linear_backward(g->batch, g->pooled, g->hidden, pooled, g->fc_w, dz, grads + g->fc_w_off, grads + g->fc_b_off,
                    dpooled);
    const size_t feat = (size_t)g->feat, per = (size_t)g->frames * feat;
    for (int b = 0; b < g->batch; b++)
        pool_frames_backward(gbuf + (size_t)b * per, g->frames, g->feat, dpooled + (size_t)b * (size_t)g->pooled,
                             dg + (size_t)b * per);
    spatial_pool_backward(g, act5, dg, d5);
}

/* ---- entry points -------------------------------------------------------------------------------- */

/* The convolutions of g->batch studies and their spatial pooling into gbuf
 * (cc->wperm already filled). */
static void run_convs(const geom *g, cmr_compact_video_cache *cc, const float *video, float *gbuf)
{
    const float *x = video, *w = cc->wperm;
    for (int i = 0; i < NCONV; i++) {
        float *y = cc->keep ? cc->act[i] : cc->act[i % 2];
        size_t nw = (size_t)g->conv[i].cout * g->conv[i].k;
        conv_forward(g, i, x, w + nw, y, cc->scratch, cc->scratch_stride);
        w += 2 * nw;
        x = y;
    }
    spatial_pool(g, x, gbuf);
}

static int same_video_config(const cmr_compact_config *a, const cmr_compact_config *b);

/* keep: a training forward into *cache (every layer's output kept for
 * backward).  Otherwise inference, into *cache when given (its buffers and
 * the permuted weights of the same params reused by the next call) or into
 * transient buffers. */
static int forward(const cmr_compact_config *c, const float *params, const float *video, int batch, float *emb,
                   cmr_compact_video_cache **cache, int keep)
{
    if (!c || !params || !video || !emb || batch < 1)
        return cmr_fail(CMR_EINVAL, "compact video forward: bad arguments (batch %d)", batch);
    cmr_model_threads_init();
    geom g, gs;
    int rc = geom_of(c, params, batch, &g);
    if (rc < 0)
        return rc;
    /* Inference convolves slices of ≤ INFER_SLICE_FLOATS activations: small
     * enough buffers for malloc to recycle between calls rather than map
     * (and fault in) fresh pages each time.  The vector kernel's results do
     * not depend on it (bitwise). */
    int slice = batch;
    if (!keep) {
        size_t per_study = g.act_max / (size_t)batch;
        slice = per_study >= INFER_SLICE_FLOATS ? 1 : (int)(INFER_SLICE_FLOATS / per_study);
        slice = slice < batch ? slice : batch;
    }
    if ((rc = geom_of(c, params, slice, &gs)) < 0)
        return rc;
    cmr_compact_video_cache local = {0}, *cc = &local;
    if (cache) {
        if (!*cache && !(*cache = calloc(1, sizeof **cache)))
            return cmr_fail(CMR_ENOMEM, "compact video forward: out of memory");
        cc = *cache;
    }
    /* An inference scratch keeps the permuted weights of the same params
     * and configuration: a tenth of a study's time on 2 cores. */
    int permuted = !keep && cc->wperm_of == params && cc->batch > 0 && same_video_config(c, &cc->cfg);
    cc->batch = 0; /* invalid until this forward completes */
    cc->wperm_of = NULL;
    if ((rc = cache_fit(cc, &gs, keep, head_floats(&g))) < 0)
        goto fail;
    const size_t per_video = (size_t)c->frames * g.conv[0].in_pix * (size_t)c->channels;
    if (keep) /* the caller's video may be reused before backward */
        memcpy(cc->video, video, (size_t)batch * per_video * sizeof *video);
    if (!permuted)
        permute_weights(&g, cc->wperm);
    float *gbuf = cc->head, *pooled = gbuf + g.n * (size_t)g.feat, *z = pooled + (size_t)batch * g.pooled;
    for (int b0 = 0; b0 < batch; b0 += slice) {
        int nb = batch - b0 < slice ? batch - b0 : slice;
        if (nb != gs.batch && (rc = geom_of(c, params, nb, &gs)) < 0)
            goto fail;
        run_convs(&gs, cc, video + (size_t)b0 * per_video, gbuf + (size_t)b0 * (size_t)c->frames * (size_t)g.feat);
    }
    head_forward(&g, gbuf, pooled, z, emb);
    cc->batch = batch;
    cc->cfg = *c;
    cc->wperm_of = keep ? NULL : params;
fail:
    if (!cache) /* transient inference buffers go (see the file comment) */
        cache_release(&local);
    return rc;
}

int cmr_compact_video_forward(const cmr_compact_config *c, const float *params, const float *video, int batch,
                              float *emb, cmr_compact_video_cache **cache)
{
    return forward(c, params, video, batch, emb, cache, cache != NULL);
}

int cmr_compact_video_infer(const cmr_compact_config *c, const float *params, const float *video, int batch,
                            float *emb, cmr_compact_video_cache **scratch)
{
    if (!scratch)
        return cmr_fail(CMR_EINVAL, "compact video inference: no scratch");
    return forward(c, params, video, batch, emb, scratch, 0);
}

/* The video fields of two configurations agree. */
static int same_video_config(const cmr_compact_config *a, const cmr_compact_config *b)
{
    return a->frames == b->frames && a->size == b->size && a->channels == b->channels &&
           !memcmp(a->conv_channels, b->conv_channels, sizeof a->conv_channels) &&
           !memcmp(a->conv_strides, b->conv_strides, sizeof a->conv_strides) && a->video_hidden == b->video_hidden &&
           a->spatial_max == b->spatial_max &&
           a->embed_dim == b->embed_dim;
}

int cmr_compact_video_backward(const cmr_compact_config *c, const float *params, cmr_compact_video_cache *cache,
                               const float *d_emb, float *grads)
{
    if (!c || !params || !cache || !d_emb || !grads)
        return cmr_fail(CMR_EINVAL, "compact video backward: bad arguments");
    if (!cache->keep || cache->batch < 1 || !same_video_config(c, &cache->cfg))
        return cmr_fail(CMR_EINVAL, "compact video backward: no training forward of this configuration in the cache");
    cmr_model_threads_init();
    geom g;
    int rc = geom_of(c, params, cache->batch, &g);
    if (rc < 0)
        return rc;
    /* The thread count may have changed since the forward: the scratch
     * follows (and the activation gradients are allocated on first use). */
    size_t stride = (2 * g.cols_max + g.dw_max + 15) / 16 * 16;
    if ((rc = ensure(&cache->dact[0], &cache->cap_dact[0], g.act_max)) < 0 ||
        (rc = ensure(&cache->dact[1], &cache->cap_dact[1], g.act_max)) < 0 ||
        (rc = ensure(&cache->scratch, &cache->cap_scratch, stride * (size_t)g.threads)) < 0)
        return rc;
    cache->scratch_stride = stride;
    permute_weights(&g, cache->wperm);

    size_t hf = head_floats(&g);
    float *gbuf = cache->head, *pooled = gbuf + g.n * (size_t)g.feat, *z = pooled + (size_t)g.batch * g.pooled;
    float *dg = cache->head + hf, *dpooled = dg + g.n * (size_t)g.feat, *dz = dpooled + (size_t)g.batch * g.pooled;
    head_backward(&g, gbuf, pooled, z, cache->act[NCONV - 1], d_emb, dg, dpooled, dz, grads,
                  cache->dact[(NCONV - 1) % 2]);
    /* layer i reads its output's gradient from dact[i % 2], writes its input's to the other */
    const float *wp = cache->wperm + g.wperm_total;
    for (int i = NCONV - 1; i >= 0; i--) {
        wp -= 2 * (size_t)g.conv[i].cout * g.conv[i].k;
        const float *x = i ? cache->act[i - 1] : cache->video;
        float *dx = i ? cache->dact[(i - 1) % 2] : NULL;
        conv_backward(&g, i, x, cache->act[i], cache->dact[i % 2], wp, dx, grads, cache->scratch, stride);
    }
    return 0;
}

/* ---- test hook ----------------------------------------------------------------------------------- */

/* A stage of the last training forward: "video.conv1" ... "video.conv5"
 * ([B*F*out_side*out_side][channels], channels-last), "video.g" ([B*F][feat]),
 * "video.pooled" ([B][6 feat]), "video.z" ([B][hidden]).  NULL when the
 * cache holds no such stage. */
const float *cmr_compact_video_probe(const cmr_compact_video_cache *cache, const char *stage, size_t *rows,
                                     size_t *cols)
{
    if (!cache || !cache->keep || cache->batch < 1)
        return NULL;
    geom g;
    if (geom_of(&cache->cfg, NULL, cache->batch, &g) < 0)
        return NULL;
    const float *pooled = cache->head + g.n * (size_t)g.feat, *z = pooled + (size_t)g.batch * g.pooled;
    struct {
        const char *name;
        const float *data;
        size_t rows, cols;
    } st[NCONV + 3] = {{"video.g", cache->head, g.n, (size_t)g.feat},
                       {"video.pooled", pooled, (size_t)g.batch, (size_t)g.pooled},
                       {"video.z", z, (size_t)g.batch, (size_t)g.hidden}};
    char names[NCONV][24];
    for (int i = 0; i < NCONV; i++) {
        snprintf(names[i], sizeof names[i], "video.conv%d", i + 1);
        st[3 + i].name = names[i];
        st[3 + i].data = cache->act[i];
        st[3 + i].rows = g.n * g.conv[i].out_pix;
        st[3 + i].cols = (size_t)g.conv[i].cout;
    }
    for (int i = 0; i < NCONV + 3; i++)
        if (!strcmp(stage, st[i].name)) {
            *rows = st[i].rows;
            *cols = st[i].cols;
            return st[i].data;
        }
    return NULL;
}
