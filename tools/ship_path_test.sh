#!/usr/bin/env bash
# docs/cv/36ep_160_balmix_oof/run.sh (the shipped recipe's whole out-of-fold path) dry-run
# on the fixtures with a tiny model: every round, the model on every image, the export
# and both fits land where the script says; a second run as on a fresh clone trains nothing again.
# Then docs/cv/36ep_160_balmix_allbut/run.sh (that procedure with one fold kept out) on one
# round, then every round and refit_bundled.sh (the bundle's operating point on their answers).
# shellcheck source=tools/fixture_scripts.sh
source "$(dirname "$0")/fixture_scripts.sh"
export SKINLESION=$CLI SHIP_WORK=$OUT/work DOCS_OUT=$OUT/docs DATA=$FIX/images \
  METADATA=$FIX/metadata_subset.csv SPLIT=$OUT/kfold3.csv FOLDS="0 1 2" \
  SET=$TINY,epochs=2,warmup_epochs=0,num_workers=1
"$ROOT/docs/cv/36ep_160_balmix_oof/run.sh" > "$OUT/first.txt" 2>&1 || { cat "$OUT/first.txt"; exit 1; }
D=$OUT/docs
for f in cv.json cv.md cv.png cv_recipe.json fit_none.txt fit_flips.txt leave_one_round_out_none.json \
         leave_one_round_out_flips.json ship_manifest.json ship_metrics.json; do
  test -s "$D/$f" || { echo "missing $f"; cat "$OUT/first.txt"; exit 1; }
done
for r in 0 1 2; do
  for f in out_of_fold_none.csv out_of_fold_flips.csv train_log.jsonl config.json training_curves.png; do
    test -s "$D/fold$r/$f" || { echo "missing fold$r/$f"; exit 1; }
  done
  test -s "$D/fold${r}_metrics.json" || { echo "missing fold${r}_metrics.json"; exit 1; }
done
# No models or checkpoints are copied into the docs folder.
if find "$D" -name '*.safetensors' -o -name '*.pt' | grep -q .; then
  echo "models copied into the docs folder"; exit 1
fi
B=$OUT/work/ship36_all/bundled
for f in model.safetensors manifest.json metrics.json confusion_matrix.png reliability.png roc_curves.png \
         training_curves.png; do
  test -s "$B/$f" || { echo "missing bundled/$f"; exit 1; }
done
grep -q '"fitted_on": *"out_of_fold"' "$D/ship_manifest.json" || { echo "not fitted on the rounds' answers"; exit 1; }
# The model on every image draws a kept-out round's pool per epoch (every image but the
# largest fold): the steps of the models that measured the procedure.
/usr/bin/python3 - "$B/manifest.json" "$OUT/kfold3.csv" <<'PY'
import collections, csv, json, sys
m = json.load(open(sys.argv[1]))
n = collections.Counter(r["partition"] for r in csv.DictReader(open(sys.argv[2])))
want = sum(n.values()) - max(n.values())
got = m["training"]["config"].get("samples_per_epoch")
assert got == want and 0 < want < sum(n.values()), (got, want, n)
PY
# Another epoch size is another recipe: fit-thresholds --from_cv refuses it.
"$CLI" train --config "$ROOT/configs/ham10000_resnet18_36ep_160_balmix.json" --data "$FIX/images" \
  --metadata "$FIX/metadata_subset.csv" --split "$OUT/kfold3.csv" --all_folds --out "$OUT/work/other_epoch" \
  --set "${SET},samples_per_epoch=5" > /dev/null 2>&1
if "$CLI" fit-thresholds --model "$OUT/work/other_epoch/model" --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" \
     --split "$OUT/kfold3.csv" --from_cv "$D" --threads 1 2> "$OUT/other_epoch_err.txt"; then
  echo "fit-thresholds --from_cv took a model of another epoch size"; exit 1
fi
grep -q "another recipe" "$OUT/other_epoch_err.txt"
grep -q "the kept-out rounds' steps" "$D/fit_flips.txt" || { echo "the epoch size was not named"; exit 1; }
/usr/bin/python3 - "$D" <<'PY'
import json, sys
d = sys.argv[1]
cv = json.load(open(f"{d}/cv.json"))
assert len(cv["folds"]) == 3, list(cv)
m = json.load(open(f"{d}/ship_manifest.json"))
# The served views are the last fit's: flips.
assert m.get("tta") == "flips", m.get("tta")
# Served squashed whole, as HAM10000's 224 px images were made (docs/cv/aspect_600x450).
assert m["preprocessing"]["resize"] == "resize", m["preprocessing"]
for views in ("none", "flips"):
    loro = json.load(open(f"{d}/leave_one_round_out_{views}.json"))
    assert len(loro["rounds"]) == 3, loro.keys()
# The bundle's metrics.json (what the website's model card shows) is the out-of-fold
# report of the served views, the same figures as the manifest's headline.
b = json.load(open(f"{d}/ship_metrics.json"))
assert b["context"]["partition"] == "out_of_fold" and b["context"]["tta"] == "flips", b["context"]
assert b["n"] == 14, b["n"]
for k in ("accuracy", "balanced_accuracy", "macro_auc", "melanoma_recall"):
    assert b[k] == m["metrics"][k], (k, b[k], m["metrics"][k])
PY
grep -q "each round at the operating point fitted on the other rounds' answers" "$D/fit_flips.txt" ||
  { echo "no leave-one-round-out table"; cat "$D/fit_flips.txt"; exit 1; }
# The model card's tables of this bundle (tools/model_card.py): every block renders.
cat > "$OUT/MODEL_CARD.md" <<EOF
<!-- model_card: setup $B -->
<!-- /model_card -->
<!-- model_card: report $B -->
<!-- /model_card -->
<!-- model_card: referral $B -->
<!-- /model_card -->
<!-- model_card: cv $D -->
<!-- /model_card -->
<!-- model_card: subgroups $D source sex -->
<!-- /model_card -->
<!-- model_card: loro none=$D/leave_one_round_out_none.json flips=$D/leave_one_round_out_flips.json -->
<!-- /model_card -->
EOF
/usr/bin/python3 "$ROOT/tools/model_card.py" update "$OUT/MODEL_CARD.md" > /dev/null
/usr/bin/python3 "$ROOT/tools/model_card.py" check "$OUT/MODEL_CARD.md" > /dev/null
for want in "every fold" "out-of-fold answers of 3 cv rounds" "14 out-of-fold answers" "(3 of 3)" \
            "flips: each round scored" "| source | n |"; do
  grep -qF "$want" "$OUT/MODEL_CARD.md" || { echo "model card lacks: $want"; cat "$OUT/MODEL_CARD.md"; exit 1; }
done
# A second run as on a fresh clone (the rounds' work folder gone, their answers in the
# docs folder): no round is trained again, nor the model on every image, and the fit reads
# the docs folder's answers.
rm -rf "$OUT/work/cv36" "$OUT"/work/cv36.round*.txt
"$ROOT/docs/cv/36ep_160_balmix_oof/run.sh" > "$OUT/second.txt" 2>&1 || { cat "$OUT/second.txt"; exit 1; }
for r in 0 1 2; do
  grep -q "round $r: answers already in" "$OUT/second.txt" || { echo "round $r was not skipped"; cat "$OUT/second.txt"; exit 1; }
done
if [ -e "$OUT/work/cv36" ]; then
  echo "a round was trained again"; exit 1
fi
grep -q "each round at the operating point fitted on the other rounds' answers" "$D/fit_flips.txt" ||
  { echo "no leave-one-round-out table on the second run"; cat "$OUT/second.txt"; exit 1; }
if grep -q "the model on every image" "$OUT/second.txt"; then
  echo "the model on every image was trained again"; exit 1
fi
grep -q "ready to bundle" "$OUT/second.txt"
# The shipped procedure measured (docs/cv/36ep_160_balmix_allbut/run.sh): round 1's model
# trained on every image but fold 1's, its operating point fitted on the other rounds'
# answers (round 1's left out), scored on fold 1 with the served views.
AB=$OUT/allbut_docs
DOCS_OUT=$AB FROM_CV=$D FOLDS="1" "$ROOT/docs/cv/36ep_160_balmix_allbut/run.sh" > "$OUT/allbut.txt" 2>&1 ||
  { cat "$OUT/allbut.txt"; exit 1; }
for f in fold1_metrics.json fold1/manifest.json fold1/fit.txt fold1/eval.txt fold1/train_log.jsonl \
         fold1/out_of_fold_none.csv fold1/out_of_fold_flips.csv cv_recipe.json; do
  test -s "$AB/$f" || { echo "missing allbut $f"; cat "$OUT/allbut.txt"; exit 1; }
done
if find "$AB" -name '*.safetensors' -o -name '*.pt' | grep -q .; then
  echo "models copied into the allbut docs folder"; exit 1
fi
grep -q "round 1's answers are left out of the fit" "$AB/fold1/fit.txt"
/usr/bin/python3 - "$AB" "$OUT/kfold3.csv" <<'PY'
import csv, json, sys
ab, split = sys.argv[1:3]
n1 = sum(1 for r in csv.DictReader(open(split)) if r["partition"] == "fold1")
m = json.load(open(f"{ab}/fold1/manifest.json"))
assert m["data"]["test_fold"] == 1 and m["data"]["train_images"] == 14 - n1, m["data"]
assert m["decision"]["fitted_data"]["left_out_round"] == 1, m["decision"]["fitted_data"]
assert m["tta"] == "flips", m["tta"]
assert m["preprocessing"]["resize"] == "resize", m["preprocessing"]
e = json.load(open(f"{ab}/fold1_metrics.json"))
assert e["n"] == n1 and e["context"]["partition"] == "fold1" and e["context"]["tta"] == "flips", e["context"]
PY
grep -q "^| paired difference" "$AB/summary.md" || { echo "no paired row"; cat "$OUT/allbut.txt"; exit 1; }
DOCS_OUT=$AB FROM_CV=$D FOLDS="1" "$ROOT/docs/cv/36ep_160_balmix_allbut/run.sh" > "$OUT/allbut2.txt" 2>&1
grep -q "round 1: metrics already in" "$OUT/allbut2.txt" || { echo "allbut round 1 ran again"; exit 1; }
# The bundled model's operating point refitted on the kept-out models' answers
# (refit_bundled.sh): refused until every round has answers, then fitted with the margin
# on a copy (the model it was given is left as it was).
if DOCS_OUT=$AB MODEL=$B "$ROOT/docs/cv/36ep_160_balmix_allbut/refit_bundled.sh" > "$OUT/refit0.txt" 2>&1; then
  echo "refit_bundled.sh ran with one round's answers"; exit 1
fi
grep -q "round 0 has no answers" "$OUT/refit0.txt" || { cat "$OUT/refit0.txt"; exit 1; }
DOCS_OUT=$AB FROM_CV=$D FOLDS="0 1 2" "$ROOT/docs/cv/36ep_160_balmix_allbut/run.sh" > "$OUT/allbut3.txt" 2>&1 ||
  { cat "$OUT/allbut3.txt"; exit 1; }
cp "$B/manifest.json" "$OUT/bundled_before.json"
DOCS_OUT=$AB MODEL=$B "$ROOT/docs/cv/36ep_160_balmix_allbut/refit_bundled.sh" > "$OUT/refit.txt" 2>&1 ||
  { cat "$OUT/refit.txt"; exit 1; }
cmp -s "$B/manifest.json" "$OUT/bundled_before.json" || { echo "refit_bundled.sh changed its input"; exit 1; }
for f in fit_none.txt fit_flips.txt leave_one_round_out_none.json leave_one_round_out_flips.json \
         ship_manifest.json ship_metrics.json; do
  test -s "$AB/$f" || { echo "missing allbut $f"; cat "$OUT/refit.txt"; exit 1; }
done
grep -q "3 of them answered by a model trained on every image but that fold" "$AB/fit_flips.txt"
/usr/bin/python3 - "$AB" "$OUT/work/allbut/ship/bundled" <<'PY'
import json, sys
ab, bundled = sys.argv[1:3]
m = json.load(open(f"{ab}/ship_manifest.json"))
assert m == json.load(open(f"{bundled}/manifest.json"))
r = m["refer"]
assert r["target_sensitivity"] == 0.9 and r["sensitivity_margin"] == 0.02, r
assert r["fitted_data"]["kept_out_models"] == 3 and r["fitted_data"]["cv"].endswith("allbut_docs"), r["fitted_data"]
assert m["tta"] == "flips" and m["calibration"]["fitted_on"] == "out_of_fold", (m["tta"], m["calibration"])
loro = json.load(open(f"{ab}/leave_one_round_out_flips.json"))
assert [x["fold"] for x in loro["rounds"]] == [0, 1, 2], loro["rounds"]
PY
echo "ship path ok"
