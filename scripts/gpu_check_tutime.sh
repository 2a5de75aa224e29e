#!/usr/bin/env bash
# The tutime branch's GPU checks (one H100/H200), from the repository root
# with this branch's build folder `build/` (sm_90a) present. The branch moved
# code between translation units without changing it; these run every GPU
# path that moved:
#  - the attention and token-reduce kernels now come from staticgrad_cuda_kernels
#    (extern template): gpu_test_attention, gpu_test_token_reduce,
#    gpu_test_block_executor, gpu_test_model_step, gpu_test_memory;
#  - `finetune --device cuda` now runs train::cuda_backend (g++) over
#    train::cuda_model (one nvcc TU per plan): gpu_test_finetune_cuda,
#    gpu_test_finetune_nccl (one rank; two with 2 GPUs);
#  - the CUDA decoder (unchanged, but it links the kernels library): gpu_test_cuda_decoder;
#  - bench_model_step, now one TU per size: a 2-step 0.5B run.
# One PASS/FAIL (or SKIP) line per test; full logs in $OUT (default /tmp/gpu_check_tutime).
#
#   bash scripts/gpu_check_tutime.sh
set -u
cd "$(dirname "$0")/.."
source scripts/check_common.sh
for t in attention token_reduce block_executor model_step memory cuda_decoder; do
  check gpu_test_$t build/tests/gpu_test_$t
done
check gpu_test_finetune_cuda build/tests/gpu_test_finetune_cuda build/staticgrad
check gpu_test_finetune_nccl build/tests/gpu_test_finetune_nccl
check gpu_test_finetune_nccl_2gpu build/tests/gpu_test_finetune_nccl 2
check bench_model_step_smoke build/bench/bench_model_step 0.5b --steps 2
exit $status
