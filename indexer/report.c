/* Reports (HL7 CDA, plain text, DICOM SR brought to one shape), the archive
 * manifest, XSD validation and report-to-study linking.  See cmr_report.h
 * and docs/reports.md. */
#include "cmr_report.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <libxml/SAX2.h>
#include <libxml/parser.h>
#include <libxml/parserInternals.h>
#include <libxml/tree.h>
#include <libxml/xmlerror.h>
#include <libxml/xmlschemas.h>
#include <libxml/xpath.h>
#include <libxml/xpathInternals.h>

#include "cmr_dicom.h"
#include "cmr_indexer.h"

#define NS_HL7 "urn:hl7-org:v3"
#define NS_XSI "http://www.w3.org/2001/XMLSchema-instance"
#define NS_PS320 "urn:dicom-org:ps3-20"
#define OID_LOINC "2.16.840.1.113883.6.1"

#define MAX_WARNINGS 64
#define MAX_CODES 512 /* real reports carry a handful; bounds dedup cost */
#define MAX_PROBLEM_ITEMS 100
#define MAX_UID 64
#define MAX_ACCESSION 16

/* No entity substitution (NOENT), no DTD loading or validation, no network:
 * a report cannot make us read other files or expand entities. */
#define XML_OPTIONS (XML_PARSE_NONET | XML_PARSE_BIG_LINES | XML_PARSE_NOCDATA)

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init_once(void) { xmlInitParser(); }
static void xml_init(void) { pthread_once(&xml_once, xml_init_once); }

static const char *name_or_memory(const char *path) { return path ? path : "<memory>"; }

/* ---- small string helpers ------------------------------------------------------- */

static char *dupn(const char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

static char *dup0(const char *s) { return s ? dupn(s, strlen(s)) : NULL; }

static int is_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'; }

static int nonblank(const char *s)
{
    if (s)
        for (; *s; s++)
            if (!is_space((unsigned char)*s))
                return 1;
    return 0;
}

/* Trimmed copy; NULL for NULL or blank. */
static char *dup_trim(const char *s)
{
    if (!s)
        return NULL;
    while (is_space((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    while (n && is_space((unsigned char)s[n - 1]))
        n--;
    return n ? dupn(s, n) : NULL;
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

static char *fmt(const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
static char *fmt(const char *f, ...)
{
    va_list ap;
    va_start(ap, f);
    char *s = vfmt(f, ap);
    va_end(ap);
    return s;
}

/* A DICOM UI value: digit runs separated by single dots, at most 64 chars. */
static int valid_uid(const char *s)
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
static int valid_accession(const char *s)
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

/* Flattening narrative: runs of white space become one space, never at the
 * start or end of a line; block boundaries become '\n'. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
    int space; /* a space is owed before the next visible character */
    int glue;  /* the next line break is a space ("Title: text" on one line) */
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
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

static int sb_at_line_start(const sbuf *b) { return b->n == 0 || b->p[b->n - 1] == '\n'; }

static void sb_newline(sbuf *b)
{
    if (b->glue) {
        b->glue = 0;
        b->space = 1;
        return;
    }
    b->space = 0;
    if (!sb_at_line_start(b))
        sb_add(b, "\n", 1);
}

/* Visible text, white space collapsed (U+00A0 counts as space). */
static void sb_text(sbuf *b, const char *s)
{
    const unsigned char *u = (const unsigned char *)s;
    while (*u) {
        size_t ws = 0;
        if (is_space(*u))
            ws = 1;
        else if (u[0] == 0xC2 && u[1] == 0xA0)
            ws = 2;
        if (ws) {
            b->space = 1;
            u += ws;
            continue;
        }
        const unsigned char *start = u;
        while (*u && !is_space(*u) && !(u[0] == 0xC2 && u[1] == 0xA0))
            u++;
        if (b->space && !sb_at_line_start(b) && b->p[b->n - 1] != ' ')
            sb_add(b, " ", 1);
        b->space = 0;
        sb_add(b, (const char *)start, (size_t)(u - start));
    }
}

/* The text, or NULL when empty; trailing white space and newlines dropped. */
static char *sb_take(sbuf *b)
{
    while (b->n && is_space((unsigned char)b->p[b->n - 1]))
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

static void warn(cmr_report *r, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Warnings are advisory: one that cannot be stored (no memory, too many) is dropped. */
static void warn(cmr_report *r, const char *f, ...)
{
    if (r->n_warnings > MAX_WARNINGS)
        return;
    char **w = realloc(r->warnings, (r->n_warnings + 1) * sizeof *w);
    if (!w)
        return;
    r->warnings = w;
    if (r->n_warnings == MAX_WARNINGS) {
        w[r->n_warnings] = fmt("%s: more warnings not shown", name_or_memory(r->path));
    } else {
        va_list ap;
        va_start(ap, f);
        char *msg = vfmt(f, ap);
        va_end(ap);
        w[r->n_warnings] = msg ? fmt("%s: %s", name_or_memory(r->path), msg) : NULL;
        free(msg);
    }
    if (w[r->n_warnings])
        r->n_warnings++;
}

static cmr_report *report_new(const char *path, cmr_report_kind kind)
{
    cmr_report *r = calloc(1, sizeof *r);
    if (!r)
        return NULL;
    r->kind = kind;
    if (path && !(r->path = dup0(path))) {
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
static void clip_text(cmr_report *r, char *s, const char *what)
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
    warn(r, "%s is %zu bytes; cut to %zu", what, n, cut);
}

static const char *const question_systems[] = {
    "LOINC", "DCM", "2.16.840.1.113883.5.4" /* HL7 ActCode */, "1.2.840.10008.2.6.1" /* DICOM UIDs */,
};

static int is_question_system(const char *system)
{
    if (!system)
        return 0;
    for (size_t i = 0; i < sizeof question_systems / sizeof *question_systems; i++)
        if (!strcmp(system, question_systems[i]))
            return 1;
    return 0;
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
static int add_code(cmr_report *r, const char *code, const char *system, const char *system_name,
                    const char *label, const char *where, int line)
{
    if (!nonblank(code))
        return 0;
    char *c = dup_trim(code);
    if (!c)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(r->path));
    const char *known = cmr_code_system_name(system);
    if (!known && system_name)
        known = cmr_code_system_name(system_name);
    const char *sys_src = known ? known : (system && *system ? system : system_name);
    char *sys = dup_trim(sys_src);
    char *lab = dup_trim(label);
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
    return rc ? cmr_fail(rc, "%s: out of memory", name_or_memory(r->path)) : 0;
}

/* ---- XML: safe parsing, errors with lines ------------------------------------------ */

/* libxml2 writes namespaces into messages as "{urn:...}name": keep the name. */
static char *clean_message(const char *msg)
{
    if (!msg)
        return dup0("unknown XML error");
    size_t n = strlen(msg);
    char *out = malloc(n + 1), *o = out;
    if (!out)
        return NULL;
    for (const char *s = msg; *s; s++) {
        if (*s == '{') {
            const char *close = strchr(s, '}');
            if (close && memchr(s, ':', (size_t)(close - s))) {
                s = close;
                continue;
            }
        }
        *o++ = *s == '\n' ? ' ' : *s;
    }
    while (o > out && is_space((unsigned char)o[-1]))
        o--;
    *o = '\0';
    return out;
}

typedef struct xml_errs {
    const char *path;
    cmr_xml_problems *list; /* may be NULL */
    size_t n;               /* errors counted */
    char *first;            /* "PATH:LINE: element 'x': message" of the first */
    int first_code;
    size_t n_ns;            /* namespace errors: reported as warnings, not fatal */
    char *ns_first;
    int oom;
} xml_errs;

static void xml_errs_clear(xml_errs *e)
{
    free(e->first);
    free(e->ns_first);
    e->first = e->ns_first = NULL;
}

static void on_xml_error(void *data, xmlErrorPtr err)
{
    xml_errs *e = data;
    if (!err || err->level < XML_ERR_ERROR)
        return;
    /* Follows an invalid value in an identity constraint; the value's own error says it. */
    if (err->message && strstr(err->message, "No precomputed value available"))
        return;
    const char *element = NULL;
    if (err->node && ((xmlNodePtr)err->node)->type == XML_ELEMENT_NODE)
        element = (const char *)((xmlNodePtr)err->node)->name;
    int line = err->line;
    if (line <= 0 && err->node)
        line = (int)xmlGetLineNo((xmlNodePtr)err->node);
    char *msg = clean_message(err->message);
    if (!msg) {
        e->oom = 1;
        return;
    }
    /* Schema messages repeat the element ("Element 'x': ..."): it is named once, by us. */
    if (element && !strncmp(msg, "Element '", 9)) {
        const char *rest = strstr(msg, "': ");
        if (rest)
            memmove(msg, rest + 3, strlen(rest + 3) + 1);
    }
    if (err->domain == XML_FROM_NAMESPACE) {
        if (e->n_ns++ == 0)
            e->ns_first = fmt("line %d: %s", line, msg);
        free(msg);
        return;
    }
    if (e->n++ == 0) {
        e->first_code = err->code;
        if (element)
            e->first = fmt("%s:%d: element '%s': %s", name_or_memory(e->path), line, element, msg);
        else
            e->first = fmt("%s:%d: %s", name_or_memory(e->path), line, msg);
        if (!e->first)
            e->oom = 1;
    }
    if (e->list && e->list->n_items < MAX_PROBLEM_ITEMS) {
        cmr_xml_problem *items = realloc(e->list->items, (e->list->n_items + 1) * sizeof *items);
        char *el = element ? dup0(element) : NULL;
        if (!items || (element && !el)) {
            free(el);
            if (items)
                e->list->items = items;
            e->oom = 1;
        } else {
            e->list->items = items;
            items[e->list->n_items++] = (cmr_xml_problem){line, el, msg};
            msg = NULL;
        }
    }
    if (e->list)
        e->list->n++;
    free(msg);
}

void cmr_xml_problems_clear(cmr_xml_problems *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n_items; i++) {
        free(p->items[i].element);
        free(p->items[i].message);
    }
    free(p->items);
    memset(p, 0, sizeof *p);
}

typedef struct parse_state {
    xml_errs *errs;
    int entity_line;
    char entity[64];
} parse_state;

/* An entity declaration stops the parse: reports have no use for entities,
 * and refusing them is the one sure defence against expansion bombs. */
static void on_entity_decl(void *ctx, const xmlChar *name, int type, const xmlChar *public_id,
                           const xmlChar *system_id, xmlChar *content)
{
    (void)type, (void)public_id, (void)system_id, (void)content;
    xmlParserCtxtPtr ctxt = ctx;
    parse_state *st = ctxt->_private;
    if (st && !st->entity_line) {
        st->entity_line = xmlSAX2GetLineNumber(ctx);
        if (st->entity_line <= 0)
            st->entity_line = 1;
        snprintf(st->entity, sizeof st->entity, "%s", name ? (const char *)name : "?");
    }
    xmlStopParser(ctxt);
}

static void on_unparsed_entity_decl(void *ctx, const xmlChar *name, const xmlChar *public_id,
                                    const xmlChar *system_id, const xmlChar *notation)
{
    (void)notation;
    on_entity_decl(ctx, name, 0, public_id, system_id, NULL);
}

static int any_entity_ref(xmlNodePtr n, int depth)
{
    for (; n; n = n->next) {
        if (n->type == XML_ENTITY_REF_NODE)
            return 1;
        if (depth < 512 && n->type == XML_ELEMENT_NODE &&
            (any_entity_ref((xmlNodePtr)n->properties, depth + 1) || any_entity_ref(n->children, depth + 1)))
            return 1;
        if (n->type == XML_ATTRIBUTE_NODE && any_entity_ref(n->children, depth + 1))
            return 1;
    }
    return 0;
}

/* Parses untrusted XML.  Errors: CMR_EFORMAT naming file and line;
 * namespace errors are left in errs->n_ns for the caller to weigh. */
static int xml_parse(const char *path, const char *data, size_t len, xml_errs *errs, xmlDocPtr *out)
{
    *out = NULL;
    const char *name = name_or_memory(path);
    if (len > CMR_REPORT_MAX_BYTES)
        return cmr_fail(CMR_EFORMAT, "%s: %zu bytes; XML files over %zu bytes are not read", name, len,
                        (size_t)CMR_REPORT_MAX_BYTES);
    if (len == 0)
        return cmr_fail(CMR_EFORMAT, "%s: empty file", name);
    xml_init();
    xmlParserCtxtPtr ctxt = xmlNewParserCtxt();
    if (!ctxt)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    parse_state st = {.errs = errs};
    ctxt->_private = &st;
    ctxt->sax->entityDecl = on_entity_decl;
    ctxt->sax->unparsedEntityDecl = on_unparsed_entity_decl;

    /* The handler is thread-local in libxml2: restore the caller's. */
    xmlStructuredErrorFunc saved = xmlStructuredError;
    void *saved_ctx = xmlStructuredErrorContext;
    xmlSetStructuredErrorFunc(errs, on_xml_error);
    xmlDocPtr doc = xmlCtxtReadMemory(ctxt, data, (int)len, path, NULL, XML_OPTIONS);
    xmlSetStructuredErrorFunc(saved_ctx, saved);
    int well_formed = ctxt->wellFormed;
    xmlFreeParserCtxt(ctxt);

    int rc = 0;
    if (st.entity_line) {
        rc = cmr_fail(CMR_EFORMAT, "%s:%d: declares entity '%s': entity declarations are not accepted in reports",
                      name, st.entity_line, st.entity);
    } else if (errs->n || !well_formed) {
        if (errs->first) {
            int truncated = errs->first_code == XML_ERR_TAG_NOT_FINISHED || errs->first_code == XML_ERR_DOCUMENT_END ||
                            errs->first_code == XML_ERR_LTSLASH_REQUIRED || errs->first_code == XML_ERR_GT_REQUIRED;
            rc = cmr_fail(CMR_EFORMAT, "%s (not well-formed XML%s)", errs->first,
                          truncated ? "; is the file truncated?" : "");
        } else {
            rc = cmr_fail(errs->oom ? CMR_ENOMEM : CMR_EFORMAT, "%s: not well-formed XML", name);
        }
    } else if (!doc) {
        rc = cmr_fail(CMR_ENOMEM, "%s: out of memory parsing XML", name);
    } else if (!xmlDocGetRootElement(doc)) {
        rc = cmr_fail(CMR_EFORMAT, "%s: XML without a root element", name);
    } else if (any_entity_ref(doc->children, 0)) {
        rc = cmr_fail(CMR_EFORMAT, "%s: uses entity references: not accepted in reports", name);
    }
    if (rc) {
        xmlFreeDoc(doc);
        return rc;
    }
    *out = doc;
    return 0;
}

static int read_file(const char *path, char **data, size_t *len)
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

/* ---- XPath helpers ------------------------------------------------------------------- */

static xmlXPathContextPtr xpath_new(xmlDocPtr doc)
{
    xmlXPathContextPtr x = xmlXPathNewContext(doc);
    if (!x)
        return NULL;
    if (xmlXPathRegisterNs(x, BAD_CAST "h", BAD_CAST NS_HL7) || xmlXPathRegisterNs(x, BAD_CAST "xsi", BAD_CAST NS_XSI) ||
        xmlXPathRegisterNs(x, BAD_CAST "ps3", BAD_CAST NS_PS320) ||
        xmlXPathRegisterNs(x, BAD_CAST "m", BAD_CAST CMR_MANIFEST_NS)) {
        xmlXPathFreeContext(x);
        return NULL;
    }
    return x;
}

/* Nodes matching expr under node (NULL: the document); NULL result = none or no memory. */
static xmlXPathObjectPtr xpath_nodes(xmlXPathContextPtr x, xmlNodePtr node, const char *expr)
{
    xmlXPathObjectPtr o = node ? xmlXPathNodeEval(node, BAD_CAST expr, x) : xmlXPathEvalExpression(BAD_CAST expr, x);
    if (o && (o->type != XPATH_NODESET || !o->nodesetval || o->nodesetval->nodeNr == 0)) {
        xmlXPathFreeObject(o);
        return NULL;
    }
    return o;
}

static int is_hl7(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name) && n->ns &&
           !strcmp((const char *)n->ns->href, NS_HL7);
}

static xmlNodePtr hl7_child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (is_hl7(c, name))
            return c;
    return NULL;
}

/* Attribute without namespace, trimmed, malloc'ed; NULL if absent or blank. */
static char *attr(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    char *s = dup_trim((const char *)v);
    xmlFree(v);
    return s;
}

static int attr_is(xmlNodePtr n, const char *name, const char *value)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    int eq = v && !strcasecmp((const char *)v, value);
    xmlFree(v);
    return eq;
}

/* ---- CDA narrative to plain text ------------------------------------------------------- */

static int local_is(xmlNodePtr n, const char *name) { return !strcmp((const char *)n->name, name); }

static void flatten_children(sbuf *b, xmlNodePtr n, int depth);

static void flatten_element(sbuf *b, xmlNodePtr n, int depth)
{
    /* Deleted revisions are not part of what the report says. */
    if (attr_is(n, "revised", "delete"))
        return;
    if (local_is(n, "br")) {
        sb_newline(b);
    } else if (local_is(n, "footnoteRef") || local_is(n, "renderMultiMedia") || local_is(n, "col") ||
               local_is(n, "colgroup")) {
        /* references and layout only */
    } else if (local_is(n, "item")) {
        sb_newline(b);
        xmlNodePtr list = n->parent;
        if (list && list->type == XML_ELEMENT_NODE && local_is(list, "list") && attr_is(list, "listType", "ordered")) {
            int k = 1;
            for (xmlNodePtr s = list->children; s && s != n; s = s->next)
                if (s->type == XML_ELEMENT_NODE && local_is(s, "item"))
                    k++;
            char num[16];
            snprintf(num, sizeof num, "%d. ", k);
            sb_add(b, num, strlen(num));
        }
        flatten_children(b, n, depth);
        sb_newline(b);
    } else if (local_is(n, "tr")) {
        sb_newline(b);
        int cell = 0;
        for (xmlNodePtr c = n->children; c; c = c->next) {
            if (c->type != XML_ELEMENT_NODE)
                continue;
            if (cell++ && !sb_at_line_start(b)) {
                b->space = 0;
                sb_add(b, " | ", 3);
            }
            flatten_element(b, c, depth + 1);
        }
        sb_newline(b);
    } else if (local_is(n, "paragraph") || local_is(n, "list") || local_is(n, "table") || local_is(n, "caption") ||
               local_is(n, "thead") || local_is(n, "tbody") || local_is(n, "tfoot")) {
        sb_newline(b);
        flatten_children(b, n, depth);
        sb_newline(b);
    } else {
        flatten_children(b, n, depth); /* content, sub, sup, linkHtml, footnote, td, th, ... */
    }
}

static void flatten_children(sbuf *b, xmlNodePtr n, int depth)
{
    if (depth > 300) /* libxml2 refuses deeper documents anyway */
        return;
    for (xmlNodePtr c = n->children; c; c = c->next) {
        if (c->type == XML_TEXT_NODE || c->type == XML_CDATA_SECTION_NODE) {
            if (c->content)
                sb_text(b, (const char *)c->content);
        } else if (c->type == XML_ELEMENT_NODE) {
            flatten_element(b, c, depth + 1);
        }
    }
}

/* A section's text: its narrative, then each subsection as "Title: text". */
static void section_text(sbuf *b, xmlNodePtr section, int depth)
{
    xmlNodePtr text = hl7_child(section, "text");
    if (text) {
        sb_newline(b);
        flatten_children(b, text, 0);
        sb_newline(b);
    }
    if (depth > 8)
        return;
    for (xmlNodePtr comp = section->children; comp; comp = comp->next) {
        if (!is_hl7(comp, "component"))
            continue;
        xmlNodePtr sub = hl7_child(comp, "section");
        if (!sub)
            continue;
        xmlNodePtr title = hl7_child(sub, "title");
        sb_newline(b);
        if (title) {
            size_t before = b->n;
            flatten_children(b, title, 0);
            if (b->n > before) {
                sb_add(b, ":", 1);
                b->space = 1;
                b->glue = 1;
            }
        }
        section_text(b, sub, depth + 1);
    }
}

static char *node_title(xmlNodePtr section)
{
    xmlNodePtr t = hl7_child(section, "title");
    if (!t)
        return NULL;
    sbuf b = {0};
    flatten_children(&b, t, 0);
    return sb_take(&b);
}

/* ---- CDA content ------------------------------------------------------------------------ */

enum { SEC_IMPRESSION_CODE, SEC_IMPRESSION_TITLE, SEC_CONCLUSION_CODE, SEC_CONCLUSION_TITLE, SEC_SUMMARY_TITLE,
       SEC_FINDINGS_CODE, SEC_FINDINGS_TITLE, SEC_N };

static const struct {
    const char *what;
    int by_title;
} sec_info[SEC_N] = {
    {"section coded LOINC 19005-8 (Impression)", 0}, {"section titled", 1},
    {"section coded LOINC 55110-1 (Conclusion)", 0}, {"section titled", 1}, {"section titled", 1},
    {"section coded LOINC", 0},                      {"section titled", 1},
};

/* Lower-case ASCII copy with runs of space collapsed and a trailing ':' removed. */
static void normalize_label(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    int space = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_space(c)) {
            space = o > 0;
            continue;
        }
        if (space && o + 2 < cap)
            out[o++] = ' ';
        space = 0;
        out[o++] = (char)tolower(c);
    }
    while (o && (out[o - 1] == ':' || out[o - 1] == ' '))
        o--;
    out[o] = '\0';
}

static int starts_word(const char *s, const char *word)
{
    size_t n = strlen(word);
    return !strncmp(s, word, n) && (s[n] == '\0' || s[n] == ' ' || s[n] == 's' || s[n] == ':' || s[n] == ',' ||
                                     s[n] == '/' || s[n] == '-');
}

static int title_class(const char *title)
{
    if (!title)
        return -1;
    char t[128];
    normalize_label(title, strlen(title), t, sizeof t);
    const char *s = t;
    if (!strncmp(s, "final ", 6) || !strncmp(s, "overall ", 8))
        s = strchr(s, ' ') + 1;
    if (starts_word(s, "impression"))
        return SEC_IMPRESSION_TITLE;
    if (starts_word(s, "conclusion"))
        return SEC_CONCLUSION_TITLE;
    if (starts_word(s, "summary"))
        return SEC_SUMMARY_TITLE;
    if (starts_word(t, "finding"))
        return SEC_FINDINGS_TITLE;
    return -1;
}

/* A section's class by its code, -1 if none of ours. */
static int code_class(xmlNodePtr section, char code_out[32])
{
    xmlNodePtr code = hl7_child(section, "code");
    code_out[0] = '\0';
    if (!code)
        return -1;
    char *c = attr(code, "code"), *sys = attr(code, "codeSystem");
    int cls = -1;
    /* A LOINC code written without its system is still taken for one. */
    if (c && (!sys || !strcmp(sys, OID_LOINC))) {
        snprintf(code_out, 32, "%s", c);
        if (!strcmp(c, "19005-8"))
            cls = SEC_IMPRESSION_CODE;
        else if (!strcmp(c, "55110-1"))
            cls = SEC_CONCLUSION_CODE;
        else if (!strcmp(c, "59776-5") || !strcmp(c, "18782-3"))
            cls = SEC_FINDINGS_CODE;
    }
    free(c);
    free(sys);
    return cls;
}

typedef struct sec_pick {
    xmlNodePtr node[SEC_N]; /* first section of each class with text */
    xmlNodePtr empty[SEC_N];/* first section of each class without text */
    int count[SEC_N];
    char code[SEC_N][32];
} sec_pick;

static int section_has_text(xmlNodePtr section)
{
    sbuf b = {0};
    section_text(&b, section, 0);
    int oom = b.oom;
    char *s = sb_take(&b);
    int has = s != NULL;
    free(s);
    return has || oom;
}

static char *node_title(xmlNodePtr section);

/* "section coded LOINC 19005-8 (Impression) (line 41)", "section titled 'Findings' (line 30)" */
static char *describe_section(xmlNodePtr sec, int cls, const char *code)
{
    long line = xmlGetLineNo(sec);
    if (sec_info[cls].by_title) {
        char *title = node_title(sec);
        char *d = fmt("%s '%.80s' (line %ld)", sec_info[cls].what, title ? title : "", line);
        free(title);
        return d;
    }
    if (cls == SEC_FINDINGS_CODE)
        return fmt("%s %s (line %ld)", sec_info[cls].what, code, line);
    return fmt("%s (line %ld)", sec_info[cls].what, line);
}

static int take_section(cmr_report *r, xmlNodePtr sec, int cls, const char *code, char **text, char **source)
{
    sbuf b = {0};
    section_text(&b, sec, 0);
    if (b.oom) {
        free(b.p);
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(r->path));
    }
    *text = sb_take(&b);
    *source = describe_section(sec, cls, code);
    if (!*source) {
        free(*text);
        *text = NULL;
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(r->path));
    }
    return 0;
}

static int cda_sections(cmr_report *r, xmlXPathContextPtr x)
{
    sec_pick p;
    memset(&p, 0, sizeof p);
    xmlXPathObjectPtr o = xpath_nodes(x, NULL, "/h:ClinicalDocument/h:component/h:structuredBody//h:section");
    for (int i = 0; o && i < o->nodesetval->nodeNr; i++) {
        xmlNodePtr sec = o->nodesetval->nodeTab[i];
        char code[32];
        int cls = code_class(sec, code);
        if (cls < 0) {
            char *title = node_title(sec);
            cls = title_class(title);
            free(title);
        }
        if (cls < 0)
            continue;
        /* A subsection of a section taken for the same purpose is part of its text. */
        int nested = 0;
        for (xmlNodePtr a = sec->parent; a && !nested; a = a->parent)
            nested = a == p.node[cls];
        if (nested)
            continue;
        p.count[cls]++;
        if (section_has_text(sec)) {
            if (!p.node[cls]) {
                p.node[cls] = sec;
                memcpy(p.code[cls], code, sizeof code);
            }
        } else if (!p.empty[cls]) {
            p.empty[cls] = sec;
        }
    }
    xmlXPathFreeObject(o);

    int rc = 0;
    static const int imp_order[] = {SEC_IMPRESSION_CODE, SEC_IMPRESSION_TITLE, SEC_CONCLUSION_CODE,
                                    SEC_CONCLUSION_TITLE, SEC_SUMMARY_TITLE};
    int chosen = -1, empties = 0;
    for (size_t k = 0; k < sizeof imp_order / sizeof *imp_order && chosen < 0; k++) {
        int cls = imp_order[k];
        if (p.node[cls]) {
            chosen = cls;
        } else if (p.empty[cls]) {
            empties++;
            char *d = describe_section(p.empty[cls], cls, p.code[cls]);
            warn(r, "%s has no text", d ? d : "an impression section");
            free(d);
        }
    }
    if (chosen >= 0) {
        if ((rc = take_section(r, p.node[chosen], chosen, p.code[chosen], &r->impression, &r->impression_source)))
            return rc;
        if (p.count[chosen] > 1)
            warn(r, "%d impression sections of one kind; the first is used: %s", p.count[chosen],
                 r->impression_source);
    } else if (empties) {
        warn(r, "no impression: every Impression or Conclusion section is empty");
    } else {
        warn(r, "no impression: no section coded LOINC 19005-8 (Impression) or 55110-1 (Conclusion), and no "
                "section titled Impression, Conclusion or Summary");
    }
    int f = p.node[SEC_FINDINGS_CODE] ? SEC_FINDINGS_CODE : p.node[SEC_FINDINGS_TITLE] ? SEC_FINDINGS_TITLE : -1;
    if (f >= 0 && (rc = take_section(r, p.node[f], f, p.code[f], &r->findings, &r->findings_source)))
        return rc;
    return 0;
}

static int is_coded_type(xmlNodePtr value)
{
    xmlChar *t = xmlGetNsProp(value, BAD_CAST "type", BAD_CAST NS_XSI);
    if (!t) /* prefix left undeclared by a sloppy writer */
        t = xmlGetNoNsProp(value, BAD_CAST "xsi:type");
    if (!t)
        return 0;
    const char *local = strchr((const char *)t, ':');
    local = local ? local + 1 : (const char *)t;
    int coded = !strcmp(local, "CD") || !strcmp(local, "CE") || !strcmp(local, "CV") || !strcmp(local, "CO");
    xmlFree(t);
    return coded;
}

static int add_code_element(cmr_report *r, xmlNodePtr el, const char *where)
{
    char *code = attr(el, "code"), *sys = attr(el, "codeSystem"), *sys_name = attr(el, "codeSystemName");
    char *label = attr(el, "displayName");
    int rc = add_code(r, code, sys, sys_name, label, where, (int)xmlGetLineNo(el));
    free(code);
    free(sys);
    free(sys_name);
    free(label);
    for (xmlNodePtr t = el->children; !rc && t; t = t->next)
        if (is_hl7(t, "translation"))
            rc = add_code_element(r, t, "translation");
    return rc;
}

static int cda_codes(cmr_report *r, xmlXPathContextPtr x)
{
    xmlXPathObjectPtr o = xpath_nodes(x, NULL, "/h:ClinicalDocument/h:component/h:structuredBody//h:observation");
    int rc = 0;
    for (int i = 0; o && !rc && i < o->nodesetval->nodeNr; i++) {
        xmlNodePtr obs = o->nodesetval->nodeTab[i];
        /* Negated ("no myocarditis") and image references (DICOM object catalog) are not diagnoses. */
        if (attr_is(obs, "negationInd", "true") || attr_is(obs, "classCode", "DGIMG"))
            continue;
        if (r->n_codes >= MAX_CODES) {
            warn(r, "more than %d coded entries; the rest are ignored", MAX_CODES);
            break;
        }
        int has_value = 0;
        for (xmlNodePtr v = obs->children; !rc && v; v = v->next) {
            if (!is_hl7(v, "value"))
                continue;
            has_value = 1;
            if (is_coded_type(v))
                rc = add_code_element(r, v, "observation value");
        }
        if (rc || has_value)
            continue;
        /* Without a value the code itself may be the finding, unless it comes
         * from a vocabulary of questions (LOINC, DCM, ActCode). */
        xmlNodePtr code = hl7_child(obs, "code");
        if (!code)
            continue;
        char *sys = attr(code, "codeSystem");
        const char *name = cmr_code_system_name(sys);
        int question = is_question_system(name ? name : sys);
        free(sys);
        if (!question)
            rc = add_code_element(r, code, "observation code");
    }
    xmlXPathFreeObject(o);
    return rc;
}

static char *first_attr(xmlXPathContextPtr x, const char *expr, const char *name, int need_no_extension,
                        int *line)
{
    xmlXPathObjectPtr o = xpath_nodes(x, NULL, expr);
    char *v = NULL;
    for (int i = 0; o && !v && i < o->nodesetval->nodeNr; i++) {
        xmlNodePtr n = o->nodesetval->nodeTab[i];
        if (n->type != XML_ELEMENT_NODE)
            continue;
        /* An II with an extension names the issuer in @root, not the object. */
        if (need_no_extension) {
            char *ext = attr(n, "extension");
            int has_ext = ext != NULL;
            free(ext);
            if (has_ext)
                continue;
        }
        v = attr(n, name);
        if (v && line)
            *line = (int)xmlGetLineNo(n);
    }
    xmlXPathFreeObject(o);
    return v;
}

static void cda_links(cmr_report *r, xmlXPathContextPtr x)
{
    /* PS3.20: documentationOf/serviceEvent/id/@root is the Study Instance UID;
     * the body's DICOM object catalog repeats it on the study act (113014, DCM). */
    int line = 0;
    char *uid = first_attr(x, "/h:ClinicalDocument/h:documentationOf/h:serviceEvent/h:id", "root", 1, &line);
    const char *where = "documentationOf/serviceEvent/id";
    if (!uid) {
        uid = first_attr(x,
                         "/h:ClinicalDocument/h:component/h:structuredBody//h:act[h:code/@code='113014' and "
                         "h:code/@codeSystem='1.2.840.10008.2.16.4']/h:id",
                         "root", 1, &line);
        where = "the DICOM object catalog's study act";
    }
    if (uid && !valid_uid(uid)) {
        warn(r, "line %d: %s root '%.80s' is not a DICOM UID; ignored", line, where, uid);
        free(uid);
        uid = NULL;
    }
    r->study_uid = uid;
    if (uid) {
        /* One report documenting several studies is linked by the first. */
        xmlXPathObjectPtr o = xpath_nodes(x, NULL, "/h:ClinicalDocument/h:documentationOf/h:serviceEvent/h:id");
        for (int i = 0; o && i < o->nodesetval->nodeNr; i++) {
            char *other = attr(o->nodesetval->nodeTab[i], "root");
            char *ext = attr(o->nodesetval->nodeTab[i], "extension");
            if (other && !ext && valid_uid(other) && strcmp(other, uid)) {
                warn(r, "documents more than one study (%s, %s, ...); linked by the first", uid, other);
                free(other);
                break;
            }
            free(other);
            free(ext);
        }
        xmlXPathFreeObject(o);
    }
    /* PS3.20 puts the accession in order/ps3-20:accessionNumber; older writers
     * (HL7 DIR, Supplement 155 drafts) in order/id/@extension. */
    line = 0;
    char *acc = first_attr(x, "/h:ClinicalDocument/h:inFulfillmentOf/h:order/ps3:accessionNumber", "extension", 0,
                           &line);
    where = "inFulfillmentOf/order/accessionNumber";
    if (!acc) {
        acc = first_attr(x, "/h:ClinicalDocument/h:inFulfillmentOf/h:order/h:id", "extension", 0, &line);
        where = "inFulfillmentOf/order/id";
    }
    if (acc && !valid_accession(acc)) {
        warn(r, "line %d: %s extension '%.80s' is not a DICOM accession number (at most 16 characters); ignored",
             line, where, acc);
        free(acc);
        acc = NULL;
    }
    r->accession_number = acc;
}

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Base64 with white space ignored; NULL on bad input. */
static char *b64_decode(const char *in, size_t *out_len)
{
    size_t n = strlen(in);
    char *out = malloc(n / 4 * 3 + 4);
    if (!out)
        return NULL;
    uint32_t acc = 0;
    int bits = 0, pad = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)in[i];
        if (is_space(c))
            continue;
        if (c == '=') {
            pad++;
            continue;
        }
        const char *p = pad ? NULL : strchr(B64, c);
        if (!p || !c) {
            free(out);
            return NULL;
        }
        acc = (acc << 6) | (uint32_t)(p - B64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (char)((acc >> bits) & 0xFF);
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

static int parse_text_into(cmr_report *r, const char *text, size_t len, const char *source_prefix);

/* A CDA whose body is not structured: plain text is read like a text report. */
static int cda_nonxml_body(cmr_report *r, xmlNodePtr body)
{
    xmlNodePtr text = hl7_child(body, "text");
    char *media = text ? attr(text, "mediaType") : NULL;
    int rc = 0;
    if (!text) {
        warn(r, "nonXMLBody without text: no impression");
    } else if (media && strcasecmp(media, "text/plain")) {
        warn(r, "line %ld: the body is nonXMLBody of media type %.60s, which is not read: no impression",
             xmlGetLineNo(text), media);
    } else {
        xmlChar *content = xmlNodeGetContent(text);
        char *data = NULL;
        size_t len = 0;
        if (content && attr_is(text, "representation", "B64")) {
            data = b64_decode((const char *)content, &len);
            if (!data)
                warn(r, "line %ld: nonXMLBody text is not valid base64: no impression", xmlGetLineNo(text));
        } else if (content) {
            len = strlen((const char *)content);
            data = dupn((const char *)content, len);
            if (!data)
                rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(r->path));
        }
        xmlFree(content);
        const unsigned char *u = (const unsigned char *)data;
        int utf16 = data && len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF));
        if (data && !utf16 && memchr(data, 0, len)) {
            warn(r, "line %ld: nonXMLBody text holds binary data: no impression", xmlGetLineNo(text));
        } else if (data) {
            rc = parse_text_into(r, data, len, "nonXMLBody text, ");
        }
        free(data);
    }
    free(media);
    return rc;
}

static int add_schema_problems(cmr_report *r, const cmr_xml_schema *s, xmlDocPtr doc, int fatal);

static int cda_from_doc(cmr_report *r, xmlDocPtr doc, const cmr_report_options *opts, const xml_errs *errs)
{
    const char *name = name_or_memory(r->path);
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (strcmp((const char *)root->name, "ClinicalDocument"))
        return cmr_fail(CMR_EFORMAT, "%s:%ld: root element is <%.60s>, not an HL7 CDA ClinicalDocument", name,
                        xmlGetLineNo(root), (const char *)root->name);
    if (!root->ns || strcmp((const char *)root->ns->href, NS_HL7))
        return cmr_fail(CMR_EFORMAT, "%s:%ld: ClinicalDocument is in namespace '%.80s', not %s", name,
                        xmlGetLineNo(root), root->ns ? (const char *)root->ns->href : "(none)", NS_HL7);
    if (errs->n_ns)
        warn(r, "%zu namespace error(s), first at %s", errs->n_ns, errs->ns_first ? errs->ns_first : "?");
    int rc = 0;
    if (opts && opts->cda_schema && (rc = add_schema_problems(r, opts->cda_schema, doc, opts->schema_errors_fatal)))
        return rc;
    xmlXPathContextPtr x = xpath_new(doc);
    if (!x)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    cda_links(r, x);
    xmlNodePtr comp = hl7_child(root, "component");
    xmlNodePtr structured = hl7_child(comp, "structuredBody"), unstructured = hl7_child(comp, "nonXMLBody");
    if (structured) {
        rc = cda_sections(r, x);
        if (!rc)
            rc = cda_codes(r, x);
    } else if (unstructured) {
        rc = cda_nonxml_body(r, unstructured);
    } else {
        warn(r, "no component/structuredBody or nonXMLBody: no impression");
    }
    xmlXPathFreeContext(x);
    clip_text(r, r->impression, "the impression");
    clip_text(r, r->findings, "the findings");
    return rc;
}

int cmr_report_parse_cda(const char *path, const char *xml, size_t len, const cmr_report_options *opts,
                         cmr_report **out)
{
    *out = NULL;
    if (!xml && len)
        return cmr_fail(CMR_EINVAL, "%s: no data", name_or_memory(path));
    cmr_report *r = report_new(path, CMR_REPORT_CDA);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(path));
    xml_errs errs = {.path = path};
    xmlDocPtr doc = NULL;
    int rc = xml_parse(path, xml ? xml : "", len, &errs, &doc);
    if (!rc)
        rc = cda_from_doc(r, doc, opts, &errs);
    xmlFreeDoc(doc);
    xml_errs_clear(&errs);
    if (rc) {
        cmr_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

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
    sb_add(b, u, n);
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
        sb_add(b, "\n", 1);
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
                sb_add(out, in + i, 1);
            }
        }
    } else {
        warn(r, "not valid UTF-8 (byte 0x%02X at offset %zu); read as Windows-1252", u[bad], bad);
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
    normalize_label(l->s + start, lend - start, label, sizeof label);
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
            v = dupn(s + (p - low), (size_t)(e - p));
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
                if (valid_uid(v)) {
                    r->study_uid = v;
                    v = NULL;
                } else {
                    warn(r, "line %d: Study Instance UID '%.80s' is not a DICOM UID; ignored", lines[i].no, v);
                }
                free(v);
            }
        }
        if (!have_acc) {
            char *v = field_value(lines[i].s, lines[i].n, acc_labels, 1, acc_skips, 6);
            if (v) {
                have_acc = 1;
                if (valid_accession(v)) {
                    r->accession_number = v;
                    v = NULL;
                } else {
                    warn(r, "line %d: accession number '%.80s' is longer than 16 characters or has control "
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
        sb_add(&b, heading->s + heading->rest, heading->n - heading->rest);
        char last = heading->s[heading->n - 1];
        prev_open = !(last == '.' || last == '!' || last == '?' || last == ':' || last == ';');
    }
    for (size_t i = from; i < to; i++) {
        const tline *l = &lines[i];
        if (l->n == 0 || is_rule(l->s, l->n)) {
            sb_newline(&b);
            prev_open = 0;
            continue;
        }
        int join = prev_open && !sb_at_line_start(&b) && !is_list_item(l->s, l->n) &&
                   (islower((unsigned char)l->s[0]) || l->s[0] == '(');
        if (join)
            sb_add(&b, " ", 1);
        else
            sb_newline(&b);
        sb_add(&b, l->s, l->n);
        char last = l->s[l->n - 1];
        prev_open = !(last == '.' || last == '!' || last == '?' || last == ':' || last == ';');
    }
    if (b.oom) {
        free(b.p);
        *out = NULL;
        return CMR_ENOMEM;
    }
    *out = sb_take(&b);
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
    while (n && (is_space((unsigned char)*s) || strchr(strip, *s)))
        s++, n--;
    while (n && (is_space((unsigned char)s[n - 1]) || strchr(strip, s[n - 1])))
        n--;
    return n ? dupn(s, n) : NULL;
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
    while (n && is_space((unsigned char)*in))
        in++, n--;
    while (n && is_space((unsigned char)in[n - 1]))
        n--;
    *in_n = n;
    *after = close + 1;
    return in;
}

static int text_code_entry(cmr_report *r, const char *e, size_t n, const char *dflt, int line)
{
    while (n && is_space((unsigned char)*e))
        e++, n--;
    const char *end = e + n;
    size_t t = 0;
    while (t < n && !is_space((unsigned char)e[t]) && e[t] != '(')
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
        char *c = dupn(code, code_n);
        rc = c ? add_code(r, c, dflt ? dflt : system_by_shape(code, code_n), NULL, label, "text code line", line)
               : CMR_ENOMEM;
        free(c);
    }
    /* Groups naming their system: "(SNOMED CT 233873004)". */
    size_t in_n;
    const char *after, *in;
    for (const char *p = e; !rc && (in = next_group(p, end, &in_n, &after)); p = after) {
        size_t last = in_n;
        while (last && !is_space((unsigned char)in[last - 1]))
            last--;
        if (last == 0 || !code_like(in + last, in_n - last))
            continue;
        char *name = trimmed_dup(in, last, ":");
        const char *known = name ? cmr_code_system_name(name) : NULL;
        free(name);
        if (!known)
            continue;
        char *c = dupn(in + last, in_n - last);
        rc = c ? add_code(r, c, known, NULL, label, "text code line", line) : CMR_ENOMEM;
        free(c);
    }
    free(label);
    if (rc == CMR_ENOMEM)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name_or_memory(r->path));
    return rc;
}

static int text_codes(cmr_report *r, const tline *lines, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const tline *h = &lines[i];
        if (h->kind != H_CODES)
            continue;
        char label[64];
        normalize_label(h->s + h->label_off, h->label_n, label, sizeof label);
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

static int parse_text_into(cmr_report *r, const char *text, size_t len, const char *source_prefix)
{
    const char *name = name_or_memory(r->path);
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
        while (ln && is_space((unsigned char)*s))
            s++, ln--;
        while (ln && is_space((unsigned char)s[ln - 1]))
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
            warn(r, "%sis empty: no impression", source_prefix);
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
                warn(r, "%sheading '%.*s' (line %d) is followed by no text", pre, (int)h->label_n,
                     h->s + h->label_off, h->no);
                continue;
            }
            if (count++ == 0) {
                r->impression = t;
                r->impression_source = fmt("%sheading '%.*s' (line %d)", pre, (int)h->label_n, h->s + h->label_off,
                                           h->no);
                if (!r->impression_source)
                    goto oom;
            } else {
                free(t);
                if (count == 2)
                    warn(r, "%s heading appears again at line %d; the first, %s, is used", heading_name(order[k]),
                         h->no, r->impression_source);
            }
        }
    }
    if ((rc = text_codes(r, lines, n)))
        goto fail;
    if (!r->impression)
        warn(r, "%sno impression: %s", pre,
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
        if (r->findings && !(r->findings_source = fmt("%sheading '%.*s' (line %d)", pre, (int)h->label_n,
                                                      h->s + h->label_off, h->no)))
            goto oom;
    }
    free(lines);
    free(u.p);
    clip_text(r, r->impression, "the impression");
    clip_text(r, r->findings, "the findings");
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
    const char *name = name_or_memory(path);
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
    cmr_report *r = report_new(path, CMR_REPORT_TEXT);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    int rc = parse_text_into(r, text, len, NULL);
    if (rc) {
        cmr_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

/* ---- which format, reading files -------------------------------------------------------- */

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
    while (i < n && is_space((unsigned char)view[i]))
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
    int rc = read_file(path, &data, &len);
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
    const char *name = name_or_memory(path);
    if (!sr)
        return cmr_fail(CMR_EINVAL, "%s: no SR", name);
    cmr_report *r = report_new(path, CMR_REPORT_SR);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    int rc = 0;
    char uid[sizeof sr->study_uid + 1], acc[sizeof sr->accession_number + 1];
    snprintf(uid, sizeof uid, "%.*s", (int)sizeof sr->study_uid, sr->study_uid);
    snprintf(acc, sizeof acc, "%.*s", (int)sizeof sr->accession_number, sr->accession_number);
    char *u = dup_trim(uid), *a = dup_trim(acc);
    if (u && !valid_uid(u)) {
        warn(r, "Study Instance UID '%.80s' is not a DICOM UID; ignored", u);
        free(u);
        u = NULL;
    }
    if (a && !valid_accession(a)) {
        warn(r, "accession number '%.80s' is not valid; ignored", a);
        free(a);
        a = NULL;
    }
    r->study_uid = u;
    r->accession_number = a;
    if (nonblank(sr->impression)) {
        if (!(r->impression = dup_trim(sr->impression)) || !(r->impression_source = dup0("SR content item")))
            goto oom;
    } else {
        warn(r, "no impression: no SR container or TEXT item named Impression or Conclusion");
    }
    if (nonblank(sr->findings)) {
        if (!(r->findings = dup_trim(sr->findings)) || !(r->findings_source = dup0("SR content item")))
            goto oom;
    }
    for (size_t i = 0; i < sr->n_codes && i < MAX_CODES; i++)
        if ((rc = add_code(r, sr->codes[i].code, sr->codes[i].system, NULL, sr->codes[i].label, "SR code item", 0)))
            goto fail;
    clip_text(r, r->impression, "the impression");
    clip_text(r, r->findings, "the findings");
    *out = r;
    return 0;
oom:
    rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
fail:
    cmr_report_free(r);
    return rc;
}

/* ---- XSD validation --------------------------------------------------------------------- */

struct cmr_xml_schema {
    xmlSchemaPtr schema;
    int builtin; /* never freed */
};

int cmr_xml_schema_load(const char *xsd_path, cmr_xml_schema **out)
{
    *out = NULL;
    if (!xsd_path)
        return cmr_fail(CMR_EINVAL, "no schema path");
    struct stat sb;
    if (stat(xsd_path, &sb) != 0)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", xsd_path, strerror(errno));
    xml_init();
    cmr_xml_schema *s = calloc(1, sizeof *s);
    xmlSchemaParserCtxtPtr pc = s ? xmlSchemaNewParserCtxt(xsd_path) : NULL;
    if (!pc) {
        free(s);
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", xsd_path);
    }
    xml_errs errs = {.path = xsd_path};
    xmlSchemaSetParserStructuredErrors(pc, on_xml_error, &errs);
    /* Errors reading the XSD file itself come through the thread's handler. */
    xmlStructuredErrorFunc saved = xmlStructuredError;
    void *saved_ctx = xmlStructuredErrorContext;
    xmlSetStructuredErrorFunc(&errs, on_xml_error);
    s->schema = xmlSchemaParse(pc);
    xmlSetStructuredErrorFunc(saved_ctx, saved);
    xmlSchemaFreeParserCtxt(pc);
    int rc = 0;
    if (!s->schema)
        rc = cmr_fail(CMR_EFORMAT, "%s", errs.first ? errs.first : "schema cannot be compiled");
    xml_errs_clear(&errs);
    if (rc) {
        free(s);
        return cmr_fail_context(rc, "XML schema: ");
    }
    *out = s;
    return 0;
}

void cmr_xml_schema_free(cmr_xml_schema *s)
{
    if (!s || s->builtin)
        return;
    xmlSchemaFree(s->schema);
    free(s);
}

/* 0 valid, CMR_EFORMAT invalid (errs filled), CMR_ENOMEM. */
static int validate_doc(const cmr_xml_schema *s, xmlDocPtr doc, xml_errs *errs)
{
    xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(s->schema);
    if (!vc)
        return CMR_ENOMEM;
    xmlSchemaSetValidStructuredErrors(vc, on_xml_error, errs);
    int ret = xmlSchemaValidateDoc(vc, doc);
    xmlSchemaFreeValidCtxt(vc);
    if (ret == 0 && errs->n == 0)
        return 0;
    if (ret < 0 && errs->n == 0)
        return errs->oom ? CMR_ENOMEM : CMR_EFORMAT;
    return CMR_EFORMAT;
}

static int fail_invalid(const xml_errs *errs, int rc)
{
    if (rc == CMR_ENOMEM || errs->oom)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory validating", name_or_memory(errs->path));
    if (!errs->first)
        return cmr_fail(rc, "%s: not valid against its schema", name_or_memory(errs->path));
    if (errs->n > 1)
        return cmr_fail(rc, "%s (and %zu more problem%s)", errs->first, errs->n - 1, errs->n > 2 ? "s" : "");
    return cmr_fail(rc, "%s", errs->first);
}

static int add_schema_problems(cmr_report *r, const cmr_xml_schema *s, xmlDocPtr doc, int fatal)
{
    cmr_xml_problems list = {0};
    xml_errs errs = {.path = r->path, .list = &list};
    int rc = validate_doc(s, doc, &errs);
    if (rc && fatal) {
        rc = fail_invalid(&errs, rc);
    } else if (rc == CMR_ENOMEM) {
        rc = fail_invalid(&errs, rc);
    } else if (rc) {
        rc = 0;
        for (size_t i = 0; i < list.n_items && i < 10; i++) {
            if (list.items[i].element)
                warn(r, "line %d: element '%s': %s (schema)", list.items[i].line, list.items[i].element,
                     list.items[i].message);
            else
                warn(r, "line %d: %s (schema)", list.items[i].line, list.items[i].message);
        }
        if (list.n > 10)
            warn(r, "%zu more schema problems", list.n - 10);
    }
    cmr_xml_problems_clear(&list);
    xml_errs_clear(&errs);
    return rc;
}

int cmr_xml_validate_memory(const cmr_xml_schema *s, const char *path, const char *xml, size_t len,
                            cmr_xml_problems *problems)
{
    if (!s)
        return cmr_fail(CMR_EINVAL, "%s: no schema", name_or_memory(path));
    xml_errs errs = {.path = path, .list = problems};
    xmlDocPtr doc = NULL;
    int rc = xml_parse(path, xml ? xml : "", xml ? len : 0, &errs, &doc);
    if (!rc && (rc = validate_doc(s, doc, &errs)))
        rc = fail_invalid(&errs, rc);
    xmlFreeDoc(doc);
    xml_errs_clear(&errs);
    return rc;
}

int cmr_xml_validate_file(const cmr_xml_schema *s, const char *path, cmr_xml_problems *problems)
{
    char *data;
    size_t len;
    int rc = read_file(path, &data, &len);
    if (rc)
        return rc;
    rc = cmr_xml_validate_memory(s, path, data, len, problems);
    free(data);
    return rc;
}

int cmr_report_validate(const char *path, const char *xsd_path)
{
    cmr_xml_schema *s;
    int rc = cmr_xml_schema_load(xsd_path, &s);
    if (rc)
        return rc;
    rc = cmr_xml_validate_file(s, path, NULL);
    cmr_xml_schema_free(s);
    return rc;
}

/* ---- archive manifest ------------------------------------------------------------------------ */

/* A copy of schema/archive-manifest.xsd (tests/test_report.c checks they are equal),
 * so that reading a manifest does not depend on finding the source tree. */
static const char manifest_xsd[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<!-- cmrsearch archive manifest, version 1.  Described in archive-manifest.md.\n"
    "     indexer/report.c carries a copy of this file (tests keep the two equal). -->\n"
    "<xs:schema xmlns:xs=\"http://www.w3.org/2001/XMLSchema\"\n"
    "           xmlns:m=\"urn:cmrsearch:archive-manifest:1\"\n"
    "           targetNamespace=\"urn:cmrsearch:archive-manifest:1\"\n"
    "           elementFormDefault=\"qualified\">\n"
    "\n"
    "  <xs:element name=\"archive\" type=\"m:Archive\">\n"
    "    <xs:unique name=\"uniqueStudyUID\">\n"
    "      <xs:selector xpath=\"m:study\"/>\n"
    "      <xs:field xpath=\"m:studyInstanceUID\"/>\n"
    "    </xs:unique>\n"
    "    <xs:unique name=\"uniqueFolder\">\n"
    "      <xs:selector xpath=\"m:study\"/>\n"
    "      <xs:field xpath=\"m:folder\"/>\n"
    "    </xs:unique>\n"
    "    <xs:unique name=\"uniqueReport\">\n"
    "      <xs:selector xpath=\"m:study/m:report\"/>\n"
    "      <xs:field xpath=\".\"/>\n"
    "    </xs:unique>\n"
    "  </xs:element>\n"
    "\n"
    "  <xs:complexType name=\"Archive\">\n"
    "    <xs:sequence>\n"
    "      <xs:element name=\"study\" type=\"m:Study\" maxOccurs=\"unbounded\"/>\n"
    "    </xs:sequence>\n"
    "    <xs:attribute name=\"version\" type=\"xs:integer\" use=\"required\" fixed=\"1\"/>\n"
    "    <xs:attribute name=\"site\" type=\"m:Site\"/>\n"
    "  </xs:complexType>\n"
    "\n"
    "  <!-- A study is found by its folder, its Study Instance UID or its accession\n"
    "       number; at least one is required, in this order. -->\n"
    "  <xs:complexType name=\"Study\">\n"
    "    <xs:sequence>\n"
    "      <xs:choice>\n"
    "        <xs:sequence>\n"
    "          <xs:element name=\"folder\" type=\"m:Path\"/>\n"
    "          <xs:element name=\"studyInstanceUID\" type=\"m:UID\" minOccurs=\"0\"/>\n"
    "          <xs:element name=\"accession\" type=\"m:Accession\" minOccurs=\"0\"/>\n"
    "        </xs:sequence>\n"
    "        <xs:sequence>\n"
    "          <xs:element name=\"studyInstanceUID\" type=\"m:UID\"/>\n"
    "          <xs:element name=\"accession\" type=\"m:Accession\" minOccurs=\"0\"/>\n"
    "        </xs:sequence>\n"
    "        <xs:element name=\"accession\" type=\"m:Accession\"/>\n"
    "      </xs:choice>\n"
    "      <xs:element name=\"report\" type=\"m:Path\" minOccurs=\"0\" maxOccurs=\"unbounded\"/>\n"
    "    </xs:sequence>\n"
    "    <xs:attribute name=\"site\" type=\"m:Site\"/>\n"
    "  </xs:complexType>\n"
    "\n"
    "  <!-- DICOM UI: digits and dots, at most 64 characters. -->\n"
    "  <xs:simpleType name=\"UID\">\n"
    "    <xs:restriction base=\"xs:token\">\n"
    "      <xs:pattern value=\"[0-9]+(\\.[0-9]+)*\"/>\n"
    "      <xs:maxLength value=\"64\"/>\n"
    "    </xs:restriction>\n"
    "  </xs:simpleType>\n"
    "\n"
    "  <!-- DICOM SH: at most 16 characters, no backslash or control characters. -->\n"
    "  <xs:simpleType name=\"Accession\">\n"
    "    <xs:restriction base=\"xs:token\">\n"
    "      <xs:minLength value=\"1\"/>\n"
    "      <xs:maxLength value=\"16\"/>\n"
    "      <xs:pattern value=\"[^\\\\\\p{Cc}]+\"/>\n"
    "    </xs:restriction>\n"
    "  </xs:simpleType>\n"
    "\n"
    "  <!-- A file or folder, relative to the manifest's folder or absolute. -->\n"
    "  <xs:simpleType name=\"Path\">\n"
    "    <xs:restriction base=\"xs:token\">\n"
    "      <xs:minLength value=\"1\"/>\n"
    "      <xs:maxLength value=\"4096\"/>\n"
    "    </xs:restriction>\n"
    "  </xs:simpleType>\n"
    "\n"
    "  <xs:simpleType name=\"Site\">\n"
    "    <xs:restriction base=\"xs:token\">\n"
    "      <xs:minLength value=\"1\"/>\n"
    "      <xs:maxLength value=\"64\"/>\n"
    "    </xs:restriction>\n"
    "  </xs:simpleType>\n"
    "</xs:schema>\n";

const char *cmr_manifest_schema_text(void) { return manifest_xsd; }

static pthread_once_t manifest_once = PTHREAD_ONCE_INIT;
static cmr_xml_schema manifest_schema = {.builtin = 1};
static char manifest_schema_error[512];

static void manifest_schema_init(void)
{
    xml_init();
    xml_errs errs = {.path = "built-in archive-manifest.xsd"};
    xmlSchemaParserCtxtPtr pc = xmlSchemaNewMemParserCtxt(manifest_xsd, (int)strlen(manifest_xsd));
    if (pc) {
        xmlSchemaSetParserStructuredErrors(pc, on_xml_error, &errs);
        manifest_schema.schema = xmlSchemaParse(pc);
        xmlSchemaFreeParserCtxt(pc);
    }
    snprintf(manifest_schema_error, sizeof manifest_schema_error, "%s",
             errs.first ? errs.first : "built-in archive-manifest.xsd cannot be compiled");
    xml_errs_clear(&errs);
}

static char *path_normalize(const char *p)
{
    size_t n = strlen(p);
    char *tmp = dupn(p, n), *out = malloc(n + 3);
    const char **seg = malloc((n / 2 + 2) * sizeof *seg);
    if (!tmp || !out || !seg) {
        free(tmp);
        free(out);
        free(seg);
        return NULL;
    }
    int abs = p[0] == '/';
    size_t k = 0;
    char *save = NULL;
    for (char *s = strtok_r(tmp, "/", &save); s; s = strtok_r(NULL, "/", &save)) {
        if (!strcmp(s, "."))
            continue;
        if (!strcmp(s, "..")) {
            if (k > 0 && strcmp(seg[k - 1], ".."))
                k--;
            else if (!abs)
                seg[k++] = s;
            continue;
        }
        seg[k++] = s;
    }
    size_t o = 0;
    if (abs)
        out[o++] = '/';
    for (size_t i = 0; i < k; i++) {
        size_t l = strlen(seg[i]);
        if (i)
            out[o++] = '/';
        memcpy(out + o, seg[i], l);
        o += l;
    }
    if (o == 0)
        out[o++] = '.';
    out[o] = '\0';
    free(tmp);
    free(seg);
    return out;
}

/* Relative to dir (NULL: as written), lexically normalised. */
static char *resolve(const char *dir, const char *p)
{
    if (p[0] == '/' || !dir)
        return path_normalize(p);
    char *joined = fmt("%s/%s", dir, p);
    char *r = joined ? path_normalize(joined) : NULL;
    free(joined);
    return r;
}

static char *element_text(xmlNodePtr n)
{
    xmlChar *c = xmlNodeGetContent(n);
    char *s = dup_trim((const char *)c);
    xmlFree(c);
    return s;
}

void cmr_manifest_free(cmr_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_studies; i++) {
        cmr_manifest_study *s = &m->studies[i];
        free(s->folder);
        free(s->study_uid);
        free(s->accession);
        free(s->site);
        for (size_t j = 0; j < s->n_reports; j++)
            free(s->reports[j]);
        free(s->reports);
    }
    free(m->studies);
    free(m->site);
    free(m->path);
    free(m);
}

static int is_manifest_el(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name) && n->ns &&
           !strcmp((const char *)n->ns->href, CMR_MANIFEST_NS);
}

static int manifest_study(cmr_manifest *m, const char *dir, xmlNodePtr el, cmr_manifest_study *s)
{
    s->line = (int)xmlGetLineNo(el);
    char *site = attr(el, "site");
    if (site)
        s->site = site;
    else if (m->site && !(s->site = dup0(m->site)))
        return CMR_ENOMEM;
    for (xmlNodePtr c = el->children; c; c = c->next) {
        if (c->type != XML_ELEMENT_NODE)
            continue;
        char *v = element_text(c);
        if (!v)
            return CMR_ENOMEM; /* the schema guarantees text */
        int rc = 0;
        if (is_manifest_el(c, "folder")) {
            s->folder = resolve(dir, v);
            rc = s->folder ? 0 : CMR_ENOMEM;
        } else if (is_manifest_el(c, "studyInstanceUID")) {
            s->study_uid = v;
            v = NULL;
        } else if (is_manifest_el(c, "accession")) {
            s->accession = v;
            v = NULL;
        } else if (is_manifest_el(c, "report")) {
            char **reports = realloc(s->reports, (s->n_reports + 1) * sizeof *reports);
            if (reports) {
                s->reports = reports;
                rc = (reports[s->n_reports] = resolve(dir, v)) ? 0 : CMR_ENOMEM;
                if (!rc)
                    s->n_reports++;
            } else {
                rc = CMR_ENOMEM;
            }
        }
        free(v);
        if (rc)
            return rc;
    }
    return 0;
}

int cmr_manifest_parse(const char *path, const char *xml, size_t len, cmr_manifest **out)
{
    *out = NULL;
    const char *name = name_or_memory(path);
    pthread_once(&manifest_once, manifest_schema_init);
    if (!manifest_schema.schema)
        return cmr_fail(CMR_EFORMAT, "%s", manifest_schema_error);
    xml_errs errs = {.path = path};
    xmlDocPtr doc = NULL;
    cmr_manifest *m = NULL;
    char *dir = NULL;
    int rc = xml_parse(path, xml ? xml : "", xml ? len : 0, &errs, &doc);
    if (rc)
        goto fail;
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (!is_manifest_el(root, "archive")) {
        rc = cmr_fail(CMR_EFORMAT,
                      "%s:%ld: root element is <%.60s> in namespace '%.80s'; a manifest is <archive xmlns=\"%s\" "
                      "version=\"1\">",
                      name, xmlGetLineNo(root), (const char *)root->name,
                      root->ns ? (const char *)root->ns->href : "(none)", CMR_MANIFEST_NS);
        goto fail;
    }
    if ((rc = validate_doc(&manifest_schema, doc, &errs))) {
        rc = fail_invalid(&errs, rc);
        goto fail;
    }
    m = calloc(1, sizeof *m);
    if (!m || (path && !(m->path = dup0(path))))
        goto oom;
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (slash && !(dir = slash == path ? dup0("/") : dupn(path, (size_t)(slash - path))))
        goto oom;
    m->site = attr(root, "site");
    size_t n = 0;
    for (xmlNodePtr c = root->children; c; c = c->next)
        n += is_manifest_el(c, "study");
    if (!(m->studies = calloc(n ? n : 1, sizeof *m->studies)))
        goto oom;
    for (xmlNodePtr c = root->children; c; c = c->next) {
        if (!is_manifest_el(c, "study"))
            continue;
        if (manifest_study(m, dir, c, &m->studies[m->n_studies++]))
            goto oom;
    }
    free(dir);
    xmlFreeDoc(doc);
    xml_errs_clear(&errs);
    *out = m;
    return 0;
oom:
    rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
fail:
    free(dir);
    cmr_manifest_free(m);
    xmlFreeDoc(doc);
    xml_errs_clear(&errs);
    return rc;
}

int cmr_manifest_read(const char *path, cmr_manifest **out)
{
    *out = NULL;
    if (!path)
        return cmr_fail(CMR_EINVAL, "cmr_manifest_read: no path");
    char *data;
    size_t len;
    int rc = read_file(path, &data, &len);
    if (rc)
        return rc;
    rc = cmr_manifest_parse(path, data, len, out);
    free(data);
    return rc;
}

/* ---- linking reports to studies ------------------------------------------------------------ */

const char *cmr_link_rule_name(cmr_link_rule rule)
{
    switch (rule) {
    case CMR_LINK_MANIFEST: return "manifest";
    case CMR_LINK_STUDY_UID: return "study_uid";
    case CMR_LINK_ACCESSION: return "accession";
    case CMR_LINK_FOLDER: return "folder";
    default: return "none";
    }
}

void cmr_report_links_free(cmr_report_link *links, size_t n)
{
    if (!links)
        return;
    for (size_t i = 0; i < n; i++)
        free(links[i].note);
    free(links);
}

/* The real path when the file exists (so "a/../b" and symlinks compare
 * equal), else the lexical normal form. */
static char *canonical(const char *p)
{
    if (!p)
        return NULL;
    char *rp = realpath(p, NULL);
    return rp ? rp : path_normalize(p);
}

typedef struct key_index {
    const char *key;
    long study;
} key_index;

static int cmp_key(const void *a, const void *b)
{
    const key_index *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    return c ? c : (x->study > y->study) - (x->study < y->study);
}

/* Studies with this key: first index into idx and how many. */
static size_t find_key(const key_index *idx, size_t n, const char *key, size_t *count)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (strcmp(idx[mid].key, key) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    size_t k = lo;
    while (k < n && !strcmp(idx[k].key, key))
        k++;
    *count = k - lo;
    return lo;
}

typedef struct link_ctx {
    const cmr_archive *a;
    key_index *uids, *accs;
    size_t n_uids, n_accs;
    char **folders; /* canonical study folders, NULL where unknown */
} link_ctx;

static long study_by_uid(const link_ctx *c, const char *uid)
{
    size_t count, k = find_key(c->uids, c->n_uids, uid, &count);
    return count ? c->uids[k].study : -1;
}

/* -1 none, -2 several */
static long study_by_accession(const link_ctx *c, const char *acc, size_t *count)
{
    size_t k = find_key(c->accs, c->n_accs, acc, count);
    return *count == 1 ? c->accs[k].study : *count ? -2 : -1;
}

static long study_by_folder_exact(const link_ctx *c, const char *folder)
{
    for (size_t i = 0; i < c->a->n_studies; i++)
        if (c->folders[i] && !strcmp(c->folders[i], folder))
            return (long)i;
    return -1;
}

/* The study whose folder holds the file most closely; -2 if two tie. */
static long study_by_folder(const link_ctx *c, const char *file)
{
    long best = -1;
    size_t best_len = 0;
    int tie = 0;
    for (size_t i = 0; i < c->a->n_studies; i++) {
        const char *f = c->folders[i];
        if (!f)
            continue;
        size_t l = strlen(f);
        if (strncmp(file, f, l) || (file[l] != '/' && !(l == 1 && f[0] == '/')))
            continue;
        if (l > best_len || best < 0) {
            best = (long)i;
            best_len = l;
            tie = 0;
        } else if (l == best_len) {
            tie = 1;
        }
    }
    return tie ? -2 : best;
}

static void link_ctx_free(link_ctx *c)
{
    for (size_t i = 0; c->folders && i < c->a->n_studies; i++)
        free(c->folders[i]);
    free(c->folders);
    free(c->uids);
    free(c->accs);
}

static int link_ctx_init(link_ctx *c, const cmr_archive *a)
{
    memset(c, 0, sizeof *c);
    c->a = a;
    size_t ns = a->n_studies;
    c->uids = calloc(ns ? ns : 1, sizeof *c->uids);
    c->accs = calloc(ns ? ns : 1, sizeof *c->accs);
    c->folders = calloc(ns ? ns : 1, sizeof *c->folders);
    if (!c->uids || !c->accs || !c->folders)
        goto oom;
    for (size_t i = 0; i < ns; i++) {
        const cmr_study *st = &a->studies[i];
        if (st->uid[0])
            c->uids[c->n_uids++] = (key_index){st->uid, (long)i};
        if (st->accession[0])
            c->accs[c->n_accs++] = (key_index){st->accession, (long)i};
        if (st->folder && !(c->folders[i] = canonical(st->folder)))
            goto oom;
    }
    qsort(c->uids, c->n_uids, sizeof *c->uids, cmp_key);
    qsort(c->accs, c->n_accs, sizeof *c->accs, cmp_key);
    return 0;
oom:
    link_ctx_free(c);
    return CMR_ENOMEM;
}

/* The scanned study a manifest study describes, -1 if none; *count: studies
 * sharing its accession when it was looked up by that. */
static int manifest_target(const link_ctx *c, const cmr_manifest_study *ms, long *study, size_t *count)
{
    *study = -1;
    *count = 0;
    if (ms->study_uid) {
        *study = study_by_uid(c, ms->study_uid);
    } else if (ms->folder) {
        char *f = canonical(ms->folder);
        if (!f)
            return CMR_ENOMEM;
        *study = study_by_folder_exact(c, f);
        free(f);
    } else if (ms->accession) {
        *study = study_by_accession(c, ms->accession, count);
        if (*study < 0)
            *study = -1;
    }
    return 0;
}

int cmr_manifest_match(const cmr_manifest *m, const cmr_archive *a, long **map_out)
{
    *map_out = NULL;
    if (!m || !a)
        return cmr_fail(CMR_EINVAL, "cmr_manifest_match: no manifest or archive");
    long *map = malloc((a->n_studies ? a->n_studies : 1) * sizeof *map);
    link_ctx c;
    if (!map || link_ctx_init(&c, a)) {
        free(map);
        return cmr_fail(CMR_ENOMEM, "matching the manifest: out of memory");
    }
    for (size_t i = 0; i < a->n_studies; i++)
        map[i] = -1;
    int rc = 0;
    for (size_t k = 0; k < m->n_studies && !rc; k++) {
        long s;
        size_t count;
        rc = manifest_target(&c, &m->studies[k], &s, &count);
        if (!rc && s >= 0 && map[s] < 0)
            map[s] = (long)k;
    }
    link_ctx_free(&c);
    if (rc) {
        free(map);
        return cmr_fail(CMR_ENOMEM, "matching the manifest: out of memory");
    }
    *map_out = map;
    return 0;
}

static int link_one(const link_ctx *c, const cmr_manifest *m, char *const *const *mreports, const char *file,
                    const cmr_report *r, cmr_report_link *out)
{
    const cmr_archive *a = c->a;
    out->study = -1;
    out->rule = CMR_LINK_NONE;
    /* 1. The manifest is the operator's word. */
    for (size_t i = 0; m && file && i < m->n_studies; i++) {
        const cmr_manifest_study *ms = &m->studies[i];
        size_t j = 0;
        while (j < ms->n_reports && strcmp(mreports[i][j], file))
            j++;
        if (j == ms->n_reports)
            continue;
        long s;
        size_t count;
        if (manifest_target(c, ms, &s, &count))
            return CMR_ENOMEM;
        if (s < 0) {
            out->note = fmt("the manifest (line %d) lists it under a study that is not in the archive%s", ms->line,
                            count > 1 ? " (its accession is shared by several studies)" : "");
            return out->note ? 0 : CMR_ENOMEM;
        }
        out->study = s;
        out->rule = CMR_LINK_MANIFEST;
        if (r && r->study_uid && strcmp(r->study_uid, a->studies[s].uid)) {
            out->note = fmt("the report names Study Instance UID %s but the manifest (line %d) places it with %s; the "
                            "manifest wins", r->study_uid, ms->line, a->studies[s].uid);
            if (!out->note)
                return CMR_ENOMEM;
        }
        return 0;
    }
    /* 2. The Study Instance UID; a UID the archive lacks is never guessed around. */
    if (r && r->study_uid) {
        long s = study_by_uid(c, r->study_uid);
        if (s < 0) {
            out->note = fmt("Study Instance UID %s is not in the archive", r->study_uid);
            return out->note ? 0 : CMR_ENOMEM;
        }
        out->study = s;
        out->rule = CMR_LINK_STUDY_UID;
        if (r->accession_number && a->studies[s].accession[0] && strcmp(r->accession_number, a->studies[s].accession)) {
            out->note = fmt("accession %s differs from the study's %s; linked by Study Instance UID",
                            r->accession_number, a->studies[s].accession);
            if (!out->note)
                return CMR_ENOMEM;
        }
        return 0;
    }
    /* 3. The accession number, when exactly one study has it. */
    if (r && r->accession_number) {
        size_t count;
        long s = study_by_accession(c, r->accession_number, &count);
        if (s >= 0) {
            out->study = s;
            out->rule = CMR_LINK_ACCESSION;
            return 0;
        }
        out->note = count ? fmt("accession %s is held by %zu studies; not linked", r->accession_number, count)
                          : fmt("accession %s is not in the archive", r->accession_number);
        return out->note ? 0 : CMR_ENOMEM;
    }
    /* 4. The study folder that holds the file. */
    long s = file ? study_by_folder(c, file) : -1;
    if (s >= 0) {
        out->study = s;
        out->rule = CMR_LINK_FOLDER;
        return 0;
    }
    out->note = fmt(s == -2 ? "names no study; its folder holds several studies" :
                              "names no Study Instance UID or accession, no manifest lists it, and no study folder "
                              "holds it");
    return out->note ? 0 : CMR_ENOMEM;
}

int cmr_report_link_all(const cmr_archive *a, const cmr_manifest *m, const char *const *paths,
                        const cmr_report *const *reports, size_t n, cmr_report_link **links_out)
{
    *links_out = NULL;
    if (!a || (!paths && !reports && n))
        return cmr_fail(CMR_EINVAL, "cmr_report_link_all: no archive or reports");
    int rc = 0;
    link_ctx c;
    char ***mreports = NULL;
    cmr_report_link *links = calloc(n ? n : 1, sizeof *links);
    if (!links)
        return cmr_fail(CMR_ENOMEM, "linking reports: out of memory");
    if (link_ctx_init(&c, a)) {
        free(links);
        return cmr_fail(CMR_ENOMEM, "linking reports: out of memory");
    }
    if (m) {
        if (!(mreports = calloc(m->n_studies ? m->n_studies : 1, sizeof *mreports)))
            goto oom;
        for (size_t i = 0; i < m->n_studies; i++) {
            if (!(mreports[i] = calloc(m->studies[i].n_reports + 1, sizeof **mreports)))
                goto oom;
            for (size_t j = 0; j < m->studies[i].n_reports; j++)
                if (!(mreports[i][j] = canonical(m->studies[i].reports[j])))
                    goto oom;
        }
    }
    for (size_t i = 0; i < n; i++) {
        const cmr_report *r = reports ? reports[i] : NULL;
        const char *p = paths && paths[i] ? paths[i] : r ? r->path : NULL;
        char *file = p ? canonical(p) : NULL;
        if (p && !file)
            goto oom;
        rc = link_one(&c, m, (char *const *const *)mreports, file, r, &links[i]);
        free(file);
        if (rc)
            goto oom;
    }
    goto done;
oom:
    rc = cmr_fail(CMR_ENOMEM, "linking reports: out of memory");
    cmr_report_links_free(links, n);
    links = NULL;
done:
    if (mreports) {
        for (size_t i = 0; i < m->n_studies; i++) {
            for (size_t j = 0; mreports[i] && j < m->studies[i].n_reports; j++)
                free(mreports[i][j]);
            free(mreports[i]);
        }
        free(mreports);
    }
    link_ctx_free(&c);
    *links_out = links;
    return rc;
}
