/* bench-store: the case store benchmark (docs/benchmarks.md, "Case store").
 *
 * One invocation measures one store size N:
 *  1. Import, in a child process so that its memory peak and the pages it
 *     touched are not charged to searching: N synthetic cases (bench/synth.h)
 *     put in transactions of --batch cases, then cmr_store_flush, which
 *     builds both indexes.  Generating the cases is timed apart.
 *  2. Here: the same N image vectors regenerated in memory (the generator
 *     is deterministic), held-out queries drawn from another stream of the
 *     same clusters, and the exact top-10 of each by a blocked sgemm scan,
 *     with and without a filter matching ~1% of cases: the ground truth.
 *  3. Open the store, first search (loads the index), recall@10 and latency
 *     of cmr_store_search; then the same queries through FAISS directly on
 *     the store's own index file, interleaved query by query with ours so
 *     that machine noise falls on both alike; our overhead is the ratio.
 */
#include <dirent.h>
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_io_c.h>
#include <jansson.h>

#include "cmr_error.h"
#include "cmr_faiss_ext.h"
#include "cmr_store.h"
#include "synth.h"

#define PROGRAM "bench-store"
#define K 10
#define MAX_CASES 50000000ull
#define GT_BLOCK 8192 /* database rows per sgemm block */
/* store/index.c: a 128-byte header ("CMRIDX01" ... payload_len at byte 48,
 * little-endian), then the faiss_write_index bytes. */
#define INDEX_HEADER_BYTES 128
#define INDEX_MAGIC "CMRIDX01"

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

/* ---- small utilities ------------------------------------------------------------------- */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int show_progress;

static void progress(const char *fmt, ...)
{
    if (!show_progress)
        return;
    va_list ap;
    va_start(ap, fmt);
    fputc('\r', stderr);
    vfprintf(stderr, fmt, ap);
    fputs("\033[K", stderr);
    va_end(ap);
}

static void progress_done(void)
{
    if (show_progress)
        fputs("\r\033[K", stderr);
}

static void store_progress(void *user, const char *phase, uint64_t done, uint64_t total)
{
    (void)user;
    progress("%s %" PRIu64 "/%" PRIu64, phase, done, total);
}

typedef struct proc_memory {
    long rss_kb, hwm_kb, anon_kb, file_kb;
} proc_memory;

static proc_memory read_memory(void)
{
    proc_memory m = {-1, -1, -1, -1};
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f)) {
        sscanf(line, "VmRSS: %ld", &m.rss_kb);
        sscanf(line, "VmHWM: %ld", &m.hwm_kb);
        sscanf(line, "RssAnon: %ld", &m.anon_kb);
        sscanf(line, "RssFile: %ld", &m.file_kb);
    }
    if (f)
        fclose(f);
    return m;
}

static double mb(long kb) { return kb < 0 ? -1 : kb / 1024.0; }

/* Bytes actually allocated on disk (LMDB files may be sparse). */
static double file_mb(const char *dir, const char *name)
{
    char path[4200];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0 ? (double)st.st_blocks * 512 / 1048576.0 : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nearest-rank percentile; sorts v. */
static double percentile(double *v, size_t n, double p)
{
    if (!n)
        return NAN;
    qsort(v, n, sizeof *v, cmp_double);
    size_t rank = (size_t)ceil(p * (double)n);
    return v[rank ? rank - 1 : 0];
}

static void cpu_model(char *out, size_t cap)
{
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[512];
    snprintf(out, cap, "unknown");
    while (f && fgets(line, sizeof line, f)) {
        char *colon = strchr(line, ':');
        if (strncmp(line, "model name", 10) == 0 && colon) {
            colon += 1 + (colon[1] == ' ');
            colon[strcspn(colon, "\n")] = '\0';
            snprintf(out, cap, "%s", colon);
            break;
        }
    }
    if (f)
        fclose(f);
}

static int dir_is_empty_or_absent(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return errno == ENOENT;
    struct dirent *e;
    int empty = 1;
    while (empty && (e = readdir(d)))
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    return empty;
}

/* Only for a directory this program created: the store's files are flat. */
static void remove_store_dir(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unlink(path);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- the synthetic collection ------------------------------------------------------------------ */

static synth_params params_for(const options *o, unsigned stream)
{
    return (synth_params){.dim = o->dim, .n_clusters = 0, .seed = o->seed, .stream = stream};
}

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

static void dataset_free(dataset *d)
{
    free(d->image);
    free(d->meta);
    free(d->uid);
    memset(d, 0, sizeof *d);
}

static int dataset_generate(const options *o, dataset *d)
{
    synth_params p = params_for(o, 0);
    synth *g = NULL;
    int rc = synth_create(&p, &g);
    if (rc)
        return rc;
    d->n = o->n;
    d->dim = o->dim;
    d->image = malloc(o->n * o->dim * sizeof *d->image);
    d->meta = malloc(o->n * sizeof *d->meta);
    d->uid = malloc(o->n * sizeof *d->uid);
    if (!d->image || !d->meta || !d->uid) {
        synth_free(g);
        dataset_free(d);
        return cmr_fail(CMR_ENOMEM, "out of memory for %" PRIu64 " vectors of dimension %u", o->n, o->dim);
    }
    for (uint64_t i = 0; i < o->n; i++) {
        synth_case c;
        synth_next(g, &c, d->image + i * o->dim, NULL);
        d->meta[i] = (case_meta){c.study_date, (uint8_t)c.site};
        memcpy(d->uid[i], c.study_uid, sizeof d->uid[i]);
        if (i % 65536 == 0)
            progress("regenerating vectors %" PRIu64 "/%" PRIu64, i, o->n);
    }
    progress_done();
    synth_free(g);
    return 0;
}

static int queries_generate(const options *o, float **out)
{
    synth_params p = params_for(o, 1);
    synth *g = NULL;
    int rc = synth_create(&p, &g);
    if (rc)
        return rc;
    float *q = malloc((size_t)o->queries * o->dim * sizeof *q);
    if (!q) {
        synth_free(g);
        return cmr_fail(CMR_ENOMEM, "out of memory for queries");
    }
    for (unsigned i = 0; i < o->queries; i++) {
        synth_case c;
        synth_next(g, &c, q + (size_t)i * o->dim, NULL);
    }
    synth_free(g);
    *out = q;
    return 0;
}

/* ---- import (child process) ----------------------------------------------------------------- */

typedef struct import_result {
    int rc;
    char error[1024];
    double generate_s, put_s, commit_s, flush_s, close_s;
    long hwm_kb;
    uint64_t cases;
} import_result;

static int view_bits(uint32_t synth_views, uint32_t *out)
{
    uint32_t bits = 0;
    for (int v = 0; v < SYNTH_N_VIEWS; v++) {
        uint32_t bit;
        if (!(synth_views & (1u << v)))
            continue;
        int rc = cmr_view_parse(synth_view_names[v], &bit);
        if (rc)
            return rc;
        bits |= bit;
    }
    *out = bits;
    return 0;
}

static int put_case(cmr_store *store, cmr_txn *txn, const synth_case *sc, const float *image,
                    const float *text, uint64_t *id)
{
    static const char *const sources[] = {"synthetic"};
    const synth_site *site = &synth_sites[sc->site];
    cmr_diagnosis dx[SYNTH_MAX_CODES];
    for (size_t i = 0; i < sc->n_codes; i++)
        dx[i] = (cmr_diagnosis){sc->codes[i]->code, sc->codes[i]->system, sc->codes[i]->label, NULL};
    cmr_case c = {
        .study_uid = sc->study_uid,
        .has_patient_key = 1,
        .study_date = sc->study_date,
        .site = site->name,
        .manufacturer = site->manufacturer,
        .scanner_model = site->scanner_model,
        .field_strength = site->field_strength,
        .sex = sc->sex,
        .age_years = sc->age,
        .n_diagnoses = sc->n_codes,
        .diagnoses = dx,
        .impression = sc->impression,
        .n_sources = 1,
        .sources = sources,
    };
    int rc;
    if ((rc = view_bits(sc->views, &c.views)) ||
        (rc = cmr_store_patient_key(store, sc->patient_id, c.patient_key)))
        return rc;
    return cmr_txn_put(txn, &c, image, text, id);
}

static int import_cases(const options *o, import_result *res, uint64_t *id_of_row)
{
    synth_params p = params_for(o, 0);
    cmr_store_config cfg = {.factory = o->factory, .nprobe = o->nprobe};
    cmr_store *store = NULL;
    cmr_txn *txn = NULL;
    synth *g = NULL;
    synth_case *cases = malloc(o->batch * sizeof *cases);
    float *image = malloc((size_t)o->batch * o->dim * sizeof *image);
    float *text = malloc((size_t)o->batch * o->dim * sizeof *text);
    char hash[SYNTH_HASH_CHARS];
    int rc;

    if (!cases || !image || !text) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for a batch of %u cases", o->batch);
        goto done;
    }
    synth_weights_hash(&p, hash);
    if ((rc = synth_create(&p, &g)) || (rc = cmr_store_open(o->db, CMR_STORE_CREATE, &cfg, &store)) ||
        (rc = cmr_store_set_model(store, SYNTH_MODEL_NAME, hash, o->dim)))
        goto done;
    cmr_store_set_progress(store, show_progress ? store_progress : NULL, NULL);
    for (uint64_t base = 0; base < o->n; base += o->batch) {
        size_t m = o->n - base < o->batch ? (size_t)(o->n - base) : o->batch;
        double t0 = now();
        for (size_t j = 0; j < m; j++)
            synth_next(g, &cases[j], image + j * o->dim, text + j * o->dim);
        double t1 = now();
        if ((rc = cmr_txn_begin(store, &txn)))
            goto done;
        for (size_t j = 0; j < m; j++)
            if ((rc = put_case(store, txn, &cases[j], image + j * o->dim, text + j * o->dim,
                               &id_of_row[base + j])))
                goto done;
        double t2 = now();
        rc = cmr_txn_commit(txn);
        txn = NULL;
        if (rc)
            goto done;
        double t3 = now();
        res->generate_s += t1 - t0;
        res->put_s += t2 - t1;
        res->commit_s += t3 - t2;
        res->cases = base + m;
        progress("importing %" PRIu64 "/%" PRIu64 " cases", base + m, o->n);
    }
    double t0 = now();
    if ((rc = cmr_store_flush(store)))
        goto done;
    double t1 = now();
    rc = cmr_store_close(store);
    store = NULL;
    res->flush_s = t1 - t0;
    res->close_s = now() - t1;
    progress_done();
done:
    if (txn)
        cmr_txn_abort(txn);
    if (store)
        cmr_store_close(store);
    synth_free(g);
    free(cases);
    free(image);
    free(text);
    res->hwm_kb = read_memory().hwm_kb;
    return rc;
}

/* The child starts before this process has touched FAISS or OpenMP, which
 * do not survive fork() once their thread pools exist. */
static int run_import(const options *o, import_result *res, uint64_t *id_of_row)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0)
        return cmr_fail(CMR_EIO, "fork: %s", strerror(errno));
    if (pid == 0) {
        int rc = import_cases(o, res, id_of_row);
        res->rc = rc;
        if (rc)
            snprintf(res->error, sizeof res->error, "%s", cmr_errmsg());
        fflush(NULL);
        _exit(rc ? 1 : 0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return cmr_fail(CMR_EIO, "waitpid: %s", strerror(errno));
    if (WIFSIGNALED(status))
        return cmr_fail(CMR_EIO, "import process killed by signal %d", WTERMSIG(status));
    if (res->rc)
        return cmr_fail(res->rc, "import: %s", res->error);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return cmr_fail(CMR_EIO, "import process failed");
    return 0;
}

/* ---- the 1% filter ----------------------------------------------------------------------------- */

typedef struct filter_spec {
    unsigned site;
    int32_t date_from, date_to;
    uint8_t *mask; /* per row */
    uint64_t matching;
} filter_spec;

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The smallest site that holds the target share of all cases, and a window
 * of its study dates holding exactly that share: a selective filter on
 * attributes that are independent of the vectors, so its matches are spread
 * over every cluster and IVF list. */
static int filter_choose(const dataset *d, double share, filter_spec *f)
{
    uint64_t per_site[SYNTH_N_SITES] = {0};
    for (uint64_t i = 0; i < d->n; i++)
        per_site[d->meta[i].site]++;
    uint64_t want_cases = (uint64_t)llround(share * (double)d->n);
    /* Failing a site large enough, the largest: the share is then capped. */
    int best = -1, largest = 0;
    for (int s = 0; s < SYNTH_N_SITES; s++) {
        if (per_site[s] > per_site[largest])
            largest = s;
        if (per_site[s] >= want_cases && (best < 0 || per_site[s] < per_site[best]))
            best = s;
    }
    unsigned site = (unsigned)(best >= 0 ? best : largest);
    int32_t *dates = malloc(d->n * sizeof *dates);
    f->mask = calloc(d->n, 1);
    if (!dates || !f->mask) {
        free(dates);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    size_t m = 0;
    for (uint64_t i = 0; i < d->n; i++)
        if (d->meta[i].site == site)
            dates[m++] = d->meta[i].date;
    if (!m) {
        free(dates);
        return cmr_fail(CMR_EINVAL, "no case at site %s; use more cases", synth_sites[site].name);
    }
    qsort(dates, m, sizeof *dates, cmp_i32);
    size_t want = (size_t)llround(share * (double)d->n);
    if (want < 1)
        want = 1;
    if (want > m)
        want = m;
    size_t lo = (m - want) / 2;
    f->site = site;
    f->date_from = dates[lo];
    f->date_to = dates[lo + want - 1];
    free(dates);
    f->matching = 0;
    for (uint64_t i = 0; i < d->n; i++) {
        const case_meta *cm = &d->meta[i];
        f->mask[i] = cm->site == site && cm->date >= f->date_from && cm->date <= f->date_to;
        f->matching += f->mask[i];
    }
    return 0;
}

/* ---- ground truth ------------------------------------------------------------------------------- */

typedef struct best {
    float score[K];
    uint32_t row[K];
    int n, worst;
} best;

static void best_push(best *b, float score, uint32_t row)
{
    if (b->n < K) {
        b->score[b->n] = score;
        b->row[b->n++] = row;
        if (b->n < K)
            return;
    } else if (score > b->score[b->worst]) {
        b->score[b->worst] = score;
        b->row[b->worst] = row;
    } else {
        return;
    }
    b->worst = 0;
    for (int i = 1; i < K; i++)
        if (b->score[i] < b->score[b->worst])
            b->worst = i;
}

/* Exact top-K of every query, over all rows and over the masked rows, from
 * blocks of the full score matrix computed by sgemm. */
static int ground_truth(const dataset *d, const float *queries, unsigned nq, const uint8_t *mask,
                        best *all, best *filtered)
{
    float *scores = malloc((size_t)nq * GT_BLOCK * sizeof *scores);
    if (!scores)
        return cmr_fail(CMR_ENOMEM, "out of memory for the ground-truth scan");
    memset(all, 0, nq * sizeof *all);
    memset(filtered, 0, nq * sizeof *filtered);
    for (uint64_t base = 0; base < d->n; base += GT_BLOCK) {
        int rows = (int)(d->n - base < GT_BLOCK ? d->n - base : GT_BLOCK);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, rows, (int)d->dim, 1.0f, queries,
                    (int)d->dim, d->image + base * d->dim, (int)d->dim, 0.0f, scores, rows);
        for (unsigned q = 0; q < nq; q++) {
            const float *s = scores + (size_t)q * rows;
            for (int j = 0; j < rows; j++) {
                uint32_t row = (uint32_t)(base + (uint64_t)j);
                best_push(&all[q], s[j], row);
                if (mask[row])
                    best_push(&filtered[q], s[j], row);
            }
        }
        progress("exact scan %" PRIu64 "/%" PRIu64, base + (uint64_t)rows, d->n);
    }
    progress_done();
    free(scores);
    return 0;
}

/* ---- ids ------------------------------------------------------------------------------------------ */

typedef struct id_row {
    uint64_t id;
    uint32_t row;
} id_row;

static int cmp_id_row(const void *a, const void *b)
{
    uint64_t x = ((const id_row *)a)->id, y = ((const id_row *)b)->id;
    return x < y ? -1 : x > y;
}

static int64_t row_of(const id_row *map, uint64_t n, uint64_t id)
{
    id_row key = {id, 0};
    const id_row *hit = bsearch(&key, map, n, sizeof *map, cmp_id_row);
    return hit ? (int64_t)hit->row : -1;
}

/* Fraction of the exact top-K rows found among a result's ids. */
static double recall(const uint64_t *ids, size_t n_ids, const best *truth, const id_row *map, uint64_t n)
{
    if (!truth->n)
        return 1.0;
    int found = 0;
    for (size_t i = 0; i < n_ids; i++) {
        int64_t row = row_of(map, n, ids[i]);
        for (int j = 0; row >= 0 && j < truth->n; j++)
            if (truth->row[j] == (uint32_t)row) {
                found++;
                break;
            }
    }
    return (double)found / truth->n;
}

/* ---- measurements ----------------------------------------------------------------------------------- */

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

static int latency_alloc(latency *l, size_t cap)
{
    l->us = malloc((cap ? cap : 1) * sizeof *l->us);
    l->n = 0;
    return l->us ? 0 : cmr_fail(CMR_ENOMEM, "out of memory");
}

typedef struct raw_index {
    FaissIndex *index;
    int ivf;
} raw_index;

static int faiss_fail(const char *what)
{
    const char *e = faiss_get_last_error();
    return cmr_fail(CMR_EFAISS, "%s: %s", what, e && *e ? e : "unknown FAISS error");
}

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

/* The store's image index, read from its file into a second FAISS object,
 * with the nprobe the store reports using. */
static int raw_index_load(const char *db, unsigned nprobe, raw_index *out)
{
    char path[4200];
    uint8_t head[INDEX_HEADER_BYTES];
    struct stat st;
    snprintf(path, sizeof path, "%s/index-image.cmrx", db);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    if (fstat(fileno(f), &st) != 0 || fread(head, 1, sizeof head, f) != sizeof head ||
        memcmp(head, INDEX_MAGIC, 8) != 0 ||
        (uint64_t)st.st_size != INDEX_HEADER_BYTES + le64(head + 48)) {
        fclose(f);
        return cmr_fail(CMR_EFORMAT, "%s: not the index layout this benchmark knows (store/index.c "
                                     "changed?)", path);
    }
    int frc = faiss_read_index(f, 0, &out->index);
    fclose(f);
    if (frc)
        return faiss_fail("reading the store's index file");
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(out->index);
    out->ivf = ivf != NULL;
    if (ivf)
        faiss_IndexIVF_set_nprobe(ivf, nprobe);
    return 0;
}

static int hits_ids(const cmr_hits *h, uint64_t *ids)
{
    for (size_t i = 0; i < h->n && i < K; i++)
        ids[i] = h->hits[i].id;
    return (int)(h->n < K ? h->n : K);
}

static int same_set(const uint64_t *a, int na, const idx_t *b)
{
    int nb = 0;
    for (int i = 0; i < K; i++)
        nb += b[i] >= 0;
    if (na != nb)
        return 0;
    for (int i = 0; i < na; i++) {
        int found = 0;
        for (int j = 0; j < K && !found; j++)
            found = b[j] >= 0 && (uint64_t)b[j] == a[i];
        if (!found)
            return 0;
    }
    return 1;
}

static int timed_search(cmr_store *store, const float *q, const cmr_filter *flt, double *us, cmr_hits **out)
{
    double t0 = now();
    int rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, flt, out);
    *us = (now() - t0) * 1e6;
    return rc;
}

typedef struct run_ctx {
    const options *o;
    const dataset *d;
    const float *queries;
    const best *gt_all, *gt_filt;
    uint64_t *id_of_row; /* from the import, or NULL */
} run_ctx;

static int build_id_map(const run_ctx *c, cmr_store *store, id_row **out)
{
    id_row *map = malloc(c->d->n * sizeof *map);
    if (!map)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (uint64_t i = 0; i < c->d->n; i++) {
        map[i].row = (uint32_t)i;
        if (c->id_of_row) {
            map[i].id = c->id_of_row[i];
            continue;
        }
        int rc = cmr_store_find_uid(store, c->d->uid[i], &map[i].id);
        if (rc) {
            free(map);
            return cmr_fail_context(rc, "row %" PRIu64 " of the regenerated collection: ", i);
        }
    }
    qsort(map, c->d->n, sizeof *map, cmp_id_row);
    *out = map;
    return 0;
}

/* Recall and latency of FAISS alone as nprobe doubles: where the store's
 * choice sits on the curve, and what a latency budget would allow. */
static int nprobe_sweep(const run_ctx *c, raw_index *raw, const id_row *map, unsigned nlist, results *r)
{
    unsigned nq = c->o->queries;
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(raw->index);
    size_t old = faiss_IndexIVF_nprobe(ivf);
    latency l;
    int rc = latency_alloc(&l, nq);
    if (rc)
        return rc;
    r->n_sweep = 0;
    for (unsigned nprobe = 1; nprobe <= nlist && r->n_sweep < MAX_SWEEP; nprobe *= 2) {
        faiss_IndexIVF_set_nprobe(ivf, nprobe);
        double sum = 0;
        l.n = 0;
        for (unsigned i = 0; i < nq; i++) {
            float dist[K];
            idx_t labels[K];
            uint64_t ids[K];
            size_t n = 0;
            double t0 = now();
            if (faiss_Index_search(raw->index, 1, c->queries + (size_t)i * c->o->dim, K, dist, labels)) {
                rc = faiss_fail("raw search");
                goto done;
            }
            l.us[l.n++] = (now() - t0) * 1e6;
            for (int j = 0; j < K; j++)
                if (labels[j] >= 0)
                    ids[n++] = (uint64_t)labels[j];
            sum += recall(ids, n, &c->gt_all[i], map, c->d->n);
        }
        sweep_point *pt = &r->sweep[r->n_sweep++];
        pt->nprobe = nprobe;
        pt->recall = sum / nq;
        pt->p50_us = percentile(l.us, l.n, 0.50);
        pt->p99_us = percentile(l.us, l.n, 0.99);
        progress("nprobe sweep: %u", nprobe);
        /* Past full recall and the 2 ms budget there is nothing left to learn. */
        if (pt->recall >= 0.999 && pt->p50_us > 4000)
            break;
    }
    progress_done();
done:
    faiss_IndexIVF_set_nprobe(ivf, old);
    free(l.us);
    return rc;
}

static int measure(const run_ctx *c, results *r)
{
    const options *o = c->o;
    unsigned nq = o->queries;
    cmr_store *store = NULL;
    cmr_hits *h = NULL;
    raw_index raw = {0};
    FaissIDSelectorBitmap *sel = NULL;
    FaissSearchParametersIVF *params = NULL;
    uint8_t *bitmap = NULL;
    size_t bitmap_bytes = 0;
    uint64_t *ours_unf = calloc((size_t)nq * K, sizeof *ours_unf), *ours_filt = calloc((size_t)nq * K, sizeof *ours_filt);
    int *n_unf = calloc(nq, sizeof *n_unf), *n_filt = calloc(nq, sizeof *n_filt);
    unsigned *filt_nprobe = calloc(nq, sizeof *filt_nprobe);
    id_row *map = NULL;
    double us;
    int rc;
    const char *site = synth_sites[r->filter.site].name;
    cmr_filter flt = {.site = site, .date_from = r->filter.date_from, .date_to = r->filter.date_to};

    if (!ours_unf || !ours_filt || !n_unf || !n_filt || !filt_nprobe) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    size_t timed = (size_t)nq * o->rounds;
    if ((rc = latency_alloc(&r->ours_unf, timed)) || (rc = latency_alloc(&r->raw_unf, timed)) ||
        (rc = latency_alloc(&r->ours_filt, timed)) || (rc = latency_alloc(&r->raw_filt, timed)) ||
        (rc = latency_alloc(&r->exact_unf, o->exact_queries)) ||
        (rc = latency_alloc(&r->exact_filt, o->exact_queries)))
        goto done;

    /* Open and first searches: what a freshly started process pays. */
    r->before_open = read_memory();
    double t0 = now();
    if ((rc = cmr_store_open(o->db, CMR_STORE_RDONLY, NULL, &store)))
        goto done;
    r->open_ms = (now() - t0) * 1e3;
    if ((rc = timed_search(store, c->queries, NULL, &us, &h)))
        goto done;
    r->first_search_ms = us / 1e3;
    cmr_hits_free(h);
    h = NULL;
    if ((rc = timed_search(store, c->queries, &flt, &us, &h)))
        goto done;
    r->first_filtered_ms = us / 1e3;
    cmr_hits_free(h);
    h = NULL;
    if ((rc = cmr_store_stats_get(store, &r->stats)))
        goto done;
    if (r->stats.cases != o->n) {
        rc = cmr_fail(CMR_EINVAL, "%s holds %" PRIu64 " cases, not %" PRIu64 " (another --n or --seed?)",
                      o->db, r->stats.cases, o->n);
        goto done;
    }
    const char *model, *hash;
    unsigned dim;
    char want_hash[SYNTH_HASH_CHARS];
    synth_params p = params_for(o, 0);
    synth_weights_hash(&p, want_hash);
    cmr_store_model(store, &model, &hash, &dim);
    if (strcmp(hash, want_hash) != 0 || dim != o->dim) {
        rc = cmr_fail(CMR_EMODEL, "%s was filled with another --seed or --dim", o->db);
        goto done;
    }

    /* A pass over every query: warms caches and gives the results recall is
     * computed from. */
    uint64_t exact_answers = 0;
    for (unsigned i = 0; i < nq; i++) {
        const float *q = c->queries + (size_t)i * o->dim;
        if ((rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, NULL, &h)))
            goto done;
        n_unf[i] = hits_ids(h, ours_unf + (size_t)i * K);
        cmr_hits_free(h);
        if ((rc = cmr_store_search(store, CMR_SPACE_IMAGE, q, K, &flt, &h)))
            goto done;
        n_filt[i] = hits_ids(h, ours_filt + (size_t)i * K);
        exact_answers += h->exact != 0;
        filt_nprobe[i] = h->exact ? 0 : h->nprobe;
        if (!h->exact)
            r->filt_nprobe = h->nprobe;
        r->filt_matching_store = h->n_matching;
        cmr_hits_free(h);
        h = NULL;
        progress("first pass %u/%u", i + 1, nq);
    }
    progress_done();
    r->filt_exact_share = (double)exact_answers / nq;
    r->after_search = read_memory();

    t0 = now();
    if ((rc = raw_index_load(o->db, r->stats.index[CMR_SPACE_IMAGE].nprobe, &raw)))
        goto done;
    r->raw_load_ms = (now() - t0) * 1e3;
    if ((rc = build_id_map(c, store, &map)))
        goto done;
    if (exact_answers < nq) {
        /* What a caller of FAISS would hand it: the matching ids as a bitmap. */
        bitmap_bytes = map[c->d->n - 1].id / 8 + 1;
        if (!(bitmap = calloc(bitmap_bytes, 1))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        for (uint64_t i = 0; i < c->d->n; i++)
            if (r->filter.mask[map[i].row])
                bitmap[map[i].id >> 3] |= (uint8_t)(1u << (map[i].id & 7));
        if (faiss_IDSelectorBitmap_new(&sel, bitmap_bytes, bitmap) != 0) {
            rc = faiss_fail("creating the bitmap selector");
            goto done;
        }
    }

    /* Timed rounds: ours and raw FAISS alternate first place per query. */
    uint64_t same = 0, compared = 0;
    for (unsigned round = 0; round < o->rounds; round++) {
        for (unsigned i = 0; i < nq; i++) {
            const float *q = c->queries + (size_t)i * o->dim;
            float dist[K];
            idx_t labels[K];
            for (int turn = 0; turn < 2; turn++) {
                if (((i + round + (unsigned)turn) & 1) == 0) {
                    if ((rc = timed_search(store, q, NULL, &us, &h)))
                        goto done;
                    r->ours_unf.us[r->ours_unf.n++] = us;
                    cmr_hits_free(h);
                    h = NULL;
                } else {
                    double t1 = now();
                    int frc = faiss_Index_search(raw.index, 1, q, K, dist, labels);
                    r->raw_unf.us[r->raw_unf.n++] = (now() - t1) * 1e6;
                    if (frc) {
                        rc = faiss_fail("raw search");
                        goto done;
                    }
                    if (round == 0) {
                        same += same_set(ours_unf + (size_t)i * K, n_unf[i], labels);
                        compared++;
                    }
                }
            }
            for (int turn = 0; turn < 2; turn++) {
                if (((i + round + (unsigned)turn) & 1) == 0) {
                    if ((rc = timed_search(store, q, &flt, &us, &h)))
                        goto done;
                    r->ours_filt.us[r->ours_filt.n++] = us;
                    cmr_hits_free(h);
                    h = NULL;
                } else if (filt_nprobe[i] && sel) {
                    /* Same nprobe as the store used for this query. */
                    if (faiss_SearchParametersIVF_new_with(&params, (FaissIDSelector *)sel, filt_nprobe[i], 0)) {
                        rc = faiss_fail("creating search parameters");
                        goto done;
                    }
                    double t1 = now();
                    int frc = faiss_Index_search_with_params(raw.index, 1, q, K, (FaissSearchParameters *)params,
                                                             dist, labels);
                    r->raw_filt.us[r->raw_filt.n++] = (now() - t1) * 1e6;
                    faiss_SearchParametersIVF_free(params);
                    params = NULL;
                    if (frc) {
                        rc = faiss_fail("raw filtered search");
                        goto done;
                    }
                }
            }
            progress("timed round %u/%u: %u/%u", round + 1, o->rounds, i + 1, nq);
        }
    }
    progress_done();
    r->same_ids_as_raw = compared ? (double)same / compared : NAN;

    /* Exact scans through the store: the reference for recall must agree
     * with the sgemm ground truth, and the filter with our own evaluation. */
    double agree_unf = 0, agree_filt = 0;
    for (unsigned i = 0; i < o->exact_queries && i < nq; i++) {
        const float *q = c->queries + (size_t)i * o->dim;
        uint64_t ids[K];
        int n;
        double t1 = now();
        if ((rc = cmr_store_search_exact(store, CMR_SPACE_IMAGE, q, K, NULL, &h)))
            goto done;
        r->exact_unf.us[r->exact_unf.n++] = (now() - t1) * 1e6;
        n = hits_ids(h, ids);
        agree_unf += recall(ids, (size_t)n, &c->gt_all[i], map, c->d->n);
        cmr_hits_free(h);
        t1 = now();
        if ((rc = cmr_store_search_exact(store, CMR_SPACE_IMAGE, q, K, &flt, &h)))
            goto done;
        r->exact_filt.us[r->exact_filt.n++] = (now() - t1) * 1e6;
        n = hits_ids(h, ids);
        agree_filt += recall(ids, (size_t)n, &c->gt_filt[i], map, c->d->n);
        cmr_hits_free(h);
        h = NULL;
        progress("exact searches %u/%u", i + 1, o->exact_queries);
    }
    progress_done();
    r->exact_agree_unf = r->exact_unf.n ? agree_unf / r->exact_unf.n : NAN;
    r->exact_agree_filt = r->exact_filt.n ? agree_filt / r->exact_filt.n : NAN;

    if (o->sweep && raw.ivf && (rc = nprobe_sweep(c, &raw, map, r->stats.index[CMR_SPACE_IMAGE].nlist, r)))
        goto done;

    double sum_unf = 0, sum_filt = 0;
    for (unsigned i = 0; i < nq; i++) {
        sum_unf += recall(ours_unf + (size_t)i * K, (size_t)n_unf[i], &c->gt_all[i], map, c->d->n);
        sum_filt += recall(ours_filt + (size_t)i * K, (size_t)n_filt[i], &c->gt_filt[i], map, c->d->n);
    }
    r->recall_unf = sum_unf / nq;
    r->recall_filt = sum_filt / nq;
    rc = 0;
done:
    cmr_hits_free(h);
    if (params)
        faiss_SearchParametersIVF_free(params);
    if (sel)
        faiss_IDSelector_free((FaissIDSelector *)sel);
    if (raw.index)
        faiss_Index_free(raw.index);
    if (store) {
        int crc = cmr_store_close(store);
        if (!rc)
            rc = crc;
    }
    free(bitmap);
    free(map);
    free(ours_unf);
    free(ours_filt);
    free(n_unf);
    free(n_filt);
    free(filt_nprobe);
    return rc;
}

/* ---- report ---------------------------------------------------------------------------------------- */

typedef struct summary {
    double p50, p99;
} summary;

static summary summarise(latency *l)
{
    return (summary){percentile(l->us, l->n, 0.50), percentile(l->us, l->n, 0.99)};
}

static json_t *jnum(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static json_t *jlatency(summary s)
{
    return json_pack("{s:o, s:o}", "p50_us", jnum(s.p50), "p99_us", jnum(s.p99));
}

static void report(const options *o, results *r)
{
    summary ou = summarise(&r->ours_unf), ru = summarise(&r->raw_unf), of = summarise(&r->ours_filt),
            rf = summarise(&r->raw_filt), eu = summarise(&r->exact_unf), ef = summarise(&r->exact_filt);
    const cmr_index_info *ix = &r->stats.index[CMR_SPACE_IMAGE];
    const import_result *im = &r->import;
    double import_s = im->put_s + im->commit_s + im->flush_s;
    double cases_per_s = r->imported && import_s > 0 ? o->n / import_s : NAN;
    double store_rss_mb = mb(r->after_search.rss_kb - r->before_open.rss_kb);
    char cpu[256];
    cpu_model(cpu, sizeof cpu);
    long nproc = sysconf(_SC_NPROCESSORS_ONLN);
    int at_scale = o->n >= 1000000;
    int t_p50 = ou.p50 <= 2000, t_recall = r->recall_unf >= 0.95, t_recall_f = r->recall_filt >= 0.95,
        t_ratio = ou.p50 / ru.p50 <= 1.10;

    if (o->json) {
        json_t *j = json_object(), *x;
        json_object_set_new(j, "benchmark", json_string("store"));
        json_object_set_new(j, "n", json_integer((json_int_t)o->n));
        json_object_set_new(j, "dim", json_integer(o->dim));
        json_object_set_new(j, "queries", json_integer(o->queries));
        json_object_set_new(j, "rounds", json_integer(o->rounds));
        json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
        json_object_set_new(j, "k", json_integer(K));
        json_object_set_new(j, "machine", json_pack("{s:s, s:I, s:s}", "cpu", cpu, "nproc", (json_int_t)nproc,
                                                    "openblas", r->openblas));
        json_object_set_new(j, "index", json_pack("{s:s, s:s, s:I, s:i, s:i}", "kind", ix->kind, "factory",
                                                  ix->factory, "ntotal", (json_int_t)ix->ntotal, "nlist",
                                                  (int)ix->nlist, "nprobe", (int)ix->nprobe));
        if (r->imported) {
            x = json_object();
            json_object_set_new(x, "cases_per_s", jnum(cases_per_s));
            json_object_set_new(x, "put_s", jnum(im->put_s));
            json_object_set_new(x, "commit_s", jnum(im->commit_s));
            json_object_set_new(x, "flush_s", jnum(im->flush_s));
            json_object_set_new(x, "close_s", jnum(im->close_s));
            json_object_set_new(x, "generate_s", jnum(im->generate_s));
            json_object_set_new(x, "peak_rss_mb", jnum(mb(im->hwm_kb)));
            json_object_set_new(x, "data_mdb_mb", jnum(file_mb(o->db, "data.mdb")));
            json_object_set_new(x, "index_image_mb", jnum(file_mb(o->db, "index-image.cmrx")));
            json_object_set_new(x, "index_text_mb", jnum(file_mb(o->db, "index-text.cmrx")));
            json_object_set_new(j, "import", x);
        } else {
            json_object_set_new(j, "import", json_null());
        }
        x = json_object();
        json_object_set_new(x, "open_ms", jnum(r->open_ms));
        json_object_set_new(x, "first_search_ms", jnum(r->first_search_ms));
        json_object_set_new(x, "first_filtered_search_ms", jnum(r->first_filtered_ms));
        json_object_set_new(x, "raw_index_load_ms", jnum(r->raw_load_ms));
        json_object_set_new(j, "open", x);
        x = json_object();
        json_object_set_new(x, "recall_at_10", jnum(r->recall_unf));
        json_object_set_new(x, "ours", jlatency(ou));
        json_object_set_new(x, "raw_faiss", jlatency(ru));
        json_object_set_new(x, "ratio_p50", jnum(ou.p50 / ru.p50));
        json_object_set_new(x, "ratio_p99", jnum(ou.p99 / ru.p99));
        json_object_set_new(x, "same_ids_as_raw", jnum(r->same_ids_as_raw));
        json_object_set_new(x, "exact_scan", jlatency(eu));
        json_object_set_new(x, "store_exact_agrees_with_sgemm", jnum(r->exact_agree_unf));
        json_object_set_new(j, "unfiltered", x);
        x = json_object();
        json_object_set_new(x, "filter", json_string(r->filter_desc));
        json_object_set_new(x, "matching", json_integer((json_int_t)r->filter.matching));
        json_object_set_new(x, "matching_reported_by_store", json_integer((json_int_t)r->filt_matching_store));
        json_object_set_new(x, "share", jnum((double)r->filter.matching / (double)o->n));
        json_object_set_new(x, "recall_at_10", jnum(r->recall_filt));
        json_object_set_new(x, "ours", jlatency(of));
        json_object_set_new(x, "raw_faiss", r->raw_filt.n ? jlatency(rf) : json_null());
        json_object_set_new(x, "ratio_p50", r->raw_filt.n ? jnum(of.p50 / rf.p50) : json_null());
        json_object_set_new(x, "ratio_p99", r->raw_filt.n ? jnum(of.p99 / rf.p99) : json_null());
        json_object_set_new(x, "exact_answer_share", jnum(r->filt_exact_share));
        json_object_set_new(x, "ivf_nprobe", json_integer(r->filt_nprobe));
        json_object_set_new(x, "exact_scan", jlatency(ef));
        json_object_set_new(x, "store_exact_agrees_with_sgemm", jnum(r->exact_agree_filt));
        json_object_set_new(j, "filtered", x);
        x = json_object();
        json_object_set_new(x, "rss_before_open_mb", jnum(mb(r->before_open.rss_kb)));
        json_object_set_new(x, "rss_after_search_mb", jnum(mb(r->after_search.rss_kb)));
        json_object_set_new(x, "store_rss_mb", jnum(store_rss_mb));
        json_object_set_new(x, "store_rss_anon_mb", jnum(mb(r->after_search.anon_kb - r->before_open.anon_kb)));
        json_object_set_new(x, "store_rss_file_mb", jnum(mb(r->after_search.file_kb - r->before_open.file_kb)));
        json_object_set_new(x, "hwm_mb", jnum(mb(r->after_search.hwm_kb)));
        json_object_set_new(j, "memory", x);
        x = json_object();
        json_object_set_new(x, "stated_for_n", json_integer(1000000));
        json_object_set_new(x, "p50_le_2ms", json_boolean(t_p50));
        json_object_set_new(x, "recall_ge_0_95", json_boolean(t_recall));
        json_object_set_new(x, "filtered_recall_ge_0_95", json_boolean(t_recall_f));
        json_object_set_new(x, "overhead_le_1_10", json_boolean(t_ratio));
        json_object_set_new(j, "targets", x);
        if (r->n_sweep) {
            x = json_array();
            for (int i = 0; i < r->n_sweep; i++)
                json_array_append_new(x, json_pack("{s:i, s:o, s:o, s:o}", "nprobe", (int)r->sweep[i].nprobe,
                                                   "recall_at_10", jnum(r->sweep[i].recall), "p50_us",
                                                   jnum(r->sweep[i].p50_us), "p99_us", jnum(r->sweep[i].p99_us)));
            json_object_set_new(j, "raw_nprobe_sweep", x);
        }
        json_object_set_new(j, "ground_truth_s", jnum(r->ground_truth_s));
        json_object_set_new(j, "regenerate_s", jnum(r->generate_parent_s));
        json_dumpf(j, stdout, JSON_INDENT(2) | JSON_REAL_PRECISION(6));
        fputc('\n', stdout);
        json_decref(j);
        return;
    }

    printf("bench-store  N=%" PRIu64 "  dim=%u  queries=%u x %u rounds  k=%d  seed=%" PRIu64 "\n", o->n, o->dim,
           o->queries, o->rounds, K, o->seed);
    printf("machine      %ld cores, %s; %s\n", nproc, cpu, r->openblas);
    printf("index        %s %s, ntotal %" PRIu64 ", nlist %u, nprobe %u\n", ix->kind, ix->factory, ix->ntotal,
           ix->nlist, ix->nprobe);
    if (r->imported)
        printf("import       %.0f cases/s  (put %.1f s, commit %.1f s, flush/index build %.1f s; generation "
               "%.1f s not counted)\n"
               "             peak RSS %.0f MB; on disk: data.mdb %.0f MB, index-image %.0f MB, index-text %.0f MB\n",
               cases_per_s, im->put_s, im->commit_s, im->flush_s, im->generate_s, mb(im->hwm_kb),
               file_mb(o->db, "data.mdb"), file_mb(o->db, "index-image.cmrx"), file_mb(o->db, "index-text.cmrx"));
    printf("open         %.1f ms; first search %.1f ms (index load); first filtered %.1f ms (facets)\n",
           r->open_ms, r->first_search_ms, r->first_filtered_ms);
    printf("memory       RSS %.0f MB before open, %.0f MB after open+searches: store %.0f MB "
           "(anon %+.0f, file %+.0f); HWM %.0f MB\n",
           mb(r->before_open.rss_kb), mb(r->after_search.rss_kb), store_rss_mb,
           mb(r->after_search.anon_kb - r->before_open.anon_kb), mb(r->after_search.file_kb - r->before_open.file_kb),
           mb(r->after_search.hwm_kb));
    printf("\n%-34s %10s %10s %10s %9s\n", "search (k=10, image space)", "p50 us", "p99 us", "recall@10", "ratio");
    printf("%-34s %10.0f %10.0f %10.4f %9s\n", "cmr_store_search", ou.p50, ou.p99, r->recall_unf, "");
    printf("%-34s %10.0f %10.0f %10s %9s\n", "  raw FAISS, same index", ru.p50, ru.p99, "", "");
    printf("%-34s %10s %10s %10s %5.2f/%.2f\n", "  overhead p50/p99", "", "", "", ou.p50 / ru.p50, ou.p99 / ru.p99);
    char label[64];
    snprintf(label, sizeof label, "cmr_store_search, %.3g%% filter", 100.0 * r->filter.matching / o->n);
    printf("%-34s %10.0f %10.0f %10.4f %9s\n", label, of.p50, of.p99, r->recall_filt, "");
    if (r->raw_filt.n)
        printf("%-34s %10.0f %10.0f %10s %5.2f/%.2f\n", "  raw FAISS + bitmap, same nprobe", rf.p50, rf.p99, "",
               of.p50 / rf.p50, of.p99 / rf.p99);
    printf("%-34s %10.0f %10.0f %10.4f\n", "cmr_store_search_exact", eu.p50, eu.p99, r->exact_agree_unf);
    printf("%-34s %10.0f %10.0f %10.4f\n", "cmr_store_search_exact, filter", ef.p50, ef.p99, r->exact_agree_filt);
    printf("\nfilter       %s: %" PRIu64 " cases (%.2f%%; store counts %" PRIu64 "), %.0f%% answered by exact "
           "subset scan, IVF nprobe %u otherwise\n",
           r->filter_desc, r->filter.matching, 100.0 * r->filter.matching / o->n, r->filt_matching_store,
           100 * r->filt_exact_share, r->filt_nprobe);
    printf("checks       raw FAISS returned our ids for %.1f%% of queries; store exact scan agrees with sgemm "
           "%.4f / %.4f (filtered)\n",
           100 * r->same_ids_as_raw, r->exact_agree_unf, r->exact_agree_filt);
    if (r->n_sweep) {
        printf("\nraw FAISS by nprobe (1 pass):  ");
        for (int i = 0; i < r->n_sweep; i++)
            printf("%s%u: %.4f @ %.0f us", i ? ", " : "", r->sweep[i].nprobe, r->sweep[i].recall,
                   r->sweep[i].p50_us);
        printf("\n");
    }
    printf("targets%s p50 <= 2 ms: %s   recall >= 0.95: %s   filtered recall >= 0.95: %s   overhead <= 1.10: %s\n",
           at_scale ? "     " : " (stated for N=1M)", t_p50 ? "met" : "MISSED", t_recall ? "met" : "MISSED",
           t_recall_f ? "met" : "MISSED", t_ratio ? "met" : "MISSED");
}

/* ---- main -------------------------------------------------------------------------------------------- */

static void usage(FILE *to)
{
    fprintf(to,
            "usage: " PROGRAM " --n N [options]\n"
            "\n"
            "Imports N synthetic cases into a store, then measures search recall@10 and latency\n"
            "(with and without a 1%% filter) against an exact scan and against FAISS on the\n"
            "store's own index.  See docs/benchmarks.md.\n"
            "  --n N              cases (required)\n"
            "  --dim D            vector dimension (default %u)\n"
            "  --queries Q        held-out queries (default 1000)\n"
            "  --rounds R         timed passes over the queries (default 3)\n"
            "  --seed S           generator seed (default 1)\n"
            "  --db DIR           store directory (default: a temporary one, removed after)\n"
            "  --reuse            DIR already holds this N and seed: skip the import\n"
            "  --keep             keep the temporary store\n"
            "  --batch B          cases per write transaction (default 10000)\n"
            "  --exact-queries E  queries also answered by cmr_store_search_exact (default 20)\n"
            "  --filter-share F   share of cases the filter matches (default 0.01)\n"
            "  --nprobe P         store setting at creation (default: the store's)\n"
            "  --factory F        store setting at creation (default: the store's)\n"
            "  --sweep            also time FAISS alone at nprobe 1, 2, 4, ... (recall/latency curve)\n"
            "  --json             machine-readable report on stdout\n",
            SYNTH_DEFAULT_DIM);
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option opts[] = {
        {"n", required_argument, NULL, 'n'},        {"dim", required_argument, NULL, 'd'},
        {"queries", required_argument, NULL, 'q'},  {"rounds", required_argument, NULL, 'r'},
        {"seed", required_argument, NULL, 's'},     {"db", required_argument, NULL, 'D'},
        {"reuse", no_argument, NULL, 'R'},          {"keep", no_argument, NULL, 'k'},
        {"batch", required_argument, NULL, 'b'},    {"exact-queries", required_argument, NULL, 'e'},
        {"filter-share", required_argument, NULL, 'f'}, {"nprobe", required_argument, NULL, 'p'},
        {"factory", required_argument, NULL, 'F'},  {"json", no_argument, NULL, 'j'},
        {"sweep", no_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},           {NULL, 0, NULL, 0},
    };
    *o = (options){.dim = SYNTH_DEFAULT_DIM, .queries = 1000, .seed = 1, .batch = 10000, .rounds = 3,
                   .exact_queries = 20, .filter_share = 0.01};
    uint64_t v;
    int opt, rc = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'n': rc = synth_parse_u64("--n", optarg, 100, MAX_CASES, &o->n); break;
        case 'd': rc = synth_parse_u64("--dim", optarg, 8, 4096, &v), o->dim = (unsigned)v; break;
        case 'q': rc = synth_parse_u64("--queries", optarg, 1, 100000, &v), o->queries = (unsigned)v; break;
        case 'r': rc = synth_parse_u64("--rounds", optarg, 1, 100, &v), o->rounds = (unsigned)v; break;
        case 's': rc = synth_parse_u64("--seed", optarg, 0, UINT64_MAX, &o->seed); break;
        case 'D': o->db = optarg; break;
        case 'R': o->reuse = 1; break;
        case 'k': o->keep = 1; break;
        case 'b': rc = synth_parse_u64("--batch", optarg, 1, 1000000, &v), o->batch = (unsigned)v; break;
        case 'e': rc = synth_parse_u64("--exact-queries", optarg, 0, 100000, &v), o->exact_queries = (unsigned)v; break;
        case 'f': {
            char *end;
            o->filter_share = strtod(optarg, &end);
            if (*end || end == optarg || !(o->filter_share > 0 && o->filter_share <= 1))
                rc = cmr_fail(CMR_EINVAL, "--filter-share: '%s' is not a share in (0, 1]", optarg);
            break;
        }
        case 'p': rc = synth_parse_u64("--nprobe", optarg, 1, 65536, &v), o->nprobe = (unsigned)v; break;
        case 'F': o->factory = optarg; break;
        case 'j': o->json = 1; break;
        case 'S': o->sweep = 1; break;
        case 'h': usage(stdout); exit(0);
        default: usage(stderr); return CMR_EINVAL;
        }
        if (rc)
            return rc;
    }
    if (!o->n || optind != argc) {
        usage(stderr);
        return cmr_fail(CMR_EINVAL, "--n is required");
    }
    if (o->reuse && !o->db)
        return cmr_fail(CMR_EINVAL, "--reuse needs --db");
    if (o->exact_queries > o->queries)
        o->exact_queries = o->queries;
    return 0;
}

int main(int argc, char **argv)
{
    options o;
    results r = {0};
    dataset d = {0};
    float *queries = NULL;
    best *gt_all = NULL, *gt_filt = NULL;
    uint64_t *shared = MAP_FAILED;
    size_t shared_bytes = 0;
    char tmpdir[] = "/var/tmp/cmr-bench-XXXXXX";
    int made_dir = 0, rc;

    if ((rc = parse_options(argc, argv, &o)))
        goto done;
    show_progress = isatty(STDERR_FILENO);
    if (!o.db) {
        if (!mkdtemp(tmpdir)) {
            rc = cmr_fail(CMR_EIO, "%s: %s", tmpdir, strerror(errno));
            goto done;
        }
        o.db = tmpdir;
        made_dir = 1;
    } else if (!o.reuse && !dir_is_empty_or_absent(o.db)) {
        rc = cmr_fail(CMR_EEXIST, "%s is not empty: remove it, or pass --reuse to measure the store in it", o.db);
        goto done;
    }

    /* The import's results and case ids come back through shared memory. */
    shared_bytes = sizeof(import_result) + o.n * sizeof(uint64_t);
    shared = mmap(NULL, shared_bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (shared == MAP_FAILED) {
        rc = cmr_fail(CMR_ENOMEM, "mmap: %s", strerror(errno));
        goto done;
    }
    import_result *imp = (import_result *)(void *)shared;
    uint64_t *id_of_row = (uint64_t *)(void *)((char *)shared + sizeof(import_result));
    if (!o.reuse) {
        memset(imp, 0, sizeof *imp);
        if ((rc = run_import(&o, imp, id_of_row)))
            goto done;
        r.import = *imp;
        r.imported = 1;
    }

    double t0 = now();
    if ((rc = dataset_generate(&o, &d)) || (rc = queries_generate(&o, &queries)))
        goto done;
    r.generate_parent_s = now() - t0;
    if ((rc = filter_choose(&d, o.filter_share, &r.filter)))
        goto done;
    char from[11], to[11];
    synth_format_date(r.filter.date_from, from);
    synth_format_date(r.filter.date_to, to);
    snprintf(r.filter_desc, sizeof r.filter_desc, "site \"%s\", study date %s..%s",
             synth_sites[r.filter.site].name, from, to);
    gt_all = malloc(o.queries * sizeof *gt_all);
    gt_filt = malloc(o.queries * sizeof *gt_filt);
    if (!gt_all || !gt_filt) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    t0 = now();
    if ((rc = ground_truth(&d, queries, o.queries, r.filter.mask, gt_all, gt_filt)))
        goto done;
    r.ground_truth_s = now() - t0;
    snprintf(r.openblas, sizeof r.openblas, "%s", openblas_get_config());
    r.openblas[strcspn(r.openblas, "\n")] = '\0';

    run_ctx ctx = {&o, &d, queries, gt_all, gt_filt, o.reuse ? NULL : id_of_row};
    if ((rc = measure(&ctx, &r)))
        goto done;
    report(&o, &r);
done:
    if (rc)
        fprintf(stderr, PROGRAM ": %s\n", cmr_errmsg());
    if (made_dir && !o.keep)
        remove_store_dir(tmpdir);
    else if (made_dir)
        fprintf(stderr, PROGRAM ": store kept in %s\n", tmpdir);
    if (shared != MAP_FAILED)
        munmap(shared, shared_bytes);
    dataset_free(&d);
    free(queries);
    free(gt_all);
    free(gt_filt);
    free(r.filter.mask);
    free(r.ours_unf.us);
    free(r.raw_unf.us);
    free(r.ours_filt.us);
    free(r.raw_filt.us);
    free(r.exact_unf.us);
    free(r.exact_filt.us);
    return rc ? 1 : 0;
}
