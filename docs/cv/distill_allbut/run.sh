#!/bin/bash
# Distilling into one servable model (issue 17, part 1): round FOLD of the kept-out
# procedure (docs/cv/36ep_160_balmix_allbut: the shipped recipe on every image but fold
# FOLD's, no validation, the last epoch), trained with the answers of TEACHERS on its
# training images as soft targets (train keys distill_*: the recipe's loss weighted
# 1 - WEIGHT, the distillation term WEIGHT at TEMPERATURE; skinlesion/train/losses.h).
# Teachers must never have seen fold FOLD: that round's kept-out model, its three-fold
# round model, or models of other seeds or architectures trained on the same images.
#
# Each teacher answers every fold (`evaluate --answers_dir`, fp32, its own views and
# temperature): the training folds' answers teach, fold FOLD's are what summary.py sets
# the student against. The student is exported as the kept-out models are (fp16, served
# squashed) and scored on fold FOLD with flip views in fp32. It has no operating point:
# `fit-thresholds --from_cv` refuses a model of another recipe than the rounds', so the
# comparison is rule-free (the most probable class, AUCs), paired on the same lesions.
#
#   TEACHERS="runs/s23/allbut/fold3/bundled" FOLD=3 docs/cv/distill_allbut/run.sh
#   WEIGHT=0.7 TEMPERATURE=4 ...   (defaults 0.5 and 2)
# Writes docs/cv/distill_allbut/fold<FOLD>_w<WEIGHT>_t<TEMPERATURE>/: the student's
# metrics.json, eval.txt, train_log.jsonl, training curves, its answers and each teacher's
# on fold FOLD (teacher<k>_out_of_fold_flips.csv), teachers.txt and summary.md.
# Resumable: the teachers' answers are kept, the training resumes from its last epoch.
# Cost: about 10 minutes of answers a teacher (5 folds of about 1,200 images, 3 views) and
# the student's training (about 50 minutes of 4,787 images in bf16 on 2 cores).
# Dry run on the test fixtures (tools/distill_test.sh): DATA=... METADATA=... SPLIT=kfold3.csv
#   WORK=/tmp/w DOCS_OUT=/tmp/w/docs SET=image_size=32,epochs=1 FOLD=0 TEACHERS=... run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
HERE=docs/cv/distill_allbut
FOLD=${FOLD:-3}
WEIGHT=${WEIGHT:-0.5}
TEMPERATURE=${TEMPERATURE:-2}
D=${DATA:-../shared/data/ham10000}
S=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
C=configs/ham10000_resnet18_36ep_160_balmix.json
NAME=fold${FOLD}_w${WEIGHT}_t${TEMPERATURE}
W=${WORK:-runs/distill_allbut}/$NAME
OUT=${DOCS_OUT:-$HERE}/$NAME
CLI=$(realpath "${SKINLESION:-build/tools/skinlesion}")
DM=(--data "$D")
[ -n "${METADATA:-}" ] && DM+=(--metadata "$METADATA")
log() { echo "[distill $NAME $(date -u +%H:%M)] $*" >&2; }
[ -n "${TEACHERS:-}" ] || { echo "TEACHERS: the model folders that teach (never trained on fold $FOLD)" >&2; exit 2; }
mapfile -t FOLDS < <(awk -F, 'NR > 1 && $3 ~ /^fold[0-9]+$/ {print substr($3, 5)}' "$S" | sort -un)
[ "${#FOLDS[@]}" -ge 3 ] || { echo "$S is not a k-fold split (k >= 3)" >&2; exit 2; }
[[ " ${FOLDS[*]} " == *" $FOLD "* ]] || { echo "FOLD $FOLD is not a fold of $S" >&2; exit 2; }
mkdir -p "$W" "$OUT"
answers=()
k=0
: > "$OUT/teachers.txt"
for teacher in $TEACHERS; do
  sha=$(/usr/bin/python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["sha256"])' \
    "$teacher/manifest.json")
  echo "teacher$k $teacher sha256 $sha" >> "$OUT/teachers.txt"
  for f in "${FOLDS[@]}"; do
    A=$W/teacher$k/fold$f
    if [ ! -s "$A/answers/out_of_fold_flips.csv" ]; then
      log "teacher$k answers fold$f"
      rm -rf "$A"
      mkdir -p "$A"
      # The student's training folds are the teacher's training images too.
      taught=()
      [ "$f" = "$FOLD" ] || taught=(--answers_of_training_images)
      "$CLI" evaluate --model "$teacher" "${DM[@]}" --split "$S" --partition "fold$f" --tta_views flips \
        --precision fp32 --out "$A/eval" --answers_dir "$A/answers" "${taught[@]}" > "$A/eval.txt"
    fi
    if [ "$f" = "$FOLD" ]; then
      cp "$A/answers/out_of_fold_flips.csv" "$OUT/teacher${k}_out_of_fold_flips.csv"
    else
      answers+=("$A/answers/out_of_fold_flips.csv")
    fi
  done
  k=$((k + 1))
done
R=$W/student
if [ ! -e "$R/model/manifest.json" ]; then
  log "student: every image but fold$FOLD's, taught by $k teacher(s)"
  resume=()
  [ -e "$R/checkpoints/last/state.json" ] && resume=(--resume)
  joined=$(IFS=:; echo "${answers[*]}")
  "$CLI" train --config "$C" "${DM[@]}" --split "$S" --all_folds --fold "$FOLD" --out "$R" \
    --set "distill_answers=$joined,distill_weight=$WEIGHT,distill_temperature=$TEMPERATURE${SET:+,$SET}" \
    "${resume[@]}" >> "$R.txt" 2>&1 || { tail -20 "$R.txt"; exit 1; }
fi
log "student: export, evaluate on fold$FOLD"
rm -rf "$R/bundled" "$R/eval" "$R/answers"
"$CLI" export --model "$R/model" --out "$R/bundled" --fp16 --resize resize > /dev/null
"$CLI" evaluate --model "$R/bundled" "${DM[@]}" --split "$S" --partition "fold$FOLD" --tta_views flips \
  --precision fp32 --out "$R/eval" --answers_dir "$R/answers" > "$R/eval.txt"
cp "$R/eval.txt" "$R/train_log.jsonl" "$R/training_curves.png" "$R/answers/out_of_fold_flips.csv" "$OUT/"
cp "$R/eval/metrics.json" "$OUT/metrics.json"
/usr/bin/python3 "$HERE/summary.py" "$OUT" > "$OUT/summary.md"
cat "$OUT/summary.md"
