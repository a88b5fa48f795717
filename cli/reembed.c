/* Moving a store to another model: every case's study is read again from the
 * folder recorded at index time and embedded, with its impression, by the new
 * model; then one write transaction replaces the model and every vector
 * (cmr_txn_replace_model), so the store never holds two models' vectors and a
 * failure anywhere before the commit leaves it as it was. */
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"

typedef struct reembed_case {
    cmr_case *record;
    float *image, *text; /* NULL: not available */
} reembed_case;

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Image vectors of the cases whose study folders scan to their UIDs. */
static int embed_studies(cmr_cli *cli, cmr_model *model, unsigned threads, reembed_case *cases, size_t n)
{
    unsigned dim = cmr_model_dim(model);
    char **folders = calloc(n ? n : 1, sizeof *folders);
    cmr_archive *archive = NULL;
    size_t n_folders = 0;
    int rc = 0;
    if (!folders)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    /* A folder that is gone leaves its case unreadable (the caller decides);
     * the scan itself would stop at it. */
    struct stat st;
    for (size_t i = 0; i < n; i++)
        if (cases[i].record->n_sources && stat(cases[i].record->sources[0], &st) == 0 && S_ISDIR(st.st_mode))
            folders[n_folders++] = (char *)cases[i].record->sources[0];
    qsort(folders, n_folders, sizeof *folders, cmp_str);
    size_t unique = 0;
    for (size_t i = 0; i < n_folders; i++)
        if (!unique || strcmp(folders[unique - 1], folders[i]))
            folders[unique++] = folders[i];
    cmr_input_spec spec;
    if ((rc = cmr_cli_input_spec(model, &spec)))
        goto done;
    if (unique) {
        cmr_scan_options so = {.threads = threads};
        if ((rc = cmr_archive_scan((const char *const *)folders, unique, &so, &archive)))
            goto done;
    }
    size_t n_studies = archive ? archive->n_studies : 0, done_count = 0;
    int failed = 0;
#pragma omp parallel for schedule(dynamic, 1)
    for (size_t s = 0; s < n_studies; s++) {
        const cmr_study *st = &archive->studies[s];
        reembed_case *c = NULL;
        for (size_t i = 0; i < n && !c; i++)
            if (!strcmp(cases[i].record->study_uid, st->uid))
                c = &cases[i];
        float *tensor = NULL, *v = NULL;
        cmr_tensor_info info;
        if (c && !c->image && cmr_study_tensor(st, &spec, &tensor, &info) == 0 && (v = malloc(dim * sizeof *v))) {
            int erc;
            /* One model handle: its workspace is not shared between threads. */
#pragma omp critical(cmr_reembed_model)
            erc = cmr_model_encode_study(model, tensor, spec.frames, v);
            if (erc == 0) {
                c->image = v;
                v = NULL;
            } else {
#pragma omp atomic write
                failed = erc;
            }
        }
        free(v);
        free(tensor);
#pragma omp critical(cmr_reembed_progress)
        cmr_cli_progress(cli, "re-embedding studies", ++done_count, n_studies);
    }
    if (failed)
        rc = cmr_fail(failed, "re-embedding: the model failed on a study");
done:
    cmr_archive_free(archive);
    free(folders);
    return rc;
}

int cmr_cli_reembed(cmr_cli *cli, cmr_store *store, cmr_model *model, unsigned threads, int keep_unreadable,
                    cmr_reembed_summary *summary)
{
    memset(summary, 0, sizeof *summary);
    uint64_t *ids = NULL;
    size_t n = 0;
    reembed_case *cases = NULL;
    cmr_findings *findings = NULL;
    cmr_txn *txn = NULL;
    unsigned dim = cmr_model_dim(model);
    int rc = cmr_store_list(store, &ids, &n);
    if (rc)
        return rc;
    if (!(cases = calloc(n ? n : 1, sizeof *cases))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = cmr_store_get(store, ids[i], &cases[i].record)))
            goto done;
    if ((rc = embed_studies(cli, model, threads, cases, n)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        const char *imp = cases[i].record->impression;
        if (!cases[i].image)
            summary->unreadable++;
        if (imp && *imp) {
            if (!(cases[i].text = malloc(dim * sizeof(float)))) {
                rc = cmr_fail(CMR_ENOMEM, "out of memory");
                goto done;
            }
            if ((rc = cmr_model_encode_text(model, imp, cases[i].text)))
                goto done;
        }
    }
    if (summary->unreadable && !keep_unreadable) {
        for (size_t i = 0; i < n; i++)
            if (!cases[i].image) {
                rc = cmr_fail(CMR_ENOTFOUND,
                              "%zu of %zu studies could not be read again (the first: case %llu, study %s, from %s); "
                              "nothing was changed.  Restore the folders, or give --keep-unreadable to keep those "
                              "cases without an image vector",
                              summary->unreadable, n, (unsigned long long)cases[i].record->id,
                              cases[i].record->study_uid,
                              cases[i].record->n_sources ? cases[i].record->sources[0] : "(no folder recorded)");
                goto done;
            }
    }
    /* The new model's finding scores are written with each case. */
    if ((rc = cmr_findings_new(model, &findings)))
        goto done;
    cmr_store_set_scorer(store, cmr_findings_store_scorer, findings);
    if ((rc = cmr_txn_begin(store, &txn)) ||
        (rc = cmr_txn_replace_model(txn, cmr_model_name(model), cmr_model_hash(model), dim)))
        goto done;
    for (size_t i = 0; i < n; i++) {
        cmr_case c = *cases[i].record;
        c.n_findings = 0; /* the old model's scores: the scorer writes the new ones */
        c.findings = NULL;
        if ((rc = cmr_txn_put(txn, &c, cases[i].image, cases[i].text, NULL)))
            goto done;
        if (!cases[i].image && (rc = cmr_txn_set_findings(txn, cases[i].record->id, 0, NULL)))
            goto done;
        summary->cases++;
        summary->images += cases[i].image != NULL;
        summary->texts += cases[i].text != NULL;
    }
    rc = cmr_txn_commit(txn);
    txn = NULL;
    if (rc == 0)
        rc = cmr_store_flush(store);
done:
    cmr_txn_abort(txn);
    cmr_store_set_scorer(store, NULL, NULL);
    cmr_findings_free(findings);
    for (size_t i = 0; cases && i < n; i++) {
        cmr_case_free(cases[i].record);
        free(cases[i].image);
        free(cases[i].text);
    }
    free(cases);
    free(ids);
    return rc;
}
