#include "render.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"

enum {
    B_AIR,
    B_SUBFAT,
    B_MUSCLE,
    B_LUNG,
    B_LIVER,
    B_SPLEEN,
    B_GAS,
    B_MARROW,
    B_CSF,
    B_AORTA,
    B_MEDIAST,
    B_COUNT
};

/* Relative signal per tissue and contrast; heart classes then body classes. */
static const float heart_tab[CMR_C_COUNT][CMR_T_COUNT_HEART] = {
    /*            blood blood2 myo   scar  fat   fluid peri  wall */
    [CMR_C_CINE] = {1.00f, 0.92f, 0.21f, 0.21f, 0.80f, 1.05f, 0.05f, 0.30f},
    [CMR_C_LGE] = {0.40f, 0.37f, 0.025f, 1.00f, 0.50f, 0.10f, 0.35f, 0.18f},
    [CMR_C_PSIR] = {0.35f, 0.33f, 0.00f, 1.00f, 0.45f, -0.45f, 0.30f, 0.10f},
    [CMR_C_STIR] = {0.03f, 0.03f, 0.26f, 0.62f, 0.06f, 0.90f, 0.10f, 0.15f},
    [CMR_C_LOC] = {0.85f, 0.80f, 0.25f, 0.25f, 0.75f, 0.90f, 0.10f, 0.30f},
    [CMR_C_PC] = {0.90f, 0.95f, 0.28f, 0.28f, 0.70f, 0.55f, 0.05f, 0.30f},
};
static const float body_tab[CMR_C_COUNT][B_COUNT] = {
    /*           air  subfat muscle lung  liver spleen gas  marrow csf  aorta mediast */
    [CMR_C_CINE] = {0.0f, 0.78f, 0.18f, 0.035f, 0.28f, 0.36f, 0.02f, 0.50f, 0.95f, 0.90f, 0.40f},
    [CMR_C_LGE] = {0.0f, 0.55f, 0.07f, 0.025f, 0.26f, 0.33f, 0.02f, 0.30f, 0.06f, 0.40f, 0.45f},
    [CMR_C_PSIR] = {0.0f, 0.45f, -0.25f, -0.10f, 0.05f, 0.12f, 0.0f, 0.20f, -0.8f, 0.35f, 0.38f},
    [CMR_C_STIR] = {0.0f, 0.05f, 0.18f, 0.04f, 0.22f, 0.45f, 0.0f, 0.18f, 0.90f, 0.04f, 0.07f},
    [CMR_C_LOC] = {0.0f, 0.70f, 0.22f, 0.05f, 0.30f, 0.35f, 0.02f, 0.45f, 0.85f, 0.85f, 0.60f},
    [CMR_C_PC] = {0.0f, 0.65f, 0.24f, 0.04f, 0.30f, 0.35f, 0.02f, 0.45f, 0.50f, 0.95f, 0.45f},
};

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

void cmr_body_draw(cmr_rng *r, double bs, const cmr_heart_params *hp, cmr_body *b)
{
    b->ax = cmr_rng_range(r, 150, 175) * bs;
    b->ay = cmr_rng_range(r, 100, 120) * bs;
    b->subfat_mm = cmr_rng_range(r, 6, 26) * bs;
    b->muscle_mm = cmr_rng_range(r, 9, 14);
    b->z_dome = hp->origin[2] - 0.64 * hp->L_ed - cmr_rng_range(r, 8, 18);
    b->liver_lift = cmr_rng_range(r, 10, 25);
    b->spine_y = b->ay - cmr_rng_range(r, 38, 46);
    b->aorta_x = cmr_rng_range(r, 18, 28);
    b->aorta_y = b->spine_y - cmr_rng_range(r, 16, 22);
}

static inline float ellipse_d(float x, float y, float ax, float ay)
{
    float e = sqrtf((x / ax) * (x / ax) + (y / ay) * (y / ay));
    float len = sqrtf(x * x + y * y);
    return e > 1e-6f ? len * (1 - 1 / e) : -fminf(ax, ay);
}

static float body_value(const cmr_body *b, const float *tab, const double p[3], float soft)
{
    float x = (float)p[0], y = (float)p[1], z = (float)p[2];
    float ax = (float)b->ax, ay = (float)b->ay;
    float d = ellipse_d(x, y, ax, ay);
    if (d > soft)
        return tab[B_AIR];
    float I = tab[B_AIR];
    I = paint(I, alpha_of(d, soft), tab[B_SUBFAT]);
    float fat = (float)b->subfat_mm, mus = (float)b->muscle_mm;
    float d2 = ellipse_d(x, y, ax - fat, ay - fat * 0.8f);
    I = paint(I, alpha_of(d2, soft), tab[B_MUSCLE]);
    float d3 = ellipse_d(x, y, ax - fat - mus, ay - (fat * 0.8f + mus));
    /* The diaphragm domes; the right side (patient right is -x) sits higher. */
    float zd = (float)b->z_dome - 0.0011f * x * x + (float)b->liver_lift * clampf(-x / 40.f, 0.f, 1.f);
    float below = alpha_of(z - zd, soft * 2);
    float inner = alpha_of(d3, soft);
    if (inner > 0) {
        float lung = tab[B_LUNG];
        /* Mediastinum: a band of fat and vessels in front of the spine. */
        float med = alpha_of(fabsf(x - 5.f) - 18.f, 6.f) * alpha_of(-(y + ay * 0.45f), 8.f);
        lung = paint(lung, med, tab[B_MEDIAST]);
        float abd = x < 35 ? tab[B_LIVER] : (y < -10 && z > zd - 40 ? tab[B_GAS] : tab[B_SPLEEN]);
        float in = paint(lung, below, abd);
        I = paint(I, inner, in);
    }
    float sy = (float)b->spine_y;
    I = paint(I, alpha_of(sqrtf(x * x + (y - sy) * (y - sy)) - 17.f, soft), tab[B_MARROW]);
    I = paint(I, alpha_of(sqrtf(x * x + (y - sy - 24) * (y - sy - 24)) - 7.f, soft), tab[B_CSF]);
    float dx = x - (float)b->aorta_x, dy = y - (float)b->aorta_y;
    if (z > zd - 200)
        I = paint(I, alpha_of(sqrtf(dx * dx + dy * dy) - 11.f, soft), tab[B_AORTA]);
    return I;
}

void cmr_plane_ipp(const cmr_plane *pl, double ipp[3])
{
    for (int i = 0; i < 3; i++)
        ipp[i] = pl->centre[i] - 0.5 * (pl->cols - 1) * pl->ps * pl->row[i] - 0.5 * (pl->rows - 1) * pl->ps * pl->col[i];
}

void cmr_plane_normal(const cmr_plane *pl, double n[3])
{
    n[0] = pl->row[1] * pl->col[2] - pl->row[2] * pl->col[1];
    n[1] = pl->row[2] * pl->col[0] - pl->row[0] * pl->col[2];
    n[2] = pl->row[0] * pl->col[1] - pl->row[1] * pl->col[0];
}

/* Smooth sensitivity of an anterior and a posterior coil array. */
static float coil_bias(const cmr_body *b, const double p[3], double amp)
{
    double ya = -b->ay - 10, yp = b->ay + 10, s = 1.0 / (2 * 120.0 * 120.0);
    double x = p[0] - 30;
    double fa = exp(-((p[1] - ya) * (p[1] - ya) + 0.5 * x * x) * s);
    double fp = 0.7 * exp(-((p[1] - yp) * (p[1] - yp) + 0.5 * x * x) * s);
    return (float)(1 - amp + amp * 1.6 * (fa + fp));
}

/* Heart-frame coordinates of pixel (j, i) (fractional allowed) moved off
 * along the plane normal. */
static inline void heart_q(const cmr_heart_params *hp, const double ho[3], const double ipp[3], const cmr_plane *pl,
                           const double nrm[3], double j, double i, double off, double q[3])
{
    double p[3];
    for (int k = 0; k < 3; k++)
        p[k] = ipp[k] + j * pl->ps * pl->col[k] + i * pl->ps * pl->row[k] + off * nrm[k] - ho[k];
    for (int a = 0; a < 3; a++)
        q[a] = hp->axis[a][0] * p[0] + hp->axis[a][1] * p[1] + hp->axis[a][2] * p[2];
}

/* The run [i0, i1) of pixels whose q0 + i dq lies strictly inside the box. */
static void box_run(const cmr_heart *h, const double q0[3], const double dq[3], int n, int *i0, int *i1)
{
    double lo = 0, hi = n;
    for (int a = 0; a < 3; a++) {
        if (fabs(dq[a]) < 1e-12) {
            if (!(q0[a] > h->box_lo[a] && q0[a] < h->box_hi[a]))
                lo = hi = 0;
            continue;
        }
        double t0 = (h->box_lo[a] - q0[a]) / dq[a], t1 = (h->box_hi[a] - q0[a]) / dq[a];
        if (t0 > t1) {
            double t = t0;
            t0 = t1, t1 = t;
        }
        lo = fmax(lo, t0);
        hi = fmin(hi, t1);
    }
    /* One pixel of slack each way; the box is generous anyway. */
    *i0 = hi <= lo ? 0 : (int)fmax(0, floor(lo) - 1);
    *i1 = hi <= lo ? 0 : (int)fmin(n, ceil(hi) + 1);
}

enum { TILE = 8 };

/* Marks the TILE x TILE tiles of a (rows x cols) grid of spacing `step`
 * pixels, off the plane by `off` mm, that the heart cannot touch. */
static void clear_tiles(const cmr_heart *h, const cmr_heart_phase *ph, const double ho[3], const double ipp[3],
                        const cmr_plane *pl, const double nrm[3], int rows, int cols, double step, double off,
                        float soft, unsigned char *skip)
{
    int ntx = (cols + TILE - 1) / TILE, nty = (rows + TILE - 1) / TILE;
    /* Half-diagonal of a tile from its centre, plus a millimetre for rounding. */
    float radius = (float)((TILE - 1) * 0.5 * M_SQRT2 * step * pl->ps + 1.0);
    for (int ty = 0; ty < nty; ty++)
        for (int tx = 0; tx < ntx; tx++) {
            double q[3];
            heart_q(&h->p, ho, ipp, pl, nrm, step * (ty * TILE + 0.5 * (TILE - 1)),
                    step * (tx * TILE + 0.5 * (TILE - 1)), off, q);
            skip[ty * ntx + tx] = cmr_heart_clear(h, ph, q, soft) > radius;
        }
}

static int plane_eq(const cmr_plane *a, const cmr_plane *b)
{
    for (int k = 0; k < 3; k++)
        if (a->centre[k] != b->centre[k] || a->row[k] != b->row[k] || a->col[k] != b->col[k])
            return 0;
    return a->ps == b->ps && a->rows == b->rows && a->cols == b->cols;
}

void cmr_render_cache_free(cmr_render_cache *c)
{
    if (!c)
        return;
    free(c->bg);
    memset(c, 0, sizeof *c);
}

static inline float lerp2(const float *g, size_t r0, size_t r1, int gi, float wi, float wj)
{
    return (g[r0 + gi] * (1 - wi) + g[r0 + gi + 1] * wi) * (1 - wj) + (g[r1 + gi] * (1 - wi) + g[r1 + gi + 1] * wi) * wj;
}

int cmr_render(const cmr_scene *sc, const cmr_plane *pl, const cmr_render_opts *o, cmr_rng *r, uint16_t *out,
               float *buf)
{
    if (o->contrast < 0 || o->contrast >= CMR_C_COUNT || pl->rows <= 0 || pl->cols <= 0)
        return cmr_fail(CMR_EINVAL, "render: bad contrast %d or matrix %dx%d", o->contrast, pl->rows, pl->cols);
    const cmr_heart *h = sc->heart;
    const cmr_heart_params *hp = &h->p;
    float htab[CMR_T_COUNT_HEART];
    memcpy(htab, heart_tab[o->contrast], sizeof htab);
    float scar_gain = 0;
    if (o->contrast == CMR_C_LGE || o->contrast == CMR_C_PSIR) {
        scar_gain = 1;
        if (hp->lge_dark_blood) {
            /* Amyloid: blood nulls before myocardium, myocardium never nulls. */
            htab[CMR_T_BLOOD] = htab[CMR_T_BLOOD2] = 0.08f;
            htab[CMR_T_MYO] = 0.30f;
            htab[CMR_T_SCAR] = 0.80f;
        }
    } else if (o->contrast == CMR_C_STIR && hp->edema) {
        scar_gain = 0.8f;
    }
    const float *btab = body_tab[o->contrast];
    cmr_heart_phase ph;
    cmr_heart_phase_at(h, o->t, &ph);

    double ipp[3], nrm[3];
    cmr_plane_ipp(pl, ipp);
    cmr_plane_normal(pl, nrm);
    float soft = (float)pl->ps;
    double ho[3];
    for (int i = 0; i < 3; i++)
        ho[i] = hp->origin[i] + o->shift[i];

    /* The body background varies over centimetres except at its edges, so it
     * is evaluated on a grid of every other pixel and interpolated; the
     * heart, where detail matters, is evaluated at every pixel. */
    int bw = pl->cols / 2 + 2, bh = pl->rows / 2 + 2;
    int thick = o->supersample > 1 && pl->thick > 0;
    size_t gn = (size_t)bw * (size_t)bh;
    float *bg = malloc(sizeof(float) * gn * (thick ? 3 : 1));
    /* Tile flags for the full-resolution grid, which has the most tiles. */
    unsigned char *skip = malloc((size_t)((pl->rows + TILE - 1) / TILE) * (size_t)((pl->cols + TILE - 1) / TILE) + 1);
    if (!bg || !skip) {
        free(bg);
        free(skip);
        return cmr_fail(CMR_ENOMEM, "render: out of memory");
    }
    cmr_render_cache *cache = sc->cache;
    if (cache && cache->valid && cache->contrast == o->contrast && plane_eq(&cache->pl, pl)) {
        memcpy(bg, cache->bg, sizeof(float) * gn);
    } else {
        for (int gj = 0; gj < bh; gj++)
            for (int gi = 0; gi < bw; gi++) {
                double p[3];
                for (int k = 0; k < 3; k++)
                    p[k] = ipp[k] + 2.0 * gi * pl->ps * pl->row[k] + 2.0 * gj * pl->ps * pl->col[k];
                bg[(size_t)gj * bw + gi] = body_value(sc->body, btab, p, 2 * soft);
            }
        if (cache) {
            cache->valid = 0;
            if (cache->cap < gn) {
                float *nb = realloc(cache->bg, sizeof(float) * gn);
                if (nb)
                    cache->bg = nb, cache->cap = gn;
            }
            if (cache->cap >= gn) {
                memcpy(cache->bg, bg, sizeof(float) * gn);
                cache->pl = *pl;
                cache->contrast = o->contrast;
                cache->valid = 1;
            }
        }
    }
    /* Slice profile: a thick slice sees the heart through its thickness,
     * which blurs the apex, the base and every surface oblique to the plane.
     * Samples at +-thick/3 (weight 1/4 each, the centre 1/2: a smooth
     * profile) are evaluated on the half-resolution grid with a doubled edge
     * width and interpolated: the off-centre planes only contribute blur, so
     * they need not be sharp, and this costs half a full-resolution pass. */
    float w_centre = 1.f;
    float *side[2] = {NULL, NULL};
    if (thick) {
        w_centre = 0.5f;
        for (int s = 0; s < 2; s++) {
            double off = (s == 0 ? -1.0 : 1.0) * pl->thick / 3.0;
            side[s] = bg + gn * (size_t)(1 + s);
            memcpy(side[s], bg, sizeof(float) * gn);
            clear_tiles(h, &ph, ho, ipp, pl, nrm, bh, bw, 2.0, off, 2 * soft, skip);
            for (int gj = 0; gj < bh; gj++) {
                double q[3], q1[3], dq[3];
                heart_q(hp, ho, ipp, pl, nrm, 2.0 * gj, 0, off, q);
                heart_q(hp, ho, ipp, pl, nrm, 2.0 * gj, 2.0, off, q1);
                for (int a = 0; a < 3; a++)
                    dq[a] = q1[a] - q[a];
                int i0, i1;
                box_run(h, q, dq, bw, &i0, &i1);
                const unsigned char *sk = skip + (size_t)(gj / TILE) * ((bw + TILE - 1) / TILE);
                for (int gi = i0; gi < i1; gi++) {
                    if (sk[gi / TILE])
                        continue;
                    double qi[3] = {q[0] + gi * dq[0], q[1] + gi * dq[1], q[2] + gi * dq[2]};
                    float *v = &side[s][(size_t)gj * bw + gi];
                    *v = cmr_heart_paint(h, &ph, qi, *v, htab, 2 * soft, scar_gain);
                }
            }
        }
    }
    clear_tiles(h, &ph, ho, ipp, pl, nrm, pl->rows, pl->cols, 1.0, 0.0, soft, skip);
    int ntx = (pl->cols + TILE - 1) / TILE;
    for (int j = 0; j < pl->rows; j++) {
        double q[3], dq[3], q1[3];
        heart_q(hp, ho, ipp, pl, nrm, j, 0, 0, q);
        heart_q(hp, ho, ipp, pl, nrm, j, 1, 0, q1);
        for (int a = 0; a < 3; a++)
            dq[a] = q1[a] - q[a];
        /* q is linear in i: the pixels whose q lies in the heart's box form
         * one run, found once per row instead of tested at every pixel. */
        int i0, i1;
        box_run(h, q, dq, pl->cols, &i0, &i1);
        float *row = buf + (size_t)j * pl->cols;
        size_t r0 = (size_t)(j / 2) * bw, r1 = r0 + bw;
        float wj = (j & 1) ? 0.5f : 0.f;
        for (int i = 0; i < pl->cols; i++) {
            int gi = i / 2;
            float wi = (i & 1) ? 0.5f : 0.f;
            float I = lerp2(bg, r0, r1, gi, wi, wj);
            if (i >= i0 && i < i1 && !skip[(j / TILE) * ntx + i / TILE]) {
                double qi[3] = {q[0] + i * dq[0], q[1] + i * dq[1], q[2] + i * dq[2]};
                I = cmr_heart_paint(h, &ph, qi, I, htab, soft, scar_gain);
            }
            if (thick)
                I = w_centre * I + 0.25f * (lerp2(side[0], r0, r1, gi, wi, wj) + lerp2(side[1], r0, r1, gi, wi, wj));
            row[i] = I;
        }
    }
    free(bg);
    free(skip);

    /* Coil bias on a coarse grid, interpolated: it varies over centimetres. */
    enum { G = 9 };
    float bias[G][G];
    for (int gj = 0; gj < G; gj++)
        for (int gi = 0; gi < G; gi++) {
            double p[3];
            double fi = (double)gi / (G - 1) * (pl->cols - 1), fj = (double)gj / (G - 1) * (pl->rows - 1);
            for (int k = 0; k < 3; k++)
                p[k] = ipp[k] + fi * pl->ps * pl->row[k] + fj * pl->ps * pl->col[k];
            bias[gj][gi] = coil_bias(sc->body, p, o->bias_amp);
        }

    float scale = (float)o->scale, sigma = (float)(o->noise * o->scale), offs = (float)o->offset;
    float vmax = (float)o->max_value;
    int signed_img = o->contrast == CMR_C_PSIR;
    /* Complex noise, smoothed with a [1 2 1] kernel each way: reconstruction
     * zero-fills a smaller acquired matrix, so real image noise is correlated
     * between neighbouring pixels.  The kernel scales sigma by 3/8. */
    size_t npx = (size_t)pl->rows * (size_t)pl->cols;
    float *nz = malloc(sizeof(float) * npx * 2);
    if (!nz)
        return cmr_fail(CMR_ENOMEM, "render: out of memory");
    float *n1 = nz, *n2 = nz + npx;
    float ns_sigma = sigma / 0.375f;
    if (signed_img) {
        for (size_t k = 0; k < npx; k++)
            n1[k] = ns_sigma * cmr_rng_fast_normal(r), n2[k] = 0;
    } else {
        for (size_t k = 0; k < npx; k++)
            cmr_rng_fast_normal2(r, ns_sigma, &n1[k], &n2[k]);
    }
    /* Row-wise passes over copies of the unsmoothed neighbours (the same
     * sums in the same order as a running prev/cur/next): they vectorise. */
    int cols = pl->cols, rows = pl->rows;
    float *tmp = malloc(sizeof(float) * (size_t)cols * 3 + sizeof(float) * 2 * (size_t)cols);
    if (!tmp) {
        free(nz);
        return cmr_fail(CMR_ENOMEM, "render: out of memory");
    }
    float *t0 = tmp, *above = tmp + cols, *saved = tmp + 2 * (size_t)cols;
    float *wi_col = tmp + 3 * (size_t)cols;
    int *i0_col = (int *)(wi_col + cols);
    for (int c = 0; c < 2; c++) {
        float *f = nz + (size_t)c * npx;
        for (int j = 0; j < rows; j++) {
            float *row = f + (size_t)j * cols;
            memcpy(t0, row, sizeof(float) * (size_t)cols);
            row[0] = 0.25f * (t0[0] + 2 * t0[0] + (cols > 1 ? t0[1] : t0[0]));
            for (int i = 1; i < cols - 1; i++)
                row[i] = 0.25f * (t0[i - 1] + 2 * t0[i] + t0[i + 1]);
            if (cols > 1)
                row[cols - 1] = 0.25f * (t0[cols - 2] + 2 * t0[cols - 1] + t0[cols - 1]);
        }
        memcpy(above, f, sizeof(float) * (size_t)cols);
        for (int j = 0; j < rows; j++) {
            float *row = f + (size_t)j * cols;
            const float *below = j + 1 < rows ? f + (size_t)(j + 1) * cols : saved;
            memcpy(saved, row, sizeof(float) * (size_t)cols);
            for (int i = 0; i < cols; i++)
                row[i] = 0.25f * (above[i] + 2 * saved[i] + below[i]);
            float *t = above;
            above = saved;
            saved = t;
        }
    }
    /* The bias grid's column and weight per pixel column, once per image. */
    for (int i = 0; i < cols; i++) {
        float fi = (float)i / (cols - 1) * (G - 1);
        int i0 = (int)fi;
        if (i0 >= G - 1)
            i0 = G - 2;
        i0_col[i] = i0;
        wi_col[i] = fi - i0;
    }
    float *brow = t0, *arow = above;
    for (int j = 0; j < rows; j++) {
        float fj = (float)j / (rows - 1) * (G - 1);
        int j0 = (int)fj;
        if (j0 >= G - 1)
            j0 = G - 2;
        float wj = fj - j0;
        const float *src = buf + (size_t)j * cols;
        const float *gsrc = NULL;
        if (o->ghost > 0) {
            int gj = ((j + o->ghost_rows) % rows + rows) % rows;
            gsrc = buf + (size_t)gj * cols;
        }
        for (int i = 0; i < cols; i++) {
            int i0 = i0_col[i];
            float wi = wi_col[i];
            brow[i] = (bias[j0][i0] * (1 - wi) + bias[j0][i0 + 1] * wi) * (1 - wj) +
                      (bias[j0 + 1][i0] * (1 - wi) + bias[j0 + 1][i0 + 1] * wi) * wj;
        }
        if (gsrc) {
            float ghost = (float)o->ghost;
            for (int i = 0; i < cols; i++)
                arow[i] = (src[i] + ghost * gsrc[i]) * (brow[i] * scale);
        } else {
            for (int i = 0; i < cols; i++)
                arow[i] = src[i] * (brow[i] * scale);
        }
        const float *r1 = n1 + (size_t)j * cols, *r2 = n2 + (size_t)j * cols;
        uint16_t *o16 = out + (size_t)j * cols;
        if (signed_img) {
            for (int i = 0; i < cols; i++) {
                float v = offs + arow[i] + r1[i];
                v = clampf(v + 0.5f, 0.f, vmax);
                o16[i] = (uint16_t)v;
            }
        } else {
            /* Magnitude images: Rician noise from the complex channels. */
            for (int i = 0; i < cols; i++) {
                float a = arow[i];
                float v = offs + sqrtf((a + r1[i]) * (a + r1[i]) + r2[i] * r2[i]);
                v = clampf(v + 0.5f, 0.f, vmax);
                o16[i] = (uint16_t)v;
            }
        }
    }
    free(tmp);
    free(nz);
    return 0;
}
