/* Enhanced MR Image Storage: a whole cine or LGE series as one multi-frame
 * object, the way Philips scanners of the last decade can write it.  What
 * every frame shares (pixel measures, orientation, timing, coils, frame
 * type) goes in the Shared Functional Groups; position, trigger delay and
 * the dimension indices per frame go in the Per-frame Functional Groups.
 * The dimensions are stack, position in stack and temporal position. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "series_int.h"

#define SEQ(tag)                                                                                                       \
    do {                                                                                                               \
        if ((rc = cmr_dcm_seq_begin(d, tag)) || (rc = cmr_dcm_item_begin(d)))                                          \
            goto fail;                                                                                                 \
    } while (0)
#define END()                                                                                                          \
    do {                                                                                                               \
        if ((rc = cmr_dcm_item_end(d)) || (rc = cmr_dcm_seq_end(d)))                                                   \
            goto fail;                                                                                                 \
    } while (0)

static int code_item(cmr_dcm *d, uint32_t seq, const char *value, const char *scheme, const char *meaning)
{
    int rc = 0;
    SEQ(seq);
    P(T(0008, 0100), value);
    P(T(0008, 0102), scheme);
    P(T(0008, 0104), meaning);
    END();
fail:
    return rc;
}

/* Attributes of the Enhanced MR Image and MR Pulse Sequence modules. */
static int put_top(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const img_spec *im0, int n)
{
    int rc = 0;
    const cmr_study *s = cx->s;
    int lge = sd->contrast == CMR_C_LGE || sd->contrast == CMR_C_PSIR;
    char tm[16];
    series_fmt_time(tm, s->study_time, cx->minutes, 0);
    P(T(0008, 0008), "ORIGINAL\\PRIMARY\\CARDIAC_GATED\\NONE");
    PF(T(0008, 002A), "%s%s", s->study_date, tm);
    P(T(0008, 9205), "MONOCHROME");
    P(T(0008, 9206), "VOLUME");
    P(T(0008, 9207), "NONE");
    P(T(0008, 9208), sd->contrast == CMR_C_PSIR ? "REAL" : "MAGNITUDE");
    P(T(0008, 9209), lge ? "T1" : "UNKNOWN");
    P(T(0018, 0015), "HEART");
    P(T(0018, 0023), "2D");
    PF(T(0018, 0087), "%.1f", s->field_t);
    PF(T(0018, 1000), "%d", 42000 + 100 * s->site + (s->field_t > 2)); /* one per scanner of the site */
    P(T(0018, 5100), "HFS");
    P(T(0018, 9004), "PRODUCT");
    P(T(0018, 9005), lge ? "IR_TFE" : "B_TFE");
    P(T(0018, 9008), "GRADIENT");
    P(T(0018, 9012), "NO");
    P(T(0018, 9014), "NO");
    P(T(0018, 9015), "NO");
    P(T(0018, 9017), lge ? "NONE" : "LONGITUDINAL");
    P(T(0018, 9018), "NO");
    P(T(0018, 9024), "NO");
    P(T(0018, 9025), "NONE");
    P(T(0018, 9029), "NONE");
    P(T(0018, 9032), "RECTILINEAR");
    P(T(0018, 9033), "PARTIAL");
    P(T(0018, 9034), "LINEAR");
    P(T(0018, 9093), "1");
    PF(T(0018, 9073), "%.1f", sd->cine ? 60000.0 / s->hp.hr_bpm * 12 : 60000.0 / s->hp.hr_bpm * 10);
    P(T(0018, 9100), "1H");
    P(T(0018, 9064), "NONE");
    P(T(0018, 9174), "IEC");
    /* Cardiac Synchronization module. */
    P(T(0018, 9037), sd->cine ? "RETROSPECTIVE" : "PROSPECTIVE");
    P(T(0018, 9085), "ECG");
    PF(T(0018, 9070), "%.0f", 60000.0 / s->hp.hr_bpm);
    P(T(0018, 9169), "NONE");
    PF(T(0018, 1081), "%.0f", 60000.0 / s->hp.hr_bpm * 0.8);
    PF(T(0018, 1082), "%.0f", 60000.0 / s->hp.hr_bpm * 1.2);
    P(T(0018, 1083), sd->cine ? "12" : "10");
    P(T(0018, 1084), "0");
    if ((rc = cmr_dcm_seq_begin(d, T(0040, 0555))) || (rc = cmr_dcm_seq_end(d)))
        goto fail;
    PF(T(0020, 0012), "%d", 1);
    P(T(0020, 0052), s->for_uid);
    P(T(0020, 1040), "");
    P(T(0028, 0002), "1");
    P(T(0028, 0004), "MONOCHROME2");
    PF(T(0028, 0008), "%d", n);
    PF(T(0028, 0010), "%d", im0->pl.rows);
    PF(T(0028, 0011), "%d", im0->pl.cols);
    P(T(0028, 0100), "16");
    P(T(0028, 0101), "12");
    P(T(0028, 0102), "11");
    P(T(0028, 0103), "0");
    P(T(0028, 0301), "NO");
    P(T(0028, 2110), "00");
    P(T(2050, 0020), "IDENTITY");
fail:
    return rc;
}

static int put_dimensions(cmr_series_ctx *cx, cmr_dcm *d)
{
    int rc = 0;
    char uid[CMR_UID_LEN];
    cmr_uid(&cx->ur, uid);
    SEQ(T(0020, 9221));
    P(T(0020, 9164), uid);
    END();
    static const char *const ptr[3] = {"(0020,9056)", "(0020,9057)", "(0020,9128)"};
    static const char *const label[3] = {"Stack ID", "In-Stack Position Number", "Temporal Position Index"};
    if ((rc = cmr_dcm_seq_begin(d, T(0020, 9222))))
        goto fail;
    for (int k = 0; k < 3; k++) {
        if ((rc = cmr_dcm_item_begin(d)))
            goto fail;
        P(T(0020, 9164), uid);
        P(T(0020, 9165), ptr[k]);
        P(T(0020, 9167), "(0020,9111)");
        P(T(0020, 9421), label[k]);
        if ((rc = cmr_dcm_item_end(d)))
            goto fail;
    }
    rc = cmr_dcm_seq_end(d);
fail:
    return rc;
}

static int put_shared(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const img_spec *im0)
{
    int rc = 0;
    const cmr_study *s = cx->s;
    int lge = sd->contrast == CMR_C_LGE || sd->contrast == CMR_C_PSIR;
    char buf[256];
    SEQ(T(5200, 9229));
    SEQ(T(0028, 9110));
    PF(T(0028, 0030), "%.4f\\%.4f", im0->pl.ps, im0->pl.ps);
    PF(T(0018, 0050), "%g", im0->pl.thick);
    if (sd->kind == K_CINE_SAX || sd->kind == K_LGE_SAX)
        PF(T(0018, 0088), "%g", s->thick + s->gap);
    END();
    SEQ(T(0020, 9116));
    double iop[6] = {im0->pl.row[0], im0->pl.row[1], im0->pl.row[2], im0->pl.col[0], im0->pl.col[1], im0->pl.col[2]};
    series_fmt_vec(buf, sizeof buf, iop, 6);
    P(T(0020, 0037), buf);
    END();
    SEQ(T(0018, 9112));
    PF(T(0018, 0080), "%.2f", sd->tr);
    PF(T(0018, 1314), "%.0f", sd->flip);
    P(T(0018, 0091), "1");
    P(T(0018, 9240), "1");
    P(T(0018, 9241), "1");
    SEQ(T(0018, 9239));
    P(T(0018, 9179), "IEC_WHOLE_BODY");
    PF(T(0018, 9181), "%.2f", s->field_t > 2 ? 2.1 : 1.2);
    END();
    static const char *const mode_type[3] = {"STATIC FIELD", "RF", "GRADIENT"};
    if ((rc = cmr_dcm_seq_begin(d, T(0018, 9176))))
        goto fail;
    for (int k = 0; k < 3; k++) {
        if ((rc = cmr_dcm_item_begin(d)))
            goto fail;
        P(T(0018, 9177), mode_type[k]);
        P(T(0018, 9178), "IEC_NORMAL");
        if ((rc = cmr_dcm_item_end(d)))
            goto fail;
    }
    if ((rc = cmr_dcm_seq_end(d)))
        goto fail;
    END();
    SEQ(T(0018, 9114));
    PF(T(0018, 9082), "%.2f", sd->te);
    END();
    SEQ(T(0018, 9115));
    P(T(0018, 9009), lge ? "YES" : "NO");
    if (lge)
        PF(T(0018, 9079), "%.0f", sd->ti);
    P(T(0018, 9010), "NONE");
    P(T(0018, 9026), "NONE");
    P(T(0018, 9021), "NO");
    P(T(0018, 9027), "NONE");
    P(T(0018, 9081), "NO");
    P(T(0018, 9077), "NO");
    END();
    SEQ(T(0018, 9006));
    PF(T(0018, 0095), "%d", s->field_t > 2 ? 1002 : 930);
    PF(T(0018, 9098), "%.6f", s->field_t > 2 ? 127.74 : 63.87);
    P(T(0018, 9020), "NONE");
    P(T(0018, 9022), "NO");
    P(T(0018, 9028), "NONE");
    END();
    SEQ(T(0018, 9042));
    P(T(0018, 1250), "SENSE-Cardiac");
    P(T(0018, 9041), "Philips");
    P(T(0018, 9043), "MULTICOIL");
    P(T(0018, 9044), "NO");
    if ((rc = cmr_dcm_seq_begin(d, T(0018, 9045))))
        goto fail;
    for (int k = 0; k < 2; k++) {
        if ((rc = cmr_dcm_item_begin(d)))
            goto fail;
        P(T(0018, 9047), k ? "POSTERIOR" : "ANTERIOR");
        P(T(0018, 9048), "YES");
        if ((rc = cmr_dcm_item_end(d)))
            goto fail;
    }
    if ((rc = cmr_dcm_seq_end(d)))
        goto fail;
    END();
    SEQ(T(0018, 9049));
    P(T(0018, 1251), "B");
    P(T(0018, 9050), "Philips");
    P(T(0018, 9051), "BODY");
    END();
    SEQ(T(0018, 9125));
    P(T(0018, 1312), "ROW");
    PF(T(0018, 9058), "%d", (int)(s->cols * 0.8));
    PF(T(0018, 9231), "%d", (int)(s->rows * 0.7));
    P(T(0018, 0093), "100");
    PF(T(0018, 0094), "%.1f", 100.0 * s->rows / s->cols);
    END();
    SEQ(T(0018, 9119));
    P(T(0018, 0083), "1");
    END();
    if ((rc = cmr_dcm_seq_begin(d, T(0018, 9107))) || (rc = cmr_dcm_seq_end(d)))
        goto fail;
    SEQ(T(0018, 9117));
    P(T(0018, 9087), "0");
    P(T(0018, 9075), "NONE");
    END();
    SEQ(T(0018, 9226));
    P(T(0008, 9007), "ORIGINAL\\PRIMARY\\CARDIAC_GATED\\NONE");
    P(T(0008, 9205), "MONOCHROME");
    P(T(0008, 9206), "VOLUME");
    P(T(0008, 9207), "NONE");
    P(T(0008, 9208), sd->contrast == CMR_C_PSIR ? "REAL" : "MAGNITUDE");
    P(T(0008, 9209), lge ? "T1" : "UNKNOWN");
    END();
    SEQ(T(0020, 9071));
    if ((rc = code_item(d, T(0008, 2218), "80891009", "SCT", "Heart")))
        goto fail;
    P(T(0020, 9072), "U");
    END();
    SEQ(T(0028, 9145));
    P(T(0028, 1052), "0");
    P(T(0028, 1053), "1");
    P(T(0028, 1054), "US");
    END();
    SEQ(T(0028, 9132));
    double wc = cx->scale * (lge ? 0.35 : 0.5), ww = cx->scale * (lge ? 0.8 : 1.1);
    if (sd->contrast == CMR_C_PSIR)
        wc = cx->scale * 1.2, ww = cx->scale * 1.6;
    PF(T(0028, 1050), "%.0f", wc);
    PF(T(0028, 1051), "%.0f", ww);
    END();
    END();
fail:
    return rc;
}

static int put_frame(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const img_spec *im)
{
    int rc = 0;
    const cmr_study *s = cx->s;
    char buf[256], tm[16];
    if ((rc = cmr_dcm_item_begin(d)))
        goto fail;
    SEQ(T(0020, 9111));
    series_fmt_time(tm, s->study_time, cx->minutes, im->trigger_ms / 1000.0 + im->slice * 12);
    PF(T(0018, 9151), "%s%s", s->study_date, tm);
    PF(T(0018, 9074), "%s%s", s->study_date, tm);
    PF(T(0018, 9220), "%.1f", 60000.0 / s->hp.hr_bpm / (sd->cine ? s->nphases : 1));
    P(T(0020, 9056), "1");
    PF(T(0020, 9057), "%d", im->slice + 1);
    PF(T(0020, 9128), "%d", im->phase + 1);
    PF(T(0020, 9157), "1\\%d\\%d", im->slice + 1, im->phase + 1);
    END();
    SEQ(T(0020, 9113));
    double ipp[3];
    cmr_plane_ipp(&im->pl, ipp);
    series_fmt_vec(buf, sizeof buf, ipp, 3);
    P(T(0020, 0032), buf);
    END();
    SEQ(T(0018, 9118));
    PF(T(0020, 9153), "%.2f", im->trigger_ms);
    PF(T(0020, 9251), "%.0f", 60000.0 / s->hp.hr_bpm);
    END();
    rc = cmr_dcm_item_end(d);
fail:
    return rc;
}

int series_emit_enhanced(cmr_series_ctx *cx, series_def *sd, const img_spec *imgs, int n)
{
    cmr_study *s = cx->s;
    cmr_series_info *si = &s->series[s->nseries - 1];
    int rc = 0;
    cmr_dcm *d = NULL;
    size_t np = (size_t)imgs[0].pl.rows * (size_t)imgs[0].pl.cols;
    uint16_t *all = malloc(np * (size_t)n * sizeof *all);
    if (!all)
        return cmr_fail(CMR_ENOMEM, "out of memory for %d frames", n);
    if ((rc = series_ensure_buf(cx, np)))
        goto fail;
    for (int k = 0; k < n; k++) {
        cmr_render_opts ro;
        series_render_opts(cx, sd, &imgs[k], &ro);
        if ((rc = cmr_render(&cx->scene, &imgs[k].pl, &ro, &cx->rr, all + np * (size_t)k, cx->scratch)))
            goto fail;
    }
    char sop[CMR_UID_LEN], rel[600], path[1200];
    cmr_uid(&cx->ur, sop);
    if ((rc = cmr_dcm_new(&d)) || (rc = series_put_common(cx, d, sd, "MR", ENH_MR_STORAGE, sop, 1)) ||
        (rc = put_top(cx, d, sd, &imgs[0], n)) || (rc = put_dimensions(cx, d)) || (rc = put_shared(cx, d, sd, &imgs[0])))
        goto fail;
    if ((rc = cmr_dcm_seq_begin(d, T(5200, 9230))))
        goto fail;
    for (int k = 0; k < n; k++)
        if ((rc = put_frame(cx, d, sd, &imgs[k])))
            goto fail;
    if ((rc = cmr_dcm_seq_end(d)) || (rc = cmr_dcm_pixels16(d, all, np * (size_t)n)))
        goto fail;
    if ((rc = series_file_path(cx, sd, 1, rel, sizeof rel)))
        goto fail;
    snprintf(path, sizeof path, "%s/%s", cx->o->out, rel);
    size_t bytes = 0;
    if ((rc = cmr_dcm_save(d, path, s->ts, &bytes)))
        goto fail;
    s->bytes += bytes;
    s->nfiles++;
    si->nfiles = 1;
    si->nframes = n;
    si->enhanced = 1;
    if (sd->kind == K_CINE_SAX && cx->nvictims < 64)
        snprintf(cx->victims[cx->nvictims++], sizeof cx->victims[0], "%s", rel);
fail:
    cmr_dcm_free(d);
    free(all);
    return rc;
}
