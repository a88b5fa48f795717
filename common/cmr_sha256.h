/* SHA-256 and HMAC-SHA-256 (FIPS 180-4, RFC 2104).  Used for patient keys
 * (a keyed hash with the site secret) and for identifying model weights. */
#ifndef CMR_SHA256_H
#define CMR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CMR_SHA256_BYTES 32

typedef struct cmr_sha256 {
    uint32_t state[8];
    uint64_t length;    /* bytes hashed so far */
    uint8_t block[64];
    size_t used;        /* bytes waiting in block */
} cmr_sha256;

void cmr_sha256_init(cmr_sha256 *ctx);
void cmr_sha256_update(cmr_sha256 *ctx, const void *data, size_t len);
void cmr_sha256_final(cmr_sha256 *ctx, uint8_t digest[CMR_SHA256_BYTES]);
void cmr_sha256_digest(const void *data, size_t len, uint8_t digest[CMR_SHA256_BYTES]);

/* The SHA-NI instructions are used when the CPU has them.  enable = 0 forces
 * the portable code (tests run both); returns whether the accelerated code
 * is now in use.  Not for concurrent use with hashing on other threads. */
int cmr_sha256_accelerated(int enable);

void cmr_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                     uint8_t mac[CMR_SHA256_BYTES]);

/* Lower-case hex of n bytes into out (2n+1 bytes including the NUL). */
void cmr_hex(const uint8_t *bytes, size_t n, char *out);

#ifdef __cplusplus
}
#endif

#endif
