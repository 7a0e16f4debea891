#!/usr/bin/python3
"""Regenerates the small torch.save fixtures of the models unit tests and the
pth_reader fuzz seed corpus (run with /usr/bin/python3 from this directory)."""
import collections
import io
import os
import pickle
import zipfile

import torch

torch.manual_seed(0)
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
sd = collections.OrderedDict()
sd["linear.weight"] = base
sd["linear.bias"] = torch.tensor([0.5, -1.5, 2.25], dtype=torch.float32)
sd["transposed"] = base.t()                # non-contiguous view of the same storage
sd["row"] = base[1]                        # storage offset 4
sd["half"] = torch.tensor([1.0, -2.0, 0.25], dtype=torch.float16)
sd["bf16"] = torch.tensor([3.0, 0.5], dtype=torch.bfloat16)
sd["double"] = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
sd["count"] = torch.tensor(7, dtype=torch.int64)   # 0-dim
sd["mask"] = torch.tensor([True, False])
sd["bytes"] = torch.tensor([1, 255], dtype=torch.uint8)
sd["empty"] = torch.zeros(0, 5)
torch.save(sd, "tiny_state_dict.pth")

torch.save({"epoch": 3, "lr": 0.125, "state_dict": {"w": torch.nn.Parameter(torch.ones(2, 2))},
            "note": "hi", "big": 2**40, "neg": -5, "tuple": (1, 2.5, None, True, False)},
           "tiny_checkpoint.pth")

os.makedirs("../../../fuzz/corpus/pth_reader", exist_ok=True)
for name in ["tiny_state_dict.pth", "tiny_checkpoint.pth"]:
    with zipfile.ZipFile(name) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
        with open("../../../fuzz/corpus/pth_reader/" + name.replace(".pth", ".pkl"), "wb") as f:
            f.write(z.read(pkl))
# Protocol 4 (FRAME, SHORT_BINUNICODE, MEMOIZE, STACK_GLOBAL) via pickle directly.
buf = io.BytesIO()
torch.save(sd, buf, pickle_protocol=4)
with zipfile.ZipFile(io.BytesIO(buf.getvalue())) as z:
    pkl = [n for n in z.namelist() if n.endswith("data.pkl")][0]
    with open("../../../fuzz/corpus/pth_reader/protocol4.pkl", "wb") as f:
        f.write(z.read(pkl))
with open("protocol4_state_dict.pth", "wb") as f:
    f.write(buf.getvalue())


class Evil:
    def __reduce__(self):
        return (os.system, ("true",))


with open("../../../fuzz/corpus/pth_reader/evil_global.pkl", "wb") as f:
    f.write(pickle.dumps({"x": Evil()}, protocol=2))
