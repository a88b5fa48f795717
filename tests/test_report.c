/* indexer/report.c: CDA and text reports, SR conversion, the archive
 * manifest, XSD validation and linking reports to studies.  Fixtures are
 * hand-written files in tests/fixtures/reports/. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "cmr_dicom.h"
#include "cmr_indexer.h"
#include "cmr_report.h"

#ifndef CMR_FIXTURES
#error "CMR_FIXTURES must name tests/fixtures/reports"
#endif
#ifndef CMR_SCHEMA_DIR
#error "CMR_SCHEMA_DIR must name schema/"
#endif

static char path_buf[4][4096];
static int path_next;

static const char *fixture(const char *name)
{
    char *p = path_buf[path_next++ % 4];
    snprintf(p, sizeof path_buf[0], "%s/%s", CMR_FIXTURES, name);
    return p;
}

#define FIXTURE(name) CMR_FIXTURES "/" name
static const char *const fixture_path_codes = FIXTURE("cda_codes.xml");
static const char *const fixture_path_truncated = FIXTURE("cda_truncated.xml");
static const char *const fixture_path_manifest = FIXTURE("manifest_valid.xml");

static cmr_report *read_ok(const char *name)
{
    cmr_report *r = NULL;
    int rc = cmr_report_read(fixture(name), NULL, &r);
    if (rc)
        fail_msg("%s: rc %d: %s", name, rc, cmr_errmsg());
    assert_non_null(r);
    return r;
}

static cmr_report *text_ok(const char *text)
{
    cmr_report *r = NULL;
    int rc = cmr_report_parse_text("mem.txt", text, strlen(text), &r);
    if (rc)
        fail_msg("rc %d: %s", rc, cmr_errmsg());
    return r;
}

static cmr_report *cda_ok(const char *xml)
{
    cmr_report *r = NULL;
    int rc = cmr_report_parse_cda("mem.xml", xml, strlen(xml), NULL, &r);
    if (rc)
        fail_msg("rc %d: %s", rc, cmr_errmsg());
    return r;
}

static int has_warning(const cmr_report *r, const char *needle)
{
    for (size_t i = 0; i < r->n_warnings; i++)
        if (strstr(r->warnings[i], needle))
            return 1;
    return 0;
}

static void print_warnings(const cmr_report *r)
{
    for (size_t i = 0; i < r->n_warnings; i++)
        print_message("warning: %s\n", r->warnings[i]);
}

#define assert_contains(hay, needle)                                                                               \
    do {                                                                                                           \
        const char *h_ = (hay);                                                                                    \
        if (!h_ || !strstr(h_, (needle)))                                                                          \
            fail_msg("'%s' does not contain '%s'", h_ ? h_ : "(null)", (needle));                                 \
    } while (0)

/* ---- CDA --------------------------------------------------------------------------- */

static void cda_by_loinc_code(void **state)
{
    (void)state;
    cmr_report *r = read_ok("cda_loinc.xml");
    assert_int_equal(r->kind, CMR_REPORT_CDA);
    assert_string_equal(r->study_uid, "1.2.826.0.1.3680043.10.999.20240301.1");
    assert_string_equal(r->accession_number, "A10004711"); /* ps3-20:accessionNumber, not the placer order */
    assert_string_equal(r->impression, "Dilated cardiomyopathy with mid-wall septal fibrosis.");
    assert_contains(r->impression_source, "19005-8");
    assert_contains(r->impression_source, "line 45");
    assert_string_equal(r->findings, "The left ventricle is mildly dilated with global hypokinesis.\n"
                                     "LVEF 38 %.\n"
                                     "Tissue characterisation: Mid-wall septal late enhancement.");
    assert_contains(r->findings_source, "59776-5");
    print_warnings(r);
    assert_int_equal(r->n_warnings, 0);
    assert_int_equal(r->n_codes, 0);
    cmr_report_free(r);
}

static void cda_by_title(void **state)
{
    (void)state;
    cmr_report *r = read_ok("cda_title.xml");
    assert_string_equal(r->impression, "Normal cardiac MRI.");
    assert_contains(r->impression_source, "titled 'IMPRESSION:'");
    assert_string_equal(r->findings, "Normal biventricular size and function.");
    /* The UID from the object catalog's study act, the accession from order/id. */
    assert_string_equal(r->study_uid, "1.2.840.99999.5.6.7");
    assert_string_equal(r->accession_number, "ACC-22");
    /* The catalog's image reference (DGIMG, a SOP class UID) is no diagnosis. */
    assert_int_equal(r->n_codes, 0);
    assert_int_equal(r->n_warnings, 0);
    cmr_report_free(r);
}

static void cda_without_impression_warns(void **state)
{
    (void)state;
    cmr_report *r = read_ok("cda_no_impression.xml");
    assert_null(r->impression);
    assert_null(r->impression_source);
    assert_string_equal(r->findings, "Small pericardial effusion.");
    assert_string_equal(r->study_uid, "1.2.3.999");
    print_warnings(r);
    assert_true(has_warning(r, "cda_no_impression.xml: "));
    assert_true(has_warning(r, "(line 19) has no text"));
    assert_true(has_warning(r, "no impression"));
    cmr_report_free(r);

    /* No candidate section at all. */
    r = cda_ok("<ClinicalDocument xmlns='urn:hl7-org:v3'><component><structuredBody><component><section>"
               "<title>History</title><text>Chest pain.</text></section></component></structuredBody></component>"
               "</ClinicalDocument>");
    assert_null(r->impression);
    assert_true(has_warning(r, "mem.xml: no impression: no section coded LOINC 19005-8"));
    cmr_report_free(r);
}

static void cda_codes_and_translations(void **state)
{
    (void)state;
    cmr_report *r = read_ok("cda_codes.xml");
    static const struct {
        const char *code, *system, *label, *where;
    } want[] = {
        {"233873004", "SNOMED-CT", "Hypertrophic cardiomyopathy", "observation value"},
        {"I42.2", "ICD-10", "Other hypertrophic cardiomyopathy", "translation"},
        {"I42.2", "ICD-10-CM", "Other hypertrophic cardiomyopathy", "translation"},
        {"E85.4", "ICD-10", "Organ-limited amyloidosis", "observation code"},
        {"X99", "1.2.3.4.5.6", "Local code", "translation"},
    };
    for (size_t i = 0; i < r->n_codes; i++)
        print_message("code %s|%s|%s|%s\n", r->codes[i].code, r->codes[i].system, r->codes[i].label,
                      r->codes[i].where);
    /* Not: the negated Myocarditis, the LVEF measurement, the LOINC question without answer. */
    assert_int_equal(r->n_codes, sizeof want / sizeof *want);
    for (size_t i = 0; i < r->n_codes; i++) {
        assert_string_equal(r->codes[i].code, want[i].code);
        assert_string_equal(r->codes[i].system, want[i].system);
        assert_string_equal(r->codes[i].label, want[i].label);
        assert_string_equal(r->codes[i].where, want[i].where);
        assert_true(r->codes[i].line > 0);
    }
    assert_int_equal(r->codes[0].line, 21);
    cmr_report_free(r);
}

static void cda_narrative_and_utf8(void **state)
{
    (void)state;
    cmr_report *r = read_ok("cda_narrative.xml");
    assert_string_equal(r->impression, "1. Akute Myokarditis (Lake-Louise positiv).\n"
                                       "2. Perikarderguss.\n" /* the deleted revision is gone */
                                       "Kontrolle in 3 Monaten");
    assert_string_equal(r->findings, "Parameter | Wert\n"
                                     "LVEF | 55 %\n"
                                     "T2 | 58 ms\n"
                                     "Myokardiales \xc3\x96" "dem\n"
                                     "anterolateral, Schichtdicke 8 \xc2\xb5m.");
    assert_contains(r->findings_source, "18782-3");
    cmr_report_free(r);
}

static void cda_truncated_names_line(void **state)
{
    (void)state;
    cmr_report *r = NULL;
    int rc = cmr_report_read(fixture("cda_truncated.xml"), NULL, &r);
    assert_int_equal(rc, CMR_EFORMAT);
    assert_null(r);
    print_message("%s\n", cmr_errmsg());
    assert_contains(cmr_errmsg(), "cda_truncated.xml:10:");
    assert_contains(cmr_errmsg(), "not well-formed");
    assert_contains(cmr_errmsg(), "truncated");
}

static void cda_billion_laughs_refused(void **state)
{
    (void)state;
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    cmr_report *r = NULL;
    int rc = cmr_report_read(fixture("cda_billion_laughs.xml"), NULL, &r);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    assert_int_equal(rc, CMR_EFORMAT);
    assert_null(r);
    assert_contains(cmr_errmsg(), "cda_billion_laughs.xml:3:");
    assert_contains(cmr_errmsg(), "entity 'lol'");
    double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    assert_true(s < 1.0);

    /* The same bomb without our entity guard must not be expanded either:
     * parsing only the body with an undeclared entity is a plain error. */
    const char *undeclared = "<ClinicalDocument xmlns='urn:hl7-org:v3'><title>&lol9;</title></ClinicalDocument>";
    assert_int_equal(cmr_report_parse_cda("u.xml", undeclared, strlen(undeclared), NULL, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "u.xml:1:");
    assert_contains(cmr_errmsg(), "lol9");
}

static void cda_external_entity_not_loaded(void **state)
{
    (void)state;
    cmr_report *r = NULL;
    int rc = cmr_report_read(fixture("cda_external_entity.xml"), NULL, &r);
    assert_int_equal(rc, CMR_EFORMAT);
    assert_null(r);
    assert_contains(cmr_errmsg(), "cda_external_entity.xml:3:");
    assert_contains(cmr_errmsg(), "entity 'secret'");
    assert_null(strstr(cmr_errmsg(), "root:"));

    /* An external DTD is not fetched either: the document parses without it. */
    const char *dtd = "<?xml version='1.0'?><!DOCTYPE ClinicalDocument SYSTEM 'file:///etc/passwd'>"
                      "<ClinicalDocument xmlns='urn:hl7-org:v3'><component><structuredBody><component><section>"
                      "<title>Impression</title><text>Fine.</text></section></component></structuredBody>"
                      "</component></ClinicalDocument>";
    r = cda_ok(dtd);
    assert_string_equal(r->impression, "Fine.");
    cmr_report_free(r);
}

static void cda_wrong_root_or_namespace(void **state)
{
    (void)state;
    cmr_report *r = NULL;
    const char *nons = "<ClinicalDocument><component/></ClinicalDocument>";
    assert_int_equal(cmr_report_parse_cda("a.xml", nons, strlen(nons), NULL, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "a.xml:1: ClinicalDocument is in namespace '(none)', not urn:hl7-org:v3");
    const char *other = "<?xml version='1.0'?>\n<html><body/></html>";
    assert_int_equal(cmr_report_parse_cda("b.xml", other, strlen(other), NULL, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "b.xml:2: root element is <html>");
    const char *bad_utf8 = "<?xml version='1.0' encoding='UTF-8'?>\n<ClinicalDocument xmlns='urn:hl7-org:v3'>\n"
                           "<title>\xd6" "dem</title></ClinicalDocument>";
    assert_int_equal(cmr_report_parse_cda("c.xml", bad_utf8, strlen(bad_utf8), NULL, &r), CMR_EFORMAT);
    print_message("%s\n", cmr_errmsg());
    assert_contains(cmr_errmsg(), "c.xml:3:");
    assert_int_equal(cmr_report_parse_cda("d.xml", "", 0, NULL, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "d.xml: empty file");
    assert_null(r);
}

static void cda_sloppy_namespaces_and_links(void **state)
{
    (void)state;
    /* xsi never declared; a serviceEvent id with an extension (not a UID);
     * an accession too long for DICOM. */
    cmr_report *r = cda_ok(
        "<ClinicalDocument xmlns='urn:hl7-org:v3'>"
        "<inFulfillmentOf><order><id root='1.2' extension='THIS-IS-WAY-TOO-LONG-FOR-SH'/></order></inFulfillmentOf>"
        "<documentationOf><serviceEvent><id root='1.2.3' extension='X1'/><id root='1.2.3.4'/>"
        "<id root='1.2.3.5'/></serviceEvent></documentationOf>"
        "<component><structuredBody><component><section><title>Conclusion</title><text>Amyloid.</text>"
        "<entry><observation><value xsi:type='CD' code='E85.4' codeSystem='2.16.840.1.113883.6.3'/></observation>"
        "</entry></section></component></structuredBody></component></ClinicalDocument>");
    print_warnings(r);
    assert_string_equal(r->study_uid, "1.2.3.4");
    assert_null(r->accession_number);
    assert_true(has_warning(r, "not a DICOM accession number"));
    assert_true(has_warning(r, "namespace error"));
    assert_true(has_warning(r, "more than one study (1.2.3.4, 1.2.3.5"));
    assert_string_equal(r->impression, "Amyloid.");
    assert_contains(r->impression_source, "titled 'Conclusion'");
    assert_int_equal(r->n_codes, 1);
    assert_string_equal(r->codes[0].system, "ICD-10");
    cmr_report_free(r);

    r = cda_ok("<ClinicalDocument xmlns='urn:hl7-org:v3'><documentationOf><serviceEvent>"
               "<id root='1.2.abc'/></serviceEvent></documentationOf></ClinicalDocument>");
    assert_null(r->study_uid);
    assert_true(has_warning(r, "root '1.2.abc' is not a DICOM UID"));
    assert_true(has_warning(r, "no component/structuredBody or nonXMLBody"));
    cmr_report_free(r);
}

static void cda_impression_priority(void **state)
{
    (void)state;
    /* Coded Impression beats a titled one placed first; Conclusion only as fallback. */
    cmr_report *r = cda_ok(
        "<ClinicalDocument xmlns='urn:hl7-org:v3'><component><structuredBody>"
        "<component><section><code code='55110-1' codeSystem='2.16.840.1.113883.6.1'/><text>C.</text></section></component>"
        "<component><section><title>Impression</title><text>T.</text></section></component>"
        "<component><section><code code='19005-8' codeSystem='2.16.840.1.113883.6.1'/><text>I.</text></section></component>"
        "<component><section><code code='19005-8'/><text>I2.</text></section></component>"
        "</structuredBody></component></ClinicalDocument>");
    assert_string_equal(r->impression, "I.");
    assert_true(has_warning(r, "2 impression sections of one kind"));
    cmr_report_free(r);
    r = cda_ok("<ClinicalDocument xmlns='urn:hl7-org:v3'><component><structuredBody>"
               "<component><section><title>Summary</title><text>S.</text></section></component>"
               "<component><section><code code='55110-1' codeSystem='2.16.840.1.113883.6.1'/><text>C.</text></section>"
               "</component></structuredBody></component></ClinicalDocument>");
    assert_string_equal(r->impression, "C.");
    assert_contains(r->impression_source, "55110-1");
    cmr_report_free(r);
}

static void cda_nonxml_body(void **state)
{
    (void)state;
    /* "HISTORY: x\nIMPRESSION: Normal study.\n" in base64 */
    cmr_report *r = cda_ok("<ClinicalDocument xmlns='urn:hl7-org:v3'><component><nonXMLBody>"
                           "<text mediaType='text/plain' representation='B64'>"
                           "SElTVE9SWTogeApJTVBSRVNTSU9OOiBOb3JtYWwgc3R1ZHkuCg==</text>"
                           "</nonXMLBody></component></ClinicalDocument>");
    assert_string_equal(r->impression, "Normal study.");
    assert_contains(r->impression_source, "nonXMLBody text, heading 'IMPRESSION' (line 2)");
    cmr_report_free(r);
    r = cda_ok("<ClinicalDocument xmlns='urn:hl7-org:v3'><component><nonXMLBody>"
               "<text mediaType='application/pdf' representation='B64'>JVBERi0=</text>"
               "</nonXMLBody></component></ClinicalDocument>");
    assert_null(r->impression);
    assert_true(has_warning(r, "application/pdf, which is not read"));
    cmr_report_free(r);
}

static char *write_temp(const char *suffix, const char *content)
{
    char *p = malloc(128);
    snprintf(p, 128, "/tmp/cmr-test-report-XXXXXX%s", suffix);
    int fd = mkstemps(p, (int)strlen(suffix));
    assert_true(fd >= 0);
    assert_int_equal(write(fd, content, strlen(content)), (ssize_t)strlen(content));
    close(fd);
    return p;
}

static void cda_schema_validation(void **state)
{
    (void)state;
    /* A tiny profile: ClinicalDocument must have a title first. */
    char *xsd = write_temp(".xsd",
                           "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema' targetNamespace='urn:hl7-org:v3'\n"
                           "  elementFormDefault='qualified'>\n"
                           "  <xs:element name='ClinicalDocument'><xs:complexType><xs:sequence>\n"
                           "    <xs:element name='title' type='xs:string'/>\n"
                           "    <xs:any namespace='##any' processContents='skip' minOccurs='0' maxOccurs='unbounded'/>\n"
                           "  </xs:sequence><xs:anyAttribute processContents='skip'/></xs:complexType></xs:element>\n"
                           "</xs:schema>\n");
    cmr_xml_schema *s = NULL;
    assert_int_equal(cmr_xml_schema_load(xsd, &s), 0);
    cmr_report_options o = {.cda_schema = s};
    cmr_report *r = NULL;
    assert_int_equal(cmr_report_read(fixture("cda_title.xml"), &o, &r), 0);
    assert_int_equal(r->n_warnings, 0);
    cmr_report_free(r);
    /* Invalid, not fatal: warnings with line and element, content still read. */
    assert_int_equal(cmr_report_read(fixture("cda_no_impression.xml"), &o, &r), 0);
    print_warnings(r);
    assert_true(has_warning(r, "line 4: element 'documentationOf':"));
    assert_true(has_warning(r, "(schema)"));
    assert_string_equal(r->findings, "Small pericardial effusion.");
    cmr_report_free(r);
    /* Fatal. */
    o.schema_errors_fatal = 1;
    assert_int_equal(cmr_report_read(fixture("cda_no_impression.xml"), &o, &r), CMR_EFORMAT);
    assert_null(r);
    assert_contains(cmr_errmsg(), "cda_no_impression.xml:4: element 'documentationOf':");
    assert_int_equal(cmr_report_validate(fixture("cda_no_impression.xml"), xsd), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "cda_no_impression.xml:4: element 'documentationOf': This element is not expected");
    assert_int_equal(cmr_report_validate(fixture("cda_title.xml"), xsd), 0);
    cmr_xml_schema_free(s);
    unlink(xsd);
    free(xsd);

    /* A broken schema names itself; a missing one is not found. */
    char *bad = write_temp(".xsd", "<xs:schema xmlns:xs='http://www.w3.org/2001/XMLSchema'>\n"
                                   "<xs:element name='a' type='nosuchtype'/>\n</xs:schema>\n");
    assert_int_equal(cmr_xml_schema_load(bad, &s), CMR_EFORMAT);
    print_message("%s\n", cmr_errmsg());
    assert_contains(cmr_errmsg(), ":2:");
    unlink(bad);
    free(bad);
    assert_int_equal(cmr_xml_schema_load("/nonexistent/x.xsd", &s), CMR_ENOTFOUND);
}

/* ---- plain text ---------------------------------------------------------------------- */

static void text_report_fixture(void **state)
{
    (void)state;
    cmr_report *r = read_ok("text_impression.txt");
    assert_int_equal(r->kind, CMR_REPORT_TEXT);
    assert_string_equal(r->study_uid, "1.2.826.0.1.3680043.10.999.7");
    assert_string_equal(r->accession_number, "A10000042");
    /* Wrapped list items rejoined, numbering kept, "LV:" lines are not headings,
     * RECOMMENDATIONS and the sign-off end the impression. */
    assert_string_equal(r->impression, "1. Subepicardial enhancement of the basal inferolateral wall, in keeping "
                                       "with myocarditis.\n"
                                       "2. Preserved systolic function.\n"
                                       "LV: normal size.");
    assert_string_equal(r->impression_source, "heading 'IMPRESSION' (line 15)");
    assert_string_equal(r->findings, "The left ventricle is normal in size. There is subepicardial late "
                                     "enhancement in the basal inferolateral wall.\n"
                                     "LV: EDV 150 ml, EF 58 %.");
    print_warnings(r);
    assert_int_equal(r->n_warnings, 0);
    cmr_report_free(r);
}

static void text_final_impression_wins(void **state)
{
    (void)state;
    cmr_report *r = read_ok("text_final_impression.txt");
    assert_string_equal(r->impression, "Apical LV thrombus, 12 mm.\nAnticoagulation advised.");
    assert_string_equal(r->impression_source, "heading 'final impression' (line 4)");
    assert_string_equal(r->findings, "small apical thrombus.");
    assert_string_equal(r->accession_number, "ACC-9");
    assert_null(r->study_uid);
    cmr_report_free(r);
}

static void text_windows_1252_and_crlf(void **state)
{
    (void)state;
    cmr_report *r = read_ok("text_conclusion_cp1252.txt");
    assert_string_equal(r->impression, "Myokardiales \xc3\x96" "dem, 8 \xc2\xb5m \xe2\x80\x93 akute Myokarditis.");
    assert_string_equal(r->impression_source, "heading 'CONCLUSIONS' (line 1)");
    assert_true(has_warning(r, "not valid UTF-8 (byte 0xD6 at offset 26); read as Windows-1252"));
    cmr_report_free(r);

    /* UTF-16LE with a byte-order mark. */
    const char utf16[] = "\xff\xfeI\0M\0P\0R\0E\0S\0S\0I\0O\0N\0:\0 \0\xd6\0" "d\0e\0m\0\n\0";
    assert_int_equal(cmr_report_parse_text("u16.txt", utf16, sizeof utf16 - 1, &r), 0);
    assert_string_equal(r->impression, "\xc3\x96" "dem");
    assert_int_equal(r->n_warnings, 0);
    cmr_report_free(r);

    /* UTF-8 stays as it is, BOM dropped. */
    r = text_ok("\xef\xbb\xbfImpression: \xc2\xb5-Ödem\n");
    assert_string_equal(r->impression, "\xc2\xb5-Ödem");
    assert_int_equal(r->n_warnings, 0);
    cmr_report_free(r);
}

static void text_missing_impression(void **state)
{
    (void)state;
    cmr_report *r = read_ok("text_no_impression.txt");
    assert_null(r->impression);
    assert_string_equal(r->findings, "Normal.");
    assert_string_equal(r->accession_number, "A77");
    assert_true(has_warning(r, "text_no_impression.txt: no impression: no IMPRESSION, FINAL IMPRESSION, CONCLUSION "
                               "or SUMMARY heading"));
    cmr_report_free(r);

    r = text_ok("IMPRESSION:\n\n-----\nTECHNIQUE: cine\n");
    assert_null(r->impression);
    assert_true(has_warning(r, "mem.txt: heading 'IMPRESSION' (line 1) is followed by no text"));
    assert_true(has_warning(r, "every IMPRESSION"));
    cmr_report_free(r);
}

static void text_heading_variants(void **state)
{
    (void)state;
    static const struct {
        const char *text, *impression, *heading;
    } cases[] = {
        {"IMPRESSION:\nNormal.\n", "Normal.", "IMPRESSION"},
        {"IMPRESSION: Normal.\n", "Normal.", "IMPRESSION"},
        {"Impressions:\nNormal.", "Normal.", "Impressions"},
        {"impression\nNormal.\n", "Normal.", "impression"},
        {"FINAL IMPRESSION:\n  Normal.\n", "Normal.", "FINAL IMPRESSION"},
        {"Final Impression: Normal.", "Normal.", "Final Impression"},
        {"CONCLUSION:\nNormal.\n", "Normal.", "CONCLUSION"},
        {"Conclusions: Normal.\n", "Normal.", "Conclusions"},
        {"conclusion:\r\nNormal.\r\n", "Normal.", "conclusion"},
        {"SUMMARY:\nNormal.\n", "Normal.", "SUMMARY"},
        {"**Impression:** Normal.\n", "Normal.", "Impression"},
        {"## IMPRESSION\nNormal.\n", "Normal.", "IMPRESSION"},
        {"  IMPRESSION :   Normal.  \n", "Normal.", "IMPRESSION"},
        /* priority: final impression > impression > conclusion > summary */
        {"SUMMARY: S.\nCONCLUSION: C.\nIMPRESSION: I.\n", "I.", "IMPRESSION"},
        {"CONCLUSION: C.\nSUMMARY: S.\n", "C.", "CONCLUSION"},
        {"IMPRESSION: I.\nFINAL IMPRESSION: F.\n", "F.", "FINAL IMPRESSION"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        cmr_report *r = text_ok(cases[i].text);
        if (!r->impression || strcmp(r->impression, cases[i].impression))
            fail_msg("case %zu: impression '%s', want '%s'", i, r->impression ? r->impression : "(null)",
                     cases[i].impression);
        char want[128];
        snprintf(want, sizeof want, "heading '%s' (line", cases[i].heading);
        assert_contains(r->impression_source, want);
        cmr_report_free(r);
    }
}

static void text_not_headings(void **state)
{
    (void)state;
    /* No colon, more words: a sentence, not a heading. */
    cmr_report *r = text_ok("Impression normal LV size.\n");
    assert_null(r->impression);
    cmr_report_free(r);
    /* The referrer's impression is not the reader's. */
    r = text_ok("Clinical impression: ?myocarditis\nIMPRESSION: No myocarditis.\n");
    assert_string_equal(r->impression, "No myocarditis.");
    cmr_report_free(r);
    /* Short capitalised labels with text stay in the impression; a capitalised
     * label alone on its line ends it. */
    r = text_ok("IMPRESSION:\nLGE: none.\nRV: normal.\nQUALITY ASSURANCE:\nGood.\n");
    assert_string_equal(r->impression, "LGE: none.\nRV: normal.");
    cmr_report_free(r);
    /* Repeated heading: the first is used, the repeat noted. */
    r = text_ok("IMPRESSION: A.\nADDENDUM: later.\nIMPRESSION: B.\n");
    assert_string_equal(r->impression, "A.");
    assert_true(has_warning(r, "IMPRESSION heading appears again at line 3"));
    cmr_report_free(r);
    /* Numbered lists keep their numbers, bullets their marks. */
    r = text_ok("IMPRESSION:\n1) First,\n   continued.\n2) Second.\n- third\n\xe2\x80\xa2 fourth\n");
    assert_string_equal(r->impression, "1) First, continued.\n2) Second.\n- third\n\xe2\x80\xa2 fourth");
    cmr_report_free(r);
}

static void text_links_and_bad_input(void **state)
{
    (void)state;
    cmr_report *r = text_ok("StudyInstanceUID = 1.2.3.4\nAcc. no: X\nAccession #: A-55\nIMPRESSION: ok\n");
    assert_string_equal(r->study_uid, "1.2.3.4");
    assert_string_equal(r->accession_number, "A-55");
    cmr_report_free(r);
    r = text_ok("Study Instance UID (0020,000D): 1.2.3.x\nAccession Number: 12345678901234567890\nIMPRESSION: ok\n");
    assert_null(r->study_uid);
    assert_null(r->accession_number);
    assert_true(has_warning(r, "line 1: Study Instance UID '1.2.3.x' is not a DICOM UID; ignored"));
    assert_true(has_warning(r, "line 2: accession number '12345678901234567890'"));
    cmr_report_free(r);

    assert_int_equal(cmr_report_parse_text("bin.txt", "IMP\0RESSION", 11, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "bin.txt: binary content (NUL byte at offset 3)");
    assert_int_equal(cmr_report_parse_text("e.txt", "", 0, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "e.txt: empty file");
    assert_int_equal(cmr_report_parse_text("w.txt", " \n\t\n", 4, &r), CMR_EFORMAT);
    assert_contains(cmr_errmsg(), "w.txt: no text");
    assert_null(r);
}

static void text_code_lines(void **state)
{
    (void)state;
    cmr_report *r = text_ok("IMPRESSION:\nHCM.\nCoded diagnosis: I42.2 Other hypertrophic cardiomyopathy (SNOMED CT "
                            "233873004)\nICD-10-CM: I42.0; I25.5 Ischemic cardiomyopathy\n"
                            "DIAGNOSIS CODES:\nAmyloidosis (E85.4) (SCT 17602002)\n\nNot a code line (X1).\n");
    assert_string_equal(r->impression, "HCM."); /* code lines end the impression */
    static const struct {
        const char *code, *system, *label;
    } want[] = {
        {"I42.2", "ICD-10", "Other hypertrophic cardiomyopathy"},
        {"233873004", "SNOMED-CT", NULL}, /* the label is I42.2's ICD-10 title */
        {"I42.0", "ICD-10-CM", NULL},
        {"I25.5", "ICD-10-CM", "Ischemic cardiomyopathy"},
        {"E85.4", "ICD-10", "Amyloidosis"},
        {"17602002", "SNOMED-CT", "Amyloidosis"},
    };
    for (size_t i = 0; i < r->n_codes; i++)
        print_message("code %s|%s|%s|%d\n", r->codes[i].code, r->codes[i].system, r->codes[i].label,
                      r->codes[i].line);
    assert_int_equal(r->n_codes, sizeof want / sizeof *want);
    for (size_t i = 0; i < r->n_codes; i++) {
        assert_string_equal(r->codes[i].code, want[i].code);
        assert_string_equal(r->codes[i].system, want[i].system);
        if (want[i].label)
            assert_string_equal(r->codes[i].label, want[i].label);
        else
            assert_null(r->codes[i].label);
        assert_string_equal(r->codes[i].where, "text code line");
    }
    assert_int_equal(r->codes[0].line, 3);
    assert_int_equal(r->codes[5].line, 6);
    cmr_report_free(r);
}

/* ---- reading, sniffing, SR ------------------------------------------------------------------ */

static void read_dispatch(void **state)
{
    (void)state;
    cmr_report *r = NULL;
    assert_int_equal(cmr_report_read(fixture("manifest_valid.xml"), NULL, &r), CMR_EUNSUPPORTED);
    assert_contains(cmr_errmsg(), "manifest_valid.xml: an archive manifest, not a report");
    assert_int_equal(cmr_report_read("/nonexistent/r.txt", NULL, &r), CMR_ENOTFOUND);
    assert_contains(cmr_errmsg(), "/nonexistent/r.txt");

    char dicom[200] = {0};
    memcpy(dicom + 128, "DICM", 4);
    assert_int_equal(cmr_report_sniff(dicom, sizeof dicom), CMR_SNIFF_DICOM);
    assert_int_equal(cmr_report_sniff("", 0), CMR_SNIFF_EMPTY);
    assert_int_equal(cmr_report_sniff(" \n", 2), CMR_SNIFF_EMPTY);
    assert_int_equal(cmr_report_sniff("IMPRESSION: x", 13), CMR_SNIFF_TEXT);
    assert_int_equal(cmr_report_sniff("a\0b", 3), CMR_SNIFF_BINARY);
    const char *cda = "<?xml version='1.0'?>\n<!-- c -->\n<!DOCTYPE x [ <!ELEMENT x ANY> ]>\n<v3:ClinicalDocument "
                      "xmlns:v3='urn:hl7-org:v3'/>";
    assert_int_equal(cmr_report_sniff(cda, strlen(cda)), CMR_SNIFF_CDA);
    const char *man = "<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'/>";
    assert_int_equal(cmr_report_sniff(man, strlen(man)), CMR_SNIFF_MANIFEST);
    assert_int_equal(cmr_report_sniff("<archive/>", 10), CMR_SNIFF_OTHER_XML);

    char *other = write_temp(".xml", "<?xml version='1.0'?><Report><x/></Report>");
    assert_int_equal(cmr_report_read(other, NULL, &r), CMR_EUNSUPPORTED);
    assert_contains(cmr_errmsg(), "XML with root element <Report>, not an HL7 CDA ClinicalDocument");
    unlink(other);
    free(other);
    assert_null(r);
}

static void sr_conversion(void **state)
{
    (void)state;
    cmr_sr_code codes[] = {
        {"233873004", "SCT", "Hypertrophic cardiomyopathy"},
        {"I42.2", "I10", NULL},
        {"I42.2", "I10", "dup"},
        {"T-1234", "99LOCAL", "local"},
    };
    cmr_sr_report sr;
    memset(&sr, 0, sizeof sr);
    snprintf(sr.study_uid, sizeof sr.study_uid, "1.2.3");
    snprintf(sr.accession_number, sizeof sr.accession_number, "A1");
    sr.impression = "  HCM.  ";
    sr.n_codes = 4;
    sr.codes = codes;
    cmr_report *r = NULL;
    assert_int_equal(cmr_report_from_sr("sr.dcm", &sr, &r), 0);
    assert_int_equal(r->kind, CMR_REPORT_SR);
    assert_string_equal(r->impression, "HCM.");
    assert_string_equal(r->study_uid, "1.2.3");
    assert_string_equal(r->accession_number, "A1");
    assert_null(r->findings);
    assert_int_equal(r->n_codes, 3);
    assert_string_equal(r->codes[0].system, "SNOMED-CT");
    assert_string_equal(r->codes[1].system, "ICD-10");
    assert_string_equal(r->codes[1].label, "dup"); /* a later duplicate fills the missing label */
    assert_string_equal(r->codes[2].system, "99LOCAL");
    assert_string_equal(r->codes[2].where, "SR code item");
    cmr_report_free(r);

    sr.impression = NULL;
    snprintf(sr.study_uid, sizeof sr.study_uid, "not-a-uid");
    assert_int_equal(cmr_report_from_sr("sr.dcm", &sr, &r), 0);
    assert_null(r->impression);
    assert_null(r->study_uid);
    assert_true(has_warning(r, "sr.dcm: no impression"));
    assert_true(has_warning(r, "'not-a-uid' is not a DICOM UID"));
    cmr_report_free(r);
    cmr_report_free(NULL);
}

static void code_system_names(void **state)
{
    (void)state;
    assert_string_equal(cmr_code_system_name("2.16.840.1.113883.6.96"), "SNOMED-CT");
    assert_string_equal(cmr_code_system_name("SCT"), "SNOMED-CT");
    assert_string_equal(cmr_code_system_name("snomed ct"), "SNOMED-CT");
    assert_string_equal(cmr_code_system_name("2.16.840.1.113883.6.90"), "ICD-10-CM");
    assert_string_equal(cmr_code_system_name("2.16.840.1.113883.6.3"), "ICD-10");
    assert_string_equal(cmr_code_system_name("I10"), "ICD-10");
    assert_string_equal(cmr_code_system_name("2.16.840.1.113883.6.1"), "LOINC");
    assert_null(cmr_code_system_name("1.2.3"));
    assert_null(cmr_code_system_name(NULL));
}

/* ---- manifest ------------------------------------------------------------------------------ */

static void manifest_valid(void **state)
{
    (void)state;
    cmr_manifest *m = NULL;
    int rc = cmr_manifest_read(fixture("manifest_valid.xml"), &m);
    if (rc)
        fail_msg("%s", cmr_errmsg());
    assert_string_equal(m->site, "Lyon");
    assert_int_equal(m->n_studies, 3);
    char want[4200];
    snprintf(want, sizeof want, "%s/site-a/p001/A1", CMR_FIXTURES);
    assert_string_equal(m->studies[0].folder, want);
    assert_string_equal(m->studies[0].study_uid, "1.2.826.0.1.1");
    assert_string_equal(m->studies[0].accession, "A1");
    assert_string_equal(m->studies[0].site, "Lyon");
    assert_int_equal(m->studies[0].n_reports, 1);
    snprintf(want, sizeof want, "%s/reports/A1.xml", CMR_FIXTURES);
    assert_string_equal(m->studies[0].reports[0], want);
    assert_int_equal(m->studies[0].line, 4);
    assert_null(m->studies[1].folder);
    assert_string_equal(m->studies[1].site, "Osaka");
    assert_int_equal(m->studies[1].n_reports, 2);
    assert_string_equal(m->studies[1].reports[1], "/abs/reports/A2-addendum.txt");
    assert_string_equal(m->studies[2].accession, "A3");
    assert_null(m->studies[2].study_uid);
    cmr_manifest_free(m);
    cmr_manifest_free(NULL);

    /* Relative to the manifest's folder, lexically normalised. */
    const char *xml = "<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'><study><folder>./a/../b/</folder>"
                      "<report>../r.txt</report></study></archive>";
    assert_int_equal(cmr_manifest_parse("/data/x/manifest.xml", xml, strlen(xml), &m), 0);
    assert_string_equal(m->studies[0].folder, "/data/x/b");
    assert_string_equal(m->studies[0].reports[0], "/data/r.txt");
    assert_null(m->studies[0].site);
    cmr_manifest_free(m);
}

static void manifest_invalid(void **state)
{
    (void)state;
    cmr_manifest *m = NULL;
    assert_int_equal(cmr_manifest_read(fixture("manifest_invalid.xml"), &m), CMR_EFORMAT);
    assert_null(m);
    print_message("%s\n", cmr_errmsg());
    assert_contains(cmr_errmsg(), "manifest_invalid.xml:7: element 'accesion': This element is not expected. "
                                  "Expected is one of ( studyInstanceUID, accession, report ).");
    assert_contains(cmr_errmsg(), "(and 1 more problem)");

    /* Every problem, from the schema file on disk. */
    char xsd[4200];
    snprintf(xsd, sizeof xsd, "%s/archive-manifest.xsd", CMR_SCHEMA_DIR);
    cmr_xml_schema *s = NULL;
    assert_int_equal(cmr_xml_schema_load(xsd, &s), 0);
    cmr_xml_problems p = {0};
    assert_int_equal(cmr_xml_validate_file(s, fixture("manifest_invalid.xml"), &p), CMR_EFORMAT);
    assert_int_equal(p.n, 2);
    assert_int_equal(p.n_items, 2);
    assert_int_equal(p.items[0].line, 7);
    assert_string_equal(p.items[0].element, "accesion");
    assert_int_equal(p.items[1].line, 10);
    assert_string_equal(p.items[1].element, "studyInstanceUID");
    assert_contains(p.items[1].message, "'1.2.x' is not accepted by the pattern");
    cmr_xml_problems_clear(&p);
    assert_int_equal(cmr_xml_validate_file(s, fixture("manifest_valid.xml"), &p), 0);
    assert_int_equal(p.n, 0);
    /* Not well-formed: the parse error is the problem. */
    const char *broken = "<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'>\n<study>\n</archive>";
    assert_int_equal(cmr_xml_validate_memory(s, "b.xml", broken, strlen(broken), &p), CMR_EFORMAT);
    for (size_t i = 0; i < p.n_items; i++)
        print_message("problem: %d %s\n", p.items[i].line, p.items[i].message);
    assert_true(p.n_items >= 1);
    assert_int_equal(p.items[0].line, 3);
    assert_null(p.items[0].element);
    assert_contains(cmr_errmsg(), "b.xml:3:");
    cmr_xml_problems_clear(&p);
    cmr_xml_schema_free(s);

    static const struct {
        const char *xml, *msg;
    } bad[] = {
        {"<archive version='1'><study><accession>A</accession></study></archive>",
         "m.xml:1: root element is <archive> in namespace '(none)'"},
        {"<archive xmlns='urn:cmrsearch:archive-manifest:1' version='2'><study><accession>A</accession></study>"
         "</archive>",
         "m.xml:1: element 'archive': The value '2' does not match the fixed value constraint '1'"},
        {"<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'/>", "m.xml:1: element 'archive': Missing "
                                                                            "child element(s)"},
        {"<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'>\n<study><report>r</report></study>"
         "</archive>",
         "m.xml:2: element 'report': This element is not expected. Expected is one of ( folder, studyInstanceUID, "
         "accession )"},
        {"<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'>\n<study><accession>A</accession>"
         "<report>r</report></study>\n<study><accession>B</accession><report>r</report></study></archive>",
         "m.xml:3: element 'report': Duplicate key-sequence ['r'] in unique identity-constraint 'uniqueReport'"},
        {"<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'>\n<study><accession>ABCDEFGHIJKLMNOPQ"
         "</accession></study></archive>",
         "m.xml:2: element 'accession': [facet 'maxLength'] The value has a length of '17'"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        assert_int_equal(cmr_manifest_parse("m.xml", bad[i].xml, strlen(bad[i].xml), &m), CMR_EFORMAT);
        if (!strstr(cmr_errmsg(), bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, cmr_errmsg(), bad[i].msg);
    }
}

static void manifest_schema_copy_matches_file(void **state)
{
    (void)state;
    char xsd[4200];
    snprintf(xsd, sizeof xsd, "%s/archive-manifest.xsd", CMR_SCHEMA_DIR);
    FILE *f = fopen(xsd, "rb");
    assert_non_null(f);
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (strcmp(buf, cmr_manifest_schema_text()))
        fail_msg("schema/archive-manifest.xsd and the copy in indexer/report.c differ: update the copy");
}

/* ---- linking ------------------------------------------------------------------------------- */

static void link_reports(void **state)
{
    (void)state;
    cmr_study studies[4];
    memset(studies, 0, sizeof studies);
    static const char *const uids[] = {"1.2.1", "1.2.2", "1.2.3", "1.2.4"};
    static const char *const accs[] = {"A1", "A2", "DUP", "DUP"};
    static const char *const folders[] = {"/arch/s1", "/arch/s2", "/arch/s3", "/arch/s3/sub"};
    for (int i = 0; i < 4; i++) {
        snprintf(studies[i].uid, sizeof studies[i].uid, "%s", uids[i]);
        snprintf(studies[i].accession, sizeof studies[i].accession, "%s", accs[i]);
        studies[i].folder = folders[i];
    }
    cmr_archive a;
    memset(&a, 0, sizeof a);
    a.n_studies = 4;
    a.studies = studies;

    cmr_report rs[8];
    memset(rs, 0, sizeof rs);
    static char p[8][32];
    for (int i = 0; i < 8; i++) {
        snprintf(p[i], sizeof p[i], "/arch/reports/r%d.txt", i);
        rs[i].path = p[i];
    }
    rs[0].study_uid = "1.2.2";                             /* by UID */
    rs[0].accession_number = "A1";                         /* ... despite a contradicting accession */
    rs[1].study_uid = "9.9.9";                             /* unknown UID: never guessed from the accession */
    rs[1].accession_number = "A1";
    rs[2].accession_number = "A2";                         /* by accession */
    rs[3].accession_number = "DUP";                        /* ambiguous */
    snprintf(p[4], sizeof p[4], "/arch/s3/sub/r.txt");     /* by folder, the deepest */
    snprintf(p[5], sizeof p[5], "/arch/s1/x/../r.txt");    /* by folder after normalising */
    rs[6].study_uid = "1.2.4";                             /* the manifest overrides */
    /* rs[7]: nothing to go by */
    const char *xml = "<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1'>\n"
                      "<study><folder>s1</folder><report>reports/r6.txt</report></study></archive>";
    cmr_manifest *m = NULL;
    assert_int_equal(cmr_manifest_parse("/arch/manifest.xml", xml, strlen(xml), &m), 0);
    const cmr_report *rp[8];
    for (int i = 0; i < 8; i++)
        rp[i] = &rs[i];
    cmr_report_link *links = NULL;
    assert_int_equal(cmr_report_link_all(&a, m, NULL, rp, 8, &links), 0);
    for (int i = 0; i < 8; i++)
        print_message("r%d -> %ld %s %s\n", i, links[i].study, cmr_link_rule_name(links[i].rule),
                      links[i].note ? links[i].note : "");
    assert_int_equal(links[0].study, 1);
    assert_int_equal(links[0].rule, CMR_LINK_STUDY_UID);
    assert_contains(links[0].note, "accession A1 differs from the study's A2");
    assert_int_equal(links[1].study, -1);
    assert_contains(links[1].note, "Study Instance UID 9.9.9 is not in the archive");
    assert_int_equal(links[2].study, 1);
    assert_int_equal(links[2].rule, CMR_LINK_ACCESSION);
    assert_int_equal(links[3].study, -1);
    assert_contains(links[3].note, "accession DUP is held by 2 studies");
    assert_int_equal(links[4].study, 3);
    assert_int_equal(links[4].rule, CMR_LINK_FOLDER);
    assert_int_equal(links[5].study, 0);
    assert_int_equal(links[5].rule, CMR_LINK_FOLDER);
    assert_int_equal(links[6].study, 0);
    assert_int_equal(links[6].rule, CMR_LINK_MANIFEST);
    assert_contains(links[6].note, "the manifest wins");
    assert_int_equal(links[7].study, -1);
    assert_int_equal(links[7].rule, CMR_LINK_NONE);
    assert_non_null(links[7].note);
    cmr_report_links_free(links, 8);

    /* A report that failed to read is still placed by its path. */
    const char *paths[] = {"/arch/s2/report.txt"};
    const cmr_report *none[] = {NULL};
    assert_int_equal(cmr_report_link_all(&a, NULL, paths, none, 1, &links), 0);
    assert_int_equal(links[0].study, 1);
    cmr_report_links_free(links, 1);
    cmr_manifest_free(m);

    /* Which manifest study describes each scanned study (for its site). */
    xml = "<archive xmlns='urn:cmrsearch:archive-manifest:1' version='1' site='All'>\n"
          "<study site='Folder'><folder>s2</folder></study>\n"
          "<study site='Uid'><studyInstanceUID>1.2.1</studyInstanceUID></study>\n"
          "<study site='Acc'><accession>A2</accession></study>\n"
          "<study><accession>DUP</accession></study>\n"
          "<study><studyInstanceUID>7.7.7</studyInstanceUID></study></archive>";
    assert_int_equal(cmr_manifest_parse("/arch/manifest.xml", xml, strlen(xml), &m), 0);
    long *map = NULL;
    assert_int_equal(cmr_manifest_match(m, &a, &map), 0);
    assert_int_equal(map[0], 1);
    assert_int_equal(map[1], 0); /* by folder; the accession entry comes later */
    assert_int_equal(map[2], -1);
    assert_int_equal(map[3], -1);
    assert_string_equal(m->studies[map[0]].site, "Uid");
    free(map);
    cmr_manifest_free(m);
}

/* ---- threads ------------------------------------------------------------------------------- */

static void *parse_many(void *arg)
{
    (void)arg;
    for (int i = 0; i < 40; i++) {
        cmr_report *r = NULL;
        cmr_manifest *m = NULL;
        if (cmr_report_read(fixture_path_codes, NULL, &r) || r->n_codes != 5)
            return (void *)1;
        cmr_report_free(r);
        if (cmr_report_read(fixture_path_truncated, NULL, &r) != CMR_EFORMAT || !strstr(cmr_errmsg(), ":10:"))
            return (void *)1;
        if (cmr_manifest_read(fixture_path_manifest, &m) || m->n_studies != 3)
            return (void *)1;
        cmr_manifest_free(m);
    }
    return NULL;
}

static void parsing_in_threads(void **state)
{
    (void)state;
    /* Error messages and libxml2's error handler are per thread; the built-in
     * schema is compiled once. */
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, parse_many, NULL), 0);
    for (int i = 0; i < 4; i++) {
        void *ret;
        assert_int_equal(pthread_join(t[i], &ret), 0);
        assert_null(ret);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(cda_by_loinc_code),
        cmocka_unit_test(cda_by_title),
        cmocka_unit_test(cda_without_impression_warns),
        cmocka_unit_test(cda_codes_and_translations),
        cmocka_unit_test(cda_narrative_and_utf8),
        cmocka_unit_test(cda_truncated_names_line),
        cmocka_unit_test(cda_billion_laughs_refused),
        cmocka_unit_test(cda_external_entity_not_loaded),
        cmocka_unit_test(cda_wrong_root_or_namespace),
        cmocka_unit_test(cda_sloppy_namespaces_and_links),
        cmocka_unit_test(cda_impression_priority),
        cmocka_unit_test(cda_nonxml_body),
        cmocka_unit_test(cda_schema_validation),
        cmocka_unit_test(text_report_fixture),
        cmocka_unit_test(text_final_impression_wins),
        cmocka_unit_test(text_windows_1252_and_crlf),
        cmocka_unit_test(text_missing_impression),
        cmocka_unit_test(text_heading_variants),
        cmocka_unit_test(text_not_headings),
        cmocka_unit_test(text_links_and_bad_input),
        cmocka_unit_test(text_code_lines),
        cmocka_unit_test(read_dispatch),
        cmocka_unit_test(sr_conversion),
        cmocka_unit_test(code_system_names),
        cmocka_unit_test(manifest_valid),
        cmocka_unit_test(manifest_invalid),
        cmocka_unit_test(manifest_schema_copy_matches_file),
        cmocka_unit_test(link_reports),
        cmocka_unit_test(parsing_in_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
