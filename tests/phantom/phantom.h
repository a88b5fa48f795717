/* cmr-phantom internals shared by the planner, the series writer, the
 * report writer and the truth writer. */
#ifndef CMR_PHANTOM_H
#define CMR_PHANTOM_H

#include <stddef.h>
#include <stdint.h>

#include "heart.h"
#include "phantom_rng.h"
#include "render.h"

#define CMR_PHANTOM_VERSION "3"
#define CMR_UID_LEN 65

enum cmr_vendor { CMR_V_SIEMENS, CMR_V_GE, CMR_V_PHILIPS, CMR_V_COUNT };

typedef struct cmr_site {
    const char *key;         /* folder and truth name */
    const char *institution;
    int vendor;
    const char *model_15, *model_3;
    const char *software;
    double p3t;              /* share of studies on the 3 T scanner */
    double blank_desc;       /* share of series with a blank description */
    double compress;         /* share of studies stored compressed */
    int compress_ts;         /* the site's usual compressed syntax */
    int per_slice_series;    /* one cine series per SAX slice (some Siemens sites) */
    int layout;              /* 0 tidy, 1 flat, 2 DICOM/Sxxx/Ixxx */
    const char *id_prefix;
} cmr_site;

#define CMR_NSITES 5
extern const cmr_site cmr_sites[CMR_NSITES];

enum cmr_report_kind { CMR_REP_CDA, CMR_REP_TEXT, CMR_REP_SR, CMR_REP_NONE };

/* Planted problems, as bits. */
enum {
    CMR_P_LABEL_NOISE = 1 << 0,   /* report (text and code) names another diagnosis */
    CMR_P_DUPLICATE = 1 << 1,     /* same study sent again under new UIDs */
    CMR_P_NO_LGE = 1 << 2,
    CMR_P_NO_LAX = 1 << 3,
    CMR_P_TRUNCATED = 1 << 4,     /* one file cut short */
    CMR_P_CORRUPT = 1 << 5,       /* one file with a damaged header */
    CMR_P_NO_IMPRESSION = 1 << 6,
    CMR_P_CONTRADICTION = 1 << 7, /* text right, code another diagnosis */
};

typedef struct cmr_phantom_opts {
    const char *out;
    int studies;
    uint64_t seed;
    int threads;
    double label_noise, duplicate, missing_view, corrupt, no_impression, contradiction;
    double multiframe, compress_scale, text_reports, sr_reports, extra_series, flow;
    int dx_only;   /* -1 all, else only that diagnosis (for contact sheets) */
    unsigned dx_exclude; /* bit d: no study of diagnosis d (held-out diagnoses) */
    unsigned site_mask;  /* bit s: site s may be drawn (0: all) */
    int fast;      /* smaller matrices and fewer phases, for quick tests */
} cmr_phantom_opts;

typedef struct cmr_series_info {
    char uid[CMR_UID_LEN];
    char kind[16];   /* truth name: cine_sax, cine_4ch, lge_sax, ... */
    char desc[64];
    int number, nfiles, nframes;
    int enhanced;    /* one Enhanced MR multi-frame object */
} cmr_series_info;

#define CMR_MAX_SERIES 48

typedef struct cmr_study {
    int index;
    int dup_of;              /* index of the original, -1 if none */
    uint64_t render_stream;  /* images: shared by a duplicate and its original */
    uint64_t uid_stream;
    int site, vendor;
    double field_t;
    const char *model;
    char patient_id[40], patient_name[64], birth_date[9], sex[2];
    int age;
    double height_m, weight_kg, body_scale;
    char study_date[9], study_time[7], accession[17];
    char study_uid[CMR_UID_LEN], for_uid[CMR_UID_LEN];
    cmr_heart_params hp;
    int dx, report_dx, code_dx;
    /* protocol */
    int cols, rows, nslices, nphases;
    double ps, thick, gap, ti_ms;
    int psir, multiframe, ts;
    int has_loc, has_stir, has_lax, has_lge, has_flow;
    int arrhythmia, motion_artefact;
    int report_kind;
    unsigned problems;
    char bad_file[512];
    char dir[512];           /* study folder relative to OUT */
    char report_path[512];   /* relative to OUT, "" when none */
    char impression[4096];   /* as written, for truth */
    cmr_series_info series[CMR_MAX_SERIES];
    int nseries;
    size_t bytes;
    int nfiles;
    int es_phase;
    double lv_center[3];     /* LV centre at mid-cavity, LPS, for tests */
} cmr_study;

/* Plans every study serially (all random choices that span studies). */
int cmr_phantom_plan(const cmr_phantom_opts *o, cmr_study *st, int n);
/* Renders and writes one study: DICOM series, report. Thread-safe. */
int cmr_phantom_write_study(const cmr_phantom_opts *o, cmr_study *s);

/* UIDs under 2.25 from the study's UID stream. */
void cmr_uid(cmr_rng *r, char out[CMR_UID_LEN]);

/* Reports. */
typedef struct cmr_dx_code {
    const char *snomed, *snomed_display, *icd10, *icd10_display;
} cmr_dx_code;
extern const cmr_dx_code cmr_dx_codes[CMR_DX_COUNT];

/* Writes the impression and findings text for s into the buffers. */
void cmr_report_text(cmr_rng *r, const cmr_study *s, int dx, char *findings, size_t fn, char *impression,
                     size_t in);
int cmr_report_write_cda(const cmr_study *s, const char *path, const char *findings, const char *impression);
int cmr_report_write_text(const cmr_study *s, const char *path, const char *findings, const char *impression,
                          cmr_rng *r);
int cmr_report_write_sr(const cmr_study *s, const char *path, const char *findings, const char *impression);

/* truth.json. */
int cmr_truth_write(const cmr_phantom_opts *o, const cmr_study *st, int n, const char *path);

int cmr_mkdirs(const char *path);

#endif
