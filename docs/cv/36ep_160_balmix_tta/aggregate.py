#!/usr/bin/python3
"""Tables of docs/cv/36ep_160_balmix_tta/run.sh's evaluations (none / flips / dihedral).

Reads $TTA_WORK (default /tmp/tta)/eval_<model>_<views>/metrics.json, writes summary.json
beside this script and prints a Markdown table per model group with the paired
differences against "none" (mean ± sample sd over the CV rounds).
"""
import json
import os
import statistics
import sys

WORK = os.environ.get("TTA_WORK", "/tmp/tta")
HERE = os.path.dirname(os.path.abspath(__file__))
VIEWS = ["none", "flips", "dihedral"]
ROUNDS = [f"r{r}" for r in range(5)]
HOLDS = ["hold_rosendahl_36", "hold_vidir_modern_36", "hold_rosendahl_balmix", "hold_vidir_modern_balmix"]
KEYS = ["balanced_accuracy", "macro_auc", "melanoma_recall", "malignant_auc", "accuracy", "ece",
        "referral_malignant_sensitivity", "referral_melanoma_sensitivity", "refer_rate"]


def row(path):
    m = json.load(open(path))
    ref = m["referral"]
    return {
        "balanced_accuracy": m["balanced_accuracy"], "macro_auc": m["macro_auc"],
        "melanoma_recall": m["melanoma_recall"], "malignant_auc": m["malignant_auc"],
        "accuracy": m["accuracy"], "ece": m["ece"],
        "referral_malignant_sensitivity": ref["malignant_sensitivity"]["value"],
        "referral_melanoma_sensitivity": ref["melanoma_sensitivity"]["value"],
        "refer_rate": ref["refer_rate"]["value"],
        "tau": m["decision"].get("tau", 0.0), "mel_bias": (m["decision"].get("bias") or [0] * 7)[4],
        "risk_threshold": ref["policy"]["malignancy_risk_threshold"],
    }


summary = {}
for model in ROUNDS + HOLDS:
    for v in VIEWS:
        p = os.path.join(WORK, f"eval_{model}_{v}", "metrics.json")
        if os.path.exists(p):
            summary.setdefault(model, {})[v] = row(p)
json.dump(summary, open(os.path.join(HERE, "summary.json"), "w"), indent=1, sort_keys=True)


def fmt(xs):
    if len(xs) == 1:
        return f"{xs[0]:.3f}"
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs):.3f}"


def diff(xs):
    if len(xs) == 1:
        return f"{100 * xs[0]:+.1f}"
    return f"{100 * statistics.mean(xs):+.1f} ± {100 * statistics.stdev(xs):.1f}"


print("| models | views | " + " | ".join(KEYS) + " |")
print("|---|---|" + "---:|" * len(KEYS))
for name, models in [("CV rounds", ROUNDS)] + [(h, [h]) for h in HOLDS]:
    have = [m for m in models if m in summary and all(v in summary[m] for v in VIEWS)]
    if not have:
        continue
    for v in VIEWS:
        cells = []
        for k in KEYS:
            xs = [summary[m][v][k] for m in have]
            cell = fmt(xs)
            if v != "none":
                cell += f" ({diff([summary[m][v][k] - summary[m]['none'][k] for m in have])})"
            cells.append(cell)
        print(f"| {name} ({len(have)}) | {v} | " + " | ".join(cells) + " |")
sys.stdout.flush()
