# Sourced by the dry-run tests of the docs/cv and bench scripts (ship_path_test.sh,
# hold_source_test.sh, bench/train_workers_bench_test.sh), called as
# `test.sh CLI FIX OUT`: sets CLI, FIX and OUT from the arguments, ROOT (the
# repository), empties OUT, writes a 3-fold split of the fixtures to OUT/kfold3.csv and
# sets TINY, the --set of a ResNet-18 at 32 px that trains an epoch in seconds; the
# weights are deleted when the test passes (drop_weights.sh).
# shellcheck shell=bash disable=SC2034
set -euo pipefail
CLI=$1 FIX=$2 OUT=$3
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rm -rf "$OUT"
mkdir -p "$OUT"
# shellcheck source=tools/drop_weights.sh
source "$(dirname "${BASH_SOURCE[0]}")/drop_weights.sh"
"$CLI" split --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" --out "$OUT/kfold3.csv" \
  --kfold 3 --seed 1 > /dev/null
TINY=architecture=resnet18,image_size=32,batch_size=4,threads=1,progress_interval_s=0,frozen_epochs=0
