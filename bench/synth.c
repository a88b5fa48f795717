/* Synthetic cases: see synth.h for the model and why it is shaped so. */
#include "synth.h"

#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "cmr_sha256.h"

/* Rank of the within-cluster variation: real embeddings of one phenotype
 * vary along a few directions (size, wall thickness, scar extent), not all
 * 512, and it is that low intrinsic dimension that gives nearest neighbours
 * their meaning. */
#define LATENT_RANK 16
/* Squared norms of the parts of a raw case vector, against 1 for the
 * centre: latent 0.25 and isotropic 0.08 put the mean within-cluster cosine
 * near 1 / 1.33 = 0.75.  Text noise 0.35 gives cos(image, text) ~ 0.86. */
#define LATENT_SCALE 0.5
#define ISO_SCALE 0.283
#define TEXT_SCALE 0.592
/* Share of a cluster centre along its diagnosis' direction (squared):
 * clusters of one diagnosis have centre cosine ~0.3, others ~0. */
#define DIAGNOSIS_PULL 0.3
#define REPEAT_SHARE 0.15   /* of studies that are a known patient's repeat */
#define REPEAT_DRIFT 0.3    /* latent movement between a patient's studies */
#define PATIENT_RING 4096   /* recent patients a repeat study may come from */
#define FIRST_DAY_Y 2010
#define YEARS 15

const synth_site synth_sites[SYNTH_N_SITES] = {
    {"St Aldric Heart Centre", "Siemens", "MAGNETOM Aera", 1.5f, 0.22},
    {"Northgate University Hospital", "Siemens", "MAGNETOM Skyra", 3.0f, 0.18},
    {"Riverside Cardiac Imaging", "GE", "SIGNA Artist", 1.5f, 0.14},
    {"Lakeview Medical Center", "GE", "Discovery MR750w", 3.0f, 0.12},
    {"Harbour General Hospital", "Philips", "Ingenia", 1.5f, 0.10},
    {"Westmoor Royal Infirmary", "Philips", "Achieva dStream", 3.0f, 0.10},
    {"Eastfield Heart Institute", "Siemens", "MAGNETOM Vida", 3.0f, 0.08},
    {"Southbank Community Hospital", "GE", "SIGNA Explorer", 1.5f, 0.06},
};

const char *const synth_view_names[SYNTH_N_VIEWS] = {
    "cine_sax", "cine_2ch", "cine_3ch", "cine_4ch", "lge_sax", "lge_2ch", "lge_3ch", "lge_4ch",
};
static const double view_share[SYNTH_N_VIEWS] = {1.0, 0.95, 0.80, 0.97, 0.88, 0.60, 0.35, 0.65};

const char *const synth_diagnosis_keys[SYNTH_N_DIAGNOSES] = {
    "normal", "hcm", "amyloidosis", "dcm", "icm", "myocarditis", "sarcoidosis", "lvnc", "fabry", "arvc",
};

/* ICD-10(-CM) codes as used for CMR reports; each diagnosis a distinct code
 * so that filtering by code selects exactly one phenotype. */
static const synth_code codes[] = {
    {"Z03.89", "ICD-10", "Normal study: suspected cardiac condition ruled out"},
    {"I42.1", "ICD-10", "Hypertrophic cardiomyopathy"},
    {"E85.4", "ICD-10", "Cardiac amyloidosis (organ-limited)"},
    {"I42.0", "ICD-10", "Dilated cardiomyopathy"},
    {"I25.5", "ICD-10", "Ischaemic cardiomyopathy"},
    {"I40.9", "ICD-10", "Acute myocarditis"},
    {"D86.85", "ICD-10", "Cardiac sarcoidosis (sarcoid myocarditis)"},
    {"Q24.8", "ICD-10", "Left ventricular non-compaction"},
    {"E75.21", "ICD-10", "Anderson-Fabry disease"},
    {"I42.8", "ICD-10", "Arrhythmogenic right ventricular cardiomyopathy"},
    {"I43", "ICD-10", "Cardiomyopathy in diseases classified elsewhere"},
};
#define CODE_SECONDARY_CM 10

typedef struct diagnosis_profile {
    double prevalence, p_male, age_mean, age_sd, ef_mean, ef_sd;
    int x_min, x_max; /* the number quoted besides the EF: mm, ml/m2, segments, ratio x10 */
    const char *phrasings[3];
} diagnosis_profile;

/* Placeholders: {ef} ejection fraction %, {x} the quoted number, {x10} it /10. */
static const diagnosis_profile profiles[SYNTH_N_DIAGNOSES] = {
    {0.33, 0.48, 45, 16, 61, 5, 62, 95,
     {"Normal biventricular size and systolic function (LVEF {ef}%, LVEDVi {x} ml/m2). No late "
      "gadolinium enhancement. No evidence of cardiomyopathy.",
      "Structurally normal heart. LV ejection fraction {ef}%, normal wall thickness, no myocardial "
      "scar or oedema.",
      "Normal cardiac MRI: LVEF {ef}%, no regional wall motion abnormality, no LGE."}},
    {0.12, 0.62, 50, 16, 68, 6, 15, 30,
     {"Asymmetric septal hypertrophy, maximal wall thickness {x} mm, with patchy mid-wall LGE at "
      "the RV insertion points. Hyperdynamic LV, EF {ef}%. Consistent with hypertrophic "
      "cardiomyopathy.",
      "Hypertrophic cardiomyopathy: basal septum {x} mm, systolic anterior motion of the mitral "
      "valve with LVOT flow acceleration. LVEF {ef}%.",
      "Features of HCM with maximal LV wall thickness of {x} mm and focal fibrosis on LGE; LVEF "
      "{ef}%."}},
    {0.05, 0.80, 71, 9, 50, 10, 13, 20,
     {"Concentric LV hypertrophy ({x} mm) with diffuse subendocardial LGE and abnormal gadolinium "
      "kinetics; markedly raised native T1. Appearances typical of cardiac amyloidosis. LVEF {ef}%.",
      "Global transmural LGE with difficulty nulling the myocardium, biatrial enlargement and wall "
      "thickness {x} mm: cardiac amyloid likely. EF {ef}%.",
      "Infiltrative cardiomyopathy, most consistent with amyloidosis: wall thickness {x} mm, "
      "expanded ECV, small pericardial effusion. LVEF {ef}%."}},
    {0.12, 0.66, 55, 15, 30, 9, 110, 190,
     {"Dilated LV (LVEDVi {x} ml/m2) with globally impaired systolic function, LVEF {ef}%. Mid-wall "
      "septal LGE. Non-ischaemic dilated cardiomyopathy.",
      "Dilated cardiomyopathy: LV dilated ({x} ml/m2), severe global hypokinesia, EF {ef}%, no "
      "infarct-pattern LGE.",
      "Severely dilated, globally hypokinetic left ventricle (EF {ef}%, EDVi {x} ml/m2) without "
      "subendocardial scar, in keeping with DCM."}},
    {0.15, 0.80, 65, 10, 36, 10, 2, 9,
     {"Subendocardial LGE in the LAD territory involving {x} segments, with regional akinesia and "
      "LVEF {ef}%. Ischaemic cardiomyopathy.",
      "Prior myocardial infarction with transmural scar in {x} segments; thinned akinetic wall and "
      "impaired LV function (EF {ef}%).",
      "Ischaemic cardiomyopathy: infarct-pattern LGE in {x} segments, mostly >50% transmural, LVEF "
      "{ef}%. Limited viability in the affected territory."}},
    {0.10, 0.72, 34, 14, 53, 8, 1, 5,
     {"Subepicardial LGE of the basal inferolateral wall ({x} segments) with corresponding oedema on "
      "T2 mapping. LVEF {ef}%. Findings fulfil the Lake Louise criteria for acute myocarditis.",
      "Acute myocarditis: patchy subepicardial and mid-wall LGE in {x} segments, raised T1 and T2. "
      "Preserved EF {ef}%.",
      "Non-ischaemic pattern of LGE (subepicardial, {x} segments) with myocardial oedema, in keeping "
      "with myocarditis. LVEF {ef}%."}},
    {0.04, 0.55, 50, 11, 46, 11, 2, 7,
     {"Patchy mid-wall and subepicardial LGE of the basal septum extending to the RV side ({x} "
      "segments); LVEF {ef}%. Pattern suggestive of cardiac sarcoidosis.",
      "Cardiac sarcoidosis likely: multifocal LGE in {x} segments with basal septal thinning. EF "
      "{ef}%.",
      "Multifocal non-ischaemic LGE ({x} segments) including the RV insertion points, in a patient "
      "with known sarcoidosis. LVEF {ef}%."}},
    {0.04, 0.55, 40, 17, 45, 12, 23, 36,
     {"Prominent LV trabeculation with a non-compacted to compacted ratio of {x10} in diastole, "
      "mainly apical and lateral. LVEF {ef}%. Consistent with LV non-compaction.",
      "Left ventricular non-compaction: NC/C ratio {x10}, mildly impaired function (EF {ef}%), no "
      "LGE.",
      "Excessive trabeculation meeting Petersen criteria (NC/C {x10}); LVEF {ef}%."}},
    {0.02, 0.55, 48, 12, 61, 6, 13, 19,
     {"Concentric LV hypertrophy ({x} mm) with low native T1 and basal inferolateral mid-wall LGE. "
      "LVEF {ef}%. Appearances consistent with Anderson-Fabry disease.",
      "Fabry cardiomyopathy: LV wall thickness {x} mm, reduced native T1, inferolateral LGE. EF "
      "{ef}%.",
      "Low myocardial T1 with LV hypertrophy of {x} mm, in keeping with Fabry disease. LVEF {ef}%."}},
    {0.03, 0.65, 39, 14, 56, 7, 110, 165,
     {"Dilated RV (RVEDVi {x} ml/m2) with regional RV dyskinesia and RV free-wall LGE. LVEF {ef}%. "
      "Fulfils major imaging Task Force criteria for ARVC.",
      "Arrhythmogenic right ventricular cardiomyopathy: RV dilatation ({x} ml/m2), microaneurysms "
      "of the RV free wall. LVEF {ef}%.",
      "RV dilated ({x} ml/m2) and dysfunctional with regional akinesia; fibrofatty infiltration "
      "suspected. LV EF {ef}%. Consistent with ARVC."}},
};

/* ---- PRNG: xoshiro256** seeded by splitmix64 ------------------------------------------------ */

typedef struct rng {
    uint64_t s[4];
    double spare; /* second Box-Muller deviate */
    int has_spare;
} rng;

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static void rng_seed(rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
    r->has_spare = 0;
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static uint64_t rng_u64(rng *r)
{
    uint64_t *s = r->s, result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

/* In [0, 1). */
static double rng_uniform(rng *r) { return (double)(rng_u64(r) >> 11) * 0x1.0p-53; }

static unsigned rng_below(rng *r, unsigned n) { return (unsigned)(rng_uniform(r) * n); }

static double rng_gauss(rng *r)
{
    if (r->has_spare) {
        r->has_spare = 0;
        return r->spare;
    }
    /* 1 - u is in (0, 1], so the logarithm is finite. */
    double u = 1.0 - rng_uniform(r), v = rng_uniform(r);
    double radius = sqrt(-2.0 * log(u)), angle = 2.0 * 3.14159265358979323846 * v;
    r->spare = radius * sin(angle);
    r->has_spare = 1;
    return radius * cos(angle);
}

static int rng_between(rng *r, int lo, int hi) { return lo + (int)rng_below(r, (unsigned)(hi - lo + 1)); }

/* ---- calendar ------------------------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int32_t days_from_civil(int y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int32_t)doe - 719468;
}

static int32_t yyyymmdd_from_days(int32_t z)
{
    z += 719468;
    int32_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    int32_t y = (int32_t)yoe + era * 400;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    unsigned d = doy - (153 * mp + 2) / 5 + 1;
    unsigned m = mp < 10 ? mp + 3 : mp - 9;
    y += m <= 2;
    return y * 10000 + (int32_t)m * 100 + (int32_t)d;
}

void synth_format_date(int32_t v, char out[11])
{
    unsigned u = v > 0 ? (unsigned)v : 0;
    snprintf(out, 11, "%04u-%02u-%02u", u / 10000 % 10000, u / 100 % 100, u % 100);
}

/* ---- the generator ------------------------------------------------------------------------------ */

typedef struct patient {
    uint64_t number;
    unsigned cluster, site;
    char sex;
    int age0;           /* age at first_day */
    int32_t first_day, last_day;
    int studies;
    float latent[LATENT_RANK];
} patient;

struct synth {
    synth_params p;
    unsigned dim;
    float *centres;      /* n_clusters x dim, unit */
    float *basis;        /* n_clusters x LATENT_RANK x dim */
    float *spread;       /* n_clusters */
    unsigned *cluster_diagnosis;
    double *cluster_cdf; /* cumulative probability of drawing each cluster */
    double site_cdf[SYNTH_N_SITES];
    float *scratch;      /* dim */
    rng r;
    uint64_t row, patients;
    patient *ring;
    size_t ring_used, ring_next;
    int32_t day_first, day_span;
};

static void normalise(float *v, unsigned dim)
{
    double s = 0;
    for (unsigned i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    float inv = (float)(1.0 / sqrt(s > 0 ? s : 1));
    for (unsigned i = 0; i < dim; i++)
        v[i] *= inv;
}

static void random_unit(rng *r, float *v, unsigned dim)
{
    for (unsigned i = 0; i < dim; i++)
        v[i] = (float)rng_gauss(r);
    normalise(v, dim);
}

/* Largest-remainder split of n clusters over the diagnoses by prevalence,
 * at least one each so that rare diagnoses still have a phenotype. */
static void clusters_per_diagnosis(unsigned n, unsigned out[SYNTH_N_DIAGNOSES])
{
    unsigned used = 0;
    double rem[SYNTH_N_DIAGNOSES];
    for (int d = 0; d < SYNTH_N_DIAGNOSES; d++) {
        double want = profiles[d].prevalence * (n - SYNTH_N_DIAGNOSES);
        out[d] = 1 + (unsigned)want;
        rem[d] = want - floor(want);
        used += out[d];
    }
    while (used < n) {
        int best = 0;
        for (int d = 1; d < SYNTH_N_DIAGNOSES; d++)
            if (rem[d] > rem[best])
                best = d;
        out[best]++;
        rem[best] = -1;
        used++;
    }
}

static uint64_t stream_seed(const synth_params *p)
{
    /* Distinct constants keep the model's draws and each stream's apart. */
    return p->seed ^ (0xD1B54A32D192ED03ull * ((uint64_t)p->stream + 1));
}

int synth_create(const synth_params *params, synth **out)
{
    synth_params p = *params;
    if (!p.dim)
        p.dim = SYNTH_DEFAULT_DIM;
    if (!p.n_clusters)
        p.n_clusters = SYNTH_DEFAULT_CLUSTERS;
    *out = NULL;
    if (p.dim < 8 || p.dim > 65536)
        return cmr_fail(CMR_EINVAL, "dimension %u is out of range (8..65536)", p.dim);
    if (p.n_clusters < SYNTH_N_DIAGNOSES || p.n_clusters > 100000)
        return cmr_fail(CMR_EINVAL, "cluster count %u is out of range (%d..100000)", p.n_clusters,
                        SYNTH_N_DIAGNOSES);
    size_t dim = p.dim, nc = p.n_clusters;
    synth *g = calloc(1, sizeof *g);
    float *diag_dirs = malloc(SYNTH_N_DIAGNOSES * dim * sizeof *diag_dirs);
    if (!g || !diag_dirs)
        goto nomem;
    g->p = p;
    g->dim = p.dim;
    g->centres = malloc(nc * dim * sizeof *g->centres);
    g->basis = malloc(nc * LATENT_RANK * dim * sizeof *g->basis);
    g->spread = malloc(nc * sizeof *g->spread);
    g->cluster_diagnosis = malloc(nc * sizeof *g->cluster_diagnosis);
    g->cluster_cdf = malloc(nc * sizeof *g->cluster_cdf);
    g->scratch = malloc(dim * sizeof *g->scratch);
    g->ring = calloc(PATIENT_RING, sizeof *g->ring);
    if (!g->centres || !g->basis || !g->spread || !g->cluster_diagnosis || !g->cluster_cdf ||
        !g->scratch || !g->ring)
        goto nomem;

    rng model;
    rng_seed(&model, p.seed ^ 0x6A09E667F3BCC908ull);
    for (int d = 0; d < SYNTH_N_DIAGNOSES; d++)
        random_unit(&model, diag_dirs + d * dim, p.dim);
    unsigned per_dx[SYNTH_N_DIAGNOSES];
    clusters_per_diagnosis(p.n_clusters, per_dx);
    double weight_sum[SYNTH_N_DIAGNOSES] = {0};
    double *weight = g->cluster_cdf; /* raw weights first, made cumulative below */
    size_t c = 0;
    for (unsigned d = 0; d < SYNTH_N_DIAGNOSES; d++) {
        for (unsigned j = 0; j < per_dx[d]; j++, c++) {
            float *centre = g->centres + c * dim;
            random_unit(&model, centre, p.dim);
            for (size_t i = 0; i < dim; i++)
                centre[i] = (float)(sqrt(DIAGNOSIS_PULL) * diag_dirs[d * dim + i] +
                                    sqrt(1 - DIAGNOSIS_PULL) * centre[i]);
            normalise(centre, p.dim);
            float *b = g->basis + c * LATENT_RANK * dim;
            double scale = 1.0 / sqrt((double)dim * LATENT_RANK);
            for (size_t i = 0; i < LATENT_RANK * dim; i++)
                b[i] = (float)(rng_gauss(&model) * scale);
            /* Phenotypes differ in how varied they are and in how common. */
            g->spread[c] = (float)(LATENT_SCALE * exp(0.2 * rng_gauss(&model)));
            weight[c] = exp(0.5 * rng_gauss(&model));
            g->cluster_diagnosis[c] = d;
            weight_sum[d] += weight[c];
        }
    }
    double cum = 0;
    for (c = 0; c < nc; c++) {
        unsigned d = g->cluster_diagnosis[c];
        cum += profiles[d].prevalence * weight[c] / weight_sum[d];
        g->cluster_cdf[c] = cum;
    }
    for (c = 0; c < nc; c++)
        g->cluster_cdf[c] /= cum;
    cum = 0;
    for (int s = 0; s < SYNTH_N_SITES; s++)
        g->site_cdf[s] = (cum += synth_sites[s].share);
    for (int s = 0; s < SYNTH_N_SITES; s++)
        g->site_cdf[s] /= cum;

    g->day_first = days_from_civil(FIRST_DAY_Y, 1, 1);
    g->day_span = days_from_civil(FIRST_DAY_Y + YEARS, 1, 1) - g->day_first;
    rng_seed(&g->r, stream_seed(&p));
    free(diag_dirs);
    *out = g;
    return 0;
nomem:
    free(diag_dirs);
    synth_free(g);
    return cmr_fail(CMR_ENOMEM, "out of memory for the synthetic model (%u clusters of dimension %u)",
                    p.n_clusters, p.dim);
}

void synth_free(synth *g)
{
    if (!g)
        return;
    free(g->centres);
    free(g->basis);
    free(g->spread);
    free(g->cluster_diagnosis);
    free(g->cluster_cdf);
    free(g->scratch);
    free(g->ring);
    free(g);
}

unsigned synth_dim(const synth *g) { return g->dim; }

static unsigned pick_cdf(rng *r, const double *cdf, size_t n)
{
    double u = rng_uniform(r);
    size_t lo = 0, hi = n - 1;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return (unsigned)lo;
}

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }

static void expand(char *out, size_t cap, const char *tpl, int ef, int x)
{
    size_t n = 0;
    while (*tpl && n + 1 < cap) {
        char num[16];
        const char *ins = NULL;
        if (strncmp(tpl, "{ef}", 4) == 0) {
            snprintf(num, sizeof num, "%d", ef);
            ins = num, tpl += 4;
        } else if (strncmp(tpl, "{x10}", 5) == 0) {
            snprintf(num, sizeof num, "%d.%d", x / 10, x % 10);
            ins = num, tpl += 5;
        } else if (strncmp(tpl, "{x}", 3) == 0) {
            snprintf(num, sizeof num, "%d", x);
            ins = num, tpl += 3;
        }
        if (ins) {
            while (*ins && n + 1 < cap)
                out[n++] = *ins++;
        } else {
            out[n++] = *tpl++;
        }
    }
    out[n] = '\0';
}

/* A version-4 UUID as a 2.25 OID (ITU-T X.667): "2.25." and the 128-bit
 * value in decimal, which never has a leading zero. */
static void random_uid(rng *r, char *out, size_t cap)
{
    uint64_t hi = rng_u64(r), lo = rng_u64(r);
    hi = (hi & ~0xF000ull) | 0x4000ull;
    lo = (lo & ~(3ull << 62)) | (2ull << 62);
    uint32_t limb[4] = {(uint32_t)(hi >> 32), (uint32_t)hi, (uint32_t)(lo >> 32), (uint32_t)lo};
    char digits[48];
    int nd = 0;
    for (;;) {
        uint64_t rem = 0;
        int zero = 1;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = rem << 32 | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
            zero &= limb[i] == 0;
        }
        digits[nd++] = (char)('0' + rem);
        if (zero)
            break;
    }
    size_t n = (size_t)snprintf(out, cap, "2.25.");
    while (nd > 0 && n + 1 < cap)
        out[n++] = digits[--nd];
    out[n] = '\0';
}

static void patient_id(const synth *g, uint64_t number, char *out, size_t cap)
{
    if (g->p.stream == 0)
        snprintf(out, cap, "SYN%07llu", (unsigned long long)number);
    else
        snprintf(out, cap, "SYN-Q%u-%07llu", g->p.stream, (unsigned long long)number);
}

/* Case vector: centre + spread * basis . latent + isotropic noise, unit length. */
static void case_vector(synth *g, unsigned cluster, const float *latent, float *out)
{
    size_t dim = g->dim;
    const float *centre = g->centres + cluster * dim, *b = g->basis + (size_t)cluster * LATENT_RANK * dim;
    float iso = (float)(ISO_SCALE / sqrt((double)dim)), spread = g->spread[cluster];
    for (size_t i = 0; i < dim; i++)
        out[i] = centre[i] + iso * (float)rng_gauss(&g->r);
    for (int j = 0; j < LATENT_RANK; j++) {
        float w = spread * latent[j];
        const float *bj = b + j * dim;
        for (size_t i = 0; i < dim; i++)
            out[i] += w * bj[i];
    }
    normalise(out, g->dim);
}

void synth_next(synth *g, synth_case *c, float *image, float *text)
{
    rng *r = &g->r;
    memset(c, 0, sizeof *c);
    c->row = g->row++;

    patient *pt = NULL;
    int32_t day;
    int repeat = g->ring_used > 0 && rng_uniform(r) < REPEAT_SHARE;
    size_t slot = repeat ? rng_below(r, (unsigned)g->ring_used) : 0;
    if (repeat && g->ring[slot].studies < 3) {
        pt = &g->ring[slot];
        /* Follow-up 6 months to 3 years later; earlier if that would pass
         * the end of the archive (the repeat is then the older study). */
        int gap = rng_between(r, 180, 1100);
        day = pt->last_day + gap;
        if (day >= g->day_first + g->day_span)
            day = pt->last_day - gap;
        if (day < g->day_first)
            day = g->day_first;
        pt->last_day = day;
        pt->studies++;
        for (int j = 0; j < LATENT_RANK; j++)
            pt->latent[j] += (float)(REPEAT_DRIFT * rng_gauss(r));
        if (rng_uniform(r) < 0.1) /* referred on to another centre */
            pt->site = pick_cdf(r, g->site_cdf, SYNTH_N_SITES);
    } else {
        pt = &g->ring[g->ring_next];
        g->ring_next = (g->ring_next + 1) % PATIENT_RING;
        if (g->ring_used < PATIENT_RING)
            g->ring_used++;
        memset(pt, 0, sizeof *pt);
        pt->number = ++g->patients;
        pt->cluster = pick_cdf(r, g->cluster_cdf, g->p.n_clusters);
        const diagnosis_profile *dp = &profiles[g->cluster_diagnosis[pt->cluster]];
        pt->sex = rng_uniform(r) < dp->p_male ? 'M' : 'F';
        pt->age0 = clampi((int)lround(dp->age_mean + dp->age_sd * rng_gauss(r)), 16, 92);
        pt->site = pick_cdf(r, g->site_cdf, SYNTH_N_SITES);
        /* Scans per year grow linearly over the archive, tripling from the
         * first year to the last: density 1 + 2t on [0, 1), sampled by
         * inverting its distribution function. */
        double t = (sqrt(1.0 + 8.0 * rng_uniform(r)) - 1.0) / 2.0;
        day = g->day_first + (int32_t)(g->day_span * t);
        if (day >= g->day_first + g->day_span)
            day = g->day_first + g->day_span - 1;
        pt->first_day = pt->last_day = day;
        pt->studies = 1;
        for (int j = 0; j < LATENT_RANK; j++)
            pt->latent[j] = (float)rng_gauss(r);
    }

    unsigned dx = g->cluster_diagnosis[pt->cluster];
    const diagnosis_profile *dp = &profiles[dx];
    patient_id(g, pt->number, c->patient_id, sizeof c->patient_id);
    c->study_date = yyyymmdd_from_days(day);
    c->site = pt->site;
    c->sex = pt->sex;
    c->age = clampi(pt->age0 + (int)floor((day - pt->first_day) / 365.25), 1, 110);
    c->diagnosis = dx;
    c->cluster = pt->cluster;
    c->study_of_patient = pt->studies;
    c->codes[c->n_codes++] = &codes[dx];
    if (dx == 2 && rng_uniform(r) < 0.5)
        c->codes[c->n_codes++] = &codes[CODE_SECONDARY_CM];
    for (int v = 0; v < SYNTH_N_VIEWS; v++)
        if (rng_uniform(r) < view_share[v])
            c->views |= 1u << v;
    int ef = clampi((int)lround(dp->ef_mean + dp->ef_sd * rng_gauss(r)), 10, 80);
    int x = rng_between(r, dp->x_min, dp->x_max);
    expand(c->impression, sizeof c->impression, dp->phrasings[rng_below(r, 3)], ef, x);
    random_uid(r, c->study_uid, sizeof c->study_uid);

    /* Vectors last, always drawn, so the metadata stream does not depend on
     * which vectors the caller wants. */
    float *img = image ? image : g->scratch;
    case_vector(g, pt->cluster, pt->latent, img);
    float noise = (float)(TEXT_SCALE / sqrt((double)g->dim));
    if (text) {
        for (unsigned i = 0; i < g->dim; i++)
            text[i] = img[i] + noise * (float)rng_gauss(r);
        normalise(text, g->dim);
    } else {
        for (unsigned i = 0; i < g->dim; i++)
            (void)rng_gauss(r);
    }
}

void synth_weights_hash(const synth_params *params, char out[SYNTH_HASH_CHARS])
{
    char desc[160];
    uint8_t digest[CMR_SHA256_BYTES];
    int n = snprintf(desc, sizeof desc, "cmrsearch synthetic model v1; dim=%u; clusters=%u; seed=%llu",
                     params->dim ? params->dim : SYNTH_DEFAULT_DIM,
                     params->n_clusters ? params->n_clusters : SYNTH_DEFAULT_CLUSTERS,
                     (unsigned long long)params->seed);
    cmr_sha256_digest(desc, (size_t)n, digest);
    memcpy(out, "sha256:", 7);
    cmr_hex(digest, sizeof digest, out + 7);
}

int synth_parse_u64(const char *opt, const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < lo || v > hi)
        return cmr_fail(CMR_EINVAL, "%s: '%s' is not a number from %" PRIu64 " to %" PRIu64, opt, s,
                        lo, hi);
    *out = v;
    return 0;
}
