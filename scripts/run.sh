#!/usr/bin/env bash
# The main job. Installs everything (apt), builds, and runs what exists today:
# a summary of the HAM10000 data set, a lesion-disjoint split of it, an
# augmentation grid of a real lesion image (under out/), and the bundled model's
# predictions for three lesion images.
#
#   scripts/run.sh                              # data from ../shared/data/ham10000 if present,
#                                               # else the committed fixtures
#   HAM10000_DIR=/path/to/ham10000 scripts/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Idle OpenMP threads sleep instead of spinning: on a shared or small machine the
# default busy-wait steals the cores from the threads doing the work.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}

bash scripts/setup.sh
BUILD_DIR=${BUILD_DIR:-build}
cmake -S . -B "$BUILD_DIR" -G Ninja >/dev/null
ninja -C "$BUILD_DIR" skinlesion

CLI="$BUILD_DIR/tools/skinlesion"
DATA=${HAM10000_DIR:-../shared/data/ham10000}
mkdir -p out
if [ -f "$DATA/HAM10000_metadata.csv" ]; then
  "$CLI" dataset --data "$DATA"
  "$CLI" split --data "$DATA" --out out/split.csv --seed 42
  IMAGE=$(find "$DATA" -name 'ISIC_0024698.jpg' -print -quit)
else
  echo "run: $DATA not found; using the committed fixtures"
  FIX=tests/fixtures/ham10000
  "$CLI" dataset --data "$FIX/images" --metadata "$FIX/metadata_subset.csv"
  IMAGE=""
fi
IMAGE=${IMAGE:-tests/fixtures/ham10000/images/ISIC_0024698.jpg}
"$CLI" augment-grid --image "$IMAGE" --preset medical --out out/augmentation_grid.png
echo "run: wrote out/augmentation_grid.png"
# The bundled model (models/bundled, see its MODEL_CARD.md) on three committed images.
"$CLI" predict tests/fixtures/ham10000/images/ISIC_0024698.jpg \
  tests/fixtures/ham10000/images/ISIC_0031901.jpg tests/fixtures/ham10000/images/ISIC_0029360.jpg
