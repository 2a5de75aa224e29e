#pragma once
// silu<X>: y = x * sigmoid(x). Pointwise. Saves x (the derivative needs the
// pre-activation). silu_<X> writes y over x: valid only where nothing needs
// x afterwards, which is never the case when x requires a gradient, since
// silu's own backward saves x; the in-place check rejects that at compile time.
#include "staticgrad/ops/op_traits.hpp"
#include "staticgrad/ops/swiglu.hpp"

namespace staticgrad {
namespace graph {

template <class X, bool InPlace>
struct silu_node {
  static constexpr std::string_view op_name = InPlace ? "silu_" : "silu";
  template <int N>
  static constexpr int lower(node_table<N>& t, name_buf name) {
    const int x = lower_child<X>(t, name.view());
    return t.add({.kind = op_kind::silu, .name = name, .in = {x, -1, -1}, .n_in = 1,
                  .width = t.nodes[x].width, .rank_width = t.nodes[x].rank_width, .inplace = InPlace});
  }
};

template <> struct op_traits<op_kind::silu> {
  static constexpr std::string_view name = "silu";
  static constexpr fusion_class fusion = fusion_class::pointwise;
  static constexpr fusion_class bwd_fusion = fusion_class::pointwise;
  static constexpr backward_reads reads{.grad = {reads_desc{.in = {true, false, false}}}};  // dx needs x
  static constexpr std::array<bool, max_inputs> grad_in{true, false, false};
  static constexpr std::array<bool, max_inputs> identity_grad{};
};
}  // namespace graph

template <class X> using silu = graph::silu_node<X, false>;
template <class X> using silu_ = graph::silu_node<X, true>;

struct silu_fn {
  template <class F> SG_HD static F forward(F x) { return x * swiglu_fn::sigmoid(x); }
  template <class F> SG_HD static F backward(F dy, F x) {
    const F s = swiglu_fn::sigmoid(x);
    return dy * s * (F(1) + x * (F(1) - s));
  }
};

template <class S>
inline void silu_row_forward(const row_args<S>& a) {
  for (int i = 0; i < a.width; ++i) a.out[i] = silu_fn::forward(a.in[0][i]);
}
template <class S>
inline void silu_row_backward(const row_grad_args<S>& g) {
  if (g.din[0])
    for (int i = 0; i < g.fwd.width; ++i) put_grad(g.din[0], i, silu_fn::backward(g.dy[i], g.fwd.in[0][i]), g.acc[0]);
}

}  // namespace staticgrad
