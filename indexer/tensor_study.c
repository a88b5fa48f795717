/* Study -> model input tensor, layer 2 (docs/model-input.md defines every
 * step): cmr_study_tensor_with chooses the series and images of a
 * classified study as the CMR-CLIP recipe says, records what is missing,
 * decodes only the images that survive the sampling and hands them to
 * layer 1 (cmr_tensor_from_source, tensor.c). */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "cmr_dicom.h"
#include "cmr_tensor_internal.h"

/* The paper's smallest LGE SAX stack: the stand-in n_SAX when a study has
 * none, so that the cine frames keep the temporal positions they had in
 * training (docs/model-input.md, "Missing views"). */
#define DEFAULT_LGE_SLICES 10

/* Four lanes of a float's bits (see tensor.c for the float vectors). */
typedef uint32_t v4u __attribute__((vector_size(16)));

/* Any NaN or infinity (exponent all ones) among n floats. */
static int any_nonfinite(const float *p, size_t n)
{
    const v4u mask = {0x7f800000u, 0x7f800000u, 0x7f800000u, 0x7f800000u};
    v4u bad = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        v4u u;
        memcpy(&u, p + i, sizeof u);
        bad |= (v4u)((u & mask) == mask);
    }
    uint32_t b = bad[0] | bad[1] | bad[2] | bad[3];
    for (; i < n; i++) {
        uint32_t u;
        memcpy(&u, p + i, sizeof u);
        b |= (u & 0x7f800000u) == 0x7f800000u;
    }
    return b != 0;
}

/* The output (38 MB for CMR-CLIP) in transparent huge pages where the
 * system offers them: a fresh buffer's first touch then costs a few dozen
 * page faults instead of ten thousand, a third of the build time.  Still
 * released with free(). */
static float *alloc_tensor(size_t values)
{
    size_t bytes = values * sizeof(float);
#ifdef MADV_HUGEPAGE
    const size_t huge = (size_t)2 << 20;
    if (bytes >= 2 * huge) {
        size_t rounded = (bytes + huge - 1) / huge * huge;
        void *p = aligned_alloc(huge, rounded);
        if (p) {
            /* Advice only: without it the memory is as good, just slower to touch. */
            (void)madvise(p, rounded, MADV_HUGEPAGE);
            return p;
        }
    }
#endif
    return malloc(bytes);
}

/* ---- layer 2: the study's views ------------------------------------------------------------- */

/* One slice of a view: a run of images of one series, in phase order. */
typedef struct slice_run {
    const cmr_series *series;
    const cmr_image *im;
    size_t n;
} slice_run;

typedef struct view_stack {
    const cmr_series *series; /* the chosen series; for an assembled stack, its best-ranked member */
    size_t n_slices;
    slice_run *slices;
} view_stack;

/* Among series of one label: more slices, then more images, then the
 * higher series number (a repeat is usually the better acquisition);
 * still equal: the first in study order. */
static int better(const cmr_series *a, const cmr_series *b)
{
    if (a->n_slices != b->n_slices)
        return a->n_slices > b->n_slices;
    if (a->n_images != b->n_images)
        return a->n_images > b->n_images;
    return a->number > b->number;
}

static const cmr_series *pick(const cmr_study *st, cmr_series_label label)
{
    const cmr_series *best = NULL;
    for (size_t i = 0; i < st->n_series; i++) {
        const cmr_series *s = &st->series[i];
        if (s->label == label && s->n_images && (!best || better(s, best)))
            best = s;
    }
    return best;
}

/* A series' slices: the runs of equal slice index (images come ordered by slice, then phase). */
static int series_slices(const cmr_series *s, view_stack *vs)
{
    size_t n = 0;
    for (size_t i = 0; i < s->n_images; i++)
        n += i == 0 || s->images[i].slice != s->images[i - 1].slice;
    vs->series = s;
    vs->slices = calloc(n ? n : 1, sizeof *vs->slices);
    if (!vs->slices)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    vs->n_slices = 0;
    for (size_t i = 0; i < s->n_images; i++) {
        if (i == 0 || s->images[i].slice != s->images[i - 1].slice)
            vs->slices[vs->n_slices++] = (slice_run){s, &s->images[i], 0};
        vs->slices[vs->n_slices - 1].n++;
    }
    return 0;
}

typedef struct member {
    const cmr_series *s;
    double coord;
    size_t order;
} member;

static int cmp_member(const void *x, const void *y)
{
    const member *a = x, *b = y;
    if (a->coord != b->coord)
        return a->coord < b->coord ? -1 : 1;
    return (a->order > b->order) - (a->order < b->order);
}

static double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

/* Within 5 degrees: the slices of one planned stack share their orientation exactly. */
#define PARALLEL_COS 0.99619469809174555

/* A short-axis stack: the best series when it has several slices; when the
 * best has one, every single-slice series of the label parallel to it,
 * ordered along its normal (some sites store one series per slice),
 * locations closer than a tenth of the slice thickness counted once (the
 * best-ranked series kept). */
static int stack_build(const cmr_study *st, cmr_series_label label, view_stack *vs)
{
    memset(vs, 0, sizeof *vs);
    const cmr_series *best = pick(st, label);
    if (!best)
        return 0;
    if (best->n_slices >= 2 || !best->has_geometry)
        return series_slices(best, vs);
    member *m = malloc(st->n_series * sizeof *m);
    if (!m)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < st->n_series; i++) {
        const cmr_series *s = &st->series[i];
        if (s->label != label || !s->n_images || !s->has_geometry || fabs(dot3(s->normal, best->normal)) < PARALLEL_COS)
            continue;
        m[n++] = (member){s, dot3(s->images[0].position, best->normal), i};
    }
    if (n < 2) {
        free(m);
        return series_slices(best, vs);
    }
    qsort(m, n, sizeof *m, cmp_member);
    double tol = best->slice_thickness > 0 ? best->slice_thickness / 10 : 0.5;
    vs->slices = calloc(n, sizeof *vs->slices);
    if (!vs->slices) {
        free(m);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n;) {
        const cmr_series *rep = m[i].s;
        size_t j = i + 1;
        for (; j < n && m[j].coord - m[i].coord <= tol; j++)
            if (better(m[j].s, rep))
                rep = m[j].s;
        vs->slices[vs->n_slices++] = (slice_run){rep, rep->images, rep->n_images};
        i = j;
    }
    free(m);
    vs->series = best;
    return 0;
}

/* The image of a slice taken for a single-image view: the first acquired. */
static const cmr_image *first_acquired(const slice_run *r)
{
    const cmr_image *best = r->im;
    for (size_t i = 1; i < r->n; i++)
        if (r->im[i].seq < best->seq)
            best = &r->im[i];
    return best;
}

typedef struct src_entry {
    int slot;
    const cmr_image *im; /* NULL: a black frame */
} src_entry;

typedef struct decoded_file {
    const char *path;
    int rows, cols, frames, rc;
    float *px;
    char err[200];
} decoded_file;

typedef struct used_image {
    const cmr_image *im;
    int slot;
    int index;           /* in its slot's group, -1 when it could not be decoded */
    const float *pixels;
    int rows, cols;
} used_image;

static void gap(char *buf, size_t cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

/* Appends "; "-separated notes; a note that does not fit ends the text with "...". */
static void gap(char *buf, size_t cap, const char *fmt, ...)
{
    size_t len = strlen(buf);
    if (len + 8 >= cap || (len >= 3 && !strcmp(buf + len - 3, "...")))
        return;
    char note[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(note, sizeof note, fmt, ap);
    va_end(ap);
    size_t sep = len ? 2 : 0, n = strlen(note);
    memcpy(buf + len, "; ", sep);
    len += sep;
    if (len + n < cap) {
        memcpy(buf + len, note, n + 1);
        return;
    }
    n = cap - len - 4;
    memcpy(buf + len, note, n);
    memcpy(buf + len + n, "...", 4);
}

static const char *const slot_name[CMR_SLOT_COUNT] = {"cine LAX", "cine SAX", "LGE SAX",
                                                       "LGE 4-chamber", "LGE 2-chamber", "LGE 3-chamber"};

/* The published order of the single LGE long-axis views: lge_lax (our
 * 4-chamber), lge_2ch, lge_3ch (CMRCLIP preprocessing.py, ALL_VIEWS). */
static const cmr_series_label lge_lax_label[3] = {CMR_SERIES_LGE_4CH, CMR_SERIES_LGE_2CH, CMR_SERIES_LGE_3CH};
/* Cine LAX: the 4-chamber shows all four chambers, both ventricles, both
 * atria and the septum; the 2- and 3-chamber views show the left heart only. */
static const cmr_series_label cine_lax_label[3] = {CMR_SERIES_CINE_4CH, CMR_SERIES_CINE_2CH, CMR_SERIES_CINE_3CH};

int cmr_tensor_dicom_reader(void *user, const char *path, int *rows, int *cols, int *frames, float **pixels)
{
    (void)user;
    cmr_dicom_header *h = NULL;
    int rc = cmr_dicom_read_pixels(path, &h, pixels);
    if (rc)
        return rc;
    *rows = h->rows;
    *cols = h->columns;
    *frames = h->frames;
    cmr_dicom_header_free(h);
    return 0;
}

void cmr_tensor_trace_free(cmr_tensor_trace *t)
{
    if (!t)
        return;
    free(t->slot);
    free((void *)t->image);
    free(t->source_index);
    t->slot = NULL;
    t->image = NULL;
    t->source_index = NULL;
}

/* Everything one build holds between its steps. */
typedef struct build {
    const char *uid;
    view_stack vs[CMR_SLOT_COUNT];
    int lax_choice;          /* index in cine_lax_label, -1 none */
    size_t n_sax, L;         /* LGE SAX slices (or the stand-in), source frames */
    size_t lax_repeat;       /* times each LGE LAX view stands in the source */
    src_entry *seq;          /* the source video */
    size_t *idx, n_out;      /* the sampled source frames */
    used_image *used;        /* distinct images shown */
    size_t n_used;
    decoded_file *files;
    size_t n_files;
    size_t n_img[CMR_SLOT_COUNT], failed[CMR_SLOT_COUNT];
    const char *first_err[CMR_SLOT_COUNT];
    cmr_src_group groups[CMR_SLOT_COUNT];
    cmr_src_image *gimg;
    cmr_src_frame *frames;   /* the source video for layer 1 */
} build;

static void build_free(build *b)
{
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++)
        free(b->vs[slot].slices);
    for (size_t f = 0; f < b->n_files; f++)
        free(b->files[f].px);
    free(b->files);
    free(b->used);
    free(b->seq);
    free(b->idx);
    free(b->gimg);
    free(b->frames);
}

static int choose_views(build *b, const cmr_study *study)
{
    int rc;
    b->lax_choice = -1;
    for (int k = 0; k < 3 && b->lax_choice < 0; k++) {
        const cmr_series *s = pick(study, cine_lax_label[k]);
        if (s) {
            b->lax_choice = k;
            if ((rc = series_slices(s, &b->vs[CMR_SLOT_CINE_LAX])))
                return rc;
        }
    }
    if ((rc = stack_build(study, CMR_SERIES_CINE_SAX, &b->vs[CMR_SLOT_CINE_SAX])) ||
        (rc = stack_build(study, CMR_SERIES_LGE_SAX, &b->vs[CMR_SLOT_LGE_SAX])))
        return rc;
    for (int k = 0; k < 3; k++) {
        const cmr_series *s = pick(study, lge_lax_label[k]);
        if (s && (rc = series_slices(s, &b->vs[CMR_SLOT_LGE_4CH + k])))
            return rc;
    }
    if (!b->vs[CMR_SLOT_CINE_LAX].series && !b->vs[CMR_SLOT_CINE_SAX].series) {
        size_t unplaced = 0;
        for (size_t i = 0; i < study->n_series; i++)
            unplaced += study->series[i].label == CMR_SERIES_CINE_UNPLACED;
        return cmr_fail(CMR_EFORMAT,
                        "study %s: no cine series (short-axis, 4-, 2- or 3-chamber) to build the model input from%s",
                        b->uid, unplaced ? " (only cines of unknown plane)" : "");
    }
    return 0;
}

/* cine LAX (C), cine SAX (C), LGE SAX (n), LGE 4ch, 2ch, 3ch (n each for
 * CMR-CLIP, once for CINE_LGE); then the recipe's sampling. */
static int build_video(build *b, const cmr_input_spec *spec)
{
    const unsigned C = spec->cine_frames;
    const view_stack *vs = b->vs;
    b->n_sax = vs[CMR_SLOT_LGE_SAX].series ? vs[CMR_SLOT_LGE_SAX].n_slices : DEFAULT_LGE_SLICES;
    b->lax_repeat = spec->recipe == CMR_RECIPE_CMRCLIP ? b->n_sax : 1;
    b->L = 2 * (size_t)C + b->n_sax + 3 * b->lax_repeat;
    b->seq = calloc(b->L, sizeof *b->seq);
    b->idx = malloc(spec->frames * sizeof *b->idx);
    if (!b->seq || !b->idx)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t pos = 0;
    for (int slot = CMR_SLOT_CINE_LAX; slot <= CMR_SLOT_CINE_SAX; slot++) {
        const view_stack *v = &vs[slot];
        const slice_run *mid = v->series ? &v->slices[v->n_slices / 2] : NULL;
        for (unsigned i = 0; i < C; i++, pos++)
            b->seq[pos] = (src_entry){slot, mid ? &mid->im[cmr_cine_phase(i, (unsigned)mid->n, C)] : NULL};
    }
    for (size_t k = 0; k < b->n_sax; k++, pos++)
        b->seq[pos] = (src_entry){CMR_SLOT_LGE_SAX,
                                  vs[CMR_SLOT_LGE_SAX].series ? first_acquired(&vs[CMR_SLOT_LGE_SAX].slices[k]) : NULL};
    for (int slot = CMR_SLOT_LGE_4CH; slot <= CMR_SLOT_LGE_3CH; slot++) {
        const view_stack *v = &vs[slot];
        const cmr_image *im = v->series ? first_acquired(&v->slices[v->n_slices / 2]) : NULL;
        for (size_t k = 0; k < b->lax_repeat; k++, pos++)
            b->seq[pos] = (src_entry){slot, im};
    }
    if (spec->recipe == CMR_RECIPE_CMRCLIP) {
        b->n_out = cmr_sample_segments(b->L, spec->frames, b->idx);
        return 0;
    }
    const size_t cine = 2 * (size_t)C;
    size_t n_cine = cmr_sample_part(cine, spec->frames - spec->lge_frames, b->idx);
    size_t n_lge = cmr_sample_part(b->L - cine, spec->lge_frames, b->idx + n_cine);
    for (size_t j = n_cine; j < n_cine + n_lge; j++)
        b->idx[j] += cine;
    b->n_out = n_cine + n_lge;
    return 0;
}

/* Reads each file holding a shown image once.  A file that cannot be read
 * only blackens its frames (recorded per slot); running out of memory ends
 * the build. */
static int decode_shown(build *b, cmr_pixel_reader read, void *user)
{
    size_t n = b->n_out ? b->n_out : 1;
    b->used = calloc(n, sizeof *b->used);
    b->files = calloc(n, sizeof *b->files);
    if (!b->used || !b->files)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t j = 0; j < b->n_out; j++) {
        const src_entry *e = &b->seq[b->idx[j]];
        if (!e->im)
            continue;
        size_t u = 0;
        while (u < b->n_used && b->used[u].im != e->im)
            u++;
        if (u == b->n_used)
            b->used[b->n_used++] = (used_image){e->im, e->slot, -1, NULL, 0, 0};
    }
    for (size_t u = 0; u < b->n_used; u++) {
        const cmr_image *im = b->used[u].im;
        size_t f = 0;
        while (f < b->n_files && strcmp(b->files[f].path, im->path))
            f++;
        if (f == b->n_files) {
            decoded_file *df = &b->files[b->n_files++];
            df->path = im->path;
            cmr_clear_error();
            df->rc = read(user, im->path, &df->rows, &df->cols, &df->frames, &df->px);
            if (df->rc == CMR_ENOMEM)
                return cmr_fail(CMR_ENOMEM, "study %s: out of memory decoding %s", b->uid, im->path);
            if (!df->rc && (df->rows < 1 || df->cols < 1 || df->frames < 1 || df->rows > CMR_MAX_IMAGE_SIDE ||
                            df->cols > CMR_MAX_IMAGE_SIDE || !df->px))
                df->rc = cmr_fail(CMR_EFORMAT, "%s: %d frame(s) of %dx%d", im->path, df->frames, df->rows, df->cols);
            if (df->rc) {
                snprintf(df->err, sizeof df->err, "%s", cmr_errmsg()[0] ? cmr_errmsg() : cmr_strerror(df->rc));
            } else {
                /* Float pixel data may hold NaN or infinities: 0 and the largest finite values instead. */
                size_t nv = (size_t)df->rows * (size_t)df->cols * (size_t)df->frames;
                if (any_nonfinite(df->px, nv))
                    for (size_t i = 0; i < nv; i++)
                        if (!isfinite(df->px[i]))
                            df->px[i] = isnan(df->px[i]) ? 0.0f : (df->px[i] > 0 ? 3.40282347e38f : -3.40282347e38f);
            }
        }
        const decoded_file *df = &b->files[f];
        int slot = b->used[u].slot;
        if (df->rc || im->frame < 0 || im->frame >= df->frames) {
            if (!b->failed[slot]++)
                b->first_err[slot] = df->rc ? df->err : "frame not in its file";
            continue;
        }
        b->used[u].pixels = df->px + (size_t)im->frame * (size_t)df->rows * (size_t)df->cols;
        b->used[u].rows = df->rows;
        b->used[u].cols = df->cols;
    }
    return 0;
}

/* Layer 1's input: one group per slot of its decoded images; frames of
 * images not decoded (or not sampled, never read) are black. */
static int make_source(build *b)
{
    b->gimg = calloc(b->n_used ? b->n_used : 1, sizeof *b->gimg);
    b->frames = calloc(b->L, sizeof *b->frames);
    if (!b->gimg || !b->frames)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    size_t next = 0;
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        b->groups[slot].images = b->gimg + next;
        for (size_t u = 0; u < b->n_used; u++) {
            used_image *ui = &b->used[u];
            if (ui->slot != slot || !ui->pixels)
                continue;
            ui->index = (int)b->n_img[slot]++;
            b->gimg[next++] = (cmr_src_image){ui->pixels, ui->rows, ui->cols};
        }
        b->groups[slot].n_images = b->n_img[slot];
    }
    for (size_t i = 0; i < b->L; i++) {
        b->frames[i] = (cmr_src_frame){CMR_SRC_BLACK, 0};
        for (size_t u = 0; b->seq[i].im && u < b->n_used; u++)
            if (b->used[u].im == b->seq[i].im) {
                if (b->used[u].index >= 0)
                    b->frames[i] = (cmr_src_frame){b->used[u].slot, b->used[u].index};
                break;
            }
    }
    /* No cine image made it (all unreadable): nothing to recognise the study by. */
    if (!b->n_img[CMR_SLOT_CINE_LAX] && !b->n_img[CMR_SLOT_CINE_SAX] &&
        (b->failed[CMR_SLOT_CINE_LAX] || b->failed[CMR_SLOT_CINE_SAX]))
        return cmr_fail(CMR_EFORMAT, "study %s: no cine image could be decoded: %s", b->uid,
                        b->first_err[CMR_SLOT_CINE_SAX] ? b->first_err[CMR_SLOT_CINE_SAX]
                                                        : b->first_err[CMR_SLOT_CINE_LAX]);
    return 0;
}

static void describe(const build *b, const cmr_input_spec *spec, cmr_tensor_info *info)
{
    info->source_frames = (unsigned)b->L;
    char *g = info->gaps;
    const size_t gcap = sizeof info->gaps;
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        const view_stack *v = &b->vs[slot];
        size_t span = slot <= CMR_SLOT_CINE_SAX ? spec->cine_frames
                      : slot == CMR_SLOT_LGE_SAX  ? b->n_sax
                                                  : b->lax_repeat;
        if (!v->series) {
            switch (slot) {
            case CMR_SLOT_CINE_LAX:
                info->views_missing |= CMR_VIEW_CINE_4CH | CMR_VIEW_CINE_2CH | CMR_VIEW_CINE_3CH;
                gap(g, gcap, "no cine LAX (4-, 2- or 3-chamber): %zu black frames", span);
                break;
            case CMR_SLOT_CINE_SAX:
                info->views_missing |= CMR_VIEW_CINE_SAX;
                gap(g, gcap, "no cine SAX: %zu black frames", span);
                break;
            case CMR_SLOT_LGE_SAX:
                info->views_missing |= CMR_VIEW_LGE_SAX;
                if (spec->recipe == CMR_RECIPE_CMRCLIP)
                    gap(g, gcap, "no LGE SAX: %d black frames, n_SAX taken as %d", DEFAULT_LGE_SLICES,
                        DEFAULT_LGE_SLICES);
                else
                    gap(g, gcap, "no LGE SAX: %d black frames", DEFAULT_LGE_SLICES);
                break;
            default:
                info->views_missing |= cmr_series_label_view(lge_lax_label[slot - CMR_SLOT_LGE_4CH]);
                gap(g, gcap, "no %s: %zu black frame%s", slot_name[slot], span, span == 1 ? "" : "s");
                break;
            }
            continue;
        }
        uint32_t bit = cmr_series_label_view(v->series->label);
        if (b->n_img[slot])
            info->views_used |= bit;
        else if (b->failed[slot])
            info->views_missing |= bit;
        if (slot == CMR_SLOT_CINE_LAX && b->lax_choice > 0)
            gap(g, gcap, "cine LAX from the %s view (no 4-chamber)", b->lax_choice == 1 ? "2-chamber" : "3-chamber");
        if (b->failed[slot])
            gap(g, gcap, "%s (series %d): %zu image(s) unreadable, black instead: %s", slot_name[slot],
                v->series->number, b->failed[slot], b->first_err[slot]);
    }
}

static int fill_trace(const build *b, const cmr_input_spec *spec, float (*windows)[2], cmr_tensor_trace *trace)
{
    for (int slot = 0; slot < CMR_SLOT_COUNT; slot++) {
        const view_stack *v = &b->vs[slot];
        trace->series[slot] = !v->series                   ? NULL
                              : slot <= CMR_SLOT_CINE_SAX ? v->slices[v->n_slices / 2].series
                                                          : v->series;
        trace->n_slices[slot] = (int)v->n_slices;
        trace->window[slot][0] = windows[slot][0];
        trace->window[slot][1] = windows[slot][1];
    }
    trace->n_source = b->L;
    trace->n_out = spec->frames;
    trace->slot = malloc(spec->frames * sizeof *trace->slot);
    trace->image = malloc(spec->frames * sizeof *trace->image);
    trace->source_index = malloc(spec->frames * sizeof *trace->source_index);
    if (!trace->slot || !trace->image || !trace->source_index) {
        cmr_tensor_trace_free(trace);
        return cmr_fail(CMR_ENOMEM, "out of memory");
    }
    for (unsigned j = 0; j < spec->frames; j++) {
        int sampled = j < b->n_out;
        trace->slot[j] = sampled ? b->seq[b->idx[j]].slot : -1;
        trace->image[j] = sampled && b->frames[b->idx[j]].group != CMR_SRC_BLACK ? b->seq[b->idx[j]].im : NULL;
        trace->source_index[j] = sampled ? b->idx[j] : (size_t)-1;
    }
    return 0;
}

/* into: the caller's buffer, or NULL to allocate one and return it in *tensor. */
static int study_tensor(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                        float *into, float **tensor, cmr_tensor_info *info, cmr_tensor_trace *trace)
{
    cmr_tensor_info local;
    if (!info)
        info = &local;
    memset(info, 0, sizeof *info);
    if (trace)
        memset(trace, 0, sizeof *trace);
    if (!tensor && !into)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor: no output");
    if (tensor)
        *tensor = NULL;
    if (!study || !read)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor: no study or no pixel reader");
    int rc = cmr_spec_check(spec);
    if (rc)
        return rc;

    build b;
    memset(&b, 0, sizeof b);
    b.uid = study->uid[0] ? study->uid : "(no Study Instance UID)";
    float *out = NULL;
    float windows[CMR_SLOT_COUNT][2];
    if ((rc = choose_views(&b, study)) || (rc = build_video(&b, spec)) || (rc = decode_shown(&b, read, user)) ||
        (rc = make_source(&b)))
        goto done;
    out = into ? into : alloc_tensor(cmr_tensor_values(spec));
    if (!out) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for a %u x %u x %u x %u tensor", spec->frames, spec->channels,
                      spec->size, spec->size);
        goto done;
    }
    cmr_tensor_source src = {CMR_SLOT_COUNT, b.groups, b.L, b.frames, b.idx, b.n_out};
    if ((rc = cmr_tensor_from_source(&src, spec, out, windows))) {
        cmr_fail_context(rc, "study %s: ", b.uid);
        goto done;
    }
    describe(&b, spec, info);
    if (trace && (rc = fill_trace(&b, spec, windows, trace)))
        goto done;
    if (!into)
        *tensor = out;
    out = NULL;
done:
    if (out != into)
        free(out);
    build_free(&b);
    return rc;
}

int cmr_study_tensor_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                          float **tensor, cmr_tensor_info *info, cmr_tensor_trace *trace)
{
    return study_tensor(study, spec, read, user, NULL, tensor, info, trace);
}

int cmr_study_tensor_into_with(const cmr_study *study, const cmr_input_spec *spec, cmr_pixel_reader read, void *user,
                               float *out, cmr_tensor_info *info)
{
    if (!out)
        return cmr_fail(CMR_EINVAL, "cmr_study_tensor_into: no output buffer");
    return study_tensor(study, spec, read, user, out, NULL, info, NULL);
}

int cmr_study_tensor(const cmr_study *study, const cmr_input_spec *spec, float **tensor, cmr_tensor_info *info)
{
    return study_tensor(study, spec, cmr_tensor_dicom_reader, NULL, NULL, tensor, info, NULL);
}

int cmr_study_tensor_into(const cmr_study *study, const cmr_input_spec *spec, float *out, cmr_tensor_info *info)
{
    return cmr_study_tensor_into_with(study, spec, cmr_tensor_dicom_reader, NULL, out, info);
}
