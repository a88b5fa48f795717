/* cmrsearch init, show, verify, reindex, stats: looking after a store. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmr_cli.h"

#define N_OPTIONS(a) (sizeof(a) / sizeof((a)[0]))

/* ---- init ------------------------------------------------------------------------ */

static const char init_usage[] =
    "usage: cmrsearch init --db DIR [--factory S] [--ivf-threshold N] [--nprobe N]\n"
    "                      [--model-name NAME --model-hash HASH --dim D] [--json]\n"
    "\n"
    "Creates a store in DIR (which must not exist, or be empty), with a new site\n"
    "secret for patient keys.  Index settings are fixed here; the model may be\n"
    "fixed here or is taken from the first import.\n"
    "\n"
    "  --factory S        FAISS factory string for large stores (default IVF{nlist},Flat)\n"
    "  --ivf-threshold N  exact flat index below N vectors (default 20000)\n"
    "  --nprobe N         IVF lists probed per query (default automatic)\n"
    "  --model-name NAME, --model-hash HASH, --dim D\n"
    "                     bind the store to this model now (all three together)\n"
    "  --json             print the outcome as one JSON document\n";

/* init never adopts a directory holding other things: a mistyped --db must
 * not scatter store files into someone's home directory. */
static int check_new_store_dir(const char *db)
{
    DIR *d = opendir(db);
    if (!d)
        return errno == ENOENT ? 0 : cmr_fail(CMR_EIO, "%s: %s", db, strerror(errno));
    struct dirent *e;
    int has_store = 0, other = 0;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (!strcmp(e->d_name, "data.mdb"))
            has_store = 1;
        else
            other = 1;
    }
    closedir(d);
    if (has_store)
        return cmr_fail(CMR_EEXIST, "%s already holds a store (settings are fixed when a store "
                                    "is created)", db);
    if (other)
        return cmr_fail(CMR_EEXIST, "%s exists and is not empty; give a new or empty directory",
                        db);
    return 0;
}

int cmr_cmd_init(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *factory = NULL, *threshold = NULL, *nprobe = NULL, *model = NULL,
               *hash = NULL, *dim_text = NULL;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"factory", 0, &factory, NULL},
        {"ivf-threshold", 0, &threshold, NULL},
        {"nprobe", 0, &nprobe, NULL},
        {"model-name", 0, &model, NULL},
        {"model-hash", 0, &hash, NULL},
        {"dim", 0, &dim_text, NULL},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), init_usage, NULL, 0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    if (!db)
        return cmr_fail(CMR_EINVAL, "--db DIR is required (see 'cmrsearch init --help')");
    cmr_store_config config = {.factory = factory};
    uint64_t v, dim = 0;
    if (threshold) {
        if ((rc = cmr_cli_parse_u64("--ivf-threshold", threshold, 1, UINT64_MAX, &v)))
            return rc;
        config.ivf_threshold = v;
    }
    if (nprobe) {
        if ((rc = cmr_cli_parse_u64("--nprobe", nprobe, 1, 65536, &v)))
            return rc;
        config.nprobe = (unsigned)v;
    }
    if ((model || hash || dim_text) && !(model && hash && dim_text))
        return cmr_fail(CMR_EINVAL, "--model-name, --model-hash and --dim go together");
    if (dim_text && (rc = cmr_cli_parse_u64("--dim", dim_text, 1, 65536, &dim)))
        return rc;
    if (factory && !*factory)
        return cmr_fail(CMR_EINVAL, "--factory: empty factory string");
    if ((rc = check_new_store_dir(db)))
        return rc;

    cmr_store *store = NULL;
    if ((rc = cmr_store_open(db, CMR_STORE_CREATE, &config, &store)))
        return rc;
    if (model && (rc = cmr_store_set_model(store, model, hash, (unsigned)dim)))
        goto done;
    if (cli->json) {
        json_t *m = model ? json_pack("{s:o, s:o, s:i}", "name", cmr_json_text(model),
                                      "weights_hash", cmr_json_text(hash), "dim", (int)dim)
                          : json_null();
        rc = cmr_cli_print_json(
            cli, json_pack("{s:o, s:b, s:{s:o, s:o, s:o}, s:o}", "db", cmr_json_text(db), "created", 1,
                           "config", "factory", cmr_json_text(factory), "ivf_threshold",
                           threshold ? json_integer((json_int_t)config.ivf_threshold) : json_null(),
                           "nprobe", nprobe ? json_integer((json_int_t)config.nprobe) : json_null(),
                           "model", m));
    } else {
        fprintf(cli->out, "created store %s\n", db);
        if (model)
            fprintf(cli->out, "model %s (weights %s, dimension %u)\n", model, hash, (unsigned)dim);
        else
            fprintf(cli->out, "no model yet: the first import sets it\n");
    }
done:
    rc = cmr_cli_close_store(store, rc);
    return rc;
}

/* ---- show ------------------------------------------------------------------------- */

static const char show_usage[] =
    "usage: cmrsearch show --db DIR [--json] ID|UID\n"
    "\n"
    "Prints one case: its record, views, diagnoses, impression, sources, which\n"
    "vectors it has and from which model.  ID is a case id; an argument with a\n"
    "dot is a Study Instance UID.  Patients appear only as their keyed hash.\n"
    "\n"
    "  --json   print the case as one JSON document\n";

int cmr_cmd_show(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *which[1] = {NULL};
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos = 0;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), show_usage, which, 1, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    if (n_pos != 1)
        return cmr_fail(CMR_EINVAL, "which case? give its id or Study Instance UID (see "
                                    "'cmrsearch show --help')");
    uint64_t id = 0;
    if (!strchr(which[0], '.') && (rc = cmr_cli_parse_u64("case id", which[0], 1, UINT64_MAX, &id)))
        return rc;
    cmr_store *store = NULL;
    cmr_case *c = NULL;
    if ((rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &store)))
        goto done;
    if (!id && (rc = cmr_store_find_uid(store, which[0], &id)))
        goto done;
    if ((rc = cmr_store_get(store, id, &c)))
        goto done;
    if (cli->json)
        rc = cmr_cli_print_json(cli, cmr_case_to_json(c));
    else
        cmr_case_print(cli->out, c);
done:
    cmr_case_free(c);
    cmr_store_close(store);
    return rc;
}

/* ---- verify ------------------------------------------------------------------------- */

static const char verify_usage[] =
    "usage: cmrsearch verify --db DIR [--read-only] [--json]\n"
    "\n"
    "Checks LMDB records, vectors and secondary keys against each other and the\n"
    "index files against LMDB.  Exit status 0 only if the store is sound, 2 if a\n"
    "problem was found.  First brings the index files up to date (a stale index\n"
    "after a crash is expected, and not a problem) unless --read-only.\n"
    "\n"
    "  --read-only   do not write anything, not even up-to-date indexes\n"
    "  --json        print the report as one JSON document\n";

static json_t *strings_to_json(char **items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        json_array_append_new(a, cmr_json_text(items[i]));
    return a;
}

int cmr_cmd_verify(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL;
    int read_only = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"read-only", 0, NULL, &read_only},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), verify_usage, NULL, 0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_store *store = NULL;
    cmr_verify_report *report = NULL;
    char flush_problem[1024] = "";
    if ((rc = cmr_cli_open_store(cli, db, read_only ? CMR_STORE_RDONLY : 0, &store)))
        goto done;
    /* A flush failure is itself a finding; verify still examines the rest. */
    if (!read_only && (rc = cmr_store_flush(store)))
        snprintf(flush_problem, sizeof flush_problem, "bringing the indexes up to date failed: %s",
                 cmr_errmsg());
    if ((rc = cmr_store_verify(store, &report)))
        goto done;
    size_t n_problems = report->n_problems + (flush_problem[0] ? 1 : 0);
    if (cli->json) {
        json_t *problems = strings_to_json(report->problems, report->n_problems);
        if (problems && flush_problem[0])
            json_array_append_new(problems, cmr_json_text(flush_problem));
        rc = cmr_cli_print_json(
            cli, json_pack("{s:o, s:b, s:o, s:o, s:I, s:I, s:I}", "db", cmr_json_text(db), "sound", n_problems == 0,
                           "problems", problems, "notes",
                           strings_to_json(report->notes, report->n_notes), "cases_checked",
                           (json_int_t)report->cases_checked, "vectors_checked",
                           (json_int_t)report->vectors_checked, "index_probes",
                           (json_int_t)report->index_probes));
        if (rc)
            goto done;
    } else {
        for (size_t i = 0; i < report->n_problems; i++)
            fprintf(cli->out, "problem: %s\n", report->problems[i]);
        if (flush_problem[0])
            fprintf(cli->out, "problem: %s\n", flush_problem);
        for (size_t i = 0; i < report->n_notes; i++)
            fprintf(cli->out, "note: %s\n", report->notes[i]);
        fprintf(cli->out, "%s: %llu cases, %llu vectors, %llu index probes checked: %s\n", db,
                (unsigned long long)report->cases_checked,
                (unsigned long long)report->vectors_checked,
                (unsigned long long)report->index_probes, n_problems ? "NOT SOUND" : "sound");
    }
    if (n_problems)
        rc = cmr_fail(CMR_ECORRUPT, "%s: %zu problem%s found", db, n_problems,
                      n_problems == 1 ? "" : "s");
done:
    cmr_verify_report_free(report);
    /* The flush already happened; a failure on close is only news if
     * nothing else went wrong. */
    return cmr_cli_close_store(store, rc);
}

/* ---- reindex ------------------------------------------------------------------------- */

static const char reindex_usage[] =
    "usage: cmrsearch reindex --db DIR [--json]\n"
    "\n"
    "Rebuilds both FAISS indexes from LMDB alone (retraining IVF) and writes them.\n"
    "Progress goes to stderr when it is a terminal.\n"
    "\n"
    "  --json   print the resulting index state as one JSON document\n";

static void print_stats(FILE *out, const char *db, const cmr_store_stats *st, const cmr_store *store)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    fprintf(out, "store       %s\n", db);
    fprintf(out, "cases       %llu\n", (unsigned long long)st->cases);
    fprintf(out, "generation  %llu\n", (unsigned long long)st->generation);
    if (dim)
        fprintf(out, "model       %s (weights %s, dimension %u)\n", name, hash, dim);
    else
        fprintf(out, "model       none yet\n");
    for (int s = 0; s < CMR_NSPACES; s++) {
        const cmr_index_info *ix = &st->index[s];
        fprintf(out, "%-11s %llu vectors; index %s%s%s, %llu entries, generation %llu%s", cmr_space_name((cmr_space)s),
                (unsigned long long)st->vectors[s], ix->kind ? ix->kind : "none",
                ix->factory[0] ? " " : "", ix->factory, (unsigned long long)ix->ntotal,
                (unsigned long long)ix->generation,
                ix->on_disk_current ? ", file current" : ", file behind");
        if (ix->nlist)
            fprintf(out, ", nlist %u, nprobe %u", ix->nlist, ix->nprobe);
        fputc('\n', out);
    }
}

static int print_store_state(cmr_cli *cli, const char *db, cmr_store *store)
{
    cmr_store_stats st;
    int rc = cmr_store_stats_get(store, &st);
    if (rc)
        return rc;
    if (!cli->json) {
        print_stats(cli->out, db, &st, store);
        return 0;
    }
    json_t *doc = cmr_stats_to_json(&st, store);
    if (doc && json_object_set_new(doc, "db", cmr_json_text(db))) {
        json_decref(doc);
        doc = NULL;
    }
    return cmr_cli_print_json(cli, doc);
}

int cmr_cmd_reindex(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), reindex_usage, NULL, 0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_store *store = NULL;
    if ((rc = cmr_cli_open_store(cli, db, 0, &store)) || (rc = cmr_store_reindex(store)))
        goto done;
    if (!cli->json)
        fprintf(cli->out, "rebuilt the indexes of %s from LMDB\n", db);
    rc = print_store_state(cli, db, store);
done:
    rc = cmr_cli_close_store(store, rc);
    return rc;
}

/* ---- stats ----------------------------------------------------------------------------- */

static const char stats_usage[] =
    "usage: cmrsearch stats --db DIR [--json]     (also: cmrsearch info)\n"
    "\n"
    "Prints the number of cases and vectors, the model, and the state of each\n"
    "index.  Opens the store read-only.\n"
    "\n"
    "  --json   print the statistics as one JSON document\n";

int cmr_cmd_stats(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), stats_usage, NULL, 0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_store *store = NULL;
    if (!(rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &store)))
        rc = print_store_state(cli, db, store);
    cmr_store_close(store);
    return rc;
}
