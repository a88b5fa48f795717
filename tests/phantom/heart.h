/* Analytic beating heart for the phantom.
 *
 * The LV is a truncated prolate ellipsoid shell in a heart frame (u lateral,
 * v anterior, w from apex to base, origin at the ED base centre) whose wall
 * thickness, regional motion and scar are tables over (angle, level).  The RV
 * is an ellipsoid wrapped round the septum, the atria and aortic root sit
 * above the base, and a pericardial envelope surrounds it all.  Every view is
 * cut from this one model, so SAX and LAX agree. */
#ifndef CMR_PHANTOM_HEART_H
#define CMR_PHANTOM_HEART_H

#include "phantom_rng.h"

enum cmr_dx {
    CMR_DX_NORMAL,
    CMR_DX_HCM,
    CMR_DX_AMYLOID,
    CMR_DX_DCM,
    CMR_DX_ICM,
    CMR_DX_MYOCARDITIS,
    CMR_DX_SARCOID,
    CMR_DX_LVNC,
    CMR_DX_FABRY,
    CMR_DX_ARVC,
    CMR_DX_COUNT
};

/* Stable short keys used in truth.json. */
extern const char *const cmr_dx_key[CMR_DX_COUNT];

/* Gaussian bump over (theta rad, z in [-1,0]: 0 base, -1 apex). */
typedef struct cmr_bump {
    float theta, sig_theta, z, sig_z, amp;
} cmr_bump;

/* LGE region: angular gaussian, level window, transmural depth window
 * (0 endocardium .. 1 epicardium), peak enhancement 0..1. */
typedef struct cmr_lge_blob {
    float theta, sig_theta, z0, z1, d0, d1, amp;
} cmr_lge_blob;

#define CMR_MAX_BUMPS 8
#define CMR_MAX_LGE 14
#define CMR_NT 96 /* table angles */
#define CMR_NZ 48 /* table levels */
#define CMR_ND 8  /* table depths (scar) */

typedef struct cmr_heart_params {
    int dx;
    int severity; /* 0 none, 1 mild, 2 moderate, 3 severe */
    double R_ed, L_ed;   /* LV endocardial radius at base / length, ED, mm */
    double wall_mm;      /* baseline ED wall thickness */
    double T_apex;
    cmr_bump thick[CMR_MAX_BUMPS];
    int nthick;
    cmr_bump hypo[CMR_MAX_BUMPS]; /* 1 = akinetic, >1 dyskinetic */
    int nhypo;
    double global_motion;         /* 1 normal; scales all regional motion */
    cmr_lge_blob lge[CMR_MAX_LGE];
    int nlge;
    char lge_pattern[48];
    char territory[8];
    double lvef_target, rvef_target, long_short;
    double rv_scale, rv_wall, rv_bulge, rv_bulge_theta;
    double la_scale, ra_scale;
    double effusion_mm, fat_mm;
    double nc_ratio, nc_compact_mm; /* LV non-compaction, 0 if none */
    int apical_variant;
    int lge_dark_blood;       /* amyloid: blood nulled with myocardium on LGE */
    int edema;                /* acute inflammation, bright on T2 STIR */
    double hr_bpm;
    double es_frac;           /* end-systole as fraction of RR */
    double axis[3][3];        /* rows u, v, w as unit vectors in patient LPS */
    double origin[3];         /* LV base centre at ED, patient LPS mm */
    /* derived after cmr_heart_build */
    double a_contract;
    double lvef, rvef, lvedv_ml, lvesv_ml, rvedv_ml, rvesv_ml;
    double max_wall_mm, septal_wall_mm, lateral_wall_mm;
    double nc_ratio_measured;
} cmr_heart_params;

typedef struct cmr_heart {
    cmr_heart_params p;
    float thick[CMR_NT][CMR_NZ];
    float motion[CMR_NT][CMR_NZ];
    float nc[CMR_NT][CMR_NZ];       /* non-compacted layer fraction of wall */
    float scar[CMR_NT][CMR_NZ][CMR_ND];
    float trab_phase[CMR_NZ];
    double rv_a; /* RV contraction amplitude solved for the target RVEF */
    double box_lo[3], box_hi[3]; /* heart-frame bounds of everything painted */
    float lv_reach;              /* radius beyond which the LV cannot paint */
    float t_sept;                /* mid septal ED thickness */
    float lv_max_r;              /* largest epicardial radius in any phase */
    float motion_max;            /* largest |motion| in the table (papillary culling) */
} cmr_heart;

/* Per-phase motion state, derived from time t in [0,1) of the RR interval. */
typedef struct cmr_heart_phase {
    double t, c, c_rv, L, wc, la_k, ra_k;
    double L_epi;
} cmr_heart_phase;

/* Tissue classes the renderer gives intensities to. */
enum cmr_tissue {
    CMR_T_BLOOD,   /* LV blood */
    CMR_T_BLOOD2,  /* RV, atrial, aortic blood */
    CMR_T_MYO,
    CMR_T_SCAR,    /* fully enhanced scar; partial scar mixes with MYO */
    CMR_T_FAT,
    CMR_T_FLUID,
    CMR_T_PERI,
    CMR_T_WALL,    /* thin atrial / aortic wall */
    CMR_T_COUNT_HEART
};

/* Draws patient-level heart parameters for a diagnosis and a body size. */
void cmr_heart_draw(cmr_rng *r, int dx, double body_scale, int female, cmr_heart_params *p);

/* Builds tables, solves contraction for the target EF and measures the
 * realised volumes by sampling the model. */
int cmr_heart_build(cmr_heart *h);

void cmr_heart_phase_at(const cmr_heart *h, double t, cmr_heart_phase *ph);

/* Composites the heart over a background intensity at heart-frame point q
 * (mm); tab gives an intensity per tissue class, soft the edge width (mm)
 * for partial volume.  scar_gain scales enhancement (0 for cine). */
float cmr_heart_paint(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3], float bg,
                      const float *tab, float soft, float scar_gain);

/* A lower bound on the distance from q to anything cmr_heart_paint would
 * change (with that edge width): beyond it the background is untouched. */
float cmr_heart_clear(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3], float soft);

/* Fraction of LV blood at q (for volume measurement). */
float cmr_heart_lv_blood(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3]);
float cmr_heart_rv_blood(const cmr_heart *h, const cmr_heart_phase *ph, const double q[3]);

/* Nonzero when heart-frame point q may be painted by the heart. */
static inline int cmr_heart_inside_box(const cmr_heart *h, const double q[3])
{
    return q[0] > h->box_lo[0] && q[0] < h->box_hi[0] && q[1] > h->box_lo[1] && q[1] < h->box_hi[1] &&
           q[2] > h->box_lo[2] && q[2] < h->box_hi[2];
}

#endif
