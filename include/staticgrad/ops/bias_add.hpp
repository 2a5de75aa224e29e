#pragma once
// bias_add<X, vec<"b", W>>: y = x + b, x [T, W], b [W] frozen. Pointwise
// (element i reads b[i]); backward dx = dy (aliased). The q, k, v projections
// of Qwen2 carry a bias; it fuses with RoPE (fusion.hpp).
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class X, class Bias, bool InPlace>
struct bias_add_node {
  static constexpr std::string_view op_name = InPlace ? "bias_add_" : "bias_add";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view()), b = lower_child<Bias>(t, name.view());
    if (!kind_is(t, op_name, name, b, op_kind::frozen_vector, "vec<name, W>") || !fits_operand(t, op_name, name, b, x))
      return 0;
    return t.add({.kind = op_kind::bias_add, .name = name, .in = {x, b, -1}, .n_in = 2,
                  .width = t.nodes[x].width, .inplace = InPlace});
  }
};

template <> struct op_traits<op_kind::bias_add> {
  static constexpr std::string_view name = "bias_add";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{};  // dx = dy
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{true, false, false};
};
}  // namespace graph

template <class X, class B> using bias_add = graph::bias_add_node<X, B, false>;
template <class X, class B> using bias_add_ = graph::bias_add_node<X, B, true>;

struct bias_add_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F forward(F x, F b) { return x + b; }
  template <class F> SG_HD static void backward(F dy, F, F, F& dx, F& db) { dx = dy, db = F(0); }
};
template <> struct row_op<graph::op_kind::bias_add> : bias_add_fn {};

}  // namespace staticgrad
