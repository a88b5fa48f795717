/* cmr_store — the case store: LMDB (source of truth) plus derived FAISS indexes.
 *
 * A store is a directory:
 *   data.mdb, lock.mdb     LMDB environment: case records, vectors, secondary keys
 *   site.key               32-byte site secret (0600) for patient keys
 *   index-image.cmrx       FAISS index of image vectors, stamped with the store
 *   index-text.cmrx        generation it reflects (derived, rebuildable)
 *
 * Invariants (see docs/architecture.md):
 *  - one LMDB write transaction writes a case's record, both vectors and all
 *    its secondary keys, and bumps the store generation;
 *  - index files are derived: on use, an index older than the store is brought
 *    up to date from the change log kept in LMDB, or rebuilt; never used stale;
 *  - every vector comes from the store's one model (name, weights hash, dim);
 *  - patient names and IDs are never stored: only HMAC-SHA-256(site secret, id).
 *
 * Errors: functions return 0 or a negative CMR_E* code (common/cmr_error.h);
 * cmr_errmsg() holds the detailed message of the last failure on the thread.
 *
 * Threads: a cmr_store may be shared by threads for reading and searching.
 * Writes (cmr_txn) are serialised by LMDB; one cmr_txn belongs to one thread.
 * Processes: any number of readers and writers may open the same directory. */
#ifndef CMR_STORE_H
#define CMR_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cmr_store cmr_store;
typedef struct cmr_txn cmr_txn;

/* The two vector spaces of a store. */
typedef enum cmr_space { CMR_SPACE_IMAGE = 0, CMR_SPACE_TEXT = 1 } cmr_space;
#define CMR_NSPACES 2
const char *cmr_space_name(cmr_space space); /* "image", "text" */
int cmr_space_parse(const char *name, cmr_space *out);

/* Views present in a study, as a bit set. */
enum {
    CMR_VIEW_CINE_SAX = 1u << 0,
    CMR_VIEW_CINE_2CH = 1u << 1,
    CMR_VIEW_CINE_3CH = 1u << 2,
    CMR_VIEW_CINE_4CH = 1u << 3,
    CMR_VIEW_LGE_SAX = 1u << 4,
    CMR_VIEW_LGE_2CH = 1u << 5,
    CMR_VIEW_LGE_3CH = 1u << 6,
    CMR_VIEW_LGE_4CH = 1u << 7,
    CMR_VIEW_COUNT_ = 8
};
/* Name of a single view bit ("cine_sax", "lge_4ch", ...), NULL if not one. */
const char *cmr_view_name(uint32_t bit);
int cmr_view_parse(const char *name, uint32_t *bit);

#define CMR_PATIENT_KEY_BYTES 32
#define CMR_UID_MAX 64          /* DICOM UI value length */
#define CMR_TEXT_MAX (1u << 20) /* longest impression or path accepted */

typedef struct cmr_diagnosis {
    const char *code;   /* e.g. "I42.1"; required */
    const char *system; /* e.g. "ICD-10", "SNOMED-CT"; may be NULL */
    const char *label;  /* display name; may be NULL */
    const char *source; /* where it came from (report path, manifest); may be NULL */
} cmr_diagnosis;

/* A finding score: the probability (0..1) the searcher's prompt bank gives
 * a study for one finding or diagnosis (searcher/cmr_searcher.h).  Stored
 * with the record and in the facets, so filters on them cost what other
 * filters cost. */
#define CMR_FINDING_NAME_MAX 31 /* bytes of a finding name: [a-z0-9_], not empty */
#define CMR_STORE_FINDINGS_MAX 64 /* distinct finding names a store holds */
typedef struct cmr_finding_score {
    const char *name; /* "lge", "hcm" */
    float score;      /* in [0, 1] */
} cmr_finding_score;

/* A case record.  As input to cmr_txn_put the caller owns every pointer and
 * the store copies what it needs; fields marked "output" are ignored on input.
 * As output (cmr_store_get, search hits) everything points into memory owned
 * by the containing object and lives until that object is freed. */
typedef struct cmr_case {
    uint64_t id;              /* output: assigned by the store, never reused */
    const char *study_uid;    /* required, the upsert key */
    uint8_t patient_key[CMR_PATIENT_KEY_BYTES]; /* see cmr_store_patient_key */
    int has_patient_key;
    int32_t study_date;       /* YYYYMMDD, 0 if unknown */
    const char *site;         /* institution or site name; may be NULL */
    const char *manufacturer; /* may be NULL */
    const char *scanner_model;/* may be NULL */
    float field_strength;     /* tesla, 0 if unknown */
    char sex;                 /* 'F', 'M', 'O', or 0 if unknown */
    int age_years;            /* age at study, -1 if unknown */
    uint32_t views;           /* CMR_VIEW_* bits */
    size_t n_diagnoses;
    const cmr_diagnosis *diagnoses;
    const char *impression;   /* as written in the report (must be de-identified) */
    const char *impression_source; /* report it came from; may be NULL */
    size_t n_sources;
    const char *const *sources; /* source paths (study folder, files) */
    int64_t ingest_time;      /* unix seconds; 0 on input means "now" */
    uint8_t fingerprint[32];  /* of the source files (ingest's "unchanged" test) */
    int has_fingerprint;
    const char *model_id;     /* output: the model that embedded the vectors */
    uint64_t generation;      /* output: store generation of the last write */
    uint32_t vectors;         /* output: bit (1 << space) set for each stored vector */
    size_t n_findings;        /* finding scores (distinct names); on input 0 lets the store's */
    const cmr_finding_score *findings; /* scorer fill them (cmr_store_set_scorer) */
} cmr_case;

/* ---- opening ----------------------------------------------------------- */

enum {
    CMR_STORE_CREATE = 1u << 0, /* create the directory and store if absent */
    CMR_STORE_RDONLY = 1u << 1, /* never write (stale indexes are caught up in memory) */
};

/* Settings fixed when a store is created (ignored when opening one). */
typedef struct cmr_store_config {
    const char *factory;    /* FAISS factory string (at most 47 characters) giving an IVF
                               index, for large stores; NULL: "IVF{nlist},Flat" */
    uint64_t ivf_threshold; /* exact flat index below this many vectors; 0: 20000 */
    unsigned nprobe;        /* IVF lists probed per query; 0: automatic */
} cmr_store_config;

/* Open (or create) the store in directory dir.  config may be NULL. */
int cmr_store_open(const char *dir, unsigned flags, const cmr_store_config *config,
                   cmr_store **out);
/* Persist up-to-date indexes (unless read-only) and release everything.
 * Returns the error of the final flush, if any; the handle is freed anyway.
 * NULL is harmless. */
int cmr_store_close(cmr_store *store);

/* Progress of long work (index rebuilds): called with a phase name and
 * done/total counts, from the thread doing the work.  NULL turns it off. */
typedef void (*cmr_progress_fn)(void *user, const char *phase, uint64_t done, uint64_t total);
void cmr_store_set_progress(cmr_store *store, cmr_progress_fn fn, void *user);

/* ---- the model ---------------------------------------------------------- */

/* Bind the store to a model.  The first call fixes name, weights hash and
 * dimension; a later call with any difference fails with CMR_EMODEL. */
int cmr_store_set_model(cmr_store *store, const char *name, const char *weights_hash,
                        unsigned dim);
/* 0 and empty strings until a model is set.  Strings live as long as store. */
void cmr_store_model(const cmr_store *store, const char **name, const char **weights_hash,
                     unsigned *dim);

/* HMAC-SHA-256 of a patient identifier under this store's site secret. */
int cmr_store_patient_key(const cmr_store *store, const char *patient_id,
                          uint8_t key[CMR_PATIENT_KEY_BYTES]);

/* ---- writing ------------------------------------------------------------- */

/* Finding scores for a case written with an image vector and no findings of
 * its own: called inside cmr_txn_put with the normalised image vector, it
 * writes up to max scores to out (names must stay valid until the put
 * returns) and sets *n.  NULL turns it off.  The hook runs on the writing
 * thread, in the write transaction: scores and case commit together. */
typedef int (*cmr_scorer_fn)(void *user, const float *image_unit, cmr_finding_score *out,
                             size_t max, size_t *n);
void cmr_store_set_scorer(cmr_store *store, cmr_scorer_fn fn, void *user);

/* A write transaction: all or nothing.  Commit and abort free it. */
int cmr_txn_begin(cmr_store *store, cmr_txn **out);
/* Bind the store to a model inside the transaction (see cmr_store_set_model):
 * if the transaction is aborted, the store stays unbound. */
int cmr_txn_set_model(cmr_txn *txn, const char *name, const char *weights_hash, unsigned dim);
/* Move the store to another model inside the transaction: every stored
 * vector (both spaces) is removed and the new model bound, so that the puts
 * that follow in the same transaction store the new model's vectors.  A case
 * not put again keeps its record without vectors (searchable in neither
 * space).  On commit the indexes are rebuilt from scratch; on abort nothing
 * changed.  Other processes that have the store open refuse to search it
 * (CMR_EMODEL) until they reopen it.  Replacing a model by itself, or a
 * store without one, is CMR_EINVAL. */
int cmr_txn_replace_model(cmr_txn *txn, const char *name, const char *weights_hash, unsigned dim);
/* Insert, or replace the case with the same Study Instance UID.  image and
 * text are dim floats each, or NULL (the case is stored without that vector
 * and is not searchable in that space).  Vectors must be finite with a sum of
 * squares above 1e-30; they are L2-normalised before storing.  *out_id (may
 * be NULL) gets the id; *replaced (may be NULL) is set to 1 if a case with
 * that UID existed, else 0. */
int cmr_txn_put(cmr_txn *txn, const cmr_case *c, const float *image, const float *text,
                uint64_t *out_id);
int cmr_txn_put_ex(cmr_txn *txn, const cmr_case *c, const float *image, const float *text,
                   uint64_t *out_id, int *replaced);
/* The checks cmr_txn_put applies to a case's fields (not its vectors), so
 * that a caller can name a bad row before writing anything. */
int cmr_case_check(const cmr_case *c);
/* Replace the finding scores of case id (record and facets; vectors and
 * other fields untouched).  n = 0 removes them. */
int cmr_txn_set_findings(cmr_txn *txn, uint64_t id, size_t n, const cmr_finding_score *scores);
/* Remove a case: record, vectors, secondary keys; index entries follow. */
int cmr_txn_delete(cmr_txn *txn, uint64_t id);
int cmr_txn_commit(cmr_txn *txn);
void cmr_txn_abort(cmr_txn *txn);

/* ---- reading ------------------------------------------------------------- */

int cmr_store_get(cmr_store *store, uint64_t id, cmr_case **out);
void cmr_case_free(cmr_case *c);
int cmr_store_find_uid(cmr_store *store, const char *study_uid, uint64_t *id);
/* Finding names with a facet slot in this store (those some case was ever
 * scored for), in slot order; static strings owned by the store, valid
 * until close.  *n may be 0. */
int cmr_store_finding_names(cmr_store *store, const char *const **names, size_t *n);
/* Copy the stored (normalised) vector of a case into out[dim]. */
int cmr_store_get_vector(cmr_store *store, uint64_t id, cmr_space space, float *out);
/* All case ids in increasing order; *ids is malloc'ed, free() it. */
int cmr_store_list(cmr_store *store, uint64_t **ids, size_t *n);

typedef struct cmr_index_info {
    const char *kind;     /* "none", "flat" or "ivf"; static string */
    char factory[64];
    uint64_t ntotal;      /* vectors in the index */
    uint64_t generation;  /* store generation the index reflects */
    unsigned nlist, nprobe;
    int on_disk_current;  /* the file on disk reflects the current generation */
} cmr_index_info;

typedef struct cmr_store_stats {
    uint64_t cases;
    uint64_t vectors[CMR_NSPACES];
    uint64_t generation;
    unsigned dim;
    cmr_index_info index[CMR_NSPACES];
} cmr_store_stats;
int cmr_store_stats_get(cmr_store *store, cmr_store_stats *out);

/* ---- searching ------------------------------------------------------------ */

/* A bound on a finding score: min <= score <= max (inclusive).  A case
 * without a score for that finding never matches.  Naming a finding no case
 * of the store has a score for is an error (CMR_ENOTFOUND), not an empty
 * answer: the store may predate findings (see cmr_findings_rescore). */
typedef struct cmr_finding_bound {
    const char *name;
    float min, max;
} cmr_finding_bound;

/* All fields optional: a zeroed filter matches every case. */
typedef struct cmr_filter {
    size_t n_diagnoses;                /* case has any of these codes */
    const char *const *diagnoses;
    int32_t date_from, date_to;        /* YYYYMMDD inclusive, 0 = open */
    const char *site;                  /* exact match, NULL = any */
    const char *manufacturer;          /* exact match (case-insensitive), NULL = any */
    char sex;                          /* 'F', 'M', 'O', 0 = any */
    int age_min, age_max;              /* inclusive bounds, 0 = no bound on that side; a case of
                                          unknown age never matches a bounded filter */
    size_t n_exclude_patients;
    const uint8_t (*exclude_patients)[CMR_PATIENT_KEY_BYTES];
    size_t n_exclude_ids;
    const uint64_t *exclude_ids;
    size_t n_finding_bounds;           /* all must hold */
    const cmr_finding_bound *finding_bounds;
} cmr_filter;

typedef struct cmr_hit {
    uint64_t id;
    float score;          /* inner product of unit vectors (cosine) */
    cmr_case *record;     /* owned by the cmr_hits */
} cmr_hit;

typedef struct cmr_hits {
    size_t n;
    cmr_hit *hits;        /* best first */
    uint64_t n_matching;  /* cases with a vector in the space that pass the filter,
                             excluded cases (ids, patients) not counted */
    int exact;            /* 1 if answered by an exact scan */
    unsigned nprobe;      /* IVF lists probed (0 for exact answers) */
} cmr_hits;

/* k nearest cases to a query vector (dim floats, normalised here) in a space. */
int cmr_store_search(cmr_store *store, cmr_space space, const float *query, size_t k,
                     const cmr_filter *filter, cmr_hits **out);
/* Case -> case: the stored vector of case id in query_space against
 * target_space.  The case itself is always excluded; so are the same
 * patient's other studies unless include_same_patient. */
int cmr_store_search_case(cmr_store *store, uint64_t id, cmr_space query_space,
                          cmr_space target_space, size_t k, const cmr_filter *filter,
                          int include_same_patient, cmr_hits **out);
/* Exact answer by scanning every stored vector (the reference for recall). */
int cmr_store_search_exact(cmr_store *store, cmr_space space, const float *query, size_t k,
                           const cmr_filter *filter, cmr_hits **out);
void cmr_hits_free(cmr_hits *hits);

/* ---- derived indexes -------------------------------------------------- */

/* Bring both indexes up to date and write them (temp, fsync, rename). */
int cmr_store_flush(cmr_store *store);
/* Rebuild both indexes from LMDB alone (retraining IVF) and write them. */
int cmr_store_reindex(cmr_store *store);

typedef struct cmr_verify_report {
    size_t n_problems;
    char **problems;     /* one sentence each */
    size_t n_notes;
    char **notes;        /* observations that are not faults (e.g. index behind, caught up) */
    uint64_t cases_checked, vectors_checked, index_probes;
} cmr_verify_report;
/* Check LMDB records, vectors and secondary keys against each other, and the
 * index files against LMDB.  Returns 0 when the check ran (look at
 * n_problems), negative when it could not run. */
int cmr_store_verify(cmr_store *store, cmr_verify_report **out);
void cmr_verify_report_free(cmr_verify_report *r);

/* ---- query log ------------------------------------------------------------
 *
 * An append-only LMDB table ("querylog") of the queries a server answered,
 * for audit: when, who (token id, or "local"), what kind of query, its size
 * and filters, how many results and how long it took.  Never the query's
 * content: a free-text phrase can hold a patient's name, so only its length
 * and a keyed hash (HMAC-SHA-256 under the site secret, first 8 bytes) are
 * kept, which tells repeated phrases apart without being reversible by a
 * dictionary; uploaded studies leave only their file count.  Entries are
 * written in their own write transactions, never inside a case write.  The
 * table is created when a store is opened writable; a read-only handle of an
 * older store reads it as empty. */
#define CMR_QUERYLOG_WHO 32
#define CMR_QUERYLOG_KIND 16
#define CMR_QUERYLOG_FILTERS 96

typedef struct cmr_querylog_entry {
    uint64_t seq;                     /* output: 1, 2, ... in order of writing */
    int64_t time_us;                  /* unix time in microseconds; 0 on input: now */
    char who[CMR_QUERYLOG_WHO];       /* token id, or "local" */
    char kind[CMR_QUERYLOG_KIND];     /* "text", "case", "study", "case_view" (a record opened), ... */
    uint32_t k, offset;
    char filters[CMR_QUERYLOG_FILTERS]; /* names of the filter fields used ("diagnosis,sex"), no values */
    uint32_t n_results;
    uint32_t latency_us;
    uint16_t status;                  /* HTTP status of the answer */
    uint32_t text_len;                /* text queries: bytes in the phrase, else 0 */
    uint8_t text_hash[8];             /* text queries: see above, else zero */
    uint64_t case_id;                 /* case queries and views: the case, else 0 */
    uint32_t n_files;                 /* study queries: files uploaded, else 0 */
} cmr_querylog_entry;

/* Append entries in one write transaction (n >= 1); seq fields are set. */
int cmr_querylog_append(cmr_store *store, cmr_querylog_entry *entries, size_t n);
/* Entries with seq > after, oldest first, at most max (0: all).  *out is
 * malloc'ed (free()); NULL with *n 0 when there are none. */
int cmr_querylog_read(cmr_store *store, uint64_t after, size_t max, cmr_querylog_entry **out,
                      size_t *n);
int cmr_querylog_count(cmr_store *store, uint64_t *n);
/* The keyed hash of a phrase that cmr_querylog_entry.text_hash holds. */
int cmr_querylog_text_hash(const cmr_store *store, const char *text, uint8_t hash[8]);

#ifdef __cplusplus
}
#endif

#endif
