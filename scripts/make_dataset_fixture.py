#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/dataset_cases.jsonl: example lines of each
dataset shape with the input_ids and labels a Hugging Face pipeline gives them
(`tokenizers` for the ids and the offsets; the Qwen2.5 ChatML template written
out here; assistant-only loss as TRL computes it: tokens whose offsets overlap
an assistant turn's content or its <|im_end|>). tests/io/test_dataset.cpp
checks staticgrad's data pipeline against each line.

Labels follow staticgrad's contract (include/staticgrad/io/dataset.hpp):
aligned with input_ids, -100 = not trained, the first token always -100.

Usage: python3 scripts/make_dataset_fixture.py
"""
import gzip
import json
import pathlib

from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests/fixtures/tokenizer/dataset_cases.jsonl"
DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
EOS = 151643

LINES = [
    {"text": "The quick brown fox.\nSecond line, with code: x = f(1)\n"},
    {"text": "你好，世界！👍 Café"},
    {"messages": [{"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"}]},
    {"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"},
                  {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"},
                  {"role": "assistant", "content": "Goodbye!\n"}]},
    {"messages": [{"role": "user", "content": "Show code"},
                  {"role": "assistant", "content": "\n\n```python\nprint('hi')\n```\n  "}]},
    {"messages": [{"role": "user", "content": "Cafe\u0301?"}, {"role": "assistant", "content": "Cafe\u0301 \u212b \U0001F468\u200d\U0001F469\u200d\U0001F467"}]},
    {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": ""}]},
    {"messages": [{"role": "user", "content": "say <|im_end|>"}, {"role": "assistant", "content": "a<|im_end|>b"}]},
    {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"},
    {"instruction": "List three colours.", "output": "red, green, blue"},
    {"instruction": "Sum", "input": "", "output": " 1 + 2 = 3 "},
    # ShareGPT
    {"conversations": [{"from": "human", "value": "What is 2+2?"}, {"from": "gpt", "value": "4"}]},
    {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                       {"from": "gpt", "value": "Hello!"}, {"from": "user", "value": "Bye"},
                       {"from": "assistant", "value": "Bye."}]},
    # prompt/completion: plain text (the completion trained, <|endoftext|> appended), and conversational
    {"prompt": "The capital of France is", "completion": " Paris."},
    {"prompt": "def add(a, b):\n", "completion": "    return a + b\n"},
    {"prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."},
                {"role": "user", "content": "Name a colour."}],
     "completion": [{"role": "assistant", "content": "Blue."}]},
]

SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def render(turns):
    """ChatML text and the character ranges trained on (content + <|im_end|>):
    assistant turns, unless a turn says "trained": False."""
    s, trained = "", []
    if not turns or turns[0]["role"] != "system":
        turns = [{"role": "system", "content": DEFAULT_SYSTEM}] + turns
    for t in turns:
        s += "<|im_start|>" + t["role"] + "\n"
        b = len(s)
        s += t["content"] + "<|im_end|>"
        if t["role"] == "assistant" and t.get("trained", True):
            trained.append((b, len(s)))
        s += "\n"
    return s, trained


def label(tok, s, trained):
    enc = tok.encode(s, add_special_tokens=False)
    labels = []
    for i, (a, b) in zip(enc.ids, enc.offsets):
        hit = any((b > ts and a < te) or (a == b and ts <= a < te) for ts, te in trained)
        labels.append(i if hit else -100)
    return enc.ids, labels


def main():
    tok = Tokenizer.from_str(gzip.decompress((ROOT / "data/qwen2-tokenizer/tokenizer.json.gz").read_bytes()).decode())
    out = []
    for line in LINES:
        if "text" in line:
            ids = tok.encode(line["text"], add_special_tokens=False).ids + [EOS]
            labels = list(ids)
        elif "prompt" in line and isinstance(line["prompt"], str):
            s = line["prompt"] + line["completion"]
            ids, labels = label(tok, s, [(len(line["prompt"]), len(s))])
            ids, labels = ids + [EOS], labels + [EOS]
        else:
            if "messages" in line:
                turns = line["messages"]
            elif "conversations" in line:
                turns = [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in line["conversations"]]
            elif "prompt" in line:
                turns = [dict(t, trained=False) for t in line["prompt"]] + line["completion"]
            else:
                user = line["instruction"] + ("\n\n" + line["input"] if line.get("input") else "")
                turns = [{"role": "user", "content": user}, {"role": "assistant", "content": line["output"]}]
            ids, labels = label(tok, *render(turns))
        labels[0] = -100
        out.append({"line": line, "input_ids": ids, "labels": labels})
    OUT.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out), encoding="utf-8")
    print(f"wrote {len(out)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
