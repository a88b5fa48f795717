/* cmrsearch serve: the endpoints that read the store (health, version, a
 * case, store statistics, audit, prompts). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "server_internal.h"

static const char *const no_params[] = {NULL};

static json_t *model_json(const cmr_server *s)
{
    return json_pack("{s:o, s:o, s:i}", "name", cmr_json_text(s->model_name), "hash", cmr_json_text(s->model_hash), "dim",
                     (int)s->dim);
}

void srv_health(cmr_server *s, srv_request *q, srv_response *r)
{
    if (srv_check_params(q, r, no_params))
        return;
    cmr_store_stats st;
    int rc = cmr_store_stats_get(s->store, &st);
    if (rc) {
        srv_fail(r, rc, "reading the store");
        return;
    }
    srv_json(r, 200, json_pack("{s:s, s:I, s:o, s:I, s:b}", "status", "ok", "cases", (json_int_t)st.cases, "model",
                               model_json(s), "generation", (json_int_t)st.generation, "encoders",
                               s->n_models > 0));
}

void srv_version(cmr_server *s, srv_request *q, srv_response *r)
{
    if (srv_check_params(q, r, no_params))
        return;
    srv_json(r, 200, json_pack("{s:s, s:s, s:s, s:o}", "name", "cmrsearch", "version", CMR_VERSION, "api", "v1",
                               "model", model_json(s)));
}

static json_t *date_json(int32_t d)
{
    if (d <= 0)
        return json_null();
    char buf[16];
    snprintf(buf, sizeof buf, "%04d-%02d-%02d", d / 10000, d / 100 % 100, d % 100);
    return json_string(buf);
}

json_t *srv_case_json(const cmr_case *c, int detail)
{
    json_t *o = json_object(), *views = json_array(), *dx = json_array();
    if (!o || !views || !dx) {
        json_decref(o);
        json_decref(views);
        json_decref(dx);
        return NULL;
    }
    char sex[2] = {c->sex, '\0'};
    for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++)
        if (c->views & (1u << b))
            json_array_append_new(views, json_string(cmr_view_name(1u << b)));
    for (size_t i = 0; i < c->n_diagnoses; i++)
        json_array_append_new(dx, json_pack("{s:o, s:o, s:o}", "code", cmr_json_text(c->diagnoses[i].code), "system",
                                            cmr_json_text(c->diagnoses[i].system), "label",
                                            cmr_json_text(c->diagnoses[i].label)));
    json_object_set_new(o, "id", json_integer((json_int_t)c->id));
    json_object_set_new(o, "study_uid", cmr_json_text(c->study_uid));
    json_object_set_new(o, "study_date", date_json(c->study_date));
    json_object_set_new(o, "site", cmr_json_text(c->site));
    json_object_set_new(o, "manufacturer", cmr_json_text(c->manufacturer));
    json_object_set_new(o, "scanner_model", cmr_json_text(c->scanner_model));
    json_object_set_new(o, "field_strength", c->field_strength > 0 ? json_real(c->field_strength) : json_null());
    json_object_set_new(o, "sex", c->sex ? json_string(sex) : json_null());
    json_object_set_new(o, "age", c->age_years >= 0 ? json_integer(c->age_years) : json_null());
    json_object_set_new(o, "views", views);
    json_object_set_new(o, "diagnoses", dx);
    json_object_set_new(o, "impression", cmr_json_text(c->impression));
    if (detail) {
        json_t *vec = json_array(), *fs = json_array();
        for (int sp = 0; sp < CMR_NSPACES && vec; sp++)
            if (c->vectors & (1u << sp))
                json_array_append_new(vec, json_string(cmr_space_name((cmr_space)sp)));
        for (size_t i = 0; i < c->n_findings && fs; i++)
            json_array_append_new(fs, json_pack("{s:o, s:f}", "name", cmr_json_text(c->findings[i].name), "score",
                                                (double)c->findings[i].score));
        char when[32] = "";
        time_t t = (time_t)c->ingest_time;
        struct tm tm;
        if (c->ingest_time > 0 && gmtime_r(&t, &tm))
            strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
        json_object_set_new(o, "vectors", vec ? vec : json_null());
        json_object_set_new(o, "findings", fs ? fs : json_null());
        json_object_set_new(o, "model", cmr_json_text(c->model_id));
        json_object_set_new(o, "ingest_time", when[0] ? json_string(when) : json_null());
        json_object_set_new(o, "generation", json_integer((json_int_t)c->generation));
        json_object_set_new(o, "impression_source_known", json_boolean(c->impression_source != NULL));
    }
    return o;
}

void srv_case(cmr_server *s, srv_request *q, srv_response *r, uint64_t id)
{
    /* Who opened which case is part of the audit trail (images are not
     * logged: a page of results fetches dozens). */
    q->logged = 1;
    snprintf(q->entry.kind, sizeof q->entry.kind, "case_view");
    q->entry.case_id = id;
    if (srv_check_params(q, r, no_params))
        return;
    cmr_case *c = NULL;
    if (srv_load_case(s, r, id, &c))
        return;
    q->entry.n_results = 1;
    json_t *o = srv_case_json(c, 1);
    if (o)
        /* The stored path is checked, never shown (folder names can hold patient identifiers). */
        json_object_set_new(o, "images_available",
                            json_boolean(c->n_sources > 0 && access(c->sources[0], R_OK | X_OK) == 0));
    cmr_case_free(c);
    srv_json(r, 200, o);
}

/* ---- statistics: counts per diagnosis, site, sex and view ---------------------------- */

typedef struct count {
    char *key, *label;
    uint64_t n;
} count;

typedef struct counter {
    count *items;
    size_t n, cap;
} counter;

static int counter_add(counter *c, const char *key, const char *label)
{
    for (size_t i = 0; i < c->n; i++)
        if ((key ? c->items[i].key && !strcmp(c->items[i].key, key) : !c->items[i].key)) {
            c->items[i].n++;
            if (!c->items[i].label && label)
                c->items[i].label = strdup(label);
            return 0;
        }
    if (c->n == c->cap) {
        size_t nc = c->cap ? 2 * c->cap : 32;
        count *p = realloc(c->items, nc * sizeof *p);
        if (!p)
            return CMR_ENOMEM;
        c->items = p;
        c->cap = nc;
    }
    count *it = &c->items[c->n++];
    it->key = key ? strdup(key) : NULL;
    it->label = label ? strdup(label) : NULL;
    it->n = 1;
    return 0;
}

static int by_count(const void *a, const void *b)
{
    const count *x = a, *y = b;
    if (x->n != y->n)
        return x->n < y->n ? 1 : -1;
    return strcmp(x->key ? x->key : "", y->key ? y->key : "");
}

static json_t *counter_json(counter *c, const char *keyname, int with_label)
{
    qsort(c->items, c->n, sizeof *c->items, by_count);
    json_t *a = json_array();
    for (size_t i = 0; i < c->n && a; i++) {
        json_t *o = json_pack("{s:o, s:I}", keyname, cmr_json_text(c->items[i].key), "cases", (json_int_t)c->items[i].n);
        if (o && with_label)
            json_object_set_new(o, "label", cmr_json_text(c->items[i].label));
        json_array_append_new(a, o);
    }
    return a;
}

static void counter_free(counter *c)
{
    for (size_t i = 0; i < c->n; i++) {
        free(c->items[i].key);
        free(c->items[i].label);
    }
    free(c->items);
}

/* The counts of a store's records (every record is read). */
static int stats_compute(cmr_server *s, const cmr_store_stats *st, json_t **out)
{
    uint64_t *ids = NULL;
    size_t n = 0;
    counter dx = {0}, sites = {0};
    uint64_t sex[4] = {0}, views[CMR_VIEW_COUNT_] = {0};
    int rc = cmr_store_list(s->store, &ids, &n);
    for (size_t i = 0; i < n && !rc; i++) {
        cmr_case *c = NULL;
        if ((rc = cmr_store_get(s->store, ids[i], &c)) == CMR_ENOTFOUND) {
            rc = 0; /* deleted since the listing */
            continue;
        }
        for (size_t d = 0; d < (c ? c->n_diagnoses : 0) && !rc; d++)
            rc = counter_add(&dx, c->diagnoses[d].code, c->diagnoses[d].label);
        if (c && !rc)
            rc = counter_add(&sites, c->site, NULL);
        if (c) {
            sex[c->sex == 'F' ? 0 : c->sex == 'M' ? 1 : c->sex == 'O' ? 2 : 3]++;
            for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++)
                views[b] += !!(c->views & (1u << b));
        }
        cmr_case_free(c);
    }
    free(ids);
    *out = NULL;
    if (!rc) {
        json_t *vw = json_object();
        for (unsigned b = 0; b < CMR_VIEW_COUNT_ && vw; b++)
            json_object_set_new(vw, cmr_view_name(1u << b), json_integer((json_int_t)views[b]));
        *out = json_pack("{s:I, s:I, s:{s:I, s:I}, s:o, s:o, s:{s:I, s:I, s:I, s:I}, s:o}", "cases",
                         (json_int_t)st->cases, "generation", (json_int_t)st->generation, "vectors", "image",
                         (json_int_t)st->vectors[CMR_SPACE_IMAGE], "text", (json_int_t)st->vectors[CMR_SPACE_TEXT],
                         "diagnoses", counter_json(&dx, "code", 1), "sites", counter_json(&sites, "site", 0), "sex",
                         "F", (json_int_t)sex[0], "M", (json_int_t)sex[1], "O", (json_int_t)sex[2], "unknown",
                         (json_int_t)sex[3], "views", vw);
        if (!*out)
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
    }
    counter_free(&dx);
    counter_free(&sites);
    return rc;
}

void srv_stats(cmr_server *s, srv_request *q, srv_response *r)
{
    if (srv_check_params(q, r, no_params))
        return;
    cmr_store_stats st;
    uint64_t nq = 0;
    int rc = cmr_store_stats_get(s->store, &st);
    if (!rc)
        rc = cmr_querylog_count(s->store, &nq);
    json_t *doc = NULL;
    pthread_mutex_lock(&s->stats_lock);
    if (!rc && (!s->stats_doc || s->stats_generation != st.generation)) {
        json_t *fresh = NULL;
        if (!(rc = stats_compute(s, &st, &fresh))) {
            json_decref(s->stats_doc);
            s->stats_doc = fresh;
            s->stats_generation = st.generation;
        }
    }
    if (!rc && !(doc = json_deep_copy(s->stats_doc)))
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
    pthread_mutex_unlock(&s->stats_lock);
    if (rc) {
        srv_fail(r, rc, "reading the store");
        return;
    }
    /* The query log grows with every query: counted afresh. */
    json_object_set_new(doc, "queries", json_integer((json_int_t)nq));
    srv_json(r, 200, doc);
}

/* ---- audit ------------------------------------------------------------------------ */

static const char *const audit_params[] = {"kinds", "min_confidence", NULL};

void srv_audit(cmr_server *s, srv_request *q, srv_response *r)
{
    if (srv_check_params(q, r, audit_params))
        return;
    cmr_audit_options o;
    cmr_audit_options_init(&o);
    const char *kinds = srv_param(q, "kinds"), *mc = srv_param(q, "min_confidence");
    if (kinds && (strlen(kinds) > 256 || cmr_audit_kinds_parse(kinds, &o.kinds))) {
        srv_error(r, 400, "kinds: %s", *cmr_errmsg() ? cmr_errmsg() : "a comma-separated list of audit kinds");
        return;
    }
    if (mc) {
        char *end;
        double x = strtod(mc, &end);
        if (!*mc || *end || !(x >= 0 && x <= 1)) {
            srv_error(r, 400, "min_confidence: expected a number from 0 to 1");
            return;
        }
        o.min_confidence = (float)x;
    }
    if (!o.kinds)
        o.kinds = CMR_AUDIT_ALL;
    cmr_store_stats st;
    int rc = cmr_store_stats_get(s->store, &st);
    if (rc) {
        srv_fail(r, rc, "reading the store");
        return;
    }
    pthread_mutex_lock(&s->audit_lock);
    if (!s->audit_json || s->audit_generation != st.generation || s->audit_kinds != o.kinds ||
        s->audit_min_confidence != o.min_confidence) {
        /* The zero-shot evidence needs a model: a handle of the audit's own,
         * so that the encoders keep answering queries meanwhile. */
        if (s->model_dir && !s->audit_model && cmr_model_open(s->model_dir, &s->audit_model))
            fprintf(stderr, "cmrsearch: serve: audit without zero-shot evidence: %s\n", cmr_errmsg());
        cmr_audit_report *rep = NULL;
        cmr_clear_error();
        rc = cmr_audit_run(s->store, s->audit_model, &o, &rep);
        if (rc) {
            pthread_mutex_unlock(&s->audit_lock);
            srv_fail(r, rc, "auditing the store");
            return;
        }
        int sound = !(rep->kinds & (1u << CMR_AUDIT_INCONSISTENCY)) || rep->count[CMR_AUDIT_INCONSISTENCY] == 0;
        json_t *doc = cmr_audit_report_to_json(rep, sound);
        cmr_audit_report_free(rep);
        char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
        json_decref(doc);
        if (!text) {
            pthread_mutex_unlock(&s->audit_lock);
            srv_error(r, 500, "out of memory");
            return;
        }
        free(s->audit_json);
        s->audit_json = text;
        s->audit_generation = st.generation;
        s->audit_kinds = o.kinds;
        s->audit_min_confidence = o.min_confidence;
    }
    r->body = (uint8_t *)strdup(s->audit_json);
    pthread_mutex_unlock(&s->audit_lock);
    if (!r->body) {
        srv_error(r, 500, "out of memory");
        return;
    }
    r->status = 200;
    r->type = "application/json";
    r->len = strlen((char *)r->body);
}

int srv_load_case(cmr_server *s, srv_response *r, uint64_t id, cmr_case **c)
{
    int rc = cmr_store_get(s->store, id, c);
    if (rc == CMR_ENOTFOUND)
        srv_error(r, 404, "no case %llu in this store", (unsigned long long)id);
    else if (rc)
        srv_fail(r, rc, "reading the case");
    return rc;
}
