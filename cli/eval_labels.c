/* Labels and prompts for `cmrsearch eval` (docs/eval.md): the built-in
 * prompt banks, a store's classes, and the labels files it reads: a CSV of
 * study_uid,label or a cmr-phantom truth.json, whose params give the
 * findings by the rules documented in eval.md. */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <pthread.h>

#include "cmr_error.h"
#include "cmr_searcher.h"
#include "eval.h"

/* The rules by which truth.json gives each CMR-CLIP finding; the prompts
 * are the searcher's bank's (searcher/findings.c). */
static const struct {
    const char *name, *rule;
} finding_rules[EVAL_N_FINDINGS] = {
    {"lv_systolic_dysfunction", "LVEF < 50%"},
    {"rv_systolic_dysfunction", "RVEF < 45%"},
    {"lv_dilation", "dcm, or LVEDV > 130 mL (F) / 190 mL (M)"},
    {"rv_dilation", "arvc, or RVEDV > 130 mL (F) / 200 mL (M)"},
    {"lv_hypertrophy", "max wall >= 13 mm, lvnc excluded"},
    {"lge", "LGE pattern not none"},
};

static eval_finding_def finding_table[EVAL_N_FINDINGS];
static const char *const no_prompts[] = {NULL};
static pthread_once_t finding_once = PTHREAD_ONCE_INIT;

static void fill_findings(void)
{
    for (int f = 0; f < EVAL_N_FINDINGS; f++) {
        size_t b;
        /* Every rule's key is in the bank (tests/test_eval.c checks it). */
        finding_table[f].name = finding_rules[f].name;
        finding_table[f].rule = finding_rules[f].rule;
        finding_table[f].prompts = cmr_finding_lookup(finding_rules[f].name, &b) == 0
                                       ? cmr_finding_bank(b)->paper
                                       : no_prompts;
    }
}

const eval_finding_def *eval_finding_table(void)
{
    pthread_once(&finding_once, fill_findings);
    return finding_table;
}

const char *eval_negation_text(void)
{
    size_t b;
    return cmr_finding_lookup("lge", &b) == 0 ? cmr_finding_bank(b)->negative[0] : "no late gadolinium enhancement";
}

const char *const *eval_bank_prompts(const char *label)
{
    size_t b;
    if (!label || cmr_finding_lookup(label, &b) != 0) {
        cmr_clear_error();
        return NULL;
    }
    return cmr_finding_bank(b)->kind == CMR_FINDING_DIAGNOSIS ? cmr_finding_bank(b)->positive : NULL;
}

/* Position in the bank (normal first, then the five main classes): the
 * order tables and plots show classes in; other labels follow by name. */
static size_t bank_order(const char *label)
{
    size_t b = 0, n = cmr_finding_bank_size();
    while (b < n && (cmr_finding_bank(b)->kind != CMR_FINDING_DIAGNOSIS || strcmp(cmr_finding_bank(b)->key, label)))
        b++;
    return b;
}


/* ---- classes and labels files ---- */

int eval_labels_class(eval_labels *e, const char *label, const char *display)
{
    for (size_t c = 0; c < e->n_classes; c++)
        if (!strcmp(e->label[c], label))
            return (int)c;
    if (e->n_classes == e->cap_classes) {
        size_t cap = e->cap_classes ? 2 * e->cap_classes : 16;
        int ok = 1;
        EVAL_GROW(ok, e->label, cap);
        EVAL_GROW(ok, e->display, cap);
        EVAL_GROW(ok, e->count, cap);
        EVAL_GROW(ok, e->selected, cap);
        if (!ok)
            return cmr_fail(CMR_ENOMEM, "out of memory for labels");
        e->cap_classes = cap;
    }
    size_t c = e->n_classes;
    e->label[c] = strdup(label);
    e->display[c] = strdup(display && *display ? display : label);
    e->count[c] = 0;
    e->selected[c] = 1;
    if (!e->label[c] || !e->display[c]) {
        free(e->label[c]);
        free(e->display[c]);
        return cmr_fail(CMR_ENOMEM, "out of memory for labels");
    }
    e->n_classes++;
    return (int)c;
}

static int cmp_entry(const void *a, const void *b)
{
    return strcmp(((const eval_label_entry *)a)->uid, ((const eval_label_entry *)b)->uid);
}

static double param(const json_t *params, const char *key)
{
    json_t *v = json_object_get(params, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

/* A finding from truth.json params (docs/eval.md): -1 when the number is
 * missing.  Fractions and percentages are both accepted for EFs.  Volume
 * limits sit above every normal heart the phantom draws (its hearts are
 * smaller than real ones, and truth.json carries no body surface area for
 * an index); unknown sex takes the male limit. */
int8_t eval_finding_from_params(int f, const char *dx, const char *sex, const json_t *params)
{
    int male = !sex || strcmp(sex, "F") != 0;
    double v;
    switch (f) {
    case EVAL_F_LV_DYS:
    case EVAL_F_RV_DYS:
        v = param(params, f == EVAL_F_LV_DYS ? "lvef" : "rvef");
        if (isnan(v))
            return -1;
        if (v > 1.5)
            v /= 100;
        return v < (f == EVAL_F_LV_DYS ? 0.50 : 0.45);
    case EVAL_F_LV_DIL:
        v = param(params, "lvedv_ml");
        return !strcmp(dx, "dcm") || (!isnan(v) && v > (male ? 190 : 130));
    case EVAL_F_RV_DIL:
        v = param(params, "rvedv_ml");
        return !strcmp(dx, "arvc") || (!isnan(v) && v > (male ? 200 : 130));
    case EVAL_F_LVH:
        v = param(params, "max_wall_mm");
        /* LVNC's max wall counts the trabeculated layer: not hypertrophy */
        return isnan(v) ? -1 : v >= 13 && strcmp(dx, "lvnc") != 0;
    default: {
        const char *p = json_string_value(json_object_get(params, "lge_pattern"));
        return p ? *p && strcmp(p, "none") != 0 : -1;
    }
    }
}

static int load_truth(eval_labels *e, const char *path, json_t *root)
{
    json_t *list = json_object_get(root, "study_list");
    if (!json_is_array(list))
        return cmr_fail(CMR_EFORMAT, "%s: no \"study_list\" array (expected a cmr-phantom "
                                     "truth.json or a CSV of study_uid,label)", path);
    size_t n = json_array_size(list);
    if (!(e->entries = calloc(n ? n : 1, sizeof *e->entries)))
        return cmr_fail(CMR_ENOMEM, "out of memory for %zu labels", n);
    for (size_t i = 0; i < n; i++) {
        json_t *st = json_array_get(list, i), *params = json_object_get(st, "params");
        const char *uid = json_string_value(json_object_get(st, "study_uid"));
        const char *dx = json_string_value(json_object_get(st, "diagnosis"));
        const char *sex = json_string_value(json_object_get(st, "sex"));
        if (!uid || !dx || !*dx)
            return cmr_fail(CMR_EFORMAT, "%s: study %zu lacks \"study_uid\" or \"diagnosis\"",
                            path, i);
        eval_label_entry *le = &e->entries[e->n_entries++];
        le->uid = uid;
        if ((le->cls = eval_labels_class(e, dx, dx)) < 0)
            return le->cls;
        for (int f = 0; f < EVAL_N_FINDINGS; f++)
            le->finding[f] = json_is_object(params) ? eval_finding_from_params(f, dx, sex, params) : -1;
    }
    e->have_findings = 1;
    return 0;
}

static char *trim(char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    char *end = s + strlen(s);
    while (end > s && isspace((unsigned char)end[-1]))
        *--end = '\0';
    return s;
}

static int load_csv(eval_labels *e, const char *path)
{
    size_t lines = 1;
    for (const char *p = e->csv; *p; p++)
        lines += *p == '\n';
    if (!(e->entries = calloc(lines, sizeof *e->entries)))
        return cmr_fail(CMR_ENOMEM, "out of memory for %zu labels", lines);
    char *save = NULL, *line = strtok_r(e->csv, "\n", &save);
    for (size_t no = 1; line; line = strtok_r(NULL, "\n", &save), no++) {
        char *s = trim(line);
        if (!*s || *s == '#')
            continue;
        char *comma = strchr(s, ',');
        if (!comma || strchr(comma + 1, ','))
            return cmr_fail(CMR_EFORMAT, "%s: line %zu: expected two fields, study_uid,label",
                            path, no);
        *comma = '\0';
        char *uid = trim(s), *label = trim(comma + 1);
        if (e->n_entries == 0 && !strcmp(uid, "study_uid"))
            continue; /* the header */
        if (!*uid || !*label)
            return cmr_fail(CMR_EFORMAT, "%s: line %zu: empty study_uid or label", path, no);
        eval_label_entry *le = &e->entries[e->n_entries++];
        le->uid = uid;
        memset(le->finding, -1, sizeof le->finding);
        if ((le->cls = eval_labels_class(e, label, label)) < 0)
            return le->cls;
    }
    return 0;
}

int eval_labels_load(eval_labels *e, const char *path)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return cmr_fail(CMR_ENOTFOUND, "%s: cannot open the labels file", path);
    int c;
    while ((c = fgetc(fp)) != EOF && isspace(c))
        ;
    int rc;
    if (c == '{') {
        rewind(fp);
        json_error_t err;
        e->json = json_loadf(fp, 0, &err);
        fclose(fp);
        if (!e->json)
            return cmr_fail(CMR_EFORMAT, "%s: line %d: %s", path, err.line, err.text);
        rc = load_truth(e, path, e->json);
    } else {
        rewind(fp);
        size_t cap = 1 << 16, len = 0, got;
        char *buf = malloc(cap);
        while (buf && (got = fread(buf + len, 1, cap - len - 1, fp)) > 0) {
            len += got;
            char *grown = len + 1 == cap ? realloc(buf, cap *= 2) : buf;
            if (!grown)
                free(buf);
            buf = grown;
        }
        fclose(fp);
        if (!buf)
            return cmr_fail(CMR_ENOMEM, "%s: out of memory reading labels", path);
        buf[len] = '\0';
        e->csv = buf;
        rc = load_csv(e, path);
    }
    if (rc)
        return rc;
    qsort(e->entries, e->n_entries, sizeof *e->entries, cmp_entry);
    for (size_t i = 1; i < e->n_entries; i++)
        if (!strcmp(e->entries[i].uid, e->entries[i - 1].uid))
            return cmr_fail(CMR_EFORMAT, "%s: study %s is labelled twice", path, e->entries[i].uid);
    return 0;
}
const eval_label_entry *eval_labels_find(const eval_labels *l, const char *uid)
{
    eval_label_entry key = {.uid = uid};
    return l->n_entries ? bsearch(&key, l->entries, l->n_entries, sizeof *l->entries, cmp_entry)
                        : NULL;
}

typedef struct class_key {
    size_t bank; /* bank_order() */
    const char *label;
    size_t index;
} class_key;

static int cmp_class(const void *a, const void *b)
{
    const class_key *x = a, *y = b;
    return x->bank != y->bank ? (x->bank > y->bank) - (x->bank < y->bank)
                              : strcmp(x->label, y->label);
}

int eval_labels_sort(eval_labels *l, int *cls, size_t n)
{
    size_t m = l->n_classes;
    class_key *order = malloc((m ? m : 1) * sizeof *order);
    size_t *count = malloc((m ? m : 1) * sizeof *count);
    char **label = malloc((m ? m : 1) * sizeof *label), **display = malloc((m ? m : 1) * sizeof *display);
    int *selected = malloc((m ? m : 1) * sizeof *selected), *rank = malloc((m ? m : 1) * sizeof *rank);
    int rc = 0;
    if (!order || !count || !label || !display || !selected || !rank) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory sorting labels");
        goto done;
    }
    for (size_t c = 0; c < m; c++)
        order[c] = (class_key){bank_order(l->label[c]), l->label[c], c};
    qsort(order, m, sizeof *order, cmp_class);
    for (size_t c = 0; c < m; c++) {
        size_t from = order[c].index;
        label[c] = l->label[from];
        display[c] = l->display[from];
        count[c] = l->count[from];
        selected[c] = l->selected[from];
        rank[from] = (int)c;
    }
    memcpy(l->label, label, m * sizeof *label);
    memcpy(l->display, display, m * sizeof *display);
    memcpy(l->count, count, m * sizeof *count);
    memcpy(l->selected, selected, m * sizeof *selected);
    for (size_t i = 0; i < n; i++)
        cls[i] = rank[cls[i]];
    for (size_t i = 0; i < l->n_entries; i++)
        l->entries[i].cls = rank[l->entries[i].cls];
done:
    free(order);
    free(count);
    free(label);
    free(display);
    free(selected);
    free(rank);
    return rc;
}

void eval_labels_free(eval_labels *l)
{
    for (size_t c = 0; c < l->n_classes; c++) {
        free(l->label[c]);
        free(l->display[c]);
    }
    free(l->label);
    free(l->display);
    free(l->count);
    free(l->selected);
    json_decref(l->json);
    free(l->csv);
    free(l->entries);
    memset(l, 0, sizeof *l);
}
