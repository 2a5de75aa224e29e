#!/usr/bin/env bash
# The schedule branch's GPU checks on the device: the row-group, block and
# model-step tests, then bench_model_step for 0.5B, 1.5B, 3B (8 x 2048) and
# 7B (4 x 2048 and 8 x 2048); prints a short table. Logs go to $OUT.
#
#   bash scripts/gpu_schedule.sh [dir with the binaries, default .dev/schedule]
#
# The binaries are built on the dev box (nvcc, sm_90a), stripped and carried
# with the shared libraries they need in <dir>/lib.
set -u
D=${1:-.dev/schedule}
OUT=${OUT:-/tmp/gpu_schedule}
mkdir -p "$OUT"
# Carried: the CUDA 13.0 runtime and Google Benchmark; cuBLASLt from the image
# (/usr/local/cuda/lib64, else the nvidia-cublas wheel's lib folder).
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$D/lib:/usr/local/cuda/lib64:${cublas:+$cublas:}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
status=0
run() {  # name timeout command...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  [ $rc -ne 0 ] && status=1
  printf '%-22s rc=%-3d %4ds  %s\n' "$name" "$rc" $((SECONDS - t0)) "$(grep -E 'PASS|FAIL|passed|FAILED|error' "$OUT/$name.log" | tail -n 1)"
}
run test_row_groups 60 "$D/gpu_test_row_groups"
run test_block_executor 90 "$D/gpu_test_block_executor"
run test_model_step 150 "$D/gpu_test_model_step"
run bench_0.5b_1.5b_3b 120 "$D/bench_model_step" 0.5b 1.5b 3b --seqs 8 --steps 5
run bench_7b_4x2048 90 "$D/bench_model_step" 7b --seqs 4 --steps 5
run bench_7b_8x2048 120 "$D/bench_model_step" 7b --seqs 8 --steps 5
run bench_row_groups 60 "$D/bench_row_groups" --benchmark_min_time=0.1 --benchmark_counters_tabular=true
echo
grep -h '^| Qwen' "$OUT"/bench_*.log
grep -hE '^qwen2_1_5b/' "$OUT/bench_row_groups.log"
grep -hE 'memory:|CUDA graph:|FAIL' "$OUT/test_model_step.log"
exit $status
