"""Side-by-side table of one run of scripts/bench_side_by_side.sh.

  python3 side_by_side_table.py PEERS_JSONL STATICGRAD_LOG [ATTN_JSONL]

PEERS_JSONL: the JSON lines of hf_baseline.py and unsloth_baseline.py (lines
with an "error" key are reported, not tabulated); STATICGRAD_LOG: the output of
bench_model_step, whose table reads
  | model | batch | ms / step | tokens/s | ... | allocated (predicted) | ...
  | Qwen2.5-1.5B | 8 x 2048 | 273.6 | 59891 | ... | 37.20 GiB (37.20) | ...
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
    """bench_model_step's table: the columns are found by their headers
    ("tokens/s", "allocated (predicted)"), so added columns do not break it."""
    rows, cols = {}, None
    for line in open(path):
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if "tokens/s" in cells and "allocated (predicted)" in cells:
            cols = (cells.index("tokens/s"), cells.index("allocated (predicted)"))
            continue
        m = re.match(r"Qwen2\.5-([\d.]+B)$", cells[0]) if cells else None
        if m and cols and len(cells) > max(cols):
            gib = re.match(r"([\d.]+) GiB", cells[cols[1]])
            rows[m.group(1)] = (float(cells[cols[0]]), float(gib.group(1)) if gib else float("nan"))
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
