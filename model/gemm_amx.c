/* C = A · B^T on Intel AMX at float32 accuracy: the "bf16x3" split.
 *
 * AMX multiplies bfloat16 (8 significant bits) and accumulates in float32.
 * Each float is written as the sum of two bfloat16 values, x = hi + lo with
 * hi = bf16(x) and lo = bf16(x - hi), which keeps 16 of its 24 bits; the
 * product is a_hi b_hi + a_hi b_lo + a_lo b_hi, the dropped a_lo b_lo and the
 * bits lost below lo each at most 2^-16 |a b|.  Three tile products per
 * float product, accumulated in the float32 tiles.  docs/gemm.md derives
 * the error bound and gives the measured errors and speeds.
 *
 * Each inner step multiplies 2 x 2 output tiles of 16 x 16 (a 32 x 32 block
 * of C in tiles 0-3) by 32 k: 10 tile loads for 12 tile products.  The left
 * operand of a tile product is row-major bf16 (a cheap pack); the right one
 * in the VNNI layout, pairs of k per column (a 16 x 16 transpose of 32-bit
 * pairs per tile).  Two blockings, per call and thread:
 *   many rows (gemm_rows): B, the weights [n][k], in panels of 256 columns x
 *     768 k packed to VNNI once and kept in L2, used by every 32-row strip
 *     of A, each strip packed while the one before it is multiplied;
 *   few rows (gemm_few, <= 128: the text tower): each weight is used by too
 *     few rows to amortise the transpose, so the roles swap: C^T = B A^T,
 *     A (the rows) to VNNI once, B streamed through 32-row panels packed
 *     row-major, each while the one before it is multiplied.
 * Nothing is kept between calls: no packed copies of the weights. */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cmr_error.h"
#include "gemm_amx.h"

/* AMX needs x86-64, the compiler's AMX intrinsics (GCC 11, clang 12) and
 * target attributes; elsewhere the kernel is never ready. */
#if defined(__x86_64__) && defined(__has_include) && !defined(CMR_NO_AMX)
#if __has_include(<immintrin.h>) && __has_include(<cpuid.h>) && __has_include(<sys/syscall.h>) &&                  \
    ((defined(__clang__) && __clang_major__ >= 12) || (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11))
#define CMR_HAVE_AMX 1
#endif
#endif

#ifdef CMR_HAVE_AMX
#include <cpuid.h>
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

#define AMX_TARGET __attribute__((target("amx-tile,amx-bf16,avx512f,avx512bw,avx512bf16,avx512vl")))
/* GCC's tile intrinsics are asm statements that do not tell the compiler
 * they read memory: the packed buffers must be written before they run. */
#define MEMORY_BARRIER() __asm__ volatile("" ::: "memory")

static pthread_key_t ws_key; /* the per-thread buffer, freed when its thread ends */
#endif

/* Measured on the qkv, MLP and text shapes (docs/gemm.md, "Tiles and blocking"):
 * 384 or 512 columns per panel, 4 or 8 pack units of prefetch, 64 or 256
 * rows for the few-rows blocking, sub-blocks of k for L1 were all slower. */
#define PANEL_K 768    /* k per packed panel, a multiple of 32 (one tile holds 32 k) */
#define PANEL_N 256    /* columns of B per packed panel (many rows), a multiple of 32 */
#define FEW_ROWS 128   /* up to this many rows, the weights stream (gemm_few) */
#define PF_UNITS 2     /* pack units ahead to prefetch */
#define TILE_ELEMS 512 /* bf16 per 16 x 64-byte tile */
#define STEPS (PANEL_K / 32)

/* Per-thread buffer, the larger of the two layouts plus four 16 x 16
 * float tiles for C's edges.  Many rows: a B panel and two A strips (the
 * one multiplied, the one being packed).  Few rows: A's VNNI panel and two
 * 32-row pair panels of B. */
#define B_PANEL ((PANEL_N / 16) * STEPS * 2 * TILE_ELEMS)
#define A_STRIP (2 * STEPS * 2 * TILE_ELEMS)
#define X_PANEL ((FEW_ROWS + 31) / 32 * 2 * STEPS * 2 * TILE_ELEMS)
#define W_PAIR A_STRIP
#define MAX_SIZE(x, y) ((x) > (y) ? (x) : (y))
#define WS_BYTES (MAX_SIZE(B_PANEL + 2 * A_STRIP, X_PANEL + 2 * W_PAIR) * sizeof(uint16_t) + 4 * 256 * sizeof(float))

static pthread_once_t once = PTHREAD_ONCE_INIT;
static cmr_gemm_mode mode;
static int ready;

cmr_gemm_mode cmr_gemm_mode_parse(const char *value)
{
    if (value && !strcasecmp(value, "openblas"))
        return CMR_GEMM_OPENBLAS;
    if (value && !strcasecmp(value, "amx"))
        return CMR_GEMM_AMX;
    return CMR_GEMM_AUTO;
}

#ifdef CMR_HAVE_AMX
static int cpu_has_amx(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid_count(1, 0, &a, &b, &c, &d) || !(c & (1u << 27))) /* OSXSAVE */
        return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    /* The OS saves the AVX-512 state (opmask, ZMM upper halves, ZMM16-31)
     * and the tile configuration and data. */
    const unsigned xcr0 = (1u << 1) | (1u << 2) | (7u << 5) | (3u << 17);
    if ((lo & xcr0) != xcr0)
        return 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d))
        return 0;
    int amx = (d & (1u << 24)) && (d & (1u << 22));                         /* AMX-TILE, AMX-BF16 */
    int avx512 = (b & (1u << 16)) && (b & (1u << 30)) && (b & (1u << 31)); /* F, BW, VL */
    if (!amx || !avx512 || !__get_cpuid_count(7, 1, &a, &b, &c, &d))
        return 0;
    return (a & (1u << 5)) != 0; /* AVX512-BF16 */
}
#endif

static void init(void)
{
    mode = cmr_gemm_mode_parse(getenv("CMR_GEMM"));
#ifdef CMR_HAVE_AMX
    if (mode == CMR_GEMM_OPENBLAS || !cpu_has_amx())
        return;
    /* Linux keeps the 8 KB tile state off by default; the permission is the
     * process's, for every thread. */
    if (syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) != 0)
        return;
    if (pthread_key_create(&ws_key, free) != 0)
        return;
    ready = 1;
#endif
}

int cmr_gemm_amx_ready(void)
{
    pthread_once(&once, init);
    return ready;
}

cmr_gemm_mode cmr_gemm_mode_get(void)
{
    pthread_once(&once, init);
    return mode;
}

const char *cmr_gemm_kernel(void)
{
    return cmr_gemm_amx_ready() ? "amx-bf16x3" : "openblas";
}

#ifdef CMR_HAVE_AMX

/* Palette 1, all eight tiles 16 rows x 64 bytes.  Static and const: GCC's
 * _tile_loadconfig tells the compiler it reads 8 bytes only. */
static const struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_config = {.palette = 1,
                 .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
                 .rows = {16, 16, 16, 16, 16, 16, 16, 16}};

static inline size_t min_size(size_t a, size_t b)
{
    return a < b ? a : b;
}

/* 32 floats (x0: k 0-15, x1: k 16-31) to 32 bf16 hi and 32 bf16 lo. */
AMX_TARGET static inline void split(__m512 x0, __m512 x1, __m512i *hi, __m512i *lo)
{
    __m512i h = (__m512i)_mm512_cvtne2ps_pbh(x1, x0);
    /* hi back to float: a bf16 is the top half of a float. */
    __m512 h0 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_castsi512_si256(h)), 16));
    __m512 h1 = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm512_extracti64x4_epi64(h, 1)), 16));
    *hi = h;
    *lo = (__m512i)_mm512_cvtne2ps_pbh(_mm512_sub_ps(x1, h1), _mm512_sub_ps(x0, h0));
}

/* r[j] lane p <- r[p] lane j, 32-bit lanes. */
AMX_TARGET static inline void transpose16(__m512i r[16])
{
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    /* After this, r[4i + j]'s 128-bit lane L holds rows 4i..4i+3 of column 4L + j. */
    for (int i = 0; i < 4; i++) {
        r[4 * i] = _mm512_unpacklo_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i], t[4 * i + 2]);
        r[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        r[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        __m512i u0 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0x88), u1 = _mm512_shuffle_i32x4(r[j], r[4 + j], 0xdd);
        __m512i u2 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0x88),
                u3 = _mm512_shuffle_i32x4(r[8 + j], r[12 + j], 0xdd);
        t[j] = _mm512_shuffle_i32x4(u0, u2, 0x88);
        t[4 + j] = _mm512_shuffle_i32x4(u1, u3, 0x88);
        t[8 + j] = _mm512_shuffle_i32x4(u0, u2, 0xdd);
        t[12 + j] = _mm512_shuffle_i32x4(u1, u3, 0xdd);
    }
    memcpy(r, t, sizeof t);
}

/* The two masks that load k = 0..kk-1 of a 32-wide step (zeros beyond). */
static inline void k_masks(size_t kk, __mmask16 *m0, __mmask16 *m1)
{
    *m0 = kk >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << kk) - 1);
    *m1 = kk >= 32 ? (__mmask16)0xffff : kk <= 16 ? (__mmask16)0 : (__mmask16)((1u << (kk - 16)) - 1);
}

/* ---- packing ------------------------------------------------------------------------------------------------ */

/* The left operand of the tile products, row-major: rows 0..rows-1 of src,
 * k 0..kb-1, to tiles [row tile][step][hi, lo] of 16 rows x 32 bf16 (zeros
 * beyond rows and kb).  Done one unit (a row tile at one step) at a time
 * between the tile products of the strip before: the core does not run the
 * packing and the tile products at once, but spread out, the reads (with
 * their prefetches) find memory idle, 5-20% faster than in one go (docs/
 * gemm.md, "Overlap"). */
typedef struct pack_job {
    const float *src;
    size_t ld, rows, kb, steps;
    uint16_t *dst;
    size_t next, total; /* units: 2 row tiles x steps */
    size_t slot, slots; /* k steps of tile products done, and to do, while this packs */
} pack_job;

static void job_start(pack_job *j, const float *src, size_t ld, size_t rows, size_t kb, uint16_t *dst,
                      size_t slots)
{
    *j = (pack_job){.src = src, .ld = ld, .rows = rows, .kb = kb, .steps = (kb + 31) / 32, .dst = dst, .slots = slots};
    j->total = 2 * j->steps;
}

AMX_TARGET static inline void job_unit(pack_job *j)
{
    size_t rt = j->next / j->steps, s = j->next % j->steps;
    j->next++;
    /* The rows PF_UNITS units on, on their way from memory meanwhile (the
     * text tower's weights are in no cache; 16 rows at a time are too many
     * streams for the hardware prefetchers). */
    size_t f = j->next + PF_UNITS - 1;
    if (f < j->total) {
        size_t frt = f / j->steps, fs = f % j->steps;
        for (size_t i = frt * 16; i < min_size(frt * 16 + 16, j->rows); i++) {
            const char *p = (const char *)(j->src + i * j->ld + fs * 32);
            _mm_prefetch(p, _MM_HINT_T0);
            _mm_prefetch(p + 64, _MM_HINT_T0);
        }
    }
    uint16_t *hi = j->dst + (rt * j->steps + s) * 2 * TILE_ELEMS, *lo = hi + TILE_ELEMS;
    __mmask16 m0, m1;
    k_masks(j->kb - s * 32, &m0, &m1);
    for (size_t i = 0; i < 16; i++) {
        size_t row = rt * 16 + i;
        __m512i h = _mm512_setzero_si512(), l = _mm512_setzero_si512();
        if (row < j->rows) {
            const float *src = j->src + row * j->ld + s * 32;
            split(_mm512_maskz_loadu_ps(m0, src), _mm512_maskz_loadu_ps(m1, src + 16), &h, &l);
        }
        _mm512_store_si512(hi + i * 32, h);
        _mm512_store_si512(lo + i * 32, l);
    }
}

AMX_TARGET static void job_finish(pack_job *j)
{
    while (j->next < j->total)
        job_unit(j);
}

/* The right operand, in the tiles' VNNI layout: columns 0..nb-1 of src
 * (its rows, [n][k]), k 0..kb-1, to tiles [column tile][step][hi, lo] whose
 * row p holds, for each of 16 columns, the pair (k = 2p, 2p + 1): a 16 x 16
 * transpose of 32-bit pairs.  Zeros beyond nb and kb. */
AMX_TARGET static void pack_vnni(const float *src, size_t ld, size_t nb, size_t col_tiles, size_t kb, size_t steps,
                                 uint16_t *dst)
{
    for (size_t ct = 0; ct < col_tiles; ct++)
        for (size_t s = 0; s < steps; s++) {
            uint16_t *hi = dst + (ct * steps + s) * 2 * TILE_ELEMS, *lo = hi + TILE_ELEMS;
            __mmask16 m0, m1;
            k_masks(kb - s * 32, &m0, &m1);
            __m512i h[16], l[16];
            for (size_t j = 0; j < 16; j++) {
                size_t col = ct * 16 + j;
                h[j] = l[j] = _mm512_setzero_si512();
                if (col < nb) {
                    const float *p = src + col * ld + s * 32;
                    split(_mm512_maskz_loadu_ps(m0, p), _mm512_maskz_loadu_ps(m1, p + 16), &h[j], &l[j]);
                }
            }
            transpose16(h);
            transpose16(l);
            for (size_t p = 0; p < 16; p++) {
                _mm512_store_si512(hi + p * 32, h[p]);
                _mm512_store_si512(lo + p * 32, l[p]);
            }
        }
}

/* ---- the tile products --------------------------------------------------------------------------------------- */

/* Tiles 0-3 += the 32 x 32 block of (a0; a1) · (b0 b1) over `steps` k
 * steps: a0, a1 the left row tiles' first step, b0, b1 the right column
 * tiles'.  bf16x3: a_hi b_hi, a_hi b_lo, a_lo b_hi, 10 tile loads for 12
 * products.  Between steps, the pending pack job's share. */
AMX_TARGET static void block_steps(const uint16_t *a0, const uint16_t *a1, const uint16_t *b0, const uint16_t *b1,
                                   size_t steps, pack_job *job)
{
    for (size_t s = 0; s < steps; s++) {
        size_t o = s * 2 * TILE_ELEMS;
        _tile_loadd(4, a0 + o, 64);
        _tile_loadd(5, a1 + o, 64);
        _tile_loadd(6, b0 + o, 64);
        _tile_loadd(7, b1 + o, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(6, b0 + o + TILE_ELEMS, 64); /* a_hi b_lo */
        _tile_loadd(7, b1 + o + TILE_ELEMS, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        _tile_loadd(4, a0 + o + TILE_ELEMS, 64); /* a_lo b_hi */
        _tile_loadd(5, a1 + o + TILE_ELEMS, 64);
        _tile_loadd(6, b0 + o, 64);
        _tile_loadd(7, b1 + o, 64);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
        /* Spread evenly over the slots: the pack's memory reads then never
         * hold up the tile products for long. */
        if (job->slots) {
            size_t due = min_size(job->total, (++job->slot * job->total + job->slots - 1) / job->slots);
            while (job->next < due)
                job_unit(job);
        }
        MEMORY_BARRIER(); /* the units' stores before any later tile load of them */
    }
}

/* ---- work items --------------------------------------------------------------------------------------------- */

/* The pieces of one call, in K-panel-major order, taken from a team's
 * shared counter (cmr_gemm_amx_team) or this thread's own.  A piece of a
 * later K panel adds to the C of the earlier ones: it waits until all of
 * theirs are done (at most the longest piece in flight: all were taken
 * before it). */
typedef struct items {
    cmr_gemm_share *share;
    size_t own;
} items;

static size_t take(items *w)
{
    return w->share ? __atomic_fetch_add(&w->share->next, 1, __ATOMIC_RELAXED) : w->own++;
}

static void done(items *w)
{
    if (w->share)
        __atomic_fetch_add(&w->share->done, 1, __ATOMIC_RELEASE);
}

static void wait_done(items *w, size_t before)
{
    while (w->share && __atomic_load_n(&w->share->done, __ATOMIC_ACQUIRE) < before)
        _mm_pause();
    MEMORY_BARRIER(); /* C's tile loads after the wait */
}

/* ---- many rows: C = A · B^T, A packed by strips, B by panels ----------------------------------------------- */

static void edge_in(float *e, const float *c, size_t ldc, size_t nr, size_t nc)
{
    memset(e, 0, 256 * sizeof *e);
    for (size_t i = 0; i < nr; i++)
        memcpy(e + i * 16, c + i * ldc, nc * sizeof *e);
}

static void edge_out(const float *e, float *c, size_t ldc, size_t nr, size_t nc)
{
    for (size_t i = 0; i < nr; i++)
        memcpy(c + i * ldc, e + i * 16, nc * sizeof *e);
}

/* C tile t (row tile r, column tile q of the 32 x 32 block at c) into its
 * tile register: zero, straight from C when all of it is inside, else
 * through the edge buffer; and back. */
#define C_LOAD(t, r, q)                                                                                                \
    do {                                                                                                               \
        if (zero)                                                                                                      \
            _tile_zero(t);                                                                                             \
        else if (rows[r] == 16 && cols[q] == 16)                                                                       \
            _tile_loadd(t, c + (r) * 16 * ldc + (q) * 16, ldc * sizeof(float));                                        \
        else {                                                                                                         \
            if (rows[r] && cols[q])                                                                                    \
                edge_in(edge + (t) * 256, c + (r) * 16 * ldc + (q) * 16, ldc, rows[r], cols[q]);                       \
            else                                                                                                       \
                memset(edge + (t) * 256, 0, 256 * sizeof(float));                                                      \
            MEMORY_BARRIER();                                                                                          \
            _tile_loadd(t, edge + (t) * 256, 64);                                                                      \
        }                                                                                                              \
    } while (0)

#define C_STORE(t, r, q)                                                                                               \
    do {                                                                                                               \
        if (rows[r] == 16 && cols[q] == 16)                                                                            \
            _tile_stored(t, c + (r) * 16 * ldc + (q) * 16, ldc * sizeof(float));                                       \
        else if (rows[r] && cols[q]) {                                                                                 \
            _tile_stored(t, edge + (t) * 256, 64);                                                                     \
            edge_out(edge + (t) * 256, c + (r) * 16 * ldc + (q) * 16, ldc, rows[r], cols[q]);                          \
        }                                                                                                              \
    } while (0)

AMX_TARGET static void block_rows(const uint16_t *ap, const uint16_t *bp, size_t steps, float *c, size_t ldc,
                                  const size_t rows[2], const size_t cols[2], int zero, float *edge, pack_job *job)
{
    size_t ts = steps * 2 * TILE_ELEMS;
    C_LOAD(0, 0, 0);
    C_LOAD(1, 0, 1);
    C_LOAD(2, 1, 0);
    C_LOAD(3, 1, 1);
    block_steps(ap, ap + ts, bp, bp + ts, steps, job);
    C_STORE(0, 0, 0);
    C_STORE(1, 0, 1);
    C_STORE(2, 1, 0);
    C_STORE(3, 1, 1);
}

/* For many rows (the video tower's thousands of tokens): B in panels of
 * PANEL_N x PANEL_K packed to VNNI, reused by the 32-row strips of A; each
 * strip packed while the one before it is multiplied.  Items: (K panel, B
 * panel, strip); a thread takes them in increasing order, and so packs a
 * B panel once. */
AMX_TARGET static void gemm_rows(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                                 float *c, size_t ldc, int accumulate, uint8_t *ws, items *w)
{
    uint16_t *bp = (uint16_t *)ws, *strip[2] = {bp + B_PANEL, bp + B_PANEL + A_STRIP};
    float *edge = (float *)(strip[1] + A_STRIP);
    size_t strips = (m + 31) / 32, per_k = (n + PANEL_N - 1) / PANEL_N * strips;
    size_t items = (k + PANEL_K - 1) / PANEL_K * per_k, packed = SIZE_MAX, it = take(w), buf = 0;
    pack_job job;
    if (it < items) {
        size_t m0 = it % strips * 32, k0 = it / per_k * PANEL_K;
        job_start(&job, a + m0 * lda + k0, lda, min_size(32, m - m0), min_size(PANEL_K, k - k0), strip[0], 0);
        job_finish(&job);
    }
    while (it < items) {
        size_t next = take(w), m0 = it % strips * 32, panel = it / strips;
        size_t n0 = it % per_k / strips * PANEL_N, k0 = it / per_k * PANEL_K;
        size_t nb = min_size(PANEL_N, n - n0), pairs = (nb + 31) / 32, kp = min_size(PANEL_K, k - k0);
        size_t steps = (kp + 31) / 32, mb = min_size(32, m - m0);
        if (panel != packed) {
            pack_vnni(b + n0 * ldb + k0, ldb, nb, 2 * pairs, kp, steps, bp);
            packed = panel;
        }
        job.next = job.total = 0;
        if (next < items) {
            size_t nm0 = next % strips * 32, nk0 = next / per_k * PANEL_K;
            job_start(&job, a + nm0 * lda + nk0, lda, min_size(32, m - nm0), min_size(PANEL_K, k - nk0),
                      strip[buf ^ 1], pairs * steps);
        }
        if (k0)
            wait_done(w, it / per_k * per_k);
        MEMORY_BARRIER();
        int zero = k0 == 0 && !accumulate;
        size_t rows[2] = {min_size(mb, 16), mb > 16 ? mb - 16 : 0};
        for (size_t p = 0; p < pairs; p++) {
            size_t j0 = p * 32, nc = min_size(32, nb - j0);
            size_t cols[2] = {min_size(nc, 16), nc > 16 ? nc - 16 : 0};
            block_rows(strip[buf], bp + 2 * p * steps * 2 * TILE_ELEMS, steps, c + m0 * ldc + n0 + j0, ldc, rows,
                       cols, zero, edge, &job);
        }
        job_finish(&job);
        done(w);
        it = next;
        buf ^= 1;
    }
}

/* ---- few rows: C^T = B · A^T, the weights as the row-major operand ------------------------------------------- */

/* Tiles 0-3 hold C^T (rows: columns of C, columns: rows of C): through the
 * edge buffer, transposed, into C (or added to it). */
AMX_TARGET static void store_transposed(float *edge, float *c, size_t ldc, const size_t wrows[2],
                                        const size_t crows[2], int add)
{
    _tile_stored(0, edge, 64);
    _tile_stored(1, edge + 256, 64);
    _tile_stored(2, edge + 512, 64);
    _tile_stored(3, edge + 768, 64);
    MEMORY_BARRIER();
    for (size_t t = 0; t < 4; t++) {
        size_t r = t / 2, q = t % 2; /* r: C's column tile, q: C's row tile */
        if (!wrows[r] || !crows[q])
            continue;
        __m512i v[16];
        for (size_t i = 0; i < 16; i++)
            v[i] = _mm512_load_si512(edge + t * 256 + i * 16);
        transpose16(v);
        __mmask16 mask = (__mmask16)((1u << wrows[r]) - 1);
        for (size_t i = 0; i < crows[q]; i++) {
            float *dst = c + (q * 16 + i) * ldc + r * 16;
            __m512 x = _mm512_castsi512_ps(v[i]);
            if (add)
                x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask, dst));
            _mm512_mask_storeu_ps(dst, mask, x);
        }
    }
}

/* For a few rows (the text tower's 64 tokens): each weight is used by only
 * m rows, too few to amortise the VNNI transpose.  So the roles swap: A is
 * packed to VNNI once per K panel, B streams through 32-row pair panels
 * packed row-major (no transpose), each while the one before it is
 * multiplied.  Items: (K panel, pair panel). */
AMX_TARGET static void gemm_few(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                                float *c, size_t ldc, int accumulate, uint8_t *ws, items *w)
{
    uint16_t *xp = (uint16_t *)ws, *wp[2] = {xp + X_PANEL, xp + X_PANEL + W_PAIR};
    float *edge = (float *)(wp[1] + W_PAIR);
    size_t tpairs = (m + 31) / 32, wpairs = (n + 31) / 32, items = (k + PANEL_K - 1) / PANEL_K * wpairs;
    size_t it = take(w), packed = SIZE_MAX, buf = 0;
    pack_job job;
    if (it < items) {
        size_t n0 = it % wpairs * 32, k0 = it / wpairs * PANEL_K;
        job_start(&job, b + n0 * ldb + k0, ldb, min_size(32, n - n0), min_size(PANEL_K, k - k0), wp[0], 0);
        job_finish(&job);
    }
    while (it < items) {
        size_t next = take(w), n0 = it % wpairs * 32, nb = min_size(32, n - n0), k0 = it / wpairs * PANEL_K;
        size_t kp = min_size(PANEL_K, k - k0), steps = (kp + 31) / 32, ts = steps * 2 * TILE_ELEMS;
        if (k0 != packed) {
            pack_vnni(a + k0, lda, m, 2 * tpairs, kp, steps, xp);
            packed = k0;
        }
        job.next = job.total = 0;
        if (next < items) {
            size_t nn0 = next % wpairs * 32, nk0 = next / wpairs * PANEL_K;
            job_start(&job, b + nn0 * ldb + nk0, ldb, min_size(32, n - nn0), min_size(PANEL_K, k - nk0),
                      wp[buf ^ 1], tpairs * steps);
        }
        if (k0)
            wait_done(w, it / wpairs * wpairs);
        MEMORY_BARRIER();
        size_t wrows[2] = {min_size(nb, 16), nb > 16 ? nb - 16 : 0};
        for (size_t q = 0; q < tpairs; q++) {
            size_t mb = min_size(32, m - q * 32);
            size_t crows[2] = {min_size(mb, 16), mb > 16 ? mb - 16 : 0};
            const uint16_t *x = xp + 2 * q * ts;
            _tile_zero(0);
            _tile_zero(1);
            _tile_zero(2);
            _tile_zero(3);
            block_steps(wp[buf], wp[buf] + ts, x, x + ts, steps, &job);
            store_transposed(edge, c + q * 32 * ldc + n0, ldc, wrows, crows, k0 > 0 || accumulate);
        }
        job_finish(&job);
        done(w);
        it = next;
        buf ^= 1;
    }
}

static uint8_t *workspace(void)
{
    uint8_t *ws = pthread_getspecific(ws_key);
    if (ws)
        return ws;
    void *p = NULL;
    if (posix_memalign(&p, 64, WS_BYTES) != 0)
        return NULL;
    if (pthread_setspecific(ws_key, p) != 0) {
        free(p);
        return NULL;
    }
    return p;
}

AMX_TARGET static void gemm(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                            float *c, size_t ldc, int accumulate, uint8_t *ws, cmr_gemm_share *share)
{
    items w = {.share = share};
    _tile_loadconfig(&tile_config);
    if (m <= FEW_ROWS)
        gemm_few(m, n, k, a, lda, b, ldb, c, ldc, accumulate, ws, &w);
    else
        gemm_rows(m, n, k, a, lda, b, ldb, c, ldc, accumulate, ws, &w);
    _tile_release();
}

int cmr_gemm_amx_team(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate, cmr_gemm_share *share)
{
    if (!cmr_gemm_amx_ready())
        return cmr_fail(CMR_EUNSUPPORTED, "matrix product: the AMX kernel is not available (%s)",
                        mode == CMR_GEMM_OPENBLAS ? "CMR_GEMM=openblas" : "no AMX on this CPU or kernel");
    if (m == 0 || n == 0)
        return 0;
    if (k == 0) { /* one thread of a team zeroes C */
        items w = {.share = share};
        if (!accumulate && take(&w) == 0)
            for (size_t i = 0; i < m; i++)
                memset(c + i * ldc, 0, n * sizeof *c);
        return 0;
    }
    /* Before any item is taken: a thread without its buffer leaves the
     * work to the others. */
    uint8_t *ws = workspace();
    if (!ws)
        return cmr_fail(CMR_ENOMEM, "matrix product: cannot allocate the AMX kernel's %zu KB buffer",
                        (size_t)WS_BYTES >> 10);
    gemm(m, n, k, a, lda, b, ldb, c, ldc, accumulate, ws, share);
    return 0;
}

#else /* no AMX intrinsics */

int cmr_gemm_amx_team(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                      float *c, size_t ldc, int accumulate, cmr_gemm_share *share)
{
    (void)m, (void)n, (void)k, (void)a, (void)lda, (void)b, (void)ldb, (void)c, (void)ldc, (void)accumulate;
    (void)share;
    return cmr_fail(CMR_EUNSUPPORTED, "matrix product: this build has no AMX kernel");
}

#endif

int cmr_gemm_amx(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb, float *c,
                 size_t ldc, int accumulate)
{
    return cmr_gemm_amx_team(m, n, k, a, lda, b, ldb, c, ldc, accumulate, NULL);
}

