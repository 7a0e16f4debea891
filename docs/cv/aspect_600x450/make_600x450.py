#!/usr/bin/python3
"""Writes a copy of a HAM10000 folder whose images have the originals' 600x450 shape.

The development copy's images are 224x224, squashed (not cropped) from the 600x450
originals; the external test images a user sends are 600x450 (ISIC 2018) or another
landscape shape. Stretching each square image back to 600x450 gives the geometry an
external image has (at the development copy's detail), so a model's preprocessing can be
measured on lesions it never saw, in the shape they arrive in.

    /usr/bin/python3 make_600x450.py SRC OUT [--width 600 --height 450]

OUT mirrors SRC: every image at the same relative path (as .jpg), every .csv copied (the
Kaggle layout stays the Kaggle layout).
"""
import argparse
import os
import shutil
import sys

from PIL import Image


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("out")
    ap.add_argument("--width", type=int, default=600)
    ap.add_argument("--height", type=int, default=450)
    ap.add_argument("--quality", type=int, default=95)
    a = ap.parse_args()
    if a.width <= 0 or a.height <= 0:
        sys.exit("width and height must be positive")
    files, tables = [], []
    for folder, _, names in os.walk(a.src):
        for name in sorted(names):
            rel = os.path.relpath(os.path.join(folder, name), a.src)
            if name.lower().endswith((".jpg", ".jpeg", ".png")):
                files.append(rel)
            elif name.lower().endswith(".csv"):
                tables.append(rel)
    if not files:
        sys.exit(f"{a.src}: no .jpg or .png image")
    for rel in tables:
        os.makedirs(os.path.dirname(os.path.join(a.out, rel)), exist_ok=True)
        shutil.copy(os.path.join(a.src, rel), os.path.join(a.out, rel))
    for i, rel in enumerate(sorted(files)):
        dst = os.path.join(a.out, os.path.splitext(rel)[0] + ".jpg")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.exists(dst):
            with Image.open(os.path.join(a.src, rel)) as img:
                img.convert("RGB").resize((a.width, a.height), Image.BICUBIC).save(dst, quality=a.quality)
        if (i + 1) % 1000 == 0 or i + 1 == len(files):
            print(f"{i + 1}/{len(files)} images at {a.width}x{a.height}", file=sys.stderr)


if __name__ == "__main__":
    main()
