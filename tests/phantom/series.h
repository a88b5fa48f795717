/* The DICOM series of one study: geometry of each view, rendering, and
 * headers in the style of the site's vendor. */
#ifndef CMR_PHANTOM_SERIES_H
#define CMR_PHANTOM_SERIES_H

#include <stddef.h>

#include "heart.h"
#include "phantom.h"

typedef struct cmr_series_ctx cmr_series_ctx;

int cmr_series_ctx_new(const cmr_phantom_opts *o, cmr_study *s, const cmr_heart *h, cmr_series_ctx **out);
void cmr_series_ctx_free(cmr_series_ctx *cx);
int cmr_series_write_all(cmr_series_ctx *cx);
/* A Basic Text SR report as its own series in the study. */
int cmr_series_write_sr(cmr_series_ctx *cx, const char *findings, const char *impression);
/* Chooses an image file to damage; its path relative to OUT goes to rel. */
/* Position of SAX slice k (0 = most basal) along the LV axis, mm from the
 * end-diastolic base plane (negative towards the apex). */
double cmr_series_sax_ws(const cmr_study *s, int k);
int cmr_series_pick_victim(cmr_series_ctx *cx, cmr_rng *r, char *rel, size_t n);

#endif
