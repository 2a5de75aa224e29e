#!/usr/bin/env bash
# The long libFuzzer runs of docs/robustness.md (at least 10 million
# executions per harness) on a machine with many idle cores: every harness in
# BUNDLE/bin runs as JOBS parallel libFuzzer jobs (-jobs=JOBS -workers=JOBS),
# each job for EXECS/JOBS executions, on a copy of its seed corpus that the
# jobs share. The executions are summed from the jobs' logs.
#
#   bash scripts/fuzz_device.sh BUNDLE        # BUNDLE made by scripts/fuzz_bundle.sh
#
# Prints one line per harness: executions, seconds, crashes, PASS/FAIL
# (PASS: no crash, leak, timeout or out-of-memory report, and at least EXECS
# executions). A harness that does not reach EXECS within CAP seconds per job
# fails with its count. Written to $OUT (if set, else /tmp/fuzz_device):
# summary.txt, and for a failing harness <name>_findings.tar.gz (its
# artifacts and the logs of the jobs that reported something).
# Environment: JOBS (16), EXECS (10000000), CAP (240 s per job), FUZZERS
# (names, default every fuzz_* in BUNDLE/bin).
# Sizing (one job, ASan + UBSan, measured on the 2-core dev box): about 7,000
# executions/s for safetensors, hf_config, adapter_config and tokenizer_json,
# 5,000 for tokenizer, 2,900 for dataset (it writes a file and runs the whole
# loader per input). With 16 jobs that is ~90 s per harness and ~210 s for
# dataset: about 11 minutes in all, so on a 10-minute command limit run two
# calls, e.g. FUZZERS="safetensors hf_config adapter_config tokenizer_json"
# then FUZZERS="tokenizer dataset".
set -u
B=$(realpath "${1:?usage: fuzz_device.sh BUNDLE}")
OUT=${OUT:-/tmp/fuzz_device}
jobs=${JOBS:-16} total=${EXECS:-10000000} cap=${CAP:-240}
per_job=$(( (total + jobs - 1) / jobs ))
export LD_LIBRARY_PATH="$B/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
# addr2line (binutils) symbolizes the reports where llvm-symbolizer is absent.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
mkdir -p "$OUT"
: > "$OUT/summary.txt"
have=$(getconf GNU_LIBC_VERSION | grep -o '[0-9.]*$')
need=$(cat "$B/glibc_required.txt" 2>/dev/null || echo 0)
if [ "$(printf '%s\n%s\n' "$need" "$have" | sort -V | head -n 1)" != "$need" ]; then
  echo "FAIL: this machine has glibc $have, the bundle needs $need (rebuild it on an older system)" | tee "$OUT/summary.txt"
  exit 1
fi
echo "cores: $(nproc)  jobs: $jobs  executions per harness: >= $total ($per_job per job)  cap: $cap s per job" \
  | tee -a "$OUT/summary.txt"
status=0
names=${FUZZERS:-$(cd "$B/bin" && ls fuzz_* | sed 's/^fuzz_//')}
for name in $names; do
  work=$(mktemp -d "/tmp/fuzz_$name.XXXXXX")
  mkdir -p "$work/corpus" "$work/artifacts"
  cp -r "$B/corpus/$name/." "$work/corpus/"
  t0=$SECONDS
  (cd "$work" && "$B/bin/fuzz_$name" -jobs="$jobs" -workers="$jobs" -runs="$per_job" -max_total_time="$cap" \
     -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 -artifact_prefix="$work/artifacts/" corpus \
     > driver.log 2>&1)
  secs=$((SECONDS - t0))
  cd "$work"
  execs=$(cat fuzz-*.log 2>/dev/null | grep -o 'stat::number_of_executed_units: *[0-9]*' | grep -o '[0-9]*$' \
          | awk '{s += $1} END {print s + 0}')
  done_jobs=$(grep -l '^Done [0-9]* runs' fuzz-*.log 2>/dev/null | wc -l)
  reported=$(grep -lE '==[0-9]+==ERROR|ERROR: libFuzzer|runtime error:|^SUMMARY: ' fuzz-*.log 2>/dev/null)
  n_reported=$(echo -n "$reported" | grep -c .)
  artifacts=$(ls artifacts | wc -l)
  crashes=$(( artifacts > n_reported ? artifacts : n_reported ))
  verdict=PASS
  [ "$crashes" -eq 0 ] && [ "$execs" -ge "$total" ] || verdict=FAIL
  printf '%-15s executions %10d  %4d s  %8d/s  jobs done %2d/%d  crashes %d  corpus %d  %s\n' "$name" "$execs" \
    "$secs" $(( execs / (secs > 0 ? secs : 1) )) "$done_jobs" "$jobs" "$crashes" "$(ls corpus | wc -l)" \
    "$verdict" | tee -a "$OUT/summary.txt"
  if [ "$verdict" = FAIL ]; then
    status=1
    tar czf "$OUT/${name}_findings.tar.gz" driver.log artifacts $reported 2>/dev/null
  fi
  cd / && rm -rf "$work"
done
rm -f /dev/shm/sg_fuzz_dataset_* /tmp/sg_fuzz_dataset_*  # the dataset harness's scratch files
exit $status
