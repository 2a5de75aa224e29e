#!/usr/bin/env bash
# The GPU check: run from the repository root on the GPU machine, with an
# already-built build/ folder carried over (configured with
# `cmake --preset default` where nvcc is found, then built).
#   scripts/gpu_check.sh            # logs into $OUT if set, else into ./gpu_check_logs
# Prints the GPUs, runs the GPU-labelled tests, then every CUDA benchmark
# (build/bench/bench_*, those that are CUDA: bench_row_groups, bench_lora_gemm, bench_attention, bench_block_executor; bench_model_step has its own main).
set -u
BUILD=${BUILD:-build}
LOGS=${OUT:-gpu_check_logs}
mkdir -p "$LOGS"
status=0

echo "== GPUs" | tee "$LOGS/gpus.txt"
nvidia-smi -L 2>&1 | tee -a "$LOGS/gpus.txt"

echo "== ctest -L gpu"
ctest --test-dir "$BUILD" -L gpu --output-on-failure 2>&1 | tee "$LOGS/ctest_gpu.txt"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1
# The full output of the row-group test (its table of max errors).
if [ -x "$BUILD/tests/gpu_test_row_groups" ]; then
  "$BUILD/tests/gpu_test_row_groups" > "$LOGS/test_row_groups.txt" 2>&1
  cat "$LOGS/test_row_groups.txt"
fi
# The full output of the LoRA GEMM test (its table of relative errors).
if [ -x "$BUILD/tests/gpu_test_lora_gemm" ]; then
  "$BUILD/tests/gpu_test_lora_gemm" > "$LOGS/test_lora_gemm.txt" 2>&1
  cat "$LOGS/test_lora_gemm.txt"
fi

# The full output of the attention test (its table of errors per tensor).
if [ -x "$BUILD/tests/gpu_test_attention" ]; then
  "$BUILD/tests/gpu_test_attention" > "$LOGS/test_attention.txt" 2>&1
  cat "$LOGS/test_attention.txt"
fi

# The full output of the block executor test (the whole block vs the CPU executor: its table of errors).
if [ -x "$BUILD/tests/gpu_test_block_executor" ]; then
  "$BUILD/tests/gpu_test_block_executor" > "$LOGS/test_block_executor.txt" 2>&1
  cat "$LOGS/test_block_executor.txt"
fi

# The full output of the whole-step test (the GPU model vs the CPU model: loss, gradients, AdamW).
if [ -x "$BUILD/tests/gpu_test_model_step" ]; then
  "$BUILD/tests/gpu_test_model_step" > "$LOGS/test_model_step.txt" 2>&1
  cat "$LOGS/test_model_step.txt"
fi

# The full output of `staticgrad finetune --device cuda` against --device cpu (losses, adapters).
if [ -x "$BUILD/tests/gpu_test_finetune_cuda" ]; then
  "$BUILD/tests/gpu_test_finetune_cuda" "$BUILD/staticgrad" > "$LOGS/test_finetune_cuda.txt" 2>&1
  cat "$LOGS/test_finetune_cuda.txt"
fi

# Google Benchmark 1.7.1 takes --benchmark_min_time as seconds without a unit.
for b in "$BUILD"/bench/bench_row_groups "$BUILD"/bench/bench_lora_gemm "$BUILD"/bench/bench_attention \
         "$BUILD"/bench/bench_block_executor; do
  [ -x "$b" ] || continue
  name=$(basename "$b")
  echo "== $name"
  "$b" --benchmark_min_time=0.2 --benchmark_counters_tabular=true \
       --benchmark_out="$LOGS/$name.json" --benchmark_out_format=json 2>&1 | tee "$LOGS/$name.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
done
# The end-to-end training step (its own main: a table of tok/s and memory, not Google Benchmark).
if [ -x "$BUILD/bench/bench_model_step" ]; then
  echo "== bench_model_step"
  "$BUILD/bench/bench_model_step" 2>&1 | tee "$LOGS/bench_model_step.txt"
  [ "${PIPESTATUS[0]}" -eq 0 ] || status=1
fi
echo "== logs in $LOGS"
exit $status
