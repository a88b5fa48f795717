/* Training arithmetic of the compact model: the symmetric InfoNCE loss
 * (docs/compact-model.md, "Loss") and the AdamW update. */
#include <math.h>
#include <stdlib.h>

#include "compact.h"

/* F.normalize's floor on the norm: a zero row stays zero instead of NaN,
 * and the gradient through it is d/eps, as in PyTorch. */
#define NORM_EPS 1e-12

/* Rows of x [n][d] scaled to unit length into y (double), their norms
 * (after the floor) into norm. */
static void normalize_rows(const float *x, size_t n, size_t d, double *y, double *norm)
{
    for (size_t i = 0; i < n; i++) {
        double s = 0;
        for (size_t k = 0; k < d; k++)
            s += (double)x[i * d + k] * x[i * d + k];
        norm[i] = fmax(sqrt(s), NORM_EPS);
        for (size_t k = 0; k < d; k++)
            y[i * d + k] = x[i * d + k] / norm[i];
    }
}

/* Back through y = x / max(|x|, eps): dx = (dy - y (y·dy)) / |x| while the
 * norm is above the floor (the floor is a constant: dx = dy / eps). */
static void normalize_backward(const double *y, const double *norm, const double *dy, size_t n, size_t d, float *dx)
{
    for (size_t i = 0; i < n; i++) {
        const double *yi = y + i * d, *di = dy + i * d;
        double dot = 0;
        if (norm[i] > NORM_EPS)
            for (size_t k = 0; k < d; k++)
                dot += yi[k] * di[k];
        for (size_t k = 0; k < d; k++)
            dx[i * d + k] = (float)((di[k] - yi[k] * dot) / norm[i]);
    }
}

/* Softmax along one line of a matrix (stride 1 for a row, B for a column),
 * written to p; returns log-sum-exp (shifted by the maximum: logits of
 * s = 100 would overflow exp). */
static double softmax_line(const double *l, size_t n, size_t stride, double *p)
{
    double mx = -INFINITY, sum = 0;
    for (size_t j = 0; j < n; j++)
        mx = fmax(mx, l[j * stride]);
    for (size_t j = 0; j < n; j++)
        sum += exp(l[j * stride] - mx);
    double lse = mx + log(sum);
    for (size_t j = 0; j < n; j++)
        p[j * stride] = exp(l[j * stride] - lse);
    return lse;
}

double cmr_clip_loss(const float *img, const float *txt, int batch, int dim, float logit_scale, float *d_img,
                     float *d_txt, float *d_logit_scale)
{
    return cmr_clip_loss_grouped(img, txt, batch, dim, logit_scale, NULL, d_img, d_txt, d_logit_scale);
}

/* Pairs i and j share a text. */
static int same_text(const uint32_t *group, size_t i, size_t j) { return i == j || (group && group[i] == group[j]); }

double cmr_clip_loss_grouped(const float *img, const float *txt, int batch, int dim, float logit_scale,
                             const uint32_t *group, float *d_img, float *d_txt, float *d_logit_scale)
{
    if (!img || !txt || batch < 1 || dim < 1)
        return NAN;
    size_t B = (size_t)batch, E = (size_t)dim;
    /* Everything in double: B is small (a training batch), and the
     * gradients of a softmax over near-equal logits are differences of
     * near-equal numbers. */
    double *a = malloc((4 * B * E + 4 * B * B + 3 * B) * sizeof *a);
    if (!a)
        return NAN;
    double *t = a + B * E, *da = t + B * E, *dt = da + B * E, *logits = dt + B * E;
    double *p_row = logits + B * B, *p_col = p_row + B * B, *g = p_col + B * B, *norm_a = g + B * B;
    double *norm_t = norm_a + B, *share = norm_t + B;
    /* share[i]: the target weight of each partner of pair i, 1 / |group|
     * (the group is symmetric: row i's and column i's partners are the same). */
    for (size_t i = 0; i < B; i++) {
        size_t n = 0;
        for (size_t j = 0; j < B; j++)
            n += (size_t)same_text(group, i, j);
        share[i] = 1.0 / (double)n;
    }
    normalize_rows(img, B, E, a, norm_a);
    normalize_rows(txt, B, E, t, norm_t);
    double s = exp((double)logit_scale);
    for (size_t i = 0; i < B; i++)
        for (size_t j = 0; j < B; j++) {
            double dot = 0;
            for (size_t k = 0; k < E; k++)
                dot += a[i * E + k] * t[j * E + k];
            logits[i * B + j] = s * dot;
        }
    /* Row i: image i against every text; column j: text j against every
     * image; the matching pair is on the diagonal in both, with the pairs
     * that share its text beside it. */
    double loss = 0;
    for (size_t i = 0; i < B; i++) {
        double target = 0;
        for (size_t j = 0; j < B; j++)
            if (same_text(group, i, j))
                target += share[i] * logits[i * B + j];
        loss += softmax_line(logits + i * B, B, 1, p_row + i * B) - target;
        loss += softmax_line(logits + i, B, B, p_col + i) - target;
    }
    loss /= (double)B;
    if (d_img || d_txt || d_logit_scale) {
        /* dLoss/dlogits = (P_row + P_col - 2 T) / B, T the targets (I
         * without shared texts); the logits are s·S, so
         * dLoss/ds·s = Σ g·logits (the scale is learnt in log space) and
         * dLoss/dS = s g. */
        double d_ls = 0;
        for (size_t i = 0; i < B; i++)
            for (size_t j = 0; j < B; j++) {
                double gij = (p_row[i * B + j] + p_col[i * B + j] - (same_text(group, i, j) ? 2 * share[i] : 0.0)) /
                             (double)B;
                d_ls += gij * logits[i * B + j];
                g[i * B + j] = s * gij;
            }
        if (d_logit_scale)
            *d_logit_scale = (float)d_ls;
        for (size_t i = 0; i < B; i++)
            for (size_t k = 0; k < E; k++) {
                double x = 0, y = 0;
                for (size_t j = 0; j < B; j++) {
                    x += g[i * B + j] * t[j * E + k]; /* dS_ij · t_j */
                    y += g[j * B + i] * a[j * E + k]; /* dS_ji · a_j */
                }
                da[i * E + k] = x;
                dt[i * E + k] = y;
            }
        if (d_img)
            normalize_backward(a, norm_a, da, B, E, d_img);
        if (d_txt)
            normalize_backward(t, norm_t, dt, B, E, d_txt);
    }
    free(a);
    return loss;
}

/* torch.optim.AdamW (PyTorch 1.13, _single_tensor_adamw), operation for
 * operation in float32 with the scalars formed in double as Python does:
 *   p *= 1 - lr·wd;  m = β1 m + (1-β1) g;  v = β2 v + (1-β2) g g;
 *   p += (-lr / (1-β1^t)) m / (sqrt(v) / sqrt(1-β2^t) + eps),
 * each product and quotient rounded where torch's kernels round it, so the
 * trajectories agree to the last bits rather than drift apart. */
void cmr_adamw_step(const cmr_adamw *opt, long step, float *params, const float *grads, float *m, float *v,
                    const uint8_t *decay_mask, size_t n)
{
    if (!opt || step < 1) /* the bias corrections divide by 1 - β^step */
        return;
    double b1 = opt->beta1, b2 = opt->beta2, lr = opt->lr;
    float decay = (float)(1.0 - lr * (double)opt->weight_decay);
    float c1 = (float)(1.0 - b1), c2 = (float)(1.0 - b2);
    float neg_step = (float)(-lr / (1.0 - pow(b1, (double)step)));
    float bc2_sqrt = (float)sqrt(1.0 - pow(b2, (double)step));
    float beta1 = opt->beta1, beta2 = opt->beta2, eps = opt->eps;
#pragma omp parallel for if (n >= 16384) schedule(static)
    for (size_t i = 0; i < n; i++) {
        float p = params[i], g = grads[i];
        if (!decay_mask || decay_mask[i])
            p *= decay;
        /* torch's add_(g, alpha) is a fused multiply-add; in double the
         * product is exact and the sum rounds like fmaf, without fmaf's
         * library call where the build has no FMA instructions. */
        float mi = (float)((double)c1 * g + (double)(beta1 * m[i]));
        float gg = c2 * g;
        float vi = beta2 * v[i] + gg * g;
        m[i] = mi;
        v[i] = vi;
        float denom = sqrtf(vi) / bc2_sqrt + eps;
        float upd = neg_step * mi;
        params[i] = p + upd / denom;
    }
}
