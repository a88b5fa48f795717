/* Private to indexer/: the parts of the study -> model input step
 * (tensor.c, tensor_study.c, window.c), exposed so that tests can check
 * each one against the independent numpy implementation (tests/reference/tensor_reference.py).
 * docs/model-input.md defines every step; the two must not drift apart.
 *
 * Two layers:
 *   1. cmr_tensor_from_source: frames already in memory (float pixel values
 *      after the modality rescale) -> tensor.  Pure, no I/O.
 *   2. cmr_study_tensor_with: choose the series and images of a classified
 *      study, decode only the images the tensor will hold, call layer 1.
 *      cmr_study_tensor is this with the DICOM reader. */
#ifndef CMR_TENSOR_INTERNAL_H
#define CMR_TENSOR_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_indexer.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- window.c: a series' values -> 8 bits ------------------------------------------- */

#define CMR_WINDOW_LO_PCT 1.0
#define CMR_WINDOW_HI_PCT 99.5

typedef struct cmr_window {
    float lo, hi;
    /* Integer fast path: every value seen was an integer in [base, base + n_lut),
     * and lut[v - base] is its 8-bit value (lutf: the same as float).  NULL
     * when some value was not. */
    uint8_t *lut;
    float *lutf;
    int64_t base;
    size_t n_lut;
} cmr_window;

/* numpy's percentile(..., method='inverted_cdf') index into the sorted n
 * values (n > 0), with numpy's float64 arithmetic. */
size_t cmr_percentile_index(size_t n, double pct);

/* The window of n_images images (image i holds counts[i] finite values):
 * lo and hi are the CMR_WINDOW_LO_PCT / HI_PCT percentiles of all their
 * values together.  force_generic skips the integer histogram (tests).
 * cmr_window_free releases it (also after a failure). */
int cmr_window_compute(cmr_window *w, size_t n_images, const float *const *images, const size_t *counts,
                       int force_generic);
/* One image that took part in cmr_window_compute, to 8 bits; _grey: the
 * same values as float, what resampling takes. */
void cmr_window_apply(const cmr_window *w, const float *src, size_t n, uint8_t *dst);
void cmr_window_apply_grey(const cmr_window *w, const float *src, size_t n, float *dst);
/* round-half-up(clip((v - lo) / (hi - lo), 0, 1) * 255), in double; 0 when hi <= lo. */
uint8_t cmr_window_value(double v, double lo, double hi);
void cmr_window_free(cmr_window *w);

/* Bounds that keep every size computation far from overflow (also
 * MAX_FRAMES and MAX_SIZE in tensor.c): an image's rows and columns. */
#define CMR_MAX_IMAGE_SIDE 65536

/* ---- tensor.c: sampling --------------------------------------------------------------- */

/* Frozen-in-Time's test-time 'uniform' sampling of `frames` indices from a
 * video of n frames: min(n, frames) indices written to idx, returned. */
size_t cmr_sample_segments(size_t n, unsigned frames, size_t *idx);
/* One part of CMR_RECIPE_CINE_LGE: the segment sampling when n >= frames,
 * else frame j shows source floor(j * n / frames).  frames indices (0 when
 * n is 0) written to idx, returned. */
size_t cmr_sample_part(size_t n, unsigned frames, size_t *idx);
/* The phase shown at cine frame i of c when the slice has p phases: floor(i*p/c). */
unsigned cmr_cine_phase(unsigned i, unsigned p, unsigned c);

/* ---- tensor.c: spatial resampling --------------------------------------------------------- */

/* rows x cols 8-bit grey -> resize (shorter side to `resize`), centre crop
 * resize x resize, resize to size x size: the two antialiased bilinear
 * resizes and the crop folded into one separable operator per axis. */
typedef struct cmr_resampler cmr_resampler;
int cmr_resampler_new(int rows, int cols, unsigned resize, unsigned size, cmr_resampler **out);
/* src: rows*cols grey levels (the 8-bit values as float); dst: size*size. */
void cmr_resampler_run(cmr_resampler *r, const float *src, float *dst);
void cmr_resampler_free(cmr_resampler *r);
/* The output size of the first resize, and the crop's offsets in it. */
void cmr_resize_geometry(int rows, int cols, unsigned resize, int *rows1, int *cols1, int *top, int *left);

/* ---- layer 1: in-memory frames -> tensor ---------------------------------------------------- */

typedef struct cmr_src_image {
    const float *pixels; /* rows*cols values; may be NULL if no sampled frame shows it */
    int rows, cols;
} cmr_src_image;

/* The images of one series (or one stack of single-slice series): windowed together. */
typedef struct cmr_src_group {
    size_t n_images;
    const cmr_src_image *images;
} cmr_src_group;

#define CMR_SRC_BLACK (-1)
typedef struct cmr_src_frame {
    int group; /* CMR_SRC_BLACK: a black frame (8-bit 0, normalised) */
    int image; /* index in the group */
} cmr_src_frame;

typedef struct cmr_tensor_source {
    size_t n_groups;
    const cmr_src_group *groups;
    size_t n_frames; /* the source video, before sampling to spec->frames */
    const cmr_src_frame *frames;
    /* The recipe's choice of source frames, n_sampled <= spec->frames; NULL:
     * cmr_sample_segments(n_frames, spec->frames). */
    const size_t *sampled;
    size_t n_sampled;
} cmr_tensor_source;

int cmr_spec_check(const cmr_input_spec *spec);

/* out: cmr_tensor_values(spec) floats.  windows (n_groups entries, may be
 * NULL) receives each group's lo and hi (both 0 for a group no sampled
 * frame shows). */
int cmr_tensor_from_source(const cmr_tensor_source *src, const cmr_input_spec *spec, float *out, float (*windows)[2]);

/* ---- layer 2 (tensor_study.c): study -> tensor -------------------------------------------- */

/* Decodes every frame of a file: pixels[(f * rows + r) * cols + c], malloc'ed. */
typedef int (*cmr_pixel_reader)(void *user, const char *path, int *rows, int *cols, int *frames, float **pixels);
/* The DICOM one (cmr_dicom_read_pixels), what cmr_study_tensor uses. */
int cmr_tensor_dicom_reader(void *user, const char *path, int *rows, int *cols, int *frames, float **pixels);

/* The recipe's view slots, in video order (docs/model-input.md). */
enum {
    CMR_SLOT_CINE_LAX,
    CMR_SLOT_CINE_SAX,
    CMR_SLOT_LGE_SAX,
    CMR_SLOT_LGE_4CH,
    CMR_SLOT_LGE_2CH,
    CMR_SLOT_LGE_3CH,
    CMR_SLOT_COUNT
};

/* What went where, for tests: per output frame, its slot and image
 * (image NULL: a black frame of a missing view; slot -1: zero padding). */
typedef struct cmr_tensor_trace {
    const cmr_series *series[CMR_SLOT_COUNT]; /* the series each slot used (a stack: its middle or first) */
    int n_slices[CMR_SLOT_COUNT];             /* slices of the chosen stack (SAX slots) */
    float window[CMR_SLOT_COUNT][2];          /* lo, hi */
    size_t n_source;                          /* source frames */
    unsigned n_out;                           /* spec->frames */
    int *slot;                                /* n_out entries (malloc'ed; free with cmr_tensor_trace_free) */
    const cmr_image **image;
    size_t *source_index;                     /* index in the source video */
} cmr_tensor_trace;
void cmr_tensor_trace_free(cmr_tensor_trace *t);

int cmr_study_tensor_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                          float **tensor, cmr_tensor_info *info, cmr_tensor_trace *trace);
/* Into the caller's buffer of cmr_tensor_values(spec) floats (its content is
 * undefined after a failure): a worker that reuses one buffer saves the page
 * faults of a fresh 38 MB per study. */
int cmr_study_tensor_into_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                               float *out, cmr_tensor_info *info);

/* Proposed for cmr_indexer.h (public): cmr_study_tensor_into_with and the DICOM reader. */

#ifdef __cplusplus
}
#endif

#endif
