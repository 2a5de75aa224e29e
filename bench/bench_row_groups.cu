// Row-group kernels at Qwen2.5-1.5B sizes, T = 16384 tokens (batch 8 x 2048).
//
// Each benchmark runs one generated kernel (plans/qwen2_1_5b.cuh) and times it
// with CUDA events (manual time). Counter GB/s = the bytes the kernel must
// move at least: every buffer it reads once, every buffer it writes once
// (read-and-written buffers twice), parameter vectors once; bf16 rows, f32
// statistics. Without a device the benchmarks report an error and skip.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "staticgrad/backend/cuda/row_group.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"

namespace sc = staticgrad::cuda;
using plan = staticgrad::cuda::plans::qwen2_1_5b::block;

namespace {

constexpr std::int64_t tokens = 8 * 2048;

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~device_buffer() { cudaFree(p); }
};

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Row-group entry `which` ("f2", "b10": kernel ids as explain prints them) of the plan.
const staticgrad::graph::entry& find_entry(const std::string& which) {
  const auto& S = plan::data;
  for (int i = 0; i < S.n_fwd; ++i)
    if (which == "f" + std::to_string(S.fwd[i].kernel) && S.fwd[i].kind == staticgrad::graph::kernel_kind::row_group) return S.fwd[i];
  for (int i = 0; i < S.n_bwd; ++i)
    if (which == "b" + std::to_string(S.bwd[i].kernel) && S.bwd[i].kind == staticgrad::graph::kernel_kind::row_group_bwd)
      return S.bwd[i];
  throw std::runtime_error("bench_row_groups: the plan has no row group " + which);
}

void bench_group(benchmark::State& state, const staticgrad::graph::entry& e) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::vector<std::unique_ptr<device_buffer>> keep;
  sc::row_group_args a;
  double bytes = 0;
  for (int j = 0; j < e.n_buf; ++j) {
    const auto& b = e.buf[j];
    const std::size_t esize = b.store == staticgrad::graph::storage::stat ? 4 : 2, count = static_cast<std::size_t>(tokens * b.width);
    keep.push_back(std::make_unique<device_buffer>(count * esize));
    // Plausible values (positive statistics, no NaN/inf on the timed path).
    if (esize == 4) {
      std::vector<float> h(count);
      for (auto& v : h) v = u(rng);
      SG_CUDA_CHECK(cudaMemcpy(keep.back()->p, h.data(), count * 4, cudaMemcpyHostToDevice));
    } else {
      std::vector<__nv_bfloat16> h(count);
      for (auto& v : h) v = __float2bfloat16(u(rng) - 1.0f);
      SG_CUDA_CHECK(cudaMemcpy(keep.back()->p, h.data(), count * 2, cudaMemcpyHostToDevice));
    }
    a.buf[j] = keep.back()->p;
    bytes += static_cast<double>(count * esize) * (e.buf_read[j] && e.buf_written[j] ? 2 : 1);
  }
  for (int p = 0; p < e.n_par; ++p) {
    const std::size_t w = static_cast<std::size_t>(plan::data.params[e.par[p]].cols);
    keep.push_back(std::make_unique<device_buffer>(w * 2));
    SG_CUDA_CHECK(cudaMemset(keep.back()->p, 0, w * 2));
    a.par[p] = static_cast<const __nv_bfloat16*>(keep.back()->p);
    bytes += static_cast<double>(w) * 2.0;
  }
  std::vector<std::int32_t> pos(tokens);
  for (std::int64_t t = 0; t < tokens; ++t) pos[t] = static_cast<std::int32_t>(t % 2048);
  keep.push_back(std::make_unique<device_buffer>(pos.size() * 4));
  SG_CUDA_CHECK(cudaMemcpy(keep.back()->p, pos.data(), pos.size() * 4, cudaMemcpyHostToDevice));
  a.positions = static_cast<const std::int32_t*>(keep.back()->p);
  bytes += tokens * 4.0;  // positions (read by RoPE groups; 64 KiB, small either way)
  a.tokens = tokens;

  cudaEvent_t start, stop;
  SG_CUDA_CHECK(cudaEventCreate(&start));
  SG_CUDA_CHECK(cudaEventCreate(&stop));
  auto launch = [&] { plan::row_group(e.group, [&](auto* g) { sc::launch_row_group<std::remove_pointer_t<decltype(g)>>(a); }); };
  launch();  // warm-up (and first-launch attribute setup)
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    SG_CUDA_CHECK(cudaEventRecord(start));
    launch();
    SG_CUDA_CHECK(cudaEventRecord(stop));
    SG_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0;
    SG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    state.SetIterationTime(ms / 1e3);
  }
  SG_CUDA_CHECK(cudaEventDestroy(start));
  SG_CUDA_CHECK(cudaEventDestroy(stop));
  state.counters["GB/s"] = benchmark::Counter(bytes * static_cast<double>(state.iterations()) / 1e9,
                                              benchmark::Counter::kIsRate);
  state.counters["MB"] = bytes / 1e6;
  std::string ops;
  for (int i = 0; i < e.n_steps; ++i)
    ops += (i ? " + " : "") + std::string(staticgrad::graph::traits_of(plan::data.steps[e.step0 + i].op).name);
  state.SetLabel(ops);
}

}  // namespace

// bias + RoPE on q (f2), add + RMSNorm (f9), SwiGLU (f12); backward: SwiGLU (b1),
// RMSNorm with residual-gradient accumulation (b4), RoPE on q (b10).
void add(const char* name, const char* which) {
  const auto& e = find_entry(which);
  benchmark::RegisterBenchmark(name, [&e](benchmark::State& s) { bench_group(s, e); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

int main(int argc, char** argv) {
  add("qwen2_1_5b/f2_bias_rope_q", "f2");
  add("qwen2_1_5b/f9_add_rmsnorm", "f9");
  add("qwen2_1_5b/f12_swiglu", "f12");
  add("qwen2_1_5b/b1_swiglu_bwd", "b1");
  add("qwen2_1_5b/b4_rmsnorm_bwd_acc", "b4");
  add("qwen2_1_5b/b10_rope_q_bwd", "b10");
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
