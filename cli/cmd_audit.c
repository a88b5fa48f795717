/* cmrsearch audit: the curators' audit of a store (docs/audit.md) as a
 * table, CSV or JSON, optionally scored against a cmr-phantom truth.json. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"

#define N_OPTIONS(a) (sizeof(a) / sizeof((a)[0]))

static const char usage[] =
    "usage: cmrsearch audit --db DIR [--model DIR] [--kinds K,...] [--min-confidence X]\n"
    "                       [-k N] [--dup-cosine C] [--csv | --json] [--truth truth.json]\n"
    "\n"
    "Lists what a curator should look at, each with a confidence in [0, 1] and\n"
    "a one-sentence reason:\n"
    "  label_error     the images point to another diagnosis than the code and\n"
    "                  impression (image-space neighbours and zero-shot prompts)\n"
    "  duplicate       two studies with near-identical images, checked against\n"
    "                  patient, date and views\n"
    "  missing_view    no cine SAX, cine LAX, LGE SAX or LGE LAX view\n"
    "  contradiction   the impression names another diagnosis than the code\n"
    "  outdated_model  vectors from another model, or none\n"
    "  inconsistency   what 'cmrsearch verify' finds\n"
    "  no_impression   a report without an impression, or no report\n"
    "The store is only read.\n"
    "\n"
    "  --model DIR         the store's model, for the zero-shot prompts (default:\n"
    "                      $CMRSEARCH_MODEL, else the default model when it is the\n"
    "                      store's; without one the zero-shot evidence is skipped)\n"
    "  --kinds K,...       only these kinds (default all)\n"
    "  --min-confidence X  leave out findings below X (default 0.4)\n"
    "  -k N                neighbours in the label consensus (default 20)\n"
    "  --dup-cosine C      duplicate threshold on image cosine (default: from the data)\n"
    "  --csv               one finding per row (kind, confidence, case_id, study_uid,\n"
    "                      other_case_id, other_study_uid, recorded, suggested, reason)\n"
    "  --json              one JSON document\n"
    "  --truth FILE        also score the findings against a cmr-phantom truth.json:\n"
    "                      precision and recall per kind (on stderr with --csv)\n";

static void csv_field(FILE *out, const char *s, int last)
{
    if (s && strpbrk(s, ",\"\n\r")) {
        fputc('"', out);
        for (; *s; s++) {
            if (*s == '"')
                fputc('"', out);
            fputc(*s, out);
        }
        fputc('"', out);
    } else if (s) {
        fputs(s, out);
    }
    fputc(last ? '\n' : ',', out);
}

static void print_csv(FILE *out, const cmr_audit_report *r)
{
    fputs("kind,confidence,case_id,study_uid,other_case_id,other_study_uid,recorded,suggested,reason\n",
          out);
    for (size_t i = 0; i < r->n; i++) {
        const cmr_audit_finding *f = &r->findings[i];
        char num[3][32];
        snprintf(num[0], sizeof num[0], "%.3f", f->confidence);
        snprintf(num[1], sizeof num[1], "%llu", (unsigned long long)f->case_id);
        snprintf(num[2], sizeof num[2], "%llu", (unsigned long long)f->other_id);
        csv_field(out, cmr_audit_kind_name(f->kind), 0);
        csv_field(out, num[0], 0);
        csv_field(out, f->case_id ? num[1] : "", 0);
        csv_field(out, f->study_uid, 0);
        csv_field(out, f->other_id ? num[2] : "", 0);
        csv_field(out, f->other_uid, 0);
        csv_field(out, f->recorded, 0);
        csv_field(out, f->suggested, 0);
        csv_field(out, f->reason, 1);
    }
}

static void print_text(FILE *out, const cmr_audit_report *r)
{
    fprintf(out, "%llu cases (%llu with a diagnosis code, %zu codes); duplicate threshold cosine %.6f; "
                 "zero-shot %s; %.2f s\n",
            (unsigned long long)r->cases, (unsigned long long)r->labelled, r->n_classes, r->dup_cosine,
            r->zero_shot ? "used" : "not used", r->seconds);
    for (size_t i = 0; i < r->n_notes; i++)
        fprintf(out, "note: %s\n", r->notes[i]);
    for (int k = 0; k < CMR_AUDIT_NKINDS; k++)
        if (r->kinds & (1u << k))
            fprintf(out, "%-15s %zu\n", cmr_audit_kind_name((cmr_audit_kind)k), r->count[k]);
    for (size_t i = 0; i < r->n; i++) {
        const cmr_audit_finding *f = &r->findings[i];
        fprintf(out, "\n%s  %.2f  ", cmr_audit_kind_name(f->kind), f->confidence);
        if (f->case_id)
            fprintf(out, "case %llu (%s)", (unsigned long long)f->case_id, f->study_uid);
        else
            fputs("store", out);
        if (f->other_id)
            fprintf(out, " and case %llu (%s)", (unsigned long long)f->other_id, f->other_uid);
        fputc('\n', out);
        if (f->recorded || f->suggested)
            fprintf(out, "  recorded %s; suggested %s\n", f->recorded ? f->recorded : "-",
                    f->suggested ? f->suggested : "-");
        fprintf(out, "  %s\n", f->reason);
    }
}

static json_t *num_or_null(double v)
{
    return isnan(v) ? json_null() : json_real(v);
}

static json_t *scores_json(const cmr_audit_score *s)
{
    json_t *o = json_object();
    for (int k = 0; k < CMR_AUDIT_NKINDS; k++) {
        if (!s[k].scored)
            continue;
        json_object_set_new(o, cmr_audit_kind_name((cmr_audit_kind)k),
                            json_pack("{s:I, s:I, s:I, s:o, s:o}", "planted", (json_int_t)s[k].truth, "found",
                                      (json_int_t)s[k].found, "hits", (json_int_t)s[k].hits, "precision",
                                      num_or_null(s[k].precision), "recall", num_or_null(s[k].recall)));
    }
    return o;
}

static void print_scores(FILE *out, const cmr_audit_score *s, const char *truth)
{
    fprintf(out, "\nagainst %s (planted / found / correct, precision, recall):\n", truth);
    for (int k = 0; k < CMR_AUDIT_NKINDS; k++) {
        if (!s[k].scored)
            continue;
        fprintf(out, "%-15s %4zu %4zu %4zu  ", cmr_audit_kind_name((cmr_audit_kind)k), s[k].truth, s[k].found,
                s[k].hits);
        fprintf(out, isnan(s[k].precision) ? "precision   -  " : "precision %.3f", s[k].precision);
        fprintf(out, isnan(s[k].recall) ? "  recall   -\n" : "  recall %.3f\n", s[k].recall);
    }
}

static json_t *report_json(const char *db, const cmr_audit_report *r)
{
    int sound = 1;
    for (size_t i = 0; i < r->n; i++)
        sound &= r->findings[i].kind != CMR_AUDIT_INCONSISTENCY;
    json_t *doc = cmr_audit_report_to_json(r, sound);
    if (doc)
        json_object_set_new(doc, "db", cmr_json_text(db));
    return doc;
}

static int parse_float(const char *option, const char *text, double lo, double hi, float *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= lo && v <= hi))
        return cmr_fail(CMR_EINVAL, "%s: '%s' is not a number in [%g, %g]", option, text, lo, hi);
    *out = (float)v;
    return 0;
}

int cmr_cmd_audit(cmr_cli *cli, int argc, char **argv)
{
    const char *db = NULL, *model_dir = NULL, *kinds = NULL, *min_conf = NULL, *k_text = NULL,
               *dup_text = NULL, *truth = NULL;
    int csv = 0;
    const cmr_cli_option options[] = {
        {"db", 0, &db, NULL},
        {"model", 0, &model_dir, NULL},
        {"kinds", 0, &kinds, NULL},
        {"min-confidence", 0, &min_conf, NULL},
        {"k", 'k', &k_text, NULL},
        {"dup-cosine", 0, &dup_text, NULL},
        {"truth", 0, &truth, NULL},
        {"csv", 0, NULL, &csv},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    int rc = cmr_cli_parse_command(cli, argc, argv, options, N_OPTIONS(options), usage, NULL, 0, &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    if (csv && cli->json)
        return cmr_fail(CMR_EINVAL, "--csv and --json exclude each other");
    cmr_audit_options o;
    cmr_audit_options_init(&o);
    uint64_t v;
    if ((kinds && (rc = cmr_audit_kinds_parse(kinds, &o.kinds))) ||
        (min_conf && (rc = parse_float("--min-confidence", min_conf, 0, 1, &o.min_confidence))) ||
        (dup_text && (rc = parse_float("--dup-cosine", dup_text, 1e-6, 1, &o.dup_cosine))))
        return rc;
    if (k_text) {
        if ((rc = cmr_cli_parse_u64("-k", k_text, 1, 1000, &v)))
            return rc;
        o.k = (unsigned)v;
    }
    cmr_store *store = NULL;
    cmr_model *model = NULL;
    cmr_audit_report *report = NULL;
    if ((rc = cmr_cli_open_store(cli, db, CMR_STORE_RDONLY, &store)))
        goto done;
    cmr_store_set_progress(store, cmr_cli_progress, cli);
    o.progress = cmr_cli_progress;
    o.progress_user = cli;
    /* An explicit model must be the store's; the default one is used only
     * when it is (zero-shot is one piece of evidence, not a requirement). */
    const char *env = getenv("CMRSEARCH_MODEL");
    int explicit_model = model_dir || (env && *env);
    const char *store_name;
    const char *store_hash;
    unsigned dim;
    cmr_store_model(store, &store_name, &store_hash, &dim);
    if (dim && (o.kinds & ((1u << CMR_AUDIT_LABEL_ERROR) | (1u << CMR_AUDIT_CONTRADICTION)))) {
        rc = cmr_cli_open_model(model_dir, store, explicit_model, &model);
        if (rc && !explicit_model && rc == CMR_EMODEL) {
            cmr_clear_error();
            rc = 0;
        }
        if (rc)
            goto done;
    }
    if ((rc = cmr_audit_run(store, model, &o, &report)))
        goto done;
    cmr_audit_score scores[CMR_AUDIT_NKINDS];
    if (truth && (rc = cmr_audit_score_truth(store, report, truth, o.min_confidence, scores)))
        goto done;
    if (cli->json) {
        json_t *doc = report_json(db, report);
        if (truth) {
            json_object_set_new(doc, "truth", cmr_json_text(truth));
            json_object_set_new(doc, "scores", scores_json(scores));
        }
        rc = cmr_cli_print_json(cli, doc);
    } else if (csv) {
        print_csv(cli->out, report);
        if (truth)
            print_scores(cli->err, scores, truth);
    } else {
        print_text(cli->out, report);
        if (truth)
            print_scores(cli->out, scores, truth);
    }
done:
    cmr_audit_report_free(report);
    cmr_model_close(model);
    return cmr_cli_close_store(store, rc);
}
