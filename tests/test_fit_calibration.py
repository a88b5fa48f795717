#!/usr/bin/env python3
"""Tests of scripts/fit_audit_calibration.py on audit reports written here.

Each synthetic archive has label-error margins drawn from two normals
(planted errors low, the rest high), written as `cmrsearch audit` would
write them: confidences 1 / (1 + exp(a m + b)) in float32, with the
constants under label_error_calibration, and a truth.json naming the
planted studies (one of them not assessed, as a study with a missing view
group would be).  The fit is checked against an independent one (plain
gradient ascent instead of the script's Newton steps), the scores and the
balanced threshold against counting by hand, and the refusals by their
exit status and message.

Run: /usr/bin/python3 tests/test_fit_calibration.py   (ctest: test_fit_calibration)
"""

import json
import math
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "..", "scripts", "fit_audit_calibration.py")
PRIOR = 0.05


def write_archive(directory, name, seed, a, b, n=300, planted=18):
    """Writes NAME-le.json and NAME-truth.json; returns (margins, planted flags, planted count)."""
    rng = np.random.default_rng(seed)
    y = np.zeros(n)
    y[:planted - 1] = 1  # the last planted study is not assessed
    m = np.where(y > 0, rng.normal(-2.0, 2.5, n), rng.normal(6.0, 2.5, n))
    conf = (1 / (1 + np.exp(a * m + b))).astype(np.float32)
    findings = [{"kind": "label_error", "confidence": float(c), "case_id": i + 1, "study_uid": "1.2.%d.%d" % (seed, i)}
                for i, c in enumerate(conf)]
    findings.append({"kind": "duplicate", "confidence": 0.99, "case_id": 1, "study_uid": "1.2.%d.0" % seed})
    studies = [{"study_uid": "1.2.%d.%d" % (seed, i), "problems": ["label_noise"] if y[i] else []} for i in range(n)]
    studies.append({"study_uid": "1.2.%d.unassessed" % seed, "problems": ["label_noise", "missing_lge"]})
    audit_path = os.path.join(directory, name + "-le.json")
    truth_path = os.path.join(directory, name + "-truth.json")
    with open(audit_path, "w") as f:
        json.dump({"label_error_calibration": {"platt_a": a, "platt_b": b}, "findings": findings}, f)
    with open(truth_path, "w") as f:
        json.dump({"study_list": studies}, f)
    # the margins as the script recovers them from float32 confidences
    c = np.clip(conf.astype(np.float64), 1e-7, 1 - 1e-7)
    return (np.log(1 / c - 1) - b) / a, y, planted, (audit_path, truth_path)


def run(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def independent_fit(m, y):
    """Logistic regression by gradient ascent on the mean log-likelihood."""
    w = np.zeros(2)
    x = np.stack([m, np.ones_like(m)], 1)
    for _ in range(200000):
        p = 1 / (1 + np.exp(-x @ w))
        grad = x.T @ (y - p) / len(y)
        w += 0.05 * grad
        if np.abs(grad).max() < 1e-10:
            break
    return w


def counted(m, y, planted, a, b, threshold):
    conf = 1 / (1 + np.exp(a * m + b))
    found = conf >= threshold
    return int(found.sum()), int((found & (y > 0)).sum()), planted


class FitCalibration(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory()
        self.dir = self.tmp.name
        self.cal = [write_archive(self.dir, "cal%d" % k, 100 + k, 0.6, 4.8) for k in range(3)]
        self.chk = [write_archive(self.dir, "chk%d" % k, 200 + k, 0.6, 4.8, planted=12) for k in range(2)]

    def tearDown(self):
        self.tmp.cleanup()

    def args(self, archives, check=False):
        out = []
        for _, _, _, paths in archives:
            out += (["--check"] if check else []) + list(paths)
        return out

    def test_fit_scores_and_balanced_threshold(self):
        r = run(*self.args(self.cal), *self.args(self.chk, check=True), "--threshold", "0.35", "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        out = json.loads(r.stdout)

        m = np.concatenate([a[0] for a in self.cal])
        y = np.concatenate([a[1] for a in self.cal])
        w = independent_fit(m, y)
        rate = y.mean()
        shift = math.log(PRIOR / (1 - PRIOR)) - math.log(rate / (1 - rate))
        a, b = -w[0], -(w[1] + shift)
        self.assertAlmostEqual(out["fitted"]["AUDIT_PLATT_A"], round(a, 2), delta=0.011)
        self.assertAlmostEqual(out["fitted"]["AUDIT_PLATT_B"], round(b, 2), delta=0.011)
        self.assertEqual(out["reported"], {"AUDIT_PLATT_A": 0.6, "AUDIT_PLATT_B": 4.8})
        self.assertEqual(out["planted"], 3 * 18)
        self.assertEqual(out["planted_assessed"], 3 * 17)
        self.assertEqual(out["threshold"], 0.35)

        fa, fb = out["fitted"]["AUDIT_PLATT_A"], out["fitted"]["AUDIT_PLATT_B"]
        archives = self.cal + self.chk
        for arch, got in zip(archives, out["archives"]):
            found, hits, planted = counted(arch[0], arch[1], arch[2], fa, fb, 0.35)
            s = got["label_error"]
            self.assertEqual((s["found"], s["hits"], s["planted"]), (found, hits, planted), got["audit"])
        self.assertEqual([g["calibration"] for g in out["archives"]], [True] * 3 + [False] * 2)

        # the lowest multiple of 0.05 where pooled precision >= recall
        expect = None
        for k in range(1, 20):
            t = 0.05 * k
            sums = np.sum([counted(x[0], x[1], x[2], fa, fb, t) for x in archives], axis=0)
            found, hits, planted = sums
            if found and hits / found >= hits / planted:
                expect = (round(t, 2), hits / found, hits / planted)
                break
        self.assertIsNotNone(expect)
        bt = out["balanced_threshold"]
        self.assertEqual(bt["threshold"], expect[0])
        self.assertAlmostEqual(bt["precision"], expect[1])
        self.assertAlmostEqual(bt["recall"], expect[2])
        self.assertEqual(bt["archives"], 5)

    def test_default_threshold_is_the_audits(self):
        r = run(*self.args(self.cal), "--json")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(json.loads(r.stdout)["threshold"], 0.4)
        with open(os.path.join(HERE, "..", "searcher", "audit.c")) as f:
            self.assertIn("o->min_confidence = 0.4f;", f.read())

    def test_refusals(self):
        other = write_archive(self.dir, "other", 300, 0.7, 5.0)
        r = run(*self.args(self.cal[:1]), *other[3])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("different constants", r.stderr)

        r = run(self.cal[0][3][0])
        self.assertEqual(r.returncode, 2)
        self.assertIn("pairs", r.stderr)

        for bad in ("0", "1", "1.5"):
            r = run(*self.args(self.cal[:1]), "--threshold", bad)
            self.assertEqual(r.returncode, 2, bad)
            self.assertIn("--threshold", r.stderr)

        empty = os.path.join(self.dir, "empty-le.json")
        with open(empty, "w") as f:
            json.dump({"label_error_calibration": {"platt_a": 0.6, "platt_b": 4.8}, "findings": []}, f)
        r = run(empty, self.cal[0][3][1])
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("--min-confidence 0", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
