#!/usr/bin/env python3
"""Hugging Face reference fixtures for staticgrad's Qwen2 + LoRA parity tests.

Default mode: builds small random Qwen2 checkpoints with transformers, a PEFT
LoRA adapter with non-zero A and B for each, masked pre-tokenized data, and the
reference logits, loss and LoRA gradients, all in float32 on the CPU. Layout and
the exact computation: tests/fixtures/hf/README.md.

    python3 scripts/make_hf_fixtures.py [--out tests/fixtures/hf] [--only CASE]

Check modes (for files written by the staticgrad tool):

    --check-adapter ADAPTER_DIR --model MODEL_DIR --data DATA.jsonl --logits OURS.safetensors [--tol T]
        Loads the adapter with PeftModel.from_pretrained on top of MODEL_DIR,
        computes per-line logits and compares them with our `logits.<line>`.
    --check-merged MERGED_DIR --model MODEL_DIR --adapter ADAPTER_DIR [--data DATA.jsonl] [--tol T]
        Loads MERGED_DIR with AutoModelForCausalLM and compares its logits with
        MODEL_DIR + ADAPTER_DIR (PEFT, unmerged).
Both print the max relative error (max |ours - ref| / max |ref|, per line and
overall) and exit with status 1 when it exceeds --tol.
"""
import argparse
import copy
import json
import os
import shutil
import sys

import torch
import torch.nn.functional as F

ALL7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# The tiny static block shape shared by every case (the C++ block is compiled for it).
BLOCK = dict(hidden_size=128, intermediate_size=384, num_attention_heads=4, num_key_value_heads=2)  # head_dim 32

CASES = {
    # name: model and adapter settings, sequence lengths of data.jsonl
    "tied_v97_l1_r4_all7": dict(
        vocab=97, layers=1, tied=True, eps=1e-6, theta=1e6, save_dtype="float32",
        r=4, alpha=16, targets=ALL7, rslora=False, lengths=[5, 12, 23, 40, 9], seed=1),
    "untied_v256_l2_r8_rslora_subset": dict(
        vocab=256, layers=2, tied=False, eps=1e-5, theta=1e6, save_dtype="bfloat16",
        r=8, alpha=16, targets=["q_proj", "v_proj", "o_proj", "down_proj"], rslora=True,
        lengths=[17, 6, 31, 11], fully_masked_line=3, seed=2),
    "tied_v1000_l3_r8_all7_theta1e4": dict(
        vocab=1000, layers=3, tied=True, eps=1e-6, theta=1e4, save_dtype="bfloat16",
        r=8, alpha=16, targets=ALL7, rslora=False, lengths=[5, 19, 28], seed=3),
}


def versions():
    import peft
    import transformers
    return {"torch": torch.__version__, "transformers": transformers.__version__, "peft": peft.__version__}


def load_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def line_logits(model, ids):
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0].float()


def build_case(name, c, root):
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(c["seed"])
    g = torch.Generator().manual_seed(1000 + c["seed"])
    cfg = Qwen2Config(vocab_size=c["vocab"], num_hidden_layers=c["layers"], tie_word_embeddings=c["tied"],
                      rms_norm_eps=c["eps"], rope_parameters={"rope_type": "default", "rope_theta": c["theta"]},
                      max_position_embeddings=512, use_sliding_window=False, bos_token_id=None,
                      eos_token_id=c["vocab"] - 1, **BLOCK)
    model = Qwen2ForCausalLM(cfg).to(torch.float32)
    model.config._attn_implementation = "eager"
    # Random weights that are exactly representable in bf16, so a bf16 copy of
    # the checkpoint holds the same numbers the float32 reference used.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if "norm" in pname:
                v = 1.0 + 0.1 * torch.randn(p.shape, generator=g)
            elif pname.endswith("bias"):
                v = 0.05 * torch.randn(p.shape, generator=g)
            else:
                v = 0.05 * torch.randn(p.shape, generator=g)
            p.copy_(v.to(torch.bfloat16).to(torch.float32))
    assert model.config.rope_parameters["rope_theta"] == c["theta"]

    out = os.path.join(root, name)
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    save_dtype = getattr(torch, c["save_dtype"])
    # A copy is cast for saving: casting the model itself would also round its
    # float32 RoPE inv_freq buffer to bf16 and change the reference.
    copy.deepcopy(model).to(save_dtype).save_pretrained(out)  # config.json + model.safetensors

    lc = LoraConfig(r=c["r"], lora_alpha=c["alpha"], target_modules=c["targets"], lora_dropout=0.0,
                    use_rslora=c["rslora"], bias="none", task_type="CAUSAL_LM")
    pm = get_peft_model(model, lc)
    with torch.no_grad():  # non-zero B (PEFT initialises it to zero), fresh A too
        for pname, p in pm.named_parameters():
            if "lora_A" in pname:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif "lora_B" in pname:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    pm.save_pretrained(os.path.join(out, "adapter"))
    os.remove(os.path.join(out, "adapter", "README.md"))  # a generated model card; not read by PEFT

    # Data: random tokens; labels = tokens with a masked prompt prefix and a few
    # masked positions; optionally one line with every label masked.
    lines = []
    for i, n in enumerate(c["lengths"]):
        ids = torch.randint(0, c["vocab"], (n,), generator=g).tolist()
        labels = list(ids)
        prompt = int(torch.randint(1, max(2, n // 3), (1,), generator=g))
        for t in range(n):
            if t < prompt or float(torch.rand(1, generator=g)) < 0.15:
                labels[t] = -100
        if c.get("fully_masked_line") == i:
            labels = [-100] * n
        lines.append({"input_ids": ids, "labels": labels})
    with open(os.path.join(out, "data.jsonl"), "w") as f:
        for ln in lines:
            f.write(json.dumps(ln) + "\n")

    # Reference: per-line forward, summed token CE over shifted labels, divided
    # by the total count of counted tokens of the file; backward to LoRA params.
    pm.eval()  # dropout is 0 everywhere; eval only fixes the mode
    pm.zero_grad()
    total_sum = torch.zeros((), dtype=torch.float32)
    total_tokens = 0
    tensors = {}
    line_sums, line_tokens = [], []
    for i, ln in enumerate(lines):
        ids = torch.tensor([ln["input_ids"]])
        labels = torch.tensor(ln["labels"])
        logits = pm(input_ids=ids).logits[0].float()  # [len, vocab]
        tensors[f"logits.{i}"] = logits.detach().clone().contiguous()
        s = F.cross_entropy(logits[:-1], labels[1:], ignore_index=-100, reduction="sum")
        k = int((labels[1:] != -100).sum())
        total_sum = total_sum + s
        total_tokens += k
        line_sums.append(float(s.detach()))
        line_tokens.append(k)
        if k > 0:  # cross-check against the loss transformers computes itself (mean per line)
            hf = pm(input_ids=ids, labels=labels[None]).loss
            assert torch.allclose(hf * k, s.detach(), rtol=1e-5, atol=1e-5), (name, i, float(hf * k), float(s))
    loss = total_sum / total_tokens
    loss.backward()
    tensors["loss"] = loss.detach().reshape(1)
    tensors["tokens"] = torch.tensor([total_tokens], dtype=torch.int64)
    tensors["line_loss_sum"] = torch.tensor(line_sums, dtype=torch.float32)
    tensors["line_tokens"] = torch.tensor(line_tokens, dtype=torch.int64)
    n_grads = 0
    for pname, p in pm.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and ("lora_A" in pname or "lora_B" in pname), pname
            tensors[pname.replace(".default.", ".")] = p.grad.detach().clone().contiguous()
            n_grads += 1
    # PEFT's own LoRA scaling factor of a targeted module (alpha/r or alpha/sqrt(r)).
    first = next(m for m in pm.modules() if hasattr(m, "scaling") and isinstance(m.scaling, dict))
    meta = {"format": "pt", "lora_scaling": repr(float(first.scaling["default"])), **versions()}
    save_file(tensors, os.path.join(out, "expected.safetensors"), metadata=meta)

    # The saved files alone must reproduce the reference logits (bf16 cases
    # hold bf16-exact weights, so this is exact).
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager")
    re = PeftModel.from_pretrained(base, os.path.join(out, "adapter")).eval()
    for i, ln in enumerate(lines):
        d = (line_logits(re, ln["input_ids"]) - tensors[f"logits.{i}"]).abs().max()
        assert float(d) == 0.0, (name, i, float(d))
    print(f"{name}: loss {float(loss):.6f} over {total_tokens} tokens, {n_grads} gradients")


def rel_err(ours, ref):
    return float((ours.float() - ref.float()).abs().max() / ref.float().abs().max().clamp_min(1e-30))


def report(errs, tol):
    worst = max(errs) if errs else 0.0
    for i, e in enumerate(errs):
        print(f"line {i}: max relative error {e:.3e}")
    print(f"max relative error {worst:.3e} (tolerance {tol:.1e})")
    return 0 if worst <= tol else 1


def check_adapter(a):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
    pm = PeftModel.from_pretrained(base, a.check_adapter).eval()
    ours = load_file(a.logits)
    errs = []
    for i, ln in enumerate(load_jsonl(a.data)):
        key = f"logits.{i}"
        if key not in ours:
            print(f"missing {key} in {a.logits}")
            return 1
        errs.append(rel_err(ours[key], line_logits(pm, ln["input_ids"])))
    return report(errs, a.tol)


def check_merged(a):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(a.check_merged, dtype=torch.float32, attn_implementation="eager")
    base = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32, attn_implementation="eager")
    pm = PeftModel.from_pretrained(base, a.adapter).eval()
    if a.data:
        seqs = [ln["input_ids"] for ln in load_jsonl(a.data)]
    else:
        g = torch.Generator().manual_seed(0)
        v = merged.config.vocab_size
        seqs = [torch.randint(0, v, (n,), generator=g).tolist() for n in (7, 23)]
    errs = [rel_err(line_logits(merged.eval(), s), line_logits(pm, s)) for s in seqs]
    return report(errs, a.tol)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures", "hf"))
    ap.add_argument("--only", action="append", help="build only these cases")
    ap.add_argument("--check-adapter", metavar="DIR")
    ap.add_argument("--check-merged", metavar="DIR")
    ap.add_argument("--model", metavar="DIR")
    ap.add_argument("--adapter", metavar="DIR")
    ap.add_argument("--data", metavar="FILE")
    ap.add_argument("--logits", metavar="FILE")
    ap.add_argument("--tol", type=float, default=1e-4)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.check_adapter:
        if not (a.model and a.data and a.logits):
            ap.error("--check-adapter needs --model, --data and --logits")
        sys.exit(check_adapter(a))
    if a.check_merged:
        if not (a.model and a.adapter):
            ap.error("--check-merged needs --model and --adapter")
        sys.exit(check_merged(a))
    print("versions:", versions())
    for name, c in CASES.items():
        if not a.only or name in a.only:
            build_case(name, c, a.out)


if __name__ == "__main__":
    main()
