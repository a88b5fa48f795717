/* Lossless JPEG-LS encoder (ITU-T T.87), one component, NEAR = 0, default
 * thresholds.  It follows the decisions CharLS 1.0 (bundled with DCMTK
 * 3.6.7) makes wherever T.87 leaves a choice, so the codestreams are
 * identical: the T1-T3 formula without the MAXVAL < 128 branch, an LSE
 * segment with the defaults above 12 bits, edge samples as in its DoScan,
 * the end-of-scan padding of its EndScan. */
#include "jpegls.h"

#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "jpegls_model.h"

#define J cmr_jls_J

/* Bit writer: pending bits left-aligned in acc, MSB first.  After a 0xFF
 * byte the next byte carries only 7 bits (a stuffed 0 bit, T.87 A.1), so
 * no marker can appear inside the scan. */
typedef struct bitw {
    uint8_t *p;
    uint64_t acc;
    int n;  /* pending bits */
    int ff; /* the last byte written was 0xFF */
} bitw;

/* Writes whole bytes until fewer than 32 bits are pending: four at a
 * time while none of them is 0xFF (the usual case), else one by one. */
static inline void bw_drain(bitw *w)
{
    while (w->n >= 32) {
        uint32_t top = (uint32_t)(w->acc >> 32);
        uint32_t inv = ~top;
        if (!w->ff && !((inv - 0x01010101u) & ~inv & 0x80808080u)) {
            w->p[0] = (uint8_t)(top >> 24);
            w->p[1] = (uint8_t)(top >> 16);
            w->p[2] = (uint8_t)(top >> 8);
            w->p[3] = (uint8_t)top;
            w->p += 4;
            w->acc <<= 32;
            w->n -= 32;
            continue;
        }
        int take = 8 - w->ff;
        uint8_t b = (uint8_t)(w->acc >> (64 - take));
        w->acc <<= take;
        w->n -= take;
        *w->p++ = b;
        w->ff = b == 0xFF;
    }
}

/* Every whole byte, at the end of the scan. */
static void bw_drain_all(bitw *w)
{
    while (w->n >= 8 - w->ff) {
        int take = 8 - w->ff;
        uint8_t b = (uint8_t)(w->acc >> (64 - take));
        w->acc <<= take;
        w->n -= take;
        *w->p++ = b;
        w->ff = b == 0xFF;
    }
}

/* len 0..32; v < 2^len. */
static inline void bw_put(bitw *w, uint32_t v, int len)
{
    if (w->n + len > 64)
        bw_drain(w);
    if (len > 0) {
        w->acc |= (uint64_t)v << (64 - w->n - len);
        w->n += len;
    }
}

static inline void bw_zeros(bitw *w, int len)
{
    while (len > 0) {
        int c = len > 32 ? 32 : len;
        if (w->n + c > 64)
            bw_drain(w);
        w->n += c;
        len -= c;
    }
}

/* CharLS's EndScan: zero-pad the last byte; a final 0xFF gets a 0x00 after
 * it (7 stuffed zero bits) so the EOI marker cannot be misread. */
static void bw_end(bitw *w)
{
    bw_drain_all(w);
    if (w->n > 0) {
        int take = 8 - w->ff;
        *w->p++ = (uint8_t)(w->acc >> (64 - take));
        w->ff = 0; /* a zero-padded partial byte is never 0xFF */
        w->n = 0;
        w->acc = 0;
    } else if (w->ff) {
        *w->p++ = 0;
        w->ff = 0;
    }
}

static inline void encode_mapped(bitw *w, const cmr_jls_ctx *c, int k, uint32_t m, int limit)
{
    uint32_t hb = m >> k;
    if (hb < (uint32_t)(limit - c->qbpp - 1)) {
        int n = (int)hb + 1 + k;
        uint32_t v = (1u << k) | (m & ((1u << k) - 1));
        if (n <= 32) {
            bw_put(w, v, n);
        } else {
            bw_zeros(w, (int)hb);
            bw_put(w, v, k + 1);
        }
        return;
    }
    bw_zeros(w, limit - c->qbpp - 1);
    bw_put(w, 1, 1);
    bw_put(w, (m - 1) & ((1u << c->qbpp) - 1), c->qbpp);
}

static inline void encode_regular(bitw *w, cmr_jls_ctx *c, int qs, int x, int pred)
{
    int sign = qs >> 31; /* -1 for a negative context */
    cmr_jls_stat *st = &c->s[(qs ^ sign) - sign];
    int k = cmr_jls_golomb_k(st->N, st->A);
    int px = pred + ((st->C ^ sign) - sign);
    px = px < 0 ? 0 : (px > c->maxval ? c->maxval : px);
    int err = cmr_jls_mod_range(c, ((x - px) ^ sign) - sign);
    int corr = k ? 0 : ((2 * st->B + st->N - 1) >> 31);
    int e2 = err ^ corr;
    uint32_t m = (uint32_t)((e2 >> 31) ^ (2 * e2));
    encode_mapped(w, c, k, m, c->limit);
    cmr_jls_update(c, st, err);
}

static inline void encode_ri(bitw *w, cmr_jls_ctx *c, int ritype, int err, int runindex)
{
    int n = c->s[CMR_JLS_NCTX + ritype].N, nn = c->Nn[ritype];
    int k = cmr_jls_ri_k(c, ritype);
    int map = (k == 0 && err > 0 && 2 * nn < n) || (err < 0 && 2 * nn >= n) || (err < 0 && k != 0);
    int em = 2 * (err < 0 ? -err : err) - ritype - map;
    encode_mapped(w, c, k, (uint32_t)em, c->limit - J[runindex] - 1);
    cmr_jls_ri_update(c, ritype, err, em);
}

size_t cmr_jls_bound(int cols, int rows, int bits)
{
    if (cols < 1 || rows < 1 || bits < 2 || bits > 16)
        return 0;
    /* At most LIMIT + 1 bits a sample (a run's 1 bits cover a sample each),
     * a few per row, one stuffed bit per 7, and the markers. */
    size_t limit = 2 * ((size_t)bits + (bits > 8 ? (size_t)bits : 8));
    return ((size_t)cols * (size_t)rows * (limit + 2) + (size_t)rows * 64) / 7 + 64;
}

int cmr_jls_encode(const uint16_t *px, int cols, int rows, int bits, uint8_t *out, size_t cap, size_t *len)
{
    *len = 0;
    if (cols < 1 || rows < 1 || cols > 65535 || rows > 65535 || bits < 8 || bits > 16)
        return cmr_fail(CMR_EINVAL, "JPEG-LS: unsupported image %dx%d at %d bits", cols, rows, bits);
    if (cap < cmr_jls_bound(cols, rows, bits))
        return cmr_fail(CMR_ENOMEM, "JPEG-LS: output buffer of %zu bytes is too small", cap);
    cmr_jls_ctx *c = malloc(sizeof *c);
    int *lines = calloc(2 * ((size_t)cols + 2), sizeof *lines);
    int range = 1 << bits;
    signed char *quant = malloc(2 * (size_t)range);
    if (!c || !lines || !quant) {
        free(c), free(lines), free(quant);
        return cmr_fail(CMR_ENOMEM, "JPEG-LS: out of memory");
    }
    int t[3];
    cmr_jls_default_thresholds(range - 1, t);
    cmr_jls_init(c, bits, t, CMR_JLS_RESET, quant);
    signed char *qt = quant + range;
    int t1 = t[0], t2 = t[1], t3 = t[2];

    uint8_t *o = out;
    static const uint8_t soi_sof[4] = {0xFF, 0xD8, 0xFF, 0xF7};
    memcpy(o, soi_sof, 4);
    o += 4;
    const uint8_t sof[11] = {0x00, 0x0B, (uint8_t)bits, (uint8_t)(rows >> 8), (uint8_t)rows, (uint8_t)(cols >> 8),
                             (uint8_t)cols, 1, 1, 0x11, 0};
    memcpy(o, sof, sizeof sof);
    o += sizeof sof;
    if (bits > 12) {
        /* CharLS states the (default) preset parameters above 12 bits. */
        const uint8_t lse[15] = {0xFF, 0xF8, 0x00, 0x0D, 1, (uint8_t)(c->maxval >> 8), (uint8_t)c->maxval,
                                 (uint8_t)(t1 >> 8), (uint8_t)t1, (uint8_t)(t2 >> 8), (uint8_t)t2, (uint8_t)(t3 >> 8),
                                 (uint8_t)t3, 0, CMR_JLS_RESET};
        memcpy(o, lse, sizeof lse);
        o += sizeof lse;
    }
    static const uint8_t sos[10] = {0xFF, 0xDA, 0x00, 0x08, 1, 1, 0, 0, 0, 0};
    memcpy(o, sos, sizeof sos);
    o += sizeof sos;

    bitw w = {o, 0, 0, 0};
    int rc = 0, runindex = 0;
    int *prev = lines + 1, *cur = lines + cols + 2 + 1;
    for (int y = 0; y < rows; y++) {
        const uint16_t *src = px + (size_t)y * (size_t)cols;
        unsigned over = 0;
        for (int i = 0; i < cols; i++) {
            cur[i] = src[i];
            over |= src[i] >> bits;
        }
        if (over) {
            rc = cmr_fail(CMR_EINVAL, "JPEG-LS: row %d has a sample above %d bits", y, bits);
            goto done;
        }
        cmr_jls_line_edges(prev, cur, cols);
        int i = 0, rb = prev[-1], rd = prev[0];
        while (i < cols) {
            int ra = cur[i - 1], rcc = rb;
            rb = rd;
            rd = prev[i + 1];
            int qs = cmr_jls_context(qt, ra, rb, rcc, rd);
            if (qs != 0) {
                encode_regular(&w, c, qs, cur[i], cmr_jls_med(ra, rb, rcc));
                i++;
                continue;
            }
            /* Run mode: a run of Ra, then the sample that interrupts it. */
            int rem = cols - i, r = 0;
            while (cur[i + r] == ra) {
                r++;
                if (r == rem)
                    break;
            }
            int rl = r;
            while (rl >= (1 << J[runindex])) {
                bw_put(&w, 1, 1);
                rl -= 1 << J[runindex];
                if (runindex < 31)
                    runindex++;
            }
            if (r == rem) {
                if (rl)
                    bw_put(&w, 1, 1);
                i += r;
            } else {
                bw_put(&w, (uint32_t)rl, J[runindex] + 1);
                int x = cur[i + r], b = prev[i + r];
                if (ra == b) {
                    encode_ri(&w, c, 1, cmr_jls_mod_range(c, x - ra), runindex);
                } else {
                    int s = ((b - ra) >> 31) | 1;
                    encode_ri(&w, c, 0, cmr_jls_mod_range(c, (x - b) * s), runindex);
                }
                if (runindex > 0)
                    runindex--;
                i += r + 1;
            }
            rb = prev[i - 1];
            rd = prev[i];
        }
        int *t = prev;
        prev = cur;
        cur = t;
    }
    bw_end(&w);
    w.p[0] = 0xFF;
    w.p[1] = 0xD9;
    *len = (size_t)(w.p + 2 - out);
done:
    free(c);
    free(lines);
    free(quant);
    return rc;
}
