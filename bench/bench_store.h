/* Private to bench-store (bench_store*.c): options, the collection, the
 * measurements' results and the functions the files share. */
#ifndef CMR_BENCH_STORE_H
#define CMR_BENCH_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_store.h"
#include "synth.h"

#define K 10

typedef struct options {
    uint64_t n;
    unsigned dim;
    unsigned queries;
    uint64_t seed;
    const char *db;
    int json;
    int keep;
    int reuse;
    unsigned batch;
    unsigned rounds;
    unsigned exact_queries;
    double filter_share;
    int sweep;           /* also time raw FAISS over a range of nprobe */
    unsigned nprobe;     /* store config at creation; 0: the store's choice */
    const char *factory; /* idem */
} options;

/* ---- bench_store.c: small utilities ---------------------------------------------------------- */

typedef struct proc_memory {
    long rss_kb, hwm_kb, anon_kb, file_kb;
} proc_memory;

extern int show_progress;
double now(void);
void progress(const char *fmt, ...);
void progress_done(void);
void store_progress(void *user, const char *phase, uint64_t done, uint64_t total);
proc_memory read_memory(void);
double percentile(double *v, size_t n, double p);

/* ---- bench_store_data.c: the collection, import, filter, ground truth ------------------------ */

typedef struct case_meta {
    int32_t date;
    uint8_t site;
} case_meta;

typedef struct dataset {
    uint64_t n;
    unsigned dim;
    float *image;        /* n x dim, unit rows */
    case_meta *meta;
    char (*uid)[48];
} dataset;

typedef struct import_result {
    int rc;
    char error[1024];
    double generate_s, put_s, commit_s, flush_s, close_s;
    long hwm_kb;
    uint64_t cases;
} import_result;

typedef struct filter_spec {
    unsigned site;
    int32_t date_from, date_to;
    uint8_t *mask; /* per row */
    uint64_t matching;
} filter_spec;

typedef struct best {
    float score[K];
    uint32_t row[K];
    int n, worst;
} best;

typedef struct id_row {
    uint64_t id;
    uint32_t row;
} id_row;

synth_params params_for(const options *o, unsigned stream);
void dataset_free(dataset *d);
int dataset_generate(const options *o, dataset *d);
int queries_generate(const options *o, float **out);
int run_import(const options *o, import_result *res, uint64_t *id_of_row);
int filter_choose(const dataset *d, double share, filter_spec *f);
int ground_truth(const dataset *d, const float *queries, unsigned nq, const uint8_t *mask, best *all, best *filtered);
int cmp_id_row(const void *a, const void *b);
double recall(const uint64_t *ids, size_t n_ids, const best *truth, const id_row *map, uint64_t n);

/* ---- bench_store_measure.c: measurements ----------------------------------------------------- */

typedef struct latency {
    double *us;
    size_t n;
} latency;

#define MAX_SWEEP 16

typedef struct sweep_point {
    unsigned nprobe;
    double recall, p50_us, p99_us;
} sweep_point;

typedef struct results {
    int imported;
    import_result import;
    double generate_parent_s, ground_truth_s;
    double open_ms, first_search_ms, first_filtered_ms, raw_load_ms;
    proc_memory before_open, after_search;
    cmr_store_stats stats;
    double recall_unf, recall_filt;
    latency ours_unf, raw_unf, ours_filt, raw_filt;
    double same_ids_as_raw;     /* unfiltered queries where FAISS gave our ids */
    double filt_exact_share;    /* filtered queries answered by an exact subset scan */
    unsigned filt_nprobe;
    uint64_t filt_matching_store;
    latency exact_unf, exact_filt;
    double exact_agree_unf, exact_agree_filt;
    char filter_desc[256];
    filter_spec filter;
    char openblas[256];
    sweep_point sweep[MAX_SWEEP];
    int n_sweep;
} results;

typedef struct run_ctx {
    const options *o;
    const dataset *d;
    const float *queries;
    const best *gt_all, *gt_filt;
    uint64_t *id_of_row; /* from the import, or NULL */
} run_ctx;

int measure(const run_ctx *c, results *r);

#endif
