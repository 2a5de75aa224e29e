// Causal GQA flash attention (backend/cuda/attention.cuh), forward and
// backward, T = 16384 tokens as 8 sequences of 2048 (batch 8 x 2048), at
// Qwen2.5-1.5B heads (H = 12, KV = 2, D = 128) and 0.5B heads (H = 14,
// KV = 2, D = 64).
//
// Timing: CUDA events around one launch sequence (manual time).
// Counter TFLOP/s uses the causal FLOPs of the useful work:
//   forward  = 4 * S^2 / 2 * D * H per sequence  (Q K^T and P V, half masked)
//   backward = 2.5 x forward                      (5 products instead of 2)
// The backward recomputes S and dP in its separate dq pass (7 products), so
// its hardware rate is 7/5 of the counter. Without a device the benchmarks
// report an error and skip.
//
// What to expect on an H200 (~790 dense bf16 TFLOP/s via cuBLAS): this is a
// simple mma.sync kernel (64 x 64 tiles, 4 warps, fragments read from shared
// memory with ldmatrix, no wgmma, no TMA): forward ~150-250 TFLOP/s,
// backward (by the counter) ~100-180 TFLOP/s.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <random>
#include <vector>

#include "staticgrad/backend/cuda/attention.cuh"

namespace sc = staticgrad::cuda;

namespace {

constexpr int seqs = 8, seq_len = 2048;
constexpr std::int64_t tokens = std::int64_t{seqs} * seq_len;

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  __nv_bfloat16* bf() const { return static_cast<__nv_bfloat16*>(p); }
  float* f() const { return static_cast<float*>(p); }
};

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

void fill(const device_buffer& d, std::size_t n, std::mt19937& rng, float sigma) {
  std::normal_distribution<float> nd(0.f, sigma);
  std::vector<__nv_bfloat16> h(n);
  for (auto& x : h) x = __float2bfloat16(nd(rng));
  SG_CUDA_CHECK(cudaMemcpy(d.p, h.data(), n * 2, cudaMemcpyHostToDevice));
}

void bench_attention(benchmark::State& state, int H, int KV, int D, bool backward) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  const std::size_t nq = static_cast<std::size_t>(tokens) * H * D, nk = static_cast<std::size_t>(tokens) * KV * D,
                    nl = static_cast<std::size_t>(tokens) * H;
  device_buffer q(nq * 2), k(nk * 2), v(nk * 2), out(nq * 2), lse(nl * 4), dout(nq * 2), dq(nq * 2), dk(nk * 2),
      dv(nk * 2), ws(sc::attention_backward_workspace_bytes(tokens, H)), seq((seqs + 1) * 4);
  std::mt19937 rng(7);
  fill(q, nq, rng, 1.f);
  fill(k, nk, rng, 1.f);
  fill(v, nk, rng, 1.f);
  fill(dout, nq, rng, 1.f);
  std::vector<std::int32_t> starts(seqs + 1);
  for (int s = 0; s <= seqs; ++s) starts[s] = s * seq_len;
  SG_CUDA_CHECK(cudaMemcpy(seq.p, starts.data(), starts.size() * 4, cudaMemcpyHostToDevice));
  const auto* seq_start = static_cast<const std::int32_t*>(seq.p);

  // The forward once: backward reads its out and lse.
  sc::attention_forward(q.bf(), k.bf(), v.bf(), out.bf(), lse.f(), seq_start, tokens, seqs, H, KV, D, nullptr);
  SG_CUDA_CHECK(cudaDeviceSynchronize());

  auto launch = [&] {
    if (backward)
      sc::attention_backward(q.bf(), k.bf(), v.bf(), out.bf(), lse.f(), dout.bf(), dq.bf(), dk.bf(), dv.bf(), seq_start,
                             tokens, seqs, H, KV, D, ws.f(), nullptr);
    else
      sc::attention_forward(q.bf(), k.bf(), v.bf(), out.bf(), lse.f(), seq_start, tokens, seqs, H, KV, D, nullptr);
  };
  launch();  // warm-up
  cudaEvent_t start, stop;
  SG_CUDA_CHECK(cudaEventCreate(&start));
  SG_CUDA_CHECK(cudaEventCreate(&stop));
  for (auto _ : state) {
    SG_CUDA_CHECK(cudaEventRecord(start));
    launch();
    SG_CUDA_CHECK(cudaEventRecord(stop));
    SG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms * 1e-3);
  }
  SG_CUDA_CHECK(cudaEventDestroy(start));
  SG_CUDA_CHECK(cudaEventDestroy(stop));
  const double fwd_flops = 4.0 * seq_len * seq_len / 2.0 * D * H * seqs;
  const double flops = backward ? 2.5 * fwd_flops : fwd_flops;
  state.counters["TFLOP/s"] = benchmark::Counter(flops * 1e-12, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["GFLOP"] = flops * 1e-9;
}

}  // namespace

BENCHMARK_CAPTURE(bench_attention, fwd_1_5b_h12_kv2_d128, 12, 2, 128, false)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bench_attention, bwd_1_5b_h12_kv2_d128, 12, 2, 128, true)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bench_attention, fwd_0_5b_h14_kv2_d64, 14, 2, 64, false)->UseManualTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(bench_attention, bwd_0_5b_h14_kv2_d64, 14, 2, 64, true)->UseManualTime()->Unit(benchmark::kMicrosecond);

BENCHMARK_MAIN();
