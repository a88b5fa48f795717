#!/bin/bash
# The encoder benchmark (issue 5): our C towers against PyTorch 1.13, same
# random full-size CMR-CLIP weights and inputs, 2 threads each, one run.
#   bench/model_bench.sh [DIR] [REPEAT]
# DIR (default /var/tmp/cmrclip-bench) is made once by bench/model_torch.py
# (needs Debian's python3-torch).  Prints both sides and the ratios; with
# OPENBLAS_CORETYPE set in the environment both sides use that kernel.
set -euo pipefail
dir=${1:-/var/tmp/cmrclip-bench}
repeat=${2:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
bench=${BENCH_MODEL:-$here/build/bench/bench-model}
[ -f "$dir/weights.safetensors" ] || /usr/bin/python3 "$here/bench/model_torch.py" make "$dir"
export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2
date -u; nproc; uptime
torch=$(/usr/bin/python3 "$here/bench/model_torch.py" run "$dir" --threads 2 --repeat "$repeat" --json)
ours=$("$bench" "$dir" --repeat "$repeat" --json)
uptime
/usr/bin/python3 - "$torch" "$ours" <<'PY'
import json, sys
t, c = json.loads(sys.argv[1]), json.loads(sys.argv[2])
print("PyTorch:", json.dumps(t))
print("ours:   ", json.dumps(c))
print(f"video tower: ours {c['video_median_s']:.2f} s/study, PyTorch {t['video_median_s']:.2f} s -> "
      f"{t['video_median_s'] / c['video_median_s']:.2f}x faster")
print(f"  {c['video_gflops']:.1f} GFLOP/s = {100 * c['video_gflops'] / c['sgemm_gflops']['qkv']:.0f}% of the "
      f"measured sgemm rate ({c['sgemm_gflops']['qkv']:.1f} GFLOP/s, OpenBLAS core {c['corename']})")
print(f"peak RSS: ours {c['peak_rss_mb']:.0f} MB, PyTorch {t['peak_rss_mb']:.0f} MB "
      f"({c['peak_rss_mb'] / t['peak_rss_mb']:.2f} of PyTorch's)")
print(f"text tower: 64 tokens ours {c['text64_median_ms']:.1f} ms vs {t['text64_median_ms']:.1f} ms; "
      f"256 tokens {c['text256_median_ms']:.1f} ms vs {t['text256_median_ms']:.1f} ms")
print(f"cosine between the two video embeddings: {c['cosine_vs_torch']}")
PY
