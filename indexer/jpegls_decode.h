/* Lossless JPEG-LS (ITU-T T.87) decoding of the common case, internal to
 * the indexer.
 *
 * Why not only DCMTK's: CharLS 1.0 (inside DCMTK 3.6.7) was a quarter of
 * the indexer's CPU on a JPEG-LS archive.  This decoder takes the streams
 * that make up nearly every MR archive (one component, NEAR = 0, 8 to 16
 * bits, MAXVAL 2^bits - 1, default or stated thresholds, no restart
 * intervals, no point transform) and says "not mine" for everything else,
 * which then goes to DCMTK as before.  It yields the samples CharLS yields:
 * test_dicom decodes files both ways and compares them, and the decoder is
 * fuzzed through the DICOM entry point. */
#ifndef CMR_JPEGLS_DECODE_H
#define CMR_JPEGLS_DECODE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cmr_jls_info {
    int cols, rows, bits;
} cmr_jls_info;

enum {
    CMR_JLS_OK = 0,
    CMR_JLS_NOT_MINE = 1, /* a valid stream this decoder does not take: use another */
    CMR_JLS_BAD = 2,      /* malformed or inconsistent (another decoder will say how) */
    CMR_JLS_NOMEM = 3,
};

/* Reads the frame header of the stream in data[0 .. len): size, precision,
 * and whether cmr_jls_decode takes it. */
int cmr_jls_probe(const uint8_t *data, size_t len, cmr_jls_info *info);

/* Decodes the stream into out: rows*cols samples, row by row, as uint16_t
 * when cell_bytes is 2, uint8_t when 1 (the precision must then be 8).
 * `want` gives the size the caller expects (from the DICOM header) and the
 * most bits a sample may have (the cell's: DCMTK's encoder writes 10- or
 * 12-bit samples in 16-bit cells at precision 16); another size or a higher
 * precision is CMR_JLS_BAD.  Returns one of the codes above. */
int cmr_jls_decode(const uint8_t *data, size_t len, const cmr_jls_info *want, void *out, int cell_bytes);

#ifdef __cplusplus
}
#endif

#endif
