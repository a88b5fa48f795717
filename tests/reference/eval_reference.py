#!/usr/bin/python3
"""Reference values for cli/eval.c, computed independently with numpy.

Writes tests/fixtures/eval/{ranks,auc,precision,simpleshot}.json: the inputs
(rounded to float32 so C reads exactly the same numbers) and what each metric
must give.  The computations here are deliberately different from eval.c's:
full similarity matrices instead of blocks, pairwise counting for AUC instead
of a sorted sweep, a stable argsort for neighbours.

    /usr/bin/python3 tests/reference/eval_reference.py
"""
import json
import os

import numpy as np

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "eval")
RECALL_KS = [1, 5, 10, 50]


def f32(a):
    return np.asarray(a, dtype=np.float32).astype(np.float64)


def unit(a):
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def ranks_of(q, t):
    s = q @ t.T
    n = len(q)
    # ties count against the query: equal scores rank ahead of the true pair
    return [int(1 + sum(1 for j in range(n) if j != i and s[i, j] >= s[i, i])) for i in range(n)]


def summary(r):
    r = np.asarray(r)
    return {"recall": [float(np.mean(r <= k)) for k in RECALL_KS],
            "median": float(np.median(r)), "mean": float(np.mean(r))}


def min_gap(q, t):
    s = q @ t.T
    gaps = [np.min(np.abs(np.delete(s[i], i) - s[i, i])) for i in range(len(q))]
    return float(min(gaps))


def ranks_fixture(rng):
    n, dim = 60, 8
    q = f32(unit(rng.normal(size=(n, dim))))
    t = f32(unit(q + 0.9 * rng.normal(size=(n, dim))))
    assert min_gap(q, t) > 2e-6 and min_gap(t, q) > 2e-6, "reseed: near-tie in float32"
    # ties: small whole numbers, whose dot products are exact in any order
    tq = np.array([[1, 0, 1], [1, 1, 0], [0, 1, 1], [1, 0, 1], [0, 0, 2]], dtype=np.float64)
    tt = np.array([[1, 0, 1], [1, 0, 1], [0, 1, 1], [0, 2, 0], [1, 1, 0]], dtype=np.float64)
    r_qt, r_tq, r_ties = ranks_of(q, t), ranks_of(t, q), ranks_of(tq, tt)
    return {"dim": dim, "n": n, "queries": q.ravel().tolist(), "targets": t.ravel().tolist(),
            "ranks_q2t": r_qt, "ranks_t2q": r_tq, "summary_q2t": summary(r_qt),
            "summary_t2q": summary(r_tq),
            "ties": {"dim": 3, "n": 5, "queries": tq.ravel().tolist(),
                     "targets": tt.ravel().tolist(), "ranks": r_ties, "summary": summary(r_ties)}}


def auc_pairs(scores, pos):
    p = [s for s, y in zip(scores, pos) if y]
    n = [s for s, y in zip(scores, pos) if not y]
    if not p or not n:
        return None
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in p for b in n)
    return wins / (len(p) * len(n))


def roc_thresholds(scores, pos):
    scores, pos = np.asarray(scores), np.asarray(pos, dtype=bool)
    fpr, tpr = [0.0], [0.0]
    for t in sorted(set(scores.tolist()), reverse=True):
        sel = scores >= t
        fpr.append(float(np.sum(sel & ~pos) / max(1, np.sum(~pos))))
        tpr.append(float(np.sum(sel & pos) / max(1, np.sum(pos))))
    return fpr, tpr


def auc_fixture(rng):
    cases = []
    for n, decimals in [(50, 1), (37, 2), (20, 6), (8, 0)]:
        pos = (rng.random(n) < 0.4).astype(int)
        pos[0], pos[1] = 1, 0
        scores = np.round(rng.normal(size=n) + 0.8 * pos, decimals).astype(np.float32)
        s = scores.astype(np.float64).tolist()
        fpr, tpr = roc_thresholds(s, pos.tolist())
        cases.append({"scores": s, "positive": pos.tolist(), "auc": auc_pairs(s, pos.tolist()),
                      "fpr": fpr, "tpr": tpr})
    cases.append({"scores": [0.5, 0.5, 0.5], "positive": [1, 0, 1], "auc": 0.5,
                  "fpr": [0.0, 1.0], "tpr": [0.0, 1.0]})
    cases.append({"scores": [0.1, 0.2], "positive": [1, 1], "auc": None,
                  "fpr": [0.0, 0.0, 0.0], "tpr": [0.0, 0.5, 1.0]})
    return {"cases": cases}


def precision_fixture(rng):
    n, dim, k = 36, 6, 5
    labels = rng.integers(0, 3, size=n)
    centres = unit(rng.normal(size=(3, dim)))
    x = f32(unit(centres[labels] + 0.9 * rng.normal(size=(n, dim))))
    groups = np.arange(n) // 2
    s = x @ x.T
    # float32 sums in C must order neighbours as float64 does here
    for i in range(n):
        row = np.sort(np.delete(s[i], i))
        assert np.min(np.diff(row)) > 2e-6, "reseed: near-tie among neighbours"

    def prec(use_groups):
        out = []
        for i in range(n):
            cand = [j for j in range(n) if j != i and not (use_groups and groups[j] == groups[i])]
            # stable: equal scores keep the lower index first
            order = sorted(cand, key=lambda j: (-s[i, j], j))[:k]
            out.append(float(np.mean([labels[j] == labels[i] for j in order])))
        return out

    return {"n": n, "dim": dim, "k": k, "x": x.ravel().tolist(), "labels": labels.tolist(),
            "groups": groups.tolist(), "precision": prec(False), "precision_groups": prec(True)}


def simpleshot_fixture(rng):
    n, dim, classes, shots = 30, 6, 3, 2
    labels = np.repeat(np.arange(classes), n // classes)
    centres = rng.normal(size=(classes, dim))
    x = f32(unit(centres[labels] + 1.2 * rng.normal(size=(n, dim))))
    support = np.concatenate([rng.choice(np.where(labels == c)[0], shots, replace=False)
                              for c in range(classes)])
    query = np.array([i for i in range(n) if i not in set(support.tolist())])
    mu = x[support].mean(axis=0)

    def cl2n(v):
        v = v - mu
        return v / np.linalg.norm(v, axis=-1, keepdims=True)

    protos = np.stack([cl2n(x[support[labels[support] == c]]).mean(axis=0)
                       for c in range(classes)])
    d = ((cl2n(x[query])[:, None, :] - protos[None, :, :]) ** 2).sum(axis=2)
    pred = d.argmin(axis=1)
    return {"n": n, "dim": dim, "n_classes": classes, "x": x.ravel().tolist(),
            "labels": labels.tolist(), "support": support.tolist(), "query": query.tolist(),
            "pred": pred.tolist(), "accuracy": float(np.mean(pred == labels[query]))}


def main():
    rng = np.random.default_rng(20261127)
    os.makedirs(OUT, exist_ok=True)
    for name, fixture in [("ranks", ranks_fixture), ("auc", auc_fixture),
                          ("precision", precision_fixture), ("simpleshot", simpleshot_fixture)]:
        with open(os.path.join(OUT, name + ".json"), "w") as f:
            json.dump(fixture(rng), f, indent=0)
            f.write("\n")


if __name__ == "__main__":
    main()
