#!/usr/bin/python3
"""Python/torchvision reference for bench/train_throughput_bench.cc (run with /usr/bin/python3).

Training-step throughput on the CPU: one step = zero_grad, forward (train mode),
cross-entropy (label smoothing 0.1) on random labels, backward, AdamW step
(lr 1e-4, weight decay 0.05, all parameters). Random N(0, 1) input of
[batch, 3, size, size]; torch.manual_seed(0); torch.set_num_threads(--threads).
--warmup untimed steps, then the median of --iters timed steps.

Prints one JSON object per architecture on stdout:
  {"arch", "size", "batch", "threads", "warmup", "iters", "median_ms", "min_ms",
   "cpu_median_ms" (process CPU time per step, all threads), "images_per_second",
   "times_ms": [...], "cpu_times_ms": [...], "phases_ms": {"forward" (zero_grad +
   forward + loss), "backward", "optimizer": [...]}, "torch": version}

  /usr/bin/python3 bench/reference/train_step_bench.py --archs resnet18,resnet50 \
      --size 224 --batch 8 --threads 2 --warmup 5 --iters 10 [--channels_last]

--precision bf16: eval mode runs module.bfloat16() on a bf16 input (Python 1.13's
CPU autocast fails on torchvision's fused ViT attention); training runs the forward
and loss under torch.autocast("cpu", dtype=torch.bfloat16) with fp32 weights.

--serve (what train_throughput_bench uses; one architecture): builds the model,
prints {"ready": true, "threads", "torch"}, then for every "step" line on stdin runs
one step and prints {"wall_ms", "cpu_ms", "forward_ms", "backward_ms",
"optimizer_ms"}; for a "profile" line the same under torch.autograd.profiler with
"ops": {"<phase>/<op name>": [calls, self CPU ms]} added (phases: forward =
zero_grad + forward + loss, backward, optimizer); any other line or EOF ends it.
"""
import argparse
import json
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import torchvision


def build(arch, size):
    tv = torchvision.models
    vit = {"vit_ti_16": (12, 3, 192, 768), "vit_s_16": (12, 6, 384, 1536), "vit_custom": (4, 3, 192, 768)}
    if arch in ("vit_b_16", "vit_l_16"):
        return getattr(tv, arch)(weights=None, num_classes=7, image_size=size)
    if arch in vit:
        layers, heads, hidden, mlp = vit[arch]
        return tv.vision_transformer.VisionTransformer(size, 16, layers, heads, hidden, mlp, num_classes=7)
    return getattr(tv, arch)(weights=None, num_classes=7)


class Stepper:
    """One model + AdamW; step() runs and times one training step."""

    def __init__(self, arch, size, batch, channels_last, eval_mode=False, precision="fp32"):
        torch.manual_seed(0)
        self.model = build(arch, size)
        self.eval_mode = eval_mode
        self.bf16 = precision == "bf16"
        self.model.train(not eval_mode)
        self.x = torch.randn(batch, 3, size, size)
        self.y = torch.randint(0, 7, (batch,))
        if self.bf16 and eval_mode:
            self.model = self.model.bfloat16()
            self.x = self.x.bfloat16()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4, weight_decay=0.05)

    def step(self, profile=False):
        """Times one step; with profile=True also returns "ops": {"<phase>/<op>": [calls, self ms]}."""
        ops = {}

        def phase(name, fn):
            if not profile:
                return fn()
            with torch.autograd.profiler.profile() as prof:
                out = fn()
            for e in prof.key_averages():
                ops[f"{name}/{e.key}"] = [e.count, e.self_cpu_time_total / 1000.0]
            return out

        start, cpu_start = time.perf_counter(), time.process_time()
        if self.eval_mode:  # --eval: one inference-mode forward pass, nothing else
            with torch.inference_mode():
                phase("forward", lambda: self.model(self.x))
            end = time.perf_counter()
            out = {"wall_ms": (end - start) * 1e3, "cpu_ms": (time.process_time() - cpu_start) * 1e3,
                   "forward_ms": (end - start) * 1e3, "backward_ms": 0.0, "optimizer_ms": 0.0}
            if profile:
                out["ops"] = ops
            return out
        loss = phase("forward", self._forward)
        t1 = time.perf_counter()
        phase("backward", loss.backward)
        t2 = time.perf_counter()
        phase("optimizer", self.opt.step)
        end = time.perf_counter()
        out = {"wall_ms": (end - start) * 1e3, "cpu_ms": (time.process_time() - cpu_start) * 1e3,
               "forward_ms": (t1 - start) * 1e3, "backward_ms": (t2 - t1) * 1e3,
               "optimizer_ms": (end - t2) * 1e3}
        if profile:
            out["ops"] = ops
        return out

    def _forward(self):
        self.opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            logits = self.model(self.x)
        return F.cross_entropy(logits.float(), self.y, label_smoothing=0.1)


def bench(arch, size, batch, warmup, iters, channels_last, precision="fp32"):
    stepper = Stepper(arch, size, batch, channels_last, precision=precision)
    steps = [stepper.step() for _ in range(warmup + iters)][warmup:]
    times = [s["wall_ms"] for s in steps]
    cpu_times = [s["cpu_ms"] for s in steps]
    phases = {k: [s[k + "_ms"] for s in steps] for k in ("forward", "backward", "optimizer")}
    return times, cpu_times, phases


def serve(a):
    """Lock-step mode for train_throughput_bench: one step per 'step' line on stdin."""
    stepper = Stepper(a.archs, a.size, a.batch, a.channels_last, a.eval, a.precision)
    print(json.dumps({"ready": True, "arch": a.archs, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "step":
            print(json.dumps(stepper.step()), flush=True)
        elif command == "profile":
            print(json.dumps(stepper.step(profile=True)), flush=True)
        else:
            break


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--archs", default="resnet18,resnet50,efficientnet_b0,vit_b_16")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--channels_last", action="store_true")
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--eval", action="store_true",
                   help="with --serve: time eval-mode forward passes (inference mode) instead of training steps")
    p.add_argument("--serve", action="store_true",
                   help="lock-step mode (one architecture): read 'step' lines, answer one JSON line each")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.serve:
        serve(a)
        return
    for arch in a.archs.split(","):
        times, cpu_times, phases = bench(arch, a.size, a.batch, a.warmup, a.iters, a.channels_last, a.precision)
        median = statistics.median(times)
        print(json.dumps({"arch": arch, "size": a.size, "batch": a.batch, "threads": torch.get_num_threads(),
                          "warmup": a.warmup, "iters": a.iters, "median_ms": median, "min_ms": min(times),
                          "cpu_median_ms": statistics.median(cpu_times),
                          "images_per_second": 1000.0 * a.batch / median,
                          "times_ms": [round(t, 2) for t in times],
                          "cpu_times_ms": [round(t, 2) for t in cpu_times],
                          "phases_ms": {k: [round(t, 2) for t in v] for k, v in phases.items()},
                          "torch": torch.__version__}),
              flush=True)
        print(f"python {arch} {a.size}px batch {a.batch}: {median:.1f} ms/step, "
              f"{1000.0 * a.batch / median:.1f} img/s", file=sys.stderr, flush=True)


if __name__ == "__main__":
    main()
