#pragma once
// rmsnorm<X, vec<"w", W>>: y = w * (x * r), r = rsqrt(mean(x^2) + eps), as
// Hugging Face Qwen2RMSNorm (statistics in f32). x [T, W], w [W] frozen.
// A row op (one reduction per token). Saves x and r (the aux output, one f32
// per token); backward: with n = x r and g = dy * w,
//   dx = r * (g - n * mean(g * n)).
#include <cmath>

#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class W>
struct rmsnorm_node {
  static constexpr std::string_view op_name = "rmsnorm";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), w = lower_child<W>(t, name.view());
    if (t.nodes[w].kind != op_kind::frozen_vector) throw "staticgrad: rmsnorm<X, W> needs W = vec<name, width>";
    if (t.nodes[x].width != t.nodes[w].width) throw "staticgrad: rmsnorm<X, W>: the weight width differs from X's width";
    return t.add({.kind = op_kind::rmsnorm, .name = name, .in = {x, w, -1}, .n_in = 2,
                  .width = t.nodes[x].width, .aux_width = 1, .aux_store = storage::stat});
  }
};

template <> struct op_traits<op_kind::rmsnorm> {
  static constexpr std::string_view name = "rmsnorm";
  static constexpr fusion_class fusion = fusion_class::row;
  static constexpr fusion_class bwd_fusion = fusion_class::row;
  static constexpr saves_desc saves{.in = {true, false, false}, .aux = true};
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class W> using rmsnorm = graph::rmsnorm_node<X, W>;

template <class S>
inline void rmsnorm_row_forward(const row_args<S>& a) {
  const S* x = a.in[0];
  const S* w = a.in[1];
  S ss = 0;
  for (int i = 0; i < a.width; ++i) ss += x[i] * x[i];
  const S r = S(1) / std::sqrt(ss / S(a.width) + S(a.cfg->eps));
  a.aux[0] = r;
  for (int i = 0; i < a.width; ++i) a.out[i] = w[i] * (x[i] * r);
}

template <class S>
inline void rmsnorm_row_backward(const row_grad_args<S>& g) {
  const S* x = g.fwd.in[0];
  const S* w = g.fwd.in[1];
  const S r = g.fwd.aux[0];
  const int n = g.fwd.width;
  S dot = 0;  // sum(g * n) with g = dy * w, n = x * r
  for (int i = 0; i < n; ++i) dot += g.dy[i] * w[i] * x[i] * r;
  const S mean = dot / S(n);
  if (g.din[0])
    for (int i = 0; i < n; ++i) put_grad(g.din[0], i, r * (g.dy[i] * w[i] - x[i] * r * mean), g.acc[0]);
}

}  // namespace staticgrad
