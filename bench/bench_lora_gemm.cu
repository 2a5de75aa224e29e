// The LoRA projection on cuBLASLt (backend/cuda/lora_gemm.cuh) at
// Qwen2.5-1.5B sizes: the seven projections of a block at T = 16384 tokens
// (batch 8 x 2048), r = 16, s = 2 (alpha 32).
//
// Per projection and direction three benchmarks:
//   base     the frozen product alone (forward Y = X W^T, backward dX = dY W)
//   unfused  what PEFT does (forward 3 products, backward 5)
//   fused    the concatenation trick (forward 2 products, backward 4)
// Timing: CUDA events around `reps` consecutive calls (manual time, reported
// per call), so the host's launch latency of the first call is amortised;
// the calls rotate over `sets` independent activation buffers (each of
// X, dY, XZ is >= 50 MB, the H200's L2 size, and the rotation keeps one call
// from reading the previous call's output out of L2). The weights (<= 28 MB)
// are shared, as they are in training.
// Counters: TFLOP/s counts the useful FLOPs, identical for unfused and fused:
// forward 2 T (in out + in r + r out), backward 2 T (in out + 2 r out + 2 r in)
// (dX, dZ, dA, dB; W is frozen), base 2 T in out. overhead_% = time over the
// base product of the same projection and direction.
// A summary table (per projection: base us, unfused us, fused us and the two
// overheads) is printed after all benchmarks; the "layer" row sums the seven.
// Without a device every benchmark reports an error and the table is empty.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdio>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/lora_gemm.cuh"

namespace sc = staticgrad::cuda;
using bf16 = __nv_bfloat16;

namespace {

constexpr std::int64_t tokens = 8 * 2048;
constexpr std::int64_t rank = 16;
constexpr float scaling = 2.0f;
constexpr int sets = 2;  // rotating activation buffers
constexpr int reps = 8;  // calls per timed iteration

struct projection {
  const char* name;
  std::int64_t in, out;
};
constexpr projection projections[] = {{"q", 1536, 1536},   {"k", 1536, 256},     {"v", 1536, 256},   {"o", 1536, 1536},
                                      {"gate", 1536, 8960}, {"up", 1536, 8960}, {"down", 8960, 1536}};

enum class variant { base, unfused, fused };
const char* variant_name(variant v) { return v == variant::base ? "base" : v == variant::unfused ? "unfused" : "fused"; }

// Mean microseconds per call, by (projection, backward?, variant), for the summary.
std::map<std::string, std::map<int, double>> results;
int key(bool backward, variant v) { return (backward ? 10 : 0) + static_cast<int>(v); }

struct device_buffer {
  void* p = nullptr;
  explicit device_buffer(std::size_t bytes) { SG_CUDA_CHECK(cudaMalloc(&p, bytes)); }
  ~device_buffer() { cudaFree(p); }
  device_buffer(const device_buffer&) = delete;
  device_buffer& operator=(const device_buffer&) = delete;
  template <class T>
  T* as() const { return static_cast<T*>(p); }
};

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Deterministic values in [-scale, scale) from a hash of the index (no host round trip for GB-sized buffers).
template <class T>
__global__ void fill_kernel(T* p, std::int64_t n, float scale, std::uint32_t seed) {
  for (std::int64_t i = blockIdx.x * static_cast<std::int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<std::int64_t>(gridDim.x) * blockDim.x) {
    std::uint32_t h = static_cast<std::uint32_t>(i) * 2654435761u ^ seed ^ static_cast<std::uint32_t>(i >> 32);
    h ^= h >> 16, h *= 0x7feb352du, h ^= h >> 15, h *= 0x846ca68bu, h ^= h >> 16;
    const float u = (h >> 8) * (1.0f / 16777216.0f) * 2.0f - 1.0f;
    p[i] = static_cast<T>(scale * u);
  }
}
template <class T>
void fill(const device_buffer& b, std::int64_t n, float scale, std::uint32_t seed) {
  fill_kernel<T><<<2048, 256>>>(b.as<T>(), n, scale, seed);
  SG_CUDA_CHECK(cudaGetLastError());
}

void bench_projection(benchmark::State& state, projection p, bool backward, variant v) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  try {
    const sc::lora_dims d{tokens, p.in, p.out, rank};
    const std::int64_t T = d.T, in = d.in, out = d.out, r = d.r, L = d.in_r();
    sc::lt_handle h;
    cudaStream_t st = nullptr;
    device_buffer ws(sc::kLoraWorkspaceBytes);
    const std::size_t W_ = sc::kLoraWorkspaceBytes;

    // Weights (shared): W, WB = [W | B], A16, B16, f32 masters.
    device_buffer W(out * in * 2), WB(out * L * 2), A32(r * in * 4), B32(out * r * 4), A16(r * in * 2), B16(out * r * 2);
    fill<bf16>(W, out * in, 0.03f, 1);
    fill<float>(A32, r * in, 0.03f, 2);
    fill<float>(B32, out * r, 0.03f, 3);
    sc::lora_refresh_bf16(A32.as<float>(), A16.as<bf16>(), B32.as<float>(), B16.as<bf16>(), d, st);
    sc::lora_build_concat(W.as<bf16>(), B32.as<float>(), WB.as<bf16>(), d, st);

    // Activations, per rotating set; only what the variant touches.
    const bool fused = v == variant::fused;
    std::vector<std::unique_ptr<device_buffer>> keep;
    struct acts {
      bf16 *X = nullptr, *XZ = nullptr, *Y = nullptr, *Z = nullptr, *dY = nullptr, *dX = nullptr, *dZ = nullptr,
           *dXZ = nullptr;
      float *dA = nullptr, *dB = nullptr;
    } a[sets];
    auto alloc = [&](std::int64_t n, float scale, std::uint32_t seed, bool is_f32 = false) -> void* {
      keep.push_back(std::make_unique<device_buffer>(static_cast<std::size_t>(n) * (is_f32 ? 4 : 2)));
      if (is_f32) fill<float>(*keep.back(), n, scale, seed);
      else fill<bf16>(*keep.back(), n, scale, seed);
      return keep.back()->p;
    };
    for (int k = 0; k < sets; ++k) {
      const std::uint32_t seed = 100 + 10 * k;
      if (fused) a[k].XZ = static_cast<bf16*>(alloc(T * L, 1.0f, seed));  // X | sZ (sZ overwritten by f1)
      else a[k].X = static_cast<bf16*>(alloc(T * in, 1.0f, seed));
      if (!backward) {
        a[k].Y = static_cast<bf16*>(alloc(T * out, 0.0f, seed + 1));
        if (v == variant::unfused) a[k].Z = static_cast<bf16*>(alloc(T * r, 0.0f, seed + 2));
      } else {
        a[k].dY = static_cast<bf16*>(alloc(T * out, 1.0f, seed + 3));
        if (fused) {
          a[k].dXZ = static_cast<bf16*>(alloc(T * L, 0.0f, seed + 4));
        } else {
          a[k].dX = static_cast<bf16*>(alloc(T * in, 0.0f, seed + 4));
          if (v == variant::unfused) {
            a[k].Z = static_cast<bf16*>(alloc(T * r, 1.0f, seed + 5));
            a[k].dZ = static_cast<bf16*>(alloc(T * r, 0.0f, seed + 6));
          }
        }
        if (v != variant::base) {
          a[k].dA = static_cast<float*>(alloc(r * in, 0.0f, seed + 7, true));
          a[k].dB = static_cast<float*>(alloc(out * r, 0.0f, seed + 8, true));
        }
      }
    }

    // Prepared once (heuristics), as the static plan does.
    sc::rm_matmul base;
    sc::lora_forward_unfused fu;
    sc::lora_forward_fused ff;
    sc::lora_backward_unfused bu;
    sc::lora_backward_fused bf;
    sc::matmul_spec bs;
    bs.M = T, bs.c_type = CUDA_R_16BF;
    if (!backward) bs.N = out, bs.K = in, bs.lda = in, bs.trans_b = true, bs.ldb = in, bs.ldc = out;  // Y = X W^T
    else bs.N = in, bs.K = out, bs.lda = out, bs.trans_b = false, bs.ldb = in, bs.ldc = in;           // dX = dY W
    switch (v) {
      case variant::base: base.prepare(h.get(), bs, W_, "base"); break;
      case variant::unfused: backward ? bu.prepare(h.get(), d) : fu.prepare(h.get(), d); break;
      case variant::fused: backward ? bf.prepare(h.get(), d) : ff.prepare(h.get(), d); break;
    }
    auto call = [&](const acts& x) {
      const auto* Wp = W.as<bf16>();
      const auto* WBp = WB.as<bf16>();
      const auto* A16p = A16.as<bf16>();
      const auto* B16p = B16.as<bf16>();
      if (!backward) {
        switch (v) {
          case variant::base: base.run(h.get(), st, x.X, Wp, x.Y, 1.0f, 0.0f, ws.p, W_); break;
          case variant::unfused: fu.run(h.get(), st, x.X, Wp, A16p, B16p, scaling, x.Y, x.Z, ws.p, W_); break;
          case variant::fused: ff.run(h.get(), st, x.XZ, WBp, A16p, scaling, x.Y, ws.p, W_); break;
        }
      } else {
        switch (v) {
          case variant::base: base.run(h.get(), st, x.dY, Wp, x.dX, 1.0f, 0.0f, ws.p, W_); break;
          case variant::unfused:
            bu.run(h.get(), st, x.dY, x.X, Wp, A16p, B16p, x.Z, scaling, x.dX, x.dZ, x.dA, x.dB, false, ws.p, W_);
            break;
          case variant::fused:
            bf.run(h.get(), st, x.dY, x.XZ, WBp, A16p, scaling, x.dXZ, x.dA, x.dB, false, ws.p, W_);
            break;
        }
      }
    };

    for (int k = 0; k < sets; ++k) call(a[k]);  // warm-up
    SG_CUDA_CHECK(cudaDeviceSynchronize());
    cudaEvent_t start, stop;
    SG_CUDA_CHECK(cudaEventCreate(&start));
    SG_CUDA_CHECK(cudaEventCreate(&stop));
    double total_ms = 0;
    for (auto _ : state) {
      SG_CUDA_CHECK(cudaEventRecord(start, st));
      for (int i = 0; i < reps; ++i) call(a[i % sets]);
      SG_CUDA_CHECK(cudaEventRecord(stop, st));
      SG_CUDA_CHECK(cudaEventSynchronize(stop));
      float ms = 0;
      SG_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
      total_ms += ms;
      state.SetIterationTime(ms / 1e3 / reps);  // per call
    }
    SG_CUDA_CHECK(cudaEventDestroy(start));
    SG_CUDA_CHECK(cudaEventDestroy(stop));
    SG_CUDA_CHECK(cudaDeviceSynchronize());

    const double us = total_ms * 1e3 / reps / static_cast<double>(state.iterations());
    const double flops = v == variant::base ? d.base_flops() : backward ? d.backward_flops() : d.forward_flops();
    state.counters["TFLOP/s"] = flops / (us * 1e-6) / 1e12;
    state.counters["GFLOP"] = flops / 1e9;
    auto& row = results[p.name];
    row[key(backward, v)] = us;
    if (v != variant::base && row.count(key(backward, variant::base)))
      state.counters["overhead_%"] = 100.0 * (us / row[key(backward, variant::base)] - 1.0);
    state.SetLabel(std::string(backward ? "bwd " : "fwd ") + variant_name(v) + " T=" + std::to_string(T) +
                   " in=" + std::to_string(in) + " out=" + std::to_string(out) + " r=" + std::to_string(r));
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

void print_summary() {
  if (results.empty()) return;
  for (const bool backward : {false, true}) {
    std::printf("\nLoRA %s, T=%lld, r=%lld (us per call; overhead = time over the base product)\n",
                backward ? "backward (dX, dA, dB)" : "forward (Y)", static_cast<long long>(tokens),
                static_cast<long long>(rank));
    std::printf("%-6s %11s %11s %11s %13s %13s\n", "proj", "base_us", "unfused_us", "fused_us", "unfused_ovh%",
                "fused_ovh%");
    double sum[3] = {0, 0, 0};
    bool complete = true;
    for (const auto& p : projections) {
      auto it = results.find(p.name);
      double t[3] = {-1, -1, -1};
      for (int v = 0; v < 3; ++v)
        if (it != results.end() && it->second.count(key(backward, static_cast<variant>(v))))
          t[v] = it->second.at(key(backward, static_cast<variant>(v)));
      for (int v = 0; v < 3; ++v) {
        if (t[v] < 0) complete = false;
        else sum[v] += t[v];
      }
      auto ovh = [&](int v) { return t[0] > 0 && t[v] > 0 ? 100.0 * (t[v] / t[0] - 1.0) : -1.0; };
      std::printf("%-6s %11.1f %11.1f %11.1f %13.1f %13.1f\n", p.name, t[0], t[1], t[2], ovh(1), ovh(2));
    }
    if (complete)
      std::printf("%-6s %11.1f %11.1f %11.1f %13.1f %13.1f\n", "layer", sum[0], sum[1], sum[2],
                  100.0 * (sum[1] / sum[0] - 1.0), 100.0 * (sum[2] / sum[0] - 1.0));
  }
  std::printf("(-1: not run, e.g. filtered out)\n");
}

}  // namespace

int main(int argc, char** argv) {
  for (const bool backward : {false, true})
    for (const auto& p : projections)
      for (const variant v : {variant::base, variant::unfused, variant::fused}) {
        const std::string name = std::string("lora_1_5b/") + p.name + (backward ? "/bwd/" : "/fwd/") + variant_name(v);
        benchmark::RegisterBenchmark(name.c_str(), [p, backward, v](benchmark::State& s) { bench_projection(s, p, backward, v); })
            ->UseManualTime()
            ->Unit(benchmark::kMicrosecond);
      }
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  print_summary();
  return 0;
}
