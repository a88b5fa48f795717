#!/usr/bin/env bash
# Measures `cmrsearch audit` against planted problems on phantom archives,
# one per seed, the way docs/audit.md reports it:
#   scripts/measure_audit.sh WORK_DIR [--studies N] [--model DIR] SEED...
#
# For each seed: a phantom archive with the issue's rates (5% duplicates and
# label noise, 3% of every other problem; --fast cines), indexed with the
# model (default models/default) into WORK_DIR/db-SEED, then
#   audit --truth --json                      > WORK_DIR/audit-SEED.json
#   audit --kinds label_error --min-confidence 0 --json > WORK_DIR/le-SEED.json
# (the second is what scripts/fit_audit_calibration.py reads).  The archive's
# DICOM is removed once indexed (its truth.json is kept); a seed whose
# audit-SEED.json exists is not redone.  Prints each seed's scores and the
# label errors pooled over the seeds.  Needs a build (scripts/setup.sh) and
# python3.  About 1.5 minutes per 300-study seed on 2 cores.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$root/build/cli/cmrsearch
phantom=$root/build/tests/phantom/cmr-phantom
[ $# -ge 2 ] || { sed -n '2,3p' "$0" >&2; exit 1; }
work=$1
shift
studies=300
model=$root/models/default
seeds=()
while [ $# -gt 0 ]; do
    case $1 in
    --studies) studies=$2; shift 2 ;;
    --model) model=$2; shift 2 ;;
    -*) echo "measure_audit.sh: unknown option $1" >&2; exit 1 ;;
    *) [[ $1 =~ ^[0-9]+$ ]] || { echo "measure_audit.sh: '$1' is not a seed" >&2; exit 1; }
       seeds+=("$1"); shift ;;
    esac
done
[ ${#seeds[@]} -gt 0 ] || { echo "measure_audit.sh: no seed given" >&2; exit 1; }
for f in "$bin" "$phantom"; do
    [ -x "$f" ] || { echo "measure_audit.sh: $f is missing: run scripts/setup.sh first" >&2; exit 1; }
done
mkdir -p "$work"
for s in "${seeds[@]}"; do
    [ -s "$work/audit-$s.json" ] && continue
    arch=$work/archive-$s db=$work/db-$s
    rm -rf "$arch" "$db"
    "$phantom" --out "$arch" --studies "$studies" --seed "$s" --fast --duplicates 0.05 --label-noise 0.05 \
        --contradictions 0.03 --no-impression 0.03 --missing-views 0.03 --corrupt 0.03 >/dev/null
    mkdir -p "$work/truth-$s"
    cp "$arch/truth.json" "$work/truth-$s/truth.json"
    "$bin" init --db "$db" >/dev/null
    "$bin" index --db "$db" --model "$model" "$arch" >"$work/index-$s.txt"
    rm -rf "$arch"
    "$bin" audit --db "$db" --model "$model" --truth "$work/truth-$s/truth.json" --kinds label_error \
        --min-confidence 0 --json >"$work/le-$s.json"
    "$bin" audit --db "$db" --model "$model" --truth "$work/truth-$s/truth.json" --json >"$work/audit-$s.json.tmp"
    mv "$work/audit-$s.json.tmp" "$work/audit-$s.json"
done
/usr/bin/env python3 - "$work" "${seeds[@]}" <<'EOF'
import json, sys
work, seeds = sys.argv[1], sys.argv[2:]
pooled = {}
meeting = 0
print("%-6s %-15s %7s %5s %7s %9s %6s" % ("seed", "kind", "planted", "found", "correct", "precision", "recall"))
for s in seeds:
    scores = json.load(open("%s/audit-%s.json" % (work, s)))["scores"]
    for kind, v in sorted(scores.items()):
        fmt = lambda x: "-" if x is None else "%.2f" % x
        print("%-6s %-15s %7d %5d %7d %9s %6s" % (s, kind, v["planted"], v["found"], v["hits"],
                                                fmt(v["precision"]), fmt(v["recall"])))
        p = pooled.setdefault(kind, [0, 0, 0])
        p[0] += v["planted"]; p[1] += v["found"]; p[2] += v["hits"]
    le = scores["label_error"]
    meeting += (le["precision"] or 0) >= 0.8 and (le["recall"] or 0) >= 0.8
for kind, (planted, found, hits) in sorted(pooled.items()):
    print("pooled %-15s %7d %5d %7d %9s %6s" % (kind, planted, found, hits,
          "%.2f" % (hits / found) if found else "-", "%.2f" % (hits / planted) if planted else "-"))
print("label errors: %d of %d archives meet precision and recall >= 0.8" % (meeting, len(seeds)))
EOF
