#!/usr/bin/env bash
# The main job on a built-in demo archive: installs what is needed, builds,
# then creates a store, imports 20,000 synthetic cases (clustered image and
# text vectors with realistic metadata, as a GPU run of CMR-CLIP would
# produce them), and answers case -> case queries with and without filters;
# then generates a small phantom DICOM archive with reports and indexes it.
# Everything goes to build/demo/ (removed and recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
bin=build/cli/cmrsearch
demo=build/demo
rm -rf "$demo"
mkdir -p "$demo/vectors"

if [ -t 1 ]; then say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi

say "Generating 20,000 synthetic cases (vectors + manifest)"
build/bench/cmr-synth-vectors --out "$demo/vectors" --n 20000 --seed 7

say "cmrsearch init + import"
$bin init --db "$demo/db"
$bin import --db "$demo/db" --manifest "$demo/vectors/manifest.json"
$bin stats --db "$demo/db"

say "Case 42: the record"
$bin show --db "$demo/db" 42

say "Cases most like case 42 (its own patient's other studies excluded)"
$bin search --db "$demo/db" --case 42 -k 8

say "The same, among women aged 40-70 scanned since 2015 at one site"
$bin search --db "$demo/db" --case 42 -k 5 \
  --where 'sex = F and age between 40 and 70 and date >= 2015-01-01 and site = "Lakeview Medical Center"'

say "Case 42's impression against other cases' images (text -> image space)"
$bin search --db "$demo/db" --case 42 --space text --target image -k 5 --where 'diagnosis in (I42.1, E85.4, I43)'

say "Consistency check"
$bin verify --db "$demo/db"

say "A synthetic DICOM archive: 6 phantom studies with reports (cmr-phantom)"
build/tests/phantom/cmr-phantom --out "$demo/archive" --studies 6 --seed 5 --fast
say "cmrsearch index: DICOM studies and reports into cases (no model yet: no vectors)"
$bin init --db "$demo/archive-db"
$bin index --db "$demo/archive-db" --cda-schema schema/report-cda.xsd "$demo/archive"
$bin show --db "$demo/archive-db" 1
