// Host-only (g++) half of tests/gpu/test_block_executor.cu: see block_reference.hpp.
#include "block_reference.hpp"

#include <algorithm>
#include <cstdio>
#include <exception>
#include <span>
#include <string>
#include <vector>

#include "staticgrad/backend/cpu/executor.hpp"
#include "staticgrad/models/qwen2_block.hpp"

namespace staticgrad::test {
namespace {

namespace m = staticgrad::models;
using block_0_5b = m::qwen2_block<m::block_shape<896, 4864, 14, 2, 64>>;
using block_1_5b = m::qwen2_block<m::block_shape<1536, 8960, 12, 2, 128>>;

template <class G>
int params(block_param* out, int max) {
  const auto& t = graph::compiled<G>::table;
  // NUL-terminated copies of the names, alive for the program (the graph's are views).
  static const std::vector<std::string> names = [&] {
    std::vector<std::string> v(static_cast<std::size_t>(t.count));
    for (int i = 0; i < t.count; ++i) v[static_cast<std::size_t>(i)] = std::string(t.nodes[i].param.view());
    return v;
  }();
  int n = 0;
  for (int v = 0; v < t.count; ++v) {
    const auto& nd = t.nodes[v];
    block_param p{};
    if (nd.kind == graph::op_kind::frozen_matrix) p = {names[v].c_str(), nd.width, nd.cols, false};
    else if (nd.kind == graph::op_kind::frozen_vector) p = {names[v].c_str(), 1, nd.width, false};
    else if (nd.kind == graph::op_kind::lora_adapter) p = {names[v].c_str(), nd.width, nd.cols, true};
    else continue;
    if (n < max) out[n] = p;
    ++n;
  }
  return n;
}

template <class G>
int run(int T, int r, const std::int32_t* positions, const std::int32_t* seq_start, int nseq, float eps, float theta,
        float scaling, const float* const* a, const float* const* b, float* const* dA, float* const* dB, const float* x,
        const float* dy, float* y, float* dx) {
  std::vector<block_param> ps(64);
  const int n = params<G>(ps.data(), 64);
  // Names are views into the graph's static strings: copy them for the maps.
  cpu::parameters<float> p;
  const int hidden = graph::compiled<G>::table.nodes[graph::compiled<G>::table.find("x")].width;
  for (int i = 0; i < n; ++i) {
    const std::string name(ps[i].name);
    if (ps[i].lora) {
      const std::size_t na = static_cast<std::size_t>(r) * ps[i].cols, nb = static_cast<std::size_t>(ps[i].rows) * r;
      std::fill_n(dA[i], na, 0.0f);
      std::fill_n(dB[i], nb, 0.0f);
      p.lora[name] = {a[i], b[i], dA[i], dB[i], r};
    } else {
      p.frozen[name] = {a[i], ps[i].rows, ps[i].cols};
    }
  }
  cpu::token_layout layout{std::span<const std::int32_t>(positions, static_cast<std::size_t>(T)),
                           std::span<const std::int32_t>(seq_start, static_cast<std::size_t>(nseq) + 1)};
  runtime_config cfg{};
  cfg.eps = eps;
  cfg.rope_theta = theta;
  cfg.lora_scaling = scaling;
  cfg.rank = r;
  cpu::program<G, float> prog;
  prog.set_batch(T, layout, cfg);
  prog.set_parameters(p);
  prog.set_input("x", x);
  prog.set_output("y", y);
  // The residual gradient: dy in, dx out (one buffer, updated in place).
  std::copy_n(dy, static_cast<std::size_t>(T) * hidden, dx);
  prog.set_grad("y", dx);
  prog.set_grad("x", dx);
  typename cpu::program<G, float>::saved_state saved;
  saved.resize(T, r);
  prog.forward(saved);
  prog.backward(saved);
  return 0;
}

}  // namespace

int block_reference_params(const char* shape, block_param* out, int max) {
  const std::string s(shape);
  if (s == "qwen2_0_5b") return params<block_0_5b>(out, max);
  if (s == "qwen2_1_5b") return params<block_1_5b>(out, max);
  return -1;
}

int block_reference_run(const char* shape, int T, int r, const std::int32_t* positions, const std::int32_t* seq_start,
                        int nseq, float eps, float rope_theta, float lora_scaling, const float* const* a,
                        const float* const* b, float* const* dA, float* const* dB, const float* x, const float* dy,
                        float* y, float* dx) {
  try {
    const std::string s(shape);
    if (s == "qwen2_0_5b")
      return run<block_0_5b>(T, r, positions, seq_start, nseq, eps, rope_theta, lora_scaling, a, b, dA, dB, x, dy, y, dx);
    if (s == "qwen2_1_5b")
      return run<block_1_5b>(T, r, positions, seq_start, nseq, eps, rope_theta, lora_scaling, a, b, dA, dB, x, dy, y, dx);
    std::fprintf(stderr, "block_reference_run: unknown shape %s\n", shape);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "block_reference_run: %s\n", e.what());
  }
  return -1;
}

}  // namespace staticgrad::test
