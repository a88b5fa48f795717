#include "cmr_sha256.h"

#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define CMR_SHA_NI 1
#endif

static const uint32_t K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) { return (x >> n) | (x << (32 - n)); }

static void compress(uint32_t s[8], const uint8_t block[64])
{
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)block[4 * i] << 24 | (uint32_t)block[4 * i + 1] << 16 |
               (uint32_t)block[4 * i + 2] << 8 | block[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s[0], b = s[1], c = s[2], d = s[3], e = s[4], f = s[5], g = s[6], h = s[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g; g = f; f = e; e = d + t1;
        d = c; c = b; b = a; a = t1 + t2;
    }
    s[0] += a; s[1] += b; s[2] += c; s[3] += d; s[4] += e; s[5] += f; s[6] += g; s[7] += h;
}

static void compress_blocks_portable(uint32_t s[8], const uint8_t *p, size_t n)
{
    for (; n; n--, p += 64)
        compress(s, p);
}

#ifdef CMR_SHA_NI
/* The SHA extensions (Intel SHA-NI, on x86-64 since Goldmont / Ice Lake /
 * Zen): identifying a 900 MB model at open takes 0.5 s instead of 5.
 * State lives as ABEF / CDGH halves, the layout sha256rnds2 works on;
 * w[g] holds message words 4g..4g+3 of the 64-word schedule in rotation. */
__attribute__((target("sha,sse4.1"))) static void compress_blocks_shani(uint32_t s[8], const uint8_t *p, size_t n)
{
    const __m128i bswap = _mm_set_epi64x(0x0c0d0e0f08090a0bLL, 0x0405060700010203LL);
    __m128i tmp = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[0]), 0xB1); /* CDAB */
    __m128i st1 = _mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)&s[4]), 0x1B); /* EFGH */
    __m128i st0 = _mm_alignr_epi8(tmp, st1, 8);                                      /* ABEF */
    st1 = _mm_blend_epi16(st1, tmp, 0xF0);                                           /* CDGH */
    for (; n; n--, p += 64) {
        __m128i abef = st0, cdgh = st1, w[4], msg;
        for (int g = 0; g < 16; g++) {
            if (g < 4)
                w[g] = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(p + 16 * g)), bswap);
            msg = _mm_add_epi32(w[g & 3], _mm_loadu_si128((const __m128i *)&K[4 * g]));
            st1 = _mm_sha256rnds2_epu32(st1, st0, msg);
            if (g >= 3 && g <= 14) {
                __m128i next = _mm_add_epi32(w[(g + 1) & 3], _mm_alignr_epi8(w[g & 3], w[(g + 3) & 3], 4));
                w[(g + 1) & 3] = _mm_sha256msg2_epu32(next, w[g & 3]);
            }
            st0 = _mm_sha256rnds2_epu32(st0, st1, _mm_shuffle_epi32(msg, 0x0E));
            if (g >= 1 && g <= 12)
                w[(g + 3) & 3] = _mm_sha256msg1_epu32(w[(g + 3) & 3], w[g & 3]);
        }
        st0 = _mm_add_epi32(st0, abef);
        st1 = _mm_add_epi32(st1, cdgh);
    }
    tmp = _mm_shuffle_epi32(st0, 0x1B);  /* FEBA */
    st1 = _mm_shuffle_epi32(st1, 0xB1);  /* DCHG */
    _mm_storeu_si128((__m128i *)&s[0], _mm_blend_epi16(tmp, st1, 0xF0)); /* DCBA */
    _mm_storeu_si128((__m128i *)&s[4], _mm_alignr_epi8(st1, tmp, 8));    /* HGFE */
}

static int have_shani(void)
{
    unsigned a, b, c, d;
    /* SHA (leaf 7 EBX bit 29) plus the SSSE3/SSE4.1 shuffles used around it. */
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !(b & (1u << 29)))
        return 0;
    return __get_cpuid(1, &a, &b, &c, &d) && (c & (1u << 9)) && (c & (1u << 19));
}
#endif

/* -1: not probed yet.  Racing first callers compute the same answer. */
static volatile int use_shani = -1;

int cmr_sha256_accelerated(int enable)
{
#ifdef CMR_SHA_NI
    use_shani = enable && have_shani();
    return use_shani;
#else
    (void)enable;
    return 0;
#endif
}

static void compress_blocks(uint32_t s[8], const uint8_t *p, size_t n)
{
#ifdef CMR_SHA_NI
    if (use_shani < 0)
        use_shani = have_shani();
    if (use_shani) {
        compress_blocks_shani(s, p, n);
        return;
    }
#endif
    compress_blocks_portable(s, p, n);
}

void cmr_sha256_init(cmr_sha256 *ctx)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(ctx->state, iv, sizeof iv);
    ctx->length = 0;
    ctx->used = 0;
}

void cmr_sha256_update(cmr_sha256 *ctx, const void *data, size_t len)
{
    const uint8_t *p = data;
    ctx->length += len;
    if (ctx->used) {
        size_t take = 64 - ctx->used < len ? 64 - ctx->used : len;
        memcpy(ctx->block + ctx->used, p, take);
        ctx->used += take;
        p += take;
        len -= take;
        if (ctx->used < 64)
            return;
        compress_blocks(ctx->state, ctx->block, 1);
        ctx->used = 0;
    }
    compress_blocks(ctx->state, p, len / 64);
    p += len / 64 * 64;
    len %= 64;
    memcpy(ctx->block, p, len);
    ctx->used = len;
}

void cmr_sha256_final(cmr_sha256 *ctx, uint8_t digest[CMR_SHA256_BYTES])
{
    uint64_t bits = ctx->length * 8;
    uint8_t pad = 0x80;
    cmr_sha256_update(ctx, &pad, 1);
    uint8_t zero = 0;
    while (ctx->used != 56)
        cmr_sha256_update(ctx, &zero, 1);
    uint8_t len_be[8];
    for (int i = 0; i < 8; i++)
        len_be[i] = (uint8_t)(bits >> (56 - 8 * i));
    cmr_sha256_update(ctx, len_be, 8);
    for (int i = 0; i < 8; i++) {
        digest[4 * i] = (uint8_t)(ctx->state[i] >> 24);
        digest[4 * i + 1] = (uint8_t)(ctx->state[i] >> 16);
        digest[4 * i + 2] = (uint8_t)(ctx->state[i] >> 8);
        digest[4 * i + 3] = (uint8_t)ctx->state[i];
    }
    memset(ctx, 0, sizeof *ctx);
}

void cmr_sha256_digest(const void *data, size_t len, uint8_t digest[CMR_SHA256_BYTES])
{
    cmr_sha256 ctx;
    cmr_sha256_init(&ctx);
    cmr_sha256_update(&ctx, data, len);
    cmr_sha256_final(&ctx, digest);
}

void cmr_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                     uint8_t mac[CMR_SHA256_BYTES])
{
    uint8_t k[64] = {0}, pad[64], inner[CMR_SHA256_BYTES];
    if (key_len > 64)
        cmr_sha256_digest(key, key_len, k);
    else
        memcpy(k, key, key_len);

    cmr_sha256 ctx;
    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x36;
    cmr_sha256_init(&ctx);
    cmr_sha256_update(&ctx, pad, 64);
    cmr_sha256_update(&ctx, msg, msg_len);
    cmr_sha256_final(&ctx, inner);

    for (int i = 0; i < 64; i++)
        pad[i] = k[i] ^ 0x5c;
    cmr_sha256_init(&ctx);
    cmr_sha256_update(&ctx, pad, 64);
    cmr_sha256_update(&ctx, inner, sizeof inner);
    cmr_sha256_final(&ctx, mac);
    memset(k, 0, sizeof k);
    memset(pad, 0, sizeof pad);
}

void cmr_hex(const uint8_t *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}
