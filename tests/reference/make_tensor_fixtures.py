#!/usr/bin/python3
"""Writes tests/fixtures/tensor/: what the numpy reference (tensor_reference.py)
computes for the cases tests/test_tensor.c runs through the C builder.

    /usr/bin/python3 tests/reference/make_tensor_fixtures.py [--real DIR]

Synthetic inputs are not stored: both sides generate them from seeds with the
same counter-based generator (splitmix64 of seed + (i+1) * golden gamma), so
the fixtures hold only expected results.  Grey images are stored in 8-bit
space as little-endian uint16, round(grey * 128) (resolution 1/256 grey level);
8-bit images as FNV-1a 64 digests.  The real study (Sunnybrook, from
../shared/data/real) is left out when that folder is absent.
"""

import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import tensor_reference as ref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "tensor")

GAMMA = np.uint64(0x9E3779B97F4A7C15)


def noise(seed, n):
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + np.arange(1, n + 1, dtype=np.uint64) * GAMMA
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def image(seed, rows, cols, kind):
    """The synthetic image test_tensor.c makes from the same arguments."""
    z = noise(seed, rows * cols).reshape(rows, cols)
    if kind == "int12":
        return (z >> np.uint64(52)).astype(np.float32)
    if kind == "signed":
        return ((z >> np.uint64(52)).astype(np.int64) - 2048).astype(np.float32)
    if kind == "float":
        return ((z >> np.uint64(52)).astype(np.float64) * 0.37 + 11.5).astype(np.float32)
    if kind == "wide":  # integers beyond 16 bits: the C side's generic path
        return ((z >> np.uint64(44)).astype(np.int64) - 300000).astype(np.float32)
    if kind == "const":
        return np.full((rows, cols), 700.0, dtype=np.float32)
    if kind == "u8":
        return (z >> np.uint64(56)).astype(np.uint8)
    raise ValueError(kind)


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in bytes(data):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def path_seed(path, frame):
    return (fnv1a64(path.encode()) + frame) & 0xFFFFFFFFFFFFFFFF


def write_grey(name, greys):
    """greys: list of 2-D arrays in 8-bit space."""
    a = np.stack([np.asarray(g, dtype=np.float64) for g in greys])
    q = np.round(a * 128.0)
    assert q.min() >= 0 and q.max() <= 65535, (q.min(), q.max())
    q.astype("<u2").tofile(os.path.join(OUT, name))
    return name


def spec_of(frames, size, resize, channels=3, cine_frames=30, lge_frames=0):
    s = dict(ref.CMRCLIP_SPEC)
    s.update(frames=frames, size=size, resize=resize, channels=channels, cine_frames=cine_frames,
             recipe="cine+lge" if lge_frames else "cmrclip", lge_frames=lge_frames)
    return s


# ---- unit cases --------------------------------------------------------------------------------------

def sampling_cases():
    cases = []
    for frames in (64, 16, 7, 1):
        for n in (1, 5, 7, 15, 16, 17, 30, 60, 63, 64, 65, 100, 104, 108, 112, 116, 120, 129, 1000):
            cases.append(dict(n=n, frames=frames, idx=ref.sample_segments(n, frames),
                              part=ref.sample_part(n, frames)))
    return cases


def window_cases():
    defs = [
        ("int12", [(192, 156), (256, 256), (128, 160)]),
        ("float", [(97, 61), (64, 64)]),
        ("signed", [(128, 128)]),
        ("const", [(32, 32)]),
        ("int12", [(10, 10)]),
        ("int12", [(10, 30)]),
        ("int12", [(25, 40)]),
        ("int12", [(8, 125)]),
        ("float", [(1, 1)]),
        ("int12", [(20, 10), (3, 7)]),
        ("wide", [(64, 48), (33, 17)]),
    ]
    cases = []
    for k, (kind, sizes) in enumerate(defs):
        imgs = [image(1000 + 10 * k + i, r, c, kind) for i, (r, c) in enumerate(sizes)]
        lo, hi = ref.window(imgs)
        eight = b"".join(ref.to_8bit(a, lo, hi).tobytes() for a in imgs)
        cases.append(dict(kind=kind, seeds=[1000 + 10 * k + i for i in range(len(sizes))],
                          sizes=[list(s) for s in sizes], lo=lo, hi=hi, digest="%016x" % fnv1a64(eight),
                          sum8=int(np.frombuffer(eight, dtype=np.uint8).sum(dtype=np.int64))))
    return cases


def geometry_cases():
    cases = []
    for rows, cols, resize in ((192, 156, 256), (156, 192, 256), (256, 256, 256), (300, 517, 256), (517, 300, 256),
                               (97, 61, 64), (128, 160, 64), (256, 259, 256), (256, 261, 256), (263, 256, 256),
                               (1, 5, 4), (7, 3, 20), (512, 384, 256), (208, 256, 256)):
        r1, c1, top, left = ref.resize_geometry(rows, cols, resize)
        cases.append(dict(rows=rows, cols=cols, resize=resize, rows1=r1, cols1=c1, top=top, left=left))
    return cases


def resample_cases():
    cases = []
    for k, (rows, cols, resize, size) in enumerate(((192, 156, 256, 224), (300, 517, 256, 224), (256, 256, 64, 56),
                                                   (128, 160, 64, 56), (97, 61, 64, 56), (40, 30, 64, 56),
                                                   (256, 208, 40, 32))):
        seed = 2000 + k
        g = ref.frame_grey(image(seed, rows, cols, "u8"), resize, size)
        name = write_grey("resample_%d.u16" % k, [g])
        cases.append(dict(seed=seed, rows=rows, cols=cols, resize=resize, size=size, file=name))
    return cases


def source_cases():
    """Layer 1: groups of in-memory images and a source video of (group, image) or black."""
    group_defs = [("int12", [(192, 156)] * 5), ("float", [(97, 61)] * 3), ("signed", [(128, 160), (64, 64)])]
    cases = []
    for k, (frames_n, spec) in enumerate(((40, spec_of(16, 32, 40)), (12, spec_of(16, 32, 40, channels=1)),
                                          (23, spec_of(64, 24, 28)))):
        rng = np.random.default_rng(77 + k)
        groups, gdesc = [], []
        for g, (kind, sizes) in enumerate(group_defs):
            seeds = [3000 + 100 * k + 10 * g + i for i in range(len(sizes))]
            groups.append([image(s, r, c, kind) for s, (r, c) in zip(seeds, sizes)])
            gdesc.append(dict(kind=kind, seeds=seeds, sizes=[list(s) for s in sizes]))
        frames = []
        for _ in range(frames_n):
            g = int(rng.integers(-1, len(groups)))
            frames.append(None if g < 0 else (g, int(rng.integers(0, len(groups[g])))))
        t, windows, greys = ref.tensor_from_source(groups, frames, spec)
        idx = ref.sample_segments(len(frames), spec["frames"])
        shown = [greys[j] for j, k in enumerate(idx) if frames[k] is not None]
        name = write_grey("source_%d.u16" % k, shown)
        cases.append(dict(spec=spec, groups=gdesc, frames=[[-1, 0] if f is None else list(f) for f in frames],
                          windows=[list(w) for w in windows], n_shown=len(shown), file=name))
    return cases


# ---- synthetic studies (layer 2, with an in-memory pixel reader) ---------------------------------------

def fake_series(number, label, kind, rows, cols, normal, thickness, positions, phases, multiframe=False,
                seq_reverse=False):
    """positions: one per slice (3 floats); phases: images per slice."""
    images = []
    n = 0
    for s, pos in enumerate(positions):
        for p in range(phases):
            path = "fake/s%d/%s" % (number, "cine" if multiframe else "i%d" % n)
            images.append(dict(path=path, frame=n if multiframe else 0, position=list(pos), slice=s, phase=p, seq=n))
            n += 1
    if seq_reverse:  # acquisition order opposite to phase order within each slice
        for s in range(len(positions)):
            run = [im for im in images if im["slice"] == s]
            for im, q in zip(run, reversed([im["seq"] for im in run])):
                im["seq"] = q
    return dict(number=number, label=label, kind=kind, rows=rows, cols=cols, normal=normal, thickness=thickness,
                images=images)


def to_reference(desc):
    """The study description as tensor_reference.study_tensor takes it."""
    out = []
    for s in desc["series"]:
        n_sl = max(im["slice"] for im in s["images"]) + 1
        slices = [[] for _ in range(n_sl)]
        for im in s["images"]:
            seed = path_seed(im["path"], im["frame"])
            slices[im["slice"]].append(dict(
                seq=im["seq"], position=im["position"], id="%s#%d" % (im["path"], im["frame"]),
                pixels=(lambda seed=seed, r=s["rows"], c=s["cols"], k=s["kind"]: image(seed, r, c, k))))
        out.append(dict(label=s["label"], number=s["number"], normal=s["normal"], thickness=s["thickness"],
                        slices=slices))
    return out


def study_cases():
    sax_n = [0.0, 0.6, 0.8]
    lax_n = [1.0, 0.0, 0.0]
    two_n = [0.0, 0.8, -0.6]

    def along(nrm, d):
        return [50.0 + nrm[0] * d, -20.0 + nrm[1] * d, 10.0 + nrm[2] * d]

    rich = []
    # cine: no 4-chamber; two 2-chamber series (the one with more images wins); a 3-chamber
    rich.append(fake_series(3, "cine_2ch", "int12", 96, 80, two_n, 8.0, [along(two_n, 0)], 25, multiframe=True))
    rich.append(fake_series(4, "cine_2ch", "int12", 96, 80, two_n, 8.0, [along(two_n, 0)], 20))
    rich.append(fake_series(5, "cine_3ch", "int12", 80, 96, lax_n, 8.0, [along(lax_n, 0)], 25))
    # cine SAX, one series per slice, out of order, one location acquired twice
    locs = [3, 0, 5, 1, 4, 2, 6, 7]
    for k, loc in enumerate(locs):
        rich.append(fake_series(10 + k, "cine_sax", "int12", 72, 88, sax_n, 8.0, [along(sax_n, 10.0 * loc)], 20))
    rich.append(fake_series(30, "cine_sax", "int12", 72, 88, sax_n, 8.0, [along(sax_n, 10.0 * 4 + 0.3)], 20))
    # an ignored series
    rich.append(fake_series(40, "other", "int12", 64, 64, sax_n, 8.0, [along(sax_n, 0)], 3))
    # LGE SAX: 11 slices of two images (TIs) each, acquisition order reversed; fractional values
    rich.append(fake_series(50, "lge_sax", "float", 88, 72, sax_n, 8.0,
                            [along(sax_n, 8.0 * k) for k in range(11)], 2, seq_reverse=True))
    # LGE 4-chamber: one image; LGE 2-chamber: three slices, the middle one's first image; no 3-chamber
    rich.append(fake_series(51, "lge_4ch", "signed", 64, 100, lax_n, 8.0, [along(lax_n, 0)], 1))
    rich.append(fake_series(52, "lge_2ch", "int12", 100, 64, two_n, 8.0,
                            [along(two_n, -8), along(two_n, 0), along(two_n, 8)], 2, seq_reverse=True))

    sparse = [fake_series(7, "cine_sax", "int12", 96, 80, sax_n, 8.0, [along(sax_n, 9.0 * k) for k in range(9)], 35)]

    lax_only = [fake_series(8, "cine_4ch", "signed", 80, 80, lax_n, 0.0, [along(lax_n, 0)], 18),
                fake_series(9, "lge_3ch", "int12", 80, 80, lax_n, 0.0, [along(lax_n, 0)], 1)]

    cases = []
    first_case = {}  # id(series list) -> the first case that describes it
    for k, (series, spec) in enumerate(((rich, spec_of(64, 16, 20)), (sparse, spec_of(64, 16, 20)),
                                        (lax_only, spec_of(32, 12, 14, cine_frames=12)),
                                        (rich, spec_of(16, 16, 20, lge_frames=8)),
                                        (sparse, spec_of(16, 16, 20, lge_frames=6)),
                                        (lax_only, spec_of(12, 12, 14, cine_frames=12, lge_frames=5)),
                                        (rich, spec_of(48, 12, 14, lge_frames=24)))):
        desc = dict(series=series)
        t, info = ref.study_tensor(to_reference(desc), spec)
        shown = [g for g, tr in zip(info["grey"], info["trace"]) if tr is not None and tr["image"] is not None]
        name = write_grey("study_%d.u16" % k, shown)
        # a study seen before is named by its first case, to keep the manifest small
        study = desc if id(series) not in first_case else dict(same_as=first_case[id(series)])
        first_case.setdefault(id(series), k)
        cases.append(dict(spec=spec, study=study, file=name, n_shown=len(shown),
                          source_frames=info["source_frames"], n_sax=info["n_sax"],
                          windows={s: list(w) for s, w in info["windows"].items()},
                          views_used=info["views_used"], views_missing=info["views_missing"],
                          series=info["series"], trace=info["trace"]))
    return cases


# ---- the real study --------------------------------------------------------------------------------------

def sunnybrook_case(real):
    folder = os.path.join(real, "sunnybrook-SCD0000101")
    if not os.path.isdir(folder):
        print("no %s: the real-study fixture is left out" % folder, file=sys.stderr)
        return None
    series = ref.load_dicom_series(folder)
    assert len(series) == 1
    for s in series.values():
        s["label"] = "cine_sax"  # the stack is the study's cine SAX (no long-axis views)
    spec = dict(ref.CMRCLIP_SPEC)
    t, info = ref.study_tensor(series, spec)
    shown = [j for j, tr in enumerate(info["trace"]) if tr is not None and tr["image"] is not None]
    # full frames: a few distinct images; sparse grid: every frame
    full, seen = [], set()
    for j in shown:
        if info["trace"][j]["image"] not in seen and len(full) < 5:
            seen.add(info["trace"][j]["image"])
            full.append(j)
    full_name = write_grey("sunnybrook_full.u16", [info["grey"][j] for j in full])
    step, start = 8, 3
    grid = [info["grey"][j][start::step, start::step] if info["grey"][j] is not None else
            np.zeros((len(range(start, spec["size"], step)),) * 2) for j in range(spec["frames"])]
    grid_name = write_grey("sunnybrook_grid.u16", grid)
    s0 = next(iter(series.values()))
    return dict(folder="sunnybrook-SCD0000101", spec=spec, n_slices=len(s0["slices"]),
                source_frames=info["source_frames"], windows={k: list(v) for k, v in info["windows"].items()},
                trace=info["trace"], full_frames=full, full_file=full_name, grid_start=start, grid_step=step,
                grid_file=grid_name, views_used=info["views_used"], views_missing=info["views_missing"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", default=os.path.join(os.path.dirname(ROOT), "shared", "data", "real"))
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".u16"):
            os.remove(os.path.join(OUT, f))
    manifest = dict(
        about="Expected results of tests/reference/tensor_reference.py; written by make_tensor_fixtures.py",
        numpy=np.__version__,
        sampling=sampling_cases(),
        window=window_cases(),
        geometry=geometry_cases(),
        resample=resample_cases(),
        source=source_cases(),
        study=study_cases(),
    )
    sb = sunnybrook_case(args.real)
    if sb:
        manifest["sunnybrook"] = sb
    with open(os.path.join(OUT, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, x)) for x in os.listdir(OUT))
    print("wrote %s (%d bytes)" % (OUT, total))


if __name__ == "__main__":
    main()
