#!/bin/bash
# The published-checkpoint path end to end, at small scale:
#   torch.save checkpoint --(scripts/convert_cmrclip.py)--> model directory
#   --> the C forward against PyTorch's outputs (test_model on the converted
#   directory) --> cmrsearch index --model on a phantom archive --> search.
# usage: model_e2e.sh SOURCE_DIR PYTHON3 CMRSEARCH CMR-PHANTOM TEST_MODEL
set -euo pipefail
src=$1 python=$2 cmrsearch=$3 phantom=$4 test_model=$5
tmp=$(mktemp -d /tmp/cmr-model-e2e-XXXXXX)
trap 'rm -rf "$tmp"' EXIT
fx=$src/tests/fixtures/model/small

"$python" "$src/scripts/convert_cmrclip.py" --checkpoint "$fx/tiny_cmrclip.bin" --config "$fx/config.json" \
    --vocab "$fx/vocab.txt" --tokenizer-config "$fx/tokenizer_config.json" --name cmrclip-small-test \
    --out "$tmp/model"
CMR_TEST_MODEL_DIR=$tmp/model "$test_model"

"$phantom" --out "$tmp/archive" --studies 3 --seed 77 --fast --threads 2 --sr-reports 0 --text-reports 0
"$cmrsearch" init --db "$tmp/db" >/dev/null
"$cmrsearch" index --db "$tmp/db" --model "$tmp/model" --json "$tmp/archive" >"$tmp/index.json"
"$cmrsearch" stats --db "$tmp/db" --json >"$tmp/stats.json"
"$cmrsearch" search --db "$tmp/db" --case 1 -k 2 --json >"$tmp/search.json"
"$python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
index = json.load(open(d + "/index.json"))
stats = json.load(open(d + "/stats.json"))
search = json.load(open(d + "/search.json"))
def find(doc, key):
    if isinstance(doc, dict):
        if key in doc:
            return doc[key]
        for v in doc.values():
            r = find(v, key)
            if r is not None:
                return r
    return None
print("index:", json.dumps(find(index, "studies")))
print("stats:", json.dumps(stats)[:400])
assert find(index, "new") == 3, "three studies stored"
assert find(index, "without_vectors") == 0, "every study embedded"
assert stats["model"]["name"] == "cmrclip-small-test", stats["model"]
assert stats["model"]["dim"] == 32, stats["model"]
assert stats["spaces"]["image"]["vectors"] == 3, stats["spaces"]
assert stats["spaces"]["text"]["vectors"] == 3, stats["spaces"]
print("search:", json.dumps(search)[:300])
hits = find(search, "results") or find(search, "hits")
assert hits and len(hits) == 2, "two neighbours of case 1"
PY
echo "model_e2e: ok"
