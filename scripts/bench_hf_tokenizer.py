#!/usr/bin/env python3
"""Hugging Face `tokenizers` on the corpus of bench/bench_tokenizer.cpp, for
docs/performance.md. Run with RAYON_NUM_THREADS=1 for the single-thread figure:

    RAYON_NUM_THREADS=1 python3 scripts/bench_hf_tokenizer.py

Measures (a) encode() called per document and (b) encode_batch() over all
documents, add_special_tokens=False, best of --repeat passes (the BPE cache of
`tokenizers` is warm after the first pass, as staticgrad's is).
"""
import argparse
import gzip
import os
import pathlib
import time

import tokenizers
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
LICENSES = ["Apache-2.0", "Artistic", "GFDL-1.3", "GPL-2", "GPL-3", "LGPL-2.1", "LGPL-3", "MPL-1.1", "MPL-2.0"]


def corpus():
    pydir = pathlib.Path(os.environ.get("STATICGRAD_BENCH_PYDIR", "/root/.pyenv/versions/3.11.7/lib/python3.11"))
    files = sorted(str(p) for p in pydir.glob("*.py"))  # byte order of names, as std::sort
    files += [f"/usr/share/common-licenses/{l}" for l in LICENSES]
    docs = []
    for f in files:
        if os.path.exists(f):
            docs.append(pathlib.Path(f).read_bytes().decode("utf-8"))
    return docs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    tok = Tokenizer.from_str(gzip.decompress((ROOT / "data/qwen2-tokenizer/tokenizer.json.gz").read_bytes()).decode())
    docs = corpus()
    nbytes = sum(len(d.encode("utf-8")) for d in docs)
    print(f"tokenizers {tokenizers.__version__}, RAYON_NUM_THREADS={os.environ.get('RAYON_NUM_THREADS', 'unset')}")
    print(f"corpus: {len(docs)} documents, {nbytes / 1e6:.2f} MB")
    best = {}
    for name in ("encode per document", "encode_batch"):
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            if name == "encode_batch":
                out = tok.encode_batch(docs, add_special_tokens=False)
                ntok = sum(len(e.ids) for e in out)
            else:
                ntok = sum(len(tok.encode(d, add_special_tokens=False).ids) for d in docs)
            times.append(time.perf_counter() - t0)
        best[name] = min(times)
        print(f"{name}: best {min(times) * 1e3:.0f} ms, {nbytes / 1e6 / min(times):.2f} MB/s, {ntok} tokens")


if __name__ == "__main__":
    main()
