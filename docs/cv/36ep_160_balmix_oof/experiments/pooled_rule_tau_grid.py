# The decision rule fitted on the pooled out-of-fold answers of the other rounds and scored
# on each round's own answers (a numpy preview of fit-thresholds --from_cv's
# leave-one-round-out check, decision rule only), with tau's grid capped at 0.5 (the C++
# fit: skinlesion/common/decision.h) or widened to 1.0. docs/results.md, "The shipped
# recipe through the out-of-fold path".
#
#   /usr/bin/python3 pooled_rule_tau_grid.py docs/cv/36ep_160_balmix_oof 0 1 2 3
import csv, json, sys
import numpy as np
C = ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']
def load(p):
    rows = list(csv.DictReader(open(p)))
    return (np.array([[float(r['p_' + c]) for c in C] for r in rows]),
            np.array([C.index(r['label']) for r in rows]))
def bal(y, k): return np.mean([(k[y == c] == c).mean() for c in range(7) if (y == c).any()])
def melrec(y, k): return (k[y == 4] == 4).mean()
def decide(P, prior, tau, b):
    s = np.log(np.maximum(P, 1e-12)) - tau * np.log(prior); s[:, 4] += b; return s.argmax(1)
biases = np.round(np.arange(0, 1.5001, 0.05), 2)
def sequential(P, y, prior, taus):
    # tau for balanced accuracy (the smallest among ties), then the smallest melanoma
    # bias that names 70% of the melanomas.
    t = -max((bal(y, decide(P, prior, t, 0)), -t) for t in taus)[1]
    for b in biases:
        if melrec(y, decide(P, prior, t, b)) >= 0.7: return t, b
    return t, biases[-1]
D, R = sys.argv[1], [int(x) for x in sys.argv[2:]]
prior = np.array(json.load(open(f'{D}/fold{R[0]}_metrics.json'))['decision']['prior'])
for cap in (0.5, 1.0):
    taus = np.round(np.arange(0, cap + 1e-4, 0.05), 2)
    for views in ('none', 'flips'):
        A = {r: load(f'{D}/fold{r}/out_of_fold_{views}.csv') for r in R}
        scores = []
        for test in R:
            P = np.concatenate([A[r][0] for r in R if r != test])
            y = np.concatenate([A[r][1] for r in R if r != test])
            t, b = sequential(P, y, prior, taus)
            P, y = A[test]
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
