/* The archive manifest (parsing, the built-in schema) and linking reports to
 * studies.  See cmr_report.h, schema/archive-manifest.md and docs/reports.md. */
#include "report_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
    rpt_xml_init();
    xml_errs errs = {.path = "built-in archive-manifest.xsd"};
    xmlSchemaParserCtxtPtr pc = xmlSchemaNewMemParserCtxt(manifest_xsd, (int)strlen(manifest_xsd));
    if (pc) {
        xmlSchemaSetParserStructuredErrors(pc, rpt_on_xml_error, &errs);
        manifest_schema.schema = xmlSchemaParse(pc);
        xmlSchemaFreeParserCtxt(pc);
    }
    snprintf(manifest_schema_error, sizeof manifest_schema_error, "%s",
             errs.first ? errs.first : "built-in archive-manifest.xsd cannot be compiled");
    rpt_xml_errs_clear(&errs);
}

static char *path_normalize(const char *p)
{
    size_t n = strlen(p);
    char *tmp = rpt_dupn(p, n), *out = malloc(n + 3);
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
    char *joined = rpt_fmt("%s/%s", dir, p);
    char *r = joined ? path_normalize(joined) : NULL;
    free(joined);
    return r;
}

static char *element_text(xmlNodePtr n)
{
    xmlChar *c = xmlNodeGetContent(n);
    char *s = rpt_dup_trim((const char *)c);
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
    char *site = rpt_attr(el, "site");
    if (site)
        s->site = site;
    else if (m->site && !(s->site = rpt_dup0(m->site)))
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
    const char *name = rpt_name_or_memory(path);
    pthread_once(&manifest_once, manifest_schema_init);
    if (!manifest_schema.schema)
        return cmr_fail(CMR_EFORMAT, "%s", manifest_schema_error);
    xml_errs errs = {.path = path};
    xmlDocPtr doc = NULL;
    cmr_manifest *m = NULL;
    char *dir = NULL;
    int rc = rpt_xml_parse(path, xml ? xml : "", xml ? len : 0, &errs, &doc);
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
    if ((rc = rpt_validate_doc(&manifest_schema, doc, &errs))) {
        rc = rpt_fail_invalid(&errs, rc);
        goto fail;
    }
    m = calloc(1, sizeof *m);
    if (!m || (path && !(m->path = rpt_dup0(path))))
        goto oom;
    const char *slash = path ? strrchr(path, '/') : NULL;
    if (slash && !(dir = slash == path ? rpt_dup0("/") : rpt_dupn(path, (size_t)(slash - path))))
        goto oom;
    m->site = rpt_attr(root, "site");
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
    rpt_xml_errs_clear(&errs);
    *out = m;
    return 0;
oom:
    rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", name);
fail:
    free(dir);
    cmr_manifest_free(m);
    xmlFreeDoc(doc);
    rpt_xml_errs_clear(&errs);
    return rc;
}

int cmr_manifest_read(const char *path, cmr_manifest **out)
{
    *out = NULL;
    if (!path)
        return cmr_fail(CMR_EINVAL, "cmr_manifest_read: no path");
    char *data;
    size_t len;
    int rc = rpt_read_file(path, &data, &len);
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
            out->note = rpt_fmt("the manifest (line %d) lists it under a study that is not in the archive%s", ms->line,
                                count > 1 ? " (its accession is shared by several studies)" : "");
            return out->note ? 0 : CMR_ENOMEM;
        }
        out->study = s;
        out->rule = CMR_LINK_MANIFEST;
        if (r && r->study_uid && strcmp(r->study_uid, a->studies[s].uid)) {
            out->note = rpt_fmt("the report names Study Instance UID %s but the manifest (line %d) places it with %s; "
                                "the manifest wins", r->study_uid, ms->line, a->studies[s].uid);
            if (!out->note)
                return CMR_ENOMEM;
        }
        return 0;
    }
    /* 2. The Study Instance UID; a UID the archive lacks is never guessed around. */
    if (r && r->study_uid) {
        long s = study_by_uid(c, r->study_uid);
        if (s < 0) {
            out->note = rpt_fmt("Study Instance UID %s is not in the archive", r->study_uid);
            return out->note ? 0 : CMR_ENOMEM;
        }
        out->study = s;
        out->rule = CMR_LINK_STUDY_UID;
        if (r->accession_number && a->studies[s].accession[0] && strcmp(r->accession_number, a->studies[s].accession)) {
            out->note = rpt_fmt("accession %s differs from the study's %s; linked by Study Instance UID",
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
        out->note = count ? rpt_fmt("accession %s is held by %zu studies; not linked", r->accession_number, count)
                          : rpt_fmt("accession %s is not in the archive", r->accession_number);
        return out->note ? 0 : CMR_ENOMEM;
    }
    /* 4. The study folder that holds the file. */
    long s = file ? study_by_folder(c, file) : -1;
    if (s >= 0) {
        out->study = s;
        out->rule = CMR_LINK_FOLDER;
        return 0;
    }
    out->note = rpt_fmt(s == -2 ? "names no study; its folder holds several studies" :
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
