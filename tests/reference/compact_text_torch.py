#!/usr/bin/python3
"""PyTorch reference for the compact model's text tower, its loss and AdamW
(docs/compact-model.md), and the generator of tests/fixtures/compact_text/.

Written from the document, independently of model/compact_text.c and
model/compact_loss.c.  Run with Debian's PyTorch (python3-torch 1.13) --
NOT the pyenv python3 on PATH:

    /usr/bin/python3 tests/reference/compact_text_torch.py

Deterministic (torch.manual_seed(SEED)); rerunning rewrites identical files:

  ngrams.json
      golden n-gram ids of ~30 texts (stored as hex bytes: some are not
      valid UTF-8) under several (buckets, max_n, max_words), plus the
      texts of the tower's batch
  compact_text.safetensors
      text.*    a small tower (buckets 64, dim 8, hidden 16, embed 8):
                parameters, the n-gram ids of a batch of 4 texts (one empty,
                one with repeated n-grams), the bag, the hidden layer, the
                embedding, a random d_emb and the parameter gradients
      loss.*    the symmetric InfoNCE of B=5, E=8 embeddings: value and the
                gradients w.r.t. img, txt and logit_scale
      loss_grouped.*  the same loss over B=6 pairs of which 3 and 2 share
                their texts (group: each pair's text), soft targets
      adamw.*   5 steps of torch.optim.AdamW on 40 parameters, decayed by a
                mask (two param groups): params, exp_avg, exp_avg_sq after
                each step

Expected values are computed in float64 from the float32 inputs and
rounded to float32 (AdamW runs in float32, as the C step does); the float32
runs' deviation from that reference is printed.
"""

import json
import math
import os
import re
import struct
import sys

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(ROOT, "tests", "fixtures", "compact_text")
SEED = 20261128

# ----------------------------------------------------------------------------
# featurizer (docs/compact-model.md, "Text tower" 1-3)

M64 = (1 << 64) - 1
WORD = re.compile(rb"[a-z0-9\x80-\xff]+")


def fnv1a64(data):
    h = 0xCBF29CE484222325
    for b in data:
        h = ((h ^ b) * 0x100000001B3) & M64
    return h


NEG_TRIGGERS = {b"no", b"not", b"without", b"absent", b"absence", b"negative", b"none"}
NEG_ENDS = {b"but", b"however", b"although", b"though", b"except", b"apart", b"yet"}
NEG_STOPS = b".;:!?\n"
NEG_SCOPE = 8
# Lexicon "cmr-v2": "non" negates the one word after it (docs/compact-model.md).
NEG_PREFIX = b"non"


# The clinical lexicon "cmr-v1" (docs/compact-model.md): a word -> its canonical words.
LEXICON = {
    b"lv": b"left ventricle",
    b"rv": b"right ventricle",
    b"la": b"left atrium",
    b"ra": b"right atrium",
    b"lvef": b"left ventricle ejection fraction",
    b"rvef": b"right ventricle ejection fraction",
    b"ef": b"ejection fraction",
    b"lvh": b"left ventricle hypertrophy",
    b"lvot": b"left ventricle outflow tract",
    b"lge": b"late gadolinium enhancement",
    b"hcm": b"hypertrophic cardiomyopathy",
    b"dcm": b"dilated cardiomyopathy",
    b"nicm": b"non ischemic cardiomyopathy",
    b"icm": b"ischemic cardiomyopathy",
    b"arvc": b"arrhythmogenic right ventricle cardiomyopathy",
    b"arvd": b"arrhythmogenic right ventricle cardiomyopathy",
    b"lvnc": b"left ventricle non compaction",
    b"mi": b"infarct",
    b"cmr": b"cardiac mri",
    b"ventricular": b"ventricle",
    b"ventricles": b"ventricle",
    b"atrial": b"atrium",
    b"atria": b"atrium",
    b"dilation": b"dilated",
    b"dilatation": b"dilated",
    b"enlarged": b"dilated",
    b"enlargement": b"dilated",
    b"hypertrophic": b"hypertrophy",
    b"hypertrophied": b"hypertrophy",
    b"amyloid": b"amyloidosis",
    b"ischaemic": b"ischemic",
    b"ischemia": b"ischemic",
    b"ischaemia": b"ischemic",
    b"infarction": b"infarct",
    b"infarcted": b"infarct",
    b"infarcts": b"infarct",
    b"enhancing": b"enhancement",
    b"enhanced": b"enhancement",
    b"delayed": b"late",
    b"impairment": b"dysfunction",
    b"impaired": b"dysfunction",
    b"reduced": b"dysfunction",
    b"sarcoid": b"sarcoidosis",
    b"noncompaction": b"non compaction",
    b"noncompacted": b"non compaction",
    b"nonischemic": b"non ischemic",
    b"nonischaemic": b"non ischemic",
    b"cardiomyopathies": b"cardiomyopathy",
    b"trabeculated": b"trabeculation",
    b"trabeculations": b"trabeculation",
    b"myocardial": b"myocardium",
    b"fibrosis": b"scar",
    b"scarring": b"scar",
    b"akinetic": b"akinesis",
    b"akinesia": b"akinesis",
    b"hypokinetic": b"hypokinesis",
    b"hypokinesia": b"hypokinesis",
    b"dyskinetic": b"dyskinesis",
    b"dyskinesia": b"dyskinesis",
    b"pericardial": b"pericardium",
    b"effusions": b"effusion",
    b"aortic": b"aorta",
    b"oedema": b"edema",
    b"septal": b"septum",
    b"apical": b"apex",
    b"midwall": b"mid wall",
}


def marked_words(text, lexicon=0):
    """The words, those in a negation's scope written with a leading '~'
    (docs/compact-model.md): up to 8 words after a trigger, ended early by
    . ; : ! ? or a newline between words, or by a contrasting word.  With the
    lexicon (1: "cmr-v1", 2: "cmr-v2"), a listed word is replaced by its
    canonical words first (each counts as a word, in a scope too); with
    cmr-v2, "non" (written or from the lexicon) marks the word after it."""
    out, scope, prefix, prev_end = [], 0, False, 0
    for m in WORD.finditer(text):
        if any(c in NEG_STOPS for c in text[prev_end:m.start()]):
            scope, prefix = 0, False
        prev_end = m.end()
        w = m.group()
        if w in NEG_TRIGGERS:
            scope, prefix = NEG_SCOPE, False
            out.append(w)
        elif w in NEG_ENDS:
            scope, prefix = 0, False
            out.append(w)
        else:
            for x in (LEXICON.get(w, w).split(b" ") if lexicon else [w]):
                if lexicon >= 2 and x == NEG_PREFIX:
                    prefix = True
                    out.append(x)
                    continue
                if scope > 0 or prefix:
                    out.append(b"~" + x)
                else:
                    out.append(x)
                scope = max(scope - 1, 0)
                prefix = False
    return out


def ngram_ids(text, buckets=16384, max_n=3, max_words=512, lexicon=0):
    """text: bytes.  bytes.lower() lower-cases ASCII only, as the doc asks."""
    words = marked_words(text.lower(), int(lexicon))[:max_words]
    ids = []
    for i in range(len(words)):
        for n in range(1, max_n + 1):
            if i + n <= len(words):
                ids.append(fnv1a64(b" ".join(words[i:i + n])) % buckets)
    return ids


LONG = " ".join("word%d" % (i % 97) for i in range(600))

TEXTS = [
    "",
    "   ",
    "...,;:!?",
    "No late gadolinium enhancement.",
    "no late gadolinium enhancement",
    "NO LATE GADOLINIUM ENHANCEMENT",
    "Late gadolinium enhancement is present.",
    "No CMR evidence of cardiomyopathy, myocarditis or prior infarction; LGE elsewhere.",
    "Without scar: normal. However not dilated but mildly impaired\nno\nLGE",
    "not not no absent absence negative none without one two three four five six seven eight nine ten",
    "LVEF 32%. Severely dilated left ventricle with global hypokinesis.",
    "Normal LV size and function (LVEF 61%). No LGE.",
    "Asymmetric septal hypertrophy, max wall thickness 21 mm; patchy mid-wall LGE.",
    "Diffuse subendocardial LGE; difficult nulling -- consistent with cardiac amyloidosis.",
    "Transmural LGE in the LAD territory (anterior/anteroseptal), >50% thickness.",
    "Myocardite aiguë: rehaussement tardif sous-épicardique latéral.",
    "Kardiomyopathie, Ödem, Größe normal",
    "naïve café résumé",
    "ÉPANCHEMENT péricardique modéré",
    "RV 45ml/m2, LV 78ml/m2, EF=55%",
    "no no no late late enhancement no no",
    "T1 1100ms, T2 52ms, ECV 0.38",
    "Pericardial effusion: small.\nNo tamponade.\tFollow-up in 6 months.",
    "Mildly reduced RVEF (42%); RV dilated (EDVi 120 ml/m²).",
    "Sarcoidosis? Patchy mid-wall & epicardial LGE, basal septum + inferolateral wall.",
    "a",
    "A-B_C",
    "x" * 40,
    "Hypertrophic cardiomyopathy with SAM and LVOT obstruction (peak gradient 64 mmHg).",
    "Non-ischemic dilated cardiomyopathy, no scar.",
    "No evidence of myocardial infarction, no edema, no fibrosis.",
    "Ischemic cardiomyopathy: prior inferior MI, 75% transmural scar, non-viable.",
    LONG,
]
# Bytes that are not valid UTF-8 still make words (every byte >= 0x80 does).
RAW = [b"caf\xe9 \xff\xfeLGE\x80 no", b"\x00nul\x00byte\x01"]
# "non" under cmr-v2 (after RAW, so that the earlier texts keep their indices).
NON_TEXTS = [
    "Non-ischemic dilated cardiomyopathy; NICM with non-viable segments.",
    "Ischemic cardiomyopathy, not non-ischemic. LV non-compaction (LVNC), noncompaction.",
    "non. non no non-ischemic scar, non but non",
    "NON NON ischemic",
]

VARIANTS = [
    (64, 3, 512), (16384, 3, 512), (1000003, 3, 512),
    (16384, 1, 512), (16384, 2, 512), (97, 5, 512), (16384, 3, 4), (16384, 8, 7),
]

BATCH = [
    "Severely dilated LV, LVEF 25%, no late gadolinium enhancement.",
    "",
    "no no no late late enhancement no no",
    "Asymmetric septal hypertrophy 19 mm with patchy mid-wall LGE at the RV insertion points; "
    "normal biventricular systolic function; no pericardial effusion.",
]


def golden():
    texts = [t.encode("utf-8") for t in TEXTS] + RAW
    n_before_v2 = len(texts)
    texts += [t.encode("utf-8") for t in NON_TEXTS]
    cases = []
    for ti, t in enumerate(texts):
        for buckets, max_n, max_words in VARIANTS:
            if (buckets, max_n, max_words) not in ((64, 3, 512), (16384, 3, 512)) and ti % 3:
                continue  # the odd configurations on every third text only
            for lexicon in (0, 1, 2):
                if lexicon and (buckets, max_n, max_words) not in ((16384, 3, 512), (16384, 3, 4), (97, 5, 512)):
                    continue
                if lexicon == 2 and ti < n_before_v2 and ti % 2:
                    continue  # cmr-v2 on the new texts and on every other earlier one
                cases.append({"text": ti, "buckets": buckets, "max_n": max_n, "max_words": max_words,
                              "lexicon": lexicon, "ids": ngram_ids(t, buckets, max_n, max_words, lexicon)})
    # Checks of the reference itself.
    assert ngram_ids(b"") == [] and ngram_ids(b" .,") == []
    assert len(ngram_ids(b"a b c d")) == 4 + 3 + 2
    assert ngram_ids(b"No LGE", 16384) == ngram_ids(b"no   lge", 16384)
    assert marked_words(b"no late gadolinium enhancement. lge") == [b"no", b"~late", b"~gadolinium",
                                                                     b"~enhancement", b"lge"]
    assert marked_words(b"no scar but lge") == [b"no", b"~scar", b"but", b"lge"]
    assert marked_words(b"no lge. rv enlarged", True) == [b"no", b"~late", b"~gadolinium", b"~enhancement",
                                                          b"right", b"ventricle", b"dilated"]
    assert marked_words(b"non-ischemic dcm", 2) == [b"non", b"~ischemic", b"dilated", b"cardiomyopathy"]
    assert marked_words(b"nicm", 2) == marked_words(b"non-ischemic cardiomyopathy", 2)
    assert marked_words(b"no non-ischemic scar", 2) == [b"no", b"non", b"~ischemic", b"~scar"]
    assert marked_words(b"non-ischemic", 1) == [b"non", b"ischemic"]
    assert len(ngram_ids(LONG.encode())) == 3 * 512 - 3
    assert ngram_ids(b"a b", 1 << 20)[1] == fnv1a64(b"a b") % (1 << 20)
    return {"texts": [t.hex() for t in texts], "cases": cases,
            "batch": [t.encode("utf-8").hex() for t in BATCH]}


# ----------------------------------------------------------------------------
# the tower

class TextTower(torch.nn.Module):
    def __init__(self, buckets, dim, hidden, embed):
        super().__init__()
        self.embed = torch.nn.EmbeddingBag(buckets, dim, mode="mean")
        self.fc = torch.nn.Linear(dim, hidden)
        self.proj = torch.nn.Linear(hidden, embed)

    def forward(self, ids, offsets):
        """ids: all texts' n-gram ids concatenated; offsets: each text's start."""
        bag = self.embed(ids, offsets)  # mean; an empty bag is zeros
        h = F.relu(self.fc(bag))
        return bag, h, self.proj(h)


def tower(batch_ids):
    buckets, dim, hidden, embed = 64, 8, 16, 8
    torch.manual_seed(SEED)
    m32 = TextTower(buckets, dim, hidden, embed)
    with torch.no_grad():
        m32.embed.weight.normal_(0, 0.5)
        m32.fc.bias.uniform_(-0.3, 0.3)
        m32.proj.bias.uniform_(-0.3, 0.3)
    flat = torch.tensor([i for ids in batch_ids for i in ids], dtype=torch.int64)
    starts = torch.tensor([0] + [len(x) for x in batch_ids[:-1]], dtype=torch.int64).cumsum(0)
    d_emb = torch.randn(len(batch_ids), embed)
    out = {}
    res = {}
    for dt in (torch.float64, torch.float32):
        m = TextTower(buckets, dim, hidden, embed).to(dt)
        m.load_state_dict({k: v.to(dt) for k, v in m32.state_dict().items()})
        bag, h, emb = m(flat, starts)
        (emb * d_emb.to(dt)).sum().backward()
        res[dt] = {"bag": bag, "hidden": h, "emb": emb,
                   **{"grad." + k: p.grad for k, p in m.named_parameters()}}
    # Check of the reference: EmbeddingBag's mean equals index_select + mean.
    for b, ids in enumerate(batch_ids):
        w = m32.embed.weight.double()
        want = w[torch.tensor(ids)].mean(0) if ids else torch.zeros(dim, dtype=torch.float64)
        assert torch.allclose(res[torch.float64]["bag"][b], want, atol=1e-12)
    for name, p in m32.named_parameters():
        out["text." + name] = p.detach()
    out["text.ids"] = flat.to(torch.int32)
    out["text.offsets"] = torch.tensor([0] + [len(x) for x in batch_ids], dtype=torch.int64).cumsum(0)
    out["text.d_emb"] = d_emb
    for k, v in res[torch.float64].items():
        out["text." + k] = v.detach().float()
    report("text tower", res)
    return out


# ----------------------------------------------------------------------------
# loss

def clip_loss(img, txt, logit_scale):
    """Both directions' mean cross-entropy, summed (CMR-CLIP)."""
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = logit_scale.exp() * i @ t.t()
    target = torch.arange(img.shape[0])
    return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)


def loss_case(prefix, b, e, scale):
    img32, txt32 = torch.randn(b, e), torch.randn(b, e) * 3
    ls32 = torch.tensor([scale], dtype=torch.float32)
    res = {}
    for dt in (torch.float64, torch.float32):
        img, txt, ls = (x.to(dt).requires_grad_() for x in (img32, txt32, ls32))
        value = clip_loss(img, txt, ls[0])
        value.backward()
        res[dt] = {"value": value.detach().reshape(1), "d_img": img.grad, "d_txt": txt.grad,
                   "d_logit_scale": ls.grad}
    report(prefix, res)
    out = {prefix + "img": img32, prefix + "txt": txt32, prefix + "logit_scale": ls32}
    out.update({prefix + k: v.float() for k, v in res[torch.float64].items()})
    return out


def clip_loss_grouped(img, txt, logit_scale, group):
    """The same with shared texts: pairs whose texts are one (equal group)
    are each other's partners, the target of every row and column spread
    evenly over them (soft-target cross-entropy)."""
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    logits = logit_scale.exp() * i @ t.t()
    g = torch.tensor(group)
    same = (g[:, None] == g[None, :]).to(logits.dtype)
    target = same / same.sum(dim=1, keepdim=True)
    row = -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
    col = -(target * F.log_softmax(logits.t(), dim=1)).sum(dim=1).mean()
    return row + col


def loss_grouped_case(prefix, group, e, scale):
    b = len(group)
    img32, txt32 = torch.randn(b, e), torch.randn(b, e) * 3
    ls32 = torch.tensor([scale], dtype=torch.float32)
    res = {}
    for dt in (torch.float64, torch.float32):
        img, txt, ls = (x.to(dt).requires_grad_() for x in (img32, txt32, ls32))
        value = clip_loss_grouped(img, txt, ls[0], group)
        value.backward()
        res[dt] = {"value": value.detach().reshape(1), "d_img": img.grad, "d_txt": txt.grad,
                   "d_logit_scale": ls.grad}
    report(prefix, res)
    out = {prefix + "img": img32, prefix + "txt": txt32, prefix + "logit_scale": ls32,
           prefix + "group": torch.tensor(group, dtype=torch.float32)}
    out.update({prefix + k: v.float() for k, v in res[torch.float64].items()})
    return out


# ----------------------------------------------------------------------------
# AdamW

def f32(x):
    """The float32 value as a Python float: the C side holds hyperparameters
    in float, so the fixture uses values both sides represent exactly."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def adamw(n=40, steps=5):
    lr, b1, b2, eps, wd = f32(1e-2), f32(0.9), f32(0.999), f32(1e-8), f32(0.1)
    p0 = torch.randn(n)
    mask = (torch.rand(n) < 0.6).to(torch.int32)
    grads = torch.randn(steps, n) * torch.logspace(-3, 1, n)  # a range of magnitudes
    dec, nodec = mask.bool(), ~mask.bool()
    pd, pn = torch.nn.Parameter(p0[dec].clone()), torch.nn.Parameter(p0[nodec].clone())
    opt = torch.optim.AdamW([{"params": [pd], "weight_decay": wd}, {"params": [pn], "weight_decay": 0.0}],
                            lr=lr, betas=(b1, b2), eps=eps)
    ps, ms, vs = [], [], []
    for s in range(steps):
        pd.grad, pn.grad = grads[s][dec].clone(), grads[s][nodec].clone()
        opt.step()
        for lst, get in ((ps, lambda p: p.detach()), (ms, lambda p: opt.state[p]["exp_avg"]),
                         (vs, lambda p: opt.state[p]["exp_avg_sq"])):
            full = torch.empty(n)
            full[dec], full[nodec] = get(pd), get(pn)
            lst.append(full.clone())
    return {"adamw.hyper": torch.tensor([lr, b1, b2, eps, wd], dtype=torch.float32),
            "adamw.p0": p0, "adamw.mask": mask, "adamw.grads": grads,
            "adamw.params": torch.stack(ps), "adamw.exp_avg": torch.stack(ms), "adamw.exp_avg_sq": torch.stack(vs)}


# ----------------------------------------------------------------------------

def report(what, res):
    """The float32 run against the float64 reference, max|d| / max|ref|."""
    worst = 0.0
    for k, ref in res[torch.float64].items():
        got = res[torch.float32][k].double()
        scale = ref.abs().max().item()
        err = (got - ref).abs().max().item() / (scale if scale > 0 else 1.0)
        worst = max(worst, err)
    print("%-14s float32 torch vs float64 reference: max rel error %.2e" % (what, worst))
    assert worst < 1e-5, what


def write_safetensors(path, tensors):
    dtypes = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}
    header, blobs, off = {}, [], 0
    for name, t in tensors.items():
        raw = t.detach().contiguous().numpy().tobytes()  # little-endian hosts only
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    assert sys.byteorder == "little"
    torch.set_num_threads(1)
    os.makedirs(OUT, exist_ok=True)
    g = golden()
    with open(os.path.join(OUT, "ngrams.json"), "w") as f:
        json.dump(g, f, separators=(",", ":"))
        f.write("\n")
    batch_ids = [ngram_ids(bytes.fromhex(t), 64) for t in g["batch"]]
    assert batch_ids[1] == [] and len(set(batch_ids[2])) < len(batch_ids[2])
    out = tower(batch_ids)
    torch.manual_seed(SEED + 1)
    out.update(loss_case("loss.", 5, 8, math.log(1 / 0.05)))
    out.update(loss_case("loss_small_scale.", 5, 8, -0.7))
    out.update(adamw())
    # after everything else: the earlier cases' random inputs stay as they were
    torch.manual_seed(SEED + 2)
    out.update(loss_grouped_case("loss_grouped.", [0, 1, 0, 3, 1, 0], 8, math.log(1 / 0.05)))
    write_safetensors(os.path.join(OUT, "compact_text.safetensors"), out)
    print("wrote %s (%d golden cases, %d tensors)" % (OUT, len(g["cases"]), len(out)))


if __name__ == "__main__":
    main()
