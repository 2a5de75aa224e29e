// Causal GQA flash attention (backend/cuda/attention.cuh), forward and
// backward, at Qwen2.5-1.5B heads (H = 12, KV = 2, D = 128) and 0.5B heads
// (H = 14, KV = 2, D = 64), on batch 8 x 2048 (8 packed sequences, the
// training step's shape) and on one 32768-token sequence.
//
// Timing: CUDA events around one launch sequence (manual time).
// Counter TFLOP/s uses the causal FLOPs of the useful work:
//   forward  = 4 * S^2 / 2 * D * H per sequence  (Q K^T and P V, half masked)
//   backward = 2.5 x forward                      (5 products instead of 2)
// %roof790 is that rate against 790 TFLOP/s, the dense bf16 rate cuBLAS
// reaches on this GPU (8192^3, random data). The backward recomputes S and dP
// in its separate dq pass (7 products), so its hardware rate is 7/5 of the
// counter. Without a device the benchmarks report an error and skip.
//
// Kernels, by the name's last part: "_hopper" is attention_kernel::hopper,
// the wgmma + TMA kernels on sm_90 (hopper/attention_{fwd,bwd}_sm90.cuh; the
// forward software pipelined); "_unpipelined" the Hopper forward without its
// pipeline and ping-pong; "_portable" the mma.sync ones. Names are
// bench_attention/{fwd,bwd}_..., so a filter picks a set:
// --benchmark_filter=/fwd_ (the forward only), '/bwd_.*_portable',
// '/bwd_.*_hopper' (scripts/gpu_attention.sh runs the backward under its own
// timeout, and only once the Hopper backward has passed its test).
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <random>
#include <vector>

#include "staticgrad/backend/cuda/attention.cuh"

namespace sc = staticgrad::cuda;

namespace {


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

void bench_attention(benchmark::State& state, int H, int KV, int D, bool backward, int seqs, int seq_len,
                     sc::attention_kernel which) {
  const std::int64_t tokens = std::int64_t{seqs} * seq_len;
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
                             tokens, seqs, H, KV, D, ws.f(), nullptr, which);
    else
      sc::attention_forward(q.bf(), k.bf(), v.bf(), out.bf(), lse.f(), seq_start, tokens, seqs, H, KV, D, nullptr,
                            which);
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
  // Roofline: the H200's dense bf16 rate measured through cuBLAS (8192^3, random data).
  constexpr double roofline_tflops = 790.0;
  state.counters["%roof790"] =
      benchmark::Counter(flops * 1e-12 / roofline_tflops * 100.0, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace

#define SG_ATTN_BENCH(name, ...) \
  BENCHMARK_CAPTURE(bench_attention, name, __VA_ARGS__)->UseManualTime()->Unit(benchmark::kMicrosecond)
constexpr auto hopper = sc::attention_kernel::hopper, portable = sc::attention_kernel::portable,
               unpipelined = sc::attention_kernel::hopper_unpipelined;
// batch 8 x 2048 (the training step's shape) and one 32k-token sequence.
SG_ATTN_BENCH(fwd_1_5b_h12_kv2_d128_8x2048_hopper, 12, 2, 128, false, 8, 2048, hopper);
SG_ATTN_BENCH(fwd_1_5b_h12_kv2_d128_8x2048_unpipelined, 12, 2, 128, false, 8, 2048, unpipelined);
SG_ATTN_BENCH(fwd_1_5b_h12_kv2_d128_8x2048_portable, 12, 2, 128, false, 8, 2048, portable);
SG_ATTN_BENCH(bwd_1_5b_h12_kv2_d128_8x2048_hopper, 12, 2, 128, true, 8, 2048, hopper);
SG_ATTN_BENCH(bwd_1_5b_h12_kv2_d128_8x2048_portable, 12, 2, 128, true, 8, 2048, portable);
SG_ATTN_BENCH(fwd_0_5b_h14_kv2_d64_8x2048_hopper, 14, 2, 64, false, 8, 2048, hopper);
SG_ATTN_BENCH(fwd_0_5b_h14_kv2_d64_8x2048_unpipelined, 14, 2, 64, false, 8, 2048, unpipelined);
SG_ATTN_BENCH(fwd_0_5b_h14_kv2_d64_8x2048_portable, 14, 2, 64, false, 8, 2048, portable);
SG_ATTN_BENCH(bwd_0_5b_h14_kv2_d64_8x2048_hopper, 14, 2, 64, true, 8, 2048, hopper);
SG_ATTN_BENCH(bwd_0_5b_h14_kv2_d64_8x2048_portable, 14, 2, 64, true, 8, 2048, portable);
SG_ATTN_BENCH(fwd_1_5b_h12_kv2_d128_1x32768_hopper, 12, 2, 128, false, 1, 32768, hopper);
SG_ATTN_BENCH(fwd_1_5b_h12_kv2_d128_1x32768_unpipelined, 12, 2, 128, false, 1, 32768, unpipelined);
SG_ATTN_BENCH(bwd_1_5b_h12_kv2_d128_1x32768_hopper, 12, 2, 128, true, 1, 32768, hopper);
SG_ATTN_BENCH(bwd_1_5b_h12_kv2_d128_1x32768_portable, 12, 2, 128, true, 1, 32768, portable);
SG_ATTN_BENCH(fwd_0_5b_h14_kv2_d64_1x32768_hopper, 14, 2, 64, false, 1, 32768, hopper);
SG_ATTN_BENCH(fwd_0_5b_h14_kv2_d64_1x32768_unpipelined, 14, 2, 64, false, 1, 32768, unpipelined);
SG_ATTN_BENCH(bwd_0_5b_h14_kv2_d64_1x32768_hopper, 14, 2, 64, true, 1, 32768, hopper);
SG_ATTN_BENCH(bwd_0_5b_h14_kv2_d64_1x32768_portable, 14, 2, 64, true, 1, 32768, portable);

BENCHMARK_MAIN();
