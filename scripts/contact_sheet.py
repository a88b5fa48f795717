#!/usr/bin/python3
"""Contact sheet of a cmr-phantom archive: one row per diagnosis with a
mid-ventricular short-axis frame at end-diastole and end-systole, a
four-chamber frame and a short-axis LGE frame, read from the DICOM files.

usage: scripts/contact_sheet.py OUT.png ARCHIVE [ARCHIVE...] [--per-dx N]

The study shown for a diagnosis is the most telling one available: clean
(no planted problems or artefacts), with LGE and long-axis views, showing the
diagnosis' LGE pattern, most severe first.  Basal LGE patterns are shown on a
basal LGE slice.

Needs /usr/bin/python3 with numpy, pydicom and PIL (Debian python3-numpy,
python3-pydicom, python3-pil)."""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from PIL import Image, ImageDraw

DX_ORDER = ["normal", "hcm", "amyloidosis", "dcm", "icm", "myocarditis",
            "sarcoidosis", "lvnc", "fabry", "arvc"]
PANEL = 200


def study_files(root):
    """Maps SeriesInstanceUID -> list of (dataset header, path)."""
    out = {}
    for dirpath, _, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                ds = pydicom.dcmread(p, stop_before_pixels=True)
            except Exception:
                continue  # planted corrupt files
            out.setdefault(str(ds.SeriesInstanceUID), []).append((ds, p))
    return out


# pydicom alone cannot decode these; DCMTK's tools (Debian dcmtk) can.
DECODERS = {"1.2.840.10008.1.2.4.70": "dcmdjpeg", "1.2.840.10008.1.2.4.57": "dcmdjpeg",
            "1.2.840.10008.1.2.4.80": "dcmdjpls", "1.2.840.10008.1.2.4.81": "dcmdjpls",
            "1.2.840.10008.1.2.5": "dcmdrle"}


def read_pixels(path):
    ds = pydicom.dcmread(path)
    geo = (np.array(ds.ImagePositionPatient, float), np.array(ds.ImageOrientationPatient, float),
           float(ds.PixelSpacing[0]))
    tool = DECODERS.get(str(ds.file_meta.TransferSyntaxUID))
    if tool:
        with tempfile.TemporaryDirectory() as td:
            out = os.path.join(td, "x.dcm")
            subprocess.run([tool, path, out], check=True)
            return pydicom.dcmread(out).pixel_array.astype(np.float32), geo
    return ds.pixel_array.astype(np.float32), geo


def to_panel(ds_path, centre, half_mm):
    a, (ipp, iop, ps) = read_pixels(ds_path)
    # Crop a square around the LV centre projected into the image plane.
    d = np.asarray(centre) - ipp
    ci, cj = d @ iop[:3] / ps, d @ iop[3:] / ps
    h = half_mm / ps
    i0, i1 = int(round(ci - h)), int(round(ci + h))
    j0, j1 = int(round(cj - h)), int(round(cj + h))
    pad = np.zeros((j1 - j0, i1 - i0), np.float32)
    ys, xs = slice(max(j0, 0), min(j1, a.shape[0])), slice(max(i0, 0), min(i1, a.shape[1]))
    pad[ys.start - j0:ys.stop - j0, xs.start - i0:xs.stop - i0] = a[ys, xs]
    a = pad
    lo, hi = np.percentile(a, 1), np.percentile(a, 99.7)
    a = np.clip((a - lo) / max(hi - lo, 1e-3), 0, 1) * 255
    im = Image.fromarray(a.astype(np.uint8))
    # Square panels, aspect preserved, letterboxed.
    scale = PANEL / max(im.size)
    im = im.resize((max(1, int(im.size[0] * scale)), max(1, int(im.size[1] * scale))), Image.BILINEAR)
    canvas = Image.new("L", (PANEL, PANEL), 0)
    canvas.paste(im, ((PANEL - im.size[0]) // 2, (PANEL - im.size[1]) // 2))
    return canvas


BASAL_LGE = ("patchy_basal_septum", "basal_inferolateral_midwall")
SEVERITY = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}


def pick(study, files):
    kinds = {}
    for s in study["series"]:
        kinds.setdefault(s["kind"], []).extend(files.get(s["uid"], []))
    sax = kinds.get("cine_sax", [])
    if not sax:
        return None
    nsl = max(int(d.AcquisitionNumber) for d, _ in sax)
    mid = int(round(0.55 * (nsl - 1))) + 1
    es = study["params"]["es_phase"]
    nph = study["protocol"]["phases"]
    by_phase = sorted([(float(d.TriggerTime), p) for d, p in sax if int(d.AcquisitionNumber) == mid])
    ed_p = by_phase[0][1]
    es_p = by_phase[min(es, len(by_phase) - 1)][1] if len(by_phase) == nph else by_phase[len(by_phase) // 3][1]
    ch4 = sorted([(float(d.TriggerTime), p) for d, p in kinds.get("cine_4ch", [])])
    lge = sorted([(int(d.AcquisitionNumber), p) for d, p in kinds.get("lge_sax", [])])
    lk = int(round(0.25 * (nsl - 1))) if study["params"]["lge_pattern"] in BASAL_LGE else mid - 1
    lge_p = lge[min(len(lge) - 1, lk)][1] if lge else None
    return [ed_p, es_p, ch4[0][1] if ch4 else None, lge_p]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("archives", nargs="+")
    ap.add_argument("--per-dx", type=int, default=1)
    a = ap.parse_args()
    studies = []
    for arc in a.archives:
        for s in json.load(open(os.path.join(arc, "truth.json")))["study_list"]:
            s["_root"] = arc
            studies.append(s)
    rows = []
    for dx in DX_ORDER:
        cands = [s for s in studies if s["diagnosis"] == dx and not s["problems"]
                 and s["protocol"]["has_lge"] and s["protocol"]["has_lax"]
                 and not s["protocol"]["arrhythmia"] and not s["protocol"]["motion_artefact"]]
        cands.sort(key=lambda s: (s["params"]["lge_pattern"] == "none" and dx not in ("normal", "lvnc"),
                                  -SEVERITY[s["severity"]]))
        for s in cands[:a.per_dx]:
            files = study_files(os.path.join(s["_root"], s["dir"]))
            paths = pick(s, files)
            if paths:
                rows.append((s, paths))
    if not rows:
        print("contact_sheet: no complete studies in archive", file=sys.stderr)
        return 1
    label_w, head_h = 190, 22
    W = label_w + 4 * PANEL
    H = head_h + len(rows) * PANEL
    sheet = Image.new("L", (W, H), 0)
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(["SAX mid ED", "SAX mid ES", "4CH ED", "LGE SAX mid"]):
        draw.text((label_w + i * PANEL + 6, 5), t, fill=255)
    for r, (s, paths) in enumerate(rows):
        y = head_h + r * PANEL
        p = s["params"]
        lines = [s["diagnosis"].upper(), s["severity"],
                 "LVEF %d%%  RVEF %d%%" % (round(p["lvef"] * 100), round(p["rvef"] * 100)),
                 "max wall %.0f mm" % p["max_wall_mm"], "LGE: %s" % p["lge_pattern"],
                 "%s %s %.1fT" % (s["site"], s["vendor"], s["field_strength"]),
                 "LGE %s" % s["protocol"]["lge"]]
        if p["territory"]:
            lines.insert(5, "territory %s" % p["territory"])
        for k, line in enumerate(lines):
            draw.text((6, y + 8 + 14 * k), line[:30], fill=255)
        for c, path in enumerate(paths):
            if path:
                sheet.paste(to_panel(path, p["lv_center"], 95 if c == 2 else 70), (label_w + c * PANEL, y))
    sheet.save(a.out, optimize=True)
    print("contact_sheet: wrote %s (%d rows)" % (a.out, len(rows)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
