#!/usr/bin/env bash
# One device call for the kernels work (issue 9): the GPU tests and
# benchmarks of attention and the LoRA products, logs into $OUT.
# Run from the repository root of the device copy, binaries in $1
# (default .dev/kernels): gpu_test_attention, gpu_test_lora_gemm,
# bench_attention, bench_lora_gemm (any that is missing is skipped).
set -u
bin=${1:-.dev/kernels}
out=${OUT:-/tmp/out}
mkdir -p "$out"
# Libraries the build machine linked that the device image may lack
# (Google Benchmark, the CUDA 13.0 runtime), carried beside the binaries.
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
log() { echo "== $*" | tee -a "$out/summary.log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$out/summary.log"
run() {  # name, command...
  local name=$1; shift
  [ -x "$bin/$1" ] || { log "$name: $bin/$1 missing, skipped"; return; }
  log "$name"
  local t0=$(date +%s)
  timeout 240 "$bin/$@" > "$out/$name.log" 2>&1
  local rc=$?
  log "$name: rc $rc, $(( $(date +%s) - t0 )) s"
  tail -n 40 "$out/$name.log"
}
run test_attention gpu_test_attention
run test_lora_gemm gpu_test_lora_gemm
run bench_attention bench_attention --benchmark_min_time=0.3s --benchmark_counters_tabular=true
run bench_lora_gemm bench_lora_gemm --benchmark_min_time=0.2s --benchmark_counters_tabular=true
STATICGRAD_MATMUL_TUNE=0 run bench_lora_gemm_untuned bench_lora_gemm --benchmark_min_time=0.2s --benchmark_counters_tabular=true
# The Hopper kernels' SASS: HGMMA (wgmma) and UTMALDG (TMA) must be there.
if command -v cuobjdump > /dev/null; then
  cuobjdump --dump-sass "$bin/gpu_test_attention" > "$out/attention.sass" 2>&1
  log "SASS: $(grep -c HGMMA "$out/attention.sass") HGMMA, $(grep -c UTMALDG "$out/attention.sass") UTMALDG lines"
  grep -o "HGMMA\.[0-9A-Za-z.]*" "$out/attention.sass" | sort | uniq -c | tee -a "$out/summary.log"
  rm -f "$out/attention.sass"
fi
# Memory and race checks of the attention kernels (small test shapes).
if [ "${SANITIZE:-1}" = 1 ] && command -v compute-sanitizer > /dev/null; then
  for tool in memcheck; do
    log "compute-sanitizer $tool"
    timeout 90 compute-sanitizer --tool $tool --print-limit 20 "$bin/gpu_test_attention" >> "$out/sanitize.log" 2>&1
    log "compute-sanitizer $tool: rc $?"; tail -n 6 "$out/sanitize.log"
  done
fi
