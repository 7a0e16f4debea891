#!/usr/bin/env bash
# Training throughput against the loader's worker count, in one run: `skinlesion train`
# for one epoch of a recipe on real images with num_workers = each of WORKERS (default
# "2 1 0"; the recipes' 2 first, the reference), the settings taken in turn, REPEATS
# rounds (default 3), so every setting sees the machine in the same states. The loader's
# batches do not depend on the worker count (skinlesion/data/loader.h), so neither does
# the trained model: this is only a question of how the 2 cores are shared between the
# loader's threads and LibTorch's. Prints a markdown table: median images/s of the epoch
# per setting and the median over rounds of each setting's ratio to the reference's
# (> 1: faster than the recipe's setting).
#
#   bench/train_workers_bench.sh [OUT] [BUILD_DIR]
#   DATA=../shared/data/ham10000 [METADATA=...] SPLIT=configs/ham10000_kfold5_seed42.csv FOLD=0 \
#   CONFIG=configs/ham10000_resnet18_36ep_160_balmix.json WORKERS="2 1 0" REPEATS=3 \
#   SET=... (more --set overrides, e.g. image_size=32 for a dry run)
#
# One epoch (no warm-up: a one-epoch schedule has no room for it; the speed is the same) of
# every image but fold FOLD's (train --all_folds --fold FOLD, 4,787 images
# of the kfold5 split): about 65 s with bf16 on 2 cores, so about 11 minutes for the
# defaults. Exits 0 with "skipped: no data" when DATA is absent (a fresh clone).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-bench-results/train_workers}
BUILD=${2:-build}
DATA=${DATA:-../shared/data/ham10000}
SPLIT=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
FOLD=${FOLD:-0}
CONFIG=${CONFIG:-configs/ham10000_resnet18_36ep_160_balmix.json}
WORKERS=${WORKERS:-2 1 0}
REPEATS=${REPEATS:-3}
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [ ! -d "$DATA" ]; then
  echo "skipped: no data at $DATA"
  exit 0
fi
DM=(--data "$DATA")
[ -n "${METADATA:-}" ] && DM+=(--metadata "$METADATA")
CLI=$(realpath "${SKINLESION:-$BUILD/tools/skinlesion}")
read -r -a settings <<< "$WORKERS"
mkdir -p "$OUT"
rm -f "$OUT/ips.tsv"
for ((r = 0; r < REPEATS; r++)); do
  for w in "${settings[@]}"; do
    run="$OUT/r${r}_w$w"
    rm -rf "$run"
    extra="num_workers=$w,epochs=1,warmup_epochs=0"
    [ -n "${SET:-}" ] && extra="$extra,$SET"
    echo "== round $((r + 1))/$REPEATS: num_workers=$w" >&2
    "$CLI" train --config "$CONFIG" "${DM[@]}" --split "$SPLIT" --all_folds --fold "$FOLD" \
      --out "$run" --set "$extra" > "$run.txt" 2>&1 || { tail -20 "$run.txt" >&2; exit 1; }
    /usr/bin/python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(sys.argv[2], sys.argv[3], rows[-1]["images_per_second"], sep="\t")
' "$run/train_log.jsonl" "$r" "$w" >> "$OUT/ips.tsv"
    rm -rf "$run"
  done
done
/usr/bin/python3 - "$OUT/ips.tsv" "${settings[0]}" "$REPEATS" "$(nproc)" <<'PY' | tee "$OUT/train_workers.md"
import collections, statistics, sys
path, ref, repeats, cores = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
by = collections.defaultdict(dict)
for line in open(path):
    r, w, ips = line.split('\t')
    by[w][r] = float(ips)
print(f'| loader workers | images/s (median of {repeats}) | min | max | ratio to {ref} workers (median over rounds) |')
print('|---:|---:|---:|---:|---:|')
for w, per_round in by.items():
    v = list(per_round.values())
    ratio = statistics.median(per_round[r] / by[ref][r] for r in per_round)
    print(f'| {w} | {statistics.median(v):.1f} | {min(v):.1f} | {max(v):.1f} | {ratio:.3f} |')
print(f'\nOne training epoch per run (`train --all_folds`), settings in turn, {repeats} rounds; '
      f'{cores} CPUs; LibTorch threads as the config sets them; OMP_WAIT_POLICY=PASSIVE.')
PY
