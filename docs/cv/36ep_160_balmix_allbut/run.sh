#!/bin/bash
# The shipped model's procedure, measured on images it never saw: for each round r of the
# kfold5 seed-42 split, the shipped recipe trained as the model on every image is
# (`train --all_folds`, no validation, the last epoch) but on every image *but* fold r's
# (`--fold r`: 4,787 images), exported fp16, its operating point fitted by
# `fit-thresholds --from_cv docs/cv/36ep_160_balmix_oof` on the other four rounds'
# out-of-fold answers (round r's are left out: they are answers on its test images), and
# scored on fold r by `skinlesion evaluate` with the served views (flips), which also keeps
# its answers on fold r as a cv round does (fold<r>/out_of_fold_{none,flips}.csv; with all
# five rounds here this folder works as `fit-thresholds --from_cv`). Resumable: a
# round whose metrics are here is skipped; a round in training resumes from its last epoch.
# About 33 minutes a round with bf16 on 2 cores (the shipped model: 46 min on 5,984).
#
#   docs/cv/36ep_160_balmix_allbut/run.sh          # FOLDS="0 1 2 3 4" by default
# At the end it writes summary.md: the rounds kept out, each paired with the same round of
# the leave-one-round-out check of the three-fold round models (FROM_CV's
# leave_one_round_out_flips.json), `tools/model_card.py show kept_out`.
# Dry run on the test fixtures: SHIP_WORK=/tmp/w DOCS_OUT=/tmp/w/docs DATA=... [METADATA=...]
#   SPLIT=kfold3.csv FOLDS="0" SET=image_size=32,epochs=1 FROM_CV=cv_dir_of_that_split run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
HERE=docs/cv/36ep_160_balmix_allbut
OUT=${DOCS_OUT:-$HERE}
D=${DATA:-../shared/data/ham10000}
S=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
FROM_CV=${FROM_CV:-docs/cv/36ep_160_balmix_oof}
DM=(--data "$D")
[ -n "${METADATA:-}" ] && DM+=(--metadata "$METADATA")
SETS=()
[ -n "${SET:-}" ] && SETS=(--set "$SET")
C=configs/ham10000_resnet18_36ep_160_balmix.json
W=${SHIP_WORK:-runs}/allbut
CLI=$(realpath "${SKINLESION:-build/tools/skinlesion}")
mkdir -p "$W" "$OUT"
log() { echo "[allbut $(date -u +%H:%M)] $*" >&2; }
for f in ${FOLDS:-0 1 2 3 4}; do
  if [ -e "$OUT/fold${f}_metrics.json" ]; then
    log "round $f: metrics already in $OUT"
    continue
  fi
  R=$W/fold$f
  if [ ! -e "$R/model/manifest.json" ]; then
    log "round $f: training on every image but fold$f's"
    resume=()
    [ -e "$R/checkpoints/last/state.json" ] && resume=(--resume)
    "$CLI" train --config "$C" "${DM[@]}" --split "$S" --all_folds --fold "$f" --out "$R" "${SETS[@]}" \
      "${resume[@]}" >> "$R.txt" 2>&1 || { tail -20 "$R.txt"; exit 1; }
  fi
  log "round $f: export, fit on the other rounds' answers, evaluate on fold$f"
  rm -rf "$R/bundled" "$R/eval"
  # Served squashed whole, as the 224 px images it learnt from were made from 600x450
  # (docs/cv/aspect_600x450); the same answers on square images.
  "$CLI" export --model "$R/model" --out "$R/bundled" --fp16 --resize resize
  "$CLI" fit-thresholds --model "$R/bundled" "${DM[@]}" --split "$S" --from_cv "$FROM_CV" \
    --ood_images tests/fixtures/ood --tta_views flips --threads 2 > "$R/fit.txt"
  # fp32: the rounds' answers the comparison reads were computed in fp32 too.
  "$CLI" evaluate --model "$R/bundled" "${DM[@]}" --split "$S" --partition "fold$f" \
    --precision fp32 --out "$R/eval" --answers_dir "$R/answers" > "$R/eval.txt"
  mkdir -p "$OUT/fold$f"
  cp "$R/fit.txt" "$R/eval.txt" "$R/train_log.jsonl" "$R/training_curves.png" \
    "$R"/answers/out_of_fold_*.csv "$OUT/fold$f/"
  # The recipe and split of the answers, as in a cv folder.
  cp "$FROM_CV/cv_recipe.json" "$OUT/"
  cp "$R/bundled/manifest.json" "$OUT/fold$f/manifest.json"
  cp "$R/eval/metrics.json" "$OUT/fold${f}_metrics.json"
  log "round $f: done"
done
if ls "$OUT"/fold*_metrics.json > /dev/null 2>&1; then
  /usr/bin/python3 tools/model_card.py show kept_out "$OUT" "$FROM_CV/leave_one_round_out_flips.json" \
    > "$OUT/summary.md"
  cat "$OUT/summary.md"
fi
