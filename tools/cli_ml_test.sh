#!/usr/bin/env bash
# End to end through the CLI on the committed fixtures: split -> train (tiny) ->
# evaluate (HAM10000 split and ISIC 2018 format) -> predict, and bad input.
set -euo pipefail
CLI=$1 FIX=$2 OUT=$3
rm -rf "$OUT"
mkdir -p "$OUT"
# shellcheck source=tools/drop_weights.sh
source "$(dirname "$0")/drop_weights.sh"
DATA=(--data "$FIX/images" --metadata "$FIX/metadata_subset.csv")

"$CLI" split "${DATA[@]}" --out "$OUT/split0.csv" --train 0.34 --val 0.33 --test 0.33 --seed 1
# Two lesions per class cannot fill three partitions: move every other val image to test.
awk -F, 'BEGIN{OFS=","} NR>1 && $3=="val" && (n++ % 2) {$3="test"} {print}' "$OUT/split0.csv" > "$OUT/split.csv"
"$CLI" train "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/run" --device cpu \
  --set architecture=resnet18,image_size=32,epochs=2,frozen_epochs=1,batch_size=4,num_workers=1,threads=1,progress_interval_s=0
for f in model/model.safetensors model/manifest.json report/metrics.json report/confusion_matrix.png \
         report/roc_curves.png report/reliability.png report/test_examples.png training_curves.png \
         train_log.jsonl config.json split.csv; do
  test -s "$OUT/run/$f" || { echo "missing $f"; exit 1; }
done
grep -q '"temperature"' "$OUT/run/model/manifest.json"
grep -q '"split_digest"' "$OUT/run/model/manifest.json"
grep -q '"code_version"' "$OUT/run/model/manifest.json"
cmp "$OUT/split.csv" "$OUT/run/split.csv"
# --resume goes on with the images the run started with: another split is refused before
# anything of the run is touched.
grep -q '"split_digest"' "$OUT/run/run_data.json"
awk -F, 'BEGIN{OFS=","} NR>1 && $3=="test" && !done {$3="train"; done=1} {print}' "$OUT/split.csv" > "$OUT/split_other.csv"
cp "$OUT/run/run_data.json" "$OUT/run_data_before.json"
if "$CLI" train "${DATA[@]}" --split "$OUT/split_other.csv" --out "$OUT/run" --device cpu --resume \
  --set architecture=resnet18,image_size=32,epochs=2,frozen_epochs=1,batch_size=4,num_workers=1,threads=1,progress_interval_s=0 \
  2> "$OUT/err_resume_split.txt"; then
  echo "train --resume went on with another split"; exit 1
fi
grep -q "was started on other images (split_digest" "$OUT/err_resume_split.txt"
cmp "$OUT/split.csv" "$OUT/run/split.csv"
cmp "$OUT/run_data_before.json" "$OUT/run/run_data.json"
# ... and so are the same ids in another folder whose files differ (one byte after a JPEG's
# end here, which decodes the same: a resized or re-encoded copy differs more).
grep -q '"images_digest"' "$OUT/run/run_data.json"
cp -r "$FIX/images" "$OUT/images_changed"
changed=$(find "$OUT/images_changed" -name "$(awk -F, 'NR==2 {print $1}' "$OUT/split.csv").*")
printf 'x' >> "$changed"
if "$CLI" train --data "$OUT/images_changed" --metadata "$FIX/metadata_subset.csv" --split "$OUT/split.csv" \
  --out "$OUT/run" --device cpu --resume \
  --set architecture=resnet18,image_size=32,epochs=2,frozen_epochs=1,batch_size=4,num_workers=1,threads=1,progress_interval_s=0 \
  2> "$OUT/err_resume_files.txt"; then
  echo "train --resume went on with other files under the same ids"; exit 1
fi
grep -q "was started on other images (images_digest" "$OUT/err_resume_files.txt"
cmp "$OUT/run_data_before.json" "$OUT/run/run_data.json"
# The golden set: images copied into the model and the outputs the trainer recorded.
/usr/bin/python3 - "$OUT/run/model" <<'PY'
import json, os, sys
d = sys.argv[1]
g = json.load(open(os.path.join(d, "manifest.json")))["golden_set"]
assert g["tolerance"] > 0 and len(g["items"]) >= 2, g
for item in g["items"]:
    assert os.path.getsize(os.path.join(d, item["file"])) > 0, item
    assert len(item["probabilities"]) == 7 and abs(sum(item["probabilities"]) - 1) < 1e-4, item
PY

# Export as float16: half the bytes, provenance kept, golden set re-recorded, same answers.
"$CLI" export --model "$OUT/run/model" --out "$OUT/fp16" --fp16 | grep -q "float16"
/usr/bin/python3 - "$OUT/run/model" "$OUT/fp16" <<'PY'
import json, os, sys
a, b = sys.argv[1:]
ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b))
assert os.path.getsize(os.path.join(b, "model.safetensors")) < 0.6 * os.path.getsize(os.path.join(a, "model.safetensors"))
assert mb["weights_dtype"] == "float16" and mb["exported_from"]["sha256"] == ma["sha256"] != mb["sha256"]
assert mb["calibration"] == ma["calibration"] and mb["data"] == ma["data"]
for x, y in zip(ma["golden_set"]["items"], mb["golden_set"]["items"]):
    assert max(abs(p - q) for p, q in zip(x["probabilities"], y["probabilities"])) < 0.02, (x, y)
PY
if "$CLI" export --model "$OUT/run/model" --out "$OUT/fp16" 2> "$OUT/err_export.txt"; then
  echo "export overwrote a model directory"; exit 1
fi
grep -q "exists and is not empty" "$OUT/err_export.txt"

# Another shape: exported with --resize resize, the copy squashes the whole image to the
# model's square (as HAM10000's 224 px copies were made from 600x450) where the source
# crops the centre square. On a 600x450 image the crop never sees columns 0-74 and
# 525-599: blacking them out leaves the source's answer exactly as it was and changes
# the squashing copy's.
# The copy is made from the float16 copy: the same float16 weights, byte for byte, and
# the chain of copies back to the weights training wrote.
"$CLI" export --model "$OUT/fp16" --out "$OUT/squash" --fp16 --resize resize | grep -q "preprocessing resize"
/usr/bin/python3 - "$OUT/run/model" "$OUT/squash" "$FIX/images/ISIC_0024698.jpg" "$OUT" <<'PY'
import json, os, sys
from PIL import Image
a, b, image, out = sys.argv[1:]
ma, mb, mh = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b, os.path.join(out, "fp16")))
assert ma["preprocessing"]["resize"] == mh["preprocessing"]["resize"] == "shorter_side_center_crop"
assert mb["preprocessing"]["resize"] == "resize", mb["preprocessing"]
assert mb["exported_from"]["resize"] == "shorter_side_center_crop", mb["exported_from"]
assert mb["sha256"] == mh["sha256"] == mb["exported_from"]["sha256"], (mb["sha256"], mh["sha256"])
assert mb["exported_from"]["exported_from"]["sha256"] == ma["sha256"], mb["exported_from"]
assert {k: v for k, v in mb["preprocessing"].items() if k != "resize"} == \
    {k: v for k, v in ma["preprocessing"].items() if k != "resize"}
wide = Image.open(image).convert("RGB").resize((600, 450), Image.BICUBIC)
wide.save(os.path.join(out, "wide.png"))
for x0, x1 in ((0, 75), (525, 600)):
    wide.paste((0, 0, 0), (x0, 0, x1, 450))
wide.save(os.path.join(out, "wide_banded.png"))
PY
for m in run/model squash; do  # One image a call: the same batch shape for both.
  for i in wide wide_banded; do
    "$CLI" predict --model "$OUT/$m" --json "$OUT/$i.png" > "$OUT/pred_${i}_${m%%/*}.json"
  done
done
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
p = {f: json.load(open(os.path.join(sys.argv[1], f"pred_{f}.json")))[0]["probabilities"]
     for f in ("wide_run", "wide_banded_run", "wide_squash", "wide_banded_squash")}
assert p["wide_run"] == p["wide_banded_run"], "the centre crop saw the outer columns"
diff = max(abs(p["wide_squash"][c] - p["wide_banded_squash"][c]) for c in p["wide_squash"])
assert diff > 1e-4, ("the squashing copy did not see the outer columns", diff)
PY
if "$CLI" export --model "$OUT/run/model" --out "$OUT/squash2" --resize stretch 2> "$OUT/err_resize.txt"; then
  echo "export accepted an unknown resize mode"; exit 1
fi
grep -q "resize must be shorter_side_center_crop or resize, got 'stretch'" "$OUT/err_resize.txt"

"$CLI" evaluate --model "$OUT/run/model" "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/eval" --device cpu --tta
grep -q '"balanced_accuracy"' "$OUT/eval/metrics.json"
grep -q '"per_class"' "$OUT/eval/metrics.json"

# The same images as an ISIC 2018 Task 3 ground truth.
{
  echo "image,MEL,NV,BCC,AKIEC,BKL,DF,VASC"
  echo "ISIC_0024698,0.0,1.0,0.0,0.0,0.0,0.0,0.0"
  echo "ISIC_0031901,1.0,0.0,0.0,0.0,0.0,0.0,0.0"
  echo "ISIC_0029360,0.0,0.0,0.0,0.0,1.0,0.0,0.0"
} > "$OUT/isic.csv"
"$CLI" evaluate --model "$OUT/run/model" --isic_csv "$OUT/isic.csv" --images "$FIX/images" --out "$OUT/eval_isic" --device cpu
grep -q '"n": 3' "$OUT/eval_isic/metrics.json"

"$CLI" predict --model "$OUT/run/model" --json "$FIX/images/ISIC_0024698.jpg" > "$OUT/pred.json"
grep -q '"probabilities"' "$OUT/pred.json"
grep -q '"malignancy_risk"' "$OUT/pred.json"
"$CLI" predict --model "$OUT/run/model" "$FIX/images/ISIC_0024698.jpg" | grep -q "top-3"
# --explain_out: a heatmap overlay PNG per image (Grad-CAM for this CNN).
"$CLI" predict --model "$OUT/run/model" --explain_out "$OUT/explain" "$FIX/images/ISIC_0024698.jpg" \
    "$FIX/images/ISIC_0024693.jpg" > "$OUT/pred_explain.txt"
grep -q "explanation: grad-cam" "$OUT/pred_explain.txt"
test -s "$OUT/explain/ISIC_0024698.explain.png"
test -s "$OUT/explain/ISIC_0024693.explain.png"

# A registry reference instead of a directory: publish, then evaluate / predict by alias or version.
"$CLI" publish --model "$OUT/run/model" --registry "$OUT/registry" --name ham10000 --alias staging | grep -q "ham10000 v1"
"$CLI" evaluate --registry "$OUT/registry" --model ham10000@staging "${DATA[@]}" --split "$OUT/split.csv" \
  --out "$OUT/eval_registry" --device cpu --tta
/usr/bin/python3 - "$OUT/eval/metrics.json" "$OUT/eval_registry/metrics.json" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["confusion_matrix"] == b["confusion_matrix"] and a["n"] == b["n"], (a["n"], b["n"])
PY
"$CLI" predict --registry "$OUT/registry" --model ham10000@1 --json "$FIX/images/ISIC_0024698.jpg" > "$OUT/pred_registry.json"
grep -q '"probabilities"' "$OUT/pred_registry.json"
if "$CLI" predict --registry "$OUT/registry" --model ham10000@production "$FIX/images/ISIC_0024698.jpg" 2> "$OUT/err_alias.txt"; then
  echo "predict resolved an alias that is not set"; exit 1
fi
grep -q "production" "$OUT/err_alias.txt"

# Without --model: the bundled model (models/bundled), whatever the working directory.
(cd "$OUT" && env -u SKINLESION_MODEL "$CLI" predict --json "$FIX/images/ISIC_0024698.jpg") > "$OUT/pred_bundled.json"
/usr/bin/python3 - "$OUT/pred_bundled.json" "$(dirname "$0")/../models/bundled/manifest.json" <<'PY'
import json, sys
pred, manifest = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert pred[0]["model"]["sha256"] == manifest["sha256"], (pred[0]["model"], manifest["sha256"])
assert pred[0]["model"]["architecture"] == "resnet18"
PY

# Bad input: a clear message and a failing exit code, never a crash.
if "$CLI" predict --model "$OUT/run/model" "$OUT/split.csv" 2> "$OUT/err.txt"; then
  echo "predict accepted a CSV file as an image"; exit 1
fi
grep -q "unsupported image format" "$OUT/err.txt"
if "$CLI" train "${DATA[@]}" --out "$OUT/bad" --set epochs=0,optimizer=adam 2> "$OUT/err2.txt"; then
  echo "train accepted a bad config"; exit 1
fi
grep -q "epochs must be >= 1" "$OUT/err2.txt"
grep -q "unknown optimizer 'adam'" "$OUT/err2.txt"
printf '{"epochs": 3,' > "$OUT/truncated_config.json"
if "$CLI" train "${DATA[@]}" --out "$OUT/bad" --config "$OUT/truncated_config.json" 2> "$OUT/err3.txt"; then
  echo "train accepted a config that is not JSON"; exit 1
fi
grep -q "truncated_config.json is not valid JSON" "$OUT/err3.txt"
printf '[3]' > "$OUT/array_config.json"
if "$CLI" train "${DATA[@]}" --out "$OUT/bad" --config "$OUT/array_config.json" 2> "$OUT/err3.txt"; then
  echo "train accepted a config that is not a JSON object"; exit 1
fi
grep -q "array_config.json is not a JSON object" "$OUT/err3.txt"
# The referral and not-a-lesion thresholds of an existing model: the mahalanobis
# Gaussian is fitted on the training images' features and written beside the weights
# with its digest; predict and evaluate then report the feature score.
cp -r "$OUT/run/model" "$OUT/fitted"
"$CLI" fit-thresholds --model "$OUT/fitted" "${DATA[@]}" --split "$OUT/split.csv" --fit_on val \
  --ood_images "$FIX/../ood" --min_ood_auroc 0 --threads 1 > "$OUT/fit.txt"
grep -q "fitting the not-a-lesion Gaussian on the" "$OUT/fit.txt"
grep -q "(target sensitivity 0.90, shown with 95% confidence)" "$OUT/fit.txt"
grep -q "decision rule fitted on .* val images (prior: the model's training data)" "$OUT/fit.txt"
grep -Eq "mel recall floor 0.70: bias|recall floor NOT fitted: the val images have no mel image" "$OUT/fit.txt"
grep -q "non-lesion images in" "$OUT/fit.txt"
test -s "$OUT/fitted/ood_features.safetensors"
/usr/bin/python3 - "$OUT/fitted" <<'PY'
import hashlib, json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "manifest.json")))
o = m["ood"]
assert o["method"] == "mahalanobis" and o["threshold"] > 0 and o["features"]["dim"] == 512, o
digest = hashlib.sha256(open(os.path.join(d, o["features"]["file"]), "rb").read()).hexdigest()
assert digest == o["features"]["sha256"], (digest, o["features"])
assert 0 <= o["check"]["auroc_vs_lesions"] <= 1 and o["check"]["n"] == 22, o["check"]
assert m["refer"]["malignancy_risk_threshold"] is not None
# 90% of the malignant lesions shown with 95% confidence (the defaults): the fixture's
# few malignant validation images cannot show it, so every one of them is referred.
assert m["refer"]["target_sensitivity"] == 0.9 and m["refer"]["sensitivity_confidence"] == 0.95, m["refer"]
assert m["refer"]["validation"]["malignant_sensitivity"] == 1.0, m["refer"]
# The decision rule: tau fitted on val within the grid, the training shares as prior.
dec = m["decision"]
assert dec["rule"] in ("plain", "prior_adjusted") and 0 <= dec["tau"] <= 0.5, dec
assert len(dec["prior"]) == 7 and abs(sum(dec["prior"]) - 1) < 1e-6 and dec["fitted_on"] == "val", dec
assert dec["validation"]["balanced_accuracy"] >= dec["validation"]["balanced_accuracy_plain"], dec
# The melanoma recall floor on top (--recall_target 0.7 by default): its bias is the
# rule's, and it reaches the target unless it says it could not.
if "recall_floor" in dec:
    f = dec["recall_floor"]
    assert f["class"] == "mel" and f["target_recall"] == 0.7, f
    assert abs(dec.get("bias", [0] * 7)[4] - f["bias"]) < 1e-12, dec
    assert f["validation"]["recall"] >= 0.7 or not f["reached"], f
else:
    assert "bias" not in dec, dec
# train wrote one too (config balanced_decision, default on).
t = json.load(open(os.path.join(d, "..", "run", "model", "manifest.json")))
assert t["refer"]["sensitivity_confidence"] == 0.95, t["refer"]  # config referral_confidence
t = t["decision"]
assert t["fitted_on"] == "fitted_on_val" and len(t["prior"]) == 7, t
PY
"$CLI" predict --model "$OUT/fitted" --json "$FIX/../ood/flat_white.png" > "$OUT/pred_ood.json"
/usr/bin/python3 -c "import json,sys; p=json.load(open(sys.argv[1]))[0]; assert p['ood_score'] > 0, p" "$OUT/pred_ood.json"
"$CLI" evaluate --model "$OUT/fitted" "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/eval_fitted" --device cpu \
  | grep -q "not-a-lesion check mahalanobis"
# bf16 against fp32 on the same images: agreement on the answer (the fitted decision
# rule) and on the most probable class, every flipped answer listed.
"$CLI" precision-check --model "$OUT/fitted" "${DATA[@]}" --split "$OUT/split.csv" --partition val \
  --threads 1 --out "$OUT/pc.json" | grep -q "answer agreement"
/usr/bin/python3 - "$OUT/pc.json" "$OUT/fitted/manifest.json" <<'PY'
import json, sys
r, m = (json.load(open(f)) for f in sys.argv[1:3])
n = r["images"]
assert n > 0 and r["fp32"]["numerics"] == "fp32" and r["bf16"]["numerics"].startswith("bf16"), r
assert len(r["flips"]) == round((1 - r["top1_agreement"]) * n), r
assert 0 <= r["most_probable_agreement"] <= 1 and 0 <= r["max_probability_difference"] < 0.2, r
tau, bias = m["decision"]["tau"], m["decision"].get("bias")
answer = "most probable class" if tau == 0 and not bias else "prior-adjusted decision rule, tau %.2f" % tau
if bias:
    answer += "".join(", %s bias %.2f" % (c, b) for c, b in zip(m["labels"], bias) if b)
assert r["answer"] == answer, (r["answer"], answer)
plain = {p: r[p]["most_probable_balanced_accuracy"] for p in ("fp32", "bf16")}
assert abs(r["most_probable_balanced_accuracy_difference"] - (plain["bf16"] - plain["fp32"])) < 1e-12, r
for p in ("fp32", "bf16"):
    assert 0 <= plain[p] <= 1 and (tau != 0 or bias or plain[p] == r[p]["balanced_accuracy"]), r
for f in r["flips"]:
    assert f["fp32"] != f["bf16"] and set(f["fp32_probability"]) == {f["fp32"], f["bf16"]}, f
PY
# Exporting a fitted model carries its thresholds and its Gaussian: the copy answers alike.
"$CLI" export --model "$OUT/fitted" --out "$OUT/fitted_fp16" --fp16 > /dev/null
cmp "$OUT/fitted/ood_features.safetensors" "$OUT/fitted_fp16/ood_features.safetensors"
"$CLI" predict --model "$OUT/fitted_fp16" --json "$FIX/../ood/flat_white.png" > "$OUT/pred_ood16.json"
/usr/bin/python3 - "$OUT/fitted" "$OUT/fitted_fp16" "$OUT/pred_ood.json" "$OUT/pred_ood16.json" <<'PY'
import json, sys
a, b = (json.load(open(f"{d}/manifest.json")) for d in sys.argv[1:3])
assert a["refer"] == b["refer"] and a["ood"]["threshold"] == b["ood"]["threshold"], (a["refer"], b["refer"])
assert a["decision"] == b["decision"], (a["decision"], b["decision"])
assert b["ood"]["features"]["sha256"] == a["ood"]["features"]["sha256"]
pa, pb = (json.load(open(f))[0] for f in sys.argv[3:5])
assert abs(pa["ood_score"] - pb["ood_score"]) < 0.05 * abs(pa["ood_score"]) + 1, (pa["ood_score"], pb["ood_score"])
PY
# Test-time views: the rule and thresholds fitted under them, the manifest says so, the
# golden set is recorded again under them, and predict / evaluate use them by default.
"$CLI" export --model "$OUT/fitted" --out "$OUT/tta" \
  --golden "$FIX/images/ISIC_0024698.jpg,$FIX/images/ISIC_0031901.jpg" > /dev/null
cp "$OUT/tta/manifest.json" "$OUT/tta_before.json"
"$CLI" fit-thresholds --model "$OUT/tta" "${DATA[@]}" --split "$OUT/split.csv" --fit_on val --threads 1 \
  --tta_views flips > "$OUT/fit_tta.txt"
grep -q "test-time augmentation: flips (3 views)" "$OUT/fit_tta.txt"
grep -q "golden set recorded again (test-time views flips" "$OUT/fit_tta.txt"
"$CLI" predict --model "$OUT/tta" --precision fp32 --json "$OUT/tta/golden_0.jpg" "$OUT/tta/golden_1.jpg" > "$OUT/pred_tta.json"
"$CLI" evaluate --model "$OUT/tta" "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/eval_tta" --device cpu > /dev/null
"$CLI" evaluate --model "$OUT/tta" "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/eval_tta_none" --device cpu \
  --tta_views none > /dev/null
/usr/bin/python3 - "$OUT/tta_before.json" "$OUT/tta/manifest.json" "$OUT/pred_tta.json" "$OUT/eval_tta/metrics.json" \
  "$OUT/eval_tta_none/metrics.json" <<'PY'
import json, sys
before, after, pred, ev, ev_none = (json.load(open(f)) for f in sys.argv[1:6])
assert "tta" not in before and after["tta"] == "flips", after.get("tta")
g0, g1 = before["golden_set"]["items"], after["golden_set"]["items"]
assert [i["file"] for i in g0] == [i["file"] for i in g1], (g0, g1)
moved = max(abs(p - q) for a, b in zip(g0, g1) for p, q in zip(a["probabilities"], b["probabilities"]))
assert moved > 1e-6, "the golden outputs did not follow the views"
for item, p in zip(g1, pred):  # predict answers with the views, as recorded
    assert max(abs(x - p["probabilities"][c]) for x, c in zip(item["probabilities"], after["labels"])) < 1e-4, (item, p)
assert ev["context"]["tta"] == "flips" and ev_none["context"]["tta"] == "none", (ev["context"], ev_none["context"])
PY
if "$CLI" evaluate --model "$OUT/tta" "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/eval_bad" --device cpu \
  --tta_views sideways 2> "$OUT/err_tta.txt"; then
  echo "evaluate accepted --tta_views sideways"; exit 1
fi
grep -q "none, flips or dihedral" "$OUT/err_tta.txt"
# Without non-lesion images to measure it on, no check is written (and no Gaussian left behind).
cp -r "$OUT/run/model" "$OUT/fitted2"
"$CLI" fit-thresholds --model "$OUT/fitted2" "${DATA[@]}" --split "$OUT/split.csv" --fit_on val --threads 1 \
  --balanced_decision=false > "$OUT/fit2.txt"
grep -q "NOT written" "$OUT/fit2.txt"
if grep -q "decision rule fitted" "$OUT/fit2.txt"; then echo "--balanced_decision=false fitted one"; exit 1; fi
/usr/bin/python3 -c "
import json, sys
a, b = (json.load(open(f'{d}/manifest.json'))['decision'] for d in sys.argv[1:3])
assert a == b, (a, b)" "$OUT/run/model" "$OUT/fitted2"
test ! -e "$OUT/fitted2/ood_features.safetensors"
# The melanoma recall floor where the fitting images hold melanomas (the fixture's train
# partition): fitted to every one of them, written as the rule's bias; --recall_target 0
# takes it away again.
cp -r "$OUT/run/model" "$OUT/floor"
"$CLI" fit-thresholds --model "$OUT/floor" "${DATA[@]}" --split "$OUT/split.csv" --fit_on train --threads 1 \
  --recall_target 1 > "$OUT/floor.txt"
grep -q "mel recall floor 1.00: bias" "$OUT/floor.txt"
/usr/bin/python3 - "$OUT/floor/manifest.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))["decision"]
f = d["recall_floor"]
assert f["class"] == "mel" and f["target_recall"] == 1 and f["validation"]["cases"] > 0, f
assert d["rule"] == "prior_adjusted" and abs(d.get("bias", [0] * 7)[4] - f["bias"]) < 1e-12, d
assert f["validation"]["recall"] == 1.0 or (not f["reached"] and abs(f["bias"] - 1.5) < 1e-9), f
PY
"$CLI" fit-thresholds --model "$OUT/floor" "${DATA[@]}" --split "$OUT/split.csv" --fit_on train --threads 1 \
  --recall_target 0 --sensitivity_confidence 0 > "$OUT/floor0.txt"
grep -q "target sensitivity 0.90, the validation share itself" "$OUT/floor0.txt"
/usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))
d = m['decision']
assert 'bias' not in d and 'recall_floor' not in d, d
assert 'sensitivity_confidence' not in m['refer'], m['refer']  # 0: the point estimate" "$OUT/floor/manifest.json"
if grep -q '"ood"' "$OUT/fitted2/manifest.json"; then echo "an unmeasured check was written"; exit 1; fi

# Bring your own data: the same 14 images as class folders, as a plain CSV with
# patient ids, and as an ISIC 2019 ground truth with an SCC row.
mkdir -p "$OUT/folders"
tail -n +2 "$FIX/metadata_subset.csv" | while IFS=, read -r _ image dx _; do
  mkdir -p "$OUT/folders/$dx" && cp "$FIX/images/$image.jpg" "$OUT/folders/$dx/"
done
"$CLI" dataset --data "$OUT/folders" 2> "$OUT/byo_folders.txt" | grep -q "14 images"
grep -q "(class folders): 14 images" "$OUT/byo_folders.txt"
"$CLI" split --data "$OUT/folders" --out "$OUT/byo_split.csv" --train 0.34 --val 0.33 --test 0.33 --seed 1 \
  | grep -q "holdout"
awk -F, 'BEGIN{OFS=","} NR>1 && $3=="val" && (n++ % 2) {$3="test"} {print}' "$OUT/byo_split.csv" > "$OUT/byo_split2.csv"
"$CLI" train --data "$OUT/folders" --split "$OUT/byo_split2.csv" --out "$OUT/byo_run" --device cpu \
  --set architecture=resnet18,image_size=32,epochs=1,frozen_epochs=0,batch_size=4,num_workers=1,threads=1,progress_interval_s=0,resize=resize \
  > "$OUT/byo_train.txt" 2>&1
test -s "$OUT/byo_run/model/model.safetensors"
# The training key `resize` is what the exported manifest tells serving to do.
/usr/bin/python3 -c "import json,sys; m=json.load(open(sys.argv[1])); assert m['preprocessing']['resize'] == 'resize' == m['training']['config']['resize'], m['preprocessing']" "$OUT/byo_run/model/manifest.json"
/usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1]))['data']; assert d['format'] == 'class folders' and d['dataset'] == 'folders' and 'HAM10000' not in d['licence'], d" "$OUT/byo_run/model/manifest.json"
# A model made to ship trains on every image but the validation ones (no test partition):
# the report is on the validation images and says they also fitted it.
awk -F, 'BEGIN{OFS=","} NR>1 && $3=="test" {$3="train"} {print}' "$OUT/byo_split2.csv" > "$OUT/ship_split.csv"
"$CLI" train --data "$OUT/folders" --split "$OUT/ship_split.csv" --out "$OUT/ship_run" --device cpu \
  --set architecture=resnet18,image_size=32,epochs=1,frozen_epochs=0,batch_size=4,num_workers=1,threads=1,progress_interval_s=0 \
  > "$OUT/ship_train.txt" 2>&1
grep -q "no test partition: validation split" "$OUT/ship_train.txt"
grep -q " / 0 test images" "$OUT/ship_train.txt"
/usr/bin/python3 - "$OUT/ship_run" <<'PY'
import json, os, sys
d = sys.argv[1]
m = json.load(open(os.path.join(d, "report", "metrics.json")))["context"]
assert m["partition"] == "val" and m["report_on_fitting_data"] is True, (m["partition"], m.get("report_on_fitting_data"))
man = json.load(open(os.path.join(d, "model", "manifest.json")))
assert man["data"]["test_images"] == 0 and man["data"]["val_images"] > 0, man["data"]
assert man["golden_set"]["items"], man["golden_set"]
PY
{
  echo "image,label,patient_id,age,sex"
  tail -n +2 "$FIX/metadata_subset.csv" | awk -F, '{print $2 ".jpg," $3 ",P" (NR % 5) ",50,female"}'
  echo "ISIC_9999999.jpg,mel,P9,40,male"
} > "$OUT/plain.csv"
"$CLI" dataset --data "$FIX/images" --metadata "$OUT/plain.csv" 2> "$OUT/byo_plain.txt" | grep -q "14 images"
grep -q "(plain CSV): 14 images, 1 row without an image" "$OUT/byo_plain.txt"
# Patients group the split: no patient in two partitions.
"$CLI" split --data "$FIX/images" --metadata "$OUT/plain.csv" --out "$OUT/plain_split.csv" --kfold 3 > /dev/null
/usr/bin/python3 - "$OUT/plain_split.csv" <<'PY'
import csv, sys
part = {}
for r in csv.DictReader(open(sys.argv[1])):
    assert part.setdefault(r["lesion_id"], r["partition"]) == r["partition"], r
assert set(part) == {f"P{i}" for i in range(5)}, part
PY
{
  echo "image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK"
  echo "ISIC_0024698,0.0,1.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0"
  echo "ISIC_0029360,0.0,0.0,0.0,1.0,0.0,0.0,0.0,0.0,0.0"
  echo "ISIC_0031901,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0,0.0"
} > "$OUT/isic2019.csv"
# ISIC 2019 is 8 classes (scc between nv and vasc); --skip_labels scc keeps HAM10000's 7.
"$CLI" dataset --data "$FIX/images" --metadata "$OUT/isic2019.csv" > "$OUT/byo_isic8.txt" 2>&1
grep -q "3 images" "$OUT/byo_isic8.txt"
grep -q "8 classes: akiec, bcc, bkl, df, mel, nv, scc, vasc" "$OUT/byo_isic8.txt"
grep -q "^scc  *1 " "$OUT/byo_isic8.txt"
{ cat "$OUT/isic2019.csv"; echo "ISIC_0024693,0.0,0.0,0.0,0.0,0.0,0.0,0.0,0.0,1.0"; } > "$OUT/isic2019_unk.csv"
if "$CLI" dataset --data "$FIX/images" --metadata "$OUT/isic2019_unk.csv" 2> "$OUT/byo_isic_err.txt"; then
  echo "an UNK row was accepted without --skip_labels"; exit 1
fi
grep -q "isic2019_unk.csv line 5: class 'UNK'" "$OUT/byo_isic_err.txt"
"$CLI" dataset --data "$FIX/images" --metadata "$OUT/isic2019_unk.csv" --skip_labels scc,unk 2> "$OUT/byo_isic.txt" \
  | grep -q "2 images"
grep -q "left out: 1 scc, 1 unk" "$OUT/byo_isic.txt"
# A model meets data with classes it does not know: a clear error, not a wrong index.
tail -n +2 "$FIX/metadata_subset.csv" | awk -F, 'BEGIN{print "image,label"} {print $2 ".jpg," (NR % 2 ? "benign" : "melanoma")}' \
  > "$OUT/own.csv"
"$CLI" split --data "$FIX/images" --metadata "$OUT/own.csv" --out "$OUT/own_split.csv" > /dev/null
if "$CLI" evaluate --model "$OUT/byo_run/model" --data "$FIX/images" --metadata "$OUT/own.csv" \
     --split "$OUT/own_split.csv" --out "$OUT/own_eval" 2> "$OUT/own_eval_err.txt"; then
  echo "a 7-class model was evaluated on benign/melanoma labels"; exit 1
fi
grep -q "class(es) benign, melanoma that the model does not know" "$OUT/own_eval_err.txt"

# Cross-validation: one run per k-fold round, summarised; finished rounds are kept, a
# new recipe in the same folder is refused, a fold out of range is an error.
"$CLI" split "${DATA[@]}" --out "$OUT/kfold.csv" --kfold 3 --seed 2 | grep -q "kfold:3"
TINY=architecture=resnet18,image_size=32,epochs=1,frozen_epochs=0,batch_size=4,num_workers=1,threads=1,progress_interval_s=0
"$CLI" cv "${DATA[@]}" --split "$OUT/kfold.csv" --out "$OUT/cv" --device cpu --set "$TINY" --folds 0,1 > "$OUT/cv1.txt"
grep -q "2 of 3 rounds finished" "$OUT/cv1.txt"
"$CLI" cv "${DATA[@]}" --split "$OUT/kfold.csv" --out "$OUT/cv" --device cpu --set "$TINY" 2> "$OUT/cv2_err.txt" > "$OUT/cv2.txt"
grep -q "round 0 (fold0) is finished: kept" "$OUT/cv2_err.txt"
grep -q "3 of 3 rounds finished" "$OUT/cv2.txt"
grep -q "mean ± sd" "$OUT/cv/cv.md"
test -s "$OUT/cv/cv.png"
/usr/bin/python3 - "$OUT/cv" <<'PY'
import json, os, statistics, sys
d = sys.argv[1]
cv = json.load(open(os.path.join(d, "cv.json")))
assert [r["fold"] for r in cv["folds"]] == [0, 1, 2], cv["folds"]
tested = []
for f in range(3):
    m = json.load(open(os.path.join(d, f"fold{f}", "model", "manifest.json")))
    assert m["data"]["fold"] == f and m["data"]["split_method"] == "kfold:3", m["data"]
    tested.append(m["data"]["test_images"])
    per = json.load(open(os.path.join(d, f"fold{f}", "report", "metrics.json")))
    assert abs(cv["folds"][f]["balanced_accuracy"] - per["balanced_accuracy"]) < 1e-12
assert sum(tested) == 14, tested  # every image is tested exactly once
b = [r["balanced_accuracy"] for r in cv["folds"]]
s = cv["summary"]["balanced_accuracy"]
assert abs(s["mean"] - statistics.mean(b)) < 1e-9 and abs(s["sd"] - statistics.stdev(b)) < 1e-9, (s, b)
PY
if "$CLI" cv "${DATA[@]}" --split "$OUT/kfold.csv" --out "$OUT/cv" --device cpu --set "$TINY,epochs=2" 2> "$OUT/cv3_err.txt"; then
  echo "cv mixed two recipes in one folder"; exit 1
fi
grep -q "another recipe" "$OUT/cv3_err.txt"
# Thread counts are how a machine runs a recipe, not the recipe: a resume may change them.
"$CLI" cv "${DATA[@]}" --split "$OUT/kfold.csv" --out "$OUT/cv" --device cpu --set "$TINY,threads=2,num_workers=2" \
  | grep -q "3 of 3 rounds finished"
if "$CLI" cv "${DATA[@]}" --split "$OUT/split.csv" --out "$OUT/cv4" --device cpu --set "$TINY" 2> "$OUT/cv4_err.txt"; then
  echo "cv accepted a holdout split"; exit 1
fi
grep -q "needs a k-fold split" "$OUT/cv4_err.txt"
# The Python reference runs the same round of the same split (and colour constancy and
# batch mixing), knows every key of the C++ training config, and mixes batches with the
# draws mix_test pins for the C++ trainer (DrawsArePinnedForThePythonReference).
/usr/bin/python3 - "$OUT/ref_config.json" "$OUT/cv/fold1/config.json" "$(dirname "$0")/../bench/reference" <<'PY'
import json, sys
# select_epoch last with a monitor that never improves (the image count): the monitor's
# best is the first epoch, the model the last.
json.dump({"architecture": "resnet18", "image_size": 32, "epochs": 2, "frozen_epochs": 0, "batch_size": 4,
           "num_workers": 0, "threads": 1, "colour_constancy_p": 6, "progress_interval_s": 0,
           "mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.5, "monitor": "n", "patience": 0,
           "select_epoch": "last"}, open(sys.argv[1], "w"))
sys.path.insert(0, sys.argv[3])
import torch
import train_reference as ref
cpp_keys = set(json.load(open(sys.argv[2])))
assert cpp_keys == set(ref.DEFAULTS), (cpp_keys ^ set(ref.DEFAULTS))
x = torch.arange(1, 9, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 3, 20, 30).contiguous()
y = torch.arange(8)
c = {"mixup_alpha": 0.2, "cutmix_alpha": 1.0, "mix_prob": 0.5}
def mix(step):
    return ref.mix_batch(x, y, c, ref.Rng(ref.derive_seed(42, ref.MIX_SEED_TAG, 0, step, 0)))
out, partner, lam, perm = mix(0)  # CutMix
assert partner.tolist() == [4, 5, 7, 0, 1, 3, 6, 2] and lam == 0.525, (partner, lam)
assert perm.tolist() == partner.tolist()  # y is 0..7: each row's partner is its label
box = (out[0, 0] != 1).nonzero()
assert box.amin(0).tolist() == [0, 11] and box.amax(0).tolist() == [14, 29], box
assert mix(2)[1] is None
out, partner, lam, perm = mix(3)  # mixup
assert partner.tolist() == [6, 2, 1, 7, 4, 3, 0, 5] and lam == 0.0004579783919513169, (partner, lam)
assert torch.allclose(out[0], x[0] * lam + x[6] * (1 - lam))
# Distillation: the value skinlesion/train/losses_test.cc pins (DistillationByHand, T = 2).
d = ref.distillation_loss(torch.tensor([[1.0, -1.0]]), torch.tensor([[0.2, 0.8]]), 2.0).item()
assert abs(d - 1.3736567435603062) < 1e-5, d
# The illuminant preset: medical with RandomIlluminant after BrightnessContrast, whose
# gains change the light's colour, not its brightness (their product is 1).
import numpy as np
ops = ref.make_preset("medical_illuminant", 32)
assert [type(o).__name__ for o in ops[5:7]] == ["BrightnessContrast", "RandomIlluminant"], ops
assert len(ops) == len(ref.make_preset("medical", 32)) + 1
gray = torch.full((3, 4, 4), 128, dtype=torch.uint8)
for seed in range(8):
    lit = ops[6].transform(gray, np.random.default_rng(seed))
    assert (lit == lit[:, :1, :1]).all() and not (lit == gray).all(), lit[:, 0, 0]
    assert abs((lit[:, 0, 0].double() / 128).log().sum()) < 0.015, lit[:, 0, 0]
PY
REF=(/usr/bin/python3 "$(dirname "$0")/../bench/reference/train_reference.py" --config "$OUT/ref_config.json"
     --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" --split "$OUT/kfold.csv")
OMP_NUM_THREADS=1 "${REF[@]}" --fold 1 --out "$OUT/ref_fold1" 2> "$OUT/ref_fold1.txt"
grep -q "train [0-9]*, val [0-9]*, test [0-9]*" "$OUT/ref_fold1.txt"
/usr/bin/python3 - "$OUT/ref_fold1" "$OUT/cv/fold1/model/manifest.json" <<'PY'
import json, os, sys
m = json.load(open(os.path.join(sys.argv[1], "metrics.json")))
c = json.load(open(sys.argv[2]))["data"]
assert m["n"] == c["test_images"], (m["n"], c)  # the same test fold as the C++ round
assert (m["best_epoch"], m["monitor_best_epoch"], m["epochs_run"]) == (1, 0, 2), m
PY
# Distillation in the reference: teachers' answers for every image train it; answers that
# miss a training image are refused as in C++.
/usr/bin/python3 - "$FIX/metadata_subset.csv" "$OUT/ref_config.json" "$OUT" <<'PY'
import csv, json, os, sys
meta, config, out = sys.argv[1:]
rows = list(csv.DictReader(open(meta)))
# Round 1 trains on fold0 (fold1 tests, fold2 validates): one of its images goes unanswered.
unanswered = next(r["image_id"] for r in csv.DictReader(open(os.path.join(out, "kfold.csv"))) if r["partition"] == "fold0")
classes = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
def write(path, rows):
    with open(path, "w") as f:
        f.write("image_id,label,views,temperature,ood_method,ood_units," + ",".join("p_" + c for c in classes) + "\n")
        for r in rows:
            f.write(f"{r['image_id']},{r['dx']},none,1,energy,0," + ",".join("0.94" if c == "vasc" else "0.01" for c in classes) + "\n")
write(os.path.join(out, "teacher_all.csv"), rows)
write(os.path.join(out, "teacher_fewer.csv"), [r for r in rows if r["image_id"] != unanswered])
c = json.load(open(config))
for name, files in (("distill", "teacher_all.csv"), ("distill_fewer", "teacher_fewer.csv")):
    c.update(distill_answers=os.path.join(out, files), distill_weight=0.5, distill_temperature=2.0)
    json.dump(c, open(os.path.join(out, f"ref_{name}.json"), "w"))
PY
REF_DISTILL=("${REF[@]}")
REF_DISTILL[3]=$OUT/ref_distill.json
OMP_NUM_THREADS=1 "${REF_DISTILL[@]}" --fold 1 --out "$OUT/ref_distill" 2> "$OUT/ref_distill.txt" || { cat "$OUT/ref_distill.txt"; exit 1; }
test -s "$OUT/ref_distill/metrics.json"
REF_DISTILL[3]=$OUT/ref_distill_fewer.json
if OMP_NUM_THREADS=1 "${REF_DISTILL[@]}" --fold 1 --out "$OUT/ref_distill_fewer" 2> "$OUT/ref_distill_fewer.txt"; then
  echo "the reference distilled without an answer for every training image"; exit 1
fi
grep -q "distill_answers: no teacher answer for 1 of" "$OUT/ref_distill_fewer.txt"
if "${REF[@]}" --out "$OUT/ref_nofold" 2> "$OUT/ref_err.txt"; then
  echo "the reference ran a k-fold split without a round"; exit 1
fi
grep -q "choose a round with --fold" "$OUT/ref_err.txt"
if "$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --fold 3 --out "$OUT/cv5" --set "$TINY" 2> "$OUT/cv5_err.txt"; then
  echo "train accepted fold 3 of 3"; exit 1
fi
grep -q "out of range" "$OUT/cv5_err.txt"
# The model to ship: every image of the k-fold split trains it (the last epoch is the
# model, no report), then its temperature, decision rule, referral and not-a-lesion
# thresholds are fitted on the rounds' out-of-fold predictions of the same recipe.
"$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --out "$OUT/ship" --device cpu --set "$TINY" \
  --progress_jsonl "$OUT/ship_progress.jsonl" > "$OUT/ship.txt"
# A progress listener hears it go from training to export, with no evaluation between.
grep -q '"phase":"export"' "$OUT/ship_progress.jsonl"
if grep -q '"phase":"evaluate"' "$OUT/ship_progress.jsonl"; then
  echo "train --all_folds announced an evaluation"; exit 1
fi
grep -q "trained on every image of the split (14)" "$OUT/ship.txt"
# --kept_out_epoch: only for the model on every image, and it names a conflicting epoch size.
if "$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --fold 0 --kept_out_epoch --out "$OUT/koe" \
     --set "$TINY,sampler=balanced" 2> "$OUT/koe_err.txt"; then
  echo "--kept_out_epoch took a kept-out round"; exit 1
fi
grep -q "kept_out_epoch is for the model on every image" "$OUT/koe_err.txt"
if "$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --kept_out_epoch --out "$OUT/koe" \
     --set "$TINY,sampler=balanced,samples_per_epoch=3" 2> "$OUT/koe_err.txt"; then
  echo "--kept_out_epoch took another samples_per_epoch"; exit 1
fi
grep -q "sets samples_per_epoch to [0-9]* (every image but the largest fold's); the configuration has 3" "$OUT/koe_err.txt"
test ! -e "$OUT/ship/report"
cp "$OUT/ship/model/manifest.json" "$OUT/ship_before.json"
"$CLI" fit-thresholds --model "$OUT/ship/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv" \
  --ood_images "$FIX/../ood" --min_ood_auroc 0 --threads 1 > "$OUT/ship_fit.txt"
grep -q "out of fold: 14 images from 3 rounds" "$OUT/ship_fit.txt"
grep -q "each round at the operating point fitted on the other rounds' answers" "$OUT/ship_fit.txt"
"$CLI" predict --model "$OUT/ship/model" --precision fp32 --json "$OUT/ship/model/golden_0.jpg" > "$OUT/ship_pred.json"
/usr/bin/python3 - "$OUT" "$FIX/metadata_subset.csv" <<'PY'
import csv, json, os, sys
out = sys.argv[1]
before = json.load(open(os.path.join(out, "ship_before.json")))
m = json.load(open(os.path.join(out, "ship", "model", "manifest.json")))
assert before["data"]["fold"] == "all" and before["data"]["train_images"] == 14, before["data"]
assert before["data"]["val_images"] == 0 and "metrics" not in before, before["data"]
assert before["calibration"]["fitted_on"] is None and before.get("refer", {}).get("malignancy_risk_threshold") is None, before
rounds = [json.load(open(os.path.join(out, "cv", f"fold{f}", "model", "manifest.json"))) for f in range(3)]
ts = [r["calibration"]["temperature"] for r in rounds]
assert abs(m["calibration"]["temperature"] - sum(ts) / 3) < 1e-9, (m["calibration"], ts)
assert m["calibration"]["fitted_on"] == "out_of_fold" and m["calibration"]["rounds"] == ts, m["calibration"]
for key in ("refer", "decision", "ood"):
    fd = m[key]["fitted_data"]
    assert fd["partition"] == "out_of_fold" and fd["images"] == 14 and fd["rounds"] == 3, (key, fd)
assert m["refer"]["malignancy_risk_threshold"] > 0 and m["ood"]["threshold"] is not None, m
# The decision rule's prior: the class shares of every image (the model's training data).
labels = [r["dx"] for r in csv.DictReader(open(sys.argv[2]))]
prior = [labels.count(c) / len(labels) for c in m["labels"]]
assert max(abs(a - b) for a, b in zip(m["decision"]["prior"], prior)) < 1e-9, (m["decision"]["prior"], prior)
assert m["ood"]["features"]["fitted_data"]["images"] == 14, m["ood"]
# Its metrics: the rounds' pooled out-of-fold answers at its operating point.
rep = json.load(open(os.path.join(out, "ship", "report_out_of_fold", "metrics.json")))
assert m["metrics_source"] == "out_of_fold" and m["metrics"]["n"] == 14 == rep["n"], (m["metrics"], rep)
assert m["metrics"]["referral"]["policy"]["malignancy_risk_threshold"] == m["refer"]["malignancy_risk_threshold"]
assert rep["context"]["partition"] == "out_of_fold", rep["context"]
# Each round scored at the operating point the other rounds set (the check of the
# pooled fit): every round once, fitted on the other rounds' images only.
loro = json.load(open(os.path.join(out, "ship", "report_out_of_fold", "leave_one_round_out.json")))
assert m["metrics_leave_one_round_out"] == loro, m["metrics_leave_one_round_out"]
assert [r["fold"] for r in loro["rounds"]] == [0, 1, 2], loro["rounds"]
assert sum(r["n"] for r in loro["rounds"]) == 14, loro["rounds"]
assert all(r["fitted_on_images"] == 14 - r["n"] for r in loro["rounds"]), loro["rounds"]
assert loro["summary"]["balanced_accuracy"]["n"] == 3 and 0 < loro["rounds"][0]["risk_threshold"] < 1, loro
# Beside it, the rounds' own figures as cv.json has them (each at its own operating point).
cvs = json.load(open(os.path.join(out, "cv", "cv.json")))["summary"]
own = [l for l in open(os.path.join(out, "ship_fit.txt")) if l.startswith("the rounds at their own operating points")]
assert len(own) == 1, own
for path in ("balanced_accuracy", "melanoma_recall", "referral/refer_rate/value"):
    s = cvs[path]
    assert f"{path} {s['mean']:.4f} ± {s['sd']:.4f}" in own[0], (path, s, own[0])
# The golden set follows the new temperature: predict answers as recorded.
item, p = m["golden_set"]["items"][0], json.load(open(os.path.join(out, "ship_pred.json")))[0]
assert max(abs(x - p["probabilities"][c]) for x, c in zip(item["probabilities"], m["labels"])) < 1e-4, (item, p)
PY
# The rounds' answers are kept as small files (the round models are not kept in the
# repository): without the models the fit reads them and comes out the same.
mkdir -p "$OUT/cv_kept"
# As if the rounds ran before ema_decay was a key: its default (0) is what they ran.
/usr/bin/python3 -c 'import json, sys; r = json.load(open(sys.argv[1])); del r["config"]["ema_decay"]; json.dump(r, open(sys.argv[2], "w"))' \
  "$OUT/cv/cv_recipe.json" "$OUT/cv_kept/cv_recipe.json"
for f in 0 1 2; do mkdir -p "$OUT/cv_kept/fold$f"; cp "$OUT/cv/fold$f/"out_of_fold_*.csv "$OUT/cv_kept/fold$f/"; done
cp -r "$OUT/ship" "$OUT/ship_kept"
cp "$OUT/ship_before.json" "$OUT/ship_kept/model/manifest.json"
"$CLI" fit-thresholds --model "$OUT/ship_kept/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_kept" \
  --ood_images "$FIX/../ood" --min_ood_auroc 0 --threads 1 > "$OUT/ship_kept_fit.txt"
if grep -q "answering its" "$OUT/ship_kept_fit.txt"; then echo "the kept answers were not used"; exit 1; fi
/usr/bin/python3 - "$OUT/ship/model/manifest.json" "$OUT/ship_kept/model/manifest.json" <<'PY'
import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:3])
for path in (("calibration", "temperature"), ("decision", "tau"), ("refer", "malignancy_risk_threshold"),
             ("ood", "threshold")):
    x, y = a[path[0]][path[1]], b[path[0]][path[1]]
    assert abs(x - y) <= 1e-5 * max(1.0, abs(x)), (path, x, y)
PY
sed -i '2s/,nv,/,vasc,/;2s/,mel,/,vasc,/;2s/,bkl,/,vasc,/;2s/,bcc,/,vasc,/;2s/,df,/,vasc,/;2s/,akiec,/,vasc,/' \
  "$OUT/cv_kept/fold1/out_of_fold_none.csv"
if "$CLI" fit-thresholds --model "$OUT/ship_kept/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_kept" \
     --threads 1 2> "$OUT/ship_kept_err.txt"; then
  echo "fit-thresholds used answers whose label differs from the data's"; exit 1
fi
grep -q "round 1's answer for .* has another label" "$OUT/ship_kept_err.txt"
# A cut-off recipe file is named as such, not taken for another recipe.
cp -r "$OUT/cv_kept" "$OUT/cv_cut"
head -c 40 "$OUT/cv_kept/cv_recipe.json" > "$OUT/cv_cut/cv_recipe.json"
if "$CLI" fit-thresholds --model "$OUT/ship_kept/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_cut" \
     --threads 1 2> "$OUT/cv_cut_err.txt"; then
  echo "fit-thresholds read a cut-off cv_recipe.json"; exit 1
fi
grep -q "cv_cut/cv_recipe.json is not valid JSON" "$OUT/cv_cut_err.txt"
# A finished round whose model is gone keeps its metrics; cv says it cannot answer again.
for f in 0 1 2; do mkdir -p "$OUT/cv_pruned/fold$f/report"; cp "$OUT/cv/fold$f/report/metrics.json" "$OUT/cv_pruned/fold$f/report/"; done
cp "$OUT/cv/cv_recipe.json" "$OUT/cv/fold0/"out_of_fold_*.csv "$OUT/cv_pruned/"
mv "$OUT/cv_pruned/"out_of_fold_*.csv "$OUT/cv_pruned/fold0/"
"$CLI" cv "${DATA[@]}" --split "$OUT/kfold.csv" --out "$OUT/cv_pruned" --device cpu --set "$TINY" \
  2> "$OUT/cv_pruned_err.txt" | grep -q "3 of 3 rounds finished"
grep -q "round 1 has no model left to answer its test fold again" "$OUT/cv_pruned_err.txt"
if grep -q "round 0 has no model left" "$OUT/cv_pruned_err.txt"; then echo "round 0 had its answers"; exit 1; fi
# Refused: a round's own model (its test fold is not held out from it), a model of
# another recipe, --all_folds with a round or without a k-fold split.
if "$CLI" fit-thresholds --model "$OUT/cv/fold0/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv" \
     --threads 1 2> "$OUT/ship_err1.txt"; then
  echo "fit-thresholds --from_cv fitted a round's own model"; exit 1
fi
grep -q "was not trained on every image" "$OUT/ship_err1.txt"
"$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --out "$OUT/ship2" --device cpu \
  --set "$TINY,seed=3" > /dev/null
if "$CLI" fit-thresholds --model "$OUT/ship2/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv" \
     --threads 1 2> "$OUT/ship_err2.txt"; then
  echo "fit-thresholds --from_cv mixed two recipes"; exit 1
fi
grep -q "another recipe" "$OUT/ship_err2.txt"
# --all_folds --fold 1: the shipped procedure with fold 1 kept out as its test images;
# fit-thresholds --from_cv then leaves round 1's answers (on those images) out of the fit,
# and evaluate scores the model on fold 1 at that operating point.
"$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --fold 1 --out "$OUT/ship3" --device cpu \
  --set "$TINY" > "$OUT/ship3.txt"
n1=$(grep -c ',fold1,' "$OUT/kfold.csv")
grep -q "trained on every image of the split but fold1's ($((14 - n1)))" "$OUT/ship3.txt"
"$CLI" fit-thresholds --model "$OUT/ship3/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv" \
  --ood_images "$FIX/../ood" --min_ood_auroc 0 --threads 1 > "$OUT/ship3_fit.txt"
grep -q "round 1's answers are left out of the fit" "$OUT/ship3_fit.txt"
grep -q "out of fold: $((14 - n1)) images from 2 rounds" "$OUT/ship3_fit.txt"
grep -q "scoring the served model's $((14 - n1)) training images" "$OUT/ship3_fit.txt"
grep -q "prior: the model's training images ($((14 - n1)))" "$OUT/ship3_fit.txt"
"$CLI" evaluate --model "$OUT/ship3/model" "${DATA[@]}" --split "$OUT/kfold.csv" --partition fold1 \
  --out "$OUT/ship3_eval" --answers_dir "$OUT/ship3_answers" > "$OUT/ship3_eval.txt"
# Its answers on fold 1 as a cv round keeps them; a fold it trained on is refused.
test -s "$OUT/ship3_answers/out_of_fold_none.csv"
for bad in "--partition fold0" "--partition test"; do
  # shellcheck disable=SC2086
  if "$CLI" evaluate --model "$OUT/ship3/model" "${DATA[@]}" --split "$OUT/kfold.csv" $bad \
       --out "$OUT/ship3_eval_bad" --answers_dir "$OUT/ship3_answers_bad" 2> "$OUT/ship3_bad.txt"; then
    echo "evaluate --answers_dir accepted $bad"; exit 1
  fi
done
grep -q "did not keep fold0 out of its training" <("$CLI" evaluate --model "$OUT/ship3/model" "${DATA[@]}" \
  --split "$OUT/kfold.csv" --partition fold0 --out "$OUT/ship3_eval_bad" --answers_dir "$OUT/ship3_answers_bad" 2>&1 || true)
/usr/bin/python3 - "$OUT" "$n1" <<'PY'
import json, os, sys
out, n1 = sys.argv[1], int(sys.argv[2])
m = json.load(open(os.path.join(out, "ship3", "model", "manifest.json")))
assert m["data"]["fold"] == "all" and m["data"]["test_fold"] == 1, m["data"]
assert m["data"]["train_images"] == 14 - n1 and m["data"]["test_images"] == n1, m["data"]
fd = m["decision"]["fitted_data"]
assert fd["left_out_round"] == 1 and fd["rounds"] == 2 and fd["images"] == 14 - n1, fd
assert m["calibration"]["fitted_on"] == "out_of_fold" and len(m["calibration"]["rounds"]) == 2, m["calibration"]
e = json.load(open(os.path.join(out, "ship3_eval", "metrics.json")))
assert e["n"] == n1 and e["context"]["partition"] == "fold1", (e["n"], e["context"])
import csv
rows = list(csv.DictReader(open(os.path.join(out, "ship3_answers", "out_of_fold_none.csv"))))
assert len(rows) == n1, (len(rows), n1)
split = {r["image_id"]: r["partition"] for r in csv.DictReader(open(os.path.join(out, "kfold.csv")))}
assert all(split[r["image_id"]] == "fold1" for r in rows), rows
assert all(r["views"] == "none" and abs(float(r["temperature"]) - m["calibration"]["temperature"]) < 1e-6
           for r in rows), (rows[0], m["calibration"])
PY
# A folder of answers where round 1's are the kept-out model's (its manifest beside them,
# as docs/cv/*_allbut keeps them): fit-thresholds says so and records it; the threshold
# fitted for 0.90 with a margin of 0.05 is the one fitted for 0.95, with 0.90 kept as the aim.
mkdir -p "$OUT/cv_allbut"
cp "$OUT/cv/cv_recipe.json" "$OUT/cv_allbut/"
for f in 0 2; do mkdir -p "$OUT/cv_allbut/fold$f"; cp "$OUT/cv/fold$f/"out_of_fold_*.csv "$OUT/cv_allbut/fold$f/"; done
mkdir -p "$OUT/cv_allbut/fold1"
cp "$OUT/ship3_answers/"out_of_fold_*.csv "$OUT/ship3/model/manifest.json" "$OUT/cv_allbut/fold1/"
for run in margin plain95; do
  cp -r "$OUT/ship" "$OUT/ship_$run"
  cp "$OUT/ship_before.json" "$OUT/ship_$run/model/manifest.json"
done
"$CLI" fit-thresholds --model "$OUT/ship_margin/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_allbut" \
  --sensitivity_margin 0.05 --sensitivity_confidence 0 --threads 1 > "$OUT/ship_margin_fit.txt"
grep -q "out of fold: 14 images from 3 rounds (1 of them answered by a model trained on every image but that fold)" \
  "$OUT/ship_margin_fit.txt"
grep -q "(target sensitivity 0.90, fitted for 0.95: margin 0.05," "$OUT/ship_margin_fit.txt"
"$CLI" fit-thresholds --model "$OUT/ship_plain95/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_allbut" \
  --target_sensitivity 0.95 --sensitivity_confidence 0 --threads 1 > /dev/null
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
a, b = (json.load(open(os.path.join(out, f"ship_{r}", "model", "manifest.json"))) for r in ("margin", "plain95"))
assert a["refer"]["malignancy_risk_threshold"] == b["refer"]["malignancy_risk_threshold"], (a["refer"], b["refer"])
assert a["refer"]["target_sensitivity"] == 0.9 and a["refer"]["sensitivity_margin"] == 0.05, a["refer"]
assert b["refer"]["target_sensitivity"] == 0.95 and "sensitivity_margin" not in b["refer"], b["refer"]
assert a["refer"]["fitted_data"]["kept_out_models"] == 1, a["refer"]["fitted_data"]
PY
# A margin that aims above 1; a kept-out manifest beside another round's answers.
if "$CLI" fit-thresholds --model "$OUT/ship_margin/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_allbut" \
     --sensitivity_margin 0.2 --threads 1 2> "$OUT/ship_margin_err.txt"; then
  echo "fit-thresholds accepted a target plus margin above 1"; exit 1
fi
grep -q "sensitivity_margin must be" "$OUT/ship_margin_err.txt"
cp "$OUT/ship3/model/manifest.json" "$OUT/cv_allbut/fold0/"
if "$CLI" fit-thresholds --model "$OUT/ship_margin/model" "${DATA[@]}" --split "$OUT/kfold.csv" --from_cv "$OUT/cv_allbut" \
     --threads 1 2> "$OUT/ship_allbut_err.txt"; then
  echo "fit-thresholds took round 0's answers beside a model that kept fold1 out"; exit 1
fi
grep -q "fold0/manifest.json is of a model that kept fold1 out, not fold0" "$OUT/ship_allbut_err.txt"
# The round kept out must be a fold of the split.
if "$CLI" train "${DATA[@]}" --split "$OUT/kfold.csv" --all_folds --fold 3 --out "$OUT/ship5" --set "$TINY" \
     2> "$OUT/ship_err3.txt"; then
  echo "train --all_folds accepted a fold out of range"; exit 1
fi
grep -q "fold 3 is out of range" "$OUT/ship_err3.txt"
if "$CLI" train "${DATA[@]}" --split "$OUT/split.csv" --all_folds --out "$OUT/ship4" --set "$TINY" \
     2> "$OUT/ship_err4.txt"; then
  echo "train --all_folds accepted a holdout split"; exit 1
fi
grep -q "needs a k-fold split" "$OUT/ship_err4.txt"
echo "cli_ml_test: ok"
