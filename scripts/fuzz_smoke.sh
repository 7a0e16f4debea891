#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan+UBSan) and runs each for
# FUZZ_SECONDS (default 20) on a scratch copy of its seed corpus. Fails on any crash.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
SECONDS_EACH=${FUZZ_SECONDS:-20}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DSKINLESION_FUZZ=ON >/dev/null
ninja -C "$BUILD_DIR"
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
for corpus in fuzz/corpus/*/; do
  name=$(basename "$corpus")
  cp -r "$corpus" "$scratch/$name"
  echo "fuzz: $name for ${SECONDS_EACH}s"
  "$BUILD_DIR/fuzz/$name" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 \
      -artifact_prefix="$scratch/" "$scratch/$name" 2>&1 | tail -n 3
done
echo "fuzz: all targets ran clean"
