"""Study -> model input tensor, the numpy reference.

An independent implementation of docs/model-input.md with numpy (and
pydicom for reading files) only: the C builder (indexer/tensor.c,
indexer/window.c) is tested against fixtures this module computes.  It is
written from the definitions, not from the C code, and favours the obvious
form over the fast one: percentiles by np.percentile, resizing by dense
weight matrices applied in two steps (the C code folds both resizes and the
crop into one operator per axis and never sorts).

Importable (for benchmarks): study_tensor(series_dict, spec) builds the tensor
of a study described as plain Python data; load_dicom_series(folder) reads a
folder of DICOM files into that form.  Needs python3-numpy (>= 1.22, for
method='inverted_cdf') and, for DICOM, python3-pydicom: use /usr/bin/python3.
"""

import math

import numpy as np

LO_PCT = 1.0
HI_PCT = 99.5
DEFAULT_LGE_SLICES = 10  # n_SAX when a study has no LGE SAX stack

CMRCLIP_SPEC = dict(frames=64, size=224, resize=256, channels=3, cine_frames=30,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))

SLOTS = ("cine_lax", "cine_sax", "lge_sax", "lge_4ch", "lge_2ch", "lge_3ch")
CINE_LAX_PREFERENCE = ("cine_4ch", "cine_2ch", "cine_3ch")
LGE_LAX_ORDER = ("lge_4ch", "lge_2ch", "lge_3ch")  # CMRCLIP's lge_lax, lge_2ch, lge_3ch
PARALLEL_COS = math.cos(math.radians(5.0))


# ---- 8-bit window ---------------------------------------------------------------------------

def window(images):
    """lo, hi of a series: inverted-CDF percentiles over all values of its images."""
    v = np.concatenate([np.asarray(a, dtype=np.float32).ravel() for a in images])
    lo = np.percentile(v, LO_PCT, method="inverted_cdf")
    hi = np.percentile(v, HI_PCT, method="inverted_cdf")
    return float(lo), float(hi)


def to_8bit(img, lo, hi):
    """round-half-up(clip((v - lo) / (hi - lo), 0, 1) * 255) in float64; all 0 when hi <= lo."""
    x = np.asarray(img, dtype=np.float32).astype(np.float64)
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.uint8)
    t = np.clip((x - lo) / (hi - lo), 0.0, 1.0)
    return np.floor(t * 255.0 + 0.5).astype(np.uint8)


# ---- sampling -------------------------------------------------------------------------------

def sample_segments(n, frames):
    """Frozen-in-Time's test-time 'uniform' sampling: each segment's middle frame."""
    k = min(n, frames)
    if k == 0:
        return []
    bounds = np.linspace(start=0, stop=n, num=k + 1).astype(int)
    return [int((bounds[j] + bounds[j + 1] - 1) // 2) for j in range(k)]


def sample_part(n, frames):
    """One part of the "cine+lge" recipe (ours): the segment sampling when the
    part has enough frames, else frame j shows source j * n // frames."""
    if n >= frames:
        return sample_segments(n, frames)
    return [(j * n) // frames for j in range(frames)] if n else []


def recipe_indices(spec, n_source, n_cine):
    """The sampled source frames: one sequence (CMR-CLIP), or the cines
    (the first n_cine source frames) and the LGE views sampled apart."""
    if spec.get("recipe", "cmrclip") == "cmrclip":
        return sample_segments(n_source, spec["frames"])
    g = spec["lge_frames"]
    return (sample_part(n_cine, spec["frames"] - g) +
            [n_cine + k for k in sample_part(n_source - n_cine, g)])


def cine_phase(i, p, c):
    return (i * p) // c


# ---- spatial --------------------------------------------------------------------------------

def aa_matrix(n_in, n_out):
    """Antialiased bilinear resize n_in -> n_out as a dense (n_out, n_in) matrix:
    a triangle filter whose support grows with the downscale factor, weights
    normalised per output sample (PIL / torchvision antialias=True)."""
    scale = n_in / n_out
    support = scale if scale >= 1.0 else 1.0
    inv = 1.0 / scale if scale >= 1.0 else 1.0
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = scale * (i + 0.5)
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        j = np.arange(xmin, xmax, dtype=np.float64)
        w = np.maximum(0.0, 1.0 - np.abs((j - center + 0.5) * inv))
        if w.sum() != 0:
            w = w / w.sum()
        m[i, xmin:xmax] = w
    return m


def resize_geometry(rows, cols, resize):
    """Size after Resize(resize) (shorter side to resize, the other truncated)
    and CenterCrop(resize) offsets (Python round: half to even)."""
    if cols <= rows:
        c1, r1 = resize, int(resize * rows / cols)
    else:
        r1, c1 = resize, int(resize * cols / rows)
    top = int(round((r1 - resize) / 2.0))
    left = int(round((c1 - resize) / 2.0))
    return r1, c1, top, left


def frame_grey(img8, resize, size):
    """8-bit image -> resize, centre crop, resize: grey levels (float64, 0..255)."""
    x = np.asarray(img8, dtype=np.float64)
    rows, cols = x.shape
    r1, c1, top, left = resize_geometry(rows, cols, resize)
    x = aa_matrix(rows, r1) @ x @ aa_matrix(cols, c1).T
    x = x[top:top + resize, left:left + resize]
    m = aa_matrix(resize, size)
    return m @ x @ m.T


def normalise(grey, spec):
    ch = spec["channels"]
    return np.stack([(grey / 255.0 - spec["mean"][c]) / spec["std"][c] for c in range(ch)])


# ---- frames in memory -> tensor ------------------------------------------------------------------

def tensor_from_source(groups, frames, spec, idx=None):
    """groups: list of lists of 2-D arrays (images windowed together; an entry
    may be a zero-argument callable returning the array, or None when no
    sampled frame shows it); frames: the source video, each entry (group,
    image) or None for a black frame.  Returns (tensor [F, C, S, S] float32,
    windows [(lo, hi) per group], grey [F, S, S] in 8-bit space or None per frame).
    idx: the sampled source frames; None: sample_segments over all."""
    F, S = spec["frames"], spec["size"]
    if idx is None:
        idx = sample_segments(len(frames), F)
    shown = [sorted({frames[k][1] for k in idx if frames[k] is not None and frames[k][0] == g})
             for g in range(len(groups))]
    pixels = {}
    for g, images in enumerate(groups):
        for i in shown[g]:
            a = images[i]() if callable(images[i]) else images[i]
            # float pixel data may hold NaN or infinities
            fmax = float(np.finfo(np.float32).max)
            pixels[g, i] = np.nan_to_num(np.asarray(a, dtype=np.float32), nan=0.0, posinf=fmax, neginf=-fmax)
    windows = [window([pixels[g, i] for i in shown[g]]) if shown[g] else (0.0, 0.0)
               for g in range(len(groups))]
    out = np.zeros((F, spec["channels"], S, S), dtype=np.float32)
    greys = [None] * F
    cache = {}
    for j, k in enumerate(idx):
        fr = frames[k]
        if fr is None:
            grey = np.zeros((S, S))
        else:
            if fr not in cache:
                lo, hi = windows[fr[0]]
                cache[fr] = frame_grey(to_8bit(pixels[fr], lo, hi), spec["resize"], S)
            grey = cache[fr]
        greys[j] = grey
        out[j] = normalise(grey, spec)
    # frames past the video stay 0: CMR-CLIP pads after normalisation
    return out, windows, greys


# ---- study -> tensor -------------------------------------------------------------------------------
#
# A series is a dict:
#   label      'cine_sax', 'cine_2ch', 'cine_3ch', 'cine_4ch', 'lge_sax',
#              'lge_2ch', 'lge_3ch', 'lge_4ch' or anything else (ignored)
#   number     Series Number (int)
#   normal     unit slice normal (3 floats), None without geometry
#   thickness  slice thickness in mm (0 unknown)
#   slices     list of slices along the normal (increasing position), each a
#              list of images in phase order; an image is a dict with
#              'seq' (acquisition order), 'position' (3 floats), 'pixels'
#              (2-D array or zero-argument callable) and optionally 'id'.
# series_dict maps a key (e.g. Series Instance UID) to a series, in study
# order; a list of series is accepted too.

def _rank(s):
    return (len(s["slices"]), sum(len(sl) for sl in s["slices"]), s["number"])


def _pick(series, label):
    best = None
    for s in series:
        if s["label"] == label and any(s["slices"]) and (best is None or _rank(s) > _rank(best)):
            best = s
    return best


def _stack(series, label):
    """(chosen series, list of slices): the best series, or an assembled stack
    of single-slice series along the best one's normal."""
    best = _pick(series, label)
    if best is None:
        return None, []
    if len(best["slices"]) >= 2 or best["normal"] is None:
        return best, best["slices"]
    n = np.asarray(best["normal"], dtype=np.float64)
    members = []
    for order, s in enumerate(series):
        if s["label"] != label or not any(s["slices"]) or s["normal"] is None:
            continue
        if abs(float(np.dot(np.asarray(s["normal"], dtype=np.float64), n))) < PARALLEL_COS:
            continue
        members.append((float(np.dot(np.asarray(s["slices"][0][0]["position"], dtype=np.float64), n)), order, s))
    if len(members) < 2:
        return best, best["slices"]
    members.sort(key=lambda m: (m[0], m[1]))
    tol = best["thickness"] / 10 if best["thickness"] > 0 else 0.5
    slices = []
    i = 0
    while i < len(members):
        rep = members[i][2]
        j = i + 1
        while j < len(members) and members[j][0] - members[i][0] <= tol:
            if _rank(members[j][2]) > _rank(rep):
                rep = members[j][2]
            j += 1
        slices.append(rep["slices"][0])
        i = j
    return best, slices


def _first_acquired(sl):
    best = sl[0]
    for im in sl[1:]:
        if im["seq"] < best["seq"]:
            best = im
    return best


def study_tensor(series_dict, spec=None):
    """Returns (tensor [F, C, S, S] float32, info dict).  Raises ValueError for
    a study without any cine series."""
    spec = spec or CMRCLIP_SPEC
    series = list(series_dict.values()) if isinstance(series_dict, dict) else list(series_dict)
    chosen = {}
    lax_label = None
    for label in CINE_LAX_PREFERENCE:
        s = _pick(series, label)
        if s is not None:
            chosen["cine_lax"] = (s, s["slices"])
            lax_label = label
            break
    for slot, label in (("cine_sax", "cine_sax"), ("lge_sax", "lge_sax")):
        s, sl = _stack(series, label)
        if s is not None:
            chosen[slot] = (s, sl)
    for slot in LGE_LAX_ORDER:
        s = _pick(series, slot)
        if s is not None:
            chosen[slot] = (s, s["slices"])
    if "cine_lax" not in chosen and "cine_sax" not in chosen:
        raise ValueError("no cine series (short-axis, 4-, 2- or 3-chamber) to build the model input from")

    C = spec["cine_frames"]
    n_sax = len(chosen["lge_sax"][1]) if "lge_sax" in chosen else DEFAULT_LGE_SLICES
    # CMR-CLIP repeats each LGE long-axis view n_SAX times; "cine+lge" shows it once
    lax_repeat = n_sax if spec.get("recipe", "cmrclip") == "cmrclip" else 1
    seq = []  # (slot, image dict or None)
    for slot in ("cine_lax", "cine_sax"):
        if slot in chosen:
            sl = chosen[slot][1]
            mid = sl[len(sl) // 2]
            seq += [(slot, mid[cine_phase(i, len(mid), C)]) for i in range(C)]
        else:
            seq += [(slot, None)] * C
    if "lge_sax" in chosen:
        seq += [("lge_sax", _first_acquired(sl)) for sl in chosen["lge_sax"][1]]
    else:
        seq += [("lge_sax", None)] * n_sax
    for slot in LGE_LAX_ORDER:
        if slot in chosen:
            sl = chosen[slot][1]
            seq += [(slot, _first_acquired(sl[len(sl) // 2]))] * lax_repeat
        else:
            seq += [(slot, None)] * lax_repeat

    # groups: one per slot, the distinct images of the slot (by identity)
    groups = [[] for _ in SLOTS]
    where = {}
    frames = []
    for slot, im in seq:
        if im is None:
            frames.append(None)
            continue
        g = SLOTS.index(slot)
        key = id(im)
        if key not in where:
            where[key] = (g, len(groups[g]))
            groups[g].append(im["pixels"])
        frames.append(where[key])
    idx = recipe_indices(spec, len(seq), 2 * C)
    tensor, windows, greys = tensor_from_source(groups, frames, spec, idx)

    trace = []
    for j in range(spec["frames"]):
        if j >= len(idx):
            trace.append(None)
        else:
            slot, im = seq[idx[j]]
            trace.append({"slot": slot, "source": idx[j], "image": None if im is None else im.get("id")})
    missing, gaps = [], []
    if "cine_lax" not in chosen:
        missing += ["cine_4ch", "cine_2ch", "cine_3ch"]
        gaps.append("no cine LAX")
    elif lax_label != "cine_4ch":
        gaps.append("cine LAX from %s" % lax_label)
    if "cine_sax" not in chosen:
        missing.append("cine_sax")
        gaps.append("no cine SAX")
    if "lge_sax" not in chosen:
        missing.append("lge_sax")
        gaps.append("no LGE SAX")
    for slot in LGE_LAX_ORDER:
        if slot not in chosen:
            missing.append(slot)
            gaps.append("no %s" % slot)
    shown_slots = {SLOTS[frames[k][0]] for k in idx if frames[k] is not None}
    used = sorted(chosen[slot][0]["label"] for slot in shown_slots)
    info = {
        "source_frames": len(seq),
        "n_sax": n_sax,
        "windows": {SLOTS[g]: windows[g] for g in range(len(SLOTS))},
        "views_used": used,
        "views_missing": missing,
        "gaps": gaps,
        "trace": trace,
        "grey": greys,
        "series": {slot: chosen[slot][0]["number"] for slot in chosen},
    }
    return tensor, info


# ---- DICOM ----------------------------------------------------------------------------------------

def dicom_pixels(ds):
    """All frames of a greyscale object as float32 after the modality rescale."""
    a = ds.pixel_array
    frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    a = a.reshape((frames, int(ds.Rows), int(ds.Columns))).astype(np.int64)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        bits = int(ds.BitsStored)
        a = (-1 - a) if int(getattr(ds, "PixelRepresentation", 0)) == 1 else ((1 << bits) - 1) - a
    slope = float(getattr(ds, "RescaleSlope", 1) or 1)
    icpt = float(getattr(ds, "RescaleIntercept", 0) or 0)
    return (a.astype(np.float64) * slope + icpt).astype(np.float32)


def load_dicom_series(folder, labels=None):
    """Every single-frame image series of a folder, ordered as the scanner
    orders it: slices by position along the normal (row x column direction),
    positions closer than a tenth of the slice thickness merged; images of a
    slice by trigger time, then instance number.  Pixels are read lazily.
    labels: optional {SeriesInstanceUID or SeriesNumber: label}."""
    import os
    import warnings

    import pydicom

    # Archives hold UIDs that are not strictly valid (leading zeros); they still identify.
    warnings.filterwarnings("ignore", message="Invalid value for VR UI")

    by_series = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:
            continue
        if "ImagePositionPatient" not in ds:
            continue
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    out = {}
    for uid, items in by_series.items():
        ds0 = items[0][1]
        o = np.asarray([float(x) for x in ds0.ImageOrientationPatient])
        n = np.cross(o[:3], o[3:])
        n = n / np.linalg.norm(n)
        thick = float(getattr(ds0, "SliceThickness", 0) or 0)
        recs = []
        for path, ds in items:
            pos = [float(x) for x in ds.ImagePositionPatient]
            recs.append(dict(path=path, position=pos, coord=float(np.dot(pos, n)),
                             trigger=float(getattr(ds, "TriggerTime", -1) or -1),
                             instance=int(getattr(ds, "InstanceNumber", 0) or 0)))
        coords = sorted(r["coord"] for r in recs)
        tol = thick / 10 if thick > 0 else 0.5
        uniq = []
        for c in coords:
            if not uniq or c - uniq[-1] > tol:
                uniq.append(c)
        for r in recs:
            r["slice"] = min(range(len(uniq)), key=lambda k: (abs(uniq[k] - r["coord"]), k))
        recs.sort(key=lambda r: (r["slice"], r["trigger"], r["instance"]))
        slices = [[] for _ in uniq]
        for seqno, r in enumerate(sorted(recs, key=lambda r: (r["instance"], r["path"]))):
            r["seq"] = seqno
        for r in recs:
            p = r["path"]
            slices[r["slice"]].append(dict(seq=r["seq"], position=r["position"], id=os.path.basename(p),
                                           pixels=(lambda p=p: dicom_pixels(pydicom.dcmread(p))[0])))
        number = int(getattr(ds0, "SeriesNumber", 0) or 0)
        label = "other"
        if labels:
            label = labels.get(uid, labels.get(number, "other"))
        out[uid] = dict(label=label, number=number, normal=n.tolist(), thickness=thick,
                        slices=[s for s in slices if s])
    return out
