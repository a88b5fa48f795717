/* safetensors reading: 8-byte little-endian header length, a JSON header,
 * raw little-endian tensor bytes.  The header is untrusted input: every
 * offset, shape and dtype is checked before a byte of data is touched. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_internal.h"

/* A header larger than this is not a model we wrote or converted. */
#define ST_MAX_HEADER (100u << 20)

static const struct {
    const char *name;
    cmr_dtype dtype;
    size_t size;
} dtypes[] = {
    {"F32", CMR_F32, 4}, {"F16", CMR_F16, 2}, {"BF16", CMR_BF16, 2}, {"I64", CMR_I64, 8}, {"I32", CMR_I32, 4},
    {"F64", CMR_DTYPE_OTHER, 8}, {"I16", CMR_DTYPE_OTHER, 2}, {"I8", CMR_DTYPE_OTHER, 1},
    {"U8", CMR_DTYPE_OTHER, 1}, {"BOOL", CMR_DTYPE_OTHER, 1},
};

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const cmr_st_tensor *)a)->name, ((const cmr_st_tensor *)b)->name);
}

void cmr_st_close(cmr_st_file *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_tensors; i++) {
        free(f->tensors[i].name);
        free(f->tensors[i].widened);
    }
    free(f->tensors);
    if (f->map)
        munmap((void *)f->map, f->map_len);
    free(f->metadata_json);
    free(f->path);
    free(f);
}

static int parse_tensor(cmr_st_file *f, const char *name, json_t *spec, const uint8_t *data, size_t data_len,
                        cmr_st_tensor *t)
{
    json_t *dt = json_object_get(spec, "dtype"), *shape = json_object_get(spec, "shape"),
           *offs = json_object_get(spec, "data_offsets");
    if (!json_is_string(dt) || !json_is_array(shape) || !json_is_array(offs) || json_array_size(offs) != 2)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s: header entry needs dtype, shape and data_offsets[2]", f->path,
                        name);
    size_t elem = 0;
    t->dtype = CMR_DTYPE_OTHER;
    for (size_t i = 0; i < sizeof dtypes / sizeof *dtypes; i++)
        if (!strcmp(json_string_value(dt), dtypes[i].name)) {
            t->dtype = dtypes[i].dtype;
            elem = dtypes[i].size;
        }
    if (!elem)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s: unknown dtype \"%s\"", f->path, name, json_string_value(dt));
    snprintf(t->dtype_name, sizeof t->dtype_name, "%s", json_string_value(dt));
    if (json_array_size(shape) > CMR_ST_MAX_DIMS)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s: %zu dimensions, at most %d supported", f->path, name,
                        json_array_size(shape), CMR_ST_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    size_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        json_t *v = json_array_get(shape, (size_t)d);
        if (!json_is_integer(v) || json_integer_value(v) < 0)
            return cmr_fail(CMR_EFORMAT, "%s: tensor %s: bad shape entry %d", f->path, name, d);
        t->shape[d] = json_integer_value(v);
        if (t->shape[d] && n > SIZE_MAX / (size_t)t->shape[d])
            return cmr_fail(CMR_EFORMAT, "%s: tensor %s: shape overflows", f->path, name);
        n *= (size_t)t->shape[d];
    }
    json_t *b = json_array_get(offs, 0), *e = json_array_get(offs, 1);
    if (!json_is_integer(b) || !json_is_integer(e) || json_integer_value(b) < 0 ||
        json_integer_value(e) < json_integer_value(b) || (uint64_t)json_integer_value(e) > data_len)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s: data_offsets outside the file's %zu data bytes", f->path, name,
                        data_len);
    size_t begin = (size_t)json_integer_value(b), end = (size_t)json_integer_value(e);
    if (n > SIZE_MAX / elem || end - begin != n * elem)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s: %zu bytes of data for %zu %s elements", f->path, name,
                        end - begin, n, t->dtype_name);
    t->n_elems = n;
    t->data = data + begin;
    t->n_bytes = end - begin;
    t->name = strdup(name);
    return t->name ? 0 : cmr_fail(CMR_ENOMEM, "out of memory");
}

int cmr_st_open(const char *path, cmr_st_file **out)
{
    *out = NULL;
    int fd = -1, rc;
    json_t *root = NULL;
    cmr_st_file *f = calloc(1, sizeof *f);
    if (!f || !(f->path = strdup(path))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (st.st_size < 8) {
        rc = cmr_fail(CMR_EFORMAT, "%s: %lld bytes, too short for a safetensors file", path, (long long)st.st_size);
        goto fail;
    }
    f->map_len = (size_t)st.st_size;
    void *map = mmap(NULL, f->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    if (map == MAP_FAILED) {
        rc = cmr_fail(CMR_EIO, "%s: mmap: %s", path, strerror(errno));
        goto fail;
    }
    f->map = map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | f->map[i];
    if (hlen < 2 || hlen > ST_MAX_HEADER || hlen > f->map_len - 8) {
        rc = cmr_fail(CMR_EFORMAT, "%s: header length %llu does not fit the file (%zu bytes): not safetensors", path,
                      (unsigned long long)hlen, f->map_len);
        goto fail;
    }
    json_error_t jerr;
    root = json_loadb((const char *)f->map + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
    if (!root || !json_is_object(root)) {
        rc = cmr_fail(CMR_EFORMAT, "%s: header is not a JSON object (%s at byte %d)", path,
                      root ? "not an object" : jerr.text, root ? 0 : jerr.position);
        goto fail;
    }
    const uint8_t *data = f->map + 8 + hlen;
    size_t data_len = f->map_len - 8 - (size_t)hlen;
    f->tensors = calloc(json_object_size(root) + 1, sizeof *f->tensors);
    if (!f->tensors) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    const char *key;
    json_t *value;
    json_object_foreach(root, key, value)
    {
        if (!strcmp(key, "__metadata__")) {
            if (!json_is_object(value)) {
                rc = cmr_fail(CMR_EFORMAT, "%s: __metadata__ is not an object", path);
                goto fail;
            }
            if (!(f->metadata_json = json_dumps(value, JSON_COMPACT))) {
                rc = cmr_fail(CMR_ENOMEM, "out of memory");
                goto fail;
            }
            continue;
        }
        if (!json_is_object(value)) {
            rc = cmr_fail(CMR_EFORMAT, "%s: header entry %s is not an object", path, key);
            goto fail;
        }
        if ((rc = parse_tensor(f, key, value, data, data_len, &f->tensors[f->n_tensors])) < 0)
            goto fail;
        f->n_tensors++;
    }
    qsort(f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor);
    json_decref(root);
    close(fd);
    *out = f;
    return 0;
fail:
    json_decref(root);
    if (fd >= 0)
        close(fd);
    cmr_st_close(f);
    return rc;
}

const cmr_st_tensor *cmr_st_find(const cmr_st_file *f, const char *name)
{
    cmr_st_tensor key = {.name = (char *)name};
    return bsearch(&key, f->tensors, f->n_tensors, sizeof *f->tensors, cmp_tensor);
}

char *cmr_st_metadata(const cmr_st_file *f, const char *key)
{
    /* Rare and small: parse on demand rather than keep a JSON tree. */
    if (!f->metadata_json)
        return NULL;
    json_t *m = json_loads(f->metadata_json, 0, NULL);
    json_t *v = m ? json_object_get(m, key) : NULL;
    char *r = json_is_string(v) ? strdup(json_string_value(v)) : NULL;
    json_decref(m);
    return r;
}

uint16_t cmr_float_to_half(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, 4);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000);
    uint32_t exp = (bits >> 23) & 0xff, mant = bits & 0x7fffff;
    if (exp == 0xff) /* infinity stays, NaN stays a (quiet) NaN */
        return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 | mant >> 13 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 0x1f)
        return (uint16_t)(sign | 0x7c00);
    if (e <= 0) {
        if (e < -10) /* below half the smallest subnormal */
            return sign;
        uint32_t m = mant | 0x800000, shift = (uint32_t)(14 - e), h = m >> shift, rem = m & ((1u << shift) - 1),
                 half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1)))
            h++; /* a carry into the exponent is the right answer */
        return (uint16_t)(sign | h);
    }
    uint32_t h = (uint32_t)e << 10 | mant >> 13, rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1)))
        h++; /* a carry out of the largest half is infinity, as it should */
    return (uint16_t)(sign | h);
}

static float half_to_float(uint16_t h)
{
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0x1f) {
        bits = sign | 0x7f800000u | mant << 13;
    } else if (exp) {
        bits = sign | (exp + 112) << 23 | mant << 13;
    } else if (!mant) {
        bits = sign;
    } else {
        /* Subnormal half: normalise into a float. */
        int e = -1;
        do {
            mant <<= 1;
            e++;
        } while (!(mant & 0x400));
        bits = sign | (uint32_t)(112 - e) << 23 | (mant & 0x3ff) << 13;
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

static void shape_text(const int64_t *shape, int ndim, char *buf, size_t cap)
{
    size_t n = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && n < cap; d++)
        n += (size_t)snprintf(buf + n, cap - n, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (n < cap)
        snprintf(buf + n, cap - n, "]");
}

int cmr_st_f32(cmr_st_file *f, const char *name, int ndim, const int64_t *shape, const float **out)
{
    *out = NULL;
    cmr_st_tensor *t = (cmr_st_tensor *)cmr_st_find(f, name);
    if (!t)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s is missing", f->path, name);
    int ok = t->ndim == ndim;
    for (int d = 0; ok && d < ndim; d++)
        ok = shape[d] < 0 || shape[d] == t->shape[d];
    if (!ok) {
        char want[128], got[128];
        shape_text(shape, ndim, want, sizeof want);
        shape_text(t->shape, t->ndim, got, sizeof got);
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s has shape %s, expected %s", f->path, name, got, want);
    }
    if (t->dtype != CMR_F32 && t->dtype != CMR_F16 && t->dtype != CMR_BF16)
        return cmr_fail(CMR_EFORMAT, "%s: tensor %s has dtype %s; F32, F16 or BF16 expected", f->path, name,
                        t->dtype_name);
    if (t->dtype == CMR_F32 && ((uintptr_t)t->data & 3) == 0 && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__) {
        *out = (const float *)t->data;
        return 0;
    }
    if (!t->widened) {
        float *w = malloc((t->n_elems ? t->n_elems : 1) * sizeof *w);
        if (!w)
            return cmr_fail(CMR_ENOMEM, "%s: tensor %s: out of memory", f->path, name);
        for (size_t i = 0; i < t->n_elems; i++) {
            if (t->dtype == CMR_F32) {
                memcpy(&w[i], t->data + 4 * i, 4);
            } else {
                uint16_t h = (uint16_t)(t->data[2 * i] | t->data[2 * i + 1] << 8);
                if (t->dtype == CMR_F16) {
                    w[i] = half_to_float(h);
                } else {
                    uint32_t bits = (uint32_t)h << 16;
                    memcpy(&w[i], &bits, 4);
                }
            }
        }
        t->widened = w;
    }
    *out = t->widened;
    return 0;
}

int cmr_st_bind(cmr_st_file *f, const char *prefix, const char *name, int ndim, const int64_t *shape,
                const float **out)
{
    char full[256];
    if (snprintf(full, sizeof full, "%s%s", prefix, name) >= (int)sizeof full)
        return cmr_fail(CMR_EINVAL, "tensor name too long: %s%s", prefix, name);
    return cmr_st_f32(f, full, ndim, shape, out);
}

int cmr_st_write(const char *path, const cmr_st_entry *entries, size_t n, json_t *metadata)
{
    char tmp[4096];
    if (snprintf(tmp, sizeof tmp, "%s.tmp-%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return cmr_fail(CMR_EINVAL, "%s: path too long", path);
    json_t *hdr = json_object();
    size_t offset = 0;
    int rc = 0;
    for (size_t i = 0; i < n && hdr; i++) {
        json_t *shape = json_array();
        size_t count = 1;
        for (int d = 0; d < entries[i].ndim; d++) {
            json_array_append_new(shape, json_integer(entries[i].shape[d]));
            count *= (size_t)entries[i].shape[d];
        }
        size_t bytes = (entries[i].f16 ? 2 : 4) * count;
        json_object_set_new(hdr, entries[i].name,
                            json_pack("{s:s, s:o, s:[I,I]}", "dtype", entries[i].f16 ? "F16" : "F32", "shape", shape,
                                      "data_offsets", (json_int_t)offset, (json_int_t)(offset + bytes)));
        offset += bytes;
    }
    if (hdr && metadata)
        json_object_set(hdr, "__metadata__", metadata);
    char *text = hdr ? json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
    json_decref(hdr);
    if (!text)
        return cmr_fail(CMR_ENOMEM, "%s: cannot build the header", path);
    size_t hlen = strlen(text), padded = (hlen + 7) / 8 * 8;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        free(text);
        return cmr_fail(CMR_EIO, "%s: %s", tmp, strerror(errno));
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++)
        le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int ok = fwrite(le, 1, 8, f) == 8 && fwrite(text, 1, hlen, f) == hlen;
    for (size_t i = hlen; ok && i < padded; i++)
        ok = fputc(' ', f) != EOF;
    for (size_t i = 0; ok && i < n; i++) {
        size_t count = 1;
        for (int d = 0; d < entries[i].ndim; d++)
            count *= (size_t)entries[i].shape[d];
        if (!entries[i].f16) {
            /* Little-endian hosts write the floats as they are. */
            ok = fwrite(entries[i].data, sizeof(float), count, f) == count;
            continue;
        }
        uint8_t buf[4096];
        for (size_t done = 0; ok && done < count;) {
            size_t chunk = count - done < sizeof buf / 2 ? count - done : sizeof buf / 2;
            for (size_t k = 0; k < chunk; k++) {
                uint16_t h = cmr_float_to_half(entries[i].data[done + k]);
                buf[2 * k] = (uint8_t)h;
                buf[2 * k + 1] = (uint8_t)(h >> 8);
            }
            ok = fwrite(buf, 2, chunk, f) == chunk;
            done += chunk;
        }
    }
    free(text);
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
    if (fclose(f) != 0)
        ok = 0;
    if (!ok)
        rc = cmr_fail(CMR_EIO, "%s: write failed: %s", tmp, strerror(errno));
    else if (rename(tmp, path) != 0)
        rc = cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
    if (rc)
        unlink(tmp);
    return rc;
}
