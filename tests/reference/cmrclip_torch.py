#!/usr/bin/python3
"""Independent PyTorch reference of CMR-CLIP (video: Space-Time ViT "Frozen in
Time"; text: Hugging Face-style BERT; ReLU+Linear projections).

Written from ../../../shared/docs/cmrclip-reference.md and checked against the
public Makiya11/CMRCLIP code (model/video_transformer.py, model/cmrclip.py);
no code is copied.  Module and parameter names reproduce the published
state-dict keys (video_model.*, text_model.*, vid_proj.1.*, txt_proj.1.*).

Every module works in whatever dtype its parameters have: `.double()` a copy
to get a float64 reference of the same float32 weights.

Semantics of the divided attention (VarAttention in the public code), for a
token sequence [CLS, (f=0,n=0..N-1), (f=1,n=0..N-1), ...] of length 1+F*N:
  * q, k, v are the three consecutive D-wide slices of qkv(x); q is multiplied
    by head_dim**-0.5 before the dot products.
  * CLS query: attends over ALL 1+F*N keys (same in time and space attention);
    its output is used (it is part of the attention output that goes to proj).
  * time attention: the patch query at (f, n) attends over [CLS, (0,n), (1,n),
    ..., (F-1,n)] -- CLS key first, then the same position in every frame.
  * space attention: the patch query at (f, n) attends over [CLS, (f,0), ...,
    (f,N-1)] -- CLS key first, then every patch of the same frame.
Block, x its input:  t = x + TimeAttn(norm3(x)); s = SpaceAttn(norm1(t));
y = x + s; out = y + MLP(norm2(y)).
"""

import math

import torch
import torch.nn.functional as Fn
from torch import nn


# ----------------------------------------------------------------------------
# video tower

class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(Fn.gelu(self.fc1(x)))  # exact (erf) GELU


def _softmax_attend(q, k, v):
    """q [..., Tq, d] (already scaled), k/v [..., Tk, d] -> [..., Tq, d]."""
    return torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v


class DividedAttention(nn.Module):
    """`attn` (space) or `timeattn` (time) of a SpaceTimeBlock."""

    def __init__(self, dim, heads):
        super().__init__()
        assert dim % heads == 0
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, frames, mode):
        B, T, D = x.shape
        h = self.heads
        dh = D // h
        assert (T - 1) % frames == 0
        N = (T - 1) // frames
        qkv = self.qkv(x)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]
        # [B, T, D] -> [B, h, T, dh]
        q, k, v = (t.reshape(B, T, h, dh).permute(0, 2, 1, 3) for t in (q, k, v))
        q = q * self.scale

        # CLS query over every key
        cls_out = _softmax_attend(q[:, :, :1], k, v)           # [B,h,1,dh]

        # patch tokens as [B, h, F, N, dh]
        qp, kp, vp = (t[:, :, 1:].reshape(B, h, frames, N, dh) for t in (q, k, v))
        ck, cv = k[:, :, :1], v[:, :, :1]                      # [B,h,1,dh]
        if mode == "time":
            # groups: one per spatial position n, sequence over frames
            qg, kg, vg = (t.transpose(2, 3) for t in (qp, kp, vp))  # [B,h,N,F,dh]
            groups = N
        elif mode == "space":
            qg, kg, vg = qp, kp, vp                               # [B,h,F,N,dh]
            groups = frames
        else:
            raise ValueError(mode)
        ckg = ck.unsqueeze(2).expand(B, h, groups, 1, dh)
        cvg = cv.unsqueeze(2).expand(B, h, groups, 1, dh)
        kg = torch.cat((ckg, kg), dim=3)                        # CLS key first
        vg = torch.cat((cvg, vg), dim=3)
        out = _softmax_attend(qg, kg, vg)
        if mode == "time":
            out = out.transpose(2, 3)                           # back to [B,h,F,N,dh]
        out = out.reshape(B, h, frames * N, dh)
        out = torch.cat((cls_out, out), dim=2)                  # [B,h,T,dh]
        out = out.permute(0, 2, 1, 3).reshape(B, T, D)
        return self.proj(out)


class SpaceTimeBlock(nn.Module):
    def __init__(self, dim, heads, mlp_dim, eps=1e-6):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = DividedAttention(dim, heads)
        self.timeattn = DividedAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)
        self.norm3 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x, frames, trace=None, prefix=""):
        t = x + self.timeattn(self.norm3(x), frames, "time")
        s = self.attn(self.norm1(t), frames, "space")
        y = x + s                                   # residual base is x, not t
        out = y + self.mlp(self.norm2(y))
        if trace is not None:
            trace[prefix + ".time"] = t
            trace[prefix + ".out"] = out
        return out


class PatchEmbed(nn.Module):
    def __init__(self, channels, dim, patch):
        super().__init__()
        self.proj = nn.Conv2d(channels, dim, kernel_size=patch, stride=patch)

    def forward(self, video):
        B, F, C, H, W = video.shape
        x = self.proj(video.reshape(B * F, C, H, W))          # [B*F, D, h, w]
        x = x.flatten(2).transpose(1, 2)                       # [B*F, N, D], row-major patches
        return x.reshape(B, F * x.shape[1], x.shape[2])        # frame-major


class SpaceTimeTransformer(nn.Module):
    def __init__(self, dim=768, depth=12, heads=12, mlp_dim=3072, patch=16,
                 image_size=224, channels=3, num_frames=64, eps=1e-6):
        super().__init__()
        self.num_frames = num_frames
        self.patches = (image_size // patch) ** 2
        self.patch_embed = PatchEmbed(channels, dim, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patches + 1, dim))
        self.temporal_embed = nn.Parameter(torch.zeros(1, num_frames, dim))
        self.blocks = nn.ModuleList(
            [SpaceTimeBlock(dim, heads, mlp_dim, eps) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=eps)

    def tokens(self, video):
        B, F = video.shape[:2]
        assert 1 <= F <= self.num_frames
        x = self.patch_embed(video)                            # [B, F*N, D]
        N = self.patches
        assert x.shape[1] == F * N
        D = x.shape[2]
        pos = self.pos_embed[0, 1:].unsqueeze(0) + self.temporal_embed[0, :F].unsqueeze(1)
        x = x + pos.reshape(1, F * N, D)                       # patch (f,n): pos[1+n] + temporal[f]
        cls = (self.cls_token[0, 0] + self.pos_embed[0, 0]).expand(B, 1, D)
        return torch.cat((cls, x), dim=1)

    def forward(self, video, trace=None, prefix="video"):
        F = video.shape[1]
        x = self.tokens(video)
        if trace is not None:
            trace[prefix + ".tokens"] = x
        for i, blk in enumerate(self.blocks):
            x = blk(x, F, trace, f"{prefix}.block{i}")
        cls = self.norm(x)[:, 0]
        if trace is not None:
            trace[prefix + ".norm_cls"] = cls
        return cls


# ----------------------------------------------------------------------------
# text tower (Hugging Face BertModel names)

class BertEmbeddings(nn.Module):
    def __init__(self, vocab, hidden, max_position, type_vocab, eps):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(max_position, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.register_buffer("position_ids", torch.arange(max_position, dtype=torch.int64).unsqueeze(0))

    def forward(self, input_ids):
        L = input_ids.shape[1]
        pos = self.position_ids[:, :L]
        e = (self.word_embeddings(input_ids) + self.position_embeddings(pos)
             + self.token_type_embeddings(torch.zeros_like(input_ids)))
        return self.LayerNorm(e)


class BertSelfAttention(nn.Module):
    def __init__(self, hidden, heads):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x, additive_mask):
        B, L, D = x.shape
        h, dh = self.heads, D // self.heads
        q, k, v = (m(x).reshape(B, L, h, dh).permute(0, 2, 1, 3)
                   for m in (self.query, self.key, self.value))
        scores = (q @ k.transpose(-1, -2)) / math.sqrt(dh) + additive_mask
        ctx = torch.softmax(scores, dim=-1) @ v
        return ctx.permute(0, 2, 1, 3).reshape(B, L, D)


class BertSelfOutput(nn.Module):
    def __init__(self, hidden, eps):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, hidden, heads, eps):
        super().__init__()
        self.self = BertSelfAttention(hidden, heads)
        self.output = BertSelfOutput(hidden, eps)

    def forward(self, x, additive_mask):
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.dense = nn.Linear(hidden, inter)

    def forward(self, x):
        return Fn.gelu(self.dense(x))  # exact (erf) GELU


class BertOutput(nn.Module):
    def __init__(self, hidden, inter, eps):
        super().__init__()
        self.dense = nn.Linear(inter, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertLayer(nn.Module):
    def __init__(self, hidden, heads, inter, eps):
        super().__init__()
        self.attention = BertAttention(hidden, heads, eps)
        self.intermediate = BertIntermediate(hidden, inter)
        self.output = BertOutput(hidden, inter, eps)

    def forward(self, x, additive_mask):
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    def __init__(self, hidden, layers, heads, inter, eps):
        super().__init__()
        self.layer = nn.ModuleList([BertLayer(hidden, heads, inter, eps) for _ in range(layers)])


class BertPooler(nn.Module):  # present in the checkpoint, never used
    def __init__(self, hidden):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


def additive_mask(attention_mask, dtype):
    """[B, L] of 0/1 -> [B, 1, 1, L]: 0 for kept keys, finfo(dtype).min for
    padded keys (as current Hugging Face BertModel does)."""
    m = attention_mask.to(dtype)[:, None, None, :]
    return (1.0 - m) * torch.finfo(dtype).min


class BertModel(nn.Module):
    def __init__(self, vocab=28996, hidden=768, layers=12, heads=12, inter=3072,
                 max_position=512, type_vocab=2, eps=1e-12):
        super().__init__()
        self.embeddings = BertEmbeddings(vocab, hidden, max_position, type_vocab, eps)
        self.encoder = BertEncoder(hidden, layers, heads, inter, eps)
        self.pooler = BertPooler(hidden)

    def forward(self, input_ids, attention_mask, trace=None, prefix="text"):
        x = self.embeddings(input_ids)
        if trace is not None:
            trace[prefix + ".embeddings"] = x
        am = additive_mask(attention_mask, x.dtype)
        for i, layer in enumerate(self.encoder.layer):
            x = layer(x, am)
            if trace is not None:
                trace[f"{prefix}.layer{i}.out"] = x
        return x  # last hidden state


def mean_pool(last_hidden, attention_mask):
    m = attention_mask.to(last_hidden.dtype).unsqueeze(-1)
    return (last_hidden * m).sum(1) / torch.clamp(m.sum(1), min=1e-9)


# ----------------------------------------------------------------------------
# the whole model

class CMRCLIP(nn.Module):
    def __init__(self, cfg):
        """cfg: dict shaped like model.json ("embed_dim", "video", "text")."""
        super().__init__()
        v, t = cfg["video"], cfg["text"]
        self.video_model = SpaceTimeTransformer(
            v["dim"], v["depth"], v["heads"], v["mlp_dim"], v["patch"],
            v["image_size"], v["channels"], v["num_frames"], v.get("ln_eps", 1e-6))
        self.text_model = BertModel(
            t["vocab_size"], t["hidden"], t["layers"], t["heads"], t["intermediate"],
            t["max_position"], t["type_vocab"], t.get("ln_eps", 1e-12))
        self.vid_proj = nn.Sequential(nn.ReLU(), nn.Linear(v["dim"], cfg["embed_dim"]))
        self.txt_proj = nn.Sequential(nn.ReLU(), nn.Linear(t["hidden"], cfg["embed_dim"]))

    def compute_video(self, video, trace=None, prefix="video"):
        e = self.vid_proj(self.video_model(video, trace, prefix))
        if trace is not None:
            trace[prefix + ".embed"] = e
        return e

    def compute_text(self, input_ids, attention_mask, trace=None, prefix="text"):
        h = self.text_model(input_ids, attention_mask, trace, prefix)
        pooled = mean_pool(h, attention_mask)
        e = self.txt_proj(pooled)
        if trace is not None:
            trace[prefix + ".mean_pooled"] = pooled
            trace[prefix + ".embed"] = e
        return e
