#!/usr/bin/python3
"""The Python baseline of bench-ingest (docs/benchmarks.md, "Ingest").

A straightforward single-process implementation of the same steps with
pydicom and numpy: walk the archive, read every DICOM header
(stop_before_pixels), group by study and series, classify the series with a
few plain rules, then for each study with a cine load the pixel data the
CMR-CLIP tensor needs and build it with tests/reference/tensor_reference.py.

    /usr/bin/python3 bench/ingest_python.py ARCHIVE [--limit N] [--json]

--limit N builds tensors for only the first N studies (by Study Instance
UID) and extrapolates the tensor time per study to every study with a cine;
the header walk and classification always cover the whole archive.

Studies whose transfer syntax this pydicom cannot decode without plugins
(JPEG lossless, JPEG-LS: no pylibjpeg / gdcm installed) get no tensor: the
tensor time per study measured on the decodable ones (uncompressed, RLE)
stands in for them, and the output says how many there were.
"""

import argparse
import json
import math
import os
import sys
import time
import warnings

import numpy as np
import pydicom

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import tensor_reference as tr  # noqa: E402

warnings.filterwarnings("ignore")

# What pydicom 2.3 decodes with numpy alone.
DECODABLE = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
             "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.5"}
SAX_COS = math.cos(math.radians(20.0))


def read_headers(root):
    """{study uid: {series uid: [record]}}, files seen, DICOM files."""
    studies = {}
    n_files = n_dicom = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            n_files += 1
            path = os.path.join(dirpath, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:
                continue
            if "SeriesInstanceUID" not in ds or "StudyInstanceUID" not in ds:
                continue
            n_dicom += 1
            if ds.get("Modality", "") != "MR" or "ImagePositionPatient" not in ds \
                    or "ImageOrientationPatient" not in ds:
                continue
            rec = dict(path=path,
                       position=[float(x) for x in ds.ImagePositionPatient],
                       orientation=[float(x) for x in ds.ImageOrientationPatient],
                       trigger=float(ds.get("TriggerTime", -1) or -1),
                       ti=float(ds.get("InversionTime", -1) or -1),
                       instance=int(ds.get("InstanceNumber", 0) or 0),
                       number=int(ds.get("SeriesNumber", 0) or 0),
                       thickness=float(ds.get("SliceThickness", 0) or 0),
                       description=str(ds.get("SeriesDescription", "") or ds.get("ProtocolName", "") or ""),
                       ts=str(getattr(ds, "file_meta", {}).get("TransferSyntaxUID", "")))
            studies.setdefault(str(ds.StudyInstanceUID), {}).setdefault(str(ds.SeriesInstanceUID), []).append(rec)
    return studies, n_files, n_dicom


def build_series(recs):
    """A tensor_reference series dict (label 'other') plus classification facts."""
    o = np.asarray(recs[0]["orientation"])
    n = np.cross(o[:3], o[3:])
    n = n / np.linalg.norm(n)
    same_plane = all(np.allclose(r["orientation"], recs[0]["orientation"], atol=1e-3) for r in recs)
    thick = recs[0]["thickness"]
    for r in recs:
        r["coord"] = float(np.dot(r["position"], n))
    coords = sorted(r["coord"] for r in recs)
    tol = thick / 10 if thick > 0 else 0.5
    uniq = []
    for c in coords:
        if not uniq or c - uniq[-1] > tol:
            uniq.append(c)
    for r in recs:
        r["slice"] = min(range(len(uniq)), key=lambda k: (abs(uniq[k] - r["coord"]), k))
    for seqno, r in enumerate(sorted(recs, key=lambda r: (r["instance"], r["path"]))):
        r["seq"] = seqno
    recs.sort(key=lambda r: (r["slice"], r["trigger"], r["instance"]))
    slices = [[] for _ in uniq]
    for r in recs:
        p = r["path"]
        slices[r["slice"]].append(dict(seq=r["seq"], position=r["position"], id=os.path.basename(p),
                                       pixels=(lambda p=p: tr.dicom_pixels(pydicom.dcmread(p))[0])))
    slices = [s for s in slices if s]
    triggers = max(len({r["trigger"] for r in recs if r["slice"] == k}) for k in range(len(uniq)))
    return dict(label="other", number=recs[0]["number"], normal=n.tolist(), thickness=thick,
                slices=slices, _same_plane=same_plane, _triggers=triggers, _ti=recs[0]["ti"],
                _desc=recs[0]["description"].lower(), _ts=recs[0]["ts"])


def classify(series):
    """Cine: one plane, >= 10 trigger times per slice, no inversion time.  LGE:
    one plane, inversion time >= 200 ms (short-TI STIR stays other), few images
    per slice.  Plane: SAX when the normal is within 20 degrees of the stack
    normal (the normal of the cine with the most slices, or of the most
    frequent cine normal when cines are one slice per series); otherwise long
    axis, named by the description (2ch/vla, 4ch/hla, 3ch/lvot) or else by
    acquisition order among the unnamed ones (4ch, 2ch, 3ch)."""
    kinds = {}
    for uid, s in series.items():
        if not s["_same_plane"]:
            continue
        if s["_triggers"] >= 10 and s["_ti"] < 0:
            kinds[uid] = "cine"
        elif s["_ti"] >= 200 and s["_triggers"] <= 2:
            kinds[uid] = "lge"
    cines = [series[u] for u in kinds if kinds[u] == "cine"]
    if not cines and not kinds:
        return
    pool = cines or [series[u] for u in kinds]
    # stack normal: the normal shared by the most slices across series
    votes = []
    for s in pool:
        n = np.asarray(s["normal"])
        for v in votes:
            if abs(float(np.dot(v[0], n))) >= SAX_COS:
                v[1] += len(s["slices"])
                break
        else:
            votes.append([n, len(s["slices"])])
    stack = max(votes, key=lambda v: v[1])[0]
    for kind in ("cine", "lge"):
        unnamed = []
        for uid in sorted((u for u in kinds if kinds[u] == kind), key=lambda u: series[u]["number"]):
            s = series[uid]
            if abs(float(np.dot(stack, np.asarray(s["normal"])))) >= SAX_COS:
                s["label"] = kind + "_sax"
                continue
            d = s["_desc"]
            if "2ch" in d or "vla" in d or "2cv" in d:
                s["label"] = kind + "_2ch"
            elif "4ch" in d or "hla" in d or "4cv" in d:
                s["label"] = kind + "_4ch"
            elif "3ch" in d or "lvot" in d or "3cv" in d:
                s["label"] = kind + "_3ch"
            else:
                unnamed.append(s)
        used = {s["label"] for s in series.values()}
        free = [kind + v for v in ("_4ch", "_2ch", "_3ch") if kind + v not in used]
        for s in unnamed:
            s["label"] = free.pop(0) if free else kind + "_4ch"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("archive")
    ap.add_argument("--limit", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    t0 = time.perf_counter()
    raw, n_files, n_dicom = read_headers(args.archive)
    t1 = time.perf_counter()
    studies = {}
    n_series = 0
    for uid in sorted(raw):
        ser = {su: build_series(recs) for su, recs in raw[uid].items()}
        classify(ser)
        studies[uid] = ser
        n_series += len(ser)
    t2 = time.perf_counter()

    with_cine = [u for u in studies if any(s["label"].startswith("cine") for s in studies[u].values())]
    decodable = [u for u in with_cine if all(s["_ts"] in DECODABLE for s in studies[u].values())]
    todo = decodable[:args.limit] if args.limit > 0 else decodable
    built = failed = 0
    t3 = time.perf_counter()
    for uid in todo:
        try:
            tensor, _ = tr.study_tensor(studies[uid], tr.CMRCLIP_SPEC)
            built += 1
        except Exception as e:  # noqa: BLE001
            failed += 1
            print("study %s: %s" % (uid, e), file=sys.stderr)
    t4 = time.perf_counter()

    scan_s = t1 - t0
    classify_s = t2 - t1
    tensor_s = t4 - t3
    per_study = tensor_s / len(todo) if todo else 0.0
    tensor_all_s = per_study * len(with_cine)  # extrapolated to every study with a cine
    total_s = scan_s + classify_s + tensor_all_s
    out = dict(studies=len(studies), series=n_series, files=n_files, dicom=n_dicom,
               with_cine=len(with_cine), decodable=len(decodable), tensors_built=built,
               tensor_failures=failed, scan_s=round(scan_s, 3), classify_s=round(classify_s, 3),
               tensor_measured_s=round(tensor_s, 3), tensor_s_per_study=round(per_study, 4),
               tensor_extrapolated_s=round(tensor_all_s, 3), total_s=round(total_s, 3),
               studies_per_s=round(len(studies) / total_s, 3) if total_s > 0 else 0.0,
               extrapolated=len(todo) < len(with_cine), processes=1)
    if args.json:
        print(json.dumps(out))
    else:
        print("python (1 process): studies %d  series %d  files %d  with cine %d  decodable %d  built %d"
              % (len(studies), n_series, n_files, len(with_cine), len(decodable), built))
        print("headers %.1f s  classify %.1f s  tensors %.1f s for %d (%.3f s/study) -> %.1f s for %d"
              "  total %.1f s  %.3f studies/s%s"
              % (scan_s, classify_s, tensor_s, len(todo), per_study, tensor_all_s, len(with_cine),
                 total_s, out["studies_per_s"], " (tensor time extrapolated)" if out["extrapolated"] else ""))


if __name__ == "__main__":
    main()
