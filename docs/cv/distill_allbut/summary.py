#!/usr/bin/python3
"""The table of docs/cv/distill_allbut/run.sh: the student and each teacher (and the
teachers' mean, with several) on the same lesions of the kept-out fold, rule-free (the
most probable class; the student has no fitted operating point), then paired bootstrap
intervals of the student's differences.

    /usr/bin/python3 summary.py OUT_DIR

OUT_DIR holds out_of_fold_flips.csv (the student's answers) and
teacher<k>_out_of_fold_flips.csv (each teacher's), as run.sh writes them.
"""
import glob
import json
import os
import re
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
from paired_answers import auc, interval_cells, paired_intervals, read_answers  # noqa: E402

COLUMNS = ["balanced acc. (most probable)", "macro AUC", "malignant AUC", "melanoma recall", "accuracy"]


def figures(p, labels, malignant, mel):
    decided = p.argmax(axis=1)
    k = p.shape[1]
    present = [c for c in range(k) if np.any(labels == c)]
    recalls = [np.mean(decided[labels == c] == c) for c in present]
    macro = np.nanmean([auc(p[:, c], labels == c) for c in present])
    risk = p[:, malignant].sum(axis=1)
    mel_recall = np.mean(decided[labels == mel] == mel) if np.any(labels == mel) else float("nan")
    return np.array([np.mean(recalls), macro, auc(risk, np.isin(labels, malignant)), mel_recall,
                     np.mean(decided == labels)])


def main():
    out = sys.argv[1]
    student, labels_by_id, classes = read_answers(os.path.join(out, "out_of_fold_flips.csv"))
    ids = sorted(student)
    models = {}
    for path in sorted(glob.glob(os.path.join(out, "teacher*_out_of_fold_flips.csv"))):
        name = re.fullmatch(r"(teacher\d+)_out_of_fold_flips\.csv", os.path.basename(path)).group(1)
        probs, labels, teacher_classes = read_answers(path)
        if teacher_classes != classes or sorted(probs) != ids or any(labels[i] != labels_by_id[i] for i in ids):
            sys.exit(f"{path} answers other lesions or classes than the student")
        models[name] = np.array([probs[i] for i in ids])
    if not models:
        sys.exit(f"no teacher answers in {out}")
    if len(models) > 1:
        models["teachers' mean"] = np.mean([models[n] for n in list(models)], axis=0)
    models["student"] = np.array([student[i] for i in ids])
    labels = np.array([classes.index(labels_by_id[i]) for i in ids])
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    malignant = [classes.index(c) for c in metrics.get("malignant_classes", ["akiec", "bcc", "mel"])
                 if c in classes]
    mel = classes.index("mel") if "mel" in classes else -1
    if os.path.exists(os.path.join(out, "teachers.txt")):
        print("Teachers:\n")
        for line in open(os.path.join(out, "teachers.txt")):
            print(f"- {line.strip()}")
        print()
    print(f"{len(ids)} lesions of the kept-out fold, flip views, fp32; the most probable class "
          "(no operating point).\n")
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    for name, p in models.items():
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in figures(p, labels, malignant, mel)) + " |")
    print("\nPaired differences, 95% interval of 1000 bootstrap resamples of the lesions:\n")
    print("| difference | " + " | ".join(COLUMNS) + " |")
    print("|---|" + "---:|" * len(COLUMNS))
    s = models["student"]
    for name, p in models.items():
        if name == "student":
            continue
        point, lo, hi = paired_intervals(lambda i: figures(s[i], labels[i], malignant, mel),
                                         lambda i, p=p: figures(p[i], labels[i], malignant, mel), len(ids))
        print(f"| student - {name} | {interval_cells(point, lo, hi)} |")


if __name__ == "__main__":
    main()
