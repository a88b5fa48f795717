/* The ingest pipeline (cmr_ingest.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cmr_dicom.h"
#include "cmr_ingest.h"
#include "cmr_report.h"
#include "cmr_sha256.h"
#include "indexer_internal.h"

typedef struct summary_impl {
    cmr_ingest_summary pub;
    size_t skips_cap, issues_cap;
} summary_impl;

static void add_skip(summary_impl *s, const char *what, const char *fmt, ...)
{
    char reason[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(reason, sizeof reason, fmt, ap);
    va_end(ap);
    if (cmr_grow((void **)&s->pub.skips, &s->skips_cap, s->pub.n_skips + 1, sizeof *s->pub.skips))
        return;
    cmr_ingest_skip *k = &s->pub.skips[s->pub.n_skips];
    k->what = strdup(what ? what : "?");
    k->reason = strdup(reason);
    if (k->what && k->reason)
        s->pub.n_skips++;
    else {
        free(k->what);
        free(k->reason);
    }
}

static void add_issue(summary_impl *s, const char *fmt, ...)
{
    char line[1200];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (cmr_grow((void **)&s->pub.issues, &s->issues_cap, s->pub.n_issues + 1, sizeof *s->pub.issues))
        return;
    if ((s->pub.issues[s->pub.n_issues] = strdup(line)))
        s->pub.n_issues++;
}

void cmr_ingest_summary_free(cmr_ingest_summary *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n_skips; i++) {
        free(s->skips[i].what);
        free(s->skips[i].reason);
    }
    for (size_t i = 0; i < s->n_issues; i++)
        free(s->issues[i]);
    free(s->skips);
    free(s->issues);
    free(s);
}

/* ---- reports ----------------------------------------------------------------------- */

static int read_one_report(const char *path, const cmr_report_options *ropts, cmr_report **out)
{
    *out = NULL;
    if (cmr_dicom_probe(path)) {
        cmr_sr_report *sr;
        int rc = cmr_dicom_read_sr(path, &sr);
        if (rc)
            return rc;
        rc = cmr_report_from_sr(path, sr, out);
        cmr_sr_report_free(sr);
        return rc;
    }
    return cmr_report_read(path, ropts, out);
}

typedef struct study_reports {
    size_t n;
    const cmr_report **items;
    const char **paths;
} study_reports;

/* ---- one study ------------------------------------------------------------------------ */

/* Whether a study holds anything a CMR case can be made of. */
static int has_cmr_series(const cmr_study *st, const char **why)
{
    int cmr = 0;
    for (size_t i = 0; i < st->n_series; i++)
        cmr |= st->series[i].label != CMR_SERIES_OTHER;
    if (!cmr)
        *why = st->n_series ? st->series[0].reason : "no image series";
    return cmr;
}

static void study_fingerprint(const cmr_study *st, const study_reports *rep, uint8_t out[32])
{
    cmr_sha256 ctx;
    cmr_sha256_init(&ctx);
    cmr_sha256_update(&ctx, st->fingerprint, sizeof st->fingerprint);
    for (size_t i = 0; i < rep->n; i++) {
        struct stat sb;
        int64_t meta[2] = {0, 0};
        if (stat(rep->paths[i], &sb) == 0) {
            meta[0] = (int64_t)sb.st_size;
            meta[1] = (int64_t)sb.st_mtime;
        }
        cmr_sha256_update(&ctx, rep->paths[i], strlen(rep->paths[i]) + 1);
        cmr_sha256_update(&ctx, meta, sizeof meta);
    }
    cmr_sha256_final(&ctx, out);
}

typedef struct case_builder {
    cmr_case c;
    cmr_diagnosis dx[64];
    const char *sources[65];
} case_builder;

static void build_case(case_builder *b, cmr_store *store, const cmr_study *st, const study_reports *rep,
                       const char *site, summary_impl *sum)
{
    cmr_case *c = &b->c;
    memset(b, 0, sizeof *b);
    c->study_uid = st->uid;
    if (st->patient_id[0] && cmr_store_patient_key(store, st->patient_id, c->patient_key) == 0)
        c->has_patient_key = 1;
    else
        add_issue(sum, "study %s: no Patient ID; the case cannot be grouped with the patient's other studies",
                  st->uid);
    c->study_date = st->date;
    c->site = site && *site ? site : st->institution[0] ? st->institution : NULL;
    c->manufacturer = st->manufacturer[0] ? st->manufacturer : NULL;
    c->scanner_model = st->scanner_model[0] ? st->scanner_model : NULL;
    c->field_strength = st->field_strength > 0 && st->field_strength <= 20 ? (float)st->field_strength : 0;
    c->sex = st->sex;
    c->age_years = st->age_years;
    for (size_t i = 0; i < st->n_series; i++)
        c->views |= cmr_series_label_view(st->series[i].label);
    c->sources = b->sources;
    b->sources[c->n_sources++] = st->folder;
    for (size_t r = 0; r < rep->n; r++) {
        const cmr_report *report = rep->items[r];
        if (c->n_sources < 65)
            b->sources[c->n_sources++] = rep->paths[r];
        if (!report)
            continue;
        if (!c->impression && report->impression) {
            c->impression = report->impression;
            c->impression_source = rep->paths[r];
        } else if (report->impression && strcmp(report->impression, c->impression) != 0) {
            /* Reports are linked in a fixed order (their paths); the first
             * impression is kept, and the curator is told. */
            add_issue(sum, "study %s: %s also has an impression, different from the one kept (%s)", st->uid,
                      rep->paths[r], c->impression_source);
        }
        for (size_t k = 0; k < report->n_codes && c->n_diagnoses < 64; k++) {
            const cmr_report_code *code = &report->codes[k];
            /* Section and document codes (LOINC) are not diagnoses. */
            if (code->system && !strcmp(code->system, "LOINC"))
                continue;
            b->dx[c->n_diagnoses++] = (cmr_diagnosis){code->code, code->system, code->label, rep->paths[r]};
        }
    }
    c->diagnoses = b->dx;
}

/* ---- the run --------------------------------------------------------------------------- */

static void progress(const cmr_ingest_options *o, const char *phase, size_t done, size_t total)
{
    if (o && o->progress)
        o->progress(o->progress_user, phase, done, total);
}

typedef struct scan_progress_ctx {
    const cmr_ingest_options *o;
} scan_progress_ctx;

static void on_scan_progress(void *user, size_t done, size_t total)
{
    scan_progress_ctx *ctx = user;
    progress(ctx->o, "reading DICOM headers", done, total);
}

static int ingest_study(cmr_store *store, const cmr_ingest_options *o, const cmr_study *st, const study_reports *rep,
                        const char *site, summary_impl *sum)
{
    uint8_t fp[32];
    study_fingerprint(st, rep, fp);
    uint64_t id;
    int embedding = o && o->embed && o->spec;
    if (!(o && o->force) && cmr_store_find_uid(store, st->uid, &id) == 0) {
        cmr_case *old;
        if (cmr_store_get(store, id, &old) == 0) {
            int same = old->has_fingerprint && !memcmp(old->fingerprint, fp, 32) &&
                       (!embedding || old->vectors != 0);
            cmr_case_free(old);
            if (same) {
                sum->pub.studies_unchanged++;
                return 0;
            }
        }
    }
    cmr_clear_error();

    case_builder *b = malloc(sizeof *b);
    float *tensor = NULL, *vec = NULL;
    int rc = 0, has_text = 0, has_image = 0;
    if (!b)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    build_case(b, store, st, rep, site, sum);
    memcpy(b->c.fingerprint, fp, 32);
    b->c.has_fingerprint = 1;
    if (!b->c.impression) {
        sum->pub.studies_without_impression++;
        add_issue(sum, "study %s: no report impression linked; indexed without one", st->uid);
    }
    if (embedding) {
        /* A study the model input cannot be built from (no usable cine) is
         * still stored, with its impression's vector if it has one: its
         * gap is listed, it is not dropped. */
        cmr_tensor_info info;
        if ((rc = cmr_study_tensor(st, o->spec, &tensor, &info))) {
            add_issue(sum, "study %s: stored without an image vector: %s", st->uid, cmr_errmsg());
            tensor = NULL;
            rc = 0;
        } else if (info.gaps[0]) {
            add_issue(sum, "study %s: %s", st->uid, info.gaps);
        }
        if (!(vec = malloc(2 * (size_t)o->dim * sizeof *vec))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        if ((tensor || b->c.impression) &&
            (rc = o->embed(o->embed_user, tensor, tensor ? &info : NULL, b->c.impression, tensor ? vec : NULL,
                           vec + o->dim, &has_text))) {
            add_skip(sum, st->uid, "embedding failed: %s", cmr_errmsg());
            sum->pub.studies_skipped++;
            rc = 0;
            goto done;
        }
        has_image = tensor != NULL;
    }
    cmr_txn *t;
    int replaced = 0;
    if ((rc = cmr_txn_begin(store, &t)))
        goto done;
    if (embedding && (rc = cmr_txn_set_model(t, o->model_name, o->model_hash, o->dim))) {
        cmr_txn_abort(t);
        goto done;
    }
    if ((rc = cmr_txn_put_ex(t, &b->c, has_image ? vec : NULL, has_text ? vec + o->dim : NULL, NULL, &replaced))) {
        cmr_txn_abort(t);
        if (rc == CMR_EINVAL) {
            /* Bad values in this study only: skip it, keep going. */
            add_skip(sum, st->uid, "%s", cmr_errmsg());
            sum->pub.studies_skipped++;
            rc = 0;
        }
        goto done;
    }
    if ((rc = cmr_txn_commit(t)))
        goto done;
    if (replaced)
        sum->pub.studies_updated++;
    else
        sum->pub.studies_new++;
    if (!has_image && !has_text)
        sum->pub.studies_without_vectors++;
done:
    free(tensor);
    free(vec);
    free(b);
    return rc;
}

int cmr_ingest(cmr_store *store, const char *const *roots, size_t n_roots, const cmr_ingest_options *o,
               cmr_ingest_summary **out)
{
    *out = NULL;
    summary_impl *sum = calloc(1, sizeof *sum);
    if (!sum)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    cmr_archive *archive = NULL;
    cmr_manifest *manifest = NULL;
    cmr_xml_schema *cda_schema = NULL;
    cmr_report **reports = NULL;
    cmr_report_link *links = NULL;
    study_reports *per_study = NULL;
    long *manifest_map = NULL;
    int rc;

    if (o && o->manifest_path && (rc = cmr_manifest_read(o->manifest_path, &manifest)))
        goto fail;
    if (o && o->cda_schema_path && (rc = cmr_xml_schema_load(o->cda_schema_path, &cda_schema)))
        goto fail;
    scan_progress_ctx pctx = {o};
    cmr_scan_options sopts = {.threads = o ? o->threads : 0, .progress = on_scan_progress, .progress_user = &pctx};
    if ((rc = cmr_archive_scan(roots, n_roots, &sopts, &archive)))
        goto fail;
    sum->pub.files_seen = archive->n_files_seen;
    sum->pub.dicom_files = archive->n_dicom;
    sum->pub.non_dicom_files = archive->n_skipped_non_dicom;
    sum->pub.studies_found = archive->n_studies;
    for (size_t i = 0; i < archive->n_issues; i++) {
        const cmr_issue *is = &archive->issues[i];
        if (is->code == CMR_EFORMAT && is->path && !is->study_uid)
            add_skip(sum, is->path, "%s", is->message); /* a file that could not be read */
        else
            add_issue(sum, "%s%s%s", is->path ? is->path : "", is->path ? ": " : "", is->message);
    }

    /* Reports: read every one, then link them to studies. */
    size_t n_rep = archive->n_reports;
    sum->pub.reports_found = n_rep;
    reports = calloc(n_rep ? n_rep : 1, sizeof *reports);
    if (!reports) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    cmr_report_options ropts = {.cda_schema = cda_schema, .schema_errors_fatal = 0};
    for (size_t i = 0; i < n_rep; i++) {
        progress(o, "reading reports", i + 1, n_rep);
        if (read_one_report(archive->report_paths[i], &ropts, &reports[i]) != 0) {
            sum->pub.reports_unreadable++;
            add_skip(sum, archive->report_paths[i], "%s", cmr_errmsg());
            continue;
        }
        for (size_t w = 0; w < reports[i]->n_warnings; w++)
            add_issue(sum, "%s", reports[i]->warnings[w]);
    }
    if (manifest && (rc = cmr_manifest_match(manifest, archive, &manifest_map)))
        goto fail;
    if ((rc = cmr_report_link_all(archive, manifest, archive->report_paths, (const cmr_report *const *)reports,
                                  n_rep, &links)))
        goto fail;
    per_study = calloc(archive->n_studies ? archive->n_studies : 1, sizeof *per_study);
    if (!per_study) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < n_rep; i++) {
        if (links[i].study < 0) {
            if (reports[i]) {
                sum->pub.reports_unlinked++;
                add_issue(sum, "%s: not linked to any study%s%s", archive->report_paths[i],
                          links[i].note ? ": " : "", links[i].note ? links[i].note : "");
            }
            continue;
        }
        sum->pub.reports_linked++;
        study_reports *sr = &per_study[links[i].study];
        const cmr_report **items = realloc(sr->items, (sr->n + 1) * sizeof *items);
        const char **paths = items ? realloc(sr->paths, (sr->n + 1) * sizeof *paths) : NULL;
        if (items)
            sr->items = items;
        if (!paths) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto fail;
        }
        sr->paths = paths;
        sr->items[sr->n] = reports[i];
        sr->paths[sr->n++] = archive->report_paths[i];
    }

    for (size_t i = 0; i < archive->n_studies; i++) {
        const cmr_study *st = &archive->studies[i];
        progress(o, "indexing studies", i + 1, archive->n_studies);
        for (size_t j = 0; j < st->n_series; j++)
            sum->pub.series_by_label[st->series[j].label]++;
        const char *why;
        if (st->mixed_patients) {
            add_skip(sum, st->uid, "files of more than one patient share this Study Instance UID");
            sum->pub.studies_skipped++;
            continue;
        }
        if (!has_cmr_series(st, &why)) {
            add_skip(sum, st->uid, "not a cardiac MR study: %s", why);
            sum->pub.studies_skipped++;
            continue;
        }
        /* The manifest study describing this one (by UID, folder or a
         * unique accession), else the manifest's own site. */
        const char *site = NULL;
        if (manifest_map && manifest_map[i] >= 0)
            site = manifest->studies[manifest_map[i]].site;
        if (!site && manifest)
            site = manifest->site;
        if ((rc = ingest_study(store, o, st, &per_study[i], site, sum)))
            goto fail;
    }
    rc = 0;
    *out = &sum->pub;
    sum = NULL;
fail:
    free(manifest_map);
    if (per_study)
        for (size_t i = 0; i < archive->n_studies; i++) {
            free(per_study[i].items);
            free(per_study[i].paths);
        }
    free(per_study);
    if (links)
        cmr_report_links_free(links, archive->n_reports);
    if (reports)
        for (size_t i = 0; i < archive->n_reports; i++)
            cmr_report_free(reports[i]);
    free(reports);
    cmr_archive_free(archive);
    cmr_manifest_free(manifest);
    cmr_xml_schema_free(cda_schema);
    cmr_ingest_summary_free(sum ? &sum->pub : NULL);
    return rc;
}
