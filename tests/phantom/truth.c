/* truth.json: everything tests and evaluations need to know, written by hand
 * (with escaping) to keep the generator free of a JSON dependency. */
#include <stdio.h>
#include <string.h>

#include "cmr_error.h"
#include "dicom_writer.h"
#include "phantom.h"
#include "series.h"

static void jstr(FILE *f, const char *s)
{
    fputc('"', f);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': fputs("\\\"", f); break;
        case '\\': fputs("\\\\", f); break;
        case '\n': fputs("\\n", f); break;
        case '\r': fputs("\\r", f); break;
        case '\t': fputs("\\t", f); break;
        default:
            if (*p < 0x20)
                fprintf(f, "\\u%04x", *p);
            else
                fputc(*p, f);
        }
    }
    fputc('"', f);
}

static const char *const problem_names[] = {"label_noise", "duplicate", "missing_lge", "missing_lax",
                                             "truncated_file", "corrupt_file", "no_impression", "contradiction"};
#define NPROBLEMS 8

static const char *const severity_names[] = {"none", "mild", "moderate", "severe"};
static const char *const report_names[] = {"cda", "text", "sr", "none"};
static const char *const vendor_names[] = {"siemens", "ge", "philips"};

static void kv_num(FILE *f, const char *k, double v, int last) { fprintf(f, "\"%s\": %.4g%s", k, v, last ? "" : ", "); }

int cmr_truth_write(const cmr_phantom_opts *o, const cmr_study *st, int n, const char *path)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: cannot create", path);
    int counts[NPROBLEMS] = {0};
    fprintf(f, "{\n  \"generator\": \"cmr-phantom\",\n  \"version\": \"%s\",\n  \"seed\": %llu,\n  \"studies\": %d,\n",
            CMR_PHANTOM_VERSION, (unsigned long long)o->seed, n);
    fprintf(f, "  \"rates\": {");
    kv_num(f, "label_noise", o->label_noise, 0);
    kv_num(f, "duplicate", o->duplicate, 0);
    kv_num(f, "missing_view", o->missing_view, 0);
    kv_num(f, "corrupt", o->corrupt, 0);
    kv_num(f, "no_impression", o->no_impression, 0);
    kv_num(f, "contradiction", o->contradiction, 1);
    fprintf(f, "},\n  \"diagnoses\": [");
    for (int d = 0; d < CMR_DX_COUNT; d++) {
        fprintf(f, "%s{\"key\": \"%s\", \"snomed\": \"%s\", \"snomed_display\": ", d ? ", " : "", cmr_dx_key[d],
                cmr_dx_codes[d].snomed);
        jstr(f, cmr_dx_codes[d].snomed_display);
        fprintf(f, ", \"icd10\": \"%s\", \"icd10_display\": ", cmr_dx_codes[d].icd10);
        jstr(f, cmr_dx_codes[d].icd10_display);
        fputc('}', f);
    }
    fprintf(f, "],\n  \"study_list\": [\n");
    for (int i = 0; i < n; i++) {
        const cmr_study *s = &st[i];
        const cmr_heart_params *p = &s->hp;
        fprintf(f, "    {\"index\": %d, \"study_uid\": \"%s\", \"accession\": ", s->index, s->study_uid);
        jstr(f, s->accession);
        fprintf(f, ", \"patient_id\": ");
        jstr(f, s->patient_id);
        fprintf(f, ", \"dir\": ");
        jstr(f, s->dir);
        fprintf(f, ", \"site\": \"%s\", \"vendor\": \"%s\", \"model\": ", cmr_sites[s->site].key, vendor_names[s->vendor]);
        jstr(f, s->model);
        fprintf(f, ", \"field_strength\": %.1f, \"study_date\": \"%s\", \"age\": %d, \"sex\": \"%s\",\n", s->field_t,
                s->study_date, s->age, s->sex);
        fprintf(f, "     \"diagnosis\": \"%s\", \"severity\": \"%s\",\n", cmr_dx_key[s->dx],
                severity_names[p->severity < 0 || p->severity > 3 ? 0 : p->severity]);
        fprintf(f, "     \"params\": {");
        kv_num(f, "lvef", p->lvef, 0);
        kv_num(f, "lvef_target", p->lvef_target, 0);
        kv_num(f, "rvef", p->rvef, 0);
        kv_num(f, "lvedv_ml", p->lvedv_ml, 0);
        kv_num(f, "lvesv_ml", p->lvesv_ml, 0);
        kv_num(f, "rvedv_ml", p->rvedv_ml, 0);
        kv_num(f, "rvesv_ml", p->rvesv_ml, 0);
        kv_num(f, "max_wall_mm", p->max_wall_mm, 0);
        kv_num(f, "septal_wall_mm", p->septal_wall_mm, 0);
        kv_num(f, "lateral_wall_mm", p->lateral_wall_mm, 0);
        kv_num(f, "nc_ratio", p->nc_ratio, 0);
        kv_num(f, "effusion_mm", p->effusion_mm, 0);
        kv_num(f, "la_scale", p->la_scale, 0);
        kv_num(f, "rv_scale", p->rv_scale, 0);
        kv_num(f, "hr_bpm", p->hr_bpm, 0);
        kv_num(f, "lv_length_mm", p->L_ed, 0);
        kv_num(f, "long_shortening", p->long_short, 0);
        fprintf(f, "\"apical_variant\": %s, \"edema\": %s, \"lge_pattern\": \"%s\", \"territory\": \"%s\", ",
                p->apical_variant ? "true" : "false", p->edema ? "true" : "false", p->lge_pattern, p->territory);
        fprintf(f, "\"es_phase\": %d, \"lv_center\": [%.2f, %.2f, %.2f]},\n", s->es_phase, s->lv_center[0],
                s->lv_center[1], s->lv_center[2]);
        fprintf(f, "     \"protocol\": {\"rows\": %d, \"cols\": %d, \"pixel_spacing\": %.4f, \"slice_thickness\": %g, "
                   "\"slice_gap\": %g, \"sax_slices\": %d, \"phases\": %d, \"lge\": \"%s\", \"ti_ms\": %.0f, "
                   "\"transfer_syntax\": \"%s\", \"multiframe\": %s, \"has_lge\": %s, \"has_lax\": %s, "
                   "\"has_localizer\": %s, \"has_stir\": %s, \"has_flow\": %s, \"arrhythmia\": %s, \"motion_artefact\": %s},\n",
                s->rows, s->cols, s->ps, s->thick, s->gap, s->nslices, s->nphases, s->psir ? "psir" : "magnitude",
                s->ti_ms, cmr_dcm_ts_name[s->ts], s->multiframe ? "true" : "false", s->has_lge ? "true" : "false",
                s->has_lax ? "true" : "false", s->has_loc ? "true" : "false", s->has_stir ? "true" : "false", s->has_flow ? "true" : "false",
                s->arrhythmia ? "true" : "false", s->motion_artefact ? "true" : "false");
        fprintf(f, "     \"sax_ws\": [");
        for (int k = 0; k < s->nslices; k++)
            fprintf(f, "%s%.2f", k ? ", " : "", cmr_series_sax_ws(s, k));
        fprintf(f, "],\n");
        fprintf(f, "     \"report\": {\"kind\": \"%s\", \"path\": ", report_names[s->report_kind]);
        jstr(f, s->report_path);
        fprintf(f, ", \"text_diagnosis\": \"%s\", \"code_diagnosis\": \"%s\", \"icd10\": \"%s\", \"snomed\": \"%s\", "
                   "\"impression\": ",
                cmr_dx_key[s->report_dx], cmr_dx_key[s->code_dx], cmr_dx_codes[s->code_dx].icd10,
                cmr_dx_codes[s->code_dx].snomed);
        jstr(f, s->impression);
        fprintf(f, "},\n     \"series\": [");
        for (int k = 0; k < s->nseries; k++) {
            const cmr_series_info *si = &s->series[k];
            fprintf(f, "%s{\"uid\": \"%s\", \"kind\": \"%s\", \"number\": %d, \"files\": %d, \"frames\": %d, "
                    "\"enhanced\": %s, \"description\": ",
                    k ? ", " : "", si->uid, si->kind, si->number, si->nfiles, si->nframes, si->enhanced ? "true" : "false");
            jstr(f, si->desc);
            fputc('}', f);
        }
        fprintf(f, "],\n     \"problems\": [");
        int first = 1;
        for (int b = 0; b < NPROBLEMS; b++)
            if (s->problems & (1u << b)) {
                fprintf(f, "%s\"%s\"", first ? "" : ", ", problem_names[b]);
                first = 0;
                counts[b]++;
            }
        fprintf(f, "], \"duplicate_of\": ");
        if (s->dup_of >= 0)
            fprintf(f, "\"%s\"", st[s->dup_of].study_uid);
        else
            fputs("null", f);
        fprintf(f, ", \"bad_file\": ");
        if (s->bad_file[0])
            jstr(f, s->bad_file);
        else
            fputs("null", f);
        fprintf(f, ", \"files\": %d, \"bytes\": %zu}%s\n", s->nfiles, s->bytes, i + 1 < n ? "," : "");
    }
    fprintf(f, "  ],\n  \"problem_counts\": {");
    for (int b = 0; b < NPROBLEMS; b++)
        fprintf(f, "%s\"%s\": %d", b ? ", " : "", problem_names[b], counts[b]);
    fprintf(f, "}\n}\n");
    if (fclose(f) != 0)
        return cmr_fail(CMR_EIO, "%s: write failed", path);
    return 0;
}
