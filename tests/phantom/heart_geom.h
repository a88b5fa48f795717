/* Inline geometry of the heart model, shared by heart.c (tables, motion,
 * volumes) and heart_paint.c (compositing, culling).  Private to the phantom. */
#ifndef CMR_PHANTOM_HEART_GEOM_H
#define CMR_PHANTOM_HEART_GEOM_H

#include <math.h>

#include "heart.h"

/* Plain comparisons: fmaxf/fminf are library calls at -O2/-O3 (NaN rules). */
static inline float maxf(float a, float b) { return a > b ? a : b; }
static inline float minf(float a, float b) { return a < b ? a : b; }
static inline float clampf(float x, float lo, float hi) { return x < lo ? lo : (x > hi ? hi : x); }
/* Coverage of an edge at signed distance d (soft > 0).  At |d| >= soft the
 * clamp makes it exactly 0 or 1 whatever the quotient rounds to, so the
 * division (most of the model's cost) is only paid near an edge. */
static inline float alpha_of(float d, float soft)
{
    if (d >= soft)
        return 0.f;
    if (d <= -soft)
        return 1.f;
    return clampf(0.5f - d / soft, 0.f, 1.f);
}
static inline float paint(float I, float a, float v) { return I + a * (v - I); }

/* atan2 to ~1e-4 rad: the tables it indexes are coarser than that. */
static inline float fast_atan2f(float y, float x)
{
    float ax = fabsf(x), ay = fabsf(y);
    float mx = ax > ay ? ax : ay, mn = ax > ay ? ay : ax;
    if (mx == 0)
        return 0;
    float a = mn / mx, s = a * a;
    float r = ((-0.0464964749f * s + 0.15931422f) * s - 0.327622764f) * s * a + a;
    if (ay > ax)
        r = 1.57079637f - r;
    if (x < 0)
        r = 3.14159274f - r;
    return y < 0 ? -r : r;
}

static inline float tab_theta_idx(float th) { return (th + (float)M_PI) * (CMR_NT / (2 * (float)M_PI)); }
static inline float tab_z_idx(float z) { return clampf(-z, 0.f, 1.f) * (CMR_NZ - 1); }

static inline float tab2(const float t[CMR_NT][CMR_NZ], float ti, float zi)
{
    int i0 = (int)floorf(ti), j0 = (int)zi;
    float fi = ti - i0, fj = zi - j0;
    i0 = ((i0 % CMR_NT) + CMR_NT) % CMR_NT;
    int i1 = (i0 + 1) % CMR_NT, j1 = j0 + 1 < CMR_NZ ? j0 + 1 : j0;
    return (t[i0][j0] * (1 - fj) + t[i0][j1] * fj) * (1 - fi) + (t[i1][j0] * (1 - fj) + t[i1][j1] * fj) * fi;
}

static inline float scar_lookup(const cmr_heart *h, float ti, float zi, float d)
{
    float di = clampf(d, 0.f, 1.f) * (CMR_ND - 1);
    int k0 = (int)di;
    float fk = di - k0;
    int k1 = k0 + 1 < CMR_ND ? k0 + 1 : k0;
    int i0 = (int)floorf(ti), j0 = (int)zi;
    float fi = ti - i0, fj = zi - j0;
    i0 = ((i0 % CMR_NT) + CMR_NT) % CMR_NT;
    int i1 = (i0 + 1) % CMR_NT, j1 = j0 + 1 < CMR_NZ ? j0 + 1 : j0;
#define S3(i, j) (h->scar[i][j][k0] * (1 - fk) + h->scar[i][j][k1] * fk)
    return (S3(i0, j0) * (1 - fj) + S3(i0, j1) * fj) * (1 - fi) + (S3(i1, j0) * (1 - fj) + S3(i1, j1) * fj) * fi;
#undef S3
}

/* ---- geometry ---- */

typedef struct lv_geom {
    float r, th, ti, zi, z, ws, endo, epi, d_endo, d_epi;
} lv_geom;

static inline void lv_eval(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3], lv_geom *g)
{
    const cmr_heart_params *p = &h->p;
    float u = (float)q[0], v = (float)q[1];
    g->ws = (float)(q[2] - ph->wc);
    g->z = g->ws / (float)ph->L;
    g->r = sqrtf(u * u + v * v);
    g->th = fast_atan2f(v, u);
    g->ti = tab_theta_idx(g->th);
    g->zi = tab_z_idx(g->z);
    float zc = g->z < -1 ? -1 : (g->z > 0 ? 0 : g->z);
    float k = 1.0f - (float)(ph->c * p->a_contract) * tab2(h->motion, g->ti, g->zi);
    float T = tab2(h->thick, g->ti, g->zi);
    float endo_ed = (float)p->R_ed * sqrtf(maxf(0.f, 1 - zc * zc));
    float ws_ed = g->z * (float)p->L_ed;
    float Lepi = (float)(p->L_ed + p->T_apex);
    float pe = 1 - (ws_ed / Lepi) * (ws_ed / Lepi);
    float epi_ed = ((float)p->R_ed + T) * sqrtf(maxf(0.f, pe));
    if (epi_ed < endo_ed + 0.5f * T && g->z > -1)
        epi_ed = endo_ed + 0.5f * T; /* keep the apical cap from pinching */
    g->endo = endo_ed * k;
    float area = epi_ed * epi_ed - endo_ed * endo_ed;
    g->epi = sqrtf(g->endo * g->endo + area * (float)(p->L_ed / ph->L));
    g->d_endo = maxf(g->r - g->endo, -(g->ws + (float)ph->L));
    g->d_epi = maxf(g->r - g->epi, -(g->ws + (float)ph->L_epi));
}

typedef struct ell_geom {
    float d;   /* distance-like: negative inside */
    float rho; /* ellipsoidal radius, <1 inside */
    float len;
} ell_geom;

static inline void ell_eval(const float du, const float dv, const float dw, float au, float av, float aw, ell_geom *e)
{
    float f = (du / au) * (du / au) + (dv / av) * (dv / av) + (dw / aw) * (dw / aw);
    e->rho = sqrtf(f);
    e->len = sqrtf(du * du + dv * dv + dw * dw);
    e->d = e->rho > 1e-6f ? e->len * (1 - 1 / e->rho) : -minf(au, minf(av, aw));
}

typedef struct rv_shape {
    float u0, v0, w0, au, av, aw;
} rv_shape;

/* The RV shortens mostly by its free wall moving towards the septum, so the
 * septal side of the ellipsoid stays put while the centre moves in. */
static inline void rv_at(const cmr_heart *h, const cmr_heart_phase *ph, rv_shape *s)
{
    const cmr_heart_params *p = &h->p;
    float R = (float)p->R_ed, L = (float)p->L_ed, sc = (float)p->rv_scale;
    float k = 1.0f - (float)(ph->c_rv * h->rv_a);
    /* The ellipsoid's centre sits inside the LV, so what shows outside the
     * septum is a crescent wrapped round it. */
    float au_ed = (0.5f * R + h->t_sept + 19.0f) * sc;
    s->au = au_ed * k;
    s->av = (0.9f * R + 15.0f) * sc * (1.0f - 0.3f * (1.0f - k));
    s->aw = 0.47f * L * (0.85f + 0.15f * sc) * (1.0f - 0.35f * (1.0f - k));
    s->u0 = -0.6f * R + au_ed * (1.0f - k);
    s->v0 = 6.0f;
    s->w0 = -0.36f * L;
}

static inline void rv_eval(const cmr_heart *h, const cmr_heart_phase *ph, const rv_shape *s, const double q[3],
                           float grow, ell_geom *e)
{
    float du = (float)q[0] - s->u0, dv = (float)q[1] - s->v0, dw = (float)q[2] - s->w0;
    float g = 1.0f;
    if (h->p.rv_bulge > 0) {
        /* Dyskinetic free-wall segments balloon out in systole. */
        float phi = fast_atan2f(dv, -du);
        float dphi = phi - (float)h->p.rv_bulge_theta + 1.2f;
        float b = maxf(0.f, 1 - dphi * dphi / 0.5f);
        float bz = maxf(0.f, 1 - (dw / s->aw) * (dw / s->aw) * 1.6f);
        g = 1.0f + (float)(ph->c_rv * h->p.rv_bulge) * b * b * bz * 2.2f;
    }
    ell_eval(du, dv, dw, (s->au + grow) * g, (s->av + grow), (s->aw + grow), e);
}

static inline float lv_blood_alpha(const cmr_heart *h, const cmr_heart_phase *ph, const lv_geom *g, float soft)
{
    (void)h;
    (void)ph;
    float a = alpha_of(g->d_endo, soft);
    return a * alpha_of(g->ws, soft);
}

#endif
