#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/qwen2_cases.json: texts and the ids Hugging
Face `tokenizers` gives them with the vendored Qwen2 tokenizer, plus its
pre-tokenizer pieces and its decode of the ids. tests/io/test_tokenizer.cpp
checks staticgrad's tokenizer against every case.

Usage: python3 scripts/make_tokenizer_fixture.py   (needs `pip install tokenizers`)
"""
import gzip
import json
import pathlib
import random
import unicodedata

import tokenizers
from tokenizers import Tokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
TOK = ROOT / "data/qwen2-tokenizer/tokenizer.json.gz"
OUT = ROOT / "tests/fixtures/tokenizer/qwen2_cases.json"

# Hand-written cases, one per behaviour the issue names.
CASES = [
    ("empty", ""),
    ("prose", "The quick brown fox jumps over the lazy dog. It wasn't me, said the cat."),
    ("contractions_any_case", "I'm, you're, we've, they'll, he'd, it's, don't; I'M YOU'RE WE'VE THEY'LL HE'D IT'S DON'T; I'm You'Re wE'vE tHeY'lL"),
    ("contractions_edge", "'s 'S 'ſa 'ſ 're're 'RE 'll 'lL 'x '' ''s rock'n'roll o'clock 'tis"),
    ("code_python", "def f(x: int) -> int:\n    \"\"\"Doc.\"\"\"\n    return x**2 + 1  # comment\n\nclass A(B):\n\tpass\n"),
    ("code_cpp", "template <class T>\nstd::vector<T> v{1, 2, 3};\nif (a != b && c <= d) { return -1; }\n// end\r\n"),
    ("cjk", "你好，世界！这是一个测试。日本語のテキストも、カタカナもひらがなも。한국어 텍스트입니다."),
    ("emoji", "👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🇯🇵🇫🇷 ❤️ ✨done✨ a😀b"),
    ("whitespace_runs", "a  b   c    d\n\ne\n\n\nf \n g  \n\n  h\t\ti \t \n\t j   "),
    ("crlf", "line one\r\nline two\r\n\r\n  indented\r\n\ttabbed\r\r\n"),
    ("trailing_spaces", "end with spaces    "),
    ("only_newlines", "\n\n\n"),
    ("unicode_spaces", "x\u00a0y x\u00a0\u00a0y x\u3000y x\u3000\u3000y x\x0by x\x0cy x\u0085y x\u2028y x\u2029y x\u202fy x\u205fy x\u1680y x\u2003\u2003y x\u200by x\ufeffy"),
    ("digits", "0 12 345 6789 3.14159 1,000,000 2024-05-01 ０１２ ٣٤٥ ²³ ½ Ⅻ ①"),
    ("specials_in_text", "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|><|endoftext|>"),
    ("specials_glued", "a<|endoftext|>b<|im_end|><|im_start|><tool_call>{}</tool_call>x<|fim_prefix|>y<|file_sep|>"),
    ("special_lookalikes", "<|im_start <|im_end| <|endoftext|| <|unknown|> <tool_call <|"),
    ("nfc_composition", "Cafe\u0301 cafe\u0301s A\u030a \u1100\u1161\u11a8 e\u0301\u0323 \u212b \u2126"),
    ("combining_marks", "हिन्दी नमस्ते a\u0300\u0301\u0302 ก้า x\u0338 \u0301start"),
    ("mixed_scripts", "Привет, мир! Γειά σου Κόσμε! مرحبا بالعالم שלום עולם"),
    ("punctuation_runs", "!!! ??? ... --- === *** ((( ))) \"\"\" ''' ``` ~~~ !?\n.,;:\n\n"),
    ("markdown", "# Title\n\n- item *one*\n- item **two**\n\n```python\nprint('x')\n```\n\n| a | b |\n|---|---|\n"),
    ("url_json", "see https://example.com/a?b=c&d=e#f and {\"key\": [1, 2.5, null, true], \"s\": \"v\\n\"}"),
    ("long_repeat", "=" * 300 + " " + "ab" * 200 + " " + " " * 100 + "x"),
    ("math_symbols", "∀x∈ℝ: x²≥0, ∑ᵢ aᵢ ≤ ∞ → √2 ≈ 1.414; α+β=γ"),
    ("control_chars", "a\x00b\x01c\x1fd\x7fe\x1cf"),
    # Added tokens are split off the raw text before NFC: '>' + U+0338 after
    # <|file_sep|> stays two characters (NFC of the whole text makes U+226F).
    ("added_token_then_combining_mark", "<|file_sep|>\u0338 x<|im_end|>\u0301b <|im_end|\u0338> e\u0301<|endoftext|>"),
]

# Characters for random strings: each class of the pre-tokenizer and the
# characters where classes meet. Only characters assigned before Unicode 14,
# so ICU 72 (Unicode 15) and `tokenizers` agree on them.
ALPHABET = (
    list("abcXYZ019 '\"!?.,;:-_()[]{}<>/\\|@#$%^&*+=~`") + ["s", "t", "re", "ll", "S", "LL"]
    + [" ", " ", " ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", "\x0b", "\x0c", "\u00a0", "\u3000", "\u2028", "\u0085"]
    + list("éüßøñçğışž") + ["e\u0301", "a\u030a", "\u0301", "\u0308", "\u0323"]
    + list("你好世界中文字。，！") + list("ひらがなカタカナ") + list("한국어")
    + list("हिन्दी") + list("مرحبا") + list("Привет")
    + list("٣४５²½Ⅻ①") + ["😀", "👍🏽", "👨‍👩‍👧", "❤️", "🇫🇷", "\u200d", "\ufe0f"]
    + ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|im_", "ſ", "\u017f"]
)


def random_cases(n, seed):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        k = rng.randint(1, 40)
        out.append((f"random_{i}", "".join(rng.choice(ALPHABET) for _ in range(k))))
    return out


def random_wide_cases(n, seed, normalizer):
    """Random strings over all of Unicode (every plane, assigned or not). Strings
    whose NFC by `tokenizers` differs from Python's unicodedata NFC are left
    out: the unicode-normalization crate inside `tokenizers` has outdated
    combining classes for ~90 rare marks (docs/tokenizer.md), where staticgrad
    follows the Unicode standard."""
    rng = random.Random(seed)
    out = []
    while len(out) < n:
        chars = []
        for _ in range(rng.randint(1, 30)):
            r = rng.random()
            if r < 0.3:
                cp = rng.randint(0x20, 0x7E)
            elif r < 0.4:
                cp = ord(rng.choice(" \t\n\r\x0b\x0c\x85\xa0\u3000\u2028 '"))
            elif r < 0.7:
                cp = rng.randint(0x80, 0x2FFF)
            elif r < 0.9:
                cp = rng.randint(0x3000, 0xFFFD)
            else:
                cp = rng.randint(0x10000, 0x2FFFF)
            chars.append(chr(cp) if not 0xD800 <= cp < 0xE000 else "x")
        text = "".join(chars)
        if normalizer.normalize_str(text) == unicodedata.normalize("NFC", text):
            out.append((f"random_wide_{len(out)}", text))
    return out


def main():
    tok = Tokenizer.from_str(gzip.decompress(TOK.read_bytes()).decode("utf-8"))
    pre = tok.pre_tokenizer
    # Inverse of GPT-2's byte-to-unicode map, to turn byte-level pieces into text.
    bs = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    u2b = {chr(c): b for b, c in zip(bs, cs)}

    cases = []
    # A real source file of this repository, as a longer mixed code-and-prose text.
    repo_text = [("repo_source_file", (ROOT / "include/staticgrad/io/pretokenize.hpp").read_text(encoding="utf-8"))]
    wide = random_wide_cases(300, seed=20240602, normalizer=tok.normalizer)
    for name, text in CASES + repo_text + random_cases(300, seed=20240601) + wide:
        enc = tok.encode(text, add_special_tokens=False)
        norm = unicodedata.normalize("NFC", text)
        # Pieces of the pre-tokenizer on special-free NFC text only (specials
        # are split off before pre-tokenization).
        pieces = None
        if "<|" not in text and "<tool_call>" not in text:
            pieces = [bytes(u2b[c] for c in p).decode("utf-8") for p, _ in pre.pre_tokenize_str(norm)]
        cases.append({
            "name": name,
            "text": text,
            "ids": enc.ids,
            "decoded": tok.decode(enc.ids, skip_special_tokens=False),
            "decoded_skip_special": tok.decode(enc.ids, skip_special_tokens=True),
            "pieces": pieces,
        })
    OUT.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "generator": "scripts/make_tokenizer_fixture.py",
        "tokenizers_version": tokenizers.__version__,
        "tokenizer": "data/qwen2-tokenizer/tokenizer.json.gz",
        "cases": cases,
    }
    OUT.write_text(json.dumps(doc, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"wrote {len(cases)} cases to {OUT.relative_to(ROOT)}")

    # Input and expected output of `staticgrad tokenize` (tests/io/run_tokenize_cli.cmake):
    # the hand-written cases without control characters, whose JSON spelling
    # could differ between JSON writers.
    cli = [c for c in cases[: len(CASES)] if not any(ord(ch) < 0x20 and ch not in "\t\n\r" or ord(ch) == 0x7F for ch in c["text"])]
    d = OUT.parent
    (d / "cli_input.jsonl").write_text("".join(json.dumps(c["text"], ensure_ascii=False) + "\n" for c in cli), encoding="utf-8")
    (d / "cli_expected_ids.jsonl").write_text("".join(json.dumps(c["ids"], separators=(",", ":")) + "\n" for c in cli), encoding="utf-8")
    (d / "cli_expected_decoded.jsonl").write_text("".join(json.dumps(c["decoded"], ensure_ascii=False) + "\n" for c in cli), encoding="utf-8")
    print(f"wrote {len(cli)} lines of cli_*.jsonl")


if __name__ == "__main__":
    main()
