#!/usr/bin/env bash
# GPU check of `staticgrad generate --device cuda` (the CUDA decoder,
# include/staticgrad/infer/cuda_decoder.hpp): run from the repository root on
# a machine with a CUDA device and the built build/ folder carried over
# (targets staticgrad_cli, gpu_test_cuda_decoder, infer_test_generate_cli).
#   scripts/gpu_check_cudagen.sh        # BUILD=build by default
# Prints one PASS/FAIL line per check and a final PASS/FAIL; exit 0 on pass.
set -u
BUILD=${BUILD:-build}
status=0
line() { echo "$1 $2"; [ "$1" = PASS ] || status=1; }

nvidia-smi -L 2>&1 | head -4

echo "== the CUDA decoder against the CPU kv_decoder and transformers' greedy ids"
if [ -x "$BUILD/tests/gpu_test_cuda_decoder" ]; then
  "$BUILD/tests/gpu_test_cuda_decoder"
  rc=$?
  [ $rc -eq 0 ] && line PASS "gpu_test_cuda_decoder" || line FAIL "gpu_test_cuda_decoder (exit $rc; 77 = no device)"
else
  line FAIL "$BUILD/tests/gpu_test_cuda_decoder not built"
fi

echo "== ctest: the decoder test under ctest and the generate CLI tests (their --device cuda case)"
ctest --test-dir "$BUILD" -R "gpu_test_cuda_decoder|infer_test_generate" --output-on-failure > /tmp/sg_cudagen_ctest.txt 2>&1
rc=$?
tail -6 /tmp/sg_cudagen_ctest.txt
[ $rc -eq 0 ] && line PASS "ctest -R gpu_test_cuda_decoder|infer_test_generate" || line FAIL "ctest (see above)"

echo "== compute-sanitizer memcheck + racecheck of the decoder test (if installed)"
CS=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null)
if [ -n "$CS" ]; then
  for tool in memcheck racecheck; do
    "$CS" --tool $tool --error-exitcode 9 "$BUILD/tests/gpu_test_cuda_decoder" > /tmp/sg_cudagen_$tool.txt 2>&1
    rc=$?
    tail -3 /tmp/sg_cudagen_$tool.txt
    [ $rc -eq 0 ] && line PASS "compute-sanitizer $tool" || line FAIL "compute-sanitizer $tool (exit $rc)"
  done
else
  echo "compute-sanitizer not found: skipped"
fi

echo "== generate --device cuda on a fixture (prints tokens/s)"
M=tests/fixtures/hf/tied_v1000_l3_r8_all7_theta1e4
if "$BUILD/staticgrad" generate --model $M --adapter $M/adapter --prompt-ids 1,2,3,4,5 --max-new-tokens 200 --greedy \
     --device cuda; then line PASS "generate --device cuda runs"; else line FAIL "generate --device cuda"; fi

[ $status -eq 0 ] && echo "PASS: all cudagen checks" || echo "FAIL: some cudagen checks failed"
exit $status
