#!/bin/bash
# The shipped recipe through the out-of-fold path, from the first round to a model ready
# to bundle; resumable: after a stop (a session's end), the same command carries on
# where it stopped (a finished round is kept, a round or the final training resumes
# from its last epoch). On a 2-core machine without bf16 each round takes about
# 100 minutes and the model on every image about 3 hours; with bf16 about a quarter.
#
#   docs/cv/36ep_160_balmix_oof/run.sh            # work in runs/ (SHIP_WORK=... to move it)
#
# For a dry run of the mechanics on small data, every input can be overridden:
#   SHIP_WORK=/tmp/w DOCS_OUT=/tmp/w/docs DATA=... [METADATA=...] SPLIT=kfold3.csv FOLDS="0 1 2" \
#       SET=image_size=32,epochs=1 [SKINLESION=path/to/skinlesion] docs/cv/36ep_160_balmix_oof/run.sh
# (tools/ship_path_test.sh does that on the test fixtures, as the ctest ship_path_script).
#
#   1. skinlesion cv, one round at a time: each round's test answers are copied here
#      (collect.sh) as soon as it finishes, so they can be committed; a round already
#      here is skipped;
#   2. skinlesion train --all_folds --kept_out_epoch: the recipe on all 5,984 images
#      (the last epoch), each epoch drawing as many images as a round trained on every
#      image but one fold has (the flag sets samples_per_epoch = all - the largest
#      fold = 4,787): the steps and schedule of the models that measured the procedure
#      (docs/cv/36ep_160_balmix_allbut), in their 36-41 minutes (36 epochs of 5,984
#      took 46.7, over the 45-minute budget);
#   3. skinlesion export --fp16, then fit-thresholds --from_cv (the rounds' answers here)
#      on the exported model:
#      temperature, decision rule, referral and not-a-lesion thresholds from the rounds'
#      pooled answers, with the leave-one-round-out check, single view then flips (the
#      served views last); its outputs are copied here, and the out-of-fold report
#      (metrics.json, plots) and training curves into the bundle folder.
# What it does not do: replace models/bundled (compare the leave-one-round-out table
# with the bundled model's figures first; see docs/results.md).
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
HERE=docs/cv/36ep_160_balmix_oof
OUT=${DOCS_OUT:-$HERE}
D=${DATA:-../shared/data/ham10000}
S=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
DM=(--data "$D")
[ -n "${METADATA:-}" ] && DM+=(--metadata "$METADATA")
SETS=()
[ -n "${SET:-}" ] && SETS=(--set "$SET")
C=configs/ham10000_resnet18_36ep_160_balmix.json
W=${SHIP_WORK:-runs}
CV=$W/cv36
SHIP=$W/ship36_all
CLI=$(realpath "${SKINLESION:-build/tools/skinlesion}")
mkdir -p "$W" "$OUT"
log() { echo "[run.sh $(date -u +%H:%M)] $*" >&2; }
for f in ${FOLDS:-0 1 2 3 4}; do
  # A round whose answers are already here (committed) is not trained again: a fresh
  # clone goes straight to the model on every image.
  if [ -e "$OUT/fold$f/out_of_fold_flips.csv" ]; then
    log "round $f: answers already in $OUT"
    continue
  fi
  log "round $f"
  "$CLI" cv --config "$C" "${DM[@]}" --split "$S" --out "$CV" --folds "$f" "${SETS[@]}" >> "$CV.round$f.txt" 2>&1 ||
    { tail -20 "$CV.round$f.txt"; exit 1; }
  "$HERE/collect.sh" "$CV" "$OUT"
done
if [ ! -e "$SHIP/model/manifest.json" ]; then
  log "the model on every image, drawing a kept-out round's images an epoch"
  resume=()
  [ -e "$SHIP/checkpoints/last/state.json" ] && resume=(--resume)
  "$CLI" train --config "$C" "${DM[@]}" --split "$S" --all_folds --kept_out_epoch --out "$SHIP" \
    "${SETS[@]}" "${resume[@]}" >> "$SHIP.txt" 2>&1 || { tail -20 "$SHIP.txt"; exit 1; }
fi
log "export and fit"
rm -rf "$SHIP/bundled"
# Served squashed whole, as the 224 px images it learnt from were made from 600x450
# (docs/cv/aspect_600x450); the same answers on square images.
"$CLI" export --model "$SHIP/model" --out "$SHIP/bundled" --fp16 --resize resize
for views in none flips; do
  "$CLI" fit-thresholds --model "$SHIP/bundled" "${DM[@]}" --split "$S" --from_cv "$OUT" \
    --ood_images tests/fixtures/ood --tta_views "$views" --threads 2 | tee "$OUT/fit_$views.txt"
  # fit-thresholds writes its reports beside the model folder.
  cp "$SHIP/report_out_of_fold/leave_one_round_out.json" "$OUT/leave_one_round_out_$views.json"
done
# The bundle's report: the out-of-fold figures of the served views (the manifest's
# "metrics" hold the same), their plots and the training curves, as the registry and the
# website's model card show them beside the weights.
cp "$SHIP/report_out_of_fold/metrics.json" "$SHIP/report_out_of_fold/confusion_matrix.png" \
  "$SHIP/report_out_of_fold/reliability.png" "$SHIP/report_out_of_fold/roc_curves.png" \
  "$SHIP/training_curves.png" "$SHIP/bundled/"
cp "$SHIP/bundled/manifest.json" "$OUT/ship_manifest.json"
cp "$SHIP/bundled/metrics.json" "$OUT/ship_metrics.json"
log "done: $SHIP/bundled is ready to bundle"
