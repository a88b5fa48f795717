/* The indexer's own JPEG-LS decoder (indexer/jpegls_decode.c) against
 * DCMTK's (CharLS 1.0) and against the samples that were encoded.
 *
 * - Streams made by DCMTK's dcmcjpls from images with runs, edges, noise and
 *   extreme values, at 8 to 16 bits, signed and unsigned, single and
 *   multi-frame, with stated thresholds and RESET: read through
 *   cmr_dicom_read_pixels with the own decoder and with DCMTK's, the floats
 *   must be identical, equal to the source samples, and the own decoder
 *   must have taken them (its frame counter).
 * - Streams it must leave to DCMTK (near-lossless, several fragments per
 *   frame) still decode, through DCMTK.
 * - The same streams cut short or with bytes flipped: the decoder answers
 *   CMR_JLS_BAD or decodes, never reads or writes out of bounds (ASan). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmr_dicom.h"
#include "cmr_error.h"
#include "jpegls_decode.h"
#include "test_util.h"

static char g_tmp[256];

#define run test_run

static void write_file(const char *path, const void *data, size_t n)
{
    assert_int_equal(test_write_file(path, data, n), 0);
}

/* Deterministic test images (xorshift), patterns chosen to exercise both
 * coding modes: long runs (run mode, run lengths across J's orders, runs
 * ending at the line's end), edges, noise (escape codes), extreme values. */
static uint32_t g_rng = 12345;
static uint32_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 17;
    g_rng ^= g_rng << 5;
    return g_rng;
}

static void make_image(uint16_t *px, int cols, int rows, int frames, int bits, int pattern)
{
    const uint32_t maxval = (1u << bits) - 1;
    for (int f = 0; f < frames; f++)
        for (int y = 0; y < rows; y++)
            for (int x = 0; x < cols; x++) {
                uint32_t v;
                switch (pattern) {
                case 0: v = rnd() & maxval; break;                                           /* noise */
                case 1: v = (x / 7 + y / 5 + f) % 3 ? 0 : maxval; break;                     /* blocks */
                case 2: v = (uint32_t)((x * 37 + y * 11 + f * 5) % (int)(maxval + 1)); break; /* ramps */
                default: /* flat background with a noisy disc: a cine frame's shape */
                    v = ((x - cols / 2) * (x - cols / 2) + (y - rows / 2) * (y - rows / 2) < cols * rows / 8)
                            ? (maxval / 2 + (rnd() % 64)) & maxval
                            : (rnd() % 50 ? 17 & maxval : rnd() & maxval);
                }
                px[((size_t)f * rows + y) * cols + x] = (uint16_t)v;
            }
}

/* A raw explicit-little-endian MR image written with dump2dcm. */
static void write_raw_dicom(const char *out, const uint16_t *px, int cols, int rows, int frames, int bits,
                            int is_signed)
{
    char txt[512], raw[512], text[4096];
    snprintf(txt, sizeof txt, "%s/img.txt", g_tmp);
    snprintf(raw, sizeof raw, "%s/img.raw", g_tmp);
    size_t n = (size_t)cols * rows * frames;
    int cell = bits > 8 ? 2 : 1;
    unsigned char *b = malloc(n * (size_t)cell);
    assert_non_null(b);
    for (size_t i = 0; i < n; i++) {
        b[i * (size_t)cell] = (unsigned char)px[i];
        if (cell == 2)
            b[i * 2 + 1] = (unsigned char)(px[i] >> 8);
    }
    write_file(raw, b, n * (size_t)cell);
    free(b);
    snprintf(text, sizeof text,
             "(0008,0016) UI =MRImageStorage\n(0008,0018) UI [1.2.826.0.1.3680043.9.7311.9.1]\n"
             "(0008,0060) CS [MR]\n(0020,000d) UI [1.2.826.0.1.3680043.9.7311.9]\n"
             "(0020,000e) UI [1.2.826.0.1.3680043.9.7311.9.2]\n(0028,0002) US 1\n"
             "(0028,0004) CS [MONOCHROME2]\n(0028,0008) IS [%d]\n(0028,0010) US %d\n(0028,0011) US %d\n"
             "(0028,0100) US %d\n(0028,0101) US %d\n(0028,0102) US %d\n(0028,0103) US %d\n"
             "(7fe0,0010) %s =%s\n",
             frames, rows, cols, cell * 8, bits, bits - 1, is_signed, cell == 2 ? "OW" : "OB", raw);
    write_file(txt, text, strlen(text));
    assert_int_equal(run("dump2dcm -q +te %s %s", txt, out), 0);
}

/* The source sample as the reader must return it (two's complement when signed). */
static float expected(uint16_t v, int bits, int is_signed)
{
    int s = v;
    if (is_signed && (v >> (bits - 1)) & 1)
        s -= 1 << bits;
    return (float)s;
}

/* Encodes with dcmcjpls `opts`, reads with both decoders, compares. */
static void check_case(int cols, int rows, int frames, int bits, int is_signed, int pattern, const char *opts,
                       int own_expected)
{
    size_t n = (size_t)cols * rows * frames;
    uint16_t *src = malloc(n * sizeof *src);
    assert_non_null(src);
    make_image(src, cols, rows, frames, bits, pattern);
    char raw[512], jls[512];
    snprintf(raw, sizeof raw, "%s/raw.dcm", g_tmp);
    snprintf(jls, sizeof jls, "%s/jls.dcm", g_tmp);
    write_raw_dicom(raw, src, cols, rows, frames, bits, is_signed);
    assert_int_equal(run("dcmcjpls -q %s %s %s", opts, raw, jls), 0);

    cmr_dicom_header *h_own = NULL, *h_dcmtk = NULL;
    float *own = NULL, *dcmtk = NULL;
    unsigned long long before = cmr_dicom_own_jpegls_frames();
    cmr_dicom_set_own_jpegls(1);
    assert_int_equal(cmr_dicom_read_pixels(jls, &h_own, &own), 0);
    unsigned long long taken = cmr_dicom_own_jpegls_frames() - before;
    cmr_dicom_set_own_jpegls(0);
    assert_int_equal(cmr_dicom_read_pixels(jls, &h_dcmtk, &dcmtk), 0);
    cmr_dicom_set_own_jpegls(1);
    print_message("%3dx%-3d x%d %2d bits %s pattern %d %-28s own decoder: %s\n", cols, rows, frames, bits,
                  is_signed ? "signed  " : "unsigned", pattern, opts, taken ? "yes" : "no (DCMTK)");
    assert_int_equal(taken, own_expected ? (unsigned long long)frames : 0);
    assert_memory_equal(own, dcmtk, n * sizeof *own);
    if (strstr(opts, "+en") == NULL)
        for (size_t i = 0; i < n; i++)
            if (own[i] != expected(src[i], bits, is_signed))
                fail_msg("sample %zu: %g, source %g", i, (double)own[i], (double)expected(src[i], bits, is_signed));
    free(src);
    free(own);
    free(dcmtk);
    cmr_dicom_header_free(h_own);
    cmr_dicom_header_free(h_dcmtk);
}

static void test_matches_dcmtk(void **state)
{
    (void)state;
    static const int bits[] = {8, 10, 12, 13, 15, 16};
    for (size_t b = 0; b < sizeof bits / sizeof *bits; b++)
        for (int pattern = 0; pattern < 4; pattern++)
            check_case(37 + pattern * 20, 29 + pattern * 7, 1, bits[b], 0, pattern, "+el", 1);
    /* Signed samples, several frames, odd and tiny sizes. */
    check_case(64, 48, 3, 12, 1, 3, "+el", 1);
    check_case(64, 48, 2, 16, 1, 0, "+el", 1);
    check_case(1, 1, 1, 12, 0, 0, "+el", 1);
    check_case(1, 40, 1, 12, 0, 3, "+el", 1);
    check_case(300, 1, 1, 16, 0, 1, "+el", 1);
    /* Stated thresholds and RESET (an LSE segment). */
    check_case(96, 80, 1, 12, 0, 3, "+el +t1 5 +t2 20 +t3 70 +rs 32", 1);
    check_case(96, 80, 1, 16, 0, 0, "+el +t1 2 +t2 3 +t3 4 +rs 255", 1);
    check_case(96, 80, 1, 8, 0, 2, "+el +rs 3", 1);
    /* DCMTK's cooked mode: the precision is Bits Stored, no LSE segment. */
    check_case(97, 50, 1, 10, 0, 3, "+el +pc", 1);
    /* Not ours: near-lossless (NEAR 2), and frames split in fragments. */
    check_case(96, 80, 1, 12, 0, 3, "+en +md 2", 0);
    check_case(128, 128, 2, 12, 0, 0, "+el +fs 4", 0);
}

/* Pulls the first frame's codestream out of a one-fragment-per-frame file:
 * the bytes between the JPEG-LS SOI and its EOI. */
static uint8_t *first_stream(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    static uint8_t buf[1 << 20];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    for (size_t i = 0; i + 4 < n; i++)
        if (buf[i] == 0xFF && buf[i + 1] == 0xD8 && buf[i + 2] == 0xFF && (buf[i + 3] == 0xF7 || buf[i + 3] == 0xF8))
            for (size_t j = i + 2; j + 1 < n; j++)
                if (buf[j] == 0xFF && buf[j + 1] == 0xD9) {
                    *len = j + 2 - i;
                    uint8_t *s = malloc(*len);
                    assert_non_null(s);
                    memcpy(s, buf + i, *len);
                    return s;
                }
    fail_msg("no JPEG-LS stream in %s", path);
    return NULL;
}

static void test_damaged_streams(void **state)
{
    (void)state;
    char raw[512], jls[512];
    snprintf(raw, sizeof raw, "%s/dmg.dcm", g_tmp);
    snprintf(jls, sizeof jls, "%s/dmg-jls.dcm", g_tmp);
    enum { C = 80, R = 60, B = 12 };
    uint16_t *src = malloc((size_t)C * R * sizeof *src);
    assert_non_null(src);
    make_image(src, C, R, 1, B, 3);
    write_raw_dicom(raw, src, C, R, 1, B, 0);
    assert_int_equal(run("dcmcjpls -q +el %s %s", raw, jls), 0);
    size_t len = 0;
    uint8_t *s = first_stream(jls, &len);
    cmr_jls_info info;
    assert_int_equal(cmr_jls_probe(s, len, &info), CMR_JLS_OK);
    assert_true(info.cols == C && info.rows == R && info.bits >= B); /* DCMTK writes precision 16 for 12-bit cells */
    uint16_t *out = malloc((size_t)C * R * sizeof *out);
    assert_non_null(out);
    assert_int_equal(cmr_jls_decode(s, len, &info, out, 2), CMR_JLS_OK);
    assert_memory_equal(out, src, (size_t)C * R * sizeof *out);

    /* The wrong size or precision for the file's header. */
    cmr_jls_info other = info;
    other.rows++;
    assert_int_equal(cmr_jls_decode(s, len, &other, out, 2), CMR_JLS_BAD);
    other = info;
    other.bits = info.bits - 1;
    assert_int_equal(cmr_jls_decode(s, len, &other, out, 2), CMR_JLS_BAD);
    /* Cut anywhere: never OK unless only the end marker is gone. */
    size_t bad = 0;
    for (size_t cut = 0; cut < len; cut += 1 + cut / 16) {
        uint8_t *t = malloc(cut ? cut : 1); /* exact size: ASan sees any read past it */
        assert_non_null(t);
        memcpy(t, s, cut);
        int rc = cmr_jls_decode(t, cut, &info, out, 2);
        assert_true(rc == CMR_JLS_BAD || (rc == CMR_JLS_OK && cut >= len - 2));
        bad += rc == CMR_JLS_BAD;
        free(t);
    }
    assert_true(bad > 0);
    /* Flipped bytes anywhere: a verdict, no crash. */
    uint8_t *t = malloc(len);
    assert_non_null(t);
    for (int round = 0; round < 2000; round++) {
        memcpy(t, s, len);
        for (int k = 0; k < 1 + round % 4; k++)
            t[rnd() % len] ^= (uint8_t)(1u << (rnd() % 8));
        int rc = cmr_jls_decode(t, len, &info, out, 2);
        assert_true(rc == CMR_JLS_OK || rc == CMR_JLS_BAD || rc == CMR_JLS_NOT_MINE);
    }
    free(t);
    free(out);
    free(s);
    free(src);
}

static int group_setup(void **state)
{
    (void)state;
    if (system("command -v dcmcjpls >/dev/null 2>&1 && command -v dump2dcm >/dev/null 2>&1") != 0) {
        fprintf(stderr, "test_jpegls: DCMTK's dcmcjpls and dump2dcm (package dcmtk) are required\n");
        return -1;
    }
    snprintf(g_tmp, sizeof g_tmp, "%s/cmr_test_jpegls.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    char cmd[512];
    snprintf(cmd, sizeof cmd, "rm -rf %s", g_tmp);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_dcmtk),
        cmocka_unit_test(test_damaged_streams),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
