#!/usr/bin/python3
"""Reference data for the model-zoo conformance tests (run with /usr/bin/python3).

  make_reference.py generate OUT_DIR [--archs a,b,...] [--size 64]
      For each architecture: a torchvision model with seeded random weights (and
      random BatchNorm statistics), written as OUT_DIR/<case>.safetensors and
      OUT_DIR/<case>.pth (torch.save of the state dict), an input and its eval-mode
      logits in OUT_DIR/<case>_io.safetensors ("x", "y"), and OUT_DIR/cases.json.
      "vit_custom" also yields timm- and Hugging Face-named copies
      (vit_custom_timm.*, vit_custom_hf.*) whose logits are the same, and
      vit_custom_96: the same weights with logits of the model at 96 px after
      torchvision's interpolate_embeddings.
  make_reference.py verify CHECKPOINT_DIR IO_FILE
      Loads a checkpoint written by skinlesion (manifest.json + model.safetensors)
      into torchvision with load_state_dict(strict=True), runs IO_FILE's "x" and
      compares with its "y". Exit status 0 when max|diff| <= 1e-4 * max(1, max|y|).

The safetensors package is not in Debian 12, so this file has a tiny reader/writer.
"""
import argparse
import json
import shutil
import struct
import sys
from collections import OrderedDict

import numpy as np
import torch
import torchvision
from torchvision.models.vision_transformer import VisionTransformer, interpolate_embeddings

DTYPES = {
    torch.float32: ("F32", np.float32), torch.float64: ("F64", np.float64),
    torch.float16: ("F16", np.float16), torch.int64: ("I64", np.int64),
    torch.int32: ("I32", np.int32), torch.uint8: ("U8", np.uint8), torch.bool: ("BOOL", np.bool_),
}
NP_BY_NAME = {name: np_type for name, np_type in DTYPES.values()}
TORCH_BY_NAME = {name: t for t, (name, _) in DTYPES.items()}

VIT_CONFIGS = {  # patch, layers, heads, hidden, mlp
    "vit_ti_16": (16, 12, 3, 192, 768),
    "vit_s_16": (16, 12, 6, 384, 1536),
    "vit_b_16": (16, 12, 12, 768, 3072),
    "vit_l_16": (16, 24, 16, 1024, 4096),
}
CUSTOM_VIT = {"patch_size": 16, "hidden_dim": 64, "num_layers": 2, "num_heads": 4, "mlp_dim": 128}


def write_safetensors(path, tensors, metadata=None):
    header, blobs, offset = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        dtype, _ = DTYPES[t.dtype]
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = OrderedDict()
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[base + begin:base + end], dtype=NP_BY_NAME[entry["dtype"]])
        out[name] = torch.from_numpy(array.copy()).reshape(entry["shape"])
    return out


def build(arch, num_classes, image_size, vit=None):
    if arch == "vit_custom":
        c = vit or CUSTOM_VIT
        return VisionTransformer(image_size=image_size, patch_size=c["patch_size"], num_layers=c["num_layers"],
                                 num_heads=c["num_heads"], hidden_dim=c["hidden_dim"], mlp_dim=c["mlp_dim"],
                                 num_classes=num_classes)
    if arch in VIT_CONFIGS:
        p, layers, heads, hidden, mlp = VIT_CONFIGS[arch]
        return VisionTransformer(image_size=image_size, patch_size=p, num_layers=layers, num_heads=heads,
                                 hidden_dim=hidden, mlp_dim=mlp, num_classes=num_classes)
    return getattr(torchvision.models, arch)(num_classes=num_classes)


def randomize(model, seed):
    """Deterministic weights with non-trivial BatchNorm statistics and heads."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g) / fan_in ** 0.5)
            elif name.endswith("weight"):  # BatchNorm / LayerNorm scale
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(0.1 * torch.randn(b.shape, generator=g))
            elif name.endswith("running_var"):
                b.copy_(0.5 + torch.rand(b.shape, generator=g))
            elif name.endswith("num_batches_tracked"):
                b.fill_(7)
        if hasattr(model, "class_token"):
            model.class_token.copy_(0.02 * torch.randn(model.class_token.shape, generator=g))
            model.encoder.pos_embedding.copy_(0.02 * torch.randn(model.encoder.pos_embedding.shape, generator=g))


def to_timm(sd):
    out = OrderedDict()
    for k, v in sd.items():
        k2 = k.replace("conv_proj.", "patch_embed.proj.").replace("encoder.ln.", "norm.").replace("heads.head.", "head.")
        k2 = {"class_token": "cls_token", "encoder.pos_embedding": "pos_embed"}.get(k2, k2)
        if k2.startswith("encoder.layers.encoder_layer_"):
            n, rest = k2[len("encoder.layers.encoder_layer_"):].split(".", 1)
            rest = (rest.replace("ln_1.", "norm1.").replace("ln_2.", "norm2.")
                    .replace("self_attention.in_proj_weight", "attn.qkv.weight")
                    .replace("self_attention.in_proj_bias", "attn.qkv.bias")
                    .replace("self_attention.out_proj.", "attn.proj.")
                    .replace("mlp.0.", "mlp.fc1.").replace("mlp.3.", "mlp.fc2."))
            k2 = f"blocks.{n}.{rest}"
        out[k2] = v
    return out


def to_hf(sd):
    out = OrderedDict()
    for k, v in sd.items():
        if k == "class_token":
            out["vit.embeddings.cls_token"] = v
        elif k == "encoder.pos_embedding":
            out["vit.embeddings.position_embeddings"] = v
        elif k.startswith("conv_proj."):
            out["vit.embeddings.patch_embeddings.projection." + k.split(".")[-1]] = v
        elif k.startswith("encoder.ln."):
            out["vit.layernorm." + k.split(".")[-1]] = v
        elif k.startswith("heads.head."):
            out["classifier." + k.split(".")[-1]] = v
        else:
            n, rest = k[len("encoder.layers.encoder_layer_"):].split(".", 1)
            p = f"vit.encoder.layer.{n}."
            if rest.startswith("self_attention.in_proj_"):
                kind = rest.split("_")[-1]
                q, kk, vv = v.chunk(3, dim=0)
                out[p + "attention.attention.query." + kind] = q
                out[p + "attention.attention.key." + kind] = kk
                out[p + "attention.attention.value." + kind] = vv
            else:
                rest = (rest.replace("self_attention.out_proj.", "attention.output.dense.")
                        .replace("mlp.0.", "intermediate.dense.").replace("mlp.3.", "output.dense.")
                        .replace("ln_1.", "layernorm_before.").replace("ln_2.", "layernorm_after."))
                out[p + rest] = v
    hidden = sd["class_token"].shape[-1]
    out["vit.pooler.dense.weight"] = torch.zeros(hidden, hidden)
    out["vit.pooler.dense.bias"] = torch.zeros(hidden)
    return out


def generate(args):
    torch.set_num_threads(2)
    cases = []
    for arch in [a for a in args.archs.split(",") if a]:
        size = 224 if arch == "vit_b_16" and args.full_vit else args.size
        vit = CUSTOM_VIT if arch == "vit_custom" else None
        model = build(arch, args.num_classes, size, vit)
        randomize(model, seed=len(arch) * 1000 + sum(map(ord, arch)))
        model.eval()
        x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            y = model(x)
        sd = model.state_dict()
        variants = [(arch, sd)]
        if arch == "vit_custom":
            variants += [(arch + "_timm", to_timm(sd)), (arch + "_hf", to_hf(sd))]
        for case, tensors in variants:
            write_safetensors(f"{args.out}/{case}.safetensors", tensors, {"format": "pt"})
            payload = tensors
            if case.endswith("_timm"):  # A training checkpoint rather than a bare state dict.
                payload = {"model": tensors, "epoch": 3, "lr": 0.5, "name": "x", "flags": [True, None]}
            torch.save(payload, f"{args.out}/{case}.pth")
            write_safetensors(f"{args.out}/{case}_io.safetensors", {"x": x, "y": y})
            cases.append({"case": case, "architecture": arch, "image_size": size, "num_classes": args.num_classes,
                          "vit": vit, "max_abs_logit": float(y.abs().max())})
        if arch == "vit_custom":
            # Weights of the 64 px model used at 96 px: torchvision's interpolate_embeddings
            # (bicubic, align_corners=True); C++ adapts the same .safetensors/.pth at load.
            big = size + 2 * CUSTOM_VIT["patch_size"]
            resized = build(arch, args.num_classes, big, vit)
            resized.load_state_dict(interpolate_embeddings(big, CUSTOM_VIT["patch_size"], OrderedDict(sd)))
            resized.eval()
            xb = torch.randn(2, 3, big, big, generator=torch.Generator().manual_seed(2))
            with torch.no_grad():
                yb = resized(xb)
            case = f"{arch}_{big}"
            for ext in ("safetensors", "pth"):
                shutil.copyfile(f"{args.out}/{arch}.{ext}", f"{args.out}/{case}.{ext}")
            write_safetensors(f"{args.out}/{case}_io.safetensors", {"x": xb, "y": yb})
            cases.append({"case": case, "architecture": arch, "image_size": big, "num_classes": args.num_classes,
                          "vit": vit, "max_abs_logit": float(yb.abs().max())})
        print(f"{arch}: logits max |y| = {float(y.abs().max()):.4g}", flush=True)
    with open(f"{args.out}/cases.json", "w") as f:
        json.dump(cases, f, indent=1)


def verify(args):
    torch.set_num_threads(2)
    with open(f"{args.checkpoint}/manifest.json") as f:
        manifest = json.load(f)
    model = build(manifest["architecture"], manifest["num_classes"], manifest["image_size"], manifest.get("vit"))
    model.load_state_dict(read_safetensors(f"{args.checkpoint}/model.safetensors"), strict=True)
    model.eval()
    io = read_safetensors(args.io)
    with torch.no_grad():
        y = model(io["x"])
    diff = float((y - io["y"]).abs().max())
    tol = 1e-4 * max(1.0, float(io["y"].abs().max()))
    print(f"{manifest['architecture']}: max abs diff {diff:.3g} (tolerance {tol:.3g})")
    return 0 if diff <= tol else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate")
    g.add_argument("out")
    g.add_argument("--archs", default="resnet18,resnet50,densenet121,efficientnet_b0,vit_custom")
    g.add_argument("--size", type=int, default=64)
    g.add_argument("--num_classes", type=int, default=7)
    g.add_argument("--full_vit", action="store_true", help="vit_b_16 at 224 px instead of --size")
    v = sub.add_parser("verify")
    v.add_argument("checkpoint")
    v.add_argument("io")
    args = parser.parse_args()
    if args.command == "generate":
        generate(args)
        return 0
    return verify(args)


if __name__ == "__main__":
    sys.exit(main())
