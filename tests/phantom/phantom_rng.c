#include "phantom_rng.h"

#include <math.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void cmr_rng_seed(cmr_rng *r, uint64_t seed, uint64_t stream)
{
    uint64_t x = seed ^ (stream * 0xd1b54a32d192ed03ULL);
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

int cmr_rng_int(cmr_rng *r, int lo, int hi)
{
    if (hi <= lo)
        return lo;
    uint64_t span = (uint64_t)(hi - lo) + 1;
    return lo + (int)(cmr_rng_next(r) % span);
}

int cmr_rng_chance(cmr_rng *r, double p) { return cmr_rng_uniform(r) < p; }

double cmr_rng_normal(cmr_rng *r)
{
    double u1 = cmr_rng_uniform(r), u2 = cmr_rng_uniform(r);
    if (u1 < 1e-300)
        u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

int cmr_rng_weighted(cmr_rng *r, const double *w, int n)
{
    double sum = 0;
    for (int i = 0; i < n; i++)
        sum += w[i];
    double x = cmr_rng_uniform(r) * sum;
    for (int i = 0; i < n; i++) {
        if (x < w[i])
            return i;
        x -= w[i];
    }
    return n - 1;
}

#define NORM_TAB_BITS 12
static float norm_tab[1 << NORM_TAB_BITS];
static int norm_tab_ready;

/* Acklam's rational approximation of the normal quantile. */
static double norm_quantile(double p)
{
    static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                               1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
    static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                               6.680131188771972e+01,  -1.328068155288572e+01};
    static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                               -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
    static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                               3.754408661907416e+00};
    double q, t;
    if (p < 0.02425) {
        q = sqrt(-2 * log(p));
        return (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
               ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    }
    if (p > 1 - 0.02425)
        return -norm_quantile(1 - p);
    q = p - 0.5;
    t = q * q;
    return (((((a[0] * t + a[1]) * t + a[2]) * t + a[3]) * t + a[4]) * t + a[5]) * q /
           (((((b[0] * t + b[1]) * t + b[2]) * t + b[3]) * t + b[4]) * t + 1);
}

void cmr_rng_init_tables(void)
{
    if (norm_tab_ready)
        return;
    int n = 1 << NORM_TAB_BITS;
    for (int i = 0; i < n; i++)
        norm_tab[i] = (float)norm_quantile((i + 0.5) / n);
    norm_tab_ready = 1;
}

float cmr_rng_fast_normal(cmr_rng *r)
{
    uint64_t x = cmr_rng_next(r);
    /* Two table draws summed and rescaled: smooths the 4096-step quantisation. */
    float a = norm_tab[x & ((1u << NORM_TAB_BITS) - 1)];
    float b = norm_tab[(x >> 32) & ((1u << NORM_TAB_BITS) - 1)];
    return (a + b) * 0.70710678f;
}

void cmr_rng_fast_normal2(cmr_rng *r, float sigma, float *a, float *b)
{
    /* 48 of the 64 bits feed four table draws: two deviates per draw halves
     * the generator's share of the noise cost. */
    uint64_t x = cmr_rng_next(r);
    const uint64_t m = (1u << NORM_TAB_BITS) - 1;
    float k = sigma * 0.70710678f;
    *a = (norm_tab[x & m] + norm_tab[(x >> 16) & m]) * k;
    *b = (norm_tab[(x >> 32) & m] + norm_tab[(x >> 48) & m]) * k;
}
