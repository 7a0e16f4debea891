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

    /usr/bin/python3 docs/cv/hold_36_illuminant/compare.py [rosendahl vidir_modern]
"""
import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CV = os.path.dirname(HERE)
CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def runs(source):
    named = [("session 8, medical", f"hold_{source}_36")]
    for aug in ("medical", "medical_illuminant"):
        named.append((f"today, {aug}", f"hold_{source}_36_{aug}"))
        # The first illuminant run on Rosendahl: patience 20 stopped it (run.sh).
        named.append((f"today, {aug}, stopped after epoch 29", f"hold_{source}_36_{aug}/stopped_after_29"))
        named.append((f"today, {aug}, last epoch", f"hold_{source}_36_{aug}_last"))
    return [(name, os.path.join(CV, d)) for name, d in named if os.path.exists(os.path.join(CV, d, "metrics.json"))]


def row(m, epoch):
    r = m["referral"]
    return (f"{epoch} | {m['balanced_accuracy']:.3f} | {m['decision']['plain']['balanced_accuracy']:.3f} | "
            f"{m['macro_auc']:.3f} | {m['malignant_auc']:.3f} | {m['melanoma_recall']:.3f} | "
            f"{m['accuracy']:.3f} | {r['malignant_sensitivity']['value']:.3f} / {r['refer_rate']['value']:.3f} "
            f"(threshold {r['policy']['malignancy_risk_threshold']:.3f}, "
            f"{'95% confidence' if r['policy'].get('sensitivity_confidence') else 'point estimate'})")


def main():
    for source in sys.argv[1:] or ["rosendahl", "vidir_modern"]:
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
