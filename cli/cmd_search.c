/* cmrsearch search: text -> case, study -> case, case -> case (or a given
 * vector -> case) through the searcher (searcher/cmr_searcher.h): fusion of
 * the image and impression spaces, --where filters (finding scores too),
 * paging, one result per patient, and each hit's explanation. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"
#include "cmr_model.h"
#include "cmr_searcher.h"

#define DEFAULT_K 10
#define MAX_K 10000

static const char usage[] =
    "usage: cmrsearch search --db DIR (--text PHRASE | --study DIR | --case ID | --uid UID |\n"
    "                        --vector FILE.npy) [-k N | --limit N] [--offset N] [--one-per-patient]\n"
    "                        [--w-image W --w-text W | --target image|text] [--space image|text]\n"
    "                        [--where EXPR] [--include-same-patient] [--no-sentences]\n"
    "                        [--model DIR] [--json]\n"
    "\n"
    "Finds the cases most similar to a phrase, a new study, a stored case or a\n"
    "query vector.  A stored case itself is never a result; neither, unless\n"
    "--include-same-patient, are other studies of the same patient.  A hit's\n"
    "score fuses its similarity in the two spaces (image: the study; text: its\n"
    "report's impression):  (w_image * image + w_text * text) / (w_image + w_text).\n"
    "Each hit shows both similarities, its top finding scores, the views\n"
    "present and the impression sentence closest to the query.\n"
    "\n"
    "  --text PHRASE    embed the phrase (\"apical hypertrophy with LGE\") with the\n"
    "                   model (default weights: image 0.2, text 0.8)\n"
    "  --study DIR      read the one study under DIR, embed it and search\n"
    "                   (default weights: image 0.2, text 0.8)\n"
    "  --model DIR      the model for --text, --study and the closest sentences\n"
    "                   (default: $CMRSEARCH_MODEL, else the default model); it must\n"
    "                   be the store's model\n"
    "  --case ID        query with the stored vectors of case ID (a case id, or a\n"
    "                   Study Instance UID when it contains a dot): its image\n"
    "                   vector against images, its impression's against\n"
    "                   impressions (default weights: image 0.2, text 0.8)\n"
    "  --uid UID        query with the case whose Study Instance UID is UID\n"
    "  --vector FILE    query with a vector: a .npy file of shape (1, D) or (D,)\n"
    "  -k N, --limit N  number of results (default 10)\n"
    "  --offset N       skip the first N results (paging; offset + limit <= 10000)\n"
    "  --one-per-patient  keep each patient's best study only\n"
    "  --w-image W, --w-text W  fusion weights (>= 0, not both 0; give both)\n"
    "  --target S       search one space only (the same as weight 1 on S, 0 on\n"
    "                   the other)\n"
    "  --space S        --case/--uid: use only the case's S vector (against\n"
    "                   --target, default S)\n"
    "  --where EXPR     only cases that pass EXPR, e.g.\n"
    "                   'diagnosis in (I42.1, E85.4) and date >= 2015-01-01 and\n"
    "                    site = \"Cleveland\" and sex = F and age between 40 and 70'\n"
    "                   or on finding scores: 'has lge and has hcm',\n"
    "                   'finding lv_dilation >= 0.8', 'lacks lge'\n"
    "                   (fields: diagnosis, date, age, site, manufacturer, sex,\n"
    "                   finding, has, lacks; see 'man cmrsearch' for the grammar)\n"
    "  --include-same-patient   also return the patient's other studies\n"
    "  --no-sentences   do not compute the closest impression sentence\n"
    "  --json           print the results as one JSON document\n";

typedef struct search_request {
    const char *db, *case_arg, *uid, *vector_path, *k_text, *limit_text, *offset_text, *space_text,
        *target_text, *where_text, *w_image_text, *w_text_text;
    const char *text_query, *study_query, *model_path;
    int include_same_patient, one_per_patient, no_sentences;
    size_t k, offset;
    int have_space, have_target, have_weights;
    cmr_space space, target;
    float w_image, w_text;
    cmr_where where;
} search_request;

static int parse_weight(const char *option, const char *text, float *out)
{
    char *end;
    double v = strtod(text, &end);
    if (end == text || *end || !(v >= 0 && v <= 1e6))
        return cmr_fail(CMR_EINVAL, "%s: '%s' is not a weight (a number, at least 0)", option, text);
    *out = (float)v;
    return 0;
}

static int check_request(search_request *r)
{
    int sources = !!r->case_arg + !!r->uid + !!r->vector_path + !!r->text_query + !!r->study_query;
    if (sources != 1)
        return cmr_fail(CMR_EINVAL, "give exactly one query: --text PHRASE, --study DIR, --case ID, --uid UID "
                                    "or --vector FILE.npy (see 'cmrsearch search --help')");
    int is_case = r->case_arg || r->uid;
    if (!is_case && r->include_same_patient)
        return cmr_fail(CMR_EINVAL, "--include-same-patient applies to --case and --uid queries");
    if (r->text_query && !*r->text_query)
        return cmr_fail(CMR_EINVAL, "--text: the phrase is empty");
    if (r->k_text && r->limit_text)
        return cmr_fail(CMR_EINVAL, "-k and --limit are the same option; give one");
    uint64_t v = DEFAULT_K;
    int rc;
    if ((r->k_text || r->limit_text) &&
        (rc = cmr_cli_parse_u64(r->k_text ? "-k" : "--limit", r->k_text ? r->k_text : r->limit_text, 1, MAX_K, &v)))
        return rc;
    r->k = (size_t)v;
    v = 0;
    if (r->offset_text && (rc = cmr_cli_parse_u64("--offset", r->offset_text, 0, MAX_K, &v)))
        return rc;
    r->offset = (size_t)v;
    if (r->offset + r->k > MAX_K)
        return cmr_fail(CMR_EINVAL, "--offset plus the number of results must be at most %d", MAX_K);
    if (r->space_text && !is_case)
        return cmr_fail(CMR_EINVAL, "--space applies to --case and --uid queries (a phrase is text, a study image)");
    if (r->space_text && cmr_space_parse(r->space_text, &r->space) != 0)
        return cmr_fail(CMR_EINVAL, "--space: '%s' is not a space (image or text)", r->space_text);
    r->have_space = r->space_text != NULL;
    if (r->target_text && cmr_space_parse(r->target_text, &r->target) != 0)
        return cmr_fail(CMR_EINVAL, "--target: '%s' is not a space (image or text)", r->target_text);
    /* --space alone searches that space, as before fusion existed. */
    r->have_target = r->target_text != NULL || r->have_space;
    if (!r->target_text && r->have_space)
        r->target = r->space;
    if (!!r->w_image_text != !!r->w_text_text)
        return cmr_fail(CMR_EINVAL, "give both --w-image and --w-text");
    if (r->w_image_text && r->have_target)
        return cmr_fail(CMR_EINVAL, "--target (or --space) searches one space: it cannot be combined with "
                                    "--w-image/--w-text");
    if (r->w_image_text && ((rc = parse_weight("--w-image", r->w_image_text, &r->w_image)) ||
                            (rc = parse_weight("--w-text", r->w_text_text, &r->w_text))))
        return rc;
    if (r->w_image_text && !(r->w_image + r->w_text > 0))
        return cmr_fail(CMR_EINVAL, "--w-image and --w-text cannot both be 0");
    r->have_weights = r->w_image_text != NULL;
    if (r->have_target) {
        r->have_weights = 1;
        r->w_image = r->target == CMR_SPACE_IMAGE;
        r->w_text = r->target == CMR_SPACE_TEXT;
    }
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

static const char *query_kind_name(const search_request *r)
{
    return r->text_query ? "text" : r->study_query ? "study" : r->vector_path ? "vector" : "case";
}

static json_t *results_to_json(const search_request *r, const cmr_results *res, const cmr_case *query)
{
    json_t *doc = cmr_results_to_json(res, cmr_case_to_json), *q = json_object();
    if (!doc || !q) {
        json_decref(doc);
        json_decref(q);
        return NULL;
    }
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
    json_object_set_new(q, "kind", json_string(query_kind_name(r)));
    if (r->have_space)
        json_object_set_new(q, "space", json_string(cmr_space_name(r->space)));
    if (r->have_target)
        json_object_set_new(q, "target", json_string(cmr_space_name(r->target)));
    json_object_set_new(q, "k", json_integer((json_int_t)r->k));
    json_object_set_new(q, "offset", json_integer((json_int_t)r->offset));
    json_object_set_new(q, "one_per_patient", json_boolean(r->one_per_patient));
    json_object_set_new(q, "include_same_patient", json_boolean(r->include_same_patient));
    json_object_set_new(q, "where", cmr_json_text(r->where_text));
    json_t *filter = cmr_filter_to_json(&r->where.filter);
    if (filter && r->where.filter.n_finding_bounds) {
        json_t *fb = json_object();
        for (size_t i = 0; i < r->where.filter.n_finding_bounds; i++) {
            const cmr_finding_bound *b = &r->where.filter.finding_bounds[i];
            json_object_set_new(fb, b->name, json_pack("{s:f, s:f}", "min", (double)b->min, "max", (double)b->max));
        }
        json_object_set_new(filter, "findings", fb);
    }
    json_object_set_new(q, "filter", filter);
    json_object_set_new(doc, "query", q);
    return doc;
}

/* The where text on one line, however the shell quoting spread it. */
static void print_where(FILE *out, const char *p)
{
    fputs("where: ", out);
    while (isspace((unsigned char)*p))
        p++;
    for (; *p; p++)
        if (!isspace((unsigned char)*p))
            fputc(*p, out);
        else if (p[1] && !isspace((unsigned char)p[1]))
            fputc(' ', out);
    fputc('\n', out);
}

/* "lge 0.91, lv_hypertrophy 0.77; dx hcm 0.64": the three likeliest
 * findings and the likeliest diagnosis. */
static void format_findings(const cmr_case *c, char *buf, size_t cap)
{
    buf[0] = '\0';
    int used[CMR_STORE_FINDINGS_MAX] = {0};
    size_t len = 0;
    for (int shown = 0; shown < 3; shown++) {
        int best = -1;
        for (size_t i = 0; i < c->n_findings && i < CMR_STORE_FINDINGS_MAX; i++) {
            size_t b;
            if (used[i] || cmr_finding_lookup(c->findings[i].name, &b) ||
                cmr_finding_bank(b)->kind != CMR_FINDING_BINARY)
                continue;
            if (best < 0 || c->findings[i].score > c->findings[best].score)
                best = (int)i;
        }
        if (best < 0)
            break;
        used[best] = 1;
        len += (size_t)snprintf(buf + len, len < cap ? cap - len : 0, "%s%s %.2f", shown ? ", " : "",
                                c->findings[best].name, (double)c->findings[best].score);
    }
    int dx = -1;
    for (size_t i = 0; i < c->n_findings; i++) {
        size_t b;
        if (cmr_finding_lookup(c->findings[i].name, &b) == 0 && cmr_finding_bank(b)->kind == CMR_FINDING_DIAGNOSIS &&
            (dx < 0 || c->findings[i].score > c->findings[dx].score))
            dx = (int)i;
    }
    cmr_clear_error();
    if (dx >= 0 && len < cap)
        snprintf(buf + len, cap - len, "%sdiagnosis %s %.2f", len ? "; " : "", c->findings[dx].name,
                 (double)c->findings[dx].score);
}

static void print_results(FILE *out, const search_request *r, const cmr_results *res, const cmr_case *query)
{
    if (r->text_query)
        fprintf(out, "query: \"%s\" (text)", r->text_query);
    else if (r->study_query)
        fprintf(out, "query: study %s (image)", r->study_query);
    else if (query)
        fprintf(out, "query: case %llu (study %s)%s%s", (unsigned long long)query->id, query->study_uid,
                r->have_space ? ", its vector of space " : "", r->have_space ? cmr_space_name(r->space) : "");
    else
        fprintf(out, "query: vector %s", r->vector_path);
    fprintf(out, "; fusion: image %.2f, text %.2f\n", (double)res->w_image, (double)res->w_text);
    if (r->where_text)
        print_where(out, r->where_text);
    fprintf(out, "results %zu to %zu%s of %llu cases that qualify%s%s\n", res->n ? res->offset + 1 : res->offset,
            res->offset + res->n, res->more ? " (more follow)" : "", (unsigned long long)res->n_matching,
            r->one_per_patient ? ", one per patient" : "",
            res->exact ? "" : " (ranking not proven complete: widen --limit or the filter)");
    if (res->n == 0)
        return;
    int uid_width = 9;
    for (size_t i = 0; i < res->n; i++) {
        int len = (int)strlen(res->items[i].record->study_uid);
        uid_width = len > uid_width ? len : uid_width;
    }
    fprintf(out, "\n%4s  %7s  %6s  %6s  %6s  %-*s  %-10s  %-16s  %-3s  %3s  %s\n", "rank", "score", "image", "text",
            "case", uid_width, "study uid", "date", "site", "sex", "age", "diagnoses");
    for (size_t i = 0; i < res->n; i++) {
        const cmr_result *h = &res->items[i];
        const cmr_case *c = h->record;
        char date[11], age[8], dx[256] = "", sim[2][16], findings[256], views[128] = "";
        cmr_cli_format_date(c->study_date, date);
        snprintf(age, sizeof age, "%d", c->age_years);
        for (size_t d = 0; d < c->n_diagnoses; d++) {
            strncat(dx, d ? ", " : "", sizeof dx - strlen(dx) - 1);
            strncat(dx, c->diagnoses[d].code, sizeof dx - strlen(dx) - 1);
        }
        for (int sp = 0; sp < 2; sp++)
            snprintf(sim[sp], sizeof sim[sp], isnan(h->sim[sp]) ? "-" : "%.4f", (double)h->sim[sp]);
        fprintf(out, "%4zu  %7.4f  %6s  %6s  %6llu  %-*s  %-10s  %-16.16s  %-3c  %3s  %s\n", res->offset + i + 1,
                (double)h->score, sim[CMR_SPACE_IMAGE], sim[CMR_SPACE_TEXT], (unsigned long long)h->id, uid_width,
                c->study_uid, date[0] ? date : "-", c->site ? c->site : "-", c->sex ? c->sex : '-',
                c->age_years >= 0 ? age : "-", dx[0] ? dx : "-");
        if (h->sentence) {
            size_t n = strlen(h->sentence);
            fprintf(out, "      closest: \"%.*s%s\" (%.2f)\n", (int)(n > 100 ? 97 : n), h->sentence,
                    n > 100 ? "..." : "", (double)h->sentence_sim);
        } else if (c->impression) {
            /* The first line of the impression, shortened to a terminal's width. */
            size_t n = strcspn(c->impression, "\n");
            fprintf(out, "      %.*s%s\n", (int)(n > 110 ? 107 : n), c->impression, n > 110 ? "..." : "");
        }
        format_findings(c, findings, sizeof findings);
        for (size_t v = 0; v < h->n_views; v++) {
            strncat(views, v ? " " : "", sizeof views - strlen(views) - 1);
            strncat(views, h->views[v], sizeof views - strlen(views) - 1);
        }
        fprintf(out, "      findings: %s | views: %s", findings[0] ? findings : "-", views[0] ? views : "-");
        if (h->n_folded)
            fprintf(out, " | %zu more of this patient", h->n_folded);
        fputc('\n', out);
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
        {"limit", 0, &r.limit_text, NULL},
        {"offset", 0, &r.offset_text, NULL},
        {"space", 0, &r.space_text, NULL},
        {"target", 0, &r.target_text, NULL},
        {"w-image", 0, &r.w_image_text, NULL},
        {"w-text", 0, &r.w_text_text, NULL},
        {"where", 0, &r.where_text, NULL},
        {"one-per-patient", 0, NULL, &r.one_per_patient},
        {"include-same-patient", 0, NULL, &r.include_same_patient},
        {"no-sentences", 0, NULL, &r.no_sentences},
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
    cmr_model *model = NULL;
    cmr_searcher *searcher = NULL;
    cmr_results *res = NULL;
    float *vector = NULL;
    unsigned dim = 0;
    if ((rc = check_request(&r)))
        goto done;
    /* Read-only: a search never writes, and may run beside an import. */
    if ((rc = cmr_cli_open_store(cli, r.db, CMR_STORE_RDONLY, &store)))
        goto done;
    cmr_store_model(store, NULL, NULL, &dim);
    int needs_model = r.text_query || r.study_query;
    if (needs_model && !dim) {
        rc = cmr_fail(CMR_ENOTFOUND, "the store has no vectors yet: index it with a model first");
        goto done;
    }
    /* The model also explains hits (closest sentence); case and vector
     * queries go on without one when none is installed. */
    if (dim && (needs_model || !r.no_sentences) &&
        (rc = cmr_cli_open_model(r.model_path, store, needs_model || r.model_path, &model))) {
        if (needs_model || r.model_path)
            goto done;
        cmr_clear_error();
        model = NULL;
        rc = 0;
    }
    if ((rc = cmr_searcher_open(store, model, &searcher)))
        goto done;
    cmr_query q = {
        .filter = r.where_text ? &r.where.filter : NULL,
        .offset = r.offset,
        .limit = r.k,
        .one_per_patient = r.one_per_patient,
        .include_same_patient = r.include_same_patient,
        .set_weights = r.have_weights,
        .w_image = r.w_image,
        .w_text = r.w_text,
        .no_sentences = r.no_sentences,
    };
    if (r.text_query) {
        q.kind = CMR_QUERY_TEXT;
        q.text = r.text_query;
    } else if (r.study_query) {
        q.kind = CMR_QUERY_STUDY;
        q.study_dir = r.study_query;
    } else if (r.vector_path) {
        q.kind = CMR_QUERY_VECTOR;
        if ((rc = read_query_vector(store, r.vector_path, &vector)))
            goto done;
        q.vector = vector;
    } else {
        q.kind = CMR_QUERY_CASE;
        if ((rc = resolve_case(store, &r, &q.case_id)) || (rc = cmr_store_get(store, q.case_id, &query)))
            goto done;
        q.use_space = r.have_space;
        q.space = r.space;
    }
    if ((rc = cmr_searcher_search(searcher, &q, &res)))
        goto done;
    if (cli->json)
        rc = cmr_cli_print_json(cli, results_to_json(&r, res, query));
    else
        print_results(cli->out, &r, res, query);
done:
    cmr_results_free(res);
    cmr_searcher_close(searcher);
    cmr_model_close(model);
    cmr_case_free(query);
    free(vector);
    cmr_where_free(&r.where);
    rc = cmr_cli_close_store(store, rc);
    return rc;
}
