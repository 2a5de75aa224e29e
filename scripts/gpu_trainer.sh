#!/usr/bin/env bash
# The trainer branch's GPU checks on the device (one H100/H200):
#  1. gpu_test_finetune_cuda: `staticgrad finetune --device cuda` against
#     `--device cpu` on a 2-layer Qwen2.5-0.5B-shape checkpoint (per-step
#     losses, eval losses, adapters within the bf16 tolerances), and a GPU run
#     killed (SIGKILL) after step 4 and resumed from checkpoint-3;
#  2. `staticgrad finetune --device cuda --epochs 2 --eval-data ...` on that
#     checkpoint: the plain progress lines, metrics.jsonl, training.html,
#     config.yaml, then `--resume` of a SIGTERM-stopped run (exit 143).
# Prints PASS/FAIL per check and the numbers; logs in $OUT.
#
#   bash scripts/gpu_trainer.sh BUNDLE    (default .dev/trainer)
#
# BUNDLE/bin: staticgrad and gpu_test_finetune_cuda (stripped, sm_90a; large
# files may be carried xz-compressed as NAME.xz and are unpacked here);
# BUNDLE/lib: libcudart.so.13, libfmt, ICU, yaml-cpp, zlib of the dev box
# (cuBLASLt comes from the machine's image); BUNDLE/share/staticgrad/qwen2-tokenizer:
# the vendored tokenizer (the tool finds it next to its binary; the test reads data/).
set -u
B=$(cd "${1:-.dev/trainer}" && pwd)
for z in "$B"/bin/*.xz "$B"/lib/*.xz; do
  [ -e "$z" ] && [ ! -e "${z%.xz}" ] || continue
  xz -dk "$z" 2>/dev/null || python3 -c 'import lzma, sys; open(sys.argv[1][:-3], "wb").write(lzma.open(sys.argv[1]).read())' "$z"
  case "$z" in */bin/*) chmod +x "${z%.xz}" ;; esac
done
mkdir -p "$B/data" && ln -sfn ../share/staticgrad/qwen2-tokenizer "$B/data/qwen2-tokenizer"
OUT=${OUT:-/tmp/gpu_trainer}
mkdir -p "$OUT"
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(os.path.dirname(nvidia.cublas.__file__), "lib"))' 2>/dev/null)
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64:${cublas:+$cublas:}${LD_LIBRARY_PATH:-}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
cd "$B"
status=0
verdict() {  # name rc
  if [ "$2" -eq 0 ]; then echo "PASS $1"; elif [ "$2" -eq 77 ]; then echo "SKIP $1 (no CUDA device)"; status=1; else echo "FAIL $1 (rc $2)"; status=1; fi
}
W="$OUT/work"
STATICGRAD_FINETUNE_DIR="$W" timeout 600 ./bin/gpu_test_finetune_cuda ./bin/staticgrad > "$OUT/test_finetune_cuda.log" 2>&1
rc=$?
grep -E '^(ok|FAIL)|rel|resumed' "$OUT/test_finetune_cuda.log"
verdict gpu_test_finetune_cuda $rc
if [ -f "$W/model/config.json" ]; then
  T=./bin/staticgrad
  args=(finetune --device cuda --model "$W/model" --data "$W/data.jsonl" --eval-data "$W/data.jsonl" --eval-every 4
        --epochs 2 --batch-tokens 512 --max-len 64 --lr 1e-3 --lora-r 8 --warmup-ratio 0.1 --save-every 3 --seed 1)
  rm -rf "$W/cli"
  timeout 300 "$T" "${args[@]}" --out "$W/cli" > "$OUT/finetune_cli.log" 2>&1
  rc=$?
  cat "$OUT/finetune_cli.log"
  [ $rc -eq 0 ] && [ -s "$W/cli/metrics.jsonl" ] && [ -s "$W/cli/training.html" ] && [ -s "$W/cli/config.yaml" ] &&
    grep -q '^eval step' "$OUT/finetune_cli.log"
  verdict "finetune --device cuda --epochs 2 --eval-data (metrics.jsonl, training.html, config.yaml)" $?
  tail -n 2 "$W/cli/metrics.jsonl"
  rm -rf "$W/sig"
  STATICGRAD_CRASH_AT=sigterm@5 timeout 300 "$T" "${args[@]}" --out "$W/sig" > "$OUT/sigterm.log" 2>&1
  rc=$?
  [ $rc -eq 143 ] && [ -f "$W/sig/checkpoint-5/trainer_state.json" ]
  verdict "SIGTERM after step 5: exit 143 and checkpoint-5 (got rc $rc)" $?
  timeout 300 "$T" "${args[@]}" --out "$W/sig" --resume "$W/sig" > "$OUT/resume.log" 2>&1
  rc=$?
  grep -E '^resumed|^step|^eval' "$OUT/resume.log" | head -n 4
  verdict "--resume of the SIGTERM-stopped run" $rc
  python3 - "$W/cli/adapter_model.safetensors" "$W/sig/adapter_model.safetensors" <<'PY' || status=1
import json, struct, sys, math
def read(p):
    b = open(p, 'rb').read(); n = struct.unpack('<Q', b[:8])[0]; h = json.loads(b[8:8 + n]); d = b[8 + n:]
    return {k: struct.unpack('<%df' % ((v['data_offsets'][1] - v['data_offsets'][0]) // 4), d[v['data_offsets'][0]:v['data_offsets'][1]]) for k, v in h.items() if k != '__metadata__'}
a, b = read(sys.argv[1]), read(sys.argv[2])
num = sum((x - y) ** 2 for k in a for x, y in zip(a[k], b[k])); den = sum(y ** 2 for k in b for y in b[k])
r = math.sqrt(num / max(den, 1e-300))
print(('PASS' if r < 5e-2 else 'FAIL') + ' resumed vs uninterrupted CLI adapter: relative Frobenius %.3e (< 5e-2)' % r)
sys.exit(0 if r < 5e-2 else 1)
PY
fi
exit $status
