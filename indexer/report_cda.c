/* Reports: HL7 CDA (narrative, sections, codes, links, nonXMLBody).  See
 * cmr_report.h and docs/reports.md. */
#include "report_internal.h"

#include <ctype.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ---- CDA narrative to plain text ------------------------------------------------------- */

static int local_is(xmlNodePtr n, const char *name) { return !strcmp((const char *)n->name, name); }

static void flatten_children(sbuf *b, xmlNodePtr n, int depth);

static void flatten_element(sbuf *b, xmlNodePtr n, int depth)
{
    /* Deleted revisions are not part of what the report says. */
    if (rpt_attr_is(n, "revised", "delete"))
        return;
    if (local_is(n, "br")) {
        rpt_sb_newline(b);
    } else if (local_is(n, "footnoteRef") || local_is(n, "renderMultiMedia") || local_is(n, "col") ||
               local_is(n, "colgroup")) {
        /* references and layout only */
    } else if (local_is(n, "item")) {
        rpt_sb_newline(b);
        xmlNodePtr list = n->parent;
        if (list && list->type == XML_ELEMENT_NODE && local_is(list, "list") &&
            rpt_attr_is(list, "listType", "ordered")) {
            int k = 1;
            for (xmlNodePtr s = list->children; s && s != n; s = s->next)
                if (s->type == XML_ELEMENT_NODE && local_is(s, "item"))
                    k++;
            char num[16];
            snprintf(num, sizeof num, "%d. ", k);
            rpt_sb_add(b, num, strlen(num));
        }
        flatten_children(b, n, depth);
        rpt_sb_newline(b);
    } else if (local_is(n, "tr")) {
        rpt_sb_newline(b);
        int cell = 0;
        for (xmlNodePtr c = n->children; c; c = c->next) {
            if (c->type != XML_ELEMENT_NODE)
                continue;
            if (cell++ && !rpt_sb_at_line_start(b)) {
                b->space = 0;
                rpt_sb_add(b, " | ", 3);
            }
            flatten_element(b, c, depth + 1);
        }
        rpt_sb_newline(b);
    } else if (local_is(n, "paragraph") || local_is(n, "list") || local_is(n, "table") || local_is(n, "caption") ||
               local_is(n, "thead") || local_is(n, "tbody") || local_is(n, "tfoot")) {
        rpt_sb_newline(b);
        flatten_children(b, n, depth);
        rpt_sb_newline(b);
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
                rpt_sb_text(b, (const char *)c->content);
        } else if (c->type == XML_ELEMENT_NODE) {
            flatten_element(b, c, depth + 1);
        }
    }
}

/* A section's text: its narrative, then each subsection as "Title: text". */
static void section_text(sbuf *b, xmlNodePtr section, int depth)
{
    xmlNodePtr text = rpt_hl7_child(section, "text");
    if (text) {
        rpt_sb_newline(b);
        flatten_children(b, text, 0);
        rpt_sb_newline(b);
    }
    if (depth > 8)
        return;
    for (xmlNodePtr comp = section->children; comp; comp = comp->next) {
        if (!rpt_is_hl7(comp, "component"))
            continue;
        xmlNodePtr sub = rpt_hl7_child(comp, "section");
        if (!sub)
            continue;
        xmlNodePtr title = rpt_hl7_child(sub, "title");
        rpt_sb_newline(b);
        if (title) {
            size_t before = b->n;
            flatten_children(b, title, 0);
            if (b->n > before) {
                rpt_sb_add(b, ":", 1);
                b->space = 1;
                b->glue = 1;
            }
        }
        section_text(b, sub, depth + 1);
    }
}

static char *node_title(xmlNodePtr section)
{
    xmlNodePtr t = rpt_hl7_child(section, "title");
    if (!t)
        return NULL;
    sbuf b = {0};
    flatten_children(&b, t, 0);
    return rpt_sb_take(&b);
}

/* ---- CDA content ------------------------------------------------------------------------ */

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
void rpt_normalize_label(const char *in, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    int space = 0;
    for (size_t i = 0; i < n && o + 1 < cap; i++) {
        unsigned char c = (unsigned char)in[i];
        if (rpt_is_space(c)) {
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
    rpt_normalize_label(title, strlen(title), t, sizeof t);
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
    xmlNodePtr code = rpt_hl7_child(section, "code");
    code_out[0] = '\0';
    if (!code)
        return -1;
    char *c = rpt_attr(code, "code"), *sys = rpt_attr(code, "codeSystem");
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
    char *s = rpt_sb_take(&b);
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
        char *d = rpt_fmt("%s '%.80s' (line %ld)", sec_info[cls].what, title ? title : "", line);
        free(title);
        return d;
    }
    if (cls == SEC_FINDINGS_CODE)
        return rpt_fmt("%s %s (line %ld)", sec_info[cls].what, code, line);
    return rpt_fmt("%s (line %ld)", sec_info[cls].what, line);
}

static int take_section(cmr_report *r, xmlNodePtr sec, int cls, const char *code, char **text, char **source)
{
    sbuf b = {0};
    section_text(&b, sec, 0);
    if (b.oom) {
        free(b.p);
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(r->path));
    }
    *text = rpt_sb_take(&b);
    *source = describe_section(sec, cls, code);
    if (!*source) {
        free(*text);
        *text = NULL;
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(r->path));
    }
    return 0;
}

static int cda_sections(cmr_report *r, xmlXPathContextPtr x)
{
    sec_pick p;
    memset(&p, 0, sizeof p);
    xmlXPathObjectPtr o = rpt_xpath_nodes(x, NULL, "/h:ClinicalDocument/h:component/h:structuredBody//h:section");
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
            rpt_warn(r, "%s has no text", d ? d : "an impression section");
            free(d);
        }
    }
    if (chosen >= 0) {
        if ((rc = take_section(r, p.node[chosen], chosen, p.code[chosen], &r->impression, &r->impression_source)))
            return rc;
        if (p.count[chosen] > 1)
            rpt_warn(r, "%d impression sections of one kind; the first is used: %s", p.count[chosen],
                     r->impression_source);
    } else if (empties) {
        rpt_warn(r, "no impression: every Impression or Conclusion section is empty");
    } else {
        rpt_warn(r, "no impression: no section coded LOINC 19005-8 (Impression) or 55110-1 (Conclusion), and no "
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
    char *code = rpt_attr(el, "code"), *sys = rpt_attr(el, "codeSystem"), *sys_name = rpt_attr(el, "codeSystemName");
    char *label = rpt_attr(el, "displayName");
    int rc = rpt_add_code(r, code, sys, sys_name, label, where, (int)xmlGetLineNo(el));
    free(code);
    free(sys);
    free(sys_name);
    free(label);
    for (xmlNodePtr t = el->children; !rc && t; t = t->next)
        if (rpt_is_hl7(t, "translation"))
            rc = add_code_element(r, t, "translation");
    return rc;
}

static int cda_codes(cmr_report *r, xmlXPathContextPtr x)
{
    xmlXPathObjectPtr o = rpt_xpath_nodes(x, NULL, "/h:ClinicalDocument/h:component/h:structuredBody//h:observation");
    int rc = 0;
    for (int i = 0; o && !rc && i < o->nodesetval->nodeNr; i++) {
        xmlNodePtr obs = o->nodesetval->nodeTab[i];
        /* Negated ("no myocarditis") and image references (DICOM object catalog) are not diagnoses. */
        if (rpt_attr_is(obs, "negationInd", "true") || rpt_attr_is(obs, "classCode", "DGIMG"))
            continue;
        if (r->n_codes >= MAX_CODES) {
            rpt_warn(r, "more than %d coded entries; the rest are ignored", MAX_CODES);
            break;
        }
        int has_value = 0;
        for (xmlNodePtr v = obs->children; !rc && v; v = v->next) {
            if (!rpt_is_hl7(v, "value"))
                continue;
            has_value = 1;
            if (is_coded_type(v))
                rc = add_code_element(r, v, "observation value");
        }
        if (rc || has_value)
            continue;
        /* Without a value the code itself may be the finding, unless it comes
         * from a vocabulary of questions (LOINC, DCM, ActCode). */
        xmlNodePtr code = rpt_hl7_child(obs, "code");
        if (!code)
            continue;
        char *sys = rpt_attr(code, "codeSystem");
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
    xmlXPathObjectPtr o = rpt_xpath_nodes(x, NULL, expr);
    char *v = NULL;
    for (int i = 0; o && !v && i < o->nodesetval->nodeNr; i++) {
        xmlNodePtr n = o->nodesetval->nodeTab[i];
        if (n->type != XML_ELEMENT_NODE)
            continue;
        /* An II with an extension names the issuer in @root, not the object. */
        if (need_no_extension) {
            char *ext = rpt_attr(n, "extension");
            int has_ext = ext != NULL;
            free(ext);
            if (has_ext)
                continue;
        }
        v = rpt_attr(n, name);
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
    if (uid && !rpt_valid_uid(uid)) {
        rpt_warn(r, "line %d: %s root '%.80s' is not a DICOM UID; ignored", line, where, uid);
        free(uid);
        uid = NULL;
    }
    r->study_uid = uid;
    if (uid) {
        /* One report documenting several studies is linked by the first. */
        xmlXPathObjectPtr o = rpt_xpath_nodes(x, NULL, "/h:ClinicalDocument/h:documentationOf/h:serviceEvent/h:id");
        for (int i = 0; o && i < o->nodesetval->nodeNr; i++) {
            char *other = rpt_attr(o->nodesetval->nodeTab[i], "root");
            char *ext = rpt_attr(o->nodesetval->nodeTab[i], "extension");
            if (other && !ext && rpt_valid_uid(other) && strcmp(other, uid)) {
                rpt_warn(r, "documents more than one study (%s, %s, ...); linked by the first", uid, other);
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
    if (acc && !rpt_valid_accession(acc)) {
        rpt_warn(r, "line %d: %s extension '%.80s' is not a DICOM accession number (at most 16 characters); ignored",
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
        if (rpt_is_space(c))
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

/* A CDA whose body is not structured: plain text is read like a text report. */
static int cda_nonxml_body(cmr_report *r, xmlNodePtr body)
{
    xmlNodePtr text = rpt_hl7_child(body, "text");
    char *media = text ? rpt_attr(text, "mediaType") : NULL;
    int rc = 0;
    if (!text) {
        rpt_warn(r, "nonXMLBody without text: no impression");
    } else if (media && strcasecmp(media, "text/plain")) {
        rpt_warn(r, "line %ld: the body is nonXMLBody of media type %.60s, which is not read: no impression",
                 xmlGetLineNo(text), media);
    } else {
        xmlChar *content = xmlNodeGetContent(text);
        char *data = NULL;
        size_t len = 0;
        if (content && rpt_attr_is(text, "representation", "B64")) {
            data = b64_decode((const char *)content, &len);
            if (!data)
                rpt_warn(r, "line %ld: nonXMLBody text is not valid base64: no impression", xmlGetLineNo(text));
        } else if (content) {
            len = strlen((const char *)content);
            data = rpt_dupn((const char *)content, len);
            if (!data)
                rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(r->path));
        }
        xmlFree(content);
        const unsigned char *u = (const unsigned char *)data;
        int utf16 = data && len >= 2 && ((u[0] == 0xFF && u[1] == 0xFE) || (u[0] == 0xFE && u[1] == 0xFF));
        if (data && !utf16 && memchr(data, 0, len)) {
            rpt_warn(r, "line %ld: nonXMLBody text holds binary data: no impression", xmlGetLineNo(text));
        } else if (data) {
            rc = rpt_parse_text_into(r, data, len, "nonXMLBody text, ");
        }
        free(data);
    }
    free(media);
    return rc;
}

static int cda_from_doc(cmr_report *r, xmlDocPtr doc, const cmr_report_options *opts, const xml_errs *errs)
{
    const char *name = rpt_name_or_memory(r->path);
    xmlNodePtr root = xmlDocGetRootElement(doc);
    if (strcmp((const char *)root->name, "ClinicalDocument"))
        return cmr_fail(CMR_EFORMAT, "%s:%ld: root element is <%.60s>, not an HL7 CDA ClinicalDocument", name,
                        xmlGetLineNo(root), (const char *)root->name);
    if (!root->ns || strcmp((const char *)root->ns->href, NS_HL7))
        return cmr_fail(CMR_EFORMAT, "%s:%ld: ClinicalDocument is in namespace '%.80s', not %s", name,
                        xmlGetLineNo(root), root->ns ? (const char *)root->ns->href : "(none)", NS_HL7);
    if (errs->n_ns)
        rpt_warn(r, "%zu namespace error(s), first at %s", errs->n_ns, errs->ns_first ? errs->ns_first : "?");
    int rc = 0;
    if (opts && opts->cda_schema && (rc = rpt_add_schema_problems(r, opts->cda_schema, doc, opts->schema_errors_fatal)))
        return rc;
    xmlXPathContextPtr x = rpt_xpath_new(doc);
    if (!x)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
    cda_links(r, x);
    xmlNodePtr comp = rpt_hl7_child(root, "component");
    xmlNodePtr structured = rpt_hl7_child(comp, "structuredBody"), unstructured = rpt_hl7_child(comp, "nonXMLBody");
    if (structured) {
        rc = cda_sections(r, x);
        if (!rc)
            rc = cda_codes(r, x);
    } else if (unstructured) {
        rc = cda_nonxml_body(r, unstructured);
    } else {
        rpt_warn(r, "no component/structuredBody or nonXMLBody: no impression");
    }
    xmlXPathFreeContext(x);
    rpt_clip_text(r, r->impression, "the impression");
    rpt_clip_text(r, r->findings, "the findings");
    return rc;
}

int cmr_report_parse_cda(const char *path, const char *xml, size_t len, const cmr_report_options *opts,
                         cmr_report **out)
{
    *out = NULL;
    if (!xml && len)
        return cmr_fail(CMR_EINVAL, "%s: no data", rpt_name_or_memory(path));
    cmr_report *r = rpt_report_new(path, CMR_REPORT_CDA);
    if (!r)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", rpt_name_or_memory(path));
    xml_errs errs = {.path = path};
    xmlDocPtr doc = NULL;
    int rc = rpt_xml_parse(path, xml ? xml : "", len, &errs, &doc);
    if (!rc)
        rc = cda_from_doc(r, doc, opts, &errs);
    xmlFreeDoc(doc);
    rpt_xml_errs_clear(&errs);
    if (rc) {
        cmr_report_free(r);
        return rc;
    }
    *out = r;
    return 0;
}
