/* Study -> model input tensor (docs/model-input.md defines every step).
 *
 * Layer 1 (cmr_tensor_from_source) turns frames held in memory into the
 * tensor: sampling to the model's frame count, the per-series 8-bit window
 * (window.c), the antialiased resize / centre crop / resize, normalisation.
 * Layer 2 (cmr_study_tensor_with) chooses the series and images of a
 * classified study as the CMR-CLIP recipe says, records what is missing,
 * and decodes only the images that survive the sampling.
 *
 * Speed: nothing is allocated per pixel or per frame; the two resizes and
 * the crop are folded into one precomputed separable operator per image
 * size; a frame shown several times (a cine's repeated phases, the single
 * LGE long-axis images repeated n_SAX times) is resampled once and copied. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cmr_dicom.h"
#include "cmr_tensor_internal.h"

/* Four floats at a time, written out: GCC at -O2 vectorises almost no
 * loops, and these few carry nearly all the work. */
typedef float v4f __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));

static inline v4f v4f_load(const float *p)
{
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline void v4f_store(float *p, v4f v) { memcpy(p, &v, sizeof v); }

static inline v4f v4f_splat(float x) { return (v4f){x, x, x, x}; }

/* dst[i] = src[i] * a + b */
static void affine(float *dst, const float *src, size_t n, float a, float b)
{
    const v4f va = v4f_splat(a), vb = v4f_splat(b);
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        v4f_store(dst + i, v4f_load(src + i) * va + vb);
    for (; i < n; i++)
        dst[i] = src[i] * a + b;
}

static void fill(float *dst, size_t n, float b)
{
    const v4f vb = v4f_splat(b);
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        v4f_store(dst + i, vb);
    for (; i < n; i++)
        dst[i] = b;
}

/* Any NaN or infinity (exponent all ones) among n floats. */
static int any_nonfinite(const float *p, size_t n)
{
    const v4u mask = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    v4u bad = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4u u;
        memcpy(&u, p + i, sizeof u);
        bad |= (v4u)((u & mask) == mask);
    }
    uint32_t b = bad[0] | bad[1] | bad[2] | bad[3];
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, sizeof u);
        b |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return b != 0;
}

/* The paper's smallest LGE SAX stack: the stand-in n_SAX when a study has
 * none, so that the cine frames keep the temporal positions they had in
 * training (docs/model-input.md, "Missing views"). */
#define DEFAULT_LGE_SLICES 10

/* Bounds that keep every size computation far from overflow. */
#define MAX_FRAMES 4096u
#define MAX_SIZE 4096u
#define MAX_IMAGE_SIDE 65536

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
    if (spec->recipe != CMR_RECIPE_CMRCLIP)
        return cmr_fail(CMR_EUNSUPPORTED, "input spec: recipe %d is not known", (int)spec->recipe);
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
    if (rows < 1 || cols < 1 || rows > MAX_IMAGE_SIDE || cols > MAX_IMAGE_SIDE || resize < 1 || resize > MAX_SIZE ||
        size < 1 || size > MAX_SIZE)
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
    size_t n_used = cmr_sample_segments(src->n_frames, F, idx);

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
        if (!im->pixels || im->rows < 1 || im->cols < 1 || im->rows > MAX_IMAGE_SIDE || im->cols > MAX_IMAGE_SIDE) {
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
            memcpy(o, out + (size_t)*m * per_frame, per_frame * sizeof *o);
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

/* The output (38 MB for CMR-CLIP) in transparent huge pages where the
 * system offers them: a fresh buffer's first touch then costs a few dozen
 * page faults instead of ten thousand, a third of the build time.  Still
 * released with free(). */
static float *alloc_tensor(size_t values)
{
    size_t bytes = values * sizeof(float);
#ifdef MADV_HUGEPAGE
    const size_t huge = (size_t)2 << 20;
    if (bytes >= 2 * huge) {
        size_t rounded = (bytes + huge - 1) / huge * huge;
        void *p = aligned_alloc(huge, rounded);
        if (p) {
            /* Advice only: without it the memory is as good, just slower to touch. */
            (void)madvise(p, rounded, MADV_HUGEPAGE);
            return p;
        }
    }
#endif
    return malloc(bytes);
}

/* ---- layer 2: the study's views ------------------------------------------------------------- */

/* One slice of a view: a run of images of one series, in phase order. */
typedef struct slice_run {
    const cmr_series *series;
    const cmr_image *im;
    size_t n;
} slice_run;

typedef struct view_stack {
    const cmr_series *series; /* the chosen series; for an assembled stack, its best-ranked member */
    size_t n_slices;
    slice_run *slices;
} view_stack;

/* Among series of one label: more slices, then more images, then the
 * higher series number (a repeat is usually the better acquisition);
 * still equal: the first in study order. */
static int better(const cmr_series *a, const cmr_series *b)
{
    if (a->n_slices != b->n_slices)
        return a->n_slices > b->n_slices;
    if (a->n_images != b->n_images)
        return a->n_images > b->n_images;
    return a->number > b->number;
}

static const cmr_series *pick(const cmr_study *st, cmr_series_label label)
{
    const cmr_series *best = NULL;
    for (size_t i = 0; i < st->n_series; i++) {
        const cmr_series *s = &st->series[i];
        if (s->label == label && s->n_images && (!best || better(s, best)))
            best = s;
    }
    return best;
}

/* A series' slices: the runs of equal slice index (images come ordered by slice, then phase). */
static int series_slices(const cmr_series *s, view_stack *vs)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_images; i++)
        n += i == 0 || s->images[i].slice != s->images[i - 1].slice;
    vs->series = s;
    vs->slices = calloc(n ? n : 1, sizeof *vs->slices);
    if (!vs->slices)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    vs->n_slices = 0;
    for (size_t i = 0; i < s->n_images; i++) {
        if (i == 0 || s->images[i].slice != s->images[i - 1].slice)
            vs->slices[vs->n_slices++] = (slice_run){s, &s->images[i], 0};
        vs->slices[vs->n_slices - 1].n++;
    }
    return 0;
}

typedef struct member {
    const cmr_series *s;
    double coord;
    size_t order;
} member;

static int cmp_member(const void *x, const void *y)
{
    const member *a = x, *b = y;
    if (a->coord != b->coord)
        return a->coord < b->coord ? -1 : 1;
    return (a->order > b->order) - (a->order < b->order);
}

static double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

/* Within 5 degrees: the slices of one planned stack share their orientation exactly. */
#define PARALLEL_COS 0.99619469809174555

/* A short-axis stack: the best series when it has several slices; when the
 * best has one, every single-slice series of the label parallel to it,
 * ordered along its normal (some sites store one series per slice),
 * locations closer than a tenth of the slice thickness counted once (the
 * best-ranked series kept). */
static int stack_build(const cmr_study *st, cmr_series_label label, view_stack *vs)
{
    memset(vs, 0, sizeof *vs);
    const cmr_series *best = pick(st, label);
    if (!best)
        return 0;
    if (best->n_slices >= 2 || !best->has_geometry)
        return series_slices(best, vs);
    member *m = malloc(st->n_series * sizeof *m);
    if (!m)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < st->n_series; i++) {
        const cmr_series *s = &st->series[i];
        if (s->label != label || !s->n_images || !s->has_geometry || fabs(dot3(s->normal, best->normal)) < PARALLEL_COS)
            continue;
        m[n++] = (member){s, dot3(s->images[0].position, best->normal), i};
    }
    if (n < 2) {
        free(m);
        return series_slices(best, vs);
    }
    qsort(m, n, sizeof *m, cmp_member);
    double tol = best->slice_thickness > 0 ? best->slice_thickness / 10 : 0.5;
    vs->slices = calloc(n, sizeof *vs->slices);
    if (!vs->slices) {
        free(m);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n;) {
        const cmr_series *rep = m[i].s;
        size_t j = i + 1;
        for (; j < n && m[j].coord - m[i].coord <= tol; j++)
            if (better(m[j].s, rep))
                rep = m[j].s;
        vs->slices[vs->n_slices++] = (slice_run){rep, rep->images, rep->n_images};
        i = j;
    }
    free(m);
    vs->series = best;
    return 0;
}

/* The image of a slice taken for a single-image view: the first acquired. */
static const cmr_image *first_acquired(const slice_run *r)
{
    const cmr_image *best = r->im;
    for (size_t i = 1; i < r->n; i++)
        if (r->im[i].seq < best->seq)
            best = &r->im[i];
    return best;
}

typedef struct src_entry {
    int slot;
    const cmr_image *im; /* NULL: a black frame */
} src_entry;

typedef struct decoded_file {
    const char *path;
    int rows, cols, frames, rc;
    float *px;
    char err[200];
} decoded_file;

typedef struct used_image {
    const cmr_image *im;
    int slot;
    int index;           /* in its slot's group, -1 when it could not be decoded */
    const float *pixels;
    int rows, cols;
} used_image;

static void gap(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Appends "; "-separated notes; a note that does not fit ends the text with "...". */
static void gap(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 8 >= cap || (len >= 3 && !strcmp(buf + len - 3, "...")))
        return;
    char note[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note, sizeof note, fmt, ap);
    va_end(ap);
    size_t sep = len ? 2 : 0, n = strlen(note);
    memcpy(buf + len, "; ", sep);
    len += sep;
    if (len + n < cap) {
        memcpy(buf + len, note, n + 1);
        return;
    }
    n = cap - len - 4;
    memcpy(buf + len, note, n);
    memcpy(buf + len + n, "...", 4);
}

static const char *const slot_name[CMR_SLOT_COUNT] = {"cine LAX", "cine SAX", "LGE SAX",
                                                       "LGE 4-chamber", "LGE 2-chamber", "LGE 3-chamber"};

/* The published order of the single LGE long-axis views: lge_lax (our
 * 4-chamber), lge_2ch, lge_3ch (CMRCLIP preprocessing.py, ALL_VIEWS). */
static const cmr_series_label lge_lax_label[3] = {CMR_SERIES_LGE_4CH, CMR_SERIES_LGE_2CH, CMR_SERIES_LGE_3CH};
/* Cine LAX: the 4-chamber shows all four chambers, both ventricles, both
 * atria and the septum; the 2- and 3-chamber views show the left heart only. */
static const cmr_series_label cine_lax_label[3] = {CMR_SERIES_CINE_4CH, CMR_SERIES_CINE_2CH, CMR_SERIES_CINE_3CH};

int cmr_tensor_dicom_reader(void *user, const char *path, int *rows, int *cols, int *frames, float **pixels)
{
    (void)user;
    cmr_dicom_header *h = NULL;
    int rc = cmr_dicom_read_pixels(path, &h, pixels);
    if (rc)
        return rc;
    *rows = h->rows;
    *cols = h->columns;
    *frames = h->frames;
    cmr_dicom_header_free(h);
    return 0;
}

void cmr_tensor_trace_free(cmr_tensor_trace *t)
{
    if (!t)
        return;
    free(t->slot);
    free((void *)t->image);
    free(t->source_index);
    t->slot = NULL;
    t->image = NULL;
    t->source_index = NULL;
}

/* Everything one build holds between its steps. */
typedef struct build {
    const char *uid;
    view_stack vs[CMR_SLOT_COUNT];
    int lax_choice;          /* index in cine_lax_label, -1 none */
    size_t n_sax, L;         /* LGE SAX slices (or the stand-in), source frames */
    src_entry *seq;          /* the source video */
    size_t *idx, n_out;      /* the sampled source frames */
    used_image *used;        /* distinct images shown */
    size_t n_used;
    decoded_file *files;
    size_t n_files;
    size_t n_img[CMR_SLOT_COUNT], failed[CMR_SLOT_COUNT];
    const char *first_err[CMR_SLOT_COUNT];
    cmr_src_group groups[CMR_SLOT_COUNT];
    cmr_src_image *gimg;
    cmr_src_frame *frames;   /* the source video for layer 1 */
} build;

static void build_free(build *b)
{
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++)
        free(b->vs[slot].slices);
    for (size_t f = 0; f < b->n_files; f++)
        free(b->files[f].px);
    free(b->files);
    free(b->used);
    free(b->seq);
    free(b->idx);
    free(b->gimg);
    free(b->frames);
}

static int choose_views(build *b, const cmr_study *study)
{
    int rc;
    b->lax_choice = -1;
    for (int k = 0; k < 3 && b->lax_choice < 0; k++) {
        const cmr_series *s = pick(study, cine_lax_label[k]);
        if (s) {
            b->lax_choice = k;
            if ((rc = series_slices(s, &b->vs[CMR_SLOT_CINE_LAX])))
                return rc;
        }
    }
    if ((rc = stack_build(study, CMR_SERIES_CINE_SAX, &b->vs[CMR_SLOT_CINE_SAX])) ||
        (rc = stack_build(study, CMR_SERIES_LGE_SAX, &b->vs[CMR_SLOT_LGE_SAX])))
        return rc;
    for (int k = 0; k < 3; k++) {
        const cmr_series *s = pick(study, lge_lax_label[k]);
        if (s && (rc = series_slices(s, &b->vs[CMR_SLOT_LGE_4CH + k])))
            return rc;
    }
    if (!b->vs[CMR_SLOT_CINE_LAX].series && !b->vs[CMR_SLOT_CINE_SAX].series) {
        size_t unplaced = 0;
        for (size_t i = 0; i < study->n_series; i++)
            unplaced += study->series[i].label == CMR_SERIES_CINE_UNPLACED;
        return cmr_fail(CMR_EFORMAT,
                        "study %s: no cine series (short-axis, 4-, 2- or 3-chamber) to build the model input from%s",
                        b->uid, unplaced ? " (only cines of unknown plane)" : "");
    }
    return 0;
}

/* cine LAX (C), cine SAX (C), LGE SAX (n), LGE 4ch, 2ch, 3ch (n each); then the sampling. */
static int build_video(build *b, const cmr_input_spec *spec)
{
    const unsigned C = spec->cine_frames;
    const view_stack *vs = b->vs;
    b->n_sax = vs[CMR_SLOT_LGE_SAX].series ? vs[CMR_SLOT_LGE_SAX].n_slices : DEFAULT_LGE_SLICES;
    b->L = 2 * (size_t)C + 4 * b->n_sax;
    b->seq = calloc(b->L, sizeof *b->seq);
    b->idx = malloc(spec->frames * sizeof *b->idx);
    if (!b->seq || !b->idx)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t pos = 0;
    for (int slot = CMR_SLOT_CINE_LAX; slot <= CMR_SLOT_CINE_SAX; slot++) {
        const view_stack *v = &vs[slot];
        const slice_run *mid = v->series ? &v->slices[v->n_slices / 2] : NULL;
        for (unsigned i = 0; i < C; i++, pos++)
            b->seq[pos] = (src_entry){slot, mid ? &mid->im[cmr_cine_phase(i, (unsigned)mid->n, C)] : NULL};
    }
    for (size_t k = 0; k < b->n_sax; k++, pos++)
        b->seq[pos] = (src_entry){CMR_SLOT_LGE_SAX,
                                  vs[CMR_SLOT_LGE_SAX].series ? first_acquired(&vs[CMR_SLOT_LGE_SAX].slices[k]) : NULL};
    for (int slot = CMR_SLOT_LGE_4CH; slot <= CMR_SLOT_LGE_3CH; slot++) {
        const view_stack *v = &vs[slot];
        const cmr_image *im = v->series ? first_acquired(&v->slices[v->n_slices / 2]) : NULL;
        for (size_t k = 0; k < b->n_sax; k++, pos++)
            b->seq[pos] = (src_entry){slot, im};
    }
    b->n_out = cmr_sample_segments(b->L, spec->frames, b->idx);
    return 0;
}

/* Reads each file holding a shown image once.  A file that cannot be read
 * only blackens its frames (recorded per slot); running out of memory ends
 * the build. */
static int decode_shown(build *b, cmr_pixel_reader read, void *user)
{
    size_t n = b->n_out ? b->n_out : 1;
    b->used = calloc(n, sizeof *b->used);
    b->files = calloc(n, sizeof *b->files);
    if (!b->used || !b->files)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t j = 0; j < b->n_out; j++) {
        const src_entry *e = &b->seq[b->idx[j]];
        if (!e->im)
            continue;
        size_t u = 0;
        while (u < b->n_used && b->used[u].im != e->im)
            u++;
        if (u == b->n_used)
            b->used[b->n_used++] = (used_image){e->im, e->slot, -1, NULL, 0, 0};
    }
    for (size_t u = 0; u < b->n_used; u++) {
        const cmr_image *im = b->used[u].im;
        size_t f = 0;
        while (f < b->n_files && strcmp(b->files[f].path, im->path))
            f++;
        if (f == b->n_files) {
            decoded_file *df = &b->files[b->n_files++];
            df->path = im->path;
            cmr_clear_error();
            df->rc = read(user, im->path, &df->rows, &df->cols, &df->frames, &df->px);
            if (df->rc == CMR_ENOMEM)
                return cmr_fail(CMR_ENOMEM, "study %s: out of memory decoding %s", b->uid, im->path);
            if (!df->rc && (df->rows < 1 || df->cols < 1 || df->frames < 1 || df->rows > MAX_IMAGE_SIDE ||
                            df->cols > MAX_IMAGE_SIDE || !df->px))
                df->rc = cmr_fail(CMR_EFORMAT, "%s: %d frame(s) of %dx%d", im->path, df->frames, df->rows, df->cols);
            if (df->rc) {
                snprintf(df->err, sizeof df->err, "%s", cmr_errmsg()[0] ? cmr_errmsg() : cmr_strerror(df->rc));
            } else {
                /* Float pixel data may hold NaN or infinities: 0 and the largest finite values instead. */
                size_t nv = (size_t)df->rows * (size_t)df->cols * (size_t)df->frames;
                if (any_nonfinite(df->px, nv))
                    for (size_t i = 0; i < nv; i++)
                        if (!isfinite(df->px[i]))
                            df->px[i] = isnan(df->px[i]) ? 0.0f : (df->px[i] > 0 ? 3.40282347e38f : -3.40282347e38f);
            }
        }
        const decoded_file *df = &b->files[f];
        int slot = b->used[u].slot;
        if (df->rc || im->frame < 0 || im->frame >= df->frames) {
            if (!b->failed[slot]++)
                b->first_err[slot] = df->rc ? df->err : "frame not in its file";
            continue;
        }
        b->used[u].pixels = df->px + (size_t)im->frame * (size_t)df->rows * (size_t)df->cols;
        b->used[u].rows = df->rows;
        b->used[u].cols = df->cols;
    }
    return 0;
}

/* Layer 1's input: one group per slot of its decoded images; frames of
 * images not decoded (or not sampled, never read) are black. */
static int make_source(build *b)
{
    b->gimg = calloc(b->n_used ? b->n_used : 1, sizeof *b->gimg);
    b->frames = calloc(b->L, sizeof *b->frames);
    if (!b->gimg || !b->frames)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t next = 0;
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        b->groups[slot].images = b->gimg + next;
        for (size_t u = 0; u < b->n_used; u++) {
            used_image *ui = &b->used[u];
            if (ui->slot != slot || !ui->pixels)
                continue;
            ui->index = (int)b->n_img[slot]++;
            b->gimg[next++] = (cmr_src_image){ui->pixels, ui->rows, ui->cols};
        }
        b->groups[slot].n_images = b->n_img[slot];
    }
    for (size_t i = 0; i < b->L; i++) {
        b->frames[i] = (cmr_src_frame){CMR_SRC_BLACK, 0};
        for (size_t u = 0; b->seq[i].im && u < b->n_used; u++)
            if (b->used[u].im == b->seq[i].im) {
                if (b->used[u].index >= 0)
                    b->frames[i] = (cmr_src_frame){b->used[u].slot, b->used[u].index};
                break;
            }
    }
    /* No cine image made it (all unreadable): nothing to recognise the study by. */
    if (!b->n_img[CMR_SLOT_CINE_LAX] && !b->n_img[CMR_SLOT_CINE_SAX] &&
        (b->failed[CMR_SLOT_CINE_LAX] || b->failed[CMR_SLOT_CINE_SAX]))
        return cmr_fail(CMR_EFORMAT, "study %s: no cine image could be decoded: %s", b->uid,
                        b->first_err[CMR_SLOT_CINE_SAX] ? b->first_err[CMR_SLOT_CINE_SAX]
                                                        : b->first_err[CMR_SLOT_CINE_LAX]);
    return 0;
}

static void describe(const build *b, const cmr_input_spec *spec, cmr_tensor_info *info)
{
    info->source_frames = (unsigned)b->L;
    char *g = info->gaps;
    const size_t gcap = sizeof info->gaps;
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        const view_stack *v = &b->vs[slot];
        size_t span = slot <= CMR_SLOT_CINE_SAX ? spec->cine_frames : b->n_sax;
        if (!v->series) {
            switch (slot) {
            case CMR_SLOT_CINE_LAX:
                info->views_missing |= CMR_VIEW_CINE_4CH | CMR_VIEW_CINE_2CH | CMR_VIEW_CINE_3CH;
                gap(g, gcap, "no cine LAX (4-, 2- or 3-chamber): %zu black frames", span);
                break;
            case CMR_SLOT_CINE_SAX:
                info->views_missing |= CMR_VIEW_CINE_SAX;
                gap(g, gcap, "no cine SAX: %zu black frames", span);
                break;
            case CMR_SLOT_LGE_SAX:
                info->views_missing |= CMR_VIEW_LGE_SAX;
                gap(g, gcap, "no LGE SAX: %d black frames, n_SAX taken as %d", DEFAULT_LGE_SLICES, DEFAULT_LGE_SLICES);
                break;
            default:
                info->views_missing |= cmr_series_label_view(lge_lax_label[slot - CMR_SLOT_LGE_4CH]);
                gap(g, gcap, "no %s: %zu black frames", slot_name[slot], span);
                break;
            }
            continue;
        }
        uint32_t bit = cmr_series_label_view(v->series->label);
        if (b->n_img[slot])
            info->views_used |= bit;
        else if (b->failed[slot])
            info->views_missing |= bit;
        if (slot == CMR_SLOT_CINE_LAX && b->lax_choice > 0)
            gap(g, gcap, "cine LAX from the %s view (no 4-chamber)", b->lax_choice == 1 ? "2-chamber" : "3-chamber");
        if (b->failed[slot])
            gap(g, gcap, "%s (series %d): %zu image(s) unreadable, black instead: %s", slot_name[slot],
                v->series->number, b->failed[slot], b->first_err[slot]);
    }
}

static int fill_trace(const build *b, const cmr_input_spec *spec, float (*windows)[2], cmr_tensor_trace *trace)
{
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        const view_stack *v = &b->vs[slot];
        trace->series[slot] = !v->series                   ? NULL
                              : slot <= CMR_SLOT_CINE_SAX ? v->slices[v->n_slices / 2].series
                                                          : v->series;
        trace->n_slices[slot] = (int)v->n_slices;
        trace->window[slot][0] = windows[slot][0];
        trace->window[slot][1] = windows[slot][1];
    }
    trace->n_source = b->L;
    trace->n_out = spec->frames;
    trace->slot = malloc(spec->frames * sizeof *trace->slot);
    trace->image = malloc(spec->frames * sizeof *trace->image);
    trace->source_index = malloc(spec->frames * sizeof *trace->source_index);
    if (!trace->slot || !trace->image || !trace->source_index) {
        cmr_tensor_trace_free(trace);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    for (unsigned j = 0; j < spec->frames; j++) {
        int sampled = j < b->n_out;
        trace->slot[j] = sampled ? b->seq[b->idx[j]].slot : -1;
        trace->image[j] = sampled && b->frames[b->idx[j]].group != CMR_SRC_BLACK ? b->seq[b->idx[j]].im : NULL;
        trace->source_index[j] = sampled ? b->idx[j] : (size_t)-1;
    }
    return 0;
}

/* into: the caller's buffer, or NULL to allocate one and return it in *tensor. */
static int study_tensor(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                        float *into, float **tensor, cmr_tensor_info *info, cmr_tensor_trace *trace)
{
    cmr_tensor_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (trace)
        memset(trace, 0, sizeof *trace);
    if (!tensor && !into)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor: no output");
    if (tensor)
        *tensor = NULL;
    if (!study || !read)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor: no study or no pixel reader");
    int rc = cmr_spec_check(spec);
    if (rc)
        return rc;

    build b;
    memset(&b, 0, sizeof b);
    b.uid = study->uid[0] ? study->uid : "(no Study Instance UID)";
    float *out = NULL;
    float windows[CMR_SLOT_COUNT][2];
    if ((rc = choose_views(&b, study)) || (rc = build_video(&b, spec)) || (rc = decode_shown(&b, read, user)) ||
        (rc = make_source(&b)))
        goto done;
    out = into ? into : alloc_tensor(cmr_tensor_values(spec));
    if (!out) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for a %u x %u x %u x %u tensor", spec->frames, spec->channels,
                      spec->size, spec->size);
        goto done;
    }
    cmr_tensor_source src = {CMR_SLOT_COUNT, b.groups, b.L, b.frames};
    if ((rc = cmr_tensor_from_source(&src, spec, out, windows))) {
        cmr_fail_context(rc, "study %s: ", b.uid);
        goto done;
    }
    describe(&b, spec, info);
    if (trace && (rc = fill_trace(&b, spec, windows, trace)))
        goto done;
    if (!into)
        *tensor = out;
    out = NULL;
done:
    if (out != into)
        free(out);
    build_free(&b);
    return rc;
}

int cmr_study_tensor_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                          float **tensor, cmr_tensor_info *info, cmr_tensor_trace *trace)
{
    return study_tensor(study, spec, read, user, NULL, tensor, info, trace);
}

int cmr_study_tensor_into_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                               float *out, cmr_tensor_info *info)
{
    if (!out)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor_into: no output buffer");
    return study_tensor(study, spec, read, user, out, NULL, info, NULL);
}

int cmr_study_tensor(const cmr_study *study, const cmr_input_spec *spec, float **tensor, cmr_tensor_info *info)
{
    return study_tensor(study, spec, cmr_tensor_dicom_reader, NULL, NULL, tensor, info, NULL);
}

int cmr_study_tensor_into(const cmr_study *study, const cmr_input_spec *spec, float *out, cmr_tensor_info *info)
{
    return cmr_study_tensor_into_with(study, spec, cmr_tensor_dicom_reader, NULL, out, info);
}
