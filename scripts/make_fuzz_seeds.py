#!/usr/bin/env python3
"""Writes the seed corpora of the libFuzzer harnesses (tests/fuzz/corpus/<harness>/).

Seeds are small valid inputs (plus a few near misses) taken from the test
fixtures or built here: libFuzzer mutates them, so they only need to reach
every branch of the reader. Run from the repository root; the output is
committed, so this is needed only to change the seeds.
"""
import gzip
import json
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fuzz" / "corpus"
FIX = ROOT / "tests" / "fixtures"


def put(harness, name, data):
    d = OUT / harness
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def safetensors_bytes(header, data):
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    return len(h).to_bytes(8, "little") + h + data


# safetensors: the every-dtype fixture and two tiny files written here.
put("safetensors", "mixed", (FIX / "safetensors" / "mixed.safetensors").read_bytes())
put("safetensors", "f32_pair", safetensors_bytes(
    {"__metadata__": {"format": "pt"}, "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
     "b": {"dtype": "BF16", "shape": [1, 2], "data_offsets": [8, 12]}},
    bytes.fromhex("0000803f000000c0803f0040")))
put("safetensors", "i64_empty", safetensors_bytes(
    {"e": {"dtype": "F16", "shape": [0], "data_offsets": [0, 0]},
     "i": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}}, (7).to_bytes(8, "little")))

# config.json and adapter_config.json: the Hugging Face fixtures.
for d in sorted((FIX / "hf").iterdir()):
    if d.is_dir():
        put("hf_config", d.name, (d / "config.json").read_bytes())
        put("adapter_config", d.name, (d / "adapter" / "adapter_config.json").read_bytes())

# Data: the first byte selects loader options (fuzz_dataset.cpp); then JSONL
# lines of every shape.
cases = [json.loads(l)["line"] for l in (FIX / "tokenizer" / "dataset_cases.jsonl").read_text().splitlines() if l]
shapes = {}
for c in cases:
    key = "input_ids" if "input_ids" in c else next(iter(c))
    shapes.setdefault(key, []).append(json.dumps(c, ensure_ascii=False))
for i, (key, lines) in enumerate(sorted(shapes.items())):
    put("dataset", key, bytes([i * 37 % 256]) + ("\n".join(lines) + "\n").encode())
put("dataset", "input_ids", b"\x02" + b'{"input_ids": [785, 3974, 13876], "labels": [-100, 3974, 13876]}\n'
    b'{"input_ids": [151643, 0, 1]}\n{"input_ids": [5, 6], "labels": null}\n')
put("dataset", "mixed_crlf_blank", b"\x05" + "\r\n".join(
    json.dumps(c, ensure_ascii=False) for c in cases).encode() + b"\r\n\r\n")

# Tokenizer encode/decode: texts of the CLI fixture.
for i, l in enumerate((FIX / "tokenizer" / "cli_input.jsonl").read_text().splitlines()):
    if l:
        t = json.loads(l)
        t = t.get("text") if isinstance(t, dict) else t
        if isinstance(t, str):
            put("tokenizer", f"text{i:02d}", t.encode())

# tokenizer.json: the Qwen2 structure with the 256 byte tokens, a few merges
# and the added tokens (the real file is 7 MB: too slow to mutate).
real = json.load(gzip.open(ROOT / "data" / "qwen2-tokenizer" / "tokenizer.json.gz"))
vocab = {k: v for k, v in real["model"]["vocab"].items() if v < 256}
merges = []
for a, b in real["model"]["merges"][:400]:
    if a in vocab and b in vocab and a + b in real["model"]["vocab"] and len(vocab) < 300:
        vocab[a + b] = len(vocab)
        merges.append([a, b])
mini = {k: real[k] for k in ("version", "truncation", "padding", "normalizer", "pre_tokenizer", "post_processor", "decoder")
        if k in real}
mini["added_tokens"] = [dict(a, id=len(vocab) + i) for i, a in enumerate(real["added_tokens"][:3])]
mini["model"] = dict(real["model"], vocab=vocab, merges=merges)
put("tokenizer_json", "mini_qwen2", json.dumps(mini, ensure_ascii=False))
mini["model"]["merges"] = [" ".join(m) for m in merges[:10]]
put("tokenizer_json", "mini_string_merges", json.dumps(mini, ensure_ascii=False))
