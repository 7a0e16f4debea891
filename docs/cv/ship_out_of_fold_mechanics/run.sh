#!/bin/bash
# The path a model to ship takes, on the real pool with a deliberately cheap recipe
# (the bundled recipe at 64 px for 3 epochs: minutes, not the 45-minute budget):
#   1. skinlesion cv: five lesion-disjoint rounds, each predicting its test fold once;
#   2. skinlesion train --all_folds: the same recipe on every image (no image held out);
#   3. skinlesion fit-thresholds --from_cv: its temperature (the rounds' mean), decision
#      rule, referral threshold and not-a-lesion threshold fitted on the rounds'
#      out-of-fold answers, the last carried over in units of each model's own
#      training scores (checked round by round against the other rounds' threshold);
#      each round scored at the operating point the other rounds' answers set (the
#      leave-one-round-out check of the pooled fit, session 11).
# What it measures is the mechanics (does the carried-over not-a-lesion threshold keep
# its reject rate on a model that did not set it? how far apart are the rounds'
# temperatures?), not a model: the recipe is far too short for that.
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
D=../shared/data/ham10000
S=configs/ham10000_kfold5_seed42.csv
C=configs/ham10000_resnet18_36ep_160_balmix.json
W=${SHIP_WORK:-/tmp/ship_mech}
SET=image_size=64,epochs=3,progress_interval_s=60
OUT=docs/cv/ship_out_of_fold_mechanics
mkdir -p "$W"
build/tools/skinlesion cv --config $C --data $D --split $S --out "$W/cv" --set $SET > "$W/cv.txt"
[ -e "$W/ship/model/manifest.json" ] ||
  build/tools/skinlesion train --config $C --data $D --split $S --all_folds --out "$W/ship" --set $SET > "$W/ship.txt"
# Single view first (the views the rounds' own figures in cv.json were measured with: the
# leave-one-round-out table beside them is paired), then the served views, last.
build/tools/skinlesion fit-thresholds --model "$W/ship/model" --data $D --split $S --from_cv "$W/cv" \
  --ood_images tests/fixtures/ood --tta_views none --threads 2 | tee "$W/fit_none.txt"
build/tools/skinlesion fit-thresholds --model "$W/ship/model" --data $D --split $S --from_cv "$W/cv" \
  --ood_images tests/fixtures/ood --tta_views flips --threads 2 | tee "$W/fit.txt"
cp "$W/cv/cv.md" "$OUT/cv.md"
cp "$W/fit.txt" "$W/fit_none.txt" "$OUT/"
cp "$W/ship/report_out_of_fold/leave_one_round_out.json" "$OUT/leave_one_round_out_flips.json"
/usr/bin/python3 - "$W" "$OUT" <<'PY'
import json, os, sys
w, out = sys.argv[1:3]
m = json.load(open(os.path.join(w, "ship", "model", "manifest.json")))
rounds = []
for f in range(5):
    r = json.load(open(os.path.join(w, "cv", f"fold{f}", "model", "manifest.json")))
    rounds.append({"fold": f, "temperature": r["calibration"]["temperature"],
                   "tau": r.get("decision", {}).get("tau"),
                   "risk_threshold": r.get("refer", {}).get("malignancy_risk_threshold")})
summary = {k: m.get(k) for k in ("calibration", "decision", "refer", "ood", "tta")}
summary["rounds_own_fit"] = rounds
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2)[:3000])
PY
