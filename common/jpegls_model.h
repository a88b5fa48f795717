/* The context model of lossless JPEG-LS (ITU-T T.87), shared by the
 * phantom's encoder (tests/phantom/jpegls.c) and the indexer's decoder
 * (indexer/jpegls_decode.c): both sides must update the same statistics in
 * the same way, so they are written once.  NEAR = 0 throughout; RANGE is a
 * power of two (MAXVAL = 2^bits - 1), so the modulo reduction is a sign
 * extension.  Internal: not part of any module's interface. */
#ifndef CMR_JPEGLS_MODEL_H
#define CMR_JPEGLS_MODEL_H

#include <stdint.h>
#include <string.h>

enum { CMR_JLS_RESET = 64, CMR_JLS_NCTX = 365, CMR_JLS_MIN_C = -128, CMR_JLS_MAX_C = 127 };

/* T.87's J: run-length order for each RUNindex. */
static const int cmr_jls_J[32] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                                  4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* A context's statistics side by side: one cache line per sample. */
typedef struct cmr_jls_stat {
    int A, B, C, N;
} cmr_jls_stat;

typedef struct cmr_jls_ctx {
    int limit, qbpp, range, maxval, shift, reset;
    cmr_jls_stat s[CMR_JLS_NCTX + 2]; /* regular contexts, then the two run-interruption ones */
    int Nn[2];
} cmr_jls_ctx;

/* Smallest k with n << k >= a. */
static inline int cmr_jls_golomb_k(int n, int a)
{
    if (n >= a)
        return 0;
    int k = __builtin_clz((unsigned)n) - __builtin_clz((unsigned)a);
    return ((unsigned)n << k) < (unsigned)a ? k + 1 : k;
}

/* The median edge detector (T.87 A.4.1). */
static inline int cmr_jls_med(int ra, int rb, int rc)
{
    int mx = ra > rb ? ra : rb, mn = ra > rb ? rb : ra;
    int p = ra + rb - rc;
    p = rc >= mx ? mn : p;
    return rc <= mn ? mx : p;
}

/* Reduction into [-RANGE/2, RANGE/2): the sign extension of the low bits
 * (arithmetic >> as gcc and clang). */
static inline int cmr_jls_mod_range(const cmr_jls_ctx *c, int e)
{
    return (int)((unsigned)e << c->shift) >> c->shift;
}

static inline int cmr_jls_clamp(int i, int j, int maxval) { return i > maxval || i < j ? j : i; }

/* The default thresholds for MAXVAL >= 128 (T.87 C.2.4.1.1.1; CharLS 1.0
 * uses this formula for every MAXVAL, which is why callers stay at 8 bits
 * and above). */
static inline void cmr_jls_default_thresholds(int maxval, int t[3])
{
    int factor = ((maxval < 4095 ? maxval : 4095) + 128) / 256;
    t[0] = cmr_jls_clamp(factor * (3 - 2) + 2, 1, maxval);
    t[1] = cmr_jls_clamp(factor * (7 - 3) + 3, t[0], maxval);
    t[2] = cmr_jls_clamp(factor * (21 - 4) + 4, t[1], maxval);
}

/* Sets up the context for `bits`-bit samples, thresholds t, and fills
 * quant[0 .. 2^(bits+1)) so that (quant + 2^bits)[d] is the region of the
 * local gradient d in [-RANGE, RANGE) (T.87 A.3.3). */
static inline void cmr_jls_init(cmr_jls_ctx *c, int bits, const int t[3], int reset, signed char *quant)
{
    int range = 1 << bits;
    c->maxval = range - 1;
    c->range = range;
    c->qbpp = bits;
    c->limit = 2 * (bits + (bits > 8 ? bits : 8));
    c->shift = 32 - bits;
    c->reset = reset;
    signed char *qt = quant + range;
    const int edge[9] = {-range, -t[2] + 1, -t[1] + 1, -t[0] + 1, 0, 1, t[0], t[1], t[2]};
    for (int r = 0; r < 9; r++) {
        int hi = r < 8 ? edge[r + 1] : range;
        if (hi > edge[r])
            memset(qt + edge[r], r - 4, (size_t)(hi - edge[r]));
    }
    int a0 = (range + 32) / 64 > 2 ? (range + 32) / 64 : 2;
    for (int i = 0; i < CMR_JLS_NCTX + 2; i++)
        c->s[i] = (cmr_jls_stat){a0, 0, 0, 1};
    c->Nn[0] = c->Nn[1] = 0;
}

/* Before coding a line: the samples T.87 puts beyond its ends (A.2.1). */
static inline void cmr_jls_line_edges(int *prev, int *cur, int cols)
{
    prev[cols] = prev[cols - 1];
    cur[-1] = prev[0];
}

/* The context of a sample from its neighbours' gradients (T.87 A.3): 0
 * means run mode, the sign is the context's. */
static inline int cmr_jls_context(const signed char *qt, int ra, int rb, int rc, int rd)
{
    return (qt[rd - rb] * 9 + qt[rb - rc]) * 9 + qt[rc - ra];
}

/* After a regular-mode sample with (context-oriented) error err. */
static inline void cmr_jls_update(const cmr_jls_ctx *c, cmr_jls_stat *st, int err)
{
    int a = st->A, b = st->B, n = st->N, cc = st->C;
    b += err;
    a += err < 0 ? -err : err;
    if (n == c->reset) {
        a >>= 1;
        b >>= 1; /* arithmetic shift, as CharLS */
        n >>= 1;
    }
    n++;
    if (b + n <= 0) {
        b += n;
        if (b <= -n)
            b = -n + 1;
        cc -= cc > CMR_JLS_MIN_C;
    } else if (b > 0) {
        b -= n;
        if (b > 0)
            b = 0;
        cc += cc < CMR_JLS_MAX_C;
    }
    st->A = a, st->B = b, st->N = n, st->C = cc;
}

/* The Golomb parameter of a run-interruption sample of type ritype. */
static inline int cmr_jls_ri_k(const cmr_jls_ctx *c, int ritype)
{
    const cmr_jls_stat *st = &c->s[CMR_JLS_NCTX + ritype];
    return cmr_jls_golomb_k(st->N, st->A + (st->N >> 1) * ritype);
}

/* After a run-interruption sample: its error and mapped error. */
static inline void cmr_jls_ri_update(cmr_jls_ctx *c, int ritype, int err, int em)
{
    cmr_jls_stat *st = &c->s[CMR_JLS_NCTX + ritype];
    int n = st->N, nn = c->Nn[ritype];
    if (err < 0)
        nn++;
    st->A += (em + 1 - ritype) >> 1;
    if (n == c->reset) {
        st->A >>= 1;
        n >>= 1;
        nn >>= 1;
    }
    st->N = n + 1;
    c->Nn[ritype] = nn;
}

#endif
