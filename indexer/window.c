/* The 8-bit window of a series (docs/model-input.md, "8-bit window").
 *
 * lo and hi are exact order statistics, as numpy's inverted_cdf percentile
 * gives them, found without sorting: DICOM values are integers (a 16-bit
 * stored value times an integral slope, in nearly every file), so one
 * histogram over their range finds both, and the lookup table built from
 * the window maps each value to 8 bits.  Other values (a fractional
 * rescale, float pixel data) go through a two-pass radix select on the
 * float bit patterns. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_tensor_internal.h"

size_t cmr_percentile_index(size_t n, double pct)
{
    /* numpy 1.24 _inverted_cdf: virtual index n*q - 1 in float64; take its
     * floor when it is whole, else the next index; clip to [0, n-1]. */
    double q = pct / 100.0;
    double vi = (double)n * q - 1.0;
    double prev = floor(vi);
    double idx = vi - prev == 0.0 ? prev : prev + 1.0;
    if (idx < 0)
        idx = 0;
    if (idx > (double)(n - 1))
        idx = (double)(n - 1);
    return (size_t)idx;
}

uint8_t cmr_window_value(double v, double lo, double hi)
{
    if (!(hi > lo))
        return 0;
    double t = (v - lo) / (hi - lo);
    t = t < 0 ? 0 : (t > 1 ? 1 : t);
    /* Separate statements so no compiler fuses them into an FMA: the numpy
     * reference rounds after each operation, and 8-bit values must agree exactly. */
    double y = t * 255.0;
    y = y + 0.5;
    return (uint8_t)floor(y);
}

void cmr_window_free(cmr_window *w)
{
    if (!w)
        return;
    free(w->lut);
    free(w->lutf);
    w->lut = NULL;
    w->lutf = NULL;
    w->n_lut = 0;
}

/* Total order of floats as unsigned keys (negative values flipped). */
static inline uint32_t float_key(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

static inline float key_float(uint32_t k)
{
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Finds the key holding 0-based rank r, given the first-pass histogram:
 * bucket b and rank within it. */
static void find_bucket(const size_t *hist, size_t bins, size_t r, size_t *bucket, size_t *rank_in)
{
    size_t cum = 0;
    for (size_t b = 0; b < bins; b++) {
        if (cum + hist[b] > r) {
            *bucket = b;
            *rank_in = r - cum;
            return;
        }
        cum += hist[b];
    }
    *bucket = bins - 1;
    *rank_in = 0;
}

static int generic_window(cmr_window *w, size_t n_images, const float *const *images, const size_t *counts,
                          size_t r_lo, size_t r_hi)
{
    size_t *hist = calloc(65536, sizeof *hist);
    size_t *fine = calloc(2 * 65536, sizeof *fine);
    if (!hist || !fine) {
        free(hist);
        free(fine);
        return cmr_fail(CMR_ENOMEM, "out of memory for the window histogram");
    }
    for (size_t i = 0; i < n_images; i++)
        for (size_t j = 0; j < counts[i]; j++)
            hist[float_key(images[i][j]) >> 16]++;
    size_t b_lo, in_lo, b_hi, in_hi;
    find_bucket(hist, 65536, r_lo, &b_lo, &in_lo);
    find_bucket(hist, 65536, r_hi, &b_hi, &in_hi);
    for (size_t i = 0; i < n_images; i++)
        for (size_t j = 0; j < counts[i]; j++) {
            uint32_t k = float_key(images[i][j]);
            if (k >> 16 == b_lo)
                fine[k & 0xffffu]++;
            if (k >> 16 == b_hi)
                fine[65536 + (k & 0xffffu)]++;
        }
    size_t lo_low, hi_low, dummy;
    find_bucket(fine, 65536, in_lo, &lo_low, &dummy);
    find_bucket(fine + 65536, 65536, in_hi, &hi_low, &dummy);
    w->lo = key_float((uint32_t)(b_lo << 16 | lo_low));
    w->hi = key_float((uint32_t)(b_hi << 16 | hi_low));
    free(hist);
    free(fine);
    return 0;
}

/* The integer path: 1 when it applied, 0 when some value is not an integer
 * within [INT_LO, INT_HI] (every 16-bit stored value, signed or not, with
 * an integral rescale), negative on failure.  The fixed range lets each
 * image be checked and counted in one sweep while it is in cache. */
#define INT_LO (-32768)
#define INT_HI 65535
#define INT_BINS ((size_t)(INT_HI - INT_LO + 1))

/* Four at a time, written out: GCC at -O2 vectorises almost no loops. */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));

static inline v4f v4f_splat(float x) { return (v4f){x, x, x, x}; }
static inline v4i v4i_splat(int32_t x) { return (v4i){x, x, x, x}; }
static inline v4i v4i_select(v4i m, v4i a, v4i b) { return (a & m) | (b & ~m); }

/* v clamped into [lo, hi] (NaN to lo); *inside: lanes that were in it. */
static inline v4f clamp4(v4f v, float lo, float hi, v4i *inside)
{
    v4i ge = v >= v4f_splat(lo), le = v <= v4f_splat(hi);
    *inside = ge & le;
    v4i r = v4i_select(*inside, (v4i)v, (v4i)v4f_splat(lo));
    return (v4f)v4i_select(ge & ~le, (v4i)v4f_splat(hi), r);
}

/* Counts one image into two histograms (alternate lanes: a run of one
 * value, the background, then does not wait on its own stores) and
 * widens [*mn, *mx].  0 if some value is not a small integer. */
static int count_image(const float *p, size_t n, uint32_t *h0, uint32_t *h1, int32_t *mn, int32_t *mx)
{
    v4i bad = v4i_splat(0), vmn = v4i_splat(*mn), vmx = v4i_splat(*mx);
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4f v;
        memcpy(&v, p + i, sizeof v);
        v4i inside;
        v4f c = clamp4(v, (float)INT_LO, (float)INT_HI, &inside);
        v4i k = __builtin_convertvector(c, v4i);
        bad |= ~inside | (__builtin_convertvector(k, v4f) != c);
        vmn = v4i_select(k < vmn, k, vmn);
        vmx = v4i_select(k > vmx, k, vmx);
        h0[k[0]]++;
        h1[k[1]]++;
        h0[k[2]]++;
        h1[k[3]]++;
    }
    if (bad[0] | bad[1] | bad[2] | bad[3])
        return 0;
    for (int l = 0; l < 4; l++) {
        *mn = vmn[l] < *mn ? vmn[l] : *mn;
        *mx = vmx[l] > *mx ? vmx[l] : *mx;
    }
    for (; i < n; i++) {
        float v = p[i];
        if (!(v >= (float)INT_LO && v <= (float)INT_HI) || (float)(int32_t)v != v)
            return 0;
        int32_t k = (int32_t)v;
        h0[k]++;
        *mn = k < *mn ? k : *mn;
        *mx = k > *mx ? k : *mx;
    }
    return 1;
}

static int integer_window(cmr_window *w, size_t n_images, const float *const *images, const size_t *counts,
                          size_t r_lo, size_t r_hi)
{
    uint32_t *hist = calloc(2 * INT_BINS, sizeof *hist);
    if (!hist)
        return cmr_fail(CMR_ENOMEM, "out of memory for the window histogram");
    uint32_t *h0 = hist - INT_LO, *h1 = hist + INT_BINS - INT_LO;
    int32_t mn = INT_HI, mx = INT_LO;
    for (size_t i = 0; i < n_images; i++)
        if (!count_image(images[i], counts[i], h0, h1, &mn, &mx)) {
            free(hist);
            return 0;
        }
    size_t cum = 0;
    int32_t lo = mx, hi = mx;
    for (int32_t v = mn, found_lo = 0; v <= mx; v++) {
        cum += (size_t)h0[v] + h1[v];
        if (!found_lo && cum > r_lo) {
            lo = v;
            found_lo = 1;
        }
        if (cum > r_hi) {
            hi = v;
            break;
        }
    }
    free(hist);
    w->lo = (float)lo;
    w->hi = (float)hi;
    /* The tables cover [mn, mx], every value of the images. */
    size_t n = (size_t)(mx - mn) + 1;
    w->lut = malloc(n);
    w->lutf = malloc(n * sizeof *w->lutf);
    if (!w->lut || !w->lutf) {
        cmr_window_free(w);
        return cmr_fail(CMR_ENOMEM, "out of memory for the window table");
    }
    for (size_t b = 0; b < n; b++) {
        int32_t v = mn + (int32_t)b;
        w->lut[b] = v <= lo ? 0 : (v >= hi ? (hi > lo ? 255 : 0) : cmr_window_value(v, w->lo, w->hi));
        w->lutf[b] = w->lut[b];
    }
    w->base = mn;
    w->n_lut = n;
    return 1;
}

int cmr_window_compute(cmr_window *w, size_t n_images, const float *const *images, const size_t *counts,
                       int force_generic)
{
    memset(w, 0, sizeof *w);
    size_t total = 0;
    for (size_t i = 0; i < n_images; i++)
        total += counts[i];
    if (total == 0)
        return cmr_fail(CMR_EINVAL, "window of no values");
    size_t r_lo = cmr_percentile_index(total, CMR_WINDOW_LO_PCT);
    size_t r_hi = cmr_percentile_index(total, CMR_WINDOW_HI_PCT);
    /* uint32 bins: the integer path stops short of 2^32 values. */
    if (!force_generic && total < UINT32_MAX) {
        int rc = integer_window(w, n_images, images, counts, r_lo, r_hi);
        if (rc != 0)
            return rc < 0 ? rc : 0;
    }
    return generic_window(w, n_images, images, counts, r_lo, r_hi);
}

/* Table indices of four values, clamped into the table only to keep a
 * misuse (an image that was not windowed) in bounds. */
static inline v4i lut_index(const cmr_window *w, const float *src)
{
    v4f v;
    memcpy(&v, src, sizeof v);
    v4i inside;
    v4f c = clamp4(v, (float)w->base, (float)(w->base + (int64_t)w->n_lut - 1), &inside);
    return __builtin_convertvector(c, v4i) - v4i_splat((int32_t)w->base);
}

static inline size_t lut_index1(const cmr_window *w, float v)
{
    float lo = (float)w->base, hi = (float)(w->base + (int64_t)w->n_lut - 1);
    return v >= lo ? (v <= hi ? (size_t)((int32_t)v - w->base) : w->n_lut - 1) : 0;
}

void cmr_window_apply_grey(const cmr_window *w, const float *src, size_t n, float *dst)
{
    if (w->lut) {
        size_t i = 0;
        for (; i + 4 <= n; i += 4) {
            v4i k = lut_index(w, src + i);
            v4f g = {w->lutf[k[0]], w->lutf[k[1]], w->lutf[k[2]], w->lutf[k[3]]};
            memcpy(dst + i, &g, sizeof g);
        }
        for (; i < n; i++)
            dst[i] = w->lutf[lut_index1(w, src[i])];
        return;
    }
    double lo = w->lo, hi = w->hi;
    for (size_t i = 0; i < n; i++)
        dst[i] = (float)cmr_window_value(src[i], lo, hi);
}

void cmr_window_apply(const cmr_window *w, const float *src, size_t n, uint8_t *dst)
{
    if (w->lut) {
        for (size_t i = 0; i < n; i++)
            dst[i] = w->lut[lut_index1(w, src[i])];
        return;
    }
    double lo = w->lo, hi = w->hi;
    for (size_t i = 0; i < n; i++)
        dst[i] = cmr_window_value(src[i], lo, hi);
}
