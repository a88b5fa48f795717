/* Evaluation metrics for `cmrsearch eval` (docs/eval.md): pure functions
 * over embedding matrices, scores and labels, with no store or model in
 * sight, so that tests can check each against an independent computation
 * (tests/reference/eval_reference.py).
 *
 * Matrices are row-major float, one L2-normalised embedding per row; the
 * similarity of two rows is their inner product (cosine).  Labels are class
 * indices 0..n_classes-1.  Functions that allocate return 0 or CMR_ENOMEM /
 * CMR_EINVAL with a message in cmr_errmsg(). */
#ifndef CMR_EVAL_H
#define CMR_EVAL_H

#include <stddef.h>
#include <stdint.h>

/* The paper's retrieval cut-offs. */
#define EVAL_N_RECALL 4
extern const unsigned eval_recall_ks[EVAL_N_RECALL]; /* 1, 5, 10, 50 */

/* The few-shot support sizes of the paper. */
#define EVAL_N_SHOTS 6
extern const unsigned eval_shots[EVAL_N_SHOTS]; /* 1, 2, 4, 8, 16, 32 */

typedef struct eval_rank_summary {
    size_t n;
    double recall[EVAL_N_RECALL]; /* fraction of queries whose pair ranks <= k */
    double median_rank, mean_rank;
} eval_rank_summary;

/* ranks[i] = 1-based rank of targets row i among all n targets for query row
 * i.  Ties count against the query: a target scoring the same as the true
 * pair ranks ahead of it, so a collapsed (constant) embedding gets rank n,
 * not 1.  Computed in row blocks (never an n x n matrix). */
int eval_pair_ranks(const float *queries, const float *targets, size_t n, size_t dim,
                    size_t *ranks);
/* R@k, median (mean of the middle two for even n) and mean rank. */
void eval_summarise_ranks(const size_t *ranks, size_t n, eval_rank_summary *out);

/* Area under the ROC curve of scores for positive[i] != 0 against the rest,
 * by Mann-Whitney U with tied scores counting one half.  NaN when either
 * group is empty. */
double eval_auc(const float *scores, const int *positive, size_t n);

/* The ROC curve: points (fpr, tpr) from (0,0) to (1,1), one per distinct
 * score from the highest down.  *fpr and *tpr are malloc'ed (*n_points). */
int eval_roc(const float *scores, const int *positive, size_t n, double **fpr, double **tpr,
             size_t *n_points);

/* Case -> case precision@k by label: for each row, its k nearest other rows
 * (excluding itself and, when groups is not NULL, every row with the same
 * group, i.e. the same patient), and the fraction of them sharing its label.
 * Rows with fewer than k candidates use those they have; precision[i] is NaN
 * when a row has none.  Neighbours tie-break by the lower row index. */
int eval_precision_at_k(const float *x, size_t n, size_t dim, const int *labels,
                        const uint64_t *groups, size_t k, double *precision);

/* Row-wise argmax of an n x n_classes score matrix (first maximum wins). */
void eval_argmax(const float *scores, size_t n, size_t n_classes, int *pred);

/* counts[t * n_classes + p] += 1 for each (truth, prediction); counts is
 * zeroed first. */
void eval_confusion(const int *truth, const int *pred, size_t n, size_t n_classes,
                    size_t *counts);

/* One SimpleShot episode: centre every vector by the mean of the support
 * rows, L2-normalise, average each class's support rows into a prototype,
 * and give each query row the class of the nearest prototype (Euclidean;
 * the lower class index on a tie).  Classes without support rows are never
 * predicted.  pred may be NULL; returns the accuracy in *accuracy. */
int eval_simpleshot_episode(const float *x, size_t dim, const int *labels, size_t n_classes,
                            const size_t *support, size_t n_support, const size_t *query,
                            size_t n_query, int *pred, double *accuracy);

typedef struct eval_fewshot {
    unsigned k;
    size_t n_classes;     /* classes with at least k + 1 rows: the ones drawn */
    size_t episodes;      /* 0 when fewer than two classes qualify */
    double mean, std;     /* accuracy over episodes (population std) */
    double chance;        /* 1 / n_classes */
} eval_fewshot;

/* SimpleShot over episodes: each draws k support rows per qualifying class
 * (without replacement) and queries every other row of those classes.
 * Deterministic for a seed. */
int eval_simpleshot(const float *x, size_t n, size_t dim, const int *labels, size_t n_classes,
                    unsigned k, size_t episodes, uint64_t seed, eval_fewshot *out);

/* Grow array ptr to n elements, keeping it (and clearing ok) on failure, so
 * that several arrays can grow and be checked once. */
#define EVAL_GROW(ok, ptr, n)                                                                   \
    do {                                                                                         \
        void *grown_ = realloc((ptr), (n) * sizeof *(ptr));                                      \
        if (grown_)                                                                              \
            (ptr) = grown_;                                                                      \
        else                                                                                     \
            (ok) = 0;                                                                            \
    } while (0)

/* splitmix64: the seeded generator of the episodes, also for tests. */
uint64_t eval_rng_next(uint64_t *state);

/* ---- labels and prompts (eval_labels.c) ------------------------------------------- */
#include <jansson.h>

#define EVAL_MAX_PROMPTS 8

/* Built-in prompts of a phantom diagnosis key, NULL-terminated; NULL when
 * the bank has none for label.  The bank is the searcher's
 * (searcher/findings.c): one set of prompts for eval and search. */
const char *const *eval_bank_prompts(const char *label);

/* Findings derived from truth.json params, with the paper's prompts (the
 * positive prompts of the searcher's bank under the same key). */
enum { EVAL_F_LV_DYS, EVAL_F_RV_DYS, EVAL_F_LV_DIL, EVAL_F_RV_DIL, EVAL_F_LVH, EVAL_F_LGE,
       EVAL_N_FINDINGS };
typedef struct eval_finding_def {
    const char *name, *rule;
    const char *const *prompts; /* NULL-terminated */
} eval_finding_def;
/* The table and the negation prompt come from the searcher's bank, which a
 * static initialiser cannot reach: they are filled on first use and read
 * through these names. */
const eval_finding_def *eval_finding_table(void);
const char *eval_negation_text(void); /* the lge negative: "no late gadolinium enhancement" */
#define eval_findings (eval_finding_table())
#define eval_negation_prompt (eval_negation_text())

/* Finding f of a study of diagnosis dx and sex ("F", "M" or NULL) from its
 * truth.json params: 1 present, 0 absent, -1 unknown. */
int8_t eval_finding_from_params(int f, const char *dx, const char *sex, const json_t *params);

typedef struct eval_label_entry {
    const char *uid;
    int cls;
    int8_t finding[EVAL_N_FINDINGS];
} eval_label_entry;

/* The classes (labels) of an evaluation, and the labels file if one is read. */
typedef struct eval_labels {
    size_t n_classes, cap_classes;
    char **label, **display; /* display: the store's diagnosis label, else the label */
    size_t *count;           /* labelled cases gathered per class (kept by the caller) */
    int *selected;           /* in --classes (all by default) */
    json_t *json;            /* a truth.json: owns the entries' strings */
    char *csv;               /* a CSV: owns the entries' strings */
    eval_label_entry *entries; /* sorted by uid */
    size_t n_entries;
    int have_findings;
} eval_labels;

/* The index of label, adding it (with display) if new; negative on error. */
int eval_labels_class(eval_labels *l, const char *label, const char *display);
/* Read a CSV (study_uid,label) or a truth.json (first non-blank byte '{'). */
int eval_labels_load(eval_labels *l, const char *path);
const eval_label_entry *eval_labels_find(const eval_labels *l, const char *uid);
/* Renumber classes into display order (the bank's, then by name) and
 * rewrite cls[0..n) to match. */
int eval_labels_sort(eval_labels *l, int *cls, size_t n);
void eval_labels_free(eval_labels *l);

/* ---- rendering (eval_html.c) ----------------------------------------------------
 * Both read the JSON document `cmrsearch eval --json` prints, so the three
 * outputs cannot disagree. */
#include <stdio.h>

/* The human summary: one table per part. */
void eval_print_table(FILE *out, const json_t *doc);
/* A self-contained HTML report with inline SVG plots. */
int eval_write_html(const char *path, const json_t *doc);

#endif
