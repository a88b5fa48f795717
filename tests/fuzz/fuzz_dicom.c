/* libFuzzer target for the DICOM reader: every input is written to an
 * in-memory file and given to each entry point that takes a path.  Besides
 * the sanitizers' findings it checks the contract: success gives a complete
 * header, failure gives a message naming the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cmr_dicom.h"

static char g_path[64];
static int g_fd = -1;

static void check_failure(int rc)
{
    if (rc >= 0 || rc < CMR_ERR_MIN_ || !strstr(cmr_errmsg(), g_path)) {
        fprintf(stderr, "bad failure report: rc %d, message \"%s\"\n", rc, cmr_errmsg());
        abort();
    }
}

static void check_header(const cmr_dicom_header *h)
{
    if (h->frames < 0 || (h->frames > 0 && !h->frame) || (h->has_pixel_data && (h->rows <= 0 || h->columns <= 0)))
        abort();
    volatile double sink = 0;
    for (int f = 0; f < h->frames; f++) /* every frame is readable (ASan checks the bounds) */
        sink += h->frame[f].trigger_time + h->frame[f].position[2] + h->frame[f].rescale_slope;
    (void)sink;
    if (memchr(h->study_uid, 0, sizeof h->study_uid) == NULL || memchr(h->photometric, 0, sizeof h->photometric) == NULL)
        abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (g_fd < 0) {
        g_fd = memfd_create("fuzz_dicom", 0);
        if (g_fd < 0)
            abort();
        snprintf(g_path, sizeof g_path, "/proc/self/fd/%d", g_fd);
    }
    if (ftruncate(g_fd, 0) != 0 || (size && pwrite(g_fd, data, size, 0) != (ssize_t)size))
        abort();

    int is_dicom = cmr_dicom_probe(g_path);
    cmr_dicom_header *h = NULL;
    int rc = cmr_dicom_read_header(g_path, &h);
    if (rc == 0) {
        if (!is_dicom)
            abort(); /* read_header must refuse what the probe refuses */
        check_header(h);
        cmr_dicom_header_free(h);
    } else {
        check_failure(rc);
        if (h)
            abort();
    }
    if (!is_dicom)
        return 0;

    float *px = NULL;
    rc = cmr_dicom_read_pixels(g_path, &h, &px);
    if (rc == 0) {
        check_header(h);
        size_t n = (size_t)h->rows * (size_t)h->columns * (size_t)h->frames;
        volatile float sink = 0;
        if (n)
            sink += px[0] + px[n - 1];
        (void)sink;
        free(px);
        cmr_dicom_header_free(h);
    } else {
        check_failure(rc);
        if (px || h)
            abort();
    }

    cmr_sr_report *r = NULL;
    rc = cmr_dicom_read_sr(g_path, &r);
    if (rc == 0) {
        for (size_t i = 0; i < r->n_codes; i++)
            if (!r->codes[i].code || !r->codes[i].system || !r->codes[i].label)
                abort();
        cmr_sr_report_free(r);
    } else {
        check_failure(rc);
    }
    return 0;
}
