/* Reports: plain text (encodings, headings, sections, code lines, links).
 * See cmr_report.h and docs/reports.md. */
#include "report_internal.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* ---- plain text ----------------------------------------------------------------------- */

static void put_utf8(sbuf *b, uint32_t cp)
{
    char u[4];
    size_t n;
    if (cp < 0x80) {
        u[0] = (char)cp;
        n = 1;
    } else if (cp < 0x800) {
        u[0] = (char)(0xC0 | (cp >> 6));
        u[1] = (char)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        u[0] = (char)(0xE0 | (cp >> 12));
        u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[2] = (char)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        u[0] = (char)(0xF0 | (cp >> 18));
        u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        u[3] = (char)(0x80 | (cp & 0x3F));
        n = 4;
    }
    rpt_sb_add(b, u, n);
}

/* Length of the well-formed UTF-8 sequence at s (RFC 3629), 0 if ill-formed. */
static size_t utf8_seq(const unsigned char *s, size_t n)
{
    if (s[0] < 0x80)
        return 1;
    size_t len;
    uint32_t cp, min;
    if ((s[0] & 0xE0) == 0xC0) {
        len = 2, cp = s[0] & 0x1F, min = 0x80;
    } else if ((s[0] & 0xF0) == 0xE0) {
        len = 3, cp = s[0] & 0x0F, min = 0x800;
    } else if ((s[0] & 0xF8) == 0xF0) {
        len = 4, cp = s[0] & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

static const uint16_t cp1252[32] = {
    0x20AC, 0xFFFD, 0x201A, 0x0192, 0x201E, 0x2026, 0x2020, 0x2021, 0x02C6, 0x2030, 0x0160,
    0x2039, 0x0152, 0xFFFD, 0x017D, 0xFFFD, 0xFFFD, 0x2018, 0x2019, 0x201C, 0x201D, 0x2022,
    0x2013, 0x2014, 0x02DC, 0x2122, 0x0161, 0x203A, 0x0153, 0xFFFD, 0x017E, 0x0178,
};

static void put_newline_aware(sbuf *b, uint32_t cp, int *was_cr)
{
    /* CR LF and lone CR both end a line. */
    if (cp == '\r') {
        rpt_sb_add(b, "\n", 1);
        *was_cr = 1;
        return;
    }
    if (cp == '\n' && *was_cr) {
        *was_cr = 0;
        return;
    }
    *was_cr = 0;
    put_utf8(b, cp);
}

/* Text of unknown encoding to UTF-8 with '\n' line ends: a byte-order mark
 * decides (UTF-8, UTF-16); else UTF-8 if it is well-formed, else Windows-1252
 * (a superset of Latin-1, what older RIS exports use). */
static int text_to_utf8(cmr_report *r, const char *in, size_t len, sbuf *out)
{
    const unsigned char *u = (const unsigned char *)in;
    int was_cr = 0;
    if (len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF))) {
        int le = u[0] == 0xFF;
        for (size_t i = 2; i + 1 < len; i += 2) {
            uint32_t c = le ? (uint32_t)(u[i] | (u[i + 1] << 8)) : (uint32_t)((u[i] << 8) | u[i + 1]);
            if (c >= 0xD800 && c <= 0xDBFF && i + 3 < len) {
                uint32_t d = le ? (uint32_t)(u[i + 2] | (u[i + 3] << 8)) : (uint32_t)((u[i + 2] << 8) | u[i + 3]);
                if (d >= 0xDC00 && d <= 0xDFFF) {
                    c = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
                    i += 2;
                } else {
                    c = 0xFFFD;
                }
            } else if (c >= 0xD800 && c <= 0xDFFF) {
                c = 0xFFFD;
            }
            put_newline_aware(out, c ? c : 0xFFFD, &was_cr);
        }
        return out->oom ? CMR_ENOMEM : 0;
    }
    size_t start = 0;
    if (len >= 3 && u[0] == 0xEF && u[1] == 0xBB && u[2] == 0xBF)
        start = 3;
    size_t bad = SIZE_MAX;
    for (size_t i = start; i < len;) {
        size_t k = utf8_seq(u + i, len - i);
        if (!k) {
            bad = i;
            break;
        }
        i += k;
    }
    if (bad == SIZE_MAX) {
        for (size_t i = start; i < len; i++) {
            if (u[i] == '\r' || u[i] == '\n')
                put_newline_aware(out, u[i], &was_cr);
            else {
                was_cr = 0;
                rpt_sb_add(out, in + i, 1);
            }
        }
    } else {
        rpt_warn(r, "not valid UTF-8 (byte 0x%02X at offset %zu); read as Windows-1252", u[bad], bad);
        for (size_t i = start; i < len; i++)
            put_newline_aware(out, u[i] >= 0x80 && u[i] < 0xA0 ? cp1252[u[i] - 0x80] : u[i], &was_cr);
    }
    return out->oom ? CMR_ENOMEM : 0;
}

enum { H_NONE = 0, H_FINAL, H_IMPRESSION, H_CONCLUSION, H_SUMMARY, H_FINDINGS, H_CODES, H_OTHER };

static const struct {
    const char *label;
    int kind;
} text_labels[] = {
    {"final impression", H_FINAL}, {"final impressions", H_FINAL},
    {"impression", H_IMPRESSION}, {"impressions", H_IMPRESSION}, {"overall impression", H_IMPRESSION},
    {"clinical impression", H_OTHER}, /* the referrer's, not the reader's */
    {"conclusion", H_CONCLUSION}, {"conclusions", H_CONCLUSION}, {"final conclusion", H_CONCLUSION},
    {"summary", H_SUMMARY},
    {"findings", H_FINDINGS}, {"finding", H_FINDINGS},
    /* lines of codes: read as diagnoses, never part of a text */
    {"coded diagnosis", H_CODES}, {"coded diagnoses", H_CODES}, {"diagnosis code", H_CODES},
    {"diagnosis codes", H_CODES}, {"diagnostic code", H_CODES}, {"diagnostic codes", H_CODES},
    {"icd-10", H_CODES}, {"icd10", H_CODES}, {"icd-10 code", H_CODES}, {"icd-10 codes", H_CODES},
    {"icd-10-cm", H_CODES}, {"icd-10-cm code", H_CODES}, {"icd-10-cm codes", H_CODES}, {"snomed", H_CODES},
    {"snomed ct", H_CODES}, {"snomed-ct", H_CODES}, {"snomed code", H_CODES}, {"snomed ct code", H_CODES},
    /* other sections and header fields: they end the section before them */
    {"history", H_OTHER}, {"clinical history", H_OTHER}, {"clinical information", H_OTHER},
    {"clinical details", H_OTHER}, {"clinical indication", H_OTHER}, {"clinical question", H_OTHER},
    {"indication", H_OTHER}, {"indications", H_OTHER}, {"reason for exam", H_OTHER},
    {"reason for examination", H_OTHER}, {"reason for study", H_OTHER}, {"reason for referral", H_OTHER},
    {"technique", H_OTHER}, {"protocol", H_OTHER}, {"procedure", H_OTHER}, {"sequences", H_OTHER},
    {"contrast", H_OTHER}, {"comparison", H_OTHER}, {"comparisons", H_OTHER}, {"measurements", H_OTHER},
    {"quantification", H_OTHER}, {"recommendation", H_OTHER}, {"recommendations", H_OTHER},
    {"comment", H_OTHER}, {"comments", H_OTHER}, {"addendum", H_OTHER}, {"note", H_OTHER},
    {"notes", H_OTHER}, {"examination", H_OTHER}, {"exam", H_OTHER}, {"study", H_OTHER},
    {"study date", H_OTHER}, {"date", H_OTHER}, {"patient", H_OTHER}, {"patient name", H_OTHER},
    {"name", H_OTHER}, {"patient id", H_OTHER}, {"mrn", H_OTHER}, {"dob", H_OTHER},
    {"date of birth", H_OTHER}, {"referring physician", H_OTHER}, {"referrer", H_OTHER},
    {"radiologist", H_OTHER}, {"cardiologist", H_OTHER}, {"reporting physician", H_OTHER},
    {"accession", H_OTHER}, {"accession number", H_OTHER}, {"accession no", H_OTHER},
    {"accession no.", H_OTHER}, {"accession #", H_OTHER}, {"study instance uid", H_OTHER},
    {"studyinstanceuid", H_OTHER}, {"study uid", H_OTHER}, {"exam date", H_OTHER}, {"sex", H_OTHER},
};

/* Sign-off lines end the section above them whatever their case or punctuation. */
static const char *const signoff_prefixes[] = {
    "electronically signed", "signed by", "dictated by", "reported by", "transcribed by",
    "verified by", "read by", "attending radiologist", "reporting radiologist", "signed electronically",
};

typedef struct tline {
    const char *s; /* trimmed, not NUL-terminated */
    size_t n;
    int no;        /* 1-based line number */
    int kind;      /* H_* */
    size_t rest;   /* offset of the text after a heading's colon */
    size_t label_off, label_n; /* the heading label as written */
} tline;

static void lower_ascii(const char *s, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        out[i] = (char)tolower((unsigned char)s[i]);
    out[n] = '\0';
}

static int is_decoration(char c) { return c == '#' || c == '*' || c == '_' || c == '=' || c == '-' || c == '~'; }

static void classify(tline *l)
{
    l->kind = H_NONE;
    if (l->n == 0)
        return;
    size_t start = 0;
    while (start < l->n && (l->s[start] == '#' || l->s[start] == '*' || l->s[start] == '_' || l->s[start] == ' '))
        start++;
    size_t lim = l->n < 80 ? l->n : 80, colon = SIZE_MAX;
    for (size_t i = start; i < lim; i++)
        if (l->s[i] == ':') {
            colon = i;
            break;
        }
    size_t lend = colon == SIZE_MAX ? l->n : colon;
    while (lend > start && (l->s[lend - 1] == '*' || l->s[lend - 1] == '_' || l->s[lend - 1] == ' '))
        lend--;
    if (lend <= start || lend - start > 60)
        goto signoff;
    char label[128];
    rpt_normalize_label(l->s + start, lend - start, label, sizeof label);
    size_t rest = colon == SIZE_MAX ? l->n : colon + 1;
    while (rest < l->n && (l->s[rest] == ' ' || l->s[rest] == '\t' || l->s[rest] == '*' || l->s[rest] == '_'))
        rest++;
    for (size_t i = 0; i < sizeof text_labels / sizeof *text_labels; i++) {
        if (!strcmp(label, text_labels[i].label)) {
            l->kind = text_labels[i].kind;
            l->rest = rest;
            l->label_off = start;
            l->label_n = lend - start;
            return;
        }
    }
    /* An unknown ALL-CAPS label alone on its line ("LEFT VENTRICLE:") is a
     * heading; with text after it ("LV: 55%") it may be a line of the
     * impression itself, so it is not. */
    if (colon != SIZE_MAX && rest == l->n && !isdigit((unsigned char)l->s[start])) {
        int letters = 0, lower = 0;
        for (size_t i = start; i < lend; i++) {
            letters += isalpha((unsigned char)l->s[i]) != 0;
            lower += islower((unsigned char)l->s[i]) != 0;
        }
        if (letters >= 3 && !lower) {
            l->kind = H_OTHER;
            l->rest = rest;
            return;
        }
    }
signoff:;
    char low[64];
    size_t m = l->n < sizeof low - 1 ? l->n : sizeof low - 1;
    lower_ascii(l->s, m, low);
    for (size_t i = 0; i < sizeof signoff_prefixes / sizeof *signoff_prefixes; i++)
        if (!strncmp(low, signoff_prefixes[i], strlen(signoff_prefixes[i]))) {
            l->kind = H_OTHER;
            l->rest = l->n;
            return;
        }
}

/* Finds "label [: or =] value" in a line, case-insensitively; the value is
 * the next run of non-space characters.  Returns a malloc'ed value or NULL. */
static char *field_value(const char *s, size_t n, const char *const *labels, size_t n_labels, const char *const *skips,
                         size_t n_skips)
{
    char *low = malloc(n + 1);
    if (!low)
        return NULL;
    lower_ascii(s, n, low);
    char *v = NULL;
    for (size_t k = 0; k < n_labels && !v; k++) {
        const char *hit = strstr(low, labels[k]);
        if (!hit || (hit > low && isalnum((unsigned char)hit[-1])))
            continue;
        const char *p = hit + strlen(labels[k]);
        while (*p == ' ' || *p == '\t')
            p++;
        for (size_t j = 0; j < n_skips; j++)
            if (!strncmp(p, skips[j], strlen(skips[j]))) {
                p += strlen(skips[j]);
                while (*p == ' ' || *p == '\t')
                    p++;
                break;
            }
        if (*p != ':' && *p != '=')
            continue;
        p++;
        while (*p == ' ' || *p == '\t')
            p++;
        const char *e = p;
        while (*e && *e != ' ' && *e != '\t')
            e++;
        while (e > p && (e[-1] == ',' || e[-1] == ';'))
            e--;
        if (e > p)
            v = rpt_dupn(s + (p - low), (size_t)(e - p));
    }
    free(low);
    return v;
}

static void text_links(cmr_report *r, const tline *lines, size_t n)
{
    static const char *const uid_labels[] = {"study instance uid", "studyinstanceuid", "study uid"};
    static const char *const uid_skips[] = {"(0020,000d)"};
    static const char *const acc_labels[] = {"accession"};
    static const char *const acc_skips[] = {"number", "no.", "no", "nr.", "nr", "#"};
    int have_uid = r->study_uid != NULL, have_acc = r->accession_number != NULL;
    for (size_t i = 0; i < n && (!have_uid || !have_acc); i++) {
        if (!have_uid) {
            char *v = field_value(lines[i].s, lines[i].n, uid_labels, 3, uid_skips, 1);
            if (v) {
                have_uid = 1;
                if (rpt_valid_uid(v)) {
                    r->study_uid = v;
                    v = NULL;
                } else {
                    rpt_warn(r, "line %d: Study Instance UID '%.80s' is not a DICOM UID; ignored", lines[i].no, v);
                }
                free(v);
            }
        }
        if (!have_acc) {
            char *v = field_value(lines[i].s, lines[i].n, acc_labels, 1, acc_skips, 6);
            if (v) {
                have_acc = 1;
                if (rpt_valid_accession(v)) {
                    r->accession_number = v;
                    v = NULL;
                } else {
                    rpt_warn(r, "line %d: accession number '%.80s' is longer than 16 characters or has control "
                            "characters; ignored", lines[i].no, v);
                }
                free(v);
            }
        }
    }
}

static int is_list_item(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n && i < 3 && isdigit((unsigned char)s[i]))
        i++;
    if (i > 0 && i < n && (s[i] == '.' || s[i] == ')'))
        return 1;
    if (n >= 2 && (s[0] == '-' || s[0] == '*' || s[0] == '+') && s[1] == ' ')
        return 1;
    if (n >= 3 && (unsigned char)s[0] == 0xE2 && (unsigned char)s[1] == 0x80 && (unsigned char)s[2] == 0xA2)
        return 1; /* U+2022 bullet */
    if (n >= 3 && isalpha((unsigned char)s[0]) && s[1] == ')' && s[2] == ' ')
        return 1;
    return 0;
}

static int is_rule(const char *s, size_t n)
{
    if (n < 3)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_decoration(s[i]) && s[i] != ' ')
            return 0;
    return 1;
}

/* A section's lines as text: hard-wrapped lines are rejoined (a line that
 * does not end a sentence, followed by one starting in lower case), list
 * items and sentences keep their own lines.  *out NULL when there is none. */
static int section_lines(const tline *lines, size_t from, size_t to, const tline *heading, char **out)
{
    sbuf b = {0};
    int prev_open = 0; /* previous line ended mid-sentence */
    if (heading && heading->rest < heading->n) {
        rpt_sb_add(&b, heading->s + heading->rest, heading->n - heading->rest);
        char last = heading->s[heading->n - 1];
        prev_open = !(last == '.' || last == '!' || last == '?' || last == ':' || last == ';');
    }
    for (size_t i = from; i < to; i++) {
        const tline *l = &lines[i];
        if (l->n == 0 || is_rule(l->s, l->n)) {
            rpt_sb_newline(&b);
            prev_open = 0;
            continue;
        }
        int join = prev_open && !rpt_sb_at_line_start(&b) && !is_list_item(l->s, l->n) &&
                   (islower((unsigned char)l->s[0]) || l->s[0] == '(');
        if (join)
            rpt_sb_add(&b, " ", 1);
        else
            rpt_sb_newline(&b);
        rpt_sb_add(&b, l->s, l->n);
        char last = l->s[l->n - 1];
        prev_open = !(last == '.' || last == '!' || last == '?' || last == ':' || last == ';');
    }
    if (b.oom) {
        free(b.p);
        *out = NULL;
        return CMR_ENOMEM;
    }
    *out = rpt_sb_take(&b);
    return 0;
}

/* ---- code lines in text ("Coded diagnosis: I42.2 Other hypertrophic
 * cardiomyopathy (SNOMED CT 233873004)", "ICD-10: I42.0; I25.5") ---- */

static int code_like(const char *s, size_t n)
{
    if (n == 0 || n > 32)
        return 0;
    int digit = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (isdigit(c))
            digit = 1;
        else if (!isalpha(c) && c != '.' && c != '-')
            return 0;
    }
    return digit && isalnum((unsigned char)s[n - 1]);
}

/* The system a bare code's shape implies: ICD-10 "I42.2", SNOMED CT "233873004". */
static const char *system_by_shape(const char *s, size_t n)
{
    if (n >= 3 && isupper((unsigned char)s[0]) && isdigit((unsigned char)s[1]) && isalnum((unsigned char)s[2])) {
        size_t i = 3;
        if (i < n && s[i] == '.')
            for (i++; i < n && isalnum((unsigned char)s[i]); i++)
                ;
        if (i == n && n <= 8)
            return "ICD-10";
    }
    if (n >= 6 && n <= 18) {
        size_t i = 0;
        while (i < n && isdigit((unsigned char)s[i]))
            i++;
        if (i == n)
            return "SNOMED-CT";
    }
    return NULL;
}

static char *trimmed_dup(const char *s, size_t n, const char *strip)
{
    while (n && (rpt_is_space((unsigned char)*s) || strchr(strip, *s)))
        s++, n--;
    while (n && (rpt_is_space((unsigned char)s[n - 1]) || strchr(strip, s[n - 1])))
        n--;
    return n ? rpt_dupn(s, n) : NULL;
}

/* The next "( ... )" group in [p, end): its inside, trimmed; NULL when none. */
static const char *next_group(const char *p, const char *end, size_t *in_n, const char **after)
{
    const char *open = p < end ? memchr(p, '(', (size_t)(end - p)) : NULL;
    const char *close = open ? memchr(open, ')', (size_t)(end - open)) : NULL;
    if (!close)
        return NULL;
    const char *in = open + 1;
    size_t n = (size_t)(close - in);
    while (n && rpt_is_space((unsigned char)*in))
        in++, n--;
    while (n && rpt_is_space((unsigned char)in[n - 1]))
        n--;
    *in_n = n;
    *after = close + 1;
    return in;
}

static int text_code_entry(cmr_report *r, const char *e, size_t n, const char *dflt, int line)
{
    while (n && rpt_is_space((unsigned char)*e))
        e++, n--;
    const char *end = e + n;
    size_t t = 0;
    while (t < n && !rpt_is_space((unsigned char)e[t]) && e[t] != '(')
        t++;
    const char *open = memchr(e, '(', n);
    size_t label_end = open ? (size_t)(open - e) : n;
    const char *code = NULL;
    size_t code_n = 0;
    char *label;
    if (code_like(e, t)) { /* "I42.2 Label (...)" */
        code = e, code_n = t;
        label = label_end > t ? trimmed_dup(e + t, label_end - t, "-:,") : NULL;
    } else {               /* "Label (I42.2) (...)" */
        label = trimmed_dup(e, label_end, "-:,");
        size_t in_n;
        const char *after, *in;
        for (const char *p = e; !code && (in = next_group(p, end, &in_n, &after)); p = after)
            if (code_like(in, in_n))
                code = in, code_n = in_n;
    }
    int rc = 0;
    if (code) {
        char *c = rpt_dupn(code, code_n);
        rc = c ? rpt_add_code(r, c, dflt ? dflt : system_by_shape(code, code_n), NULL, label, "text code line", line)
               : CMR_ENOMEM;
        free(c);
    }
    /* Groups naming their system: "(SNOMED CT 233873004)".  After a leading
     * code ("Z03.89 Encounter for observation ... (SNOMED CT 17621005)") the
     * label is that code's title in its own system, not the other code's
     * name; before all codes ("Amyloidosis (E85.4) (SCT 17602002)") it names
     * the diagnosis both encode. */
    const char *group_label = code && code == e ? NULL : label;
    size_t in_n;
    const char *after, *in;
    for (const char *p = e; !rc && (in = next_group(p, end, &in_n, &after)); p = after) {
        size_t last = in_n;
        while (last && !rpt_is_space((unsigned char)in[last - 1]))
            last--;
        if (last == 0 || !code_like(in + last, in_n - last))
            continue;
        char *name = trimmed_dup(in, last, ":");
        const char *known = name ? cmr_code_system_name(name) : NULL;
        free(name);
        if (!known)
            continue;
        char *c = rpt_dupn(in + last, in_n - last);
        rc = c ? rpt_add_code(r, c, known, NULL, group_label, "text code line", line) : CMR_ENOMEM;
        free(c);
    }
    free(label);
    if (rc == CMR_ENOMEM)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(r->path));
    return rc;
}

static int text_codes(cmr_report *r, const tline *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const tline *h = &lines[i];
        if (h->kind != H_CODES)
            continue;
        char label[64];
        rpt_normalize_label(h->s + h->label_off, h->label_n, label, sizeof label);
        const char *dflt = !strncmp(label, "icd-10-cm", 9)                        ? "ICD-10-CM"
                           : !strncmp(label, "icd-10", 6) || !strncmp(label, "icd10", 5) ? "ICD-10"
                           : !strncmp(label, "snomed", 6)                         ? "SNOMED-CT"
                                                                                  : NULL;
        size_t end = i + 1;
        while (end < n && lines[end].kind == H_NONE && lines[end].n)
            end++;
        for (size_t j = i; j < end; j++) {
            const char *s = j == i ? h->s + h->rest : lines[j].s;
            size_t len = j == i ? h->n - h->rest : lines[j].n;
            /* entries are separated by ';' */
            while (len) {
                if (r->n_codes >= MAX_CODES)
                    return 0;
                const char *semi = memchr(s, ';', len);
                size_t el = semi ? (size_t)(semi - s) : len;
                int rc = text_code_entry(r, s, el, dflt, lines[j].no);
                if (rc)
                    return rc;
                s += el;
                len -= el;
                if (len)
                    s++, len--;
            }
        }
    }
    return 0;
}

static const char *heading_name(int kind)
{
    switch (kind) {
    case H_FINAL: return "FINAL IMPRESSION";
    case H_IMPRESSION: return "IMPRESSION";
    case H_CONCLUSION: return "CONCLUSION";
    case H_SUMMARY: return "SUMMARY";
    case H_FINDINGS: return "FINDINGS";
    default: return "other";
    }
}

int rpt_parse_text_into(cmr_report *r, const char *text, size_t len, const char *source_prefix)
{
    const char *name = rpt_name_or_memory(r->path);
    sbuf u = {0};
    int rc = text_to_utf8(r, text, len, &u);
    tline *lines = NULL;
    size_t n = 0, cap = 0;
    if (rc)
        goto oom;
    /* Split in place; the buffer outlives the lines. */
    for (char *p = u.p; p && *p;) {
        char *e = strchr(p, '\n');
        size_t ln = e ? (size_t)(e - p) : strlen(p);
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 64;
            tline *nl = realloc(lines, nc * sizeof *nl);
            if (!nl)
                goto oom;
            lines = nl;
            cap = nc;
        }
        const char *s = p;
        while (ln && rpt_is_space((unsigned char)*s))
            s++, ln--;
        while (ln && rpt_is_space((unsigned char)s[ln - 1]))
            ln--;
        lines[n] = (tline){s, ln, (int)(n + 1), H_NONE, 0, 0, 0};
        classify(&lines[n]);
        n++;
        if (!e)
            break;
        p = e + 1;
    }
    int blank = 1;
    for (size_t i = 0; i < n && blank; i++)
        blank = lines[i].n == 0;
    if (blank) {
        free(lines);
        free(u.p);
        if (source_prefix) {
            rpt_warn(r, "%sis empty: no impression", source_prefix);
            return 0;
        }
        return cmr_fail(CMR_EFORMAT, "%s: no text (empty or only white space)", name);
    }
    text_links(r, lines, n);

    /* Impression: the first non-empty section of the best heading kind. */
    static const int order[] = {H_FINAL, H_IMPRESSION, H_CONCLUSION, H_SUMMARY};
    const char *pre = source_prefix ? source_prefix : "";
    size_t seen = 0;
    for (size_t k = 0; k < sizeof order / sizeof *order && !r->impression; k++) {
        int count = 0;
        for (size_t i = 0; i < n; i++) {
            const tline *h = &lines[i];
            if (h->kind != order[k])
                continue;
            seen++;
            size_t end = i + 1;
            while (end < n && lines[end].kind == H_NONE)
                end++;
            char *t;
            if (section_lines(lines, i + 1, end, h, &t))
                goto oom;
            if (!t) {
                rpt_warn(r, "%sheading '%.*s' (line %d) is followed by no text", pre, (int)h->label_n,
                         h->s + h->label_off, h->no);
                continue;
            }
            if (count++ == 0) {
                r->impression = t;
                r->impression_source = rpt_fmt("%sheading '%.*s' (line %d)", pre, (int)h->label_n, h->s + h->label_off,
                                               h->no);
                if (!r->impression_source)
                    goto oom;
            } else {
                free(t);
                if (count == 2)
                    rpt_warn(r, "%s heading appears again at line %d; the first, %s, is used", heading_name(order[k]),
                             h->no, r->impression_source);
            }
        }
    }
    if ((rc = text_codes(r, lines, n)))
        goto fail;
    if (!r->impression)
        rpt_warn(r, "%sno impression: %s", pre,
                 seen ? "every IMPRESSION, FINAL IMPRESSION, CONCLUSION or SUMMARY heading is empty"
                  : "no IMPRESSION, FINAL IMPRESSION, CONCLUSION or SUMMARY heading");
    for (size_t i = 0; i < n && !r->findings; i++) {
        const tline *h = &lines[i];
        if (h->kind != H_FINDINGS)
            continue;
        size_t end = i + 1;
        while (end < n && lines[end].kind == H_NONE)
            end++;
        if (section_lines(lines, i + 1, end, h, &r->findings))
            goto oom;
        if (r->findings && !(r->findings_source = rpt_fmt("%sheading '%.*s' (line %d)", pre, (int)h->label_n,
                                                          h->s + h->label_off, h->no)))
            goto oom;
    }
    free(lines);
    free(u.p);
    rpt_clip_text(r, r->impression, "the impression");
    rpt_clip_text(r, r->findings, "the findings");
    return 0;
oom:
    rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
fail:
    free(lines);
    free(u.p);
    return rc;
}

int cmr_report_parse_text(const char *path, const char *text, size_t len, cmr_report **out)
{
    *out = NULL;
    const char *name = rpt_name_or_memory(path);
    if (!text && len)
        return cmr_fail(CMR_EINVAL, "%s: no data", name);
    if (len > CMR_REPORT_MAX_BYTES)
        return cmr_fail(CMR_EFORMAT, "%s: %zu bytes; text reports over %zu bytes are not read", name, len,
                        (size_t)CMR_REPORT_MAX_BYTES);
    if (len == 0)
        return cmr_fail(CMR_EFORMAT, "%s: empty file", name);
    const unsigned char *u = (const unsigned char *)text;
    int utf16 = len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF));
    const char *nul = utf16 ? NULL : memchr(text, 0, len);
    if (nul)
        return cmr_fail(CMR_EFORMAT, "%s: binary content (NUL byte at offset %zu): not a text report", name,
                        (size_t)(nul - text));
    cmr_report *r = rpt_report_new(path, CMR_REPORT_TEXT);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    int rc = rpt_parse_text_into(r, text, len, NULL);
    if (rc) {
        cmr_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}
