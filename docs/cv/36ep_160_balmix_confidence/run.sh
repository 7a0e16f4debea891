#!/bin/bash
# The referral threshold fitted with 95% confidence (fit-thresholds default) vs the point estimate, on round / hold-out models.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
D=../shared/data/ham10000
F=/tmp/conf; mkdir -p $F
run() { # name model split fit_on test_part confidence
  local n=$1 m=$2 s=$3 v=$4 t=$5 c=$6
  [ -e $F/eval_$n/metrics.json ] && return 0
  rm -rf $F/$n; cp -r $m $F/$n
  build/tools/skinlesion fit-thresholds --model $F/$n --data $D --split $s --fit_on $v --ood_fit_on $v --threads 2 \
    --sensitivity_confidence $c > $F/fit_$n.txt
  build/tools/skinlesion evaluate --model $F/$n --data $D --split $s --partition $t --out $F/eval_$n --threads 2 > $F/evaltxt_$n.txt
  echo "$n done $(date +%T)"; grep -h "refer when" $F/fit_$n.txt
}
for r in 0 1 2 3 4; do
  run r$r runs/cv_balmix36/fold$r/model runs/cv_balmix36/fold$r/split.csv fold$(( (r + 1) % 5 )) fold$r 0.95
done
for r in 3 4; do
  run r${r}_point runs/cv_balmix36/fold$r/model runs/cv_balmix36/fold$r/split.csv fold$(( (r + 1) % 5 )) fold$r 0
done
run hold_ros runs/hold_rosendahl_balmix/model runs/hold_rosendahl_balmix/split.csv val test 0.95
run hold_vm runs/hold_vidir_modern_balmix/model runs/hold_vidir_modern_balmix/split.csv val test 0.95
if [ -e runs/hold_vidir_modern_36/model/manifest.json ]; then
  run hold_vm36 runs/hold_vidir_modern_36/model docs/cv/hold_vidir_modern_balmix/split.csv val test 0.95
  run hold_vm36_point runs/hold_vidir_modern_36/model docs/cv/hold_vidir_modern_balmix/split.csv val test 0
fi
echo CONF DONE
