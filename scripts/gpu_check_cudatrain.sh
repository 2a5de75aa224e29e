#!/usr/bin/env bash
# The GPU checks of CUDA training's options (dropout, memory budget, offloaded layer
# inputs, forward-only eval) on one H100/H200, from the repository root with a
# build folder `build/` (sm_90a) present:
#  1. gpu_test_model_step: the CUDA step against the CPU model (0.5B, 3B, 7B
#     block shapes, 2 layers), now also LoRA dropout p = 0.1 with two
#     accumulated micro-batches against the CPU's masks (0.5B, 3B), dropout
#     under graph capture / replay, and forward_loss (the eval pass: the same
#     loss, no gradient touched);
#  2. gpu_test_finetune_cuda: finetune --device cuda vs --device cpu, now with
#     --lora-dropout 0.1 --grad-accum 2 and --memory-budget (plan printed, a
#     budget that forces recompute gives the same losses, too small a budget fails);
#  3. gpu_test_memory: every memory policy's gradients bit for bit, now with
#     offloaded layer inputs (ring wrap-around, a captured graph with the copy
#     stream), and the measured peak within 5% of the prediction at five budgets;
#     gpu_test_block_executor: regressions (the LoRA products gained the dropout path).
# One PASS/FAIL (or SKIP) line per test; full logs in $OUT (default /tmp/gpu_check_cudatrain).
#
#   bash scripts/gpu_check_cudatrain.sh
set -u
cd "$(dirname "$0")/.."
source scripts/check_common.sh
require_gpu
check gpu_test_model_step build/tests/gpu_test_model_step
grep -E 'dropout|forward_loss' "$OUT/gpu_test_model_step.log" | grep -v ' ok$' | head -20
check gpu_test_finetune_cuda build/tests/gpu_test_finetune_cuda build/staticgrad
grep -E '^(ok|FAIL).*(dropout|memory|budget|plan|recompute)|^memory: ' "$OUT/gpu_test_finetune_cuda.log" | head -30
check gpu_test_memory build/tests/gpu_test_memory
check gpu_test_block_executor build/tests/gpu_test_block_executor
exit $status
