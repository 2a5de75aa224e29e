#!/usr/bin/env python3
"""Writes the safetensors reader fixtures (tests/fixtures/safetensors/) with the
Python `safetensors` library, plus JSON files holding the same values, so the C++
tests compare against an independent writer and independent numbers.

Usage: python3 scripts/make_safetensors_fixtures.py [OUT_DIR]
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "fixtures", "safetensors")
os.makedirs(os.path.join(out, "sharded"), exist_ok=True)
g = torch.Generator().manual_seed(1234)

# Values to round to bf16: random ones plus ties, subnormals, inf and large values.
edge = torch.tensor([0.0, -0.0, 1.0, 1.00390625, 1.01171875, 1e-40, -3e38, 3.4e38,
                     float("inf"), float("-inf"), 65504.0, 1.0 + 2**-8, 1.0 + 3 * 2**-8],
                    dtype=torch.float32)
round_src = torch.cat([torch.randn(51, generator=g) * 10, edge])

tensors = {
    "a.f32": torch.randn(2, 3, generator=g),
    "b.bf16": (torch.randn(4, generator=g) * 3).to(torch.bfloat16),
    "c.f16": (torch.randn(3, 2, generator=g) * 100).to(torch.float16),
    "d.i32": torch.tensor([1, -2, 3, 2**24, -(2**31)], dtype=torch.int32),
    "e.i64": torch.tensor([[5, -6], [7, 123456]], dtype=torch.int64),
    "f.u8": torch.tensor([0, 1, 2, 127, 128, 254, 255], dtype=torch.uint8),
    "g.scalar": torch.tensor(2.5, dtype=torch.float32),
    "h.empty": torch.zeros(0, 4, dtype=torch.float32),
    "round.f32": round_src,
}
save_file(tensors, os.path.join(out, "mixed.safetensors"), metadata={"format": "pt", "note": "fixture"})


def values(t):
    return [float(x) for x in t.to(torch.float64).flatten().tolist()] if t.is_floating_point() \
        else [int(x) for x in t.flatten().tolist()]


ref = {
    "metadata": {"format": "pt", "note": "fixture"},
    "tensors": {k: {"dtype": {torch.float32: "F32", torch.bfloat16: "BF16", torch.float16: "F16",
                              torch.int32: "I32", torch.int64: "I64", torch.uint8: "U8"}[v.dtype],
                    "shape": list(v.shape),
                    # float values that are +-inf are written as strings
                    "values": [x if x == x and abs(x) != float("inf") else str(x) for x in values(v)]}
                for k, v in tensors.items()},
    # torch's float32 -> bfloat16 rounding of round.f32, as uint16 bit patterns
    "round_bf16_bits": [int(x) & 0xFFFF for x in round_src.to(torch.bfloat16).view(torch.int16).tolist()],
}
with open(os.path.join(out, "mixed.json"), "w") as f:
    json.dump(ref, f, indent=1)

# A sharded checkpoint in the layout transformers writes.
shards = {
    "model-00001-of-00002.safetensors": {"model.embed_tokens.weight": torch.randn(5, 4, generator=g),
                                         "model.norm.weight": torch.randn(4, generator=g)},
    "model-00002-of-00002.safetensors": {"lm_head.weight": torch.randn(5, 4, generator=g).to(torch.bfloat16)},
}
weight_map, total = {}, 0
for fname, ts in shards.items():
    save_file(ts, os.path.join(out, "sharded", fname), metadata={"format": "pt"})
    for k, v in ts.items():
        weight_map[k] = fname
        total += v.numel() * v.element_size()
with open(os.path.join(out, "sharded", "model.safetensors.index.json"), "w") as f:
    json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
with open(os.path.join(out, "sharded", "values.json"), "w") as f:
    json.dump({k: values(v) for ts in shards.values() for k, v in ts.items()}, f)
print("wrote", out)
