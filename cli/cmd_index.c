/* cmrsearch index: ingest archive folders of DICOM studies and reports. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"
#include "cmr_ingest.h"
#include "cmr_model.h"
#include "cmr_searcher.h"

static const char usage[] =
    "usage: cmrsearch index --db DIR [--model DIR | --no-model] [--manifest FILE] [--cda-schema XSD]\n"
    "                       [--threads N] [--force] [--json] ARCHIVE...\n"
    "       cmrsearch index --db DIR --rescore [--model DIR] [--json]\n"
    "       cmrsearch index --db DIR --reembed --model DIR [--keep-unreadable] [--json]\n"
    "\n"
    "Reads every DICOM study under the ARCHIVE folders (any depth, any file\n"
    "names), labels each series (cine SAX / 2ch / 3ch / 4ch, LGE SAX / 2ch /\n"
    "3ch / 4ch, or other, with the reason), links reports (HL7 CDA, plain text\n"
    "with an IMPRESSION heading, DICOM SR) by Study Instance UID, accession\n"
    "number, manifest or folder, and stores one case per study.  Patient IDs\n"
    "become keyed hashes; names and other identifying tags are not copied.\n"
    "Re-running skips studies whose files and reports are unchanged.\n"
    "\n"
    "Every study is embedded (its model input built as the model declares) and\n"
    "its impression too, by --model DIR, else $CMRSEARCH_MODEL, else the default\n"
    "model that ships with cmrsearch; the store is bound to that model (name and\n"
    "weights hash) and refuses any other.  With --no-model (or no model\n"
    "installed) cases are stored without vectors (shown as such by 'show');\n"
    "searches ignore them until a later run embeds them.\n"
    "\n"
    "Each embedded study also gets its finding scores (the prompt bank's\n"
    "findings and diagnoses, docs/searching.md), stored with the case so that\n"
    "--where 'has lge' filters on them; cases stored before finding scores\n"
    "existed get theirs on the next run.  --rescore recomputes the scores of\n"
    "every stored case from its image vector, reading no archive (after a\n"
    "change of the prompt bank).  --reembed moves the store to another model:\n"
    "every case's study is read again from the folder recorded at index time\n"
    "and embedded with its impression by --model, then the model, every vector\n"
    "and every finding score are replaced in one transaction (a failure before\n"
    "it changes nothing).  A study that cannot be read again stops it, unless\n"
    "--keep-unreadable keeps such cases with their impression vector only.\n"
    "\n"
    "  --model DIR       model directory (docs/model-format.md)\n"
    "  --no-model        store cases without vectors\n"
    "  --manifest FILE   archive manifest linking studies and reports\n"
    "                    (schema/archive-manifest.xsd)\n"
    "  --cda-schema XSD  validate CDA reports against this schema; problems are\n"
    "                    listed, the report is still read\n"
    "  --threads N       header-reading threads (default: all CPUs)\n"
    "  --force           re-ingest unchanged studies too\n"
    "  --rescore         recompute every case's finding scores with the model\n"
    "  --reembed         re-embed every case with --model and bind the store to it\n"
    "  --json            print the run summary as one JSON document\n";

static json_t *string_array(char *const *items, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(a, json_string(items[i]));
    return a;
}

static int print_summary(cmr_cli *cli, const char *db, const cmr_ingest_summary *s, int with_model)
{
    if (cli->json) {
        json_t *labels = json_object(), *skips = json_array();
        for (int l = 0; l < CMR_SERIES_LABEL_COUNT_; l++)
            json_object_set_new(labels, cmr_series_label_name((cmr_series_label)l),
                                json_integer((json_int_t)s->series_by_label[l]));
        for (size_t i = 0; i < s->n_skips; i++)
            json_array_append_new(skips, json_pack("{s:s, s:s}", "what", s->skips[i].what, "reason",
                                                   s->skips[i].reason));
        json_t *doc = json_pack(
            "{s:s, s:{s:I, s:I, s:I}, s:{s:I, s:I, s:I, s:I, s:I, s:I, s:I}, s:o, s:{s:I, s:I, s:I, s:I}, s:o, s:o}",
            "db", db, "files", "seen", (json_int_t)s->files_seen, "dicom", (json_int_t)s->dicom_files,
            "not_dicom", (json_int_t)s->non_dicom_files, "studies", "found", (json_int_t)s->studies_found,
            "new", (json_int_t)s->studies_new, "updated", (json_int_t)s->studies_updated, "unchanged",
            (json_int_t)s->studies_unchanged, "skipped", (json_int_t)s->studies_skipped, "without_vectors",
            (json_int_t)s->studies_without_vectors, "without_impression",
            (json_int_t)s->studies_without_impression, "series", labels, "reports", "found",
            (json_int_t)s->reports_found, "linked", (json_int_t)s->reports_linked, "unreadable",
            (json_int_t)s->reports_unreadable, "unlinked", (json_int_t)s->reports_unlinked, "skipped", skips,
            "issues", string_array(s->issues, s->n_issues));
        return cmr_cli_print_json(cli, doc);
    }
    FILE *o = cli->out;
    fprintf(o, "index %s\n", db);
    fprintf(o, "  files     %zu seen, %zu DICOM, %zu other\n", s->files_seen, s->dicom_files, s->non_dicom_files);
    fprintf(o, "  studies   %zu found: %zu new, %zu updated, %zu unchanged, %zu skipped\n", s->studies_found,
            s->studies_new, s->studies_updated, s->studies_unchanged, s->studies_skipped);
    if (s->studies_without_vectors)
        fprintf(o, "            %zu stored without vectors%s\n", s->studies_without_vectors,
                with_model ? " (see the notes)" : " (no --model given)");
    fprintf(o, "  series   ");
    for (int l = 1; l < CMR_SERIES_LABEL_COUNT_; l++)
        if (s->series_by_label[l])
            fprintf(o, " %s %zu,", cmr_series_label_name((cmr_series_label)l), s->series_by_label[l]);
    fprintf(o, " other %zu\n", s->series_by_label[CMR_SERIES_OTHER]);
    fprintf(o, "  reports   %zu found: %zu linked, %zu unlinked, %zu unreadable; %zu studies without an impression\n",
            s->reports_found, s->reports_linked, s->reports_unlinked, s->reports_unreadable,
            s->studies_without_impression);
    if (s->n_skips) {
        fprintf(o, "skipped (%zu):\n", s->n_skips);
        for (size_t i = 0; i < s->n_skips; i++)
            fprintf(o, "  %s: %s\n", s->skips[i].what, s->skips[i].reason);
    }
    if (s->n_issues) {
        /* Skips are all shown; notes (gaps, dates, ...) can be one per study
         * of a large archive: the first ones, and the rest with --json. */
        enum { SHOWN = 20 };
        fprintf(o, "notes (%zu):\n", s->n_issues);
        for (size_t i = 0; i < s->n_issues && i < SHOWN; i++)
            fprintf(o, "  %s\n", s->issues[i]);
        if (s->n_issues > SHOWN)
            fprintf(o, "  ... and %zu more (--json lists every note)\n", s->n_issues - SHOWN);
    }
    return 0;
}

/* The ingest's embedding callback: the study tensor and the impression
 * through the model's two towers. */
static int embed_with_model(void *user, const float *tensor, const cmr_tensor_info *info, const char *impression,
                            float *image_vec, float *text_vec, int *has_text)
{
    cmr_model *m = user;
    (void)info;
    *has_text = 0;
    int rc;
    if (tensor && (rc = cmr_model_encode_study(m, tensor, cmr_model_input_spec(m)->frames, image_vec)))
        return rc;
    if (impression && *impression) {
        if ((rc = cmr_model_encode_text(m, impression, text_vec)))
            return rc;
        *has_text = 1;
    }
    return 0;
}

int cmr_cli_input_spec(const cmr_model *m, cmr_input_spec *spec)
{
    return cmr_cli_spec_from(cmr_model_input_spec(m), cmr_model_name(m), spec);
}

int cmr_cli_spec_from(const cmr_model_input *in, const char *model_name, cmr_input_spec *spec)
{
    return cmr_searcher_spec_from(in, model_name, spec);
}

/* index --rescore: every case's finding scores again, from its stored image
 * vector, with the store's model. */
static int index_rescore(cmr_cli *cli, const char *db, const char *model_path, int no_model, size_t n_roots)
{
    if (no_model)
        return cmr_fail(CMR_EINVAL, "--rescore needs the model; it cannot be combined with --no-model");
    if (n_roots)
        return cmr_fail(CMR_EINVAL, "--rescore reads no archive: give no ARCHIVE folder");
    cmr_store *store;
    cmr_model *model = NULL;
    cmr_findings *findings = NULL;
    size_t n = 0;
    unsigned dim;
    int rc = cmr_cli_open_store(cli, db, 0, &store);
    if (rc)
        return rc;
    cmr_store_model(store, NULL, NULL, &dim);
    if (!dim) {
        rc = cmr_fail(CMR_ENOTFOUND, "%s: the store has no vectors, so nothing to score (index it with a model)", db);
        goto done;
    }
    if ((rc = cmr_cli_open_model(model_path, store, 1, &model)) || (rc = cmr_findings_new(model, &findings)) ||
        (rc = cmr_findings_rescore(store, findings, &n)) || (rc = cmr_store_flush(store)))
        goto done;
    if (cli->json)
        rc = cmr_cli_print_json(cli, json_pack("{s:s, s:I, s:I}", "db", db, "rescored", (json_int_t)n, "findings",
                                               (json_int_t)cmr_findings_count(findings)));
    else
        fprintf(cli->out, "rescored %zu cases: %zu finding scores each\n", n, cmr_findings_count(findings));
done:
    cmr_findings_free(findings);
    cmr_model_close(model);
    return cmr_cli_close_store(store, rc);
}

static int index_reembed(cmr_cli *cli, const char *db, const char *model_path, int no_model, size_t n_roots,
                         unsigned threads, int keep_unreadable)
{
    if (no_model || !model_path)
        return cmr_fail(CMR_EINVAL, "--reembed needs the new model: give --model DIR");
    if (n_roots)
        return cmr_fail(CMR_EINVAL, "--reembed reads the folders recorded in the store: give no ARCHIVE folder");
    cmr_store *store;
    cmr_model *model = NULL;
    cmr_reembed_summary sum;
    int rc = cmr_cli_open_store(cli, db, 0, &store);
    if (rc)
        return rc;
    cmr_store_set_progress(store, cmr_cli_progress, cli);
    if ((rc = cmr_cli_open_model(model_path, NULL, 1, &model)) ||
        (rc = cmr_cli_reembed(cli, store, model, threads, keep_unreadable, &sum)))
        goto done;
    if (cli->json)
        rc = cmr_cli_print_json(cli, json_pack("{s:s, s:s, s:s, s:I, s:I, s:I, s:I}", "db", db, "model",
                                               cmr_model_name(model), "weights_hash", cmr_model_hash(model), "cases",
                                               (json_int_t)sum.cases, "image_vectors", (json_int_t)sum.images,
                                               "text_vectors", (json_int_t)sum.texts, "unreadable",
                                               (json_int_t)sum.unreadable));
    else
        fprintf(cli->out, "re-embedded %zu cases with %s (weights %.12s...): %zu image and %zu impression vectors%s\n",
                sum.cases, cmr_model_name(model), cmr_model_hash(model), sum.images, sum.texts,
                sum.unreadable ? "; studies that could not be read again keep their impression vector only" : "");
done:
    cmr_model_close(model);
    return cmr_cli_close_store(store, rc);
}

static int index_archives(cmr_cli *cli, const char *db, const char *model_path, int no_model, const char *manifest,
                          const char *cda_schema, int force, unsigned threads, const char *const *roots, size_t n_roots);

static void on_progress(void *user, const char *phase, size_t done, size_t total)
{
    cmr_cli_progress(user, phase, done, total);
}

int cmr_cmd_index(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *manifest = NULL, *cda_schema = NULL, *threads_text = NULL, *model_path = NULL;
    int force = 0, no_model = 0, rescore = 0, reembed = 0, keep_unreadable = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"model", 0, &model_path, NULL},
        {"no-model", 0, NULL, &no_model},
        {"manifest", 0, &manifest, NULL},
        {"cda-schema", 0, &cda_schema, NULL},
        {"threads", 0, &threads_text, NULL},
        {"force", 0, NULL, &force},
        {"rescore", 0, NULL, &rescore},
        {"reembed", 0, NULL, &reembed},
        {"keep-unreadable", 0, NULL, &keep_unreadable},
        {"json", 0, NULL, &cli->json},
    };
    enum { MAX_ROOTS = 256 };
    const char *roots[MAX_ROOTS];
    size_t n_roots;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof *options, usage, roots, MAX_ROOTS,
                              &n_roots);
    if (rc)
        return rc < 0 ? rc : 0;
    if (rescore && reembed)
        return cmr_fail(CMR_EINVAL, "--reembed writes new finding scores itself: give it without --rescore");
    if (keep_unreadable && !reembed)
        return cmr_fail(CMR_EINVAL, "--keep-unreadable applies to --reembed");
    if (rescore)
        return index_rescore(cli, db, model_path, no_model, n_roots);
    uint64_t threads = 0;
    if (threads_text && (rc = cmr_cli_parse_u64("--threads", threads_text, 1, 64, &threads)))
        return rc;
    if (reembed)
        return index_reembed(cli, db, model_path, no_model, n_roots, (unsigned)threads, keep_unreadable);
    if (!n_roots)
        return cmr_fail(CMR_EINVAL, "name at least one ARCHIVE folder (see 'cmrsearch index --help')");
    /* The store records where each study was read: absolute, so that train
     * and --reembed find it again from any working directory. */
    char *absolute[MAX_ROOTS] = {0};
    for (size_t i = 0; i < n_roots; i++) {
        if (!(absolute[i] = realpath(roots[i], NULL))) {
            rc = cmr_fail(CMR_ENOTFOUND, "%s: %s", roots[i], strerror(errno));
            for (size_t j = 0; j < i; j++)
                free(absolute[j]);
            return rc;
        }
        roots[i] = absolute[i];
    }
    rc = index_archives(cli, db, model_path, no_model, manifest, cda_schema, force, (unsigned)threads, roots, n_roots);
    for (size_t i = 0; i < n_roots; i++)
        free(absolute[i]);
    return rc;
}

static int index_archives(cmr_cli *cli, const char *db, const char *model_path, int no_model, const char *manifest,
                          const char *cda_schema, int force, unsigned threads, const char *const *roots, size_t n_roots)
{
    int rc;
    cmr_store *store;
    if ((rc = cmr_cli_open_store(cli, db, 0, &store)))
        return rc;
    /* Refuse a model other than the store's before reading the archive,
     * not after the first study. */
    cmr_model *model = NULL;
    cmr_input_spec spec;
    if (!no_model && ((rc = cmr_cli_open_model(model_path, store, 0, &model)) ||
                      (model && (rc = cmr_cli_input_spec(model, &spec))))) {
        cmr_model_close(model);
        return cmr_cli_close_store(store, rc);
    }
    cmr_store_set_progress(store, cmr_cli_progress, cli);
    /* Finding scores are computed in the store's write transaction of each
     * case, from the image vector just embedded. */
    cmr_findings *findings = NULL;
    if (model && (rc = cmr_findings_new(model, &findings))) {
        cmr_model_close(model);
        return cmr_cli_close_store(store, rc);
    }
    if (findings)
        cmr_store_set_scorer(store, cmr_findings_store_scorer, findings);
    cmr_ingest_options opts = {
        .threads = threads,
        .manifest_path = manifest,
        .cda_schema_path = cda_schema,
        .force = force,
        .progress = on_progress,
        .progress_user = cli,
    };
    if (model) {
        opts.spec = &spec;
        opts.embed = embed_with_model;
        opts.embed_user = model;
        opts.model_name = cmr_model_name(model);
        opts.model_hash = cmr_model_hash(model);
        opts.dim = cmr_model_dim(model);
    }
    cmr_ingest_summary *summary = NULL;
    rc = cmr_ingest(store, roots, n_roots, &opts, &summary);
    /* Studies skipped as unchanged keep what they had: cases stored before
     * finding scores existed get theirs now. */
    size_t n_scored = 0;
    if (rc == 0 && findings)
        rc = cmr_findings_score_missing(store, findings, &n_scored);
    if (rc == 0)
        rc = cmr_store_flush(store);
    if (rc == 0 && n_scored && !cli->json)
        fprintf(cli->out, "finding scores added to %zu cases indexed before they existed\n", n_scored);
    if (rc == 0)
        rc = print_summary(cli, db, summary, model != NULL);
    cmr_ingest_summary_free(summary);
    cmr_store_set_scorer(store, NULL, NULL);
    cmr_findings_free(findings);
    cmr_model_close(model);
    return cmr_cli_close_store(store, rc);
}
