#!/usr/bin/python3
"""Refits the label-error calibration of `cmrsearch audit` (PLATT_A, PLATT_B in
searcher/audit_label.c) for a new model, the way docs/audit.md ("Calibration")
describes: logistic regression of "planted" on the margin m over the cases the
audit assesses on the calibration archive (seed 11), then the intercept moved
from that archive's planted rate to a 5% prior.

    cmrsearch audit --db calib.db --truth calib/truth.json --kinds label_error \\
        --min-confidence 0 --json > calib-le.json
    scripts/fit_audit_calibration.py calib-le.json calib/truth.json \\
        [--check other-le.json other/truth.json ...] [--json]

The audit reports confidences, not margins: each is turned back into m with
the constants the binary was built with, read from searcher/audit_label.c (so
run it from the checkout that built the binary).  --check prints precision and
recall at confidence 0.5 with the new constants on other archives (for the
record, not for fitting).  Needs numpy (Debian's python3-numpy).
"""
import argparse
import json
import math
import os
import re
import sys

import numpy as np

PRIOR = 0.05
HERE = os.path.dirname(os.path.abspath(__file__))


def built_constants():
    src = open(os.path.join(HERE, "..", "searcher", "audit_label.c")).read()
    found = {}
    for name in ("PLATT_A", "PLATT_B"):
        m = re.search(r"#define\s+%s\s+([-+0-9.eE]+)" % name, src)
        if not m:
            sys.exit("searcher/audit_label.c: no #define %s" % name)
        found[name] = float(m.group(1))
    return found["PLATT_A"], found["PLATT_B"]


def margins(audit_path, truth_path, a, b):
    """(m, planted) of every label_error finding, and the planted count."""
    audit = json.load(open(audit_path))
    truth = json.load(open(truth_path))
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
    return np.array(m), np.array(y), len(planted)


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


def scores(m, y, n_planted, a, b):
    conf = 1 / (1 + np.exp(a * m + b))
    found = conf >= 0.5
    hits = int((found & (y > 0)).sum())
    return {"planted": n_planted, "found": int(found.sum()), "hits": hits,
            "precision": hits / found.sum() if found.sum() else None,
            "recall": hits / n_planted if n_planted else None}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audit_json")
    ap.add_argument("truth_json")
    ap.add_argument("--check", nargs=2, action="append", default=[], metavar=("AUDIT_JSON", "TRUTH_JSON"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    a0, b0 = built_constants()
    m, y, n_planted = margins(args.audit_json, args.truth_json, a0, b0)
    if not y.any() or y.all():
        sys.exit("the calibration archive needs both planted and unplanted findings")
    w = fit(m, y)
    rate = y.mean()
    shift = math.log(PRIOR / (1 - PRIOR)) - math.log(rate / (1 - rate))
    a, b = -w[0], -(w[1] + shift)
    out = {"built": {"PLATT_A": a0, "PLATT_B": b0},
           "fitted": {"PLATT_A": round(a, 2), "PLATT_B": round(b, 2)},
           "assessed": len(m), "planted_assessed": int(y.sum()), "planted": n_planted,
           "archives": []}
    a, b = out["fitted"]["PLATT_A"], out["fitted"]["PLATT_B"]
    for audit_path, truth_path in [(args.audit_json, args.truth_json)] + args.check:
        mm, yy, nn = margins(audit_path, truth_path, a0, b0)
        out["archives"].append({"audit": audit_path, "calibration": audit_path == args.audit_json,
                                "label_error": scores(mm, yy, nn, a, b)})
    if args.json:
        json.dump(out, sys.stdout, indent=2)
        print()
        return
    print("built with PLATT_A %.2f PLATT_B %.2f; %d findings assessed, %d of %d planted among them"
          % (a0, b0, out["assessed"], out["planted_assessed"], n_planted))
    print("fitted:     PLATT_A %.2f PLATT_B %.2f (intercept moved to a %.0f%% prior)" % (a, b, 100 * PRIOR))
    for arch in out["archives"]:
        s = arch["label_error"]
        fmt = lambda v: "-" if v is None else "%.2f" % v
        print("  %-40s planted %3d found %3d correct %3d precision %s recall %s%s"
              % (arch["audit"], s["planted"], s["found"], s["hits"], fmt(s["precision"]), fmt(s["recall"]),
                 "  (calibration)" if arch["calibration"] else ""))


if __name__ == "__main__":
    main()
