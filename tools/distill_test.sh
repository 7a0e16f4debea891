#!/usr/bin/env bash
# docs/cv/distill_allbut/run.sh dry-run on the fixtures: two tiny teachers kept out of
# fold0 answer every fold, a student kept out of fold0 learns from their answers on folds
# 1-2 (never fold0's), and summary.py sets it against each teacher and their mean on fold0;
# a second run answers and trains nothing again; no teachers or a fold the split lacks
# are refused.
# shellcheck source=tools/fixture_scripts.sh
source "$(dirname "$0")/fixture_scripts.sh"
DM=(--data "$FIX/images" --metadata "$FIX/metadata_subset.csv")
for seed in 1 2; do
  "$CLI" train "${DM[@]}" --split "$OUT/kfold3.csv" --all_folds --fold 0 --out "$OUT/t$seed" \
    --set "$TINY,epochs=1,seed=$seed" > "$OUT/t$seed.txt" 2>&1 || { tail -20 "$OUT/t$seed.txt"; exit 1; }
done
export SKINLESION=$CLI DATA=$FIX/images METADATA=$FIX/metadata_subset.csv SPLIT=$OUT/kfold3.csv \
  WORK=$OUT/work DOCS_OUT=$OUT/docs FOLD=0 SET=$TINY,epochs=2,warmup_epochs=0 TEACHERS="$OUT/t1/model $OUT/t2/model"
RUN=$ROOT/docs/cv/distill_allbut/run.sh
"$RUN" > "$OUT/first.txt" 2>&1 || { cat "$OUT/first.txt"; exit 1; }
/usr/bin/python3 - "$OUT" <<'PY'
import csv, json, os, sys
out = sys.argv[1]
d = os.path.join(out, "docs", "fold0_w0.5_t2")
split = list(csv.DictReader(open(os.path.join(out, "kfold3.csv"))))
fold0 = sorted(r["image_id"] for r in split if r["partition"] == "fold0")
config = json.load(open(os.path.join(out, "work", "fold0_w0.5_t2", "student", "config.json")))
files = config["distill_answers"].split(":")
assert config["distill_weight"] == 0.5 and config["distill_temperature"] == 2, config
assert len(files) == 4 and all("/fold0/" not in f for f in files), files  # 2 teachers x folds 1, 2
taught = set()
for f in files:
    taught |= {r["image_id"] for r in csv.DictReader(open(f))}
assert taught.isdisjoint(fold0) and len(taught) == len(split) - len(fold0), (len(taught), len(fold0))
m = json.load(open(os.path.join(d, "metrics.json")))
assert m["n"] == len(fold0) and m["context"]["partition"] == "fold0", m["context"]
for k in (0, 1):
    rows = list(csv.DictReader(open(os.path.join(d, f"teacher{k}_out_of_fold_flips.csv"))))
    assert sorted(r["image_id"] for r in rows) == fold0, k
assert len(open(os.path.join(d, "teachers.txt")).read().splitlines()) == 2
text = open(os.path.join(d, "summary.md")).read()
for row in ("| teacher0 |", "| teacher1 |", "| teachers' mean |", "| student |", "| student - teacher0 |",
            "| student - teachers' mean |"):
    assert row in text, (row, text)
PY
"$RUN" > "$OUT/second.txt" 2>&1 || { cat "$OUT/second.txt"; exit 1; }
if grep -qE "answers fold|student: every image" "$OUT/second.txt"; then echo "the second run did it again"; exit 1; fi
if TEACHERS="" "$RUN" > "$OUT/none.txt" 2>&1; then echo "ran without teachers"; exit 1; fi
grep -q "TEACHERS: the model folders" "$OUT/none.txt"
if FOLD=7 "$RUN" > "$OUT/fold7.txt" 2>&1; then echo "ran on a fold the split lacks"; exit 1; fi
grep -q "FOLD 7 is not a fold of" "$OUT/fold7.txt"
