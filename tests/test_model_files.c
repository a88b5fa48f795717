/* test_model, continued: model files beyond one architecture's tensors.
 * F16 weights written by cmr_st_write (rounding against numpy's, in
 * tests/fixtures/model/f16.json from tests/reference/make_f16_fixture.py)
 * and ensembles ("architecture": "ensemble") of the default model's
 * members, against the members opened on their own. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <jansson.h>

#include "cmr_sha256.h"
#include "model_internal.h"
#include "test_model_files.h"
#include "test_util.h"

#define FIX CMR_SOURCE_DIR "/tests/fixtures/model/"
#define DEFAULT_MODEL CMR_SOURCE_DIR "/models/default"

/* Every value of the fixture rounds as numpy rounds it, and F16 tensors
 * written to a file read back as those halves. */
static void test_float_to_half(void **state)
{
    (void)state;
    json_error_t err;
    json_t *doc = json_load_file(FIX "f16.json", 0, &err);
    if (!doc)
        fail_msg("%s: %s", FIX "f16.json", err.text);
    json_t *fb = json_object_get(doc, "float_bits"), *hb = json_object_get(doc, "half_bits");
    size_t n = json_array_size(fb);
    assert_true(n > 500);
    assert_int_equal(json_array_size(hb), n);
    float *values = malloc(n * sizeof *values);
    uint16_t *want = malloc(n * sizeof *want);
    assert_non_null(values);
    assert_non_null(want);
    size_t finite = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t bits = (uint32_t)json_integer_value(json_array_get(fb, i));
        memcpy(&values[i], &bits, 4);
        want[i] = (uint16_t)json_integer_value(json_array_get(hb, i));
        uint16_t got = cmr_float_to_half(values[i]);
        if (got != want[i])
            fail_msg("%.9g (0x%08x): half 0x%04x, numpy 0x%04x", (double)values[i], bits, got, want[i]);
        if ((want[i] & 0x7c00) != 0x7c00) /* keep the finite ones for the file */
            values[finite] = values[i], want[finite++] = want[i];
    }
    char *dir = test_tmpdir(), path[512];
    snprintf(path, sizeof path, "%s/half.safetensors", dir);
    cmr_st_entry e = {.name = "w", .ndim = 1, .shape = {(int64_t)finite}, .data = values, .f16 = 1};
    assert_int_equal(cmr_st_write(path, &e, 1, NULL), 0);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    cmr_st_file *f = NULL;
    assert_int_equal(cmr_st_open(path, &f), 0);
    const float *back;
    assert_int_equal(cmr_st_f32(f, "w", 1, (int64_t[]){(int64_t)finite}, &back), 0);
    for (size_t i = 0; i < finite; i++)
        if (cmr_float_to_half(back[i]) != want[i] || fabsf(back[i] - values[i]) > 1e-3f * fabsf(values[i]) + 6e-8f)
            fail_msg("value %zu: wrote %.9g, read %.9g", i, (double)values[i], (double)back[i]);
    assert_true((size_t)st.st_size < 8 + 256 + 2 * finite); /* two bytes a value */
    cmr_st_close(f);
    test_rmtree(dir);
    free(dir);
    free(values);
    free(want);
    json_decref(doc);
}

/* dir/name -> target (a member by symlink). */
static void link_member(const char *dir, const char *name, const char *target)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(symlink(target, path), 0);
}

static void write_text(const char *dir, const char *name, const char *text)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    assert_int_equal(test_write_file(path, text, strlen(text)), 0);
}

/* An ensemble of the default model's two members embeds as they do, side by
 * side, each scaled by 1/sqrt(2): unit norm, the cosine their mean. */
static void test_ensemble_embeds_as_its_members(void **state)
{
    (void)state;
    char *dir = test_tmpdir();
    assert_non_null(dir);
    link_member(dir, "a", DEFAULT_MODEL "/member-1");
    link_member(dir, "b", DEFAULT_MODEL "/member-2");
    assert_int_equal(cmr_model_write_ensemble(dir, "two", (const char *[]){"a", "b"}, 2), 0);
    cmr_model *e = NULL, *a = NULL, *b = NULL;
    assert_int_equal(cmr_model_open(dir, &e), 0);
    assert_int_equal(cmr_model_open(DEFAULT_MODEL "/member-1", &a), 0);
    assert_int_equal(cmr_model_open(DEFAULT_MODEL "/member-2", &b), 0);
    assert_string_equal(cmr_model_name(e), "two");
    assert_int_equal(cmr_model_member_count(e), 2);
    assert_int_equal(cmr_model_member_count(a), 0);
    assert_string_equal(cmr_model_member_name(e, 1), "b");
    assert_null(cmr_model_member_name(e, 2));
    unsigned da = cmr_model_dim(a), db = cmr_model_dim(b), de = cmr_model_dim(e);
    assert_int_equal(de, da + db);
    const cmr_model_input *in = cmr_model_input_spec(e);
    assert_int_equal(in->frames, cmr_model_input_spec(a)->frames);
    assert_int_equal(in->resize, cmr_model_input_spec(a)->resize);

    /* The identity: SHA-256 of "hash_a\nhash_b\n". */
    cmr_sha256 ctx;
    uint8_t digest[CMR_SHA256_BYTES];
    char hex[2 * CMR_SHA256_BYTES + 1];
    cmr_sha256_init(&ctx);
    for (cmr_model **m = (cmr_model *[]){a, b, NULL}; *m; m++) {
        cmr_sha256_update(&ctx, cmr_model_hash(*m), strlen(cmr_model_hash(*m)));
        cmr_sha256_update(&ctx, "\n", 1);
    }
    cmr_sha256_final(&ctx, digest);
    cmr_hex(digest, sizeof digest, hex);
    assert_string_equal(cmr_model_hash(e), hex);

    size_t n = (size_t)in->frames * in->channels * in->size * in->size;
    float *video = malloc(n * sizeof *video), *ve = malloc(de * sizeof *ve), *va = malloc(da * sizeof *va),
          *vb = malloc(db * sizeof *vb);
    assert_non_null(video);
    assert_non_null(ve);
    assert_non_null(va);
    assert_non_null(vb);
    uint64_t s = 7;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        video[i] = (float)((s >> 40) & 0xffff) / 65535.0f * 4.0f - 2.0f;
    }
    const float scale = 1.0f / sqrtf(2.0f);
    for (int text = 0; text < 2; text++) {
        if (text) {
            const char *q = "Asymmetric septal hypertrophy with patchy late gadolinium enhancement.";
            assert_int_equal(cmr_model_encode_text(e, q, ve), 0);
            assert_int_equal(cmr_model_encode_text(a, q, va), 0);
            assert_int_equal(cmr_model_encode_text(b, q, vb), 0);
        } else {
            assert_int_equal(cmr_model_encode_study(e, video, in->frames, ve), 0);
            assert_int_equal(cmr_model_encode_study(a, video, in->frames, va), 0);
            assert_int_equal(cmr_model_encode_study(b, video, in->frames, vb), 0);
        }
        double norm = 0, gap = 0;
        for (unsigned d = 0; d < de; d++) {
            float want = scale * (d < da ? va[d] : vb[d - da]);
            gap = fmax(gap, fabs((double)ve[d] - want));
            norm += (double)ve[d] * ve[d];
        }
        assert_true(gap < 1e-6);
        assert_true(fabs(norm - 1) < 1e-5);
    }
    int32_t ids[2] = {101, 102};
    assert_int_equal(cmr_model_encode_tokens(e, ids, 2, ve), CMR_EUNSUPPORTED);
    free(video);
    free(ve);
    free(va);
    free(vb);
    cmr_model_close(e);
    cmr_model_close(a);
    cmr_model_close(b);
    test_rmtree(dir);
    free(dir);
}

/* What an ensemble's model.json may not say, each refused with a message
 * that names the problem. */
static void test_ensemble_errors(void **state)
{
    (void)state;
    static const struct {
        const char *members, *message;
        int rc;
    } cases[] = {
        {"[]", "\"members\" must list 1..8", CMR_EFORMAT},
        {"[\"../a\"]", "members[0] must be the name of a directory", CMR_EFORMAT},
        {"[\"/tmp\"]", "members[0] must be the name of a directory", CMR_EFORMAT},
        {"[\"a\", \"a\"]", "member \"a\" is listed twice", CMR_EFORMAT},
        {"[\"a\", \"missing\"]", "member \"missing\"", CMR_ENOTFOUND},
        {"[\"a\", \"nested\"]", "member \"nested\" is itself an ensemble", CMR_EFORMAT},
        {"[\"a\", \"wide\"]", "member \"wide\" takes another input", CMR_EFORMAT},
    };
    char *dir = test_tmpdir();
    assert_non_null(dir);
    link_member(dir, "a", DEFAULT_MODEL "/member-1");
    /* nested: an ensemble of a's; wide: a's weights, another crop. */
    char path[512];
    snprintf(path, sizeof path, "%s/nested", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    link_member(path, "a", DEFAULT_MODEL "/member-1");
    assert_int_equal(cmr_model_write_ensemble(path, "nested", (const char *[]){"a"}, 1), 0);
    snprintf(path, sizeof path, "%s/wide", dir);
    assert_int_equal(mkdir(path, 0755), 0);
    link_member(path, "weights.safetensors", DEFAULT_MODEL "/member-1/weights.safetensors");
    json_t *doc = json_load_file(DEFAULT_MODEL "/member-1/model.json", 0, NULL);
    assert_non_null(doc);
    json_object_set_new(json_object_get(doc, "input"), "resize", json_integer(80));
    snprintf(path, sizeof path, "%s/wide/model.json", dir);
    assert_int_equal(json_dump_file(doc, path, 0), 0);
    json_decref(doc);
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char text[512];
        snprintf(text, sizeof text,
                 "{\"format\": \"cmrsearch-model\", \"format_version\": 1, \"name\": \"e\", "
                 "\"architecture\": \"ensemble\", \"members\": %s}",
                 cases[i].members);
        write_text(dir, "model.json", text);
        cmr_model *m = (cmr_model *)&m;
        int rc = cmr_model_open(dir, &m);
        if (rc != cases[i].rc || !strstr(cmr_errmsg(), cases[i].message))
            fail_msg("members %s: rc %d, message \"%s\"; expected %d and \"%s\"", cases[i].members, rc,
                     cmr_errmsg(), cases[i].rc, cases[i].message);
        assert_null(m);
    }
    /* The writer refuses what the reader would. */
    assert_int_equal(cmr_model_write_ensemble(dir, "e", (const char *[]){"../a"}, 1), CMR_EINVAL);
    assert_int_equal(cmr_model_write_ensemble(dir, "e", (const char *[]){"a"}, 0), CMR_EINVAL);
    test_rmtree(dir);
    free(dir);
}

const struct CMUnitTest cmr_model_file_tests[] = {
    cmocka_unit_test(test_float_to_half),
    cmocka_unit_test(test_ensemble_embeds_as_its_members),
    cmocka_unit_test(test_ensemble_errors),
};
const size_t cmr_model_file_test_count = sizeof cmr_model_file_tests / sizeof *cmr_model_file_tests;
