# Joint (tau, melanoma bias) fit against the sequential fit the C++ rule uses
# (skinlesion/common/decision.h: tau for balanced accuracy, then the smallest bias that
# names 70% of the melanomas), fitted on a round's validation answers and scored on its
# test answers. docs/results.md, "The shipped recipe through the out-of-fold path".
#
# The validation answers come from the round's own model, answering its validation fold
# as if that fold were a round's test fold (cv keeps a finished round and only writes
# its missing answer files):
#   mkdir -p /tmp/valans/fold1/report && cp runs/cv36/cv_recipe.json /tmp/valans/
#   cp -r runs/cv36/fold0/model /tmp/valans/fold1/ && cp runs/cv36/fold0/report/metrics.json /tmp/valans/fold1/report/
#   build/tools/skinlesion cv --config configs/ham10000_resnet18_36ep_160_balmix.json \
#       --data ../shared/data/ham10000 --split configs/ham10000_kfold5_seed42.csv --out /tmp/valans --folds 1
#   /usr/bin/python3 joint_rule_fit.py /tmp/valans/fold1/out_of_fold_none.csv \
#       runs/cv36/fold0/out_of_fold_none.csv runs/cv36/fold0/report/metrics.json
import json, sys
import numpy as np
from oof_rule import BIASES, MEL_FLOOR, bal, decide, load, melrec, sequential, taus
def joint(P, y, prior, taugrid):
    best = None
    for t in taugrid:
        for b in BIASES:
            k = decide(P, prior, t, b)
            if melrec(y, k) >= MEL_FLOOR:
                v = (bal(y, k), -t, -b)
                if best is None or v > best: best = v
                break  # smallest bias reaching the floor at this tau
    return -best[1], -best[2]
val = load(sys.argv[1]); test = load(sys.argv[2]); prior = np.array(json.load(open(sys.argv[3]))['decision']['prior'])
seq = sequential(*val, prior, taus())
for name, (t, b) in [('sequential', seq), ('joint tau<=0.5', joint(*val, prior, taus())),
                     ('joint tau<=1', joint(*val, prior, taus(1.0))),
                     ('no floor', (seq[0], 0))]:
    kv = decide(val[0], prior, t, b); kt = decide(test[0], prior, t, b)
    print(f'{name:15s} tau {t:.2f} bias {b:.2f}  val bal {bal(val[1], kv):.4f} mel {melrec(val[1], kv):.3f} | test bal {bal(test[1], kt):.4f} mel {melrec(test[1], kt):.3f} acc {(kt == test[1]).mean():.3f}')
