# The pooled referral threshold's nominal target raised until the left-out rounds reach
# 0.90, chosen without the round it is scored on (nested leave-one-round-out), against
# the plain pooled fit (target 0.90 at 95% confidence). Risk rule alone.
# docs/results.md, "The shipped recipe through the out-of-fold path".
#   /usr/bin/python3 nested_referral_target.py CV_DIR [none|flips] [0,1,2,3,4]
# (CV_DIR: a cv folder with fold<r>/out_of_fold_<views>.csv, e.g. this recipe's folder once
# its five rounds are in, or the mechanics run of docs/cv/ship_out_of_fold_mechanics/run.sh).
import sys
import numpy as np
from oof_rule import fit_risk_threshold as fit, load, risk_of, MALIGNANT
cv = sys.argv[1]; views = sys.argv[2] if len(sys.argv) > 2 else 'none'
folds = [int(f) for f in (sys.argv[3].split(',') if len(sys.argv) > 3 else '01234')]
R = []
for f in folds:
    P, y = load(f'{cv}/fold{f}/out_of_fold_{views}.csv')
    R.append((risk_of(P), np.isin(y, MALIGNANT)))
def score(t, risk, mal):
    return (risk[mal] >= t).mean(), (risk >= t).mean()
def pool(idx):
    return np.concatenate([R[i][0] for i in idx]), np.concatenate([R[i][1] for i in idx])
T = 0.90
grid = np.round(np.arange(0.90, 0.995, 0.005), 3)
def choose(idx, rule):
    if rule == 'pooled': return T
    best = None
    for s in grid:
        sens = []
        for q in idx:
            others = [i for i in idx if i != q]
            t = fit(*pool(others), s)
            sens.append(score(t, *R[q])[0])
        stat = min(sens) if rule == 'min' else np.mean(sens) - np.std(sens, ddof=1)
        if stat >= T: return s
    return grid[-1]
for rule in ('pooled', 'min', 'mean-sd'):
    out = []
    for r in range(len(R)):
        idx = [i for i in range(len(R)) if i != r]
        s = choose(idx, rule)
        t = fit(*pool(idx), s)
        sens, rate = score(t, *R[r])
        out.append((folds[r], s, t, sens, rate))
    ss = np.array([o[3] for o in out]); rr = np.array([o[4] for o in out])
    print(f'{rule:8s}', ' '.join(f'r{o[0]}:s={o[1]:.3f},t={o[2]:.3f},sens={o[3]:.3f},refer={o[4]:.3f}' for o in out))
    print(f'   sens mean {ss.mean():.3f} sd {ss.std(ddof=1):.3f} min {ss.min():.3f}; refer {rr.mean():.3f}')
