#!/usr/bin/env bash
# compute-sanitizer over the GPU tests (docs/cuda.md, "Sanitizers"): every
# BUNDLE/bin/gpu_test_* under --tool memcheck, racecheck and synccheck.
#
#   bash scripts/gpu_sanitize.sh BUNDLE
#
# BUNDLE/bin/gpu_test_*   the GPU test binaries (built with -lineinfo, as the
#                         default preset does, so reports name source lines)
# BUNDLE/bin/staticgrad   optional: the tool gpu_test_finetune_cuda runs
# BUNDLE/lib/             optional: shared libraries they need (libcudart, ...)
# BUNDLE/compute-sanitizer/compute-sanitizer   optional: used when the machine has none
#
# Prints per tool per binary: the test's exit code, the errors the sanitizer
# reports, seconds, PASS/FAIL (PASS: 0 errors and the test passed; a test
# that exits 77, no GPU, is SKIP; one that runs past TIMEOUT is TIMEOUT and
# fails). Logs go to $OUT (if set, else /tmp/gpu_sanitize): summary.txt and
# one tarball of the logs of every run.
# Environment: TOOLS (memcheck racecheck synccheck), TIMEOUT (seconds per run,
# 300), LEAK_CHECK (1: memcheck also reports device memory never freed; 0: not), RACECHECK_LAUNCHES (0 = every kernel launch; N checks only the first
# N launches under racecheck, which is the slowest tool), RACECHECK_KERNELS (a
# substring of the kernel names racecheck instruments, e.g. `staticgrad`: only
# the project's kernels, which are all in namespace staticgrad; cuBLASLt's run
# uninstrumented), RACECHECK_OPTIONS (more racecheck flags), RACECHECK_ENV
# (environment of the racecheck runs, default STATICGRAD_MATMUL=reference:
# racecheck cannot run cuBLASLt's kernels, so the products take
# reference_matmul.cuh's kernel; RACECHECK_ENV=none keeps cuBLASLt), SYNCCHECK_KERNELS (the same
# filter for synccheck: `staticgrad` checks the project's kernels and runs
# cuBLASLt's uninstrumented, which shortens the whole-model runs), TESTS (names), PARALLEL_TOOLS (1: each tool's runs as its
# own stream, the tools at the same time; SERIAL_TESTS, default gpu_test_memory,
# run afterwards alone), PARALLEL_RUNS (1: every tool x test run at once, then
# SERIAL_TESTS alone; for the whole-model tests, which run minutes each under a tool).
# A test may carry arguments after a colon, comma-separated: gpu_test_model_step:7b
# runs `gpu_test_model_step 7b` (its log: TOOL_gpu_test_model_step_7b.log).
# Runs that share the GPU with others (PARALLEL_RUNS, PARALLEL_TOOLS) get
# STATICGRAD_TEST_SHARED_GPU=1: a test then prints, but does not check, what
# it reads from the device's (device-wide) free memory.
set -u
B=$(realpath "${1:?usage: gpu_sanitize.sh BUNDLE}")
OUT=${OUT:-/tmp/gpu_sanitize}
limit=${TIMEOUT:-300}
mkdir -p "$OUT/logs"
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64:${cublas:+$cublas:}${LD_LIBRARY_PATH:-}"
cs=""
for c in "$B/compute-sanitizer/compute-sanitizer" "$(command -v compute-sanitizer)" \
         /usr/local/cuda/bin/compute-sanitizer /usr/local/cuda/compute-sanitizer/compute-sanitizer; do
  [ -n "$c" ] && [ -x "$c" ] && { cs=$c; break; }
done
[ -n "$cs" ] || { echo "compute-sanitizer not found (put it in $B/compute-sanitizer/)"; exit 1; }
: > "$OUT/summary.txt"
{ echo "compute-sanitizer: $cs ($("$cs" --version | grep -o 'Version .*' | head -n 1))"
  nvidia-smi --query-gpu=name,driver_version --format=csv,noheader; } 2>&1 | tee -a "$OUT/summary.txt"
tests=${TESTS:-$(cd "$B/bin" && ls gpu_test_* 2>/dev/null)}
tools=${TOOLS:-memcheck racecheck synccheck}
# One run: tool, test -> a summary line; exit status 0 for PASS / SKIP.
run_one() {
  local tool=$1 spec=$2 t extra=() args=() envs=() log rc secs errors hazards verdict t0
  t=${spec%%:*}
  [ "$t" != "$spec" ] && IFS=, read -r -a args <<< "${spec#*:}"
  case $tool in
    memcheck) [ "${LEAK_CHECK:-1}" = 1 ] && extra=(--leak-check full) ;;
    racecheck) [ "${RACECHECK_LAUNCHES:-0}" -gt 0 ] && extra=(--launch-count "$RACECHECK_LAUNCHES")
               [ -n "${RACECHECK_KERNELS:-}" ] && extra+=(--kernel-name "kns=$RACECHECK_KERNELS")
               extra+=(${RACECHECK_OPTIONS:-})
               [ "${RACECHECK_ENV:-}" != none ] && read -r -a envs <<< "${RACECHECK_ENV:-STATICGRAD_MATMUL=reference}" ;;
    synccheck) [ -n "${SYNCCHECK_KERNELS:-}" ] && extra=(--kernel-name "kns=$SYNCCHECK_KERNELS") ;;
  esac
  [ "$t" = gpu_test_finetune_cuda ] && [ -x "$B/bin/staticgrad" ] && args=("$B/bin/staticgrad")
  log="$OUT/logs/${tool}_${spec//[:,]/_}.log"
  t0=$SECONDS
  # stdbuf -oL: the test's output reaches the log line by line, so a run cut at TIMEOUT shows how far it got.
  timeout "$limit" env STATICGRAD_TEST_SHARED_GPU="${SHARED_GPU:-0}" "${envs[@]}" stdbuf -oL -eL "$cs" --tool "$tool" "${extra[@]}" --print-limit 50 "$B/bin/$t" "${args[@]}" > "$log" 2>&1
  rc=$?
  secs=$((SECONDS - t0))
  # "ERROR SUMMARY: N errors" (memcheck, synccheck) / "RACECHECK SUMMARY: N hazards displayed (E errors, W warnings)"
  errors=$(grep -oE 'ERROR SUMMARY: [0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1)
  hazards=$(grep -oE 'RACECHECK SUMMARY: [0-9]+ hazard' "$log" | grep -oE '[0-9]+' | tail -n 1)
  # racecheck has no ERROR SUMMARY: its errors are the "(E errors" of its summary line.
  [ -z "$errors" ] && errors=$(grep -oE 'RACECHECK SUMMARY: .*\(([0-9]+) error' "$log" | grep -oE '[0-9]+ error' | grep -oE '[0-9]+')
  grep -q 'Internal Sanitizer Error' "$log" && errors="${errors:-?} (internal sanitizer error)"
  errors=${errors:-?}
  [ -n "$hazards" ] && errors="$errors (hazards $hazards)"
  if [ $rc -eq 124 ]; then verdict=TIMEOUT
  elif [ $rc -eq 77 ] || grep -q 'no CUDA device: skipping' "$log"; then verdict=SKIP
  elif [ $rc -eq 0 ] && [ "${errors%% *}" = 0 ] && [ "${hazards:-0}" = 0 ]; then verdict=PASS
  else verdict=FAIL
  fi
  printf '%-10s %-26s rc %-3d errors %-18s %5d s  %s\n' "$tool" "$spec" "$rc" "$errors" "$secs" "$verdict" \
    | tee -a "$OUT/summary.txt"
  [ "$verdict" = PASS ] || [ "$verdict" = SKIP ]
}
# Every run of one tool, one after another.
run_tool() { local tool=$1 t st=0; shift; for t in "$@"; do run_one "$tool" "$t" || st=1; done; return $st; }
status=0
serial=" ${SERIAL_TESTS:-gpu_test_memory} "
if [ "${PARALLEL_RUNS:-0}" = 1 ]; then
  # Every tool x test at once (the tools are bound by the host's instrumentation,
  # 16 CPUs for a handful of runs), then the SERIAL_TESTS alone, one run at a time.
  pids=() alone=()
  export SHARED_GPU=1  # the concurrent runs share the GPU: no device-wide free-memory checks
  for t in $tests; do
    case $serial in *" ${t%%:*} "*) alone+=("$t"); continue ;; esac
    for tool in $tools; do run_one "$tool" "$t" & pids+=($!); done
  done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  SHARED_GPU=0
  for tool in $tools; do run_tool "$tool" "${alone[@]}" || status=1; done
elif [ "${PARALLEL_TOOLS:-0}" = 1 ]; then
  # One stream per tool at the same time on the one GPU (the sanitizers are
  # bound by the host's instrumentation, not by the GPU), then, alone, the
  # tests that measure the device's free memory (SERIAL_TESTS), which other
  # processes would disturb.
  shared=() alone=()
  for t in $tests; do case $serial in *" $t "*) alone+=("$t") ;; *) shared+=("$t") ;; esac; done
  pids=()
  export SHARED_GPU=1
  for tool in $tools; do run_tool "$tool" "${shared[@]}" & pids+=($!); done
  for p in "${pids[@]}"; do wait "$p" || status=1; done
  SHARED_GPU=0
  for tool in $tools; do run_tool "$tool" "${alone[@]}" || status=1; done
else
  for tool in $tools; do run_tool "$tool" $tests || status=1; done
fi
tar czf "$OUT/gpu_sanitize_logs.tar.gz" -C "$OUT" logs && rm -rf "$OUT/logs"
exit $status
