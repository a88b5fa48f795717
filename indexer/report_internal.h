/* Private to indexer/report*.c: what the report readers share (string
 * helpers, the report under construction, XML parsing and XPath, schema
 * validation).  The interface is cmr_report.h; nothing here is for other
 * modules.
 *
 *   report.c           string helpers, growable text, the report object and
 *                      its codes, format sniffing, reading files, DICOM SR
 *   report_xml.c       safe XML parsing with errors by line, XPath helpers,
 *                      XSD validation
 *   report_cda.c       HL7 CDA
 *   report_text.c      plain-text reports
 *   report_manifest.c  the archive manifest and linking reports to studies */
#ifndef CMR_REPORT_INTERNAL_H
#define CMR_REPORT_INTERNAL_H

#include "cmr_report.h"

#include <stdarg.h>
#include <stddef.h>

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

/* ---- report.c: small string helpers ---------------------------------------------------- */

static inline const char *rpt_name_or_memory(const char *path) { return path ? path : "<memory>"; }
static inline int rpt_is_space(int c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

char *rpt_dupn(const char *s, size_t n);
char *rpt_dup0(const char *s);
char *rpt_dup_trim(const char *s); /* trimmed copy; NULL for NULL or blank */
char *rpt_fmt(const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2)))
#endif
    ;
int rpt_valid_uid(const char *s);       /* a DICOM UI value */
int rpt_valid_accession(const char *s); /* a DICOM SH Accession Number */

/* ---- report.c: growable text ----------------------------------------------------------- */

/* Flattening narrative: runs of white space become one space, never at the
 * start or end of a line; block boundaries become '\n'. */
typedef struct sbuf {
    char *p;
    size_t n, cap;
    int oom;
    int space; /* a space is owed before the next visible character */
    int glue;  /* the next line break is a space ("Title: text" on one line) */
} sbuf;

static inline int rpt_sb_at_line_start(const sbuf *b) { return b->n == 0 || b->p[b->n - 1] == '\n'; }
void rpt_sb_add(sbuf *b, const char *s, size_t n);
void rpt_sb_newline(sbuf *b);
void rpt_sb_text(sbuf *b, const char *s);
char *rpt_sb_take(sbuf *b);

/* ---- report.c: the report under construction ------------------------------------------ */

void rpt_warn(cmr_report *r, const char *f, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
cmr_report *rpt_report_new(const char *path, cmr_report_kind kind);
/* Cuts a text the store would refuse (CMR_TEXT_MAX) at a character boundary, with a warning. */
void rpt_clip_text(cmr_report *r, char *s, const char *what);
int rpt_add_code(cmr_report *r, const char *code, const char *system, const char *system_name, const char *label,
                 const char *where, int line);
/* A whole regular file of at most CMR_REPORT_MAX_BYTES, NUL-terminated. */
int rpt_read_file(const char *path, char **data, size_t *len);

/* ---- report_xml.c: parsing, errors with lines ----------------------------------------- */

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

void rpt_xml_init(void);
void rpt_xml_errs_clear(xml_errs *e);
void rpt_on_xml_error(void *data, xmlErrorPtr err); /* libxml2 structured error handler; data is xml_errs */
int rpt_xml_parse(const char *path, const char *data, size_t len, xml_errs *errs, xmlDocPtr *out);

/* ---- report_xml.c: XPath and element helpers ------------------------------------------- */

xmlXPathContextPtr rpt_xpath_new(xmlDocPtr doc);
xmlXPathObjectPtr rpt_xpath_nodes(xmlXPathContextPtr x, xmlNodePtr node, const char *expr);
int rpt_is_hl7(xmlNodePtr n, const char *name);
xmlNodePtr rpt_hl7_child(xmlNodePtr n, const char *name);
char *rpt_attr(xmlNodePtr n, const char *name);
int rpt_attr_is(xmlNodePtr n, const char *name, const char *value);

/* ---- report_xml.c: XSD validation ----------------------------------------------------- */

struct cmr_xml_schema {
    xmlSchemaPtr schema;
    int builtin; /* never freed */
};

int rpt_validate_doc(const cmr_xml_schema *s, xmlDocPtr doc, xml_errs *errs);
int rpt_fail_invalid(const xml_errs *errs, int rc);
int rpt_add_schema_problems(cmr_report *r, const cmr_xml_schema *s, xmlDocPtr doc, int fatal);

/* ---- report_cda.c, report_text.c ------------------------------------------------------- */

void rpt_normalize_label(const char *in, size_t n, char *out, size_t cap);
int rpt_parse_text_into(cmr_report *r, const char *text, size_t len, const char *source_prefix);

#endif
