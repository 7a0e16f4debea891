#!/usr/bin/env bash
# docs/cv/aspect_600x450/run.sh dry-run on the fixtures: a tiny model kept out of fold0,
# scored on fold0 as square images and stretched to 600x450 through both resize modes,
# with SKINLESION_BEFORE set to the same binary (so its rows must equal the others').
# shellcheck source=tools/fixture_scripts.sh
source "$(dirname "$0")/fixture_scripts.sh"
"$CLI" train --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" --split "$OUT/kfold3.csv" --all_folds \
  --fold 0 --out "$OUT/r0" --set "$TINY,epochs=1" > "$OUT/train.txt" 2>&1
SKINLESION=$CLI SKINLESION_BEFORE=$CLI DATA=$FIX/images METADATA=$FIX/metadata_subset.csv WIDE=$OUT/wide \
  WORK=$OUT/work DOCS_OUT=$OUT/docs SPLIT=$OUT/kfold3.csv FOLD=0 MODEL=$OUT/r0/model \
  "$ROOT/docs/cv/aspect_600x450/run.sh" > "$OUT/aspect.txt" 2>&1 || { tail -20 "$OUT/aspect.txt"; exit 1; }
/usr/bin/python3 - "$OUT" "$FIX/images" <<'PY'
import csv, json, os, sys
from PIL import Image
out, images = sys.argv[1:]
n = sum(1 for r in csv.DictReader(open(f"{out}/kfold3.csv")) if r["partition"] == "fold0")
for name in os.listdir(images):
    if name.endswith(".jpg"):
        assert Image.open(os.path.join(out, "wide", name)).size == (600, 450), name
for mode in ("shorter_side_center_crop", "resize"):
    m = json.load(open(f"{out}/work/fold0/model_{mode}/manifest.json"))
    assert m["preprocessing"]["resize"] == mode and m["weights_dtype"] == "float16", m["preprocessing"]
for c in ("square", "wide_crop", "wide_resize", "wide_crop_before", "wide_resize_before"):
    m = json.load(open(f"{out}/docs/fold0/{c}_metrics.json"))
    assert m["n"] == n and m["context"]["partition"] == "fold0", (c, m["n"], n)
    mode = "resize" if c.startswith("wide_resize") else "shorter_side_center_crop"
    assert m["context"]["model"].endswith(f"model_{mode}"), (c, m["context"]["model"])
text = open(f"{out}/docs/fold0/summary.md").read()
rows = [l for l in text.splitlines() if l.startswith("| ")]
assert sum(":" in l.split("|")[1] for l in rows) == 5, rows  # "| <condition>: <what> |"
# The binary "before" is this one: its answers, and so every paired difference, are the same.
same = [l for l in rows if l.startswith(("| wide_crop - wide_crop_before", "| wide_resize - wide_resize_before"))]
assert len(same) == 2 and all("nan" not in l.split("|")[2] and l.split("|")[2].strip().startswith(("+0.000", "-0.000"))
                              for l in same), same
# Squashing a stretched square copy gives back (nearly) the square image's answers.
square_row = next(l for l in rows if l.startswith("| square:"))
assert square_row.rstrip(" |").endswith("1.000 | 0.000"), square_row
PY
