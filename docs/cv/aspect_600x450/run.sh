#!/bin/bash
# The shape external images arrive in: a kept-out model (docs/cv/36ep_160_balmix_allbut,
# round FOLD: trained on every image but that fold's) scored on its fold's lesions as
# square 224 px images (the development copy) and as 600x450 images (the shape of the
# originals and of ISIC 2018's test images; make_600x450.py stretches each square image
# back), through each preprocessing the manifest can ask for:
#   square            the cross-validation figure (both modes are the same on squares)
#   wide_crop         shorter side to 160, centre square (what models served until now)
#   wide_resize       the whole image squashed to 160x160, as the 224 px copies were made
# With SKINLESION_BEFORE (a binary from before large shrinks were averaged, 2026-12-06)
# the two wide rows are also scored by it (`*_before`): bilinear straight from 600x450.
#
#   SKINLESION=runs/bin/skinlesion [SKINLESION_BEFORE=...] [FOLD=3] \
#     MODEL=runs/allbut/fold3/bundled docs/cv/aspect_600x450/run.sh
# Writes docs/cv/aspect_600x450/fold<FOLD>/{<condition>_metrics.json, summary.md}.
# About 2.5 minutes a condition on 2 cores (1,197 images, 3 views, fp32).
# Dry run on the test fixtures (tools/aspect_test.sh): DATA=images METADATA=metadata.csv
#   WIDE=/tmp/w/wide WORK=/tmp/w DOCS_OUT=/tmp/w/docs SPLIT=kfold3.csv FOLD=0 MODEL=... run.sh
set -euo pipefail
cd "$(dirname "$0")/../../.."
export OMP_WAIT_POLICY=PASSIVE
HERE=docs/cv/aspect_600x450
FOLD=${FOLD:-3}
OUT=${DOCS_OUT:-$HERE}/fold$FOLD
D=${DATA:-../shared/data/ham10000}
WIDE=${WIDE:-runs/ham10000_600x450}
S=${SPLIT:-configs/ham10000_kfold5_seed42.csv}
MODEL=${MODEL:-runs/allbut/fold$FOLD/bundled}
W=${WORK:-runs/aspect_600x450}/fold$FOLD
CLI=$(realpath "${SKINLESION:-build/tools/skinlesion}")
log() { echo "[aspect $(date -u +%H:%M)] $*" >&2; }
[ -s "$WIDE/HAM10000_metadata.csv" ] || /usr/bin/python3 "$HERE/make_600x450.py" "$D" "$WIDE"
rm -rf "$W"
mkdir -p "$W" "$OUT"
for mode in shorter_side_center_crop resize; do
  "$CLI" export --model "$MODEL" --out "$W/model_$mode" --fp16 --resize "$mode" > /dev/null
done
# name, data, binary, model
conditions=("square $D $CLI $W/model_shorter_side_center_crop"
            "wide_crop $WIDE $CLI $W/model_shorter_side_center_crop"
            "wide_resize $WIDE $CLI $W/model_resize")
if [ -n "${SKINLESION_BEFORE:-}" ]; then
  before=$(realpath "$SKINLESION_BEFORE")
  conditions+=("wide_crop_before $WIDE $before $W/model_shorter_side_center_crop"
               "wide_resize_before $WIDE $before $W/model_resize")
fi
for c in "${conditions[@]}"; do
  read -r name data bin model <<< "$c"
  log "$name: $(basename "$data") through $(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["preprocessing"]["resize"])' "$model/manifest.json")"
  dm=(--data "$data")  # The wide copy has the same image ids: the same metadata.
  [ -n "${METADATA:-}" ] && dm+=(--metadata "$METADATA")
  "$bin" evaluate --model "$model" "${dm[@]}" --split "$S" --partition "fold$FOLD" --precision fp32 \
    --out "$W/$name" --answers_dir "$W/$name/answers" > "$W/$name.txt"
  cp "$W/$name/metrics.json" "$OUT/${name}_metrics.json"
done
/usr/bin/python3 "$HERE/summary.py" "$W" "$OUT" | tee "$OUT/summary.md"
