#!/bin/bash
# The bundled model's operating point refitted on the answers of the models trained as it
# is (run.sh: every image but one fold, the last epoch), not on the three-fold cv rounds'
# answers, whose threshold refers 0.911 ± 0.036 of such a model's malignant lesions
# against their own 0.932 (summary.md). Needs every round's answers here (run.sh with all
# five rounds). No
# retraining: a copy of the bundled model (MODEL, default models/bundled) gets its
# temperature, decision rule, referral and not-a-lesion thresholds fitted by
# `fit-thresholds --from_cv` on this folder, with the referral threshold fitted for the
# target plus MARGIN (--sensitivity_margin): the bundled model is trained on a quarter
# more images than these models again, and the step from three folds to four cost
# 0.021 of malignant sensitivity at the same threshold (README.md, "The margin").
#
#   docs/cv/36ep_160_balmix_allbut/refit_bundled.sh     # then copy $W/ship/bundled's
#                                                        # manifest, metrics and plots
#                                                        # into models/bundled
# Writes here: fit_{none,flips}.txt, leave_one_round_out_{none,flips}.json (each
# kept-out round at the operating point the other rounds' answers set),
# ship_manifest.json, ship_metrics.json.
# Dry run on the test fixtures: SHIP_WORK=/tmp/w DOCS_OUT=/tmp/w/docs MODEL=bundle DATA=...
#   [METADATA=...] SPLIT=kfold3.csv refit_bundled.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
HERE=docs/cv/36ep_160_balmix_allbut
OUT=${DOCS_OUT:-$HERE}
D=${DATA:-../shared/data/ham10000}
S=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
MODEL=${MODEL:-models/bundled}
MARGIN=${MARGIN:-0.02}
DM=(--data "$D")
[ -n "${METADATA:-}" ] && DM+=(--metadata "$METADATA")
W=${SHIP_WORK:-runs}/allbut/ship
CLI=$(realpath "${SKINLESION:-build/tools/skinlesion}")
log() { echo "[refit $(date -u +%H:%M)] $*" >&2; }
folds=$(/usr/bin/python3 -c 'import csv, sys; print(len({r["partition"] for r in csv.DictReader(open(sys.argv[1]))}))' "$S")
for ((f = 0; f < folds; f++)); do
  if [ ! -s "$OUT/fold$f/out_of_fold_flips.csv" ]; then
    echo "round $f has no answers in $OUT: run run.sh for every round first" >&2
    exit 1
  fi
done
rm -rf "$W"
mkdir -p "$W"
cp -r "$MODEL" "$W/bundled"
for views in none flips; do
  log "fit on the $folds rounds' answers, views $views, margin $MARGIN"
  "$CLI" fit-thresholds --model "$W/bundled" "${DM[@]}" --split "$S" --from_cv "$OUT" \
    --sensitivity_margin "$MARGIN" --ood_images tests/fixtures/ood --tta_views "$views" \
    --threads 2 | tee "$OUT/fit_$views.txt"
  cp "$W/report_out_of_fold/leave_one_round_out.json" "$OUT/leave_one_round_out_$views.json"
done
# The bundle's report: the kept-out answers' figures at the served views and operating
# point (the manifest's "metrics" hold the same) and their plots.
cp "$W/report_out_of_fold/metrics.json" "$W/report_out_of_fold/confusion_matrix.png" \
  "$W/report_out_of_fold/reliability.png" "$W/report_out_of_fold/roc_curves.png" "$W/bundled/"
cp "$W/bundled/manifest.json" "$OUT/ship_manifest.json"
cp "$W/bundled/metrics.json" "$OUT/ship_metrics.json"
log "done: $W/bundled is the bundled model with its operating point refitted"
