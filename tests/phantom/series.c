#include "series.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "dicom_writer.h"
#include "render.h"
#include "series_int.h"

const char *const kind_key[K_COUNT] = {"localizer", "cine_sax", "cine_4ch", "cine_2ch", "cine_3ch", "t2_stir",
                                       "lge_sax",   "lge_4ch",  "lge_2ch",  "sr_report", "flow"};


/* Series descriptions in each vendor's idiom; several per slot. */
static const char *const desc_tab[K_COUNT][CMR_V_COUNT][3] = {
    [K_LOC] = {{"localizer", "localizer_haste", "AAHead_Scout"}, {"3-Plane Loc", "3 PLANE LOC", "Loc"}, {"Survey", "SURVEY_BB", "sSurvey"}},
    [K_CINE_SAX] = {{"cine_trufi_retro_sax", "CINE_SAX_TF2D", "tf2d_cine_sa"}, {"FIESTA CINE SAX", "SAX FIESTA", "Cine SA stack"}, {"sBTFE_SA", "B-TFE_BH SA", "CINE_SA"}},
    [K_CINE_4CH] = {{"cine_trufi_retro_4ch", "CINE_4CH", "tf2d_cine_4ch"}, {"FIESTA CINE 4CH", "4CH FIESTA", "4 chamber cine"}, {"sBTFE_4CH", "B-TFE_BH 4CH", "CINE_4CH"}},
    [K_CINE_2CH] = {{"cine_trufi_retro_2ch", "CINE_2CH", "tf2d_cine_2ch"}, {"FIESTA CINE 2CH", "2CH FIESTA", "2 chamber cine"}, {"sBTFE_2CH", "B-TFE_BH 2CH", "CINE_2CH"}},
    [K_CINE_3CH] = {{"cine_trufi_retro_3ch", "CINE_LVOT", "tf2d_cine_3ch"}, {"FIESTA CINE 3CH", "LVOT FIESTA", "3 chamber cine"}, {"sBTFE_LVOT", "B-TFE_BH 3CH", "CINE_3CH"}},
    [K_STIR] = {{"t2_tse_dark-blood_stir_sax", "T2_STIR_SAX", "tse_stir_sa"}, {"T2 STIR SAX", "BB T2 STIR", "STIR SAX"}, {"STIR_BB_SA", "T2W_TSE_SPIR BB", "BB_T2_STIR"}},
    [K_LGE_SAX] = {{"tfl_psir_sax", "de_tfl_sax_mag", "LGE_SAX_PSIR"}, {"MDE SAX", "Delayed Enhancement SAX", "2D MDE"}, {"LGE_PSIR_SA", "IR_TFE_SA", "LGE_SA"}},
    [K_LGE_4CH] = {{"tfl_psir_4ch", "de_tfl_4ch_mag", "LGE_4CH_PSIR"}, {"MDE 4CH", "Delayed Enhancement 4CH", "2D MDE 4CH"}, {"LGE_PSIR_4CH", "IR_TFE_4CH", "LGE_4CH"}},
    [K_LGE_2CH] = {{"tfl_psir_2ch", "de_tfl_2ch_mag", "LGE_2CH_PSIR"}, {"MDE 2CH", "Delayed Enhancement 2CH", "2D MDE 2CH"}, {"LGE_PSIR_2CH", "IR_TFE_2CH", "LGE_2CH"}},
    [K_SR] = {{"Report", "CMR Report", "SR"}, {"Report", "Cardiac MR report", "SR"}, {"Report", "Radiology report", "SR"}},
    [K_FLOW] = {{"flow_ao_tp", "fl2d_flow_AAo", "Flow_AAo_tp"}, {"FLOW AO", "2D PC FLOW AAO", "Ao Flow"}, {"Q-flow AO", "QFLOW_AAo", "PCA_Flow_AscAo"}},
};

const char *const manufacturer[CMR_V_COUNT] = {"SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems"};

void series_lps_of(const cmr_heart *h, double a, double b, double c, double out[3])
{
    for (int i = 0; i < 3; i++)
        out[i] = a * h->p.axis[0][i] + b * h->p.axis[1][i] + c * h->p.axis[2][i];
}

int cmr_series_ctx_new(const cmr_phantom_opts *o, cmr_study *s, const cmr_heart *h, cmr_series_ctx **out)
{
    cmr_series_ctx *cx = calloc(1, sizeof *cx);
    if (!cx)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    cx->o = o, cx->s = s, cx->h = h;
    cmr_rng_seed(&cx->rr, o->seed, s->render_stream);
    cmr_rng_seed(&cx->ur, o->seed, s->uid_stream ^ 0x55aa55aaULL);
    cmr_rng_next(&cx->ur); /* study/FoR UIDs came from the plain stream */
    cmr_body_draw(&cx->rr, s->body_scale, &h->p, &cx->body);
    cx->scene.heart = h;
    cx->scene.body = &cx->body;
    cx->scene.cache = &cx->cache;
    cx->desc_pick = cmr_rng_int(&cx->rr, 0, 2);
    int v = s->vendor;
    /* Stored scales and noise as scanners write them: a few units of noise. */
    cx->scale = (v == CMR_V_GE ? 600 : v == CMR_V_SIEMENS ? 340 : 420) * cmr_rng_range(&cx->rr, 0.75, 1.3);
    cx->noise = cmr_rng_range(&cx->rr, 0.0045, 0.011) * (s->field_t > 2 ? 0.85 : 1.0);
    cx->bias = cmr_rng_range(&cx->rr, 0.15, 0.45) * (s->field_t > 2 ? 1.4 : 1.0);
    cx->inplane[0] = cmr_rng_range(&cx->rr, -14, 14);
    cx->inplane[1] = cmr_rng_range(&cx->rr, -14, 14);
    double sig = cmr_rng_chance(&cx->rr, 0.2) ? 3.0 : 1.2;
    for (int i = 0; i < 16; i++) {
        /* Breath-holds differ mostly along the head-foot axis. */
        cx->slice_shift[i][0] = 0.4 * sig * cmr_rng_normal(&cx->rr);
        cx->slice_shift[i][1] = 0.5 * sig * cmr_rng_normal(&cx->rr);
        cx->slice_shift[i][2] = sig * cmr_rng_normal(&cx->rr);
    }
    cx->arr_slice[0] = cmr_rng_int(&cx->rr, 0, s->nslices - 1);
    cx->arr_slice[1] = cmr_rng_int(&cx->rr, 0, s->nslices - 1);
    cx->minutes = 0;
    cx->series_no = 0;
    *out = cx;
    return 0;
}

void cmr_series_ctx_free(cmr_series_ctx *cx)
{
    if (!cx)
        return;
    free(cx->flow_mag);
    cmr_render_cache_free(&cx->cache);
    free(cx->px);
    free(cx->scratch);
    free(cx);
}

int series_ensure_buf(cmr_series_ctx *cx, size_t n)
{
    if (n <= cx->px_cap)
        return 0;
    free(cx->px);
    free(cx->scratch);
    cx->px = malloc(n * sizeof *cx->px);
    cx->scratch = malloc(n * sizeof *cx->scratch);
    cx->px_cap = cx->px && cx->scratch ? n : 0;
    return cx->px_cap ? 0 : cmr_fail(CMR_ENOMEM, "out of memory for %zu pixels", n);
}


void series_fmt_vec(char *buf, size_t n, const double *v, int k)
{
    size_t len = 0;
    for (int i = 0; i < k && len < n; i++)
        len += (size_t)snprintf(buf + len, n - len, "%s%.6f", i ? "\\" : "", fabs(v[i]) < 5e-7 ? 0.0 : v[i]);
}

void series_fmt_time(char out[16], const char *study_time, int add_min, double add_s)
{
    int hh = (study_time[0] - '0') * 10 + (study_time[1] - '0');
    int mm = (study_time[2] - '0') * 10 + (study_time[3] - '0');
    int ss = (study_time[4] - '0') * 10 + (study_time[5] - '0');
    double t = hh * 3600 + mm * 60 + ss + add_min * 60 + add_s;
    int it = (int)t % 86400;
    snprintf(out, 16, "%02d%02d%02d.%03d", it / 3600, (it / 60) % 60, it % 60, (int)((t - floor(t)) * 1000));
}


/* Patient, study, series and equipment attributes shared by every object. */
int series_put_common(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const char *modality, const char *sop_class,
                      const char *sop_uid, int instance)
{
    int rc = 0;
    const cmr_study *s = cx->s;
    const cmr_site *site = &cmr_sites[s->site];
    char tm[16];
    series_fmt_time(tm, s->study_time, cx->minutes, 0);
    P(T(0008, 0005), "ISO_IR 100");
    P(T(0008, 0016), sop_class);
    P(T(0008, 0018), sop_uid);
    P(T(0008, 0012), s->study_date);
    P(T(0008, 0013), tm);
    P(T(0008, 0020), s->study_date);
    P(T(0008, 0021), s->study_date);
    P(T(0008, 0023), s->study_date);
    P(T(0008, 0030), s->study_time);
    P(T(0008, 0031), tm);
    P(T(0008, 0033), tm);
    P(T(0008, 0050), s->accession);
    P(T(0008, 0060), modality);
    P(T(0008, 0070), manufacturer[s->vendor]);
    P(T(0008, 0080), site->institution);
    P(T(0008, 0090), s->vendor == CMR_V_GE ? "" : "REFERRER^CARDIOLOGY");
    PF(T(0008, 1010), "%sMR%d", site->id_prefix, s->field_t > 2 ? 3 : 1);
    P(T(0008, 1030), s->vendor == CMR_V_SIEMENS ? "Cardiac^Cardiac" : s->vendor == CMR_V_GE ? "MR CARDIAC" : "CMR");
    P(T(0008, 103E), sd->desc);
    P(T(0008, 1090), s->model);
    P(T(0010, 0010), s->patient_name);
    P(T(0010, 0020), s->patient_id);
    P(T(0010, 0030), s->birth_date);
    P(T(0010, 0040), s->sex);
    PF(T(0010, 1010), "%03dY", s->age);
    PF(T(0010, 1020), "%.2f", s->height_m);
    PF(T(0010, 1030), "%.0f", s->weight_kg);
    P(T(0018, 1020), site->software);
    P(T(0020, 000D), s->study_uid);
    P(T(0020, 000E), sd->uid);
    P(T(0020, 0010), s->accession + 3);
    PF(T(0020, 0011), "%d", sd->number);
    PF(T(0020, 0013), "%d", instance);
fail:
    return rc;
}

int series_put_image(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const img_spec *im)
{
    int rc = 0;
    const cmr_study *s = cx->s;
    char buf[256], tm[16];
    int v = s->vendor;
    int lge = sd->contrast == CMR_C_LGE || sd->contrast == CMR_C_PSIR;
    series_fmt_time(tm, s->study_time, cx->minutes, im->trigger_ms / 1000.0 + im->slice * 12);
    P(T(0008, 0022), s->study_date);
    P(T(0008, 0032), tm);
    if (im->flow)
        P(T(0008, 0008), series_flow_image_type(v, im->flow));
    else if (v == CMR_V_SIEMENS)
        P(T(0008, 0008), sd->contrast == CMR_C_PSIR ? "DERIVED\\PRIMARY\\M\\NORM\\DIS2D\\PSIR" : "ORIGINAL\\PRIMARY\\M\\NORM\\DIS2D");
    else if (v == CMR_V_GE)
        P(T(0008, 0008), "ORIGINAL\\PRIMARY\\OTHER");
    else
        P(T(0008, 0008), sd->contrast == CMR_C_PSIR ? "ORIGINAL\\PRIMARY\\R_IR\\R\\IR" : "ORIGINAL\\PRIMARY\\M_FFE\\M\\FFE");
    P(T(0018, 0015), "HEART");
    int ir = lge || sd->contrast == CMR_C_STIR;
    P(T(0018, 0020), sd->contrast == CMR_C_STIR ? "SE\\IR" : ir ? "GR\\IR" : "GR");
    P(T(0018, 0021), sd->contrast == CMR_C_STIR ? "SK\\SP\\MP" : ir ? "SP\\MP" : "SS");
    int gated = sd->kind != K_LOC;
    if (v == CMR_V_GE)
        P(T(0018, 0022), !gated ? "FAST_GEMS" : sd->cine ? "FAST_GEMS\\SEQ_GEMS\\CG" : "IR_GEMS\\FAST_GEMS\\CG");
    else
        P(T(0018, 0022), !gated ? "" : v == CMR_V_PHILIPS && !sd->cine ? "PFF\\CG" : "CG");
    P(T(0018, 0023), "2D");
    if (im->flow && v == CMR_V_SIEMENS)
        PF(T(0018, 0024), "*fl2d1_v%.0fin", cx->venc); /* Siemens puts venc and direction in the name */
    else if (v == CMR_V_SIEMENS)
        P(T(0018, 0024), sd->contrast == CMR_C_CINE ? "*tfi2d1_12" : lge ? "*tfl2d1r" : sd->contrast == CMR_C_STIR ? "*tse2d1_19" : "*tfi2d1");
    PF(T(0018, 0050), "%g", im->pl.thick);
    PF(T(0018, 0080), "%.2f", sd->tr);
    PF(T(0018, 0081), "%.2f", sd->te);
    if (ir)
        PF(T(0018, 0082), "%.0f", sd->ti);
    P(T(0018, 0083), "1");
    PF(T(0018, 0084), "%.6f", s->field_t > 2 ? 123.2 : 63.68);
    P(T(0018, 0085), "1H");
    PF(T(0018, 0087), "%.1f", s->field_t);
    if (sd->kind == K_CINE_SAX || sd->kind == K_LGE_SAX || sd->kind == K_STIR)
        PF(T(0018, 0088), "%g", s->thick + s->gap);
    P(T(0018, 0091), sd->contrast == CMR_C_STIR ? "19" : "1");
    PF(T(0018, 0095), "%d", s->field_t > 2 ? 1002 : 930);
    if (v != CMR_V_GE)
        P(T(0018, 1030), sd->desc[0] ? sd->desc : kind_key[sd->kind]);
    double rr = 60000.0 / s->hp.hr_bpm;
    if (gated) {
        PF(T(0018, 1060), "%.2f", im->trigger_ms);
        PF(T(0018, 1062), "%.0f", rr);
        PF(T(0018, 1088), "%.0f", s->hp.hr_bpm);
        PF(T(0018, 1090), "%d", sd->cine ? s->nphases : 1);
    }
    P(T(0018, 1250), v == CMR_V_SIEMENS ? "Body" : v == CMR_V_GE ? "8HRBRAIN" : "SENSE-Cardiac");
    int acq_c = (int)(s->cols * 0.8), acq_r = (int)(s->rows * 0.7);
    PF(T(0018, 1310), "0\\%d\\%d\\0", acq_c, acq_r);
    P(T(0018, 1312), "ROW");
    PF(T(0018, 1314), "%.0f", sd->flip);
    P(T(0018, 5100), "HFS");
    PF(T(0020, 0012), "%d", 1 + im->slice);
    double ipp[3], nrm[3];
    cmr_plane_ipp(&im->pl, ipp);
    cmr_plane_normal(&im->pl, nrm);
    series_fmt_vec(buf, sizeof buf, ipp, 3);
    P(T(0020, 0032), buf);
    double iop[6] = {im->pl.row[0], im->pl.row[1], im->pl.row[2], im->pl.col[0], im->pl.col[1], im->pl.col[2]};
    series_fmt_vec(buf, sizeof buf, iop, 6);
    P(T(0020, 0037), buf);
    P(T(0020, 0052), s->for_uid);
    P(T(0020, 1040), "");
    PF(T(0020, 1041), "%.4f", ipp[0] * nrm[0] + ipp[1] * nrm[1] + ipp[2] * nrm[2]);
    P(T(0028, 0002), "1");
    P(T(0028, 0004), "MONOCHROME2");
    PF(T(0028, 0010), "%d", im->pl.rows);
    PF(T(0028, 0011), "%d", im->pl.cols);
    PF(T(0028, 0030), "%.4f\\%.4f", im->pl.ps, im->pl.ps);
    P(T(0028, 0100), "16");
    P(T(0028, 0101), v == CMR_V_GE ? "16" : "12");
    P(T(0028, 0102), v == CMR_V_GE ? "15" : "11");
    P(T(0028, 0103), "0");
    double wc = cx->scale * (lge ? 0.35 : 0.5), ww = cx->scale * (lge ? 0.8 : 1.1);
    if (sd->contrast == CMR_C_PSIR)
        wc = cx->scale * 1.2, ww = cx->scale * 1.6;
    if (im->flow == FLOW_PHASE)
        wc = 2048, ww = 4096;
    PF(T(0028, 1050), "%.0f", wc);
    PF(T(0028, 1051), "%.0f", ww);
    if (im->flow)
        rc = series_put_flow_private(cx, d);
fail:
    return rc;
}

int series_file_path(cmr_series_ctx *cx, const series_def *sd, int instance, char *rel, size_t n)
{
    const cmr_study *s = cx->s;
    const cmr_site *site = &cmr_sites[s->site];
    char dir[1200];
    cx->file_no++;
    if (site->layout == 1) {
        snprintf(rel, n, "%s/IMG%05d", s->dir, cx->file_no);
        snprintf(dir, sizeof dir, "%s/%s", cx->o->out, s->dir);
    } else if (site->layout == 2) {
        snprintf(rel, n, "%s/S%07d/I%07d", s->dir, sd->number, instance);
        snprintf(dir, sizeof dir, "%s/%s/S%07d", cx->o->out, s->dir, sd->number);
    } else {
        snprintf(rel, n, "%s/%03d_%s/IM%04d.dcm", s->dir, sd->number, kind_key[sd->kind], instance);
        snprintf(dir, sizeof dir, "%s/%s/%03d_%s", cx->o->out, s->dir, sd->number, kind_key[sd->kind]);
    }
    if (instance == 1 || site->layout == 1)
        return cmr_mkdirs(dir);
    return 0;
}

void series_next_series(cmr_series_ctx *cx, series_def *sd, int kind, int contrast, int cine)
{
    const cmr_study *s = cx->s;
    const cmr_site *site = &cmr_sites[s->site];
    memset(sd, 0, sizeof *sd);
    sd->kind = kind, sd->contrast = contrast, sd->cine = cine;
    cx->series_no++;
    sd->number = s->vendor == CMR_V_PHILIPS ? cx->series_no * 100 + 1 : cx->series_no;
    /* GE keeps no protocol name to fall back on, and its magnitude images
     * say nothing of flow: its flow series always keep their description. */
    int blank = cmr_rng_chance(&cx->rr, site->blank_desc) && !(kind == K_FLOW && s->vendor == CMR_V_GE);
    sd->desc = blank ? "" : desc_tab[kind][s->vendor][cx->desc_pick];
    cmr_uid(&cx->ur, sd->uid);
    int three = s->field_t > 2;
    if (contrast == CMR_C_CINE || contrast == CMR_C_LOC)
        sd->tr = three ? 3.1 : 2.9, sd->te = three ? 1.35 : 1.22, sd->flip = three ? 45 : 60;
    else if (contrast == CMR_C_PC)
        sd->tr = three ? 4.6 : 5.0, sd->te = three ? 2.5 : 2.9, sd->flip = three ? 15 : 20;
    else if (contrast == CMR_C_STIR)
        sd->tr = 2 * 60000.0 / s->hp.hr_bpm, sd->te = 60, sd->ti = three ? 220 : 170, sd->flip = 180;
    else
        sd->tr = three ? 4.8 : 5.6, sd->te = three ? 1.97 : 2.1, sd->ti = s->ti_ms, sd->flip = three ? 20 : 25;
    cx->minutes += cmr_rng_int(&cx->rr, 1, 4);
}

void series_render_opts(cmr_series_ctx *cx, const series_def *sd, const img_spec *im, cmr_render_opts *ro)
{
    const cmr_study *s = cx->s;
    memset(ro, 0, sizeof *ro);
    ro->contrast = sd->contrast;
    ro->t = im->t;
    ro->scale = cx->scale;
    ro->noise = cx->noise;
    ro->max_value = s->vendor == CMR_V_GE ? 32767 : 4095;
    memcpy(ro->shift, im->shift, sizeof ro->shift);
    ro->bias_amp = cx->bias;
    ro->ghost = im->ghost;
    ro->ghost_rows = im->pl.rows / 3;
    ro->supersample = 3;
    if (sd->contrast == CMR_C_PSIR) {
        ro->offset = cx->scale;
        ro->scale = cx->scale * 0.9;
    }
}

int series_emit_series(cmr_series_ctx *cx, series_def *sd, const img_spec *imgs, int n)
{
    cmr_study *s = cx->s;
    int rc = 0;
    cmr_dcm *d = NULL;
    if (s->nseries >= CMR_MAX_SERIES)
        return cmr_fail(CMR_EINVAL, "too many series");
    cmr_series_info *si = &s->series[s->nseries++];
    memset(si, 0, sizeof *si);
    memcpy(si->uid, sd->uid, sizeof si->uid);
    snprintf(si->kind, sizeof si->kind, "%s", kind_key[sd->kind]);
    snprintf(si->desc, sizeof si->desc, "%s", sd->desc);
    si->number = sd->number;
    if (s->multiframe && sd->kind != K_LOC && sd->kind != K_STIR && sd->kind != K_FLOW)
        return series_emit_enhanced(cx, sd, imgs, n);
    for (int k = 0; k < n; k++) {
        const img_spec *im = &imgs[k];
        size_t np = (size_t)im->pl.rows * (size_t)im->pl.cols;
        if ((rc = series_ensure_buf(cx, np)))
            goto fail;
        if (im->flow) {
            if ((rc = series_render_flow(cx, sd, im)))
                goto fail;
        } else {
            cmr_render_opts ro;
            series_render_opts(cx, sd, im, &ro);
            if ((rc = cmr_render(&cx->scene, &im->pl, &ro, &cx->rr, cx->px, cx->scratch)))
                goto fail;
        }
        char sop[CMR_UID_LEN], rel[600], path[1200];
        cmr_uid(&cx->ur, sop);
        if ((rc = cmr_dcm_new(&d)))
            goto fail;
        if ((rc = series_put_common(cx, d, sd, "MR", MR_STORAGE, sop, k + 1)) || (rc = series_put_image(cx, d, sd, im)) ||
            (rc = cmr_dcm_pixels16(d, cx->px, np)))
            goto fail;
        if ((rc = series_file_path(cx, sd, k + 1, rel, sizeof rel)))
            goto fail;
        snprintf(path, sizeof path, "%s/%s", cx->o->out, rel);
        size_t bytes = 0;
        if ((rc = cmr_dcm_save(d, path, s->ts, &bytes)))
            goto fail;
        cmr_dcm_free(d);
        d = NULL;
        s->bytes += bytes;
        s->nfiles++;
        si->nfiles++;
        si->nframes++;
        if (sd->kind == K_CINE_SAX && cx->nvictims < 64 && im->phase == 0)
            snprintf(cx->victims[cx->nvictims++], sizeof cx->victims[0], "%s", rel);
    }
fail:
    cmr_dcm_free(d);
    return rc;
}

/* ---- views ---- */

void series_set_plane(cmr_series_ctx *cx, cmr_plane *pl, const double centre_h[3], double ra, double rb, double rc_,
                      double ca, double cb, double cc)
{
    const cmr_study *s = cx->s;
    const cmr_heart *h = cx->h;
    double c[3];
    series_lps_of(h, centre_h[0], centre_h[1], centre_h[2], c);
    series_lps_of(h, ra, rb, rc_, pl->row);
    series_lps_of(h, ca, cb, cc, pl->col);
    for (int i = 0; i < 3; i++)
        pl->centre[i] = h->p.origin[i] + c[i] + cx->inplane[0] * pl->row[i] + cx->inplane[1] * pl->col[i];
    pl->ps = s->ps;
    pl->rows = s->rows;
    pl->cols = s->cols;
    pl->thick = s->thick;
}

double cmr_series_sax_ws(const cmr_study *s, int k)
{
    double sp = s->thick + s->gap;
    double mid = 0.5 * (8.0 + (-s->hp.L_ed - 6.0));
    return mid + 0.5 * (s->nslices - 1) * sp - k * sp;
}

static void sax_plane(cmr_series_ctx *cx, int k, cmr_plane *pl)
{
    double c[3] = {0, 0, cmr_series_sax_ws(cx->s, k)};
    series_set_plane(cx, pl, c, 1, 0, 0, 0, -1, 0);
}

/* Long-axis planes contain the LV axis; `ang` is the in-plane direction of
 * the image row in the SAX plane. */
static void lax_plane(cmr_series_ctx *cx, double ang, cmr_plane *pl)
{
    double c[3] = {0, 0, -0.5 * cx->s->hp.L_ed + 12};
    series_set_plane(cx, pl, c, cos(ang), sin(ang), 0, 0, 0, 1);
}

static double lax_angle(int kind, double jitter)
{
    if (kind == K_CINE_4CH || kind == K_LGE_4CH)
        return -0.12 + jitter;
    if (kind == K_CINE_2CH || kind == K_LGE_2CH)
        return M_PI / 2 + jitter;
    return -M_PI / 3 + jitter; /* 3CH: inferolateral to anteroseptal, through the aortic root */
}

static int write_cine(cmr_series_ctx *cx, int kind)
{
    cmr_study *s = cx->s;
    int nsl = kind == K_CINE_SAX ? s->nslices : 1;
    int per_slice = kind == K_CINE_SAX && cmr_sites[s->site].per_slice_series;
    double rr = 60000.0 / s->hp.hr_bpm;
    int rc = 0;
    img_spec *imgs = calloc((size_t)nsl * (size_t)s->nphases, sizeof *imgs);
    if (!imgs)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    series_def sd;
    int n = 0;
    double jitter = cmr_rng_range(&cx->rr, -0.1, 0.1);
    if (!per_slice)
        series_next_series(cx, &sd, kind, CMR_C_CINE, 1);
    for (int k = 0; k < nsl; k++) {
        if (per_slice) {
            series_next_series(cx, &sd, kind, CMR_C_CINE, 1);
            n = 0;
        }
        int arr = s->arrhythmia && (k == cx->arr_slice[0] || k == cx->arr_slice[1]);
        for (int p = 0; p < s->nphases; p++) {
            img_spec *im = &imgs[n++];
            if (kind == K_CINE_SAX)
                sax_plane(cx, k, &im->pl);
            else
                lax_plane(cx, lax_angle(kind, jitter), &im->pl);
            im->slice = k, im->phase = p;
            im->t = (double)p / s->nphases;
            /* An ectopic beat during the breath-hold: timing warped, edges ghosted. */
            if (arr)
                im->t *= 0.82;
            im->trigger_ms = rr * p / s->nphases;
            const double *sh = cx->slice_shift[kind == K_CINE_SAX ? k : 10 + (kind - K_CINE_4CH)];
            memcpy(im->shift, sh, sizeof im->shift);
            im->ghost = arr ? 0.12 : (s->motion_artefact ? 0.07 : 0);
        }
        if (per_slice && (rc = series_emit_series(cx, &sd, imgs, n)))
            goto fail;
    }
    if (!per_slice)
        rc = series_emit_series(cx, &sd, imgs, n);
fail:
    free(imgs);
    return rc;
}

static int write_lge(cmr_series_ctx *cx)
{
    cmr_study *s = cx->s;
    int rc = 0;
    double rr = 60000.0 / s->hp.hr_bpm;
    img_spec imgs[16];
    series_def sd;
    int contrast = s->psir ? CMR_C_PSIR : CMR_C_LGE;
    cx->minutes += 8; /* contrast wash-in */
    series_next_series(cx, &sd, K_LGE_SAX, contrast, 0);
    for (int k = 0; k < s->nslices; k++) {
        img_spec *im = &imgs[k];
        memset(im, 0, sizeof *im);
        sax_plane(cx, k, &im->pl);
        im->slice = k;
        im->t = 0.72;
        im->trigger_ms = rr * 0.72;
        for (int i = 0; i < 3; i++)
            im->shift[i] = cx->slice_shift[(k + 5) % 16][i];
        im->ghost = s->motion_artefact ? 0.05 : 0;
    }
    if ((rc = series_emit_series(cx, &sd, imgs, s->nslices)))
        return rc;
    if (!s->has_lax)
        return 0;
    for (int v = 0; v < 2; v++) {
        int kind = v == 0 ? K_LGE_4CH : K_LGE_2CH;
        series_next_series(cx, &sd, kind, contrast, 0);
        img_spec *im = &imgs[0];
        memset(im, 0, sizeof *im);
        lax_plane(cx, lax_angle(kind, 0), &im->pl);
        im->t = 0.72;
        im->trigger_ms = rr * 0.72;
        if ((rc = series_emit_series(cx, &sd, imgs, 1)))
            return rc;
    }
    return 0;
}

static int write_stir(cmr_series_ctx *cx)
{
    cmr_study *s = cx->s;
    img_spec imgs[3];
    series_def sd;
    series_next_series(cx, &sd, K_STIR, CMR_C_STIR, 0);
    double rr = 60000.0 / s->hp.hr_bpm;
    for (int k = 0; k < 3; k++) {
        img_spec *im = &imgs[k];
        memset(im, 0, sizeof *im);
        int sl = (int)((s->nslices - 1) * (0.2 + 0.3 * k));
        sax_plane(cx, sl, &im->pl);
        im->pl.thick = 8;
        im->slice = k;
        im->t = 0.75;
        im->trigger_ms = rr * 0.75;
    }
    return series_emit_series(cx, &sd, imgs, 3);
}

static int write_localizer(cmr_series_ctx *cx)
{
    cmr_study *s = cx->s;
    img_spec imgs[3];
    series_def sd;
    series_next_series(cx, &sd, K_LOC, CMR_C_LOC, 0);
    static const double dirs[3][6] = {{1, 0, 0, 0, 1, 0}, {1, 0, 0, 0, 0, -1}, {0, 1, 0, 0, 0, -1}};
    for (int k = 0; k < 3; k++) {
        img_spec *im = &imgs[k];
        memset(im, 0, sizeof *im);
        cmr_plane *pl = &im->pl;
        double c[3];
        series_lps_of(cx->h, 0, 0, -0.5 * s->hp.L_ed, c);
        for (int i = 0; i < 3; i++) {
            pl->centre[i] = cx->h->p.origin[i] + c[i];
            pl->row[i] = dirs[k][i];
            pl->col[i] = dirs[k][3 + i];
        }
        pl->ps = 2.0;
        pl->rows = pl->cols = 192;
        pl->thick = 10;
        im->slice = k;
        im->t = 0.7;
    }
    return series_emit_series(cx, &sd, imgs, 3);
}

int cmr_series_write_all(cmr_series_ctx *cx)
{
    cmr_study *s = cx->s;
    int rc = 0;
    double c[3];
    series_lps_of(cx->h, 0, 0, -0.5 * s->hp.L_ed, c);
    for (int i = 0; i < 3; i++)
        s->lv_center[i] = cx->h->p.origin[i] + c[i];
    s->es_phase = (int)lround((s->hp.es_frac + 0.03) * s->nphases) % s->nphases;
    if (s->has_loc && (rc = write_localizer(cx)))
        return rc;
    if (s->has_lax) {
        static const int lax[3] = {K_CINE_4CH, K_CINE_2CH, K_CINE_3CH};
        for (int i = 0; i < 3; i++)
            if ((rc = write_cine(cx, lax[i])))
                return rc;
    }
    if ((rc = write_cine(cx, K_CINE_SAX)))
        return rc;
    if (s->has_flow && (rc = series_write_flow(cx)))
        return rc;
    if (s->has_stir && (rc = write_stir(cx)))
        return rc;
    if (s->has_lge && (rc = write_lge(cx)))
        return rc;
    return 0;
}

int cmr_series_pick_victim(cmr_series_ctx *cx, cmr_rng *r, char *rel, size_t n)
{
    if (cx->nvictims == 0)
        return cmr_fail(CMR_EINVAL, "no file to damage");
    snprintf(rel, n, "%s", cx->victims[cmr_rng_int(r, 0, cx->nvictims - 1)]);
    return 0;
}

