/* cmrsearch search: text -> case, study -> case, case -> case (or a given
 * vector -> case) nearest neighbours, with --where filters. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"
#include "cmr_model.h"

#define DEFAULT_K 10
#define MAX_K 10000

static const char usage[] =
    "usage: cmrsearch search --db DIR (--text PHRASE | --study DIR | --case ID | --uid UID |\n"
    "                        --vector FILE.npy) [-k N] [--space image|text] [--target image|text]\n"
    "                        [--where EXPR] [--include-same-patient] [--model DIR] [--json]\n"
    "\n"
    "Finds the k cases most similar to a phrase, a new study, a stored case or a\n"
    "query vector.  A stored case itself is never a result; neither, unless\n"
    "--include-same-patient, are other studies of the same patient.  Each hit\n"
    "shows its similarity in both spaces (image: the study; text: its report's\n"
    "impression) and its impression.\n"
    "\n"
    "  --text PHRASE    embed the phrase (\"apical hypertrophy with LGE\") with the\n"
    "                   model and search studies (--target image, the default) or\n"
    "                   impressions (--target text)\n"
    "  --study DIR      read the one study under DIR, embed it and search studies\n"
    "  --model DIR      the model for --text and --study (default: $CMRSEARCH_MODEL,\n"
    "                   else the default model); it must be the store's model\n"
    "  --case ID        query with the stored vectors of case ID (a case id, or a\n"
    "                   Study Instance UID when it contains a dot)\n"
    "  --uid UID        query with the case whose Study Instance UID is UID\n"
    "  --vector FILE    query with a vector: a .npy file of shape (1, D) or (D,)\n"
    "  -k N             number of results (default 10, at most 10000)\n"
    "  --space S        which vector of the query case to use (default image)\n"
    "  --target S       which vectors to search (default: the same as --space)\n"
    "  --where EXPR     only cases that pass EXPR, e.g.\n"
    "                   'diagnosis in (I42.1, E85.4) and date >= 2015-01-01 and\n"
    "                    site = \"Cleveland\" and sex = F and age between 40 and 70'\n"
    "                   (fields: diagnosis, date, age, site, manufacturer, sex;\n"
    "                   see 'man cmrsearch' for the grammar)\n"
    "  --include-same-patient   also return the patient's other studies\n"
    "  --json           print the results as one JSON document\n";

typedef struct search_request {
    const char *db, *case_arg, *uid, *vector_path, *k_text, *space_text, *target_text, *where_text;
    const char *text_query, *study_query, *model_path;
    int include_same_patient;
    size_t k;
    cmr_space space, target;
    cmr_where where;
} search_request;

static int check_request(search_request *r)
{
    int sources = !!r->case_arg + !!r->uid + !!r->vector_path + !!r->text_query + !!r->study_query;
    if (sources != 1)
        return cmr_fail(CMR_EINVAL, "give exactly one query: --text PHRASE, --study DIR, --case ID, --uid UID "
                                    "or --vector FILE.npy (see 'cmrsearch search --help')");
    if ((r->vector_path || r->text_query || r->study_query) && r->include_same_patient)
        return cmr_fail(CMR_EINVAL, "--include-same-patient applies to --case and --uid queries");
    if (r->text_query && !*r->text_query)
        return cmr_fail(CMR_EINVAL, "--text: the phrase is empty");
    uint64_t k = DEFAULT_K;
    int rc;
    if (r->k_text && (rc = cmr_cli_parse_u64("-k", r->k_text, 1, MAX_K, &k)))
        return rc;
    r->k = (size_t)k;
    r->space = r->text_query ? CMR_SPACE_TEXT : CMR_SPACE_IMAGE;
    if (r->space_text && (r->text_query || r->study_query))
        return cmr_fail(CMR_EINVAL, "--space applies to --case and --uid queries (a phrase is text, a study image)");
    if (r->space_text && cmr_space_parse(r->space_text, &r->space) != 0)
        return cmr_fail(CMR_EINVAL, "--space: '%s' is not a space (image or text)", r->space_text);
    /* A phrase finds studies by default: the cross-modal search CMR-CLIP is for. */
    r->target = r->text_query ? CMR_SPACE_IMAGE : r->space;
    if (r->target_text && cmr_space_parse(r->target_text, &r->target) != 0)
        return cmr_fail(CMR_EINVAL, "--target: '%s' is not a space (image or text)", r->target_text);
    if (r->where_text && (rc = cmr_where_parse(r->where_text, &r->where)))
        return rc;
    return 0;
}

/* --case takes an id, or a UID (UIDs have dots; ids never do). */
static int resolve_case(cmr_store *store, const search_request *r, uint64_t *id)
{
    const char *uid = r->uid;
    if (r->case_arg && strchr(r->case_arg, '.'))
        uid = r->case_arg;
    if (uid)
        return cmr_store_find_uid(store, uid, id);
    return cmr_cli_parse_u64("--case", r->case_arg, 1, UINT64_MAX, id);
}

static int read_query_vector(cmr_store *store, const char *path, float **out)
{
    unsigned dim;
    cmr_store_model(store, NULL, NULL, &dim);
    cmr_npy v;
    size_t bad_row;
    int rc = cmr_npy_read(path, &v);
    if (rc)
        return rc;
    if (v.rows != 1)
        rc = cmr_fail(CMR_EFORMAT, "%s: a query is one vector, shape (1, D) or (D,); this has %zu "
                                   "rows", path, v.rows);
    else if (dim == 0)
        rc = cmr_fail(CMR_ENOTFOUND, "the store has no model and no vectors yet");
    else if (v.cols != dim)
        rc = cmr_fail(CMR_EMODEL, "%s: the query has dimension %zu, the store's vectors %u", path,
                      v.cols, dim);
    else if (!(rc = cmr_npy_check_rows(path, &v, &bad_row)) &&
             !(*out = malloc(dim * sizeof **out)))
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
    if (!rc)
        memcpy(*out, v.data, dim * sizeof **out);
    cmr_npy_free(&v);
    return rc;
}

/* The one study under dir, through the model. */
static int embed_study_dir(cmr_model *m, const char *dir, float *out)
{
    cmr_archive *a = NULL;
    const char *roots[1] = {dir};
    cmr_scan_options so = {0};
    cmr_input_spec spec;
    float *tensor = NULL;
    cmr_tensor_info info;
    int rc = cmr_archive_scan(roots, 1, &so, &a);
    if (rc == 0 && a->n_studies != 1)
        rc = cmr_fail(CMR_EINVAL, "--study %s: %zu DICOM studies found there; give the folder of one study", dir,
                      a->n_studies);
    if (rc == 0 && (rc = cmr_cli_input_spec(m, &spec)) == 0 &&
        (rc = cmr_study_tensor(&a->studies[0], &spec, &tensor, &info)) == 0)
        rc = cmr_model_encode_study(m, tensor, spec.frames, out);
    free(tensor);
    cmr_archive_free(a);
    return rc;
}

/* Similarity of each hit to the query vector q (of space r->space) in both
 * spaces; NaN where the hit has no vector of that space. */
typedef struct hit_sims {
    double sim[CMR_NSPACES];
} hit_sims;

static hit_sims *similarities(cmr_store *store, const cmr_hits *hits, const float *q, unsigned dim)
{
    hit_sims *out = calloc(hits->n ? hits->n : 1, sizeof *out);
    float *v = malloc((dim ? dim : 1) * sizeof *v);
    for (size_t i = 0; out && v && i < hits->n; i++)
        for (int s = 0; s < CMR_NSPACES; s++) {
            out[i].sim[s] = NAN;
            if (q && cmr_store_get_vector(store, hits->hits[i].id, (cmr_space)s, v) == 0) {
                double dot = 0;
                for (unsigned e = 0; e < dim; e++)
                    dot += (double)q[e] * v[e];
                out[i].sim[s] = dot;
            }
        }
    free(v);
    cmr_clear_error();
    return out;
}

static json_t *number_or_null(double x) { return isnan(x) ? json_null() : json_real(x); }

static json_t *hits_to_json(const search_request *r, const cmr_hits *hits, const cmr_case *query,
                            const hit_sims *sims)
{
    json_t *q = json_object(), *results = json_array();
    if (!q || !results)
        goto fail;
    if (query) {
        json_object_set_new(q, "case", json_integer((json_int_t)query->id));
        json_object_set_new(q, "study_uid", cmr_json_text(query->study_uid));
    } else if (r->text_query) {
        json_object_set_new(q, "text", cmr_json_text(r->text_query));
    } else if (r->study_query) {
        json_object_set_new(q, "study", cmr_json_text(r->study_query));
    } else {
        json_object_set_new(q, "vector", cmr_json_text(r->vector_path));
    }
    json_object_set_new(q, "space", json_string(cmr_space_name(r->space)));
    json_object_set_new(q, "target", json_string(cmr_space_name(r->target)));
    json_object_set_new(q, "k", json_integer((json_int_t)r->k));
    json_object_set_new(q, "include_same_patient", json_boolean(r->include_same_patient));
    json_object_set_new(q, "where", cmr_json_text(r->where_text));
    json_object_set_new(q, "filter", cmr_filter_to_json(&r->where.filter));
    for (size_t i = 0; i < hits->n; i++) {
        const cmr_hit *h = &hits->hits[i];
        json_t *item = json_pack("{s:I, s:I, s:f, s:{s:s, s:s, s:f}, s:o}", "rank", (json_int_t)i + 1,
                                 "id", (json_int_t)h->id, "score", (double)h->score, "match",
                                 "query_space", cmr_space_name(r->space), "target_space",
                                 cmr_space_name(r->target), "cosine", (double)h->score, "case",
                                 cmr_case_to_json(h->record));
        if (item && sims)
            json_object_set_new(item, "similarity",
                                json_pack("{s:o, s:o}", "image", number_or_null(sims[i].sim[CMR_SPACE_IMAGE]), "text",
                                          number_or_null(sims[i].sim[CMR_SPACE_TEXT])));
        if (!item || json_array_append_new(results, item))
            goto fail;
    }
    return json_pack("{s:o, s:I, s:b, s:i, s:o}", "query", q, "n_matching",
                     (json_int_t)hits->n_matching, "exact", hits->exact, "nprobe",
                     (int)hits->nprobe, "results", results);
fail:
    json_decref(q);
    json_decref(results);
    return NULL;
}

static void print_hits(FILE *out, const search_request *r, const cmr_hits *hits,
                       const cmr_case *query, const hit_sims *sims)
{
    if (r->text_query)
        fprintf(out, "query: \"%s\" (text) against %s vectors\n", r->text_query, cmr_space_name(r->target));
    else if (r->study_query)
        fprintf(out, "query: study %s (image) against %s vectors\n", r->study_query, cmr_space_name(r->target));
    else if (query)
        fprintf(out, "query: case %llu (study %s), %s vector against %s vectors\n",
                (unsigned long long)query->id, query->study_uid, cmr_space_name(r->space),
                cmr_space_name(r->target));
    else
        fprintf(out, "query: vector %s against %s vectors\n", r->vector_path,
                cmr_space_name(r->target));
    if (r->where_text) {
        /* one line, however the shell quoting spread it */
        fputs("where: ", out);
        const char *p = r->where_text;
        while (isspace((unsigned char)*p))
            p++;
        for (; *p; p++)
            if (!isspace((unsigned char)*p))
                fputc(*p, out);
            else if (p[1] && !isspace((unsigned char)p[1]))
                fputc(' ', out);
        fputc('\n', out);
    }
    if (hits->exact)
        fprintf(out, "%zu of %llu cases that qualify (exact scan)\n", hits->n,
                (unsigned long long)hits->n_matching);
    else
        fprintf(out, "%zu of %llu cases that qualify (approximate: %u index lists probed)\n",
                hits->n, (unsigned long long)hits->n_matching, hits->nprobe);
    if (hits->n == 0)
        return;
    int uid_width = 9;
    for (size_t i = 0; i < hits->n; i++) {
        int len = (int)strlen(hits->hits[i].record->study_uid);
        uid_width = len > uid_width ? len : uid_width;
    }
    fprintf(out, "\n%4s  %7s  %6s  %6s  %6s  %-*s  %-10s  %-16s  %-3s  %3s  %s\n", "rank", "score", "image", "text",
            "case", uid_width, "study uid", "date", "site", "sex", "age", "diagnoses");
    for (size_t i = 0; i < hits->n; i++) {
        const cmr_hit *h = &hits->hits[i];
        const cmr_case *c = h->record;
        char date[11], age[8], dx[256] = "";
        cmr_cli_format_date(c->study_date, date);
        snprintf(age, sizeof age, "%d", c->age_years);
        for (size_t d = 0; d < c->n_diagnoses; d++) {
            strncat(dx, d ? ", " : "", sizeof dx - strlen(dx) - 1);
            strncat(dx, c->diagnoses[d].code, sizeof dx - strlen(dx) - 1);
        }
        char sim[2][16];
        for (int sp = 0; sp < 2; sp++) {
            double x = sims ? sims[i].sim[sp] : NAN;
            snprintf(sim[sp], sizeof sim[sp], isnan(x) ? "-" : "%.4f", x);
        }
        fprintf(out, "%4zu  %7.4f  %6s  %6s  %6llu  %-*s  %-10s  %-16.16s  %-3c  %3s  %s\n", i + 1,
                (double)h->score, sim[CMR_SPACE_IMAGE], sim[CMR_SPACE_TEXT], (unsigned long long)h->id, uid_width,
                c->study_uid, date[0] ? date : "-", c->site ? c->site : "-", c->sex ? c->sex : '-',
                c->age_years >= 0 ? age : "-", dx[0] ? dx : "-");
        if (c->impression) {
            /* The first line of the impression, shortened to a terminal's width. */
            size_t n = strcspn(c->impression, "\n");
            fprintf(out, "      %.*s%s\n", (int)(n > 110 ? 107 : n), c->impression, n > 110 ? "..." : "");
        }
    }
}

int cmr_cmd_search(cmr_cli *cli, int argc, char **argv)
{
    search_request r = {0};
    const cmr_cli_option options[] = {
        {"db", 0, &r.db, NULL},
        {"case", 0, &r.case_arg, NULL},
        {"uid", 0, &r.uid, NULL},
        {"vector", 0, &r.vector_path, NULL},
        {"text", 0, &r.text_query, NULL},
        {"study", 0, &r.study_query, NULL},
        {"model", 0, &r.model_path, NULL},
        {"k", 'k', &r.k_text, NULL},
        {"space", 0, &r.space_text, NULL},
        {"target", 0, &r.target_text, NULL},
        {"where", 0, &r.where_text, NULL},
        {"include-same-patient", 0, NULL, &r.include_same_patient},
        {"json", 0, NULL, &cli->json},
    };
    size_t n_pos;
    const char *pos[1];
    int rc = cmr_cli_parse_command(cli, argc, argv, options, sizeof options / sizeof options[0], usage, pos, 0,
                              &n_pos);
    if (rc)
        return rc < 0 ? rc : 0;
    cmr_store *store = NULL;
    cmr_case *query = NULL;
    cmr_hits *hits = NULL;
    cmr_model *model = NULL;
    hit_sims *sims = NULL;
    float *vector = NULL;
    unsigned dim = 0;
    if ((rc = check_request(&r)))
        goto done;
    /* Read-only: a search never writes, and may run beside an import. */
    if ((rc = cmr_cli_open_store(cli, r.db, CMR_STORE_RDONLY, &store)))
        goto done;
    const cmr_filter *filter = r.where_text ? &r.where.filter : NULL;
    cmr_store_model(store, NULL, NULL, &dim);
    if (r.text_query || r.study_query) {
        if (!dim) {
            rc = cmr_fail(CMR_ENOTFOUND, "the store has no vectors yet: index it with a model first");
            goto done;
        }
        if ((rc = cmr_cli_open_model(r.model_path, store, 1, &model)))
            goto done;
        if (!(vector = malloc(dim * sizeof *vector))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        if ((rc = r.text_query ? cmr_model_encode_text(model, r.text_query, vector)
                               : embed_study_dir(model, r.study_query, vector)) ||
            (rc = cmr_store_search(store, r.target, vector, r.k, filter, &hits)))
            goto done;
    } else if (r.vector_path) {
        if ((rc = read_query_vector(store, r.vector_path, &vector)) ||
            (rc = cmr_store_search(store, r.target, vector, r.k, filter, &hits)))
            goto done;
    } else {
        uint64_t id;
        if ((rc = resolve_case(store, &r, &id)) || (rc = cmr_store_get(store, id, &query)) ||
            (rc = cmr_store_search_case(store, id, r.space, r.target, r.k, filter,
                                        r.include_same_patient, &hits)))
            goto done;
        if ((vector = malloc((dim ? dim : 1) * sizeof *vector)) &&
            cmr_store_get_vector(store, id, r.space, vector) != 0) {
            free(vector);
            vector = NULL;
        }
    }
    sims = similarities(store, hits, vector, dim);
    if (cli->json)
        rc = cmr_cli_print_json(cli, hits_to_json(&r, hits, query, sims));
    else
        print_hits(cli->out, &r, hits, query, sims);
done:
    free(sims);
    cmr_model_close(model);
    cmr_hits_free(hits);
    cmr_case_free(query);
    free(vector);
    cmr_where_free(&r.where);
    rc = cmr_cli_close_store(store, rc);
    return rc;
}
