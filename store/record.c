/* Case records: validation and the versioned binary encoding described in
 * schema/record-format.md.  A record is a format byte followed by
 * (tag, varint length, bytes) fields; decoders skip tags they do not know, so
 * later versions can add fields without rewriting stores. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_bytebuf.h"
#include "store_internal.h"

/* Version 2 added finding scores (tag 20).  Version 1 records read as
 * records without findings; a record is rewritten as version 2 when the
 * case is next written. */
#define RECORD_VERSION 2u
#define RECORD_VERSION_MIN 1u

enum {
    TAG_STUDY_UID = 1,
    TAG_PATIENT_KEY = 2,
    TAG_STUDY_DATE = 3,
    TAG_SITE = 4,
    TAG_MANUFACTURER = 5,
    TAG_SCANNER_MODEL = 6,
    TAG_FIELD_STRENGTH = 7,
    TAG_SEX = 8,
    TAG_AGE = 9,
    TAG_VIEWS = 10,
    TAG_DIAGNOSIS = 11, /* nested: code, system, label, source as length-prefixed strings */
    TAG_IMPRESSION = 12,
    TAG_IMPRESSION_SOURCE = 13,
    TAG_SOURCE = 14, /* repeated */
    TAG_INGEST_TIME = 15,
    TAG_MODEL_ID = 16,
    TAG_GENERATION = 17,
    TAG_VECTORS = 18,
    TAG_FINGERPRINT = 19,
    TAG_FINDING = 20, /* repeated, nested: varint-prefixed name, float32 LE score */
};

static const char *const view_names[CMR_VIEW_COUNT_] = {
    "cine_sax", "cine_2ch", "cine_3ch", "cine_4ch", "lge_sax", "lge_2ch", "lge_3ch", "lge_4ch",
};

const char *cmr_view_name(uint32_t bit)
{
    for (unsigned i = 0; i < CMR_VIEW_COUNT_; i++)
        if (bit == 1u << i)
            return view_names[i];
    return NULL;
}

int cmr_view_parse(const char *name, uint32_t *bit)
{
    for (unsigned i = 0; i < CMR_VIEW_COUNT_; i++)
        if (name && strcmp(name, view_names[i]) == 0) {
            *bit = 1u << i;
            return 0;
        }
    return cmr_fail(CMR_EINVAL, "unknown view '%s' (expected one of cine_sax, cine_2ch, cine_3ch, "
                                "cine_4ch, lge_sax, lge_2ch, lge_3ch, lge_4ch)",
                    name ? name : "(null)");
}

const char *cmr_space_name(cmr_space space)
{
    return space == CMR_SPACE_IMAGE ? "image" : space == CMR_SPACE_TEXT ? "text" : "?";
}

int cmr_space_parse(const char *name, cmr_space *out)
{
    if (name && strcmp(name, "image") == 0)
        *out = CMR_SPACE_IMAGE;
    else if (name && strcmp(name, "text") == 0)
        *out = CMR_SPACE_TEXT;
    else
        return cmr_fail(CMR_EINVAL, "unknown space '%s' (expected image or text)",
                        name ? name : "(null)");
    return 0;
}

/* ---- validation ----------------------------------------------------------- */

static int valid_date(int32_t d)
{
    if (d == 0)
        return 1;
    int y = d / 10000, m = d / 100 % 100, day = d % 100;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return y >= 1900 && y <= 2200 && m >= 1 && m <= 12 && day >= 1 && day <= mdays[m - 1];
}

static int check_text(const char *s, const char *field, const char *uid)
{
    if (s && strlen(s) > CMR_TEXT_MAX)
        return cmr_fail(CMR_EINVAL, "case %s: %s is longer than %u bytes", uid, field,
                        CMR_TEXT_MAX);
    return 0;
}

int cmr_case_check(const cmr_case *c)
{
    const char *uid = c->study_uid;
    if (!uid || !*uid)
        return cmr_fail(CMR_EINVAL, "case has no Study Instance UID");
    size_t n = strlen(uid);
    if (n > CMR_UID_MAX)
        return cmr_fail(CMR_EINVAL, "Study Instance UID '%.70s...' is longer than %d characters",
                        uid, CMR_UID_MAX);
    /* Leading zeros in components occur in real archives (not strictly valid
     * DICOM) and are accepted; anything but digits and dots is not. */
    for (size_t i = 0; i < n; i++)
        if (!(uid[i] == '.' || (uid[i] >= '0' && uid[i] <= '9')))
            return cmr_fail(CMR_EINVAL, "Study Instance UID '%s' has a character other than "
                                        "digits and dots at position %zu", uid, i + 1);
    if (!valid_date(c->study_date))
        return cmr_fail(CMR_EINVAL, "case %s: study date %d is not a valid YYYYMMDD date", uid,
                        (int)c->study_date);
    if (c->sex != 0 && c->sex != 'F' && c->sex != 'M' && c->sex != 'O')
        return cmr_fail(CMR_EINVAL, "case %s: sex must be F, M, O or unknown", uid);
    if (c->age_years < -1 || c->age_years > 130)
        return cmr_fail(CMR_EINVAL, "case %s: age %d is out of range", uid, c->age_years);
    if (!(c->field_strength >= 0.0f && c->field_strength <= 20.0f))
        return cmr_fail(CMR_EINVAL, "case %s: field strength %g T is out of range", uid,
                        (double)c->field_strength);
    if (c->views >> CMR_VIEW_COUNT_)
        return cmr_fail(CMR_EINVAL, "case %s: unknown view bits 0x%x", uid, (unsigned)c->views);
    for (size_t i = 0; i < c->n_diagnoses; i++) {
        const cmr_diagnosis *d = &c->diagnoses[i];
        if (!d->code || !*d->code)
            return cmr_fail(CMR_EINVAL, "case %s: diagnosis %zu has no code", uid, i + 1);
        if (strlen(d->code) > 64)
            return cmr_fail(CMR_EINVAL, "case %s: diagnosis code '%.20s...' is too long", uid,
                            d->code);
    }
    int rc;
    if ((rc = check_text(c->site, "site", uid)) || (rc = check_text(c->manufacturer, "manufacturer", uid)) ||
        (rc = check_text(c->scanner_model, "scanner model", uid)) ||
        (rc = check_text(c->impression, "impression", uid)) ||
        (rc = check_text(c->impression_source, "impression source", uid)))
        return rc;
    for (size_t i = 0; i < c->n_sources; i++)
        if (!c->sources[i] || (rc = check_text(c->sources[i], "source path", uid)))
            return rc ? rc : cmr_fail(CMR_EINVAL, "case %s: source %zu is NULL", uid, i + 1);
    return cmr_findings_check(c->findings, c->n_findings, uid);
}

int cmr_finding_name_check(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CMR_FINDING_NAME_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!((name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '_'))
            return 0;
    return 1;
}

int cmr_findings_check(const cmr_finding_score *f, size_t n, const char *uid)
{
    if (n > CMR_STORE_FINDINGS_MAX)
        return cmr_fail(CMR_EINVAL, "case %s: %zu finding scores, at most %d", uid, n,
                        CMR_STORE_FINDINGS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (!cmr_finding_name_check(f[i].name))
            return cmr_fail(CMR_EINVAL, "case %s: finding name '%.40s' is not 1 to %d of a-z, 0-9, _",
                            uid, f[i].name ? f[i].name : "(null)", CMR_FINDING_NAME_MAX);
        if (!(f[i].score >= 0.0f && f[i].score <= 1.0f))
            return cmr_fail(CMR_EINVAL, "case %s: finding %s has score %g, outside [0, 1]", uid,
                            f[i].name, (double)f[i].score);
        for (size_t j = 0; j < i; j++)
            if (!strcmp(f[i].name, f[j].name))
                return cmr_fail(CMR_EINVAL, "case %s: finding %s is scored twice", uid, f[i].name);
    }
    return 0;
}

void cmr_case_facet(const cmr_case *c, cmr_facet *f)
{
    memset(f, 0, sizeof *f);
    f->date = c->study_date;
    f->age = (int16_t)c->age_years;
    f->sex = (uint8_t)c->sex;
    f->flags = CMR_FACET_LIVE;
}

/* ---- encoding ------------------------------------------------------------- */

static void put_varint(cmr_bytebuf *b, uint64_t v)
{
    uint8_t tmp[10];
    size_t n = 0;
    do {
        tmp[n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    cmr_bytebuf_put(b, tmp, n);
}

static void put_field(cmr_bytebuf *b, unsigned tag, const void *data, size_t n)
{
    uint8_t t = (uint8_t)tag;
    cmr_bytebuf_put(b, &t, 1);
    put_varint(b, n);
    cmr_bytebuf_put(b, data, n);
}

static void put_str(cmr_bytebuf *b, unsigned tag, const char *s)
{
    if (s)
        put_field(b, tag, s, strlen(s));
}

static void put_le(cmr_bytebuf *b, unsigned tag, uint64_t v, size_t bytes)
{
    uint8_t tmp[8];
    for (size_t i = 0; i < bytes; i++)
        tmp[i] = (uint8_t)(v >> (8 * i));
    put_field(b, tag, tmp, bytes);
}

int cmr_record_encode(const cmr_case *c, uint8_t **out, size_t *len)
{
    cmr_bytebuf b = {0};
    uint8_t version = RECORD_VERSION;
    cmr_bytebuf_put(&b, &version, 1);
    put_str(&b, TAG_STUDY_UID, c->study_uid);
    if (c->has_patient_key)
        put_field(&b, TAG_PATIENT_KEY, c->patient_key, CMR_PATIENT_KEY_BYTES);
    put_le(&b, TAG_STUDY_DATE, (uint32_t)c->study_date, 4);
    put_str(&b, TAG_SITE, c->site);
    put_str(&b, TAG_MANUFACTURER, c->manufacturer);
    put_str(&b, TAG_SCANNER_MODEL, c->scanner_model);
    uint32_t fs;
    memcpy(&fs, &c->field_strength, 4);
    put_le(&b, TAG_FIELD_STRENGTH, fs, 4);
    put_le(&b, TAG_SEX, (uint8_t)c->sex, 1);
    put_le(&b, TAG_AGE, (uint16_t)(int16_t)c->age_years, 2);
    put_le(&b, TAG_VIEWS, c->views, 4);
    for (size_t i = 0; i < c->n_diagnoses; i++) {
        const cmr_diagnosis *d = &c->diagnoses[i];
        cmr_bytebuf nested = {0};
        const char *parts[4] = {d->code, d->system, d->label, d->source};
        for (int j = 0; j < 4; j++) {
            size_t n = parts[j] ? strlen(parts[j]) : 0;
            put_varint(&nested, n);
            if (n)
                cmr_bytebuf_put(&nested, parts[j], n);
        }
        if (nested.failed)
            b.failed = 1;
        else
            put_field(&b, TAG_DIAGNOSIS, nested.p, nested.len);
        free(nested.p);
    }
    put_str(&b, TAG_IMPRESSION, c->impression);
    put_str(&b, TAG_IMPRESSION_SOURCE, c->impression_source);
    for (size_t i = 0; i < c->n_sources; i++)
        put_str(&b, TAG_SOURCE, c->sources[i]);
    put_le(&b, TAG_INGEST_TIME, (uint64_t)c->ingest_time, 8);
    put_str(&b, TAG_MODEL_ID, c->model_id);
    put_le(&b, TAG_GENERATION, c->generation, 8);
    put_le(&b, TAG_VECTORS, c->vectors, 4);
    if (c->has_fingerprint)
        put_field(&b, TAG_FINGERPRINT, c->fingerprint, sizeof c->fingerprint);
    for (size_t i = 0; i < c->n_findings; i++) {
        uint8_t tmp[1 + CMR_FINDING_NAME_MAX + 4];
        size_t n = strlen(c->findings[i].name);
        uint32_t bits;
        memcpy(&bits, &c->findings[i].score, 4);
        tmp[0] = (uint8_t)n; /* names are at most 31 bytes: a one-byte varint */
        memcpy(tmp + 1, c->findings[i].name, n);
        for (int j = 0; j < 4; j++)
            tmp[1 + n + j] = (uint8_t)(bits >> (8 * j));
        put_field(&b, TAG_FINDING, tmp, n + 5);
    }
    if (b.failed) {
        free(b.p);
        return cmr_fail(CMR_ENOMEM, "out of memory encoding case %s", c->study_uid);
    }
    *out = b.p;
    *len = b.len;
    return 0;
}

/* ---- decoding ------------------------------------------------------------- */

typedef struct reader {
    const uint8_t *p, *end;
} reader;

static int get_varint(reader *r, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (r->p >= r->end)
            return -1;
        uint8_t byte = *r->p++;
        *v |= (uint64_t)(byte & 0x7f) << shift;
        if (!(byte & 0x80))
            return 0;
    }
    return -1;
}

static int next_field(reader *r, unsigned *tag, reader *value)
{
    if (r->p >= r->end)
        return 0;
    *tag = *r->p++;
    uint64_t n;
    if (get_varint(r, &n) || n > (uint64_t)(r->end - r->p))
        return -1;
    value->p = r->p;
    value->end = r->p + n;
    r->p += n;
    return 1;
}

static uint64_t get_le(const reader *v)
{
    uint64_t x = 0;
    size_t n = (size_t)(v->end - v->p);
    for (size_t i = 0; i < n && i < 8; i++)
        x |= (uint64_t)v->p[i] << (8 * i);
    return x;
}

/* The decoded case lives in one allocation: the struct, the diagnosis and
 * source arrays, then every string.  Pass one sizes it, pass two fills it. */
typedef struct arena {
    char *next;
} arena;

static const char *arena_str(arena *a, const reader *v)
{
    size_t n = (size_t)(v->end - v->p);
    char *s = a->next;
    memcpy(s, v->p, n);
    s[n] = '\0';
    a->next += n + 1;
    return s;
}

static int decode_diagnosis(reader v, arena *a, cmr_diagnosis *d, size_t *bytes)
{
    const char **parts[4] = {d ? &d->code : NULL, d ? &d->system : NULL, d ? &d->label : NULL,
                             d ? &d->source : NULL};
    for (int j = 0; j < 4; j++) {
        uint64_t n;
        if (get_varint(&v, &n) || n > (uint64_t)(v.end - v.p))
            return -1;
        reader s = {v.p, v.p + n};
        if (bytes)
            *bytes += n + 1;
        if (d)
            *parts[j] = n || j == 0 ? arena_str(a, &s) : NULL;
        v.p += n;
    }
    return 0;
}

int cmr_record_decode(const void *data, size_t len, uint64_t id, cmr_case **out)
{
    reader r = {data, (const uint8_t *)data + len};
    if (len < 1)
        return cmr_fail(CMR_ECORRUPT, "case %llu: empty record", (unsigned long long)id);
    if (r.p[0] < RECORD_VERSION_MIN || r.p[0] > RECORD_VERSION)
        return cmr_fail(r.p[0] > RECORD_VERSION ? CMR_EUNSUPPORTED : CMR_ECORRUPT,
                        "case %llu: record format %u is not supported by this version (%u to %u)",
                        (unsigned long long)id, r.p[0], RECORD_VERSION_MIN, RECORD_VERSION);
    r.p++;

    size_t n_dx = 0, n_src = 0, n_find = 0, bytes = 0;
    reader scan = r, v;
    unsigned tag;
    int more;
    while ((more = next_field(&scan, &tag, &v)) > 0) {
        size_t n = (size_t)(v.end - v.p);
        switch (tag) {
        case TAG_DIAGNOSIS:
            n_dx++;
            if (decode_diagnosis(v, NULL, NULL, &bytes))
                more = -1;
            break;
        case TAG_SOURCE: n_src++; /* fall through */
        case TAG_STUDY_UID: case TAG_SITE: case TAG_MANUFACTURER: case TAG_SCANNER_MODEL:
        case TAG_IMPRESSION: case TAG_IMPRESSION_SOURCE: case TAG_MODEL_ID:
            bytes += n + 1;
            break;
        case TAG_PATIENT_KEY:
        case TAG_FINGERPRINT:
            if (n != 32)
                more = -1;
            break;
        case TAG_FINDING:
            if (n < 6 || v.p[0] != n - 5 || v.p[0] > CMR_FINDING_NAME_MAX)
                more = -1;
            n_find++;
            bytes += n - 4; /* the name and its NUL */
            break;
        default: break;
        }
        if (more < 0)
            break;
    }
    if (more < 0)
        return cmr_fail(CMR_ECORRUPT, "case %llu: record is truncated or malformed",
                        (unsigned long long)id);

    size_t size = sizeof(cmr_case) + n_dx * sizeof(cmr_diagnosis) + n_find * sizeof(cmr_finding_score) +
                  n_src * sizeof(char *) + bytes;
    cmr_case *c = calloc(1, size);
    if (!c)
        return cmr_fail(CMR_ENOMEM, "out of memory decoding case %llu", (unsigned long long)id);
    cmr_diagnosis *dx = (cmr_diagnosis *)(c + 1);
    cmr_finding_score *find = (cmr_finding_score *)(dx + n_dx);
    const char **src = (const char **)(find + n_find);
    arena a = {(char *)(src + n_src)};
    c->id = id;
    c->age_years = -1;
    c->diagnoses = dx;
    c->sources = src;
    c->findings = find;
    while (next_field(&r, &tag, &v) > 0) {
        switch (tag) {
        case TAG_STUDY_UID: c->study_uid = arena_str(&a, &v); break;
        case TAG_PATIENT_KEY:
            memcpy(c->patient_key, v.p, CMR_PATIENT_KEY_BYTES);
            c->has_patient_key = 1;
            break;
        case TAG_STUDY_DATE: c->study_date = (int32_t)(uint32_t)get_le(&v); break;
        case TAG_SITE: c->site = arena_str(&a, &v); break;
        case TAG_MANUFACTURER: c->manufacturer = arena_str(&a, &v); break;
        case TAG_SCANNER_MODEL: c->scanner_model = arena_str(&a, &v); break;
        case TAG_FIELD_STRENGTH: {
            uint32_t bits = (uint32_t)get_le(&v);
            memcpy(&c->field_strength, &bits, 4);
            break;
        }
        case TAG_SEX: c->sex = (char)get_le(&v); break;
        case TAG_AGE: c->age_years = (int16_t)(uint16_t)get_le(&v); break;
        case TAG_VIEWS: c->views = (uint32_t)get_le(&v); break;
        case TAG_DIAGNOSIS: decode_diagnosis(v, &a, &dx[c->n_diagnoses++], NULL); break;
        case TAG_IMPRESSION: c->impression = arena_str(&a, &v); break;
        case TAG_IMPRESSION_SOURCE: c->impression_source = arena_str(&a, &v); break;
        case TAG_SOURCE: src[c->n_sources++] = arena_str(&a, &v); break;
        case TAG_INGEST_TIME: c->ingest_time = (int64_t)get_le(&v); break;
        case TAG_MODEL_ID: c->model_id = arena_str(&a, &v); break;
        case TAG_GENERATION: c->generation = get_le(&v); break;
        case TAG_VECTORS: c->vectors = (uint32_t)get_le(&v); break;
        case TAG_FINGERPRINT:
            memcpy(c->fingerprint, v.p, sizeof c->fingerprint);
            c->has_fingerprint = 1;
            break;
        case TAG_FINDING: {
            reader name = {v.p + 1, v.end - 4}, score = {v.end - 4, v.end};
            uint32_t bits = (uint32_t)get_le(&score);
            cmr_finding_score *fs = &find[c->n_findings++];
            fs->name = arena_str(&a, &name);
            memcpy(&fs->score, &bits, 4);
            break;
        }
        default: break; /* a field from a later minor version */
        }
    }
    if (!c->study_uid) {
        free(c);
        return cmr_fail(CMR_ECORRUPT, "case %llu: record has no Study Instance UID",
                        (unsigned long long)id);
    }
    *out = c;
    return 0;
}

void cmr_case_free(cmr_case *c) { free(c); }

int cmr_vector_normalise(const float *in, unsigned dim, float *out, const char *what)
{
    double sum = 0;
    for (unsigned i = 0; i < dim; i++) {
        if (!isfinite(in[i]))
            return cmr_fail(CMR_EINVAL, "%s: component %u is not finite", what, i);
        sum += (double)in[i] * in[i];
    }
    if (!(sum > 1e-30))
        return cmr_fail(CMR_EINVAL, "%s: vector is zero", what);
    double inv = 1.0 / sqrt(sum);
    for (unsigned i = 0; i < dim; i++)
        out[i] = (float)(in[i] * inv);
    return 0;
}
