#!/usr/bin/python3
"""Reference explanation heatmaps from torchvision 0.14 (run with /usr/bin/python3).

  make_explain_reference.py OUT_DIR [--cases resnet18:112,vit_custom:64,...]

For each case ARCH:SIZE: a torchvision model with the seeded random weights of
tests/conformance/make_reference.py (same builder and randomiser), written as
OUT_DIR/<case>.safetensors, and OUT_DIR/<case>_io.safetensors holding the input
"x" [1, 3, SIZE, SIZE], its eval-mode "logits", and the heat maps:

  CNNs: Grad-CAM (every class) with a forward hook on the layer torchvision users hook (ResNet
        layer4, EfficientNet features[-1], VGG the last ReLU of features) and a
        tensor hook for its gradient; DenseNet's map is F.relu(features(x)) (the
        ReLU is functional in torchvision), its gradient via retain_grad. For each
        target class t in TARGETS: "heat_<t>" = ReLU(sum_c mean(grad_c) * A_c) / max
        (zero stays zero).
  ViT:  attention rollout: the encoder blocks run one by one with
        self_attention(..., need_weights=True, average_attn_weights=False); per block
        mean over heads + I, rows re-normalised, R = A_l @ R; the class token's row over
        the patches, min-max normalised: "heat".

OUT_DIR/cases.json lists {"case", "architecture", "image_size", "method", "targets",
"vit"}.
"""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "conformance"))
import make_reference  # noqa: E402  (build, randomize, write_safetensors)

TARGETS = list(range(7))  # Every class of the 7-class models.


def grad_cam(model, arch, x, target):
    store = {}
    if arch.startswith("densenet"):
        features = F.relu(model.features(x))
        features.retain_grad()
        logits = model.classifier(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1))
        store["a"] = features
    else:
        if arch.startswith("resnet"):
            layer = model.layer4
        elif arch.startswith("efficientnet"):
            layer = model.features[-1]
        elif arch.startswith("vgg"):
            layer = [m for m in model.features if isinstance(m, torch.nn.ReLU)][-1]
        else:
            raise ValueError(arch)

        def forward_hook(module, inputs, output):
            store["a"] = output
            output.register_hook(lambda g: store.__setitem__("g", g))

        handle = layer.register_forward_hook(forward_hook)
        logits = model(x)
        handle.remove()
    model.zero_grad()
    logits[0, target].backward()
    a = store["a"].detach()[0]
    g = (store["a"].grad if "g" not in store else store["g"]).detach()[0]
    cam = F.relu((g.mean(dim=(1, 2))[:, None, None] * a).sum(0))
    if cam.max() > 0:
        cam = cam / cam.max()
    return cam, logits.detach()


def rollout(model, x):
    with torch.no_grad():
        n = x.shape[0]
        h = model._process_input(x)
        h = torch.cat([model.class_token.expand(n, -1, -1), h], dim=1)
        h = h + model.encoder.pos_embedding
        r = torch.eye(h.shape[1])
        for block in model.encoder.layers:
            y = block.ln_1(h)
            y, w = block.self_attention(y, y, y, need_weights=True, average_attn_weights=False)
            h = block.dropout(y) + h
            h = h + block.mlp(block.ln_2(h))
            a = w[0].mean(0) + torch.eye(h.shape[1])
            a = a / a.sum(-1, keepdim=True)
            r = a @ r
        logits = model.heads(model.encoder.ln(h)[:, 0])
        expected = model(x)
        assert torch.allclose(logits, expected, atol=1e-4, rtol=1e-4), "block-wise ViT differs from forward()"
        grid = x.shape[2] // model.patch_size
        m = r[0, 1:].reshape(grid, x.shape[3] // model.patch_size)
        span = m.max() - m.min()
        m = (m - m.min()) / span if span > 0 else torch.zeros_like(m)
        return m, logits


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--cases", default="resnet18:112,densenet121:96,efficientnet_b0:96,vit_custom:64,vit_ti_16:64")
    parser.add_argument("--num_classes", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(2)
    cases = []
    for spec in [c for c in args.cases.split(",") if c]:
        arch, size = spec.split(":")
        size = int(size)
        vit = make_reference.CUSTOM_VIT if arch == "vit_custom" else None
        model = make_reference.build(arch, args.num_classes, size, vit)
        make_reference.randomize(model, seed=len(arch) * 1000 + sum(map(ord, arch)))
        model.eval()
        x = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(5))
        io = {"x": x}
        is_vit = arch.startswith("vit")
        if is_vit:
            io["heat"], io["logits"] = rollout(model, x)
            summary = f"{tuple(io['heat'].shape)}"
        else:
            for t in TARGETS:
                io[f"heat_{t}"], io["logits"] = grad_cam(model, arch, x, t)
            summary = ", ".join(f"t{t}: max {float(io[f'heat_{t}'].max()):.3g} mean {float(io[f'heat_{t}'].mean()):.3g}"
                                for t in TARGETS)
        case = f"{arch}_{size}"
        make_reference.write_safetensors(f"{args.out}/{case}.safetensors", model.state_dict(), {"format": "pt"})
        make_reference.write_safetensors(f"{args.out}/{case}_io.safetensors", io)
        cases.append({"case": case, "architecture": arch, "image_size": size, "num_classes": args.num_classes,
                      "method": "attention-rollout" if is_vit else "grad-cam",
                      "targets": [] if is_vit else TARGETS, "vit": vit})
        print(f"{case}: {summary}", flush=True)
    with open(f"{args.out}/cases.json", "w") as f:
        json.dump(cases, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
