/* Study planning and the DICOM series of one study. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <errno.h>
#include <unistd.h>

#include "cmr_error.h"
#include "dicom_writer.h"
#include "phantom.h"
#include "series.h"

const cmr_site cmr_sites[CMR_NSITES] = {
    {"northgate", "Northgate University Hospital", CMR_V_SIEMENS, "Avanto", "Skyra", "syngo MR B17", 0.35, 0.0,
     0.97, CMR_TS_JPEGLS_LOSSLESS, 0, 0, "NG"},
    {"riverside", "Riverside General", CMR_V_GE, "SIGNA HDxt", "DISCOVERY MR750", "15\\LX\\MR Software release:15.0_M4A_0947.a",
     0.3, 0.05, 0.93, CMR_TS_JPEG_LOSSLESS, 0, 2, "RG"},
    {"stmary", "St Mary Cardiac Centre", CMR_V_PHILIPS, "Achieva", "Ingenia", "5.1.7\\5.1.7.2", 0.5, 0.0, 0.97,
     CMR_TS_JPEGLS_LOSSLESS, 0, 0, "SM"},
    {"lakeside", "Lakeside Community Hospital", CMR_V_SIEMENS, "Aera", "Prisma", "syngo MR E11", 0.2, 0.5, 0.95,
     CMR_TS_RLE, 1, 1, "LK"},
    {"hillcrest", "Hillcrest Heart Institute", CMR_V_PHILIPS, "Achieva", "Ingenia Elition", "5.6.1\\5.6.1.0", 0.6,
     0.1, 0.96, CMR_TS_JPEGLS_LOSSLESS, 0, 0, "HC"},
};

static const char *const first_m[] = {"JAMES", "JOHN", "ROBERT", "MICHAEL", "DAVID", "AHMED", "WEI", "CARLOS",
                                      "PIOTR", "KWAME", "LUCA", "HIROSHI", "OMAR", "SEAN", "ANDREW", "RAJ"};
static const char *const first_f[] = {"MARY", "PATRICIA", "LINDA", "SUSAN", "FATIMA", "MEI", "ANA", "OLGA",
                                      "AMARA", "GIULIA", "YUKI", "SARAH", "PRIYA", "EMMA", "NORA", "LEILA"};
static const char *const last[] = {"SMITH", "JONES", "GARCIA", "NGUYEN", "KOWALSKI", "OKAFOR", "ROSSI", "TANAKA",
                                   "KHAN", "MULLER", "SILVA", "O'BRIEN", "CHEN", "PATEL", "IVANOVA", "DUBOIS",
                                   "HANSEN", "MENSAH", "LOPEZ", "WALSH"};

void cmr_uid(cmr_rng *r, char out[CMR_UID_LEN])
{
    /* 2.25 + the decimal value of 128 random bits with UUID v4 markers. */
    uint64_t hi = cmr_rng_next(r), lo = cmr_rng_next(r);
    hi = (hi & ~0xf000ULL) | 0x4000ULL;
    lo = (lo & 0x3fffffffffffffffULL) | 0x8000000000000000ULL;
    unsigned __int128 v = ((unsigned __int128)hi << 64) | lo;
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    int k = snprintf(out, CMR_UID_LEN, "2.25.");
    for (int i = n - 1; i >= 0 && k < CMR_UID_LEN - 1; i--)
        out[k++] = digits[i];
    out[k] = 0;
}

int cmr_mkdirs(const char *path)
{
    char tmp[1024];
    size_t n = strlen(path);
    if (n >= sizeof tmp)
        return cmr_fail(CMR_EINVAL, "path too long: %s", path);
    memcpy(tmp, path, n + 1);
    for (size_t i = 1; i <= n; i++) {
        if (tmp[i] == '/' || tmp[i] == 0) {
            char c = tmp[i];
            tmp[i] = 0;
            if (mkdir(tmp, 0777) != 0 && errno != EEXIST)
                return cmr_fail(CMR_EIO, "mkdir %s: %s", tmp, strerror(errno));
            tmp[i] = c;
        }
    }
    return 0;
}

static const double dx_weights[CMR_DX_COUNT] = {0.22, 0.10, 0.07, 0.12, 0.16, 0.10, 0.05, 0.05, 0.05, 0.08};
static const int dx_age[CMR_DX_COUNT][2] = {{18, 75}, {18, 72}, {58, 88}, {28, 76}, {45, 86},
                                            {16, 52}, {28, 66}, {14, 60}, {22, 62}, {16, 58}};

static int other_dx(cmr_rng *r, int dx)
{
    int o = cmr_rng_int(r, 0, CMR_DX_COUNT - 2);
    return o >= dx ? o + 1 : o;
}

static void day_to_date(int day, char out[9])
{
    /* Days since 2010-01-01, proleptic Gregorian. */
    int y = 2010;
    for (;;) {
        int len = (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)) ? 366 : 365;
        if (day < len)
            break;
        day -= len;
        y++;
    }
    static const int md[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && (y % 100 != 0 || y % 400 == 0));
    int m = 0;
    while (m < 12) {
        int l = md[m] + (m == 1 ? leap : 0);
        if (day < l)
            break;
        day -= l;
        m++;
    }
    char tmp[48];
    snprintf(tmp, sizeof tmp, "%04d%02d%02d", y % 10000, (m + 1) % 100, (day + 1) % 100);
    memcpy(out, tmp, 8);
    out[8] = 0;
}

/* A weighted draw among the entries not masked out (mask bit set = out);
 * the same single uniform draw whatever the mask, so archives without
 * masks are unchanged. */
static int pick_allowed(cmr_rng *r, const double *w, int n, unsigned out_mask)
{
    double masked[32];
    for (int k = 0; k < n; k++)
        masked[k] = out_mask >> k & 1 ? 0 : w[k];
    int i = cmr_rng_weighted(r, masked, n);
    while (masked[i] == 0)
        i = (i + 1) % n; /* the rounding fallback may land on a masked entry */
    return i;
}

static void plan_one(const cmr_phantom_opts *o, cmr_study *s, int i, int forced_dx)
{
    cmr_rng r;
    cmr_rng_seed(&r, o->seed, 0x5700000ULL + (uint64_t)i);
    memset(s, 0, sizeof *s);
    s->index = i;
    s->dup_of = -1;
    s->render_stream = 0x100000000ULL + (uint64_t)i;
    s->uid_stream = 0x200000000ULL + (uint64_t)i;
    s->dx = forced_dx >= 0 ? forced_dx : pick_allowed(&r, dx_weights, CMR_DX_COUNT, o->dx_exclude);
    static const double site_w[CMR_NSITES] = {0.28, 0.22, 0.2, 0.12, 0.18};
    s->site = pick_allowed(&r, site_w, CMR_NSITES, o->site_mask ? ~o->site_mask : 0);
    const cmr_site *site = &cmr_sites[s->site];
    s->vendor = site->vendor;
    int three = cmr_rng_chance(&r, site->p3t);
    s->field_t = three ? 3.0 : 1.5;
    s->model = three ? site->model_3 : site->model_15;

    /* Patient. */
    double pmale = s->dx == CMR_DX_FABRY || s->dx == CMR_DX_AMYLOID || s->dx == CMR_DX_ICM ? 0.75 : 0.55;
    int female = !cmr_rng_chance(&r, pmale);
    strcpy(s->sex, female ? "F" : "M");
    s->age = cmr_rng_int(&r, dx_age[s->dx][0], dx_age[s->dx][1]);
    s->height_m = (female ? 1.63 : 1.76) + 0.07 * cmr_rng_normal(&r);
    double bmi = 21 + fabs(cmr_rng_normal(&r)) * 5;
    s->weight_kg = bmi * s->height_m * s->height_m;
    s->body_scale = (s->height_m / 1.72) * (0.85 + 0.15 * bmi / 25);
    snprintf(s->patient_name, sizeof s->patient_name, "%s^%s",
             last[cmr_rng_int(&r, 0, (int)(sizeof last / sizeof *last) - 1)],
             female ? first_f[cmr_rng_int(&r, 0, 15)] : first_m[cmr_rng_int(&r, 0, 15)]);
    snprintf(s->patient_id, sizeof s->patient_id, "%s%07d", site->id_prefix, cmr_rng_int(&r, 100000, 9999999));
    int day = cmr_rng_int(&r, 0, 365 * 16 - 1);
    day_to_date(day, s->study_date);
    int by = atoi(s->study_date) / 10000 - s->age;
    char tmp[64];
    snprintf(tmp, sizeof tmp, "%04d%02d%02d", by % 10000, cmr_rng_int(&r, 1, 12) % 100, cmr_rng_int(&r, 1, 28) % 100);
    memcpy(s->birth_date, tmp, 9);
    if (atoi(s->birth_date + 4) > atoi(s->study_date + 4))
        s->age--;
    snprintf(s->study_time, sizeof s->study_time, "%02d%02d%02d", cmr_rng_int(&r, 7, 19), cmr_rng_int(&r, 0, 59),
             cmr_rng_int(&r, 0, 59));
    snprintf(s->accession, sizeof s->accession, "A%02d%07d", (s->site + 10) % 100, cmr_rng_int(&r, 0, 9999999) % 10000000);

    cmr_heart_draw(&r, s->dx, s->body_scale, female, &s->hp);

    /* Protocol. */
    static const int cols_opt[] = {128, 144, 160, 176, 192, 208, 224, 256};
    static const double cols_w[] = {0.3, 0.25, 0.2, 0.1, 0.09, 0.03, 0.02, 0.01};
    double fov = cmr_rng_range(&r, 300, 380);
    s->cols = cols_opt[cmr_rng_weighted(&r, cols_w, 8)];
    s->ps = fov / s->cols;
    if (s->ps > 2.0)
        s->ps = 2.0;
    if (s->ps < 1.2)
        s->ps = 1.2;
    s->ps = floor(s->ps * 1e4 + 0.5) / 1e4;
    s->rows = (int)(s->cols * cmr_rng_range(&r, 0.70, 0.85) / 2) * 2;
    if (s->rows < 96)
        s->rows = 96;
    static const double thick_w[] = {0.1, 0.15, 0.5, 0.1, 0.15};
    s->thick = 6 + cmr_rng_weighted(&r, thick_w, 5);
    s->gap = cmr_rng_chance(&r, 0.6) ? 0 : (cmr_rng_chance(&r, 0.5) ? 1 : 2);
    static const int ph_opt[] = {20, 25, 30, 22, 24, 28};
    static const double ph_w[] = {0.45, 0.35, 0.05, 0.05, 0.07, 0.03};
    s->nphases = ph_opt[cmr_rng_weighted(&r, ph_w, 6)];
    if (o->fast)
        s->nphases = 20;
    double sp = s->thick + s->gap;
    s->nslices = (int)lround((s->hp.L_ed + 14) / sp);
    s->nslices = s->nslices < 8 ? 8 : (s->nslices > 14 ? 14 : s->nslices);
    s->psir = cmr_rng_chance(&r, s->vendor == CMR_V_GE ? 0.1 : 0.55);
    s->ti_ms = (three ? 330 : 280) + cmr_rng_range(&r, -40, 40);
    if (s->hp.dx == CMR_DX_AMYLOID)
        s->ti_ms -= 60;
    s->ts = cmr_rng_chance(&r, site->compress * o->compress_scale) ? site->compress_ts
            : (s->site == 1 && cmr_rng_chance(&r, 0.3) ? CMR_TS_IMPLICIT_LE : CMR_TS_EXPLICIT_LE);
    /* The RLE site moved most of its archive to JPEG-LS later on. */
    if (s->ts == CMR_TS_RLE && cmr_rng_chance(&r, 0.6))
        s->ts = CMR_TS_JPEGLS_LOSSLESS;
    /* Philips sites write a share of their studies as Enhanced MR: one
     * multi-frame object per cine or LGE series. */
    s->multiframe = cmr_rng_uniform(&r) < (s->vendor == CMR_V_PHILIPS ? 0.35 * o->multiframe : 0);
    s->has_loc = cmr_rng_chance(&r, 0.9);
    s->has_stir = cmr_rng_chance(&r, o->extra_series * (s->hp.edema ? 2.5 : 1));
    s->has_lax = 1;
    s->has_lge = 1;
    s->arrhythmia = cmr_rng_chance(&r, 0.08);
    s->motion_artefact = cmr_rng_chance(&r, 0.08);
    double u = cmr_rng_uniform(&r);
    s->report_kind = u < o->sr_reports ? CMR_REP_SR : (u < o->sr_reports + o->text_reports ? CMR_REP_TEXT : CMR_REP_CDA);

    /* Planted problems. */
    s->report_dx = s->code_dx = s->dx;
    if (cmr_rng_chance(&r, o->label_noise)) {
        s->problems |= CMR_P_LABEL_NOISE;
        s->report_dx = s->code_dx = other_dx(&r, s->dx);
    }
    if (cmr_rng_chance(&r, o->contradiction)) {
        s->problems |= CMR_P_CONTRADICTION;
        s->code_dx = other_dx(&r, s->report_dx);
    }
    if (cmr_rng_chance(&r, o->no_impression))
        s->problems |= CMR_P_NO_IMPRESSION;
    if (cmr_rng_chance(&r, o->missing_view)) {
        if (cmr_rng_chance(&r, 0.5))
            s->problems |= CMR_P_NO_LGE, s->has_lge = 0;
        else
            s->problems |= CMR_P_NO_LAX, s->has_lax = 0;
    }
    if (cmr_rng_chance(&r, o->corrupt))
        s->problems |= cmr_rng_chance(&r, 0.5) ? CMR_P_TRUNCATED : CMR_P_CORRUPT;

    /* Drawn last so that it left every earlier choice of a seed alone. */
    s->has_flow = cmr_rng_chance(&r, o->flow);

    cmr_rng ur;
    cmr_rng_seed(&ur, o->seed, s->uid_stream);
    cmr_uid(&ur, s->study_uid);
    cmr_uid(&ur, s->for_uid);

    char pdir[64];
    if (site->layout == 1)
        snprintf(pdir, sizeof pdir, "%s", s->patient_id);
    else
        snprintf(pdir, sizeof pdir, "%s/%s", s->patient_id, s->study_date);
    snprintf(s->dir, sizeof s->dir, "%s/%s/%s%s", site->key, pdir, s->accession, site->layout == 2 ? "/DICOM" : "");
}

int cmr_phantom_plan(const cmr_phantom_opts *o, cmr_study *st, int n)
{
    cmr_rng r;
    cmr_rng_seed(&r, o->seed, 0x91a7ULL);
    /* The first ten studies cover every diagnosis, so small archives do. */
    int order[CMR_DX_COUNT];
    for (int i = 0; i < CMR_DX_COUNT; i++)
        order[i] = i;
    for (int i = CMR_DX_COUNT - 1; i > 0; i--) {
        int j = cmr_rng_int(&r, 0, i), t = order[i];
        order[i] = order[j], order[j] = t;
    }
    for (int i = 0; i < n; i++) {
        if (o->dx_only < 0 && cmr_rng_chance(&r, o->duplicate) && i >= CMR_DX_COUNT) {
            int j = cmr_rng_int(&r, 0, i - 1);
            while (st[j].dup_of >= 0)
                j = st[j].dup_of;
            st[i] = st[j];
            cmr_study *s = &st[i];
            s->index = i;
            s->dup_of = j;
            s->problems = (st[j].problems & (CMR_P_NO_LGE | CMR_P_NO_LAX)) | CMR_P_DUPLICATE;
            s->report_kind = CMR_REP_NONE;
            s->uid_stream = 0x200000000ULL + (uint64_t)i;
            cmr_rng ur;
            cmr_rng_seed(&ur, o->seed, s->uid_stream);
            cmr_uid(&ur, s->study_uid);
            cmr_uid(&ur, s->for_uid);
            size_t len = strlen(s->dir);
            snprintf(s->dir + len, sizeof s->dir - len, "_resent%d", i);
            continue;
        }
        int dx = o->dx_only >= 0 ? o->dx_only : (i < CMR_DX_COUNT ? order[i] : -1);
        if (dx >= 0 && o->dx_only < 0 && (o->dx_exclude >> dx & 1))
            dx = -1;
        plan_one(o, &st[i], i, dx);
    }
    return 0;
}

/* ---- writing ---- */

static int corrupt_file(cmr_study *s, const char *out, cmr_rng *r)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s", out, s->bad_file);
    struct stat sb;
    if (stat(path, &sb) != 0)
        return cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    if (s->problems & CMR_P_TRUNCATED) {
        off_t len = (off_t)(sb.st_size * cmr_rng_range(r, 0.3, 0.8));
        if (truncate(path, len) != 0)
            return cmr_fail(CMR_EIO, "truncate %s: %s", path, strerror(errno));
        return 0;
    }
    FILE *f = fopen(path, "r+b");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    /* Garbage over the preamble magic and the meta header. */
    unsigned char junk[96];
    for (size_t i = 0; i < sizeof junk; i++)
        junk[i] = (unsigned char)cmr_rng_next(r);
    fseek(f, 126, SEEK_SET);
    fwrite(junk, 1, sizeof junk, f);
    fclose(f);
    return 0;
}

int cmr_phantom_write_study(const cmr_phantom_opts *o, cmr_study *s)
{
    int rc = 0;
    cmr_heart *h = calloc(1, sizeof *h);
    cmr_series_ctx *cx = NULL;
    if (!h)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    h->p = s->hp;
    rc = cmr_heart_build(h);
    if (rc)
        goto fail;
    s->hp = h->p;
    rc = cmr_series_ctx_new(o, s, h, &cx);
    if (rc)
        goto fail;
    rc = cmr_series_write_all(cx);
    if (rc)
        goto fail;

    cmr_rng rr;
    cmr_rng_seed(&rr, o->seed, 0x300000000ULL + (uint64_t)s->index);
    if (s->report_kind != CMR_REP_NONE) {
        char findings[4096], impression[4096];
        cmr_report_text(&rr, s, s->report_dx, findings, sizeof findings, impression, sizeof impression);
        if (s->problems & CMR_P_NO_IMPRESSION)
            impression[0] = 0;
        snprintf(s->impression, sizeof s->impression, "%s", impression);
        char path[1200];
        if (s->report_kind == CMR_REP_SR) {
            rc = cmr_series_write_sr(cx, findings, impression);
        } else {
            const char *ext = s->report_kind == CMR_REP_CDA ? "xml" : "txt";
            snprintf(s->report_path, sizeof s->report_path, "reports/%s.%s", s->accession, ext);
            snprintf(path, sizeof path, "%s/%s", o->out, s->report_path);
            rc = s->report_kind == CMR_REP_CDA ? cmr_report_write_cda(s, path, findings, impression)
                                               : cmr_report_write_text(s, path, findings, impression, &rr);
        }
        if (rc)
            goto fail;
    }
    if (s->problems & (CMR_P_TRUNCATED | CMR_P_CORRUPT)) {
        rc = cmr_series_pick_victim(cx, &rr, s->bad_file, sizeof s->bad_file);
        if (!rc)
            rc = corrupt_file(s, o->out, &rr);
        if (rc)
            goto fail;
    }
fail:
    cmr_series_ctx_free(cx);
    free(h);
    if (rc)
        return cmr_fail_context(rc, "study %d (%s): ", s->index, s->accession);
    return 0;
}
