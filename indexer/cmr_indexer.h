/* cmr_indexer — from archive folders of DICOM studies and reports to cases.
 *
 *   cmr_archive_scan   walk folders, probe and read DICOM headers in
 *                      parallel, group into studies and series, order images
 *   cmr_classify       label every series (cine SAX / 2ch / 3ch / 4ch, LGE
 *                      SAX / 2ch / 3ch / 4ch, or other) with the reason
 *   cmr_study_tensor   build the model's input tensor from a study, as the
 *                      model's cmr_input_spec declares
 *   cmr_ingest         all of it, plus reports and de-identification, into a
 *                      cmr_store (idempotent and resumable)
 *
 * Ownership: a cmr_archive owns every study, series, image and string it
 * holds; pointers into it stay valid until cmr_archive_free.  Errors follow
 * common/cmr_error.h.  Problems with single files or studies are not errors
 * of the whole call: they are listed in the archive's issues and the rest of
 * the work goes on. */
#ifndef CMR_INDEXER_H
#define CMR_INDEXER_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"
#include "cmr_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- series labels ------------------------------------------------------------ */

typedef enum cmr_series_label {
    CMR_SERIES_OTHER = 0,
    CMR_SERIES_CINE_SAX,
    CMR_SERIES_CINE_2CH,
    CMR_SERIES_CINE_3CH,
    CMR_SERIES_CINE_4CH,
    CMR_SERIES_LGE_SAX,
    CMR_SERIES_LGE_2CH,
    CMR_SERIES_LGE_3CH,
    CMR_SERIES_LGE_4CH,
    CMR_SERIES_CINE_UNPLACED, /* a cine whose plane cannot be told (no geometry) */
    CMR_SERIES_LABEL_COUNT_
} cmr_series_label;

/* What an "other" series is, when it can be told. */
typedef enum cmr_other_kind {
    CMR_OTHER_NONE = 0,
    CMR_OTHER_LOCALIZER,
    CMR_OTHER_FLOW,
    CMR_OTHER_MAPPING,   /* T1 / T2 / T2* mapping */
    CMR_OTHER_STIR,      /* T2-weighted dark blood / STIR */
    CMR_OTHER_NON_MR,    /* angiography, CT, ... */
    CMR_OTHER_REPORT,    /* a structured report object */
    CMR_OTHER_UNKNOWN,
} cmr_other_kind;

const char *cmr_series_label_name(cmr_series_label label); /* "cine_sax", ..., "other" */
const char *cmr_other_kind_name(cmr_other_kind kind);
/* The store's CMR_VIEW_* bit of a label, 0 for other / unplaced. */
uint32_t cmr_series_label_view(cmr_series_label label);

/* ---- the scanned archive ------------------------------------------------------ */

/* One 2-D image: a single-frame file, or one frame of a multi-frame file. */
typedef struct cmr_image {
    const char *path;        /* the file */
    int frame;               /* frame within the file, 0 for single-frame */
    double position[3];      /* Image Position (Patient) */
    double orientation[6];   /* row and column direction cosines */
    int has_geometry;
    double trigger_time;     /* ms, -1 unknown */
    double inversion_time;   /* ms, -1 unknown */
    double slice_coord;      /* position along the series' slice normal, mm */
    int slice;               /* index of its slice location (0 = first along the normal) */
    int phase;               /* index within its slice, by trigger time */
    int seq;                 /* acquisition order in the series: instance number, then frame */
} cmr_image;

typedef struct cmr_series {
    char uid[65];
    int number;
    char description[65];    /* SeriesDescription, or ProtocolName when blank */
    char modality[17];
    char sop_class_uid[65];
    char transfer_syntax[65];
    char scanning_sequence[65], sequence_variant[65], image_type[65];
    int rows, columns;
    double pixel_spacing[2], slice_thickness;
    double inversion_time;   /* ms, -1 unknown (first image's) */
    int cardiac_number_of_images;
    size_t n_images;
    cmr_image *images;       /* ordered by slice, then phase */
    int n_slices, n_phases;  /* distinct slice locations; images per slice (max) */
    double normal[3];        /* unit slice normal (row x column), 0 if no geometry */
    int has_geometry;
    cmr_series_label label;
    cmr_other_kind other_kind;
    char reason[256];        /* why it got its label */
} cmr_series;

typedef struct cmr_study {
    char uid[65];
    char accession[17];
    char patient_id[65];     /* raw identifier: hashed at ingest, never stored */
    int32_t date;            /* YYYYMMDD, 0 unknown or invalid */
    char raw_date[17];       /* as written */
    char sex;                /* 'F', 'M', 'O', 0 */
    int age_years;           /* -1 unknown */
    char manufacturer[65], scanner_model[65], institution[65];
    double field_strength;
    size_t n_series;
    cmr_series *series;
    size_t n_files;
    const char *folder;      /* the deepest folder holding all its files */
    uint8_t fingerprint[32]; /* SHA-256 over (path, size, mtime) of its files: "unchanged" test */
    int mixed_patients;      /* files of one study UID name different patients */
} cmr_study;

/* A problem with one file or study, for the run summary. */
typedef struct cmr_issue {
    const char *path;        /* file or folder */
    const char *study_uid;   /* may be NULL */
    int code;                /* CMR_E* */
    const char *message;
} cmr_issue;

typedef struct cmr_archive {
    size_t n_studies;
    cmr_study *studies;      /* ordered by Study Instance UID */
    size_t n_issues;
    cmr_issue *issues;
    size_t n_files_seen, n_dicom, n_skipped_non_dicom;
    size_t n_reports;        /* report-like files found (.xml, .txt, SR objects) */
    const char *const *report_paths;
} cmr_archive;

typedef void (*cmr_scan_progress_fn)(void *user, size_t files_done, size_t files_total);

typedef struct cmr_scan_options {
    unsigned threads;         /* 0: number of CPUs */
    cmr_scan_progress_fn progress;
    void *progress_user;
} cmr_scan_options;

int cmr_archive_scan(const char *const *roots, size_t n_roots, const cmr_scan_options *opts,
                     cmr_archive **out);
void cmr_archive_free(cmr_archive *a);

/* Label every series of a study in place. */
void cmr_classify_study(cmr_study *study);

/* Parse a DICOM date as found in archives: "YYYYMMDD", "YYYY.MM.DD" (legacy
 * ACR-NEMA), "YYYY-MM-DD".  0 if invalid (e.g. "20120000"). */
int32_t cmr_parse_dicom_date(const char *raw);

/* ---- model input ------------------------------------------------------------------- */

/* What a model consumes; declared by the model, built by the indexer. */
typedef enum cmr_input_recipe {
    /* The published CMR-CLIP video: cine LAX (30 frames) + middle SAX slice's
     * cine (30 frames) + every LGE SAX slice + each single LGE LAX view
     * repeated n_SAX times, sampled to `frames` segment midpoints. */
    CMR_RECIPE_CMRCLIP = 1,
    /* Ours (docs/model-input.md): the same views in two parts sampled
     * separately, so that late enhancement keeps a share of its own: the
     * two cines (2 x cine_frames) to frames - lge_frames, then every LGE SAX
     * slice and each LGE LAX view once to lge_frames. */
    CMR_RECIPE_CINE_LGE = 2,
} cmr_input_recipe;

typedef struct cmr_input_spec {
    cmr_input_recipe recipe;
    unsigned frames;          /* output frames (64 for CMR-CLIP) */
    unsigned size;            /* output height = width (224) */
    unsigned resize;          /* intermediate square resize before centre crop (256) */
    unsigned channels;        /* 3: grey repeated */
    unsigned cine_frames;     /* frames each cine is resampled to first (30) */
    unsigned lge_frames;      /* CMR_RECIPE_CINE_LGE: the last frames, for LGE (1 .. frames-1) */
    float mean[3], std[3];    /* normalisation after scaling to [0,1] */
} cmr_input_spec;

/* The published CMR-CLIP recipe's spec. */
void cmr_input_spec_cmrclip(cmr_input_spec *spec);

/* What went into a tensor, and what was missing. */
typedef struct cmr_tensor_info {
    uint32_t views_used;      /* CMR_VIEW_* bits */
    uint32_t views_missing;   /* required by the recipe but absent */
    unsigned source_frames;   /* frames before sampling to spec->frames */
    char gaps[256];           /* human-readable: "no LGE 3-chamber view; ..." */
} cmr_tensor_info;

/* Build the input tensor [frames][channels][size][size] (float, normalised)
 * of a classified study.  Decodes the pixel data it needs.  A study missing
 * views still gets a tensor (missing parts are zero frames) with the gaps
 * listed; a study with no usable cine at all is CMR_EFORMAT. */
int cmr_study_tensor(const cmr_study *study, const cmr_input_spec *spec, float **tensor,
                     cmr_tensor_info *info); /* *tensor is released with free() */

/* Values in a tensor of this spec: frames * channels * size * size. */
size_t cmr_tensor_values(const cmr_input_spec *spec);
/* As cmr_study_tensor, into the caller's buffer of cmr_tensor_values(spec)
 * floats (content undefined after a failure): a worker reuses one buffer. */
int cmr_study_tensor_into(const cmr_study *study, const cmr_input_spec *spec, float *out,
                          cmr_tensor_info *info);

#ifdef __cplusplus
}
#endif

#endif
