/* Search results as JSON: one shape for the command line and the server
 * (docs/searching.md, "JSON"). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "cmr_searcher.h"

static json_t *num(double x) { return isnan(x) ? json_null() : json_real(x); }

static const char *kind_name(cmr_query_kind k)
{
    return k == CMR_QUERY_TEXT ? "text" : k == CMR_QUERY_STUDY ? "study" : k == CMR_QUERY_CASE ? "case" : "vector";
}

static json_t *summary(const cmr_case *c)
{
    json_t *dx = json_array();
    for (size_t i = 0; i < c->n_diagnoses; i++)
        json_array_append_new(dx, json_string(c->diagnoses[i].code));
    json_t *o = json_object();
    json_object_set_new(o, "study_uid", json_string(c->study_uid));
    json_object_set_new(o, "study_date", c->study_date ? json_integer(c->study_date) : json_null());
    json_object_set_new(o, "site", c->site ? json_string(c->site) : json_null());
    char sex[2] = {c->sex, 0};
    json_object_set_new(o, "sex", c->sex ? json_string(sex) : json_null());
    json_object_set_new(o, "age", c->age_years >= 0 ? json_integer(c->age_years) : json_null());
    json_object_set_new(o, "diagnoses", dx);
    /* json_string refuses invalid UTF-8: then null rather than no document */
    json_t *imp = c->impression ? json_string(c->impression) : NULL;
    json_object_set_new(o, "impression", imp ? imp : json_null());
    return o;
}

static json_t *findings_object(const cmr_case *c)
{
    json_t *o = json_object();
    for (size_t i = 0; i < c->n_findings; i++)
        json_object_set_new(o, c->findings[i].name, json_real(c->findings[i].score));
    return o;
}

struct json_t *cmr_results_to_json(const cmr_results *r, struct json_t *(*case_json)(const cmr_case *c))
{
    json_t *doc = json_object(), *items = json_array();
    if (!doc || !items) {
        json_decref(doc);
        json_decref(items);
        return NULL;
    }
    json_object_set_new(doc, "kind", json_string(kind_name(r->kind)));
    json_object_set_new(doc, "offset", json_integer((json_int_t)r->offset));
    json_object_set_new(doc, "limit", json_integer((json_int_t)r->limit));
    json_object_set_new(doc, "more", json_boolean(r->more));
    json_object_set_new(doc, "n_matching", json_integer((json_int_t)r->n_matching));
    json_object_set_new(doc, "exact", json_boolean(r->exact));
    json_object_set_new(doc, "n_candidates", json_integer((json_int_t)r->n_candidates));
    json_object_set_new(doc, "fusion", json_pack("{s:f, s:f}", "w_image", (double)r->w_image, "w_text",
                                                 (double)r->w_text));
    json_object_set_new(doc, "timing_ms", json_pack("{s:f, s:f, s:f}", "encode", r->ms_encode, "search",
                                                    r->ms_search, "explain", r->ms_explain));
    if (r->query_findings) {
        json_t *qf = json_object();
        for (size_t i = 0; i < cmr_finding_bank_size(); i++)
            json_object_set_new(qf, cmr_finding_bank(i)->key, num(r->query_findings[i]));
        json_object_set_new(doc, "query_findings", qf);
    } else {
        json_object_set_new(doc, "query_findings", json_null());
    }
    for (size_t i = 0; i < r->n; i++) {
        const cmr_result *it = &r->items[i];
        json_t *views = json_array(), *o = json_object();
        for (size_t v = 0; v < it->n_views; v++)
            json_array_append_new(views, json_string(it->views[v]));
        json_object_set_new(o, "rank", json_integer((json_int_t)(r->offset + i + 1)));
        json_object_set_new(o, "id", json_integer((json_int_t)it->id));
        json_object_set_new(o, "score", json_real(it->score));
        json_object_set_new(o, "similarity", json_pack("{s:o, s:o}", "image", num(it->sim[CMR_SPACE_IMAGE]),
                                                       "text", num(it->sim[CMR_SPACE_TEXT])));
        json_object_set_new(o, "findings", findings_object(it->record));
        json_t *sentence = it->sentence ? json_string(it->sentence) : NULL;
        json_object_set_new(o, "sentence",
                            sentence ? json_pack("{s:o, s:f}", "text", sentence, "similarity",
                                                 (double)it->sentence_sim)
                                     : json_null());
        json_object_set_new(o, "views", views);
        json_object_set_new(o, "folded", json_integer((json_int_t)it->n_folded));
        json_t *cj = case_json ? case_json(it->record) : summary(it->record);
        json_object_set_new(o, "case", cj ? cj : json_null());
        json_array_append_new(items, o);
    }
    json_object_set_new(doc, "results", items);
    return doc;
}

json_t *cmr_json_text(const char *s)
{
    if (!s)
        return json_null();
    json_t *j = json_string(s);
    if (j)
        return j;
    /* Not UTF-8 (a path or a record from a buggy producer): shown with
     * '?' for the bad bytes rather than lost or failing the output. */
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}
