/* Internal to indexer/: reading radiology reports and archive manifests.
 *
 *   cmr_report_read        a report file: HL7 CDA R2 (XML) or plain text,
 *                          told apart by content, not by file name
 *   cmr_report_parse_cda   the same from memory, for one format
 *   cmr_report_parse_text
 *   cmr_report_from_sr     a DICOM SR already read by cmr_dicom_read_sr,
 *                          brought to the same shape
 *   cmr_manifest_read      the optional archive manifest
 *                          (schema/archive-manifest.xsd)
 *   cmr_xml_schema_*       XSD validation with messages naming file, line
 *                          and element
 *   cmr_report_link        which study each report belongs to
 *
 * docs/reports.md describes the formats and rules for users.
 *
 * Reports come from outside: XML is parsed without network access, without
 * loading DTDs and without expanding entities (a document that declares an
 * entity is refused), and inputs larger than CMR_REPORT_MAX_BYTES are refused
 * before parsing.  All text handed out is UTF-8.
 *
 * Errors follow common/cmr_error.h: 0 or a negative CMR_E* code, the detailed
 * message in cmr_errmsg() names the file and, for XML, the line.  A report
 * that parses but lacks something (no impression, an unreadable UID) is not
 * an error: it is returned with `warnings`.
 *
 * Thread safety: every function may be called from several threads at once;
 * a cmr_xml_schema may be shared by threads once loaded. */
#ifndef CMR_REPORT_H
#define CMR_REPORT_H

#include <stddef.h>

#include "cmr_error.h"

#ifdef __cplusplus
extern "C" {
#endif

struct cmr_sr_report; /* cmr_dicom.h */
struct cmr_archive;   /* cmr_indexer.h */

/* Larger report or manifest files are refused (CMR_EFORMAT) unread. */
#define CMR_REPORT_MAX_BYTES ((size_t)8 << 20)

/* ---- reports ------------------------------------------------------------------ */

typedef enum {
    CMR_REPORT_CDA = 1,  /* HL7 CDA R2 ClinicalDocument (urn:hl7-org:v3) */
    CMR_REPORT_TEXT = 2, /* plain text with headings */
    CMR_REPORT_SR = 3,   /* DICOM Structured Report, via cmr_report_from_sr */
} cmr_report_kind;

/* A coded diagnosis or finding. */
typedef struct cmr_report_code {
    char *code;        /* as written, e.g. "I42.0"; never NULL */
    char *system;      /* "SNOMED-CT", "ICD-10", "ICD-10-CM", "LOINC", ... (see
                        * cmr_code_system_name); the OID or designator as written
                        * when unknown; NULL if the report names none */
    char *label;       /* display name, NULL if none */
    const char *where; /* static: "observation value", "translation",
                        * "observation code" (CDA), "text code line",
                        * "SR code item" */
    int line;          /* line in the file, 0 when not known */
} cmr_report_code;

typedef struct cmr_report {
    char *path;                /* as given */
    cmr_report_kind kind;
    /* For linking to a study; NULL when the report does not say (or says
     * something unusable, which is then a warning). */
    char *study_uid;
    char *accession_number;
    /* Section texts, flattened to plain text: lines joined by '\n', no
     * trailing newline.  NULL when absent (absence is a warning). */
    char *impression;
    char *impression_source;   /* where it was found, e.g. "section coded LOINC
                                * 19005-8 (line 41)", "heading 'FINAL IMPRESSION'
                                * (line 12)"; NULL with impression */
    char *findings;
    char *findings_source;
    size_t n_codes;            /* distinct (system, code) pairs in document order, at most 512 */
    cmr_report_code *codes;
    size_t n_warnings;         /* each names the file: "PATH: no Impression ..." */
    char **warnings;
} cmr_report;

/* Everything optional; NULL options = all zero. */
typedef struct cmr_xml_schema cmr_xml_schema;
typedef struct cmr_report_options {
    /* Validate CDA documents against this schema (e.g. schema/report-cda.xsd). */
    const cmr_xml_schema *cda_schema;
    /* With cda_schema: 1 = an invalid document fails with CMR_EFORMAT;
     * 0 = its problems become warnings and the content is still read. */
    int schema_errors_fatal;
} cmr_report_options;

/* Read a report file: CDA when its root element is ClinicalDocument, plain
 * text otherwise.  Refused with specific messages: empty or binary files
 * (CMR_EFORMAT), DICOM files, archive manifests and other XML
 * (CMR_EUNSUPPORTED), unreadable files (CMR_EIO / CMR_ENOTFOUND).
 * *out is freed with cmr_report_free. */
int cmr_report_read(const char *path, const cmr_report_options *opts, cmr_report **out);

/* From memory.  `path` names the source in messages (may be NULL: "<memory>").
 * len may be 0; data need not be NUL-terminated. */
int cmr_report_parse_cda(const char *path, const char *xml, size_t len, const cmr_report_options *opts,
                         cmr_report **out);
int cmr_report_parse_text(const char *path, const char *text, size_t len, cmr_report **out);

/* Bring a DICOM SR (read by cmr_dicom_read_sr) to a cmr_report: copies the
 * texts, names code systems like the other formats, adds the same warnings.
 * sr stays the caller's. */
int cmr_report_from_sr(const char *path, const struct cmr_sr_report *sr, cmr_report **out);

void cmr_report_free(cmr_report *r);

/* What a file looks like, from its first bytes (no full parse). */
typedef enum {
    CMR_SNIFF_EMPTY = 0,
    CMR_SNIFF_TEXT,      /* read as a plain-text report */
    CMR_SNIFF_CDA,       /* XML, root element ClinicalDocument */
    CMR_SNIFF_MANIFEST,  /* XML, root element archive in the manifest namespace */
    CMR_SNIFF_OTHER_XML,
    CMR_SNIFF_DICOM,     /* "DICM" at offset 128 */
    CMR_SNIFF_BINARY,    /* NUL bytes (and no UTF-16 byte-order mark) */
} cmr_report_sniff_kind;
cmr_report_sniff_kind cmr_report_sniff(const char *data, size_t len);

/* The name cmrsearch stores for a code system given as an HL7 OID
 * ("2.16.840.1.113883.6.96"), a DICOM coding scheme designator ("SCT", "I10")
 * or a common spelling ("SNOMED CT", "ICD10"); NULL if unknown.  Static. */
const char *cmr_code_system_name(const char *oid_or_name);

/* ---- XML schema validation ------------------------------------------------------- */

typedef struct cmr_xml_problem {
    int line;        /* 0 when not known */
    char *element;   /* local name of the element at fault, NULL if none */
    char *message;   /* libxml2's text, namespaces in {braces} removed */
} cmr_xml_problem;

typedef struct cmr_xml_problems {
    size_t n;        /* every problem found (only the first 100 kept in items) */
    size_t n_items;
    cmr_xml_problem *items;
} cmr_xml_problems;
void cmr_xml_problems_clear(cmr_xml_problems *p); /* frees items; p itself stays */

/* Compile an XSD file.  CMR_EFORMAT with the schema's own errors (file:line). */
int cmr_xml_schema_load(const char *xsd_path, cmr_xml_schema **out);
void cmr_xml_schema_free(cmr_xml_schema *s);

/* Validate an XML file.  0 when valid; CMR_EFORMAT when not well-formed or
 * not valid, with cmr_errmsg() = "PATH:LINE: element 'x': what is wrong"
 * for the first problem and how many more there are.  `problems` (may be
 * NULL) receives all of them; clear it with cmr_xml_problems_clear. */
int cmr_xml_validate_file(const cmr_xml_schema *s, const char *path, cmr_xml_problems *problems);
int cmr_xml_validate_memory(const cmr_xml_schema *s, const char *path, const char *xml, size_t len,
                            cmr_xml_problems *problems);

/* One call: load xsd_path, validate path. */
int cmr_report_validate(const char *path, const char *xsd_path);

/* ---- archive manifest -------------------------------------------------------------- */

#define CMR_MANIFEST_NS "urn:cmrsearch:archive-manifest:1"

typedef struct cmr_manifest_study {
    char *folder;      /* resolved against the manifest's folder; NULL if not given */
    char *study_uid;   /* NULL if not given */
    char *accession;   /* NULL if not given */
    char *site;        /* the study's site attribute, else the archive's; may be NULL */
    size_t n_reports;
    char **reports;    /* resolved against the manifest's folder */
    int line;          /* of the <study> element */
} cmr_manifest_study;

typedef struct cmr_manifest {
    char *path;
    char *site;        /* archive-level site attribute, NULL if absent */
    size_t n_studies;
    cmr_manifest_study *studies;
} cmr_manifest;

/* Parse and validate against the built-in copy of schema/archive-manifest.xsd
 * (kept identical by tests).  Any schema violation is CMR_EFORMAT naming the
 * file, line and element.  Relative paths are taken relative to the folder
 * of `path`; absolute paths are kept. */
int cmr_manifest_read(const char *path, cmr_manifest **out);
int cmr_manifest_parse(const char *path, const char *xml, size_t len, cmr_manifest **out);
void cmr_manifest_free(cmr_manifest *m);

/* Which manifest study describes each scanned study: *map gets
 * archive->n_studies entries, each an index into m->studies or -1.  A
 * manifest study is matched by its Study Instance UID, else its folder, else
 * its accession when exactly one scanned study has it (the first manifest
 * study wins when two describe one scanned study).  free(*map). */
int cmr_manifest_match(const cmr_manifest *m, const struct cmr_archive *archive, long **map);

/* The built-in manifest XSD text (static). */
const char *cmr_manifest_schema_text(void);

/* ---- linking reports to studies ------------------------------------------------------ */

typedef enum {
    CMR_LINK_NONE = 0,
    CMR_LINK_MANIFEST,   /* the manifest lists the report under a study */
    CMR_LINK_STUDY_UID,  /* the report's Study Instance UID */
    CMR_LINK_ACCESSION,  /* the report's accession number, held by exactly one study */
    CMR_LINK_FOLDER,     /* the report file lies inside exactly one study's folder */
} cmr_link_rule;

typedef struct cmr_report_link {
    long study;          /* index into archive->studies, -1 when not linked */
    cmr_link_rule rule;
    char *note;          /* why not linked, or a conflict noticed; NULL if none */
} cmr_report_link;

/* For each of n reports (reports[i] may be NULL for one that failed to read;
 * it can then still be linked by manifest or folder through paths[i]), decide
 * its study.  Precedence: manifest, then Study Instance UID, then accession
 * (only when the report gives no UID), then folder (only when it gives
 * neither).  A UID the archive lacks is not linked (never guessed from the
 * accession).  links: n entries, free with cmr_report_links_free. */
int cmr_report_link_all(const struct cmr_archive *archive, const cmr_manifest *manifest,
                        const char *const *paths, const cmr_report *const *reports, size_t n,
                        cmr_report_link **links);
void cmr_report_links_free(cmr_report_link *links, size_t n);
const char *cmr_link_rule_name(cmr_link_rule rule); /* "manifest", "study_uid", ... */

#ifdef __cplusplus
}
#endif

#endif
