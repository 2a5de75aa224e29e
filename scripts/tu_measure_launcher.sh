#!/usr/bin/env bash
# A compiler launcher that measures every compile (scripts/tu_costs.sh sets it):
#   CMAKE_{CXX,CUDA}_COMPILER_LAUNCHER="scripts/tu_measure_launcher.sh;LOG"
# runs the compiler under /usr/bin/time and appends "seconds peak_KB output"
# to LOG. No ccache here: a cache hit would measure nothing. peak_KB is the
# largest resident set of any one process of the compile (for nvcc: the
# biggest of cudafe++, cicc, ptxas and the host g++), which is the memory one
# TU needs.
set -u
log=$1
shift
out=unknown
prev=
for a in "$@"; do
  if [[ $prev == -o ]]; then out=$a; fi
  prev=$a
done
tmp=$(mktemp)
/usr/bin/time -q -f '%e %M' -o "$tmp" "$@"
rc=$?
# One line per compile, appended whole (two compiles may end at once).
if [[ $rc -eq 0 ]]; then
  printf '%s %s\n' "$(tail -n 1 "$tmp")" "$out" >>"$log"
fi
rm -f "$tmp"
exit $rc
