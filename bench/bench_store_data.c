/* bench-store: the synthetic collection, its import (in a child process), the
 * 1% filter and the exact ground truth.  See bench_store.c. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cblas.h>

#include "bench_store.h"
#include "cmr_error.h"

#define GT_BLOCK 8192 /* database rows per sgemm block */

/* ---- the synthetic collection ------------------------------------------------------------------ */

synth_params params_for(const options *o, unsigned stream)
{
    return (synth_params){.dim = o->dim, .n_clusters = 0, .seed = o->seed, .stream = stream};
}

void dataset_free(dataset *d)
{
    free(d->image);
    free(d->meta);
    free(d->uid);
    memset(d, 0, sizeof *d);
}

int dataset_generate(const options *o, dataset *d)
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

int queries_generate(const options *o, float **out)
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
int run_import(const options *o, import_result *res, uint64_t *id_of_row)
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

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* The smallest site that holds the target share of all cases, and a window
 * of its study dates holding exactly that share: a selective filter on
 * attributes that are independent of the vectors, so its matches are spread
 * over every cluster and IVF list. */
int filter_choose(const dataset *d, double share, filter_spec *f)
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
int ground_truth(const dataset *d, const float *queries, unsigned nq, const uint8_t *mask,
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

int cmp_id_row(const void *a, const void *b)
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
double recall(const uint64_t *ids, size_t n_ids, const best *truth, const id_row *map, uint64_t n)
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
