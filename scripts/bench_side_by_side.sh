#!/usr/bin/env bash
# Side by side in one device call: HF + PEFT, HF + PEFT + Liger, Unsloth and
# staticgrad's bench_model_step on the same GPU, same setting (bf16, LoRA
# r = 16 alpha 16 on all seven projections, batch 8 x 2048, random tokens,
# AdamW, no gradient checkpointing), then one table with each size's ratio of
# staticgrad to the fastest peer (scripts/peers/side_by_side_table.py), and
# the attention anchor (PyTorch SDPA per backend at the same heads).
#
#   scripts/bench_side_by_side.sh BENCH_MODEL_STEP [PEERS_SITE_TGZ]
#
# BENCH_MODEL_STEP: the bench_model_step binary (built on the build machine
# and carried, e.g. .dev/<name>/bench_model_step). PEERS_SITE_TGZ (default
# .whl/peers_site.tar.gz): the Python packages the GPU image lacks (Liger,
# Unsloth and their needs), installed with pip --target and trimmed; the
# recipe is docs/performance.md's "Side by side". SIZES (default "0.5B 1.5B")
# picks the models; logs and table.md go to $OUT (or /tmp/side_by_side).
set -u
bench=${1:?usage: bench_side_by_side.sh BENCH_MODEL_STEP [PEERS_SITE_TGZ]}
site_tgz=${2:-.whl/peers_site.tar.gz}
out=${OUT:-/tmp/side_by_side}
sizes=${SIZES:-"0.5B 1.5B"}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out" /tmp/peer_site
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -f "$site_tgz" ] && tar xzf "$site_tgz" -C /tmp/peer_site && export PYTHONPATH=/tmp/peer_site${PYTHONPATH:+:$PYTHONPATH}
gunzip -c "$here/../data/qwen2-tokenizer/tokenizer.json.gz" > /tmp/tokenizer.json
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$out/run.log"
date -u | tee -a "$out/run.log"

plan_hf="[" plan_us="["
for s in $sizes; do
  plan_hf+="[\"$s\",8,2048,false],[\"$s\",8,2048,false,{\"liger\":true}],"
  plan_us+="[\"$s\",8,2048,false],"
done
plan_hf="${plan_hf%,}]" plan_us="${plan_us%,}]"

t0=$(date +%s)
python3 "$here/peers/hf_baseline.py" "$plan_hf" 2>> "$out/run.log" | tee "$out/peers.jsonl"
echo "HF runs: $(( $(date +%s) - t0 )) s" | tee -a "$out/run.log"
t0=$(date +%s)
python3 "$here/peers/unsloth_baseline.py" "$plan_us" /tmp/tokenizer.json 2>> "$out/run.log" | grep '^{' | tee -a "$out/peers.jsonl"
echo "Unsloth runs: $(( $(date +%s) - t0 )) s" | tee -a "$out/run.log"
t0=$(date +%s)
want=""
[ "$sizes" = "0.5B" ] && want=0.5b
[ "$sizes" = "1.5B" ] && want=1.5b
"$bench" $want --steps 10 2>&1 | tee "$out/staticgrad.log"
echo "staticgrad runs: $(( $(date +%s) - t0 )) s" | tee -a "$out/run.log"
python3 "$here/peers/attn_anchor.py" 2>> "$out/run.log" | tee "$out/attn.jsonl"

python3 "$here/peers/side_by_side_table.py" "$out/peers.jsonl" "$out/staticgrad.log" "$out/attn.jsonl" | tee "$out/table.md"
