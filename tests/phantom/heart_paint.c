/* Compositing the heart over a background, and a conservative distance to
 * it that lets the renderer skip whole tiles of empty field of view. */
#include <math.h>

#include "heart_geom.h"

/* The d of an ellipsoid too far to matter: every alpha of it is 0. */
#define FAR 1e30f

float cmr_heart_lv_blood(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3])
{
    lv_geom g;
    lv_eval(h, ph, q, &g);
    return lv_blood_alpha(h, ph, &g, 0.3f);
}

float cmr_heart_rv_blood(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3])
{
    rv_shape s;
    ell_geom e;
    lv_geom g;
    rv_at(h, ph, &s);
    rv_eval(h, ph, &s, q, 0, &e);
    float a = alpha_of(e.d, 0.3f);
    if (a == 0)
        return 0; /* most of the sampled volume: skip the LV */
    lv_eval(h, ph, q, &g);
    float lv = alpha_of(g.d_epi, 0.3f) * alpha_of(g.ws, 0.3f);
    return a * (1 - lv);
}

/* Two papillary muscles, carried by the wall they hang from. */
static inline float papillary_alpha(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3],
                                    const lv_geom *g, float soft)
{
    if (g->z > -0.18f || g->z < -0.9f)
        return 0;
    /* The muscles' centres lie within 0.74 |endo| of the axis and their
     * radius is at most the untapered one: beyond that, both alphas are 0. */
    float ca = (float)(ph->c * h->p.a_contract);
    float kmax = 1.0f + (ca < 0 ? -ca : ca) * h->motion_max;
    float rad_max = 0.12f * (float)h->p.R_ed * (1 + 0.4f * fabsf((float)ph->c)) + 0.06f * (float)h->p.wall_mm;
    float reach = 0.74f * (float)h->p.R_ed * sqrtf(maxf(0.f, 1 - g->z * g->z)) * kmax + rad_max + 0.5f * soft + 1;
    if (g->r > reach)
        return 0;
    static const float pth[2] = {0.72f, -1.95f};
    float taper = sinf((float)M_PI * (g->z + 0.9f) / 0.72f);
    float best = 0;
    for (int i = 0; i < 2; i++) {
        float ti = tab_theta_idx(pth[i]);
        float k = 1.0f - (float)(ph->c * h->p.a_contract) * tab2(h->motion, ti, g->zi);
        float endo = (float)h->p.R_ed * sqrtf(maxf(0.f, 1 - g->z * g->z)) * k;
        float rc = 0.74f * endo;
        float cu = rc * cosf(pth[i]), cv = rc * sinf(pth[i]);
        float du = (float)q[0] - cu, dv = (float)q[1] - cv;
        float rad = (0.12f * (float)h->p.R_ed * (1 + 0.4f * (float)ph->c) + 0.06f * (float)h->p.wall_mm) *
                    sqrtf(maxf(0.f, taper));
        float a = alpha_of(sqrtf(du * du + dv * dv) - rad, soft);
        best = a > best ? a : best;
    }
    return best;
}

float cmr_heart_paint(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3], float I, const float *tab,
                      float soft, float scar_gain)
{
    const cmr_heart_params *p = &h->p;
    lv_geom g = {0};
    float rr0 = (float)(q[0] * q[0] + q[1] * q[1]);
    /* Far from the LV's axis, or so far above the base that every LV alpha
     * is 0 and the envelope's max(d_epi, ws - 4) exceeds its reach whatever
     * d_epi is: the LV need not be evaluated (bit-identical either way). */
    float env_reach = (float)p->effusion_mm + 4.1f * (float)p->fat_mm + 2 + soft + 1;
    int lv_far = rr0 > h->lv_reach * h->lv_reach || (float)(q[2] - ph->wc) > env_reach + 4;
    if (lv_far) {
        /* Only the envelope needs a distance here, and a lower bound will do. */
        g.r = sqrtf(rr0);
        g.ws = (float)(q[2] - ph->wc);
        g.th = fast_atan2f((float)q[1], (float)q[0]);
        g.d_epi = g.r - h->lv_max_r;
        g.d_endo = g.d_epi;
    } else {
        lv_eval(h, ph, q, &g);
    }
    /* Ellipsoids are evaluated only within a bounding sphere of what they
     * can change: ell_eval's d is at least the distance from the centre
     * minus the largest semi-axis, so beyond the sphere every alpha they
     * feed is exactly 0 and skipping them leaves the pixel bit-identical
     * (a far ellipsoid gets d = FAR).  Most pixels of the heart's box are
     * outside the atria, and many outside the RV. */
    float qu = (float)q[0], qv = (float)q[1], qw = (float)q[2];
    rv_shape rs;
    rv_at(h, ph, &rs);
    ell_geom rv_in = {FAR, 0, 0}, rv_out = rv_in;
    {
        /* The RV also bounds the pericardial envelope: reach its widest. */
        float gb = 1.0f + (float)(ph->c_rv * p->rv_bulge) * 2.2f, w = (float)p->rv_wall;
        float rv_ax = maxf((rs.au + w) * (gb > 1 ? gb : 1), maxf(rs.av + w, rs.aw + w));
        float reach = rv_ax + (float)p->effusion_mm + 4.1f * (float)p->fat_mm + 2 + soft + 1;
        float du = qu - rs.u0, dv = qv - rs.v0, dw = qw - rs.w0;
        if (du * du + dv * dv + dw * dw < reach * reach) {
            rv_eval(h, ph, &rs, q, 0, &rv_in);
            rv_eval(h, ph, &rs, q, (float)p->rv_wall, &rv_out);
        }
    }

    /* Atria and aortic root ride on the descending base. */
    float la_s = (float)(p->la_scale * ph->la_k), ra_s = (float)(p->ra_scale * ph->ra_k);
    float R = (float)p->R_ed, wc = (float)ph->wc;
    ell_geom la = {0, 0, 0}, la_o = la, ra = la, ra_o = la;
    float la_aw = 27 * la_s, ra_aw = 25 * ra_s;
    float la_u = 0.35f * R * 0.34f, la_v = -0.35f * R * 0.94f - 6 * (la_s - 1);
    float la_w = wc + la_aw * 0.9f;
    float ra_u = -(R + 18) - 8 * (ra_s - 1), ra_v = -0.25f * R, ra_w = wc + ra_aw * 0.85f;
    float atria_cut = alpha_of(-(qw - wc) - 2, soft); /* atria live above the base: skip them below */
    if (atria_cut > 0) {
        float du = qu - la_u, dv = qv - la_v, dw = qw - la_w;
        float reach = maxf(22 * la_s, la_aw) + 2 + 0.5f * soft + 1;
        if (du * du + dv * dv + dw * dw < reach * reach) {
            ell_eval(qu - la_u, qv - la_v, qw - la_w, 22 * la_s, 19 * la_s, la_aw, &la);
            ell_eval(qu - la_u, qv - la_v, qw - la_w, 22 * la_s + 2, 19 * la_s + 2, la_aw + 2, &la_o);
        } else {
            la.d = la_o.d = FAR;
        }
        du = qu - ra_u, dv = qv - ra_v, dw = qw - ra_w;
        reach = maxf(21 * ra_s, ra_aw) + 2 + 0.5f * soft + 1;
        if (du * du + dv * dv + dw * dw < reach * reach) {
            ell_eval(qu - ra_u, qv - ra_v, qw - ra_w, 21 * ra_s, 19 * ra_s, ra_aw, &ra);
            ell_eval(qu - ra_u, qv - ra_v, qw - ra_w, 21 * ra_s + 2, 19 * ra_s + 2, ra_aw + 2, &ra_o);
        } else {
            ra.d = ra_o.d = FAR;
        }
    }

    /* Aortic root: a cylinder leaving the base anteroseptally. */
    static const float ad[3] = {-0.26f, 0.36f, 0.895f};
    float a0u = 0.3f * R * -0.5f, a0v = 0.3f * R * 0.866f, a0w = wc - 2;
    float pu = qu - a0u, pv = qv - a0v, pw = qw - a0w;
    float along = pu * ad[0] + pv * ad[1] + pw * ad[2];
    float cu = pu - along * ad[0], cv = pv - along * ad[1], cw = pw - along * ad[2];
    float ao_r = sqrtf(cu * cu + cv * cv + cw * cw);
    float ao_rad = 11.5f + 0.12f * (R - 24);
    float ao_in = along > 0 && along < 70 ? 1.f : 0.f;

    /* Pericardial envelope round both ventricles. */
    float d_env = minf(maxf(g.d_epi, g.ws - 4), rv_out.d);
    float th = g.th;
    float groove = maxf(0.f, 1 - (th - 2.05f) * (th - 2.05f) * 6) + maxf(0.f, 1 - (th + 2.1f) * (th + 2.1f) * 6) +
                   alpha_of(-(g.ws + 18), 8.f);
    float fat = (float)p->fat_mm * (0.5f + 1.2f * groove);
    float eff = (float)p->effusion_mm;

    if (d_env < eff + fat + 2 + soft) {
        I = paint(I, alpha_of(d_env - (eff + fat + 1.5f), soft), tab[CMR_T_PERI]);
        if (eff > 0)
            I = paint(I, alpha_of(d_env - (eff + fat), soft), tab[CMR_T_FLUID]);
        I = paint(I, alpha_of(d_env - fat, soft), tab[CMR_T_FAT]);
    }
    if (atria_cut > 0) {
        I = paint(I, alpha_of(la_o.d, soft) * atria_cut, tab[CMR_T_WALL]);
        I = paint(I, alpha_of(la.d, soft) * atria_cut, tab[CMR_T_BLOOD2]);
        I = paint(I, alpha_of(ra_o.d, soft) * atria_cut, tab[CMR_T_WALL]);
        I = paint(I, alpha_of(ra.d, soft) * atria_cut, tab[CMR_T_BLOOD2]);
    }
    if (ao_in > 0) {
        I = paint(I, alpha_of(ao_r - ao_rad - 2, soft), tab[CMR_T_WALL]);
        I = paint(I, alpha_of(ao_r - ao_rad, soft), tab[CMR_T_BLOOD2]);
    }
    float rv_cut = alpha_of(g.ws - 0.1f * (float)p->L_ed, soft);
    I = paint(I, alpha_of(rv_out.d, soft) * rv_cut, tab[CMR_T_MYO]);
    I = paint(I, alpha_of(rv_in.d, soft) * rv_cut, tab[CMR_T_BLOOD2]);

    if (lv_far)
        return I;
    float base = alpha_of(g.ws, soft);
    float a_myo = alpha_of(g.d_epi, soft) * base;
    if (a_myo > 0) {
        float myo = tab[CMR_T_MYO];
        float wall = g.epi - g.endo;
        float depth = wall > 0.1f ? (g.r - g.endo) / wall : 0;
        if (scar_gain > 0) {
            float s = scar_lookup(h, g.ti, g.zi, depth);
            myo += scar_gain * s * (tab[CMR_T_SCAR] - myo);
        }
        if (p->nc_ratio > 0) {
            float fnc = tab2(h->nc, g.ti, g.zi);
            if (fnc > 0.02f && depth < fnc) {
                /* Trabeculae as radial spokes, thinning towards the cavity. */
                float x = depth / fnc;
                int zj = (int)g.zi;
                float ph0 = h->trab_phase[zj];
                float s = sinf(13.0f * g.th + 2.2f * sinf(4.0f * g.th + ph0) + ph0 + 1.5f * x) *
                          (0.75f + 0.25f * sinf(7.0f * g.th - 2.0f * ph0));
                float thr = 0.55f - 1.3f * x * x;
                float m = clampf((s - thr) * 2.5f + 0.5f, 0.f, 1.f);
                myo = myo * m + tab[CMR_T_BLOOD] * (1 - m);
            }
        }
        I = paint(I, a_myo, myo);
    }
    I = paint(I, lv_blood_alpha(h, ph, &g, soft), tab[CMR_T_BLOOD]);
    float pap = papillary_alpha(h, ph, q, &g, soft);
    if (pap > 0)
        I = paint(I, pap, tab[CMR_T_MYO]);
    return I;
}


/* A lower bound on the distance (mm) from q to anything cmr_heart_paint
 * would change at this phase with this edge width: a bound over bounding
 * shapes (a cylinder round the LV axis, spheres round the RV and atrial
 * ellipsoids, the aortic root's axis segment), each 1-Lipschitz, so a tile
 * whose centre is further than its half-diagonal is untouched by the heart
 * and the renderer can skip it with bit-identical output. */
float cmr_heart_clear(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3], float soft)
{
    const cmr_heart_params *p = &h->p;
    float qu = (float)q[0], qv = (float)q[1], qw = (float)q[2];
    /* Envelope reach: effusion, groove fat at its thickest (0.5 + 1.2 * 3). */
    float env = (float)p->effusion_mm + 4.1f * (float)p->fat_mm + 2 + soft;
    /* Inside lv_reach paint evaluates the real LV; outside, r - lv_max_r. */
    float lv = sqrtf(qu * qu + qv * qv) - maxf(h->lv_reach, h->lv_max_r + env);
    rv_shape rs;
    rv_at(h, ph, &rs);
    float gb = 1.0f + (float)(ph->c_rv * p->rv_bulge) * 2.2f, w = (float)p->rv_wall;
    float rv_ax = maxf((rs.au + w) * (gb > 1 ? gb : 1), maxf(rs.av + w, rs.aw + w));
    float du = qu - rs.u0, dv = qv - rs.v0, dw = qw - rs.w0;
    float rv = sqrtf(du * du + dv * dv + dw * dw) - (rv_ax + env);
    float la_s = (float)(p->la_scale * ph->la_k), ra_s = (float)(p->ra_scale * ph->ra_k);
    float R = (float)p->R_ed, wc = (float)ph->wc;
    float la_aw = 27 * la_s, ra_aw = 25 * ra_s;
    float la_u = 0.35f * R * 0.34f, la_v = -0.35f * R * 0.94f - 6 * (la_s - 1), la_w = wc + la_aw * 0.9f;
    float ra_u = -(R + 18) - 8 * (ra_s - 1), ra_v = -0.25f * R, ra_w = wc + ra_aw * 0.85f;
    du = qu - la_u, dv = qv - la_v, dw = qw - la_w;
    float la = sqrtf(du * du + dv * dv + dw * dw) - (maxf(22 * la_s, la_aw) + 2 + soft);
    du = qu - ra_u, dv = qv - ra_v, dw = qw - ra_w;
    float ra = sqrtf(du * du + dv * dv + dw * dw) - (maxf(21 * ra_s, ra_aw) + 2 + soft);
    static const float ad[3] = {-0.26f, 0.36f, 0.895f};
    float pu = qu - 0.3f * R * -0.5f, pv = qv - 0.3f * R * 0.866f, pw = qw - (wc - 2);
    float t = (pu * ad[0] + pv * ad[1] + pw * ad[2]) / (ad[0] * ad[0] + ad[1] * ad[1] + ad[2] * ad[2]);
    t = clampf(t, 0.f, 70.f);
    float cu = pu - t * ad[0], cv = pv - t * ad[1], cw = pw - t * ad[2];
    float ao = sqrtf(cu * cu + cv * cv + cw * cw) - (11.5f + 0.12f * (R - 24) + 2 + soft);
    return minf(minf(lv, rv), minf(minf(la, ra), ao));
}
