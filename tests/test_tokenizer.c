/* model/tokenizer.c against the independent Python reference
 * (tests/reference/wordpiece_reference.py), whose ids for every case are in
 * tests/fixtures/tokenizer/golden.json over the test vocabulary vocab.txt;
 * plus the error paths the reference cannot express (bytes that are not
 * UTF-8, broken vocabularies, small buffers) and a speed figure. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>
#include <jansson.h>

#include "tokenizer.h"

#define FIX CMR_SOURCE_DIR "/tests/fixtures/tokenizer/"

static const char IMPRESSION[] =
    "Mid-wall LGE in the basal inferolateral segment, consistent with non-ischaemic "
    "cardiomyopathy. Moderately dilated LV (LVEDVi 142 ml/m2), LVEF 32%; RVEF 55%.";

static cmr_tokenizer *open_vocab(int lower, int strip, int chinese, size_t max_length)
{
    cmr_tokenizer_options o = {lower, strip, chinese, max_length};
    cmr_tokenizer *t = NULL;
    int rc = cmr_tokenizer_open(FIX "vocab.txt", &o, &t);
    if (rc)
        fail_msg("open vocab.txt: %s", cmr_errmsg());
    return t;
}

/* Bio_ClinicalBERT's options: cased. */
static cmr_tokenizer *from_string(const char *vocab, int *rc)
{
    cmr_tokenizer_options o = {0, -1, 1, 0};
    cmr_tokenizer *t = NULL;
    *rc = cmr_tokenizer_from_memory(vocab, strlen(vocab), &o, &t);
    return t;
}

/* ---- golden ids ------------------------------------------------------------------------ */

static void test_golden(void **state)
{
    (void)state;
    json_error_t jerr;
    /* A larger differential run: wordpiece_reference.py --random N --out F. */
    const char *path = getenv("CMR_TOKENIZER_GOLDEN");
    json_t *root = json_load_file(path && *path ? path : FIX "golden.json", JSON_ALLOW_NUL, &jerr);
    if (!root)
        fail_msg("golden.json: %s (line %d): rerun tests/reference/wordpiece_reference.py", jerr.text,
                 jerr.line);
    json_t *cases = json_object_get(root, "cases");
    assert_true(json_is_array(cases));
    assert_true(json_array_size(cases) >= 120);

    cmr_tokenizer *t = open_vocab(0, -1, 1, 0);
    assert_int_equal(cmr_tokenizer_vocab_size(t), json_integer_value(json_object_get(root, "vocab_lines")));
    cmr_tokenizer_close(t);

    size_t i, failures = 0;
    json_t *c;
    json_array_foreach(cases, i, c) {
        const char *name = json_string_value(json_object_get(c, "name"));
        json_t *text = json_object_get(c, "text");
        json_t *strip = json_object_get(c, "strip_accents");
        json_t *want = json_object_get(c, "ids");
        int lower = json_is_true(json_object_get(c, "do_lower_case"));
        int chinese = json_is_true(json_object_get(c, "tokenize_chinese_chars"));
        size_t max_length = (size_t)json_integer_value(json_object_get(c, "max_length"));
        t = open_vocab(lower, json_is_null(strip) ? -1 : json_is_true(strip), chinese, max_length);

        int32_t ids[600];
        size_t n = 0;
        int rc = cmr_tokenizer_encode(t, json_string_value(text), json_string_length(text), ids,
                                      600, &n);
        int same = rc == 0 && n == json_array_size(want);
        for (size_t k = 0; same && k < n; k++)
            same = ids[k] == json_integer_value(json_array_get(want, k));
        if (!same) {
            failures++;
            fprintf(stderr, "case %s: rc %d (%s), %zu ids, expected %zu\n  got:", name, rc,
                    rc ? cmr_errmsg() : "", n, json_array_size(want));
            for (size_t k = 0; k < n && k < 600; k++)
                fprintf(stderr, " %s", cmr_tokenizer_token(t, ids[k]));
            fprintf(stderr, "\n  want:");
            json_t *tok;
            size_t k;
            json_array_foreach(json_object_get(c, "tokens"), k, tok)
                fprintf(stderr, " %s", json_string_value(tok));
            fprintf(stderr, "\n");
        }
        cmr_tokenizer_close(t);
    }
    printf("golden: %zu cases, %zu differ\n", json_array_size(cases), failures);
    json_decref(root);
    assert_int_equal(failures, 0);
}

/* ---- the vocabulary ---------------------------------------------------------------------- */

static void test_vocab_lookup(void **state)
{
    (void)state;
    cmr_tokenizer *t = open_vocab(0, -1, 1, 0);
    assert_int_equal(cmr_tokenizer_id(t, "[PAD]"), 0);
    assert_int_equal(cmr_tokenizer_pad_id(t), 0);
    assert_int_equal(cmr_tokenizer_unk_id(t), cmr_tokenizer_id(t, "[UNK]"));
    assert_int_equal(cmr_tokenizer_cls_id(t), cmr_tokenizer_id(t, "[CLS]"));
    assert_int_equal(cmr_tokenizer_sep_id(t), cmr_tokenizer_id(t, "[SEP]"));
    assert_int_equal(cmr_tokenizer_max_length(t), 512);
    int32_t id = cmr_tokenizer_id(t, "##EF");
    assert_true(id > 0);
    assert_string_equal(cmr_tokenizer_token(t, id), "##EF");
    assert_int_equal(cmr_tokenizer_id(t, "no-such-token"), -1);
    assert_int_equal(cmr_tokenizer_id(t, ""), -1);
    assert_null(cmr_tokenizer_token(t, -1));
    assert_null(cmr_tokenizer_token(t, (int32_t)cmr_tokenizer_vocab_size(t)));
    /* vocab.txt repeats "mm" on its last line: the later id wins. */
    int32_t last = (int32_t)cmr_tokenizer_vocab_size(t) - 1;
    assert_string_equal(cmr_tokenizer_token(t, last), "mm");
    assert_int_equal(cmr_tokenizer_id(t, "mm"), last);
    cmr_tokenizer_close(t);
    cmr_tokenizer_close(NULL);
}

static void test_vocab_lines(void **state)
{
    (void)state;
    int rc;
    /* \n, \r\n and lone \r end lines; the last line needs no end; empty lines count. */
    cmr_tokenizer *t = from_string("[PAD]\r\n[UNK]\r[CLS]\n\n[SEP]\r\nLV\r\n##EF", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(cmr_tokenizer_vocab_size(t), 7);
    assert_int_equal(cmr_tokenizer_id(t, "[UNK]"), 1);
    assert_int_equal(cmr_tokenizer_id(t, "[SEP]"), 4);
    assert_int_equal(cmr_tokenizer_id(t, "LV"), 5);
    assert_int_equal(cmr_tokenizer_id(t, "##EF"), 6);
    assert_string_equal(cmr_tokenizer_token(t, 3), "");
    int32_t ids[8];
    size_t n;
    assert_int_equal(cmr_tokenizer_encode(t, "lvef LVEF", 9, ids, 8, &n), 0);
    int32_t want[] = {2, 1, 5, 6, 4}; /* cased: "lvef" is unknown, "LVEF" is LV ##EF */
    assert_int_equal(n, 5);
    assert_memory_equal(ids, want, sizeof want);
    cmr_tokenizer_close(t);

    /* NULL options: Hugging Face's defaults, lower-casing ("LVEF" -> "lvef", unknown). */
    const char *v = "[UNK]\n[CLS]\n[SEP]\nlv\n##ef\nLV\n";
    assert_int_equal(cmr_tokenizer_from_memory(v, strlen(v), NULL, &t), 0);
    assert_int_equal(cmr_tokenizer_encode(t, "LVEF", 4, ids, 8, &n), 0);
    assert_int_equal(n, 4);
    assert_int_equal(ids[1], 3);
    assert_int_equal(ids[2], 4);
    cmr_tokenizer_close(t);

    /* No [PAD]: allowed, pad id -1.  A trailing \r\n adds no line. */
    t = from_string("[UNK]\n[CLS]\n[SEP]\r\n", &rc);
    assert_int_equal(rc, 0);
    assert_int_equal(cmr_tokenizer_vocab_size(t), 3);
    assert_int_equal(cmr_tokenizer_pad_id(t), -1);
    cmr_tokenizer_close(t);
}

static void expect_vocab_error(const char *vocab, size_t len, int code, const char *msg)
{
    cmr_tokenizer *t = (cmr_tokenizer *)&t; /* must be reset to NULL */
    int rc = cmr_tokenizer_from_memory(vocab, len, NULL, &t);
    assert_int_equal(rc, code);
    assert_null(t);
    if (!strstr(cmr_errmsg(), msg))
        fail_msg("message \"%s\" lacks \"%s\"", cmr_errmsg(), msg);
}

static void test_vocab_errors(void **state)
{
    (void)state;
    expect_vocab_error("", 0, CMR_EFORMAT, "empty");
    expect_vocab_error(NULL, 0, CMR_EFORMAT, "empty");
    expect_vocab_error("\n", 1, CMR_EFORMAT, "[UNK]");
    expect_vocab_error("[CLS]\n[SEP]\n", 12, CMR_EFORMAT, "no [UNK]");
    expect_vocab_error("[UNK]\n[SEP]\n", 12, CMR_EFORMAT, "no [CLS]");
    expect_vocab_error("[UNK]\n[CLS]\n", 12, CMR_EFORMAT, "no [SEP]");
    expect_vocab_error("[UNK] \n[CLS]\n[SEP]", 18, CMR_EFORMAT, "no [UNK]"); /* spaces are kept */
    expect_vocab_error("[UNK]\n[CLS]\n[SEP]\nab\xff", 21, CMR_EFORMAT, "line 4: invalid UTF-8 at byte 2");
    expect_vocab_error("[UNK]\n[CLS]\n[SEP]\na\0b", 21, CMR_EFORMAT, "line 4: NUL");

    cmr_tokenizer *t = NULL;
    int rc = cmr_tokenizer_open(FIX "no-such-vocab.txt", NULL, &t);
    assert_int_equal(rc, CMR_ENOTFOUND);
    assert_null(t);
    assert_non_null(strstr(cmr_errmsg(), "no-such-vocab.txt"));

    const char *ok = "[UNK]\n[CLS]\n[SEP]\n";
    cmr_tokenizer_options o;
    cmr_tokenizer_options_init(&o);
    o.max_length = 1;
    assert_int_equal(cmr_tokenizer_from_memory(ok, strlen(ok), &o, &t), CMR_EINVAL);
    cmr_tokenizer_options_init(&o);
    o.do_lower_case = 2;
    assert_int_equal(cmr_tokenizer_from_memory(ok, strlen(ok), &o, &t), CMR_EINVAL);
    cmr_tokenizer_options_init(&o);
    o.strip_accents = -2;
    assert_int_equal(cmr_tokenizer_from_memory(ok, strlen(ok), &o, &t), CMR_EINVAL);
    assert_null(t);
}

/* ---- encoding errors -------------------------------------------------------------------------- */

static void expect_bad_utf8(const cmr_tokenizer *t, const char *s, size_t len, size_t at)
{
    int32_t ids[64];
    size_t n = 99;
    char want[64];
    assert_int_equal(cmr_tokenizer_encode(t, s, len, ids, 64, &n), CMR_EINVAL);
    assert_int_equal(n, 0);
    snprintf(want, sizeof want, "invalid UTF-8 at byte %zu", at);
    if (!strstr(cmr_errmsg(), want))
        fail_msg("message \"%s\" lacks \"%s\"", cmr_errmsg(), want);
}

static void test_invalid_utf8(void **state)
{
    (void)state;
    cmr_tokenizer *t = open_vocab(0, -1, 1, 0);
    expect_bad_utf8(t, "LV \x80", 4, 3);                 /* lone continuation */
    expect_bad_utf8(t, "\xc0\xaf", 2, 0);                /* overlong '/' */
    expect_bad_utf8(t, "\xc1\xbf", 2, 0);
    expect_bad_utf8(t, "ab\xe0\x80\xaf", 5, 2);          /* overlong, 3 bytes */
    expect_bad_utf8(t, "ab\xf0\x80\x80\xaf", 6, 2);      /* overlong, 4 bytes */
    expect_bad_utf8(t, "\xed\xa0\x80", 3, 0);            /* surrogate U+D800 */
    expect_bad_utf8(t, "\xed\xbf\xbf", 3, 0);            /* surrogate U+DFFF */
    expect_bad_utf8(t, "\xf4\x90\x80\x80", 4, 0);        /* U+110000 */
    expect_bad_utf8(t, "\xf5\x80\x80\x80", 4, 0);
    expect_bad_utf8(t, "\xff", 1, 0);
    expect_bad_utf8(t, "caf\xc3", 4, 3);                 /* truncated at the end */
    expect_bad_utf8(t, "caf\xe2\x82", 5, 3);
    expect_bad_utf8(t, "caf\xe2\x82x", 6, 3);            /* continuation missing */
    expect_bad_utf8(t, "\xc3\xa9\xe9t\xe9", 5, 2);       /* Latin-1 after valid UTF-8 */
    /* Past the truncation point the rest is still checked. */
    cmr_tokenizer *t3 = open_vocab(0, -1, 1, 3);
    expect_bad_utf8(t3, "LV EF RV LA \xff", 13, 12);
    cmr_tokenizer_close(t3);

    /* Valid edges: U+10FFFF (unassigned: dropped), U+FFFD dropped, U+0080 (control). */
    int32_t ids[8];
    size_t n;
    assert_int_equal(cmr_tokenizer_encode(t, "\xf4\x8f\xbf\xbf\xef\xbf\xbd\xc2\x80", 9, ids, 8, &n), 0);
    assert_int_equal(n, 2);
    /* An embedded NUL is text (dropped), not the end of the string. */
    assert_int_equal(cmr_tokenizer_encode(t, "LV\0EF", 5, ids, 8, &n), 0);
    assert_int_equal(n, 3);
    assert_int_equal(ids[1], cmr_tokenizer_id(t, "LVEF"));
    /* NULL text of length 0 is the empty string. */
    assert_int_equal(cmr_tokenizer_encode(t, NULL, 0, ids, 8, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(cmr_tokenizer_encode(t, NULL, 1, ids, 8, &n), CMR_EINVAL);
    cmr_tokenizer_close(t);
}

static void test_small_buffer(void **state)
{
    (void)state;
    cmr_tokenizer *t = open_vocab(0, -1, 1, 0);
    size_t len = strlen(IMPRESSION), need, n;
    int32_t full[512], part[512];
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, full, 512, &need), 0);
    assert_true(need > 10);
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, NULL, 0, &n), CMR_EINVAL);
    assert_int_equal(n, need);
    assert_non_null(strstr(cmr_errmsg(), "do not fit"));
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, part, need - 1, &n), CMR_EINVAL);
    assert_int_equal(n, need);
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, part, need, &n), 0);
    assert_int_equal(n, need);
    assert_memory_equal(part, full, need * sizeof *full);
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, NULL, 4, &n), CMR_EINVAL);
    cmr_tokenizer_close(t);

    /* max_length always suffices: truncation keeps [SEP]. */
    t = open_vocab(0, -1, 1, 8);
    assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, part, 8, &n), 0);
    assert_int_equal(n, 8);
    assert_memory_equal(part, full, 7 * sizeof *full);
    assert_int_equal(part[7], cmr_tokenizer_sep_id(t));
    cmr_tokenizer_close(t);
}

/* ---- robustness and speed ---------------------------------------------------------------------- */

static uint64_t rng(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Random bytes and random code points (biased to marks, Hangul, CJK and
 * cased letters) through every option set: no crash, no sanitizer report,
 * valid UTF-8 always encodes, ids in range, [CLS] ... [SEP]. */
static void test_random(void **state)
{
    (void)state;
    static const uint32_t pool[] = {0x41, 0x61, 0x20, 0x2E, 0x300, 0x301, 0x323, 0x345, 0x130,
                                    0x3A3, 0x1100, 0x1161, 0x11A8, 0xAC00, 0xD7A3, 0x4E00, 0xF900,
                                    0x2F800, 0xFFFD, 0x0, 0x85, 0x2028, 0x1E9E, 0x1F4A9, 0xFB01};
    uint64_t seed = 42;
    for (int opt = 0; opt < 6; opt++) {
        cmr_tokenizer *t = open_vocab(opt & 1, opt < 2 ? -1 : opt < 4 ? 0 : 1, opt != 5, 64);
        size_t vocab = cmr_tokenizer_vocab_size(t);
        for (int iter = 0; iter < 3000; iter++) {
            char buf[1400];
            size_t len = 0;
            int valid = iter % 2;
            size_t count = rng(&seed) % (iter % 10 == 0 ? 300 : 40);
            for (size_t k = 0; k < count; k++) {
                if (!valid) {
                    buf[len++] = (char)(rng(&seed) & 0xFF);
                    continue;
                }
                uint64_t r = rng(&seed);
                uint32_t cp = r % 3 ? pool[r % (sizeof pool / sizeof *pool)] : (uint32_t)(r >> 8) % 0x30000;
                if (cp >= 0xD800 && cp < 0xE000)
                    cp = 0x41;
                if (cp < 0x80) {
                    buf[len++] = (char)cp;
                } else if (cp < 0x800) {
                    buf[len++] = (char)(0xC0 | cp >> 6);
                    buf[len++] = (char)(0x80 | (cp & 0x3F));
                } else if (cp < 0x10000) {
                    buf[len++] = (char)(0xE0 | cp >> 12);
                    buf[len++] = (char)(0x80 | (cp >> 6 & 0x3F));
                    buf[len++] = (char)(0x80 | (cp & 0x3F));
                } else {
                    buf[len++] = (char)(0xF0 | cp >> 18);
                    buf[len++] = (char)(0x80 | (cp >> 12 & 0x3F));
                    buf[len++] = (char)(0x80 | (cp >> 6 & 0x3F));
                    buf[len++] = (char)(0x80 | (cp & 0x3F));
                }
            }
            int32_t ids[64];
            size_t n;
            int rc = cmr_tokenizer_encode(t, buf, len, ids, 64, &n);
            if (valid)
                assert_int_equal(rc, 0);
            if (rc == 0) {
                assert_true(n >= 2 && n <= 64);
                assert_int_equal(ids[0], cmr_tokenizer_cls_id(t));
                assert_int_equal(ids[n - 1], cmr_tokenizer_sep_id(t));
                for (size_t k = 0; k < n; k++)
                    assert_true(ids[k] >= 0 && (size_t)ids[k] < vocab);
            } else {
                assert_int_equal(rc, CMR_EINVAL);
            }
        }
        cmr_tokenizer_close(t);
    }
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void test_speed(void **state)
{
    (void)state;
    cmr_tokenizer *t = open_vocab(0, -1, 1, 0);
    int32_t ids[512];
    size_t n = 0, len = strlen(IMPRESSION), rounds = 0;
    double t0 = now(), t1;
    do {
        for (int k = 0; k < 1000; k++)
            assert_int_equal(cmr_tokenizer_encode(t, IMPRESSION, len, ids, 512, &n), 0);
        rounds += 1000;
        t1 = now();
    } while (t1 - t0 < 0.3);
    printf("speed: %.0f impressions/s (%zu bytes, %zu ids each), %.2f MB/s\n",
           (double)rounds / (t1 - t0), len, n, (double)(rounds * len) / (t1 - t0) / 1e6);
    cmr_tokenizer_close(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_golden),
        cmocka_unit_test(test_vocab_lookup),
        cmocka_unit_test(test_vocab_lines),
        cmocka_unit_test(test_vocab_errors),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_small_buffer),
        cmocka_unit_test(test_random),
        cmocka_unit_test(test_speed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
