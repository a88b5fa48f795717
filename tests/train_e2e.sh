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
"$python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
a = json.load(open(d + "/a.json"))
assert a["pairs"] == 16 and a["epochs_run"] == 4 and a["val_pairs"] > 0, a
m = json.load(open(d + "/a/model.json"))
assert m["architecture"] == "compact" and m["training"]["seed"] == 5, m
s = json.load(open(d + "/s.json"))
assert len(s["results"]) == 3, s
print("train_e2e: pairs", a["pairs"], "val", a["val_pairs"], "epochs", a["epochs_run"], "ok")
PY
