/* Kernels of the towers.  Matrix products of weights go to the AMX kernel
 * (gemm_amx.c) where the CPU has it and the product is large enough, else
 * to OpenBLAS; the element-wise and per-row work runs in OpenMP loops;
 * attention uses its own small-matrix kernel (see cmr_attend in
 * model_internal.h for why). */
#include <cblas.h>
#include <dlfcn.h>
#include <math.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "gemm_amx.h"
#include "model_internal.h"

/* Element-wise loops below this size are not worth waking threads for. */
#define PAR_MIN 16384

void openblas_set_num_threads(int n);

/* OpenBLAS 0.3.21 (Debian 12) does not recognise recent Xeons, this
 * machine's AVX-512 cores among them, and falls back to its Prescott (SSE3)
 * kernels: sgemm at a fifth of the speed the SkylakeX kernels reach here
 * (docs/benchmarks.md, "BLAS kernel").  Its dynamic-architecture build
 * exports the initialisation it runs at load time; when it has fallen back
 * and the CPU (and OS) support AVX-512 or AVX2 + FMA, it is run again with
 * the matching core.  Looked up with dlsym, so that another BLAS, or a
 * later OpenBLAS without these symbols, is simply left as it is.  A user's
 * OPENBLAS_CORETYPE is respected, and CMR_BLAS_CORE=keep turns this off
 * (e.g. to reproduce results computed with the fallback kernels). */
static void blas_pick_core(void)
{
    const char *keep = getenv("CMR_BLAS_CORE");
    if (getenv("OPENBLAS_CORETYPE") || (keep && !strcmp(keep, "keep")))
        return;
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    void (*quit)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_quit");
    void (*init)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "gotoblas_dynamic_init");
    if (!corename || !quit || !init) /* not OpenBLAS, or not its dynamic-architecture build */
        return;
    const char *now = corename();
    if (!now || strcasecmp(now, "Prescott") != 0)
        return; /* a core OpenBLAS chose knowingly */
    __builtin_cpu_init();
    const char *want = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") ? "SkylakeX"
                       : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? "Haswell"
                                                                                       : NULL;
    if (!want)
        return;
    /* Before any thread of ours exists (cmr_blas_init's contract), so the
     * environment may be touched; it is restored for child processes. */
    if (setenv("OPENBLAS_CORETYPE", want, 1) != 0)
        return;
    quit();
    init();
    unsetenv("OPENBLAS_CORETYPE");
}

void cmr_blas_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_pick_core);
}

const char *cmr_blas_core(void)
{
    char *(*corename)(void) = (char *(*)(void))dlsym(RTLD_DEFAULT, "openblas_get_corename");
    const char *name = corename ? corename() : NULL;
    return name ? name : "unknown";
}

static void blas_single_thread(void)
{
    cmr_blas_init();
    openblas_set_num_threads(1);
}

void cmr_model_threads_init(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, blas_single_thread);
}

/* Where the AMX kernel (gemm_amx.c) pays, measured on one core against
 * sgemm (docs/gemm.md, "When AMX runs"): from 4 rows (one row is sgemm's
 * matrix-vector product, 4x faster than packing the weights for a 32-row
 * tile) and from about 2.5e5 multiply-adds with in >= 64; below, tile
 * set-up and packing cost as much as sgemm's whole product.  Decided per
 * thread's part. */
#define AMX_MIN_ROWS 4
#define AMX_MIN_IN 64
#define AMX_MIN_MACS 2.5e5

static int use_amx(size_t rows, size_t in, size_t cols)
{
    if (!cmr_gemm_amx_ready())
        return 0;
    if (cmr_gemm_mode_get() == CMR_GEMM_AMX)
        return 1;
    return rows >= AMX_MIN_ROWS && in >= AMX_MIN_IN && (double)rows * (double)in * (double)cols >= AMX_MIN_MACS;
}

/* The bias into rows r0..r1, columns c0..c1 of y (added to them with acc),
 * before the product is accumulated onto it. */
static void bias_into(float *y, size_t out, const float *b, size_t r0, size_t r1, size_t c0, size_t c1, int acc)
{
    for (size_t i = r0; b && i < r1; i++)
        for (size_t j = c0; j < c1; j++)
            y[i * out + j] = acc ? y[i * out + j] + b[j] : b[j];
}

/* OpenBLAS's y[r0..r1][c0..c1] (+)= x · w^T. */
static void sgemm_part(const float *x, size_t in, const float *w, size_t out, float *y, size_t r0, size_t r1,
                       size_t c0, size_t c1, int accumulate)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)(r1 - r0), (int)(c1 - c0), (int)in, 1.0f, x + r0 * in,
                (int)in, w + c0 * in, (int)in, accumulate ? 1.0f : 0.0f, y + r0 * out + c0, (int)out);
}

/* One thread's share of y = x · w^T (+ b): rows r0..r1, columns c0..c1. */
static void linear_part(const float *x, size_t in, const float *w, const float *b, size_t out, float *y, size_t r0,
                        size_t r1, size_t c0, size_t c1, int acc)
{
    if (r1 <= r0 || c1 <= c0)
        return;
    bias_into(y, out, b, r0, r1, c0, c1, acc);
    /* The AMX kernel fails only without its buffer, before touching y. */
    if (use_amx(r1 - r0, in, c1 - c0) &&
        cmr_gemm_amx(r1 - r0, c1 - c0, in, x + r0 * in, in, w + c0 * in, in, y + r0 * out + c0, out, b || acc) == 0)
        return;
    sgemm_part(x, in, w, out, y, r0, r1, c0, c1, b || acc);
}

/* All the threads on one AMX product, each taking pieces of it as it comes
 * free (cmr_gemm_amx_team): this machine's cores are slowed by other work
 * unevenly, and a fixed split waits for the slowest (docs/gemm.md,
 * "Threads").  The bias goes in first, by rows.  0, or -1 when no thread
 * could run the kernel (y then holds the bias). */
static int linear_team(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y,
                       int acc, int threads)
{
    cmr_gemm_share share = {0};
    int failed = 0;
#pragma omp parallel num_threads(threads) reduction(+ : failed)
    {
        size_t t = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
        bias_into(y, out, b, n * t / k, n * (t + 1) / k, 0, out, acc);
#pragma omp barrier
        failed += cmr_gemm_amx_team(n, out, in, x, in, w, in, y, out, b || acc, &share) < 0;
    }
    return failed < threads ? 0 : -1;
}

/* OpenBLAS runs single-threaded (cmr_model_threads_init) and the product is
 * split here across the OpenMP threads (by pieces taken as they come free
 * on AMX; else by rows when there are many and by output columns
 * otherwise): OpenBLAS's own threads would spin-wait through the attention
 * loops that follow each product and take their cores. */
static void linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y, int acc)
{
    cmr_model_threads_init();
    int threads = omp_get_max_threads();
    if (threads <= 1 || (double)n * (double)in * (double)out < 2e6) {
        linear_part(x, in, w, b, out, y, 0, n, 0, out, acc);
        return;
    }
    if (use_amx(n, in, (out + (size_t)threads - 1) / (size_t)threads)) {
        if (linear_team(x, n, in, w, b, out, y, acc, threads) < 0) /* no buffer anywhere: y holds the bias */
            sgemm_part(x, in, w, out, y, 0, n, 0, out, b || acc);
        return;
    }
    int by_rows = n >= 64 * (size_t)threads;
#pragma omp parallel num_threads(threads)
    {
        size_t t = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
        /* Boundaries on multiples of 16 keep every part's sgemm on whole
         * vector tiles. */
        if (by_rows) {
            size_t r0 = n * t / k / 16 * 16, r1 = t + 1 == k ? n : n * (t + 1) / k / 16 * 16;
            linear_part(x, in, w, b, out, y, r0, r1, 0, out, acc);
        } else {
            size_t c0 = out * t / k / 16 * 16, c1 = t + 1 == k ? out : out * (t + 1) / k / 16 * 16;
            linear_part(x, in, w, b, out, y, 0, n, c0, c1, acc);
        }
    }
}

void cmr_linear(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y)
{
    linear(x, n, in, w, b, out, y, 0);
}

void cmr_linear_acc(const float *x, size_t n, size_t in, const float *w, const float *b, size_t out, float *y)
{
    linear(x, n, in, w, b, out, y, 1);
}

void cmr_layernorm(const float *x, size_t n, size_t d, const float *w, const float *b, float eps, float *y)
{
#pragma omp parallel for if (n * d >= PAR_MIN)
    for (size_t i = 0; i < n; i++) {
        const float *r = x + i * d;
        float *o = y + i * d;
        /* Two passes in double: the variance of a row with a large mean
         * loses everything in a one-pass float formula. */
        double mean = 0, var = 0;
        for (size_t j = 0; j < d; j++)
            mean += r[j];
        mean /= (double)d;
        for (size_t j = 0; j < d; j++)
            var += ((double)r[j] - mean) * ((double)r[j] - mean);
        var /= (double)d;
        float m = (float)mean, inv = (float)(1.0 / sqrt(var + (double)eps));
        for (size_t j = 0; j < d; j++)
            o[j] = (r[j] - m) * inv * w[j] + b[j];
    }
}


void cmr_relu(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = x[i] > 0 ? x[i] : 0;
}

void cmr_add(float *y, const float *x, size_t n)
{
#pragma omp parallel for if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void cmr_l2_normalize(float *x, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * x[i];
    if (s > 0) {
        float inv = (float)(1.0 / sqrt(s));
        for (size_t i = 0; i < n; i++)
            x[i] *= inv;
    }
}

void cmr_softmax_scaled(float *s, size_t n, float scale)
{
    float mx = -INFINITY;
    for (size_t j = 0; j < n; j++)
        mx = s[j] > mx ? s[j] : mx;
    double sum = 0;
    for (size_t j = 0; j < n; j++) {
        s[j] = expf((s[j] - mx) * scale);
        sum += s[j];
    }
    float inv = (float)(1.0 / sum);
    for (size_t j = 0; j < n; j++)
        s[j] *= inv;
}

/* ---- attention ------------------------------------------------------------------
 * Register-tiled with GCC/Clang vector extensions: 16 floats per vector,
 * one zmm register under AVX-512 and two ymm under AVX2; the clones let one
 * binary use what the CPU has. */
typedef float v16 __attribute__((vector_size(64)));

#define KT_PAD 32 /* the key dimension is padded to whole 2-vector tiles */

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__SANITIZE_ADDRESS__) && !defined(CMR_NO_CLONES)
#define CMR_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CMR_CLONES
#endif

/* Macros, not functions: a 64-byte vector passed or returned by value in
 * the non-AVX-512 clones is an ABI clang refuses outright. */
#define LOAD16(v, p) memcpy(&(v), (p), sizeof(v16))
#define store16(p, v) memcpy((p), &(v), sizeof(v16))
#define store16(p, v) memcpy((p), &(v), sizeof(v16))

/* ---- GELU ------------------------------------------------------------------------------- */

/* The exact GELU, x/2 (1 + erf(x/sqrt 2)), with erf to float precision
 * instead of libm's erff, which was 8% of the video tower's time once the
 * products ran at AVX-512 speed: Abramowitz & Stegun 7.1.26 (|error| below
 * 5e-7 after float rounding, checked on a 1e-4 grid over [-8, 8]) with
 * exp(-a^2) from a degree-6 polynomial on a Cody-Waite reduced argument.
 * a is clamped at 4, where erf is 1 to float precision, so 2^k never
 * leaves the normal range.  The same operations in the vector body and in
 * the scalar tail. */
#define GELU_P 0.3275911f
#define GELU_A1 0.254829592f
#define GELU_A2 -0.284496736f
#define GELU_A3 1.421413741f
#define GELU_A4 -1.453152027f
#define GELU_A5 1.061405429f
#define LN2_HI 0.693145752f
#define LN2_LO 1.42860677e-6f
#define EXP_POLY(r) (1.0f + (r) * (1.0f + (r) * (0.5f + (r) * (1.0f / 6 + (r) * (1.0f / 24 + (r) * (1.0f / 120 + (r) * (1.0f / 720)))))))
#define ERFC_POLY(t) ((t) * (GELU_A1 + (t) * (GELU_A2 + (t) * (GELU_A3 + (t) * (GELU_A4 + (t) * GELU_A5)))))

static float gelu_one(float x)
{
    float z = x * (float)M_SQRT1_2, a = fabsf(z);
    a = a < 4.0f ? a : 4.0f;
    float t = 1.0f / (1.0f + GELU_P * a), e = -a * a;
    int k = (int)(e * 1.44269504f - 0.5f); /* nearest, for e <= 0 */
    float r = e - (float)k * LN2_HI - (float)k * LN2_LO;
    uint32_t bits = (uint32_t)(k + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    float y = 1.0f - ERFC_POLY(t) * (EXP_POLY(r) * scale);
    return 0.5f * x * (1.0f + (z < 0 ? -y : y));
}

typedef int32_t v16i __attribute__((vector_size(64)));

CMR_CLONES static void gelu_span(float *x, size_t n)
{
    const v16 zero = {0}, four = zero + 4.0f;
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        v16 v, z, a;
        LOAD16(v, x + i);
        z = v * (float)M_SQRT1_2;
        v16i zi = (v16i)z, sign = zi & (int32_t)0x80000000;
        a = (v16)(zi & 0x7fffffff);
        v16i small = a < four;
        a = (v16)((small & (v16i)a) | (~small & (v16i)four));
        v16 t = 1.0f / (1.0f + GELU_P * a), e = -a * a;
        v16i k = __builtin_convertvector(e * 1.44269504f - 0.5f, v16i);
        v16 kf = __builtin_convertvector(k, v16);
        v16 r = e - kf * LN2_HI - kf * LN2_LO;
        v16 scale = (v16)((k + 127) << 23);
        v16 y = 1.0f - ERFC_POLY(t) * (EXP_POLY(r) * scale);
        v16 out = 0.5f * v * (1.0f + (v16)((v16i)y | sign));
        store16(x + i, out);
    }
    for (; i < n; i++)
        x[i] = gelu_one(x[i]);
}

void cmr_gelu(float *x, size_t n)
{
    if (n < PAR_MIN) {
        gelu_span(x, n);
        return;
    }
#pragma omp parallel
    {
        size_t t = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
        size_t lo = n * t / k / 16 * 16, hi = t + 1 == k ? n : n * (t + 1) / k / 16 * 16;
        gelu_span(x + lo, hi - lo);
    }
}

size_t cmr_attend_scratch(size_t nq, size_t nk, size_t dh)
{
    size_t nkp = (nk + KT_PAD - 1) / KT_PAD * KT_PAD;
    return (dh + nq) * nkp;
}

/* s[nq][nkp] = q · kt, 4 query rows x 32 keys per tile. */
CMR_CLONES static void scores(const float *q, size_t q_stride, size_t nq, const float *kt, size_t nkp, size_t dh,
                              float *s)
{
    size_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const float *q0 = q + i * q_stride, *q1 = q0 + q_stride, *q2 = q1 + q_stride, *q3 = q2 + q_stride;
        for (size_t j = 0; j < nkp; j += 32) {
            v16 a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            for (size_t d = 0; d < dh; d++) {
                v16 k0, k1;
                LOAD16(k0, kt + d * nkp + j);
                LOAD16(k1, kt + d * nkp + j + 16);
                a00 += q0[d] * k0;
                a01 += q0[d] * k1;
                a10 += q1[d] * k0;
                a11 += q1[d] * k1;
                a20 += q2[d] * k0;
                a21 += q2[d] * k1;
                a30 += q3[d] * k0;
                a31 += q3[d] * k1;
            }
            float *r = s + i * nkp + j;
            store16(r, a00), store16(r + 16, a01);
            store16(r + nkp, a10), store16(r + nkp + 16, a11);
            store16(r + 2 * nkp, a20), store16(r + 2 * nkp + 16, a21);
            store16(r + 3 * nkp, a30), store16(r + 3 * nkp + 16, a31);
        }
    }
    for (; i < nq; i++) {
        const float *qi = q + i * q_stride;
        for (size_t j = 0; j < nkp; j += 32) {
            v16 a0 = {0}, a1 = {0};
            for (size_t d = 0; d < dh; d++) {
                v16 k0, k1;
                LOAD16(k0, kt + d * nkp + j);
                LOAD16(k1, kt + d * nkp + j + 16);
                a0 += qi[d] * k0;
                a1 += qi[d] * k1;
            }
            store16(s + i * nkp + j, a0);
            store16(s + i * nkp + j + 16, a1);
        }
    }
}

/* out[nq][dh] = p[nq][nk] · v[nk][dh], 4 rows x 32 columns per tile; dh a
 * multiple of 32. */
CMR_CLONES static void weighted_values(const float *p, size_t nkp, size_t nq, const float *v, size_t kv_stride,
                                       size_t nk, size_t dh, float *out, size_t out_stride)
{
    size_t i = 0;
    for (; i + 4 <= nq; i += 4) {
        const float *p0 = p + i * nkp, *p1 = p0 + nkp, *p2 = p1 + nkp, *p3 = p2 + nkp;
        for (size_t c = 0; c < dh; c += 32) {
            v16 a00 = {0}, a01 = {0}, a10 = {0}, a11 = {0}, a20 = {0}, a21 = {0}, a30 = {0}, a31 = {0};
            for (size_t j = 0; j < nk; j++) {
                v16 v0, v1;
                LOAD16(v0, v + j * kv_stride + c);
                LOAD16(v1, v + j * kv_stride + c + 16);
                a00 += p0[j] * v0;
                a01 += p0[j] * v1;
                a10 += p1[j] * v0;
                a11 += p1[j] * v1;
                a20 += p2[j] * v0;
                a21 += p2[j] * v1;
                a30 += p3[j] * v0;
                a31 += p3[j] * v1;
            }
            float *o = out + i * out_stride + c;
            store16(o, a00), store16(o + 16, a01);
            store16(o + out_stride, a10), store16(o + out_stride + 16, a11);
            store16(o + 2 * out_stride, a20), store16(o + 2 * out_stride + 16, a21);
            store16(o + 3 * out_stride, a30), store16(o + 3 * out_stride + 16, a31);
        }
    }
    for (; i < nq; i++) {
        const float *pi = p + i * nkp;
        for (size_t c = 0; c < dh; c += 32) {
            v16 a0 = {0}, a1 = {0};
            for (size_t j = 0; j < nk; j++) {
                v16 v0, v1;
                LOAD16(v0, v + j * kv_stride + c);
                LOAD16(v1, v + j * kv_stride + c + 16);
                a0 += pi[j] * v0;
                a1 += pi[j] * v1;
            }
            store16(out + i * out_stride + c, a0);
            store16(out + i * out_stride + c + 16, a1);
        }
    }
}

/* Head widths that are not a multiple of 32 (small test models). */
static void weighted_values_any(const float *p, size_t nkp, size_t nq, const float *v, size_t kv_stride, size_t nk,
                                size_t dh, float *out, size_t out_stride)
{
    for (size_t i = 0; i < nq; i++) {
        float *oi = out + i * out_stride;
        memset(oi, 0, dh * sizeof *oi);
        for (size_t j = 0; j < nk; j++) {
            float a = p[i * nkp + j];
            const float *vj = v + j * kv_stride;
            for (size_t d = 0; d < dh; d++)
                oi[d] += a * vj[d];
        }
    }
}

void cmr_attend(const float *q, size_t q_stride, size_t nq, const float *k, const float *v, size_t kv_stride,
                size_t nk, size_t dh, float *out, size_t out_stride, float *scratch)
{
    /* Keys transposed to [dh][nkp], zero-padded: the padded scores are
     * computed and ignored. */
    size_t nkp = (nk + KT_PAD - 1) / KT_PAD * KT_PAD;
    float *kt = scratch, *s = scratch + dh * nkp;
    for (size_t d = 0; d < dh; d++) {
        for (size_t j = 0; j < nk; j++)
            kt[d * nkp + j] = k[j * kv_stride + d];
        memset(kt + d * nkp + nk, 0, (nkp - nk) * sizeof *kt);
    }
    scores(q, q_stride, nq, kt, nkp, dh, s);
    float scale = 1.0f / sqrtf((float)dh);
    for (size_t i = 0; i < nq; i++)
        cmr_softmax_scaled(s + i * nkp, nk, scale);
    if (dh % 32 == 0)
        weighted_values(s, nkp, nq, v, kv_stride, nk, dh, out, out_stride);
    else
        weighted_values_any(s, nkp, nq, v, kv_stride, nk, dh, out, out_stride);
}

/* ---- arena ---------------------------------------------------------------------- */

#define ARENA_ALIGN 16 /* floats: 64 bytes */

float *cmr_arena_take(cmr_arena *a, size_t n)
{
    size_t at = (a->used + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    a->used = at + n;
    if (!a->base || a->used > a->cap)
        return NULL;
    return a->base + at;
}

int cmr_arena_reserve(cmr_arena *a, size_t n)
{
    a->used = 0;
    if (a->base && n <= a->cap)
        return 0;
    free(a->base);
    a->base = NULL;
    a->cap = 0;
    void *p = NULL;
    if (posix_memalign(&p, 64, n * sizeof(float)) != 0)
        return cmr_fail(CMR_ENOMEM, "model workspace: cannot allocate %zu MB", n * sizeof(float) >> 20);
    a->base = p;
    a->cap = n;
    return 0;
}

void cmr_arena_release(cmr_arena *a)
{
    free(a->base);
    a->base = NULL;
    a->cap = a->used = 0;
}

