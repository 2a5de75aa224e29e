#!/usr/bin/env bash
# One device call for the kernels work (issue 9): the GPU tests and
# benchmarks of attention, the token reduction and the LoRA products, and a
# SASS check of the Hopper kernels; logs into $OUT (at most 8 files).
#
#   scripts/gpu_kernels.sh [BIN_DIR]      (default .dev/kernels)
#
# BIN_DIR holds gpu_test_attention, gpu_test_token_reduce, gpu_test_lora_gemm,
# bench_attention, bench_lora_gemm (any that is missing is skipped) and lib/
# with the shared libraries the build machine linked that the device image
# may lack. BUDGET_S (default 100) stops starting new steps once that many
# seconds have passed; steps run most important first.
set -u
bin=${1:-.dev/kernels}
out=${OUT:-/tmp/out}
budget=${BUDGET_S:-100}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
start=$(date +%s)
log() { echo "== [$(( $(date +%s) - start )) s] $*" | tee -a "$out/summary.log"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv | tee -a "$out/summary.log"
step() {  # name, timeout, binary, args...
  local name=$1 limit=$2; shift 2
  [ -x "$bin/$1" ] || { log "$name: $bin/$1 missing, skipped"; return; }
  (( $(date +%s) - start < budget )) || { log "$name: over budget, skipped"; return; }
  log "$name"
  timeout "$limit" "$bin/$@" >> "$out/$name.log" 2>&1
  local rc=$?
  log "$name: rc $rc"
  tail -n 30 "$out/$name.log"
  return $rc
}
# A kernel that hangs (timeout rc 124) skips the steps that would run it again.
# The attention forward is benchmarked in any case (bench_attention/fwd_*, its
# kernels never hung); the backward entries only once test_attention passed.
# scripts/gpu_attention.sh tests each attention kernel alone.
step test_attention 40 gpu_test_attention; attn_rc=$?
step test_token_reduce 30 gpu_test_token_reduce; reduce_rc=$?
step test_lora_gemm 30 gpu_test_lora_gemm
step bench_attention_fwd 150 bench_attention --benchmark_min_time=0.2 --benchmark_filter=/fwd_ \
  --benchmark_counters_tabular=true
[ $attn_rc = 0 ] || log "bench_attention_bwd: skipped (test_attention rc $attn_rc)"
[ $attn_rc = 0 ] && step bench_attention_bwd 150 bench_attention --benchmark_min_time=0.2 --benchmark_filter=/bwd_ \
  --benchmark_counters_tabular=true
[ $reduce_rc = 124 ] || STATICGRAD_TOKEN_REDUCE=1 step bench_lora_gemm 60 bench_lora_gemm --benchmark_min_time=0.05
# The Hopper kernels' SASS: HGMMA (wgmma) and UTMALDG (TMA) must be there.
if command -v cuobjdump > /dev/null; then
  cuobjdump --dump-sass "$bin/gpu_test_attention" > /tmp/attention.sass 2>&1
  log "SASS: $(grep -c HGMMA /tmp/attention.sass) HGMMA, $(grep -c UTMALDG /tmp/attention.sass) UTMALDG lines"
  grep -o "HGMMA\.[0-9A-Za-z.]*" /tmp/attention.sass | sort | uniq -c | tee -a "$out/summary.log"
fi
# Memory errors in the attention and token-reduction kernels (small test shapes).
if [ $attn_rc = 0 ] && command -v compute-sanitizer > /dev/null && (( $(date +%s) - start < budget )); then
  log "memcheck_attention"
  timeout 60 compute-sanitizer --tool memcheck --print-limit 10 "$bin/gpu_test_attention" > "$out/memcheck_attention.log" 2>&1
  log "memcheck_attention: rc $?"
  tail -n 3 "$out/memcheck_attention.log"
fi
[ $reduce_rc = 124 ] || STATICGRAD_MATMUL_TUNE=0 step bench_lora_gemm_untuned 60 bench_lora_gemm --benchmark_min_time=0.05
log "done"
