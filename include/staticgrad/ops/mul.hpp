#pragma once
// mul<A, B>: y = a * b elementwise, [T, W]. Pointwise. Saves a and b;
// backward da = dy * b, db = dy * a.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class A, class B>
struct mul_node {
  static constexpr std::string_view op_name = "mul";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int a = lower_child<A>(t, name.view()), b = lower_child<B>(t, name.view());
    if (t.nodes[a].width != t.nodes[b].width) throw "staticgrad: mul<A, B> needs A and B of the same width";
    return t.add({.kind = op_kind::mul, .name = name, .in = {a, b, -1}, .n_in = 2, .width = t.nodes[a].width});
  }
};

template <> struct op_traits<op_kind::mul> {
  static constexpr std::string_view name = "mul";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr saves_desc saves{.in = {true, true, false}};
  static constexpr std::array<bool, max_inputs> grad_in{true, true, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class A, class B> using mul = graph::mul_node<A, B>;

struct mul_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F forward(F a, F b) { return a * b; }
  template <class F> SG_HD static void backward(F dy, F a, F b, F& da, F& db) { da = dy * b, db = dy * a; }
};
template <> struct row_op<graph::op_kind::mul> : mul_fn {};

}  // namespace staticgrad
