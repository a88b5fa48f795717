/* cmr_train: contrastive training of the compact model (cmr_model.h,
 * docs/compact-model.md, docs/training.md).
 *
 * Determinism: every random choice comes from splitmix64 streams derived
 * from (seed, epoch, sample), never from a shared sequence, so a resumed run
 * draws exactly what an uninterrupted one would have. */
#include <ctype.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model_impl.h"

static uint64_t mix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t stream(uint64_t seed, uint64_t a, uint64_t b)
{
    uint64_t s = seed ^ (a * 0xd1342543de82ef95ull) ^ (b * 0x2545f4914f6cdd1dull);
    mix(&s);
    return s;
}

static double uniform(uint64_t *s) { return (double)(mix(s) >> 11) / 9007199254740992.0; }

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void cmr_train_options_init(cmr_train_options *o)
{
    memset(o, 0, sizeof *o);
    o->name = "cmrsearch-compact";
    o->epochs = 30;
    o->batch = 32;
    o->lr = 2e-3f;
    o->weight_decay = 1e-4f;
    o->warmup_epochs = 1;
    o->temperature = 0.05f;
    o->val_fraction = 0.1f;
    o->patience = 5;
    o->sentence_keep = 1;
    o->seed = 1;
}

static void default_input(const cmr_compact_config *c, unsigned lge_frames, unsigned resize, cmr_model_input *in)
{
    memset(in, 0, sizeof *in);
    in->frames = (unsigned)c->frames;
    /* The CMR-CLIP recipe unless asked: giving late enhancement half the
     * frames did not improve the default model (docs/default-model.md). */
    in->lge_frames = lge_frames;
    snprintf(in->recipe, sizeof in->recipe, "%s", lge_frames ? "cine+lge" : "cmrclip");
    in->channels = (unsigned)c->channels;
    in->size = (unsigned)c->size;
    /* Crop two thirds of the field of view rather than CMR-CLIP's seven
     * eighths: at 64 pixels the heart is otherwise a ring of 12 and a scar
     * in late enhancement a pixel or two (docs/default-model.md). */
    in->resize = resize ? resize : (unsigned)(c->size * 3 + 1) / 2;
    for (int i = 0; i < 3; i++) {
        in->mean[i] = 0.45f;
        in->std[i] = 0.225f;
    }
}

/* The configuration, input and initial parameters: init's, or fresh. */
static int start_model(const cmr_train_options *o, cmr_compact_config *c, cmr_model_input *in, float **params)
{
    *params = NULL;
    if (o->init) {
        cmr_model *m = NULL;
        int rc = cmr_model_open(o->init, &m);
        if (rc < 0)
            return rc;
        if (m->arch != CMR_ARCH_COMPACT) {
            cmr_model_close(m);
            return cmr_fail(CMR_EUNSUPPORTED, "%s: only a compact model can be fine-tuned here", o->init);
        }
        *c = m->compact;
        *in = m->input;
        *params = m->params;
        m->params = NULL;
        cmr_model_close(m);
        return 0;
    }
    cmr_compact_config_default(c);
    if (o->frames)
        c->frames = (int)o->frames;
    if (o->lexicon && (c->lexicon = cmr_compact_lexicon_parse(o->lexicon)) < 0)
        return cmr_fail(CMR_EINVAL, "--lexicon %s: cmr-v1 or cmr-v2", o->lexicon);
    int rc = cmr_compact_config_check(c);
    if (rc < 0)
        return cmr_fail_context(rc, "--frames: ");
    if (o->lge_frames >= (unsigned)c->frames)
        return cmr_fail(CMR_EINVAL, "--lge-frames %u of %d frames: at least one must stay for the cines", o->lge_frames,
                        c->frames);
    if (o->resize && (o->resize < (unsigned)c->size || o->resize > 8 * (unsigned)c->size))
        return cmr_fail(CMR_EINVAL, "--resize %u: from the frame size (%d) to 8 times it", o->resize, c->size);
    default_input(c, o->lge_frames, o->resize, in);
    return 0;
}

static float gauss(uint64_t *s)
{
    double u1 = (double)((mix(s) >> 11) + 1) / 9007199254740993.0, u2 = uniform(s);
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* He-uniform for layers followed by ReLU, PyTorch's default bound for the
 * projections, N(0, 1) embedding rows, zero biases. */
static void init_params(const cmr_compact_layout *l, float *p, float temperature, uint64_t seed)
{
    for (size_t i = 0; i < l->n_tensors; i++) {
        const cmr_compact_tensor *t = &l->tensors[i];
        uint64_t s = stream(seed, 0x1417, i);
        float *w = p + t->offset;
        if (!strcmp(t->name, "logit_scale")) {
            w[0] = logf(1.0f / temperature);
        } else if (strstr(t->name, ".bias")) {
            memset(w, 0, t->count * sizeof *w);
        } else if (!strcmp(t->name, "text.embed.weight")) {
            for (size_t k = 0; k < t->count; k++)
                w[k] = gauss(&s);
        } else {
            size_t fan_in = t->count / (size_t)t->shape[0];
            double bound = strstr(t->name, ".proj.") ? 1.0 / sqrt((double)fan_in) : sqrt(6.0 / (double)fan_in);
            for (size_t k = 0; k < t->count; k++)
                w[k] = (float)((2 * uniform(&s) - 1) * bound);
        }
    }
}

int cmr_train_input(const cmr_train_options *o, cmr_model_input *input)
{
    cmr_compact_config c;
    float *params = NULL;
    int rc = start_model(o, &c, input, &params);
    free(params);
    return rc;
}

/* ---- data -------------------------------------------------------------------------- */

typedef struct train_data {
    const cmr_train_set *set;
    const cmr_compact_config *c;
    cmr_model_input in;
    uint32_t *ids;      /* every text's n-grams, concatenated */
    size_t *text_start; /* n + 1 */
    /* With sentence sampling (sentence_keep < 1): every sentence's n-grams,
     * concatenated; sentence j's at sent_start[j], text i's sentences are
     * text_sent[i] .. text_sent[i + 1] - 1. */
    uint32_t *sids;
    size_t *sent_start, *text_sent;
    size_t *train, n_train, *val, n_val;
} train_data;

/* The end of the sentence starting at s: after a '.', '!' or '?' followed
 * by white space (not a decimal point), or at a line break, or at the end;
 * leading white space is part of it. */
static size_t sentence_end(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (s[i] == '\n')
            return i + 1;
        if ((s[i] == '.' || s[i] == '!' || s[i] == '?') && (i + 1 == len || isspace((unsigned char)s[i + 1])))
            return i + 1;
    }
    return len;
}

/* The n-grams of every sentence of every text, for sentence sampling.  Each
 * sentence is featurized alone, as a short query would be. */
static int prepare_sentences(train_data *d)
{
    const cmr_train_set *set = d->set;
    size_t n_sent = 0, total = 0, cap = 0, n = 0;
    for (int pass = 0; pass < 2; pass++) {
        n_sent = total = 0;
        for (size_t i = 0; i < set->n; i++) {
            const char *t = set->texts[i];
            size_t len = strlen(t);
            if (pass)
                d->text_sent[i] = n_sent;
            for (size_t at = 0; at < len;) {
                size_t end = at + sentence_end(t + at, len - at);
                int rc = cmr_compact_ngrams(d->c, t + at, end - at, pass ? d->sids + total : NULL,
                                            pass ? cap - total : 0, &n);
                if (rc < 0)
                    return rc;
                at = end;
                if (!n)
                    continue; /* white space or punctuation alone */
                if (pass)
                    d->sent_start[n_sent] = total;
                n_sent++;
                total += n;
            }
        }
        if (pass)
            break;
        cap = total;
        if (!(d->sids = malloc((total ? total : 1) * sizeof *d->sids)) ||
            !(d->sent_start = malloc((n_sent + 1) * sizeof *d->sent_start)) ||
            !(d->text_sent = malloc((set->n + 1) * sizeof *d->text_sent)))
            return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    d->sent_start[n_sent] = total;
    d->text_sent[set->n] = n_sent;
    return 0;
}

static int prepare(train_data *d, const cmr_train_options *o)
{
    const cmr_train_set *set = d->set;
    size_t total = 0, n = 0;
    int rc_sentences;
    if (!(d->text_start = calloc(set->n + 1, sizeof *d->text_start)) || !(d->train = malloc(set->n * sizeof *d->train)) ||
        !(d->val = malloc(set->n * sizeof *d->val)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < set->n; i++) {
        int rc = cmr_compact_ngrams(d->c, set->texts[i], strlen(set->texts[i]), NULL, 0, &n);
        if (rc < 0)
            return rc;
        d->text_start[i] = total;
        total += n;
    }
    d->text_start[set->n] = total;
    if (!(d->ids = malloc((total ? total : 1) * sizeof *d->ids)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < set->n; i++) {
        int rc = cmr_compact_ngrams(d->c, set->texts[i], strlen(set->texts[i]), d->ids + d->text_start[i],
                                    d->text_start[i + 1] - d->text_start[i], &n);
        if (rc < 0)
            return rc;
    }
    if (o->sentence_keep < 1 && (rc_sentences = prepare_sentences(d)) < 0)
        return rc_sentences;
    /* Held out by patient group, by a hash of the group: stable when
     * studies are added, so a fine-tuning run validates on the same people. */
    for (size_t i = 0; i < set->n; i++) {
        uint64_t h = stream(o->seed, 0x5a11d, set->groups[i]);
        if ((double)(mix(&h) >> 11) / 9007199254740992.0 < o->val_fraction)
            d->val[d->n_val++] = i;
        else
            d->train[d->n_train++] = i;
    }
    if (d->n_train < 2)
        return cmr_fail(CMR_EINVAL, "%zu (study, impression) pairs leave %zu for training: at least 2 needed", set->n,
                        d->n_train);
    return 0;
}

static void free_data(train_data *d)
{
    free(d->ids);
    free(d->text_start);
    free(d->sids);
    free(d->sent_start);
    free(d->text_sent);
    free(d->train);
    free(d->val);
}

/* One study's model input from its cached frames.  augment: a random
 * candidate frame per segment, a random crop and a random linear intensity
 * change; otherwise inference's frames and centre crop. */
static void make_video(const train_data *d, size_t i, int augment, uint64_t rng, float *out)
{
    const cmr_compact_config *c = d->c;
    int S = c->size, C = CMR_TRAIN_CANDIDATES, side = S + CMR_TRAIN_MARGIN;
    int dy = CMR_TRAIN_MARGIN / 2, dx = CMR_TRAIN_MARGIN / 2;
    float gain = 1, bias = 0;
    if (augment) {
        dy = (int)(mix(&rng) % (CMR_TRAIN_MARGIN + 1));
        dx = (int)(mix(&rng) % (CMR_TRAIN_MARGIN + 1));
        gain = (float)(0.8 + 0.4 * uniform(&rng));
        bias = (float)(-0.1 + 0.2 * uniform(&rng));
    }
    const uint8_t *v = d->set->videos[i];
    float inv_std = 1.0f / d->in.std[0], mean = d->in.mean[0];
    for (int f = 0; f < c->frames; f++) {
        int cand = augment ? (int)(mix(&rng) % (uint64_t)C) : C / 2;
        const uint8_t *src = v + ((size_t)f * (size_t)C + (size_t)cand) * (size_t)side * (size_t)side;
        float *dst = out + (size_t)f * (size_t)S * (size_t)S;
        for (int y = 0; y < S; y++)
            for (int x = 0; x < S; x++) {
                float g = (float)src[(size_t)(y + dy) * (size_t)side + (size_t)(x + dx)] * (1.0f / 255.0f);
                dst[(size_t)y * (size_t)S + (size_t)x] = (gain * g + bias - mean) * inv_std;
            }
    }
}

/* Which sentences of text i a training step shows: each kept with
 * probability keep, at least one; bit j for its j-th sentence.  All of
 * them (~0) without sentence sampling, for a text of one sentence, or of
 * more than 64. */
static uint64_t sentence_choice(const train_data *d, size_t i, float keep, uint64_t rng)
{
    if (keep >= 1 || !d->text_sent)
        return ~0ull;
    size_t ns = d->text_sent[i + 1] - d->text_sent[i];
    if (ns < 2 || ns > 64)
        return ~0ull;
    uint64_t chosen = 0;
    for (size_t j = 0; j < ns; j++)
        if (uniform(&rng) < keep)
            chosen |= 1ull << j;
    return chosen ? chosen : 1ull << (mix(&rng) % ns);
}

/* The listed texts' n-gram ids, concatenated into *ids (grown as needed),
 * with offsets[m + 1] into them: a batch for cmr_compact_text_forward.
 * choice: NULL for whole texts, else each text's sentences
 * (sentence_choice). */
static int batch_texts(const train_data *d, const size_t *idx, size_t m, const uint64_t *choice, uint32_t **ids,
                       size_t *offsets)
{
    size_t total = 0;
    for (int pass = 0; pass < 2; pass++) {
        total = 0;
        for (size_t k = 0; k < m; k++) {
            size_t i = idx[k];
            if (pass)
                offsets[k] = total;
            if (!choice || choice[k] == ~0ull) {
                size_t n = d->text_start[i + 1] - d->text_start[i];
                if (pass)
                    memcpy(*ids + total, d->ids + d->text_start[i], n * sizeof **ids);
                total += n;
                continue;
            }
            for (size_t j = d->text_sent[i]; j < d->text_sent[i + 1]; j++) {
                if (!(choice[k] >> (j - d->text_sent[i]) & 1))
                    continue;
                size_t n = d->sent_start[j + 1] - d->sent_start[j];
                if (pass)
                    memcpy(*ids + total, d->sids + d->sent_start[j], n * sizeof **ids);
                total += n;
            }
        }
        if (pass)
            break;
        uint32_t *grown = realloc(*ids, (total ? total : 1) * sizeof **ids);
        if (!grown)
            return cmr_fail(CMR_ENOMEM, "out of memory");
        *ids = grown;
    }
    offsets[m] = total;
    return 0;
}

/* group[k]: the first pair of the batch showing the same n-grams as pair k
 * (cmr_clip_loss_grouped), from batch_texts' output. */
static void text_groups(const uint32_t *ids, const size_t *offsets, size_t m, uint32_t *group)
{
    for (size_t k = 0; k < m; k++) {
        size_t n = offsets[k + 1] - offsets[k];
        group[k] = (uint32_t)k;
        for (size_t j = 0; j < k; j++)
            if (offsets[j + 1] - offsets[j] == n && !memcmp(ids + offsets[j], ids + offsets[k], n * sizeof *ids)) {
                group[k] = group[j];
                break;
            }
    }
}

/* ---- validation -------------------------------------------------------------------- */

/* L2-normalised image and text embeddings of the listed samples. */
static int embed_all(const train_data *d, const float *params, const size_t *idx, size_t n, float *img, float *txt)
{
    const cmr_compact_config *c = d->c;
    size_t per = (size_t)c->frames * (size_t)c->channels * (size_t)c->size * (size_t)c->size, E = (size_t)c->embed_dim;
    enum { CHUNK = 32 };
    float *video = malloc(CHUNK * per * sizeof *video);
    uint32_t *ids = NULL;
    size_t offsets[CHUNK + 1];
    int rc = 0;
    if (!video)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t b = 0; b < n && rc == 0; b += CHUNK) {
        size_t m = n - b < CHUNK ? n - b : CHUNK;
#pragma omp parallel for
        for (size_t k = 0; k < m; k++)
            make_video(d, idx[b + k], 0, 0, video + k * per);
        if ((rc = batch_texts(d, idx + b, m, NULL, &ids, offsets)) == 0 &&
            (rc = cmr_compact_video_forward(c, params, video, (int)m, img + b * E, NULL)) == 0)
            rc = cmr_compact_text_forward(c, params, ids, offsets, (int)m, txt + b * E, NULL);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        cmr_l2_normalize(img + i * E, E);
        cmr_l2_normalize(txt + i * E, E);
    }
    free(video);
    free(ids);
    return rc;
}

typedef struct val_scores {
    double loss, r1, r5, r10;
} val_scores;

/* Recall@k of each pair's partner among all n, both directions, averaged. */
static int validate(const train_data *d, const float *params, val_scores *out)
{
    memset(out, 0, sizeof *out);
    size_t n = d->n_val, E = (size_t)d->c->embed_dim;
    if (n < 2)
        return 0;
    float *img = malloc(n * E * sizeof *img), *txt = malloc(n * E * sizeof *txt);
    int rc = img && txt ? embed_all(d, params, d->val, n, img, txt) : cmr_fail(CMR_ENOMEM, "out of memory");
    if (rc == 0) {
        cmr_compact_layout l;
        cmr_compact_layout_of(d->c, &l);
        /* The loss wants raw embeddings; normalised ones give the same value. */
        out->loss = cmr_clip_loss(img, txt, (int)n, (int)E, params[cmr_compact_find(&l, "logit_scale")->offset], NULL,
                                  NULL, NULL);
        size_t hits[2][3] = {{0}};
        for (int dir = 0; dir < 2; dir++)
            for (size_t i = 0; i < n; i++) {
                const float *q = (dir ? txt : img) + i * E, *keys = dir ? img : txt;
                double own = 0;
                for (size_t e = 0; e < E; e++)
                    own += (double)q[e] * keys[i * E + e];
                size_t rank = 0; /* others scoring above the partner */
                for (size_t j = 0; j < n; j++) {
                    double s = 0;
                    for (size_t e = 0; e < E; e++)
                        s += (double)q[e] * keys[j * E + e];
                    rank += j != i && s > own;
                }
                hits[dir][0] += rank < 1;
                hits[dir][1] += rank < 5;
                hits[dir][2] += rank < 10;
            }
        out->r1 = (double)(hits[0][0] + hits[1][0]) / (2.0 * (double)n);
        out->r5 = (double)(hits[0][1] + hits[1][1]) / (2.0 * (double)n);
        out->r10 = (double)(hits[0][2] + hits[1][2]) / (2.0 * (double)n);
    }
    free(img);
    free(txt);
    return rc;
}

/* ---- checkpoints ------------------------------------------------------------------- */

typedef struct train_state {
    float *params, *best, *m, *v;
    size_t total;
    unsigned epoch;       /* epochs completed */
    uint64_t step;        /* optimiser steps taken */
    unsigned best_epoch, since_best;
    double best_r10;
} train_state;

/* What must not change between a checkpoint and the run resuming it. */
static void options_key(const cmr_train_options *o, char *out, size_t cap)
{
    snprintf(out, cap, "batch %u lr %.9g wd %.9g warmup %.9g temperature %.9g learn %d val %.9g epochs %u init %s",
             o->batch, (double)o->lr, (double)o->weight_decay, (double)o->warmup_epochs, (double)o->temperature,
             o->learn_temperature, (double)o->val_fraction, o->epochs, o->init ? o->init : "-");
    /* Absent at their defaults: checkpoints from before the options still resume. */
    if (o->sentence_keep < 1)
        snprintf(out + strlen(out), cap - strlen(out), " sentence_keep %.9g", (double)o->sentence_keep);
    if (o->share_texts)
        snprintf(out + strlen(out), cap - strlen(out), " share_texts");
}

static int save_checkpoint(const char *path, const train_state *s, const cmr_train_options *o, size_t n)
{
    uint64_t seed = o->seed;
    char key[512];
    options_key(o, key, sizeof key);
    cmr_st_entry e[4] = {
        {.name = "params", .ndim = 1, .shape = {(int64_t)s->total}, .data = s->params},
        {.name = "best", .ndim = 1, .shape = {(int64_t)s->total}, .data = s->best},
        {.name = "adam.m", .ndim = 1, .shape = {(int64_t)s->total}, .data = s->m},
        {.name = "adam.v", .ndim = 1, .shape = {(int64_t)s->total}, .data = s->v},
    };
    char text[256];
    snprintf(text, sizeof text, "{\"epoch\":%u,\"step\":%llu,\"best_epoch\":%u,\"since_best\":%u,\"best_r10\":%.17g,"
                                "\"seed\":%llu,\"pairs\":%zu}",
             s->epoch, (unsigned long long)s->step, s->best_epoch, s->since_best, s->best_r10,
             (unsigned long long)seed, n);
    json_t *meta = json_pack("{s:s, s:s}", "state", text, "options", key);
    int rc = meta ? cmr_st_write(path, e, 4, meta) : cmr_fail(CMR_ENOMEM, "out of memory");
    json_decref(meta);
    return rc;
}

/* 1 when resumed, 0 when there is no checkpoint, negative on error. */
static int load_checkpoint(const char *path, train_state *s, const cmr_train_options *o, size_t n)
{
    uint64_t seed = o->seed;
    char key[512];
    options_key(o, key, sizeof key);
    cmr_st_file *f = NULL;
    int rc = cmr_st_open(path, &f);
    if (rc == CMR_ENOTFOUND) {
        cmr_clear_error();
        return 0;
    }
    if (rc < 0)
        return rc;
    char *state = cmr_st_metadata(f, "state"), *saved_key = cmr_st_metadata(f, "options");
    if (!saved_key || strcmp(saved_key, key) != 0) {
        rc = cmr_fail(CMR_EINVAL, "%s: made with other training options (%s; this run: %s); remove it to start again",
                      path, saved_key ? saved_key : "unknown", key);
        free(saved_key);
        free(state);
        cmr_st_close(f);
        return rc;
    }
    free(saved_key);
    json_t *j = state ? json_loads(state, 0, NULL) : NULL;
    free(state);
    json_int_t js = 0, jn = 0, je = 0, jstep = 0, jb = 0, jsb = 0;
    double r10 = 0;
    if (!j || json_unpack(j, "{s:I, s:I, s:I, s:I, s:I, s:F, s:I}", "epoch", &je, "step", &jstep, "best_epoch", &jb,
                          "since_best", &jsb, "seed", &js, "best_r10", &r10, "pairs", &jn) != 0) {
        rc = cmr_fail(CMR_EFORMAT, "%s: not a cmrsearch training checkpoint", path);
    } else if ((uint64_t)js != seed || (size_t)jn != n) {
        rc = cmr_fail(CMR_EINVAL, "%s: made with seed %lld on %lld pairs, this run has seed %llu and %zu pairs; "
                                  "remove it to start again",
                      path, (long long)js, (long long)jn, (unsigned long long)seed, n);
    } else {
        const char *names[4] = {"params", "best", "adam.m", "adam.v"};
        float *dst[4] = {s->params, s->best, s->m, s->v};
        int64_t shape[1] = {(int64_t)s->total};
        for (int i = 0; i < 4 && rc == 0; i++) {
            const float *src;
            if ((rc = cmr_st_f32(f, names[i], 1, shape, &src)) == 0)
                memcpy(dst[i], src, s->total * sizeof *src);
        }
        s->epoch = (unsigned)je;
        s->step = (uint64_t)jstep;
        s->best_epoch = (unsigned)jb;
        s->since_best = (unsigned)jsb;
        s->best_r10 = r10;
        rc = rc == 0 ? 1 : rc;
    }
    json_decref(j);
    cmr_st_close(f);
    return rc;
}

/* ---- the loop ---------------------------------------------------------------------- */

static double learning_rate(const cmr_train_options *o, double lr, uint64_t step, uint64_t steps_per_epoch)
{
    double warm = (double)o->warmup_epochs * (double)steps_per_epoch, total = (double)o->epochs * steps_per_epoch;
    if (warm > 0 && (double)step < warm)
        return lr * ((double)step + 1) / warm;
    double t = total > warm ? ((double)step - warm) / (total - warm) : 1;
    return lr * 0.5 * (1 + cos(M_PI * (t < 1 ? t : 1)));
}

static json_t *training_record(const cmr_train_options *o, const cmr_train_result *r, double lr, const val_scores *v)
{
    return json_pack("{s:I, s:i, s:i, s:f, s:f, s:f, s:b, s:f, s:i, s:i, s:I, s:I, s:f, s:f, s:f, s:f, s:s*, s:f, s:b}",
                     "seed", (json_int_t)o->seed, "epochs_run", (int)r->epochs_run, "best_epoch", (int)r->best_epoch,
                     "lr", lr, "weight_decay", (double)o->weight_decay, "temperature", (double)o->temperature,
                     "learn_temperature", o->learn_temperature, "val_fraction", (double)o->val_fraction, "batch",
                     (int)o->batch, "patience", (int)o->patience, "train_pairs", (json_int_t)r->n_train, "val_pairs",
                     (json_int_t)r->n_val, "val_r1", v->r1, "val_r5", v->r5, "val_r10", v->r10, "seconds", r->seconds,
                     "init", o->init, "sentence_keep", (double)o->sentence_keep, "share_texts",
                     o->share_texts);
}

int cmr_train(const cmr_train_set *set, const cmr_train_options *opts, const char *out_dir, cmr_train_result *result)
{
    cmr_train_options o = *opts;
    cmr_compact_config c;
    train_data d = {.set = set, .c = &c};
    train_state s = {0};
    float *grads = NULL, *video = NULL, *img = NULL, *txt = NULL, *d_img = NULL, *d_txt = NULL;
    uint8_t *mask = NULL;
    uint32_t *ids = NULL;
    size_t *offsets = NULL;
    uint64_t *choice = NULL;
    uint32_t *group = NULL;
    cmr_compact_video_cache *vcache = NULL;
    cmr_compact_text_cache *tcache = NULL;
    int rc;
    double t0 = now();
    memset(result, 0, sizeof *result);
    if (!o.name)
        o.name = "cmrsearch-compact";
    if (o.batch < 2 || o.epochs < 1 || !(o.lr > 0) || !(o.temperature > 0) || o.val_fraction < 0 ||
        o.val_fraction >= 1 || !(o.sentence_keep > 0 && o.sentence_keep <= 1))
        return cmr_fail(CMR_EINVAL, "training options: batch %u (>= 2), epochs %u (>= 1), lr %g, temperature %g, "
                                    "validation fraction %g (0..1), sentence keep %g (0 < p <= 1)",
                        o.batch, o.epochs, (double)o.lr, (double)o.temperature, (double)o.val_fraction,
                        (double)o.sentence_keep);
    if ((rc = start_model(&o, &c, &d.in, &s.params)) < 0)
        return rc;
    if (c.channels != 1) {
        rc = cmr_fail(CMR_EUNSUPPORTED, "training: models of %d channels; the frame cache is grey", c.channels);
        goto done;
    }
    if ((rc = prepare(&d, &o)) < 0)
        goto done;
    cmr_compact_layout layout;
    cmr_compact_layout_of(&c, &layout);
    s.total = layout.total;
    size_t E = (size_t)c.embed_dim, B = o.batch,
           per = (size_t)c.frames * (size_t)c.channels * (size_t)c.size * (size_t)c.size;
    if (!s.params && !(s.params = malloc(s.total * sizeof *s.params)))
        goto nomem;
    if (!o.init)
        init_params(&layout, s.params, o.temperature, o.seed);
    if (!(s.best = malloc(s.total * sizeof *s.best)) || !(s.m = calloc(s.total, sizeof *s.m)) ||
        !(s.v = calloc(s.total, sizeof *s.v)) || !(grads = malloc(s.total * sizeof *grads)) ||
        !(mask = calloc(s.total, 1)) || !(video = malloc(B * per * sizeof *video)) ||
        !(img = malloc(B * E * sizeof *img)) || !(txt = malloc(B * E * sizeof *txt)) ||
        !(d_img = malloc(B * E * sizeof *d_img)) || !(d_txt = malloc(B * E * sizeof *d_txt)) ||
        !(offsets = malloc((B + 1) * sizeof *offsets)) || !(choice = malloc(B * sizeof *choice)) ||
        !(group = malloc(B * sizeof *group)))
        goto nomem;
    memcpy(s.best, s.params, s.total * sizeof *s.best);
    /* Decay the weights of convolutions and linear layers only. */
    for (size_t i = 0; i < layout.n_tensors; i++) {
        const cmr_compact_tensor *t = &layout.tensors[i];
        if (strstr(t->name, ".weight") && strcmp(t->name, "text.embed.weight"))
            memset(mask + t->offset, 1, t->count);
    }
    size_t ls = cmr_compact_find(&layout, "logit_scale")->offset;
    if (o.checkpoint && (rc = load_checkpoint(o.checkpoint, &s, &o, set->n)) < 0)
        goto done;
    result->resumed = rc == 1;
    result->n_train = d.n_train;
    result->n_val = d.n_val;
    uint64_t steps = (d.n_train + B - 1) / B;
    cmr_adamw opt = {.lr = o.lr, .beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = o.weight_decay};
    val_scores best = {0}, last = {0};
    while (s.epoch < o.epochs && (!o.patience || s.since_best < o.patience || !d.n_val)) {
        unsigned epoch = s.epoch + 1;
        size_t *order = d.train; /* shuffled in place, from the epoch's own stream */
        uint64_t sh = stream(o.seed, 0xe70c, epoch);
        for (size_t i = d.n_train; i > 1; i--) {
            size_t j = (size_t)(mix(&sh) % i), t = order[i - 1];
            order[i - 1] = order[j];
            order[j] = t;
        }
        double loss_sum = 0;
        for (uint64_t step = 0; step < steps; step++) {
            size_t first = (size_t)step * B, m = d.n_train - first < B ? d.n_train - first : B;
            if (m < 2)
                break; /* a contrastive batch of one teaches nothing */
#pragma omp parallel for
            for (size_t k = 0; k < m; k++)
                make_video(&d, order[first + k], 1, stream(o.seed, epoch, order[first + k]), video + k * per);
            for (size_t k = 0; k < m; k++)
                choice[k] = sentence_choice(&d, order[first + k], o.sentence_keep,
                                            stream(o.seed, 0x5e47000000ull + epoch, order[first + k]));
            if ((rc = batch_texts(&d, order + first, m, choice, &ids, offsets)) < 0 ||
                (rc = cmr_compact_video_forward(&c, s.params, video, (int)m, img, &vcache)) < 0 ||
                (rc = cmr_compact_text_forward(&c, s.params, ids, offsets, (int)m, txt, &tcache)) < 0)
                goto done;
            /* Sampled sentences repeat within a batch ("No late gadolinium
             * enhancement."): with share_texts such pairs are each other's
             * partners. */
            if (o.share_texts)
                text_groups(ids, offsets, m, group);
            float d_ls = 0;
            double loss = cmr_clip_loss_grouped(img, txt, (int)m, (int)E, s.params[ls], o.share_texts ? group : NULL,
                                                d_img, d_txt, &d_ls);
            if (!isfinite(loss)) {
                rc = cmr_fail(CMR_EINVAL, "training diverged at epoch %u step %llu (loss %g): lower --lr", epoch,
                              (unsigned long long)step, loss);
                goto done;
            }
            memset(grads, 0, s.total * sizeof *grads);
            if ((rc = cmr_compact_video_backward(&c, s.params, vcache, d_img, grads)) < 0 ||
                (rc = cmr_compact_text_backward(&c, s.params, tcache, d_txt, grads)) < 0)
                goto done;
            if (o.learn_temperature)
                grads[ls] = d_ls;
            opt.lr = (float)learning_rate(&o, o.lr, s.step, steps);
            cmr_adamw_step(&opt, (long)++s.step, s.params, grads, s.m, s.v, mask, s.total);
            /* CLIP's clamp: a temperature below 1/100 makes the loss a max. */
            if (s.params[ls] > logf(100.0f))
                s.params[ls] = logf(100.0f);
            loss_sum += loss;
            if (o.progress) {
                cmr_train_progress p = {.epoch = epoch, .epochs = o.epochs, .step = step + 1, .steps = steps,
                                        .loss = loss_sum / (double)(step + 1), .seconds = now() - t0};
                o.progress(o.progress_user, &p);
            }
        }
        result->final_loss = loss_sum / (double)steps;
        if ((rc = validate(&d, s.params, &last)) < 0)
            goto done;
        s.epoch = epoch;
        if (!d.n_val || last.r10 > s.best_r10 || s.best_epoch == 0) {
            s.best_r10 = last.r10;
            s.best_epoch = epoch;
            s.since_best = 0;
            best = last;
            memcpy(s.best, s.params, s.total * sizeof *s.best);
        } else {
            s.since_best++;
        }
        if (o.progress) {
            cmr_train_progress p = {.epoch = epoch, .epochs = o.epochs, .step = steps, .steps = steps,
                                    .loss = result->final_loss, .validated = d.n_val > 0, .val_loss = last.loss,
                                    .val_r1 = last.r1, .val_r5 = last.r5, .val_r10 = last.r10,
                                    .seconds = now() - t0};
            o.progress(o.progress_user, &p);
        }
        if (o.checkpoint && (rc = save_checkpoint(o.checkpoint, &s, &o, set->n)) < 0)
            goto done;
    }
    if (best.r10 == 0 && s.best_epoch && d.n_val && (rc = validate(&d, s.best, &best)) < 0)
        goto done;
    result->epochs_run = s.epoch;
    result->best_epoch = s.best_epoch;
    result->best_val_r10 = s.best_r10;
    result->seconds = now() - t0;
    json_t *record = training_record(&o, result, (double)o.lr, &best);
    rc = cmr_compact_save(out_dir, o.name, &c, &d.in, s.best, o.f16, record);
    json_decref(record);
    goto done;
nomem:
    rc = cmr_fail(CMR_ENOMEM, "training: out of memory");
done:
    cmr_compact_video_cache_free(vcache);
    cmr_compact_text_cache_free(tcache);
    free_data(&d);
    free(s.params);
    free(s.best);
    free(s.m);
    free(s.v);
    free(grads);
    free(mask);
    free(video);
    free(img);
    free(txt);
    free(d_img);
    free(d_txt);
    free(ids);
    free(offsets);
    free(choice);
    free(group);
    return rc;
}
