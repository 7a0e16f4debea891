#!/usr/bin/env bash
# Renders the prometheus.yml template for the local cluster (what scripts/cluster.sh
# does with sed, with checks).
#   deploy/prometheus/render_config.sh OUT.yml \
#       GATEWAY_METRICS=127.0.0.1:8080 INFERENCE_METRICS=127.0.0.1:9091 \
#       TRAINER_METRICS=127.0.0.1:9103 REGISTRY_METRICS=127.0.0.1:9092 \
#       PROMETHEUS=127.0.0.1:9090 [RULES_DIR=DIR]
# RULES_DIR defaults to this directory; the others must be given as HOST:PORT. An
# unknown or missing placeholder is an error.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 1 ]; then
  sed -n '2,9s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
out=$1
shift
declare -A values=([RULES_DIR]="$here")
for arg in "$@"; do
  name=${arg%%=*}
  value=${arg#*=}
  case $name in
    GATEWAY_METRICS | INFERENCE_METRICS | TRAINER_METRICS | REGISTRY_METRICS | PROMETHEUS)
      if ! [[ $value =~ ^[A-Za-z0-9._-]+:[0-9]{1,5}$ ]]; then
        echo "render_config.sh: $name must be HOST:PORT, got '$value'" >&2
        exit 2
      fi ;;
    RULES_DIR) ;;
    *)
      echo "render_config.sh: unknown placeholder '$name'" >&2
      exit 2 ;;
  esac
  values[$name]=$value
done
text=$(<"$here/prometheus.yml")
for name in "${!values[@]}"; do
  text=${text//"\${$name}"/${values[$name]}}
done
if missing=$(grep -o '\${[A-Z_]*}' <<<"$text" | sort -u | tr '\n' ' ') && [ -n "$missing" ]; then
  echo "render_config.sh: no value for $missing" >&2
  exit 2
fi
printf '%s\n' "$text" >"$out"
