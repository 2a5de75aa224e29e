// CPU training-step throughput: forward + backward of the whole model (tiny
// shape, the demo's random checkpoint) and of one real-size block (0.5B
// shape, random weights), LoRA r = 16 on all seven projections, float.
// Reports tokens/s. Not run by ctest; results in docs/performance.md.
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "staticgrad/models/qwen2_model.hpp"
#include "staticgrad/train/demo_task.hpp"
#include "staticgrad/train/lora_init.hpp"

namespace sg = staticgrad;

static void BM_tiny_model_step(benchmark::State& state) {
  const std::int64_t rows = state.range(0), len = state.range(1), T = rows * len;
  const auto dir = std::filesystem::temp_directory_path() / "staticgrad_bench_tiny";
  sg::train::demo_task task;
  task.layers = 4;
  task.vocab = 4096;
  sg::train::write_demo_checkpoint(dir, task);
  auto model = sg::models::qwen2_model<sg::models::qwen2_tiny>::load(dir);
  sg::io::lora_config lc;
  lc.r = 16;
  lc.lora_alpha = 32;
  lc.target_modules.assign(sg::io::all_lora_targets.begin(), sg::io::all_lora_targets.end());
  auto adapter = sg::io::make_lora_adapter(lc, model->config());
  auto grads = sg::io::make_lora_adapter(lc, model->config());
  for (auto& layer : adapter.layers)
    for (auto& p : layer) std::fill(p.b.begin(), p.b.end(), 0.01f);
  model->attach(&adapter, &grads);
  std::mt19937 g(1);
  std::vector<std::int32_t> ids(T);
  for (auto& x : ids) x = std::int32_t(g() % task.vocab);
  const auto layout = sg::cpu::make_uniform_layout(rows, len);
  for (auto _ : state) benchmark::DoNotOptimize(model->step({ids, {}, layout.view()}, true));
  state.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_tiny_model_step)->Args({1, 512})->Args({4, 256})->Unit(benchmark::kMillisecond)->UseRealTime();

// One Qwen2.5-0.5B block (hidden 896, intermediate 4864), forward + backward.
static void BM_block_0_5b_step(benchmark::State& state) {
  using S = sg::models::qwen2_5_0_5b;
  using prog_t = sg::cpu::program<sg::models::qwen2_block<S>, float>;
  const std::int64_t T = state.range(0);
  const int r = 16;
  std::mt19937 g(2);
  std::normal_distribution<float> nd(0.f, 0.02f);
  std::map<std::string, std::vector<float>> store;
  sg::cpu::parameters<float> params;
  auto& t = prog_t::table;
  for (int i = 0; i < t.count; ++i) {
    const auto& n = t.nodes[i];
    const std::string name(n.name.view());
    if (n.kind == sg::graph::op_kind::frozen_matrix || n.kind == sg::graph::op_kind::frozen_vector) {
      const std::int64_t rows = n.kind == sg::graph::op_kind::frozen_vector ? 1 : n.width;
      const std::int64_t cols = n.kind == sg::graph::op_kind::frozen_vector ? n.width : n.cols;
      auto& v = store[name];
      v.resize(rows * cols);
      for (auto& x : v) x = n.kind == sg::graph::op_kind::frozen_vector ? 1.f : nd(g);
      params.frozen[name] = {v.data(), rows, cols};
    } else if (n.kind == sg::graph::op_kind::lora_adapter) {
      auto& a = store[name + ".A"];
      auto& b = store[name + ".B"];
      auto& da = store[name + ".dA"];
      auto& db = store[name + ".dB"];
      a.resize(r * n.cols);
      b.resize(n.width * r);
      da.assign(a.size(), 0.f);
      db.assign(b.size(), 0.f);
      for (auto& x : a) x = nd(g);
      for (auto& x : b) x = nd(g);
      params.lora[name] = {a.data(), b.data(), da.data(), db.data(), r};
    }
  }
  const auto layout = sg::cpu::make_uniform_layout(1, T);
  prog_t p;
  p.set_batch(T, layout.view(), {.eps = 1e-6f, .rope_theta = 1e6f, .lora_scaling = 2.f, .rank = r});
  p.set_parameters(params);
  std::vector<float> x(T * S::hidden), y(T * S::hidden), dy(T * S::hidden);
  for (auto& v : x) v = nd(g) * 50;
  p.set_input("x", x.data());
  p.set_output("y", y.data());
  prog_t::saved_state saved;
  for (auto _ : state) {
    p.forward(saved);
    for (auto& v : dy) v = 1e-3f;
    p.set_grad("y", dy.data());
    p.set_grad("x", dy.data());
    p.backward(saved);
    benchmark::DoNotOptimize(dy.data());
  }
  state.counters["tokens/s"] = benchmark::Counter(double(T), benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(BM_block_0_5b_step)->Arg(256)->Arg(1024)->Unit(benchmark::kMillisecond)->UseRealTime();

BENCHMARK_MAIN();
