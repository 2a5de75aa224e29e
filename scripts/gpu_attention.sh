#!/usr/bin/env bash
# One device call for the CUDA attention kernels: each kernel of
# gpu_test_attention on its own (a hang costs 40 s, not the session), then
# bench_attention, the forward first, the backward only where its test passed.
#
#   scripts/gpu_attention.sh BUNDLE      (e.g. .dev/kernels)
#
# BUNDLE holds gpu_test_attention, bench_attention (stripped) and lib/ with
# libbenchmark.so.1debian and libcudart.so.13 (the device image lacks them).
# Logs go to $OUT (default /tmp/out): one per step plus summary.log.
# MEMCHECK=1 adds a last step: compute-sanitizer memcheck on the Hopper kernels.
#
# Building the bundle (build machine):
#   nice cmake --build build -j1 --target gpu_test_attention bench_attention
#   mkdir -p .dev/kernels/lib
#   strip -o .dev/kernels/gpu_test_attention build/tests/gpu_test_attention
#   strip -o .dev/kernels/bench_attention build/bench/bench_attention
#   cp -L /lib/x86_64-linux-gnu/libbenchmark.so.1debian /usr/local/lib/libcudart.so.13 .dev/kernels/lib/
set -u
[ $# -eq 1 ] && [ -d "$1" ] || { echo "usage: $0 BUNDLE (a folder with gpu_test_attention, bench_attention, lib/)" >&2; exit 1; }
bin=$1
out=${OUT:-/tmp/out}
mkdir -p "$out"
export LD_LIBRARY_PATH="$bin/lib:/usr/local/cuda/lib64:${LD_LIBRARY_PATH:-}"
start=$(date +%s)
say() { echo "$*" | tee -a "$out/summary.log"; }
say "== $(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>&1 | head -1)"

# ---- tests: one kernel at a time --------------------------------------------
# The short packed layouts against the CPU (40 s each, most of it the CPU
# reference), then 8 x 2048 and 1 x 32768 against the portable kernels
# (long-fwd; long-bwd once bwd-hopper passed).
declare -A verdict
run_test() {  # kernel set, timeout
  local kernel=$1 log="$out/test_$1.log" rc
  STATICGRAD_TEST_ATTN=$kernel timeout -k 5 "$2" "$bin/gpu_test_attention" > "$log" 2>&1
  rc=$?
  case $rc in
    0) verdict[$kernel]=PASS ;;
    124 | 137) verdict[$kernel]=HANG ;;
    *) verdict[$kernel]=FAIL ;;
  esac
  say "test $kernel: ${verdict[$kernel]} (rc $rc, $(grep -c " ok$" "$log") rows ok, $(( $(date +%s) - start )) s)"
  if [ "${verdict[$kernel]}" != PASS ]; then
    grep -E "FAIL|error" "$log" | head -n 12 | sed 's/^/    /' | tee -a "$out/summary.log"
    [ "${verdict[$kernel]}" = HANG ] && say "    last row before the hang: $(tail -n 1 "$log")"
  fi
  grep "bitwise (info)" "$log" | sed 's/^/    /' | tee -a "$out/summary.log"
}
kernels="fwd-hopper fwd-unpipelined fwd-portable bwd-portable bwd-hopper long-fwd"
for kernel in fwd-hopper fwd-unpipelined fwd-portable bwd-portable bwd-hopper; do run_test $kernel 40; done
run_test long-fwd 90
if [ "${verdict[bwd-hopper]}" = PASS ]; then
  run_test long-bwd 90
  kernels="$kernels long-bwd"
fi
# Worst error per tensor row name over every config and layout (rows: cfg
# layout tensor rel_frob max_abs nonfinite ok; rows without a number are the
# bitwise checks).
grep -h -E "^(0\.5B|1\.5B|7B) " "$out"/test_*.log |
  awk '$4 ~ /^[0-9.]+e[-+][0-9]+$/ { if (!($3 in m) || $4 + 0 > m[$3] + 0) m[$3] = $4 }
       END { printf "    worst rel frob (lse: max abs is the bound):"; for (t in m) printf " %s %s", t, m[t]; print "" }' |
  tee -a "$out/summary.log"

# ---- benchmarks: forward first, backward under its own timeout ---------------
bench() {  # name, timeout, filter
  say "== bench $1 ($(( $(date +%s) - start )) s)"
  timeout -k 5 "$2" "$bin/bench_attention" --benchmark_min_time=0.2 --benchmark_filter="$3" \
    --benchmark_counters_tabular=true > "$out/bench_$1.log" 2>&1
  local rc=$?
  grep -E "^(bench_attention/|Benchmark)" "$out/bench_$1.log" | sed 's/^bench_attention\///; s/\/manual_time//' |
    tee -a "$out/summary.log"
  if [ $rc != 0 ]; then
    say "bench $1: rc $rc$( [ $rc = 124 ] && echo ' (timeout: a hang?)')"
    tail -n 5 "$out/bench_$1.log" | sed 's/^/    /' | tee -a "$out/summary.log"
  fi
}
bench forward 150 '/fwd_'
if [ "${verdict[bwd-hopper]}" = PASS ]; then
  bench backward 150 '/bwd_'
else
  say "== bench backward skipped: bwd-hopper ${verdict[bwd-hopper]}"
fi

# ---- memory errors in the Hopper kernels (small test shapes) ----------------
if [ "${MEMCHECK:-0}" = 1 ] && [ "${verdict[bwd-hopper]}" = PASS ] && command -v compute-sanitizer > /dev/null; then
  STATICGRAD_TEST_ATTN=fwd-hopper,bwd-hopper timeout -k 5 90 compute-sanitizer --tool memcheck --print-limit 10 \
    "$bin/gpu_test_attention" > "$out/memcheck.log" 2>&1
  say "memcheck fwd-hopper,bwd-hopper: rc $? ($(grep -m1 "ERROR SUMMARY" "$out/memcheck.log"))"
fi
say "== done in $(( $(date +%s) - start )) s: $(for k in $kernels; do printf '%s %s  ' "$k" "${verdict[$k]}"; done)"
