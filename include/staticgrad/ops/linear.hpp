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
    if (!kind_is(t, op_name, name, w, op_kind::frozen_matrix, "frozen<name, Out, In>")) return 0;
    if (t.nodes[w].width == 0)  // run-time rows: only lm_head_cross_entropy takes them
      return t.fail({.kind = graph_error_kind::operand_kind, .op = op_label(op_name, name.view()), .a = t.nodes[w].name,
                     .found = leaf_text(t.nodes[w]), .expected = name_buf("frozen<name, Out, In> (static Out)")});
    if (!fits_operand(t, op_name, name, w, x)) return 0;
    return t.add({.kind = op_kind::linear, .name = name, .in = {x, w, -1}, .n_in = 2, .width = t.nodes[w].width});
  }
};

template <> struct op_traits<op_kind::linear> {
  static constexpr std::string_view name = "linear";
  static constexpr fusion_class fusion = fusion_class::gemm;
  static constexpr fusion_class bwd_fusion = fusion_class::gemm;
  static constexpr backward_reads reads{};  // dx = dy W
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X, class W> using linear = graph::linear_node<X, W>;

}  // namespace staticgrad
