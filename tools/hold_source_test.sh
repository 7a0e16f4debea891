#!/usr/bin/env bash
# docs/cv/hold_36_illuminant/run.sh (a source held out, trained with an augmentation
# preset) dry-run on the fixtures with a tiny model: the preset reaches the training
# config, the test and flip-view reports land in docs/cv/hold_<source>_36_<AUG>/, a
# second run trains nothing again, AUG=medical and SEED=7 write their own folders, and a source
# without a split is refused; SELECT=last hands on the finished run's last epoch.
# shellcheck source=tools/fixture_scripts.sh
source "$(dirname "$0")/fixture_scripts.sh"
"$CLI" split --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" --hold_out_source rosendahl \
  --val 0.3 --out "$OUT/hold.csv" > /dev/null
export SKINLESION=$CLI DATA=$FIX/images METADATA=$FIX/metadata_subset.csv WORK=$OUT/work \
  DOCS_OUT=$OUT/docs SOURCES=rosendahl SPLIT_rosendahl=$OUT/hold.csv SET=$TINY,epochs=2,warmup_epochs=0
RUN=$ROOT/docs/cv/hold_36_illuminant/run.sh
"$RUN" > "$OUT/first.txt" 2>&1 || { cat "$OUT/first.txt"; exit 1; }
D=$OUT/docs/hold_rosendahl_36_medical_illuminant
for f in metrics.json tta_metrics.json confusion_matrix.png train_log.jsonl training_curves.png; do
  test -s "$D/$f" || { echo "missing $f"; cat "$OUT/first.txt"; exit 1; }
done
/usr/bin/python3 - "$OUT" "$D" <<'PY'
import csv, json, os, sys
out, d = sys.argv[1:]
config = json.load(open(os.path.join(out, "work", "hold_rosendahl_36_medical_illuminant", "config.json")))
assert config["augmentation"] == "medical_illuminant" and config["epochs"] == 2, config
test = sum(r["partition"] == "test" for r in csv.DictReader(open(os.path.join(out, "hold.csv"))))
m, t = (json.load(open(os.path.join(d, f))) for f in ("metrics.json", "tta_metrics.json"))
assert m["n"] == test and t["n"] == test and m["context"]["partition"] == "test", (m["n"], t["n"], test)
assert t["context"]["tta"] == "flips", t["context"]
PY
"$RUN" > "$OUT/second.txt" 2>&1
grep -q "rosendahl: metrics already in" "$OUT/second.txt"
if grep -q "training" "$OUT/second.txt"; then echo "the second run trained again"; exit 1; fi
AUG=medical "$RUN" > "$OUT/medical.txt" 2>&1 || { cat "$OUT/medical.txt"; exit 1; }
grep -q '"augmentation": "medical"' "$OUT/work/hold_rosendahl_36_medical/config.json"
test -s "$OUT/docs/hold_rosendahl_36_medical/metrics.json"
if SOURCES=vienna_dias "$RUN" > "$OUT/unknown.txt" 2>&1; then echo "a source without a split ran"; exit 1; fi
grep -q "no split for source vienna_dias" "$OUT/unknown.txt"
# SELECT=last: the finished run's last epoch is handed on without training again.
SELECT=last "$RUN" > "$OUT/last.txt" 2>&1 || { cat "$OUT/last.txt"; exit 1; }
grep -q "the last epoch of $OUT/work/hold_rosendahl_36_medical_illuminant" "$OUT/last.txt"
if grep -q "\[train\] epoch" "$OUT/work/hold_rosendahl_36_medical_illuminant_last.txt"; then
  echo "SELECT=last trained again"; exit 1
fi
/usr/bin/python3 - "$OUT" <<'PY'
import json, os, sys
out = sys.argv[1]
d = os.path.join(out, "docs", "hold_rosendahl_36_medical_illuminant_last")
m = json.load(open(os.path.join(d, "metrics.json")))
assert m["context"]["best_epoch"] == 2, m["context"]
training = json.load(open(os.path.join(out, "work", "hold_rosendahl_36_medical_illuminant_last", "model",
                                       "manifest.json")))["training"]
assert training["select_epoch"] == "last" and training["best_epoch"] == 2, training
assert training["monitor_best_epoch"] in (1, 2) and training["config"]["select_epoch"] == "last", training
assert os.path.exists(os.path.join(d, "tta_metrics.json"))
PY
if SELECT=first "$RUN" > "$OUT/bad_select.txt" 2>&1; then echo "SELECT=first ran"; exit 1; fi
grep -q "SELECT is best or last, not first" "$OUT/bad_select.txt"
# SEED=N: another seed of the same arm, in its own folders, with the seed in its config.
SEED=7 AUG=medical "$RUN" > "$OUT/seed.txt" 2>&1 || { cat "$OUT/seed.txt"; exit 1; }
grep -q '"seed": 7' "$OUT/work/hold_rosendahl_36_medical_seed7/config.json"
test -s "$OUT/docs/hold_rosendahl_36_medical_seed7/metrics.json"
grep -q '"seed": 42' "$OUT/work/hold_rosendahl_36_medical/config.json"
if SEED=x "$RUN" > "$OUT/bad_seed.txt" 2>&1; then echo "SEED=x ran"; exit 1; fi
grep -q "SEED is a whole number, not x" "$OUT/bad_seed.txt"
# SEED=7 at one length for both arms (the medical one from the SEED=7 run above), and the
# seed table of compare.py: a row per arm and seed, the spread over seeds, the paired difference.
SEED=7 SELECT=last AUG=medical "$RUN" > "$OUT/seed_last_medical.txt" 2>&1 || { cat "$OUT/seed_last_medical.txt"; exit 1; }
grep -q "the last epoch of $OUT/work/hold_rosendahl_36_medical_seed7" "$OUT/seed_last_medical.txt"
SEED=7 SELECT=last "$RUN" > "$OUT/seed_last.txt" 2>&1 || { cat "$OUT/seed_last.txt"; exit 1; }
HOLD_DOCS=$OUT/docs /usr/bin/python3 "$ROOT/docs/cv/hold_36_illuminant/compare.py" --seeds rosendahl > "$OUT/seeds.md"
for row in "| medical | 7 |" "| medical_illuminant | 7 |" "| medical_illuminant | 42 |" \
           "| medical_illuminant: largest - smallest over seeds |" "| illuminant - medical | 7 |"; do
  grep -qF "$row" "$OUT/seeds.md" || { echo "no row $row"; cat "$OUT/seeds.md"; exit 1; }
done
if grep -qF "| illuminant - medical | 42 |" "$OUT/seeds.md"; then echo "a difference without both arms"; exit 1; fi
