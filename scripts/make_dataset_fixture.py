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
]


def render(turns):
    """ChatML text and the character ranges trained on (content + <|im_end|>)."""
    s, trained = "", []
    if not turns or turns[0]["role"] != "system":
        turns = [{"role": "system", "content": DEFAULT_SYSTEM}] + turns
    for t in turns:
        s += "<|im_start|>" + t["role"] + "\n"
        b = len(s)
        s += t["content"] + "<|im_end|>"
        if t["role"] == "assistant":
            trained.append((b, len(s)))
        s += "\n"
    return s, trained


def main():
    tok = Tokenizer.from_str(gzip.decompress((ROOT / "data/qwen2-tokenizer/tokenizer.json.gz").read_bytes()).decode())
    out = []
    for line in LINES:
        if "text" in line:
            ids = tok.encode(line["text"], add_special_tokens=False).ids + [EOS]
            labels = list(ids)
        else:
            if "messages" in line:
                turns = line["messages"]
            else:
                user = line["instruction"] + ("\n\n" + line["input"] if line.get("input") else "")
                turns = [{"role": "user", "content": user}, {"role": "assistant", "content": line["output"]}]
            s, trained = render(turns)
            enc = tok.encode(s, add_special_tokens=False)
            ids = enc.ids
            labels = []
            for i, (a, b) in zip(ids, enc.offsets):
                hit = any((b > ts and a < te) or (a == b and ts <= a < te) for ts, te in trained)
                labels.append(i if hit else -100)
        labels[0] = -100
        out.append({"line": line, "input_ids": ids, "labels": labels})
    OUT.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in out), encoding="utf-8")
    print(f"wrote {len(out)} cases to {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
