#!/usr/bin/env bash
# Installs everything (apt), builds, and runs the test suite (all but `slow`).
#   scripts/test.sh                 # default suite (what CI runs)
#   SKINLESION_TEST_LABELS=slow scripts/test.sh   # only the slow tests
#   BUILD_DIR=build-asan CMAKE_ARGS=-DSKINLESION_SANITIZE=ON scripts/test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine the
# default busy-wait steals the cores from the threads doing the work.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# ccache keys on paths relative to the checkout, so another clone (CI) reuses the cache.
export CCACHE_BASEDIR=${CCACHE_BASEDIR:-$(pwd)}

bash scripts/setup.sh
# The JavaScript test tools (playwright-core for the browser test, kubernetes-models
# for the manifests), pinned by tests/js/package-lock.json.
npm ci --prefix tests/js --no-audit --no-fund --loglevel=error
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# shellcheck disable=SC2086
cmake -S . -B "$BUILD_DIR" -G Ninja ${CMAKE_ARGS:-} >/dev/null
start=$(date +%s)
ninja -C "$BUILD_DIR" -j "$JOBS"
echo "build: $(( $(date +%s) - start )) s"

if [ -n "${SKINLESION_TEST_LABELS:-}" ]; then
  ctest --test-dir "$BUILD_DIR" -L "$SKINLESION_TEST_LABELS" --output-on-failure -j "$JOBS"
else
  ctest --test-dir "$BUILD_DIR" -LE slow --output-on-failure -j "$JOBS"
fi
