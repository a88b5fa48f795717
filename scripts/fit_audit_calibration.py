#!/usr/bin/python3
"""Refits the label-error calibration of `cmrsearch audit` (AUDIT_PLATT_A and
AUDIT_PLATT_B in searcher/audit_internal.h) for a new model, the way
docs/audit.md ("Calibration") describes: logistic regression of "planted" on the margin m over the cases the
audit assesses on the calibration archives (pooled), then the intercept moved
from their planted rate to a 5% prior.

    cmrsearch audit --db calib.db --truth calib/truth.json --kinds label_error \\
        --min-confidence 0 --json > calib-le.json
    scripts/fit_audit_calibration.py calib-le.json calib/truth.json [more-le.json more/truth.json ...] \\
        [--check other-le.json other/truth.json ...] [--json]

The audit reports confidences, not margins: each is turned back into m with
the constants the report says it used (label_error_calibration), so a
report from any build is read right.  --check prints precision and
recall with the new constants on other archives (not used for the fit).
Findings count as listed from --threshold (default 0.4, the audit's
default --min-confidence).  The script also prints the balanced threshold:
over all the archives given, pooled, the lowest confidence (a multiple of
0.05) from which precision is at least recall, where the two curves cross;
that is how the audit's default was chosen (docs/audit.md, "The listing
threshold").
Needs numpy (Debian's python3-numpy).
"""
import argparse
import json
import math
import sys

import numpy as np

PRIOR = 0.05


def margins(audit_path, truth_path):
    """(m, planted) of every label_error finding, the planted count, and the
    constants (a, b) the report was made with."""
    audit = json.load(open(audit_path))
    truth = json.load(open(truth_path))
    cal = audit.get("label_error_calibration")
    if not cal:
        sys.exit("%s: no label_error_calibration (a report from before 2026-11-29?)" % audit_path)
    a, b = cal["platt_a"], cal["platt_b"]
    planted = {s["study_uid"] for s in truth["study_list"] if "label_noise" in s.get("problems", [])}
    m, y = [], []
    for f in audit["findings"]:
        if f["kind"] != "label_error":
            continue
        # float32 confidences saturate near 0 and 1: keep the logit finite
        c = min(max(f["confidence"], 1e-7), 1 - 1e-7)
        m.append((math.log(1 / c - 1) - b) / a)  # c = 1 / (1 + exp(a m + b))
        y.append(1.0 if f["study_uid"] in planted else 0.0)
    if not m:
        sys.exit("%s: no label_error findings (was it run with --min-confidence 0?)" % audit_path)
    return np.array(m), np.array(y), len(planted), (a, b)


def fit(m, y):
    """Logistic regression p = sigmoid(w0 m + w1) by Newton's method."""
    x = np.stack([m, np.ones_like(m)], 1)
    w = np.zeros(2)
    for _ in range(100):
        p = 1 / (1 + np.exp(-x @ w))
        step = np.linalg.solve((x * (p * (1 - p))[:, None]).T @ x + 1e-9 * np.eye(2), x.T @ (y - p))
        w += step
        if np.abs(step).max() < 1e-10:
            break
    return w


def scores(m, y, n_planted, a, b, threshold):
    conf = 1 / (1 + np.exp(a * m + b))
    found = conf >= threshold
    hits = int((found & (y > 0)).sum())
    return {"planted": n_planted, "found": int(found.sum()), "hits": hits,
            "precision": hits / found.sum() if found.sum() else None,
            "recall": hits / n_planted if n_planted else None}


def pooled(archive_scores):
    """scores() summed over archives: precision and recall of the pool."""
    planted, found, hits = (sum(s[f] for s in archive_scores) for f in ("planted", "found", "hits"))
    return {"planted": planted, "found": found, "hits": hits,
            "precision": hits / found if found else None, "recall": hits / planted if planted else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("calibration", nargs="+", metavar="AUDIT_JSON TRUTH_JSON",
                    help="pairs: an audit report (--min-confidence 0) and its archive's truth.json")
    ap.add_argument("--check", nargs=2, action="append", default=[], metavar=("AUDIT_JSON", "TRUTH_JSON"))
    ap.add_argument("--threshold", type=float, default=0.4,
                    help="confidence from which a finding is listed (default 0.4, the audit's)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if len(args.calibration) % 2:
        ap.error("calibration archives come in pairs: AUDIT_JSON TRUTH_JSON")
    if not 0 < args.threshold < 1:
        ap.error("--threshold: expected a confidence between 0 and 1")
    pairs = list(zip(args.calibration[0::2], args.calibration[1::2]))
    n_cal = len(pairs)
    archives = [(path, margins(path, truth)) for path, truth in pairs + args.check]
    consts = {arch[1][3] for arch in archives[:n_cal]}
    if len(consts) > 1:
        sys.exit("the calibration reports were made with different constants %s: rerun them with one build"
                 % sorted(consts))
    m = np.concatenate([arch[1][0] for arch in archives[:n_cal]])
    y = np.concatenate([arch[1][1] for arch in archives[:n_cal]])
    n_planted = sum(arch[1][2] for arch in archives[:n_cal])
    a0, b0 = archives[0][1][3]
    if not y.any() or y.all():
        sys.exit("the calibration archives need both planted and unplanted findings")
    w = fit(m, y)
    rate = y.mean()
    shift = math.log(PRIOR / (1 - PRIOR)) - math.log(rate / (1 - rate))
    a, b = -w[0], -(w[1] + shift)
    out = {"reported": {"AUDIT_PLATT_A": a0, "AUDIT_PLATT_B": b0},
           "fitted": {"AUDIT_PLATT_A": round(a, 2), "AUDIT_PLATT_B": round(b, 2)},
           "assessed": len(m), "planted_assessed": int(y.sum()), "planted": n_planted,
           "archives": []}
    a, b = out["fitted"]["AUDIT_PLATT_A"], out["fitted"]["AUDIT_PLATT_B"]
    out["threshold"] = args.threshold
    for k, (audit_path, (mm, yy, nn, _)) in enumerate(archives):
        out["archives"].append({"audit": audit_path, "calibration": k < n_cal,
                                "label_error": scores(mm, yy, nn, a, b, args.threshold)})
    for t in np.arange(1, 20) * 0.05:
        p = pooled([scores(mm, yy, nn, a, b, t) for _, (mm, yy, nn, _) in archives])
        if p["found"] and p["planted"] and p["precision"] >= p["recall"]:
            out["balanced_threshold"] = {"threshold": round(float(t), 2), "precision": p["precision"],
                                         "recall": p["recall"], "archives": len(archives)}
            break
    for name, group in (("calibration", out["archives"][:n_cal]), ("checked", out["archives"][n_cal:])):
        if group:
            out["pooled_" + name] = {"archives": len(group), **pooled([g["label_error"] for g in group])}
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return
    print("reported AUDIT_PLATT_A %.2f AUDIT_PLATT_B %.2f; %d calibration archive%s, %d findings assessed, "
          "%d of %d planted among them" % (a0, b0, n_cal, "" if n_cal == 1 else "s", out["assessed"],
                                           out["planted_assessed"], n_planted))
    print("fitted:   AUDIT_PLATT_A %.2f AUDIT_PLATT_B %.2f (intercept moved to a %.0f%% prior); "
          "listed from confidence %.2f" % (a, b, 100 * PRIOR, args.threshold))
    for arch in out["archives"]:
        s = arch["label_error"]
        fmt = lambda v: "-" if v is None else "%.2f" % v
        print("  %-40s planted %3d found %3d correct %3d precision %s recall %s%s"
              % (arch["audit"], s["planted"], s["found"], s["hits"], fmt(s["precision"]), fmt(s["recall"]),
                 "  (calibration)" if arch["calibration"] else ""))
    for name in ("calibration", "checked"):
        s = out.get("pooled_" + name)
        if s:
            print("  pooled over the %d %s archive%s: planted %d found %d correct %d precision %s recall %s"
                  % (s["archives"], name, "" if s["archives"] == 1 else "s", s["planted"], s["found"], s["hits"],
                     fmt(s["precision"]), fmt(s["recall"])))
    bt = out.get("balanced_threshold")
    if bt:
        print("balanced threshold over all %d archives pooled: %.2f (precision %.2f, recall %.2f)"
              % (bt["archives"], bt["threshold"], bt["precision"], bt["recall"]))


if __name__ == "__main__":
    main()
