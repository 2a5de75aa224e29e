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
#include <vector>

#include "staticgrad/backend/cuda/row_group.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"

namespace sc = staticgrad::cuda;
namespace plan = staticgrad::cuda::plans::qwen2_1_5b;

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

template <class Group>
void bench_group(benchmark::State& state, const sc::kernel_info& info) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(0.5f, 1.5f);
  std::vector<std::unique_ptr<device_buffer>> keep;
  sc::row_group_args a;
  double bytes = 0;
  for (int j = 0; j < info.n_buffers; ++j) {
    const auto& b = info.buffers[j];
    const std::size_t esize = b.kind == sc::binding_kind::stat ? 4 : 2, count = static_cast<std::size_t>(tokens * b.width);
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
    bytes += static_cast<double>(count * esize) * (b.mode == sc::access::read_write ? 2 : 1);
  }
  for (int p = 0; p < info.n_params; ++p) {
    keep.push_back(std::make_unique<device_buffer>(static_cast<std::size_t>(info.params[p].width) * 2));
    SG_CUDA_CHECK(cudaMemset(keep.back()->p, 0, static_cast<std::size_t>(info.params[p].width) * 2));
    a.par[p] = static_cast<const __nv_bfloat16*>(keep.back()->p);
    bytes += info.params[p].width * 2.0;
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
  sc::launch_row_group<Group>(a);  // warm-up (and first-launch attribute setup)
  SG_CUDA_CHECK(cudaDeviceSynchronize());
  for (auto _ : state) {
    SG_CUDA_CHECK(cudaEventRecord(start));
    sc::launch_row_group<Group>(a);
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
  state.SetLabel(info.ops);
}

}  // namespace

// bias + RoPE on q (f2), add + RMSNorm (f9), SwiGLU (f12); backward: SwiGLU (b1),
// RMSNorm with residual-gradient accumulation (b4), RoPE on q (b10).
template <class Group>
void add(const char* name, const sc::kernel_info& info) {
  benchmark::RegisterBenchmark(name, [&info](benchmark::State& s) { bench_group<Group>(s, info); })
      ->UseManualTime()
      ->Unit(benchmark::kMicrosecond);
}

int main(int argc, char** argv) {
  add<plan::f2>("qwen2_1_5b/f2_bias_rope_q", plan::f2_info);
  add<plan::f9>("qwen2_1_5b/f9_add_rmsnorm", plan::f9_info);
  add<plan::f12>("qwen2_1_5b/f12_swiglu", plan::f12_info);
  add<plan::b1>("qwen2_1_5b/b1_swiglu_bwd", plan::b1_info);
  add<plan::b4>("qwen2_1_5b/b4_rmsnorm_bwd_acc", plan::b4_info);
  add<plan::b10>("qwen2_1_5b/b10_rope_q_bwd", plan::b10_info);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
