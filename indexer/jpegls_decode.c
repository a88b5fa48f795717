/* Lossless JPEG-LS decoding (ITU-T T.87 annex A) for the streams described
 * in jpegls_decode.h.  The context model is common/jpegls_model.h, shared
 * with the phantom's encoder; this file reads markers and codes. */
#include "jpegls_decode.h"

#include <stdlib.h>
#include <string.h>

#include "jpegls_model.h"

#define J cmr_jls_J

/* ---- markers ------------------------------------------------------------------------ */

typedef struct stream_params {
    cmr_jls_info info;
    int t[3], reset;
    size_t scan; /* offset of the entropy-coded data */
} stream_params;

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* Walks the markers up to the scan; CMR_JLS_NOT_MINE for anything beyond
 * the common case, CMR_JLS_BAD for what no decoder could read. */
static int read_markers(const uint8_t *d, size_t len, stream_params *sp)
{
    memset(sp, 0, sizeof *sp);
    if (len < 4 || d[0] != 0xFF || d[1] != 0xD8)
        return CMR_JLS_BAD;
    size_t pos = 2;
    int have_sof = 0, have_lse = 0, lse[5] = {0};
    for (;;) {
        while (pos < len && d[pos] == 0xFF && pos + 1 < len && d[pos + 1] == 0xFF)
            pos++; /* fill bytes */
        if (pos + 4 > len || d[pos] != 0xFF)
            return CMR_JLS_BAD;
        unsigned marker = d[pos + 1], seg = be16(d + pos + 2);
        if (seg < 2 || pos + 2 + seg > len)
            return CMR_JLS_BAD;
        const uint8_t *s = d + pos + 4;
        switch (marker) {
        case 0xF7: /* SOF55: JPEG-LS frame */
            if (have_sof || seg < 6)
                return CMR_JLS_BAD;
            sp->info.bits = s[0];
            sp->info.rows = (int)be16(s + 1);
            sp->info.cols = (int)be16(s + 3);
            if (s[5] != 1 || seg != 11 || sp->info.rows == 0 || sp->info.cols == 0 || s[7] != 0x11)
                return CMR_JLS_NOT_MINE; /* several components, sizes from DNL, subsampling */
            have_sof = 1;
            break;
        case 0xF8: /* LSE: preset parameters (id 1) only */
            if (seg != 13 || s[0] != 1)
                return CMR_JLS_NOT_MINE;
            for (int i = 0; i < 5; i++)
                lse[i] = (int)be16(s + 1 + 2 * i);
            have_lse = 1;
            break;
        case 0xDD: /* DRI */
            if (seg != 4)
                return CMR_JLS_BAD;
            if (be16(s) != 0)
                return CMR_JLS_NOT_MINE;
            break;
        case 0xDA: /* SOS */
            if (!have_sof || seg < 6)
                return CMR_JLS_BAD;
            if (s[0] != 1 || seg != 8 || s[2] != 0 || s[3] != 0 || s[5] != 0)
                return CMR_JLS_NOT_MINE; /* Ns, mapping table, NEAR, point transform */
            sp->scan = pos + 2 + seg;
            goto params;
        default:
            if ((marker >= 0xE0 && marker <= 0xEF) || marker == 0xFE)
                break; /* APPn, COM */
            return CMR_JLS_NOT_MINE;
        }
        pos += 2 + seg;
    }
params:
    if (sp->info.bits < 8 || sp->info.bits > 16)
        return CMR_JLS_NOT_MINE; /* below 8 bits CharLS departs from T.87's default thresholds */
    int maxval = (1 << sp->info.bits) - 1;
    cmr_jls_default_thresholds(maxval, sp->t);
    sp->reset = CMR_JLS_RESET;
    if (have_lse) {
        if (lse[0] != 0 && lse[0] != maxval)
            return CMR_JLS_NOT_MINE;
        int given = (lse[1] != 0) + (lse[2] != 0) + (lse[3] != 0);
        if (given == 3) {
            if (lse[1] < 1 || lse[1] > maxval || lse[2] < lse[1] || lse[2] > maxval || lse[3] < lse[2] ||
                lse[3] > maxval)
                return CMR_JLS_NOT_MINE;
            memcpy(sp->t, lse + 1, sizeof sp->t);
        } else if (given) {
            return CMR_JLS_NOT_MINE; /* partial defaults: leave them to CharLS */
        }
        if (lse[4] != 0) {
            if (lse[4] < 3 || lse[4] > (maxval > 255 ? maxval : 255))
                return CMR_JLS_NOT_MINE;
            sp->reset = lse[4];
        }
    }
    return CMR_JLS_OK;
}

int cmr_jls_probe(const uint8_t *data, size_t len, cmr_jls_info *info)
{
    stream_params sp;
    int rc = read_markers(data, len, &sp);
    if (info)
        *info = sp.info;
    return rc;
}

/* ---- bits --------------------------------------------------------------------------- */

/* Pending bits left-aligned in acc, the bits below them zero.  After a 0xFF
 * data byte the next byte's top bit is a stuffed 0 (7 data bits); a 0xFF
 * followed by a byte with its top bit set is a marker, the end of the scan.
 * Past the end, zeros are fed and counted, so a stream that runs short is
 * detected. */
typedef struct bitr {
    const uint8_t *p, *end;
    uint64_t acc;
    int n, ff, stop;
    size_t fake; /* zero bits fed past the end */
} bitr;

static inline void br_fill(bitr *r)
{
    while (r->n <= 56) {
        if (r->stop || r->p >= r->end) {
            r->n += 8;
            r->fake += 8;
            continue;
        }
        unsigned b = *r->p;
        if (b == 0xFF && (r->p + 1 >= r->end || (r->p[1] & 0x80))) {
            r->stop = 1; /* a marker (EOI, normally) */
            continue;
        }
        if (r->ff) {
            r->acc |= (uint64_t)b << (64 - 7 - r->n);
            r->n += 7;
        } else {
            r->acc |= (uint64_t)b << (64 - 8 - r->n);
            r->n += 8;
        }
        r->ff = b == 0xFF;
        r->p++;
    }
}

/* k in 0..32 */
static inline uint32_t br_read(bitr *r, int k)
{
    if (k == 0)
        return 0;
    if (r->n < k)
        br_fill(r);
    uint32_t v = (uint32_t)(r->acc >> (64 - k));
    r->acc <<= k;
    r->n -= k;
    return v;
}

static inline int br_bit(bitr *r)
{
    if (r->n < 1)
        br_fill(r);
    int b = (int)(r->acc >> 63);
    r->acc <<= 1;
    r->n--;
    return b;
}

/* Zeros before the next 1 (which is consumed); more than `most` is -1. */
static inline int br_unary(bitr *r, int most)
{
    int z = 0;
    for (;;) {
        if (r->n < 1)
            br_fill(r);
        if (r->acc) {
            int lz = __builtin_clzll(r->acc);
            z += lz;
            if (z > most)
                return -1;
            r->acc = lz == 63 ? 0 : r->acc << (lz + 1);
            r->n -= lz + 1;
            return z;
        }
        z += r->n;
        r->n = 0;
        if (z > most)
            return -1;
    }
}

/* A mapped error value (T.87 A.5.3): -1 for an impossible code. */
static inline int64_t decode_mapped(bitr *r, const cmr_jls_ctx *c, int k, int limit)
{
    int escape = limit - c->qbpp - 1;
    int hb = br_unary(r, escape);
    if (hb < 0)
        return -1;
    uint64_t m;
    if (hb < escape) {
        if (k > 31 || (uint64_t)hb << k > (uint64_t)c->range)
            return -1;
        m = (uint64_t)hb << k | br_read(r, k);
    } else {
        m = (uint64_t)br_read(r, c->qbpp) + 1;
    }
    return m > (uint64_t)c->range ? -1 : (int64_t)m;
}

/* ---- scan --------------------------------------------------------------------------- */

static inline int decode_regular(bitr *r, cmr_jls_ctx *c, int qs, int pred, int *x)
{
    int sign = qs >> 31; /* -1 for a negative context */
    cmr_jls_stat *st = &c->s[(qs ^ sign) - sign];
    int k = cmr_jls_golomb_k(st->N, st->A);
    int px = pred + ((st->C ^ sign) - sign);
    px = px < 0 ? 0 : (px > c->maxval ? c->maxval : px);
    int64_t m = decode_mapped(r, c, k, c->limit);
    if (m < 0 || m >= c->range)
        return -1;
    int e2 = (int)(m >> 1) ^ -(int)(m & 1);
    int corr = k ? 0 : ((2 * st->B + st->N - 1) >> 31);
    int err = e2 ^ corr;
    *x = (px + ((err ^ sign) - sign)) & c->maxval;
    cmr_jls_update(c, st, err);
    return 0;
}

/* The sample interrupting a run at cur[i] (T.87 A.7.2). */
static inline int decode_ri(bitr *r, cmr_jls_ctx *c, int ra, int rb, int runindex, int *x)
{
    int ritype = ra == rb;
    int k = cmr_jls_ri_k(c, ritype);
    int64_t em = decode_mapped(r, c, k, c->limit - J[runindex] - 1);
    if (em < 0)
        return -1;
    int temp = (int)em + ritype, map = temp & 1, mag = (temp + map) >> 1;
    const cmr_jls_stat *st = &c->s[CMR_JLS_NCTX + ritype];
    int err = ((k != 0 || 2 * c->Nn[ritype] >= st->N) == map) ? -mag : mag;
    if (ritype)
        *x = (ra + err) & c->maxval;
    else
        *x = (rb + (rb > ra ? err : -err)) & c->maxval;
    cmr_jls_ri_update(c, ritype, err, (int)em);
    return 0;
}

static int decode_scan(bitr *r, cmr_jls_ctx *c, const signed char *qt, int cols, int rows, int *lines, void *out,
                       int cell_bytes)
{
    int runindex = 0;
    int *prev = lines + 1, *cur = lines + cols + 2 + 1;
    for (int y = 0; y < rows; y++) {
        cmr_jls_line_edges(prev, cur, cols);
        int i = 0, rb = prev[-1], rd = prev[0];
        while (i < cols) {
            int ra = cur[i - 1], rcc = rb;
            rb = rd;
            rd = prev[i + 1];
            int qs = cmr_jls_context(qt, ra, rb, rcc, rd);
            if (qs != 0) {
                if (decode_regular(r, c, qs, cmr_jls_med(ra, rb, rcc), &cur[i]))
                    return CMR_JLS_BAD;
                i++;
                continue;
            }
            /* Run mode: a run of Ra, ended by the line's end or a sample. */
            int rem = cols - i, run = 0;
            while (run < rem && br_bit(r)) {
                int m = 1 << J[runindex];
                int cnt = m < rem - run ? m : rem - run;
                for (int j = 0; j < cnt; j++)
                    cur[i + run + j] = ra;
                run += cnt;
                if (cnt == m && runindex < 31)
                    runindex++;
            }
            if (run < rem) {
                int extra = (int)br_read(r, J[runindex]);
                if (extra >= rem - run)
                    return CMR_JLS_BAD;
                for (int j = 0; j < extra; j++)
                    cur[i + run + j] = ra;
                run += extra;
                if (decode_ri(r, c, ra, prev[i + run], runindex, &cur[i + run]))
                    return CMR_JLS_BAD;
                if (runindex > 0)
                    runindex--;
                run++;
            }
            i += run;
            rb = prev[i - 1];
            rd = prev[i];
        }
        if (cell_bytes == 2) {
            uint16_t *o = (uint16_t *)out + (size_t)y * (size_t)cols;
            for (int x = 0; x < cols; x++)
                o[x] = (uint16_t)cur[x];
        } else {
            uint8_t *o = (uint8_t *)out + (size_t)y * (size_t)cols;
            for (int x = 0; x < cols; x++)
                o[x] = (uint8_t)cur[x];
        }
        int *t = prev;
        prev = cur;
        cur = t;
    }
    /* Codes that ran past the data are a truncated stream. */
    return r->fake > (size_t)r->n ? CMR_JLS_BAD : CMR_JLS_OK;
}

int cmr_jls_decode(const uint8_t *data, size_t len, const cmr_jls_info *want, void *out, int cell_bytes)
{
    stream_params sp;
    int rc = read_markers(data, len, &sp);
    if (rc)
        return rc;
    const cmr_jls_info *in = &sp.info;
    if (!want || in->cols != want->cols || in->rows != want->rows || in->bits > want->bits)
        return CMR_JLS_BAD;
    if (cell_bytes != 2 && !(cell_bytes == 1 && in->bits == 8))
        return CMR_JLS_NOT_MINE;
    cmr_jls_ctx *c = malloc(sizeof *c);
    int *lines = calloc(2 * ((size_t)in->cols + 2), sizeof *lines);
    signed char *quant = malloc((size_t)2 << in->bits);
    if (!c || !lines || !quant) {
        rc = CMR_JLS_NOMEM;
        goto done;
    }
    cmr_jls_init(c, in->bits, sp.t, sp.reset, quant);
    bitr r = {data + sp.scan, data + len, 0, 0, 0, 0, 0};
    rc = decode_scan(&r, c, quant + ((size_t)1 << in->bits), in->cols, in->rows, lines, out, cell_bytes);
done:
    free(c);
    free(lines);
    free(quant);
    return rc;
}
