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
 *
 * Here: options, the report and main; steps 1 and 2 are in
 * bench_store_data.c, step 3 in bench_store_measure.c (bench_store.h). */
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
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#include <jansson.h>

#include "bench_store.h"
#include "cmr_error.h"

#define PROGRAM "bench-store"
#define MAX_CASES 50000000ull

/* ---- small utilities ------------------------------------------------------------------- */

double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

int show_progress;

void progress(const char *fmt, ...)
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

void progress_done(void)
{
    if (show_progress)
        fputs("\r\033[K", stderr);
}

void store_progress(void *user, const char *phase, uint64_t done, uint64_t total)
{
    (void)user;
    progress("%s %" PRIu64 "/%" PRIu64, phase, done, total);
}

proc_memory read_memory(void)
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
double percentile(double *v, size_t n, double p)
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
