#!/usr/bin/env bash
# End-to-end check of what the staticgrad tool writes, against transformers +
# PEFT (local torch, CPU): for each Hugging Face fixture case,
#   1. staticgrad finetune  -> OUT/CASE/adapter (a PEFT adapter, trained B != 0)
#   2. staticgrad logits    -> our per-line logits with that adapter
#   3. make_hf_fixtures.py --check-adapter: PeftModel.from_pretrained(base, adapter)
#      gives the same logits
#   4. staticgrad merge     -> OUT/CASE/merged
#   5. make_hf_fixtures.py --check-merged: AutoModelForCausalLM on the merged
#      checkpoint gives the logits of base + adapter (PEFT, unmerged)
# Usage: scripts/check_peft_roundtrip.sh [TOOL=build-cpu/staticgrad] [OUT=build-cpu/peft_roundtrip]
# Exits non-zero on the first failure. Tolerances: 1e-4 (max relative) for
# float32 checkpoints; merged BF16 checkpoints hold W + s B A rounded to bf16,
# so their logits are checked to 1e-2 (bf16 has 8 significant bits).
set -euo pipefail
cd "$(dirname "$0")/.."
TOOL=${1:-build-cpu/staticgrad}
OUT=${2:-build-cpu/peft_roundtrip}
FX=tests/fixtures/hf
mkdir -p "$OUT"
for CASE in tied_v97_l1_r4_all7 untied_v256_l2_r8_rslora_subset tied_v1000_l3_r8_all7_theta1e4; do
  M=$FX/$CASE
  O=$OUT/$CASE
  rm -rf "$O"
  mkdir -p "$O"
  dtype=$(python3 -c "import json;c=json.load(open('$M/config.json'));print(c.get('dtype') or c.get('torch_dtype'))")
  merged_tol=1e-4
  [ "$dtype" = "bfloat16" ] && merged_tol=1e-2
  echo "== $CASE ($dtype)"
  set -x
  "$TOOL" finetune --model "$M" --data "$M/data.jsonl" --out "$O/adapter" --steps 5 --lr 1e-2 \
      --batch-tokens 128 --max-len 64 --lora-r 4 --lora-alpha 8 --target-modules q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj \
      --seed 1 > "$O/finetune.log"
  "$TOOL" logits --model "$M" --data "$M/data.jsonl" --adapter "$O/adapter" --out "$O/logits.safetensors" > /dev/null
  python3 scripts/make_hf_fixtures.py --check-adapter "$O/adapter" --model "$M" --data "$M/data.jsonl" \
      --logits "$O/logits.safetensors" --tol 1e-4 2>/dev/null | tail -1
  "$TOOL" merge --model "$M" --adapter "$O/adapter" --out "$O/merged" > /dev/null
  python3 scripts/make_hf_fixtures.py --check-merged "$O/merged" --model "$M" --adapter "$O/adapter" \
      --data "$M/data.jsonl" --tol "$merged_tol" 2>/dev/null | tail -1
  { set +x; } 2>/dev/null
done
echo "all PEFT round trips passed"
