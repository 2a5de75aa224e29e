#pragma once
// linear<X, frozen<"w", Out, In>>: y = x W^T, x [T, In], W [Out, In] frozen
// (PyTorch layout), y [T, Out]. A GEMM. Saves nothing: with W frozen the only
// gradient is dx = dy W. Qwen2's q/k/v bias is a separate bias_add, so that it
// fuses with RoPE instead of needing a GEMM epilogue per projection.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class W>
struct linear_node {
  static constexpr std::string_view op_name = "linear";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), w = lower_child<W>(t, name.view());
    if (t.nodes[w].kind != op_kind::frozen_matrix) throw "staticgrad: linear<X, W> needs W = frozen<name, Out, In>";
    if (t.nodes[w].width == 0) throw "staticgrad: linear<X, W>: W has a run-time row count; use it in lm_head_cross_entropy";
    if (t.nodes[x].width != t.nodes[w].cols) throw "staticgrad: linear<X, W>: X's width differs from W's In";
    return t.add({.kind = op_kind::linear, .name = name, .in = {x, w, -1}, .n_in = 2, .width = t.nodes[w].width});
  }
};

template <> struct op_traits<op_kind::linear> {
  static constexpr std::string_view name = "linear";
  static constexpr fusion_class fusion = fusion_class::gemm;
  static constexpr fusion_class bwd_fusion = fusion_class::gemm;
  static constexpr saves_desc saves{};
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class W> using linear = graph::linear_node<X, W>;

}  // namespace staticgrad
