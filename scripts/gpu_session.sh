#!/usr/bin/env bash
# One device call for a session's GPU checks and benchmarks, from one bundle
# built and packed on the build machine (scripts/pack_gpu_bundle.sh):
#
#   bash scripts/gpu_session.sh BUNDLE [STAGE ...]
#
# BUNDLE/bin: the stripped binaries (large ones as NAME.xz, unpacked here),
# BUNDLE/lib: the shared libraries the device image may lack,
# BUNDLE/share/staticgrad/qwen2-tokenizer: the vendored tokenizer.
# Stages (default: kernels model trainer bench), each skipped when its binaries are missing:
#   kernels   scripts/gpu_kernels.sh: attention / token reduction / LoRA GEMM tests and benchmarks
#   model     gpu_test_model_step (the whole step against the CPU model, every shape it was built for)
#   trainer   scripts/gpu_trainer.sh (finetune --device cuda against --device cpu, resume, SIGTERM)
#   bench     bench_model_step 0.5b 1.5b (tok/s, memory, what the host adds to a step)
#   peers     scripts/bench_side_by_side.sh (HF + PEFT, Liger, Unsloth, then bench_model_step, one table)
#   memory    gpu_test_memory (alone), then bench_model_step 1.5b at --memory-budget 30 24 16 12 8
#             (MEMORY_BUDGETS; the memory-speed curve), every layer input offloaded alone and with every
#             block re-run, one 32k and one 64k sequence, 7B at --memory-budget 40 (MEMORY_RUNS, ';'-separated)
#   peers_gc  HF + PEFT with gradient checkpointing and Unsloth with its offloaded checkpointing, 1.5B
#             (the memory-saving peers, for the memory stage's curve)
#   ab        A/B runs for switches that are off by default: bench_lora_gemm and bench_model_step 1.5b
#             with STATICGRAD_TOKEN_REDUCE=0 / 1; gpu_test_model_step 7b with STATICGRAD_ATTENTION=portable
#             (the mma.sync baseline of the same comparison) and =fastest
#   sanitize  scripts/gpu_sanitize.sh over the bundle's gpu_test_* (SANITIZE_TOOLS, SANITIZE_TIMEOUT_S,
#             RACECHECK_LAUNCHES, RACECHECK_KERNELS, PARALLEL_TOOLS; TESTS picks the binaries; BUILD_SOURCE_DIR: the source path compiled
#             into the tests, linked to this checkout)
#   checks    the scripts named in $CHECKS (default: every scripts/gpu_check_*.sh but gpu_check.sh),
#             which expect a build folder at ./build: when there is none, ./build is made
#             of links to BUNDLE/bin (build/staticgrad, build/tests/gpu_test_*, build/bench/bench_*)
# Logs into $OUT (tar'd per stage into OUT/STAGE.tgz to stay within the files returned);
# SUMMARY lines (PASS / FAIL / timings) go to OUT/summary.log and stdout.
set -u
B=$(cd "${1:?usage: gpu_session.sh BUNDLE [STAGE ...]}" && pwd) || { echo "gpu_session: no bundle at $1"; exit 1; }
shift
stages=${*:-kernels model trainer bench}
# NCCL for the data-parallel binaries: the image's CUDA, or the copy in the Python wheels of torch.
nccl=$(python3 -c 'import nvidia.nccl, os; print(os.path.join(list(nvidia.nccl.__path__)[0], "lib"))' 2>/dev/null)
cublas=$(python3 -c 'import nvidia.cublas, os; print(os.path.join(list(nvidia.cublas.__path__)[0], "lib"))' 2>/dev/null)
here=$(cd "$(dirname "$0")" && pwd)
out=${OUT:-/tmp/gpu_session}
mkdir -p "$out"
for z in "$B"/bin/*.xz "$B"/lib/*.xz; do
  [ -e "$z" ] && [ ! -e "${z%.xz}" ] || continue
  xz -dk "$z" 2>/dev/null || python3 -c 'import lzma, sys; open(sys.argv[1][:-3], "wb").write(lzma.open(sys.argv[1]).read())' "$z"
  case "$z" in */bin/*) chmod +x "${z%.xz}" ;; esac
done
ln -sfn ../lib "$B/bin/lib"
export LD_LIBRARY_PATH="$B/lib:/usr/local/cuda/lib64${cublas:+:$cublas}${nccl:+:$nccl}:${LD_LIBRARY_PATH:-}"
start=$(date +%s)
say() { echo "== [$(( $(date +%s) - start )) s] $*" | tee -a "$out/summary.log"; }
have() { [ -x "$B/bin/$1" ]; }
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader | tee -a "$out/summary.log"
# ./build made of links to BUNDLE/bin, where there is no build folder (the branch scripts expect one).
# A real build folder (CMakeCache.txt) is left alone; links from an earlier call are renewed.
link_build() {
  [ -e build/CMakeCache.txt ] && return
  [ -d build ] && find build -type l -delete
  mkdir -p build/tests build/bench
  for f in "$B"/bin/*; do n=$(basename "$f"); case $n in
    *.xz|lib) ;; staticgrad) ln -sfn "$f" build/staticgrad ;; bench_*) ln -sfn "$f" build/bench/$n ;;
    *) ln -sfn "$f" build/tests/$n ;; esac; done
}
# Tests that read fixtures or run build/staticgrad find them under the build machine's source path
# (compiled in): BUILD_SOURCE_DIR, when set, is linked to this checkout.
link_source_dir() {
  [ -n "${BUILD_SOURCE_DIR:-}" ] && [ ! -e "$BUILD_SOURCE_DIR" ] && mkdir -p "$(dirname "$BUILD_SOURCE_DIR")" &&
    ln -s "$(cd "$here/.." && pwd)" "$BUILD_SOURCE_DIR"
  return 0
}
for s in $stages; do
  d="$out/$s"
  mkdir -p "$d"
  say "stage $s"
  case $s in
    kernels) OUT=$d BUDGET_S=${KERNELS_BUDGET_S:-200} bash "$here/gpu_kernels.sh" "$B/bin" 2>&1 | grep -E "^== |PASS|FAIL|ok |TFLOP" | tail -n 60 ;;
    model) have gpu_test_model_step && { timeout 300 "$B/bin/gpu_test_model_step" > "$d/test_model_step.log" 2>&1
             say "gpu_test_model_step rc $?"; grep -E "PASS|FAIL|^ok|max|rel" "$d/test_model_step.log" | tail -n 40; } ;;
    trainer) OUT=$d bash "$here/gpu_trainer.sh" "$B" 2>&1 | grep -E "PASS|FAIL|SKIP|^ok|resumed" | tail -n 30 ;;
    bench) have bench_model_step && { timeout 200 "$B/bin/bench_model_step" 0.5b 1.5b > "$d/bench_model_step.log" 2>&1
             say "bench_model_step rc $?"; grep -E "tok/s|host|^\|" "$d/bench_model_step.log"; } ;;
    peers) have bench_model_step && OUT=$d bash "$here/bench_side_by_side.sh" "$B/bin/bench_model_step" \
             "${PEERS_SITE_TGZ:-.whl/peers_site.tar.gz}" > "$d/side_by_side.log" 2>&1
           say "side by side rc $?"; cat "$d/table.md" 2>/dev/null; grep -E "host adds" "$d/staticgrad.log" 2>/dev/null ;;
    memory) # gpu_test_memory alone first (it reads the device's free memory), then the curve.
            have gpu_test_memory && { timeout 240 "$B/bin/gpu_test_memory" > "$d/gpu_test_memory.log" 2>&1
              say "gpu_test_memory rc $?"; grep -E "PASS|FAIL|predictions:|gradients:" "$d/gpu_test_memory.log"; }
            have bench_model_step && for g in ${MEMORY_BUDGETS:-30 24 16 12 8}; do
              timeout 120 "$B/bin/bench_model_step" 1.5b --memory-budget $g > "$d/budget_$g.log" 2>&1
              say "1.5b --memory-budget $g rc $?"; grep -E "^\| Qwen" "$d/budget_$g.log"; done
            # Long context (one sequence) and 7B at batch 8 under 40 GiB.
            # Offload alone (every layer input, nothing recomputed: what the copies cost) and the smallest plan.
            # MEMORY_RUNS: these runs instead, ';'-separated (empty: none).
            runs=${MEMORY_RUNS-"1.5b --policy 0,0,28;1.5b --policy 3,28,28;1.5b --seqs 1 --seq-len 32768 --memory-budget free;1.5b --seqs 1 --seq-len 65536 --memory-budget free;7b --memory-budget 40"}
            IFS=';' read -r -a runs_list <<< "$runs"
            for run in "${runs_list[@]}"; do
              f="$d/$(echo "$run" | tr -c 'a-z0-9.' '_').log"
              timeout 150 "$B/bin/bench_model_step" $run --steps 5 > "$f" 2>&1
              say "$run rc $?"; grep -E "memory budget|predicted peak|^\| Qwen" "$f"; done ;;
    peers_gc) # The memory-saving peers beside the memory stage: HF + PEFT with gradient checkpointing,
              # Unsloth with its offloaded gradient checkpointing (1.5B, 8 x 2048).
              mkdir -p /tmp/peer_site && tar xzf "${PEERS_SITE_TGZ:-.whl/peers_site.tar.gz}" -C /tmp/peer_site
              gunzip -c "$here/../data/qwen2-tokenizer/tokenizer.json.gz" > /tmp/tokenizer.json
              PYTHONPATH=/tmp/peer_site HF_HUB_OFFLINE=1 timeout 200 python3 "$here/peers/hf_baseline.py" \
                '[["1.5B",8,2048,true]]' > "$d/hf_gc.jsonl" 2> "$d/hf_gc.log"; say "HF + PEFT, checkpointing rc $?"
              PYTHONPATH=/tmp/peer_site HF_HUB_OFFLINE=1 timeout 240 python3 "$here/peers/unsloth_baseline.py" \
                '[["1.5B",8,2048,"unsloth"]]' /tmp/tokenizer.json 2> "$d/unsloth_gc.log" | grep '^{' > "$d/unsloth_gc.jsonl"
              say "Unsloth, offloaded checkpointing rc $?"; cat "$d/hf_gc.jsonl" "$d/unsloth_gc.jsonl" ;;
    ab) for r in 0 1; do
          have bench_lora_gemm && { STATICGRAD_TOKEN_REDUCE=$r timeout 90 "$B/bin/bench_lora_gemm" --benchmark_min_time=0.05 \
            --benchmark_counters_tabular=true > "$d/lora_gemm_reduce$r.log" 2>&1; say "bench_lora_gemm TOKEN_REDUCE=$r rc $?"; }
          have bench_model_step && { STATICGRAD_TOKEN_REDUCE=$r timeout 90 "$B/bin/bench_model_step" 1.5b > "$d/model_reduce$r.log" 2>&1
            say "bench_model_step 1.5b TOKEN_REDUCE=$r rc $?"; grep -E "^\| Qwen" "$d/model_reduce$r.log"; }
        done
        for a in portable fastest; do
          have gpu_test_model_step && { STATICGRAD_ATTENTION=$a timeout 120 "$B/bin/gpu_test_model_step" 7b > "$d/model_7b_$a.log" 2>&1
            say "gpu_test_model_step 7b STATICGRAD_ATTENTION=$a rc $?"; grep -E "self_attn.(q|k)_proj|PASS|FAIL" "$d/model_7b_$a.log" | tail -n 12; }
        done ;;
    sanitize) # compute-sanitizer over the bundle's GPU tests (docs/cuda.md, "Sanitizers"). Some tests read
              # fixtures and run build/staticgrad under the build machine's source path (compiled in):
              # BUILD_SOURCE_DIR (the source path of the build) is linked to this checkout, with a build/ of links.
              link_build; link_source_dir
              OUT=$d TOOLS=${SANITIZE_TOOLS:-"memcheck synccheck racecheck"} TIMEOUT=${SANITIZE_TIMEOUT_S:-120} \
                RACECHECK_LAUNCHES=${RACECHECK_LAUNCHES:-100} bash "$here/gpu_sanitize.sh" "$B" > "$d/sanitize.log" 2>&1
              say "gpu_sanitize rc $?"; cat "$d/summary.txt" ;;
    checks) link_build; link_source_dir
            for c in ${CHECKS:-$(ls "$here"/gpu_check_*.sh | grep -v '/gpu_check.sh$')}; do
              say "check $(basename "$c")"; OUT=$d/$(basename "$c" .sh) timeout ${CHECK_TIMEOUT_S:-300} bash "$c" > "$d/$(basename "$c").log" 2>&1
              say "check $(basename "$c") rc $?"; grep -E "PASS|FAIL|SKIP" "$d/$(basename "$c").log" | tail -n 40; done ;;
    *) say "unknown stage $s" ;;
  esac
  (cd "$out" && tar czf "$s.tgz" "$s" && rm -rf "$s")
done
say "done"
