#!/usr/bin/env bash
# bench/train_workers_bench.sh dry-run on the fixtures (tiny model), and the premise it
# rests on: the trained model does not depend on the loader's worker count (same
# weights, byte for byte, with 0 and 2 workers).
# shellcheck source=tools/fixture_scripts.sh
source "$(dirname "$0")/../tools/fixture_scripts.sh"
SKINLESION=$CLI DATA=$FIX/images METADATA=$FIX/metadata_subset.csv SPLIT=$OUT/kfold3.csv REPEATS=2 SET=$TINY \
  "$ROOT/bench/train_workers_bench.sh" "$OUT/bench" > "$OUT/bench.txt" 2> "$OUT/bench_err.txt" ||
  { cat "$OUT/bench.txt" "$OUT/bench_err.txt"; exit 1; }
/usr/bin/python3 - "$OUT/bench/train_workers.md" <<'PY'
import sys
rows = [l.split('|')[1:-1] for l in open(sys.argv[1]) if l.startswith('| ') and l[2].isdigit()]
assert [r[0].strip() for r in rows] == ['2', '1', '0'], rows
assert rows[0][4].strip() == '1.000', rows[0]
assert all(float(r[1]) > 0 and float(r[4]) > 0 for r in rows), rows
PY
test "$(wc -l < "$OUT/bench/ips.tsv")" -eq 6
if compgen -G "$OUT/bench/r[0-9]*_w*/" > /dev/null; then echo "the bench left its training runs"; exit 1; fi
for w in 0 2; do
  "$CLI" train --data "$FIX/images" --metadata "$FIX/metadata_subset.csv" --split "$OUT/kfold3.csv" --all_folds \
    --fold 0 --out "$OUT/w$w" --set "$TINY,epochs=2,num_workers=$w,augmentation=medical" > "$OUT/w$w.txt" 2>&1
done
cmp "$OUT/w0/model/model.safetensors" "$OUT/w2/model/model.safetensors" ||
  { echo "the trained weights depend on the loader's worker count"; exit 1; }
echo "train_workers_bench dry run: ok"
