/* Internal to indexer/: reading DICOM files through DCMTK (dicom.cpp, the
 * module's only C++ file).  Nothing here is PHI-safe by itself: the patient
 * identifier read from a file is only ever turned into a keyed hash by the
 * ingest step and then dropped.
 *
 * Errors: CMR_EFORMAT (malformed or not what was expected), CMR_EUNSUPPORTED
 * (a transfer syntax or pixel format we cannot decode, named in the message),
 * CMR_EIO, CMR_ENOMEM; cmr_errmsg() names the file and what is wrong. */
#ifndef CMR_DICOM_H
#define CMR_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Geometry and timing of one frame (one image of a single-frame object, or
 * one frame of a multi-frame object from its per-frame functional groups). */
typedef struct cmr_dicom_frame {
    double position[3];    /* Image Position (Patient), mm */
    double orientation[6]; /* Image Orientation (Patient): row then column direction cosines */
    int has_position, has_orientation;
    double trigger_time;   /* ms after the R wave; has_trigger_time says if known */
    int has_trigger_time;
    double inversion_time; /* ms, per frame when the object gives it per frame */
    int has_inversion_time;
    int stack_position;    /* In-Stack Position Number or 0 */
    int temporal_position; /* Temporal Position Index or 0 */
    /* Modality rescale of this frame: the Enhanced MR per-frame Pixel Value
     * Transformation, else the object's (1 and 0 when absent). */
    double rescale_slope, rescale_intercept;
} cmr_dicom_frame;

#define CMR_DICOM_UID 65
#define CMR_DICOM_LO 65

typedef struct cmr_dicom_header {
    /* identity */
    char sop_class_uid[CMR_DICOM_UID], sop_instance_uid[CMR_DICOM_UID];
    char study_uid[CMR_DICOM_UID], series_uid[CMR_DICOM_UID], frame_of_reference_uid[CMR_DICOM_UID];
    char transfer_syntax_uid[CMR_DICOM_UID];
    char transfer_syntax_name[CMR_DICOM_LO]; /* DCMTK's name, e.g. "JPEG-LS Lossless" */
    char modality[17];
    char manufacturer[CMR_DICOM_LO], model_name[CMR_DICOM_LO], institution[CMR_DICOM_LO];
    char study_description[CMR_DICOM_LO], series_description[CMR_DICOM_LO], protocol_name[CMR_DICOM_LO];
    char image_type[CMR_DICOM_LO];          /* values joined by '\' */
    char accession_number[17];
    /* patient (see file comment) */
    char patient_id[CMR_DICOM_LO];
    char patient_sex[17];
    char patient_birth_date[17];            /* raw DA, may be malformed */
    char patient_age[17];                   /* raw AS, e.g. "054Y" */
    char study_date[17];                    /* raw DA, may be malformed ("20120000", "1995.06.26") */
    char series_date[17], acquisition_date[17];
    /* acquisition */
    char scanning_sequence[CMR_DICOM_LO], sequence_variant[CMR_DICOM_LO], scan_options[CMR_DICOM_LO];
    char pulse_sequence_name[CMR_DICOM_LO]; /* Enhanced MR (0018,9005) */
    double field_strength;                  /* T, 0 unknown */
    double slice_thickness, spacing_between_slices, repetition_time, echo_time, flip_angle; /* 0 unknown */
    double inversion_time;                  /* ms; has_inversion_time */
    int has_inversion_time;
    double pixel_spacing[2];                /* row spacing, column spacing (mm) */
    int has_pixel_spacing;
    int cardiac_number_of_images;           /* 0 unknown */
    double nominal_interval;                /* ms, 0 unknown */
    double frame_time;                      /* ms between frames of a multi-frame cine, 0 unknown */
    int series_number, instance_number;
    /* pixels */
    int rows, columns, frames, samples_per_pixel, bits_allocated, bits_stored, pixel_representation;
    char photometric[17];
    double rescale_slope, rescale_intercept; /* 1 and 0 when absent */
    double window_center, window_width;     /* first values; width 0 when absent */
    int has_pixel_data;
    /* per frame: `frames` entries (1 for a single-frame object) */
    cmr_dicom_frame *frame;
    int is_enhanced;                        /* multi-frame with functional groups */
    int is_structured_report;
} cmr_dicom_header;

/* Fast check before any parsing: a 128-byte preamble and "DICM", or (for old
 * files without one) a plausible group 0x0002/0x0008 element at offset 0.
 * Returns 1 for DICOM, 0 for anything else (including unreadable files; the
 * reason is in cmr_errmsg()). */
int cmr_dicom_probe(const char *path);

/* Read every attribute above without decoding pixel data.  *out is freed
 * with cmr_dicom_header_free. */
int cmr_dicom_read_header(const char *path, cmr_dicom_header **out);
/* The archive scan's read: the file is read once, probed, and parsed only
 * when it is DICOM.  A file the probe refuses is not an error: 0 is returned
 * with *is_dicom = 0 and *out NULL.  Otherwise *is_dicom = 1 and the result
 * is cmr_dicom_read_header's.  A file that cannot be opened or read fails
 * (CMR_EIO, or CMR_EINVAL for a non-regular file) with *is_dicom = 0. */
int cmr_dicom_scan_header(const char *path, cmr_dicom_header **out, int *is_dicom);
void cmr_dicom_header_free(cmr_dicom_header *h);

/* Decode all frames of a greyscale image to float, after the modality
 * rescale: out[(f * rows + r) * columns + c].  *pixels is malloc'ed (free()).
 * Decoders for JPEG baseline/extended/lossless, JPEG-LS, RLE and deflate are
 * registered once per process. */
int cmr_dicom_read_pixels(const char *path, cmr_dicom_header **hdr, float **pixels);

/* JPEG-LS frames are decoded by the indexer's own decoder where it takes
 * them (jpegls_decode.h), by DCMTK's otherwise.  0 sends every frame to
 * DCMTK, for tests and comparisons; process-wide, 1 by default. */
void cmr_dicom_set_own_jpegls(int on);
/* Frames the own decoder has decoded in this process. */
unsigned long long cmr_dicom_own_jpegls_frames(void);

/* A DICOM Structured Report (Basic, Enhanced or Comprehensive Text SR). */
typedef struct cmr_sr_code {
    char *code, *system, *label;
} cmr_sr_code;
typedef struct cmr_sr_report {
    char study_uid[CMR_DICOM_UID];
    char accession_number[17];
    char *impression;  /* text of the container or TEXT item named Impression (or Conclusion); NULL if none */
    char *findings;    /* text named Findings; NULL if none */
    char *full_text;   /* the content tree as indented text, for diagnostics (no header: it holds patient data) */
    size_t n_codes;
    cmr_sr_code *codes; /* CODE content items that are diagnoses / findings */
} cmr_sr_report;
int cmr_dicom_read_sr(const char *path, cmr_sr_report **out);
void cmr_sr_report_free(cmr_sr_report *r);

/* Write a Basic Text SR (for the phantom and tests): a "Diagnostic Imaging
 * Report" (18748-4, LN) holding a Findings container with one Finding TEXT,
 * and an Impressions container with one Impression TEXT followed by one
 * Finding (121071, DCM) CODE item per code.  study_uid NULL makes a new
 * study; NULL or "" texts are left out.  cmr_dicom_read_sr reads it back. */
int cmr_dicom_write_text_sr(const char *path, const char *study_uid, const char *accession, const char *impression,
                            const char *findings, size_t n_codes, const cmr_sr_code *codes);

#ifdef __cplusplus
}
#endif

#endif
