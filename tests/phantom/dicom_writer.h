/* A small C interface to DCMTK for building and saving DICOM datasets, and
 * for reading them back in tests.  The only C++ in the phantom lives behind
 * it (dicom_writer.cpp).
 *
 * Values are given as DICOM strings ("1\2" for multiple values) and parsed
 * by DCMTK according to the tag's dictionary VR, so one call covers every
 * VR the phantom writes.  Sequences nest: seq_begin, then item_begin /
 * item_end pairs, then seq_end. */
#ifndef CMR_PHANTOM_DICOM_WRITER_H
#define CMR_PHANTOM_DICOM_WRITER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cmr_dcm cmr_dcm;

enum cmr_dcm_ts {
    CMR_TS_EXPLICIT_LE,
    CMR_TS_IMPLICIT_LE,
    CMR_TS_JPEG_LOSSLESS, /* process 14, selection value 1 */
    CMR_TS_JPEGLS_LOSSLESS,
    CMR_TS_RLE,
    CMR_TS_COUNT
};

extern const char *const cmr_dcm_ts_name[CMR_TS_COUNT];

/* Registers the encoders and decoders once per process (not thread-safe;
 * call before starting worker threads). */
int cmr_dcm_global_init(void);
void cmr_dcm_global_cleanup(void);

int cmr_dcm_new(cmr_dcm **out);
void cmr_dcm_free(cmr_dcm *d);

#define CMR_TAG(g, e) (((uint32_t)(g) << 16) | (uint32_t)(e))

/* An empty value writes a zero-length (type 2) element. */
int cmr_dcm_put(cmr_dcm *d, uint32_t tag, const char *value);
int cmr_dcm_putf(cmr_dcm *d, uint32_t tag, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* A private element with an explicit VR (LO, SH, DS, IS, FL, FD, SS or US;
 * the dictionary does not know vendors' tags); write its creator element
 * (gggg,00xx) first with cmr_dcm_put. */
int cmr_dcm_put_private(cmr_dcm *d, uint32_t tag, const char *vr, const char *value);
int cmr_dcm_seq_begin(cmr_dcm *d, uint32_t tag);
int cmr_dcm_item_begin(cmr_dcm *d);
int cmr_dcm_item_end(cmr_dcm *d);
int cmr_dcm_seq_end(cmr_dcm *d);
/* Sets 16-bit pixel data (OW): count = rows * cols * frames. */
int cmr_dcm_pixels16(cmr_dcm *d, const uint16_t *px, size_t count);

/* Writes a Part 10 file; JPEG-LS of 9-16 bit monochrome goes through the
 * phantom's own encoder (jpegls.h: the same bytes as DCMTK's at a fraction
 * of the cost, see docs/phantom.md), everything else through DCMTK.
 * On return *bytes holds the file size when bytes is not NULL.  JPEG-LS
 * replaces the dataset's uncompressed pixel data by the encoded frames. */
int cmr_dcm_save(cmr_dcm *d, const char *path, int ts, size_t *bytes);

/* cmr_dcm_save with flags: CMR_DCM_DCMTK_JLS encodes JPEG-LS with DCMTK's
 * codec instead (the reference the tests compare the own encoder with). */
enum { CMR_DCM_DCMTK_JLS = 1 };
int cmr_dcm_save_ex(cmr_dcm *d, const char *path, int ts, unsigned flags, size_t *bytes);

/* Reading, for tests: loads a file and decompresses pixel data if needed. */
int cmr_dcm_load(const char *path, cmr_dcm **out);
/* Copies the first-level (or, with a nonzero item path, nested) element
 * value as a string; CMR_ENOTFOUND when absent. */
int cmr_dcm_get(cmr_dcm *d, uint32_t tag, char *buf, size_t n);
/* Searches the whole dataset, sequences included, for the first match. */
int cmr_dcm_find(cmr_dcm *d, uint32_t tag, char *buf, size_t n);
/* Pixel data as 16-bit words owned by d. */
int cmr_dcm_get_pixels16(cmr_dcm *d, const uint16_t **px, size_t *count);
/* Name of the file's transfer syntax UID. */
int cmr_dcm_get_ts(cmr_dcm *d, char *buf, size_t n);

#ifdef __cplusplus
}
#endif

#endif
