#!/usr/bin/python3
"""Side by side: a `skinlesion train` run and a train_reference.py run of the same recipe.

    /usr/bin/python3 bench/reference/compare_runs.py CPP_RUN_DIR PYTHON_RUN_DIR

CPP_RUN_DIR is `skinlesion train --out` (train_log.jsonl, report/metrics.json);
PYTHON_RUN_DIR is train_reference.py --out (train_log.jsonl, metrics.json). Prints a
markdown table of the test metrics of each run's best epoch and of the training
throughput: the median over epochs of images per training second, and its ratio
(C++ / Python). When the two runs trained at the same time on the same machine
(started together), the ratio compares them under the same load.
"""
import json
import math
import os
import statistics
import sys

METRICS = [
    ("accuracy", "accuracy"),
    ("balanced_accuracy", "balanced accuracy"),
    ("macro_f1", "macro F1"),
    ("macro_auc", "macro AUC (one-vs-rest)"),
    ("melanoma_recall", "melanoma recall"),
    ("malignant_auc", "malignant-vs-benign AUC"),
]


def balanced_accuracy_se(metrics):
    """Standard error of balanced accuracy from the confusion matrix: the mean of K
    per-class recalls, each binomial over its class's support."""
    cm = metrics["confusion_matrix"]
    var = 0.0
    for k, row in enumerate(cm):
        n = sum(row)
        if n:
            r = row[k] / n
            var += r * (1 - r) / n
    return math.sqrt(var) / len(cm)


def load_log(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary(run, metrics_file):
    with open(os.path.join(run, metrics_file)) as f:
        metrics = json.load(f)
    log = load_log(os.path.join(run, "train_log.jsonl"))
    if not log:
        sys.exit(f"{run}: empty train_log.jsonl")
    # The best epoch is the last one marked best (each new best is marked).
    marked = [i for i, r in enumerate(log) if r.get("best")]
    best = marked[-1] if marked else len(log) - 1
    return {
        "metrics": metrics,
        "epochs": len(log),
        "best_epoch": best + 1,
        "train_seconds": sum(r["seconds"] for r in log),
        "img_s": statistics.median(r["images_per_second"] for r in log),
    }


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    cpp = summary(sys.argv[1], os.path.join("report", "metrics.json"))
    py = summary(sys.argv[2], "metrics.json")
    print("| test split | C++ (`skinlesion train`) | Python reference |")
    print("|---|---:|---:|")
    for key, name in METRICS:
        a, b = cpp["metrics"].get(key), py["metrics"].get(key)
        fmt = lambda v: "n/a" if not isinstance(v, (int, float)) else f"{v:.4f}"
        print(f"| {name} | {fmt(a)} | {fmt(b)} |")
    print(f"| images | {cpp['metrics'].get('n')} | {py['metrics'].get('n')} |")
    print(f"| epochs run (best) | {cpp['epochs']} ({cpp['best_epoch']}) | {py['epochs']} ({py['best_epoch']}) |")
    print(f"| training time (sum of epochs) | {cpp['train_seconds'] / 60:.1f} min | {py['train_seconds'] / 60:.1f} min |")
    print(f"| training img/s (median epoch) | {cpp['img_s']:.1f} | {py['img_s']:.1f} |")
    print(f"\nC++ / Python training throughput: {cpp['img_s'] / py['img_s']:.2f}x")
    diff = cpp["metrics"]["balanced_accuracy"] - py["metrics"]["balanced_accuracy"]
    se = math.hypot(balanced_accuracy_se(cpp["metrics"]), balanced_accuracy_se(py["metrics"]))
    print(f"balanced accuracy C++ - Python: {diff:+.4f}; noise (1.96 x SE of the difference, "
          f"binomial per class): +/-{1.96 * se:.4f} -> "
          f"{'within noise' if abs(diff) <= 1.96 * se else ('C++ better' if diff > 0 else 'C++ WORSE')}")


if __name__ == "__main__":
    main()
