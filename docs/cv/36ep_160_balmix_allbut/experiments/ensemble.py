# Would a k-fold ensemble beat one model? The two models of each round that never saw
# fold r -- the three-fold round model (../36ep_160_balmix_oof/fold<r>: 3 folds trained,
# 1 validated) and the model kept off fold r (fold<r> here: 4 folds, the shipped
# procedure) -- averaged over their calibrated probabilities, against each alone.
# Both members of a round kept fold r out, so the ensemble's answers on fold r are as
# lesion-disjoint as either member's. The decision rule (tau, melanoma bias) and the
# 95%-confidence risk threshold (target 0.90) are fitted as fit-thresholds --from_cv does
# (numpy copy: ../36ep_160_balmix_oof/experiments/oof_rule.py) on the other four rounds'
# pooled answers of the same candidate, and scored on fold r. Prints a markdown table
# (mean ± sd over the rounds) and the paired differences against the kept-out model.
#   /usr/bin/python3 docs/cv/36ep_160_balmix_allbut/experiments/ensemble.py [flips|none]
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ALLBUT = os.path.join(HERE, '..')
OOF = os.path.join(HERE, '..', '..', '36ep_160_balmix_oof')
sys.path.insert(0, os.path.join(OOF, 'experiments'))
sys.path.insert(0, os.path.join(HERE, '..', '..', '..', '..', 'bench', 'reference'))
from oof_rule import C, MALIGNANT, MEL, bal, decide, fit_risk_threshold, load_ids, prior_of, refer_mask, risk_of, sequential, taus  # noqa: E402
from train_reference import roc_auc  # noqa: E402  (the reference's one-vs-rest AUC)

views = sys.argv[1] if len(sys.argv) > 1 else 'flips'
ROUNDS = [0, 1, 2, 3, 4]
TARGET = 0.90
prior = prior_of(OOF, ROUNDS)


def answers(cv_dir, r):
    """{image_id: (probabilities [7], label)} of one round's answers."""
    ids, P, y = load_ids(os.path.join(cv_dir, f'fold{r}', f'out_of_fold_{views}.csv'))
    return {i: (p, int(label)) for i, p, label in zip(ids, P, y)}


CANDIDATES = {
    'three-fold round model': lambda a, b: a,
    'kept-out model (shipped procedure)': lambda a, b: b,
    'ensemble of both (mean probability)': lambda a, b: (a + b) / 2,
}

# Per round: (P, y) of each candidate on fold r, images in one order.
per_round = {name: {} for name in CANDIDATES}
for r in ROUNDS:
    three, kept = answers(OOF, r), answers(ALLBUT, r)
    if sorted(three) != sorted(kept):
        sys.exit(f'round {r}: the two models answered different images')
    ids = sorted(three)
    if any(three[i][1] != kept[i][1] for i in ids):
        sys.exit(f'round {r}: the two answer files disagree on a label')
    y = np.array([three[i][1] for i in ids])
    A = np.stack([three[i][0] for i in ids])
    B = np.stack([kept[i][0] for i in ids])
    for name, combine in CANDIDATES.items():
        per_round[name][r] = (combine(A, B), y)

scores = {}
for name in CANDIDATES:
    rows = []
    for test in ROUNDS:
        P = np.concatenate([per_round[name][r][0] for r in ROUNDS if r != test])
        y = np.concatenate([per_round[name][r][1] for r in ROUNDS if r != test])
        tau, bias = sequential(P, y, prior, taus())
        threshold = fit_risk_threshold(risk_of(P), np.isin(y, MALIGNANT), TARGET)
        P, y = per_round[name][test]
        k = decide(P, prior, tau, bias)
        mal = np.isin(y, MALIGNANT)
        refer = refer_mask(P, prior, tau, bias, threshold)
        rows.append([bal(y, k), np.mean([roc_auc(P[:, c], y == c) for c in range(len(C))]),
                     (k[y == MEL] == MEL).mean(), (k == y).mean(), refer[mal].mean(), refer.mean()])
    scores[name] = np.array(rows)

COLUMNS = ['balanced acc.', 'macro AUC', 'mel recall', 'accuracy', 'malignant referred', 'refer rate']
print(f'views {views}; rounds {ROUNDS}; operating point fitted on the other four rounds (target {TARGET:.2f})')
print('| candidate | ' + ' | '.join(COLUMNS) + ' |')
print('|---|' + '---|' * len(COLUMNS))
for name, s in scores.items():
    print(f'| {name} | ' + ' | '.join(f'{m:.3f} ± {d:.3f}' for m, d in zip(s.mean(0), s.std(0, ddof=1))) + ' |')
base = scores['kept-out model (shipped procedure)']
for name, s in scores.items():
    if s is base:
        continue
    d = s - base
    print(f'| {name} minus kept-out, paired | ' +
          ' | '.join(f'{m:+.3f} ({", ".join(f"{x:+.3f}" for x in col)})' for m, col in zip(d.mean(0), d.T)) + ' |')
