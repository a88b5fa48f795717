/* cmr_searcher — queries over a case store: text, study and case queries with
 * filters, paging, one-result-per-patient grouping, fusion of the image and
 * impression spaces, explanations (similarity per space, finding scores, the
 * impression sentence closest to the query, views present); finding scores
 * from a prompt bank; the curators' audit; the HTTP server.
 *
 * Sits on top of store/, model/ and indexer/ (DESIGN.md).  Errors: 0 or a
 * negative CMR_E* code, detail in cmr_errmsg().
 *
 * Sections below are owned by the part that implements them:
 *   search + findings (search.c, findings.c, ...), audit (audit*.c),
 *   server (server*.c). */
#ifndef CMR_SEARCHER_H
#define CMR_SEARCHER_H

#include <stddef.h>
#include <stdint.h>

#include "cmr_indexer.h"
#include "cmr_model.h"
#include "cmr_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- findings (prompt bank) ------------------------------------------- */

/* The prompt bank (findings.c, docs/searching.md): the CMR-CLIP findings
 * (lv_systolic_dysfunction, rv_systolic_dysfunction, lv_dilation,
 * rv_dilation, lv_hypertrophy, lge, aortic_dilation) and the ten diagnoses
 * (normal, hcm, amyloidosis, dcm, icm, myocarditis, sarcoidosis, lvnc, fabry,
 * arvc), in that order.  Keys are stable: stores keep scores under them. */
typedef enum cmr_finding_kind {
    CMR_FINDING_BINARY = 0,    /* present vs absent: positive against negative prompts */
    CMR_FINDING_DIAGNOSIS = 1  /* one of the diagnoses: softmax over every diagnosis */
} cmr_finding_kind;

typedef struct cmr_finding_def {
    const char *key;              /* "lge", "hcm": what --where names */
    const char *label;            /* "Late gadolinium enhancement" */
    cmr_finding_kind kind;
    const char *const *positive;  /* NULL-terminated, at least one */
    const char *const *negative;  /* NULL-terminated; NULL for diagnoses */
    const char *const *paper;     /* the CMR-CLIP paper's prompts (NULL-terminated) for the six
                                     findings it published, else NULL: what eval measures */
} cmr_finding_def;

/* The built-in bank: static, never freed.  cmr_finding_bank(i) is NULL for
 * i >= cmr_finding_bank_size(). */
size_t cmr_finding_bank_size(void);
const cmr_finding_def *cmr_finding_bank(size_t i);
/* Index of key in the bank; CMR_ENOTFOUND with a message listing the keys. */
int cmr_finding_lookup(const char *key, size_t *index);
/* Probability threshold of "has KEY" (0.5). */
#define CMR_FINDING_PRESENT 0.5f

/* The bank's prompts embedded by one model.  Scores (all in [0, 1]):
 *  - binary finding: sigmoid(scale * (cos(x, P) - cos(x, N))), P and N the
 *    means of the positive and negative prompt embeddings (a two-way
 *    softmax of scaled cosines): above 0.5 when x is nearer the positive;
 *  - diagnosis d: sigmoid(scale * (cos(x, P_d) - max over e != d of
 *    cos(x, P_e))), d against the likeliest other diagnosis: above 0.5
 *    exactly when d is the model's first choice.
 * scale is CMR_FINDINGS_SCALE (the inverse CLIP temperature).  (Changed at
 * 00:50 from a softmax over diagnoses, whose 0.5 threshold almost no study
 * reached; the function signatures are unchanged.) */
#define CMR_FINDINGS_SCALE 20.0f
typedef struct cmr_findings cmr_findings;

/* Encode every prompt with model's text tower (once; ~1 ms).  model is only
 * used during the call. */
int cmr_findings_new(cmr_model *model, cmr_findings **out);
void cmr_findings_free(cmr_findings *f); /* NULL is harmless */
size_t cmr_findings_count(const cmr_findings *f);          /* = cmr_finding_bank_size() */
const char *cmr_findings_name(const cmr_findings *f, size_t i); /* bank key; NULL past the end */
unsigned cmr_findings_dim(const cmr_findings *f);
/* scores[cmr_findings_count(f)] for one image vector (dim floats, need not
 * be normalised).  Thread-safe: f is read-only after new. */
int cmr_findings_score(const cmr_findings *f, const float *image_vec, float *scores);
/* The same as name/score pairs for a cmr_case (names are the bank's static
 * keys); out has room for cmr_findings_count(f). */
int cmr_findings_score_named(const cmr_findings *f, const float *image_vec, cmr_finding_score *out);
/* A store put hook (cmr_store_set_scorer) that scores with f: user is f. */
int cmr_findings_store_scorer(void *user, const float *image_unit, cmr_finding_score *out,
                              size_t max, size_t *n);
/* Recompute and store the scores of every case with an image vector (cases
 * indexed before findings existed, or after a bank change), in write
 * transactions of up to 256 cases.  *n_scored (may be NULL) gets the count. */
int cmr_findings_rescore(cmr_store *store, const cmr_findings *f, size_t *n_scored);
/* The same for cases with an image vector and no scores only (what `index`
 * runs after ingesting, so that re-indexing an older store fills them in). */
int cmr_findings_score_missing(cmr_store *store, const cmr_findings *f, size_t *n_scored);

/* ---- search ------------------------------------------------------------ */

/* One query: a phrase, a study folder, a stored case or a vector, with a
 * filter, a page, optional one-result-per-patient grouping and fusion
 * weights.  Zero-initialise and set what you need.
 *
 * Fusion (docs/searching.md): a hit's score is
 *     (w_image * sim_image + w_text * sim_text) / (sum of the weights of the
 *      spaces in which the hit has a vector)
 * where sim_image = cos(q_image, hit's image vector), sim_text =
 * cos(q_text, hit's impression vector).  q_image = q_text = the phrase's
 * (text) or the study's (study) or the given vector; for a case query they
 * are the case's own image and impression vectors.  A space with weight 0
 * is not searched; a hit with vectors only in weight-0 spaces is not a
 * result.  Candidates: the top N of each weighted space (union), rescored
 * exactly; N grows fourfold until no case outside the union could reach the
 * page (results->exact), so fusion costs no recall beyond the index's own.
 * Defaults (cmr_fusion_defaults): image 0.2, text 0.8 for text, study and
 * case queries; image 1, text 0 for a vector.
 * A search runs its index scans on one OpenMP thread (the calling thread's
 * setting is restored on return). */
typedef enum cmr_query_kind {
    CMR_QUERY_TEXT = 0,   /* text: a phrase (needs the model) */
    CMR_QUERY_STUDY = 1,  /* study_dir: the folder of one DICOM study (needs the model) */
    CMR_QUERY_CASE = 2,   /* case_id: a stored case; itself never a result */
    CMR_QUERY_VECTOR = 3  /* vector: dim floats in the shared space */
} cmr_query_kind;

#define CMR_SEARCH_DEFAULT_LIMIT 10
#define CMR_SEARCH_MAX_WINDOW 10000 /* offset + limit at most */

/* Default weights per kind (measured, docs/searching.md). */
void cmr_fusion_defaults(cmr_query_kind kind, float *w_image, float *w_text);

typedef struct cmr_query {
    cmr_query_kind kind;
    const char *text;          /* TEXT */
    const char *study_dir;     /* STUDY */
    uint64_t case_id;          /* CASE */
    const float *vector;       /* VECTOR */
    const cmr_filter *filter;  /* NULL: every case */
    size_t offset;             /* results skipped (paging) */
    size_t limit;              /* results returned; 0: CMR_SEARCH_DEFAULT_LIMIT */
    int one_per_patient;       /* keep each patient's best hit only (paging counts patients) */
    int include_same_patient;  /* CASE: also the query patient's other studies */
    int set_weights;           /* 0: cmr_fusion_defaults(kind); 1: use w_image, w_text */
    float w_image, w_text;     /* >= 0, not both 0 */
    int no_sentences;          /* skip the closest-sentence explanation (saves ~30 us per sentence) */
    int use_space;             /* CASE: query with the case's `space` vector against every */
    cmr_space space;           /* weighted space (cross-space), not each space with its own */
} cmr_query;

typedef struct cmr_result {
    uint64_t id;
    float score;                 /* fused */
    float sim[CMR_NSPACES];      /* per space; NaN where the hit or query has no vector */
    cmr_case *record;            /* owned by the results; record->findings: finding scores */
    const char *sentence;        /* impression sentence closest to the query; NULL if none
                                    (no impression, no model, or no_sentences) */
    float sentence_sim;          /* its cosine with q_text (text) or q_image (study, case); NaN if none */
    size_t n_views;
    const char *views[CMR_VIEW_COUNT_]; /* names of the views present ("cine_sax", ...), static */
    size_t n_folded;             /* one_per_patient: lower-ranked studies of this patient among
                                    the candidates, not shown */
} cmr_result;

typedef struct cmr_results {
    cmr_query_kind kind;
    size_t n;
    cmr_result *items;           /* best first; the page [offset, offset + n) */
    size_t offset, limit;
    int more;                    /* results exist after this page */
    uint64_t n_matching;         /* cases passing the filter with a vector in a weighted space
                                    (before grouping; excluded cases not counted) */
    int exact;                   /* 1: no case outside the candidates could rank on this page */
    size_t n_candidates;         /* union size that was rescored */
    float w_image, w_text;       /* weights used */
    float *query_findings;       /* STUDY and CASE: the query study's finding scores (bank
                                    order, cmr_finding_bank_size()), else NULL */
    double ms_encode, ms_search, ms_explain; /* time spent per stage */
} cmr_results;

typedef struct cmr_searcher cmr_searcher;

/* Borrow store and model (both must outlive the searcher).  model may be
 * NULL: case and vector queries only, no closest sentences; otherwise it
 * must be the store's model (CMR_EMODEL).  Threads: searches may run
 * concurrently on one searcher; model calls are serialised inside. */
int cmr_searcher_open(cmr_store *store, cmr_model *model, cmr_searcher **out);
void cmr_searcher_close(cmr_searcher *s); /* NULL is harmless */
/* NULL without a model. */
const cmr_findings *cmr_searcher_findings(const cmr_searcher *s);

int cmr_searcher_search(cmr_searcher *s, const cmr_query *q, cmr_results **out);
void cmr_results_free(cmr_results *r); /* NULL is harmless */

/* The model input a study must be turned into for model m (its declared
 * input through the "cmrclip" recipe; CMR_EUNSUPPORTED for another). */
int cmr_searcher_input_spec(const cmr_model *m, cmr_input_spec *spec);
int cmr_searcher_spec_from(const cmr_model_input *in, const char *model_name, cmr_input_spec *spec);

/* The results as a JSON object (jansson json_t *, new reference; NULL when
 * out of memory), the shape of docs/searching.md: kind, offset, limit, more,
 * n_matching, exact, n_candidates, fusion {w_image, w_text}, timing_ms,
 * query_findings, results [{rank, id, score, similarity {image, text},
 * findings {key: p}, sentence {text, similarity}, views [...], folded,
 * case}].  case_json renders each record ("case"); NULL: a summary (study
 * uid, date, site, sex, age, diagnosis codes, impression). */
struct json_t;
/* A JSON string, or null for NULL; text that is not UTF-8 has its bad bytes
 * shown as '?'.  New reference (NULL when out of memory). */
struct json_t *cmr_json_text(const char *s);
struct json_t *cmr_results_to_json(const cmr_results *r, struct json_t *(*case_json)(const cmr_case *c));

/* Split text into sentences: at '.', '!', '?' or ';' followed by white space
 * or the end, and at line breaks; decimals ("2.5 cm") and common
 * abbreviations are not breaks.  starts[i], lens[i] (at most max) index
 * text; *n gets the count.  Blank pieces are skipped. */
size_t cmr_split_sentences(const char *text, size_t *starts, size_t *lens, size_t max);

/* ---- audit ------------------------------------------------------------- */

/* The curators' audit (docs/audit.md): cases whose recorded diagnosis the
 * evidence disputes, near-duplicate studies, missing views, impressions that
 * contradict their code or are absent, cases embedded by another model or
 * lacking vectors, and store/index inconsistencies.  It only reads the
 * store; nothing is changed.  The call runs its searches on one OpenMP
 * thread (restored on return): FAISS's per-search thread team costs more
 * than thousands of single-vector searches. */
typedef enum cmr_audit_kind {
    CMR_AUDIT_LABEL_ERROR = 0, /* the images point to another diagnosis than code and impression */
    CMR_AUDIT_DUPLICATE,       /* two studies with near-identical images and matching metadata */
    CMR_AUDIT_MISSING_VIEW,    /* a view group the CMR-CLIP recipe needs is absent */
    CMR_AUDIT_CONTRADICTION,   /* the impression names another diagnosis than the code */
    CMR_AUDIT_OUTDATED_MODEL,  /* vectors from another model, or none */
    CMR_AUDIT_INCONSISTENCY,   /* cmr_store_verify found a problem */
    CMR_AUDIT_NO_IMPRESSION,   /* no impression text (empty section, or no report) */
    CMR_AUDIT_NKINDS
} cmr_audit_kind;
#define CMR_AUDIT_ALL ((1u << CMR_AUDIT_NKINDS) - 1u)

/* "label_error", "duplicate", ... (static); NULL for an unknown kind. */
const char *cmr_audit_kind_name(cmr_audit_kind kind);
int cmr_audit_kind_parse(const char *name, cmr_audit_kind *out);
/* A comma-separated list of kind names ("duplicate,label_error", or "all")
 * as a bit set (1u << kind); the error names the bad word. */
int cmr_audit_kinds_parse(const char *list, unsigned *out);

typedef struct cmr_audit_options {
    unsigned kinds;          /* bit (1u << kind) per kind to look for; 0 = all */
    float min_confidence;    /* findings below are dropped (default 0.4) */
    unsigned k;              /* neighbours for the consensus (default 20) */
    float dup_cosine;        /* duplicate threshold on cosine; 0 = chosen from the data */
    unsigned dup_k;          /* neighbours fetched per case for duplicates (default 4) */
    /* Progress (phase, done, total) from the audit's thread; NULL: none. */
    cmr_progress_fn progress;
    void *progress_user;
} cmr_audit_options;
void cmr_audit_options_init(cmr_audit_options *o);

typedef struct cmr_audit_finding {
    cmr_audit_kind kind;
    uint64_t case_id;        /* 0 for a store-wide inconsistency */
    uint64_t other_id;       /* duplicate: the other study; else 0 */
    const char *study_uid;   /* NULL when case_id is 0 */
    const char *other_uid;   /* NULL unless other_id */
    float confidence;        /* in [0, 1] */
    const char *reason;      /* one sentence */
    const char *recorded;    /* label_error, contradiction: the coded diagnosis; else NULL */
    const char *suggested;   /* label_error, contradiction: the diagnosis the evidence
                                points to (code, and label when known); else NULL */
} cmr_audit_finding;

typedef struct cmr_audit_report {
    size_t n;
    cmr_audit_finding *findings; /* by kind, then confidence (highest first), then case id */
    size_t count[CMR_AUDIT_NKINDS]; /* findings of each kind */
    unsigned kinds;          /* kinds looked for (a kind needing what the store lacks is dropped) */
    uint64_t cases;          /* cases examined */
    uint64_t labelled;       /* of which with a diagnosis code (label checks) */
    size_t n_classes;        /* distinct recorded diagnoses (first SNOMED CT code, else first code) */
    float dup_cosine;        /* the duplicate threshold used (0 if not looked for) */
    int zero_shot;           /* 1 if a model encoded prompts (zero-shot evidence used) */
    double seconds;          /* wall time of cmr_audit_run */
    size_t n_notes;
    char **notes;            /* what was skipped and why (e.g. no model: no zero-shot) */
} cmr_audit_report;

/* Audit a store.  model (may be NULL) encodes the diagnosis prompts for the
 * zero-shot evidence; it must be the store's model (CMR_EMODEL otherwise).
 * opts may be NULL (defaults).  *out owns every string of its findings;
 * free it with cmr_audit_report_free.  The store is only read. */
int cmr_audit_run(cmr_store *store, cmr_model *model, const cmr_audit_options *opts,
                  cmr_audit_report **out);
/* The report as a JSON object (jansson json_t *, new reference; NULL when
 * out of memory): kind, sound (the caller's verdict on store consistency),
 * cases, labelled, classes, duplicate_cosine, zero_shot, seconds, counts,
 * notes, problems (the inconsistencies' reasons), findings. */
struct json_t *cmr_audit_report_to_json(const cmr_audit_report *r, int sound);
void cmr_audit_report_free(cmr_audit_report *r); /* NULL is harmless */

/* Precision and recall of a report of store against a cmr-phantom
 * truth.json (docs/audit.md says which planted problem counts for which
 * kind).  Only studies present in the store count as planted (one the
 * indexer could not read cannot be audited).  Duplicates are scored as
 * pairs, other kinds per study; findings below min_confidence are left
 * out.  A kind the truth cannot score (outdated model, inconsistency) has
 * scored = 0. */
typedef struct cmr_audit_score {
    int scored;
    size_t truth, found, hits; /* planted, reported, reported and planted */
    double precision, recall;  /* NaN when the denominator is 0 */
} cmr_audit_score;
int cmr_audit_score_truth(cmr_store *store, const cmr_audit_report *r, const char *truth_path,
                          float min_confidence, cmr_audit_score scores[CMR_AUDIT_NKINDS]);

/* ---- server ------------------------------------------------------------ */

/* `cmrsearch serve`: the HTTP/1.1 API of schema/openapi.json and the web page,
 * on libmicrohttpd (docs/server.md).  One thread per connection; encodings
 * share a pool of model handles.
 *
 * Security: listening anywhere but loopback needs a token file (lines
 * "id:secret", secrets of 16 characters or more) and then every /api request
 * needs "Authorization: Bearer SECRET" (compared in constant time); a token
 * file on loopback turns tokens on there too.  Bodies are limited in size,
 * each client (token id, else address) by a token bucket, parameters are
 * checked strictly, and no file path is built from request text; without
 * tokens, only requests whose Host names this machine are answered (DNS
 * rebinding).  Every search and every case opened is written to the store's
 * query log (cmr_store.h, "query log").
 *
 * Threads: the server's own (one per connection, plus the query-log writer);
 * the caller's thread returns from cmr_server_start at once. */
#include <stdio.h>

typedef struct cmr_server cmr_server;

/* Turn a --where expression into a filter: *filter points into *owner, which
 * where_free releases (the parser lives in cli/, above the searcher).  Errors return a CMR_E* code with the message in
 * cmr_errmsg() (shown to the client). */
typedef int (*cmr_server_where_parse_fn)(const char *expr, const cmr_filter **filter, void **owner);
typedef void (*cmr_server_where_free_fn)(void *owner);

typedef struct cmr_server_config {
    const char *listen;         /* "HOST:PORT" (IPv4 or [IPv6]); NULL: "127.0.0.1:8080"; port 0: any free one */
    const char *token_file;     /* see above; NULL: none */
    const char *model_dir;      /* the store's model; NULL: text and study queries answer 503 */
    unsigned encoders;          /* model handles (concurrent encodings); 0: 2 */
    unsigned max_connections;   /* 0: 256 */
    size_t max_body;            /* request body bytes; 0: 256 MiB */
    unsigned max_upload_files;  /* files in an uploaded study; 0: 4096 */
    uint64_t max_upload_bytes;  /* their total uncompressed size; 0: 1 GiB */
    double rate;                /* requests per second per client; 0: 50; negative: no limit */
    double burst;               /* bucket size; 0: max(2 * rate, 100) */
    FILE *access_log;           /* one line per request (method, path, status, µs; no query text); NULL: none */
    cmr_server_where_parse_fn where_parse; /* NULL: the `where` parameter is refused */
    cmr_server_where_free_fn where_free;
} cmr_server_config;

/* Start serving store (borrowed: it must stay open until cmr_server_stop;
 * opened writable, or the query log cannot be written and start fails).  The
 * model must be the one the store's vectors come from (CMR_EMODEL). */
int cmr_server_start(cmr_store *store, const cmr_server_config *config, cmr_server **out);
/* The port actually bound (useful with port 0). */
unsigned cmr_server_port(const cmr_server *server);
/* Query-log entries written so far by this server (tests, shutdown summary). */
uint64_t cmr_server_logged(const cmr_server *server);
/* Stop accepting, finish running requests, write the rest of the query log
 * and release everything.  Returns the first query-log write error, if any.
 * NULL is harmless. */
int cmr_server_stop(cmr_server *server);

#ifdef __cplusplus
}
#endif

#endif
