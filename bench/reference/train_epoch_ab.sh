#!/usr/bin/env bash
# Whole-trainer throughput, C++ against Python, in the same run: alternating
# one-epoch runs of `skinlesion train` and train_reference.py on the same config,
# split and data (decoding, augmentation, loading, forward, backward, optimiser: all
# of it), then the median over rounds of each side's training images per second
# (validation excluded, as both logs report it) and their ratio. Alternating
# (C++, Python, Python, C++, ...) lets drifting machine load hit both sides alike.
#
#   bench/reference/train_epoch_ab.sh CONFIG SPLIT DATA [ROUNDS=2]
#   e.g. bench/reference/train_epoch_ab.sh configs/ham10000_resnet18_cpu.json \
#            configs/ham10000_split_seed42.csv ../shared/data/ham10000 2
set -euo pipefail
CONFIG=$1 SPLIT=$2 DATA=$3 ROUNDS=${4:-2}
CLI=${CLI:-build/tools/skinlesion}
PY=${PY:-/usr/bin/python3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
# The same recipe, one epoch.
"$PY" -c 'import json,sys; c=json.load(open(sys.argv[1])); c["epochs"]=1; c["warmup_epochs"]=0; json.dump(c,open(sys.argv[2],"w"))' \
  "$CONFIG" "$WORK/one_epoch.json"

rate() {  # images_per_second of the (only) epoch in a run's train_log.jsonl
  "$PY" -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["images_per_second"])' "$1/train_log.jsonl"
}
run_cpp() {
  "$CLI" train --config "$WORK/one_epoch.json" --data "$DATA" --split "$SPLIT" --out "$WORK/cpp_$1" \
    >"$WORK/cpp_$1.log" 2>&1 || { cat "$WORK/cpp_$1.log"; exit 1; }
  rate "$WORK/cpp_$1"
}
run_py() {
  "$PY" bench/reference/train_reference.py --config "$WORK/one_epoch.json" --data "$DATA" --split "$SPLIT" \
    --out "$WORK/py_$1" >"$WORK/py_$1.log" 2>&1 || { cat "$WORK/py_$1.log"; exit 1; }
  rate "$WORK/py_$1"
}

cpp=() py=()
for ((r = 0; r < ROUNDS; ++r)); do
  if ((r % 2 == 0)); then
    cpp+=("$(run_cpp "$r")"); py+=("$(run_py "$r")")
  else
    py+=("$(run_py "$r")"); cpp+=("$(run_cpp "$r")")
  fi
  echo "round $((r + 1))/$ROUNDS: C++ ${cpp[-1]} img/s, Python ${py[-1]} img/s" >&2
done
"$PY" - "${cpp[*]}" "${py[*]}" <<'PY'
import statistics, sys
cpp = [float(x) for x in sys.argv[1].split()]
py = [float(x) for x in sys.argv[2].split()]
print("| trainer | img/s per round | median |")
print("|---|---|---:|")
print(f"| C++ `skinlesion train` | {', '.join(f'{x:.1f}' for x in cpp)} | {statistics.median(cpp):.1f} |")
print(f"| Python reference | {', '.join(f'{x:.1f}' for x in py)} | {statistics.median(py):.1f} |")
print(f"\nC++ / Python whole-trainer throughput: {statistics.median(cpp) / statistics.median(py):.2f}x "
      f"(per round: {', '.join(f'{a / b:.2f}x' for a, b in zip(cpp, py))})")
PY
