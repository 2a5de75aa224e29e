// CPU reference kernels: causal GQA attention (Qwen2.5-0.5B head shape) and
// the fused LM head + cross-entropy. Threads: STATICGRAD_CPU_THREADS or all
// hardware threads. Wall-clock time (UseRealTime), since the kernels run on
// several threads; GFLOP/s counts useful flops (causal half only) per wall second.
#include <benchmark/benchmark.h>

#include <cstdint>
#include <random>
#include <vector>

#include "staticgrad/backend/cpu/attention.hpp"
#include "staticgrad/backend/cpu/cross_entropy.hpp"

using namespace staticgrad::cpu;

namespace {
std::vector<float> random_vec(std::size_t n, std::uint64_t seed, float amp = 1.0f) {
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-amp, amp);
  std::vector<float> x(n);
  for (auto& e : x) e = u(rng);
  return x;
}

// Qwen2.5-0.5B attention: 14 query heads, 2 KV heads, head_dim 64.
constexpr int kHeads = 14, kKv = 2, kDim = 64;

struct attn_data {
  owned_layout lay;
  std::vector<float> q, k, v, out, lse, dout, dq, dk, dv;
  attn_data(std::int64_t rows, std::int64_t seq)
      : lay(make_uniform_layout(rows, seq)) {
    const std::size_t T = std::size_t(rows * seq);
    q = random_vec(T * kHeads * kDim, 1);
    k = random_vec(T * kKv * kDim, 2);
    v = random_vec(T * kKv * kDim, 3);
    dout = random_vec(T * kHeads * kDim, 4);
    out.resize(q.size()); dq.resize(q.size()); dk.resize(k.size()); dv.resize(v.size());
    lse.resize(T * kHeads);
  }
};

// Causal attention flops: 2 products of ~L^2/2 * d per head per sequence.
double attn_flops(std::int64_t rows, std::int64_t seq) {
  return 2.0 * 2.0 * double(rows) * double(seq) * double(seq + 1) / 2.0 * kDim * kHeads;
}

void BM_attention_forward(benchmark::State& st) {
  attn_data a(st.range(0), st.range(1));
  for (auto _ : st) {
    attention_forward(a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data(), a.lay.view(),
                      kHeads, kKv, kDim);
    benchmark::DoNotOptimize(a.out.data());
  }
  st.counters["GFLOP/s"] = benchmark::Counter(attn_flops(st.range(0), st.range(1)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

void BM_attention_backward(benchmark::State& st) {
  attn_data a(st.range(0), st.range(1));
  attention_forward(a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data(), a.lay.view(),
                    kHeads, kKv, kDim);
  for (auto _ : st) {
    attention_backward(a.q.data(), a.k.data(), a.v.data(), a.out.data(), a.lse.data(),
                       a.dout.data(), a.dq.data(), a.dk.data(), a.dv.data(), a.lay.view(), kHeads,
                       kKv, kDim);
    benchmark::DoNotOptimize(a.dq.data());
  }
  // backward: QK^T recompute, dO V^T, dS K, dS^T Q, P^T dO = 5 products.
  st.counters["GFLOP/s"] = benchmark::Counter(2.5 * attn_flops(st.range(0), st.range(1)) * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}

// LM head + CE, forward and the fused backward (dhidden) in one pass.
// T = 256, H = 896 (Qwen2.5-0.5B); V = 32768 instead of 151936 to keep the
// run short on a shared 2-core machine (time scales linearly in V).
void BM_lm_head_ce_fwd_bwd(benchmark::State& st) {
  const std::int64_t T = 256, H = 896, V = 32768, chunk = st.range(0);
  const auto hid = random_vec(std::size_t(T * H), 5);
  const auto w = random_vec(std::size_t(V * H), 6, 0.05f);
  std::vector<std::int32_t> tg(T);
  for (std::int64_t t = 0; t < T; ++t) tg[t] = std::int32_t((t * 7919) % V);
  std::vector<float> dh(std::size_t(T * H));
  for (auto _ : st) {
    auto r = lm_head_ce_forward(hid.data(), w.data(), tg.data(), dh.data(), T, int(H), V,
                                1.0f / float(T), chunk);
    benchmark::DoNotOptimize(r);
  }
  st.counters["GFLOP/s"] = benchmark::Counter(4.0 * T * H * V * 1e-9,
                                              benchmark::Counter::kIsIterationInvariantRate);
}
}  // namespace

BENCHMARK(BM_attention_forward)->Args({1, 512})->Args({4, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_attention_backward)->Args({1, 512})->Args({4, 128})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(BM_lm_head_ce_fwd_bwd)->Arg(64)->Arg(256)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

BENCHMARK_MAIN();
