// One Qwen2.5-1.5B block on CUDA (block_executor.cuh, driven by the
// generated schedule): forward, backward, and forward + backward replayed as
// one captured CUDA graph. T = 16384 tokens as 8 sequences of 2048, LoRA
// r = 16 on all seven projections (unfused cuBLASLt path), bf16 storage.
//
// Timing: CUDA events on the executor's stream around one layer's launches
// (manual time); every allocation, the weights, the bf16 LoRA copies and the
// reset of the residual gradient (backward updates it in place) are outside
// the timed region. Counters:
//   tok/s          tokens per second through one layer (this pass)
//   step_28L_ms    28 x the time of this pass: the projected share of one
//                  training step of the 28-layer model (LM head, cross-entropy,
//                  embedding and optimizer NOT included; the 'graph' row is
//                  forward + backward, i.e. the whole per-layer step).
// Weights are random (values do not change the work). Without a device the
// benchmarks report an error and skip.
#include <benchmark/benchmark.h>
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "staticgrad/backend/cuda/block_executor.cuh"
#include "staticgrad/backend/cuda/random_fill.cuh"
#include "staticgrad/plans/qwen2_1_5b.cuh"

namespace sc = staticgrad::cuda;
using bf16 = __nv_bfloat16;
using plan = sc::plans::qwen2_1_5b::block;

namespace {

constexpr int kSeqs = 8, kSeqLen = 2048, kT = kSeqs * kSeqLen, kRank = 16, kLayers = 28;

// Deterministic values with standard deviation `std` around `mean` (backend/cuda/random_fill.cuh).
template <class T>
void fill(T* p, std::size_t n, float mean, float std, std::uint32_t seed) {
  sc::random_fill(p, n, mean, std, seed);
}

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

// Everything one layer needs, built once (outside every timed region).
struct setup {
  std::unique_ptr<sc::block_executor<plan>> ex;
  std::vector<sc::device_array<bf16>> frozen;
  std::vector<sc::device_array<float>> lora;
  sc::device_array<bf16> x, y, dres, dres0;
  sc::device_array<std::int32_t> pos, seq;
  sc::layer_saved_storage saved;
  cudaEvent_t start = nullptr, stop = nullptr;

  setup() {
    staticgrad::runtime_config cfg{};
    cfg.lora_scaling = 2.0f, cfg.rank = kRank;
    ex = std::make_unique<sc::block_executor<plan>>(kT, kRank, cfg);
    std::uint32_t seed = 1;
    // Every parameter slot of the schedule: projection weights, row-group vectors, adapters.
    const auto& S = plan::data;
    for (int p = 0; p < S.n_params; ++p) {
      const auto& ps = S.params[p];
      const std::string name(ps.name.view());
      if (ps.kind == staticgrad::graph::op_kind::lora_adapter) {
        const std::size_t na = static_cast<std::size_t>(kRank) * ps.cols, nb = static_cast<std::size_t>(ps.rows) * kRank;
        for (std::size_t n : {na, nb, na, nb}) lora.emplace_back(n);
        const std::size_t k = lora.size() - 4;
        fill(lora[k].get(), na, 0.0f, 0.03f, seed++);
        fill(lora[k + 1].get(), nb, 0.0f, 0.02f, seed++);
        SG_CUDA_CHECK(cudaMemset(lora[k + 2].get(), 0, na * sizeof(float)));
        SG_CUDA_CHECK(cudaMemset(lora[k + 3].get(), 0, nb * sizeof(float)));
        ex->set_lora(name, lora[k].get(), lora[k + 1].get(), lora[k + 2].get(), lora[k + 3].get());
      } else {
        const std::size_t n = static_cast<std::size_t>(ps.rows) * ps.cols;
        const bool norm = name.find("layernorm") != std::string::npos;
        frozen.emplace_back(n);
        fill(frozen.back().get(), n, norm ? 1.0f : 0.0f, norm ? 0.1f : 0.02f, seed++);
        ex->set_frozen(name, frozen.back().get());
      }
    }
    const std::size_t nx = static_cast<std::size_t>(kT) * plan::input_width;
    x = sc::device_array<bf16>(nx), y = sc::device_array<bf16>(nx);
    dres = sc::device_array<bf16>(nx), dres0 = sc::device_array<bf16>(nx);
    fill(x.get(), nx, 0.0f, 1.0f, seed++);
    fill(dres0.get(), nx, 0.0f, 1.0f, seed++);
    std::vector<std::int32_t> hp(kT), hs(kSeqs + 1);
    for (int t = 0; t < kT; ++t) hp[t] = t % kSeqLen;
    for (int s = 0; s <= kSeqs; ++s) hs[s] = s * kSeqLen;
    pos = sc::device_array<std::int32_t>(hp.size()), seq = sc::device_array<std::int32_t>(hs.size());
    SG_CUDA_CHECK(cudaMemcpy(pos.get(), hp.data(), hp.size() * 4, cudaMemcpyHostToDevice));
    SG_CUDA_CHECK(cudaMemcpy(seq.get(), hs.data(), hs.size() * 4, cudaMemcpyHostToDevice));
    saved = ex->allocate_saved();
    ex->set_input(x.get());
    ex->set_output(y.get());
    ex->set_residual_grad(dres.get());
    ex->set_layout(pos.get(), seq.get(), kSeqs);
    ex->refresh_lora();
    SG_CUDA_CHECK(cudaEventCreate(&start));
    SG_CUDA_CHECK(cudaEventCreate(&stop));
    SG_CUDA_CHECK(cudaDeviceSynchronize());  // the fills ran on the default stream
    // Warm-up (sets kernel attributes), then the graph of forward + backward.
    reset_grad();
    ex->forward(saved.view());
    ex->backward(saved.view());
    ex->capture(saved.view());
    ex->synchronize();
    SG_CUDA_CHECK(cudaDeviceSynchronize());
  }
  void reset_grad() {
    SG_CUDA_CHECK(cudaMemcpyAsync(dres.get(), dres0.get(), dres.size() * sizeof(bf16), cudaMemcpyDeviceToDevice,
                                  ex->stream()));
  }
  std::vector<std::string> frozen_names;
};

setup& the_setup() {
  static setup s;
  return s;
}

enum class pass { forward, backward, graph };

void bench_block(benchmark::State& state, pass which) {
  if (!have_device()) {
    state.SkipWithError("no CUDA device");
    return;
  }
  try {
    auto& s = the_setup();
    double total_s = 0;
    for (auto _ : state) {
      if (which != pass::forward) s.reset_grad();
      SG_CUDA_CHECK(cudaEventRecord(s.start, s.ex->stream()));
      if (which == pass::forward) s.ex->forward(s.saved.view());
      else if (which == pass::backward) s.ex->backward(s.saved.view());
      else s.ex->replay();
      SG_CUDA_CHECK(cudaEventRecord(s.stop, s.ex->stream()));
      SG_CUDA_CHECK(cudaEventSynchronize(s.stop));
      float ms = 0;
      SG_CUDA_CHECK(cudaEventElapsedTime(&ms, s.start, s.stop));
      state.SetIterationTime(ms * 1e-3);
      total_s += ms * 1e-3;
    }
    const double per = total_s / static_cast<double>(state.iterations());
    state.counters["tok/s"] = static_cast<double>(kT) / per;
    state.counters["step_28L_ms"] = kLayers * per * 1e3;
    state.counters["T"] = kT;
  } catch (const std::exception& e) {
    state.SkipWithError(e.what());
  }
}

}  // namespace

BENCHMARK_CAPTURE(bench_block, fwd_1_5b_T16384_r16, pass::forward)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_block, bwd_1_5b_T16384_r16, pass::backward)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(bench_block, graph_fwd_bwd_1_5b_T16384_r16, pass::graph)->UseManualTime()->Unit(benchmark::kMillisecond);

BENCHMARK_MAIN();
