/* Private to store/: the handle, LMDB layout and helpers shared by its files. */
#ifndef CMR_STORE_INTERNAL_H
#define CMR_STORE_INTERNAL_H

#include <lmdb.h>
#include <pthread.h>
#include <stdbool.h>

#include <faiss/c_api/Index_c.h>
#include <faiss/c_api/error_c.h>

#include "cmr_store.h"

#define CMR_STORE_FORMAT 1u
#define CMR_DEFAULT_IVF_THRESHOLD 20000u
#define CMR_EXACT_SUBSET_LIMIT 4096u /* filtered queries matching fewer cases scan them exactly */
#define CMR_MAX_K 10000u

enum { CMR_INDEX_NONE = 0, CMR_INDEX_FLAT = 1, CMR_INDEX_IVF = 2 };
enum { CMR_CHANGE_PUT = 1, CMR_CHANGE_DELETE = 2 };

/* The derived in-memory state of one vector space. */
typedef struct cmr_index {
    FaissIndex *faiss;     /* NULL until built or loaded */
    int kind;
    uint64_t generation;   /* store generation this index reflects */
    uint64_t ntrain;       /* vectors in the space when the IVF was trained */
    unsigned nlist;
    char factory[48];
    uint64_t disk_generation; /* stamp of the file on disk when last read or written */
} cmr_index;

/* Per-case attributes kept in memory for filter evaluation (16 bytes). */
typedef struct cmr_facet {
    int32_t date;
    uint32_t site;         /* interned id, 0 = none */
    uint32_t manufacturer; /* interned id of the lower-cased name, 0 = none */
    int16_t age;
    uint8_t sex;
    uint8_t flags;         /* CMR_FACET_* */
} cmr_facet;
enum { CMR_FACET_LIVE = 1, CMR_FACET_IMAGE = 2, CMR_FACET_TEXT = 4 };
/* A facets value is the cmr_facet, then one float32 per finding slot known
 * when it was written (NaN: no score); slots added later read as NaN. */

struct cmr_store {
    char *dir;
    unsigned flags;
    MDB_env *env;
    MDB_dbi dbi_meta, dbi_cases, dbi_vec[CMR_NSPACES], dbi_uid, dbi_patient, dbi_diagnosis,
        dbi_facets, dbi_dict, dbi_changes;
    MDB_dbi dbi_querylog; /* querylog.c; valid when has_querylog */
    int has_querylog;
    uint8_t site_key[32];
    uint8_t uuid[16];
    char model_name[64], model_hash[96], model_id[176];
    unsigned dim;
    char factory[48];
    uint64_t ivf_threshold;
    unsigned nprobe;
    uint64_t exact_limit; /* filtered queries matching at most this many scan exactly */

    /* Guards idx[] and the facet cache; searches hold it shared. */
    pthread_rwlock_t lock;
    cmr_index idx[CMR_NSPACES];
    cmr_facet *facets;      /* indexed by case id; NULL until first filtered query */
    uint64_t facets_len;
    uint64_t facets_generation;
    float *facet_scores;    /* facets_len x facet_stride finding scores, NaN = none */
    size_t facet_stride;    /* finding slots when the cache was (re)built */

    /* Finding slots (meta "findings": names joined by '\n', append-only),
     * as last read; guarded by lock.  Names never move once known. */
    char finding_names[CMR_STORE_FINDINGS_MAX][CMR_FINDING_NAME_MAX + 1];
    const char *finding_ptrs[CMR_STORE_FINDINGS_MAX];
    size_t n_finding_names;
    cmr_scorer_fn scorer;
    void *scorer_user;

    cmr_progress_fn progress;
    void *progress_user;
};

struct cmr_txn {
    cmr_store *store;
    MDB_txn *txn;
    uint64_t generation; /* the generation this transaction commits */
    uint64_t next_id;
    uint64_t next_dict;
    bool changed;
    /* A model bound in this transaction, applied to the handle on commit. */
    char model_name[64], model_hash[96];
    unsigned model_dim;
    bool model_replaced; /* cmr_txn_replace_model: reset the indexes on commit, restore on abort */
};

/* Big-endian keys keep LMDB's byte order equal to numeric order. */
static inline void cmr_be64_put(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}
static inline uint64_t cmr_be64_get(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

int cmr_lmdb_fail(int rc, const char *what);
int cmr_log_change(cmr_txn *t, uint64_t id, uint8_t op);
int cmr_load_case(cmr_store *s, MDB_txn *txn, uint64_t id, cmr_case **out);

/* meta */
int cmr_meta_get_u64(MDB_txn *txn, const cmr_store *s, const char *key, uint64_t *out);
int cmr_meta_put_u64(MDB_txn *txn, const cmr_store *s, const char *key, uint64_t v);

/* records (record.c) */
int cmr_record_encode(const cmr_case *c, uint8_t **out, size_t *len);
int cmr_record_decode(const void *data, size_t len, uint64_t id, cmr_case **out);
void cmr_case_facet(const cmr_case *c, cmr_facet *f); /* date, age, sex only */
int cmr_finding_name_check(const char *name);         /* 1 if a valid finding name */
int cmr_findings_check(const cmr_finding_score *f, size_t n, const char *uid);

/* finding slots and facet values (findings.c) */
/* Parse meta "findings" into names[] (*n slots). */
int cmr_finding_slots_read(cmr_store *s, MDB_txn *txn, char names[][CMR_FINDING_NAME_MAX + 1], size_t *n);
/* Refresh the handle's slot list from txn; caller holds lock for writing. */
int cmr_finding_slots_refresh(cmr_store *s, MDB_txn *txn);
/* The facets value of a case: f, then its scores in slot order (adding
 * slots for new names to meta in the write transaction).  *out is malloc'ed. */
int cmr_facet_value(cmr_txn *t, const cmr_facet *f, const cmr_finding_score *scores, size_t n,
                    uint8_t **out, size_t *len);
/* Fill scores[n_slots] (NaN where absent) from a stored facets value. */
void cmr_facet_scores(const void *value, size_t len, float *scores, size_t n_slots);
/* Run the scorer for a put without findings; *n 0 if none. */
int cmr_findings_from_scorer(cmr_store *s, const float *image_unit, cmr_finding_score *out, size_t *n);

/* vectors */
int cmr_vector_normalise(const float *in, unsigned dim, float *out, const char *what);

/* indexes (index.c) */
int cmr_index_sync(cmr_store *s, cmr_space space, MDB_txn *rtxn, uint64_t generation);
int cmr_index_rebuild(cmr_store *s, cmr_space space, MDB_txn *rtxn, uint64_t generation);
int cmr_index_save(cmr_store *s, cmr_space space);
unsigned cmr_index_nprobe(const cmr_store *s, unsigned nlist);
void cmr_index_remove_stale_temporaries(const cmr_store *s);
void cmr_index_reset(cmr_index *idx);
const char *cmr_index_kind_name(int kind);
int cmr_index_path(const cmr_store *s, cmr_space space, char *buf, size_t len);
typedef struct cmr_index_header {
    uint64_t generation, ntotal, ntrain, payload_len;
    uint32_t space, dim, nlist, kind;
    uint8_t uuid[16];
    char factory[48];
} cmr_index_header;
int cmr_index_read_header(const cmr_store *s, cmr_space space, cmr_index_header *h, long *file_size);

int cmr_dict_lookup(cmr_store *s, MDB_txn *txn, char kind, const char *name, uint32_t *id);

/* change log */
int cmr_changes_since(cmr_store *s, MDB_txn *txn, uint64_t after, uint64_t upto, uint64_t **ids,
                      size_t *n);

/* query log (querylog.c): open or create its table in the opening transaction */
int cmr_querylog_open_table(cmr_store *s, MDB_txn *txn, int create);

/* facets and search (search.c) */
int cmr_facets_sync(cmr_store *s, MDB_txn *rtxn, uint64_t generation);
uint64_t cmr_current_generation(cmr_store *s, MDB_txn *txn);
int cmr_store_read_begin(cmr_store *s, MDB_txn **txn);

#endif
