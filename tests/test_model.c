/* model/: the CMR-CLIP towers in C against an independent PyTorch
 * implementation (tests/reference/cmrclip_torch.py), whose outputs at every
 * stage tests/reference/make_model_fixtures.py stored in
 * tests/fixtures/model/.  CI needs no PyTorch: the fixtures are committed.
 *
 * Agreement asked for: at every stage, max |c - ref| / max |ref| ≤ 1e-4 over
 * the stage's tensor.  (An element-wise relative error is meaningless for
 * values that cancel to ~0: PyTorch's own float32 run is 2.8e-3 from the
 * float64 reference there.)  The references are float64 computations of
 * the float32 weights and inputs, rounded to float32. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <cblas.h>
#include <cmocka.h>
#include <jansson.h>

#include "gemm_amx.h"
#include "model_internal.h"
#include "test_model_files.h"
#include "test_util.h"

#define FIX CMR_SOURCE_DIR "/tests/fixtures/model/"
#define TOL 1e-4

static double worst; /* largest relative error seen, for the summary */

/* ---- fixtures ------------------------------------------------------------------------------------ */

static cmr_st_file *open_fixture(const char *name)
{
    cmr_st_file *f = NULL;
    int rc = cmr_st_open(name, &f);
    if (rc < 0)
        fail_msg("%s: %s (%s): rerun tests/reference/make_model_fixtures.py", name, cmr_strerror(rc), cmr_errmsg());
    return f;
}

static const cmr_st_tensor *tensor(const cmr_st_file *f, const char *name)
{
    const cmr_st_tensor *t = cmr_st_find(f, name);
    if (!t)
        fail_msg("%s: fixture tensor %s missing", f->path, name);
    return t;
}

static const float *f32(cmr_st_file *f, const char *name, const cmr_st_tensor **t)
{
    *t = tensor(f, name);
    const float *p = NULL;
    int64_t shape[CMR_ST_MAX_DIMS];
    memcpy(shape, (*t)->shape, sizeof shape);
    if (cmr_st_f32(f, name, (*t)->ndim, shape, &p) < 0)
        fail_msg("%s", cmr_errmsg());
    return p;
}

static int64_t int_at(const cmr_st_tensor *t, size_t i)
{
    if (t->dtype == CMR_I32) {
        int32_t v;
        memcpy(&v, t->data + 4 * i, 4);
        return v;
    }
    if (t->dtype == CMR_I64) {
        int64_t v;
        memcpy(&v, t->data + 8 * i, 8);
        return v;
    }
    fail_msg("%s: integer tensor expected, got %s", t->name, t->dtype_name);
    return 0;
}

static void expect_close(const char *what, const float *got, const float *want, size_t n)
{
    double e = test_rel_error(got, want, n);
    worst = e > worst ? e : worst;
    if (!(e <= TOL))
        fail_msg("%s: max relative error %.3g > %.0e", what, e, TOL);
}

/* ---- probes: every stage of a forward pass against its fixture ------------------------------------ */

typedef struct probe_ctx {
    cmr_st_file *io;
    const char *prefix; /* "video." or "video3." fixture prefix */
    size_t batch;       /* row of the fixture's batch dimension */
    size_t checked;
    char last_error[256];
} probe_ctx;

static void on_stage(void *ctx, const char *stage, const float *data, size_t rows, size_t cols)
{
    probe_ctx *p = ctx;
    char name[96];
    /* The model names stages "video.x" / "text.x"; fixtures may use another prefix. */
    const char *dot = strchr(stage, '.');
    snprintf(name, sizeof name, "%s%s", p->prefix, dot + 1);
    const cmr_st_tensor *t = cmr_st_find(p->io, name);
    if (!t)
        return;
    const float *want = NULL;
    int64_t shape[CMR_ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    assert_int_equal(cmr_st_f32(p->io, name, t->ndim, shape, &want), 0);
    /* [B][rows][cols] (padded text rows beyond `rows` are ignored) or [B][cols]. */
    size_t per_batch = t->n_elems / (size_t)t->shape[0];
    size_t fix_cols = (size_t)t->shape[t->ndim - 1];
    assert_int_equal(fix_cols, cols);
    assert_true(rows * cols <= per_batch);
    expect_close(name, data, want + p->batch * per_batch, rows * cols);
    p->checked++;
}

/* ---- the small model, end to end ------------------------------------------------------------------ */

/* The committed small model, or (CMR_TEST_MODEL_DIR, set by model_e2e.sh)
 * the same weights converted from the torch.save checkpoint by
 * scripts/convert_cmrclip.py. */
static cmr_model *open_small(void)
{
    const char *dir = getenv("CMR_TEST_MODEL_DIR");
    if (!dir || !*dir)
        dir = FIX "small";
    cmr_model *m = NULL;
    int rc = cmr_model_open(dir, &m);
    if (rc < 0)
        fail_msg("open %s: %s: %s", dir, cmr_strerror(rc), cmr_errmsg());
    return m;
}

static void check_video(const char *prefix, size_t expect_stages)
{
    cmr_model *m = open_small();
    cmr_st_file *io = open_fixture(FIX "small_io.safetensors");
    char name[64];
    snprintf(name, sizeof name, "%sinput", prefix);
    const cmr_st_tensor *in;
    const float *video = f32(io, name, &in);
    assert_int_equal(in->ndim, 5);
    const cmr_model_input *spec = cmr_model_input_spec(m);
    assert_int_equal(in->shape[2], spec->channels);
    assert_int_equal(in->shape[3], spec->size);
    size_t per = in->n_elems / (size_t)in->shape[0];
    unsigned dim = cmr_model_dim(m);
    float *emb = malloc(dim * sizeof *emb);
    for (size_t b = 0; b < (size_t)in->shape[0]; b++) {
        probe_ctx p = {.io = io, .prefix = prefix, .batch = b};
        cmr_model_set_probe(m, on_stage, &p);
        int rc = cmr_model_encode_study(m, video + b * per, (unsigned)in->shape[1], emb);
        if (rc < 0)
            fail_msg("encode_study: %s", cmr_errmsg());
        assert_int_equal(p.checked, expect_stages);
        double norm = 0;
        for (unsigned i = 0; i < dim; i++)
            norm += (double)emb[i] * emb[i];
        assert_true(fabs(norm - 1) < 1e-5);
    }
    free(emb);
    cmr_st_close(io);
    cmr_model_close(m);
}

static void test_small_video(void **state)
{
    (void)state;
    /* tokens, 2 blocks x (time, out), final norm, projection */
    check_video("video.", 1 + 2 * 2 + 1 + 1);
}

static void test_small_video_fewer_frames(void **state)
{
    (void)state;
    check_video("video3.", 3); /* tokens, final norm, projection */
}

static void test_small_text(void **state)
{
    (void)state;
    cmr_model *m = open_small();
    cmr_st_file *io = open_fixture(FIX "small_io.safetensors");
    const cmr_st_tensor *ids = tensor(io, "text.input_ids"), *mask = tensor(io, "text.attention_mask");
    assert_int_equal(ids->ndim, 2);
    size_t B = (size_t)ids->shape[0], L = (size_t)ids->shape[1];
    int32_t *row = malloc(L * sizeof *row);
    float *emb = malloc(cmr_model_dim(m) * sizeof *emb);
    for (size_t b = 0; b < B; b++) {
        size_t n = 0;
        for (size_t i = 0; i < L; i++)
            if (int_at(mask, b * L + i))
                row[n++] = (int32_t)int_at(ids, b * L + i);
        probe_ctx p = {.io = io, .prefix = "text.", .batch = b};
        cmr_model_set_probe(m, on_stage, &p);
        int rc = cmr_model_encode_tokens(m, row, n, emb);
        if (rc < 0)
            fail_msg("encode_tokens: %s", cmr_errmsg());
        /* embeddings, 2 layers, mean, projection */
        assert_int_equal(p.checked, 1 + 2 + 1 + 1);
    }
    free(row);
    free(emb);
    cmr_st_close(io);
    cmr_model_close(m);
}

/* ---- one full-size block, weights from the shared generator ---------------------------------------- */

/* splitmix64 over FNV-1a of the name: the fixtures' README documents it and
 * make_model_fixtures.py implements the same, bit for bit. */
static float *generate(const char *name, size_t n, double scale, double offset)
{
    uint64_t state = 0xcbf29ce484222325ull;
    for (const unsigned char *c = (const unsigned char *)name; *c; c++)
        state = (state ^ *c) * 0x100000001b3ull;
    float *w = malloc(n * sizeof *w);
    assert_non_null(w);
    for (size_t i = 0; i < n; i++) {
        uint64_t z = test_rng(&state);
        double u = (double)(z >> 40) / 16777216.0;
        w[i] = (float)(offset + scale * (2.0 * u - 1.0));
    }
    return w;
}

typedef struct gen_set {
    json_t *recipe;
    float *owned[64];
    size_t n_owned;
} gen_set;

static const float *gen(gen_set *g, const char *name, size_t expect_elems)
{
    json_t *r = json_object_get(g->recipe, name);
    if (!r)
        fail_msg("generated tensor %s not in the fixture's recipe", name);
    size_t n = 1;
    json_t *dim;
    size_t i;
    json_array_foreach(json_object_get(r, "shape"), i, dim) n *= (size_t)json_integer_value(dim);
    assert_int_equal(n, expect_elems);
    assert_true(g->n_owned < 64);
    float *w = generate(name, n, json_number_value(json_object_get(r, "scale")),
                        json_number_value(json_object_get(r, "offset")));
    g->owned[g->n_owned++] = w;
    return w;
}

static void test_full_size_block(void **state)
{
    (void)state;
    cmr_st_file *io = open_fixture(FIX "block768_io.safetensors");
    char *recipe = cmr_st_metadata(io, "generated");
    assert_non_null(recipe);
    gen_set g = {.recipe = json_loads(recipe, 0, NULL)};
    assert_non_null(g.recipe);
    free(recipe);
    const size_t D = 768, M = 3072;
    cmr_vit_config vc = {.dim = 768, .depth = 1, .heads = 12, .mlp_dim = 3072, .patch = 16, .image_size = 32,
                         .channels = 3, .num_frames = 2, .ln_eps = 1e-6f};
    const char *p = "video_model.blocks.0.";
    char n[128];
#define G(suffix, count) (snprintf(n, sizeof n, "%s%s", p, suffix), gen(&g, n, (count)))
    cmr_vit_block b = {
        .norm1_w = G("norm1.weight", D), .norm1_b = G("norm1.bias", D), .norm2_w = G("norm2.weight", D),
        .norm2_b = G("norm2.bias", D), .norm3_w = G("norm3.weight", D), .norm3_b = G("norm3.bias", D),
        .qkv_w = G("attn.qkv.weight", 3 * D * D), .qkv_b = G("attn.qkv.bias", 3 * D),
        .proj_w = G("attn.proj.weight", D * D), .proj_b = G("attn.proj.bias", D),
        .tqkv_w = G("timeattn.qkv.weight", 3 * D * D), .tqkv_b = G("timeattn.qkv.bias", 3 * D),
        .tproj_w = G("timeattn.proj.weight", D * D), .tproj_b = G("timeattn.proj.bias", D),
        .fc1_w = G("mlp.fc1.weight", M * D), .fc1_b = G("mlp.fc1.bias", M), .fc2_w = G("mlp.fc2.weight", D * M),
        .fc2_b = G("mlp.fc2.bias", D)};
    const cmr_st_tensor *t;
    const float *in = f32(io, "block.input", &t);
    size_t T = (size_t)t->shape[1];
    assert_int_equal(T, 1 + 2 * 4);
    float *x = malloc(T * D * sizeof *x);
    memcpy(x, in, T * D * sizeof *x);
    cmr_arena ws = {0};
    probe_ctx pc = {.io = io, .prefix = "", .batch = 0};
    assert_int_equal(cmr_vit_block_forward(&vc, &b, x, 2, 4, &ws, on_stage, &pc), 0);
    assert_int_equal(pc.checked, 1); /* block.time */
    expect_close("block.out", x, f32(io, "block.out", &t), T * D);
    free(x);

    p = "text_model.encoder.layer.0.";
    cmr_bert_config bc = {.vocab_size = 2, .hidden = 768, .layers = 1, .heads = 12, .intermediate = 3072,
                          .max_position = 512, .type_vocab = 2, .ln_eps = 1e-12f};
    cmr_bert_layer L = {.q_w = G("attention.self.query.weight", D * D), .q_b = G("attention.self.query.bias", D),
                        .k_w = G("attention.self.key.weight", D * D), .k_b = G("attention.self.key.bias", D),
                        .v_w = G("attention.self.value.weight", D * D), .v_b = G("attention.self.value.bias", D),
                        .ao_w = G("attention.output.dense.weight", D * D),
                        .ao_b = G("attention.output.dense.bias", D),
                        .aln_w = G("attention.output.LayerNorm.weight", D),
                        .aln_b = G("attention.output.LayerNorm.bias", D),
                        .i_w = G("intermediate.dense.weight", M * D), .i_b = G("intermediate.dense.bias", M),
                        .o_w = G("output.dense.weight", D * M), .o_b = G("output.dense.bias", D),
                        .oln_w = G("output.LayerNorm.weight", D), .oln_b = G("output.LayerNorm.bias", D)};
#undef G
    const float *bin = f32(io, "bert.input", &t);
    size_t L_n = (size_t)t->shape[1];
    x = malloc(L_n * D * sizeof *x);
    memcpy(x, bin, L_n * D * sizeof *x);
    assert_int_equal(cmr_bert_layer_forward(&bc, &L, x, L_n, &ws), 0);
    expect_close("bert.out", x, f32(io, "bert.out", &t), L_n * D);
    free(x);
    cmr_arena_release(&ws);
    for (size_t i = 0; i < g.n_owned; i++)
        free(g.owned[i]);
    json_decref(g.recipe);
    cmr_st_close(io);
}

/* ---- loading: formats, dtypes and the errors a user sees --------------------------------------------- */

/* Write a safetensors file from a header text and data bytes. */
static void write_st(const char *path, const char *header, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    uint64_t n = strlen(header);
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)(n >> (8 * i));
    assert_int_equal(fwrite(le, 1, 8, f), 8);
    assert_int_equal(fwrite(header, 1, n, f), n);
    if (len)
        assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static void expect_open_error(const char *path, int code, const char *needle)
{
    cmr_st_file *f = NULL;
    int rc = cmr_st_open(path, &f);
    assert_null(f);
    assert_int_equal(rc, code);
    if (!strstr(cmr_errmsg(), needle))
        fail_msg("message \"%s\" does not mention \"%s\"", cmr_errmsg(), needle);
}

static void test_safetensors_errors(void **state)
{
    (void)state;
    char *dir = test_tmpdir();
    assert_non_null(dir);
    char path[512];
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    float data[4] = {1, 2, 3, 4};

    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,20]}}", data, sizeof data);
    expect_open_error(path, CMR_EFORMAT, "data_offsets");
    write_st(path, "{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,16]}}", data, sizeof data);
    expect_open_error(path, CMR_EFORMAT, "16 bytes of data for 3 F32");
    write_st(path, "{\"a\":{\"dtype\":\"Q4\",\"shape\":[4],\"data_offsets\":[0,16]}}", data, sizeof data);
    expect_open_error(path, CMR_EFORMAT, "unknown dtype");
    write_st(path, "{\"a\":", data, sizeof data);
    expect_open_error(path, CMR_EFORMAT, "not a JSON object");
    FILE *f = fopen(path, "wb");
    fputs("\xff\xff\xff\xff\xff\xff\xff\x7f{}", f);
    fclose(f);
    expect_open_error(path, CMR_EFORMAT, "header length");
    snprintf(path, sizeof path, "%s/absent.safetensors", dir);
    expect_open_error(path, CMR_ENOTFOUND, "absent.safetensors");

    /* Widening: F16 and BF16 values, a shape check that names the tensor. */
    snprintf(path, sizeof path, "%s/w.safetensors", dir);
    uint16_t halves[4] = {0x3c00, 0xc000, 0x0001, 0x7bff}; /* 1, -2, smallest subnormal, 65504 */
    uint16_t bf[2] = {0x3f80, 0xc0a0};                     /* 1, -5 */
    uint8_t raw[12];
    memcpy(raw, halves, 8);
    memcpy(raw + 8, bf, 4);
    write_st(path,
             "{\"h\":{\"dtype\":\"F16\",\"shape\":[4],\"data_offsets\":[0,8]},"
             "\"b\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[8,12]},"
             "\"__metadata__\":{\"k\":\"v\"}}",
             raw, sizeof raw);
    cmr_st_file *st = NULL;
    assert_int_equal(cmr_st_open(path, &st), 0);
    const float *v = NULL;
    int64_t s4[1] = {4}, s2[1] = {2}, wrong[1] = {5};
    assert_int_equal(cmr_st_f32(st, "h", 1, s4, &v), 0);
    assert_true(v[0] == 1.0f && v[1] == -2.0f && v[2] == ldexpf(1, -24) && v[3] == 65504.0f);
    assert_int_equal(cmr_st_f32(st, "b", 1, s2, &v), 0);
    assert_true(v[0] == 1.0f && v[1] == -5.0f);
    assert_int_equal(cmr_st_f32(st, "b", 1, wrong, &v), CMR_EFORMAT);
    assert_non_null(strstr(cmr_errmsg(), "tensor b has shape [2], expected [5]"));
    assert_int_equal(cmr_st_f32(st, "zzz", 1, s2, &v), CMR_EFORMAT);
    assert_non_null(strstr(cmr_errmsg(), "tensor zzz is missing"));
    char *meta = cmr_st_metadata(st, "k");
    assert_string_equal(meta, "v");
    free(meta);
    cmr_st_close(st);
    cmr_st_close(NULL);
    test_rmtree(dir);
    free(dir);
}

/* A copy of the small model with its weights rewritten by `edit`. */
static char *copy_model(void (*edit)(const char *src, const char *dst))
{
    char *dir = test_tmpdir();
    assert_non_null(dir);
    const char *files[] = {"model.json", "vocab.txt"};
    for (int i = 0; i < 2; i++) {
        char src[512], dst[512], cmd[1200];
        snprintf(src, sizeof src, FIX "small/%s", files[i]);
        snprintf(dst, sizeof dst, "%s/%s", dir, files[i]);
        snprintf(cmd, sizeof cmd, "cp '%s' '%s'", src, dst);
        assert_int_equal(system(cmd), 0);
    }
    char dst[512];
    snprintf(dst, sizeof dst, "%s/weights.safetensors", dir);
    edit(FIX "small/weights.safetensors", dst);
    return dir;
}

/* Re-encode every F32 tensor as BF16 (round to nearest even), dropping one
 * tensor when drop is set. */
static const char *drop_name;
static void rewrite_weights(const char *src, const char *dst)
{
    cmr_st_file *in = open_fixture(src);
    json_t *hdr = json_object();
    size_t total = 0;
    for (size_t i = 0; i < in->n_tensors; i++)
        total += in->tensors[i].n_bytes;
    uint8_t *data = malloc(total), *at = data;
    for (size_t i = 0; i < in->n_tensors; i++) {
        const cmr_st_tensor *t = &in->tensors[i];
        if (drop_name && !strcmp(t->name, drop_name))
            continue;
        json_t *shape = json_array();
        for (int d = 0; d < t->ndim; d++)
            json_array_append_new(shape, json_integer(t->shape[d]));
        size_t begin = (size_t)(at - data);
        const char *dtype = t->dtype_name;
        if (t->dtype == CMR_F32) {
            dtype = "BF16";
            for (size_t k = 0; k < t->n_elems; k++) {
                uint32_t bits;
                memcpy(&bits, t->data + 4 * k, 4);
                bits += 0x7fff + ((bits >> 16) & 1);
                *at++ = (uint8_t)(bits >> 16);
                *at++ = (uint8_t)(bits >> 24);
            }
        } else {
            memcpy(at, t->data, t->n_bytes);
            at += t->n_bytes;
        }
        json_object_set_new(hdr, t->name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", dtype, "shape", shape, "data_offsets",
                                      (json_int_t)begin, (json_int_t)(at - data)));
    }
    char *text = json_dumps(hdr, JSON_COMPACT);
    write_st(dst, text, data, (size_t)(at - data));
    free(text);
    free(data);
    json_decref(hdr);
    cmr_st_close(in);
}

static void test_bf16_model_and_missing_tensor(void **state)
{
    (void)state;
    drop_name = NULL;
    char *dir = copy_model(rewrite_weights);
    cmr_model *m32 = open_small(), *m16 = NULL;
    int rc = cmr_model_open(dir, &m16);
    if (rc < 0)
        fail_msg("bf16 model: %s", cmr_errmsg());
    assert_string_not_equal(cmr_model_hash(m32), cmr_model_hash(m16));
    assert_string_equal(cmr_model_name(m32), cmr_model_name(m16));
    cmr_st_file *io = open_fixture(FIX "small_io.safetensors");
    const cmr_st_tensor *t;
    const float *video = f32(io, "video.input", &t);
    unsigned dim = cmr_model_dim(m32);
    float *a = malloc(dim * sizeof *a), *b = malloc(dim * sizeof *b);
    assert_int_equal(cmr_model_encode_study(m32, video, (unsigned)t->shape[1], a), 0);
    assert_int_equal(cmr_model_encode_study(m16, video, (unsigned)t->shape[1], b), 0);
    double cos = 0;
    for (unsigned i = 0; i < dim; i++)
        cos += (double)a[i] * b[i];
    assert_true(cos > 0.995); /* bf16 keeps 8 bits of mantissa */
    assert_int_equal(cmr_model_encode_text(m32, "Normal study.", a), 0);
    free(a);
    free(b);
    cmr_st_close(io);
    cmr_model_close(m16);
    cmr_model_close(m32);
    test_rmtree(dir);
    free(dir);

    drop_name = "video_model.blocks.1.timeattn.proj.bias";
    dir = copy_model(rewrite_weights);
    m16 = NULL;
    assert_int_equal(cmr_model_open(dir, &m16), CMR_EFORMAT);
    assert_null(m16);
    if (!strstr(cmr_errmsg(), "tensor video_model.blocks.1.timeattn.proj.bias is missing"))
        fail_msg("unexpected message: %s", cmr_errmsg());
    test_rmtree(dir);
    free(dir);
    drop_name = NULL;
    cmr_model_close(NULL);
}

/* A copy of the default model's first member (weights by symlink) whose
 * model.json names the lexicon `lexicon`. */
static char *default_model_with_lexicon(const char *lexicon)
{
    const char *src = CMR_SOURCE_DIR "/models/default/member-1";
    char path[512];
    snprintf(path, sizeof path, "%s/model.json", src);
    json_error_t err;
    json_t *doc = json_load_file(path, 0, &err);
    assert_non_null(doc);
    assert_int_equal(json_object_set_new(json_object_get(doc, "text"), "lexicon", json_string(lexicon)), 0);
    char *dir = test_tmpdir();
    snprintf(path, sizeof path, "%s/model.json", dir);
    assert_int_equal(json_dump_file(doc, path, JSON_INDENT(2)), 0);
    json_decref(doc);
    char target[512];
    snprintf(target, sizeof target, "%s/weights.safetensors", src);
    snprintf(path, sizeof path, "%s/weights.safetensors", dir);
    assert_int_equal(symlink(target, path), 0);
    return dir;
}

/* model.json's text.lexicon chooses the featurizer: "cmr-v2" differs from
 * "cmr-v1" exactly on texts with "non", and an unknown one is refused. */
static void test_compact_lexicon_versions(void **state)
{
    (void)state;
    char *v1 = default_model_with_lexicon("cmr-v1"), *v2 = default_model_with_lexicon("cmr-v2");
    char *v9 = default_model_with_lexicon("cmr-v9");
    cmr_model *m1 = NULL, *m2 = NULL, *m9 = NULL;
    assert_int_equal(cmr_model_open(v1, &m1), 0);
    assert_int_equal(cmr_model_open(v2, &m2), 0);
    assert_int_equal(cmr_model_open(v9, &m9), CMR_EFORMAT);
    assert_null(m9);
    if (!strstr(cmr_errmsg(), "text.lexicon must be \"cmr-v1\" or \"cmr-v2\""))
        fail_msg("unexpected message: %s", cmr_errmsg());
    unsigned dim = cmr_model_dim(m1);
    float *a = malloc(dim * sizeof *a), *b = malloc(dim * sizeof *b);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(cmr_model_encode_text(m1, "Dilated LV, no late gadolinium enhancement.", a), 0);
    assert_int_equal(cmr_model_encode_text(m2, "Dilated LV, no late gadolinium enhancement.", b), 0);
    assert_memory_equal(a, b, dim * sizeof *a);
    assert_int_equal(cmr_model_encode_text(m1, "Non-ischemic dilated cardiomyopathy.", a), 0);
    assert_int_equal(cmr_model_encode_text(m2, "Non-ischemic dilated cardiomyopathy.", b), 0);
    double diff = 0;
    for (unsigned d = 0; d < dim; d++)
        diff = fmax(diff, fabs((double)a[d] - b[d]));
    assert_true(diff > 1e-3);
    free(a);
    free(b);
    cmr_model_close(m1);
    cmr_model_close(m2);
    for (char **d = (char *[]){v1, v2, v9, NULL}; *d; d++) {
        test_rmtree(*d);
        free(*d);
    }
}

static void test_open_errors(void **state)
{
    (void)state;
    cmr_model *m = NULL;
    assert_int_equal(cmr_model_open("/nonexistent/model", &m), CMR_ENOTFOUND);
    assert_null(m);
    char *dir = test_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/model.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\"format\": \"cmrsearch-model\", \"format_version\": 2}", f);
    fclose(f);
    assert_int_equal(cmr_model_open(dir, &m), CMR_EUNSUPPORTED);
    assert_non_null(strstr(cmr_errmsg(), "format_version 2"));
    f = fopen(path, "w");
    fputs("{\"format\": \"something else\"}", f);
    fclose(f);
    assert_int_equal(cmr_model_open(path, &m), CMR_EFORMAT);
    assert_null(m);
    test_rmtree(dir);
    free(dir);
}

/* ---- the AMX kernel (model/gemm_amx.c) ---------------------------------------------------------------- */

/* The kernel runs where the CPU has AMX (and CMR_GEMM is not "openblas");
 * elsewhere every product goes to OpenBLAS and the kernel refuses to run.
 * The kernel's own tests are a ctest entry of their own (test_model_amx,
 * below main), reported as skipped, not passed, on a CPU without AMX. */
static void test_gemm_kernel(void **state)
{
    (void)state;
    const char *env = getenv("CMR_GEMM");
    int amx = cmr_gemm_amx_ready();
    print_message("GEMM kernel %s (CMR_GEMM %s)\n", cmr_gemm_kernel(), env ? env : "unset");
    assert_string_equal(cmr_gemm_kernel(), amx ? "amx-bf16x3" : "openblas");
    if (cmr_gemm_mode_parse(env) == CMR_GEMM_OPENBLAS)
        assert_false(amx);
    if (amx)
        return;
    float a[4] = {1, 2, 3, 4}, b[4] = {5, 6, 7, 8}, c[4] = {9, 9, 9, 9};
    assert_int_equal(cmr_gemm_amx(2, 2, 2, a, 2, b, 2, c, 2, 0), CMR_EUNSUPPORTED);
    for (int i = 0; i < 4; i++)
        assert_true(c[i] == 9); /* untouched */
}

/* This test binary again, with CMR_GEMM set and one argument; its output in out. */
static int run_child(const char *gemm, const char *arg, char *out, size_t cap)
{
    char self[4096], cmd[4300];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    assert_true(len > 0);
    self[len] = 0;
    snprintf(cmd, sizeof cmd, "CMR_GEMM=%s '%s' %s 2>&1", gemm, self, arg);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    size_t n = fread(out, 1, cap - 1, p);
    out[n] = 0;
    return pclose(p);
}

static void test_gemm_env(void **state)
{
    (void)state;
    assert_true(cmr_gemm_mode_parse(NULL) == CMR_GEMM_AUTO && cmr_gemm_mode_parse("") == CMR_GEMM_AUTO);
    assert_true(cmr_gemm_mode_parse("auto") == CMR_GEMM_AUTO && cmr_gemm_mode_parse("mkl") == CMR_GEMM_AUTO);
    assert_true(cmr_gemm_mode_parse("openblas") == CMR_GEMM_OPENBLAS);
    assert_true(cmr_gemm_mode_parse("OpenBLAS") == CMR_GEMM_OPENBLAS && cmr_gemm_mode_parse("amx") == CMR_GEMM_AMX);
    static char out[65536]; /* the variable is read once per process: children with it set */
    assert_int_equal(run_child("openblas", "--gemm-kernel", out, sizeof out), 0);
    assert_string_equal(out, "openblas\n");
    if (!cmr_gemm_amx_ready()) {
        /* Asking for AMX on a CPU without it: every product on OpenBLAS. */
        assert_int_equal(run_child("amx", "--gemm-kernel", out, sizeof out), 0);
        assert_string_equal(out, "openblas\n");
    }
}

/* Every product on AMX, however small (most of the small model's are below
 * the size where AMX runs by default), against the fixtures. */
static void test_all_products_on_amx(void **state)
{
    (void)state;
    static char out[65536];
    int status = run_child("amx", "--parity", out, sizeof out);
    const char *line = strstr(out, "# worst relative error");
    print_message("all products on AMX: %.*s\n", line ? (int)strcspn(line, "\n") : 7, line ? line : "no line");
    if (status != 0)
        fail_msg("CMR_GEMM=amx test_model --parity failed:\n%s", out);
}

/* The bf16x3 bound for one element (docs/gemm.md, "Accuracy"), given
 * mag = sum_k |a_k b_k| and the previous |c0|.  Each float is x = hi + lo
 * + e with |e| <= 2^-16 |x| (two roundings to bf16's 8 significant bits);
 * of the product, hi hi + hi lo + lo hi is kept, dropping lo lo and the e
 * terms, at most 3 (1 + 2^-7) 2^-16 |a b|.  The 3k kept products are exact
 * in float32 and summed in float32 onto c0: at most gamma_{3k+1} (in units
 * 2^-24) of the magnitudes, which exceed |a b| by 2% at most.  Nothing
 * bounds max |error| / max |c| in general (cancellation); the tests check
 * it too, on random data, for the figure docs/gemm.md quotes. */
static double bf16x3_bound(size_t k, double mag, double c0)
{
    double u = ldexp(1, -24), n = 3.0 * (double)k + 1;
    return 3 * (1 + ldexp(1, -7)) * ldexp(1, -16) * mag + n * u / (1 - n * u) * (1.02 * mag + fabs(c0));
}

/* Random matrix entries: standard normal, or (wide) times 2^U(-10, 10). */
static void fill(float *x, size_t n, int wide, uint64_t *rng)
{
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(test_gauss(rng) * (wide ? ldexp(1, (int)(test_rng(rng) % 21) - 10) : 1));
}

/* C (m x n, stride ldc) against A · B^T (+ c0) in double: the per-element
 * bound, untouched padding, and max |error| / max |ref| returned. */
static double check_product(size_t m, size_t n, size_t k, const float *a, size_t lda, const float *b, size_t ldb,
                            const float *bias, const float *c0, const float *c, size_t ldc)
{
    double err = 0, mx = 0;
    for (size_t i = 0; i < m; i++) {
        for (size_t j = 0; j < n; j++) {
            double ref = 0, mag = 0, base = (c0 ? c0[i * ldc + j] : 0) + (bias ? bias[j] : 0);
            for (size_t p = 0; p < k; p++) {
                double t = (double)a[i * lda + p] * b[j * ldb + p];
                ref += t;
                mag += fabs(t);
            }
            ref += base;
            double e = fabs(c[i * ldc + j] - ref);
            /* A bias is added to c0 in float32 first: one more rounding. */
            double bound = bf16x3_bound(k, mag, base) + (bias && c0 ? ldexp(fabs(base), -23) : 0);
            if (!(e <= bound))
                fail_msg("%zux%zux%zu: c[%zu][%zu] = %.9g, exact %.9g: error %.3g over the bound %.3g", m, n, k, i, j,
                         c[i * ldc + j], ref, e, bound);
            err = e > err ? e : err;
            mx = fabs(ref) > mx ? fabs(ref) : mx;
        }
        for (size_t j = n; j < ldc; j++)
            if (c[i * ldc + j] != (c0 ? c0[i * ldc + j] : 0))
                fail_msg("%zux%zux%zu: padding c[%zu][%zu] written", m, n, k, i, j);
    }
    return err / mx;
}

static void test_gemm_accuracy(void **state)
{
    (void)state;
    /* Ragged m, n (not multiples of 16 or 32) and k (not of 32); 64 and 130
     * rows are the two blockings (few rows: the weights stream; many: they
     * are packed by panels), 300 x 600 x 1000 several strips and panels. */
    static const size_t shapes[][3] = {{1, 1, 1}, {17, 33, 65}, {64, 768, 768}, {130, 100, 3072}, {300, 600, 1000}};
    uint64_t rng = 20261128;
    double worst_uniform = 0, worst_wide = 0;
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int wide = 0; wide < 2; wide++)
            for (int acc = 0; acc < 2; acc++) {
                size_t m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                size_t lda = k + 3, ldb = k + 1, ldc = n + 5; /* strides unlike the widths */
                float *a = malloc(m * lda * sizeof *a), *b = malloc(n * ldb * sizeof *b);
                float *c0 = malloc(m * ldc * sizeof *c0), *c = malloc(m * ldc * sizeof *c);
                assert_true(a && b && c0 && c);
                fill(a, m * lda, wide, &rng);
                fill(b, n * ldb, wide, &rng);
                fill(c0, m * ldc, 0, &rng);
                memcpy(c, c0, m * ldc * sizeof *c);
                if (!acc) /* beta 0: C's contents are ignored (here huge); its padding is left as it was */
                    for (size_t i = 0; i < m; i++)
                        memset(c0 + i * ldc, 0, n * sizeof *c0), memset(c + i * ldc, 0x7f, n * sizeof *c);
                assert_int_equal(cmr_gemm_amx(m, n, k, a, lda, b, ldb, c, ldc, acc), 0);
                double e = check_product(m, n, k, a, lda, b, ldb, NULL, c0, c, ldc);
                double *w = wide ? &worst_wide : &worst_uniform;
                *w = e > *w ? e : *w;
                free(a), free(b), free(c0), free(c);
            }
    print_message("AMX bf16x3: max|c - exact| / max|exact| %.3g (normal entries), %.3g (magnitudes over 2^+-10)\n",
                  worst_uniform, worst_wide);
    /* Typically 2^-17 (the dropped terms' signs are random); one product alone can lose 3 * 2^-16. */
    assert_true(worst_uniform <= 1e-5);
    assert_true(worst_wide <= 3 * ldexp(1, -16));
}

/* cmr_linear, cmr_linear_acc with a bias, on the OpenMP threads sharing the
 * pieces (both blockings, both over several K panels): whatever kernel
 * runs, within the bf16x3 bound (sgemm is well inside it). */
static void test_linear_bias(void **state)
{
    (void)state;
    static const size_t shapes[][3] = {{100, 3072, 130}, {300, 1000, 200}};
    uint64_t rng = 5;
    for (size_t s = 0; s < 2; s++) {
        size_t N = shapes[s][0], IN = shapes[s][1], OUT = shapes[s][2];
        float *x = malloc(N * IN * sizeof *x), *w = malloc(OUT * IN * sizeof *w), *bias = malloc(OUT * sizeof *bias);
        float *y0 = malloc(N * OUT * sizeof *y0), *y = malloc(N * OUT * sizeof *y);
        assert_true(x && w && bias && y0 && y);
        fill(x, N * IN, 0, &rng), fill(w, OUT * IN, 0, &rng), fill(bias, OUT, 0, &rng), fill(y0, N * OUT, 0, &rng);
        cmr_linear(x, N, IN, w, bias, OUT, y);
        double e0 = check_product(N, OUT, IN, x, IN, w, IN, bias, NULL, y, OUT);
        memcpy(y, y0, N * OUT * sizeof *y);
        cmr_linear_acc(x, N, IN, w, bias, OUT, y);
        double e1 = check_product(N, OUT, IN, x, IN, w, IN, bias, y0, y, OUT);
        print_message("cmr_linear %zux%zux%zu (%s): relative error %.3g, accumulating %.3g\n", N, IN, OUT,
                      cmr_gemm_kernel(), e0, e1);
        assert_true(e0 <= 1e-5 && e1 <= 1e-5);
        free(x), free(w), free(bias), free(y0), free(y);
    }
}

static int report(void **state)
{
    (void)state;
    printf("# worst relative error over all stages: %.3g (bar %.0e)\n", worst, TOL);
    return 0;
}

/* cmr_blas_init: where OpenBLAS fell back to its Prescott kernels on a CPU
 * with AVX-512 (or AVX2 + FMA), the matching kernels afterwards, and
 * products still right; anywhere else nothing changes.  First in the list:
 * nothing in this process has used BLAS or opened a model yet. */
static void test_blas_core(void **state)
{
    (void)state;
    char before[64];
    snprintf(before, sizeof before, "%s", cmr_blas_core());
    const char *keep = getenv("CMR_BLAS_CORE");
    int may_change = !getenv("OPENBLAS_CORETYPE") && !(keep && !strcmp(keep, "keep"));
    cmr_blas_init();
    const char *after = cmr_blas_core();
    __builtin_cpu_init();
    const char *expect = before;
    if (may_change && !strcasecmp(before, "Prescott")) {
        if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl"))
            expect = "SkylakeX";
        else if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
            expect = "Haswell";
    }
    print_message("BLAS kernels: %s before, %s after cmr_blas_init\n", before, after);
    assert_string_equal(after, expect);
    cmr_blas_init(); /* idempotent */
    assert_string_equal(cmr_blas_core(), expect);
    if (may_change)
        assert_null(getenv("OPENBLAS_CORETYPE")); /* restored for child processes */

    /* A product through the (new) kernels against a plain loop. */
    enum { M = 37, N = 53, K = 301 };
    float *a = malloc(M * K * sizeof *a), *b = malloc(K * N * sizeof *b), *c = malloc(M * N * sizeof *c);
    assert_true(a && b && c);
    uint64_t rng = 7;
    for (int i = 0; i < M * K; i++)
        a[i] = test_gauss(&rng);
    for (int i = 0; i < K * N; i++)
        b[i] = test_gauss(&rng);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, M, N, K, 1.0f, a, K, b, N, 0.0f, c, N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double want = 0;
            for (int k = 0; k < K; k++)
                want += (double)a[i * K + k] * b[k * N + j];
            assert_true(fabs(c[i * N + j] - want) < 1e-3 * (1 + fabs(want)));
        }
    free(a);
    free(b);
    free(c);
}

int main(int argc, char **argv)
{
    /* Child modes of test_gemm_env: the kernel's name, and the parity tests
     * alone (run with CMR_GEMM set). */
    if (argc > 1 && !strcmp(argv[1], "--gemm-kernel")) {
        printf("%s\n", cmr_gemm_kernel());
        return 0;
    }
    const struct CMUnitTest parity[] = {
        cmocka_unit_test(test_small_video),
        cmocka_unit_test(test_small_video_fewer_frames),
        cmocka_unit_test(test_small_text),
        cmocka_unit_test(test_full_size_block),
    };
    if (argc > 1 && !strcmp(argv[1], "--parity"))
        return cmocka_run_group_tests(parity, NULL, report);
    /* test_model_amx: the kernel itself, where it can run.  77 is ctest's
     * SKIP_RETURN_CODE for this entry: "Skipped", never "Passed". */
    if (argc > 1 && !strcmp(argv[1], "--amx")) {
        if (!cmr_gemm_amx_ready()) {
            printf("AMX kernel not tested: %s\n",
                   cmr_gemm_mode_parse(getenv("CMR_GEMM")) == CMR_GEMM_OPENBLAS
                       ? "CMR_GEMM=openblas"
                       : "this CPU lacks AMX-TILE, AMX-BF16 or AVX512-BF16 (or the kernel refused the tile state); "
                         "every product runs on OpenBLAS, which test_model checks");
            return 77;
        }
        const struct CMUnitTest amx[] = {
            cmocka_unit_test(test_gemm_kernel),
            cmocka_unit_test(test_gemm_accuracy),
            cmocka_unit_test(test_all_products_on_amx),
            cmocka_unit_test(test_linear_bias),
        };
        return cmocka_run_group_tests(amx, NULL, NULL);
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_blas_core),
        cmocka_unit_test(test_gemm_kernel),
        cmocka_unit_test(test_gemm_env),
        cmocka_unit_test(test_linear_bias),
        cmocka_unit_test(test_small_video),
        cmocka_unit_test(test_small_video_fewer_frames),
        cmocka_unit_test(test_small_text),
        cmocka_unit_test(test_full_size_block),
        cmocka_unit_test(test_safetensors_errors),
        cmocka_unit_test(test_bf16_model_and_missing_tensor),
        cmocka_unit_test(test_open_errors),
        cmocka_unit_test(test_compact_lexicon_versions),
    };
    int failed = cmocka_run_group_tests(tests, NULL, report);
    return failed + _cmocka_run_group_tests("model files", cmr_model_file_tests, cmr_model_file_test_count, NULL,
                                            NULL);
}
