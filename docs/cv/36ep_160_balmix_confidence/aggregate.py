# The table of docs/results.md, "A sensitivity target with confidence", from the committed
# evaluation outputs: run from the repository root with /usr/bin/python3.
import json
import statistics as st

C = "docs/cv/36ep_160_balmix_confidence"
pairs = [(f"round {r}", f"docs/cv/36ep_160_balmix_floor/fold{r}_metrics.json" if r < 3 else f"{C}/fold{r}_point_metrics.json",
          f"{C}/fold{r}_metrics.json") for r in range(5)]
pairs += [("Rosendahl held out (24 ep)", "docs/cv/hold_rosendahl_balmix/floor_metrics.json",
           "docs/cv/hold_rosendahl_balmix/confidence_metrics.json"),
          ("vidir_modern held out (24 ep)", "docs/cv/hold_vidir_modern_balmix/floor_metrics.json",
           "docs/cv/hold_vidir_modern_balmix/confidence_metrics.json"),
          ("vidir_modern held out (36 ep)", "docs/cv/hold_vidir_modern_36/metrics.json",
           "docs/cv/hold_vidir_modern_36/confidence_metrics.json"),
          ("Rosendahl held out (36 ep)", "docs/cv/hold_rosendahl_36/point_metrics.json",
           "docs/cv/hold_rosendahl_36/metrics.json")]
KEYS = ["malignant_sensitivity", "melanoma_sensitivity", "refer_rate", "benign_specificity"]


def row(path):
    r = json.load(open(path))["referral"]
    return [r["policy"]["malignancy_risk_threshold"]] + [r[k]["value"] for k in KEYS]


rounds = []
print("| case | risk threshold point / 95% | " + " | ".join(k.replace("_", " ") for k in KEYS) + " |")
for name, point, conf in pairs:
    a, b = row(point), row(conf)
    if name.startswith("round"):
        rounds.append((a, b))
    print(f"| {name} | " + " | ".join(f"{x:.3f} / {y:.3f}" for x, y in zip(a, b)) + " |")
for i, k in enumerate(KEYS, start=1):
    for j, label in enumerate(["point", "95%"]):
        v = [pair[j][i] for pair in rounds]
        print(f"{k} {label}: {st.mean(v):.3f} ± {st.stdev(v):.3f} (lowest {min(v):.3f})")
