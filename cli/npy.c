/* Reading NumPy .npy files (format 1.0, 2.0, 3.0) of float vectors.
 *
 * Vectors arrive from Python (CMR-CLIP run on a GPU), so the reader accepts
 * what np.save writes for float32, and also float64 (NumPy's default dtype,
 * an easy slip) and float16 (common for GPU inference), converting both.
 * Big-endian, integer, structured and Fortran-ordered arrays are refused
 * with a message saying how to re-save the file. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cmr_cli.h"

#define NPY_MAGIC "\x93NUMPY"
#define NPY_MAGIC_LEN 6
#define NPY_MAX_DIMS 8

typedef struct npy_header {
    char descr[32];
    int have_descr, have_order, have_shape;
    int fortran_order;
    int ndim;
    uint64_t shape[NPY_MAX_DIMS];
} npy_header;

/* A cursor over the header, a Python dict literal such as
 * {'descr': '<f4', 'fortran_order': False, 'shape': (3, 512), } */
typedef struct cursor {
    const char *name;
    const char *p, *end;
} cursor;

static void skip_space(cursor *c)
{
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r'))
        c->p++;
}

static int header_error(const cursor *c, const char *what)
{
    return cmr_fail(CMR_EFORMAT, "%s: malformed .npy header: %s", c->name, what);
}

static int expect(cursor *c, char ch)
{
    skip_space(c);
    if (c->p >= c->end || *c->p != ch) {
        char what[40];
        snprintf(what, sizeof what, "expected '%c'", ch);
        return header_error(c, what);
    }
    c->p++;
    return 0;
}

static int parse_string(cursor *c, char *out, size_t cap)
{
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"'))
        return header_error(c, "expected a quoted string");
    char quote = *c->p++;
    size_t n = 0;
    while (c->p < c->end && *c->p != quote) {
        if (n + 1 >= cap)
            return header_error(c, "string too long");
        out[n++] = *c->p++;
    }
    if (c->p >= c->end)
        return header_error(c, "unterminated string");
    c->p++;
    out[n] = '\0';
    return 0;
}

static int parse_shape(cursor *c, npy_header *h)
{
    int rc = expect(c, '(');
    if (rc)
        return rc;
    h->ndim = 0;
    for (;;) {
        skip_space(c);
        if (c->p < c->end && *c->p == ')') {
            c->p++;
            break;
        }
        if (c->p >= c->end || *c->p < '0' || *c->p > '9')
            return header_error(c, "shape must be a tuple of whole numbers");
        uint64_t v = 0;
        while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
            if (v > (UINT64_MAX - 9) / 10)
                return header_error(c, "shape value too large");
            v = v * 10 + (uint64_t)(*c->p++ - '0');
        }
        if (c->p < c->end && *c->p == 'L') /* Python 2 long suffix */
            c->p++;
        if (h->ndim == NPY_MAX_DIMS)
            return header_error(c, "too many dimensions");
        h->shape[h->ndim++] = v;
        skip_space(c);
        if (c->p < c->end && *c->p == ',')
            c->p++;
    }
    h->have_shape = 1;
    return 0;
}

static int parse_value_skip(cursor *c)
{
    /* A key we do not know: skip a simple literal so later keys still parse. */
    skip_space(c);
    int depth = 0;
    while (c->p < c->end) {
        char ch = *c->p;
        if (ch == '\'' || ch == '"') {
            char tmp[256];
            int rc = parse_string(c, tmp, sizeof tmp);
            if (rc)
                return rc;
            continue;
        }
        if (ch == '(' || ch == '[' || ch == '{')
            depth++;
        else if (ch == ')' || ch == ']' || ch == '}') {
            if (depth == 0)
                return 0;
            depth--;
        } else if (ch == ',' && depth == 0)
            return 0;
        c->p++;
    }
    return header_error(c, "unterminated value");
}

static int parse_header_dict(const char *name, const char *text, size_t len, npy_header *h)
{
    cursor c = {name, text, text + len};
    memset(h, 0, sizeof *h);
    int rc = expect(&c, '{');
    if (rc)
        return rc;
    for (;;) {
        skip_space(&c);
        if (c.p < c.end && *c.p == '}')
            break;
        char key[64];
        if ((rc = parse_string(&c, key, sizeof key)) || (rc = expect(&c, ':')))
            return rc;
        skip_space(&c);
        if (!strcmp(key, "descr")) {
            if (c.p < c.end && (*c.p == '[' || *c.p == '('))
                return cmr_fail(CMR_EFORMAT, "%s: holds a structured array; cmrsearch needs a "
                                             "plain float32 array (N, D)", name);
            if ((rc = parse_string(&c, h->descr, sizeof h->descr)))
                return rc;
            h->have_descr = 1;
        } else if (!strcmp(key, "fortran_order")) {
            if ((size_t)(c.end - c.p) >= 4 && !strncmp(c.p, "True", 4)) {
                h->fortran_order = 1;
                c.p += 4;
            } else if ((size_t)(c.end - c.p) >= 5 && !strncmp(c.p, "False", 5)) {
                c.p += 5;
            } else {
                return header_error(&c, "fortran_order must be True or False");
            }
            h->have_order = 1;
        } else if (!strcmp(key, "shape")) {
            if ((rc = parse_shape(&c, h)))
                return rc;
        } else if ((rc = parse_value_skip(&c))) {
            return rc;
        }
        skip_space(&c);
        if (c.p < c.end && *c.p == ',') {
            c.p++;
            continue;
        }
        if ((rc = expect(&c, '}')))
            return rc;
        break;
    }
    if (!h->have_descr || !h->have_order || !h->have_shape)
        return cmr_fail(CMR_EFORMAT, "%s: .npy header lacks '%s'", name,
                        !h->have_descr ? "descr" : !h->have_order ? "fortran_order" : "shape");
    return 0;
}

static float half_to_float(uint16_t h)
{
    int sign = h >> 15, exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
    float v;
    if (exponent == 0)
        v = ldexpf((float)mantissa, -24);
    else if (exponent == 31)
        v = mantissa ? NAN : INFINITY;
    else
        v = ldexpf((float)(mantissa | 0x400), exponent - 25);
    return sign ? -v : v;
}

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t le64(const uint8_t *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

static int host_is_little_endian(void)
{
    const uint16_t one = 1;
    uint8_t first;
    memcpy(&first, &one, 1);
    return first == 1;
}

/* Parse bytes; when borrow is set, '<f4' data that can be used in place is
 * not copied (the caller keeps the bytes alive). */
static int parse(const char *name, const uint8_t *bytes, size_t len, int borrow, cmr_npy *out)
{
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(bytes, NPY_MAGIC, NPY_MAGIC_LEN) != 0)
        return cmr_fail(CMR_EFORMAT, "%s: not a NumPy .npy file (no \\x93NUMPY magic)", name);
    unsigned major = bytes[6];
    size_t header_len, header_start;
    if (major == 1) {
        header_len = (size_t)bytes[8] | (size_t)bytes[9] << 8;
        header_start = 10;
    } else if (major == 2 || major == 3) {
        if (len < 12)
            return cmr_fail(CMR_EFORMAT, "%s: truncated .npy header", name);
        header_len = le32(bytes + 8);
        header_start = 12;
    } else {
        return cmr_fail(CMR_EFORMAT, "%s: .npy format version %u.%u is not supported (1.0, 2.0 "
                                     "and 3.0 are)", name, major, bytes[7]);
    }
    if (header_len > len - header_start)
        return cmr_fail(CMR_EFORMAT, "%s: truncated .npy header (%zu bytes announced, %zu present)",
                        name, header_len, len - header_start);
    npy_header h;
    int rc = parse_header_dict(name, (const char *)bytes + header_start, header_len, &h);
    if (rc)
        return rc;

    size_t item;
    if (!strcmp(h.descr, "<f4"))
        item = 4;
    else if (!strcmp(h.descr, "<f8"))
        item = 8;
    else if (!strcmp(h.descr, "<f2"))
        item = 2;
    else
        return cmr_fail(CMR_EFORMAT, "%s: dtype '%s' is not supported: vectors must be "
                                     "little-endian float32 ('<f4'; '<f8' and '<f2' are "
                                     "converted); re-save with arr.astype('<f4')", name, h.descr);
    if (h.ndim < 1 || h.ndim > 2) {
        char shape[160] = "(";
        for (int i = 0; i < h.ndim; i++) {
            size_t used = strlen(shape);
            snprintf(shape + used, sizeof shape - used, "%s%llu", i ? ", " : "",
                     (unsigned long long)h.shape[i]);
        }
        strncat(shape, h.ndim == 1 ? ",)" : ")", sizeof shape - strlen(shape) - 1);
        return cmr_fail(CMR_EFORMAT, "%s: array has %d dimensions, shape %s; expected 2, "
                                     "shape (N, D)", name, h.ndim, shape);
    }
    uint64_t rows = h.ndim == 2 ? h.shape[0] : 1, cols = h.shape[h.ndim - 1];
    if (cols == 0)
        return cmr_fail(CMR_EFORMAT, "%s: vectors have dimension 0", name);
    /* A Fortran-ordered matrix with one row or column has the C layout. */
    if (h.fortran_order && rows > 1 && cols > 1)
        return cmr_fail(CMR_EFORMAT, "%s: array is in Fortran (column-major) order; re-save it "
                                     "with np.ascontiguousarray(arr)", name);
    if (rows > SIZE_MAX / cols / item)
        return cmr_fail(CMR_EFORMAT, "%s: shape (%llu, %llu) is too large", name,
                        (unsigned long long)rows, (unsigned long long)cols);
    size_t count = (size_t)(rows * cols), need = count * item;
    size_t data_start = header_start + header_len, have = len - data_start;
    if (have < need)
        return cmr_fail(CMR_EFORMAT, "%s: truncated: shape (%llu, %llu) of %s needs %zu bytes of "
                                     "data, the file has %zu", name, (unsigned long long)rows,
                        (unsigned long long)cols, h.descr, need, have);
    if (have > need)
        return cmr_fail(CMR_EFORMAT, "%s: %zu bytes follow the (%llu, %llu) array; the file is "
                                     "not what its header says", name, have - need,
                        (unsigned long long)rows, (unsigned long long)cols);

    out->rows = (size_t)rows;
    out->cols = (size_t)cols;
    out->ndim = h.ndim;
    snprintf(out->descr, sizeof out->descr, "%s", h.descr);
    const uint8_t *data = bytes + data_start;
    if (item == 4 && borrow && host_is_little_endian() && ((uintptr_t)data % sizeof(float)) == 0) {
        out->data = (const float *)(const void *)data;
        return 0;
    }
    if (!(out->owned = malloc(count ? count * sizeof(float) : 1)))
        return cmr_fail(CMR_ENOMEM, "%s: out of memory for %zu values", name, count);
    for (size_t i = 0; i < count; i++) {
        if (item == 4) {
            uint32_t u = le32(data + 4 * i);
            memcpy(&out->owned[i], &u, 4);
        } else if (item == 8) {
            uint64_t u = le64(data + 8 * i);
            double d;
            memcpy(&d, &u, 8);
            out->owned[i] = (float)d;
        } else {
            out->owned[i] = half_to_float((uint16_t)(data[2 * i] | data[2 * i + 1] << 8));
        }
    }
    out->data = out->owned;
    return 0;
}

int cmr_npy_parse(const char *name, const void *bytes, size_t len, cmr_npy *out)
{
    return parse(name, bytes, len, 0, out);
}

int cmr_npy_read(const char *path, cmr_npy *out)
{
    memset(out, 0, sizeof *out);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cmr_fail(CMR_EIO, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cmr_fail(CMR_EFORMAT, "%s: not a regular file", path);
    }
    size_t len = (size_t)st.st_size;
    if (len < 10) {
        close(fd);
        return cmr_fail(CMR_EFORMAT, "%s: not a NumPy .npy file (%zu bytes)", path, len);
    }
    /* Mapped rather than read: import files can be gigabytes, and float32
     * rows are then used in place without a copy. */
    void *map = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
    int e = errno;
    close(fd);
    if (map == MAP_FAILED)
        return cmr_fail(CMR_EIO, "%s: cannot map: %s", path, strerror(e));
    int rc = parse(path, map, len, 1, out);
    if (rc || out->owned) {
        munmap(map, len);
        return rc;
    }
    out->map = map;
    out->map_len = len;
    return 0;
}

void cmr_npy_free(cmr_npy *npy)
{
    if (!npy)
        return;
    if (npy->map)
        munmap(npy->map, npy->map_len);
    free(npy->owned);
    memset(npy, 0, sizeof *npy);
}

int cmr_npy_check_rows(const char *name, const cmr_npy *npy, size_t *bad_row)
{
    for (size_t r = 0; r < npy->rows; r++) {
        const float *row = npy->data + r * npy->cols;
        int nonzero = 0;
        *bad_row = r;
        for (size_t c = 0; c < npy->cols; c++) {
            if (!isfinite(row[c]))
                return cmr_fail(CMR_EFORMAT, "%s: row %zu, column %zu: value %s is not finite%s",
                                name, r, c, isnan(row[c]) ? "NaN" : row[c] > 0 ? "+inf" : "-inf",
                                strcmp(npy->descr, "<f4") ? " (as float32)" : "");
            nonzero |= row[c] != 0.0f;
        }
        if (!nonzero)
            return cmr_fail(CMR_EFORMAT, "%s: row %zu is all zeros (a vector needs a direction)",
                            name, r);
    }
    return 0;
}
