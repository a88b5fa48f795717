/* bench-encode: a model's encoding time per study and per text query, after
 * it is loaded (issue 6's cost bars: 50 ms and 2 ms).
 *
 *   bench-encode MODEL_DIR [--repeat R] [--json]
 *
 * The study is a random tensor of the model's input spec (the encoders'
 * time does not depend on the pixels); the texts are short queries and a
 * full impression.  Medians of R rounds, every text encoded once per round.
 * For an ensemble, its first member is timed in the same process as the
 * baseline, and the ratio reported (docs/benchmarks.md). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_timing.h"
#include "cmr_model.h"

static const char *const texts[] = {
    "hypertrophic cardiomyopathy",
    "no late gadolinium enhancement",
    "apical hypertrophy with LGE",
    ("Dilated left ventricle with severely reduced systolic function. Mid-wall septal late gadolinium "
     "enhancement. Findings consistent with non-ischemic dilated cardiomyopathy. No thrombus."),
};
#define N_TEXTS (sizeof texts / sizeof *texts)

/* Median seconds per study and per text over `repeat` rounds. */
static int time_model(cmr_model *m, int repeat, double *study_s, double *text_s)
{
    const cmr_model_input *in = cmr_model_input_spec(m);
    size_t n = (size_t)in->frames * in->channels * in->size * in->size;
    float *video = malloc(n * sizeof *video), *emb = malloc(cmr_model_dim(m) * sizeof *emb);
    double *ts = malloc((size_t)repeat * sizeof *ts), *tt = malloc((size_t)repeat * sizeof *tt);
    int rc = 0;
    if (!video || !emb || !ts || !tt) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    uint64_t s = 1;
    for (size_t i = 0; i < n; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        video[i] = (float)((s >> 40) & 0xffff) / 65535.0f * 4.0f - 2.0f;
    }
    for (int r = -1; r < repeat && !rc; r++) { /* round -1 warms up */
        double t0 = bench_now();
        rc = cmr_model_encode_study(m, video, in->frames, emb);
        double t1 = bench_now();
        for (size_t i = 0; i < N_TEXTS && !rc; i++)
            rc = cmr_model_encode_text(m, texts[i], emb);
        double t2 = bench_now();
        if (r >= 0) {
            ts[r] = t1 - t0;
            tt[r] = (t2 - t1) / (double)N_TEXTS;
        }
    }
    if (!rc) {
        *study_s = bench_median(ts, repeat);
        *text_s = bench_median(tt, repeat);
    }
done:
    free(video);
    free(emb);
    free(ts);
    free(tt);
    return rc;
}

int main(int argc, char **argv)
{
    const char *dir = NULL;
    int repeat = 50, json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--repeat") && i + 1 < argc)
            repeat = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json"))
            json = 1;
        else if (argv[i][0] != '-' && !dir)
            dir = argv[i];
        else
            dir = NULL, i = argc;
    }
    if (!dir || repeat < 1) {
        fprintf(stderr, "usage: bench-encode MODEL_DIR [--repeat R] [--json]\n");
        return 1;
    }
    cmr_blas_init();
    cmr_model *m = NULL, *base = NULL;
    char base_dir[4096];
    int rc = cmr_model_open(dir, &m);
    if (!rc && cmr_model_member_count(m)) {
        snprintf(base_dir, sizeof base_dir, "%s/%s", dir, cmr_model_member_name(m, 0));
        rc = cmr_model_open(base_dir, &base);
    }
    double study = 0, text = 0, base_study = 0, base_text = 0;
    if (!rc)
        rc = time_model(m, repeat, &study, &text);
    if (!rc && base)
        rc = time_model(base, repeat, &base_study, &base_text);
    if (rc) {
        fprintf(stderr, "bench-encode: %s: %s\n", dir, cmr_errmsg());
        cmr_model_close(m);
        cmr_model_close(base);
        return 2;
    }
    size_t members = cmr_model_member_count(m);
    if (json) {
        printf("{\"model\": \"%s\", \"members\": %zu, \"repeat\": %d, \"study_ms\": %.3f, \"text_ms\": %.4f", dir,
               members, repeat, 1e3 * study, 1e3 * text);
        if (base)
            printf(", \"member_study_ms\": %.3f, \"member_text_ms\": %.4f, \"study_ratio\": %.2f, \"text_ratio\": %.2f",
                   1e3 * base_study, 1e3 * base_text, study / base_study, text / base_text);
        printf("}\n");
    } else {
        printf("%s (%zu members): %.2f ms per study, %.3f ms per text (medians of %d)\n", dir, members, 1e3 * study,
               1e3 * text, repeat);
        if (base)
            printf("its first member alone: %.2f ms per study, %.3f ms per text; ratio %.2f and %.2f\n",
                   1e3 * base_study, 1e3 * base_text, study / base_study, text / base_text);
    }
    cmr_model_close(m);
    cmr_model_close(base);
    return 0;
}
