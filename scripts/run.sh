#!/usr/bin/env bash
# The main job: installs everything (apt), builds the services, and runs the local
# cluster in the foreground (scripts/cluster.sh): the model registry seeded with the
# bundled model (models/bundled) as `production`, the trainer, the inference service,
# the gateway serving the website, and Prometheus scraping them. It prints the
# website URL; Ctrl-C stops everything. Ports, state and log directory: see the
# variables at the top of scripts/cluster.sh (e.g. SKINLESION_GATEWAY_PORT=8088).
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine the
# default busy-wait steals the cores from the threads doing the work.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)}

bash scripts/setup.sh
export BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" skinlesion skinlesion-registry skinlesion-trainer skinlesion-inference \
  skinlesion-gateway
exec bash scripts/cluster.sh
