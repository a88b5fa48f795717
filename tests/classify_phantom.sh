#!/usr/bin/env bash
# View classification on a phantom archive from a seed the classifier was not
# developed with (2027 and 4 were the development archives): every series'
# label is compared with truth.json; the bar is 98%.
set -euo pipefail
phantom=$1 eval=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
"$phantom" --out "$out/archive" --studies 12 --seed 9001 --fast --problems 0.1 --threads 2 >/dev/null
"$eval" "$out/archive" --json > "$out/result.json"
"$eval" "$out/archive"
/usr/bin/python3 - "$out/result.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
assert r["series"] >= 100, f"only {r['series']} series: the archive is too small to measure"
assert r["accuracy"] >= 0.98, f"accuracy {r['accuracy']:.4f} < 0.98"
print(f"classification accuracy {r['accuracy']:.4f} over {r['series']} series: passed")
PY
