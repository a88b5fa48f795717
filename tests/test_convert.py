#!/usr/bin/env python3
"""Tests of scripts/convert_cmrclip.py (pure standard library, no PyTorch).

The main input is the committed fixture tests/fixtures/model/small/
tiny_cmrclip.bin, a real torch.save (PyTorch 1.13 zip format) of a small
CMR-CLIP state dict, next to the weights.safetensors and model.json made
from the same weights by PyTorch itself.  Error cases use checkpoints
written here in the same zip/pickle layout (views, shared storages,
f16/bf16/int64 storages, a malicious pickle).

Run: /usr/bin/python3 tests/test_convert.py   (ctest: test_convert)
"""

import contextlib
import hashlib
import importlib.util
import io
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
import unittest
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
SCRIPT = os.path.join(ROOT, "scripts", "convert_cmrclip.py")
FIXTURE_DIR = os.path.join(HERE, "fixtures", "model", "small")
FIXTURE = os.path.join(FIXTURE_DIR, "tiny_cmrclip.bin")

_spec = importlib.util.spec_from_file_location("convert_cmrclip", SCRIPT)
cc = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cc)

ITEM = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I64": 8, "I32": 4}
FMT = {"F32": "f", "F16": "e", "F64": "d", "I64": "q", "I32": "i"}


# ---------------------------------------------------------------------------
# helpers


def read_safetensors(path):
    """(header without __metadata__, metadata, data bytes, header length)."""
    with open(path, "rb") as f:
        raw = f.read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", {})
    return header, meta, raw[8 + n:], n


def st_values(header, data, name):
    h = header[name]
    b, e = h["data_offsets"]
    dt = h["dtype"]
    if dt == "BF16":
        return [struct.unpack("<f", b"\0\0" + data[i:i + 2])[0] for i in range(b, e, 2)]
    return list(struct.unpack("<%d%s" % ((e - b) // ITEM[dt], FMT[dt]), data[b:e]))


def storage_element(zf, prefix, ref, index):
    """One element of a pickled tensor, read straight from its raw storage."""
    raw = zf.read(prefix + "data/" + ref.storage.key)
    off = ref.offset + sum(i * s for i, s in zip(index, ref.stride))
    dt = ref.storage.stype.dtype
    isz = ITEM[dt]
    b = raw[off * isz:(off + 1) * isz]
    if dt == "BF16":
        return struct.unpack("<f", b"\0\0" + b)[0]
    return struct.unpack("<" + FMT[dt], b)[0]


def unravel(flat, shape):
    idx = []
    for s in reversed(shape):
        idx.append(flat % s)
        flat //= s
    return tuple(reversed(idx))


def f16_round(x):
    return struct.unpack("<e", struct.pack("<e", x))[0]


# A torch.save-format writer (protocol-2 pickle, as torch 1.13 writes it),
# so that the error cases need no PyTorch.

STORAGE_CLASS = {"F32": "FloatStorage", "F16": "HalfStorage", "BF16": "BFloat16Storage", "I64": "LongStorage",
                 "F64": "DoubleStorage"}


def _pk_str(s):
    b = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(b)) + b


def _pk_int(v):
    return b"J" + struct.pack("<i", v)


def _pk_tuple(vals):
    return b"(" + b"".join(_pk_int(v) for v in vals) + b"t"


def _pk_global(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


class FakeTensor:
    """A tensor to write: a view (offset, size, stride) of a storage given by key."""

    def __init__(self, key, dtype, size, stride=None, offset=0):
        self.key, self.dtype, self.size, self.offset = key, dtype, tuple(size), offset
        if stride is None:
            stride, acc = [], 1
            for s in reversed(size):
                stride.append(acc)
                acc *= s
            stride = tuple(reversed(stride))
        self.stride = tuple(stride)


def write_torch_zip(path, tensors, storages, prefix="archive", pickle_bytes=None):
    """tensors: ordered (name, FakeTensor); storages: key -> (dtype, list of values)."""
    body = [b"\x80\x02", _pk_global("collections", "OrderedDict"), b")R(" if tensors else b")R"]
    for name, t in tensors:
        dtype, vals = storages[t.key]
        body += [_pk_str(name), _pk_global("torch._utils", "_rebuild_tensor_v2"), b"((",
                 _pk_str("storage"), _pk_global("torch", STORAGE_CLASS[dtype]), _pk_str(t.key), _pk_str("cpu"),
                 _pk_int(len(vals)), b"tQ", _pk_int(t.offset), _pk_tuple(t.size), _pk_tuple(t.stride), b"\x89",
                 _pk_global("collections", "OrderedDict"), b")Rt", b"R"]
    if tensors:
        body.append(b"u")
    body.append(b".")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr(prefix + "/data.pkl", pickle_bytes if pickle_bytes is not None else b"".join(body))
        for key, (dtype, vals) in storages.items():
            if dtype == "BF16":
                data = b"".join(struct.pack("<f", v)[2:] for v in vals)
            else:
                data = struct.pack("<%d%s" % (len(vals), FMT[dtype]), *vals)
            z.writestr(prefix + "/data/" + key, data)
        z.writestr(prefix + "/version", b"3\n")


def tiny_shapes(D=64, depth=2, mlp=128, P=4, S=8, C=3, F=3, V=20, H=64, L=1, I=96, MP=16, TV=2, E=16):
    """Every published tensor name of a small CMR-CLIP with its shape."""
    v, t = "video_model.", "text_model."
    s = [(v + "patch_embed.proj.weight", [D, C, P, P]), (v + "patch_embed.proj.bias", [D]),
         (v + "cls_token", [1, 1, D]), (v + "pos_embed", [1, (S // P) ** 2 + 1, D]),
         (v + "temporal_embed", [1, F, D])]
    for i in range(depth):
        b = "%sblocks.%d." % (v, i)
        for n in ("norm1", "norm2", "norm3"):
            s += [(b + n + ".weight", [D]), (b + n + ".bias", [D])]
        for a in ("attn", "timeattn"):
            s += [(b + a + ".qkv.weight", [3 * D, D]), (b + a + ".qkv.bias", [3 * D]),
                  (b + a + ".proj.weight", [D, D]), (b + a + ".proj.bias", [D])]
        s += [(b + "mlp.fc1.weight", [mlp, D]), (b + "mlp.fc1.bias", [mlp]),
              (b + "mlp.fc2.weight", [D, mlp]), (b + "mlp.fc2.bias", [D])]
    s += [(v + "norm.weight", [D]), (v + "norm.bias", [D])]
    e = t + "embeddings."
    s += [(e + "word_embeddings.weight", [V, H]), (e + "position_embeddings.weight", [MP, H]),
          (e + "token_type_embeddings.weight", [TV, H]), (e + "LayerNorm.weight", [H]), (e + "LayerNorm.bias", [H])]
    for i in range(L):
        b = "%sencoder.layer.%d." % (t, i)
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            s += [(b + n + ".weight", [H, H]), (b + n + ".bias", [H])]
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            s += [(b + n + ".weight", [H]), (b + n + ".bias", [H])]
        s += [(b + "intermediate.dense.weight", [I, H]), (b + "intermediate.dense.bias", [I]),
              (b + "output.dense.weight", [H, I]), (b + "output.dense.bias", [H])]
    s += [("vid_proj.1.weight", [E, D]), ("vid_proj.1.bias", [E]), ("txt_proj.1.weight", [E, H]),
          ("txt_proj.1.bias", [E])]
    return s


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def tiny_checkpoint(path, drop=None, reshape=None, module_prefix=True, extra_storage_fn=None, **sizes):
    """A synthetic checkpoint with the published names, some of them views or
    non-f32 storages.  Returns {stripped name: (shape, row-major values)}."""
    rnd = random.Random(1234)
    tensors, storages, expect = [], {}, {}
    pre = "module." if module_prefix else ""
    for k, (name, shape) in enumerate(tiny_shapes(**sizes)):
        if name == drop:
            continue
        if reshape and name in reshape:
            shape = reshape[name]
        n = math.prod(shape)
        vals = [f32(rnd.uniform(-1, 1)) for _ in range(n)]
        key = str(len(storages))
        if name.endswith("attn.proj.weight") and len(shape) == 2:
            # stored transposed: the pickled tensor is a .t() view
            r, c = shape
            st = [vals[j * c + i] for i in range(c) for j in range(r)]  # st[i][j] = vals[j][i], shape [c, r]
            storages[key] = ("F32", st)
            tensors.append((pre + name, FakeTensor(key, "F32", shape, stride=(1, r))))
        elif name.endswith("mlp.fc1.weight"):
            # a view at an offset into a larger storage
            storages[key] = ("F32", [9.0] * 5 + vals + [7.0] * 3)
            tensors.append((pre + name, FakeTensor(key, "F32", shape, offset=5)))
        elif name.endswith("norm2.bias"):
            storages[key] = ("F16", vals)
            vals = [f16_round(x) for x in vals]
            tensors.append((pre + name, FakeTensor(key, "F16", shape)))
        elif name.endswith("norm3.bias"):
            storages[key] = ("BF16", vals)
            vals = [struct.unpack("<f", b"\0\0" + struct.pack("<f", x)[2:])[0] for x in vals]
            tensors.append((pre + name, FakeTensor(key, "BF16", shape)))
        elif name == "video_model.cls_token":
            # shares the storage of the previous tensor (patch_embed.proj.bias) at an offset
            prev_key = str(len(storages) - 1)
            dt, pv = storages[prev_key]
            storages[prev_key] = (dt, pv + vals)
            tensors.append((pre + name, FakeTensor(prev_key, "F32", shape, offset=len(pv))))
        else:
            storages[key] = ("F32", vals)
            tensors.append((pre + name, FakeTensor(key, "F32", shape)))
        expect[name] = (shape, vals)
    MP = sizes.get("MP", 16)
    key = str(len(storages))
    storages[key] = ("I64", list(range(MP)))
    tensors.append((pre + "text_model.embeddings.position_ids", FakeTensor(key, "I64", [1, MP], stride=(0, 1))))
    expect["text_model.embeddings.position_ids"] = ([1, MP], list(range(MP)))
    if extra_storage_fn:
        extra_storage_fn(tensors, storages, expect)
    write_torch_zip(path, tensors, storages)
    return expect


def load_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


def write_vocab(path, n):
    with open(path, "w", encoding="utf-8") as f:
        f.write("".join("[unused%d]\n" % i for i in range(n)))


@contextlib.contextmanager
def quiet():
    err = io.StringIO()
    old = sys.stderr
    sys.stderr = err
    try:
        yield err
    finally:
        sys.stderr = old


def run_main(argv):
    """main() in-process: (exit status, stderr text)."""
    with quiet() as err:
        rc = cc.main(argv)
    return rc, err.getvalue()


# ---------------------------------------------------------------------------


class Base(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="cmr-convert-test-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def p(self, *names):
        return os.path.join(self.tmp, *names)

    def assert_no_output(self, out):
        self.assertFalse(os.path.exists(out), "output directory left behind")
        left = [n for n in os.listdir(os.path.dirname(out)) if ".tmp-" in n or ".old-" in n]
        self.assertEqual(left, [], "temporary directories left behind")


@unittest.skipUnless(os.path.exists(FIXTURE), "fixture %s is absent (made by tests/reference/make_model_fixtures.py)"
                     % FIXTURE)
class FixtureTest(Base):
    """The committed torch.save checkpoint, converted and compared."""

    def convert(self, *extra):
        out = self.p("model")
        argv = ["--checkpoint", FIXTURE, "--vocab", os.path.join(FIXTURE_DIR, "vocab.txt"), "--out", out]
        for opt, fn in (("--config", "config.json"), ("--tokenizer-config", "tokenizer_config.json")):
            if os.path.exists(os.path.join(FIXTURE_DIR, fn)):
                argv += [opt, os.path.join(FIXTURE_DIR, fn)]
        rc, err = run_main(argv + list(extra))
        self.assertEqual(rc, 0, err)
        self.assertEqual(err, "", "no progress output when stderr is not a TTY")
        return out

    def test_f32_names_shapes_values(self):
        out = self.convert()
        self.assertEqual(sorted(os.listdir(out)), ["model.json", "vocab.txt", "weights.safetensors"])
        header, meta, data, hlen = read_safetensors(os.path.join(out, "weights.safetensors"))
        self.assertEqual(hlen % 8, 0)
        # contiguous, complete data section
        spans = sorted(h["data_offsets"] for h in header.values())
        pos = 0
        for b, e in spans:
            self.assertEqual(b, pos)
            pos = e
        self.assertEqual(pos, len(data))

        ck = cc.Checkpoint(FIXTURE)
        zf = zipfile.ZipFile(FIXTURE)
        names = [n for n in zf.namelist() if n.endswith("/data.pkl")]
        prefix = names[0][:-len("data.pkl")]
        self.assertEqual(set(header), set(ck.state))
        for name, ref in ck.state.items():
            h = header[name]
            self.assertEqual(h["shape"], list(ref.size), name)
            float_src = ref.storage.stype.dtype in ("F32", "F16", "BF16", "F64")
            self.assertEqual(h["dtype"], "F32" if float_src else ref.storage.stype.dtype, name)
            vals = st_values(header, data, name)
            n = len(vals)
            self.assertEqual(n, math.prod(ref.size), name)
            picks = {0, n - 1, n // 2, n // 3} if n else set()
            for flat in sorted(picks):
                want = storage_element(zf, prefix, ref, unravel(flat, ref.size))
                self.assertEqual(vals[flat], want, "%s[%d]" % (name, flat))

        # metadata: source file and its hash, converter
        with open(FIXTURE, "rb") as f:
            sha = hashlib.sha256(f.read()).hexdigest()
        self.assertEqual(meta["converter"], "convert_cmrclip.py 1")
        self.assertIn("tiny_cmrclip.bin", meta["source"])
        self.assertIn(sha, meta["source"])

        # vocab copied verbatim
        with open(os.path.join(out, "vocab.txt"), "rb") as a, open(os.path.join(FIXTURE_DIR, "vocab.txt"), "rb") as b:
            self.assertEqual(a.read(), b.read())

    def test_against_torch_written_weights(self):
        """The fixture directory's weights.safetensors was written by PyTorch from the
        same state dict: every tensor must match byte for byte."""
        ref_path = os.path.join(FIXTURE_DIR, "weights.safetensors")
        if not os.path.exists(ref_path):
            self.skipTest("fixture weights.safetensors absent")
        out = self.convert()
        h1, _, d1, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        h2, _, d2, _ = read_safetensors(ref_path)
        self.assertEqual(set(h1), set(h2))
        for name in h1:
            self.assertEqual((h1[name]["dtype"], h1[name]["shape"]), (h2[name]["dtype"], h2[name]["shape"]), name)
            b1, e1 = h1[name]["data_offsets"]
            b2, e2 = h2[name]["data_offsets"]
            self.assertEqual(d1[b1:e1], d2[b2:e2], name)

    def test_model_json(self):
        out = self.convert("--name", "cmrclip-small-test")
        with open(os.path.join(out, "model.json"), encoding="utf-8") as f:
            m = json.load(f)
        self.assertEqual(list(m), ["format", "format_version", "name", "architecture", "weights", "vocab",
                                   "embed_dim", "temperature", "video", "text", "input"])
        self.assertEqual(list(m["video"]), ["dim", "depth", "heads", "mlp_dim", "patch", "image_size", "channels",
                                            "num_frames", "ln_eps"])
        self.assertEqual(list(m["text"]), ["vocab_size", "hidden", "layers", "heads", "intermediate",
                                           "max_position", "type_vocab", "ln_eps", "do_lower_case",
                                           "strip_accents", "tokenize_chinese_chars"])
        self.assertEqual(m["format"], "cmrsearch-model")
        self.assertEqual(m["format_version"], 1)
        self.assertEqual(m["name"], "cmrclip-small-test")
        self.assertEqual(m["input"], {"recipe": "cmrclip"})
        header, _, _, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        v, t = m["video"], m["text"]
        self.assertEqual(header["video_model.cls_token"]["shape"], [1, 1, v["dim"]])
        self.assertEqual(header["video_model.patch_embed.proj.weight"]["shape"],
                         [v["dim"], v["channels"], v["patch"], v["patch"]])
        self.assertEqual(header["video_model.pos_embed"]["shape"][1], (v["image_size"] // v["patch"]) ** 2 + 1)
        self.assertEqual(header["video_model.temporal_embed"]["shape"][1], v["num_frames"])
        self.assertIn("video_model.blocks.%d.norm1.weight" % (v["depth"] - 1), header)
        self.assertNotIn("video_model.blocks.%d.norm1.weight" % v["depth"], header)
        self.assertEqual(header["text_model.embeddings.word_embeddings.weight"]["shape"], [t["vocab_size"], t["hidden"]])
        self.assertEqual(header["vid_proj.1.weight"]["shape"], [m["embed_dim"], v["dim"]])
        self.assertEqual(v["dim"] % v["heads"], 0)
        self.assertEqual(t["hidden"] % t["heads"], 0)
        tc_path = os.path.join(FIXTURE_DIR, "tokenizer_config.json")
        tc = load_json(tc_path) if os.path.exists(tc_path) else {}
        self.assertEqual(t["do_lower_case"], tc.get("do_lower_case", True))
        self.assertEqual(t["strip_accents"], tc.get("strip_accents"))
        self.assertEqual(t["tokenize_chinese_chars"], tc.get("tokenize_chinese_chars", True))
        # the fixture directory's model.json describes the same weights
        ref_path = os.path.join(FIXTURE_DIR, "model.json")
        if os.path.exists(ref_path) and os.path.exists(os.path.join(FIXTURE_DIR, "config.json")):
            with open(ref_path, encoding="utf-8") as f:
                self.assertEqual(m, json.load(f))

    def test_f16(self):
        out = self.convert("--dtype", "f16")
        header, _, data, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        ck = cc.Checkpoint(FIXTURE)
        zf = zipfile.ZipFile(FIXTURE)
        prefix = ck.prefix
        for name, ref in ck.state.items():
            h = header[name]
            if ref.storage.stype.dtype in ("F32", "F16", "BF16", "F64"):
                self.assertEqual(h["dtype"], "F16", name)
                self.assertEqual(h["data_offsets"][1] - h["data_offsets"][0], 2 * math.prod(ref.size))
                vals = st_values(header, data, name)
                for flat in {0, len(vals) - 1, len(vals) // 2}:
                    want = storage_element(zf, prefix, ref, unravel(flat, ref.size))
                    self.assertEqual(vals[flat], f16_round(want), name)
            else:
                self.assertEqual(h["dtype"], ref.storage.stype.dtype, name)

    def test_cli_json_summary(self):
        out = self.p("m")
        r = subprocess.run([sys.executable, SCRIPT, "--checkpoint", FIXTURE, "--vocab",
                            os.path.join(FIXTURE_DIR, "vocab.txt"), "--config", os.path.join(FIXTURE_DIR, "config.json"),
                            "--out", out, "--json"], capture_output=True, text=True)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stderr, "")
        s = json.loads(r.stdout)
        with open(os.path.join(out, "weights.safetensors"), "rb") as f:
            raw = f.read()
        self.assertEqual(s["sha256"], hashlib.sha256(raw).hexdigest())
        self.assertEqual(s["bytes"], len(raw))
        header, _, _, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        self.assertEqual(s["tensors"], len(header))
        self.assertEqual(s["parameters"], sum(math.prod(h["shape"]) for h in header.values()))

    def test_missing_tensor_in_fixture(self):
        """The fixture's own pickle with one tensor renamed (same length)."""
        zin = zipfile.ZipFile(FIXTURE)
        bad = self.p("bad.bin")
        with zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                b = zin.read(item)
                if item.filename.endswith("/data.pkl"):
                    self.assertEqual(b.count(b"blocks.1.timeattn.qkv.bias"), 1)
                    b = b.replace(b"blocks.1.timeattn.qkv.bias", b"blocks.1.timeattn.qkv.xxxx")
                zout.writestr(item, b)
        out = self.p("out")
        rc, err = run_main(["--checkpoint", bad, "--vocab", os.path.join(FIXTURE_DIR, "vocab.txt"),
                            "--config", os.path.join(FIXTURE_DIR, "config.json"), "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("missing tensor video_model.blocks.1.timeattn.qkv.bias", err)
        self.assert_no_output(out)


class SyntheticTest(Base):
    """Checkpoints written here in torch's zip layout: views, dtypes, errors."""

    def make(self, **kw):
        ck = self.p("ck.bin")
        expect = tiny_checkpoint(ck, **kw)
        vocab = self.p("vocab.txt")
        V = [s for n, s in expect.items() if n.endswith("word_embeddings.weight")]
        write_vocab(vocab, V[0][0][0] if V else 20)
        return ck, vocab, expect

    def test_views_dtypes_prefix(self):
        ck, vocab, expect = self.make()
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])
        self.assertEqual(rc, 0, err)
        header, _, data, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        self.assertEqual(set(header), set(expect))  # module. stripped
        for name, (shape, vals) in expect.items():
            self.assertEqual(header[name]["shape"], shape, name)
            self.assertEqual(st_values(header, data, name), vals, name)
        self.assertEqual(header["text_model.embeddings.position_ids"]["dtype"], "I64")
        self.assertEqual(header["video_model.blocks.0.norm3.bias"]["dtype"], "F32")  # bf16 widened
        m = load_json(os.path.join(out, "model.json"))
        self.assertEqual(m["video"], {"dim": 64, "depth": 2, "heads": 1, "mlp_dim": 128, "patch": 4,
                                      "image_size": 8, "channels": 3, "num_frames": 3, "ln_eps": 1e-6})
        self.assertEqual(m["text"], {"vocab_size": 20, "hidden": 64, "layers": 1, "heads": 1, "intermediate": 96,
                                     "max_position": 16, "type_vocab": 2, "ln_eps": 1e-12, "do_lower_case": True,
                                     "strip_accents": None, "tokenize_chinese_chars": True})
        self.assertEqual(m["embed_dim"], 16)
        self.assertEqual(m["name"], "cmrclip")
        # aligned: every tensor starts at a multiple of its element size in the file
        hlen = struct.unpack("<Q", read_bytes(os.path.join(out, "weights.safetensors"))[:8])[0]
        for name, h in header.items():
            self.assertEqual((8 + hlen + h["data_offsets"][0]) % ITEM[h["dtype"]], 0, name)

    def test_f16_from_mixed(self):
        ck, vocab, expect = self.make()
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out, "--dtype", "f16"])
        self.assertEqual(rc, 0, err)
        header, _, data, _ = read_safetensors(os.path.join(out, "weights.safetensors"))
        for name, (shape, vals) in expect.items():
            if name.endswith("position_ids"):
                self.assertEqual(header[name]["dtype"], "I64")
                continue
            self.assertEqual(header[name]["dtype"], "F16", name)
            self.assertEqual(st_values(header, data, name), [f16_round(x) for x in vals], name)

    def test_config_heads_and_checks(self):
        ck, vocab, _ = self.make()
        cfg = self.p("config.json")
        tok = self.p("tok.json")
        with open(cfg, "w") as f:
            json.dump({"video_params": {"num_frames": 3, "num_heads": 4}, "text_params": {"model": "x"},
                       "projection_dim": 16, "cmrsearch_test_architecture": {"text_heads": 8}}, f)
        with open(tok, "w") as f:
            json.dump({"do_lower_case": False, "strip_accents": True}, f)
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--config", cfg, "--tokenizer-config", tok,
                            "--out", out, "--name", "x1"])
        self.assertEqual(rc, 0, err)
        m = load_json(os.path.join(out, "model.json"))
        self.assertEqual((m["video"]["heads"], m["text"]["heads"], m["name"]), (4, 8, "x1"))
        self.assertEqual((m["text"]["do_lower_case"], m["text"]["strip_accents"]), (False, True))
        # a config that disagrees with the tensors
        with open(cfg, "w") as f:
            json.dump({"arch": {"args": {"video_params": {"num_frames": 64}, "projection_dim": 16}}}, f)
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--config", cfg, "--out", self.p("o2")])
        self.assertEqual(rc, 1)
        self.assertIn("num_frames is 64", err)
        self.assert_no_output(self.p("o2"))

    def test_malicious_pickle_refused(self):
        marker = self.p("pwned")
        evil = (b"\x80\x02" + _pk_global("os", "system") + b"(" + _pk_str("touch " + marker) + b"tR.")
        for payload in (evil, evil.replace(b"cos\n", b"cposix\n"),
                        b"\x80\x02" + _pk_global("builtins", "eval") + b"(" + _pk_str("1") + b"tR."):
            ck = self.p("evil.bin")
            write_torch_zip(ck, [], {}, pickle_bytes=payload)
            vocab = self.p("vocab.txt")
            write_vocab(vocab, 20)
            with self.assertRaises(cc.ConvertError) as cm:
                cc.Checkpoint(ck)
            self.assertIn("refused global", str(cm.exception))
            out = self.p("out")
            rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])
            self.assertEqual(rc, 1)
            self.assertRegex(err, r"refused global (os\.system|posix\.system|builtins\.eval)")
            self.assertFalse(os.path.exists(marker), "the pickle was executed")
            self.assert_no_output(out)

    def test_missing_tensor(self):
        ck, vocab, _ = self.make(drop="text_model.encoder.layer.0.attention.self.key.weight")
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("missing tensor text_model.encoder.layer.0.attention.self.key.weight [64, 64]", err)
        self.assert_no_output(out)

    def test_wrong_shape(self):
        ck, vocab, _ = self.make(reshape={"video_model.blocks.1.attn.qkv.bias": [190]})
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("tensor video_model.blocks.1.attn.qkv.bias has shape [190], expected [192]", err)
        self.assert_no_output(out)

    def test_wrong_vocab_size(self):
        ck, vocab, _ = self.make()
        write_vocab(vocab, 21)
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("has 21 tokens but text_model.embeddings.word_embeddings.weight has 20 rows", err)
        self.assert_no_output(out)

    def test_no_partial_output_on_late_failure(self):
        # f16 overflow is found while the weights are being written
        def huge(tensors, storages, expect):
            dt, vals = storages["1"]
            storages["1"] = (dt, [1e6] + vals[1:])
        ck, vocab, _ = self.make(extra_storage_fn=huge)
        out = self.p("out")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out, "--dtype", "f16"])
        self.assertEqual(rc, 1)
        self.assertIn("outside the float16 range", err)
        self.assert_no_output(out)
        # a truncated storage inside the archive
        zin = zipfile.ZipFile(ck)
        bad = self.p("trunc.bin")
        with zipfile.ZipFile(bad, "w") as zout:
            for item in zin.infolist():
                b = zin.read(item)
                if item.filename.endswith("/data/3"):
                    b = b[:-4]
                zout.writestr(item, b)
        rc, err = run_main(["--checkpoint", bad, "--vocab", vocab, "--out", out])
        self.assertEqual(rc, 1)
        self.assertIn("storage 3 holds", err)
        self.assert_no_output(out)
        # --force over an existing model: a failure keeps the old one intact
        os.makedirs(out)
        with open(os.path.join(out, "model.json"), "w") as f:
            f.write("old")
        rc, err = run_main(["--checkpoint", bad, "--vocab", vocab, "--out", out, "--force"])
        self.assertEqual(rc, 1)
        self.assertEqual(os.listdir(out), ["model.json"])
        self.assertEqual(read_bytes(os.path.join(out, "model.json")), b"old")

    def test_overwrite_rules(self):
        ck, vocab, _ = self.make()
        out = self.p("out")
        os.makedirs(out)
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out])  # empty dir: fine
        self.assertEqual(rc, 0, err)
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out, "--name", "second"])
        self.assertEqual(rc, 1)
        self.assertIn("--force", err)
        self.assertEqual(load_json(os.path.join(out, "model.json"))["name"], "cmrclip")
        rc, err = run_main(["--checkpoint", ck, "--vocab", vocab, "--out", out, "--name", "second", "--force"])
        self.assertEqual(rc, 0, err)
        self.assertEqual(load_json(os.path.join(out, "model.json"))["name"], "second")
        self.assertEqual(sorted(os.listdir(self.tmp)), ["ck.bin", "out", "vocab.txt"])

    def test_not_a_checkpoint(self):
        vocab = self.p("vocab.txt")
        write_vocab(vocab, 20)
        junk = self.p("junk.bin")
        with open(junk, "wb") as f:
            f.write(b"\x80\x02}q\x00.")  # a legacy (non-zip) pickle
        rc, err = run_main(["--checkpoint", junk, "--vocab", vocab, "--out", self.p("o")])
        self.assertEqual(rc, 1)
        self.assertIn("not a zip archive", err)
        rc, err = run_main(["--checkpoint", self.p("nope.bin"), "--vocab", vocab, "--out", self.p("o")])
        self.assertEqual(rc, 1)
        self.assertIn("nope.bin", err)


if __name__ == "__main__":
    if not os.path.exists(FIXTURE):
        sys.stderr.write("test_convert: NOTE fixture %s is absent: the fixture tests are skipped\n" % FIXTURE)
    unittest.main(verbosity=2)
