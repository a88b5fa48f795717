#!/usr/bin/env bash
# Search end to end on a phantom archive indexed with the default model:
# finding scores stored at index time and filterable (--where 'has lge'),
# paging, one result per patient, explanations, index --rescore, verify.
set -euo pipefail
cmrsearch=$1 phantom=$2 python=$3 model=$4
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$phantom" --out "$tmp/archive" --studies 40 --seed 7707 --fast --threads 2 >/dev/null
"$cmrsearch" init --db "$tmp/db" >/dev/null
"$cmrsearch" index --db "$tmp/db" --model "$model" --json "$tmp/archive" >"$tmp/index.json"
"$cmrsearch" verify --db "$tmp/db" >/dev/null
s() { "$cmrsearch" search --db "$tmp/db" --model "$model" "$@"; }
# every case, with its findings: a case query over everything, same patient included
s --case 1 -k 1000 --include-same-patient --json >"$tmp/all.json"
s --text "late gadolinium enhancement" --where 'has lge' -k 1000 --json >"$tmp/lge.json"
s --text "hypertrophic cardiomyopathy" --where 'has lge and finding hcm >= 0.01' -k 1000 --json >"$tmp/lgehcm.json"
s --text "dilated left ventricle" -k 20 --json >"$tmp/top20.json"
for o in 0 5 10 15; do s --text "dilated left ventricle" -k 5 --offset $o --json >"$tmp/page$o.json"; done
s --text "dilated left ventricle" -k 1000 --one-per-patient --json >"$tmp/grouped.json"
s --text "late gadolinium enhancement" --where 'has lge' -k 3 >"$tmp/human.txt"
if s --text x --where 'has bogus' >/dev/null 2>"$tmp/err"; then
    echo "an unknown finding was accepted" >&2; exit 1
fi
grep -q "unknown finding" "$tmp/err" && grep -q "aortic_dilation" "$tmp/err"
"$cmrsearch" index --db "$tmp/db" --rescore --model "$model" --json >"$tmp/rescore.json"
s --case 1 -k 1000 --include-same-patient --json >"$tmp/all2.json"
"$cmrsearch" verify --db "$tmp/db" >/dev/null
"$python" - "$tmp" <<'PY'
import json, sys
d = sys.argv[1]
load = lambda n: json.load(open(f"{d}/{n}.json"))
all_ = load("all")
cases = {r["id"]: r for r in all_["results"]}
first = {k: v for k, v in all_["query_findings"].items()}
findings = {r["id"]: r["findings"] for r in all_["results"]}
findings[all_["query"]["case"]] = first
assert len(findings) == 40, len(findings)
for f in findings.values():
    assert len(f) == 17 and all(0 <= v <= 1 for v in f.values()), f
    assert sum(f[k] >= 0.5 for k in ("normal", "hcm", "amyloidosis", "dcm", "icm", "myocarditis",
                                     "sarcoidosis", "lvnc", "fabry", "arvc")) <= 1, f
# the filter is exact: exactly the cases whose stored lge score is >= 0.5
lge = load("lge")
want = {i for i, f in findings.items() if f["lge"] >= 0.5}
got = {r["id"] for r in lge["results"]}
assert got == want, (sorted(got), sorted(want))
assert lge["n_matching"] == len(want), lge["n_matching"]
both = load("lgehcm")
assert {r["id"] for r in both["results"]} == {i for i, f in findings.items() if f["lge"] >= 0.5 and f["hcm"] >= 0.01}
# paging: pages concatenate to the top 20
top = [r["id"] for r in load("top20")["results"]]
pages = sum(([r["id"] for r in load(f"page{o}")["results"]] for o in (0, 5, 10, 15)), [])
assert top == pages and len(set(top)) == 20, (top, pages)
assert load("page15")["more"] is True
# fusion: score = 0.2 image + 0.8 text, best first, explanations present
res = load("top20")
assert abs(res["fusion"]["w_image"] - 0.2) < 1e-6 and abs(res["fusion"]["w_text"] - 0.8) < 1e-6
prev = 2
for r in res["results"]:
    sim = r["similarity"]
    assert abs(r["score"] - (0.2 * sim["image"] + 0.8 * sim["text"])) < 1e-5, r
    assert r["score"] <= prev + 1e-7
    prev = r["score"]
    assert r["sentence"] and r["sentence"]["text"] in r["case"]["impression"], r["sentence"]
    assert r["views"] and all(v.startswith(("cine_", "lge_")) for v in r["views"])
# one per patient: distinct patients, each its best study
grouped = load("grouped")["results"]
keys = [r["case"].get("patient_key") for r in grouped]
assert len(keys) == len(set(keys)), "a patient twice"
assert sum(r["folded"] for r in grouped) + len(grouped) == 40
# rescore reproduces the index-time scores
all2 = load("all2")
for r in all2["results"]:
    for k, v in r["findings"].items():
        assert abs(v - findings[r["id"]][k]) < 1e-6, (r["id"], k)
assert load("rescore")["rescored"] == 40
human = open(f"{d}/human.txt").read()
assert "closest:" in human and "findings:" in human and "fusion: image 0.20, text 0.80" in human, human
print(f"searcher on a 40-study phantom: {len(want)} with lge >= 0.5, "
      f"{len(both['results'])} with lge and hcm >= 0.01, {len(grouped)} patients: passed")
PY
