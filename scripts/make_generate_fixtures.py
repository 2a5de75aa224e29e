#!/usr/bin/env python3
"""Hugging Face greedy-generation fixtures for `staticgrad generate`.

Runs transformers' GenerationMixin.generate (greedy, do_sample=False, its own
KV cache) on the small random Qwen2 checkpoints of tests/fixtures/hf (made by
scripts/make_hf_fixtures.py; regenerate this file after those), with and
without their PEFT adapter (unmerged, PeftModel.from_pretrained), in float32
on the CPU, and writes the prompts, the settings and the generated ids to
tests/fixtures/generate/cases.json. The C++ test (tests/infer/test_generate.cpp)
must produce the same ids, token for token.

    python3 scripts/make_generate_fixtures.py [--out tests/fixtures/generate]
"""
import argparse
import json
import os

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
HF = os.path.join(HERE, "..", "tests", "fixtures", "hf")

# name: checkpoint case, adapter?, prompt length, new tokens, repetition penalty, stop-id choice
CASES = [
    dict(name="v97_base", model="tied_v97_l1_r4_all7", adapter=False, prompt=6, new=30, rep=1.0, seed=11),
    dict(name="v97_lora", model="tied_v97_l1_r4_all7", adapter=True, prompt=6, new=30, rep=1.0, seed=11),
    dict(name="v256_lora_repetition_penalty", model="untied_v256_l2_r8_rslora_subset", adapter=True, prompt=9,
         new=30, rep=1.3, seed=12),
    dict(name="v256_base_long_prompt", model="untied_v256_l2_r8_rslora_subset", adapter=False, prompt=60, new=25,
         rep=1.0, seed=13),
    # stop ids: generation_config's id plus the first new token the greedy
    # continuation reaches at or after stop_at (chosen below)
    dict(name="v1000_lora_stop_list", model="tied_v1000_l3_r8_all7_theta1e4", adapter=True, prompt=5, new=40,
         rep=1.0, seed=14, stop_at=12),
    dict(name="v1000_base", model="tied_v1000_l3_r8_all7_theta1e4", adapter=False, prompt=5, new=40, rep=1.1,
         seed=15),
]


def load(case, adapter):
    from transformers import AutoModelForCausalLM
    path = os.path.join(HF, case)
    m = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    if adapter:
        from peft import PeftModel
        m = PeftModel.from_pretrained(m, os.path.join(path, "adapter"))
    return m.eval()


def greedy(model, prompt, new, eos, rep):
    from transformers import GenerationConfig
    gc = GenerationConfig(do_sample=False, max_new_tokens=new, eos_token_id=eos, pad_token_id=eos[0],
                          repetition_penalty=rep)
    ids = torch.tensor([prompt])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=gc)
    return out[0, len(prompt):].tolist()


def main():
    import peft
    import transformers
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "tests", "fixtures", "generate"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    cases = []
    for c in CASES:
        with open(os.path.join(HF, c["model"], "generation_config.json")) as f:
            eos = json.load(f)["eos_token_id"]
        eos = eos if isinstance(eos, list) else [eos]
        model = load(c["model"], c["adapter"])
        vocab = model.config.vocab_size
        g = torch.Generator().manual_seed(c["seed"])
        prompt = torch.randint(0, vocab - 1, (c["prompt"],), generator=g).tolist()
        if "stop_at" in c:
            free = greedy(model, prompt, c["new"], eos, c["rep"])
            # the first new token at or after stop_at: generation must end there, not earlier
            at = next(i for i in range(c["stop_at"], len(free)) if free[i] not in free[:i] + eos)
            stop = free[at]
            eos = eos + [stop]
        out = greedy(model, prompt, c["new"], eos, c["rep"])
        cases.append(dict(name=c["name"], model=c["model"], adapter=c["adapter"], prompt_ids=prompt,
                          max_new_tokens=c["new"], eos_token_id=eos, repetition_penalty=c["rep"], expected_ids=out))
        print(c["name"], len(out), "tokens", "(stopped)" if out[-1] in eos else "")
    os.makedirs(a.out, exist_ok=True)
    doc = dict(versions={"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__}, cases=cases)
    with open(os.path.join(a.out, "cases.json"), "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
