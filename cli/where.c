/* --where EXPR: a small filter language mapped onto cmr_filter.
 *
 *   expr    := clause { "and" clause }
 *   clause  := "diagnosis" ( "=" value | "in" "(" value { "," value } ")" )
 *            | "date" ( cmp date | "between" date "and" date )
 *            | "age"  ( cmp int  | "between" int "and" int )
 *            | "site" "=" value | "manufacturer" "=" value | "sex" "=" ( F | M | O )
 *            | "finding" KEY ( cmp p | "between" p "and" p )
 *            | "has" KEY            (= finding KEY >= 0.5)
 *            | "lacks" KEY          (= finding KEY < 0.5)
 *   cmp     := "=" | "<" | "<=" | ">" | ">="
 *   KEY     := a finding of the prompt bank (searcher/cmr_searcher.h): lge, hcm, ...
 *   p       := a probability, 0 to 1
 *   value   := bare word (letters, digits, non-ASCII, . - _ : / +) | "quoted" | 'quoted'
 *
 * Only conjunctions: cmr_filter is one AND of facets (with "any of" for
 * diagnoses), so anything else is refused rather than approximated. */
#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <math.h>

#include "cmr_cli.h"
#include "cmr_searcher.h"

#define AGE_LIMIT 130

typedef enum tok_kind { T_END, T_WORD, T_STRING, T_LPAREN, T_RPAREN, T_COMMA, T_OP } tok_kind;

typedef struct token {
    tok_kind kind;
    size_t column;    /* 1-based, for messages */
    const char *text; /* NUL-terminated copy in the arena (unquoted for strings) */
} token;

typedef struct parser {
    const char *expr;
    const char *p;
    char *arena;      /* out->text: every value lives here */
    size_t arena_used;
    token tok;        /* current token */
    cmr_where *out;
    size_t n_diagnoses, cap_diagnoses;
    int have_date_from, have_date_to, have_age_min, have_age_max;
    int age_min, age_max;
} parser;

static int is_word_char(char c)
{
    /* Bytes of UTF-8 sequences count as letters, so "Hôpital" needs no quotes. */
    return isalnum((unsigned char)c) || (unsigned char)c >= 0x80 || c == '.' || c == '-' ||
           c == '_' || c == ':' || c == '/' || c == '+';
}

static int token_error(const parser *ps, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static int token_error(const parser *ps, const char *fmt, ...)
{
    char what[512], found[96];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    if (ps->tok.kind == T_END)
        snprintf(found, sizeof found, "at the end");
    else
        snprintf(found, sizeof found, "column %zu, at %s%.40s%s", ps->tok.column,
                 ps->tok.kind == T_STRING ? "\"" : "'", ps->tok.text,
                 ps->tok.kind == T_STRING ? "\"" : "'");
    return cmr_fail(CMR_EINVAL, "--where: %s: %s", found, what);
}

static char *arena_put(parser *ps, const char *s, size_t n)
{
    char *dst = ps->arena + ps->arena_used;
    memcpy(dst, s, n);
    dst[n] = '\0';
    ps->arena_used += n + 1;
    return dst;
}

static int next(parser *ps)
{
    while (*ps->p && isspace((unsigned char)*ps->p))
        ps->p++;
    const char *start = ps->p;
    token *t = &ps->tok;
    t->column = (size_t)(start - ps->expr) + 1;
    if (!*start) {
        t->kind = T_END;
        t->text = "";
        return 0;
    }
    char c = *start;
    if (c == '(' || c == ')' || c == ',') {
        t->kind = c == '(' ? T_LPAREN : c == ')' ? T_RPAREN : T_COMMA;
        t->text = arena_put(ps, start, 1);
        ps->p++;
        return 0;
    }
    if (c == '=' || c == '<' || c == '>' || c == '!') {
        size_t n = (start[1] == '=') ? 2 : 1;
        t->kind = T_OP;
        t->text = arena_put(ps, start, n);
        ps->p += n;
        if (!strcmp(t->text, "!") || !strcmp(t->text, "!="))
            return token_error(ps, "'!=' is not supported (only equality, ranges and 'in')");
        return 0;
    }
    if (c == '"' || c == '\'') {
        /* Backslash escapes the quote or a backslash, nothing else. */
        char *dst = ps->arena + ps->arena_used;
        size_t n = 0;
        const char *q = start + 1;
        while (*q && *q != c) {
            if (*q == '\\' && (q[1] == c || q[1] == '\\'))
                q++;
            dst[n++] = *q++;
        }
        if (!*q) {
            t->kind = T_STRING;
            t->text = arena_put(ps, start, strlen(start));
            return token_error(ps, "the quoted string is not closed");
        }
        dst[n] = '\0';
        ps->arena_used += n + 1;
        t->kind = T_STRING;
        t->text = dst;
        ps->p = q + 1;
        return 0;
    }
    if (is_word_char(c)) {
        const char *q = start;
        while (is_word_char(*q))
            q++;
        t->kind = T_WORD;
        t->text = arena_put(ps, start, (size_t)(q - start));
        ps->p = q;
        return 0;
    }
    t->kind = T_WORD;
    t->text = arena_put(ps, start, 1);
    return token_error(ps, "unexpected character");
}

static int is_keyword(const token *t, const char *kw)
{
    return t->kind == T_WORD && strcasecmp(t->text, kw) == 0;
}

static int expect_value(parser *ps, const char *what, const char **out)
{
    if (ps->tok.kind != T_WORD && ps->tok.kind != T_STRING)
        return token_error(ps, "expected %s", what);
    *out = ps->tok.text;
    return next(ps);
}

static int expect_equals(parser *ps, const char *field)
{
    if (is_keyword(&ps->tok, "in"))
        return token_error(ps, "%s takes one value ('%s = VALUE'); only diagnosis takes a list",
                           field, field);
    if (ps->tok.kind != T_OP || (strcmp(ps->tok.text, "=") && strcmp(ps->tok.text, "==")))
        return token_error(ps, "expected '=' after %s", field);
    return next(ps);
}

static int parse_diagnosis(parser *ps)
{
    cmr_where *w = ps->out;
    if (w->filter.n_diagnoses)
        return token_error(ps, "diagnosis is given twice; a case matches any code of one list, "
                               "so write 'diagnosis in (A, B)'");
    int list = is_keyword(&ps->tok, "in"), rc;
    if (!list && (rc = expect_equals(ps, "diagnosis")))
        return rc;
    if (list && ((rc = next(ps)) || ps->tok.kind != T_LPAREN))
        return rc ? rc : token_error(ps, "expected '(' after 'in'");
    if (list && (rc = next(ps)))
        return rc;
    for (;;) {
        const char *code = NULL;
        if ((rc = expect_value(ps, "a diagnosis code", &code)))
            return rc;
        if (ps->n_diagnoses == ps->cap_diagnoses) {
            size_t cap = ps->cap_diagnoses ? 2 * ps->cap_diagnoses : 8;
            const char **grown = realloc(w->diagnoses, cap * sizeof *grown);
            if (!grown)
                return cmr_fail(CMR_ENOMEM, "out of memory");
            w->diagnoses = grown;
            ps->cap_diagnoses = cap;
        }
        w->diagnoses[ps->n_diagnoses++] = code;
        if (!list)
            break;
        if (ps->tok.kind == T_RPAREN) {
            if ((rc = next(ps)))
                return rc;
            break;
        }
        if (ps->tok.kind != T_COMMA)
            return token_error(ps, "expected ',' or ')' in the diagnosis list");
        if ((rc = next(ps)))
            return rc;
    }
    w->filter.n_diagnoses = ps->n_diagnoses;
    w->filter.diagnoses = w->diagnoses;
    return 0;
}

static int days_in_month(int y, int m)
{
    static const int days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    return days[m - 1] + (m == 2 && leap);
}

/* Strict comparisons become inclusive bounds: the filter's are inclusive. */
static int32_t shift_day(int32_t v, int by)
{
    int y = v / 10000, m = v / 100 % 100, d = v % 100 + by;
    if (d < 1) {
        if (--m < 1) {
            m = 12;
            y--;
        }
        d = days_in_month(y, m);
    } else if (d > days_in_month(y, m)) {
        d = 1;
        if (++m > 12) {
            m = 1;
            y++;
        }
    }
    return y * 10000 + m * 100 + d;
}

static int parse_date_value(parser *ps, int32_t *out)
{
    if (ps->tok.kind != T_WORD && ps->tok.kind != T_STRING)
        return token_error(ps, "expected a date (YYYY-MM-DD or YYYYMMDD)");
    if (cmr_cli_parse_date(ps->tok.text, out))
        return token_error(ps, "not a date: use YYYY-MM-DD or YYYYMMDD");
    return next(ps);
}

static int parse_int_value(parser *ps, int *out)
{
    const char *s = ps->tok.text;
    size_t n = strlen(s);
    if (ps->tok.kind != T_WORD || n == 0 || n > 3 || strspn(s, "0123456789") != n ||
        atoi(s) > AGE_LIMIT)
        return token_error(ps, "expected an age in whole years from 0 to %d", AGE_LIMIT);
    *out = atoi(s);
    return next(ps);
}

/* A comparison or "between"; *lo and *hi receive inclusive bounds
 * (have_lo/have_hi say which were set), "v" applied to both for '='. */
typedef struct bound {
    int have_lo, have_hi;
    int32_t lo, hi;
    int strict_lo, strict_hi;
} bound;

static int parse_range(parser *ps, const char *field, int is_date, bound *b)
{
    int rc;
    int32_t v1 = 0, v2 = 0;
    int i1 = 0, i2 = 0;
    memset(b, 0, sizeof *b);
    if (is_keyword(&ps->tok, "between")) {
        if ((rc = next(ps)))
            return rc;
        if ((rc = is_date ? parse_date_value(ps, &v1) : parse_int_value(ps, &i1)))
            return rc;
        if (!is_keyword(&ps->tok, "and"))
            return token_error(ps, "expected 'and' in '%s between A and B'", field);
        if ((rc = next(ps)) || (rc = is_date ? parse_date_value(ps, &v2) : parse_int_value(ps, &i2)))
            return rc;
        b->have_lo = b->have_hi = 1;
        b->lo = is_date ? v1 : i1;
        b->hi = is_date ? v2 : i2;
        return 0;
    }
    if (ps->tok.kind != T_OP)
        return token_error(ps, "expected =, <, <=, >, >= or 'between' after %s", field);
    char op[3];
    snprintf(op, sizeof op, "%s", ps->tok.text);
    if ((rc = next(ps)) || (rc = is_date ? parse_date_value(ps, &v1) : parse_int_value(ps, &i1)))
        return rc;
    int32_t v = is_date ? v1 : i1;
    if (op[0] == '=') {
        b->have_lo = b->have_hi = 1;
        b->lo = b->hi = v;
    } else if (op[0] == '>') {
        b->have_lo = 1;
        b->lo = v;
        b->strict_lo = op[1] != '=';
    } else {
        b->have_hi = 1;
        b->hi = v;
        b->strict_hi = op[1] != '=';
    }
    return 0;
}

static int parse_date_clause(parser *ps)
{
    cmr_filter *f = &ps->out->filter;
    bound b;
    int rc = parse_range(ps, "date", 1, &b);
    if (rc)
        return rc;
    if (b.have_lo) {
        int32_t lo = b.strict_lo ? shift_day(b.lo, +1) : b.lo;
        if (!ps->have_date_from || lo > f->date_from)
            f->date_from = lo;
        ps->have_date_from = 1;
    }
    if (b.have_hi) {
        int32_t hi = b.strict_hi ? shift_day(b.hi, -1) : b.hi;
        if (!ps->have_date_to || hi < f->date_to)
            f->date_to = hi;
        ps->have_date_to = 1;
    }
    return 0;
}

static int parse_age_clause(parser *ps)
{
    bound b;
    int rc = parse_range(ps, "age", 0, &b);
    if (rc)
        return rc;
    if (b.have_lo) {
        int lo = (int)b.lo + (b.strict_lo ? 1 : 0);
        if (!ps->have_age_min || lo > ps->age_min)
            ps->age_min = lo;
        ps->have_age_min = 1;
    }
    if (b.have_hi) {
        int hi = (int)b.hi - (b.strict_hi ? 1 : 0);
        if (!ps->have_age_max || hi < ps->age_max)
            ps->age_max = hi;
        ps->have_age_max = 1;
    }
    return 0;
}

/* ---- findings ---- */

static int parse_probability(parser *ps, float *out)
{
    const char *t = ps->tok.text;
    char *end;
    double v = ps->tok.kind == T_WORD ? strtod(t, &end) : NAN;
    if (ps->tok.kind != T_WORD || end == t || *end || !(v >= 0 && v <= 1))
        return token_error(ps, "expected a probability from 0 to 1");
    *out = (float)v;
    return next(ps);
}

/* The bound on finding key (a bank key), created on first use; clauses on
 * one finding intersect. */
static int finding_bound(parser *ps, cmr_finding_bound **out)
{
    cmr_where *w = ps->out;
    size_t idx;
    if (ps->tok.kind != T_WORD && ps->tok.kind != T_STRING)
        return token_error(ps, "expected a finding (lge, hcm, lv_dilation, ...)");
    char key[CMR_FINDING_NAME_MAX + 2];
    snprintf(key, sizeof key, "%s", ps->tok.text);
    for (char *c = key; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (strlen(ps->tok.text) > CMR_FINDING_NAME_MAX || cmr_finding_lookup(key, &idx)) {
        char known[512] = "";
        for (size_t i = 0; i < cmr_finding_bank_size(); i++) {
            strncat(known, i ? ", " : "", sizeof known - strlen(known) - 1);
            strncat(known, cmr_finding_bank(i)->key, sizeof known - strlen(known) - 1);
        }
        return token_error(ps, "unknown finding (findings: %s)", known);
    }
    const char *name = cmr_finding_bank(idx)->key;
    for (size_t i = 0; i < w->filter.n_finding_bounds; i++)
        if (!strcmp(w->bounds[i].name, name)) {
            *out = &w->bounds[i];
            return next(ps);
        }
    if (w->filter.n_finding_bounds == CMR_STORE_FINDINGS_MAX)
        return token_error(ps, "too many finding conditions");
    if (!w->bounds && !(w->bounds = calloc(CMR_STORE_FINDINGS_MAX, sizeof *w->bounds)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    cmr_finding_bound *b = &w->bounds[w->filter.n_finding_bounds++];
    *b = (cmr_finding_bound){name, 0.0f, 1.0f};
    w->filter.finding_bounds = w->bounds;
    *out = b;
    return next(ps);
}

static void tighten(cmr_finding_bound *b, float lo, float hi)
{
    if (lo > b->min)
        b->min = lo;
    if (hi < b->max)
        b->max = hi;
}

static int parse_finding_clause(parser *ps, const char *field)
{
    cmr_finding_bound *b = NULL;
    int rc = finding_bound(ps, &b);
    if (rc)
        return rc;
    if (!strcmp(field, "has")) {
        tighten(b, CMR_FINDING_PRESENT, 1.0f);
        return 0;
    }
    if (!strcmp(field, "lacks")) {
        tighten(b, 0.0f, nextafterf(CMR_FINDING_PRESENT, 0.0f));
        return 0;
    }
    float v1 = 0, v2 = 0;
    if (is_keyword(&ps->tok, "between")) {
        if ((rc = next(ps)) || (rc = parse_probability(ps, &v1)))
            return rc;
        if (!is_keyword(&ps->tok, "and"))
            return token_error(ps, "expected 'and' in 'finding %s between A and B'", b->name);
        if ((rc = next(ps)) || (rc = parse_probability(ps, &v2)))
            return rc;
        tighten(b, v1, v2);
        return 0;
    }
    if (ps->tok.kind != T_OP)
        return token_error(ps, "expected =, <, <=, >, >= or 'between' after the finding");
    char op[3];
    snprintf(op, sizeof op, "%s", ps->tok.text);
    if ((rc = next(ps)) || (rc = parse_probability(ps, &v1)))
        return rc;
    /* Strict comparisons become inclusive bounds one float away. */
    if (op[0] == '=')
        tighten(b, v1, v1);
    else if (op[0] == '>')
        tighten(b, op[1] == '=' ? v1 : nextafterf(v1, 2.0f), 1.0f);
    else
        tighten(b, 0.0f, op[1] == '=' ? v1 : nextafterf(v1, -1.0f));
    return 0;
}

static int parse_clause(parser *ps)
{
    cmr_filter *f = &ps->out->filter;
    if (ps->tok.kind != T_WORD)
        return token_error(ps, "expected a field: diagnosis, date, age, site, manufacturer, sex, "
                               "finding, has or lacks");
    char field[16];
    snprintf(field, sizeof field, "%s", ps->tok.text);
    for (char *c = field; *c; c++)
        *c = (char)tolower((unsigned char)*c);
    if (!strcmp(field, "or") || !strcmp(field, "not"))
        return token_error(ps, "only 'and' is supported ('diagnosis in (A, B)' matches either code)");
    int known = !strcmp(field, "diagnosis") || !strcmp(field, "dx") || !strcmp(field, "date") ||
                !strcmp(field, "age") || !strcmp(field, "site") || !strcmp(field, "manufacturer") ||
                !strcmp(field, "vendor") || !strcmp(field, "sex") || !strcmp(field, "finding") ||
                !strcmp(field, "has") || !strcmp(field, "lacks");
    if (!known || strlen(ps->tok.text) >= sizeof field)
        return token_error(ps, "unknown field; fields are diagnosis, date, age, site, "
                               "manufacturer, sex, finding, has and lacks");
    int rc = next(ps);
    if (rc)
        return rc;
    if (!strcmp(field, "finding") || !strcmp(field, "has") || !strcmp(field, "lacks"))
        return parse_finding_clause(ps, field);
    if (!strcmp(field, "diagnosis") || !strcmp(field, "dx"))
        return parse_diagnosis(ps);
    if (!strcmp(field, "date"))
        return parse_date_clause(ps);
    if (!strcmp(field, "age"))
        return parse_age_clause(ps);
    const char **slot = !strcmp(field, "site") ? &f->site : !strcmp(field, "sex") ? NULL : &f->manufacturer;
    if (slot && *slot)
        return token_error(ps, "%s is given twice", field);
    if (!slot && f->sex)
        return token_error(ps, "sex is given twice");
    if ((rc = expect_equals(ps, field)))
        return rc;
    if (slot)
        return expect_value(ps, !strcmp(field, "site") ? "a site name" : "a manufacturer", slot);
    const char *s = ps->tok.text;
    char sex = (char)toupper((unsigned char)s[0]);
    if ((ps->tok.kind != T_WORD && ps->tok.kind != T_STRING) || strlen(s) != 1 ||
        (sex != 'F' && sex != 'M' && sex != 'O'))
        return token_error(ps, "sex is F, M or O");
    f->sex = sex;
    return next(ps);
}

/* The store reads 0 as "no bound" on either side of the age range. */
static int finish_age(parser *ps)
{
    cmr_filter *f = &ps->out->filter;
    if (!ps->have_age_min && !ps->have_age_max)
        return 0;
    int lo = ps->have_age_min ? ps->age_min : 0, hi = ps->have_age_max ? ps->age_max : AGE_LIMIT;
    if (lo > hi)
        return cmr_fail(CMR_EINVAL, "--where: the age conditions leave no age (from %d to %d)", lo,
                        hi);
    if (hi < 1)
        return cmr_fail(CMR_EINVAL, "--where: an age range ending below 1 year cannot be "
                                    "expressed (the store reads an upper bound of 0 as none)");
    f->age_min = lo;
    f->age_max = hi;
    return 0;
}

int cmr_where_parse(const char *expr, cmr_where *out)
{
    memset(out, 0, sizeof *out);
    parser ps = {.expr = expr, .p = expr, .out = out};
    size_t len = strlen(expr);
    /* Every token's text is at most its source bytes plus a NUL. */
    if (!(out->text = malloc(2 * len + 2)))
        return cmr_fail(CMR_ENOMEM, "out of memory");
    ps.arena = out->text;
    int rc = next(&ps);
    if (rc)
        goto fail;
    if (ps.tok.kind == T_END) {
        rc = cmr_fail(CMR_EINVAL, "--where: the expression is empty");
        goto fail;
    }
    for (;;) {
        if ((rc = parse_clause(&ps)))
            goto fail;
        if (ps.tok.kind == T_END)
            break;
        if (!is_keyword(&ps.tok, "and")) {
            rc = token_error(&ps, is_keyword(&ps.tok, "or")
                                      ? "only 'and' is supported ('diagnosis in (A, B)' matches "
                                        "either code)"
                                      : "expected 'and' or the end of the expression");
            goto fail;
        }
        if ((rc = next(&ps)))
            goto fail;
    }
    cmr_filter *f = &out->filter;
    if (f->date_from && f->date_to && f->date_from > f->date_to) {
        rc = cmr_fail(CMR_EINVAL, "--where: the date conditions leave no date (from %d to %d)",
                      (int)f->date_from, (int)f->date_to);
        goto fail;
    }
    if ((rc = finish_age(&ps)))
        goto fail;
    for (size_t i = 0; i < f->n_finding_bounds; i++)
        if (f->finding_bounds[i].min > f->finding_bounds[i].max) {
            rc = cmr_fail(CMR_EINVAL, "--where: the conditions on finding %s leave no score (from %g to %g)",
                          f->finding_bounds[i].name, (double)f->finding_bounds[i].min,
                          (double)f->finding_bounds[i].max);
            goto fail;
        }
    return 0;
fail:
    cmr_where_free(out);
    return rc;
}

void cmr_where_free(cmr_where *w)
{
    if (!w)
        return;
    free(w->text);
    free(w->diagnoses);
    free(w->bounds);
    memset(w, 0, sizeof *w);
}

int cmr_where_parse_owned(const char *expr, const cmr_filter **filter, void **owner)
{
    cmr_where *w = calloc(1, sizeof *w);
    if (!w)
        return cmr_fail(CMR_ENOMEM, "out of memory");
    int rc = cmr_where_parse(expr, w);
    if (rc) {
        cmr_where_free(w);
        free(w);
        return rc;
    }
    *filter = &w->filter;
    *owner = w;
    return 0;
}

void cmr_where_owner_free(void *owner)
{
    if (!owner)
        return;
    cmr_where_free(owner);
    free(owner);
}
