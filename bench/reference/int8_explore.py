#!/usr/bin/python3
"""Is dynamic int8 worth keeping next to bf16? (issue 13, "int8: explore, keep only if it wins").

Run with Debian's /usr/bin/python3 (torch 1.13 + torchvision 0.14). Eval forward of
torchvision ViT-B/16 (and ResNet-50, whose only linear layer is its head) at batch 8,
224 px, CPU, the same thread count for every variant:

  fp32          the plain module
  bf16          module.bfloat16() on a bf16 input (what skinlesion's bf16 path does)
  int8-<engine> torch.ao.quantization.quantize_dynamic(nn.Linear -> int8 weights,
                activations quantized per batch), for each quantized engine this
                build has (fbgemm, onednn, x86, qnnpack)

Variants are timed round-robin (one forward of each per round, so drift in machine
load hits all alike) and the median per variant is printed with its speed against
bf16. Output error against fp32 is measured on the same inputs: largest absolute
logit difference and the relative error of the logits. With random weights the
top-1 agreement says little, so the logit error is the figure that carries over.

  /usr/bin/python3 bench/reference/int8_explore.py --threads 2 --rounds 7 2>/dev/null
"""
import argparse
import copy
import statistics
import time

import torch
import torchvision


def variants(model, engines):
    out = {"fp32": (model, torch.float32)}
    out["bf16"] = (copy.deepcopy(model).bfloat16(), torch.bfloat16)
    for engine in engines:
        torch.backends.quantized.engine = engine
        q = torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
        out["int8-" + engine] = (q, torch.float32, engine)
    return out


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--models", default="vit_b_16,resnet50")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    engines = [e for e in ("fbgemm", "onednn", "x86", "qnnpack")
               if e in torch.backends.quantized.supported_engines]
    print(f"torch {torch.__version__}, {a.threads} threads, batch {a.batch}, "
          f"quantized engines {','.join(torch.backends.quantized.supported_engines)}")
    print("| model | variant | median ms | img/s | speed vs bf16 | max abs logit diff vs fp32 | "
          "relative logit error | top-1 agreement with fp32 |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for name in a.models.split(","):
        model = getattr(torchvision.models, name)().eval()
        # torchvision zero-initialises the ViT head, which would make every logit 0:
        # give it small random weights, as a trained head has, so errors are visible.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, torch.nn.Linear) and m.weight.abs().max() == 0:
                    torch.nn.init.normal_(m.weight, std=0.02)
        vs = variants(model, engines)
        x = torch.randn(a.batch, 3, 224, 224)
        times = {k: [] for k in vs}
        outs = {}
        with torch.inference_mode():
            for r in range(a.warmup + a.rounds):
                for k, v in vs.items():
                    if len(v) == 3:
                        torch.backends.quantized.engine = v[2]
                    t = time.perf_counter()
                    y = v[0](x.to(v[1]))
                    dt = time.perf_counter() - t
                    if r >= a.warmup:
                        times[k].append(dt)
                    outs[k] = y.float()
        ref = outs["fp32"]
        bf16_ms = statistics.median(times["bf16"]) * 1000
        for k in vs:
            ms = statistics.median(times[k]) * 1000
            d = (outs[k] - ref).abs().max().item()
            rel = ((outs[k] - ref).norm() / ref.norm()).item()
            agree = (outs[k].argmax(1) == ref.argmax(1)).float().mean().item()
            print(f"| {name} | {k} | {ms:.1f} | {a.batch / ms * 1000:.1f} | {bf16_ms / ms:.2f}x | "
                  f"{d:.4f} | {rel:.4f} | {agree * 100:.0f}% |")


if __name__ == "__main__":
    main()
