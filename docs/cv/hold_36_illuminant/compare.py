#!/usr/bin/python3
"""The source-held-out runs of the 36-epoch recipe side by side, per source.

Rows: session 8's model (docs/cv/hold_<source>_36, the medical preset), then each
docs/cv/hold_<source>_36_<AUG> folder that exists (run.sh: medical_illuminant, and
medical for the same preset rerun with today's code), each followed by its
_last folder (the same training's 36th epoch, SELECT=last). Single view (metrics.json) and
flip views (tta_metrics.json); every figure at the run's own rule and referral
threshold, fitted on the other sources' validation images (session 8's vidir_modern
model's threshold was fitted as a point estimate, its 95%-confidence fit is in
confidence_metrics.json there). Then the per-class recall and one-vs-rest AUC.

--seeds: the arms at one length (the _last folders), one row per seed (42, the recipe's,
and every _last_seed<N> folder run.sh SEED=N wrote), single view, and per seed the
difference medical_illuminant - medical: whether the arms differ by more than a seed
moves one arm.

    /usr/bin/python3 docs/cv/hold_36_illuminant/compare.py [--seeds] [rosendahl vidir_modern]
"""
import glob
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# The folders run.sh wrote: docs/cv, or its DOCS_OUT (HOLD_DOCS).
CV = os.environ.get("HOLD_DOCS", os.path.dirname(HERE))
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def runs(source):
    named = [("session 8, medical", f"hold_{source}_36")]
    for aug in ("medical", "medical_illuminant"):
        named.append((f"today, {aug}", f"hold_{source}_36_{aug}"))
        # The first illuminant run on Rosendahl: patience 20 stopped it (run.sh).
        named.append((f"today, {aug}, stopped after epoch 29", f"hold_{source}_36_{aug}/stopped_after_29"))
        named.append((f"today, {aug}, last epoch", f"hold_{source}_36_{aug}_last"))
        for d in sorted(glob.glob(os.path.join(CV, f"hold_{source}_36_{aug}_last_seed*"))):
            named.append((f"{aug}, last epoch, seed {d.rsplit('_seed', 1)[1]}", os.path.basename(d)))
    return [(name, os.path.join(CV, d)) for name, d in named if os.path.exists(os.path.join(CV, d, "metrics.json"))]


def row(m, epoch):
    r = m["referral"]
    return (f"{epoch} | {m['balanced_accuracy']:.3f} | {m['decision']['plain']['balanced_accuracy']:.3f} | "
            f"{m['macro_auc']:.3f} | {m['malignant_auc']:.3f} | {m['melanoma_recall']:.3f} | "
            f"{m['accuracy']:.3f} | {r['malignant_sensitivity']['value']:.3f} / {r['refer_rate']['value']:.3f} "
            f"(threshold {r['policy']['malignancy_risk_threshold']:.3f}, "
            f"{'95% confidence' if r['policy'].get('sensitivity_confidence') else 'point estimate'})")


ARMS = ("medical", "medical_illuminant")
SEED_COLUMNS = (("macro AUC", lambda m: m["macro_auc"]),
                ("malignant AUC", lambda m: m["malignant_auc"]),
                ("balanced accuracy (rule)", lambda m: m["balanced_accuracy"]),
                ("melanoma recall", lambda m: m["melanoma_recall"]),
                ("melanoma AUC", lambda m: m["per_class"]["mel"]["auc"]),
                ("naevus recall", lambda m: m["per_class"]["nv"]["recall"]),
                ("naevus AUC", lambda m: m["per_class"]["nv"]["auc"]),
                ("malignant referred", lambda m: m["referral"]["malignant_sensitivity"]["value"]),
                ("refer rate", lambda m: m["referral"]["refer_rate"]["value"]))


def cell(x, sign=""):
    """A figure, or a dash where the test images cannot give it (a class absent)."""
    return "—" if x is None else f"{x:{sign}.3f}"


def figures(m):
    return [f(m) for _, f in SEED_COLUMNS]


def seed_runs(source, arm):
    """{seed: metrics} of an arm's last-epoch runs on a source."""
    found = {}
    base = os.path.join(CV, f"hold_{source}_36_{arm}_last")
    if os.path.exists(os.path.join(base, "metrics.json")):
        found[42] = json.load(open(os.path.join(base, "metrics.json")))
    for d in glob.glob(base + "_seed*"):
        seed = re.fullmatch(r".*_seed(\d+)", d)
        if seed and os.path.exists(os.path.join(d, "metrics.json")):
            found[int(seed.group(1))] = json.load(open(os.path.join(d, "metrics.json")))
    return found


def seeds(sources):
    for source in sources:
        runs_by_arm = {arm: seed_runs(source, arm) for arm in ARMS}
        print(f"\n### {source} held out, last epoch, single view\n")
        print("| arm | seed | " + " | ".join(name for name, _ in SEED_COLUMNS) + " |")
        print("|---|---:|" + "---:|" * len(SEED_COLUMNS))
        for arm in ARMS:
            for seed, m in sorted(runs_by_arm[arm].items()):
                print(f"| {arm} | {seed} | " + " | ".join(cell(x) for x in figures(m)) + " |")
        for arm in ARMS:  # How far a seed moves one arm.
            found = runs_by_arm[arm]
            if len(found) >= 2:
                values = [figures(m) for _, m in sorted(found.items())]
                spread = [None if None in v else max(v) - min(v) for v in zip(*values)]
                print(f"| {arm}: largest - smallest over seeds | | " + " | ".join(cell(x) for x in spread) + " |")
        both = sorted(set(runs_by_arm[ARMS[0]]) & set(runs_by_arm[ARMS[1]]))
        diffs = []
        for seed in both:
            a, b = (figures(runs_by_arm[arm][seed]) for arm in ARMS)
            diffs.append([None if None in (x, y) else y - x for x, y in zip(a, b)])
            print(f"| illuminant - medical | {seed} | " + " | ".join(cell(x, "+") for x in diffs[-1]) + " |")
        if len(diffs) >= 2:
            mean = [None if None in v else sum(v) / len(v) for v in zip(*diffs)]
            print("| illuminant - medical, mean over seeds | | " + " | ".join(cell(x, "+") for x in mean) + " |")


def main():
    args = sys.argv[1:]
    if args and args[0] == "--seeds":
        seeds(args[1:] or ["rosendahl", "vidir_modern"])
        return
    for source in args or ["rosendahl", "vidir_modern"]:
        found = runs(source)
        print(f"\n### {source} held out\n")
        print("| model | views | epoch | balanced accuracy (rule) | most probable class | macro AUC | malignant AUC | "
              "melanoma recall | accuracy | malignant referred / refer rate |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name, d in found:
            epoch = json.load(open(os.path.join(d, "metrics.json")))["context"]["best_epoch"]
            for views, f in (("single", "metrics.json"), ("flips", "tta_metrics.json")):
                path = os.path.join(d, f)
                if os.path.exists(path):
                    print(f"| {name} | {views} | {row(json.load(open(path)), epoch)} |")
        print("\nPer class, single view: recall / one-vs-rest AUC (test images)\n")
        print("| model | " + " | ".join(CLASSES) + " |")
        print("|---|" + "---:|" * len(CLASSES))
        for name, d in found:
            pc = json.load(open(os.path.join(d, "metrics.json")))["per_class"]
            cells = [f"{pc[c]['recall']:.2f} / {pc[c]['auc']:.2f} ({pc[c]['support']})" if pc[c]["support"] else "—"
                     for c in CLASSES]
            print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
