/* bench-ingest: time the indexer's scan + classification + tensor building
 * (no embedding) over an archive (docs/benchmarks.md, "Ingest").
 *
 *   bench-ingest ARCHIVE [--threads N] [--json]
 *
 * Phase 1: cmr_archive_scan with N threads (default 2); the scan classifies
 * every study.  Phase 2: the CMR-CLIP input tensor of every study that has a
 * cine series, built by N pthread workers, each reusing one buffer through
 * cmr_study_tensor_into.  Prints studies, series, seconds per phase and
 * studies/s overall. */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmr_indexer.h"

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static int has_cine(const cmr_study *st)
{
    for (size_t j = 0; j < st->n_series; j++) {
        cmr_series_label l = st->series[j].label;
        if (l >= CMR_SERIES_CINE_SAX && l <= CMR_SERIES_CINE_4CH)
            return 1;
    }
    return 0;
}

typedef struct work {
    const cmr_archive *a;
    const cmr_input_spec *spec;
    const size_t *todo;  /* study indexes */
    size_t n_todo;
    size_t next;         /* under lock */
    pthread_mutex_t lock;
} work;

typedef struct worker_result {
    size_t built, failed;
    int alloc_failed;
} worker_result;

typedef struct worker_arg {
    work *w;
    worker_result r;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *arg = p;
    work *w = arg->w;
    float *buf = malloc(cmr_tensor_values(w->spec) * sizeof *buf);
    if (!buf) {
        arg->r.alloc_failed = 1;
        return NULL;
    }
    for (;;) {
        pthread_mutex_lock(&w->lock);
        size_t k = w->next < w->n_todo ? w->next++ : w->n_todo;
        pthread_mutex_unlock(&w->lock);
        if (k == w->n_todo)
            break;
        cmr_tensor_info info;
        if (cmr_study_tensor_into(&w->a->studies[w->todo[k]], w->spec, buf, &info) == 0)
            arg->r.built++;
        else
            arg->r.failed++;
    }
    free(buf);
    return NULL;
}

int main(int argc, char **argv)
{
    const char *root = NULL;
    unsigned threads = 2;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
            int t = atoi(argv[++i]);
            threads = t > 0 ? (unsigned)t : 1;
        } else if (!strcmp(argv[i], "--json")) {
            json = 1;
        } else if (!strcmp(argv[i], "--help")) {
            printf("usage: bench-ingest ARCHIVE [--threads N] [--json]\n");
            return 0;
        } else if (!root && argv[i][0] != '-') {
            root = argv[i];
        } else {
            fprintf(stderr, "bench-ingest: unexpected argument %s\n", argv[i]);
            return 2;
        }
    }
    if (!root) {
        fprintf(stderr, "usage: bench-ingest ARCHIVE [--threads N] [--json]\n");
        return 2;
    }

    double t0 = now_s();
    cmr_scan_options so = {.threads = threads};
    cmr_archive *a;
    if (cmr_archive_scan(&root, 1, &so, &a) != 0) {
        fprintf(stderr, "bench-ingest: %s\n", cmr_errmsg());
        return 2;
    }
    double t1 = now_s();

    size_t n_series = 0, n_images = 0;
    size_t *todo = malloc((a->n_studies ? a->n_studies : 1) * sizeof *todo);
    if (!todo) {
        fprintf(stderr, "bench-ingest: out of memory\n");
        return 2;
    }
    size_t n_todo = 0;
    for (size_t i = 0; i < a->n_studies; i++) {
        n_series += a->studies[i].n_series;
        for (size_t j = 0; j < a->studies[i].n_series; j++)
            n_images += a->studies[i].series[j].n_images;
        if (has_cine(&a->studies[i]))
            todo[n_todo++] = i;
    }

    cmr_input_spec spec;
    cmr_input_spec_cmrclip(&spec);
    work w = {.a = a, .spec = &spec, .todo = todo, .n_todo = n_todo, .next = 0};
    pthread_mutex_init(&w.lock, NULL);
    worker_arg *args = calloc(threads, sizeof *args);
    pthread_t *tid = calloc(threads, sizeof *tid);
    if (!args || !tid) {
        fprintf(stderr, "bench-ingest: out of memory\n");
        return 2;
    }
    double t2 = now_s();
    unsigned started = 0;
    for (unsigned t = 0; t < threads; t++) {
        args[t].w = &w;
        if (pthread_create(&tid[t], NULL, worker, &args[t]) != 0)
            break;
        started++;
    }
    if (started == 0)
        worker(&args[0]);
    for (unsigned t = 0; t < started; t++)
        pthread_join(tid[t], NULL);
    double t3 = now_s();

    size_t built = 0, failed = 0;
    int alloc_failed = 0;
    for (unsigned t = 0; t < threads; t++) {
        built += args[t].r.built;
        failed += args[t].r.failed;
        alloc_failed |= args[t].r.alloc_failed;
    }
    if (alloc_failed) {
        fprintf(stderr, "bench-ingest: out of memory for a tensor buffer\n");
        return 2;
    }
    double scan_s = t1 - t0, tensor_s = t3 - t2, total_s = scan_s + tensor_s;
    double rate = total_s > 0 ? (double)a->n_studies / total_s : 0;
    if (json)
        printf("{\"studies\": %zu, \"series\": %zu, \"images\": %zu, \"files\": %zu, "
               "\"with_cine\": %zu, \"tensors\": %zu, \"tensor_failures\": %zu, "
               "\"threads\": %u, \"scan_s\": %.3f, \"tensor_s\": %.3f, \"total_s\": %.3f, "
               "\"studies_per_s\": %.2f}\n",
               a->n_studies, n_series, n_images, a->n_files_seen, n_todo, built, failed, threads,
               scan_s, tensor_s, total_s, rate);
    else
        printf("studies %zu  series %zu  images %zu  files %zu  with cine %zu  tensors %zu"
               "  failed %zu\nthreads %u  scan %.3f s  tensors %.3f s  total %.3f s"
               "  %.2f studies/s\n",
               a->n_studies, n_series, n_images, a->n_files_seen, n_todo, built, failed, threads,
               scan_s, tensor_s, total_s, rate);
    pthread_mutex_destroy(&w.lock);
    free(args);
    free(tid);
    free(todo);
    cmr_archive_free(a);
    return 0;
}
