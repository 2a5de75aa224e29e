#!/usr/bin/env python3
"""Reference AdamW trajectories from torch.optim.AdamW for tests/train/test_adamw.cpp.

    python3 scripts/make_adamw_fixture.py [--out tests/fixtures/train/adamw_torch.json]

Each case: three float32 tensors, a few steps with seeded random gradients and
a per-step learning rate (set on the param group before each step, as a
scheduler does); with max_grad_norm > 0, torch.nn.utils.clip_grad_norm_ runs
before the step. Stored: options, lrs, initial tensors, every step's
gradients (before clipping) and the tensors after every step, all as the
exact float32 values (JSON doubles).
"""
import argparse
import json
import os

import torch

CASES = [
    dict(name="defaults", lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01, max_grad_norm=0.0, steps=6),
    dict(name="decay_clip_schedule", lr=3e-2, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1, max_grad_norm=0.5, steps=6),
    dict(name="no_decay", lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0, steps=4),
]
SHAPES = [(4, 6), (5, 4), (7,)]


def flat(t):
    return [float(x) for x in t.detach().reshape(-1).tolist()]


def run(c, seed):
    g = torch.Generator().manual_seed(seed)
    params = [torch.nn.Parameter(torch.randn(s, generator=g, dtype=torch.float32)) for s in SHAPES]
    init = [flat(p) for p in params]
    opt = torch.optim.AdamW(params, lr=c["lr"], betas=c["betas"], eps=c["eps"], weight_decay=c["weight_decay"],
                            foreach=False)
    lrs, grads, after = [], [], []
    for step in range(c["steps"]):
        lr = c["lr"] * (1.0 - 0.1 * step) if c["name"] == "decay_clip_schedule" else c["lr"]
        for grp in opt.param_groups:
            grp["lr"] = lr
        gs = [torch.randn(p.shape, generator=g, dtype=torch.float32) * (0.5 + step) for p in params]
        for p, gr in zip(params, gs):
            p.grad = gr.clone()
        grads.append([flat(x) for x in gs])
        if c["max_grad_norm"] > 0:
            torch.nn.utils.clip_grad_norm_(params, c["max_grad_norm"])
        opt.step()
        lrs.append(lr)
        after.append([flat(p) for p in params])
    return dict(name=c["name"], lr=c["lr"], beta1=c["betas"][0], beta2=c["betas"][1], eps=c["eps"],
                weight_decay=c["weight_decay"], max_grad_norm=c["max_grad_norm"], shapes=[list(s) for s in SHAPES],
                lrs=lrs, init=init, grads=grads, after=after)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(here, "..", "tests", "fixtures", "train", "adamw_torch.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    doc = {"torch": torch.__version__, "cases": [run(c, 100 + i) for i, c in enumerate(CASES)]}
    with open(a.out, "w") as f:
        json.dump(doc, f)
        f.write("\n")
    print("wrote", a.out)


if __name__ == "__main__":
    main()
