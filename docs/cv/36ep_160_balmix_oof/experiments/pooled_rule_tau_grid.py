# The decision rule fitted on the pooled out-of-fold answers of the other rounds and scored
# on each round's own answers (a numpy preview of fit-thresholds --from_cv's
# leave-one-round-out check, decision rule only), with tau's grid capped at 0.5 (the C++
# fit: skinlesion/common/decision.h) or widened to 1.0. docs/results.md, "The shipped
# recipe through the out-of-fold path".
#
#   /usr/bin/python3 pooled_rule_tau_grid.py docs/cv/36ep_160_balmix_oof 0 1 2 3
import sys
import numpy as np
from oof_rule import bal, decide, leave_one_round_out, melrec, prior_of, sequential, taus
D, R = sys.argv[1], [int(x) for x in sys.argv[2:]]
prior = prior_of(D, R)
for cap in (0.5, 1.0):
    for views in ('none', 'flips'):
        scores = []
        for test, (P, y), held_out in leave_one_round_out(D, R, views):
            t, b = sequential(P, y, prior, taus(cap))
            P, y = held_out
            k, k0 = decide(P, prior, t, b), decide(P, prior, t, 0)
            scores.append((bal(y, k), bal(y, k0), melrec(y, k), (k == y).mean()))
            print(f'tau <= {cap}, {views}: round {test} tau {t:.2f} bias {b:.2f}: balanced accuracy '
                  f'{scores[-1][0]:.4f} (without the floor {scores[-1][1]:.4f}), melanoma recall '
                  f'{scores[-1][2]:.3f}, accuracy {scores[-1][3]:.3f}')
        a = np.array(scores)
        print(f'tau <= {cap}, {views}: mean ± sd ' + ', '.join(
            f'{n} {m:.4f} ± {s:.4f}' for n, m, s in zip(
                ('balanced accuracy', 'without the floor', 'melanoma recall', 'accuracy'),
                a.mean(0), a.std(0, ddof=1))))
