/* The compact model's configuration and parameter layout
 * (docs/compact-model.md). */
#include <stdio.h>
#include <string.h>

#include "compact.h"

void cmr_compact_config_default(cmr_compact_config *c)
{
    static const int channels[CMR_COMPACT_CONVS] = {16, 32, 64, 128, 128}, strides[CMR_COMPACT_CONVS] = {2, 2, 2, 2, 1};
    memset(c, 0, sizeof *c);
    c->frames = 16;
    c->size = 64;
    c->channels = 1;
    memcpy(c->conv_channels, channels, sizeof channels);
    memcpy(c->conv_strides, strides, sizeof strides);
    c->spatial_max = 1;
    c->video_hidden = 256;
    c->text_buckets = 16384;
    c->text_dim = 128;
    c->text_hidden = 256;
    c->max_n = 3;
    c->max_words = 512;
    c->lexicon = 1; /* "cmr-v1"; train --lexicon cmr-v2 for the other */
    c->embed_dim = 128;
}

/* Spatial side after the convolutions (3x3, pad 1). */
static int final_side(const cmr_compact_config *c)
{
    int side = c->size;
    for (int i = 0; i < CMR_COMPACT_CONVS; i++)
        side = (side + 2 - 3) / c->conv_strides[i] + 1;
    return side;
}

static const char *const lexicon_names[] = {NULL, "cmr-v1", "cmr-v2"};

int cmr_compact_lexicon_parse(const char *name)
{
    for (int i = 1; name && i < (int)(sizeof lexicon_names / sizeof *lexicon_names); i++)
        if (!strcmp(name, lexicon_names[i]))
            return i;
    return -1;
}

const char *cmr_compact_lexicon_name(int lexicon)
{
    return lexicon > 0 && lexicon < (int)(sizeof lexicon_names / sizeof *lexicon_names) ? lexicon_names[lexicon]
                                                                                        : NULL;
}

int cmr_compact_config_check(const cmr_compact_config *c)
{
#define RANGE(field, lo, hi)                                                                                           \
    if (c->field < (lo) || c->field > (hi))                                                                            \
        return cmr_fail(CMR_EFORMAT, "compact model: " #field " is %d, expected %d..%d", c->field, (lo), (hi));
    RANGE(frames, 4, 256)
    RANGE(size, 8, 512)
    RANGE(channels, 1, 3)
    RANGE(video_hidden, 1, 4096)
    RANGE(text_buckets, 1, 1 << 22)
    RANGE(text_dim, 1, 4096)
    RANGE(text_hidden, 1, 4096)
    RANGE(max_n, 1, 8)
    RANGE(max_words, 1, 1 << 16)
    RANGE(embed_dim, 1, 4096)
#undef RANGE
    if (c->lexicon < 0 || c->lexicon > 2)
        return cmr_fail(CMR_EFORMAT, "compact model: lexicon is %d, expected 0, 1 or 2", c->lexicon);
    if (c->spatial_max != 0 && c->spatial_max != 1)
        return cmr_fail(CMR_EFORMAT, "compact model: spatial_max is %d, expected 0 or 1", c->spatial_max);
    if (c->frames % 4)
        return cmr_fail(CMR_EFORMAT, "compact model: frames %d is not a multiple of 4 (the pooling uses quarters)",
                        c->frames);
    for (int i = 0; i < CMR_COMPACT_CONVS; i++)
        if (c->conv_channels[i] < 1 || c->conv_channels[i] > 4096 || c->conv_strides[i] < 1 ||
            c->conv_strides[i] > 4)
            return cmr_fail(CMR_EFORMAT, "compact model: conv%d has %d channels, stride %d", i + 1,
                            c->conv_channels[i], c->conv_strides[i]);
    if (final_side(c) < 1)
        return cmr_fail(CMR_EFORMAT, "compact model: frames of %d pixels vanish under the strides", c->size);
    return 0;
}

static void add(cmr_compact_layout *l, const char *name, int ndim, int64_t d0, int64_t d1, int64_t d2, int64_t d3)
{
    cmr_compact_tensor *t = &l->tensors[l->n_tensors++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->ndim = ndim;
    int64_t d[4] = {d0, d1, d2, d3};
    t->count = 1;
    for (int i = 0; i < 4; i++) {
        t->shape[i] = i < ndim ? d[i] : 0;
        if (i < ndim)
            t->count *= (size_t)d[i];
    }
    t->offset = l->total;
    /* 16-float alignment: every tensor starts on a 64-byte boundary of an
     * aligned vector, as sgemm likes. */
    l->total += (t->count + 15) / 16 * 16;
}

void cmr_compact_layout_of(const cmr_compact_config *c, cmr_compact_layout *l)
{
    memset(l, 0, sizeof *l);
    char name[32];
    int in = c->channels;
    for (int i = 0; i < CMR_COMPACT_CONVS; i++) {
        int out = c->conv_channels[i];
        snprintf(name, sizeof name, "video.conv%d.weight", i + 1);
        add(l, name, 4, out, in, 3, 3);
        snprintf(name, sizeof name, "video.conv%d.bias", i + 1);
        add(l, name, 1, out, 0, 0, 0);
        in = out;
    }
    /* the per-frame feature: every channel's spatial mean, then (spatial_max) its max */
    int feat = c->conv_channels[CMR_COMPACT_CONVS - 1] * (1 + c->spatial_max);
    add(l, "video.fc.weight", 2, c->video_hidden, 6 * feat, 0, 0);
    add(l, "video.fc.bias", 1, c->video_hidden, 0, 0, 0);
    add(l, "video.proj.weight", 2, c->embed_dim, c->video_hidden, 0, 0);
    add(l, "video.proj.bias", 1, c->embed_dim, 0, 0, 0);
    add(l, "text.embed.weight", 2, c->text_buckets, c->text_dim, 0, 0);
    add(l, "text.fc.weight", 2, c->text_hidden, c->text_dim, 0, 0);
    add(l, "text.fc.bias", 1, c->text_hidden, 0, 0, 0);
    add(l, "text.proj.weight", 2, c->embed_dim, c->text_hidden, 0, 0);
    add(l, "text.proj.bias", 1, c->embed_dim, 0, 0, 0);
    add(l, "logit_scale", 0, 0, 0, 0, 0);
}

const cmr_compact_tensor *cmr_compact_find(const cmr_compact_layout *l, const char *name)
{
    for (size_t i = 0; i < l->n_tensors; i++)
        if (!strcmp(l->tensors[i].name, name))
            return &l->tensors[i];
    return NULL;
}
