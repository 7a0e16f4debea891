#!/usr/bin/env bash
# The gateway's overhead: wrk against POST /api/v1/predictions (skinlesion-gateway in
# front of skinlesion-inference on models/bundled) against the same inference server
# called directly over gRPC (inference_load_bench --target, a closed loop like wrk's
# connections), at the same concurrency, in the same run. Rounds alternate (direct,
# gateway, direct, gateway, ...) so that drifting machine load hits both; the table
# has the medians over the rounds. Target: the gateway adds at most 2 ms at p50.
#
#   bench/gateway_bench.sh [BUILD_DIR]        (default build)
#   env: CONCURRENCY="1 4 8"  DURATION=10  WARMUP=2  ROUNDS=3  INFERENCE_THREADS=2
#        IMAGE=tests/fixtures/ham10000/images/ISIC_0024698.jpg
# Needs: wrk (Debian), the targets skinlesion-inference, skinlesion-gateway,
# inference_load_bench.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CONCURRENCY=${CONCURRENCY:-"1 4 8"}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
INFERENCE_THREADS=${INFERENCE_THREADS:-2}
IMAGE=${IMAGE:-tests/fixtures/ham10000/images/ISIC_0024698.jpg}
export OMP_WAIT_POLICY=PASSIVE GATEWAY_BENCH_IMAGE="$IMAGE"

for bin in services/inference/skinlesion-inference services/gateway/skinlesion-gateway \
           bench/inference_load_bench; do
  [ -x "$BUILD/$bin" ] || { echo "missing $BUILD/$bin (ninja -C $BUILD $(basename $bin))" >&2; exit 1; }
done
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() {  # wait_for FILE REGEX -> the first capture
  for _ in $(seq 1 600); do
    if m=$(grep -oE "$2" "$1" 2>/dev/null | head -1) && [ -n "$m" ]; then
      echo "$m" | grep -oE '[0-9]+$'; return 0
    fi
    sleep 0.1
  done
  echo "timed out waiting for '$2' in $1:" >&2; cat "$1" >&2; exit 1
}

"$BUILD/services/inference/skinlesion-inference" --model_dir models/bundled --host 127.0.0.1 \
  --port 0 --metrics_port -1 --threads "$INFERENCE_THREADS" >"$work/inference.log" 2>&1 &
pids+=($!)
INFERENCE_PORT=$(wait_for "$work/inference.log" '\(port [0-9]+')
"$BUILD/services/gateway/skinlesion-gateway" --inference_target "127.0.0.1:$INFERENCE_PORT" \
  --port 0 --rate_limit_rps 0 --threads 64 --web_root "$work" \
  >"$work/gateway.log" 2>"$work/gateway-access.log" &
pids+=($!)
GATEWAY_PORT=$(wait_for "$work/gateway.log" 'listening on 127\.0\.0\.1:[0-9]+')
URL="http://127.0.0.1:$GATEWAY_PORT/api/v1/predictions"
for _ in $(seq 1 600); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$GATEWAY_PORT/readyz")" = 200 ] && break
  sleep 0.2
done
echo "inference on :$INFERENCE_PORT, gateway on :$GATEWAY_PORT" >&2

field() { echo "$1" | grep -oE "$2=[0-9.]+" | cut -d= -f2; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

echo "| concurrency | path | req/s | p50 ms | p99 ms | failed |"
echo "|---:|---|---:|---:|---:|---:|"
summary=()
for c in $CONCURRENCY; do
  threads=$(( c < 2 ? c : 2 ))
  wrk -t "$threads" -c "$c" -d "${WARMUP}s" -s bench/gateway_wrk.lua "$URL" >/dev/null
  declare -A rps p50 p99 failed
  for key in direct gateway; do rps[$key]=""; p50[$key]=""; p99[$key]=""; failed[$key]=0; done
  for round in $(seq 1 "$ROUNDS"); do
    echo "concurrency $c, round $round/$ROUNDS" >&2
    d=$("$BUILD/bench/inference_load_bench" --target "127.0.0.1:$INFERENCE_PORT" --concurrency "$c" \
        --duration_s "$DURATION" --warmup_s "$WARMUP" --image "$IMAGE" | grep '^RESULT')
    g=$(wrk -t "$threads" -c "$c" -d "${DURATION}s" -s bench/gateway_wrk.lua "$URL" | grep '^RESULT')
    for key in direct gateway; do
      line=$([ $key = direct ] && echo "$d" || echo "$g")
      rps[$key]+=" $(field "$line" rps)"; p50[$key]+=" $(field "$line" p50_ms)"
      p99[$key]+=" $(field "$line" p99_ms)"; failed[$key]=$(( failed[$key] + $(field "$line" failed) ))
    done
  done
  for key in direct gateway; do
    label=$([ $key = direct ] && echo "inference direct (gRPC)" || echo "gateway (HTTP, wrk)")
    printf "| %d | %s | %.1f | %.2f | %.2f | %d |\n" "$c" "$label" \
      "$(echo "${rps[$key]}" | median)" "$(echo "${p50[$key]}" | median)" \
      "$(echo "${p99[$key]}" | median)" "${failed[$key]}"
  done
  diff=$(awk -v g="$(echo "${p50[gateway]}" | median)" -v d="$(echo "${p50[direct]}" | median)" \
         'BEGIN {printf "%+.2f", g - d}')
  summary+=("concurrency $c: gateway p50 - direct p50 = $diff ms (target <= +2 ms)")
  unset rps p50 p99 failed
done
# The gateway's own time, whatever the load generators cost: from its /metrics, the
# mean request time of POST /api/v1/predictions minus the mean Classify call time.
metrics=$(curl -s "http://127.0.0.1:$GATEWAY_PORT/metrics")
value() { echo "$metrics" | grep -F "$1 " | head -1 | awk '{print $2}'; }
req_sum=$(value 'skinlesion_gateway_request_seconds_sum{route="/api/v1/predictions"}')
req_n=$(value 'skinlesion_gateway_request_seconds_count{route="/api/v1/predictions"}')
up_sum=$(value 'skinlesion_gateway_upstream_seconds_sum{method="Classify",upstream="inference"}')
up_n=$(value 'skinlesion_gateway_upstream_seconds_count{method="Classify",upstream="inference"}')
summary+=("$(awk -v rs="$req_sum" -v rn="$req_n" -v us="$up_sum" -v un="$up_n" 'BEGIN {
  printf "gateway in-process time per prediction (mean request - mean Classify call, %d requests): %.3f ms",
         rn, 1000 * (rs / rn - us / un) }')")
echo
for s in "${summary[@]}"; do echo "    $s"; done
echo
echo "$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')), inference --threads $INFERENCE_THREADS, medians of $ROUNDS alternating rounds of ${DURATION} s (after ${WARMUP} s warm-up), image $(basename "$IMAGE") ($(stat -c %s "$IMAGE") bytes)."
