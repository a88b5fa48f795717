/* cmrsearch serve: thumbnails and cine loops, rendered from the stored
 * study's source files (the record's first source: the study folder) and
 * kept in a small in-memory cache keyed by (case, generation, view, kind).
 *
 * The path read comes from the record, never from the request; the request
 * only picks a case id and a view name from a fixed list. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cmr_dicom.h"
#include "cmr_indexer.h"
#include "server_internal.h"

#define THUMB_SIDE 256
#define CINE_SIDE 128
#define CINE_MAX_FRAMES 40
#define CACHE_BYTES_MAX ((size_t)64 << 20)

static const char *const image_params[] = {"view", NULL};

/* ---- cache ------------------------------------------------------------------- */

static int cache_get(cmr_server *s, uint64_t id, uint64_t gen, uint32_t view, int cine, srv_response *r)
{
    int found = 0;
    pthread_mutex_lock(&s->image_lock);
    for (unsigned i = 0; i < SRV_IMAGE_SLOTS && !found; i++) {
        srv_cached_image *im = &s->images[i];
        if (im->png && im->id == id && im->generation == gen && im->view == view && im->cine == cine) {
            uint8_t *copy = malloc(im->len);
            if (copy) {
                memcpy(copy, im->png, im->len);
                r->body = copy;
                r->len = im->len;
                im->used = ++s->image_clock;
                found = 1;
            }
        }
    }
    pthread_mutex_unlock(&s->image_lock);
    return found;
}

static void cache_put(cmr_server *s, uint64_t id, uint64_t gen, uint32_t view, int cine, const uint8_t *png,
                      size_t len)
{
    uint8_t *copy = malloc(len);
    if (!copy)
        return;
    memcpy(copy, png, len);
    pthread_mutex_lock(&s->image_lock);
    size_t total = 0;
    srv_cached_image *victim = NULL;
    for (unsigned i = 0; i < SRV_IMAGE_SLOTS; i++) {
        srv_cached_image *im = &s->images[i];
        total += im->png ? im->len : 0;
        if (!victim || !im->png || (victim->png && im->used < victim->used))
            victim = im;
    }
    /* Over budget: drop least recently used entries first. */
    while (total + len > CACHE_BYTES_MAX) {
        srv_cached_image *lru = NULL;
        for (unsigned i = 0; i < SRV_IMAGE_SLOTS; i++)
            if (s->images[i].png && (!lru || s->images[i].used < lru->used))
                lru = &s->images[i];
        if (!lru)
            break;
        total -= lru->len;
        free(lru->png);
        lru->png = NULL;
        victim = lru;
    }
    free(victim->png);
    *victim = (srv_cached_image){id, gen, view, cine, copy, len, ++s->image_clock};
    pthread_mutex_unlock(&s->image_lock);
}

/* ---- rendering ---------------------------------------------------------------- */

static cmr_series_label label_of_view(uint32_t view)
{
    for (int l = 1; l < CMR_SERIES_LABEL_COUNT_; l++)
        if (cmr_series_label_view((cmr_series_label)l) == view)
            return (cmr_series_label)l;
    return CMR_SERIES_OTHER;
}

static const cmr_series *pick_series(const cmr_study *st, cmr_series_label label)
{
    const cmr_series *best = NULL;
    for (size_t i = 0; i < st->n_series; i++) {
        const cmr_series *x = &st->series[i];
        if (x->label != label || !x->n_images)
            continue;
        if (!best || x->n_slices > best->n_slices ||
            (x->n_slices == best->n_slices && x->n_images > best->n_images))
            best = x;
    }
    return best;
}

/* Window to 8 bits at the 1st and 99.5th percentiles of all frames'
 * values (the indexer's choice), from a 4096-bin histogram. */
static void window_frames(float *const *frames, size_t n_frames, size_t n_pix, uint8_t *const *out)
{
    float lo = INFINITY, hi = -INFINITY;
    for (size_t f = 0; f < n_frames; f++)
        for (size_t i = 0; i < n_pix; i++)
            if (isfinite(frames[f][i])) {
                lo = fminf(lo, frames[f][i]);
                hi = fmaxf(hi, frames[f][i]);
            }
    float wlo = lo, whi = hi;
    if (hi > lo) {
        enum { BINS = 4096 };
        static const double pct[2] = {0.01, 0.995};
        size_t *hist = calloc(BINS, sizeof *hist), total = 0;
        if (hist) {
            double scale = (BINS - 1) / ((double)hi - lo);
            for (size_t f = 0; f < n_frames; f++)
                for (size_t i = 0; i < n_pix; i++)
                    if (isfinite(frames[f][i])) {
                        hist[(size_t)(((double)frames[f][i] - lo) * scale)]++;
                        total++;
                    }
            float *bounds[2] = {&wlo, &whi};
            for (int k = 0; k < 2; k++) {
                size_t want = (size_t)(pct[k] * (double)total), seen = 0, b = 0;
                while (b < BINS - 1 && seen + hist[b] <= want)
                    seen += hist[b++];
                *bounds[k] = (float)(lo + b / scale);
            }
            free(hist);
        }
        if (whi <= wlo)
            whi = hi, wlo = lo;
    }
    for (size_t f = 0; f < n_frames; f++)
        for (size_t i = 0; i < n_pix; i++) {
            float v = frames[f][i];
            double x = whi > wlo && isfinite(v) ? ((double)v - wlo) / ((double)whi - wlo) : 0;
            out[f][i] = (uint8_t)(x <= 0 ? 0 : x >= 1 ? 255 : lround(x * 255));
        }
}

/* Area-average downscale so that the longer side is at most side (never up). */
static void shrink(const uint8_t *src, int rows, int cols, int side, uint8_t *dst, int *orows, int *ocols)
{
    int big = rows > cols ? rows : cols;
    double f = big > side ? (double)side / big : 1.0;
    int h = (int)lround(rows * f), w = (int)lround(cols * f);
    h = h < 1 ? 1 : h;
    w = w < 1 ? 1 : w;
    for (int y = 0; y < h; y++) {
        int y0 = (int)((double)y * rows / h), y1 = (int)((double)(y + 1) * rows / h);
        y1 = y1 <= y0 ? y0 + 1 : y1;
        for (int x = 0; x < w; x++) {
            int x0 = (int)((double)x * cols / w), x1 = (int)((double)(x + 1) * cols / w);
            x1 = x1 <= x0 ? x0 + 1 : x1;
            unsigned sum = 0, n = 0;
            for (int yy = y0; yy < y1 && yy < rows; yy++)
                for (int xx = x0; xx < x1 && xx < cols; xx++, n++)
                    sum += src[(size_t)yy * cols + xx];
            dst[(size_t)y * w + x] = (uint8_t)(n ? (sum + n / 2) / n : 0);
        }
    }
    *orows = h;
    *ocols = w;
}

/* Render a view of a study's mid slice: frame 0 only, or the cycle. */
static int render(const cmr_case *c, uint32_t view, int cine, uint8_t **png, size_t *png_len, int *gone)
{
    *gone = 0;
    const char *folder = c->n_sources ? c->sources[0] : NULL;
    if (!folder || access(folder, R_OK | X_OK) != 0) {
        *gone = 1;
        return cmr_fail(CMR_ENOTFOUND, "case %llu: the study's source files are no longer readable",
                        (unsigned long long)c->id);
    }
    cmr_archive *a = NULL;
    const char *roots[1] = {folder};
    cmr_scan_options so = {.threads = 1};
    float **frames = NULL;
    uint8_t **grey = NULL, *pix = NULL;
    size_t n = 0, n_pix = 0;
    int rows = 0, cols = 0, rc = cmr_archive_scan(roots, 1, &so, &a);
    if (rc)
        return rc;
    const cmr_study *st = NULL;
    for (size_t i = 0; i < a->n_studies && !st; i++)
        if (!strcmp(a->studies[i].uid, c->study_uid))
            st = &a->studies[i];
    const cmr_series *se = st ? pick_series(st, label_of_view(view)) : NULL;
    if (!se) {
        *gone = 1;
        rc = cmr_fail(CMR_ENOTFOUND, "case %llu: the %s series is no longer among the study's source files",
                      (unsigned long long)c->id, cmr_view_name(view));
        goto done;
    }
    /* The middle slice location; its images are in phase order. */
    int mid = se->n_slices > 0 ? se->n_slices / 2 : 0;
    const cmr_image *first = NULL;
    size_t n_in_slice = 0;
    for (size_t i = 0; i < se->n_images; i++)
        if (se->images[i].slice == mid) {
            first = first ? first : &se->images[i];
            n_in_slice++;
        }
    if (!first) {
        first = &se->images[0];
        n_in_slice = 1;
    }
    size_t want = cine ? (n_in_slice < CINE_MAX_FRAMES ? n_in_slice : CINE_MAX_FRAMES) : 1;
    if (!(frames = calloc(want, sizeof *frames)) || !(grey = calloc(want, sizeof *grey))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    double t_first = -1, t_last = -1;
    for (size_t k = 0; k < want; k++) {
        /* Evenly spaced over the cycle when it has more phases than we show. */
        const cmr_image *im = first + (size_t)((double)k * n_in_slice / want);
        cmr_dicom_header *h = NULL;
        float *all = NULL;
        if ((rc = cmr_dicom_read_pixels(im->path, &h, &all)))
            goto done;
        if (k == 0) {
            rows = h->rows;
            cols = h->columns;
            n_pix = (size_t)rows * cols;
        }
        if (h->rows != rows || h->columns != cols || im->frame >= h->frames || im->frame < 0) {
            rc = cmr_fail(CMR_EFORMAT, "case %llu: the %s images change size within a slice",
                          (unsigned long long)c->id, cmr_view_name(view));
            cmr_dicom_header_free(h);
            free(all);
            goto done;
        }
        if ((frames[k] = malloc(n_pix * sizeof **frames)))
            memcpy(frames[k], all + (size_t)im->frame * n_pix, n_pix * sizeof **frames);
        cmr_dicom_header_free(h);
        free(all);
        if (!frames[k] || !(grey[k] = malloc(n_pix))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            goto done;
        }
        n = k + 1;
        if (im->trigger_time >= 0) {
            t_first = k == 0 ? im->trigger_time : t_first;
            t_last = im->trigger_time;
        }
    }
    window_frames(frames, n, n_pix, grey);
    int side = cine ? CINE_SIDE : THUMB_SIDE, orows = 0, ocols = 0;
    if (!(pix = malloc(n * (size_t)side * side))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    for (size_t k = 0; k < n; k++)
        shrink(grey[k], rows, cols, side, pix + k * (size_t)side * side, &orows, &ocols);
    /* Frames were written side*side apart; pack them. */
    for (size_t k = 1; k < n; k++)
        memmove(pix + k * (size_t)orows * ocols, pix + k * (size_t)side * side, (size_t)orows * ocols);
    unsigned delay = 40;
    if (n > 1 && t_first >= 0 && t_last > t_first)
        delay = (unsigned)fmin(200, fmax(20, (t_last - t_first) / (double)(n - 1)));
    rc = cmr_png_grey(pix, (unsigned)ocols, (unsigned)orows, (unsigned)n, delay, png, png_len);
done:
    for (size_t k = 0; frames && grey && k < want; k++) {
        free(frames[k]);
        free(grey[k]);
    }
    free(frames);
    free(grey);
    free(pix);
    cmr_archive_free(a);
    return rc;
}

void srv_image(cmr_server *s, srv_request *q, srv_response *r, uint64_t id, int cine)
{
    if (srv_check_params(q, r, image_params))
        return;
    uint32_t view = 0;
    const char *vname = srv_param(q, "view");
    if (vname && (cmr_view_parse(vname, &view) != 0 || !cmr_view_name(view))) {
        srv_error(r, 400, "view: expected one of cine_sax, cine_2ch, cine_3ch, cine_4ch, lge_sax, lge_2ch, "
                          "lge_3ch, lge_4ch");
        return;
    }
    cmr_case *c = NULL;
    if (srv_load_case(s, r, id, &c))
        return;
    if (!view) {
        view = (c->views & CMR_VIEW_CINE_SAX) ? CMR_VIEW_CINE_SAX : c->views & (~c->views + 1);
        if (!view) {
            srv_error(r, 404, "case %llu has no views to show", (unsigned long long)id);
            goto done;
        }
    } else if (!(c->views & view)) {
        srv_error(r, 404, "case %llu has no %s view", (unsigned long long)id, cmr_view_name(view));
        goto done;
    }
    r->type = "image/png";
    r->status = 200;
    r->cache_seconds = 300;
    if (cache_get(s, id, c->generation, view, cine, r))
        goto done;
    uint8_t *png = NULL;
    size_t len = 0;
    int gone = 0;
    cmr_clear_error();
    int rc = render(c, view, cine, &png, &len, &gone);
    if (rc) {
        r->cache_seconds = 0;
        if (gone)
            srv_error(r, 404, "%s", cmr_errmsg());
        else {
            /* The detail can name archive paths: the operator's log gets it, the client not. */
            fprintf(stderr, "cmrsearch: serve: case %llu, %s: %s\n", (unsigned long long)id, cmr_view_name(view),
                    cmr_errmsg());
            srv_error(r, 500, "case %llu: the %s images cannot be read (the server log says why)",
                      (unsigned long long)id, cmr_view_name(view));
        }
        goto done;
    }
    cache_put(s, id, c->generation, view, cine, png, len);
    r->body = png;
    r->len = len;
done:
    cmr_case_free(c);
}
