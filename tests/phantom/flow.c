/* Through-plane phase-contrast flow at the ascending aorta: magnitude and
 * velocity (phase) images over the cardiac cycle, in each vendor's idiom.
 *
 * Siemens writes two series (magnitude, then phase with "_P" appended to
 * the description) and keeps venc in the sequence name (*fl2d1_v150in);
 * GE and Philips write one series holding all magnitude images, then all
 * phase images, with venc in their private groups. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "series_int.h"

/* The aortic root axis of heart.c, heart frame. */
static const double ao_dir[3] = {-0.26, 0.36, 0.895};

const char *series_flow_image_type(int vendor, int part)
{
    if (vendor == CMR_V_SIEMENS)
        return part == FLOW_PHASE ? "ORIGINAL\\PRIMARY\\P\\ND" : "ORIGINAL\\PRIMARY\\M\\ND";
    if (vendor == CMR_V_GE)
        return part == FLOW_PHASE ? "ORIGINAL\\PRIMARY\\PHASE" : "ORIGINAL\\PRIMARY\\OTHER";
    return part == FLOW_PHASE ? "ORIGINAL\\PRIMARY\\VELOCITY MAP\\P\\PCA" : "ORIGINAL\\PRIMARY\\PHASE CONTRAST M\\M\\PCA";
}

int series_put_flow_private(cmr_series_ctx *cx, cmr_dcm *d)
{
    int rc = 0;
    char v[32];
    if (cx->s->vendor == CMR_V_GE) {
        /* GE: velocity encoding in mm/s in the acquisition group. */
        snprintf(v, sizeof v, "%.0f", cx->venc * 10);
        if ((rc = cmr_dcm_put(d, CMR_TAG(0x0019, 0x0010), "GEMS_ACQU_01")) ||
            (rc = cmr_dcm_put_private(d, CMR_TAG(0x0019, 0x10cc), "SS", v)))
            return rc;
    } else if (cx->s->vendor == CMR_V_PHILIPS) {
        /* Philips: "PC Velocity", cm/s per direction, through-plane last. */
        snprintf(v, sizeof v, "0\\0\\%.0f", cx->venc);
        if ((rc = cmr_dcm_put(d, CMR_TAG(0x2001, 0x0010), "Philips Imaging DD 001")) ||
            (rc = cmr_dcm_put_private(d, CMR_TAG(0x2001, 0x101a), "FL", v)))
            return rc;
    }
    return rc;
}

/* Systolic ejection with a little early-diastolic reversal, 0..1. */
static double ejection(double t, double es)
{
    double t0 = 0.04, t1 = es + 0.02;
    if (t > t0 && t < t1)
        return pow(sin(M_PI * (t - t0) / (t1 - t0)), 1.4);
    if (t >= t1 && t < t1 + 0.1)
        return -0.08 * sin(M_PI * (t - t1) / 0.1);
    return 0.01;
}

int series_render_flow(cmr_series_ctx *cx, const series_def *sd, const img_spec *im)
{
    const cmr_heart *h = cx->h;
    const cmr_heart_params *hp = &h->p;
    size_t np = (size_t)im->pl.rows * (size_t)im->pl.cols;
    float *mag = cx->flow_mag + (size_t)im->phase * np;
    int rc = 0;
    if (im->flow == FLOW_MAG) {
        cmr_render_opts ro;
        series_render_opts(cx, sd, im, &ro);
        if ((rc = cmr_render(&cx->scene, &im->pl, &ro, &cx->rr, cx->px, cx->scratch)))
            return rc;
        /* The noise-free signal, for the phase image's noise. */
        memcpy(mag, cx->scratch, np * sizeof *mag);
        return 0;
    }
    cmr_heart_phase ph;
    cmr_heart_phase_at(h, im->t, &ph);
    double ipp[3], nrm[3], ad[3];
    cmr_plane_ipp(&im->pl, ipp);
    cmr_plane_normal(&im->pl, nrm);
    series_lps_of(h, ao_dir[0], ao_dir[1], ao_dir[2], ad);
    double R = hp->R_ed;
    double a0[3] = {0.3 * R * -0.5, 0.3 * R * 0.866, ph.wc - 2};
    double ao_rad = 11.5 + 0.12 * (R - 24);
    double dot_root = ad[0] * nrm[0] + ad[1] * nrm[1] + ad[2] * nrm[2];
    double v_root = cx->flow_peak * ejection(im->t, hp->es_frac) * dot_root;
    /* The descending aorta carries the same stroke later, caudally. */
    double v_desc = 0.75 * cx->flow_peak * ejection(fmod(im->t + 0.94, 1.0), hp->es_frac) * -nrm[2];
    const cmr_body *b = &cx->body;
    for (int j = 0; j < im->pl.rows; j++)
        for (int i = 0; i < im->pl.cols; i++) {
            double p[3], q[3];
            for (int k = 0; k < 3; k++)
                p[k] = ipp[k] + j * im->pl.ps * im->pl.col[k] + i * im->pl.ps * im->pl.row[k];
            for (int a = 0; a < 3; a++) {
                q[a] = 0;
                for (int k = 0; k < 3; k++)
                    q[a] += hp->axis[a][k] * (p[k] - hp->origin[k] - im->shift[k]);
            }
            double pu[3] = {q[0] - a0[0], q[1] - a0[1], q[2] - a0[2]};
            double along = pu[0] * ao_dir[0] + pu[1] * ao_dir[1] + pu[2] * ao_dir[2], r2 = 0;
            for (int k = 0; k < 3; k++) {
                double c = pu[k] - along * ao_dir[k];
                r2 += c * c;
            }
            double v = 0;
            /* Laminar (parabolic) profile in both vessels. */
            if (along > 0 && along < 70 && r2 < ao_rad * ao_rad)
                v += v_root * (1 - r2 / (ao_rad * ao_rad));
            double dx = p[0] - b->aorta_x, dy = p[1] - b->aorta_y, rd2 = dx * dx + dy * dy;
            if (rd2 < 11.0 * 11.0)
                v += v_desc * (1 - rd2 / (11.0 * 11.0));
            /* Phase noise is the magnitude noise over the signal: where there
             * is no signal (air, lung) the phase is uniformly random. */
            size_t k = (size_t)j * im->pl.cols + i;
            double m = fmax(mag[k], 1e-4);
            double x = v / cx->venc + cx->noise / (M_PI * m) * cmr_rng_fast_normal(&cx->rr);
            x = fmod(x + 1.0, 2.0);
            x = (x < 0 ? x + 2.0 : x) - 1.0; /* aliasing wraps, as a scanner's does */
            long sv = lround(2048 + 2047 * x);
            cx->px[k] = (uint16_t)(sv < 0 ? 0 : sv > 4095 ? 4095 : sv);
        }
    return 0;
}

int series_write_flow(cmr_series_ctx *cx)
{
    cmr_study *s = cx->s;
    const cmr_heart *h = cx->h;
    int rc = 0;
    int nph = s->nphases;
    double rr = 60000.0 / s->hp.hr_bpm;
    size_t np = (size_t)s->rows * (size_t)s->cols;
    img_spec *imgs = calloc((size_t)nph * 2, sizeof *imgs);
    cx->flow_mag = malloc(np * (size_t)nph * sizeof *cx->flow_mag);
    if (!imgs || !cx->flow_mag) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    /* Venc just above the expected peak; the peak follows stroke volume. */
    cx->flow_peak = fmin(160, fmax(45, 40 + 110 * s->hp.lvef / 0.65)) * cmr_rng_range(&cx->rr, 0.85, 1.15);
    cx->venc = cx->flow_peak > 135 ? 200 : cx->flow_peak > 90 ? 150 : 120;
    cmr_heart_phase ph0;
    cmr_heart_phase_at(h, 0, &ph0);
    double R = s->hp.R_ed;
    /* 25 mm above the valve, perpendicular to the root. */
    double c[3] = {0.3 * R * -0.5 + 25 * ao_dir[0], 0.3 * R * 0.866 + 25 * ao_dir[1], ph0.wc - 2 + 25 * ao_dir[2]};
    /* heart.c's axis is not quite unit length; the image axes must be. */
    double an = sqrt(ao_dir[0] * ao_dir[0] + ao_dir[1] * ao_dir[1] + ao_dir[2] * ao_dir[2]);
    double a[3] = {ao_dir[0] / an, ao_dir[1] / an, ao_dir[2] / an};
    double row[3] = {1 - a[0] * a[0], -a[0] * a[1], -a[0] * a[2]};
    double rn = sqrt(row[0] * row[0] + row[1] * row[1] + row[2] * row[2]);
    for (int k = 0; k < 3; k++)
        row[k] /= rn;
    double col[3] = {a[1] * row[2] - a[2] * row[1], a[2] * row[0] - a[0] * row[2], a[0] * row[1] - a[1] * row[0]};
    /* The heart frame is left-handed in LPS when the long axis points that
     * way: flip the columns so that the slice normal follows the flow and
     * forward flow in the ascending aorta reads positive (bright). */
    double rl[3], cl[3], al[3];
    series_lps_of(h, row[0], row[1], row[2], rl);
    series_lps_of(h, col[0], col[1], col[2], cl);
    series_lps_of(h, a[0], a[1], a[2], al);
    double nl[3] = {rl[1] * cl[2] - rl[2] * cl[1], rl[2] * cl[0] - rl[0] * cl[2], rl[0] * cl[1] - rl[1] * cl[0]};
    if (nl[0] * al[0] + nl[1] * al[1] + nl[2] * al[2] < 0)
        for (int k = 0; k < 3; k++)
            col[k] = -col[k];
    int n = 0;
    for (int part = FLOW_MAG; part <= FLOW_PHASE; part++)
        for (int p = 0; p < nph; p++) {
            img_spec *im = &imgs[n++];
            series_set_plane(cx, &im->pl, c, row[0], row[1], row[2], col[0], col[1], col[2]);
            im->pl.thick = 6;
            im->t = (double)p / nph;
            im->trigger_ms = rr * p / nph;
            im->phase = p;
            im->flow = part;
            memcpy(im->shift, cx->slice_shift[13], sizeof im->shift);
        }
    series_def sd;
    series_next_series(cx, &sd, K_FLOW, CMR_C_PC, 1);
    if (s->vendor == CMR_V_SIEMENS) {
        if ((rc = series_emit_series(cx, &sd, imgs, nph)))
            goto fail;
        const char *mag_desc = sd.desc;
        series_next_series(cx, &sd, K_FLOW, CMR_C_PC, 1);
        snprintf(sd.desc_buf, sizeof sd.desc_buf, "%s%s", mag_desc[0] ? mag_desc : "", mag_desc[0] ? "_P" : "");
        sd.desc = sd.desc_buf;
        rc = series_emit_series(cx, &sd, imgs + nph, nph);
    } else {
        rc = series_emit_series(cx, &sd, imgs, 2 * nph);
    }
fail:
    free(imgs);
    free(cx->flow_mag);
    cx->flow_mag = NULL;
    return rc;
}
