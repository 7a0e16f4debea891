#!/usr/bin/env bash
# Every bf16 measurement of docs/performance.md ("bf16") in one run, on this machine:
# eval forward and training steps against Python torchvision (lock-step), served
# throughput against the fp32 server, and what `auto` does on a CPU without native
# bf16 (simulated: SKINLESION_CPU_DISABLE hides the bf16 flags from the precision
# choice, ONEDNN_MAX_CPU_ISA keeps oneDNN off the bf16 instructions). Writes one
# markdown file per measurement into OUT (default bench-results/bf16) and prints them.
#
#   bench/bf16_bench.sh [OUT] [BUILD_DIR]
#
# Run from the repository root after building (ninja -C build). About 15 minutes on
# 2 cores. Each benchmark measures the machine's fp32 and bf16 GEMM peak first.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results/bf16}
BUILD=${2:-build}
export OMP_WAIT_POLICY=PASSIVE
mkdir -p "$OUT"
run() {
  local name=$1
  shift
  echo "== $name: $*" >&2
  "$@" > "$OUT/$name.md"
  cat "$OUT/$name.md"
}
grep -m1 -o 'avx512_bf16\|amx_bf16' /proc/cpuinfo > /dev/null || echo "note: this CPU has no native bf16" >&2
TT=$BUILD/bench/train_throughput_bench
# Eval forward, batch 8, 224 px: C++ bf16 against Python fp32 and against Python bf16.
run eval_vs_python_fp32 "$TT" --eval --archs resnet50,vit_b_16 --batch 8 --precision bf16 \
  --python_precision fp32 --warmup 2 --iters 7
run eval_vs_python_bf16 "$TT" --eval --archs resnet50,vit_b_16 --batch 8 --precision bf16 \
  --python_precision bf16 --warmup 2 --iters 7 --gemm_size 0
# Training steps (bf16 autocast, fp32 master weights) against the Python fp32 step.
run train_224 "$TT" --archs resnet50,efficientnet_b0 --batch 8 --precision bf16 \
  --python_precision fp32 --warmup 3 --iters 7 --gemm_size 0
run train_resnet18_112 "$TT" --archs resnet18 --size 112 --batch 32 --precision bf16 \
  --python_precision fp32 --warmup 3 --iters 7 --gemm_size 0
# Served throughput: the bf16 server against the fp32 server, same run.
run serving "$BUILD/bench/inference_load_bench" --server "$BUILD/services/inference/skinlesion-inference" \
  --archs resnet50 --concurrency 1,8 --precisions fp32,bf16 --duration_s 15 --warmup_s 3 --raw_iters 5
# A CPU without native bf16: auto must pick fp32 (and bf16 would be slower).
run no_native_bf16 env SKINLESION_CPU_DISABLE=avx512_bf16,amx_bf16 ONEDNN_MAX_CPU_ISA=AVX512_CORE \
  "$BUILD/bench/models_bench" --models resnet50 --batches 8 --modes eval --precisions fp32,auto,bf16 \
  --no_reference --iters 5 --warmup 2
