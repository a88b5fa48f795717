/* Analytic heart: parameters per diagnosis, tables, motion, bounds and the
 * volume measurement (painting is in heart_paint.c). */
#include "heart.h"

#include <math.h>
#include <string.h>

#include "cmr_error.h"
#include "heart_geom.h"

const char *const cmr_dx_key[CMR_DX_COUNT] = {"normal", "hcm",     "amyloidosis", "dcm",   "icm",
                                              "myocarditis", "sarcoidosis", "lvnc", "fabry", "arvc"};

#define DEG (M_PI / 180.0)
/* AHA directions in the heart frame (theta from lateral towards anterior). */
#define TH_LAT 0.0
#define TH_ANT (90 * DEG)
#define TH_SEPT (180 * DEG)
#define TH_INF (-90 * DEG)
#define TH_ANTSEPT (135 * DEG)
#define TH_INFSEPT (-135 * DEG)
#define TH_INFLAT (-45 * DEG)
#define TH_ANTLAT (45 * DEG)
#define TH_RVI_ANT (118 * DEG) /* RV insertion points */
#define TH_RVI_INF (-122 * DEG)

static double wrap_angle(double a)
{
    while (a > M_PI)
        a -= 2 * M_PI;
    while (a < -M_PI)
        a += 2 * M_PI;
    return a;
}

static void add_bump(cmr_bump *arr, int *n, double th, double sth, double z, double sz, double amp)
{
    if (*n >= CMR_MAX_BUMPS)
        return;
    arr[*n] = (cmr_bump){(float)th, (float)sth, (float)z, (float)sz, (float)amp};
    (*n)++;
}

static void add_lge(cmr_heart_params *p, double th, double sth, double z0, double z1, double d0, double d1,
                    double amp)
{
    if (p->nlge >= CMR_MAX_LGE)
        return;
    p->lge[p->nlge++] = (cmr_lge_blob){(float)th, (float)sth, (float)z0, (float)z1, (float)d0, (float)d1, (float)amp};
}

/* A few patches scattered around a centre: LGE is rarely one smooth blob. */
static void add_patchy(cmr_rng *r, cmr_heart_params *p, int n, double th, double th_spread, double z0, double z1,
                       double d0, double d1, double amp)
{
    for (int i = 0; i < n; i++) {
        double t = th + cmr_rng_range(r, -th_spread, th_spread);
        double zc = cmr_rng_range(r, z0, z1);
        double zh = cmr_rng_range(r, 0.06, 0.16);
        double dc = cmr_rng_range(r, d0, d1), dh = cmr_rng_range(r, 0.12, 0.3);
        add_lge(p, t, cmr_rng_range(r, 0.12, 0.3), zc - zh, zc + zh, fmax(0, dc - dh), fmin(1, dc + dh),
                amp * cmr_rng_range(r, 0.7, 1.0));
    }
}

static int sev_draw(cmr_rng *r)
{
    static const double w[3] = {0.4, 0.4, 0.2};
    return 1 + cmr_rng_weighted(r, w, 3);
}

static double lerp3(int sev, double lo, double hi, cmr_rng *r)
{
    /* Splits [lo,hi] into three bands, one per severity. */
    double a = lo + (hi - lo) * (sev - 1) / 3.0, b = lo + (hi - lo) * sev / 3.0;
    return cmr_rng_range(r, a, b);
}

static void normalize3(double v[3])
{
    double n = sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2]);
    v[0] /= n, v[1] /= n, v[2] /= n;
}

static void cross3(const double a[3], const double b[3], double o[3])
{
    o[0] = a[1] * b[2] - a[2] * b[1];
    o[1] = a[2] * b[0] - a[0] * b[2];
    o[2] = a[0] * b[1] - a[1] * b[0];
}

void cmr_heart_draw(cmr_rng *r, int dx, double bs, int female, cmr_heart_params *p)
{
    memset(p, 0, sizeof *p);
    p->dx = dx;
    double sx = bs * (female ? 0.93 : 1.0);
    p->R_ed = cmr_rng_range(r, 23, 27) * sx;
    p->L_ed = cmr_rng_range(r, 80, 92) * sx;
    p->wall_mm = cmr_rng_range(r, 7, 9.5) * (female ? 0.92 : 1.0);
    p->T_apex = cmr_rng_range(r, 6, 8);
    p->lvef_target = cmr_rng_range(r, 0.57, 0.69);
    p->rvef_target = cmr_rng_range(r, 0.50, 0.62);
    p->long_short = cmr_rng_range(r, 0.11, 0.15);
    p->global_motion = 1;
    p->rv_scale = cmr_rng_range(r, 0.92, 1.08) * sx;
    p->rv_wall = cmr_rng_range(r, 3, 4);
    p->la_scale = cmr_rng_range(r, 0.9, 1.05) * sx;
    p->ra_scale = cmr_rng_range(r, 0.9, 1.05) * sx;
    p->fat_mm = cmr_rng_range(r, 1.5, 5);
    p->hr_bpm = cmr_rng_range(r, 55, 85);
    p->es_frac = 0.30 + 0.0015 * (p->hr_bpm - 60) + cmr_rng_range(r, -0.02, 0.02);
    strcpy(p->lge_pattern, "none");
    strcpy(p->territory, "");

    switch (dx) {
    case CMR_DX_NORMAL:
        break;
    case CMR_DX_HCM: {
        p->severity = sev_draw(r);
        double maxw = lerp3(p->severity, 15, 30, r);
        p->R_ed *= cmr_rng_range(r, 0.76, 0.88);
        p->L_ed *= cmr_rng_range(r, 0.9, 0.98);
        p->wall_mm = cmr_rng_range(r, 9, 11.5);
        p->lvef_target = cmr_rng_range(r, 0.68, 0.80);
        p->long_short = cmr_rng_range(r, 0.08, 0.12);
        p->la_scale *= cmr_rng_range(r, 1.1, 1.35);
        p->apical_variant = cmr_rng_chance(r, 0.2);
        if (p->apical_variant) {
            add_bump(p->thick, &p->nthick, 0, 10, -0.92, 0.2, maxw - p->wall_mm);
        } else {
            double th = TH_SEPT + cmr_rng_range(r, -0.2, 0.2);
            add_bump(p->thick, &p->nthick, th, cmr_rng_range(r, 0.55, 0.75), cmr_rng_range(r, -0.45, -0.25),
                     cmr_rng_range(r, 0.25, 0.4), maxw - p->wall_mm);
            add_bump(p->thick, &p->nthick, TH_ANT, 0.5, -0.3, 0.3, (maxw - p->wall_mm) * cmr_rng_range(r, 0.1, 0.4));
        }
        if (cmr_rng_chance(r, 0.65)) {
            strcpy(p->lge_pattern, p->apical_variant ? "apical_patchy" : "rv_insertion_midwall");
            if (p->apical_variant) {
                add_patchy(r, p, 3, 0, M_PI, -0.98, -0.75, 0.3, 0.7, 0.8);
            } else {
                add_patchy(r, p, 2, TH_RVI_ANT, 0.15, -0.55, -0.15, 0.35, 0.65, 0.85);
                add_patchy(r, p, 2, TH_RVI_INF, 0.15, -0.55, -0.15, 0.35, 0.65, 0.85);
            }
        }
        break;
    }
    case CMR_DX_AMYLOID:
        p->severity = sev_draw(r);
        p->wall_mm = lerp3(p->severity, 13, 19, r);
        p->R_ed *= cmr_rng_range(r, 0.85, 0.95);
        p->rv_wall = cmr_rng_range(r, 6, 8);
        p->la_scale *= cmr_rng_range(r, 1.3, 1.55);
        p->ra_scale *= cmr_rng_range(r, 1.3, 1.55);
        p->effusion_mm = cmr_rng_range(r, 3, 8);
        p->lvef_target = 0.56 - 0.04 * p->severity + cmr_rng_range(r, -0.03, 0.03);
        p->long_short = cmr_rng_range(r, 0.04, 0.07);
        p->lge_dark_blood = 1;
        strcpy(p->lge_pattern, p->severity == 3 ? "diffuse_transmural" : "diffuse_subendocardial");
        add_lge(p, 0, 10, -1.05, 0.05, 0, p->severity == 3 ? 0.9 : 0.45, 0.75);
        add_patchy(r, p, 3, 0, M_PI, -0.6, 0, 0.3, 0.8, 0.6);
        break;
    case CMR_DX_DCM:
        p->severity = sev_draw(r);
        p->R_ed *= cmr_rng_range(r, 1.3, 1.5);
        p->L_ed *= cmr_rng_range(r, 1.12, 1.25);
        p->wall_mm = cmr_rng_range(r, 5, 7);
        p->lvef_target = 0.40 - 0.25 * (p->severity - 1 + cmr_rng_uniform(r)) / 3.0;
        p->long_short = cmr_rng_range(r, 0.03, 0.06);
        p->rvef_target = cmr_rng_range(r, 0.35, 0.55);
        p->la_scale *= cmr_rng_range(r, 1.15, 1.4);
        if (cmr_rng_chance(r, 0.4)) {
            strcpy(p->lge_pattern, "septal_midwall");
            add_lge(p, TH_SEPT, 0.55, -0.75, -0.05, 0.38, 0.62, cmr_rng_range(r, 0.7, 0.95));
        }
        break;
    case CMR_DX_ICM: {
        p->severity = sev_draw(r);
        static const char *terr[3] = {"LAD", "RCA", "LCx"};
        int ti = cmr_rng_int(r, 0, 2);
        strcpy(p->territory, terr[ti]);
        p->R_ed *= cmr_rng_range(r, 1.05, 1.3);
        p->L_ed *= cmr_rng_range(r, 1.0, 1.12);
        p->lvef_target = 0.50 - 0.25 * (p->severity - 1 + cmr_rng_uniform(r)) / 3.0;
        p->long_short = cmr_rng_range(r, 0.06, 0.1);
        double th, sth, z, sz;
        if (ti == 0)
            th = 115 * DEG, sth = 0.6, z = -0.68, sz = 0.35;
        else if (ti == 1)
            th = -115 * DEG, sth = 0.45, z = -0.3, sz = 0.35;
        else
            th = -25 * DEG, sth = 0.5, z = -0.35, sz = 0.35;
        double thin = p->wall_mm - cmr_rng_range(r, 3, 5);
        add_bump(p->thick, &p->nthick, th, sth, z, sz, -thin);
        add_bump(p->hypo, &p->nhypo, th, sth * 1.2, z, sz * 1.2, p->severity == 3 ? 1.25 : 1.0);
        double dmax = p->severity == 1 ? cmr_rng_range(r, 0.3, 0.5) : p->severity == 2 ? cmr_rng_range(r, 0.5, 0.75) : 1.0;
        strcpy(p->lge_pattern, dmax >= 0.95 ? "transmural" : "subendocardial");
        add_lge(p, th, sth * 0.8, z - 1.3 * sz, fmin(0.02, z + 1.3 * sz), 0, dmax, 1.0);
        if (ti == 0) /* the LAD wraps the apex */
            add_lge(p, 0, 10, -1.05, -0.82, 0, dmax, 1.0);
        break;
    }
    case CMR_DX_MYOCARDITIS:
        p->severity = sev_draw(r);
        p->lvef_target = 0.62 - 0.05 * p->severity + cmr_rng_range(r, -0.03, 0.03);
        p->edema = cmr_rng_chance(r, 0.7);
        if (cmr_rng_chance(r, 0.3))
            p->effusion_mm = cmr_rng_range(r, 2, 4);
        strcpy(p->lge_pattern, "subepicardial_lateral");
        add_lge(p, cmr_rng_range(r, -40, -5) * DEG, cmr_rng_range(r, 0.35, 0.6), -0.75, -0.05,
                1.0 - 0.15 * p->severity - 0.2, 1.02, 0.9);
        add_patchy(r, p, 2 + p->severity, -25 * DEG, 0.6, -0.7, -0.1, 0.7, 0.95, 0.8);
        break;
    case CMR_DX_SARCOID:
        p->severity = sev_draw(r);
        p->lvef_target = 0.62 - 0.09 * p->severity + cmr_rng_range(r, -0.04, 0.04);
        strcpy(p->lge_pattern, "patchy_basal_septum");
        add_patchy(r, p, 3 + p->severity, TH_SEPT, 0.45, -0.4, 0.0, 0.2, 0.9, 1.0);
        add_patchy(r, p, p->severity, TH_LAT, 1.2, -0.7, -0.1, 0.5, 0.95, 0.9);
        if (p->severity >= 2)
            add_bump(p->thick, &p->nthick, TH_SEPT, 0.4, -0.15, 0.2, -2.5);
        add_bump(p->hypo, &p->nhypo, TH_SEPT, 0.5, -0.2, 0.3, 0.3 * p->severity);
        p->edema = cmr_rng_chance(r, 0.4);
        break;
    case CMR_DX_LVNC:
        p->severity = sev_draw(r);
        p->nc_compact_mm = cmr_rng_range(r, 3.5, 5);
        p->nc_ratio = p->severity == 1 ? cmr_rng_range(r, 2.4, 2.8) : p->severity == 2 ? cmr_rng_range(r, 2.8, 3.3)
                                                                     : cmr_rng_range(r, 3.3, 4.0);
        p->wall_mm = p->nc_compact_mm;
        p->R_ed *= cmr_rng_range(r, 1.0, 1.2);
        p->lvef_target = 0.58 - 0.07 * p->severity + cmr_rng_range(r, -0.03, 0.03);
        break;
    case CMR_DX_FABRY:
        p->severity = sev_draw(r);
        p->wall_mm = lerp3(p->severity, 12, 18, r);
        p->lvef_target = cmr_rng_range(r, 0.58, 0.70);
        if (cmr_rng_chance(r, 0.75)) {
            strcpy(p->lge_pattern, "basal_inferolateral_midwall");
            add_lge(p, TH_INFLAT, 0.32, -0.42, 0.02, 0.35, 0.68, cmr_rng_range(r, 0.75, 1.0));
        }
        break;
    case CMR_DX_ARVC:
        p->severity = sev_draw(r);
        p->rv_scale *= 1.15 + 0.17 * p->severity + cmr_rng_range(r, -0.05, 0.05);
        p->rvef_target = 0.42 - 0.07 * p->severity + cmr_rng_range(r, -0.03, 0.03);
        p->rv_bulge = 0.12 + 0.06 * p->severity;
        p->rv_bulge_theta = cmr_rng_range(r, 0.5, 2.2);
        p->rv_wall = cmr_rng_range(r, 2, 3);
        p->ra_scale *= cmr_rng_range(r, 1.1, 1.3);
        p->lvef_target = cmr_rng_range(r, 0.50, 0.62);
        if (cmr_rng_chance(r, 0.25)) {
            strcpy(p->lge_pattern, "subepicardial_inferolateral");
            add_lge(p, TH_INFLAT, 0.4, -0.7, -0.1, 0.7, 1.0, 0.8);
        }
        break;
    }

    /* Orientation: the apex points left, anterior and inferior (LPS). */
    double w[3] = {-0.58 + cmr_rng_range(r, -0.12, 0.12), 0.50 + cmr_rng_range(r, -0.12, 0.12),
                   0.62 + cmr_rng_range(r, -0.12, 0.12)};
    normalize3(w);
    double ant[3] = {0, -1, 0}, v[3], u[3];
    double dot = ant[0] * w[0] + ant[1] * w[1] + ant[2] * w[2];
    for (int i = 0; i < 3; i++)
        v[i] = ant[i] - dot * w[i];
    normalize3(v);
    /* Rotate about w: hearts differ in how they sit on the diaphragm. */
    double rot = cmr_rng_range(r, -0.25, 0.25);
    cross3(v, w, u);
    if (u[0] < 0)
        for (int i = 0; i < 3; i++)
            u[i] = -u[i];
    double u2[3], v2[3];
    for (int i = 0; i < 3; i++) {
        u2[i] = cos(rot) * u[i] + sin(rot) * v[i];
        v2[i] = -sin(rot) * u[i] + cos(rot) * v[i];
    }
    for (int i = 0; i < 3; i++) {
        p->axis[0][i] = u2[i];
        p->axis[1][i] = v2[i];
        p->axis[2][i] = w[i];
    }
    p->origin[0] = cmr_rng_range(r, -15, 5);
    p->origin[1] = cmr_rng_range(r, -5, 15);
    p->origin[2] = cmr_rng_range(r, -20, 20);
}

/* ---- tables ---- */

static double bump_eval(const cmr_bump *b, double th, double z)
{
    double dt = wrap_angle(th - b->theta);
    double e = dt * dt / (2.0 * b->sig_theta * b->sig_theta) + (z - b->z) * (z - b->z) / (2.0 * b->sig_z * b->sig_z);
    return b->amp * exp(-e);
}

static double smooth_window(double x, double a, double b, double edge)
{
    double lo = 1.0 / (1.0 + exp(-(x - a) / edge)), hi = 1.0 / (1.0 + exp((x - b) / edge));
    return lo * hi;
}

static void build_tables(cmr_heart *h, cmr_rng *r)
{
    cmr_heart_params *p = &h->p;
    for (int i = 0; i < CMR_NT; i++) {
        double th = -M_PI + (i + 0.0) * 2 * M_PI / CMR_NT;
        for (int j = 0; j < CMR_NZ; j++) {
            double z = -(double)j / (CMR_NZ - 1);
            double t = p->wall_mm, m = 1.0, nc = 0;
            for (int b = 0; b < p->nthick; b++)
                t += bump_eval(&p->thick[b], th, z);
            for (int b = 0; b < p->nhypo; b++)
                m -= bump_eval(&p->hypo[b], th, z);
            /* The apex thins a little in every heart. */
            t *= 1.0 - 0.25 * smooth_window(z, -1.2, -0.8, 0.06);
            if (p->nc_ratio > 0) {
                /* Non-compaction spares the septum and the base. */
                double sept = exp(-pow(wrap_angle(th - TH_SEPT), 2) / (2 * 0.5 * 0.5));
                nc = (1 - 0.9 * sept) * smooth_window(z, -1.2, -0.25, 0.08);
                t += nc * p->nc_ratio * p->nc_compact_mm;
            }
            if (t < 2.5)
                t = 2.5;
            h->thick[i][j] = (float)t;
            h->motion[i][j] = (float)(m * p->global_motion);
            h->nc[i][j] = (float)(t > 0 ? nc * p->nc_ratio * p->nc_compact_mm / t : 0);
            for (int k = 0; k < CMR_ND; k++) {
                double d = (double)k / (CMR_ND - 1), s = 0;
                for (int b = 0; b < p->nlge; b++) {
                    const cmr_lge_blob *L = &p->lge[b];
                    double dt = wrap_angle(th - L->theta);
                    double ang = L->sig_theta > 5 ? 1.0 : exp(-dt * dt / (2.0 * L->sig_theta * L->sig_theta));
                    double v = L->amp * ang * smooth_window(z, L->z0, L->z1, 0.03) *
                               smooth_window(d, L->d0 - 0.02, L->d1 + 0.02, 0.05);
                    s = s > v ? s : v;
                }
                h->scar[i][j][k] = (float)s;
            }
        }
    }
    for (int j = 0; j < CMR_NZ; j++)
        h->trab_phase[j] = (float)(j == 0 ? cmr_rng_range(r, 0, 6.28) : h->trab_phase[j - 1] + cmr_rng_range(r, -0.25, 0.25));
}

/* ---- motion ---- */

static double contraction(double t, double ts)
{
    t = t - floor(t);
    if (t < ts)
        return 0.5 * (1 - cos(M_PI * t / ts));
    double t1 = ts + 0.06;
    if (t < t1)
        return 1.0;
    double t2 = t1 + 0.22;
    if (t < t2)
        return 0.2 + 0.8 * 0.5 * (1 + cos(M_PI * (t - t1) / (t2 - t1)));
    if (t < 0.84)
        return 0.2 - 0.08 * (t - t2) / (0.84 - t2);
    if (t < 0.96)
        return 0.12 * 0.5 * (1 + cos(M_PI * (t - 0.84) / 0.12));
    return 0;
}

void cmr_heart_phase_at(const cmr_heart *h, double t, cmr_heart_phase *ph)
{
    const cmr_heart_params *p = &h->p;
    ph->t = t;
    ph->c = contraction(t, p->es_frac);
    ph->c_rv = contraction(t - 0.015, p->es_frac);
    ph->L = p->L_ed * (1 - ph->c * p->long_short);
    ph->wc = -ph->c * p->long_short * p->L_ed;
    ph->L_epi = (p->L_ed + p->T_apex) * ph->L / p->L_ed;
    double tt = t - floor(t);
    double kick = tt > 0.84 && tt < 0.98 ? sin(M_PI * (tt - 0.84) / 0.14) : 0;
    ph->la_k = 1 + 0.10 * ph->c - 0.07 * kick;
    ph->ra_k = 1 + 0.09 * ph->c - 0.06 * kick;
}

/* Generous heart-frame bounds of every painted structure, so the renderer
 * can skip the heart for most pixels of a 300 mm field of view. */
static void compute_bounds(cmr_heart *h)
{
    const cmr_heart_params *p = &h->p;
    double R = p->R_ed, L = p->L_ed, sc = p->rv_scale, la = p->la_scale * 1.12, ra = p->ra_scale * 1.12;
    double tmax = 0, mmax = 0;
    for (int i = 0; i < CMR_NT; i++)
        for (int j = 0; j < CMR_NZ; j++) {
            tmax = fmax(tmax, h->thick[i][j]);
            mmax = fmax(mmax, fabs(h->motion[i][j]));
        }
    h->motion_max = (float)mmax;
    double halo = 3.5 * p->fat_mm + p->effusion_mm + 8;
    double au = (0.5 * R + h->t_sept + 19) * sc * (1 + 2.2 * p->rv_bulge), av = (0.9 * R + 15) * sc;
    double u_rv = -0.6 * R - au - p->rv_wall;
    double u_ra = -(R + 18) - 8 * (ra - 1) - 21 * ra * 1.15 - 2;
    h->box_lo[0] = fmin(u_rv, u_ra) - halo;
    h->box_hi[0] = fmax(R + tmax, 0.12 * R + 22 * la * 1.15 + 2) + halo;
    h->box_lo[1] = fmin(fmin(7 - av - p->rv_wall, -(R + tmax)), -0.33 * R - 6 * (la - 1) - 19 * la * 1.15 - 2) - halo;
    h->box_hi[1] = fmax(fmax(7 + av + p->rv_wall, R + tmax), 0.26 * R + 70 * 0.36 + 18) + halo;
    h->box_lo[2] = -(L + p->T_apex) - halo;
    h->box_hi[2] = fmax(fmax(27 * la * 2.1 + 2, 25 * ra * 2.0 + 2), 70 * 0.895 + 18) + halo;
    h->lv_reach = (float)(1.15 * (R + tmax) + halo);
    h->lv_max_r = (float)(1.15 * (R + tmax));
}

/* ---- build: solve contraction, measure volumes ---- */

static double lv_area_ratio(const cmr_heart *h, double a)
{
    double num = 0, den = 0;
    for (int i = 0; i < CMR_NT; i += 2)
        for (int j = 0; j < CMR_NZ; j++) {
            double z = -(double)j / (CMR_NZ - 1), w = 1 - z * z;
            double k = 1 - a * h->motion[i][j];
            num += w * k * k;
            den += w;
        }
    return num / den;
}

static void measure(const cmr_heart *h, double t, double *lv_ml, double *rv_ml, double step)
{
    cmr_heart_phase ph;
    cmr_heart_phase_at(h, t, &ph);
    double ext = h->p.R_ed * 1.6 + 30 * h->p.rv_scale + 20, lv = 0, rv = 0;
    double q[3];
    for (q[2] = -h->p.L_ed - 4; q[2] < 10; q[2] += step)
        for (q[1] = -ext; q[1] < ext; q[1] += step)
            for (q[0] = -ext - 40 * h->p.rv_scale; q[0] < h->p.R_ed + 10; q[0] += step) {
                if (lv_ml && q[0] > -h->p.R_ed * 1.3)
                    lv += cmr_heart_lv_blood(h, &ph, q);
                if (rv_ml && q[0] < 0)
                    rv += cmr_heart_rv_blood(h, &ph, q);
            }
    if (lv_ml)
        *lv_ml = lv * step * step * step / 1000.0;
    if (rv_ml)
        *rv_ml = rv * step * step * step / 1000.0;
}

int cmr_heart_build(cmr_heart *h)
{
    cmr_heart_params *p = &h->p;
    if (p->dx < 0 || p->dx >= CMR_DX_COUNT || p->R_ed <= 0 || p->L_ed <= 0)
        return cmr_fail(CMR_EINVAL, "heart parameters out of range (dx %d)", p->dx);
    cmr_rng r;
    cmr_rng_seed(&r, (uint64_t)(p->R_ed * 1000) ^ (uint64_t)(p->L_ed * 7919), 99);
    build_tables(h, &r);
    h->t_sept = h->thick[(int)tab_theta_idx((float)TH_SEPT) % CMR_NT][(int)(0.4 * (CMR_NZ - 1))];

    /* Bisection on the contraction amplitude: ES/ED volume = area ratio x
     * length ratio for this shell model. */
    double target = (1 - p->lvef_target) / (1 - p->long_short);
    double lo = 0, hi = 0.75;
    for (int it = 0; it < 40; it++) {
        double mid = 0.5 * (lo + hi);
        if (lv_area_ratio(h, mid) > target)
            lo = mid;
        else
            hi = mid;
    }
    p->a_contract = 0.5 * (lo + hi);
    compute_bounds(h);
    /* The visible RV is a crescent outside the LV, so its volume has no
     * closed form: bisect on a coarse volume measurement. */
    double rved0;
    h->rv_a = 0;
    measure(h, 0.0, NULL, &rved0, 4.0);
    lo = 0, hi = 0.6;
    for (int it = 0; it < 7; it++) {
        h->rv_a = 0.5 * (lo + hi);
        double v;
        measure(h, p->es_frac + 0.015, NULL, &v, 4.0);
        if (rved0 > 0 && 1 - v / rved0 < p->rvef_target)
            lo = h->rv_a;
        else
            hi = h->rv_a;
    }
    h->rv_a = 0.5 * (lo + hi);

    double lved, lves, rved, rves;
    measure(h, 0.0, &lved, &rved, 2.8);
    measure(h, p->es_frac + 0.03, &lves, NULL, 2.8);
    measure(h, p->es_frac + 0.015, NULL, &rves, 2.8);
    p->lvedv_ml = lved, p->lvesv_ml = lves, p->rvedv_ml = rved, p->rvesv_ml = rves;
    p->lvef = lved > 0 ? (lved - lves) / lved : 0;
    p->rvef = rved > 0 ? (rved - rves) / rved : 0;

    /* Maximal ED wall thickness, septal and lateral, over basal-mid levels. */
    double mx = 0, sept = 0, lat = 0;
    int js = (int)(0.05 * (CMR_NZ - 1)), je = (int)(0.95 * (CMR_NZ - 1));
    for (int i = 0; i < CMR_NT; i++)
        for (int j = js; j <= je; j++)
            mx = fmax(mx, h->thick[i][j]);
    int jm = (int)(0.4 * (CMR_NZ - 1));
    sept = h->thick[(int)tab_theta_idx((float)TH_SEPT) % CMR_NT][jm];
    lat = h->thick[(int)tab_theta_idx((float)TH_LAT) % CMR_NT][jm];
    p->max_wall_mm = mx, p->septal_wall_mm = sept, p->lateral_wall_mm = lat;
    p->nc_ratio_measured = p->nc_ratio;
    return 0;
}
