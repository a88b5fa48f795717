/* Import manifests (schema/import-manifest.md): the per-case metadata that
 * accompanies vectors computed elsewhere.  Everything is checked here, before
 * the store is touched, so that a bad row refuses the whole import with a
 * message naming the case and the row. */
#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_cli.h"

#define MAX_MODEL_DIM 65536

static const char *const case_fields[] = {
    "row", "study_uid", "patient_id", "patient_key", "study_date", "site", "manufacturer",
    "scanner_model", "field_strength", "sex", "age", "views", "diagnoses", "impression",
    "impression_source", "sources",
};
static const char *const top_fields[] = {
    "format", "model", "image_vectors", "text_vectors", "cases",
};
static const char *const model_fields[] = {"name", "weights_hash", "dim"};
static const char *const diagnosis_fields[] = {"code", "system", "label", "source"};

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Where an error is: "manifest.json: cases[3] (row 3)". */
typedef struct place {
    const char *file;
    long index; /* -1: top level */
    long row;   /* -1: not known yet */
} place;

static int place_fail(const place *p, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static int place_fail(const place *p, int code, const char *fmt, ...)
{
    char what[1024], where[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (p->index < 0)
        snprintf(where, sizeof where, "%s", p->file);
    else if (p->row < 0)
        snprintf(where, sizeof where, "%s: cases[%ld]", p->file, p->index);
    else
        snprintf(where, sizeof where, "%s: cases[%ld] (row %ld)", p->file, p->index, p->row);
    return cmr_fail(code, "%s: %s", where, what);
}

/* Unknown keys are refused so that a misspelt field ("diagnosis") is not
 * silently dropped; "x-" keys are the documented way to carry extras. */
static int check_keys(const place *p, const char *what, json_t *obj, const char *const *known,
                      size_t n_known)
{
    const char *key;
    json_t *value;
    json_object_foreach(obj, key, value) {
        (void)value;
        if (!strncmp(key, "x-", 2))
            continue;
        size_t i;
        for (i = 0; i < n_known; i++)
            if (!strcmp(key, known[i]))
                break;
        if (i == n_known) {
            char list[512] = "";
            for (size_t j = 0; j < n_known; j++) {
                strncat(list, j ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, known[j], sizeof list - strlen(list) - 1);
            }
            return place_fail(p, CMR_EFORMAT, "unknown field '%s' in %s (known: %s; fields "
                                              "starting with 'x-' are ignored)", key, what, list);
        }
    }
    return 0;
}

/* An optional string: absent, null and "" all mean unknown (NULL). */
static int opt_string(const place *p, json_t *obj, const char *key, const char **out)
{
    json_t *v = json_object_get(obj, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v))
        return place_fail(p, CMR_EFORMAT, "%s must be a string", key);
    if (json_string_length(v) > CMR_TEXT_MAX)
        return place_fail(p, CMR_EFORMAT, "%s is longer than %u bytes", key, CMR_TEXT_MAX);
    if (json_string_length(v) > 0)
        *out = json_string_value(v);
    return 0;
}

static int parse_uid(const place *p, json_t *obj, const char **out)
{
    json_t *v = json_object_get(obj, "study_uid");
    if (!v || json_is_null(v))
        return place_fail(p, CMR_EFORMAT, "study_uid is missing (every case needs its Study "
                                          "Instance UID)");
    if (!json_is_string(v))
        return place_fail(p, CMR_EFORMAT, "study_uid must be a string");
    /* Its content is checked with the rest of the case by cmr_case_check. */
    *out = json_string_value(v);
    return 0;
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)tolower((unsigned char)c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

static int parse_patient(const place *p, json_t *obj, cmr_import_case *ic)
{
    json_t *id = json_object_get(obj, "patient_id"), *key = json_object_get(obj, "patient_key");
    if (id && json_is_null(id))
        id = NULL;
    if (key && json_is_null(key))
        key = NULL;
    if (id && key)
        return place_fail(p, CMR_EFORMAT, "give patient_id or patient_key, not both");
    if (id) {
        if (!json_is_string(id) || json_string_length(id) == 0)
            return place_fail(p, CMR_EFORMAT, "patient_id must be a non-empty string");
        ic->patient_id = json_string_value(id);
    }
    if (key) {
        const char *hex = json_is_string(key) ? json_string_value(key) : "";
        if (strlen(hex) != 2 * CMR_PATIENT_KEY_BYTES)
            return place_fail(p, CMR_EFORMAT, "patient_key must be %d hexadecimal digits",
                              2 * CMR_PATIENT_KEY_BYTES);
        for (int i = 0; i < CMR_PATIENT_KEY_BYTES; i++) {
            int hi = hex_value(hex[2 * i]), lo = hex_value(hex[2 * i + 1]);
            if (hi < 0 || lo < 0)
                return place_fail(p, CMR_EFORMAT, "patient_key has a character that is not a "
                                                  "hexadecimal digit near position %d", 2 * i + 1);
            ic->c.patient_key[i] = (uint8_t)(hi << 4 | lo);
        }
        ic->c.has_patient_key = 1;
    }
    return 0;
}

static int parse_demographics(const place *p, json_t *obj, cmr_case *c)
{
    json_t *v;
    int rc;
    c->age_years = -1;
    if ((v = json_object_get(obj, "study_date")) && !json_is_null(v)) {
        if (!json_is_string(v))
            return place_fail(p, CMR_EFORMAT, "study_date must be a string (YYYY-MM-DD or "
                                              "YYYYMMDD)");
        if ((rc = cmr_cli_parse_date(json_string_value(v), &c->study_date)))
            return place_fail(p, CMR_EFORMAT, "study_date: %s", cmr_errmsg());
    }
    if ((v = json_object_get(obj, "sex")) && !json_is_null(v)) {
        const char *s = json_is_string(v) ? json_string_value(v) : "";
        char sex = (char)toupper((unsigned char)s[0]);
        if (strlen(s) != 1 || (sex != 'F' && sex != 'M' && sex != 'O'))
            return place_fail(p, CMR_EFORMAT, "sex must be \"F\", \"M\" or \"O\" (or null)");
        c->sex = sex;
    }
    if ((v = json_object_get(obj, "age")) && !json_is_null(v)) {
        if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > INT16_MAX)
            return place_fail(p, CMR_EFORMAT, "age must be a whole number of years");
        c->age_years = (int)json_integer_value(v);
    }
    if ((v = json_object_get(obj, "field_strength")) && !json_is_null(v)) {
        double t = json_is_number(v) ? json_number_value(v) : -1;
        if (!(t > 0 && t < 1e6))
            return place_fail(p, CMR_EFORMAT, "field_strength must be a positive number of tesla");
        c->field_strength = (float)t;
    }
    return 0;
}

static int parse_views(const place *p, json_t *obj, cmr_case *c)
{
    json_t *v = json_object_get(obj, "views"), *item;
    size_t i;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return place_fail(p, CMR_EFORMAT, "views must be an array of view names");
    json_array_foreach(v, i, item) {
        uint32_t bit;
        if (!json_is_string(item) || cmr_view_parse(json_string_value(item), &bit) != 0) {
            char list[256] = "";
            for (unsigned b = 0; b < CMR_VIEW_COUNT_; b++) {
                strncat(list, b ? ", " : "", sizeof list - strlen(list) - 1);
                strncat(list, cmr_view_name(1u << b), sizeof list - strlen(list) - 1);
            }
            return place_fail(p, CMR_EFORMAT, "views[%zu]: '%s' is not a view name (known: %s)",
                              i, json_is_string(item) ? json_string_value(item) : "(not a string)",
                              list);
        }
        c->views |= bit;
    }
    return 0;
}

static int parse_diagnoses(const place *p, json_t *obj, cmr_import_case *ic)
{
    json_t *v = json_object_get(obj, "diagnoses"), *item;
    size_t i;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return place_fail(p, CMR_EFORMAT, "diagnoses must be an array");
    size_t n = json_array_size(v);
    if (n && !(ic->diagnoses = calloc(n, sizeof *ic->diagnoses)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    json_array_foreach(v, i, item) {
        cmr_diagnosis *d = &ic->diagnoses[i];
        if (json_is_string(item)) {
            d->code = json_string_value(item);
        } else if (json_is_object(item)) {
            char what[32];
            snprintf(what, sizeof what, "diagnoses[%zu]", i);
            int rc = check_keys(p, what, item, diagnosis_fields, COUNT(diagnosis_fields));
            if (rc || (rc = opt_string(p, item, "code", &d->code)) ||
                (rc = opt_string(p, item, "system", &d->system)) ||
                (rc = opt_string(p, item, "label", &d->label)) ||
                (rc = opt_string(p, item, "source", &d->source)))
                return rc;
        } else {
            return place_fail(p, CMR_EFORMAT, "diagnoses[%zu] must be an object or a code string",
                              i);
        }
        if (!d->code || !*d->code)
            return place_fail(p, CMR_EFORMAT, "diagnoses[%zu] has no code", i);
        size_t len = strlen(d->code);
        if (len > 64)
            return place_fail(p, CMR_EFORMAT, "diagnoses[%zu]: code '%.20s...' is longer than 64 "
                                              "characters", i, d->code);
        for (size_t k = 0; k < len; k++)
            if (isspace((unsigned char)d->code[k]) || d->code[k] == ',' || d->code[k] == '(' ||
                d->code[k] == ')')
                return place_fail(p, CMR_EFORMAT, "diagnoses[%zu]: code '%s' contains a space, "
                                                  "comma or parenthesis", i, d->code);
    }
    ic->c.n_diagnoses = n;
    ic->c.diagnoses = ic->diagnoses;
    return 0;
}

static int parse_sources(const place *p, json_t *obj, cmr_import_case *ic)
{
    json_t *v = json_object_get(obj, "sources"), *item;
    size_t i;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_array(v))
        return place_fail(p, CMR_EFORMAT, "sources must be an array of strings");
    size_t n = json_array_size(v);
    if (n && !(ic->sources = calloc(n, sizeof *ic->sources)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    json_array_foreach(v, i, item) {
        if (!json_is_string(item) || json_string_length(item) == 0 ||
            json_string_length(item) > CMR_TEXT_MAX)
            return place_fail(p, CMR_EFORMAT, "sources[%zu] must be a non-empty string", i);
        ic->sources[i] = json_string_value(item);
    }
    ic->c.n_sources = n;
    ic->c.sources = ic->sources;
    return 0;
}

static int parse_case(const char *file, json_t *obj, size_t index, size_t n_cases,
                      cmr_import_case *ic)
{
    place p = {file, (long)index, -1};
    memset(ic, 0, sizeof *ic);
    ic->index = index;
    ic->row = index;
    if (!json_is_object(obj))
        return place_fail(&p, CMR_EFORMAT, "must be an object");
    json_t *row = json_object_get(obj, "row");
    if (row && !json_is_null(row)) {
        if (!json_is_integer(row) || json_integer_value(row) < 0 ||
            (uint64_t)json_integer_value(row) >= n_cases)
            return place_fail(&p, CMR_EFORMAT, "row must be a whole number from 0 to %zu (the "
                                               "vector files have one row per case)", n_cases - 1);
        ic->row = (size_t)json_integer_value(row);
    }
    p.row = (long)ic->row;
    cmr_case *c = &ic->c;
    int rc;
    if ((rc = check_keys(&p, "the case", obj, case_fields, COUNT(case_fields))) ||
        (rc = parse_uid(&p, obj, &c->study_uid)) || (rc = parse_patient(&p, obj, ic)) ||
        (rc = parse_demographics(&p, obj, c)) || (rc = opt_string(&p, obj, "site", &c->site)) ||
        (rc = opt_string(&p, obj, "manufacturer", &c->manufacturer)) ||
        (rc = opt_string(&p, obj, "scanner_model", &c->scanner_model)) ||
        (rc = parse_views(&p, obj, c)) || (rc = parse_diagnoses(&p, obj, ic)) ||
        (rc = opt_string(&p, obj, "impression", &c->impression)) ||
        (rc = opt_string(&p, obj, "impression_source", &c->impression_source)) ||
        (rc = parse_sources(&p, obj, ic)))
        return rc;
    /* The store's own rules (UID characters, ranges), named by row here
     * rather than discovered mid-import. */
    if ((rc = cmr_case_check(c)))
        return place_fail(&p, CMR_EFORMAT, "%s", cmr_errmsg());
    return 0;
}

static int compare_uid(const void *a, const void *b)
{
    const cmr_import_case *x = *(const cmr_import_case *const *)a;
    const cmr_import_case *y = *(const cmr_import_case *const *)b;
    int d = strcmp(x->c.study_uid, y->c.study_uid);
    return d ? d : (x->index > y->index) - (x->index < y->index);
}

/* Two cases with one study would make the second silently replace the first. */
static int check_duplicates(const char *file, cmr_import_manifest *m)
{
    size_t n = m->n_cases;
    if (n < 2)
        return 0;
    cmr_import_case **sorted = malloc(n * sizeof *sorted);
    size_t *row_owner = calloc(n, sizeof *row_owner);
    int rc = 0;
    if (!sorted || !row_owner) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    /* Rows: each used once (cases are in manifest order, so the first
     * repeat found is the earliest). */
    for (size_t i = 0; i < n; i++) {
        cmr_import_case *ic = &m->cases[i];
        if (row_owner[ic->row]) {
            place p = {file, (long)i, (long)ic->row};
            rc = place_fail(&p, CMR_EFORMAT, "row %zu is already used by cases[%zu]", ic->row,
                            row_owner[ic->row] - 1);
            goto done;
        }
        row_owner[ic->row] = i + 1;
    }
    for (size_t i = 0; i < n; i++)
        sorted[i] = &m->cases[i];
    qsort(sorted, n, sizeof *sorted, compare_uid);
    /* Equal UIDs are now adjacent, in manifest order; report the repeat
     * that comes first in the manifest, against that study's first case. */
    const cmr_import_case *first = NULL, *second = NULL;
    for (size_t i = 1; i < n; i++) {
        int starts_repeat = !strcmp(sorted[i]->c.study_uid, sorted[i - 1]->c.study_uid) &&
                            (i < 2 || strcmp(sorted[i - 2]->c.study_uid, sorted[i]->c.study_uid));
        if (starts_repeat && (!second || sorted[i]->index < second->index)) {
            first = sorted[i - 1];
            second = sorted[i];
        }
    }
    if (second) {
        place p = {file, (long)second->index, (long)second->row};
        rc = place_fail(&p, CMR_EFORMAT, "study_uid %s is also in cases[%zu] (row %zu); a study "
                                         "may appear once", second->c.study_uid, first->index,
                        first->row);
    }
done:
    free(sorted);
    free(row_owner);
    return rc;
}

static int parse_model(const char *file, json_t *root, cmr_import_manifest *m)
{
    place p = {file, -1, -1};
    json_t *model = json_object_get(root, "model");
    if (!json_is_object(model))
        return place_fail(&p, CMR_EFORMAT, "\"model\" must be an object with name, weights_hash "
                                           "and dim");
    int rc = check_keys(&p, "model", model, model_fields, COUNT(model_fields));
    if (rc)
        return rc;
    json_t *name = json_object_get(model, "name"), *hash = json_object_get(model, "weights_hash"),
           *dim = json_object_get(model, "dim");
    if (!json_is_string(name) || json_string_length(name) == 0)
        return place_fail(&p, CMR_EFORMAT, "model.name must be a non-empty string");
    if (!json_is_string(hash) || json_string_length(hash) == 0)
        return place_fail(&p, CMR_EFORMAT, "model.weights_hash must be a non-empty string");
    if (!json_is_integer(dim) || json_integer_value(dim) < 1 ||
        json_integer_value(dim) > MAX_MODEL_DIM)
        return place_fail(&p, CMR_EFORMAT, "model.dim must be a whole number from 1 to %d",
                          MAX_MODEL_DIM);
    m->model_name = json_string_value(name);
    m->model_hash = json_string_value(hash);
    m->dim = (unsigned)json_integer_value(dim);
    return 0;
}

static int resolve_path(const char *file, const char *dir, json_t *root, const char *key,
                        char **out)
{
    place p = {file, -1, -1};
    json_t *v = json_object_get(root, key);
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    if (!json_is_string(v) || json_string_length(v) == 0)
        return place_fail(&p, CMR_EFORMAT, "%s must be the path of a .npy file", key);
    const char *rel = json_string_value(v);
    size_t n = strlen(dir) + strlen(rel) + 2;
    if (!(*out = malloc(n)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    if (rel[0] == '/' || !*dir)
        snprintf(*out, n, "%s", rel);
    else
        snprintf(*out, n, "%s/%s", dir, rel);
    return 0;
}

int cmr_import_manifest_parse(const char *name, const char *dir, const char *json_text, cmr_import_manifest *m)
{
    memset(m, 0, sizeof *m);
    place p = {name, -1, -1};
    json_error_t jerr;
    int rc;
    if (!(m->path = strdup(name)) || !(m->dir = strdup(dir ? dir : ""))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto fail;
    }
    /* Repeated keys are refused: which of two "study_date"s is meant? */
    if (!(m->root = json_loads(json_text, JSON_REJECT_DUPLICATES, &jerr))) {
        rc = cmr_fail(CMR_EFORMAT, "%s: line %d, column %d: %s", name, jerr.line, jerr.column,
                      jerr.text);
        goto fail;
    }
    json_t *root = m->root;
    if (!json_is_object(root)) {
        rc = place_fail(&p, CMR_EFORMAT, "the manifest must be a JSON object");
        goto fail;
    }
    json_t *format = json_object_get(root, "format");
    if (!json_is_string(format) || strcmp(json_string_value(format), CMR_MANIFEST_FORMAT) != 0) {
        rc = place_fail(&p, CMR_EFORMAT, "\"format\" is %s%s%s; this program reads \"%s\"",
                        json_is_string(format) ? "\"" : "",
                        json_is_string(format) ? json_string_value(format) : "missing",
                        json_is_string(format) ? "\"" : "", CMR_MANIFEST_FORMAT);
        goto fail;
    }
    if ((rc = check_keys(&p, "the manifest", root, top_fields, COUNT(top_fields))) ||
        (rc = parse_model(name, root, m)) ||
        (rc = resolve_path(name, m->dir, root, "image_vectors", &m->vector_path[CMR_SPACE_IMAGE])) ||
        (rc = resolve_path(name, m->dir, root, "text_vectors", &m->vector_path[CMR_SPACE_TEXT])))
        goto fail;
    if (!m->vector_path[CMR_SPACE_IMAGE] && !m->vector_path[CMR_SPACE_TEXT]) {
        rc = place_fail(&p, CMR_EFORMAT, "neither image_vectors nor text_vectors is given");
        goto fail;
    }
    json_t *cases = json_object_get(root, "cases");
    if (!json_is_array(cases) || json_array_size(cases) == 0) {
        rc = place_fail(&p, CMR_EFORMAT, "\"cases\" must be a non-empty array");
        goto fail;
    }
    size_t n = json_array_size(cases);
    if (!(m->cases = calloc(n, sizeof *m->cases))) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for %zu cases", n);
        goto fail;
    }
    for (size_t i = 0; i < n; i++) {
        m->n_cases = i + 1; /* so that free releases what parse_case allocated */
        if ((rc = parse_case(name, json_array_get(cases, i), i, n, &m->cases[i])))
            goto fail;
    }
    if ((rc = check_duplicates(name, m)))
        goto fail;
    return 0;
fail:
    cmr_import_manifest_free(m);
    return rc;
}

int cmr_import_manifest_load(const char *path, cmr_import_manifest *m)
{
    memset(m, 0, sizeof *m);
    FILE *f = fopen(path, "rb");
    if (!f)
        return cmr_fail(errno == ENOENT ? CMR_ENOTFOUND : CMR_EIO, "%s: %s", path, strerror(errno));
    char *text = NULL;
    size_t len = 0, cap = 0;
    int rc = 0;
    for (;;) {
        if (len + 65536 + 1 > cap) {
            cap = cap ? cap * 2 : 131072;
            char *grown = realloc(text, cap);
            if (!grown) {
                rc = cmr_fail(CMR_ENOMEM, "%s: out of memory", path);
                goto done;
            }
            text = grown;
        }
        size_t got = fread(text + len, 1, cap - len - 1, f);
        len += got;
        if (got == 0)
            break;
    }
    if (ferror(f)) {
        rc = cmr_fail(CMR_EIO, "%s: read error", path);
        goto done;
    }
    text[len] = '\0';
    if (strlen(text) != len) {
        rc = cmr_fail(CMR_EFORMAT, "%s: contains a NUL byte; not a JSON text file", path);
        goto done;
    }
    char *dir = strdup(path);
    if (!dir) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory");
        goto done;
    }
    char *slash = strrchr(dir, '/');
    if (!slash)
        strcpy(dir, ".");
    else if (slash == dir)
        dir[1] = '\0';
    else
        *slash = '\0';
    rc = cmr_import_manifest_parse(path, dir, text, m);
    free(dir);
done:
    free(text);
    fclose(f);
    return rc;
}

void cmr_import_manifest_free(cmr_import_manifest *m)
{
    if (!m)
        return;
    for (size_t i = 0; i < m->n_cases; i++) {
        free(m->cases[i].diagnoses);
        free(m->cases[i].sources);
    }
    free(m->cases);
    for (int s = 0; s < CMR_NSPACES; s++)
        free(m->vector_path[s]);
    json_decref(m->root);
    free(m->path);
    free(m->dir);
    memset(m, 0, sizeof *m);
}
