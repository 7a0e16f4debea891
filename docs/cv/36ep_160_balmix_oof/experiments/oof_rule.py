# Shared by the numpy previews in this folder: a round's out-of-fold answers
# (fold<r>/out_of_fold_<views>.csv) and the C++ decision rule's parts
# (skinlesion/common/decision.h): scores log P - tau * log prior, a melanoma bias, and the
# sequential fit (tau for balanced accuracy, the smallest among ties, then the smallest
# melanoma bias that names 70% of the melanomas).
import csv
import json

import numpy as np

C = ['akiec', 'bcc', 'bkl', 'df', 'mel', 'nv', 'vasc']
MEL = C.index('mel')
MEL_FLOOR = 0.7
BIASES = np.round(np.arange(0, 1.5001, 0.05), 2)


def taus(cap=0.5):
    return np.round(np.arange(0, cap + 1e-4, 0.05), 2)


def load_ids(path):
    """(image ids [n], probabilities [n, 7], labels [n]) from an out-of-fold answers file."""
    with open(path, newline='') as f:
        rows = list(csv.DictReader(f))
    return ([r['image_id'] for r in rows],
            np.array([[float(r['p_' + c]) for c in C] for r in rows]),
            np.array([C.index(r['label']) for r in rows]))


def load(path):
    """(probabilities [n, 7], labels [n]) from an out-of-fold answers file."""
    return load_ids(path)[1:]


def bal(y, k):
    return np.mean([(k[y == c] == c).mean() for c in range(len(C)) if (y == c).any()])


def melrec(y, k):
    return (k[y == MEL] == MEL).mean()


def decide(P, prior, tau, b):
    s = np.log(np.maximum(P, 1e-12)) - tau * np.log(prior)
    s[:, MEL] += b
    return s.argmax(1)


def sequential(P, y, prior, tau_grid):
    t = -max((bal(y, decide(P, prior, t, 0)), -t) for t in tau_grid)[1]
    for b in BIASES:
        if melrec(y, decide(P, prior, t, b)) >= MEL_FLOOR:
            return t, b
    return t, BIASES[-1]


# The referral threshold's fit (FitRiskThreshold, skinlesion/common/referral.h): the largest
# malignancy-risk threshold whose share of malignant lesions referred has a one-sided
# Wilson lower bound (95%) at or above the target sensitivity.
MALIGNANT = [C.index('akiec'), C.index('bcc'), C.index('mel')]
Z95 = 1.6448536269514722


def risk_of(P):
    return P[:, MALIGNANT].sum(1)


def wilson_lower(k, n, z=Z95):
    if n == 0:
        return 0
    p = k / n
    d = 1 + z * z / n
    c = p + z * z / (2 * n)
    s = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (c - s) / d


def fit_risk_threshold(risk, mal, target):
    r = np.sort(risk[mal])[::-1]
    n = len(r)
    for k in range(1, n + 1):
        if wilson_lower(k, n) >= target:
            return r[k - 1]
    return r[-1]


def refer_mask(P, prior, tau, bias, threshold):
    """The served referral rule (skinlesion/common/referral.h): malignancy risk >= threshold,
    or the named class's probability < 0.5, or its margin over the most probable other class
    < 0.1 (the named class by the decision rule tau, bias)."""
    rows = np.arange(len(P))
    named = decide(P, prior, tau, bias)
    confidence = P[rows, named]
    others = P.copy()
    others[rows, named] = -1
    return (risk_of(P) >= threshold) | (confidence < 0.5) | (confidence - others.max(1) < 0.1)


def prior_of(cv_dir, rounds):
    """The training-class shares the rounds' decision rules used (the first round's)."""
    with open(f'{cv_dir}/fold{rounds[0]}_metrics.json') as f:
        return np.array(json.load(f)['decision']['prior'])


def leave_one_round_out(cv_dir, rounds, views):
    """For each round: (round, (P, y) pooled over the other rounds, (P, y) of the round)."""
    answers = {r: load(f'{cv_dir}/fold{r}/out_of_fold_{views}.csv') for r in rounds}
    for test in rounds:
        others = [answers[r] for r in rounds if r != test]
        yield test, (np.concatenate([a[0] for a in others]), np.concatenate([a[1] for a in others])), answers[test]
