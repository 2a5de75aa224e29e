#pragma once
// swiglu<G, U>: m = silu(g) * u, g and u [T, I] (the Qwen2 MLP activation).
// Pointwise. Backward, with sg = sigmoid(g):
//   dg = dm * u * sg * (1 + g (1 - sg))  (reads g and u),
//   du = dm * g * sg                     (reads g only),
// so u is saved only where the gate's gradient is computed.
#include <cmath>

#include "staticgrad/core/math.hpp"
#include "staticgrad/ops/op_traits.hpp"

namespace staticgrad {
namespace graph {

template <class G, class U>
struct swiglu_node {
  static constexpr std::string_view op_name = "swiglu";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int g = lower_child<G>(t, name.view()), u = lower_child<U>(t, name.view());
    if (!same_width(t, op_name, name, g, u)) return 0;
    return t.add({.kind = op_kind::swiglu, .name = name, .in = {g, u, -1}, .n_in = 2, .width = t.nodes[g].width});
  }
};

template <> struct op_traits<op_kind::swiglu> {
  static constexpr std::string_view name = "swiglu";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {true, true, false}},    // dg
                                                 reads_desc{.in = {true, false, false}}}};  // du
  static constexpr std::array<bool, max_inputs> grad_in{true, true, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class G, class U> using swiglu = graph::swiglu_node<G, U>;

struct swiglu_fn {
  static constexpr row_form form = row_form::pointwise;
  template <class F> SG_HD static F sigmoid(F x) { return F(1) / (F(1) + math::exp(-x)); }
  template <class F> SG_HD static F forward(F g, F u) { return g * sigmoid(g) * u; }
  template <class F> SG_HD static void backward(F dm, F g, F u, F& dg, F& du) {
    dg = backward_gate(dm, g, u);
    du = backward_up(dm, g);
  }
  template <class F> SG_HD static F backward_gate(F dm, F g, F u) {
    const F sg = sigmoid(g);
    return dm * u * sg * (F(1) + g * (F(1) - sg));
  }
  template <class F> SG_HD static F backward_up(F dm, F g) { return dm * g * sigmoid(g); }
};
template <> struct row_op<graph::op_kind::swiglu> : swiglu_fn {};

}  // namespace staticgrad
