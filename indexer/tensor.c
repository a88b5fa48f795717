/* Study -> model input tensor, layer 1 (docs/model-input.md defines every
 * step): cmr_tensor_from_source turns frames held in memory into the
 * tensor: sampling to the model's frame count, the per-series 8-bit window
 * (window.c), the antialiased resize / centre crop / resize, normalisation.
 * Layer 2, choosing a study's series and images, is in tensor_study.c.
 *
 * Speed: nothing is allocated per pixel or per frame; the two resizes and
 * the crop are folded into one precomputed separable operator per image
 * size; a frame shown several times (a cine's repeated phases, the single
 * LGE long-axis images repeated n_SAX times) is resampled once and copied. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_tensor_internal.h"

#if defined(__SSE__)
#include <xmmintrin.h>
#endif

/* Four floats at a time, written out: GCC at -O2 vectorises almost no
 * loops, and these few carry nearly all the work. */
typedef float v4f __attribute__((vector_size(16)));

static inline v4f v4f_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v4f_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }

static inline v4f v4f_splat(float x) { return (v4f){x, x, x, x}; }

/* The tensor (38 MB for the CMR-CLIP recipe) is written once here and read
 * by the encoder later, never from cache: non-temporal stores skip reading
 * every line in before writing it, a tenth of the tensor builder's time.
 * cmr_tensor_from_source fences before it returns. */
#if defined(__SSE__)
static inline int can_stream(const float *p) { return ((uintptr_t)p & 15) == 0; }
static inline void v4f_stream(float *p, v4f v) { _mm_stream_ps(p, (__m128)v); }
static inline void stream_fence(void) { _mm_sfence(); }
#else
static inline int can_stream(const float *p) { (void)p; return 0; }
static inline void v4f_stream(float *p, v4f v) { v4f_store(p, v); }
static inline void stream_fence(void) {}
#endif

/* dst[i] = src[i] * a + b */
static void affine(float *dst, const float *src, size_t n, float a, float b)
{
    const v4f va = v4f_splat(a), vb = v4f_splat(b);
    size_t i = 0;
    if (can_stream(dst))
        for (; i + 4 <= n; i += 4)
            v4f_stream(dst + i, v4f_load(src + i) * va + vb);
    for (; i + 4 <= n; i += 4)
        v4f_store(dst + i, v4f_load(src + i) * va + vb);
    for (; i < n; i++)
        dst[i] = src[i] * a + b;
}

static void fill(float *dst, size_t n, float b)
{
    const v4f vb = v4f_splat(b);
    size_t i = 0;
    if (can_stream(dst))
        for (; i + 4 <= n; i += 4)
            v4f_stream(dst + i, vb);
    for (; i + 4 <= n; i += 4)
        v4f_store(dst + i, vb);
    for (; i < n; i++)
        dst[i] = b;
}

/* A frame shown twice: copied from where it was made. */
static void copy_frame(float *dst, const float *src, size_t n)
{
    size_t i = 0;
    if (can_stream(dst))
        for (; i + 4 <= n; i += 4)
            v4f_stream(dst + i, v4f_load(src + i));
    for (; i < n; i++)
        dst[i] = src[i];
}

/* Bounds that keep every size computation far from overflow. */
#define MAX_FRAMES 4096u
#define MAX_SIZE 4096u

void cmr_input_spec_cmrclip(cmr_input_spec *spec)
{
    memset(spec, 0, sizeof *spec);
    spec->recipe = CMR_RECIPE_CMRCLIP;
    spec->frames = 64;
    spec->size = 224;
    spec->resize = 256;
    spec->channels = 3;
    spec->cine_frames = 30;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(spec->mean, mean, sizeof mean);
    memcpy(spec->std, std, sizeof std);
}

int cmr_spec_check(const cmr_input_spec *spec)
{
    if (!spec)
        return cmr_fail(CMR_EINVAL, "no input spec");
    if (spec->recipe != CMR_RECIPE_CMRCLIP && spec->recipe != CMR_RECIPE_CINE_LGE)
        return cmr_fail(CMR_EUNSUPPORTED, "input spec: recipe %d is not known", (int)spec->recipe);
    if (spec->recipe == CMR_RECIPE_CINE_LGE && (spec->lge_frames < 1 || spec->lge_frames >= spec->frames))
        return cmr_fail(CMR_EINVAL, "input spec: %u LGE frames of %u (at least one, and one cine frame left)",
                        spec->lge_frames, spec->frames);
    if (spec->frames < 1 || spec->frames > MAX_FRAMES || spec->size < 1 || spec->size > MAX_SIZE || spec->resize < 1 ||
        spec->resize > MAX_SIZE || spec->cine_frames < 1 || spec->cine_frames > MAX_FRAMES)
        return cmr_fail(CMR_EINVAL, "input spec: frames %u, size %u, resize %u, cine frames %u out of range", spec->frames,
                        spec->size, spec->resize, spec->cine_frames);
    if (spec->channels != 1 && spec->channels != 3)
        return cmr_fail(CMR_EINVAL, "input spec: %u channels (1 or 3: grey, or grey repeated)", spec->channels);
    for (unsigned c = 0; c < spec->channels; c++)
        if (!(spec->std[c] > 0) || !isfinite(spec->mean[c]))
            return cmr_fail(CMR_EINVAL, "input spec: channel %u: mean %g, std %g", c, spec->mean[c], spec->std[c]);
    return 0;
}

size_t cmr_tensor_values(const cmr_input_spec *spec)
{
    return (size_t)spec->frames * spec->channels * spec->size * spec->size;
}

/* ---- sampling ---------------------------------------------------------------------------- */

size_t cmr_sample_segments(size_t n, unsigned frames, size_t *idx)
{
    size_t k = n < frames ? n : frames;
    if (k == 0)
        return 0;
    /* np.linspace(0, n, k + 1).astype(int): j * step in float64, the last
     * point set to n exactly, truncated; segment j is [b_j, b_{j+1} - 1]
     * and its middle (b_j + b_{j+1} - 1) // 2. */
    double step = (double)n / (double)k;
    size_t prev = 0;
    for (size_t j = 0; j < k; j++) {
        size_t next = j + 1 == k ? n : (size_t)((double)(j + 1) * step);
        idx[j] = (prev + next - 1) / 2;
        prev = next;
    }
    return k;
}

size_t cmr_sample_part(size_t n, unsigned frames, size_t *idx)
{
    if (n >= frames)
        return cmr_sample_segments(n, frames, idx);
    /* Fewer source frames than output frames: each shown in turn, as a cine
     * is resampled over its cycle, so that the part keeps its positions. */
    for (unsigned j = 0; n && j < frames; j++)
        idx[j] = (size_t)((unsigned long long)j * n / frames);
    return n ? frames : 0;
}

unsigned cmr_cine_phase(unsigned i, unsigned p, unsigned c)
{
    return (unsigned)((unsigned long long)i * p / c);
}

/* ---- spatial resampling ------------------------------------------------------------------ */

/* The taps of output i when `in` samples are resized to `out` with
 * antialiased bilinear interpolation, as PIL and torchvision (antialias=True)
 * compute them: a triangle filter stretched by the downscale factor, its
 * weights normalised to sum 1.  w needs room for 2*max(in/out,1)+3 taps. */
static int aa_taps(int in, int out, int i, double *w, int *first)
{
    double scale = (double)in / (double)out;
    double support = scale >= 1.0 ? scale : 1.0;
    double inv = scale >= 1.0 ? 1.0 / scale : 1.0;
    double center = scale * (i + 0.5);
    int64_t xmin = (int64_t)(center - support + 0.5), xmax = (int64_t)(center + support + 0.5);
    if (xmin < 0)
        xmin = 0;
    if (xmax > in)
        xmax = in;
    int n = (int)(xmax - xmin);
    double total = 0;
    for (int j = 0; j < n; j++) {
        double t = 1.0 - fabs(((double)(j + xmin) - center + 0.5) * inv);
        w[j] = t > 0 ? t : 0;
        total += w[j];
    }
    if (total != 0)
        for (int j = 0; j < n; j++)
            w[j] /= total;
    *first = (int)xmin;
    return n;
}

static int aa_capacity(int in, int out)
{
    double scale = (double)in / (double)out;
    return (int)ceil(2.0 * (scale >= 1.0 ? scale : 1.0)) + 3;
}

typedef struct axis_plan {
    int n_out, stride;  /* stride: taps per output (the most any needs) */
    int *first, *taps;
    float *w;
    int in_lo, in_hi;   /* the input range any output reads */
} axis_plan;

static void axis_free(axis_plan *a)
{
    free(a->first);
    free(a->taps);
    free(a->w);
    memset(a, 0, sizeof *a);
}

/* One axis of: resize in -> mid, keep [off, off + crop), resize crop -> out,
 * as one matrix (out x in), computed in double. */
static int axis_build(axis_plan *a, int in, int mid, int off, int crop, int out)
{
    int rc = CMR_ENOMEM;
    int cap1 = aa_capacity(in, mid), cap2 = aa_capacity(crop, out);
    double *w1 = malloc((size_t)crop * (size_t)cap1 * sizeof *w1);
    int *f1 = malloc((size_t)crop * sizeof *f1), *n1 = malloc((size_t)crop * sizeof *n1);
    double *w2 = malloc((size_t)cap2 * sizeof *w2);
    double *acc = calloc((size_t)in, sizeof *acc);
    int *lo = malloc((size_t)out * sizeof *lo), *hi = malloc((size_t)out * sizeof *hi);
    memset(a, 0, sizeof *a);
    if (!w1 || !f1 || !n1 || !w2 || !acc || !lo || !hi)
        goto fail;
    for (int k = 0; k < crop; k++)
        n1[k] = aa_taps(in, mid, off + k, w1 + (size_t)k * cap1, &f1[k]);
    /* First pass: each output's input range, to size the plan. */
    int stride = 1;
    for (int o = 0; o < out; o++) {
        int f2, n2 = aa_taps(crop, out, o, w2, &f2);
        int l = in, h = -1;
        for (int t = 0; t < n2; t++) {
            int k = f2 + t;
            if (w2[t] == 0 || n1[k] == 0)
                continue;
            const double *wk = w1 + (size_t)k * cap1;
            for (int j = 0; j < n1[k]; j++)
                if (wk[j] != 0) {
                    l = f1[k] + j < l ? f1[k] + j : l;
                    h = f1[k] + j > h ? f1[k] + j : h;
                }
        }
        if (h < l) /* cannot happen for in, out >= 1; keep the plan well-formed anyway */
            l = h = 0;
        lo[o] = l;
        hi[o] = h;
        stride = h - l + 1 > stride ? h - l + 1 : stride;
    }
    a->n_out = out;
    a->stride = stride;
    a->first = malloc((size_t)out * sizeof *a->first);
    a->taps = malloc((size_t)out * sizeof *a->taps);
    a->w = calloc((size_t)out * (size_t)stride, sizeof *a->w);
    if (!a->first || !a->taps || !a->w)
        goto fail;
    a->in_lo = in;
    a->in_hi = 0;
    for (int o = 0; o < out; o++) {
        int f2, n2 = aa_taps(crop, out, o, w2, &f2);
        for (int t = 0; t < n2; t++) {
            int k = f2 + t;
            const double *wk = w1 + (size_t)k * cap1;
            for (int j = 0; j < n1[k]; j++)
                acc[f1[k] + j] += w2[t] * wk[j];
        }
        a->first[o] = lo[o];
        a->taps[o] = hi[o] - lo[o] + 1;
        for (int j = lo[o]; j <= hi[o]; j++) {
            a->w[(size_t)o * stride + (j - lo[o])] = (float)acc[j];
        }
        for (int t = 0; t < n2; t++) {
            int k = f2 + t;
            for (int j = 0; j < n1[k]; j++)
                acc[f1[k] + j] = 0;
        }
        a->in_lo = lo[o] < a->in_lo ? lo[o] : a->in_lo;
        a->in_hi = hi[o] + 1 > a->in_hi ? hi[o] + 1 : a->in_hi;
    }
    rc = 0;
fail:
    if (rc) {
        axis_free(a);
        rc = cmr_fail(CMR_ENOMEM, "out of memory for the resampling plan");
    }
    free(w1);
    free(f1);
    free(n1);
    free(w2);
    free(acc);
    free(lo);
    free(hi);
    return rc;
}

struct cmr_resampler {
    int rows, cols, size;
    axis_plan ry, rx;
    int tmp_stride; /* columns read, plus rx.stride zeros so every output reads rx.stride taps */
    float *tmp;     /* size rows after the vertical pass */
};

void cmr_resize_geometry(int rows, int cols, unsigned resize, int *rows1, int *cols1, int *top, int *left)
{
    /* torchvision Resize(int): the shorter side becomes `resize`, the longer
     * int(resize * long / short) (float64, truncated).  CenterCrop offsets:
     * int(round((len - crop) / 2.0)), Python's round (half to even). */
    int r1, c1;
    if (rows <= cols) {
        r1 = (int)resize;
        c1 = (int)((double)resize * (double)cols / (double)rows);
    } else {
        c1 = (int)resize;
        r1 = (int)((double)resize * (double)rows / (double)cols);
    }
    *rows1 = r1;
    *cols1 = c1;
    *top = (int)nearbyint((double)(r1 - (int)resize) / 2.0);
    *left = (int)nearbyint((double)(c1 - (int)resize) / 2.0);
}

int cmr_resampler_new(int rows, int cols, unsigned resize, unsigned size, cmr_resampler **out)
{
    *out = NULL;
    if (rows < 1 || cols < 1 || rows > CMR_MAX_IMAGE_SIDE || cols > CMR_MAX_IMAGE_SIDE || resize < 1 ||
        resize > MAX_SIZE || size < 1 || size > MAX_SIZE)
        return cmr_fail(CMR_EINVAL, "resampling %dx%d via %u to %u: out of range", rows, cols, resize, size);
    cmr_resampler *r = calloc(1, sizeof *r);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    r->rows = rows;
    r->cols = cols;
    r->size = (int)size;
    int rows1, cols1, top, left, rc;
    cmr_resize_geometry(rows, cols, resize, &rows1, &cols1, &top, &left);
    if ((rc = axis_build(&r->ry, rows, rows1, top, (int)resize, (int)size)) ||
        (rc = axis_build(&r->rx, cols, cols1, left, (int)resize, (int)size)))
        goto fail;
    r->tmp_stride = r->rx.in_hi - r->rx.in_lo + r->rx.stride;
    r->tmp = calloc((size_t)size * (size_t)r->tmp_stride, sizeof *r->tmp);
    if (!r->tmp) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    *out = r;
    return 0;
fail:
    cmr_resampler_free(r);
    return rc;
}

void cmr_resampler_free(cmr_resampler *r)
{
    if (!r)
        return;
    axis_free(&r->ry);
    axis_free(&r->rx);
    free(r->tmp);
    free(r);
}

/* The horizontal taps of one output, n known at compile time in the common cases. */
#define DOT_CASE(N)                                                                                                    \
    case N:                                                                                                            \
        for (int ox = 0; ox < S; ox++) {                                                                               \
            const float *w = r->rx.w + (size_t)ox * N, *s = t + (r->rx.first[ox] - x0);                                \
            float sum = 0;                                                                                             \
            for (int j = 0; j < N; j++)                                                                                \
                sum += w[j] * s[j];                                                                                    \
            d[ox] = sum;                                                                                               \
        }                                                                                                              \
        break;

void cmr_resampler_run(cmr_resampler *r, const float *src, float *dst)
{
    const int S = r->size, cols = r->cols, ts = r->tmp_stride;
    const int x0 = r->rx.in_lo, nx = r->rx.in_hi - r->rx.in_lo;
    /* Vertical first: its inner loop runs along contiguous columns, eight
     * at a time in registers; the gathering horizontal pass then touches
     * only S rows.  Taps are summed in order, as the plain loop would. */
    for (int oy = 0; oy < S; oy++) {
        float *t = r->tmp + (size_t)oy * ts;
        const float *w = r->ry.w + (size_t)oy * r->ry.stride;
        const int ny = r->ry.taps[oy];
        const float *base = src + (size_t)r->ry.first[oy] * cols + x0;
        int x = 0;
        for (; x + 8 <= nx; x += 8) {
            v4f a0 = v4f_splat(0), a1 = v4f_splat(0);
            for (int j = 0; j < ny; j++) {
                const float *sj = base + (size_t)j * cols + x;
                const v4f wj = v4f_splat(w[j]);
                a0 += wj * v4f_load(sj);
                a1 += wj * v4f_load(sj + 4);
            }
            v4f_store(t + x, a0);
            v4f_store(t + x + 4, a1);
        }
        for (; x < nx; x++) {
            float a = 0;
            for (int j = 0; j < ny; j++)
                a += w[j] * base[(size_t)j * cols + x];
            t[x] = a;
        }
    }
    /* Every output reads rx.stride taps (zero weights past its own, zero
     * columns past the row). */
    for (int oy = 0; oy < S; oy++) {
        const float *t = r->tmp + (size_t)oy * ts;
        float *d = dst + (size_t)oy * S;
        switch (r->rx.stride) {
            DOT_CASE(1)
            DOT_CASE(2)
            DOT_CASE(3)
            DOT_CASE(4)
            DOT_CASE(5)
            DOT_CASE(6)
            DOT_CASE(7)
            DOT_CASE(8)
        default:
            for (int ox = 0; ox < S; ox++) {
                const float *w = r->rx.w + (size_t)ox * r->rx.stride, *s = t + (r->rx.first[ox] - x0);
                float sum = 0;
                for (int j = 0; j < r->rx.stride; j++)
                    sum += w[j] * s[j];
                d[ox] = sum;
            }
        }
    }
}

/* ---- layer 1 ---------------------------------------------------------------------------------- */

typedef struct plan_cache {
    size_t n, cap;
    cmr_resampler **items;
} plan_cache;

static int plan_get(plan_cache *pc, int rows, int cols, const cmr_input_spec *spec, cmr_resampler **out)
{
    for (size_t i = 0; i < pc->n; i++)
        if (pc->items[i]->rows == rows && pc->items[i]->cols == cols) {
            *out = pc->items[i];
            return 0;
        }
    if (pc->n == pc->cap) {
        size_t cap = pc->cap ? 2 * pc->cap : 4;
        cmr_resampler **p = realloc(pc->items, cap * sizeof *p);
        if (!p)
            return cmr_fail(CMR_ENOMEM, "out of memory");
        pc->items = p;
        pc->cap = cap;
    }
    int rc = cmr_resampler_new(rows, cols, spec->resize, spec->size, &pc->items[pc->n]);
    if (rc)
        return rc;
    *out = pc->items[pc->n++];
    return 0;
}

static void plan_cache_free(plan_cache *pc)
{
    for (size_t i = 0; i < pc->n; i++)
        cmr_resampler_free(pc->items[i]);
    free(pc->items);
}

/* out_c = (g / 255 - mean_c) / std_c for grey level g, as g * a_c + b_c. */
static void channel_affine(const cmr_input_spec *spec, float a[3], float b[3])
{
    for (unsigned c = 0; c < spec->channels; c++) {
        a[c] = (float)(1.0 / (255.0 * spec->std[c]));
        b[c] = (float)(-(double)spec->mean[c] / spec->std[c]);
    }
}

int cmr_tensor_from_source(const cmr_tensor_source *src, const cmr_input_spec *spec, float *out, float (*windows)[2])
{
    int rc = cmr_spec_check(spec);
    if (rc)
        return rc;
    const size_t plane = (size_t)spec->size * spec->size, per_frame = plane * spec->channels;
    const unsigned F = spec->frames;
    size_t *idx = malloc(F * sizeof *idx);
    size_t *offset = calloc(src->n_groups + 1, sizeof *offset); /* first image of each group in `made` */
    int *made = NULL; /* per image: -1 not shown, -2 shown but not yet made, else the output frame holding it */
    cmr_window *win = calloc(src->n_groups ? src->n_groups : 1, sizeof *win);
    const float **ptrs = NULL;
    size_t *counts = NULL;
    float *img = NULL; /* the windowed image, grey levels */
    float *grey = malloc(plane * sizeof *grey);
    plan_cache pc = {0};
    if (!idx || !offset || !win || !grey) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    if (windows)
        memset(windows, 0, src->n_groups * sizeof *windows);
    size_t n_used;
    if (src->sampled) {
        if (src->n_sampled > F) {
            rc = cmr_fail(CMR_EINVAL, "%zu sampled frames for a tensor of %u", src->n_sampled, F);
            goto done;
        }
        for (size_t j = 0; j < src->n_sampled; j++)
            if (src->sampled[j] >= src->n_frames) {
                rc = cmr_fail(CMR_EINVAL, "sampled frame %zu: source frame %zu of %zu", j, src->sampled[j],
                              src->n_frames);
                goto done;
            }
        n_used = src->n_sampled;
        memcpy(idx, src->sampled, n_used * sizeof *idx);
    } else {
        n_used = cmr_sample_segments(src->n_frames, F, idx);
    }

    size_t max_images = 0, max_pixels = 0;
    for (size_t g = 0; g < src->n_groups; g++) {
        offset[g + 1] = offset[g] + src->groups[g].n_images;
        max_images = src->groups[g].n_images > max_images ? src->groups[g].n_images : max_images;
    }
    made = malloc((offset[src->n_groups] ? offset[src->n_groups] : 1) * sizeof *made);
    ptrs = malloc((max_images ? max_images : 1) * sizeof *ptrs);
    counts = malloc((max_images ? max_images : 1) * sizeof *counts);
    if (!made || !ptrs || !counts) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < offset[src->n_groups]; i++)
        made[i] = -1;
    for (size_t j = 0; j < n_used; j++) {
        const cmr_src_frame *fr = &src->frames[idx[j]];
        if (fr->group == CMR_SRC_BLACK)
            continue;
        if (fr->group < 0 || (size_t)fr->group >= src->n_groups || fr->image < 0 ||
            (size_t)fr->image >= src->groups[fr->group].n_images) {
            rc = cmr_fail(CMR_EINVAL, "source frame %zu: group %d image %d does not exist", idx[j], fr->group,
                          fr->image);
            goto done;
        }
        const cmr_src_image *im = &src->groups[fr->group].images[fr->image];
        if (!im->pixels || im->rows < 1 || im->cols < 1 || im->rows > CMR_MAX_IMAGE_SIDE ||
            im->cols > CMR_MAX_IMAGE_SIDE) {
            rc = cmr_fail(CMR_EINVAL, "source frame %zu: group %d image %d has no pixels (%dx%d)", idx[j], fr->group,
                          fr->image, im->rows, im->cols);
            goto done;
        }
        made[offset[fr->group] + (size_t)fr->image] = -2;
        size_t px = (size_t)im->rows * (size_t)im->cols;
        max_pixels = px > max_pixels ? px : max_pixels;
    }
    img = malloc((max_pixels ? max_pixels : 1) * sizeof *img);
    if (!img) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    /* Each group's window over the images of it that the tensor shows. */
    for (size_t g = 0; g < src->n_groups; g++) {
        size_t n = 0;
        for (size_t i = 0; i < src->groups[g].n_images; i++)
            if (made[offset[g] + i] == -2) {
                const cmr_src_image *im = &src->groups[g].images[i];
                ptrs[n] = im->pixels;
                counts[n++] = (size_t)im->rows * (size_t)im->cols;
            }
        if (!n)
            continue;
        if ((rc = cmr_window_compute(&win[g], n, ptrs, counts, 0)))
            goto done;
        if (windows) {
            windows[g][0] = win[g].lo;
            windows[g][1] = win[g].hi;
        }
    }

    float a[3], b[3];
    channel_affine(spec, a, b);
    for (size_t j = 0; j < n_used; j++) {
        const cmr_src_frame *fr = &src->frames[idx[j]];
        float *o = out + j * per_frame;
        if (fr->group == CMR_SRC_BLACK) {
            for (unsigned c = 0; c < spec->channels; c++)
                fill(o + c * plane, plane, b[c]);
            continue;
        }
        int *m = &made[offset[fr->group] + (size_t)fr->image];
        if (*m >= 0) {
            copy_frame(o, out + (size_t)*m * per_frame, per_frame);
            continue;
        }
        const cmr_src_image *im = &src->groups[fr->group].images[fr->image];
        cmr_resampler *rs = NULL;
        if ((rc = plan_get(&pc, im->rows, im->cols, spec, &rs)))
            goto done;
        cmr_window_apply_grey(&win[fr->group], im->pixels, (size_t)im->rows * (size_t)im->cols, img);
        cmr_resampler_run(rs, img, grey);
        for (unsigned c = 0; c < spec->channels; c++)
            affine(o + c * plane, grey, plane, a[c], b[c]);
        *m = (int)j;
    }
    /* CMR-CLIP pads a short video with zeros after normalisation. */
    if (n_used < F)
        memset(out + n_used * per_frame, 0, (F - n_used) * per_frame * sizeof *out);
    rc = 0;
done:
    stream_fence();
    if (win)
        for (size_t g = 0; g < src->n_groups; g++)
            cmr_window_free(&win[g]);
    plan_cache_free(&pc);
    free(idx);
    free(offset);
    free(made);
    free(win);
    free(ptrs);
    free(counts);
    free(img);
    free(grey);
    return rc;
}
