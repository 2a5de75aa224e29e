// Memory from a budget on CUDA (graph/memory_plan.hpp interpreted by
// block_executor.cuh and model_step.cuh):
//   1. gradients: the LoRA gradients and the loss of one forward + backward are
//      the same under every memory policy as keeping everything. The recompute
//      entries re-run the forward row-group kernels, and a whole-block layer
//      re-runs its forward, on the same inputs with the same (deterministic)
//      kernels, so the values rebuilt are the values saved: we require bit
//      equality (tighter than bf16 rounding) and print the largest difference.
//      Offloaded layer inputs are copied to pinned host memory and back
//      unchanged (bf16 bytes), so the same holds with them; with 5 layers, 4
//      and 5 offloaded inputs make 1 and 2 round trips through the ring of 3.
//      The offloaded step is also run as a captured CUDA graph (step() with
//      lr 0: the parameters stay, so each replay's gradients must again be
//      the reference's, bit for bit): the copy stream is part of the graph.
//      A smaller LM-head chunk (memory_policy::lm_head_chunk) runs the head's
//      products at another M, where cuBLASLt may sum in another order, so
//      there the bound is 4 bf16 ulps of the largest gradient, not bitwise
//      (on an H100 with CUDA 13's cuBLASLt they came out bitwise equal).
//   2. predictions: for several budgets between keep-everything and the
//      smallest plan, the policy the planner picks fits the budget, the
//      model's allocation counter equals predict_bytes() exactly, and the
//      device memory the model takes (cudaMemGetInfo before construction and
//      after a step: every allocation is made up front, none during a step, so
//      this is the peak) is within 5% of the prediction, or, where the
//      device's fixed addition to every model (~0.14 GiB) is more than 5% of
//      a small plan, that addition is the same as under the first plan.
// Setup: 1. the 0.5B block shape, 5 layers, vocabulary 512, T = 2 x 192;
// 2. Qwen2.5-0.5B's shape (24 layers, vocabulary 151936), T = 4 x 2048.
// Random weights (values do not change the memory or the determinism).
//
// Exit codes: 0 pass, 1 fail, 77 no CUDA device (ctest: skipped).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "shared_gpu.hpp"
#include "staticgrad/backend/cuda/model_step.cuh"
#include "staticgrad/backend/cuda/random_fill.cuh"
#include "staticgrad/plans/qwen2_0_5b.cuh"

namespace sc = staticgrad::cuda;
namespace sg = staticgrad::graph;
using bf16 = __nv_bfloat16;
using Plan = sc::plans::qwen2_0_5b::model;
using M = sc::model_step<Plan>;

namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// Deterministic values with standard deviation `std` around `mean` (backend/cuda/random_fill.cuh).
template <class T>
void fill(T* p, std::size_t n, float mean, float std, std::uint32_t seed) {
  sc::random_fill(p, n, mean, std, seed);
}

sc::model_options options(int layers, std::int64_t vocab) {
  sc::model_options o;
  o.layers = layers, o.vocab = vocab, o.tied = true, o.rank = 16, o.lora_scaling = 2.0f;
  o.ce_chunk = 2048, o.graphs = false;
  return o;
}

// Random weights and adapters (A and B non-zero: every gradient path carries signal).
void init(M& m, int layers, std::int64_t vocab) {
  const int H = Plan::block::input_width;
  std::uint32_t seed = 11;
  fill(m.embedding(), static_cast<std::size_t>(vocab) * H, 0.0f, 0.02f, seed++);
  fill(m.final_norm(), H, 1.0f, 0.0f, seed++);
  for (int l = 0; l < layers; ++l)
    for (const auto& w : m.layer_weights()) {
      const bool norm = w.name.find("layernorm") != std::string::npos;
      fill(m.layer_weight(l, w.name), w.elems(), norm ? 1.0f : 0.0f, norm ? 0.0f : 0.02f, seed++);
    }
  SG_CUDA_CHECK(cudaMemset(m.lora_params(), 0, m.lora_elems() * sizeof(float)));
  for (const auto& s : m.lora_slots()) {
    fill(m.lora_params() + s.a_off, static_cast<std::size_t>(16) * s.in, 0.0f, 0.05f, seed++);
    fill(m.lora_params() + s.b_off, static_cast<std::size_t>(16) * s.out, 0.0f, 0.02f, seed++);
  }
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  m.sync_lora_bf16();
}

void batch(M& m, std::int64_t vocab, int seqs, int len) {
  std::mt19937 rng(5);
  std::uniform_int_distribution<int> tok(0, static_cast<int>(vocab) - 1);
  std::vector<std::int32_t> ids(static_cast<std::size_t>(seqs) * len), lens(static_cast<std::size_t>(seqs), len);
  for (auto& t : ids) t = tok(rng);
  m.set_batch(ids, {}, lens);
}

struct grads {
  double loss = 0;
  std::vector<float> g;
};

// graph_steps > 0: instead of one forward_backward, that many step()s with
// lr 0 as a captured CUDA graph (warm-up, capture + launch, replays); the
// gradients and loss of the last.
grads run_policy(const sg::memory_policy& p, int layers, std::int64_t vocab, int seqs, int len, int graph_steps = 0) {
  auto o = options(layers, vocab);
  o.memory = p;
  o.graphs = graph_steps > 0;
  M m(static_cast<std::int64_t>(seqs) * len, o);
  init(m, layers, vocab);
  batch(m, vocab, seqs, len);
  grads r;
  if (graph_steps == 0) r.loss = m.forward_backward().loss_sum;
  sc::adamw_hparams h;
  h.lr = 0, h.weight_decay = 0;
  for (int i = 0; i < graph_steps; ++i) r.loss = m.step(h, 0.0) * static_cast<double>(m.counted());
  if (graph_steps > 0 && m.captured_graphs() != 1) throw std::runtime_error("the offloaded step was not captured as a graph");
  r.g.resize(m.lora_elems());
  SG_CUDA_CHECK(cudaMemcpy(r.g.data(), m.lora_grads(), r.g.size() * sizeof(float), cudaMemcpyDeviceToHost));
  return r;
}

bool check_gradients() {
  const int L = 5, seqs = 2, len = 192;
  const std::int64_t V = 512;
  const int K = Plan::block::data.n_recompute;
  const grads ref = run_policy({}, L, V, seqs, len);
  double scale = 0;
  for (float x : ref.g) scale = std::max(scale, static_cast<double>(std::fabs(x)));
  bool ok = scale > 0;
  std::printf("gradients: reference (keep everything) loss %.6f, max |grad| %.3e\n", ref.loss, scale);
  struct run_case {
    sg::memory_policy p;
    int graph_steps;
  };
  for (const run_case rc : {run_case{{1, 0}, 0}, run_case{{K, 0}, 0}, run_case{{0, 2}, 0}, run_case{{K, L}, 0},
                            run_case{{0, 0, 4}, 0}, run_case{{0, 2, L}, 0}, run_case{{K, L, L}, 0}, run_case{{K, L, L}, 4},
                            run_case{{0, 0, 0, 128}, 0}, run_case{{K, L, L, 128}, 0}}) {
    const sg::memory_policy p = rc.p;
    const grads r = run_policy(p, L, V, seqs, len, rc.graph_steps);
    double worst = 0;
    std::size_t differ = 0;
    for (std::size_t i = 0; i < r.g.size(); ++i) {
      const double d = std::fabs(static_cast<double>(r.g[i]) - ref.g[i]);
      worst = std::max(worst, d);
      differ += std::memcmp(&r.g[i], &ref.g[i], sizeof(float)) != 0;
    }
    // step() returns the mean; times the count it may differ from the sum in the last bit.
    bool loss_same = rc.graph_steps ? std::fabs(r.loss - ref.loss) <= 1e-12 * std::fabs(ref.loss) : r.loss == ref.loss;
    bool same = differ == 0 && loss_same;
    if (p.lm_head_chunk > 0) {
      // Another LM-head chunk (128 tokens: 3 chunks of T = 384 instead of one)
      // runs the head's products at another M, where cuBLASLt may sum in
      // another order: the f32 logits differ in their last bits and dX, rounded
      // to bf16, by up to one bf16 ulp (2^-8 relative). Bound: 4 bf16 ulps of
      // the largest gradient, and the f32 loss sum to 1e-5 relative.
      loss_same = std::fabs(r.loss - ref.loss) <= 1e-5 * std::fabs(ref.loss);
      same = loss_same && worst <= 4.0 / 256 * scale;
    }
    ok = ok && same;
    std::printf("  %s  tier %d, %d block layers, %d offloaded inputs%s (%s): loss %.6f, %zu of %zu gradient elements "
                "differ, max diff %.3e (%.2e of max |grad|)\n",
                same ? "PASS" : "FAIL", p.tier, p.block_layers, p.offload_layers,
                rc.graph_steps ? ", step() replayed as a CUDA graph" : "", M::memory_text(p, L).c_str(), r.loss, differ,
                r.g.size(), worst, worst / scale);
  }
  return ok;
}

bool check_predictions() {
  const int L = 24, seqs = 4, len = 2048;
  const std::int64_t V = 151936, T = static_cast<std::int64_t>(seqs) * len;
  auto o = options(L, V);
  // Warm-up: load every kernel module once (lazy loading takes device memory
  // on first launch) so that the measurements below see only the model.
  {
    auto w = o;
    w.memory = {Plan::block::data.n_recompute, 1};
    M m(T, w);
    init(m, L, V);
    batch(m, V, seqs, len);
    m.forward_backward();
  }
  const double keep = static_cast<double>(M::predict_bytes(T, o).total());
  o.memory = {Plan::block::data.n_recompute, L, L, 128};  // the smallest plan: every block re-run, every input offloaded, 128-token head chunks
  const double least = static_cast<double>(M::predict_bytes(T, o).total());
  std::printf("predictions: Qwen2.5-0.5B shape, T = %d x %d: keep everything %.3f GiB, smallest plan %.3f GiB\n", seqs,
              len, keep / kGiB, least / kGiB);
  bool ok = least < keep;
  // What the device gives a model beyond its allocations (measured - counted),
  // from the first budget (keep everything): the same under every plan.
  double beyond0 = -1;
  for (double f : {1.0, 0.85, 0.7, 0.55, 0.0}) {
    const double budget = least + f * (keep - least) + 1;
    const auto c = M::choose_memory(T, len, options(L, V), budget);
    auto oo = options(L, V);
    oo.memory = c.policy;
    SG_CUDA_CHECK(cudaDeviceSynchronize());
    std::size_t free0 = 0, free1 = 0, total = 0;
    SG_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    double measured = 0, counted = 0;
    {
      M m(T, oo);
      init(m, L, V);
      batch(m, V, seqs, len);
      m.forward_backward();
      SG_CUDA_CHECK(cudaDeviceSynchronize());
      SG_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
      measured = static_cast<double>(free0) - static_cast<double>(free1);
      counted = static_cast<double>(m.allocated_bytes());
    }
    const double err = measured / c.bytes - 1.0, beyond = measured - counted;
    if (beyond0 < 0) beyond0 = beyond;
    // Within 5% of the prediction; or, for a plan so small that the fixed
    // ~0.14 GiB the device adds to every model (measured 2026-12-06 on an
    // H100: the same under all five plans to 7 MiB; docs/memory.md) exceeds
    // 5% of it, that fixed part equal to the first plan's within 16 MiB: all
    // that the plan decides is then predicted. On a shared GPU
    // (shared_gpu.hpp) the device-wide reading is printed, not checked.
    const bool measured_ok = std::fabs(err) <= 0.05 || std::fabs(beyond - beyond0) <= 16.0 * (1 << 20);
    const bool pass = c.fits && c.bytes <= budget && counted == c.bytes && (sgtest::gpu_is_shared() || measured_ok);
    ok = ok && pass;
    std::printf("  %s  budget %.3f GiB -> %s: predicted %.3f GiB, allocation counter %.3f GiB, measured on the "
                "device %.3f GiB (%+.2f%%%s; beyond the allocations %.1f MiB), pinned host %.3f GiB, predicted slowdown %.3fx\n",
                pass ? "PASS" : "FAIL", budget / kGiB, M::memory_text(c.policy, L).c_str(), c.bytes / kGiB,
                counted / kGiB, measured / kGiB, 100.0 * err, sgtest::gpu_is_shared() ? ", not checked: the GPU is shared" : "",
                beyond / double(1 << 20), double(M::predict_bytes(T, oo).host_pinned) / kGiB,
                c.slowdown());
  }
  return ok;
}

}  // namespace

// gpu_test_memory [gradients] [predictions]: the parts to run (default both).
// Under compute-sanitizer's synccheck the full-size part 2 runs for many
// minutes (docs/cuda.md, "Sanitizers"); part 1 runs the same plan's kernels on 5 layers.
int main(int argc, char** argv) {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: skipping\n");
    return 77;
  }
  auto wanted = [&](const char* part) {
    if (argc < 2) return true;
    for (int i = 1; i < argc; ++i)
      if (std::strcmp(argv[i], part) == 0) return true;
    return false;
  };
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], "gradients") != 0 && std::strcmp(argv[i], "predictions") != 0) {
      std::printf("usage: gpu_test_memory [gradients] [predictions] (got '%s')\n", argv[i]);
      return 1;
    }
  try {
    bool ok = true;
    if (wanted("gradients")) ok = check_gradients() && ok;
    if (wanted("predictions")) ok = check_predictions() && ok;
    std::printf("%s\n", ok ? "ALL PASS" : "SOME FAILED");
    return ok ? 0 : 1;
  } catch (const std::exception& e) {
    std::printf("error: %s\n", e.what());
    return 1;
  }
}
