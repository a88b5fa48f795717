/* The compact model's text tower (docs/compact-model.md, "Text tower"):
 * hashed word n-grams, their mean embedding, a ReLU layer and a projection;
 * forward for inference and training, backward into the flat gradients. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "compact.h"
#include "model_internal.h"

/* ---- featurizer ------------------------------------------------------------------------------------- */

/* cmr_compact_config_check bounds max_n by 8: the look-ahead ring below is
 * a fixed array so that featurizing needs no allocation. */
#define MAX_N 8

#define FNV_BASIS 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

/* ASCII letters and digits, and every byte >= 0x80 (UTF-8 sequences are
 * kept whole without being decoded: the featurizer never fails on bytes). */
static int is_word_byte(unsigned char b)
{
    return b >= 0x80 || (b >= '0' && b <= '9') || ((b | 0x20) >= 'a' && (b | 0x20) <= 'z');
}

static uint64_t fnv_word(uint64_t h, const unsigned char *w, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        unsigned char b = w[i];
        if (b >= 'A' && b <= 'Z')
            b = (unsigned char)(b | 0x20);
        h = (h ^ b) * FNV_PRIME;
    }
    return h;
}

typedef struct word {
    const unsigned char *p;
    size_t len;
    int negated; /* in a negation's scope: hashed with a leading '~' */
} word;

/* Negation scope (docs/compact-model.md, "Text tower"): "no late gadolinium
 * enhancement" must not share its n-grams with "late gadolinium
 * enhancement", or a bag of n-grams cannot tell the two apart. */
#define NEG_SCOPE 8

static int word_is(const unsigned char *w, size_t len, const char *const *list)
{
    for (; *list; list++) {
        size_t n = strlen(*list);
        if (n != len)
            continue;
        size_t i = 0;
        while (i < n && (w[i] | (w[i] >= 'A' && w[i] <= 'Z' ? 0x20 : 0)) == (unsigned char)(*list)[i])
            i++;
        if (i == n)
            return 1;
    }
    return 0;
}

static const char *const neg_triggers[] = {"no", "not", "without", "absent", "absence", "negative", "none", NULL};
/* Lexicon "cmr-v2": "non" negates the one word after it.  "Non-ischemic
 * cardiomyopathy" (and NICM) otherwise holds the very n-gram of "ischemic
 * cardiomyopathy", the two diagnoses CMR-CLIP tells apart. */
static const char *const neg_prefix[] = {"non", NULL};
static const char *const neg_ends[] = {"but", "however", "although", "though", "except", "apart", "yet", NULL};

/* The clinical lexicon "cmr-v1" (docs/compact-model.md, "Text tower"):
 * reports and queries name the same thing differently ("LGE", "late
 * gadolinium enhancement", "delayed enhancement"; "RV dilated", "right
 * ventricle is enlarged"), and a bag of n-grams learns each spelling only
 * from the pairs that use it.  Each listed word becomes its canonical words
 * before the n-grams are formed. */
static const struct lexicon_entry {
    const char *word, *canonical;
} lexicon_v1[] = {
    {"lv", "left ventricle"},
    {"rv", "right ventricle"},
    {"la", "left atrium"},
    {"ra", "right atrium"},
    {"lvef", "left ventricle ejection fraction"},
    {"rvef", "right ventricle ejection fraction"},
    {"ef", "ejection fraction"},
    {"lvh", "left ventricle hypertrophy"},
    {"lvot", "left ventricle outflow tract"},
    {"lge", "late gadolinium enhancement"},
    {"hcm", "hypertrophic cardiomyopathy"},
    {"dcm", "dilated cardiomyopathy"},
    {"nicm", "non ischemic cardiomyopathy"},
    {"icm", "ischemic cardiomyopathy"},
    {"arvc", "arrhythmogenic right ventricle cardiomyopathy"},
    {"arvd", "arrhythmogenic right ventricle cardiomyopathy"},
    {"lvnc", "left ventricle non compaction"},
    {"mi", "infarct"},
    {"cmr", "cardiac mri"},
    {"ventricular", "ventricle"},
    {"ventricles", "ventricle"},
    {"atrial", "atrium"},
    {"atria", "atrium"},
    {"dilation", "dilated"},
    {"dilatation", "dilated"},
    {"enlarged", "dilated"},
    {"enlargement", "dilated"},
    {"hypertrophic", "hypertrophy"},
    {"hypertrophied", "hypertrophy"},
    {"amyloid", "amyloidosis"},
    {"ischaemic", "ischemic"},
    {"ischemia", "ischemic"},
    {"ischaemia", "ischemic"},
    {"infarction", "infarct"},
    {"infarcted", "infarct"},
    {"infarcts", "infarct"},
    {"enhancing", "enhancement"},
    {"enhanced", "enhancement"},
    {"delayed", "late"},
    {"impairment", "dysfunction"},
    {"impaired", "dysfunction"},
    {"reduced", "dysfunction"},
    {"sarcoid", "sarcoidosis"},
    {"noncompaction", "non compaction"},
    {"noncompacted", "non compaction"},
    {"nonischemic", "non ischemic"},
    {"nonischaemic", "non ischemic"},
    {"cardiomyopathies", "cardiomyopathy"},
    {"trabeculated", "trabeculation"},
    {"trabeculations", "trabeculation"},
    {"myocardial", "myocardium"},
    {"fibrosis", "scar"},
    {"scarring", "scar"},
    {"akinetic", "akinesis"},
    {"akinesia", "akinesis"},
    {"hypokinetic", "hypokinesis"},
    {"hypokinesia", "hypokinesis"},
    {"dyskinetic", "dyskinesis"},
    {"dyskinesia", "dyskinesis"},
    {"pericardial", "pericardium"},
    {"effusions", "effusion"},
    {"aortic", "aorta"},
    {"oedema", "edema"},
    {"septal", "septum"},
    {"apical", "apex"},
    {"midwall", "mid wall"},
};

static const char *lexicon_lookup(const unsigned char *w, size_t len)
{
    for (size_t i = 0; i < sizeof lexicon_v1 / sizeof *lexicon_v1; i++) {
        const char *const one[2] = {lexicon_v1[i].word, NULL};
        if (word_is(w, len, one))
            return lexicon_v1[i].canonical;
    }
    return NULL;
}

static int ends_scope(unsigned char b) { return b == '.' || b == ';' || b == ':' || b == '!' || b == '?' || b == '\n'; }

int cmr_compact_ngrams(const cmr_compact_config *c, const char *text, size_t len, uint32_t *ids, size_t cap,
                       size_t *n)
{
    if (!c || !n || (!text && len) || (!ids && cap))
        return cmr_fail(CMR_EINVAL, "compact n-grams: NULL argument");
    if (c->max_n < 1 || c->max_n > MAX_N || c->max_words < 1 || c->text_buckets < 1)
        return cmr_fail(CMR_EINVAL, "compact n-grams: max_n %d, max_words %d, buckets %d out of range", c->max_n,
                        c->max_words, c->text_buckets);
    const unsigned char *s = (const unsigned char *)text;
    size_t max_n = (size_t)c->max_n, max_words = (size_t)c->max_words, buckets = (size_t)c->text_buckets;
    /* The n-grams starting at a word need the max_n - 1 words after it: a
     * ring of the next max_n words, refilled as the oldest is consumed, so
     * the ids come out start-major (for each word, n = 1..max_n). */
    word ring[MAX_N];
    size_t head = 0, queued = 0, words = 0, pos = 0, total = 0;
    int scope = 0;  /* words left in the current negation's scope */
    int prefix = 0; /* cmr-v2: the next word follows "non" */
    const char *pending = NULL; /* the rest of a lexicon entry's canonical words */
    for (;;) {
        while (queued < max_n && words < max_words) {
            const unsigned char *wp;
            size_t wlen;
            int marker = 0; /* a negation trigger, "non" or a scope's end: never in a scope itself */
            int negated = 0;
            if (pending) {
                wp = (const unsigned char *)pending;
                wlen = strcspn(pending, " ");
                pending = pending[wlen] ? pending + wlen + 1 : NULL;
            } else {
                while (pos < len && !is_word_byte(s[pos])) {
                    if (ends_scope(s[pos]))
                        scope = 0, prefix = 0;
                    pos++;
                }
                if (pos == len)
                    break;
                size_t start = pos;
                while (pos < len && is_word_byte(s[pos]))
                    pos++;
                wp = s + start;
                wlen = pos - start;
                const char *canonical;
                if (word_is(wp, wlen, neg_triggers))
                    scope = NEG_SCOPE, prefix = 0, marker = 1;
                else if (word_is(wp, wlen, neg_ends))
                    scope = 0, prefix = 0, marker = 1;
                else if (c->lexicon && (canonical = lexicon_lookup(wp, wlen))) {
                    wp = (const unsigned char *)canonical;
                    wlen = strcspn(canonical, " ");
                    pending = canonical[wlen] ? canonical + wlen + 1 : NULL;
                }
            }
            /* A lexicon entry's canonical words may hold "non" too (NICM). */
            if (!marker && c->lexicon >= 2 && word_is(wp, wlen, neg_prefix))
                prefix = 1, marker = 1;
            else if (!marker) {
                negated = scope > 0 || prefix;
                if (scope > 0)
                    scope--;
                prefix = 0;
            }
            ring[(head + queued) % max_n] = (word){wp, wlen, negated};
            queued++;
            words++;
        }
        if (!queued)
            break;
        /* FNV-1a is a running hash: the (k+1)-gram continues the k-gram's
         * state with the separating space and the next word. */
        uint64_t h = FNV_BASIS;
        for (size_t k = 0; k < queued; k++) {
            const word *w = &ring[(head + k) % max_n];
            if (k)
                h = (h ^ ' ') * FNV_PRIME;
            if (w->negated)
                h = (h ^ '~') * FNV_PRIME;
            h = fnv_word(h, w->p, w->len);
            if (total < cap)
                ids[total] = (uint32_t)(h % buckets);
            total++;
        }
        head = (head + 1) % max_n;
        queued--;
    }
    *n = total;
    return 0;
}

/* ---- forward ---------------------------------------------------------------------------------------- */

/* The text tensors' places in the flat vector. */
typedef struct text_params {
    size_t embed, fc_w, fc_b, proj_w, proj_b;
    size_t buckets, dim, hidden, out;
} text_params;

static int text_params_of(const cmr_compact_config *c, text_params *tp)
{
    int rc = cmr_compact_config_check(c);
    if (rc < 0)
        return rc;
    cmr_compact_layout l;
    cmr_compact_layout_of(c, &l);
    const cmr_compact_tensor *t[5] = {cmr_compact_find(&l, "text.embed.weight"), cmr_compact_find(&l, "text.fc.weight"),
                                      cmr_compact_find(&l, "text.fc.bias"), cmr_compact_find(&l, "text.proj.weight"),
                                      cmr_compact_find(&l, "text.proj.bias")};
    for (int i = 0; i < 5; i++)
        if (!t[i])
            return cmr_fail(CMR_EINVAL, "compact text tower: layout lacks text tensor %d", i);
    *tp = (text_params){t[0]->offset, t[1]->offset, t[2]->offset, t[3]->offset, t[4]->offset,
                        (size_t)c->text_buckets, (size_t)c->text_dim, (size_t)c->text_hidden, (size_t)c->embed_dim};
    return 0;
}

/* What backward needs: the bags, the post-ReLU hidden layer (its sign is
 * the ReLU mask) and a copy of the ids (the caller's lists need not outlive
 * the forward call).  Buffers only grow. */
struct cmr_compact_text_cache {
    int batch;
    size_t dim, hidden;    /* of the forward that filled it */
    size_t bag_cap, ids_cap, offsets_cap; /* elements allocated */
    float *bag, *h;        /* [batch][dim], [batch][hidden]; bag owns one block for all four */
    float *d_bag, *d_h;    /* backward scratch, same shapes */
    uint32_t *ids;         /* rebased to start at 0 */
    size_t *offsets;       /* [batch + 1] */
};

void cmr_compact_text_cache_free(cmr_compact_text_cache *cache)
{
    if (!cache)
        return;
    free(cache->bag);
    free(cache->ids);
    free(cache->offsets);
    free(cache);
}

/* p, or a larger block when p holds fewer than n elements of sz bytes
 * (contents dropped: every user overwrites them); NULL, p untouched, when
 * out of memory. */
static void *grow(void *p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap)
        return p;
    void *q = malloc(n * sz);
    if (!q)
        return NULL;
    free(p);
    *cap = n;
    return q;
}

static int cache_prepare(cmr_compact_text_cache **cachep, const text_params *tp, int batch, const uint32_t *ids,
                         const size_t *offsets)
{
    cmr_compact_text_cache *cache = *cachep;
    if (!cache) {
        cache = calloc(1, sizeof *cache);
        if (!cache)
            return cmr_fail(CMR_ENOMEM, "compact text tower: cache");
        *cachep = cache;
    }
    cache->batch = 0; /* until filled: a failed forward leaves nothing for backward */
    size_t B = (size_t)batch, n_ids = offsets[B] - offsets[0];
#define GROW(field, count)                                                                                             \
    do {                                                                                                               \
        void *q_ = grow(cache->field, &cache->field##_cap, (count), sizeof *cache->field);                             \
        if (!q_)                                                                                                       \
            return cmr_fail(CMR_ENOMEM, "compact text tower: cache of %d texts, %zu n-grams", batch, n_ids);          \
        cache->field = q_;                                                                                             \
    } while (0)
    GROW(bag, B * 2 * (tp->dim + tp->hidden));
    GROW(ids, n_ids ? n_ids : 1);
    GROW(offsets, B + 1);
#undef GROW
    cache->h = cache->bag + B * tp->dim;
    cache->d_bag = cache->h + B * tp->hidden;
    cache->d_h = cache->d_bag + B * tp->dim;
    if (n_ids)
        memcpy(cache->ids, ids + offsets[0], n_ids * sizeof *ids);
    for (size_t b = 0; b <= B; b++)
        cache->offsets[b] = offsets[b] - offsets[0];
    cache->batch = batch;
    cache->dim = tp->dim;
    cache->hidden = tp->hidden;
    return 0;
}

static int check_batch(const text_params *tp, const uint32_t *ids, const size_t *offsets, int batch)
{
    if (batch < 1 || !offsets || (!ids && offsets[batch] != offsets[0]))
        return cmr_fail(CMR_EINVAL, "compact text tower: batch %d, ids %p", batch, (const void *)ids);
    for (int b = 0; b < batch; b++) {
        if (offsets[b + 1] < offsets[b])
            return cmr_fail(CMR_EINVAL, "compact text tower: offsets decrease at text %d", b);
        for (size_t i = offsets[b]; i < offsets[b + 1]; i++)
            if (ids[i] >= tp->buckets)
                return cmr_fail(CMR_EINVAL, "compact text tower: text %d: n-gram id %u >= %zu buckets", b,
                                (unsigned)ids[i], tp->buckets);
    }
    return 0;
}

int cmr_compact_text_forward(const cmr_compact_config *c, const float *params, const uint32_t *ids,
                             const size_t *offsets, int batch, float *emb, cmr_compact_text_cache **cache)
{
    if (!c || !params || !emb)
        return cmr_fail(CMR_EINVAL, "compact text forward: NULL argument");
    text_params tp;
    int rc = text_params_of(c, &tp);
    if (rc < 0 || (rc = check_batch(&tp, ids, offsets, batch)) < 0)
        return rc;
    size_t B = (size_t)batch, D = tp.dim, H = tp.hidden;
    float *scratch = NULL, *bag, *h;
    if (cache) {
        if ((rc = cache_prepare(cache, &tp, batch, ids, offsets)) < 0)
            return rc;
        bag = (*cache)->bag;
        h = (*cache)->h;
    } else {
        /* Inference keeps nothing: a per-call block, tiny next to the
         * embedding rows it is filled from. */
        scratch = malloc(B * (D + H) * sizeof *scratch);
        if (!scratch)
            return cmr_fail(CMR_ENOMEM, "compact text forward: batch %d", batch);
        bag = scratch;
        h = scratch + B * D;
    }
    const float *table = params + tp.embed;
    for (size_t b = 0; b < B; b++) {
        float *row = bag + b * D;
        memset(row, 0, D * sizeof *row);
        size_t n = offsets[b + 1] - offsets[b];
        for (size_t i = offsets[b]; i < offsets[b + 1]; i++) {
            const float *e = table + (size_t)ids[i] * D;
            for (size_t j = 0; j < D; j++)
                row[j] += e[j];
        }
        if (n) {
            float inv = (float)(1.0 / (double)n);
            for (size_t j = 0; j < D; j++)
                row[j] *= inv;
        }
    }
    cmr_linear(bag, B, D, params + tp.fc_w, params + tp.fc_b, H, h);
    cmr_relu(h, B * H);
    cmr_linear(h, B, H, params + tp.proj_w, params + tp.proj_b, tp.out, emb);
    free(scratch);
    return 0;
}

/* ---- backward --------------------------------------------------------------------------------------- */

/* g[j] += column sums of d[rows][cols] (a bias gradient). */
static void add_column_sums(float *g, const float *d, size_t rows, size_t cols)
{
    for (size_t i = 0; i < rows; i++)
        for (size_t j = 0; j < cols; j++)
            g[j] += d[i * cols + j];
}

int cmr_compact_text_backward(const cmr_compact_config *c, const float *params, cmr_compact_text_cache *cache,
                              const float *d_emb, float *grads)
{
    if (!c || !params || !cache || !d_emb || !grads)
        return cmr_fail(CMR_EINVAL, "compact text backward: NULL argument");
    if (cache->batch < 1)
        return cmr_fail(CMR_EINVAL, "compact text backward: no forward pass in the cache");
    text_params tp;
    int rc = text_params_of(c, &tp);
    if (rc < 0)
        return rc;
    if (cache->dim != tp.dim || cache->hidden != tp.hidden)
        return cmr_fail(CMR_EINVAL, "compact text backward: the cache is of a forward with dim %zu, hidden %zu",
                        cache->dim, cache->hidden);
    cmr_model_threads_init();
    int B = cache->batch, D = (int)tp.dim, H = (int)tp.hidden, E = (int)tp.out;
    /* proj: dW += d_embᵀ · h, db += Σ d_emb, d_h = d_emb · W masked by ReLU. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, E, H, B, 1.0f, d_emb, E, cache->h, H, 1.0f,
                grads + tp.proj_w, H);
    add_column_sums(grads + tp.proj_b, d_emb, (size_t)B, (size_t)E);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, H, E, 1.0f, d_emb, E, params + tp.proj_w, H, 0.0f,
                cache->d_h, H);
    for (size_t i = 0; i < (size_t)B * (size_t)H; i++)
        cache->d_h[i] = cache->h[i] > 0 ? cache->d_h[i] : 0;
    /* fc: the same with the bags as inputs. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, H, D, B, 1.0f, cache->d_h, H, cache->bag, D, 1.0f,
                grads + tp.fc_w, D);
    add_column_sums(grads + tp.fc_b, cache->d_h, (size_t)B, (size_t)H);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, B, D, H, 1.0f, cache->d_h, H, params + tp.fc_w, D, 0.0f,
                cache->d_bag, D);
    /* The mean's gradient reaches each of the text's n-grams as d_bag / n,
     * once per occurrence: only the touched rows of the table change, so
     * the scatter costs what the forward gather did. */
    float *table = grads + tp.embed;
    for (int b = 0; b < B; b++) {
        size_t lo = cache->offsets[b], hi = cache->offsets[b + 1];
        if (hi == lo)
            continue;
        float inv = (float)(1.0 / (double)(hi - lo));
        const float *d = cache->d_bag + (size_t)b * tp.dim;
        for (size_t i = lo; i < hi; i++) {
            float *g = table + (size_t)cache->ids[i] * tp.dim;
            for (size_t j = 0; j < tp.dim; j++)
                g[j] += d[j] * inv;
        }
    }
    return 0;
}
