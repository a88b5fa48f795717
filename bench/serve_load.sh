#!/usr/bin/env bash
# Load test of `cmrsearch serve` (docs/server.md, "Load"):
#   1. a 10,000-case store in the default model's space: a phantom archive
#      (SEED_STUDIES studies) is indexed with the default model, and each
#      synthetic case is one of those studies' image and impression vectors
#      plus Gaussian noise (sigma 0.05 per component before re-normalising),
#      with its metadata varied (date, age, sex, site, patient);
#   2. `cmrsearch serve` on loopback, no rate limit;
#   3. wrk -t2 -c100 -d60s cycling 12 text queries (bench/serve_load.lua):
#      requests, errors, p50/p90/p99;
#   4. one client, 500 sequential text queries on one keep-alive connection:
#      end-to-end p50/p99, and the server's own time per query.
# usage: bench/serve_load.sh [BUILD_DIR] [WORK_DIR]   (defaults: build, BUILD_DIR/serve-bench)
# env:   CASES (10000), SEED_STUDIES (24), DURATION (60s), CONNECTIONS (100), ENCODERS (2)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
work=${2:-$build/serve-bench}
cases=${CASES:-10000}
seed_studies=${SEED_STUDIES:-24}
duration=${DURATION:-60s}
connections=${CONNECTIONS:-100}
encoders=${ENCODERS:-2}
bin=$build/cli/cmrsearch
phantom=$build/tests/phantom/cmr-phantom
py=/usr/bin/python3
for t in "$bin" "$phantom"; do
  [ -x "$t" ] || { echo "serve_load: $t is missing: build the cmrsearch and cmr-phantom targets" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "serve_load: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
command -v mdb_dump >/dev/null || { echo "serve_load: mdb_dump is not installed (lmdb-utils)" >&2; exit 1; }
mkdir -p "$work"
export CMRSEARCH_MODEL=$PWD/models/default

# 1. The store.
if [ ! -f "$work/db/data.mdb" ] || [ "$("$bin" stats --db "$work/db" --json | $py -c 'import json,sys; print(json.load(sys.stdin)["cases"])')" != "$cases" ]; then
  rm -rf "$work/archive" "$work/seed" "$work/db" "$work/vectors"
  echo "serve_load: phantom archive of $seed_studies studies, indexed with the default model" >&2
  "$phantom" --out "$work/archive" --studies "$seed_studies" --seed 17 --fast >/dev/null
  "$bin" init --db "$work/seed" >/dev/null
  "$bin" index --db "$work/seed" "$work/archive" >/dev/null
  mkdir -p "$work/vectors"
  mdb_dump -s vec_image "$work/seed" > "$work/vectors/image.dump"
  mdb_dump -s vec_text "$work/seed" > "$work/vectors/text.dump"
  "$bin" stats --db "$work/seed" --json > "$work/vectors/stats.json"
  for id in $(seq 1 "$seed_studies"); do "$bin" show --db "$work/seed" --json "$id"; echo; done \
    > "$work/vectors/cases.json" 2>/dev/null || true
  echo "serve_load: synthesising $cases cases from them" >&2
  $py - "$work/vectors" "$cases" <<'PY'
import json, struct, sys
import numpy as np
out, n = sys.argv[1], int(sys.argv[2])

def dump(path):
    """mdb_dump's printable-hex output: key line, value line, per record."""
    rows, lines = {}, open(path).read().split("\n")
    i = lines.index("HEADER=END") + 1
    while lines[i] != "DATA=END":
        k, v = bytes.fromhex(lines[i].strip()), bytes.fromhex(lines[i + 1].strip())
        rows[struct.unpack(">Q", k)[0]] = np.frombuffer(v, dtype="<f4")
        i += 2
    return rows

img, txt = dump(f"{out}/image.dump"), dump(f"{out}/text.dump")
stats = json.load(open(f"{out}/stats.json"))
cases, text, pos, dec = {}, open(f"{out}/cases.json").read(), 0, json.JSONDecoder()
while True:  # `show --json` documents, one after another, each over several lines
    while pos < len(text) and text[pos].isspace():
        pos += 1
    if pos >= len(text):
        break
    c, pos = dec.raw_decode(text, pos)
    c = c.get("case", c)
    cases[c["id"]] = c
ids = sorted(i for i in img if i in txt and i in cases)
assert ids, "no seed case has both vectors"
model = stats["model"]
rng = np.random.default_rng(17)
dim = len(img[ids[0]])
I, T = np.empty((n, dim), "<f4"), np.empty((n, dim), "<f4")
sites = ["Northgate", "Riverside", "Lakeside", "Hillcrest", "Bayview"]
records = []
for r in range(n):
    base = ids[r % len(ids)]
    for M, src in ((I, img), (T, txt)):
        v = src[base] + rng.normal(0, 0.05, dim).astype("<f4")
        M[r] = v / np.linalg.norm(v)
    c = cases[base]
    year = 2008 + r % 15
    rec = {"row": r, "study_uid": f"1.2.826.0.1.3680043.10.777.{r + 1}", "patient_id": f"SYNTH{r // 3:06d}",
           "study_date": f"{year}-{1 + r % 12:02d}-{1 + r % 28:02d}", "site": sites[r % len(sites)],
           "sex": "FM"[r % 2], "age": 18 + (r * 7) % 70, "views": c.get("views") or [],
           "impression": c.get("impression"),
           "diagnoses": [{k: d[k] for k in ("code", "system", "label") if d.get(k)} for d in c.get("diagnoses", [])]}
    records.append(rec)
np.save(f"{out}/image.npy", I)
np.save(f"{out}/text.npy", T)
json.dump({"format": "cmrsearch-import/1",
           "model": {"name": model["name"], "weights_hash": model["weights_hash"], "dim": dim},
           "image_vectors": "image.npy", "text_vectors": "text.npy", "cases": records},
          open(f"{out}/manifest.json", "w"))
PY
  "$bin" init --db "$work/db" >/dev/null
  "$bin" import --db "$work/db" --manifest "$work/vectors/manifest.json" >/dev/null
  "$bin" verify --db "$work/db" >/dev/null
fi
echo "serve_load: store $work/db: $("$bin" stats --db "$work/db" --json | $py -c 'import json,sys; d=json.load(sys.stdin); print(d["cases"], "cases, model", d["model"]["name"])')" >&2

# 2. The server.
port=$($py -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
"$bin" serve --db "$work/db" --listen "127.0.0.1:$port" --rate 0 --encoders "$encoders" 2> "$work/serve.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  $py -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/api/v1/health')" 2>/dev/null && break
  sleep 0.1
done
# Warm up: the first query loads the index.
$py -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$port/api/v1/search?text=warm%20up')" >/dev/null

# 3. Load.
echo "serve_load: wrk -t2 -c$connections -d$duration (text queries, k=10)" >&2
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }  # user + system clock ticks of the server
cpu0=$(cpu)
wrk -t2 -c"$connections" -d"$duration" --timeout 30s --latency -s bench/serve_load.lua "http://127.0.0.1:$port" > "$work/wrk.txt"
cpu1=$(cpu)
grep '^RESULT' "$work/wrk.txt" | sed 's/^RESULT /load: /'
requests=$(sed -n 's/^RESULT requests=\([0-9]*\).*/\1/p' "$work/wrk.txt")
echo "load: server_cpu_s=$(( (cpu1 - cpu0) / $(getconf CLK_TCK) )) cpu_ms_per_query=$(( (cpu1 - cpu0) * 1000 / $(getconf CLK_TCK) / (requests > 0 ? requests : 1) )) load_average=\"$(cut -d' ' -f1-3 /proc/loadavg)\""

# 4. One client.
$py - "$port" <<'PY'
import http.client, json, statistics, sys, time, urllib.parse
port = int(sys.argv[1])
phrases = ["asymmetric septal hypertrophy with LGE", "apical hypertrophy", "dilated left ventricle",
           "subendocardial LGE in the LAD territory", "amyloidosis", "myocarditis", "normal study",
           "non-compaction", "right ventricular dilation", "aortic root dilation"]
conn = http.client.HTTPConnection("127.0.0.1", port)
wall, server, stages, errors = [], [], [], 0
for i in range(500):
    path = "/api/v1/search?k=10&text=" + urllib.parse.quote(phrases[i % len(phrases)] + f" {i}")
    t0 = time.perf_counter()
    conn.request("GET", path)
    r = conn.getresponse()
    body = r.read()
    wall.append((time.perf_counter() - t0) * 1000)
    if r.status != 200:
        errors += 1
        continue
    d = json.loads(body)
    server.append(d["took_us"] / 1000)
    stages.append((d["timing_ms"]["encode"], d["timing_ms"]["search"], d["timing_ms"]["explain"], d["n_candidates"]))
def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]
print(f"single: queries=500 errors={errors} p50_ms={pct(wall, 50):.2f} p99_ms={pct(wall, 99):.2f} "
      f"max_ms={max(wall):.2f} server_p50_ms={pct(server, 50):.2f} server_p99_ms={pct(server, 99):.2f}")
print("single: median per stage: encode_ms=%.2f search_ms=%.2f explain_ms=%.2f candidates=%d" %
      tuple(pct([s[i] for s in stages], 50) for i in range(4)))
PY
"$bin" querylog --db "$work/db" --json | $py -c 'import json,sys; print("querylog: entries=%d" % json.load(sys.stdin)["n"])' || true
