/* PNG and animated PNG (APNG) writer for 8-bit grey images, on zlib.
 *
 * Only what the server renders: one grey channel, no interlace, the "up"
 * filter on every row (cine frames and MR images compress better with it
 * than unfiltered, and it costs one subtraction per byte). */
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "cmr_bytebuf.h"
#include "server_internal.h"

static void put_u32(cmr_bytebuf *b, uint32_t v)
{
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    cmr_bytebuf_put(b, x, 4);
}

static void put_u16(cmr_bytebuf *b, uint16_t v)
{
    uint8_t x[2] = {(uint8_t)(v >> 8), (uint8_t)v};
    cmr_bytebuf_put(b, x, 2);
}

/* A chunk: length, type, data, CRC over type and data. */
static void chunk(cmr_bytebuf *b, const char type[4], const uint8_t *data, size_t n)
{
    put_u32(b, (uint32_t)n);
    cmr_bytebuf_put(b, type, 4);
    cmr_bytebuf_put(b, data, n);
    uLong crc = crc32(0L, (const Bytef *)type, 4);
    if (n)
        crc = crc32(crc, data, (uInt)n);
    put_u32(b, (uint32_t)crc);
}

/* One frame's zlib stream: each row prefixed by its filter byte (2 = up). */
static int deflate_frame(const uint8_t *pix, unsigned w, unsigned h, uint8_t **out, size_t *len)
{
    size_t raw_len = (size_t)h * (w + 1);
    uint8_t *raw = malloc(raw_len);
    if (!raw)
        return CMR_ENOMEM;
    for (unsigned y = 0; y < h; y++) {
        uint8_t *row = raw + (size_t)y * (w + 1);
        const uint8_t *cur = pix + (size_t)y * w, *prev = y ? cur - w : NULL;
        row[0] = 2;
        for (unsigned x = 0; x < w; x++)
            row[1 + x] = (uint8_t)(cur[x] - (prev ? prev[x] : 0));
    }
    uLongf cap = compressBound((uLong)raw_len);
    uint8_t *z = malloc(cap);
    int rc = 0;
    if (!z)
        rc = CMR_ENOMEM;
    else if (compress2(z, &cap, raw, (uLong)raw_len, 6) != Z_OK)
        rc = cmr_fail(CMR_EIO, "PNG: zlib compression failed");
    free(raw);
    if (rc) {
        free(z);
        return rc;
    }
    *out = z;
    *len = cap;
    return 0;
}

int cmr_png_grey(const uint8_t *pix, unsigned w, unsigned h, unsigned n_frames, unsigned delay_ms,
                 uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (!pix || !w || !h || !n_frames || w > 16384 || h > 16384 || n_frames > 1024)
        return cmr_fail(CMR_EINVAL, "PNG: bad image size %ux%u x %u frames", w, h, n_frames);
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    cmr_bytebuf b = {0};
    cmr_bytebuf_put(&b, signature, sizeof signature);
    uint8_t ihdr[13];
    cmr_bytebuf hb = {.p = ihdr, .cap = sizeof ihdr};
    put_u32(&hb, w);
    put_u32(&hb, h);
    ihdr[8] = 8;  /* bit depth */
    ihdr[9] = 0;  /* grey */
    ihdr[10] = ihdr[11] = ihdr[12] = 0;
    chunk(&b, "IHDR", ihdr, sizeof ihdr);
    if (n_frames > 1) {
        uint8_t actl[8];
        cmr_bytebuf ab = {.p = actl, .cap = sizeof actl};
        put_u32(&ab, n_frames);
        put_u32(&ab, 0); /* loop forever */
        chunk(&b, "acTL", actl, sizeof actl);
    }
    uint32_t seq = 0;
    int rc = 0;
    for (unsigned f = 0; f < n_frames && !rc; f++) {
        uint8_t *z = NULL;
        size_t zlen = 0;
        if ((rc = deflate_frame(pix + (size_t)f * w * h, w, h, &z, &zlen)))
            break;
        if (n_frames > 1) {
            uint8_t fctl[26];
            cmr_bytebuf fb = {.p = fctl, .cap = sizeof fctl};
            put_u32(&fb, seq++);
            put_u32(&fb, w);
            put_u32(&fb, h);
            put_u32(&fb, 0);
            put_u32(&fb, 0);
            put_u16(&fb, (uint16_t)(delay_ms > 65535 ? 65535 : delay_ms));
            put_u16(&fb, 1000); /* delay = delay_ms / 1000 s */
            fctl[24] = 0;       /* dispose: none */
            fctl[25] = 0;       /* blend: source */
            chunk(&b, "fcTL", fctl, sizeof fctl);
        }
        if (f == 0) {
            chunk(&b, "IDAT", z, zlen);
        } else {
            uint8_t *fd = malloc(zlen + 4);
            if (!fd) {
                rc = CMR_ENOMEM;
            } else {
                cmr_bytebuf sb = {.p = fd, .cap = 4};
                put_u32(&sb, seq++);
                memcpy(fd + 4, z, zlen);
                chunk(&b, "fdAT", fd, zlen + 4);
                free(fd);
            }
        }
        free(z);
    }
    chunk(&b, "IEND", NULL, 0);
    if (!rc && b.failed)
        rc = CMR_ENOMEM;
    if (rc) {
        free(b.p);
        return rc == CMR_ENOMEM ? cmr_fail(CMR_ENOMEM, "PNG: out of memory") : rc;
    }
    *out = b.p;
    *out_len = b.len;
    return 0;
}
