-- wrk script for bench/serve_load.sh: cycles through text queries (each
-- connection starts at its own offset) and reports latency percentiles and
-- non-2xx answers in a form the driver script parses.
local phrases = {
  "asymmetric septal hypertrophy with LGE",
  "apical hypertrophy",
  "dilated left ventricle with reduced ejection fraction",
  "subendocardial LGE in the LAD territory",
  "diffuse subendocardial enhancement amyloidosis",
  "subepicardial lateral LGE myocarditis",
  "normal study no late enhancement",
  "left ventricular non-compaction",
  "right ventricular dilation",
  "pericardial effusion",
  "mid-wall septal fibrosis",
  "aortic root dilation",
}
local paths = {}
for i, p in ipairs(phrases) do
  paths[i] = "/api/v1/search?k=10&text=" .. p:gsub(" ", "%%20")
end

local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
end

local n = 0
function init(args)
  n = id * 7
  local tok = os.getenv("CMR_TOKEN")
  if tok and #tok > 0 then
    wrk.headers["Authorization"] = "Bearer " .. tok
  end
end

function request()
  n = n + 1
  return wrk.format("GET", paths[(n % #paths) + 1])
end

local bad = 0
function response(status, headers, body)
  if status ~= 200 then
    bad = bad + 1
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d duration_s=%.1f rps=%.1f non2xx=%d connect=%d read=%d write=%d timeout=%d\n",
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    e.status, e.connect, e.read, e.write, e.timeout))
  io.write(string.format("RESULT p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f mean_ms=%.2f\n",
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, latency.mean / 1000))
end
