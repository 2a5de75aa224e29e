"""Side-by-side table of one run of scripts/bench_side_by_side.sh.

  python3 side_by_side_table.py PEERS_JSONL STATICGRAD_LOG [ATTN_JSONL]

PEERS_JSONL: the JSON lines of hf_baseline.py and unsloth_baseline.py (lines
with an "error" key are reported, not tabulated); STATICGRAD_LOG: the output of
bench_model_step, whose summary rows read
  | Qwen2.5-1.5B | staticgrad ... | 54500 | 37.2 GiB allocated, ...
Prints a Markdown table: tokens/s and peak allocated GiB per system and size,
and staticgrad's ratio to the fastest peer of the same size."""
import json
import re
import sys


def peers(path):
    rows, errors = {}, []
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "error" in r:
            errors.append(r)
            continue
        if "size" not in r or "tokens_per_s" not in r or r.get("gc"):
            continue  # version lines; gradient-checkpointed runs are another setting
        name = {"hf+peft": "HF + PEFT", "hf+peft+liger": "HF + PEFT + Liger"}.get(r["system"], r["system"])
        if name == "unsloth":
            name = "Unsloth " + r.get("unsloth", "")
        rows.setdefault(r["size"], {})[name.strip()] = (r["tokens_per_s"], r["peak_gib"])
    return rows, errors


def staticgrad(path):
    rows = {}
    pat = re.compile(r"\|\s*Qwen2\.5-([\d.]+B)\s*\|\s*staticgrad[^|]*\|\s*([\d.]+)\s*\|\s*([\d.]+) GiB allocated")
    for line in open(path):
        m = pat.search(line)
        if m:
            rows[m.group(1)] = (float(m.group(2)), float(m.group(3)))
    return rows


def main():
    peer_rows, errors = peers(sys.argv[1])
    sg = staticgrad(sys.argv[2])
    systems = ["HF + PEFT", "HF + PEFT + Liger"] + sorted(
        {n for r in peer_rows.values() for n in r if n.startswith("Unsloth")})
    print("| model | " + " | ".join(systems) + " | staticgrad | staticgrad / best peer |")
    print("|---" * (len(systems) + 3) + "|")
    for size in sorted(set(peer_rows) | set(sg), key=lambda s: float(s[:-1])):
        cells, best = [], 0.0
        for n in systems:
            v = peer_rows.get(size, {}).get(n)
            cells.append(f"{v[0] / 1e3:.1f}k tok/s, {v[1]:.1f} GiB" if v else "-")
            best = max(best, v[0] if v else 0.0)
        s = sg.get(size)
        cells.append(f"{s[0] / 1e3:.1f}k tok/s, {s[1]:.1f} GiB" if s else "-")
        cells.append(f"{s[0] / best:.2f}x" if s and best else "-")
        print(f"| Qwen2.5-{size} | " + " | ".join(cells) + " |")
    if len(sys.argv) > 3:
        print("\n| attention (SDPA backend, heads) | fwd TFLOP/s | bwd TFLOP/s |\n|---|---|---|")
        for line in open(sys.argv[3]):
            if line.startswith("{") and "fwd_tflops" in line:
                r = json.loads(line)
                print(f"| {r.get('backend')} {r.get('heads', '')} | {r['fwd_tflops']} | {r['bwd_tflops']} |")
    for e in errors:
        print(f"\nerror in {e.get('system', 'hf')} {e.get('plan')}: {e['error'][:300]}")


if __name__ == "__main__":
    main()
