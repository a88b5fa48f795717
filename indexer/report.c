/* Reports: the parts shared by the readers in report_*.c (string helpers, the
 * report under construction, codes), format sniffing, reading files and DICOM
 * SR conversion.  See cmr_report.h, report_internal.h and docs/reports.md. */
#include "report_internal.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

/* ---- small string helpers ------------------------------------------------------- */

char *rpt_dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

char *rpt_dup0(const char *s) { return s ? rpt_dupn(s, strlen(s)) : NULL; }

static int nonblank(const char *s)
{
    if (s)
        for (; *s; s++)
            if (!rpt_is_space((unsigned char)*s))
                return 1;
    return 0;
}

/* Trimmed copy; NULL for NULL or blank. */
char *rpt_dup_trim(const char *s)
{
    if (!s)
        return NULL;
    while (rpt_is_space((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && rpt_is_space((unsigned char)s[n - 1]))
        n--;
    return n ? rpt_dupn(s, n) : NULL;
}

static char *vfmt(const char *fmt, va_list ap)
{
    va_list aq;
    va_copy(aq, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s)
        vsnprintf(s, (size_t)n + 1, fmt, aq);
    va_end(aq);
    return s;
}

char *rpt_fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = vfmt(f, ap);
    va_end(ap);
    return s;
}

/* A DICOM UI value: digit runs separated by single dots, at most 64 chars. */
int rpt_valid_uid(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_UID || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '.') {
            if (s[i + 1] == '.')
                return 0;
        } else if (s[i] < '0' || s[i] > '9') {
            return 0;
        }
    }
    return 1;
}

/* Accession Number is DICOM SH: at most 16 characters, no backslash or controls. */
int rpt_valid_accession(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > MAX_ACCESSION)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == '\\' || s[i] == 0x7f)
            return 0;
    return 1;
}

/* ---- growable text ---------------------------------------------------------------- */

void rpt_sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom || n == 0)
        return;
    b->glue = 0;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void rpt_sb_newline(sbuf *b)
{
    if (b->glue) {
        b->glue = 0;
        b->space = 1;
        return;
    }
    b->space = 0;
    if (!rpt_sb_at_line_start(b))
        rpt_sb_add(b, "\n", 1);
}

/* Visible text, white space collapsed (U+00A0 counts as space). */
void rpt_sb_text(sbuf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        size_t ws = 0;
        if (rpt_is_space(*u))
            ws = 1;
        else if (u[0] == 0xC2 && u[1] == 0xA0)
            ws = 2;
        if (ws) {
            b->space = 1;
            u += ws;
            continue;
        }
        const unsigned char *start = u;
        while (*u && !rpt_is_space(*u) && !(u[0] == 0xC2 && u[1] == 0xA0))
            u++;
        if (b->space && !rpt_sb_at_line_start(b) && b->p[b->n - 1] != ' ')
            rpt_sb_add(b, " ", 1);
        b->space = 0;
        rpt_sb_add(b, (const char *)start, (size_t)(u - start));
    }
}

/* The text, or NULL when empty; trailing white space and newlines dropped. */
char *rpt_sb_take(sbuf *b)
{
    while (b->n && rpt_is_space((unsigned char)b->p[b->n - 1]))
        b->n--;
    if (b->oom || b->n == 0) {
        free(b->p);
        memset(b, 0, sizeof *b);
        return NULL;
    }
    b->p[b->n] = '\0';
    char *s = b->p;
    memset(b, 0, sizeof *b);
    return s;
}

/* ---- the report under construction ------------------------------------------------ */

/* Warnings are advisory: one that cannot be stored (no memory, too many) is dropped. */
void rpt_warn(cmr_report *r, const char *f, ...)
{
    if (r->n_warnings > MAX_WARNINGS)
        return;
    char **w = realloc(r->warnings, (r->n_warnings + 1) * sizeof *w);
    if (!w)
        return;
    r->warnings = w;
    if (r->n_warnings == MAX_WARNINGS) {
        w[r->n_warnings] = rpt_fmt("%s: more warnings not shown", rpt_name_or_memory(r->path));
    } else {
        va_list ap;
        va_start(ap, f);
        char *msg = vfmt(f, ap);
        va_end(ap);
        w[r->n_warnings] = msg ? rpt_fmt("%s: %s", rpt_name_or_memory(r->path), msg) : NULL;
        free(msg);
    }
    if (w[r->n_warnings])
        r->n_warnings++;
}

cmr_report *rpt_report_new(const char *path, cmr_report_kind kind)
{
    cmr_report *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    if (path && !(r->path = rpt_dup0(path))) {
        free(r);
        return NULL;
    }
    return r;
}

void cmr_report_free(cmr_report *r)
{
    if (!r)
        return;
    free(r->path);
    free(r->study_uid);
    free(r->accession_number);
    free(r->impression);
    free(r->impression_source);
    free(r->findings);
    free(r->findings_source);
    for (size_t i = 0; i < r->n_codes; i++) {
        free(r->codes[i].code);
        free(r->codes[i].system);
        free(r->codes[i].label);
    }
    free(r->codes);
    for (size_t i = 0; i < r->n_warnings; i++)
        free(r->warnings[i]);
    free(r->warnings);
    free(r);
}

/* The store refuses texts of CMR_TEXT_MAX bytes or more: cut at a character
 * boundary and say so rather than lose the whole report. */
void rpt_clip_text(cmr_report *r, char *s, const char *what)
{
    if (!s)
        return;
    size_t n = strlen(s);
    if (n < CMR_TEXT_MAX)
        return;
    size_t cut = CMR_TEXT_MAX - 1;
    while (cut > 0 && ((unsigned char)s[cut] & 0xC0) == 0x80)
        cut--;
    s[cut] = '\0';
    rpt_warn(r, "%s is %zu bytes; cut to %zu", what, n, cut);
}

static const struct {
    const char *key, *name;
} code_systems[] = {
    {"2.16.840.1.113883.6.96", "SNOMED-CT"}, {"SCT", "SNOMED-CT"}, {"SNOMED-CT", "SNOMED-CT"},
    {"SNOMED CT", "SNOMED-CT"}, {"SNOMEDCT", "SNOMED-CT"}, {"SNOMED", "SNOMED-CT"},
    {"http://snomed.info/sct", "SNOMED-CT"},
    {"2.16.840.1.113883.6.90", "ICD-10-CM"}, {"ICD-10-CM", "ICD-10-CM"}, {"ICD10CM", "ICD-10-CM"},
    {"ICD-10CM", "ICD-10-CM"}, {"http://hl7.org/fhir/sid/icd-10-cm", "ICD-10-CM"},
    {"2.16.840.1.113883.6.3", "ICD-10"}, {"I10", "ICD-10"}, {"ICD-10", "ICD-10"}, {"ICD10", "ICD-10"},
    {"http://hl7.org/fhir/sid/icd-10", "ICD-10"},
    {"2.16.840.1.113883.6.103", "ICD-9-CM"}, {"I9C", "ICD-9-CM"}, {"ICD-9-CM", "ICD-9-CM"},
    {"ICD9CM", "ICD-9-CM"},
    {"2.16.840.1.113883.6.1", "LOINC"}, {"LN", "LOINC"}, {"LOINC", "LOINC"}, {"http://loinc.org", "LOINC"},
    {"1.2.840.10008.2.16.4", "DCM"}, {"DCM", "DCM"},
    {"2.16.840.1.113883.6.256", "RadLex"}, {"RADLEX", "RadLex"},
};

const char *cmr_code_system_name(const char *s)
{
    if (!s)
        return NULL;
    for (size_t i = 0; i < sizeof code_systems / sizeof *code_systems; i++)
        if (!strcasecmp(s, code_systems[i].key))
            return code_systems[i].name;
    return NULL;
}

static int same_or_both_null(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* Adds one code (deduplicated on system and code); takes nothing over. */
int rpt_add_code(cmr_report *r, const char *code, const char *system, const char *system_name,
                 const char *label, const char *where, int line)
{
    if (!nonblank(code))
        return 0;
    char *c = rpt_dup_trim(code);
    if (!c)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(r->path));
    const char *known = cmr_code_system_name(system);
    if (!known && system_name)
        known = cmr_code_system_name(system_name);
    const char *sys_src = known ? known : (system && *system ? system : system_name);
    char *sys = rpt_dup_trim(sys_src);
    char *lab = rpt_dup_trim(label);
    int rc = 0;
    for (size_t i = 0; i < r->n_codes; i++) {
        if (!strcmp(r->codes[i].code, c) && same_or_both_null(r->codes[i].system, sys)) {
            if (!r->codes[i].label && lab) {
                r->codes[i].label = lab;
                lab = NULL;
            }
            goto out;
        }
    }
    if (r->n_codes >= MAX_CODES) /* the caller warns once */
        goto out;
    if ((nonblank(sys_src) && !sys) || (nonblank(label) && !lab)) {
        rc = CMR_ENOMEM;
        goto out;
    }
    cmr_report_code *codes = realloc(r->codes, (r->n_codes + 1) * sizeof *codes);
    if (!codes) {
        rc = CMR_ENOMEM;
        goto out;
    }
    r->codes = codes;
    codes[r->n_codes++] = (cmr_report_code){c, sys, lab, where, line};
    return 0;
out:
    free(c);
    free(sys);
    free(lab);
    return rc ? cmr_fail(rc, "%s: out of memory", rpt_name_or_memory(r->path)) : 0;
}

/* ---- which format, reading files -------------------------------------------------------- */

int rpt_read_file(const char *path, char **data, size_t *len)
{
    *data = NULL;
    *len = 0;
    FILE *f = fopen(path, "rb");
    if (!f)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", path, strerror(errno));
    int rc = 0;
    struct stat sb;
    char *buf = NULL;
    if (fstat(fileno(f), &sb) != 0) {
        rc = cmr_fail(CMR_EIO, "%s: %s", path, strerror(errno));
        goto fail;
    }
    if (!S_ISREG(sb.st_mode)) {
        rc = cmr_fail(CMR_EFORMAT, "%s: not a regular file", path);
        goto fail;
    }
    if ((uint64_t)sb.st_size > CMR_REPORT_MAX_BYTES) {
        rc = cmr_fail(CMR_EFORMAT, "%s: %lld bytes; report and manifest files over %zu bytes are not read", path,
                      (long long)sb.st_size, (size_t)CMR_REPORT_MAX_BYTES);
        goto fail;
    }
    /* Read to EOF rather than trust st_size: the file may change under us. */
    size_t cap = (size_t)sb.st_size + 1, n = 0;
    buf = malloc(cap);
    if (!buf) {
        rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (;;) {
        if (n + 1 >= cap) {
            if (cap > CMR_REPORT_MAX_BYTES) {
                rc = cmr_fail(CMR_EFORMAT, "%s: over %zu bytes; not read", path, (size_t)CMR_REPORT_MAX_BYTES);
                goto fail;
            }
            char *nb = realloc(buf, cap * 2);
            if (!nb) {
                rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", path);
                goto fail;
            }
            buf = nb;
            cap *= 2;
        }
        size_t got = fread(buf + n, 1, cap - 1 - n, f);
        n += got;
        if (got == 0) {
            if (ferror(f)) {
                rc = cmr_fail(CMR_EIO, "%s: read error", path);
                goto fail;
            }
            break;
        }
    }
    buf[n] = '\0';
    fclose(f);
    *data = buf;
    *len = n;
    return 0;
fail:
    free(buf);
    fclose(f);
    return rc;
}

/* Root element name of an XML document (ASCII view of its start), "" if not found. */
static void sniff_root(const char *s, size_t n, char *name, size_t cap, int *manifest_ns)
{
    name[0] = '\0';
    *manifest_ns = 0;
    size_t i = 0;
    while (i < n) {
        while (i < n && s[i] != '<')
            i++;
        if (i + 1 >= n)
            return;
        const char *p = s + i;
        size_t left = n - i;
        const char *end = NULL;
        if (p[1] == '?') {
            end = memmem(p, left, "?>", 2);
        } else if (left >= 4 && !memcmp(p, "<!--", 4)) {
            end = memmem(p, left, "-->", 3);
        } else if (p[1] == '!') {
            const char *gt = memchr(p, '>', left), *br = memchr(p, '[', left);
            end = br && (!gt || br < gt) ? memmem(br, left - (size_t)(br - p), "]", 1) : gt;
            if (end && *end == ']')
                end = memchr(end, '>', left - (size_t)(end - p));
        } else {
            size_t k = 1, o = 0;
            while (k < left && o + 1 < cap && (isalnum((unsigned char)p[k]) || p[k] == '_' || p[k] == '-' ||
                                                p[k] == '.' || p[k] == ':' || (unsigned char)p[k] >= 0x80)) {
                name[o++] = p[k++];
            }
            name[o] = '\0';
            char *colon = strrchr(name, ':');
            if (colon)
                memmove(name, colon + 1, strlen(colon + 1) + 1);
            const char *gt = memchr(p, '>', left);
            size_t tag = gt ? (size_t)(gt - p) : left;
            *manifest_ns = memmem(p, tag, CMR_MANIFEST_NS, strlen(CMR_MANIFEST_NS)) != NULL;
            return;
        }
        if (!end)
            return;
        i = (size_t)(end - s) + 1;
    }
}

static cmr_report_sniff_kind sniff(const char *data, size_t len, char *root, size_t root_cap)
{
    if (root_cap)
        root[0] = '\0';
    if (len == 0)
        return CMR_SNIFF_EMPTY;
    if (len >= 132 && !memcmp(data + 128, "DICM", 4))
        return CMR_SNIFF_DICOM;
    const unsigned char *u = (const unsigned char *)data;
    /* A plain-ASCII view of the start, enough to find the root element. */
    size_t cap = len < 65536 ? len : 65536, n = 0;
    char *view = malloc(cap + 1);
    if (!view)
        return CMR_SNIFF_TEXT;
    int utf16 = len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF));
    if (utf16) {
        int le = u[0] == 0xFF;
        for (size_t i = 2; i + 1 < len && n < cap; i += 2) {
            unsigned c = le ? (unsigned)(u[i] | (u[i + 1] << 8)) : (unsigned)((u[i] << 8) | u[i + 1]);
            view[n++] = c < 0x80 ? (char)c : '?';
        }
    } else {
        size_t start = len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF ? 3 : 0;
        for (size_t i = start; i < len && n < cap; i++)
            view[n++] = data[i] ? data[i] : ' ';
    }
    view[n] = '\0';
    size_t i = 0;
    while (i < n && rpt_is_space((unsigned char)view[i]))
        i++;
    cmr_report_sniff_kind kind;
    if (i == n) {
        kind = CMR_SNIFF_EMPTY;
    } else if (view[i] == '<') {
        char name[64];
        int mns;
        sniff_root(view + i, n - i, name, sizeof name, &mns);
        if (root_cap)
            snprintf(root, root_cap, "%s", name);
        kind = !strcmp(name, "ClinicalDocument") ? CMR_SNIFF_CDA
               : (!strcmp(name, "archive") && mns) ? CMR_SNIFF_MANIFEST
                                                   : CMR_SNIFF_OTHER_XML;
    } else if (!utf16 && memchr(data, 0, len)) {
        kind = CMR_SNIFF_BINARY;
    } else {
        kind = CMR_SNIFF_TEXT;
    }
    free(view);
    return kind;
}

cmr_report_sniff_kind cmr_report_sniff(const char *data, size_t len) { return sniff(data, len, NULL, 0); }

int cmr_report_read(const char *path, const cmr_report_options *opts, cmr_report **out)
{
    *out = NULL;
    if (!path)
        return cmr_fail(CMR_EINVAL, "cmr_report_read: no path");
    char *data;
    size_t len;
    int rc = rpt_read_file(path, &data, &len);
    if (rc)
        return rc;
    char root[64];
    switch (sniff(data, len, root, sizeof root)) {
    case CMR_SNIFF_EMPTY:
        rc = cmr_fail(CMR_EFORMAT, "%s: no text (empty or only white space)", path);
        break;
    case CMR_SNIFF_DICOM:
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: a DICOM file; DICOM SR reports are read by cmr_dicom_read_sr", path);
        break;
    case CMR_SNIFF_MANIFEST:
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: an archive manifest, not a report", path);
        break;
    case CMR_SNIFF_OTHER_XML:
        rc = cmr_fail(CMR_EUNSUPPORTED, "%s: XML with root element <%s>, not an HL7 CDA ClinicalDocument", path,
                      root[0] ? root : "?");
        break;
    case CMR_SNIFF_BINARY:
        rc = cmr_report_parse_text(path, data, len, out); /* names the NUL byte */
        break;
    case CMR_SNIFF_CDA:
        rc = cmr_report_parse_cda(path, data, len, opts, out);
        break;
    case CMR_SNIFF_TEXT:
        rc = cmr_report_parse_text(path, data, len, out);
        break;
    }
    free(data);
    return rc;
}

/* ---- DICOM SR ------------------------------------------------------------------------------ */

int cmr_report_from_sr(const char *path, const struct cmr_sr_report *sr, cmr_report **out)
{
    *out = NULL;
    const char *name = rpt_name_or_memory(path);
    if (!sr)
        return cmr_fail(CMR_EINVAL, "%s: no SR", name);
    cmr_report *r = rpt_report_new(path, CMR_REPORT_SR);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    int rc = 0;
    char uid[sizeof sr->study_uid + 1], acc[sizeof sr->accession_number + 1];
    snprintf(uid, sizeof uid, "%.*s", (int)sizeof sr->study_uid, sr->study_uid);
    snprintf(acc, sizeof acc, "%.*s", (int)sizeof sr->accession_number, sr->accession_number);
    char *u = rpt_dup_trim(uid), *a = rpt_dup_trim(acc);
    if (u && !rpt_valid_uid(u)) {
        rpt_warn(r, "Study Instance UID '%.80s' is not a DICOM UID; ignored", u);
        free(u);
        u = NULL;
    }
    if (a && !rpt_valid_accession(a)) {
        rpt_warn(r, "accession number '%.80s' is not valid; ignored", a);
        free(a);
        a = NULL;
    }
    r->study_uid = u;
    r->accession_number = a;
    if (nonblank(sr->impression)) {
        if (!(r->impression = rpt_dup_trim(sr->impression)) || !(r->impression_source = rpt_dup0("SR content item")))
            goto oom;
    } else {
        rpt_warn(r, "no impression: no SR container or TEXT item named Impression or Conclusion");
    }
    if (nonblank(sr->findings)) {
        if (!(r->findings = rpt_dup_trim(sr->findings)) || !(r->findings_source = rpt_dup0("SR content item")))
            goto oom;
    }
    for (size_t i = 0; i < sr->n_codes && i < MAX_CODES; i++)
        if ((rc = rpt_add_code(r, sr->codes[i].code, sr->codes[i].system, NULL, sr->codes[i].label, "SR code item", 0)))
            goto fail;
    rpt_clip_text(r, r->impression, "the impression");
    rpt_clip_text(r, r->findings, "the findings");
    *out = r;
    return 0;
oom:
    rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
fail:
    cmr_report_free(r);
    return rc;
}
