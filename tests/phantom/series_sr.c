/* The report as a DICOM Basic Text SR object, a series of its own. */
#include <stdio.h>
#include <string.h>

#include "cmr_error.h"
#include "series_int.h"

static int put_code_item(cmr_dcm *d, uint32_t seq, const char *value, const char *scheme, const char *meaning)
{
    int rc;
    if ((rc = cmr_dcm_seq_begin(d, seq)) || (rc = cmr_dcm_item_begin(d)) || (rc = cmr_dcm_put(d, T(0008, 0100), value)) ||
        (rc = cmr_dcm_put(d, T(0008, 0102), scheme)) || (rc = cmr_dcm_putf(d, T(0008, 0104), "%.64s", meaning)) ||
        (rc = cmr_dcm_item_end(d)) || (rc = cmr_dcm_seq_end(d)))
        return rc;
    return 0;
}

/* CONTAINS item of type TEXT or CODE under the current content sequence. */
static int sr_text(cmr_dcm *d, const char *cv, const char *meaning, const char *text)
{
    int rc;
    if ((rc = cmr_dcm_item_begin(d)) || (rc = cmr_dcm_put(d, T(0040, A010), "CONTAINS")) ||
        (rc = cmr_dcm_put(d, T(0040, A040), "TEXT")) || (rc = put_code_item(d, T(0040, A043), cv, "DCM", meaning)) ||
        (rc = cmr_dcm_put(d, T(0040, A160), text)) || (rc = cmr_dcm_item_end(d)))
        return rc;
    return 0;
}

static int sr_code(cmr_dcm *d, int dx)
{
    int rc;
    const cmr_dx_code *c = &cmr_dx_codes[dx];
    if ((rc = cmr_dcm_item_begin(d)) || (rc = cmr_dcm_put(d, T(0040, A010), "CONTAINS")) ||
        (rc = cmr_dcm_put(d, T(0040, A040), "CODE")) ||
        (rc = put_code_item(d, T(0040, A043), "29308-4", "LN", "Diagnosis")) ||
        (rc = put_code_item(d, T(0040, A168), c->snomed, "SCT", c->snomed_display)) || (rc = cmr_dcm_item_end(d)))
        return rc;
    if ((rc = cmr_dcm_item_begin(d)) || (rc = cmr_dcm_put(d, T(0040, A010), "CONTAINS")) ||
        (rc = cmr_dcm_put(d, T(0040, A040), "CODE")) ||
        (rc = put_code_item(d, T(0040, A043), "29308-4", "LN", "Diagnosis")) ||
        (rc = put_code_item(d, T(0040, A168), c->icd10, "I10", c->icd10_display)) || (rc = cmr_dcm_item_end(d)))
        return rc;
    return 0;
}

static int sr_container(cmr_dcm *d, const char *cv, const char *meaning)
{
    int rc;
    if ((rc = cmr_dcm_item_begin(d)) || (rc = cmr_dcm_put(d, T(0040, A010), "CONTAINS")) ||
        (rc = cmr_dcm_put(d, T(0040, A040), "CONTAINER")) || (rc = put_code_item(d, T(0040, A043), cv, "DCM", meaning)) ||
        (rc = cmr_dcm_put(d, T(0040, A050), "SEPARATE")) || (rc = cmr_dcm_seq_begin(d, T(0040, A730))))
        return rc;
    return 0;
}

static int sr_container_end(cmr_dcm *d)
{
    int rc;
    if ((rc = cmr_dcm_seq_end(d)) || (rc = cmr_dcm_item_end(d)))
        return rc;
    return 0;
}

int cmr_series_write_sr(cmr_series_ctx *cx, const char *findings, const char *impression)
{
    cmr_study *s = cx->s;
    int rc = 0;
    cmr_dcm *d = NULL;
    series_def sd;
    series_next_series(cx, &sd, K_SR, CMR_C_CINE, 0);
    cx->minutes += 30;
    char sop[CMR_UID_LEN], rel[510], path[1200];
    cmr_uid(&cx->ur, sop);
    if ((rc = cmr_dcm_new(&d)) || (rc = series_put_common(cx, d, &sd, "SR", BASIC_TEXT_SR, sop, 1)))
        goto fail;
    P(T(0040, A491), "COMPLETE");
    P(T(0040, A493), "UNVERIFIED");
    P(T(0040, A040), "CONTAINER");
    P(T(0040, A050), "SEPARATE");
    if ((rc = put_code_item(d, T(0040, A043), "18748-4", "LN", "Diagnostic Imaging Report")) ||
        (rc = cmr_dcm_seq_begin(d, T(0008, 1111))) || (rc = cmr_dcm_seq_end(d)) ||
        (rc = cmr_dcm_seq_begin(d, T(0040, A372))) || (rc = cmr_dcm_seq_end(d)) ||
        (rc = cmr_dcm_seq_begin(d, T(0040, A730))))
        goto fail;
    if ((rc = sr_container(d, "121070", "Findings")) || (rc = sr_text(d, "121071", "Finding", findings)) ||
        (rc = sr_container_end(d)))
        goto fail;
    if (impression[0]) {
        if ((rc = sr_container(d, "121072", "Impressions")) || (rc = sr_text(d, "121073", "Impression", impression)) ||
            (rc = sr_code(d, s->code_dx)) || (rc = sr_container_end(d)))
            goto fail;
    } else if ((rc = sr_code(d, s->code_dx))) {
        goto fail;
    }
    if ((rc = cmr_dcm_seq_end(d)))
        goto fail;
    if ((rc = series_file_path(cx, &sd, 1, rel, sizeof rel)))
        goto fail;
    snprintf(path, sizeof path, "%s/%s", cx->o->out, rel);
    size_t bytes = 0;
    if ((rc = cmr_dcm_save(d, path, CMR_TS_EXPLICIT_LE, &bytes)))
        goto fail;
    snprintf(s->report_path, sizeof s->report_path, "%s", rel);
    s->bytes += bytes;
    s->nfiles++;
    cmr_series_info *si = &s->series[s->nseries++];
    memset(si, 0, sizeof *si);
    memcpy(si->uid, sd.uid, sizeof si->uid);
    snprintf(si->kind, sizeof si->kind, "sr_report");
    snprintf(si->desc, sizeof si->desc, "%s", sd.desc);
    si->number = sd.number;
    si->nfiles = 1;
fail:
    cmr_dcm_free(d);
    return rc;
}
