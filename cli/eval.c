/* Evaluation metrics (eval.h): retrieval ranks, AUC and ROC, precision@k,
 * confusion and SimpleShot.  Similarities are computed in blocks of query
 * rows with one sgemm each, so a 10,000-case store needs megabytes, not the
 * 400 MB of a full similarity matrix. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cmr_error.h"
#include "eval.h"

const unsigned eval_recall_ks[EVAL_N_RECALL] = {1, 5, 10, 50};
const unsigned eval_shots[EVAL_N_SHOTS] = {1, 2, 4, 8, 16, 32};

/* Query rows per sgemm: 256 x 10k floats is 10 MB of scratch. */
#define BLOCK_ROWS 256

uint64_t eval_rng_next(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in [0, m): 53 random bits scaled, bias far below what 100
 * episodes can show. */
static size_t rng_below(uint64_t *state, size_t m)
{
    return (size_t)((double)(eval_rng_next(state) >> 11) / 9007199254740992.0 * (double)m);
}

/* sim[r * n_targets + j] = queries[first + r] . targets[j] for r < rows. */
static void similarity_block(const float *queries, size_t first, size_t rows, const float *targets,
                             size_t n_targets, size_t dim, float *sim)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)n_targets, (int)dim, 1.0f,
                queries + first * dim, (int)dim, targets, (int)dim, 0.0f, sim, (int)n_targets);
}

static float *alloc_block(size_t n_targets)
{
    size_t rows = BLOCK_ROWS;
    float *sim = n_targets ? malloc(rows * n_targets * sizeof *sim) : NULL;
    if (n_targets && !sim)
        cmr_fail(CMR_ENOMEM, "out of memory for a %zu x %zu similarity block", rows, n_targets);
    return sim;
}

int eval_pair_ranks(const float *queries, const float *targets, size_t n, size_t dim,
                    size_t *ranks)
{
    if (n == 0)
        return 0;
    float *sim = alloc_block(n);
    if (!sim)
        return CMR_ENOMEM;
    for (size_t first = 0; first < n; first += BLOCK_ROWS) {
        size_t rows = n - first < BLOCK_ROWS ? n - first : BLOCK_ROWS;
        similarity_block(queries, first, rows, targets, n, dim, sim);
        for (size_t r = 0; r < rows; r++) {
            const float *row = sim + r * n;
            size_t i = first + r, ahead = 0;
            for (size_t j = 0; j < n; j++)
                ahead += j != i && row[j] >= row[i];
            ranks[i] = ahead + 1;
        }
    }
    free(sim);
    return 0;
}

static int cmp_size(const void *a, const void *b)
{
    size_t x = *(const size_t *)a, y = *(const size_t *)b;
    return (x > y) - (x < y);
}

void eval_summarise_ranks(const size_t *ranks, size_t n, eval_rank_summary *out)
{
    memset(out, 0, sizeof *out);
    out->n = n;
    if (n == 0) {
        out->median_rank = out->mean_rank = NAN;
        for (int k = 0; k < EVAL_N_RECALL; k++)
            out->recall[k] = NAN;
        return;
    }
    size_t *sorted = malloc(n * sizeof *sorted);
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        sum += (double)ranks[i];
        for (int k = 0; k < EVAL_N_RECALL; k++)
            out->recall[k] += ranks[i] <= eval_recall_ks[k];
    }
    for (int k = 0; k < EVAL_N_RECALL; k++)
        out->recall[k] /= (double)n;
    out->mean_rank = sum / (double)n;
    if (!sorted) {
        /* the median is a nicety; the rest stands without it */
        out->median_rank = NAN;
        return;
    }
    memcpy(sorted, ranks, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_size);
    out->median_rank = n % 2 ? (double)sorted[n / 2]
                             : ((double)sorted[n / 2 - 1] + (double)sorted[n / 2]) / 2.0;
    free(sorted);
}

/* ---- AUC and ROC ------------------------------------------------------------- */

typedef struct scored {
    float score;
    int positive;
} scored;

static int cmp_scored_desc(const void *a, const void *b)
{
    float x = ((const scored *)a)->score, y = ((const scored *)b)->score;
    return (x < y) - (x > y);
}

/* Scores with their labels, highest first; counts of each group. */
static scored *sort_scored(const float *scores, const int *positive, size_t n, size_t *n_pos,
                           size_t *n_neg)
{
    scored *s = malloc((n ? n : 1) * sizeof *s);
    *n_pos = *n_neg = 0;
    if (!s)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        s[i].score = scores[i];
        s[i].positive = positive[i] != 0;
        *n_pos += s[i].positive;
    }
    *n_neg = n - *n_pos;
    qsort(s, n, sizeof *s, cmp_scored_desc);
    return s;
}

double eval_auc(const float *scores, const int *positive, size_t n)
{
    size_t n_pos, n_neg;
    scored *s = sort_scored(scores, positive, n, &n_pos, &n_neg);
    if (!s || n_pos == 0 || n_neg == 0) {
        free(s);
        return NAN;
    }
    /* Walking from the top, each positive beats the negatives below it; a
     * group of tied scores contributes half of its positive-negative pairs.
     * This is U / (n_pos n_neg) without forming ranks. */
    double wins = 0;
    size_t neg_above = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i, pos = 0, neg = 0;
        while (j < n && s[j].score == s[i].score) {
            pos += (size_t)s[j].positive;
            neg += (size_t)!s[j].positive;
            j++;
        }
        /* positives in this group beat every negative below the group */
        wins += (double)pos * (double)(n_neg - neg_above - neg) + 0.5 * (double)pos * (double)neg;
        neg_above += neg;
        i = j;
    }
    free(s);
    return wins / ((double)n_pos * (double)n_neg);
}

int eval_roc(const float *scores, const int *positive, size_t n, double **fpr, double **tpr,
             size_t *n_points)
{
    size_t n_pos, n_neg;
    *fpr = *tpr = NULL;
    *n_points = 0;
    scored *s = sort_scored(scores, positive, n, &n_pos, &n_neg);
    double *f = malloc((n + 1) * sizeof *f), *t = malloc((n + 1) * sizeof *t);
    if (!s || !f || !t) {
        free(s);
        free(f);
        free(t);
        return cmr_fail(CMR_ENOMEM, "out of memory for a ROC curve of %zu points", n);
    }
    size_t m = 0, tp = 0, fp = 0;
    f[m] = t[m] = 0;
    m++;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && s[j].score == s[i].score) {
            tp += (size_t)s[j].positive;
            fp += (size_t)!s[j].positive;
            j++;
        }
        f[m] = n_neg ? (double)fp / (double)n_neg : 0;
        t[m] = n_pos ? (double)tp / (double)n_pos : 0;
        m++;
        i = j;
    }
    free(s);
    *fpr = f;
    *tpr = t;
    *n_points = m;
    return 0;
}

/* ---- precision@k --------------------------------------------------------------- */

/* Keep the k best (score, index) pairs, best first.  Candidates arrive in
 * increasing index order, so "strictly better" leaves ties to the lower
 * index. */
static void top_k_insert(float *best_s, size_t *best_i, size_t *count, size_t k, float s,
                         size_t j)
{
    if (*count == k && !(s > best_s[k - 1]))
        return;
    size_t pos = *count < k ? (*count)++ : k - 1;
    while (pos > 0 && s > best_s[pos - 1]) {
        best_s[pos] = best_s[pos - 1];
        best_i[pos] = best_i[pos - 1];
        pos--;
    }
    best_s[pos] = s;
    best_i[pos] = j;
}

int eval_precision_at_k(const float *x, size_t n, size_t dim, const int *labels,
                        const uint64_t *groups, size_t k, double *precision)
{
    if (n == 0)
        return 0;
    if (k == 0)
        return cmr_fail(CMR_EINVAL, "precision@k needs k >= 1");
    float *sim = alloc_block(n), *best_s = malloc(k * sizeof *best_s);
    size_t *best_i = malloc(k * sizeof *best_i);
    int rc = 0;
    if (!sim || !best_s || !best_i) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for precision@%zu", k);
        goto done;
    }
    for (size_t first = 0; first < n; first += BLOCK_ROWS) {
        size_t rows = n - first < BLOCK_ROWS ? n - first : BLOCK_ROWS;
        similarity_block(x, first, rows, x, n, dim, sim);
        for (size_t r = 0; r < rows; r++) {
            size_t i = first + r, count = 0, same = 0;
            for (size_t j = 0; j < n; j++)
                if (j != i && !(groups && groups[j] == groups[i]))
                    top_k_insert(best_s, best_i, &count, k, sim[r * n + j], j);
            for (size_t q = 0; q < count; q++)
                same += labels[best_i[q]] == labels[i];
            precision[i] = count ? (double)same / (double)count : NAN;
        }
    }
done:
    free(sim);
    free(best_s);
    free(best_i);
    return rc;
}

/* ---- classification -------------------------------------------------------------- */

void eval_argmax(const float *scores, size_t n, size_t n_classes, int *pred)
{
    for (size_t i = 0; i < n; i++) {
        const float *row = scores + i * n_classes;
        size_t best = 0;
        for (size_t c = 1; c < n_classes; c++)
            if (row[c] > row[best])
                best = c;
        pred[i] = (int)best;
    }
}

void eval_confusion(const int *truth, const int *pred, size_t n, size_t n_classes,
                    size_t *counts)
{
    memset(counts, 0, n_classes * n_classes * sizeof *counts);
    for (size_t i = 0; i < n; i++)
        counts[(size_t)truth[i] * n_classes + (size_t)pred[i]]++;
}

static void normalise(float *v, size_t dim)
{
    double ss = 0;
    for (size_t d = 0; d < dim; d++)
        ss += (double)v[d] * v[d];
    /* a vector equal to the support mean stays zero instead of dividing by 0 */
    float inv = ss > 1e-30 ? (float)(1.0 / sqrt(ss)) : 0.0f;
    for (size_t d = 0; d < dim; d++)
        v[d] *= inv;
}

/* Nearest prototype for a block of query rows.  With w = [prototypes; mean]
 * and c = x - mean, the distance of the normalised c to prototype p is
 * 1 - 2 c.p / |c| + |p|^2, and c.p and |c|^2 follow from x.w, |x|^2 and
 * the mean's products: one sgemm per block instead of a loop per class. */
static void nearest_prototype(const float *qx, size_t rows, size_t dim, const float *w,
                              size_t n_classes, const size_t *count, const double *mean_dot,
                              const double *proto_sq, double mean_sq, float *g, int *best_out)
{
    size_t m = n_classes + 1;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)rows, (int)m, (int)dim, 1.0f, qx,
                (int)dim, w, (int)dim, 0.0f, g, (int)m);
    for (size_t r = 0; r < rows; r++) {
        const float *row = g + r * m;
        double xx = 0;
        for (size_t d = 0; d < dim; d++)
            xx += (double)qx[r * dim + d] * qx[r * dim + d];
        double cc = xx - 2.0 * row[n_classes] + mean_sq;
        /* a query at the support mean normalises to 0: distance |p|^2 */
        double inv = cc > 1e-30 ? 1.0 / sqrt(cc) : 0.0;
        int best = -1;
        double best_dist = 0;
        for (size_t c = 0; c < n_classes; c++) {
            if (!count[c])
                continue;
            double dist = (inv > 0 ? 1.0 : 0.0) - 2.0 * (row[c] - mean_dot[c]) * inv + proto_sq[c];
            if (best < 0 || dist < best_dist) {
                best = (int)c;
                best_dist = dist;
            }
        }
        best_out[r] = best;
    }
}

int eval_simpleshot_episode(const float *x, size_t dim, const int *labels, size_t n_classes,
                            const size_t *support, size_t n_support, const size_t *query,
                            size_t n_query, int *pred, double *accuracy)
{
    size_t m = n_classes + 1;
    double *mean = calloc(dim, sizeof *mean), *mean_dot = calloc(m, sizeof *mean_dot);
    double *proto_sq = calloc(m, sizeof *proto_sq);
    /* w: the prototypes, then the support mean, as rows */
    float *w = calloc(m * dim, sizeof *w), *v = malloc(dim * sizeof *v);
    float *qx = malloc(BLOCK_ROWS * dim * sizeof *qx), *g = malloc(BLOCK_ROWS * m * sizeof *g);
    size_t *count = calloc(m, sizeof *count);
    int *best = malloc(BLOCK_ROWS * sizeof *best);
    int rc = 0;
    if (!mean || !mean_dot || !proto_sq || !w || !v || !qx || !g || !count || !best) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for a few-shot episode");
        goto done;
    }
    for (size_t s = 0; s < n_support; s++)
        for (size_t d = 0; d < dim; d++)
            mean[d] += x[support[s] * dim + d];
    for (size_t d = 0; d < dim; d++)
        mean[d] /= n_support ? (double)n_support : 1.0;
    for (size_t s = 0; s < n_support; s++) {
        size_t c = (size_t)labels[support[s]];
        for (size_t d = 0; d < dim; d++)
            v[d] = (float)(x[support[s] * dim + d] - mean[d]);
        normalise(v, dim);
        for (size_t d = 0; d < dim; d++)
            w[c * dim + d] += v[d];
        count[c]++;
    }
    double mean_sq = 0;
    for (size_t d = 0; d < dim; d++) {
        w[n_classes * dim + d] = (float)mean[d];
        mean_sq += mean[d] * mean[d];
    }
    for (size_t c = 0; c < n_classes; c++)
        for (size_t d = 0; d < dim && count[c]; d++) {
            w[c * dim + d] /= (float)count[c];
            proto_sq[c] += (double)w[c * dim + d] * w[c * dim + d];
            mean_dot[c] += mean[d] * w[c * dim + d];
        }
    size_t correct = 0;
    for (size_t first = 0; first < n_query; first += BLOCK_ROWS) {
        size_t rows = n_query - first < BLOCK_ROWS ? n_query - first : BLOCK_ROWS;
        for (size_t r = 0; r < rows; r++)
            memcpy(qx + r * dim, x + query[first + r] * dim, dim * sizeof *qx);
        nearest_prototype(qx, rows, dim, w, n_classes, count, mean_dot, proto_sq, mean_sq, g,
                          best);
        for (size_t r = 0; r < rows; r++) {
            if (pred)
                pred[first + r] = best[r];
            correct += best[r] == labels[query[first + r]];
        }
    }
    *accuracy = n_query ? (double)correct / (double)n_query : NAN;
done:
    free(mean);
    free(mean_dot);
    free(proto_sq);
    free(w);
    free(v);
    free(qx);
    free(g);
    free(count);
    free(best);
    return rc;
}

int eval_simpleshot(const float *x, size_t n, size_t dim, const int *labels, size_t n_classes,
                    unsigned k, size_t episodes, uint64_t seed, eval_fewshot *out)
{
    memset(out, 0, sizeof *out);
    out->k = k;
    out->mean = out->std = out->chance = NAN;
    size_t *count = calloc(n_classes ? n_classes : 1, sizeof *count);
    size_t *members = malloc((n ? n : 1) * sizeof *members);
    size_t *start = calloc(n_classes + 1, sizeof *start);
    size_t *support = malloc((n ? n : 1) * sizeof *support);
    size_t *query = malloc((n ? n : 1) * sizeof *query);
    int rc = 0;
    if (!count || !members || !start || !support || !query) {
        rc = cmr_fail(CMR_ENOMEM, "out of memory for few-shot episodes");
        goto done;
    }
    for (size_t i = 0; i < n; i++)
        count[labels[i]]++;
    /* members grouped by class: members[start[c] .. start[c + 1]) */
    for (size_t c = 0; c < n_classes; c++)
        start[c + 1] = start[c] + count[c];
    for (size_t c = 0; c < n_classes; c++)
        count[c] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t c = (size_t)labels[i];
        members[start[c] + count[c]++] = i;
    }
    /* a class takes part when it can give k support rows and keep a query */
    for (size_t c = 0; c < n_classes; c++)
        out->n_classes += count[c] >= (size_t)k + 1;
    if (out->n_classes < 2)
        goto done;
    out->chance = 1.0 / (double)out->n_classes;
    /* One stream per k, so adding episodes at one k does not reshuffle
     * another. */
    uint64_t state = seed ^ (0x5851f42d4c957f2dull * (k + 1));
    double sum = 0, sum_sq = 0;
    for (size_t e = 0; e < episodes; e++) {
        size_t n_support = 0, n_query = 0;
        for (size_t c = 0; c < n_classes; c++) {
            if (count[c] < (size_t)k + 1)
                continue;
            size_t *m = members + start[c], len = count[c];
            /* partial Fisher-Yates: the first k become the support */
            for (size_t s = 0; s < k; s++) {
                size_t r = s + rng_below(&state, len - s), tmp = m[s];
                m[s] = m[r];
                m[r] = tmp;
                support[n_support++] = m[s];
            }
            for (size_t s = k; s < len; s++)
                query[n_query++] = m[s];
        }
        double acc = 0; /* set on success; gcc -O3 cannot see it */
        if ((rc = eval_simpleshot_episode(x, dim, labels, n_classes, support, n_support, query,
                                          n_query, NULL, &acc)))
            goto done;
        sum += acc;
        sum_sq += acc * acc;
    }
    out->episodes = episodes;
    if (episodes) {
        out->mean = sum / (double)episodes;
        double var = sum_sq / (double)episodes - out->mean * out->mean;
        out->std = var > 0 ? sqrt(var) : 0;
    }
done:
    free(count);
    free(members);
    free(start);
    free(support);
    free(query);
    return rc;
}
