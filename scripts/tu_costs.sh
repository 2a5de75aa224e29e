#!/usr/bin/env bash
# What each translation unit of the default build costs (docs/architecture.md
# "Translation units": every TU under 30 s and 1 GB of compiler memory).
#
#   scripts/tu_costs.sh [BUILD_DIR] [JOBS]   configure BUILD_DIR (default
#       build-tu) with the default preset and the measuring launcher, build it
#       from clean, print every TU by time
#   scripts/tu_costs.sh --report LOG         print an existing log
#
# Exits 1 when a TU is over a limit (SG_TU_SECONDS, default 30;
# SG_TU_KB, default 1000000 = 1 GB, as /usr/bin/time counts KB). Times at
# -j2 on a 2-core machine run 1.15-1.35x those of -j1 (the other core's
# compile competes for memory bandwidth): re-measure an offender alone
# (ninja -C DIR -j1 path/to/file.o after touching its source).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
max_s=${SG_TU_SECONDS:-30}
max_kb=${SG_TU_KB:-1000000}

report() {
  local log=$1
  # The last line of each output: an incremental rebuild appends its compiles.
  awk '{ last[$3] = $0 } END { for (o in last) print last[o] }' "$log" | sort -k1,1gr | awk -v max_s="$max_s" -v max_kb="$max_kb" '
    BEGIN { printf "%8s %7s  %s\n", "seconds", "GB", "output"; bad = 0 }
    { over = ($1 > max_s || $2 > max_kb) ? "  OVER" : ""; if (over != "") bad++
      printf "%8.1f %7.2f  %s%s\n", $1, $2 / 1e6, $3, over }
    END { printf "%d TUs, %d over %s s or %.2f GB\n", NR, bad, max_s, max_kb / 1e6; exit bad > 0 }'
}

if [[ ${1:-} == --report ]]; then
  report "${2:?--report LOG}"
  exit
fi
build=${1:-build-tu}
jobs=${2:-2}
[[ $build = /* ]] || build=$root/$build
log=$build/tu_costs.log
launcher="$root/scripts/tu_measure_launcher.sh;$log"
cmake --preset default -S "$root" -B "$build" \
  -DCMAKE_CXX_COMPILER_LAUNCHER="$launcher" -DCMAKE_CUDA_COMPILER_LAUNCHER="$launcher" >/dev/null
ninja -C "$build" clean >/dev/null
rm -f "$log"
ninja -C "$build" -j"$jobs"
report "$log"
