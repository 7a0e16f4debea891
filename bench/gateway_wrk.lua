-- wrk script for bench/gateway_bench.sh: POSTs one image (raw body) to the gateway
-- and prints one RESULT line (requests/s, latency percentiles, non-2xx responses).
--   GATEWAY_BENCH_IMAGE=lesion.jpg wrk -c 4 -d 10s -s bench/gateway_wrk.lua URL
local path = os.getenv("GATEWAY_BENCH_IMAGE") or "tests/fixtures/ham10000/images/ISIC_0024698.jpg"
local f = assert(io.open(path, "rb"))
local image = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = image
wrk.headers["Content-Type"] = "image/jpeg"

function done(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read +
                 summary.errors.write + summary.errors.timeout
  io.write(string.format(
    "RESULT requests=%d failed=%d rps=%.2f p50_ms=%.3f p95_ms=%.3f p99_ms=%.3f\n",
    summary.requests, errors, summary.requests / seconds,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000))
end
