/* Rendering the `cmrsearch eval` document (cmd_eval.c builds it): the
 * human table and a self-contained HTML report whose plots are inline SVG
 * drawn here, so the report opens anywhere, offline, with nothing to load. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "cmr_error.h"
#include "eval.h"

/* ---- reading the document ----------------------------------------------------------- */

static double jd(const json_t *obj, const char *key)
{
    const json_t *v = json_object_get(obj, key);
    return json_is_number(v) ? json_number_value(v) : NAN;
}

static long long ji(const json_t *obj, const char *key)
{
    return (long long)json_integer_value(json_object_get(obj, key));
}

static const char *js(const json_t *obj, const char *key)
{
    const char *s = json_string_value(json_object_get(obj, key));
    return s ? s : "";
}

/* A fraction or "-" when the document says null. */
static const char *fmt(char *buf, size_t cap, double v, int digits)
{
    if (isnan(v))
        snprintf(buf, cap, "-");
    else
        snprintf(buf, cap, "%.*f", digits, v);
    return buf;
}

/* ---- the table ------------------------------------------------------------------------ */

static void table_ranks(FILE *out, const char *name, const json_t *s)
{
    char b[6][32];
    fprintf(out, "  %-14s %6s %6s %6s %6s %8s %8s\n", name, fmt(b[0], 32, jd(s, "r1"), 3),
            fmt(b[1], 32, jd(s, "r5"), 3), fmt(b[2], 32, jd(s, "r10"), 3),
            fmt(b[3], 32, jd(s, "r50"), 3), fmt(b[4], 32, jd(s, "median_rank"), 1),
            fmt(b[5], 32, jd(s, "mean_rank"), 1));
}

static void table_confusion(FILE *out, const json_t *conf)
{
    const json_t *labels = json_object_get(conf, "labels"), *rows = json_object_get(conf, "counts");
    size_t n = json_array_size(labels);
    fprintf(out, "\n  confusion (rows: true label, columns: predicted)\n  %-12s", "");
    for (size_t j = 0; j < n; j++)
        fprintf(out, " %8.8s", json_string_value(json_array_get(labels, j)));
    fputc('\n', out);
    for (size_t i = 0; i < n; i++) {
        fprintf(out, "  %-12.12s", json_string_value(json_array_get(labels, i)));
        for (size_t j = 0; j < n; j++)
            fprintf(out, " %8lld",
                    (long long)json_integer_value(json_array_get(json_array_get(rows, i), j)));
        fputc('\n', out);
    }
}

static void table_zero_shot(FILE *out, const json_t *zs)
{
    char a[32], b[32], c[32];
    const json_t *classes = json_object_get(zs, "classes");
    fprintf(out, "\nzero-shot diagnosis: %lld cases, %zu classes, accuracy %s\n", ji(zs, "n"),
            json_array_size(classes), fmt(a, 32, jd(zs, "accuracy"), 3));
    fprintf(out, "  %-12s %6s %7s %6s  %s\n", "label", "n", "recall", "AUC", "prompts");
    size_t i;
    const json_t *cj;
    json_array_foreach(classes, i, cj) {
        const json_t *prompts = json_object_get(cj, "prompts");
        fprintf(out, "  %-12.12s %6lld %7s %6s  \"%s\"%s\n", js(cj, "label"), ji(cj, "n"),
                fmt(b, 32, jd(cj, "recall"), 3), fmt(c, 32, jd(cj, "auc"), 3),
                json_string_value(json_array_get(prompts, 0)),
                json_array_size(prompts) > 1 ? " ..." : "");
    }
    table_confusion(out, json_object_get(zs, "confusion"));
}

static void table_finding(FILE *out, const json_t *f)
{
    char a[32];
    fprintf(out, "  %-24s %5lld/%-5lld %6s  %s\n", js(f, "name"), ji(f, "n_pos"), ji(f, "n_neg"),
            fmt(a, 32, jd(f, "auc"), 3), js(f, "rule"));
}

static void table_within_class(FILE *out, const json_t *w)
{
    char a[32];
    if (!w || !json_array_size(json_object_get(w, "classes")))
        return;
    fprintf(out, "  within a diagnosis (%lld studies): AUC %s weighted;", ji(w, "n"),
            fmt(a, 32, jd(w, "auc_weighted"), 3));
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(w, "classes"), i, v)
        fprintf(out, " %s %s (%lld/%lld)", js(v, "label"), fmt(a, 32, jd(v, "auc"), 3), ji(v, "n_pos"),
                ji(v, "n_neg"));
    fputc('\n', out);
}

void eval_print_table(FILE *out, const json_t *doc)
{
    char a[32], b[32];
    const json_t *model = json_object_get(doc, "model"), *cases = json_object_get(doc, "cases");
    const json_t *labels = json_object_get(doc, "labels");
    fprintf(out, "store %s, model %s (weights %.12s...)\n", js(doc, "store"), js(model, "name"),
            js(model, "weights_hash"));
    fprintf(out, "labels from %s%s%s\n", js(labels, "source"),
            json_is_string(json_object_get(labels, "path")) ? ": " : "", js(labels, "path"));
    fprintf(out, "cases: %lld in the store, %lld labelled (%lld with an image vector, %lld with "
                 "an impression vector, %lld with both)\n",
            ji(cases, "in_store"), ji(cases, "labelled"), ji(cases, "with_image"),
            ji(cases, "with_text"), ji(cases, "with_both"));
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(doc, "notes"), i, v)
        fprintf(out, "note: %s\n", json_string_value(v));

    const json_t *r = json_object_get(doc, "retrieval");
    fprintf(out, "\nretrieval: %lld image/impression pairs\n", ji(r, "n"));
    fprintf(out, "  %-14s %6s %6s %6s %6s %8s %8s\n", "direction", "R@1", "R@5", "R@10", "R@50",
            "median", "mean");
    table_ranks(out, "image->text", json_object_get(r, "image_to_text"));
    table_ranks(out, "text->image", json_object_get(r, "text_to_image"));

    const json_t *p = json_object_get(doc, "precision_at_k");
    fprintf(out, "\ncase->case precision@%lld by label (image space%s): micro %s, macro %s\n",
            ji(p, "k"),
            json_is_true(json_object_get(p, "exclude_same_patient")) ? ", same patient excluded"
                                                                      : "",
            fmt(a, 32, jd(p, "micro"), 3), fmt(b, 32, jd(p, "macro"), 3));
    const char *key;
    json_object_foreach((json_t *)json_object_get(p, "per_label"), key, v)
        if (ji(v, "n"))
            fprintf(out, "  %-12.12s %6lld %6s\n", key, ji(v, "n"),
                    fmt(a, 32, jd(v, "precision"), 3));

    const json_t *zs = json_object_get(doc, "zero_shot");
    if (zs)
        table_zero_shot(out, zs);
    const json_t *findings = json_object_get(doc, "findings");
    if (findings) {
        fprintf(out, "\nzero-shot findings (published prompts)\n  %-24s %11s %6s  %s\n",
                "finding", "pos/neg", "AUC", "label rule");
        json_array_foreach(findings, i, v)
            table_finding(out, v);
        if (json_object_get(doc, "negation")) {
            fprintf(out, "  negation, prompt \"%s\":\n",
                    json_string_value(json_array_get(
                        json_object_get(json_object_get(doc, "negation"), "prompts"), 0)));
            table_finding(out, json_object_get(doc, "negation"));
            table_within_class(out, json_object_get(json_object_get(doc, "negation"), "within_class"));
        }
    }

    const json_t *fs = json_object_get(doc, "few_shot");
    fprintf(out, "\nfew-shot (%s, %lld episodes, seed %lld) over %lld cases\n", js(fs, "method"),
            ji(fs, "episodes"), ji(fs, "seed"), ji(fs, "n"));
    fprintf(out, "  %5s %8s %16s %7s\n", "k", "classes", "accuracy", "chance");
    json_array_foreach(json_object_get(fs, "shots"), i, v) {
        char acc[48], c[32];
        if (ji(v, "episodes"))
            snprintf(acc, sizeof acc, "%.3f +- %.3f", jd(v, "accuracy"), jd(v, "std"));
        else
            snprintf(acc, sizeof acc, "(too few cases)");
        fprintf(out, "  %5lld %8lld %16s %7s\n", ji(v, "k"), ji(v, "n_classes"), acc,
                fmt(c, 32, jd(v, "chance"), 3));
    }
}

/* ---- HTML ----------------------------------------------------------------------------- */

/* tab10: distinguishable, and safe for the common colour-vision deficiencies
 * when paired with the legend's labels */
static const char *const palette[] = {"#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
                                      "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"};
#define N_PALETTE (sizeof palette / sizeof palette[0])

static void esc(FILE *f, const char *s)
{
    for (; s && *s; s++)
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
}

typedef struct plot {
    FILE *f;
    double x0, x1, y0, y1;     /* data range */
    int w, h, left, right, top, bottom;
} plot;

static double px(const plot *p, double x)
{
    return p->left + (x - p->x0) / (p->x1 - p->x0) * (p->w - p->left - p->right);
}

static double py(const plot *p, double y)
{
    return p->h - p->bottom - (y - p->y0) / (p->y1 - p->y0) * (p->h - p->top - p->bottom);
}

/* The frame: grid lines at the y ticks (0, 0.2, ... 1 for every plot here),
 * x ticks given by the caller, axis titles. */
static void plot_open(plot *p, const char *xlabel, const char *ylabel, const double *xt,
                      const char *const *xl, size_t n_xt)
{
    FILE *f = p->f;
    fprintf(f, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">\n", p->w, p->h,
            p->w, p->h);
    for (int i = 0; i <= 5; i++) {
        double y = p->y0 + (p->y1 - p->y0) * i / 5.0;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"grid\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"end\">%.1f</text>\n",
                px(p, p->x0), py(p, y), px(p, p->x1), py(p, y), px(p, p->x0) - 6, py(p, y) + 4, y);
    }
    for (size_t i = 0; i < n_xt; i++)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"axis\"/>"
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%s</text>\n",
                px(p, xt[i]), py(p, p->y0), px(p, xt[i]), py(p, p->y0) + 5, px(p, xt[i]),
                py(p, p->y0) + 19, xl[i]);
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" class=\"frame\"/>\n",
            px(p, p->x0), py(p, p->y1), px(p, p->x1) - px(p, p->x0), py(p, p->y0) - py(p, p->y1));
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" class=\"label\" text-anchor=\"middle\">%s</text>\n",
            (px(p, p->x0) + px(p, p->x1)) / 2, p->h - 6, xlabel);
    fprintf(f, "<text transform=\"translate(16 %.1f) rotate(-90)\" class=\"label\" "
               "text-anchor=\"middle\">%s</text>\n",
            (py(p, p->y0) + py(p, p->y1)) / 2, ylabel);
}

static void legend_entry(const plot *p, size_t row, const char *colour, const char *dash,
                         const char *text)
{
    double x = p->w - p->right + 12, y = p->top + 8 + 18.0 * (double)row;
    fprintf(p->f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                  "stroke-width=\"3\" stroke-dasharray=\"%s\"/><text x=\"%.1f\" y=\"%.1f\" "
                  "class=\"legend\">",
            x, y, x + 20, y, colour, dash, x + 26, y + 4);
    esc(p->f, text);
    fputs("</text>\n", p->f);
}

/* ROC curves of a list of objects carrying "roc" and "auc", named by key. */
static void roc_plot(FILE *f, const json_t *items, const char *name_key)
{
    plot p = {f, 0, 1, 0, 1, 600, 420, 52, 230, 14, 44};
    static const double xt[] = {0, 0.2, 0.4, 0.6, 0.8, 1};
    static const char *const xl[] = {"0", "0.2", "0.4", "0.6", "0.8", "1"};
    plot_open(&p, "false positive rate", "true positive rate", xt, xl, 6);
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" class=\"chance\"/>\n",
            px(&p, 0), py(&p, 0), px(&p, 1), py(&p, 1));
    size_t i, row = 0;
    const json_t *it;
    json_array_foreach(items, i, it) {
        const json_t *roc = json_object_get(it, "roc");
        const json_t *fpr = json_object_get(roc, "fpr"), *tpr = json_object_get(roc, "tpr");
        const char *colour = palette[i % N_PALETTE];
        char text[160];
        snprintf(text, sizeof text, "%s  %.3f", js(it, name_key), jd(it, "auc"));
        if (!roc) {
            snprintf(text, sizeof text, "%s  (one class only)", js(it, name_key));
            legend_entry(&p, row++, "#ccc", "2 3", text);
            continue;
        }
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour);
        for (size_t k = 0; k < json_array_size(fpr); k++)
            fprintf(f, "%.1f,%.1f ", px(&p, json_real_value(json_array_get(fpr, k))),
                    py(&p, json_real_value(json_array_get(tpr, k))));
        fputs("\"/>\n", f);
        legend_entry(&p, row++, colour, "none", text);
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"legend\" font-weight=\"bold\">AUC</text>\n",
            p.w - p.right + 12 + 26, p.top - 2 + 0);
    fputs("</svg>\n", f);
}

/* Few-shot accuracy against k on a log2 axis, +-1 std bars, chance dashed,
 * zero-shot accuracy (when there is one) as a dotted reference. */
static void fewshot_plot(FILE *f, const json_t *fs, double zero_shot)
{
    plot p = {f, -0.3, 5.3, 0, 1, 600, 360, 52, 170, 14, 44};
    static const double xt[] = {0, 1, 2, 3, 4, 5};
    static const char *const xl[] = {"1", "2", "4", "8", "16", "32"};
    plot_open(&p, "support cases per class (k)", "accuracy", xt, xl, 6);
    const json_t *shots = json_object_get(fs, "shots"), *v;
    size_t i;
    fputs("<polyline fill=\"none\" class=\"chance\" points=\"", f);
    json_array_foreach(shots, i, v)
        if (!isnan(jd(v, "chance")))
            fprintf(f, "%.1f,%.1f ", px(&p, (double)i), py(&p, jd(v, "chance")));
    fprintf(f, "\"/>\n<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2.5\" points=\"",
            palette[0]);
    json_array_foreach(shots, i, v)
        if (!isnan(jd(v, "accuracy")))
            fprintf(f, "%.1f,%.1f ", px(&p, (double)i), py(&p, jd(v, "accuracy")));
    fputs("\"/>\n", f);
    json_array_foreach(shots, i, v) {
        double a = jd(v, "accuracy"), s = jd(v, "std");
        if (isnan(a))
            continue;
        double lo = a - s < 0 ? 0 : a - s, hi = a + s > 1 ? 1 : a + s, x = px(&p, (double)i);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"1.5\"/><circle cx=\"%.1f\" cy=\"%.1f\" r=\"4.5\" fill=\"%s\">"
                   "<title>k=%lld: %.3f +- %.3f (%lld classes)</title></circle>"
                   "<text x=\"%.1f\" y=\"%.1f\" class=\"tick\" text-anchor=\"middle\">%.2f</text>\n",
                x, py(&p, lo), x, py(&p, hi), palette[0], x, py(&p, a), palette[0], ji(v, "k"), a,
                s, ji(v, "n_classes"), x, py(&p, hi) - 6, a);
    }
    size_t row = 0;
    legend_entry(&p, row++, palette[0], "none", "SimpleShot");
    legend_entry(&p, row++, "#888", "6 4", "chance");
    if (!isnan(zero_shot)) {
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" "
                   "stroke-width=\"2\" stroke-dasharray=\"2 4\"/>\n",
                px(&p, p.x0), py(&p, zero_shot), px(&p, p.x1), py(&p, zero_shot), palette[1]);
        legend_entry(&p, row++, palette[1], "2 4", "zero-shot");
    }
    fputs("</svg>\n", f);
}

/* Confusion heat map: colour by the row's fraction (recall per true class),
 * the count written in each cell. */
static void confusion_plot(FILE *f, const json_t *conf)
{
    const json_t *labels = json_object_get(conf, "labels"), *rows = json_object_get(conf, "counts");
    size_t n = json_array_size(labels);
    int cell = n > 8 ? 40 : 56, left = 120, top = 110, w = left + (int)n * cell + 20;
    int h = top + (int)n * cell + 40;
    fprintf(f, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">\n", w, h, w, h);
    for (size_t i = 0; i < n; i++) {
        const json_t *row = json_array_get(rows, i);
        double total = 0;
        for (size_t j = 0; j < n; j++)
            total += (double)json_integer_value(json_array_get(row, j));
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"end\">", left - 8,
                top + (int)i * cell + cell / 2 + 4);
        esc(f, json_string_value(json_array_get(labels, i)));
        fprintf(f, "</text><text transform=\"translate(%d %d) rotate(-45)\" class=\"tick\">",
                left + (int)i * cell + cell / 2, top - 8);
        esc(f, json_string_value(json_array_get(labels, i)));
        fputs("</text>\n", f);
        for (size_t j = 0; j < n; j++) {
            long long c = (long long)json_integer_value(json_array_get(row, j));
            double frac = total > 0 ? (double)c / total : 0;
            /* white to deep blue; text turns white where the cell is dark */
            int r = (int)(255 - frac * (255 - 8)), g = (int)(255 - frac * (255 - 69)),
                b = (int)(255 - frac * (255 - 148));
            fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,%d)\" "
                       "stroke=\"%s\" stroke-width=\"%d\"><title>%lld of %.0f (%.0f%%)</title>"
                       "</rect><text x=\"%d\" y=\"%d\" text-anchor=\"middle\" class=\"cell\" "
                       "fill=\"%s\">%lld</text>\n",
                    left + (int)j * cell, top + (int)i * cell, cell, cell, r, g, b,
                    i == j ? "#222" : "#fff", i == j ? 2 : 1, c, total, 100 * frac,
                    left + (int)j * cell + cell / 2, top + (int)i * cell + cell / 2 + 5,
                    frac > 0.5 ? "#fff" : "#222", c);
        }
    }
    fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"label\" text-anchor=\"middle\">predicted</text>"
               "<text transform=\"translate(14 %d) rotate(-90)\" class=\"label\" "
               "text-anchor=\"middle\">true label</text>\n</svg>\n",
            left + (int)n * cell / 2, h - 10, top + (int)n * cell / 2);
}

/* Horizontal bars in [0, 1] with the value written after each track and
 * a dark tick at each bar's chance level. */
static void bars(FILE *f, const char *const *names, const double *values, const double *chance,
                 size_t n, const char *colour)
{
    int row = 24, left = 130, width = 360, h = (int)n * row + 10;
    fprintf(f, "<svg viewBox=\"0 0 %d %d\" width=\"%d\" height=\"%d\" role=\"img\">\n",
            left + width + 60, h, left + width + 60, h);
    for (size_t i = 0; i < n; i++) {
        double v = isnan(values[i]) ? 0 : values[i];
        int y = 5 + (int)i * row;
        fprintf(f, "<text x=\"%d\" y=\"%d\" class=\"tick\" text-anchor=\"end\">", left - 8,
                y + row / 2 + 4);
        esc(f, names[i]);
        fprintf(f, "</text><rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" class=\"track\"/>"
                   "<rect x=\"%d\" y=\"%d\" width=\"%.1f\" height=\"%d\" fill=\"%s\"/>"
                   "<text x=\"%.1f\" y=\"%d\" class=\"tick\">%.3f</text>\n",
                left, y + 3, width, row - 6, left, y + 3, v * width, row - 6, colour,
                (double)(left + width + 8), y + row / 2 + 4, v);
        if (!isnan(chance[i]))
            fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" "
                       "stroke-width=\"2\"><title>chance %.3f</title></line>\n",
                    left + chance[i] * width, y + 1, left + chance[i] * width, y + row - 1,
                    chance[i]);
    }
    fputs("</svg>\n", f);
}

static const char css[] =
    "body{font:15px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f6f9;"
    "color:#1d2430}header{background:#0b3d62;color:#fff;padding:18px 32px}header h1{margin:0;"
    "font-size:22px}header p{margin:4px 0 0;opacity:.85}main{padding:16px 32px;max-width:1400px}"
    ".tiles{display:flex;flex-wrap:wrap;gap:12px;margin:8px 0 18px}.tile{background:#fff;"
    "border-radius:8px;padding:12px 18px;min-width:150px;box-shadow:0 1px 3px #0002}"
    ".tile b{display:block;font-size:28px;color:#0b3d62}.tile span{font-size:13px;color:#556}"
    "section{background:#fff;border-radius:8px;padding:14px 20px;margin:0 0 18px;"
    "box-shadow:0 1px 3px #0002}h2{font-size:18px;margin:0 0 10px;color:#0b3d62}"
    ".row{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}table{border-collapse:"
    "collapse;font-size:14px}td,th{padding:4px 10px;text-align:right;border-bottom:1px solid #e3e6ea}"
    "th{background:#f0f3f7}td:first-child,th:first-child,.l{text-align:left}.note{color:#8a4b00}"
    "svg text{font-family:inherit}.tick{font-size:12px;fill:#333}.label{font-size:13px;fill:#222}"
    ".legend{font-size:13px;fill:#222}.cell{font-size:14px}.grid{stroke:#e5e8ec}.axis{stroke:#888}"
    ".frame{fill:none;stroke:#888}.chance{stroke:#888;stroke-dasharray:6 4;fill:none}"
    ".track{fill:#eef1f5}small{color:#667}";

static void tile(FILE *f, double v, const char *what)
{
    char b[32];
    fprintf(f, "<div class=\"tile\"><b>%s</b><span>%s</span></div>\n", fmt(b, 32, v, 3), what);
}

static void html_retrieval(FILE *f, const json_t *r)
{
    static const char *const keys[] = {"r1", "r5", "r10", "r50", "median_rank", "mean_rank"};
    static const char *const dirs[] = {"image_to_text", "text_to_image"};
    static const char *const names[] = {"image &rarr; impression", "impression &rarr; image"};
    fprintf(f, "<section id=\"retrieval\"><h2>Retrieval</h2><p>%lld studies with both an image and an impression "
               "vector; each study's own impression is its pair.</p><table><tr><th>direction</th>"
               "<th>R@1</th><th>R@5</th><th>R@10</th><th>R@50</th><th>median rank</th>"
               "<th>mean rank</th></tr>\n", ji(r, "n"));
    for (int d = 0; d < 2; d++) {
        const json_t *s = json_object_get(r, dirs[d]);
        char b[32];
        fprintf(f, "<tr><td>%s</td>", names[d]);
        for (int k = 0; k < 6; k++)
            fprintf(f, "<td>%s</td>", fmt(b, 32, jd(s, keys[k]), k < 4 ? 3 : 1));
        fputs("</tr>\n", f);
    }
    fputs("</table></section>\n", f);
}

static void html_precision(FILE *f, const json_t *p)
{
    const json_t *per = json_object_get(p, "per_label"), *v;
    size_t n = 0, cap = json_object_size(per);
    const char **names = calloc(cap ? cap : 1, sizeof *names);
    double *values = calloc(cap ? cap : 1, sizeof *values);
    double *chance = calloc(cap ? cap : 1, sizeof *chance);
    const char *key;
    fprintf(f, "<section id=\"precision\"><h2>Case &rarr; case precision@%lld</h2><p>For each study, the share of "
               "its %lld nearest other studies (image space%s) with the same label. Micro %.3f, "
               "macro %.3f.</p>\n",
            ji(p, "k"), ji(p, "k"),
            json_is_true(json_object_get(p, "exclude_same_patient")) ? ", same patient excluded"
                                                                      : "",
            jd(p, "micro"), jd(p, "macro"));
    json_object_foreach((json_t *)per, key, v)
        if (names && values && chance && ji(v, "n")) {
            names[n] = key;
            chance[n] = jd(v, "chance");
            values[n++] = jd(v, "precision");
        }
    bars(f, names, values, chance, n, palette[0]);
    fputs("<p><small>Black ticks: chance, the share of other studies with the label.</small></p>"
          "</section>\n", f);
    free(names);
    free(values);
    free(chance);
}

static void html_zero_shot(FILE *f, const json_t *zs)
{
    const json_t *classes = json_object_get(zs, "classes"), *c;
    size_t i;
    char a[32], b[32];
    fprintf(f, "<section id=\"zero-shot\"><h2>Zero-shot diagnosis</h2><p>Each study gets the label whose prompts "
               "its image vector is closest to (mean cosine). %lld studies, accuracy <b>%s</b>."
               "</p><div class=\"row\"><div>\n", ji(zs, "n"), fmt(a, 32, jd(zs, "accuracy"), 3));
    confusion_plot(f, json_object_get(zs, "confusion"));
    fputs("</div><div>\n", f);
    roc_plot(f, classes, "label");
    fputs("</div></div><table><tr><th>label</th><th>studies</th><th>recall</th><th>AUC (one vs "
          "rest)</th><th class=\"l\">prompts</th></tr>\n", f);
    json_array_foreach(classes, i, c) {
        fputs("<tr><td>", f);
        esc(f, js(c, "label"));
        fprintf(f, "</td><td>%lld</td><td>%s</td><td>%s</td><td class=\"l\">", ji(c, "n"),
                fmt(a, 32, jd(c, "recall"), 3), fmt(b, 32, jd(c, "auc"), 3));
        size_t k;
        const json_t *pr;
        json_array_foreach(json_object_get(c, "prompts"), k, pr) {
            fputs(k ? "; &ldquo;" : "&ldquo;", f);
            esc(f, json_string_value(pr));
            fputs("&rdquo;", f);
        }
        fputs("</td></tr>\n", f);
    }
    fputs("</table></section>\n", f);
}

static void html_findings(FILE *f, const json_t *doc)
{
    const json_t *findings = json_object_get(doc, "findings"), *neg = json_object_get(doc, "negation");
    json_t *all = json_copy((json_t *)findings);
    if (!all)
        return;
    if (neg)
        json_array_append(all, (json_t *)neg);
    fputs("<section id=\"findings\"><h2>Zero-shot findings</h2><p>The paper's published prompts; labels from "
          "truth.json by the rules below. The last curve is the negation check: &ldquo;no late "
          "gadolinium enhancement&rdquo; should rank LGE-negative studies first.</p>"
          "<div class=\"row\"><div>\n", f);
    roc_plot(f, all, "name");
    fputs("</div><table><tr><th>finding</th><th>positive</th><th>negative</th><th>AUC</th>"
          "<th class=\"l\">label rule</th></tr>\n", f);
    size_t i;
    const json_t *v;
    json_array_foreach(all, i, v) {
        char a[32];
        fputs("<tr><td>", f);
        esc(f, js(v, "name"));
        fprintf(f, "</td><td>%lld</td><td>%lld</td><td>%s</td><td class=\"l\">",
                ji(v, "n_pos"), ji(v, "n_neg"), fmt(a, 32, jd(v, "auc"), 3));
        esc(f, js(v, "rule"));
        fputs("</td></tr>\n", f);
    }
    const json_t *w = neg ? json_object_get(neg, "within_class") : NULL;
    if (w && json_array_size(json_object_get(w, "classes"))) {
        char a[32];
        const json_t *c;
        json_array_foreach(json_object_get(w, "classes"), i, c) {
            fputs("<tr><td>&nbsp;&nbsp;within ", f);
            esc(f, js(c, "label"));
            fprintf(f, "</td><td>%lld</td><td>%lld</td><td>%s</td><td class=\"l\">the negation prompt among "
                       "one diagnosis' studies</td></tr>\n",
                    ji(c, "n_pos"), ji(c, "n_neg"), fmt(a, 32, jd(c, "auc"), 3));
        }
        fprintf(f, "<tr><td>&nbsp;&nbsp;within, weighted</td><td colspan=\"2\">%lld studies</td><td>%s</td>"
                   "<td class=\"l\">0.5: LGE told apart only through the diagnosis</td></tr>\n",
                ji(w, "n"), fmt(a, 32, jd(w, "auc_weighted"), 3));
    }
    fputs("</table></div></section>\n", f);
    json_decref(all);
}

static void html_fewshot(FILE *f, const json_t *fs, double zero_shot)
{
    fprintf(f, "<section id=\"few-shot\"><h2>Few-shot: %s</h2><p>%lld episodes per k (seed %lld): k labelled "
               "studies per class as support, every other study of those classes as a query. "
               "Bars: &plusmn;1 standard deviation over episodes.</p><div class=\"row\"><div>\n",
            js(fs, "method"), ji(fs, "episodes"), ji(fs, "seed"));
    fewshot_plot(f, fs, zero_shot);
    fputs("</div><table><tr><th>k</th><th>classes</th><th>accuracy</th><th>std</th>"
          "<th>chance</th></tr>\n", f);
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(fs, "shots"), i, v) {
        char a[32], b[32], c[32];
        fprintf(f, "<tr><td>%lld</td><td>%lld</td><td>%s</td><td>%s</td><td>%s</td></tr>\n",
                ji(v, "k"), ji(v, "n_classes"), fmt(a, 32, jd(v, "accuracy"), 3),
                fmt(b, 32, jd(v, "std"), 3), fmt(c, 32, jd(v, "chance"), 3));
    }
    fputs("</table></div></section>\n", f);
}

int eval_write_html(const char *path, const json_t *doc)
{
    FILE *f = fopen(path, "w");
    if (!f)
        return cmr_fail(CMR_EIO, "%s: cannot create the HTML report: %s", path, strerror(errno));
    const json_t *model = json_object_get(doc, "model"), *cases = json_object_get(doc, "cases");
    const json_t *zs = json_object_get(doc, "zero_shot"), *r = json_object_get(doc, "retrieval");
    fprintf(f, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
               "<title>cmrsearch eval</title><style>%s</style></head><body>\n<header><h1>"
               "cmrsearch eval</h1><p>",
            css);
    esc(f, js(doc, "store"));
    fputs(" &middot; model ", f);
    esc(f, js(model, "name"));
    fprintf(f, " (%.12s&hellip;) &middot; labels from ", js(model, "weights_hash"));
    esc(f, js(json_object_get(doc, "labels"), "source"));
    fprintf(f, " &middot; %lld labelled of %lld studies</p></header>\n<main>\n",
            ji(cases, "labelled"), ji(cases, "in_store"));
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(doc, "notes"), i, v) {
        fputs("<p class=\"note\">", f);
        esc(f, json_string_value(v));
        fputs("</p>\n", f);
    }
    fputs("<div class=\"tiles\">\n", f);
    if (zs)
        tile(f, jd(zs, "accuracy"), "zero-shot diagnosis accuracy");
    tile(f, jd(json_object_get(doc, "precision_at_k"), "micro"), "case &rarr; case precision@k");
    tile(f, jd(json_object_get(r, "text_to_image"), "r10"), "impression &rarr; image R@10");
    tile(f, jd(json_object_get(r, "image_to_text"), "r10"), "image &rarr; impression R@10");
    if (json_object_get(doc, "negation"))
        tile(f, jd(json_object_get(doc, "negation"), "auc"), "negation AUC (no LGE)");
    fputs("</div>\n", f);
    if (zs)
        html_zero_shot(f, zs);
    html_fewshot(f, json_object_get(doc, "few_shot"), zs ? jd(zs, "accuracy") : NAN);
    if (json_object_get(doc, "findings"))
        html_findings(f, doc);
    html_retrieval(f, r);
    html_precision(f, json_object_get(doc, "precision_at_k"));
    fputs("<p><small>Definitions: docs/eval.md. Generated by cmrsearch eval.</small></p>\n"
          "</main></body></html>\n", f);
    if (ferror(f) | fclose(f))
        return cmr_fail(CMR_EIO, "%s: cannot write the HTML report", path);
    return 0;
}
