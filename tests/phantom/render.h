/* Cuts image planes through the body and heart model and turns tissue into
 * scanner-like pixels: contrast per sequence, coil bias, partial volume,
 * Rician noise, breath-hold misregistration and ghosting. */
#ifndef CMR_PHANTOM_RENDER_H
#define CMR_PHANTOM_RENDER_H

#include <stddef.h>
#include <stdint.h>

#include "heart.h"
#include "phantom_rng.h"

typedef struct cmr_body {
    double ax, ay;        /* body ellipse semi-axes (x left, y posterior), mm */
    double subfat_mm, muscle_mm;
    double z_dome;        /* left hemidiaphragm dome, patient z */
    double liver_lift;    /* right dome above the left */
    double spine_y, aorta_x, aorta_y;
} cmr_body;

void cmr_body_draw(cmr_rng *r, double body_scale, const cmr_heart_params *hp, cmr_body *b);

typedef struct cmr_plane {
    double centre[3], row[3], col[3]; /* unit row / column directions, LPS */
    double ps;                        /* pixel spacing, mm */
    int rows, cols;
    double thick;
} cmr_plane;

/* Image Position (Patient): the centre of the first transmitted pixel. */
void cmr_plane_ipp(const cmr_plane *pl, double ipp[3]);
void cmr_plane_normal(const cmr_plane *pl, double n[3]);

enum cmr_contrast {
    CMR_C_CINE,  /* balanced SSFP */
    CMR_C_LGE,   /* magnitude inversion recovery */
    CMR_C_PSIR,  /* phase-sensitive IR, signed around an offset */
    CMR_C_STIR,  /* T2 dark-blood STIR */
    CMR_C_LOC,   /* localizer SSFP */
    CMR_C_PC,    /* phase-contrast magnitude: spoiled gradient echo, inflow-bright blood */
    CMR_C_COUNT
};

typedef struct cmr_render_opts {
    int contrast;
    double t;            /* cardiac phase, fraction of RR */
    double scale;        /* stored value of unit signal */
    double noise;        /* noise sigma relative to unit signal */
    double offset;       /* added to stored values (PSIR) */
    int max_value;       /* clamp, e.g. 4095 for 12-bit */
    double shift[3];     /* heart displacement (breath-hold), LPS mm */
    double bias_amp;     /* coil sensitivity variation, 0..1 */
    double ghost;        /* motion ghost amplitude, 0 for none */
    int ghost_rows;      /* ghost displacement along the phase-encode (column) direction */
    int supersample;     /* 1: the centre plane only; >1: slice profile through the thickness */
} cmr_render_opts;

/* The body background of the last plane rendered, reused while the plane
 * and contrast stay the same: every phase of a cine slice shares it (the
 * breath-hold shift moves the heart, not the body). */
typedef struct cmr_render_cache {
    cmr_plane pl;
    int contrast, valid;
    float *bg;
    size_t cap;
} cmr_render_cache;

void cmr_render_cache_free(cmr_render_cache *c);

typedef struct cmr_scene {
    const cmr_heart *heart;
    const cmr_body *body;
    cmr_render_cache *cache; /* optional */
} cmr_scene;

/* Renders one image into out (rows*cols), using scratch of the same count
 * of floats. */
int cmr_render(const cmr_scene *sc, const cmr_plane *pl, const cmr_render_opts *o, cmr_rng *r, uint16_t *out,
               float *scratch);

#endif
