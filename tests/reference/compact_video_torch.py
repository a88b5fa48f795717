#!/usr/bin/python3
"""The compact model's video tower (docs/compact-model.md) in PyTorch, and the
writer of tests/fixtures/compact_video/, against which tests/test_compact_video.c
checks model/compact_video.c's forward and backward.

Written from the document alone, with stock modules (nn.Conv2d, nn.Linear),
independently of the C code.  Run with Debian's PyTorch (PyTorch 1.13, numpy)
-- NOT the pyenv python3 on PATH:

    /usr/bin/python3 tests/reference/compact_video_torch.py

Deterministic (torch.manual_seed); rerunning rewrites identical files.  It
writes small.safetensors, for a small configuration (CONFIG below, also in
__metadata__ "config" as JSON), and small_max.safetensors, the same with
"spatial_pool": "mean+max" (every channel's spatial max beside its mean):

  video.*            the parameters, by their layout names, PyTorch shapes
  input              [B][F][C][S][S]
  conv1 ... conv5    every convolution's output after ReLU, CHANNELS-LAST
                     [B*F][H][W][C] (the C tower's storage order)
  g                  [B*F][feat] spatial means (then maxima)
  pooled             [B][6 feat]; z [B][hidden]; emb [B][E]
  d_emb              [B][E] a random upstream gradient
  grad.video.*       d(sum(emb * d_emb)) / d(parameter), PyTorch shapes

Expected values (stages and gradients) are float64 computations (autograd in
float64) from the float32 parameters and inputs, rounded to float32; the
script also runs the float32 model and asserts it is close to them.
"""

import json
import os
import sys

import torch
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_model_fixtures import write_safetensors  # noqa: E402  (the repository's own writer)
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "compact_video")
SEED = 20261127

# Small but with every feature: 2 input channels (the generic input path),
# an odd size (30 -> 15 -> 8 -> 4 -> 2 -> 2: padding on one side only at the
# stride-2 layers), F = 8 (quarters of 2 frames), a stride-1 last layer, and
# widths that take every path of the C product kernel (tiles of 32 and 16
# columns and the scalar rest: 4, 20, 48 channels; 36, 180 im2col columns).
CONFIG = {"frames": 8, "size": 30, "channels": 2,
          "conv_channels": [4, 20, 16, 32, 48], "conv_strides": [2, 2, 2, 2, 1],
          "video_hidden": 32, "embed_dim": 16}
BATCH = 3
STD_EPS = 1e-5


class CompactVideo(nn.Module):
    """docs/compact-model.md, "Video tower"."""

    def __init__(self, cfg):
        super().__init__()
        self.frames = cfg["frames"]
        chans = [cfg["channels"]] + list(cfg["conv_channels"])
        self.convs = nn.ModuleList(
            nn.Conv2d(chans[i], chans[i + 1], 3, stride=cfg["conv_strides"][i], padding=1)
            for i in range(5))
        self.spatial_max = cfg.get("spatial_pool", "mean") == "mean+max"
        feat = chans[-1] * (2 if self.spatial_max else 1)
        self.fc = nn.Linear(6 * feat, cfg["video_hidden"])
        self.proj = nn.Linear(cfg["video_hidden"], cfg["embed_dim"])

    def named_flat(self):
        """Parameters by the layout's names (model/compact.c)."""
        out = {}
        for i, c in enumerate(self.convs):
            out["video.conv%d.weight" % (i + 1)] = c.weight
            out["video.conv%d.bias" % (i + 1)] = c.bias
        out["video.fc.weight"] = self.fc.weight
        out["video.fc.bias"] = self.fc.bias
        out["video.proj.weight"] = self.proj.weight
        out["video.proj.bias"] = self.proj.bias
        return out

    def forward(self, video, trace=None):
        b, f, c, s, _ = video.shape
        x = video.reshape(b * f, c, s, s)
        for i, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if trace is not None:
                trace["conv%d" % (i + 1)] = x.permute(0, 2, 3, 1)  # channels-last
        g = x.mean(dim=(2, 3))                       # [B*F][feat]
        if self.spatial_max:
            g = torch.cat([g, x.flatten(2).max(dim=2).values], dim=1)
        gf = g.reshape(b, f, -1)
        mean = gf.mean(dim=1)
        std = torch.sqrt(((gf - mean[:, None, :]) ** 2).mean(dim=1) + STD_EPS)
        q = f // 4
        quarters = [gf[:, i * q:(i + 1) * q, :].mean(dim=1) for i in range(4)]
        pooled = torch.cat([mean, std] + quarters, dim=1)
        z = torch.relu(self.fc(pooled))
        emb = self.proj(z)
        if trace is not None:
            trace.update(g=g, pooled=pooled, z=z, emb=emb)
        return emb


def init_(model, gen):
    """Realistic scales: He-normal convolutions and layers, small random
    biases (so that ReLU masks are mixed, not all-on)."""
    with torch.no_grad():
        for name, p in model.named_flat().items():
            if name.endswith("weight"):
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def reference(cfg, model32, video32, d_emb32):
    """Stages and gradients in float64 from the float32 values."""
    model = CompactVideo(cfg).double()
    model.load_state_dict({k: v.double() for k, v in model32.state_dict().items()})
    trace = {}
    emb = model(video32.double(), trace)
    (emb * d_emb32.double()).sum().backward()
    grads = {"grad." + k: p.grad for k, p in model.named_flat().items()}
    return trace, grads


def write_fixture(cfg, name):
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    model = CompactVideo(cfg)
    init_(model, gen)
    c = cfg
    video = torch.randn((BATCH, c["frames"], c["channels"], c["size"], c["size"]), generator=gen)
    d_emb = torch.randn((BATCH, c["embed_dim"]), generator=gen)

    trace, grads = reference(cfg, model, video, d_emb)

    # The float32 model is near the float64 reference (sanity, not the test).
    t32 = {}
    emb32 = model(video, t32)
    (emb32 * d_emb).sum().backward()
    def rel(a, b):
        return float((a.double() - b.double()).abs().max() / b.double().abs().max())
    worst = max(rel(t32[k], trace[k]) for k in trace)
    worst = max(worst, max(rel(p.grad, grads["grad." + k]) for k, p in model.named_flat().items()))
    print("float32 PyTorch vs float64 reference: max relative error %.2e" % worst)
    assert worst < 1e-5, worst
    # ReLU masks are mixed at every layer (a dead or linear layer tests little).
    for i in range(1, 6):
        frac = float((trace["conv%d" % i] > 0).double().mean())
        print("conv%d: %.2f of outputs positive" % (i, frac))
        assert 0.2 < frac < 0.9, frac
    # The std pooling's derivative, analytically (doc: (g - mean)/(F std)).
    g = trace["g"].detach().reshape(BATCH, c["frames"], -1).requires_grad_(True)
    m = g.mean(dim=1, keepdim=True)
    sd = torch.sqrt(((g - m) ** 2).mean(dim=1, keepdim=True) + STD_EPS)
    sd.sum().backward()
    assert torch.allclose(g.grad, (g - m) / (c["frames"] * sd), rtol=1e-10, atol=1e-12)

    tensors = {}
    tensors.update({k: v.detach() for k, v in model.named_flat().items()})
    tensors["input"] = video
    for k in ("conv1", "conv2", "conv3", "conv4", "conv5", "g", "pooled", "z", "emb"):
        tensors[k] = trace[k].detach().to(torch.float32)
    tensors["d_emb"] = d_emb
    tensors.update({k: v.to(torch.float32) for k, v in grads.items()})
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, name)
    write_safetensors(path, tensors, {"config": json.dumps(cfg), "batch": str(BATCH), "seed": str(SEED),
                                      "generator": "tests/reference/compact_video_torch.py"})
    print("wrote %s (%d bytes)" % (path, os.path.getsize(path)))


def main():
    write_fixture(CONFIG, "small.safetensors")
    write_fixture(dict(CONFIG, spatial_pool="mean+max"), "small_max.safetensors")


if __name__ == "__main__":
    sys.exit(main())
