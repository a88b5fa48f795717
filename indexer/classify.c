/* View classification: geometry first, then temporal structure, then
 * sequence parameters; series descriptions only as a hint (they are often
 * blank, and vendors phrase them differently).
 *
 * 1. Kind: non-MR, localizer, flow, mapping, STIR, cine or LGE, from the
 *    modality, image type, phases per slice, inversion time and scanning
 *    sequence (GR + IR is LGE; SE/TSE + IR is STIR).
 * 2. Plane: the study's short-axis normal is the normal of its largest
 *    parallel stack (a cine stack if there is one, else an LGE stack, else the
 *    usual LV long axis of an adult, apex left-anterior-inferior).  A series
 *    is short-axis when its normal is within 25 degrees of it, long-axis when
 *    within 25 degrees of perpendicular.
 * 3. Long-axis view: where a long-axis plane cuts the short-axis plane gives
 *    a line; its angle in the short-axis plane, measured from lateral
 *    towards anterior, is near -7 degrees for the 4-chamber (through both
 *    ventricles), 90 for the 2-chamber (anterior and inferior walls) and 120
 *    for the 3-chamber (through the LV outflow tract and the inferolateral
 *    wall).  A heart's rotation shifts every plane of a study alike, so the
 *    planes of a study are labelled together with one common offset. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "cmr_indexer.h"

#define DEG (180.0 / M_PI)

static const char *const label_names[CMR_SERIES_LABEL_COUNT_] = {
    "other", "cine_sax", "cine_2ch", "cine_3ch", "cine_4ch",
    "lge_sax", "lge_2ch", "lge_3ch", "lge_4ch", "cine_unplaced",
};

const char *cmr_series_label_name(cmr_series_label label)
{
    return (unsigned)label < CMR_SERIES_LABEL_COUNT_ ? label_names[label] : "?";
}

const char *cmr_other_kind_name(cmr_other_kind kind)
{
    static const char *const names[] = {"", "localizer", "flow", "mapping", "stir", "non-mr", "report", "unknown"};
    return (unsigned)kind < sizeof names / sizeof *names ? names[kind] : "?";
}

uint32_t cmr_series_label_view(cmr_series_label label)
{
    switch (label) {
    case CMR_SERIES_CINE_SAX: return CMR_VIEW_CINE_SAX;
    case CMR_SERIES_CINE_2CH: return CMR_VIEW_CINE_2CH;
    case CMR_SERIES_CINE_3CH: return CMR_VIEW_CINE_3CH;
    case CMR_SERIES_CINE_4CH: return CMR_VIEW_CINE_4CH;
    case CMR_SERIES_LGE_SAX: return CMR_VIEW_LGE_SAX;
    case CMR_SERIES_LGE_2CH: return CMR_VIEW_LGE_2CH;
    case CMR_SERIES_LGE_3CH: return CMR_VIEW_LGE_3CH;
    case CMR_SERIES_LGE_4CH: return CMR_VIEW_LGE_4CH;
    default: return 0;
    }
}

/* Case-insensitive search for any of the words in a description. */
static int mentions(const char *text, const char *const *words)
{
    char low[160];
    size_t n = 0;
    for (; text[n] && n + 1 < sizeof low; n++)
        low[n] = (char)tolower((unsigned char)text[n]);
    low[n] = '\0';
    for (; *words; words++)
        if (strstr(low, *words))
            return 1;
    return 0;
}

static double dot3(const double *a, const double *b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

static void cross3(const double *a, const double *b, double *c)
{
    c[0] = a[1] * b[2] - a[2] * b[1];
    c[1] = a[2] * b[0] - a[0] * b[2];
    c[2] = a[0] * b[1] - a[1] * b[0];
}

static int normalise3(double *v)
{
    double n = sqrt(dot3(v, v));
    if (n < 1e-9)
        return -1;
    for (int i = 0; i < 3; i++)
        v[i] /= n;
    return 0;
}

typedef enum kind { K_OTHER, K_CINE, K_LGE } kind;

/* Do all images of the series share one orientation? Localizers do not. */
static int single_orientation(const cmr_series *s)
{
    for (size_t i = 1; i < s->n_images; i++)
        for (int k = 0; k < 6; k++)
            if (fabs(s->images[i].orientation[k] - s->images[0].orientation[k]) > 0.02)
                return 0;
    return 1;
}

static kind classify_kind(cmr_series *s)
{
    static const char *const loc_words[] = {"loc", "scout", "survey", "pilot", "plan", NULL};
    static const char *const flow_words[] = {"flow", "venc", "phase contrast", "pc_", "q flow", "qflow", NULL};
    static const char *const map_words[] = {"molli", "map", "t2*", "t2star", "shmolli", "sasha", "look-locker", NULL};
    static const char *const stir_words[] = {"stir", "tirm", "t2w", "t2_tse", "dark blood", "bb_", "spir", NULL};
    static const char *const lge_words[] = {"lge", "psir", "mde", "delayed", "de_", "late", "ir_tfe", "tfl_psir", NULL};
    static const char *const cine_words[] = {"cine", "fiesta", "trufi", "tf2d", "btfe", "ssfp", NULL};
    const char *desc = s->description;
    const char *it = s->image_type;

    if (strcmp(s->modality, "MR") != 0 || strncmp(s->sop_class_uid, "1.2.840.10008.5.1.4.1.1.4", 25) != 0) {
        s->other_kind = CMR_OTHER_NON_MR;
        snprintf(s->reason, sizeof s->reason, "modality %s (SOP class %s) is not MR: not a CMR series",
                 s->modality[0] ? s->modality : "unknown", s->sop_class_uid);
        return K_OTHER;
    }
    if (s->n_images == 0) {
        s->other_kind = CMR_OTHER_UNKNOWN;
        snprintf(s->reason, sizeof s->reason, "no images with pixel data");
        return K_OTHER;
    }
    if (strstr(it, "LOCALIZER") || (s->has_geometry && !single_orientation(s))) {
        s->other_kind = CMR_OTHER_LOCALIZER;
        snprintf(s->reason, sizeof s->reason, "%s", strstr(it, "LOCALIZER") ? "image type LOCALIZER"
                                                                              : "images in several orientations (localizer)");
        return K_OTHER;
    }
    if (s->n_phases < 8 && s->n_images <= 9 && mentions(desc, loc_words)) {
        s->other_kind = CMR_OTHER_LOCALIZER;
        snprintf(s->reason, sizeof s->reason, "%zu image(s), description '%s' (localizer)", s->n_images, desc);
        return K_OTHER;
    }
    if (strstr(it, "PHASE") || strstr(it, "VELOCITY") || strstr(it, "\\P\\") || mentions(desc, flow_words)) {
        s->other_kind = CMR_OTHER_FLOW;
        snprintf(s->reason, sizeof s->reason, "phase-contrast flow (image type %s%s%s)", it,
                 desc[0] ? ", description " : "", desc);
        return K_OTHER;
    }
    if (strstr(it, "MAP") || strstr(it, "T1MAP") || strstr(it, "T2MAP") || mentions(desc, map_words)) {
        s->other_kind = CMR_OTHER_MAPPING;
        snprintf(s->reason, sizeof s->reason, "parametric mapping (image type %s%s%s)", it,
                 desc[0] ? ", description " : "", desc);
        return K_OTHER;
    }
    int ir = strstr(s->scanning_sequence, "IR") != NULL || s->inversion_time > 0;
    int spin_echo = strstr(s->scanning_sequence, "SE") != NULL;
    int phases = s->n_phases;
    if (phases >= 8) {
        if (mentions(desc, lge_words) && !mentions(desc, cine_words)) {
            /* A TI scout (Look-Locker) has many phases at rising inversion times. */
            s->other_kind = CMR_OTHER_MAPPING;
            snprintf(s->reason, sizeof s->reason, "%d images per slice at rising inversion times (TI scout)", phases);
            return K_OTHER;
        }
        snprintf(s->reason, sizeof s->reason, "%d phases per slice over the cardiac cycle%s%s%s", phases,
                 spin_echo ? "" : ", gradient echo", desc[0] ? "; description " : "", desc);
        return K_CINE;
    }
    if (ir && spin_echo) {
        s->other_kind = CMR_OTHER_STIR;
        snprintf(s->reason, sizeof s->reason, "inversion-recovery spin echo (%s): T2 STIR", s->scanning_sequence);
        return K_OTHER;
    }
    if (mentions(desc, stir_words) && !mentions(desc, lge_words)) {
        s->other_kind = CMR_OTHER_STIR;
        snprintf(s->reason, sizeof s->reason, "T2-weighted / STIR by description '%s'", desc);
        return K_OTHER;
    }
    if (ir || mentions(desc, lge_words)) {
        if (s->inversion_time > 0)
            snprintf(s->reason, sizeof s->reason, "single phase, inversion recovery TI %.0f ms (late enhancement)",
                     s->inversion_time);
        else
            snprintf(s->reason, sizeof s->reason, "single phase, inversion recovery%s%s", desc[0] ? "; description " : "",
                     desc);
        return K_LGE;
    }
    s->other_kind = CMR_OTHER_UNKNOWN;
    snprintf(s->reason, sizeof s->reason, "%d phase(s) per slice, no inversion recovery: not a cine or LGE series",
             phases);
    return K_OTHER;
}

/* Angle (degrees, 0..180) of the line where plane n cuts the short-axis
 * plane, measured in the short-axis plane from the lateral direction towards
 * anterior.  Anterior is the patient's anterior projected onto the plane;
 * lateral is perpendicular to it, towards the patient's left. */
static double lax_angle(const double *sax, const double *n)
{
    static const double anterior[3] = {0, -1, 0};
    double e_u[3], e_v[3], line[3];
    double d = dot3(anterior, sax);
    for (int i = 0; i < 3; i++)
        e_v[i] = anterior[i] - d * sax[i];
    if (normalise3(e_v))
        return 0;
    cross3(e_v, sax, e_u);
    if (e_u[0] < 0)
        for (int i = 0; i < 3; i++)
            e_u[i] = -e_u[i];
    cross3(sax, n, line);
    if (normalise3(line))
        return 0;
    double a = atan2(dot3(line, e_v), dot3(line, e_u)) * DEG;
    while (a < 0)
        a += 180;
    while (a >= 180)
        a -= 180;
    return a;
}

static double circ180(double a, double b)
{
    double d = fmod(fabs(a - b), 180.0);
    return d > 90 ? 180 - d : d;
}

typedef struct lax_plane {
    double angle;
    int label; /* 0 = 4ch, 1 = 2ch, 2 = 3ch */
} lax_plane;

#define MAX_LAX 32
/* 4-chamber just below lateral (through the RV), 2-chamber anterior-inferior,
 * 3-chamber from the inferolateral wall through the aortic root, which
 * leaves the base anteroseptally. */
static const double lax_expected[3] = {-7, 90, 120};

/* Labels the study's long-axis planes with one common rotation. */
static void label_lax(lax_plane *planes, size_t n)
{
    double best_cost = 1e30, best_offset = 0;
    for (double off = -35; off <= 35; off += 1) {
        double cost = 0;
        for (size_t i = 0; i < n; i++) {
            double m = 1e9;
            for (int l = 0; l < 3; l++) {
                double d = circ180(planes[i].angle, lax_expected[l] + off);
                m = d < m ? d : m;
            }
            cost += m * m;
        }
        cost += off * off * 0.05; /* mild preference for the textbook orientation */
        if (cost < best_cost) {
            best_cost = cost;
            best_offset = off;
        }
    }
    for (size_t i = 0; i < n; i++) {
        double m = 1e9;
        for (int l = 0; l < 3; l++) {
            double d = circ180(planes[i].angle, lax_expected[l] + best_offset);
            if (d < m) {
                m = d;
                planes[i].label = l;
            }
        }
    }
}

void cmr_classify_study(cmr_study *study)
{
    /* Series of a study number in the tens; a fixed bound keeps this
     * allocation-free, and series past it stay "other". */
    enum { MAX_SERIES = 256 };
    kind kinds[MAX_SERIES];
    size_t plane_of[MAX_SERIES];
    size_t n_series = study->n_series < MAX_SERIES ? study->n_series : MAX_SERIES;
    for (size_t i = n_series; i < study->n_series; i++) {
        study->series[i].label = CMR_SERIES_OTHER;
        study->series[i].other_kind = CMR_OTHER_UNKNOWN;
        snprintf(study->series[i].reason, sizeof study->series[i].reason, "more than %d series in the study", MAX_SERIES);
    }
    for (size_t i = 0; i < n_series; i++) {
        study->series[i].label = CMR_SERIES_OTHER;
        study->series[i].other_kind = CMR_OTHER_NONE;
        kinds[i] = classify_kind(&study->series[i]);
    }

    /* The short-axis reference: the largest stack, cine first. */
    double sax[3] = {0, 0, 0};
    const char *sax_from = NULL;
    int best = 1;
    for (int pass = 0; pass < 2 && !sax_from; pass++)
        for (size_t i = 0; i < n_series; i++) {
            cmr_series *s = &study->series[i];
            if (kinds[i] != (pass == 0 ? K_CINE : K_LGE) || !s->has_geometry || s->n_slices < 4)
                continue;
            if (s->n_slices > best) {
                best = s->n_slices;
                memcpy(sax, s->normal, sizeof sax);
                sax_from = s->uid;
            }
        }
    if (!sax_from) {
        /* An adult LV's long axis in LPS: apex left, anterior, inferior. */
        static const double prior[3] = {0.58, -0.50, -0.62};
        memcpy(sax, prior, sizeof sax);
        normalise3(sax);
    }

    lax_plane planes[MAX_LAX];
    size_t n_planes = 0;
    for (size_t i = 0; i < n_series; i++) {
        cmr_series *s = &study->series[i];
        plane_of[i] = (size_t)-1;
        if (kinds[i] == K_OTHER)
            continue;
        if (!s->has_geometry) {
            if (kinds[i] == K_CINE) {
                s->label = CMR_SERIES_CINE_UNPLACED;
                size_t len = strlen(s->reason);
                snprintf(s->reason + len, sizeof s->reason - len, "; no image position/orientation, plane unknown");
            } else {
                s->other_kind = CMR_OTHER_UNKNOWN;
                snprintf(s->reason, sizeof s->reason, "late-enhancement images without position/orientation");
            }
            continue;
        }
        double c = fabs(dot3(s->normal, sax));
        size_t len = strlen(s->reason);
        if (c > cos(25 / DEG) || (s->n_slices >= 4 && sax_from)) {
            if (s->n_slices >= 4 && c < cos(25 / DEG)) {
                /* A second stack at an angle to the reference: not a SAX. */
                s->label = CMR_SERIES_OTHER;
                s->other_kind = CMR_OTHER_UNKNOWN;
                snprintf(s->reason + len, sizeof s->reason - len, "; a %d-slice stack %.0f degrees off the short axis",
                         s->n_slices, acos(c) * DEG);
                continue;
            }
            s->label = kinds[i] == K_CINE ? CMR_SERIES_CINE_SAX : CMR_SERIES_LGE_SAX;
            snprintf(s->reason + len, sizeof s->reason - len, "; %d slice(s), %.0f degrees from the short axis%s",
                     s->n_slices, acos(c > 1 ? 1 : c) * DEG, sax_from ? "" : " (no stack: adult LV axis assumed)");
        } else if (c < sin(25 / DEG)) {
            /* Long axis: group parallel series (cine and LGE of one view) as one plane. */
            double a = lax_angle(sax, s->normal);
            size_t p = 0;
            for (; p < n_planes; p++)
                if (circ180(planes[p].angle, a) < 8)
                    break;
            if (p == n_planes && n_planes < MAX_LAX)
                planes[n_planes++] = (lax_plane){a, 0};
            plane_of[i] = p < MAX_LAX ? p : (size_t)-1;
            snprintf(s->reason + len, sizeof s->reason - len, "; long axis, cuts the short axis at %.0f degrees", a);
        } else {
            s->other_kind = CMR_OTHER_UNKNOWN;
            snprintf(s->reason + len, sizeof s->reason - len, "; oblique plane %.0f degrees from the short axis",
                     acos(c) * DEG);
        }
    }
    label_lax(planes, n_planes);
    static const cmr_series_label cine_lax[3] = {CMR_SERIES_CINE_4CH, CMR_SERIES_CINE_2CH, CMR_SERIES_CINE_3CH};
    static const cmr_series_label lge_lax[3] = {CMR_SERIES_LGE_4CH, CMR_SERIES_LGE_2CH, CMR_SERIES_LGE_3CH};
    for (size_t i = 0; i < n_series; i++) {
        if (plane_of[i] == (size_t)-1)
            continue;
        cmr_series *s = &study->series[i];
        int l = planes[plane_of[i]].label;
        s->label = kinds[i] == K_CINE ? cine_lax[l] : lge_lax[l];
        size_t len = strlen(s->reason);
        snprintf(s->reason + len, sizeof s->reason - len, " (%s)", l == 0 ? "4-chamber" : l == 1 ? "2-chamber" : "3-chamber");
    }
}
