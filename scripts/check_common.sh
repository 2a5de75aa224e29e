#!/usr/bin/env bash
# Shared by the scripts/gpu_check_*.sh branch checks (sourced, not run): the
# output folder, the device line and one `check NAME COMMAND...` per test.
#   OUT      logs (default /tmp/<the sourcing script's name>)
#   status   0 until a check fails; the sourcing script exits with it
# A test that exits 77 (no CUDA device, or fewer GPUs than it needs) is SKIP
# and fails nothing; `require_gpu` makes a missing GPU fail the whole script.
OUT=${OUT:-/tmp/$(basename "$0" .sh)}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/device.txt"
status=0
check() {  # name command...
  local name=$1
  shift
  timeout 900 "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  if [ $rc -eq 0 ]; then echo "PASS $name"
  elif [ $rc -eq 77 ]; then echo "SKIP $name (no CUDA device or too few GPUs)"
  else
    echo "FAIL $name (rc $rc; log $OUT/$name.log)"; status=1
    grep -E 'FAIL|error' "$OUT/$name.log" | head -20
  fi
}
require_gpu() {
  [ -s "$OUT/device.txt" ] || { echo "FAIL: no CUDA device (nvidia-smi found none)"; status=1; }
}
