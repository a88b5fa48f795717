/* Reports: safe XML parsing with errors by line, XPath helpers and XSD
 * validation.  See cmr_report.h and report_internal.h. */
#include "report_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init_once(void) { xmlInitParser(); }
void rpt_xml_init(void) { pthread_once(&xml_once, xml_init_once); }

/* ---- XML: safe parsing, errors with lines ------------------------------------------ */

/* libxml2 writes namespaces into messages as "{urn:...}name": keep the name. */
static char *clean_message(const char *msg)
{
    if (!msg)
        return rpt_dup0("unknown XML error");
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
    while (o > out && rpt_is_space((unsigned char)o[-1]))
        o--;
    *o = '\0';
    return out;
}

void rpt_xml_errs_clear(xml_errs *e)
{
    free(e->first);
    free(e->ns_first);
    e->first = e->ns_first = NULL;
}

void rpt_on_xml_error(void *data, xmlErrorPtr err)
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
            e->ns_first = rpt_fmt("line %d: %s", line, msg);
        free(msg);
        return;
    }
    if (e->n++ == 0) {
        e->first_code = err->code;
        if (element)
            e->first = rpt_fmt("%s:%d: element '%s': %s", rpt_name_or_memory(e->path), line, element, msg);
        else
            e->first = rpt_fmt("%s:%d: %s", rpt_name_or_memory(e->path), line, msg);
        if (!e->first)
            e->oom = 1;
    }
    if (e->list && e->list->n_items < MAX_PROBLEM_ITEMS) {
        cmr_xml_problem *items = realloc(e->list->items, (e->list->n_items + 1) * sizeof *items);
        char *el = element ? rpt_dup0(element) : NULL;
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
int rpt_xml_parse(const char *path, const char *data, size_t len, xml_errs *errs, xmlDocPtr *out)
{
    *out = NULL;
    const char *name = rpt_name_or_memory(path);
    if (len > CMR_REPORT_MAX_BYTES)
        return cmr_fail(CMR_EFORMAT, "%s: %zu bytes; XML files over %zu bytes are not read", name, len,
                        (size_t)CMR_REPORT_MAX_BYTES);
    if (len == 0)
        return cmr_fail(CMR_EFORMAT, "%s: empty file", name);
    rpt_xml_init();
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
    xmlSetStructuredErrorFunc(errs, rpt_on_xml_error);
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

/* ---- XPath helpers ------------------------------------------------------------------- */

xmlXPathContextPtr rpt_xpath_new(xmlDocPtr doc)
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
xmlXPathObjectPtr rpt_xpath_nodes(xmlXPathContextPtr x, xmlNodePtr node, const char *expr)
{
    xmlXPathObjectPtr o = node ? xmlXPathNodeEval(node, BAD_CAST expr, x) : xmlXPathEvalExpression(BAD_CAST expr, x);
    if (o && (o->type != XPATH_NODESET || !o->nodesetval || o->nodesetval->nodeNr == 0)) {
        xmlXPathFreeObject(o);
        return NULL;
    }
    return o;
}

int rpt_is_hl7(xmlNodePtr n, const char *name)
{
    return n && n->type == XML_ELEMENT_NODE && !strcmp((const char *)n->name, name) && n->ns &&
           !strcmp((const char *)n->ns->href, NS_HL7);
}

xmlNodePtr rpt_hl7_child(xmlNodePtr n, const char *name)
{
    for (xmlNodePtr c = n ? n->children : NULL; c; c = c->next)
        if (rpt_is_hl7(c, name))
            return c;
    return NULL;
}

/* Attribute without namespace, trimmed, malloc'ed; NULL if absent or blank. */
char *rpt_attr(xmlNodePtr n, const char *name)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    char *s = rpt_dup_trim((const char *)v);
    xmlFree(v);
    return s;
}

int rpt_attr_is(xmlNodePtr n, const char *name, const char *value)
{
    xmlChar *v = xmlGetNoNsProp(n, BAD_CAST name);
    int eq = v && !strcasecmp((const char *)v, value);
    xmlFree(v);
    return eq;
}

/* ---- XSD validation --------------------------------------------------------------------- */

int cmr_xml_schema_load(const char *xsd_path, cmr_xml_schema **out)
{
    *out = NULL;
    if (!xsd_path)
        return cmr_fail(CMR_EINVAL, "no schema path");
    struct stat sb;
    if (stat(xsd_path, &sb) != 0)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", xsd_path, strerror(errno));
    rpt_xml_init();
    cmr_xml_schema *s = calloc(1, sizeof *s);
    xmlSchemaParserCtxtPtr pc = s ? xmlSchemaNewParserCtxt(xsd_path) : NULL;
    if (!pc) {
        free(s);
        return cmr_fail(CMR_ENOMEM, "%s: out of memory", xsd_path);
    }
    xml_errs errs = {.path = xsd_path};
    xmlSchemaSetParserStructuredErrors(pc, rpt_on_xml_error, &errs);
    /* Errors reading the XSD file itself come through the thread's handler. */
    xmlStructuredErrorFunc saved = xmlStructuredError;
    void *saved_ctx = xmlStructuredErrorContext;
    xmlSetStructuredErrorFunc(&errs, rpt_on_xml_error);
    s->schema = xmlSchemaParse(pc);
    xmlSetStructuredErrorFunc(saved_ctx, saved);
    xmlSchemaFreeParserCtxt(pc);
    int rc = 0;
    if (!s->schema)
        rc = cmr_fail(CMR_EFORMAT, "%s", errs.first ? errs.first : "schema cannot be compiled");
    rpt_xml_errs_clear(&errs);
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
int rpt_validate_doc(const cmr_xml_schema *s, xmlDocPtr doc, xml_errs *errs)
{
    xmlSchemaValidCtxtPtr vc = xmlSchemaNewValidCtxt(s->schema);
    if (!vc)
        return CMR_ENOMEM;
    xmlSchemaSetValidStructuredErrors(vc, rpt_on_xml_error, errs);
    int ret = xmlSchemaValidateDoc(vc, doc);
    xmlSchemaFreeValidCtxt(vc);
    if (ret == 0 && errs->n == 0)
        return 0;
    if (ret < 0 && errs->n == 0)
        return errs->oom ? CMR_ENOMEM : CMR_EFORMAT;
    return CMR_EFORMAT;
}

int rpt_fail_invalid(const xml_errs *errs, int rc)
{
    if (rc == CMR_ENOMEM || errs->oom)
        return cmr_fail(CMR_ENOMEM, "%s: out of memory validating", rpt_name_or_memory(errs->path));
    if (!errs->first)
        return cmr_fail(rc, "%s: not valid against its schema", rpt_name_or_memory(errs->path));
    if (errs->n > 1)
        return cmr_fail(rc, "%s (and %zu more problem%s)", errs->first, errs->n - 1, errs->n > 2 ? "s" : "");
    return cmr_fail(rc, "%s", errs->first);
}

int rpt_add_schema_problems(cmr_report *r, const cmr_xml_schema *s, xmlDocPtr doc, int fatal)
{
    cmr_xml_problems list = {0};
    xml_errs errs = {.path = r->path, .list = &list};
    int rc = rpt_validate_doc(s, doc, &errs);
    if (rc && fatal) {
        rc = rpt_fail_invalid(&errs, rc);
    } else if (rc == CMR_ENOMEM) {
        rc = rpt_fail_invalid(&errs, rc);
    } else if (rc) {
        rc = 0;
        for (size_t i = 0; i < list.n_items && i < 10; i++) {
            if (list.items[i].element)
                rpt_warn(r, "line %d: element '%s': %s (schema)", list.items[i].line, list.items[i].element,
                         list.items[i].message);
            else
                rpt_warn(r, "line %d: %s (schema)", list.items[i].line, list.items[i].message);
        }
        if (list.n > 10)
            rpt_warn(r, "%zu more schema problems", list.n - 10);
    }
    cmr_xml_problems_clear(&list);
    rpt_xml_errs_clear(&errs);
    return rc;
}

int cmr_xml_validate_memory(const cmr_xml_schema *s, const char *path, const char *xml, size_t len,
                            cmr_xml_problems *problems)
{
    if (!s)
        return cmr_fail(CMR_EINVAL, "%s: no schema", rpt_name_or_memory(path));
    xml_errs errs = {.path = path, .list = problems};
    xmlDocPtr doc = NULL;
    int rc = rpt_xml_parse(path, xml ? xml : "", xml ? len : 0, &errs, &doc);
    if (!rc && (rc = rpt_validate_doc(s, doc, &errs)))
        rc = rpt_fail_invalid(&errs, rc);
    xmlFreeDoc(doc);
    rpt_xml_errs_clear(&errs);
    return rc;
}

int cmr_xml_validate_file(const cmr_xml_schema *s, const char *path, cmr_xml_problems *problems)
{
    char *data;
    size_t len;
    int rc = rpt_read_file(path, &data, &len);
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
