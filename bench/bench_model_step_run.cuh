#pragma once
// bench_model_step's measured run of one plan (bench_model_step.cu describes
// it). Included only by the generated model_step_<plan>.cu
// (model_step_plan.cu.in): the four sizes' model steps in one TU took 51 s and
// 2.6 GB to compile.
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
#include "bench_model_step.hpp"

namespace sc = staticgrad::cuda;
using bf16 = __nv_bfloat16;

namespace bench_model_step {

constexpr int kRank = 16;

// Holds the GPU for `ns` nanoseconds (the global timer): queued before a step,
// it lets the host finish launching the step's graph before the GPU reaches
// it, so the step then runs at the GPU's own pace (no host-bound gaps).
__global__ inline void spin_kernel(unsigned long long ns) {
  unsigned long long t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
}

// Deterministic values with standard deviation `std` around `mean` (backend/cuda/random_fill.cuh).
template <class T>
void fill(T* p, std::size_t n, float mean, float std, std::uint32_t seed) {
  sc::random_fill(p, n, mean, std, seed);
}

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

}  // namespace bench_model_step
