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
"$cmrsearch" search --db "$tmp/db" --model "$tmp/model" --text "dilated cardiomyopathy" --target image -k 3 --json >"$tmp/text.json"
study=$tmp/archive/$("$python" -c 'import json, sys; print(json.load(open(sys.argv[1]))["study_list"][0]["dir"])' \
    "$tmp/archive/truth.json")
"$cmrsearch" search --db "$tmp/db" --model "$tmp/model" --study "$study" --target image -k 3 --json >"$tmp/study.json"
# A model other than the store's is refused, by name.
if "$cmrsearch" search --db "$tmp/db" --model "$src/tests/fixtures/model/small" --text x >/dev/null 2>"$tmp/err"; then
    echo "a different model was accepted" >&2; exit 1
fi
grep -q "never mixed" "$tmp/err"
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
for name, n in (("text", 3), ("study", 3)):
    doc = json.load(open(d + "/" + name + ".json"))
    res = doc["results"]
    assert len(res) == n, (name, len(res))
    for hit in res:
        sim = hit["similarity"]
        assert abs(sim["image"] - hit["score"]) < 1e-5, hit   # the target space is image
        assert sim["text"] is not None and -1.0001 <= sim["text"] <= 1.0001, hit
        assert hit["case"]["impression"], hit
    print(name, "query:", [(h["id"], round(h["score"], 4)) for h in res])
study_doc = json.load(open(d + "/study.json"))
# The study queried is in the store: it must come first, at similarity ~1.
assert study_doc["results"][0]["score"] > 0.9999, study_doc["results"][0]
PY
echo "model_e2e: ok"
