#!/usr/bin/env bash
# The local cluster, in the foreground: the model registry (seeded with the bundled
# model as `production`), the trainer, the inference service, the gateway with the
# website, and a real Prometheus scraping them. A service that exits (a crash,
# kill -9) is started again after a backoff (0.5 s doubling to 8 s; back to 0.5 s once
# it has run for 30 s), with a line on stdout and in its log; only Ctrl-C (or SIGTERM)
# stops everything, cleanly. Expects built binaries (scripts/run.sh builds them, then
# calls this).
#
#   scripts/cluster.sh                       # state, logs and token under out/cluster
#   SKINLESION_GATEWAY_PORT=8088 scripts/cluster.sh
#
# Environment (defaults in brackets):
#   BUILD_DIR [build]                  where the binaries are
#   SKINLESION_CLUSTER_DIR [out/cluster]  registry, job database, Prometheus data, logs/
#   SKINLESION_HOST [127.0.0.1]        address every service listens on
#   SKINLESION_GATEWAY_PORT [8080]  SKINLESION_INFERENCE_PORT [50051]
#   SKINLESION_INFERENCE_METRICS_PORT [9091]  SKINLESION_REGISTRY_PORT [50052]
#   SKINLESION_REGISTRY_METRICS_PORT [9092]
#   SKINLESION_TRAINER_PORT [50053]  SKINLESION_TRAINER_METRICS_PORT [9093]
#   SKINLESION_PROMETHEUS_PORT [9090]  (SKINLESION_PROMETHEUS=0: no Prometheus)
#   SKINLESION_TOKEN                   bearer token for jobs and alias changes
#                                      [a random one, kept in <cluster dir>/token]
#   SKINLESION_INFERENCE_THREADS [2]   LibTorch intra-op threads of the inference service
#   SKINLESION_POLL_INTERVAL_S [2]     how often inference re-resolves the alias
#   SKINLESION_GATEWAY_FLAGS           extra gateway flags, space-separated (e.g.
#                                      "--header_timeout_ms=3000"; docs/gateway.md)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

BUILD_DIR=${BUILD_DIR:-build}
case "$BUILD_DIR" in /*) ;; *) BUILD_DIR="$ROOT/$BUILD_DIR" ;; esac
STATE=${SKINLESION_CLUSTER_DIR:-$ROOT/out/cluster}
HOST=${SKINLESION_HOST:-127.0.0.1}
GATEWAY_PORT=${SKINLESION_GATEWAY_PORT:-8080}
INFERENCE_PORT=${SKINLESION_INFERENCE_PORT:-50051}
INFERENCE_METRICS_PORT=${SKINLESION_INFERENCE_METRICS_PORT:-9091}
REGISTRY_PORT=${SKINLESION_REGISTRY_PORT:-50052}
REGISTRY_METRICS_PORT=${SKINLESION_REGISTRY_METRICS_PORT:-9092}
TRAINER_PORT=${SKINLESION_TRAINER_PORT:-50053}
TRAINER_METRICS_PORT=${SKINLESION_TRAINER_METRICS_PORT:-9093}
PROMETHEUS_PORT=${SKINLESION_PROMETHEUS_PORT:-9090}
WITH_PROMETHEUS=${SKINLESION_PROMETHEUS:-1}
THREADS=${SKINLESION_INFERENCE_THREADS:-2}
POLL_S=${SKINLESION_POLL_INTERVAL_S:-2}
read -r -a GATEWAY_FLAGS <<<"${SKINLESION_GATEWAY_FLAGS:-}"

log() { echo "cluster: $*"; }
die() { echo "cluster: error: $*" >&2; exit 1; }

for bin in services/registry/skinlesion-registry services/trainer/skinlesion-trainer \
           services/inference/skinlesion-inference services/gateway/skinlesion-gateway \
           tools/skinlesion; do
  [ -x "$BUILD_DIR/$bin" ] || die "$BUILD_DIR/$bin is missing: build first (scripts/run.sh does)"
done
if [ "$WITH_PROMETHEUS" != 0 ]; then
  command -v prometheus >/dev/null || die "prometheus is not installed (scripts/setup.sh installs it)"
fi

mkdir -p "$STATE/logs"
# One cluster per state directory: a second start while one runs says so.
exec 9>"$STATE/lock"
if ! flock -n 9; then
  die "a cluster is already running from $STATE (pid $(cat "$STATE/pid" 2>/dev/null || echo '?')); stop it with Ctrl-C or: kill \$(cat $STATE/pid)"
fi
echo $$ >"$STATE/pid"

port_busy() { (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null; }
ports=("gateway:$GATEWAY_PORT" "inference:$INFERENCE_PORT" "inference metrics:$INFERENCE_METRICS_PORT"
       "registry:$REGISTRY_PORT" "registry metrics:$REGISTRY_METRICS_PORT" "trainer:$TRAINER_PORT" "trainer metrics:$TRAINER_METRICS_PORT")
[ "$WITH_PROMETHEUS" != 0 ] && ports+=("prometheus:$PROMETHEUS_PORT")
for p in "${ports[@]}"; do
  if port_busy "${p##*:}"; then
    die "port ${p##*:} (${p%:*}) is in use on $HOST; choose another with the SKINLESION_*_PORT variables"
  fi
done

# The token: given, or made once and kept (mode 0600) for the CLI and the website.
umask 077
if [ -n "${SKINLESION_TOKEN:-}" ]; then
  printf '%s' "$SKINLESION_TOKEN" >"$STATE/token"
elif [ ! -s "$STATE/token" ]; then
  od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$STATE/token"
fi
umask 022

# Supervision state, by index (the start order): the pid, the name, the command
# (a function run_NAME), when it started, its restart count and backoff, and when a
# restart is due (0: none pending).
PIDS=()
NAMES=()
STARTED=()
RESTARTS=()
BACKOFF_MS=()
RESTART_AT_MS=()
now_ms() { local t=$EPOCHREALTIME; echo $((${t%.*} * 1000 + 10#${t#*.} / 1000)); }
launch() {  # launch INDEX: (re)starts service INDEX in the background
  local i=$1 name=${NAMES[$1]}
  "run_$name" >>"$STATE/logs/$name.log" 2>&1 &
  PIDS[i]=$!
  STARTED[i]=$SECONDS
  RESTART_AT_MS[i]=0
}
start() {  # start NAME: runs run_NAME in the background, output to logs/NAME.log
  local name=$1 i=${#NAMES[@]}
  NAMES[i]=$name
  RESTARTS[i]=0
  BACKOFF_MS[i]=500
  launch "$i"
  log "started $name (pid ${PIDS[$i]}), log $STATE/logs/$name.log"
}

STOPPING=0
stop_all() {
  [ "$STOPPING" = 1 ] && return
  STOPPING=1
  # A second Ctrl-C (or the terminal's SIGINT reaching us again) must not cut the
  # clean stop short; it is bounded anyway (SIGKILL after 20 s).
  trap '' INT TERM
  log "stopping"
  local i
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    kill -TERM "${PIDS[$i]}" 2>/dev/null || true
  done
  local deadline=$((SECONDS + 20))
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    while kill -0 "${PIDS[$i]}" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.2; done
    if kill -0 "${PIDS[$i]}" 2>/dev/null; then
      log "${NAMES[$i]} did not stop in time: SIGKILL"
      kill -KILL "${PIDS[$i]}" 2>/dev/null || true
    fi
    wait "${PIDS[$i]}" 2>/dev/null || true
  done
  rm -f "$STATE/pid"
  log "stopped"
}
trap 'stop_all; exit 0' INT TERM
trap 'stop_all' EXIT

wait_http() {  # wait_http NAME URL SECONDS
  local deadline=$((SECONDS + $3))
  until curl -fsS -o /dev/null "$2" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || die "$1 not ready at $2 after $3 s (log: $STATE/logs/$1.log)"
    check_alive
    sleep 0.5
  done
}
wait_port() {  # wait_port NAME PORT SECONDS
  local deadline=$((SECONDS + $3))
  until port_busy "$2"; do
    [ $SECONDS -lt $deadline ] || die "$1 not listening on $HOST:$2 after $3 s (log: $STATE/logs/$1.log)"
    check_alive
    sleep 0.2
  done
}
# Restarts services that exited: the exit is logged at once, the start again after
# the service's backoff (0.5 s, doubling to 8 s; reset once it ran for 30 s).
check_alive() {
  local i code now
  [ "$STOPPING" = 1 ] && return
  for i in "${!PIDS[@]}"; do
    if [ "${RESTART_AT_MS[$i]}" = 0 ] && ! kill -0 "${PIDS[$i]}" 2>/dev/null; then
      code=0
      wait "${PIDS[$i]}" 2>/dev/null || code=$?
      # Ctrl-C reaches the whole process group: the services may exit a moment
      # before our own trap runs. Not a crash then.
      [ "$STOPPING" = 1 ] && return
      if [ $((SECONDS - STARTED[i])) -ge 30 ]; then BACKOFF_MS[i]=500; fi
      RESTARTS[i]=$((RESTARTS[i] + 1))
      RESTART_AT_MS[i]=$(($(now_ms) + BACKOFF_MS[i]))
      local how="exit code $code"
      [ "$code" -gt 128 ] && how="signal $(kill -l $((code - 128)) 2>/dev/null || echo $((code - 128)))"
      log "${NAMES[$i]} (pid ${PIDS[$i]}) exited ($how); restart ${RESTARTS[$i]} in ${BACKOFF_MS[$i]} ms"
      echo "cluster: exited ($how) at $(date -u +%FT%TZ); restarting in ${BACKOFF_MS[$i]} ms" \
        >>"$STATE/logs/${NAMES[$i]}.log"
      BACKOFF_MS[i]=$((BACKOFF_MS[i] * 2 > 8000 ? 8000 : BACKOFF_MS[i] * 2))
    fi
  done
  now=$(now_ms)
  for i in "${!PIDS[@]}"; do
    if [ "${RESTART_AT_MS[$i]}" != 0 ] && [ "$now" -ge "${RESTART_AT_MS[$i]}" ]; then
      launch "$i"
      log "restarted ${NAMES[$i]} (pid ${PIDS[$i]}, restart ${RESTARTS[$i]})"
    fi
  done
}

BIN="$BUILD_DIR/services"
# One function per service: what start and every restart run.
run_registry() {
  exec "$BIN/registry/skinlesion-registry" --root "$STATE/registry" --address "$HOST" \
    --port "$REGISTRY_PORT" --metrics_port "$REGISTRY_METRICS_PORT" --seed_model_dir "$ROOT/models/bundled" --seed_model ham10000 \
    --seed_alias production --set_alias_token_file "$STATE/token"
}
run_trainer() {
  exec "$BIN/trainer/skinlesion-trainer" --state_dir "$STATE/trainer" \
    --registry_root "$STATE/registry" --address "$HOST" --port "$TRAINER_PORT" \
    --metrics_port "$TRAINER_METRICS_PORT" --cli "$BUILD_DIR/tools/skinlesion" \
    --token_file "$STATE/token"
}
run_inference() {
  exec "$BIN/inference/skinlesion-inference" --host "$HOST" --port "$INFERENCE_PORT" \
    --metrics_port "$INFERENCE_METRICS_PORT" --registry_target "$HOST:$REGISTRY_PORT" \
    --model ham10000 --alias production --threads "$THREADS" --poll_interval_s "$POLL_S" \
    --cache_dir "$STATE/inference-cache"
}
run_gateway() {
  exec "$BIN/gateway/skinlesion-gateway" --host "$HOST" --port "$GATEWAY_PORT" \
    --inference_target "$HOST:$INFERENCE_PORT" --registry_target "$HOST:$REGISTRY_PORT" \
    --trainer_target "$HOST:$TRAINER_PORT" --web_root "$ROOT/web" --token_file "$STATE/token" \
    "${GATEWAY_FLAGS[@]}"
}
run_prometheus() {
  exec prometheus --config.file "$STATE/prometheus/prometheus.yml" \
    --storage.tsdb.path "$STATE/prometheus/data" --web.listen-address "$HOST:$PROMETHEUS_PORT"
}

start registry
wait_port registry "$REGISTRY_PORT" 30
start trainer
start inference
wait_port trainer "$TRAINER_PORT" 30
start gateway

if [ "$WITH_PROMETHEUS" != 0 ]; then
  mkdir -p "$STATE/prometheus"
  bash "$ROOT/deploy/prometheus/render_config.sh" "$STATE/prometheus/prometheus.yml" \
    GATEWAY_METRICS="$HOST:$GATEWAY_PORT" INFERENCE_METRICS="$HOST:$INFERENCE_METRICS_PORT" \
    TRAINER_METRICS="$HOST:$TRAINER_METRICS_PORT" REGISTRY_METRICS="$HOST:$REGISTRY_METRICS_PORT" \
    PROMETHEUS="$HOST:$PROMETHEUS_PORT"
  start prometheus
fi

wait_http gateway "http://$HOST:$GATEWAY_PORT/healthz" 30
wait_http inference "http://$HOST:$GATEWAY_PORT/readyz" 180
[ "$WITH_PROMETHEUS" != 0 ] && wait_http prometheus "http://$HOST:$PROMETHEUS_PORT/-/ready" 60

cat <<EOF

  skinlesion is running.
    website      http://$HOST:$GATEWAY_PORT/
    REST API     http://$HOST:$GATEWAY_PORT/api/v1/openapi.json
    inference    $HOST:$INFERENCE_PORT (gRPC), metrics http://$HOST:$INFERENCE_METRICS_PORT/metrics
    trainer      $HOST:$TRAINER_PORT (gRPC), metrics http://$HOST:$TRAINER_METRICS_PORT/metrics
    registry     $HOST:$REGISTRY_PORT (gRPC), metrics http://$HOST:$REGISTRY_METRICS_PORT/metrics, root $STATE/registry
EOF
[ "$WITH_PROMETHEUS" != 0 ] && echo "    prometheus   http://$HOST:$PROMETHEUS_PORT/"
cat <<EOF
    logs         $STATE/logs/
    token        $STATE/token (jobs and alias changes: Authorization: Bearer <token>)
  Ctrl-C stops everything.
CLUSTER READY
EOF

# Supervise: a service that exits is started again (check_alive); Ctrl-C or SIGTERM
# stops everything (the trap).
while true; do
  check_alive
  sleep 0.25 &
  wait $! || true
done
