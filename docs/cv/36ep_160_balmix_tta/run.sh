#!/bin/bash
# Test-time views (none / flips / dihedral) on the 36-epoch round models and the
# source-held-out models: for each, the decision rule and thresholds are fitted under
# the same views on the validation fold (fit-thresholds --tta_views V), then the test
# fold is evaluated as the model would be served (its manifest's "tta").
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
D=../shared/data/ham10000
F=${TTA_WORK:-/tmp/tta}; mkdir -p $F
run() { # name model split fit_on test_part views
  local n=$1 m=$2 s=$3 v=$4 t=$5 views=$6
  [ -e $F/eval_$n/metrics.json ] && return 0
  rm -rf $F/$n; cp -r $m $F/$n
  build/tools/skinlesion fit-thresholds --model $F/$n --data $D --split $s --fit_on $v --ood_fit_on $v --threads 2 \
    --tta_views $views > $F/fit_$n.txt
  build/tools/skinlesion evaluate --model $F/$n --data $D --split $s --partition $t --out $F/eval_$n --threads 2 > $F/evaltxt_$n.txt
  echo "$n done $(date +%T)"; grep -h "balanced accuracy" $F/evaltxt_$n.txt | head -2
}
for views in ${VIEWS:-dihedral none flips}; do
  for r in ${ROUNDS:-0 1 2 3 4}; do
    run r${r}_$views runs/cv_balmix36/fold$r/model runs/cv_balmix36/fold$r/split.csv fold$(( (r + 1) % 5 )) fold$r $views
  done
  for h in ${HOLDS:-rosendahl_36 vidir_modern_36 rosendahl_balmix vidir_modern_balmix}; do
    split=runs/hold_$h/split.csv
    [ -e $split ] || split=docs/cv/hold_${h%_*}_balmix/split.csv
    run hold_${h}_$views runs/hold_$h/model $split val test $views
  done
done
echo TTA DONE
