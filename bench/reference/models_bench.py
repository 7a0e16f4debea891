#!/usr/bin/python3
"""Python/torchvision reference for bench/models_bench.cc (run with /usr/bin/python3).

Eval-mode forward and training-mode forward+backward of ViT-B/16, ResNet-50 and
EfficientNet-B0 at 224 px, batch 1 and 8, CPU, torch.set_num_threads(--threads).
Prints one JSON object per line: {"model", "mode", "batch", "precision", "median_ms", "iters"}.
--precision bf16: eval runs module.bfloat16() on a bf16 input; training runs the
forward under torch.autocast("cpu", dtype=torch.bfloat16).
"""
import argparse
import json
import statistics
import time

import torch
import torchvision


def run(model, batch, mode, warmup, iters, size, precision="fp32"):
    x = torch.randn(batch, 3, size, size)
    times = []
    bf16 = precision == "bf16"
    if mode == "eval":
        model.eval()
        if bf16:
            model = model.bfloat16()
            x = x.bfloat16()
        with torch.no_grad():
            for i in range(warmup + iters):
                t = time.perf_counter()
                model(x)
                if i >= warmup:
                    times.append(time.perf_counter() - t)
    else:
        model.train()
        for i in range(warmup + iters):
            t = time.perf_counter()
            model.zero_grad(set_to_none=True)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                y = model(x)
            y.float().sum().backward()
            if i >= warmup:
                times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--models", default="vit_b_16,resnet50,efficientnet_b0")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--modes", default="eval,train")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name in a.models.split(","):
        for mode in a.modes.split(","):
            for batch in [int(b) for b in a.batches.split(",")]:
                torch.manual_seed(0)
                model = getattr(torchvision.models, name)(num_classes=7)
                ms = run(model, batch, mode, a.warmup, a.iters, a.size, a.precision)
                print(json.dumps({"model": name, "mode": mode, "batch": batch, "precision": a.precision,
                                  "median_ms": ms, "iters": a.iters}), flush=True)


if __name__ == "__main__":
    main()
