/* cmrsearch import: vectors computed elsewhere (.npy) plus a manifest.
 *
 * All or nothing: the manifest, both vector files and the model are checked
 * completely before the store is written, and then every case goes into one
 * write transaction, aborted on any failure. */
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"

static const char usage[] =
    "usage: cmrsearch import --db DIR --manifest FILE [--dry-run] [--json]\n"
    "\n"
    "Imports cases whose vectors were computed elsewhere: FILE is a manifest\n"
    "(format cmrsearch-import/1, see schema/import-manifest.md) naming .npy files\n"
    "of image and/or text vectors, one row per case.  Every case is checked\n"
    "before anything is written; one bad case refuses the whole import.  Cases\n"
    "whose Study Instance UID is already in the store are replaced.\n"
    "\n"
    "  --db DIR         the store (create it with 'cmrsearch init')\n"
    "  --manifest FILE  the import manifest (JSON)\n"
    "  --dry-run        check everything, write nothing (--db is then optional)\n"
    "  --json           print the outcome as one JSON document\n";

typedef struct import_job {
    cmr_import_manifest manifest;
    cmr_npy vectors[CMR_NSPACES];
    size_t n_existing; /* cases whose study is already in the store */
} import_job;

/* The row-level check of a vector file, with the case it belongs to named. */
static int check_vectors(const cmr_import_manifest *m, cmr_space space, const cmr_npy *v)
{
    const char *path = m->vector_path[space], *space_name = cmr_space_name(space);
    if (v->ndim != 2)
        return cmr_fail(CMR_EFORMAT, "%s: %s vectors must have shape (N, D), this is a 1-D "
                                     "array of %zu values", path, space_name, v->cols);
    if (v->rows != m->n_cases)
        return cmr_fail(CMR_EFORMAT, "%s: has %zu rows, but %s lists %zu cases (one row per case)",
                        path, v->rows, m->path, m->n_cases);
    if (v->cols != m->dim)
        return cmr_fail(CMR_EMODEL, "%s: %s vectors have dimension %zu, but the manifest's model "
                                    "%s has dimension %u", path, space_name, v->cols,
                        m->model_name, m->dim);
    size_t bad_row;
    int rc = cmr_npy_check_rows(path, v, &bad_row);
    if (rc) {
        /* Name the study too: a row number alone means little to a person. */
        char msg[1024];
        snprintf(msg, sizeof msg, "%s", cmr_errmsg());
        for (size_t i = 0; i < m->n_cases; i++)
            if (m->cases[i].row == bad_row)
                return cmr_fail(rc, "%s (cases[%zu], study %s)", msg, m->cases[i].index,
                                m->cases[i].c.study_uid);
        return rc;
    }
    return 0;
}

static int load_inputs(const char *manifest_path, import_job *job)
{
    int rc = cmr_import_manifest_load(manifest_path, &job->manifest);
    if (rc)
        return rc;
    for (int s = 0; s < CMR_NSPACES; s++) {
        if (!job->manifest.vector_path[s])
            continue;
        if ((rc = cmr_npy_read(job->manifest.vector_path[s], &job->vectors[s])) ||
            (rc = check_vectors(&job->manifest, (cmr_space)s, &job->vectors[s])))
            return rc;
    }
    return 0;
}

/* The store's model must be the manifest's; a store without one takes it. */
static int check_model(cmr_store *store, const cmr_import_manifest *m, int *needs_set)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    *needs_set = dim == 0;
    if (dim == 0)
        return 0;
    if (strcmp(name, m->model_name) || strcmp(hash, m->model_hash) || dim != m->dim)
        return cmr_fail(CMR_EMODEL, "%s: the vectors come from model %s (weights %s, dimension %u) "
                                    "but the store holds model %s (weights %s, dimension %u); "
                                    "vectors of different models are never mixed", m->path,
                        m->model_name, m->model_hash, m->dim, name, hash, dim);
    return 0;
}

/* Patient keys need the store's secret.  Replaced studies are counted here
 * for --dry-run; a real import counts what its transaction did. */
static int prepare_cases(cmr_store *store, import_job *job)
{
    cmr_import_manifest *m = &job->manifest;
    job->n_existing = 0;
    for (size_t i = 0; i < m->n_cases; i++) {
        cmr_import_case *ic = &m->cases[i];
        int rc;
        if (ic->patient_id) {
            if ((rc = cmr_store_patient_key(store, ic->patient_id, ic->c.patient_key)))
                return cmr_fail_context(rc, "%s: cases[%zu] (row %zu): ", m->path, ic->index, ic->row);
            ic->c.has_patient_key = 1;
        }
        uint64_t id;
        rc = cmr_store_find_uid(store, ic->c.study_uid, &id);
        if (rc == 0)
            job->n_existing++;
        else if (rc != CMR_ENOTFOUND)
            return rc;
    }
    cmr_clear_error();
    return 0;
}

static int write_cases(cmr_cli *cli, cmr_store *store, import_job *job, int needs_model)
{
    cmr_import_manifest *m = &job->manifest;
    cmr_txn *txn = NULL;
    int rc = cmr_txn_begin(store, &txn);
    if (rc)
        return rc;
    /* Bound in the same transaction: a failing import leaves no model behind. */
    if (needs_model && (rc = cmr_txn_set_model(txn, m->model_name, m->model_hash, m->dim)))
        goto fail;
    job->n_existing = 0;
    for (size_t i = 0; i < m->n_cases; i++) {
        const cmr_import_case *ic = &m->cases[i];
        const float *vec[CMR_NSPACES];
        for (int s = 0; s < CMR_NSPACES; s++)
            vec[s] = job->vectors[s].data ? job->vectors[s].data + ic->row * m->dim : NULL;
        int replaced;
        if ((rc = cmr_txn_put_ex(txn, &ic->c, vec[CMR_SPACE_IMAGE], vec[CMR_SPACE_TEXT], NULL, &replaced))) {
            rc = cmr_fail_context(rc, "%s: cases[%zu] (row %zu): nothing was imported: ", m->path,
                                  ic->index, ic->row);
            goto fail;
        }
        job->n_existing += (size_t)replaced;
        cmr_cli_progress(cli, "importing", i + 1, m->n_cases);
    }
    rc = cmr_txn_commit(txn);
    txn = NULL;
    if (rc)
        return cmr_fail_context(rc, "%s: nothing was imported: ", m->path);
    return 0;
fail:
    cmr_txn_abort(txn);
    return rc;
}

static int report(cmr_cli *cli, const char *db, const import_job *job, int dry_run)
{
    const cmr_import_manifest *m = &job->manifest;
    size_t updated = job->n_existing, inserted = m->n_cases - job->n_existing;
    if (cli->json) {
        json_t *spaces = json_array();
        for (int s = 0; s < CMR_NSPACES; s++)
            if (m->vector_path[s])
                json_array_append_new(spaces, json_string(cmr_space_name((cmr_space)s)));
        json_t *doc = json_pack("{s:o, s:o, s:b, s:I, s:o, s:o, s:{s:s, s:s, s:i}, s:o}", "db",
                                cmr_json_text(db), "manifest", cmr_json_text(m->path), "dry_run",
                                dry_run, "cases", (json_int_t)m->n_cases, "inserted",
                                db ? json_integer((json_int_t)inserted) : json_null(), "updated",
                                db ? json_integer((json_int_t)updated) : json_null(), "model",
                                "name", m->model_name, "weights_hash", m->model_hash, "dim",
                                (int)m->dim, "spaces", spaces);
        return cmr_cli_print_json(cli, doc);
    }
    const char *what = m->vector_path[0] && m->vector_path[1] ? "image and text vectors"
                       : m->vector_path[0]                    ? "image vectors"
                                                              : "text vectors";
    if (dry_run && !db)
        fprintf(cli->out, "%s: %zu cases with %s (model %s, dimension %u) are valid\n", m->path,
                m->n_cases, what, m->model_name, m->dim);
    else
        fprintf(cli->out, "%s: %s %zu cases with %s into %s: %zu new, %zu updated\n", m->path,
                dry_run ? "valid; would import" : "imported", m->n_cases, what, db, inserted,
                updated);
    return 0;
}

int cmr_cmd_import(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *manifest = NULL;
    int dry_run = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"manifest", 0, &manifest, NULL},
        {"dry-run", 0, NULL, &dry_run},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    const char *pos[1];
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof options[0], usage, pos, 0,
                              &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    if (!manifest)
        return cmr_fail(CMR_EINVAL, "--manifest FILE is required (see 'cmrsearch import --help')");
    if (!db && !dry_run)
        return cmr_fail(CMR_EINVAL, "--db DIR is required (see 'cmrsearch import --help')");

    import_job job = {0};
    cmr_store *store = NULL;
    int needs_model = 0;
    if ((rc = load_inputs(manifest, &job)))
        goto done;
    if (db) {
        if ((rc = cmr_cli_open_store(cli, db, dry_run ? CMR_STORE_RDONLY : 0, &store)) ||
            (rc = check_model(store, &job.manifest, &needs_model)) ||
            (rc = prepare_cases(store, &job)))
            goto done;
    }
    if (!dry_run) {
        if ((rc = write_cases(cli, store, &job, needs_model)))
            goto done;
    }
    if ((rc = report(cli, db, &job, dry_run)))
        goto done;
    /* Searches open the store read-only; bringing the index files up to
     * date here spares each of them catching up in memory. */
    if (!dry_run && (rc = cmr_store_flush(store)))
        rc = cmr_fail_context(rc, "the cases were imported, but updating the indexes failed "
                                  "(run 'cmrsearch reindex --db %s'): ", db);
done:
    rc = cmr_cli_close_store(store, rc);
    for (int s = 0; s < CMR_NSPACES; s++)
        cmr_npy_free(&job.vectors[s]);
    cmr_import_manifest_free(&job.manifest);
    return rc;
}
