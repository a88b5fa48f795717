/* model/compact_video.c: the compact model's video tower, forward and
 * backward, against the PyTorch reference (tests/reference/compact_video_torch.py,
 * fixture tests/fixtures/compact_video/small.safetensors): every stage and
 * every parameter's gradient within max |c - ref| / max |ref| ≤ 1e-4 (the
 * metric of test_model.c; references are float64 computations of the
 * float32 values).  Then what the fixture cannot show: finite differences,
 * inference = training forward, batch of 1, cache reuse and growth, the
 * default configuration's shapes, argument errors.
 *
 * CMR_BENCH_COMPACT_VIDEO=B (environment) instead times the default
 * configuration at batch B and reports the training cache's memory. */
#include <malloc.h>
#include <omp.h>
#include <math.h>
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

#include "compact.h"
#include "model_internal.h"
#include "test_util.h"

/* Frames pooled by the spatial mean, and by the mean and max. */
#define FIXTURE CMR_SOURCE_DIR "/tests/fixtures/compact_video/small.safetensors"
#define FIXTURE_MAX CMR_SOURCE_DIR "/tests/fixtures/compact_video/small_max.safetensors"
static char fixture_mean[] = FIXTURE, fixture_max[] = FIXTURE_MAX;
#define TOL 1e-4

/* The test hook of compact_video.c (proposed for compact.h). */

/* ---- the fixture --------------------------------------------------------------------------------- */

typedef struct fixture {
    cmr_st_file *f;
    cmr_compact_config cfg;
    cmr_compact_layout layout;
    int batch;
    float *params; /* flat, the layout's order */
    const float *video, *d_emb;
    size_t video_per; /* floats per study */
} fixture;

static const float *f32(cmr_st_file *f, const char *name, size_t *n)
{
    const cmr_st_tensor *t = cmr_st_find(f, name);
    if (!t)
        fail_msg("%s: fixture tensor %s missing: rerun tests/reference/compact_video_torch.py", f->path, name);
    const float *p = NULL;
    int64_t shape[CMR_ST_MAX_DIMS];
    memcpy(shape, t->shape, sizeof shape);
    if (cmr_st_f32(f, name, t->ndim, shape, &p) < 0)
        fail_msg("%s", cmr_errmsg());
    if (n)
        *n = t->n_elems;
    return p;
}

static void config_from_json(const char *text, cmr_compact_config *c)
{
    json_error_t err;
    json_t *j = json_loads(text, 0, &err);
    assert_non_null(j);
    cmr_compact_config_default(c);
    c->frames = (int)json_integer_value(json_object_get(j, "frames"));
    c->size = (int)json_integer_value(json_object_get(j, "size"));
    c->channels = (int)json_integer_value(json_object_get(j, "channels"));
    c->video_hidden = (int)json_integer_value(json_object_get(j, "video_hidden"));
    c->embed_dim = (int)json_integer_value(json_object_get(j, "embed_dim"));
    for (int i = 0; i < CMR_COMPACT_CONVS; i++) {
        c->conv_channels[i] = (int)json_integer_value(json_array_get(json_object_get(j, "conv_channels"), i));
        c->conv_strides[i] = (int)json_integer_value(json_array_get(json_object_get(j, "conv_strides"), i));
    }
    json_t *pool = json_object_get(j, "spatial_pool");
    c->spatial_max = pool && !strcmp(json_string_value(pool), "mean+max");
    /* The text tower is not under test: keep its table small. */
    c->text_buckets = 64;
    json_decref(j);
    assert_int_equal(cmr_compact_config_check(c), 0);
}

/* state: the fixture's path (the test runs once per fixture), or NULL for the mean-only one. */
static void fixture_open(fixture *x, void **state)
{
    const char *path = state && *state ? (const char *)*state : FIXTURE;
    memset(x, 0, sizeof *x);
    if (cmr_st_open(path, &x->f) < 0)
        fail_msg("%s: %s: rerun tests/reference/compact_video_torch.py", path, cmr_errmsg());
    char *cfg = cmr_st_metadata(x->f, "config"), *batch = cmr_st_metadata(x->f, "batch");
    assert_non_null(cfg);
    assert_non_null(batch);
    config_from_json(cfg, &x->cfg);
    x->batch = atoi(batch);
    free(cfg);
    free(batch);
    cmr_compact_layout_of(&x->cfg, &x->layout);
    x->params = calloc(x->layout.total, sizeof *x->params);
    assert_non_null(x->params);
    for (size_t i = 0; i < x->layout.n_tensors; i++) {
        const cmr_compact_tensor *t = &x->layout.tensors[i];
        if (strncmp(t->name, "video.", 6))
            continue;
        size_t n;
        const float *p = f32(x->f, t->name, &n);
        assert_int_equal(n, t->count);
        memcpy(x->params + t->offset, p, n * sizeof *p);
    }
    size_t n;
    x->video = f32(x->f, "input", &n);
    x->video_per = n / (size_t)x->batch;
    x->d_emb = f32(x->f, "d_emb", NULL);
}

static void fixture_close(fixture *x)
{
    free(x->params);
    cmr_st_close(x->f);
}

static void expect_close(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double e = test_rel_error(got, want, n);
    printf("    %-26s %9zu values  max rel error %.2e\n", what, n, e);
    if (!(e <= tol))
        fail_msg("%s: max relative error %.3g > %.0e", what, e, tol);
}

static void ok(int rc)
{
    if (rc < 0)
        fail_msg("%s: %s", cmr_strerror(rc), cmr_errmsg());
}

static float *zeros(size_t n)
{
    float *p = calloc(n ? n : 1, sizeof *p);
    assert_non_null(p);
    return p;
}

/* ---- parity with PyTorch ------------------------------------------------------------------------- */

static void check_grads(const fixture *x, const float *grads, double scale)
{
    for (size_t i = 0; i < x->layout.n_tensors; i++) {
        const cmr_compact_tensor *t = &x->layout.tensors[i];
        if (strncmp(t->name, "video.", 6)) {
            for (size_t j = 0; j < t->count; j++)
                if (grads[t->offset + j] != 0)
                    fail_msg("%s: gradient written outside the video tower", t->name);
            continue;
        }
        char name[48];
        snprintf(name, sizeof name, "grad.%s", t->name);
        size_t n;
        const float *want = f32(x->f, name, &n);
        assert_int_equal(n, t->count);
        float *scaled = zeros(n);
        for (size_t j = 0; j < n; j++)
            scaled[j] = (float)(want[j] * scale);
        expect_close(name, grads + t->offset, scaled, n, TOL);
        free(scaled);
    }
}

static void test_parity(void **state)
{
    fixture x;
    fixture_open(&x, state);
    const int E = x.cfg.embed_dim;
    float *emb = zeros((size_t)x.batch * E), *grads = zeros(x.layout.total);
    cmr_compact_video_cache *cache = NULL;
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, x.batch, emb, &cache));
    static const char *stages[] = {"conv1", "conv2", "conv3", "conv4", "conv5", "g", "pooled", "z"};
    for (size_t i = 0; i < sizeof stages / sizeof *stages; i++) {
        char probe[32];
        snprintf(probe, sizeof probe, "video.%s", stages[i]);
        size_t rows = 0, cols = 0, n;
        const float *got = cmr_compact_video_probe(cache, probe, &rows, &cols);
        assert_non_null(got);
        const float *want = f32(x.f, stages[i], &n);
        assert_int_equal(rows * cols, n);
        expect_close(stages[i], got, want, n, TOL);
    }
    expect_close("emb", emb, f32(x.f, "emb", NULL), (size_t)x.batch * E, TOL);

    ok(cmr_compact_video_backward(&x.cfg, x.params, cache, x.d_emb, grads));
    check_grads(&x, grads, 1);
    /* Backward adds: a second call doubles every gradient. */
    ok(cmr_compact_video_backward(&x.cfg, x.params, cache, x.d_emb, grads));
    check_grads(&x, grads, 2);
    cmr_compact_video_cache_free(cache);
    free(emb);
    free(grads);
    fixture_close(&x);
}

/* ---- finite differences ----------------------------------------------------------------------------- */

/* sum(emb * d_emb) in double, and a hash of every ReLU's on/off state
 * (conv1..5, z) and spatial argmax of that forward. */
static double objective(const cmr_compact_config *c, const float *params, const float *video, int batch,
                        const float *d_emb, cmr_compact_video_cache **cache, uint64_t *mask)
{
    float *emb = zeros((size_t)batch * c->embed_dim);
    ok(cmr_compact_video_forward(c, params, video, batch, emb, cache));
    double s = 0;
    for (size_t i = 0; i < (size_t)batch * c->embed_dim; i++)
        s += (double)emb[i] * d_emb[i];
    static const char *relus[] = {"video.conv1", "video.conv2", "video.conv3", "video.conv4", "video.conv5",
                                  "video.z"};
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t k = 0; k < sizeof relus / sizeof *relus; k++) {
        size_t rows, cols;
        const float *a = cmr_compact_video_probe(*cache, relus[k], &rows, &cols);
        assert_non_null(a);
        for (size_t i = 0; i < rows * cols; i++)
            h = (h ^ (uint64_t)(a[i] > 0)) * 0x100000001b3ull;
    }
    if (c->spatial_max) { /* and where each channel's spatial max is: a kink too */
        size_t rows, cols, frames = (size_t)batch * (size_t)c->frames;
        const float *a = cmr_compact_video_probe(*cache, "video.conv5", &rows, &cols);
        size_t pix = rows / frames;
        for (size_t n = 0; n < frames; n++)
            for (size_t ch = 0; ch < cols; ch++) {
                size_t best = 0;
                for (size_t p = 1; p < pix; p++)
                    best = a[(n * pix + p) * cols + ch] > a[(n * pix + best) * cols + ch] ? p : best;
                h = (h ^ (uint64_t)best) * 0x100000001b3ull;
            }
    }
    *mask = h;
    free(emb);
    return s;
}

/* Central differences of sum(emb * d_emb) on a few elements of every video
 * tensor against the analytic gradient.  Where a step switches a ReLU the
 * function is not differentiable along it: such elements are skipped (a
 * few are; the parity test is the precise one). */
static void finite_differences(const cmr_compact_config *c, float *params, const float *video, int batch,
                               const float *d_emb)
{
    cmr_compact_layout l;
    cmr_compact_layout_of(c, &l);
    float *grads = zeros(l.total);
    cmr_compact_video_cache *cache = NULL;
    uint64_t base, m_up, m_down;
    double l0 = objective(c, params, video, batch, d_emb, &cache, &base);
    ok(cmr_compact_video_backward(c, params, cache, d_emb, grads));
    uint64_t rng = 7;
    int checked = 0, skipped = 0, bad = 0;
    for (size_t i = 0; i < l.n_tensors; i++) {
        const cmr_compact_tensor *t = &l.tensors[i];
        if (strncmp(t->name, "video.", 6))
            continue;
        double gmax = 0;
        for (size_t j = 0; j < t->count; j++)
            gmax = fmax(gmax, fabs(grads[t->offset + j]));
        /* four elements per tensor, drawing again (a few times) where a kink was crossed */
        int checked_here = 0;
        for (int k = 0; k < 8 && checked_here < 4; k++) {
            size_t j = t->offset + test_rng(&rng) % t->count;
            float saved = params[j];
            const double h = 1e-3;
            params[j] = (float)(saved + h);
            double step = (double)params[j] - saved; /* the step float32 can take */
            double up = objective(c, params, video, batch, d_emb, &cache, &m_up);
            params[j] = (float)(saved - step);
            double down = objective(c, params, video, batch, d_emb, &cache, &m_down);
            params[j] = saved;
            if (m_up != base || m_down != base) {
                skipped++;
                continue;
            }
            double fd = (up - down) / (2 * step), an = grads[j];
            /* With the ReLUs fixed the function is smooth: its second
             * difference over a step this small is the float32 forward's
             * rounding, and so is the difference quotient's error. */
            double noise = fabs(up + down - 2 * l0) / (2 * step);
            checked++;
            checked_here++;
            if (fabs(fd - an) > 1e-2 * fabs(an) + 1e-3 * gmax + 2 * noise) {
                printf("    %s[%zu]: finite difference %.6g, backward %.6g\n", t->name, j - t->offset, fd, an);
                bad++;
            }
        }
    }
    printf("    finite differences: %d of %d elements agree (%d skipped: a ReLU switched)\n", checked - bad, checked,
           skipped);
    assert_int_equal(bad, 0);
    /* conv1's weights touch every ReLU and rarely avoid a kink; the rest must be checked */
    if (checked < 24)
        fail_msg("only %d elements were checked (%d crossed a kink)", checked, skipped);
    cmr_compact_video_cache_free(cache);
    free(grads);
}

static void test_finite_differences(void **state)
{
    fixture x;
    fixture_open(&x, state);
    finite_differences(&x.cfg, x.params, x.video, x.batch, x.d_emb);
    fixture_close(&x);
}

/* ---- inference, batch of 1, cache reuse ------------------------------------------------------------ */

static void test_inference_and_cache(void **state)
{
    fixture x;
    fixture_open(&x, state);
    const int B = x.batch, E = x.cfg.embed_dim;
    float *train = zeros((size_t)B * E), *infer = zeros((size_t)B * E), *one = zeros((size_t)E);
    cmr_compact_video_cache *cache = NULL;
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, B, train, &cache));
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, B, infer, NULL));
    /* the same arithmetic in the same order: identical */
    assert_memory_equal(train, infer, (size_t)B * E * sizeof *train);
    /* every study alone (smaller chunks: allow rounding) */
    for (int b = 0; b < B; b++) {
        ok(cmr_compact_video_forward(&x.cfg, x.params, x.video + (size_t)b * x.video_per, 1, one, NULL));
        expect_close("batch of 1 (inference)", one, train + (size_t)b * E, (size_t)E, 1e-5);
    }

    /* Reuse: a second forward keeps the cache; a smaller batch (here the
     * last study alone) then a backward gives that study's gradients. */
    cmr_compact_video_cache *first = cache;
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, B, infer, &cache));
    assert_ptr_equal(cache, first);
    assert_memory_equal(train, infer, (size_t)B * E * sizeof *train);
    const float *last = x.video + (size_t)(B - 1) * x.video_per, *d_last = x.d_emb + (size_t)(B - 1) * E;
    ok(cmr_compact_video_forward(&x.cfg, x.params, last, 1, one, &cache));
    assert_ptr_equal(cache, first);
    expect_close("batch of 1 (training)", one, train + (size_t)(B - 1) * E, (size_t)E, 1e-5);
    float *g_reused = zeros(x.layout.total), *g_fresh = zeros(x.layout.total);
    ok(cmr_compact_video_backward(&x.cfg, x.params, cache, d_last, g_reused));
    cmr_compact_video_cache *fresh = NULL;
    ok(cmr_compact_video_forward(&x.cfg, x.params, last, 1, one, &fresh));
    ok(cmr_compact_video_backward(&x.cfg, x.params, fresh, d_last, g_fresh));
    expect_close("gradients, reused cache", g_reused, g_fresh, x.layout.total, 1e-6);
    /* and growing back to the full batch still matches PyTorch */
    memset(g_reused, 0, x.layout.total * sizeof *g_reused);
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, B, infer, &cache));
    ok(cmr_compact_video_backward(&x.cfg, x.params, cache, x.d_emb, g_reused));
    check_grads(&x, g_reused, 1);
    cmr_compact_video_cache_free(fresh);
    cmr_compact_video_cache_free(cache);
    free(g_reused);
    free(g_fresh);
    free(train);
    free(infer);
    free(one);
    fixture_close(&x);
}

/* An inference scratch (cmr_compact_video_infer) gives what transient
 * buffers give, bit for bit, call after call; other parameters in the same
 * scratch are permuted afresh, and a training cache cannot come from it. */
static void test_inference_scratch(void **state)
{
    fixture x;
    fixture_open(&x, state);
    const int B = x.batch, E = x.cfg.embed_dim;
    float *want = zeros((size_t)B * E), *got = zeros((size_t)B * E), *d = zeros(x.layout.total);
    cmr_compact_video_cache *scratch = NULL;
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, B, want, NULL));
    for (int round = 0; round < 3; round++) {
        memset(got, 0, (size_t)B * E * sizeof *got);
        ok(cmr_compact_video_infer(&x.cfg, x.params, x.video, B, got, &scratch));
        assert_memory_equal(want, got, (size_t)B * E * sizeof *got);
    }
    /* The same scratch, other weights (another array: a fine-tune's). */
    float *other = zeros(x.layout.total);
    for (size_t i = 0; i < x.layout.total; i++)
        other[i] = -x.params[i];
    ok(cmr_compact_video_forward(&x.cfg, other, x.video, B, want, NULL));
    ok(cmr_compact_video_infer(&x.cfg, other, x.video, B, got, &scratch));
    assert_memory_equal(want, got, (size_t)B * E * sizeof *got);
    ok(cmr_compact_video_infer(&x.cfg, x.params, x.video, 1, got, &scratch));
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, 1, want, NULL));
    assert_memory_equal(want, got, (size_t)E * sizeof *got);
    assert_int_equal(cmr_compact_video_backward(&x.cfg, x.params, scratch, x.d_emb, d), CMR_EINVAL);
    assert_int_equal(cmr_compact_video_infer(&x.cfg, x.params, x.video, 1, got, NULL), CMR_EINVAL);
    cmr_compact_video_cache_free(scratch);
    free(other);
    free(want);
    free(got);
    free(d);
    fixture_close(&x);
}

/* ---- the default configuration --------------------------------------------------------------------- */

/* He-normal weights, small biases: activations of realistic scale. */
static float *random_params(const cmr_compact_config *c, uint64_t seed)
{
    cmr_compact_layout l;
    cmr_compact_layout_of(c, &l);
    float *p = zeros(l.total);
    for (size_t i = 0; i < l.n_tensors; i++) {
        const cmr_compact_tensor *t = &l.tensors[i];
        size_t fan_in = t->ndim > 1 ? t->count / (size_t)t->shape[0] : 0;
        for (size_t j = 0; j < t->count; j++)
            p[t->offset + j] = fan_in ? test_gauss(&seed) * (float)sqrt(2.0 / fan_in) : 0.1f * test_gauss(&seed);
    }
    return p;
}

static float *random_floats(size_t n, uint64_t seed)
{
    float *p = zeros(n);
    for (size_t i = 0; i < n; i++)
        p[i] = test_gauss(&seed);
    return p;
}

static void test_default_config(void **state)
{
    (void)state;
    cmr_compact_config c;
    cmr_compact_config_default(&c);
    const int B = 2;
    cmr_compact_layout l;
    cmr_compact_layout_of(&c, &l);
    float *params = random_params(&c, 1);
    float *video = random_floats((size_t)B * c.frames * c.channels * c.size * c.size, 2);
    float *d_emb = random_floats((size_t)B * c.embed_dim, 3);
    float *emb = zeros((size_t)B * c.embed_dim), *grads = zeros(l.total);
    cmr_compact_video_cache *cache = NULL;
    ok(cmr_compact_video_forward(&c, params, video, B, emb, &cache));
    size_t rows, cols;
    assert_non_null(cmr_compact_video_probe(cache, "video.conv5", &rows, &cols));
    assert_int_equal(rows, (size_t)B * c.frames * 4 * 4);
    assert_int_equal(cols, 128);
    assert_non_null(cmr_compact_video_probe(cache, "video.pooled", &rows, &cols));
    assert_int_equal(c.spatial_max, 1); /* new models pool by the spatial mean and max */
    assert_int_equal(rows * cols, (size_t)B * 6 * 128 * 2);
    ok(cmr_compact_video_backward(&c, params, cache, d_emb, grads));
    for (size_t i = 0; i < (size_t)B * c.embed_dim; i++)
        assert_true(isfinite(emb[i]));
    for (size_t i = 0; i < l.n_tensors; i++) {
        const cmr_compact_tensor *t = &l.tensors[i];
        double s = 0;
        for (size_t j = 0; j < t->count; j++)
            s += fabs(grads[t->offset + j]);
        assert_true(isfinite(s));
        if (!strncmp(t->name, "video.", 6) ? !(s > 0) : s != 0)
            fail_msg("%s: gradient sum %g", t->name, s);
    }
    cmr_compact_video_cache_free(cache);
    finite_differences(&c, params, video, B, d_emb);
    free(params);
    free(video);
    free(d_emb);
    free(emb);
    free(grads);
}

/* ---- errors ---------------------------------------------------------------------------------------- */

static void test_errors(void **state)
{
    fixture x;
    fixture_open(&x, state);
    float emb[64], *grads = zeros(x.layout.total);
    cmr_compact_video_cache *cache = NULL;
    assert_int_equal(cmr_compact_video_forward(&x.cfg, x.params, x.video, 0, emb, &cache), CMR_EINVAL);
    assert_int_equal(cmr_compact_video_forward(&x.cfg, NULL, x.video, 1, emb, &cache), CMR_EINVAL);
    assert_null(cache);
    cmr_compact_config bad = x.cfg;
    bad.frames = 6; /* not a multiple of 4 */
    assert_int_equal(cmr_compact_video_forward(&bad, x.params, x.video, 1, emb, NULL), CMR_EINVAL);
    assert_int_equal(cmr_compact_video_backward(&x.cfg, x.params, NULL, x.d_emb, grads), CMR_EINVAL);
    ok(cmr_compact_video_forward(&x.cfg, x.params, x.video, 1, emb, &cache));
    bad = x.cfg;
    bad.video_hidden = 8; /* not the configuration of the cached forward */
    assert_int_equal(cmr_compact_video_backward(&bad, x.params, cache, x.d_emb, grads), CMR_EINVAL);
    cmr_compact_video_cache_free(cache);
    cmr_compact_video_cache_free(NULL);
    free(grads);
    fixture_close(&x);
}

/* ---- benchmark (not a test) ------------------------------------------------------------------------ */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t heap_bytes(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

static int bench(int B)
{
    cmr_compact_config c;
    cmr_compact_config_default(&c);
    cmr_compact_layout l;
    cmr_compact_layout_of(&c, &l);
    float *params = random_params(&c, 1), *video = random_floats((size_t)B * c.frames * c.size * c.size, 2);
    float *d_emb = random_floats((size_t)B * c.embed_dim, 3), *emb = zeros((size_t)B * c.embed_dim);
    float *grads = zeros(l.total);
    cmr_compact_video_cache *cache = NULL;
    /* best of several: the machine may be shared */
    const int reps = 7;
    ok(cmr_compact_video_forward(&c, params, video, B, emb, NULL)); /* warm-up */
    double t_inf = INFINITY, tf = INFINITY, tb = INFINITY;
    for (int r = 0; r < reps; r++) {
        double a = now();
        ok(cmr_compact_video_forward(&c, params, video, B, emb, NULL));
        t_inf = fmin(t_inf, now() - a);
    }
    size_t before = heap_bytes();
    ok(cmr_compact_video_forward(&c, params, video, B, emb, &cache));
    ok(cmr_compact_video_backward(&c, params, cache, d_emb, grads));
    size_t cache_bytes = heap_bytes() - before;
    for (int r = 0; r < reps; r++) {
        double a = now();
        ok(cmr_compact_video_forward(&c, params, video, B, emb, &cache));
        double b = now();
        ok(cmr_compact_video_backward(&c, params, cache, d_emb, grads));
        tf = fmin(tf, b - a);
        tb = fmin(tb, now() - b);
    }
    printf("compact video tower, default config, B=%d, %d threads (best of %d): inference forward %.1f ms, "
           "training forward %.1f ms, backward %.1f ms, forward+backward %.1f ms; training cache %.1f MB\n",
           B, omp_get_max_threads(), reps, t_inf * 1e3, tf * 1e3, tb * 1e3, (tf + tb) * 1e3,
           cache_bytes / 1048576.0);
    cmr_compact_video_cache_free(cache);
    free(params);
    free(video);
    free(d_emb);
    free(emb);
    free(grads);
    return 0;
}

int main(void)
{
    const char *b = getenv("CMR_BENCH_COMPACT_VIDEO");
    if (b && atoi(b) > 0)
        return bench(atoi(b));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_prestate(test_parity, fixture_mean),
        cmocka_unit_test_prestate(test_parity, fixture_max),
        cmocka_unit_test_prestate(test_finite_differences, fixture_mean),
        cmocka_unit_test_prestate(test_finite_differences, fixture_max),
        cmocka_unit_test_prestate(test_inference_and_cache, fixture_mean),
        cmocka_unit_test_prestate(test_inference_and_cache, fixture_max),
        cmocka_unit_test_prestate(test_inference_scratch, fixture_mean),
        cmocka_unit_test_prestate(test_inference_scratch, fixture_max),
        cmocka_unit_test(test_default_config),
        cmocka_unit_test_prestate(test_errors, fixture_mean),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
