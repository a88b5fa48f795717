/* The store handle, its LMDB environment, and the write path.
 *
 * LMDB databases (all keys of case ids are 8-byte big-endian):
 *   meta        settings and counters (format, generation, next_id, model, ...)
 *   cases       id -> record (record.c)
 *   vec_image   id -> float[dim], L2-normalised
 *   vec_text    id -> float[dim]
 *   by_uid      Study Instance UID -> id
 *   by_patient  patient key (32 bytes) -> ids (sorted duplicates)
 *   by_diagnosis code -> ids (sorted duplicates)
 *   facets      id -> cmr_facet (what filters read)
 *   dict        'S'|'M' + name -> u32 and back, interning sites and manufacturers
 *   changes     (generation, id) -> op: what each commit touched, so that an
 *               index stamped with an older generation can be caught up */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "cmr_sha256.h"
#include "store_internal.h"

#define MAP_SIZE ((size_t)1 << 40) /* address space only: LMDB grows the file as needed */

int cmr_lmdb_fail(int rc, const char *what)
{
    int code = rc == ENOMEM ? CMR_ENOMEM : rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND ? CMR_ECORRUPT
             : rc == EACCES ? CMR_ERDONLY : rc == MDB_MAP_FULL ? CMR_EIO : CMR_EDB;
    return cmr_fail(code, "%s: %s", what, mdb_strerror(rc));
}

static MDB_val key_u64(uint8_t buf[8], uint64_t v)
{
    cmr_be64_put(buf, v);
    return (MDB_val){8, buf};
}

static MDB_val key_str(const char *s) { return (MDB_val){strlen(s), (void *)s}; }

int cmr_meta_get_u64(MDB_txn *txn, const cmr_store *s, const char *key, uint64_t *out)
{
    MDB_val k = key_str(key), v;
    int rc = mdb_get(txn, s->dbi_meta, &k, &v);
    if (rc == MDB_NOTFOUND) {
        *out = 0;
        return 0;
    }
    if (rc)
        return cmr_lmdb_fail(rc, "reading store metadata");
    if (v.mv_size != 8)
        return cmr_fail(CMR_ECORRUPT, "store metadata '%s' has %zu bytes, not 8", key, v.mv_size);
    *out = cmr_be64_get(v.mv_data);
    return 0;
}

int cmr_meta_put_u64(MDB_txn *txn, const cmr_store *s, const char *key, uint64_t value)
{
    uint8_t b[8];
    MDB_val k = key_str(key), v = key_u64(b, value);
    int rc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
    return rc ? cmr_lmdb_fail(rc, "writing store metadata") : 0;
}

static int meta_get_str(MDB_txn *txn, const cmr_store *s, const char *key, char *out, size_t cap)
{
    MDB_val k = key_str(key), v;
    int rc = mdb_get(txn, s->dbi_meta, &k, &v);
    out[0] = '\0';
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc)
        return cmr_lmdb_fail(rc, "reading store metadata");
    if (v.mv_size >= cap)
        return cmr_fail(CMR_ECORRUPT, "store metadata '%s' is too long", key);
    memcpy(out, v.mv_data, v.mv_size);
    out[v.mv_size] = '\0';
    return 0;
}

static int meta_put_bytes(MDB_txn *txn, const cmr_store *s, const char *key, const void *d, size_t n)
{
    MDB_val k = key_str(key), v = {n, (void *)d};
    int rc = mdb_put(txn, s->dbi_meta, &k, &v, 0);
    return rc ? cmr_lmdb_fail(rc, "writing store metadata") : 0;
}

uint64_t cmr_current_generation(cmr_store *s, MDB_txn *txn)
{
    uint64_t g = 0;
    cmr_meta_get_u64(txn, s, "generation", &g);
    return g;
}

int cmr_store_read_begin(cmr_store *s, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, txn);
    return rc ? cmr_lmdb_fail(rc, "starting a read transaction") : 0;
}

/* ---- site secret ------------------------------------------------------------ */

static int site_key_load(cmr_store *s, int create)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/site.key", s->dir);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT && create) {
        uint8_t key[32];
        if (getrandom(key, sizeof key, 0) != (ssize_t)sizeof key)
            return cmr_fail(CMR_EIO, "%s: cannot get random bytes: %s", path, strerror(errno));
        /* O_EXCL: two processes creating one store must not end with two secrets. */
        fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd >= 0) {
            ssize_t w = write(fd, key, sizeof key);
            int ok = w == (ssize_t)sizeof key && fsync(fd) == 0;
            close(fd);
            if (!ok) {
                unlink(path);
                return cmr_fail(CMR_EIO, "%s: cannot write the site secret", path);
            }
        } else if (errno != EEXIST) {
            return cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
        }
        fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (fd < 0)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", path,
                        errno == ENOENT ? "site secret is missing (patient keys cannot be computed)"
                                        : strerror(errno));
    struct stat st;
    if (fstat(fd, &st) == 0 && (st.st_mode & 077))
        fprintf(stderr, "cmrsearch: warning: %s is readable by others; run chmod 600\n", path);
    ssize_t r = read(fd, s->site_key, sizeof s->site_key);
    close(fd);
    if (r != (ssize_t)sizeof s->site_key)
        return cmr_fail(CMR_ECORRUPT, "%s: site secret is not 32 bytes", path);
    return 0;
}

int cmr_store_patient_key(const cmr_store *s, const char *patient_id,
                          uint8_t key[CMR_PATIENT_KEY_BYTES])
{
    if (!patient_id || !*patient_id)
        return cmr_fail(CMR_EINVAL, "empty patient identifier");
    cmr_hmac_sha256(s->site_key, sizeof s->site_key, patient_id, strlen(patient_id), key);
    return 0;
}

/* ---- open / close -------------------------------------------------------------- */

static int open_dbs(cmr_store *s, MDB_txn *txn, unsigned create)
{
    static const char *const names[] = {"meta", "cases", "vec_image", "vec_text", "by_uid",
                                         "by_patient", "by_diagnosis", "facets", "dict", "changes"};
    MDB_dbi *dbis[] = {&s->dbi_meta, &s->dbi_cases, &s->dbi_vec[0], &s->dbi_vec[1], &s->dbi_uid,
                       &s->dbi_patient, &s->dbi_diagnosis, &s->dbi_facets, &s->dbi_dict,
                       &s->dbi_changes};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        unsigned f = create ? MDB_CREATE : 0;
        if (dbis[i] == &s->dbi_patient || dbis[i] == &s->dbi_diagnosis)
            f |= MDB_DUPSORT | MDB_DUPFIXED;
        int rc = mdb_dbi_open(txn, names[i], f, dbis[i]);
        if (rc == MDB_NOTFOUND)
            return cmr_fail(CMR_ECORRUPT, "%s: not a cmrsearch store (no '%s' table)", s->dir,
                            names[i]);
        if (rc)
            return cmr_lmdb_fail(rc, "opening store tables");
    }
    return 0;
}

static int load_settings(cmr_store *s, MDB_txn *txn, const cmr_store_config *config, int creating)
{
    int rc;
    uint64_t format = 0, dim = 0, thr = 0, nprobe = 0;
    if ((rc = cmr_meta_get_u64(txn, s, "format", &format)))
        return rc;
    if (creating && format == 0) {
        uint8_t uuid[16];
        if (getrandom(uuid, sizeof uuid, 0) != (ssize_t)sizeof uuid)
            return cmr_fail(CMR_EIO, "cannot get random bytes");
        const char *factory = config && config->factory ? config->factory : "";
        if (strlen(factory) >= sizeof s->factory)
            return cmr_fail(CMR_EINVAL, "FAISS factory string '%s' is too long", factory);
        if ((rc = cmr_meta_put_u64(txn, s, "format", CMR_STORE_FORMAT)) ||
            (rc = meta_put_bytes(txn, s, "uuid", uuid, sizeof uuid)) ||
            (rc = meta_put_bytes(txn, s, "factory", factory, strlen(factory))) ||
            (rc = cmr_meta_put_u64(txn, s, "ivf_threshold",
                                   config && config->ivf_threshold ? config->ivf_threshold
                                                                   : CMR_DEFAULT_IVF_THRESHOLD)) ||
            (rc = cmr_meta_put_u64(txn, s, "nprobe", config ? config->nprobe : 0)) ||
            (rc = cmr_meta_put_u64(txn, s, "next_id", 1)) ||
            (rc = cmr_meta_put_u64(txn, s, "created", (uint64_t)time(NULL))))
            return rc;
        format = CMR_STORE_FORMAT;
    }
    if (format == 0)
        return cmr_fail(CMR_ENOTFOUND, "%s: no cmrsearch store here (create one with "
                                       "'cmrsearch init --db %s')", s->dir, s->dir);
    if (format != CMR_STORE_FORMAT)
        return cmr_fail(CMR_EUNSUPPORTED, "%s: store format %llu is not supported (this "
                                          "version reads format %u)",
                        s->dir, (unsigned long long)format, CMR_STORE_FORMAT);
    MDB_val k = key_str("uuid"), v;
    if (mdb_get(txn, s->dbi_meta, &k, &v) || v.mv_size != sizeof s->uuid)
        return cmr_fail(CMR_ECORRUPT, "%s: store identity is missing", s->dir);
    memcpy(s->uuid, v.mv_data, sizeof s->uuid);
    if ((rc = meta_get_str(txn, s, "factory", s->factory, sizeof s->factory)) ||
        (rc = cmr_meta_get_u64(txn, s, "ivf_threshold", &thr)) ||
        (rc = cmr_meta_get_u64(txn, s, "nprobe", &nprobe)) ||
        (rc = meta_get_str(txn, s, "model_name", s->model_name, sizeof s->model_name)) ||
        (rc = meta_get_str(txn, s, "model_hash", s->model_hash, sizeof s->model_hash)) ||
        (rc = cmr_meta_get_u64(txn, s, "dim", &dim)))
        return rc;
    s->ivf_threshold = thr ? thr : CMR_DEFAULT_IVF_THRESHOLD;
    s->nprobe = (unsigned)nprobe;
    s->dim = (unsigned)dim;
    if (s->dim)
        snprintf(s->model_id, sizeof s->model_id, "%s@%.16s", s->model_name, s->model_hash);
    return 0;
}

int cmr_store_open(const char *dir, unsigned flags, const cmr_store_config *config, cmr_store **out)
{
    *out = NULL;
    if (!dir || !*dir)
        return cmr_fail(CMR_EINVAL, "no store directory given");
    int create = (flags & CMR_STORE_CREATE) && !(flags & CMR_STORE_RDONLY);
    if (create && mkdir(dir, 0700) != 0 && errno != EEXIST)
        return cmr_fail(CMR_EIO, "%s: cannot create directory: %s", dir, strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cmr_fail(CMR_ENOTFOUND, "%s: no such store directory", dir);

    cmr_store *s = calloc(1, sizeof *s);
    if (!s || !(s->dir = strdup(dir))) {
        free(s);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    s->flags = flags;
    s->exact_limit = CMR_EXACT_SUBSET_LIMIT;
    pthread_rwlock_init(&s->lock, NULL);
    MDB_txn *txn = NULL;
    int rc;
    if ((rc = mdb_env_create(&s->env)) || (rc = mdb_env_set_maxdbs(s->env, 16)) ||
        (rc = mdb_env_set_mapsize(s->env, MAP_SIZE)) || (rc = mdb_env_set_maxreaders(s->env, 254))) {
        rc = cmr_lmdb_fail(rc, "creating LMDB environment");
        goto fail;
    }
    if (!create) {
        char data[4096];
        snprintf(data, sizeof data, "%s/data.mdb", dir);
        if (access(data, F_OK) != 0) {
            rc = cmr_fail(CMR_ENOTFOUND, "%s: no cmrsearch store here (create one with "
                                         "'cmrsearch init --db %s')", dir, dir);
            goto fail;
        }
    }
    /* MDB_NOTLS: read transactions are not tied to threads (a server hands
     * queries between threads).  Durability stays LMDB's default: every
     * commit is synced, which is what "every committed case survives" needs. */
    unsigned env_flags = MDB_NOTLS | (flags & CMR_STORE_RDONLY ? MDB_RDONLY : 0);
    if ((rc = mdb_env_open(s->env, dir, env_flags, 0600))) {
        rc = cmr_lmdb_fail(rc, dir);
        goto fail;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, flags & CMR_STORE_RDONLY ? MDB_RDONLY : 0, &txn))) {
        rc = cmr_lmdb_fail(rc, "starting a transaction");
        goto fail;
    }
    if ((rc = open_dbs(s, txn, !(flags & CMR_STORE_RDONLY))) ||
        (rc = cmr_querylog_open_table(s, txn, !(flags & CMR_STORE_RDONLY))) ||
        (rc = load_settings(s, txn, config, create)))
        goto fail;
    /* Committed even when read-only: LMDB closes table handles opened in an
     * aborted transaction. */
    if ((rc = mdb_txn_commit(txn))) {
        txn = NULL;
        rc = cmr_lmdb_fail(rc, "initialising store");
        goto fail;
    }
    txn = NULL;
    if ((rc = site_key_load(s, create)))
        goto fail;
    if (!(flags & CMR_STORE_RDONLY))
        cmr_index_remove_stale_temporaries(s);
    *out = s;
    return 0;
fail:
    if (txn)
        mdb_txn_abort(txn);
    cmr_store_close(s);
    return rc;
}

int cmr_store_close(cmr_store *s)
{
    if (!s)
        return 0;
    int rc = 0;
    if (s->env && !(s->flags & CMR_STORE_RDONLY) && s->dim) {
        /* Only write indexes that this handle actually holds in memory: a
         * handle that never searched has nothing newer than the disk. */
        int held = s->idx[0].faiss || s->idx[1].faiss;
        if (held)
            rc = cmr_store_flush(s);
    }
    for (int i = 0; i < CMR_NSPACES; i++)
        cmr_index_reset(&s->idx[i]);
    free(s->facets);
    free(s->facet_scores);
    if (s->env)
        mdb_env_close(s->env);
    pthread_rwlock_destroy(&s->lock);
    memset(s->site_key, 0, sizeof s->site_key);
    free(s->dir);
    free(s);
    return rc;
}

void cmr_store_set_progress(cmr_store *s, cmr_progress_fn fn, void *user)
{
    s->progress = fn;
    s->progress_user = user;
}

/* ---- model ---------------------------------------------------------------------- */

void cmr_store_model(const cmr_store *s, const char **name, const char **hash, unsigned *dim)
{
    if (name)
        *name = s->model_name;
    if (hash)
        *hash = s->model_hash;
    if (dim)
        *dim = s->dim;
}

static void apply_model(cmr_store *s, const char *name, const char *hash, unsigned dim)
{
    snprintf(s->model_name, sizeof s->model_name, "%s", name);
    snprintf(s->model_hash, sizeof s->model_hash, "%s", hash);
    s->dim = dim;
    snprintf(s->model_id, sizeof s->model_id, "%s@%.16s", name, hash);
}

/* Within a write transaction: record the model if the store has none, or
 * check that it is the same.  *bound is set when this call recorded it. */
static int bind_model(cmr_store *s, MDB_txn *txn, const char *name, const char *hash, unsigned dim, int *bound)
{
    *bound = 0;
    if (!name || !*name || !hash || !*hash || dim == 0 || dim > 65536)
        return cmr_fail(CMR_EINVAL, "a model needs a name, a weights hash and a dimension "
                                    "between 1 and 65536");
    if (strlen(name) >= sizeof s->model_name || strlen(hash) >= sizeof s->model_hash)
        return cmr_fail(CMR_EINVAL, "model name or hash is too long");
    /* Re-read inside the write transaction: another process may have set it. */
    char cur_name[sizeof s->model_name], cur_hash[sizeof s->model_hash];
    uint64_t cur_dim = 0;
    int rc;
    if ((rc = meta_get_str(txn, s, "model_name", cur_name, sizeof cur_name)) ||
        (rc = meta_get_str(txn, s, "model_hash", cur_hash, sizeof cur_hash)) ||
        (rc = cmr_meta_get_u64(txn, s, "dim", &cur_dim)))
        return rc;
    if (cur_dim) {
        if (strcmp(cur_name, name) != 0 || strcmp(cur_hash, hash) != 0 || cur_dim != dim)
            return cmr_fail(CMR_EMODEL, "%s holds vectors of model %s (weights %s, dimension %llu); "
                                        "refusing model %s (weights %s, dimension %u): vectors "
                                        "of different models are never mixed",
                            s->dir, cur_name, cur_hash, (unsigned long long)cur_dim, name, hash, dim);
        return 0;
    }
    if ((rc = meta_put_bytes(txn, s, "model_name", name, strlen(name))) ||
        (rc = meta_put_bytes(txn, s, "model_hash", hash, strlen(hash))) ||
        (rc = cmr_meta_put_u64(txn, s, "dim", dim)))
        return rc;
    *bound = 1;
    return 0;
}

int cmr_store_set_model(cmr_store *s, const char *name, const char *hash, unsigned dim)
{
    cmr_txn *t;
    int rc = cmr_txn_begin(s, &t);
    if (rc)
        return rc;
    if ((rc = cmr_txn_set_model(t, name, hash, dim))) {
        cmr_txn_abort(t);
        return rc;
    }
    return cmr_txn_commit(t);
}

int cmr_txn_set_model(cmr_txn *t, const char *name, const char *hash, unsigned dim)
{
    int bound;
    int rc = bind_model(t->store, t->txn, name, hash, dim, &bound);
    if (rc)
        return rc;
    snprintf(t->model_name, sizeof t->model_name, "%s", name);
    snprintf(t->model_hash, sizeof t->model_hash, "%s", hash);
    t->model_dim = dim;
    if (!t->store->dim)
        /* Puts in this transaction need the dimension now; undone on abort. */
        apply_model(t->store, name, hash, dim);
    (void)bound;
    return 0;
}

/* ---- write transactions ------------------------------------------------------------ */

int cmr_txn_begin(cmr_store *s, cmr_txn **out)
{
    *out = NULL;
    if (s->flags & CMR_STORE_RDONLY)
        return cmr_fail(CMR_ERDONLY, "%s: store is open read-only", s->dir);
    cmr_txn *t = calloc(1, sizeof *t);
    if (!t)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    t->store = s;
    int rc = mdb_txn_begin(s->env, NULL, 0, &t->txn);
    if (rc) {
        free(t);
        return cmr_lmdb_fail(rc, "starting a write transaction");
    }
    uint64_t gen;
    if ((rc = cmr_meta_get_u64(t->txn, s, "generation", &gen)) ||
        (rc = cmr_meta_get_u64(t->txn, s, "next_id", &t->next_id)) ||
        (rc = cmr_meta_get_u64(t->txn, s, "dict_next", &t->next_dict))) {
        cmr_txn_abort(t);
        return rc;
    }
    t->generation = gen + 1;
    if (t->next_id == 0)
        t->next_id = 1;
    if (t->next_dict == 0)
        t->next_dict = 1;
    *out = t;
    return 0;
}

/* The committed model, read again into the handle (after a failed or
 * aborted model change). */
static void reload_model(cmr_store *s)
{
    MDB_txn *r;
    if (cmr_store_read_begin(s, &r) != 0)
        return;
    char name[sizeof s->model_name] = "", hash[sizeof s->model_hash] = "";
    uint64_t dim = 0;
    if (meta_get_str(r, s, "model_name", name, sizeof name) == 0 && meta_get_str(r, s, "model_hash", hash, sizeof hash) == 0 &&
        cmr_meta_get_u64(r, s, "dim", &dim) == 0 && dim)
        apply_model(s, name, hash, (unsigned)dim);
    mdb_txn_abort(r);
}

int cmr_txn_replace_model(cmr_txn *t, const char *name, const char *hash, unsigned dim)
{
    cmr_store *s = t->store;
    if (!name || !*name || !hash || !*hash || dim == 0 || dim > 65536)
        return cmr_fail(CMR_EINVAL, "a model needs a name, a weights hash and a dimension between 1 and 65536");
    if (strlen(name) >= sizeof s->model_name || strlen(hash) >= sizeof s->model_hash)
        return cmr_fail(CMR_EINVAL, "model name or hash is too long");
    char cur_name[sizeof s->model_name] = "", cur_hash[sizeof s->model_hash] = "";
    uint64_t cur_dim = 0;
    int rc;
    if ((rc = meta_get_str(t->txn, s, "model_name", cur_name, sizeof cur_name)) ||
        (rc = meta_get_str(t->txn, s, "model_hash", cur_hash, sizeof cur_hash)) ||
        (rc = cmr_meta_get_u64(t->txn, s, "dim", &cur_dim)))
        return rc;
    if (!cur_dim)
        return cmr_fail(CMR_EINVAL, "%s has no model to replace: bind one with the first indexed case", s->dir);
    if (!strcmp(cur_name, name) && !strcmp(cur_hash, hash) && cur_dim == dim)
        return cmr_fail(CMR_EINVAL, "%s already holds vectors of model %s (weights %.12s...)", s->dir, name, hash);
    for (int sp = 0; sp < CMR_NSPACES; sp++)
        if ((rc = mdb_drop(t->txn, s->dbi_vec[sp], 0)))
            return cmr_lmdb_fail(rc, "removing the old model's vectors");
    /* Records and facets say which vectors a case has (none now), which
     * model made them and its finding scores (the old model's: gone too). */
    MDB_cursor *cur;
    uint64_t *ids = NULL;
    size_t n_ids = 0, cap = 0;
    if ((rc = mdb_cursor_open(t->txn, s->dbi_cases, &cur)))
        return cmr_lmdb_fail(rc, "listing cases");
    MDB_val k, v;
    int r;
    for (r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (n_ids == cap) {
            uint64_t *grown = realloc(ids, (cap = cap ? 2 * cap : 1024) * sizeof *ids);
            if (!grown) {
                r = ENOMEM;
                break;
            }
            ids = grown;
        }
        ids[n_ids++] = cmr_be64_get(k.mv_data);
    }
    mdb_cursor_close(cur);
    if (r && r != MDB_NOTFOUND) {
        free(ids);
        return r == ENOMEM ? cmr_fail(CMR_ENOMEM, "out of memory") : cmr_lmdb_fail(r, "listing cases");
    }
    for (size_t i = 0; i < n_ids && !rc; i++) {
        cmr_case *c = NULL;
        uint8_t *rec = NULL, *fval = NULL, key[8];
        size_t rec_len, fval_len;
        cmr_be64_put(key, ids[i]);
        k = (MDB_val){8, key};
        if ((rc = cmr_load_case(s, t->txn, ids[i], &c)))
            break;
        c->vectors = 0;
        c->model_id = NULL;
        c->n_findings = 0;
        c->findings = NULL;
        c->generation = t->generation;
        cmr_facet f;
        if ((r = mdb_get(t->txn, s->dbi_facets, &k, &v)) || v.mv_size < sizeof f)
            rc = r && r != MDB_NOTFOUND ? cmr_lmdb_fail(r, "reading facets")
                                       : cmr_fail(CMR_ECORRUPT, "case %llu has no facets", (unsigned long long)ids[i]);
        if (!rc) {
            memcpy(&f, v.mv_data, sizeof f);
            f.flags &= (uint8_t)~(CMR_FACET_IMAGE | CMR_FACET_TEXT);
            if (!(rc = cmr_record_encode(c, &rec, &rec_len)) && !(rc = cmr_facet_value(t, &f, NULL, 0, &fval, &fval_len))) {
                MDB_val rv = {rec_len, rec}, fv = {fval_len, fval};
                if ((r = mdb_put(t->txn, s->dbi_cases, &k, &rv, 0)) || (r = mdb_put(t->txn, s->dbi_facets, &k, &fv, 0)))
                    rc = cmr_lmdb_fail(r, "rewriting a case for the new model");
            }
        }
        free(rec);
        free(fval);
        cmr_case_free(c);
    }
    free(ids);
    if (rc)
        return rc;
    /* Every index older than this transaction is rebuilt, not caught up. */
    if ((rc = meta_put_bytes(t->txn, s, "model_name", name, strlen(name))) ||
        (rc = meta_put_bytes(t->txn, s, "model_hash", hash, strlen(hash))) ||
        (rc = cmr_meta_put_u64(t->txn, s, "dim", dim)) ||
        (rc = cmr_meta_put_u64(t->txn, s, "changes_floor", t->generation)))
        return rc;
    snprintf(t->model_name, sizeof t->model_name, "%s", name);
    snprintf(t->model_hash, sizeof t->model_hash, "%s", hash);
    t->model_dim = dim;
    t->model_replaced = true;
    t->changed = true;
    /* Puts in this transaction need the new model now; restored on abort. */
    apply_model(s, name, hash, dim);
    return 0;
}

void cmr_txn_abort(cmr_txn *t)
{
    if (!t)
        return;
    mdb_txn_abort(t->txn);
    if (t->model_replaced) {
        reload_model(t->store);
        free(t);
        return;
    }
    if (t->model_dim && t->store->dim) {
        /* Re-read what is committed: the model bound here is gone. */
        MDB_txn *r;
        if (cmr_store_read_begin(t->store, &r) == 0) {
            uint64_t dim = 0;
            cmr_meta_get_u64(r, t->store, "dim", &dim);
            if (!dim) {
                t->store->dim = 0;
                t->store->model_name[0] = t->store->model_hash[0] = t->store->model_id[0] = '\0';
            }
            mdb_txn_abort(r);
        }
    }
    free(t);
}

int cmr_txn_commit(cmr_txn *t)
{
    int rc = 0;
    if (t->changed) {
        if ((rc = cmr_meta_put_u64(t->txn, t->store, "generation", t->generation)) ||
            (rc = cmr_meta_put_u64(t->txn, t->store, "next_id", t->next_id)) ||
            (rc = cmr_meta_put_u64(t->txn, t->store, "dict_next", t->next_dict))) {
            cmr_txn_abort(t);
            return rc;
        }
    }
    cmr_store *s = t->store;
    bool replaced = t->model_replaced;
    rc = mdb_txn_commit(t->txn);
    free(t);
    if (rc) {
        if (replaced)
            reload_model(s);
        return cmr_lmdb_fail(rc, "committing");
    }
    if (replaced) { /* the old model's indexes (perhaps of another dimension) go */
        pthread_rwlock_wrlock(&s->lock);
        for (int sp = 0; sp < CMR_NSPACES; sp++)
            cmr_index_reset(&s->idx[sp]);
        s->facets_generation = 0;
        pthread_rwlock_unlock(&s->lock);
    }
    return 0;
}

/* Interned ids of site and manufacturer names, for compact facets. */
static int dict_id(cmr_txn *t, char kind, const char *name, uint32_t *id)
{
    *id = 0;
    if (!name || !*name)
        return 0;
    cmr_store *s = t->store;
    size_t n = strlen(name);
    char *key = malloc(n + 1);
    if (!key)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    key[0] = kind;
    memcpy(key + 1, name, n);
    if (kind == 'M')
        for (size_t i = 1; i <= n; i++)
            key[i] = (char)((key[i] >= 'A' && key[i] <= 'Z') ? key[i] + 32 : key[i]);
    MDB_val k = {n + 1, key}, v;
    int rc = mdb_get(t->txn, s->dbi_dict, &k, &v);
    if (rc == 0 && v.mv_size == 4) {
        memcpy(id, v.mv_data, 4);
    } else if (rc == MDB_NOTFOUND) {
        uint32_t nid = (uint32_t)t->next_dict++;
        v = (MDB_val){4, &nid};
        rc = mdb_put(t->txn, s->dbi_dict, &k, &v, 0);
        *id = nid;
        t->changed = true;
    }
    free(key);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : cmr_lmdb_fail(rc, "interning a name");
}

/* Look up a name's interned id without creating it; 0 if never seen. */
int cmr_dict_lookup(cmr_store *s, MDB_txn *txn, char kind, const char *name, uint32_t *id)
{
    *id = 0;
    size_t n = strlen(name);
    char *key = malloc(n + 1);
    if (!key)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    key[0] = kind;
    for (size_t i = 0; i < n; i++)
        key[i + 1] = kind == 'M' && name[i] >= 'A' && name[i] <= 'Z' ? (char)(name[i] + 32) : name[i];
    MDB_val k = {n + 1, key}, v;
    int rc = mdb_get(txn, s->dbi_dict, &k, &v);
    free(key);
    if (rc == 0 && v.mv_size == 4)
        memcpy(id, v.mv_data, 4);
    return rc == 0 || rc == MDB_NOTFOUND ? 0 : cmr_lmdb_fail(rc, "reading names");
}

int cmr_log_change(cmr_txn *t, uint64_t id, uint8_t op)
{
    uint8_t key[16];
    cmr_be64_put(key, t->generation);
    cmr_be64_put(key + 8, id);
    MDB_val k = {16, key}, v = {1, &op};
    int rc = mdb_put(t->txn, t->store->dbi_changes, &k, &v, 0);
    t->changed = true;
    return rc ? cmr_lmdb_fail(rc, "writing the change log") : 0;
}

/* Remove the secondary keys and vectors of a stored case. */
static int unlink_case(cmr_txn *t, uint64_t id, const cmr_case *old)
{
    cmr_store *s = t->store;
    uint8_t idb[8];
    MDB_val idv = key_u64(idb, id), k;
    int rc = 0;
    if (old->has_patient_key) {
        k = (MDB_val){CMR_PATIENT_KEY_BYTES, (void *)old->patient_key};
        rc = mdb_del(t->txn, s->dbi_patient, &k, &idv);
        if (rc && rc != MDB_NOTFOUND)
            return cmr_lmdb_fail(rc, "removing patient key");
    }
    for (size_t i = 0; i < old->n_diagnoses; i++) {
        k = key_str(old->diagnoses[i].code);
        rc = mdb_del(t->txn, s->dbi_diagnosis, &k, &idv);
        if (rc && rc != MDB_NOTFOUND)
            return cmr_lmdb_fail(rc, "removing diagnosis key");
    }
    for (int sp = 0; sp < CMR_NSPACES; sp++) {
        rc = mdb_del(t->txn, s->dbi_vec[sp], &idv, NULL);
        if (rc && rc != MDB_NOTFOUND)
            return cmr_lmdb_fail(rc, "removing vector");
    }
    return 0;
}

int cmr_load_case(cmr_store *s, MDB_txn *txn, uint64_t id, cmr_case **out)
{
    uint8_t idb[8];
    MDB_val k = key_u64(idb, id), v;
    int rc = mdb_get(txn, s->dbi_cases, &k, &v);
    if (rc == MDB_NOTFOUND)
        return cmr_fail(CMR_ENOTFOUND, "no case %llu in %s", (unsigned long long)id, s->dir);
    if (rc)
        return cmr_lmdb_fail(rc, "reading a case");
    return cmr_record_decode(v.mv_data, v.mv_size, id, out);
}

int cmr_txn_put(cmr_txn *t, const cmr_case *in, const float *image, const float *text, uint64_t *out_id)
{
    return cmr_txn_put_ex(t, in, image, text, out_id, NULL);
}

int cmr_txn_put_ex(cmr_txn *t, const cmr_case *in, const float *image, const float *text,
                   uint64_t *out_id, int *replaced)
{
    cmr_store *s = t->store;
    int rc = cmr_case_check(in);
    if (rc)
        return rc;
    if ((image || text) && !s->dim)
        return cmr_fail(CMR_EMODEL, "case %s: the store has no model yet, so it cannot hold "
                                    "vectors (set one with cmr_store_set_model)", in->study_uid);
    float *unit = NULL;
    uint8_t *rec = NULL, *facet_value = NULL;
    cmr_case *old = NULL;
    cmr_case c = *in;
    cmr_finding_score scored[CMR_STORE_FINDINGS_MAX];

    if (s->dim && !(unit = malloc(2 * (size_t)s->dim * sizeof *unit)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    char what[CMR_UID_MAX + 32];
    snprintf(what, sizeof what, "case %s image vector", in->study_uid);
    if (image && (rc = cmr_vector_normalise(image, s->dim, unit, what)))
        goto fail;
    snprintf(what, sizeof what, "case %s text vector", in->study_uid);
    if (text && (rc = cmr_vector_normalise(text, s->dim, unit + s->dim, what)))
        goto fail;
    /* Scores from the store's scorer join the case in this transaction. */
    if (image && !c.n_findings && s->scorer) {
        if ((rc = cmr_findings_from_scorer(s, unit, scored, &c.n_findings)) ||
            (rc = cmr_findings_check(scored, c.n_findings, in->study_uid)))
            goto fail;
        c.findings = scored;
    }

    /* Upsert: the same study keeps its id. */
    MDB_val uk = key_str(in->study_uid), uv;
    uint64_t id;
    rc = mdb_get(t->txn, s->dbi_uid, &uk, &uv);
    if (replaced)
        *replaced = rc == 0;
    if (rc == 0) {
        id = cmr_be64_get(uv.mv_data);
        if ((rc = cmr_load_case(s, t->txn, id, &old)) || (rc = unlink_case(t, id, old)))
            goto fail;
    } else if (rc == MDB_NOTFOUND) {
        id = t->next_id++;
    } else {
        rc = cmr_lmdb_fail(rc, "looking up Study Instance UID");
        goto fail;
    }

    c.id = id;
    c.model_id = s->dim ? s->model_id : NULL;
    c.generation = t->generation;
    c.vectors = (image ? 1u << CMR_SPACE_IMAGE : 0) | (text ? 1u << CMR_SPACE_TEXT : 0);
    if (!c.ingest_time)
        c.ingest_time = (int64_t)time(NULL);
    size_t rec_len;
    if ((rc = cmr_record_encode(&c, &rec, &rec_len)))
        goto fail;

    uint8_t idb[8];
    MDB_val idv = key_u64(idb, id), v = {rec_len, rec};
    if ((rc = mdb_put(t->txn, s->dbi_cases, &idv, &v, 0)) ||
        (rc = mdb_put(t->txn, s->dbi_uid, &uk, &idv, 0))) {
        rc = cmr_lmdb_fail(rc, "writing a case");
        goto fail;
    }
    for (int sp = 0; sp < CMR_NSPACES; sp++) {
        if (!(c.vectors & (1u << sp)))
            continue;
        v = (MDB_val){(size_t)s->dim * sizeof(float), unit + (size_t)sp * s->dim};
        if ((rc = mdb_put(t->txn, s->dbi_vec[sp], &idv, &v, 0))) {
            rc = cmr_lmdb_fail(rc, "writing a vector");
            goto fail;
        }
    }
    if (c.has_patient_key) {
        MDB_val pk = {CMR_PATIENT_KEY_BYTES, c.patient_key};
        if ((rc = mdb_put(t->txn, s->dbi_patient, &pk, &idv, 0)) && rc != MDB_KEYEXIST) {
            rc = cmr_lmdb_fail(rc, "writing patient key");
            goto fail;
        }
    }
    for (size_t i = 0; i < c.n_diagnoses; i++) {
        MDB_val dk = key_str(c.diagnoses[i].code);
        if ((rc = mdb_put(t->txn, s->dbi_diagnosis, &dk, &idv, MDB_NODUPDATA)) &&
            rc != MDB_KEYEXIST) {
            rc = cmr_lmdb_fail(rc, "writing diagnosis key");
            goto fail;
        }
    }
    cmr_facet f;
    cmr_case_facet(&c, &f);
    if ((rc = dict_id(t, 'S', c.site, &f.site)) || (rc = dict_id(t, 'M', c.manufacturer, &f.manufacturer)))
        goto fail;
    f.flags |= (image ? CMR_FACET_IMAGE : 0) | (text ? CMR_FACET_TEXT : 0);
    size_t facet_len;
    if ((rc = cmr_facet_value(t, &f, c.findings, c.n_findings, &facet_value, &facet_len)))
        goto fail;
    v = (MDB_val){facet_len, facet_value};
    if ((rc = mdb_put(t->txn, s->dbi_facets, &idv, &v, 0))) {
        rc = cmr_lmdb_fail(rc, "writing facets");
        goto fail;
    }
    if ((rc = cmr_log_change(t, id, CMR_CHANGE_PUT)))
        goto fail;
    if (out_id)
        *out_id = id;
    rc = 0;
fail:
    free(rec);
    free(facet_value);
    free(unit);
    cmr_case_free(old);
    return rc;
}

int cmr_txn_delete(cmr_txn *t, uint64_t id)
{
    cmr_store *s = t->store;
    cmr_case *old = NULL;
    int rc = cmr_load_case(s, t->txn, id, &old);
    if (rc)
        return rc;
    uint8_t idb[8];
    MDB_val idv = key_u64(idb, id), uk = key_str(old->study_uid);
    if ((rc = unlink_case(t, id, old)))
        goto done;
    if ((rc = mdb_del(t->txn, s->dbi_uid, &uk, NULL)) || (rc = mdb_del(t->txn, s->dbi_cases, &idv, NULL)) ||
        (rc = mdb_del(t->txn, s->dbi_facets, &idv, NULL))) {
        rc = cmr_lmdb_fail(rc, "deleting a case");
        goto done;
    }
    rc = cmr_log_change(t, id, CMR_CHANGE_DELETE);
done:
    cmr_case_free(old);
    return rc;
}

/* ---- reading --------------------------------------------------------------------------- */

int cmr_store_get(cmr_store *s, uint64_t id, cmr_case **out)
{
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    rc = cmr_load_case(s, txn, id, out);
    mdb_txn_abort(txn);
    return rc;
}

int cmr_store_find_uid(cmr_store *s, const char *uid, uint64_t *id)
{
    if (!uid || !*uid)
        return cmr_fail(CMR_EINVAL, "empty Study Instance UID");
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    MDB_val k = key_str(uid), v;
    rc = mdb_get(txn, s->dbi_uid, &k, &v);
    if (rc == 0 && v.mv_size == 8)
        *id = cmr_be64_get(v.mv_data);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        return cmr_fail(CMR_ENOTFOUND, "no case with Study Instance UID %s", uid);
    return rc ? cmr_lmdb_fail(rc, "looking up Study Instance UID") : 0;
}

int cmr_store_get_vector(cmr_store *s, uint64_t id, cmr_space space, float *out)
{
    if ((unsigned)space >= CMR_NSPACES)
        return cmr_fail(CMR_EINVAL, "bad vector space %d", (int)space);
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    uint8_t idb[8];
    MDB_val k = key_u64(idb, id), v;
    rc = mdb_get(txn, s->dbi_vec[space], &k, &v);
    if (rc == 0 && v.mv_size == (size_t)s->dim * sizeof(float))
        memcpy(out, v.mv_data, v.mv_size);
    else if (rc == 0)
        rc = cmr_fail(CMR_ECORRUPT, "case %llu: %s vector has %zu bytes, expected %zu",
                      (unsigned long long)id, cmr_space_name(space), v.mv_size,
                      (size_t)s->dim * sizeof(float));
    else if (rc == MDB_NOTFOUND)
        rc = cmr_fail(CMR_ENOTFOUND, "case %llu has no %s vector", (unsigned long long)id,
                      cmr_space_name(space));
    else
        rc = cmr_lmdb_fail(rc, "reading a vector");
    mdb_txn_abort(txn);
    return rc;
}

int cmr_store_list(cmr_store *s, uint64_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    MDB_stat st;
    if ((rc = mdb_stat(txn, s->dbi_cases, &st)) || (rc = mdb_cursor_open(txn, s->dbi_cases, &cur))) {
        rc = cmr_lmdb_fail(rc, "listing cases");
        goto done;
    }
    uint64_t *out = malloc((st.ms_entries ? st.ms_entries : 1) * sizeof *out);
    if (!out) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    MDB_val k, v;
    size_t count = 0;
    for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0 && count < st.ms_entries;
         r = mdb_cursor_get(cur, &k, &v, MDB_NEXT))
        out[count++] = cmr_be64_get(k.mv_data);
    *ids = out;
    *n = count;
done:
    mdb_cursor_close(cur);
    mdb_txn_abort(txn);
    return rc;
}

int cmr_changes_since(cmr_store *s, MDB_txn *txn, uint64_t after, uint64_t upto, uint64_t **ids,
                      size_t *n)
{
    *ids = NULL;
    *n = 0;
    MDB_cursor *cur;
    int rc = mdb_cursor_open(txn, s->dbi_changes, &cur);
    if (rc)
        return cmr_lmdb_fail(rc, "reading the change log");
    size_t cap = 0, count = 0;
    uint64_t *out = NULL;
    uint8_t start[16];
    cmr_be64_put(start, after + 1);
    cmr_be64_put(start + 8, 0);
    MDB_val k = {16, start}, v;
    for (rc = mdb_cursor_get(cur, &k, &v, MDB_SET_RANGE); rc == 0;
         rc = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || cmr_be64_get(k.mv_data) > upto)
            break;
        if (count == cap) {
            cap = cap ? 2 * cap : 1024;
            uint64_t *p = realloc(out, cap * sizeof *out);
            if (!p) {
                free(out);
                mdb_cursor_close(cur);
                return cmr_fail(CMR_ENOMEM, "out of memory reading the change log");
            }
            out = p;
        }
        out[count++] = cmr_be64_get((uint8_t *)k.mv_data + 8);
    }
    mdb_cursor_close(cur);
    if (rc && rc != MDB_NOTFOUND) {
        free(out);
        return cmr_lmdb_fail(rc, "reading the change log");
    }
    *ids = out;
    *n = count;
    return 0;
}

int cmr_store_stats_get(cmr_store *s, cmr_store_stats *out)
{
    memset(out, 0, sizeof *out);
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    MDB_stat st;
    if ((rc = mdb_stat(txn, s->dbi_cases, &st)))
        goto lmdb;
    out->cases = st.ms_entries;
    for (int sp = 0; sp < CMR_NSPACES; sp++) {
        if ((rc = mdb_stat(txn, s->dbi_vec[sp], &st)))
            goto lmdb;
        out->vectors[sp] = st.ms_entries;
    }
    out->generation = cmr_current_generation(s, txn);
    out->dim = s->dim;
    mdb_txn_abort(txn);
    pthread_rwlock_rdlock(&s->lock);
    for (int sp = 0; sp < CMR_NSPACES; sp++) {
        const cmr_index *idx = &s->idx[sp];
        cmr_index_info *info = &out->index[sp];
        cmr_index_header h;
        long size;
        int on_disk = cmr_index_read_header(s, (cmr_space)sp, &h, &size) == 0;
        if (idx->faiss) {
            info->kind = cmr_index_kind_name(idx->kind);
            snprintf(info->factory, sizeof info->factory, "%s", idx->factory);
            info->ntotal = (uint64_t)faiss_Index_ntotal(idx->faiss);
            info->generation = idx->generation;
            info->nlist = idx->nlist;
        } else if (on_disk) {
            info->kind = cmr_index_kind_name((int)h.kind);
            snprintf(info->factory, sizeof info->factory, "%s", h.factory);
            info->ntotal = h.ntotal;
            info->generation = h.generation;
            info->nlist = h.nlist;
        } else {
            info->kind = cmr_index_kind_name(CMR_INDEX_NONE);
        }
        info->nprobe = info->nlist ? cmr_index_nprobe(s, info->nlist) : 0;
        info->on_disk_current = on_disk && h.generation == out->generation;
    }
    pthread_rwlock_unlock(&s->lock);
    return 0;
lmdb:
    mdb_txn_abort(txn);
    return cmr_lmdb_fail(rc, "reading store statistics");
}
