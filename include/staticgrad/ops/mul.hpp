#pragma once
// mul<A, B>: y = a * b elementwise, [T, W]. Pointwise. Backward
// da = dy * b, db = dy * a: da needs b and db needs a, so only the factors
// whose partner's gradient is computed are saved.
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class A, class B>
struct mul_node {
  static constexpr std::string_view op_name = "mul";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int a = lower_child<A>(t, name.view()), b = lower_child<B>(t, name.view());
    if (!same_width(t, op_name, name, a, b)) return 0;
    return t.add({.kind = op_kind::mul, .name = name, .in = {a, b, -1}, .n_in = 2, .width = t.nodes[a].width});
  }
};

template <> struct op_traits<op_kind::mul> {
  static constexpr std::string_view name = "mul";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {false, true, false}},    // da = dy * b
                                                 reads_desc{.in = {true, false, false}}}};  // db = dy * a
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
  // Each factor is read only for its partner's gradient (it may not be saved
  // otherwise), and dy is read before either gradient is written (a gradient
  // may share its slot with dy: buffer_plan.hpp, row-local reuse).
  for (int i = 0; i < g.fwd.width; ++i) {
    const S dy = g.dy[i];
    const S da = g.din[0] ? dy * g.fwd.in[1][i] : S(0);
    const S db = g.din[1] ? dy * g.fwd.in[0][i] : S(0);
    if (g.din[0]) put_grad(g.din[0], i, da, g.acc[0]);
    if (g.din[1]) put_grad(g.din[1], i, db, g.acc[1]);
  }
}

}  // namespace staticgrad
