// End-to-end LoRA training steps of Qwen2.5-0.5B and -1.5B on one GPU
// (model_step.cuh): embedding, every block forward, final norm, chunked LM
// head + cross-entropy (forward and backward fused), every block backward,
// AdamW on all LoRA parameters. Random weights (no checkpoint: the values do
// not change the work), random tokens, batch 8 x sequence 2048 (T = 16384),
// LoRA r = 16 (alpha 32) on all seven projections, bf16 storage, tied LM head,
// vocabulary 151936.
//
// Timing: CUDA events on the model's stream around whole steps (host launch
// gaps included: this is the end-to-end rate), after 2 warm-up steps, then one
// more step with events at the phase boundaries for a breakdown; the
// batch is uploaded once (the same batch every step; set_batch costs ~0.1 ms).
// Memory: "allocated by staticgrad" is the model's own tally of its device
// allocations (weights, LoRA state, activations, saved arenas, LM-head
// chunk, workspaces); "device used" is total - free from cudaMemGetInfo after
// the steps (every allocation is made up front and none during a step, so
// this is the peak; it includes the CUDA context and cuBLASLt).
//
//   bench_model_step                 both models, 10 timed steps each
//   bench_model_step 1.5b --steps 20 --chunk 4096
//   bench_model_step 1.5b --memory-budget 24      the fastest plan that fits 24 GiB (graph/memory_plan.hpp)
//   bench_model_step 1.5b --memory-budget free    ... that fits the free device memory less 1 GiB
//   bench_model_step 1.5b --policy 3,10           recompute tier 3, 10 whole-block layers (explicit)
//   bench_model_step 1.5b --policy 3,28,28        ... every layer re-run, every layer input offloaded to host memory
//   bench_model_step 1.5b --seqs 1 --seq-len 32768 --memory-budget free   long context
// With a budget or policy the chosen plan, its predicted peak and predicted
// slowdown are printed, and the measured device use beside the prediction.
// Exit code: 0, 1 on an error, 77 without a device.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

#include "bench_model_step.hpp"

using namespace bench_model_step;

int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  // bench_model_step [size ...] [--seqs N] [--seq-len N] [--steps N] [--chunk N] [--memory-budget GiB|free]
  // [--policy TIER,BLOCKS[,OFFLOAD]]: sizes 0.5b 1.5b 3b 7b (default 0.5b 1.5b), batch N x seq-len (default 8 x 2048).
  std::vector<std::string> sizes;
  int seqs = 8, steps = 10, seq_len = 2048;
  std::int64_t chunk = 2048;
  memory_request mem;
  const char* usage =
      "usage: bench_model_step [0.5b|1.5b|3b|7b ...] [--seqs N] [--seq-len N] [--steps N] [--chunk N] "
      "[--memory-budget GiB|free] [--policy TIER,BLOCKS[,OFFLOAD]]\n";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if ((a == "--seqs" || a == "--steps" || a == "--chunk" || a == "--seq-len") && i + 1 < argc) {
      const long long v = std::atoll(argv[++i]);
      if (a == "--seqs") seqs = static_cast<int>(v);
      else if (a == "--steps") steps = static_cast<int>(v);
      else if (a == "--seq-len") seq_len = static_cast<int>(v);
      else chunk = v;
    } else if (a == "--memory-budget" && i + 1 < argc) {
      const std::string v = argv[++i];
      mem.budget_gib = v == "free" ? 0.0 : std::atof(v.c_str());
      if (v != "free" && !(mem.budget_gib > 0)) {
        std::printf("bench_model_step: --memory-budget takes a positive number of GiB or 'free', not '%s'\n", v.c_str());
        return 1;
      }
    } else if (a == "--policy" && i + 1 < argc) {
      mem.offload = 0;
      const int got = std::sscanf(argv[++i], "%d,%d,%d", &mem.tier, &mem.blocks, &mem.offload);
      if (got < 2 || mem.tier < 0 || mem.blocks < 0 || mem.offload < 0) {
        std::printf("bench_model_step: --policy takes TIER,BLOCKS[,OFFLOAD] (non-negative integers), not '%s'\n", argv[i]);
        return 1;
      }
    } else if (a == "0.5b" || a == "1.5b" || a == "3b" || a == "7b") {
      sizes.push_back(a);
    } else {
      std::printf("%s", usage);
      return 1;
    }
  }
  if (sizes.empty()) sizes = {"0.5b", "1.5b"};
  if (steps <= 0 || chunk <= 0 || seqs <= 0 || seq_len <= 0) {
    std::printf("bench_model_step: --seqs, --seq-len, --steps and --chunk must be positive\n");
    return 1;
  }
  if (mem.tier >= 0 && mem.budget_gib >= 0) {
    std::printf("bench_model_step: give --memory-budget or --policy, not both\n");
    return 1;
  }
  std::vector<result> rs;
  try {
    // Layers, vocabulary and tying as the Hugging Face configs of the sizes.
    for (const auto& z : sizes) {
      if (z == "0.5b") rs.push_back(run_qwen2_0_5b("Qwen2.5-0.5B", 24, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "1.5b") rs.push_back(run_qwen2_1_5b("Qwen2.5-1.5B", 28, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "3b") rs.push_back(run_qwen2_3b("Qwen2.5-3B", 36, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "7b") rs.push_back(run_qwen2_7b("Qwen2.5-7B", 28, 152064, false, seqs, seq_len, steps, chunk, mem));
    }
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
  std::printf("\n| model | batch | ms / step | tokens/s | forward | head | backward | AdamW | host adds / step | allocated (predicted) | device used | plan (predicted slowdown) |\n");
  std::printf("|---|---|---|---|---|---|---|---|---|---|---|---|\n");
  for (const auto& r : rs)
    std::printf("| %s | %d x %d | %.1f | %.0f | %.1f ms | %.1f ms | %.1f ms | %.2f ms | %.3f ms (%.2f%%) | %.2f GiB (%.2f) | %.2f GiB | %s (%.3fx) |\n",
                r.model.c_str(), r.seqs, seq_len, r.step_ms, r.tok_s, r.ph[0], r.ph[1], r.ph[2], r.ph[3], r.step_ms - r.hidden_ms,
                100.0 * (1.0 - r.hidden_ms / r.step_ms), r.alloc_gib, r.predicted_gib, r.used_gib, r.plan.c_str(), r.slowdown);
  bool ok = true;
  for (const auto& r : rs) ok = ok && r.ok;
  return ok ? 0 : 1;
}
