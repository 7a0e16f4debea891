# The served referral rule (skinlesion/common/referral.h: malignancy risk >= threshold, or
# the named class's probability < 0.5, or its margin over the most probable other class
# < 0.1) with its decision rule and risk threshold fitted on the other rounds' pooled
# out-of-fold answers, scored on each round's own answers: a numpy preview of
# fit-thresholds --from_cv's leave-one-round-out referral figures, for several nominal
# targets (95% confidence). docs/results.md, "The shipped recipe through the out-of-fold
# path".
#   /usr/bin/python3 pooled_referral_full_rule.py docs/cv/36ep_160_balmix_oof 0 1 2 3 4
import sys
import numpy as np
from oof_rule import (MALIGNANT, MEL, fit_risk_threshold, leave_one_round_out, prior_of, refer_mask, risk_of,
                      sequential, taus)
D, R = sys.argv[1], [int(x) for x in sys.argv[2:]]
prior = prior_of(D, R)
for views in ('none', 'flips'):
    for target in (0.90, 0.92, 0.93, 0.95):
        out = []
        for test, (P, y), held_out in leave_one_round_out(D, R, views):
            tau, bias = sequential(P, y, prior, taus())
            threshold = fit_risk_threshold(risk_of(P), np.isin(y, MALIGNANT), target)
            P, y = held_out
            mal, risk = np.isin(y, MALIGNANT), risk_of(P)
            refer = refer_mask(P, prior, tau, bias, threshold)
            out.append((refer[mal].mean(), (risk >= threshold)[mal].mean(), refer[y == MEL].mean(),
                        refer.mean(), threshold))
        a = np.array(out)
        print(f'{views}, target {target:.2f}: malignant referred ' + ' '.join(f'{x:.3f}' for x in a[:, 0]) +
              f' (mean {a[:, 0].mean():.3f}, lowest {a[:, 0].min():.3f}; risk rule alone {a[:, 1].mean():.3f}, '
              f'lowest {a[:, 1].min():.3f}), melanomas {a[:, 2].mean():.3f} (lowest {a[:, 2].min():.3f}), '
              f'refer rate {a[:, 3].mean():.3f}, thresholds {a[:, 4].min():.3f}-{a[:, 4].max():.3f}')
