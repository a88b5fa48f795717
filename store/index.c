/* Derived FAISS indexes: building, catching up from the change log, and the
 * stamped files.
 *
 * An index file is a 128-byte header (schema/record-format.md) followed by
 * faiss_write_index bytes.  The header names the store (uuid), the space, the
 * dimension and the store generation the index reflects, so a file from
 * another store, a truncated file or a stale one is recognised before use.
 * Files are replaced by write-temporary, fsync, rename, fsync directory. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <faiss/c_api/IndexIVF_c.h>
#include <faiss/c_api/impl/AuxIndexStructures_c.h>
#include <faiss/c_api/index_factory_c.h>
#include <faiss/c_api/index_io_c.h>

#include "cmr_faiss_ext.h"
#include "cmr_sha256.h"
#include "store_internal.h"

#define HEADER_BYTES 128
#define HEADER_MAGIC "CMRIDX01"
#define ADD_CHUNK 16384

static int faiss_fail(const char *what)
{
    const char *msg = faiss_get_last_error();
    return cmr_fail(CMR_EFAISS, "%s: %s", what, msg && *msg ? msg : "unknown FAISS error");
}

const char *cmr_index_kind_name(int kind)
{
    return kind == CMR_INDEX_FLAT ? "flat" : kind == CMR_INDEX_IVF ? "ivf" : "none";
}

int cmr_index_path(const cmr_store *s, cmr_space space, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/index-%s.cmrx", s->dir, cmr_space_name(space));
    return n < 0 || (size_t)n >= len ? cmr_fail(CMR_EINVAL, "store path too long") : 0;
}

void cmr_index_reset(cmr_index *idx)
{
    if (idx->faiss)
        faiss_Index_free(idx->faiss);
    memset(idx, 0, sizeof *idx);
}

unsigned cmr_index_nprobe(const cmr_store *s, unsigned nlist)
{
    /* About 1/128 of the lists, at least 16: measured in docs/benchmarks.md
     * to hold recall@10 >= 0.95 on clustered vectors. */
    unsigned p = s->nprobe ? s->nprobe : (nlist / 128 > 16 ? nlist / 128 : 16);
    return p > nlist ? nlist : p;
}

/* ---- header ------------------------------------------------------------------ */

static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i); }
static uint32_t get32(const uint8_t *p) { uint32_t v = 0; for (int i = 3; i >= 0; i--) v = v << 8 | p[i]; return v; }
static uint64_t get64(const uint8_t *p) { uint64_t v = 0; for (int i = 7; i >= 0; i--) v = v << 8 | p[i]; return v; }

/* Layout (little-endian): magic[8] space dim nlist kind (u32 x4) generation
 * ntotal ntrain payload_len (u64 x4) uuid[16] factory[48] checksum[8],
 * where checksum is the first 8 bytes of SHA-256 over bytes 0..119. */
static void header_encode(const cmr_index_header *h, uint8_t out[HEADER_BYTES])
{
    memset(out, 0, HEADER_BYTES);
    memcpy(out, HEADER_MAGIC, 8);
    put32(out + 8, h->space);
    put32(out + 12, h->dim);
    put32(out + 16, h->nlist);
    put32(out + 20, h->kind);
    put64(out + 24, h->generation);
    put64(out + 32, h->ntotal);
    put64(out + 40, h->ntrain);
    put64(out + 48, h->payload_len);
    memcpy(out + 56, h->uuid, 16);
    memcpy(out + 72, h->factory, 47);
    uint8_t digest[32];
    cmr_sha256_digest(out, 120, digest);
    memcpy(out + 120, digest, 8);
}

static int header_decode(const uint8_t in[HEADER_BYTES], cmr_index_header *h)
{
    uint8_t digest[32];
    cmr_sha256_digest(in, 120, digest);
    if (memcmp(in, HEADER_MAGIC, 8) != 0 || memcmp(in + 120, digest, 8) != 0)
        return -1;
    h->space = get32(in + 8);
    h->dim = get32(in + 12);
    h->nlist = get32(in + 16);
    h->kind = get32(in + 20);
    h->generation = get64(in + 24);
    h->ntotal = get64(in + 32);
    h->ntrain = get64(in + 40);
    h->payload_len = get64(in + 48);
    memcpy(h->uuid, in + 56, 16);
    memcpy(h->factory, in + 72, 47);
    h->factory[47] = '\0';
    return 0;
}

/* Reads and checks the header of a space's index file against this store.
 * CMR_ENOTFOUND if there is no file; CMR_ECORRUPT with the reason otherwise. */
static int open_index_file(const cmr_store *s, cmr_space space, cmr_index_header *h, FILE **fp,
                           long *file_size)
{
    char path[4096];
    int rc = cmr_index_path(s, space, path, sizeof path);
    if (rc)
        return rc;
    FILE *f = fopen(path, "rb");
    if (!f)
        return errno == ENOENT ? cmr_fail(CMR_ENOTFOUND, "%s: no index file", path)
                               : cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    uint8_t raw[HEADER_BYTES];
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || fread(raw, 1, HEADER_BYTES, f) != HEADER_BYTES ||
        header_decode(raw, h) != 0) {
        fclose(f);
        return cmr_fail(CMR_ECORRUPT, "%s: not a cmrsearch index file, or its header is damaged", path);
    }
    if (memcmp(h->uuid, s->uuid, 16) != 0) {
        fclose(f);
        return cmr_fail(CMR_ECORRUPT, "%s: index file belongs to another store", path);
    }
    if (h->space != (uint32_t)space || h->dim != s->dim) {
        fclose(f);
        return cmr_fail(CMR_ECORRUPT, "%s: index is for space %u, dimension %u; store has "
                                      "dimension %u", path, h->space, h->dim, s->dim);
    }
    if ((uint64_t)st.st_size != HEADER_BYTES + h->payload_len) {
        fclose(f);
        return cmr_fail(CMR_ECORRUPT, "%s: file has %lld bytes, header says %llu (truncated?)", path,
                        (long long)st.st_size, (unsigned long long)(HEADER_BYTES + h->payload_len));
    }
    if (file_size)
        *file_size = (long)st.st_size;
    if (fp)
        *fp = f;
    else
        fclose(f);
    return 0;
}

int cmr_index_read_header(const cmr_store *s, cmr_space space, cmr_index_header *h, long *file_size)
{
    return open_index_file(s, space, h, NULL, file_size);
}

static void apply_nprobe(const cmr_store *s, cmr_index *idx)
{
    FaissIndexIVF *ivf = faiss_IndexIVF_cast(idx->faiss);
    if (ivf) {
        idx->nlist = (unsigned)faiss_IndexIVF_nlist(ivf);
        faiss_IndexIVF_set_nprobe(ivf, cmr_index_nprobe(s, idx->nlist));
    }
}

static int index_load(cmr_store *s, cmr_space space, cmr_index *out)
{
    cmr_index_header h;
    FILE *f;
    int rc = open_index_file(s, space, &h, &f, NULL);
    if (rc)
        return rc;
    FaissIndex *fi = NULL;
    if (faiss_read_index(f, 0, &fi) != 0) {
        fclose(f);
        char path[4096];
        cmr_index_path(s, space, path, sizeof path);
        return cmr_fail_context(faiss_fail("reading FAISS index"), "%s: ", path);
    }
    fclose(f);
    if ((uint64_t)faiss_Index_ntotal(fi) != h.ntotal || faiss_Index_d(fi) != (int)s->dim) {
        faiss_Index_free(fi);
        return cmr_fail(CMR_ECORRUPT, "%s index file: FAISS index holds %lld vectors of dimension "
                                      "%d; header says %llu of %u", cmr_space_name(space),
                        (long long)faiss_Index_ntotal(fi), faiss_Index_d(fi),
                        (unsigned long long)h.ntotal, s->dim);
    }
    cmr_index_reset(out);
    out->faiss = fi;
    out->kind = (int)h.kind;
    out->generation = h.generation;
    out->disk_generation = h.generation;
    out->ntrain = h.ntrain;
    snprintf(out->factory, sizeof out->factory, "%s", h.factory);
    apply_nprobe(s, out);
    return 0;
}

int cmr_index_save(cmr_store *s, cmr_space space)
{
    cmr_index *idx = &s->idx[space];
    char path[4096], tmp[4200];
    int rc = cmr_index_path(s, space, path, sizeof path);
    if (rc)
        return rc;
    /* The pid makes concurrent writers' temporaries distinct; a dead
     * writer's one is removed at the next writable open. */
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "wb");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
    cmr_index_header h = {
        .generation = idx->generation, .ntotal = (uint64_t)faiss_Index_ntotal(idx->faiss),
        .ntrain = idx->ntrain, .space = (uint32_t)space, .dim = s->dim, .nlist = idx->nlist,
        .kind = (uint32_t)idx->kind,
    };
    memcpy(h.uuid, s->uuid, 16);
    snprintf(h.factory, sizeof h.factory, "%s", idx->factory);
    uint8_t raw[HEADER_BYTES];
    header_encode(&h, raw);
    if (fwrite(raw, 1, HEADER_BYTES, f) != HEADER_BYTES) {
        rc = cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (faiss_write_index(idx->faiss, f) != 0) {
        rc = faiss_fail("writing FAISS index");
        goto fail;
    }
    long end = ftell(f);
    h.payload_len = (uint64_t)(end - HEADER_BYTES);
    header_encode(&h, raw);
    if (end < HEADER_BYTES || fseek(f, 0, SEEK_SET) != 0 || fwrite(raw, 1, HEADER_BYTES, f) != HEADER_BYTES ||
        fflush(f) != 0 || fsync(fileno(f)) != 0) {
        rc = cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    if (fclose(f) != 0) {
        f = NULL;
        rc = cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
        goto fail;
    }
    f = NULL;
    if (rename(tmp, path) != 0) {
        rc = cmr_fail(CMR_EIO, "renaming %s to %s: %s", tmp, path, strerror(errno));
        goto fail;
    }
    int dfd = open(s->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    idx->disk_generation = idx->generation;
    return 0;
fail:
    if (f)
        fclose(f);
    unlink(tmp);
    return rc;
}

/* A temporary from a writer that is no longer running. */
void cmr_index_remove_stale_temporaries(const cmr_store *s)
{
    DIR *d = opendir(s->dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        const char *mark = strstr(e->d_name, ".cmrx.tmp.");
        if (strncmp(e->d_name, "index-", 6) != 0 || !mark)
            continue;
        long pid = strtol(mark + 10, NULL, 10);
        if (pid > 0 && (kill((pid_t)pid, 0) == 0 || errno != ESRCH))
            continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", s->dir, e->d_name);
        unlink(path);
    }
    closedir(d);
}

/* ---- building ------------------------------------------------------------------- */

static uint64_t space_count(cmr_store *s, cmr_space space, MDB_txn *txn)
{
    MDB_stat st;
    return mdb_stat(txn, s->dbi_vec[space], &st) == 0 ? st.ms_entries : 0;
}

static void choose_layout(const cmr_store *s, uint64_t n, cmr_index *idx)
{
    if (n < s->ivf_threshold) {
        idx->kind = CMR_INDEX_FLAT;
        snprintf(idx->factory, sizeof idx->factory, "IDMap,Flat");
        return;
    }
    idx->kind = CMR_INDEX_IVF;
    if (s->factory[0]) {
        snprintf(idx->factory, sizeof idx->factory, "%s", s->factory);
        return;
    }
    /* nlist ~ 4 sqrt(N) rounded to a power of two, with >= 39 training
     * points per centroid as FAISS's k-means wants. */
    double target = 4.0 * sqrt((double)n);
    unsigned nlist = 16;
    while (nlist * 2 <= 65536 && fabs(log2(nlist * 2.0) - log2(target)) < fabs(log2(nlist) - log2(target)))
        nlist *= 2;
    while (nlist > 16 && (uint64_t)nlist * 39 > n)
        nlist /= 2;
    snprintf(idx->factory, sizeof idx->factory, "IVF%u,Flat", nlist);
}

static int needs_rebuild(const cmr_store *s, const cmr_index *idx, uint64_t n)
{
    if (!idx->faiss)
        return 1;
    if (idx->kind == CMR_INDEX_FLAT)
        return n >= s->ivf_threshold;
    /* Retrain as the store grows (or shrinks) well past its training size. */
    return n > 4 * idx->ntrain || n < s->ivf_threshold / 2;
}

static void progress(cmr_store *s, const char *phase, uint64_t done, uint64_t total)
{
    if (s->progress)
        s->progress(s->progress_user, phase, done, total);
}

int cmr_index_rebuild(cmr_store *s, cmr_space space, MDB_txn *txn, uint64_t generation)
{
    cmr_index fresh = {0};
    uint64_t n = space_count(s, space, txn);
    size_t dim = s->dim, chunk_n = 0;
    float *chunk = NULL;
    idx_t *ids = NULL;
    MDB_cursor *cur = NULL;
    MDB_val k, v;
    int rc;
    char phase[64];

    choose_layout(s, n, &fresh);
    if (faiss_index_factory(&fresh.faiss, (int)dim, fresh.factory, METRIC_INNER_PRODUCT) != 0) {
        rc = cmr_fail_context(faiss_fail("creating index"), "factory string '%s': ", fresh.factory);
        goto fail;
    }
    if (fresh.kind == CMR_INDEX_IVF && !faiss_IndexIVF_cast(fresh.faiss)) {
        rc = cmr_fail(CMR_EINVAL, "factory string '%s' does not give an IVF index", fresh.factory);
        goto fail;
    }
    chunk = malloc(ADD_CHUNK * dim * sizeof *chunk);
    ids = malloc(ADD_CHUNK * sizeof *ids);
    if (!chunk || !ids) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory building index");
        goto fail;
    }
    if ((rc = mdb_cursor_open(txn, s->dbi_vec[space], &cur))) {
        rc = cmr_lmdb_fail(rc, "reading vectors");
        goto fail;
    }
    if (fresh.kind == CMR_INDEX_IVF) {
        FaissIndexIVF *ivf = faiss_IndexIVF_cast(fresh.faiss);
        size_t nlist = faiss_IndexIVF_nlist(ivf);
        /* An evenly strided sample: ids follow ingest order, which follows
         * archive order, so the first N would be biased. */
        uint64_t ntrain = n < 64 * nlist ? n : 64 * nlist;
        uint64_t stride = n / ntrain, taken = 0, i = 0;
        float *train = malloc(ntrain * dim * sizeof *train);
        if (!train) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory for %llu training vectors", (unsigned long long)ntrain);
            goto fail;
        }
        snprintf(phase, sizeof phase, "%s index: reading training sample", cmr_space_name(space));
        for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST); r == 0 && taken < ntrain;
             r = mdb_cursor_get(cur, &k, &v, MDB_NEXT), i++) {
            if (i % stride)
                continue;
            memcpy(train + taken * dim, v.mv_data, dim * sizeof(float));
            taken++;
        }
        snprintf(phase, sizeof phase, "%s index: training %zu lists", cmr_space_name(space), nlist);
        progress(s, phase, 0, 1);
        int frc = faiss_Index_train(fresh.faiss, (idx_t)taken, train);
        free(train);
        if (frc != 0) {
            rc = faiss_fail("training IVF index");
            goto fail;
        }
        progress(s, phase, 1, 1);
        fresh.ntrain = n;
    }
    snprintf(phase, sizeof phase, "%s index: adding vectors", cmr_space_name(space));
    uint64_t added = 0;
    for (int r = mdb_cursor_get(cur, &k, &v, MDB_FIRST);; r = mdb_cursor_get(cur, &k, &v, MDB_NEXT)) {
        if (r == 0) {
            if (v.mv_size != dim * sizeof(float)) {
                rc = cmr_fail(CMR_ECORRUPT, "case %llu: %s vector has %zu bytes, expected %zu",
                              (unsigned long long)cmr_be64_get(k.mv_data), cmr_space_name(space),
                              v.mv_size, dim * sizeof(float));
                goto fail;
            }
            memcpy(chunk + chunk_n * dim, v.mv_data, v.mv_size);
            ids[chunk_n++] = (idx_t)cmr_be64_get(k.mv_data);
        } else if (r != MDB_NOTFOUND) {
            rc = cmr_lmdb_fail(r, "reading vectors");
            goto fail;
        }
        if (chunk_n == ADD_CHUNK || (r != 0 && chunk_n)) {
            if (faiss_Index_add_with_ids(fresh.faiss, (idx_t)chunk_n, chunk, ids) != 0) {
                rc = faiss_fail("adding vectors");
                goto fail;
            }
            added += chunk_n;
            chunk_n = 0;
            progress(s, phase, added, n);
        }
        if (r != 0)
            break;
    }
    fresh.generation = generation;
    apply_nprobe(s, &fresh);
    fresh.disk_generation = s->idx[space].disk_generation;
    cmr_index_reset(&s->idx[space]);
    s->idx[space] = fresh;
    rc = 0;
    goto done;
fail:
    cmr_index_reset(&fresh);
done:
    mdb_cursor_close(cur);
    free(chunk);
    free(ids);
    return rc;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Apply what commits after the index's generation changed: every touched id
 * is removed, then re-added from its current vector if it still has one. */
static int catch_up(cmr_store *s, cmr_space space, MDB_txn *txn, uint64_t generation)
{
    cmr_index *idx = &s->idx[space];
    uint64_t *changed = NULL;
    size_t n = 0, m = 0, dim = s->dim;
    float *vecs = NULL;
    idx_t *ids = NULL;
    FaissIDSelectorBatch *sel = NULL;
    int rc = cmr_changes_since(s, txn, idx->generation, generation, &changed, &n);
    if (rc)
        return rc;
    if (n > 1)
        qsort(changed, n, sizeof *changed, cmp_u64);
    for (size_t i = 0; i < n; i++)
        if (m == 0 || changed[m - 1] != changed[i])
            changed[m++] = changed[i];
    if (m && faiss_Index_ntotal(idx->faiss) > 0) {
        /* idx_t and uint64_t share a size; ids are < 2^63. */
        size_t removed;
        if (faiss_IDSelectorBatch_new(&sel, m, (const idx_t *)changed) != 0 ||
            faiss_Index_remove_ids(idx->faiss, (FaissIDSelector *)sel, &removed) != 0) {
            rc = faiss_fail("removing changed vectors from index");
            goto done;
        }
    }
    vecs = malloc((m ? m : 1) * dim * sizeof *vecs);
    ids = malloc((m ? m : 1) * sizeof *ids);
    if (!vecs || !ids) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory catching up index");
        goto done;
    }
    size_t count = 0;
    for (size_t i = 0; i < m; i++) {
        uint8_t key[8];
        cmr_be64_put(key, changed[i]);
        MDB_val k = {8, key}, v;
        int r = mdb_get(txn, s->dbi_vec[space], &k, &v);
        if (r == MDB_NOTFOUND)
            continue;
        if (r) {
            rc = cmr_lmdb_fail(r, "reading vectors");
            goto done;
        }
        if (v.mv_size != dim * sizeof(float)) {
            rc = cmr_fail(CMR_ECORRUPT, "case %llu: %s vector has %zu bytes", (unsigned long long)changed[i],
                          cmr_space_name(space), v.mv_size);
            goto done;
        }
        memcpy(vecs + count * dim, v.mv_data, v.mv_size);
        ids[count++] = (idx_t)changed[i];
    }
    if (count && faiss_Index_add_with_ids(idx->faiss, (idx_t)count, vecs, ids) != 0) {
        rc = faiss_fail("adding vectors to index");
        goto done;
    }
    idx->generation = generation;
done:
    if (sel)
        faiss_IDSelector_free((FaissIDSelector *)sel);
    free(changed);
    free(vecs);
    free(ids);
    return rc;
}

int cmr_index_sync(cmr_store *s, cmr_space space, MDB_txn *txn, uint64_t generation)
{
    cmr_index *idx = &s->idx[space];
    if (!s->dim || (idx->faiss && idx->generation >= generation))
        return 0;
    /* Another process may have moved the store to another model since this
     * handle read it: its queries would be in the old model's space. */
    MDB_val hk = {strlen("model_hash"), "model_hash"}, hv;
    if (mdb_get(txn, s->dbi_meta, &hk, &hv) == 0 &&
        (hv.mv_size != strlen(s->model_hash) || memcmp(hv.mv_data, s->model_hash, hv.mv_size)))
        return cmr_fail(CMR_EMODEL, "%s: the store was moved to another model (weights %.*s...) since it was opened "
                                    "with model %s; reopen it", s->dir, (int)(hv.mv_size < 12 ? hv.mv_size : 12),
                        (const char *)hv.mv_data, s->model_name);
    /* Prefer a newer file on disk (another process flushed) to catching up. */
    cmr_index_header h;
    if (cmr_index_read_header(s, space, &h, NULL) == 0 && h.generation <= generation &&
        (!idx->faiss || h.generation > idx->generation)) {
        cmr_index loaded = {0};
        if (index_load(s, space, &loaded) == 0) {
            cmr_index_reset(idx);
            *idx = loaded;
        }
    }
    if (idx->faiss && idx->generation >= generation)
        return 0;
    uint64_t floor = 0;
    int rc = cmr_meta_get_u64(txn, s, "changes_floor", &floor);
    if (rc)
        return rc;
    if (idx->faiss && idx->generation >= floor)
        return catch_up(s, space, txn, generation);
    return cmr_index_rebuild(s, space, txn, generation);
}

/* Drop change-log entries every saved index has absorbed. */
static int prune_changes(cmr_store *s, uint64_t upto)
{
    MDB_txn *txn;
    MDB_cursor *cur = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return cmr_lmdb_fail(rc, "starting a write transaction");
    uint64_t floor;
    if ((rc = cmr_meta_get_u64(txn, s, "changes_floor", &floor)))
        goto fail;
    if (upto <= floor) {
        mdb_txn_abort(txn);
        return 0;
    }
    if ((rc = mdb_cursor_open(txn, s->dbi_changes, &cur))) {
        rc = cmr_lmdb_fail(rc, "pruning the change log");
        goto fail;
    }
    MDB_val k, v;
    int r;
    while ((r = mdb_cursor_get(cur, &k, &v, MDB_FIRST)) == 0 && cmr_be64_get(k.mv_data) <= upto)
        if ((r = mdb_cursor_del(cur, 0)))
            break;
    mdb_cursor_close(cur);
    cur = NULL;
    if (r && r != MDB_NOTFOUND) {
        rc = cmr_lmdb_fail(r, "pruning the change log");
        goto fail;
    }
    if ((rc = cmr_meta_put_u64(txn, s, "changes_floor", upto)))
        goto fail;
    if ((rc = mdb_txn_commit(txn)))
        return cmr_lmdb_fail(rc, "pruning the change log");
    return 0;
fail:
    mdb_txn_abort(txn);
    return rc;
}

static int flush_locked(cmr_store *s, int force_rebuild)
{
    MDB_txn *txn;
    int rc = cmr_store_read_begin(s, &txn);
    if (rc)
        return rc;
    uint64_t generation = cmr_current_generation(s, txn);
    for (int sp = 0; sp < CMR_NSPACES && rc == 0; sp++) {
        cmr_index *idx = &s->idx[sp];
        uint64_t n = space_count(s, (cmr_space)sp, txn);
        if (force_rebuild)
            rc = cmr_index_rebuild(s, (cmr_space)sp, txn, generation);
        else if ((rc = cmr_index_sync(s, (cmr_space)sp, txn, generation)) == 0 &&
                 needs_rebuild(s, idx, n))
            rc = cmr_index_rebuild(s, (cmr_space)sp, txn, generation);
        cmr_index_header h;
        if (rc == 0 && (force_rebuild || idx->disk_generation != idx->generation ||
                        cmr_index_read_header(s, (cmr_space)sp, &h, NULL) != 0 ||
                        h.generation != idx->generation))
            rc = cmr_index_save(s, (cmr_space)sp);
    }
    mdb_txn_abort(txn);
    if (rc == 0)
        rc = prune_changes(s, s->idx[0].generation < s->idx[1].generation ? s->idx[0].generation
                                                                          : s->idx[1].generation);
    return rc;
}

int cmr_store_flush(cmr_store *s)
{
    if ((s->flags & CMR_STORE_RDONLY) || !s->dim)
        return 0;
    pthread_rwlock_wrlock(&s->lock);
    int rc = flush_locked(s, 0);
    pthread_rwlock_unlock(&s->lock);
    return rc;
}

int cmr_store_reindex(cmr_store *s)
{
    if (s->flags & CMR_STORE_RDONLY)
        return cmr_fail(CMR_ERDONLY, "%s: store is open read-only", s->dir);
    if (!s->dim)
        return cmr_fail(CMR_EINVAL, "%s: the store has no model and no vectors to index", s->dir);
    pthread_rwlock_wrlock(&s->lock);
    int rc = flush_locked(s, 1);
    pthread_rwlock_unlock(&s->lock);
    return rc;
}
