/* bench-model: the encoders' speed and memory on a full-size model.
 *
 *   bench-model DIR [--repeat R] [--json] [--no-video]
 *
 * DIR is written by `bench/model_torch.py make DIR` (random full-size
 * CMR-CLIP weights plus the inputs: video.f32, ids64.i32, ids256.i32), so
 * that bench/model_bench.sh can run PyTorch on exactly the same weights and
 * inputs.  Measured here, in one process: OpenBLAS sgemm GFLOP/s at the
 * shapes the video tower runs (the yardstick of issue 5's bar), the AMX
 * kernel's own rate at the qkv shape (docs/gemm.md), seconds per study
 * (median of R), the rate that implies over the tower's matrix products,
 * the text tower on 64 and 256 tokens (median of 20), and peak resident
 * memory.  Names the kernel the linear layers ran on (CMR_GEMM chooses).
 * --no-video skips the study (a minute) to time the text tower.  Writes
 * DIR/c_video_embed.f32 and, when DIR/torch_video_embed.f32 exists, reports
 * the cosine between the two embeddings. */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_timing.h"
#include "cmr_model.h"
#include "gemm_amx.h"

char *openblas_get_corename(void);
int openblas_get_num_threads(void);

static void *read_all(const char *dir, const char *name, size_t expect)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "bench-model: %s: cannot open (run bench/model_torch.py make %s)\n", path, dir);
        exit(2);
    }
    void *p = malloc(expect);
    size_t got = p ? fread(p, 1, expect, f) : 0;
    fclose(f);
    if (got != expect) {
        fprintf(stderr, "bench-model: %s: %zu bytes, expected %zu\n", path, got, expect);
        exit(2);
    }
    return p;
}

/* sgemm at y[m][n] = x[m][k] · w[n][k]^T, the linear layers' form. */
static double sgemm_gflops(int m, int n, int k)
{
    float *x = malloc(sizeof(float) * (size_t)m * (size_t)k), *w = malloc(sizeof(float) * (size_t)n * (size_t)k),
          *y = malloc(sizeof(float) * (size_t)m * (size_t)n);
    for (size_t i = 0; i < (size_t)m * (size_t)k; i++)
        x[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++)
        w[i] = (float)(i % 7) * 0.01f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, x, k, w, k, 0, y, n);
    double t[5];
    for (int r = 0; r < 5; r++) {
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1, x, k, w, k, 0, y, n);
        t[r] = bench_now() - t0;
    }
    free(x);
    free(w);
    free(y);
    return 2.0 * m * n * k / bench_median(t, 5) / 1e9;
}

/* The AMX kernel at the same shape, on the OpenMP threads taking pieces as
 * cmr_linear does (sgemm runs on as many OpenBLAS threads), float32 flops
 * counted; NAN when the kernel is not available. */
static double amx_gflops(int m, int n, int k)
{
    if (!cmr_gemm_amx_ready())
        return NAN;
    float *x = malloc(sizeof(float) * (size_t)m * (size_t)k), *w = malloc(sizeof(float) * (size_t)n * (size_t)k),
          *y = malloc(sizeof(float) * (size_t)m * (size_t)n);
    for (size_t i = 0; i < (size_t)m * (size_t)k; i++)
        x[i] = (float)(i % 13) * 0.01f;
    for (size_t i = 0; i < (size_t)n * (size_t)k; i++)
        w[i] = (float)(i % 7) * 0.01f;
    double t[6];
    int failed = 0;
    for (int r = 0; r < 6; r++) {
        cmr_gemm_share share = {0};
        double t0 = bench_now();
#pragma omp parallel reduction(+ : failed)
        failed += cmr_gemm_amx_team((size_t)m, (size_t)n, (size_t)k, x, (size_t)k, w, (size_t)k, y, (size_t)n, 0,
                                    &share) < 0;
        t[r] = bench_now() - t0;
    }
    free(x);
    free(w);
    free(y);
    /* The first run allocates the buffers and the tile state. */
    return failed ? NAN : 2.0 * m * n * k / bench_median(t + 1, 5) / 1e9;
}

int main(int argc, char **argv)
{
    /* As cmrsearch does: the BLAS kernels for this CPU before anything is
     * measured, so the sgemm rate is the one the towers run at. */
    cmr_blas_init();
    const char *dir = NULL;
    int repeat = 3, json = 0, run_video = 1;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (!strcmp(argv[i], "--no-video"))
            run_video = 0;
        else if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: bench-model DIR [--repeat R] [--json] [--no-video]\n");
            return 0;
        } else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else {
            fprintf(stderr, "bench-model: unknown argument %s\n", argv[i]);
            return 1;
        }
    }
    if (!dir || repeat < 1) {
        fprintf(stderr, "usage: bench-model DIR [--repeat R] [--json] [--no-video]\n");
        return 1;
    }
    /* The tower's dominant products: qkv (T x 768 x 2304) and the MLP chunk.
     * The AMX kernel first: OpenBLAS's threads spin for a while after each
     * sgemm and would take the second core from it. */
    const int T = 1 + 64 * 196;
    double amx_qkv = amx_gflops(T, 2304, 768);
    double gemm_qkv = sgemm_gflops(T, 2304, 768), gemm_mlp = sgemm_gflops(1024, 3072, 768),
           gemm_ref = sgemm_gflops(3136, 768, 768);

    double t0 = bench_now();
    cmr_model *m = NULL;
    int rc = cmr_model_open(dir, &m);
    if (rc < 0) {
        fprintf(stderr, "bench-model: %s: %s\n", cmr_strerror(rc), cmr_errmsg());
        return 2;
    }
    double open_s = bench_now() - t0;
    const cmr_model_input *in = cmr_model_input_spec(m);
    size_t video_floats = (size_t)in->frames * in->channels * in->size * in->size;
    float *video = read_all(dir, "video.f32", video_floats * sizeof(float));
    unsigned dim = cmr_model_dim(m);
    float *emb = malloc(dim * sizeof *emb);
    double *vt = calloc((size_t)repeat, sizeof *vt);
    for (int r = 0; r < repeat && run_video; r++) {
        t0 = bench_now();
        if ((rc = cmr_model_encode_study(m, video, in->frames, emb)) < 0) {
            fprintf(stderr, "bench-model: encode_study: %s\n", cmr_errmsg());
            return 2;
        }
        vt[r] = bench_now() - t0;
    }
    double video_s = run_video ? bench_median(vt, repeat) : NAN;
    char path[4096];
    snprintf(path, sizeof path, "%s/c_video_embed.f32", dir);
    FILE *f = run_video ? fopen(path, "wb") : NULL;
    if (f) {
        fwrite(emb, sizeof *emb, dim, f);
        fclose(f);
    }
    double cosine = NAN;
    snprintf(path, sizeof path, "%s/torch_video_embed.f32", dir);
    if (run_video && (f = fopen(path, "rb"))) {
        float *ref = malloc(dim * sizeof *ref);
        if (fread(ref, sizeof *ref, dim, f) == dim) {
            cosine = 0;
            for (unsigned i = 0; i < dim; i++)
                cosine += (double)ref[i] * emb[i];
        }
        free(ref);
        fclose(f);
    }
    /* Matrix products of the tower: 12 blocks x 32 T D^2 + the patch embedding. */
    double flops = 12.0 * 32.0 * T * 768.0 * 768.0 + 2.0 * (T - 1) * 768.0 * 768.0;
    double text_ms[2];
    const int lens[2] = {64, 256};
    for (int l = 0; l < 2; l++) {
        char name[32];
        snprintf(name, sizeof name, "ids%d.i32", lens[l]);
        int32_t *ids = read_all(dir, name, (size_t)lens[l] * sizeof *ids);
        double tt[20];
        cmr_model_encode_tokens(m, ids, (size_t)lens[l], emb);
        for (int r = 0; r < 20; r++) {
            t0 = bench_now();
            if (cmr_model_encode_tokens(m, ids, (size_t)lens[l], emb) < 0) {
                fprintf(stderr, "bench-model: encode_tokens: %s\n", cmr_errmsg());
                return 2;
            }
            tt[r] = bench_now() - t0;
        }
        text_ms[l] = 1000 * bench_median(tt, 20);
        free(ids);
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double rss_mb = (double)ru.ru_maxrss / 1024.0;
    /* The sgemm yardstick counts as many flops as the tower: the AMX
     * kernel's three bf16 products per float product are not counted. */
    double video_gflops = flops / video_s / 1e9;
    if (json) {
        printf("{\"gemm_kernel\":\"%s\",\"corename\":\"%s\",\"blas_threads\":%d,"
               "\"sgemm_gflops\":{\"qkv\":%.1f,\"mlp\":%.1f,\"ref3136\":%.1f},\"amx_gflops\":{\"qkv\":",
               cmr_gemm_kernel(), openblas_get_corename(), openblas_get_num_threads(), gemm_qkv, gemm_mlp, gemm_ref);
        if (isnan(amx_qkv))
            printf("null},");
        else
            printf("%.1f},", amx_qkv);
        printf("\"open_s\":%.3f,\"video_s\":[", open_s);
        for (int r = 0; r < repeat && run_video; r++)
            printf("%s%.3f", r ? "," : "", vt[r]);
        if (run_video)
            printf("],\"video_median_s\":%.3f,\"video_gflops\":%.1f,", video_s, video_gflops);
        else
            printf("],\"video_median_s\":null,\"video_gflops\":null,");
        printf("\"text64_median_ms\":%.2f,\"text256_median_ms\":%.2f,\"peak_rss_mb\":%.0f,\"cosine_vs_torch\":",
               text_ms[0], text_ms[1], rss_mb);
        if (isnan(cosine))
            printf("null}\n");
        else
            printf("%.6f}\n", cosine);
    } else {
        printf("GEMM kernel %s; OpenBLAS core %s, %d threads; sgemm %.1f GFLOP/s (qkv shape), %.1f (MLP chunk), "
               "%.1f (3136x768x768)",
               cmr_gemm_kernel(), openblas_get_corename(), openblas_get_num_threads(), gemm_qkv, gemm_mlp, gemm_ref);
        if (!isnan(amx_qkv))
            printf("; AMX kernel %.1f GFLOP/s (qkv shape, float32 flops)", amx_qkv);
        printf("\n");
        if (run_video)
            printf("open %.2f s; video %.2f s/study (median of %d), %.1f GFLOP/s = %.0f%% of the qkv-shape sgemm "
                   "rate\n",
                   open_s, video_s, repeat, video_gflops, 100 * video_gflops / gemm_qkv);
        else
            printf("open %.2f s; video not run (--no-video)\n", open_s);
        printf("text 64 tokens %.1f ms, 256 tokens %.1f ms; peak RSS %.0f MB", text_ms[0], text_ms[1], rss_mb);
        if (!isnan(cosine))
            printf("; cosine to PyTorch's embedding %.6f", cosine);
        printf("\n");
    }
    free(vt);
    free(emb);
    free(video);
    cmr_model_close(m);
    return 0;
}
