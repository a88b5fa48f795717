#!/bin/bash
# cmrsearch train end to end, small: a phantom archive indexed without a
# model, trained twice from the same seed (identical weights), trained with a
# checkpoint and killed after its first epoch then resumed (identical to the
# uninterrupted run), a resume with other options refused, and the trained
# model used to index and search.
# usage: train_e2e.sh CMRSEARCH CMR-PHANTOM PYTHON3
set -euo pipefail
cmrsearch=$1 phantom=$2 python=$3
tmp=$(mktemp -d /tmp/cmr-train-e2e-XXXXXX)
trap 'rm -rf "$tmp"' EXIT

"$phantom" --out "$tmp/archive" --studies 16 --seed 31 --fast --threads 2 --sr-reports 0
"$cmrsearch" init --db "$tmp/db" >/dev/null
"$cmrsearch" index --db "$tmp/db" --no-model "$tmp/archive" >/dev/null
train() { "$cmrsearch" train --db "$tmp/db" --seed 5 --epochs 4 --batch 4 --val-fraction 0.25 --patience 0 --json "$@"; }

train --out "$tmp/a" >"$tmp/a.json"
train --out "$tmp/b" >/dev/null
cmp "$tmp/a/weights.safetensors" "$tmp/b/weights.safetensors" || { echo "same seed, different weights" >&2; exit 1; }

# Killed once the first epoch's checkpoint is on disk, then resumed.
train --out "$tmp/c" --checkpoint "$tmp/ckpt" >/dev/null &
pid=$!
for _ in $(seq 1 600); do [ -f "$tmp/ckpt" ] && break; sleep 0.05; done
kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
[ -f "$tmp/ckpt" ] || { echo "no checkpoint written" >&2; exit 1; }
train --out "$tmp/c" --checkpoint "$tmp/ckpt" >"$tmp/c.json"
grep -q '"resumed": true' "$tmp/c.json" || { echo "did not resume" >&2; cat "$tmp/c.json" >&2; exit 1; }
cmp "$tmp/a/weights.safetensors" "$tmp/c/weights.safetensors" || { echo "resumed run differs" >&2; exit 1; }
if "$cmrsearch" train --db "$tmp/db" --seed 5 --epochs 4 --batch 8 --out "$tmp/d" --checkpoint "$tmp/ckpt" \
    2>"$tmp/err" >/dev/null; then
    echo "a checkpoint of other options was accepted" >&2; exit 1
fi
grep -q "other training options" "$tmp/err"

# The trained model indexes and answers.
"$cmrsearch" init --db "$tmp/db2" >/dev/null
"$cmrsearch" index --db "$tmp/db2" --model "$tmp/a" "$tmp/archive" >/dev/null
"$cmrsearch" search --db "$tmp/db2" --model "$tmp/a" --text "dilated cardiomyopathy" -k 3 --json >"$tmp/s.json"

# The store moves to another model: refused without --reembed, then every
# case re-embedded in one transaction; searches then need the new model.
"$cmrsearch" search --db "$tmp/db2" --model "$tmp/b" --text "dcm" -k 1 >/dev/null  # same weights as a
"$cmrsearch" train --db "$tmp/db" --seed 6 --epochs 2 --batch 4 --val-fraction 0 --out "$tmp/e" >/dev/null
if "$cmrsearch" index --db "$tmp/db2" --model "$tmp/e" "$tmp/archive" 2>"$tmp/err" >/dev/null; then
    echo "a second model was mixed into the store" >&2; exit 1
fi
grep -q -- "--reembed" "$tmp/err" || { echo "the refusal does not say how to move the store" >&2; cat "$tmp/err" >&2; exit 1; }
"$cmrsearch" index --db "$tmp/db2" --reembed --model "$tmp/e" --json >"$tmp/re.json"
"$cmrsearch" verify --db "$tmp/db2" >/dev/null
if "$cmrsearch" search --db "$tmp/db2" --model "$tmp/a" --text "dcm" -k 1 2>/dev/null >/dev/null; then
    echo "the old model still searches the moved store" >&2; exit 1
fi
"$cmrsearch" search --db "$tmp/db2" --model "$tmp/e" --text "dilated cardiomyopathy" -k 3 --json >"$tmp/s2.json"
# A study that cannot be read again: nothing changes unless --keep-unreadable.
mv "$tmp/archive" "$tmp/archive.moved"
if "$cmrsearch" index --db "$tmp/db2" --reembed --model "$tmp/a" 2>"$tmp/err" >/dev/null; then
    echo "re-embedding without the studies succeeded" >&2; exit 1
fi
grep -q "could not be read again" "$tmp/err"
"$cmrsearch" search --db "$tmp/db2" --model "$tmp/e" --text "dcm" -k 1 >/dev/null
mv "$tmp/archive.moved" "$tmp/archive"
# train --continue: fine-tune the store's model and move the store to it.
"$cmrsearch" train --db "$tmp/db2" --continue --model "$tmp/e" --out "$tmp/f" --epochs 1 --batch 4 \
    --val-fraction 0 --seed 7 --json >"$tmp/f.json"
"$cmrsearch" verify --db "$tmp/db2" >/dev/null
"$cmrsearch" search --db "$tmp/db2" --model "$tmp/f" --text "dcm" -k 1 --json >"$tmp/s3.json"
# The input recipes: --lge-frames picks "cine+lge" (its share in model.json),
# 0 the CMR-CLIP recipe; a share that leaves no cine frame is refused, and a
# model.json that names the recipe without its share does not load.
train --out "$tmp/g" --lge-frames 8 --resize 80 >/dev/null
train --out "$tmp/h" --lge-frames 0 >/dev/null
"$cmrsearch" init --db "$tmp/db3" >/dev/null
"$cmrsearch" index --db "$tmp/db3" --model "$tmp/g" "$tmp/archive" --json >"$tmp/g-index.json"
"$cmrsearch" search --db "$tmp/db3" --model "$tmp/g" --text "no late gadolinium enhancement" -k 3 --json >"$tmp/g-s.json"
if train --out "$tmp/i" --lge-frames 16 2>"$tmp/err" >/dev/null; then
    echo "--lge-frames 16 of 16 was accepted" >&2; exit 1
fi
grep -q "at least one must stay for the cines" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
"$python" - "$tmp/g/model.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
del m["input"]["lge_frames"]
json.dump(m, open(sys.argv[1], "w"))
PY
if "$cmrsearch" search --db "$tmp/db3" --model "$tmp/g" --text "dcm" -k 1 2>"$tmp/err" >/dev/null; then
    echo "a cine+lge model without lge_frames was loaded" >&2; exit 1
fi
grep -q 'recipe "cine+lge" needs input.lge_frames' "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
# Sentence sampling: deterministic for the seed, recorded, and it changes
# what is learnt; a probability of 0 is refused.
train --out "$tmp/j" --sentence-keep 0.5 >/dev/null
train --out "$tmp/k" --sentence-keep 0.5 >/dev/null
cmp "$tmp/j/weights.safetensors" "$tmp/k/weights.safetensors" || { echo "sentence sampling: same seed, different weights" >&2; exit 1; }
if cmp -s "$tmp/a/weights.safetensors" "$tmp/j/weights.safetensors"; then
    echo "--sentence-keep 0.5 trained the same weights as whole impressions" >&2; exit 1
fi
grep -q '"sentence_keep": 0.5' "$tmp/j/model.json" || { echo "sentence_keep not recorded" >&2; exit 1; }
train --out "$tmp/m" --sentence-keep 0.2 --share-texts >/dev/null
grep -q '"share_texts": true' "$tmp/m/model.json" || { echo "share_texts not recorded" >&2; exit 1; }
grep -q '"share_texts": false' "$tmp/j/model.json" || { echo "share_texts recorded wrongly" >&2; exit 1; }
# A fine-tune keeps its model's sentence sampling unless told otherwise.
train --init "$tmp/j" --out "$tmp/n" >/dev/null
train --init "$tmp/j" --out "$tmp/o" --sentence-keep 1 >/dev/null
grep -q '"sentence_keep": 0.5' "$tmp/n/model.json" || { echo "the fine-tune did not keep sentence_keep" >&2; exit 1; }
grep -q '"sentence_keep": 1' "$tmp/o/model.json" || { echo "--sentence-keep 1 was not applied" >&2; exit 1; }
if train --out "$tmp/l" --sentence-keep 0 2>"$tmp/err" >/dev/null; then
    echo "--sentence-keep 0 was accepted" >&2; exit 1
fi
grep -q -- "--sentence-keep" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
# The text lexicon: cmr-v1 unless --lexicon says cmr-v2, recorded in
# model.json (which the runtime follows, test_model); not for a fine-tune.
train --out "$tmp/p" --lexicon cmr-v2 >/dev/null
grep -q '"lexicon": "cmr-v2"' "$tmp/p/model.json" || { echo "--lexicon cmr-v2 not recorded" >&2; exit 1; }
grep -q '"lexicon": "cmr-v1"' "$tmp/j/model.json" || { echo "the default lexicon is not cmr-v1" >&2; exit 1; }
for bad in "--lexicon cmr-v3" "--init $tmp/j --lexicon cmr-v2"; do
    if train --out "$tmp/q" $bad 2>"$tmp/err" >/dev/null; then
        echo "train $bad was accepted" >&2; exit 1
    fi
    grep -q -- "lexicon" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
done
# Ensembles: --ensemble 2 trains the members a single run with seeds S and
# S+1 would (with --f16: F16 weights; member 1 is run a's weights rounded
# by numpy), writes their ensemble, which indexes and searches; --continue
# fine-tunes it member by member and moves the store; --ensemble with
# --init is refused.
train --out "$tmp/r" --ensemble 2 --f16 --checkpoint "$tmp/rck" >"$tmp/r.json"
"$cmrsearch" train --db "$tmp/db" --seed 6 --epochs 4 --batch 4 --val-fraction 0.25 --patience 0 --f16 \
    --out "$tmp/r2" >/dev/null
cmp "$tmp/r/member-2/weights.safetensors" "$tmp/r2/weights.safetensors" || { echo "member-2 is not seed 6's model" >&2; exit 1; }
[ -f "$tmp/rck.member-1" ] && [ -f "$tmp/rck.member-2" ] || { echo "no per-member checkpoints" >&2; exit 1; }
"$cmrsearch" init --db "$tmp/db4" >/dev/null
"$cmrsearch" index --db "$tmp/db4" --model "$tmp/r" "$tmp/archive" >/dev/null
"$cmrsearch" search --db "$tmp/db4" --model "$tmp/r" --text "dilated cardiomyopathy" -k 3 --json >"$tmp/r-s.json"
"$cmrsearch" train --db "$tmp/db4" --continue --model "$tmp/r" --out "$tmp/t" --epochs 1 --batch 4 \
    --val-fraction 0 --seed 9 --json >"$tmp/t.json"
"$cmrsearch" verify --db "$tmp/db4" >/dev/null
"$cmrsearch" search --db "$tmp/db4" --model "$tmp/t" --case 1 -k 3 --json >"$tmp/t-s.json"
if train --out "$tmp/u" --init "$tmp/j" --ensemble 2 2>"$tmp/err" >/dev/null; then
    echo "--ensemble with --init was accepted" >&2; exit 1
fi
grep -q -- "--ensemble makes a new ensemble" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
for bad in 0 9 two; do
    if train --out "$tmp/u" --ensemble $bad 2>"$tmp/err" >/dev/null; then
        echo "--ensemble $bad was accepted" >&2; exit 1
    fi
    grep -q -- "--ensemble" "$tmp/err" || { cat "$tmp/err" >&2; exit 1; }
    [ ! -e "$tmp/u" ] || { echo "--ensemble $bad wrote $tmp/u" >&2; exit 1; }
done
"$python" - "$tmp" <<'PY'
import json, struct, sys
import numpy as np
d = sys.argv[1]
r = json.load(open(d + "/r/model.json"))
assert r["architecture"] == "ensemble" and r["members"] == ["member-1", "member-2"], r
def tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    types = {"F32": np.float32, "F16": np.float16}
    return {k: np.frombuffer(raw[8 + n + t["data_offsets"][0]:8 + n + t["data_offsets"][1]], dtype=types[t["dtype"]])
            for k, t in header.items() if k != "__metadata__"}
for m in ("member-1", "member-2"):
    assert {t.dtype for t in tensors("%s/r/%s/weights.safetensors" % (d, m)).values()} == {np.dtype(np.float16)}, m
# member 1 is seed 5's run a, rounded to F16 as numpy rounds
a, m1 = tensors(d + "/a/weights.safetensors"), tensors(d + "/r/member-1/weights.safetensors")
assert a.keys() == m1.keys()
for k in a:
    assert np.array_equal(a[k].astype(np.float16).view(np.uint16), m1[k].view(np.uint16)), k
assert json.load(open(d + "/r.json"))["members"] == 2
s = json.load(open(d + "/r-s.json"))
assert len(s["results"]) == 3 and s["results"][0]["case"]["model"].startswith("cmrsearch-compact-ensemble@"), s
t = json.load(open(d + "/t.json"))
assert t["reembedded"] == 16 and t["members"] == 2, t
tm = json.load(open(d + "/t/model.json"))
assert tm["architecture"] == "ensemble" and tm["name"] == "cmrsearch-compact-ensemble", tm
for i, m in enumerate(tm["members"]):
    rec = json.load(open("%s/t/%s/model.json" % (d, m)))["training"]
    assert rec["init"] == "%s/r/%s" % (d, m) and rec["seed"] == 9 + i, rec
ts = json.load(open(d + "/t-s.json"))
assert len(ts["results"]) == 3, ts
print("train_e2e: ensemble of 2 (F16) trained, indexed, continued, ok")
PY
"$python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
g, h = json.load(open(d + "/g/model.json")), json.load(open(d + "/h/model.json"))
assert g["input"]["recipe"] == "cine+lge" and g["input"]["resize"] == 80, g["input"]
assert h["input"]["recipe"] == "cmrclip" and "lge_frames" not in h["input"], h["input"]
gi = json.load(open(d + "/g-index.json"))
assert gi["studies"]["new"] == 16 and gi["studies"]["without_vectors"] == 0, gi
assert len(json.load(open(d + "/g-s.json"))["results"]) == 3
print("train_e2e: cine+lge and cmrclip recipes, ok")
PY
"$python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
re = json.load(open(d + "/re.json"))
assert re["cases"] == 16 and re["image_vectors"] == 16 and re["text_vectors"] == 16 and re["unreadable"] == 0, re
import hashlib
e_hash = hashlib.sha256(open(d + "/e/weights.safetensors", "rb").read()).hexdigest()
assert re["weights_hash"] == e_hash, re
s2 = json.load(open(d + "/s2.json"))
assert len(s2["results"]) == 3 and all(r["case"]["model"] == "cmrsearch-compact@" + e_hash[:16]
                                       for r in s2["results"]), s2
f = json.load(open(d + "/f.json"))
assert f["reembedded"] == 16 and f["epochs_run"] == 1, f
assert json.load(open(d + "/f/model.json"))["training"]["init"] == d + "/e", f
print("train_e2e: re-embedded 16 cases, continued 1 epoch, ok")
a = json.load(open(d + "/a.json"))
assert a["pairs"] == 16 and a["epochs_run"] == 4 and a["val_pairs"] > 0, a
m = json.load(open(d + "/a/model.json"))
assert m["architecture"] == "compact" and m["training"]["seed"] == 5, m
s = json.load(open(d + "/s.json"))
assert len(s["results"]) == 3, s
print("train_e2e: pairs", a["pairs"], "val", a["val_pairs"], "epochs", a["epochs_run"], "ok")
PY
