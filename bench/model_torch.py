#!/usr/bin/python3
"""The PyTorch side of the encoder benchmark (bench/model_bench.sh).

  model_torch.py make DIR          write a full-size random CMR-CLIP in our model
                                   format (model.json, weights.safetensors F32,
                                   vocab.txt) plus the inputs both sides run:
                                   video.f32 [64,3,224,224], ids64.i32, ids256.i32
  model_torch.py run DIR [--threads 2] [--repeat 3] [--json]
                                   time the PyTorch 1.13 reference
                                   (tests/reference/cmrclip_torch.py) on them

Needs Debian's python3-torch and python3-numpy (run with /usr/bin/python3).
The weights are normal(0, 0.02) as in ViT/BERT initialisation, LayerNorm
weights 1: realistic magnitudes, so that no path short-circuits.
"""
import argparse
import json
import os
import resource
import statistics
import struct
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))

CONFIG = {
    "format": "cmrsearch-model", "format_version": 1, "name": "cmrclip-bench-random",
    "architecture": "cmrclip", "weights": "weights.safetensors", "vocab": "vocab.txt",
    "embed_dim": 512, "temperature": 0.05,
    "video": {"dim": 768, "depth": 12, "heads": 12, "mlp_dim": 3072, "patch": 16,
              "image_size": 224, "channels": 3, "num_frames": 64, "ln_eps": 1e-6},
    "text": {"vocab_size": 28996, "hidden": 768, "layers": 12, "heads": 12,
             "intermediate": 3072, "max_position": 512, "type_vocab": 2,
             "ln_eps": 1e-12, "do_lower_case": False, "strip_accents": None,
             "tokenize_chinese_chars": True},
    "input": {"recipe": "cmrclip"},
}


def build(torch):
    import cmrclip_torch
    return cmrclip_torch.CMRCLIP(CONFIG)


def make(d):
    import torch
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(20261127)
    with torch.no_grad():
        sd = build(torch).state_dict()
    header, blobs, off = {}, [], 0
    for name, t in sd.items():
        shape = list(t.shape)
        if t.dtype == torch.int64:
            arr = np.arange(shape[-1], dtype=np.int64).reshape(shape)
            dtype = "I64"
        elif "LayerNorm.weight" in name or name.endswith(("norm1.weight", "norm2.weight",
                                                           "norm3.weight", "norm.weight")):
            arr, dtype = np.ones(shape, np.float32), "F32"
        else:
            arr = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
            dtype = "F32"
        b = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(d, "weights.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(CONFIG, f, indent=2)
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        for i in range(CONFIG["text"]["vocab_size"]):
            f.write((specials[i] if i < len(specials) else f"tok{i}") + "\n")
    rng.standard_normal((64, 3, 224, 224), dtype=np.float32).tofile(os.path.join(d, "video.f32"))
    for n in (64, 256):
        ids = rng.integers(5, CONFIG["text"]["vocab_size"], n).astype(np.int32)
        ids[0], ids[-1] = 2, 3
        ids.tofile(os.path.join(d, f"ids{n}.i32"))


def load(torch, d):
    model = build(torch)
    with open(os.path.join(d, "weights.safetensors"), "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
    raw = np.memmap(os.path.join(d, "weights.safetensors"), dtype=np.uint8, mode="r", offset=8 + n)
    sd = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        b, e = spec["data_offsets"]
        dt = np.float32 if spec["dtype"] == "F32" else np.int64
        sd[name] = torch.from_numpy(np.array(raw[b:e]).view(dt).reshape(spec["shape"]))
    model.load_state_dict(sd)
    return model.eval()


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run(d, threads, repeat, as_json):
    import torch
    torch.set_num_threads(threads)
    model = load(torch, d)
    video = torch.from_numpy(np.fromfile(os.path.join(d, "video.f32"), np.float32).reshape(1, 64, 3, 224, 224))
    out = {"threads": threads, "torch": torch.__version__}
    with torch.no_grad():
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            e = model.compute_video(video)
            times.append(time.perf_counter() - t0)
        e = torch.nn.functional.normalize(e, dim=-1)[0].numpy()
        e.astype(np.float32).tofile(os.path.join(d, "torch_video_embed.f32"))
        out["video_s"] = times
        out["video_median_s"] = statistics.median(times)
        for n in (64, 256):
            ids = torch.from_numpy(np.fromfile(os.path.join(d, f"ids{n}.i32"), np.int32).astype(np.int64))[None]
            mask = torch.ones_like(ids)
            model.compute_text(ids, mask)  # warm-up
            tt = []
            for _ in range(20):
                t0 = time.perf_counter()
                model.compute_text(ids, mask)
                tt.append(time.perf_counter() - t0)
            out[f"text{n}_median_ms"] = 1000 * statistics.median(tt)
    out["peak_rss_mb"] = peak_rss_mb()
    if as_json:
        print(json.dumps(out))
    else:
        print(f"torch {out['torch']}, {threads} threads: video {out['video_median_s']:.2f} s/study "
              f"(runs {', '.join(f'{t:.2f}' for t in times)}), text 64 tokens {out['text64_median_ms']:.1f} ms, "
              f"256 tokens {out['text256_median_ms']:.1f} ms, peak RSS {out['peak_rss_mb']:.0f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["make", "run"])
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()
    if a.command == "make":
        make(a.dir)
    else:
        run(a.dir, a.threads, a.repeat, a.json)


if __name__ == "__main__":
    main()
