/* Internal to indexer/ and its callers (cli): the ingest pipeline.
 *
 * scan -> classify -> reports (CDA, text, SR) -> link -> de-identify ->
 * (optional) tensor + embedding -> one LMDB transaction per study.
 * Re-running on the same archive skips studies whose files and reports are
 * unchanged (by fingerprint) and already embedded by the store's model. */
#ifndef CMR_INGEST_H
#define CMR_INGEST_H

#include "cmr_indexer.h"
#include "cmr_store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Turns a study's input tensor and impression into the two vectors (each
 * `dim` floats).  tensor (with info and image_vec) is NULL when the study's
 * model input could not be built: then only the impression is embedded.
 * impression may be NULL (then text_vec may be left unset and *has_text =
 * 0).  Returns 0 or a CMR_E* code with cmr_errmsg() set. */
typedef int (*cmr_embed_fn)(void *user, const float *tensor, const cmr_tensor_info *info,
                            const char *impression, float *image_vec, float *text_vec, int *has_text);

typedef void (*cmr_ingest_progress_fn)(void *user, const char *phase, size_t done, size_t total);

typedef struct cmr_ingest_options {
    unsigned threads;               /* 0: number of CPUs */
    const char *manifest_path;      /* archive manifest (schema/archive-manifest.xsd); may be NULL */
    const char *cda_schema_path;    /* validate CDA reports against it; may be NULL */
    int force;                      /* re-ingest unchanged studies too */
    /* The model: NULL embed stores cases without vectors (marked so; the
     * searcher ignores them until they are embedded). */
    const cmr_input_spec *spec;
    cmr_embed_fn embed;
    void *embed_user;
    const char *model_name, *model_hash;
    unsigned dim;
    cmr_ingest_progress_fn progress;
    void *progress_user;
} cmr_ingest_options;

typedef struct cmr_ingest_skip {
    char *what;    /* study UID, or a file */
    char *reason;
} cmr_ingest_skip;

typedef struct cmr_ingest_summary {
    size_t files_seen, dicom_files, non_dicom_files;
    size_t studies_found;
    size_t studies_new, studies_updated, studies_unchanged, studies_skipped;
    size_t studies_without_vectors;
    size_t series_by_label[CMR_SERIES_LABEL_COUNT_];
    size_t reports_found, reports_linked, reports_unreadable, reports_unlinked;
    size_t studies_without_impression;
    size_t n_skips;
    cmr_ingest_skip *skips;      /* studies and files skipped, with reasons */
    size_t n_issues;
    char **issues;               /* everything else worth telling, one line each */
} cmr_ingest_summary;

/* Ingest archive folders (or files) into the store.  Returns 0 when the run
 * completed, even if some studies or files were skipped (see the summary);
 * negative only when nothing could be done (store not writable, roots
 * missing, manifest invalid). */
int cmr_ingest(cmr_store *store, const char *const *roots, size_t n_roots,
               const cmr_ingest_options *opts, cmr_ingest_summary **out);
void cmr_ingest_summary_free(cmr_ingest_summary *s);

#ifdef __cplusplus
}
#endif

#endif
