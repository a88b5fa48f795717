#!/usr/bin/env bash
# The main job on a built-in demo archive: installs what is needed, builds,
# generates a phantom CMR archive (DICOM studies + reports), indexes it with
# the default model, and answers the three kinds of query (text, study, case)
# with filters; then evaluates the model on the archive's ground truth and
# shows the store's filters at scale on 20,000 synthetic cases.
# Everything goes to build/demo/ (removed and recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
bin=build/cli/cmrsearch
demo=build/demo
rm -rf "$demo"
mkdir -p "$demo"

if [ -t 1 ]; then say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }; else say() { printf '\n== %s\n' "$*"; }; fi

say "A phantom archive: 60 CMR studies with reports from 5 sites (cmr-phantom)"
build/tests/phantom/cmr-phantom --out "$demo/archive" --studies 60 --seed 5 --fast

say "cmrsearch index: studies and reports into cases, embedded by the default model"
$bin init --db "$demo/db"
$bin index --db "$demo/db" --cda-schema schema/report-cda.xsd "$demo/archive"
$bin stats --db "$demo/db"

say "Text -> case: \"hypertrophic cardiomyopathy with septal hypertrophy\""
$bin search --db "$demo/db" --text "hypertrophic cardiomyopathy with septal hypertrophy" -k 5

say "Text -> case, negated: \"no late gadolinium enhancement\", women only"
$bin search --db "$demo/db" --text "no late gadolinium enhancement" -k 5 --where 'sex = F'

say "Study -> case: a study read from its DICOM folder"
study=$demo/archive/$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["study_list"][3]["dir"])' \
    "$demo/archive/truth.json")
echo "query study: $study"
$bin search --db "$demo/db" --study "$study" -k 5

say "Case -> case: case 7, its own patient's other studies excluded, studies since 2015"
$bin show --db "$demo/db" 7
$bin search --db "$demo/db" --case 7 -k 5 --where 'date >= 2015-01-01'

say "cmrsearch eval: the model against the archive's ground truth (truth.json)"
$bin eval --db "$demo/db" --labels "$demo/archive/truth.json" --html "$demo/eval.html"

say "The store at scale: 20,000 synthetic cases, case -> case with filters"
build/bench/cmr-synth-vectors --out "$demo/vectors" --n 20000 --seed 7
$bin init --db "$demo/synth-db"
$bin import --db "$demo/synth-db" --manifest "$demo/vectors/manifest.json"
$bin search --db "$demo/synth-db" --case 42 -k 5 \
  --where 'sex = F and age between 40 and 70 and date >= 2015-01-01 and site = "Lakeview Medical Center"'

say "Consistency check"
$bin verify --db "$demo/db"
$bin verify --db "$demo/synth-db"
