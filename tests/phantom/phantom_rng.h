/* Seeded PRNG for the phantom (xoshiro256** seeded by splitmix64).
 *
 * Every study draws from its own stream derived from (seed, study index), so
 * the archive is byte-identical whatever the thread count or order. */
#ifndef CMR_PHANTOM_RNG_H
#define CMR_PHANTOM_RNG_H

#include <stdint.h>

typedef struct cmr_rng {
    uint64_t s[4];
} cmr_rng;

void cmr_rng_seed(cmr_rng *r, uint64_t seed, uint64_t stream);

static inline uint64_t cmr_rng_rotl_(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t cmr_rng_next(cmr_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = cmr_rng_rotl_(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = cmr_rng_rotl_(s[3], 45);
    return result;
}

/* [0, 1) with 53 random bits. */
static inline double cmr_rng_uniform(cmr_rng *r) { return (double)(cmr_rng_next(r) >> 11) * 0x1.0p-53; }

static inline double cmr_rng_range(cmr_rng *r, double lo, double hi) { return lo + (hi - lo) * cmr_rng_uniform(r); }

/* Inclusive range. */
int cmr_rng_int(cmr_rng *r, int lo, int hi);
int cmr_rng_chance(cmr_rng *r, double p);
double cmr_rng_normal(cmr_rng *r);
/* Index drawn with probability proportional to w[i]. */
int cmr_rng_weighted(cmr_rng *r, const double *w, int n);

/* A standard normal deviate from a 12-bit inverse-CDF table: noise for
 * millions of pixels, where Box-Muller would dominate the run time. */
float cmr_rng_fast_normal(cmr_rng *r);
/* Two independent deviates scaled by sigma from one draw. */
void cmr_rng_fast_normal2(cmr_rng *r, float sigma, float *a, float *b);
void cmr_rng_init_tables(void);

#endif
