/* synth — deterministic synthetic cardiac MRI cases for benchmarks and demos.
 *
 * Uniform noise on the sphere has no neighbourhood structure: every point is
 * about equally far from every other, IVF lists carry no meaning and recall
 * figures measured on it say nothing about real embeddings.  So the vectors
 * here are built the way real image embeddings behave:
 *   - each diagnosis has a direction; a few hundred clusters (sub-phenotypes)
 *     sit around their diagnosis' direction, so clusters of one diagnosis are
 *     nearer each other than clusters of different ones;
 *   - a case is its cluster centre, plus a low-rank latent variation (the
 *     anatomy that varies within a phenotype), plus a little isotropic noise;
 *     cases of one cluster have cosine ~0.75 on average and ~0.85-0.9 to
 *     their nearest neighbours;
 *   - a patient's repeat study keeps the latent of the first study, slightly
 *     moved, so the same patient's studies are near-duplicates (what
 *     cmr_store_search_case has to exclude);
 *   - the text vector of a case is its image vector plus noise, the way a
 *     joint image-text model puts a report near its images.
 * Metadata follows the case's diagnosis: sex ratio, age, ejection fraction,
 * impression wording.
 *
 * Everything is a function of (seed, stream): the same seed gives the same
 * cases, bit for bit, on every run and machine (own PRNG, no libc rand). */
#ifndef CMR_BENCH_SYNTH_H
#define CMR_BENCH_SYNTH_H

#include <stddef.h>
#include <stdint.h>

#define SYNTH_N_SITES 8
#define SYNTH_N_DIAGNOSES 10
#define SYNTH_N_VIEWS 8
#define SYNTH_MAX_CODES 2
#define SYNTH_DEFAULT_DIM 512u
#define SYNTH_DEFAULT_CLUSTERS 300u
#define SYNTH_HASH_CHARS 72 /* "sha256:" + 64 hex + NUL */
#define SYNTH_MODEL_NAME "synthetic"

typedef struct synth_site {
    const char *name;
    const char *manufacturer;
    const char *scanner_model;
    float field_strength;
    double share; /* fraction of all studies done here */
} synth_site;

typedef struct synth_code {
    const char *code;
    const char *system;
    const char *label;
} synth_code;

extern const synth_site synth_sites[SYNTH_N_SITES];
/* Bit i of synth_case.views; the same order as CMR_VIEW_* in cmr_store.h. */
extern const char *const synth_view_names[SYNTH_N_VIEWS];
/* Short key of each diagnosis ("normal", "hcm", ...). */
extern const char *const synth_diagnosis_keys[SYNTH_N_DIAGNOSES];

typedef struct synth_params {
    unsigned dim;        /* 0: SYNTH_DEFAULT_DIM */
    unsigned n_clusters; /* 0: SYNTH_DEFAULT_CLUSTERS */
    uint64_t seed;
    /* 0 is the stream of stored cases; any other value is an independent
     * stream of new cases from the same clusters (held-out queries). */
    unsigned stream;
} synth_params;

typedef struct synth_case {
    uint64_t row;            /* position in the stream, from 0 */
    char study_uid[48];      /* 2.25.<UUID as decimal> */
    char patient_id[32];
    int32_t study_date;      /* YYYYMMDD */
    unsigned site;           /* index into synth_sites */
    char sex;                /* 'F' or 'M' */
    int age;
    uint32_t views;          /* bit i set: synth_view_names[i] acquired */
    unsigned diagnosis;      /* index into synth_diagnosis_keys */
    unsigned cluster;
    int study_of_patient;    /* 1 for a patient's first study, 2 or 3 for repeats */
    size_t n_codes;
    const synth_code *codes[SYNTH_MAX_CODES];
    char impression[384];
} synth_case;

typedef struct synth synth;

/* Builds the cluster model of params (a few MB; well under a second). */
int synth_create(const synth_params *params, synth **out);
void synth_free(synth *g);
unsigned synth_dim(const synth *g);

/* The next case of the stream: metadata into *c, unit vectors into
 * image[dim] and text[dim] (either may be NULL when not wanted; the stream
 * is the same either way). */
void synth_next(synth *g, synth_case *c, float *image, float *text);

/* "sha256:<hex>" naming the generator version, seed and dimension: stores
 * refuse to mix vectors from different seeds as they would different models. */
void synth_weights_hash(const synth_params *params, char out[SYNTH_HASH_CHARS]);

/* YYYYMMDD as "YYYY-MM-DD". */
void synth_format_date(int32_t yyyymmdd, char out[11]);

/* A whole number from lo to hi for option opt; CMR_EINVAL naming both
 * otherwise.  Shared by the benchmark programs' option parsing. */
int synth_parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out);

#endif
