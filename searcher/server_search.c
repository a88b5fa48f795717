/* cmrsearch serve: the search endpoints and the prompt list.
 *
 * GET  /api/v1/search?text=...|case=ID  and  POST /api/v1/search/study
 * share their parameters (k, offset, where, one_per_patient, w_image,
 * w_text), run through cmr_searcher_search, and leave one query-log entry
 * each (never the phrase itself: its length and keyed hash). */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "server_internal.h"

#define MAX_K 200
#define MAX_WINDOW 1000   /* offset + k */
#define MAX_TEXT 1000     /* bytes of a phrase */
#define MAX_WHERE 1024
#define MAX_UPLOADS 2     /* studies embedded at once */

static const char *const search_params[] = {"text", "case", "k", "offset", "where", "one_per_patient",
                                            "w_image", "w_text", NULL};
static const char *const study_params[] = {"k", "offset", "where", "one_per_patient", "w_image", "w_text", NULL};

typedef struct search_args {
    cmr_query q;
    const char *where_text;
    const cmr_filter *filter;
    void *where_owner;
    size_t k, offset;
} search_args;

/* Valid UTF-8 without control characters. */
static int clean_text(const char *s)
{
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        if (*p < 0x80) {
            if (*p < 0x20 || *p == 0x7f)
                return 0;
            p++;
            continue;
        }
        int n = (*p & 0xe0) == 0xc0 ? 1 : (*p & 0xf0) == 0xe0 ? 2 : (*p & 0xf8) == 0xf0 ? 3 : -1;
        if (n < 0 || (n == 1 && *p < 0xc2) || (n == 3 && *p > 0xf4))
            return 0;
        for (int i = 1; i <= n; i++)
            if ((p[i] & 0xc0) != 0x80)
                return 0;
        p += n + 1;
    }
    return 1;
}

static int parse_bool(srv_request *q, srv_response *r, const char *name, int *out)
{
    const char *v = srv_param(q, name);
    *out = 0;
    if (!v)
        return 0;
    if (!strcmp(v, "true") || !strcmp(v, "1"))
        *out = 1;
    else if (strcmp(v, "false") && strcmp(v, "0")) {
        srv_error(r, 400, "%s: expected true, false, 1 or 0", name);
        return -1;
    }
    return 0;
}

static int parse_weight(srv_request *q, srv_response *r, const char *name, float *out, int *given)
{
    const char *v = srv_param(q, name);
    if (!v)
        return 0;
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !isfinite(x) || x < 0 || x > 1) {
        srv_error(r, 400, "%s: expected a number from 0 to 1", name);
        return -1;
    }
    *out = (float)x;
    *given = 1;
    return 0;
}

/* The parameters every search takes; a failure has filled r. */
static int common_args(cmr_server *s, srv_request *q, srv_response *r, search_args *a)
{
    uint64_t k, offset;
    if (srv_param_uint(q, r, "k", 1, MAX_K, 10, &k) || srv_param_uint(q, r, "offset", 0, MAX_WINDOW - 1, 0, &offset))
        return -1;
    if (k + offset > MAX_WINDOW) {
        srv_error(r, 400, "offset + k: at most %d results can be paged through", MAX_WINDOW);
        return -1;
    }
    a->k = (size_t)k;
    a->offset = (size_t)offset;
    a->q.limit = a->k;
    a->q.offset = a->offset;
    if (parse_bool(q, r, "one_per_patient", &a->q.one_per_patient))
        return -1;
    int given = 0;
    cmr_fusion_defaults(a->q.kind, &a->q.w_image, &a->q.w_text);
    if (parse_weight(q, r, "w_image", &a->q.w_image, &given) || parse_weight(q, r, "w_text", &a->q.w_text, &given))
        return -1;
    if (given) {
        if (a->q.w_image == 0 && a->q.w_text == 0) {
            srv_error(r, 400, "w_image and w_text: at least one weight must be above 0");
            return -1;
        }
        a->q.set_weights = 1;
    }
    a->where_text = srv_param(q, "where");
    if (a->where_text) {
        if (strlen(a->where_text) > MAX_WHERE || !clean_text(a->where_text)) {
            srv_error(r, 400, "where: at most %d bytes of UTF-8 text without control characters", MAX_WHERE);
            return -1;
        }
        if (!s->cfg.where_parse) {
            srv_error(r, 400, "where: filters are not available on this server");
            return -1;
        }
        cmr_clear_error();
        int rc = s->cfg.where_parse(a->where_text, &a->filter, &a->where_owner);
        if (rc) {
            srv_error(r, 400, "where: %s", *cmr_errmsg() ? cmr_errmsg() : cmr_strerror(rc));
            return -1;
        }
        a->q.filter = a->filter;
    }
    return 0;
}

static void free_args(cmr_server *s, search_args *a)
{
    if (a->where_owner && s->cfg.where_free)
        s->cfg.where_free(a->where_owner);
    a->where_owner = NULL;
}

/* Field names a filter uses, for the query log (never their values). */
static void filter_summary(const cmr_filter *f, int one_per_patient, char *out, size_t len)
{
    out[0] = '\0';
    struct {
        int on;
        const char *name;
    } parts[] = {
        {f && f->n_diagnoses, "diagnosis"}, {f && (f->date_from || f->date_to), "date"},
        {f && f->site, "site"},             {f && f->manufacturer, "manufacturer"},
        {f && f->sex, "sex"},               {f && (f->age_min || f->age_max), "age"},
        {f && f->n_finding_bounds, "finding"}, {one_per_patient, "one_per_patient"},
    };
    for (size_t i = 0; i < sizeof parts / sizeof parts[0]; i++)
        if (parts[i].on) {
            size_t n = strlen(out);
            snprintf(out + n, len - n, "%s%s", n ? "," : "", parts[i].name);
        }
}

static json_t *num_or_null(float x) { return isnan(x) ? json_null() : json_real(x); }

static json_t *results_json(const search_args *a, const cmr_results *res, size_t n_files, int64_t took_us)
{
    json_t *query = json_pack("{s:s, s:I, s:I, s:o, s:b, s:f, s:f}", "kind",
                              a->q.kind == CMR_QUERY_TEXT ? "text" : a->q.kind == CMR_QUERY_CASE ? "case" : "study",
                              "k", (json_int_t)a->k, "offset", (json_int_t)a->offset, "where", cmr_json_text(a->where_text),
                              "one_per_patient", a->q.one_per_patient, "w_image", (double)res->w_image, "w_text",
                              (double)res->w_text);
    json_t *items = json_array();
    if (!query || !items)
        goto fail;
    if (a->q.kind == CMR_QUERY_TEXT)
        json_object_set_new(query, "text", cmr_json_text(a->q.text));
    else if (a->q.kind == CMR_QUERY_CASE)
        json_object_set_new(query, "case", json_integer((json_int_t)a->q.case_id));
    else
        json_object_set_new(query, "files", json_integer((json_int_t)n_files));
    for (size_t i = 0; i < res->n; i++) {
        const cmr_result *it = &res->items[i];
        json_t *views = json_array(), *findings = json_array();
        for (size_t v = 0; v < it->n_views && views; v++)
            json_array_append_new(views, json_string(it->views[v]));
        for (size_t f = 0; it->record && f < it->record->n_findings && findings; f++)
            json_array_append_new(findings, json_pack("{s:o, s:f}", "name", cmr_json_text(it->record->findings[f].name),
                                                      "score", (double)it->record->findings[f].score));
        json_t *o = json_pack("{s:I, s:I, s:f, s:{s:o, s:o}, s:o, s:o, s:o, s:o, s:I, s:o}", "rank",
                              (json_int_t)(res->offset + i + 1), "id", (json_int_t)it->id, "score", (double)it->score,
                              "similarity", "image", num_or_null(it->sim[CMR_SPACE_IMAGE]), "text",
                              num_or_null(it->sim[CMR_SPACE_TEXT]), "closest_sentence", cmr_json_text(it->sentence),
                              "sentence_similarity", num_or_null(it->sentence_sim), "findings",
                              findings ? findings : json_null(), "views", views ? views : json_null(), "folded",
                              (json_int_t)it->n_folded, "case",
                              it->record ? srv_case_json(it->record, 0) : json_null());
        if (!o || json_array_append_new(items, o))
            goto fail;
    }
    json_t *qf = json_null();
    if (res->query_findings) {
        qf = json_array();
        for (size_t f = 0; qf && f < cmr_finding_bank_size(); f++)
            json_array_append_new(qf, json_pack("{s:s, s:f}", "name", cmr_finding_bank(f)->key, "score",
                                                (double)res->query_findings[f]));
    }
    return json_pack("{s:o, s:I, s:b, s:b, s:I, s:I, s:{s:f, s:f, s:f}, s:o, s:o}", "query", query, "n_matching",
                     (json_int_t)res->n_matching, "exact", res->exact, "more", res->more, "n_candidates",
                     (json_int_t)res->n_candidates, "took_us", (json_int_t)took_us, "timing_ms", "encode",
                     res->ms_encode, "search", res->ms_search, "explain", res->ms_explain, "query_findings",
                     qf ? qf : json_null(), "results", items);
fail:
    json_decref(query);
    json_decref(items);
    return NULL;
}

/* Run a prepared query on a worker and answer; fills the query-log entry. */
static void run(cmr_server *s, srv_request *q, srv_response *r, search_args *a, size_t n_files)
{
    q->logged = 1;
    cmr_querylog_entry *e = &q->entry;
    snprintf(e->kind, sizeof e->kind, "%s",
             a->q.kind == CMR_QUERY_TEXT ? "text" : a->q.kind == CMR_QUERY_CASE ? "case" : "study");
    e->k = (uint32_t)a->k;
    e->offset = (uint32_t)a->offset;
    filter_summary(a->filter, a->q.one_per_patient, e->filters, sizeof e->filters);
    if (a->q.kind == CMR_QUERY_TEXT) {
        e->text_len = (uint32_t)strlen(a->q.text);
        cmr_querylog_text_hash(s->store, a->q.text, e->text_hash);
    }
    e->case_id = a->q.kind == CMR_QUERY_CASE ? a->q.case_id : 0;
    e->n_files = (uint32_t)n_files;
    if ((a->q.kind == CMR_QUERY_TEXT || a->q.kind == CMR_QUERY_STUDY) && !s->n_models) {
        srv_error(r, 503, "this server runs without a model: only case queries are answered");
        return;
    }
    int64_t t0 = srv_now_us();
    srv_worker *w = srv_worker_take(s);
    cmr_results *res = NULL;
    cmr_clear_error();
    int rc = w ? cmr_searcher_search(w->searcher, &a->q, &res) : cmr_fail(CMR_EINVAL, "no searcher");
    srv_worker_give(s, w);
    if (rc == CMR_ENOTFOUND && a->q.kind == CMR_QUERY_CASE)
        srv_error(r, 404, "case: %s", cmr_errmsg());
    else if (rc == CMR_ENOTFOUND)
        srv_error(r, 400, "%s", cmr_errmsg()); /* e.g. a finding no case is scored for */
    else if (rc)
        srv_fail(r, rc, a->q.kind == CMR_QUERY_STUDY ? "the uploaded study" : "search");
    else {
        e->n_results = (uint32_t)res->n;
        srv_json(r, 200, results_json(a, res, n_files, srv_now_us() - t0));
    }
    cmr_results_free(res);
}

void srv_search(cmr_server *s, srv_request *q, srv_response *r)
{
    search_args a = {0};
    /* One OpenMP thread for a text or case query: the work is a millisecond,
     * and FAISS's team per search on every connection thread spun the cores
     * away (measured: 130 ms per query at 100 connections, most in libgomp's
     * spin-wait).  The setting is this connection thread's own. */
    omp_set_num_threads(1);
    /* Refused requests are logged too (kind "search" when it cannot be told):
     * probing shows in the audit trail. */
    q->logged = 1;
    snprintf(q->entry.kind, sizeof q->entry.kind, "%s",
             srv_param(q, "text") ? "text" : srv_param(q, "case") ? "case" : "search");
    if (srv_check_params(q, r, search_params))
        return;
    const char *text = srv_param(q, "text"), *case_text = srv_param(q, "case");
    if (!!text == !!case_text) {
        srv_error(r, 400, "give exactly one of text (a phrase) and case (a case id)");
        return;
    }
    if (text) {
        size_t n = strlen(text);
        const char *p = text;
        while (isspace((unsigned char)*p))
            p++;
        if (!*p || n > MAX_TEXT || !clean_text(text)) {
            srv_error(r, 400, "text: a phrase of 1 to %d bytes of UTF-8 without control characters", MAX_TEXT);
            return;
        }
        a.q.kind = CMR_QUERY_TEXT;
        a.q.text = text;
    } else {
        uint64_t id;
        if (srv_param_uint(q, r, "case", 1, UINT64_MAX, 0, &id))
            return;
        a.q.kind = CMR_QUERY_CASE;
        a.q.case_id = id;
    }
    if (common_args(s, q, r, &a) == 0)
        run(s, q, r, &a, 0);
    free_args(s, &a);
}

void srv_search_study(cmr_server *s, srv_request *q, srv_response *r)
{
    search_args a = {.q.kind = CMR_QUERY_STUDY};
    /* Embedding a study is real work: every core (uploads are few at a time). */
    omp_set_num_threads(omp_get_num_procs());
    q->logged = 1;
    snprintf(q->entry.kind, sizeof q->entry.kind, "study");
    if (srv_check_params(q, r, study_params) || common_args(s, q, r, &a)) {
        free_args(s, &a);
        return;
    }
    if (!s->n_models) {
        srv_error(r, 503, "this server runs without a model: only case queries are answered");
        free_args(s, &a);
        return;
    }
    /* Embedding a study takes a core for a while: a few at a time. */
    pthread_mutex_lock(&s->image_lock);
    int busy = s->uploads_running >= MAX_UPLOADS;
    if (!busy)
        s->uploads_running++;
    pthread_mutex_unlock(&s->image_lock);
    if (busy) {
        srv_error(r, 503, "%d uploaded studies are being searched already; retry shortly", MAX_UPLOADS);
        free_args(s, &a);
        return;
    }
    char *dir = NULL;
    size_t n_files = 0;
    unsigned status = 0;
    cmr_clear_error();
    if (srv_upload_extract(s, q, &dir, &n_files, &status)) {
        srv_error(r, status ? status : 400, "%s", cmr_errmsg());
    } else {
        a.q.study_dir = dir;
        run(s, q, r, &a, n_files);
        srv_upload_remove(dir, n_files);
    }
    pthread_mutex_lock(&s->image_lock);
    s->uploads_running--;
    pthread_mutex_unlock(&s->image_lock);
    free_args(s, &a);
}

void srv_prompts(cmr_server *s, srv_request *q, srv_response *r)
{
    (void)s;
    static const char *const no_params[] = {NULL};
    if (srv_check_params(q, r, no_params))
        return;
    json_t *list = json_array();
    for (size_t i = 0; list && i < cmr_finding_bank_size(); i++) {
        const cmr_finding_def *d = cmr_finding_bank(i);
        json_t *phrases = json_array();
        for (size_t p = 0; phrases && d->positive && d->positive[p]; p++)
            json_array_append_new(phrases, json_string(d->positive[p]));
        json_array_append_new(list, json_pack("{s:s, s:s, s:s, s:s, s:o}", "name", d->key, "label", d->label, "kind",
                                              d->kind == CMR_FINDING_DIAGNOSIS ? "diagnosis" : "finding", "phrase",
                                              d->positive && d->positive[0] ? d->positive[0] : d->label, "phrases",
                                              phrases ? phrases : json_array()));
    }
    srv_json(r, 200, json_pack("{s:o}", "prompts", list ? list : json_array()));
}
