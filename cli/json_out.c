/* Rendering cases, filters and store statistics as JSON and as text.
 *
 * Patient identity: a record holds only the keyed hash, and that is all that
 * is ever printed (as hex, so that scripts can group a patient's studies). */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cmr_cli.h"

static json_t *date_or_null(int32_t yyyymmdd)
{
    char date[11];
    cmr_cli_format_date(yyyymmdd, date);
    return date[0] ? json_string(date) : json_null();
}

static void format_time(int64_t t, char out[32])
{
    time_t tt = (time_t)t;
    struct tm tm;
    if (t <= 0 || !gmtime_r(&tt, &tm) || !strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
        out[0] = '\0';
}

json_t *cmr_case_to_json(const cmr_case *c)
{
    json_t *o = json_object(), *views = json_array(), *dx = json_array(), *sources = json_array(),
           *vectors = json_array();
    if (!o || !views || !dx || !sources || !vectors)
        goto fail;
    char key_hex[2 * CMR_PATIENT_KEY_BYTES + 1], when[32], sex[2] = {c->sex, '\0'};
    if (c->has_patient_key)
        cmr_hex(c->patient_key, CMR_PATIENT_KEY_BYTES, key_hex);
    format_time(c->ingest_time, when);
    for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++)
        if (c->views & (1u << b))
            json_array_append_new(views, json_string(cmr_view_name(1u << b)));
    for (size_t i = 0; i < c->n_diagnoses; i++) {
        const cmr_diagnosis *d = &c->diagnoses[i];
        json_array_append_new(dx, json_pack("{s:o, s:o, s:o, s:o}", "code", cmr_json_text(d->code),
                                            "system", cmr_json_text(d->system), "label",
                                            cmr_json_text(d->label), "source",
                                            cmr_json_text(d->source)));
    }
    for (size_t i = 0; i < c->n_sources; i++)
        json_array_append_new(sources, cmr_json_text(c->sources[i]));
    for (int s = 0; s < CMR_NSPACES; s++)
        if (c->vectors & (1u << s))
            json_array_append_new(vectors, json_string(cmr_space_name((cmr_space)s)));

    int bad = 0;
    bad |= json_object_set_new(o, "id", json_integer((json_int_t)c->id));
    bad |= json_object_set_new(o, "study_uid", cmr_json_text(c->study_uid));
    bad |= json_object_set_new(o, "patient_key", c->has_patient_key ? json_string(key_hex) : json_null());
    bad |= json_object_set_new(o, "study_date", date_or_null(c->study_date));
    bad |= json_object_set_new(o, "site", cmr_json_text(c->site));
    bad |= json_object_set_new(o, "manufacturer", cmr_json_text(c->manufacturer));
    bad |= json_object_set_new(o, "scanner_model", cmr_json_text(c->scanner_model));
    bad |= json_object_set_new(o, "field_strength",
                               c->field_strength > 0 ? json_real(c->field_strength) : json_null());
    bad |= json_object_set_new(o, "sex", c->sex ? json_string(sex) : json_null());
    bad |= json_object_set_new(o, "age", c->age_years >= 0 ? json_integer(c->age_years) : json_null());
    bad |= json_object_set_new(o, "views", views);
    bad |= json_object_set_new(o, "diagnoses", dx);
    bad |= json_object_set_new(o, "impression", cmr_json_text(c->impression));
    bad |= json_object_set_new(o, "impression_source", cmr_json_text(c->impression_source));
    bad |= json_object_set_new(o, "sources", sources);
    bad |= json_object_set_new(o, "vectors", vectors);
    bad |= json_object_set_new(o, "model", cmr_json_text(c->model_id));
    bad |= json_object_set_new(o, "ingest_time", when[0] ? json_string(when) : json_null());
    bad |= json_object_set_new(o, "generation", json_integer((json_int_t)c->generation));
    json_t *findings = json_object(); /* finding scores (docs/searching.md) */
    for (size_t i = 0; findings && i < c->n_findings; i++)
        json_object_set_new(findings, c->findings[i].name, json_real(c->findings[i].score));
    bad |= json_object_set_new(o, "findings", findings ? findings : json_null());
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
fail:
    json_decref(o);
    json_decref(views);
    json_decref(dx);
    json_decref(sources);
    json_decref(vectors);
    return NULL;
}

static void print_field(FILE *out, const char *name, const char *value)
{
    fprintf(out, "  %-18s ", name);
    if (!value || !*value) {
        fputs("-\n", out);
        return;
    }
    /* Continuation lines line up under the first. */
    for (const char *p = value; *p; p++) {
        fputc(*p, out);
        if (*p == '\n' && p[1])
            fprintf(out, "  %-18s ", "");
    }
    fputc('\n', out);
}

void cmr_case_print(FILE *out, const cmr_case *c)
{
    char buf[512];
    fprintf(out, "case %llu\n", (unsigned long long)c->id);
    print_field(out, "study uid", c->study_uid);
    if (c->has_patient_key)
        cmr_hex(c->patient_key, CMR_PATIENT_KEY_BYTES, buf);
    print_field(out, "patient key", c->has_patient_key ? buf : NULL);
    cmr_cli_format_date(c->study_date, buf);
    print_field(out, "study date", buf);
    print_field(out, "site", c->site);
    print_field(out, "manufacturer", c->manufacturer);
    print_field(out, "scanner model", c->scanner_model);
    snprintf(buf, sizeof buf, "%g T", (double)c->field_strength);
    print_field(out, "field strength", c->field_strength > 0 ? buf : NULL);
    snprintf(buf, sizeof buf, "%c", c->sex ? c->sex : '-');
    print_field(out, "sex", buf);
    snprintf(buf, sizeof buf, "%d", c->age_years);
    print_field(out, "age", c->age_years >= 0 ? buf : NULL);
    buf[0] = '\0';
    for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++)
        if (c->views & (1u << b)) {
            strncat(buf, buf[0] ? ", " : "", sizeof buf - strlen(buf) - 1);
            strncat(buf, cmr_view_name(1u << b), sizeof buf - strlen(buf) - 1);
        }
    print_field(out, "views", buf);
    if (c->n_diagnoses == 0)
        print_field(out, "diagnoses", NULL);
    for (size_t i = 0; i < c->n_diagnoses; i++) {
        const cmr_diagnosis *d = &c->diagnoses[i];
        snprintf(buf, sizeof buf, "%s%s%s%s%s%s", d->code, d->system ? " (" : "",
                 d->system ? d->system : "", d->system ? ")" : "", d->label ? "  " : "",
                 d->label ? d->label : "");
        print_field(out, i == 0 ? "diagnoses" : "", buf);
        if (d->source) {
            snprintf(buf, sizeof buf, "  from %s", d->source);
            print_field(out, "", buf);
        }
    }
    print_field(out, "impression", c->impression);
    print_field(out, "impression source", c->impression_source);
    if (c->n_sources == 0)
        print_field(out, "sources", NULL);
    for (size_t i = 0; i < c->n_sources; i++)
        print_field(out, i == 0 ? "sources" : "", c->sources[i]);
    buf[0] = '\0';
    for (int s = 0; s < CMR_NSPACES; s++)
        if (c->vectors & (1u << s)) {
            strncat(buf, buf[0] ? ", " : "", sizeof buf - strlen(buf) - 1);
            strncat(buf, cmr_space_name((cmr_space)s), sizeof buf - strlen(buf) - 1);
        }
    print_field(out, "vectors", buf[0] ? buf : "none");
    print_field(out, "model", c->model_id);
    format_time(c->ingest_time, buf);
    print_field(out, "ingested", buf);
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)c->generation);
    print_field(out, "generation", buf);
    if (c->n_findings == 0)
        print_field(out, "findings", NULL);
    for (size_t i = 0; i < c->n_findings; i++) {
        snprintf(buf, sizeof buf, "%-24s %.3f", c->findings[i].name, (double)c->findings[i].score);
        print_field(out, i == 0 ? "findings" : "", buf);
    }
}

json_t *cmr_filter_to_json(const cmr_filter *f)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    if (f->n_diagnoses) {
        json_t *dx = json_array();
        for (size_t i = 0; i < f->n_diagnoses; i++)
            json_array_append_new(dx, cmr_json_text(f->diagnoses[i]));
        json_object_set_new(o, "diagnoses", dx);
    }
    if (f->date_from)
        json_object_set_new(o, "date_from", date_or_null(f->date_from));
    if (f->date_to)
        json_object_set_new(o, "date_to", date_or_null(f->date_to));
    if (f->site)
        json_object_set_new(o, "site", cmr_json_text(f->site));
    if (f->manufacturer)
        json_object_set_new(o, "manufacturer", cmr_json_text(f->manufacturer));
    if (f->sex) {
        char sex[2] = {f->sex, '\0'};
        json_object_set_new(o, "sex", json_string(sex));
    }
    if (f->age_min || f->age_max) {
        json_object_set_new(o, "age_min", json_integer(f->age_min));
        json_object_set_new(o, "age_max", json_integer(f->age_max));
    }
    return o;
}

json_t *cmr_stats_to_json(const cmr_store_stats *st, const cmr_store *store)
{
    const char *name, *hash;
    unsigned dim;
    cmr_store_model(store, &name, &hash, &dim);
    json_t *spaces = json_object();
    if (!spaces)
        return NULL;
    for (int s = 0; s < CMR_NSPACES; s++) {
        const cmr_index_info *ix = &st->index[s];
        json_object_set_new(
            spaces, cmr_space_name((cmr_space)s),
            json_pack("{s:I, s:{s:s, s:o, s:I, s:I, s:i, s:i, s:b}}", "vectors",
                      (json_int_t)st->vectors[s], "index", "kind", ix->kind ? ix->kind : "none",
                      "factory", cmr_json_text(ix->factory), "ntotal", (json_int_t)ix->ntotal, "generation",
                      (json_int_t)ix->generation, "nlist", (int)ix->nlist, "nprobe", (int)ix->nprobe,
                      "on_disk_current", ix->on_disk_current));
    }
    json_t *model = dim ? json_pack("{s:o, s:o, s:i}", "name", cmr_json_text(name),
                                    "weights_hash", cmr_json_text(hash), "dim", (int)dim)
                        : json_null();
    return json_pack("{s:I, s:I, s:o, s:o}", "cases", (json_int_t)st->cases, "generation",
                     (json_int_t)st->generation, "model", model, "spaces", spaces);
}
