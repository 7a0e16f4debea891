#!/bin/bash
# The path a model to ship takes, on the real pool with a deliberately cheap recipe
# (the bundled recipe at 64 px for 3 epochs: minutes, not the 45-minute budget): the
# shipped recipe's own script, docs/cv/36ep_160_balmix_oof/run.sh, with that recipe
# and its work and copies under SHIP_WORK:
#   1. skinlesion cv: five lesion-disjoint rounds, each predicting its test fold once;
#   2. skinlesion train --all_folds: the same recipe on every image (no image held out);
#   3. export --fp16, then skinlesion fit-thresholds --from_cv: its temperature (the
#      rounds' mean), decision rule, referral threshold and not-a-lesion threshold
#      fitted on the rounds' out-of-fold answers, the last carried over in units of
#      each model's own training scores (checked round by round against the other
#      rounds' threshold); each round scored at the operating point the other rounds'
#      answers set (the leave-one-round-out check of the pooled fit, session 11);
#      single view first (the views the rounds' own figures in cv.json were measured
#      with: the leave-one-round-out table beside them is paired), then the served views.
# What it measures is the mechanics (does the carried-over not-a-lesion threshold keep
# its reject rate on a model that did not set it? how far apart are the rounds'
# temperatures?), not a model: the recipe is far too short for that. The files here were
# written in session 11, when this script fitted the float32 model (no fp16 export).
# DATA, METADATA, SPLIT, FOLDS and SKINLESION pass through to run.sh (a dry run on other
# data: MECH_OUT=dir keeps this folder's files).
set -euo pipefail
cd "$(dirname "$0")/../../.."
W=${SHIP_WORK:-/tmp/ship_mech}
OUT=${MECH_OUT:-docs/cv/ship_out_of_fold_mechanics}
mkdir -p "$OUT"
SHIP_WORK=$W DOCS_OUT=$W/docs SET=image_size=64,epochs=3,progress_interval_s=60 \
  docs/cv/36ep_160_balmix_oof/run.sh
cp "$W/docs/cv.md" "$W/docs/fit_none.txt" "$W/docs/leave_one_round_out_flips.json" "$OUT/"
cp "$W/docs/fit_flips.txt" "$OUT/fit.txt"
/usr/bin/python3 - "$W" "$OUT" <<'PY'
import glob, json, os, sys
w, out = sys.argv[1:3]
m = json.load(open(os.path.join(w, "ship36_all", "bundled", "manifest.json")))
rounds = []
for path in sorted(glob.glob(os.path.join(w, "cv36", "fold*", "model", "manifest.json"))):
    r = json.load(open(path))
    rounds.append({"fold": int(path.split(os.sep)[-3][4:]), "temperature": r["calibration"]["temperature"],
                   "tau": r.get("decision", {}).get("tau"),
                   "risk_threshold": r.get("refer", {}).get("malignancy_risk_threshold")})
summary = {k: m.get(k) for k in ("calibration", "decision", "refer", "ood", "tta")}
summary["rounds_own_fit"] = rounds
json.dump(summary, open(os.path.join(out, "summary.json"), "w"), indent=2)
print(json.dumps(summary, indent=2)[:3000])
PY
