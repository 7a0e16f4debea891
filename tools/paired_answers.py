"""Answers files (`skinlesion cv`, `evaluate --answers_dir`: out_of_fold_<views>.csv) read
and compared on the same lesions: rank AUC, the figures of a set of answers, and paired
bootstrap intervals of the difference between two models' figures (the same lesions
resampled for both). numpy only; imported by docs/cv/*/summary.py scripts.
"""
import csv
import os

import numpy as np


def read_answers(path):
    """(image id -> probabilities, image id -> label, classes) of one answers file."""
    with open(path) as f:
        rows = list(csv.DictReader(f))
    classes = [k[2:] for k in rows[0] if k.startswith("p_")]
    probs = {r["image_id"]: [float(r["p_" + c]) for c in classes] for r in rows}
    return probs, {r["image_id"]: r["label"] for r in rows}, classes


def answers_in(folder, views="flips"):
    """The answers file of `folder` for `views`, or the only one there is."""
    found = sorted(f for f in os.listdir(folder) if f.startswith("out_of_fold_") and f.endswith(".csv"))
    wanted = f"out_of_fold_{views}.csv"
    if wanted in found:
        return os.path.join(folder, wanted)
    if len(found) == 1:
        return os.path.join(folder, found[0])
    raise FileNotFoundError(f"no {wanted} in {folder} (found {found})")


def auc(score, positive):
    """Mann-Whitney AUC with average ranks for ties; nan without both groups."""
    n1 = int(positive.sum())
    n0 = len(positive) - n1
    if n1 == 0 or n0 == 0:
        return float("nan")
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - (counts - 1) / 2)[inverse]  # 1-based, ties averaged
    return (ranks[positive].sum() - n1 * (n1 + 1) / 2) / (n1 * n0)


def paired_intervals(figures_a, figures_b, n, resamples=1000, seed=7):
    """Point difference and 95% bootstrap interval of figures_a(idx) - figures_b(idx), where
    each takes an index array into the same n lesions and returns an array of figures."""
    everything = np.arange(n)
    point = figures_a(everything) - figures_b(everything)
    rng = np.random.default_rng(seed)
    boot = []
    for _ in range(resamples):
        i = rng.integers(0, n, n)
        boot.append(figures_a(i) - figures_b(i))
    lo, hi = np.nanpercentile(np.array(boot), [2.5, 97.5], axis=0)
    return point, lo, hi


def interval_cells(point, lo, hi):
    return " | ".join(f"{x:+.3f} [{l:+.3f}, {h:+.3f}]" for x, l, h in zip(point, lo, hi))
