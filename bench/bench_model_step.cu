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
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/model_step.cuh"
#include "staticgrad/backend/cuda/random_fill.cuh"
#include "staticgrad/plans/qwen2_0_5b.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"
#include "staticgrad/plans/qwen2_3b.cuh"
#include "staticgrad/plans/qwen2_7b.cuh"

namespace sc = staticgrad::cuda;
using bf16 = __nv_bfloat16;

namespace {

constexpr int kRank = 16;

// The memory request of a run: none (keep everything), a budget, or a policy.
struct memory_request {
  double budget_gib = -1;  // > 0: a budget; 0: free memory less 1 GiB; < 0: none
  int tier = -1, blocks = 0, offload = 0;  // tier >= 0: an explicit policy
};
constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Holds the GPU for `ns` nanoseconds (the global timer): queued before a step,
// it lets the host finish launching the step's graph before the GPU reaches
// it, so the step then runs at the GPU's own pace (no host-bound gaps).
__global__ void spin_kernel(unsigned long long ns) {
  unsigned long long t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
}

// Deterministic values with standard deviation `std` around `mean` (backend/cuda/random_fill.cuh).
template <class T>
void fill(T* p, std::size_t n, float mean, float std, std::uint32_t seed) {
  sc::random_fill(p, n, mean, std, seed);
}

struct result {
  std::string model;
  bool ok = false;
  int seqs = 0;
  double step_ms = 0, hidden_ms = 0, tok_s = 0, alloc_gib = 0, predicted_gib = 0, used_gib = 0, first_loss = 0, last_loss = 0, host_us = 0;
  double ph[4] = {0, 0, 0, 0};
  std::string plan;
  double slowdown = 1, delta_gib = 0;
};

template <class Plan>
result run(const char* label, int layers, std::int64_t kVocab, bool tied, int kSeqs, int kSeqLen, int steps,
           std::int64_t chunk, const memory_request& mem) {
  const int kT = kSeqs * kSeqLen;
  result res;
  res.model = label;
  std::size_t free0 = 0, total = 0;
  SG_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
  {
    sc::model_options o;
    o.layers = layers, o.vocab = kVocab, o.tied = tied, o.rank = kRank, o.lora_scaling = 32.0f / kRank;
    o.eps = 1e-6f, o.rope_theta = 1e6f, o.ce_chunk = chunk;
    using M = sc::model_step<Plan>;
    if (mem.tier >= 0) {
      o.memory = {mem.tier, mem.blocks, mem.offload};
      res.slowdown = M::evaluate_memory(kT, kSeqLen, o).slowdown();
    }
    if (mem.budget_gib >= 0) {
      const double budget = mem.budget_gib > 0 ? mem.budget_gib * kGiB : M::default_budget();
      const auto c = M::choose_memory(kT, kSeqLen, o, budget);
      std::printf("%s: memory budget %.2f GiB -> %s\n  predicted peak %.3f GiB, predicted slowdown %.3fx%s\n", label,
                  budget / kGiB, M::memory_text(c.policy, layers).c_str(), c.bytes / kGiB, c.slowdown(),
                  c.fits ? "" : " (NOTHING FITS: the smallest plan is used)");
      o.memory = c.policy;
      res.slowdown = c.slowdown();
    }
    res.plan = M::memory_text(o.memory, layers) + " [tier " + std::to_string(o.memory.tier) + ", " +
               std::to_string(o.memory.block_layers) + " block layers, " + std::to_string(o.memory.offload_layers) +
               " offloaded inputs]";
    sc::model_step<Plan> m(kT, o);
    res.seqs = kSeqs;
    res.predicted_gib = static_cast<double>(sc::model_step<Plan>::predict_bytes(kT, o).total()) / kGiB;
    const int H = Plan::block::input_width;
    std::uint32_t seed = 1;
    fill(m.embedding(), static_cast<std::size_t>(kVocab) * H, 0.0f, 0.02f, seed++);
    if (!tied) fill(m.lm_head(), static_cast<std::size_t>(kVocab) * H, 0.0f, 0.02f, seed++);
    fill(m.final_norm(), H, 1.0f, 0.0f, seed++);
    for (int l = 0; l < layers; ++l)
      for (const auto& w : m.layer_weights()) {
        const bool norm = w.name.find("layernorm") != std::string::npos;
        fill(m.layer_weight(l, w.name), w.elems(), norm ? 1.0f : 0.0f, norm ? 0.0f : 0.02f, seed++);
      }
    // PEFT's initialisation: A ~ U(-1/sqrt(in), 1/sqrt(in)) (std 1/sqrt(3 in)), B = 0.
    SG_CUDA_CHECK(cudaMemset(m.lora_params(), 0, m.lora_elems() * sizeof(float)));
    for (const auto& s : m.lora_slots())
      fill(m.lora_params() + s.a_off, static_cast<std::size_t>(kRank) * s.in, 0.0f,
           1.0f / std::sqrt(3.0f * static_cast<float>(s.in)), seed++);
    SG_CUDA_CHECK(cudaDeviceSynchronize());  // the fills ran on the default stream
    m.sync_lora_bf16();

    std::mt19937 rng(7);
    std::uniform_int_distribution<int> tok(0, kVocab - 1);
    std::vector<std::int32_t> ids(kT), lens(kSeqs, kSeqLen);
    for (auto& t : ids) t = tok(rng);
    m.set_batch(ids, {}, lens);

    sc::adamw_hparams h;
    h.lr = 1e-4, h.weight_decay = 0.0, h.max_grad_norm = 1.0;
    res.first_loss = m.step(h, h.lr);  // uncaptured (lazy kernel attributes)
    m.step(h, h.lr);                    // captured once, launched
    cudaEvent_t start = nullptr, stop = nullptr;
    SG_CUDA_CHECK(cudaEventCreate(&start));
    SG_CUDA_CHECK(cudaEventCreate(&stop));
    SG_CUDA_CHECK(cudaEventRecord(start, m.stream()));
    double host_us = 0;
    for (int i = 0; i < steps; ++i) {
      res.last_loss = m.step(h, h.lr);
      host_us += m.last_host_us();
    }
    res.host_us = host_us / steps;
    SG_CUDA_CHECK(cudaEventRecord(stop, m.stream()));
    SG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    res.step_ms = ms / steps;
    // The same steps with the host's launch hidden behind a spin kernel
    // (twice the measured host time, at least 5 ms): the difference to
    // step_ms is what the host adds to a step (launch the GPU waits for, the
    // per-step synchronisation for the loss), not the host call's own length,
    // which overlaps the GPU's work.
    const auto spin_ns = static_cast<unsigned long long>(std::max(5e6, 2e3 * res.host_us));
    float hidden = 0;
    for (int i = 0; i < steps; ++i) {
      spin_kernel<<<1, 1, 0, m.stream()>>>(spin_ns);
      SG_CUDA_CHECK(cudaEventRecord(start, m.stream()));
      m.step(h, h.lr);  // returns after the step (it synchronises for the loss)
      SG_CUDA_CHECK(cudaEventRecord(stop, m.stream()));
      SG_CUDA_CHECK(cudaEventSynchronize(stop));
      float one = 0;
      SG_CUDA_CHECK(cudaEventElapsedTime(&one, start, stop));
      hidden += one;
    }
    res.hidden_ms = hidden / steps;
    cudaEventDestroy(start), cudaEventDestroy(stop);
    // One more step with per-phase events (outside the timed loop).
    m.set_profiling(true);
    m.step(h, h.lr);
    const auto ph = m.phase_ms();
    m.set_profiling(false);
    for (int i = 0; i < 4; ++i) res.ph[i] = ph[static_cast<std::size_t>(i)];
    res.tok_s = kT / (res.step_ms * 1e-3);
    std::size_t free1 = 0;
    SG_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    res.alloc_gib = static_cast<double>(m.allocated_bytes()) / kGiB;
    res.used_gib = static_cast<double>(total - free1) / kGiB;
    res.delta_gib = static_cast<double>(free0 - free1) / kGiB;
    std::printf("%-13s %2d layers, T = %d (%d x %d), r = %d, LM-head chunk %lld: %8.2f ms/step  %8.0f tok/s  "
                "loss %.4f -> %.4f  grad norm %.3e\n"
                "              phases: forward (embedding + blocks) %.2f ms, head forward + backward %.2f ms, "
                "backward (blocks) %.2f ms, AdamW %.3f ms; %zu CUDA graph(s)\n"
                "              host: step() returns from its launch after %.1f us; with the launch hidden (spin "
                "kernel) a step takes %.2f ms: the host adds %.3f ms (%.2f%% of the step)\n"
                "              allocated by staticgrad %.3f GiB (predicted from the plans %.3f GiB), device used %.2f GiB "
                "(before the model: %.2f GiB; the model's own: %.3f GiB = %+.2f%% of the prediction)\n"
                "              plan: %s\n",
                label, layers, kT, kSeqs, kSeqLen, kRank, static_cast<long long>(m.chunk_tokens()), res.step_ms,
                res.tok_s, res.first_loss, res.last_loss, m.last_grad_norm(), ph[0], ph[1], ph[2], ph[3], m.captured_graphs(),
                res.host_us, res.hidden_ms, res.step_ms - res.hidden_ms, 100.0 * (1.0 - res.hidden_ms / res.step_ms),
                res.alloc_gib, res.predicted_gib,
                res.used_gib, static_cast<double>(total - free0) / kGiB, res.delta_gib,
                100.0 * (res.delta_gib / res.predicted_gib - 1.0), res.plan.c_str());
    res.ok = std::isfinite(res.last_loss);
  }
  return res;
}

}  // namespace

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
      if (z == "0.5b") rs.push_back(run<sc::plans::qwen2_0_5b::model>("Qwen2.5-0.5B", 24, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "1.5b") rs.push_back(run<sc::plans::qwen2_1_5b::model>("Qwen2.5-1.5B", 28, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "3b") rs.push_back(run<sc::plans::qwen2_3b::model>("Qwen2.5-3B", 36, 151936, true, seqs, seq_len, steps, chunk, mem));
      if (z == "7b") rs.push_back(run<sc::plans::qwen2_7b::model>("Qwen2.5-7B", 28, 152064, false, seqs, seq_len, steps, chunk, mem));
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
