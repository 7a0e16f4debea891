#!/usr/bin/python3
"""The table of docs/cv/aspect_600x450/run.sh: one row per condition scored, how far
each wide condition's answers are from the square images' answers of the same lesions,
and paired bootstrap intervals (the same lesions resampled for both conditions) of the
differences that decide the served preprocessing.

    /usr/bin/python3 summary.py WORK_FOLD_DIR OUT_DIR [MODEL_DIR]

MODEL_DIR (default WORK_FOLD_DIR/model_resize): its manifest's decision rule names each
answer's class for the bootstrapped balanced accuracy, as `evaluate` does.
"""
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tools"))
from paired_answers import answers_in, auc, interval_cells, paired_intervals, read_answers  # noqa: E402

PAIRS = [("wide_resize", "wide_crop_before"), ("wide_resize", "wide_crop"), ("wide_crop", "wide_crop_before"),
         ("wide_resize", "wide_resize_before"), ("wide_resize", "square"), ("wide_crop_before", "square")]

ORDER = ["square", "wide_crop_before", "wide_crop", "wide_resize_before", "wide_resize"]
WHAT = {
    "square": "224x224 (the development copy)",
    "wide_crop_before": "600x450, centre square, bilinear (served until now)",
    "wide_crop": "600x450, centre square, averaged then bilinear",
    "wide_resize_before": "600x450, squashed, bilinear",
    "wide_resize": "600x450, squashed, averaged then bilinear",
}


FIGURES = [("balanced_accuracy",), ("macro_auc",), ("malignant_auc",), ("melanoma_recall",), ("accuracy",),
           ("referral", "malignant_sensitivity", "value"), ("referral", "refer_rate", "value"),
           ("ood", "lesions_rejected", "value")]


def lookup(d, *path):
    """d[path[0]][path[1]]...; nan where a model has no such figure (no operating point)."""
    for key in path:
        d = d.get(key) if isinstance(d, dict) else None
    return d if isinstance(d, (int, float)) else float("nan")


LABELS = {}  # work folder -> image id -> label, as the answers files give them


def answers(work, name):
    probs, labels, classes = read_answers(answers_in(os.path.join(work, name, "answers")))
    LABELS.setdefault(work, {}).update(labels)
    return probs, classes


def figures(p, labels, rule, malignant):
    """Balanced accuracy (the decision rule), macro AUC, malignant AUC of answers p."""
    k = p.shape[1]
    decided = np.argmax(np.log(np.maximum(p, 1e-12)) - rule["tau"] * np.log(rule["prior"]) + rule["bias"], axis=1)
    recalls = [np.mean(decided[labels == c] == c) for c in range(k) if np.any(labels == c)]
    macro = np.nanmean([auc(p[:, c], labels == c) for c in range(k)])
    risk = p[:, malignant].sum(axis=1)
    return np.array([np.mean(recalls), macro, auc(risk, np.isin(labels, malignant))])


def paired(work, names, classes, model_dir, resamples=1000, seed=7):
    m = json.load(open(os.path.join(model_dir, "manifest.json")))
    d = m.get("decision", {})
    rule = {"tau": d.get("tau", 0.0), "prior": np.array(d.get("prior", [1.0] * len(classes))),
            "bias": np.array(d.get("bias", [0.0] * len(classes)))}
    malignant = [classes.index(c) for c in m.get("malignant_classes", ["akiec", "bcc", "mel"]) if c in classes]
    ref, _ = answers(work, "square")
    ids = sorted(ref)
    labels = np.array([classes.index(LABELS[work][i]) for i in ids])
    probs = {}
    for n in names:
        got, _ = answers(work, n)
        probs[n] = np.array([got[i] for i in ids])
    print(f"\nPaired differences (first minus second), 95% interval of {resamples} bootstrap "
          f"resamples of the {len(ids)} lesions:\n")
    print("| difference | balanced acc. | macro AUC | malignant AUC |")
    print("|---|---:|---:|---:|")
    for a, b in PAIRS:
        if a not in probs or b not in probs:
            continue
        point, lo, hi = paired_intervals(lambda i: figures(probs[a][i], labels[i], rule, malignant),
                                         lambda i: figures(probs[b][i], labels[i], rule, malignant),
                                         len(ids), resamples, seed)
        print(f"| {a} - {b} | {interval_cells(point, lo, hi)} |")


def main():
    work, out = sys.argv[1:3]
    model_dir = sys.argv[3] if len(sys.argv) > 3 else os.path.join(work, "model_resize")
    names = [n for n in ORDER if os.path.exists(os.path.join(out, f"{n}_metrics.json"))]
    if "square" not in names:
        sys.exit("no square condition scored")
    ref, classes = answers(work, "square")
    mel = classes.index("mel")
    print("| condition | balanced acc. | macro AUC | malignant AUC | melanoma recall | accuracy "
          "| malignant referred | refer rate | lesions called not-a-lesion "
          "| most probable class as square | mean abs. change of P(mel) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in names:
        m = json.load(open(os.path.join(out, f"{n}_metrics.json")))
        got, _ = answers(work, n)
        ids = sorted(ref)
        assert sorted(got) == ids, n
        same = sum(max(range(len(classes)), key=ref[i].__getitem__) ==
                   max(range(len(classes)), key=got[i].__getitem__) for i in ids) / len(ids)
        dmel = sum(abs(ref[i][mel] - got[i][mel]) for i in ids) / len(ids)
        cells = [f"{lookup(m, *path):.3f}" for path in FIGURES]
        print(f"| {n}: {WHAT[n]} | {' | '.join(cells)} | {same:.3f} | {dmel:.3f} |")
    print(f"\n{len(ref)} lesions of one fold, answers under the model's test-time views, fp32.")
    paired(work, names, classes, model_dir)


if __name__ == "__main__":
    main()
