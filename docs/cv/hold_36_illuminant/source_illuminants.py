#!/usr/bin/python3
"""The colour of each HAM10000 source's light, as Shades of Gray (p 6) estimates it.

For every image: the illuminant estimate e_c = mean(x_c ** 6) ** (1/6) per channel
(x in [0, 1]), as log gains centred to a geometric mean of 1 (its colour, not its
brightness), and the mean log brightness. Prints the mean and sd per source and per
(source, class) for the classes a source has at least 20 images of, then how well the
light's colour alone (log R - log G) tells a naevus from the other classes (AUC), in the
pool and within each source. Shows how far apart the sources' lights are (what
RandomIlluminant's range must cover) and whether the light's colour tells the class (a
shortcut a model can learn from one source's naevi).

    /usr/bin/python3 docs/cv/hold_36_illuminant/source_illuminants.py [../shared/data/ham10000]
"""
import csv
import os
import sys

import numpy as np
from PIL import Image


def main():
    root = sys.argv[1] if len(sys.argv) > 1 else "../shared/data/ham10000"
    files = {}
    for part in ("HAM10000_images_part_1", "HAM10000_images_part_2"):
        folder = os.path.join(root, part)
        for name in os.listdir(folder):
            files[os.path.splitext(name)[0]] = os.path.join(folder, name)
    with open(os.path.join(root, "HAM10000_metadata.csv"), newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["image_id"] in files]
    groups = {}
    redness = {}  # source -> [(log R - log G, is a naevus)]
    for r in rows:
        x = np.asarray(Image.open(files[r["image_id"]]).convert("RGB"), dtype=np.float64) / 255.0
        e = np.log((x.reshape(-1, 3) ** 6).mean(0) ** (1 / 6))
        v = np.r_[e - e.mean(), np.log(x.mean())]
        groups.setdefault((r["dataset"], "all"), []).append(v)
        groups.setdefault((r["dataset"], r["dx"]), []).append(v)
        groups.setdefault(("all", r["dx"]), []).append(v)
        groups.setdefault(("all", "all"), []).append(v)
        for source in (r["dataset"], "all"):
            redness.setdefault(source, []).append((v[0] - v[1], r["dx"] == "nv"))
    print("| source | class | images | log R | log G | log B | sd (R, G, B) | log R - log G | log brightness |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|")
    for (source, dx), values in sorted(groups.items(), key=lambda kv: (kv[0][0] == "all", kv[0])):
        v = np.array(values)
        if len(v) < 20:
            continue
        m, s = v.mean(0), v.std(0)
        print(f"| {source} | {dx} | {len(v)} | {m[0]:+.3f} | {m[1]:+.3f} | {m[2]:+.3f} | "
              f"{s[0]:.3f}, {s[1]:.3f}, {s[2]:.3f} | {m[0] - m[1]:+.3f} | {m[3]:+.3f} |")
    print()
    print("| images of | naevi | others | AUC of log R - log G for naevus against the rest |")
    print("|---|---:|---:|---:|")
    for source, pairs in sorted(redness.items(), key=lambda kv: (kv[0] == "all", kv[0])):
        nv = np.array([x for x, is_nv in pairs if is_nv])
        rest = np.array([x for x, is_nv in pairs if not is_nv])
        if len(nv) < 20 or len(rest) < 20:
            continue
        # Mann-Whitney: the chance that a naevus's light is redder than another lesion's.
        ranks = np.argsort(np.argsort(np.r_[nv, rest])) + 1.0
        auc = (ranks[:len(nv)].sum() - len(nv) * (len(nv) + 1) / 2) / (len(nv) * len(rest))
        print(f"| {source} | {len(nv)} | {len(rest)} | {auc:.3f} |")


if __name__ == "__main__":
    main()
