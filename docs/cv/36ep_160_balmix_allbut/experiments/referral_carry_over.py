# Does a referral threshold fitted on the three-fold round models' answers carry over to a
# model trained as the shipped one is (every image but the test fold, the last epoch)?
# For each round r kept out here: the decision rule and the 95%-confidence risk threshold
# fitted (numpy copy of fit-thresholds --from_cv, ../36ep_160_balmix_oof/experiments/
# oof_rule.py) on the other four rounds' pooled three-fold answers at several nominal
# targets, then the served referral rule (risk >= threshold, or confidence < 0.5, or
# margin < 0.1) scored on fold r's answers of both models: the round's three-fold model
# (../36ep_160_balmix_oof/fold<r>) and the model kept off fold r (fold<r> here).
#   /usr/bin/python3 docs/cv/36ep_160_balmix_allbut/experiments/referral_carry_over.py [flips|none]
import glob
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
OOF = os.path.join(HERE, '..', '..', '36ep_160_balmix_oof')
sys.path.insert(0, os.path.join(OOF, 'experiments'))
from oof_rule import MALIGNANT, MEL, fit_risk_threshold, load, prior_of, refer_mask, risk_of, sequential, taus  # noqa: E402

views = sys.argv[1] if len(sys.argv) > 1 else 'flips'
ROUNDS = [0, 1, 2, 3, 4]
prior = prior_of(OOF, ROUNDS)
kept = sorted(int(os.path.basename(d)[4:]) for d in glob.glob(os.path.join(HERE, '..', 'fold[0-9]'))
              if os.path.exists(os.path.join(d, f'out_of_fold_{views}.csv')))


def referred(P, y, tau, bias, threshold):
    mal = np.isin(y, MALIGNANT)
    refer = refer_mask(P, prior, tau, bias, threshold)
    return refer[mal].mean(), refer[y == MEL].mean(), refer.mean()


print(f'views {views}; rounds kept out: {kept}')
print('| target | round | threshold | three-fold model: malignant / melanoma referred, refer rate | '
      'kept-out model: malignant / melanoma referred, refer rate |')
print('|---:|---:|---:|---|---|')
for target in (0.90, 0.92, 0.93, 0.94, 0.95):
    rows = []
    for r in kept:
        fit = [load(os.path.join(OOF, f'fold{o}', f'out_of_fold_{views}.csv')) for o in ROUNDS if o != r]
        P = np.concatenate([p for p, _ in fit])
        y = np.concatenate([t for _, t in fit])
        tau, bias = sequential(P, y, prior, taus())
        threshold = fit_risk_threshold(risk_of(P), np.isin(y, MALIGNANT), target)
        three = referred(*load(os.path.join(OOF, f'fold{r}', f'out_of_fold_{views}.csv')), tau, bias, threshold)
        ours = referred(*load(os.path.join(HERE, '..', f'fold{r}', f'out_of_fold_{views}.csv')), tau, bias, threshold)
        rows.append((three, ours))
        print(f'| {target:.2f} | {r} | {threshold:.3f} | {three[0]:.3f} / {three[1]:.3f}, {three[2]:.3f} | '
              f'{ours[0]:.3f} / {ours[1]:.3f}, {ours[2]:.3f} |')
    a = np.array([[t[0], t[2], o[0], o[2]] for t, o in rows])
    print(f'| {target:.2f} | mean | | {a[:, 0].mean():.3f}, {a[:, 1].mean():.3f} | '
          f'**{a[:, 2].mean():.3f}** (lowest {a[:, 2].min():.3f}), {a[:, 3].mean():.3f} |')
