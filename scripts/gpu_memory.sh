#!/usr/bin/env bash
# GPU check of issue 10 (memory from a budget): runs the bundle's stripped
# binaries and prints PASS/FAIL and the numbers.
#   bash scripts/gpu_memory.sh BUNDLE
# BUNDLE holds gpu_test_memory, bench_model_step and lib/ (libcudart.so.13).
# libcublasLt.so.13 (540 MB, too large to carry) is taken from lib/ if there,
# else found on the machine (a CUDA 13 install or the torch wheels' nvidia/ libs).
# Build + bundle (on the build machine):
#   cmake --build build --target gpu_test_memory bench_model_step
#   mkdir -p .dev/memory/lib && cp build/tests/gpu_test_memory build/bench/bench_model_step .dev/memory/
#   strip .dev/memory/gpu_test_memory .dev/memory/bench_model_step
#   cp /usr/local/cuda/lib64/libcudart.so.13 .dev/memory/lib/
set -u
B=${1:?usage: gpu_memory.sh BUNDLE}
LIBS="$B/lib"
if [ ! -e "$LIBS/libcublasLt.so.13" ]; then
  LT=$(find /usr/local/cuda*/lib* /usr/local/lib /usr/lib /opt "$(python3 -c 'import site;print(site.getsitepackages()[0])' 2>/dev/null)" \
        -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  [ -n "$LT" ] && LIBS="$LIBS:$(dirname "$LT")"
fi
export LD_LIBRARY_PATH="$LIBS:${LD_LIBRARY_PATH:-}"
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
nvidia-smi --query-gpu=name,memory.total,memory.used --format=csv 2>/dev/null
fail=0
echo "=== 1. gpu_test_memory: gradients equal under every policy; measured peak within 5% of the prediction"
timeout 300 "$B/gpu_test_memory"; rc=$?
[ $rc -eq 0 ] && echo "RESULT gpu_test_memory: PASS" || { echo "RESULT gpu_test_memory: FAIL (rc $rc)"; fail=1; }
bench() {
  echo "=== bench_model_step $*"
  timeout 240 "$B/bench_model_step" "$@" --steps 5 | grep -v '^|---' ; local r=${PIPESTATUS[0]}
  [ "$r" -eq 0 ] && echo "RESULT bench $*: ok" || { echo "RESULT bench $*: FAIL (rc $r)"; fail=1; }
}
echo "=== 2. the 1.5B memory-speed curve, batch 8 x 2048 (compare 'the model's own' with 'predicted', tok/s with the first run)"
bench 1.5b
for g in 30 24 16 12 9; do bench 1.5b --memory-budget $g; done
bench 1.5b --policy 3,28
echo "=== 3. 0.5B at two budgets"
bench 0.5b --memory-budget 12
bench 0.5b --memory-budget 6
echo "=== 4. long context, 1.5B: one 32k and one 64k sequence"
bench 1.5b --seqs 1 --seq-len 32768 --memory-budget free
bench 1.5b --seqs 1 --seq-len 65536 --memory-budget free
echo "=== 5. 7B at batch 8 x 2048 in 40 GiB"
bench 7b --memory-budget 40
[ $fail -eq 0 ] && echo "ALL PASS" || echo "SOME FAILED"
exit $fail
