/* Archive scanning: walk folders, probe and read DICOM headers in parallel,
 * group into studies and series, and order each series' images along the
 * slice normal and by trigger time.
 *
 * Memory stays bounded by the headers (a few KB per file): a file's bytes
 * are held only while its header is parsed, and pixel data is never decoded
 * here.  Files that are not DICOM are told by their first 132 bytes (the
 * probe of cmr_dicom_scan_header); those that look like reports are listed. */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmr_dicom.h"
#include "cmr_indexer.h"
#include "cmr_sha256.h"
#include "indexer_internal.h"

/* ---- growable arrays and the string pool ---------------------------------------- */

int cmr_grow(void **items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 16;
    while (c < need)
        c *= 2;
    void *p = realloc(*items, c * size);
    if (!p)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    *items = p;
    *cap = c;
    return 0;
}

const char *cmr_pool_strdup(cmr_pool *pool, const char *s)
{
    size_t n = strlen(s) + 1;
    if (pool->used + n > pool->cap) {
        size_t cap = n > 65536 ? n : 65536;
        cmr_pool_block *b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = pool->blocks;
        pool->blocks = b;
        pool->cap = cap;
        pool->used = 0;
    }
    char *d = pool->blocks->data + pool->used;
    memcpy(d, s, n);
    pool->used += n;
    return d;
}

void cmr_pool_free(cmr_pool *pool)
{
    for (cmr_pool_block *b = pool->blocks, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    memset(pool, 0, sizeof *pool);
}

/* ---- walking ------------------------------------------------------------------- */

typedef struct file_entry {
    const char *path;
    int64_t size, mtime;
    cmr_dicom_header *header; /* NULL if not DICOM or unreadable */
    int kind;                 /* FILE_* */
} file_entry;

enum { FILE_UNKNOWN = 0, FILE_DICOM, FILE_REPORT, FILE_OTHER, FILE_BAD };

typedef struct scan_state {
    cmr_archive_impl *a;
    file_entry *files;
    size_t n_files, cap_files;
    atomic_size_t next, done;
    pthread_mutex_t issues_lock;
    const cmr_scan_options *opts;
} scan_state;

static int add_file(scan_state *st, const char *path, const struct stat *sb)
{
    int rc = cmr_grow((void **)&st->files, &st->cap_files, st->n_files + 1, sizeof *st->files);
    if (rc)
        return rc;
    const char *p = cmr_pool_strdup(&st->a->pool, path);
    if (!p)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    st->files[st->n_files++] = (file_entry){p, (int64_t)sb->st_size, (int64_t)sb->st_mtime, NULL, FILE_UNKNOWN};
    return 0;
}

int cmr_archive_add_issue(cmr_archive_impl *a, const char *path, const char *study_uid, int code,
                          const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    int rc = cmr_grow((void **)&a->issues, &a->issues_cap, a->pub.n_issues + 1, sizeof *a->issues);
    if (rc)
        return rc;
    cmr_issue *is = &a->issues[a->pub.n_issues++];
    is->path = path ? cmr_pool_strdup(&a->pool, path) : NULL;
    is->study_uid = study_uid ? cmr_pool_strdup(&a->pool, study_uid) : NULL;
    is->code = code;
    is->message = cmr_pool_strdup(&a->pool, msg);
    a->pub.issues = a->issues;
    return 0;
}

static int walk(scan_state *st, const char *dir, int depth)
{
    if (depth > 64)
        return cmr_archive_add_issue(st->a, dir, NULL, CMR_EFORMAT, "folders nested deeper than 64 levels; not followed");
    DIR *d = opendir(dir);
    if (!d)
        return cmr_archive_add_issue(st->a, dir, NULL, CMR_EIO, "cannot open folder: %s", strerror(errno));
    struct dirent *e;
    int rc = 0;
    /* Sorted walk so that results (and issue order) do not depend on the
     * file system's directory order. */
    char **names = NULL;
    size_t n = 0, cap = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue; /* ".", "..", and hidden files such as .DS_Store */
        if ((rc = cmr_grow((void **)&names, &cap, n + 1, sizeof *names)))
            break;
        if (!(names[n++] = strdup(e->d_name))) {
            rc = cmr_fail(CMR_ENOMEM, "out of memory");
            break;
        }
    }
    closedir(d);
    if (n > 1)
        qsort(names, n, sizeof *names, cmr_cmp_str);
    for (size_t i = 0; i < n && rc == 0; i++) {
        char path[4096];
        if (snprintf(path, sizeof path, "%s/%s", dir, names[i]) >= (int)sizeof path) {
            rc = cmr_archive_add_issue(st->a, dir, NULL, CMR_EINVAL, "path of '%s' is too long", names[i]);
            continue;
        }
        struct stat sb;
        if (stat(path, &sb) != 0)
            rc = cmr_archive_add_issue(st->a, path, NULL, CMR_EIO, "%s", strerror(errno));
        else if (S_ISDIR(sb.st_mode))
            rc = walk(st, path, depth + 1);
        else if (S_ISREG(sb.st_mode))
            rc = add_file(st, path, &sb);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

/* ---- reading headers in parallel ------------------------------------------------- */

static int looks_like_report(const char *path)
{
    const char *dot = strrchr(path, '.');
    if (dot && (!strcasecmp(dot, ".xml") || !strcasecmp(dot, ".txt") || !strcasecmp(dot, ".rpt")))
        return 1;
    return 0;
}

static void *reader_thread(void *arg)
{
    scan_state *st = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&st->next, 1);
        if (i >= st->n_files)
            break;
        file_entry *f = &st->files[i];
        const char *base = strrchr(f->path, '/');
        base = base ? base + 1 : f->path;
        if (!strcmp(base, "DICOMDIR")) {
            f->kind = FILE_OTHER; /* the walk finds every file a DICOMDIR lists */
        } else {
            int is_dicom = 0;
            int rc = cmr_dicom_scan_header(f->path, &f->header, &is_dicom);
            if (!is_dicom) {
                /* An unreadable file is left to the report reader, which names it. */
                f->kind = looks_like_report(f->path) ? FILE_REPORT : FILE_OTHER;
            } else if (rc == 0) {
                f->kind = FILE_DICOM;
            } else {
                f->kind = FILE_BAD;
                pthread_mutex_lock(&st->issues_lock);
                cmr_archive_add_issue(st->a, f->path, NULL, CMR_EFORMAT, "%s", cmr_errmsg());
                pthread_mutex_unlock(&st->issues_lock);
            }
        }
        size_t done = atomic_fetch_add(&st->done, 1) + 1;
        if (st->opts && st->opts->progress && (done % 64 == 0 || done == st->n_files))
            st->opts->progress(st->opts->progress_user, done, st->n_files);
    }
    return NULL;
}

/* ---- grouping --------------------------------------------------------------------- */

int cmr_cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int cmp_file_group(const void *x, const void *y)
{
    const file_entry *a = x, *b = y;
    int c = strcmp(a->header->study_uid, b->header->study_uid);
    if (!c)
        c = strcmp(a->header->series_uid, b->header->series_uid);
    if (!c)
        c = (a->header->instance_number > b->header->instance_number) -
            (a->header->instance_number < b->header->instance_number);
    if (!c)
        c = strcmp(a->path, b->path);
    return c;
}

int32_t cmr_parse_dicom_date(const char *raw)
{
    int y, m, d;
    char sep1, sep2;
    size_t n = strlen(raw);
    if (n == 8 && sscanf(raw, "%4d%2d%2d", &y, &m, &d) == 3) {
        for (size_t i = 0; i < 8; i++)
            if (!isdigit((unsigned char)raw[i]))
                return 0;
    } else if (n == 10 && sscanf(raw, "%4d%c%2d%c%2d", &y, &sep1, &m, &sep2, &d) == 5 &&
               (sep1 == '.' || sep1 == '-') && sep2 == sep1) {
        /* "1995.06.26": ACR-NEMA style, still written by old archives */
    } else {
        return 0;
    }
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    if (y < 1900 || y > 2200 || m < 1 || m > 12 || d < 1 || d > mdays[m - 1])
        return 0;
    if (m == 2 && d == 29 && !((y % 4 == 0 && y % 100 != 0) || y % 400 == 0))
        return 0;
    return y * 10000 + m * 100 + d;
}

static int age_from(const cmr_dicom_header *h, int32_t study_date)
{
    int v;
    char unit;
    if (sscanf(h->patient_age, "%3d%c", &v, &unit) == 2 && v >= 0) {
        if (unit == 'Y')
            return v <= 130 ? v : -1;
        if (unit == 'M' || unit == 'W' || unit == 'D')
            return 0;
    }
    int32_t birth = cmr_parse_dicom_date(h->patient_birth_date);
    if (birth && study_date && study_date >= birth) {
        int age = study_date / 10000 - birth / 10000;
        if (study_date % 10000 < birth % 10000)
            age--;
        return age <= 130 ? age : -1;
    }
    return -1;
}

static double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

static int cmp_image(const void *x, const void *y)
{
    const cmr_image *a = x, *b = y;
    if (a->slice != b->slice)
        return a->slice < b->slice ? -1 : 1;
    if (a->trigger_time != b->trigger_time)
        return a->trigger_time < b->trigger_time ? -1 : 1;
    return (a->seq > b->seq) - (a->seq < b->seq);
}

static int cmp_double(const void *x, const void *y)
{
    double a = *(const double *)x, b = *(const double *)y;
    return (a > b) - (a < b);
}

/* Slice indices from positions along the normal, merging positions closer
 * than a tenth of the slice thickness (rounding in the headers). */
static int order_series(cmr_series *s)
{
    if (!s->n_images)
        return 0;
    const cmr_image *first = &s->images[0];
    s->has_geometry = first->has_geometry;
    for (size_t i = 0; i < s->n_images; i++)
        s->has_geometry &= s->images[i].has_geometry;
    if (s->has_geometry) {
        const double *o = first->orientation;
        double n[3] = {o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]};
        double len = sqrt(dot3(n, n));
        if (len > 1e-6)
            for (int k = 0; k < 3; k++)
                s->normal[k] = n[k] / len;
        else
            s->has_geometry = 0;
    }
    double *coords = malloc(s->n_images * sizeof *coords);
    if (!coords)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < s->n_images; i++) {
        cmr_image *im = &s->images[i];
        /* Without geometry, the stack position (or 0) stands in for location. */
        im->slice_coord = s->has_geometry ? dot3(im->position, s->normal) : (double)im->slice;
        coords[i] = im->slice_coord;
    }
    qsort(coords, s->n_images, sizeof *coords, cmp_double);
    double tol = s->slice_thickness > 0 ? s->slice_thickness / 10 : 0.5;
    size_t n_unique = 0;
    for (size_t i = 0; i < s->n_images; i++)
        if (n_unique == 0 || coords[i] - coords[n_unique - 1] > tol)
            coords[n_unique++] = coords[i];
    for (size_t i = 0; i < s->n_images; i++) {
        cmr_image *im = &s->images[i];
        size_t lo = 0;
        while (lo + 1 < n_unique && fabs(coords[lo + 1] - im->slice_coord) < fabs(coords[lo] - im->slice_coord))
            lo++;
        im->slice = (int)lo;
    }
    free(coords);
    qsort(s->images, s->n_images, sizeof *s->images, cmp_image);
    s->n_slices = (int)n_unique;
    s->n_phases = 0;
    for (size_t i = 0, run = 0; i < s->n_images; i++) {
        run = (i && s->images[i].slice == s->images[i - 1].slice) ? run + 1 : 0;
        s->images[i].phase = (int)run;
        if ((int)run + 1 > s->n_phases)
            s->n_phases = (int)run + 1;
    }
    return 0;
}

static void copy_field(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static int build_series(cmr_archive_impl *a, cmr_series *s, file_entry *files, size_t n)
{
    const cmr_dicom_header *h = files[0].header;
    copy_field(s->uid, sizeof s->uid, h->series_uid);
    s->number = h->series_number;
    copy_field(s->description, sizeof s->description, h->series_description[0] ? h->series_description : h->protocol_name);
    copy_field(s->modality, sizeof s->modality, h->modality);
    copy_field(s->sop_class_uid, sizeof s->sop_class_uid, h->sop_class_uid);
    copy_field(s->transfer_syntax, sizeof s->transfer_syntax, h->transfer_syntax_name);
    copy_field(s->scanning_sequence, sizeof s->scanning_sequence,
               h->scanning_sequence[0] ? h->scanning_sequence : h->pulse_sequence_name);
    copy_field(s->sequence_variant, sizeof s->sequence_variant, h->sequence_variant);
    copy_field(s->image_type, sizeof s->image_type, h->image_type);
    s->rows = h->rows;
    s->columns = h->columns;
    s->pixel_spacing[0] = h->pixel_spacing[0];
    s->pixel_spacing[1] = h->pixel_spacing[1];
    s->slice_thickness = h->slice_thickness;
    s->inversion_time = h->has_inversion_time ? h->inversion_time
                        : (h->frames > 0 && h->frame[0].has_inversion_time) ? h->frame[0].inversion_time : -1;
    s->cardiac_number_of_images = h->cardiac_number_of_images;
    size_t n_images = 0;
    for (size_t i = 0; i < n; i++)
        n_images += files[i].header->has_pixel_data && files[i].header->frames > 0 ? (size_t)files[i].header->frames : 0;
    s->images = calloc(n_images ? n_images : 1, sizeof *s->images);
    if (!s->images)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const cmr_dicom_header *fh = files[i].header;
        if (!fh->has_pixel_data)
            continue;
        if (fh->rows != s->rows || fh->columns != s->columns) {
            cmr_archive_add_issue(a, files[i].path, fh->study_uid, CMR_EFORMAT,
                                  "image is %dx%d, its series %s is %dx%d: left out", fh->rows, fh->columns,
                                  s->uid, s->rows, s->columns);
            continue;
        }
        for (int f = 0; f < fh->frames; f++) {
            const cmr_dicom_frame *fr = &fh->frame[f];
            cmr_image *im = &s->images[s->n_images++];
            im->path = files[i].path;
            im->frame = f;
            memcpy(im->position, fr->position, sizeof im->position);
            memcpy(im->orientation, fr->orientation, sizeof im->orientation);
            im->has_geometry = fr->has_position && fr->has_orientation;
            im->trigger_time = fr->has_trigger_time ? fr->trigger_time : -1;
            im->inversion_time = fr->has_inversion_time ? fr->inversion_time : -1;
            im->slice = fr->stack_position;
            im->seq = (int)s->n_images - 1;
        }
    }
    return order_series(s);
}

static int cmp_entry_path(const void *x, const void *y)
{
    const file_entry *a = *(const file_entry *const *)x, *b = *(const file_entry *const *)y;
    return strcmp(a->path, b->path);
}

/* Files are grouped by series, not by path: hash in path order. */
static int fingerprint(cmr_study *st, file_entry *files, size_t n)
{
    const file_entry **sorted = malloc(n * sizeof *sorted);
    if (!sorted)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++)
        sorted[i] = &files[i];
    qsort(sorted, n, sizeof *sorted, cmp_entry_path);
    cmr_sha256 ctx;
    cmr_sha256_init(&ctx);
    for (size_t i = 0; i < n; i++) {
        cmr_sha256_update(&ctx, sorted[i]->path, strlen(sorted[i]->path) + 1);
        cmr_sha256_update(&ctx, &sorted[i]->size, sizeof sorted[i]->size);
        cmr_sha256_update(&ctx, &sorted[i]->mtime, sizeof sorted[i]->mtime);
    }
    cmr_sha256_final(&ctx, st->fingerprint);
    free(sorted);
    return 0;
}

static void common_folder(cmr_archive_impl *a, cmr_study *st, file_entry *files, size_t n)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", files[0].path);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    for (size_t i = 1; i < n; i++) {
        size_t len = strlen(dir);
        while (len && !(strncmp(files[i].path, dir, len) == 0 && files[i].path[len] == '/')) {
            char *s = strrchr(dir, '/');
            if (!s) {
                len = 0;
                break;
            }
            *s = '\0';
            len = strlen(dir);
        }
        if (!len) {
            dir[0] = '\0';
            break;
        }
    }
    st->folder = cmr_pool_strdup(&a->pool, dir[0] ? dir : "/");
}

static int build_study(cmr_archive_impl *a, cmr_study *st, file_entry *files, size_t n)
{
    const cmr_dicom_header *h = files[0].header;
    copy_field(st->uid, sizeof st->uid, h->study_uid);
    copy_field(st->accession, sizeof st->accession, h->accession_number);
    copy_field(st->patient_id, sizeof st->patient_id, h->patient_id);
    copy_field(st->raw_date, sizeof st->raw_date, h->study_date);
    st->date = cmr_parse_dicom_date(h->study_date);
    if (!st->date && h->study_date[0])
        cmr_archive_add_issue(a, files[0].path, st->uid, CMR_EFORMAT,
                              "StudyDate '%s' is not a valid date; stored as unknown", h->study_date);
    st->sex = h->patient_sex[0] == 'F' || h->patient_sex[0] == 'M' || h->patient_sex[0] == 'O' ? h->patient_sex[0] : 0;
    st->age_years = age_from(h, st->date);
    copy_field(st->manufacturer, sizeof st->manufacturer, h->manufacturer);
    copy_field(st->scanner_model, sizeof st->scanner_model, h->model_name);
    copy_field(st->institution, sizeof st->institution, h->institution);
    st->field_strength = h->field_strength;
    st->n_files = n;
    for (size_t i = 1; i < n; i++)
        if (strcmp(files[i].header->patient_id, h->patient_id) != 0) {
            st->mixed_patients = 1;
            cmr_archive_add_issue(a, files[i].path, st->uid, CMR_EFORMAT,
                                  "study %s holds files of more than one patient; the study is skipped", st->uid);
            break;
        }
    common_folder(a, st, files, n);
    int rc = fingerprint(st, files, n);
    if (rc)
        return rc;

    size_t n_series = 0;
    for (size_t i = 0; i < n; i++)
        n_series += i == 0 || strcmp(files[i].header->series_uid, files[i - 1].header->series_uid) != 0;
    st->series = calloc(n_series, sizeof *st->series);
    if (!st->series)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    for (size_t i = 0, start = 0; i <= n; i++) {
        if (i < n && (i == start || strcmp(files[i].header->series_uid, files[start].header->series_uid) == 0))
            continue;
        rc = build_series(a, &st->series[st->n_series++], files + start, i - start);
        if (rc)
            return rc;
        start = i;
    }
    return 0;
}

/* ---- the scan ----------------------------------------------------------------------- */

int cmr_archive_scan(const char *const *roots, size_t n_roots, const cmr_scan_options *opts, cmr_archive **out)
{
    *out = NULL;
    cmr_archive_impl *a = calloc(1, sizeof *a);
    if (!a)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    scan_state st = {.a = a, .opts = opts};
    pthread_mutex_init(&st.issues_lock, NULL);
    int rc = 0;
    for (size_t r = 0; r < n_roots && rc == 0; r++) {
        struct stat sb;
        if (stat(roots[r], &sb) != 0) {
            rc = cmr_fail(CMR_ENOTFOUND, "%s: %s", roots[r], strerror(errno));
        } else if (S_ISDIR(sb.st_mode)) {
            char root[4096];
            snprintf(root, sizeof root, "%s", roots[r]);
            size_t len = strlen(root);
            while (len > 1 && root[len - 1] == '/')
                root[--len] = '\0';
            rc = walk(&st, root, 0);
        } else {
            rc = add_file(&st, roots[r], &sb);
        }
    }
    if (rc)
        goto fail;

    unsigned threads = opts && opts->threads ? opts->threads : (unsigned)sysconf(_SC_NPROCESSORS_ONLN);
    if (threads < 1)
        threads = 1;
    if (threads > 64)
        threads = 64;
    pthread_t tids[64];
    unsigned started = 0;
    for (; started < threads; started++)
        if (pthread_create(&tids[started], NULL, reader_thread, &st) != 0)
            break;
    if (started == 0)
        reader_thread(&st);
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);

    /* Group DICOM images by study and series; list reports. */
    size_t n_dicom = 0;
    for (size_t i = 0; i < st.n_files; i++) {
        file_entry *f = &st.files[i];
        a->pub.n_files_seen++;
        if (f->kind == FILE_DICOM && f->header->is_structured_report) {
            f->kind = FILE_REPORT; /* read as a report by the ingest step */
            cmr_dicom_header_free(f->header);
            f->header = NULL;
        }
        if (f->kind == FILE_DICOM) {
            /* Compact the DICOM entries to the front; the others' headers are gone. */
            file_entry keep = *f;
            f->header = NULL;
            st.files[n_dicom++] = keep;
        } else if (f->kind == FILE_REPORT) {
            if ((rc = cmr_grow((void **)&a->reports, &a->reports_cap, a->pub.n_reports + 1, sizeof *a->reports)))
                goto fail;
            a->reports[a->pub.n_reports++] = f->path;
        } else if (f->kind == FILE_OTHER) {
            a->pub.n_skipped_non_dicom++;
        }
    }
    for (size_t i = n_dicom; i < st.n_files; i++)
        st.files[i].header = NULL;
    a->pub.report_paths = a->reports;
    a->pub.n_dicom = n_dicom;
    if (n_dicom > 1)
        qsort(st.files, n_dicom, sizeof *st.files, cmp_file_group);
    size_t n_studies = 0;
    for (size_t i = 0; i < n_dicom; i++)
        n_studies += i == 0 || strcmp(st.files[i].header->study_uid, st.files[i - 1].header->study_uid) != 0;
    a->pub.studies = calloc(n_studies ? n_studies : 1, sizeof *a->pub.studies);
    if (!a->pub.studies) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0, start = 0; i <= n_dicom; i++) {
        if (i < n_dicom && (i == start || !strcmp(st.files[i].header->study_uid, st.files[start].header->study_uid)))
            continue;
        if (i > start) {
            cmr_study *study = &a->pub.studies[a->pub.n_studies++];
            if ((rc = build_study(a, study, st.files + start, i - start)))
                goto fail;
            cmr_classify_study(study);
        }
        start = i;
    }
    for (size_t i = 0; i < n_dicom; i++)
        cmr_dicom_header_free(st.files[i].header);
    free(st.files);
    pthread_mutex_destroy(&st.issues_lock);
    *out = &a->pub;
    return 0;
fail:
    for (size_t i = 0; i < st.n_files; i++)
        cmr_dicom_header_free(st.files[i].header);
    free(st.files);
    pthread_mutex_destroy(&st.issues_lock);
    cmr_archive_free(&a->pub);
    return rc;
}

void cmr_archive_free(cmr_archive *pub)
{
    if (!pub)
        return;
    cmr_archive_impl *a = (cmr_archive_impl *)pub;
    for (size_t i = 0; i < pub->n_studies; i++) {
        for (size_t j = 0; j < pub->studies[i].n_series; j++)
            free(pub->studies[i].series[j].images);
        free(pub->studies[i].series);
    }
    free(pub->studies);
    free(a->issues);
    free(a->reports);
    cmr_pool_free(&a->pool);
    free(a);
}
