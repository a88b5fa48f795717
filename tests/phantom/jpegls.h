/* Lossless JPEG-LS (ITU-T T.87) encoder for one-component images.
 *
 * Why the phantom has its own: DCMTK's JPEG-LS codec (CharLS 1.0 behind
 * DicomImage) cost about 80 ns per pixel, a third of the generator's time.
 * This encoder writes the same codestream as DCMTK 3.6.7 does for our images
 * (default parameters, NEAR = 0, P = Bits Stored, no LSE segment), byte for
 * byte, at a fraction of the cost; test_phantom checks the identity against
 * DCMTK and the round trip through DCMTK's decoder. */
#ifndef CMR_PHANTOM_JPEGLS_H
#define CMR_PHANTOM_JPEGLS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes that always suffice for the codestream of a cols x rows image. */
size_t cmr_jls_bound(int cols, int rows, int bits);

/* Encodes px (rows*cols samples, row by row, each < 2^bits; bits 8..16) as a
 * complete JPEG-LS interchange stream (SOI .. EOI) into out, which holds cap
 * bytes (cmr_jls_bound is enough).  *len receives the stream's length.
 * Returns 0, CMR_EINVAL (bad size, bit depth or a sample out of range) or
 * CMR_ENOMEM (out too small, or no memory for the line buffers). */
int cmr_jls_encode(const uint16_t *px, int cols, int rows, int bits, uint8_t *out, size_t cap, size_t *len);

#ifdef __cplusplus
}
#endif

#endif
