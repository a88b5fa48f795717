#!/usr/bin/env python3
"""Convert the published CMR-CLIP checkpoint into a cmrsearch model directory.

usage:
  convert_cmrclip.py --checkpoint pytorch_model.bin --vocab vocab.txt \\
      [--config config.json] [--tokenizer-config tokenizer_config.json] \\
      --out DIR [--name cmrclip] [--dtype f32|f16] [--force] [--json]

Inputs are the files of makiyeah/CMRCLIP (pytorch_model.bin, config.json)
and of emilyalsentzer/Bio_ClinicalBERT (vocab.txt, tokenizer_config.json),
fetched by hand.  Pure Python 3 standard library: no PyTorch, no numpy.

The checkpoint is a torch.save zip archive (data.pkl + one raw storage per
tensor), read with a restricted unpickler: only the globals a plain state
dict needs are accepted (collections.OrderedDict, torch._utils.
_rebuild_tensor_v2 / _rebuild_parameter, the torch.*Storage types); any
other global is refused by name and nothing in the file is executed.

Sizes come from the tensors (a leading "module." is stripped from every
name) and every tensor the cmrsearch loader needs is checked by name and
shape.  config.json (the published one, or the repository's configs/
cmr.json) is optional; read from it when present: video_params.num_frames
and projection_dim (must agree with the tensors), video_params.num_heads,
text_params.num_attention_heads and *.layer_norm_eps, or the same from a
"cmrsearch_test_architecture" object (video_heads, text_heads,
video_ln_eps, text_ln_eps) as test models carry.  Head counts otherwise
default to width / 64, eps to 1e-6 (video) and 1e-12 (text).
tokenizer_config.json gives do_lower_case (default true), strip_accents
(default null) and tokenize_chinese_chars (default true), as Hugging Face's
BertTokenizer; vocab.txt must have one line per word_embeddings row.

Writes DIR/model.json, DIR/weights.safetensors (floating tensors in
--dtype, integer tensors unchanged; __metadata__ names the checkpoint and
its SHA-256) and DIR/vocab.txt (a verbatim copy), first into a temporary
directory next to DIR, renamed into place only when complete.  A non-empty
DIR is refused unless --force.  Progress goes to stderr when it is a
terminal; --json prints a summary (tensors, parameters, bytes, sha256 of
the weights file) on stdout.  Exit status 0 on success, 1 on a conversion
error (one line on stderr), 2 on bad usage.  Format: docs/model-format.md.
"""

import argparse
import collections
import hashlib
import io
import json
import math
import os
import pickle
import re
import shutil
import struct
import sys
import tempfile
import zipfile

CONVERTER = "convert_cmrclip.py 1"
CHUNK_ELEMS = 1 << 20
MAX_ELEMS = 1 << 32  # per tensor; guards against expanded (stride-0) views of absurd size


class ConvertError(Exception):
    """A conversion failure with a message meant for the user."""


# ---------------------------------------------------------------------------
# torch zip checkpoint reading


class StorageType:
    """Stands for a legacy torch.<X>Storage class named in the pickle."""

    def __init__(self, name, dtype, itemsize):
        self.name = name
        self.dtype = dtype  # safetensors dtype name of the elements
        self.itemsize = itemsize

    def __repr__(self):
        return "torch." + self.name


STORAGE_TYPES = {
    name: StorageType(name, dt, sz)
    for name, dt, sz in (
        ("FloatStorage", "F32", 4),
        ("DoubleStorage", "F64", 8),
        ("HalfStorage", "F16", 2),
        ("BFloat16Storage", "BF16", 2),
        ("LongStorage", "I64", 8),
        ("IntStorage", "I32", 4),
        ("ShortStorage", "I16", 2),
        ("CharStorage", "I8", 1),
        ("ByteStorage", "U8", 1),
        ("BoolStorage", "BOOL", 1),
    )
}

FLOAT_DTYPES = ("F32", "F64", "F16", "BF16")
ITEMSIZE = {"F32": 4, "F64": 8, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1, "BOOL": 1}


class StorageRef:
    def __init__(self, stype, key, location, numel):
        self.stype = stype
        self.key = key
        self.location = location
        self.numel = numel


class TensorRef:
    """A tensor as pickled: a view (offset, size, stride in elements) of a storage."""

    def __init__(self, storage, offset, size, stride):
        self.storage = storage
        self.offset = offset
        self.size = size
        self.stride = stride

    @property
    def dtype(self):
        return self.storage.stype.dtype

    @property
    def numel(self):
        return math.prod(self.size)


class _TypeMarker:
    def __init__(self, name):
        self.name = name


_TENSOR_TYPES = {
    ("torch", "Tensor"): _TypeMarker("torch.Tensor"),
    ("torch.nn.parameter", "Parameter"): _TypeMarker("torch.nn.parameter.Parameter"),
}


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    if not isinstance(storage, StorageRef):
        raise ConvertError("malformed checkpoint: a tensor does not refer to a storage")
    if not (_is_int(storage_offset) and isinstance(size, tuple) and isinstance(stride, tuple)
            and len(size) == len(stride) and all(_is_int(v) and v >= 0 for v in size + stride)
            and storage_offset >= 0):
        raise ConvertError("malformed checkpoint: bad tensor offset/size/stride")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad=False, backward_hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter) or not isinstance(new_type, _TypeMarker) \
            or not isinstance(args, tuple):
        raise ConvertError("malformed checkpoint: unsupported tensor subclass reconstruction")
    return func(*args)


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter_with_state,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
}


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict; refuses every global a state dict does not need."""

    def find_class(self, module, name):
        key = (module, name)
        if key in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[key]
        if key in _TENSOR_TYPES:
            return _TENSOR_TYPES[key]
        if module == "torch" and name in STORAGE_TYPES:
            return STORAGE_TYPES[name]
        raise pickle.UnpicklingError(
            "refused global %s.%s in the checkpoint's pickle: a state dict does not need it "
            "(the file may be malicious or not a plain state dict)" % (module, name))

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError("unsupported persistent id in the checkpoint: %r" % (pid[:1],))
        _, stype, key, location, numel = pid
        if not isinstance(stype, StorageType) or not isinstance(key, str) or not _is_int(numel) or numel < 0:
            raise pickle.UnpicklingError("malformed storage reference in the checkpoint")
        return StorageRef(stype, key, str(location), numel)


class Checkpoint:
    """An opened torch.save zip archive: its state dict (TensorRefs) and storages."""

    def __init__(self, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except zipfile.BadZipFile:
            raise ConvertError("%s: not a zip archive; only the torch.save zip format (torch >= 1.6) is "
                               "supported" % path) from None
        except OSError as e:
            raise ConvertError("%s: %s" % (path, e.strerror or e)) from None
        try:
            self._open(path)
        except BaseException:
            self.zip.close()
            raise

    def _open(self, path):
        names = self.zip.namelist()
        pkls = [n for n in names if n == "data.pkl" or n.endswith("/data.pkl")]
        pkls = [n for n in pkls if n.count("/") <= 1]
        if len(pkls) != 1:
            raise ConvertError("%s: not a torch.save archive (expected one <prefix>/data.pkl, found %d)"
                               % (path, len(pkls)))
        self.prefix = pkls[0][: -len("data.pkl")]
        self.names = set(names)
        self.byteorder = "little"
        bo = self.prefix + "byteorder"
        if bo in self.names:
            self.byteorder = self.zip.read(bo).decode("ascii", "replace").strip()
            if self.byteorder not in ("little", "big"):
                raise ConvertError("%s: unknown byteorder %r" % (path, self.byteorder))
        try:
            obj = RestrictedUnpickler(io.BytesIO(self.zip.read(pkls[0]))).load()
        except ConvertError:
            raise
        except pickle.UnpicklingError as e:
            raise ConvertError("%s: %s" % (path, e)) from None
        except Exception as e:  # truncated or corrupt pickles raise many kinds
            raise ConvertError("%s: unreadable data.pkl (%s: %s)" % (path, type(e).__name__, e)) from None
        self._cache_key = None
        self._cache = None
        self.state = self._state_dict(obj)

    def _state_dict(self, obj):
        if isinstance(obj, dict) and not any(isinstance(v, TensorRef) for v in obj.values()):
            for k in ("state_dict", "model", "module"):
                if isinstance(obj.get(k), dict):
                    obj = obj[k]
                    break
        if not isinstance(obj, dict):
            raise ConvertError("%s: the pickled object is a %s, not a state dict" % (self.path, type(obj).__name__))
        state = collections.OrderedDict()
        for k, v in obj.items():
            if not isinstance(k, str):
                raise ConvertError("%s: state dict key %r is not a string" % (self.path, k))
            if not isinstance(v, TensorRef):
                raise ConvertError("%s: state dict entry %s is a %s, not a tensor" % (self.path, k, type(v).__name__))
            name = k[len("module."):] if k.startswith("module.") else k
            if name in state:
                raise ConvertError("%s: tensor %s appears twice (with and without 'module.')" % (self.path, name))
            state[name] = v
        if not state:
            raise ConvertError("%s: the state dict holds no tensors" % self.path)
        return state

    def close(self):
        self._cache = None
        self.zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def storage_bytes(self, ref):
        """The raw bytes of a storage, checked against its declared size."""
        if self._cache_key == ref.key:
            return self._cache
        member = self.prefix + "data/" + ref.key
        if member not in self.names:
            raise ConvertError("%s: storage %s (%s) is missing from the archive" % (self.path, ref.key, member))
        data = self.zip.read(member)
        need = ref.numel * ref.stype.itemsize
        if len(data) < need:
            raise ConvertError("%s: storage %s holds %d bytes, %d expected" % (self.path, ref.key, len(data), need))
        self._cache_key, self._cache = ref.key, data
        return data


def tensor_bytes(ckpt, name, t):
    """The tensor's elements, contiguous row-major, little-endian, in its own dtype."""
    isz = t.storage.stype.itemsize
    n = t.numel
    if n == 0:
        return b""
    if n > MAX_ELEMS:
        raise ConvertError("tensor %s has %d elements, more than this converter accepts" % (name, n))
    last = t.offset + sum((s - 1) * st for s, st in zip(t.size, t.stride))
    if last >= t.storage.numel:
        raise ConvertError("tensor %s reaches element %d of a storage of %d elements" % (name, last, t.storage.numel))
    buf = memoryview(ckpt.storage_bytes(t.storage))
    # Contiguous: the expected strides for the dimensions larger than 1.
    contiguous = True
    expect = 1
    for s, st in zip(reversed(t.size), reversed(t.stride)):
        if s != 1 and st != expect:
            contiguous = False
            break
        expect *= s
    if contiguous:
        out = bytes(buf[t.offset * isz:(t.offset + n) * isz])
    else:
        out = bytearray(n * isz)
        dims = len(t.size)
        inner = t.size[-1]
        inner_stride = t.stride[-1]
        run = inner * isz
        pos = 0
        idx = [0] * (dims - 1)
        while True:
            base = t.offset + sum(i * st for i, st in zip(idx, t.stride[:-1]))
            if inner_stride == 1:
                out[pos:pos + run] = buf[base * isz:base * isz + run]
            else:
                for j in range(inner):
                    e = (base + j * inner_stride) * isz
                    out[pos + j * isz:pos + (j + 1) * isz] = buf[e:e + isz]
            pos += run
            d = dims - 2
            while d >= 0:
                idx[d] += 1
                if idx[d] < t.size[d]:
                    break
                idx[d] = 0
                d -= 1
            if d < 0:
                break
        out = bytes(out)
    if ckpt.byteorder == "big" and isz > 1:
        b = bytearray(out)
        for k in range(isz // 2):
            lo = b[k::isz]
            b[k::isz] = b[isz - 1 - k::isz]
            b[isz - 1 - k::isz] = lo
        out = bytes(b)
    return out


# ---------------------------------------------------------------------------
# dtype conversion (little-endian bytes in, little-endian bytes out)


def _bf16_to_f32(data):
    out = bytearray(len(data) * 2)
    out[2::4] = data[0::2]
    out[3::4] = data[1::2]
    return bytes(out)


def convert_dtype(name, data, src, dst):
    if src == dst:
        return data
    if src == "BF16" and dst == "F32":
        return _bf16_to_f32(data)
    if src == "BF16":
        data, src = _bf16_to_f32(data), "F32"
    code = {"F32": "f", "F64": "d", "F16": "e"}
    sc, dc = code[src], code[dst]
    isz = ITEMSIZE[src]
    n = len(data) // isz
    parts = []
    for i in range(0, n, CHUNK_ELEMS):
        m = min(CHUNK_ELEMS, n - i)
        vals = struct.unpack_from("<%d%s" % (m, sc), data, i * isz)
        try:
            parts.append(struct.pack("<%d%s" % (m, dc), *vals))
        except (OverflowError, struct.error):
            raise ConvertError("tensor %s has values outside the %s range; convert with --dtype f32"
                               % (name, "float16" if dst == "F16" else "float32")) from None
    return b"".join(parts)


# ---------------------------------------------------------------------------
# architecture


def _shape(state, name):
    t = state.get(name)
    return None if t is None else list(t.size)


def _count_indexed(state, prefix):
    idx = set()
    pat = re.compile(re.escape(prefix) + r"(\d+)\.")
    for k in state:
        m = pat.match(k)
        if m:
            idx.add(int(m.group(1)))
    n = len(idx)
    if n and idx != set(range(n)):
        missing = sorted(set(range(max(idx) + 1)) - idx)
        raise ConvertError("checkpoint: %s%d.* is missing (found indices up to %d)" % (prefix, missing[0], max(idx)))
    return n


def _need(state, name, ndim):
    s = _shape(state, name)
    if s is None:
        raise ConvertError("checkpoint: required tensor %s is missing" % name)
    if len(s) != ndim:
        raise ConvertError("checkpoint: tensor %s has shape %s, expected %d dimensions" % (name, s, ndim))
    return s


def _config_params(cfg):
    """(video_params, text_params, top-level args) of either published config layout."""
    if not isinstance(cfg, dict):
        raise ConvertError("config: not a JSON object")
    args = cfg
    arch = cfg.get("arch")
    if isinstance(arch, dict) and isinstance(arch.get("args"), dict):
        args = arch["args"]
    vp = args.get("video_params") or {}
    tp = args.get("text_params") or {}
    if not isinstance(vp, dict) or not isinstance(tp, dict):
        raise ConvertError("config: video_params/text_params are not objects")
    # Not in the published config: test models state head counts and eps here.
    test = args.get("cmrsearch_test_architecture", cfg.get("cmrsearch_test_architecture")) or {}
    if not isinstance(test, dict):
        raise ConvertError("config: cmrsearch_test_architecture is not an object")
    vp, tp = dict(vp), dict(tp)
    for src, dst, key in (("video_heads", vp, "num_heads"), ("text_heads", tp, "num_attention_heads"),
                          ("video_ln_eps", vp, "layer_norm_eps"), ("text_ln_eps", tp, "layer_norm_eps")):
        if src in test and key not in dst:
            dst[key] = test[src]
    return vp, tp, args


def _cfg_int(d, key, where):
    v = d.get(key)
    if v is None:
        return None
    if not _is_int(v) or v <= 0:
        raise ConvertError("config: %s.%s must be a positive integer, got %r" % (where, key, v))
    return v


def _cfg_eps(d, where, default):
    v = d.get("layer_norm_eps")
    if v is None:
        return default
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v < 1:
        raise ConvertError("config: %s layer_norm_eps must be a number in (0, 1), got %r" % (where, v))
    return float(v)


def _heads(dim, cfg_heads, what, key):
    if cfg_heads is not None:
        heads = cfg_heads
    else:
        if dim % 64 or dim < 64:
            raise ConvertError("%s: cannot infer the number of heads for width %d (not a multiple of 64); "
                               "give %s in config.json" % (what, dim, key))
        heads = dim // 64
    if dim % heads:
        raise ConvertError("%s: width %d is not divisible by %d heads" % (what, dim, heads))
    return heads


def detect(state, cfg):
    """Architecture sizes from the tensors, and the full list of required tensors with shapes."""
    vp, tp, args = _config_params(cfg) if cfg is not None else ({}, {}, {})
    V, T = "video_model.", "text_model."

    dim = _need(state, V + "cls_token", 3)[2]
    pw = _need(state, V + "patch_embed.proj.weight", 4)
    channels, patch = pw[1], pw[2]
    if pw[2] != pw[3]:
        raise ConvertError("checkpoint: %spatch_embed.proj.weight %s: patches must be square" % (V, pw))
    rows = _need(state, V + "pos_embed", 3)[1]
    side = math.isqrt(max(rows - 1, 0))
    if rows < 2 or side * side != rows - 1:
        raise ConvertError("checkpoint: %spos_embed has %d rows, not 1 + a square number of patches" % (V, rows))
    image_size = side * patch
    num_frames = _need(state, V + "temporal_embed", 3)[1]
    depth = _count_indexed(state, V + "blocks.")
    if depth == 0:
        raise ConvertError("checkpoint: no %sblocks.* tensors (not a CMR-CLIP state dict?)" % V)
    mlp_dim = _need(state, V + "blocks.0.mlp.fc1.weight", 2)[0]
    heads = _heads(dim, _cfg_int(vp, "num_heads", "video_params"), "video tower", "video_params.num_heads")

    wshape = _need(state, T + "embeddings.word_embeddings.weight", 2)
    vocab_size, hidden = wshape
    max_position = _need(state, T + "embeddings.position_embeddings.weight", 2)[0]
    type_vocab = _need(state, T + "embeddings.token_type_embeddings.weight", 2)[0]
    layers = _count_indexed(state, T + "encoder.layer.")
    if layers == 0:
        raise ConvertError("checkpoint: no %sencoder.layer.* tensors (not a CMR-CLIP state dict?)" % T)
    intermediate = _need(state, T + "encoder.layer.0.intermediate.dense.weight", 2)[0]
    theads = _heads(hidden, _cfg_int(tp, "num_attention_heads", "text_params"), "text tower",
                    "text_params.num_attention_heads")
    embed_dim = _need(state, "vid_proj.1.weight", 2)[0]

    cfg_frames = _cfg_int(vp, "num_frames", "video_params")
    if cfg_frames is not None and cfg_frames != num_frames:
        raise ConvertError("config: video_params.num_frames is %d but %stemporal_embed has %d frames"
                           % (cfg_frames, V, num_frames))
    cfg_proj = _cfg_int(args, "projection_dim", "config")
    if cfg_proj is not None and cfg_proj != embed_dim:
        raise ConvertError("config: projection_dim is %d but vid_proj.1.weight projects to %d" % (cfg_proj, embed_dim))

    req = collections.OrderedDict()
    req[V + "patch_embed.proj.weight"] = [dim, channels, patch, patch]
    req[V + "patch_embed.proj.bias"] = [dim]
    req[V + "cls_token"] = [1, 1, dim]
    req[V + "pos_embed"] = [1, rows, dim]
    req[V + "temporal_embed"] = [1, num_frames, dim]
    for i in range(depth):
        b = "%sblocks.%d." % (V, i)
        for n in ("norm1", "norm2", "norm3"):
            req[b + n + ".weight"] = [dim]
            req[b + n + ".bias"] = [dim]
        for a in ("attn", "timeattn"):
            req[b + a + ".qkv.weight"] = [3 * dim, dim]
            req[b + a + ".qkv.bias"] = [3 * dim]
            req[b + a + ".proj.weight"] = [dim, dim]
            req[b + a + ".proj.bias"] = [dim]
        req[b + "mlp.fc1.weight"] = [mlp_dim, dim]
        req[b + "mlp.fc1.bias"] = [mlp_dim]
        req[b + "mlp.fc2.weight"] = [dim, mlp_dim]
        req[b + "mlp.fc2.bias"] = [dim]
    req[V + "norm.weight"] = [dim]
    req[V + "norm.bias"] = [dim]
    e = T + "embeddings."
    req[e + "word_embeddings.weight"] = [vocab_size, hidden]
    req[e + "position_embeddings.weight"] = [max_position, hidden]
    req[e + "token_type_embeddings.weight"] = [type_vocab, hidden]
    req[e + "LayerNorm.weight"] = [hidden]
    req[e + "LayerNorm.bias"] = [hidden]
    for i in range(layers):
        b = "%sencoder.layer.%d." % (T, i)
        for n in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
            req[b + n + ".weight"] = [hidden, hidden]
            req[b + n + ".bias"] = [hidden]
        for n in ("attention.output.LayerNorm", "output.LayerNorm"):
            req[b + n + ".weight"] = [hidden]
            req[b + n + ".bias"] = [hidden]
        req[b + "intermediate.dense.weight"] = [intermediate, hidden]
        req[b + "intermediate.dense.bias"] = [intermediate]
        req[b + "output.dense.weight"] = [hidden, intermediate]
        req[b + "output.dense.bias"] = [hidden]
    req["vid_proj.1.weight"] = [embed_dim, dim]
    req["vid_proj.1.bias"] = [embed_dim]
    req["txt_proj.1.weight"] = [embed_dim, hidden]
    req["txt_proj.1.bias"] = [embed_dim]

    problems = []
    for name, shape in req.items():
        t = state.get(name)
        if t is None:
            problems.append("missing tensor %s %s" % (name, shape))
        elif list(t.size) != shape:
            problems.append("tensor %s has shape %s, expected %s" % (name, list(t.size), shape))
        elif t.dtype not in FLOAT_DTYPES:
            problems.append("tensor %s has dtype %s, expected a floating type" % (name, t.dtype))
    if problems:
        more = "" if len(problems) <= 5 else " (and %d more)" % (len(problems) - 5)
        raise ConvertError("checkpoint is not a consistent CMR-CLIP state dict: %s%s" % ("; ".join(problems[:5]), more))

    video = collections.OrderedDict(
        [("dim", dim), ("depth", depth), ("heads", heads), ("mlp_dim", mlp_dim), ("patch", patch),
         ("image_size", image_size), ("channels", channels), ("num_frames", num_frames),
         ("ln_eps", _cfg_eps(vp, "video", 1e-6))])
    text = collections.OrderedDict(
        [("vocab_size", vocab_size), ("hidden", hidden), ("layers", layers), ("heads", theads),
         ("intermediate", intermediate), ("max_position", max_position), ("type_vocab", type_vocab),
         ("ln_eps", _cfg_eps(tp, "text", 1e-12))])
    return embed_dim, video, text


# ---------------------------------------------------------------------------
# inputs


def read_json(path, what):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConvertError("%s %s: %s" % (what, path, e.strerror or e)) from None
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s %s: not valid JSON (%s)" % (what, path, e)) from None


def tokenizer_options(path):
    opts = collections.OrderedDict([("do_lower_case", True), ("strip_accents", None),
                                    ("tokenize_chinese_chars", True)])
    if path is None:
        return opts
    tc = read_json(path, "tokenizer config")
    if not isinstance(tc, dict):
        raise ConvertError("tokenizer config %s: not a JSON object" % path)
    for key in opts:
        if key in tc:
            v = tc[key]
            ok = isinstance(v, bool) or (key == "strip_accents" and v is None)
            if not ok:
                raise ConvertError("tokenizer config %s: %s must be true/false%s, got %r"
                                   % (path, key, " or null" if key == "strip_accents" else "", v))
            opts[key] = v
    return opts


def vocab_count(path):
    """Number of tokens as Hugging Face's load_vocab counts them (one a line)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConvertError("vocab %s: %s" % (path, e.strerror or e)) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConvertError("vocab %s: not UTF-8 (byte %d)" % (path, e.start)) from None
    if "\r" in text:
        raise ConvertError("vocab %s: has CR line endings; give the file with LF line endings" % path)
    if not text:
        return 0
    return text.count("\n") + (0 if text.endswith("\n") else 1)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 22)
            if not b:
                break
            h.update(b)
    return h.hexdigest()


# ---------------------------------------------------------------------------
# output


class Progress:
    def __init__(self):
        self.on = sys.stderr.isatty()

    def say(self, msg, final=False):
        if self.on:
            sys.stderr.write("\r\x1b[K" + msg + ("\n" if final else ""))
            sys.stderr.flush()


def write_safetensors(path, ckpt, out_dtype, metadata, progress):
    """Write every tensor; returns (count, parameters, bytes, sha256)."""
    items = []
    for i, (name, t) in enumerate(ckpt.state.items()):
        dt = out_dtype if t.dtype in FLOAT_DTYPES else t.dtype
        items.append((name, t, dt))
    # Larger element sizes first keeps every tensor naturally aligned.
    items = [it for _, it in sorted(enumerate(items), key=lambda p: (-ITEMSIZE[p[1][2]], p[0]))]
    header = collections.OrderedDict()
    header["__metadata__"] = metadata
    off = 0
    for name, t, dt in items:
        if t.numel > MAX_ELEMS:
            raise ConvertError("tensor %s has %d elements, more than this converter accepts" % (name, t.numel))
        nb = t.numel * ITEMSIZE[dt]
        header[name] = collections.OrderedDict([("dtype", dt), ("shape", list(t.size)), ("data_offsets", [off, off + nb])])
        off += nb
    hjson = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hjson += b" " * (-len(hjson) % 8)
    h = hashlib.sha256()
    params = 0
    with open(path, "wb") as f:
        def put(b):
            f.write(b)
            h.update(b)
        put(struct.pack("<Q", len(hjson)))
        put(hjson)
        for k, (name, t, dt) in enumerate(items):
            progress.say("writing tensor %d/%d %s" % (k + 1, len(items), name))
            data = convert_dtype(name, tensor_bytes(ckpt, name, t), t.dtype, dt)
            assert len(data) == header[name]["data_offsets"][1] - header[name]["data_offsets"][0]
            put(data)
            params += t.numel
        f.flush()
        os.fsync(f.fileno())
    progress.say("wrote %d tensors" % len(items), final=True)
    return len(items), params, 8 + len(hjson) + off, h.hexdigest()


def model_json(name, embed_dim, video, text, tok):
    text = collections.OrderedDict(text)
    text.update(tok)
    m = collections.OrderedDict()
    m["format"] = "cmrsearch-model"
    m["format_version"] = 1
    m["name"] = name
    m["architecture"] = "cmrclip"
    m["weights"] = "weights.safetensors"
    m["vocab"] = "vocab.txt"
    m["embed_dim"] = embed_dim
    m["temperature"] = 0.05
    m["video"] = video
    m["text"] = text
    m["input"] = collections.OrderedDict([("recipe", "cmrclip")])
    return json.dumps(m, indent=2) + "\n"


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def convert(args):
    progress = Progress()
    out = os.path.abspath(args.out)
    if os.path.lexists(out):
        if not os.path.isdir(out) or os.path.islink(out):
            raise ConvertError("--out %s exists and is not a directory" % out)
        if os.listdir(out) and not args.force:
            raise ConvertError("--out %s exists and is not empty (use --force to replace it)" % out)
    if not re.fullmatch(r"[^\x00-\x1f\"\\]{1,128}", args.name):
        raise ConvertError("--name must be 1-128 printable characters without quotes or backslashes")

    tok = tokenizer_options(args.tokenizer_config)
    cfg = read_json(args.config, "config") if args.config else None
    nvocab = vocab_count(args.vocab)

    progress.say("reading %s" % args.checkpoint)
    with Checkpoint(args.checkpoint) as ckpt:
        return _convert(args, progress, out, tok, cfg, nvocab, ckpt)


def _convert(args, progress, out, tok, cfg, nvocab, ckpt):
    embed_dim, video, text = detect(ckpt.state, cfg)
    if nvocab != text["vocab_size"]:
        raise ConvertError("vocab %s has %d tokens but text_model.embeddings.word_embeddings.weight has %d rows"
                           % (args.vocab, nvocab, text["vocab_size"]))
    progress.say("hashing %s" % args.checkpoint)
    src_sha = sha256_file(args.checkpoint)
    metadata = collections.OrderedDict([
        ("source", "%s sha256:%s" % (os.path.basename(args.checkpoint), src_sha)),
        ("converter", CONVERTER),
    ])

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(out), dir=parent)
    old = None
    try:
        n, params, nbytes, wsha = write_safetensors(os.path.join(tmp, "weights.safetensors"), ckpt,
                                                    "F16" if args.dtype == "f16" else "F32", metadata, progress)
        with open(os.path.join(tmp, "model.json"), "w", encoding="utf-8") as f:
            f.write(model_json(args.name, embed_dim, video, text, tok))
            f.flush()
            os.fsync(f.fileno())
        shutil.copyfile(args.vocab, os.path.join(tmp, "vocab.txt"))
        with open(os.path.join(tmp, "vocab.txt"), "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o755)
        _fsync_dir(tmp)
        if os.path.isdir(out) and os.listdir(out):
            old = tempfile.mkdtemp(prefix=".%s.old-" % os.path.basename(out), dir=parent)
            os.rename(out, os.path.join(old, "d"))
        os.rename(tmp, out)  # replaces an empty directory
        tmp = None
        _fsync_dir(parent)
    except BaseException:
        if old is not None and not os.path.exists(out):
            os.rename(os.path.join(old, "d"), out)
        raise
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return collections.OrderedDict([
        ("out", out), ("name", args.name), ("dtype", args.dtype), ("tensors", n), ("parameters", params),
        ("bytes", nbytes), ("sha256", wsha), ("source", metadata["source"]), ("embed_dim", embed_dim),
        ("video", video), ("text", text),
    ])


def main(argv=None):
    p = argparse.ArgumentParser(
        prog="convert_cmrclip.py",
        usage=argparse.SUPPRESS,
        description=__doc__,
        epilog="example: convert_cmrclip.py --checkpoint pytorch_model.bin --config config.json "
               "--vocab vocab.txt --tokenizer-config tokenizer_config.json --out models/cmrclip",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="torch.save zip archive (makiyeah/CMRCLIP pytorch_model.bin)")
    p.add_argument("--config", help="the published config.json (optional: head counts, checks)")
    p.add_argument("--vocab", required=True, help="Bio_ClinicalBERT vocab.txt (copied verbatim)")
    p.add_argument("--tokenizer-config", help="Bio_ClinicalBERT tokenizer_config.json (optional)")
    p.add_argument("--out", required=True, help="output model directory")
    p.add_argument("--name", default="cmrclip", help="model name in model.json (default cmrclip)")
    p.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="floating tensors' dtype (default f32)")
    p.add_argument("--force", action="store_true", help="replace an existing non-empty --out")
    p.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    args = p.parse_args(argv)
    try:
        summary = convert(args)
    except ConvertError as e:
        sys.stderr.write("convert_cmrclip: %s\n" % e)
        return 1
    except OSError as e:
        sys.stderr.write("convert_cmrclip: %s%s\n" % (e.strerror or e, (": " + e.filename) if e.filename else ""))
        return 1
    if args.json:
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
