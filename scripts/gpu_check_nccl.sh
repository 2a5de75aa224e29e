#!/usr/bin/env bash
# Data-parallel `staticgrad finetune --gpus N` on the device (docs/multi_gpu.md).
# Run from the repository root with the build folder build/ (STATICGRAD_NCCL ON;
# targets staticgrad_cli and gpu_test_finetune_nccl):
#
#   bash scripts/gpu_check_nccl.sh            # the checks below
#   MODEL=DIR bash scripts/gpu_check_nccl.sh  # and the scaling run on that checkpoint
#
#  1. one GPU:  gpu_test_finetune_nccl 1  (--gpus 1, one NCCL rank, = the plain run)
#  2. >= 2 GPUs: gpu_test_finetune_nccl 2  (--gpus 2 --grad-accum 1 = 1 GPU --grad-accum 2;
#               rank 1 SIGKILLed after step 3 ends the job naming it)
#  3. >= 2 GPUs: a launcher-style start (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT, the TCP
#               id exchange), rank 1 then SIGSTOPped: rank 0 must exit 1 within
#               STATICGRAD_NCCL_TIMEOUT (10 s here) + 30 s, naming itself and the NCCL operation
#  4. MODEL set, >= 2 GPUs: tok/s of --gpus 1 and --gpus N (all GPUs), 8 x 2048 tokens per GPU
#     micro-batch, the mean of steps 6..20 (the numbers for docs/performance.md)
# Prints PASS / FAIL / SKIP lines; logs in $OUT (default /tmp/gpu_check_nccl).
set -u
OUT=${OUT:-/tmp/gpu_check_nccl}
rm -rf "$OUT" && mkdir -p "$OUT"
T=./build/staticgrad
TEST=./build/tests/gpu_test_finetune_nccl
export STATICGRAD_TOOL="$T"
G=$(nvidia-smi --query-gpu=name --format=csv,noheader | wc -l)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
echo "GPUs: $G"
status=0
verdict() {  # name rc
  if [ "$2" -eq 0 ]; then echo "PASS $1"; elif [ "$2" -eq 77 ]; then echo "SKIP $1"; else echo "FAIL $1 (rc $2)"; status=1; fi
}

STATICGRAD_FINETUNE_DIR="$OUT/one" timeout 600 "$TEST" 1 > "$OUT/one.log" 2>&1
rc=$?; grep -E '^(ok|FAIL)|losses:' "$OUT/one.log"; verdict "one NCCL rank (--gpus 1) = the plain one-GPU run" $rc

if [ "$G" -ge 2 ]; then
  STATICGRAD_FINETUNE_DIR="$OUT/two" timeout 600 "$TEST" 2 > "$OUT/two.log" 2>&1
  rc=$?; grep -E '^(ok|FAIL)|step [0-9]+  loss|adapter' "$OUT/two.log"
  verdict "--gpus 2 --grad-accum 1 = one GPU --grad-accum 2; a killed rank ends the job" $rc

  W="$OUT/one"  # the checkpoint and data test 1 kept
  args=(finetune --device cuda --model "$W/model" --data "$W/data.jsonl" --tokenizer data/qwen2-tokenizer
        --steps 100000 --batch-tokens 512 --max-len 64 --lr 1e-3 --lora-r 8 --seed 3 --log-every 1)
  port=$((29500 + RANDOM % 1000))
  for r in 0 1; do
    RANK=$r WORLD_SIZE=2 LOCAL_RANK=$r MASTER_ADDR=127.0.0.1 MASTER_PORT=$port STATICGRAD_NCCL_TIMEOUT=10 \
      "$T" "${args[@]}" --out "$OUT/hang" > "$OUT/hang.$r.log" 2>&1 &
    eval "pid$r=$!"
  done
  for _ in $(seq 600); do grep -qE '^step +20/' "$OUT/hang.0.log" 2>/dev/null && break; sleep 0.1; done
  kill -STOP "$pid1"
  t0=$(date +%s)
  for _ in $(seq 400); do kill -0 "$pid0" 2>/dev/null || break; sleep 0.1; done
  wait "$pid0"; rc0=$?
  secs=$(( $(date +%s) - t0 ))
  kill -KILL "$pid1" 2>/dev/null; wait "$pid1" 2>/dev/null
  tail -n 2 "$OUT/hang.0.log"
  [ "$rc0" -eq 1 ] && grep -q 'rank 0 of 2: NCCL' "$OUT/hang.0.log"
  verdict "a hung rank: rank 0 ends (rc $rc0) after ${secs} s with an NCCL timeout naming the rank" $?
else
  echo "SKIP --gpus 2 checks (one GPU)"
fi

if [ -n "${MODEL:-}" ] && [ "$G" -ge 2 ]; then
  python3 - "$OUT/scale.jsonl" <<'PY'
import json, random, sys
random.seed(0)
with open(sys.argv[1], "w") as f:
    for _ in range(4096):
        f.write(json.dumps({"input_ids": [random.randrange(1000, 30000) for _ in range(2048)]}) + "\n")
PY
  for n in 1 "$G"; do
    timeout 600 "$T" finetune --device cuda --gpus "$n" --model "$MODEL" --data "$OUT/scale.jsonl" --out "$OUT/scale$n" \
      --steps 20 --batch-tokens 16384 --max-len 2048 --lora-r 16 --log-every 1 > "$OUT/scale$n.log" 2>&1
    rate=$(awk '/^step/ { split($2, s, "/"); for (i = 1; i <= NF; ++i) if ($i == "tok/s") t = $(i + 1);
                          if (s[1] > 5) { sum += t; k++ } } END { if (k) printf "%.0f", sum / k }' "$OUT/scale$n.log")
    echo "scaling: --gpus $n: ${rate:-none} tokens/s (global, mean of steps 6..20); log $OUT/scale$n.log"
    eval "rate$n=${rate:-0}"
  done
  python3 -c "import sys; a, b = float(sys.argv[1]), float(sys.argv[2]); print('scaling: %sx on %s GPUs' % (round(b / a, 2) if a else 'n/a', sys.argv[3]))" "$rate1" "$(eval echo \$rate$G)" "$G"
fi
exit $status
