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

template <class S>
inline void mul_row_forward(const row_args<S>& a) {
  for (int i = 0; i < a.width; ++i) a.out[i] = a.in[0][i] * a.in[1][i];
}
template <class S>
inline void mul_row_backward(const row_grad_args<S>& g) {
  for (int i = 0; i < g.fwd.width; ++i) {
    if (g.din[0]) put_grad(g.din[0], i, g.dy[i] * g.fwd.in[1][i], g.acc[0]);
    if (g.din[1]) put_grad(g.din[1], i, g.dy[i] * g.fwd.in[0][i], g.acc[1]);
  }
}

}  // namespace staticgrad
