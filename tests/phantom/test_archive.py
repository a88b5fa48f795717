#!/usr/bin/python3
"""Archive-level tests of cmr-phantom: determinism, DICOM conformance
(dciodvfy), CDA schema validity (xmllint), truth.json agreeing with the
files, planted problems at their rates, and EF measured from the images.

usage: test_archive.py CMR_PHANTOM WORKDIR SCHEMA_DIR"""
import hashlib
import json
import re
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom

PHANTOM, WORK, SCHEMA = sys.argv[1], sys.argv[2], sys.argv[3]
failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL:", msg, flush=True)
    return cond


def run_phantom(out, *args):
    shutil.rmtree(out, ignore_errors=True)
    r = subprocess.run([PHANTOM, "--out", out, *args], capture_output=True, text=True)
    if r.returncode != 0:
        print(r.stderr)
        sys.exit("cmr-phantom failed: %s" % " ".join(args))
    return json.load(open(os.path.join(out, "truth.json")))


def hashes(root):
    out = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            out[os.path.relpath(p, root)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


def dicom_files(root):
    for d, _, names in os.walk(root):
        for n in sorted(names):
            yield os.path.join(d, n)


def series_map(study_dir, skip=()):
    """SeriesInstanceUID -> [(header, path)] for the readable files of a study."""
    out = {}
    for p in dicom_files(study_dir):
        if os.path.relpath(p) in skip or p in skip:
            continue
        try:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
        except Exception:
            continue
        out.setdefault(str(ds.SeriesInstanceUID), []).append((ds, p))
    for v in out.values():
        v.sort(key=lambda t: int(t[0].InstanceNumber))
    return out


def test_determinism(truth_a, a):
    b = os.path.join(WORK, "b")
    run_phantom(b, "--studies", "20", "--seed", "7", "--problems", "0.15", "--threads", "1")
    ha, hb = hashes(a), hashes(b)
    check(ha == hb, "same seed, different thread count: archives differ (%d vs %d files, %d mismatches)"
          % (len(ha), len(hb), sum(1 for k in ha if ha.get(k) != hb.get(k))))
    c = os.path.join(WORK, "c")
    run_phantom(c, "--studies", "4", "--seed", "8")
    hc = hashes(c)
    common = set(ha.values()) & set(hc.values())
    check(not common, "different seeds produced %d identical files" % len(common))
    shutil.rmtree(b, ignore_errors=True)
    shutil.rmtree(c, ignore_errors=True)


def test_dciodvfy(truth, root):
    if not shutil.which("dciodvfy"):
        print("SKIP: dciodvfy not installed (Debian dicom3tools)")
        return
    bad = {os.path.join(root, s["bad_file"]) for s in truth["study_list"] if s["bad_file"]}
    checked = 0
    for s in truth["study_list"]:
        for uid, files in series_map(os.path.join(root, s["dir"]), bad).items():
            # First and last file of every series.
            for _, p in (files[0], files[-1]):
                r = subprocess.run(["dciodvfy", p], capture_output=True, text=True)
                errs = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("Error")]
                check(not errs, "dciodvfy %s: %s" % (p, errs[:3]))
                checked += 1
    check(checked > 50, "dciodvfy checked only %d files" % checked)
    print("dciodvfy: %d files checked" % checked)


def test_reports(truth, root):
    cda = [os.path.join(root, s["report"]["path"]) for s in truth["study_list"] if s["report"]["kind"] == "cda"]
    check(len(cda) >= 5, "only %d CDA reports" % len(cda))
    r = subprocess.run(["xmllint", "--noout", "--schema", os.path.join(SCHEMA, "report-cda.xsd"), *cda],
                       capture_output=True, text=True)
    check(r.returncode == 0, "xmllint --schema failed: %s" % r.stderr[-500:])
    kinds = {s["report"]["kind"] for s in truth["study_list"]}
    check({"cda", "text", "sr"} <= kinds, "report kinds present: %s" % sorted(kinds))
    for s in truth["study_list"]:
        rep = s["report"]
        noimp = "no_impression" in s["problems"]
        if rep["kind"] == "none":
            check("duplicate" in s["problems"], "study %d has no report but is not a duplicate" % s["index"])
            continue
        path = os.path.join(root, rep["path"])
        if not check(os.path.exists(path), "missing report %s" % path):
            continue
        if rep["kind"] == "cda":
            x = open(path, encoding="utf-8").read()
            check(s["study_uid"] in x and s["accession"] in x, "%s: study UID or accession missing" % path)
            check(('code="19005-8"' in x) != noimp, "%s: impression section vs no_impression" % path)
            check('code="%s"' % rep["icd10"] in x and 'code="%s"' % rep["snomed"] in x,
                  "%s: coded diagnosis is not %s/%s" % (path, rep["icd10"], rep["snomed"]))
        elif rep["kind"] == "text":
            x = open(path, encoding="utf-8").read()
            heads = ("IMPRESSION:", "FINAL IMPRESSION:", "CONCLUSION:", "Impression:")
            check(any(h in x for h in heads) != noimp, "%s: impression heading vs no_impression" % path)
            check(s["accession"] in x and rep["icd10"] in x, "%s: accession or code missing" % path)
        else:
            ds = pydicom.dcmread(path)
            check(ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.11", "%s: not Basic Text SR" % path)
            check(ds.StudyInstanceUID == s["study_uid"], "%s: SR in the wrong study" % path)
            flat = str(ds)
            check(("121072" in flat) != noimp, "%s: SR impressions container vs no_impression" % path)
            check(rep["snomed"] in flat, "%s: SR code is not %s" % (path, rep["snomed"]))
        if not noimp:
            check(len(rep["impression"]) > 20, "study %d: impression too short" % s["index"])
        if "label_noise" in s["problems"]:
            check(rep["text_diagnosis"] != s["diagnosis"], "label noise without a wrong label")
        if "contradiction" in s["problems"]:
            check(rep["code_diagnosis"] != rep["text_diagnosis"], "contradiction without a mismatched code")
        if not s["problems"]:
            check(rep["code_diagnosis"] == s["diagnosis"], "clean study %d coded %s" % (s["index"], rep["code_diagnosis"]))


def test_truth_vs_files(truth, root):
    check(truth["studies"] == len(truth["study_list"]) == 20, "truth lists %d studies" % len(truth["study_list"]))
    dxs = {s["diagnosis"] for s in truth["study_list"]}
    check(len(dxs) == 10, "only %d diagnoses in 20 studies" % len(dxs))
    by_uid = {s["study_uid"]: s for s in truth["study_list"]}
    for s in truth["study_list"]:
        sd = os.path.join(root, s["dir"])
        if not check(os.path.isdir(sd), "missing study dir %s" % sd):
            continue
        nfiles = sum(1 for _ in dicom_files(sd))
        check(nfiles == s["files"], "%s: %d files, truth says %d" % (sd, nfiles, s["files"]))
        bad = {os.path.join(root, s["bad_file"])} if s["bad_file"] else set()
        sm = series_map(sd, bad)
        kinds = {x["kind"] for x in s["series"]}
        for x in s["series"]:
            got = sm.get(x["uid"], [])
            check(len(got) >= x["files"] - (1 if bad else 0),
                  "%s series %s: %d files, truth %d" % (sd, x["kind"], len(got), x["files"]))
            for ds, _ in got[:1]:
                check(ds.StudyInstanceUID == s["study_uid"], "%s: wrong StudyInstanceUID" % sd)
                check(ds.AccessionNumber == s["accession"], "%s: wrong AccessionNumber" % sd)
        check(("lge_sax" in kinds) == s["protocol"]["has_lge"], "%s: LGE series vs truth" % sd)
        check(("cine_4ch" in kinds) == s["protocol"]["has_lax"], "%s: 4CH series vs truth" % sd)
        check("missing_lge" not in s["problems"] or "lge_sax" not in kinds, "%s: missing_lge but LGE present" % sd)
        check("missing_lax" not in s["problems"] or "cine_4ch" not in kinds, "%s: missing_lax but LAX present" % sd)
        if s["bad_file"]:
            p = os.path.join(root, s["bad_file"])
            r = subprocess.run(["dcmdump", "-q", p], capture_output=True)
            check(r.returncode != 0, "%s: planted damaged file still parses" % p)
        if s["duplicate_of"]:
            o = by_uid.get(s["duplicate_of"])
            if check(o is not None, "duplicate_of points nowhere"):
                check(o["study_uid"] != s["study_uid"], "duplicate kept its UID")
                so = {x["kind"]: x for x in o["series"]}
                for x in s["series"]:
                    if x["kind"] != "cine_sax" or x["kind"] not in so:
                        continue
                    a = sm.get(x["uid"], [])
                    b = series_map(os.path.join(root, o["dir"])).get(so["cine_sax"]["uid"], [])
                    if a and b:
                        pa, pb = pydicom.dcmread(a[0][1]), pydicom.dcmread(b[0][1])
                        check(pa.PixelData == pb.PixelData, "duplicate pixels differ from original")
                        check(pa.SOPInstanceUID != pb.SOPInstanceUID, "duplicate reuses SOP Instance UID")


def test_enhanced_and_flow():
    """Enhanced MR objects and flow series: every one through dciodvfy,
    truth's enhanced flags against the files, frames and functional groups
    read back with pydicom, venc where each vendor keeps it."""
    root = os.path.join(WORK, "enh")
    # --multiframe 2.86: every Philips study enhanced; --flow 1: all have flow.
    t = run_phantom(root, "--studies", "12", "--seed", "9", "--multiframe", "2.86", "--flow", "1", "--compress", "0.5")
    n_enh = n_flow = 0
    have_dciodvfy = shutil.which("dciodvfy") is not None
    for s in t["study_list"]:
        sm = series_map(os.path.join(root, s["dir"]))
        flow_types = set()
        for x in s["series"]:
            got = sm.get(x["uid"], [])
            if not check(got, "%s: series %s not found" % (s["dir"], x["kind"])):
                continue
            ds0, p0 = got[0]
            enh = ds0.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
            check(enh == x["enhanced"], "%s %s: enhanced %s in truth, SOP class %s" % (s["dir"], x["kind"], x["enhanced"],
                                                                                   ds0.SOPClassUID))
            if x["enhanced"]:
                n_enh += 1
                ds = pydicom.dcmread(p0)
                nf = int(ds.NumberOfFrames)
                check(nf == x["frames"] and len(ds.PerFrameFunctionalGroupsSequence) == nf,
                      "%s: %d frames, %d per-frame items, truth %d" % (p0, nf, len(ds.PerFrameFunctionalGroupsSequence),
                                                                      x["frames"]))
                sh = ds.SharedFunctionalGroupsSequence[0]
                check(float(sh.PixelMeasuresSequence[0].SliceThickness) > 0, "%s: no slice thickness" % p0)
                pf = ds.PerFrameFunctionalGroupsSequence
                trig = [float(f.CardiacSynchronizationSequence[0].NominalCardiacTriggerDelayTime) for f in pf]
                idx = [tuple(f.FrameContentSequence[0].DimensionIndexValues) for f in pf]
                check(len(set(idx)) == nf, "%s: dimension index values repeat" % p0)
                if x["kind"].startswith("cine"):
                    check(len(set(trig)) == s["protocol"]["phases"], "%s: %d trigger delays" % (p0, len(set(trig))))
                if ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1":
                    check(ds.pixel_array.shape[0] == nf or nf == 1, "%s: pixel array %s" % (p0, ds.pixel_array.shape))
            if x["kind"] == "flow":
                n_flow += 1
                flow_types |= {"\\".join(ds.ImageType) for ds, _ in got}
            if have_dciodvfy and (x["enhanced"] or x["kind"] == "flow"):
                for _, p in (got[0], got[-1]):
                    r = subprocess.run(["dciodvfy", p], capture_output=True, text=True)
                    errs = [l for l in (r.stdout + r.stderr).splitlines() if l.startswith("Error")]
                    check(not errs, "dciodvfy %s: %s" % (p, errs[:3]))
        # Siemens puts magnitude and phase in two series, the others in one.
        check(any("P" in t_.split("\\")[2:] or "PHASE" in t_ or "VELOCITY" in t_ for t_ in flow_types),
              "%s: no phase image type in %s" % (s["dir"], flow_types))
        if s["vendor"] == "siemens" and s["protocol"]["has_flow"]:
            names = {str(ds.SequenceName) for x in s["series"] if x["kind"] == "flow" for ds, _ in sm.get(x["uid"], [])[:1]}
            check(any(re.search(r"_v\d+in$", n) for n in names), "%s: Siemens venc not in %s" % (s["dir"], names))
    check(n_enh >= 4, "only %d enhanced series" % n_enh)
    check(n_flow >= 8, "only %d flow series" % n_flow)
    print("enhanced series: %d, flow series: %d" % (n_enh, n_flow))
    shutil.rmtree(root, ignore_errors=True)


def test_rates():
    out = os.path.join(WORK, "plan")
    t = run_phantom(out, "--studies", "3000", "--seed", "5", "--problems", "0.1", "--plan-only")
    n = t["studies"]
    c = t["problem_counts"]
    pairs = {"label_noise": c["label_noise"], "duplicate": c["duplicate"], "no_impression": c["no_impression"],
             "contradiction": c["contradiction"], "missing_view": c["missing_lge"] + c["missing_lax"],
             "corrupt": c["truncated_file"] + c["corrupt_file"]}
    for k, v in pairs.items():
        # Duplicates inherit their original's missing views, so allow a little above.
        check(0.08 <= v / n <= 0.125, "rate of %s: %.3f, asked 0.1" % (k, v / n))
    t0 = run_phantom(out, "--studies", "500", "--seed", "5", "--plan-only")
    check(all(v == 0 for v in t0["problem_counts"].values()), "problems planted at rate 0: %s" % t0["problem_counts"])
    shutil.rmtree(out, ignore_errors=True)


def lv_area(ds, p, centre, level):
    """LV blood-pool area (mm2) in one SAX image, by region growing from where
    the LV axis crosses the slice."""
    img = pydicom.dcmread(p).pixel_array.astype(np.float32)
    ipp = np.array(ds.ImagePositionPatient, float)
    iop = np.array(ds.ImageOrientationPatient, float)
    ps = float(ds.PixelSpacing[0])
    d = centre - ipp
    ci, cj = int(round(d @ iop[:3] / ps)), int(round(d @ iop[3:] / ps))
    if level is None:
        r = int(15 / ps)
        level = np.percentile(img[max(cj - r, 0):cj + r, max(ci - r, 0):ci + r], 90)
    mask = img >= 0.55 * level
    if not (0 <= cj < img.shape[0] and 0 <= ci < img.shape[1]) or not mask[cj, ci]:
        return 0.0, level
    seen = np.zeros_like(mask)
    stack, area, lim = [(cj, ci)], 0, int(70 / ps)
    while stack:
        y, x = stack.pop()
        if seen[y, x] or not mask[y, x] or abs(y - cj) > lim or abs(x - ci) > lim:
            continue
        seen[y, x] = True
        area += 1
        for yy, xx in ((y + 1, x), (y - 1, x), (y, x + 1), (y, x - 1)):
            if 0 <= yy < img.shape[0] and 0 <= xx < img.shape[1] and not seen[yy, xx]:
                stack.append((yy, xx))
    return area * ps * ps, level


def ed_es_volumes(study, root):
    """EDV and ESV from the SAX cine with Simpson's rule, counting each slice
    only for the part of its slab below the mitral plane at that phase (the
    base descends by the long-axis shortening in systole), as an analyst
    excludes atrial slices."""
    sm = series_map(os.path.join(root, study["dir"]))
    sax = [(ds, p) for x in study["series"] if x["kind"] == "cine_sax" for ds, p in sm.get(x["uid"], [])]
    centre = np.array(study["params"]["lv_center"])
    pr, pa = study["protocol"], study["params"]
    sp = pr["slice_thickness"] + pr["slice_gap"]
    es = pa["es_phase"]
    base = {0: 0.0, es: -pa["long_shortening"] * pa["lv_length_mm"]}
    vols = {0: 0.0, es: 0.0}
    level = None
    for ds, p in sax:
        k = int(ds.AcquisitionNumber) - 1
        ph = (int(ds.InstanceNumber) - 1) % pr["phases"]
        if ph not in vols:
            continue
        below = min(sp, base[ph] - (study["sax_ws"][k] - sp / 2))
        if below <= 0:
            continue
        a, level = lv_area(ds, p, centre, level)
        vols[ph] += a * below / 1000.0
    return vols[0], vols[es]


def test_ef_from_images():
    root = os.path.join(WORK, "ef")
    # Single-frame only: the volume reader below walks one file per image.
    t = run_phantom(root, "--studies", "10", "--seed", "11", "--compress", "0", "--fast", "--multiframe", "0")
    errs = []
    for s in t["study_list"]:
        if s["problems"] or s["protocol"]["arrhythmia"] or len({x["kind"] for x in s["series"]
                                                                 if x["kind"] == "cine_sax"}) == 0:
            continue
        if sum(1 for x in s["series"] if x["kind"] == "cine_sax") > 1:
            continue  # one series per slice: InstanceNumber restarts, skip for simplicity
        if s["diagnosis"] == "lvnc":
            continue  # recesses between trabeculae read as blood here but are wall in the model
        edv, esv = ed_es_volumes(s, root)
        ef = (edv - esv) / edv
        errs.append(ef - s["params"]["lvef"])
        print("EF %-12s truth %.2f images %.2f  EDV truth %.0f images %.0f" %
              (s["diagnosis"], s["params"]["lvef"], ef, s["params"]["lvedv_ml"], edv))
        check(abs(ef - s["params"]["lvef"]) < 0.08, "study %d EF from images %.2f vs truth %.2f"
              % (s["index"], ef, s["params"]["lvef"]))
        check(abs(edv / s["params"]["lvedv_ml"] - 1) < 0.2, "study %d EDV from images %.0f vs truth %.0f"
              % (s["index"], edv, s["params"]["lvedv_ml"]))
    check(len(errs) >= 5, "EF checked on only %d studies" % len(errs))
    if errs:
        check(np.mean(np.abs(errs)) < 0.04, "mean |EF error| %.3f" % np.mean(np.abs(errs)))
    shutil.rmtree(root, ignore_errors=True)


def main():
    os.makedirs(WORK, exist_ok=True)
    a = os.path.join(WORK, "a")
    truth = run_phantom(a, "--studies", "20", "--seed", "7", "--problems", "0.15", "--threads", "2")
    for name, fn in [("truth_vs_files", lambda: test_truth_vs_files(truth, a)),
                     ("reports", lambda: test_reports(truth, a)),
                     ("dciodvfy", lambda: test_dciodvfy(truth, a)),
                     ("determinism", lambda: test_determinism(truth, a)),
                     ("enhanced_and_flow", test_enhanced_and_flow),
                     ("rates", test_rates),
                     ("ef_from_images", test_ef_from_images)]:
        n0 = len(failures)
        fn()
        print("%s: %s" % (name, "ok" if len(failures) == n0 else "FAILED"), flush=True)
    shutil.rmtree(a, ignore_errors=True)
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
