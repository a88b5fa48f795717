/* Internals shared by the series writers: series.c (views, single-frame
 * objects), series_enh.c (Enhanced MR multi-frame), flow.c (phase-contrast
 * flow) and series_sr.c (Basic Text SR). */
#ifndef CMR_PHANTOM_SERIES_INT_H
#define CMR_PHANTOM_SERIES_INT_H

#include <stddef.h>

#include "dicom_writer.h"
#include "phantom.h"
#include "render.h"
#include "series.h"

#define MR_STORAGE "1.2.840.10008.5.1.4.1.1.4"
#define ENH_MR_STORAGE "1.2.840.10008.5.1.4.1.1.4.1"
#define BASIC_TEXT_SR "1.2.840.10008.5.1.4.1.1.88.11"

/* K_FLOW is last so that adding it kept the other kinds' numbers. */
enum kind { K_LOC, K_CINE_SAX, K_CINE_4CH, K_CINE_2CH, K_CINE_3CH, K_STIR, K_LGE_SAX, K_LGE_4CH, K_LGE_2CH, K_SR, K_FLOW, K_COUNT };
extern const char *const kind_key[K_COUNT];
extern const char *const manufacturer[CMR_V_COUNT];

/* A flow frame is the magnitude or the phase (velocity) image. */
enum { FLOW_NONE, FLOW_MAG, FLOW_PHASE };

typedef struct img_spec {
    cmr_plane pl;
    double t, trigger_ms;
    double shift[3];
    double ghost;
    int slice, phase;
    int flow;           /* FLOW_* */
} img_spec;

struct cmr_series_ctx {
    const cmr_phantom_opts *o;
    cmr_study *s;
    const cmr_heart *h;
    cmr_body body;
    cmr_scene scene;
    cmr_render_cache cache;
    cmr_rng rr, ur;
    uint16_t *px;
    float *scratch;
    size_t px_cap;
    int series_no, file_no, desc_pick;
    int minutes;
    double scale, noise, bias;
    double inplane[2];
    double slice_shift[16][3];
    int arr_slice[2];
    char victims[64][600];
    int nvictims;
    double venc;        /* flow: cm/s */
    double flow_peak;   /* flow: peak systolic velocity in the root, cm/s */
    float *flow_mag;    /* flow: noise-free magnitude of every phase, for the phase noise */
};

typedef struct series_def {
    int kind, contrast, cine;
    const char *desc;
    int number;
    char uid[CMR_UID_LEN];
    char desc_buf[64];  /* when desc is made up (a Siemens phase series) */
    double tr, te, ti, flip;
} series_def;

#define P(tag, val)                                                                                                    \
    do {                                                                                                               \
        if ((rc = cmr_dcm_put(d, tag, val)))                                                                           \
            goto fail;                                                                                                 \
    } while (0)
#define PF(tag, ...)                                                                                                   \
    do {                                                                                                               \
        if ((rc = cmr_dcm_putf(d, tag, __VA_ARGS__)))                                                                  \
            goto fail;                                                                                                 \
    } while (0)
#define T(g, e) CMR_TAG(0x##g, 0x##e)

void series_fmt_vec(char *buf, size_t n, const double *v, int k);
/* HHMMSS.FFF of the study time plus minutes and seconds. */
void series_fmt_time(char out[16], const char *study_time, int add_min, double add_s);
void series_lps_of(const cmr_heart *h, double a, double b, double c, double out[3]);
int series_ensure_buf(cmr_series_ctx *cx, size_t n);
int series_put_common(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const char *modality,
                      const char *sop_class, const char *sop_uid, int instance);
int series_put_image(cmr_series_ctx *cx, cmr_dcm *d, const series_def *sd, const img_spec *im);
int series_file_path(cmr_series_ctx *cx, const series_def *sd, int instance, char *rel, size_t n);
void series_set_plane(cmr_series_ctx *cx, cmr_plane *pl, const double centre_h[3], double ra, double rb, double rc_,
                      double ca, double cb, double cc);
void series_next_series(cmr_series_ctx *cx, series_def *sd, int kind, int contrast, int cine);
int series_emit_series(cmr_series_ctx *cx, series_def *sd, const img_spec *imgs, int n);
/* Fills the render options every image of the series shares. */
void series_render_opts(cmr_series_ctx *cx, const series_def *sd, const img_spec *im, cmr_render_opts *ro);

/* Enhanced MR: the whole series as one multi-frame object (series_enh.c). */
int series_emit_enhanced(cmr_series_ctx *cx, series_def *sd, const img_spec *imgs, int n);
/* Phase-contrast flow through the ascending aorta (flow.c). */
int series_write_flow(cmr_series_ctx *cx);
const char *series_flow_image_type(int vendor, int part);
/* Venc where GE and Philips keep it: in their private groups. */
int series_put_flow_private(cmr_series_ctx *cx, cmr_dcm *d);
/* Renders the magnitude or phase image of a flow frame into cx->px. */
int series_render_flow(cmr_series_ctx *cx, const series_def *sd, const img_spec *im);

#endif
