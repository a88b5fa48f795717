/* The audit's internals, shared by audit.c (loading, simple checks, the
 * report), audit_dup.c (near-duplicates), audit_label.c (label errors and
 * contradictions) and audit_truth.c (scoring against a phantom truth.json).
 * Not part of the public API. */
#ifndef CMR_AUDIT_INTERNAL_H
#define CMR_AUDIT_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_searcher.h"

/* Platt scaling of the label-error margin m = log p(recorded) - max log
 * p(other): confidence = 1 / (1 + exp(AUDIT_PLATT_A * m + AUDIT_PLATT_B)),
 * fitted on ten phantom archives pooled (seed 11 with 8% label noise and
 * nine with 5%; 145 planted errors) with the default model and shifted to a
 * 5% prior.  The margins' scale is the model's: refitted with each
 * default model by scripts/fit_audit_calibration.py, which reads them back
 * from the report (label_error_calibration) to recover the margins
 * (docs/audit.md, "Calibration"). */
#define AUDIT_PLATT_A 0.59
#define AUDIT_PLATT_B 4.81

/* What the audit keeps of a case: the fields the checks read, not the
 * record (a 10k-case store would otherwise hold every impression). */
typedef struct audit_case {
    uint64_t id;
    char *uid;
    uint8_t patient_key[CMR_PATIENT_KEY_BYTES];
    int has_patient_key;
    int32_t date;
    uint32_t views;
    uint32_t stored;       /* bit (1 << space) per stored vector */
    uint32_t vectors;      /* the same, for vectors of the store's model only (the ones used) */
    int cls;               /* index of the first diagnosis code in audit_ctx.classes, -1: none */
    int has_impression;    /* a non-blank impression */
    int has_report;        /* an impression source or a diagnosis: some report was read */
    int model_ok;          /* vectors come from the store's model */
    char *model_id;        /* as recorded (NULL when none) */
    int dup_partner;       /* index of a case it duplicates with a report, -1: none */
} audit_case;

typedef struct audit_class {
    char *code;
    char *label;           /* display name from the first case carrying it; may be NULL */
    size_t count;
} audit_class;

typedef struct audit_ctx {
    cmr_store *store;
    cmr_model *model;
    cmr_audit_options o;
    unsigned dim;
    size_t n;
    audit_case *cases;     /* in id order */
    float *vec[CMR_NSPACES]; /* n x dim each, zeros where a case lacks the vector */
    size_t n_classes;
    audit_class *classes;
    float *prompts;        /* n_classes x dim prompt vectors (model given), else NULL */
    /* per class, 1: described by its own reports instead of a row of
     * prompts (audit_prompt_cos); NULL when prompts is */
    unsigned char *prompt_from_reports;
    long *dup_pairs;       /* 2 x n_dup_pairs case indices of the near-duplicates found */
    size_t n_dup_pairs;
    /* the report under construction */
    cmr_audit_report *r;
    size_t cap;
} audit_ctx;

/* Index of the case with this id, -1 if not loaded. */
long audit_find(const audit_ctx *a, uint64_t id);
/* 1 if cases i and j were found to be near-duplicates. */
int audit_is_dup(const audit_ctx *a, long i, long j);

/* Append a finding; strings are copied (NULLs stay NULL).  The reason is
 * formatted.  Findings below the minimum confidence are dropped here. */
int audit_add(audit_ctx *a, cmr_audit_kind kind, long i, long j, float confidence,
              const char *recorded, const char *suggested, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 8, 9)))
#endif
    ;
int audit_note(audit_ctx *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void audit_progress(audit_ctx *a, const char *phase, uint64_t done, uint64_t total);

/* "CODE (label)" or "CODE" for a class, in buf. */
const char *audit_class_name(const audit_ctx *a, int cls, char *buf, size_t size);

int audit_duplicates(audit_ctx *a);
/* The duplicate threshold on d = 1 - cos from each case's nearest-neighbour
 * distance nn[0..n) (sorted in place); see audit_dup.c. */
double audit_dup_threshold(double *nn, size_t n);
int audit_labels(audit_ctx *a);
/* 1 if the class is described by its reports rather than by prompts: the
 * prompt bank knows neither its code nor its label, and it has text_count
 * >= 2 impressions (one left out still leaves one). */
int audit_described_by_reports(const audit_class *c, size_t text_count);
/* The cosines of x (case i's image or text vector) with each class's
 * description, in cos[0..n_classes): its row of a->prompts, or for a class
 * marked prompt_from_reports the mean of its impressions' text vectors with
 * case i's own left out.  text_sum (n_classes x dim) and text_count are the
 * sums and counts of each class's text vectors; such a class has at least
 * two. */
void audit_prompt_cos(const audit_ctx *a, const double *text_sum, const size_t *text_count, size_t i,
                      const float *x, double *cos);

static inline float audit_dot(const float *x, const float *y, size_t dim)
{
    float s = 0;
    for (size_t d = 0; d < dim; d++)
        s += x[d] * y[d];
    return s;
}

#endif
