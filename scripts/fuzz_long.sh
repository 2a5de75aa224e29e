#!/usr/bin/env bash
# Long libFuzzer runs, one harness at a time, for the record in
# docs/robustness.md. Usage:
#   scripts/fuzz_long.sh BUILD_FUZZ_DIR WORK_DIR [MAX_RUNS] [MAX_SECONDS]
# BUILD_FUZZ_DIR: the `fuzz` preset's build (build-fuzz); WORK_DIR: corpora,
# artifacts and logs. Each harness runs until MAX_RUNS executions (default
# 10 million) or MAX_SECONDS (default: none), whichever comes first, and its
# final line (executions, seconds, crashes) goes to WORK_DIR/summary.txt.
set -uo pipefail
build=$1 work=$2 runs=${3:-10000000} secs=${4:-0}
src="$(cd "$(dirname "$0")/.." && pwd)"
mkdir -p "$work"
for name in ${FUZZERS:-safetensors hf_config adapter_config dataset tokenizer tokenizer_json}; do
  mkdir -p "$work/corpus/$name" "$work/artifacts"
  start=$(date +%s)
  "$build/tests/fuzz/fuzz_$name" -runs="$runs" -max_total_time="$secs" -rss_limit_mb=4096 -timeout=20 \
    -print_final_stats=1 -artifact_prefix="$work/artifacts/$name-" \
    "$work/corpus/$name" "$src/tests/fuzz/corpus/$name" > "$work/$name.log" 2>&1
  rc=$?
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/$name.log" | grep -o '[0-9]*$')
  crashes=$(ls "$work/artifacts" | grep -c "^$name-" || true)
  echo "$name: rc=$rc executions=${execs:-?} seconds=$(( $(date +%s) - start )) artifacts=$crashes $(date -u +%FT%TZ)" \
    | tee -a "$work/summary.txt"
done
