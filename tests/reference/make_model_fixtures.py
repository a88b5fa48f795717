#!/usr/bin/python3
"""Writes tests/fixtures/model/: CMR-CLIP reference weights, inputs and
per-stage outputs computed by the PyTorch reference (cmrclip_torch.py).

Run from anywhere, with Debian's PyTorch (apt-get install python3-torch;
PyTorch 1.13, numpy) -- NOT the pyenv python3 on PATH:

    /usr/bin/python3 tests/reference/make_model_fixtures.py

Deterministic (torch.manual_seed(20261127), CPU, fixed thread-independent
float64 reference); rerunning rewrites identical files.  It writes:

  small/model.json, small/weights.safetensors, small/vocab.txt
      a small CMR-CLIP in cmrsearch's model format (docs/model-format.md)
  small/tiny_cmrclip.bin, small/config.json, small/tokenizer_config.json
      the same weights as a torch.save()d state dict with the published names,
      for scripts/convert_cmrclip.py
  small_io.safetensors    inputs and per-stage outputs of the small model
  block768_io.safetensors one full-size video block and one full-size BERT
      layer whose weights are regenerated from a recipe (see __metadata__
      "generated" and gen_tensor() below); only inputs/outputs are stored.

Expected values are computed in float64 from the float32 weights and inputs
and rounded to float32 (the most accurate reference for a float32 runtime);
the script also runs the float32 model and prints its deviation from that
reference, and asserts it is small.

Sanity checks (assertions): the traced intermediates are reproduced by
running each stage on its own from the saved previous stage; the divided
attention equals a naive per-query loop over explicit key lists; the video
tower runs with F < num_frames (temporal_embed[:F]); mean-pooled text with
padding equals each sequence run alone unpadded; tiny_cmrclip.bin and
weights.safetensors reload to the same tensors; the generator recipe
regenerates identical bits.
"""

import copy
import io
import json
import math
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cmrclip_torch as ref  # noqa: E402
import wordpiece_reference as wpref  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "model")
SEED = 20261127

SMALL = {
    "format": "cmrsearch-model",
    "format_version": 1,
    "name": "cmrclip-small-test",
    "architecture": "cmrclip",
    "weights": "weights.safetensors",
    "vocab": "vocab.txt",
    "embed_dim": 32,
    "temperature": 0.05,
    "video": {"dim": 64, "depth": 2, "heads": 4, "mlp_dim": 256,
              "patch": 16, "image_size": 32, "channels": 3,
              "num_frames": 4, "ln_eps": 1e-6},
    "text": {"vocab_size": 120, "hidden": 64, "layers": 2, "heads": 4,
             "intermediate": 128, "max_position": 40, "type_vocab": 2,
             "ln_eps": 1e-12, "do_lower_case": False, "strip_accents": None,
             "tokenize_chinese_chars": True},
    "input": {"recipe": "cmrclip"},
}

# ----------------------------------------------------------------------------
# safetensors writer (own, no safetensors package)

DTYPES = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata=None):
    """tensors: ordered dict name -> torch tensor (F32/I32/I64)."""
    header = {}
    blobs = []
    off = 0
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        raw = t.numpy().astype(t.numpy().dtype.newbyteorder("<"), copy=False).tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    if metadata:
        header["__metadata__"] = {k: str(v) for k, v in metadata.items()}
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    n = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    base = 8 + n
    np_dt = {"F32": "<f4", "I32": "<i4", "I64": "<i8"}
    out = {}
    for name, d in header.items():
        b, e = d["data_offsets"]
        arr = np.frombuffer(data[base + b:base + e], dtype=np_dt[d["dtype"]]).reshape(d["shape"])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


# ----------------------------------------------------------------------------
# recipe generator for the full-size block weights (C reimplements it)

M64 = (1 << 64) - 1


def fnv1a64(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


def gen_tensor(name, shape, scale, offset):
    """float32(offset + scale * (2u - 1)), u = top 24 bits of splitmix64 output
    number i+1 from seed FNV-1a-64(name), elements in row-major order."""
    n = int(np.prod(shape))
    with np.errstate(over="ignore"):
        z = np.uint64(fnv1a64(name)) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    u = (z >> np.uint64(40)).astype(np.float64) / float(1 << 24)
    v = (float(offset) + float(scale) * (2.0 * u - 1.0)).astype(np.float32)
    return torch.from_numpy(v.reshape(shape))


def gen_tensor_scalar(name, shape, scale, offset):
    """Literal transcription of the recipe, element by element (check only)."""
    n = int(np.prod(shape))
    state = fnv1a64(name)
    vals = []
    for _ in range(n):
        state = (state + 0x9E3779B97F4A7C15) & M64
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
        z = z ^ (z >> 31)
        u = (z >> 40) / float(1 << 24)
        vals.append(offset + scale * (2.0 * u - 1.0))
    return torch.tensor(np.array(vals, dtype=np.float64).astype(np.float32).reshape(shape))


# ----------------------------------------------------------------------------
# small model

VOCAB_WORDS = [
    ".", ",", "-", "(", ")", "/", "%", ":", ";",
    "0", "1", "2", "3", "4", "5", "6", "7", "8", "9",
    "the", "a", "is", "are", "and", "of", "with", "no", "in", "to", "at",
    "There", "The", "No", "Normal", "normal", "left", "Left", "right", "Right",
    "ventricle", "ventricular", "LV", "RV", "EF", "size", "function",
    "systolic", "diastolic", "dysfunction", "dilated", "enlarged", "mild",
    "moderate", "severe", "mildly", "hyper", "##trophy", "septal", "septum",
    "wall", "motion", "late", "gadolinium", "enhancement", "Delayed",
    "imaging", "reveals", "transmural", "patchy", "scar", "LAD", "aortic",
    "Aortic", "root", "valve", "ascending", "descending", "aorta", "thick",
    "##ened", "##s", "##ed", "##ing", "##ly", "##al", "##ic", "##ar", "##y",
    "##ation", "##0", "##5", "##%", "card", "##iac", "##io", "##my",
    "##opathy", "ejection", "fraction", "apical", "basal", "inferior",
    "lateral", "anterior", "segment", "infarct", "##ion", "pericardial",
    "effusion", "small", "large", "area", "Ascending", "thin", "LGE",
]


def make_vocab():
    toks = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + VOCAB_WORDS
    assert len(set(toks)) == len(toks), "duplicate vocab token"
    assert len(toks) == 120, len(toks)
    return toks


def wordpiece(text, vocab):
    """Cased BERT tokenization of a fixture sentence, by the tokenizer's
    independent reference (wordpiece_reference.py)."""
    index = {t: i for i, t in enumerate(vocab)}
    return [index[t] for t in wpref.encode(text, set(vocab), False, None, True, 512)]


SENTENCES = [
    "There is left ventricular hypertrophy with late gadolinium enhancement.",
    "Normal RV size and function.",
    "LV is dilated.",
]


def init_small(model, gen):
    """Random weights of non-trivial scale, deterministic given `gen`."""
    def normal(t, std, mean=0.0):
        with torch.no_grad():
            t.copy_(torch.randn(t.shape, generator=gen) * std + mean)

    for name, p in model.named_parameters():
        if name.endswith(".bias"):
            normal(p, 0.05)
        elif "norm" in name.lower() and name.endswith(".weight"):  # LayerNorm weights
            with torch.no_grad():
                p.copy_(1.0 + (torch.rand(p.shape, generator=gen) * 2 - 1) * 0.1)
        elif name in ("video_model.cls_token", "video_model.pos_embed",
                      "video_model.temporal_embed") or "embeddings" in name:
            normal(p, 0.15)
        elif p.dim() >= 2:  # linear / conv weights
            fan_in = int(np.prod(p.shape[1:]))
            normal(p, min(0.2, max(0.05, 0.8 / math.sqrt(fan_in))))
        else:
            raise AssertionError("uninitialised parameter " + name)


def maxrel(a, b):
    a = a.double()
    b = b.double()
    return ((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()


def close(a, b, tol, what):
    r = maxrel(a, b)
    assert r <= tol, f"{what}: max |a-b| / max |b| = {r:.3g} > {tol}"
    return r


# ----------------------------------------------------------------------------
# naive divided attention (explicit key lists) for cross-checking

def naive_divided_attention(att, x, frames, mode):
    B, T, D = x.shape
    h = att.heads
    dh = D // h
    N = (T - 1) // frames
    qkv = att.qkv(x)
    q, k, v = qkv[..., :D] * att.scale, qkv[..., D:2 * D], qkv[..., 2 * D:]
    out = torch.zeros(B, T, D, dtype=x.dtype)
    for i in range(T):
        if i == 0:
            keys = list(range(T))
        else:
            f, n = divmod(i - 1, N)
            if mode == "time":
                keys = [0] + [1 + g * N + n for g in range(frames)]
            else:
                keys = [0] + [1 + f * N + m for m in range(N)]
        for hh in range(h):
            sl = slice(hh * dh, (hh + 1) * dh)
            s = q[:, i, sl].unsqueeze(1) @ k[:, keys, sl].transpose(1, 2)  # [B,1,K]
            out[:, i, sl] = (torch.softmax(s, -1) @ v[:, keys, sl])[:, 0]
    return att.proj(out)


# ----------------------------------------------------------------------------

def small_fixtures():
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = ref.CMRCLIP(SMALL).eval()
    init_small(model, gen)
    model64 = copy.deepcopy(model).double().eval()
    sd = model.state_dict()

    # -- the model directory
    d = os.path.join(OUT, "small")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "model.json"), "w") as f:
        json.dump(SMALL, f, indent=2)
        f.write("\n")
    vocab = make_vocab()
    with open(os.path.join(d, "vocab.txt"), "w") as f:
        f.write("\n".join(vocab) + "\n")
    weights = {k: sd[k] for k in sorted(sd)}
    write_safetensors(os.path.join(d, "weights.safetensors"), weights, {"format": "pt"})

    # -- the published-style checkpoint
    torch.save(sd, os.path.join(d, "tiny_cmrclip.bin"))
    config = {
        "video_params": {"model": "SpaceTimeTransformer", "arch_config": "base_patch16_224",
                         "num_frames": SMALL["video"]["num_frames"], "pretrained": False,
                         "time_init": "zeros"},
        "text_params": {"model": "emilyalsentzer/Bio_ClinicalBERT", "pretrained": True,
                        "input": "text"},
        "projection": "minimal",
        "projection_dim": SMALL["embed_dim"],
        "load_checkpoint": "",
        # NOT in the published config (whose architecture is fixed by code:
        # ViT-B/16, 12 heads, BERT-base).  Head counts cannot be inferred
        # from tensor shapes, so the tiny test model states them here.
        "cmrsearch_test_architecture": {
            "video_heads": SMALL["video"]["heads"], "text_heads": SMALL["text"]["heads"],
            "video_ln_eps": 1e-6, "text_ln_eps": 1e-12},
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    tok_cfg = {"do_lower_case": False, "model_max_length": SMALL["text"]["max_position"],
               "tokenizer_class": "BertTokenizer", "strip_accents": None,
               "tokenize_chinese_chars": True, "unk_token": "[UNK]", "sep_token": "[SEP]",
               "pad_token": "[PAD]", "cls_token": "[CLS]", "mask_token": "[MASK]"}
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tok_cfg, f, indent=2)
        f.write("\n")

    # reload checks
    rt, _ = read_safetensors(os.path.join(d, "weights.safetensors"))
    tb = torch.load(os.path.join(d, "tiny_cmrclip.bin"))
    assert list(rt) == sorted(sd) and set(tb) == set(sd)
    for k in sd:
        assert rt[k].dtype == sd[k].dtype and torch.equal(rt[k], sd[k]), k
        assert torch.equal(tb[k], sd[k]), k
    assert rt["text_model.embeddings.position_ids"].dtype == torch.int64

    # -- inputs
    video = torch.randn(2, 4, 3, 32, 32, generator=gen)
    video3 = torch.randn(2, 3, 3, 32, 32, generator=gen)
    ids_list = [wordpiece(s, vocab) for s in SENTENCES]
    assert all(1 not in ids for ids in ids_list), "fixture sentence hit [UNK]"
    L = max(len(x) for x in ids_list)
    ids = torch.zeros(len(ids_list), L, dtype=torch.int64)
    mask = torch.zeros(len(ids_list), L, dtype=torch.int64)
    for i, x in enumerate(ids_list):
        ids[i, :len(x)] = torch.tensor(x)
        mask[i, :len(x)] = 1
    assert len(set(len(x) for x in ids_list)) == len(ids_list)

    # -- reference (float64) and float32 runs
    tr64, tr32 = {}, {}
    with torch.no_grad():
        model64.compute_video(video.double(), tr64, "video")
        model64.compute_video(video3.double(), tr64, "video3")
        model64.compute_text(ids, mask, tr64, "text")
        model.compute_video(video, tr32, "video")
        model.compute_video(video3, tr32, "video3")
        model.compute_text(ids, mask, tr32, "text")
    report = {k: maxrel(tr32[k], tr64[k]) for k in tr64}
    worst = max(report.values())
    print(f"small: float32 torch vs float64 reference, worst max|d|/max|ref| = {worst:.3g} "
          f"({max(report, key=report.get)})")
    assert worst < 1e-5

    # -- sanity: stage by stage from saved (float32-rounded) previous stages
    with torch.no_grad():
        vm = model64.video_model
        for pre, vin in (("video", video), ("video3", video3)):
            F = vin.shape[1]
            close(vm.tokens(vin.double()), tr64[pre + ".tokens"], 0, pre + ".tokens")
            x = tr64[pre + ".tokens"].float().double()
            for i, blk in enumerate(vm.blocks):
                t = x + blk.timeattn(blk.norm3(x), F, "time")
                close(t, tr64[f"{pre}.block{i}.time"], 1e-6, f"{pre}.block{i}.time")
                close(blk(x, F), tr64[f"{pre}.block{i}.out"], 1e-6, f"{pre}.block{i}.out")
                # naive attention cross-check, both modes
                for att, mode in ((blk.timeattn, "time"), (blk.attn, "space")):
                    close(naive_divided_attention(att, x, F, mode), att(x, F, mode), 1e-12,
                          f"naive {mode} attention")
                x = tr64[f"{pre}.block{i}.out"].float().double()
            nc = vm.norm(x)[:, 0]
            close(nc, tr64[pre + ".norm_cls"], 1e-6, pre + ".norm_cls")
            close(model64.vid_proj(tr64[pre + ".norm_cls"].float().double()), tr64[pre + ".embed"],
                  1e-6, pre + ".embed")
        # F < num_frames: temporal_embed[:F] is what is added
        tok3 = tr64["video3.tokens"]
        pe = vm.patch_embed(video3.double())
        N = vm.patches
        for f in range(3):
            expect = pe[:, f * N:(f + 1) * N] + vm.pos_embed[0, 1:] + vm.temporal_embed[0, f]
            close(tok3[:, 1 + f * N:1 + (f + 1) * N], expect, 1e-15, "video3 temporal")
        # padded text == unpadded text, per sequence (float64 and float32)
        for mdl, tr, tol in ((model64, tr64, 1e-12), (model, tr32, 2e-6)):
            for i, x in enumerate(ids_list):
                one = torch.tensor([x])
                e = mdl.compute_text(one, torch.ones_like(one))
                close(e[0], tr["text.embed"][i], tol, f"text {i} padded vs unpadded")
        # text stages
        tm = model64.text_model
        am = ref.additive_mask(mask, torch.float64)
        x = tr64["text.embeddings"].float().double()
        for i, layer in enumerate(tm.encoder.layer):
            close(layer(x, am), tr64[f"text.layer{i}.out"], 1e-6, f"text.layer{i}.out")
            x = tr64[f"text.layer{i}.out"].float().double()
        close(ref.mean_pool(x, mask), tr64["text.mean_pooled"], 1e-6, "text.mean_pooled")

    # -- write small_io
    io_t = {"video.input": video}
    for k in ["video.tokens"] + [f"video.block{i}.{s}" for i in range(2) for s in ("time", "out")] \
            + ["video.norm_cls", "video.embed"]:
        io_t[k] = tr64[k]
    io_t["video3.input"] = video3
    for k in ("video3.tokens", "video3.norm_cls", "video3.embed"):
        io_t[k] = tr64[k]
    io_t["text.input_ids"] = ids.to(torch.int32)
    io_t["text.attention_mask"] = mask.to(torch.int32)
    for k in ["text.embeddings", "text.layer0.out", "text.layer1.out", "text.mean_pooled", "text.embed"]:
        io_t[k] = tr64[k]
    io_t = {k: (v.float() if v.is_floating_point() else v) for k, v in io_t.items()}
    meta = {"model": "small/ (cmrclip-small-test)",
            "reference": "float64 computation from the float32 weights/inputs, rounded to float32",
            "text.sentences": json.dumps(SENTENCES),
            "float32_torch_worst_rel": f"{worst:.3g}"}
    write_safetensors(os.path.join(OUT, "small_io.safetensors"), io_t, meta)
    back, _ = read_safetensors(os.path.join(OUT, "small_io.safetensors"))
    for k in io_t:
        assert torch.equal(back[k], io_t[k]), k


def block768_fixtures():
    gen = torch.Generator().manual_seed(SEED + 768)
    D, H, MLP = 768, 12, 3072
    recipe = {}

    def lin(prefix, out_f, in_f):
        recipe[prefix + ".weight"] = ([out_f, in_f], 1.0 / math.sqrt(in_f), 0.0)
        recipe[prefix + ".bias"] = ([out_f], 0.02, 0.0)

    def ln(prefix):
        recipe[prefix + ".weight"] = ([D], 0.1, 1.0)
        recipe[prefix + ".bias"] = ([D], 0.1, 0.0)

    vb = "video_model.blocks.0"
    ln(vb + ".norm1")
    lin(vb + ".attn.qkv", 3 * D, D)
    lin(vb + ".attn.proj", D, D)
    ln(vb + ".norm2")
    lin(vb + ".mlp.fc1", MLP, D)
    lin(vb + ".mlp.fc2", D, MLP)
    ln(vb + ".norm3")
    lin(vb + ".timeattn.qkv", 3 * D, D)
    lin(vb + ".timeattn.proj", D, D)
    tl = "text_model.encoder.layer.0"
    lin(tl + ".attention.self.query", D, D)
    lin(tl + ".attention.self.key", D, D)
    lin(tl + ".attention.self.value", D, D)
    lin(tl + ".attention.output.dense", D, D)
    ln_t = tl + ".attention.output.LayerNorm"
    recipe[ln_t + ".weight"] = ([D], 0.1, 1.0)
    recipe[ln_t + ".bias"] = ([D], 0.1, 0.0)
    lin(tl + ".intermediate.dense", MLP, D)
    lin(tl + ".output.dense", D, MLP)
    recipe[tl + ".output.LayerNorm.weight"] = ([D], 0.1, 1.0)
    recipe[tl + ".output.LayerNorm.bias"] = ([D], 0.1, 0.0)

    tensors = {k: gen_tensor(k, *v) for k, v in recipe.items()}
    # bit-exactness of the vectorised generator against the literal recipe
    for k in (vb + ".norm1.bias", tl + ".output.LayerNorm.weight"):
        a, b = tensors[k], gen_tensor_scalar(k, *recipe[k])
        assert torch.equal(a.view(torch.int32), b.view(torch.int32)), k
    a = tensors[vb + ".attn.qkv.weight"].reshape(-1)[:3000]
    b = gen_tensor_scalar(vb + ".attn.qkv.weight", [3000], recipe[vb + ".attn.qkv.weight"][1], 0.0)
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))
    # regenerating gives identical bits
    for k, v in recipe.items():
        assert torch.equal(gen_tensor(k, *v).view(torch.int32), tensors[k].view(torch.int32)), k

    block = ref.SpaceTimeBlock(D, H, MLP, 1e-6)
    block.load_state_dict({k[len(vb) + 1:]: v for k, v in tensors.items() if k.startswith(vb)})
    layer = ref.BertLayer(D, H, MLP, 1e-12)
    layer.load_state_dict({k[len(tl) + 1:]: v for k, v in tensors.items() if k.startswith(tl)})
    block.eval()
    layer.eval()
    block64 = copy.deepcopy(block).double()
    layer64 = copy.deepcopy(layer).double()

    F, N = 2, 4
    x = torch.randn(1, 1 + F * N, D, generator=gen)
    bx = torch.randn(1, 7, D, generator=gen)
    bmask = torch.tensor([[1, 1, 1, 1, 1, 0, 0]], dtype=torch.int64)
    with torch.no_grad():
        tr64, tr32 = {}, {}
        out64 = block64(x.double(), F, tr64, "block")
        block(x, F, tr32, "block")
        full = torch.ones(1, 7, dtype=torch.int64)
        bo64 = layer64(bx.double(), ref.additive_mask(full, torch.float64))
        bo32 = layer(bx, ref.additive_mask(full, torch.float32))
        bm64 = layer64(bx.double(), ref.additive_mask(bmask, torch.float64))
        bm32 = layer(bx, ref.additive_mask(bmask, torch.float32))
        # naive attention cross-check at full size
        xn = block64.norm3(x.double())
        close(naive_divided_attention(block64.timeattn, xn, F, "time"),
              block64.timeattn(xn, F, "time"), 1e-12, "naive time 768")
        close(naive_divided_attention(block64.attn, xn, F, "space"),
              block64.attn(xn, F, "space"), 1e-12, "naive space 768")
        # masked positions do not influence kept rows
        alone = layer64(bx[:, :5].double(), ref.additive_mask(full[:, :5], torch.float64))
        close(bm64[:, :5], alone, 1e-12, "bert masked vs truncated")
    rel = {"block.time": maxrel(tr32["block.time"], tr64["block.time"]),
           "block.out": maxrel(tr32["block.out"], tr64["block.out"]),
           "bert.out": maxrel(bo32, bo64), "bert.out_masked": maxrel(bm32, bm64)}
    print("block768: float32 torch vs float64 reference:",
          ", ".join(f"{k} {v:.3g}" for k, v in rel.items()))
    assert max(rel.values()) < 1e-5
    assert torch.equal(tr64["block.out"], out64)

    io_t = {"block.input": x, "block.time": tr64["block.time"].float(),
            "block.out": tr64["block.out"].float(),
            "bert.input": bx, "bert.out": bo64.float(),
            "bert.attention_mask": bmask.to(torch.int32), "bert.out_masked": bm64.float()}
    gen_meta = {k: {"shape": v[0], "scale": v[1], "offset": v[2]} for k, v in recipe.items()}
    meta = {
        "generated": json.dumps(gen_meta),
        "generator": ("seed=FNV-1a-64(utf8 name); state+=0x9E3779B97F4A7C15; splitmix64 mix "
                      "(30,0xBF58476D1CE4E5B9,27,0x94D049BB133111EB,31); u=(z>>40)/2^24; "
                      "value=float32(offset+scale*(2u-1)) in float64; row-major"),
        "video_block": json.dumps({"dim": D, "heads": H, "mlp_dim": MLP, "frames": F,
                                   "patches_per_frame": N, "ln_eps": 1e-6}),
        "bert_layer": json.dumps({"hidden": D, "heads": H, "intermediate": MLP, "ln_eps": 1e-12,
                                  "mask": "bert.out: no padding; bert.out_masked: bert.attention_mask"}),
        "reference": "float64 computation from the float32 weights/inputs, rounded to float32",
    }
    path = os.path.join(OUT, "block768_io.safetensors")
    write_safetensors(path, io_t, meta)
    back, bmeta = read_safetensors(path)
    for k in io_t:
        assert torch.equal(back[k], io_t[k]), k
    # the stored recipe regenerates identical bits
    for k, r in json.loads(bmeta["generated"]).items():
        assert torch.equal(gen_tensor(k, r["shape"], r["scale"], r["offset"]).view(torch.int32),
                           tensors[k].view(torch.int32)), k
    # fingerprints for the C side to check its generator against
    fp = {k: tensors[k].reshape(-1)[:4].tolist() for k in (vb + ".attn.qkv.weight", tl + ".output.LayerNorm.weight")}
    print("block768 generator first values:", json.dumps(fp))


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    small_fixtures()
    block768_fixtures()
    for root, _, files in os.walk(OUT):
        for f in sorted(files):
            p = os.path.join(root, f)
            print(f"{os.path.relpath(p, ROOT)}  {os.path.getsize(p)}")


if __name__ == "__main__":
    main()
