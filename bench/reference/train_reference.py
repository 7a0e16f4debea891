#!/usr/bin/python3
"""Python/torchvision reference of the C++ training recipe (skinlesion/train/trainer.cc).

Run with Debian's /usr/bin/python3 (torch 1.13, torchvision 0.14, numpy; no sklearn,
no OpenCV):

    /usr/bin/python3 bench/reference/train_reference.py --config cfg.json \
        --data /work/shared/data/ham10000 --split split.csv --out outdir
    # fixtures: --data tests/fixtures/ham10000/images \
    #           --metadata tests/fixtures/ham10000/metadata_subset.csv

Inputs are the ones `skinlesion` uses: a training config JSON with the keys of
skinlesion::train::TrainConfig (unknown keys are errors, as in C++), a split CSV as
written by data::SaveSplit (image_id,lesion_id,partition,method,seed; holdout splits
with partitions train/val/test) and a HAM10000 folder (Kaggle layout or one flat
folder; metadata CSV default <data>/HAM10000_metadata.csv).

Outputs in --out: config.json (the effective config), train_log.jsonl (one record per
epoch, the C++ EpochRecord keys), best_model.pt (state_dict of the best epoch by
`monitor` on val, or of the last with select_epoch "last") and metrics.json: the test-split metrics of the best model with the
keys of eval::MetricsToJson (accuracy, balanced_accuracy, macro_f1, macro_auc,
per_class{code: {precision, recall, f1, support, auc}}, melanoma_recall, ...) plus
  images_per_second   median over epochs of training throughput (images / training
                      seconds of the epoch; validation excluded)
  seconds             wall time of the whole run (model build to test metrics)
  train_seconds       sum of the epochs' training time, best_epoch, epochs_run.
The metrics are of the uncalibrated model (temperature 1). `skinlesion train` writes
report/metrics.json after temperature scaling fitted on val, with the T = 1 values of
nll/brier/ece/accuracy under "uncalibrated"; accuracy, balanced_accuracy, F1 and
recall do not depend on T, per-class AUCs can move slightly with it.

The recipe, step by step as in trainer.cc:
  * model: torchvision <architecture>(weights=None, num_classes=7) (vit_ti_16,
    vit_s_16, vit_custom: torchvision's VisionTransformer with our widths); built
    after torch.manual_seed(seed); `dropout` >= 0 overrides the head dropout.
  * two phases: epochs < frozen_epochs train only the head (HeadKeys: fc,
    classifier[.1|.6], heads.head) at lr with the backbone's BatchNorm layers in eval
    mode; then everything, head at lr, backbone at lr * backbone_lr_factor (ViT:
    lr * layer_decay^(depth + 1 - layer id)). A fresh optimiser per phase.
  * AdamW (or SGD+Nesterov) param groups by (lr scale, decay): no weight decay for
    1-D parameters (biases, norms, class token ...).
  * per-step LR: phase 1 constant lr; phase 2 lr * LearningRateFactor(schedule, t),
    t = (epoch - frozen_epochs) + step / steps_per_epoch (schedule.cc, ported below).
  * loss: cross-entropy with label_smoothing; weighted_ce uses data::ClassWeights of
    the train labels (inverse or sqrt, normalised to mean 1 over samples) unless the
    sampler is "balanced"; focal as losses.cc.
  * mixup / CutMix (mixup_alpha, cutmix_alpha, mix_prob) as train/mix.cc, with the same
    draws in the same order: Rng(DeriveSeed({seed, 0x6D6978, epoch, step, 0})) decides
    whether and how the batch is mixed, the partners (Shuffle), lambda ~ Beta(alpha,
    alpha) (Marsaglia-Tsang gammas) and CutMix's box; the loss is lambda * loss(labels) +
    (1 - lambda) * loss(partners' labels).
  * gradient accumulation (grad_accum), clip_grad_norm_ over the trainable
    parameters, optional EMA, early stopping on `monitor` with `patience` (phase 2).
  * sampler: ShuffleSampler / ClassBalancedSampler ported bit-exactly (xoshiro256**
    seeded by DeriveSeed), so both trainers visit the images in the same order;
    torch.manual_seed(DeriveSeed({seed, epoch, 0x70c4})) per epoch as in C++.
  * data: per-sample randomness from DeriveSeed({seed, epoch, position}), so results
    do not depend on num_workers; DataLoader(num_workers, persistent workers);
    torch.set_num_threads(threads).

Preprocessing (image/preprocess.cc): the centred square of side round(shorter *
crop_fraction) (crop_fraction 1) resized to image_size (bilinear, no antialiasing,
like cv::INTER_LINEAR), then (x / 255 - ImageNet mean) / std, float32 CHW. On the
224x224 HAM10000 copy this is a plain resize.

Augmentation `medical` (image/augment.cc MakePreset), each op with its probability,
all ops on uint8 CHW tensors with torch / torchvision.transforms.functional and the
same parameter distributions as the C++ ops. Differences from the C++ pipeline:
  * random streams differ (numpy PCG64 / torch generators instead of our xoshiro),
    so the same sample gets a different (but identically distributed) augmentation;
  * JPEG decoding by PIL (libjpeg-turbo, as OpenCV here) -- may differ by a level;
  * RandomResizedCrop, resize: torch bilinear on floats + round instead of OpenCV's
    11-bit fixed-point bilinear (differences of +-1 level);
  * ShiftScaleRotate / ElasticTransform: grid_sample(bilinear, reflection,
    align_corners=True), which is BORDER_REFLECT_101 like cv::warpAffine/remap, in
    float instead of fixed point; the elastic displacement field is smoothed with a
    49-tap Gaussian (sigma 6) with reflect padding like cv::GaussianBlur(Size(0,0)),
    for images smaller than 25 px the kernel is shortened;
  * HueSaturationValue: OpenCV's 8-bit HSV (H 0..179) re-implemented in float with
    rounding; conversions may differ by one level from cv::cvtColor;
  * Clahe: OpenCV's CLAHE (8x8 tiles, clip 2.0, reflect-101 padding to a multiple of
    the grid, bilinear blend of tile LUTs) re-implemented in numpy on the L channel
    of a float CIE Lab conversion (OpenCV uses fixed-point sRGB/Lab tables);
  * GaussianNoise: continuous N(0, sigma) rounded, instead of our 4096-quantile
    table (tails beyond 3.5 sigma are not cut);
  * GaussianBlur: OpenCV's fixed 3- and 5-tap kernels, exact up to rounding.
`light` is ported the same way; `none` applies no ops; `medical_illuminant` is
`medical` with RandomIlluminant (per-channel gains through a lookup table, rounded as
cv::saturate_cast) after BrightnessContrast.

Not supported (warned and ignored): init_weights (pretrained weights), precision
fp16 (CUDA only in C++ too); device is always the CPU; no resume, no distributed.
"""
import argparse
import copy
import csv
import io
import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
import torchvision.transforms.functional as TF
from PIL import Image

CLASSES = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
MALIGNANT = {0, 1, 4}  # akiec, bcc, mel
NUM_CLASSES = 7
MASK64 = (1 << 64) - 1
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# ---------------------------------------------------------------------------
# Config: the keys and defaults of skinlesion::train::TrainConfig.

DEFAULTS = {
    "architecture": "vit_b_16", "image_size": 224, "init_weights": "", "dropout": -1.0,
    "augmentation": "medical", "sampler": "shuffle", "class_weighting": "sqrt", "samples_per_epoch": 0,
    "batch_size": 32, "grad_accum": 1, "num_workers": 2, "threads": 2,
    "epochs": 30, "frozen_epochs": 3, "optimizer": "adamw", "lr": 3e-4,
    "backbone_lr_factor": 0.1, "layer_decay": 0.75, "weight_decay": 0.05,
    "momentum": 0.9, "nesterov": True, "schedule": "cosine_restarts", "t0": 10.0,
    "t_mult": 2.0, "min_lr_factor": 0.01, "warmup_epochs": 1.0, "step_epochs": 10.0,
    "gamma": 0.1, "loss": "weighted_ce", "focal_gamma": 2.0, "label_smoothing": 0.1, "logit_adjust_tau": 1.0,
    "precision": "auto", "clip_grad_norm": 1.0, "ema_decay": 0.0, "target_sensitivity": 0.9,
    "monitor": "balanced_accuracy", "patience": 8, "select_epoch": "best", "seed": 42,
    "progress_interval_s": 10.0,
    "colour_constancy_p": 0, "resize": "shorter_side_center_crop", "mixup_alpha": 0.0, "cutmix_alpha": 0.0, "mix_prob": 1.0,
    "distill_answers": "", "distill_weight": 0.5, "distill_temperature": 2.0,
    # Read and ignored: what train fits after training (the referral rule's classes, the
    # balanced-accuracy decision rule and its recall floor, the referral threshold's
    # confidence). The reference reports the plain rule at T = 1.
    "malignant_classes": "", "balanced_decision": True, "recall_target_class": "mel",
    "recall_target": 0.7, "referral_confidence": 0.95,
}


def load_config(path):
    with open(path) as f:
        j = json.load(f)
    if not isinstance(j, dict):
        sys.exit("training config must be a JSON object")
    problems = []
    c = dict(DEFAULTS)
    for key, value in j.items():
        if key not in DEFAULTS:
            problems.append(f"unknown key '{key}'")
            continue
        d = DEFAULTS[key]
        ok = (isinstance(value, str) if isinstance(d, str)
              else isinstance(value, bool) if isinstance(d, bool)
              else (isinstance(value, (int, float)) and not isinstance(value, bool)) if isinstance(d, float)
              else (isinstance(value, int) and not isinstance(value, bool)))
        if not ok:
            problems.append(f"'{key}' has the wrong type ({type(value).__name__})")
            continue
        c[key] = float(value) if isinstance(d, float) else value
    p = problems
    if c["augmentation"] not in PRESETS:
        p.append(f"unknown augmentation '{c['augmentation']}'")
    if c["sampler"] not in ("shuffle", "balanced"):
        p.append(f"unknown sampler '{c['sampler']}'")
    if c["samples_per_epoch"] < 0:
        p.append("samples_per_epoch must be >= 0 (0: the training set's size)")
    if c["samples_per_epoch"] > 0 and c["sampler"] != "balanced":
        p.append('samples_per_epoch needs sampler "balanced" (a shuffled epoch is the training set)')
    if c["class_weighting"] not in ("inverse", "sqrt"):
        p.append(f"unknown class_weighting '{c['class_weighting']}'")
    if c["optimizer"] not in ("adamw", "sgd"):
        p.append(f"unknown optimizer '{c['optimizer']}'")
    if c["schedule"] not in ("constant", "cosine_restarts", "warmup_cosine", "step"):
        p.append(f"unknown schedule '{c['schedule']}'")
    if c["loss"] not in ("ce", "weighted_ce", "focal", "logit_adjusted"):
        p.append(f"unknown loss '{c['loss']}'")
    for key in ("mixup_alpha", "cutmix_alpha"):
        if not 0 <= c[key] <= 10:
            p.append(f"{key} must be in [0, 10]")
    if not 0 <= c["mix_prob"] <= 1:
        p.append("mix_prob must be in [0, 1]")
    if not 0 <= c["distill_weight"] <= 1:
        p.append("distill_weight must be in [0, 1]")
    if not 0 < c["distill_temperature"] <= 20:
        p.append("distill_temperature must be in (0, 20]")
    if c["batch_size"] < 1 or c["grad_accum"] < 1 or c["threads"] < 1 or c["num_workers"] < 0:
        p.append("batch_size, grad_accum, threads must be >= 1 and num_workers >= 0")
    if c["epochs"] < 1 or not 0 <= c["frozen_epochs"] <= c["epochs"]:
        p.append("epochs must be >= 1 and frozen_epochs in [0, epochs]")
    if not 16 <= c["image_size"] <= 1024:
        p.append("image_size must be in [16, 1024]")
    if c["resize"] not in ("shorter_side_center_crop", "resize"):
        p.append(f"resize must be shorter_side_center_crop or resize, got '{c['resize']}'")
    if c["select_epoch"] not in ("best", "last"):
        p.append(f"select_epoch '{c['select_epoch']}' is not best or last")
    elif c["select_epoch"] == "last" and c["patience"] > 0:
        p.append("select_epoch last runs every epoch: set patience 0")
    if p:
        sys.exit("training config: " + "; ".join(p))
    if c["init_weights"]:
        print("[reference] warning: init_weights is not supported; random initialisation", file=sys.stderr)
    if c["precision"] == "fp16":
        print("[reference] warning: fp16 autocast needs CUDA; training in fp32", file=sys.stderr)
    return c


# ---------------------------------------------------------------------------
# skinlesion/common/rng.{h,cc}: DeriveSeed and xoshiro256**, bit-exact.

def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def derive_seed(*parts):
    h = 0x2545F4914F6CDD1D
    for p in parts:
        h = mix64(h ^ mix64(p & MASK64))
    return h


def _rotl(x, k):
    return ((x << k) | (x >> (64 - k))) & MASK64


class Rng:
    def __init__(self, seed):
        x = seed & MASK64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            self.s.append(mix64(x))

    def next_u64(self):
        s = self.s
        result = (_rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = _rotl(s[3], 45)
        return result

    def uniform(self):
        return (self.next_u64() >> 11) * (2.0 ** -53)

    def uniform_int(self, n):
        threshold = ((1 << 64) - n) % n
        while True:
            r = self.next_u64()
            if r >= threshold:
                return r % n

    def bernoulli(self, p):
        return p >= 1.0 or (p > 0.0 and self.uniform() < p)

    def normal(self):
        u1 = self.uniform()
        while u1 <= 0.0:
            u1 = self.uniform()
        u2 = self.uniform()
        return math.sqrt(-2.0 * math.log(u1)) * math.cos(2.0 * math.pi * u2)


def shuffle(values, rng):
    """rng.h Shuffle: Fisher-Yates from the back, one uniform_int draw per position."""
    for i in range(len(values), 1, -1):
        j = rng.uniform_int(i)
        values[i - 1], values[j] = values[j], values[i - 1]


# ---------------------------------------------------------------------------
# skinlesion/data/sampler.cc, bit-exact.

def class_weights(labels, weighting):
    counts = np.bincount(np.asarray(labels), minlength=NUM_CLASSES).astype(np.float64)
    w = np.zeros(NUM_CLASSES)
    present = counts > 0
    w[present] = 1.0 / counts[present] if weighting == "inverse" else 1.0 / np.sqrt(counts[present])
    total = float((w * counts).sum())
    return w * (len(labels) / total)


class ShuffleSampler:
    def __init__(self, n, seed):
        self.n, self.seed = n, seed

    def epoch_indices(self, epoch):
        idx = list(range(self.n))
        shuffle(idx, Rng(derive_seed(self.seed, epoch)))
        return idx


class ClassBalancedSampler:
    def __init__(self, labels, weighting, num_samples, seed):
        self.num_samples, self.seed = num_samples, seed
        w = class_weights(labels, weighting)
        self.members = [[i for i, l in enumerate(labels) if l == c] for c in range(NUM_CLASSES)]
        self.cumulative, acc = [], 0.0
        for c in range(NUM_CLASSES):
            acc += w[c] * len(self.members[c]) / len(labels)
            self.cumulative.append(acc)

    def epoch_indices(self, epoch):
        rng = Rng(derive_seed(self.seed, epoch))
        last = NUM_CLASSES - 1
        while not self.members[last]:
            last -= 1
        out = []
        for _ in range(self.num_samples):
            u = rng.uniform()
            c = 0
            while c < last and not u < self.cumulative[c]:
                c += 1
            out.append(self.members[c][rng.uniform_int(len(self.members[c]))])
        return out


class SequentialSampler:
    def __init__(self, n):
        self.n = n

    def epoch_indices(self, epoch):
        return list(range(self.n))


class EpochSampler(torch.utils.data.Sampler):
    """Yields (epoch, position, index): the dataset seeds its randomness from it."""

    def __init__(self, base):
        self.base, self.epoch = base, 0

    def __iter__(self):
        for pos, idx in enumerate(self.base.epoch_indices(self.epoch)):
            yield (self.epoch, pos, idx)

    def __len__(self):
        return self.base.num_samples if hasattr(self.base, "num_samples") else self.base.n


# ---------------------------------------------------------------------------
# skinlesion/train/schedule.cc LearningRateFactor.

def lr_factor(c, t, total_epochs):
    mn = c["min_lr_factor"]

    def half_cosine(progress):
        return mn + (1 - mn) * 0.5 * (1 + math.cos(math.pi * progress))

    kind = c["schedule"]
    if kind == "constant":
        return 1.0
    if kind == "cosine_restarts":
        cycle, start = c["t0"], 0.0
        if c["t_mult"] == 1:
            start = math.floor(t / cycle) * cycle
        else:
            while t >= start + cycle:
                start += cycle
                cycle *= c["t_mult"]
        return half_cosine((t - start) / cycle)
    if kind == "warmup_cosine":
        warm, start_factor = c["warmup_epochs"], 0.01
        if t < warm:
            return start_factor + (1 - start_factor) * t / warm
        return half_cosine(min(1.0, (t - warm) / (total_epochs - warm)))
    if kind == "step":
        return c["gamma"] ** math.floor(t / c["step_epochs"])
    return 1.0


# ---------------------------------------------------------------------------
# Data: catalogue, split, decoding, augmentation, preprocessing.

def load_catalogue(metadata_csv, image_root):
    """Rows of the metadata (file order) that have an image: (image_id, lesion_id, label, path)."""
    exts = {".jpg": 0, ".jpeg": 1, ".png": 2}
    dirs = [os.path.join(image_root, "HAM10000_images_part_1"),
            os.path.join(image_root, "HAM10000_images_part_2"), image_root]
    index = {}
    for d_rank, d in enumerate(dirs):
        if not os.path.isdir(d):
            continue
        for name in os.listdir(d):
            stem, ext = os.path.splitext(name)
            rank = exts.get(ext.lower())
            if rank is None:
                continue
            r = d_rank * 8 + rank
            if stem not in index or r < index[stem][1]:
                index[stem] = (os.path.join(d, name), r)
    if not index:
        sys.exit(f"no .jpg or .png files in {', '.join(dirs)}")
    with open(metadata_csv, newline="") as f:
        reader = csv.reader(f)
        header = [h.strip().lower() for h in next(reader)]
        col = {h: i for i, h in enumerate(header)}
        for need in ("lesion_id", "image_id", "dx"):
            if need not in col:
                sys.exit(f"{metadata_csv}: missing column {need}")
        rows, missing = [], 0
        for rec in reader:
            if not rec:
                continue
            image_id, lesion_id = rec[col["image_id"]].strip(), rec[col["lesion_id"]].strip()
            label = CLASSES.index(rec[col["dx"]].strip().lower())
            if image_id not in index:
                missing += 1
                continue
            rows.append((image_id, lesion_id, label, index[image_id][0]))
    if missing:
        print(f"[reference] {metadata_csv}: {missing} rows without an image skipped", file=sys.stderr)
    return rows


def load_split(path, catalogue, fold=-1):
    """train/val/test of a holdout split, or of round `fold` of a k-fold split as
    data::ApplyRound makes it: test fold<fold>, val fold<(fold + 1) % k>, train the rest."""
    with open(path, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        if header != ["image_id", "lesion_id", "partition", "method", "seed"]:
            sys.exit(f"{path}: not a split file (header {header})")
        part = {}
        method = None
        for rec in reader:
            if not rec:
                continue
            part[rec[0]] = (rec[1], rec[2])
            method = rec[3]
    if method is None or not (method.startswith("holdout:") or method.startswith("kfold:")):
        sys.exit(f"{path}: only holdout and k-fold splits are supported, got {method}")
    k = int(method.split(":")[1]) if method.startswith("kfold:") else 0
    if k and not 0 <= fold < k:
        sys.exit(f"{path} is {method}: choose a round with --fold from 0 to {k - 1}")
    if k and k < 3:
        sys.exit(f"a k-fold round needs k >= 3, got {method}")
    if not k and fold >= 0:
        sys.exit(f"--fold given but {path} is {method}, not k-fold")
    if k:
        role = {f"fold{fold}": "test", f"fold{(fold + 1) % k}": "val"}
        part = {i: (lesion, role.get(p, "train")) for i, (lesion, p) in part.items()}
    ids = set()
    for image_id, lesion_id, _, _ in catalogue:
        ids.add(image_id)
        if image_id not in part:
            sys.exit(f"image {image_id} of the catalogue is not in the split")
        if part[image_id][0] != lesion_id:
            sys.exit(f"image {image_id} belongs to lesion {lesion_id} in the catalogue but to "
                     f"{part[image_id][0]} in the split")
    extra = [i for i in part if i not in ids]
    if extra:
        sys.exit(f"the split names image {extra[0]} which is not in the catalogue ({len(extra)} such images)")
    out = {"train": [], "val": [], "test": []}
    for s in catalogue:
        out[part[s[0]][1]].append(s)
    return out


def decode(path):
    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # uint8 CHW


def to_u8(x):
    return x.round().clamp_(0, 255).to(torch.uint8)


def resize_u8(img, h, w):
    if img.shape[1] == h and img.shape[2] == w:
        return img
    return TF.resize(img, [h, w], interpolation=TF.InterpolationMode.BILINEAR, antialias=False)


def warp_reflect101(img, src_x, src_y):
    """Bilinear sampling of img (uint8 CHW) at float pixel positions, reflect-101 border."""
    _, h, w = img.shape
    gx = src_x * (2.0 / max(w - 1, 1)) - 1.0
    gy = src_y * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1).unsqueeze(0).float()
    out = F.grid_sample(img.unsqueeze(0).float(), grid, mode="bilinear", padding_mode="reflection",
                        align_corners=True)
    return to_u8(out[0])


def rgb_to_hsv_cv(img):
    """OpenCV 8-bit RGB2HSV: H in 0..179 (2 degrees), S and V 0..255 (float, rounded)."""
    x = img.float()
    r, g, b = x[0], x[1], x[2]
    v, _ = x.max(0)
    mn, _ = x.min(0)
    diff = v - mn
    s = torch.where(v > 0, 255.0 * diff / v.clamp(min=1), torch.zeros_like(v))
    d = diff.clamp(min=1e-6)
    h = torch.where(v == r, 60.0 * (g - b) / d,
                    torch.where(v == g, 120.0 + 60.0 * (b - r) / d, 240.0 + 60.0 * (r - g) / d))
    h = torch.where(diff == 0, torch.zeros_like(h), h)
    h = torch.where(h < 0, h + 360.0, h)
    return (h / 2).round() % 180, s.round(), v


def hsv_to_rgb_cv(h, s, v):
    h = h * 2.0 / 60.0  # sector units
    s = s / 255.0
    i = torch.floor(h) % 6
    f = h - torch.floor(h)
    p = v * (1 - s)
    q = v * (1 - s * f)
    t = v * (1 - s * (1 - f))
    r = torch.stack([v, q, p, p, t, v])
    g = torch.stack([t, v, v, q, p, p])
    b = torch.stack([p, p, t, v, v, q])
    idx = i.long().unsqueeze(0)
    out = torch.stack([r.gather(0, idx)[0], g.gather(0, idx)[0], b.gather(0, idx)[0]])
    return to_u8(out)


def _srgb_to_lab(rgb):  # float HxWx3 in [0,1] -> L (0..100), a, b
    lin = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    m = np.array([[0.412453, 0.357580, 0.180423], [0.212671, 0.715160, 0.072169],
                  [0.019334, 0.119193, 0.950227]])
    xyz = lin @ m.T
    xyz = xyz / np.array([0.950456, 1.0, 1.088754])
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    L = np.where(xyz[..., 1] > 0.008856, 116.0 * f[..., 1] - 16.0, 903.3 * xyz[..., 1])
    return L, 500.0 * (f[..., 0] - f[..., 1]), 200.0 * (f[..., 1] - f[..., 2])


def _lab_to_srgb(L, a, b):
    fy = (L + 16.0) / 116.0
    fx, fz = fy + a / 500.0, fy - b / 200.0

    def finv(t):
        return np.where(t > 0.206893, t ** 3, (t - 16.0 / 116.0) / 7.787)

    xyz = np.stack([finv(fx), finv(fy), finv(fz)], -1) * np.array([0.950456, 1.0, 1.088754])
    m = np.array([[3.240479, -1.53715, -0.498535], [-0.969256, 1.875991, 0.041556],
                  [0.055648, -0.204043, 1.057311]])
    lin = np.clip(xyz @ m.T, 0, 1)
    return np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)


def clahe_u8(gray, clip_limit, grid):
    """OpenCV's CLAHE on a uint8 HxW numpy image."""
    h, w = gray.shape
    pad_h, pad_w = (-h) % grid, (-w) % grid
    src = np.pad(gray, ((0, pad_h), (0, pad_w)), mode="reflect") if (pad_h or pad_w) else gray
    th, tw = src.shape[0] // grid, src.shape[1] // grid
    area = th * tw
    clip = max(int(clip_limit * area / 256), 1)
    luts = np.zeros((grid, grid, 256), np.uint8)
    scale = 255.0 / area
    for ty in range(grid):
        for tx in range(grid):
            tile = src[ty * th:(ty + 1) * th, tx * tw:(tx + 1) * tw]
            hist = np.bincount(tile.ravel(), minlength=256).astype(np.int64)
            excess = int(np.maximum(hist - clip, 0).sum())
            hist = np.minimum(hist, clip)
            hist += excess // 256
            residual = excess - (excess // 256) * 256
            if residual:
                step = max(256 // residual, 1)
                for i in range(0, 256, step):
                    if residual <= 0:
                        break
                    hist[i] += 1
                    residual -= 1
            luts[ty, tx] = np.clip(np.rint(np.cumsum(hist) * scale), 0, 255).astype(np.uint8)
    # Bilinear blend of the four nearest tile LUTs (tile centres), per pixel.
    ys = (np.arange(h) + 0.5) / th - 0.5
    xs = (np.arange(w) + 0.5) / tw - 0.5
    y1 = np.floor(ys).astype(int)
    x1 = np.floor(xs).astype(int)
    wy = (ys - y1)[:, None]
    wx = (xs - x1)[None, :]
    y0c, y1c = np.clip(y1, 0, grid - 1), np.clip(y1 + 1, 0, grid - 1)
    x0c, x1c = np.clip(x1, 0, grid - 1), np.clip(x1 + 1, 0, grid - 1)
    g = gray.astype(np.int64)
    v00 = luts[y0c[:, None], x0c[None, :], g].astype(np.float32)
    v01 = luts[y0c[:, None], x1c[None, :], g].astype(np.float32)
    v10 = luts[y1c[:, None], x0c[None, :], g].astype(np.float32)
    v11 = luts[y1c[:, None], x1c[None, :], g].astype(np.float32)
    out = (v00 * (1 - wx) + v01 * wx) * (1 - wy) + (v10 * (1 - wx) + v11 * wx) * wy
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def gaussian_blur_float(x, sigma, ksize):
    """Separable Gaussian of a float HxW tensor, reflect-101 border."""
    h, w = x.shape
    ksize = min(ksize, 2 * (min(h, w) - 1) - 1) | 1
    r = ksize // 2
    t = torch.arange(ksize, dtype=torch.float64) - r
    k = torch.exp(-t * t / (2 * sigma * sigma))
    k = (k / k.sum()).float()
    y = F.pad(x[None, None], (r, r, 0, 0), mode="reflect")
    y = F.conv2d(y, k.view(1, 1, 1, -1))
    y = F.pad(y, (0, 0, r, r), mode="reflect")
    return F.conv2d(y, k.view(1, 1, -1, 1))[0, 0]


class Op:
    def __init__(self, p):
        self.p = p

    def apply(self, img, rng):
        if self.p >= 1.0 or (self.p > 0.0 and rng.random() < self.p):
            return self.transform(img, rng)
        return self.skipped(img)

    def skipped(self, img):
        return img


class RandomResizedCrop(Op):
    def __init__(self, size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3), p=1.0):
        super().__init__(p)
        self.size, self.scale, self.ratio = size, scale, ratio

    def transform(self, img, rng):
        _, rows, cols = img.shape
        area = rows * cols
        lo, hi = math.log(self.ratio[0]), math.log(self.ratio[1])
        crop = None
        for _ in range(10):
            target = area * rng.uniform(*self.scale)
            aspect = math.exp(rng.uniform(lo, hi))
            w = int(round(math.sqrt(target * aspect)))
            h = int(round(math.sqrt(target / aspect)))
            if 0 < w <= cols and 0 < h <= rows:
                y = int(rng.integers(rows - h + 1))
                x = int(rng.integers(cols - w + 1))
                crop = (y, x, h, w)
                break
        if crop is None:
            in_ratio = cols / rows
            w, h = cols, rows
            if in_ratio < self.ratio[0]:
                h = int(round(w / self.ratio[0]))
            elif in_ratio > self.ratio[1]:
                w = int(round(h * self.ratio[1]))
            w, h = min(max(w, 1), cols), min(max(h, 1), rows)
            crop = ((rows - h) // 2, (cols - w) // 2, h, w)
        y, x, h, w = crop
        return resize_u8(img[:, y:y + h, x:x + w], self.size, self.size)

    def skipped(self, img):
        return resize_u8(img, self.size, self.size)


class HorizontalFlip(Op):
    def transform(self, img, rng):
        return img.flip(-1)


class VerticalFlip(Op):
    def transform(self, img, rng):
        return img.flip(-2)


class RandomRotate90(Op):
    def transform(self, img, rng):
        k = int(rng.integers(4))
        return torch.rot90(img, k, dims=(1, 2)) if k else img


class ShiftScaleRotate(Op):
    def __init__(self, shift, scale, rotate, p):
        super().__init__(p)
        self.shift, self.scale, self.rotate = shift, scale, rotate

    def transform(self, img, rng):
        _, rows, cols = img.shape
        angle = rng.uniform(-self.rotate, self.rotate)
        scale = 1.0 + rng.uniform(-self.scale, self.scale)
        dx = rng.uniform(-self.shift, self.shift) * cols
        dy = rng.uniform(-self.shift, self.shift) * rows
        # cv::getRotationMatrix2D(center, angle, scale) + shift; sample at M^-1 (x, y).
        cx, cy = (cols - 1) / 2.0, (rows - 1) / 2.0
        a = math.radians(angle)
        al, be = scale * math.cos(a), scale * math.sin(a)
        m = np.array([[al, be, (1 - al) * cx - be * cy + dx],
                      [-be, al, be * cx + (1 - al) * cy + dy], [0, 0, 1]])
        inv = np.linalg.inv(m)
        ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float64),
                                torch.arange(cols, dtype=torch.float64), indexing="ij")
        sx = inv[0, 0] * xs + inv[0, 1] * ys + inv[0, 2]
        sy = inv[1, 0] * xs + inv[1, 1] * ys + inv[1, 2]
        return warp_reflect101(img, sx, sy)


class BrightnessContrast(Op):
    def __init__(self, brightness, contrast, p):
        super().__init__(p)
        self.brightness, self.contrast = brightness, contrast

    def transform(self, img, rng):
        alpha = 1.0 + rng.uniform(-self.contrast, self.contrast)
        beta = rng.uniform(-self.brightness, self.brightness) * 255.0
        lut = to_u8(torch.arange(256, dtype=torch.float64) * alpha + beta)
        return lut[img.long()]


class RandomIlluminant(Op):
    """Per-channel log gains uniform in [-limit, limit], centred to a product of 1."""

    def __init__(self, limit, p):
        super().__init__(p)
        self.limit = limit

    def transform(self, img, rng):
        log_gains = np.array([rng.uniform(-self.limit, self.limit) for _ in range(3)])
        gains = np.exp(log_gains - log_gains.mean())
        levels = torch.arange(256, dtype=torch.float64)
        return torch.stack([to_u8(levels * g)[img[c].long()] for c, g in enumerate(gains)])


class HueSaturationValue(Op):
    def __init__(self, hue, sat, val, p):
        super().__init__(p)
        self.hue, self.sat, self.val = hue, sat, val

    def transform(self, img, rng):
        hue = int(rng.integers(-self.hue, self.hue + 1))
        sat = int(rng.integers(-self.sat, self.sat + 1))
        val = int(rng.integers(-self.val, self.val + 1))
        if hue == 0 and sat == 0 and val == 0:
            return img
        h, s, v = rgb_to_hsv_cv(img)
        h = (h + (hue % 180)) % 180
        s = torch.where(s == 0, s, (s + sat).clamp(0, 255))
        v = (v + val).clamp(0, 255)
        return hsv_to_rgb_cv(h, s, v)


class Clahe(Op):
    def __init__(self, clip, grid, p):
        super().__init__(p)
        self.clip, self.grid = clip, grid

    def transform(self, img, rng):
        rgb = img.permute(1, 2, 0).numpy().astype(np.float64) / 255.0
        L, a, b = _srgb_to_lab(rgb)
        l8 = np.clip(np.rint(L * 255.0 / 100.0), 0, 255).astype(np.uint8)
        l8 = clahe_u8(l8, self.clip, self.grid)
        out = _lab_to_srgb(l8.astype(np.float64) * 100.0 / 255.0, a, b)
        return torch.from_numpy(np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)).permute(2, 0, 1).contiguous()


class ElasticTransform(Op):
    def __init__(self, alpha, sigma, p):
        super().__init__(p)
        self.alpha, self.sigma = alpha, sigma

    def transform(self, img, rng):
        _, rows, cols = img.shape
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        ksize = int(round(self.sigma * 4 * 2 + 1)) | 1  # cv::GaussianBlur(Size(0, 0)) on CV_32F
        dx = gaussian_blur_float(torch.rand(rows, cols, generator=gen) * 2 - 1, self.sigma, ksize)
        dy = gaussian_blur_float(torch.rand(rows, cols, generator=gen) * 2 - 1, self.sigma, ksize)
        ys, xs = torch.meshgrid(torch.arange(rows, dtype=torch.float32),
                                torch.arange(cols, dtype=torch.float32), indexing="ij")
        return warp_reflect101(img, xs + self.alpha * dx, ys + self.alpha * dy)


class GaussianBlur(Op):
    KERNELS = {3: [0.25, 0.5, 0.25], 5: [0.0625, 0.25, 0.375, 0.25, 0.0625]}

    def __init__(self, kmin, kmax, p):
        super().__init__(p)
        self.kmin = kmin | 1
        self.kmax = kmax if kmax % 2 else kmax - 1

    def transform(self, img, rng):
        k = self.kmin + 2 * int(rng.integers(0, (self.kmax - self.kmin) // 2 + 1))
        if k == 1:
            return img
        if k in self.KERNELS:
            kern = torch.tensor(self.KERNELS[k])
        else:
            sigma = 0.3 * ((k - 1) * 0.5 - 1) + 0.8
            t = torch.arange(k, dtype=torch.float64) - k // 2
            kern = torch.exp(-t * t / (2 * sigma * sigma))
            kern = (kern / kern.sum()).float()
        r = k // 2
        x = F.pad(img.float().unsqueeze(0), (r, r, r, r), mode="reflect")
        x = F.conv2d(x, kern.view(1, 1, 1, -1).repeat(3, 1, 1, 1), groups=3)
        x = F.conv2d(x, kern.view(1, 1, -1, 1).repeat(3, 1, 1, 1), groups=3)
        return to_u8(x[0])


class GaussianNoise(Op):
    def __init__(self, smin, smax, p):
        super().__init__(p)
        self.smin, self.smax = smin, smax

    def transform(self, img, rng):
        sigma = rng.uniform(self.smin, self.smax)
        gen = torch.Generator().manual_seed(int(rng.integers(1 << 62)))
        noise = (torch.randn(img.shape, generator=gen) * sigma).round()
        return to_u8(img.float() + noise)


class CoarseDropout(Op):
    def __init__(self, max_holes, frac, min_holes, fill, p):
        super().__init__(p)
        self.max_holes, self.frac, self.min_holes, self.fill = max_holes, frac, min_holes, fill

    def transform(self, img, rng):
        _, rows, cols = img.shape
        img = img.clone()
        holes = int(rng.integers(self.min_holes, self.max_holes + 1))
        max_h = min(max(int(round(self.frac * rows)), 1), rows)
        max_w = min(max(int(round(self.frac * cols)), 1), cols)
        for _ in range(holes):
            h = int(rng.integers(1, max_h + 1))
            w = int(rng.integers(1, max_w + 1))
            y = int(rng.integers(0, rows - h + 1))
            x = int(rng.integers(0, cols - w + 1))
            img[:, y:y + h, x:x + w] = self.fill
        return img


PRESETS = ("none", "light", "medical", "medical_illuminant")  # image/augment.cc PresetNames()


def make_preset(name, size):
    if name == "none":
        return []
    if name == "light":
        return [HorizontalFlip(0.5), VerticalFlip(0.5), ShiftScaleRotate(0.0, 0.0, 15.0, 0.5),
                BrightnessContrast(0.1, 0.1, 0.5)]
    if name in ("medical", "medical_illuminant"):
        illuminant = [RandomIlluminant(0.2, 0.7)] if name == "medical_illuminant" else []
        return [RandomResizedCrop(size, (0.8, 1.0), (3 / 4, 4 / 3), 1.0),
                HorizontalFlip(0.5), VerticalFlip(0.5), RandomRotate90(0.5),
                ShiftScaleRotate(0.05, 0.1, 30.0, 0.5), BrightnessContrast(0.2, 0.2, 0.5)] + illuminant + [
                HueSaturationValue(10, 20, 10, 0.3), Clahe(2.0, 8, 0.3),
                ElasticTransform(120.0, 6.0, 0.2), GaussianBlur(3, 5, 0.1),
                GaussianNoise(3.0, 7.0, 0.2), CoarseDropout(8, 0.08, 1, 0, 0.2)]
    raise ValueError(f"unknown augmentation preset '{name}'")


def shades_of_gray_gains(img, p):
    """image/preprocess.cc ShadesOfGrayGains: per-channel gains mean(e) / e_c with
    e_c = (mean of (x_c / 255)^p)^(1/p) over the resized uint8 image, clamped to [1/3, 3]."""
    x = img.double().div(255.0)
    e = x.pow(p).mean(dim=(1, 2)).pow(1.0 / p)
    mean_e = e.mean().item()
    if not mean_e > 1e-6:
        return torch.ones(3)
    return (mean_e / e.clamp(min=1e-6)).clamp(1.0 / 3, 3.0).float()


def preprocess(img, size, colour_constancy_p=0, resize="shorter_side_center_crop"):
    """Centred square of the shorter side (or, with resize "resize", the whole image),
    bilinear resize, Shades of Gray colour constancy when p > 0 (values not clipped),
    ImageNet normalisation."""
    _, rows, cols = img.shape
    if resize != "resize":
        side = min(rows, cols)
        y, x = (rows - side) // 2, (cols - side) // 2
        img = img[:, y:y + side, x:x + side]
    img = resize_u8(img, size, size)
    x = img.float().div_(255.0)
    if colour_constancy_p > 0:
        x = x * shades_of_gray_gains(img, colour_constancy_p).view(3, 1, 1)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return (x - mean) / std


class LesionDataset(torch.utils.data.Dataset):
    def __init__(self, samples, augmentation, size, seed, colour_constancy_p=0,
                 resize="shorter_side_center_crop", teacher=None):
        self.samples, self.size, self.seed = samples, size, seed
        self.teacher = teacher  # [n, classes] teachers' answers (distillation) or None.
        self.colour_constancy_p, self.resize = colour_constancy_p, resize
        self.ops = make_preset(augmentation, size)

    def __len__(self):
        return len(self.samples)

    def __getitem__(self, key):
        epoch, pos, idx = key
        _, _, label, path = self.samples[idx]
        img = decode(path)
        if self.ops:
            rng = np.random.Generator(np.random.PCG64(derive_seed(self.seed, epoch, pos)))
            for op in self.ops:
                img = op.apply(img, rng)
        x = preprocess(img, self.size, self.colour_constancy_p, self.resize)
        return (x, (label, self.teacher[idx])) if self.teacher is not None else (x, label)


# ---------------------------------------------------------------------------
# Models and parameter groups.

def build_model(c):
    arch, size, dropout = c["architecture"], c["image_size"], c["dropout"]
    tv = torchvision.models
    vit_widths = {"vit_ti_16": (12, 3, 192, 768), "vit_s_16": (12, 6, 384, 1536),
                  "vit_custom": (4, 3, 192, 768)}
    if arch in ("vit_b_16", "vit_l_16"):
        return getattr(tv, arch)(weights=None, num_classes=NUM_CLASSES, image_size=size,
                                 dropout=max(dropout, 0.0))
    if arch in vit_widths:
        layers, heads, hidden, mlp = vit_widths[arch]
        return tv.vision_transformer.VisionTransformer(
            image_size=size, patch_size=16, num_layers=layers, num_heads=heads, hidden_dim=hidden,
            mlp_dim=mlp, dropout=max(dropout, 0.0), num_classes=NUM_CLASSES)
    if not hasattr(tv, arch) or not (arch.startswith(("resnet", "densenet", "efficientnet_b", "vgg"))):
        sys.exit(f"unknown architecture '{arch}'")
    model = getattr(tv, arch)(weights=None, num_classes=NUM_CLASSES)
    if dropout >= 0:
        if arch.startswith("efficientnet"):
            model.classifier[0].p = dropout
        elif arch.startswith("vgg"):
            model.classifier[2].p = dropout
            model.classifier[5].p = dropout
        elif dropout > 0:  # resnet, densenet: dropout before the classifier, as in C++.
            head = model.fc if arch.startswith("resnet") else model.classifier
            head.register_forward_pre_hook(
                lambda m, inp: (F.dropout(inp[0], dropout, m.training),))
    return model


def head_keys(arch):
    if arch.startswith("resnet"):
        return {"fc.weight", "fc.bias"}
    if arch.startswith("densenet"):
        return {"classifier.weight", "classifier.bias"}
    if arch.startswith("efficientnet"):
        return {"classifier.1.weight", "classifier.1.bias"}
    if arch.startswith("vgg"):
        return {"classifier.6.weight", "classifier.6.bias"}
    return {"heads.head.weight", "heads.head.bias"}


def vit_depth(model):
    prefix, depth = "encoder.layers.encoder_layer_", 0
    for name, _ in model.named_parameters():
        if name.startswith(prefix):
            depth = max(depth, int(name[len(prefix):].split(".")[0]) + 1)
    return depth


def vit_layer_id(name, depth):
    if name.startswith("conv_proj") or name in ("class_token", "encoder.pos_embedding"):
        return 0
    prefix = "encoder.layers.encoder_layer_"
    if name.startswith(prefix):
        return int(name[len(prefix):].split(".")[0]) + 1
    return depth + 1


def build_optimizer(model, frozen, c):
    """trainer.cc BuildGroups + MakeOptimizer: returns (optimizer, lr scale per group)."""
    head = head_keys(c["architecture"])
    depth = vit_depth(model)
    buckets = {}
    for name, p in model.named_parameters():
        is_head = name in head
        p.requires_grad_(not frozen or is_head)
        if frozen and not is_head:
            continue
        scale = 1.0
        if not is_head:
            scale = c["layer_decay"] ** (depth + 1 - vit_layer_id(name, depth)) if depth > 0 \
                else c["backbone_lr_factor"]
        buckets.setdefault((scale, p.dim() > 1), []).append(p)
    groups, scales = [], []
    for (scale, decay), params in sorted(buckets.items()):
        groups.append({"params": params, "lr": c["lr"] * scale,
                       "weight_decay": c["weight_decay"] if decay else 0.0})
        scales.append(scale)
    if c["optimizer"] == "sgd":
        opt = torch.optim.SGD(groups, lr=c["lr"], momentum=c["momentum"],
                              nesterov=c["nesterov"] and c["momentum"] > 0)
    else:
        opt = torch.optim.AdamW(groups, lr=c["lr"])
    return opt, scales


def set_train_mode(model, frozen):
    model.train(True)
    if not frozen:
        return
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.BatchNorm2d) and not name.startswith(("classifier", "fc", "heads")):
            m.eval()


def distillation_loss(logits, q, temperature):
    """DistillationLoss: T^2 * mean KL(softmax(log q / T) || softmax(z / T))."""
    log_q = torch.log_softmax(torch.log(q.float().clamp_min(1e-12)) / temperature, 1)
    log_p = torch.log_softmax(logits.float() / temperature, 1)
    return (log_q.exp() * (log_q - log_p)).sum(1).mean() * temperature * temperature


def load_teacher(c, train):
    """Trainer::SetUpTeacher: the mean answer of the distill_answers files for every
    training image ([n, classes]); None without distillation."""
    if not c["distill_answers"]:
        return None
    sums, labels = {}, {}
    for path in (p.strip() for p in c["distill_answers"].split(":") if p.strip()):
        with open(path, newline="") as f:
            for r in csv.DictReader(f):
                probs = [float(r["p_" + k]) for k in CLASSES]
                total, teachers = sums.get(r["image_id"], ([0.0] * NUM_CLASSES, 0))
                sums[r["image_id"]] = ([a + b for a, b in zip(total, probs)], teachers + 1)
                labels.setdefault(r["image_id"], CLASSES.index(r["label"]))
    missing = [s[0] for s in train if s[0] not in sums]
    if missing:
        sys.exit(f"distill_answers: no teacher answer for {len(missing)} of {len(train)} training images "
                 f"({', '.join(missing[:3])}); every training image needs one")
    relabelled = [s[0] for s in train if labels[s[0]] != s[2]]
    if relabelled:
        sys.exit(f"distill_answers: {len(relabelled)} training images carry another label in the answers "
                 f"({', '.join(relabelled[:3])}): answers of other data")
    return torch.tensor([[p / sums[s[0]][1] for p in sums[s[0]][0]] for s in train], dtype=torch.float32)


def compute_loss(logits, y, c, weights, log_prior=None):
    z = logits.float()
    if c["loss"] == "logit_adjusted":
        return F.cross_entropy(z + c["logit_adjust_tau"] * log_prior, y, label_smoothing=c["label_smoothing"])
    if c["loss"] != "focal":
        return F.cross_entropy(z, y, weight=weights, label_smoothing=c["label_smoothing"])
    log_p = torch.log_softmax(z, 1)
    log_pt = log_p.gather(1, y.unsqueeze(1)).squeeze(1)
    pt = log_pt.exp()
    loss = -torch.pow(1 - pt, c["focal_gamma"]) * log_pt
    eps = c["label_smoothing"]
    if eps > 0:
        loss = (1 - eps) * loss - eps * torch.pow(1 - pt, c["focal_gamma"]) * log_p.mean(1)
    if weights is not None:
        w = weights.index_select(0, y)
        return (loss * w).sum() / w.sum()
    return loss.mean()


# ---------------------------------------------------------------------------
# skinlesion/train/mix.cc: mixup and CutMix with the same draws in the same order.

MIX_SEED_TAG = 0x6D6978  # "mix", as trainer.cc


def sample_gamma(shape, rng):
    """Marsaglia & Tsang for shape >= 1; shape < 1 through Gamma(shape + 1) * U^(1/shape)."""
    if shape < 1.0:
        u = rng.uniform()
        while u <= 0.0:
            u = rng.uniform()
        return sample_gamma(shape + 1.0, rng) * math.pow(u, 1.0 / shape)
    d = shape - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    while True:
        while True:
            x = rng.normal()
            v = 1.0 + c * x
            if v > 0.0:
                break
        v = v * v * v
        u = rng.uniform()
        if u < 1.0 - 0.0331 * x * x * x * x:
            return d * v
        if u > 0.0 and math.log(u) < 0.5 * x * x + d * (1.0 - v + math.log(v)):
            return d * v


def sample_symmetric_beta(a, rng):
    x = sample_gamma(a, rng)
    y = sample_gamma(a, rng)
    return x / (x + y) if x + y > 0 else 0.5


def _llround(x):
    return int(math.floor(x + 0.5)) if x >= 0 else -int(math.floor(-x + 0.5))


def mix_batch(x, y, c, rng):
    """MixBatch: (images, partner labels or None, lambda, partner of each row or None)."""
    n = x.shape[0]
    enabled = (c["mixup_alpha"] > 0 or c["cutmix_alpha"] > 0) and c["mix_prob"] > 0
    if not enabled or n < 2 or not rng.bernoulli(c["mix_prob"]):
        return x, None, 1.0, None
    if c["mixup_alpha"] > 0 and c["cutmix_alpha"] > 0:
        cutmix = rng.bernoulli(0.5)
    else:
        cutmix = c["cutmix_alpha"] > 0
    order = list(range(n))
    shuffle(order, rng)
    perm = torch.tensor(order, dtype=torch.int64)
    partner = y.index_select(0, perm)
    if not cutmix:
        lam = sample_symmetric_beta(c["mixup_alpha"], rng)
        return x * lam + x.index_select(0, perm) * (1.0 - lam), partner, lam, perm
    h, w = x.shape[2], x.shape[3]
    cut = math.sqrt(1.0 - sample_symmetric_beta(c["cutmix_alpha"], rng))
    ch, cw = _llround(h * cut), _llround(w * cut)
    cy, cx = rng.uniform_int(h), rng.uniform_int(w)
    y0, y1 = min(max(cy - ch // 2, 0), h), min(max(cy + (ch - ch // 2), 0), h)
    x0, x1 = min(max(cx - cw // 2, 0), w), min(max(cx + (cw - cw // 2), 0), w)
    out = x.clone()
    if y1 > y0 and x1 > x0:
        out[:, :, y0:y1, x0:x1] = x[:, :, y0:y1, x0:x1].index_select(0, perm)
    return out, partner, 1.0 - (y1 - y0) * (x1 - x0) / (h * w), perm


# ---------------------------------------------------------------------------
# Metrics: skinlesion/eval/metrics.cc in numpy.

def roc_auc(scores, positive):
    """One-vs-rest AUC by Mann-Whitney U with average ranks for ties; NaN if undefined."""
    scores = np.asarray(scores, np.float64)
    positive = np.asarray(positive, bool)
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    ranks = np.empty(len(s))
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and s[j + 1] == s[i]:
            j += 1
        ranks[i:j + 1] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = ranks[positive[order]].sum()
    return float((rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def safe_div(a, b):
    return a / b if b > 0 else 0.0


def compute_metrics(labels, probs):
    """labels int [N], probs float32 [N, 7] -> dict with eval::MetricsToJson's keys."""
    labels = np.asarray(labels, np.int64)
    probs = np.asarray(probs, np.float32)
    n = len(labels)
    pred = probs.argmax(1)
    conf = np.zeros((NUM_CLASSES, NUM_CLASSES), np.int64)
    np.add.at(conf, (labels, pred), 1)
    p_label = probs[np.arange(n), labels]
    rank = (probs > p_label[:, None]).sum(1)
    m = {"n": int(n), "accuracy": float((pred == labels).mean()),
         "top2_accuracy": float((rank < 2).mean()), "top3_accuracy": float((rank < 3).mean()),
         "nll": float(-np.log(np.maximum(1e-12, p_label.astype(np.float64))).mean()),
         "brier": float(((probs.astype(np.float64) - np.eye(NUM_CLASSES)[labels]) ** 2).sum(1).mean())}
    per_class = {}
    sums = dict(bal=0.0, mp=0.0, mr=0.0, mf=0.0, wp=0.0, wr=0.0, wf=0.0, auc=0.0)
    present = with_auc = 0
    for k in range(NUM_CLASSES):
        tp = int(conf[k, k])
        support = int(conf[k].sum())
        predicted = int(conf[:, k].sum())
        precision = safe_div(tp, predicted)
        recall = safe_div(tp, support)
        f1 = safe_div(2 * precision * recall, precision + recall)
        auc = roc_auc(probs[:, k], labels == k)
        per_class[CLASSES[k]] = {"precision": precision, "recall": recall, "f1": f1,
                                 "support": support, "auc": None if math.isnan(auc) else auc}
        if not math.isnan(auc):
            sums["auc"] += auc
            with_auc += 1
        if support > 0:
            present += 1
            sums["bal"] += recall
            sums["mp"] += precision
            sums["mr"] += recall
            sums["mf"] += f1
            sums["wp"] += precision * support / n
            sums["wr"] += recall * support / n
            sums["wf"] += f1 * support / n
    m["balanced_accuracy"] = sums["bal"] / present
    m["macro_precision"] = sums["mp"] / present
    m["macro_recall"] = sums["mr"] / present
    m["macro_f1"] = sums["mf"] / present
    m["macro_auc"] = sums["auc"] / with_auc if with_auc else None
    m["weighted_precision"], m["weighted_recall"], m["weighted_f1"] = sums["wp"], sums["wr"], sums["wf"]
    risk = probs[:, sorted(MALIGNANT)].astype(np.float64).sum(1)
    malignant = np.isin(labels, sorted(MALIGNANT))
    flagged = risk >= 0.5
    mal_auc = roc_auc(risk, malignant)
    m["malignant_auc"] = None if math.isnan(mal_auc) else mal_auc
    m["malignant_sensitivity"] = safe_div(float((flagged & malignant).sum()), float(malignant.sum()))
    m["malignant_specificity"] = safe_div(float((~flagged & ~malignant).sum()), float((~malignant).sum()))
    m["melanoma_recall"] = per_class["mel"]["recall"]
    conf_top = probs[np.arange(n), pred].astype(np.float64)
    idx = np.clip(np.ceil(conf_top * 15).astype(int) - 1, 0, 14)
    ece = 0.0
    for b in range(15):
        sel = idx == b
        if sel.any():
            ece += abs(float((pred[sel] == labels[sel]).mean()) - float(conf_top[sel].mean())) * sel.sum() / n
    m["ece"] = ece
    m["per_class"] = per_class
    m["labels"] = CLASSES
    m["confusion_matrix"] = conf.tolist()
    return m


# ---------------------------------------------------------------------------
# Training.

def fmt_duration(s):
    t = int(max(0.0, s))
    return f"{t // 3600}:{t // 60 % 60:02d}:{t % 60:02d}" if t >= 3600 else f"{t // 60}:{t % 60:02d}"


def make_loader(samples, sampler, c, augmentation, persistent=True, training=False, teacher=None):
    ds = LesionDataset(samples, augmentation, c["image_size"], c["seed"], c["colour_constancy_p"],
                       c["resize"], teacher)
    es = EpochSampler(sampler)
    nw = c["num_workers"]
    # As the C++ trainer: a last training batch of one image is dropped.
    n = sampler.num_samples if hasattr(sampler, "num_samples") else len(samples)  # The epoch's draws.
    drop_last = training and n > 1 and n % c["batch_size"] == 1
    loader = torch.utils.data.DataLoader(ds, batch_size=c["batch_size"], sampler=es, num_workers=nw,
                                         drop_last=drop_last, persistent_workers=persistent and nw > 0)
    return loader, es


@torch.no_grad()
def predict(model, loader):
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x).float())
        labels.append(y)
    model.train(was_training)
    z = torch.cat(logits).double()
    probs = torch.softmax(z, 1).float().numpy()  # eval::Softmax: double, stored as float
    return torch.cat(labels).numpy(), probs


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", required=True, help="training config JSON (TrainConfig keys)")
    ap.add_argument("--data", required=True, help="HAM10000 folder (Kaggle layout or flat)")
    ap.add_argument("--metadata", default="", help="metadata CSV (default <data>/HAM10000_metadata.csv)")
    ap.add_argument("--split", required=True, help="split CSV written by SaveSplit (holdout)")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--fold", type=int, default=-1,
                    help="with a k-fold split, the round to run (as skinlesion train --fold)")
    a = ap.parse_args()

    run_start = time.perf_counter()
    c = load_config(a.config)
    torch.set_num_threads(c["threads"])
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(c, f, indent=2)
        f.write("\n")
    catalogue = load_catalogue(a.metadata or os.path.join(a.data, "HAM10000_metadata.csv"), a.data)
    parts = load_split(a.split, catalogue, a.fold)
    train, val, test = parts["train"], parts["val"], parts["test"]
    if not train or not val or not test:
        sys.exit(f"need train, val and test images (have {len(train)}, {len(val)}, {len(test)})")
    print(f"[reference] {c['architecture']} {c['image_size']}px: train {len(train)}, val {len(val)}, "
          f"test {len(test)}; {c['threads']} threads, {c['num_workers']} workers", file=sys.stderr)

    torch.manual_seed(c["seed"] & MASK64)
    model = build_model(c)

    labels = [s[2] for s in train]
    if c["sampler"] == "balanced":
        draws = c["samples_per_epoch"] or len(train)  # As the C++ trainer: 0 = the pool's size.
        sampler = ClassBalancedSampler(labels, c["class_weighting"], draws, c["seed"])
    else:
        sampler = ShuffleSampler(len(train), c["seed"])
    teacher = load_teacher(c, train)
    train_loader, train_sampler = make_loader(train, sampler, c, c["augmentation"], training=True,
                                              teacher=teacher)
    val_loader, _ = make_loader(val, SequentialSampler(len(val)), c, "none")
    steps_per_epoch = len(train_loader)
    weights = None
    log_prior = None
    if c["loss"] == "logit_adjusted":
        # losses.cc kLogitAdjusted: the log of the prior the sampler shows the model.
        counts = [max(1, sum(1 for y in labels if y == k)) for k in range(7)]
        prior = [1 / 7] * 7 if c["sampler"] == "balanced" else [n / len(labels) for n in counts]
        log_prior = torch.tensor([math.log(p) for p in prior], dtype=torch.float32)
    elif c["loss"] != "ce" and c["sampler"] != "balanced":
        weights = torch.tensor(class_weights(labels, c["class_weighting"]), dtype=torch.float32)
    total_sched_epochs = max(1, c["epochs"] - c["frozen_epochs"])
    bf16 = c["precision"] == "bf16"
    ema = None
    if c["ema_decay"] > 0:
        ema = [p.detach().clone() for p in model.parameters()]

    def ema_swap():
        with torch.no_grad():
            for p, s in zip(model.parameters(), ema):
                tmp = p.detach().clone()
                p.copy_(s)
                s.copy_(tmp)

    log_path = os.path.join(a.out, "train_log.jsonl")
    open(log_path, "w").close()
    best_metric, best_epoch, best_state, no_improve = -math.inf, -1, None, 0
    monitor_best_epoch = -1
    history, epoch_rates = [], []
    train_seconds = 0.0
    images_total = 0
    train_start = time.perf_counter()
    total_steps = c["epochs"] * steps_per_epoch
    optimizer, scales, optimizer_frozen = None, None, None
    for epoch in range(c["epochs"]):
        frozen = epoch < c["frozen_epochs"]
        if optimizer is None or optimizer_frozen != frozen:
            optimizer, scales = build_optimizer(model, frozen, c)
            optimizer_frozen = frozen
        trainable = [p for g in optimizer.param_groups for p in g["params"]]
        set_train_mode(model, frozen)
        torch.manual_seed(derive_seed(c["seed"], epoch, 0x70C4))
        train_sampler.epoch = epoch
        epoch_start = last_print = time.perf_counter()
        loss_sum, loss_count, step, images = 0.0, 0, 0, 0
        head_lr = c["lr"]
        phase = "frozen" if frozen else "finetune"
        optimizer.zero_grad()
        for x, y in train_loader:
            t = 0.0 if frozen else (epoch - c["frozen_epochs"]) + step / steps_per_epoch
            factor = 1.0 if frozen else lr_factor(c, t, total_sched_epochs)
            head_lr = c["lr"] * factor
            for g, s in zip(optimizer.param_groups, scales):
                g["lr"] = c["lr"] * s * factor
            mix_rng = Rng(derive_seed(c["seed"], MIX_SEED_TAG, epoch, step, 0))  # rank 0
            q = None
            if teacher is not None:
                y, q = y
            x, partner, lam, perm = mix_batch(x, y, c, mix_rng)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                logits = model(x)
            loss = compute_loss(logits, y, c, weights, log_prior)
            if partner is not None:
                loss = loss * lam + compute_loss(logits, partner, c, weights, log_prior) * (1.0 - lam)
            if q is not None:
                if perm is not None:
                    q = q * lam + q.index_select(0, perm) * (1.0 - lam)
                w = c["distill_weight"]
                loss = loss * (1.0 - w) + distillation_loss(logits, q, c["distill_temperature"]) * w
            (loss / c["grad_accum"]).backward()
            loss_value = loss.item()
            if not math.isfinite(loss_value):
                sys.exit(f"loss is {loss_value} at epoch {epoch + 1} step {step + 1}; lower the learning rate")
            loss_sum += loss_value * y.shape[0]
            loss_count += y.shape[0]
            step += 1
            images += y.shape[0]
            if step % c["grad_accum"] == 0 or step == steps_per_epoch:
                if c["clip_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(trainable, c["clip_grad_norm"])
                optimizer.step()
                if ema is not None:
                    with torch.no_grad():
                        for s_, p in zip(ema, model.parameters()):
                            s_.mul_(c["ema_decay"]).add_(p.detach(), alpha=1 - c["ema_decay"])
                optimizer.zero_grad()
            now = time.perf_counter()
            if now - last_print >= c["progress_interval_s"] or step == steps_per_epoch:
                last_print = now
                rate = (images_total + images) / max(1e-9, now - train_start)
                remaining = total_steps - (epoch * steps_per_epoch + step)
                eta = remaining * c["batch_size"] / max(rate, 1e-9)
                print(f"[train] epoch {epoch + 1}/{c['epochs']} {phase:<8} step {step}/{steps_per_epoch}  "
                      f"loss {loss_sum / loss_count:.4f}  lr {head_lr:.2e}  "
                      f"{images / max(1e-9, now - epoch_start):.1f} img/s  ETA {fmt_duration(eta)}",
                      file=sys.stderr, flush=True)
        seconds = time.perf_counter() - epoch_start
        train_seconds += seconds
        images_total += images
        epoch_rates.append(images / max(1e-9, seconds))

        if ema is not None:
            ema_swap()
        vl, vp = predict(model, val_loader)
        if ema is not None:
            ema_swap()
        vm = compute_metrics(vl, vp)
        score = vm.get(c["monitor"])
        if not isinstance(score, (int, float)):
            sys.exit(f"monitor '{c['monitor']}' is not a numeric metric")
        best = score > best_metric
        if best:
            best_metric, monitor_best_epoch, no_improve = score, epoch, 0
        else:
            no_improve += 1
        if best or c["select_epoch"] == "last":
            best_epoch = epoch
            if ema is not None:
                ema_swap()
            best_state = copy.deepcopy(model.state_dict())
            if ema is not None:
                ema_swap()
        record = {"epoch": epoch, "phase": phase, "train_loss": loss_sum / max(1, loss_count),
                  "lr": head_lr, "images_per_second": epoch_rates[-1], "seconds": seconds,
                  "val_loss": vm["nll"], "val_metrics": vm, "best": best}
        history.append(record)
        with open(log_path, "a") as f:
            f.write(json.dumps(record) + "\n")
        print(f"[train] epoch {epoch + 1}/{c['epochs']} done in {fmt_duration(seconds)}: loss "
              f"{record['train_loss']:.4f}  val loss {vm['nll']:.4f}  val {c['monitor']} {score:.4f}  "
              f"acc {vm['accuracy']:.4f}{'  (best)' if best else ''}", file=sys.stderr, flush=True)
        if c["patience"] > 0 and not frozen and no_improve >= c["patience"]:
            print(f"[reference] early stopping: no improvement of {c['monitor']} for {c['patience']} epochs",
                  file=sys.stderr)
            break

    model.load_state_dict(best_state)
    torch.save(best_state, os.path.join(a.out, "best_model.pt"))
    test_loader, _ = make_loader(test, SequentialSampler(len(test)), c, "none", persistent=False)
    tl, tp = predict(model, test_loader)
    metrics = compute_metrics(tl, tp)
    metrics["images_per_second"] = statistics.median(epoch_rates)
    metrics["seconds"] = time.perf_counter() - run_start
    metrics["train_seconds"] = train_seconds
    metrics["best_epoch"] = best_epoch
    metrics["monitor_best_epoch"] = monitor_best_epoch
    metrics["epochs_run"] = len(history)
    metrics["architecture"] = c["architecture"]
    metrics["framework"] = f"python torch {torch.__version__} torchvision {torchvision.__version__}"
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
        f.write("\n")
    print(f"[reference] test: accuracy {metrics['accuracy']:.4f}  balanced_accuracy "
          f"{metrics['balanced_accuracy']:.4f}  macro_f1 {metrics['macro_f1']:.4f}  macro_auc "
          f"{metrics['macro_auc'] if metrics['macro_auc'] is None else round(metrics['macro_auc'], 4)}  "
          f"melanoma_recall {metrics['melanoma_recall']:.4f}; {metrics['images_per_second']:.1f} img/s "
          f"(median), {fmt_duration(metrics['seconds'])} total; wrote {a.out}/metrics.json", file=sys.stderr)


if __name__ == "__main__":
    main()
