#!/bin/bash
# Copies what `skinlesion cv` wrote for the shipped recipe's rounds into this folder
# (everything but the models and checkpoints, 300 MB a round):
#
#   build/tools/skinlesion cv --config configs/ham10000_resnet18_36ep_160_balmix.json \
#       --data ../shared/data/ham10000 --split configs/ham10000_kfold5_seed42.csv \
#       --out runs/cv36 --folds N          # one round at a time; resumable
#   docs/cv/36ep_160_balmix_oof/collect.sh [CV_DIR [DEST]]   # runs/cv36, this folder
#
# The folder keeps the layout of a cv folder, so the answer files work as one:
#   build/tools/skinlesion fit-thresholds --model SHIP_MODEL --data ../shared/data/ham10000 \
#       --split configs/ham10000_kfold5_seed42.csv --from_cv docs/cv/36ep_160_balmix_oof
# reads fold<i>/out_of_fold_<views>.csv instead of answering with the round models.
set -euo pipefail
HERE=$(dirname "$0")
CV=$(realpath "${1:-$HERE/../../../runs/cv36}")
DEST=$(realpath -m "${2:-$HERE}")
mkdir -p "$DEST"
cd "$DEST"
cp "$CV"/cv.json "$CV"/cv.md "$CV"/cv.png "$CV"/cv_recipe.json .
for d in "$CV"/fold*; do
  f=$(basename "$d")
  [ -e "$d/out_of_fold_flips.csv" ] || continue  # a round still training
  mkdir -p "$f"
  cp "$d"/out_of_fold_*.csv "$d"/train_log.jsonl "$d"/config.json "$d"/training_curves.png "$f/"
  cp "$d/report/metrics.json" "${f}_metrics.json"
  echo "copied $f"
done
